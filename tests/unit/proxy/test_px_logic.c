/*
 * Tests of the proxy's pure logic: receipt handles and pop check-point info
 * (RocketMQ's text formats), transaction ids, remoting → Code mapping,
 * reserved property names, the MD5 body digest, and the due time a
 * delivered timer message carries to 5.x consumers.
 */
#include <check.h>
#include <errno.h>
#include <string.h>

#include "buf.h"
#include "consumer.h"
#include "message.h"
#include "proxy.h"
#include "receipt.h"

START_TEST(handle_roundtrip)
{
    char out[PX_HANDLE_MAX];
    int n = px_handle_build(out, sizeof out, 5, 1700000000123, 30000, 3, '0', "broker-a", 2, 7, 123456);
    ck_assert_int_gt(n, 0);
    ck_assert_str_eq(out, "5 1700000000123 30000 3 0 broker-a 2 7 123456");
    struct px_handle h;
    ck_assert_int_eq(px_handle_decode(out, strlen(out), &h), 0);
    ck_assert_int_eq(h.start_offset, 5);
    ck_assert_int_eq(h.retrieve_time, 1700000000123);
    ck_assert_int_eq(h.invisible_time, 30000);
    ck_assert_int_eq(h.revive_qid, 3);
    ck_assert_int_eq(h.topic_type, '0');
    ck_assert_str_eq(h.broker, "broker-a");
    ck_assert_int_eq(h.queue_id, 2);
    ck_assert_int_eq(h.offset, 7);
    ck_assert_int_eq(h.commit_log_offset, 123456);
    char again[PX_HANDLE_MAX];
    ck_assert_int_eq(px_handle_encode(&h, again, sizeof again), n);
    ck_assert_str_eq(again, out);
    /* The 8-field form (an extraInfo without commit log offset) is accepted. */
    ck_assert_int_eq(px_handle_decode("1 2 3 4 1 b 0 9", 15, &h), 0);
    ck_assert_int_eq(h.commit_log_offset, -1);
    ck_assert_int_eq(h.topic_type, '1');
}
END_TEST

START_TEST(handle_rejects)
{
    struct px_handle h;
    const char *bad[] = {
        "", "1 2 3", "1 2 3 4 0 b 0", "1 2 3 4 0 b 0 9 10 11", "x 2 3 4 0 b 0 9",
        "1 2 3 4 7 b 0 9", "1 2 3 4 0  0 9", "1 2 3 4 0 b 0 9 ", " 1 2 3 4 0 b 0 9",
        "1 2 3 4 00 b 0 9", "1 2 3 99999999999 0 b 0 9",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        ck_assert_msg(px_handle_decode(bad[i], strlen(bad[i]), &h) == -EINVAL, "accepted '%s'", bad[i]);
}
END_TEST

START_TEST(real_topic)
{
    struct px_handle h = { .topic_type = '0' };
    char out[256];
    px_handle_real_topic(&h, "T", "G", out, sizeof out);
    ck_assert_str_eq(out, "T");
    h.topic_type = '1';
    px_handle_real_topic(&h, "T", "G", out, sizeof out);
    ck_assert_str_eq(out, "%RETRY%G_T");
    h.topic_type = '2';
    px_handle_real_topic(&h, "T", "G", out, sizeof out);
    ck_assert_str_eq(out, "%RETRY%G+T");
    ck_assert_int_eq(px_topic_type("T", 1), '0');
    ck_assert_int_eq(px_topic_type("%RETRY%G_T", 10), '1');
    ck_assert_int_eq(px_topic_type("%RETRY%G+T", 10), '2');
}
END_TEST

START_TEST(ckinfo)
{
    struct px_ckinfo ci;
    ck_assert_int_eq(px_ckinfo_parse("0 1 100;1 1 7;0 3 5", false, &ci), 0);
    ck_assert_int_eq(ci.n, 3);
    const struct px_ck_entry *e = px_ckinfo_find(&ci, '1', 1);
    ck_assert_ptr_nonnull(e);
    ck_assert_int_eq(e->value, 7);
    ck_assert_ptr_null(px_ckinfo_find(&ci, '2', 1));
    ck_assert_int_eq(px_ckinfo_parse("0 1 100,101,105;0 2 4", true, &ci), 0);
    e = px_ckinfo_find(&ci, '0', 1);
    int64_t v;
    ck_assert_int_eq(px_ck_offset_at(e, 0, &v), 0);
    ck_assert_int_eq(v, 100);
    ck_assert_int_eq(px_ck_offset_at(e, 2, &v), 0);
    ck_assert_int_eq(v, 105);
    ck_assert_int_eq(px_ck_offset_at(e, 3, &v), -EINVAL);
    ck_assert_int_eq(px_ckinfo_parse(NULL, false, &ci), 0);
    ck_assert_int_eq(ci.n, 0);
    ck_assert_int_eq(px_ckinfo_parse("0 1", false, &ci), -EINVAL);
    ck_assert_int_eq(px_ckinfo_parse("0 1 2 3", false, &ci), -EINVAL);
    ck_assert_int_eq(px_ckinfo_parse("0 1 2;0 1 3", false, &ci), -EINVAL);
    ck_assert_int_eq(px_ckinfo_parse("0 1 1,,2", true, &ci), -EINVAL);
    ck_assert_int_eq(px_ckinfo_parse("9 1 2", false, &ci), -EINVAL);
    /* orderCountInfo keys per message: "t qo<queueId>%<queueOffset> count". */
    ck_assert_int_eq(px_ckinfo_parse("0 qo2%17 3;0 qo2%18 0;1 1 4", false, &ci), 0);
    e = px_ckinfo_find_qo(&ci, '0', 2, 17);
    ck_assert_ptr_nonnull(e);
    ck_assert_int_eq(e->value, 3);
    ck_assert_ptr_null(px_ckinfo_find(&ci, '0', 2));
    ck_assert_int_eq(px_ckinfo_find(&ci, '1', 1)->value, 4);
    ck_assert_int_eq(px_ckinfo_parse("0 qo2 3", false, &ci), -EINVAL);
    ck_assert_int_eq(px_ckinfo_parse("0 qo2%x 3", false, &ci), -EINVAL);
}
END_TEST

START_TEST(txid)
{
    struct px_txid t = { .addr = "10.0.0.1:10911", .commit_log_offset = 4096, .tran_state_offset = 12,
                         .broker_txid = "C0A80001ABCD" };
    char out[256];
    ck_assert_int_gt(px_txid_encode(&t, out, sizeof out), 0);
    ck_assert_str_eq(out, "10.0.0.1:10911;4096;12;C0A80001ABCD");
    struct px_txid d;
    ck_assert_int_eq(px_txid_decode(out, &d), 0);
    ck_assert_str_eq(d.addr, "10.0.0.1:10911");
    ck_assert_int_eq(d.commit_log_offset, 4096);
    ck_assert_int_eq(d.tran_state_offset, 12);
    ck_assert_str_eq(d.broker_txid, "C0A80001ABCD");
    ck_assert_int_eq(px_txid_decode("nonsense", &d), -EINVAL);
    ck_assert_int_eq(px_txid_decode("h:1;x;1;id", &d), -EINVAL);
    ck_assert_int_eq(px_txid_decode("h:1;-1;1;id", &d), -EINVAL);
    ck_assert_int_eq(px_txid_decode("noport;1;1;id", &d), -EINVAL);
    ck_assert_int_eq(px_txid_decode("h:1;1;1;a;b", &d), -EINVAL);
}
END_TEST

START_TEST(codes)
{
    ck_assert_int_eq(px_code_from_remoting(PX_ROP_SEND, RMT_RESP_SUCCESS), PXC(OK));
    ck_assert_int_eq(px_code_from_remoting(PX_ROP_SEND, RMT_RESP_TOPIC_NOT_EXIST), PXC(TOPIC_NOT_FOUND));
    ck_assert_int_eq(px_code_from_remoting(PX_ROP_SEND, RMT_RESP_NO_PERMISSION), PXC(FORBIDDEN));
    ck_assert_int_eq(px_code_from_remoting(PX_ROP_SEND, RMT_RESP_SYSTEM_BUSY), PXC(TOO_MANY_REQUESTS));
    ck_assert_int_eq(px_code_from_remoting(PX_ROP_SEND, RMT_RESP_FLUSH_DISK_TIMEOUT),
                     PXC(MASTER_PERSISTENCE_TIMEOUT));
    ck_assert_int_eq(px_code_from_remoting(PX_ROP_POP, RMT_RESP_POLLING_TIMEOUT), PXC(MESSAGE_NOT_FOUND));
    ck_assert_int_eq(px_code_from_remoting(PX_ROP_ACK, RMT_RESP_NO_MESSAGE), PXC(INVALID_RECEIPT_HANDLE));
    ck_assert_int_eq(px_code_from_remoting(PX_ROP_POP, RMT_RESP_SUBSCRIPTION_GROUP_NOT_EXIST),
                     PXC(CONSUMER_GROUP_NOT_FOUND));
    ck_assert_int_eq(px_code_from_remoting(PX_ROP_OFFSET, RMT_RESP_QUERY_NOT_FOUND), PXC(OFFSET_NOT_FOUND));
    ck_assert_int_eq(px_code_from_remoting(PX_ROP_POP, RMT_RESP_REQUEST_CODE_NOT_SUPPORTED),
                     PXC(NOT_IMPLEMENTED));
    ck_assert_int_eq(px_code_from_remoting(PX_ROP_SEND, 9999), PXC(INTERNAL_SERVER_ERROR));
    ck_assert_int_eq(px_code_from_errno(-ETIMEDOUT), PXC(PROXY_TIMEOUT));
    ck_assert_int_eq(px_code_from_errno(-ECONNREFUSED), PXC(INTERNAL_SERVER_ERROR));
    ck_assert_int_eq(px_code_from_route(-ENOENT), PXC(TOPIC_NOT_FOUND));
    ck_assert_str_eq(px_code_name(PXC(TOPIC_NOT_FOUND)), "TOPIC_NOT_FOUND");
}
END_TEST

START_TEST(reserved_and_md5)
{
    ck_assert(px_prop_reserved("TAGS", 4));
    ck_assert(px_prop_reserved("__SHARDINGKEY", 13));
    ck_assert(px_prop_reserved("UNIQ_KEY", 8));
    ck_assert(!px_prop_reserved("idx", 3));
    ck_assert(!px_prop_reserved("TAG", 3));
    char h[33];
    px_md5_hex("", 0, h);
    ck_assert_str_eq(h, "D41D8CD98F00B204E9800998ECF8427E");
    px_md5_hex("The quick brown fox jumps over the lazy dog", 43, h);
    ck_assert_str_eq(h, "9E107D9D372BB6826BD81D3542A419D6");
    char big[200];
    memset(big, 'a', sizeof big);
    px_md5_hex(big, 56, h); /* padding spills into a second block */
    ck_assert_str_eq(h, "3B0C8AC703F828B04C6C197006D17218");
}
END_TEST

START_TEST(names)
{
    ck_assert(px_valid_name("Topic_1-a%b|c", 127));
    ck_assert(!px_valid_name("", 127));
    ck_assert(!px_valid_name("a b", 127));
    ck_assert(!px_valid_name("a/b", 127));
    ck_assert(!px_valid_name("abcd", 3));
    ck_assert(!px_valid_name(NULL, 3));
}
END_TEST

/* A timer message shows its due time whether the producer gave it as an
 * absolute TIMER_DELIVER_MS or the broker worked it out (TIMER_OUT_MS) from
 * a relative TIMER_DELAY_SEC / TIMER_DELAY_MS. */
static int64_t due_of(const char *name, const char *value)
{
    char props[128];
    size_t plen = 0;
    if (name)
        ck_assert_int_eq(msg_prop_append(props, sizeof props, &plen, name, value, strlen(value)), 0);
    struct cli_msg_view v;
    memset(&v, 0, sizeof v);
    v.props = props;
    v.props_len = (uint32_t)plen;
    v.msg_id = "ID";
    v.msg_id_len = 2;
    v.body = (const uint8_t *)"b";
    v.body_len = 1;
    struct px_msg_out o;
    memset(&o, 0, sizeof o);
    struct buf scratch = BUF_INIT;
    ck_assert_int_eq(px_msg_to_pb(&o, &v, NULL, "T", &scratch), 0);
    int64_t due = -1;
    if (o.sp.delivery_timestamp) {
        ck_assert_int_eq(o.sp.message_type, APACHE__ROCKETMQ__V2__MESSAGE_TYPE__DELAY);
        due = o.sp.delivery_timestamp->seconds * 1000 + o.sp.delivery_timestamp->nanos / 1000000;
    }
    px_msg_out_free(&o);
    buf_free(&scratch);
    return due;
}

START_TEST(timer_due_time)
{
    ck_assert_int_eq(due_of(MSG_PROP_TIMER_DELIVER_MS, "1795322241500"), 1795322241500LL);
    ck_assert_int_eq(due_of(MSG_PROP_TIMER_OUT_MS, "1795322242250"), 1795322242250LL);
    ck_assert_int_eq(due_of(NULL, NULL), -1);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("px_logic");
    TCase *tc = tcase_create("logic");
    tcase_add_test(tc, handle_roundtrip);
    tcase_add_test(tc, handle_rejects);
    tcase_add_test(tc, real_topic);
    tcase_add_test(tc, ckinfo);
    tcase_add_test(tc, txid);
    tcase_add_test(tc, codes);
    tcase_add_test(tc, reserved_and_md5);
    tcase_add_test(tc, names);
    tcase_add_test(tc, timer_due_time);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
