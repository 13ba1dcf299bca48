/*
 * QueryRoute and QueryAssignment. The proxy presents itself as the only
 * endpoint: every message queue names its real broker and queue id, but the
 * broker's endpoints are the proxy's own address (the access point the
 * client used, or advertisedAddress), so clients send everything here.
 *
 * Assignments follow RocketMQ's proxy: a FIFO group gets every readable
 * queue (ordered pops per queue); any other group gets one entry per broker
 * with queue id -1, which pops from all of that broker's queues.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "proxy.h"

typedef Apache__Rocketmq__V2__MessageQueue pb_mq;

/* Fills the proxy's endpoints: the client's access point when it sent one. */
static void own_endpoints(struct px *px, struct px_op *op, const Apache__Rocketmq__V2__Endpoints *ep)
{
    if (ep && ep->n_addresses > 0 && ep->addresses[0]->host && *ep->addresses[0]->host) {
        snprintf(op->str, sizeof op->str, "%s", ep->addresses[0]->host);
        op->i1 = ep->addresses[0]->port;
        op->i2 = ep->scheme;
        return;
    }
    char host[128];
    int port = px->port;
    if (px->cfg.advertised[0] && !rmt_parse_addr(px->cfg.advertised, host, sizeof host, &port)) {
        snprintf(op->str, sizeof op->str, "%s", host);
    } else {
        snprintf(op->str, sizeof op->str, "%s", px->ip);
        port = px->port;
    }
    op->i1 = port;
    op->i2 = strchr(op->str, ':') ? APACHE__ROCKETMQ__V2__ADDRESS_SCHEME__IPv6
                                  : APACHE__ROCKETMQ__V2__ADDRESS_SCHEME__IPv4;
    for (const char *c = op->str; *c; c++)
        if ((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z')) {
            if (!strchr(op->str, ':'))
                op->i2 = APACHE__ROCKETMQ__V2__ADDRESS_SCHEME__DOMAIN_NAME;
            break;
        }
}

static Apache__Rocketmq__V2__Permission perm_of(int perm)
{
    bool r = perm & CLI_PERM_READ, w = perm & CLI_PERM_WRITE;
    if (r && w)
        return APACHE__ROCKETMQ__V2__PERMISSION__READ_WRITE;
    if (r)
        return APACHE__ROCKETMQ__V2__PERMISSION__READ;
    if (w)
        return APACHE__ROCKETMQ__V2__PERMISSION__WRITE;
    return APACHE__ROCKETMQ__V2__PERMISSION__NONE;
}

static Apache__Rocketmq__V2__MessageType all_types[] = {
    APACHE__ROCKETMQ__V2__MESSAGE_TYPE__NORMAL, APACHE__ROCKETMQ__V2__MESSAGE_TYPE__FIFO,
    APACHE__ROCKETMQ__V2__MESSAGE_TYPE__DELAY, APACHE__ROCKETMQ__V2__MESSAGE_TYPE__TRANSACTION,
};

struct route_pb {
    Apache__Rocketmq__V2__Address addr;
    Apache__Rocketmq__V2__Address *addrs[1];
    Apache__Rocketmq__V2__Endpoints ep;
    Apache__Rocketmq__V2__Resource topic;
    int nbrokers;
    Apache__Rocketmq__V2__Broker *brokers;
    int nmq;
    pb_mq *mqs;
    pb_mq **mqp;
};

static int route_pb_build(struct route_pb *b, struct px_op *op, const struct cli_route *r,
                          bool assignment, bool fifo)
{
    memset(b, 0, sizeof *b);
    apache__rocketmq__v2__address__init(&b->addr);
    b->addr.host = op->str;
    b->addr.port = (int32_t)op->i1;
    b->addrs[0] = &b->addr;
    apache__rocketmq__v2__endpoints__init(&b->ep);
    b->ep.scheme = (Apache__Rocketmq__V2__AddressScheme)op->i2;
    b->ep.n_addresses = 1;
    b->ep.addresses = b->addrs;
    apache__rocketmq__v2__resource__init(&b->topic);
    b->topic.name = op->topic;
    b->topic.resource_namespace = (char *)"";
    int total = 0;
    for (int i = 0; i < r->nqd; i++) {
        int n = r->qd[i].read_queues > r->qd[i].write_queues ? r->qd[i].read_queues : r->qd[i].write_queues;
        total += n > 0 ? n : 0;
    }
    b->brokers = calloc((size_t)r->nqd + 1, sizeof *b->brokers);
    b->mqs = calloc((size_t)total + (size_t)r->nqd + 1, sizeof *b->mqs);
    b->mqp = calloc((size_t)total + (size_t)r->nqd + 1, sizeof *b->mqp);
    if (!b->brokers || !b->mqs || !b->mqp)
        return -ENOMEM;
    for (int i = 0; i < r->nqd; i++) {
        const struct cli_queue_data *qd = &r->qd[i];
        if (!cli_route_addr(r, qd->broker, CLI_MASTER_ID))
            continue;
        Apache__Rocketmq__V2__Broker *br = &b->brokers[b->nbrokers++];
        apache__rocketmq__v2__broker__init(br);
        br->name = (char *)qd->broker;
        br->id = 0;
        br->endpoints = &b->ep;
        bool rd = qd->perm & CLI_PERM_READ, wr = qd->perm & CLI_PERM_WRITE;
        int nr = rd ? qd->read_queues : 0, nw = wr ? qd->write_queues : 0;
        int both = nr < nw ? nr : nw, n = nr > nw ? nr : nw;
        if (assignment && !fifo) {
            if (!rd || nr == 0)
                continue;
            pb_mq *m = &b->mqs[b->nmq];
            apache__rocketmq__v2__message_queue__init(m);
            m->topic = &b->topic;
            m->id = -1;
            m->permission = perm_of(qd->perm);
            m->broker = br;
            m->n_accept_message_types = 4;
            m->accept_message_types = all_types;
            b->mqp[b->nmq] = m;
            b->nmq++;
            continue;
        }
        for (int q = 0; q < n; q++) {
            int p = q < both ? (CLI_PERM_READ | CLI_PERM_WRITE) : (q < nr ? CLI_PERM_READ : CLI_PERM_WRITE);
            if (assignment && !(p & CLI_PERM_READ))
                continue;
            pb_mq *m = &b->mqs[b->nmq];
            apache__rocketmq__v2__message_queue__init(m);
            m->topic = &b->topic;
            m->id = q;
            m->permission = perm_of(p);
            m->broker = br;
            m->n_accept_message_types = 4;
            m->accept_message_types = all_types;
            b->mqp[b->nmq] = m;
            b->nmq++;
        }
    }
    return 0;
}

static void route_pb_free(struct route_pb *b)
{
    free(b->brokers);
    free(b->mqs);
    free(b->mqp);
}

static void query_route_ready(int status, const struct cli_route *r, const char *errmsg, void *ud)
{
    struct px_op *op = ud;
    struct px_grpc_call *call = op->call;
    const ProtobufCMessageDescriptor *d = op->kind ? &apache__rocketmq__v2__query_assignment_response__descriptor
                                                   : &apache__rocketmq__v2__query_route_response__descriptor;
    if (status) {
        px_reply_status(call, d, px_code_from_route(status), "%s", errmsg ? errmsg : strerror(-status));
        px_op_put(op);
        return;
    }
    struct route_pb b;
    if (route_pb_build(&b, op, r, op->kind == 1, op->i3 != 0)) {
        route_pb_free(&b);
        px_reply_status(call, d, PXC(INTERNAL_SERVER_ERROR), "out of memory");
        px_op_put(op);
        return;
    }
    Apache__Rocketmq__V2__Status st = APACHE__ROCKETMQ__V2__STATUS__INIT;
    st.code = PXC(OK);
    st.message = (char *)"OK";
    if (b.nmq == 0) {
        st.code = op->kind ? PXC(OK) : PXC(TOPIC_NOT_FOUND);
        st.message = (char *)(op->kind ? "no readable queue" : "topic has no queue on a live broker");
    }
    if (op->kind == 0) {
        Apache__Rocketmq__V2__QueryRouteResponse resp = APACHE__ROCKETMQ__V2__QUERY_ROUTE_RESPONSE__INIT;
        resp.status = &st;
        resp.n_message_queues = (size_t)b.nmq;
        resp.message_queues = b.mqp;
        px_reply(call, &resp.base);
    } else {
        Apache__Rocketmq__V2__Assignment *as = calloc((size_t)b.nmq + 1, sizeof *as);
        Apache__Rocketmq__V2__Assignment **ap = calloc((size_t)b.nmq + 1, sizeof *ap);
        if (!as || !ap) {
            px_reply_status(call, d, PXC(INTERNAL_SERVER_ERROR), "out of memory");
        } else {
            for (int i = 0; i < b.nmq; i++) {
                apache__rocketmq__v2__assignment__init(&as[i]);
                as[i].message_queue = b.mqp[i];
                ap[i] = &as[i];
            }
            Apache__Rocketmq__V2__QueryAssignmentResponse resp =
                APACHE__ROCKETMQ__V2__QUERY_ASSIGNMENT_RESPONSE__INIT;
            resp.status = &st;
            resp.n_assignments = (size_t)b.nmq;
            resp.assignments = ap;
            px_reply(call, &resp.base);
        }
        free(as);
        free(ap);
    }
    route_pb_free(&b);
    px_op_put(op);
}

static bool topic_ok(const Apache__Rocketmq__V2__Resource *t)
{
    return t && px_valid_name(t->name, CLI_NAME_MAX - 1);
}

static void query_route(struct px *px, struct px_grpc_call *call, const uint8_t *msg, size_t len)
{
    const ProtobufCMessageDescriptor *d = &apache__rocketmq__v2__query_route_response__descriptor;
    Apache__Rocketmq__V2__QueryRouteRequest *req =
        (void *)px_unpack(&apache__rocketmq__v2__query_route_request__descriptor, msg, len);
    if (!req) {
        px_reply_status(call, d, PXC(BAD_REQUEST), "cannot decode QueryRouteRequest");
        return;
    }
    if (!topic_ok(req->topic)) {
        px_reply_status(call, d, PXC(ILLEGAL_TOPIC), "illegal topic name");
        return;
    }
    struct px_op *op = px_op_get(px, call);
    if (!op) {
        px_reply_status(call, d, PXC(INTERNAL_SERVER_ERROR), "out of memory");
        return;
    }
    snprintf(op->topic, sizeof op->topic, "%s", req->topic->name);
    own_endpoints(px, op, req->endpoints);
    op->kind = 0;
    int rc = px_with_route(px, op->topic, query_route_ready, op);
    if (rc)
        query_route_ready(rc, NULL, "route lookup could not start", op);
}

static void query_assignment(struct px *px, struct px_grpc_call *call, const uint8_t *msg, size_t len)
{
    const ProtobufCMessageDescriptor *d = &apache__rocketmq__v2__query_assignment_response__descriptor;
    Apache__Rocketmq__V2__QueryAssignmentRequest *req =
        (void *)px_unpack(&apache__rocketmq__v2__query_assignment_request__descriptor, msg, len);
    if (!req) {
        px_reply_status(call, d, PXC(BAD_REQUEST), "cannot decode QueryAssignmentRequest");
        return;
    }
    if (!topic_ok(req->topic)) {
        px_reply_status(call, d, PXC(ILLEGAL_TOPIC), "illegal topic name");
        return;
    }
    if (!req->group || !px_valid_name(req->group->name, CLI_NAME_MAX - 1)) {
        px_reply_status(call, d, PXC(ILLEGAL_CONSUMER_GROUP), "illegal consumer group");
        return;
    }
    struct px_op *op = px_op_get(px, call);
    if (!op) {
        px_reply_status(call, d, PXC(INTERNAL_SERVER_ERROR), "out of memory");
        return;
    }
    snprintf(op->topic, sizeof op->topic, "%s", req->topic->name);
    snprintf(op->group, sizeof op->group, "%s", req->group->name);
    own_endpoints(px, op, req->endpoints);
    op->kind = 1;
    op->i3 = px_telemetry_group_fifo(px, op->group);
    int rc = px_with_route(px, op->topic, query_route_ready, op);
    if (rc)
        query_route_ready(rc, NULL, "route lookup could not start", op);
}

void px_route_register(struct px *px)
{
    px_rpc_register(px, "QueryRoute", PX_GRPC_UNARY, query_route, NULL);
    px_rpc_register(px, "QueryAssignment", PX_GRPC_UNARY, query_assignment, NULL);
}
