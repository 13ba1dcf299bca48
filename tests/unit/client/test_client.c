/*
 * Unit tests of the client library: route parsing, queue selection,
 * allocation, subscriptions, header and property building, pull body
 * decoding; and a loopback test against a fake nameserver + broker built from
 * rmt_server (one server answers both roles) that drives the producer and the
 * clustering consumer end to end, including nameserver failover.
 */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "client.h"
#include "consumer.h"
#include "json_util.h"
#include "log.h"
#include "producer.h"
#include "route.h"

static const char *route_json =
    "{\"brokerDatas\":[{\"brokerAddrs\":{0:\"10.0.0.2:10911\",1:\"10.0.0.3:10911\"},"
    "\"brokerName\":\"broker-b\",\"cluster\":\"C\"},"
    "{\"brokerAddrs\":{0:\"10.0.0.1:10911\"},\"brokerName\":\"broker-a\",\"cluster\":\"C\"},"
    "{\"brokerAddrs\":{1:\"10.0.0.9:10911\"},\"brokerName\":\"broker-c\",\"cluster\":\"C\"}],"
    "\"filterServerTable\":{},\"queueDatas\":["
    "{\"brokerName\":\"broker-b\",\"perm\":6,\"readQueueNums\":2,\"topicSysFlag\":0,\"writeQueueNums\":2},"
    "{\"brokerName\":\"broker-a\",\"perm\":6,\"readQueueNums\":4,\"topicSysFlag\":0,\"writeQueueNums\":3},"
    "{\"brokerName\":\"broker-c\",\"perm\":6,\"readQueueNums\":1,\"topicSysFlag\":0,\"writeQueueNums\":1}]}";

START_TEST(route_parse_bare_keys)
{
    struct cli_route *r = NULL;
    char err[256];
    ck_assert_int_eq(cli_route_parse(route_json, strlen(route_json), &r, err, sizeof err), 0);
    ck_assert_int_eq(r->nbrokers, 3);
    ck_assert_str_eq(r->brokers[0].name, "broker-a");
    ck_assert_str_eq(cli_route_addr(r, "broker-b", 0), "10.0.0.2:10911");
    ck_assert_str_eq(cli_route_addr(r, "broker-b", 1), "10.0.0.3:10911");
    ck_assert_ptr_null(cli_route_addr(r, "broker-c", 0));
    ck_assert_str_eq(cli_route_any_addr(r, "broker-c", false), "10.0.0.9:10911");
    ck_assert_ptr_null(cli_route_any_addr(r, "broker-c", true));
    /* broker-c has no master: not writable; a then b sorted by name */
    ck_assert_int_eq(r->nwrite, 5);
    ck_assert_str_eq(r->write_queues[0].broker, "broker-a");
    ck_assert_int_eq(r->write_queues[2].queue_id, 2);
    ck_assert_str_eq(r->write_queues[3].broker, "broker-b");
    ck_assert_int_eq(r->nread, 7);
    ck_assert_str_eq(r->read_queues[6].broker, "broker-c");
    cli_route_free(r);
}
END_TEST

START_TEST(route_parse_malformed)
{
    struct cli_route *r = NULL;
    char err[256];
    const char *bad[] = {
        "{\"brokerDatas\":[",
        "{\"queueDatas\":[]}",
        "{\"brokerDatas\":[{\"brokerName\":\"a\"}],\"queueDatas\":[]}",
        "{\"brokerDatas\":[{\"brokerName\":\"a\",\"brokerAddrs\":{x:\"1:2\"}}],\"queueDatas\":[]}",
        "{\"brokerDatas\":[],\"queueDatas\":[{\"brokerName\":\"a\",\"perm\":6,\"readQueueNums\":-1,"
        "\"writeQueueNums\":1}]}",
        "[1,2]",
        "",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = 0;
        ck_assert_int_eq(cli_route_parse(bad[i], strlen(bad[i]), &r, err, sizeof err), -EBADMSG);
        ck_assert_ptr_null(r);
        ck_assert_msg(err[0] != 0, "no reason for case %zu", i);
    }
}
END_TEST

START_TEST(queue_selection)
{
    struct cli_route *r = NULL;
    char err[256];
    ck_assert_int_eq(cli_route_parse(route_json, strlen(route_json), &r, err, sizeof err), 0);
    uint32_t ctr = 0;
    struct cli_mq mq;
    int seen[5] = { 0 };
    for (int i = 0; i < 10; i++) {
        ck_assert_int_eq(cli_route_select_rr(r, &ctr, NULL, &mq), 0);
        int idx = strcmp(mq.broker, "broker-a") == 0 ? mq.queue_id : 3 + mq.queue_id;
        seen[idx]++;
    }
    for (int i = 0; i < 5; i++)
        ck_assert_int_eq(seen[i], 2);
    for (int i = 0; i < 10; i++) {
        ck_assert_int_eq(cli_route_select_rr(r, &ctr, "broker-a", &mq), 0);
        ck_assert_str_eq(mq.broker, "broker-b");
    }
    /* hash selection is stable and follows Java's String.hashCode */
    struct cli_mq a, b;
    ck_assert_int_eq(cli_route_select_hash(r, "order-42", 8, &a), 0);
    ck_assert_int_eq(cli_route_select_hash(r, "order-42", 8, &b), 0);
    ck_assert_str_eq(a.broker, b.broker);
    ck_assert_int_eq(a.queue_id, b.queue_id);
    /* "a".hashCode() = 97; 97 % 5 = 2 -> broker-a queue 2 */
    ck_assert_int_eq(cli_route_select_hash(r, "a", 1, &a), 0);
    ck_assert_str_eq(a.broker, "broker-a");
    ck_assert_int_eq(a.queue_id, 2);
    cli_route_free(r);
    const char *ro = "{\"brokerDatas\":[{\"brokerAddrs\":{0:\"h:1\"},\"brokerName\":\"x\"}],"
                     "\"queueDatas\":[{\"brokerName\":\"x\",\"perm\":4,\"readQueueNums\":2,\"writeQueueNums\":2}]}";
    ck_assert_int_eq(cli_route_parse(ro, strlen(ro), &r, err, sizeof err), 0);
    ck_assert_int_eq(cli_route_select_rr(r, &ctr, NULL, &mq), -ENOENT);
    ck_assert_int_eq(r->nread, 2);
    cli_route_free(r);
}
END_TEST

START_TEST(allocation_averagely)
{
    int start, counts[3], starts[3];
    for (int i = 0; i < 3; i++) {
        counts[i] = cli_allocate_averagely(8, 3, i, &start);
        starts[i] = start;
    }
    ck_assert_int_eq(counts[0], 3);
    ck_assert_int_eq(counts[1], 3);
    ck_assert_int_eq(counts[2], 2);
    ck_assert_int_eq(starts[0], 0);
    ck_assert_int_eq(starts[1], 3);
    ck_assert_int_eq(starts[2], 6);
    /* more consumers than queues: the first ones get one each */
    ck_assert_int_eq(cli_allocate_averagely(2, 4, 0, &start), 1);
    ck_assert_int_eq(start, 0);
    ck_assert_int_eq(cli_allocate_averagely(2, 4, 1, &start), 1);
    ck_assert_int_eq(start, 1);
    ck_assert_int_eq(cli_allocate_averagely(2, 4, 3, &start), 0);
    /* every queue is assigned exactly once */
    for (int nmq = 1; nmq <= 17; nmq++)
        for (int ncid = 1; ncid <= 6; ncid++) {
            int hit[17] = { 0 };
            for (int i = 0; i < ncid; i++) {
                int n = cli_allocate_averagely(nmq, ncid, i, &start);
                for (int k = 0; k < n; k++)
                    hit[(start + k) % nmq]++;
            }
            for (int q = 0; q < nmq; q++)
                ck_assert_int_eq(hit[q], 1);
        }
    ck_assert_int_eq(cli_allocate_averagely(8, 3, 5, &start), 0);
    const char *ids[] = { "10.0.0.2@9", "10.0.0.10@1", "10.0.0.2@10" };
    cli_sort_strings(ids, 3);
    ck_assert_str_eq(ids[0], "10.0.0.10@1");
    ck_assert_str_eq(ids[1], "10.0.0.2@10");
    ck_assert_str_eq(ids[2], "10.0.0.2@9");
}
END_TEST

START_TEST(subscription_parsing)
{
    struct cli_sub s;
    char err[160];
    ck_assert_int_eq(cli_sub_parse("*", &s, err, sizeof err), 0);
    ck_assert(s.all);
    ck_assert(cli_sub_match(&s, NULL, 0));
    ck_assert_int_eq(cli_sub_parse(NULL, &s, err, sizeof err), 0);
    ck_assert(s.all);
    ck_assert_int_eq(cli_sub_parse(" TagA ||TagB|| TagA ", &s, err, sizeof err), 0);
    ck_assert(!s.all);
    ck_assert_int_eq(s.ntags, 2);
    ck_assert_str_eq(s.tags[0], "TagA");
    ck_assert_str_eq(s.tags[1], "TagB");
    ck_assert_int_eq(s.codes[0], msg_java_hash("TagA", 4));
    ck_assert(cli_sub_match(&s, "TagB", 4));
    ck_assert(!cli_sub_match(&s, "TagC", 4));
    ck_assert(!cli_sub_match(&s, "Tag", 3));
    ck_assert(!cli_sub_match(&s, NULL, 0));
    ck_assert_int_eq(cli_sub_parse("TagA || ", &s, err, sizeof err), -EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "empty tag"));
    ck_assert_int_eq(cli_sub_parse("TagA | TagB", &s, err, sizeof err), -EINVAL);
}
END_TEST

START_TEST(header_and_properties)
{
    struct cli_message m = { .topic = "T", .body = "x", .body_len = 1, .tags = "TagA", .keys = "k1 k2",
                             .delay_level = 3 };
    struct buf p = BUF_INIT;
    ck_assert_int_eq(cli_message_properties(&m, "0123456789ABCDEF0123456789ABCDEF", &p), 0);
    const char *v;
    size_t vl;
    ck_assert(msg_prop_get((const char *)p.data, p.len, "TAGS", &v, &vl));
    ck_assert_int_eq((int)vl, 4);
    ck_assert(msg_prop_get((const char *)p.data, p.len, "KEYS", &v, &vl));
    ck_assert_mem_eq(v, "k1 k2", 5);
    ck_assert(msg_prop_get((const char *)p.data, p.len, "WAIT", &v, &vl));
    ck_assert_mem_eq(v, "true", 4);
    ck_assert(msg_prop_get((const char *)p.data, p.len, "DELAY", &v, &vl));
    ck_assert_mem_eq(v, "3", 1);
    ck_assert(msg_prop_get((const char *)p.data, p.len, "UNIQ_KEY", &v, &vl));
    ck_assert_int_eq((int)vl, 32);
    buf_reset(&p);
    m.tags = "bad\001tag";
    ck_assert_int_eq(cli_message_properties(&m, NULL, &p), -EINVAL);
    buf_free(&p);

    rmt_cmd c;
    rmt_cmd_init(&c, RMT_REQ_SEND_MESSAGE_V2);
    struct cli_send_header h = { .group = "G", .topic = "T", .broker = "b", .props = "A\001B\002",
                                 .props_len = 4, .queue_id = 3, .flag = 7, .born_ts = 1700000000123LL };
    ck_assert_int_eq(cli_send_header_build(&c, &h), 0);
    ck_assert_str_eq(rmt_cmd_ext(&c, "a"), "G");
    ck_assert_str_eq(rmt_cmd_ext(&c, "b"), "T");
    ck_assert_str_eq(rmt_cmd_ext(&c, "c"), "TBW102");
    ck_assert_str_eq(rmt_cmd_ext(&c, "d"), "4");
    ck_assert_str_eq(rmt_cmd_ext(&c, "e"), "3");
    ck_assert_str_eq(rmt_cmd_ext(&c, "f"), "0");
    ck_assert_str_eq(rmt_cmd_ext(&c, "g"), "1700000000123");
    ck_assert_str_eq(rmt_cmd_ext(&c, "h"), "7");
    ck_assert_str_eq(rmt_cmd_ext(&c, "i"), "A\001B\002");
    ck_assert_str_eq(rmt_cmd_ext(&c, "m"), "false");
    ck_assert_str_eq(rmt_cmd_ext(&c, "n"), "b");
    rmt_cmd_reset(&c, RMT_REQ_SEND_MESSAGE);
    h.v1 = true;
    h.batch = true;
    ck_assert_int_eq(cli_send_header_build(&c, &h), 0);
    ck_assert_str_eq(rmt_cmd_ext(&c, "producerGroup"), "G");
    ck_assert_str_eq(rmt_cmd_ext(&c, "queueId"), "3");
    ck_assert_str_eq(rmt_cmd_ext(&c, "properties"), "A\001B\002");
    ck_assert_str_eq(rmt_cmd_ext(&c, "batch"), "true");
    ck_assert_ptr_null(rmt_cmd_ext(&c, "a"));
    rmt_cmd_destroy(&c);
}
END_TEST

/* Encodes one stored record for a fake pull body. */
static size_t put_record(uint8_t *dst, size_t cap, const char *topic, int qid, int64_t qoff,
                         const char *body, const char *props)
{
    struct msg_record r = { 0 };
    r.magic = MSG_MAGIC_CODE;
    r.queue_id = qid;
    r.queue_offset = qoff;
    r.phys_offset = 1000 + qoff * 100;
    r.born_ts = 1;
    r.store_ts = 2;
    r.born_host.ip[0] = 127; r.born_host.ip[3] = 1; r.born_host.port = 5;
    r.store_host.ip[0] = 127; r.store_host.ip[3] = 1; r.store_host.port = 10911;
    r.body = (const uint8_t *)body;
    r.body_len = (uint32_t)strlen(body);
    r.body_crc = msg_body_crc(body, r.body_len);
    r.topic = topic;
    r.topic_len = (uint32_t)strlen(topic);
    r.props = props;
    r.props_len = (uint32_t)strlen(props);
    int n = msg_record_encode(dst, cap, &r);
    ck_assert_int_gt(n, 0);
    return (size_t)n;
}

START_TEST(pull_body_views)
{
    uint8_t body[1024];
    size_t len = put_record(body, sizeof body, "T", 1, 5, "hello", "TAGS\001TagA\002UNIQ_KEY\001ABC\002");
    len += put_record(body + len, sizeof body - len, "T", 1, 6, "world", "KEYS\001k\002");
    size_t pos = 0;
    struct cli_msg_view v;
    ck_assert_int_eq(cli_pull_next(body, len, &pos, &v), 1);
    ck_assert_mem_eq(v.body, "hello", 5);
    ck_assert_mem_eq(v.tags, "TagA", 4);
    ck_assert_int_eq((int)v.msg_id_len, 3);
    ck_assert_int_eq(v.queue_offset, 5);
    ck_assert_int_eq(cli_pull_next(body, len, &pos, &v), 1);
    ck_assert_ptr_null(v.tags);
    ck_assert_mem_eq(v.keys, "k", 1);
    ck_assert_int_eq((int)v.msg_id_len, 32);   /* offset id when there is no UNIQ_KEY */
    ck_assert_int_eq(cli_pull_next(body, len, &pos, &v), 0);
    pos = 0;
    ck_assert_int_eq(cli_pull_next(body, len - 3, &pos, &v), 1);
    ck_assert_int_eq(cli_pull_next(body, len - 3, &pos, &v), -EBADMSG);
}
END_TEST

/* Fake nameserver + broker. */
#define FQ 4
struct fake {
    struct ev_loop *loop;
    rmt_server *srv;
    char addr[64];
    struct buf log[FQ];           /* stored records per queue */
    int64_t count[FQ];
    size_t *pos[FQ];              /* record start per offset */
    int64_t committed[FQ];        /* -1: none */
    char consumers[4][128];
    int nconsumers;
    int unregisters, heartbeats;
    struct { rmt_conn *c; rmt_cmd *req; } parked[16];
    int nparked;
    ev_timer park_timer;
};

static void fake_answer_pull(struct fake *f, rmt_conn *c, rmt_cmd *req, bool may_park)
{
    int64_t qid = -1, off = -1, max = 32;
    rmt_cmd_ext_int(req, "queueId", &qid);
    rmt_cmd_ext_int(req, "queueOffset", &off);
    rmt_cmd_ext_int(req, "maxMsgNums", &max);
    int64_t sysflag = 0, commit = 0;
    rmt_cmd_ext_int(req, "sysFlag", &sysflag);
    rmt_cmd_ext_int(req, "commitOffset", &commit);
    ck_assert(qid >= 0 && qid < FQ);
    if (sysflag & CLI_PULL_FLAG_COMMIT_OFFSET)
        f->committed[qid] = commit;
    rmt_cmd resp;
    rmt_cmd_init(&resp, RMT_RESP_SUCCESS);
    if (off < f->count[qid]) {
        int64_t end = off + max < f->count[qid] ? off + max : f->count[qid];
        size_t from = f->pos[qid][off], to = end < f->count[qid] ? f->pos[qid][end] : f->log[qid].len;
        rmt_cmd_set_body(&resp, f->log[qid].data + from, (uint32_t)(to - from));
        rmt_cmd_set_ext_int(&resp, "nextBeginOffset", end);
    } else {
        if (may_park && f->nparked < 16) {
            f->parked[f->nparked].c = c;
            f->parked[f->nparked].req = rmt_cmd_dup(req);
            rmt_conn_ref(c);
            f->nparked++;
            rmt_cmd_destroy(&resp);
            return;
        }
        resp.code = RMT_RESP_PULL_NOT_FOUND;
        rmt_cmd_set_ext_int(&resp, "nextBeginOffset", off);
    }
    rmt_cmd_set_ext_int(&resp, "minOffset", 0);
    rmt_cmd_set_ext_int(&resp, "maxOffset", f->count[qid]);
    rmt_cmd_set_ext_int(&resp, "suggestWhichBrokerId", 0);
    rmt_conn_respond(c, req, &resp);
    rmt_cmd_destroy(&resp);
}

static void park_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop; (void)revents;
    struct fake *f = w->data;
    int n = f->nparked;
    f->nparked = 0;
    for (int i = 0; i < n; i++) {
        if (rmt_conn_is_open(f->parked[i].c))
            fake_answer_pull(f, f->parked[i].c, f->parked[i].req, false);
        rmt_conn_unref(f->parked[i].c);
        rmt_cmd_free(f->parked[i].req);
    }
}

static void fake_store(struct fake *f, rmt_cmd *req, const uint8_t *body, uint32_t blen,
                       const char *props, size_t plen, int qid, rmt_cmd *resp, bool first)
{
    char topic[128];
    snprintf(topic, sizeof topic, "%s", rmt_cmd_ext(req, "b") ? rmt_cmd_ext(req, "b") : rmt_cmd_ext(req, "topic"));
    uint8_t rec[4096];
    struct msg_record r = { 0 };
    r.queue_id = qid;
    r.queue_offset = f->count[qid];
    r.phys_offset = (int64_t)f->log[qid].len + qid * 1000000;
    r.store_host.ip[0] = 127; r.store_host.ip[3] = 1; r.store_host.port = 10911;
    r.born_host = r.store_host;
    r.body = body;
    r.body_len = blen;
    r.body_crc = msg_body_crc(body, blen);
    r.topic = topic;
    r.topic_len = (uint32_t)strlen(topic);
    r.props = props;
    r.props_len = (uint32_t)plen;
    int n = msg_record_encode(rec, sizeof rec, &r);
    ck_assert_int_gt(n, 0);
    f->pos[qid] = realloc(f->pos[qid], (size_t)(f->count[qid] + 1) * sizeof(size_t));
    f->pos[qid][f->count[qid]] = f->log[qid].len;
    buf_append(&f->log[qid], rec, (size_t)n);
    if (first) {
        char id[MSG_OFFSET_ID_MAX];
        msg_offset_id_encode(&r.store_host, r.phys_offset, id);
        rmt_cmd_set_ext(resp, "msgId", id);
        rmt_cmd_set_ext_int(resp, "queueId", qid);
        rmt_cmd_set_ext_int(resp, "queueOffset", f->count[qid]);
    }
    f->count[qid]++;
}

static void fake_on_request(rmt_conn *c, rmt_cmd *req, void *ud)
{
    struct fake *f = ud;
    rmt_cmd resp;
    rmt_cmd_init(&resp, RMT_RESP_SUCCESS);
    struct buf b = BUF_INIT;
    switch (req->code) {
    case RMT_REQ_GET_ROUTEINFO_BY_TOPIC:
        if (strcmp(rmt_cmd_ext(req, "topic"), "T") != 0) {
            rmt_conn_respond_error(c, req, RMT_RESP_TOPIC_NOT_EXIST, "No topic route info for %s",
                                   rmt_cmd_ext(req, "topic"));
            goto out;
        }
        buf_printf(&b, "{\"brokerDatas\":[{\"brokerAddrs\":{0:\"%s\"},\"brokerName\":\"fb\",\"cluster\":\"C\"}],"
                       "\"queueDatas\":[{\"brokerName\":\"fb\",\"perm\":6,\"readQueueNums\":%d,"
                       "\"writeQueueNums\":%d,\"topicSysFlag\":0}]}", f->addr, FQ, FQ);
        rmt_cmd_set_body(&resp, b.data, (uint32_t)b.len);
        break;
    case RMT_REQ_SEND_MESSAGE_V2: {
        int64_t qid = -1;
        ck_assert_int_eq(rmt_cmd_ext_int(req, "e", &qid), 0);
        ck_assert_str_eq(rmt_cmd_ext(req, "a"), "PG");
        const char *props = rmt_cmd_ext(req, "i");
        fake_store(f, req, req->body, req->body_len, props, strlen(props), (int)qid, &resp, true);
        break;
    }
    case RMT_REQ_SEND_BATCH_MESSAGE: {
        int64_t qid = -1;
        ck_assert_int_eq(rmt_cmd_ext_int(req, "e", &qid), 0);
        ck_assert_str_eq(rmt_cmd_ext(req, "m"), "true");
        size_t pos = 0;
        struct msg_batch_item it;
        bool first = true;
        while (msg_batch_next(req->body, req->body_len, &pos, &it) == 1) {
            fake_store(f, req, it.body, it.body_len, it.props, it.props_len, (int)qid, &resp, first);
            first = false;
        }
        ck_assert(!first);
        break;
    }
    case RMT_REQ_PULL_MESSAGE:
        rmt_cmd_destroy(&resp);
        fake_answer_pull(f, c, req, true);
        return;
    case RMT_REQ_HEART_BEAT: {
        char err[128];
        json_t *j = json_parse_rocketmq((const char *)req->body, req->body_len, err, sizeof err);
        ck_assert_ptr_nonnull(j);
        const char *id = json_string_value(json_object_get(j, "clientID"));
        json_t *cd = json_array_get(json_object_get(j, "consumerDataSet"), 0);
        ck_assert_str_eq(json_string_value(json_object_get(cd, "groupName")), "CG");
        ck_assert_str_eq(json_string_value(json_object_get(cd, "consumeType")), "CONSUME_PASSIVELY");
        json_t *sd = json_array_get(json_object_get(cd, "subscriptionDataSet"), 0);
        ck_assert_str_eq(json_string_value(json_object_get(sd, "topic")), "T");
        bool known = false;
        for (int i = 0; i < f->nconsumers; i++)
            known |= strcmp(f->consumers[i], id) == 0;
        if (!known && f->nconsumers < 4)
            snprintf(f->consumers[f->nconsumers++], 128, "%s", id);
        f->heartbeats++;
        json_decref(j);
        break;
    }
    case RMT_REQ_GET_CONSUMER_LIST_BY_GROUP:
        buf_printf(&b, "{\"consumerIdList\":[");
        for (int i = 0; i < f->nconsumers; i++)
            buf_printf(&b, "%s\"%s\"", i ? "," : "", f->consumers[i]);
        buf_printf(&b, "]}");
        rmt_cmd_set_body(&resp, b.data, (uint32_t)b.len);
        break;
    case RMT_REQ_QUERY_CONSUMER_OFFSET: {
        int64_t qid = -1;
        rmt_cmd_ext_int(req, "queueId", &qid);
        if (f->committed[qid] < 0)
            resp.code = RMT_RESP_QUERY_NOT_FOUND;
        else
            rmt_cmd_set_ext_int(&resp, "offset", f->committed[qid]);
        break;
    }
    case RMT_REQ_UPDATE_CONSUMER_OFFSET: {
        int64_t qid = -1, off = -1;
        rmt_cmd_ext_int(req, "queueId", &qid);
        rmt_cmd_ext_int(req, "commitOffset", &off);
        f->committed[qid] = off;
        break;
    }
    case RMT_REQ_GET_MAX_OFFSET:
    case RMT_REQ_GET_MIN_OFFSET: {
        int64_t qid = -1;
        rmt_cmd_ext_int(req, "queueId", &qid);
        rmt_cmd_set_ext_int(&resp, "offset", req->code == RMT_REQ_GET_MAX_OFFSET ? f->count[qid] : 0);
        break;
    }
    case RMT_REQ_UNREGISTER_CLIENT: {
        const char *id = rmt_cmd_ext(req, "clientID");
        for (int i = 0; i < f->nconsumers; i++)
            if (strcmp(f->consumers[i], id) == 0) {
                memmove(f->consumers[i], f->consumers[f->nconsumers - 1], 128);
                f->nconsumers--;
                break;
            }
        f->unregisters++;
        break;
    }
    default:
        rmt_conn_respond_error(c, req, RMT_RESP_REQUEST_CODE_NOT_SUPPORTED, "code %d", req->code);
        goto out;
    }
    rmt_conn_respond(c, req, &resp);
out:
    rmt_cmd_destroy(&resp);
    buf_free(&b);
}

static void fake_start(struct fake *f, struct ev_loop *loop)
{
    memset(f, 0, sizeof *f);
    f->loop = loop;
    for (int i = 0; i < FQ; i++)
        f->committed[i] = -1;
    struct rmt_server_opts so = { .host = "127.0.0.1", .on_request = fake_on_request, .ud = f };
    int err = 0;
    f->srv = rmt_server_new(loop, &so, &err);
    ck_assert_ptr_nonnull(f->srv);
    snprintf(f->addr, sizeof f->addr, "127.0.0.1:%d", rmt_server_port(f->srv));
    ev_timer_init(&f->park_timer, park_cb, 0.05, 0.05);
    f->park_timer.data = f;
    ev_timer_start(loop, &f->park_timer);
}

static void fake_stop(struct fake *f)
{
    ev_timer_stop(f->loop, &f->park_timer);
    for (int i = 0; i < f->nparked; i++) {
        rmt_conn_unref(f->parked[i].c);
        rmt_cmd_free(f->parked[i].req);
    }
    rmt_server_free(f->srv);
    for (int i = 0; i < FQ; i++) {
        buf_free(&f->log[i]);
        free(f->pos[i]);
    }
}

static int dead_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    bind(fd, (struct sockaddr *)&sa, sizeof sa);
    socklen_t sl = sizeof sa;
    getsockname(fd, (struct sockaddr *)&sa, &sl);
    close(fd);
    return ntohs(sa.sin_port);
}

struct got {
    int n;
    char ids[64][40];
    int bad_tag;
};

static int on_msgs(cli_consumer *cs, const struct cli_msg_view *m, int n, void *ud)
{
    (void)cs;
    struct got *g = ud;
    for (int i = 0; i < n; i++) {
        if (!m[i].tags || m[i].tags_len != 4 || memcmp(m[i].tags, "TagA", 4))
            g->bad_tag++;
        if (g->n < 64)
            snprintf(g->ids[g->n], sizeof g->ids[0], "%.*s", (int)m[i].msg_id_len, m[i].msg_id);
        g->n++;
    }
    return 0;
}

static void run_for(struct ev_loop *loop, double secs)
{
    ev_tstamp end = ev_time() + secs;
    while (ev_time() < end)
        ev_run(loop, EVRUN_ONCE | EVRUN_NOWAIT), usleep(1000);
}

static void run_until_count(struct ev_loop *loop, const int *n, int want, double secs)
{
    ev_tstamp end = ev_time() + secs;
    while (*n < want && ev_time() < end) {
        ev_run(loop, EVRUN_ONCE | EVRUN_NOWAIT);
        usleep(1000);
    }
}

START_TEST(loopback_produce_consume)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct fake f;
    fake_start(&f, loop);
    char ns[160];
    snprintf(ns, sizeof ns, "127.0.0.1:%d;%s", dead_port(), f.addr);
    struct cli_opts co = { .namesrv_addr = ns, .instance_name = "one", .client_ip = "127.0.0.1",
                           .timeout_ms = 1000 };
    int err;
    cli_client *c = cli_client_new(loop, &co, &err);
    ck_assert_ptr_nonnull(c);
    ck_assert_str_eq(cli_client_id(c), "127.0.0.1@one");

    /* unknown topic: clear error */
    struct cli_route *r = NULL;
    char msg[CLI_ERRMSG_MAX];
    ck_assert_int_eq(cli_route_get_sync(c, "Nope", &r, msg, sizeof msg), -ENOENT);
    ck_assert_ptr_nonnull(strstr(msg, "does not exist"));

    struct cli_producer_opts po = { .group = "PG", .retry_times = -1 };
    cli_producer *p = cli_producer_new(c, &po, &err);
    ck_assert_ptr_nonnull(p);
    struct cli_send_result res;
    char ids[20][40];
    for (int i = 0; i < 20; i++) {
        char body[32];
        snprintf(body, sizeof body, "msg-%d", i);
        struct cli_message m = { .topic = "T", .body = body, .body_len = (uint32_t)strlen(body),
                                 .tags = i % 2 ? "TagB" : "TagA", .keys = "k" };
        ck_assert_int_eq(cli_send_sync(p, &m, &res), 0);
        ck_assert_int_eq(res.status, CLI_SEND_OK);
        ck_assert_int_eq((int)strlen(res.msg_id), 32);
        ck_assert_int_eq((int)strlen(res.offset_msg_id), 32);
        ck_assert_str_eq(res.broker, "fb");
        ck_assert_int_eq(res.queue_offset, f.count[res.queue_id] - 1);
        snprintf(ids[i], sizeof ids[i], "%s", res.msg_id);
    }
    for (int q = 0; q < FQ; q++)
        ck_assert_int_eq(f.count[q], 5);    /* round robin */
    struct cli_message bm[3] = {
        { .topic = "T", .body = "b1", .body_len = 2, .tags = "TagA" },
        { .topic = "T", .body = "b2", .body_len = 2, .tags = "TagA" },
        { .topic = "T", .body = "b3", .body_len = 2, .tags = "TagC" },
    };
    ck_assert_int_eq(cli_send_batch_sync(p, bm, 3, &res), 0);
    ck_assert_int_eq(f.count[res.queue_id], 8);
    ck_assert_int_eq(res.queue_offset, 5);
    struct cli_message unknown = { .topic = "Nope", .body = "x", .body_len = 1 };
    ck_assert_int_eq(cli_send_sync(p, &unknown, &res), -ENOENT);
    ck_assert_ptr_nonnull(strstr(res.errmsg, "Nope"));

    struct got g = { 0 };
    struct cli_consumer_opts cso = { .group = "CG", .topic = "T", .sub_expr = "TagA",
                                     .from = CLI_FROM_FIRST_OFFSET, .suspend_ms = 1000,
                                     .on_messages = on_msgs, .ud = &g };
    cli_consumer *cs = cli_consumer_new(c, &cso, &err);
    ck_assert_ptr_nonnull(cs);
    ck_assert_int_eq(cli_consumer_start(cs), 0);
    run_until_count(loop, &g.n, 12, 10.0);
    run_for(loop, 0.3);
    ck_assert_int_eq(g.n, 12);         /* 10 TagA singles + 2 TagA in the batch */
    ck_assert_int_eq(g.bad_tag, 0);
    for (int i = 0; i < 20; i += 2) {
        bool found = false;
        for (int k = 0; k < g.n; k++)
            found |= strcmp(g.ids[k], ids[i]) == 0;
        ck_assert_msg(found, "message %d not delivered", i);
    }
    struct cli_mq as[8];
    ck_assert_int_eq(cli_consumer_assigned(cs, as, 8), FQ);
    ck_assert_int_eq(cli_consumer_shutdown(cs, 3000), 0);
    cli_consumer_free(cs);
    ck_assert_int_eq(f.unregisters, 1);
    for (int q = 0; q < FQ; q++)
        ck_assert_int_eq(f.committed[q], f.count[q]);

    /* a restarted consumer resumes from the committed offsets */
    struct got g2 = { 0 };
    cso.ud = &g2;
    cso.from = CLI_FROM_FIRST_OFFSET;
    cs = cli_consumer_new(c, &cso, &err);
    ck_assert_ptr_nonnull(cs);
    cli_consumer_start(cs);
    run_for(loop, 0.5);
    ck_assert_int_eq(g2.n, 0);
    struct cli_message m2 = { .topic = "T", .body = "late", .body_len = 4, .tags = "TagA" };
    ck_assert_int_eq(cli_send_sync(p, &m2, &res), 0);
    run_until_count(loop, &g2.n, 1, 5.0);
    ck_assert_int_eq(g2.n, 1);
    ck_assert_str_eq(g2.ids[0], res.msg_id);

    /* a second member of the group: queues split 2/2 after NOTIFY-less rebalance */
    struct cli_opts co2 = co;
    co2.instance_name = "two";
    cli_client *c2 = cli_client_new(loop, &co2, &err);
    struct got g3 = { 0 };
    cso.ud = &g3;
    cli_consumer *cs2 = cli_consumer_new(c2, &cso, &err);
    cli_consumer_start(cs2);
    run_for(loop, 0.5);
    cli_consumer_rebalance_now(cs);
    cli_consumer_rebalance_now(cs2);
    run_for(loop, 0.5);
    ck_assert_int_eq(cli_consumer_assigned(cs, as, 8), 2);
    ck_assert_int_eq(cli_consumer_assigned(cs2, as, 8), 2);

    cli_consumer_shutdown(cs2, 3000);
    cli_consumer_free(cs2);
    cli_client_free(c2);
    cli_consumer_shutdown(cs, 3000);
    cli_consumer_free(cs);
    cli_producer_free(p);
    cli_client_free(c);
    fake_stop(&f);
    ev_loop_destroy(loop);
}
END_TEST

int main(void)
{
    log_set_level(LOG_LVL_ERROR);
    Suite *s = suite_create("client");
    TCase *tc = tcase_create("client");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, route_parse_bare_keys);
    tcase_add_test(tc, route_parse_malformed);
    tcase_add_test(tc, queue_selection);
    tcase_add_test(tc, allocation_averagely);
    tcase_add_test(tc, subscription_parsing);
    tcase_add_test(tc, header_and_properties);
    tcase_add_test(tc, pull_body_views);
    tcase_add_test(tc, loopback_produce_consume);
    suite_add_tcase(s, tc);
    SRunner *r = srunner_create(s);
    srunner_run_all(r, CK_NORMAL);
    int failed = srunner_ntests_failed(r);
    srunner_free(r);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
