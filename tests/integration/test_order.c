/*
 * Ordered consumption against the real nameserver and broker.
 *
 * ordered_consumption_stays_ordered_across_rebalance: an ordered producer
 * sends per-key sequences (the key's hash picks the queue) while orderly
 * consumers of one group, each on its own thread with its own loop and
 * client (so their deliveries really can overlap in time), consume them
 * with an artificial delay. A third consumer joins mid-way and one of the
 * first two leaves later. The test records every delivered batch (queue,
 * consumer, start and end time) and every (key, sequence) it sees, then
 * checks: per key, a consumer's sequence only moves forward by one, a
 * handover may only replay a bounded tail of what was delivered before
 * (counted and reported), nothing is lost, all messages of a key come from
 * one queue, and two different consumers never have batches of one queue
 * in progress at the same time.
 *
 * orderly_takeover_after_kill_waits_for_lock_expiry: consumer A runs in a
 * forked child and writes a line per delivered message to a file; B (a
 * thread here) joins and both settle on half of the queues each; then A
 * gets SIGKILL while holding the locks of its half. The broker drops A from
 * the group at once (its connection closed) and B is assigned every queue,
 * but as in RocketMQ the locks of a dead client are not released: B's
 * LOCK_BATCH_MQ is refused until they expire (rebalanceLockMaxLiveTime,
 * shortened to LOCK_MAX_LIVE_MS). Checked: B delivers nothing of A's queues
 * earlier than the lock lifetime minus A's renewal slack after the kill,
 * and does get them soon after; each consumer's deliveries go forward one
 * offset (and one sequence per key) at a time; a queue handed over while A
 * lived continues right after A's last message; on a queue of the dead A,
 * B resumes at the offset A committed. Delivery is at least once, as in
 * RocketMQ: the only messages delivered twice are those A consumed but had
 * not committed yet (from the committed offset to A's last one). Together A
 * and B consumed every message sent.
 *
 * ORDER_UNLOCKED=1 runs both scenarios with plain (non-orderly) clustering
 * consumers; the overlap, ordering and lock-expiry checks are then expected
 * to fail, which shows that they can.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "client.h"
#include "consumer.h"
#include "harness.h"
#include "log.h"
#include "producer.h"
#include "remoting.h"

/* Client renewal period of the queue locks and the broker's lock lifetime
 * (rebalanceLockMaxLiveTime, set by br_start). */
#define RENEW_MS 500
#define LOCK_MAX_LIVE_MS 3000
#define STR_(x) #x
#define STR(x) STR_(x)

#define QUEUES 8
#define KEYS 24
#define ROUNDS 200
#define BATCH 8
#define MAX_BATCHES 40000
#define NMEMBERS 3

static void ns_start(struct th_daemon *d)
{
    const char *const ex[] = { "scanNotActiveBrokerInterval=200", NULL };
    ck_assert_msg(th_ns_start(d, ex), "nameserver did not start listening");
}

static void br_start(struct th_daemon *d, const char *ns_addr)
{
    char *dir = th_tmpdir();
    snprintf(d->dir, sizeof d->dir, "%s", dir);
    free(dir);
    d->port = th_free_port();
    snprintf(d->addr, sizeof d->addr, "127.0.0.1:%d", d->port);
    snprintf(d->log, sizeof d->log, "%s/broker.log", d->dir);
    static char sets[3][600];
    snprintf(sets[0], sizeof sets[0], "listenPort=%d", d->port);
    snprintf(sets[1], sizeof sets[1], "storePathRootDir=%s/store", d->dir);
    snprintf(sets[2], sizeof sets[2], "namesrvAddr=%s", ns_addr);
    const char *fixed[] = { "brokerIP1=127.0.0.1", "bindAddress=127.0.0.1", "mapedFileSizeCommitLog=16777216",
                            "metadataMapSizeMB=16", "maxHashSlotNum=10000", "maxIndexNum=40000",
                            "registerNameServerPeriod=500", "flushConsumerOffsetInterval=200",
                            "rebalanceLockMaxLiveTime=" STR(LOCK_MAX_LIVE_MS), NULL };
    char *argv[40];
    int n = 0;
    argv[n++] = (char *)th_bin("BROKER_BIN");
    for (int i = 0; i < 3; i++) {
        argv[n++] = "--set";
        argv[n++] = sets[i];
    }
    for (int i = 0; fixed[i]; i++) {
        argv[n++] = "--set";
        argv[n++] = (char *)fixed[i];
    }
    argv[n] = NULL;
    d->pid = th_spawn(argv, d->log);
    ck_assert_msg(th_wait_port(d->port, 10000), "broker did not start listening");
}

/* Graceful stop; the daemon must exit 0 (sanitizer findings fail the test). */
static void d_finish(struct th_daemon *d)
{
    int status = th_stop(d->pid, 10000);
    ck_assert_msg(status >= 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "daemon did not exit cleanly (status %d), see %s", status, d->log);
    th_rmtree(d->dir);
}

static rmt_cmd *call(rmt_client *cl, const char *addr, rmt_cmd *req)
{
    rmt_cmd *resp = NULL;
    int rc = rmt_client_invoke_sync(cl, addr, req, 5000, &resp);
    ck_assert_msg(rc == 0, "invoke %d failed: %s", req->code, strerror(-rc));
    return resp;
}

static int64_t offset_of(rmt_client *cl, const char *addr, int code, int qid)
{
    rmt_cmd req;
    rmt_cmd_init(&req, code);
    if (code == RMT_REQ_QUERY_CONSUMER_OFFSET)
        rmt_cmd_set_ext(&req, "consumerGroup", "CG_ORD");
    rmt_cmd_set_ext(&req, "topic", "Ord");
    rmt_cmd_set_ext_int(&req, "queueId", qid);
    rmt_cmd *r = call(cl, addr, &req);
    rmt_cmd_destroy(&req);
    int64_t off = -1;
    ck_assert_int_eq(r->code, 0);
    rmt_cmd_ext_int(r, "offset", &off);
    rmt_cmd_free(r);
    return off;
}

/* Topic Ord with QUEUES read and write queues on the broker at addr. */
static void create_topic(rmt_client *admin, const char *addr)
{
    rmt_cmd req;
    rmt_cmd_init(&req, RMT_REQ_UPDATE_AND_CREATE_TOPIC);
    rmt_cmd_set_ext(&req, "topic", "Ord");
    rmt_cmd_set_ext(&req, "defaultTopic", "TBW102");
    rmt_cmd_set_ext_int(&req, "readQueueNums", QUEUES);
    rmt_cmd_set_ext_int(&req, "writeQueueNums", QUEUES);
    rmt_cmd_set_ext_int(&req, "perm", 6);
    rmt_cmd_set_ext(&req, "topicFilterType", "SINGLE_TAG");
    rmt_cmd *resp = call(admin, addr, &req);
    ck_assert_int_eq(resp->code, 0);
    rmt_cmd_free(resp);
    rmt_cmd_destroy(&req);
}

/* A producer of group PG_ORD on loop, once the nameserver knows Ord's
 * route; its client is returned in *pc. */
static cli_producer *open_producer(struct ev_loop *loop, const char *ns_addr, cli_client **pc)
{
    struct cli_opts po = { .namesrv_addr = ns_addr, .instance_name = "producer", .client_ip = "127.0.0.1" };
    int err = 0;
    *pc = cli_client_new(loop, &po, &err);
    ck_assert_ptr_nonnull(*pc);
    struct cli_route *route = NULL;
    char emsg[CLI_ERRMSG_MAX];
    for (int i = 0; i < 100 && cli_route_get_sync(*pc, "Ord", &route, emsg, sizeof emsg); i++)
        usleep(100 * 1000);
    ck_assert_ptr_nonnull(route);
    cli_route_free(route);
    struct cli_producer_opts pro = { .group = "PG_ORD" };
    cli_producer *p = cli_producer_new(*pc, &pro, &err);
    ck_assert_ptr_nonnull(p);
    return p;
}

static long long now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

struct interval {
    int queue, member;
    long long start, end;
};

/* Shared by the consumer threads; guarded by mu. */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static struct interval batches[MAX_BATCHES];
static int nbatches;
static int last_by[KEYS];          /* member that delivered the key's last message, -1 none */
static int last_seq[KEYS];         /* its sequence number */
static int key_queue[KEYS];        /* queue the key's messages come from, -1 none */
static unsigned char seen[KEYS][ROUNDS];
static int unique_seen, duplicates, handovers, max_replay, errors;
static char first_error[256];

static void fail_locked(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void fail_locked(const char *fmt, ...)
{
    if (errors++)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(first_error, sizeof first_error, fmt, ap);
    va_end(ap);
}

struct member {
    int idx;
    const char *name, *ns;
    bool orderly;
    cli_consume_fn fn;
    pthread_t th;
    atomic_bool stop, running;
    atomic_int assigned;
    atomic_uint qmask;             /* assigned queue ids as bits */
    int consumed, shutdown_rc;
};

static int on_batch(cli_consumer *cs, const struct cli_msg_view *msgs, int n, void *ud)
{
    (void)cs;
    struct member *m = ud;
    long long start = now_us();
    pthread_mutex_lock(&mu);
    for (int i = 0; i < n; i++) {
        char body[64];
        int k = -1, s = -1;
        snprintf(body, sizeof body, "%.*s", (int)(msgs[i].body_len < 63 ? msgs[i].body_len : 63),
                 (const char *)msgs[i].body);
        if (sscanf(body, "k:%d:%d", &k, &s) != 2 || k < 0 || k >= KEYS || s < 0 || s >= ROUNDS) {
            fail_locked("unexpected body (member %d, queue %d)", m->idx, msgs[i].queue_id);
            continue;
        }
        if (key_queue[k] < 0)
            key_queue[k] = msgs[i].queue_id;
        else if (key_queue[k] != msgs[i].queue_id)
            fail_locked("key %d came from queue %d and from queue %d", k, key_queue[k], msgs[i].queue_id);
        if (last_by[k] == m->idx) {
            if (s != last_seq[k] + 1)
                fail_locked("member %d saw key %d go from %d to %d", m->idx, k, last_seq[k], s);
        } else {
            /* A handover: the new owner starts at most a bounded tail before
             * where the previous one stopped, and never after it. */
            if (last_by[k] >= 0)
                handovers++;
            if (s > last_seq[k] + 1)
                fail_locked("key %d: member %d started at %d after %d (a gap)", k, m->idx, s, last_seq[k]);
            int replay = last_seq[k] + 1 - s;
            if (replay > max_replay)
                max_replay = replay;
            if (replay > BATCH)
                fail_locked("key %d: member %d replayed %d messages from %d", k, m->idx, replay, s);
        }
        last_by[k] = m->idx;
        last_seq[k] = s;
        if (seen[k][s]++)
            duplicates++;
        else
            unique_seen++;
        m->consumed++;
    }
    pthread_mutex_unlock(&mu);
    /* The application's work: long enough that deliveries of different
     * consumers would overlap if two of them had the same queue. */
    usleep(2000 + 1500 * (unsigned)n);
    long long end = now_us();
    pthread_mutex_lock(&mu);
    if (nbatches < MAX_BATCHES)
        batches[nbatches++] = (struct interval){ msgs[0].queue_id, m->idx, start, end };
    else
        fail_locked("more than %d batches", MAX_BATCHES);
    pthread_mutex_unlock(&mu);
    return 0;
}

static void wake_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
}

static struct cli_consumer_opts member_opts(bool orderly, cli_consume_fn fn, void *ud)
{
    return (struct cli_consumer_opts){ .group = "CG_ORD", .topic = "Ord", .model = CLI_CLUSTERING,
                                       .from = CLI_FROM_FIRST_OFFSET, .batch_size = BATCH, .suspend_ms = 1000,
                                       .rebalance_ms = 1000, .heartbeat_ms = 1000, .commit_ms = 500,
                                       .pull_retry_ms = 100, .orderly = orderly, .lock_interval_ms = RENEW_MS,
                                       .lock_live_ms = 2000, .on_messages = fn, .ud = ud };
}

/* A consumer on its own loop and client; stops (shutdown: commit, unlock,
 * unregister) when m->stop is set. */
static void *member_main(void *arg)
{
    struct member *m = arg;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct cli_opts co = { .namesrv_addr = m->ns, .instance_name = m->name, .client_ip = "127.0.0.1" };
    int err = 0;
    cli_client *c = cli_client_new(loop, &co, &err);
    struct cli_consumer_opts o = member_opts(m->orderly, m->fn, m);
    cli_consumer *cs = c ? cli_consumer_new(c, &o, &err) : NULL;
    if (!cs || cli_consumer_start(cs)) {
        m->shutdown_rc = -999;
        cli_consumer_free(cs);
        cli_client_free(c);
        ev_loop_destroy(loop);
        atomic_store(&m->running, false);
        return NULL;
    }
    ev_timer wake;
    ev_timer_init(&wake, wake_cb, 0.01, 0.01);
    ev_timer_start(loop, &wake);
    while (!atomic_load(&m->stop)) {
        ev_run(loop, EVRUN_ONCE);
        struct cli_mq mq[QUEUES];
        int n = cli_consumer_assigned(cs, mq, QUEUES);
        unsigned mask = 0;
        for (int i = 0; i < n; i++)
            if (mq[i].queue_id >= 0 && mq[i].queue_id < 32)
                mask |= 1u << mq[i].queue_id;
        atomic_store(&m->qmask, mask);
        atomic_store(&m->assigned, n);
    }
    m->shutdown_rc = cli_consumer_shutdown(cs, 5000);
    ev_timer_stop(loop, &wake);
    cli_consumer_free(cs);
    cli_client_free(c);
    ev_loop_destroy(loop);
    atomic_store(&m->assigned, 0);
    atomic_store(&m->qmask, 0);
    atomic_store(&m->running, false);
    return NULL;
}

static void member_start(struct member *m, int idx, const char *name, const char *ns, bool orderly,
                         cli_consume_fn fn)
{
    m->idx = idx;
    m->name = name;
    m->ns = ns;
    m->orderly = orderly;
    m->fn = fn;
    atomic_store(&m->stop, false);
    atomic_store(&m->running, true);
    atomic_store(&m->assigned, 0);
    atomic_store(&m->qmask, 0);
    ck_assert_int_eq(pthread_create(&m->th, NULL, member_main, m), 0);
}

static void member_join(struct member *m)
{
    atomic_store(&m->stop, true);
    pthread_join(m->th, NULL);
}

static int cmp_start(const void *a, const void *b)
{
    const struct interval *x = a, *y = b;
    return x->start < y->start ? -1 : x->start > y->start;
}

/* Batches of one queue by different members never overlap in time. */
static int overlaps(char *what, size_t len)
{
    qsort(batches, (size_t)nbatches, sizeof batches[0], cmp_start);
    int bad = 0;
    for (int q = 0; q < QUEUES; q++) {
        long long max_end[NMEMBERS] = { 0 };
        for (int i = 0; i < nbatches; i++) {
            const struct interval *b = &batches[i];
            if (b->queue != q)
                continue;
            for (int o = 0; o < NMEMBERS; o++)
                if (o != b->member && max_end[o] > b->start) {
                    if (!bad++)
                        snprintf(what, len, "queue %d: member %d started a batch %lld us before member %d "
                                 "finished one", q, b->member, max_end[o] - b->start, o);
                }
            if (b->end > max_end[b->member])
                max_end[b->member] = b->end;
        }
    }
    return bad;
}

START_TEST(ordered_consumption_stays_ordered_across_rebalance)
{
    bool orderly = !getenv("ORDER_UNLOCKED");
    struct th_daemon ns = { 0 }, br = { 0 };
    ns_start(&ns);
    br_start(&br, ns.addr);
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct rmt_client_opts rco = { 0 };
    rmt_client *admin = rmt_client_new(loop, &rco);
    create_topic(admin, br.addr);
    cli_client *pc = NULL;
    cli_producer *p = open_producer(loop, ns.addr, &pc);

    for (int k = 0; k < KEYS; k++) {
        last_by[k] = -1;
        last_seq[k] = -1;
        key_queue[k] = -1;
    }
    static struct member mem[NMEMBERS];
    const char *names[NMEMBERS] = { "A", "B", "C" };
    member_start(&mem[0], 0, names[0], ns.addr, orderly, on_batch);
    member_start(&mem[1], 1, names[1], ns.addr, orderly, on_batch);
    long long end = th_now_ms() + 15000;
    while (th_now_ms() < end && (atomic_load(&mem[0].assigned) != 4 || atomic_load(&mem[1].assigned) != 4))
        usleep(20 * 1000);
    ck_assert_msg(atomic_load(&mem[0].assigned) == 4 && atomic_load(&mem[1].assigned) == 4,
                  "A and B did not split the queues 4/4 (%d, %d)", atomic_load(&mem[0].assigned),
                  atomic_load(&mem[1].assigned));

    /* Rounds of one message per key; C joins after a third, A leaves after
     * two thirds, while messages keep coming. */
    int a_at_leave = 0;
    for (int r = 0; r < ROUNDS; r++) {
        if (r == ROUNDS / 3)
            member_start(&mem[2], 2, names[2], ns.addr, orderly, on_batch);
        if (r == 2 * ROUNDS / 3) {
            member_join(&mem[0]);
            a_at_leave = mem[0].consumed;
        }
        for (int k = 0; k < KEYS; k++) {
            char body[32], key[16];
            snprintf(body, sizeof body, "k:%d:%d", k, r);
            snprintf(key, sizeof key, "key-%d", k);
            struct cli_message msg = { .topic = "Ord", .body = body, .body_len = (uint32_t)strlen(body),
                                       .tags = "T", .keys = key };
            struct cli_send_result sr;
            ck_assert_int_eq(cli_send_ordered_sync(p, &msg, key, &sr), 0);
        }
        usleep(30 * 1000);
    }
    end = th_now_ms() + 30000;
    for (;;) {
        pthread_mutex_lock(&mu);
        int u = unique_seen;
        pthread_mutex_unlock(&mu);
        if (u == KEYS * ROUNDS || th_now_ms() > end)
            break;
        usleep(50 * 1000);
    }
    member_join(&mem[1]);
    member_join(&mem[2]);

    char what[256] = "";
    int bad = overlaps(what, sizeof what);
    fprintf(stderr, "order%s: A %d (left), B %d, C %d (joined); %d batches, %d handovers of a key, "
            "%d duplicates (longest replay %d), %d overlapping batches%s%s\n",
            orderly ? "" : " (UNLOCKED)", mem[0].consumed, mem[1].consumed, mem[2].consumed, nbatches,
            handovers, duplicates, max_replay, bad, bad ? ": " : "", what);
    for (int i = 0; i < NMEMBERS; i++)
        ck_assert_msg(mem[i].shutdown_rc == 0, "member %s: shutdown returned %d", names[i], mem[i].shutdown_rc);
    ck_assert_msg(errors == 0, "%d ordering errors; first: %s", errors, first_error);
    ck_assert_msg(bad == 0, "%d batches overlapped another member's on the same queue; first: %s", bad, what);
    ck_assert_int_eq(unique_seen, KEYS * ROUNDS);
    for (int k = 0; k < KEYS; k++)
        ck_assert_int_eq(last_seq[k], ROUNDS - 1);
    /* Every member took part, and the join and the leave moved queues. */
    ck_assert_int_gt(a_at_leave, 0);
    ck_assert_int_gt(mem[1].consumed, 0);
    ck_assert_int_gt(mem[2].consumed, 0);
    ck_assert_int_ge(handovers, 2);
    /* The committed offsets reach the ends of the queues. */
    for (int q = 0; q < QUEUES; q++)
        ck_assert_int_eq(offset_of(admin, br.addr, RMT_REQ_QUERY_CONSUMER_OFFSET, q),
                         offset_of(admin, br.addr, RMT_REQ_GET_MAX_OFFSET, q));
    cli_producer_free(p);
    cli_client_free(pc);
    rmt_client_free(admin);
    ev_loop_destroy(loop);
    d_finish(&br);
    d_finish(&ns);
}
END_TEST

/* Kill -9 of an orderly consumer that holds queue locks. */

#define KKEYS 16
#define MAX_SEQ 4000
#define MAX_RECS 60000
#define ROUND_MS 25
/* The earliest a queue of the killed consumer may move: its last renewal
 * was at most about one renewal period before the kill; one more period
 * covers a slow loop. */
#define EARLIEST_MS (LOCK_MAX_LIVE_MS - 2 * RENEW_MS)

struct rec {
    long long t_us;            /* CLOCK_MONOTONIC, the same clock in both processes */
    int queue, key, seq;
    int64_t off;
};

/* The survivor's deliveries (guarded by mu) and the killed consumer's, as
 * read back from its record file. */
static struct rec brecs[MAX_RECS], arecs[MAX_RECS];
static int nbrecs, narecs;

static int body_key_seq(const struct cli_msg_view *v, int *k, int *s)
{
    char body[64];
    snprintf(body, sizeof body, "%.*s", (int)(v->body_len < 63 ? v->body_len : 63), (const char *)v->body);
    *k = *s = -1;
    return sscanf(body, "k:%d:%d", k, s) == 2 && *k >= 0 && *k < KKEYS && *s >= 0 && *s < MAX_SEQ ? 0 : -1;
}

static int on_survivor(cli_consumer *cs, const struct cli_msg_view *msgs, int n, void *ud)
{
    (void)cs;
    struct member *m = ud;
    long long t = now_us();
    pthread_mutex_lock(&mu);
    for (int i = 0; i < n; i++) {
        int k, s;
        if (body_key_seq(&msgs[i], &k, &s)) {
            fail_locked("B: unexpected body on queue %d", msgs[i].queue_id);
            continue;
        }
        if (nbrecs == MAX_RECS) {
            fail_locked("B: more than %d messages", MAX_RECS);
            break;
        }
        brecs[nbrecs++] = (struct rec){ t, msgs[i].queue_id, k, s, msgs[i].queue_offset };
        m->consumed++;
    }
    pthread_mutex_unlock(&mu);
    usleep(500 * (unsigned)n);
    return 0;
}

static void write_all(int fd, const char *p, size_t len)
{
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            _exit(3);
        p += w;
        len -= (size_t)w;
    }
}

/* The doomed consumer's callback: one line per message, written before
 * the callback returns (so before the offset can move past it); a write
 * that returned survives kill -9, no fsync is needed for that. */
static int on_doomed(cli_consumer *cs, const struct cli_msg_view *msgs, int n, void *ud)
{
    (void)cs;
    int fd = *(int *)ud;
    long long t = now_us();
    for (int i = 0; i < n; i++) {
        int k, s;
        body_key_seq(&msgs[i], &k, &s);
        char line[128];
        int len = snprintf(line, sizeof line, "%lld %d %lld %d %d\n", t, msgs[i].queue_id,
                           (long long)msgs[i].queue_offset, k, s);
        write_all(fd, line, (size_t)len);
    }
    /* Slow enough that the kill often lands inside a batch (whose offsets
     * are not committed yet), short enough for timely lock renewals. */
    usleep(2000 + 1500 * (unsigned)n);
    return 0;
}

/* Body of the forked child: waits for the go byte, then consumes orderly
 * until it is killed. Never returns. */
static void doomed_main(const char *ns_addr, int go_fd, int out_fd, bool orderly) __attribute__((noreturn));
static void doomed_main(const char *ns_addr, int go_fd, int out_fd, bool orderly)
{
    char go;
    if (read(go_fd, &go, 1) != 1)
        _exit(2);
    close(go_fd);
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct cli_opts co = { .namesrv_addr = ns_addr, .instance_name = "A", .client_ip = "127.0.0.1" };
    int err = 0;
    cli_client *c = loop ? cli_client_new(loop, &co, &err) : NULL;
    struct cli_consumer_opts o = member_opts(orderly, on_doomed, &out_fd);
    cli_consumer *cs = c ? cli_consumer_new(c, &o, &err) : NULL;
    if (!cs || cli_consumer_start(cs))
        _exit(4);
    ev_run(loop, 0);
    _exit(5);
}

/* The test process's side: the producer, sending one message per key every
 * ROUND_MS, and the reader of A's record file. */
struct pump {
    cli_producer *p;
    pid_t a_pid;
    int sent[KKEYS];               /* messages sent per key */
    int key_queue[KKEYS];
    int64_t queue_len[QUEUES];     /* messages sent per queue */
    long long next_round;
    bool producing;
    int afd;
    char abuf[8192];
    size_t alen;
};

static void read_a(struct pump *pu)
{
    for (;;) {
        ssize_t r = read(pu->afd, pu->abuf + pu->alen, sizeof pu->abuf - pu->alen);
        ck_assert_msg(r >= 0, "reading A's records: %s", strerror(errno));
        if (r == 0)
            return;
        pu->alen += (size_t)r;
        char *line = pu->abuf, *end = pu->abuf + pu->alen, *nl;
        while ((nl = memchr(line, '\n', (size_t)(end - line)))) {
            *nl = 0;
            long long t, off;
            int q, k, s;
            ck_assert_msg(sscanf(line, "%lld %d %lld %d %d", &t, &q, &off, &k, &s) == 5 && q >= 0 &&
                              q < QUEUES && k >= 0 && k < KKEYS && s >= 0 && s < MAX_SEQ,
                          "A recorded a bad message: '%s'", line);
            ck_assert_int_lt(narecs, MAX_RECS);
            arecs[narecs++] = (struct rec){ t, q, k, s, off };
            line = nl + 1;
        }
        pu->alen = (size_t)(end - line);
        memmove(pu->abuf, line, pu->alen);
    }
}

/* One step of the test process: a round of messages when due, A's new
 * records, and a check that A has not died on its own. */
static void pump_step(struct pump *pu)
{
    if (pu->a_pid > 0) {
        int status = 0;
        ck_assert_msg(waitpid(pu->a_pid, &status, WNOHANG) == 0, "consumer A exited on its own (status %d)",
                      status);
    }
    if (pu->producing && th_now_ms() >= pu->next_round) {
        pu->next_round = th_now_ms() + ROUND_MS;
        for (int k = 0; k < KKEYS; k++) {
            ck_assert_int_lt(pu->sent[k], MAX_SEQ);
            char body[32], key[16];
            snprintf(body, sizeof body, "k:%d:%d", k, pu->sent[k]);
            snprintf(key, sizeof key, "key-%d", k);
            struct cli_message msg = { .topic = "Ord", .body = body, .body_len = (uint32_t)strlen(body),
                                       .tags = "T", .keys = key };
            struct cli_send_result sr;
            ck_assert_int_eq(cli_send_ordered_sync(pu->p, &msg, key, &sr), 0);
            ck_assert_msg(sr.queue_id >= 0 && sr.queue_id < QUEUES, "sent to queue %d", sr.queue_id);
            if (pu->key_queue[k] < 0)
                pu->key_queue[k] = sr.queue_id;
            ck_assert_msg(pu->key_queue[k] == sr.queue_id, "key %d went to queue %d and %d", k,
                          pu->key_queue[k], sr.queue_id);
            ck_assert_int_eq(sr.queue_offset, pu->queue_len[sr.queue_id]);
            pu->queue_len[sr.queue_id]++;
            pu->sent[k]++;
        }
    }
    read_a(pu);
    usleep(5 * 1000);
}

/* Queues (bits) of recs[0..n) delivered at or after t_us. */
static unsigned queues_since(const struct rec *recs, int n, long long t_us)
{
    unsigned mask = 0;
    for (int i = 0; i < n; i++)
        if (recs[i].t_us >= t_us)
            mask |= 1u << recs[i].queue;
    return mask;
}

static unsigned b_queues_since(long long t_us)
{
    pthread_mutex_lock(&mu);
    unsigned mask = queues_since(brecs, nbrecs, t_us);
    pthread_mutex_unlock(&mu);
    return mask;
}

/* Per queue of one consumer's records: first and last offset and time;
 * fails unless each queue's offsets go up by one at a time, and unless
 * each key's sequence does, and every message is on its key's queue. */
struct span {
    int64_t first, last;
    long long first_t, last_t;
};

static void spans_of(const char *who, const struct rec *recs, int n, const int *kq, struct span sp[QUEUES])
{
    int prev[KKEYS];
    for (int k = 0; k < KKEYS; k++)
        prev[k] = -1;
    for (int q = 0; q < QUEUES; q++)
        sp[q] = (struct span){ -1, -1, 0, 0 };
    for (int i = 0; i < n; i++) {
        const struct rec *r = &recs[i];
        struct span *s = &sp[r->queue];
        ck_assert_msg(r->queue == kq[r->key], "%s: key %d (queue %d) delivered from queue %d", who, r->key,
                      kq[r->key], r->queue);
        if (s->first < 0) {
            s->first = r->off;
            s->first_t = r->t_us;
        } else {
            ck_assert_msg(r->off == s->last + 1, "%s: queue %d went from offset %lld to %lld", who, r->queue,
                          (long long)s->last, (long long)r->off);
        }
        s->last = r->off;
        s->last_t = r->t_us;
        ck_assert_msg(prev[r->key] < 0 || r->seq == prev[r->key] + 1, "%s: key %d went from %d to %d", who,
                      r->key, prev[r->key], r->seq);
        prev[r->key] = r->seq;
    }
}

START_TEST(orderly_takeover_after_kill_waits_for_lock_expiry)
{
    bool orderly = !getenv("ORDER_UNLOCKED");
    long long t0 = th_now_ms();
    struct th_daemon ns = { 0 }, br = { 0 };
    ns_start(&ns);
    br_start(&br, ns.addr);
    char *tmp = th_tmpdir();
    char path[128];
    snprintf(path, sizeof path, "%s/a.rec", tmp);

    /* A is forked before this process has threads or connections. */
    int out_fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    ck_assert_int_ge(out_fd, 0);
    int go[2];
    ck_assert_int_eq(pipe(go), 0);
    pid_t parent = getpid();
    pid_t a_pid = fork();
    ck_assert_int_ge(a_pid, 0);
    if (a_pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
        close(go[1]);
        doomed_main(ns.addr, go[0], out_fd, orderly);
    }
    close(go[0]);
    close(out_fd);

    static struct pump pu;
    pu.a_pid = a_pid;
    pu.afd = open(path, O_RDONLY | O_CLOEXEC);
    ck_assert_int_ge(pu.afd, 0);
    for (int k = 0; k < KKEYS; k++)
        pu.key_queue[k] = -1;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct rmt_client_opts rco = { 0 };
    rmt_client *admin = rmt_client_new(loop, &rco);
    create_topic(admin, br.addr);
    cli_client *pc = NULL;
    pu.p = open_producer(loop, ns.addr, &pc);
    pu.producing = true;
    ck_assert_int_eq(write(go[1], "g", 1), 1);
    close(go[1]);

    /* A alone consumes every queue. */
    long long end = th_now_ms() + 15000;
    while (queues_since(arecs, narecs, 0) != (1u << QUEUES) - 1 && th_now_ms() < end)
        pump_step(&pu);
    ck_assert_msg(queues_since(arecs, narecs, 0) == (1u << QUEUES) - 1,
                  "A consumed only queues 0x%x", queues_since(arecs, narecs, 0));

    /* B joins; each ends up consuming its half, and A is still consuming
     * (holding the locks of) its half when it is killed. */
    static struct member b;
    member_start(&b, 1, "B", ns.addr, orderly, on_survivor);
    long long joined = now_us();
    unsigned bq = 0;
    end = th_now_ms() + 15000;
    while (th_now_ms() < end) {
        pump_step(&pu);
        bq = atomic_load(&b.qmask);
        if (__builtin_popcount(bq) == QUEUES / 2 && (b_queues_since(joined) & bq) == bq)
            break;
    }
    ck_assert_msg(__builtin_popcount(bq) == QUEUES / 2 && (b_queues_since(joined) & bq) == bq,
                  "B did not settle on half of the queues (assigned 0x%x, consumed from 0x%x)", bq,
                  b_queues_since(joined));
    unsigned aq = ((1u << QUEUES) - 1) & ~bq;
    long long settled = now_us();
    long long run_on = th_now_ms() + 1000;
    end = th_now_ms() + 10000;
    while (((queues_since(arecs, narecs, settled) & aq) != aq || th_now_ms() < run_on) && th_now_ms() < end)
        pump_step(&pu);
    ck_assert_msg((queues_since(arecs, narecs, settled) & aq) == aq,
                  "A did not keep consuming its queues 0x%x (only 0x%x)", aq,
                  queues_since(arecs, narecs, settled));
    ck_assert_uint_eq(atomic_load(&b.qmask), bq);

    int status;
    ck_assert_int_eq(waitpid(a_pid, &status, WNOHANG), 0);
    long long killed = now_us();
    ck_assert_int_eq(kill(a_pid, SIGKILL), 0);
    ck_assert_int_eq(waitpid(a_pid, &status, 0), a_pid);
    ck_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    pu.a_pid = -1;

    /* What A committed is final now (its last commits reached the broker
     * before its connection closed; give the broker a moment to read them). */
    long long b_all = -1;
    end = th_now_ms() + 300;
    while (th_now_ms() < end) {
        pump_step(&pu);
        if (b_all < 0 && atomic_load(&b.assigned) == QUEUES)
            b_all = now_us();
    }
    int64_t committed[QUEUES];
    for (int q = 0; q < QUEUES; q++)
        committed[q] = (aq >> q) & 1 ? offset_of(admin, br.addr, RMT_REQ_QUERY_CONSUMER_OFFSET, q) : -1;

    /* B takes A's queues over once the locks expire, and goes on. */
    end = th_now_ms() + LOCK_MAX_LIVE_MS + 6000;
    while ((b_queues_since(killed) & aq) != aq && th_now_ms() < end) {
        pump_step(&pu);
        if (b_all < 0 && atomic_load(&b.assigned) == QUEUES)
            b_all = now_us();
    }
    end = th_now_ms() + 1000;
    while (th_now_ms() < end)
        pump_step(&pu);
    pu.producing = false;
    read_a(&pu);

    /* B drains every queue to its end. */
    end = th_now_ms() + 10000;
    bool drained = false;
    while (!drained && th_now_ms() < end) {
        usleep(20 * 1000);
        pthread_mutex_lock(&mu);
        int64_t last[QUEUES];
        for (int q = 0; q < QUEUES; q++)
            last[q] = -1;
        for (int i = 0; i < nbrecs; i++)
            if (brecs[i].off > last[brecs[i].queue])
                last[brecs[i].queue] = brecs[i].off;
        pthread_mutex_unlock(&mu);
        drained = true;
        for (int q = 0; q < QUEUES; q++)
            drained = drained && last[q] == pu.queue_len[q] - 1;
    }
    member_join(&b);
    ck_assert_msg(b.shutdown_rc == 0, "B: shutdown returned %d", b.shutdown_rc);
    ck_assert_msg(errors == 0, "%d errors; first: %s", errors, first_error);

    struct span as[QUEUES], bs[QUEUES];
    spans_of("A", arecs, narecs, pu.key_queue, as);
    spans_of("B", brecs, nbrecs, pu.key_queue, bs);
    long long first_takeover = -1, last_takeover = -1;
    int replayed = 0;
    for (int q = 0; q < QUEUES; q++) {
        ck_assert_msg(as[q].first == 0, "A's first offset of queue %d is %lld", q, (long long)as[q].first);
        ck_assert_msg(bs[q].first >= 0, "B never consumed queue %d", q);
        ck_assert_msg(bs[q].last == pu.queue_len[q] - 1, "B stopped at offset %lld of queue %d (%lld sent)",
                      (long long)bs[q].last, q, (long long)pu.queue_len[q]);
        /* Never both at once: B's first delivery of a queue follows A's last. */
        ck_assert_msg(bs[q].first_t > as[q].last_t, "queue %d: B started %lld us before A's last delivery", q,
                      as[q].last_t - bs[q].first_t);
        if (!((aq >> q) & 1)) {
            /* Handed over while A was alive: A committed before unlocking,
             * so B starts right after A's last message. */
            ck_assert_msg(bs[q].first == as[q].last + 1, "queue %d handed over alive: A ended at %lld, B began at "
                          "%lld", q, (long long)as[q].last, (long long)bs[q].first);
            continue;
        }
        long long after_ms = (bs[q].first_t - killed) / 1000;
        if (first_takeover < 0 || after_ms < first_takeover)
            first_takeover = after_ms;
        if (after_ms > last_takeover)
            last_takeover = after_ms;
        ck_assert_msg(after_ms >= EARLIEST_MS, "queue %d of the killed A reached B %lld ms after the kill, "
                      "before its lock (%d ms, renewed every %d ms) could expire", q, after_ms,
                      LOCK_MAX_LIVE_MS, RENEW_MS);
        ck_assert_msg(after_ms <= LOCK_MAX_LIVE_MS + 5000, "queue %d reached B only %lld ms after the kill", q,
                      after_ms);
        /* B resumes at A's committed offset: no gap, and what it delivers
         * again is exactly what A consumed but had not committed. */
        ck_assert_msg(bs[q].first == committed[q], "queue %d: A committed %lld, B resumed at %lld", q,
                      (long long)committed[q], (long long)bs[q].first);
        ck_assert_msg(committed[q] <= as[q].last + 1, "queue %d: committed %lld beyond A's last message %lld", q,
                      (long long)committed[q], (long long)as[q].last);
        replayed += (int)(as[q].last + 1 - committed[q]);
    }
    /* B was asking for A's queues long before it got them. */
    ck_assert_msg(b_all >= 0 && (b_all - killed) / 1000 < EARLIEST_MS,
                  "B was not assigned all queues before A's locks could expire (%lld ms after the kill)",
                  b_all < 0 ? -1 : (b_all - killed) / 1000);

    /* Together A and B consumed every message. */
    static unsigned char seen_ks[KKEYS][MAX_SEQ];
    for (int i = 0; i < narecs; i++)
        seen_ks[arecs[i].key][arecs[i].seq] = 1;
    for (int i = 0; i < nbrecs; i++)
        seen_ks[brecs[i].key][brecs[i].seq] = 1;
    for (int k = 0; k < KKEYS; k++)
        for (int s = 0; s < pu.sent[k]; s++)
            ck_assert_msg(seen_ks[k][s], "message %d of key %d was never consumed", s, k);
    for (int q = 0; q < QUEUES; q++)
        ck_assert_int_eq(offset_of(admin, br.addr, RMT_REQ_QUERY_CONSUMER_OFFSET, q),
                         offset_of(admin, br.addr, RMT_REQ_GET_MAX_OFFSET, q));
    fprintf(stderr, "order-kill%s: A consumed %d, B %d; A's queues 0x%x reached B %lld..%lld ms after the kill "
            "(lock lifetime %d ms); B was assigned them after %lld ms; %d consumed by A delivered again to B; "
            "%lld ms\n", orderly ? "" : " (UNLOCKED)", narecs, nbrecs, aq, first_takeover, last_takeover, LOCK_MAX_LIVE_MS, (b_all - killed) / 1000,
            replayed, th_now_ms() - t0);

    close(pu.afd);
    th_rmtree(tmp);
    free(tmp);
    cli_producer_free(pu.p);
    cli_client_free(pc);
    rmt_client_free(admin);
    ev_loop_destroy(loop);
    d_finish(&br);
    d_finish(&ns);
}
END_TEST

int main(void)
{
    log_set_level(LOG_LVL_ERROR);
    Suite *s = suite_create("order");
    TCase *tc = tcase_create("order");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, ordered_consumption_stays_ordered_across_rebalance);
    tcase_add_test(tc, orderly_takeover_after_kill_waits_for_lock_expiry);
    suite_add_tcase(s, tc);
    SRunner *r = srunner_create(s);
    srunner_run_all(r, CK_NORMAL);
    int failed = srunner_ntests_failed(r);
    srunner_free(r);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
