/*
 * Queue locks for ordered consumption (RocketMQ RebalanceLockManager with
 * LOCK_BATCH_MQ (41) / UNLOCK_BATCH_MQ (42)). An orderly consumer locks the
 * queues rebalancing gave it and consumes a queue only while it holds the
 * lock, so one queue is never consumed by two members of a group at once,
 * even while a rebalance moves it. A lock belongs to one clientId of a
 * group; re-locking renews it, it expires after rebalanceLockMaxLiveTime
 * without renewal, and only its owner can unlock it.
 *
 * Locks live in memory only, as in RocketMQ: after a broker restart every
 * client simply locks again. Entries are kept per (group, topic,
 * brokerName, queueId), like RocketMQ's table; unlocked or expired entries
 * are reused, and expired ones are swept when the table grows.
 *
 * Threading: loop thread only. Ownership: lock_new allocates, lock_free
 * releases.
 */
#ifndef RMQ_BROKER_LOCK_H
#define RMQ_BROKER_LOCK_H

#include "remoting.h"

struct broker;
struct lock_ctx;

struct lock_ctx *lock_new(struct broker *b);
void lock_free(struct lock_ctx *l);

/* LOCK_BATCH_MQ: body LockBatchRequestBody JSON; answers
 * LockBatchResponseBody {"lockOKMQSet":[...]} with the queues the client
 * holds after the call. */
void lock_on_lock(struct lock_ctx *l, rmt_conn *c, rmt_cmd *req);
/* UNLOCK_BATCH_MQ: body UnlockBatchRequestBody JSON; answers SUCCESS. */
void lock_on_unlock(struct lock_ctx *l, rmt_conn *c, rmt_cmd *req);

#endif
