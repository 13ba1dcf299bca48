/*
 * SendMessage and EndTransaction.
 *
 * Each message of a SendMessageRequest becomes one SEND_MESSAGE_V2 to a
 * broker master of the topic: queue by round robin, or by the hash of the
 * message group for FIFO messages (__SHARDINGKEY). Delay messages carry
 * TIMER_DELIVER_MS (bounded by timerMaxDelaySec, like the broker), and
 * transactional ones TRAN_MSG + PGROUP with the prepared sys flag so the
 * broker stores a half message. A failed attempt (no answer, or an answer
 * RocketMQ's producer retries on) is retried on another broker, except for
 * FIFO messages whose queue is fixed by their group.
 *
 * The transaction id given back encodes broker address and offsets
 * (receipt.h), so EndTransaction needs no proxy state.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "producer.h"
#include "proxy.h"
#include "receipt.h"

#define MAX_BATCH 1024
#define MAX_ATTEMPTS 3

struct send_res {
    px_code code;
    int64_t offset;
    char msg_id[64];
    char txid[256];
    char err[160];
};

void px_tx_group(const char *topic, char *out, size_t cap)
{
    snprintf(out, cap, "PROXY_PID_%s", topic);
}

static int prop_add(struct buf *b, const char *name, const char *val, size_t vlen)
{
    for (size_t i = 0; i < vlen; i++)
        if (val[i] == MSG_NAME_VALUE_SEPARATOR || val[i] == MSG_PROPERTY_SEPARATOR)
            return -EINVAL;
    size_t nl = strlen(name);
    if (buf_reserve(b, nl + vlen + 2))
        return -ENOMEM;
    memcpy(b->data + b->len, name, nl);
    b->len += nl;
    b->data[b->len++] = MSG_NAME_VALUE_SEPARATOR;
    memcpy(b->data + b->len, val, vlen);
    b->len += vlen;
    b->data[b->len++] = MSG_PROPERTY_SEPARATOR;
    return 0;
}

static bool retriable(int code)
{
    return code == RMT_RESP_TOPIC_NOT_EXIST || code == RMT_RESP_SERVICE_NOT_AVAILABLE ||
           code == RMT_RESP_SYSTEM_ERROR || code == RMT_RESP_NO_PERMISSION ||
           code == RMT_RESP_SYSTEM_BUSY;
}

static void send_attempt(struct px_op *op);

static void parent_done(struct px_op *parent)
{
    struct px *px = parent->px;
    int n = (int)parent->i1;
    struct send_res *res = (struct send_res *)parent->aux.data;
    Apache__Rocketmq__V2__SendResultEntry ent[n > 0 ? n : 1];
    Apache__Rocketmq__V2__SendResultEntry *entp[n > 0 ? n : 1];
    Apache__Rocketmq__V2__Status st[n > 0 ? n : 1];
    Apache__Rocketmq__V2__Status top = APACHE__ROCKETMQ__V2__STATUS__INIT;
    top.code = PXC(OK);
    top.message = (char *)"OK";
    for (int i = 0; i < n; i++) {
        apache__rocketmq__v2__status__init(&st[i]);
        st[i].code = res[i].code;
        st[i].message = res[i].code == PXC(OK) ? (char *)"OK" : res[i].err;
        if (res[i].code != PXC(OK) && top.code == PXC(OK)) {
            top.code = res[i].code;
            top.message = res[i].err;
        }
        apache__rocketmq__v2__send_result_entry__init(&ent[i]);
        ent[i].status = &st[i];
        ent[i].message_id = res[i].msg_id;
        ent[i].transaction_id = res[i].txid;
        ent[i].offset = res[i].offset;
        ent[i].recall_handle = (char *)"";
        entp[i] = &ent[i];
        if (res[i].code == PXC(OK))
            px->stats.sends++;
        else
            px->stats.send_failures++;
    }
    Apache__Rocketmq__V2__SendMessageResponse resp = APACHE__ROCKETMQ__V2__SEND_MESSAGE_RESPONSE__INIT;
    resp.status = &top;
    resp.n_entries = (size_t)n;
    resp.entries = entp;
    px_reply(parent->call, &resp.base);
    px_op_put(parent);
}

static void child_finish(struct px_op *op, px_code code, const char *err)
{
    struct px_op *parent = op->parent;
    struct send_res *r = &((struct send_res *)parent->aux.data)[op->index];
    r->code = code;
    if (code != PXC(OK))
        snprintf(r->err, sizeof r->err, "%.*s", (int)sizeof r->err - 1, err ? err : px_code_name(code));
    px_op_put(op);
    if (--parent->pending == 0)
        parent_done(parent);
}

static void send_resp(int status, rmt_cmd *resp, void *ud)
{
    struct px_op *op = ud;
    struct px *px = op->px;
    char err[480];
    int code = -1;
    if (status == 0 && (resp->code == RMT_RESP_SUCCESS || resp->code == RMT_RESP_FLUSH_DISK_TIMEOUT ||
                        resp->code == RMT_RESP_FLUSH_SLAVE_TIMEOUT ||
                        resp->code == RMT_RESP_SLAVE_NOT_AVAILABLE)) {
        struct send_res *r = &((struct send_res *)op->parent->aux.data)[op->index];
        int64_t qoff = -1;
        const char *omid = rmt_cmd_ext(resp, "msgId");
        if (rmt_cmd_ext_int(resp, "queueOffset", &qoff) || !omid) {
            child_finish(op, PXC(INTERNAL_SERVER_ERROR), "broker answered without msgId/queueOffset");
            return;
        }
        r->offset = qoff;
        if (op->i1 & MSG_SYSFLAG_TRANSACTION_PREPARED) {
            struct px_txid t = { 0 };
            struct msg_host h;
            size_t ol = strcspn(omid, ",");
            if (msg_offset_id_decode(omid, ol, &h, &t.commit_log_offset)) {
                child_finish(op, PXC(INTERNAL_SERVER_ERROR), "broker answered an unreadable msgId");
                return;
            }
            px_copy(t.addr, sizeof t.addr, op->addr);
            t.tran_state_offset = qoff;
            const char *btx = rmt_cmd_ext(resp, "transactionId");
            snprintf(t.broker_txid, sizeof t.broker_txid, "%.127s", btx && *btx ? btx : op->str);
            if (px_txid_encode(&t, r->txid, sizeof r->txid) < 0) {
                child_finish(op, PXC(INTERNAL_SERVER_ERROR), "transaction id too long");
                return;
            }
        }
        child_finish(op, px_code_from_remoting(PX_ROP_SEND, resp->code),
                     resp->code ? "stored, but not replicated/flushed in time" : NULL);
        return;
    }
    if (status) {
        snprintf(err, sizeof err, "broker %s (%s): %s", op->broker, op->addr, strerror(-status));
    } else {
        code = resp->code;
        snprintf(err, sizeof err, "broker %s refused: %s", op->broker,
                 rmt_cmd_remark(resp) ? rmt_cmd_remark(resp) : "no remark");
    }
    bool fifo = op->group[0] != 0;
    if (!fifo && op->attempts < MAX_ATTEMPTS && status != -ECANCELED && (status != 0 || retriable(code)) &&
        !px->stopping) {
        log_warn("proxy: send of %s to %s failed (%s); trying another broker", op->str, op->broker, err);
        send_attempt(op);
        return;
    }
    child_finish(op, status ? px_code_from_errno(status) : px_code_from_remoting(PX_ROP_SEND, code), err);
}

static void send_to_route(int status, const struct cli_route *r, const char *errmsg, void *ud)
{
    struct px_op *op = ud;
    struct px *px = op->px;
    if (status) {
        child_finish(op, px_code_from_route(status), errmsg ? errmsg : strerror(-status));
        return;
    }
    struct cli_mq mq;
    int rc = op->group[0] ? cli_route_select_hash(r, op->group, strlen(op->group), &mq)
                          : cli_route_select_rr(r, &px->rr, op->attempts ? op->broker : NULL, &mq);
    if (rc) {
        child_finish(op, PXC(FORBIDDEN), "topic has no writable queue");
        return;
    }
    const char *addr = cli_route_addr(r, mq.broker, CLI_MASTER_ID);
    if (!addr) {
        child_finish(op, PXC(INTERNAL_SERVER_ERROR), "broker has no master address");
        return;
    }
    px_copy(op->broker, sizeof op->broker, mq.broker);
    px_copy(op->addr, sizeof op->addr, addr);
    op->queue_id = mq.queue_id;
    char pgroup[CLI_NAME_MAX + 16];
    px_tx_group(op->topic, pgroup, sizeof pgroup);
    px_cmd_reset(px, &op->cmd, RMT_REQ_SEND_MESSAGE_V2);
    struct cli_send_header h = {
        .group = pgroup, .topic = op->topic, .broker = op->broker,
        .props = (const char *)op->props.data, .props_len = (uint32_t)op->props.len,
        .queue_id = op->queue_id, .sys_flag = (int32_t)op->i1, .flag = 0, .born_ts = op->i2,
    };
    rc = cli_send_header_build(&op->cmd, &h);
    if (rc) {
        child_finish(op, PXC(INTERNAL_SERVER_ERROR), "cannot build the send request");
        return;
    }
    rmt_cmd_set_body(&op->cmd, op->body.data, (uint32_t)op->body.len);
    op->attempts++;
    rc = rmt_client_invoke(px->brk, op->addr, &op->cmd, (int)px->cfg.request_timeout_ms, send_resp, op);
    if (rc)
        send_resp(rc, NULL, op);
}

static void send_attempt(struct px_op *op)
{
    const struct cli_route *r = cli_route_cached(op->px->cli, op->topic);
    if (r) {
        send_to_route(0, r, NULL, op);
        return;
    }
    int rc = px_with_route(op->px, op->topic, send_to_route, op);
    if (rc)
        send_to_route(rc, NULL, "route lookup could not start", op);
}

/* Checks one message and builds its properties into op->props. Returns OK
 * or the code to refuse it with (reason in err). */
static px_code prepare(struct px *px, struct px_op *op, const Apache__Rocketmq__V2__Message *m,
                       char *err, size_t errlen)
{
    const Apache__Rocketmq__V2__SystemProperties *sp = m->system_properties;
    if (!m->topic || !px_valid_name(m->topic->name, CLI_NAME_MAX - 1)) {
        snprintf(err, errlen, "illegal topic name");
        return PXC(ILLEGAL_TOPIC);
    }
    if (!sp) {
        snprintf(err, errlen, "message has no system properties");
        return PXC(BAD_REQUEST);
    }
    if ((int64_t)m->body.len > px->cfg.max_message_size) {
        snprintf(err, errlen, "body of %zu bytes exceeds the limit of %" PRId64, m->body.len,
                 px->cfg.max_message_size);
        return PXC(MESSAGE_BODY_TOO_LARGE);
    }
    if (m->body.len == 0) {
        snprintf(err, errlen, "message body is empty");
        return PXC(MESSAGE_BODY_EMPTY);
    }
    px_copy(op->topic, sizeof op->topic, m->topic->name);
    struct buf *p = &op->props;
    buf_reset(p);
    int64_t now = px_now_ms();
    if (sp->opt_tag_case == APACHE__ROCKETMQ__V2__SYSTEM_PROPERTIES__OPT_TAG_TAG) {
        const char *t = sp->tag;
        bool blank = true;
        for (const char *c = t; *c; c++)
            if (*c != ' ' && *c != '\t')
                blank = false;
        if (blank || strchr(t, '|') || prop_add(p, MSG_PROP_TAGS, t, strlen(t))) {
            snprintf(err, errlen, "illegal tag '%s'", t);
            return PXC(ILLEGAL_MESSAGE_TAG);
        }
    }
    if (sp->n_keys) {
        char keys[4096];
        size_t kl = 0;
        for (size_t i = 0; i < sp->n_keys; i++) {
            const char *k = sp->keys[i];
            size_t l = strlen(k);
            if (l == 0 || strpbrk(k, " \t\001\002") || kl + l + 1 >= sizeof keys) {
                snprintf(err, errlen, "illegal message key '%s'", k);
                return PXC(ILLEGAL_MESSAGE_KEY);
            }
            if (kl)
                keys[kl++] = MSG_KEY_SEPARATOR;
            memcpy(keys + kl, k, l);
            kl += l;
        }
        if (prop_add(p, MSG_PROP_KEYS, keys, kl))
            return PXC(INTERNAL_SERVER_ERROR);
    }
    const char *mid = sp->message_id;
    if (!mid || !*mid) {
        msg_uniq_next(&px->uniq, now, op->str);
    } else {
        size_t l = strlen(mid);
        if (l >= 64 || strpbrk(mid, "\001\002 ")) {
            snprintf(err, errlen, "illegal message id");
            return PXC(ILLEGAL_MESSAGE_ID);
        }
        memcpy(op->str, mid, l + 1);
    }
    prop_add(p, MSG_PROP_UNIQ_CLIENT_MESSAGE_ID_KEYIDX, op->str, strlen(op->str));
    prop_add(p, MSG_PROP_WAIT_STORE_MSG_OK, "true", 4);
    bool has_group = sp->opt_message_group_case ==
                     APACHE__ROCKETMQ__V2__SYSTEM_PROPERTIES__OPT_MESSAGE_GROUP_MESSAGE_GROUP;
    bool tx = sp->message_type == APACHE__ROCKETMQ__V2__MESSAGE_TYPE__TRANSACTION;
    bool delay = sp->delivery_timestamp != NULL;
    if (tx && (has_group || delay)) {
        snprintf(err, errlen, "a transactional message cannot have a message group or delivery time");
        return PXC(MESSAGE_PROPERTY_CONFLICT_WITH_TYPE);
    }
    op->group[0] = 0;
    if (has_group) {
        size_t l = strlen(sp->message_group);
        if (l == 0 || l > 64 || strpbrk(sp->message_group, "\001\002")) {
            snprintf(err, errlen, "illegal message group");
            return PXC(ILLEGAL_MESSAGE_GROUP);
        }
        memcpy(op->group, sp->message_group, l + 1);
        prop_add(p, MSG_PROP_SHARDING_KEY, op->group, l);
    }
    if (delay) {
        int64_t at = sp->delivery_timestamp->seconds * 1000 + sp->delivery_timestamp->nanos / 1000000;
        if (at - now > px->cfg.timer_max_delay_sec * 1000) {
            snprintf(err, errlen, "delivery time is more than %" PRId64 " s ahead", px->cfg.timer_max_delay_sec);
            return PXC(ILLEGAL_DELIVERY_TIME);
        }
        if (at > now) {
            char v[24];
            int vl = snprintf(v, sizeof v, "%" PRId64, at);
            prop_add(p, MSG_PROP_TIMER_DELIVER_MS, v, (size_t)vl);
        }
    }
    op->i1 = 0;
    if (tx) {
        char g[CLI_NAME_MAX + 16];
        px_tx_group(op->topic, g, sizeof g);
        prop_add(p, MSG_PROP_TRANSACTION_PREPARED, "true", 4);
        prop_add(p, MSG_PROP_PRODUCER_GROUP, g, strlen(g));
        if (sp->orphaned_transaction_recovery_duration &&
            sp->orphaned_transaction_recovery_duration->seconds > 0) {
            char v[24];
            int vl = snprintf(v, sizeof v, "%" PRId64, sp->orphaned_transaction_recovery_duration->seconds);
            prop_add(p, MSG_PROP_CHECK_IMMUNITY_TIME_IN_SECONDS, v, (size_t)vl);
        }
        op->i1 = MSG_SYSFLAG_TRANSACTION_PREPARED;
    }
    if (sp->opt_trace_context_case ==
            APACHE__ROCKETMQ__V2__SYSTEM_PROPERTIES__OPT_TRACE_CONTEXT_TRACE_CONTEXT &&
        *sp->trace_context && prop_add(p, "TRACE_CONTEXT", sp->trace_context, strlen(sp->trace_context))) {
        snprintf(err, errlen, "illegal trace context");
        return PXC(BAD_REQUEST);
    }
    if ((int64_t)m->n_user_properties > px->cfg.max_user_props) {
        snprintf(err, errlen, "too many user properties (limit %" PRId64 ")", px->cfg.max_user_props);
        return PXC(MESSAGE_PROPERTIES_TOO_LARGE);
    }
    for (size_t i = 0; i < m->n_user_properties; i++) {
        const char *k = m->user_properties[i]->key, *v = m->user_properties[i]->value;
        size_t kl = strlen(k);
        if (kl == 0 || px_prop_reserved(k, kl) || strpbrk(k, "\001\002")) {
            snprintf(err, errlen, "property key '%s' is reserved or illegal", k);
            return PXC(ILLEGAL_MESSAGE_PROPERTY_KEY);
        }
        if (prop_add(p, k, v, strlen(v))) {
            snprintf(err, errlen, "property '%s' has an illegal value", k);
            return PXC(ILLEGAL_MESSAGE_PROPERTY_KEY);
        }
    }
    if (p->len > MSG_PROPERTIES_MAX) {
        snprintf(err, errlen, "properties take %zu bytes, over %d", p->len, MSG_PROPERTIES_MAX);
        return PXC(MESSAGE_PROPERTIES_TOO_LARGE);
    }
    op->i2 = sp->born_timestamp ? sp->born_timestamp->seconds * 1000 + sp->born_timestamp->nanos / 1000000
                                : now;
    buf_reset(&op->body);
    if (buf_append(&op->body, m->body.data, m->body.len))
        return PXC(INTERNAL_SERVER_ERROR);
    return PXC(OK);
}

static void send_message(struct px *px, struct px_grpc_call *call, const uint8_t *msg, size_t len)
{
    const ProtobufCMessageDescriptor *d = &apache__rocketmq__v2__send_message_response__descriptor;
    Apache__Rocketmq__V2__SendMessageRequest *req =
        (void *)px_unpack(&apache__rocketmq__v2__send_message_request__descriptor, msg, len);
    if (!req) {
        px_reply_status(call, d, PXC(BAD_REQUEST), "cannot decode SendMessageRequest");
        return;
    }
    if (req->n_messages == 0 || req->n_messages > MAX_BATCH) {
        px_reply_status(call, d, PXC(BAD_REQUEST), "a request carries 1 to %d messages", MAX_BATCH);
        return;
    }
    if (px->stopping) {
        px_reply_status(call, d, PXC(INTERNAL_SERVER_ERROR), "proxy is shutting down");
        return;
    }
    struct px_op *parent = px_op_get(px, call);
    if (!parent || buf_reserve(&parent->aux, req->n_messages * sizeof(struct send_res))) {
        px_op_put(parent);
        px_reply_status(call, d, PXC(INTERNAL_SERVER_ERROR), "out of memory");
        return;
    }
    int n = (int)req->n_messages;
    parent->i1 = n;
    parent->pending = n + 1;
    struct send_res *res = (struct send_res *)parent->aux.data;
    memset(res, 0, (size_t)n * sizeof *res);
    for (int i = 0; i < n; i++) {
        const Apache__Rocketmq__V2__Message *m = req->messages[i];
        struct px_op *op = px_op_get(px, NULL);
        if (!op) {
            res[i].code = PXC(INTERNAL_SERVER_ERROR);
            snprintf(res[i].err, sizeof res[i].err, "out of memory");
            parent->pending--;
            continue;
        }
        op->parent = parent;
        op->index = i;
        px_code c = prepare(px, op, m, res[i].err, sizeof res[i].err);
        px_copy(res[i].msg_id, sizeof res[i].msg_id, op->str);
        if (c != PXC(OK)) {
            res[i].code = c;
            px_op_put(op);
            parent->pending--;
            continue;
        }
        send_attempt(op);
    }
    if (--parent->pending == 0)
        parent_done(parent);
}

static void end_tx_resp(int status, rmt_cmd *resp, void *ud)
{
    struct px_op *op = ud;
    const ProtobufCMessageDescriptor *d = &apache__rocketmq__v2__end_transaction_response__descriptor;
    if (status)
        px_reply_status(op->call, d, px_code_from_errno(status), "broker %s: %s", op->addr,
                        strerror(-status));
    else if (resp->code != RMT_RESP_SUCCESS)
        px_reply_status(op->call, d, px_code_from_remoting(PX_ROP_OTHER, resp->code), "broker: %s",
                        rmt_cmd_remark(resp) ? rmt_cmd_remark(resp) : "refused");
    else
        px_reply_status(op->call, d, PXC(OK), "OK");
    px_op_put(op);
}

static void end_transaction(struct px *px, struct px_grpc_call *call, const uint8_t *msg, size_t len)
{
    const ProtobufCMessageDescriptor *d = &apache__rocketmq__v2__end_transaction_response__descriptor;
    Apache__Rocketmq__V2__EndTransactionRequest *req =
        (void *)px_unpack(&apache__rocketmq__v2__end_transaction_request__descriptor, msg, len);
    if (!req) {
        px_reply_status(call, d, PXC(BAD_REQUEST), "cannot decode EndTransactionRequest");
        return;
    }
    if (!req->topic || !px_valid_name(req->topic->name, CLI_NAME_MAX - 1)) {
        px_reply_status(call, d, PXC(ILLEGAL_TOPIC), "illegal topic name");
        return;
    }
    struct px_txid t;
    if (!req->transaction_id || px_txid_decode(req->transaction_id, &t)) {
        px_reply_status(call, d, PXC(INVALID_TRANSACTION_ID), "transaction id was not issued by this proxy");
        return;
    }
    int how;
    if (req->resolution == APACHE__ROCKETMQ__V2__TRANSACTION_RESOLUTION__COMMIT)
        how = MSG_SYSFLAG_TRANSACTION_COMMIT;
    else if (req->resolution == APACHE__ROCKETMQ__V2__TRANSACTION_RESOLUTION__ROLLBACK)
        how = MSG_SYSFLAG_TRANSACTION_ROLLBACK;
    else {
        px_reply_status(call, d, PXC(BAD_REQUEST), "transaction resolution must be COMMIT or ROLLBACK");
        return;
    }
    struct px_op *op = px_op_get(px, call);
    if (!op) {
        px_reply_status(call, d, PXC(INTERNAL_SERVER_ERROR), "out of memory");
        return;
    }
    char g[CLI_NAME_MAX + 16];
    px_tx_group(req->topic->name, g, sizeof g);
    px_copy(op->addr, sizeof op->addr, t.addr);
    px_cmd_reset(px, &op->cmd, RMT_REQ_END_TRANSACTION);
    int rc = rmt_cmd_set_ext(&op->cmd, "producerGroup", g);
    if (!rc) rc = rmt_cmd_set_ext(&op->cmd, "topic", req->topic->name);
    if (!rc) rc = rmt_cmd_set_ext_int(&op->cmd, "tranStateTableOffset", t.tran_state_offset);
    if (!rc) rc = rmt_cmd_set_ext_int(&op->cmd, "commitLogOffset", t.commit_log_offset);
    if (!rc) rc = rmt_cmd_set_ext_int(&op->cmd, "commitOrRollback", how);
    if (!rc) rc = rmt_cmd_set_ext(&op->cmd, "fromTransactionCheck",
                                  req->source == APACHE__ROCKETMQ__V2__TRANSACTION_SOURCE__SOURCE_SERVER_CHECK
                                      ? "true" : "false");
    if (!rc) rc = rmt_cmd_set_ext(&op->cmd, "msgId", req->message_id ? req->message_id : "");
    if (!rc) rc = rmt_cmd_set_ext(&op->cmd, "transactionId", t.broker_txid);
    if (!rc)
        rc = rmt_client_invoke(px->brk, op->addr, &op->cmd, (int)px->cfg.request_timeout_ms, end_tx_resp, op);
    if (rc)
        end_tx_resp(rc, NULL, op);
}

void px_send_register(struct px *px)
{
    px_rpc_register(px, "SendMessage", PX_GRPC_UNARY, send_message, NULL);
    px_rpc_register(px, "EndTransaction", PX_GRPC_UNARY, end_transaction, NULL);
}
