/*
 * timer_bench: timer messages under load.
 *   1. schedules N messages (default 1M) one hour to one day ahead and
 *      reports the scheduling rate, the pending count and the process
 *      memory (anonymous vs mapped-file pages);
 *   2. sends R messages/s (default 20k) for S seconds (default 10), each due
 *      3 s after it is sent, and reports the delivery lag (store time of the
 *      delivered message - due time) from the delivered records.
 * Usage: timer_bench [dir] [pending] [rate] [seconds]
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "message.h"
#include "store.h"
#include "timer.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void print_mem(const char *when)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return;
    char line[256];
    long rss = 0, anon = 0, file = 0;
    while (fgets(line, sizeof(line), f)) {
        sscanf(line, "VmRSS: %ld", &rss);
        sscanf(line, "RssAnon: %ld", &anon);
        sscanf(line, "RssFile: %ld", &file);
    }
    fclose(f);
    printf("%s: VmRSS %ld MiB (anonymous %ld MiB, mapped files %ld MiB)\n", when, rss / 1024, anon / 1024,
           file / 1024);
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static char body[256];
static char pbuf[1000][128];
static struct store_msg msgs[1000];

int main(int argc, char **argv)
{
    char tmpl[] = "/tmp/timer_bench_XXXXXX";
    const char *base = argc > 1 ? argv[1] : mkdtemp(tmpl);
    long pending = argc > 2 ? atol(argv[2]) : 1000000;
    long rate = argc > 3 ? atol(argv[3]) : 20000;
    long secs = argc > 4 ? atol(argv[4]) : 10;
    if (!base || pending < 0 || rate <= 0 || secs <= 0) {
        fprintf(stderr, "usage: timer_bench [dir] [pending] [rate] [seconds]\n");
        return 2;
    }
    log_set_level(LOG_LVL_WARN);
    memset(body, 'p', sizeof(body));
    struct store_config sc;
    store_config_defaults(&sc);
    char sdir[4096], tdir[4200];
    snprintf(sdir, sizeof(sdir), "%s/store", base);
    snprintf(tdir, sizeof(tdir), "%s/timer", sdir);
    sc.root_dir = sdir;
    struct store *s;
    int rc = store_open(&sc, &s);
    if (rc < 0) {
        fprintf(stderr, "store_open(%s): %s\n", sdir, strerror(-rc));
        return 1;
    }
    struct tmr_config tc;
    tmr_config_defaults(&tc);
    tc.root_dir = tdir;
    struct tmr *t;
    if ((rc = tmr_open(s, &tc, &t)) < 0) {
        fprintf(stderr, "tmr_open: %s\n", strerror(-rc));
        return 1;
    }
    print_mem("after open");

    double t0 = now_s();
    int64_t far = wall_ms() + 3600 * 1000LL;
    for (long sent = 0; sent < pending;) {
        int n = pending - sent < 1000 ? (int)(pending - sent) : 1000;
        for (int k = 0; k < n; k++) {
            char v[32], src[64], err[128];
            size_t plen = 0, olen = 0;
            snprintf(v, sizeof(v), "%" PRId64, far + (int64_t)((sent + k) % 86400) * 1000);
            msg_prop_append(src, sizeof(src), &plen, MSG_PROP_TIMER_DELIVER_MS, v, strlen(v));
            const char *to;
            int32_t qo;
            int64_t d;
            if (tmr_prepare_put(&tc, "FarTopic", 0, 0, src, plen, wall_ms(), &to, &qo, pbuf[k], sizeof(pbuf[k]),
                                &olen, &d, err, sizeof(err)) != 1) {
                fprintf(stderr, "prepare: %s\n", err);
                return 1;
            }
            memset(&msgs[k], 0, sizeof(msgs[k]));
            msgs[k].topic = to;
            msgs[k].queue_id = qo;
            msgs[k].body = body;
            msgs[k].body_len = sizeof(body);
            msgs[k].props = pbuf[k];
            msgs[k].props_len = (uint32_t)olen;
            msgs[k].born_ts = wall_ms();
        }
        struct store_put_result r;
        if (store_put_batch(s, msgs, (size_t)n, &r, NULL) != STORE_PUT_OK) {
            fprintf(stderr, "put: %s %s\n", store_put_status_str(r.status), r.remark);
            return 1;
        }
        sent += n;
    }
    double put_dt = now_s() - t0;
    struct tmr_stats st;
    for (;;) {
        tmr_get_stats(t, &st);
        if ((long)st.enqueued >= pending)
            break;
        usleep(10000);
    }
    double enq_dt = now_s() - t0;
    printf("scheduled %ld messages (256 B bodies) in %.2fs (%.0f/s stored); linked into the wheel after %.2fs "
           "(%.0f/s)\n",
           pending, put_dt, pending / put_dt, enq_dt, pending / enq_dt);
    printf("pending %" PRIu64 ", wheel %" PRIu64 " MiB (reserved, touched pages only), timer heap %" PRIu64
           " KiB, timer log %" PRIu64 " MiB on disk\n",
           st.pending, st.wheel_bytes >> 20, st.heap_bytes >> 10, st.log_bytes >> 20);
    print_mem("with the pending messages");

    long total = rate * secs;
    int64_t *lags = malloc((size_t)total * sizeof(*lags));
    if (!lags)
        return 1;
    uint64_t delivered0 = st.delivered;
    t0 = now_s();
    long sent = 0;
    while (sent < total) {
        long due = (long)((now_s() - t0) * (double)rate) + 1;
        if (due > total)
            due = total;
        for (; sent < due; sent++) {
            char v[32], src[64], out[256], err[128];
            size_t plen = 0, olen = 0;
            snprintf(v, sizeof(v), "%" PRId64, wall_ms() + 3000);
            msg_prop_append(src, sizeof(src), &plen, MSG_PROP_TIMER_DELIVER_MS, v, strlen(v));
            const char *to;
            int32_t qo;
            int64_t d;
            if (tmr_prepare_put(&tc, "LagTopic", 0, 0, src, plen, wall_ms(), &to, &qo, out, sizeof(out), &olen, &d,
                                err, sizeof(err)) != 1) {
                fprintf(stderr, "prepare: %s\n", err);
                return 1;
            }
            struct store_msg m = { .topic = to, .queue_id = qo, .body = body, .body_len = sizeof(body),
                                   .props = out, .props_len = (uint32_t)olen, .born_ts = wall_ms() };
            struct store_put_result r;
            if (store_put(s, &m, &r) != STORE_PUT_OK) {
                fprintf(stderr, "put: %s\n", r.remark);
                return 1;
            }
        }
        usleep(1000);
    }
    double send_dt = now_s() - t0;
    for (int i = 0; i < 3000; i++) {
        tmr_get_stats(t, &st);
        if (st.delivered - delivered0 >= (uint64_t)total)
            break;
        usleep(10000);
    }
    struct store_view v[64];
    int64_t off = 0;
    long n = 0;
    while (n < total) {
        struct store_get_req req = { "LagTopic", 0, off, 64, 0, NULL, NULL, v };
        struct store_get_result res;
        if (store_get(s, &req, &res) != STORE_GET_FOUND) {
            store_hold_release(&res.hold);
            break;
        }
        for (uint32_t i = 0; i < res.count && n < total; i++) {
            struct msg_record r;
            const char *pv;
            size_t pl;
            if (msg_record_decode(v[i].data, v[i].len, &r, 0) > 0 &&
                msg_prop_get(r.props, r.props_len, MSG_PROP_TIMER_OUT_MS, &pv, &pl))
                lags[n++] = r.store_ts - strtoll(pv, NULL, 10);
        }
        off = res.next_begin_offset;
        store_hold_release(&res.hold);
    }
    qsort(lags, (size_t)n, sizeof(*lags), cmp_i64);
    printf("sent %ld timer messages at %.0f/s (due 3 s later), %ld delivered; lag p50 %" PRId64 " ms, p99 %" PRId64
           " ms, max %" PRId64 " ms, min %" PRId64 " ms (wheel precision %d ms)\n",
           total, total / send_dt, n, n ? lags[n / 2] : -1, n ? lags[n * 99 / 100] : -1, n ? lags[n - 1] : -1,
           n ? lags[0] : -1, tc.precision_ms);
    print_mem("after the lag run");
    free(lags);
    tmr_close(t);
    store_close(s);
    printf("data left in %s (remove it when done)\n", base);
    return 0;
}
