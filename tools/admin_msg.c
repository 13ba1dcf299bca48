/*
 * rmqadmin message commands: queryMsgById, queryMsgByKey, queryMsgByOffset,
 * sendMessage and consumeMessage. Lookups go to the broker holding the
 * message (decoded from an offset message id, or every broker of the
 * topic's route); sends and consumption use the client library's producer
 * and managed consumer, so consumeMessage commits its offsets like any
 * consumer of the group.
 */
#include <ctype.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "admin.h"
#include "message.h"
#include "producer.h"

#define ADM_PRODUCER_GROUP "TOOLS_PRODUCER"
#define ADM_CONSUMER_GROUP "TOOLS_CONSUMER"

/* QUERY_MESSAGE on every master of the route; calls fn for each record. */
typedef void (*rec_fn)(const uint8_t *rec, size_t len, const char *broker, void *ud);

static int query_route(struct adm *a, const struct cli_route *r, const char *topic, const char *key,
                       bool uniq, int max, int64_t begin, int64_t end, rec_fn fn, void *ud,
                       int *found)
{
    cli_client *c = adm_client(a);
    int failed = 0;
    *found = 0;
    for (int i = 0; i < r->nqd; i++) {
        const char *addr = cli_route_any_addr(r, r->qd[i].broker, false);
        if (!addr)
            continue;
        rmt_cmd req, *resp = NULL;
        char err[ADM_ERR_MAX];
        cli_cmd_init(c, &req, RMT_REQ_QUERY_MESSAGE);
        rmt_cmd_set_ext(&req, "topic", topic);
        rmt_cmd_set_ext(&req, "key", key);
        rmt_cmd_set_ext_int(&req, "maxNum", max);
        rmt_cmd_set_ext_int(&req, "beginTimestamp", begin);
        rmt_cmd_set_ext_int(&req, "endTimestamp", end);
        if (uniq)
            rmt_cmd_set_ext(&req, "_UNIQUE_KEY_QUERY", "true");
        int rc = cli_admin_invoke(c, addr, &req, NULL, &resp, err, sizeof err);
        rmt_cmd_destroy(&req);
        if (rc == 0) {
            size_t pos = 0;
            while (pos < resp->body_len) {
                struct msg_record m;
                int n = msg_record_decode(resp->body + pos, resp->body_len - pos, &m, 0);
                if (n <= 0)
                    break;
                fn(resp->body + pos, (size_t)n, r->qd[i].broker, ud);
                (*found)++;
                pos += (size_t)n;
            }
        } else if (rc != RMT_RESP_QUERY_NOT_FOUND) {
            failed++;
            adm_fail(a, "query on %s (%s) failed: %s", r->qd[i].broker, addr, err);
        }
        rmt_cmd_free(resp);
    }
    return failed;
}

struct first_rec {
    uint8_t *rec;
    size_t len;
    char broker[CLI_NAME_MAX];
};

static void keep_first(const uint8_t *rec, size_t len, const char *broker, void *ud)
{
    struct first_rec *f = ud;
    if (f->rec)
        return;
    f->rec = malloc(len);
    if (f->rec) {
        memcpy(f->rec, rec, len);
        f->len = len;
        snprintf(f->broker, sizeof f->broker, "%s", broker);
    }
}

/* Consumption state of a stored message per group that consumes its topic
 * (mqadmin's MessageTrack): CONSUMED when the group's committed offset of
 * the message's queue is past the message, NOT_CONSUME_YET otherwise,
 * UNKNOWN when the broker does not answer. Returns 0 with *out a new table,
 * or 1 after printing the error. */
static int message_tracks(struct adm *a, const char *addr, const struct msg_record *m, tbl **out)
{
    cli_client *c = adm_client(a);
    char topic[256], err[ADM_ERR_MAX];
    snprintf(topic, sizeof topic, "%.*s", (int)m->topic_len, m->topic);
    rmt_cmd req;
    cli_cmd_init(c, &req, RMT_REQ_QUERY_TOPIC_CONSUME_BY_WHO);
    rmt_cmd_set_ext(&req, "topic", topic);
    char *body = NULL;
    int rc = cli_admin_invoke(c, addr, &req, &body, NULL, err, sizeof err);
    rmt_cmd_destroy(&req);
    if (rc) {
        free(body);
        return adm_fail(a, "cannot ask %s which groups consume '%s': %s", addr, topic, err);
    }
    json_error_t je;
    json_t *j = json_loads(body, 0, &je);
    free(body);
    json_t *list = j ? json_object_get(j, "groupList") : NULL;
    if (!json_is_array(list)) {
        json_decref(j);
        return adm_fail(a, "malformed consumer group list from %s", addr);
    }
    static const char *const h[] = { "ConsumerGroup", "TrackType", "ConsumerOffset" };
    tbl *t = tbl_new(3, h);
    if (!t) {
        json_decref(j);
        return adm_fail(a, "out of memory");
    }
    size_t i;
    json_t *g;
    json_array_foreach(list, i, g) {
        if (!json_is_string(g))
            continue;
        int64_t off = -1;
        rc = cli_admin_consumer_offset(c, addr, json_string_value(g), topic, m->queue_id, &off, err,
                                       sizeof err);
        tbl_str(t, json_string_value(g));
        tbl_str(t, rc ? "UNKNOWN" : off > m->queue_offset ? "CONSUMED" : "NOT_CONSUME_YET");
        tbl_int(t, rc ? -1 : off);
    }
    json_decref(j);
    *out = t;
    return 0;
}

/* Record table plus the per-group consumption state. */
static int print_with_tracks(struct adm *a, const uint8_t *rec, size_t len, const char *broker,
                             const char *addr)
{
    struct msg_record m;
    tbl *rt = NULL, *tt = NULL;
    if (adm_record_table(a, rec, len, broker, &rt))
        return 1;
    msg_record_decode(rec, len, &m, 0);
    if (message_tracks(a, addr, &m, &tt)) {
        tbl_free(rt);
        return 1;
    }
    int rc = 0;
    if (a->json) {
        json_t *o = tbl_json(rt), *tr = tbl_json(tt);
        if (!o || !tr || json_object_set_new(o, "MessageTracks", tr) ||
            json_dumpf(o, stdout, JSON_INDENT(2)) || fputc('\n', stdout) == EOF)
            rc = -ENOMEM;
        if (!o && tr)
            json_decref(tr);
        json_decref(o);
    } else {
        rc = tbl_print(rt, false, stdout);
        if (!rc && tbl_rows(tt) == 0)
            printf("\nWARN: No Consumer\n");
        else if (!rc && printf("\n") > 0)
            rc = tbl_print(tt, false, stdout);
    }
    tbl_free(rt);
    tbl_free(tt);
    return rc ? adm_fail(a, "cannot print: %s", strerror(-rc)) : 0;
}

/* Properties a re-sent message must not carry over: the producer sets its
 * own keys, tags and unique key, and the broker-side routing ones would
 * misroute it. */
static bool resend_skip(const char *n, size_t nl)
{
    static const char *const skip[] = { MSG_PROP_TAGS, MSG_PROP_KEYS, MSG_PROP_UNIQ_CLIENT_MESSAGE_ID_KEYIDX,
                                        MSG_PROP_WAIT_STORE_MSG_OK, MSG_PROP_DELAY_TIME_LEVEL,
                                        MSG_PROP_REAL_TOPIC, MSG_PROP_REAL_QUEUE_ID, "MIN_OFFSET", "MAX_OFFSET",
                                        "CONSUME_START_TIME", NULL };
    for (int i = 0; skip[i]; i++)
        if (nl == strlen(skip[i]) && memcmp(n, skip[i], nl) == 0)
            return true;
    return false;
}

/* mqadmin queryMsgById -s true: sends the message again with its body,
 * tags, keys and user properties. A message of a %DLQ% or %RETRY% topic
 * goes back to its original topic (RETRY_TOPIC), where its group consumes
 * it again; mqadmin would send it to the dead-letter topic itself, where
 * no consumer reads it. */
static int resend_record(struct adm *a, const uint8_t *rec, size_t len)
{
    struct msg_record m;
    if (msg_record_decode(rec, len, &m, 0) <= 0)
        return adm_fail(a, "the broker returned a malformed message record");
    char topic[256], tags[256] = "", keys[1024] = "";
    const char *v;
    size_t vl;
    snprintf(topic, sizeof topic, "%.*s", (int)m.topic_len, m.topic);
    bool sys = strncmp(topic, "%DLQ%", 5) == 0 || strncmp(topic, "%RETRY%", 7) == 0;
    if (sys) {
        if (!msg_prop_get(m.props, m.props_len, MSG_PROP_RETRY_TOPIC, &v, &vl) || vl == 0 ||
            vl >= sizeof topic)
            return adm_fail(a, "the message in '%s' does not name its original topic (RETRY_TOPIC)", topic);
        snprintf(topic, sizeof topic, "%.*s", (int)vl, v);
    }
    if (msg_prop_get(m.props, m.props_len, MSG_PROP_TAGS, &v, &vl))
        snprintf(tags, sizeof tags, "%.*s", (int)vl, v);
    if (msg_prop_get(m.props, m.props_len, MSG_PROP_KEYS, &v, &vl))
        snprintf(keys, sizeof keys, "%.*s", (int)vl, v);
    char *props = malloc((size_t)m.props_len + 1);
    if (!props)
        return adm_fail(a, "out of memory");
    size_t plen = 0, pos = 0, nl;
    const char *n;
    while (msg_prop_next(m.props, m.props_len, &pos, &n, &nl, &v, &vl) == 1) {
        if (resend_skip(n, nl) || nl >= 256)
            continue;
        char name[256];
        snprintf(name, sizeof name, "%.*s", (int)nl, n);
        if (msg_prop_append(props, m.props_len + 1, &plen, name, v, vl))
            break;
    }
    cli_client *c = adm_client(a);
    struct cli_producer_opts po = { .group = ADM_PRODUCER_GROUP, .retry_times = 2 };
    int err = 0;
    cli_producer *p = cli_producer_new(c, &po, &err);
    if (!p) {
        free(props);
        return adm_fail(a, "cannot create a producer: %s", strerror(-err));
    }
    struct cli_message msg = { .topic = topic, .body = m.body, .body_len = m.body_len,
                               .tags = tags[0] ? tags : NULL, .keys = keys[0] ? keys : NULL,
                               .flag = m.flag, .props = plen ? props : NULL, .props_len = (uint32_t)plen };
    struct cli_send_result r;
    memset(&r, 0, sizeof r);
    int rc = cli_send_sync(p, &msg, &r);
    cli_producer_free(p);
    free(props);
    if (rc)
        return adm_fail(a, "re-sending to '%s' failed: %s", topic, r.errmsg[0] ? r.errmsg : strerror(-rc));
    tbl *t = tbl_new_kv();
    if (!t)
        return adm_fail(a, "out of memory");
    tbl_kv(t, "Topic", topic);
    tbl_kv(t, "Broker", r.broker);
    tbl_kv_int(t, "QueueId", r.queue_id);
    tbl_kv_int(t, "QueueOffset", r.queue_offset);
    tbl_kv(t, "MsgId", r.msg_id);
    tbl_kv(t, "OffsetMsgId", r.offset_msg_id);
    rc = tbl_print(t, a->json, stdout);
    tbl_free(t);
    return rc ? adm_fail(a, "cannot print: %s", strerror(-rc)) : 0;
}

int adm_query_msg_by_id(struct adm *a)
{
    const char *id = adm_arg(a, 'i');
    const char *topic = adm_arg(a, 't');
    const char *send = adm_arg(a, 's');
    if (send && strcmp(send, "true") && strcmp(send, "false"))
        return adm_fail(a, "-s takes true or false, not '%s'", send);
    bool resend = send && strcmp(send, "true") == 0;
    cli_client *c = adm_client(a);
    if (!c)
        return 1;
    struct first_rec f = { 0 };
    char addr[CLI_ADDR_MAX] = "";
    if (topic) {
        struct cli_route *r = adm_route(a, topic);
        if (!r)
            return 1;
        int found = 0;
        query_route(a, r, topic, id, true, 32, 0, INT64_MAX, keep_first, &f, &found);
        const char *ba = f.rec ? cli_route_any_addr(r, f.broker, false) : NULL;
        snprintf(addr, sizeof addr, "%s", ba ? ba : "");
        cli_route_free(r);
    }
    if (!f.rec) {
        struct msg_host h;
        int64_t phys;
        if (msg_offset_id_decode(id, strlen(id), &h, &phys)) {
            if (topic)
                return adm_fail(a, "no message with unique key '%s' in topic '%s', and it is not an "
                                   "offset message id (32 or 56 hex digits)", id, topic);
            return adm_fail(a, "'%s' is not an offset message id (32 or 56 hex digits); to look up a "
                               "unique message key give its topic with -t", id);
        }
        if (h.v6)
            return adm_fail(a, "message id '%s' names an IPv6 broker, which this tool cannot reach", id);
        snprintf(addr, sizeof addr, "%u.%u.%u.%u:%u", h.ip[0], h.ip[1], h.ip[2], h.ip[3], h.port);
        rmt_cmd *resp = NULL;
        char err[ADM_ERR_MAX];
        int rc = cli_admin_view_by_offset(c, addr, phys, &resp, err, sizeof err);
        if (rc) {
            rmt_cmd_free(resp);
            return adm_fail(a, "message %s (broker %s, commit log offset %lld) not found: %s", id, addr,
                            (long long)phys, err);
        }
        f.rec = malloc(resp->body_len ? resp->body_len : 1);
        if (f.rec) {
            memcpy(f.rec, resp->body, resp->body_len);
            f.len = resp->body_len;
        }
        rmt_cmd_free(resp);
        if (!f.rec)
            return adm_fail(a, "out of memory");
    }
    int rc = resend ? resend_record(a, f.rec, f.len)
             : addr[0] ? print_with_tracks(a, f.rec, f.len, f.broker[0] ? f.broker : NULL, addr)
                       : adm_print_record(a, f.rec, f.len, f.broker[0] ? f.broker : NULL);
    free(f.rec);
    return rc;
}

static void add_row(const uint8_t *rec, size_t len, const char *broker, void *ud)
{
    tbl *t = ud;
    struct msg_record m;
    if (msg_record_decode(rec, len, &m, 0) <= 0)
        return;
    const char *v;
    size_t vl;
    char id[MSG_OFFSET_ID_MAX], ts[64];
    msg_offset_id_encode(&m.store_host, m.phys_offset, id);
    if (msg_prop_get(m.props, m.props_len, MSG_PROP_UNIQ_CLIENT_MESSAGE_ID_KEYIDX, &v, &vl))
        tbl_strf(t, "%.*s", (int)vl, v);
    else
        tbl_str(t, id);
    tbl_str(t, id);
    tbl_str(t, broker);
    tbl_int(t, m.queue_id);
    tbl_int(t, m.queue_offset);
    if (msg_prop_get(m.props, m.props_len, MSG_PROP_TAGS, &v, &vl))
        tbl_strf(t, "%.*s", (int)vl, v);
    else
        tbl_str(t, "");
    if (msg_prop_get(m.props, m.props_len, MSG_PROP_KEYS, &v, &vl))
        tbl_strf(t, "%.*s", (int)vl, v);
    else
        tbl_str(t, "");
    adm_fmt_time(m.store_ts, ts, sizeof ts);
    tbl_str(t, ts);
}

int adm_query_msg_by_key(struct adm *a)
{
    const char *topic = adm_arg(a, 't');
    const char *key = adm_arg(a, 'k');
    long long max;
    int64_t begin = 0, end = INT64_MAX;
    if (adm_int_arg(a, 'c', 64, 1, 256, &max))
        return 2;
    if (adm_arg(a, 'b') && adm_parse_time(adm_arg(a, 'b'), &begin))
        return adm_fail(a, "bad value '%s' for -b: expected now, epoch milliseconds or "
                           "yyyy-MM-dd#HH:mm:ss:SSS", adm_arg(a, 'b')) + 1;
    if (adm_arg(a, 'e') && adm_parse_time(adm_arg(a, 'e'), &end))
        return adm_fail(a, "bad value '%s' for -e: expected now, epoch milliseconds or "
                           "yyyy-MM-dd#HH:mm:ss:SSS", adm_arg(a, 'e')) + 1;
    struct cli_route *r = adm_route(a, topic);
    if (!r)
        return 1;
    static const char *const h[] = { "MsgId", "OffsetMsgId", "Broker", "QID", "Offset", "Tags",
                                     "Keys", "StoreTime" };
    tbl *t = tbl_new(8, h);
    if (!t) {
        cli_route_free(r);
        return adm_fail(a, "out of memory");
    }
    int found = 0;
    int failed = query_route(a, r, topic, key, false, (int)max, begin, end, add_row, t, &found);
    cli_route_free(r);
    if (found == 0 && !failed) {
        tbl_free(t);
        return adm_fail(a, "no message with key '%s' in topic '%s'", key, topic);
    }
    tbl_print(t, a->json, stdout);
    tbl_free(t);
    return failed ? 1 : 0;
}

int adm_query_msg_by_offset(struct adm *a)
{
    const char *topic = adm_arg(a, 't');
    const char *broker = adm_arg(a, 'b');
    long long qid, off;
    if (adm_int_arg(a, 'i', 0, 0, 65535, &qid) || adm_int_arg(a, 'o', 0, 0, INT64_MAX, &off))
        return 2;
    struct cli_route *r = adm_route(a, topic);
    if (!r)
        return 1;
    const char *addr = cli_route_any_addr(r, broker, false);
    if (!addr) {
        cli_route_free(r);
        return adm_fail(a, "broker '%s' holds no queue of topic '%s'", broker, topic);
    }
    char addr_copy[CLI_ADDR_MAX];
    snprintf(addr_copy, sizeof addr_copy, "%s", addr);
    cli_route_free(r);
    uint8_t *rec = NULL;
    size_t len = 0;
    char err[ADM_ERR_MAX];
    int rc = adm_pull_one(a, addr_copy, topic, (int)qid, off, &rec, &len, err, sizeof err);
    if (rc)
        return adm_fail(a, "%s queue %lld of '%s' on %s: %s", rc > 0 ? "reading" : "pulling", qid,
                        topic, broker, err);
    rc = adm_print_record(a, rec, len, broker);
    free(rec);
    return rc;
}

int adm_send_message(struct adm *a)
{
    cli_client *c = adm_client(a);
    if (!c)
        return 1;
    struct cli_producer_opts po = { 0 };
    po.group = ADM_PRODUCER_GROUP;
    po.retry_times = 2;
    int err = 0;
    cli_producer *p = cli_producer_new(c, &po, &err);
    if (!p)
        return adm_fail(a, "cannot create a producer: %s", strerror(-err));
    struct cli_message m = { 0 };
    m.topic = adm_arg(a, 't');
    m.body = adm_arg(a, 'p');
    m.body_len = (uint32_t)strlen(adm_arg(a, 'p'));
    m.keys = adm_arg(a, 'k');
    m.tags = adm_arg(a, 'c');
    struct cli_send_result r;
    memset(&r, 0, sizeof r);
    int rc = cli_send_sync(p, &m, &r);
    cli_producer_free(p);
    if (rc == -ENOENT) {
        struct cli_route *rt = NULL;
        char rerr[ADM_ERR_MAX];
        int lrc = cli_route_get_sync(c, m.topic, &rt, rerr, sizeof rerr);
        int nwrite = rt ? rt->nwrite : 0;
        cli_route_free(rt);
        if (lrc == 0 && nwrite == 0)
            return adm_fail(a, "sending to '%s' failed: the topic has no writable queue (is the write "
                               "permission of its brokers wiped? see addWritePerm)", m.topic);
        if (lrc == -ENOENT)
            return adm_fail(a, "topic '%s' does not exist (no route on %s)", m.topic, a->ns);
    }
    if (rc == -EINVAL && !r.errmsg[0])
        return adm_fail(a, "the message was refused locally (bad topic, tag or key)");
    if (rc)
        return adm_fail(a, "sending to '%s' failed: %s", m.topic, r.errmsg[0] ? r.errmsg : strerror(-rc));
    static const char *const st[] = { "SEND_OK", "FLUSH_DISK_TIMEOUT", "FLUSH_SLAVE_TIMEOUT",
                                      "SLAVE_NOT_AVAILABLE" };
    tbl *t = tbl_new_kv();
    if (!t)
        return adm_fail(a, "out of memory");
    tbl_kv(t, "Topic", m.topic);
    tbl_kv(t, "Broker", r.broker);
    tbl_kv_int(t, "QueueId", r.queue_id);
    tbl_kv_int(t, "QueueOffset", r.queue_offset);
    tbl_kv(t, "SendStatus", (unsigned)r.status < 4 ? st[r.status] : "?");
    tbl_kv(t, "MsgId", r.msg_id);
    tbl_kv(t, "OffsetMsgId", r.offset_msg_id);
    tbl_print(t, a->json, stdout);
    tbl_free(t);
    return 0;
}

struct consume_run {
    struct adm *a;
    tbl *t;
    long long want, got;
    double last_ms, idle_ms;
    bool done;
};

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

/* Prints the batch; a batch cut short by the count is not acknowledged, so
 * its unprinted messages stay uncommitted for the next consumer. */
static int on_batch(cli_consumer *cs, const struct cli_msg_view *msgs, int n, void *ud)
{
    struct consume_run *run = ud;
    (void)cs;
    run->last_ms = now_ms();
    int i;
    for (i = 0; i < n && run->got < run->want; i++, run->got++) {
        const struct cli_msg_view *m = &msgs[i];
        char ts[64];
        tbl_strf(run->t, "%.*s", (int)m->msg_id_len, m->msg_id);
        tbl_str(run->t, m->broker);
        tbl_int(run->t, m->queue_id);
        tbl_int(run->t, m->queue_offset);
        tbl_strf(run->t, "%.*s", (int)m->tags_len, m->tags ? m->tags : "");
        tbl_strf(run->t, "%.*s", (int)m->keys_len, m->keys ? m->keys : "");
        adm_fmt_time(m->store_ts, ts, sizeof ts);
        tbl_str(run->t, ts);
        bool printable = !(m->sysflag & MSG_SYSFLAG_COMPRESSED);
        for (uint32_t k = 0; k < m->body_len && printable; k++)
            if (m->body[k] < 0x20 && m->body[k] != '\t')
                printable = false;
        if (printable)
            tbl_strf(run->t, "%.*s", (int)m->body_len, (const char *)m->body);
        else
            tbl_strf(run->t, "<%u bytes of binary data>", m->body_len);
    }
    if (run->got >= run->want)
        run->done = true;
    return i == n ? 0 : 1;
}

static void idle_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    struct consume_run *run = w->data;
    if (now_ms() - run->last_ms >= run->idle_ms)
        run->done = true;
}

int adm_consume_message(struct adm *a)
{
    long long count, idle;
    if (adm_int_arg(a, 'c', 128, 1, 1000000, &count) || adm_int_arg(a, 303, 3000, 100, 3600000, &idle))
        return 2;
    const char *topic = adm_arg(a, 't');
    const char *group = adm_arg(a, 'g') ? adm_arg(a, 'g') : ADM_CONSUMER_GROUP;
    struct cli_route *r = adm_route(a, topic);
    if (!r)
        return 1;
    cli_route_free(r);
    cli_client *c = adm_client(a);
    static const char *const h[] = { "MsgId", "Broker", "QID", "Offset", "Tags", "Keys",
                                     "StoreTime", "Body" };
    struct consume_run run = { .a = a, .t = tbl_new(8, h), .want = count };
    if (!run.t)
        return adm_fail(a, "out of memory");
    struct cli_consumer_opts co = { 0 };
    co.group = group;
    co.topic = topic;
    co.sub_expr = adm_arg(a, 's');
    co.model = CLI_CLUSTERING;
    co.from = CLI_FROM_FIRST_OFFSET;
    co.batch_size = count < 32 ? (int)count : 32;
    co.suspend_ms = 1000;
    co.commit_ms = 1000;
    co.pull_retry_ms = 200;
    co.on_messages = on_batch;
    co.ud = &run;
    int err = 0;
    cli_consumer *cs = cli_consumer_new(c, &co, &err);
    if (!cs) {
        tbl_free(run.t);
        return adm_fail(a, "cannot create a consumer for '%s' (group '%s'): %s", topic, group,
                        err == -EINVAL ? "bad settings, e.g. the tag expression" : strerror(-err));
    }
    run.last_ms = now_ms();
    run.idle_ms = (double)idle;
    /* Checked ten times per idle period. */
    ev_timer idle_t;
    ev_timer_init(&idle_t, idle_cb, (double)idle / 10000.0, (double)idle / 10000.0);
    idle_t.data = &run;
    ev_timer_start(a->loop, &idle_t);
    int rc = cli_consumer_start(cs);
    if (rc == 0)
        cli_run_until(c, &run.done);
    ev_timer_stop(a->loop, &idle_t);
    int src = cli_consumer_shutdown(cs, 3000);
    cli_consumer_free(cs);
    if (rc) {
        tbl_free(run.t);
        return adm_fail(a, "cannot start consuming '%s': %s", topic, strerror(-rc));
    }
    tbl_print(run.t, a->json, stdout);
    tbl_free(run.t);
    if (!a->json)
        fprintf(stderr, "consumed %lld message(s) of '%s' as group '%s'\n", run.got, topic, group);
    if (src)
        return adm_fail(a, "committing the offsets of group '%s' failed: %s", group, strerror(-src));
    return 0;
}
