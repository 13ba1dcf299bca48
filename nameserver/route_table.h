/*
 * The nameserver's in-memory route table (RocketMQ's RouteInfoManager).
 *
 * Brokers register every 30 s with their cluster, broker name, broker id
 * (0 = master), address, HA address and their topic configuration. The table
 * keeps, per broker name, the members by id with their liveness (last
 * heartbeat, data version, connection), and per topic the queue data of each
 * broker name (read/write queue numbers, perm, topic sys flag). It answers
 * route, cluster and topic-list queries with the JSON bodies RocketMQ's Java
 * clients expect (fastjson layout, bare numeric keys in brokerAddrs).
 *
 * Rules (RocketMQ's): only a master's (id 0) topic configuration becomes queue
 * data; a registration applies topic data when it is the member's first (or
 * comes on a new connection), when its data version is newer than the stored
 * one, or for topics the broker name has no queue data for yet; otherwise it
 * only refreshes the heartbeat. Topics are merged, never dropped, by a
 * registration (brokers may split their table over several requests); a topic
 * leaves via ns_delete_topic or when its last broker name goes. A broker name's
 * queue data goes when it has no member left; a cluster goes with its last
 * broker name. One address is one member: re-registering it under another id
 * or name moves it.
 *
 * Time is a monotonic millisecond clock supplied by the caller, so tests
 * control it. Connection ids are opaque non-zero tokens supplied by the caller;
 * 0 means "no connection" and never matches ns_evict_conn.
 *
 * Ownership: the table owns all its strings; callers keep ownership of their
 * arguments and of the struct buf they pass in (JSON is appended to it). Not
 * thread-safe: use from one thread (the nameserver's event loop).
 */
#ifndef RMQ_NS_ROUTE_TABLE_H
#define RMQ_NS_ROUTE_TABLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"

#define NS_NAME_MAX 255   /* longest cluster, broker or topic name, in bytes */
#define NS_ADDR_MAX 255   /* longest "host:port" address */

/* RocketMQ PermName bits. */
#define NS_PERM_PRIORITY 8
#define NS_PERM_READ     4
#define NS_PERM_WRITE    2
#define NS_PERM_INHERIT  1

struct ns_route_table;

/* RocketMQ DataVersion: bumped by the broker whenever its topics change. */
struct ns_data_version {
    int64_t state_version;
    int64_t timestamp;
    int64_t counter;
};

struct ns_register_result {
    char master_addr[NS_ADDR_MAX + 1];    /* slaves: the master's address, else "" */
    char ha_server_addr[NS_ADDR_MAX + 1]; /* slaves: the master's HA address, else "" */
    bool first_registration;              /* member is new (or new address/connection) */
    int topics_updated;                   /* topics whose queue data was added or changed */
};

/* Called for each member evicted by ns_scan_expired (so the caller can close
 * its connection); strings are valid only during the call. */
typedef void (*ns_evict_fn)(void *ctx, const char *broker_addr, uint64_t conn_id);

/* Returns a new empty table, or NULL if out of memory. */
struct ns_route_table *ns_route_table_create(void);
void ns_route_table_free(struct ns_route_table *rt);

/* Registers (or refreshes) a broker. body is a RegisterBrokerBody JSON
 * ({"topicConfigSerializeWrapper":{"topicConfigTable":{...},"dataVersion":{...}},
 * "filterServerList":[]}); NULL/empty means no topics and data version 0.
 * ha_addr may be NULL. Returns 0; -EINVAL for bad arguments or a malformed body,
 * -EEXIST if another address holds this name/id with a newer state version,
 * or -ENOMEM. On -EINVAL/-EEXIST err says why and the table is unchanged; on
 * -ENOMEM the table stays consistent but may hold part of the topic update. */
int ns_register_broker(struct ns_route_table *rt, const char *cluster, const char *broker_name,
                       const char *broker_addr, int64_t broker_id, const char *ha_addr,
                       const char *body, size_t body_len, uint64_t conn_id, int64_t now_ms,
                       struct ns_register_result *result, char *err, size_t errlen);

/* Removes the member with broker_addr from broker_name (cluster is used only
 * for logging and a consistency check). Returns 0 or -ENOENT. */
int ns_unregister_broker(struct ns_route_table *rt, const char *cluster, const char *broker_addr,
                         const char *broker_name, int64_t broker_id);

/* Refreshes the heartbeat of a registered address (BROKER_HEARTBEAT and
 * QUERY_DATA_VERSION). Returns 0 or -ENOENT. */
int ns_touch_broker(struct ns_route_table *rt, const char *broker_addr, int64_t now_ms);

/* Copies the data version stored for broker_addr. Returns 0 or -ENOENT. */
int ns_broker_data_version(const struct ns_route_table *rt, const char *broker_addr,
                           struct ns_data_version *out);

/* Evicts members whose last heartbeat is more than timeout_ms before now_ms
 * (RocketMQ uses 120000). Logs each and then calls fn (may be NULL; must not
 * modify the table). Returns the number evicted. */
int ns_scan_expired(struct ns_route_table *rt, int64_t now_ms, int64_t timeout_ms, ns_evict_fn fn,
                    void *ctx);

/* Evicts every member registered over connection conn_id (connection closed).
 * Returns the number evicted. */
int ns_evict_conn(struct ns_route_table *rt, uint64_t conn_id);

/* Appends the TopicRouteData JSON of topic to out. Returns 0, -ENOENT if the
 * topic is unknown or none of its brokers is registered, or -ENOMEM. */
int ns_route_json(const struct ns_route_table *rt, const char *topic, struct buf *out);

/* Appends ClusterInfo JSON ({"brokerAddrTable":{...},"clusterAddrTable":{...}}). */
int ns_cluster_info_json(const struct ns_route_table *rt, struct buf *out);

/* Appends TopicList JSON ({"topicList":[...]}) of every topic, sorted. */
int ns_topic_list_json(const struct ns_route_table *rt, struct buf *out);

/* Appends TopicList JSON of the topics with queue data on a broker name of
 * cluster. Returns 0, -ENOENT (unknown cluster) or -ENOMEM. */
int ns_topics_by_cluster_json(const struct ns_route_table *rt, const char *cluster,
                              struct buf *out);

/* Appends the system TopicList (GET_SYSTEM_TOPIC_LIST_FROM_NS): cluster and
 * broker names as topics, plus "brokerAddr" of one registered member. */
int ns_system_topic_list_json(const struct ns_route_table *rt, struct buf *out);

/* Appends DataVersion JSON ({"counter":..,"stateVersion":..,"timestamp":..}). */
int ns_data_version_json(const struct ns_data_version *dv, struct buf *out);

/* Parses a DataVersion JSON object (QUERY_DATA_VERSION body; accepts the old
 * "timestatmp" spelling). Returns 0 or -EINVAL with err set. */
int ns_parse_data_version(const char *json, size_t len, struct ns_data_version *out, char *err,
                          size_t errlen);

/* Deletes topic (cluster NULL: everywhere; else only its queue data on broker
 * names of that cluster). Returns 0 or -ENOENT if nothing was removed. */
int ns_delete_topic(struct ns_route_table *rt, const char *topic, const char *cluster);

/* Clears the write bit of every topic's queue data on broker_name (before a
 * broker is taken down). Returns the number of topics of broker_name it
 * touched (RocketMQ's wipeTopicCount), 0 for an unknown broker name. */
int ns_wipe_write_perm(struct ns_route_table *rt, const char *broker_name);

/* Sets perm to read+write (RocketMQ sets exactly 6) on every topic's queue data
 * on broker_name. Returns the number of topics touched. */
int ns_add_write_perm(struct ns_route_table *rt, const char *broker_name);

bool ns_topic_exists(const struct ns_route_table *rt, const char *topic);
size_t ns_topic_count(const struct ns_route_table *rt);
size_t ns_broker_count(const struct ns_route_table *rt); /* registered members */

#endif
