/*
 * HA replication bench (not installed): a master and a slave store in
 * temporary directories replicate over 127.0.0.1 on one libev loop while a
 * producer thread puts 1 KiB messages into the master as fast as it can.
 * Prints the put rate, the replication throughput (MB/s until the slave
 * holds the master's whole log) and the lag (bytes and ms behind) sampled
 * every 10 ms.
 *
 * Usage: ha_bench [messages (default 500000)] [body bytes (default 1024)]
 *                 [rate msg/s (default 0: as fast as possible)]
 */
#define _XOPEN_SOURCE 700
#include <errno.h>
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ha.h"
#include "log.h"
#include "store.h"

struct bench {
    struct store *m, *s;
    struct ha *hm, *hs;
    struct ev_loop *loop;
    long count;
    uint32_t body_len;
    long rate;
    int done_put;             /* atomic */
    int64_t put_end_ms;       /* atomic */
    int64_t t0;
    int64_t max_lag_bytes, lag_sum, lag_n;
    int64_t caught_ms;
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void *producer(void *arg)
{
    struct bench *b = arg;
    char *body = malloc(b->body_len);
    if (!body)
        abort();
    memset(body, 'x', b->body_len);
    struct store_msg m;
    memset(&m, 0, sizeof(m));
    m.topic = "HaBench";
    m.body = body;
    m.body_len = b->body_len;
    m.born_ts = 1700000000000LL;
    m.born_host.ip[0] = 127;
    m.born_host.ip[3] = 1;
    m.born_host.port = 1;
    for (long i = 0; i < b->count; i++) {
        m.queue_id = (int32_t)(i % 8);
        struct store_put_result r;
        if (store_put(b->m, &m, &r) != STORE_PUT_OK) {
            fprintf(stderr, "put failed: %s\n", r.remark);
            break;
        }
        if ((i & 15) == 0)
            ha_notify_new_data(b->hm);
        if (b->rate > 0 && (i % 100) == 99) {
            int64_t due = b->t0 + (i + 1) * 1000 / b->rate, now = now_ms();
            if (due > now) {
                struct timespec ts = { (due - now) / 1000, (long)((due - now) % 1000) * 1000000L };
                nanosleep(&ts, NULL);
            }
        }
    }
    ha_notify_new_data(b->hm);
    free(body);
    __atomic_store_n(&b->put_end_ms, now_ms(), __ATOMIC_RELEASE);
    __atomic_store_n(&b->done_put, 1, __ATOMIC_RELEASE);
    return NULL;
}

static void sample_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct bench *b = w->data;
    int64_t mx = store_commitlog_max_offset(b->m), sx = store_commitlog_max_offset(b->s);
    int64_t lag = mx - sx;
    if (lag > b->max_lag_bytes)
        b->max_lag_bytes = lag;
    b->lag_sum += lag;
    b->lag_n++;
    if (__atomic_load_n(&b->done_put, __ATOMIC_ACQUIRE) && lag == 0) {
        b->caught_ms = now_ms();
        ev_break(loop, EVBREAK_ALL);
    }
}

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw) { return remove(p); }

static struct store *open_store(const char *dir)
{
    struct store_config c;
    store_config_defaults(&c);
    c.root_dir = dir;
    c.commitlog_file_size = 256ull * 1024 * 1024;
    c.store_host = "127.0.0.1:10911";
    c.message_index_enable = 0;
    struct store *s = NULL;
    if (store_open(&c, &s) < 0)
        return NULL;
    return s;
}

int main(int argc, char **argv)
{
    struct bench b;
    memset(&b, 0, sizeof(b));
    b.count = argc > 1 ? atol(argv[1]) : 500000;
    b.body_len = argc > 2 ? (uint32_t)atol(argv[2]) : 1024;
    b.rate = argc > 3 ? atol(argv[3]) : 0;
    if (b.count <= 0 || b.body_len == 0 || b.body_len > 1024 * 1024 || b.rate < 0) {
        fprintf(stderr, "usage: ha_bench [messages] [body bytes] [rate msg/s]\n");
        return 2;
    }
    log_set_level(LOG_LVL_WARN);
    char dm[] = "/tmp/ha_bench_m_XXXXXX", ds[] = "/tmp/ha_bench_s_XXXXXX";
    if (!mkdtemp(dm) || !mkdtemp(ds)) {
        perror("mkdtemp");
        return 1;
    }
    int rc = 1;
    b.m = open_store(dm);
    b.s = open_store(ds);
    b.loop = ev_loop_new(EVFLAG_AUTO);
    if (!b.m || !b.s || !b.loop)
        goto out;
    struct ha_config cfg;
    ha_config_defaults(&cfg);
    cfg.listen_host = "127.0.0.1";
    cfg.listen_port = 0;
    int err;
    b.hm = ha_master_start(b.loop, b.m, &cfg, &err);
    if (!b.hm)
        goto out;
    char addr[64];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", ha_master_port(b.hm));
    b.hs = ha_slave_start(b.loop, b.s, addr, &cfg, &err);
    if (!b.hs)
        goto out;
    ev_timer sample;
    ev_timer_init(&sample, sample_cb, 0.01, 0.01);
    sample.data = &b;
    ev_timer_start(b.loop, &sample);
    pthread_t thr;
    b.t0 = now_ms();
    if (pthread_create(&thr, NULL, producer, &b) != 0)
        goto out;
    ev_run(b.loop, 0);
    pthread_join(thr, NULL);
    ev_timer_stop(b.loop, &sample);
    int64_t bytes = store_commitlog_max_offset(b.m);
    double put_s = (double)(b.put_end_ms - b.t0) / 1000.0, rep_s = (double)(b.caught_ms - b.t0) / 1000.0;
    if (put_s <= 0)
        put_s = 0.001;
    if (rep_s <= 0)
        rep_s = 0.001;
    printf("messages %ld x %u B body, log %.1f MB\n", b.count, b.body_len, (double)bytes / 1e6);
    printf("put:         %.0f msg/s, %.1f MB/s (%.2f s)\n", (double)b.count / put_s, (double)bytes / 1e6 / put_s,
           put_s);
    printf("replication: %.1f MB/s (slave complete after %.2f s, %lld ms after the last put)\n",
           (double)bytes / 1e6 / rep_s, rep_s, (long long)(b.caught_ms - b.put_end_ms));
    printf("lag:         mean %.1f KB, max %.1f KB (sampled every 10 ms)\n",
           b.lag_n ? (double)b.lag_sum / (double)b.lag_n / 1e3 : 0.0, (double)b.max_lag_bytes / 1e3);
    rc = 0;
out:
    ha_free(b.hs);
    ha_free(b.hm);
    if (b.s)
        store_close(b.s);
    if (b.m)
        store_close(b.m);
    if (b.loop)
        ev_loop_destroy(b.loop);
    nftw(dm, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    nftw(ds, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    if (rc)
        fprintf(stderr, "ha_bench failed\n");
    return rc;
}
