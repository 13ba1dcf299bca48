/*
 * Delay scheduler (RocketMQ ScheduleMessageService): messages with a DELAY
 * level are stored in SCHEDULE_TOPIC_XXXX queue level-1 (send.c does the
 * redirection); this module re-publishes each one to its REAL_TOPIC /
 * REAL_QID once its delivery time (the consume-queue tag code the store
 * computes: store time + level delay) has passed. One 100 ms timer on the
 * loop walks every level; progress per level is kept as the consumer offset
 * of the internal group "%SCHEDULE%" on SCHEDULE_TOPIC_XXXX, so it is
 * persisted with the other offsets and survives restarts. A slave never
 * delivers (its log is the master's copy); it only keeps the master's
 * progress (sched_set_offset, from the metadata sync).
 *
 * Ownership: sched_new allocates, sched_free releases.
 */
#ifndef RMQ_BROKER_SCHEDULE_H
#define RMQ_BROKER_SCHEDULE_H

#include <stdint.h>

#include "remoting.h"

struct broker;
struct sched;

#define SCHED_GROUP "%SCHEDULE%"

struct sched *sched_new(struct broker *b);
void sched_free(struct sched *s);
void sched_start(struct sched *s);
void sched_stop(struct sched *s);
/* GET_ALL_DELAY_OFFSET: {"offsetTable":{1:off,...},"dataVersion":{..}}. */
/* Slave metadata sync: the master's progress of one level (0-based). */
void sched_set_offset(struct sched *s, int level, int64_t offset);
void sched_on_delay_offsets(struct sched *s, rmt_conn *c, rmt_cmd *req);

#endif
