/*
 * rmqadmin internals: the per-invocation context (nameserver list, output
 * mode, the blocking client) and the declarative option parser every
 * subcommand uses, so flags, --help text and errors look the same
 * everywhere. Subcommands live in admin_topic.c, admin_cluster.c,
 * admin_group.c and admin_msg.c; each is an adm_run function returning the
 * process exit status and printing its own error (naming the cause) to
 * stderr.
 *
 * Ownership: rmqadmin.c owns the context; adm_client creates the client on
 * first use and adm_close releases it.
 */
#ifndef RMQ_TOOLS_ADMIN_H
#define RMQ_TOOLS_ADMIN_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "client.h"
#include "consumer.h"
#include "table.h"

#define ADM_ERR_MAX 512
#define ADM_MAX_BROKERS 64

/* One flag of a subcommand. key is the short letter, or a value >= 256 for a
 * long-only flag; arg names the value (NULL: a switch without a value). */
struct adm_opt {
    int key;
    const char *lng;
    const char *arg;
    bool required;
    const char *help;
    /* filled by the parser */
    const char *val;
    bool set;
};

struct adm {
    const char *ns;
    bool json;
    struct ev_loop *loop;
    cli_client *cli;
    struct adm_opt *opts;
    int nopts;
    const char *cmd;
};

typedef int (*adm_run)(struct adm *a);

struct adm_cmd {
    const char *name;
    const char *summary;
    adm_run run;
    struct adm_opt *opts;   /* terminated by key 0 */
};

/* Value of a flag (NULL when absent) and whether a switch was given. */
const char *adm_arg(const struct adm *a, int key);
bool adm_flag(const struct adm *a, int key);
/* Integer flag with a default. Returns 0 or -1 after printing the error. */
int adm_int_arg(const struct adm *a, int key, long long def, long long min, long long max,
                long long *out);
/* Prints "rmqadmin <cmd>: <message>" to stderr; always returns 1 (the exit status). */
int adm_fail(const struct adm *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The client, created on first use. NULL after printing the error. */
cli_client *adm_client(struct adm *a);
void adm_close(struct adm *a);

/* Text for a failed admin call: rc as returned by the cli_admin helpers. */
const char *adm_rc_name(int rc);

/* Cluster view from GET_BROKER_CLUSTER_INFO. */
struct adm_broker {
    char name[CLI_NAME_MAX];
    char cluster[CLI_NAME_MAX];
    int64_t id;
    char addr[CLI_ADDR_MAX];
};
struct adm_cluster {
    int n;
    struct adm_broker b[ADM_MAX_BROKERS * 4];
};
/* Returns 0, or 1 after printing the error. */
int adm_cluster_info(struct adm *a, struct adm_cluster *out);
/* Broker addresses selected by -c cluster (masters) or -b addr. Returns the
 * count (>= 1) or -1 after printing the error. names may be NULL. */
int adm_targets(struct adm *a, char addrs[][CLI_ADDR_MAX], char names[][CLI_NAME_MAX], int max);
/* Route of a topic; NULL after printing the error (unknown topic, ...). */
struct cli_route *adm_route(struct adm *a, const char *topic);

/* Pulls the message at (addr, topic, queue, offset). Returns 0 with *rec a
 * heap copy of the stored record (free()), 1 when there is no message there
 * (reason in err), or a negative errno with err set. */
int adm_pull_one(struct adm *a, const char *addr, const char *topic, int queue_id, int64_t offset,
                 uint8_t **rec, size_t *rec_len, char *err, size_t errlen);

/* Prints a stored record in detail (kv table). Returns 0 or 1. */
int adm_print_record(struct adm *a, const uint8_t *rec, size_t len, const char *broker);
/* The same detail as a new kv table in *out (caller tbl_free()s it).
 * Returns 0, or 1 after printing the error. */
int adm_record_table(struct adm *a, const uint8_t *rec, size_t len, const char *broker, tbl **out);
/* Millisecond timestamp as "yyyy-MM-dd HH:mm:ss.SSS" local time. */
void adm_fmt_time(int64_t ms, char *out, size_t cap);
/* Parses "now", milliseconds since the epoch, or yyyy-MM-dd#HH:mm:ss:SSS. */
int adm_parse_time(const char *s, int64_t *out);

/* Subcommands. */
int adm_update_topic(struct adm *a);
int adm_delete_topic(struct adm *a);
int adm_topic_list(struct adm *a);
int adm_topic_route(struct adm *a);
int adm_topic_status(struct adm *a);
int adm_cluster_list(struct adm *a);
int adm_broker_status(struct adm *a);
int adm_wipe_write_perm(struct adm *a);
int adm_add_write_perm(struct adm *a);
int adm_update_sub_group(struct adm *a);
int adm_delete_sub_group(struct adm *a);
int adm_consumer_progress(struct adm *a);
int adm_reset_offset_by_time(struct adm *a);
int adm_query_msg_by_id(struct adm *a);
int adm_query_msg_by_key(struct adm *a);
int adm_query_msg_by_offset(struct adm *a);
int adm_send_message(struct adm *a);
int adm_consume_message(struct adm *a);

#endif
