/*
 * Broker message store: RocketMQ's storage engine (commitlog + consume
 * queues + hash index + checkpoint), used by the broker daemon.
 *
 * Writes append one encoded record to the memory-mapped commitlog under a
 * put lock and return at once; durability is asynchronous: in SYNC_FLUSH
 * mode the caller registers a completion with store_flush_wait() and a
 * group-commit flush thread calls it back once an msync covers the record
 * (or the syncFlushTimeout passes). A dispatch thread builds the consume
 * queues and the index from the log, so they never run ahead of it, and
 * tells the broker about every new queue entry (long-polling wake-ups).
 *
 * Reads are zero-copy: views point straight into the mapped segments and a
 * struct store_hold keeps those segments mapped until released, even if
 * retention removes them meanwhile.
 *
 * Layout under root_dir: commitlog/, consumequeue/<topic>/<qid>/, index/,
 * checkpoint, abort (present while open; its presence at open means crash).
 *
 * Threads: store_put* may be called from any thread (serialised by a lock);
 * all other calls are thread-safe as well. Callbacks (dispatch hook, flush
 * completion) run on store threads and must not block for long.
 */
#ifndef RMQ_STORE_H
#define RMQ_STORE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "message.h"

struct store;

enum store_flush_type { STORE_ASYNC_FLUSH = 0, STORE_SYNC_FLUSH = 1 };

/* Called on the dispatch thread after a message got its consume-queue entry. */
typedef void (*store_dispatch_fn)(const char *topic, int queue_id, int64_t queue_offset,
                                  int64_t tag_hash, void *ud);
/* Wall clock in ms (override for tests). */
typedef int64_t (*store_clock_fn)(void *ud);
/* Disk usage probe: sets *ratio (0..1) of the partition holding path.
 * Returns 0 or -errno. */
typedef int (*store_disk_fn)(const char *path, double *ratio, void *ud);

/* Plain configuration, filled by the broker; RocketMQ key names in comments.
 * Strings are copied by store_open. Start from store_config_defaults(). */
struct store_config {
    const char *root_dir;                  /* storePathRootDir */
    uint64_t commitlog_file_size;          /* mapedFileSizeCommitLog (1 GiB) */
    /* Not RocketMQ settings: how much of the log the process keeps mapped.
     * Bytes ahead of the write position kept faulted in so puts hit
     * resident pages (8 MiB; 0: none), and bytes behind it kept mapped for
     * readers of recent messages; older pages (flushed or not) are dropped
     * from the mapping but stay in the page cache (8 MiB; 0: never drop,
     * which also keeps consume-queue and index pages mapped). */
    uint64_t commitlog_prefault_bytes;
    uint64_t commitlog_mapped_trail_bytes;
    uint32_t cq_entries_per_file;          /* mapedFileSizeConsumeQueue/20 (300000) */
    enum store_flush_type flush_type;      /* flushDiskType */
    int flush_interval_commitlog_ms;       /* flushIntervalCommitLog (500) */
    int flush_commitlog_least_pages;       /* flushCommitLogLeastPages (4) */
    int flush_commitlog_thorough_interval_ms; /* flushCommitLogThoroughInterval (10000) */
    int flush_interval_cq_ms;              /* flushIntervalConsumeQueue (1000) */
    int flush_cq_least_pages;              /* flushConsumeQueueLeastPages (2) */
    int flush_cq_thorough_interval_ms;     /* flushConsumeQueueThoroughInterval (60000) */
    int sync_flush_timeout_ms;             /* syncFlushTimeout (5000) */
    int file_reserved_time_h;              /* fileReservedTime (72) */
    const char *delete_when;               /* deleteWhen ("04", or "04;05") */
    int clean_resource_interval_ms;        /* cleanResourceInterval (10000) */
    int delete_files_batch_max;            /* segments removed per pass (10) */
    int disk_max_used_space_ratio;         /* diskMaxUsedSpaceRatio (75, percent) */
    int disk_space_clean_forcibly_ratio;   /* diskSpaceCleanForciblyRatio (85) */
    int disk_space_warning_level_ratio;    /* diskSpaceWarningLevelRatio (90) */
    uint32_t max_message_size;             /* maxMessageSize (4 MiB) */
    /* accessMessageInMemoryMaxRatio (40): a read whose last message lies
     * further behind the log's end than this percentage of the host's
     * physical memory suggests pulling from a slave (0..100). */
    int access_message_in_memory_max_ratio;
    const char *store_host;                /* "ip:port" written as STOREHOST and in msgIds */
    int message_index_enable;              /* messageIndexEnable (1) */
    uint32_t max_hash_slot_num;            /* maxHashSlotNum (5000000) */
    uint32_t max_index_num;                /* maxIndexNum (20000000) */
    const char *message_delay_level;       /* messageDelayLevel, for SCHEDULE_TOPIC_XXXX tag codes */
    store_dispatch_fn on_dispatch;         /* optional */
    void *on_dispatch_ud;
    store_clock_fn clock;                  /* optional; default CLOCK_REALTIME */
    void *clock_ud;
    store_disk_fn disk_probe;              /* optional; default statvfs */
    void *disk_probe_ud;
    /* Test hook, 0 in production: the commitlog flush thread sleeps this
     * many ms before every flush, so tests can provoke FLUSH_DISK_TIMEOUT
     * deterministically (set it above sync_flush_timeout_ms). */
    int test_flush_delay_ms;
};

void store_config_defaults(struct store_config *cfg);

/* Opens (creating if needed) the store and runs recovery. On success *out
 * is owned by the caller and freed by store_close. Returns 0 or -errno;
 * errors are logged. */
int store_open(const struct store_config *cfg, struct store **out);
/* Stops the threads, flushes everything, writes the checkpoint, removes the
 * abort file and frees the store. Pending flush waiters are completed. */
void store_close(struct store *s);

/* RocketMQ PutMessageStatus (+ DISK_FULL, which the broker reports as
 * SERVICE_NOT_AVAILABLE with the remark from store_put_status_str). */
enum store_put_status {
    STORE_PUT_OK = 0,
    STORE_PUT_FLUSH_DISK_TIMEOUT,
    STORE_PUT_FLUSH_SLAVE_TIMEOUT,
    STORE_PUT_SLAVE_NOT_AVAILABLE,
    STORE_PUT_SERVICE_NOT_AVAILABLE,
    STORE_PUT_CREATE_MAPPED_FILE_FAILED,
    STORE_PUT_MESSAGE_ILLEGAL,
    STORE_PUT_PROPERTIES_SIZE_EXCEEDED,
    STORE_PUT_OS_PAGE_CACHE_BUSY,
    STORE_PUT_UNKNOWN_ERROR,
    STORE_PUT_DISK_FULL,
};
const char *store_put_status_str(enum store_put_status st);

/* One message to store. The body and properties are copied into the log. */
struct store_msg {
    const char *topic;          /* NUL-terminated, 1..65535 bytes */
    int32_t queue_id;
    int32_t flag;
    int32_t sysflag;            /* MSG_SYSFLAG_*; host v6 bits follow born_host/store host */
    const void *body;
    uint32_t body_len;
    const char *props;          /* "name\1value\2..." */
    uint32_t props_len;
    int64_t born_ts;
    struct msg_host born_host;
    int32_t reconsume_times;
    int64_t prepared_tx_offset;
};

struct store_put_result {
    enum store_put_status status;
    int64_t phys_offset;        /* of the (first) record */
    int64_t queue_offset;       /* of the (first) record */
    int64_t end_offset;         /* log offset after the (last) record: pass to store_flush_wait */
    uint32_t size;              /* bytes of the (whole batch of) records */
    uint32_t count;             /* records written */
    int64_t store_ts;
    char msg_id[MSG_OFFSET_ID_MAX]; /* offsetMsgId of the (first) record */
    char remark[96];            /* human readable reason when status != OK */
};

/* Appends one message; never waits for the disk. Returns result->status. */
enum store_put_status store_put(struct store *s, const struct store_msg *m, struct store_put_result *r);

/* Appends n messages atomically (one lock hold, consecutive queue offsets)
 * to one queue: all msgs[i] must share topic and queue_id. If phys_offsets
 * is not NULL it receives each record's offset (n entries). */
enum store_put_status store_put_batch(struct store *s, const struct store_msg *msgs, size_t n,
                                      struct store_put_result *r, int64_t *phys_offsets);

/* Same for a SEND_BATCH body (MessageDecoder.encodeMessages format): flag,
 * body and properties come from each item, everything else from tmpl. */
enum store_put_status store_put_encoded_batch(struct store *s, const struct store_msg *tmpl,
                                              const uint8_t *batch, size_t len,
                                              struct store_put_result *r, int64_t *phys_offsets,
                                              size_t phys_cap);

/* Flush completion: STORE_PUT_OK once durable, FLUSH_DISK_TIMEOUT if the
 * flush took longer than syncFlushTimeout, SERVICE_NOT_AVAILABLE if the
 * flush failed or the store is closing. */
typedef void (*store_flush_cb)(enum store_put_status st, void *ud);

/* Requests notification once the log is durable up to end_offset. Returns 1
 * if already durable (cb is NOT called), 0 if cb will be called later from a
 * store thread (exactly once), or -ENOMEM. Works in both flush modes. */
int store_flush_wait(struct store *s, int64_t end_offset, store_flush_cb cb, void *ud);
/* Blocking variant for tests and tools. */
enum store_put_status store_flush_wait_blocking(struct store *s, int64_t end_offset);
/* Put + (in SYNC_FLUSH mode) blocking wait: the classic synchronous put. */
enum store_put_status store_put_wait(struct store *s, const struct store_msg *m, struct store_put_result *r);

/* Keeps commitlog segments mapped while views into them are in use. Reads
 * further behind the writer than the mapped trail note their span, and the
 * release drops those pages from the mapping again (they stay in the page
 * cache), so a consumer catching up on old messages does not leave the
 * broker's resident set as big as what it read. */
#define STORE_HOLD_MAX 8
struct store_hold {
    void *seg[STORE_HOLD_MAX];
    int n;
    int64_t cold_lo, cold_hi; /* log span read behind the trail (empty: lo == hi) */
    int sequential;           /* the reader goes on after cold_hi (a pull, not a lookup) */
};
#define STORE_HOLD_INIT { { 0 }, 0, 0, 0, 0 }
void store_hold_release(struct store_hold *h);

/* A view of one stored record, straight into the mapped log. */
struct store_view {
    const uint8_t *data;
    uint32_t len;
    int64_t phys_offset;
    int64_t queue_offset;
    int64_t tag_hash;
};

/* RocketMQ GetMessageStatus. OFFSET_TOO_SMALL is what the broker answers as
 * PULL_OFFSET_MOVED (next_begin_offset = new minimum). */
enum store_get_status {
    STORE_GET_FOUND = 0,
    STORE_GET_NO_MATCHED_MESSAGE,
    STORE_GET_MESSAGE_WAS_REMOVING,
    STORE_GET_OFFSET_FOUND_NULL,
    STORE_GET_OFFSET_OVERFLOW_BADLY,
    STORE_GET_OFFSET_OVERFLOW_ONE,
    STORE_GET_OFFSET_TOO_SMALL,
    STORE_GET_NO_MATCHED_LOGIC_QUEUE,
    STORE_GET_NO_MESSAGE_IN_QUEUE,
};
const char *store_get_status_str(enum store_get_status st);

/* Tag filter: return nonzero to deliver a message with this tag hash.
 * NULL filter means "*". */
typedef int (*store_tag_filter)(int64_t tag_hash, void *ud);

struct store_get_req {
    const char *topic;
    int32_t queue_id;
    int64_t offset;             /* first queue offset wanted */
    uint32_t max_count;         /* also the capacity of views[] */
    uint32_t max_bytes;         /* 0: no byte limit */
    store_tag_filter filter;
    void *filter_ud;
    struct store_view *views;   /* caller-provided, max_count entries */
};

struct store_get_result {
    enum store_get_status status;
    int64_t next_begin_offset;
    int64_t min_offset;
    int64_t max_offset;
    uint32_t count;             /* views filled */
    uint64_t total_bytes;
    /* RocketMQ's suggestPullingFromSlave: the log's end is more than
     * accessMessageInMemoryMaxRatio of physical memory past the last queue
     * entry read (maxPhyOffsetPulling), so the rest is likely not cached. */
    int suggest_pulling_from_slave;
    struct store_hold hold;     /* release with store_hold_release after use */
};

/* Reads up to max_count messages of one queue. The views stay valid until
 * store_hold_release(&res->hold); the caller must release even on errors
 * (a no-op when nothing is held). */
enum store_get_status store_get(struct store *s, const struct store_get_req *req,
                                struct store_get_result *res);

enum store_lookup_status {
    STORE_LOOKUP_OK = 0,
    STORE_LOOKUP_OFFSET_MOVED,  /* below the log's minimum: deleted by retention */
    STORE_LOOKUP_NOT_FOUND,     /* beyond the end, or not the start of a valid record */
};
/* Record at physical offset: view + hold (release after use). */
enum store_lookup_status store_lookup(struct store *s, int64_t phys, struct store_view *v,
                                      struct store_hold *h);
/* Same, copied into buf (cap bytes); *len = record size (also when too
 * small, then returns STORE_LOOKUP_NOT_FOUND with *len set). */
enum store_lookup_status store_lookup_copy(struct store *s, int64_t phys, void *buf, size_t cap,
                                           size_t *len);

/* Query by key through the index: physical offsets of records of topic
 * whose KEYS contain key (or whose UNIQ_KEY equals it) and whose store time
 * is in [begin_ms, end_ms], newest first, at most max. Candidates are
 * checked against the record itself, so hash collisions never leak.
 * Returns the count (>= 0) or -errno. */
int store_query_by_key(struct store *s, const char *topic, const char *key, size_t max,
                       int64_t begin_ms, int64_t end_ms, int64_t *phys_out);
/* Looks up a message by its unique (client) id. Returns 0 and sets *phys,
 * -ENOENT if not found. */
int store_query_by_uniq_id(struct store *s, const char *topic, const char *uniq_id, int64_t *phys);
/* Looks up by offsetMsgId (decodes it); -ENOENT if not present, -EINVAL if
 * malformed, -ESRCH if the id names another store host. */
int store_query_by_offset_id(struct store *s, const char *msg_id, int64_t *phys);

/* Queue bounds: min (first readable) and max (next to be written). A queue
 * the store does not know answers 0. */
int64_t store_min_queue_offset(struct store *s, const char *topic, int32_t queue_id);
int64_t store_max_queue_offset(struct store *s, const char *topic, int32_t queue_id);
/* First queue offset whose store time >= ts_ms (binary search); max offset
 * if all are older, min offset if the queue is empty or all are newer. */
int64_t store_offset_by_time(struct store *s, const char *topic, int32_t queue_id, int64_t ts_ms);
/* Store timestamp of the message at queue offset; -1 if not available. */
int64_t store_message_store_time(struct store *s, const char *topic, int32_t queue_id, int64_t qoff);

int64_t store_commitlog_min_offset(struct store *s);
int64_t store_commitlog_max_offset(struct store *s);

struct store_stats {
    int64_t commitlog_min_offset;
    int64_t commitlog_max_offset;
    int64_t commitlog_flushed_offset;
    int64_t dispatched_offset;
    uint64_t commitlog_disk_bytes;  /* segment files' total size */
    double disk_used_ratio;         /* last probe */
    int writable;                   /* 0 while disk full */
    uint64_t put_count;
    uint64_t put_bytes;
    double put_tps;                 /* over the last completed second */
    uint64_t get_count;
    uint64_t queue_count;
};
void store_get_stats(struct store *s, struct store_stats *st);

/* Removes the consume queues of topic (log records stay until retention).
 * Returns the number of queues removed. */
int store_delete_topic(struct store *s, const char *topic);

/* Calls fn for every queue the store knows. Return nonzero from fn to stop. */
typedef int (*store_queue_fn)(const char *topic, int32_t queue_id, int64_t min_offset,
                              int64_t max_offset, void *ud);
void store_list_queues(struct store *s, store_queue_fn fn, void *ud);

/* Runs a retention / disk-protection pass now, as if at deleteWhen time.
 * Returns the number of commitlog segments deleted. */
int store_cleanup_now(struct store *s);
/* Probes the disk now and updates the writable state (what puts check). */
void store_check_disk(struct store *s);

/* HA building blocks. store_read_raw returns a view of up to n committed log
 * bytes starting at off (never crossing a segment); 0 at the end, or
 * STORE_LOOKUP_* style negatives: -ERANGE below the minimum. Release h. */
ssize_t store_read_raw(struct store *s, int64_t off, size_t n, const uint8_t **p,
                       struct store_hold *h);
/* Appends raw already-encoded log bytes at exactly off (== max offset),
 * as a slave would. Only whole records / end-of-segment blanks are taken;
 * returns the bytes consumed (the caller keeps the partial rest) or -errno
 * (-EINVAL bad offset or corrupt data, -ENOSPC disk full). */
ssize_t store_append_raw(struct store *s, int64_t off, const uint8_t *data, size_t len);

#endif
