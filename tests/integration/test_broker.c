/* Integration tests: the real broker (and nameserver) binaries on loopback
 * ports with temporary data directories, driven over the remoting protocol. */
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "log.h"
#include "message.h"
#include "remoting.h"

#define MAX_EXTRA 12

static void ns_start(struct th_daemon *d, const char *extra)
{
    const char *const ex[] = { extra, NULL };
    ck_assert_msg(th_ns_start(d, ex), "nameserver did not start listening");
}

/* Starts a broker. With d->dir already set (a restart) the same directory and
 * port are used. extra: NULL-terminated list of key=value. */
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
    static char sets[8][600];
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
    const char *fixed[] = { "brokerIP1=127.0.0.1", "bindAddress=127.0.0.1", "mapedFileSizeCommitLog=67108864",
                            "metadataMapSizeMB=64", "maxHashSlotNum=100000", "maxIndexNum=400000", NULL };
    for (int i = 0; fixed[i]; i++) {
        argv[n++] = "--set";
        argv[n++] = (char *)fixed[i];
    }
    for (int i = 0; extra && extra[i] && i < MAX_EXTRA; i++) {
        argv[n++] = "--set";
        argv[n++] = (char *)extra[i];
    }
    argv[n] = NULL;
    d->pid = th_spawn(argv, d->log);
    ck_assert_msg(th_wait_port(d->port, 10000), "broker did not start listening");
}

/* Stops a daemon gracefully; it must exit 0 (a sanitizer finding or a
 * failed shutdown fails the test and keeps the directory with its log). */
static void d_finish(struct th_daemon *d)
{
    if (d->pid > 0) {
        int status = th_stop(d->pid, 10000);
        d->pid = 0;
        ck_assert_msg(status >= 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0,
                      "daemon did not exit cleanly (status %d), see %s", status, d->log);
    }
    th_rmtree(d->dir);
}

static rmt_client *new_client(struct ev_loop *loop)
{
    struct rmt_client_opts co = { 0 };
    return rmt_client_new(loop, &co);
}

/* Synchronous call; the transport must succeed. */
static rmt_cmd *call(rmt_client *cl, const char *addr, rmt_cmd *req)
{
    rmt_cmd *resp = NULL;
    int rc = rmt_client_invoke_sync(cl, addr, req, 5000, &resp);
    ck_assert_msg(rc == 0, "invoke %d failed: %s", req->code, strerror(-rc));
    return resp;
}

static int call_code(rmt_client *cl, const char *addr, rmt_cmd *req, char *remark, size_t rlen)
{
    rmt_cmd *resp = call(cl, addr, req);
    int code = resp->code;
    if (remark)
        snprintf(remark, rlen, "%s", rmt_cmd_remark(resp) ? rmt_cmd_remark(resp) : "");
    rmt_cmd_free(resp);
    return code;
}

static size_t make_props(char *out, size_t cap, const char *tags, const char *keys, const char *uniq)
{
    size_t len = 0;
    if (tags)
        msg_prop_append(out, cap, &len, MSG_PROP_TAGS, tags, strlen(tags));
    if (keys)
        msg_prop_append(out, cap, &len, MSG_PROP_KEYS, keys, strlen(keys));
    if (uniq)
        msg_prop_append(out, cap, &len, MSG_PROP_UNIQ_CLIENT_MESSAGE_ID_KEYIDX, uniq, strlen(uniq));
    msg_prop_append(out, cap, &len, MSG_PROP_WAIT_STORE_MSG_OK, "true", 4);
    out[len] = 0;
    return len;
}

/* A SEND_MESSAGE_V2 request (short header names, as Java clients send). */
static void build_send(rmt_cmd *req, const char *topic, int qid, const char *props, const void *body,
                       size_t n)
{
    rmt_cmd_reset(req, RMT_REQ_SEND_MESSAGE_V2);
    rmt_cmd_set_ext(req, "a", "PG_test");
    rmt_cmd_set_ext(req, "b", topic);
    rmt_cmd_set_ext(req, "c", "TBW102");
    rmt_cmd_set_ext(req, "d", "4");
    rmt_cmd_set_ext_int(req, "e", qid);
    rmt_cmd_set_ext(req, "f", "0");
    rmt_cmd_set_ext_int(req, "g", th_now_ms());
    rmt_cmd_set_ext(req, "h", "0");
    rmt_cmd_set_ext(req, "i", props);
    rmt_cmd_set_ext(req, "j", "0");
    rmt_cmd_set_ext(req, "k", "false");
    rmt_cmd_set_body(req, body, (uint32_t)n);
}

static int send_one(rmt_client *cl, const char *addr, const char *topic, int qid, const char *tags,
                    const char *body, char *remark, size_t rlen)
{
    char props[256];
    make_props(props, sizeof props, tags, NULL, NULL);
    rmt_cmd req;
    rmt_cmd_init(&req, 0);
    build_send(&req, topic, qid, props, body, strlen(body));
    int code = call_code(cl, addr, &req, remark, rlen);
    rmt_cmd_destroy(&req);
    return code;
}

/* Pipelined sender: keeps `window` requests in flight. */
struct pipe;
struct slot {
    struct pipe *p;
    int idx;
};
struct pipe {
    struct ev_loop *loop;
    rmt_client *cl;
    const char *addr;
    const char *topic;
    int total, window, sent, done, acked, inflight;
    int *code;               /* per message: response code or -1 (transport error) */
    struct slot *slots;
    int kill_after;          /* > 0: SIGKILL `victim` after that many acks */
    pid_t victim;
    bool killed;
    int body_size;
};

static void pipe_fill(struct pipe *p);

static void pipe_cb(int status, rmt_cmd *resp, void *ud)
{
    struct slot *s = ud;
    struct pipe *p = s->p;
    p->inflight--;
    p->done++;
    p->code[s->idx] = status ? -1 : resp->code;
    if (!status && resp->code == 0) {
        p->acked++;
        if (p->kill_after > 0 && p->acked >= p->kill_after && !p->killed) {
            th_kill(p->victim);
            p->killed = true;
        }
    }
    pipe_fill(p);
}

static void pipe_fill(struct pipe *p)
{
    char props[256], key[32], tags[8], body[4096];
    rmt_cmd req;
    rmt_cmd_init(&req, 0);
    while (p->inflight < p->window && p->sent < p->total && !p->killed) {
        int i = p->sent++;
        snprintf(key, sizeof key, "key-%d", i);
        snprintf(tags, sizeof tags, "%s", i % 2 ? "TagB" : "TagA");
        int n = snprintf(body, sizeof body, "body-%d-", i);
        while (n < p->body_size && n < (int)sizeof body - 1)
            body[n++] = 'x';
        body[n] = 0;
        make_props(props, sizeof props, tags, key, NULL);
        build_send(&req, p->topic, i % 4, props, body, (size_t)n);
        p->slots[i] = (struct slot){ p, i };
        if (rmt_client_invoke(p->cl, p->addr, &req, 10000, pipe_cb, &p->slots[i]) == 0) {
            p->inflight++;
        } else {
            p->code[i] = -1;
            p->done++;
        }
    }
    if (p->killed)
        while (p->sent < p->total) {
            p->code[p->sent++] = -1;
            p->done++;
        }
    rmt_cmd_destroy(&req);
}

static void pipe_run(struct pipe *p)
{
    p->code = calloc((size_t)p->total, sizeof *p->code);
    p->slots = calloc((size_t)p->total, sizeof *p->slots);
    pipe_fill(p);
    long long end = th_now_ms() + 60000;
    while (p->done < p->total && th_now_ms() < end)
        ev_run(p->loop, EVRUN_ONCE);
    ck_assert_int_eq(p->done, p->total);
}

static void pipe_free(struct pipe *p)
{
    free(p->code);
    free(p->slots);
}

struct pulled {
    int count;
    int *seen;       /* seen[i] counts body index i */
    int nseen;
    int tag_b;
    int64_t next;
};

/* One PULL_MESSAGE; returns the code. Records are decoded into out. */
static int pull_once(rmt_client *cl, const char *addr, const char *topic, const char *group, int qid,
                     int64_t offset, const char *sub, int sysflag, struct pulled *out)
{
    rmt_cmd req;
    rmt_cmd_init(&req, RMT_REQ_PULL_MESSAGE);
    rmt_cmd_set_ext(&req, "consumerGroup", group);
    rmt_cmd_set_ext(&req, "topic", topic);
    rmt_cmd_set_ext_int(&req, "queueId", qid);
    rmt_cmd_set_ext_int(&req, "queueOffset", offset);
    rmt_cmd_set_ext_int(&req, "maxMsgNums", 32);
    rmt_cmd_set_ext_int(&req, "sysFlag", sysflag | 0x4);
    rmt_cmd_set_ext_int(&req, "commitOffset", 0);
    rmt_cmd_set_ext_int(&req, "suspendTimeoutMillis", 1000);
    rmt_cmd_set_ext(&req, "subscription", sub);
    rmt_cmd_set_ext_int(&req, "subVersion", 0);
    rmt_cmd *resp = call(cl, addr, &req);
    rmt_cmd_destroy(&req);
    int code = resp->code;
    int64_t next = -1;
    rmt_cmd_ext_int(resp, "nextBeginOffset", &next);
    out->next = next;
    size_t pos = 0;
    while (code == 0 && pos < resp->body_len) {
        struct msg_record r;
        int n = msg_record_decode(resp->body + pos, resp->body_len - pos, &r, 1);
        ck_assert_msg(n > 0, "pulled record does not decode (%d)", n);
        pos += (size_t)n;
        out->count++;
        const char *tv;
        size_t tl;
        if (msg_prop_get(r.props, r.props_len, MSG_PROP_TAGS, &tv, &tl) && tl == 4 && memcmp(tv, "TagB", 4) == 0)
            out->tag_b++;
        int idx = -1;
        if (r.body_len > 5 && memcmp(r.body, "body-", 5) == 0)
            idx = atoi((const char *)r.body + 5);
        const char *kv;
        size_t kl;
        if (idx >= 0 && msg_prop_get(r.props, r.props_len, MSG_PROP_KEYS, &kv, &kl)) {
            char want[32];
            snprintf(want, sizeof want, "key-%d", idx);
            ck_assert_msg(kl == strlen(want) && memcmp(kv, want, kl) == 0, "key does not match body %d", idx);
        }
        if (idx >= 0 && idx < out->nseen)
            out->seen[idx]++;
    }
    rmt_cmd_free(resp);
    return code;
}

/* Pulls a queue from offset 0 until PULL_NOT_FOUND. */
static void pull_all(rmt_client *cl, const char *addr, const char *topic, const char *group, int qid,
                     const char *sub, struct pulled *out)
{
    int64_t off = 0;
    for (int guard = 0; guard < 100000; guard++) {
        int code = pull_once(cl, addr, topic, group, qid, off, sub, 0, out);
        if (code == RMT_RESP_PULL_NOT_FOUND)
            return;
        ck_assert_msg(code == 0 || code == RMT_RESP_PULL_RETRY_IMMEDIATELY, "pull answered %d", code);
        ck_assert(out->next > off);
        off = out->next;
    }
    ck_abort_msg("pull did not finish");
}

static int64_t max_offset(rmt_client *cl, const char *addr, const char *topic, int qid)
{
    rmt_cmd req;
    rmt_cmd_init(&req, RMT_REQ_GET_MAX_OFFSET);
    rmt_cmd_set_ext(&req, "topic", topic);
    rmt_cmd_set_ext_int(&req, "queueId", qid);
    rmt_cmd *resp = call(cl, addr, &req);
    rmt_cmd_destroy(&req);
    int64_t v = -1;
    rmt_cmd_ext_int(resp, "offset", &v);
    rmt_cmd_free(resp);
    return v;
}

/* Waits until the consume queues of topic hold at least `want` entries in
 * total (dispatch runs behind the append). */
static void wait_dispatched(rmt_client *cl, const char *addr, const char *topic, int nq, int64_t want)
{
    int64_t sum = 0;
    for (int i = 0; i < 500; i++) {
        sum = 0;
        for (int q = 0; q < nq; q++)
            sum += max_offset(cl, addr, topic, q);
        if (sum >= want)
            return;
        usleep(10 * 1000);
    }
    ck_abort_msg("only %lld of %lld messages of %s dispatched", (long long)sum, (long long)want, topic);
}

static int create_topic(rmt_client *cl, const char *addr, const char *topic, int queues, int perm, char *remark)
{
    rmt_cmd req;
    rmt_cmd_init(&req, RMT_REQ_UPDATE_AND_CREATE_TOPIC);
    rmt_cmd_set_ext(&req, "topic", topic);
    rmt_cmd_set_ext(&req, "defaultTopic", "TBW102");
    rmt_cmd_set_ext_int(&req, "readQueueNums", queues);
    rmt_cmd_set_ext_int(&req, "writeQueueNums", queues);
    rmt_cmd_set_ext_int(&req, "perm", perm);
    rmt_cmd_set_ext(&req, "topicFilterType", "SINGLE_TAG");
    int code = call_code(cl, addr, &req, remark, remark ? 512 : 0);
    rmt_cmd_destroy(&req);
    return code;
}

static int route_code(rmt_client *cl, const char *ns, const char *topic, char *body, size_t blen)
{
    rmt_cmd req;
    rmt_cmd_init(&req, RMT_REQ_GET_ROUTEINFO_BY_TOPIC);
    rmt_cmd_set_ext(&req, "topic", topic);
    rmt_cmd *resp = call(cl, ns, &req);
    rmt_cmd_destroy(&req);
    int code = resp->code;
    if (body)
        snprintf(body, blen, "%.*s", (int)resp->body_len, (const char *)resp->body);
    rmt_cmd_free(resp);
    return code;
}

START_TEST(send_pull_10k_with_tags_and_keys)
{
    struct th_daemon ns = { 0 }, br = { 0 };
    ns_start(&ns, NULL);
    const char *extra[] = { "registerNameServerPeriod=500", NULL };
    br_start(&br, ns.addr, extra);
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    rmt_client *cl = new_client(loop);
    const int total = 10000;
    struct pipe p = { .loop = loop, .cl = cl, .addr = br.addr, .topic = "RoundTrip", .total = total,
                      .window = 64, .body_size = 100 };
    pipe_run(&p);
    ck_assert_int_eq(p.acked, total);
    pipe_free(&p);

    /* The auto-created topic reaches the nameserver's routes. */
    char body[8192];
    int code = 0;
    for (int i = 0; i < 50 && (code = route_code(cl, ns.addr, "RoundTrip", body, sizeof body)) != 0; i++)
        usleep(100 * 1000);
    ck_assert_int_eq(code, 0);
    char expect[128];
    snprintf(expect, sizeof expect, "\"%s\"", br.addr);
    ck_assert_msg(strstr(body, expect) != NULL, "route does not name the broker: %s", body);

    wait_dispatched(cl, br.addr, "RoundTrip", 4, total);
    struct pulled all = { .nseen = total };
    all.seen = calloc((size_t)total, sizeof(int));
    for (int q = 0; q < 4; q++)
        pull_all(cl, br.addr, "RoundTrip", "G_all", q, "*", &all);
    ck_assert_int_eq(all.count, total);
    for (int i = 0; i < total; i++)
        ck_assert_msg(all.seen[i] == 1, "message %d pulled %d times", i, all.seen[i]);
    ck_assert_int_eq(all.tag_b, total / 2);

    struct pulled a = { .nseen = total };
    a.seen = calloc((size_t)total, sizeof(int));
    for (int q = 0; q < 4; q++)
        pull_all(cl, br.addr, "RoundTrip", "G_tagA", q, "TagA || TagC", &a);
    ck_assert_int_eq(a.count, total / 2);
    ck_assert_int_eq(a.tag_b, 0);
    for (int i = 0; i < total; i += 2)
        ck_assert_int_eq(a.seen[i], 1);
    free(all.seen);
    free(a.seen);

    /* Offsets of a queue and queries by key and by offsetMsgId. */
    rmt_cmd req;
    rmt_cmd_init(&req, RMT_REQ_GET_MAX_OFFSET);
    rmt_cmd_set_ext(&req, "topic", "RoundTrip");
    rmt_cmd_set_ext(&req, "queueId", "1");
    rmt_cmd *resp = call(cl, br.addr, &req);
    int64_t max = -1;
    rmt_cmd_ext_int(resp, "offset", &max);
    ck_assert_int_eq(max, total / 4);
    rmt_cmd_free(resp);
    rmt_cmd_reset(&req, RMT_REQ_QUERY_MESSAGE);
    rmt_cmd_set_ext(&req, "topic", "RoundTrip");
    rmt_cmd_set_ext(&req, "key", "key-4321");
    rmt_cmd_set_ext(&req, "maxNum", "8");
    rmt_cmd_set_ext(&req, "beginTimestamp", "0");
    rmt_cmd_set_ext(&req, "endTimestamp", "9999999999999");
    resp = call(cl, br.addr, &req);
    ck_assert_int_eq(resp->code, 0);
    struct msg_record r;
    ck_assert_int_gt(msg_record_decode(resp->body, resp->body_len, &r, 1), 0);
    ck_assert(r.body_len > 10 && memcmp(r.body, "body-4321-", 10) == 0);
    int64_t phys = r.phys_offset;
    rmt_cmd_free(resp);
    rmt_cmd_reset(&req, RMT_REQ_VIEW_MESSAGE_BY_ID);
    rmt_cmd_set_ext_int(&req, "offset", phys);
    resp = call(cl, br.addr, &req);
    ck_assert_int_eq(resp->code, 0);
    ck_assert_int_gt(msg_record_decode(resp->body, resp->body_len, &r, 1), 0);
    ck_assert(memcmp(r.body, "body-4321-", 10) == 0);
    rmt_cmd_free(resp);

    /* Unsupported codes and missing fields are answered; the connection lives on. */
    char remark[512];
    rmt_cmd_reset(&req, 4242);
    ck_assert_int_eq(call_code(cl, br.addr, &req, remark, sizeof remark), RMT_RESP_REQUEST_CODE_NOT_SUPPORTED);
    ck_assert_ptr_nonnull(strstr(remark, "4242"));
    rmt_cmd_reset(&req, RMT_REQ_PULL_MESSAGE);
    rmt_cmd_set_ext(&req, "consumerGroup", "G");
    ck_assert_int_eq(call_code(cl, br.addr, &req, remark, sizeof remark), RMT_RESP_INVALID_PARAMETER);
    ck_assert_ptr_nonnull(strstr(remark, "topic"));
    rmt_cmd_reset(&req, RMT_REQ_GET_BROKER_RUNTIME_INFO);
    resp = call(cl, br.addr, &req);
    ck_assert_int_eq(resp->code, 0);
    ck_assert_ptr_nonnull(memmem(resp->body, resp->body_len, "putTps", strlen("putTps")));
    ck_assert_ptr_nonnull(memmem(resp->body, resp->body_len, "commitLogDiskRatio", strlen("commitLogDiskRatio")));
    rmt_cmd_free(resp);
    rmt_cmd_destroy(&req);
    rmt_client_free(cl);
    ev_loop_destroy(loop);
    d_finish(&br);
    d_finish(&ns);
}
END_TEST

struct lp_wait {
    bool done;
    int code;
    long long at;
    int count;
};

static void lp_cb(int status, rmt_cmd *resp, void *ud)
{
    struct lp_wait *w = ud;
    w->done = true;
    w->at = th_now_ms();
    w->code = status ? -1 : resp->code;
    w->count = 0;
    size_t pos = 0;
    while (!status && resp->code == 0 && pos < resp->body_len) {
        struct msg_record r;
        int n = msg_record_decode(resp->body + pos, resp->body_len - pos, &r, 0);
        if (n <= 0)
            break;
        pos += (size_t)n;
        w->count++;
    }
}

static void start_long_poll(rmt_client *cl, const char *addr, const char *topic, const char *sub,
                            int64_t offset, struct lp_wait *w)
{
    rmt_cmd req;
    rmt_cmd_init(&req, RMT_REQ_PULL_MESSAGE);
    rmt_cmd_set_ext(&req, "consumerGroup", "G_lp");
    rmt_cmd_set_ext(&req, "topic", topic);
    rmt_cmd_set_ext(&req, "queueId", "0");
    rmt_cmd_set_ext_int(&req, "queueOffset", offset);
    rmt_cmd_set_ext(&req, "maxMsgNums", "32");
    rmt_cmd_set_ext_int(&req, "sysFlag", 0x2 | 0x4);
    rmt_cmd_set_ext(&req, "commitOffset", "0");
    rmt_cmd_set_ext(&req, "suspendTimeoutMillis", "5000");
    rmt_cmd_set_ext(&req, "subscription", sub);
    rmt_cmd_set_ext(&req, "subVersion", "0");
    memset(w, 0, sizeof *w);
    ck_assert_int_eq(rmt_client_invoke(cl, addr, &req, 10000, lp_cb, w), 0);
    rmt_cmd_destroy(&req);
}

static void run_for(struct ev_loop *loop, int ms, bool *until)
{
    long long end = th_now_ms() + ms;
    while (th_now_ms() < end && !(until && *until)) {
        ev_run(loop, EVRUN_NOWAIT);
        usleep(1000);
    }
}

START_TEST(long_polling_wakes_on_send)
{
    struct th_daemon br = { 0 };
    br_start(&br, NULL, NULL);
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    rmt_client *cl = new_client(loop);
    rmt_client *producer = new_client(loop);
    ck_assert_int_eq(create_topic(cl, br.addr, "LongPoll", 1, 6, NULL), 0);
    struct lp_wait w;
    start_long_poll(cl, br.addr, "LongPoll", "TagA", 0, &w);
    run_for(loop, 300, &w.done);
    ck_assert_msg(!w.done, "the pull was answered (%d) instead of being held", w.code);
    /* A non-matching tag does not wake it. */
    ck_assert_int_eq(send_one(producer, br.addr, "LongPoll", 0, "TagB", "nope", NULL, 0), 0);
    run_for(loop, 300, &w.done);
    ck_assert_msg(!w.done, "a TagB message woke a TagA pull");
    long long t0 = th_now_ms();
    ck_assert_int_eq(send_one(producer, br.addr, "LongPoll", 0, "TagA", "yes", NULL, 0), 0);
    run_for(loop, 4000, &w.done);
    ck_assert(w.done);
    ck_assert_int_eq(w.code, 0);
    ck_assert_int_eq(w.count, 1);
    long long lat = w.at - t0;
    fprintf(stderr, "long polling: answered %lld ms after the send was issued\n", lat);
    ck_assert_msg(lat < 1000, "long-polling wake-up took %lld ms", lat);
    /* With nothing arriving, the hold ends after suspendTimeoutMillis with PULL_NOT_FOUND. */
    start_long_poll(cl, br.addr, "LongPoll", "*", 2, &w);
    t0 = th_now_ms();
    run_for(loop, 8000, &w.done);
    ck_assert(w.done);
    ck_assert_int_eq(w.code, RMT_RESP_PULL_NOT_FOUND);
    ck_assert_msg(th_now_ms() - t0 >= 4000, "held only %lld ms", th_now_ms() - t0);
    rmt_client_free(cl);
    rmt_client_free(producer);
    ev_loop_destroy(loop);
    d_finish(&br);
}
END_TEST

static int update_offset(rmt_client *cl, const char *addr, int qid, int64_t off)
{
    rmt_cmd req;
    rmt_cmd_init(&req, RMT_REQ_UPDATE_CONSUMER_OFFSET);
    rmt_cmd_set_ext(&req, "consumerGroup", "G_off");
    rmt_cmd_set_ext(&req, "topic", "Offsets");
    rmt_cmd_set_ext_int(&req, "queueId", qid);
    rmt_cmd_set_ext_int(&req, "commitOffset", off);
    int code = call_code(cl, addr, &req, NULL, 0);
    rmt_cmd_destroy(&req);
    return code;
}

static int query_offset(rmt_client *cl, const char *addr, int qid, int64_t *off)
{
    rmt_cmd req;
    rmt_cmd_init(&req, RMT_REQ_QUERY_CONSUMER_OFFSET);
    rmt_cmd_set_ext(&req, "consumerGroup", "G_off");
    rmt_cmd_set_ext(&req, "topic", "Offsets");
    rmt_cmd_set_ext_int(&req, "queueId", qid);
    rmt_cmd *resp = call(cl, addr, &req);
    rmt_cmd_destroy(&req);
    int code = resp->code;
    *off = -1;
    rmt_cmd_ext_int(resp, "offset", off);
    rmt_cmd_free(resp);
    return code;
}

START_TEST(offsets_survive_restart_and_kill)
{
    struct th_daemon br = { 0 };
    const char *extra[] = { "flushConsumerOffsetInterval=100", NULL };
    br_start(&br, NULL, extra);
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    rmt_client *cl = new_client(loop);
    int64_t off;
    ck_assert_int_eq(query_offset(cl, br.addr, 0, &off), RMT_RESP_QUERY_NOT_FOUND);
    ck_assert_int_eq(update_offset(cl, br.addr, 0, 42), 0);
    ck_assert_int_eq(update_offset(cl, br.addr, 3, 7), 0);
    ck_assert_int_eq(query_offset(cl, br.addr, 0, &off), 0);
    ck_assert_int_eq(off, 42);
    rmt_client_free(cl);
    int status = th_stop(br.pid, 10000);
    ck_assert_msg(status >= 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0, "graceful stop failed");
    ck_assert(th_file_contains(br.log, "broker stopped"));

    br_start(&br, NULL, extra);
    cl = new_client(loop);
    ck_assert_int_eq(query_offset(cl, br.addr, 0, &off), 0);
    ck_assert_int_eq(off, 42);
    ck_assert_int_eq(query_offset(cl, br.addr, 3, &off), 0);
    ck_assert_int_eq(off, 7);
    ck_assert_int_eq(update_offset(cl, br.addr, 0, 77), 0);
    usleep(600 * 1000); /* several offset batches */
    rmt_client_free(cl);
    th_kill(br.pid);

    br_start(&br, NULL, extra);
    cl = new_client(loop);
    ck_assert_int_eq(query_offset(cl, br.addr, 0, &off), 0);
    ck_assert_int_eq(off, 77);
    rmt_client_free(cl);
    ev_loop_destroy(loop);
    d_finish(&br);
}
END_TEST

START_TEST(auto_create_permissions_and_size)
{
    struct th_daemon br = { 0 };
    const char *extra[] = { "autoCreateTopicEnable=false", "maxMessageSize=1024", NULL };
    br_start(&br, NULL, extra);
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    rmt_client *cl = new_client(loop);
    char remark[512];
    ck_assert_int_eq(send_one(cl, br.addr, "NotThere", 0, "T", "x", remark, sizeof remark),
                     RMT_RESP_TOPIC_NOT_EXIST);
    ck_assert_ptr_nonnull(strstr(remark, "NotThere"));
    ck_assert_int_eq(create_topic(cl, br.addr, "Small", 2, 6, NULL), 0);
    char big[2001];
    memset(big, 'b', 2000);
    big[2000] = 0;
    ck_assert_int_eq(send_one(cl, br.addr, "Small", 0, "T", big, remark, sizeof remark), RMT_RESP_MESSAGE_ILLEGAL);
    ck_assert_msg(strstr(remark, "1024") != NULL, "remark does not name the limit: %s", remark);
    ck_assert_int_eq(send_one(cl, br.addr, "Small", 0, "T", "fits", NULL, 0), 0);
    /* queueId beyond the write queues */
    ck_assert_int_eq(send_one(cl, br.addr, "Small", 5, "T", "x", remark, sizeof remark), RMT_RESP_SYSTEM_ERROR);
    ck_assert_ptr_nonnull(strstr(remark, "queueId"));
    /* A read-only topic refuses sends. */
    ck_assert_int_eq(create_topic(cl, br.addr, "ReadOnly", 1, 4, NULL), 0);
    ck_assert_int_eq(send_one(cl, br.addr, "ReadOnly", 0, "T", "x", NULL, 0), RMT_RESP_NO_PERMISSION);
    /* Broker-wide permission 4 refuses every send; a path key cannot be changed. */
    rmt_cmd req;
    rmt_cmd_init(&req, RMT_REQ_UPDATE_BROKER_CONFIG);
    const char *bad = "storePathRootDir=/tmp/elsewhere\n";
    rmt_cmd_set_body(&req, bad, (uint32_t)strlen(bad));
    ck_assert_int_eq(call_code(cl, br.addr, &req, remark, sizeof remark), RMT_RESP_NO_PERMISSION);
    ck_assert_ptr_nonnull(strstr(remark, "storePathRootDir"));
    const char *good = "brokerPermission=4\n";
    rmt_cmd_set_body(&req, good, (uint32_t)strlen(good));
    ck_assert_int_eq(call_code(cl, br.addr, &req, NULL, 0), 0);
    rmt_cmd_destroy(&req);
    ck_assert_int_eq(send_one(cl, br.addr, "Small", 0, "T", "x", remark, sizeof remark), RMT_RESP_NO_PERMISSION);
    rmt_client_free(cl);
    ev_loop_destroy(loop);
    d_finish(&br);

    /* Auto-creation on: an unknown topic is created on first send. */
    memset(&br, 0, sizeof br);
    const char *perm4[] = { "brokerPermission=4", NULL };
    br_start(&br, NULL, NULL);
    loop = ev_loop_new(EVFLAG_AUTO);
    cl = new_client(loop);
    ck_assert_int_eq(send_one(cl, br.addr, "AutoMade", -1, "T", "x", NULL, 0), 0);
    rmt_client_free(cl);
    ev_loop_destroy(loop);
    int status = th_stop(br.pid, 10000);
    ck_assert(status >= 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0);
    br_start(&br, NULL, perm4);
    loop = ev_loop_new(EVFLAG_AUTO);
    cl = new_client(loop);
    ck_assert_int_eq(send_one(cl, br.addr, "AutoMade", 0, "T", "x", NULL, 0), RMT_RESP_NO_PERMISSION);
    rmt_client_free(cl);
    ev_loop_destroy(loop);
    status = th_stop(br.pid, 10000);
    ck_assert(status >= 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0);
    /* A slave refuses sends but still serves reads (with slaveReadEnable). */
    const char *slave[] = { "brokerRole=SLAVE", "brokerId=1", "slaveReadEnable=true", NULL };
    br_start(&br, NULL, slave);
    loop = ev_loop_new(EVFLAG_AUTO);
    cl = new_client(loop);
    ck_assert_int_eq(send_one(cl, br.addr, "AutoMade", 0, "T", "x", remark, sizeof remark), RMT_RESP_NO_PERMISSION);
    ck_assert_ptr_nonnull(strstr(remark, "slave"));
    struct pulled got = { 0 };
    ck_assert_int_eq(pull_once(cl, br.addr, "AutoMade", "G_slave", 0, 0, "*", 0, &got), 0);
    ck_assert_int_eq(got.count, 1);
    rmt_client_free(cl);
    ev_loop_destroy(loop);
    d_finish(&br);
}
END_TEST

START_TEST(garbage_frames_do_not_hurt)
{
    struct th_daemon br = { 0 };
    const char *extra[] = { "maxFrameSize=8388608", NULL };
    br_start(&br, NULL, extra);
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    rmt_client *cl = new_client(loop);
    ck_assert_int_eq(send_one(cl, br.addr, "Garbage", 0, "T", "before", NULL, 0), 0);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)br.port),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    const char *junk[] = { "\x00\x00\x00\x10garbage-garbage!!", "GET / HTTP/1.1\r\n\r\n",
                           "\x7f\xff\xff\xff\x00\x00\x00\x04" };
    for (int i = 0; i < 3; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        ck_assert_int_eq(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
        ssize_t w = write(fd, junk[i], strlen(junk[i]) ? strlen(junk[i]) : 8);
        ck_assert(w > 0);
        char tmp[64];
        struct timeval tv = { 3, 0 };
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        ck_assert_int_le(read(fd, tmp, sizeof tmp), 0);
        close(fd);
    }
    ck_assert_int_eq(send_one(cl, br.addr, "Garbage", 0, "T", "after", NULL, 0), 0);
    rmt_client_free(cl);
    ev_loop_destroy(loop);
    d_finish(&br);
}
END_TEST

START_TEST(sync_flush_kill9_loses_no_acked_message)
{
    struct th_daemon ns = { 0 }, br = { 0 };
    ns_start(&ns, "brokerChannelExpiredTime=1000");
    const char *extra[] = { "flushDiskType=SYNC_FLUSH", "registerNameServerPeriod=300", NULL };
    br_start(&br, ns.addr, extra);
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    rmt_client *cl = new_client(loop);
    ck_assert_int_eq(create_topic(cl, br.addr, "Durable", 4, 6, NULL), 0);
    int code = 0;
    for (int i = 0; i < 50 && (code = route_code(cl, ns.addr, "Durable", NULL, 0)) != 0; i++)
        usleep(100 * 1000);
    ck_assert_int_eq(code, 0);
    const int total = 4000;
    struct pipe p = { .loop = loop, .cl = cl, .addr = br.addr, .topic = "Durable", .total = total,
                      .window = 32, .body_size = 512, .kill_after = 1500, .victim = br.pid };
    pipe_run(&p);
    ck_assert(p.killed);
    ck_assert_int_ge(p.acked, 1500);
    rmt_client_free(cl);
    /* The killed broker drops out of the nameserver's routes (its connection closed). */
    cl = new_client(loop);
    for (int i = 0; i < 50 && (code = route_code(cl, ns.addr, "Durable", NULL, 0)) == 0; i++)
        usleep(100 * 1000);
    ck_assert_int_eq(code, RMT_RESP_TOPIC_NOT_EXIST);

    br_start(&br, ns.addr, extra);
    wait_dispatched(cl, br.addr, "Durable", 4, p.acked);
    struct pulled all = { .nseen = total };
    all.seen = calloc((size_t)total, sizeof(int));
    for (int q = 0; q < 4; q++)
        pull_all(cl, br.addr, "Durable", "G_durable", q, "*", &all);
    int acked = 0;
    for (int i = 0; i < total; i++)
        if (p.code[i] == 0) {
            acked++;
            ck_assert_msg(all.seen[i] == 1, "acknowledged message %d lost after kill -9 (seen %d)", i, all.seen[i]);
        }
    fprintf(stderr, "sync flush: %d acknowledged before kill -9, all present after restart (%d stored)\n",
            acked, all.count);
    free(all.seen);
    pipe_free(&p);
    rmt_client_free(cl);
    ev_loop_destroy(loop);
    d_finish(&br);
    d_finish(&ns);
}
END_TEST

static int notified;

static void on_server_request(rmt_conn *c, rmt_cmd *req, void *ud)
{
    if (req->code == RMT_REQ_NOTIFY_CONSUMER_IDS_CHANGED)
        notified++;
}

static int heartbeat(rmt_client *cl, const char *addr, const char *client_id)
{
    char body[1024];
    snprintf(body, sizeof body,
             "{\"clientID\":\"%s\",\"producerDataSet\":[],\"consumerDataSet\":[{\"groupName\":\"G_hb\","
             "\"consumeType\":\"CONSUME_PASSIVELY\",\"messageModel\":\"CLUSTERING\","
             "\"consumeFromWhere\":\"CONSUME_FROM_LAST_OFFSET\",\"unitMode\":false,"
             "\"subscriptionDataSet\":[{\"topic\":\"HbTopic\",\"subString\":\"TagA || TagB\","
             "\"tagsSet\":[\"TagA\",\"TagB\"],\"codeSet\":[],\"subVersion\":1,\"expressionType\":\"TAG\","
             "\"classFilterMode\":false}]}]}",
             client_id);
    rmt_cmd req;
    rmt_cmd_init(&req, RMT_REQ_HEART_BEAT);
    req.serialize = RMT_SERIALIZE_JSON;
    rmt_cmd_set_body(&req, body, (uint32_t)strlen(body));
    int code = call_code(cl, addr, &req, NULL, 0);
    rmt_cmd_destroy(&req);
    return code;
}

static int consumer_list(rmt_client *cl, const char *addr, char *body, size_t blen)
{
    rmt_cmd req;
    rmt_cmd_init(&req, RMT_REQ_GET_CONSUMER_LIST_BY_GROUP);
    rmt_cmd_set_ext(&req, "consumerGroup", "G_hb");
    rmt_cmd *resp = call(cl, addr, &req);
    rmt_cmd_destroy(&req);
    int code = resp->code;
    snprintf(body, blen, "%.*s", (int)resp->body_len, (const char *)resp->body);
    rmt_cmd_free(resp);
    return code;
}

START_TEST(consumer_heartbeats_and_expiry)
{
    struct th_daemon br = { 0 };
    const char *extra[] = { "channelNotActiveInterval=1000", NULL };
    br_start(&br, NULL, extra);
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct rmt_client_opts co = { .on_request = on_server_request };
    rmt_client *a = rmt_client_new(loop, &co);
    rmt_client *b = rmt_client_new(loop, &co);
    rmt_client *admin = new_client(loop);
    ck_assert_int_eq(heartbeat(a, br.addr, "client-a"), 0);
    ck_assert_int_eq(heartbeat(b, br.addr, "client-b"), 0);
    char body[1024];
    ck_assert_int_eq(consumer_list(admin, br.addr, body, sizeof body), 0);
    ck_assert_ptr_nonnull(strstr(body, "client-a"));
    ck_assert_ptr_nonnull(strstr(body, "client-b"));
    run_for(loop, 100, NULL);
    ck_assert_int_ge(notified, 1); /* a was told that b joined */
    /* The retry topic of the group exists now, and the pull uses the heartbeat's subscription. */
    rmt_cmd req;
    rmt_cmd_init(&req, RMT_REQ_GET_TOPIC_CONFIG);
    rmt_cmd_set_ext(&req, "topic", "%RETRY%G_hb");
    ck_assert_int_eq(call_code(admin, br.addr, &req, NULL, 0), 0);
    rmt_cmd_destroy(&req);
    /* a leaves explicitly */
    rmt_cmd_init(&req, RMT_REQ_UNREGISTER_CLIENT);
    rmt_cmd_set_ext(&req, "clientID", "client-a");
    rmt_cmd_set_ext(&req, "consumerGroup", "G_hb");
    ck_assert_int_eq(call_code(a, br.addr, &req, NULL, 0), 0);
    rmt_cmd_destroy(&req);
    ck_assert_int_eq(consumer_list(admin, br.addr, body, sizeof body), 0);
    ck_assert_ptr_null(strstr(body, "client-a"));
    ck_assert_ptr_nonnull(strstr(body, "client-b"));
    /* b stops sending heartbeats (its connection stays open) and expires. */
    int code = 0;
    long long t0 = th_now_ms();
    while (th_now_ms() - t0 < 5000) {
        code = consumer_list(admin, br.addr, body, sizeof body);
        if (code != 0)
            break;
        run_for(loop, 100, NULL);
    }
    ck_assert_int_ne(code, 0);
    ck_assert_int_ge(th_now_ms() - t0, 500);
    rmt_client_free(a);
    rmt_client_free(b);
    rmt_client_free(admin);
    ev_loop_destroy(loop);
    d_finish(&br);
}
END_TEST

START_TEST(admin_refused_outside_allow_list)
{
    struct th_daemon br = { 0 };
    const char *extra[] = { "adminAllowList=10.9.9.9", NULL };
    br_start(&br, NULL, extra);
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    rmt_client *cl = new_client(loop);
    char remark[512];
    ck_assert_int_eq(create_topic(cl, br.addr, "Forbidden", 1, 6, remark), RMT_RESP_NO_PERMISSION);
    ck_assert_ptr_nonnull(strstr(remark, "adminAllowList"));
    rmt_cmd req;
    rmt_cmd_init(&req, RMT_REQ_DELETE_TOPIC_IN_BROKER);
    rmt_cmd_set_ext(&req, "topic", "TBW102");
    ck_assert_int_eq(call_code(cl, br.addr, &req, NULL, 0), RMT_RESP_NO_PERMISSION);
    rmt_cmd_reset(&req, RMT_REQ_UPDATE_BROKER_CONFIG);
    rmt_cmd_set_body(&req, "brokerPermission=6", 18);
    ck_assert_int_eq(call_code(cl, br.addr, &req, NULL, 0), RMT_RESP_NO_PERMISSION);
    /* read-only queries stay open */
    rmt_cmd_reset(&req, RMT_REQ_GET_ALL_TOPIC_CONFIG);
    rmt_cmd *resp = call(cl, br.addr, &req);
    ck_assert_int_eq(resp->code, 0);
    ck_assert_ptr_nonnull(memmem(resp->body, resp->body_len, "TBW102", strlen("TBW102")));
    rmt_cmd_free(resp);
    rmt_cmd_destroy(&req);
    rmt_client_free(cl);
    ev_loop_destroy(loop);
    d_finish(&br);
}
END_TEST

START_TEST(send_back_goes_through_delay_to_retry_and_dlq)
{
    struct th_daemon br = { 0 };
    const char *levels[] = { "messageDelayLevel=1s 1s 1s 1s", NULL };
    br_start(&br, NULL, levels);
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    rmt_client *cl = new_client(loop);
    ck_assert_int_eq(create_topic(cl, br.addr, "Origin", 1, 6, NULL), 0);
    ck_assert_int_eq(send_one(cl, br.addr, "Origin", 0, "TagA", "body-5-retry", NULL, 0), 0);
    struct pulled got = { 0 };
    int code = RMT_RESP_PULL_NOT_FOUND;
    for (int i = 0; i < 100 && code != 0; i++) {
        code = pull_once(cl, br.addr, "Origin", "G_sb", 0, 0, "*", 0, &got);
        if (code)
            usleep(10 * 1000);
    }
    ck_assert_int_eq(code, 0);
    ck_assert_int_eq(got.count, 1);
    /* the first record of the log is that message: physical offset 0 */
    rmt_cmd req;
    rmt_cmd_init(&req, RMT_REQ_CONSUMER_SEND_MSG_BACK);
    rmt_cmd_set_ext(&req, "offset", "0");
    rmt_cmd_set_ext(&req, "group", "G_sb");
    rmt_cmd_set_ext(&req, "delayLevel", "0");
    rmt_cmd_set_ext(&req, "originTopic", "Origin");
    rmt_cmd_set_ext(&req, "maxReconsumeTimes", "16");
    ck_assert_int_eq(call_code(cl, br.addr, &req, NULL, 0), 0);
    /* level 3 of the 4 configured: parked in SCHEDULE_TOPIC_XXXX queue 2, then delivered */
    struct pulled sched = { 0 };
    code = RMT_RESP_PULL_NOT_FOUND;
    for (int i = 0; i < 100 && code != 0; i++) {
        code = pull_once(cl, br.addr, "SCHEDULE_TOPIC_XXXX", "G_x", 2, 0, "*", 0, &sched);
        if (code)
            usleep(10 * 1000);
    }
    ck_assert_int_eq(code, 0);
    ck_assert_int_eq(sched.count, 1);
    struct pulled retry = { 0 };
    code = RMT_RESP_PULL_NOT_FOUND;
    long long t0 = th_now_ms();
    while (th_now_ms() - t0 < 5000 && code != 0) {
        code = pull_once(cl, br.addr, "%RETRY%G_sb", "G_sb", 0, 0, "*", 0, &retry);
        if (code != 0)
            usleep(100 * 1000);
    }
    ck_assert_int_eq(code, 0);
    ck_assert_int_eq(retry.count, 1);
    ck_assert_int_ge(th_now_ms() - t0, 500);
    /* maxReconsumeTimes 0: straight to the dead-letter queue */
    rmt_cmd_set_ext(&req, "maxReconsumeTimes", "0");
    ck_assert_int_eq(call_code(cl, br.addr, &req, NULL, 0), 0);
    /* The dead-letter topic is created write-only (RocketMQ 4.x PERM_WRITE):
     * a pull is refused until an admin grants read. */
    rmt_cmd_reset(&req, RMT_REQ_GET_TOPIC_CONFIG);
    rmt_cmd_set_ext(&req, "topic", "%DLQ%G_sb");
    rmt_cmd *tc = call(cl, br.addr, &req);
    ck_assert_int_eq(tc->code, 0);
    ck_assert_msg(memmem(tc->body, tc->body_len, "\"perm\":2", 8) != NULL, "DLQ topic config: %.*s",
                  (int)tc->body_len, (const char *)tc->body);
    rmt_cmd_free(tc);
    rmt_cmd_destroy(&req);
    struct pulled dlq = { 0 };
    ck_assert_int_eq(pull_once(cl, br.addr, "%DLQ%G_sb", "G_sb", 0, 0, "*", 0, &dlq), RMT_RESP_NO_PERMISSION);
    ck_assert_int_eq(create_topic(cl, br.addr, "%DLQ%G_sb", 1, 6, NULL), 0);
    code = RMT_RESP_PULL_NOT_FOUND;
    for (int i = 0; i < 100 && code != 0; i++) {
        code = pull_once(cl, br.addr, "%DLQ%G_sb", "G_sb", 0, 0, "*", 0, &dlq);
        if (code)
            usleep(10 * 1000);
    }
    ck_assert_int_eq(code, 0);
    ck_assert_int_eq(dlq.count, 1);
    rmt_client_free(cl);
    ev_loop_destroy(loop);
    d_finish(&br);
}
END_TEST

START_TEST(batch_send_unique_key_and_offset_admin)
{
    struct th_daemon br = { 0 };
    br_start(&br, NULL, NULL);
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    rmt_client *cl = new_client(loop);
    ck_assert_int_eq(create_topic(cl, br.addr, "Batch", 2, 6, NULL), 0);
    /* SEND_BATCH_MESSAGE: three messages in MessageDecoder.encodeMessages layout */
    uint8_t batch[2048];
    size_t blen = 0;
    for (int i = 0; i < 3; i++) {
        char props[128], key[16], body[32];
        snprintf(key, sizeof key, "key-%d", i);
        int bl = snprintf(body, sizeof body, "body-%d-batch", i);
        size_t pl = make_props(props, sizeof props, "TagA", key, NULL);
        int n = msg_batch_encode_one(batch + blen, sizeof batch - blen, 0, body, (uint32_t)bl, props,
                                     (uint32_t)pl);
        ck_assert_int_gt(n, 0);
        blen += (size_t)n;
    }
    rmt_cmd req;
    rmt_cmd_init(&req, 0);
    build_send(&req, "Batch", 1, "", batch, blen);
    req.code = RMT_REQ_SEND_BATCH_MESSAGE;
    rmt_cmd *resp = call(cl, br.addr, &req);
    ck_assert_int_eq(resp->code, 0);
    const char *ids = rmt_cmd_ext(resp, "msgId");
    ck_assert_ptr_nonnull(ids);
    int commas = 0;
    for (const char *c = ids; *c; c++)
        commas += *c == ',';
    ck_assert_int_eq(commas, 2);
    rmt_cmd_free(resp);
    wait_dispatched(cl, br.addr, "Batch", 2, 3);
    struct pulled got = { 0 };
    pull_all(cl, br.addr, "Batch", "G_batch", 1, "*", &got);
    ck_assert_int_eq(got.count, 3);

    /* QUERY_MESSAGE by unique id (_UNIQUE_KEY_QUERY) */
    char props[256];
    make_props(props, sizeof props, "TagU", "ukey", "0A0B0C0D00002A9F0000000000000001");
    build_send(&req, "Batch", 0, props, "uniq-body", 9);
    ck_assert_int_eq(call_code(cl, br.addr, &req, NULL, 0), 0);
    wait_dispatched(cl, br.addr, "Batch", 2, 4);
    rmt_cmd_reset(&req, RMT_REQ_QUERY_MESSAGE);
    rmt_cmd_set_ext(&req, "topic", "Batch");
    rmt_cmd_set_ext(&req, "key", "0A0B0C0D00002A9F0000000000000001");
    rmt_cmd_set_ext(&req, "maxNum", "1");
    rmt_cmd_set_ext(&req, "beginTimestamp", "0");
    rmt_cmd_set_ext(&req, "endTimestamp", "9999999999999");
    rmt_cmd_set_ext(&req, "_UNIQUE_KEY_QUERY", "true");
    resp = call(cl, br.addr, &req);
    ck_assert_int_eq(resp->code, 0);
    struct msg_record r;
    ck_assert_int_gt(msg_record_decode(resp->body, resp->body_len, &r, 1), 0);
    ck_assert(r.body_len == 9 && memcmp(r.body, "uniq-body", 9) == 0);
    rmt_cmd_free(resp);

    /* A pull with the commit flag commits the consumer's offset. */
    got = (struct pulled){ 0 };
    rmt_cmd_reset(&req, RMT_REQ_PULL_MESSAGE);
    rmt_cmd_set_ext(&req, "consumerGroup", "G_batch");
    rmt_cmd_set_ext(&req, "topic", "Batch");
    rmt_cmd_set_ext(&req, "queueId", "1");
    rmt_cmd_set_ext(&req, "queueOffset", "3");
    rmt_cmd_set_ext(&req, "maxMsgNums", "32");
    rmt_cmd_set_ext(&req, "sysFlag", "5");
    rmt_cmd_set_ext(&req, "commitOffset", "2");
    rmt_cmd_set_ext(&req, "subscription", "*");
    ck_assert_int_eq(call_code(cl, br.addr, &req, NULL, 0), RMT_RESP_PULL_NOT_FOUND);
    rmt_cmd_reset(&req, RMT_REQ_QUERY_CONSUMER_OFFSET);
    rmt_cmd_set_ext(&req, "consumerGroup", "G_batch");
    rmt_cmd_set_ext(&req, "topic", "Batch");
    rmt_cmd_set_ext(&req, "queueId", "1");
    resp = call(cl, br.addr, &req);
    ck_assert_int_eq(resp->code, 0);
    ck_assert_str_eq(rmt_cmd_ext(resp, "offset"), "2");
    rmt_cmd_free(resp);

    /* Stats and consume progress use RocketMQ's MessageQueue-keyed maps. */
    rmt_cmd_reset(&req, RMT_REQ_GET_TOPIC_STATS_INFO);
    rmt_cmd_set_ext(&req, "topic", "Batch");
    resp = call(cl, br.addr, &req);
    ck_assert_int_eq(resp->code, 0);
    ck_assert_ptr_nonnull(memmem(resp->body, resp->body_len, "\"queueId\":1,\"topic\":\"Batch\"}:{", strlen("\"queueId\":1,\"topic\":\"Batch\"}:{")));
    ck_assert_ptr_nonnull(memmem(resp->body, resp->body_len, "\"maxOffset\":3", strlen("\"maxOffset\":3")));
    rmt_cmd_free(resp);
    rmt_cmd_reset(&req, RMT_REQ_GET_CONSUME_STATS);
    rmt_cmd_set_ext(&req, "consumerGroup", "G_batch");
    resp = call(cl, br.addr, &req);
    ck_assert_int_eq(resp->code, 0);
    ck_assert_ptr_nonnull(memmem(resp->body, resp->body_len, "\"brokerOffset\":3,\"consumerOffset\":2", strlen("\"brokerOffset\":3,\"consumerOffset\":2")));
    rmt_cmd_free(resp);
    /* Reset by timestamp 0: back to the first offset of every queue. */
    rmt_cmd_reset(&req, RMT_REQ_INVOKE_BROKER_TO_RESET_OFFSET);
    rmt_cmd_set_ext(&req, "topic", "Batch");
    rmt_cmd_set_ext(&req, "group", "G_batch");
    rmt_cmd_set_ext(&req, "timestamp", "0");
    rmt_cmd_set_ext(&req, "isForce", "true");
    ck_assert_int_eq(call_code(cl, br.addr, &req, NULL, 0), 0);
    rmt_cmd_reset(&req, RMT_REQ_QUERY_CONSUMER_OFFSET);
    rmt_cmd_set_ext(&req, "consumerGroup", "G_batch");
    rmt_cmd_set_ext(&req, "topic", "Batch");
    rmt_cmd_set_ext(&req, "queueId", "1");
    resp = call(cl, br.addr, &req);
    ck_assert_int_eq(resp->code, 0);
    ck_assert_str_eq(rmt_cmd_ext(resp, "offset"), "0");
    rmt_cmd_free(resp);
    rmt_cmd_destroy(&req);
    rmt_client_free(cl);
    ev_loop_destroy(loop);
    d_finish(&br);
}
END_TEST

int main(void)
{
    log_set_level(LOG_LVL_ERROR);
    Suite *s = suite_create("broker");
    TCase *tc = tcase_create("daemon");
    tcase_set_timeout(tc, 90);
    tcase_add_test(tc, send_pull_10k_with_tags_and_keys);
    tcase_add_test(tc, long_polling_wakes_on_send);
    tcase_add_test(tc, offsets_survive_restart_and_kill);
    tcase_add_test(tc, auto_create_permissions_and_size);
    tcase_add_test(tc, garbage_frames_do_not_hurt);
    tcase_add_test(tc, sync_flush_kill9_loses_no_acked_message);
    tcase_add_test(tc, consumer_heartbeats_and_expiry);
    tcase_add_test(tc, admin_refused_outside_allow_list);
    tcase_add_test(tc, send_back_goes_through_delay_to_retry_and_dlq);
    tcase_add_test(tc, batch_send_unique_key_and_offset_admin);
    suite_add_tcase(s, tc);
    SRunner *r = srunner_create(s);
    srunner_run_all(r, CK_NORMAL);
    int failed = srunner_ntests_failed(r);
    srunner_free(r);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
