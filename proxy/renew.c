/*
 * Receipt-handle auto-renewal for push consumers (renew.h): the registry of
 * handles handed out with auto_renew, and the renewals, hand-overs and
 * clears that keep a message invisible exactly while its consumer works on
 * it.
 *
 * Everything runs on the proxy's loop. One timer is armed for the earliest
 * deadline; when it fires, due entries are renewed (at most MAX_INFLIGHT
 * requests at once; answers pull in the next due ones). An entry whose
 * renewal is in flight stays registered, so an ack arriving meanwhile waits
 * for the answer and then gets the check point the broker now holds.
 */
#include "renew.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "proxy.h"
#include "receipt.h"

#define SLAB_SHIFT 10
#define SLAB_SIZE (1u << SLAB_SHIFT)
#define OWNER_BUCKETS 4096u
#define OWNER_NAME_MAX 128

struct px_renew_owner {
    struct px_renew_owner *hnext;
    struct px_renew_reg *reg;
    struct px_renew_entry *first;
    uint32_t count;
    uint32_t chash;          /* hash of the client id alone: the bucket */
    bool gone;               /* client left; freed once empty */
    char client[OWNER_NAME_MAX];
    char group[OWNER_NAME_MAX];
    char topic[OWNER_NAME_MAX];
};

struct px_renew_reg {
    uint32_t max, count;
    uint32_t nbuckets;       /* power of two */
    struct px_renew_entry **buckets;
    struct px_renew_entry **slabs;
    uint32_t nslabs, maxslabs;
    struct px_renew_entry *free_list;
    struct px_renew_entry **heap;
    uint32_t heap_n, heap_cap;
    struct px_renew_owner *owners[OWNER_BUCKETS];
    void *user;
};

static uint32_t fnv(uint32_t h, const char *s)
{
    for (; *s; s++) {
        h ^= (uint8_t)*s;
        h *= 16777619u;
    }
    return h;
}

static uint32_t key_hash(const char *group, const char *topic, const char *handle)
{
    uint32_t h = fnv(2166136261u, group);
    h = (h ^ 0xffu) * 16777619u;
    h = fnv(h, topic);
    h = (h ^ 0xffu) * 16777619u;
    return fnv(h, handle);
}

struct px_renew_reg *px_renew_reg_new(uint32_t max_entries)
{
    if (max_entries == 0)
        max_entries = 1;
    struct px_renew_reg *g = calloc(1, sizeof *g);
    if (!g)
        return NULL;
    g->max = max_entries;
    g->nbuckets = 16;
    while (g->nbuckets < max_entries / 2 && g->nbuckets < (1u << 30))
        g->nbuckets <<= 1;
    g->maxslabs = (max_entries + SLAB_SIZE - 1) / SLAB_SIZE;
    g->buckets = calloc(g->nbuckets, sizeof *g->buckets);
    g->slabs = calloc(g->maxslabs, sizeof *g->slabs);
    if (!g->buckets || !g->slabs) {
        px_renew_reg_free(g);
        return NULL;
    }
    return g;
}

void px_renew_reg_free(struct px_renew_reg *g)
{
    if (!g)
        return;
    for (uint32_t i = 0; i < g->nslabs; i++)
        free(g->slabs[i]);
    for (uint32_t b = 0; b < OWNER_BUCKETS; b++)
        while (g->owners[b]) {
            struct px_renew_owner *o = g->owners[b];
            g->owners[b] = o->hnext;
            free(o);
        }
    free(g->slabs);
    free(g->buckets);
    free(g->heap);
    free(g);
}

uint32_t px_renew_reg_count(const struct px_renew_reg *g)
{
    return g->count;
}

void px_renew_reg_set_user(struct px_renew_reg *g, void *user)
{
    g->user = user;
}

void *px_renew_entry_user(const struct px_renew_entry *e)
{
    return e->owner->reg->user;
}

/* The deadline order: a binary min-heap; each entry knows its position so
 * that rescheduling and removal are O(log n). */

static void heap_set(struct px_renew_reg *g, uint32_t i, struct px_renew_entry *e)
{
    g->heap[i] = e;
    e->heap_pos = i;
}

static void sift_up(struct px_renew_reg *g, uint32_t i)
{
    struct px_renew_entry *e = g->heap[i];
    while (i > 0) {
        uint32_t p = (i - 1) / 2;
        if (g->heap[p]->deadline_ms <= e->deadline_ms)
            break;
        heap_set(g, i, g->heap[p]);
        i = p;
    }
    heap_set(g, i, e);
}

static void sift_down(struct px_renew_reg *g, uint32_t i)
{
    struct px_renew_entry *e = g->heap[i];
    for (;;) {
        uint32_t c = 2 * i + 1;
        if (c >= g->heap_n)
            break;
        if (c + 1 < g->heap_n && g->heap[c + 1]->deadline_ms < g->heap[c]->deadline_ms)
            c++;
        if (g->heap[c]->deadline_ms >= e->deadline_ms)
            break;
        heap_set(g, i, g->heap[c]);
        i = c;
    }
    heap_set(g, i, e);
}

void px_renew_reg_unschedule(struct px_renew_reg *g, struct px_renew_entry *e)
{
    uint32_t i = e->heap_pos;
    if (i == PX_RENEW_UNSCHEDULED)
        return;
    e->heap_pos = PX_RENEW_UNSCHEDULED;
    struct px_renew_entry *last = g->heap[--g->heap_n];
    if (i == g->heap_n)
        return;
    heap_set(g, i, last);
    if (i > 0 && g->heap[(i - 1) / 2]->deadline_ms > last->deadline_ms)
        sift_up(g, i);
    else
        sift_down(g, i);
}

void px_renew_reg_schedule(struct px_renew_reg *g, struct px_renew_entry *e, int64_t deadline_ms)
{
    px_renew_reg_unschedule(g, e);
    e->deadline_ms = deadline_ms;
    /* The heap never holds more than the registry, and its room was made
     * when the entry was added. */
    heap_set(g, g->heap_n++, e);
    sift_up(g, e->heap_pos);
}

int64_t px_renew_reg_next_deadline(const struct px_renew_reg *g)
{
    return g->heap_n ? g->heap[0]->deadline_ms : INT64_MAX;
}

struct px_renew_entry *px_renew_reg_pop_due(struct px_renew_reg *g, int64_t now_ms)
{
    if (!g->heap_n || g->heap[0]->deadline_ms > now_ms)
        return NULL;
    struct px_renew_entry *e = g->heap[0];
    px_renew_reg_unschedule(g, e);
    return e;
}

/* Owners: one per (client, group, topic), hashed by the client id alone so
 * that a client's owners share a bucket chain. */

static struct px_renew_owner *owner_get(struct px_renew_reg *g, const char *client, const char *group,
                                        const char *topic)
{
    uint32_t ch = fnv(2166136261u, client);
    struct px_renew_owner **b = &g->owners[ch & (OWNER_BUCKETS - 1)];
    for (struct px_renew_owner *o = *b; o; o = o->hnext)
        if (o->chash == ch && !strcmp(o->client, client) && !strcmp(o->group, group) && !strcmp(o->topic, topic)) {
            o->gone = false;
            return o;
        }
    struct px_renew_owner *o = calloc(1, sizeof *o);
    if (!o)
        return NULL;
    o->chash = ch;
    o->reg = g;
    memcpy(o->client, client, strlen(client) + 1);
    memcpy(o->group, group, strlen(group) + 1);
    memcpy(o->topic, topic, strlen(topic) + 1);
    o->hnext = *b;
    *b = o;
    return o;
}

static void owner_release(struct px_renew_reg *g, struct px_renew_owner *o)
{
    if (o->count || !o->gone)
        return;
    struct px_renew_owner **p = &g->owners[o->chash & (OWNER_BUCKETS - 1)];
    while (*p != o)
        p = &(*p)->hnext;
    *p = o->hnext;
    free(o);
}

static struct px_renew_entry *slot_get(struct px_renew_reg *g)
{
    if (!g->free_list) {
        if (g->nslabs == g->maxslabs)
            return NULL;
        struct px_renew_entry *s = calloc(SLAB_SIZE, sizeof *s);
        if (!s)
            return NULL;
        g->slabs[g->nslabs++] = s;
        for (uint32_t i = SLAB_SIZE; i-- > 0;) {
            s[i].hnext = g->free_list;
            g->free_list = &s[i];
        }
    }
    struct px_renew_entry *e = g->free_list;
    g->free_list = e->hnext;
    return e;
}

struct px_renew_entry *px_renew_reg_add(struct px_renew_reg *g, const char *client_id, const char *group,
                                        const char *topic, const char *handle, int64_t received_ms,
                                        int *err)
{
    int dummy;
    if (!err)
        err = &dummy;
    size_t hl = strlen(handle);
    if (hl >= PX_RENEW_HANDLE_MAX || strlen(client_id) >= OWNER_NAME_MAX || strlen(group) >= OWNER_NAME_MAX ||
        strlen(topic) >= OWNER_NAME_MAX) {
        *err = -ENAMETOOLONG;
        return NULL;
    }
    struct px_handle h;
    if (px_handle_decode(handle, hl, &h)) {
        *err = -EINVAL;
        return NULL;
    }
    if (px_renew_reg_find(g, group, topic, handle)) {
        *err = -EEXIST;
        return NULL;
    }
    if (g->count >= g->max) {
        *err = -ENOSPC;
        return NULL;
    }
    if (g->heap_cap <= g->count) {
        uint32_t cap = g->heap_cap ? g->heap_cap * 2 : 256;
        if (cap > g->max)
            cap = g->max;
        struct px_renew_entry **n = realloc(g->heap, (size_t)cap * sizeof *n);
        if (!n) {
            *err = -ENOMEM;
            return NULL;
        }
        g->heap = n;
        g->heap_cap = cap;
    }
    struct px_renew_owner *o = owner_get(g, client_id, group, topic);
    struct px_renew_entry *e = o ? slot_get(g) : NULL;
    if (!e) {
        if (o) {
            o->gone = o->count == 0;
            owner_release(g, o);
        }
        *err = -ENOMEM;
        return NULL;
    }
    memset(e, 0, sizeof *e);
    memcpy(e->handle, handle, hl + 1);
    e->received_ms = received_ms;
    e->pop_time = h.retrieve_time;
    e->invisible = h.invisible_time;
    e->revive_qid = h.revive_qid;
    e->heap_pos = PX_RENEW_UNSCHEDULED;
    e->used = true;
    e->owner = o;
    e->hash = key_hash(group, topic, handle);
    struct px_renew_entry **b = &g->buckets[e->hash & (g->nbuckets - 1)];
    e->hnext = *b;
    *b = e;
    e->onext = o->first;
    if (o->first)
        o->first->oprev = e;
    o->first = e;
    o->count++;
    g->count++;
    *err = 0;
    return e;
}

struct px_renew_entry *px_renew_reg_find(struct px_renew_reg *g, const char *group, const char *topic,
                                         const char *handle)
{
    uint32_t hv = key_hash(group, topic, handle);
    for (struct px_renew_entry *e = g->buckets[hv & (g->nbuckets - 1)]; e; e = e->hnext)
        if (e->hash == hv && !strcmp(e->handle, handle) && !strcmp(e->owner->group, group) &&
            !strcmp(e->owner->topic, topic))
            return e;
    return NULL;
}

void px_renew_reg_remove(struct px_renew_reg *g, struct px_renew_entry *e)
{
    if (!e->used)
        return;
    px_renew_reg_unschedule(g, e);
    struct px_renew_entry **p = &g->buckets[e->hash & (g->nbuckets - 1)];
    while (*p != e)
        p = &(*p)->hnext;
    *p = e->hnext;
    struct px_renew_owner *o = e->owner;
    if (e->oprev)
        e->oprev->onext = e->onext;
    else
        o->first = e->onext;
    if (e->onext)
        e->onext->oprev = e->oprev;
    o->count--;
    g->count--;
    e->used = false;
    e->owner = NULL;
    e->hnext = g->free_list;
    g->free_list = e;
    owner_release(g, o);
}

static size_t owner_each(struct px_renew_reg *g, struct px_renew_owner *o, px_renew_entry_fn fn, void *ud)
{
    size_t n = 0;
    /* Hold the owner while fn removes its entries. */
    bool gone = o->gone;
    o->gone = false;
    for (struct px_renew_entry *e = o->first, *next; e; e = next) {
        next = e->onext;
        n++;
        fn(e, ud);
    }
    o->gone = gone;
    return n;
}

size_t px_renew_reg_client_gone(struct px_renew_reg *g, const char *client_id, px_renew_entry_fn fn, void *ud)
{
    uint32_t ch = fnv(2166136261u, client_id);
    struct px_renew_owner **b = &g->owners[ch & (OWNER_BUCKETS - 1)];
    size_t n = 0;
    for (struct px_renew_owner *o = *b, *next; o; o = next) {
        next = o->hnext;
        if (o->chash != ch || strcmp(o->client, client_id))
            continue;
        o->gone = true;
        n += owner_each(g, o, fn, ud);
        owner_release(g, o);
    }
    return n;
}

size_t px_renew_reg_each(struct px_renew_reg *g, px_renew_entry_fn fn, void *ud)
{
    size_t n = 0;
    for (uint32_t b = 0; b < OWNER_BUCKETS; b++)
        for (struct px_renew_owner *o = g->owners[b], *next; o; o = next) {
            next = o->hnext;
            n += owner_each(g, o, fn, ud);
            owner_release(g, o);
        }
    return n;
}

const char *px_renew_entry_client(const struct px_renew_entry *e)
{
    return e->owner->client;
}

const char *px_renew_entry_group(const struct px_renew_entry *e)
{
    return e->owner->group;
}

const char *px_renew_entry_topic(const struct px_renew_entry *e)
{
    return e->owner->topic;
}

int px_renew_entry_current(const struct px_renew_entry *e, char *out, size_t cap)
{
    struct px_handle h;
    if (px_handle_decode(e->handle, strlen(e->handle), &h))
        return -EINVAL;
    h.retrieve_time = e->pop_time;
    h.invisible_time = e->invisible;
    h.revive_qid = e->revive_qid;
    return px_handle_encode(&h, out, cap);
}

#define MAX_INFLIGHT 1024
#define LOG_EVERY_MS 60000

enum {
    RN_INFLIGHT = 1,    /* a renewal is waiting for the broker */
    RN_CLEAR = 2,       /* client gone / stopping: clear once answered */
    RN_LOGGED = 4,      /* a failure of this entry has been logged */
};

struct waiter {
    px_renew_take_fn cb;
    void *ud;
    struct waiter *next;
};

struct px_renew {
    struct px *px;
    struct px_renew_reg *reg;
    ev_timer timer;
    int64_t armed_ms;        /* deadline the timer is set for; INT64_MAX when idle */
    int inflight;            /* renewals waiting for the broker */
    int clearing;            /* clears waiting for the broker */
    bool stopping, drain_timeout;
    struct waiter *free_waiters;
    rmt_cmd cmd;
    int64_t full_logged_ms, late_logged_ms;
    uint64_t full_skipped, late_dropped;
};

static void pump(struct px_renew *r);

static void tick(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct px_renew *r = w->data;
    r->armed_ms = INT64_MAX;
    pump(r);
}

/* Arms the timer for the earliest deadline (if it moved). */
static void arm(struct px_renew *r)
{
    int64_t next = px_renew_reg_next_deadline(r->reg);
    if (next == r->armed_ms)
        return;
    ev_timer_stop(r->px->loop, &r->timer);
    r->armed_ms = next;
    if (next == INT64_MAX)
        return;
    int64_t now = px_now_ms();
    int64_t delay = next - now;
    /* Due entries beyond MAX_INFLIGHT are started by the answers; the
     * timer is only a safety net then. */
    if (delay < 0 || r->inflight >= MAX_INFLIGHT)
        delay = r->inflight >= MAX_INFLIGHT ? 100 : 0;
    ev_timer_set(&r->timer, (double)delay / 1000.0, 0.);
    ev_timer_start(r->px->loop, &r->timer);
}

static void route_warm(int status, const struct cli_route *route, const char *errmsg, void *ud) { }

/* CHANGE_MESSAGE_INVISIBLETIME for e's latest handle. 0 or -errno. */
static int send_change(struct px_renew *r, struct px_renew_entry *e, int64_t invisible, rmt_response_fn cb,
                       void *ud)
{
    struct px *px = r->px;
    const char *group = px_renew_entry_group(e), *topic = px_renew_entry_topic(e);
    char cur[PX_RENEW_HANDLE_MAX];
    char real[CLI_NAME_MAX * 2 + 16];
    struct px_handle h;
    if (px_renew_entry_current(e, cur, sizeof cur) < 0 || px_handle_decode(cur, strlen(cur), &h) ||
        px_handle_real_topic(&h, topic, group, real, sizeof real) < 0)
        return -EINVAL;
    const char *addr = px_broker_addr(px, topic, h.broker);
    if (!addr) {
        px_with_route(px, topic, route_warm, NULL);
        return -EHOSTUNREACH;
    }
    rmt_cmd *c = &r->cmd;
    px_cmd_reset(px, c, RMT_REQ_CHANGE_MESSAGE_INVISIBLETIME);
    int rc = rmt_cmd_set_ext(c, "consumerGroup", group);
    if (!rc) rc = rmt_cmd_set_ext(c, "topic", real);
    if (!rc) rc = rmt_cmd_set_ext_int(c, "queueId", h.queue_id);
    if (!rc) rc = rmt_cmd_set_ext(c, "extraInfo", cur);
    if (!rc) rc = rmt_cmd_set_ext_int(c, "offset", h.offset);
    if (!rc) rc = rmt_cmd_set_ext_int(c, "invisibleTime", invisible);
    if (!rc) rc = rmt_cmd_set_ext(c, "bname", h.broker);
    if (!rc)
        rc = rmt_client_invoke(px->brk, addr, c, (int)px->cfg.request_timeout_ms, cb, ud);
    return rc;
}

static void clear_resp(int status, rmt_cmd *resp, void *ud)
{
    struct px_renew *r = ud;
    r->clearing--;
    if (status && status != -ECANCELED)
        log_debug("proxy: making a message of a gone client visible again failed: %s", strerror(-status));
    else if (!status && resp->code != RMT_RESP_SUCCESS)
        log_debug("proxy: making a message of a gone client visible again: broker answered %d: %s", resp->code,
                  rmt_cmd_remark(resp) ? rmt_cmd_remark(resp) : "");
}

/* Makes e's message visible after invisibleTimeMillisWhenClear and forgets
 * e (or marks it, when a renewal is in flight). */
static void clear_entry(struct px_renew_entry *e, void *ud)
{
    struct px_renew *r = ud;
    if (e->state & RN_INFLIGHT) {
        e->state |= RN_CLEAR;
        return;
    }
    int rc = send_change(r, e, r->px->cfg.clear_invisible_ms, clear_resp, r);
    if (rc == 0)
        r->clearing++;
    else
        log_debug("proxy: cannot make a message of %s/%s visible again: %s; it returns when its invisible "
                  "time ends", px_renew_entry_group(e), px_renew_entry_topic(e), strerror(-rc));
    px_renew_reg_remove(r->reg, e);
}

static void drop_late(struct px_renew *r, struct px_renew_entry *e, int64_t now, const char *why)
{
    r->late_dropped++;
    if (now - r->late_logged_ms >= LOG_EVERY_MS) {
        log_warn("proxy: %" PRIu64 " receipt handle(s) no longer renewed (%s, e.g. of %s/%s); the messages are "
                 "delivered again", r->late_dropped, why, px_renew_entry_group(e), px_renew_entry_topic(e));
        r->late_logged_ms = now;
        r->late_dropped = 0;
    }
    px_renew_reg_remove(r->reg, e);
}

/* A renewal failed for a reason that may pass: try again while the handle
 * still holds, spreading a few attempts over the time left. */
static void retry_later(struct px_renew *r, struct px_renew_entry *e, int64_t now)
{
    int64_t expiry = e->pop_time + e->invisible;
    int64_t delay = (expiry - now) / 3;
    if (delay > 1000)
        delay = 1000;
    if (delay < 100)
        delay = 100;
    if (now + delay >= expiry) {
        drop_late(r, e, now, "the broker did not accept a renewal before the handle expired");
        return;
    }
    px_renew_reg_schedule(r->reg, e, now + delay);
}

static void resolve_waiters(struct px_renew *r, struct px_renew_entry *e, int status)
{
    char cur[PX_RENEW_HANDLE_MAX];
    if (!status && px_renew_entry_current(e, cur, sizeof cur) < 0)
        status = -EINVAL;
    struct waiter *w = e->waiters;
    e->waiters = NULL;
    px_renew_reg_remove(r->reg, e);
    while (w) {
        struct waiter *next = w->next;
        px_renew_take_fn cb = w->cb;
        void *ud = w->ud;
        w->next = r->free_waiters;
        r->free_waiters = w;
        cb(ud, status, status ? NULL : cur);
        w = next;
    }
}

/* Broker answers that mean the check point of the handle no longer exists
 * (acked, revived, or superseded), or that it never will be renewable. */
static bool checkpoint_gone(int code)
{
    return code == RMT_RESP_NO_MESSAGE || code == RMT_RESP_INVALID_PARAMETER || code == RMT_RESP_TOPIC_NOT_EXIST ||
           code == RMT_RESP_MESSAGE_ILLEGAL;
}

static void renew_resp(int status, rmt_cmd *resp, void *ud)
{
    struct px_renew_entry *e = ud;
    struct px_renew *r = px_renew_entry_user(e);
    struct px *px = r->px;
    r->inflight--;
    e->state &= ~(unsigned)RN_INFLIGHT;
    if (status == -ECANCELED) {
        /* The remoting client is being freed: no new requests. */
        resolve_waiters(r, e, -ECANCELED);
        return;
    }
    int64_t now = px_now_ms();
    bool ok = false, gone = false;
    int64_t pop_time, inv, revive;
    if (status) {
        if (!(e->state & RN_LOGGED))
            log_warn("proxy: renewing a receipt handle of %s/%s failed: %s; retrying while it holds",
                     px_renew_entry_group(e), px_renew_entry_topic(e), strerror(-status));
        e->state |= RN_LOGGED;
    } else if (resp->code == RMT_RESP_SUCCESS && !rmt_cmd_ext_int(resp, "popTime", &pop_time) &&
               !rmt_cmd_ext_int(resp, "invisibleTime", &inv) && !rmt_cmd_ext_int(resp, "reviveQid", &revive)) {
        e->pop_time = pop_time;
        e->invisible = inv;
        e->revive_qid = (int)revive;
        e->state &= ~(unsigned)RN_LOGGED;
        px->stats.renewals++;
        ok = true;
    } else if (checkpoint_gone(resp->code)) {
        log_debug("proxy: receipt handle of %s/%s is no longer renewable (%d: %s); forgotten",
                  px_renew_entry_group(e), px_renew_entry_topic(e), resp->code,
                  rmt_cmd_remark(resp) ? rmt_cmd_remark(resp) : "");
        gone = true;
    } else {
        if (!(e->state & RN_LOGGED))
            log_warn("proxy: renewing a receipt handle of %s/%s: broker answered %d: %s; retrying while it holds",
                     px_renew_entry_group(e), px_renew_entry_topic(e), resp->code,
                     rmt_cmd_remark(resp) ? rmt_cmd_remark(resp) : "");
        e->state |= RN_LOGGED;
    }
    if (e->waiters)
        resolve_waiters(r, e, 0);
    else if (gone)
        px_renew_reg_remove(r->reg, e);
    else if (e->state & RN_CLEAR)
        clear_entry(e, r);
    else if (ok)
        px_renew_reg_schedule(r->reg, e, e->pop_time + e->invisible - px->cfg.renew_ahead_ms);
    else
        retry_later(r, e, now);
    pump(r);
}

/* A due entry: renew it, or give it up. */
static void act(struct px_renew *r, struct px_renew_entry *e, int64_t now)
{
    struct px *px = r->px;
    if (e->state & RN_CLEAR) {
        clear_entry(e, r);
        return;
    }
    if (now - e->received_ms >= px->cfg.renew_max_ms) {
        /* Like RocketMQ's proxy: a consumer may hold a message this long
         * only; it is delivered again once its current invisible time ends. */
        log_debug("proxy: receipt handle of %s/%s held for %" PRId64 " ms, no longer renewed",
                  px_renew_entry_group(e), px_renew_entry_topic(e), now - e->received_ms);
        px_renew_reg_remove(r->reg, e);
        return;
    }
    if (now >= e->pop_time + e->invisible) {
        drop_late(r, e, now, "its invisible time ended before the renewal could start");
        return;
    }
    int rc = send_change(r, e, px->cfg.renew_slice_ms, renew_resp, e);
    if (rc == -EINVAL) {
        px_renew_reg_remove(r->reg, e);
        return;
    }
    if (rc) {
        if (!(e->state & RN_LOGGED))
            log_warn("proxy: cannot renew a receipt handle of %s/%s: %s; retrying while it holds",
                     px_renew_entry_group(e), px_renew_entry_topic(e), strerror(-rc));
        e->state |= RN_LOGGED;
        retry_later(r, e, now);
        return;
    }
    e->state |= RN_INFLIGHT;
    r->inflight++;
}

static void pump(struct px_renew *r)
{
    if (r->inflight < MAX_INFLIGHT) {
        int64_t now = px_now_ms();
        struct px_renew_entry *e;
        while (r->inflight < MAX_INFLIGHT && (e = px_renew_reg_pop_due(r->reg, now)))
            act(r, e, now);
    }
    arm(r);
}

int px_renew_init(struct px *px)
{
    struct px_renew *r = calloc(1, sizeof *r);
    if (!r)
        return -ENOMEM;
    r->px = px;
    uint32_t max = (uint32_t)px->cfg.renew_max_entries;
    r->reg = px_renew_reg_new(max ? max : 1);
    if (!r->reg) {
        free(r);
        return -ENOMEM;
    }
    px_renew_reg_set_user(r->reg, r);
    ev_timer_init(&r->timer, tick, 0., 0.);
    r->timer.data = r;
    r->armed_ms = INT64_MAX;
    rmt_cmd_init(&r->cmd, RMT_REQ_CHANGE_MESSAGE_INVISIBLETIME);
    r->full_logged_ms = r->late_logged_ms = INT64_MIN / 2;
    px->renew = r;
    return 0;
}

void px_renew_stop(struct px *px)
{
    if (px->renew)
        px->renew->stopping = true;
}

static void drain_guard(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct px_renew *r = w->data;
    r->drain_timeout = true;
}

void px_renew_release_all(struct px *px, double max_wait_s)
{
    struct px_renew *r = px->renew;
    if (!r)
        return;
    r->stopping = true;
    ev_timer_stop(px->loop, &r->timer);
    r->armed_ms = INT64_MAX;
    size_t n = px_renew_reg_each(r->reg, clear_entry, r);
    if (n)
        log_info("proxy: %zu message(s) held for push consumers become visible again in %" PRId64 " ms", n,
                 px->cfg.clear_invisible_ms);
    ev_timer guard;
    ev_timer_init(&guard, drain_guard, max_wait_s, 0.);
    guard.data = r;
    ev_timer_start(px->loop, &guard);
    r->drain_timeout = false;
    while ((r->inflight > 0 || r->clearing > 0) && !r->drain_timeout)
        ev_run(px->loop, EVRUN_ONCE);
    ev_timer_stop(px->loop, &guard);
    ev_timer_stop(px->loop, &r->timer);
    r->armed_ms = INT64_MAX;
}

void px_renew_free(struct px *px)
{
    struct px_renew *r = px->renew;
    if (!r)
        return;
    ev_timer_stop(px->loop, &r->timer);
    px_renew_reg_free(r->reg);
    while (r->free_waiters) {
        struct waiter *w = r->free_waiters;
        r->free_waiters = w->next;
        free(w);
    }
    rmt_cmd_destroy(&r->cmd);
    free(r);
    px->renew = NULL;
}

void px_renew_add(struct px *px, const char *client_id, const char *group, const char *topic,
                  const char *handle)
{
    struct px_renew *r = px->renew;
    if (!r || r->stopping || px->cfg.renew_max_entries == 0)
        return;
    int64_t now = px_now_ms();
    int err;
    struct px_renew_entry *e = px_renew_reg_add(r->reg, client_id, group, topic, handle, now, &err);
    if (!e) {
        if (err == -EEXIST)
            return;
        r->full_skipped++;
        if (now - r->full_logged_ms >= LOG_EVERY_MS) {
            log_warn("proxy: %" PRIu64 " received message(s) not auto-renewed (e.g. of %s/%s: %s; %u handles "
                     "renewed, renewMaxEntries %" PRId64 "); they are delivered again after %" PRId64 " ms",
                     r->full_skipped, group, topic, err == -ENOSPC ? "too many handles" : strerror(-err),
                     px_renew_reg_count(r->reg), px->cfg.renew_max_entries, px->cfg.default_invisible_ms);
            r->full_logged_ms = now;
            r->full_skipped = 0;
        }
        return;
    }
    int64_t deadline = e->pop_time + e->invisible - px->cfg.renew_ahead_ms;
    px_renew_reg_schedule(r->reg, e, deadline);
    if (deadline < r->armed_ms)
        arm(r);
}

int px_renew_take(struct px *px, const char *group, const char *topic, const char *handle, char *out,
                  size_t cap, px_renew_take_fn cb, void *ud)
{
    struct px_renew *r = px->renew;
    struct px_renew_entry *e = r ? px_renew_reg_find(r->reg, group, topic, handle) : NULL;
    if (!e)
        return 0;
    if (e->state & RN_INFLIGHT) {
        struct waiter *w = r->free_waiters;
        if (w)
            r->free_waiters = w->next;
        else if (!(w = malloc(sizeof *w)))
            return 0;
        w->cb = cb;
        w->ud = ud;
        w->next = e->waiters;
        e->waiters = w;
        return 2;
    }
    int n = px_renew_entry_current(e, out, cap);
    px_renew_reg_remove(r->reg, e);
    return n > 0 ? 1 : 0;
}

void px_renew_client_gone(struct px *px, const char *client_id)
{
    struct px_renew *r = px->renew;
    if (!r)
        return;
    size_t n = px_renew_reg_client_gone(r->reg, client_id, clear_entry, r);
    if (n)
        log_info("proxy: client %s is gone; its %zu unacknowledged message(s) become visible again in %" PRId64
                 " ms", client_id, n, px->cfg.clear_invisible_ms);
    arm(r);
}
