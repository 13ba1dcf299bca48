/*
 * ReceiveMessage, AckMessage, ChangeInvisibleDuration and
 * ForwardMessageToDeadLetterQueue over RocketMQ 5's pop protocol.
 *
 * ReceiveMessage sends POP_MESSAGE with queueId -1 to the broker the
 * request names (its queue id is not used, as in RocketMQ's proxy), so one
 * pop serves every queue of the topic on that broker. Long polling happens
 * on the broker (pollTime is the client's long-polling timeout, bounded by
 * its deadline). The answer streams status, messages and the delivery timestamp. Each message's
 * receipt handle is built from the answer's check-point header exactly as
 * RocketMQ's client/proxy do (receipt.h), so ACK_MESSAGE and
 * CHANGE_MESSAGE_INVISIBLETIME can be rebuilt from the handle alone.
 * Dead-lettering is CONSUMER_SEND_MSG_BACK with delayLevel -1 followed by an
 * ack of the popped message.
 *
 * Receives with auto_renew (push consumers) pop with
 * defaultInvisibleTimeMills and register every handle delivered with the
 * renewal registry (renew.h), which keeps the messages invisible while the
 * client works on them. Ack, change of invisible time and dead-lettering
 * first take the handle from there: after a renewal the broker knows the
 * message only under the latest check point.
 *
 * An AckMessage with several entries is grouped per broker: the entries
 * whose handle is final at once (not waiting for a renewal in flight) and
 * whose broker address is cached go to that broker as one
 * BATCH_ACK_MESSAGE, one BatchAck per check point (retry kind, queue,
 * startOffset, popTime, invisibleTime, reviveQid) with a bit per acked
 * offset, as RocketMQ's client encodes it. An entry alone on its broker,
 * one whose offset does not fit a check point's bit set, one waiting for a
 * renewal and one whose route must be looked up first each go as
 * ACK_MESSAGE. Each entry's result is that of the request that carried it.
 * Unlike ACK_MESSAGE, the broker (RocketMQ's too) does not check each
 * offset of a batch against the queue's bounds.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "consumer.h"
#include "log.h"
#include "proxy.h"
#include "receipt.h"
#include "renew.h"

#define MAX_BATCH 32
/* op->kind bits of a receive. */
#define RECV_SQL 1
#define RECV_AUTO_RENEW 2
#define MAX_RECV_MSGS 64

static struct px_msg_out msg_out[MAX_RECV_MSGS];
static struct buf scratch = BUF_INIT;
/* Receipt handles of the answer being streamed (recv_found runs to the end
 * before anything else; kept out of the pooled ops so that every op does
 * not end up carrying 32 KiB). */
static char handles[MAX_RECV_MSGS][PX_HANDLE_MAX];

static int64_t dur_ms(const Google__Protobuf__Duration *d)
{
    return d ? d->seconds * 1000 + d->nanos / 1000000 : 0;
}

/* Makes handle the one op's request goes to the broker with. */
static int set_handle(struct px_op *op, const char *handle)
{
    buf_reset(&op->props);
    return buf_append(&op->props, handle, strlen(handle) + 1);
}

static void recv_finish(struct px_op *op, px_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void recv_finish(struct px_op *op, px_code code, const char *fmt, ...)
{
    char text[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    log_debug("proxy: receive %s/%s queue %d on %s: %s %s", op->group, op->topic, op->queue_id, op->broker,
              px_code_name(code), text);
    Apache__Rocketmq__V2__Status st = APACHE__ROCKETMQ__V2__STATUS__INIT;
    st.code = code;
    st.message = text;
    Apache__Rocketmq__V2__ReceiveMessageResponse r = APACHE__ROCKETMQ__V2__RECEIVE_MESSAGE_RESPONSE__INIT;
    r.content_case = APACHE__ROCKETMQ__V2__RECEIVE_MESSAGE_RESPONSE__CONTENT_STATUS;
    r.status = &st;
    if (px_grpc_call_send_pb(op->call, &r.base) == 0)
        px_grpc_call_finish(op->call, PX_GRPC_OK, NULL);
    px_op_put(op);
}

/* Streams the popped messages of a SUCCESS answer. */
static void recv_found(struct px_op *op, rmt_cmd *resp)
{
    struct px *px = op->px;
    int64_t pop_time = 0, invisible = 0, revive = 0;
    if (rmt_cmd_ext_int(resp, "popTime", &pop_time) || rmt_cmd_ext_int(resp, "invisibleTime", &invisible) ||
        rmt_cmd_ext_int(resp, "reviveQid", &revive)) {
        recv_finish(op, PXC(INTERNAL_SERVER_ERROR), "broker answered POP_MESSAGE without popTime/invisibleTime/reviveQid");
        return;
    }
    static struct px_ckinfo start_info, off_info, order_info;
    if (px_ckinfo_parse(rmt_cmd_ext(resp, "startOffsetInfo"), false, &start_info) ||
        px_ckinfo_parse(rmt_cmd_ext(resp, "msgOffsetInfo"), true, &off_info) ||
        px_ckinfo_parse(rmt_cmd_ext(resp, "orderCountInfo"), false, &order_info)) {
        recv_finish(op, PXC(INTERNAL_SERVER_ERROR), "broker answered POP_MESSAGE with malformed check-point info");
        return;
    }
    size_t pos = 0;
    int n = 0;
    int seen[PX_CK_MAX_QUEUES] = { 0 };
    struct cli_msg_view v;
    buf_reset(&scratch);
    struct msg_record recs[MAX_RECV_MSGS];
    struct cli_msg_view views[MAX_RECV_MSGS];
    const uint8_t *body = resp->body;
    while (n < MAX_RECV_MSGS) {
        size_t at = pos;
        int rc = cli_pull_next(body, resp->body_len, &pos, &v);
        if (rc == 0)
            break;
        if (rc < 0 || msg_record_decode(body + at, resp->body_len - at, &recs[n], 0) <= 0) {
            recv_finish(op, PXC(INTERNAL_SERVER_ERROR), "broker answered POP_MESSAGE with a malformed body");
            return;
        }
        views[n] = v;
        char type = px_topic_type(v.topic, v.topic_len);
        const char *pck;
        size_t pckl;
        char *h = handles[n];
        if (msg_prop_get(v.props, v.props_len, MSG_PROP_POP_CK, &pck, &pckl) && pckl + 24 < PX_HANDLE_MAX) {
            int hl = snprintf(h, PX_HANDLE_MAX, "%.*s %" PRId64, (int)pckl, pck, v.commit_log_offset);
            (void)hl;
        } else if (start_info.n == 0) {
            px_handle_build(h, PX_HANDLE_MAX, v.queue_offset, pop_time, invisible, (int)revive, type,
                            op->broker, v.queue_id, v.queue_offset, v.commit_log_offset);
        } else {
            const struct px_ck_entry *se = px_ckinfo_find(&start_info, type, v.queue_id);
            const struct px_ck_entry *oe = px_ckinfo_find(&off_info, type, v.queue_id);
            int idx = -1;
            if (oe) {
                idx = seen[oe - off_info.e]++;
            }
            int64_t qo;
            if (!se || !oe || px_ck_offset_at(oe, idx, &qo)) {
                recv_finish(op, PXC(INTERNAL_SERVER_ERROR),
                            "POP_MESSAGE answer has no check point for queue %d", v.queue_id);
                return;
            }
            px_handle_build(h, PX_HANDLE_MAX, se->value, pop_time, invisible, (int)revive, type,
                            op->broker, v.queue_id, qo, v.commit_log_offset);
            const struct px_ck_entry *ce = px_ckinfo_find_qo(&order_info, type, v.queue_id, v.queue_offset);
            if (!ce)
                ce = px_ckinfo_find(&order_info, type, v.queue_id);
            if (op->i3 && ce && ce->value > 0)
                views[n].reconsume_times = (int)ce->value;
        }
        n++;
    }
    if (n == 0) {
        recv_finish(op, PXC(MESSAGE_NOT_FOUND), "no new message");
        return;
    }
    Apache__Rocketmq__V2__Status st = APACHE__ROCKETMQ__V2__STATUS__INIT;
    st.code = PXC(OK);
    st.message = (char *)"OK";
    Apache__Rocketmq__V2__ReceiveMessageResponse r = APACHE__ROCKETMQ__V2__RECEIVE_MESSAGE_RESPONSE__INIT;
    r.content_case = APACHE__ROCKETMQ__V2__RECEIVE_MESSAGE_RESPONSE__CONTENT_STATUS;
    r.status = &st;
    int rc = px_grpc_call_send_pb(op->call, &r.base);
    for (int i = 0; i < n && rc == 0; i++) {
        struct px_msg_out *o = &msg_out[i];
        if (px_msg_to_pb(o, &views[i], &recs[i], op->topic, &scratch)) {
            rc = -ENOMEM;
            break;
        }
        o->sp.opt_receipt_handle_case = APACHE__ROCKETMQ__V2__SYSTEM_PROPERTIES__OPT_RECEIPT_HANDLE_RECEIPT_HANDLE;
        o->sp.receipt_handle = handles[i];
        o->invisible.seconds = invisible / 1000;
        o->invisible.nanos = (int32_t)(invisible % 1000) * 1000000;
        o->sp.invisible_duration = &o->invisible;
        Apache__Rocketmq__V2__ReceiveMessageResponse mr = APACHE__ROCKETMQ__V2__RECEIVE_MESSAGE_RESPONSE__INIT;
        mr.content_case = APACHE__ROCKETMQ__V2__RECEIVE_MESSAGE_RESPONSE__CONTENT_MESSAGE;
        mr.message = &o->msg;
        rc = px_grpc_call_send_pb(op->call, &mr.base);
    }
    if (rc == 0) {
        Google__Protobuf__Timestamp ts = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
        ts.seconds = pop_time / 1000;
        ts.nanos = (int32_t)(pop_time % 1000) * 1000000;
        Apache__Rocketmq__V2__ReceiveMessageResponse dr = APACHE__ROCKETMQ__V2__RECEIVE_MESSAGE_RESPONSE__INIT;
        dr.content_case = APACHE__ROCKETMQ__V2__RECEIVE_MESSAGE_RESPONSE__CONTENT_DELIVERY_TIMESTAMP;
        dr.delivery_timestamp = &ts;
        rc = px_grpc_call_send_pb(op->call, &dr.base);
    }
    if (rc == 0 && (op->kind & RECV_AUTO_RENEW)) {
        /* Only for a client whose session can tell when it goes away. */
        const char *cid = px_grpc_call_header(op->call, "x-mq-client-id");
        if (cid && px_telemetry_has_client(px, cid))
            for (int i = 0; i < n; i++)
                px_renew_add(px, cid, op->group, op->topic, handles[i]);
    }
    if (rc == 0)
        px_grpc_call_finish(op->call, PX_GRPC_OK, NULL);
    else if (rc != -ECANCELED)
        px_grpc_call_finish(op->call, PX_GRPC_INTERNAL, "cannot encode the messages");
    else
        log_warn("proxy: %d popped message(s) of %s could not be delivered (client gone); they "
                 "become visible again after %" PRId64 " ms", n, op->topic, invisible);
    px->stats.receives++;
    px->stats.received_msgs += (uint64_t)n;
    px_op_put(op);
}

static void pop_resp(int status, rmt_cmd *resp, void *ud)
{
    struct px_op *op = ud;
    if (status) {
        recv_finish(op, px_code_from_errno(status), "broker %s: %s", op->broker, strerror(-status));
        return;
    }
    switch (resp->code) {
    case RMT_RESP_SUCCESS:
        recv_found(op, resp);
        return;
    case RMT_RESP_PULL_NOT_FOUND:
    case RMT_RESP_POLLING_TIMEOUT:
    case RMT_RESP_NO_MESSAGE:
        recv_finish(op, PXC(MESSAGE_NOT_FOUND), "no new message");
        return;
    default:
        recv_finish(op, px_code_from_remoting(PX_ROP_POP, resp->code), "broker %s: POP_MESSAGE answered %d: %s",
                    op->broker, resp->code, rmt_cmd_remark(resp) ? rmt_cmd_remark(resp) : "");
    }
}

static void pop_route(int status, const struct cli_route *r, const char *errmsg, void *ud)
{
    struct px_op *op = ud;
    struct px *px = op->px;
    if (status) {
        recv_finish(op, px_code_from_route(status), "%s", errmsg ? errmsg : strerror(-status));
        return;
    }
    const char *addr = cli_route_any_addr(r, op->broker, true);
    if (!addr) {
        recv_finish(op, PXC(INTERNAL_SERVER_ERROR), "broker %s is not in the route of %s", op->broker, op->topic);
        return;
    }
    px_copy(op->addr, sizeof op->addr, addr);
    int64_t poll = op->i1;
    double dl = px_grpc_call_deadline(op->call);
    if (dl > 0) {
        int64_t left = (int64_t)((dl - ev_now(px->loop)) * 1000) - 500;
        if (left < poll)
            poll = left > 0 ? left : 0;
    }
    rmt_cmd *c = &op->cmd;
    px_cmd_reset(px, c, RMT_REQ_POP_MESSAGE);
    const char *filter = op->props.len ? (const char *)op->props.data : "*";
    int rc = rmt_cmd_set_ext(c, "consumerGroup", op->group);
    if (!rc) rc = rmt_cmd_set_ext(c, "topic", op->topic);
    if (!rc) rc = rmt_cmd_set_ext_int(c, "queueId", op->queue_id);
    if (!rc) rc = rmt_cmd_set_ext_int(c, "maxMsgNums", op->i2);
    if (!rc) rc = rmt_cmd_set_ext_int(c, "invisibleTime", (int64_t)op->started);
    if (!rc) rc = rmt_cmd_set_ext_int(c, "pollTime", poll);
    if (!rc) rc = rmt_cmd_set_ext_int(c, "bornTime", px_now_ms());
    if (!rc) rc = rmt_cmd_set_ext_int(c, "initMode", 1);
    if (!rc) rc = rmt_cmd_set_ext(c, "expType", (op->kind & RECV_SQL) ? "SQL92" : "TAG");
    if (!rc) rc = rmt_cmd_set_ext(c, "exp", filter);
    if (!rc) rc = rmt_cmd_set_ext(c, "order", op->i3 ? "true" : "false");
    if (!rc && op->str[0]) rc = rmt_cmd_set_ext(c, "attemptId", op->str);
    if (!rc) rc = rmt_cmd_set_ext(c, "bname", op->broker);
    if (!rc)
        rc = rmt_client_invoke(px->brk, op->addr, c, (int)(poll + px->cfg.request_timeout_ms), pop_resp, op);
    if (rc)
        pop_resp(rc, NULL, op);
}

static void receive_message(struct px *px, struct px_grpc_call *call, const uint8_t *msg, size_t len)
{
    struct px_op tmp = { .call = call };
    Apache__Rocketmq__V2__ReceiveMessageRequest *req =
        (void *)px_unpack(&apache__rocketmq__v2__receive_message_request__descriptor, msg, len);
    struct px_op *op = px_op_get(px, call);
    if (!op) {
        px_grpc_call_finish(call, PX_GRPC_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    (void)tmp;
    if (!req) {
        recv_finish(op, PXC(BAD_REQUEST), "cannot decode ReceiveMessageRequest");
        return;
    }
    const Apache__Rocketmq__V2__MessageQueue *mq = req->message_queue;
    if (!req->group || !px_valid_name(req->group->name, CLI_NAME_MAX - 1)) {
        recv_finish(op, PXC(ILLEGAL_CONSUMER_GROUP), "illegal consumer group");
        return;
    }
    if (!mq || !mq->topic || !px_valid_name(mq->topic->name, CLI_NAME_MAX - 1)) {
        recv_finish(op, PXC(ILLEGAL_TOPIC), "illegal topic name");
        return;
    }
    if (!mq->broker || !mq->broker->name || !*mq->broker->name || strlen(mq->broker->name) >= CLI_NAME_MAX) {
        recv_finish(op, PXC(BAD_REQUEST), "message queue names no broker");
        return;
    }
    int batch = req->batch_size;
    if (batch <= 0 || batch > MAX_BATCH) {
        recv_finish(op, PXC(BAD_REQUEST), "batch size must be 1..%d", MAX_BATCH);
        return;
    }
    int64_t invisible = req->auto_renew ? px->cfg.default_invisible_ms : dur_ms(req->invisible_duration);
    if (!req->auto_renew && req->invisible_duration &&
        (invisible < px->cfg.min_invisible_ms || invisible > px->cfg.max_invisible_ms)) {
        recv_finish(op, PXC(ILLEGAL_INVISIBLE_TIME), "invisible duration must be %" PRId64 "..%" PRId64 " ms",
                    px->cfg.min_invisible_ms, px->cfg.max_invisible_ms);
        return;
    }
    if (!req->invisible_duration && !req->auto_renew)
        invisible = px->cfg.default_invisible_ms;
    int64_t poll = req->long_polling_timeout ? dur_ms(req->long_polling_timeout) : 0;
    if (poll < 0 || poll > px->cfg.max_long_polling_ms) {
        recv_finish(op, PXC(ILLEGAL_POLLING_TIME), "long polling timeout must be 0..%" PRId64 " ms",
                    px->cfg.max_long_polling_ms);
        return;
    }
    px_copy(op->group, sizeof op->group, req->group->name);
    px_copy(op->topic, sizeof op->topic, mq->topic->name);
    px_copy(op->broker, sizeof op->broker, mq->broker->name);
    /* Like RocketMQ's proxy (its broker-acting queue): the request only
     * picks the broker; the pop covers every queue of the topic there, so a
     * client naming one queue (SimpleConsumer) still gets all messages. */
    op->queue_id = -1;
    op->i1 = poll;
    op->i2 = batch;
    op->started = (double)invisible;
    op->i3 = px_telemetry_group_fifo(px, op->group);
    op->kind = req->auto_renew ? RECV_AUTO_RENEW : 0;
    if (req->filter_expression && req->filter_expression->expression &&
        *req->filter_expression->expression) {
        if (req->filter_expression->type == APACHE__ROCKETMQ__V2__FILTER_TYPE__SQL) {
            op->kind |= RECV_SQL;
        } else {
            struct cli_sub sub;
            char err[128];
            if (cli_sub_parse(req->filter_expression->expression, &sub, err, sizeof err)) {
                recv_finish(op, PXC(ILLEGAL_FILTER_EXPRESSION), "%s", err);
                return;
            }
        }
        buf_append(&op->props, req->filter_expression->expression,
                   strlen(req->filter_expression->expression) + 1);
    }
    if (req->opt_attempt_id_case == APACHE__ROCKETMQ__V2__RECEIVE_MESSAGE_REQUEST__OPT_ATTEMPT_ID_ATTEMPT_ID)
        px_copy(op->str, sizeof op->str, req->attempt_id);
    int rc = px_with_route(px, op->topic, pop_route, op);
    if (rc)
        pop_route(rc, NULL, "route lookup could not start", op);
}

/* Ack fan-out: the parent keeps one result per entry in aux. */
struct ack_res {
    px_code code;
    char err[160];
};

static void ack_done(struct px_op *parent)
{
    int n = (int)parent->i1;
    struct ack_res *res = (struct ack_res *)parent->aux.data;
    Apache__Rocketmq__V2__AckMessageRequest *req = NULL;
    (void)req;
    char *ids = (char *)parent->body.data;
    Apache__Rocketmq__V2__AckMessageResultEntry ent[n];
    Apache__Rocketmq__V2__AckMessageResultEntry *entp[n];
    Apache__Rocketmq__V2__Status st[n];
    Apache__Rocketmq__V2__Status top = APACHE__ROCKETMQ__V2__STATUS__INIT;
    int ok = 0;
    for (int i = 0; i < n; i++) {
        apache__rocketmq__v2__status__init(&st[i]);
        st[i].code = res[i].code;
        st[i].message = res[i].code == PXC(OK) ? (char *)"OK" : res[i].err;
        ok += res[i].code == PXC(OK);
        apache__rocketmq__v2__ack_message_result_entry__init(&ent[i]);
        /* ids: message id NUL receipt handle NUL, per entry */
        ent[i].message_id = ids;
        ids += strlen(ids) + 1;
        ent[i].receipt_handle = ids;
        ids += strlen(ids) + 1;
        ent[i].status = &st[i];
        entp[i] = &ent[i];
    }
    if (ok == n) {
        top.code = PXC(OK);
        top.message = (char *)"OK";
    } else if (ok == 0 && n > 0) {
        top.code = res[0].code;
        top.message = res[0].err;
    } else {
        top.code = PXC(MULTIPLE_RESULTS);
        top.message = (char *)"some entries failed";
    }
    Apache__Rocketmq__V2__AckMessageResponse resp = APACHE__ROCKETMQ__V2__ACK_MESSAGE_RESPONSE__INIT;
    resp.status = &top;
    resp.n_entries = (size_t)n;
    resp.entries = entp;
    px_reply(parent->call, &resp.base);
    parent->px->stats.acks += (uint64_t)ok;
    px_op_put(parent);
}

static void ack_child_done(struct px_op *op, px_code code, const char *err)
{
    struct px_op *parent = op->parent;
    struct ack_res *r = &((struct ack_res *)parent->aux.data)[op->index];
    r->code = code;
    px_copy(r->err, sizeof r->err, err ? err : "");
    px_op_put(op);
    if (--parent->pending == 0)
        ack_done(parent);
}

static void ack_resp(int status, rmt_cmd *resp, void *ud)
{
    struct px_op *op = ud;
    char err[200];
    if (status) {
        snprintf(err, sizeof err, "broker %s: %s", op->broker, strerror(-status));
        ack_child_done(op, px_code_from_errno(status), err);
    } else if (resp->code != RMT_RESP_SUCCESS) {
        snprintf(err, sizeof err, "broker %s: ACK_MESSAGE answered %d: %s", op->broker, resp->code,
                 rmt_cmd_remark(resp) ? rmt_cmd_remark(resp) : "");
        ack_child_done(op, px_code_from_remoting(PX_ROP_ACK, resp->code), err);
    } else {
        ack_child_done(op, PXC(OK), NULL);
    }
}

/* Builds and sends ACK_MESSAGE for handle h (string in op->props). */
static void ack_send(struct px_op *op, const struct px_handle *h, rmt_response_fn cb)
{
    struct px *px = op->px;
    char real[CLI_NAME_MAX * 2 + 16];
    const char *addr = px_broker_addr(px, op->topic, h->broker);
    if (px_handle_real_topic(h, op->topic, op->group, real, sizeof real) < 0 || !addr) {
        cb(addr ? -EINVAL : -EHOSTUNREACH, NULL, op);
        return;
    }
    px_copy(op->addr, sizeof op->addr, addr);
    px_copy(op->broker, sizeof op->broker, h->broker);
    rmt_cmd *c = &op->cmd;
    px_cmd_reset(px, c, RMT_REQ_ACK_MESSAGE);
    int rc = rmt_cmd_set_ext(c, "consumerGroup", op->group);
    if (!rc) rc = rmt_cmd_set_ext(c, "topic", real);
    if (!rc) rc = rmt_cmd_set_ext_int(c, "queueId", h->queue_id);
    if (!rc) rc = rmt_cmd_set_ext(c, "extraInfo", (const char *)op->props.data);
    if (!rc) rc = rmt_cmd_set_ext_int(c, "offset", h->offset);
    if (!rc) rc = rmt_cmd_set_ext(c, "bname", h->broker);
    if (!rc)
        rc = rmt_client_invoke(px->brk, addr, c, (int)px->cfg.request_timeout_ms, cb, op);
    if (!rc)
        px->stats.ack_requests++;
    if (rc)
        cb(rc, NULL, op);
}

static void ack_route(int status, const struct cli_route *r, const char *errmsg, void *ud)
{
    struct px_op *op = ud;
    if (status) {
        ack_child_done(op, px_code_from_route(status), errmsg);
        return;
    }
    struct px_handle h;
    px_handle_decode((const char *)op->props.data, op->props.len - 1, &h);
    if (!px_broker_addr(op->px, op->topic, h.broker)) {
        ack_child_done(op, PXC(INVALID_RECEIPT_HANDLE), "receipt handle names an unknown broker");
        return;
    }
    ack_send(op, &h, ack_resp);
}

/* Sends one ack entry once its handle (op->props) is final. */
static void ack_go(struct px_op *op)
{
    struct px_handle h;
    if (px_handle_decode((const char *)op->props.data, op->props.len - 1, &h)) {
        ack_child_done(op, PXC(INVALID_RECEIPT_HANDLE), "receipt handle is malformed");
        return;
    }
    if (px_broker_addr(op->px, op->topic, h.broker)) {
        ack_send(op, &h, ack_resp);
    } else {
        int rc = px_with_route(op->px, op->topic, ack_route, op);
        if (rc)
            ack_route(rc, NULL, "route lookup could not start", op);
    }
}

static void ack_taken(void *ud, int status, const char *handle)
{
    struct px_op *op = ud;
    if (status)
        ack_child_done(op, px_code_from_errno(status), "the proxy is shutting down");
    else if (set_handle(op, handle))
        ack_child_done(op, PXC(INTERNAL_SERVER_ERROR), "out of memory");
    else
        ack_go(op);
}

/* A BatchAck bit set holds offsets startOffset .. startOffset + this - 1. */
#define BATCH_ACK_SPAN 4096

/* Results of a BATCH_ACK_MESSAGE: the carrier op lists its entries'
 * indices in aux; every entry gets the request's outcome. */
static void batch_done(struct px_op *op, px_code code, const char *err)
{
    struct px_op *parent = op->parent;
    struct ack_res *res = (struct ack_res *)parent->aux.data;
    const int *idx = (const int *)op->aux.data;
    int k = (int)(op->aux.len / sizeof(int));
    for (int i = 0; i < k; i++) {
        res[idx[i]].code = code;
        px_copy(res[idx[i]].err, sizeof res[idx[i]].err, err ? err : "");
    }
    px_op_put(op);
    parent->pending -= k;
    if (parent->pending == 0)
        ack_done(parent);
}

static void batch_resp(int status, rmt_cmd *resp, void *ud)
{
    struct px_op *op = ud;
    char err[200];
    if (status) {
        snprintf(err, sizeof err, "broker %s: %s", op->broker, strerror(-status));
        batch_done(op, px_code_from_errno(status), err);
    } else if (resp->code != RMT_RESP_SUCCESS) {
        snprintf(err, sizeof err, "broker %s: BATCH_ACK_MESSAGE answered %d: %s", op->broker, resp->code,
                 rmt_cmd_remark(resp) ? rmt_cmd_remark(resp) : "");
        batch_done(op, px_code_from_remoting(PX_ROP_ACK, resp->code), err);
    } else {
        batch_done(op, PXC(OK), NULL);
    }
}

/* Appends s as a JSON string. */
static int json_str(struct buf *b, const char *s)
{
    int rc = buf_append_u8(b, '"');
    for (; *s && !rc; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            rc = buf_printf(b, "\\%c", ch);
        else if (ch < 0x20)
            rc = buf_printf(b, "\\u%04x", ch);
        else
            rc = buf_append_u8(b, ch);
    }
    return rc ? rc : buf_append_u8(b, '"');
}

/* Appends the bytes as a JSON string in standard base64 (how fastjson
 * writes the byte[] of BitSet.toByteArray()). */
static int json_b64(struct buf *b, const uint8_t *p, size_t n)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    int rc = buf_append_u8(b, '"');
    for (size_t i = 0; i < n && !rc; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16;
        if (i + 1 < n) v |= (uint32_t)p[i + 1] << 8;
        if (i + 2 < n) v |= p[i + 2];
        char q[4] = { tab[v >> 18], tab[(v >> 12) & 63], i + 1 < n ? tab[(v >> 6) & 63] : '=',
                      i + 2 < n ? tab[v & 63] : '=' };
        rc = buf_append(b, q, 4);
    }
    return rc ? rc : buf_append_u8(b, '"');
}

static bool same_ck(const struct px_handle *a, const struct px_handle *b)
{
    return a->topic_type == b->topic_type && a->queue_id == b->queue_id && a->start_offset == b->start_offset &&
           a->retrieve_time == b->retrieve_time && a->invisible_time == b->invisible_time &&
           a->revive_qid == b->revive_qid;
}

/* Builds the BatchAckMessageRequestBody of the k entries h[0..k) (one
 * broker) into b. */
static int batch_body(struct buf *b, const char *group, const char *topic, const struct px_handle *h, int k)
{
    bool done[k];
    memset(done, 0, sizeof done);
    buf_reset(b);
    int rc = buf_append(b, "{\"brokerName\":", 14);
    if (!rc) rc = json_str(b, h[0].broker);
    if (!rc) rc = buf_append(b, ",\"acks\":[", 9);
    bool first = true;
    for (int i = 0; i < k && !rc; i++) {
        if (done[i])
            continue;
        uint8_t bits[BATCH_ACK_SPAN / 8];
        memset(bits, 0, sizeof bits);
        int64_t top = 0;
        for (int j = i; j < k; j++) {
            if (done[j] || !same_ck(&h[i], &h[j]))
                continue;
            done[j] = true;
            int64_t d = h[j].offset - h[j].start_offset;
            bits[d / 8] |= (uint8_t)(1u << (d % 8));
            if (d > top)
                top = d;
        }
        /* The retry topic is named from group and topic by the broker for
         * "1"; a v2 retry topic ('2') is given whole. */
        char real[CLI_NAME_MAX * 2 + 16];
        const char *t = topic, *retry = "0";
        if (h[i].topic_type == '1') {
            retry = "1";
        } else if (h[i].topic_type == '2') {
            if (px_handle_real_topic(&h[i], topic, group, real, sizeof real) < 0)
                return -EINVAL;
            t = real;
        }
        rc = buf_append(b, first ? "{\"c\":" : ",{\"c\":", first ? 5 : 6);
        first = false;
        if (!rc) rc = json_str(b, group);
        if (!rc) rc = buf_append(b, ",\"t\":", 5);
        if (!rc) rc = json_str(b, t);
        if (!rc)
            rc = buf_printf(b,
                            ",\"r\":\"%s\",\"so\":%" PRId64 ",\"q\":%d,\"rq\":%d,\"pt\":%" PRId64
                            ",\"it\":%" PRId64 ",\"b\":",
                            retry, h[i].start_offset, h[i].queue_id, h[i].revive_qid, h[i].retrieve_time,
                            h[i].invisible_time);
        if (!rc) rc = json_b64(b, bits, (size_t)(top / 8 + 1));
        if (!rc) rc = buf_append_u8(b, '}');
    }
    return rc ? rc : buf_append(b, "]}", 2);
}

/* Sends the entries ready[0..n) of one ack (handles final in their
 * op->props): per broker one BATCH_ACK_MESSAGE for those that fit one, an
 * ACK_MESSAGE for the rest. Each op accounts for one pending entry of its
 * parent. */
static void ack_plan(struct px *px, struct px_op **ready, int n)
{
    struct px_handle *h = malloc((size_t)(n > 0 ? n : 1) * sizeof *h);
    if (!h) {
        for (int i = 0; i < n; i++)
            ack_go(ready[i]);
        return;
    }
    /* ready[i] becomes NULL once it is on its way. */
    for (int i = 0; i < n; i++) {
        struct px_op *op = ready[i];
        if (px_handle_decode((const char *)op->props.data, op->props.len - 1, &h[i]) ||
            h[i].offset < h[i].start_offset || h[i].offset - h[i].start_offset >= BATCH_ACK_SPAN ||
            !px_broker_addr(px, op->topic, h[i].broker)) {
            ready[i] = NULL;
            ack_go(op);
        }
    }
    struct px_handle *mine = malloc((size_t)(n > 0 ? n : 1) * sizeof *mine);
    for (int i = 0; i < n; i++) {
        if (!ready[i])
            continue;
        struct px_op *carrier = ready[i];
        int k = 0;
        for (int j = i; j < n && mine; j++)
            if (ready[j] && strcmp(h[j].broker, h[i].broker) == 0)
                k++;
        if (k < 2) {
            ready[i] = NULL;
            ack_go(carrier);
            continue;
        }
        buf_reset(&carrier->aux);
        int rc = buf_reserve(&carrier->aux, (size_t)k * sizeof(int));
        k = 0;
        for (int j = i; j < n && !rc; j++) {
            if (!ready[j] || strcmp(h[j].broker, h[i].broker))
                continue;
            mine[k++] = h[j];
            rc = buf_append(&carrier->aux, &ready[j]->index, sizeof(int));
            if (j != i)
                px_op_put(ready[j]);
            ready[j] = NULL;
        }
        if (!rc) rc = batch_body(&carrier->body, carrier->group, carrier->topic, mine, k);
        const char *addr = px_broker_addr(px, carrier->topic, h[i].broker);
        px_copy(carrier->broker, sizeof carrier->broker, h[i].broker);
        if (!rc && !addr)
            rc = -EHOSTUNREACH;
        if (!rc) {
            px_copy(carrier->addr, sizeof carrier->addr, addr);
            px_cmd_reset(px, &carrier->cmd, RMT_REQ_BATCH_ACK_MESSAGE);
            rmt_cmd_set_body(&carrier->cmd, carrier->body.data, (uint32_t)carrier->body.len);
            rc = rmt_client_invoke(px->brk, carrier->addr, &carrier->cmd, (int)px->cfg.request_timeout_ms,
                                   batch_resp, carrier);
            if (!rc) {
                px->stats.batch_acks++;
                px->stats.batch_acked += (uint64_t)k;
            }
        }
        if (rc)
            batch_resp(rc, NULL, carrier);
    }
    free(mine);
    free(h);
}

static void ack_message(struct px *px, struct px_grpc_call *call, const uint8_t *msg, size_t len)
{
    const ProtobufCMessageDescriptor *d = &apache__rocketmq__v2__ack_message_response__descriptor;
    Apache__Rocketmq__V2__AckMessageRequest *req =
        (void *)px_unpack(&apache__rocketmq__v2__ack_message_request__descriptor, msg, len);
    if (!req) {
        px_reply_status(call, d, PXC(BAD_REQUEST), "cannot decode AckMessageRequest");
        return;
    }
    if (!px_check_group_topic(call, d, req->group, req->topic))
        return;
    if (req->n_entries == 0 || req->n_entries > 1024) {
        px_reply_status(call, d, PXC(BAD_REQUEST), "an ack carries 1 to 1024 entries");
        return;
    }
    int n = (int)req->n_entries;
    struct px_op *parent = px_op_get(px, call);
    if (!parent || buf_reserve(&parent->aux, (size_t)n * sizeof(struct ack_res))) {
        px_op_put(parent);
        px_reply_status(call, d, PXC(INTERNAL_SERVER_ERROR), "out of memory");
        return;
    }
    parent->i1 = n;
    parent->pending = n + 1;
    struct ack_res *res = (struct ack_res *)parent->aux.data;
    struct px_op *ready[n];
    int nready = 0;
    for (int i = 0; i < n; i++) {
        const Apache__Rocketmq__V2__AckMessageEntry *e = req->entries[i];
        const char *mid = e->message_id ? e->message_id : "";
        const char *rh = e->receipt_handle ? e->receipt_handle : "";
        buf_append(&parent->body, mid, strlen(mid) + 1);
        buf_append(&parent->body, rh, strlen(rh) + 1);
        res[i].code = PXC(OK);
        res[i].err[0] = 0;
        struct px_handle h;
        if (px_handle_decode(rh, strlen(rh), &h)) {
            res[i].code = PXC(INVALID_RECEIPT_HANDLE);
            snprintf(res[i].err, sizeof res[i].err, "receipt handle is malformed");
            parent->pending--;
            continue;
        }
        struct px_op *op = px_op_get(px, NULL);
        if (!op) {
            res[i].code = PXC(INTERNAL_SERVER_ERROR);
            snprintf(res[i].err, sizeof res[i].err, "out of memory");
            parent->pending--;
            continue;
        }
        op->parent = parent;
        op->index = i;
        px_copy(op->group, sizeof op->group, req->group->name);
        px_copy(op->topic, sizeof op->topic, req->topic->name);
        char latest[PX_HANDLE_MAX];
        int taken = px_renew_take(px, op->group, op->topic, rh, latest, sizeof latest, ack_taken, op);
        if (taken == 2)
            continue;
        if (set_handle(op, taken == 1 ? latest : rh)) {
            ack_child_done(op, PXC(INTERNAL_SERVER_ERROR), "out of memory");
            continue;
        }
        ready[nready++] = op;
    }
    ack_plan(px, ready, nready);
    if (--parent->pending == 0)
        ack_done(parent);
}

static void change_resp(int status, rmt_cmd *resp, void *ud)
{
    struct px_op *op = ud;
    const ProtobufCMessageDescriptor *d = &apache__rocketmq__v2__change_invisible_duration_response__descriptor;
    if (status) {
        px_reply_status(op->call, d, status == -EHOSTUNREACH || status == -EINVAL ? PXC(INVALID_RECEIPT_HANDLE)
                                                                                   : px_code_from_errno(status),
                        "broker %s: %s", op->broker, strerror(-status));
    } else if (resp->code != RMT_RESP_SUCCESS) {
        px_reply_status(op->call, d, px_code_from_remoting(PX_ROP_CHANGE_INVISIBLE, resp->code),
                        "broker %s: CHANGE_MESSAGE_INVISIBLETIME answered %d: %s", op->broker, resp->code,
                        rmt_cmd_remark(resp) ? rmt_cmd_remark(resp) : "");
    } else {
        struct px_handle h;
        int64_t pop_time, inv, revive;
        char out[PX_HANDLE_MAX];
        px_handle_decode((const char *)op->props.data, op->props.len - 1, &h);
        if (rmt_cmd_ext_int(resp, "popTime", &pop_time) || rmt_cmd_ext_int(resp, "invisibleTime", &inv) ||
            rmt_cmd_ext_int(resp, "reviveQid", &revive)) {
            px_reply_status(op->call, d, PXC(INTERNAL_SERVER_ERROR),
                            "broker answered without popTime/invisibleTime/reviveQid");
        } else {
            h.retrieve_time = pop_time;
            h.invisible_time = inv;
            h.revive_qid = (int)revive;
            Apache__Rocketmq__V2__Status st = APACHE__ROCKETMQ__V2__STATUS__INIT;
            st.code = PXC(OK);
            st.message = (char *)"OK";
            Apache__Rocketmq__V2__ChangeInvisibleDurationResponse r =
                APACHE__ROCKETMQ__V2__CHANGE_INVISIBLE_DURATION_RESPONSE__INIT;
            r.status = &st;
            r.receipt_handle = px_handle_encode(&h, out, sizeof out) > 0 ? out : (char *)"";
            px_reply(op->call, &r.base);
        }
    }
    px_op_put(op);
}

static void change_send(struct px_op *op)
{
    struct px *px = op->px;
    struct px_handle h;
    px_handle_decode((const char *)op->props.data, op->props.len - 1, &h);
    char real[CLI_NAME_MAX * 2 + 16];
    const char *addr = px_broker_addr(px, op->topic, h.broker);
    if (!addr || px_handle_real_topic(&h, op->topic, op->group, real, sizeof real) < 0) {
        change_resp(addr ? -EINVAL : -EHOSTUNREACH, NULL, op);
        return;
    }
    px_copy(op->broker, sizeof op->broker, h.broker);
    rmt_cmd *c = &op->cmd;
    px_cmd_reset(px, c, RMT_REQ_CHANGE_MESSAGE_INVISIBLETIME);
    int rc = rmt_cmd_set_ext(c, "consumerGroup", op->group);
    if (!rc) rc = rmt_cmd_set_ext(c, "topic", real);
    if (!rc) rc = rmt_cmd_set_ext_int(c, "queueId", h.queue_id);
    if (!rc) rc = rmt_cmd_set_ext(c, "extraInfo", (const char *)op->props.data);
    if (!rc) rc = rmt_cmd_set_ext_int(c, "offset", h.offset);
    if (!rc) rc = rmt_cmd_set_ext_int(c, "invisibleTime", op->i1);
    if (!rc) rc = rmt_cmd_set_ext(c, "bname", h.broker);
    if (!rc)
        rc = rmt_client_invoke(px->brk, addr, c, (int)px->cfg.request_timeout_ms, change_resp, op);
    if (rc)
        change_resp(rc, NULL, op);
}

static void change_route(int status, const struct cli_route *r, const char *errmsg, void *ud)
{
    struct px_op *op = ud;
    if (status) {
        px_reply_status(op->call, &apache__rocketmq__v2__change_invisible_duration_response__descriptor,
                        px_code_from_route(status), "%s", errmsg ? errmsg : "route lookup failed");
        px_op_put(op);
        return;
    }
    change_send(op);
}

/* Sends the change once its handle (op->props) is final. */
static void change_go(struct px_op *op)
{
    struct px_handle h;
    if (px_handle_decode((const char *)op->props.data, op->props.len - 1, &h)) {
        px_reply_status(op->call, &apache__rocketmq__v2__change_invisible_duration_response__descriptor,
                        PXC(INVALID_RECEIPT_HANDLE), "receipt handle is malformed");
        px_op_put(op);
        return;
    }
    if (px_broker_addr(op->px, op->topic, h.broker)) {
        change_send(op);
    } else {
        int rc = px_with_route(op->px, op->topic, change_route, op);
        if (rc)
            change_route(rc, NULL, "route lookup could not start", op);
    }
}

static void change_taken(void *ud, int status, const char *handle)
{
    struct px_op *op = ud;
    const ProtobufCMessageDescriptor *d = &apache__rocketmq__v2__change_invisible_duration_response__descriptor;
    if (status || set_handle(op, handle)) {
        px_reply_status(op->call, d, status ? px_code_from_errno(status) : PXC(INTERNAL_SERVER_ERROR), "%s",
                        status ? "the proxy is shutting down" : "out of memory");
        px_op_put(op);
        return;
    }
    change_go(op);
}

static void change_invisible(struct px *px, struct px_grpc_call *call, const uint8_t *msg, size_t len)
{
    const ProtobufCMessageDescriptor *d = &apache__rocketmq__v2__change_invisible_duration_response__descriptor;
    Apache__Rocketmq__V2__ChangeInvisibleDurationRequest *req =
        (void *)px_unpack(&apache__rocketmq__v2__change_invisible_duration_request__descriptor, msg, len);
    if (!req) {
        px_reply_status(call, d, PXC(BAD_REQUEST), "cannot decode ChangeInvisibleDurationRequest");
        return;
    }
    if (!px_check_group_topic(call, d, req->group, req->topic))
        return;
    struct px_handle h;
    if (!req->receipt_handle || px_handle_decode(req->receipt_handle, strlen(req->receipt_handle), &h)) {
        px_reply_status(call, d, PXC(INVALID_RECEIPT_HANDLE), "receipt handle is malformed");
        return;
    }
    int64_t inv = dur_ms(req->invisible_duration);
    if (!req->invisible_duration || inv < 0 || inv > px->cfg.max_invisible_ms) {
        px_reply_status(call, d, PXC(ILLEGAL_INVISIBLE_TIME), "invisible duration must be 0..%" PRId64 " ms",
                        px->cfg.max_invisible_ms);
        return;
    }
    struct px_op *op = px_op_get(px, call);
    if (!op) {
        px_reply_status(call, d, PXC(INTERNAL_SERVER_ERROR), "out of memory");
        return;
    }
    px_copy(op->group, sizeof op->group, req->group->name);
    px_copy(op->topic, sizeof op->topic, req->topic->name);
    op->i1 = inv;
    char latest[PX_HANDLE_MAX];
    int taken = px_renew_take(px, op->group, op->topic, req->receipt_handle, latest, sizeof latest, change_taken, op);
    if (taken == 2)
        return;
    if (set_handle(op, taken == 1 ? latest : req->receipt_handle)) {
        px_reply_status(call, d, PXC(INTERNAL_SERVER_ERROR), "out of memory");
        px_op_put(op);
        return;
    }
    change_go(op);
}

static void dlq_reply(struct px_op *op, px_code code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void dlq_reply(struct px_op *op, px_code code, const char *fmt, ...)
{
    char text[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    px_reply_status(op->call, &apache__rocketmq__v2__forward_message_to_dead_letter_queue_response__descriptor,
                    code, "%s", text);
    px_op_put(op);
}

static void dlq_ack_resp(int status, rmt_cmd *resp, void *ud)
{
    struct px_op *op = ud;
    if (status)
        dlq_reply(op, px_code_from_errno(status), "moved to the DLQ, but the ack failed: %s", strerror(-status));
    else if (resp->code != RMT_RESP_SUCCESS)
        dlq_reply(op, px_code_from_remoting(PX_ROP_ACK, resp->code),
                  "moved to the DLQ, but the ack was refused (%d): %s", resp->code,
                  rmt_cmd_remark(resp) ? rmt_cmd_remark(resp) : "");
    else
        dlq_reply(op, PXC(OK), "OK");
}

static void dlq_back_resp(int status, rmt_cmd *resp, void *ud)
{
    struct px_op *op = ud;
    if (status) {
        dlq_reply(op, px_code_from_errno(status), "broker %s: %s", op->broker, strerror(-status));
        return;
    }
    if (resp->code != RMT_RESP_SUCCESS) {
        dlq_reply(op, px_code_from_remoting(PX_ROP_OTHER, resp->code), "broker %s: CONSUMER_SEND_MSG_BACK answered %d: %s",
                  op->broker, resp->code, rmt_cmd_remark(resp) ? rmt_cmd_remark(resp) : "");
        return;
    }
    struct px_handle h;
    px_handle_decode((const char *)op->props.data, op->props.len - 1, &h);
    ack_send(op, &h, dlq_ack_resp);
}

static void dlq_send(struct px_op *op)
{
    struct px *px = op->px;
    struct px_handle h;
    px_handle_decode((const char *)op->props.data, op->props.len - 1, &h);
    const char *addr = px_broker_addr(px, op->topic, h.broker);
    if (!addr) {
        dlq_reply(op, PXC(INVALID_RECEIPT_HANDLE), "receipt handle names an unknown broker");
        return;
    }
    if (h.commit_log_offset < 0) {
        dlq_reply(op, PXC(INVALID_RECEIPT_HANDLE), "receipt handle has no commit log offset");
        return;
    }
    px_copy(op->broker, sizeof op->broker, h.broker);
    rmt_cmd *c = &op->cmd;
    px_cmd_reset(px, c, RMT_REQ_CONSUMER_SEND_MSG_BACK);
    int rc = rmt_cmd_set_ext_int(c, "offset", h.commit_log_offset);
    if (!rc) rc = rmt_cmd_set_ext(c, "group", op->group);
    if (!rc) rc = rmt_cmd_set_ext_int(c, "delayLevel", -1);
    if (!rc) rc = rmt_cmd_set_ext(c, "originMsgId", op->str);
    if (!rc) rc = rmt_cmd_set_ext(c, "originTopic", op->topic);
    if (!rc) rc = rmt_cmd_set_ext(c, "unitMode", "false");
    if (!rc) rc = rmt_cmd_set_ext_int(c, "maxReconsumeTimes", op->i1);
    if (!rc) rc = rmt_cmd_set_ext(c, "bname", h.broker);
    if (!rc)
        rc = rmt_client_invoke(px->brk, addr, c, (int)px->cfg.request_timeout_ms, dlq_back_resp, op);
    if (rc)
        dlq_back_resp(rc, NULL, op);
}

static void dlq_route(int status, const struct cli_route *r, const char *errmsg, void *ud)
{
    struct px_op *op = ud;
    if (status) {
        dlq_reply(op, px_code_from_route(status), "%s", errmsg ? errmsg : "route lookup failed");
        return;
    }
    dlq_send(op);
}

/* Starts the dead-lettering once its handle (op->props) is final. */
static void dlq_go(struct px_op *op)
{
    struct px_handle h;
    if (px_handle_decode((const char *)op->props.data, op->props.len - 1, &h)) {
        dlq_reply(op, PXC(INVALID_RECEIPT_HANDLE), "receipt handle is malformed");
        return;
    }
    if (px_broker_addr(op->px, op->topic, h.broker)) {
        dlq_send(op);
    } else {
        int rc = px_with_route(op->px, op->topic, dlq_route, op);
        if (rc)
            dlq_route(rc, NULL, "route lookup could not start", op);
    }
}

static void dlq_taken(void *ud, int status, const char *handle)
{
    struct px_op *op = ud;
    if (status)
        dlq_reply(op, px_code_from_errno(status), "the proxy is shutting down");
    else if (set_handle(op, handle))
        dlq_reply(op, PXC(INTERNAL_SERVER_ERROR), "out of memory");
    else
        dlq_go(op);
}

static void forward_dlq(struct px *px, struct px_grpc_call *call, const uint8_t *msg, size_t len)
{
    const ProtobufCMessageDescriptor *d = &apache__rocketmq__v2__forward_message_to_dead_letter_queue_response__descriptor;
    Apache__Rocketmq__V2__ForwardMessageToDeadLetterQueueRequest *req =
        (void *)px_unpack(&apache__rocketmq__v2__forward_message_to_dead_letter_queue_request__descriptor, msg, len);
    if (!req) {
        px_reply_status(call, d, PXC(BAD_REQUEST), "cannot decode ForwardMessageToDeadLetterQueueRequest");
        return;
    }
    if (!px_check_group_topic(call, d, req->group, req->topic))
        return;
    struct px_handle h;
    if (!req->receipt_handle || px_handle_decode(req->receipt_handle, strlen(req->receipt_handle), &h)) {
        px_reply_status(call, d, PXC(INVALID_RECEIPT_HANDLE), "receipt handle is malformed");
        return;
    }
    if (!req->message_id || strlen(req->message_id) >= 64) {
        px_reply_status(call, d, PXC(ILLEGAL_MESSAGE_ID), "illegal message id");
        return;
    }
    struct px_op *op = px_op_get(px, call);
    if (!op) {
        px_reply_status(call, d, PXC(INTERNAL_SERVER_ERROR), "out of memory");
        return;
    }
    px_copy(op->group, sizeof op->group, req->group->name);
    px_copy(op->topic, sizeof op->topic, req->topic->name);
    px_copy(op->str, sizeof op->str, req->message_id);
    op->i1 = req->max_delivery_attempts > 0 ? req->max_delivery_attempts - 1 : 0;
    char latest[PX_HANDLE_MAX];
    int taken = px_renew_take(px, op->group, op->topic, req->receipt_handle, latest, sizeof latest, dlq_taken, op);
    if (taken == 2)
        return;
    if (set_handle(op, taken == 1 ? latest : req->receipt_handle)) {
        dlq_reply(op, PXC(INTERNAL_SERVER_ERROR), "out of memory");
        return;
    }
    dlq_go(op);
}

void px_receive_register(struct px *px)
{
    px_rpc_register(px, "ReceiveMessage", PX_GRPC_SERVER_STREAMING, receive_message, NULL);
    px_rpc_register(px, "AckMessage", PX_GRPC_UNARY, ack_message, NULL);
    px_rpc_register(px, "ChangeInvisibleDuration", PX_GRPC_UNARY, change_invisible, NULL);
    px_rpc_register(px, "ForwardMessageToDeadLetterQueue", PX_GRPC_UNARY, forward_dlq, NULL);
}
