/*
 * Producer (see producer.h): route lookup, queue choice, header and
 * property encoding, retries on another broker, and result decoding. Send
 * contexts are pooled per producer so the hot path reuses commands and
 * buffers instead of allocating.
 */
#include "producer.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>

#include "log.h"

/* DefaultMQProducer's defaultTopicQueueNums: how many queues a topic created
 * through TBW102 gets, sent in the header and used for the fallback queues. */
#define DEFAULT_TOPIC_QUEUE_NUMS 4

struct send_ctx {
    cli_producer *p;                 /* NULL once the producer is gone */
    struct send_ctx *next, *prev;    /* in-flight list, or free list (next only) */
    rmt_cmd cmd;
    struct buf props;
    struct buf body;                 /* copy of the body (batch: the encoded batch) */
    char topic[CLI_NAME_MAX];
    int32_t flag;
    bool batch, oneway, ordered, cmd_ready;
    bool via_default;                /* this attempt goes through TBW102's route */
    char shard_key[CLI_NAME_MAX];
    int attempts, max_attempts;
    int64_t born_ts;
    cli_send_fn cb;
    void *ud;
    struct cli_send_result res;
};

struct cli_producer {
    cli_client *c;
    char group[CLI_NAME_MAX];
    int retry_times, timeout_ms;
    bool v1;
    uint32_t rr;
    struct msg_uniq_gen uniq;
    struct send_ctx *inflight;
    struct send_ctx *free_ctx;
};

static int64_t wall_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

cli_producer *cli_producer_new(cli_client *c, const struct cli_producer_opts *o, int *err)
{
    if (!o->group || !*o->group || strlen(o->group) >= CLI_NAME_MAX) {
        log_error("producer: a producer group name (1..%d bytes) is required", CLI_NAME_MAX - 1);
        *err = -EINVAL;
        return NULL;
    }
    cli_producer *p = calloc(1, sizeof *p);
    if (!p) {
        *err = -ENOMEM;
        return NULL;
    }
    p->c = c;
    snprintf(p->group, sizeof p->group, "%s", o->group);
    p->retry_times = o->retry_times < 0 ? 2 : o->retry_times;
    p->timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : cli_client_timeout(c);
    p->v1 = o->use_v1_header;
    uint8_t ip[4] = { 127, 0, 0, 1 };
    struct in_addr a;
    if (inet_pton(AF_INET, cli_client_ip(c), &a) == 1)
        memcpy(ip, &a, 4);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    msg_uniq_init(&p->uniq, ip, (uint32_t)getpid(), (uint32_t)(ts.tv_nsec ^ (uintptr_t)p));
    *err = 0;
    return p;
}

static void ctx_destroy(struct send_ctx *x)
{
    rmt_cmd_destroy(&x->cmd);
    buf_free(&x->props);
    buf_free(&x->body);
    free(x);
}

static void ctx_unlink(struct send_ctx *x)
{
    cli_producer *p = x->p;
    if (!p)
        return;
    if (x->prev)
        x->prev->next = x->next;
    else
        p->inflight = x->next;
    if (x->next)
        x->next->prev = x->prev;
    x->next = x->prev = NULL;
}

/* Returns a finished context to its producer's pool (or frees it when the
 * producer is gone). */
static void ctx_release(struct send_ctx *x)
{
    cli_producer *p = x->p;
    if (!p) {
        ctx_destroy(x);
        return;
    }
    ctx_unlink(x);
    x->next = p->free_ctx;
    p->free_ctx = x;
}

static struct send_ctx *ctx_get(cli_producer *p)
{
    struct send_ctx *x = p->free_ctx;
    if (x) {
        p->free_ctx = x->next;
    } else {
        x = calloc(1, sizeof *x);
        if (!x)
            return NULL;
        rmt_cmd_init(&x->cmd, RMT_REQ_SEND_MESSAGE_V2);
    }
    buf_reset(&x->props);
    buf_reset(&x->body);
    memset(&x->res, 0, sizeof x->res);
    x->res.code = -1;
    x->res.queue_id = -1;
    x->p = p;
    x->batch = x->oneway = x->ordered = x->cmd_ready = x->via_default = false;
    x->attempts = 0;
    x->cb = NULL;
    x->ud = NULL;
    x->prev = NULL;
    x->next = p->inflight;
    if (p->inflight)
        p->inflight->prev = x;
    p->inflight = x;
    return x;
}

void cli_producer_free(cli_producer *p)
{
    if (!p)
        return;
    while (p->inflight) {
        struct send_ctx *x = p->inflight;
        p->inflight = x->next;
        x->next = x->prev = NULL;
        if (x->cb) {
            x->res.err = -ECANCELED;
            snprintf(x->res.errmsg, sizeof x->res.errmsg, "producer closed before the send completed");
            x->cb(&x->res, x->ud);
        }
        x->cb = NULL;
        x->p = NULL;    /* freed by the callback still pending on it */
    }
    while (p->free_ctx) {
        struct send_ctx *x = p->free_ctx;
        p->free_ctx = x->next;
        ctx_destroy(x);
    }
    free(p);
}

static int prop_put(struct buf *out, const char *name, const char *val, size_t vlen)
{
    for (size_t i = 0; i < vlen; i++)
        if (val[i] == MSG_NAME_VALUE_SEPARATOR || val[i] == MSG_PROPERTY_SEPARATOR)
            return -EINVAL;
    int rc = buf_append(out, name, strlen(name));
    if (!rc)
        rc = buf_append_u8(out, MSG_NAME_VALUE_SEPARATOR);
    if (!rc)
        rc = buf_append(out, val, vlen);
    if (!rc)
        rc = buf_append_u8(out, MSG_PROPERTY_SEPARATOR);
    return rc;
}

int cli_message_properties(const struct cli_message *m, const char *uniq_id, struct buf *out)
{
    int rc = 0;
    if (m->tags && *m->tags)
        rc = prop_put(out, MSG_PROP_TAGS, m->tags, strlen(m->tags));
    if (!rc && m->keys && *m->keys)
        rc = prop_put(out, MSG_PROP_KEYS, m->keys, strlen(m->keys));
    if (!rc)
        rc = prop_put(out, MSG_PROP_WAIT_STORE_MSG_OK, m->no_wait_store ? "false" : "true",
                      m->no_wait_store ? 5 : 4);
    if (!rc && m->delay_level > 0) {
        char d[16];
        int n = snprintf(d, sizeof d, "%d", m->delay_level);
        rc = prop_put(out, MSG_PROP_DELAY_TIME_LEVEL, d, (size_t)n);
    }
    if (!rc && uniq_id)
        rc = prop_put(out, MSG_PROP_UNIQ_CLIENT_MESSAGE_ID_KEYIDX, uniq_id, strlen(uniq_id));
    if (!rc && m->props && m->props_len) {
        size_t pos = 0;
        const char *n, *v;
        size_t nl, vl;
        while (msg_prop_next(m->props, m->props_len, &pos, &n, &nl, &v, &vl) == 1) {
            if (!nl)
                return -EINVAL;
        }
        rc = buf_append(out, m->props, m->props_len);
        if (!rc && m->props[m->props_len - 1] != MSG_PROPERTY_SEPARATOR)
            rc = buf_append_u8(out, MSG_PROPERTY_SEPARATOR);
    }
    if (!rc && out->len > MSG_PROPERTIES_MAX)
        rc = -EINVAL;
    return rc;
}

int cli_send_header_build(rmt_cmd *cmd, const struct cli_send_header *h)
{
    static const char *const v1n[] = { "producerGroup", "topic", "defaultTopic", "defaultTopicQueueNums",
                                       "queueId", "sysFlag", "bornTimestamp", "flag", "properties",
                                       "reconsumeTimes", "unitMode", "batch", "brokerName" };
    static const char *const v2n[] = { "a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "m", "n" };
    const char *const *k = h->v1 ? v1n : v2n;
    int rc = rmt_cmd_set_ext(cmd, k[0], h->group);
    if (!rc) rc = rmt_cmd_set_ext(cmd, k[1], h->topic);
    if (!rc) rc = rmt_cmd_set_ext(cmd, k[2], CLI_DEFAULT_TOPIC);
    if (!rc) rc = rmt_cmd_set_ext_int(cmd, k[3], DEFAULT_TOPIC_QUEUE_NUMS);
    if (!rc) rc = rmt_cmd_set_ext_int(cmd, k[4], h->queue_id);
    if (!rc) rc = rmt_cmd_set_ext_int(cmd, k[5], h->sys_flag);
    if (!rc) rc = rmt_cmd_set_ext_int(cmd, k[6], h->born_ts);
    if (!rc) rc = rmt_cmd_set_ext_int(cmd, k[7], h->flag);
    if (!rc) rc = rmt_cmd_set_ext_n(cmd, k[8], h->props ? h->props : "", h->props ? h->props_len : 0);
    if (!rc) rc = rmt_cmd_set_ext_int(cmd, k[9], h->reconsume_times);
    if (!rc) rc = rmt_cmd_set_ext(cmd, k[10], "false");
    if (!rc) rc = rmt_cmd_set_ext(cmd, k[11], h->batch ? "true" : "false");
    if (!rc && h->broker) rc = rmt_cmd_set_ext(cmd, k[12], h->broker);
    return rc;
}

static void finish(struct send_ctx *x)
{
    if (x->cb)
        x->cb(&x->res, x->ud);
    ctx_release(x);
}

static void attempt(struct send_ctx *x);

static bool retriable_code(int code)
{
    return code == RMT_RESP_TOPIC_NOT_EXIST || code == RMT_RESP_SERVICE_NOT_AVAILABLE ||
           code == RMT_RESP_SYSTEM_ERROR || code == RMT_RESP_NO_PERMISSION ||
           code == RMT_RESP_SYSTEM_BUSY || code == 204 /* NO_BUYER_ID */ ||
           code == 205 /* NOT_IN_CURRENT_UNIT */;
}

static void send_resp_cb(int status, rmt_cmd *resp, void *ud)
{
    struct send_ctx *x = ud;
    if (!x->p) {
        ctx_destroy(x);
        return;
    }
    struct cli_send_result *r = &x->res;
    if (status) {
        r->err = status;
        r->code = -1;
        snprintf(r->errmsg, sizeof r->errmsg, "send to broker %s (queue %d) failed: %s", r->broker,
                 r->queue_id, strerror(-status));
    } else {
        r->code = resp->code;
        switch (resp->code) {
        case RMT_RESP_SUCCESS: r->status = CLI_SEND_OK; break;
        case RMT_RESP_FLUSH_DISK_TIMEOUT: r->status = CLI_SEND_FLUSH_DISK_TIMEOUT; break;
        case RMT_RESP_FLUSH_SLAVE_TIMEOUT: r->status = CLI_SEND_FLUSH_SLAVE_TIMEOUT; break;
        case RMT_RESP_SLAVE_NOT_AVAILABLE: r->status = CLI_SEND_SLAVE_NOT_AVAILABLE; break;
        default:
            r->err = -EPROTO;
            snprintf(r->errmsg, sizeof r->errmsg, "broker %s refused the send: code %d: %s", r->broker,
                     resp->code, rmt_cmd_remark(resp) ? rmt_cmd_remark(resp) : "");
        }
        if (r->err == 0) {
            int64_t qid = r->queue_id, qoff = -1;
            const char *mid = rmt_cmd_ext(resp, "msgId");
            if (rmt_cmd_ext_int(resp, "queueId", &qid) || rmt_cmd_ext_int(resp, "queueOffset", &qoff) ||
                !mid) {
                r->err = -EBADMSG;
                snprintf(r->errmsg, sizeof r->errmsg,
                         "broker %s answered the send without msgId/queueId/queueOffset", r->broker);
            } else {
                r->queue_id = (int)qid;
                r->queue_offset = qoff;
                size_t n = strcspn(mid, ",");
                if (n >= sizeof r->offset_msg_id)
                    n = sizeof r->offset_msg_id - 1;
                memcpy(r->offset_msg_id, mid, n);
                r->offset_msg_id[n] = 0;
                r->errmsg[0] = 0;
                if (x->via_default)
                    cli_route_invalidate(x->p->c, x->topic);
                finish(x);
                return;
            }
        }
    }
    bool retry = !x->ordered && status != -ECANCELED && x->attempts < x->max_attempts &&
                 (status != 0 || retriable_code(r->code));
    if (retry) {
        log_warn("producer: %s; retrying on another broker (attempt %d of %d)", r->errmsg,
                 x->attempts + 1, x->max_attempts);
        r->err = 0;
        attempt(x);
        return;
    }
    finish(x);
}

/* Fills the command for the chosen queue and sends it. */
static void send_to(struct send_ctx *x, const struct cli_route *route, const struct cli_mq *mq)
{
    cli_producer *p = x->p;
    struct cli_send_result *r = &x->res;
    const char *addr = cli_route_addr(route, mq->broker, CLI_MASTER_ID);
    snprintf(r->broker, sizeof r->broker, "%s", mq->broker);
    r->queue_id = mq->queue_id;
    if (!addr) {
        r->err = -EHOSTUNREACH;
        snprintf(r->errmsg, sizeof r->errmsg, "broker %s has no master address", mq->broker);
        send_resp_cb(-EHOSTUNREACH, NULL, x);
        return;
    }
    cli_cmd_reset(p->c, &x->cmd, x->batch ? RMT_REQ_SEND_BATCH_MESSAGE
                                          : (p->v1 ? RMT_REQ_SEND_MESSAGE : RMT_REQ_SEND_MESSAGE_V2));
    struct cli_send_header h = {
        .group = p->group, .topic = x->topic, .broker = mq->broker,
        .props = (const char *)x->props.data, .props_len = (uint32_t)x->props.len,
        .queue_id = mq->queue_id, .sys_flag = 0, .flag = x->flag, .born_ts = x->born_ts,
        .batch = x->batch, .v1 = p->v1,
    };
    int rc = cli_send_header_build(&x->cmd, &h);
    rmt_cmd_set_body(&x->cmd, x->body.data, (uint32_t)x->body.len);
    if (rc) {
        send_resp_cb(rc, NULL, x);
        return;
    }
    x->attempts++;
    r->attempts = x->attempts;
    if (x->oneway) {
        rc = rmt_client_invoke_oneway(cli_client_rmt(p->c), addr, &x->cmd);
        if (rc)
            log_warn("producer: oneway send to %s failed: %s", addr, strerror(-rc));
        ctx_release(x);
        return;
    }
    rc = rmt_client_invoke(cli_client_rmt(p->c), addr, &x->cmd, p->timeout_ms, send_resp_cb, x);
    if (rc)
        send_resp_cb(rc, NULL, x);
}

/* The route of TBW102, asked for after the nameserver said the topic does
 * not exist: like DefaultMQProducerImpl, send to the brokers that would
 * create the topic on first send. r->errmsg holds the original error, kept
 * when there is no such broker. */
static void default_route_ready(int status, const struct cli_route *def, const char *msg, void *ud)
{
    (void)msg;
    struct send_ctx *x = ud;
    if (!x->p) {
        ctx_destroy(x);
        return;
    }
    struct cli_send_result *r = &x->res;
    struct cli_mq mq;
    int rc = -ENOENT;
    if (status == 0 && x->ordered) {
        int64_t h = msg_java_hash(x->shard_key, strlen(x->shard_key));
        rc = cli_route_default_queue(def, DEFAULT_TOPIC_QUEUE_NUMS, (uint32_t)(h < 0 ? -h : h), &mq);
    } else if (status == 0) {
        int total = cli_route_default_count(def, DEFAULT_TOPIC_QUEUE_NUMS);
        for (int i = 0; i < total; i++) {
            rc = cli_route_default_queue(def, DEFAULT_TOPIC_QUEUE_NUMS, x->p->rr++, &mq);
            if (rc || !x->attempts || strcmp(mq.broker, r->broker) != 0)
                break;
        }
    }
    if (rc) {
        r->err = status == -ECANCELED ? -ECANCELED : -ENOENT;
        if (x->oneway)
            log_warn("producer: oneway send dropped: %s", r->errmsg);
        finish(x);
        return;
    }
    r->err = 0;
    x->via_default = true;
    send_to(x, def, &mq);
}

static void route_ready(int status, const struct cli_route *route, const char *msg, void *ud)
{
    struct send_ctx *x = ud;
    if (!x->p) {
        ctx_destroy(x);
        return;
    }
    struct cli_send_result *r = &x->res;
    if (status) {
        r->err = status;
        snprintf(r->errmsg, sizeof r->errmsg, "%s", msg ? msg : strerror(-status));
        if (status == -ENOENT && strcmp(x->topic, CLI_DEFAULT_TOPIC) != 0 &&
            cli_route_get(x->p->c, CLI_DEFAULT_TOPIC, default_route_ready, x) == 0)
            return;
        if (x->oneway)
            log_warn("producer: oneway send dropped: %s", r->errmsg);
        finish(x);
        return;
    }
    struct cli_mq mq;
    int rc = x->ordered ? cli_route_select_hash(route, x->shard_key, strlen(x->shard_key), &mq)
                        : cli_route_select_rr(route, &x->p->rr, x->attempts ? r->broker : NULL, &mq);
    if (rc) {
        r->err = -ENOENT;
        snprintf(r->errmsg, sizeof r->errmsg, "topic %s has no writable queue", x->topic);
        finish(x);
        return;
    }
    send_to(x, route, &mq);
}

static void attempt(struct send_ctx *x)
{
    cli_client *c = x->p->c;
    x->via_default = false;
    const struct cli_route *route = cli_route_cached(c, x->topic);
    if (route) {
        route_ready(0, route, NULL, x);
        return;
    }
    int rc = cli_route_get(c, x->topic, route_ready, x);
    if (rc)
        route_ready(rc, NULL, "route lookup could not start", x);
}

static int check_message(const struct cli_message *m)
{
    if (!m->topic || !*m->topic || strlen(m->topic) >= CLI_NAME_MAX) {
        log_error("producer: message topic missing or longer than %d bytes", CLI_NAME_MAX - 1);
        return -EINVAL;
    }
    if (!m->body && m->body_len) {
        log_error("producer: message body is NULL with a length");
        return -EINVAL;
    }
    return 0;
}

/* Prepares a context for m (or a batch). */
static int prepare(cli_producer *p, const struct cli_message *msgs, int n, bool batch,
                   struct send_ctx **out)
{
    if (n <= 0) {
        log_error("producer: empty batch");
        return -EINVAL;
    }
    for (int i = 0; i < n; i++) {
        int rc = check_message(&msgs[i]);
        if (rc)
            return rc;
        if (strcmp(msgs[i].topic, msgs[0].topic)) {
            log_error("producer: every message of a batch must have the same topic");
            return -EINVAL;
        }
        if (batch && msgs[i].delay_level > 0) {
            log_error("producer: batch messages cannot have a delay level");
            return -EINVAL;
        }
    }
    struct send_ctx *x = ctx_get(p);
    if (!x)
        return -ENOMEM;
    snprintf(x->topic, sizeof x->topic, "%s", msgs[0].topic);
    x->born_ts = wall_ms();
    x->batch = batch;
    x->flag = msgs[0].flag;
    x->max_attempts = 1 + p->retry_times;
    int rc = 0;
    if (!batch) {
        msg_uniq_next(&p->uniq, x->born_ts, x->res.msg_id);
        rc = cli_message_properties(&msgs[0], x->res.msg_id, &x->props);
        if (rc == -EINVAL)
            log_error("producer: message properties contain separator bytes or exceed %d bytes",
                      MSG_PROPERTIES_MAX);
        if (!rc && msgs[0].body_len)
            rc = buf_append(&x->body, msgs[0].body, msgs[0].body_len);
    } else {
        for (int i = 0; !rc && i < n; i++) {
            char uid[MSG_UNIQ_ID_LEN + 1];
            msg_uniq_next(&p->uniq, x->born_ts, uid);
            if (i == 0)
                memcpy(x->res.msg_id, uid, sizeof uid);
            buf_reset(&x->props);
            rc = cli_message_properties(&msgs[i], uid, &x->props);
            if (rc == -EINVAL)
                log_error("producer: batch message %d: bad properties", i);
            size_t need = 32 + msgs[i].body_len + x->props.len;
            if (!rc)
                rc = buf_reserve(&x->body, need);
            if (!rc) {
                int w = msg_batch_encode_one(x->body.data + x->body.len, x->body.cap - x->body.len,
                                             msgs[i].flag, msgs[i].body, msgs[i].body_len,
                                             (const char *)x->props.data, (uint32_t)x->props.len);
                if (w < 0)
                    rc = w;
                else
                    x->body.len += (size_t)w;
            }
        }
        buf_reset(&x->props);
        if (!rc)
            rc = prop_put(&x->props, MSG_PROP_WAIT_STORE_MSG_OK, "true", 4);
    }
    if (rc) {
        ctx_release(x);
        return rc;
    }
    *out = x;
    return 0;
}

int cli_send(cli_producer *p, const struct cli_message *m, cli_send_fn cb, void *ud)
{
    struct send_ctx *x;
    int rc = prepare(p, m, 1, false, &x);
    if (rc)
        return rc;
    x->cb = cb;
    x->ud = ud;
    attempt(x);
    return 0;
}

int cli_send_ordered(cli_producer *p, const struct cli_message *m, const char *shard_key,
                     cli_send_fn cb, void *ud)
{
    if (!shard_key || strlen(shard_key) >= CLI_NAME_MAX) {
        log_error("producer: ordered send needs a sharding key shorter than %d bytes", CLI_NAME_MAX);
        return -EINVAL;
    }
    struct send_ctx *x;
    int rc = prepare(p, m, 1, false, &x);
    if (rc)
        return rc;
    x->ordered = true;
    snprintf(x->shard_key, sizeof x->shard_key, "%s", shard_key);
    x->cb = cb;
    x->ud = ud;
    attempt(x);
    return 0;
}

int cli_send_oneway(cli_producer *p, const struct cli_message *m)
{
    struct send_ctx *x;
    int rc = prepare(p, m, 1, false, &x);
    if (rc)
        return rc;
    x->oneway = true;
    x->max_attempts = 1;
    attempt(x);
    return 0;
}

int cli_send_batch(cli_producer *p, const struct cli_message *msgs, int n, cli_send_fn cb, void *ud)
{
    struct send_ctx *x;
    int rc = prepare(p, msgs, n, true, &x);
    if (rc)
        return rc;
    x->cb = cb;
    x->ud = ud;
    attempt(x);
    return 0;
}

struct sync_send {
    bool done;
    struct cli_send_result *r;
};

static void sync_send_cb(const struct cli_send_result *r, void *ud)
{
    struct sync_send *s = ud;
    *s->r = *r;
    s->done = true;
}

static int wait_result(cli_producer *p, int rc, struct sync_send *s)
{
    if (rc) {
        memset(s->r, 0, sizeof *s->r);
        s->r->err = rc;
        s->r->code = -1;
        snprintf(s->r->errmsg, sizeof s->r->errmsg, "send refused: %s", strerror(-rc));
        return rc;
    }
    cli_run_until(p->c, &s->done);
    return s->r->err;
}

int cli_send_sync(cli_producer *p, const struct cli_message *m, struct cli_send_result *r)
{
    struct sync_send s = { .r = r };
    return wait_result(p, cli_send(p, m, sync_send_cb, &s), &s);
}

int cli_send_ordered_sync(cli_producer *p, const struct cli_message *m, const char *shard_key,
                          struct cli_send_result *r)
{
    struct sync_send s = { .r = r };
    return wait_result(p, cli_send_ordered(p, m, shard_key, sync_send_cb, &s), &s);
}

int cli_send_batch_sync(cli_producer *p, const struct cli_message *msgs, int n,
                        struct cli_send_result *r)
{
    struct sync_send s = { .r = r };
    return wait_result(p, cli_send_batch(p, msgs, n, sync_send_cb, &s), &s);
}
