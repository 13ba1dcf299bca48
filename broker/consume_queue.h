/*
 * Consume queue: per (topic, queue id) index of the commitlog, RocketMQ's
 * layout of fixed 20-byte entries (8-byte log offset, 4-byte size, 8-byte
 * tag hash code, big-endian) in mapped segments named by byte offset.
 * Entry i of the queue is the message with queue offset i.
 *
 * Only the dispatch thread appends (cq_put); readers use cq_read
 * concurrently and see entries published with release semantics.
 */
#ifndef RMQ_CONSUME_QUEUE_H
#define RMQ_CONSUME_QUEUE_H

#include <stddef.h>
#include <stdint.h>

#include "mapped_file.h"

#define CQ_UNIT 20

struct cq;

/* Opens (creating the directory) <root>/<topic>/<qid> and loads segments.
 * Returns 0 or -errno; *out owned by caller (cq_close). */
int cq_open(const char *root, const char *topic, int qid, uint32_t entries_per_file, struct cq **out);
/* Unmaps; with remove != 0 also deletes the files and directory. */
void cq_close(struct cq *q, int remove);

/* Finds the end of valid entries after a restart (stops at the first entry
 * with a negative offset or zero size, clearing anything after it) and
 * drops entries whose message ends beyond log_end. After a clean shutdown
 * (abnormal == 0) only a non-zero entry right after the end triggers the
 * clearing scan. Returns 0 or -errno. */
int cq_recover(struct cq *q, int64_t log_end, int abnormal);
/* Moves the minimum to the first entry whose log offset >= min_phy and
 * deletes segments wholly below it (never the last). Returns segments deleted. */
int cq_delete_below(struct cq *q, int64_t min_phy);

int64_t cq_min_offset(struct cq *q);
int64_t cq_max_offset(struct cq *q);
/* Log end (offset + size) of the last entry, 0 if none. */
int64_t cq_last_phy_end(struct cq *q);

/* Appends the entry for queue offset qoff. Returns 0, 1 if qoff is already
 * present (replayed dispatch), or -errno. Gaps are filled with blank
 * entries (size INT32_MAX) and logged. */
int cq_put(struct cq *q, int64_t qoff, int64_t phy, int32_t size, int64_t tag);

/* Entries starting at qoff up to the end of its segment's written part:
 * *p points at the first, *n is the count, *seg holds a reference (drop with
 * mf_unref). Returns 0, -ERANGE (below min), -ENOENT (>= max or missing). */
int cq_read(struct cq *q, int64_t qoff, const uint8_t **p, uint32_t *n, struct mfile **seg);
/* Reads one entry. Returns 0 or the cq_read error. */
int cq_entry(struct cq *q, int64_t qoff, int64_t *phy, int32_t *size, int64_t *tag);

/* Flushes if at least least_pages are dirty (0: always). Returns 0/-errno. */
int cq_flush(struct cq *q, int least_pages);
/* Residency: with keep > 0 the writer drops pages more than keep bytes
 * behind the last entry from this process's mapping as it goes (every
 * 256 KiB, and a whole segment when it rolls); mf_release keeps them in
 * the page cache, dirty or not. 0 (the default) keeps everything mapped. */
void cq_set_mapped_keep(struct cq *q, size_t keep);
/* Drops pages readers faulted in behind the kept tail again. Any thread. */
void cq_release_cold(struct cq *q);

#endif
