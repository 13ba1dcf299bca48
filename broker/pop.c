/*
 * Pop processor (RocketMQ PopMessageProcessor, AckMessageProcessor,
 * ChangeInvisibleTimeProcessor, PopReviveService and the order-pop part of
 * ConsumerOrderInfoManager), written over our own state store
 * (pop_state.c) instead of RocketMQ's revive topic of checkpoint messages.
 *
 * Answers: messages of normal topics go out zero-copy as stored records
 * (the consumer derives each receipt from the response header's
 * startOffsetInfo / msgOffsetInfo, as RocketMQ clients do); messages of the
 * pop retry topic are re-encoded into a reusable buffer with their original
 * topic and the POP_CK property, as RocketMQ does. Empty pops with pollTime
 * are held and re-run when the store dispatches a message to the topic or
 * its retry topic (pop_dispatch_hook, same lock-free waiter counting as
 * pull.c), when an orderly queue is unlocked, or when the poll time ends.
 * A revive timer moves expired in-flight messages to the retry topic or
 * the dead-letter topic.
 */
#include "pop.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "broker.h"
#include "client_manager.h"
#include "log.h"
#include "pop_state.h"
#include "pull.h"
#include "wake_ring.h"

#define POP_MAX_NUMS 32
#define ORDER_REVIVE_QID 999
#define RETRY_FIRST_EVERY 5      /* every 5th pop looks at the retry topic first (RocketMQ: 20 %) */
#define NBUCKETS 1024
#define MAX_HELD 65536
#define REVIVE_INTERVAL 0.1
#define REVIVE_RETRY_MS 1000
#define STATE_MAP_SIZE ((size_t)1 << 30)
#define PROPS_CAP (MSG_PROPERTIES_MAX + 1)
#define INIT_MODE_MIN 0
#define EXTRA_MAX 512

struct popq {
    char group[META_GROUP_NAME_MAX + 1];
    char topic[META_TOPIC_NAME_MAX + 1];
    char retry[META_TOPIC_NAME_MAX + 1];   /* "" when the name would be invalid */
    int32_t qid;
    int32_t max;
    int64_t invis;
    int64_t poll;
    int64_t born;
    int32_t init_mode;
    bool order;
    struct cm_filter filter;
};

struct held {
    struct held *next, *prev;
    struct pop_ctx *p;
    rmt_conn *conn;
    int32_t opaque;
    uint8_t ser;
    uint64_t h1, h2;
    ev_timer timer;
    struct popq q;
};

struct hold_ctx {
    struct hold_ctx *next;
    struct pop_ctx *p;
    int n;
    struct store_hold h[POP_MAX_NUMS];
};

/* An ack / change-invisible answer waiting for its commit. */
struct pend {
    struct pst_waiter w;
    struct pend *free_next;
    struct pop_ctx *p;
    rmt_conn *conn;
    int32_t opaque;
    uint8_t ser;
    bool cit;
    int64_t pop_time, invis;
    int32_t rqid;
};

/* A revive copy waiting for the flush that makes it durable. */
struct rv {
    struct rv *next;
    struct pop_ctx *p;
    struct pst_queue *q;
    int64_t off, pop_time;
    enum store_put_status st;
};

struct gather {
    uint32_t n, nh;
    struct store_view views[POP_MAX_NUMS];
    uint8_t retry[POP_MAX_NUMS];
    int32_t count[POP_MAX_NUMS];
    struct store_hold holds[POP_MAX_NUMS];
    int64_t rest;
    bool any_retry;
};

struct pop_ctx {
    struct broker *b;
    struct pst *st;
    /* long polling */
    struct held *held;
    unsigned nheld;
    atomic_int waiters[NBUCKETS];
    struct wake_ring ring;
    ev_async wake;
    /* revive */
    ev_timer revive;
    pthread_mutex_t rmu;
    struct rv *rv_done;
    struct rv *rv_free;
    ev_async rv_wake;
    unsigned rv_pending;
    /* pools and scratch (loop thread) */
    struct hold_ctx *free_hold;
    struct hold_ctx **hold_chunks;
    size_t nhold_chunks;
    struct pend *free_pend;
    struct held *free_held;
    struct gather g;
    struct popq scratch;
    struct iovec iov[POP_MAX_NUMS];
    struct buf body, sinfo, minfo, oinfo;
    char props[PROPS_CAP];
    uint64_t npop;
    uint32_t rr;
    bool started;
};

static uint64_t thash(const char *topic)
{
    uint64_t h = 1469598103934665603ull;
    for (const unsigned char *s = (const unsigned char *)topic; *s; s++)
        h = (h ^ *s) * 1099511628211ull;
    return h ? h : 1;
}

static bool has_prefix(const char *s, const char *p) { return strncmp(s, p, strlen(p)) == 0; }

/* %RETRY%<group>_<topic> (KeyBuilder.buildPopRetryTopic, v1 naming). */
static void retry_topic(char *out, size_t cap, const char *group, const char *topic)
{
    int n = snprintf(out, cap, "%s%s_%s", BRK_RETRY_PREFIX, group, topic);
    if (n < 0 || (size_t)n >= cap || !meta_topic_name_valid(out))
        out[0] = 0;
}

static void rv_drain(struct pop_ctx *p);
static void on_wake(struct ev_loop *loop, ev_async *w, int revents);
static void on_rv_wake(struct ev_loop *loop, ev_async *w, int revents);
static void on_revive(struct ev_loop *loop, ev_timer *w, int revents);

struct pop_ctx *pop_new(struct broker *b)
{
    struct pop_ctx *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->b = b;
    if (pst_open(b->loop, b->cfg.store_root, STATE_MAP_SIZE, &p->st)) {
        free(p);
        return NULL;
    }
    for (int i = 0; i < NBUCKETS; i++)
        atomic_init(&p->waiters[i], 0);
    wr_init(&p->ring);
    pthread_mutex_init(&p->rmu, NULL);
    ev_async_init(&p->wake, on_wake);
    p->wake.data = p;
    ev_async_start(b->loop, &p->wake);
    ev_async_init(&p->rv_wake, on_rv_wake);
    p->rv_wake.data = p;
    ev_async_start(b->loop, &p->rv_wake);
    ev_timer_init(&p->revive, on_revive, REVIVE_INTERVAL, REVIVE_INTERVAL);
    p->revive.data = p;
    return p;
}

void pop_start(struct pop_ctx *p)
{
    if (!p || p->started)
        return;
    p->started = true;
    ev_timer_start(p->b->loop, &p->revive);
}

/* ---- hold pool (zero-copy answers) ---- */

static void hold_release(void *ctx)
{
    struct hold_ctx *hc = ctx;
    for (int i = 0; i < hc->n; i++)
        store_hold_release(&hc->h[i]);
    hc->n = 0;
    hc->next = hc->p->free_hold;
    hc->p->free_hold = hc;
}

static struct hold_ctx *hold_get(struct pop_ctx *p)
{
    if (!p->free_hold) {
        enum { CHUNK = 16 };
        struct hold_ctx **nc = realloc(p->hold_chunks, (p->nhold_chunks + 1) * sizeof *nc);
        if (!nc)
            return NULL;
        p->hold_chunks = nc;
        struct hold_ctx *chunk = calloc(CHUNK, sizeof *chunk);
        if (!chunk)
            return NULL;
        /* Chunks live until pop_free (connections are gone by then, so
         * every hold has been released). */
        p->hold_chunks[p->nhold_chunks++] = chunk;
        for (int i = 0; i < CHUNK; i++) {
            chunk[i].p = p;
            chunk[i].next = p->free_hold;
            p->free_hold = &chunk[i];
        }
    }
    struct hold_ctx *hc = p->free_hold;
    p->free_hold = hc->next;
    hc->n = 0;
    return hc;
}

static void gather_release(struct gather *g)
{
    for (uint32_t i = 0; i < g->nh; i++)
        store_hold_release(&g->holds[i]);
    g->nh = 0;
}

/* ---- offsets ---- */

/* Reports the lowest unacked offset of q as the group's consumer offset. */
static void commit_consumer_offset(struct pop_ctx *p, struct pst_queue *q)
{
    int64_t lo = q->n ? q->e[0].off : q->pop_off;
    if (lo < 0 || lo == q->committed || p->b->cfg.role == BRK_SLAVE)
        return;
    if (meta_offset_commit(p->b->meta, q->topic, q->group, (uint32_t)q->qid, lo) == 0)
        q->committed = lo;
}

/* First pop offset of a queue (PopMessageProcessor.getPopOffset/getInitOffset). */
static int64_t init_offset(struct pop_ctx *p, const char *group, const char *topic, int32_t qid,
                           bool retry, int init_mode)
{
    int64_t off;
    if (meta_offset_query(p->b->meta, topic, group, (uint32_t)qid, &off) == 0 && off >= 0)
        return off;
    int64_t min = store_min_queue_offset(p->b->store, topic, qid);
    if (retry || init_mode == INIT_MODE_MIN || min <= 0)
        return min;
    int64_t max = store_max_queue_offset(p->b->store, topic, qid);
    return max > 0 ? max - 1 : 0;
}

static int tag_filter(int64_t tag_hash, void *ud) { return cm_filter_match(ud, tag_hash); }

static int append_info_sep(struct buf *b)
{
    return b->len ? buf_append_u8(b, ';') : 0;
}

/* Pops from one queue into p->g. */
static void pop_queue(struct pop_ctx *p, const struct popq *pq, const char *topic, bool retry, int32_t qid,
                      int64_t now)
{
    struct broker *b = p->b;
    struct gather *g = &p->g;
    struct pst_queue *q = pst_queue(p->st, pq->group, topic, qid, true);
    if (!q)
        return;
    if (q->pop_off < 0 && pst_set_pop_off(p->st, q, init_offset(p, pq->group, topic, qid, retry, pq->init_mode)))
        return;
    uint32_t first = g->n;
    uint32_t max = (uint32_t)pq->max;
    if (pq->order) {
        for (uint32_t i = 0; i < q->n; i++)
            if (q->e[i].reviving || q->e[i].deadline > now)
                return;
        for (uint32_t i = 0; i < q->n && g->n < max;) {
            struct pst_entry *e = &q->e[i];
            struct store_get_req gr = { .topic = topic, .queue_id = qid, .offset = e->off, .max_count = 1,
                                        .views = g->views + g->n };
            struct store_get_result res;
            memset(&res, 0, sizeof res);
            if (store_get(b->store, &gr, &res) == STORE_GET_FOUND && res.count == 1 &&
                g->views[g->n].queue_offset == e->off) {
                e->count++;
                e->deadline = now + pq->invis;
                e->pop_time = now;
                e->order = 1;
                if (pst_update(p->st, q, i)) {
                    store_hold_release(&res.hold);
                    break;
                }
                g->holds[g->nh++] = res.hold;
                g->retry[g->n] = retry;
                g->count[g->n] = e->count;
                g->n++;
                i++;
            } else {
                store_hold_release(&res.hold);
                log_warn("pop: in-flight message %s/%d offset %lld of %s is gone from the store; dropped",
                         topic, qid, (long long)e->off, pq->group);
                if (pst_del(p->st, q, i))
                    break;
            }
        }
    }
    if (g->n < max) {
        for (int attempt = 0; attempt < 2; attempt++) {
            struct store_get_req gr = {
                .topic = topic, .queue_id = qid, .offset = q->pop_off, .max_count = max - g->n,
                .max_bytes = (uint32_t)b->cfg.max_transfer_bytes,
                .filter = (retry || pq->filter.all) ? NULL : tag_filter, .filter_ud = (void *)&pq->filter,
                .views = g->views + g->n,
            };
            struct store_get_result res;
            memset(&res, 0, sizeof res);
            enum store_get_status st = store_get(b->store, &gr, &res);
            if ((st == STORE_GET_OFFSET_TOO_SMALL || st == STORE_GET_OFFSET_OVERFLOW_BADLY) && attempt == 0) {
                store_hold_release(&res.hold);
                log_info("pop offset %lld of %s/%d by %s moved to %lld", (long long)q->pop_off, topic, qid,
                         pq->group, (long long)res.next_begin_offset);
                if (pst_set_pop_off(p->st, q, res.next_begin_offset))
                    return;
                continue;
            }
            uint32_t got = st == STORE_GET_FOUND ? res.count : 0;
            uint32_t added = 0;
            for (; added < got; added++) {
                struct store_view *v = &g->views[g->n + added];
                struct pst_entry e = { .off = v->queue_offset, .deadline = now + pq->invis, .pop_time = now,
                                       .count = 1, .order = pq->order };
                if (pst_put(p->st, q, &e))
                    break;
                g->retry[g->n + added] = retry;
                g->count[g->n + added] = 1;
            }
            int64_t next = res.next_begin_offset;
            if (added < got)
                next = g->views[g->n + added].queue_offset;
            if (added)
                g->holds[g->nh++] = res.hold;
            else
                store_hold_release(&res.hold);
            g->n += added;
            if (next > q->pop_off)
                pst_set_pop_off(p->st, q, next);
            if (res.max_offset > q->pop_off)
                g->rest += res.max_offset - q->pop_off;
            break;
        }
    } else {
        int64_t maxo = store_max_queue_offset(b->store, topic, qid);
        if (maxo > q->pop_off)
            g->rest += maxo - q->pop_off;
    }
    commit_consumer_offset(p, q);
    if (g->n == first)
        return;
    if (retry)
        g->any_retry = true;
    const char *t = retry ? "1" : "0";
    int64_t start = g->views[first].queue_offset;
    append_info_sep(&p->sinfo);
    buf_printf(&p->sinfo, "%s %d %lld", t, qid, (long long)start);
    append_info_sep(&p->minfo);
    buf_printf(&p->minfo, "%s %d ", t, qid);
    int32_t minc = INT32_MAX;
    for (uint32_t i = first; i < g->n; i++) {
        buf_printf(&p->minfo, i > first ? ",%lld" : "%lld", (long long)g->views[i].queue_offset);
        if (pq->order) {
            append_info_sep(&p->oinfo);
            buf_printf(&p->oinfo, "%s qo%d%%%lld %d", t, qid, (long long)g->views[i].queue_offset,
                       g->count[i] - 1);
            if (g->count[i] - 1 < minc)
                minc = g->count[i] - 1;
        }
    }
    if (pq->order) {
        append_info_sep(&p->oinfo);
        buf_printf(&p->oinfo, "%s %d %d", t, qid, minc);
    }
}

static void pop_topic(struct pop_ctx *p, const struct popq *pq, const char *topic, bool retry, int64_t now)
{
    const struct meta_topic *t = meta_topic_get(p->b->meta, topic);
    if (!t || !(t->perm & META_PERM_READ))
        return;
    if (!retry && pq->qid >= 0) {
        pop_queue(p, pq, topic, false, pq->qid, now);
        return;
    }
    int n = t->read_queue_nums;
    uint32_t start = p->rr++;
    for (int i = 0; i < n && p->g.n < (uint32_t)pq->max; i++)
        pop_queue(p, pq, topic, retry, (int32_t)((start + (uint32_t)i) % (uint32_t)n), now);
}

/* extraInfo: ckOffset popTime invisibleTime reviveQid retryFlag brokerName queueId msgOffset. */
static int extra_info(char *out, size_t cap, int64_t ck, int64_t pop_time, int64_t invis, int rqid,
                      bool retry, const char *broker, int qid, int64_t off)
{
    return snprintf(out, cap, "%lld %lld %lld %d %d %s %d %lld", (long long)ck, (long long)pop_time,
                    (long long)invis, rqid, retry ? 1 : 0, broker, qid, (long long)off);
}

/* Copy-mode body: normal records as stored, retry records re-encoded with
 * their original topic and POP_CK. Returns 0 or -errno. */
static int build_copy_body(struct pop_ctx *p, const struct popq *pq, int64_t now, int rqid)
{
    struct gather *g = &p->g;
    buf_reset(&p->body);
    int64_t start = -1;
    int32_t start_q = -1;
    for (uint32_t i = 0; i < g->n; i++) {
        const struct store_view *v = &g->views[i];
        if (!g->retry[i]) {
            if (buf_append(&p->body, v->data, v->len))
                return -ENOMEM;
            continue;
        }
        struct msg_record r;
        if (msg_record_decode(v->data, v->len, &r, 0) <= 0)
            return -EBADMSG;
        if (r.queue_id != start_q) {
            start_q = r.queue_id;
            start = r.queue_offset;
        }
        char extra[EXTRA_MAX];
        extra_info(extra, sizeof extra, start, now, pq->invis, rqid, true, p->b->cfg.name, r.queue_id,
                   r.queue_offset);
        size_t plen = 0;
        const char *val;
        size_t vl;
        if (r.props_len > PROPS_CAP)
            return -EBADMSG;
        memcpy(p->props, r.props, r.props_len);
        plen = r.props_len;
        if (!msg_prop_get(r.props, r.props_len, MSG_PROP_POP_CK, &val, &vl) &&
            msg_prop_append(p->props, PROPS_CAP, &plen, MSG_PROP_POP_CK, extra, strlen(extra)))
            return -ENOSPC;
        r.topic = pq->topic;
        r.topic_len = (uint32_t)strlen(pq->topic);
        r.props = p->props;
        r.props_len = (uint32_t)plen;
        size_t sz = msg_record_size(r.body_len, r.topic_len, r.props_len, r.sysflag);
        if (buf_reserve(&p->body, sz))
            return -ENOMEM;
        int n = msg_record_encode(p->body.data + p->body.len, sz, &r);
        if (n < 0)
            return n;
        p->body.len += (size_t)n;
    }
    return 0;
}

enum run_result { RUN_ANSWERED, RUN_EMPTY };

/* Runs a pop. Without `final`, an empty result is left for the caller to hold. */
static enum run_result run(struct pop_ctx *p, rmt_conn *c, int32_t opaque, uint8_t ser, const struct popq *pq,
                           bool final)
{
    struct broker *b = p->b;
    struct gather *g = &p->g;
    g->n = g->nh = 0;
    g->rest = 0;
    g->any_retry = false;
    buf_reset(&p->sinfo);
    buf_reset(&p->minfo);
    buf_reset(&p->oinfo);
    int64_t now = brk_now_ms();
    bool use_retry = !pq->order && pq->retry[0];
    if (use_retry && p->npop++ % RETRY_FIRST_EVERY == 0)
        pop_topic(p, pq, pq->retry, true, now);
    if (g->n < (uint32_t)pq->max)
        pop_topic(p, pq, pq->topic, false, now);
    if (use_retry && g->n < (uint32_t)pq->max)
        pop_topic(p, pq, pq->retry, true, now);
    if (g->n == 0 && !final) {
        gather_release(g);
        return RUN_EMPTY;
    }
    int rqid = pq->order ? ORDER_REVIVE_QID : 0;
    rmt_cmd *r = brk_resp(b, g->n ? RMT_RESP_SUCCESS : RMT_RESP_POLLING_TIMEOUT);
    r->opaque = opaque;
    r->serialize = ser;
    r->flag = RMT_FLAG_RESPONSE;
    rmt_cmd_set_remark(r, "%s", g->n ? "FOUND" : "NO_MESSAGE_IN_QUEUE");
    rmt_cmd_set_ext_int(r, "popTime", now);
    rmt_cmd_set_ext_int(r, "invisibleTime", pq->invis);
    rmt_cmd_set_ext_int(r, "reviveQid", rqid);
    rmt_cmd_set_ext_int(r, "restNum", g->rest);
    rmt_cmd_set_ext_n(r, "startOffsetInfo", (const char *)p->sinfo.data, p->sinfo.len);
    rmt_cmd_set_ext_n(r, "msgOffsetInfo", (const char *)p->minfo.data, p->minfo.len);
    if (pq->order)
        rmt_cmd_set_ext_n(r, "orderCountInfo", (const char *)p->oinfo.data, p->oinfo.len);
    if (g->n == 0) {
        rmt_conn_send(c, r);
        return RUN_ANSWERED;
    }
    b->stats.get_found++;
    b->stats.get_msgs += g->n;
    struct hold_ctx *hc = g->any_retry ? NULL : hold_get(p);
    if (!hc) {
        int rc = build_copy_body(p, pq, now, rqid);
        gather_release(g);
        if (rc) {
            /* The messages stay in flight and come back after invisibleTime. */
            log_error("pop: cannot build the answer for %s/%s: %s", pq->group, pq->topic, strerror(-rc));
            rmt_cmd_reset(r, RMT_RESP_SYSTEM_ERROR);
            r->opaque = opaque;
            r->serialize = ser;
            r->flag = RMT_FLAG_RESPONSE;
            rmt_cmd_set_remark(r, "pop: cannot build the answer: %s", strerror(-rc));
            rmt_conn_send(c, r);
            return RUN_ANSWERED;
        }
        rmt_cmd_set_body(r, p->body.data, (uint32_t)p->body.len);
        rmt_conn_send(c, r);
        return RUN_ANSWERED;
    }
    int n = 0;
    for (uint32_t i = 0; i < g->n; i++) {
        const uint8_t *d = g->views[i].data;
        b->stats.get_bytes += g->views[i].len;
        if (n && (const uint8_t *)p->iov[n - 1].iov_base + p->iov[n - 1].iov_len == d) {
            p->iov[n - 1].iov_len += g->views[i].len;
        } else {
            p->iov[n].iov_base = (void *)d;
            p->iov[n].iov_len = g->views[i].len;
            n++;
        }
    }
    memcpy(hc->h, g->holds, g->nh * sizeof g->holds[0]);
    hc->n = (int)g->nh;
    g->nh = 0;
    rmt_conn_send_iov(c, r, p->iov, n, hold_release, hc);
    return RUN_ANSWERED;
}

/* ---- long polling ---- */

static void unhold(struct pop_ctx *p, struct held *h)
{
    if (h->prev)
        h->prev->next = h->next;
    else
        p->held = h->next;
    if (h->next)
        h->next->prev = h->prev;
    atomic_fetch_sub(&p->waiters[h->h1 % NBUCKETS], 1);
    if (h->h2)
        atomic_fetch_sub(&p->waiters[h->h2 % NBUCKETS], 1);
    ev_timer_stop(p->b->loop, &h->timer);
    rmt_conn_unref(h->conn);
    h->conn = NULL;
    h->next = p->free_held;
    p->free_held = h;
    p->nheld--;
}

static void on_held_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct held *h = w->data;
    if (rmt_conn_is_open(h->conn))
        run(h->p, h->conn, h->opaque, h->ser, &h->q, true);
    unhold(h->p, h);
}

static void suspend(struct pop_ctx *p, rmt_conn *c, const rmt_cmd *req, const struct popq *q, int64_t ms)
{
    if (p->nheld >= MAX_HELD) {
        brk_err(p->b, c, req, RMT_RESP_POLLING_FULL, "the broker[%s] pop polling queue is full", p->b->addr);
        return;
    }
    struct held *h = p->free_held;
    if (h)
        p->free_held = h->next;
    else
        h = calloc(1, sizeof *h);
    if (!h) {
        run(p, c, req->opaque, req->serialize, q, true);
        return;
    }
    h->p = p;
    h->q = *q;
    h->h1 = thash(q->topic);
    h->h2 = q->retry[0] && !q->order ? thash(q->retry) : 0;
    atomic_fetch_add(&p->waiters[h->h1 % NBUCKETS], 1);
    if (h->h2)
        atomic_fetch_add(&p->waiters[h->h2 % NBUCKETS], 1);
    h->conn = c;
    rmt_conn_ref(c);
    h->opaque = req->opaque;
    h->ser = req->serialize;
    h->prev = NULL;
    h->next = p->held;
    if (h->next)
        h->next->prev = h;
    p->held = h;
    p->nheld++;
    ev_timer_init(&h->timer, on_held_timeout, (double)ms / 1000.0, 0.0);
    h->timer.data = h;
    ev_timer_start(p->b->loop, &h->timer);
    /* A message dispatched between the first look and the registration. */
    if (run(p, c, h->opaque, h->ser, &h->q, false) == RUN_ANSWERED)
        unhold(p, h);
}

/* Re-runs held pops interested in topic hash th (0: all). */
static void recheck(struct pop_ctx *p, const uint64_t *hs, unsigned n, bool all)
{
    struct held *h = p->held;
    while (h) {
        struct held *next = h->next;
        bool hit = all;
        for (unsigned i = 0; i < n && !hit; i++)
            hit = hs[i] == h->h1 || (h->h2 && hs[i] == h->h2);
        if (hit) {
            if (!rmt_conn_is_open(h->conn))
                unhold(p, h);
            else if (run(p, h->conn, h->opaque, h->ser, &h->q, false) == RUN_ANSWERED)
                unhold(p, h);
        }
        h = next;
    }
}

static void notify_topic(struct pop_ctx *p, const char *topic)
{
    if (!p->nheld)
        return;
    uint64_t h = thash(topic);
    recheck(p, &h, 1, false);
}

void pop_dispatch_hook(const char *topic, int queue_id, int64_t queue_offset, int64_t tag_hash, void *ud)
{
    struct pop_ctx *p = ud;
    if (!p)
        return;
    pull_dispatch_hook(topic, queue_id, queue_offset, tag_hash, p->b->pull);
    uint64_t h = thash(topic);
    if (atomic_load_explicit(&p->waiters[h % NBUCKETS], memory_order_seq_cst) == 0)
        return;
    wr_push(&p->ring, h);
    ev_async_send(p->b->loop, &p->wake);
}

static void on_wake(struct ev_loop *loop, ev_async *w, int revents)
{
    struct pop_ctx *p = w->data;
    uint64_t hs[WR_CAP];
    bool overflow;
    unsigned n = wr_drain(&p->ring, hs, &overflow);
    if (p->b->stopping || !p->nheld)
        return;
    recheck(p, hs, n, overflow);
}

void pop_on_conn_closed(struct pop_ctx *p, rmt_conn *c)
{
    struct held *h = p->held;
    while (h) {
        struct held *next = h->next;
        if (h->conn == c)
            unhold(p, h);
        h = next;
    }
}

/* ---- revive ---- */

static void rv_complete(struct pop_ctx *p, struct rv *r)
{
    struct pst_queue *q = r->q;
    int i = pst_find(q, r->off);
    if (i >= 0 && q->e[i].reviving && q->e[i].pop_time == r->pop_time) {
        if (r->st == STORE_PUT_OK) {
            if (pst_del(p->st, q, (uint32_t)i) == 0)
                commit_consumer_offset(p, q);
        } else {
            log_warn("pop revive of %s/%d offset %lld (%s): the copy is not durable (%s); retrying",
                     q->topic, q->qid, (long long)r->off, q->group, store_put_status_str(r->st));
            q->e[i].reviving = 0;
            q->e[i].deadline = brk_now_ms() + REVIVE_RETRY_MS;
            if (q->e[i].deadline < q->next_deadline)
                q->next_deadline = q->e[i].deadline;
        }
    }
    r->next = p->rv_free;
    p->rv_free = r;
    p->rv_pending--;
}

static void on_rv_flushed(enum store_put_status st, void *ud)
{
    struct rv *r = ud;
    struct pop_ctx *p = r->p;
    r->st = st;
    pthread_mutex_lock(&p->rmu);
    r->next = p->rv_done;
    p->rv_done = r;
    pthread_mutex_unlock(&p->rmu);
    ev_async_send(p->b->loop, &p->rv_wake);
}

static void rv_drain(struct pop_ctx *p)
{
    pthread_mutex_lock(&p->rmu);
    struct rv *l = p->rv_done;
    p->rv_done = NULL;
    pthread_mutex_unlock(&p->rmu);
    while (l) {
        struct rv *r = l;
        l = r->next;
        rv_complete(p, r);
    }
}

static void on_rv_wake(struct ev_loop *loop, ev_async *w, int revents) { rv_drain(w->data); }

/* Copies in-flight entry i of q to the retry topic (or the DLQ) and removes
 * the entry once the copy is durable. Returns 1 if the entry was removed
 * right away (message gone), else 0. */
static int revive_one(struct pop_ctx *p, struct pst_queue *q, uint32_t i, int64_t now)
{
    struct broker *b = p->b;
    struct pst_entry *e = &q->e[i];
    struct store_view v;
    struct store_get_req gr = { .topic = q->topic, .queue_id = q->qid, .offset = e->off, .max_count = 1,
                                .views = &v };
    struct store_get_result res;
    memset(&res, 0, sizeof res);
    struct msg_record rec;
    if (store_get(b->store, &gr, &res) != STORE_GET_FOUND || res.count != 1 || v.queue_offset != e->off ||
        msg_record_decode(v.data, v.len, &rec, 0) <= 0) {
        store_hold_release(&res.hold);
        log_warn("pop revive: message %s/%d offset %lld of %s is gone from the store; dropped", q->topic,
                 q->qid, (long long)e->off, q->group);
        if (pst_del(p->st, q, i) == 0) {
            commit_consumer_offset(p, q);
            return 1;
        }
        return 0;
    }
    const struct meta_group *g = meta_group_get(b->meta, q->group);
    int32_t maxr = g ? g->retry_max_times : 16;
    char orig[META_TOPIC_NAME_MAX + 1];
    const char *val;
    size_t vl;
    bool from_retry = has_prefix(q->topic, BRK_RETRY_PREFIX);
    if (from_retry && msg_prop_get(rec.props, rec.props_len, MSG_PROP_RETRY_TOPIC, &val, &vl) &&
        vl < sizeof orig) {
        memcpy(orig, val, vl);
        orig[vl] = 0;
    } else {
        snprintf(orig, sizeof orig, "%s", q->topic);
    }
    int32_t times = rec.reconsume_times;
    if (e->order && e->count - 1 > times)
        times = e->count - 1;
    bool dlq = times >= maxr;
    char dest[META_TOPIC_NAME_MAX + 64];
    if (!dlq) {
        if (from_retry)
            snprintf(dest, sizeof dest, "%s", q->topic);
        else
            retry_topic(dest, sizeof dest, q->group, q->topic);
        if (!dest[0])
            dlq = true;
    }
    if (dlq)
        snprintf(dest, sizeof dest, "%s%s", BRK_DLQ_PREFIX, q->group);
    if (!meta_topic_name_valid(dest) || !brk_topic_system(b, dest, 1, META_PERM_READ | META_PERM_WRITE)) {
        store_hold_release(&res.hold);
        log_error("pop revive: cannot create topic %s for %s/%d offset %lld; retrying later", dest, q->topic,
                  q->qid, (long long)e->off);
        e->deadline = now + REVIVE_RETRY_MS;
        return 0;
    }
    size_t plen = rec.props_len;
    int rc = rec.props_len < PROPS_CAP ? 0 : -ENOSPC;
    if (!rc)
        memcpy(p->props, rec.props, rec.props_len);
    if (!rc && !msg_prop_get(rec.props, rec.props_len, MSG_PROP_RETRY_TOPIC, &val, &vl))
        rc = msg_prop_append(p->props, PROPS_CAP, &plen, MSG_PROP_RETRY_TOPIC, orig, strlen(orig));
    if (!rc && !msg_prop_get(rec.props, rec.props_len, MSG_PROP_FIRST_POP_TIME, &val, &vl)) {
        char t[24];
        int tl = snprintf(t, sizeof t, "%lld", (long long)e->pop_time);
        rc = msg_prop_append(p->props, PROPS_CAP, &plen, MSG_PROP_FIRST_POP_TIME, t, (size_t)tl);
    }
    if (rc) {
        /* No room for the extra properties: keep the original ones. */
        memcpy(p->props, rec.props, rec.props_len);
        plen = rec.props_len;
    }
    struct store_msg m = {
        .topic = dest, .queue_id = 0, .flag = rec.flag, .sysflag = rec.sysflag & ~MSG_SYSFLAG_STOREHOST_V6,
        .body = rec.body, .body_len = rec.body_len, .props = p->props, .props_len = (uint32_t)plen,
        .born_ts = rec.born_ts, .born_host = rec.born_host, .reconsume_times = times + 1,
    };
    struct store_put_result pr;
    enum store_put_status st = store_put(b->store, &m, &pr);
    store_hold_release(&res.hold);
    if (st != STORE_PUT_OK) {
        log_warn("pop revive: storing %s/%d offset %lld of %s into %s failed: %s; retrying", q->topic, q->qid,
                 (long long)e->off, q->group, dest, store_put_status_str(st));
        e->deadline = now + REVIVE_RETRY_MS;
        return 0;
    }
    b->stats.put_msgs++;
    if (dlq)
        log_info("pop: message %s/%d offset %lld of %s moved to %s after %d deliveries", q->topic, q->qid,
                 (long long)e->off, q->group, dest, times + 1);
    struct rv *r = p->rv_free;
    if (r)
        p->rv_free = r->next;
    else
        r = calloc(1, sizeof *r);
    if (!r) {
        /* Cannot track the flush: leave the entry; it is revived again later. */
        e->deadline = now + REVIVE_RETRY_MS;
        return 0;
    }
    r->p = p;
    r->q = q;
    r->off = e->off;
    r->pop_time = e->pop_time;
    r->st = STORE_PUT_OK;
    e->reviving = 1;
    p->rv_pending++;
    int fw = store_flush_wait(b->store, pr.end_offset, on_rv_flushed, r);
    if (fw == 1) {
        rv_complete(p, r);
    } else if (fw < 0) {
        r->st = STORE_PUT_FLUSH_DISK_TIMEOUT;
        rv_complete(p, r);
    }
    return 0;
}

static void on_revive(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct pop_ctx *p = w->data;
    if (p->b->stopping || p->b->cfg.role == BRK_SLAVE)
        return;
    int64_t now = brk_now_ms();
    for (struct pst_queue *q = pst_first(p->st); q; q = q->next) {
        if (!q->n || q->next_deadline > now)
            continue;
        int64_t nd = INT64_MAX;
        const struct meta_group *g = NULL;
        bool unlocked = false;
        for (uint32_t i = 0; i < q->n;) {
            struct pst_entry *e = &q->e[i];
            if (e->reviving) {
                i++;
                continue;
            }
            if (e->deadline > now) {
                if (e->deadline < nd)
                    nd = e->deadline;
                i++;
                continue;
            }
            if (e->order) {
                if (!g)
                    g = meta_group_get(p->b->meta, q->group);
                int32_t maxr = g ? g->retry_max_times : 16;
                if (e->count - 1 < maxr) {
                    unlocked = true;
                    i++;
                    continue;
                }
            }
            if (revive_one(p, q, i, now) == 0) {
                if (!q->e[i].reviving && q->e[i].deadline < nd)
                    nd = q->e[i].deadline;
                i++;
            }
        }
        q->next_deadline = nd;
        if (unlocked)
            notify_topic(p, q->topic);
    }
}

/* ---- ack / change invisible time ---- */

static void pend_done(struct pst_waiter *w, int rc)
{
    struct pend *pd = (struct pend *)w;
    struct pop_ctx *p = pd->p;
    struct broker *b = p->b;
    if (rmt_conn_is_open(pd->conn)) {
        rmt_cmd *r = brk_resp(b, rc ? RMT_RESP_SYSTEM_ERROR : RMT_RESP_SUCCESS);
        r->opaque = pd->opaque;
        r->serialize = pd->ser;
        r->flag = RMT_FLAG_RESPONSE;
        if (rc)
            rmt_cmd_set_remark(r, "persisting the pop state failed: %s; retry", strerror(-rc));
        else if (pd->cit) {
            rmt_cmd_set_ext_int(r, "popTime", pd->pop_time);
            rmt_cmd_set_ext_int(r, "invisibleTime", pd->invis);
            rmt_cmd_set_ext_int(r, "reviveQid", pd->rqid);
        }
        rmt_conn_send(pd->conn, r);
    }
    rmt_conn_unref(pd->conn);
    pd->conn = NULL;
    pd->free_next = p->free_pend;
    p->free_pend = pd;
}

/* Answers req once everything logged so far is durable. */
static void answer_after_commit(struct pop_ctx *p, rmt_conn *c, const rmt_cmd *req, struct pend *tmpl)
{
    if (rmt_cmd_is_oneway(req))
        return;
    struct pend *pd = p->free_pend;
    if (pd)
        p->free_pend = pd->free_next;
    else
        pd = calloc(1, sizeof *pd);
    if (!pd) {
        brk_err(p->b, c, req, RMT_RESP_SYSTEM_ERROR, "out of memory");
        return;
    }
    if (tmpl) {
        pd->cit = true;
        pd->pop_time = tmpl->pop_time;
        pd->invis = tmpl->invis;
        pd->rqid = tmpl->rqid;
    } else {
        pd->cit = false;
    }
    pd->p = p;
    pd->w.done = pend_done;
    pd->conn = c;
    rmt_conn_ref(c);
    pd->opaque = req->opaque;
    pd->ser = req->serialize;
    pst_barrier(p->st, &pd->w);
}

struct extra {
    int64_t ck, pop_time, invis;
    int rqid;
    bool retry;
};

static int parse_extra(const char *s, struct extra *x)
{
    char tmp[EXTRA_MAX];
    if (!s || strlen(s) >= sizeof tmp)
        return -EINVAL;
    snprintf(tmp, sizeof tmp, "%s", s);
    char *f[9];
    int n = 0;
    char *save = NULL;
    for (char *t = strtok_r(tmp, " ", &save); t && n < 9; t = strtok_r(NULL, " ", &save))
        f[n++] = t;
    if (n < 7)
        return -EINVAL;
    char *end;
    x->ck = strtoll(f[0], &end, 10);
    if (*end)
        return -EINVAL;
    x->pop_time = strtoll(f[1], &end, 10);
    if (*end)
        return -EINVAL;
    x->invis = strtoll(f[2], &end, 10);
    if (*end)
        return -EINVAL;
    x->rqid = (int)strtol(f[3], &end, 10);
    if (*end)
        return -EINVAL;
    x->retry = strcmp(f[4], "1") == 0;
    return 0;
}

/* The queue's real topic (retry topic for retry receipts). Answers and
 * returns NULL on a bad topic / queue. */
static const struct meta_topic *real_topic(struct pop_ctx *p, rmt_conn *c, const rmt_cmd *req,
                                           const char *group, const char *topic, bool retry, int64_t qid,
                                           char *out, size_t cap)
{
    if (retry && !has_prefix(topic, BRK_RETRY_PREFIX))
        retry_topic(out, cap, group, topic);
    else
        snprintf(out, cap, "%s", topic);
    const struct meta_topic *t = out[0] ? meta_topic_get(p->b->meta, out) : NULL;
    if (!t) {
        brk_err(p->b, c, req, RMT_RESP_TOPIC_NOT_EXIST, "topic[%s] not exist, apply first please!",
                out[0] ? out : topic);
        return NULL;
    }
    if (qid < 0 || qid >= t->read_queue_nums) {
        brk_err(p->b, c, req, RMT_RESP_MESSAGE_ILLEGAL,
                "queueId[%lld] is illegal, topic:[%s] topicConfig.readQueueNums:[%d] consumer:[%s]",
                (long long)qid, out, t->read_queue_nums, rmt_conn_peer(c));
        return NULL;
    }
    return t;
}

/* Acks one offset if its receipt (pop time) is current. */
static void ack_offset(struct pop_ctx *p, const char *group, const char *topic, int32_t qid, int64_t off,
                       int64_t pop_time)
{
    struct pst_queue *q = pst_queue(p->st, group, topic, qid, false);
    if (!q)
        return;
    int i = pst_find(q, off);
    if (i < 0 || q->e[i].pop_time != pop_time)
        return;
    bool order = q->e[i].order;
    if (pst_del(p->st, q, (uint32_t)i))
        return;
    commit_consumer_offset(p, q);
    if (order)
        notify_topic(p, topic);
}

static void on_ack(struct pop_ctx *p, rmt_conn *c, rmt_cmd *req)
{
    struct broker *b = p->b;
    const char *group, *topic, *extra;
    int64_t qid, off;
    if (brk_need_str(b, c, req, "consumerGroup", &group) || brk_need_str(b, c, req, "topic", &topic) ||
        brk_need_int(b, c, req, "queueId", &qid) || brk_need_str(b, c, req, "extraInfo", &extra) ||
        brk_need_int(b, c, req, "offset", &off))
        return;
    struct extra x;
    if (parse_extra(extra, &x)) {
        brk_err(b, c, req, RMT_RESP_INVALID_PARAMETER, "ack: malformed extraInfo '%.200s'", extra);
        return;
    }
    char real[META_TOPIC_NAME_MAX + 64];
    if (!real_topic(p, c, req, group, topic, x.retry, qid, real, sizeof real))
        return;
    int64_t min = store_min_queue_offset(b->store, real, (int32_t)qid);
    int64_t max = store_max_queue_offset(b->store, real, (int32_t)qid);
    if (off < min || off > max) {
        brk_err(b, c, req, RMT_RESP_NO_MESSAGE, "offset is illegal, key:%s@%lld, commit:%lld, store:%lld~%lld",
                real, (long long)qid, (long long)off, (long long)min, (long long)max);
        return;
    }
    ack_offset(p, group, real, (int32_t)qid, off, x.pop_time);
    answer_after_commit(p, c, req, NULL);
}

static const char *jstr(json_t *o, const char *a, const char *b)
{
    json_t *v = json_object_get(o, a);
    if (!v)
        v = json_object_get(o, b);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

static bool jint(json_t *o, const char *a, const char *b, int64_t *out)
{
    json_t *v = json_object_get(o, a);
    if (!v)
        v = json_object_get(o, b);
    if (json_is_integer(v)) {
        *out = json_integer_value(v);
        return true;
    }
    if (json_is_string(v)) {
        char *end;
        *out = strtoll(json_string_value(v), &end, 10);
        return *end == 0;
    }
    return false;
}

static int b64v(int c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+' || c == '-')
        return 62;
    if (c == '/' || c == '_')
        return 63;
    return -1;
}

/* Decodes base64 (the fastjson form of BitSet.toByteArray()). Returns the
 * byte count or -1. */
static int b64_decode(const char *s, uint8_t *out, size_t cap)
{
    size_t n = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (; *s && *s != '='; s++) {
        int v = b64v((unsigned char)*s);
        if (v < 0)
            return -1;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (n == cap)
                return -1;
            out[n++] = (uint8_t)(acc >> bits);
        }
    }
    return (int)n;
}

/* BATCH_ACK_MESSAGE: body BatchAckMessageRequestBody {"brokerName", "acks":[BatchAck]} with
 * BatchAck fields c/t/r/so/q/rq/pt/it/b (long names accepted too). */
static void on_batch_ack(struct pop_ctx *p, rmt_conn *c, rmt_cmd *req)
{
    struct broker *b = p->b;
    json_error_t je;
    json_t *root = req->body_len ? json_loadb((const char *)req->body, req->body_len, 0, &je) : NULL;
    json_t *acks = root ? json_object_get(root, "acks") : NULL;
    if (!json_is_array(acks) || json_array_size(acks) == 0) {
        json_decref(root);
        brk_err(b, c, req, RMT_RESP_NO_MESSAGE, "batch ack: the body has no acks");
        return;
    }
    size_t i;
    json_t *a;
    json_array_foreach(acks, i, a) {
        const char *group = jstr(a, "c", "consumerGroup"), *topic = jstr(a, "t", "topic");
        const char *retry = jstr(a, "r", "retry"), *bits = jstr(a, "b", "bitSet");
        int64_t so, qid, pt;
        if (!group || !topic || !bits || !jint(a, "so", "startOffset", &so) || !jint(a, "q", "queueId", &qid) ||
            !jint(a, "pt", "popTime", &pt)) {
            json_decref(root);
            brk_err(b, c, req, RMT_RESP_INVALID_PARAMETER, "batch ack: ack %zu lacks c, t, so, q, pt or b", i);
            return;
        }
        char real[META_TOPIC_NAME_MAX + 64];
        bool is_retry = retry && strcmp(retry, "1") == 0;
        if (is_retry && !has_prefix(topic, BRK_RETRY_PREFIX))
            retry_topic(real, sizeof real, group, topic);
        else
            snprintf(real, sizeof real, "%s", topic);
        const struct meta_topic *t = real[0] ? meta_topic_get(b->meta, real) : NULL;
        if (!t || qid < 0 || qid >= t->read_queue_nums)
            continue;
        uint8_t set[4096];
        int nb = b64_decode(bits, set, sizeof set);
        if (nb < 0) {
            json_decref(root);
            brk_err(b, c, req, RMT_RESP_INVALID_PARAMETER, "batch ack: ack %zu has a malformed bitSet", i);
            return;
        }
        for (int k = 0; k < nb * 8; k++)
            if (set[k / 8] & (1u << (k % 8)))
                ack_offset(p, group, real, (int32_t)qid, so + k, pt);
    }
    json_decref(root);
    answer_after_commit(p, c, req, NULL);
}

static void on_change_invisible(struct pop_ctx *p, rmt_conn *c, rmt_cmd *req)
{
    struct broker *b = p->b;
    const char *group, *topic, *extra;
    int64_t qid, off, invis;
    if (brk_need_str(b, c, req, "consumerGroup", &group) || brk_need_str(b, c, req, "topic", &topic) ||
        brk_need_int(b, c, req, "queueId", &qid) || brk_need_str(b, c, req, "extraInfo", &extra) ||
        brk_need_int(b, c, req, "offset", &off) || brk_need_int(b, c, req, "invisibleTime", &invis))
        return;
    struct extra x;
    if (parse_extra(extra, &x)) {
        brk_err(b, c, req, RMT_RESP_INVALID_PARAMETER, "changeInvisibleTime: malformed extraInfo '%.200s'", extra);
        return;
    }
    if (invis < 0) {
        brk_err(b, c, req, RMT_RESP_INVALID_PARAMETER, "changeInvisibleTime: invisibleTime must be >= 0");
        return;
    }
    char real[META_TOPIC_NAME_MAX + 64];
    if (!real_topic(p, c, req, group, topic, x.retry, qid, real, sizeof real))
        return;
    struct pst_queue *q = pst_queue(p->st, group, real, (int32_t)qid, false);
    int i = q ? pst_find(q, off) : -1;
    if (i < 0 || q->e[i].pop_time != x.pop_time || q->e[i].reviving) {
        brk_err(b, c, req, RMT_RESP_NO_MESSAGE,
                "changeInvisibleTime: message %s/%lld offset %lld is not in flight with this receipt "
                "(acked, redelivered, or a newer receipt exists)",
                real, (long long)qid, (long long)off);
        return;
    }
    struct pst_entry *e = &q->e[i];
    int64_t now = brk_now_ms();
    struct pend t = { .rqid = x.rqid };
    if (e->order) {
        e->deadline = now + invis;
        t.pop_time = e->pop_time;
        t.invis = e->deadline - e->pop_time;
    } else {
        e->pop_time = now;
        e->deadline = now + invis;
        t.pop_time = now;
        t.invis = invis;
    }
    if (pst_update(p->st, q, (uint32_t)i)) {
        brk_err(b, c, req, RMT_RESP_SYSTEM_ERROR, "changeInvisibleTime: out of memory");
        return;
    }
    answer_after_commit(p, c, req, &t);
}

/* ---- pop ---- */

static void on_pop(struct pop_ctx *p, rmt_conn *c, rmt_cmd *req)
{
    struct broker *b = p->b;
    const char *group, *topic;
    int64_t qid, max, invis, poll, born, init_mode;
    if (brk_need_str(b, c, req, "consumerGroup", &group) || brk_need_str(b, c, req, "topic", &topic) ||
        brk_need_int(b, c, req, "queueId", &qid) || brk_need_int(b, c, req, "maxMsgNums", &max) ||
        brk_need_int(b, c, req, "invisibleTime", &invis) || brk_opt_int(b, c, req, "pollTime", 0, &poll) ||
        brk_opt_int(b, c, req, "bornTime", 0, &born) || brk_opt_int(b, c, req, "initMode", 0, &init_mode))
        return;
    int64_t now = brk_now_ms();
    if (born == 0)
        born = now;
    if (now - born - poll > 500) {
        brk_err(b, c, req, RMT_RESP_POLLING_TIMEOUT, "the broker[%s] pop message is timeout too much", b->addr);
        return;
    }
    if (!brk_readable(b)) {
        brk_err(b, c, req, RMT_RESP_NO_PERMISSION, "the broker[%s] pop message is forbidden", b->addr);
        return;
    }
    if (max > POP_MAX_NUMS || max <= 0) {
        brk_err(b, c, req, RMT_RESP_INVALID_PARAMETER, "the broker[%s] pop message's num is %s", b->addr,
                max <= 0 ? "not positive" : "greater than 32");
        return;
    }
    if (invis <= 0 || poll < 0) {
        brk_err(b, c, req, RMT_RESP_INVALID_PARAMETER, "pop: invisibleTime must be > 0 and pollTime >= 0");
        return;
    }
    if (strlen(topic) > META_TOPIC_NAME_MAX || strlen(group) > META_GROUP_NAME_MAX) {
        brk_err(b, c, req, RMT_RESP_INVALID_PARAMETER, "pop: topic or consumerGroup name too long");
        return;
    }
    const struct meta_topic *t = meta_topic_get(b->meta, topic);
    if (!t) {
        brk_err(b, c, req, RMT_RESP_TOPIC_NOT_EXIST, "topic[%s] not exist, apply first please!", topic);
        return;
    }
    if (!(t->perm & META_PERM_READ)) {
        brk_err(b, c, req, RMT_RESP_NO_PERMISSION, "the topic[%s] peeking message is forbidden", topic);
        return;
    }
    if (qid >= t->read_queue_nums) {
        brk_err(b, c, req, RMT_RESP_INVALID_PARAMETER,
                "queueId[%lld] is illegal, topic:[%s] topicConfig.readQueueNums:[%d] consumer:[%s]",
                (long long)qid, topic, t->read_queue_nums, rmt_conn_peer(c));
        return;
    }
    const struct meta_group *g = brk_group(b, group);
    if (!g) {
        brk_err(b, c, req, RMT_RESP_SUBSCRIPTION_GROUP_NOT_EXIST, "subscription group [%s] does not exist",
                group);
        return;
    }
    if (!g->consume_enable) {
        brk_err(b, c, req, RMT_RESP_NO_PERMISSION, "subscription group no permission, %s", group);
        return;
    }
    struct popq *q = &p->scratch;
    const char *etype = rmt_cmd_ext(req, "expType");
    const char *exp = rmt_cmd_ext(req, "exp");
    if (etype && *etype && strcmp(etype, "TAG") != 0) {
        brk_err(b, c, req, RMT_RESP_SUBSCRIPTION_PARSE_FAILED,
                "the broker does not support consumer to filter message by %s", etype);
        return;
    }
    if (cm_parse_filter(exp, &q->filter)) {
        brk_err(b, c, req, RMT_RESP_SUBSCRIPTION_PARSE_FAILED, "parse the consumer's subscription failed");
        return;
    }
    snprintf(q->group, sizeof q->group, "%s", group);
    snprintf(q->topic, sizeof q->topic, "%s", topic);
    retry_topic(q->retry, sizeof q->retry, group, topic);
    if (has_prefix(topic, BRK_RETRY_PREFIX))
        q->retry[0] = 0;
    q->qid = qid < 0 ? -1 : (int32_t)qid;
    q->max = (int32_t)max;
    q->invis = invis;
    q->poll = poll;
    q->born = born;
    q->init_mode = (int32_t)init_mode;
    const char *order = rmt_cmd_ext(req, "order");
    q->order = order && strcmp(order, "true") == 0;
    bool can_hold = poll > 0 && !rmt_cmd_is_oneway(req);
    if (run(p, c, req->opaque, req->serialize, q, !can_hold) == RUN_ANSWERED)
        return;
    int64_t left = born + poll - now;
    if (left <= 0) {
        run(p, c, req->opaque, req->serialize, q, true);
        return;
    }
    suspend(p, c, req, q, left);
}

void pop_on_request(struct pop_ctx *p, rmt_conn *c, rmt_cmd *req)
{
    if (p->b->stopping) {
        brk_err(p->b, c, req, RMT_RESP_SERVICE_NOT_AVAILABLE, "the broker %s is shutting down", p->b->addr);
        return;
    }
    if (p->b->cfg.role == BRK_SLAVE && req->code != RMT_REQ_POP_MESSAGE) {
        brk_err(p->b, c, req, RMT_RESP_NO_PERMISSION, "the broker[%s] is a slave; pop state lives on the master",
                p->b->addr);
        return;
    }
    switch (req->code) {
    case RMT_REQ_POP_MESSAGE:
        on_pop(p, c, req);
        return;
    case RMT_REQ_ACK_MESSAGE:
        on_ack(p, c, req);
        return;
    case RMT_REQ_BATCH_ACK_MESSAGE:
        on_batch_ack(p, c, req);
        return;
    case RMT_REQ_CHANGE_MESSAGE_INVISIBLETIME:
        on_change_invisible(p, c, req);
        return;
    default:
        brk_err(p->b, c, req, RMT_RESP_REQUEST_CODE_NOT_SUPPORTED, "request code %d not supported", req->code);
    }
}

void pop_stop(struct pop_ctx *p)
{
    if (!p)
        return;
    ev_timer_stop(p->b->loop, &p->revive);
    while (p->held) {
        struct held *h = p->held;
        if (rmt_conn_is_open(h->conn))
            run(p, h->conn, h->opaque, h->ser, &h->q, true);
        unhold(p, h);
    }
    rv_drain(p);
    pst_flush_sync(p->st);
}

void pop_free(struct pop_ctx *p)
{
    if (!p)
        return;
    /* store_close completed every flush wait: apply the finished revives. */
    rv_drain(p);
    pst_close(p->st);
    ev_async_stop(p->b->loop, &p->wake);
    ev_async_stop(p->b->loop, &p->rv_wake);
    ev_timer_stop(p->b->loop, &p->revive);
    while (p->free_held) {
        struct held *h = p->free_held;
        p->free_held = h->next;
        free(h);
    }
    while (p->free_pend) {
        struct pend *pd = p->free_pend;
        p->free_pend = pd->free_next;
        free(pd);
    }
    while (p->rv_free) {
        struct rv *r = p->rv_free;
        p->rv_free = r->next;
        free(r);
    }
    for (size_t i = 0; i < p->nhold_chunks; i++)
        free(p->hold_chunks[i]);
    free(p->hold_chunks);
    wr_destroy(&p->ring);
    pthread_mutex_destroy(&p->rmu);
    buf_free(&p->body);
    buf_free(&p->sinfo);
    buf_free(&p->minfo);
    buf_free(&p->oinfo);
    free(p);
}
