/*
 * RocketMQ producer over the client core (client.h): synchronous,
 * asynchronous and oneway sends, ordered sends by sharding key, and batches.
 *
 * Requests are SEND_MESSAGE_V2 (short header names a..n) by default or
 * SEND_MESSAGE with the long names. Each message gets a UNIQ_KEY (the msgId
 * of the result). Queues are picked round robin over the writable queues; a
 * failed send (no answer, or a broker answer RocketMQ retries on) is retried
 * on another broker up to retry_times times. Ordered sends are never retried
 * on another queue, since that would break their order.
 *
 * Memory: each in-flight send uses a context from a free list holding its
 * command, property string and a copy of the body (needed for retries); the
 * contexts keep their capacity, so steady-state sending does not allocate.
 * The caller's message memory is only read during the send call.
 *
 * Every callback is called exactly once, from the loop; cli_producer_free
 * calls the pending ones with err -ECANCELED. The producer must be freed
 * before its cli_client.
 */
#ifndef RMQ_PRODUCER_H
#define RMQ_PRODUCER_H

#include <stdbool.h>
#include <stdint.h>

#include "buf.h"
#include "client.h"
#include "message.h"

typedef struct cli_producer cli_producer;

struct cli_producer_opts {
    const char *group;        /* producer group, required */
    int retry_times;          /* retries on another broker; < 0 = 2 (retryTimesWhenSendFailed) */
    int timeout_ms;           /* per attempt; 0 = the client's timeout */
    bool use_v1_header;       /* SEND_MESSAGE (10) with long names instead of V2 (310) */
};

struct cli_message {
    const char *topic;
    const void *body;
    uint32_t body_len;
    const char *tags;         /* NULL: none */
    const char *keys;         /* space-separated; NULL: none */
    int32_t flag;
    int delay_level;          /* 0: none */
    bool no_wait_store;       /* WAIT=false: the broker may answer before storing */
    const char *props;        /* extra properties "name\1value\2..."; may be NULL */
    uint32_t props_len;
};

enum cli_send_status {
    CLI_SEND_OK = 0,
    CLI_SEND_FLUSH_DISK_TIMEOUT,
    CLI_SEND_FLUSH_SLAVE_TIMEOUT,
    CLI_SEND_SLAVE_NOT_AVAILABLE,
};

struct cli_send_result {
    int err;                  /* 0 sent; -ENOENT topic missing; -ETIMEDOUT/-ECONNREFUSED/... no
                                 answer; -EPROTO the broker refused (see code); -ECANCELED */
    int code;                 /* broker response code of the last attempt, -1 if none */
    enum cli_send_status status;
    char msg_id[MSG_UNIQ_ID_LEN + 1];        /* UNIQ_KEY (of the first message of a batch) */
    char offset_msg_id[MSG_OFFSET_ID_MAX];   /* broker's id (the first one of a batch) */
    char broker[CLI_NAME_MAX];
    int queue_id;
    int64_t queue_offset;
    int attempts;
    char errmsg[CLI_ERRMSG_MAX];
};

typedef void (*cli_send_fn)(const struct cli_send_result *r, void *ud);

/* Returns NULL with *err set (-EINVAL without a group, -ENOMEM). */
cli_producer *cli_producer_new(cli_client *c, const struct cli_producer_opts *o, int *err);
void cli_producer_free(cli_producer *p);

/* Async send. Returns 0 (cb will be called) or -EINVAL (bad message: see the
 * log) / -ENOMEM (cb will not be called). */
int cli_send(cli_producer *p, const struct cli_message *m, cli_send_fn cb, void *ud);
/* Ordered send: the queue is chosen by the hash of shard_key. */
int cli_send_ordered(cli_producer *p, const struct cli_message *m, const char *shard_key,
                     cli_send_fn cb, void *ud);
/* Oneway: no answer, no retry. Returns 0 once queued for sending. */
int cli_send_oneway(cli_producer *p, const struct cli_message *m);
/* Batch of n messages of the same topic, stored atomically on one queue. */
int cli_send_batch(cli_producer *p, const struct cli_message *msgs, int n, cli_send_fn cb, void *ud);

/* Blocking variants: return r->err (0 when sent). */
int cli_send_sync(cli_producer *p, const struct cli_message *m, struct cli_send_result *r);
int cli_send_ordered_sync(cli_producer *p, const struct cli_message *m, const char *shard_key,
                          struct cli_send_result *r);
int cli_send_batch_sync(cli_producer *p, const struct cli_message *msgs, int n,
                        struct cli_send_result *r);

/* Building blocks, exposed for tests and tools. */
struct cli_send_header {
    const char *group, *topic, *broker;
    const char *props;
    uint32_t props_len;
    int queue_id;
    int32_t sys_flag, flag;
    int64_t born_ts;
    int reconsume_times;
    bool batch;
    bool v1;
};
/* Fills cmd (already reset to the right code) with the send header fields. */
int cli_send_header_build(rmt_cmd *cmd, const struct cli_send_header *h);
/* Encodes m's properties (TAGS, KEYS, WAIT, DELAY, UNIQ_KEY, then m->props)
 * into out. Returns 0, -EINVAL (a separator inside a value, or over 32767
 * bytes) or -ENOMEM. */
int cli_message_properties(const struct cli_message *m, const char *uniq_id, struct buf *out);

#endif
