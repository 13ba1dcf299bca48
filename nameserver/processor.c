/*
 * Nameserver request handling. Every request is answered from the in-memory
 * route table within the event loop; nothing here blocks. Request codes and
 * extFields names are RocketMQ's, so its brokers, clients and mqadmin work
 * against this nameserver unchanged. KV config (RocketMQ's namespace/key/value
 * store, used by clients for ORDER_TOPIC_CONFIG) is kept in memory only, like
 * the rest of the nameserver's state.
 */
#include "processor.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"

struct kv_item {
    char *ns, *key, *val;
    struct kv_item *next;
};

struct ns_proc {
    struct ns_route_table *rt;
    const acl *admin;
    struct kv_item *kv;
    struct buf body;      /* response body scratch, reused */
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

struct ns_proc *ns_proc_create(struct ns_route_table *rt, const acl *admin)
{
    struct ns_proc *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->rt = rt;
    p->admin = admin;
    return p;
}

void ns_proc_free(struct ns_proc *p)
{
    if (!p)
        return;
    while (p->kv) {
        struct kv_item *k = p->kv;
        p->kv = k->next;
        free(k->ns);
        free(k->key);
        free(k->val);
        free(k);
    }
    buf_free(&p->body);
    free(p);
}

/* Looks up a required extFields value, answering the request with an error
 * naming the field when it is missing. */
static const char *need(rmt_conn *c, rmt_cmd *req, const char *field)
{
    const char *v = rmt_cmd_ext(req, field);
    if (!v || !*v) {
        rmt_conn_respond_error(c, req, RMT_RESP_INVALID_PARAMETER,
                               "request code %d: the header field '%s' is missing", req->code, field);
        return NULL;
    }
    return v;
}

static void respond_body(struct ns_proc *p, rmt_conn *c, rmt_cmd *req, int32_t code)
{
    rmt_cmd resp;
    rmt_cmd_init(&resp, code);
    rmt_cmd_set_body(&resp, p->body.data, (uint32_t)p->body.len);
    rmt_conn_respond(c, req, &resp);
    rmt_cmd_destroy(&resp);
}

static void respond_ok(rmt_conn *c, rmt_cmd *req)
{
    rmt_cmd resp;
    rmt_cmd_init(&resp, RMT_RESP_SUCCESS);
    rmt_conn_respond(c, req, &resp);
    rmt_cmd_destroy(&resp);
}

static bool admin_allowed(struct ns_proc *p, rmt_conn *c, rmt_cmd *req)
{
    if (acl_allows(p->admin, rmt_conn_peer(c)))
        return true;
    log_warn("nameserver: refused admin request %d from %s (not on adminAllowList)", req->code,
             rmt_conn_peer(c));
    rmt_conn_respond_error(c, req, RMT_RESP_NO_PERMISSION,
                           "admin request %d refused: %s is not on the nameserver's adminAllowList",
                           req->code, rmt_conn_peer(c));
    return false;
}

static void on_register(struct ns_proc *p, rmt_conn *c, rmt_cmd *req)
{
    const char *name = need(c, req, "brokerName");
    const char *addr = name ? need(c, req, "brokerAddr") : NULL;
    const char *cluster = addr ? need(c, req, "clusterName") : NULL;
    if (!cluster)
        return;
    int64_t id;
    if (rmt_cmd_ext_int(req, "brokerId", &id)) {
        rmt_conn_respond_error(c, req, RMT_RESP_INVALID_PARAMETER,
                               "REGISTER_BROKER: brokerId is missing or not a number");
        return;
    }
    if (rmt_cmd_ext_bool(req, "compressed", false)) {
        rmt_conn_respond_error(c, req, RMT_RESP_INVALID_PARAMETER,
                               "REGISTER_BROKER: compressed register bodies are not supported; "
                               "set compressedRegister=false on the broker");
        return;
    }
    struct ns_register_result res;
    char err[256] = "";
    int rc = ns_register_broker(p->rt, cluster, name, addr, id, rmt_cmd_ext(req, "haServerAddr"),
                                (const char *)req->body, req->body_len,
                                (uint64_t)(uintptr_t)c, now_ms(), &res, err, sizeof err);
    if (rc) {
        log_warn("nameserver: registration of %s (%s/%s id %lld) from %s refused: %s", addr,
                 cluster, name, (long long)id, rmt_conn_peer(c), err);
        rmt_conn_respond_error(c, req, rc == -ENOMEM ? RMT_RESP_SYSTEM_ERROR : RMT_RESP_INVALID_PARAMETER,
                               "REGISTER_BROKER refused: %s", err);
        return;
    }
    if (res.first_registration)
        log_info("nameserver: broker %s registered (cluster %s, name %s, id %lld, %d topics updated)",
                 addr, cluster, name, (long long)id, res.topics_updated);
    rmt_cmd resp;
    rmt_cmd_init(&resp, RMT_RESP_SUCCESS);
    if (res.ha_server_addr[0])
        rmt_cmd_set_ext(&resp, "haServerAddr", res.ha_server_addr);
    if (res.master_addr[0])
        rmt_cmd_set_ext(&resp, "masterAddr", res.master_addr);
    rmt_conn_respond(c, req, &resp);
    rmt_cmd_destroy(&resp);
}

static void on_unregister(struct ns_proc *p, rmt_conn *c, rmt_cmd *req)
{
    const char *name = need(c, req, "brokerName");
    const char *addr = name ? need(c, req, "brokerAddr") : NULL;
    if (!addr)
        return;
    int64_t id = 0;
    rmt_cmd_ext_int_or(req, "brokerId", 0, &id);
    const char *cluster = rmt_cmd_ext(req, "clusterName");
    if (ns_unregister_broker(p->rt, cluster ? cluster : "", addr, name, id) == 0)
        log_info("nameserver: broker %s (%s id %lld) unregistered", addr, name, (long long)id);
    respond_ok(c, req);
}

static void on_route(struct ns_proc *p, rmt_conn *c, rmt_cmd *req)
{
    const char *topic = need(c, req, "topic");
    if (!topic)
        return;
    buf_reset(&p->body);
    int rc = ns_route_json(p->rt, topic, &p->body);
    if (rc == -ENOENT) {
        rmt_conn_respond_error(c, req, RMT_RESP_TOPIC_NOT_EXIST,
                               "No topic route info in name server for the topic: %s", topic);
        return;
    }
    if (rc) {
        rmt_conn_respond_error(c, req, RMT_RESP_SYSTEM_ERROR, "out of memory building the route");
        return;
    }
    respond_body(p, c, req, RMT_RESP_SUCCESS);
}

/* Answers with a JSON body produced by fn, or SYSTEM_ERROR. */
static void answer_json(struct ns_proc *p, rmt_conn *c, rmt_cmd *req,
                        int (*fn)(const struct ns_route_table *, struct buf *))
{
    buf_reset(&p->body);
    if (fn(p->rt, &p->body)) {
        rmt_conn_respond_error(c, req, RMT_RESP_SYSTEM_ERROR, "out of memory");
        return;
    }
    respond_body(p, c, req, RMT_RESP_SUCCESS);
}

static void on_topics_by_cluster(struct ns_proc *p, rmt_conn *c, rmt_cmd *req)
{
    const char *cluster = need(c, req, "cluster");
    if (!cluster)
        return;
    buf_reset(&p->body);
    int rc = ns_topics_by_cluster_json(p->rt, cluster, &p->body);
    if (rc == -ENOENT) {
        rmt_conn_respond_error(c, req, RMT_RESP_SYSTEM_ERROR, "cluster %s is not registered", cluster);
        return;
    }
    if (rc) {
        rmt_conn_respond_error(c, req, RMT_RESP_SYSTEM_ERROR, "out of memory");
        return;
    }
    respond_body(p, c, req, RMT_RESP_SUCCESS);
}

static void on_delete_topic(struct ns_proc *p, rmt_conn *c, rmt_cmd *req)
{
    if (!admin_allowed(p, c, req))
        return;
    const char *topic = need(c, req, "topic");
    if (!topic)
        return;
    const char *cluster = rmt_cmd_ext(req, "clusterName");
    int rc = ns_delete_topic(p->rt, topic, cluster && *cluster ? cluster : NULL);
    log_info("nameserver: topic %s %s by %s", topic, rc == 0 ? "deleted" : "was not registered",
             rmt_conn_peer(c));
    respond_ok(c, req);
}

static void on_perm(struct ns_proc *p, rmt_conn *c, rmt_cmd *req, bool wipe)
{
    if (!admin_allowed(p, c, req))
        return;
    const char *name = need(c, req, "brokerName");
    if (!name)
        return;
    int n = wipe ? ns_wipe_write_perm(p->rt, name) : ns_add_write_perm(p->rt, name);
    log_info("nameserver: %s write perm of broker %s on %d topics (by %s)", wipe ? "wiped" : "added",
             name, n, rmt_conn_peer(c));
    rmt_cmd resp;
    rmt_cmd_init(&resp, RMT_RESP_SUCCESS);
    rmt_cmd_set_ext_int(&resp, wipe ? "wipeTopicCount" : "addTopicCount", n);
    rmt_conn_respond(c, req, &resp);
    rmt_cmd_destroy(&resp);
}

static void on_query_data_version(struct ns_proc *p, rmt_conn *c, rmt_cmd *req)
{
    const char *addr = need(c, req, "brokerAddr");
    if (!addr)
        return;
    struct ns_data_version theirs = { 0 }, ours = { 0 };
    char err[160];
    if (ns_parse_data_version((const char *)req->body, req->body_len, &theirs, err, sizeof err)) {
        rmt_conn_respond_error(c, req, RMT_RESP_INVALID_PARAMETER,
                               "QUERY_DATA_VERSION: bad DataVersion body: %s", err);
        return;
    }
    bool changed = true;
    if (ns_broker_data_version(p->rt, addr, &ours) == 0) {
        changed = ours.counter != theirs.counter || ours.timestamp != theirs.timestamp ||
                  ours.state_version != theirs.state_version;
        ns_touch_broker(p->rt, addr, now_ms());
    }
    buf_reset(&p->body);
    if (ns_data_version_json(&ours, &p->body)) {
        rmt_conn_respond_error(c, req, RMT_RESP_SYSTEM_ERROR, "out of memory");
        return;
    }
    rmt_cmd resp;
    rmt_cmd_init(&resp, RMT_RESP_SUCCESS);
    rmt_cmd_set_ext(&resp, "changed", changed ? "true" : "false");
    rmt_cmd_set_body(&resp, p->body.data, (uint32_t)p->body.len);
    rmt_conn_respond(c, req, &resp);
    rmt_cmd_destroy(&resp);
}

static struct kv_item **kv_find(struct ns_proc *p, const char *ns, const char *key)
{
    struct kv_item **pp = &p->kv;
    while (*pp && (strcmp((*pp)->ns, ns) || strcmp((*pp)->key, key)))
        pp = &(*pp)->next;
    return pp;
}

static void on_kv(struct ns_proc *p, rmt_conn *c, rmt_cmd *req)
{
    const char *ns = need(c, req, "namespace");
    if (!ns)
        return;
    if (req->code == RMT_REQ_GET_KVLIST_BY_NAMESPACE) {
        buf_reset(&p->body);
        int n = 0, rc = buf_printf(&p->body, "{\"table\":{");
        for (struct kv_item *k = p->kv; k && !rc; k = k->next) {
            if (strcmp(k->ns, ns))
                continue;
            /* keys and values were checked to need no escaping when stored */
            rc = buf_printf(&p->body, "%s\"%s\":\"%s\"", n++ ? "," : "", k->key, k->val);
        }
        if (!rc)
            rc = buf_printf(&p->body, "}}");
        if (rc) {
            rmt_conn_respond_error(c, req, RMT_RESP_SYSTEM_ERROR, "out of memory");
        } else if (n == 0) {
            rmt_conn_respond_error(c, req, RMT_RESP_QUERY_NOT_FOUND,
                                   "No config item, Namespace: %s", ns);
        } else {
            respond_body(p, c, req, RMT_RESP_SUCCESS);
        }
        return;
    }
    const char *key = need(c, req, "key");
    if (!key)
        return;
    struct kv_item **slot = kv_find(p, ns, key);
    if (req->code == RMT_REQ_GET_KV_CONFIG) {
        if (!*slot) {
            rmt_conn_respond_error(c, req, RMT_RESP_QUERY_NOT_FOUND,
                                   "No config item, Namespace: %s Key: %s", ns, key);
            return;
        }
        rmt_cmd resp;
        rmt_cmd_init(&resp, RMT_RESP_SUCCESS);
        rmt_cmd_set_ext(&resp, "value", (*slot)->val);
        rmt_conn_respond(c, req, &resp);
        rmt_cmd_destroy(&resp);
        return;
    }
    if (!admin_allowed(p, c, req))
        return;
    if (req->code == RMT_REQ_DELETE_KV_CONFIG) {
        struct kv_item *k = *slot;
        if (k) {
            *slot = k->next;
            free(k->ns);
            free(k->key);
            free(k->val);
            free(k);
        }
        respond_ok(c, req);
        return;
    }
    const char *val = need(c, req, "value");
    if (!val)
        return;
    for (const char *s = ns; *s; s++)
        if (*s == '"' || *s == '\\' || (unsigned char)*s < 0x20)
            goto bad;
    for (const char *s = key; *s; s++)
        if (*s == '"' || *s == '\\' || (unsigned char)*s < 0x20)
            goto bad;
    for (const char *s = val; *s; s++)
        if (*s == '"' || *s == '\\' || (unsigned char)*s < 0x20)
            goto bad;
    char *nv = strdup(val);
    if (!nv)
        goto oom;
    if (*slot) {
        free((*slot)->val);
        (*slot)->val = nv;
    } else {
        struct kv_item *k = calloc(1, sizeof *k);
        if (!k || !(k->ns = strdup(ns)) || !(k->key = strdup(key))) {
            if (k) {
                free(k->ns);
                free(k);
            }
            free(nv);
            goto oom;
        }
        k->val = nv;
        k->next = p->kv;
        p->kv = k;
    }
    respond_ok(c, req);
    return;
bad:
    rmt_conn_respond_error(c, req, RMT_RESP_INVALID_PARAMETER,
                           "PUT_KV_CONFIG: quotes, backslashes and control characters are not allowed");
    return;
oom:
    rmt_conn_respond_error(c, req, RMT_RESP_SYSTEM_ERROR, "out of memory");
}

void ns_proc_on_request(rmt_conn *c, rmt_cmd *req, void *ud)
{
    struct ns_proc *p = ud;
    switch (req->code) {
    case RMT_REQ_REGISTER_BROKER:
        on_register(p, c, req);
        break;
    case RMT_REQ_UNREGISTER_BROKER:
        on_unregister(p, c, req);
        break;
    case RMT_REQ_GET_ROUTEINFO_BY_TOPIC:
        on_route(p, c, req);
        break;
    case RMT_REQ_GET_BROKER_CLUSTER_INFO:
        answer_json(p, c, req, ns_cluster_info_json);
        break;
    case RMT_REQ_GET_ALL_TOPIC_LIST_FROM_NAMESERVER:
        answer_json(p, c, req, ns_topic_list_json);
        break;
    case RMT_REQ_GET_SYSTEM_TOPIC_LIST_FROM_NS:
        answer_json(p, c, req, ns_system_topic_list_json);
        break;
    case RMT_REQ_GET_TOPICS_BY_CLUSTER:
        on_topics_by_cluster(p, c, req);
        break;
    case RMT_REQ_DELETE_TOPIC_IN_NAMESRV:
        on_delete_topic(p, c, req);
        break;
    case RMT_REQ_WIPE_WRITE_PERM_OF_BROKER:
        on_perm(p, c, req, true);
        break;
    case RMT_REQ_ADD_WRITE_PERM_OF_BROKER:
        on_perm(p, c, req, false);
        break;
    case RMT_REQ_QUERY_DATA_VERSION:
        on_query_data_version(p, c, req);
        break;
    case RMT_REQ_PUT_KV_CONFIG:
    case RMT_REQ_GET_KV_CONFIG:
    case RMT_REQ_DELETE_KV_CONFIG:
    case RMT_REQ_GET_KVLIST_BY_NAMESPACE:
        on_kv(p, c, req);
        break;
    case RMT_REQ_UPDATE_NAMESRV_CONFIG:
        rmt_conn_respond_error(c, req, RMT_RESP_NO_PERMISSION,
                               "UPDATE_NAMESRV_CONFIG is refused: the nameserver's configuration "
                               "is read from its config file at start only");
        break;
    default:
        log_debug("nameserver: unsupported request code %d from %s", req->code, rmt_conn_peer(c));
        rmt_conn_respond_error(c, req, RMT_RESP_REQUEST_CODE_NOT_SUPPORTED,
                               "request code %d not supported by this nameserver", req->code);
    }
}

void ns_proc_on_close(rmt_conn *c, void *ud)
{
    struct ns_proc *p = ud;
    int n = ns_evict_conn(p->rt, (uint64_t)(uintptr_t)c);
    if (n > 0)
        log_info("nameserver: connection %s closed; evicted %d broker(s) registered over it",
                 rmt_conn_peer(c), n);
}
