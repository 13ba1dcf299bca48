/*
 * Flushing and housekeeping threads of the store.
 *
 * The commitlog flush thread implements both flush modes. In SYNC_FLUSH it
 * sleeps until someone waits for durability, then makes everything
 * committed so far durable with one msync and completes every waiter that
 * the flush covers: one disk sync serves all puts that arrived before it
 * (group commit). In ASYNC_FLUSH it flushes every flushIntervalCommitLog ms
 * once flushCommitLogLeastPages pages are dirty (all of it every
 * flushCommitLogThoroughInterval). Puts never wait here; waiters get a
 * callback instead, and the dispatch thread fires FLUSH_DISK_TIMEOUT for
 * waiters whose flush takes longer than syncFlushTimeout.
 *
 * The housekeeping thread flushes consume queues and the index, writes the
 * checkpoint, drops their pages behind the writers from the mapping,
 * samples TPS and runs the retention / disk-usage pass.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "log.h"
#include "store_int.h"

#define LD(x) __atomic_load_n(&(x), __ATOMIC_ACQUIRE)
#define LOGICS_SWEEP_MS 10000 /* consume queues: drop what readers faulted in */

static void deadline_ts(struct timespec *ts, int ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

static int fw_push(struct store *s, const struct flush_waiter *w)
{
    if (s->fw_len == s->fw_cap) {
        size_t nc = s->fw_cap ? s->fw_cap * 2 : 256;
        struct flush_waiter *nv = malloc(nc * sizeof(*nv));
        if (!nv)
            return -ENOMEM;
        for (size_t i = 0; i < s->fw_len; i++)
            nv[i] = s->fw[(s->fw_head + i) % s->fw_cap];
        free(s->fw);
        s->fw = nv;
        s->fw_cap = nc;
        s->fw_head = 0;
    }
    s->fw[(s->fw_head + s->fw_len) % s->fw_cap] = *w;
    s->fw_len++;
    return 0;
}

/* Pops the head waiter if pred holds; called with fw_mu held. */
static int fw_pop_if(struct store *s, int64_t flushed, int64_t now, int any, struct flush_waiter *out,
                     enum store_put_status *st)
{
    if (!s->fw_len)
        return 0;
    struct flush_waiter *h = &s->fw[s->fw_head];
    if (h->end <= flushed)
        *st = STORE_PUT_OK;
    else if (now >= 0 && h->deadline <= now)
        *st = STORE_PUT_FLUSH_DISK_TIMEOUT;
    else if (any)
        *st = STORE_PUT_SERVICE_NOT_AVAILABLE;
    else
        return 0;
    *out = *h;
    s->fw_head = (s->fw_head + 1) % s->fw_cap;
    s->fw_len--;
    return 1;
}

static void complete_waiters(struct store *s, int64_t flushed, int64_t now, int any)
{
    struct flush_waiter w;
    enum store_put_status st;
    pthread_mutex_lock(&s->fw_mu);
    while (fw_pop_if(s, flushed, now, any, &w, &st)) {
        pthread_mutex_unlock(&s->fw_mu);
        w.cb(st, w.ud);
        pthread_mutex_lock(&s->fw_mu);
    }
    pthread_mutex_unlock(&s->fw_mu);
}

void flush_expire_waiters(struct store *s)
{
    complete_waiters(s, cl_flushed_offset(s->cl), store_mono_ms(), 0);
}

int store_flush_wait(struct store *s, int64_t end_offset, store_flush_cb cb, void *ud)
{
    if (end_offset <= cl_flushed_offset(s->cl))
        return 1;
    if (end_offset > cl_max_offset(s->cl))
        return -EINVAL;
    struct flush_waiter w = { end_offset, store_mono_ms() + s->cfg.sync_flush_timeout_ms, cb, ud };
    pthread_mutex_lock(&s->fw_mu);
    if (end_offset <= cl_flushed_offset(s->cl)) {
        pthread_mutex_unlock(&s->fw_mu);
        return 1;
    }
    int rc = fw_push(s, &w);
    if (rc == 0 && s->fw_len == 1)
        pthread_cond_signal(&s->fw_cv);
    pthread_mutex_unlock(&s->fw_mu);
    return rc;
}

struct blocking_wait {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
    enum store_put_status st;
};

static void blocking_cb(enum store_put_status st, void *ud)
{
    struct blocking_wait *b = ud;
    pthread_mutex_lock(&b->mu);
    b->st = st;
    b->done = 1;
    pthread_cond_signal(&b->cv);
    pthread_mutex_unlock(&b->mu);
}

enum store_put_status store_flush_wait_blocking(struct store *s, int64_t end_offset)
{
    struct blocking_wait b = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, STORE_PUT_OK };
    int rc = store_flush_wait(s, end_offset, blocking_cb, &b);
    if (rc == 1)
        return STORE_PUT_OK;
    if (rc < 0)
        return STORE_PUT_UNKNOWN_ERROR;
    pthread_mutex_lock(&b.mu);
    while (!b.done)
        pthread_cond_wait(&b.cv, &b.mu);
    pthread_mutex_unlock(&b.mu);
    pthread_mutex_destroy(&b.mu);
    pthread_cond_destroy(&b.cv);
    return b.st;
}

static void *flush_main(void *arg)
{
    struct store *s = arg;
    int sync = s->cfg.flush_type == STORE_SYNC_FLUSH;
    int64_t last_thorough = store_mono_ms();
    for (;;) {
        pthread_mutex_lock(&s->fw_mu);
        if (sync) {
            while (!LD(s->stopping) && s->fw_len == 0)
                pthread_cond_wait(&s->fw_cv, &s->fw_mu);
        } else if (!LD(s->stopping) && s->fw_len == 0) {
            struct timespec ts;
            deadline_ts(&ts, s->cfg.flush_interval_commitlog_ms);
            pthread_cond_timedwait(&s->fw_cv, &s->fw_mu, &ts);
        }
        int waiters = s->fw_len > 0;
        pthread_mutex_unlock(&s->fw_mu);
        int stop = LD(s->stopping);
        int least = s->cfg.flush_commitlog_least_pages;
        int64_t now = store_mono_ms();
        if (sync || waiters || stop || now - last_thorough >= s->cfg.flush_commitlog_thorough_interval_ms) {
            least = 0;
            last_thorough = now;
        }
        if (s->cfg.test_flush_delay_ms > 0 && !stop)
            usleep((useconds_t)s->cfg.test_flush_delay_ms * 1000);
        int64_t ts = 0;
        int rc = cl_flush(s->cl, least, &ts);
        if (rc == 1)
            __atomic_store_n(&s->physic_ts, ts, __ATOMIC_RELEASE);
        if (rc < 0) {
            /* keep waiters until the timeout fires; retry shortly */
            usleep(10000);
        }
        complete_waiters(s, cl_flushed_offset(s->cl), -1, 0);
        if (stop && cl_flushed_offset(s->cl) >= cl_max_offset(s->cl)) {
            complete_waiters(s, cl_flushed_offset(s->cl), -1, 1);
            break;
        }
        if (stop && rc < 0) {
            complete_waiters(s, cl_flushed_offset(s->cl), -1, 1);
            break;
        }
    }
    return NULL;
}

int checkpoint_write(struct store *s)
{
    uint8_t page[4096];
    memset(page, 0, sizeof(page));
    pthread_mutex_lock(&s->cp_mu);
    wr_u64be(page, (uint64_t)s->cp_physic);
    wr_u64be(page + 8, (uint64_t)s->cp_logics);
    wr_u64be(page + 16, (uint64_t)s->cp_index);
    ssize_t w = pwrite(s->cp_fd, page, sizeof(page), 0);
    int rc = 0;
    if (w != (ssize_t)sizeof(page))
        rc = w < 0 ? -errno : -EIO;
    else if (fdatasync(s->cp_fd) < 0)
        rc = -errno;
    pthread_mutex_unlock(&s->cp_mu);
    if (rc < 0)
        log_error("store: checkpoint write failed: %s", strerror(-rc));
    return rc;
}

int flush_logics(struct store *s, int thorough)
{
    int least = thorough ? 0 : s->cfg.flush_cq_least_pages;
    int64_t physic = LD(s->physic_ts);
    int64_t logics = LD(s->logics_ts);
    int rc = 0;
    pthread_rwlock_rdlock(&s->qlock);
    for (size_t i = 0; i < s->qcap; i++)
        for (struct qent *q = s->qtab[i]; q; q = q->next)
            if (q->cq) {
                int r = cq_flush(q->cq, least);
                if (r < 0)
                    rc = r;
            }
    pthread_rwlock_unlock(&s->qlock);
    int64_t its = 0;
    if (s->idx) {
        int r = idx_flush(s->idx, &its);
        if (r < 0)
            rc = r;
    }
    if (rc < 0)
        return rc;
    pthread_mutex_lock(&s->cp_mu);
    if (physic > s->cp_physic)
        s->cp_physic = physic;
    /* entries dispatched before the flush above are durable now; with a
     * least-pages flush some may still be dirty, so only advance when all
     * consume queues were flushed */
    if (thorough && logics > s->cp_logics)
        s->cp_logics = logics;
    if (its > s->cp_index)
        s->cp_index = its;
    pthread_mutex_unlock(&s->cp_mu);
    return checkpoint_write(s);
}

/* Drops consume-queue pages readers faulted in behind the kept tails (the
 * writers drop their own as they go) and index pages (hash slots are
 * written all over a file, so there is no "behind"), so what the queues and
 * the index keep mapped stays bounded however long they grow or however far
 * back a reader went. Off when the commitlog keeps everything mapped. */
static void release_logics(struct store *s, int sweep)
{
    if (s->cfg.commitlog_mapped_trail_bytes == 0)
        return;
    if (sweep) {
        pthread_rwlock_rdlock(&s->qlock);
        for (size_t i = 0; i < s->qcap; i++)
            for (struct qent *q = s->qtab[i]; q; q = q->next)
                if (q->cq)
                    cq_release_cold(q->cq);
        pthread_rwlock_unlock(&s->qlock);
    }
    if (s->idx)
        idx_release(s->idx);
}

static void *svc_main(void *arg)
{
    struct store *s = arg;
    int64_t last_cq = store_mono_ms(), last_thorough = last_cq, last_clean = last_cq;
    int64_t last_sweep = 0;
    int tick = s->cfg.flush_interval_cq_ms < 1000 ? s->cfg.flush_interval_cq_ms : 1000;
    if (tick < 10)
        tick = 10;
    for (;;) {
        pthread_mutex_lock(&s->svc_mu);
        if (!LD(s->stopping)) {
            struct timespec ts;
            deadline_ts(&ts, tick);
            pthread_cond_timedwait(&s->svc_cv, &s->svc_mu, &ts);
        }
        pthread_mutex_unlock(&s->svc_mu);
        if (LD(s->stopping))
            break;
        int64_t now = store_mono_ms();
        if (now - last_cq >= s->cfg.flush_interval_cq_ms) {
            int thorough = now - last_thorough >= s->cfg.flush_cq_thorough_interval_ms;
            flush_logics(s, thorough);
            last_cq = now;
            if (thorough)
                last_thorough = now;
            int sweep = now - last_sweep >= LOGICS_SWEEP_MS;
            release_logics(s, sweep);
            if (sweep)
                last_sweep = now;
        }
        if (now - s->tps_last_ms >= 1000) {
            uint64_t c = LD(s->put_count);
            s->tps = (double)(c - s->tps_last_count) * 1000.0 / (double)(now - s->tps_last_ms);
            s->tps_last_count = c;
            s->tps_last_ms = now;
        }
        if (now - last_clean >= s->cfg.clean_resource_interval_ms) {
            store_cleanup_pass(s, 0);
            last_clean = now;
        } else {
            store_check_disk(s);
        }
    }
    return NULL;
}

int flush_start(struct store *s)
{
    s->tps_last_ms = store_mono_ms();
    int rc = pthread_create(&s->flush_thr, NULL, flush_main, s);
    if (rc != 0)
        return -rc;
    s->threads |= 2;
    rc = pthread_create(&s->svc_thr, NULL, svc_main, s);
    if (rc != 0)
        return -rc;
    s->threads |= 4;
    return 0;
}

void flush_stop(struct store *s)
{
    __atomic_store_n(&s->stopping, 1, __ATOMIC_RELEASE);
    if (s->threads & 2) {
        pthread_mutex_lock(&s->fw_mu);
        pthread_cond_broadcast(&s->fw_cv);
        pthread_mutex_unlock(&s->fw_mu);
        pthread_join(s->flush_thr, NULL);
        s->threads &= ~2;
    }
    if (s->threads & 4) {
        pthread_mutex_lock(&s->svc_mu);
        pthread_cond_broadcast(&s->svc_cv);
        pthread_mutex_unlock(&s->svc_mu);
        pthread_join(s->svc_thr, NULL);
        s->threads &= ~4;
    }
}
