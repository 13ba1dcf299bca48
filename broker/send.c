/*
 * Send processor (RocketMQ SendMessageProcessor + CommitLog.putMessage's
 * broker-side rules): validation, topic auto-creation, retry/DLQ routing,
 * timer messages (timer.h rewrite into the wheel topic), delay-level
 * redirection into SCHEDULE_TOPIC_XXXX, the append, and the answer.
 * Properties are rebuilt in scratch buffers owned by the context, and
 * SYNC_FLUSH / SYNC_MASTER waits use pooled pending entries, so the
 * steady-state path does not allocate.
 *
 * A pending send goes through up to two waits: the group commit
 * (SYNC_FLUSH, completed on a store thread and handed to the loop) and then,
 * on a SYNC_MASTER, a slave's acknowledgement (ha_wait_slave, completed on
 * the loop). A flush timeout is answered at once, before any slave wait.
 */
#include "send.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker.h"
#include "ha.h"
#include "log.h"
#include "timer.h"
#include "transaction.h"

#define PENDING_CHUNK 256
#define PROPS_CAP (MSG_PROPERTIES_MAX + 1)
/* %DLQ%<group> is created write-only, as RocketMQ 4.x's send-back does
 * (PermName.PERM_WRITE): consumers cannot pull dead letters by accident; an
 * admin reads them by id or key (queries ignore the topic permission) and
 * may grant read with updateTopic -p 6. */
#define BRK_DLQ_PERM META_PERM_WRITE

struct pending {
    struct pending *next;
    struct send_ctx *s;
    rmt_conn *conn;
    int32_t opaque;
    uint8_t serialize;
    enum store_put_status st;
    int32_t queue_id;
    int64_t queue_offset;
    int64_t end_offset;
    struct buf ids;
    char txid[128];
};

struct send_ctx {
    struct broker *b;
    struct msg_host store_host;
    ev_async wake;
    pthread_mutex_t mu;
    struct pending *done;     /* completed by the store thread; guarded by mu */
    struct pending *free;     /* loop thread only */
    struct pending **chunks;
    size_t nchunks;
    unsigned outstanding;
    char props[PROPS_CAP];
    char props2[PROPS_CAP];   /* timer rewrite output */
    int64_t *phys;
    size_t phys_cap;
    struct buf ids;
};

static void on_wake(struct ev_loop *loop, ev_async *w, int revents);

struct send_ctx *send_new(struct broker *b)
{
    struct send_ctx *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->b = b;
    if (brk_parse_host(b->addr, &s->store_host)) {
        log_error("brokerIP1 / port '%s' is not an address", b->addr);
        free(s);
        return NULL;
    }
    pthread_mutex_init(&s->mu, NULL);
    ev_async_init(&s->wake, on_wake);
    s->wake.data = s;
    ev_async_start(b->loop, &s->wake);
    return s;
}

void send_free(struct send_ctx *s)
{
    if (!s)
        return;
    ev_async_stop(s->b->loop, &s->wake);
    for (size_t i = 0; i < s->nchunks; i++) {
        for (int j = 0; j < PENDING_CHUNK; j++)
            buf_free(&s->chunks[i][j].ids);
        free(s->chunks[i]);
    }
    free(s->chunks);
    free(s->phys);
    buf_free(&s->ids);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

unsigned send_pending(const struct send_ctx *s) { return s->outstanding; }

static struct pending *pending_get(struct send_ctx *s)
{
    if (!s->free) {
        struct pending **nc = realloc(s->chunks, (s->nchunks + 1) * sizeof *nc);
        if (!nc)
            return NULL;
        s->chunks = nc;
        struct pending *chunk = calloc(PENDING_CHUNK, sizeof *chunk);
        if (!chunk)
            return NULL;
        s->chunks[s->nchunks++] = chunk;
        for (int i = 0; i < PENDING_CHUNK; i++) {
            chunk[i].next = s->free;
            s->free = &chunk[i];
        }
    }
    struct pending *p = s->free;
    s->free = p->next;
    p->next = NULL;
    p->s = s;
    buf_reset(&p->ids);
    p->txid[0] = 0;
    return p;
}

static int32_t status_code(enum store_put_status st, const char **remark)
{
    *remark = NULL;
    switch (st) {
    case STORE_PUT_OK: return RMT_RESP_SUCCESS;
    case STORE_PUT_FLUSH_DISK_TIMEOUT: return RMT_RESP_FLUSH_DISK_TIMEOUT;
    case STORE_PUT_FLUSH_SLAVE_TIMEOUT: return RMT_RESP_FLUSH_SLAVE_TIMEOUT;
    case STORE_PUT_SLAVE_NOT_AVAILABLE: return RMT_RESP_SLAVE_NOT_AVAILABLE;
    case STORE_PUT_CREATE_MAPPED_FILE_FAILED:
        *remark = "create mapped file failed, server is busy or broken.";
        return RMT_RESP_SYSTEM_ERROR;
    case STORE_PUT_MESSAGE_ILLEGAL:
    case STORE_PUT_PROPERTIES_SIZE_EXCEEDED:
        return RMT_RESP_MESSAGE_ILLEGAL;
    case STORE_PUT_SERVICE_NOT_AVAILABLE:
    case STORE_PUT_DISK_FULL:
        return RMT_RESP_SERVICE_NOT_AVAILABLE;
    case STORE_PUT_OS_PAGE_CACHE_BUSY:
        *remark = "[PC_SYNCHRONIZED]broker busy, start flow control for a while";
        return RMT_RESP_SYSTEM_ERROR;
    default:
        *remark = "UNKNOWN_ERROR";
        return RMT_RESP_SYSTEM_ERROR;
    }
}

/* Sends a SendMessageResponseHeader answer built from stored results. */
static void answer(struct send_ctx *s, rmt_conn *c, int32_t opaque, uint8_t ser,
                   enum store_put_status st, const char *msg_id, int32_t qid, int64_t qoff,
                   const char *txid)
{
    struct broker *b = s->b;
    int32_t code = status_code(st, &(const char *){ NULL });
    rmt_cmd *r = brk_resp(b, code);
    r->opaque = opaque;
    r->serialize = ser;
    r->flag = RMT_FLAG_RESPONSE;
    rmt_cmd_set_ext(r, "msgId", msg_id);
    rmt_cmd_set_ext_int(r, "queueId", qid);
    rmt_cmd_set_ext_int(r, "queueOffset", qoff);
    if (txid && *txid)
        rmt_cmd_set_ext(r, "transactionId", txid);
    rmt_cmd_set_ext(r, MSG_PROP_MSG_REGION, b->cfg.region);
    rmt_cmd_set_ext(r, MSG_PROP_TRACE_SWITCH, b->cfg.trace_on ? "true" : "false");
    rmt_conn_send(c, r);
}

static void answer_failure(struct send_ctx *s, rmt_conn *c, const rmt_cmd *req,
                           const struct store_put_result *res)
{
    const char *remark;
    int32_t code = status_code(res->status, &remark);
    if (res->status == STORE_PUT_MESSAGE_ILLEGAL || res->status == STORE_PUT_PROPERTIES_SIZE_EXCEEDED)
        brk_err(s->b, c, req, code, "the message is illegal: %s (maxMessageSize=%lld bytes, properties up to %d bytes)",
                res->remark[0] ? res->remark : store_put_status_str(res->status),
                (long long)s->b->cfg.max_message_size, MSG_PROPERTIES_MAX);
    else if (code == RMT_RESP_SERVICE_NOT_AVAILABLE)
        brk_err(s->b, c, req, code, "service not available now: %s",
                res->remark[0] ? res->remark : store_put_status_str(res->status));
    else
        brk_err(s->b, c, req, code, "%s%s%s", remark ? remark : store_put_status_str(res->status),
                res->remark[0] ? ": " : "", res->remark);
}

/* Store thread: the flush covering a pending send finished. */
static void on_flushed(enum store_put_status st, void *ud)
{
    struct pending *p = ud;
    struct send_ctx *s = p->s;
    p->st = st;
    pthread_mutex_lock(&s->mu);
    p->next = s->done;
    s->done = p;
    pthread_mutex_unlock(&s->mu);
    ev_async_send(s->b->loop, &s->wake);
}

/* Answers a pending send and returns it to the pool. */
static void finish(struct send_ctx *s, struct pending *p, enum store_put_status st)
{
    if (rmt_conn_is_open(p->conn))
        answer(s, p->conn, p->opaque, p->serialize, st, (const char *)p->ids.data, p->queue_id,
               p->queue_offset, p->txid);
    rmt_conn_unref(p->conn);
    p->conn = NULL;
    p->next = s->free;
    s->free = p;
    s->outstanding--;
}

static void on_slave_ack(enum store_put_status st, void *ud)
{
    struct pending *p = ud;
    finish(p->s, p, st);
}

/* The flush stage is over (or there was none): a SYNC_MASTER now waits for
 * a slave to hold the message. */
static void after_flush(struct send_ctx *s, struct pending *p, enum store_put_status st)
{
    struct broker *b = s->b;
    if (st != STORE_PUT_OK || b->cfg.role != BRK_SYNC_MASTER) {
        finish(s, p, st);
        return;
    }
    int rc = b->ha ? ha_wait_slave(b->ha, p->end_offset, on_slave_ack, p) : -ENOTCONN;
    if (rc == HA_WAIT_PENDING)
        return;
    finish(s, p, rc == HA_WAIT_DONE ? STORE_PUT_OK : STORE_PUT_SLAVE_NOT_AVAILABLE);
}

void send_drain(struct send_ctx *s)
{
    pthread_mutex_lock(&s->mu);
    struct pending *l = s->done, *ordered = NULL;
    s->done = NULL;
    pthread_mutex_unlock(&s->mu);
    /* The list is newest first; slave waits want increasing offsets. */
    while (l) {
        struct pending *p = l;
        l = p->next;
        p->next = ordered;
        ordered = p;
    }
    while (ordered) {
        struct pending *p = ordered;
        ordered = p->next;
        after_flush(s, p, p->st);
    }
}

static void on_wake(struct ev_loop *loop, ev_async *w, int revents)
{
    send_drain(w->data);
}

/* After a successful append: answer now, or park the answer until the
 * group commit covers end_offset (SYNC_FLUSH) and / or a slave acknowledged
 * it (SYNC_MASTER), when the producer waits for the store. */
static void complete(struct send_ctx *s, rmt_conn *c, const rmt_cmd *req,
                     const struct store_put_result *res, const char *ids, const char *txid,
                     bool wait_store, int32_t qid)
{
    struct broker *b = s->b;
    if (b->ha && b->cfg.role != BRK_SLAVE)
        ha_notify_new_data(b->ha);
    if (rmt_cmd_is_oneway(req))
        return;
    bool sync_flush = b->cfg.flush_type == STORE_SYNC_FLUSH && wait_store;
    bool sync_slave = b->cfg.role == BRK_SYNC_MASTER && wait_store;
    if (!sync_flush && !sync_slave) {
        answer(s, c, req->opaque, req->serialize, STORE_PUT_OK, ids, qid, res->queue_offset, txid);
        return;
    }
    struct pending *p = pending_get(s);
    if (!p || buf_append(&p->ids, ids, strlen(ids) + 1)) {
        if (p) {
            p->next = s->free;
            s->free = p;
        }
        answer(s, c, req->opaque, req->serialize,
               sync_flush ? STORE_PUT_FLUSH_DISK_TIMEOUT : STORE_PUT_SLAVE_NOT_AVAILABLE, ids, qid,
               res->queue_offset, txid);
        return;
    }
    p->conn = c;
    p->opaque = req->opaque;
    p->serialize = req->serialize;
    p->queue_offset = res->queue_offset;
    p->end_offset = res->end_offset;
    p->queue_id = qid;
    snprintf(p->txid, sizeof p->txid, "%s", txid ? txid : "");
    rmt_conn_ref(c);
    s->outstanding++;
    if (sync_flush) {
        int rc = store_flush_wait(b->store, res->end_offset, on_flushed, p);
        if (rc == 0)
            return;
        after_flush(s, p, rc == 1 ? STORE_PUT_OK : STORE_PUT_FLUSH_DISK_TIMEOUT);
        return;
    }
    after_flush(s, p, STORE_PUT_OK);
}

static const char *field(const rmt_cmd *req, bool v2, const char *longname, const char *shortname)
{
    return rmt_cmd_ext(req, v2 ? shortname : longname);
}

static int field_int(struct broker *b, rmt_conn *c, const rmt_cmd *req, bool v2, const char *longname,
                     const char *shortname, bool required, int64_t def, int64_t *out)
{
    const char *key = v2 ? shortname : longname;
    const char *v = rmt_cmd_ext(req, key);
    if (!v || !*v || strcmp(v, "null") == 0) {
        if (required)
            return brk_err(b, c, req, RMT_RESP_INVALID_PARAMETER,
                           "send: the header field '%s' is missing", longname);
        *out = def;
        return 0;
    }
    if (rmt_cmd_ext_int(req, key, out))
        return brk_err(b, c, req, RMT_RESP_INVALID_PARAMETER,
                       "send: the header field '%s' is not a number", longname);
    return 0;
}

static bool has_prefix(const char *s, const char *p) { return strncmp(s, p, strlen(p)) == 0; }

static bool has_timer_prop(const char *props, size_t len)
{
    const char *v;
    size_t vl;
    return props && (msg_prop_get(props, len, MSG_PROP_TIMER_DELIVER_MS, &v, &vl) ||
                     msg_prop_get(props, len, MSG_PROP_TIMER_DELAY_SEC, &v, &vl) ||
                     msg_prop_get(props, len, MSG_PROP_TIMER_DELAY_MS, &v, &vl));
}

/* Timer messages are not supported inside a batch (one timer rewrite per
 * append); any item carrying a timer property refuses the batch. */
static bool batch_has_timer(const uint8_t *body, size_t len)
{
    size_t pos = 0;
    struct msg_batch_item it;
    while (msg_batch_next(body, len, &pos, &it) == 1)
        if (has_timer_prop(it.props, it.props_len))
            return true;
    return false;
}

static int parse_level(const char *v, size_t vl)
{
    int level = 0;
    for (size_t i = 0; i < vl; i++) {
        if (v[i] < '0' || v[i] > '9')
            return 0;
        if (level < 100000)
            level = level * 10 + (v[i] - '0');
    }
    return level;
}

/* Applies the delay-level rule: a DELAY property > 0 sends the message to
 * SCHEDULE_TOPIC_XXXX queue level-1 with REAL_TOPIC / REAL_QID appended.
 * *topic and *qid are updated; props must have room. Returns 0 or -ENOSPC. */
static int apply_delay(struct send_ctx *s, char *props, size_t *plen, const char **topic, int32_t *qid)
{
    const char *v;
    size_t vl;
    if (!msg_prop_get(props, *plen, MSG_PROP_DELAY_TIME_LEVEL, &v, &vl))
        return 0;
    int level = parse_level(v, vl);
    if (level <= 0)
        return 0;
    int64_t levels[BRK_DELAY_LEVELS_MAX];
    int n = brk_delay_levels(s->b, levels, BRK_DELAY_LEVELS_MAX);
    if (level > n) {
        /* Rewrite the level to the maximum, as RocketMQ does. */
        char lv[16];
        int ll = snprintf(lv, sizeof lv, "%d", n);
        size_t np = 0, pos = 0;
        const char *name, *val;
        size_t nl, vl2;
        char tmp[PROPS_CAP];
        while (msg_prop_next(props, *plen, &pos, &name, &nl, &val, &vl2) == 1) {
            if (nl == strlen(MSG_PROP_DELAY_TIME_LEVEL) && memcmp(name, MSG_PROP_DELAY_TIME_LEVEL, nl) == 0)
                continue;
            char nm[256];
            if (nl >= sizeof nm)
                continue;
            memcpy(nm, name, nl);
            nm[nl] = 0;
            if (msg_prop_append(tmp, sizeof tmp, &np, nm, val, vl2))
                return -ENOSPC;
        }
        if (msg_prop_append(tmp, sizeof tmp, &np, MSG_PROP_DELAY_TIME_LEVEL, lv, (size_t)ll))
            return -ENOSPC;
        memcpy(props, tmp, np);
        *plen = np;
        level = n;
    }
    char q[16];
    int ql = snprintf(q, sizeof q, "%d", *qid);
    if (msg_prop_append(props, PROPS_CAP, plen, MSG_PROP_REAL_TOPIC, *topic, strlen(*topic)) ||
        msg_prop_append(props, PROPS_CAP, plen, MSG_PROP_REAL_QUEUE_ID, q, (size_t)ql))
        return -ENOSPC;
    *topic = BRK_SCHEDULE_TOPIC;
    *qid = level - 1;
    return 0;
}

void send_on_request(struct send_ctx *s, rmt_conn *c, rmt_cmd *req)
{
    struct broker *b = s->b;
    bool v2 = rmt_cmd_ext(req, "b") != NULL && rmt_cmd_ext(req, "topic") == NULL;
    bool batch = req->code == RMT_REQ_SEND_BATCH_MESSAGE;
    const char *topic = field(req, v2, "topic", "b");
    if (!topic || !*topic) {
        brk_err(b, c, req, RMT_RESP_INVALID_PARAMETER, "send: the header field 'topic' is missing");
        return;
    }
    int64_t qid64, sysflag, flag, born, reconsume, max_reconsume, dqn;
    if (field_int(b, c, req, v2, "queueId", "e", true, 0, &qid64) ||
        field_int(b, c, req, v2, "sysFlag", "f", false, 0, &sysflag) ||
        field_int(b, c, req, v2, "flag", "h", false, 0, &flag) ||
        field_int(b, c, req, v2, "bornTimestamp", "g", false, brk_now_ms(), &born) ||
        field_int(b, c, req, v2, "reconsumeTimes", "j", false, 0, &reconsume) ||
        field_int(b, c, req, v2, "maxReconsumeTimes", "l", false, -1, &max_reconsume) ||
        field_int(b, c, req, v2, "defaultTopicQueueNums", "d", false, b->cfg.default_queue_nums, &dqn))
        return;
    const char *props_in = field(req, v2, "properties", "i");
    const char *default_topic = field(req, v2, "defaultTopic", "c");
    size_t in_len = props_in ? strlen(props_in) : 0;

    if (b->stopping) {
        brk_err(b, c, req, RMT_RESP_SERVICE_NOT_AVAILABLE, "the broker %s is shutting down", b->addr);
        return;
    }
    if (b->cfg.role == BRK_SLAVE) {
        brk_err(b, c, req, RMT_RESP_NO_PERMISSION,
                "the broker[%s] is a slave; sending message is forbidden", b->addr);
        return;
    }
    if (!(b->cfg.perm & META_PERM_WRITE)) {
        brk_err(b, c, req, RMT_RESP_NO_PERMISSION, "the broker[%s] sending message is forbidden",
                b->addr);
        return;
    }
    if (!meta_topic_name_valid(topic)) {
        brk_err(b, c, req, RMT_RESP_SYSTEM_ERROR,
                "the specified topic[%.200s] is invalid: only ^[%%|a-zA-Z0-9_-]+$ and at most %d characters are allowed",
                topic, META_TOPIC_NAME_MAX);
        return;
    }
    if (strcmp(topic, BRK_DEFAULT_TOPIC) == 0 || strcmp(topic, BRK_SCHEDULE_TOPIC) == 0 ||
        strcmp(topic, TX_HALF_TOPIC) == 0 || strcmp(topic, TX_OP_TOPIC) == 0) {
        brk_err(b, c, req, RMT_RESP_NO_PERMISSION, "sending message to topic[%s] is forbidden", topic);
        return;
    }
    const char *tv;
    size_t tvl;
    bool half = tx_is_prepared(props_in, in_len, (int32_t)sysflag);
    if (half && batch) {
        brk_err(b, c, req, RMT_RESP_MESSAGE_ILLEGAL, "transaction messages cannot be sent in a batch");
        return;
    }
    bool retry = has_prefix(topic, BRK_RETRY_PREFIX);
    if (retry && batch) {
        brk_err(b, c, req, RMT_RESP_MESSAGE_ILLEGAL, "batch sends to a retry topic are not supported");
        return;
    }
    const struct meta_topic *t = retry ? brk_topic_system(b, topic, 1, META_PERM_READ | META_PERM_WRITE)
                                       : brk_topic_for_send(b, topic, default_topic, (int)dqn);
    if (!t) {
        brk_err(b, c, req, RMT_RESP_TOPIC_NOT_EXIST, "topic[%s] not exist, apply first please!%s", topic,
                b->cfg.auto_create_topic ? "" : " (autoCreateTopicEnable is false)");
        return;
    }
    if (!(t->perm & META_PERM_WRITE)) {
        brk_err(b, c, req, RMT_RESP_NO_PERMISSION, "the topic[%s] sending message is forbidden", topic);
        return;
    }
    int32_t qid = (int32_t)qid64;
    if (qid64 < 0)
        qid = (int32_t)(b->rr++ % (uint32_t)t->write_queue_nums);
    else if (qid64 >= t->write_queue_nums) {
        brk_err(b, c, req, RMT_RESP_SYSTEM_ERROR,
                "request queueId[%lld] is illegal, topic %s has %d write queues, producer %s",
                (long long)qid64, topic, t->write_queue_nums, rmt_conn_peer(c));
        return;
    }
    if (req->body_len > (uint64_t)b->cfg.max_message_size) {
        brk_err(b, c, req, RMT_RESP_MESSAGE_ILLEGAL,
                "the message body size %u exceeds the limit maxMessageSize=%lld bytes", req->body_len,
                (long long)b->cfg.max_message_size);
        return;
    }
    if (in_len > MSG_PROPERTIES_MAX - 256) {
        brk_err(b, c, req, RMT_RESP_MESSAGE_ILLEGAL,
                "the message properties length %zu exceeds the limit of %d bytes", in_len,
                MSG_PROPERTIES_MAX - 256);
        return;
    }
    const char *store_topic = topic;
    char dlq[META_TOPIC_NAME_MAX + 64];
    if (retry) {
        const char *group = topic + strlen(BRK_RETRY_PREFIX);
        const struct meta_group *g = brk_group(b, group);
        if (!g) {
            brk_err(b, c, req, RMT_RESP_SUBSCRIPTION_GROUP_NOT_EXIST, "subscription group not exist, %s",
                    group);
            return;
        }
        int64_t maxr = max_reconsume >= 0 ? max_reconsume : g->retry_max_times;
        if (reconsume >= maxr) {
            snprintf(dlq, sizeof dlq, "%s%s", BRK_DLQ_PREFIX, group);
            if (!meta_topic_name_valid(dlq) || !brk_topic_system(b, dlq, 1, BRK_DLQ_PERM)) {
                brk_err(b, c, req, RMT_RESP_SYSTEM_ERROR, "cannot create the dead-letter topic %s", dlq);
                return;
            }
            store_topic = dlq;
            qid = 0;
        }
    }

    struct msg_host born_host;
    if (brk_parse_host(rmt_conn_peer(c), &born_host))
        memset(&born_host, 0, sizeof born_host);
    struct store_msg m = {
        .topic = store_topic, .queue_id = qid, .flag = (int32_t)flag,
        .sysflag = (int32_t)(sysflag & ~(MSG_SYSFLAG_BORNHOST_V6 | MSG_SYSFLAG_STOREHOST_V6)),
        .body = req->body, .body_len = req->body_len, .born_ts = born, .born_host = born_host,
        .reconsume_times = (int32_t)reconsume,
    };
    if (born_host.v6)
        m.sysflag |= MSG_SYSFLAG_BORNHOST_V6;
    struct store_put_result res;
    enum store_put_status st;
    bool wait_store = true;
    const char *txid = NULL;
    char txbuf[128];
    if (props_in && msg_prop_get(props_in, in_len, MSG_PROP_WAIT_STORE_MSG_OK, &tv, &tvl) && tvl == 5 &&
        memcmp(tv, "false", 5) == 0)
        wait_store = false;
    if (batch) {
        int n = msg_batch_count(req->body, req->body_len);
        if (n <= 0) {
            brk_err(b, c, req, RMT_RESP_MESSAGE_ILLEGAL, "the batch body is malformed or empty");
            return;
        }
        if (batch_has_timer(req->body, req->body_len) || has_timer_prop(props_in, in_len)) {
            brk_err(b, c, req, RMT_RESP_MESSAGE_ILLEGAL,
                    "timer messages (TIMER_DELIVER_MS / TIMER_DELAY_SEC / TIMER_DELAY_MS) cannot be sent in a batch");
            return;
        }
        if ((size_t)n > s->phys_cap) {
            int64_t *np = realloc(s->phys, (size_t)n * sizeof *np);
            if (!np) {
                brk_err(b, c, req, RMT_RESP_SYSTEM_ERROR, "out of memory");
                return;
            }
            s->phys = np;
            s->phys_cap = (size_t)n;
        }
        st = store_put_encoded_batch(b->store, &m, req->body, req->body_len, &res, s->phys, s->phys_cap);
        if (st != STORE_PUT_OK) {
            answer_failure(s, c, req, &res);
            return;
        }
        buf_reset(&s->ids);
        for (uint32_t i = 0; i < res.count; i++) {
            char id[MSG_OFFSET_ID_MAX];
            msg_offset_id_encode(&s->store_host, s->phys[i], id);
            if ((i && buf_append_u8(&s->ids, ',')) || buf_append(&s->ids, id, strlen(id))) {
                brk_err(b, c, req, RMT_RESP_SYSTEM_ERROR, "out of memory");
                return;
            }
        }
        if (buf_append_u8(&s->ids, 0)) {
            brk_err(b, c, req, RMT_RESP_SYSTEM_ERROR, "out of memory");
            return;
        }
    } else {
        size_t plen = in_len;
        if (plen)
            memcpy(s->props, props_in, plen);
        if (!(props_in && msg_prop_get(props_in, in_len, MSG_PROP_CLUSTER, &tv, &tvl)))
            msg_prop_append(s->props, PROPS_CAP, &plen, MSG_PROP_CLUSTER, b->cfg.cluster,
                            strlen(b->cfg.cluster));
        if (props_in && msg_prop_get(props_in, in_len, MSG_PROP_UNIQ_CLIENT_MESSAGE_ID_KEYIDX, &tv, &tvl) &&
            tvl < sizeof txbuf) {
            memcpy(txbuf, tv, tvl);
            txbuf[tvl] = 0;
            txid = txbuf;
        }
        if (!half && b->tmr_cfg) {
            const char *tt;
            int32_t tq;
            size_t tl;
            int64_t deliver;
            char terr[256] = "";
            int trc = tmr_prepare_put(b->tmr_cfg, m.topic, m.queue_id, m.sysflag, s->props, plen, brk_now_ms(),
                                      &tt, &tq, s->props2, PROPS_CAP, &tl, &deliver, terr, sizeof terr);
            if (trc < 0) {
                brk_err(b, c, req, RMT_RESP_MESSAGE_ILLEGAL, "%s%s",
                        trc == -ENOTSUP ? "WHEEL_TIMER_NOT_ENABLE: " : "timer message illegal: ", terr);
                return;
            }
            if (trc == 1) {
                m.topic = tt;
                m.queue_id = tq;
                memcpy(s->props, s->props2, tl);
                plen = tl;
            }
        }
        if (half ? tx_prepare_half(b->tx, s->props, PROPS_CAP, &plen, &m.topic, &m.queue_id, &m.sysflag)
                 : apply_delay(s, s->props, &plen, &m.topic, &m.queue_id)) {
            brk_err(b, c, req, RMT_RESP_MESSAGE_ILLEGAL, "the message properties are too long");
            return;
        }
        m.props = s->props;
        m.props_len = (uint32_t)plen;
        st = store_put(b->store, &m, &res);
        if (st != STORE_PUT_OK) {
            answer_failure(s, c, req, &res);
            return;
        }
        buf_reset(&s->ids);
        buf_append(&s->ids, res.msg_id, strlen(res.msg_id) + 1);
    }
    b->stats.put_msgs += res.count ? res.count : 1;
    b->stats.put_bytes += req->body_len;
    complete(s, c, req, &res, (const char *)s->ids.data, txid, wait_store, qid);
}

int send_republish(struct send_ctx *s, const char *topic, int queue_id, const struct msg_record *r,
                   const char *props, uint32_t props_len)
{
    struct store_msg m = {
        .topic = topic, .queue_id = queue_id, .flag = r->flag,
        .sysflag = r->sysflag & ~MSG_SYSFLAG_STOREHOST_V6, .body = r->body, .body_len = r->body_len,
        .props = props, .props_len = props_len, .born_ts = r->born_ts, .born_host = r->born_host,
        .reconsume_times = r->reconsume_times,
    };
    struct store_put_result res;
    enum store_put_status st = store_put(s->b->store, &m, &res);
    if (st == STORE_PUT_OK) {
        s->b->stats.put_msgs++;
        if (s->b->ha && s->b->cfg.role != BRK_SLAVE)
            ha_notify_new_data(s->b->ha);
    }
    return (int)st;
}

/* Copies props except the named ones into dst. Returns 0 or -ENOSPC. */
static int props_without(const char *props, size_t len, char *dst, size_t cap, size_t *dlen,
                         const char *const *skip)
{
    size_t pos = 0, nl, vl;
    const char *name, *val;
    *dlen = 0;
    while (msg_prop_next(props, len, &pos, &name, &nl, &val, &vl) == 1) {
        bool drop = false;
        for (int i = 0; skip[i]; i++)
            if (strlen(skip[i]) == nl && memcmp(skip[i], name, nl) == 0)
                drop = true;
        if (drop)
            continue;
        char nm[256];
        if (nl >= sizeof nm)
            return -ENOSPC;
        memcpy(nm, name, nl);
        nm[nl] = 0;
        if (msg_prop_append(dst, cap, dlen, nm, val, vl))
            return -ENOSPC;
    }
    return 0;
}

void send_on_msg_back(struct send_ctx *s, rmt_conn *c, rmt_cmd *req)
{
    struct broker *b = s->b;
    int64_t phys, delay, maxr;
    const char *group;
    if (brk_need_int(b, c, req, "offset", &phys) || brk_need_str(b, c, req, "group", &group) ||
        brk_need_int(b, c, req, "delayLevel", &delay) ||
        brk_opt_int(b, c, req, "maxReconsumeTimes", -1, &maxr))
        return;
    if (b->stopping) {
        brk_err(b, c, req, RMT_RESP_SERVICE_NOT_AVAILABLE, "the broker %s is shutting down", b->addr);
        return;
    }
    const struct meta_group *g = brk_group(b, group);
    if (!g) {
        brk_err(b, c, req, RMT_RESP_SUBSCRIPTION_GROUP_NOT_EXIST, "subscription group not exist, %s", group);
        return;
    }
    if (!brk_writable(b)) {
        brk_err(b, c, req, RMT_RESP_NO_PERMISSION, "the broker[%s] sending message is forbidden", b->addr);
        return;
    }
    if (g->retry_queue_nums <= 0) {
        brk_resp(b, RMT_RESP_SUCCESS);
        brk_reply(b, c, req, false);
        return;
    }
    char retry[META_TOPIC_NAME_MAX + 64], dlq[META_TOPIC_NAME_MAX + 64];
    snprintf(retry, sizeof retry, "%s%s", BRK_RETRY_PREFIX, group);
    snprintf(dlq, sizeof dlq, "%s%s", BRK_DLQ_PREFIX, group);
    if (!meta_topic_name_valid(retry) || !meta_topic_name_valid(dlq)) {
        brk_err(b, c, req, RMT_RESP_SYSTEM_ERROR, "the group name %s is too long for a retry topic", group);
        return;
    }
    int32_t qid = (int32_t)(b->rr++ % (uint32_t)g->retry_queue_nums);
    const struct meta_topic *t = brk_topic_system(b, retry, g->retry_queue_nums,
                                                  META_PERM_READ | META_PERM_WRITE);
    if (!t) {
        brk_err(b, c, req, RMT_RESP_SYSTEM_ERROR, "topic[%s] not exist", retry);
        return;
    }
    if (!(t->perm & META_PERM_WRITE)) {
        brk_err(b, c, req, RMT_RESP_NO_PERMISSION, "the topic[%s] sending message is forbidden", retry);
        return;
    }
    struct store_view v;
    struct store_hold h = STORE_HOLD_INIT;
    struct msg_record rec;
    if (store_lookup(b->store, phys, &v, &h) != STORE_LOOKUP_OK ||
        msg_record_decode(v.data, v.len, &rec, 0) <= 0) {
        store_hold_release(&h);
        brk_err(b, c, req, RMT_RESP_SYSTEM_ERROR, "look message by offset failed, %lld", (long long)phys);
        return;
    }
    int64_t max_times = maxr >= 0 ? maxr : g->retry_max_times;
    const char *topic = retry;
    bool to_dlq = rec.reconsume_times >= max_times || delay < 0;
    if (to_dlq) {
        if (!brk_topic_system(b, dlq, 1, BRK_DLQ_PERM)) {
            store_hold_release(&h);
            brk_err(b, c, req, RMT_RESP_SYSTEM_ERROR, "topic[%s] not exist", dlq);
            return;
        }
        topic = dlq;
        qid = 0;
    } else if (delay == 0) {
        delay = 3 + rec.reconsume_times;
    }
    static const char *const skip[] = { MSG_PROP_DELAY_TIME_LEVEL, MSG_PROP_REAL_TOPIC,
                                        MSG_PROP_REAL_QUEUE_ID, MSG_PROP_WAIT_STORE_MSG_OK, NULL };
    size_t plen;
    const char *v2;
    size_t vl;
    int rc = props_without(rec.props, rec.props_len, s->props, PROPS_CAP, &plen, skip);
    if (!rc && !msg_prop_get(rec.props, rec.props_len, MSG_PROP_RETRY_TOPIC, &v2, &vl))
        rc = msg_prop_append(s->props, PROPS_CAP, &plen, MSG_PROP_RETRY_TOPIC, rec.topic, rec.topic_len);
    if (!rc && !msg_prop_get(rec.props, rec.props_len, MSG_PROP_ORIGIN_MESSAGE_ID, &v2, &vl)) {
        const char *origin = rmt_cmd_ext(req, "originMsgId");
        char id[MSG_OFFSET_ID_MAX];
        if (!origin || !*origin) {
            msg_offset_id_encode(&rec.store_host, rec.phys_offset, id);
            origin = id;
        }
        rc = msg_prop_append(s->props, PROPS_CAP, &plen, MSG_PROP_ORIGIN_MESSAGE_ID, origin, strlen(origin));
    }
    if (!rc)
        rc = msg_prop_append(s->props, PROPS_CAP, &plen, MSG_PROP_WAIT_STORE_MSG_OK, "false", 5);
    int32_t store_qid = qid;
    const char *store_topic = topic;
    if (!rc && !to_dlq) {
        char lv[16];
        int ll = snprintf(lv, sizeof lv, "%lld", (long long)delay);
        rc = msg_prop_append(s->props, PROPS_CAP, &plen, MSG_PROP_DELAY_TIME_LEVEL, lv, (size_t)ll);
        if (!rc)
            rc = apply_delay(s, s->props, &plen, &store_topic, &store_qid);
    }
    if (rc) {
        store_hold_release(&h);
        brk_err(b, c, req, RMT_RESP_MESSAGE_ILLEGAL, "the message properties are too long to send back");
        return;
    }
    struct store_msg m = {
        .topic = store_topic, .queue_id = store_qid, .flag = rec.flag,
        .sysflag = rec.sysflag & ~MSG_SYSFLAG_STOREHOST_V6, .body = rec.body, .body_len = rec.body_len,
        .props = s->props, .props_len = (uint32_t)plen, .born_ts = rec.born_ts,
        .born_host = rec.born_host, .reconsume_times = rec.reconsume_times + 1,
    };
    struct store_put_result res;
    enum store_put_status st = store_put(b->store, &m, &res);
    store_hold_release(&h);
    if (st != STORE_PUT_OK) {
        brk_err(b, c, req, RMT_RESP_SYSTEM_ERROR, "%s", store_put_status_str(st));
        return;
    }
    b->stats.put_msgs++;
    if (b->ha)
        ha_notify_new_data(b->ha);
    brk_resp(b, RMT_RESP_SUCCESS);
    brk_reply(b, c, req, false);
}
