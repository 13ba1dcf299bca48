/*
 * Client manager: producer and consumer groups as announced by heartbeats
 * (HEART_BEAT, UNREGISTER_CLIENT), their channels and their subscriptions
 * (what PULL_MESSAGE filters with when the pull carries no expression).
 * A channel that sends no heartbeat for channelNotActiveInterval, or whose
 * connection closes, is removed; a consumer group whose membership changes
 * is told so with a oneway NOTIFY_CONSUMER_IDS_CHANGED to every member.
 *
 * Ownership: cm_new allocates, cm_free releases. Pointers returned by
 * cm_find_sub stay valid until the next heartbeat/unregister/close/scan
 * (i.e. within one loop callback).
 */
#ifndef RMQ_BROKER_CLIENT_MANAGER_H
#define RMQ_BROKER_CLIENT_MANAGER_H

#include <stdbool.h>
#include <stdint.h>

#include "buf.h"
#include "remoting.h"

struct broker;
struct cm;

#define CM_MAX_TAGS 64

/* A tag expression parsed RocketMQ's way ("*", "" = all; "A || B"). */
struct cm_filter {
    bool all;
    int n;
    int64_t codes[CM_MAX_TAGS];
};

struct cm_sub {
    char *topic;
    char *sub_string;
    char *expr_type;
    int64_t sub_version;
    struct cm_filter filter;
    char *json;              /* the SubscriptionData as the client sent it */
};

struct cm *cm_new(struct broker *b);
void cm_free(struct cm *m);
/* Starts the expiry scan. */
void cm_start(struct cm *m);

void cm_on_heartbeat(struct cm *m, rmt_conn *c, rmt_cmd *req);
void cm_on_unregister(struct cm *m, rmt_conn *c, rmt_cmd *req);
void cm_on_consumer_list(struct cm *m, rmt_conn *c, rmt_cmd *req);
void cm_on_conn_closed(struct cm *m, rmt_conn *c);

/* Parses a tag expression. Returns 0, or -EINVAL for an empty tag list
 * such as "||". More than CM_MAX_TAGS tags degrade to "all" (clients
 * filter again by tag string). */
int cm_parse_filter(const char *expr, struct cm_filter *f);
static inline bool cm_filter_match(const struct cm_filter *f, int64_t code)
{
    if (f->all)
        return true;
    for (int i = 0; i < f->n; i++)
        if (f->codes[i] == code)
            return true;
    return false;
}

/* The subscription of group to topic from heartbeats; NULL if none.
 * *group_known tells whether the group has any online consumer. */
const struct cm_sub *cm_find_sub(struct cm *m, const char *group, const char *topic,
                                 bool *group_known);

/* Admin bodies. Return 0, -ENOENT (group not online) or -ENOMEM. */
int cm_consumer_connection_json(struct cm *m, const char *group, struct buf *out);
int cm_producer_connection_json(struct cm *m, const char *group, struct buf *out);
/* The live channel of producer group `group` that sent the latest
 * heartbeat (transaction checks go there); NULL if none is online. Valid
 * within the current loop callback. */
rmt_conn *cm_producer_channel(struct cm *m, const char *group);
/* Calls fn for every online consumer group subscribed to topic. */
void cm_groups_of_topic(struct cm *m, const char *topic, void (*fn)(const char *group, void *ud),
                        void *ud);
/* Calls fn for every online consumer group and the topics it subscribes. */
void cm_foreach_consumer_sub(struct cm *m, void (*fn)(const char *group, const char *topic, void *ud),
                             void *ud);
/* Sends cmd (oneway) to every channel of a consumer group; returns the count. */
int cm_send_to_group(struct cm *m, const char *group, rmt_cmd *cmd);
/* Online channel counts (runtime info). */
void cm_counts(struct cm *m, int *producers, int *consumers);

#endif
