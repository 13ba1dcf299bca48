/*
 * Commitlog: space management, publication, flush, recovery and retention
 * over a queue of mapped segments (see commitlog.h).
 *
 * Segment allocation runs ahead of the writer (RocketMQ's
 * AllocateMappedFileService): a background thread creates and preallocates
 * the next segment file as soon as the writer enters a segment, hands it
 * over, and then faults its pages into the page cache (read-populate, so
 * nothing is dirtied or written twice). When the writer rolls it takes the
 * ready segment under the put lock without touching the file system, and
 * its stores hit resident pages. If the allocator is behind or failed, the
 * writer waits for the file being created or creates it itself.
 *
 * A preallocated segment that never received a record holds only zeros;
 * recovery truncates it away like any segment after the log end, and a
 * clean close deletes it.
 */
#include "commitlog.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "log.h"
#include "message.h"

#define PAGE 4096

struct commitlog {
    struct mfq q;
    size_t seg_size;
    struct mfile *cur;      /* put lock: segment being appended to (own reference) */
    int64_t end;            /* put lock: append position */
    int64_t committed;      /* atomic: readers see records below this */
    int64_t last_ts;        /* atomic: store time of the last committed record */
    int64_t flushed;        /* atomic */
    pthread_mutex_t flush_lock;

    pthread_mutex_t al_mu;  /* allocator state below */
    pthread_cond_t al_cv;
    pthread_t al_thr;
    int al_running;
    int al_stop;            /* atomic */
    int64_t al_want;        /* start of the next segment to prepare, -1 none */
    int64_t al_busy;        /* start of the segment being created, -1 none */
    struct mfile *al_ready; /* created, not yet taken (own reference) */
    struct mfile *al_warm;  /* to populate from al_warm_pos first */
    int64_t al_warm_pos;
};

int cl_open(const char *dir, size_t seg_size, struct commitlog **out)
{
    struct commitlog *cl = calloc(1, sizeof(*cl));
    if (!cl)
        return -ENOMEM;
    int rc = mfq_init(&cl->q, dir, seg_size);
    if (rc < 0) {
        free(cl);
        return rc;
    }
    if ((rc = mfq_load(&cl->q)) < 0) {
        mfq_destroy(&cl->q);
        free(cl);
        return rc;
    }
    cl->seg_size = seg_size;
    pthread_mutex_init(&cl->flush_lock, NULL);
    pthread_mutex_init(&cl->al_mu, NULL);
    pthread_cond_init(&cl->al_cv, NULL);
    cl->al_want = cl->al_busy = -1;
    *out = cl;
    return 0;
}

static void *alloc_main(void *arg)
{
    struct commitlog *cl = arg;
    pthread_mutex_lock(&cl->al_mu);
    for (;;) {
        while (!cl->al_stop && !cl->al_warm && (cl->al_want < 0 || cl->al_ready))
            pthread_cond_wait(&cl->al_cv, &cl->al_mu);
        if (cl->al_stop)
            break;
        if (cl->al_warm) {
            struct mfile *w = cl->al_warm;
            int64_t pos = cl->al_warm_pos;
            cl->al_warm = NULL;
            pthread_mutex_unlock(&cl->al_mu);
            int rc = mf_populate(w, pos, &cl->al_stop);
            if (rc < 0)
                log_warn("store: cannot prefault %s: %s", w->path, strerror(-rc));
            mf_unref(w);
            pthread_mutex_lock(&cl->al_mu);
            continue;
        }
        int64_t from = cl->al_want;
        cl->al_want = -1;
        cl->al_busy = from;
        pthread_mutex_unlock(&cl->al_mu);
        struct mfile *f = NULL;
        int rc = mfq_create(&cl->q, from, &f);
        pthread_mutex_lock(&cl->al_mu);
        cl->al_busy = -1;
        if (rc == 0) {
            mf_ref(f);
            cl->al_ready = f;
            cl->al_warm = f;
            cl->al_warm_pos = 0;
        }
        pthread_cond_broadcast(&cl->al_cv);
    }
    pthread_mutex_unlock(&cl->al_mu);
    return NULL;
}

/* Asks the allocator for the segment starting at from; al_mu held. */
static void want_segment(struct commitlog *cl, int64_t from)
{
    if (!cl->al_running || (cl->al_ready && cl->al_ready->from == from) || cl->al_busy == from)
        return;
    if (cl->al_ready) {
        mf_discard(cl->al_ready); /* not the one we need (log truncated) */
        cl->al_ready = NULL;
    }
    cl->al_want = from;
    pthread_cond_broadcast(&cl->al_cv);
}

int cl_start_allocator(struct commitlog *cl)
{
    pthread_mutex_lock(&cl->al_mu);
    int rc = pthread_create(&cl->al_thr, NULL, alloc_main, cl);
    if (rc == 0) {
        cl->al_running = 1;
        if (cl->cur) {
            mf_ref(cl->cur);
            cl->al_warm = cl->cur;
            cl->al_warm_pos = cl->end - cl->cur->from;
            want_segment(cl, cl->cur->from + (int64_t)cl->seg_size);
        } else {
            want_segment(cl, cl->end - cl->end % (int64_t)cl->seg_size);
        }
        pthread_cond_broadcast(&cl->al_cv);
    }
    pthread_mutex_unlock(&cl->al_mu);
    if (rc != 0)
        log_warn("store: cannot start the segment allocator (%s); segments are created on demand",
                 strerror(rc));
    return -rc;
}

void cl_stop_allocator(struct commitlog *cl)
{
    pthread_mutex_lock(&cl->al_mu);
    int running = cl->al_running;
    __atomic_store_n(&cl->al_stop, 1, __ATOMIC_RELEASE);
    pthread_cond_broadcast(&cl->al_cv);
    pthread_mutex_unlock(&cl->al_mu);
    if (running)
        pthread_join(cl->al_thr, NULL);
    pthread_mutex_lock(&cl->al_mu);
    cl->al_running = 0;
    if (cl->al_warm) {
        mf_unref(cl->al_warm);
        cl->al_warm = NULL;
    }
    if (cl->al_ready) {
        mf_discard(cl->al_ready);
        cl->al_ready = NULL;
    }
    pthread_mutex_unlock(&cl->al_mu);
}

/* Returns the segment starting at from (one reference, not yet in the
 * queue): the allocator's if it has (or is making) it, else a new one. */
static int take_segment(struct commitlog *cl, int64_t from, struct mfile **out)
{
    pthread_mutex_lock(&cl->al_mu);
    while (cl->al_busy == from)
        pthread_cond_wait(&cl->al_cv, &cl->al_mu);
    struct mfile *f = NULL;
    if (cl->al_ready && cl->al_ready->from == from) {
        f = cl->al_ready;
        cl->al_ready = NULL;
    }
    if (cl->al_want == from)
        cl->al_want = -1; /* we create it ourselves: the allocator must not */
    pthread_mutex_unlock(&cl->al_mu);
    int rc = 0;
    if (!f)
        rc = mfq_create(&cl->q, from, &f);
    if (rc == 0 && (rc = mfq_append(&cl->q, f)) < 0)
        mf_discard(f);
    if (rc < 0)
        return rc;
    mf_ref(f);
    pthread_mutex_lock(&cl->al_mu);
    want_segment(cl, from + (int64_t)cl->seg_size);
    pthread_mutex_unlock(&cl->al_mu);
    *out = f;
    return 0;
}

void cl_close(struct commitlog *cl)
{
    if (!cl)
        return;
    cl_stop_allocator(cl);
    mf_unref(cl->cur);
    mfq_destroy(&cl->q);
    pthread_mutex_destroy(&cl->flush_lock);
    pthread_mutex_destroy(&cl->al_mu);
    pthread_cond_destroy(&cl->al_cv);
    free(cl);
}

size_t cl_seg_size(struct commitlog *cl) { return cl->seg_size; }
size_t cl_seg_count(struct commitlog *cl) { return mfq_count(&cl->q); }

static int all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return 0;
    return 1;
}

int cl_recover(struct commitlog *cl, int abnormal, int64_t cp_ts, int64_t *scan_start)
{
    size_t n = mfq_count(&cl->q);
    *scan_start = 0;
    if (n == 0) {
        cl->end = 0;
        __atomic_store_n(&cl->committed, 0, __ATOMIC_RELEASE);
        cl->flushed = 0;
        return 0;
    }
    size_t start = n > 3 ? n - 3 : 0;
    if (abnormal) {
        start = 0;
        for (size_t i = n; i-- > 0;) {
            struct mfile *f = mfq_at(&cl->q, i);
            struct msg_record r;
            int rc = msg_record_decode(f->base, f->size, &r, 1);
            int64_t ts = rc > 0 ? r.store_ts : -1;
            mf_unref(f);
            if (rc > 0 && cp_ts > 0 && ts <= cp_ts) {
                start = i;
                break;
            }
        }
    }
    size_t i = start;
    struct mfile *f = mfq_at(&cl->q, i);
    *scan_start = f->from;
    int64_t pos = 0;
    const char *why = "clean end";
    int dirty = 0;
    for (;;) {
        struct msg_record r;
        int rc;
        if ((size_t)pos + MSG_END_FILE_MIN_BLANK > f->size) {
            why = "no room for an end marker";
            dirty = 1;
            break;
        }
        rc = msg_record_decode(f->base + pos, f->size - (size_t)pos, &r, 1);
        if (rc > 0) {
            if (r.phys_offset != f->from + pos) {
                why = "record with a wrong physical offset";
                dirty = 1;
                break;
            }
            pos += rc;
            continue;
        }
        if (rc == 0) {
            if ((int64_t)r.total_size != (int64_t)f->size - pos) {
                why = "bad end-of-segment marker";
                dirty = 1;
                break;
            }
            struct mfile *next = mfq_at(&cl->q, i + 1);
            if (!next)
                break; /* the end sits at the marker; the next put rolls */
            mf_unref(f);
            f = next;
            i++;
            pos = 0;
            continue;
        }
        if (all_zero(f->base + pos, 8)) {
            why = "clean end";
        } else {
            why = rc == -EAGAIN ? "torn record" : "corrupt record (structure or body CRC)";
            dirty = 1;
        }
        break;
    }
    int64_t end = f->from + pos;
    size_t later = n - 1 - i;
    int64_t junk = 0;
    if (dirty || abnormal || later) {
        int64_t z = mf_zero_tail(f, pos);
        if (z < 0)
            log_error("store: commitlog: cannot clear the tail of %s: %s", f->path, strerror((int)-z));
        else
            junk = z;
    }
    mf_unref(f);
    mfq_truncate(&cl->q, end);
    if (dirty || junk || later)
        log_warn("store: commitlog recovery: %s at offset %lld; truncated %lld bytes in the last "
                 "segment and %zu later segment(s)", why, (long long)end, (long long)junk, later);
    else
        log_info("store: commitlog recovered, end offset %lld", (long long)end);
    cl->end = end;
    mf_unref(cl->cur);
    cl->cur = mfq_last(&cl->q);
    __atomic_store_n(&cl->committed, end, __ATOMIC_RELEASE);
    __atomic_store_n(&cl->flushed, end, __ATOMIC_RELEASE);
    return 0;
}

static int roll(struct commitlog *cl)
{
    int64_t from = cl->cur ? cl->cur->from + (int64_t)cl->seg_size : cl->end - cl->end % (int64_t)cl->seg_size;
    struct mfile *nf;
    int rc = take_segment(cl, from, &nf);
    if (rc < 0)
        return rc;
    if (cl->cur) {
        /* seal the old segment with the blank marker covering its rest */
        int64_t pos = cl->end - cl->cur->from;
        if (pos < (int64_t)cl->seg_size) {
            wr_u32be(cl->cur->base + pos, (uint32_t)((int64_t)cl->seg_size - pos));
            wr_u32be(cl->cur->base + pos + 4, MSG_BLANK_MAGIC_CODE);
        }
        mf_set_wrote(cl->cur, (int64_t)cl->seg_size);
        mf_unref(cl->cur);
    }
    cl->cur = nf;
    cl->end = from;
    return 0;
}

int cl_reserve(struct commitlog *cl, uint32_t n, uint8_t **dst, int64_t *phys)
{
    if ((size_t)n + MSG_END_FILE_MIN_BLANK > cl->seg_size)
        return -E2BIG;
    if (!cl->cur || cl->end - cl->cur->from + (int64_t)n + MSG_END_FILE_MIN_BLANK > (int64_t)cl->seg_size) {
        int rc = roll(cl);
        if (rc < 0)
            return rc;
    }
    int64_t pos = cl->end - cl->cur->from;
    *dst = cl->cur->base + pos;
    *phys = cl->end;
    cl->end += n;
    return 0;
}

void cl_commit(struct commitlog *cl, int64_t store_ts)
{
    mf_set_wrote(cl->cur, cl->end - cl->cur->from);
    __atomic_store_n(&cl->committed, cl->end, __ATOMIC_RELEASE);
    __atomic_store_n(&cl->last_ts, store_ts, __ATOMIC_RELEASE);
}

int64_t cl_min_offset(struct commitlog *cl)
{
    int64_t m = mfq_min_offset(&cl->q);
    return m < 0 ? 0 : m;
}

int64_t cl_max_offset(struct commitlog *cl) { return __atomic_load_n(&cl->committed, __ATOMIC_ACQUIRE); }
int64_t cl_flushed_offset(struct commitlog *cl) { return __atomic_load_n(&cl->flushed, __ATOMIC_ACQUIRE); }

int cl_locate(struct commitlog *cl, int64_t phys, const uint8_t **p, size_t *avail, struct mfile **seg)
{
    int64_t end = cl_max_offset(cl);
    if (phys >= end)
        return -ENOENT;
    struct mfile *f = mfq_find(&cl->q, phys);
    if (!f)
        return phys < cl_min_offset(cl) || mfq_count(&cl->q) == 0 ? -ERANGE : -ENOENT;
    int64_t lim = f->from + (int64_t)f->size;
    if (lim > end)
        lim = end;
    *p = f->base + (phys - f->from);
    *avail = (size_t)(lim - phys);
    *seg = f;
    return 0;
}

int64_t cl_roll_next(struct commitlog *cl, int64_t phys)
{
    return phys + (int64_t)cl->seg_size - phys % (int64_t)cl->seg_size;
}

int cl_flush(struct commitlog *cl, int least_pages, int64_t *flushed_ts)
{
    pthread_mutex_lock(&cl->flush_lock);
    int64_t ts = __atomic_load_n(&cl->last_ts, __ATOMIC_ACQUIRE);
    int64_t target = cl_max_offset(cl);
    int64_t fl = cl_flushed_offset(cl);
    if (target <= fl || (least_pages > 0 && target / PAGE - fl / PAGE < least_pages)) {
        pthread_mutex_unlock(&cl->flush_lock);
        return 0;
    }
    int rc = 0;
    for (int64_t off = fl; off < target && rc == 0;) {
        struct mfile *f = mfq_find(&cl->q, off);
        if (!f) {
            off = cl_roll_next(cl, off);
            continue;
        }
        int64_t upto = target - f->from;
        if (upto > (int64_t)f->size)
            upto = (int64_t)f->size;
        rc = mf_flush(f, upto);
        off = f->from + (int64_t)f->size;
        mf_unref(f);
    }
    if (rc == 0) {
        __atomic_store_n(&cl->flushed, target, __ATOMIC_RELEASE);
        if (flushed_ts)
            *flushed_ts = ts;
    }
    pthread_mutex_unlock(&cl->flush_lock);
    return rc < 0 ? rc : 1;
}

int cl_delete_expired(struct commitlog *cl, int64_t now_ms, int64_t expire_ms, int force, int max,
                      int64_t limit, int64_t *bytes)
{
    int n = 0;
    *bytes = 0;
    while (n < max && mfq_count(&cl->q) > 1) {
        struct mfile *f = mfq_first(&cl->q);
        int ok = f->from + (int64_t)f->size <= limit &&
                 (force || mf_mtime_ms(f) + expire_ms <= now_ms);
        int64_t from = f->from;
        mf_unref(f);
        if (!ok)
            break;
        mfq_remove_first(&cl->q);
        log_info("store: commitlog segment %020lld deleted%s", (long long)from,
                 force ? " (forced by disk usage)" : " (expired)");
        *bytes += (int64_t)cl->seg_size;
        n++;
    }
    return n;
}

int cl_append_raw(struct commitlog *cl, int64_t off, const uint8_t *data, size_t len, size_t advance)
{
    if (off != cl->end)
        return -EINVAL;
    if (!cl->cur || cl->end - cl->cur->from >= (int64_t)cl->seg_size) {
        int64_t from = cl->end - cl->end % (int64_t)cl->seg_size;
        if (cl->cur && cl->cur->from + (int64_t)cl->seg_size != from)
            return -EINVAL;
        struct mfile *nf;
        int rc = take_segment(cl, from, &nf);
        if (rc < 0)
            return rc;
        if (cl->cur) {
            mf_set_wrote(cl->cur, (int64_t)cl->seg_size);
            mf_unref(cl->cur);
        }
        cl->cur = nf;
    }
    int64_t pos = cl->end - cl->cur->from;
    if (pos + (int64_t)advance > (int64_t)cl->seg_size || len > advance)
        return -EINVAL;
    memcpy(cl->cur->base + pos, data, len);
    cl->end += (int64_t)advance;
    return 0;
}
