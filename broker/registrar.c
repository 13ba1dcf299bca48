/*
 * Nameserver registration (RocketMQ BrokerOuterAPI.registerBrokerAll): one
 * REGISTER_BROKER per nameserver, in parallel, on the broker's own loop.
 * A registration that is still in flight when the next one is due is not
 * duplicated; a change requested meanwhile is sent once it completes.
 *
 * HA: the broker advertises haServerAddr (brokerIP1:haListenPort). A slave
 * learns its master from the answers: masterAddr (remoting, for the
 * metadata sync) and, unless haMasterAddress is configured, haServerAddr
 * (the replication address) for ha_slave_set_master.
 */
#include "registrar.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "broker.h"
#include "ha.h"
#include "ha_sync.h"
#include "log.h"

#define REG_MAX_NS 16

struct reg_ns {
    struct reg *r;
    char addr[128];
    bool busy;
    bool again;
    bool registered;
};

struct reg {
    struct broker *b;
    rmt_client *cl;
    struct reg_ns ns[REG_MAX_NS];
    int n;
    ev_timer periodic;
    ev_timer soon;
    int unreg_pending;
    unsigned long ok;
    struct buf body;
};

struct reg *reg_new(struct broker *b, char *err, size_t errlen)
{
    struct reg *r = calloc(1, sizeof *r);
    if (!r) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    r->b = b;
    char list[sizeof b->cfg.namesrv];
    snprintf(list, sizeof list, "%s", b->cfg.namesrv);
    char *save = NULL;
    for (char *tok = strtok_r(list, ";,", &save); tok; tok = strtok_r(NULL, ";,", &save)) {
        while (*tok == ' ')
            tok++;
        if (!*tok)
            continue;
        char host[128];
        int port;
        if (rmt_parse_addr(tok, host, sizeof host, &port) || port <= 0) {
            snprintf(err, errlen, "namesrvAddr: '%s' is not host:port", tok);
            free(r);
            return NULL;
        }
        if (r->n == REG_MAX_NS) {
            snprintf(err, errlen, "namesrvAddr: more than %d nameservers", REG_MAX_NS);
            free(r);
            return NULL;
        }
        struct reg_ns *n = &r->ns[r->n++];
        n->r = r;
        snprintf(n->addr, sizeof n->addr, "%s", tok);
    }
    struct rmt_client_opts co = { .connect_timeout_ms = 3000, .reconnect_max_ms = 3000 };
    r->cl = rmt_client_new(b->loop, &co);
    if (!r->cl) {
        snprintf(err, errlen, "out of memory");
        free(r);
        return NULL;
    }
    return r;
}

void reg_free(struct reg *r)
{
    if (!r)
        return;
    ev_timer_stop(r->b->loop, &r->periodic);
    ev_timer_stop(r->b->loop, &r->soon);
    rmt_client_free(r->cl);
    buf_free(&r->body);
    free(r);
}

unsigned long reg_success_count(const struct reg *r) { return r->ok; }

int reg_topic_wrapper_json(struct broker *b, struct buf *out)
{
    struct buf tmp = BUF_INIT;
    int rc = meta_topics_encode_json(b->meta, &tmp);
    if (rc) {
        buf_free(&tmp);
        return rc;
    }
    /* Re-emit through jansson only when perms must be masked; otherwise the
     * metadata encoder's output is already RocketMQ's layout. */
    struct meta_data_version dv;
    meta_topics_version(b->meta, &dv);
    int64_t perm_mask = b->cfg.perm & (META_PERM_READ | META_PERM_WRITE);
    bool mask = perm_mask != (META_PERM_READ | META_PERM_WRITE) || b->cfg.role == BRK_SLAVE;
    if (b->cfg.role == BRK_SLAVE)
        perm_mask &= ~META_PERM_WRITE;
    json_error_t je;
    json_t *root = json_loadb((const char *)tmp.data, tmp.len, 0, &je);
    buf_free(&tmp);
    if (!root)
        return -EBADMSG;
    json_t *table = json_object_get(root, "topicConfigTable");
    if (mask && table) {
        const char *k;
        json_t *v;
        json_object_foreach(table, k, v) {
            json_t *p = json_object_get(v, "perm");
            int64_t pv = json_integer_value(p) & (perm_mask | META_PERM_INHERIT | META_PERM_PRIORITY);
            json_object_set_new(v, "perm", json_integer(pv));
        }
    }
    uint64_t ts = dv.timestamp;
    if ((uint64_t)b->topic_bump_ts > ts)
        ts = (uint64_t)b->topic_bump_ts;
    json_object_set_new(root, "dataVersion",
                        json_pack("{s:I,s:I}", "counter", (json_int_t)(dv.counter + b->topic_bumps),
                                  "timestamp", (json_int_t)ts));
    char *s = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    if (!s)
        return -ENOMEM;
    rc = buf_append(out, s, strlen(s));
    free(s);
    return rc;
}

static void send_one(struct reg_ns *n);

/* Slave: the master's addresses from a REGISTER_BROKER answer. An answer
 * without them (no master registered right now) changes nothing: the HA
 * connection keeps retrying the last master. */
static void learn_master(struct reg *r, const rmt_cmd *resp)
{
    struct broker *b = r->b;
    const char *master = rmt_cmd_ext(resp, "masterAddr");
    const char *ha = rmt_cmd_ext(resp, "haServerAddr");
    if (master && *master)
        hs_set_master(b->hs, master);
    if (!b->cfg.ha_master_addr[0] && ha && *ha && b->ha) {
        struct ha_slave_status st;
        if (ha_slave_status(b->ha, &st) == 0 && strcmp(st.master_addr, ha) != 0)
            log_info("HA: replicating from %s (haServerAddr from the nameserver)", ha);
        if (ha_slave_set_master(b->ha, ha))
            log_warn("HA: the nameserver reported haServerAddr '%s', which is not ip:port", ha);
    }
}

static void on_registered(int status, rmt_cmd *resp, void *ud)
{
    struct reg_ns *n = ud;
    struct reg *r = n->r;
    n->busy = false;
    if (status) {
        log_warn("registration with nameserver %s failed: %s", n->addr, strerror(-status));
    } else if (resp->code != RMT_RESP_SUCCESS) {
        log_warn("nameserver %s refused the registration: code %d %s", n->addr, resp->code,
                 rmt_cmd_remark(resp) ? rmt_cmd_remark(resp) : "");
    } else {
        if (!n->registered)
            log_info("registered with nameserver %s as %s (%s/%s id %lld)", n->addr, r->b->addr,
                     r->b->cfg.cluster, r->b->cfg.name, (long long)r->b->cfg.broker_id);
        n->registered = true;
        r->ok++;
        if (r->b->cfg.role == BRK_SLAVE)
            learn_master(r, resp);
    }
    if (n->again && !r->b->stopping) {
        n->again = false;
        send_one(n);
    }
}

static void send_one(struct reg_ns *n)
{
    struct reg *r = n->r;
    struct broker *b = r->b;
    if (n->busy) {
        n->again = true;
        return;
    }
    buf_reset(&r->body);
    int rc = buf_append(&r->body, "{\"topicConfigSerializeWrapper\":", 31);
    if (!rc)
        rc = reg_topic_wrapper_json(b, &r->body);
    if (!rc)
        rc = buf_append(&r->body, ",\"filterServerList\":[]}", 23);
    if (rc) {
        log_error("cannot build the registration body: %s", strerror(-rc));
        return;
    }
    rmt_cmd req;
    rmt_cmd_init(&req, RMT_REQ_REGISTER_BROKER);
    char ha[160];
    int ha_port = b->ha_port ? b->ha_port
                             : (b->cfg.ha_listen_port > 0 ? (int)b->cfg.ha_listen_port : b->port + 1);
    snprintf(ha, sizeof ha, "%s:%d", b->cfg.ip1, ha_port);
    rmt_cmd_set_ext(&req, "brokerAddr", b->addr);
    rmt_cmd_set_ext(&req, "brokerName", b->cfg.name);
    rmt_cmd_set_ext_int(&req, "brokerId", b->cfg.broker_id);
    rmt_cmd_set_ext(&req, "clusterName", b->cfg.cluster);
    rmt_cmd_set_ext(&req, "haServerAddr", ha);
    rmt_cmd_set_ext(&req, "compressed", "false");
    /* UtilAll.crc32: CRC-32 masked to 31 bits, checked by 4.9 nameservers. */
    rmt_cmd_set_ext_int(&req, "bodyCrc32", msg_body_crc(r->body.data, r->body.len));
    rmt_cmd_set_body(&req, r->body.data, (uint32_t)r->body.len);
    rc = rmt_client_invoke(r->cl, n->addr, &req, (int)b->cfg.register_timeout, on_registered, n);
    rmt_cmd_destroy(&req);
    if (rc)
        log_warn("cannot send the registration to %s: %s", n->addr, strerror(-rc));
    else
        n->busy = true;
}

static void register_all(struct reg *r)
{
    for (int i = 0; i < r->n; i++)
        send_one(&r->ns[i]);
}

static void on_periodic(struct ev_loop *loop, ev_timer *w, int revents)
{
    register_all(w->data);
}

static void on_soon(struct ev_loop *loop, ev_timer *w, int revents)
{
    register_all(w->data);
}

void reg_start(struct reg *r)
{
    double p = (double)r->b->cfg.register_period / 1000.0;
    ev_timer_init(&r->periodic, on_periodic, p, p);
    r->periodic.data = r;
    ev_timer_start(r->b->loop, &r->periodic);
    ev_timer_init(&r->soon, on_soon, 0.0, 0.0);
    r->soon.data = r;
    register_all(r);
}

void reg_soon(struct reg *r)
{
    if (!r || r->b->stopping || !r->soon.data || ev_is_active(&r->soon))
        return;
    ev_timer_set(&r->soon, 0.0, 0.0);
    ev_timer_start(r->b->loop, &r->soon);
}

static void on_unregistered(int status, rmt_cmd *resp, void *ud)
{
    struct reg_ns *n = ud;
    n->r->unreg_pending--;
    if (status)
        log_warn("unregistering from nameserver %s failed: %s", n->addr, strerror(-status));
    else
        log_info("unregistered from nameserver %s", n->addr);
}

static void on_unreg_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
    ev_break(loop, EVBREAK_ONE);
}

void reg_unregister_all(struct reg *r, int timeout_ms)
{
    struct broker *b = r->b;
    ev_timer_stop(b->loop, &r->periodic);
    ev_timer_stop(b->loop, &r->soon);
    for (int i = 0; i < r->n; i++) {
        rmt_cmd req;
        rmt_cmd_init(&req, RMT_REQ_UNREGISTER_BROKER);
        rmt_cmd_set_ext(&req, "brokerAddr", b->addr);
        rmt_cmd_set_ext(&req, "brokerName", b->cfg.name);
        rmt_cmd_set_ext_int(&req, "brokerId", b->cfg.broker_id);
        rmt_cmd_set_ext(&req, "clusterName", b->cfg.cluster);
        if (rmt_client_invoke(r->cl, r->ns[i].addr, &req, timeout_ms, on_unregistered, &r->ns[i]) == 0)
            r->unreg_pending++;
        rmt_cmd_destroy(&req);
    }
    ev_timer t;
    ev_timer_init(&t, on_unreg_timeout, timeout_ms / 1000.0, 0.0);
    ev_timer_start(b->loop, &t);
    while (r->unreg_pending > 0 && ev_is_active(&t))
        ev_run(b->loop, EVRUN_ONCE);
    ev_timer_stop(b->loop, &t);
}
