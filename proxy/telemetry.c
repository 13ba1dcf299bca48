/*
 * Telemetry sessions, Heartbeat, NotifyClientTermination, and everything
 * that needs to know which clients are connected here:
 *
 *  - the settings handshake: a client's Settings are answered with the
 *    server-side ones (backoff policy, request timeout, body size limit; for
 *    consumers FIFO flag, receive batch size and long-polling timeout from
 *    the subscription group, whose config is read from a broker with
 *    GET_SUBSCRIPTIONGROUP_CONFIG (that one group; the whole table with
 *    GET_ALL_SUBSCRIPTIONGROUP_CONFIG from brokers without it) and cached
 *    for GROUP_TTL_MS, an unknown group included);
 *  - the proxy heartbeats every broker of the topics its producers publish
 *    to as the producer groups of those topics (px_tx_group), so a broker
 *    resolving a pending transaction sends CHECK_TRANSACTION_STATE here; the
 *    check is forwarded as RecoverOrphanedTransactionCommand to one of the
 *    Telemetry streams of a producer of that topic, and the producer's
 *    EndTransaction (send.c) finishes it;
 *  - when a client's last Telemetry stream ends (closed, cancelled, or
 *    NotifyClientTermination), the messages the proxy was keeping invisible
 *    for it (auto-renewal, renew.h) are handed back to the broker.
 *
 * Sessions live in a small array scanned linearly: lookups happen per
 * settings command, heartbeat tick, transaction check and push-consumer
 * receive answer, never per message.
 */
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "consumer.h"
#include "log.h"
#include "proxy.h"
#include "receipt.h"
#include "renew.h"

#define MAX_TOPICS 32
#define GROUP_TTL_MS 30000

struct session {
    struct px_grpc_call *call;
    char client_id[128];
    int client_type;
    char group[CLI_NAME_MAX];
    int ntopics;
    char topics[MAX_TOPICS][CLI_NAME_MAX];
};

struct group_conf {
    char name[CLI_NAME_MAX];
    bool fifo;
    int retry_max;
    int64_t fetched_ms;
};

struct px_clients {
    struct session *s;
    int n, cap;
    struct group_conf *g;
    int ng, capg;
    uint32_t rr;
};

typedef Apache__Rocketmq__V2__Settings pb_settings;

static struct session *session_of(struct px_clients *cl, struct px_grpc_call *call)
{
    for (int i = 0; i < cl->n; i++)
        if (cl->s[i].call == call)
            return &cl->s[i];
    return NULL;
}

static bool client_known(const struct px_clients *cl, const char *client_id)
{
    for (int i = 0; i < cl->n; i++)
        if (!strcmp(cl->s[i].client_id, client_id))
            return true;
    return false;
}

bool px_telemetry_has_client(struct px *px, const char *client_id)
{
    return px->clients && client_known(px->clients, client_id);
}

/* Ends a session; when it was the client's last, the messages the proxy
 * kept invisible for it are handed back (renew.h). */
static void session_drop(struct px *px, struct px_grpc_call *call)
{
    struct px_clients *cl = px->clients;
    if (!cl)
        return;
    for (int i = 0; i < cl->n; i++)
        if (cl->s[i].call == call) {
            char cid[sizeof cl->s[i].client_id];
            memcpy(cid, cl->s[i].client_id, sizeof cid);
            px_grpc_call_unref(call);
            cl->s[i] = cl->s[--cl->n];
            if (!client_known(cl, cid))
                px_renew_client_gone(px, cid);
            return;
        }
}

static struct group_conf *group_find(struct px_clients *cl, const char *name)
{
    for (int i = 0; i < cl->ng; i++)
        if (!strcmp(cl->g[i].name, name))
            return &cl->g[i];
    return NULL;
}

static struct group_conf *group_put(struct px_clients *cl, const char *name)
{
    struct group_conf *g = group_find(cl, name);
    if (g)
        return g;
    if (cl->ng == cl->capg) {
        int cap = cl->capg ? cl->capg * 2 : 16;
        struct group_conf *n = realloc(cl->g, (size_t)cap * sizeof *n);
        if (!n)
            return NULL;
        cl->g = n;
        cl->capg = cap;
    }
    g = &cl->g[cl->ng++];
    memset(g, 0, sizeof *g);
    snprintf(g->name, sizeof g->name, "%s", name);
    g->retry_max = -1;
    return g;
}

bool px_telemetry_group_fifo(struct px *px, const char *group)
{
    struct group_conf *g = group_find(px->clients, group);
    return g && g->fifo;
}

int px_telemetry_init(struct px *px)
{
    px->clients = calloc(1, sizeof *px->clients);
    return px->clients ? 0 : -ENOMEM;
}

void px_telemetry_free(struct px *px)
{
    if (!px->clients)
        return;
    for (int i = 0; i < px->clients->n; i++)
        px_grpc_call_unref(px->clients->s[i].call);
    free(px->clients->s);
    free(px->clients->g);
    free(px->clients);
    px->clients = NULL;
}

static void dur_set(Google__Protobuf__Duration *d, int64_t ms)
{
    google__protobuf__duration__init(d);
    d->seconds = ms / 1000;
    d->nanos = (int32_t)(ms % 1000) * 1000000;
}

/* Sends the server-side settings for a session. */
static void send_settings(struct px *px, struct px_grpc_call *call, int client_type, const char *group,
                          int64_t request_timeout_ms)
{
    Apache__Rocketmq__V2__Status st = APACHE__ROCKETMQ__V2__STATUS__INIT;
    st.code = PXC(OK);
    st.message = (char *)"OK";
    pb_settings s = APACHE__ROCKETMQ__V2__SETTINGS__INIT;
    s.opt_client_type_case = APACHE__ROCKETMQ__V2__SETTINGS__OPT_CLIENT_TYPE_CLIENT_TYPE;
    s.client_type = (Apache__Rocketmq__V2__ClientType)client_type;
    Google__Protobuf__Duration rt, initial, max, lp;
    dur_set(&rt, request_timeout_ms > 0 ? request_timeout_ms : px->cfg.request_timeout_ms);
    s.request_timeout = &rt;
    Apache__Rocketmq__V2__RetryPolicy rp = APACHE__ROCKETMQ__V2__RETRY_POLICY__INIT;
    Apache__Rocketmq__V2__ExponentialBackoff eb = APACHE__ROCKETMQ__V2__EXPONENTIAL_BACKOFF__INIT;
    rp.strategy_case = APACHE__ROCKETMQ__V2__RETRY_POLICY__STRATEGY_EXPONENTIAL_BACKOFF;
    rp.exponential_backoff = &eb;
    s.backoff_policy = &rp;
    Apache__Rocketmq__V2__Publishing pub = APACHE__ROCKETMQ__V2__PUBLISHING__INIT;
    Apache__Rocketmq__V2__Subscription sub = APACHE__ROCKETMQ__V2__SUBSCRIPTION__INIT;
    Apache__Rocketmq__V2__Resource gr = APACHE__ROCKETMQ__V2__RESOURCE__INIT;
    if (client_type == APACHE__ROCKETMQ__V2__CLIENT_TYPE__PRODUCER) {
        rp.max_attempts = 3;
        dur_set(&initial, 10);
        dur_set(&max, 1000);
        eb.multiplier = 2;
        s.pub_sub_case = APACHE__ROCKETMQ__V2__SETTINGS__PUB_SUB_PUBLISHING;
        pub.max_body_size = (int32_t)px->cfg.max_message_size;
        pub.validate_message_type = true;
        s.publishing = &pub;
    } else {
        struct group_conf *g = group ? group_find(px->clients, group) : NULL;
        int retry = g && g->retry_max >= 0 ? g->retry_max : (int)px->cfg.max_delivery_attempts - 1;
        rp.max_attempts = retry + 1;
        dur_set(&initial, 1000);
        dur_set(&max, 60000);
        eb.multiplier = 2;
        s.pub_sub_case = APACHE__ROCKETMQ__V2__SETTINGS__PUB_SUB_SUBSCRIPTION;
        gr.name = (char *)(group ? group : "");
        gr.resource_namespace = (char *)"";
        sub.group = &gr;
        sub.opt_fifo_case = APACHE__ROCKETMQ__V2__SUBSCRIPTION__OPT_FIFO_FIFO;
        sub.fifo = g && g->fifo;
        sub.opt_receive_batch_size_case = APACHE__ROCKETMQ__V2__SUBSCRIPTION__OPT_RECEIVE_BATCH_SIZE_RECEIVE_BATCH_SIZE;
        sub.receive_batch_size = 32;
        dur_set(&lp, px->cfg.max_long_polling_ms < 30000 ? px->cfg.max_long_polling_ms : 30000);
        sub.long_polling_timeout = &lp;
        s.subscription = &sub;
    }
    eb.initial = &initial;
    eb.max = &max;
    Apache__Rocketmq__V2__TelemetryCommand cmd = APACHE__ROCKETMQ__V2__TELEMETRY_COMMAND__INIT;
    cmd.status = &st;
    cmd.command_case = APACHE__ROCKETMQ__V2__TELEMETRY_COMMAND__COMMAND_SETTINGS;
    cmd.settings = &s;
    int rc = px_grpc_call_send_pb(call, &cmd.base);
    if (rc && rc != -ECANCELED)
        log_warn("proxy: cannot send settings to %s: %s", px_grpc_call_peer(call), strerror(-rc));
}

static void group_from_json(struct group_conf *g, json_t *v, int64_t now)
{
    g->fifo = json_is_true(json_object_get(v, "consumeMessageOrderly"));
    json_t *r = json_object_get(v, "retryMaxTimes");
    g->retry_max = json_is_integer(r) ? (int)json_integer_value(r) : -1;
    g->fetched_ms = now;
}

/* Body of GET_SUBSCRIPTIONGROUP_CONFIG: one SubscriptionGroupConfig. */
static void group_parse(struct px *px, const char *name, const uint8_t *body, size_t len)
{
    json_error_t e;
    json_t *root = json_loadb((const char *)body, len, JSON_ALLOW_NUL, &e);
    struct group_conf *g = group_put(px->clients, name);
    if (json_is_object(root) && g)
        group_from_json(g, root, px_now_ms());
    else if (!json_is_object(root))
        log_warn("proxy: subscription group %s from a broker is not readable: %s", name,
                 root ? "not an object" : e.text);
    json_decref(root);
}

static void groups_parse(struct px *px, const uint8_t *body, size_t len)
{
    json_error_t e;
    json_t *root = json_loadb((const char *)body, len, JSON_ALLOW_NUL, &e);
    json_t *tab = root ? json_object_get(root, "subscriptionGroupTable") : NULL;
    const char *name;
    json_t *v;
    int64_t now = px_now_ms();
    if (json_is_object(tab)) {
        json_object_foreach(tab, name, v) {
            struct group_conf *g = group_put(px->clients, name);
            if (!g)
                break;
            group_from_json(g, v, now);
        }
    } else {
        log_warn("proxy: subscription group table from a broker is not readable: %s",
                 root ? "no subscriptionGroupTable" : e.text);
    }
    json_decref(root);
}

static void groups_resp(int status, rmt_cmd *resp, void *ud);

static void groups_ask(struct px_op *op, int code)
{
    px_cmd_reset(op->px, &op->cmd, code);
    op->kind = code;
    int rc = code == RMT_REQ_GET_SUBSCRIPTIONGROUP_CONFIG ? rmt_cmd_set_ext(&op->cmd, "group", op->group) : 0;
    if (!rc)
        rc = rmt_client_invoke(op->px->brk, op->addr, &op->cmd, (int)op->px->cfg.request_timeout_ms, groups_resp,
                               op);
    if (rc)
        groups_resp(rc, NULL, op);
}

static void groups_resp(int status, rmt_cmd *resp, void *ud)
{
    struct px_op *op = ud;
    struct px *px = op->px;
    bool one = op->kind == RMT_REQ_GET_SUBSCRIPTIONGROUP_CONFIG;
    if (status) {
        log_warn("proxy: cannot read subscription group %s from %s: %s; using defaults", op->group, op->addr,
                 strerror(-status));
    } else if (one && resp->code == RMT_RESP_REQUEST_CODE_NOT_SUPPORTED) {
        groups_ask(op, RMT_REQ_GET_ALL_SUBSCRIPTIONGROUP_CONFIG);
        return;
    } else if (one && resp->code == RMT_RESP_SUBSCRIPTION_GROUP_NOT_EXIST) {
        log_debug("proxy: broker %s has no subscription group %s; using defaults", op->addr, op->group);
        struct group_conf *g = group_put(px->clients, op->group);
        if (g) {
            g->fifo = false;
            g->retry_max = -1;
        }
    } else if (resp->code != RMT_RESP_SUCCESS) {
        log_warn("proxy: broker %s refused %s (%d); using defaults", op->addr,
                 one ? "GET_SUBSCRIPTIONGROUP_CONFIG" : "GET_ALL_SUBSCRIPTIONGROUP_CONFIG", resp->code);
    } else if (one) {
        group_parse(px, op->group, resp->body, resp->body_len);
    } else {
        groups_parse(px, resp->body, resp->body_len);
    }
    /* Whatever came of it is kept for GROUP_TTL_MS (an unknown group's
     * defaults, or the last known config when the broker could not say), so
     * settings commands do not ask the broker each time. */
    struct group_conf *g = group_put(px->clients, op->group);
    if (g)
        g->fetched_ms = px_now_ms();
    if (px_grpc_call_active(op->call))
        send_settings(px, op->call, (int)op->i1, op->group, op->i2);
    px_op_put(op);
}

static void groups_route(int status, const struct cli_route *r, const char *errmsg, void *ud)
{
    struct px_op *op = ud;
    const char *addr = NULL;
    if (status == 0)
        for (int i = 0; i < r->nbrokers && !addr; i++)
            addr = cli_route_addr(r, r->brokers[i].name, CLI_MASTER_ID);
    if (!addr) {
        groups_resp(status ? status : -EHOSTUNREACH, NULL, op);
        return;
    }
    snprintf(op->addr, sizeof op->addr, "%s", addr);
    groups_ask(op, RMT_REQ_GET_SUBSCRIPTIONGROUP_CONFIG);
}

static void send_heartbeats(struct px *px);

static void on_settings(struct px *px, struct px_grpc_call *call, const pb_settings *s)
{
    struct px_clients *cl = px->clients;
    struct session *ss = session_of(cl, call);
    if (!ss) {
        if (cl->n == cl->cap) {
            int cap = cl->cap ? cl->cap * 2 : 64;
            struct session *n = realloc(cl->s, (size_t)cap * sizeof *n);
            if (!n) {
                px_grpc_call_finish(call, PX_GRPC_RESOURCE_EXHAUSTED, "out of memory");
                return;
            }
            cl->s = n;
            cl->cap = cap;
        }
        ss = &cl->s[cl->n++];
        memset(ss, 0, sizeof *ss);
        ss->call = call;
        px_grpc_call_ref(call);
        const char *cid = px_grpc_call_header(call, "x-mq-client-id");
        snprintf(ss->client_id, sizeof ss->client_id, "%s", cid ? cid : px_grpc_call_peer(call));
    }
    ss->client_type = s->opt_client_type_case ? (int)s->client_type : 0;
    int64_t rt = s->request_timeout ? s->request_timeout->seconds * 1000 + s->request_timeout->nanos / 1000000 : 0;
    if (s->pub_sub_case == APACHE__ROCKETMQ__V2__SETTINGS__PUB_SUB_PUBLISHING && s->publishing) {
        ss->client_type = APACHE__ROCKETMQ__V2__CLIENT_TYPE__PRODUCER;
        ss->ntopics = 0;
        for (size_t i = 0; i < s->publishing->n_topics && ss->ntopics < MAX_TOPICS; i++) {
            const char *t = s->publishing->topics[i]->name;
            if (px_valid_name(t, CLI_NAME_MAX - 1))
                snprintf(ss->topics[ss->ntopics++], CLI_NAME_MAX, "%s", t);
        }
        send_settings(px, call, ss->client_type, NULL, rt);
        send_heartbeats(px);
        return;
    }
    if (s->pub_sub_case != APACHE__ROCKETMQ__V2__SETTINGS__PUB_SUB_SUBSCRIPTION || !s->subscription ||
        !s->subscription->group || !px_valid_name(s->subscription->group->name, CLI_NAME_MAX - 1)) {
        Apache__Rocketmq__V2__Status st = APACHE__ROCKETMQ__V2__STATUS__INIT;
        st.code = ss->client_type ? PXC(ILLEGAL_CONSUMER_GROUP) : PXC(UNRECOGNIZED_CLIENT_TYPE);
        st.message = (char *)(ss->client_type ? "subscription settings need a valid group"
                                               : "settings carry neither publishing nor subscription");
        Apache__Rocketmq__V2__TelemetryCommand cmd = APACHE__ROCKETMQ__V2__TELEMETRY_COMMAND__INIT;
        cmd.status = &st;
        px_grpc_call_send_pb(call, &cmd.base);
        return;
    }
    const Apache__Rocketmq__V2__Subscription *sub = s->subscription;
    snprintf(ss->group, sizeof ss->group, "%s", sub->group->name);
    ss->ntopics = 0;
    for (size_t i = 0; i < sub->n_subscriptions && ss->ntopics < MAX_TOPICS; i++)
        if (sub->subscriptions[i]->topic && px_valid_name(sub->subscriptions[i]->topic->name, CLI_NAME_MAX - 1))
            snprintf(ss->topics[ss->ntopics++], CLI_NAME_MAX, "%s", sub->subscriptions[i]->topic->name);
    struct group_conf *g = group_find(cl, ss->group);
    if ((g && px_now_ms() - g->fetched_ms < GROUP_TTL_MS) || ss->ntopics == 0) {
        send_settings(px, call, ss->client_type, ss->group, rt);
        return;
    }
    struct px_op *op = px_op_get(px, call);
    if (!op) {
        send_settings(px, call, ss->client_type, ss->group, rt);
        return;
    }
    snprintf(op->group, sizeof op->group, "%s", ss->group);
    snprintf(op->topic, sizeof op->topic, "%s", ss->topics[0]);
    op->i1 = ss->client_type;
    op->i2 = rt;
    int rc = px_with_route(px, op->topic, groups_route, op);
    if (rc)
        groups_route(rc, NULL, NULL, op);
}

static void telemetry_msg(struct px *px, struct px_grpc_call *call, const uint8_t *msg, size_t len)
{
    Apache__Rocketmq__V2__TelemetryCommand *c =
        (void *)px_unpack(&apache__rocketmq__v2__telemetry_command__descriptor, msg, len);
    if (!c) {
        px_grpc_call_finish(call, PX_GRPC_INVALID_ARGUMENT, "cannot decode TelemetryCommand");
        session_drop(px, call);
        return;
    }
    switch (c->command_case) {
    case APACHE__ROCKETMQ__V2__TELEMETRY_COMMAND__COMMAND_SETTINGS:
        on_settings(px, call, c->settings);
        break;
    case APACHE__ROCKETMQ__V2__TELEMETRY_COMMAND__COMMAND_THREAD_STACK_TRACE:
    case APACHE__ROCKETMQ__V2__TELEMETRY_COMMAND__COMMAND_VERIFY_MESSAGE_RESULT:
        log_debug("proxy: client %s answered a command the proxy never asks for", px_grpc_call_peer(call));
        break;
    default:
        log_debug("proxy: telemetry command %d from %s ignored", c->command_case, px_grpc_call_peer(call));
    }
}

void px_telemetry_half_close(struct px *px, struct px_grpc_call *call)
{
    session_drop(px, call);
    px_grpc_call_finish(call, PX_GRPC_OK, NULL);
}

static void telemetry_cancel(struct px *px, struct px_grpc_call *call, enum px_grpc_end_reason why)
{
    session_drop(px, call);
}

static void heartbeat_rpc(struct px *px, struct px_grpc_call *call, const uint8_t *msg, size_t len)
{
    const ProtobufCMessageDescriptor *d = &apache__rocketmq__v2__heartbeat_response__descriptor;
    Apache__Rocketmq__V2__HeartbeatRequest *req =
        (void *)px_unpack(&apache__rocketmq__v2__heartbeat_request__descriptor, msg, len);
    if (!req) {
        px_reply_status(call, d, PXC(BAD_REQUEST), "cannot decode HeartbeatRequest");
        return;
    }
    if (!px_grpc_call_header(call, "x-mq-client-id")) {
        px_reply_status(call, d, PXC(CLIENT_ID_REQUIRED), "x-mq-client-id header is missing");
        return;
    }
    if (req->client_type != APACHE__ROCKETMQ__V2__CLIENT_TYPE__PRODUCER) {
        if (!req->group || !px_valid_name(req->group->name, CLI_NAME_MAX - 1)) {
            px_reply_status(call, d, PXC(ILLEGAL_CONSUMER_GROUP), "a consumer heartbeat needs a valid group");
            return;
        }
    }
    px_reply_status(call, d, PXC(OK), "OK");
}

static void notify_termination(struct px *px, struct px_grpc_call *call, const uint8_t *msg, size_t len)
{
    const ProtobufCMessageDescriptor *d = &apache__rocketmq__v2__notify_client_termination_response__descriptor;
    if (!px_unpack(&apache__rocketmq__v2__notify_client_termination_request__descriptor, msg, len)) {
        px_reply_status(call, d, PXC(BAD_REQUEST), "cannot decode NotifyClientTerminationRequest");
        return;
    }
    const char *cid = px_grpc_call_header(call, "x-mq-client-id");
    if (!cid) {
        px_reply_status(call, d, PXC(CLIENT_ID_REQUIRED), "x-mq-client-id header is missing");
        return;
    }
    struct px_clients *cl = px->clients;
    for (int i = 0; i < cl->n;) {
        if (!strcmp(cl->s[i].client_id, cid)) {
            struct px_grpc_call *t = cl->s[i].call;
            px_grpc_call_finish(t, PX_GRPC_OK, NULL);
            session_drop(px, t);
        } else {
            i++;
        }
    }
    px_reply_status(call, d, PXC(OK), "OK");
}

static void route_warm(int status, const struct cli_route *r, const char *errmsg, void *ud) { }

/* HEART_BEAT to every broker of the topics producers publish to, with one
 * producer group per topic. */
static void send_heartbeats(struct px *px)
{
    struct px_clients *cl = px->clients;
    struct buf body = BUF_INIT;
    char addrs[64][CLI_ADDR_MAX];
    int naddrs = 0;
    char cid[160];
    snprintf(cid, sizeof cid, "%s@proxy-%d", px->ip, (int)px->port);
    buf_printf(&body, "{\"clientID\":\"%s\",\"producerDataSet\":[", cid);
    int ngroups = 0;
    for (int i = 0; i < cl->n; i++) {
        struct session *s = &cl->s[i];
        if (s->client_type != APACHE__ROCKETMQ__V2__CLIENT_TYPE__PRODUCER)
            continue;
        for (int t = 0; t < s->ntopics; t++) {
            char g[CLI_NAME_MAX + 16];
            px_tx_group(s->topics[t], g, sizeof g);
            char needle[CLI_NAME_MAX + 40];
            snprintf(needle, sizeof needle, "{\"groupName\":\"%s\"}", g);
            if (body.len && memmem(body.data, body.len, needle, strlen(needle)))
                continue;
            buf_printf(&body, "%s%s", ngroups++ ? "," : "", needle);
            const struct cli_route *r = cli_route_cached(px->cli, s->topics[t]);
            if (!r) {
                px_with_route(px, s->topics[t], route_warm, NULL);
                continue;
            }
            for (int b = 0; b < r->nbrokers; b++) {
                const char *a = cli_route_addr(r, r->brokers[b].name, CLI_MASTER_ID);
                bool dup = !a;
                for (int k = 0; k < naddrs && !dup; k++)
                    dup = !strcmp(addrs[k], a);
                if (!dup && naddrs < 64)
                    snprintf(addrs[naddrs++], CLI_ADDR_MAX, "%s", a);
            }
        }
    }
    buf_printf(&body, "],\"consumerDataSet\":[]}");
    if (ngroups > 0) {
        rmt_cmd cmd;
        rmt_cmd_init(&cmd, RMT_REQ_HEART_BEAT);
        for (int i = 0; i < naddrs; i++) {
            px_cmd_reset(px, &cmd, RMT_REQ_HEART_BEAT);
            rmt_cmd_set_body(&cmd, body.data, (uint32_t)body.len);
            int rc = rmt_client_invoke_oneway(px->brk, addrs[i], &cmd);
            if (rc)
                log_warn("proxy: heartbeat to broker %s failed: %s", addrs[i], strerror(-rc));
        }
        rmt_cmd_destroy(&cmd);
    }
    buf_free(&body);
}

static void heartbeat_tick(struct ev_loop *loop, ev_timer *w, int revents)
{
    send_heartbeats(w->data);
}

static struct session *pick_producer(struct px *px, const char *topic)
{
    struct px_clients *cl = px->clients;
    int match = 0;
    for (int i = 0; i < cl->n; i++) {
        struct session *s = &cl->s[i];
        if (s->client_type != APACHE__ROCKETMQ__V2__CLIENT_TYPE__PRODUCER || !px_grpc_call_active(s->call))
            continue;
        for (int t = 0; t < s->ntopics; t++)
            if (!strcmp(s->topics[t], topic))
                match++;
    }
    if (match == 0)
        return NULL;
    int want = (int)(cl->rr++ % (uint32_t)match);
    for (int i = 0; i < cl->n; i++) {
        struct session *s = &cl->s[i];
        if (s->client_type != APACHE__ROCKETMQ__V2__CLIENT_TYPE__PRODUCER || !px_grpc_call_active(s->call))
            continue;
        for (int t = 0; t < s->ntopics; t++)
            if (!strcmp(s->topics[t], topic) && want-- == 0)
                return s;
    }
    return NULL;
}

static void check_transaction(struct px *px, rmt_conn *conn, rmt_cmd *req)
{
    struct msg_record rec;
    if (!req->body || msg_record_decode(req->body, req->body_len, &rec, 0) <= 0) {
        log_warn("proxy: CHECK_TRANSACTION_STATE from %s without a readable message", rmt_conn_peer(conn));
        return;
    }
    char topic[CLI_NAME_MAX];
    const char *rt;
    size_t rtl;
    if (msg_prop_get(rec.props, rec.props_len, MSG_PROP_REAL_TOPIC, &rt, &rtl) && rtl < sizeof topic) {
        memcpy(topic, rt, rtl);
        topic[rtl] = 0;
    } else if (rec.topic_len < sizeof topic) {
        memcpy(topic, rec.topic, rec.topic_len);
        topic[rec.topic_len] = 0;
    } else {
        return;
    }
    struct px_txid t = { 0 };
    int64_t v;
    snprintf(t.addr, sizeof t.addr, "%s", rmt_conn_peer(conn));
    t.commit_log_offset = rmt_cmd_ext_int(req, "commitLogOffset", &v) ? rec.phys_offset : v;
    t.tran_state_offset = rmt_cmd_ext_int(req, "tranStateTableOffset", &v) ? rec.queue_offset : v;
    const char *btx = rmt_cmd_ext(req, "transactionId");
    const char *mid = rmt_cmd_ext(req, "msgId");
    snprintf(t.broker_txid, sizeof t.broker_txid, "%s", btx && *btx ? btx : (mid ? mid : ""));
    char txid[256];
    struct session *s = pick_producer(px, topic);
    if (!s) {
        log_info("proxy: transaction check for topic %s from %s, but no producer of it is connected", topic,
                 rmt_conn_peer(conn));
        return;
    }
    if (px_txid_encode(&t, txid, sizeof txid) < 0)
        return;
    struct cli_msg_view view;
    size_t pos = 0;
    if (cli_pull_next(req->body, req->body_len, &pos, &view) != 1)
        return;
    static struct px_msg_out out;
    static struct buf scratch = BUF_INIT;
    buf_reset(&scratch);
    if (px_msg_to_pb(&out, &view, &rec, topic, &scratch))
        return;
    Apache__Rocketmq__V2__RecoverOrphanedTransactionCommand rc =
        APACHE__ROCKETMQ__V2__RECOVER_ORPHANED_TRANSACTION_COMMAND__INIT;
    rc.message = &out.msg;
    rc.transaction_id = txid;
    Apache__Rocketmq__V2__Status st = APACHE__ROCKETMQ__V2__STATUS__INIT;
    st.code = PXC(OK);
    st.message = (char *)"OK";
    Apache__Rocketmq__V2__TelemetryCommand cmd = APACHE__ROCKETMQ__V2__TELEMETRY_COMMAND__INIT;
    cmd.status = &st;
    cmd.command_case = APACHE__ROCKETMQ__V2__TELEMETRY_COMMAND__COMMAND_RECOVER_ORPHANED_TRANSACTION_COMMAND;
    cmd.recover_orphaned_transaction_command = &rc;
    int err = px_grpc_call_send_pb(s->call, &cmd.base);
    if (err)
        log_warn("proxy: cannot forward a transaction check to %s: %s", s->client_id, strerror(-err));
    else
        px->stats.tx_checks++;
}

void px_on_broker_request(rmt_conn *conn, rmt_cmd *req, void *ud)
{
    struct px *px = ud;
    switch (req->code) {
    case RMT_REQ_CHECK_TRANSACTION_STATE:
        check_transaction(px, conn, req);
        if (!rmt_cmd_is_oneway(req)) {
            rmt_cmd resp;
            rmt_cmd_init(&resp, RMT_RESP_SUCCESS);
            rmt_conn_respond(conn, req, &resp);
            rmt_cmd_destroy(&resp);
        }
        return;
    case RMT_REQ_NOTIFY_CONSUMER_IDS_CHANGED:
        if (!rmt_cmd_is_oneway(req)) {
            rmt_cmd resp;
            rmt_cmd_init(&resp, RMT_RESP_SUCCESS);
            rmt_conn_respond(conn, req, &resp);
            rmt_cmd_destroy(&resp);
        }
        return;
    default:
        rmt_conn_respond_error(conn, req, RMT_RESP_REQUEST_CODE_NOT_SUPPORTED,
                               "request code %d is not served by the proxy", req->code);
    }
}

void px_telemetry_register(struct px *px)
{
    px_rpc_register(px, "Telemetry", PX_GRPC_BIDI_STREAMING, telemetry_msg, telemetry_cancel);
    px_rpc_register(px, "Heartbeat", PX_GRPC_UNARY, heartbeat_rpc, NULL);
    px_rpc_register(px, "NotifyClientTermination", PX_GRPC_UNARY, notify_termination, NULL);
    ev_timer_init(&px->heartbeat, heartbeat_tick, px->cfg.heartbeat_ms / 1000.0, px->cfg.heartbeat_ms / 1000.0);
    px->heartbeat.data = px;
    ev_timer_start(px->loop, &px->heartbeat);
}
