/* Broker HA integration tests: real nameserver and broker processes on
 * loopback, a master and a slave of one brokerName. Replication byte for
 * byte, SYNC_MASTER guarantees across master and slave kills, consumer
 * failover to the slave and back, slave catch-up, divergent-tail
 * truncation, a stalled (SIGSTOPped) slave standing in for a network
 * partition, and consumers steered to the slave (suggestWhichBrokerId).
 * Every daemon gets SIGKILL if a test process dies, and graceful stops
 * must exit 0. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "client.h"
#include "consumer.h"
#include "harness.h"
#include "log.h"
#include "message.h"
#include "remoting.h"

#define SEG_SIZE 67108864LL

static void ns_start(struct th_daemon *d)
{
    ck_assert_msg(th_ns_start(d, NULL), "nameserver did not start listening");
}

/* Starts a broker of brokerName "ha-a". With d->dir set (a restart) the
 * same directory and ports are used. extra: NULL-terminated key=value list. */
static void br_start(struct th_daemon *d, const char *ns_addr, const char *const *extra)
{
    if (!d->dir[0]) {
        char *dir = th_tmpdir();
        snprintf(d->dir, sizeof d->dir, "%s", dir);
        free(dir);
        d->port = th_free_port();
        d->ha_port = th_free_port();
        snprintf(d->addr, sizeof d->addr, "127.0.0.1:%d", d->port);
        snprintf(d->log, sizeof d->log, "%s/broker.log", d->dir);
    }
    char sets[4][600];
    snprintf(sets[0], sizeof sets[0], "listenPort=%d", d->port);
    snprintf(sets[1], sizeof sets[1], "storePathRootDir=%s/store", d->dir);
    snprintf(sets[2], sizeof sets[2], "namesrvAddr=%s", ns_addr ? ns_addr : "");
    snprintf(sets[3], sizeof sets[3], "haListenPort=%d", d->ha_port);
    char *argv[80];
    int n = 0;
    argv[n++] = (char *)th_bin("BROKER_BIN");
    for (int i = 0; i < 4; i++) {
        argv[n++] = "--set";
        argv[n++] = sets[i];
    }
    const char *fixed[] = { "brokerIP1=127.0.0.1", "bindAddress=127.0.0.1", "mapedFileSizeCommitLog=67108864",
                            "metadataMapSizeMB=64", "maxHashSlotNum=100000", "maxIndexNum=400000",
                            "brokerName=ha-a", "registerNameServerPeriod=1000", "slaveMetadataSyncInterval=500",
                            "flushConsumerOffsetInterval=200", "haSendHeartbeatInterval=500", NULL };
    for (int i = 0; fixed[i]; i++) {
        argv[n++] = "--set";
        argv[n++] = (char *)fixed[i];
    }
    for (int i = 0; extra && extra[i] && n < 76; i++) {
        argv[n++] = "--set";
        argv[n++] = (char *)extra[i];
    }
    argv[n] = NULL;
    d->pid = th_spawn(argv, d->log);
    ck_assert_msg(th_wait_port(d->port, 10000), "broker did not start listening, see %s", d->log);
}

/* Graceful stop that must exit 0; keeps the directory. */
static void d_stop(struct th_daemon *d)
{
    if (d->pid > 0) {
        int status = th_stop(d->pid, 15000);
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

static rmt_client *new_client(struct ev_loop *loop)
{
    struct rmt_client_opts co = { .reconnect_min_ms = 50, .reconnect_max_ms = 200 };
    return rmt_client_new(loop, &co);
}

static int call_try(rmt_client *cl, const char *addr, rmt_cmd *req, rmt_cmd **resp)
{
    return rmt_client_invoke_sync(cl, addr, req, 5000, resp);
}

static rmt_cmd *call(rmt_client *cl, const char *addr, rmt_cmd *req)
{
    rmt_cmd *resp = NULL;
    int rc = call_try(cl, addr, req, &resp);
    ck_assert_msg(rc == 0, "invoke %d on %s failed: %s", req->code, addr, strerror(-rc));
    return resp;
}

/* GET_BROKER_RUNTIME_INFO value of key into out ("" if absent / down). */
static void rt_get(rmt_client *cl, const char *addr, const char *key, char *out, size_t cap)
{
    out[0] = 0;
    rmt_cmd req;
    rmt_cmd_init(&req, RMT_REQ_GET_BROKER_RUNTIME_INFO);
    rmt_cmd *resp = NULL;
    int rc = call_try(cl, addr, &req, &resp);
    rmt_cmd_destroy(&req);
    if (rc)
        return;
    char pat[96];
    snprintf(pat, sizeof pat, "\"%s\":\"", key);
    char *body = strndup((const char *)resp->body, resp->body_len);
    rmt_cmd_free(resp);
    const char *p = body ? strstr(body, pat) : NULL;
    if (p) {
        p += strlen(pat);
        size_t n = strcspn(p, "\"");
        snprintf(out, cap, "%.*s", (int)(n < cap ? n : cap - 1), p);
    }
    free(body);
}

static long long rt_int(rmt_client *cl, const char *addr, const char *key)
{
    char v[128];
    rt_get(cl, addr, key, v, sizeof v);
    return v[0] ? atoll(v) : -1;
}

static void wait_slave_connected(rmt_client *cl, const char *master)
{
    for (int i = 0; i < 1000; i++) {
        if (rt_int(cl, master, "haSlaveCount") >= 1)
            return;
        usleep(10000);
    }
    ck_abort_msg("no slave connected to %s", master);
}

/* Waits until the slave's commitlog reaches the master's end. */
static long long wait_caught_up(rmt_client *cl, const char *master, const char *slave, int ms)
{
    long long m = -1, s = -2;
    for (long long end = th_now_ms() + ms; th_now_ms() < end;) {
        m = rt_int(cl, master, "commitLogMaxOffset");
        s = rt_int(cl, slave, "commitLogMaxOffset");
        if (m > 0 && m == s)
            return m;
        usleep(10000);
    }
    ck_abort_msg("slave %s did not catch up with %s (%lld vs %lld)", slave, master, s, m);
    return -1;
}

/* Creates topic with 4 read / 4 write queues, perm 6, on the broker at addr. */
static void create_topic(rmt_client *cl, const char *addr, const char *topic)
{
    rmt_cmd req;
    rmt_cmd_init(&req, RMT_REQ_UPDATE_AND_CREATE_TOPIC);
    rmt_cmd_set_ext(&req, "topic", topic);
    rmt_cmd_set_ext_int(&req, "readQueueNums", 4);
    rmt_cmd_set_ext_int(&req, "writeQueueNums", 4);
    rmt_cmd_set_ext_int(&req, "perm", 6);
    rmt_cmd *resp = call(cl, addr, &req);
    ck_assert_int_eq(resp->code, 0);
    rmt_cmd_free(resp);
    rmt_cmd_destroy(&req);
}

static size_t make_props(char *out, size_t cap, const char *key)
{
    size_t len = 0;
    msg_prop_append(out, cap, &len, MSG_PROP_KEYS, key, strlen(key));
    msg_prop_append(out, cap, &len, MSG_PROP_WAIT_STORE_MSG_OK, "true", 4);
    out[len] = 0;
    return len;
}

static void build_send(rmt_cmd *req, const char *topic, int qid, const char *props, const void *body, size_t n)
{
    rmt_cmd_reset(req, RMT_REQ_SEND_MESSAGE_V2);
    rmt_cmd_set_ext(req, "a", "PG_ha");
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

/* Pipelined sender: keeps `window` sends in flight; message i has body
 * "ha-<tag>-<i>-xxx..." and goes to queue i % 4. */
struct pipe;
struct slot {
    struct pipe *p;
    int idx;
};
struct pipe {
    struct ev_loop *loop;
    rmt_client *cl;
    const char *addr, *topic, *tag;
    int total, window, sent, done, acked, inflight, first;
    int *code;
    struct slot *slots;
    int act_after;           /* > 0: call act() once after that many acks */
    void (*act)(struct pipe *p);
    void *ud;
    bool acted, stop_on_act;
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
        if (p->act_after > 0 && p->acked >= p->act_after && !p->acted) {
            p->acted = true;
            p->act(p);
        }
    }
    pipe_fill(p);
}

static void pipe_fill(struct pipe *p)
{
    char props[128], key[32], body[4096];
    rmt_cmd req;
    rmt_cmd_init(&req, 0);
    while (p->inflight < p->window && p->sent < p->total && !(p->stop_on_act && p->acted)) {
        int i = p->sent++;
        snprintf(key, sizeof key, "k%d", p->first + i);
        int n = snprintf(body, sizeof body, "ha-%s-%d-", p->tag, p->first + i);
        for (; n < p->body_size && n < (int)sizeof body - 1; n++)
            body[n] = (char)('a' + (i + n) % 26);
        body[n] = 0;
        make_props(props, sizeof props, key);
        build_send(&req, p->topic, i % 4, props, body, (size_t)n);
        p->slots[i] = (struct slot){ p, i };
        if (rmt_client_invoke(p->cl, p->addr, &req, 15000, pipe_cb, &p->slots[i]) == 0) {
            p->inflight++;
        } else {
            p->code[i] = -1;
            p->done++;
        }
    }
    if (p->stop_on_act && p->acted)
        while (p->sent < p->total) {
            p->code[p->sent++] = -2;
            p->done++;
        }
    rmt_cmd_destroy(&req);
}

static void pipe_run(struct pipe *p)
{
    p->code = calloc((size_t)p->total, sizeof *p->code);
    p->slots = calloc((size_t)p->total, sizeof *p->slots);
    ck_assert(p->code && p->slots);
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

/* Index i of a body "ha-<tag>-<i>-..." with the given tag, or -1. */
static int body_index(const uint8_t *b, size_t len, const char *tag)
{
    char pre[32];
    int pl = snprintf(pre, sizeof pre, "ha-%s-", tag);
    if (len <= (size_t)pl || memcmp(b, pre, (size_t)pl) != 0)
        return -1;
    return atoi((const char *)b + pl);
}

/* Marks seen[i] for every message of tag in the commitlog files under dir
 * (read from disk, so it also works on a killed or stopped broker): each
 * segment up to its first position that is not a whole record. */
static void scan_commitlog(const char *dir, const char *tag, int *seen, int nseen)
{
    for (int seg = 0;; seg++) {
        char path[512];
        snprintf(path, sizeof path, "%s/store/commitlog/%020lld", dir, (long long)seg * SEG_SIZE);
        int fd = open(path, O_RDONLY);
        if (fd < 0)
            return;
        struct stat st;
        ck_assert(fstat(fd, &st) == 0);
        uint8_t *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        close(fd);
        ck_assert(m != MAP_FAILED);
        for (size_t pos = 0; pos + 8 <= (size_t)st.st_size;) {
            struct msg_record r;
            int n = msg_record_decode(m + pos, (size_t)st.st_size - pos, &r, 1);
            if (n <= 0)
                break;
            int idx = body_index(r.body, r.body_len, tag);
            if (idx >= 0 && idx < nseen)
                seen[idx]++;
            pos += (size_t)n;
        }
        munmap(m, (size_t)st.st_size);
    }
}

/* Compares the commitlogs of two store directories over [0, len). */
static void assert_same_log(const char *a, const char *b, long long len)
{
    for (long long base = 0; base < len; base += SEG_SIZE) {
        char pa[512], pb[512];
        snprintf(pa, sizeof pa, "%s/store/commitlog/%020lld", a, base);
        snprintf(pb, sizeof pb, "%s/store/commitlog/%020lld", b, base);
        FILE *fa = fopen(pa, "rb"), *fb = fopen(pb, "rb");
        ck_assert_msg(fa && fb, "missing segment %lld (%s / %s)", base, pa, pb);
        long long n = len - base < SEG_SIZE ? len - base : SEG_SIZE;
        static char ba[1 << 16], bb[1 << 16];
        for (long long done = 0; done < n;) {
            size_t want = (size_t)(n - done < (long long)sizeof ba ? n - done : (long long)sizeof ba);
            ck_assert_uint_eq(fread(ba, 1, want, fa), want);
            ck_assert_uint_eq(fread(bb, 1, want, fb), want);
            ck_assert_msg(memcmp(ba, bb, want) == 0, "commitlogs differ in [%lld, %lld)", base + done,
                          base + done + (long long)want);
            done += (long long)want;
        }
        fclose(fa);
        fclose(fb);
    }
}

static void start_pair(struct th_daemon *ns, struct th_daemon *m, struct th_daemon *s, const char *role,
                       const char *flush, const char *sync_timeout)
{
    if (ns)
        ns_start(ns);
    const char *mx[] = { role, flush, sync_timeout, "brokerId=0", NULL };
    br_start(m, ns ? ns->addr : NULL, mx);
    static char ha[96];
    snprintf(ha, sizeof ha, "haMasterAddress=%s", ns ? "" : "127.0.0.1:0");
    if (!ns)
        snprintf(ha, sizeof ha, "haMasterAddress=127.0.0.1:%d", m->ha_port);
    /* The slaves of these tests serve reads (failover, checks of what
     * they hold); without slaveReadEnable a slave refuses pulls. */
    const char *sx[] = { "brokerRole=SLAVE", "brokerId=1", "slaveReadEnable=true", ha, NULL };
    br_start(s, ns ? ns->addr : NULL, sx);
}

START_TEST(replication_100k_byte_identical)
{
    struct th_daemon m = { 0 }, s = { 0 };
    start_pair(NULL, &m, &s, "brokerRole=SYNC_MASTER", "flushDiskType=ASYNC_FLUSH", "syncSlaveTimeout=5000");
    struct ev_loop *loop = ev_loop_new(0);
    rmt_client *cl = new_client(loop);
    wait_slave_connected(cl, m.addr);
    struct pipe p = { .loop = loop, .cl = cl, .addr = m.addr, .topic = "HaRepl", .tag = "r", .total = 100000,
                      .window = 512, .body_size = 200 };
    long long t0 = th_now_ms();
    pipe_run(&p);
    long long ms = th_now_ms() - t0;
    int bad = 0;
    for (int i = 0; i < p.total; i++)
        if (p.code[i] != 0 && bad++ < 5)
            fprintf(stderr, "send %d answered %d\n", i, p.code[i]);
    ck_assert_msg(bad == 0, "%d of %d SYNC_MASTER sends were not SEND_OK", bad, p.total);
    long long max = wait_caught_up(cl, m.addr, s.addr, 10000);
    printf("replication: 100000 x 200 B SYNC_MASTER sends in %lld ms, commitlog %lld bytes\n", ms, max);
    /* The slave serves reads of what it replicated. */
    char v[64];
    rt_get(cl, s.addr, "brokerRole", v, sizeof v);
    ck_assert_str_eq(v, "SLAVE");
    rmt_client_free(cl);
    ev_loop_destroy(loop);
    d_stop(&m);
    d_stop(&s);
    assert_same_log(m.dir, s.dir, max);
    pipe_free(&p);
    th_rmtree(m.dir);
    th_rmtree(s.dir);
}
END_TEST

static int64_t query_offset(rmt_client *cl, const char *addr, int q)
{
    rmt_cmd req, *resp = NULL;
    rmt_cmd_init(&req, RMT_REQ_QUERY_CONSUMER_OFFSET);
    rmt_cmd_set_ext(&req, "consumerGroup", "CG_ha");
    rmt_cmd_set_ext(&req, "topic", "HaFail");
    rmt_cmd_set_ext_int(&req, "queueId", q);
    int64_t off = -1;
    if (call_try(cl, addr, &req, &resp) == 0) {
        if (resp->code == 0)
            rmt_cmd_ext_int(resp, "offset", &off);
        rmt_cmd_free(resp);
    }
    rmt_cmd_destroy(&req);
    return off;
}

static void kill_victim(struct pipe *p)
{
    th_kill(*(pid_t *)p->ud);
    *(pid_t *)p->ud = 0;
}

/* Consumer bookkeeping for the failover test. */
struct cons {
    int *seen;
    int n;
    int dups;
    int total;
    int64_t qmax[4];         /* highest queue offset delivered per queue */
    int64_t floor[4];        /* phase 3: no delivery below this */
    bool check_floor;
    int below_floor;
    int limit;               /* > 0: refuse batches once this many were taken */
};

static int on_msgs(cli_consumer *cs, const struct cli_msg_view *v, int n, void *ud)
{
    struct cons *c = ud;
    if (c->limit > 0 && c->total >= c->limit)
        return 1; /* not now: the consumer falls behind the producer */
    for (int i = 0; i < n; i++) {
        c->total++;
        int q = v[i].queue_id & 3;
        if (c->check_floor && v[i].queue_offset < c->floor[q])
            c->below_floor++;
        if (v[i].queue_offset > c->qmax[q])
            c->qmax[q] = v[i].queue_offset;
        int idx = body_index(v[i].body, v[i].body_len, "f");
        if (idx < 0 || idx >= c->n)
            continue;
        if (c->seen[idx]++)
            c->dups++;
    }
    return 0;
}

static void run_ms(struct ev_loop *loop, int ms)
{
    long long end = th_now_ms() + ms;
    while (th_now_ms() < end) {
        ev_run(loop, EVRUN_NOWAIT);
        usleep(2000);
    }
}

static bool all_seen(const struct pipe *p, const struct cons *c, int *missing)
{
    int miss = 0;
    for (int i = 0; i < p->total; i++)
        if (p->code[i] == 0 && !c->seen[p->first + i])
            miss++;
    *missing = miss;
    return miss == 0;
}

START_TEST(master_kill9_failover_and_return)
{
    struct th_daemon ns = { 0 }, m = { 0 }, s = { 0 };
    start_pair(&ns, &m, &s, "brokerRole=SYNC_MASTER", "flushDiskType=SYNC_FLUSH", "syncSlaveTimeout=3000");
    struct ev_loop *loop = ev_loop_new(0);
    rmt_client *cl = new_client(loop);
    wait_slave_connected(cl, m.addr);
    create_topic(cl, m.addr, "HaFail");
    rmt_cmd req;
    rmt_cmd *resp;

    enum { N1 = 20000, N3 = 5000 };
    struct cons c = { .n = N1 + N3, .limit = N1 / 4 };
    c.seen = calloc((size_t)c.n, sizeof *c.seen);
    for (int q = 0; q < 4; q++)
        c.qmax[q] = -1;
    struct cli_opts co = { .namesrv_addr = ns.addr, .instance_name = "ha-test", .client_ip = "127.0.0.1",
                           .timeout_ms = 2000, .route_refresh_ms = 500 };
    int err = 0;
    cli_client *cc = cli_client_new(loop, &co, &err);
    ck_assert_msg(cc, "client: %d", err);
    struct cli_consumer_opts o = { .group = "CG_ha", .topic = "HaFail", .from = CLI_FROM_FIRST_OFFSET,
                                   .suspend_ms = 1000, .rebalance_ms = 1000, .heartbeat_ms = 1000,
                                   .commit_ms = 300, .pull_retry_ms = 100, .on_messages = on_msgs, .ud = &c };
    cli_consumer *cs = cli_consumer_new(cc, &o, &err);
    ck_assert_msg(cs, "consumer: %d", err);
    /* Wait until the route lists the topic (the master registered it). */
    run_ms(loop, 1500);
    ck_assert_int_eq(cli_consumer_start(cs), 0);

    pid_t victim = m.pid;
    struct pipe p = { .loop = loop, .cl = cl, .addr = m.addr, .topic = "HaFail", .tag = "f", .total = N1,
                      .window = 64, .body_size = 300, .act_after = N1 / 2, .act = kill_victim, .ud = &victim };
    pipe_run(&p);
    m.pid = 0;
    int taken_from_master = c.total;
    c.limit = 0;
    int acked = p.acked, refused = 0;
    for (int i = 0; i < N1; i++)
        if (p.code[i] != 0)
            refused++;
    /* Every acknowledged message is in the slave's log. */
    int missing = 0;
    long long t0 = th_now_ms();
    while (!all_seen(&p, &c, &missing) && th_now_ms() - t0 < 20000)
        run_ms(loop, 50);
    printf("master kill -9: %d acked, %d not acked; consumer had %d from the master, then got %d more "
           "(dups %d) from the slave, missing %d after %lld ms\n",
           acked, refused, taken_from_master, c.total - taken_from_master, c.dups, missing, th_now_ms() - t0);
    ck_assert_int_lt(taken_from_master, acked);
    ck_assert_msg(missing == 0, "%d acknowledged messages never reached the consumer after failover", missing);
    {
        int *on_slave = calloc(N1, sizeof *on_slave);
        rmt_cmd_init(&req, 0);
        for (int q = 0; q < 4; q++) {
            int64_t off = 0;
            for (;;) {
                rmt_cmd_reset(&req, RMT_REQ_PULL_MESSAGE);
                rmt_cmd_set_ext(&req, "consumerGroup", "CG_check");
                rmt_cmd_set_ext(&req, "topic", "HaFail");
                rmt_cmd_set_ext_int(&req, "queueId", q);
                rmt_cmd_set_ext_int(&req, "queueOffset", off);
                rmt_cmd_set_ext_int(&req, "maxMsgNums", 32);
                rmt_cmd_set_ext_int(&req, "sysFlag", 4);
                rmt_cmd_set_ext_int(&req, "commitOffset", 0);
                rmt_cmd_set_ext_int(&req, "suspendTimeoutMillis", 0);
                rmt_cmd_set_ext(&req, "subscription", "*");
                rmt_cmd_set_ext_int(&req, "subVersion", 0);
                resp = call(cl, s.addr, &req);
                int code = resp->code;
                int64_t next = -1;
                rmt_cmd_ext_int(resp, "nextBeginOffset", &next);
                for (size_t pos = 0; code == 0 && pos < resp->body_len;) {
                    struct msg_record r;
                    int n = msg_record_decode(resp->body + pos, resp->body_len - pos, &r, 1);
                    ck_assert(n > 0);
                    pos += (size_t)n;
                    int idx = body_index(r.body, r.body_len, "f");
                    if (idx >= 0 && idx < N1)
                        on_slave[idx]++;
                }
                rmt_cmd_free(resp);
                if (code != 0 || next <= off)
                    break;
                off = next;
            }
        }
        rmt_cmd_destroy(&req);
        int lost = 0;
        for (int i = 0; i < N1; i++)
            if (p.code[i] == 0 && !on_slave[i])
                lost++;
        free(on_slave);
        ck_assert_msg(lost == 0, "%d acknowledged messages are not on the slave", lost);
    }

    /* The consumer stops, committing its offsets to the slave. The master
     * returns: the slave follows it again and hands those offsets back, and
     * a new consumer of the group continues from them on the master. */
    ck_assert_int_eq(cli_consumer_shutdown(cs, 5000), 0);
    cli_consumer_free(cs);
    int64_t slave_off[4], master_off[4];
    for (int q = 0; q < 4; q++) {
        slave_off[q] = query_offset(cl, s.addr, q);
        ck_assert_msg(slave_off[q] == c.qmax[q] + 1, "queue %d: slave offset %lld, consumed up to %lld", q,
                      (long long)slave_off[q], (long long)c.qmax[q]);
        c.floor[q] = slave_off[q];
    }
    c.check_floor = true;
    const char *mx[] = { "brokerRole=SYNC_MASTER", "flushDiskType=SYNC_FLUSH", "syncSlaveTimeout=3000",
                         "brokerId=0", NULL };
    br_start(&m, ns.addr, mx);
    wait_slave_connected(cl, m.addr);
    bool back = false;
    for (long long end = th_now_ms() + 10000; th_now_ms() < end && !back;) {
        usleep(100000);
        back = true;
        for (int q = 0; q < 4; q++)
            if ((master_off[q] = query_offset(cl, m.addr, q)) < slave_off[q])
                back = false;
    }
    ck_assert_msg(back, "offsets committed on the slave did not flow back to the master (queue 0: %lld < %lld)",
                  (long long)master_off[0], (long long)slave_off[0]);
    cs = cli_consumer_new(cc, &o, &err);
    ck_assert_msg(cs, "consumer: %d", err);
    ck_assert_int_eq(cli_consumer_start(cs), 0);
    int before = c.total, dups_before = c.dups;
    struct pipe p3 = { .loop = loop, .cl = cl, .addr = m.addr, .topic = "HaFail", .tag = "f", .total = N3,
                       .window = 64, .body_size = 300, .first = N1 };
    pipe_run(&p3);
    for (int i = 0; i < N3; i++)
        ck_assert_msg(p3.code[i] == 0, "send %d to the returned master answered %d", i, p3.code[i]);
    t0 = th_now_ms();
    while (!all_seen(&p3, &c, &missing) && th_now_ms() - t0 < 20000)
        run_ms(loop, 50);
    printf("master back: offsets flowed back (queue 0: %lld on the master, %lld on the slave); %d new sends, "
           "new consumer got %d (dups %d), %d below the committed offsets, missing %d\n",
           (long long)master_off[0], (long long)slave_off[0], N3, c.total - before, c.dups - dups_before,
           c.below_floor, missing);
    ck_assert_msg(missing == 0, "%d messages sent after the master returned were not consumed", missing);
    ck_assert_msg(c.below_floor == 0, "%d messages below the consumer's position were delivered again",
                  c.below_floor);
    cli_consumer_shutdown(cs, 3000);
    cli_consumer_free(cs);
    cli_client_free(cc);
    rmt_client_free(cl);
    ev_loop_destroy(loop);
    pipe_free(&p);
    pipe_free(&p3);
    free(c.seen);
    d_finish(&m);
    d_finish(&s);
    d_finish(&ns);
}
END_TEST

START_TEST(slave_kill9_no_false_ack_then_catch_up)
{
    struct th_daemon m = { 0 }, s = { 0 };
    start_pair(NULL, &m, &s, "brokerRole=SYNC_MASTER", "flushDiskType=ASYNC_FLUSH", "syncSlaveTimeout=1000");
    struct ev_loop *loop = ev_loop_new(0);
    rmt_client *cl = new_client(loop);
    wait_slave_connected(cl, m.addr);
    enum { N = 20000 };
    pid_t victim = s.pid;
    struct pipe p = { .loop = loop, .cl = cl, .addr = m.addr, .topic = "HaSlaveKill", .tag = "s", .total = N,
                      .window = 64, .body_size = 300, .act_after = 5000, .act = kill_victim, .ud = &victim };
    pipe_run(&p);
    s.pid = 0;
    int ok = 0, slave_na = 0, slave_to = 0, other = 0;
    for (int i = 0; i < N; i++) {
        if (p.code[i] == 0)
            ok++;
        else if (p.code[i] == RMT_RESP_SLAVE_NOT_AVAILABLE)
            slave_na++;
        else if (p.code[i] == RMT_RESP_FLUSH_SLAVE_TIMEOUT)
            slave_to++;
        else
            other++;
    }
    /* Every SEND_OK is in the killed slave's files. */
    int *seen = calloc(N, sizeof *seen);
    scan_commitlog(s.dir, "s", seen, N);
    int not_on_slave = 0;
    for (int i = 0; i < N; i++)
        if (p.code[i] == 0 && !seen[i])
            not_on_slave++;
    printf("slave kill -9: %d SEND_OK, %d SLAVE_NOT_AVAILABLE, %d FLUSH_SLAVE_TIMEOUT, %d other; "
           "SEND_OK missing on the slave: %d\n", ok, slave_na, slave_to, other, not_on_slave);
    ck_assert_int_eq(not_on_slave, 0);
    ck_assert_int_eq(other, 0);
    ck_assert_int_gt(slave_na + slave_to, 0);
    /* Restarted, the slave catches up and SYNC sends succeed again. */
    const char *sx[] = { "brokerRole=SLAVE", "brokerId=1", NULL };
    char ha[96];
    snprintf(ha, sizeof ha, "haMasterAddress=127.0.0.1:%d", m.ha_port);
    const char *sx2[] = { sx[0], sx[1], ha, NULL };
    br_start(&s, NULL, sx2);
    wait_slave_connected(cl, m.addr);
    long long max = wait_caught_up(cl, m.addr, s.addr, 15000);
    struct pipe p2 = { .loop = loop, .cl = cl, .addr = m.addr, .topic = "HaSlaveKill", .tag = "t", .total = 1000,
                       .window = 32, .body_size = 100 };
    pipe_run(&p2);
    for (int i = 0; i < p2.total; i++)
        ck_assert_msg(p2.code[i] == 0, "send %d after the slave's restart answered %d", i, p2.code[i]);
    max = wait_caught_up(cl, m.addr, s.addr, 10000);
    rmt_client_free(cl);
    ev_loop_destroy(loop);
    d_stop(&m);
    d_stop(&s);
    assert_same_log(m.dir, s.dir, max);
    free(seen);
    pipe_free(&p);
    pipe_free(&p2);
    th_rmtree(m.dir);
    th_rmtree(s.dir);
}
END_TEST

START_TEST(divergent_slave_truncates)
{
    struct th_daemon x = { 0 }, m = { 0 };
    struct ev_loop *loop = ev_loop_new(0);
    rmt_client *cl = new_client(loop);
    /* x: a master on its own with a longer history. */
    const char *alone[] = { "brokerRole=ASYNC_MASTER", NULL };
    br_start(&x, NULL, alone);
    struct pipe px = { .loop = loop, .cl = cl, .addr = x.addr, .topic = "HaDiv", .tag = "x", .total = 3000,
                       .window = 32, .body_size = 500 };
    pipe_run(&px);
    long long x_end = rt_int(cl, x.addr, "commitLogMaxOffset");
    d_stop(&x);
    /* m: another master with a different, shorter history. */
    br_start(&m, NULL, alone);
    struct pipe pm = { .loop = loop, .cl = cl, .addr = m.addr, .topic = "HaDiv", .tag = "m", .total = 1000,
                       .window = 32, .body_size = 300 };
    pipe_run(&pm);
    long long m_end = rt_int(cl, m.addr, "commitLogMaxOffset");
    ck_assert_int_gt(x_end, m_end);
    /* x follows m: it must cut its tail and copy m's log. */
    char ha[96];
    snprintf(ha, sizeof ha, "haMasterAddress=127.0.0.1:%d", m.ha_port);
    const char *sx[] = { "brokerRole=SLAVE", "brokerId=1", ha, NULL };
    br_start(&x, NULL, sx);
    long long max = wait_caught_up(cl, m.addr, x.addr, 15000);
    ck_assert_int_eq(max, m_end);
    ck_assert_msg(th_file_contains(x.log, "slave log diverges from master"), "no truncation logged in %s", x.log);
    ck_assert_int_ge(rt_int(cl, x.addr, "haTruncations"), 1);
    printf("divergence: slave log %lld bytes cut to the master's %lld\n", x_end, m_end);
    rmt_client_free(cl);
    ev_loop_destroy(loop);
    d_stop(&m);
    d_stop(&x);
    assert_same_log(m.dir, x.dir, max);
    pipe_free(&px);
    pipe_free(&pm);
    th_rmtree(m.dir);
    th_rmtree(x.dir);
}
END_TEST

static void stop_victim(struct pipe *p)
{
    kill(*(pid_t *)p->ud, SIGSTOP);
}

START_TEST(stalled_slave_partition)
{
    struct th_daemon m = { 0 }, s = { 0 };
    start_pair(NULL, &m, &s, "brokerRole=SYNC_MASTER", "flushDiskType=ASYNC_FLUSH", "syncSlaveTimeout=1000");
    struct ev_loop *loop = ev_loop_new(0);
    rmt_client *cl = new_client(loop);
    wait_slave_connected(cl, m.addr);
    /* The slave stops answering in the middle of a stream of sends. */
    struct pipe p = { .loop = loop, .cl = cl, .addr = m.addr, .topic = "HaPart", .tag = "p", .total = 6000,
                      .window = 32, .body_size = 200, .act_after = 2000, .act = stop_victim, .ud = &s.pid };
    pipe_run(&p);
    int ok = 0, refused = 0, other = 0;
    for (int i = 0; i < p.total; i++) {
        if (p.code[i] == 0)
            ok++;
        else if (p.code[i] == RMT_RESP_SLAVE_NOT_AVAILABLE || p.code[i] == RMT_RESP_FLUSH_SLAVE_TIMEOUT)
            refused++;
        else
            other++;
    }
    int *seen = calloc((size_t)p.total, sizeof *seen);
    scan_commitlog(s.dir, "p", seen, p.total);
    int not_on_slave = 0;
    for (int i = 0; i < p.total; i++)
        if (p.code[i] == 0 && !seen[i])
            not_on_slave++;
    printf("stalled slave: %d SEND_OK, %d refused (slave timeout / not available), %d other, "
           "SEND_OK missing on the slave: %d\n", ok, refused, other, not_on_slave);
    ck_assert_int_eq(not_on_slave, 0);
    ck_assert_int_eq(other, 0);
    ck_assert_int_gt(refused, 0);
    /* The partition heals: the slave catches up, SYNC sends succeed again. */
    kill(s.pid, SIGCONT);
    wait_slave_connected(cl, m.addr);
    wait_caught_up(cl, m.addr, s.addr, 15000);
    int good = 0;
    for (int attempt = 0; attempt < 50 && good == 0; attempt++) {
        struct pipe p2 = { .loop = loop, .cl = cl, .addr = m.addr, .topic = "HaPart", .tag = "q", .total = 200,
                           .window = 16, .body_size = 100 };
        pipe_run(&p2);
        good = p2.acked == p2.total;
        pipe_free(&p2);
        if (!good)
            usleep(200000);
    }
    ck_assert_msg(good, "SYNC sends did not recover after the slave resumed");
    long long max = wait_caught_up(cl, m.addr, s.addr, 10000);
    rmt_client_free(cl);
    ev_loop_destroy(loop);
    d_stop(&m);
    d_stop(&s);
    assert_same_log(m.dir, s.dir, max);
    free(seen);
    pipe_free(&p);
    th_rmtree(m.dir);
    th_rmtree(s.dir);
}
END_TEST

/* Messages of a queue from offset 0 (no subscription needed); returns the
 * count and the first body in first (if any). */
static int pull_count(rmt_client *cl, const char *addr, const char *topic, int qid, char *first, size_t cap)
{
    rmt_cmd req;
    rmt_cmd_init(&req, RMT_REQ_PULL_MESSAGE);
    rmt_cmd_set_ext(&req, "consumerGroup", "CG_timer");
    rmt_cmd_set_ext(&req, "topic", topic);
    rmt_cmd_set_ext_int(&req, "queueId", qid);
    rmt_cmd_set_ext_int(&req, "queueOffset", 0);
    rmt_cmd_set_ext_int(&req, "maxMsgNums", 32);
    rmt_cmd_set_ext_int(&req, "sysFlag", 4);
    rmt_cmd_set_ext_int(&req, "commitOffset", 0);
    rmt_cmd_set_ext_int(&req, "suspendTimeoutMillis", 0);
    rmt_cmd_set_ext(&req, "subscription", "*");
    rmt_cmd_set_ext_int(&req, "subVersion", 0);
    rmt_cmd *resp = call(cl, addr, &req);
    rmt_cmd_destroy(&req);
    int n = 0;
    for (size_t pos = 0; resp->code == 0 && pos < resp->body_len;) {
        struct msg_record r;
        int k = msg_record_decode(resp->body + pos, resp->body_len - pos, &r, 1);
        ck_assert(k > 0);
        if (n++ == 0 && first)
            snprintf(first, cap, "%.*s", (int)r.body_len, (const char *)r.body);
        pos += (size_t)k;
    }
    rmt_cmd_free(resp);
    return n;
}

/* A timer message sent to a SYNC_MASTER is acknowledged once on both
 * brokers, delivered by the master's wheel (not before its time) and the
 * delivery replicates to the slave; timer properties inside a batch are
 * refused; the runtime info reports the wheel. */
START_TEST(timer_message_on_master_slave_pair)
{
    struct th_daemon ns = { 0 }, m = { 0 }, s = { 0 };
    start_pair(&ns, &m, &s, "brokerRole=SYNC_MASTER", "flushDiskType=ASYNC_FLUSH", "timerPrecisionMs=100");
    struct ev_loop *loop = ev_loop_new(0);
    rmt_client *cl = new_client(loop);
    wait_slave_connected(cl, m.addr);
    char props[256];
    size_t len = 0;
    msg_prop_append(props, sizeof props, &len, MSG_PROP_TIMER_DELAY_MS, "1500", 4);
    msg_prop_append(props, sizeof props, &len, MSG_PROP_WAIT_STORE_MSG_OK, "true", 4);
    props[len] = 0;
    rmt_cmd req;
    rmt_cmd_init(&req, 0);
    build_send(&req, "HaTimer", 0, props, "timer-body", 10);
    long long t0 = th_now_ms();
    rmt_cmd *resp = call(cl, m.addr, &req);
    ck_assert_msg(resp->code == 0, "timer send answered %d %s", resp->code,
                  rmt_cmd_remark(resp) ? rmt_cmd_remark(resp) : "");
    rmt_cmd_free(resp);
    ck_assert_int_eq(pull_count(cl, m.addr, "HaTimer", 0, NULL, 0), 0);
    char body[64] = "";
    int got = 0;
    while (th_now_ms() - t0 < 10000 && (got = pull_count(cl, m.addr, "HaTimer", 0, body, sizeof body)) == 0)
        usleep(50000);
    long long ms = th_now_ms() - t0;
    ck_assert_int_eq(got, 1);
    ck_assert_str_eq(body, "timer-body");
    ck_assert_msg(ms >= 1400, "delivered after %lld ms, before its time", ms);
    wait_caught_up(cl, m.addr, s.addr, 10000);
    for (int i = 0; i < 200 && pull_count(cl, s.addr, "HaTimer", 0, NULL, 0) == 0; i++)
        usleep(20000);
    ck_assert_int_eq(pull_count(cl, s.addr, "HaTimer", 0, NULL, 0), 1);
    ck_assert_int_ge(rt_int(cl, m.addr, "timerDelivered"), 1);
    /* Batches cannot carry timer messages. */
    uint8_t batch[512];
    int bl = msg_batch_encode_one(batch, sizeof batch, 0, "b1", 2, props, (uint32_t)len);
    ck_assert_int_gt(bl, 0);
    build_send(&req, "HaTimer", 0, "", batch, (size_t)bl);
    req.code = RMT_REQ_SEND_BATCH_MESSAGE;
    resp = call(cl, m.addr, &req);
    ck_assert_int_eq(resp->code, RMT_RESP_MESSAGE_ILLEGAL);
    rmt_cmd_free(resp);
    rmt_cmd_destroy(&req);
    printf("timer: a 1500 ms timer message delivered after %lld ms, replicated to the slave\n", ms);
    rmt_client_free(cl);
    ev_loop_destroy(loop);
    d_finish(&m);
    d_finish(&s);
    d_finish(&ns);
}
END_TEST

/* Sends one timer message (TIMER_DELAY_MS) to topic/queue 0, waiting for
 * the slave's acknowledgement on a SYNC_MASTER. */
static void send_timer_msg(rmt_client *cl, const char *addr, const char *topic, const char *delay_ms,
                           const char *body)
{
    char props[256];
    size_t len = 0;
    msg_prop_append(props, sizeof props, &len, MSG_PROP_TIMER_DELAY_MS, delay_ms, strlen(delay_ms));
    msg_prop_append(props, sizeof props, &len, MSG_PROP_WAIT_STORE_MSG_OK, "true", 4);
    props[len] = 0;
    rmt_cmd req;
    rmt_cmd_init(&req, 0);
    build_send(&req, topic, 0, props, body, strlen(body));
    rmt_cmd *resp = call(cl, addr, &req);
    ck_assert_msg(resp->code == 0, "timer send answered %d %s", resp->code,
                  rmt_cmd_remark(resp) ? rmt_cmd_remark(resp) : "");
    rmt_cmd_free(resp);
    rmt_cmd_destroy(&req);
}

/* The slave's timer follows the master's (GET_TIMER_CHECK_POINT): it links
 * the pending message without delivering anything, drops what the master
 * delivered, and once promoted (the master killed, the slave restarted as
 * master on its own data) delivers the pending message on time and does
 * not deliver the already delivered one again. */
START_TEST(timer_follows_master_and_survives_promotion)
{
    struct th_daemon ns = { 0 }, m = { 0 }, s = { 0 };
    start_pair(&ns, &m, &s, "brokerRole=SYNC_MASTER", "flushDiskType=ASYNC_FLUSH", "timerPrecisionMs=100");
    struct ev_loop *loop = ev_loop_new(0);
    rmt_client *cl = new_client(loop);
    wait_slave_connected(cl, m.addr);
    send_timer_msg(cl, m.addr, "HaPromo", "1000", "early");
    long long t0 = th_now_ms();
    for (int i = 0; i < 500 && pull_count(cl, m.addr, "HaPromo", 0, NULL, 0) == 0; i++)
        usleep(20000);
    ck_assert_int_eq(pull_count(cl, m.addr, "HaPromo", 0, NULL, 0), 1);
    send_timer_msg(cl, m.addr, "HaPromo", "7000", "late");
    long long due = th_now_ms() + 7000;
    /* the follower has linked "late" and dropped "early" (delivered by the
     * master), and delivered nothing itself */
    /* both read (the slave's dispatch may trail the replicated log), and
     * only "late" pending */
    long long pend = -1, read = -1, deq = -1;
    for (int i = 0; i < 500; i++) {
        pend = rt_int(cl, s.addr, "timerPending");
        read = rt_int(cl, s.addr, "timerEnqueueOffset");
        deq = rt_int(cl, s.addr, "timerDequeueMs");
        if (pend == 1 && read == 2 && deq > t0 + 1500) /* past "early"'s slot */
            break;
        usleep(20000);
    }
    ck_assert_msg(pend == 1 && read == 2 && deq > t0 + 1500,
                  "the slave's timer: %lld pending (want 1), read up to %lld (want 2), position %lld (want > %lld)",
                  pend, read, deq, t0 + 1500);
    ck_assert_int_eq(rt_int(cl, s.addr, "timerDelivered"), 0);
    th_kill(m.pid);
    m.pid = 0;
    d_stop(&s);
    const char *promo[] = { "brokerRole=ASYNC_MASTER", "brokerId=0", "timerPrecisionMs=100", NULL };
    br_start(&s, ns.addr, promo);
    rmt_client_free(cl); /* its connection went with the old process */
    cl = new_client(loop);
    usleep(1500 * 1000);
    ck_assert_msg(th_now_ms() < due - 500, "too slow to check before the due time");
    ck_assert_int_eq(pull_count(cl, s.addr, "HaPromo", 0, NULL, 0), 1); /* "early" once, "late" not yet */
    int got = 1;
    while (th_now_ms() < due + 5000 && (got = pull_count(cl, s.addr, "HaPromo", 0, NULL, 0)) < 2)
        usleep(50000);
    ck_assert_msg(got == 2, "the promoted broker holds %d messages of the timer topic (want 2)", got);
    long long late_ms = th_now_ms() - due;
    usleep(500 * 1000);
    ck_assert_int_eq(pull_count(cl, s.addr, "HaPromo", 0, NULL, 0), 2);
    printf("timer: promoted slave delivered the pending message %lld ms after its due time (t0 + %lld ms)\n",
           late_ms, th_now_ms() - t0);
    rmt_client_free(cl);
    ev_loop_destroy(loop);
    th_rmtree(m.dir);
    d_finish(&s);
    d_finish(&ns);
}
END_TEST

/* One PULL_MESSAGE of queue 0 at off: the code, suggestWhichBrokerId,
 * nextBeginOffset and the message count. */
static int pull_raw(rmt_client *cl, const char *addr, int64_t off, int *code, int64_t *suggest, int64_t *next)
{
    rmt_cmd req;
    rmt_cmd_init(&req, RMT_REQ_PULL_MESSAGE);
    rmt_cmd_set_ext(&req, "consumerGroup", "CG_sr_raw");
    rmt_cmd_set_ext(&req, "topic", "HaSugg");
    rmt_cmd_set_ext_int(&req, "queueId", 0);
    rmt_cmd_set_ext_int(&req, "queueOffset", off);
    rmt_cmd_set_ext_int(&req, "maxMsgNums", 8);
    rmt_cmd_set_ext_int(&req, "sysFlag", 4);
    rmt_cmd_set_ext_int(&req, "commitOffset", 0);
    rmt_cmd_set_ext_int(&req, "suspendTimeoutMillis", 0);
    rmt_cmd_set_ext(&req, "subscription", "*");
    rmt_cmd_set_ext_int(&req, "subVersion", 0);
    rmt_cmd *resp = call(cl, addr, &req);
    /* A slave knows the topic once its metadata copy ran. */
    for (int i = 0; i < 100 && resp->code == RMT_RESP_TOPIC_NOT_EXIST; i++) {
        rmt_cmd_free(resp);
        usleep(50000);
        resp = call(cl, addr, &req);
    }
    rmt_cmd_destroy(&req);
    *code = resp->code;
    *suggest = *next = -1;
    rmt_cmd_ext_int(resp, "suggestWhichBrokerId", suggest);
    rmt_cmd_ext_int(resp, "nextBeginOffset", next);
    int n = 0;
    for (size_t pos = 0; resp->code == 0 && pos < resp->body_len; n++) {
        struct msg_record r;
        int k = msg_record_decode(resp->body + pos, resp->body_len - pos, &r, 1);
        ck_assert(k > 0);
        pos += (size_t)k;
    }
    rmt_cmd_free(resp);
    return n;
}

/* Waits until queue 0 of HaSugg on addr holds want entries (dispatch runs
 * behind the append). */
static void wait_dispatched(rmt_client *cl, const char *addr, int64_t want)
{
    int64_t max = -1;
    for (long long end = th_now_ms() + 10000; th_now_ms() < end; usleep(20000)) {
        rmt_cmd req, *resp = NULL;
        rmt_cmd_init(&req, RMT_REQ_GET_MAX_OFFSET);
        rmt_cmd_set_ext(&req, "topic", "HaSugg");
        rmt_cmd_set_ext_int(&req, "queueId", 0);
        int rc = call_try(cl, addr, &req, &resp);
        rmt_cmd_destroy(&req);
        max = -1;
        if (rc == 0) {
            if (resp->code == 0)
                rmt_cmd_ext_int(resp, "offset", &max);
            rmt_cmd_free(resp);
        }
        if (max >= want)
            return;
    }
    ck_abort_msg("queue 0 of HaSugg on %s holds %lld entries, not %lld", addr, (long long)max, (long long)want);
}

static int count_msgs(cli_consumer *cs, const struct cli_msg_view *v, int n, void *ud)
{
    *(int *)ud += n;
    return 0;
}

/* A managed consumer of group reads HaSugg from its first offset until it
 * has want messages (or 15 s pass); returns how many it got. */
static int consume_all(struct ev_loop *loop, const char *ns_addr, const char *group, int want)
{
    int got = 0, err = 0;
    struct cli_opts co = { .namesrv_addr = ns_addr, .instance_name = group, .client_ip = "127.0.0.1",
                           .timeout_ms = 2000, .route_refresh_ms = 500 };
    cli_client *cc = cli_client_new(loop, &co, &err);
    ck_assert_msg(cc, "client: %d", err);
    struct cli_consumer_opts o = { .group = group, .topic = "HaSugg", .from = CLI_FROM_FIRST_OFFSET,
                                   .batch_size = 8, .suspend_ms = 1000, .rebalance_ms = 500,
                                   .heartbeat_ms = 1000, .pull_retry_ms = 100, .on_messages = count_msgs,
                                   .ud = &got };
    cli_consumer *cs = cli_consumer_new(cc, &o, &err);
    ck_assert_msg(cs, "consumer: %d", err);
    ck_assert_int_eq(cli_consumer_start(cs), 0);
    for (long long end = th_now_ms() + 15000; got < want && th_now_ms() < end;)
        run_ms(loop, 20);
    cli_consumer_shutdown(cs, 3000);
    cli_consumer_free(cs);
    cli_client_free(cc);
    return got;
}

static void sugg_start(struct th_daemon *ns, struct th_daemon *m, struct th_daemon *s, bool read_enable)
{
    const char *re = read_enable ? "slaveReadEnable=true" : "slaveReadEnable=false";
    const char *mx[] = { "brokerId=0", re, "accessMessageInMemoryMaxRatio=0", NULL };
    br_start(m, ns->addr, mx);
    const char *sx[] = { "brokerRole=SLAVE", "brokerId=1", "haMasterAddress=", re, NULL };
    br_start(s, ns->addr, sx);
}

/* suggestWhichBrokerId. With accessMessageInMemoryMaxRatio=0 every read
 * counts as far behind the log's end. slaveReadEnable=false: the master
 * still suggests itself (0), the slave refuses pulls (PULL_RETRY_IMMEDIATELY,
 * suggest 0, offset unchanged) and a consumer reads only from the master.
 * slaveReadEnable=true: the master suggests the group's
 * whichBrokerWhenConsumeSlowly (1), the slave serves and suggests the
 * group's brokerId (0: not behind at the default ratio), and the consumer
 * follows the suggestion and gets messages from the slave. */
START_TEST(suggest_pulling_from_slave)
{
    enum { N = 400 };
    struct th_daemon ns = { 0 }, m = { 0 }, s = { 0 };
    ns_start(&ns);
    sugg_start(&ns, &m, &s, false);
    struct ev_loop *loop = ev_loop_new(0);
    rmt_client *cl = new_client(loop);
    wait_slave_connected(cl, m.addr);
    create_topic(cl, m.addr, "HaSugg");
    struct pipe p = { .loop = loop, .cl = cl, .addr = m.addr, .topic = "HaSugg", .tag = "g", .total = N,
                      .window = 64, .body_size = 100 };
    pipe_run(&p);
    ck_assert_int_eq(p.acked, N);
    wait_dispatched(cl, m.addr, N / 4);
    wait_dispatched(cl, s.addr, N / 4);

    int code, n;
    int64_t sugg, next;
    n = pull_raw(cl, m.addr, 0, &code, &sugg, &next);
    ck_assert_msg(code == 0 && n == 8 && sugg == 0, "master, slaveReadEnable=false: code %d, %d msgs, suggest %lld",
                  code, n, (long long)sugg);
    n = pull_raw(cl, s.addr, 0, &code, &sugg, &next);
    ck_assert_msg(code == RMT_RESP_PULL_RETRY_IMMEDIATELY && n == 0 && sugg == 0 && next == 0,
                  "slave, slaveReadEnable=false: code %d, %d msgs, suggest %lld, next %lld", code, n,
                  (long long)sugg, (long long)next);
    int got = consume_all(loop, ns.addr, "CG_sr1", N);
    long long from_slave = rt_int(cl, s.addr, "msgGetTotalTodayNow");
    printf("slaveReadEnable=false: consumer got %d of %d, %lld from the slave\n", got, N, from_slave);
    ck_assert_int_ge(got, N);
    ck_assert_int_eq(from_slave, 0);

    d_stop(&m);
    d_stop(&s);
    sugg_start(&ns, &m, &s, true);
    wait_slave_connected(cl, m.addr);
    wait_dispatched(cl, m.addr, N / 4);
    wait_dispatched(cl, s.addr, N / 4);
    n = pull_raw(cl, m.addr, 0, &code, &sugg, &next);
    ck_assert_msg(code == 0 && n == 8 && sugg == 1, "master, slaveReadEnable=true: code %d, %d msgs, suggest %lld",
                  code, n, (long long)sugg);
    n = pull_raw(cl, s.addr, 0, &code, &sugg, &next);
    ck_assert_msg(code == 0 && n == 8 && sugg == 0, "slave, slaveReadEnable=true: code %d, %d msgs, suggest %lld",
                  code, n, (long long)sugg);
    long long before = rt_int(cl, s.addr, "msgGetTotalTodayNow");
    got = consume_all(loop, ns.addr, "CG_sr2", N);
    from_slave = rt_int(cl, s.addr, "msgGetTotalTodayNow") - before;
    printf("slaveReadEnable=true: consumer got %d of %d, %lld from the slave\n", got, N, from_slave);
    ck_assert_int_ge(got, N);
    ck_assert_int_gt(from_slave, 0);

    rmt_client_free(cl);
    ev_loop_destroy(loop);
    pipe_free(&p);
    d_finish(&m);
    d_finish(&s);
    d_finish(&ns);
}
END_TEST

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    log_set_level(LOG_LVL_WARN);
    Suite *s = suite_create("ha");
    TCase *tc = tcase_create("ha");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, replication_100k_byte_identical);
    tcase_add_test(tc, master_kill9_failover_and_return);
    tcase_add_test(tc, slave_kill9_no_false_ack_then_catch_up);
    tcase_add_test(tc, divergent_slave_truncates);
    tcase_add_test(tc, stalled_slave_partition);
    tcase_add_test(tc, timer_message_on_master_slave_pair);
    tcase_add_test(tc, timer_follows_master_and_survives_promotion);
    tcase_add_test(tc, suggest_pulling_from_slave);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
