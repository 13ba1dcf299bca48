/* Unit tests of timer messages (broker/timer.h): on-time delivery to the
 * real topic with properties intact, limits, restart, SIGKILL, and a wheel
 * whose memory does not grow with the pending count. The timer thread runs
 * for real on the wall clock. */
#include "store_test_util.h"

#include <check.h>
#include <errno.h>
#include <signal.h>
#include <sys/wait.h>

#include "message.h"
#include "timer.h"

static char *root;
static char tdir[4200];

static void setup(void)
{
    log_set_stderr(0);
    root = make_tmp();
    snprintf(tdir, sizeof(tdir), "%s/timer", root);
}

static void teardown(void)
{
    rm_rf(root);
    free(root);
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static struct store *open_store(enum store_flush_type ft, uint64_t seg)
{
    struct store_config c;
    small_config(&c, root);
    c.flush_type = ft;
    if (seg)
        c.commitlog_file_size = seg;
    c.cq_entries_per_file = seg ? 100000 : 100;
    struct store *s = NULL;
    ck_assert_int_eq(store_open(&c, &s), 0);
    return s;
}

static void timer_cfg(struct tmr_config *tc)
{
    tmr_config_defaults(tc);
    tc->root_dir = tdir;
}

static struct tmr *open_timer(struct store *s)
{
    struct tmr_config tc;
    timer_cfg(&tc);
    struct tmr *t = NULL;
    ck_assert_int_eq(tmr_open(s, &tc, &t), 0);
    return t;
}

/* Sends message i to topic/qid with one timer property; returns the
 * prepare result (1: moved to the timer topic). */
static int send_timer(struct store *s, const char *topic, int qid, int i, const char *tprop, int64_t tval)
{
    struct tmr_config tc;
    timer_cfg(&tc);
    char props[512], out[MSG_PROPERTIES_MAX + 1], body[64], key[32], val[32];
    size_t plen = 0, olen = 0;
    snprintf(key, sizeof(key), "key%d", i);
    snprintf(val, sizeof(val), "%lld", (long long)tval);
    ck_assert_int_eq(msg_prop_append(props, sizeof(props), &plen, MSG_PROP_TAGS, "TagT", 4), 0);
    ck_assert_int_eq(msg_prop_append(props, sizeof(props), &plen, MSG_PROP_KEYS, key, strlen(key)), 0);
    ck_assert_int_eq(msg_prop_append(props, sizeof(props), &plen, "custom", "v-x", 3), 0);
    ck_assert_int_eq(msg_prop_append(props, sizeof(props), &plen, tprop, val, strlen(val)), 0);
    int n = snprintf(body, sizeof(body), "timer-body-%d", i);
    const char *to = topic;
    int32_t qo = qid;
    int64_t d = 0;
    char err[160];
    int rc = tmr_prepare_put(&tc, topic, qid, 0, props, plen, now_ms(), &to, &qo, out, sizeof(out), &olen, &d,
                             err, sizeof(err));
    ck_assert_int_ge(rc, 0);
    struct store_msg m;
    if (rc == 1)
        fill_msg(&m, to, qo, body, (uint32_t)n, out, (uint32_t)olen);
    else
        fill_msg(&m, topic, qid, body, (uint32_t)n, props, (uint32_t)plen);
    m.flag = 7;
    struct store_put_result r;
    ck_assert_int_eq(store_put_wait(s, &m, &r), STORE_PUT_OK);
    return rc;
}

struct got {
    int count;
    int seen[4096];    /* deliveries per message index */
    int64_t max_lag, min_lag;
};

/* Reads queue qid of topic from *off on, checking every delivered record. */
static void collect(struct store *s, const char *topic, int qid, int64_t *off, struct got *g)
{
    struct store_view v[32];
    for (;;) {
        struct store_get_req req = { topic, qid, *off, 32, 0, NULL, NULL, v };
        struct store_get_result res;
        if (store_get(s, &req, &res) != STORE_GET_FOUND) {
            store_hold_release(&res.hold);
            return;
        }
        for (uint32_t i = 0; i < res.count; i++) {
            struct msg_record r;
            ck_assert_int_gt(msg_record_decode(v[i].data, v[i].len, &r, 1), 0);
            ck_assert_uint_eq(r.topic_len, strlen(topic));
            ck_assert_mem_eq(r.topic, topic, r.topic_len);
            ck_assert_int_eq(r.queue_id, qid);
            ck_assert_int_eq(r.flag, 7);
            ck_assert_int_eq(r.born_ts, 1700000000000LL);
            int idx = -1;
            ck_assert_int_eq(sscanf((const char *)r.body, "timer-body-%d", &idx), 1);
            ck_assert(idx >= 0 && idx < 4096);
            char want[32];
            int n = snprintf(want, sizeof(want), "timer-body-%d", idx);
            ck_assert_uint_eq(r.body_len, (uint32_t)n);
            const char *pv;
            size_t pl;
            ck_assert(msg_prop_get(r.props, r.props_len, MSG_PROP_TAGS, &pv, &pl) && pl == 4 && !memcmp(pv, "TagT", 4));
            snprintf(want, sizeof(want), "key%d", idx);
            ck_assert(msg_prop_get(r.props, r.props_len, MSG_PROP_KEYS, &pv, &pl) && pl == strlen(want) &&
                      !memcmp(pv, want, pl));
            ck_assert(msg_prop_get(r.props, r.props_len, "custom", &pv, &pl) && pl == 3 && !memcmp(pv, "v-x", 3));
            ck_assert(!msg_prop_get(r.props, r.props_len, MSG_PROP_REAL_TOPIC, &pv, &pl));
            ck_assert(!msg_prop_get(r.props, r.props_len, MSG_PROP_REAL_QUEUE_ID, &pv, &pl));
            ck_assert(!msg_prop_get(r.props, r.props_len, MSG_PROP_TIMER_DELAY_SEC, &pv, &pl));
            ck_assert(!msg_prop_get(r.props, r.props_len, MSG_PROP_TIMER_DELAY_MS, &pv, &pl));
            if (msg_prop_get(r.props, r.props_len, MSG_PROP_TIMER_OUT_MS, &pv, &pl)) {
                char tmp[32];
                ck_assert_uint_lt(pl, sizeof(tmp));
                memcpy(tmp, pv, pl);
                tmp[pl] = 0;
                int64_t due = atoll(tmp);
                int64_t lag = r.store_ts - due;
                if (g->count == 0 || lag > g->max_lag)
                    g->max_lag = lag;
                if (g->count == 0 || lag < g->min_lag)
                    g->min_lag = lag;
            }
            g->seen[idx]++;
            g->count++;
        }
        *off = res.next_begin_offset;
        store_hold_release(&res.hold);
    }
}

START_TEST(delivers_on_time_with_properties)
{
    struct store *s = open_store(STORE_ASYNC_FLUSH, 0);
    struct tmr *t = open_timer(s);
    int64_t base = now_ms();
    ck_assert_int_eq(send_timer(s, "RealT", 1, 0, MSG_PROP_TIMER_DELAY_MS, 1000), 1);
    ck_assert_int_eq(send_timer(s, "RealT", 1, 1, MSG_PROP_TIMER_DELAY_MS, 1700), 1);
    ck_assert_int_eq(send_timer(s, "RealT", 2, 2, MSG_PROP_TIMER_DELAY_SEC, 2), 1);
    ck_assert_int_eq(send_timer(s, "RealT", 2, 3, MSG_PROP_TIMER_DELIVER_MS, base + 2500), 1);
    ck_assert_int_eq(send_timer(s, "RealT", 1, 4, MSG_PROP_TIMER_DELIVER_MS, base + 3000), 1);
    /* already due: stored as an ordinary message at once */
    ck_assert_int_eq(send_timer(s, "RealT", 3, 5, MSG_PROP_TIMER_DELIVER_MS, base - 10), 0);
    ck_assert_int_eq(store_max_queue_offset(s, "RealT", 1), 0);
    struct got g;
    memset(&g, 0, sizeof(g));
    int64_t o1 = 0, o2 = 0, o3 = 0;
    for (int i = 0; i < 500 && g.count < 6; i++) {
        collect(s, "RealT", 1, &o1, &g);
        collect(s, "RealT", 2, &o2, &g);
        collect(s, "RealT", 3, &o3, &g);
        sleep_ms(10);
    }
    ck_assert_int_eq(g.count, 6);
    for (int i = 0; i < 6; i++)
        ck_assert_int_eq(g.seen[i], 1);
    ck_assert_int_ge(g.min_lag, 0);     /* never early */
    ck_assert_int_le(g.max_lag, 1000);  /* at most 1 s late */
    struct tmr_stats st;
    tmr_get_stats(t, &st);
    ck_assert_uint_eq(st.delivered, 5);
    ck_assert_uint_eq(st.pending, 0);
    ck_assert_uint_eq(st.lost, 0);
    tmr_close(t);
    store_close(s);
}
END_TEST

START_TEST(limits_and_rules)
{
    struct tmr_config tc;
    timer_cfg(&tc);
    char props[256], out[MSG_PROPERTIES_MAX + 1], err[160];
    size_t plen = 0, olen = 0;
    const char *to;
    int32_t qo;
    int64_t d, now = now_ms();
    char v[32];
    snprintf(v, sizeof(v), "%lld", (long long)(tc.max_delay_sec + 10));
    msg_prop_append(props, sizeof(props), &plen, MSG_PROP_TIMER_DELAY_SEC, v, strlen(v));
    err[0] = 0;
    ck_assert_int_eq(tmr_prepare_put(&tc, "T", 0, 0, props, plen, now, &to, &qo, out, sizeof(out), &olen, &d, err,
                                     sizeof(err)),
                     -ERANGE);
    ck_assert_ptr_nonnull(strstr(err, "timerMaxDelaySec=259200"));
    /* exactly the maximum is accepted */
    plen = 0;
    snprintf(v, sizeof(v), "%lld", (long long)tc.max_delay_sec * 1000);
    msg_prop_append(props, sizeof(props), &plen, MSG_PROP_TIMER_DELAY_MS, v, strlen(v));
    ck_assert_int_eq(tmr_prepare_put(&tc, "T", 3, 0, props, plen, now, &to, &qo, out, sizeof(out), &olen, &d, err,
                                     sizeof(err)),
                     1);
    ck_assert_str_eq(to, TMR_TOPIC);
    ck_assert_int_eq(qo, 0);
    ck_assert_int_eq(d, now + tc.max_delay_sec * 1000);
    const char *pv;
    size_t pl;
    ck_assert(msg_prop_get(out, olen, MSG_PROP_REAL_TOPIC, &pv, &pl) && pl == 1 && pv[0] == 'T');
    ck_assert(msg_prop_get(out, olen, MSG_PROP_REAL_QUEUE_ID, &pv, &pl) && pl == 1 && pv[0] == '3');
    ck_assert(msg_prop_get(out, olen, MSG_PROP_TIMER_OUT_MS, &pv, &pl));
    ck_assert_int_eq(tmr_check_delay(now + tc.max_delay_sec * 1000 + 1, now, tc.max_delay_sec, err, sizeof(err)),
                     -ERANGE);
    ck_assert_int_eq(tmr_check_delay(now - 5000, now, tc.max_delay_sec, err, sizeof(err)), 0);
    /* malformed value */
    plen = 0;
    msg_prop_append(props, sizeof(props), &plen, MSG_PROP_TIMER_DELIVER_MS, "12x", 3);
    ck_assert_int_eq(tmr_prepare_put(&tc, "T", 0, 0, props, plen, now, &to, &qo, out, sizeof(out), &olen, &d, err,
                                     sizeof(err)),
                     -EINVAL);
    ck_assert_ptr_nonnull(strstr(err, "TIMER_DELIVER_MS"));
    /* a delay level wins: timer properties stripped, topic kept */
    plen = 0;
    msg_prop_append(props, sizeof(props), &plen, MSG_PROP_DELAY_TIME_LEVEL, "3", 1);
    msg_prop_append(props, sizeof(props), &plen, MSG_PROP_TIMER_DELAY_SEC, "30", 2);
    msg_prop_append(props, sizeof(props), &plen, MSG_PROP_TAGS, "A", 1);
    ck_assert_int_eq(tmr_prepare_put(&tc, "T", 2, 0, props, plen, now, &to, &qo, out, sizeof(out), &olen, &d, err,
                                     sizeof(err)),
                     1);
    ck_assert_str_eq(to, "T");
    ck_assert_int_eq(qo, 2);
    ck_assert(!msg_prop_get(out, olen, MSG_PROP_TIMER_DELAY_SEC, &pv, &pl));
    ck_assert(msg_prop_get(out, olen, MSG_PROP_DELAY_TIME_LEVEL, &pv, &pl));
    ck_assert(msg_prop_get(out, olen, MSG_PROP_TAGS, &pv, &pl));
    /* transactional half messages and plain messages are left alone */
    plen = 0;
    msg_prop_append(props, sizeof(props), &plen, MSG_PROP_TIMER_DELAY_SEC, "30", 2);
    ck_assert_int_eq(tmr_prepare_put(&tc, "T", 0, MSG_SYSFLAG_TRANSACTION_PREPARED, props, plen, now, &to, &qo, out,
                                     sizeof(out), &olen, &d, err, sizeof(err)),
                     0);
    ck_assert_int_eq(tmr_prepare_put(&tc, "T", 0, 0, "TAGS\001A\002", 7, now, &to, &qo, out, sizeof(out), &olen,
                                     &d, err, sizeof(err)),
                     0);
    /* disabled */
    tc.enable = 0;
    ck_assert_int_eq(tmr_prepare_put(&tc, "T", 0, 0, props, plen, now, &to, &qo, out, sizeof(out), &olen, &d, err,
                                     sizeof(err)),
                     -ENOTSUP);
    ck_assert_ptr_nonnull(strstr(err, "timerWheelEnable"));
    /* output buffer too small */
    tc.enable = 1;
    ck_assert_int_eq(tmr_prepare_put(&tc, "T", 0, 0, props, plen, now, &to, &qo, out, 20, &olen, &d, err,
                                     sizeof(err)),
                     -ENOSPC);
}
END_TEST

START_TEST(restart_keeps_pending)
{
    struct store *s = open_store(STORE_ASYNC_FLUSH, 0);
    struct tmr *t = open_timer(s);
    for (int i = 0; i < 40; i++)
        send_timer(s, "RT", i % 4, i, MSG_PROP_TIMER_DELAY_MS, 1500 + 20 * i);
    for (int i = 0; i < 200; i++) {
        struct tmr_stats st;
        tmr_get_stats(t, &st);
        if (st.enqueued == 40)
            break;
        sleep_ms(5);
    }
    tmr_close(t);
    store_close(s);
    s = open_store(STORE_ASYNC_FLUSH, 0);
    t = open_timer(s);
    struct tmr_stats st;
    tmr_get_stats(t, &st);
    ck_assert_uint_eq(st.pending, 40);
    struct got g;
    memset(&g, 0, sizeof(g));
    int64_t off[4] = { 0 };
    for (int i = 0; i < 600 && g.count < 40; i++) {
        for (int q = 0; q < 4; q++)
            collect(s, "RT", q, &off[q], &g);
        sleep_ms(10);
    }
    ck_assert_int_eq(g.count, 40);
    for (int i = 0; i < 40; i++)
        ck_assert_int_eq(g.seen[i], 1); /* a clean stop does not duplicate */
    ck_assert_int_ge(g.min_lag, 0);
    ck_assert_int_le(g.max_lag, 1000);
    tmr_close(t);
    store_close(s);
}
END_TEST

/* A child schedules messages (SYNC_FLUSH, acknowledged through a pipe) and
 * is killed at a random point; every acknowledged message is delivered
 * after the restart (duplicates allowed). */
START_TEST(sigkill_loses_nothing)
{
    int pfd[2];
    ck_assert_int_eq(pipe(pfd), 0);
    srand((unsigned)time(NULL));
    int kill_after = 100 + rand() % 300;
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        close(pfd[0]);
        struct store *s = open_store(STORE_SYNC_FLUSH, 0);
        struct tmr *t = open_timer(s);
        (void)t;
        for (int i = 0; i < 2000; i++) {
            send_timer(s, "KT", i % 2, i, MSG_PROP_TIMER_DELAY_MS, 1500 + (i % 7) * 100);
            if (write(pfd[1], &i, sizeof(i)) != (ssize_t)sizeof(i))
                _exit(3);
        }
        for (;;)
            sleep_ms(100);
    }
    close(pfd[1]);
    int n = 0, x;
    while (n < kill_after && read(pfd[0], &x, sizeof(x)) == (ssize_t)sizeof(x))
        n++;
    sleep_ms(rand() % 300);
    kill(pid, SIGKILL);
    while (read(pfd[0], &x, sizeof(x)) == (ssize_t)sizeof(x))
        n++;
    close(pfd[0]);
    int status;
    waitpid(pid, &status, 0);
    ck_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    ck_assert_int_ge(n, kill_after);

    struct store *s = open_store(STORE_ASYNC_FLUSH, 0);
    struct tmr *t = open_timer(s);
    struct got *g = calloc(1, sizeof(*g));
    int64_t off[2] = { 0 };
    int missing = n;
    for (int i = 0; i < 800 && missing > 0; i++) {
        collect(s, "KT", 0, &off[0], g);
        collect(s, "KT", 1, &off[1], g);
        missing = 0;
        for (int k = 0; k < n; k++)
            missing += g->seen[k] == 0;
        sleep_ms(10);
    }
    ck_assert_int_eq(missing, 0);
    ck_assert_int_ge(g->min_lag, 0);
    tmr_close(t);
    store_close(s);
    free(g);
}
END_TEST

/* A slave's timer: links what replication brings without delivering,
 * drops what the master delivered, waits on a due message the master has
 * not read yet; promoted, it delivers exactly what the master had not. */
START_TEST(follower_follows_and_promotes)
{
    struct store *s = open_store(STORE_ASYNC_FLUSH, 0);
    struct tmr_config tc;
    timer_cfg(&tc);
    tc.follower = 1;
    struct tmr *t = NULL;
    ck_assert_int_eq(tmr_open(s, &tc, &t), 0);
    /* timer queue offsets: 0 A due at once, 1 B in 2.5 s, 2 C in 6 s, 3 D
     * and 4 E due at once; A, D and E are more than a slot in the past
     * when the follower reads them */
    int64_t delay[5] = { 100, 2500, 6000, 100, 100 };
    for (int i = 0; i < 5; i++)
        ck_assert_int_eq(send_timer(s, "RT", 0, i, MSG_PROP_TIMER_DELAY_MS, delay[i]), 1);
    sleep_ms(1300);
    struct tmr_stats st;
    tmr_get_stats(t, &st);
    ck_assert_uint_eq(st.enqueued, 0); /* no position from the master yet */
    /* the master delivered everything due so far and read A only */
    tmr_follow(t, now_ms(), 1);
    for (int i = 0; i < 300; i++) {
        tmr_get_stats(t, &st);
        if (st.enqueue_offset == 3)
            break;
        sleep_ms(10);
    }
    ck_assert_int_eq(st.enqueue_offset, 3); /* waits on D */
    ck_assert_uint_eq(st.enqueued, 2);      /* B and C */
    ck_assert_uint_eq(st.pending, 2);
    sleep_ms(1500); /* B is due: a follower does not deliver it */
    ck_assert_int_eq(store_max_queue_offset(s, "RT", 0), 0);
    tmr_follow(t, now_ms() + 600, 4); /* the master delivered B (its slot too) and D */
    for (int i = 0; i < 300; i++) {
        tmr_get_stats(t, &st);
        if (st.pending == 1 && st.enqueue_offset == 4)
            break;
        sleep_ms(10);
    }
    ck_assert_uint_eq(st.pending, 1);
    ck_assert_int_eq(st.enqueue_offset, 4); /* waits on E */
    ck_assert_int_eq(store_max_queue_offset(s, "RT", 0), 0);
    tmr_close(t);
    /* promoted: C when due, E at once; never A, B or D */
    t = open_timer(s);
    struct got g;
    memset(&g, 0, sizeof(g));
    int64_t off = 0;
    for (int i = 0; i < 600 && g.count < 2; i++) {
        collect(s, "RT", 0, &off, &g);
        sleep_ms(10);
    }
    sleep_ms(300);
    collect(s, "RT", 0, &off, &g);
    ck_assert_int_eq(g.count, 2);
    ck_assert_int_eq(g.seen[2], 1);
    ck_assert_int_eq(g.seen[4], 1);
    ck_assert_int_ge(g.min_lag, 0);
    tmr_close(t);
    store_close(s);
}
END_TEST

/* 200k messages far in the future: the timer's memory is the same as with
 * 1k, the log holds them on disk (not in the resident set), and a restart
 * rebuilds the same count. */
START_TEST(many_pending_memory_flat)
{
    struct store *s = open_store(STORE_ASYNC_FLUSH, 8u << 20);
    struct tmr *t = open_timer(s);
    enum { N = 200000, B = 500 };
    struct tmr_config tc;
    timer_cfg(&tc);
    static char pbuf[B][160];
    static struct store_msg msgs[B];
    char body[16] = "far-future";
    int64_t base = now_ms() + 24 * 3600 * 1000LL;
    struct tmr_stats a, b;
    int sent = 0;
    while (sent < N) {
        for (int k = 0; k < B; k++, sent++) {
            char v[32], src[64];
            size_t plen = 0, olen = 0;
            snprintf(v, sizeof(v), "%lld", (long long)(base + (int64_t)(sent % 86400) * 1000));
            msg_prop_append(src, sizeof(src), &plen, MSG_PROP_TIMER_DELIVER_MS, v, strlen(v));
            const char *to;
            int32_t qo;
            int64_t d;
            char err[128];
            ck_assert_int_eq(tmr_prepare_put(&tc, "Far", 0, 0, src, plen, now_ms(), &to, &qo, pbuf[k],
                                             sizeof(pbuf[k]), &olen, &d, err, sizeof(err)),
                             1);
            fill_msg(&msgs[k], to, qo, body, sizeof(body), pbuf[k], (uint32_t)olen);
        }
        struct store_put_result r;
        ck_assert_int_eq(store_put_batch(s, msgs, B, &r, NULL), STORE_PUT_OK);
        if (sent == 1000) {
            for (int i = 0; i < 500; i++) {
                tmr_get_stats(t, &a);
                if (a.enqueued == 1000)
                    break;
                sleep_ms(5);
            }
            ck_assert_uint_eq(a.enqueued, 1000);
        }
    }
    for (int i = 0; i < 3000; i++) {
        tmr_get_stats(t, &b);
        if (b.enqueued == N)
            break;
        sleep_ms(10);
    }
    ck_assert_uint_eq(b.enqueued, N);
    ck_assert_uint_eq(b.pending, N);
    ck_assert_uint_eq(b.wheel_bytes, a.wheel_bytes);
    ck_assert_uint_eq(b.heap_bytes, a.heap_bytes);
    ck_assert_uint_lt(b.wheel_bytes + b.heap_bytes, 40u << 20);
    ck_assert_uint_ge(b.log_bytes, (uint64_t)N * 40);
    /* the 8 MB log is on disk, not in the process: its pages behind the
     * append tail left the mapping as it grew */
    long lr = smaps_rss("/timer/timerlog/");
    ck_assert_msg(lr < (1L << 20), "timer log mapping holds %ld KiB", lr >> 10);
    tmr_close(t);
    t = open_timer(s);
    tmr_get_stats(t, &b);
    ck_assert_uint_eq(b.pending, N);
    lr = smaps_rss("/timer/timerlog/");
    ck_assert_msg(lr < (1L << 20), "timer log mapping holds %ld KiB after the rebuild", lr >> 10);
    ck_assert_uint_eq(b.delivered, 0);
    tmr_close(t);
    store_close(s);
}
END_TEST

int main(void)
{
    Suite *su = suite_create("timer");
    TCase *tc = tcase_create("timer");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, delivers_on_time_with_properties);
    tcase_add_test(tc, limits_and_rules);
    tcase_add_test(tc, restart_keeps_pending);
    tcase_add_test(tc, sigkill_loses_nothing);
    tcase_add_test(tc, many_pending_memory_flat);
    tcase_add_test(tc, follower_follows_and_promotes);
    suite_add_tcase(su, tc);
    SRunner *sr = srunner_create(su);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
