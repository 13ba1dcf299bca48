/*
 * Admin and statistics requests (RocketMQ AdminBrokerProcessor subset):
 * topic and subscription-group management, offsets and consume stats,
 * runtime info and broker config. Requests that change state are allowed
 * only from adminAllowList; read-only ones are open. No request can change
 * a path or anything executed: UPDATE_BROKER_CONFIG accepts only a fixed
 * allow-list of runtime keys. A one-second sampler keeps the counters
 * RocketMQ reports as putTps / getTransferedTps (10 s, 1 min, 10 min).
 *
 * Ownership: adm_new allocates, adm_free releases.
 */
#ifndef RMQ_BROKER_ADMIN_H
#define RMQ_BROKER_ADMIN_H

#include <stdbool.h>

#include "remoting.h"

struct broker;
struct adm;

struct adm *adm_new(struct broker *b);
void adm_free(struct adm *a);
/* Starts the statistics sampler. */
void adm_start(struct adm *a);
/* Handles req if its code belongs here; returns false otherwise. */
bool adm_on_request(struct adm *a, rmt_conn *c, rmt_cmd *req);

/* Keys UPDATE_BROKER_CONFIG may change. */
extern const char *const adm_runtime_keys[];

#endif
