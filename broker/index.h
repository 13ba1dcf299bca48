/*
 * Hash index over the commitlog, RocketMQ's IndexFile layout: a 40-byte
 * header (begin/end store timestamp, begin/end physical offset, used slot
 * count, index count), hash slots of 4 bytes holding the newest entry
 * number of their chain, then 20-byte entries (key hash, physical offset,
 * seconds since the file's begin timestamp, previous entry number).
 * Files are named by their creation time (yyyyMMddHHmmssSSS) and filled in
 * order; keys are "topic#key" and "topic#uniqKey".
 *
 * Only the dispatch thread calls idx_put; queries run concurrently: an
 * entry is fully written before its slot is published.
 */
#ifndef RMQ_INDEX_H
#define RMQ_INDEX_H

#include <stddef.h>
#include <stdint.h>

struct idx_service;

/* Opens dir (created if missing) and loads the index files. */
int idx_open(const char *dir, uint32_t slots, uint32_t max_entries, struct idx_service **out);
void idx_close(struct idx_service *s);

/* After a crash, removes files written after the index checkpoint
 * (cp_ts) and returns in *rebuild_from the log offset from which entries
 * must be rebuilt (INT64_MAX if none). */
int idx_recover(struct idx_service *s, int abnormal, int64_t cp_ts, int64_t *rebuild_from);

/* Adds key -> phy. Entries for offsets below the newest file's end offset
 * are skipped (replayed dispatch). now_ms names new files. Returns 0,
 * 1 if skipped, or -errno. */
int idx_put(struct idx_service *s, const char *key, size_t klen, int64_t phy, int64_t store_ts,
            int64_t now_ms);
/* Collects up to max physical offsets whose key hash matches and whose time
 * may fall in [begin_ms, end_ms], newest first. Returns the count. */
size_t idx_query(struct idx_service *s, const char *key, size_t klen, int64_t begin_ms, int64_t end_ms,
                 int64_t *out, size_t max);

/* Flushes the files; *ts receives the store time of the newest flushed entry. */
int idx_flush(struct idx_service *s, int64_t *ts);
/* Drops every page but the header's of every file from this process's
 * mapping (mf_release: they stay in the page cache, dirty or not). Hash
 * slots are written all over a file, so nothing short of the whole file
 * is "behind" the writer; what it touches again faults back cheaply. */
void idx_release(struct idx_service *s);
/* Deletes files (never the newest) whose entries all lie below min_phy. */
int idx_delete_below(struct idx_service *s, int64_t min_phy);
/* End physical offset of the newest file (0 if none). */
int64_t idx_end_phy(struct idx_service *s);

#endif
