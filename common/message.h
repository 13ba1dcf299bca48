/*
 * RocketMQ message codec shared by the broker store and the clients.
 *
 * The stored-record layout is RocketMQ's CommitLog record (all fields
 * big-endian): TOTALSIZE, MAGICCODE, BODYCRC, QUEUEID, FLAG, QUEUEOFFSET,
 * PHYSICALOFFSET, SYSFLAG, BORNTIMESTAMP, BORNHOST, STORETIMESTAMP,
 * STOREHOST, RECONSUMETIMES, PREPARED TRANSACTION OFFSET, BODY (4-byte len),
 * TOPIC (1-byte len, or 2 bytes with the v2 magic), PROPERTIES (2-byte len).
 * Hosts are ip4+port (8 bytes) or ip6+port (20 bytes) selected by sysflag.
 *
 * Decoding never allocates: struct msg_record holds views (pointers) into the
 * caller's buffer, valid as long as that buffer is. Encoding writes into a
 * caller-supplied buffer of msg_record_size() bytes.
 */
#ifndef RMQ_MESSAGE_H
#define RMQ_MESSAGE_H

#include <stddef.h>
#include <stdint.h>

#define MSG_MAGIC_CODE        0xdaa320a7u /* v1: 1-byte topic length */
#define MSG_MAGIC_CODE_V2     0xdaa320abu /* v2: 2-byte topic length */
#define MSG_BLANK_MAGIC_CODE  0xcbd43194u /* end-of-segment filler */
#define MSG_END_FILE_MIN_BLANK 8          /* 4-byte size + 4-byte blank magic */

/* RocketMQ MessageSysFlag bits. */
#define MSG_SYSFLAG_COMPRESSED        0x1
#define MSG_SYSFLAG_MULTI_TAGS        0x2
#define MSG_SYSFLAG_TRANSACTION_NOT   0x0
#define MSG_SYSFLAG_TRANSACTION_PREPARED 0x4
#define MSG_SYSFLAG_TRANSACTION_COMMIT   0x8
#define MSG_SYSFLAG_TRANSACTION_ROLLBACK 0xc
#define MSG_SYSFLAG_TRANSACTION_MASK  0xc
#define MSG_SYSFLAG_BORNHOST_V6       0x10
#define MSG_SYSFLAG_STOREHOST_V6      0x20
#define MSG_SYSFLAG_NEED_UNWRAP       0x40
#define MSG_SYSFLAG_INNER_BATCH       0x80

/* RocketMQ MessageConst property names. */
#define MSG_PROP_KEYS                  "KEYS"
#define MSG_PROP_TAGS                  "TAGS"
#define MSG_PROP_WAIT_STORE_MSG_OK     "WAIT"
#define MSG_PROP_DELAY_TIME_LEVEL      "DELAY"
#define MSG_PROP_RETRY_TOPIC           "RETRY_TOPIC"
#define MSG_PROP_REAL_TOPIC            "REAL_TOPIC"
#define MSG_PROP_REAL_QUEUE_ID         "REAL_QID"
#define MSG_PROP_TRANSACTION_PREPARED  "TRAN_MSG"
#define MSG_PROP_PRODUCER_GROUP        "PGROUP"
#define MSG_PROP_MIN_OFFSET            "MIN_OFFSET"
#define MSG_PROP_MAX_OFFSET            "MAX_OFFSET"
#define MSG_PROP_BUYER_ID              "BUYER_ID"
#define MSG_PROP_ORIGIN_MESSAGE_ID     "ORIGIN_MESSAGE_ID"
#define MSG_PROP_TRANSFER_FLAG         "TRANSFER_FLAG"
#define MSG_PROP_CORRECTION_FLAG       "CORRECTION_FLAG"
#define MSG_PROP_MQ2_FLAG              "MQ2_FLAG"
#define MSG_PROP_RECONSUME_TIME        "RECONSUME_TIME"
#define MSG_PROP_MSG_REGION            "MSG_REGION"
#define MSG_PROP_TRACE_SWITCH          "TRACE_ON"
#define MSG_PROP_UNIQ_CLIENT_MESSAGE_ID_KEYIDX "UNIQ_KEY"
#define MSG_PROP_MAX_RECONSUME_TIMES   "MAX_RECONSUME_TIMES"
#define MSG_PROP_CONSUME_START_TIMESTAMP "CONSUME_START_TIME"
#define MSG_PROP_TRANSACTION_PREPARED_QUEUE_OFFSET "TRAN_PREPARED_QUEUE_OFFSET"
#define MSG_PROP_TRANSACTION_CHECK_TIMES "TRANSACTION_CHECK_TIMES"
#define MSG_PROP_CHECK_IMMUNITY_TIME_IN_SECONDS "CHECK_IMMUNITY_TIME_IN_SECONDS"
#define MSG_PROP_INSTANCE_ID           "INSTANCE_ID"
#define MSG_PROP_CORRELATION_ID        "CORRELATION_ID"
#define MSG_PROP_MESSAGE_REPLY_TO_CLIENT "REPLY_TO_CLIENT"
#define MSG_PROP_MESSAGE_TTL           "TTL"
#define MSG_PROP_REPLY_MESSAGE_ARRIVE_TIME "ARRIVE_TIME"
#define MSG_PROP_PUSH_REPLY_TIME       "PUSH_REPLY_TIME"
#define MSG_PROP_CLUSTER               "CLUSTER"
#define MSG_PROP_MESSAGE_TYPE          "MSG_TYPE"
#define MSG_PROP_INNER_MULTI_DISPATCH  "INNER_MULTI_DISPATCH"
#define MSG_PROP_INNER_MULTI_QUEUE_OFFSET "INNER_MULTI_QUEUE_OFFSET"
#define MSG_PROP_TIMER_DELIVER_MS      "TIMER_DELIVER_MS"
#define MSG_PROP_TIMER_DELAY_SEC       "TIMER_DELAY_SEC"
#define MSG_PROP_TIMER_DELAY_MS        "TIMER_DELAY_MS"
#define MSG_PROP_TIMER_OUT_MS          "TIMER_OUT_MS"
#define MSG_PROP_TIMER_ENQUEUE_MS      "TIMER_ENQUEUE_MS"
#define MSG_PROP_TIMER_DEQUEUE_MS      "TIMER_DEQUEUE_MS"
#define MSG_PROP_TIMER_ROLL_TIMES      "TIMER_ROLL_TIMES"
#define MSG_PROP_TIMER_DEL_UNIQKEY     "TIMER_DEL_UNIQKEY"
#define MSG_PROP_SHARDING_KEY          "__SHARDINGKEY"
#define MSG_PROP_DLQ_ORIGIN_TOPIC      "DLQ_ORIGIN_TOPIC"
#define MSG_PROP_DLQ_ORIGIN_MESSAGE_ID "DLQ_ORIGIN_MESSAGE_ID"
#define MSG_PROP_POP_CK                "POP_CK"
#define MSG_PROP_FIRST_POP_TIME        "1ST_POP_TIME"

#define MSG_NAME_VALUE_SEPARATOR '\001'
#define MSG_PROPERTY_SEPARATOR   '\002'
#define MSG_KEY_SEPARATOR        ' '

#define MSG_TOPIC_MAX_V1 127     /* topic length limit of the v1 layout */
#define MSG_PROPERTIES_MAX 32767 /* properties length is a Java short */
#define MSG_OFFSET_ID_MAX 57     /* 56 hex chars (ipv6) + NUL */
#define MSG_UNIQ_ID_LEN 32       /* ipv4 unique id: 32 hex chars */

struct msg_host {
    uint8_t ip[16];  /* first 4 bytes used for ipv4 */
    uint32_t port;
    int v6;
};

/* One stored record. On decode, body/topic/props point into the input. */
struct msg_record {
    uint32_t total_size;
    uint32_t magic;
    int32_t body_crc;
    int32_t queue_id;
    int32_t flag;
    int64_t queue_offset;
    int64_t phys_offset;
    int32_t sysflag;
    int64_t born_ts;
    struct msg_host born_host;
    int64_t store_ts;
    struct msg_host store_host;
    int32_t reconsume_times;
    int64_t prepared_tx_offset;
    const uint8_t *body;
    uint32_t body_len;
    const char *topic;
    uint32_t topic_len;
    const char *props;
    uint32_t props_len;
};

/* Byte offsets of fixed fields inside a record (for in-place patching). */
#define MSG_POS_TOTALSIZE    0
#define MSG_POS_MAGIC        4
#define MSG_POS_BODYCRC      8
#define MSG_POS_QUEUEID      12
#define MSG_POS_FLAG         16
#define MSG_POS_QUEUEOFFSET  20
#define MSG_POS_PHYSOFFSET   28
#define MSG_POS_SYSFLAG      36
#define MSG_POS_BORNTS       40
#define MSG_POS_BORNHOST     48

/* Size of the encoded record for these lengths and host flags in sysflag. */
size_t msg_record_size(uint32_t body_len, uint32_t topic_len, uint32_t props_len, int32_t sysflag);

/* Encodes r into dst (cap bytes). Host v6-ness comes from r->sysflag; the
 * magic is v1 unless topic_len > 127. body_crc is written as given (compute
 * it with msg_body_crc). Returns the size written or -EINVAL/-ENOSPC. */
int msg_record_encode(uint8_t *dst, size_t cap, const struct msg_record *r);

/* Decodes the record at p (avail bytes readable). Returns:
 *   > 0  record size, *out filled (views into p);
 *   0    blank end-of-segment marker, out->total_size = its size field;
 *   -EAGAIN  fewer bytes than the record claims (torn tail);
 *   -EBADMSG corrupt structure, bad magic, or (check_crc) body CRC mismatch. */
int msg_record_decode(const uint8_t *p, size_t avail, struct msg_record *out, int check_crc);

/* RocketMQ body CRC: CRC-32 (IEEE) masked to 31 bits. */
int32_t msg_body_crc(const void *data, size_t len);
/* Plain CRC-32 (IEEE, zlib compatible). */
uint32_t msg_crc32(uint32_t crc, const void *data, size_t len);

/* Java String.hashCode() of a UTF-8 string (hashed over UTF-16 units). */
int32_t msg_java_hash(const char *s, size_t len);
/* Tag hash code stored in the consume queue: Java hashCode of the tag. */
static inline int64_t msg_tag_hash(const char *tag, size_t len) { return msg_java_hash(tag, len); }

/* Looks up a property value in a "name\1value\2..." string. Returns 1 and
 * sets *val and *vlen (a view) if found, 0 if not. */
int msg_prop_get(const char *props, size_t len, const char *name, const char **val, size_t *vlen);

/* Iterates properties: pos starts at 0; returns 1 per property, 0 at end. */
int msg_prop_next(const char *props, size_t len, size_t *pos, const char **name, size_t *nlen,
                  const char **val, size_t *vlen);

/* Appends "name\1value\2" to dst (cap bytes) at *len. Returns 0 or -ENOSPC;
 * -EINVAL if name or value contain a separator. */
int msg_prop_append(char *dst, size_t cap, size_t *len, const char *name, const char *val,
                    size_t vlen);

/* Iterates space-separated KEYS values: pos starts at 0. Returns 1 per
 * non-empty key, 0 at end. */
int msg_keys_next(const char *keys, size_t len, size_t *pos, const char **key, size_t *klen);

/* offsetMsgId: hex(store ip, port as 4 bytes, physical offset), uppercase.
 * Writes the NUL-terminated id to out (>= MSG_OFFSET_ID_MAX bytes) and
 * returns its length (32 for ipv4, 56 for ipv6). */
int msg_offset_id_encode(const struct msg_host *store_host, int64_t phys_offset, char *out);
/* Parses an offsetMsgId of 32 or 56 hex chars. Returns 0 or -EINVAL. */
int msg_offset_id_decode(const char *id, size_t len, struct msg_host *host, int64_t *phys_offset);

/* One message of a SEND_BATCH body (MessageDecoder.encodeMessages layout:
 * TOTALSIZE, MAGICCODE, BODYCRC, FLAG, BODY len+bytes, PROPERTIES 2-byte
 * len+bytes). Views into the batch body. */
struct msg_batch_item {
    int32_t flag;
    const uint8_t *body;
    uint32_t body_len;
    const char *props;
    uint32_t props_len;
};

/* Decodes the next message of a batch body starting at *pos. Returns 1 and
 * advances *pos, 0 at the end, -EBADMSG on malformed input. */
int msg_batch_next(const uint8_t *p, size_t len, size_t *pos, struct msg_batch_item *out);
/* Counts the messages of a batch body; -EBADMSG if malformed. */
int msg_batch_count(const uint8_t *p, size_t len);
/* Encodes one batch item at dst; returns bytes written or -ENOSPC. Used by
 * clients building SEND_BATCH requests. */
int msg_batch_encode_one(uint8_t *dst, size_t cap, int32_t flag, const void *body, uint32_t body_len,
                         const char *props, uint32_t props_len);

/* Unique message id generator (RocketMQ MessageClientIDSetter layout:
 * ip(4) pid(2) seed(4) millis-since-month-start(4) counter(2), hex upper).
 * Thread-safe after msg_uniq_init. */
struct msg_uniq_gen {
    char fix[21];            /* hex of ip+pid+seed */
    uint32_t counter;        /* atomically incremented */
};

/* ip4 may be NULL (a random non-routable address is used). */
void msg_uniq_init(struct msg_uniq_gen *g, const uint8_t ip4[4], uint32_t pid, uint32_t seed);
/* Writes MSG_UNIQ_ID_LEN hex chars + NUL into out (>= 33 bytes). */
void msg_uniq_next(struct msg_uniq_gen *g, int64_t now_ms, char *out);

#endif
