/*
 * Client-side routing logic with no I/O, so it can be tested on its own:
 * parsing a nameserver's TopicRouteData, choosing a queue to send to,
 * RocketMQ's average queue allocation among a consumer group, and tag
 * subscription expressions.
 *
 * A route is one heap block (cli_route_free releases it). Its write queue
 * list follows RocketMQ's TopicPublishInfo: queue data sorted by broker name,
 * only writable brokers that have a master (id 0) address, queue ids
 * 0..writeQueueNums-1. The read queue list is the same over readable brokers
 * and readQueueNums, sorted like MessageQueue.compareTo (broker, queue id).
 */
#ifndef RMQ_ROUTE_H
#define RMQ_ROUTE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CLI_NAME_MAX 128   /* broker, group and topic names, NUL included */
#define CLI_ADDR_MAX 64    /* "host:port" */

/* RocketMQ PermName bits. */
#define CLI_PERM_PRIORITY 0x8
#define CLI_PERM_READ 0x4
#define CLI_PERM_WRITE 0x2
#define CLI_PERM_INHERIT 0x1

#define CLI_MASTER_ID 0

struct cli_broker_addr {
    int64_t id;
    char addr[CLI_ADDR_MAX];
};

struct cli_broker {
    char name[CLI_NAME_MAX];
    char cluster[CLI_NAME_MAX];
    int naddrs;
    struct cli_broker_addr *addrs;    /* points into the route block */
};

struct cli_queue_data {
    char broker[CLI_NAME_MAX];
    int read_queues, write_queues, perm, sys_flag;
};

/* A message queue: broker name (pointing into the route's broker table, or
 * caller storage) and queue id. */
struct cli_mq {
    const char *broker;
    int queue_id;
};

struct cli_route {
    int nbrokers;
    struct cli_broker *brokers;      /* sorted by name */
    int nqd;
    struct cli_queue_data *qd;       /* sorted by broker name */
    int nwrite;
    struct cli_mq *write_queues;
    int nread;
    struct cli_mq *read_queues;
};

/* Parses a GET_ROUTEINFO_BY_TOPIC body (bare numeric keys allowed). Returns
 * 0 and a new route in *out, or -EBADMSG / -ENOMEM with a reason in err. */
int cli_route_parse(const char *json, size_t len, struct cli_route **out, char *err, size_t errlen);
void cli_route_free(struct cli_route *r);
/* Address of a broker by name and id (CLI_MASTER_ID for the master); NULL if
 * unknown. */
const char *cli_route_addr(const struct cli_route *r, const char *broker, int64_t id);
/* Master address, falling back to any address when master_only is false
 * (pulls may go to a slave; sends only to a master). */
const char *cli_route_any_addr(const struct cli_route *r, const char *broker, bool master_only);

/* Round-robin selection over the write queues, like TopicPublishInfo:
 * *counter is advanced; when avoid_broker is set a queue of another broker is
 * preferred (the retry after a failure). Returns 0 or -ENOENT (no writable
 * queue). */
int cli_route_select_rr(const struct cli_route *r, uint32_t *counter, const char *avoid_broker,
                        struct cli_mq *out);
/* Ordered sends: the queue picked by a sharding key, like
 * SelectMessageQueueByHash (Java String.hashCode, absolute value, modulo the
 * number of write queues). Returns 0 or -ENOENT. */
int cli_route_select_hash(const struct cli_route *r, const char *key, size_t keylen,
                          struct cli_mq *out);

/* Send queues of a topic the nameserver does not know yet, through the
 * default topic TBW102 (brokers with autoCreateTopicEnable register it): over
 * def, the route of TBW102, the writable brokers that have a master address,
 * in broker name order, with queue ids 0..min(queue_nums, writeQueueNums)-1.
 * cli_route_default_count gives how many such queues there are;
 * cli_route_default_queue the one at index (0..count-1, taken modulo count).
 * The broker pointer of *out points into def. Returns 0 or -ENOENT (none). */
#define CLI_DEFAULT_TOPIC "TBW102"
int cli_route_default_count(const struct cli_route *def, int queue_nums);
int cli_route_default_queue(const struct cli_route *def, int queue_nums, uint32_t index,
                            struct cli_mq *out);

/* AllocateMessageQueueAveragely: of nmq queues (sorted), the consumer at
 * position `index` of ncid sorted client ids gets the queues start ..
 * start+count-1 (modulo nmq). Returns count (0 when there are more consumers
 * than queues and this one gets nothing) and sets *start. */
int cli_allocate_averagely(int nmq, int ncid, int index, int *start);

/* Sorts strings with Java String.compareTo order on UTF-8 bytes (byte order
 * gives the same result for BMP text that client ids use). */
void cli_sort_strings(const char **v, int n);

/* Tag subscription expression: "*" (or empty) matches everything;
 * otherwise tags separated by "||", spaces trimmed, e.g. "TagA || TagB". */
#define CLI_SUB_MAX_TAGS 64
struct cli_sub {
    bool all;
    int ntags;
    char expr[512];                   /* normalised expression as given */
    char *tags[CLI_SUB_MAX_TAGS];     /* point into tagbuf */
    int32_t codes[CLI_SUB_MAX_TAGS];  /* Java hashCode of each tag */
    char tagbuf[512];
};

/* Returns 0, or -EINVAL (too long, too many tags, empty tag like "a||")
 * with a reason in err. */
int cli_sub_parse(const char *expr, struct cli_sub *out, char *err, size_t errlen);
/* True if a message with this tag (NULL/empty: no tag) matches. */
bool cli_sub_match(const struct cli_sub *s, const char *tag, size_t taglen);

#endif
