/*
 * Consume queue segments (see consume_queue.h). Byte offsets in the segment
 * queue are entry index * 20, matching RocketMQ's file names.
 */
#include "consume_queue.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "buf.h"
#include "log.h"

struct cq {
    struct mfq q;
    char *dir;
    size_t file_size;
    int64_t min_off;    /* atomic, entries */
    int64_t max_off;    /* atomic, entries */
    struct mfile *cur;  /* dispatch thread: last segment (own reference) */
    size_t keep;        /* atomic: bytes kept mapped behind the end (0: all) */
};

#define RELEASE_STEP (256 << 10) /* the writer drops pages behind it at this pace */

int cq_open(const char *root, const char *topic, int qid, uint32_t entries_per_file, struct cq **out)
{
    char dir[4096];
    if ((size_t)snprintf(dir, sizeof(dir), "%s/%s/%d", root, topic, qid) >= sizeof(dir))
        return -ENAMETOOLONG;
    struct cq *q = calloc(1, sizeof(*q));
    if (!q)
        return -ENOMEM;
    q->file_size = (size_t)entries_per_file * CQ_UNIT;
    int rc = mfq_init(&q->q, dir, q->file_size);
    if (rc == 0 && (rc = mfq_load(&q->q)) < 0)
        mfq_destroy(&q->q);
    if (rc < 0) {
        free(q);
        return rc;
    }
    q->dir = strdup(dir);
    if (!q->dir) {
        mfq_destroy(&q->q);
        free(q);
        return -ENOMEM;
    }
    int64_t m = mfq_min_offset(&q->q);
    q->min_off = m < 0 ? 0 : m / CQ_UNIT;
    q->max_off = mfq_max_offset(&q->q) / CQ_UNIT;
    q->cur = mfq_last(&q->q);
    *out = q;
    return 0;
}

void cq_close(struct cq *q, int remove)
{
    if (!q)
        return;
    mf_unref(q->cur);
    if (remove) {
        mfq_remove_all(&q->q);
        if (rmdir(q->dir) < 0)
            log_warn("store: cannot remove %s: %s", q->dir, strerror(errno));
        char *slash = strrchr(q->dir, '/');
        if (slash) {
            *slash = '\0';
            rmdir(q->dir); /* topic directory, if this was its last queue */
        }
    }
    mfq_destroy(&q->q);
    free(q->dir);
    free(q);
}

static int entry_valid(const uint8_t *e)
{
    return (int64_t)rd_u64be(e) >= 0 && (int32_t)rd_u32be(e + 8) > 0;
}

int cq_recover(struct cq *q, int64_t log_end, int abnormal)
{
    size_t n = mfq_count(&q->q);
    if (n == 0)
        return 0;
    struct mfile *f = mfq_at(&q->q, n - 1);
    int64_t pos = 0;
    while (pos + CQ_UNIT <= (int64_t)f->size && entry_valid(f->base + pos))
        pos += CQ_UNIT;
    /* the last segment may be empty after an exact fill of the previous one */
    static const uint8_t zero_unit[CQ_UNIT];
    int next_dirty = pos + CQ_UNIT <= (int64_t)f->size && memcmp(f->base + pos, zero_unit, CQ_UNIT) != 0;
    int64_t zr = abnormal || next_dirty ? mf_zero_tail(f, pos) : 0;
    if (zr > 0)
        log_warn("store: consume queue %s: cleared %lld bytes after the last valid entry", q->dir,
                 (long long)zr);
    int64_t end = f->from + pos;
    mf_unref(f);
    mfq_truncate(&q->q, end);
    /* drop entries pointing past the recovered log end */
    int64_t dropped = 0;
    while (end > mfq_min_offset(&q->q) && end > 0) {
        struct mfile *g = mfq_find(&q->q, end - CQ_UNIT);
        if (!g)
            break;
        const uint8_t *e = g->base + (end - CQ_UNIT - g->from);
        int64_t phy = (int64_t)rd_u64be(e);
        int32_t sz = (int32_t)rd_u32be(e + 8);
        int blank = sz == INT32_MAX;
        if (!blank && phy + sz <= log_end) {
            mf_unref(g);
            break;
        }
        memset((uint8_t *)e, 0, CQ_UNIT);
        mf_unref(g);
        end -= CQ_UNIT;
        dropped++;
    }
    if (dropped) {
        mfq_truncate(&q->q, end);
        struct mfile *g = mfq_find(&q->q, end > 0 ? end - 1 : 0);
        if (g) {
            __atomic_store_n(&g->flushed, 0, __ATOMIC_RELEASE);
            mf_flush(g, (int64_t)g->size);
            g->flushed = end - g->from;
            mf_unref(g);
        }
        log_warn("store: consume queue %s: dropped %lld entries beyond the commitlog end", q->dir,
                 (long long)dropped);
    }
    struct mfile *last = mfq_last(&q->q);
    if (last)
        last->flushed = mf_wrote(last);
    mf_unref(q->cur);
    q->cur = last;
    __atomic_store_n(&q->max_off, end / CQ_UNIT, __ATOMIC_RELEASE);
    if (q->min_off > end / CQ_UNIT)
        q->min_off = end / CQ_UNIT;
    return 0;
}

int cq_delete_below(struct cq *q, int64_t min_phy)
{
    int n = 0;
    for (;;) {
        if (mfq_count(&q->q) <= 1)
            break;
        struct mfile *f = mfq_first(&q->q);
        int64_t w = mf_wrote(f);
        int del = w >= CQ_UNIT && (int64_t)rd_u64be(f->base + w - CQ_UNIT) < min_phy;
        mf_unref(f);
        if (!del)
            break;
        mfq_remove_first(&q->q);
        n++;
    }
    /* advance the minimum within the first segment */
    struct mfile *f = mfq_first(&q->q);
    if (!f)
        return n;
    int64_t cur_min = __atomic_load_n(&q->min_off, __ATOMIC_ACQUIRE);
    int64_t first = f->from / CQ_UNIT;
    if (cur_min < first)
        cur_min = first;
    int64_t w = mf_wrote(f);
    int64_t i = cur_min - first;
    while ((i + 1) * CQ_UNIT <= w) {
        const uint8_t *e = f->base + i * CQ_UNIT;
        int32_t sz = (int32_t)rd_u32be(e + 8);
        if (sz != INT32_MAX && (int64_t)rd_u64be(e) >= min_phy)
            break;
        i++;
    }
    int64_t nm = first + i;
    int64_t mx = cq_max_offset(q);
    if (nm > mx)
        nm = mx;
    __atomic_store_n(&q->min_off, nm, __ATOMIC_RELEASE);
    mf_unref(f);
    return n;
}

int64_t cq_min_offset(struct cq *q) { return __atomic_load_n(&q->min_off, __ATOMIC_ACQUIRE); }
int64_t cq_max_offset(struct cq *q) { return __atomic_load_n(&q->max_off, __ATOMIC_ACQUIRE); }

int64_t cq_last_phy_end(struct cq *q)
{
    int64_t mx = cq_max_offset(q);
    for (int64_t i = mx - 1; i >= 0 && i >= mx - 64; i--) {
        int64_t phy, tag;
        int32_t sz;
        if (cq_entry(q, i, &phy, &sz, &tag) < 0)
            return 0;
        if (sz != INT32_MAX)
            return phy + sz;
    }
    return 0;
}

static int write_entry(struct cq *q, int64_t qoff, int64_t phy, int32_t size, int64_t tag)
{
    int64_t byte = qoff * CQ_UNIT;
    if (!q->cur || byte >= q->cur->from + (int64_t)q->file_size) {
        int64_t from = byte - byte % (int64_t)q->file_size;
        if (q->cur && q->cur->from + (int64_t)q->file_size != from)
            return -EINVAL;
        struct mfile *nf = mfq_append_new(&q->q, from);
        if (!nf)
            return -errno;
        if (q->cur && __atomic_load_n(&q->keep, __ATOMIC_RELAXED))
            mf_release(q->cur, 0, (int64_t)q->file_size);
        mf_unref(q->cur);
        q->cur = nf;
    }
    int64_t pos = byte - q->cur->from;
    size_t keep = __atomic_load_n(&q->keep, __ATOMIC_RELAXED);
    if (keep && pos % RELEASE_STEP + CQ_UNIT > RELEASE_STEP)
        mf_release(q->cur, 0, pos - (int64_t)keep);
    uint8_t *e = q->cur->base + (byte - q->cur->from);
    wr_u64be(e, (uint64_t)phy);
    wr_u32be(e + 8, (uint32_t)size);
    wr_u64be(e + 12, (uint64_t)tag);
    mf_set_wrote(q->cur, byte - q->cur->from + CQ_UNIT);
    __atomic_store_n(&q->max_off, qoff + 1, __ATOMIC_RELEASE);
    return 0;
}

int cq_put(struct cq *q, int64_t qoff, int64_t phy, int32_t size, int64_t tag)
{
    int64_t mx = cq_max_offset(q);
    if (qoff < mx)
        return 1;
    if (qoff > mx) {
        log_warn("store: consume queue %s: gap from %lld to %lld filled with blank entries", q->dir,
                 (long long)mx, (long long)qoff);
        int64_t i = mx;
        if (mx == 0 && mfq_count(&q->q) == 0) {
            /* nothing here yet: the queue starts at qoff; blank-fill only
             * the head of its first segment, as RocketMQ does */
            int64_t byte = qoff * CQ_UNIT;
            i = (byte - byte % (int64_t)q->file_size) / CQ_UNIT;
            __atomic_store_n(&q->min_off, qoff, __ATOMIC_RELEASE);
        }
        for (; i < qoff; i++) {
            int rc = write_entry(q, i, 0, INT32_MAX, 0);
            if (rc < 0)
                return rc;
        }
    }
    return write_entry(q, qoff, phy, size, tag);
}

int cq_read(struct cq *q, int64_t qoff, const uint8_t **p, uint32_t *n, struct mfile **seg)
{
    if (qoff < cq_min_offset(q))
        return -ERANGE;
    int64_t mx = cq_max_offset(q);
    if (qoff >= mx)
        return -ENOENT;
    int64_t byte = qoff * CQ_UNIT;
    struct mfile *f = mfq_find(&q->q, byte);
    if (!f)
        return -ENOENT;
    int64_t w = mf_wrote(f);
    int64_t pos = byte - f->from;
    if (pos + CQ_UNIT > w) {
        mf_unref(f);
        return -ENOENT;
    }
    *p = f->base + pos;
    *n = (uint32_t)((w - pos) / CQ_UNIT);
    *seg = f;
    return 0;
}

int cq_entry(struct cq *q, int64_t qoff, int64_t *phy, int32_t *size, int64_t *tag)
{
    const uint8_t *p;
    uint32_t n;
    struct mfile *f;
    int rc = cq_read(q, qoff, &p, &n, &f);
    if (rc < 0)
        return rc;
    *phy = (int64_t)rd_u64be(p);
    *size = (int32_t)rd_u32be(p + 8);
    *tag = (int64_t)rd_u64be(p + 12);
    mf_unref(f);
    return 0;
}

int cq_flush(struct cq *q, int least_pages)
{
    size_t n = mfq_count(&q->q);
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        struct mfile *f = mfq_at(&q->q, i);
        if (!f)
            break;
        int64_t w = mf_wrote(f);
        if (w > mf_flushed(f) && (least_pages <= 0 || mf_dirty_pages(f) >= least_pages ||
                                  w == (int64_t)f->size)) {
            int r = mf_flush(f, w);
            if (r < 0)
                rc = r;
        }
        mf_unref(f);
    }
    return rc;
}

void cq_set_mapped_keep(struct cq *q, size_t keep) { __atomic_store_n(&q->keep, keep, __ATOMIC_RELAXED); }

void cq_release_cold(struct cq *q)
{
    size_t keep = __atomic_load_n(&q->keep, __ATOMIC_RELAXED);
    if (!keep)
        return;
    int64_t limit = cq_max_offset(q) * CQ_UNIT - (int64_t)keep;
    for (size_t i = 0;; i++) {
        struct mfile *f = mfq_at(&q->q, i);
        if (!f)
            return;
        int done = f->from + (int64_t)f->size >= limit;
        mf_release(f, 0, limit - f->from);
        mf_unref(f);
        if (done)
            return;
    }
}
