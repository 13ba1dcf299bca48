/*
 * Commitlog: space management, publication, flush, recovery and retention
 * over a queue of mapped segments (see commitlog.h).
 *
 * Segment allocation runs ahead of the writer (RocketMQ's
 * AllocateMappedFileService): a background thread creates and preallocates
 * the next segment file as soon as the writer enters a segment and hands it
 * over; when the writer rolls it takes the ready segment under the put lock
 * without touching the file system. If the allocator is behind or failed,
 * the writer waits for the file being created or creates it itself.
 *
 * The same thread bounds what the log keeps in memory. Segments are large
 * (1 GiB by default) and every page of a mapping the process touched counts
 * in its resident set until the kernel needs the memory, so faulting whole
 * segments in ahead of time, or keeping everything written mapped, makes
 * an idle broker look gigabytes big. Instead the thread follows the
 * committed offset: it read-populates a sliding window just ahead of the
 * writer (nothing is dirtied or written twice, and the writer's stores hit
 * resident pages), and it drops pages further behind the writer than a
 * trail from the mapping with MADV_DONTNEED, flushed or not: unmapping a
 * dirty page of a shared file mapping moves its dirty bit to the page
 * cache, and the flush (msync, which syncs the file range, not the page
 * table) still writes it. Without that a burst faster than the flush
 * interval would keep everything it wrote resident. Pages the dispatcher
 * has not read yet stay (up to a bound), or it would fault them straight
 * back in. Dropped pages stay in
 * the page cache, so a consumer reading them again takes a minor fault,
 * never a disk read; pages are not evicted (MADV_PAGEOUT would turn those
 * reads into disk reads, MADV_COLD changes nothing the process sees).
 * Every second the trail pass restarts at the oldest segment so pages
 * faulted in by readers of old data are dropped as well. The writer
 * never waits for the thread and makes no system call for it; the thread
 * polls the committed offset, every millisecond while it moves.
 *
 * A preallocated segment that never received a record holds only zeros;
 * recovery truncates it away like any segment after the log end, and a
 * clean close deletes it.
 */
#include "commitlog.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "buf.h"
#include "log.h"
#include "message.h"

#define PAGE 4096

#define SVC_BUSY_MS 1     /* poll interval while the log moves */
#define SVC_IDLE_MS 50    /* longest poll interval when idle */
#define SVC_SWEEP_MS 1000 /* restart the release pass at the oldest segment */
#define PF_STEP (1 << 20) /* prefault step between looks at the writer */
#define RELEASE_MIN (2 << 20) /* release in pieces of at least this */
#define READER_LAG_MAX (64 << 20) /* pages the dispatcher has yet to read stay mapped up to this */
#define RECOVER_RELEASE (16 << 20) /* recovery scan releases what it read in such steps */

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
    pthread_cond_t al_cv;   /* CLOCK_MONOTONIC */
    pthread_t al_thr;
    int al_running;
    int al_stop;            /* atomic */
    int64_t al_want;        /* start of the next segment to prepare, -1 none */
    int64_t al_busy;        /* start of the segment being created, -1 none */
    struct mfile *al_ready; /* created, not yet taken (own reference) */

    size_t pf_window;       /* bytes kept faulted in ahead of the writer */
    size_t trail;           /* bytes kept mapped behind it (0: never release) */
    int64_t pf_pos;         /* service thread: prefaulted up to here */
    int64_t rel_pos;        /* service thread: released below here */
    int64_t reader_mark;    /* atomic: the dispatcher has read below here */
    int pf_warned, rel_warned; /* service thread: a failure was logged */
};

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

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
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&cl->al_cv, &ca);
    pthread_condattr_destroy(&ca);
    cl->al_want = cl->al_busy = -1;
    *out = cl;
    return 0;
}

/* The segment holding off with a reference: from the queue, or the
 * prepared one the writer has not taken yet. NULL if neither. */
static struct mfile *seg_for(struct commitlog *cl, int64_t off)
{
    struct mfile *f = mfq_find(&cl->q, off);
    if (f)
        return f;
    pthread_mutex_lock(&cl->al_mu);
    struct mfile *r = cl->al_ready;
    if (r && off >= r->from && off < r->from + (int64_t)r->size) {
        mf_ref(r);
        f = r;
    }
    pthread_mutex_unlock(&cl->al_mu);
    return f;
}

/* Faults in the window ahead of the committed offset, looking at the
 * writer again after every step so a fast writer is never chased from
 * behind. */
static void prefault_ahead(struct commitlog *cl)
{
    for (;;) {
        if (__atomic_load_n(&cl->al_stop, __ATOMIC_ACQUIRE))
            return;
        int64_t end = cl_max_offset(cl);
        int64_t target = end + (int64_t)cl->pf_window;
        if (cl->pf_pos < end)
            cl->pf_pos = end & ~(int64_t)(PAGE - 1);
        if (cl->pf_pos >= target)
            return;
        struct mfile *f = seg_for(cl, cl->pf_pos);
        if (!f)
            return; /* next segment not created yet: the allocator comes first */
        int64_t lim = f->from + (int64_t)f->size;
        if (lim > target)
            lim = target;
        if (lim > cl->pf_pos + PF_STEP)
            lim = cl->pf_pos + PF_STEP;
        int rc = mf_populate(f, cl->pf_pos - f->from, lim - f->from, &cl->al_stop);
        if (rc < 0 && !cl->pf_warned) {
            cl->pf_warned = 1;
            log_warn("store: cannot prefault %s: %s (the writer faults pages itself)", f->path,
                     strerror(-rc));
        }
        mf_unref(f);
        if (rc < 0)
            return;
        cl->pf_pos = lim;
    }
}

/* Drops pages more than the trail behind the writer from the mapping,
 * from rel_pos on (dirty ones stay dirty in the page cache). */
static void release_behind(struct commitlog *cl)
{
    int64_t end = cl_max_offset(cl);
    int64_t limit = end - (int64_t)cl->trail;
    int64_t mark = __atomic_load_n(&cl->reader_mark, __ATOMIC_ACQUIRE);
    if (mark < limit && mark > end - READER_LAG_MAX)
        limit = mark; /* it would fault them straight back in */
    limit &= ~(int64_t)(PAGE - 1);
    int64_t min = cl_min_offset(cl);
    if (cl->rel_pos < min)
        cl->rel_pos = min;
    if (limit - cl->rel_pos < RELEASE_MIN)
        return;
    for (int64_t off = cl->rel_pos; off < limit;) {
        if (__atomic_load_n(&cl->al_stop, __ATOMIC_ACQUIRE))
            return;
        struct mfile *f = mfq_find(&cl->q, off);
        if (!f) {
            off = cl_roll_next(cl, off); /* deleted meanwhile */
            continue;
        }
        int64_t lim = f->from + (int64_t)f->size;
        if (lim > limit)
            lim = limit;
        int rc = mf_release(f, off - f->from, lim - f->from);
        if (rc < 0 && !cl->rel_warned) {
            cl->rel_warned = 1;
            log_warn("store: cannot release pages of %s: %s", f->path, strerror(-rc));
        }
        mf_unref(f);
        off = lim;
    }
    cl->rel_pos = limit;
}

static void *alloc_main(void *arg)
{
    struct commitlog *cl = arg;
    int64_t seen = -1, last_sweep = mono_ms();
    int nap = SVC_BUSY_MS;
    int paced = cl->pf_window > 0 || cl->trail > 0;
    pthread_mutex_lock(&cl->al_mu);
    while (!cl->al_stop) {
        if (cl->al_want >= 0 && !cl->al_ready) {
            int64_t from = cl->al_want;
            cl->al_want = -1;
            cl->al_busy = from;
            pthread_mutex_unlock(&cl->al_mu);
            struct mfile *f = NULL;
            int rc = mfq_create(&cl->q, from, &f);
            pthread_mutex_lock(&cl->al_mu);
            cl->al_busy = -1;
            if (rc == 0)
                cl->al_ready = f;
            pthread_cond_broadcast(&cl->al_cv);
            continue;
        }
        if (!paced) {
            pthread_cond_wait(&cl->al_cv, &cl->al_mu);
            continue;
        }
        pthread_mutex_unlock(&cl->al_mu);
        int64_t end = cl_max_offset(cl);
        int moved = end != seen;
        if (end < seen)
            cl->pf_pos = end; /* truncated: prefault from the new end */
        seen = end;
        if (cl->pf_window)
            prefault_ahead(cl);
        if (cl->trail) {
            int64_t now = mono_ms();
            if (now - last_sweep >= SVC_SWEEP_MS) {
                cl->rel_pos = 0; /* again from the oldest segment: pages readers faulted in */
                last_sweep = now;
            }
            release_behind(cl);
        }
        pthread_mutex_lock(&cl->al_mu);
        if (cl->al_stop || (cl->al_want >= 0 && !cl->al_ready))
            continue;
        nap = moved ? SVC_BUSY_MS : (nap * 2 > SVC_IDLE_MS ? SVC_IDLE_MS : nap * 2);
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += (long)nap * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&cl->al_cv, &cl->al_mu, &ts);
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

void cl_set_reader_mark(struct commitlog *cl, int64_t off)
{
    __atomic_store_n(&cl->reader_mark, off, __ATOMIC_RELEASE);
}

int cl_start_allocator(struct commitlog *cl, size_t prefault, size_t trail)
{
    pthread_mutex_lock(&cl->al_mu);
    if (prefault > cl->seg_size)
        prefault = cl->seg_size;
    cl->pf_window = (prefault + PAGE - 1) & ~(size_t)(PAGE - 1);
    cl->trail = trail;
    cl->pf_pos = cl_max_offset(cl) & ~(int64_t)(PAGE - 1);
    cl->rel_pos = 0; /* recovery read the tail of the log through the mapping */
    int rc = pthread_create(&cl->al_thr, NULL, alloc_main, cl);
    if (rc == 0) {
        cl->al_running = 1;
        if (cl->cur)
            want_segment(cl, cl->cur->from + (int64_t)cl->seg_size);
        else
            want_segment(cl, cl->end - cl->end % (int64_t)cl->seg_size);
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
    int64_t pos = 0, released = 0;
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
            if (pos - released >= RECOVER_RELEASE) {
                /* scanned pages stay cached but leave the mapping */
                mf_release(f, released, pos);
                released = pos & ~(int64_t)(PAGE - 1);
            }
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
            mf_release(f, released, (int64_t)f->size);
            mf_unref(f);
            f = next;
            i++;
            pos = released = 0;
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
