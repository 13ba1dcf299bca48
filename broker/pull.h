/*
 * Pull processor with long polling (RocketMQ PullMessageProcessor and
 * PullRequestHoldService). A pull that finds nothing and carries the
 * suspend flag is held for up to suspendTimeoutMillis (or
 * shortPollingTimeMills when longPollingEnable is false); the store's
 * dispatch thread reports every new consume-queue entry through
 * pull_dispatch_hook, which only marks the queue (lock-free when nobody
 * waits on it) and wakes the loop with ev_async; the loop re-runs the held
 * pulls of that queue and answers as soon as a matching message is there.
 * Found messages are sent zero-copy: the response body is an iovec of views
 * into the mapped commitlog, kept mapped by a pooled store_hold until the
 * connection has written them.
 *
 * Ownership: pull_new allocates, pull_free releases; call it after the
 * server's connections are closed (they release the zero-copy holds).
 */
#ifndef RMQ_BROKER_PULL_H
#define RMQ_BROKER_PULL_H

#include <stdint.h>

#include "remoting.h"

struct broker;
struct pull_ctx;

struct pull_ctx *pull_new(struct broker *b);
void pull_free(struct pull_ctx *p);
void pull_on_request(struct pull_ctx *p, rmt_conn *c, rmt_cmd *req);
void pull_on_conn_closed(struct pull_ctx *p, rmt_conn *c);
/* Store dispatch thread: a message landed in topic/queue_id. */
void pull_dispatch_hook(const char *topic, int queue_id, int64_t queue_offset, int64_t tag_hash,
                        void *ud);
/* Answers every held pull now with what the store has (shutdown). */
void pull_answer_all(struct pull_ctx *p);
unsigned pull_held(const struct pull_ctx *p);

#endif
