/*
 * Receipt handles and pop check-point info, exactly as RocketMQ 5 writes
 * them, with no I/O so they can be tested alone.
 *
 * A broker answering POP_MESSAGE describes the check point in its response
 * header (startOffsetInfo "t qid off;...", msgOffsetInfo "t qid o1,o2;...",
 * orderCountInfo), where t is 0 for the topic, 1 for a v1 pop retry topic
 * ("%RETRY%group_topic") and 2 for a v2 one ("%RETRY%group+topic"). Each
 * message's extraInfo is then
 *   ckQueueOffset popTime invisibleTime reviveQid t brokerName queueId queueOffset
 * and the receipt handle given to a client is that plus " commitLogOffset".
 * ACK_MESSAGE and CHANGE_MESSAGE_INVISIBLETIME carry the handle as extraInfo,
 * so everything an ack needs travels inside the handle; the proxy keeps no
 * state per received message, except for the handles it renews for push
 * consumers (renew.h).
 */
#ifndef RMQ_PX_RECEIPT_H
#define RMQ_PX_RECEIPT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PX_HANDLE_MAX 512

struct px_handle {
    int64_t start_offset;    /* check point's queue offset */
    int64_t retrieve_time;   /* pop time, ms */
    int64_t invisible_time;  /* ms */
    int revive_qid;
    char topic_type;         /* '0' topic, '1' retry v1, '2' retry v2 */
    char broker[128];
    int queue_id;
    int64_t offset;          /* the message's queue offset */
    int64_t commit_log_offset; /* -1 when absent (8-field form) */
};

/* Parses a handle (8 or 9 space-separated fields). 0 or -EINVAL. */
int px_handle_decode(const char *s, size_t len, struct px_handle *h);
/* Writes the 9-field form (8 when commit_log_offset < 0). Returns the
 * length or -ENOSPC. */
int px_handle_encode(const struct px_handle *h, char *out, size_t cap);
/* Topic the broker stored the popped message under: the topic itself, or
 * its pop retry topic for the group. Returns the length or -ENOSPC/-EINVAL. */
int px_handle_real_topic(const struct px_handle *h, const char *topic, const char *group,
                         char *out, size_t cap);
/* 0, 1 or 2 for a topic name as seen in a stored record (retry topics). */
char px_topic_type(const char *topic, size_t len);

/*
 * Check-point info of one POP_MESSAGE answer. px_ckinfo_parse keeps views
 * into the header strings (which must stay alive while it is used).
 */
#define PX_CK_MAX_QUEUES 64
struct px_ck_entry {
    char type;
    int queue_id;
    int64_t queue_offset;    /* orderCountInfo "qo<qid>%<offset>" keys; -1 otherwise */
    int64_t value;           /* startOffsetInfo / orderCountInfo */
    const char *offsets;     /* msgOffsetInfo: "o1,o2,..." */
    size_t offsets_len;
};
struct px_ckinfo {
    int n;
    struct px_ck_entry e[PX_CK_MAX_QUEUES];
};
/* Parses "t qid value;..." (msg_offsets = false) or "t qid o1,o2;..."
 * (msg_offsets = true). An empty/NULL string gives n = 0. 0 or -EINVAL. */
int px_ckinfo_parse(const char *s, bool msg_offsets, struct px_ckinfo *out);
const struct px_ck_entry *px_ckinfo_find(const struct px_ckinfo *ci, char type, int queue_id);
/* orderCountInfo entry of one message ("t qo<qid>%<offset> count"). */
const struct px_ck_entry *px_ckinfo_find_qo(const struct px_ckinfo *ci, char type, int queue_id,
                                            int64_t queue_offset);
/* The idx-th offset of a msgOffsetInfo entry; -EINVAL if out of range. */
int px_ck_offset_at(const struct px_ck_entry *e, int idx, int64_t *out);

/* Builds the handle of one popped message. */
int px_handle_build(char *out, size_t cap, int64_t ck_offset, int64_t pop_time, int64_t invisible,
                    int revive_qid, char type, const char *broker, int queue_id, int64_t queue_offset,
                    int64_t commit_log_offset);

/*
 * Transaction ids handed to producers: they carry what END_TRANSACTION
 * needs ("addr;commitLogOffset;tranStateTableOffset;brokerTxId"), so the
 * proxy keeps no transaction state.
 */
struct px_txid {
    char addr[64];
    int64_t commit_log_offset;
    int64_t tran_state_offset;
    char broker_txid[128];
};
int px_txid_encode(const struct px_txid *t, char *out, size_t cap);
int px_txid_decode(const char *s, struct px_txid *t);

#endif
