/* Unit tests of the RocketMQ message codec (common/message.c). */
#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "message.h"

static struct msg_record sample(uint8_t *props, size_t *plen)
{
    *plen = 0;
    ck_assert_int_eq(msg_prop_append((char *)props, 256, plen, MSG_PROP_TAGS, "TagA", 4), 0);
    ck_assert_int_eq(msg_prop_append((char *)props, 256, plen, MSG_PROP_KEYS, "k1 k2", 5), 0);
    struct msg_record r = { 0 };
    static const char body[] = "hello rocketmq";
    r.body = (const uint8_t *)body;
    r.body_len = sizeof(body) - 1;
    r.body_crc = msg_body_crc(body, r.body_len);
    r.queue_id = 3;
    r.flag = 7;
    r.queue_offset = 42;
    r.phys_offset = 123456;
    r.born_ts = 1700000000000LL;
    r.store_ts = 1700000000001LL;
    r.born_host.ip[0] = 192; r.born_host.ip[1] = 168; r.born_host.ip[3] = 9;
    r.born_host.port = 5555;
    r.store_host.ip[0] = 10; r.store_host.ip[3] = 1;
    r.store_host.port = 10911;
    r.reconsume_times = 2;
    r.prepared_tx_offset = 99;
    r.topic = "TopicTest";
    r.topic_len = 9;
    r.props = (const char *)props;
    r.props_len = (uint32_t)*plen;
    return r;
}

START_TEST(record_round_trip)
{
    uint8_t props[256], buf[512];
    size_t plen;
    struct msg_record r = sample(props, &plen);
    size_t sz = msg_record_size(r.body_len, r.topic_len, r.props_len, r.sysflag);
    ck_assert_uint_eq(sz, 4 + 4 + 4 + 4 + 4 + 8 + 8 + 4 + 8 + 8 + 8 + 8 + 4 + 8 + 4 + 14 + 1 + 9 + 2 + plen);
    ck_assert_int_eq(msg_record_encode(buf, sizeof(buf), &r), (int)sz);
    ck_assert_uint_eq(rd_u32be(buf), sz);
    ck_assert_uint_eq(rd_u32be(buf + 4), 0xdaa320a7u);
    ck_assert_uint_eq(rd_u64be(buf + MSG_POS_PHYSOFFSET), 123456);
    struct msg_record d;
    ck_assert_int_eq(msg_record_decode(buf, sz, &d, 1), (int)sz);
    ck_assert_int_eq(d.queue_id, 3);
    ck_assert_int_eq(d.flag, 7);
    ck_assert_int_eq(d.queue_offset, 42);
    ck_assert_int_eq(d.born_ts, r.born_ts);
    ck_assert_int_eq(d.store_ts, r.store_ts);
    ck_assert_uint_eq(d.born_host.port, 5555);
    ck_assert_int_eq(d.born_host.ip[0], 192);
    ck_assert_int_eq(d.reconsume_times, 2);
    ck_assert_int_eq(d.prepared_tx_offset, 99);
    ck_assert_mem_eq(d.body, r.body, r.body_len);
    ck_assert_mem_eq(d.topic, "TopicTest", 9);
    const char *v;
    size_t vl;
    ck_assert_int_eq(msg_prop_get(d.props, d.props_len, MSG_PROP_TAGS, &v, &vl), 1);
    ck_assert_mem_eq(v, "TagA", 4);
    ck_assert_int_eq(msg_prop_get(d.props, d.props_len, "NOPE", &v, &vl), 0);
    /* truncated and corrupt inputs */
    ck_assert_int_eq(msg_record_decode(buf, sz - 1, &d, 1), -EAGAIN);
    buf[sz - plen - 13] ^= 1; /* the last body byte */
    ck_assert_int_eq(msg_record_decode(buf, sz, &d, 1), -EBADMSG);
    ck_assert_int_eq(msg_record_decode(buf, sz, &d, 0), (int)sz);
    wr_u32be(buf + 4, 0x12345678);
    ck_assert_int_eq(msg_record_decode(buf, sz, &d, 0), -EBADMSG);
    /* blank marker */
    wr_u32be(buf, 100);
    wr_u32be(buf + 4, MSG_BLANK_MAGIC_CODE);
    ck_assert_int_eq(msg_record_decode(buf, sz, &d, 1), 0);
    ck_assert_uint_eq(d.total_size, 100);
}
END_TEST

START_TEST(record_ipv6_and_long_topic)
{
    uint8_t props[256], buf[1024];
    size_t plen;
    struct msg_record r = sample(props, &plen);
    char topic[200];
    memset(topic, 'T', sizeof(topic));
    r.topic = topic;
    r.topic_len = sizeof(topic);
    r.sysflag = MSG_SYSFLAG_BORNHOST_V6 | MSG_SYSFLAG_STOREHOST_V6;
    r.born_host.ip[15] = 1;
    size_t sz = msg_record_size(r.body_len, r.topic_len, r.props_len, r.sysflag);
    ck_assert_int_eq(msg_record_encode(buf, sizeof(buf), &r), (int)sz);
    ck_assert_uint_eq(rd_u32be(buf + 4), MSG_MAGIC_CODE_V2);
    struct msg_record d;
    ck_assert_int_eq(msg_record_decode(buf, sz, &d, 1), (int)sz);
    ck_assert_int_eq(d.born_host.v6, 1);
    ck_assert_int_eq(d.born_host.ip[15], 1);
    ck_assert_uint_eq(d.topic_len, 200);
    ck_assert_int_eq(msg_record_encode(buf, sz - 1, &r), -ENOSPC);
}
END_TEST

START_TEST(java_hash_and_crc)
{
    ck_assert_int_eq(msg_java_hash("", 0), 0);
    ck_assert_int_eq(msg_java_hash("abc", 3), 96354);
    ck_assert_int_eq(msg_java_hash("TagA", 4), 2598919);
    ck_assert_int_eq(msg_java_hash("\xe4\xbd\xa0\xe5\xa5\xbd", 6), 652829); /* "你好" */
    ck_assert_int_eq(msg_java_hash("\xf0\x9f\x98\x80", 4), 1772899);         /* U+1F600 surrogate pair */
    ck_assert_uint_eq(msg_crc32(0, "123456789", 9), 0xcbf43926u);
    ck_assert_int_eq(msg_body_crc("123456789", 9), (int32_t)(0xcbf43926u & 0x7fffffff));
}
END_TEST

/* Bit-at-a-time CRC-32 (IEEE, reflected) as the reference. */
static uint32_t crc_bitwise(uint32_t crc, const uint8_t *p, size_t n)
{
    crc = ~crc;
    while (n--) {
        crc ^= *p++;
        for (int k = 0; k < 8; k++)
            crc = (crc & 1) ? 0xedb88320u ^ (crc >> 1) : crc >> 1;
    }
    return ~crc;
}

/* The accelerated paths (slicing tables, carry-less multiply folding) agree
 * with the reference for every length around the 16/64-byte block limits,
 * every alignment, and chained (incremental) use. */
START_TEST(crc32_matches_reference)
{
    static uint8_t buf[4200];
    uint32_t x = 12345;
    for (size_t i = 0; i < sizeof(buf); i++) {
        x = x * 1103515245u + 12345u;
        buf[i] = (uint8_t)(x >> 16);
    }
    for (size_t off = 0; off < 16; off++)
        for (size_t n = 0; n < 300; n++)
            ck_assert_uint_eq(msg_crc32(0x89abcdefu, buf + off, n), crc_bitwise(0x89abcdefu, buf + off, n));
    for (size_t n = 300; n + 16 < sizeof(buf); n += 97)
        ck_assert_uint_eq(msg_crc32(0, buf + 3, n), crc_bitwise(0, buf + 3, n));
    uint32_t part = msg_crc32(0, buf, 1000);
    ck_assert_uint_eq(msg_crc32(part, buf + 1000, 3000), crc_bitwise(0, buf, 4000));
    memset(buf, 0, 1024);
    ck_assert_uint_eq(msg_crc32(0, buf, 1024), crc_bitwise(0, buf, 1024));
}
END_TEST

START_TEST(props_and_keys)
{
    char p[64];
    size_t len = 0;
    ck_assert_int_eq(msg_prop_append(p, sizeof(p), &len, "A", "1", 1), 0);
    ck_assert_int_eq(msg_prop_append(p, sizeof(p), &len, "B", "x\001y", 3), -EINVAL);
    ck_assert_int_eq(msg_prop_append(p, 8, &len, "LONGNAME", "v", 1), -ENOSPC);
    ck_assert_mem_eq(p, "A\0011\002", 4);
    size_t pos = 0, kl;
    const char *k;
    const char *keys = " a  bb c ";
    int n = 0;
    while (msg_keys_next(keys, strlen(keys), &pos, &k, &kl))
        n++;
    ck_assert_int_eq(n, 3);
}
END_TEST

START_TEST(offset_msg_id)
{
    struct msg_host h = { { 10, 0, 0, 1 }, 10911, 0 };
    char id[MSG_OFFSET_ID_MAX];
    ck_assert_int_eq(msg_offset_id_encode(&h, 0x1234, id), 32);
    ck_assert_str_eq(id, "0A00000100002A9F0000000000001234");
    struct msg_host d;
    int64_t off;
    ck_assert_int_eq(msg_offset_id_decode(id, 32, &d, &off), 0);
    ck_assert_int_eq(off, 0x1234);
    ck_assert_uint_eq(d.port, 10911);
    ck_assert_int_eq(d.ip[3], 1);
    ck_assert_int_eq(msg_offset_id_decode("ZZ000001000027070000000000001234", 32, &d, &off), -EINVAL);
    ck_assert_int_eq(msg_offset_id_decode(id, 31, &d, &off), -EINVAL);
}
END_TEST

START_TEST(batch_body)
{
    uint8_t b[256];
    size_t len = 0;
    int w = msg_batch_encode_one(b, sizeof(b), 1, "one", 3, "K\001v\002", 4);
    ck_assert_int_eq(w, 22 + 3 + 4);
    len += (size_t)w;
    w = msg_batch_encode_one(b + len, sizeof(b) - len, 2, "second", 6, "", 0);
    len += (size_t)w;
    ck_assert_int_eq(msg_batch_count(b, len), 2);
    size_t pos = 0;
    struct msg_batch_item it;
    ck_assert_int_eq(msg_batch_next(b, len, &pos, &it), 1);
    ck_assert_int_eq(it.flag, 1);
    ck_assert_mem_eq(it.body, "one", 3);
    ck_assert_uint_eq(it.props_len, 4);
    ck_assert_int_eq(msg_batch_next(b, len, &pos, &it), 1);
    ck_assert_mem_eq(it.body, "second", 6);
    ck_assert_int_eq(msg_batch_next(b, len, &pos, &it), 0);
    ck_assert_int_eq(msg_batch_count(b, len - 1), -EBADMSG);
    wr_u32be(b + 16, 1000); /* body length beyond the item */
    ck_assert_int_eq(msg_batch_count(b, len), -EBADMSG);
}
END_TEST

START_TEST(uniq_ids)
{
    struct msg_uniq_gen g;
    uint8_t ip[4] = { 192, 168, 1, 2 };
    msg_uniq_init(&g, ip, 1234, 0xdeadbeef);
    char a[33], b[33];
    msg_uniq_next(&g, 1700000000000LL, a);
    msg_uniq_next(&g, 1700000000000LL, b);
    ck_assert_uint_eq(strlen(a), MSG_UNIQ_ID_LEN);
    ck_assert_str_ne(a, b);
    ck_assert_mem_eq(a, "C0A8010204D2DEADBEEF", 20);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("message");
    TCase *tc = tcase_create("codec");
    tcase_add_test(tc, record_round_trip);
    tcase_add_test(tc, record_ipv6_and_long_topic);
    tcase_add_test(tc, java_hash_and_crc);
    tcase_add_test(tc, crc32_matches_reference);
    tcase_add_test(tc, props_and_keys);
    tcase_add_test(tc, offset_msg_id);
    tcase_add_test(tc, batch_body);
    tcase_add_test(tc, uniq_ids);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
