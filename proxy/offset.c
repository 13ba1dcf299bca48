/*
 * PullMessage, UpdateOffset, GetOffset and QueryOffset: the queue-level
 * RPCs of pull consumers, each one remoting request to the master of the
 * queue's broker (PULL_MESSAGE, UPDATE_CONSUMER_OFFSET,
 * QUERY_CONSUMER_OFFSET, GET_MIN/MAX_OFFSET, SEARCH_OFFSET_BY_TIMESTAMP).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "consumer.h"
#include "log.h"
#include "proxy.h"

enum { K_UPDATE, K_GET, K_QUERY_MIN, K_QUERY_MAX, K_QUERY_TS, K_PULL };

static const ProtobufCMessageDescriptor *resp_desc(int kind)
{
    switch (kind) {
    case K_UPDATE: return &apache__rocketmq__v2__update_offset_response__descriptor;
    case K_GET: return &apache__rocketmq__v2__get_offset_response__descriptor;
    case K_PULL: return &apache__rocketmq__v2__pull_message_response__descriptor;
    default: return &apache__rocketmq__v2__query_offset_response__descriptor;
    }
}

static void reply_offset(struct px_op *op, int64_t off)
{
    Apache__Rocketmq__V2__Status st = APACHE__ROCKETMQ__V2__STATUS__INIT;
    st.code = PXC(OK);
    st.message = (char *)"OK";
    if (op->kind == K_GET) {
        Apache__Rocketmq__V2__GetOffsetResponse r = APACHE__ROCKETMQ__V2__GET_OFFSET_RESPONSE__INIT;
        r.status = &st;
        r.offset = off;
        px_reply(op->call, &r.base);
    } else {
        Apache__Rocketmq__V2__QueryOffsetResponse r = APACHE__ROCKETMQ__V2__QUERY_OFFSET_RESPONSE__INIT;
        r.status = &st;
        r.offset = off;
        px_reply(op->call, &r.base);
    }
}

static void pull_stream(struct px_op *op, rmt_cmd *resp)
{
    static struct px_msg_out out;
    static struct buf scratch = BUF_INIT;
    int64_t next = op->i1;
    rmt_cmd_ext_int(resp, "nextBeginOffset", &next);
    Apache__Rocketmq__V2__Status st = APACHE__ROCKETMQ__V2__STATUS__INIT;
    Apache__Rocketmq__V2__PullMessageResponse r = APACHE__ROCKETMQ__V2__PULL_MESSAGE_RESPONSE__INIT;
    r.content_case = APACHE__ROCKETMQ__V2__PULL_MESSAGE_RESPONSE__CONTENT_STATUS;
    r.status = &st;
    int rc = 0;
    if (resp->code == RMT_RESP_SUCCESS) {
        st.code = PXC(OK);
        st.message = (char *)"OK";
        rc = px_grpc_call_send_pb(op->call, &r.base);
        size_t pos = 0;
        struct cli_msg_view v;
        struct cli_sub sub;
        char err[64];
        bool filter = op->props.len && !cli_sub_parse((const char *)op->props.data, &sub, err, sizeof err);
        while (rc == 0) {
            size_t at = pos;
            int n = cli_pull_next(resp->body, resp->body_len, &pos, &v);
            if (n <= 0)
                break;
            struct msg_record rec;
            if (msg_record_decode(resp->body + at, resp->body_len - at, &rec, 0) <= 0)
                break;
            if (filter && !cli_sub_match(&sub, v.tags, v.tags_len))
                continue;
            buf_reset(&scratch);
            if (px_msg_to_pb(&out, &v, &rec, op->topic, &scratch)) {
                rc = -ENOMEM;
                break;
            }
            Apache__Rocketmq__V2__PullMessageResponse mr = APACHE__ROCKETMQ__V2__PULL_MESSAGE_RESPONSE__INIT;
            mr.content_case = APACHE__ROCKETMQ__V2__PULL_MESSAGE_RESPONSE__CONTENT_MESSAGE;
            mr.message = &out.msg;
            rc = px_grpc_call_send_pb(op->call, &mr.base);
        }
    } else {
        st.code = px_code_from_remoting(PX_ROP_PULL, resp->code);
        st.message = (char *)(rmt_cmd_remark(resp) ? rmt_cmd_remark(resp) : px_code_name(st.code));
        rc = px_grpc_call_send_pb(op->call, &r.base);
    }
    if (rc == 0) {
        Apache__Rocketmq__V2__PullMessageResponse nr = APACHE__ROCKETMQ__V2__PULL_MESSAGE_RESPONSE__INIT;
        nr.content_case = APACHE__ROCKETMQ__V2__PULL_MESSAGE_RESPONSE__CONTENT_NEXT_OFFSET;
        nr.next_offset = next;
        rc = px_grpc_call_send_pb(op->call, &nr.base);
    }
    if (rc == 0)
        px_grpc_call_finish(op->call, PX_GRPC_OK, NULL);
}

static void queue_resp(int status, rmt_cmd *resp, void *ud)
{
    struct px_op *op = ud;
    const ProtobufCMessageDescriptor *d = resp_desc(op->kind);
    if (status) {
        px_reply_status(op->call, d, px_code_from_errno(status), "broker %s: %s", op->broker, strerror(-status));
    } else if (op->kind == K_PULL) {
        pull_stream(op, resp);
    } else if (resp->code != RMT_RESP_SUCCESS) {
        px_reply_status(op->call, d, px_code_from_remoting(PX_ROP_OFFSET, resp->code), "broker %s answered %d: %s",
                        op->broker, resp->code, rmt_cmd_remark(resp) ? rmt_cmd_remark(resp) : "");
    } else if (op->kind == K_UPDATE) {
        px_reply_status(op->call, d, PXC(OK), "OK");
    } else {
        int64_t off;
        if (rmt_cmd_ext_int(resp, "offset", &off))
            px_reply_status(op->call, d, PXC(INTERNAL_SERVER_ERROR), "broker answered without an offset");
        else
            reply_offset(op, off);
    }
    px_op_put(op);
}

static void queue_route(int status, const struct cli_route *r, const char *errmsg, void *ud)
{
    struct px_op *op = ud;
    struct px *px = op->px;
    if (status) {
        px_reply_status(op->call, resp_desc(op->kind), px_code_from_route(status), "%s",
                        errmsg ? errmsg : strerror(-status));
        px_op_put(op);
        return;
    }
    const char *addr = cli_route_any_addr(r, op->broker, op->kind != K_PULL);
    if (!addr) {
        px_reply_status(op->call, resp_desc(op->kind), PXC(BAD_REQUEST), "broker %s is not in the route of %s",
                        op->broker, op->topic);
        px_op_put(op);
        return;
    }
    snprintf(op->addr, sizeof op->addr, "%s", addr);
    rmt_cmd *c = &op->cmd;
    int rc = 0;
    int timeout = (int)px->cfg.request_timeout_ms;
    switch (op->kind) {
    case K_UPDATE:
        px_cmd_reset(px, c, RMT_REQ_UPDATE_CONSUMER_OFFSET);
        rc = rmt_cmd_set_ext(c, "consumerGroup", op->group);
        if (!rc) rc = rmt_cmd_set_ext_int(c, "commitOffset", op->i1);
        break;
    case K_GET:
        px_cmd_reset(px, c, RMT_REQ_QUERY_CONSUMER_OFFSET);
        rc = rmt_cmd_set_ext(c, "consumerGroup", op->group);
        break;
    case K_QUERY_MIN: px_cmd_reset(px, c, RMT_REQ_GET_MIN_OFFSET); break;
    case K_QUERY_MAX: px_cmd_reset(px, c, RMT_REQ_GET_MAX_OFFSET); break;
    case K_QUERY_TS:
        px_cmd_reset(px, c, RMT_REQ_SEARCH_OFFSET_BY_TIMESTAMP);
        rc = rmt_cmd_set_ext_int(c, "timestamp", op->i1);
        break;
    case K_PULL:
        px_cmd_reset(px, c, RMT_REQ_PULL_MESSAGE);
        rc = rmt_cmd_set_ext(c, "consumerGroup", op->group);
        if (!rc) rc = rmt_cmd_set_ext_int(c, "queueOffset", op->i1);
        if (!rc) rc = rmt_cmd_set_ext_int(c, "maxMsgNums", op->i2);
        if (!rc) rc = rmt_cmd_set_ext_int(c, "sysFlag", CLI_PULL_FLAG_SUSPEND | CLI_PULL_FLAG_SUBSCRIPTION);
        if (!rc) rc = rmt_cmd_set_ext_int(c, "commitOffset", 0);
        if (!rc) rc = rmt_cmd_set_ext_int(c, "suspendTimeoutMillis", op->i3);
        if (!rc) rc = rmt_cmd_set_ext(c, "subscription", op->props.len ? (const char *)op->props.data : "*");
        if (!rc) rc = rmt_cmd_set_ext_int(c, "subVersion", 0);
        if (!rc) rc = rmt_cmd_set_ext(c, "expressionType", "TAG");
        timeout += (int)op->i3;
        break;
    }
    if (!rc) rc = rmt_cmd_set_ext(c, "topic", op->topic);
    if (!rc) rc = rmt_cmd_set_ext_int(c, "queueId", op->queue_id);
    if (!rc) rc = rmt_cmd_set_ext(c, "bname", op->broker);
    if (!rc)
        rc = rmt_client_invoke(px->brk, addr, c, timeout, queue_resp, op);
    if (rc)
        queue_resp(rc, NULL, op);
}

static bool mq_ok(const Apache__Rocketmq__V2__MessageQueue *mq)
{
    return mq && mq->topic && px_valid_name(mq->topic->name, CLI_NAME_MAX - 1) && mq->broker &&
           mq->broker->name && *mq->broker->name && strlen(mq->broker->name) < CLI_NAME_MAX && mq->id >= 0;
}

/* Common start: fills op from the queue and looks the route up. */
static void start(struct px *px, struct px_grpc_call *call, int kind,
                  const Apache__Rocketmq__V2__MessageQueue *mq, const Apache__Rocketmq__V2__Resource *group,
                  int64_t i1, int64_t i2, int64_t i3, const char *filter)
{
    const ProtobufCMessageDescriptor *d = resp_desc(kind);
    if (!mq_ok(mq)) {
        px_reply_status(call, d, PXC(BAD_REQUEST), "message queue must name a topic, a broker and a queue id");
        return;
    }
    if (kind != K_QUERY_MIN && kind != K_QUERY_MAX && kind != K_QUERY_TS &&
        (!group || !px_valid_name(group->name, CLI_NAME_MAX - 1))) {
        px_reply_status(call, d, PXC(ILLEGAL_CONSUMER_GROUP), "illegal consumer group");
        return;
    }
    struct px_op *op = px_op_get(px, call);
    if (!op) {
        px_reply_status(call, d, PXC(INTERNAL_SERVER_ERROR), "out of memory");
        return;
    }
    op->kind = kind;
    snprintf(op->topic, sizeof op->topic, "%s", mq->topic->name);
    snprintf(op->broker, sizeof op->broker, "%s", mq->broker->name);
    if (group)
        snprintf(op->group, sizeof op->group, "%s", group->name);
    op->queue_id = mq->id;
    op->i1 = i1;
    op->i2 = i2;
    op->i3 = i3;
    if (filter && *filter)
        buf_append(&op->props, filter, strlen(filter) + 1);
    int rc = px_with_route(px, op->topic, queue_route, op);
    if (rc)
        queue_route(rc, NULL, "route lookup could not start", op);
}

static void update_offset(struct px *px, struct px_grpc_call *call, const uint8_t *msg, size_t len)
{
    Apache__Rocketmq__V2__UpdateOffsetRequest *req =
        (void *)px_unpack(&apache__rocketmq__v2__update_offset_request__descriptor, msg, len);
    if (!req || req->offset < 0) {
        px_reply_status(call, resp_desc(K_UPDATE), req ? PXC(ILLEGAL_OFFSET) : PXC(BAD_REQUEST),
                        req ? "offset must not be negative" : "cannot decode UpdateOffsetRequest");
        return;
    }
    start(px, call, K_UPDATE, req->message_queue, req->group, req->offset, 0, 0, NULL);
}

static void get_offset(struct px *px, struct px_grpc_call *call, const uint8_t *msg, size_t len)
{
    Apache__Rocketmq__V2__GetOffsetRequest *req =
        (void *)px_unpack(&apache__rocketmq__v2__get_offset_request__descriptor, msg, len);
    if (!req) {
        px_reply_status(call, resp_desc(K_GET), PXC(BAD_REQUEST), "cannot decode GetOffsetRequest");
        return;
    }
    start(px, call, K_GET, req->message_queue, req->group, 0, 0, 0, NULL);
}

static void query_offset(struct px *px, struct px_grpc_call *call, const uint8_t *msg, size_t len)
{
    Apache__Rocketmq__V2__QueryOffsetRequest *req =
        (void *)px_unpack(&apache__rocketmq__v2__query_offset_request__descriptor, msg, len);
    if (!req) {
        px_reply_status(call, resp_desc(K_QUERY_MIN), PXC(BAD_REQUEST), "cannot decode QueryOffsetRequest");
        return;
    }
    int kind;
    int64_t ts = 0;
    switch (req->query_offset_policy) {
    case APACHE__ROCKETMQ__V2__QUERY_OFFSET_POLICY__BEGINNING: kind = K_QUERY_MIN; break;
    case APACHE__ROCKETMQ__V2__QUERY_OFFSET_POLICY__END: kind = K_QUERY_MAX; break;
    case APACHE__ROCKETMQ__V2__QUERY_OFFSET_POLICY__TIMESTAMP:
        if (!req->timestamp) {
            px_reply_status(call, resp_desc(K_QUERY_TS), PXC(BAD_REQUEST), "TIMESTAMP policy needs a timestamp");
            return;
        }
        kind = K_QUERY_TS;
        ts = req->timestamp->seconds * 1000 + req->timestamp->nanos / 1000000;
        break;
    default:
        px_reply_status(call, resp_desc(K_QUERY_MIN), PXC(BAD_REQUEST), "unknown query offset policy");
        return;
    }
    start(px, call, kind, req->message_queue, NULL, ts, 0, 0, NULL);
}

static void pull_message(struct px *px, struct px_grpc_call *call, const uint8_t *msg, size_t len)
{
    Apache__Rocketmq__V2__PullMessageRequest *req =
        (void *)px_unpack(&apache__rocketmq__v2__pull_message_request__descriptor, msg, len);
    if (!req) {
        px_reply_status(call, resp_desc(K_PULL), PXC(BAD_REQUEST), "cannot decode PullMessageRequest");
        return;
    }
    if (req->offset < 0) {
        px_reply_status(call, resp_desc(K_PULL), PXC(ILLEGAL_OFFSET), "offset must not be negative");
        return;
    }
    int batch = req->batch_size > 0 && req->batch_size <= 64 ? req->batch_size : 32;
    int64_t poll = req->long_polling_timeout
                       ? req->long_polling_timeout->seconds * 1000 + req->long_polling_timeout->nanos / 1000000
                       : 0;
    if (poll < 0 || poll > px->cfg.max_long_polling_ms) {
        px_reply_status(call, resp_desc(K_PULL), PXC(ILLEGAL_POLLING_TIME), "long polling timeout out of range");
        return;
    }
    const char *filter = NULL;
    if (req->filter_expression && req->filter_expression->expression && *req->filter_expression->expression) {
        if (req->filter_expression->type == APACHE__ROCKETMQ__V2__FILTER_TYPE__SQL) {
            px_reply_status(call, resp_desc(K_PULL), PXC(UNSUPPORTED), "SQL filters are not supported for pulls");
            return;
        }
        filter = req->filter_expression->expression;
    }
    start(px, call, K_PULL, req->message_queue, req->group, req->offset, batch, poll, filter);
}

void px_offset_register(struct px *px)
{
    px_rpc_register(px, "PullMessage", PX_GRPC_SERVER_STREAMING, pull_message, NULL);
    px_rpc_register(px, "UpdateOffset", PX_GRPC_UNARY, update_offset, NULL);
    px_rpc_register(px, "GetOffset", PX_GRPC_UNARY, get_offset, NULL);
    px_rpc_register(px, "QueryOffset", PX_GRPC_UNARY, query_offset, NULL);
}
