/*
 * rmqadmin: the cluster administration CLI, with mqadmin's subcommand and
 * flag names. This file holds the subcommand table and the shared flag
 * parser; every subcommand is a function in admin_*.c. Exit status: 0 on
 * success, 1 when the operation failed, 2 for a usage error.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin.h"
#include "log.h"

#define O_TIMEOUT 303

#define OPT_END { 0, NULL, NULL, false, NULL, NULL, false }

static struct adm_opt o_update_topic[] = {
    { 't', "topic", "TOPIC", true, "topic name", NULL, false },
    { 'c', "clusterName", "CLUSTER", false, "create on every master of this cluster", NULL, false },
    { 'b', "brokerAddr", "ADDR", false, "create on this broker (host:port)", NULL, false },
    { 'r', "readQueueNums", "N", false, "read queues (default 8)", NULL, false },
    { 'w', "writeQueueNums", "N", false, "write queues (default 8)", NULL, false },
    { 'p', "perm", "PERM", false, "permission: 2 write, 4 read, 6 read+write (default 6)", NULL, false },
    { 'o', "order", "BOOL", false, "ordered topic: true/false (default false)", NULL, false },
    OPT_END,
};
static struct adm_opt o_delete_topic[] = {
    { 't', "topic", "TOPIC", true, "topic name", NULL, false },
    { 'c', "clusterName", "CLUSTER", true, "delete on every broker of this cluster", NULL, false },
    OPT_END,
};
static struct adm_opt o_none[] = { OPT_END };
static struct adm_opt o_topic[] = {
    { 't', "topic", "TOPIC", true, "topic name", NULL, false },
    OPT_END,
};
static struct adm_opt o_broker_status[] = {
    { 'b', "brokerAddr", "ADDR", false, "broker address (host:port)", NULL, false },
    { 'c', "clusterName", "CLUSTER", false, "every broker of this cluster", NULL, false },
    OPT_END,
};
static struct adm_opt o_broker_name[] = {
    { 'b', "brokerName", "NAME", true, "broker name", NULL, false },
    OPT_END,
};
static struct adm_opt o_update_group[] = {
    { 'g', "groupName", "GROUP", true, "consumer group", NULL, false },
    { 'c', "clusterName", "CLUSTER", false, "on every master of this cluster", NULL, false },
    { 'b', "brokerAddr", "ADDR", false, "on this broker (host:port)", NULL, false },
    { 'r', "retryQueueNums", "N", false, "retry queues (default 1)", NULL, false },
    { 'q', "retryMaxTimes", "N", false, "maximum redeliveries before the DLQ (default 16)", NULL, false },
    OPT_END,
};
static struct adm_opt o_delete_group[] = {
    { 'g', "groupName", "GROUP", true, "consumer group", NULL, false },
    { 'c', "clusterName", "CLUSTER", false, "on every master of this cluster", NULL, false },
    { 'b', "brokerAddr", "ADDR", false, "on this broker (host:port)", NULL, false },
    OPT_END,
};
static struct adm_opt o_progress[] = {
    { 'g', "groupName", "GROUP", true, "consumer group", NULL, false },
    { 't', "topic", "TOPIC", false, "only this topic", NULL, false },
    OPT_END,
};
static struct adm_opt o_reset[] = {
    { 'g', "group", "GROUP", true, "consumer group", NULL, false },
    { 't', "topic", "TOPIC", true, "topic", NULL, false },
    { 's', "timestamp", "TIME", true, "now, epoch milliseconds or yyyy-MM-dd#HH:mm:ss:SSS", NULL, false },
    OPT_END,
};
static struct adm_opt o_by_id[] = {
    { 'i', "msgId", "ID", true, "offset message id (or the message's unique key with -t)", NULL, false },
    { 't', "topic", "TOPIC", false, "topic, to look a unique key up", NULL, false },
    { 's', "sendMessage", "BOOL", false, "true: re-send the message (a %DLQ%/%RETRY% one to its original topic)", NULL, false },
    OPT_END,
};
static struct adm_opt o_by_key[] = {
    { 't', "topic", "TOPIC", true, "topic", NULL, false },
    { 'k', "msgKey", "KEY", true, "message key", NULL, false },
    { 'b', "beginTimestamp", "TIME", false, "from (default: the beginning)", NULL, false },
    { 'e', "endTimestamp", "TIME", false, "until (default: now)", NULL, false },
    { 'c', "maxNum", "N", false, "at most N messages per broker (default 64)", NULL, false },
    OPT_END,
};
static struct adm_opt o_by_offset[] = {
    { 't', "topic", "TOPIC", true, "topic", NULL, false },
    { 'b', "brokerName", "NAME", true, "broker name", NULL, false },
    { 'i', "queueId", "N", true, "queue id", NULL, false },
    { 'o', "offset", "N", true, "queue offset", NULL, false },
    OPT_END,
};
static struct adm_opt o_send[] = {
    { 't', "topic", "TOPIC", true, "topic", NULL, false },
    { 'p', "body", "TEXT", true, "message body", NULL, false },
    { 'k', "key", "KEYS", false, "message keys (space separated)", NULL, false },
    { 'c', "tags", "TAG", false, "message tag", NULL, false },
    OPT_END,
};
static struct adm_opt o_consume[] = {
    { 't', "topic", "TOPIC", true, "topic", NULL, false },
    { 'g', "consumerGroup", "GROUP", false, "group (default TOOLS_CONSUMER); offsets are committed", NULL, false },
    { 'c', "count", "N", false, "stop after N messages (default 128)", NULL, false },
    { 's', "subExpression", "EXPR", false, "tag filter, e.g. \"TagA || TagB\" (default *)", NULL, false },
    { O_TIMEOUT, "idle", "MS", false, "stop after MS without a new message (default 3000)", NULL, false },
    OPT_END,
};

static const struct adm_cmd cmds[] = {
    { "updateTopic", "create or update a topic on a broker or every master of a cluster",
      adm_update_topic, o_update_topic },
    { "deleteTopic", "delete a topic from a cluster's brokers and from every nameserver",
      adm_delete_topic, o_delete_topic },
    { "topicList", "list the topics the nameserver knows", adm_topic_list, o_none },
    { "topicRoute", "show a topic's brokers and queues", adm_topic_route, o_topic },
    { "topicStatus", "min/max offset and last update time of every queue of a topic",
      adm_topic_status, o_topic },
    { "clusterList", "brokers of every cluster with role, address, TPS and disk use",
      adm_cluster_list, o_none },
    { "brokerStatus", "runtime statistics of a broker", adm_broker_status, o_broker_status },
    { "updateSubGroup", "create or update a consumer group", adm_update_sub_group, o_update_group },
    { "deleteSubGroup", "delete a consumer group", adm_delete_sub_group, o_delete_group },
    { "consumerProgress", "broker offset, consumer offset and lag per queue of a group",
      adm_consumer_progress, o_progress },
    { "resetOffsetByTime", "move a group's offsets of a topic to a point in time",
      adm_reset_offset_by_time, o_reset },
    { "queryMsgById", "show a message and its consumption state per group; -s true re-sends it",
      adm_query_msg_by_id, o_by_id },
    { "queryMsgByKey", "find messages by key", adm_query_msg_by_key, o_by_key },
    { "queryMsgByOffset", "show the message at a queue offset", adm_query_msg_by_offset, o_by_offset },
    { "sendMessage", "send one message", adm_send_message, o_send },
    { "consumeMessage", "consume and print messages", adm_consume_message, o_consume },
    { "wipeWritePerm", "remove write permission of a broker on every nameserver",
      adm_wipe_write_perm, o_broker_name },
    { "addWritePerm", "restore write permission of a broker on every nameserver",
      adm_add_write_perm, o_broker_name },
};
#define NCMDS (int)(sizeof cmds / sizeof cmds[0])

static void usage_main(FILE *out)
{
    fprintf(out, "usage: rmqadmin <command> [-n host:port;host:port] [--json] [flags]\n\n"
                 "commands:\n");
    for (int i = 0; i < NCMDS; i++)
        fprintf(out, "  %-20s %s\n", cmds[i].name, cmds[i].summary);
    fprintf(out, "\n'rmqadmin <command> --help' shows the flags of a command.\n"
                 "The nameserver list defaults to $NAMESRV_ADDR, else 127.0.0.1:9876.\n");
}

static void flag_name(const struct adm_opt *o, char *out, size_t cap)
{
    if (o->key < 256 && o->lng)
        snprintf(out, cap, "-%c, --%s", o->key, o->lng);
    else if (o->key < 256)
        snprintf(out, cap, "-%c", o->key);
    else
        snprintf(out, cap, "    --%s", o->lng);
}

static void usage_cmd(const struct adm_cmd *c, FILE *out)
{
    fprintf(out, "usage: rmqadmin %s [flags]\n  %s\n\nflags:\n", c->name, c->summary);
    for (const struct adm_opt *o = c->opts; o->key; o++) {
        char name[64], full[96];
        flag_name(o, name, sizeof name);
        snprintf(full, sizeof full, "%s%s%s", name, o->arg ? " " : "", o->arg ? o->arg : "");
        fprintf(out, "  %-32s %s%s\n", full, o->help, o->required ? " (required)" : "");
    }
    fprintf(out, "  %-32s %s\n", "-n, --namesrvAddr ADDRS", "nameservers \"host:port;host:port\"");
    fprintf(out, "  %-32s %s\n", "    --json", "JSON output");
    fprintf(out, "  %-32s %s\n", "    --verbose", "log the client library's activity to stderr");
    fprintf(out, "  %-32s %s\n", "-h, --help", "this help");
}

const char *adm_arg(const struct adm *a, int key)
{
    for (int i = 0; i < a->nopts; i++)
        if (a->opts[i].key == key)
            return a->opts[i].set ? a->opts[i].val : NULL;
    return NULL;
}

bool adm_flag(const struct adm *a, int key)
{
    for (int i = 0; i < a->nopts; i++)
        if (a->opts[i].key == key)
            return a->opts[i].set;
    return false;
}

int adm_fail(const struct adm *a, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "rmqadmin %s: ", a->cmd);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 1;
}

int adm_int_arg(const struct adm *a, int key, long long def, long long min, long long max,
                long long *out)
{
    const char *v = adm_arg(a, key);
    if (!v) {
        *out = def;
        return 0;
    }
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (errno || end == v || *end || x < min || x > max) {
        for (int i = 0; i < a->nopts; i++)
            if (a->opts[i].key == key) {
                char name[64];
                flag_name(&a->opts[i], name, sizeof name);
                adm_fail(a, "bad value '%s' for %s: expected an integer in %lld..%lld", v,
                         name + (name[0] == ' ' ? 4 : 0), min, max);
            }
        return -1;
    }
    *out = x;
    return 0;
}

/* Parses argv (after the subcommand). Returns 0, or 2 after printing the error. */
static int parse_flags(struct adm *a, const struct adm_cmd *c, int argc, char **argv, bool *help,
                       bool *verbose)
{
    for (int i = 0; i < argc; i++) {
        const char *arg = argv[i];
        const char *val = NULL;
        if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) {
            *help = true;
            return 0;
        }
        if (strcmp(arg, "--json") == 0) {
            a->json = true;
            continue;
        }
        if (strcmp(arg, "--verbose") == 0) {
            *verbose = true;
            continue;
        }
        if (arg[0] != '-' || arg[1] == 0) {
            fprintf(stderr, "rmqadmin %s: unexpected argument '%s' (see --help)\n", c->name, arg);
            return 2;
        }
        bool is_ns = false;
        struct adm_opt *o = NULL;
        if (arg[1] == '-') {
            const char *name = arg + 2;
            const char *eq = strchr(name, '=');
            size_t nl = eq ? (size_t)(eq - name) : strlen(name);
            if (eq)
                val = eq + 1;
            if (nl == strlen("namesrvAddr") && strncmp(name, "namesrvAddr", nl) == 0)
                is_ns = true;
            for (int k = 0; k < a->nopts && !is_ns; k++)
                if (a->opts[k].lng && strlen(a->opts[k].lng) == nl &&
                    strncmp(a->opts[k].lng, name, nl) == 0)
                    o = &a->opts[k];
        } else {
            if (arg[1] == 'n')
                is_ns = true;
            for (int k = 0; k < a->nopts && !is_ns; k++)
                if (a->opts[k].key == (unsigned char)arg[1])
                    o = &a->opts[k];
            if (arg[2])
                val = arg + 2;
        }
        if (!is_ns && !o) {
            fprintf(stderr, "rmqadmin %s: unknown flag '%s' (see 'rmqadmin %s --help')\n", c->name,
                    arg, c->name);
            return 2;
        }
        if (is_ns || (o && o->arg)) {
            if (!val) {
                if (i + 1 >= argc) {
                    fprintf(stderr, "rmqadmin %s: flag '%s' needs a value\n", c->name, arg);
                    return 2;
                }
                val = argv[++i];
            }
        } else if (val) {
            fprintf(stderr, "rmqadmin %s: flag '%s' takes no value\n", c->name, arg);
            return 2;
        }
        if (is_ns) {
            a->ns = val;
        } else {
            o->val = val;
            o->set = true;
        }
    }
    for (int k = 0; k < a->nopts; k++)
        if (a->opts[k].required && !a->opts[k].set) {
            char name[64];
            flag_name(&a->opts[k], name, sizeof name);
            fprintf(stderr, "rmqadmin %s: missing required flag %s (%s)\n", c->name,
                    name + (name[0] == ' ' ? 4 : 0), a->opts[k].help);
            return 2;
        }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage_main(stderr);
        return 2;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
        usage_main(stdout);
        return 0;
    }
    const struct adm_cmd *c = NULL;
    for (int i = 0; i < NCMDS; i++)
        if (strcmp(cmds[i].name, argv[1]) == 0)
            c = &cmds[i];
    if (!c) {
        fprintf(stderr, "rmqadmin: unknown command '%s'; valid commands are:", argv[1]);
        for (int i = 0; i < NCMDS; i++)
            fprintf(stderr, "%s %s", i ? "," : "", cmds[i].name);
        fputc('\n', stderr);
        return 2;
    }
    struct adm a = { 0 };
    a.cmd = c->name;
    a.ns = getenv("NAMESRV_ADDR");
    if (!a.ns || !*a.ns)
        a.ns = "127.0.0.1:9876";
    for (const struct adm_opt *o = c->opts; o->key; o++)
        a.nopts++;
    a.opts = c->opts;
    bool help = false, verbose = false;
    int rc = parse_flags(&a, c, argc - 2, argv + 2, &help, &verbose);
    if (rc)
        return rc;
    if (help) {
        usage_cmd(c, stdout);
        return 0;
    }
    log_set_ident("rmqadmin");
    log_set_level(verbose ? LOG_LVL_DEBUG : LOG_LVL_OFF);
    rc = c->run(&a);
    adm_close(&a);
    return rc;
}
