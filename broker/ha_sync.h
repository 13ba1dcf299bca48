/*
 * Slave metadata sync and consumer-offset flow-back (RocketMQ
 * SlaveSynchronize, plus the way back).
 *
 * A slave copies the log through ha.h; everything else it needs to take over
 * reads after a master loss comes from here. Every slaveMetadataSyncInterval
 * (10 s) it asks the master's remoting port, one after the other:
 * GET_ALL_TOPIC_CONFIG, GET_ALL_SUBSCRIPTIONGROUP_CONFIG,
 * GET_ALL_CONSUMER_OFFSET and GET_ALL_DELAY_OFFSET, and applies the answers
 * to its own metadata store (topics and groups replaced by the master's;
 * delay-level progress handed to the scheduler).
 *
 * Consumer offsets flow both ways. While the master is unreachable,
 * consumers read from the slave and commit there; the slave remembers those
 * commits (hs_local_commit). On every sync round an offset that consumers
 * committed locally and that is ahead of the master's is pushed to the
 * master with UPDATE_CONSUMER_OFFSET carrying the field HS_FLOW_BACK_FIELD,
 * which our master applies only when it raises the offset (so it never
 * overtakes a newer commit a consumer made on the master meanwhile). Once
 * the master reports an offset at least as far, the local record is
 * dropped and the master's value is authoritative again (an admin reset on
 * the master then reaches the slave). Offsets nobody committed on the slave
 * simply take the master's value. So after a master restart, consumption
 * continues from the furthest offset committed on either broker.
 *
 * The master's remoting address comes from the nameserver's answer to
 * REGISTER_BROKER (masterAddr, hs_set_master); without a nameserver no sync
 * happens (the commitlog still replicates from haMasterAddress).
 *
 * Threads: the broker loop only. Ownership: hs_new allocates, hs_free frees
 * (pending requests are cancelled).
 */
#ifndef RMQ_BROKER_HA_SYNC_H
#define RMQ_BROKER_HA_SYNC_H

#include <stdbool.h>
#include <stdint.h>

#include "buf.h"
#include "remoting.h"

/* Extension field of UPDATE_CONSUMER_OFFSET marking a slave's flow-back. */
#define HS_FLOW_BACK_FIELD "rmqHaFlowBack"

struct broker;
struct hs;

struct hs *hs_new(struct broker *b);
void hs_free(struct hs *h);
/* Starts the periodic sync (a no-op unless the broker is a slave). */
void hs_start(struct hs *h);
/* The master's remoting address (NULL or "" forgets it); a new address
 * triggers a sync round at once. */
void hs_set_master(struct hs *h, const char *addr);
/* Slave: a consumer committed an offset here. Returns 0 or -ENOMEM. */
int hs_local_commit(struct hs *h, const char *topic, const char *group, uint32_t queue_id, int64_t offset);
/* Master: answers a slave's GET_TIMER_CHECK_POINT with the timer's latest
 * durable checkpoint (RocketMQ's TimerCheckpoint encoding). */
void hs_on_timer_check_point(struct broker *b, rmt_conn *c, rmt_cmd *req);
/* Appends runtime-info pairs ("key":"value", comma-first) for
 * GET_BROKER_RUNTIME_INFO. Returns 0 or -ENOMEM. */
int hs_runtime_info(struct hs *h, struct buf *out);

#endif
