/*
 * rmqbench transport over the RocketMQ remoting protocol (see
 * bench_transport.h): a cli_client per handle, with the client library's
 * producer and managed pull consumer.
 *
 * Timer messages carry TIMER_DELIVER_MS; the property string is formatted
 * on the stack of the send call, since the producer copies properties into
 * its own send context before returning (no allocation per message). On
 * receipt the due time is TIMER_OUT_MS, which the broker writes when it
 * accepts a timer message, or TIMER_DELIVER_MS when that is absent.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_transport.h"
#include "consumer.h"
#include "message.h"
#include "producer.h"

/* Room for "TIMER_DELIVER_MS\1<int64>\2". */
#define TIMER_PROPS_CAP 48

struct rp {
    cli_client *c;
    cli_producer *p;
};

struct rc {
    cli_client *c;
    cli_consumer *cs;
    bt_recv_fn on_recv;
    void *ud;
    struct bt_recv *tmp;
    int tmp_cap;
};

/* props: TIMER_PROPS_CAP bytes of the caller, used for a timer message. */
static int fill_msg(struct cli_message *out, const struct bt_msg *m, char *props)
{
    memset(out, 0, sizeof *out);
    out->topic = m->topic;
    out->body = m->body;
    out->body_len = m->body_len;
    out->tags = m->tags;
    out->keys = m->keys;
    if (m->deliver_ms) {
        char v[24];
        int vl = snprintf(v, sizeof v, "%lld", (long long)m->deliver_ms);
        size_t len = 0;
        int rc = msg_prop_append(props, TIMER_PROPS_CAP, &len, MSG_PROP_TIMER_DELIVER_MS, v, (size_t)vl);
        if (rc)
            return rc;
        out->props = props;
        out->props_len = (uint32_t)len;
    }
    return 0;
}

static void *rp_new(struct ev_loop *loop, const struct bt_producer_opts *o, char *err, size_t errlen)
{
    struct rp *r = calloc(1, sizeof *r);
    if (!r) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    struct cli_opts co = { 0 };
    co.namesrv_addr = o->endpoints;
    co.timeout_ms = o->timeout_ms;
    int e = 0;
    r->c = cli_client_new(loop, &co, &e);
    if (!r->c) {
        snprintf(err, errlen, "bad nameserver list '%s' (%s)", o->endpoints, strerror(-e));
        free(r);
        return NULL;
    }
    struct cli_producer_opts po = { 0 };
    po.group = o->group;
    po.retry_times = 2;
    r->p = cli_producer_new(r->c, &po, &e);
    if (!r->p) {
        snprintf(err, errlen, "cannot create the producer: %s", strerror(-e));
        cli_client_free(r->c);
        free(r);
        return NULL;
    }
    return r;
}

static void rp_send_cb(const struct cli_send_result *res, void *ud)
{
    struct bt_slot *slot = ud;
    struct bt_result r = { res->err, res->code, res->errmsg };
    slot->cb(&r, slot->ud);
}

static int rp_send(void *h, const struct bt_msg *m, struct bt_slot *slot)
{
    struct rp *r = h;
    struct cli_message cm;
    char props[TIMER_PROPS_CAP];
    int rc = fill_msg(&cm, m, props);
    return rc ? rc : cli_send(r->p, &cm, rp_send_cb, slot);
}

static int rp_send_sync(void *h, const struct bt_msg *m, struct bt_result *out)
{
    struct rp *r = h;
    struct cli_message cm;
    char props[TIMER_PROPS_CAP];
    static __thread struct cli_send_result res;
    int rc = fill_msg(&cm, m, props);
    if (rc) {
        out->err = rc;
        out->code = -1;
        out->errmsg = "bad timer property";
        return rc;
    }
    rc = cli_send_sync(r->p, &cm, &res);
    out->err = res.err ? res.err : rc;
    out->code = res.code;
    out->errmsg = res.errmsg;
    return out->err;
}

static int rp_send_oneway(void *h, const struct bt_msg *m)
{
    struct rp *r = h;
    struct cli_message cm;
    char props[TIMER_PROPS_CAP];
    int rc = fill_msg(&cm, m, props);
    return rc ? rc : cli_send_oneway(r->p, &cm);
}

static int rp_barrier(void *h, const char *topic)
{
    struct rp *r = h;
    const struct cli_route *rt = cli_route_cached(r->c, topic);
    if (!rt)
        return 0;
    char addrs[64][CLI_ADDR_MAX];
    int n = 0;
    for (int i = 0; i < rt->nbrokers && n < 64; i++) {
        const char *a = cli_route_addr(rt, rt->brokers[i].name, CLI_MASTER_ID);
        if (a)
            snprintf(addrs[n++], CLI_ADDR_MAX, "%s", a);
    }
    int worst = 0;
    for (int i = 0; i < n; i++) {
        int64_t off;
        char err[256];
        int rc = cli_admin_max_offset(r->c, addrs[i], topic, 0, &off, err, sizeof err);
        if (rc)
            worst = rc;
    }
    return worst;
}

static void rp_free(void *h)
{
    struct rp *r = h;
    if (!r)
        return;
    cli_producer_free(r->p);
    cli_client_free(r->c);
    free(r);
}

/* Decimal ms value of a property; 0 when absent or not a positive number. */
static int64_t prop_ms(const struct cli_msg_view *m, const char *name)
{
    const char *v;
    size_t vl;
    if (!m->props || !msg_prop_get(m->props, m->props_len, name, &v, &vl) || vl == 0 || vl > 18)
        return 0;
    int64_t x = 0;
    for (size_t i = 0; i < vl; i++) {
        if (v[i] < '0' || v[i] > '9')
            return 0;
        x = x * 10 + (v[i] - '0');
    }
    return x;
}

static int64_t due_of(const struct cli_msg_view *m)
{
    int64_t d = prop_ms(m, MSG_PROP_TIMER_OUT_MS);
    return d ? d : prop_ms(m, MSG_PROP_TIMER_DELIVER_MS);
}

static int rc_on_messages(cli_consumer *cs, const struct cli_msg_view *msgs, int n, void *ud)
{
    (void)cs;
    struct rc *r = ud;
    if (n > r->tmp_cap) {
        struct bt_recv *t = realloc(r->tmp, (size_t)n * sizeof *t);
        if (!t)
            return 1;
        r->tmp = t;
        r->tmp_cap = n;
    }
    for (int i = 0; i < n; i++) {
        r->tmp[i].born_ts = msgs[i].born_ts;
        r->tmp[i].store_ts = msgs[i].store_ts;
        r->tmp[i].due_ms = due_of(&msgs[i]);
        r->tmp[i].body_len = msgs[i].body_len;
    }
    return r->on_recv(r->tmp, n, r->ud);
}

static void *rc_new(struct ev_loop *loop, const struct bt_consumer_opts *o, char *err, size_t errlen)
{
    struct rc *r = calloc(1, sizeof *r);
    if (!r) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    r->on_recv = o->on_recv;
    r->ud = o->ud;
    struct cli_opts co = { 0 };
    co.namesrv_addr = o->endpoints;
    int e = 0;
    r->c = cli_client_new(loop, &co, &e);
    if (!r->c) {
        snprintf(err, errlen, "bad nameserver list '%s' (%s)", o->endpoints, strerror(-e));
        free(r);
        return NULL;
    }
    struct cli_consumer_opts so = { 0 };
    so.group = o->group;
    so.topic = o->topic;
    so.model = CLI_CLUSTERING;
    so.from = o->from_first ? CLI_FROM_FIRST_OFFSET : CLI_FROM_LAST_OFFSET;
    so.batch_size = o->batch;
    so.suspend_ms = 1000;
    so.commit_ms = 1000;
    so.pull_retry_ms = 100;
    so.on_messages = rc_on_messages;
    so.ud = r;
    r->cs = cli_consumer_new(r->c, &so, &e);
    if (!r->cs) {
        snprintf(err, errlen, "cannot create the consumer: %s", strerror(-e));
        cli_client_free(r->c);
        free(r);
        return NULL;
    }
    return r;
}

static int rc_start(void *h)
{
    struct rc *r = h;
    return cli_consumer_start(r->cs);
}

static int rc_stop(void *h)
{
    struct rc *r = h;
    return cli_consumer_shutdown(r->cs, 3000);
}

static void rc_free(void *h)
{
    struct rc *r = h;
    if (!r)
        return;
    cli_consumer_free(r->cs);
    cli_client_free(r->c);
    free(r->tmp);
    free(r);
}

const struct bt_ops bt_remoting = {
    .name = "remoting",
    .producer_new = rp_new,
    .send = rp_send,
    .send_sync = rp_send_sync,
    .send_oneway = rp_send_oneway,
    .barrier = rp_barrier,
    .producer_free = rp_free,
    .consumer_new = rc_new,
    .consumer_start = rc_start,
    .consumer_stop = rc_stop,
    .consumer_free = rc_free,
};
