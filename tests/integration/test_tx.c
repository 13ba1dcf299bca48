/*
 * Integration tests for transactional messages, ordered-consumption queue
 * locks and broadcast consumption: the real nameserver and broker binaries
 * on loopback, driven by remoting clients. The fake producer registers its
 * group with HEART_BEAT and answers CHECK_TRANSACTION_STATE from
 * rmt_client_opts.on_request, as RocketMQ's producers do.
 */
#include <check.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <ev.h>

#include "harness.h"
#include "message.h"
#include "remoting.h"

#define PGROUP "PG_TX"

struct proc {
    pid_t pid;
    int port;
    char addr[64];
    char log[160];
};

struct env {
    char *dir;
    struct proc ns, br;
    struct ev_loop *loop;
    rmt_client *cl;
};

/* What the fake producer does with a check. */
enum answer { ANSWER_NONE, ANSWER_COMMIT };

static struct env E;
static enum answer producer_answer = ANSWER_NONE;
static int checks_seen;
static char last_check_topic[128];

static void start_ns(void)
{
    E.ns.port = th_free_port();
    snprintf(E.ns.addr, sizeof E.ns.addr, "127.0.0.1:%d", E.ns.port);
    snprintf(E.ns.log, sizeof E.ns.log, "%s/ns.log", E.dir);
    char port[64];
    snprintf(port, sizeof port, "listenPort=%d", E.ns.port);
    char *argv[] = { (char *)th_bin("NAMESRV_BIN"), "--set", port, "--set", "bindAddress=127.0.0.1", NULL };
    E.ns.pid = th_spawn(argv, E.ns.log);
    ck_assert_msg(th_wait_port(E.ns.port, 5000), "nameserver did not start");
}

static void start_broker(void)
{
    if (!E.br.port) {
        E.br.port = th_free_port();
        snprintf(E.br.addr, sizeof E.br.addr, "127.0.0.1:%d", E.br.port);
        snprintf(E.br.log, sizeof E.br.log, "%s/broker.log", E.dir);
    }
    char port[64], ns[96], store[160];
    snprintf(port, sizeof port, "listenPort=%d", E.br.port);
    snprintf(ns, sizeof ns, "namesrvAddr=%s", E.ns.addr);
    snprintf(store, sizeof store, "storePathRootDir=%s/store", E.dir);
    char *argv[] = { (char *)th_bin("BROKER_BIN"),
                     "--set", port, "--set", ns, "--set", store,
                     "--set", "bindAddress=127.0.0.1", "--set", "brokerIP1=127.0.0.1",
                     "--set", "mapedFileSizeCommitLog=4194304", "--set", "maxMessageSize=1048576",
                     "--set", "metadataMapSizeMB=16",
                     "--set", "transactionTimeOut=500", "--set", "transactionCheckInterval=500",
                     "--set", "transactionCheckMax=2", "--set", "rebalanceLockMaxLiveTime=1500",
                     "--set", "flushConsumerOffsetInterval=200",
                     NULL };
    E.br.pid = th_spawn(argv, E.br.log);
    ck_assert_msg(th_wait_port(E.br.port, 10000), "broker did not start");
}

static void on_server_request(rmt_conn *c, rmt_cmd *req, void *ud);

static void setup(void)
{
    memset(&E, 0, sizeof E);
    producer_answer = ANSWER_NONE;
    checks_seen = 0;
    E.dir = th_tmpdir();
    start_ns();
    start_broker();
    E.loop = ev_loop_new(EVFLAG_AUTO);
    struct rmt_client_opts co = { .connect_timeout_ms = 2000, .on_request = on_server_request };
    E.cl = rmt_client_new(E.loop, &co);
    ck_assert_ptr_nonnull(E.cl);
}

/* Prints the end of a daemon log (after a failed stop). */
static void dump_log(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    char line[1024];
    char ring[40][1024];
    int n = 0;
    while (fgets(line, sizeof line, f))
        snprintf(ring[n++ % 40], sizeof ring[0], "%s", line);
    fclose(f);
    for (int i = n > 40 ? n - 40 : 0; i < n; i++)
        fputs(ring[i % 40], stderr);
}

/* Stops the broker; it must exit 0 (a clean shutdown). */
static void stop_broker(void)
{
    int st = th_stop(E.br.pid, 10000);
    if (st != 0)
        dump_log(E.br.log);
    ck_assert_msg(st == 0, "broker exit status %d", st);
}

static void teardown(void)
{
    rmt_client_free(E.cl);
    ev_loop_destroy(E.loop);
    stop_broker();
    th_stop(E.ns.pid, 3000);
    th_rmtree(E.dir);
    free(E.dir);
}

/* Runs the client loop for ms (checks arrive meanwhile). */
static void spin(int ms)
{
    long long end = th_now_ms() + ms;
    while (th_now_ms() < end) {
        ev_run(E.loop, EVRUN_NOWAIT);
        usleep(2000);
    }
}

static rmt_cmd *call(rmt_cmd *req)
{
    rmt_cmd *resp = NULL;
    int rc = rmt_client_invoke_sync(E.cl, E.br.addr, req, 5000, &resp);
    ck_assert_msg(rc == 0, "request %d failed: %s", req->code, strerror(-rc));
    rmt_cmd_destroy(req);
    return resp;
}

static void heartbeat(const char *client_id, const char *body_fmt_group, bool producer, bool broadcast)
{
    char body[1024];
    if (producer)
        snprintf(body, sizeof body,
                 "{\"clientID\":\"%s\",\"producerDataSet\":[{\"groupName\":\"%s\"}],\"consumerDataSet\":[]}",
                 client_id, body_fmt_group);
    else
        snprintf(body, sizeof body,
                 "{\"clientID\":\"%s\",\"producerDataSet\":[],\"consumerDataSet\":[{\"groupName\":\"%s\","
                 "\"consumeType\":\"CONSUME_PASSIVELY\",\"messageModel\":\"%s\","
                 "\"consumeFromWhere\":\"CONSUME_FROM_FIRST_OFFSET\",\"unitMode\":false,"
                 "\"subscriptionDataSet\":[{\"classFilterMode\":false,\"topic\":\"TopicBC\",\"subString\":\"*\","
                 "\"tagsSet\":[],\"codeSet\":[],\"subVersion\":1,\"expressionType\":\"TAG\"}]}]}",
                 client_id, body_fmt_group, broadcast ? "BROADCASTING" : "CLUSTERING");
    rmt_cmd req;
    rmt_cmd_init(&req, RMT_REQ_HEART_BEAT);
    rmt_cmd_set_body(&req, body, (uint32_t)strlen(body));
    rmt_cmd *r = call(&req);
    ck_assert_int_eq(r->code, RMT_RESP_SUCCESS);
    rmt_cmd_free(r);
}

struct sent {
    char msg_id[80];   /* offsetMsgId */
    char uniq[40];
    int64_t queue_offset;
    int64_t phys;
};

/* SEND_MESSAGE to queue 0 of topic; a transaction half message when tx. */
static void send_msg(const char *topic, const char *body, bool tx, int qid, struct sent *out)
{
    static int seq;
    char props[512];
    size_t pl = 0;
    snprintf(out->uniq, sizeof out->uniq, "7F000001%08X%016X", (unsigned)getpid(), ++seq);
    msg_prop_append(props, sizeof props, &pl, MSG_PROP_UNIQ_CLIENT_MESSAGE_ID_KEYIDX, out->uniq,
                    strlen(out->uniq));
    msg_prop_append(props, sizeof props, &pl, MSG_PROP_WAIT_STORE_MSG_OK, "true", 4);
    msg_prop_append(props, sizeof props, &pl, MSG_PROP_TAGS, "TagA", 4);
    if (tx) {
        msg_prop_append(props, sizeof props, &pl, MSG_PROP_TRANSACTION_PREPARED, "true", 4);
        msg_prop_append(props, sizeof props, &pl, MSG_PROP_PRODUCER_GROUP, PGROUP, strlen(PGROUP));
    }
    props[pl] = 0;
    rmt_cmd req;
    rmt_cmd_init(&req, RMT_REQ_SEND_MESSAGE);
    rmt_cmd_set_ext(&req, "producerGroup", PGROUP);
    rmt_cmd_set_ext(&req, "topic", topic);
    rmt_cmd_set_ext(&req, "defaultTopic", "TBW102");
    rmt_cmd_set_ext_int(&req, "defaultTopicQueueNums", 4);
    rmt_cmd_set_ext_int(&req, "queueId", qid);
    rmt_cmd_set_ext_int(&req, "sysFlag", tx ? MSG_SYSFLAG_TRANSACTION_PREPARED : 0);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    rmt_cmd_set_ext_int(&req, "bornTimestamp", (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
    rmt_cmd_set_ext_int(&req, "flag", 0);
    rmt_cmd_set_ext(&req, "properties", props);
    rmt_cmd_set_ext_int(&req, "reconsumeTimes", 0);
    rmt_cmd_set_body(&req, body, (uint32_t)strlen(body));
    rmt_cmd *r = call(&req);
    ck_assert_msg(r->code == RMT_RESP_SUCCESS, "send failed: %d %s", r->code,
                  rmt_cmd_remark(r) ? rmt_cmd_remark(r) : "");
    snprintf(out->msg_id, sizeof out->msg_id, "%s", rmt_cmd_ext(r, "msgId"));
    ck_assert_int_eq(rmt_cmd_ext_int(r, "queueOffset", &out->queue_offset), 0);
    struct msg_host h;
    ck_assert_int_eq(msg_offset_id_decode(out->msg_id, strlen(out->msg_id), &h, &out->phys), 0);
    rmt_cmd_free(r);
}

static void fill_end(rmt_cmd *req, int64_t tso, int64_t clo, int cor, bool from_check, const char *uniq)
{
    rmt_cmd_init(req, RMT_REQ_END_TRANSACTION);
    rmt_cmd_set_ext(req, "producerGroup", PGROUP);
    rmt_cmd_set_ext_int(req, "tranStateTableOffset", tso);
    rmt_cmd_set_ext_int(req, "commitLogOffset", clo);
    rmt_cmd_set_ext_int(req, "commitOrRollback", cor);
    rmt_cmd_set_ext(req, "fromTransactionCheck", from_check ? "true" : "false");
    rmt_cmd_set_ext(req, "msgId", uniq);
    rmt_cmd_set_ext(req, "transactionId", uniq);
}

/* END_TRANSACTION answered (sync); returns the response code. */
static int end_sync(const struct sent *s, int cor)
{
    rmt_cmd req;
    fill_end(&req, s->queue_offset, s->phys, cor, false, s->uniq);
    rmt_cmd *r = call(&req);
    int code = r->code;
    rmt_cmd_free(r);
    return code;
}

/* END_TRANSACTION oneway, as RocketMQ producers send it. */
static void end_oneway(const struct sent *s, int cor)
{
    rmt_cmd req;
    fill_end(&req, s->queue_offset, s->phys, cor, false, s->uniq);
    ck_assert_int_eq(rmt_client_invoke_oneway(E.cl, E.br.addr, &req), 0);
    rmt_cmd_destroy(&req);
    spin(20);
}

static void on_server_request(rmt_conn *c, rmt_cmd *req, void *ud)
{
    if (req->code != RMT_REQ_CHECK_TRANSACTION_STATE)
        return;
    checks_seen++;
    int64_t tso = -1, clo = -1;
    const char *uniq = rmt_cmd_ext(req, "msgId");
    ck_assert_int_eq(rmt_cmd_ext_int(req, "tranStateTableOffset", &tso), 0);
    ck_assert_int_eq(rmt_cmd_ext_int(req, "commitLogOffset", &clo), 0);
    ck_assert_ptr_nonnull(uniq);
    ck_assert_ptr_nonnull(rmt_cmd_ext(req, "offsetMsgId"));
    struct msg_record r;
    ck_assert_int_gt(msg_record_decode(req->body, req->body_len, &r, 0), 0);
    snprintf(last_check_topic, sizeof last_check_topic, "%.*s", (int)r.topic_len, r.topic);
    ck_assert_int_eq(r.queue_offset, tso);
    if (producer_answer != ANSWER_COMMIT)
        return;
    rmt_cmd end;
    fill_end(&end, tso, clo, MSG_SYSFLAG_TRANSACTION_COMMIT, true, uniq);
    end.flag = RMT_FLAG_ONEWAY;
    end.opaque = 100000 + checks_seen;
    rmt_conn_send(c, &end);
    rmt_cmd_destroy(&end);
}

struct pulled {
    int count;
    int64_t next;
    char bodies[64][64];
    bool tran_props; /* some message still carries TRAN_MSG / REAL_TOPIC */
};

/* One PULL_MESSAGE with the subscription in the request ("*"). */
static int pull(const char *group, const char *topic, int qid, int64_t offset, bool with_sub, struct pulled *out)
{
    memset(out, 0, sizeof *out);
    rmt_cmd req;
    rmt_cmd_init(&req, RMT_REQ_PULL_MESSAGE);
    rmt_cmd_set_ext(&req, "consumerGroup", group);
    rmt_cmd_set_ext(&req, "topic", topic);
    rmt_cmd_set_ext_int(&req, "queueId", qid);
    rmt_cmd_set_ext_int(&req, "queueOffset", offset);
    rmt_cmd_set_ext_int(&req, "maxMsgNums", 32);
    rmt_cmd_set_ext_int(&req, "sysFlag", with_sub ? 0x4 : 0);
    rmt_cmd_set_ext_int(&req, "commitOffset", 0);
    rmt_cmd_set_ext_int(&req, "suspendTimeoutMillis", 0);
    if (with_sub)
        rmt_cmd_set_ext(&req, "subscription", "*");
    rmt_cmd_set_ext_int(&req, "subVersion", 1);
    rmt_cmd *r = call(&req);
    int code = r->code;
    rmt_cmd_ext_int(r, "nextBeginOffset", &out->next);
    size_t pos = 0;
    while (code == RMT_RESP_SUCCESS && pos < r->body_len) {
        struct msg_record m;
        int n = msg_record_decode(r->body + pos, r->body_len - pos, &m, 1);
        ck_assert_int_gt(n, 0);
        if (out->count < 64)
            snprintf(out->bodies[out->count], 64, "%.*s", (int)m.body_len, (const char *)m.body);
        const char *v;
        size_t vl;
        if (msg_prop_get(m.props, m.props_len, MSG_PROP_TRANSACTION_PREPARED, &v, &vl) ||
            msg_prop_get(m.props, m.props_len, MSG_PROP_REAL_TOPIC, &v, &vl))
            out->tran_props = true;
        out->count++;
        pos += (size_t)n;
    }
    rmt_cmd_free(r);
    return code;
}

/* Messages visible in queue 0 of topic from offset 0. */
static int visible(const char *topic, struct pulled *p)
{
    int code = pull("CG_TX", topic, 0, 0, true, p);
    return code == RMT_RESP_SUCCESS ? p->count : 0;
}

/* Waits up to ms for `want` messages to be visible. */
static int wait_visible(const char *topic, int want, int ms, struct pulled *p)
{
    long long end = th_now_ms() + ms;
    int n;
    while ((n = visible(topic, p)) < want && th_now_ms() < end)
        spin(50);
    return n;
}

START_TEST(test_commit_once)
{
    struct pulled p;
    producer_answer = ANSWER_COMMIT;
    heartbeat("producer-1", PGROUP, true, false);
    struct sent s;
    send_msg("TopicTxC", "tx-commit", true, 0, &s);
    spin(100);
    ck_assert_int_eq(visible("TopicTxC", &p), 0);
    end_oneway(&s, MSG_SYSFLAG_TRANSACTION_COMMIT);
    ck_assert_int_eq(wait_visible("TopicTxC", 1, 3000, &p), 1);
    ck_assert_str_eq(p.bodies[0], "tx-commit");
    ck_assert(!p.tran_props);
    /* Repeats (answered and oneway) are harmless; a rollback after the
     * commit is refused. */
    ck_assert_int_eq(end_sync(&s, MSG_SYSFLAG_TRANSACTION_COMMIT), RMT_RESP_SUCCESS);
    end_oneway(&s, MSG_SYSFLAG_TRANSACTION_COMMIT);
    ck_assert_int_eq(end_sync(&s, MSG_SYSFLAG_TRANSACTION_ROLLBACK), RMT_RESP_SYSTEM_ERROR);
    /* Bad references are refused. */
    struct sent bad = s;
    bad.queue_offset += 7;
    ck_assert_int_eq(end_sync(&bad, MSG_SYSFLAG_TRANSACTION_COMMIT), RMT_RESP_SYSTEM_ERROR);
    bad = s;
    bad.phys += 3;
    ck_assert_int_eq(end_sync(&bad, MSG_SYSFLAG_TRANSACTION_COMMIT), RMT_RESP_SYSTEM_ERROR);
    /* Several check periods later: still exactly one copy, no check sent. */
    spin(2000);
    ck_assert_int_eq(visible("TopicTxC", &p), 1);
    ck_assert_int_eq(p.next, 1);
    ck_assert_int_eq(checks_seen, 0);

    /* Restart: the decision survives, a repeat does not commit again and
     * the half message is not checked again. */
    rmt_client_close_channel(E.cl, E.br.addr);
    stop_broker();
    start_broker();
    heartbeat("producer-1", PGROUP, true, false);
    ck_assert_int_eq(end_sync(&s, MSG_SYSFLAG_TRANSACTION_COMMIT), RMT_RESP_SUCCESS);
    spin(2000);
    ck_assert_int_eq(visible("TopicTxC", &p), 1);
    ck_assert_int_eq(checks_seen, 0);
}
END_TEST

START_TEST(test_rollback)
{
    struct pulled p;
    producer_answer = ANSWER_COMMIT;
    heartbeat("producer-1", PGROUP, true, false);
    struct sent s;
    send_msg("TopicTxR", "tx-rollback", true, 0, &s);
    ck_assert_int_eq(end_sync(&s, MSG_SYSFLAG_TRANSACTION_ROLLBACK), RMT_RESP_SUCCESS);
    ck_assert_int_eq(end_sync(&s, MSG_SYSFLAG_TRANSACTION_ROLLBACK), RMT_RESP_SUCCESS);
    ck_assert_int_eq(end_sync(&s, MSG_SYSFLAG_TRANSACTION_COMMIT), RMT_RESP_SYSTEM_ERROR);
    spin(2500);
    ck_assert_int_eq(visible("TopicTxR", &p), 0);
    ck_assert_int_eq(checks_seen, 0);
}
END_TEST

START_TEST(test_unknown_then_check_commits)
{
    struct pulled p;
    producer_answer = ANSWER_COMMIT;
    heartbeat("producer-1", PGROUP, true, false);
    struct sent s;
    send_msg("TopicTxK", "tx-checked", true, 0, &s);
    end_oneway(&s, MSG_SYSFLAG_TRANSACTION_NOT);
    ck_assert_int_eq(wait_visible("TopicTxK", 1, 5000, &p), 1);
    ck_assert_str_eq(p.bodies[0], "tx-checked");
    ck_assert_int_ge(checks_seen, 1);
    ck_assert_str_eq(last_check_topic, "TopicTxK");
    int checks = checks_seen;
    spin(2000);
    ck_assert_int_eq(visible("TopicTxK", &p), 1);
    ck_assert_int_eq(checks_seen, checks);
}
END_TEST

START_TEST(test_unanswered_is_discarded)
{
    struct pulled p;
    producer_answer = ANSWER_NONE;
    heartbeat("producer-1", PGROUP, true, false);
    struct sent s;
    send_msg("TopicTxD", "tx-never", true, 0, &s);
    char needle[128];
    snprintf(needle, sizeof needle, "transaction message %s", s.uniq);
    long long end = th_now_ms() + 8000;
    while (!(th_file_contains(E.br.log, needle) && th_file_contains(E.br.log, "discarded")) &&
           th_now_ms() < end)
        spin(100);
    ck_assert_msg(th_file_contains(E.br.log, needle), "no discard log line naming %s", s.uniq);
    ck_assert_int_eq(checks_seen, 2);
    /* A late commit after the discard does not deliver it. */
    ck_assert_int_eq(end_sync(&s, MSG_SYSFLAG_TRANSACTION_COMMIT), RMT_RESP_SYSTEM_ERROR);
    spin(1500);
    ck_assert_int_eq(visible("TopicTxD", &p), 0);
    ck_assert_int_eq(checks_seen, 2);
}
END_TEST

/* LOCK_BATCH_MQ / UNLOCK_BATCH_MQ; returns the number of locked queues
 * (and which in mask). */
static int lock_call(int code, const char *client, const int *qids, int n, unsigned *mask)
{
    char body[2048];
    int len = snprintf(body, sizeof body, "{\"consumerGroup\":\"CG_ORDER\",\"clientId\":\"%s\",\"onlyThisBroker\":false,\"mqSet\":[", client);
    for (int i = 0; i < n; i++)
        len += snprintf(body + len, sizeof body - (size_t)len,
                        "%s{\"brokerName\":\"broker-a\",\"queueId\":%d,\"topic\":\"TopicOrder\"}", i ? "," : "",
                        qids[i]);
    len += snprintf(body + len, sizeof body - (size_t)len, "]}");
    rmt_cmd req;
    rmt_cmd_init(&req, code);
    rmt_cmd_set_body(&req, body, (uint32_t)len);
    rmt_cmd *r = call(&req);
    ck_assert_int_eq(r->code, RMT_RESP_SUCCESS);
    int count = 0;
    *mask = 0;
    if (code == RMT_REQ_LOCK_BATCH_MQ) {
        char text[2048];
        snprintf(text, sizeof text, "%.*s", (int)r->body_len, (const char *)r->body);
        ck_assert_msg(strstr(text, "\"lockOKMQSet\"") != NULL, "bad lock answer %s", text);
        for (const char *p = text; (p = strstr(p, "\"queueId\":")); p += 10) {
            int q = atoi(p + 10);
            *mask |= 1u << q;
            count++;
        }
    }
    rmt_cmd_free(r);
    return count;
}

START_TEST(test_queue_locks)
{
    unsigned m;
    int a_q[] = { 0, 1 }, b_q[] = { 0, 1, 2 }, q0[] = { 0 }, q1[] = { 1 };
    ck_assert_int_eq(lock_call(RMT_REQ_LOCK_BATCH_MQ, "client-A", a_q, 2, &m), 2);
    ck_assert_uint_eq(m, 0x3);
    ck_assert_int_eq(lock_call(RMT_REQ_LOCK_BATCH_MQ, "client-B", b_q, 3, &m), 1);
    ck_assert_uint_eq(m, 0x4);
    /* A unlocks q0: B gets it; B cannot unlock A's q1. */
    lock_call(RMT_REQ_UNLOCK_BATCH_MQ, "client-A", q0, 1, &m);
    lock_call(RMT_REQ_UNLOCK_BATCH_MQ, "client-B", q1, 1, &m);
    ck_assert_int_eq(lock_call(RMT_REQ_LOCK_BATCH_MQ, "client-B", b_q, 3, &m), 2);
    ck_assert_uint_eq(m, 0x5);
    ck_assert_int_eq(lock_call(RMT_REQ_LOCK_BATCH_MQ, "client-A", a_q, 2, &m), 1);
    ck_assert_uint_eq(m, 0x2);
    /* A keeps renewing q1 past the expiry: B still cannot take it. */
    for (int i = 0; i < 3; i++) {
        spin(700);
        ck_assert_int_eq(lock_call(RMT_REQ_LOCK_BATCH_MQ, "client-A", q1, 1, &m), 1);
    }
    ck_assert_int_eq(lock_call(RMT_REQ_LOCK_BATCH_MQ, "client-B", q1, 1, &m), 0);
    /* A stops renewing (it died): after rebalanceLockMaxLiveTime B gets it. */
    spin(1800);
    ck_assert_int_eq(lock_call(RMT_REQ_LOCK_BATCH_MQ, "client-B", q1, 1, &m), 1);
    ck_assert_int_eq(lock_call(RMT_REQ_LOCK_BATCH_MQ, "client-A", q1, 1, &m), 0);
    /* Malformed bodies are refused. */
    rmt_cmd req;
    rmt_cmd_init(&req, RMT_REQ_LOCK_BATCH_MQ);
    rmt_cmd_set_body(&req, "{\"clientId\":\"x\",\"mqSet\":[]}", 27);
    rmt_cmd *r = call(&req);
    ck_assert_int_eq(r->code, RMT_RESP_INVALID_PARAMETER);
    rmt_cmd_free(r);
    rmt_cmd_init(&req, RMT_REQ_UNLOCK_BATCH_MQ);
    rmt_cmd_set_body(&req, "not json", 8);
    r = call(&req);
    ck_assert_int_eq(r->code, RMT_RESP_INVALID_PARAMETER);
    rmt_cmd_free(r);
}
END_TEST

START_TEST(test_broadcast)
{
    struct sent s;
    char body[32];
    for (int i = 0; i < 12; i++) {
        snprintf(body, sizeof body, "bc-%d", i);
        send_msg("TopicBC", body, false, i % 4, &s);
    }
    /* Two members of one broadcasting group; each keeps its own offsets and
     * must see every message. */
    heartbeat("consumer-1", "CG_BC", false, true);
    heartbeat("consumer-2", "CG_BC", false, true);
    for (int member = 0; member < 2; member++) {
        int seen[12] = { 0 }, total = 0;
        for (int q = 0; q < 4; q++) {
            int64_t off = 0;
            struct pulled p;
            long long end = th_now_ms() + 3000;
            while (off < 3 && th_now_ms() < end) {
                int code = pull("CG_BC", "TopicBC", q, off, false, &p);
                if (code != RMT_RESP_SUCCESS) {
                    spin(50);
                    continue;
                }
                for (int i = 0; i < p.count; i++) {
                    int k = atoi(p.bodies[i] + 3);
                    ck_assert(k >= 0 && k < 12);
                    seen[k]++;
                    total++;
                }
                off = p.next;
            }
        }
        ck_assert_int_eq(total, 12);
        for (int k = 0; k < 12; k++)
            ck_assert_int_eq(seen[k], 1);
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("tx");
    TCase *tc = tcase_create("tx");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_commit_once);
    tcase_add_test(tc, test_rollback);
    tcase_add_test(tc, test_unknown_then_check_commits);
    tcase_add_test(tc, test_unanswered_is_discarded);
    tcase_add_test(tc, test_queue_locks);
    tcase_add_test(tc, test_broadcast);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
