/*
 * Integration tests of consumption features against the real nameserver
 * and broker binaries: clustering consumers of the client library splitting
 * a topic's queues and handing them over when one leaves, delay levels
 * (on time, exactly once across a restart), timer messages surviving
 * kill -9 of the broker, and the send-back path to the dead-letter queue
 * with the admin CLI's queries and re-send.
 */
#include <check.h>
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "client.h"
#include "consumer.h"
#include "harness.h"
#include "log.h"
#include "message.h"
#include "producer.h"
#include "remoting.h"

static void ns_start(struct th_daemon *d, const char *extra)
{
    const char *const ex[] = { "scanNotActiveBrokerInterval=200", extra, NULL };
    ck_assert_msg(th_ns_start(d, ex), "nameserver did not start listening");
}

/* Starts (or, with d->dir set, restarts) a broker; extra: NULL-terminated key=value list. */
static void br_start(struct th_daemon *d, const char *ns_addr, const char *const *extra)
{
    if (!d->dir[0]) {
        char *dir = th_tmpdir();
        snprintf(d->dir, sizeof d->dir, "%s", dir);
        free(dir);
        d->port = th_free_port();
        snprintf(d->addr, sizeof d->addr, "127.0.0.1:%d", d->port);
        snprintf(d->log, sizeof d->log, "%s/broker.log", d->dir);
    }
    static char sets[3][600];
    snprintf(sets[0], sizeof sets[0], "listenPort=%d", d->port);
    snprintf(sets[1], sizeof sets[1], "storePathRootDir=%s/store", d->dir);
    snprintf(sets[2], sizeof sets[2], "namesrvAddr=%s", ns_addr ? ns_addr : "");
    char *argv[64];
    int n = 0;
    argv[n++] = (char *)th_bin("BROKER_BIN");
    for (int i = 0; i < 3; i++) {
        argv[n++] = "--set";
        argv[n++] = sets[i];
    }
    const char *fixed[] = { "brokerIP1=127.0.0.1", "bindAddress=127.0.0.1", "mapedFileSizeCommitLog=16777216",
                            "metadataMapSizeMB=16", "maxHashSlotNum=10000", "maxIndexNum=40000",
                            "registerNameServerPeriod=500", "flushConsumerOffsetInterval=200", NULL };
    for (int i = 0; fixed[i]; i++) {
        argv[n++] = "--set";
        argv[n++] = (char *)fixed[i];
    }
    for (int i = 0; extra && extra[i] && n < 60; i++) {
        argv[n++] = "--set";
        argv[n++] = (char *)extra[i];
    }
    argv[n] = NULL;
    d->pid = th_spawn(argv, d->log);
    ck_assert_msg(th_wait_port(d->port, 10000), "broker did not start listening");
}

/* Graceful stop; the daemon must exit 0 (sanitizer findings fail the test). */
static void d_stop(struct th_daemon *d)
{
    if (d->pid > 0) {
        int status = th_stop(d->pid, 10000);
        d->pid = 0;
        ck_assert_msg(status >= 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0,
                      "daemon did not exit cleanly (status %d), see %s", status, d->log);
    }
}

static void d_finish(struct th_daemon *d)
{
    d_stop(d);
    th_rmtree(d->dir);
}

static rmt_cmd *call(rmt_client *cl, const char *addr, rmt_cmd *req)
{
    rmt_cmd *resp = NULL;
    int rc = rmt_client_invoke_sync(cl, addr, req, 5000, &resp);
    ck_assert_msg(rc == 0, "invoke %d failed: %s", req->code, strerror(-rc));
    return resp;
}

static int call_code(rmt_client *cl, const char *addr, rmt_cmd *req)
{
    rmt_cmd *resp = call(cl, addr, req);
    int code = resp->code;
    rmt_cmd_free(resp);
    return code;
}

static rmt_client *new_client(struct ev_loop *loop)
{
    struct rmt_client_opts co = { 0 };
    return rmt_client_new(loop, &co);
}

static int create_topic(rmt_client *cl, const char *addr, const char *topic, int queues)
{
    rmt_cmd req;
    rmt_cmd_init(&req, RMT_REQ_UPDATE_AND_CREATE_TOPIC);
    rmt_cmd_set_ext(&req, "topic", topic);
    rmt_cmd_set_ext(&req, "defaultTopic", "TBW102");
    rmt_cmd_set_ext_int(&req, "readQueueNums", queues);
    rmt_cmd_set_ext_int(&req, "writeQueueNums", queues);
    rmt_cmd_set_ext_int(&req, "perm", 6);
    rmt_cmd_set_ext(&req, "topicFilterType", "SINGLE_TAG");
    int code = call_code(cl, addr, &req);
    rmt_cmd_destroy(&req);
    return code;
}

/* SEND_MESSAGE_V2 of one message with extra properties (name\1value\2...). */
static int send_props(rmt_client *cl, const char *addr, const char *topic, int qid, const char *body,
                      const char *props)
{
    rmt_cmd req;
    rmt_cmd_init(&req, RMT_REQ_SEND_MESSAGE_V2);
    rmt_cmd_set_ext(&req, "a", "PG_test");
    rmt_cmd_set_ext(&req, "b", topic);
    rmt_cmd_set_ext(&req, "c", "TBW102");
    rmt_cmd_set_ext(&req, "d", "4");
    rmt_cmd_set_ext_int(&req, "e", qid);
    rmt_cmd_set_ext(&req, "f", "0");
    rmt_cmd_set_ext_int(&req, "g", th_now_ms());
    rmt_cmd_set_ext(&req, "h", "0");
    rmt_cmd_set_ext(&req, "i", props);
    rmt_cmd_set_ext(&req, "j", "0");
    rmt_cmd_set_ext(&req, "k", "false");
    rmt_cmd_set_body(&req, body, (uint32_t)strlen(body));
    rmt_cmd *resp = call(cl, addr, &req);
    rmt_cmd_destroy(&req);
    int code = resp->code;
    if (code)
        fprintf(stderr, "send to %s answered %d: %s\n", topic, code, rmt_cmd_remark(resp) ? rmt_cmd_remark(resp) : "");
    rmt_cmd_free(resp);
    return code;
}

/* Bodies "<prefix><index>" seen by pulls from offset 0 of a queue. */
struct seen {
    int n;
    int *count;
    long long *first_at;      /* monotonic ms of the first sighting */
    int64_t phys[64];         /* commit-log offsets of the pulled records (first 64) */
    int reconsume[64];
    char uniq[64][MSG_UNIQ_ID_LEN + 1];
    int records;
};

/* Pulls queue qid of topic from offset 0 to the end; counts indexes. Returns the pull code of the last step. */
static int pull_all(rmt_client *cl, const char *addr, const char *topic, const char *group, int qid,
                    const char *prefix, struct seen *s)
{
    int64_t off = 0;
    for (int guard = 0; guard < 10000; guard++) {
        rmt_cmd req;
        rmt_cmd_init(&req, RMT_REQ_PULL_MESSAGE);
        rmt_cmd_set_ext(&req, "consumerGroup", group);
        rmt_cmd_set_ext(&req, "topic", topic);
        rmt_cmd_set_ext_int(&req, "queueId", qid);
        rmt_cmd_set_ext_int(&req, "queueOffset", off);
        rmt_cmd_set_ext_int(&req, "maxMsgNums", 32);
        rmt_cmd_set_ext_int(&req, "sysFlag", 0x4);
        rmt_cmd_set_ext_int(&req, "commitOffset", 0);
        rmt_cmd_set_ext_int(&req, "suspendTimeoutMillis", 0);
        rmt_cmd_set_ext(&req, "subscription", "*");
        rmt_cmd_set_ext_int(&req, "subVersion", 0);
        rmt_cmd *resp = call(cl, addr, &req);
        rmt_cmd_destroy(&req);
        int code = resp->code;
        int64_t next = -1;
        rmt_cmd_ext_int(resp, "nextBeginOffset", &next);
        size_t pos = 0, pl = strlen(prefix);
        while (code == 0 && pos < resp->body_len) {
            struct msg_record r;
            int n = msg_record_decode(resp->body + pos, resp->body_len - pos, &r, 1);
            ck_assert_msg(n > 0, "pulled record does not decode (%d)", n);
            pos += (size_t)n;
            if (s->records < 64) {
                s->phys[s->records] = r.phys_offset;
                s->reconsume[s->records] = r.reconsume_times;
                const char *u;
                size_t ul;
                s->uniq[s->records][0] = 0;
                if (msg_prop_get(r.props, r.props_len, MSG_PROP_UNIQ_CLIENT_MESSAGE_ID_KEYIDX, &u, &ul) &&
                    ul <= MSG_UNIQ_ID_LEN)
                    snprintf(s->uniq[s->records], sizeof s->uniq[0], "%.*s", (int)ul, u);
            }
            s->records++;
            if (r.body_len > pl && memcmp(r.body, prefix, pl) == 0) {
                int idx = atoi((const char *)r.body + pl);
                if (idx >= 0 && idx < s->n) {
                    s->count[idx]++;
                    if (s->first_at && !s->first_at[idx])
                        s->first_at[idx] = th_now_ms();
                }
            }
        }
        rmt_cmd_free(resp);
        if (code != 0 && code != RMT_RESP_PULL_RETRY_IMMEDIATELY)
            return code;
        ck_assert(next > off);
        off = next;
    }
    ck_abort_msg("pull did not finish");
    return -1;
}

static void seen_init(struct seen *s, int n, bool times)
{
    memset(s, 0, sizeof *s);
    s->n = n;
    s->count = calloc((size_t)n, sizeof *s->count);
    s->first_at = times ? calloc((size_t)n, sizeof *s->first_at) : NULL;
}

static void seen_reset(struct seen *s)
{
    memset(s->count, 0, (size_t)s->n * sizeof *s->count);
    s->records = 0;
}

static void seen_free(struct seen *s)
{
    free(s->count);
    free(s->first_at);
}

static void spin(struct ev_loop *loop, int ms)
{
    long long end = th_now_ms() + ms;
    while (th_now_ms() < end) {
        ev_run(loop, EVRUN_NOWAIT);
        usleep(2000);
    }
}

/* Waits until the nameserver has a route for topic. */
static void wait_route(cli_client *c, const char *topic)
{
    for (int i = 0; i < 100; i++) {
        struct cli_route *r = NULL;
        char err[CLI_ERRMSG_MAX];
        if (cli_route_get_sync(c, topic, &r, err, sizeof err) == 0) {
            cli_route_free(r);
            return;
        }
        usleep(100 * 1000);
    }
    ck_abort_msg("no route for %s", topic);
}

/* Clustering consumers of one group. */
#define SPLIT_QUEUES 8
#define SPLIT_MSGS 1200

struct member {
    const char *name;
    cli_client *c;
    cli_consumer *cs;
    int consumed;
    unsigned queue_mask;      /* queues it consumed from */
};

static int split_seen[SPLIT_MSGS * 2];
static int split_by[SPLIT_MSGS * 2];  /* 1 + index of the member that consumed it first */
static int split_dups;

static int on_split(cli_consumer *cs, const struct cli_msg_view *msgs, int n, void *ud)
{
    (void)cs;
    struct member *m = ud;
    for (int i = 0; i < n; i++) {
        ck_assert(msgs[i].body_len > 2 && memcmp(msgs[i].body, "s-", 2) == 0);
        int idx = atoi((const char *)msgs[i].body + 2);
        ck_assert(idx >= 0 && idx < SPLIT_MSGS * 2);
        if (split_seen[idx]++)
            split_dups++;
        else
            split_by[idx] = m->name[0];
        m->consumed++;
        m->queue_mask |= 1u << msgs[i].queue_id;
    }
    return 0;
}

static void member_start(struct member *m, struct ev_loop *loop, const char *ns)
{
    struct cli_opts co = { .namesrv_addr = ns, .instance_name = m->name, .client_ip = "127.0.0.1" };
    int err = 0;
    m->c = cli_client_new(loop, &co, &err);
    ck_assert_ptr_nonnull(m->c);
    struct cli_consumer_opts o = { .group = "CG_SPLIT", .topic = "Split", .model = CLI_CLUSTERING,
                                   .from = CLI_FROM_FIRST_OFFSET, .batch_size = 16, .suspend_ms = 1000,
                                   .rebalance_ms = 1000, .heartbeat_ms = 1000, .commit_ms = 500,
                                   .pull_retry_ms = 100, .on_messages = on_split, .ud = m };
    m->cs = cli_consumer_new(m->c, &o, &err);
    ck_assert_ptr_nonnull(m->cs);
    ck_assert_int_eq(cli_consumer_start(m->cs), 0);
}

static unsigned assigned_mask(const struct member *m, int *count)
{
    struct cli_mq mq[SPLIT_QUEUES * 2];
    int n = cli_consumer_assigned(m->cs, mq, SPLIT_QUEUES * 2);
    unsigned mask = 0;
    for (int i = 0; i < n && i < SPLIT_QUEUES * 2; i++)
        mask |= 1u << mq[i].queue_id;
    *count = n;
    return mask;
}

static void produce_split(cli_producer *p, int from, int to)
{
    char body[32];
    for (int i = from; i < to; i++) {
        snprintf(body, sizeof body, "s-%d", i);
        struct cli_message m = { .topic = "Split", .body = body, .body_len = (uint32_t)strlen(body), .tags = "T" };
        struct cli_send_result r;
        ck_assert_int_eq(cli_send_sync(p, &m, &r), 0);
    }
}

static int split_unique(int upto)
{
    int u = 0;
    for (int i = 0; i < upto; i++)
        u += split_seen[i] > 0;
    return u;
}

START_TEST(clustering_split_and_handover)
{
    struct th_daemon ns = { 0 }, br = { 0 };
    ns_start(&ns, NULL);
    br_start(&br, ns.addr, NULL);
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    rmt_client *admin = new_client(loop);
    ck_assert_int_eq(create_topic(admin, br.addr, "Split", SPLIT_QUEUES), 0);
    struct cli_opts po = { .namesrv_addr = ns.addr, .instance_name = "producer", .client_ip = "127.0.0.1" };
    int err = 0;
    cli_client *pc = cli_client_new(loop, &po, &err);
    ck_assert_ptr_nonnull(pc);
    wait_route(pc, "Split");
    struct cli_producer_opts pro = { .group = "PG_SPLIT", .retry_times = 2 };
    cli_producer *p = cli_producer_new(pc, &pro, &err);
    ck_assert_ptr_nonnull(p);

    struct member a = { .name = "A" }, b = { .name = "B" };
    member_start(&a, loop, ns.addr);
    member_start(&b, loop, ns.addr);
    /* The two members split the 8 queues 4/4 without overlap. */
    int na = 0, nb = 0;
    unsigned ma = 0, mb = 0;
    long long end = th_now_ms() + 15000;
    while (th_now_ms() < end) {
        spin(loop, 100);
        ma = assigned_mask(&a, &na);
        mb = assigned_mask(&b, &nb);
        if (na == 4 && nb == 4 && (ma & mb) == 0)
            break;
    }
    ck_assert_msg(na == 4 && nb == 4 && (ma & mb) == 0 && (ma | mb) == 0xff,
                  "queues not split 4/4: A %d (0x%x), B %d (0x%x)", na, ma, nb, mb);

    /* Everything is consumed exactly once, each member only from its queues. */
    produce_split(p, 0, SPLIT_MSGS);
    end = th_now_ms() + 20000;
    while (split_unique(SPLIT_MSGS) < SPLIT_MSGS && th_now_ms() < end)
        spin(loop, 50);
    ck_assert_int_eq(split_unique(SPLIT_MSGS), SPLIT_MSGS);
    spin(loop, 300);
    ck_assert_int_eq(split_dups, 0);
    ck_assert_int_eq(a.consumed + b.consumed, SPLIT_MSGS);
    ck_assert_msg((a.queue_mask & ~ma) == 0 && (b.queue_mask & ~mb) == 0,
                  "consumed outside the assignment: A 0x%x of 0x%x, B 0x%x of 0x%x", a.queue_mask, ma,
                  b.queue_mask, mb);
    ck_assert_int_gt(a.consumed, SPLIT_MSGS / 4);
    ck_assert_int_gt(b.consumed, SPLIT_MSGS / 4);

    /* B consumes part of a second round, then leaves (commit + UNREGISTER_CLIENT). */
    int b_before = b.consumed;
    produce_split(p, SPLIT_MSGS, SPLIT_MSGS + SPLIT_MSGS / 2);
    end = th_now_ms() + 10000;
    while (b.consumed - b_before < SPLIT_MSGS / 8 && th_now_ms() < end)
        spin(loop, 5);
    int b_total = b.consumed;
    ck_assert_int_eq(cli_consumer_shutdown(b.cs, 5000), 0);
    cli_consumer_free(b.cs);
    b.cs = NULL;
    /* A takes all 8 queues (the broker tells it the group changed). */
    end = th_now_ms() + 10000;
    while (th_now_ms() < end) {
        spin(loop, 50);
        ma = assigned_mask(&a, &na);
        if (na == SPLIT_QUEUES)
            break;
    }
    ck_assert_msg(na == SPLIT_QUEUES && ma == 0xff, "A holds %d queues (0x%x) after B left", na, ma);
    produce_split(p, SPLIT_MSGS + SPLIT_MSGS / 2, SPLIT_MSGS * 2);
    end = th_now_ms() + 20000;
    while (split_unique(SPLIT_MSGS * 2) < SPLIT_MSGS * 2 && th_now_ms() < end)
        spin(loop, 50);
    spin(loop, 500);
    ck_assert_int_eq(split_unique(SPLIT_MSGS * 2), SPLIT_MSGS * 2);
    /* Duplicates can only be messages B consumed but had not committed when it
     * left: at most its last batch per queue. B commits everything it consumed
     * at shutdown, so there should be none. */
    int dup_of_b = 0;
    for (int i = 0; i < SPLIT_MSGS * 2; i++)
        if (split_seen[i] > 1) {
            ck_assert_msg(split_by[i] == 'B', "message %d consumed twice but B never had it", i);
            dup_of_b++;
        }
    ck_assert_int_eq(dup_of_b, split_dups);
    ck_assert_int_le(split_dups, 16 * 4);
    fprintf(stderr, "split: A %d, B %d (B left after %d of round two); duplicates after the handover: %d\n",
            a.consumed, b_total, b_total - b_before, split_dups);
    ck_assert_int_eq(split_dups, 0);
    /* The broker's committed offsets reach the queue ends. */
    ck_assert_int_eq(cli_consumer_shutdown(a.cs, 5000), 0);
    cli_consumer_free(a.cs);
    for (int q = 0; q < SPLIT_QUEUES; q++) {
        rmt_cmd req;
        rmt_cmd_init(&req, RMT_REQ_QUERY_CONSUMER_OFFSET);
        rmt_cmd_set_ext(&req, "consumerGroup", "CG_SPLIT");
        rmt_cmd_set_ext(&req, "topic", "Split");
        rmt_cmd_set_ext_int(&req, "queueId", q);
        rmt_cmd *r = call(admin, br.addr, &req);
        int64_t off = -1;
        ck_assert_int_eq(r->code, 0);
        rmt_cmd_ext_int(r, "offset", &off);
        rmt_cmd_free(r);
        rmt_cmd_reset(&req, RMT_REQ_GET_MAX_OFFSET);
        rmt_cmd_set_ext(&req, "topic", "Split");
        rmt_cmd_set_ext_int(&req, "queueId", q);
        r = call(admin, br.addr, &req);
        int64_t max = -2;
        rmt_cmd_ext_int(r, "offset", &max);
        rmt_cmd_free(r);
        rmt_cmd_destroy(&req);
        ck_assert_int_eq(off, max);
    }
    cli_producer_free(p);
    cli_client_free(pc);
    cli_client_free(a.c);
    cli_client_free(b.c);
    rmt_client_free(admin);
    ev_loop_destroy(loop);
    d_finish(&br);
    d_finish(&ns);
}
END_TEST

static size_t delay_props(char *out, size_t cap, const char *name, const char *val)
{
    size_t len = 0;
    msg_prop_append(out, cap, &len, name, val, strlen(val));
    msg_prop_append(out, cap, &len, MSG_PROP_WAIT_STORE_MSG_OK, "true", 4);
    out[len] = 0;
    return len;
}

/* Polls topic queue 0 until every index below n was seen or timeout. */
static void poll_until_all(rmt_client *cl, const char *addr, const char *topic, const char *prefix,
                           struct seen *s, int timeout_ms)
{
    long long end = th_now_ms() + timeout_ms;
    for (;;) {
        seen_reset(s);
        pull_all(cl, addr, topic, "G_delay", 0, prefix, s);
        int got = 0;
        for (int i = 0; i < s->n; i++)
            got += s->count[i] > 0;
        if (got == s->n || th_now_ms() > end)
            return;
        usleep(20 * 1000);
    }
}

/* GET_ROUTEINFO_BY_TOPIC code on the nameserver. */
static int route_code(rmt_client *cl, const char *ns, const char *topic)
{
    rmt_cmd req;
    rmt_cmd_init(&req, RMT_REQ_GET_ROUTEINFO_BY_TOPIC);
    rmt_cmd_set_ext(&req, "topic", topic);
    int code = call_code(cl, ns, &req);
    rmt_cmd_destroy(&req);
    return code;
}

START_TEST(stalled_broker_evicted_after_channel_timeout)
{
    struct th_daemon ns = { 0 }, br = { 0 };
    ns_start(&ns, "brokerChannelExpiredTime=1500");
    br_start(&br, ns.addr, NULL);
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    rmt_client *cl = new_client(loop);
    ck_assert_int_eq(create_topic(cl, br.addr, "Stalled", 1), 0);
    int code = -1;
    for (int i = 0; i < 50 && (code = route_code(cl, ns.addr, "Stalled")) != 0; i++)
        usleep(100 * 1000);
    ck_assert_int_eq(code, 0);
    /* Frozen, not dead: its connection stays open, its heartbeats stop. */
    kill(br.pid, SIGSTOP);
    long long t0 = th_now_ms();
    while (th_now_ms() - t0 < 8000 && (code = route_code(cl, ns.addr, "Stalled")) == 0)
        usleep(100 * 1000);
    long long waited = th_now_ms() - t0;
    kill(br.pid, SIGCONT);
    ck_assert_int_eq(code, RMT_RESP_TOPIC_NOT_EXIST);
    ck_assert_msg(waited >= 1000, "evicted after %lld ms, before the 1500 ms channel timeout", waited);
    fprintf(stderr, "eviction: a stalled broker left the routes after %lld ms (timeout 1500 ms)\n", waited);
    /* Thawed, it registers again. */
    for (int i = 0; i < 50 && (code = route_code(cl, ns.addr, "Stalled")) != 0; i++)
        usleep(100 * 1000);
    ck_assert_int_eq(code, 0);
    rmt_client_free(cl);
    ev_loop_destroy(loop);
    d_finish(&br);
    d_finish(&ns);
}
END_TEST

START_TEST(delay_levels_on_time_and_across_restart)
{
    struct th_daemon br = { 0 };
    const char *extra[] = { "messageDelayLevel=1s 2s", NULL };
    br_start(&br, NULL, extra);
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    rmt_client *cl = new_client(loop);
    ck_assert_int_eq(create_topic(cl, br.addr, "Delayed", 1), 0);
    enum { N = 20 };
    long long sent_before[N], sent_after[N];
    char props[256], body[32];
    for (int i = 0; i < N; i++) {
        delay_props(props, sizeof props, MSG_PROP_DELAY_TIME_LEVEL, i % 2 ? "2" : "1");
        snprintf(body, sizeof body, "d-%d", i);
        sent_before[i] = th_now_ms();
        ck_assert_int_eq(send_props(cl, br.addr, "Delayed", 0, body, props), 0);
        sent_after[i] = th_now_ms();
    }
    struct seen s;
    seen_init(&s, N, true);
    long long end = th_now_ms() + 6000;
    int got = 0;
    while (got < N && th_now_ms() < end) {
        /* first_at survives resets: only the first sighting is timed */
        memset(s.count, 0, N * sizeof(int));
        s.records = 0;
        pull_all(cl, br.addr, "Delayed", "G_delay", 0, "d-", &s);
        got = 0;
        for (int i = 0; i < N; i++) {
            got += s.count[i] > 0;
            ck_assert_int_le(s.count[i], 1);
        }
        usleep(10 * 1000);
    }
    ck_assert_int_eq(got, N);
    long long worst_late = 0;
    for (int i = 0; i < N && getenv("CONSUME_DEBUG"); i++)
        fprintf(stderr, "d-%d level %d: sent %lld..%lld, seen %lld\n", i, i % 2 + 1, sent_before[i] - sent_before[0],
                sent_after[i] - sent_before[0], s.first_at[i] - sent_before[0]);
    for (int i = 0; i < N; i++) {
        long long due = i % 2 ? 2000 : 1000;
        long long early = s.first_at[i] - sent_before[i];
        long long late = s.first_at[i] - sent_after[i] - due;
        ck_assert_msg(early >= due, "message %d (level %d) delivered after %lld ms, before its %lld ms",
                      i, i % 2 + 1, early, due);
        ck_assert_msg(late <= 1000, "message %d (level %d) delivered %lld ms after it was due", i, i % 2 + 1,
                      late);
        if (late > worst_late)
            worst_late = late;
    }
    fprintf(stderr, "delay levels: %d messages, never early, at most %lld ms late\n", N, worst_late);

    /* Across a restart: some level-2 messages are still parked when the
     * broker stops; after the restart each arrives exactly once. */
    for (int i = 0; i < N; i++) {
        delay_props(props, sizeof props, MSG_PROP_DELAY_TIME_LEVEL, i < N / 2 ? "1" : "2");
        snprintf(body, sizeof body, "r-%d", i);
        ck_assert_int_eq(send_props(cl, br.addr, "Delayed", 0, body, props), 0);
    }
    long long t0 = th_now_ms();
    struct seen r;
    seen_init(&r, N, false);
    poll_until_all(cl, br.addr, "Delayed", "r-", &r, 1500);
    int before = 0;
    for (int i = 0; i < N; i++)
        before += r.count[i] > 0;
    ck_assert_msg(before < N, "all delivered within %lld ms, nothing left for the restart", th_now_ms() - t0);
    rmt_client_free(cl);
    d_stop(&br);
    br_start(&br, NULL, extra);
    cl = new_client(loop);
    poll_until_all(cl, br.addr, "Delayed", "r-", &r, 6000);
    spin(loop, 1500);
    seen_reset(&r);
    pull_all(cl, br.addr, "Delayed", "G_delay", 0, "r-", &r);
    for (int i = 0; i < N; i++)
        ck_assert_msg(r.count[i] == 1, "message r-%d delivered %d times across the restart", i, r.count[i]);
    fprintf(stderr, "delay levels: %d of %d delivered before the restart, all once after it\n", before, N);
    seen_free(&s);
    seen_free(&r);
    rmt_client_free(cl);
    ev_loop_destroy(loop);
    d_finish(&br);
}
END_TEST

START_TEST(timer_messages_survive_broker_kill9)
{
    struct th_daemon br = { 0 };
    const char *extra[] = { "timerPrecisionMs=100", NULL };
    br_start(&br, NULL, extra);
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    rmt_client *cl = new_client(loop);
    ck_assert_int_eq(create_topic(cl, br.addr, "Timed", 1), 0);
    enum { N = 30 };
    char props[256], body[32], ms[32];
    long long t0 = th_now_ms();
    for (int i = 0; i < N; i++) {
        snprintf(ms, sizeof ms, "%d", 2000 + 60 * i);
        delay_props(props, sizeof props, MSG_PROP_TIMER_DELAY_MS, ms);
        snprintf(body, sizeof body, "t-%d", i);
        ck_assert_int_eq(send_props(cl, br.addr, "Timed", 0, body, props), 0);
    }
    rmt_client_free(cl);
    /* None is due yet; the broker dies without a chance to save anything. */
    ck_assert_int_lt(th_now_ms() - t0, 1500);
    th_kill(br.pid);
    br.pid = 0;
    br_start(&br, NULL, extra);
    cl = new_client(loop);
    struct seen s;
    seen_init(&s, N, true);
    long long end = th_now_ms() + 15000;
    int got = 0;
    while (got < N && th_now_ms() < end) {
        memset(s.count, 0, N * sizeof(int));
        s.records = 0;
        pull_all(cl, br.addr, "Timed", "G_timer", 0, "t-", &s);
        got = 0;
        for (int i = 0; i < N; i++)
            got += s.count[i] > 0;
        usleep(20 * 1000);
    }
    ck_assert_msg(got == N, "only %d of %d timer messages delivered after kill -9", got, N);
    int dups = 0;
    for (int i = 0; i < N; i++) {
        ck_assert_msg(s.first_at[i] - t0 >= 2000 + 60 * i - 100, "timer message %d delivered early (%lld ms)", i,
                      s.first_at[i] - t0);
        dups += s.count[i] - 1;
    }
    fprintf(stderr, "timer: %d timer messages delivered after kill -9 of the broker (%d duplicates)\n", N, dups);
    seen_free(&s);
    rmt_client_free(cl);
    ev_loop_destroy(loop);
    d_finish(&br);
}
END_TEST

/* Runs rmqadmin; returns the exit status with stdout+stderr in *out. */
static int admin(char **out, const char *ns, const char *sub, ...)
{
    static char buf[1 << 16];
    char path[128];
    snprintf(path, sizeof path, "/tmp/rmqtest-admin-%d.out", (int)getpid());
    unlink(path);
    char *argv[32];
    int n = 0;
    argv[n++] = (char *)th_bin("RMQADMIN_BIN");
    argv[n++] = (char *)sub;
    argv[n++] = "-n";
    argv[n++] = (char *)ns;
    va_list ap;
    va_start(ap, sub);
    const char *a;
    while ((a = va_arg(ap, const char *)) && n < 31)
        argv[n++] = (char *)a;
    va_end(ap);
    argv[n] = NULL;
    pid_t pid = th_spawn(argv, path);
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    FILE *f = fopen(path, "r");
    size_t len = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    if (f)
        fclose(f);
    buf[len] = 0;
    unlink(path);
    *out = buf;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void send_back(rmt_client *cl, const char *addr, int64_t phys, const char *origin_id)
{
    rmt_cmd req;
    rmt_cmd_init(&req, RMT_REQ_CONSUMER_SEND_MSG_BACK);
    rmt_cmd_set_ext_int(&req, "offset", phys);
    rmt_cmd_set_ext(&req, "group", "G_dlq");
    rmt_cmd_set_ext(&req, "delayLevel", "0");
    rmt_cmd_set_ext(&req, "originMsgId", origin_id);
    rmt_cmd_set_ext(&req, "originTopic", "Fragile");
    ck_assert_int_eq(call_code(cl, addr, &req), 0);
    rmt_cmd_destroy(&req);
}

START_TEST(failing_message_reaches_dlq_after_retry_max_times)
{
    struct th_daemon ns = { 0 }, br = { 0 };
    ns_start(&ns, NULL);
    const char *extra[] = { "messageDelayLevel=1s 1s 1s 1s 1s 1s 1s 1s", NULL };
    br_start(&br, ns.addr, extra);
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    rmt_client *cl = new_client(loop);
    ck_assert_int_eq(create_topic(cl, br.addr, "Fragile", 1), 0);
    char *out;
    ck_assert_msg(admin(&out, ns.addr, "updateSubGroup", "-b", br.addr, "-g", "G_dlq", "-q", "3", NULL) == 0,
                  "updateSubGroup: %s", out);
    char props[256];
    size_t len = 0;
    msg_prop_append(props, sizeof props, &len, MSG_PROP_KEYS, "fragile-key", 11);
    msg_prop_append(props, sizeof props, &len, MSG_PROP_UNIQ_CLIENT_MESSAGE_ID_KEYIDX,
                    "7F00000100002A9F00000000000000AB", 32);
    msg_prop_append(props, sizeof props, &len, MSG_PROP_WAIT_STORE_MSG_OK, "true", 4);
    props[len] = 0;
    ck_assert_int_eq(send_props(cl, br.addr, "Fragile", 0, "f-0", props), 0);

    /* A 4.x consumer that always fails: every delivery is sent back. The
     * original delivery, then retries 1..retryMaxTimes from %RETRY%G_dlq. */
    struct seen s;
    seen_init(&s, 1, false);
    for (int i = 0; i < 100 && pull_all(cl, br.addr, "Fragile", "G_dlq", 0, "f-", &s) && s.records == 0; i++)
        usleep(10 * 1000);
    ck_assert_int_eq(s.records, 1);
    char origin_id[MSG_OFFSET_ID_MAX];
    struct msg_host host = { .ip = { 127, 0, 0, 1 }, .port = (uint32_t)br.port };
    msg_offset_id_encode(&host, s.phys[0], origin_id);
    send_back(cl, br.addr, s.phys[0], origin_id);
    int attempts = 1, retries = 0;
    long long end = th_now_ms() + 15000;
    while (retries < 3 && th_now_ms() < end) {
        seen_reset(&s);
        pull_all(cl, br.addr, "%RETRY%G_dlq", "G_dlq", 0, "f-", &s);
        if (s.records > retries) {
            ck_assert_int_eq(s.records, retries + 1);
            ck_assert_int_eq(s.reconsume[retries], retries + 1);
            send_back(cl, br.addr, s.phys[retries], origin_id);
            retries++;
            attempts++;
        }
        usleep(50 * 1000);
    }
    ck_assert_int_eq(retries, 3);
    /* After the 4th failed attempt the message is in the DLQ, not retried again. */
    spin(loop, 2500);
    seen_reset(&s);
    pull_all(cl, br.addr, "%RETRY%G_dlq", "G_dlq", 0, "f-", &s);
    ck_assert_msg(s.records == 3, "%d retries instead of retryMaxTimes 3", s.records);
    rmt_cmd req;
    rmt_cmd_init(&req, RMT_REQ_GET_MAX_OFFSET);
    rmt_cmd_set_ext(&req, "topic", "%DLQ%G_dlq");
    rmt_cmd_set_ext(&req, "queueId", "0");
    rmt_cmd *r = call(cl, br.addr, &req);
    int64_t dlq_max = -1;
    ck_assert_int_eq(r->code, 0);
    rmt_cmd_ext_int(r, "offset", &dlq_max);
    rmt_cmd_free(r);
    rmt_cmd_destroy(&req);
    ck_assert_int_eq(dlq_max, 1);
    fprintf(stderr, "dlq: %d consumption attempts (retryMaxTimes 3), then one dead letter\n", attempts);
    /* Write-only for consumers, as in RocketMQ 4.x. */
    seen_reset(&s);
    ck_assert_int_eq(pull_all(cl, br.addr, "%DLQ%G_dlq", "G_dlq", 0, "f-", &s), RMT_RESP_NO_PERMISSION);

    /* The admin finds it by key and by unique id, and sees the group's state. */
    for (int i = 0; i < 50; i++) {
        if (admin(&out, ns.addr, "queryMsgByKey", "-t", "%DLQ%G_dlq", "-k", "fragile-key", NULL) == 0 &&
            strstr(out, "7F00000100002A9F00000000000000AB"))
            break;
        usleep(100 * 1000);
    }
    ck_assert_msg(strstr(out, "7F00000100002A9F00000000000000AB") != NULL, "queryMsgByKey: %s", out);
    ck_assert_int_eq(admin(&out, ns.addr, "queryMsgById", "-t", "%DLQ%G_dlq", "-i",
                           "7F00000100002A9F00000000000000AB", NULL), 0);
    ck_assert_msg(strstr(out, "f-0") && strstr(out, "RETRY_TOPIC=Fragile"), "queryMsgById: %s", out);

    /* The original message's consumption state per group: none has an
     * offset yet, then G_dlq's committed offset passes it. */
    ck_assert_int_eq(admin(&out, ns.addr, "queryMsgById", "-i", origin_id, NULL), 0);
    ck_assert_msg(strstr(out, "No Consumer"), "queryMsgById without consumers: %s", out);
    for (int committed = 0; committed <= 1; committed++) {
        rmt_cmd_init(&req, RMT_REQ_UPDATE_CONSUMER_OFFSET);
        rmt_cmd_set_ext(&req, "consumerGroup", "G_dlq");
        rmt_cmd_set_ext(&req, "topic", "Fragile");
        rmt_cmd_set_ext(&req, "queueId", "0");
        rmt_cmd_set_ext_int(&req, "commitOffset", committed);
        ck_assert_int_eq(call_code(cl, br.addr, &req), 0);
        rmt_cmd_destroy(&req);
        ck_assert_int_eq(admin(&out, ns.addr, "queryMsgById", "--json", "-i", origin_id, NULL), 0);
        char want[128];
        snprintf(want, sizeof want, "\"ConsumerGroup\": \"G_dlq\",\n      \"TrackType\": \"%s\"",
                 committed ? "CONSUMED" : "NOT_CONSUME_YET");
        ck_assert_msg(strstr(out, "\"MessageTracks\"") && strstr(out, want), "queryMsgById --json: %s", out);
    }
    ck_assert_int_eq(admin(&out, ns.addr, "queryMsgById", "-i", origin_id, NULL), 0);
    ck_assert_msg(strstr(out, "G_dlq") && strstr(out, "CONSUMED"), "queryMsgById: %s", out);

    /* Re-sent by the admin CLI (mqadmin queryMsgById -s true): back in the original topic. */
    ck_assert_msg(admin(&out, ns.addr, "queryMsgById", "-t", "%DLQ%G_dlq", "-i",
                        "7F00000100002A9F00000000000000AB", "-s", "true", NULL) == 0,
                  "resend: %s", out);
    ck_assert_msg(strstr(out, "Fragile"), "resend output: %s", out);
    seen_reset(&s);
    for (int i = 0; i < 100; i++) {
        seen_reset(&s);
        pull_all(cl, br.addr, "Fragile", "G_dlq", 0, "f-", &s);
        if (s.records == 2)
            break;
        usleep(20 * 1000);
    }
    ck_assert_int_eq(s.records, 2);
    ck_assert_int_eq(s.count[0], 2);
    ck_assert_int_eq(s.reconsume[1], 0);
    seen_free(&s);
    rmt_client_free(cl);
    ev_loop_destroy(loop);
    d_finish(&br);
    d_finish(&ns);
}
END_TEST

int main(void)
{
    log_set_level(LOG_LVL_ERROR);
    Suite *s = suite_create("consume");
    TCase *tc = tcase_create("consume");
    tcase_set_timeout(tc, 90);
    /* CONSUME_ONLY=<name> runs one test (for debugging). */
    const char *only = getenv("CONSUME_ONLY");
#define ADD(t) \
    if (!only || strcmp(only, #t) == 0) \
        tcase_add_test(tc, t)
    ADD(clustering_split_and_handover);
    ADD(stalled_broker_evicted_after_channel_timeout);
    ADD(delay_levels_on_time_and_across_restart);
    ADD(timer_messages_survive_broker_kill9);
    ADD(failing_message_reaches_dlq_after_retry_max_times);
#undef ADD
    suite_add_tcase(s, tc);
    SRunner *r = srunner_create(s);
    srunner_run_all(r, CK_NORMAL);
    int failed = srunner_ntests_failed(r);
    srunner_free(r);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
