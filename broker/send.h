/*
 * Send processor: SEND_MESSAGE (10), SEND_MESSAGE_V2 (310), SEND_BATCH_MESSAGE
 * (320) and CONSUMER_SEND_MSG_BACK (36). Messages are appended on the loop
 * thread (store_put only copies into the mapped log). In SYNC_FLUSH mode the
 * answer waits for the group commit: the store's flush thread completes a
 * pooled pending entry, queues it on a mutex-protected list and wakes the
 * loop with ev_async, and the loop answers. Nothing on the loop waits for
 * the disk.
 *
 * Ownership: send_new allocates the context and its pending pool;
 * send_free releases them (call after store_close and send_drain).
 */
#ifndef RMQ_BROKER_SEND_H
#define RMQ_BROKER_SEND_H

#include <stdint.h>

#include "message.h"
#include "remoting.h"

struct broker;
struct send_ctx;

struct send_ctx *send_new(struct broker *b);
void send_free(struct send_ctx *s);
void send_on_request(struct send_ctx *s, rmt_conn *c, rmt_cmd *req);
void send_on_msg_back(struct send_ctx *s, rmt_conn *c, rmt_cmd *req);
/* Answers every completed flush wait now (used at shutdown after store_close). */
void send_drain(struct send_ctx *s);
/* Flush waits not yet answered. */
unsigned send_pending(const struct send_ctx *s);

/* Stores a message that the broker itself re-publishes (delay scheduler):
 * props are the complete properties. Returns the store status. */
int send_republish(struct send_ctx *s, const char *topic, int queue_id, const struct msg_record *r,
                   const char *props, uint32_t props_len);

#endif
