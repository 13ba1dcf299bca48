/*
 * RocketMQ client core: one remoting client on a libev loop shared by the
 * producers and consumers built on it (producer.h, consumer.h), topic route
 * lookup through the nameservers with a cache, and thin admin wrappers for
 * the CLI.
 *
 * Everything is asynchronous: a call starts the work and a callback reports
 * the outcome from the loop (never from inside the starting call). The
 * blocking wrappers (suffix _sync, and the admin helpers) run the loop until
 * their answer is in; they are for tools and must not be called from inside
 * a callback of the same loop.
 *
 * Routes are cached per topic and refreshed every route_refresh_ms (30 s by
 * default). Nameservers ("a:9876;b:9876") are tried in turn: one that does
 * not answer (timeout, refused) is skipped and the next is asked; a
 * TOPIC_NOT_EXIST answer is final and reported as -ENOENT.
 *
 * Threading: a cli_client and everything built on it belong to the loop's
 * thread. Ownership: cli_client_new allocates, cli_client_free releases (the
 * caller frees producers and consumers first).
 */
#ifndef RMQ_CLIENT_H
#define RMQ_CLIENT_H

#include <ev.h>
#include <stdbool.h>
#include <stdint.h>

#include "remoting.h"
#include "route.h"

#define CLI_ERRMSG_MAX 256
#define CLI_MAX_NAMESRV 16

struct cli_opts {
    const char *namesrv_addr;    /* "host:port;host:port", required */
    const char *instance_name;   /* client id suffix; NULL = the process id */
    const char *client_ip;       /* NULL = first non-loopback IPv4 address */
    int timeout_ms;              /* per request; 0 = 3000 */
    int route_refresh_ms;        /* 0 = 30000 */
    bool json_headers;           /* JSON headers like the Java client; default: compact ROCKETMQ form */
};

typedef struct cli_client cli_client;
struct cli_consumer;

/* Returns NULL with *err = -EINVAL (bad namesrv list) or -ENOMEM. */
cli_client *cli_client_new(struct ev_loop *loop, const struct cli_opts *o, int *err);
void cli_client_free(cli_client *c);
struct ev_loop *cli_client_loop(const cli_client *c);
rmt_client *cli_client_rmt(const cli_client *c);
/* "ip@instance", as RocketMQ's ClientConfig.buildMQClientId. */
const char *cli_client_id(const cli_client *c);
const char *cli_client_ip(const cli_client *c);
int cli_client_timeout(const cli_client *c);
/* A request prepared with the client's serialization and language. */
void cli_cmd_init(const cli_client *c, rmt_cmd *cmd, int32_t code);
/* Same for a command being reused (keeps its capacity). */
void cli_cmd_reset(const cli_client *c, rmt_cmd *cmd, int32_t code);

/* Route lookup. status 0: route is valid during the call (copy what you
 * need); -ENOENT: the topic does not exist; -EBADMSG: malformed route;
 * -ETIMEDOUT/-ECONNREFUSED/...: no nameserver answered. errmsg says which. */
typedef void (*cli_route_fn)(int status, const struct cli_route *route, const char *errmsg, void *ud);
/* Uses the cache when fresh, otherwise asks the nameservers. */
int cli_route_get(cli_client *c, const char *topic, cli_route_fn cb, void *ud);
/* Cached route or NULL (no I/O). Valid until the loop runs again. */
const struct cli_route *cli_route_cached(cli_client *c, const char *topic);
/* Drops a cached route so the next lookup asks the nameservers. */
void cli_route_invalidate(cli_client *c, const char *topic);
/* Blocking lookup; *out is a private copy the caller frees with
 * cli_route_free. */
int cli_route_get_sync(cli_client *c, const char *topic, struct cli_route **out, char *errmsg,
                       size_t errlen);

/* Invokes a nameserver request with failover (the first nameserver that
 * answers wins). Same callback contract as rmt_client_invoke. */
int cli_namesrv_invoke(cli_client *c, rmt_cmd *req, rmt_response_fn cb, void *ud);

/* Runs the loop until *done becomes true. */
void cli_run_until(cli_client *c, const bool *done);

/* Admin helpers (blocking). Each returns 0, a negative errno, or the
 * positive RocketMQ response code the server answered with; errmsg gets the
 * server's remark or the local reason. Where a body is returned, *body is a
 * NUL-terminated heap copy the caller frees (free()). addr is a broker
 * address unless the name says namesrv. */
int cli_admin_invoke(cli_client *c, const char *addr, rmt_cmd *req, char **body, rmt_cmd **resp,
                     char *errmsg, size_t errlen);
struct cli_topic_conf {
    const char *topic;
    int read_queues, write_queues, perm;   /* 0 = 8, 8, 6 */
    bool order;
    int sys_flag;
};
int cli_admin_create_topic(cli_client *c, const char *broker_addr, const struct cli_topic_conf *t,
                           char *errmsg, size_t errlen);
int cli_admin_delete_topic_broker(cli_client *c, const char *broker_addr, const char *topic,
                                  char *errmsg, size_t errlen);
/* Deletes from every nameserver of the client. */
int cli_admin_delete_topic_namesrv(cli_client *c, const char *topic, char *errmsg, size_t errlen);
int cli_admin_cluster_info(cli_client *c, char **body, char *errmsg, size_t errlen);
int cli_admin_topic_list(cli_client *c, char **body, char *errmsg, size_t errlen);
int cli_admin_max_offset(cli_client *c, const char *broker_addr, const char *topic, int queue_id,
                         int64_t *out, char *errmsg, size_t errlen);
int cli_admin_min_offset(cli_client *c, const char *broker_addr, const char *topic, int queue_id,
                         int64_t *out, char *errmsg, size_t errlen);
int cli_admin_search_offset(cli_client *c, const char *broker_addr, const char *topic, int queue_id,
                            int64_t timestamp_ms, int64_t *out, char *errmsg, size_t errlen);
/* QUERY_MESSAGE by key: body holds the matching stored records. */
int cli_admin_query_by_key(cli_client *c, const char *broker_addr, const char *topic,
                           const char *key, int max_num, int64_t begin_ms, int64_t end_ms,
                           rmt_cmd **resp, char *errmsg, size_t errlen);
/* VIEW_MESSAGE_BY_ID: resp->body is one stored record. */
int cli_admin_view_by_offset(cli_client *c, const char *broker_addr, int64_t phys_offset,
                             rmt_cmd **resp, char *errmsg, size_t errlen);
/* QUERY_CONSUMER_OFFSET: *out = -1 when the group has no offset for the queue. */
int cli_admin_consumer_offset(cli_client *c, const char *broker_addr, const char *group,
                              const char *topic, int queue_id, int64_t *out, char *errmsg,
                              size_t errlen);
int cli_admin_consume_stats(cli_client *c, const char *broker_addr, const char *group,
                            const char *topic, char **body, char *errmsg, size_t errlen);
/* WIPE (205) / ADD (327) write perm of a broker name on every nameserver;
 * *count = topics affected on the last nameserver. */
int cli_admin_write_perm(cli_client *c, const char *broker_name, bool wipe, int *count,
                         char *errmsg, size_t errlen);
int cli_admin_create_group(cli_client *c, const char *broker_addr, const char *group,
                           int retry_queues, int max_retry, char *errmsg, size_t errlen);
int cli_admin_delete_group(cli_client *c, const char *broker_addr, const char *group,
                           char *errmsg, size_t errlen);
int cli_admin_broker_runtime(cli_client *c, const char *broker_addr, char **body, char *errmsg,
                             size_t errlen);

/* Internal hooks used by consumer.c: consumers register to receive
 * NOTIFY_CONSUMER_IDS_CHANGED pushes. */
void cli_client_attach_consumer(cli_client *c, struct cli_consumer *cs);
void cli_client_detach_consumer(cli_client *c, struct cli_consumer *cs);
void cli_consumer_on_ids_changed(struct cli_consumer *cs, const char *group);

#endif
