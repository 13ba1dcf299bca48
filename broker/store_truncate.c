/*
 * Log truncation and record-boundary search for HA (see store_truncate.h).
 *
 * The commitlog is cut back by reusing its own crash recovery: the bytes
 * after the cut are zeroed (and the heads of later segments, so recovery
 * cannot start from them), then cl_recover rescans from the segment holding
 * the cut and finds a clean end exactly there, removing later segments and
 * resetting the append position, the committed and the flushed offsets.
 * Consume queues are cut the same way recovery cuts them (cq_recover drops
 * entries past the log end). Index files cannot be cut entry by entry and
 * the index skips records below its newest entry, so files that may hold
 * entries of removed records are dropped and the dispatcher re-indexes the
 * log from where the remaining files end.
 *
 * The dispatcher must not run meanwhile: with the put lock held no new
 * records arrive, and once it has caught up and sleeps on its condition
 * variable, holding its mutex keeps it asleep until we are done.
 */
#include "store_truncate.h"

#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "buf.h"
#include "log.h"
#include "store_int.h"

#define LD(x) __atomic_load_n(&(x), __ATOMIC_ACQUIRE)
#define ST(x, v) __atomic_store_n(&(x), (v), __ATOMIC_RELEASE)

#define IDLE_WAIT_MS 5000

uint64_t store_segment_size(struct store *s) { return s->cfg.commitlog_file_size; }

int store_record_floor(struct store *s, int64_t off, int64_t *start)
{
    int64_t max = cl_max_offset(s->cl), min = cl_min_offset(s->cl);
    if (off >= max) {
        *start = max;
        return 0;
    }
    if (off < min)
        return -ERANGE;
    int64_t seg = (int64_t)cl_seg_size(s->cl);
    int64_t from = off - off % seg;
    const uint8_t *p;
    size_t avail;
    struct mfile *f;
    int rc = cl_locate(s->cl, from, &p, &avail, &f);
    if (rc < 0)
        return rc == -ERANGE ? -ERANGE : -EBADMSG;
    size_t pos = 0, want = (size_t)(off - from);
    rc = -EBADMSG;
    while (pos + 8 <= avail) {
        uint32_t size = rd_u32be(p + pos), magic = rd_u32be(p + pos + 4);
        if (magic == MSG_BLANK_MAGIC_CODE) {
            rc = 0; /* the blank runs to the segment end */
            break;
        }
        if ((magic != MSG_MAGIC_CODE && magic != MSG_MAGIC_CODE_V2) || size < 8 || size > avail - pos)
            break;
        if (pos + size > want) {
            rc = 0;
            break;
        }
        pos += size;
    }
    if (rc == 0 && pos > want)
        rc = -EBADMSG;
    mf_unref(f);
    if (rc == 0)
        *start = from + (int64_t)pos;
    return rc;
}

/* Store time of the record at off, 0 if it cannot be read. */
static int64_t record_ts(struct store *s, int64_t off)
{
    const uint8_t *p;
    size_t avail;
    struct mfile *f;
    if (cl_locate(s->cl, off, &p, &avail, &f) < 0)
        return 0;
    struct msg_record r;
    int d = msg_record_decode(p, avail, &r, 0);
    mf_unref(f);
    return d > 0 ? r.store_ts : 0;
}

/* Zeroes the first bytes of the segment starting at from and syncs them, so
 * recovery can never pick it as the segment to scan from. */
static void kill_segment_head(struct store *s, int64_t from)
{
    const uint8_t *p;
    size_t avail;
    struct mfile *f;
    if (cl_locate(s->cl, from, &p, &avail, &f) < 0)
        return;
    memset(f->base, 0, MSG_END_FILE_MIN_BLANK);
    if (msync(f->base, (size_t)sysconf(_SC_PAGESIZE), MS_SYNC) < 0)
        log_warn("store: truncate: msync of %s failed: %s", f->path, strerror(errno));
    mf_unref(f);
}

/* Holds disp_mu with the dispatcher idle in its wait. The put lock must be
 * held (no new records). Returns 0 or -EBUSY. */
static int dispatcher_pause(struct store *s)
{
    int64_t deadline = store_mono_ms() + IDLE_WAIT_MS;
    for (;;) {
        if (LD(s->reput) >= cl_max_offset(s->cl) || (s->threads & 1) == 0) {
            pthread_mutex_lock(&s->disp_mu);
            if ((s->threads & 1) == 0 || LD(s->disp_sleeping))
                return 0;
            pthread_mutex_unlock(&s->disp_mu);
        }
        if (store_mono_ms() > deadline)
            return -EBUSY;
        usleep(1000);
    }
}

static void truncate_queues(struct store *s, int64_t end)
{
    pthread_rwlock_wrlock(&s->qlock);
    for (size_t i = 0; i < s->qcap; i++)
        for (struct qent *q = s->qtab[i]; q; q = q->next) {
            if (!q->cq) {
                q->next_put = 0;
                continue;
            }
            int64_t before = cq_max_offset(q->cq);
            int rc = cq_recover(q->cq, end, 1);
            if (rc < 0)
                log_error("store: truncate: consume queue %s/%d: %s", q->topic, q->qid, strerror(-rc));
            q->next_put = cq_max_offset(q->cq);
            if (q->next_put != before)
                log_info("store: truncate: consume queue %s/%d cut from %lld to %lld entries", q->topic,
                         q->qid, (long long)before, (long long)q->next_put);
        }
    pthread_rwlock_unlock(&s->qlock);
}

/* Drops index files that may reference records at or after end; returns
 * the log offset the index must be rebuilt from (INT64_MAX: nothing). */
static int64_t truncate_index(struct store *s, int64_t end, int64_t first_removed_ts)
{
    int64_t rebuild = INT64_MAX;
    if (!s->idx)
        return rebuild;
    int64_t cps[4] = { first_removed_ts - 1, first_removed_ts - 60000, first_removed_ts - 3600000,
                       INT64_MIN };
    /* newest files first, with ever older cut-off times in case store times
     * went backwards; at worst every file goes */
    for (int i = first_removed_ts > 0 && end > 0 ? 0 : 3; i < 4; i++) {
        if (end > 0 && idx_end_phy(s->idx) < end)
            break;
        int64_t from = INT64_MAX;
        idx_recover(s->idx, 1, cps[i], &from);
        if (from < rebuild)
            rebuild = from;
    }
    return rebuild;
}

int64_t store_truncate(struct store *s, int64_t off)
{
    pthread_mutex_lock(&s->put_lock);
    int64_t max = cl_max_offset(s->cl), min = cl_min_offset(s->cl);
    if (off == max) {
        pthread_mutex_unlock(&s->put_lock);
        return max;
    }
    int64_t fl;
    if (off < min || off > max || store_record_floor(s, off, &fl) < 0 || fl != off) {
        pthread_mutex_unlock(&s->put_lock);
        log_error("store: truncate: %lld is not a record boundary in [%lld, %lld]", (long long)off,
                  (long long)min, (long long)max);
        return -EINVAL;
    }
    int rc = dispatcher_pause(s);
    if (rc < 0) {
        pthread_mutex_unlock(&s->put_lock);
        log_error("store: truncate: the dispatcher did not become idle");
        return rc;
    }
    int64_t ts = 0;
    /* everything before the cut is made durable first: recovery marks the
     * new end as flushed */
    if (cl_flush(s->cl, 0, &ts) < 0) {
        pthread_mutex_unlock(&s->disp_mu);
        pthread_mutex_unlock(&s->put_lock);
        log_error("store: truncate: commitlog flush failed");
        return -EIO;
    }
    int64_t first_ts = record_ts(s, off);
    int64_t seg = (int64_t)cl_seg_size(s->cl);
    int64_t cut_seg = off - off % seg;
    for (int64_t from = (max - 1) - (max - 1) % seg; from > cut_seg; from -= seg)
        kill_segment_head(s, from);
    const uint8_t *p;
    size_t avail;
    struct mfile *f;
    if (cl_locate(s->cl, off, &p, &avail, &f) == 0) {
        int64_t z = mf_zero_tail(f, off - f->from);
        if (z < 0)
            log_error("store: truncate: cannot clear %s: %s", f->path, strerror((int)-z));
        mf_unref(f);
    }
    int64_t scan;
    cl_recover(s->cl, 1, INT64_MAX, &scan);
    int64_t end = cl_max_offset(s->cl);
    truncate_queues(s, end);
    int64_t rebuild = truncate_index(s, end, first_ts);
    int64_t reput = end;
    if (rebuild < reput)
        reput = rebuild < cl_min_offset(s->cl) ? cl_min_offset(s->cl) : rebuild;
    if (LD(s->reput) > reput || rebuild != INT64_MAX)
        ST(s->reput, reput);
    if (first_ts > 0 && LD(s->physic_ts) >= first_ts)
        ST(s->physic_ts, first_ts - 1);
    if (first_ts > 0 && LD(s->logics_ts) >= first_ts)
        ST(s->logics_ts, first_ts - 1);
    pthread_cond_signal(&s->disp_cv);
    pthread_mutex_unlock(&s->disp_mu);
    pthread_mutex_unlock(&s->put_lock);
    log_warn("store: commitlog truncated from %lld to %lld (%lld bytes removed)%s", (long long)max,
             (long long)end, (long long)(max - end),
             rebuild != INT64_MAX ? "; index being rebuilt from the log" : "");
    return end;
}
