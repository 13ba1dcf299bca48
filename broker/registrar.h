/*
 * Nameserver registration: the broker announces itself and its topic configs
 * (REGISTER_BROKER with a RegisterBrokerBody) to every nameserver in
 * namesrvAddr at start, every registerNameServerPeriod, and soon after any
 * topic or permission change; UNREGISTER_BROKER on graceful shutdown. All
 * invocations are asynchronous on the broker's loop (rmt_client).
 *
 * Ownership: reg_new allocates, reg_free releases (pending invocations are
 * cancelled).
 */
#ifndef RMQ_BROKER_REGISTRAR_H
#define RMQ_BROKER_REGISTRAR_H

#include <stddef.h>

#include "buf.h"

struct broker;
struct reg;

/* Parses namesrvAddr (';'-separated host:port). Returns NULL with a reason
 * in err on a malformed list or ENOMEM. */
struct reg *reg_new(struct broker *b, char *err, size_t errlen);
void reg_free(struct reg *r);
/* Registers now and then periodically. */
void reg_start(struct reg *r);
/* Schedules a registration on the next loop iteration (coalesced). */
void reg_soon(struct reg *r);
/* Stops the timer and unregisters from every nameserver, running the loop
 * until all answered or timeout_ms passed. */
void reg_unregister_all(struct reg *r, int timeout_ms);
/* Appends the TopicConfigSerializeWrapper JSON, with topic perms masked by
 * brokerPermission as RocketMQ does when the broker is not fully writable. */
int reg_topic_wrapper_json(struct broker *b, struct buf *out);
/* Number of successful registrations so far (tests, runtime info). */
unsigned long reg_success_count(const struct reg *r);

#endif
