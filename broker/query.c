/*
 * Offset and message queries. Consumer offsets are committed to memory
 * (meta_offset_commit) and reach LMDB in the periodic batch; VIEW_MESSAGE
 * answers zero-copy from the mapped log, QUERY_MESSAGE copies the (few)
 * matching records into the response body. Commits on a slave are also
 * recorded for the flow-back to the master (ha_sync.h); a commit carrying
 * the flow-back flag only ever raises an offset.
 */
#include "query.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker.h"
#include "ha_sync.h"
#include "log.h"

#define QUERY_MAX_DEFAULT 32
#define QUERY_MAX_LIMIT 256

static int topic_queue(struct broker *b, rmt_conn *c, rmt_cmd *req, const char **topic, int64_t *qid)
{
    return brk_need_str(b, c, req, "topic", topic) || brk_need_int(b, c, req, "queueId", qid) ? -1 : 0;
}

static void reply_int(struct broker *b, rmt_conn *c, rmt_cmd *req, const char *key, int64_t v)
{
    rmt_cmd *r = brk_resp(b, RMT_RESP_SUCCESS);
    rmt_cmd_set_ext_int(r, key, v);
    brk_reply(b, c, req, false);
}

static void query_consumer_offset(struct broker *b, rmt_conn *c, rmt_cmd *req)
{
    const char *group, *topic;
    int64_t qid, off;
    if (brk_need_str(b, c, req, "consumerGroup", &group) || topic_queue(b, c, req, &topic, &qid))
        return;
    if (qid < 0 || qid >= META_QUEUE_MAX) {
        brk_err(b, c, req, RMT_RESP_INVALID_PARAMETER, "queueId %lld is out of range", (long long)qid);
        return;
    }
    if (meta_offset_query(b->meta, topic, group, (uint32_t)qid, &off) == 0) {
        reply_int(b, c, req, "offset", off);
        return;
    }
    brk_err(b, c, req, RMT_RESP_QUERY_NOT_FOUND,
            "Not found, the group %s has no committed offset for %s queue %lld", group, topic,
            (long long)qid);
}

static void update_consumer_offset(struct broker *b, rmt_conn *c, rmt_cmd *req)
{
    const char *group, *topic;
    int64_t qid, off;
    if (brk_need_str(b, c, req, "consumerGroup", &group) || topic_queue(b, c, req, &topic, &qid) ||
        brk_need_int(b, c, req, "commitOffset", &off))
        return;
    if (qid < 0 || qid >= META_QUEUE_MAX || off < 0) {
        brk_err(b, c, req, RMT_RESP_INVALID_PARAMETER, "queueId %lld or commitOffset %lld out of range",
                (long long)qid, (long long)off);
        return;
    }
    int64_t cur;
    if (rmt_cmd_ext_bool(req, HS_FLOW_BACK_FIELD, false) &&
        meta_offset_query(b->meta, topic, group, (uint32_t)qid, &cur) == 0 && cur >= off) {
        /* A slave handing back what consumers committed there while this
         * master was away never moves an offset backwards. */
        brk_resp(b, RMT_RESP_SUCCESS);
        brk_reply(b, c, req, false);
        return;
    }
    int rc = meta_offset_commit(b->meta, topic, group, (uint32_t)qid, off);
    if (!rc && b->cfg.role == BRK_SLAVE)
        rc = hs_local_commit(b->hs, topic, group, (uint32_t)qid, off);
    if (rc) {
        brk_err(b, c, req, RMT_RESP_SYSTEM_ERROR, "cannot commit the offset: %s", strerror(-rc));
        return;
    }
    brk_resp(b, RMT_RESP_SUCCESS);
    brk_reply(b, c, req, false);
}

static void view_release(void *ctx)
{
    struct store_hold *h = ctx;
    store_hold_release(h);
    free(h);
}

static void view_message(struct broker *b, rmt_conn *c, rmt_cmd *req)
{
    int64_t phys;
    if (brk_need_int(b, c, req, "offset", &phys))
        return;
    struct store_hold *h = malloc(sizeof *h);
    if (!h) {
        brk_err(b, c, req, RMT_RESP_SYSTEM_ERROR, "out of memory");
        return;
    }
    *h = (struct store_hold)STORE_HOLD_INIT;
    struct store_view v;
    if (store_lookup(b->store, phys, &v, h) != STORE_LOOKUP_OK) {
        store_hold_release(h);
        free(h);
        brk_err(b, c, req, RMT_RESP_SYSTEM_ERROR, "can not find message by the offset, %lld",
                (long long)phys);
        return;
    }
    rmt_cmd *r = brk_resp(b, RMT_RESP_SUCCESS);
    if (rmt_cmd_is_oneway(req)) {
        view_release(h);
        return;
    }
    r->opaque = req->opaque;
    r->serialize = req->serialize;
    r->flag = RMT_FLAG_RESPONSE;
    struct iovec iov = { (void *)v.data, v.len };
    rmt_conn_send_iov(c, r, &iov, 1, view_release, h);
}

static void query_message(struct broker *b, rmt_conn *c, rmt_cmd *req)
{
    const char *topic, *key;
    int64_t max, begin, end;
    if (brk_need_str(b, c, req, "topic", &topic) || brk_need_str(b, c, req, "key", &key) ||
        brk_opt_int(b, c, req, "maxNum", QUERY_MAX_DEFAULT, &max) ||
        brk_opt_int(b, c, req, "beginTimestamp", 0, &begin) ||
        brk_opt_int(b, c, req, "endTimestamp", INT64_MAX, &end))
        return;
    bool uniq = rmt_cmd_ext_bool(req, "_UNIQUE_KEY_QUERY", false);
    if (uniq)
        max = QUERY_MAX_DEFAULT;
    if (max <= 0)
        max = QUERY_MAX_DEFAULT;
    if (max > QUERY_MAX_LIMIT)
        max = QUERY_MAX_LIMIT;
    int64_t phys[QUERY_MAX_LIMIT];
    int n;
    if (uniq) {
        n = store_query_by_uniq_id(b->store, topic, key, &phys[0]) == 0 ? 1 : 0;
        if (n == 0)
            n = store_query_by_key(b->store, topic, key, (size_t)max, begin, end, phys);
    } else {
        n = store_query_by_key(b->store, topic, key, (size_t)max, begin, end, phys);
    }
    if (n < 0) {
        brk_err(b, c, req, RMT_RESP_SYSTEM_ERROR, "query failed: %s", strerror(-n));
        return;
    }
    rmt_cmd *r = brk_resp(b, RMT_RESP_SUCCESS);
    for (int i = 0; i < n; i++) {
        struct store_view v;
        struct store_hold h = STORE_HOLD_INIT;
        if (store_lookup(b->store, phys[i], &v, &h) == STORE_LOOKUP_OK)
            buf_append(&b->body, v.data, v.len);
        store_hold_release(&h);
    }
    if (b->body.len == 0) {
        brk_err(b, c, req, RMT_RESP_QUERY_NOT_FOUND, "can not find message, maybe time range not correct");
        return;
    }
    rmt_cmd_set_ext_int(r, "indexLastUpdateTimestamp", brk_now_ms());
    rmt_cmd_set_ext_int(r, "indexLastUpdatePhyoffset", store_commitlog_max_offset(b->store));
    brk_reply(b, c, req, true);
}

bool qry_on_request(struct broker *b, rmt_conn *c, rmt_cmd *req)
{
    const char *topic;
    int64_t qid, ts;
    switch (req->code) {
    case RMT_REQ_QUERY_CONSUMER_OFFSET:
        query_consumer_offset(b, c, req);
        return true;
    case RMT_REQ_UPDATE_CONSUMER_OFFSET:
        update_consumer_offset(b, c, req);
        return true;
    case RMT_REQ_GET_MAX_OFFSET:
        if (!topic_queue(b, c, req, &topic, &qid))
            reply_int(b, c, req, "offset", store_max_queue_offset(b->store, topic, (int32_t)qid));
        return true;
    case RMT_REQ_GET_MIN_OFFSET:
        if (!topic_queue(b, c, req, &topic, &qid))
            reply_int(b, c, req, "offset", store_min_queue_offset(b->store, topic, (int32_t)qid));
        return true;
    case RMT_REQ_SEARCH_OFFSET_BY_TIMESTAMP:
        if (!topic_queue(b, c, req, &topic, &qid) && !brk_need_int(b, c, req, "timestamp", &ts))
            reply_int(b, c, req, "offset", store_offset_by_time(b->store, topic, (int32_t)qid, ts));
        return true;
    case RMT_REQ_GET_EARLIEST_MSG_STORETIME:
        if (!topic_queue(b, c, req, &topic, &qid)) {
            int64_t min = store_min_queue_offset(b->store, topic, (int32_t)qid);
            reply_int(b, c, req, "timestamp", store_message_store_time(b->store, topic, (int32_t)qid, min));
        }
        return true;
    case RMT_REQ_VIEW_MESSAGE_BY_ID:
        view_message(b, c, req);
        return true;
    case RMT_REQ_QUERY_MESSAGE:
        query_message(b, c, req);
        return true;
    default:
        return false;
    }
}
