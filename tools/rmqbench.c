/*
 * rmqbench: producer and consumer benchmark.
 *
 * Producer: async mode pipelines a window of in-flight sends on a few event
 * loops (--threads, each with its own loop, client and producer), which is
 * far cheaper than a thread per request; sync mode runs -w threads each doing
 * one blocking send at a time, like RocketMQ's benchmark; oneway mode sends
 * without answers and bounds what it queues with a barrier request every
 * ONEWAY_BARRIER messages. Latencies go into per-thread log-linear
 * histograms (no per-sample storage) merged at the end; a progress line is
 * printed every second from counters the threads update atomically.
 *
 * Timer messages (--deliver-after, --deliver-spread): every message is due
 * at its send time plus a fixed delay, plus optionally (seq * 1000) % spread
 * ms, one second more per message, wrapping at the spread, so a long run
 * fills the broker's timer wheel over many distinct due seconds. The
 * transport formats the due time without allocating (bench_transport.h).
 *
 * Consumer: one loop with the client's managed consumer; latency is measured
 * from the store and the born timestamps to the receipt (wall clock, ms),
 * and for timer messages from the due time to the receipt: how late the
 * broker's timer delivered them. A message seen before its due time counts
 * as 0 in that histogram and as "early" (with the earliest margin kept), so
 * a timer that fires too soon does not hide in the percentiles.
 *
 * Transport: bench_transport.h; remoting (brokers directly, the default)
 * or grpc (a RocketMQ 5 proxy, --transport grpc --endpoint host:port).
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "bench_transport.h"
#include "histogram.h"
#include "log.h"

#define ONEWAY_BARRIER 1000
#define MAX_ERR_KINDS 16
#define MAX_THREADS 1024
#define MAX_DELIVER_MS 315360000000LL /* ten years, the broker's timerMaxDelaySec limit */

enum mode { MODE_ASYNC, MODE_SYNC, MODE_ONEWAY };

struct cfg {
    const char *ns, *topic, *group, *tags;
    bool keys, json, from_first;
    int size, window, threads, batch, connections, receives;
    const char *endpoint;
    enum mode mode;
    long long count;
    long long deliver_after;      /* ms; < 0: ordinary messages */
    long long deliver_spread;     /* ms; 0: none */
    double duration;
    const struct bt_ops *tx;
};

struct err_kind {
    int err, code;
    uint64_t n;
    char sample[160];
};

struct worker {
    const struct cfg *cfg;
    int idx;
    pthread_t th;
    struct ev_loop *loop;
    void *prod;
    struct hist hist;             /* microseconds */
    struct err_kind errs[MAX_ERR_KINDS];
    int nerrs;
    _Atomic uint64_t ok, failed, rt_sum_us, rt_max_us;
    uint64_t issued, inflight;
    uint64_t seq;
    char fatal[256];
    struct slot *slots;
    struct slot *free_slots;
};

struct slot {
    struct bt_slot bs;            /* first: passed to the transport */
    struct worker *w;
    struct timespec t0;
    struct slot *next;
};

static _Atomic long long g_issued;
static _Atomic bool g_stop;
static const char *g_body;

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

static int64_t elapsed_us(const struct timespec *t0)
{
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (int64_t)(t1.tv_sec - t0->tv_sec) * 1000000 + (t1.tv_nsec - t0->tv_nsec) / 1000;
}

/* Takes one message from the global budget; false when done. */
static bool take_one(const struct cfg *c)
{
    if (atomic_load_explicit(&g_stop, memory_order_relaxed))
        return false;
    if (c->count > 0) {
        long long n = atomic_fetch_add_explicit(&g_issued, 1, memory_order_relaxed);
        if (n >= c->count) {
            atomic_store(&g_stop, true);
            return false;
        }
    }
    return true;
}

static void note_error(struct worker *w, int err, int code, const char *msg)
{
    atomic_fetch_add_explicit(&w->failed, 1, memory_order_relaxed);
    for (int i = 0; i < w->nerrs; i++)
        if (w->errs[i].err == err && w->errs[i].code == code) {
            w->errs[i].n++;
            return;
        }
    if (w->nerrs < MAX_ERR_KINDS) {
        struct err_kind *k = &w->errs[w->nerrs++];
        k->err = err;
        k->code = code;
        k->n = 1;
        snprintf(k->sample, sizeof k->sample, "%s", msg && *msg ? msg : strerror(-err));
    }
}

static void note_ok(struct worker *w, int64_t us)
{
    hist_record(&w->hist, us);
    atomic_fetch_add_explicit(&w->ok, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&w->rt_sum_us, (uint64_t)us, memory_order_relaxed);
    uint64_t cur = atomic_load_explicit(&w->rt_max_us, memory_order_relaxed);
    while ((uint64_t)us > cur &&
           !atomic_compare_exchange_weak_explicit(&w->rt_max_us, &cur, (uint64_t)us,
                                                  memory_order_relaxed, memory_order_relaxed))
        ;
}

static void make_msg(struct worker *w, struct bt_msg *m, char *keybuf, size_t cap)
{
    const struct cfg *c = w->cfg;
    m->topic = c->topic;
    m->body = g_body;
    m->body_len = (uint32_t)c->size;
    m->tags = c->tags;
    m->keys = NULL;
    m->deliver_ms = 0;
    if (c->deliver_after >= 0) {
        /* a sequence unique over all workers, so the spread covers the
         * window whatever the thread count */
        uint64_t stride = (uint64_t)(c->mode == MODE_SYNC ? c->window : c->threads);
        uint64_t seq = w->seq * stride + (uint64_t)w->idx;
        int64_t off = c->deliver_spread > 0 ? (int64_t)(seq * 1000 % (uint64_t)c->deliver_spread) : 0;
        m->deliver_ms = wall_ms() + c->deliver_after + off;
    }
    if (c->keys) {
        snprintf(keybuf, cap, "bench-%d-%d-%llu", (int)getpid(), w->idx, (unsigned long long)w->seq);
        m->keys = keybuf;
    }
    w->seq++;
}

static void issue(struct worker *w);

static void on_sent(const struct bt_result *r, void *ud)
{
    struct slot *s = ud;
    struct worker *w = s->w;
    int64_t us = elapsed_us(&s->t0);
    if (r->err)
        note_error(w, r->err, r->code, r->errmsg);
    else
        note_ok(w, us);
    w->inflight--;
    s->next = w->free_slots;
    w->free_slots = s;
    issue(w);
    if (w->inflight == 0)
        ev_break(w->loop, EVBREAK_ALL);
}

/* Fills the window with async sends. */
static void issue(struct worker *w)
{
    char key[96];
    while (w->free_slots && take_one(w->cfg)) {
        struct slot *s = w->free_slots;
        w->free_slots = s->next;
        struct bt_msg m;
        make_msg(w, &m, key, sizeof key);
        s->bs.cb = on_sent;
        s->bs.ud = s;
        clock_gettime(CLOCK_MONOTONIC, &s->t0);
        w->issued++;
        int rc = w->cfg->tx->send(w->prod, &m, &s->bs);
        if (rc) {
            note_error(w, rc, -1, "the send was refused locally");
            s->next = w->free_slots;
            w->free_slots = s;
            continue;
        }
        w->inflight++;
    }
}

static void stop_check_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
    (void)revents;
    struct worker *w = t->data;
    if (atomic_load(&g_stop) && w->inflight == 0)
        ev_break(loop, EVBREAK_ALL);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    const struct cfg *c = w->cfg;
    w->loop = ev_loop_new(EVFLAG_AUTO);
    if (!w->loop) {
        snprintf(w->fatal, sizeof w->fatal, "cannot create an event loop");
        atomic_store(&g_stop, true);
        return NULL;
    }
    struct bt_producer_opts po = { c->tx == &bt_grpc ? c->endpoint : c->ns, c->group, 3000, c->topic,
                                   c->connections };
    w->prod = c->tx->producer_new(w->loop, &po, w->fatal, sizeof w->fatal);
    if (!w->prod) {
        atomic_store(&g_stop, true);
        ev_loop_destroy(w->loop);
        return NULL;
    }
    char key[96];
    if (c->mode == MODE_SYNC) {
        while (take_one(c)) {
            struct bt_msg m;
            struct bt_result r;
            struct timespec t0;
            make_msg(w, &m, key, sizeof key);
            clock_gettime(CLOCK_MONOTONIC, &t0);
            w->issued++;
            if (c->tx->send_sync(w->prod, &m, &r))
                note_error(w, r.err, r.code, r.errmsg);
            else
                note_ok(w, elapsed_us(&t0));
        }
    } else if (c->mode == MODE_ONEWAY) {
        uint64_t since = 0;
        while (take_one(c)) {
            struct bt_msg m;
            make_msg(w, &m, key, sizeof key);
            w->issued++;
            int rc = c->tx->send_oneway(w->prod, &m);
            if (rc) {
                note_error(w, rc, -1, "oneway send refused");
            } else {
                atomic_fetch_add_explicit(&w->ok, 1, memory_order_relaxed);
            }
            ev_run(w->loop, EVRUN_NOWAIT);
            if (++since == ONEWAY_BARRIER) {
                since = 0;
                int brc = c->tx->barrier(w->prod, c->topic);
                if (brc)
                    note_error(w, brc < 0 ? brc : -EPROTO, brc > 0 ? brc : -1, "barrier request failed");
            }
        }
        c->tx->barrier(w->prod, c->topic);
    } else {
        int win = c->window / c->threads + (w->idx < c->window % c->threads ? 1 : 0);
        if (win < 1)
            win = 1;
        w->slots = calloc((size_t)win, sizeof *w->slots);
        if (!w->slots) {
            snprintf(w->fatal, sizeof w->fatal, "out of memory");
            atomic_store(&g_stop, true);
        } else {
            for (int i = 0; i < win; i++) {
                w->slots[i].w = w;
                w->slots[i].next = w->free_slots;
                w->free_slots = &w->slots[i];
            }
            ev_timer stop_t;
            ev_timer_init(&stop_t, stop_check_cb, 0.05, 0.05);
            stop_t.data = w;
            ev_timer_start(w->loop, &stop_t);
            issue(w);
            if (w->inflight > 0 || !atomic_load(&g_stop))
                ev_run(w->loop, 0);
            ev_timer_stop(w->loop, &stop_t);
        }
    }
    c->tx->producer_free(w->prod);
    free(w->slots);
    ev_loop_destroy(w->loop);
    return NULL;
}

static void on_signal(int sig)
{
    (void)sig;
    atomic_store(&g_stop, true);
}

static const char *mode_name(enum mode m)
{
    return m == MODE_SYNC ? "sync" : m == MODE_ONEWAY ? "oneway" : "async";
}

static int run_producer(const struct cfg *c)
{
    char *body = malloc((size_t)c->size + 1);
    if (!body) {
        fprintf(stderr, "rmqbench: out of memory\n");
        return 1;
    }
    for (int i = 0; i < c->size; i++)
        body[i] = (char)('a' + i % 26);
    body[c->size] = 0;
    g_body = body;
    int nthreads = c->mode == MODE_SYNC ? c->window : c->threads;
    struct worker *ws = calloc((size_t)nthreads, sizeof *ws);
    if (!ws) {
        free(body);
        fprintf(stderr, "rmqbench: out of memory\n");
        return 1;
    }
    FILE *prog = c->json ? stderr : stdout;
    double t0 = now_s();
    int started = 0;
    for (int i = 0; i < nthreads; i++) {
        ws[i].cfg = c;
        ws[i].idx = i;
        hist_init(&ws[i].hist);
        if (pthread_create(&ws[i].th, NULL, worker_main, &ws[i])) {
            fprintf(stderr, "rmqbench: cannot start thread %d\n", i);
            atomic_store(&g_stop, true);
            break;
        }
        started++;
    }
    uint64_t last_ok = 0, last_failed = 0, last_sum = 0;
    double last_t = t0;
    bool all_done = false;
    while (!all_done) {
        usleep(100 * 1000);
        double t = now_s();
        if (c->duration > 0 && t - t0 >= c->duration)
            atomic_store(&g_stop, true);
        all_done = atomic_load(&g_stop);
        if (t - last_t < 1.0 && !all_done)
            continue;
        if (all_done)
            break;
        uint64_t ok = 0, failed = 0, sum = 0, max = 0;
        for (int i = 0; i < started; i++) {
            ok += atomic_load(&ws[i].ok);
            failed += atomic_load(&ws[i].failed);
            sum += atomic_load(&ws[i].rt_sum_us);
            uint64_t m = atomic_exchange(&ws[i].rt_max_us, 0);
            if (m > max)
                max = m;
        }
        double dt = t - last_t;
        uint64_t dok = ok - last_ok;
        fprintf(prog, "[%6.1fs] send TPS %9.0f  failed %llu  avg RT %7.3f ms  max RT %7.3f ms  total %llu\n",
                t - t0, (double)dok / dt, (unsigned long long)(failed - last_failed),
                dok ? (double)(sum - last_sum) / (double)dok / 1000.0 : 0.0, (double)max / 1000.0,
                (unsigned long long)ok);
        fflush(prog);
        last_ok = ok;
        last_failed = failed;
        last_sum = sum;
        last_t = t;
    }
    for (int i = 0; i < started; i++)
        pthread_join(ws[i].th, NULL);
    double elapsed = now_s() - t0;
    struct hist *h = malloc(sizeof *h);
    if (!h) {
        free(ws);
        free(body);
        return 1;
    }
    hist_init(h);
    uint64_t issued = 0, ok = 0, failed = 0;
    struct err_kind errs[MAX_ERR_KINDS * 4];
    int nerrs = 0;
    int rc = 0;
    for (int i = 0; i < started; i++) {
        hist_merge(h, &ws[i].hist);
        issued += ws[i].issued;
        ok += atomic_load(&ws[i].ok);
        failed += atomic_load(&ws[i].failed);
        if (ws[i].fatal[0]) {
            fprintf(stderr, "rmqbench: thread %d: %s\n", i, ws[i].fatal);
            rc = 1;
        }
        for (int k = 0; k < ws[i].nerrs; k++) {
            int j;
            for (j = 0; j < nerrs; j++)
                if (errs[j].err == ws[i].errs[k].err && errs[j].code == ws[i].errs[k].code)
                    break;
            if (j == nerrs) {
                if (nerrs == (int)(sizeof errs / sizeof errs[0]))
                    continue;
                errs[nerrs++] = ws[i].errs[k];
            } else {
                errs[j].n += ws[i].errs[k].n;
            }
        }
    }
    double tps = elapsed > 0 ? (double)ok / elapsed : 0;
    double bps = tps * c->size;
    static const double pct[] = { 50, 90, 99, 99.9 };
    static const char *const pname[] = { "p50", "p90", "p99", "p99.9" };
    if (c->json) {
        json_t *o = json_object();
        json_object_set_new(o, "role", json_string("producer"));
        json_object_set_new(o, "transport", json_string(c->tx->name));
        json_object_set_new(o, "mode", json_string(mode_name(c->mode)));
        json_object_set_new(o, "topic", json_string(c->topic));
        json_object_set_new(o, "messageSize", json_integer(c->size));
        json_object_set_new(o, "window", json_integer(c->window));
        json_object_set_new(o, "threads", json_integer(nthreads));
        json_object_set_new(o, "seconds", json_real(elapsed));
        json_object_set_new(o, "sent", json_integer((json_int_t)issued));
        json_object_set_new(o, "acknowledged", json_integer((json_int_t)ok));
        json_object_set_new(o, "failed", json_integer((json_int_t)failed));
        json_object_set_new(o, "tps", json_real(tps));
        json_object_set_new(o, "bytesPerSecond", json_real(bps));
        if (c->deliver_after >= 0) {
            json_object_set_new(o, "deliverAfterMs", json_integer(c->deliver_after));
            json_object_set_new(o, "deliverSpreadMs", json_integer(c->deliver_spread));
        }
        json_t *lat = json_object();
        if (c->mode != MODE_ONEWAY && h->count) {
            json_object_set_new(lat, "avg", json_real(hist_mean(h) / 1000.0));
            for (int i = 0; i < 4; i++)
                json_object_set_new(lat, pname[i], json_real((double)hist_percentile(h, pct[i]) / 1000.0));
            json_object_set_new(lat, "max", json_real((double)h->max / 1000.0));
        }
        json_object_set_new(o, "latencyMs", lat);
        json_t *ej = json_array();
        for (int i = 0; i < nerrs; i++) {
            json_t *e = json_object();
            json_object_set_new(e, "error", json_string(errs[i].err ? strerror(-errs[i].err) : "ok"));
            json_object_set_new(e, "code", json_integer(errs[i].code));
            json_object_set_new(e, "count", json_integer((json_int_t)errs[i].n));
            json_object_set_new(e, "example", json_string(errs[i].sample));
            json_array_append_new(ej, e);
        }
        json_object_set_new(o, "errors", ej);
        json_dumpf(o, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        putchar('\n');
        json_decref(o);
    } else {
        printf("\nproducer summary (%s, %s): topic %s, %d-byte messages, %s %d, %.2f s\n",
               c->tx->name, mode_name(c->mode), c->topic, c->size,
               c->mode == MODE_SYNC ? "threads" : "window", c->mode == MODE_SYNC ? nthreads : c->window,
               elapsed);
        printf("  sent %llu = acknowledged %llu + failed %llu\n", (unsigned long long)issued,
               (unsigned long long)ok, (unsigned long long)failed);
        printf("  TPS %.0f, %.2f MiB/s\n", tps, bps / (1024.0 * 1024.0));
        if (c->deliver_after >= 0 && c->deliver_spread)
            printf("  timer messages: due %lld ms after sending, plus up to %lld ms of spread\n",
                   c->deliver_after, c->deliver_spread);
        else if (c->deliver_after >= 0)
            printf("  timer messages: due %lld ms after sending\n", c->deliver_after);
        if (c->mode != MODE_ONEWAY && h->count) {
            printf("  latency ms: avg %.3f", hist_mean(h) / 1000.0);
            for (int i = 0; i < 4; i++)
                printf("  %s %.3f", pname[i], (double)hist_percentile(h, pct[i]) / 1000.0);
            printf("  max %.3f\n", (double)h->max / 1000.0);
        }
        for (int i = 0; i < nerrs; i++)
            printf("  errors: %llu x %s (code %d), e.g. %s\n", (unsigned long long)errs[i].n,
                   strerror(-errs[i].err), errs[i].code, errs[i].sample);
    }
    free(h);
    free(ws);
    free(body);
    if (ok == 0 && issued > 0)
        rc = 1;
    return rc;
}

struct crun {
    const struct cfg *cfg;
    struct ev_loop *loop;
    struct hist store_lat, born_lat;   /* ms */
    struct hist due_lat, due_tick;     /* ms; due_tick: since the last progress line */
    uint64_t early;                    /* timer messages received before their due time */
    int64_t earliest;                  /* most negative receipt - due, ms */
    uint64_t received, bytes, last_received;
    double t0, last_t;
    bool done;
    FILE *prog;
};

static int on_recv(const struct bt_recv *msgs, int n, void *ud)
{
    struct crun *r = ud;
    int64_t now = wall_ms();
    for (int i = 0; i < n; i++) {
        hist_record(&r->store_lat, now - msgs[i].store_ts);
        hist_record(&r->born_lat, now - msgs[i].born_ts);
        if (msgs[i].due_ms) {
            int64_t lag = now - msgs[i].due_ms;
            if (lag < 0) {
                r->early++;
                if (lag < r->earliest)
                    r->earliest = lag;
                lag = 0;
            }
            hist_record(&r->due_lat, lag);
            hist_record(&r->due_tick, lag);
        }
        r->bytes += msgs[i].body_len;
    }
    r->received += (uint64_t)n;
    if (r->cfg->count > 0 && r->received >= (uint64_t)r->cfg->count) {
        r->done = true;
        ev_break(r->loop, EVBREAK_ALL);
    }
    return 0;
}

static void tick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)revents;
    struct crun *r = w->data;
    double t = now_s();
    if (atomic_load(&g_stop) || (r->cfg->duration > 0 && t - r->t0 >= r->cfg->duration)) {
        r->done = true;
        ev_break(loop, EVBREAK_ALL);
        return;
    }
    if (t - r->last_t >= 1.0) {
        fprintf(r->prog, "[%6.1fs] consume TPS %9.0f  total %llu  store->recv p99 %lld ms", t - r->t0,
                (double)(r->received - r->last_received) / (t - r->last_t),
                (unsigned long long)r->received, (long long)hist_percentile(&r->store_lat, 99));
        if (r->due_tick.count)
            fprintf(r->prog, "  due->recv p99 %lld ms (last %.0f s)  early %llu",
                    (long long)hist_percentile(&r->due_tick, 99), t - r->last_t, (unsigned long long)r->early);
        else if (r->due_lat.count)
            fprintf(r->prog, "  due->recv none in the last %.0f s  early %llu", t - r->last_t,
                    (unsigned long long)r->early);
        fputc('\n', r->prog);
        fflush(r->prog);
        if (r->due_tick.count)
            hist_init(&r->due_tick);
        r->last_received = r->received;
        r->last_t = t;
    }
}

static int run_consumer(const struct cfg *c)
{
    struct crun *r = calloc(1, sizeof *r);
    if (!r)
        return 1;
    r->cfg = c;
    r->prog = c->json ? stderr : stdout;
    hist_init(&r->store_lat);
    hist_init(&r->born_lat);
    hist_init(&r->due_lat);
    hist_init(&r->due_tick);
    r->loop = ev_loop_new(EVFLAG_AUTO);
    char err[256];
    struct bt_consumer_opts co = { c->tx == &bt_grpc ? c->endpoint : c->ns, c->group, c->topic, c->batch,
                                   c->from_first, on_recv, r, c->connections, c->receives };
    void *cs = r->loop ? c->tx->consumer_new(r->loop, &co, err, sizeof err) : NULL;
    if (!cs) {
        fprintf(stderr, "rmqbench consumer: %s\n", r->loop ? err : "cannot create an event loop");
        if (r->loop)
            ev_loop_destroy(r->loop);
        free(r);
        return 1;
    }
    r->t0 = r->last_t = now_s();
    ev_timer tick;
    ev_timer_init(&tick, tick_cb, 0.1, 0.1);
    tick.data = r;
    ev_timer_start(r->loop, &tick);
    int rc = c->tx->consumer_start(cs);
    if (rc) {
        fprintf(stderr, "rmqbench consumer: cannot start: %s\n", strerror(-rc));
    } else {
        while (!r->done)
            ev_run(r->loop, EVRUN_ONCE);
    }
    double elapsed = now_s() - r->t0;
    ev_timer_stop(r->loop, &tick);
    int src = c->tx->consumer_stop(cs);
    c->tx->consumer_free(cs);
    ev_loop_destroy(r->loop);
    double tps = elapsed > 0 ? (double)r->received / elapsed : 0;
    static const double pct[] = { 50, 90, 99, 99.9 };
    static const char *const pname[] = { "p50", "p90", "p99", "p99.9" };
    if (c->json) {
        json_t *o = json_object();
        json_object_set_new(o, "role", json_string("consumer"));
        json_object_set_new(o, "transport", json_string(c->tx->name));
        json_object_set_new(o, "topic", json_string(c->topic));
        json_object_set_new(o, "group", json_string(c->group));
        json_object_set_new(o, "seconds", json_real(elapsed));
        json_object_set_new(o, "received", json_integer((json_int_t)r->received));
        json_object_set_new(o, "tps", json_real(tps));
        json_object_set_new(o, "bytesPerSecond", json_real(elapsed > 0 ? (double)r->bytes / elapsed : 0));
        const struct hist *hs[2] = { &r->store_lat, &r->born_lat };
        const char *names[2] = { "storeToReceiptMs", "bornToReceiptMs" };
        for (int k = 0; k < 2; k++) {
            json_t *l = json_object();
            if (hs[k]->count) {
                json_object_set_new(l, "avg", json_real(hist_mean(hs[k])));
                for (int i = 0; i < 4; i++)
                    json_object_set_new(l, pname[i], json_integer(hist_percentile(hs[k], pct[i])));
                json_object_set_new(l, "max", json_integer(hs[k]->max));
            }
            json_object_set_new(o, names[k], l);
        }
        if (r->due_lat.count) {
            const struct hist *h = &r->due_lat;
            json_t *l = json_object();
            json_object_set_new(l, "count", json_integer((json_int_t)h->count));
            json_object_set_new(l, "avg", json_real(hist_mean(h)));
            for (int i = 0; i < 4; i++)
                json_object_set_new(l, pname[i], json_integer(hist_percentile(h, pct[i])));
            json_object_set_new(l, "max", json_integer(h->max));
            json_object_set_new(l, "early", json_integer((json_int_t)r->early));
            if (r->early)
                json_object_set_new(l, "earliestMs", json_integer(r->earliest));
            json_object_set_new(o, "dueToReceiptMs", l);
        }
        json_dumpf(o, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        putchar('\n');
        json_decref(o);
    } else {
        printf("\nconsumer summary (%s): topic %s, group %s, %.2f s\n", c->tx->name, c->topic, c->group,
               elapsed);
        printf("  received %llu, TPS %.0f, %.2f MiB/s\n", (unsigned long long)r->received, tps,
               elapsed > 0 ? (double)r->bytes / elapsed / (1024.0 * 1024.0) : 0.0);
        const struct hist *hs[2] = { &r->store_lat, &r->born_lat };
        const char *names[2] = { "store->receipt", "born->receipt" };
        for (int k = 0; k < 2 && hs[k]->count; k++) {
            printf("  %s ms: avg %.1f", names[k], hist_mean(hs[k]));
            for (int i = 0; i < 4; i++)
                printf("  %s %lld", pname[i], (long long)hist_percentile(hs[k], pct[i]));
            printf("  max %lld\n", (long long)hs[k]->max);
        }
        if (r->due_lat.count) {
            const struct hist *h = &r->due_lat;
            printf("  due->receipt ms (%llu timer messages): avg %.1f", (unsigned long long)h->count,
                   hist_mean(h));
            for (int i = 0; i < 4; i++)
                printf("  %s %lld", pname[i], (long long)hist_percentile(h, pct[i]));
            printf("  max %lld\n", (long long)h->max);
            if (r->early)
                printf("  early: %llu received before their due time (counted as 0 above), the earliest %lld ms "
                       "before\n",
                       (unsigned long long)r->early, (long long)-r->earliest);
            else
                printf("  early: none received before their due time\n");
        }
    }
    if (src)
        fprintf(stderr, "rmqbench consumer: committing offsets at shutdown failed: %s\n", strerror(-src));
    free(r);
    return rc ? 1 : 0;
}

static void usage(FILE *out)
{
    fprintf(out,
            "usage: rmqbench producer|consumer [flags]\n\n"
            "common flags:\n"
            "  -n ADDRS            nameservers \"host:port;host:port\" (default $NAMESRV_ADDR or 127.0.0.1:9876)\n"
            "  -t TOPIC            topic (default BenchmarkTest)\n"
            "  --count N           stop after N messages\n"
            "  --duration SECONDS  stop after this time (default 10 without --count)\n"
            "  --json              summary as JSON on stdout (progress goes to stderr)\n"
            "  --transport T       remoting (brokers, via the nameservers) or grpc (a RocketMQ 5\n"
            "                      proxy; -n is not used) (default remoting)\n"
            "  --endpoint H:P      proxy gRPC endpoint for --transport grpc (default 127.0.0.1:8081)\n"
            "  --connections N     gRPC connections per producer thread / consumer (default 4)\n"
            "producer flags:\n"
            "  -s BYTES            message size (default 128)\n"
            "  -w N                in-flight window (async) / sending threads (sync) (default 64)\n"
            "  --threads N         event loops for async and oneway (default 1)\n"
            "  --mode MODE         sync, async or oneway (default async)\n"
            "  --keys              give every message a unique key (indexed by the broker)\n"
            "  --tags TAG          tag every message\n"
            "  -g GROUP            producer group (default benchmark_producer)\n"
            "  --deliver-after MS  timer messages: each is due MS ms after it is sent (remoting:\n"
            "                      TIMER_DELIVER_MS; grpc: a DELAY message with delivery_timestamp)\n"
            "  --deliver-spread MS with --deliver-after: add (seq * 1000) %% MS to the due time, so\n"
            "                      the messages fall into MS/1000 distinct seconds (0 or >= 1000;\n"
            "                      default 0)\n"
            "consumer flags:\n"
            "  -g GROUP            consumer group (default benchmark_consumer)\n"
            "  --batch N           pull batch size (default 32)\n"
            "  --from first|last   where a new group starts (default last; remoting only: through\n"
            "                      the proxy a new group starts at the first message still in memory)\n"
            "  -w N                grpc: ReceiveMessage calls in flight (default 16)\n"
            "  messages with a due time (remoting: TIMER_OUT_MS, else TIMER_DELIVER_MS; grpc:\n"
            "  delivery_timestamp) add a due->receipt histogram and a count of those received early\n");
}

static int parse_int(const char *flag, const char *v, long long min, long long max, long long *out)
{
    char *end;
    errno = 0;
    long long x = v ? strtoll(v, &end, 10) : 0;
    if (!v || errno || end == v || *end || x < min || x > max) {
        fprintf(stderr, "rmqbench: bad value '%s' for %s: expected an integer in %lld..%lld\n",
                v ? v : "", flag, min, max);
        return -1;
    }
    *out = x;
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    bool producer = strcmp(argv[1], "producer") == 0;
    if (!producer && strcmp(argv[1], "consumer") != 0) {
        fprintf(stderr, "rmqbench: unknown role '%s'; valid: producer, consumer\n", argv[1]);
        return 2;
    }
    struct cfg c = { 0 };
    c.ns = getenv("NAMESRV_ADDR");
    if (!c.ns || !*c.ns)
        c.ns = "127.0.0.1:9876";
    c.topic = "BenchmarkTest";
    c.size = 128;
    c.window = 64;
    c.threads = 1;
    c.batch = 32;
    c.mode = MODE_ASYNC;
    c.deliver_after = -1;
    c.tx = &bt_remoting;
    for (int i = 2; i < argc; i++) {
        const char *f = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        long long x;
        bool takes = true;
        if (strcmp(f, "-h") == 0 || strcmp(f, "--help") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(f, "--json") == 0) {
            c.json = true;
            takes = false;
        } else if (strcmp(f, "--keys") == 0 && producer) {
            c.keys = true;
            takes = false;
        } else if (!v) {
            fprintf(stderr, "rmqbench: flag '%s' is unknown or needs a value (see --help)\n", f);
            return 2;
        } else if (strcmp(f, "-n") == 0) {
            c.ns = v;
        } else if (strcmp(f, "--transport") == 0) {
            if (strcmp(v, "remoting") == 0)
                c.tx = &bt_remoting;
            else if (strcmp(v, "grpc") == 0)
                c.tx = &bt_grpc;
            else {
                fprintf(stderr, "rmqbench: bad value '%s' for --transport: expected remoting or grpc\n", v);
                return 2;
            }
        } else if (strcmp(f, "--endpoint") == 0) {
            c.endpoint = v;
        } else if (strcmp(f, "--connections") == 0) {
            if (parse_int(f, v, 1, 64, &x))
                return 2;
            c.connections = (int)x;
        } else if (strcmp(f, "-w") == 0 && !producer) {
            if (parse_int(f, v, 1, 4096, &x))
                return 2;
            c.receives = (int)x;
        } else if (strcmp(f, "-t") == 0) {
            c.topic = v;
        } else if (strcmp(f, "-g") == 0) {
            c.group = v;
        } else if (strcmp(f, "--count") == 0) {
            if (parse_int(f, v, 1, (long long)1e15, &c.count))
                return 2;
        } else if (strcmp(f, "--duration") == 0) {
            char *end;
            c.duration = strtod(v, &end);
            if (end == v || *end || c.duration <= 0) {
                fprintf(stderr, "rmqbench: bad value '%s' for --duration: expected seconds > 0\n", v);
                return 2;
            }
        } else if (strcmp(f, "-s") == 0 && producer) {
            if (parse_int(f, v, 1, 4 * 1024 * 1024, &x))
                return 2;
            c.size = (int)x;
        } else if (strcmp(f, "-w") == 0 && producer) {
            if (parse_int(f, v, 1, 65536, &x))
                return 2;
            c.window = (int)x;
        } else if (strcmp(f, "--threads") == 0 && producer) {
            if (parse_int(f, v, 1, 256, &x))
                return 2;
            c.threads = (int)x;
        } else if (strcmp(f, "--mode") == 0 && producer) {
            if (strcmp(v, "sync") == 0)
                c.mode = MODE_SYNC;
            else if (strcmp(v, "async") == 0)
                c.mode = MODE_ASYNC;
            else if (strcmp(v, "oneway") == 0)
                c.mode = MODE_ONEWAY;
            else {
                fprintf(stderr, "rmqbench: bad value '%s' for --mode: expected sync, async or oneway\n", v);
                return 2;
            }
        } else if (strcmp(f, "--tags") == 0 && producer) {
            c.tags = v;
        } else if (strcmp(f, "--deliver-after") == 0 && producer) {
            if (parse_int(f, v, 0, MAX_DELIVER_MS, &c.deliver_after))
                return 2;
        } else if (strcmp(f, "--deliver-spread") == 0 && producer) {
            if (parse_int(f, v, 0, MAX_DELIVER_MS, &c.deliver_spread))
                return 2;
            if (c.deliver_spread > 0 && c.deliver_spread < 1000) {
                fprintf(stderr, "rmqbench: --deliver-spread steps by whole seconds: use 0 or at least 1000\n");
                return 2;
            }
        } else if (strcmp(f, "--batch") == 0 && !producer) {
            if (parse_int(f, v, 1, 1024, &x))
                return 2;
            c.batch = (int)x;
        } else if (strcmp(f, "--from") == 0 && !producer) {
            if (strcmp(v, "first") && strcmp(v, "last")) {
                fprintf(stderr, "rmqbench: bad value '%s' for --from: expected first or last\n", v);
                return 2;
            }
            c.from_first = strcmp(v, "first") == 0;
        } else {
            fprintf(stderr, "rmqbench %s: unknown flag '%s' (see --help)\n", argv[1], f);
            return 2;
        }
        if (takes)
            i++;
    }
    if (c.deliver_spread > 0 && c.deliver_after < 0) {
        fprintf(stderr, "rmqbench: --deliver-spread needs --deliver-after\n");
        return 2;
    }
    if (!c.endpoint)
        c.endpoint = "127.0.0.1:8081";
    if (c.mode == MODE_SYNC && c.window > MAX_THREADS) {
        fprintf(stderr, "rmqbench: sync mode uses one thread per -w; at most %d\n", MAX_THREADS);
        return 2;
    }
    if (c.threads > c.window)
        c.threads = c.window;
    if (c.count == 0 && c.duration == 0)
        c.duration = 10;
    if (!c.group)
        c.group = producer ? "benchmark_producer" : "benchmark_consumer";
    log_set_ident("rmqbench");
    log_set_level(LOG_LVL_ERROR);
    struct sigaction sa = { 0 };
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    return producer ? run_producer(&c) : run_consumer(&c);
}
