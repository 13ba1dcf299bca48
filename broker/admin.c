/*
 * Admin requests. Bodies are RocketMQ's fastjson shapes: maps keyed by a
 * MessageQueue are written with the queue object itself as the key
 * ({"brokerName":..,"queueId":..,"topic":..}), fields in fastjson's sorted
 * order, as mqadmin and the clients expect.
 */
#include "admin.h"

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "broker.h"
#include "client_manager.h"
#include "config.h"
#include "ha.h"
#include "ha_sync.h"
#include "json_util.h"
#include "log.h"
#include "pull.h"
#include "registrar.h"
#include "send.h"
#include "timer.h"

#define SAMPLES 601

struct sample {
    uint64_t put, get_msgs, get_found, get_miss;
};

struct adm {
    struct broker *b;
    ev_timer tick;
    struct sample ring[SAMPLES];
    unsigned head, n;
};

const char *const adm_runtime_keys[] = {
    "brokerPermission", "autoCreateTopicEnable", "autoCreateSubscriptionGroup",
    "defaultTopicQueueNums", "longPollingEnable", "shortPollingTimeMills", "logLevel",
    "traceOn", NULL,
};

struct adm *adm_new(struct broker *b)
{
    struct adm *a = calloc(1, sizeof *a);
    if (a)
        a->b = b;
    return a;
}

void adm_free(struct adm *a)
{
    if (!a)
        return;
    ev_timer_stop(a->b->loop, &a->tick);
    free(a);
}

static void on_tick(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct adm *a = w->data;
    struct brk_stats *s = &a->b->stats;
    a->head = (a->head + 1) % SAMPLES;
    a->ring[a->head] = (struct sample){ s->put_msgs, s->get_msgs, s->get_found, s->get_miss };
    if (a->n < SAMPLES)
        a->n++;
}

void adm_start(struct adm *a)
{
    ev_timer_init(&a->tick, on_tick, 1.0, 1.0);
    a->tick.data = a;
    on_tick(a->b->loop, &a->tick, 0);
    ev_timer_start(a->b->loop, &a->tick);
}

/* Rate over the last `secs` seconds of one counter (by offset in struct sample). */
static double rate(struct adm *a, size_t field, unsigned secs)
{
    if (a->n < 2)
        return 0.0;
    if (secs >= a->n)
        secs = a->n - 1;
    const struct sample *now = &a->ring[a->head];
    const struct sample *then = &a->ring[(a->head + SAMPLES - secs) % SAMPLES];
    uint64_t x = *(const uint64_t *)((const char *)now + field);
    uint64_t y = *(const uint64_t *)((const char *)then + field);
    return (double)(x - y) / (double)secs;
}

static int tps3(struct adm *a, size_t field, struct buf *out, const char *key, bool comma)
{
    char v[96];
    snprintf(v, sizeof v, "%.2f %.2f %.2f", rate(a, field, 10), rate(a, field, 60), rate(a, field, 600));
    return buf_printf(out, "%s\"%s\":\"%s\"", comma ? "," : "", key, v);
}

static void reply_body(struct broker *b, rmt_conn *c, rmt_cmd *req, int rc)
{
    if (rc) {
        brk_err(b, c, req, RMT_RESP_SYSTEM_ERROR, "cannot build the answer: %s", strerror(-rc));
        return;
    }
    brk_reply(b, c, req, true);
}

static int mq_key(struct buf *out, struct broker *b, const char *topic, int qid)
{
    int rc = buf_append(out, "{\"brokerName\":", 14);
    if (!rc)
        rc = json_buf_str(out, b->cfg.name);
    if (!rc)
        rc = buf_printf(out, ",\"queueId\":%d,\"topic\":", qid);
    if (!rc)
        rc = json_buf_str(out, topic);
    if (!rc)
        rc = buf_append_u8(out, '}');
    return rc;
}

static void create_topic(struct broker *b, rmt_conn *c, rmt_cmd *req)
{
    const char *topic;
    int64_t rq, wq, perm, sysflag;
    if (brk_need_str(b, c, req, "topic", &topic) || brk_need_int(b, c, req, "readQueueNums", &rq) ||
        brk_need_int(b, c, req, "writeQueueNums", &wq) || brk_need_int(b, c, req, "perm", &perm) ||
        brk_opt_int(b, c, req, "topicSysFlag", 0, &sysflag))
        return;
    if (!meta_topic_name_valid(topic)) {
        brk_err(b, c, req, RMT_RESP_INVALID_PARAMETER,
                "the topic name '%.200s' is invalid: only [%%|a-zA-Z0-9_-], at most %d characters",
                topic, META_TOPIC_NAME_MAX);
        return;
    }
    if (strcmp(topic, b->cfg.cluster) == 0 || strcmp(topic, BRK_DEFAULT_TOPIC) == 0) {
        brk_err(b, c, req, RMT_RESP_INVALID_PARAMETER,
                "the topic[%s] is conflict with system reserved words", topic);
        return;
    }
    if (rq < 1 || wq < 1 || rq > META_QUEUE_MAX || wq > META_QUEUE_MAX || perm < 0 || perm > 15) {
        brk_err(b, c, req, RMT_RESP_INVALID_PARAMETER,
                "readQueueNums/writeQueueNums must be 1..%d and perm 0..15", META_QUEUE_MAX);
        return;
    }
    struct meta_topic t;
    meta_topic_defaults(&t, topic);
    t.read_queue_nums = (int32_t)rq;
    t.write_queue_nums = (int32_t)wq;
    t.perm = (int32_t)perm;
    t.sys_flag = (int32_t)sysflag;
    const char *ft = rmt_cmd_ext(req, "topicFilterType");
    t.filter_type = ft && strcmp(ft, "MULTI_TAG") == 0 ? META_FILTER_MULTI_TAG : META_FILTER_SINGLE_TAG;
    t.order = rmt_cmd_ext_bool(req, "order", false);
    int rc = meta_topic_put(b->meta, &t);
    if (rc) {
        brk_err(b, c, req, rc == -EINVAL ? RMT_RESP_INVALID_PARAMETER : RMT_RESP_SYSTEM_ERROR,
                "cannot create topic %s: %s", topic, strerror(-rc));
        return;
    }
    log_info("topic %s created/updated by %s (queues %lld/%lld, perm %lld)", topic, rmt_conn_peer(c),
             (long long)rq, (long long)wq, (long long)perm);
    reg_soon(b->reg);
    brk_resp(b, RMT_RESP_SUCCESS);
    brk_reply(b, c, req, false);
}

static void delete_topic(struct broker *b, rmt_conn *c, rmt_cmd *req)
{
    const char *topic;
    if (brk_need_str(b, c, req, "topic", &topic))
        return;
    int rc = meta_topic_delete(b->meta, topic);
    if (rc && rc != -ENOENT) {
        brk_err(b, c, req, RMT_RESP_SYSTEM_ERROR, "cannot delete topic %s: %s", topic, strerror(-rc));
        return;
    }
    int nq = store_delete_topic(b->store, topic);
    int no = meta_offsets_delete_topic(b->meta, topic);
    log_info("topic %s deleted by %s (%d queues, %d offset entries)", topic, rmt_conn_peer(c), nq, no);
    reg_soon(b->reg);
    brk_resp(b, RMT_RESP_SUCCESS);
    brk_reply(b, c, req, false);
}

static int topic_json(struct buf *out, const struct meta_topic *t)
{
    int rc = buf_append(out, "{\"topicName\":", 13);
    if (!rc)
        rc = json_buf_str(out, t->name);
    if (!rc)
        rc = buf_printf(out,
                        ",\"readQueueNums\":%d,\"writeQueueNums\":%d,\"perm\":%d,\"topicFilterType\":\"%s\","
                        "\"topicSysFlag\":%d,\"order\":%s}",
                        t->read_queue_nums, t->write_queue_nums, t->perm,
                        t->filter_type == META_FILTER_MULTI_TAG ? "MULTI_TAG" : "SINGLE_TAG", t->sys_flag,
                        t->order ? "true" : "false");
    return rc;
}

/* One SubscriptionGroupConfig, the same fields GET_ALL_SUBSCRIPTIONGROUP_CONFIG lists. */
static int group_json(struct buf *out, const struct meta_group *g)
{
    int rc = buf_append(out, "{\"groupName\":", 13);
    if (!rc)
        rc = json_buf_str(out, g->name);
    if (!rc)
        rc = buf_printf(out,
                        ",\"consumeEnable\":%s,\"consumeFromMinEnable\":%s,\"consumeBroadcastEnable\":%s,"
                        "\"consumeMessageOrderly\":%s,\"retryQueueNums\":%d,\"retryMaxTimes\":%d,"
                        "\"brokerId\":%lld,\"whichBrokerWhenConsumeSlowly\":%lld,"
                        "\"notifyConsumerIdsChangedEnable\":%s,\"groupSysFlag\":%d,\"consumeTimeoutMinute\":%d}",
                        g->consume_enable ? "true" : "false", g->consume_from_min_enable ? "true" : "false",
                        g->consume_broadcast_enable ? "true" : "false",
                        g->consume_message_orderly ? "true" : "false", g->retry_queue_nums, g->retry_max_times,
                        (long long)g->broker_id, (long long)g->which_broker_when_consume_slowly,
                        g->notify_consumer_ids_changed_enable ? "true" : "false", g->group_sys_flag,
                        g->consume_timeout_minute);
    return rc;
}

struct name_list {
    struct buf *out;
    int n;
    int rc;
};

static int add_topic_name(const struct meta_topic *t, void *arg)
{
    struct name_list *l = arg;
    if (l->n++ && (l->rc = buf_append_u8(l->out, ',')))
        return 1;
    l->rc = json_buf_str(l->out, t->name);
    return l->rc;
}

static void topic_stats(struct broker *b, rmt_conn *c, rmt_cmd *req)
{
    const char *topic;
    if (brk_need_str(b, c, req, "topic", &topic))
        return;
    const struct meta_topic *t = meta_topic_get(b->meta, topic);
    if (!t) {
        brk_err(b, c, req, RMT_RESP_TOPIC_NOT_EXIST, "topic[%s] not exist", topic);
        return;
    }
    brk_resp(b, RMT_RESP_SUCCESS);
    struct buf *o = &b->body;
    int rc = buf_append(o, "{\"offsetTable\":{", 16);
    for (int q = 0; q < t->write_queue_nums && !rc; q++) {
        int64_t min = store_min_queue_offset(b->store, topic, q);
        int64_t max = store_max_queue_offset(b->store, topic, q);
        int64_t last = max > 0 ? store_message_store_time(b->store, topic, q, max - 1) : 0;
        if (q)
            rc = buf_append_u8(o, ',');
        if (!rc)
            rc = mq_key(o, b, topic, q);
        if (!rc)
            rc = buf_printf(o, ":{\"lastUpdateTimestamp\":%lld,\"maxOffset\":%lld,\"minOffset\":%lld}",
                            (long long)(last > 0 ? last : 0), (long long)max, (long long)min);
    }
    if (!rc)
        rc = buf_append(o, "}}", 2);
    reply_body(b, c, req, rc);
}

static bool jbool(json_t *o, const char *k, bool def)
{
    json_t *v = json_object_get(o, k);
    return json_is_boolean(v) ? json_is_true(v) : def;
}

static int64_t jint(json_t *o, const char *k, int64_t def)
{
    json_t *v = json_object_get(o, k);
    return json_is_integer(v) ? json_integer_value(v) : def;
}

void adm_group_from_json(json_t *o, const char *name, struct meta_group *g)
{
    meta_group_defaults(g, name);
    g->consume_enable = jbool(o, "consumeEnable", g->consume_enable);
    g->consume_from_min_enable = jbool(o, "consumeFromMinEnable", g->consume_from_min_enable);
    g->consume_broadcast_enable = jbool(o, "consumeBroadcastEnable", g->consume_broadcast_enable);
    g->consume_message_orderly = jbool(o, "consumeMessageOrderly", g->consume_message_orderly);
    g->notify_consumer_ids_changed_enable =
        jbool(o, "notifyConsumerIdsChangedEnable", g->notify_consumer_ids_changed_enable);
    g->retry_queue_nums = (int32_t)jint(o, "retryQueueNums", g->retry_queue_nums);
    g->retry_max_times = (int32_t)jint(o, "retryMaxTimes", g->retry_max_times);
    g->broker_id = jint(o, "brokerId", g->broker_id);
    g->which_broker_when_consume_slowly = jint(o, "whichBrokerWhenConsumeSlowly", g->which_broker_when_consume_slowly);
    g->group_sys_flag = (int32_t)jint(o, "groupSysFlag", g->group_sys_flag);
    g->consume_timeout_minute = (int32_t)jint(o, "consumeTimeoutMinute", g->consume_timeout_minute);
}

int adm_topic_from_json(json_t *o, const char *name, struct meta_topic *t)
{
    if (!json_is_object(o) || !meta_topic_name_valid(name))
        return -EINVAL;
    meta_topic_defaults(t, name);
    int64_t rq = jint(o, "readQueueNums", t->read_queue_nums), wq = jint(o, "writeQueueNums", t->write_queue_nums);
    int64_t perm = jint(o, "perm", t->perm);
    if (rq < 0 || wq < 0 || rq > META_QUEUE_MAX || wq > META_QUEUE_MAX || perm < 0 || perm > 15)
        return -EINVAL;
    t->read_queue_nums = (int32_t)rq;
    t->write_queue_nums = (int32_t)wq;
    t->perm = (int32_t)perm;
    t->sys_flag = (int32_t)jint(o, "topicSysFlag", 0);
    const char *ft = json_string_value(json_object_get(o, "topicFilterType"));
    t->filter_type = ft && strcmp(ft, "MULTI_TAG") == 0 ? META_FILTER_MULTI_TAG : META_FILTER_SINGLE_TAG;
    t->order = jbool(o, "order", false);
    return 0;
}

static void create_group(struct broker *b, rmt_conn *c, rmt_cmd *req)
{
    char err[200];
    json_t *o = json_parse_rocketmq((const char *)req->body, req->body_len, err, sizeof err);
    if (!o || !json_is_object(o)) {
        json_decref(o);
        brk_err(b, c, req, RMT_RESP_INVALID_PARAMETER,
                "UPDATE_AND_CREATE_SUBSCRIPTIONGROUP: the body is not SubscriptionGroupConfig JSON: %s",
                o ? "not an object" : err);
        return;
    }
    const char *name = json_string_value(json_object_get(o, "groupName"));
    if (!name || !meta_group_name_valid(name)) {
        json_decref(o);
        brk_err(b, c, req, RMT_RESP_INVALID_PARAMETER,
                "UPDATE_AND_CREATE_SUBSCRIPTIONGROUP: 'groupName' is missing or invalid");
        return;
    }
    struct meta_group g;
    adm_group_from_json(o, name, &g);
    json_decref(o);
    int rc = meta_group_put(b->meta, &g);
    if (rc) {
        brk_err(b, c, req, rc == -EINVAL ? RMT_RESP_INVALID_PARAMETER : RMT_RESP_SYSTEM_ERROR,
                "cannot store subscription group %s: %s", name, strerror(-rc));
        return;
    }
    log_info("subscription group %s created/updated by %s", g.name, rmt_conn_peer(c));
    brk_resp(b, RMT_RESP_SUCCESS);
    brk_reply(b, c, req, false);
}

static void delete_group(struct broker *b, rmt_conn *c, rmt_cmd *req)
{
    const char *name;
    if (brk_need_str(b, c, req, "groupName", &name))
        return;
    int rc = meta_group_delete(b->meta, name);
    if (rc && rc != -ENOENT) {
        brk_err(b, c, req, RMT_RESP_SYSTEM_ERROR, "cannot delete group %s: %s", name, strerror(-rc));
        return;
    }
    if (rmt_cmd_ext_bool(req, "removeOffset", false))
        meta_offsets_delete_group(b->meta, name);
    log_info("subscription group %s deleted by %s", name, rmt_conn_peer(c));
    brk_resp(b, RMT_RESP_SUCCESS);
    brk_reply(b, c, req, false);
}

struct topics_of_group {
    char names[64][META_TOPIC_NAME_MAX + 1];
    int n;
};

static void add_name(struct topics_of_group *t, const char *name)
{
    for (int i = 0; i < t->n; i++)
        if (strcmp(t->names[i], name) == 0)
            return;
    if (t->n < 64 && strlen(name) <= META_TOPIC_NAME_MAX)
        snprintf(t->names[t->n++], sizeof t->names[0], "%s", name);
}

static int offs_topic(const char *topic, const char *group, uint32_t q, int64_t off, void *arg)
{
    add_name(arg, topic);
    return 0;
}

static void consume_stats(struct broker *b, rmt_conn *c, rmt_cmd *req)
{
    const char *group;
    if (brk_need_str(b, c, req, "consumerGroup", &group))
        return;
    const char *topic = rmt_cmd_ext(req, "topic");
    struct topics_of_group *tg = calloc(1, sizeof *tg);
    if (!tg) {
        brk_err(b, c, req, RMT_RESP_SYSTEM_ERROR, "out of memory");
        return;
    }
    if (topic && *topic)
        add_name(tg, topic);
    else
        meta_offsets_foreach(b->meta, NULL, group, offs_topic, tg);
    brk_resp(b, RMT_RESP_SUCCESS);
    struct buf *o = &b->body;
    int rc = buf_append(o, "{\"consumeTps\":0.0,\"offsetTable\":{", 33);
    int k = 0;
    for (int i = 0; i < tg->n && !rc; i++) {
        const struct meta_topic *t = meta_topic_get(b->meta, tg->names[i]);
        if (!t)
            continue;
        for (int q = 0; q < t->write_queue_nums && !rc; q++) {
            int64_t max = store_max_queue_offset(b->store, t->name, q);
            int64_t off;
            if (meta_offset_query(b->meta, t->name, group, (uint32_t)q, &off))
                off = 0;
            int64_t last = off > 0 ? store_message_store_time(b->store, t->name, q, off - 1) : 0;
            if (k++)
                rc = buf_append_u8(o, ',');
            if (!rc)
                rc = mq_key(o, b, t->name, q);
            if (!rc)
                rc = buf_printf(o, ":{\"brokerOffset\":%lld,\"consumerOffset\":%lld,\"lastTimestamp\":%lld}",
                                (long long)max, (long long)off, (long long)(last > 0 ? last : 0));
        }
    }
    free(tg);
    if (!rc)
        rc = buf_append(o, "}}", 2);
    reply_body(b, c, req, rc);
}

static void reset_offset(struct broker *b, rmt_conn *c, rmt_cmd *req)
{
    const char *topic, *group;
    int64_t ts;
    if (brk_need_str(b, c, req, "topic", &topic) || brk_need_str(b, c, req, "group", &group) ||
        brk_need_int(b, c, req, "timestamp", &ts))
        return;
    bool force = rmt_cmd_ext_bool(req, "isForce", true);
    const struct meta_topic *t = meta_topic_get(b->meta, topic);
    if (!t) {
        brk_err(b, c, req, RMT_RESP_SYSTEM_ERROR,
                "[reset-offset] reset offset failed, no topic in this broker. topic=%s", topic);
        return;
    }
    int n = t->read_queue_nums;
    int64_t *offs = calloc((size_t)n, sizeof *offs);
    if (!offs) {
        brk_err(b, c, req, RMT_RESP_SYSTEM_ERROR, "out of memory");
        return;
    }
    brk_resp(b, RMT_RESP_SUCCESS);
    struct buf *o = &b->body;
    int rc = buf_append(o, "{\"offsetTable\":{", 16);
    for (int q = 0; q < n && !rc; q++) {
        int64_t target = ts == -1 ? store_max_queue_offset(b->store, topic, q)
                                  : store_offset_by_time(b->store, topic, q, ts);
        int64_t cur;
        if (!force && meta_offset_query(b->meta, topic, group, (uint32_t)q, &cur) == 0 && cur < target)
            target = cur;
        offs[q] = target;
        if (q)
            rc = buf_append_u8(o, ',');
        if (!rc)
            rc = mq_key(o, b, topic, q);
        if (!rc)
            rc = buf_printf(o, ":%lld", (long long)target);
    }
    if (!rc)
        rc = buf_append(o, "}}", 2);
    if (!rc)
        rc = meta_offsets_reset(b->meta, topic, group, offs, (uint32_t)n);
    free(offs);
    if (rc) {
        brk_err(b, c, req, RMT_RESP_SYSTEM_ERROR, "reset offset failed: %s", strerror(-rc));
        return;
    }
    rmt_cmd note;
    rmt_cmd_init(&note, RMT_REQ_RESET_CONSUMER_CLIENT_OFFSET);
    rmt_cmd_set_ext(&note, "topic", topic);
    rmt_cmd_set_ext(&note, "group", group);
    rmt_cmd_set_ext_int(&note, "timestamp", ts);
    rmt_cmd_set_ext(&note, "isForce", force ? "true" : "false");
    rmt_cmd_set_body(&note, o->data, (uint32_t)o->len);
    note.serialize = RMT_SERIALIZE_JSON;
    int told = cm_send_to_group(b->cm, group, &note);
    rmt_cmd_destroy(&note);
    log_info("offsets of %s@%s reset to timestamp %lld by %s (%d online consumers told)", topic, group,
             (long long)ts, rmt_conn_peer(c), told);
    brk_reply(b, c, req, true);
}

static void add_group_cb(const char *group, void *ud)
{
    add_name(ud, group);
}

static int offs_group(const char *topic, const char *group, uint32_t q, int64_t off, void *arg)
{
    add_name(arg, group);
    return 0;
}

static void consume_by_who(struct broker *b, rmt_conn *c, rmt_cmd *req)
{
    const char *topic;
    if (brk_need_str(b, c, req, "topic", &topic))
        return;
    struct topics_of_group *groups = calloc(1, sizeof *groups);
    if (!groups) {
        brk_err(b, c, req, RMT_RESP_SYSTEM_ERROR, "out of memory");
        return;
    }
    cm_groups_of_topic(b->cm, topic, add_group_cb, groups);
    meta_offsets_foreach(b->meta, topic, NULL, offs_group, groups);
    brk_resp(b, RMT_RESP_SUCCESS);
    int rc = buf_append(&b->body, "{\"groupList\":[", 14);
    for (int i = 0; i < groups->n && !rc; i++) {
        if (i)
            rc = buf_append_u8(&b->body, ',');
        if (!rc)
            rc = json_buf_str(&b->body, groups->names[i]);
    }
    free(groups);
    if (!rc)
        rc = buf_append(&b->body, "]}", 2);
    reply_body(b, c, req, rc);
}

static int kv(struct buf *o, bool *first, const char *k, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int kv(struct buf *o, bool *first, const char *k, const char *fmt, ...)
{
    char v[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(v, sizeof v, fmt, ap);
    va_end(ap);
    int rc = buf_printf(o, "%s\"%s\":", *first ? "" : ",", k);
    *first = false;
    return rc ? rc : json_buf_str(o, v);
}

/* Replication status: RocketMQ's brokerRole / slaveFallBehindMuch (bytes the
 * best slave is behind) plus our ha* details. */
static int ha_info(struct broker *b, struct buf *o, bool *f)
{
    static const char *const role_names[] = { "ASYNC_MASTER", "SYNC_MASTER", "SLAVE" };
    int rc = kv(o, f, "brokerRole", "%s", role_names[b->cfg.role]);
    if (!b->ha)
        return rc;
    if (b->cfg.role == BRK_SLAVE) {
        struct ha_slave_status ss;
        if (ha_slave_status(b->ha, &ss))
            return rc;
        rc = rc ? rc : kv(o, f, "haMasterAddress", "%s", ss.master_addr);
        rc = rc ? rc : kv(o, f, "haConnected", "%s", ss.connected ? "true" : "false");
        rc = rc ? rc : kv(o, f, "haState", "%s", ss.stopped ? "stopped" : ss.verifying ? "verifying"
                                               : ss.connected ? "following" : "connecting");
        rc = rc ? rc : kv(o, f, "haReportedOffset", "%lld", (long long)ss.reported_offset);
        rc = rc ? rc : kv(o, f, "haLastReadAgoMs", "%lld", (long long)ss.last_read_ago_ms);
        rc = rc ? rc : kv(o, f, "haBytesReceived", "%llu", (unsigned long long)ss.bytes_received);
        rc = rc ? rc : kv(o, f, "haTruncations", "%llu", (unsigned long long)ss.truncations);
        rc = rc ? rc : kv(o, f, "haConnects", "%llu", (unsigned long long)ss.connects);
        return rc;
    }
    struct ha_master_status ms;
    if (ha_master_status(b->ha, &ms))
        return rc;
    rc = rc ? rc : kv(o, f, "haListenPort", "%d", b->ha_port);
    rc = rc ? rc : kv(o, f, "haSlaveCount", "%d", ms.slave_count);
    rc = rc ? rc : kv(o, f, "haMaxAckOffset", "%lld", (long long)ms.max_ack);
    rc = rc ? rc : kv(o, f, "slaveFallBehindMuch", "%lld",
                      ms.slave_count ? (long long)(ms.max_offset - ms.max_ack) : 0LL);
    rc = rc ? rc : kv(o, f, "haPendingSlaveWaits", "%llu", (unsigned long long)ms.pending_waits);
    rc = rc ? rc : kv(o, f, "haSlaveOk", "%s", ha_slave_ok(b->ha, ms.max_offset) ? "true" : "false");
    for (int i = 0; i < ms.filled && !rc; i++) {
        char k[32];
        snprintf(k, sizeof k, "haSlave%d", i);
        rc = kv(o, f, k, "%s ack=%lld lagBytes=%lld lagMs=%lld sent=%llu", ms.slaves[i].addr,
                (long long)ms.slaves[i].ack_offset, (long long)ms.slaves[i].lag_bytes,
                (long long)ms.slaves[i].lag_ms, (unsigned long long)ms.slaves[i].bytes_sent);
    }
    return rc;
}

/* Timer wheel statistics (RocketMQ 5 timerOffsetBehind; the rest ours). */
static int timer_info(struct broker *b, struct buf *o, bool *f)
{
    if (!b->timer)
        return kv(o, f, "timerWheelEnable", "false");
    struct tmr_stats t;
    tmr_get_stats(b->timer, &t);
    int64_t max = store_max_queue_offset(b->store, TMR_TOPIC, TMR_QUEUE_ID);
    int rc = kv(o, f, "timerWheelEnable", "%s", b->cfg.timer_enable ? "true" : "false");
    rc = rc ? rc : kv(o, f, "timerOffsetBehind", "%lld", (long long)(max > t.enqueue_offset ? max - t.enqueue_offset : 0));
    rc = rc ? rc : kv(o, f, "timerEnqueueOffset", "%lld", (long long)t.enqueue_offset);
    rc = rc ? rc : kv(o, f, "timerPending", "%llu", (unsigned long long)t.pending);
    rc = rc ? rc : kv(o, f, "timerEnqueued", "%llu", (unsigned long long)t.enqueued);
    rc = rc ? rc : kv(o, f, "timerDelivered", "%llu", (unsigned long long)t.delivered);
    rc = rc ? rc : kv(o, f, "timerLost", "%llu", (unsigned long long)t.lost);
    rc = rc ? rc : kv(o, f, "timerLastLagMs", "%lld", (long long)t.last_lag_ms);
    rc = rc ? rc : kv(o, f, "timerMaxLagMs", "%lld", (long long)t.max_lag_ms);
    rc = rc ? rc : kv(o, f, "timerDequeueMs", "%lld", (long long)t.dequeue_ms);
    rc = rc ? rc : kv(o, f, "timerWheelBytes", "%llu", (unsigned long long)t.wheel_bytes);
    rc = rc ? rc : kv(o, f, "timerHeapBytes", "%llu", (unsigned long long)t.heap_bytes);
    rc = rc ? rc : kv(o, f, "timerLogBytes", "%llu", (unsigned long long)t.log_bytes);
    return rc;
}

static void runtime_info(struct adm *a, rmt_conn *c, rmt_cmd *req)
{
    struct broker *b = a->b;
    struct store_stats st;
    store_get_stats(b->store, &st);
    int np, nc;
    cm_counts(b->cm, &np, &nc);
    int64_t up = (brk_mono_ms() - b->start_ms) / 1000;
    brk_resp(b, RMT_RESP_SUCCESS);
    struct buf *o = &b->body;
    bool f = true;
    int rc = buf_append(o, "{\"table\":{", 10);
    rc = rc ? rc : kv(o, &f, "brokerVersionDesc", "%s", BRK_VERSION_DESC);
    rc = rc ? rc : kv(o, &f, "brokerVersion", "%d", RMT_VERSION);
    rc = rc ? rc : kv(o, &f, "msgPutTotalTodayNow", "%llu", (unsigned long long)b->stats.put_msgs);
    rc = rc ? rc : kv(o, &f, "msgGetTotalTodayNow", "%llu", (unsigned long long)b->stats.get_msgs);
    rc = rc ? rc : kv(o, &f, "putMessageTimesTotal", "%llu", (unsigned long long)b->stats.put_msgs);
    rc = rc ? rc : kv(o, &f, "putMessageSizeTotal", "%llu", (unsigned long long)b->stats.put_bytes);
    rc = rc ? rc : kv(o, &f, "putMessageAverageSize", "%.2f",
                      b->stats.put_msgs ? (double)b->stats.put_bytes / (double)b->stats.put_msgs : 0.0);
    rc = rc ? rc : tps3(a, offsetof(struct sample, put), o, "putTps", !f);
    rc = rc ? rc : tps3(a, offsetof(struct sample, get_msgs), o, "getTransferedTps", !f);
    rc = rc ? rc : tps3(a, offsetof(struct sample, get_found), o, "getFoundTps", !f);
    rc = rc ? rc : tps3(a, offsetof(struct sample, get_miss), o, "getMissTps", !f);
    rc = rc ? rc : kv(o, &f, "getTotalTps", "%.2f %.2f %.2f",
                      rate(a, offsetof(struct sample, get_found), 10) + rate(a, offsetof(struct sample, get_miss), 10),
                      rate(a, offsetof(struct sample, get_found), 60) + rate(a, offsetof(struct sample, get_miss), 60),
                      rate(a, offsetof(struct sample, get_found), 600) + rate(a, offsetof(struct sample, get_miss), 600));
    rc = rc ? rc : kv(o, &f, "commitLogMinOffset", "%lld", (long long)st.commitlog_min_offset);
    rc = rc ? rc : kv(o, &f, "commitLogMaxOffset", "%lld", (long long)st.commitlog_max_offset);
    rc = rc ? rc : kv(o, &f, "commitLogDiskRatio", "%f", st.disk_used_ratio);
    rc = rc ? rc : kv(o, &f, "dispatchBehindBytes", "%lld",
                      (long long)(st.commitlog_max_offset - st.dispatched_offset));
    rc = rc ? rc : kv(o, &f, "remainHowManyDataToFlush", "%lld",
                      (long long)(st.commitlog_max_offset - st.commitlog_flushed_offset));
    rc = rc ? rc : kv(o, &f, "pageCacheLockTimeMills", "0");
    rc = rc ? rc : kv(o, &f, "sendThreadPoolQueueSize", "0");
    rc = rc ? rc : kv(o, &f, "pullThreadPoolQueueSize", "0");
    rc = rc ? rc : kv(o, &f, "bootTimestamp", "%lld", (long long)(brk_now_ms() - up * 1000));
    rc = rc ? rc : kv(o, &f, "runtime", "[ %lld days, %lld hours, %lld minutes, %lld seconds ]",
                      (long long)(up / 86400), (long long)(up / 3600 % 24), (long long)(up / 60 % 60),
                      (long long)(up % 60));
    rc = rc ? rc : kv(o, &f, "brokerActive", "%s", b->stopping ? "false" : "true");
    rc = rc ? rc : kv(o, &f, "writable", "%s", st.writable && brk_writable(b) ? "true" : "false");
    rc = rc ? rc : kv(o, &f, "heldPullRequests", "%u", pull_held(b->pull));
    rc = rc ? rc : kv(o, &f, "pendingFlushWaits", "%u", send_pending(b->send));
    rc = rc ? rc : kv(o, &f, "producerChannels", "%d", np);
    rc = rc ? rc : kv(o, &f, "consumerChannels", "%d", nc);
    rc = rc ? rc : kv(o, &f, "topicCount", "%zu", meta_topic_count(b->meta));
    rc = rc ? rc : kv(o, &f, "consumeQueueCount", "%llu", (unsigned long long)st.queue_count);
    rc = rc ? rc : ha_info(b, o, &f);
    rc = rc ? rc : timer_info(b, o, &f);
    rc = rc ? rc : hs_runtime_info(b->hs, o);
    rc = rc ? rc : buf_append(o, "}}", 2);
    reply_body(b, c, req, rc);
}

static void broker_config(struct broker *b, rmt_conn *c, rmt_cmd *req)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (!f) {
        brk_err(b, c, req, RMT_RESP_SYSTEM_ERROR, "out of memory");
        return;
    }
    cfg_dump(brk_cfg_keys, &b->cfg, f);
    fclose(f);
    brk_resp(b, RMT_RESP_SUCCESS);
    int rc = 0;
    /* cfg_dump writes "key = value"; RocketMQ's body is a properties text. */
    for (char *line = text, *nl; line && *line && !rc; line = nl ? nl + 1 : NULL) {
        nl = strchr(line, '\n');
        size_t l = nl ? (size_t)(nl - line) : strlen(line);
        char *eq = memmem(line, l, " = ", 3);
        if (eq) {
            rc = buf_append(&b->body, line, (size_t)(eq - line));
            if (!rc)
                rc = buf_append_u8(&b->body, '=');
            if (!rc)
                rc = buf_append(&b->body, eq + 3, l - (size_t)(eq - line) - 3);
        } else {
            rc = buf_append(&b->body, line, l);
        }
        if (!rc)
            rc = buf_append_u8(&b->body, '\n');
    }
    free(text);
    char ver[96];
    snprintf(ver, sizeof ver, "{\"counter\":%llu,\"timestamp\":%lld}",
             (unsigned long long)b->config_version,
             (long long)(brk_now_ms() - (brk_mono_ms() - b->start_ms)));
    rmt_cmd_set_ext(&b->resp, "version", ver);
    reply_body(b, c, req, rc);
}

static bool runtime_key(const char *k, size_t n)
{
    for (int i = 0; adm_runtime_keys[i]; i++)
        if (strlen(adm_runtime_keys[i]) == n && memcmp(adm_runtime_keys[i], k, n) == 0)
            return true;
    return false;
}

static void update_config(struct broker *b, rmt_conn *c, rmt_cmd *req)
{
    struct broker_settings next = b->cfg;
    char line[1200], err[300];
    const char *p = (const char *)req->body, *end = p + req->body_len;
    int changed = 0;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t l = nl ? (size_t)(nl - p) : (size_t)(end - p);
        const char *s = p;
        p = nl ? nl + 1 : end;
        while (l && (s[l - 1] == '\r' || s[l - 1] == ' '))
            l--;
        while (l && *s == ' ') {
            s++;
            l--;
        }
        if (!l || *s == '#' || *s == '!')
            continue;
        const char *eq = memchr(s, '=', l);
        size_t kl = eq ? (size_t)(eq - s) : l;
        while (kl && s[kl - 1] == ' ')
            kl--;
        if (!eq || !runtime_key(s, kl)) {
            brk_err(b, c, req, RMT_RESP_NO_PERMISSION,
                    "UPDATE_BROKER_CONFIG refused: '%.*s' cannot be changed at runtime (allowed: "
                    "brokerPermission, autoCreateTopicEnable, autoCreateSubscriptionGroup, "
                    "defaultTopicQueueNums, longPollingEnable, shortPollingTimeMills, logLevel, traceOn); "
                    "nothing was changed",
                    (int)(kl > 200 ? 200 : kl), s);
            return;
        }
        if (l >= sizeof line) {
            brk_err(b, c, req, RMT_RESP_INVALID_PARAMETER, "UPDATE_BROKER_CONFIG: line too long");
            return;
        }
        size_t o = 0;
        memcpy(line, s, kl);
        o = kl;
        line[o++] = '=';
        const char *v = eq + 1;
        while (v < s + l && *v == ' ')
            v++;
        memcpy(line + o, v, (size_t)(s + l - v));
        o += (size_t)(s + l - v);
        line[o] = 0;
        if (cfg_set(brk_cfg_keys, &next, line, err, sizeof err)) {
            brk_err(b, c, req, RMT_RESP_INVALID_PARAMETER, "UPDATE_BROKER_CONFIG: %s; nothing was changed", err);
            return;
        }
        changed++;
    }
    bool perm_changed = next.perm != b->cfg.perm;
    bool auto_changed = next.auto_create_topic != b->cfg.auto_create_topic;
    b->cfg = next;
    b->config_version++;
    log_set_level((enum log_level)b->cfg.log_level);
    if (auto_changed && b->cfg.auto_create_topic)
        brk_create_system_topics(b);
    if (perm_changed || auto_changed) {
        b->topic_bumps++;
        b->topic_bump_ts = brk_now_ms();
        reg_soon(b->reg);
    }
    log_info("broker config updated by %s (%d keys)", rmt_conn_peer(c), changed);
    brk_resp(b, RMT_RESP_SUCCESS);
    brk_reply(b, c, req, false);
}

bool adm_on_request(struct adm *a, rmt_conn *c, rmt_cmd *req)
{
    struct broker *b = a->b;
    int rc;
    const char *name;
    switch (req->code) {
    case RMT_REQ_UPDATE_AND_CREATE_TOPIC:
        if (brk_admin_allowed(b, c, req))
            create_topic(b, c, req);
        return true;
    case RMT_REQ_DELETE_TOPIC_IN_BROKER:
        if (brk_admin_allowed(b, c, req))
            delete_topic(b, c, req);
        return true;
    case RMT_REQ_UPDATE_AND_CREATE_SUBSCRIPTIONGROUP:
        if (brk_admin_allowed(b, c, req))
            create_group(b, c, req);
        return true;
    case RMT_REQ_DELETE_SUBSCRIPTIONGROUP:
        if (brk_admin_allowed(b, c, req))
            delete_group(b, c, req);
        return true;
    case RMT_REQ_UPDATE_BROKER_CONFIG:
        if (brk_admin_allowed(b, c, req))
            update_config(b, c, req);
        return true;
    case RMT_REQ_RESET_CONSUMER_OFFSET_IN_BROKER:
    case RMT_REQ_INVOKE_BROKER_TO_RESET_OFFSET:
        if (brk_admin_allowed(b, c, req))
            reset_offset(b, c, req);
        return true;
    case RMT_REQ_TRIGGER_DELETE_FILES:
        if (brk_admin_allowed(b, c, req)) {
            rc = store_cleanup_now(b->store);
            log_info("manual file cleanup by %s removed %d segments", rmt_conn_peer(c), rc);
            brk_resp(b, RMT_RESP_SUCCESS);
            brk_reply(b, c, req, false);
        }
        return true;
    case RMT_REQ_GET_ALL_TOPIC_CONFIG:
        brk_resp(b, RMT_RESP_SUCCESS);
        reply_body(b, c, req, meta_topics_encode_json(b->meta, &b->body));
        return true;
    case RMT_REQ_GET_TOPIC_CONFIG:
        if (!brk_need_str(b, c, req, "topic", &name)) {
            const struct meta_topic *t = meta_topic_get(b->meta, name);
            if (!t) {
                brk_err(b, c, req, RMT_RESP_TOPIC_NOT_EXIST, "No topic in this broker. topic: %s", name);
                return true;
            }
            brk_resp(b, RMT_RESP_SUCCESS);
            reply_body(b, c, req, topic_json(&b->body, t));
        }
        return true;
    case RMT_REQ_GET_TOPIC_NAME_LIST: {
        brk_resp(b, RMT_RESP_SUCCESS);
        struct name_list l = { &b->body, 0, 0 };
        rc = buf_append(&b->body, "{\"topicList\":[", 14);
        if (!rc)
            meta_topic_foreach(b->meta, add_topic_name, &l);
        rc = rc ? rc : l.rc;
        if (!rc)
            rc = buf_append(&b->body, "],\"brokerAddr\":", 15);
        if (!rc)
            rc = json_buf_str(&b->body, b->addr);
        if (!rc)
            rc = buf_append_u8(&b->body, '}');
        reply_body(b, c, req, rc);
        return true;
    }
    case RMT_REQ_GET_TOPIC_STATS_INFO:
        topic_stats(b, c, req);
        return true;
    case RMT_REQ_GET_ALL_SUBSCRIPTIONGROUP_CONFIG:
        brk_resp(b, RMT_RESP_SUCCESS);
        reply_body(b, c, req, meta_groups_encode_json(b->meta, &b->body));
        return true;
    case RMT_REQ_GET_SUBSCRIPTIONGROUP_CONFIG:
        if (!brk_need_str(b, c, req, "group", &name)) {
            const struct meta_group *g = meta_group_get(b->meta, name);
            if (!g) {
                brk_err(b, c, req, RMT_RESP_SUBSCRIPTION_GROUP_NOT_EXIST, "No group in this broker. group: %s",
                        name);
                return true;
            }
            brk_resp(b, RMT_RESP_SUCCESS);
            reply_body(b, c, req, group_json(&b->body, g));
        }
        return true;
    case RMT_REQ_GET_ALL_CONSUMER_OFFSET:
        brk_resp(b, RMT_RESP_SUCCESS);
        reply_body(b, c, req, meta_offsets_encode_json(b->meta, &b->body));
        return true;
    case RMT_REQ_GET_CONSUME_STATS:
        consume_stats(b, c, req);
        return true;
    case RMT_REQ_GET_BROKER_RUNTIME_INFO:
        runtime_info(a, c, req);
        return true;
    case RMT_REQ_GET_BROKER_CONFIG:
        broker_config(b, c, req);
        return true;
    case RMT_REQ_GET_CONSUMER_CONNECTION_LIST:
        if (!brk_need_str(b, c, req, "consumerGroup", &name)) {
            brk_resp(b, RMT_RESP_SUCCESS);
            rc = cm_consumer_connection_json(b->cm, name, &b->body);
            if (rc == -ENOENT)
                brk_err(b, c, req, RMT_RESP_CONSUMER_NOT_ONLINE, "the consumer group[%s] not online", name);
            else
                reply_body(b, c, req, rc);
        }
        return true;
    case RMT_REQ_GET_PRODUCER_CONNECTION_LIST:
        if (!brk_need_str(b, c, req, "producerGroup", &name)) {
            brk_resp(b, RMT_RESP_SUCCESS);
            rc = cm_producer_connection_json(b->cm, name, &b->body);
            if (rc == -ENOENT)
                brk_err(b, c, req, RMT_RESP_SYSTEM_ERROR, "the producer group[%s] not exist", name);
            else
                reply_body(b, c, req, rc);
        }
        return true;
    case RMT_REQ_QUERY_TOPIC_CONSUME_BY_WHO:
        consume_by_who(b, c, req);
        return true;
    default:
        return false;
    }
}
