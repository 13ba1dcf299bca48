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

#include <jansson.h>

#include "metadata.h"
#include "remoting.h"

struct broker;
struct adm;

struct adm *adm_new(struct broker *b);
void adm_free(struct adm *a);
/* Starts the statistics sampler. */
void adm_start(struct adm *a);
/* Handles req if its code belongs here; returns false otherwise. */
bool adm_on_request(struct adm *a, rmt_conn *c, rmt_cmd *req);

/* RocketMQ JSON (TopicConfig / SubscriptionGroupConfig objects) to configs;
 * absent fields take the defaults. Used by UPDATE_AND_CREATE_SUBSCRIPTIONGROUP
 * and the slave's metadata sync. adm_topic_from_json returns 0 or -EINVAL
 * (bad name, queue count or perm). */
void adm_group_from_json(json_t *o, const char *name, struct meta_group *g);
int adm_topic_from_json(json_t *o, const char *name, struct meta_topic *t);

/* Keys UPDATE_BROKER_CONFIG may change. */
extern const char *const adm_runtime_keys[];

#endif
