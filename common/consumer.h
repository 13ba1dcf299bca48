/*
 * RocketMQ pull consumer over the client core (client.h).
 *
 * Two layers:
 *  - cli_pull: one PULL_MESSAGE to one broker queue, with the response body
 *    walked by cli_pull_next as message views (no copies);
 *  - cli_consumer: a managed consumer of one topic for a group. In
 *    CLUSTERING mode it sends HEART_BEAT to the topic's brokers every 30 s,
 *    asks GET_CONSUMER_LIST_BY_GROUP and takes its share of the queues with
 *    AllocateMessageQueueAveragely (every 20 s and when a broker pushes
 *    NOTIFY_CONSUMER_IDS_CHANGED), keeps offsets on the brokers
 *    (QUERY_CONSUMER_OFFSET / UPDATE_CONSUMER_OFFSET every 5 s and at
 *    shutdown) and says UNREGISTER_CLIENT at shutdown. In BROADCASTING mode it
 *    reads every queue and keeps offsets in memory and, if a path is given,
 *    in a local file.
 *
 * Each assigned queue has one long-polling pull in flight. Messages matching
 * the tag subscription are handed to on_messages during the pull's callback:
 * the views point into the response buffer and are valid only during that
 * call. When on_messages returns 0 the queue's offset moves past the batch;
 * otherwise the same batch is pulled again after pull_retry_ms. Delivery is
 * at least once: what was processed but not yet committed when a consumer
 * dies is delivered again.
 *
 * Orderly mode (CLUSTERING with orderly set; RocketMQ's
 * ConsumeMessageOrderlyService): a queue is consumed only while this client
 * (its client id is the lock owner) holds the queue's lock on the master of
 * its broker. Rebalancing assigns a queue; the consumer then LOCK_BATCH_MQs
 * it and only once granted learns its offset and pulls. Locks are renewed
 * every lock_interval_ms and after each rebalance; queues not granted are
 * asked for again then. A queue that is no longer assigned, whose renewal
 * was refused, or whose last grant is older than lock_live_ms (shorter than
 * the broker's rebalanceLockMaxLiveTime) stops being consumed: the pulled
 * but undelivered batch is discarded, the offset of what was delivered is
 * committed and, once the commit is answered, the queue is unlocked
 * (UNLOCK_BATCH_MQ). Shutdown commits, waits for the answers, then unlocks.
 * A queue's batches are always delivered one after the other (one pull per
 * queue, on_messages runs to completion before the next pull), so messages
 * of a queue reach the application in queue order.
 *
 * Ownership: cli_consumer_new allocates, cli_consumer_free releases (after
 * cli_consumer_shutdown for a clean stop). Free consumers before the client.
 */
#ifndef RMQ_CONSUMER_H
#define RMQ_CONSUMER_H

#include <stdbool.h>
#include <stdint.h>

#include "buf.h"
#include "client.h"
#include "message.h"
#include "route.h"

/* PullSysFlag bits. */
#define CLI_PULL_FLAG_COMMIT_OFFSET 0x1
#define CLI_PULL_FLAG_SUSPEND 0x2
#define CLI_PULL_FLAG_SUBSCRIPTION 0x4
#define CLI_PULL_FLAG_CLASS_FILTER 0x8

struct cli_msg_view {
    const char *topic;
    uint32_t topic_len;
    const uint8_t *body;
    uint32_t body_len;
    const char *props;
    uint32_t props_len;
    const char *tags;           /* NULL when the message has no tag */
    size_t tags_len;
    const char *keys;           /* NULL when none */
    size_t keys_len;
    const char *msg_id;         /* UNIQ_KEY, or offset_msg_id when absent */
    size_t msg_id_len;
    char offset_msg_id[MSG_OFFSET_ID_MAX];
    const char *broker;         /* the queue's broker name */
    int queue_id;
    int64_t queue_offset, commit_log_offset, born_ts, store_ts;
    int32_t flag, sysflag;      /* sysflag & MSG_SYSFLAG_COMPRESSED: body is zlib data */
    int reconsume_times;
};

/* Decodes the next stored record of a pull body at *pos. Returns 1, 0 at
 * the end, or -EBADMSG for a malformed body. */
int cli_pull_next(const uint8_t *body, size_t len, size_t *pos, struct cli_msg_view *out);

struct cli_pull_req {
    const char *group, *topic, *sub_expr;  /* sub_expr NULL: "*" */
    int queue_id;
    int64_t offset;
    int max_msgs;          /* 0 = 32 */
    int suspend_ms;        /* long-poll time on the broker; 0 = no suspension */
    int64_t commit_offset; /* < 0: none */
    int64_t sub_version;
};

enum cli_pull_status {
    CLI_PULL_FOUND,
    CLI_PULL_NO_NEW_MSG,       /* PULL_NOT_FOUND */
    CLI_PULL_NO_MATCHED_MSG,   /* PULL_RETRY_IMMEDIATELY */
    CLI_PULL_OFFSET_ILLEGAL,   /* PULL_OFFSET_MOVED: continue at next_begin */
};

struct cli_pull_result {
    int err;                   /* 0, -errno, or -EPROTO (code holds the answer) */
    int code;
    enum cli_pull_status status;
    int64_t next_begin, min_offset, max_offset, suggest_broker;
    const uint8_t *body;       /* valid during the callback */
    uint32_t body_len;
    char errmsg[CLI_ERRMSG_MAX];
};

typedef void (*cli_pull_fn)(const struct cli_pull_result *r, void *ud);
/* Returns 0 (cb will be called once) or -errno. The request command is
 * rebuilt in cmd, which the caller owns and may reuse (no allocation). */
int cli_pull(cli_client *c, const char *addr, const struct cli_pull_req *req, rmt_cmd *cmd,
             cli_pull_fn cb, void *ud);

typedef struct cli_consumer cli_consumer;

enum cli_message_model { CLI_CLUSTERING = 0, CLI_BROADCASTING = 1 };
enum cli_from_where { CLI_FROM_LAST_OFFSET = 0, CLI_FROM_FIRST_OFFSET = 1, CLI_FROM_TIMESTAMP = 2 };

/* Return 0 once the messages are processed; non-zero to get them again. */
typedef int (*cli_consume_fn)(cli_consumer *cs, const struct cli_msg_view *msgs, int n, void *ud);

struct cli_consumer_opts {
    const char *group, *topic;
    const char *sub_expr;          /* "*" or "TagA || TagB"; NULL = "*" */
    enum cli_message_model model;
    enum cli_from_where from;
    int64_t from_timestamp_ms;     /* for CLI_FROM_TIMESTAMP */
    const char *offset_file;       /* broadcasting: where offsets persist; NULL = memory only */
    int batch_size;                /* 0 = 32 */
    int suspend_ms;                /* 0 = 15000 */
    int rebalance_ms;              /* 0 = 20000 */
    int heartbeat_ms;              /* 0 = 30000 */
    int commit_ms;                 /* 0 = 5000 */
    int pull_retry_ms;             /* after an error or a refused batch; 0 = 1000 */
    bool orderly;                  /* clustering only: lock queues on the broker (see above) */
    int lock_interval_ms;          /* orderly: renewal period; 0 = 20000 (rebalanceLockInterval) */
    int lock_live_ms;              /* orderly: a grant older than this is lost; 0 = 30000 */
    cli_consume_fn on_messages;
    void *ud;
};

/* Returns NULL with *err set (-EINVAL with the reason logged, -ENOMEM). */
cli_consumer *cli_consumer_new(cli_client *c, const struct cli_consumer_opts *o, int *err);
/* Starts heartbeats, rebalancing and pulling. Returns 0 or -errno. */
int cli_consumer_start(cli_consumer *cs);
/* Commits every offset, unregisters from the brokers and stops pulling;
 * blocks (running the loop) up to timeout_ms for the answers. Returns 0, or
 * -ETIMEDOUT / -EIO if some commit was not acknowledged. */
int cli_consumer_shutdown(cli_consumer *cs, int timeout_ms);
void cli_consumer_free(cli_consumer *cs);
/* Triggers a rebalance on the next loop turn. */
void cli_consumer_rebalance_now(cli_consumer *cs);
/* Currently assigned queues (broker pointers valid until the next
 * rebalance); returns the count, writing at most max. */
int cli_consumer_assigned(const cli_consumer *cs, struct cli_mq *out, int max);
/* Heartbeat body (HeartbeatData JSON) of this consumer; appended to out. */
int cli_consumer_heartbeat_json(const cli_consumer *cs, struct buf *out);

#endif
