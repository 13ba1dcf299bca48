/*
 * Memory-mapped fixed-size segment files and ordered queues of them; the
 * building block of the commitlog and the consume queues.
 *
 * A segment (struct mfile) is named by the logical offset of its first byte
 * (20-digit zero padded), preallocated with posix_fallocate so a full disk
 * fails at creation rather than as SIGBUS on a later write, and mapped
 * shared read/write. Segments are reference counted: the queue holds one
 * reference, every reader holds one while it uses the mapping. Removing a
 * segment from its queue unlinks the name at once (a crash can never bring
 * it back) but the mapping, and with it the disk space, lives until the last
 * reference goes, so a reader never sees its bytes vanish.
 *
 * Positions: `wrote` is how far valid data extends (published with release
 * semantics after the bytes are written), `flushed` how far it is durable.
 */
#ifndef RMQ_MAPPED_FILE_H
#define RMQ_MAPPED_FILE_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

struct mfile {
    char *path;
    int fd;
    uint8_t *base;
    size_t size;
    int64_t from;     /* logical offset of byte 0 */
    int64_t wrote;    /* bytes of valid data (atomic) */
    int64_t flushed;  /* bytes known durable (atomic) */
    int refs;         /* atomic */
    int removed;      /* atomic: no longer in its queue, name unlinked */
};

/* Opens (create != 0: creates and preallocates) the segment file. On success
 * *out holds one reference owned by the caller. Returns 0 or -errno. */
int mf_open(const char *path, int64_t from, size_t size, int create, struct mfile **out);
void mf_ref(struct mfile *f);
/* Drops a reference; the last one unmaps and closes. */
void mf_unref(struct mfile *f);

static inline int64_t mf_wrote(const struct mfile *f) { return __atomic_load_n(&f->wrote, __ATOMIC_ACQUIRE); }
static inline void mf_set_wrote(struct mfile *f, int64_t w) { __atomic_store_n(&f->wrote, w, __ATOMIC_RELEASE); }
static inline int64_t mf_flushed(const struct mfile *f) { return __atomic_load_n(&f->flushed, __ATOMIC_ACQUIRE); }

/* Makes [flushed, upto) durable with msync(MS_SYNC). Returns 0 or -errno. */
int mf_flush(struct mfile *f, int64_t upto);
/* Number of dirty pages between flushed and wrote. */
int64_t mf_dirty_pages(const struct mfile *f);
/* Faults [from_pos, to_pos) of the mapping into memory without dirtying
 * it (MADV_POPULATE_READ; on kernels before 5.14, which answer EINVAL, one
 * read per page) so a later writer takes at most a cheap write-protect
 * fault instead of a page-cache miss. Works in 1 MiB steps and gives up
 * early when *stop (may be NULL) becomes nonzero. Returns 0 or -errno. */
int mf_populate(struct mfile *f, int64_t from_pos, int64_t to_pos, const int *stop);
/* Drops the pages of [from_pos, to_pos) (page aligned inward) from this
 * process's mapping (MADV_DONTNEED): the data stays in the page cache and
 * on disk, and a later access faults it back in, so readers holding the
 * segment keep seeing the same bytes. Dirty pages stay dirty in the page
 * cache. Returns 0 or -errno. */
int mf_release(struct mfile *f, int64_t from_pos, int64_t to_pos);
/* Test hook: nonzero forces the page-touch fallback of mf_populate, as on a
 * kernel without MADV_POPULATE_READ. */
void mf_populate_force_touch(int on);
/* Zeroes any non-zero bytes in [from_pos, size) and flushes them: used by
 * recovery so stale bytes after a truncation point never resurface.
 * Returns the length of the span that held data (0 if clean) or -errno. */
int64_t mf_zero_tail(struct mfile *f, int64_t from_pos);
/* Last modification time of the file in ms (for retention). */
int64_t mf_mtime_ms(const struct mfile *f);

/* Ordered queue of equally sized segments in one directory. */
struct mfq {
    char *dir;
    size_t file_size;
    pthread_mutex_t lock;
    struct mfile **v;
    size_t n, cap;
};

/* Initialises an empty queue over dir (created if missing). Returns 0/-errno. */
int mfq_init(struct mfq *q, const char *dir, size_t file_size);
/* Loads existing segment files (sorted by name). Files of the wrong size or
 * with gaps are reported and refused (-EINVAL); wrote=size for all. */
int mfq_load(struct mfq *q);
/* Drops the queue's references (files stay on disk unless removed). */
void mfq_destroy(struct mfq *q);

/* Returns the last segment with a reference, or NULL if empty. */
struct mfile *mfq_last(struct mfq *q);
/* Returns the first segment with a reference, or NULL if empty. */
struct mfile *mfq_first(struct mfq *q);
/* Returns the segment holding logical offset off, with a reference. */
struct mfile *mfq_find(struct mfq *q, int64_t off);
/* Creates and appends the segment starting at from (must follow the last).
 * Returns it with a reference, or NULL (errno set). */
struct mfile *mfq_append_new(struct mfq *q, int64_t from);
/* Appends an already created segment (from mf_create) to the queue; it must
 * follow the last one. The queue takes over the caller's reference; on
 * failure (-EINVAL, -ENOMEM) the reference stays with the caller. */
int mfq_append(struct mfq *q, struct mfile *f);
/* Creates and preallocates a new segment file at from in the queue's
 * directory without adding it (a stale leftover of that name is replaced).
 * Returns 0 and *out (one reference), or -errno. */
int mfq_create(struct mfq *q, int64_t from, struct mfile **out);
/* Unlinks a segment that never joined (or left) its queue and drops the
 * caller's reference. */
void mf_discard(struct mfile *f);
/* Returns the i-th segment with a reference or NULL. */
struct mfile *mfq_at(struct mfq *q, size_t i);
size_t mfq_count(struct mfq *q);
/* Offset of the first byte of the first segment, or -1 if empty. */
int64_t mfq_min_offset(struct mfq *q);
/* Logical end of valid data (last segment's from + wrote), or 0. */
int64_t mfq_max_offset(struct mfq *q);
/* Removes the first segment from the queue (marks it for unlink). */
void mfq_remove_first(struct mfq *q);
/* Removes all segments starting at or after off and sets the wrote position
 * of the segment containing off to off. Used by recovery truncation. */
void mfq_truncate(struct mfq *q, int64_t off);
/* Removes every segment (and the directory when empty). */
void mfq_remove_all(struct mfq *q);

/* Creates dir and its missing parents. Returns 0 or -errno. */
int mf_mkdir_p(const char *dir);

/* Formats a 20-digit segment name into out (>= 21 bytes). */
void mf_name(int64_t off, char *out);

#endif
