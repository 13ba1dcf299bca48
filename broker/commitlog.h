/*
 * The commitlog: one append-only sequence of stored records spread over
 * fixed-size mapped segments. This module manages space (reserve at the end,
 * roll to a new segment writing RocketMQ's blank end marker), publication of
 * committed bytes to readers, flushing, recovery scanning and retention. The
 * record encoding itself is done by the caller straight into the reserved
 * space (one copy of the body, no allocation).
 *
 * Writers: cl_reserve/cl_commit must be called under the caller's put lock.
 * Readers may call the other functions concurrently.
 */
#ifndef RMQ_COMMITLOG_H
#define RMQ_COMMITLOG_H

#include <stddef.h>
#include <stdint.h>

#include "mapped_file.h"

struct commitlog;

/* Opens the log in dir and loads its segments (no recovery yet). */
int cl_open(const char *dir, size_t seg_size, struct commitlog **out);
void cl_close(struct commitlog *cl);

/* Scans and validates records (CRC included), truncating at the first torn
 * or corrupt record. abnormal selects the start segment from cp_ts (store
 * time known flushed); otherwise the last three segments are checked.
 * *scan_start receives the offset where the scan began. Returns 0/-errno. */
int cl_recover(struct commitlog *cl, int abnormal, int64_t cp_ts, int64_t *scan_start);

/* Starts the segment service thread (after cl_recover). It creates the
 * next segment ahead of the writer, keeps the `prefault` bytes after the
 * write position faulted in (0: no prefault), and drops pages more than
 * `trail` bytes behind the write position from the process's mapping,
 * flushed or not (0: never), so what the log keeps mapped is a bounded
 * window around the write position whatever the segment size. The thread
 * polls the write position (every millisecond while it moves, backing off
 * to 50 ms when idle): puts make no system call for it. Without the thread
 * segments are created on demand and nothing is prefaulted or released.
 * Returns 0 or -errno (logged; the log still works). cl_close stops it. */
int cl_start_allocator(struct commitlog *cl, size_t prefault, size_t trail);
/* Tells the service thread how far the dispatcher has read: pages above
 * stay mapped (up to 64 MiB behind the writer) for it to read. */
void cl_set_reader_mark(struct commitlog *cl, int64_t off);
/* Stops the allocator and deletes a prepared segment nobody used. */
void cl_stop_allocator(struct commitlog *cl);

/* Reserves n bytes at the end (rolling to a new segment if the record would
 * not fit), returning where to encode and its physical offset. Returns 0,
 * -E2BIG (larger than a segment allows) or -errno when a segment could not
 * be created (e.g. -ENOSPC). */
int cl_reserve(struct commitlog *cl, uint32_t n, uint8_t **dst, int64_t *phys);
/* Publishes everything reserved so far (end = phys + n of the last record). */
void cl_commit(struct commitlog *cl, int64_t store_ts);

int64_t cl_min_offset(struct commitlog *cl);
/* End of committed (complete, readable) records. */
int64_t cl_max_offset(struct commitlog *cl);
int64_t cl_flushed_offset(struct commitlog *cl);
size_t cl_seg_size(struct commitlog *cl);
size_t cl_seg_count(struct commitlog *cl);

/* Finds committed bytes at phys: *p points at them, *avail is how many are
 * readable in that segment (up to the committed end), *seg holds a
 * reference the caller drops with mf_unref. Returns 0, -ERANGE (below the
 * minimum), -ENOENT (at or beyond the end). */
int cl_locate(struct commitlog *cl, int64_t phys, const uint8_t **p, size_t *avail, struct mfile **seg);
/* Start offset of the segment after the one holding phys. */
int64_t cl_roll_next(struct commitlog *cl, int64_t phys);

/* Flushes committed data if at least least_pages are dirty (0: always).
 * Sets *flushed_ts to the store time of a record known flushed. Returns
 * 1 if it flushed, 0 if nothing to do, -errno on failure. */
int cl_flush(struct commitlog *cl, int least_pages, int64_t *flushed_ts);

/* Deletes up to max leading segments: those last modified before
 * now - expire_ms, or any when force. Never the last segment, never a
 * segment ending beyond limit (undispatched/unflushed data). Returns the
 * number deleted; *bytes gets the size released. */
int cl_delete_expired(struct commitlog *cl, int64_t now_ms, int64_t expire_ms, int force, int max,
                      int64_t limit, int64_t *bytes);

/* Writes len raw bytes at exactly the end and moves the end by advance
 * (>= len; larger for an end-of-segment blank), under the put lock. Must
 * not cross a segment end. Publish with cl_commit. Returns 0 or -errno. */
int cl_append_raw(struct commitlog *cl, int64_t off, const uint8_t *data, size_t len, size_t advance);

#endif
