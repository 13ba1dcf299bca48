/*
 * Client core: the shared remoting client, nameserver failover, the route
 * cache with its refresh timer, dispatch of broker-initiated requests to the
 * consumers, and the blocking admin wrappers (see client.h).
 *
 * Route lookups are rare (first use of a topic, then every 30 s), so their
 * bookkeeping allocates freely; the per-message paths live in producer.c and
 * consumer.c.
 */
#include "client.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "json_util.h"
#include "log.h"

struct route_waiter {
    cli_route_fn cb;
    void *ud;
    struct route_waiter *next;
};

struct route_entry {
    char topic[CLI_NAME_MAX];
    struct cli_route *route;
    bool fetching;
    struct route_waiter *waiters;
    struct route_entry *next;
};

struct cli_client {
    struct ev_loop *loop;
    rmt_client *rmt;
    char ns[CLI_MAX_NAMESRV][CLI_ADDR_MAX];
    int nns, ns_cur;
    char ip[64];
    char id[CLI_NAME_MAX + 64];
    int timeout_ms, refresh_ms;
    uint8_t serialize;
    bool closing;
    struct route_entry *routes;
    struct route_waiter *ready;       /* cached answers delivered on the next loop turn */
    ev_timer refresh_timer;
    ev_timer ready_timer;
    struct cli_consumer **consumers;
    int nconsumers, consumers_cap;
};

static void on_server_request(rmt_conn *conn, rmt_cmd *req, void *ud)
{
    cli_client *c = ud;
    if (req->code == RMT_REQ_NOTIFY_CONSUMER_IDS_CHANGED) {
        const char *group = rmt_cmd_ext(req, "consumerGroup");
        log_debug("client: broker %s says the consumers of group %s changed", rmt_conn_peer(conn),
                  group ? group : "?");
        for (int i = 0; i < c->nconsumers; i++)
            cli_consumer_on_ids_changed(c->consumers[i], group);
        if (!rmt_cmd_is_oneway(req)) {
            rmt_cmd resp;
            rmt_cmd_init(&resp, RMT_RESP_SUCCESS);
            rmt_conn_respond(conn, req, &resp);
            rmt_cmd_destroy(&resp);
        }
        return;
    }
    rmt_conn_respond_error(conn, req, RMT_RESP_REQUEST_CODE_NOT_SUPPORTED,
                           "request code %d is not supported by this client", req->code);
}

static void refresh_cb(struct ev_loop *loop, ev_timer *w, int revents);
static void ready_cb(struct ev_loop *loop, ev_timer *w, int revents);

cli_client *cli_client_new(struct ev_loop *loop, const struct cli_opts *o, int *err)
{
    *err = -EINVAL;
    if (!o->namesrv_addr || !*o->namesrv_addr) {
        log_error("client: no nameserver address given (namesrvAddr)");
        return NULL;
    }
    cli_client *c = calloc(1, sizeof *c);
    if (!c) {
        *err = -ENOMEM;
        return NULL;
    }
    const char *p = o->namesrv_addr;
    while (*p) {
        size_t n = strcspn(p, ";, ");
        if (n > 0) {
            char host[CLI_ADDR_MAX];
            int port;
            if (n >= CLI_ADDR_MAX || c->nns == CLI_MAX_NAMESRV) {
                log_error("client: nameserver list '%s' has an entry too long or more than %d entries",
                          o->namesrv_addr, CLI_MAX_NAMESRV);
                free(c);
                return NULL;
            }
            memcpy(c->ns[c->nns], p, n);
            c->ns[c->nns][n] = 0;
            if (rmt_parse_addr(c->ns[c->nns], host, sizeof host, &port)) {
                log_error("client: nameserver address '%s' is not host:port", c->ns[c->nns]);
                free(c);
                return NULL;
            }
            c->nns++;
        }
        p += n;
        if (*p)
            p++;
    }
    if (c->nns == 0) {
        log_error("client: nameserver list '%s' holds no address", o->namesrv_addr);
        free(c);
        return NULL;
    }
    c->ns_cur = (int)((unsigned)getpid() % (unsigned)c->nns);
    c->loop = loop;
    c->timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : 3000;
    c->refresh_ms = o->route_refresh_ms > 0 ? o->route_refresh_ms : 30000;
    c->serialize = o->json_headers ? RMT_SERIALIZE_JSON : RMT_SERIALIZE_ROCKETMQ;
    if (o->client_ip && *o->client_ip)
        snprintf(c->ip, sizeof c->ip, "%s", o->client_ip);
    else
        rmt_local_ipv4(c->ip, sizeof c->ip);
    if (o->instance_name && *o->instance_name)
        snprintf(c->id, sizeof c->id, "%s@%s", c->ip, o->instance_name);
    else
        snprintf(c->id, sizeof c->id, "%s@%d", c->ip, (int)getpid());
    struct rmt_client_opts ro = { 0 };
    ro.on_request = on_server_request;
    ro.ud = c;
    c->rmt = rmt_client_new(loop, &ro);
    if (!c->rmt) {
        free(c);
        *err = -ENOMEM;
        return NULL;
    }
    ev_timer_init(&c->refresh_timer, refresh_cb, c->refresh_ms / 1000.0, c->refresh_ms / 1000.0);
    c->refresh_timer.data = c;
    ev_timer_start(loop, &c->refresh_timer);
    ev_timer_init(&c->ready_timer, ready_cb, 0., 0.);
    c->ready_timer.data = c;
    *err = 0;
    return c;
}

static void fail_waiters(struct route_waiter *w, int status, const char *msg)
{
    while (w) {
        struct route_waiter *n = w->next;
        w->cb(status, NULL, msg, w->ud);
        free(w);
        w = n;
    }
}

void cli_client_free(cli_client *c)
{
    if (!c)
        return;
    c->closing = true;
    ev_timer_stop(c->loop, &c->refresh_timer);
    ev_timer_stop(c->loop, &c->ready_timer);
    rmt_client_free(c->rmt);
    fail_waiters(c->ready, -ECANCELED, "client closed");
    while (c->routes) {
        struct route_entry *e = c->routes;
        c->routes = e->next;
        fail_waiters(e->waiters, -ECANCELED, "client closed");
        cli_route_free(e->route);
        free(e);
    }
    free(c->consumers);
    free(c);
}

struct ev_loop *cli_client_loop(const cli_client *c) { return c->loop; }
rmt_client *cli_client_rmt(const cli_client *c) { return c->rmt; }
const char *cli_client_id(const cli_client *c) { return c->id; }
const char *cli_client_ip(const cli_client *c) { return c->ip; }
int cli_client_timeout(const cli_client *c) { return c->timeout_ms; }

void cli_cmd_init(const cli_client *c, rmt_cmd *cmd, int32_t code)
{
    rmt_cmd_init(cmd, code);
    cmd->serialize = c->serialize;
    cmd->language = RMT_LANG_CPP;
}

void cli_cmd_reset(const cli_client *c, rmt_cmd *cmd, int32_t code)
{
    rmt_cmd_reset(cmd, code);
    cmd->serialize = c->serialize;
    cmd->language = RMT_LANG_CPP;
}

void cli_client_attach_consumer(cli_client *c, struct cli_consumer *cs)
{
    if (c->nconsumers == c->consumers_cap) {
        int cap = c->consumers_cap ? c->consumers_cap * 2 : 4;
        struct cli_consumer **v = realloc(c->consumers, (size_t)cap * sizeof *v);
        if (!v) {
            log_error("client: out of memory registering a consumer for broker notifications");
            return;
        }
        c->consumers = v;
        c->consumers_cap = cap;
    }
    c->consumers[c->nconsumers++] = cs;
}

void cli_client_detach_consumer(cli_client *c, struct cli_consumer *cs)
{
    for (int i = 0; i < c->nconsumers; i++)
        if (c->consumers[i] == cs) {
            c->consumers[i] = c->consumers[--c->nconsumers];
            return;
        }
}

void cli_run_until(cli_client *c, const bool *done)
{
    while (!*done)
        ev_run(c->loop, EVRUN_ONCE);
}

/* Nameserver invocation with failover. */
struct ns_call {
    cli_client *c;
    rmt_cmd *req;
    int tried, idx;
    rmt_response_fn cb;
    void *ud;
};

static void ns_call_cb(int status, rmt_cmd *resp, void *ud);

/* Sends to the nameserver at k->idx, moving on to the next ones when the
 * send fails at once. Returns 0 or the last error. */
static int ns_call_send(struct ns_call *k)
{
    int rc = -ENOTCONN;
    while (k->tried < k->c->nns) {
        rc = rmt_client_invoke(k->c->rmt, k->c->ns[k->idx], k->req, k->c->timeout_ms, ns_call_cb, k);
        if (rc == 0)
            return 0;
        log_warn("client: cannot send to nameserver %s: %s", k->c->ns[k->idx], strerror(-rc));
        k->tried++;
        k->idx = (k->idx + 1) % k->c->nns;
    }
    return rc;
}

static void ns_call_cb(int status, rmt_cmd *resp, void *ud)
{
    struct ns_call *k = ud;
    cli_client *c = k->c;
    if (status != 0 && status != -ECANCELED && !c->closing) {
        log_warn("client: nameserver %s did not answer request %d: %s", c->ns[k->idx], k->req->code,
                 strerror(-status));
        k->tried++;
        k->idx = (k->idx + 1) % c->nns;
        if (k->tried < c->nns) {
            c->ns_cur = k->idx;
            if (ns_call_send(k) == 0)
                return;
        }
    }
    k->cb(status, resp, k->ud);
    rmt_cmd_free(k->req);
    free(k);
}

int cli_namesrv_invoke(cli_client *c, rmt_cmd *req, rmt_response_fn cb, void *ud)
{
    struct ns_call *k = calloc(1, sizeof *k);
    if (!k)
        return -ENOMEM;
    k->req = rmt_cmd_dup(req);
    if (!k->req) {
        free(k);
        return -ENOMEM;
    }
    k->c = c;
    k->idx = c->ns_cur;
    k->cb = cb;
    k->ud = ud;
    int rc = ns_call_send(k);
    if (rc) {
        rmt_cmd_free(k->req);
        free(k);
    }
    return rc;
}

/* Route cache. */
static struct route_entry *route_find(cli_client *c, const char *topic)
{
    for (struct route_entry *e = c->routes; e; e = e->next)
        if (strcmp(e->topic, topic) == 0)
            return e;
    return NULL;
}

const struct cli_route *cli_route_cached(cli_client *c, const char *topic)
{
    struct route_entry *e = route_find(c, topic);
    return e ? e->route : NULL;
}

void cli_route_invalidate(cli_client *c, const char *topic)
{
    struct route_entry *e = route_find(c, topic);
    if (e && !e->fetching) {
        cli_route_free(e->route);
        e->route = NULL;
    }
}

struct route_call {
    cli_client *c;
    char topic[CLI_NAME_MAX];
};

static void route_resp_cb(int status, rmt_cmd *resp, void *ud)
{
    struct route_call *rc = ud;
    cli_client *c = rc->c;
    struct route_entry *e = route_find(c, rc->topic);
    char msg[CLI_ERRMSG_MAX + CLI_NAME_MAX + 256] = "";
    int st = status;
    struct cli_route *route = NULL;
    if (status) {
        snprintf(msg, sizeof msg, "route of topic %s: no nameserver answered (%s)", rc->topic,
                 strerror(-status));
    } else if (resp->code == RMT_RESP_TOPIC_NOT_EXIST) {
        st = -ENOENT;
        snprintf(msg, sizeof msg, "topic %s does not exist (nameserver: %s)", rc->topic,
                 rmt_cmd_remark(resp) ? rmt_cmd_remark(resp) : "TOPIC_NOT_EXIST");
    } else if (resp->code != RMT_RESP_SUCCESS) {
        st = -EPROTO;
        snprintf(msg, sizeof msg, "route of topic %s: nameserver answered code %d: %s", rc->topic,
                 resp->code, rmt_cmd_remark(resp) ? rmt_cmd_remark(resp) : "");
    } else {
        char perr[200];
        st = cli_route_parse((const char *)resp->body, resp->body_len, &route, perr, sizeof perr);
        if (st)
            snprintf(msg, sizeof msg, "route of topic %s: %s", rc->topic, perr);
    }
    free(rc);
    if (!e) {
        cli_route_free(route);
        return;
    }
    e->fetching = false;
    if (st == 0) {
        cli_route_free(e->route);
        e->route = route;
    } else {
        if (st == -ENOENT) {
            cli_route_free(e->route);
            e->route = NULL;
        }
        if (st != -ECANCELED)
            log_warn("client: %s", msg);
    }
    struct route_waiter *w = e->waiters;
    e->waiters = NULL;
    while (w) {
        struct route_waiter *n = w->next;
        if (e->route && st != -ENOENT)
            w->cb(0, e->route, NULL, w->ud);
        else
            w->cb(st ? st : -ENOENT, NULL, msg, w->ud);
        free(w);
        w = n;
    }
}

static int route_fetch(cli_client *c, struct route_entry *e)
{
    struct route_call *rc = malloc(sizeof *rc);
    if (!rc)
        return -ENOMEM;
    rc->c = c;
    memcpy(rc->topic, e->topic, sizeof rc->topic);
    rmt_cmd req;
    cli_cmd_init(c, &req, RMT_REQ_GET_ROUTEINFO_BY_TOPIC);
    int r = rmt_cmd_set_ext(&req, "topic", e->topic);
    if (!r)
        r = cli_namesrv_invoke(c, &req, route_resp_cb, rc);
    rmt_cmd_destroy(&req);
    if (r) {
        free(rc);
        return r;
    }
    e->fetching = true;
    return 0;
}

static void refresh_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    cli_client *c = w->data;
    for (struct route_entry *e = c->routes; e; e = e->next)
        if (!e->fetching && (e->route || e->waiters))
            route_fetch(c, e);
}

static void ready_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    cli_client *c = w->data;
    struct route_waiter *r = c->ready, *rev = NULL;
    c->ready = NULL;
    while (r) {                      /* the list is newest first; deliver in request order */
        struct route_waiter *n = r->next;
        r->next = rev;
        rev = r;
        r = n;
    }
    while (rev) {
        struct route_waiter *n = rev->next;
        rev->cb(0, NULL, NULL, rev->ud);
        free(rev);
        rev = n;
    }
}

/* Cached answers go through the ready list: the waiter's ud slot holds a
 * small record with the topic, so the route is looked up at delivery. */
struct ready_item {
    cli_client *c;
    char topic[CLI_NAME_MAX];
    cli_route_fn cb;
    void *ud;
};

static void ready_item_cb(int status, const struct cli_route *route, const char *msg, void *ud)
{
    (void)status;
    (void)route;
    (void)msg;
    struct ready_item *it = ud;
    const struct cli_route *r = status == -ECANCELED ? NULL : cli_route_cached(it->c, it->topic);
    if (r)
        it->cb(0, r, NULL, it->ud);
    else
        it->cb(status == -ECANCELED ? -ECANCELED : -ENOENT, NULL,
               status == -ECANCELED ? "client closed" : "route dropped", it->ud);
    free(it);
}

int cli_route_get(cli_client *c, const char *topic, cli_route_fn cb, void *ud)
{
    if (!topic || !*topic || strlen(topic) >= CLI_NAME_MAX)
        return -EINVAL;
    struct route_entry *e = route_find(c, topic);
    if (!e) {
        e = calloc(1, sizeof *e);
        if (!e)
            return -ENOMEM;
        memcpy(e->topic, topic, strlen(topic) + 1);
        e->next = c->routes;
        c->routes = e;
    }
    struct route_waiter *w = malloc(sizeof *w);
    if (!w)
        return -ENOMEM;
    if (e->route) {
        struct ready_item *it = malloc(sizeof *it);
        if (!it) {
            free(w);
            return -ENOMEM;
        }
        it->c = c;
        memcpy(it->topic, e->topic, sizeof it->topic);
        it->cb = cb;
        it->ud = ud;
        w->cb = ready_item_cb;
        w->ud = it;
        w->next = c->ready;
        c->ready = w;
        if (!ev_is_active(&c->ready_timer)) {
            ev_timer_set(&c->ready_timer, 0., 0.);
            ev_timer_start(c->loop, &c->ready_timer);
        }
        return 0;
    }
    if (!e->fetching) {
        int rc = route_fetch(c, e);
        if (rc) {
            free(w);
            return rc;
        }
    }
    w->cb = cb;
    w->ud = ud;
    w->next = e->waiters;
    e->waiters = w;
    return 0;
}

struct route_sync {
    bool done;
    int status;
    struct cli_route *copy;
    char *errmsg;
    size_t errlen;
};

/* Deep copy of a route (one block; pointers rebased). */
static struct cli_route *route_copy(const struct cli_route *r)
{
    size_t naddr = 0;
    for (int i = 0; i < r->nbrokers; i++)
        naddr += (size_t)r->brokers[i].naddrs;
    size_t sz = sizeof *r + (size_t)r->nbrokers * sizeof(struct cli_broker) +
                naddr * sizeof(struct cli_broker_addr) + (size_t)r->nqd * sizeof(struct cli_queue_data) +
                (size_t)(r->nwrite + r->nread) * sizeof(struct cli_mq);
    struct cli_route *n = malloc(sz);
    if (!n)
        return NULL;
    memcpy(n, r, sz);
    n->brokers = (struct cli_broker *)(n + 1);
    struct cli_broker_addr *ab = (struct cli_broker_addr *)(n->brokers + n->nbrokers);
    for (int i = 0; i < n->nbrokers; i++) {
        n->brokers[i].addrs = ab;
        ab += n->brokers[i].naddrs;
    }
    n->qd = (struct cli_queue_data *)ab;
    n->write_queues = (struct cli_mq *)(n->qd + n->nqd);
    n->read_queues = n->write_queues + n->nwrite;
    for (int i = 0; i < n->nwrite + n->nread; i++) {
        const char *old = n->write_queues[i].broker;
        for (int b = 0; b < r->nbrokers; b++)
            if (old == r->brokers[b].name)
                n->write_queues[i].broker = n->brokers[b].name;
    }
    return n;
}

static void route_sync_cb(int status, const struct cli_route *route, const char *msg, void *ud)
{
    struct route_sync *s = ud;
    s->done = true;
    s->status = status;
    if (status == 0) {
        s->copy = route_copy(route);
        if (!s->copy) {
            s->status = -ENOMEM;
            snprintf(s->errmsg, s->errlen, "out of memory");
        }
    } else if (s->errmsg) {
        snprintf(s->errmsg, s->errlen, "%s", msg ? msg : strerror(-status));
    }
}

int cli_route_get_sync(cli_client *c, const char *topic, struct cli_route **out, char *errmsg,
                       size_t errlen)
{
    struct route_sync s = { .errmsg = errmsg, .errlen = errlen };
    *out = NULL;
    int rc = cli_route_get(c, topic, route_sync_cb, &s);
    if (rc) {
        snprintf(errmsg, errlen, "route lookup of %s could not start: %s", topic, strerror(-rc));
        return rc;
    }
    cli_run_until(c, &s.done);
    *out = s.copy;
    return s.status;
}

/* Admin helpers. */
struct sync_call {
    bool done;
    int status;
    rmt_cmd *resp;
};

static void sync_call_cb(int status, rmt_cmd *resp, void *ud)
{
    struct sync_call *s = ud;
    s->done = true;
    s->status = status;
    if (status == 0 && !(s->resp = rmt_cmd_dup(resp)))
        s->status = -ENOMEM;
}

int cli_admin_invoke(cli_client *c, const char *addr, rmt_cmd *req, char **body, rmt_cmd **resp,
                     char *errmsg, size_t errlen)
{
    struct sync_call s = { 0 };
    if (body)
        *body = NULL;
    if (resp)
        *resp = NULL;
    int rc = addr ? rmt_client_invoke(c->rmt, addr, req, c->timeout_ms, sync_call_cb, &s)
                  : cli_namesrv_invoke(c, req, sync_call_cb, &s);
    if (rc) {
        snprintf(errmsg, errlen, "cannot send request %d to %s: %s", req->code,
                 addr ? addr : "the nameservers", strerror(-rc));
        return rc;
    }
    cli_run_until(c, &s.done);
    if (s.status) {
        snprintf(errmsg, errlen, "request %d to %s failed: %s", req->code,
                 addr ? addr : "the nameservers", strerror(-s.status));
        return s.status;
    }
    int code = s.resp->code;
    if (code != RMT_RESP_SUCCESS) {
        const char *rm = rmt_cmd_remark(s.resp);
        snprintf(errmsg, errlen, "%s answered code %d%s%s", addr ? addr : "nameserver", code,
                 rm ? ": " : "", rm ? rm : "");
    } else if (errlen) {
        errmsg[0] = 0;
    }
    if (body && code == RMT_RESP_SUCCESS) {
        *body = malloc(s.resp->body_len + 1);
        if (!*body) {
            rmt_cmd_free(s.resp);
            snprintf(errmsg, errlen, "out of memory");
            return -ENOMEM;
        }
        if (s.resp->body_len)
            memcpy(*body, s.resp->body, s.resp->body_len);
        (*body)[s.resp->body_len] = 0;
    }
    if (resp)
        *resp = s.resp;
    else
        rmt_cmd_free(s.resp);
    return code;
}

/* Runs req and frees it; on success reads an int64 ext field if asked. */
static int admin_simple(cli_client *c, const char *addr, rmt_cmd *req, const char *field,
                        int64_t *out, char **body, char *errmsg, size_t errlen)
{
    rmt_cmd *resp = NULL;
    int rc = cli_admin_invoke(c, addr, req, body, &resp, errmsg, errlen);
    rmt_cmd_destroy(req);
    if (rc == 0 && field && out && rmt_cmd_ext_int(resp, field, out)) {
        snprintf(errmsg, errlen, "answer lacks the numeric field '%s'", field);
        rc = -EBADMSG;
        if (body) {
            free(*body);
            *body = NULL;
        }
    }
    rmt_cmd_free(resp);
    return rc;
}

int cli_admin_create_topic(cli_client *c, const char *broker_addr, const struct cli_topic_conf *t,
                           char *errmsg, size_t errlen)
{
    rmt_cmd req;
    cli_cmd_init(c, &req, RMT_REQ_UPDATE_AND_CREATE_TOPIC);
    rmt_cmd_set_ext(&req, "topic", t->topic);
    rmt_cmd_set_ext(&req, "defaultTopic", "TBW102");
    rmt_cmd_set_ext_int(&req, "readQueueNums", t->read_queues > 0 ? t->read_queues : 8);
    rmt_cmd_set_ext_int(&req, "writeQueueNums", t->write_queues > 0 ? t->write_queues : 8);
    rmt_cmd_set_ext_int(&req, "perm", t->perm > 0 ? t->perm : CLI_PERM_READ | CLI_PERM_WRITE);
    rmt_cmd_set_ext(&req, "topicFilterType", "SINGLE_TAG");
    rmt_cmd_set_ext_int(&req, "topicSysFlag", t->sys_flag);
    rmt_cmd_set_ext(&req, "order", t->order ? "true" : "false");
    return admin_simple(c, broker_addr, &req, NULL, NULL, NULL, errmsg, errlen);
}

int cli_admin_delete_topic_broker(cli_client *c, const char *broker_addr, const char *topic,
                                  char *errmsg, size_t errlen)
{
    rmt_cmd req;
    cli_cmd_init(c, &req, RMT_REQ_DELETE_TOPIC_IN_BROKER);
    rmt_cmd_set_ext(&req, "topic", topic);
    return admin_simple(c, broker_addr, &req, NULL, NULL, NULL, errmsg, errlen);
}

int cli_admin_delete_topic_namesrv(cli_client *c, const char *topic, char *errmsg, size_t errlen)
{
    int worst = 0;
    for (int i = 0; i < c->nns; i++) {
        rmt_cmd req;
        cli_cmd_init(c, &req, RMT_REQ_DELETE_TOPIC_IN_NAMESRV);
        rmt_cmd_set_ext(&req, "topic", topic);
        int rc = admin_simple(c, c->ns[i], &req, NULL, NULL, NULL, errmsg, errlen);
        if (rc)
            worst = rc;
    }
    return worst;
}

int cli_admin_cluster_info(cli_client *c, char **body, char *errmsg, size_t errlen)
{
    rmt_cmd req;
    cli_cmd_init(c, &req, RMT_REQ_GET_BROKER_CLUSTER_INFO);
    return admin_simple(c, NULL, &req, NULL, NULL, body, errmsg, errlen);
}

int cli_admin_topic_list(cli_client *c, char **body, char *errmsg, size_t errlen)
{
    rmt_cmd req;
    cli_cmd_init(c, &req, RMT_REQ_GET_ALL_TOPIC_LIST_FROM_NAMESERVER);
    return admin_simple(c, NULL, &req, NULL, NULL, body, errmsg, errlen);
}

static int offset_query(cli_client *c, int code, const char *addr, const char *topic, int qid,
                        const char *k, int64_t v, int64_t *out, char *errmsg, size_t errlen)
{
    rmt_cmd req;
    cli_cmd_init(c, &req, code);
    rmt_cmd_set_ext(&req, "topic", topic);
    rmt_cmd_set_ext_int(&req, "queueId", qid);
    if (k)
        rmt_cmd_set_ext_int(&req, k, v);
    return admin_simple(c, addr, &req, "offset", out, NULL, errmsg, errlen);
}

int cli_admin_max_offset(cli_client *c, const char *broker_addr, const char *topic, int queue_id,
                         int64_t *out, char *errmsg, size_t errlen)
{
    return offset_query(c, RMT_REQ_GET_MAX_OFFSET, broker_addr, topic, queue_id, NULL, 0, out,
                        errmsg, errlen);
}

int cli_admin_min_offset(cli_client *c, const char *broker_addr, const char *topic, int queue_id,
                         int64_t *out, char *errmsg, size_t errlen)
{
    return offset_query(c, RMT_REQ_GET_MIN_OFFSET, broker_addr, topic, queue_id, NULL, 0, out,
                        errmsg, errlen);
}

int cli_admin_search_offset(cli_client *c, const char *broker_addr, const char *topic, int queue_id,
                            int64_t timestamp_ms, int64_t *out, char *errmsg, size_t errlen)
{
    return offset_query(c, RMT_REQ_SEARCH_OFFSET_BY_TIMESTAMP, broker_addr, topic, queue_id,
                        "timestamp", timestamp_ms, out, errmsg, errlen);
}

int cli_admin_query_by_key(cli_client *c, const char *broker_addr, const char *topic,
                           const char *key, int max_num, int64_t begin_ms, int64_t end_ms,
                           rmt_cmd **resp, char *errmsg, size_t errlen)
{
    rmt_cmd req;
    cli_cmd_init(c, &req, RMT_REQ_QUERY_MESSAGE);
    rmt_cmd_set_ext(&req, "topic", topic);
    rmt_cmd_set_ext(&req, "key", key);
    rmt_cmd_set_ext_int(&req, "maxNum", max_num > 0 ? max_num : 32);
    rmt_cmd_set_ext_int(&req, "beginTimestamp", begin_ms);
    rmt_cmd_set_ext_int(&req, "endTimestamp", end_ms);
    int rc = cli_admin_invoke(c, broker_addr, &req, NULL, resp, errmsg, errlen);
    rmt_cmd_destroy(&req);
    return rc;
}

int cli_admin_view_by_offset(cli_client *c, const char *broker_addr, int64_t phys_offset,
                             rmt_cmd **resp, char *errmsg, size_t errlen)
{
    rmt_cmd req;
    cli_cmd_init(c, &req, RMT_REQ_VIEW_MESSAGE_BY_ID);
    rmt_cmd_set_ext_int(&req, "offset", phys_offset);
    int rc = cli_admin_invoke(c, broker_addr, &req, NULL, resp, errmsg, errlen);
    rmt_cmd_destroy(&req);
    return rc;
}

int cli_admin_consumer_offset(cli_client *c, const char *broker_addr, const char *group,
                              const char *topic, int queue_id, int64_t *out, char *errmsg,
                              size_t errlen)
{
    rmt_cmd req;
    cli_cmd_init(c, &req, RMT_REQ_QUERY_CONSUMER_OFFSET);
    rmt_cmd_set_ext(&req, "consumerGroup", group);
    rmt_cmd_set_ext(&req, "topic", topic);
    rmt_cmd_set_ext_int(&req, "queueId", queue_id);
    int rc = admin_simple(c, broker_addr, &req, "offset", out, NULL, errmsg, errlen);
    if (rc == RMT_RESP_QUERY_NOT_FOUND) {
        *out = -1;
        return 0;
    }
    return rc;
}

int cli_admin_consume_stats(cli_client *c, const char *broker_addr, const char *group,
                            const char *topic, char **body, char *errmsg, size_t errlen)
{
    rmt_cmd req;
    cli_cmd_init(c, &req, RMT_REQ_GET_CONSUME_STATS);
    rmt_cmd_set_ext(&req, "consumerGroup", group);
    if (topic)
        rmt_cmd_set_ext(&req, "topic", topic);
    return admin_simple(c, broker_addr, &req, NULL, NULL, body, errmsg, errlen);
}

int cli_admin_write_perm(cli_client *c, const char *broker_name, bool wipe, int *count,
                         char *errmsg, size_t errlen)
{
    int worst = 0;
    for (int i = 0; i < c->nns; i++) {
        rmt_cmd req;
        int64_t n = 0;
        cli_cmd_init(c, &req, wipe ? RMT_REQ_WIPE_WRITE_PERM_OF_BROKER : RMT_REQ_ADD_WRITE_PERM_OF_BROKER);
        rmt_cmd_set_ext(&req, "brokerName", broker_name);
        int rc = admin_simple(c, c->ns[i], &req, wipe ? "wipeTopicCount" : "addTopicCount", &n, NULL,
                              errmsg, errlen);
        if (rc)
            worst = rc;
        else if (count)
            *count = (int)n;
    }
    return worst;
}

int cli_admin_create_group(cli_client *c, const char *broker_addr, const char *group,
                           int retry_queues, int max_retry, char *errmsg, size_t errlen)
{
    struct buf b = BUF_INIT;
    int rc = buf_printf(&b, "{\"groupName\":");
    if (!rc)
        rc = json_buf_str(&b, group);
    if (!rc)
        rc = buf_printf(&b,
                        ",\"consumeEnable\":true,\"consumeFromMinEnable\":true,"
                        "\"consumeBroadcastEnable\":true,\"retryQueueNums\":%d,\"retryMaxTimes\":%d,"
                        "\"brokerId\":0,\"whichBrokerWhenConsumeSlowly\":1,"
                        "\"notifyConsumerIdsChangedEnable\":true}",
                        retry_queues >= 0 ? retry_queues : 1, max_retry >= 0 ? max_retry : 16);
    if (rc) {
        buf_free(&b);
        snprintf(errmsg, errlen, "out of memory");
        return rc;
    }
    rmt_cmd req;
    cli_cmd_init(c, &req, RMT_REQ_UPDATE_AND_CREATE_SUBSCRIPTIONGROUP);
    rmt_cmd_set_body(&req, b.data, (uint32_t)b.len);
    rc = admin_simple(c, broker_addr, &req, NULL, NULL, NULL, errmsg, errlen);
    buf_free(&b);
    return rc;
}

int cli_admin_delete_group(cli_client *c, const char *broker_addr, const char *group,
                           char *errmsg, size_t errlen)
{
    rmt_cmd req;
    cli_cmd_init(c, &req, RMT_REQ_DELETE_SUBSCRIPTIONGROUP);
    rmt_cmd_set_ext(&req, "groupName", group);
    return admin_simple(c, broker_addr, &req, NULL, NULL, NULL, errmsg, errlen);
}

int cli_admin_broker_runtime(cli_client *c, const char *broker_addr, char **body, char *errmsg,
                             size_t errlen)
{
    rmt_cmd req;
    cli_cmd_init(c, &req, RMT_REQ_GET_BROKER_RUNTIME_INFO);
    return admin_simple(c, broker_addr, &req, NULL, NULL, body, errmsg, errlen);
}
