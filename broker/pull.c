/*
 * Pull processing and long polling. Held pulls live in a fixed table of
 * buckets keyed by a hash of topic and queue; each bucket has an atomic
 * waiter count that the dispatch hook reads, so with no waiter on a queue a
 * dispatched message costs one atomic load. Marked queues go through a
 * bounded ring (an overflow re-checks every held pull) to the loop.
 * With slaveReadEnable, answers steer consumers that read far behind the
 * log's end to a slave (suggestWhichBrokerId); without it a slave refuses.
 */
#include "pull.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker.h"
#include "client_manager.h"
#include "log.h"
#include "wake_ring.h"

#define PULL_FLAG_COMMIT_OFFSET 0x1
#define PULL_FLAG_SUSPEND 0x2
#define PULL_FLAG_SUBSCRIPTION 0x4
#define PULL_FLAG_CLASS_FILTER 0x8

#define NBUCKETS 1024
#define HOLD_CHUNK 64

struct pq {
    char topic[META_TOPIC_NAME_MAX + 1];
    char group[META_GROUP_NAME_MAX + 1];
    int32_t qid;
    int64_t offset;
    int32_t max_nums;
    struct cm_filter filter;
};

struct held {
    struct held *next, *prev;
    struct pull_ctx *p;
    uint64_t hash;
    rmt_conn *conn;
    int32_t opaque;
    uint8_t serialize;
    ev_timer timer;
    struct pq q;
};

struct hold_ctx {
    struct hold_ctx *next;
    struct pull_ctx *p;
    struct store_hold h;
};

struct pull_ctx {
    struct broker *b;
    struct held *bucket[NBUCKETS];
    atomic_int waiters[NBUCKETS];
    unsigned nheld;
    ev_async wake;
    struct wake_ring ring;
    struct held *free_held;
    struct hold_ctx *free_hold;
    void **chunks;           /* every pool chunk, freed by pull_free */
    size_t nchunks;
    struct store_view *views;
    struct iovec *iov;
    uint32_t cap;
    struct pq scratch;
};

static uint64_t qhash(const char *topic, int32_t qid)
{
    uint64_t h = 1469598103934665603ull;
    for (const unsigned char *s = (const unsigned char *)topic; *s; s++)
        h = (h ^ *s) * 1099511628211ull;
    h = (h ^ (uint32_t)qid) * 1099511628211ull;
    return h;
}

static void on_wake(struct ev_loop *loop, ev_async *w, int revents);

struct pull_ctx *pull_new(struct broker *b)
{
    struct pull_ctx *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->b = b;
    p->cap = (uint32_t)b->cfg.max_transfer_count;
    p->views = calloc(p->cap, sizeof *p->views);
    p->iov = calloc(p->cap, sizeof *p->iov);
    if (!p->views || !p->iov) {
        free(p->views);
        free(p->iov);
        free(p);
        return NULL;
    }
    for (int i = 0; i < NBUCKETS; i++)
        atomic_init(&p->waiters[i], 0);
    wr_init(&p->ring);
    ev_async_init(&p->wake, on_wake);
    p->wake.data = p;
    ev_async_start(b->loop, &p->wake);
    return p;
}

unsigned pull_held(const struct pull_ctx *p) { return p->nheld; }

void pull_dispatch_hook(const char *topic, int queue_id, int64_t queue_offset, int64_t tag_hash,
                        void *ud)
{
    struct pull_ctx *p = ud;
    if (!p)
        return;
    uint64_t h = qhash(topic, queue_id);
    if (atomic_load_explicit(&p->waiters[h % NBUCKETS], memory_order_seq_cst) == 0)
        return;
    wr_push(&p->ring, h);
    ev_async_send(p->b->loop, &p->wake);
}

static void hold_release(void *ctx)
{
    struct hold_ctx *hc = ctx;
    store_hold_release(&hc->h);
    hc->next = hc->p->free_hold;
    hc->p->free_hold = hc;
}

/* Allocates a pool chunk and remembers it for pull_free. */
static void *chunk_new(struct pull_ctx *p, size_t n, size_t size)
{
    void **nc = realloc(p->chunks, (p->nchunks + 1) * sizeof *nc);
    if (!nc)
        return NULL;
    p->chunks = nc;
    void *c = calloc(n, size);
    if (c)
        p->chunks[p->nchunks++] = c;
    return c;
}

static struct hold_ctx *hold_get(struct pull_ctx *p)
{
    if (!p->free_hold) {
        struct hold_ctx *chunk = chunk_new(p, HOLD_CHUNK, sizeof *chunk);
        if (!chunk)
            return NULL;
        /* Chunks live until pull_free: a hold may outlive the request's
         * callbacks until the connection has written or dropped it. */
        for (int i = 0; i < HOLD_CHUNK; i++) {
            chunk[i].p = p;
            chunk[i].next = p->free_hold;
            p->free_hold = &chunk[i];
        }
    }
    struct hold_ctx *hc = p->free_hold;
    p->free_hold = hc->next;
    hc->h = (struct store_hold)STORE_HOLD_INIT;
    return hc;
}

static int tag_filter(int64_t tag_hash, void *ud)
{
    return cm_filter_match(ud, tag_hash);
}

enum run_result { RUN_ANSWERED, RUN_EMPTY };

/* suggestWhichBrokerId as RocketMQ's PullMessageProcessor: only with
 * slaveReadEnable, the group's whichBrokerWhenConsumeSlowly when the read
 * was far behind the log's end, else the group's brokerId; the master (0)
 * otherwise. */
static int64_t suggest_broker(struct broker *b, const struct pq *q, int far_behind)
{
    if (!b->cfg.slave_read_enable)
        return 0;
    const struct meta_group *g = meta_group_get(b->meta, q->group);
    struct meta_group def;
    if (!g) {
        meta_group_defaults(&def, q->group);
        g = &def;
    }
    return far_behind ? g->which_broker_when_consume_slowly : g->broker_id;
}

/* A slave without slaveReadEnable serves no pull: PULL_RETRY_IMMEDIATELY
 * with suggestWhichBrokerId 0 sends the consumer to the master. Unlike
 * RocketMQ, which passes on whatever offset its read would have reached,
 * nextBeginOffset stays the requested offset so nothing is skipped. */
static void refuse_on_slave(struct broker *b, rmt_conn *c, int32_t opaque, uint8_t ser, const struct pq *q)
{
    rmt_cmd *r = brk_resp(b, RMT_RESP_PULL_RETRY_IMMEDIATELY);
    r->opaque = opaque;
    r->serialize = ser;
    r->flag = RMT_FLAG_RESPONSE;
    rmt_cmd_set_remark(r, "the slave does not serve reads (slaveReadEnable=false)");
    rmt_cmd_set_ext_int(r, "suggestWhichBrokerId", 0);
    rmt_cmd_set_ext_int(r, "nextBeginOffset", q->offset);
    rmt_cmd_set_ext_int(r, "minOffset", store_min_queue_offset(b->store, q->topic, q->qid));
    rmt_cmd_set_ext_int(r, "maxOffset", store_max_queue_offset(b->store, q->topic, q->qid));
    b->stats.get_miss++;
    rmt_conn_send(c, r);
}

/* Runs the pull against the store. With `final`, always answers; otherwise
 * an empty result (nothing new, or nothing matching: the offset moves past
 * non-matching messages) is left unanswered for the caller to hold. */
static enum run_result run(struct pull_ctx *p, rmt_conn *c, int32_t opaque, uint8_t ser, struct pq *q,
                           bool final)
{
    struct broker *b = p->b;
    uint32_t max = q->max_nums > 0 ? (uint32_t)q->max_nums : 1;
    if (max > p->cap)
        max = p->cap;
    struct store_get_req gr = {
        .topic = q->topic, .queue_id = q->qid, .offset = q->offset, .max_count = max,
        .max_bytes = (uint32_t)b->cfg.max_transfer_bytes,
        .filter = q->filter.all ? NULL : tag_filter, .filter_ud = &q->filter, .views = p->views,
    };
    if (b->cfg.role == BRK_SLAVE && !b->cfg.slave_read_enable) {
        refuse_on_slave(b, c, opaque, ser, q);
        return RUN_ANSWERED;
    }
    struct store_get_result res;
    memset(&res, 0, sizeof res);
    enum store_get_status st = store_get(b->store, &gr, &res);
    int32_t code;
    switch (st) {
    case STORE_GET_FOUND:
        code = RMT_RESP_SUCCESS;
        break;
    case STORE_GET_MESSAGE_WAS_REMOVING:
        code = RMT_RESP_PULL_RETRY_IMMEDIATELY;
        break;
    case STORE_GET_NO_MATCHED_MESSAGE:
        if (!final && res.next_begin_offset > q->offset) {
            q->offset = res.next_begin_offset;
            store_hold_release(&res.hold);
            return RUN_EMPTY;
        }
        code = RMT_RESP_PULL_RETRY_IMMEDIATELY;
        break;
    case STORE_GET_NO_MATCHED_LOGIC_QUEUE:
    case STORE_GET_NO_MESSAGE_IN_QUEUE:
        code = q->offset != 0 ? RMT_RESP_PULL_OFFSET_MOVED : RMT_RESP_PULL_NOT_FOUND;
        break;
    case STORE_GET_OFFSET_OVERFLOW_BADLY:
    case STORE_GET_OFFSET_TOO_SMALL:
        code = RMT_RESP_PULL_OFFSET_MOVED;
        break;
    default:
        code = RMT_RESP_PULL_NOT_FOUND;
        break;
    }
    if (code == RMT_RESP_PULL_OFFSET_MOVED && b->cfg.role == BRK_SLAVE && st != STORE_GET_OFFSET_TOO_SMALL) {
        /* As a RocketMQ slave (offsetCheckInSlave=false): an offset beyond
         * this copy is one the master had and the slave has not received
         * yet; the consumer keeps it and waits instead of moving back. */
        code = RMT_RESP_PULL_NOT_FOUND;
        res.next_begin_offset = q->offset;
    }
    if (code == RMT_RESP_PULL_NOT_FOUND && !final) {
        store_hold_release(&res.hold);
        return RUN_EMPTY;
    }
    rmt_cmd *r = brk_resp(b, code);
    r->opaque = opaque;
    r->serialize = ser;
    r->flag = RMT_FLAG_RESPONSE;
    rmt_cmd_set_ext_int(r, "suggestWhichBrokerId", suggest_broker(b, q, res.suggest_pulling_from_slave));
    rmt_cmd_set_ext_int(r, "nextBeginOffset", res.next_begin_offset);
    rmt_cmd_set_ext_int(r, "minOffset", res.min_offset);
    rmt_cmd_set_ext_int(r, "maxOffset", res.max_offset);
    if (code == RMT_RESP_PULL_OFFSET_MOVED)
        log_info("pull offset %lld of %s/%d by %s moved to %lld (queue %lld..%lld)",
                 (long long)q->offset, q->topic, q->qid, q->group, (long long)res.next_begin_offset,
                 (long long)res.min_offset, (long long)res.max_offset);
    if (code != RMT_RESP_SUCCESS || res.count == 0) {
        if (code == RMT_RESP_SUCCESS)
            r->code = RMT_RESP_PULL_NOT_FOUND;
        store_hold_release(&res.hold);
        b->stats.get_miss++;
        rmt_conn_send(c, r);
        return RUN_ANSWERED;
    }
    int n = 0;
    for (uint32_t i = 0; i < res.count; i++) {
        const uint8_t *d = p->views[i].data;
        if (n && (const uint8_t *)p->iov[n - 1].iov_base + p->iov[n - 1].iov_len == d) {
            p->iov[n - 1].iov_len += p->views[i].len;
        } else {
            p->iov[n].iov_base = (void *)d;
            p->iov[n].iov_len = p->views[i].len;
            n++;
        }
    }
    b->stats.get_found++;
    b->stats.get_msgs += res.count;
    b->stats.get_bytes += res.total_bytes;
    struct hold_ctx *hc = hold_get(p);
    if (!hc) {
        /* Out of memory for the hold: copy instead of referencing. */
        buf_reset(&b->body);
        for (int i = 0; i < n; i++)
            buf_append(&b->body, p->iov[i].iov_base, p->iov[i].iov_len);
        store_hold_release(&res.hold);
        rmt_cmd_set_body(r, b->body.data, (uint32_t)b->body.len);
        rmt_conn_send(c, r);
        return RUN_ANSWERED;
    }
    hc->h = res.hold;
    rmt_conn_send_iov(c, r, p->iov, n, hold_release, hc);
    return RUN_ANSWERED;
}

static void unhold(struct pull_ctx *p, struct held *h)
{
    unsigned bk = (unsigned)(h->hash % NBUCKETS);
    if (h->prev)
        h->prev->next = h->next;
    else
        p->bucket[bk] = h->next;
    if (h->next)
        h->next->prev = h->prev;
    atomic_fetch_sub(&p->waiters[bk], 1);
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
    struct pull_ctx *p = h->p;
    if (rmt_conn_is_open(h->conn))
        run(p, h->conn, h->opaque, h->serialize, &h->q, true);
    unhold(p, h);
}

static struct held *held_get(struct pull_ctx *p)
{
    if (!p->free_held) {
        struct held *chunk = chunk_new(p, HOLD_CHUNK, sizeof *chunk);
        if (!chunk)
            return NULL;
        for (int i = 0; i < HOLD_CHUNK; i++) {
            chunk[i].next = p->free_held;
            p->free_held = &chunk[i];
        }
    }
    struct held *h = p->free_held;
    p->free_held = h->next;
    return h;
}

/* Parks a pull that found nothing. Registers the waiter before a last look
 * at the queue so a message dispatched in between is not missed. */
static void suspend(struct pull_ctx *p, rmt_conn *c, const rmt_cmd *req, struct pq *q, int64_t ms)
{
    uint64_t hash = qhash(q->topic, q->qid);
    unsigned bk = (unsigned)(hash % NBUCKETS);
    atomic_fetch_add(&p->waiters[bk], 1);
    if (store_max_queue_offset(p->b->store, q->topic, q->qid) > q->offset &&
        run(p, c, req->opaque, req->serialize, q, false) == RUN_ANSWERED) {
        atomic_fetch_sub(&p->waiters[bk], 1);
        return;
    }
    struct held *h = held_get(p);
    if (!h) {
        atomic_fetch_sub(&p->waiters[bk], 1);
        run(p, c, req->opaque, req->serialize, q, true);
        return;
    }
    h->p = p;
    h->hash = hash;
    h->conn = c;
    rmt_conn_ref(c);
    h->opaque = req->opaque;
    h->serialize = req->serialize;
    h->q = *q;
    h->prev = NULL;
    h->next = p->bucket[bk];
    if (h->next)
        h->next->prev = h;
    p->bucket[bk] = h;
    p->nheld++;
    ev_timer_init(&h->timer, on_held_timeout, (double)ms / 1000.0, 0.0);
    h->timer.data = h;
    ev_timer_start(p->b->loop, &h->timer);
}

static void recheck_bucket(struct pull_ctx *p, unsigned bk, uint64_t hash, bool all)
{
    struct held *h = p->bucket[bk];
    while (h) {
        struct held *next = h->next;
        if (all || h->hash == hash) {
            if (!rmt_conn_is_open(h->conn))
                unhold(p, h);
            else if (run(p, h->conn, h->opaque, h->serialize, &h->q, false) == RUN_ANSWERED)
                unhold(p, h);
        }
        h = next;
    }
}

static void on_wake(struct ev_loop *loop, ev_async *w, int revents)
{
    struct pull_ctx *p = w->data;
    uint64_t hashes[WR_CAP];
    bool overflow;
    unsigned n = wr_drain(&p->ring, hashes, &overflow);
    if (p->b->stopping)
        return;
    if (overflow) {
        for (unsigned bk = 0; bk < NBUCKETS; bk++)
            recheck_bucket(p, bk, 0, true);
        return;
    }
    for (unsigned i = 0; i < n; i++)
        recheck_bucket(p, (unsigned)(hashes[i] % NBUCKETS), hashes[i], false);
}

void pull_on_conn_closed(struct pull_ctx *p, rmt_conn *c)
{
    for (unsigned bk = 0; bk < NBUCKETS && p->nheld; bk++) {
        struct held *h = p->bucket[bk];
        while (h) {
            struct held *next = h->next;
            if (h->conn == c)
                unhold(p, h);
            h = next;
        }
    }
}

void pull_answer_all(struct pull_ctx *p)
{
    for (unsigned bk = 0; bk < NBUCKETS && p->nheld; bk++)
        while (p->bucket[bk]) {
            struct held *h = p->bucket[bk];
            if (rmt_conn_is_open(h->conn))
                run(p, h->conn, h->opaque, h->serialize, &h->q, true);
            unhold(p, h);
        }
}

void pull_free(struct pull_ctx *p)
{
    if (!p)
        return;
    pull_answer_all(p);
    ev_async_stop(p->b->loop, &p->wake);
    wr_destroy(&p->ring);
    free(p->views);
    free(p->iov);
    for (size_t i = 0; i < p->nchunks; i++)
        free(p->chunks[i]);
    free(p->chunks);
    free(p);
}

void pull_on_request(struct pull_ctx *p, rmt_conn *c, rmt_cmd *req)
{
    struct broker *b = p->b;
    const char *group, *topic;
    int64_t qid, offset, max_nums, sysflag, commit_offset, suspend_ms, sub_version;
    if (brk_need_str(b, c, req, "consumerGroup", &group) || brk_need_str(b, c, req, "topic", &topic) ||
        brk_need_int(b, c, req, "queueId", &qid) || brk_need_int(b, c, req, "queueOffset", &offset) ||
        brk_need_int(b, c, req, "maxMsgNums", &max_nums) || brk_need_int(b, c, req, "sysFlag", &sysflag) ||
        brk_opt_int(b, c, req, "commitOffset", 0, &commit_offset) ||
        brk_opt_int(b, c, req, "suspendTimeoutMillis", 0, &suspend_ms) ||
        brk_opt_int(b, c, req, "subVersion", 0, &sub_version))
        return;
    if (b->stopping) {
        brk_err(b, c, req, RMT_RESP_SERVICE_NOT_AVAILABLE, "the broker %s is shutting down", b->addr);
        return;
    }
    if (!brk_readable(b)) {
        brk_err(b, c, req, RMT_RESP_NO_PERMISSION, "the broker[%s] pulling message is forbidden", b->addr);
        return;
    }
    if (strlen(topic) > META_TOPIC_NAME_MAX || strlen(group) > META_GROUP_NAME_MAX) {
        brk_err(b, c, req, RMT_RESP_INVALID_PARAMETER, "pull: topic or consumerGroup name too long");
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
    const struct meta_topic *t = meta_topic_get(b->meta, topic);
    if (!t) {
        brk_err(b, c, req, RMT_RESP_TOPIC_NOT_EXIST, "topic[%s] not exist, apply first please!", topic);
        return;
    }
    if (!(t->perm & META_PERM_READ)) {
        brk_err(b, c, req, RMT_RESP_NO_PERMISSION, "the topic[%s] pulling message is forbidden", topic);
        return;
    }
    if (qid < 0 || qid >= t->read_queue_nums) {
        brk_err(b, c, req, RMT_RESP_SYSTEM_ERROR,
                "queueId[%lld] is illegal, topic:[%s] topicConfig.readQueueNums:[%d] consumer:[%s]",
                (long long)qid, topic, t->read_queue_nums, rmt_conn_peer(c));
        return;
    }
    struct pq *q = &p->scratch;
    snprintf(q->topic, sizeof q->topic, "%s", topic);
    snprintf(q->group, sizeof q->group, "%s", group);
    q->qid = (int32_t)qid;
    q->offset = offset;
    q->max_nums = (int32_t)(max_nums > INT32_MAX ? INT32_MAX : max_nums);
    const char *etype = rmt_cmd_ext(req, "expressionType");
    if (sysflag & PULL_FLAG_SUBSCRIPTION) {
        const char *sub = rmt_cmd_ext(req, "subscription");
        if (etype && *etype && strcmp(etype, "TAG") != 0) {
            brk_err(b, c, req, RMT_RESP_SYSTEM_ERROR,
                    "the broker does not support consumer to filter message by %s", etype);
            return;
        }
        if (cm_parse_filter(sub, &q->filter)) {
            brk_err(b, c, req, RMT_RESP_SUBSCRIPTION_PARSE_FAILED,
                    "parse the consumer's subscription[%s] failed, group: %s", sub ? sub : "", group);
            return;
        }
    } else {
        bool known;
        const struct cm_sub *s = cm_find_sub(b->cm, group, topic, &known);
        if (!known) {
            brk_err(b, c, req, RMT_RESP_SUBSCRIPTION_NOT_EXIST,
                    "the consumer's group info not exist, group: %s (send a heartbeat first)", group);
            return;
        }
        if (!s) {
            brk_err(b, c, req, RMT_RESP_SUBSCRIPTION_NOT_EXIST,
                    "the consumer's subscription not exist, group: %s topic: %s", group, topic);
            return;
        }
        if (strcmp(s->expr_type, "TAG") != 0) {
            brk_err(b, c, req, RMT_RESP_SYSTEM_ERROR,
                    "the broker does not support consumer to filter message by %s", s->expr_type);
            return;
        }
        if (sub_version < s->sub_version) {
            brk_err(b, c, req, RMT_RESP_SUBSCRIPTION_NOT_LATEST,
                    "the consumer's subscription not latest, group: %s", group);
            return;
        }
        q->filter = s->filter;
    }
    if ((sysflag & PULL_FLAG_COMMIT_OFFSET) && commit_offset >= 0 && b->cfg.role != BRK_SLAVE)
        meta_offset_commit(b->meta, topic, group, (uint32_t)qid, commit_offset);
    bool can_suspend = (sysflag & PULL_FLAG_SUSPEND) && !rmt_cmd_is_oneway(req);
    if (run(p, c, req->opaque, req->serialize, q, !can_suspend) == RUN_ANSWERED)
        return;
    int64_t ms = b->cfg.long_polling ? suspend_ms : b->cfg.short_polling_ms;
    if (ms <= 0) {
        run(p, c, req->opaque, req->serialize, q, true);
        return;
    }
    suspend(p, c, req, q, ms);
}
