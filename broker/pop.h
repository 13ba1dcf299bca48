/*
 * RocketMQ 5 pop consumption on the broker: POP_MESSAGE (3442),
 * ACK_MESSAGE (3443), CHANGE_MESSAGE_INVISIBLETIME (3445) and
 * BATCH_ACK_MESSAGE (3543), with RocketMQ's headers and extraInfo
 * ("ckOffset popTime invisibleTime reviveQid retryFlag brokerName queueId
 * [msgOffset]") so the proxy (or a RocketMQ 5 client) can talk to it as to
 * a RocketMQ broker.
 *
 * Model: a pop hands out messages from the pop offset of (group, topic,
 * queue) and records each as in-flight until now + invisibleTime; an ack
 * removes it. An in-flight message whose time passes is revived: copied to
 * %RETRY%<group>_<topic> with reconsumeTimes + 1 (or to %DLQ%<group> once
 * reconsumeTimes reached the group's retryMaxTimes) and removed from the
 * in-flight set only once the copy is on disk. Orderly pops (order=true)
 * lock a queue while any of its messages is in flight and redeliver from
 * the same offsets with the delivery count in orderCountInfo.
 *
 * Durability (pop_state.h): in-flight sets and pop offsets are group
 * committed to LMDB; an ack or invisible-time change is answered only
 * after its transaction committed, so an acknowledged message is never
 * redelivered after a crash, while a pop whose record did not reach the
 * disk simply becomes visible again.
 *
 * Ownership: pop_new allocates; pop_stop (at shutdown, while connections
 * are still open) answers held pops and pending acks; pop_free releases
 * (after store_close).
 */
#ifndef RMQ_BROKER_POP_H
#define RMQ_BROKER_POP_H

#include <stdint.h>

#include "remoting.h"

struct broker;
struct pop_ctx;

/* Opens the pop state under <storePathRootDir>/pop/. NULL on failure (logged). */
struct pop_ctx *pop_new(struct broker *b);
/* Starts the revive timer (after the store is open). */
void pop_start(struct pop_ctx *p);
void pop_stop(struct pop_ctx *p);
void pop_free(struct pop_ctx *p);

void pop_on_request(struct pop_ctx *p, rmt_conn *c, rmt_cmd *req);
void pop_on_conn_closed(struct pop_ctx *p, rmt_conn *c);

/* Store dispatch hook (dispatch thread): wakes held pops of the topic and
 * forwards to pull_dispatch_hook. ud is the pop context. */
void pop_dispatch_hook(const char *topic, int queue_id, int64_t queue_offset, int64_t tag_hash,
                       void *ud);

#endif
