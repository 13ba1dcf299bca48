/*
 * Broker metadata store: topic configs, subscription-group configs and
 * consumer offsets, kept in one LMDB environment under
 * <storePathRootDir>/metadata/.
 *
 * Topic and group configs live in in-memory hash tables (the send/pull path
 * only ever reads memory) and every change is written through in its own
 * LMDB write transaction before it becomes visible; admin changes are rare,
 * so the fsync per change is fine there. Each table carries a RocketMQ
 * DataVersion (timestamp + counter) that is bumped and persisted with every
 * change.
 *
 * Consumer offsets are committed to memory only (in place, no allocation once
 * the topic@group entry and the queue slot exist). meta_offsets_persist(),
 * called from the broker loop every flushConsumerOffsetInterval, copies the
 * entries changed since the last batch into a staging buffer and hands it to
 * a private writer thread that stores them in ONE LMDB write transaction, so
 * the loop never waits for disk on that path either. After kill -9 the
 * offsets of the last completed batch survive; later commits are lost, as in
 * RocketMQ.
 *
 * Threading: every function here must be called from one thread (the broker
 * event loop). The only other thread is the internal offset writer, which
 * touches nothing but the staging buffer it was handed and LMDB. LMDB allows
 * one write transaction at a time, so an admin write (config put/delete,
 * offset delete/reset) may wait for a batch that is being committed.
 *
 * Errors: LMDB failures are logged here once, with the table and key
 * involved (a full map gets a message saying to raise the map size); the
 * functions return negative errno values (-ENOSPC for a full map, -EBADMSG
 * for corrupt data) and callers need not log them again.
 *
 * Ownership: meta_open allocates the store, meta_close frees it. Pointers
 * returned by lookups point into the store and stay valid until that entry is
 * changed or deleted, or the store is closed. Strings passed in are copied.
 */
#ifndef RMQ_BROKER_METADATA_H
#define RMQ_BROKER_METADATA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"

/* RocketMQ limits: topic names up to 127 chars, group names up to 255, both
 * from the charset [%|a-zA-Z0-9_-]. */
#define META_TOPIC_NAME_MAX 127
#define META_GROUP_NAME_MAX 255
/* Upper bound for queue counts of a topic and for queue ids in offsets. */
#define META_QUEUE_MAX 65536

#define META_DEFAULT_MAP_SIZE ((size_t)1 << 30)

/* RocketMQ PermName bits. */
#define META_PERM_PRIORITY 0x8
#define META_PERM_READ 0x4
#define META_PERM_WRITE 0x2
#define META_PERM_INHERIT 0x1

enum meta_filter_type { META_FILTER_SINGLE_TAG = 0, META_FILTER_MULTI_TAG = 1 };

struct meta_data_version {
    uint64_t state_version; /* always 0 here (only used by controller mode) */
    uint64_t timestamp;     /* ms since the epoch of the last change */
    uint64_t counter;       /* incremented on every change */
};

struct meta_topic {
    char name[META_TOPIC_NAME_MAX + 1];
    int32_t read_queue_nums;
    int32_t write_queue_nums;
    int32_t perm;
    enum meta_filter_type filter_type;
    int32_t sys_flag;
    bool order;
};

struct meta_group {
    char name[META_GROUP_NAME_MAX + 1];
    bool consume_enable;
    bool consume_from_min_enable;
    bool consume_broadcast_enable;
    bool consume_message_orderly;
    bool notify_consumer_ids_changed_enable;
    int32_t retry_queue_nums;
    int32_t retry_max_times;
    int64_t broker_id;
    int64_t which_broker_when_consume_slowly;
    int32_t group_sys_flag;
    int32_t consume_timeout_minute;
};

struct meta;

/* Opens (creating if needed) <store_root>/metadata/ and loads everything into
 * memory. map_size 0 means META_DEFAULT_MAP_SIZE. A record that cannot be
 * decoded makes the open fail with -EBADMSG after logging which table and key
 * it was. Returns 0 or a negative errno; *out is set only on success. */
int meta_open(const char *store_root, size_t map_size, struct meta **out);
/* Waits for a running offset batch, persists the remaining dirty offsets and
 * frees everything. Returns the result of that last persist (the store is
 * freed in any case). NULL is allowed. */
int meta_close(struct meta *m);

/* True if name is a valid RocketMQ topic / group name. */
bool meta_topic_name_valid(const char *name);
bool meta_group_name_valid(const char *name);

/* Fills RocketMQ's defaults (16/16 queues, perm 6, SINGLE_TAG; group: all
 * enables true, 1 retry queue, 16 retries, broker 0, slow broker 1, 15 min).
 * Names longer than the limit are truncated (and then rejected by put, since
 * the caller should have validated them). */
void meta_topic_defaults(struct meta_topic *t, const char *name);
void meta_group_defaults(struct meta_group *g, const char *name);

/* Creates or replaces a topic config. Writes it and the bumped data version
 * in one transaction, then updates memory. A config identical to the stored
 * one is a no-op (no version bump). Returns 0, -EINVAL (bad field; logged by
 * the caller), -ENOSPC (map full), or another negative errno; on error memory
 * and disk are unchanged. */
int meta_topic_put(struct meta *m, const struct meta_topic *t);
/* Returns 0, -ENOENT, or an error as for put. */
int meta_topic_delete(struct meta *m, const char *name);
const struct meta_topic *meta_topic_get(const struct meta *m, const char *name);
size_t meta_topic_count(const struct meta *m);
/* Calls fn for every topic in unspecified order until it returns non-zero
 * (which is then returned). fn must not modify the store. */
int meta_topic_foreach(const struct meta *m, int (*fn)(const struct meta_topic *t, void *arg),
                       void *arg);
void meta_topics_version(const struct meta *m, struct meta_data_version *out);

int meta_group_put(struct meta *m, const struct meta_group *g);
int meta_group_delete(struct meta *m, const char *name);
const struct meta_group *meta_group_get(const struct meta *m, const char *name);
size_t meta_group_count(const struct meta *m);
int meta_group_foreach(const struct meta *m, int (*fn)(const struct meta_group *g, void *arg),
                       void *arg);
void meta_groups_version(const struct meta *m, struct meta_data_version *out);

/* Records a committed offset in memory (hot path; no disk access). offset
 * must be >= 0 and queue_id < META_QUEUE_MAX. Allocates only for the first
 * commit of a topic@group or for a queue id beyond the slots seen so far.
 * Returns 0, -EINVAL or -ENOMEM. */
int meta_offset_commit(struct meta *m, const char *topic, const char *group, uint32_t queue_id,
                       int64_t offset);
/* Returns 0 and sets *offset, or -ENOENT if nothing was committed. */
int meta_offset_query(const struct meta *m, const char *topic, const char *group,
                      uint32_t queue_id, int64_t *offset);
/* Calls fn for each stored offset, filtered by topic and/or group (NULL =
 * any), in ascending queue order per topic@group, until fn returns non-zero. */
int meta_offsets_foreach(const struct meta *m, const char *topic, const char *group,
                         int (*fn)(const char *topic, const char *group, uint32_t queue_id,
                                   int64_t offset, void *arg),
                         void *arg);
/* Admin operations, written through synchronously (after waiting for a
 * running batch so they cannot be overtaken by it). delete_* remove every
 * topic@group entry of a group / topic and return the number removed or a
 * negative errno. reset replaces the offsets of topic@group with offsets[i]
 * for queue i, i < n (all >= 0). On error memory and disk are unchanged. */
int meta_offsets_delete_group(struct meta *m, const char *group);
int meta_offsets_delete_topic(struct meta *m, const char *topic);
int meta_offsets_reset(struct meta *m, const char *topic, const char *group,
                       const int64_t *offsets, uint32_t n);

/* Starts a background batch with every offset changed since the last batch.
 * Returns 0 (started, or nothing to do), -EBUSY if the previous batch is
 * still being written (nothing started; its entries stay dirty for the next
 * call), -ENOMEM, or the negative errno of the previous batch if that one
 * failed: it is logged here, its entries are queued again and a new batch is
 * started. */
int meta_offsets_persist(struct meta *m);
/* Waits for a running batch, then writes all dirty offsets in the calling
 * thread. Returns 0 or a negative errno (entries stay dirty on failure).
 * For shutdown and tests. */
int meta_offsets_persist_sync(struct meta *m);
/* Number of topic@group entries with changes not yet handed to a batch. */
size_t meta_offsets_dirty(const struct meta *m);

/* JSON encoders for the RocketMQ protocol. Each appends one JSON object to
 * out (entries sorted by name so the output is deterministic) and returns 0
 * or -ENOMEM.
 * topics: TopicConfigSerializeWrapper {"topicConfigTable":{..},"dataVersion":{..}}
 * groups: SubscriptionGroupWrapper {"subscriptionGroupTable":{..},"dataVersion":{..}}
 * offsets: ConsumerOffsetManager {"offsetTable":{"t@g":{0:12,1:7}}} (numeric
 * keys unquoted, as fastjson writes Integer map keys). */
int meta_topics_encode_json(const struct meta *m, struct buf *out);
int meta_groups_encode_json(const struct meta *m, struct buf *out);
int meta_offsets_encode_json(const struct meta *m, struct buf *out);
/* Appends s as a JSON string literal (quoted, escaped). */
int meta_json_string(struct buf *out, const char *s, size_t len);

#endif
