/*
 * Ordered consumption against the real nameserver and broker: an ordered
 * producer sends per-key sequences (the key's hash picks the queue) while
 * orderly consumers of one group, each on its own thread with its own loop
 * and client (so their deliveries really can overlap in time), consume them
 * with an artificial delay. A third consumer joins mid-way and one of the
 * first two leaves later. The test records every delivered batch (queue,
 * consumer, start and end time) and every (key, sequence) it sees, then
 * checks: per key, a consumer's sequence only moves forward by one, a
 * handover may only replay a bounded tail of what was delivered before
 * (counted and reported), nothing is lost, all messages of a key come from
 * one queue, and two different consumers never have batches of one queue
 * in progress at the same time.
 *
 * ORDER_UNLOCKED=1 runs the same scenario with plain (non-orderly)
 * clustering consumers; the overlap and ordering checks are then expected
 * to fail, which shows that they can.
 */
#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "client.h"
#include "consumer.h"
#include "harness.h"
#include "log.h"
#include "producer.h"
#include "remoting.h"

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
                            "rebalanceLockMaxLiveTime=3000", NULL };
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

#define QUEUES 8
#define KEYS 24
#define ROUNDS 200
#define BATCH 8
#define MAX_BATCHES 40000
#define NMEMBERS 3

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
    pthread_t th;
    atomic_bool stop, running;
    atomic_int assigned;
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

/* A consumer on its own loop and client; stops (shutdown: commit, unlock,
 * unregister) when m->stop is set. */
static void *member_main(void *arg)
{
    struct member *m = arg;
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct cli_opts co = { .namesrv_addr = m->ns, .instance_name = m->name, .client_ip = "127.0.0.1" };
    int err = 0;
    cli_client *c = cli_client_new(loop, &co, &err);
    struct cli_consumer_opts o = { .group = "CG_ORD", .topic = "Ord", .model = CLI_CLUSTERING,
                                   .from = CLI_FROM_FIRST_OFFSET, .batch_size = BATCH, .suspend_ms = 1000,
                                   .rebalance_ms = 1000, .heartbeat_ms = 1000, .commit_ms = 500,
                                   .pull_retry_ms = 100, .orderly = m->orderly, .lock_interval_ms = 500,
                                   .lock_live_ms = 2000, .on_messages = on_batch, .ud = m };
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
        atomic_store(&m->assigned, cli_consumer_assigned(cs, mq, QUEUES));
    }
    m->shutdown_rc = cli_consumer_shutdown(cs, 5000);
    ev_timer_stop(loop, &wake);
    cli_consumer_free(cs);
    cli_client_free(c);
    ev_loop_destroy(loop);
    atomic_store(&m->assigned, 0);
    atomic_store(&m->running, false);
    return NULL;
}

static void member_start(struct member *m, int idx, const char *name, const char *ns, bool orderly)
{
    m->idx = idx;
    m->name = name;
    m->ns = ns;
    m->orderly = orderly;
    atomic_store(&m->stop, false);
    atomic_store(&m->running, true);
    atomic_store(&m->assigned, 0);
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
    rmt_cmd req;
    rmt_cmd_init(&req, RMT_REQ_UPDATE_AND_CREATE_TOPIC);
    rmt_cmd_set_ext(&req, "topic", "Ord");
    rmt_cmd_set_ext(&req, "defaultTopic", "TBW102");
    rmt_cmd_set_ext_int(&req, "readQueueNums", QUEUES);
    rmt_cmd_set_ext_int(&req, "writeQueueNums", QUEUES);
    rmt_cmd_set_ext_int(&req, "perm", 6);
    rmt_cmd_set_ext(&req, "topicFilterType", "SINGLE_TAG");
    rmt_cmd *resp = call(admin, br.addr, &req);
    ck_assert_int_eq(resp->code, 0);
    rmt_cmd_free(resp);
    rmt_cmd_destroy(&req);

    struct cli_opts po = { .namesrv_addr = ns.addr, .instance_name = "producer", .client_ip = "127.0.0.1" };
    int err = 0;
    cli_client *pc = cli_client_new(loop, &po, &err);
    ck_assert_ptr_nonnull(pc);
    struct cli_route *route = NULL;
    char emsg[CLI_ERRMSG_MAX];
    for (int i = 0; i < 100 && cli_route_get_sync(pc, "Ord", &route, emsg, sizeof emsg); i++)
        usleep(100 * 1000);
    ck_assert_ptr_nonnull(route);
    cli_route_free(route);
    struct cli_producer_opts pro = { .group = "PG_ORD" };
    cli_producer *p = cli_producer_new(pc, &pro, &err);
    ck_assert_ptr_nonnull(p);

    for (int k = 0; k < KEYS; k++) {
        last_by[k] = -1;
        last_seq[k] = -1;
        key_queue[k] = -1;
    }
    static struct member mem[NMEMBERS];
    const char *names[NMEMBERS] = { "A", "B", "C" };
    member_start(&mem[0], 0, names[0], ns.addr, orderly);
    member_start(&mem[1], 1, names[1], ns.addr, orderly);
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
            member_start(&mem[2], 2, names[2], ns.addr, orderly);
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

int main(void)
{
    log_set_level(LOG_LVL_ERROR);
    Suite *s = suite_create("order");
    TCase *tc = tcase_create("order");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, ordered_consumption_stays_ordered_across_rebalance);
    suite_add_tcase(s, tc);
    SRunner *r = srunner_create(s);
    srunner_run_all(r, CK_NORMAL);
    int failed = srunner_ntests_failed(r);
    srunner_free(r);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
