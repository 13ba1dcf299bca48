/*
 * Pop consumption against the real nameserver and broker binaries on
 * loopback: invisibility and ack, change of invisible time, redelivery with
 * a raised attempt, dead-lettering after retryMaxTimes, durability of acks
 * and in-flight messages across kill -9, orderly (FIFO) queues, and long
 * polling. The client side is written from RocketMQ's protocol: receipts
 * (extraInfo) are built from the response header or taken from POP_CK.
 */
#include <check.h>
#include <ev.h>
#include <signal.h>
#include <stdbool.h>
#include <sys/wait.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "message.h"
#include "remoting.h"

#define BROKER_NAME "broker-a"

static char *g_dir;
static char g_log[512];
static pid_t g_ns, g_broker;
static int g_bport, g_nsport;
static char g_baddr[64];
static struct ev_loop *g_loop;
static rmt_client *g_cl;

static void start_broker(void)
{
    char p1[64], p2[600], p3[64];
    snprintf(p1, sizeof p1, "listenPort=%d", g_bport);
    snprintf(p2, sizeof p2, "storePathRootDir=%s/store", g_dir);
    snprintf(p3, sizeof p3, "namesrvAddr=127.0.0.1:%d", g_nsport);
    char *argv[] = { (char *)th_bin("BROKER_BIN"), "--set", p1, "--set", p2, "--set", p3, "--set", "brokerIP1=127.0.0.1",
                     "--set", "bindAddress=127.0.0.1", "--set", "brokerName=" BROKER_NAME,
                     "--set", "flushIntervalCommitLog=20", NULL };
    g_broker = th_spawn(argv, g_log);
    ck_assert_msg(th_wait_port(g_bport, 10000), "broker did not start; see %s", g_log);
}

static void setup(void)
{
    g_dir = th_tmpdir();
    snprintf(g_log, sizeof g_log, "%s/daemons.log", g_dir);
    int nsport = g_nsport = th_free_port();
    char p[64];
    snprintf(p, sizeof p, "listenPort=%d", nsport);
    char *nsargv[] = { (char *)th_bin("NAMESRV_BIN"), "--set", p, "--set", "bindAddress=127.0.0.1", NULL };
    g_ns = th_spawn(nsargv, g_log);
    ck_assert(th_wait_port(nsport, 10000));
    g_bport = th_free_port();
    snprintf(g_baddr, sizeof g_baddr, "127.0.0.1:%d", g_bport);
    start_broker();
    g_loop = ev_loop_new(EVFLAG_AUTO);
    struct rmt_client_opts o = { 0 };
    g_cl = rmt_client_new(g_loop, &o);
}

static void teardown(void)
{
    rmt_client_free(g_cl);
    ev_loop_destroy(g_loop);
    int st = th_stop(g_broker, 15000);
    th_stop(g_ns, 5000);
    bool clean = st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0;
    if (clean)
        th_rmtree(g_dir);
    ck_assert_msg(clean, "the broker did not stop cleanly (status %d); see %s", st, g_log);
}

/* Sync call; fields are key/value pairs ending with NULL. */
static rmt_cmd *callv(int code, const void *body, size_t blen, int timeout_ms, const char *const *kv)
{
    rmt_cmd req;
    rmt_cmd_init(&req, code);
    for (int i = 0; kv[i]; i += 2)
        rmt_cmd_set_ext(&req, kv[i], kv[i + 1]);
    if (body)
        rmt_cmd_set_body(&req, body, (uint32_t)blen);
    rmt_cmd *resp = NULL;
    int rc = rmt_client_invoke_sync(g_cl, g_baddr, &req, timeout_ms, &resp);
    rmt_cmd_destroy(&req);
    ck_assert_msg(rc == 0, "request %d failed: %d", code, rc);
    return resp;
}

#define CALL(code, ...) callv(code, NULL, 0, 5000, (const char *const[]){ __VA_ARGS__, NULL })

static void send_msg(const char *topic, int qid, const char *body)
{
    char q[16];
    snprintf(q, sizeof q, "%d", qid);
    rmt_cmd req;
    rmt_cmd_init(&req, RMT_REQ_SEND_MESSAGE);
    rmt_cmd_set_ext(&req, "producerGroup", "PopTestProducer");
    rmt_cmd_set_ext(&req, "topic", topic);
    rmt_cmd_set_ext(&req, "defaultTopic", "TBW102");
    rmt_cmd_set_ext(&req, "defaultTopicQueueNums", "4");
    rmt_cmd_set_ext(&req, "queueId", q);
    rmt_cmd_set_ext(&req, "sysFlag", "0");
    rmt_cmd_set_ext(&req, "flag", "0");
    rmt_cmd_set_ext(&req, "properties", "TAGS\001tagA\002");
    rmt_cmd_set_body(&req, body, (uint32_t)strlen(body));
    rmt_cmd *resp = NULL;
    ck_assert_int_eq(rmt_client_invoke_sync(g_cl, g_baddr, &req, 5000, &resp), 0);
    rmt_cmd_destroy(&req);
    ck_assert_msg(resp->code == 0, "send failed: %d %s", resp->code, rmt_cmd_remark(resp));
    rmt_cmd_free(resp);
}

struct pmsg {
    char body[64];
    char topic[128];
    int qid;
    long long off;
    int reconsume;
    char extra[256];
};

struct pres {
    int code;
    int n;
    long long pop_time;
    struct pmsg m[32];
    char order_info[512];
};

static long long info_start(const char *info, int retry, int qid)
{
    char key[32];
    snprintf(key, sizeof key, "%d %d ", retry, qid);
    const char *p = info;
    while (p && *p) {
        if (strncmp(p, key, strlen(key)) == 0)
            return atoll(p + strlen(key));
        p = strchr(p, ';');
        if (p)
            p++;
    }
    return -1;
}

static void decode_pop(const rmt_cmd *r, struct pres *out)
{
    memset(out, 0, sizeof *out);
    out->code = r->code;
    if (r->code != 0)
        return;
    long long pt = atoll(rmt_cmd_ext(r, "popTime"));
    long long it = atoll(rmt_cmd_ext(r, "invisibleTime"));
    int rq = atoi(rmt_cmd_ext(r, "reviveQid"));
    const char *sinfo = rmt_cmd_ext(r, "startOffsetInfo");
    const char *oinfo = rmt_cmd_ext(r, "orderCountInfo");
    out->pop_time = pt;
    if (oinfo)
        snprintf(out->order_info, sizeof out->order_info, "%s", oinfo);
    size_t pos = 0;
    while (pos < r->body_len && out->n < 32) {
        struct msg_record rec;
        int n = msg_record_decode(r->body + pos, r->body_len - pos, &rec, 1);
        ck_assert_int_gt(n, 0);
        struct pmsg *m = &out->m[out->n++];
        snprintf(m->body, sizeof m->body, "%.*s", (int)rec.body_len, (const char *)rec.body);
        snprintf(m->topic, sizeof m->topic, "%.*s", (int)rec.topic_len, rec.topic);
        m->qid = rec.queue_id;
        m->off = rec.queue_offset;
        m->reconsume = rec.reconsume_times;
        const char *v;
        size_t vl;
        if (msg_prop_get(rec.props, rec.props_len, MSG_PROP_POP_CK, &v, &vl)) {
            snprintf(m->extra, sizeof m->extra, "%.*s", (int)vl, v);
        } else {
            long long start = info_start(sinfo, 0, rec.queue_id);
            ck_assert_int_ge(start, 0);
            snprintf(m->extra, sizeof m->extra, "%lld %lld %lld %d 0 %s %d %lld", start, pt, it, rq,
                     BROKER_NAME, rec.queue_id, m->off);
        }
        pos += (size_t)n;
    }
}

static void pop_ex(const char *group, const char *topic, int max, int invis_ms, int poll_ms, bool order,
                   struct pres *out)
{
    char mx[16], iv[24], pl[24], born[24];
    snprintf(mx, sizeof mx, "%d", max);
    snprintf(iv, sizeof iv, "%d", invis_ms);
    snprintf(pl, sizeof pl, "%d", poll_ms);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(born, sizeof born, "%lld", (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
    rmt_cmd *r = callv(RMT_REQ_POP_MESSAGE, NULL, 0, poll_ms + 5000,
                       (const char *const[]){ "consumerGroup", group, "topic", topic, "queueId", "-1",
                                              "maxMsgNums", mx, "invisibleTime", iv, "pollTime", pl,
                                              "bornTime", born, "initMode", "0", "expType", "TAG", "exp", "*",
                                              "order", order ? "true" : "false", NULL });
    decode_pop(r, out);
    ck_assert_msg(r->code == 0 || r->code == RMT_RESP_POLLING_TIMEOUT, "pop: %d %s", r->code,
                  rmt_cmd_remark(r));
    rmt_cmd_free(r);
}

static void pop(const char *group, const char *topic, int max, int invis_ms, struct pres *out)
{
    pop_ex(group, topic, max, invis_ms, 0, false, out);
}

static int ack(const char *group, const struct pmsg *m)
{
    char q[16], off[24];
    snprintf(q, sizeof q, "%d", m->qid);
    snprintf(off, sizeof off, "%lld", m->off);
    rmt_cmd *r = CALL(RMT_REQ_ACK_MESSAGE, "consumerGroup", group, "topic", m->topic, "queueId", q,
                      "extraInfo", m->extra, "offset", off);
    int code = r->code;
    rmt_cmd_free(r);
    return code;
}

static int change_invisible(const char *group, struct pmsg *m, int invis_ms)
{
    char q[16], off[24], iv[24];
    snprintf(q, sizeof q, "%d", m->qid);
    snprintf(off, sizeof off, "%lld", m->off);
    snprintf(iv, sizeof iv, "%d", invis_ms);
    rmt_cmd *r = CALL(RMT_REQ_CHANGE_MESSAGE_INVISIBLETIME, "consumerGroup", group, "topic", m->topic,
                      "queueId", q, "extraInfo", m->extra, "offset", off, "invisibleTime", iv);
    int code = r->code;
    if (code == 0) {
        /* New receipt: same fields with the answered popTime / invisibleTime. */
        long long ck, pt, it;
        int rq, retry, qid;
        char bn[64];
        long long mo;
        ck_assert_int_eq(sscanf(m->extra, "%lld %lld %lld %d %d %63s %d %lld", &ck, &pt, &it, &rq, &retry, bn,
                                &qid, &mo), 8);
        snprintf(m->extra, sizeof m->extra, "%lld %s %s %s %d %s %d %lld", ck, rmt_cmd_ext(r, "popTime"),
                 rmt_cmd_ext(r, "invisibleTime"), rmt_cmd_ext(r, "reviveQid"), retry, bn, qid, mo);
    }
    rmt_cmd_free(r);
    return code;
}

static void msleep(int ms) { usleep((useconds_t)ms * 1000); }

static void pop_until_n(const char *group, const char *topic, int max, int invis, bool order, int timeout_ms,
                        struct pres *out);
#define pop_until(g, t, invis, order, timeout, out) pop_until_n(g, t, 32, invis, order, timeout, out)

/* Pops (up to max) until something arrives or timeout_ms passes. Also
 * covers the short delay before a sent message is dispatched to its queue. */
static void pop_until_n(const char *group, const char *topic, int max, int invis, bool order, int timeout_ms,
                        struct pres *out)
{
    long long end = th_now_ms() + timeout_ms;
    do {
        pop_ex(group, topic, max, invis, 0, order, out);
        if (out->n)
            return;
        msleep(100);
    } while (th_now_ms() < end);
}

START_TEST(test_invisible_ack_redeliver)
{
    const char *t = "PopT1", *g = "PopG1";
    send_msg(t, 0, "m0");
    send_msg(t, 0, "m1");
    send_msg(t, 0, "m2");
    msleep(300);
    struct pres r;
    pop_until(g, t, 2000, false, 3000, &r);
    ck_assert_int_eq(r.n, 3);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(r.m[i].reconsume, 0);
    struct pres r2;
    pop(g, t, 32, 2000, &r2);
    ck_assert_int_eq(r2.code, RMT_RESP_POLLING_TIMEOUT);
    ck_assert_int_eq(r2.n, 0);
    struct pmsg m2 = { 0 };
    for (int i = 0; i < 3; i++) {
        if (strcmp(r.m[i].body, "m2") == 0)
            m2 = r.m[i];
        else
            ck_assert_int_eq(ack(g, &r.m[i]), 0);
    }
    ck_assert_str_eq(m2.body, "m2");
    /* A stale receipt (wrong popTime) does not ack. */
    struct pmsg stale = m2;
    long long ck, pt;
    char rest[200];
    sscanf(m2.extra, "%lld %lld %199[^\n]", &ck, &pt, rest);
    snprintf(stale.extra, sizeof stale.extra, "%lld %lld %s", ck, pt - 1, rest);
    ck_assert_int_eq(ack(g, &stale), 0);
    msleep(1000);
    pop(g, t, 32, 2000, &r2);
    ck_assert_int_eq(r2.n, 0);
    /* m2 comes back with its attempt raised, through the retry topic. */
    pop_until(g, t, 2000, false, 4000, &r2);
    ck_assert_int_eq(r2.n, 1);
    ck_assert_str_eq(r2.m[0].body, "m2");
    ck_assert_str_eq(r2.m[0].topic, t);
    ck_assert_int_eq(r2.m[0].reconsume, 1);
    ck_assert_int_eq(ack(g, &r2.m[0]), 0);
    msleep(2600);
    pop(g, t, 32, 2000, &r2);
    ck_assert_int_eq(r2.n, 0);
}
END_TEST

START_TEST(test_change_invisible_time)
{
    const char *t = "PopT2", *g = "PopG2";
    send_msg(t, 0, "c0");
    struct pres r;
    pop_until(g, t, 1000, false, 3000, &r);
    ck_assert_int_eq(r.n, 1);
    struct pmsg m = r.m[0];
    ck_assert_int_eq(change_invisible(g, &m, 4000), 0);
    msleep(1800);
    struct pres r2;
    pop(g, t, 32, 1000, &r2);
    ck_assert_int_eq(r2.n, 0);
    /* Shorten it: visible again almost at once. */
    ck_assert_int_eq(change_invisible(g, &m, 0), 0);
    pop_until(g, t, 3000, false, 3000, &r2);
    ck_assert_int_eq(r2.n, 1);
    ck_assert_str_eq(r2.m[0].body, "c0");
    ck_assert_int_eq(r2.m[0].reconsume, 1);
    /* The old receipt is no longer valid. */
    ck_assert_int_eq(change_invisible(g, &m, 1000), RMT_RESP_NO_MESSAGE);
    ck_assert_int_eq(ack(g, &r2.m[0]), 0);
}
END_TEST

START_TEST(test_dead_letter)
{
    const char *t = "PopT3", *g = "PopG3";
    const char *cfg = "{\"groupName\":\"PopG3\",\"consumeEnable\":true,\"retryMaxTimes\":2,\"retryQueueNums\":1}";
    rmt_cmd *r = callv(RMT_REQ_UPDATE_AND_CREATE_SUBSCRIPTIONGROUP, cfg, strlen(cfg), 5000,
                       (const char *const[]){ NULL });
    ck_assert_int_eq(r->code, 0);
    rmt_cmd_free(r);
    send_msg(t, 0, "d0");
    struct pres p;
    for (int attempt = 0; attempt <= 2; attempt++) {
        pop_until(g, t, 700, false, 4000, &p);
        ck_assert_int_eq(p.n, 1);
        ck_assert_int_eq(p.m[0].reconsume, attempt);
    }
    /* Third expiry: past retryMaxTimes, into %DLQ%PopG3. */
    pop_until(g, t, 700, false, 2500, &p);
    ck_assert_int_eq(p.n, 0);
    rmt_cmd *pr = NULL;
    for (int i = 0; i < 20; i++) {
        pr = CALL(RMT_REQ_PULL_MESSAGE, "consumerGroup", "DlqReader", "topic", "%DLQ%PopG3", "queueId", "0",
                  "queueOffset", "0", "maxMsgNums", "8", "sysFlag", "4", "commitOffset", "0",
                  "suspendTimeoutMillis", "0", "subscription", "*", "subVersion", "0", "expressionType", "TAG");
        if (pr->code == 0)
            break;
        rmt_cmd_free(pr);
        pr = NULL;
        msleep(200);
    }
    ck_assert_ptr_nonnull(pr);
    struct msg_record rec;
    ck_assert_int_gt(msg_record_decode(pr->body, pr->body_len, &rec, 1), 0);
    ck_assert_int_eq(rec.body_len, 2);
    ck_assert_int_eq(memcmp(rec.body, "d0", 2), 0);
    ck_assert_int_eq(rec.reconsume_times, 3);
    rmt_cmd_free(pr);
}
END_TEST

START_TEST(test_restart_keeps_acks)
{
    const char *t = "PopT4", *g = "PopG4";
    for (int i = 0; i < 4; i++) {
        char b[8];
        snprintf(b, sizeof b, "r%d", i);
        send_msg(t, 0, b);
    }
    msleep(300);
    struct pres r;
    pop_until(g, t, 3000, false, 3000, &r);
    ck_assert_int_eq(r.n, 4);
    for (int i = 0; i < 4; i++)
        if (strcmp(r.m[i].body, "r0") == 0 || strcmp(r.m[i].body, "r1") == 0)
            ck_assert_int_eq(ack(g, &r.m[i]), 0);
    th_kill(g_broker);
    rmt_client_close_channel(g_cl, g_baddr);
    start_broker();
    int seen[4] = { 0 };
    long long end = th_now_ms() + 6000;
    while (th_now_ms() < end && !(seen[2] && seen[3])) {
        struct pres p;
        pop(g, t, 32, 10000, &p);
        for (int i = 0; i < p.n; i++) {
            int k = p.m[i].body[1] - '0';
            ck_assert(k >= 0 && k < 4);
            seen[k]++;
            ck_assert_int_eq(p.m[i].reconsume, 1);
            ck_assert_int_eq(ack(g, &p.m[i]), 0);
        }
        msleep(100);
    }
    ck_assert_int_eq(seen[0], 0);
    ck_assert_int_eq(seen[1], 0);
    ck_assert_int_eq(seen[2], 1);
    ck_assert_int_eq(seen[3], 1);
}
END_TEST

START_TEST(test_fifo)
{
    const char *t = "PopT5", *g = "PopG5";
    send_msg(t, 0, "f0");
    send_msg(t, 0, "f1");
    send_msg(t, 0, "f2");
    msleep(300);
    struct pres r;
    pop_until_n(g, t, 1, 1000, true, 3000, &r);
    ck_assert_int_eq(r.n, 1);
    ck_assert_str_eq(r.m[0].body, "f0");
    ck_assert_ptr_nonnull(strstr(r.m[0].extra, " 999 "));
    struct pres r2;
    pop_ex(g, t, 1, 1000, 0, true, &r2);
    ck_assert_int_eq(r2.n, 0);
    ck_assert_int_eq(ack(g, &r.m[0]), 0);
    pop_ex(g, t, 1, 1000, 0, true, &r2);
    ck_assert_int_eq(r2.n, 1);
    ck_assert_str_eq(r2.m[0].body, "f1");
    /* Not acked: the same message again after the invisible time, count 1. */
    pop_ex(g, t, 1, 1000, 0, true, &r);
    ck_assert_int_eq(r.n, 0);
    pop_until_n(g, t, 1, 1000, true, 3000, &r);
    ck_assert_int_eq(r.n, 1);
    ck_assert_str_eq(r.m[0].body, "f1");
    char want[64];
    snprintf(want, sizeof want, "0 qo%d%%%lld 1", r.m[0].qid, r.m[0].off);
    ck_assert_msg(strstr(r.order_info, want), "orderCountInfo '%s' lacks '%s'", r.order_info, want);
    ck_assert_int_eq(ack(g, &r.m[0]), 0);
    pop_ex(g, t, 1, 1000, 0, true, &r);
    ck_assert_int_eq(r.n, 1);
    ck_assert_str_eq(r.m[0].body, "f2");
}
END_TEST

static rmt_cmd *g_async;
static void on_async(int status, rmt_cmd *resp, void *ud)
{
    *(int *)ud = status;
    if (status == 0)
        g_async = rmt_cmd_dup(resp);
}

START_TEST(test_long_poll)
{
    const char *t = "PopT6", *g = "PopG6";
    send_msg(t, 0, "warmup");
    struct pres r;
    pop_until(g, t, 60000, false, 3000, &r);
    ck_assert_int_eq(r.n, 1);
    ck_assert_int_eq(ack(g, &r.m[0]), 0);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    char born[24];
    snprintf(born, sizeof born, "%lld", (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
    rmt_cmd req;
    rmt_cmd_init(&req, RMT_REQ_POP_MESSAGE);
    const char *kv[] = { "consumerGroup", g, "topic", t, "queueId", "-1", "maxMsgNums", "32",
                         "invisibleTime", "60000", "pollTime", "8000", "bornTime", born, "initMode", "0", NULL };
    for (int i = 0; kv[i]; i += 2)
        rmt_cmd_set_ext(&req, kv[i], kv[i + 1]);
    int status = 1;
    long long t0 = th_now_ms();
    ck_assert_int_eq(rmt_client_invoke(g_cl, g_baddr, &req, 15000, on_async, &status), 0);
    rmt_cmd_destroy(&req);
    for (int i = 0; i < 30; i++)
        ev_run(g_loop, EVRUN_NOWAIT), msleep(10);
    ck_assert_int_eq(status, 1); /* still held */
    send_msg(t, 0, "late");
    while (status == 1 && th_now_ms() - t0 < 15000)
        ev_run(g_loop, EVRUN_ONCE);
    long long took = th_now_ms() - t0;
    ck_assert_int_eq(status, 0);
    ck_assert_ptr_nonnull(g_async);
    decode_pop(g_async, &r);
    rmt_cmd_free(g_async);
    g_async = NULL;
    ck_assert_int_eq(r.n, 1);
    ck_assert_str_eq(r.m[0].body, "late");
    ck_assert_msg(took < 8000, "the held pop answered only at its poll time (%lld ms)", took);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("pop");
    TCase *tc = tcase_create("pop");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_invisible_ack_redeliver);
    tcase_add_test(tc, test_change_invisible_time);
    tcase_add_test(tc, test_dead_letter);
    tcase_add_test(tc, test_restart_keeps_acks);
    tcase_add_test(tc, test_fifo);
    tcase_add_test(tc, test_long_poll);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    SRunner *sr = srunner_create(suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
