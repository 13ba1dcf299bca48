/*
 * Store operations HA replication needs beyond store.h: cutting the log back
 * to an earlier record boundary (a slave whose tail diverged from its
 * master's), finding record boundaries from a physical offset, and the
 * segment size. Kept apart from store.c so the storage engine stays as it is;
 * the implementation works on the store's internals (store_int.h).
 *
 * Threads: like the rest of the store, callable from any thread; the
 * truncation holds the put lock for its whole duration, so concurrent puts
 * wait (a slave has none).
 */
#ifndef RMQ_STORE_TRUNCATE_H
#define RMQ_STORE_TRUNCATE_H

#include <stdint.h>

#include "store.h"

/* Commitlog segment size (mapedFileSizeCommitLog) of the open store. */
uint64_t store_segment_size(struct store *s);

/* Start of the last record (or end-of-segment blank) that begins at or
 * before off, searched within the segment holding off: off itself when a
 * record starts there. off >= the log end answers the log end. Returns 0,
 * -ERANGE (off below the log minimum) or -EBADMSG (the segment does not
 * parse up to off). */
int store_record_floor(struct store *s, int64_t off, int64_t *start);

/* Cuts the commitlog back to off, which must be a record boundary in
 * [min, max]: zeroes and removes everything after it (flushed to disk
 * first), drops consume-queue entries pointing at removed records, resets
 * the queues' next offsets, removes index files that may reference removed
 * records and lets the dispatcher rebuild them from the log. Waits (bounded)
 * for the dispatcher to be idle first. Logs what it removed. Costs a CRC
 * scan of the segment holding off and, when index files are removed, a
 * background re-dispatch of the records they covered.
 *
 * Concurrent readers holding views of removed records see their bytes
 * zeroed; store_get re-validates records, so they get no message rather
 * than a corrupt one. Returns the new max offset (== off unless the scan
 * found a corrupt record earlier, which is logged) or -errno: -EINVAL (off
 * outside the log or not a record start), -EBUSY (the dispatcher did not
 * become idle), -EIO (flush failed). */
int64_t store_truncate(struct store *s, int64_t off);

#endif
