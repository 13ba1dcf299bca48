/*
 * RPC plumbing shared by every handler: the unpack arena, the op free list,
 * status replies, route helpers and the registration of the
 * MessagingService methods (each subsystem registers its own; RPCs this
 * proxy does not serve answer UNSUPPORTED at once, never hang).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "proxy.h"

/* Arena: a first chunk that is kept, plus overflow chunks freed at reset.
 * When a request overflowed, the first chunk grows so the next one fits. */
struct chunk {
    struct chunk *next;
    size_t cap, used;
    _Alignas(16) uint8_t data[];
};

static struct {
    struct chunk *first;
    struct chunk *extra;
    size_t total;
} A;

#define ARENA_MIN (256u * 1024)
#define ARENA_KEEP_MAX (8u * 1024 * 1024)

static struct chunk *chunk_new(size_t cap)
{
    struct chunk *c = malloc(sizeof *c + cap);
    if (c) {
        c->next = NULL;
        c->cap = cap;
        c->used = 0;
    }
    return c;
}

static void *arena_alloc(void *ud, size_t size)
{
    size = (size + 15) & ~(size_t)15;
    if (!A.first && !(A.first = chunk_new(ARENA_MIN)))
        return NULL;
    A.total += size;
    struct chunk *c = A.first;
    if (c->used + size <= c->cap) {
        void *p = c->data + c->used;
        c->used += size;
        return p;
    }
    c = A.extra;
    if (c && c->used + size <= c->cap) {
        void *p = c->data + c->used;
        c->used += size;
        return p;
    }
    size_t cap = size > ARENA_MIN ? size : ARENA_MIN;
    c = chunk_new(cap);
    if (!c)
        return NULL;
    c->next = A.extra;
    A.extra = c;
    c->used = size;
    return c->data;
}

static void arena_free(void *ud, void *p) { }

ProtobufCAllocator px_arena_allocator = { .alloc = arena_alloc, .free = arena_free };

void px_arena_reset(void)
{
    bool overflowed = A.extra != NULL;
    while (A.extra) {
        struct chunk *n = A.extra->next;
        free(A.extra);
        A.extra = n;
    }
    if (overflowed && A.first && A.total > A.first->cap && A.first->cap < ARENA_KEEP_MAX) {
        size_t cap = A.first->cap * 2;
        while (cap < A.total && cap < ARENA_KEEP_MAX)
            cap *= 2;
        struct chunk *c = chunk_new(cap);
        if (c) {
            free(A.first);
            A.first = c;
        }
    }
    if (A.first)
        A.first->used = 0;
    A.total = 0;
}

void px_arena_release(void)
{
    px_arena_reset();
    free(A.first);
    A.first = NULL;
}

ProtobufCMessage *px_unpack(const ProtobufCMessageDescriptor *d, const uint8_t *msg, size_t len)
{
    return protobuf_c_message_unpack(d, &px_arena_allocator, len, msg);
}

int64_t px_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

struct px_op *px_op_get(struct px *px, struct px_grpc_call *call)
{
    struct px_op *op = px->free_ops;
    if (op) {
        px->free_ops = op->next_free;
    } else {
        op = calloc(1, sizeof *op);
        if (!op)
            return NULL;
        rmt_cmd_init(&op->cmd, 0);
    }
    op->px = px;
    op->next_free = NULL;
    op->call = call;
    if (call)
        px_grpc_call_ref(call);
    op->parent = NULL;
    op->index = 0;
    op->pending = 0;
    op->attempts = 0;
    buf_reset(&op->body);
    buf_reset(&op->props);
    buf_reset(&op->aux);
    op->topic[0] = op->group[0] = op->broker[0] = op->addr[0] = op->str[0] = 0;
    op->queue_id = 0;
    op->kind = 0;
    op->i1 = op->i2 = op->i3 = 0;
    op->started = ev_now(px->loop);
    op->code = PXC(OK);
    op->msg[0] = 0;
    return op;
}

void px_op_put(struct px_op *op)
{
    if (!op)
        return;
    if (op->call)
        px_grpc_call_unref(op->call);
    op->call = NULL;
    /* Pooled ops are many (one per message in flight): do not let one
     * large request pin big buffers in all of them. */
    if (op->body.cap > 1024 * 1024) {
        buf_free(&op->body);
        op->body = (struct buf)BUF_INIT;
    }
    if (op->aux.cap > 64 * 1024) {
        buf_free(&op->aux);
        op->aux = (struct buf)BUF_INIT;
    }
    if (op->props.cap > 64 * 1024) {
        buf_free(&op->props);
        op->props = (struct buf)BUF_INIT;
    }
    op->next_free = op->px->free_ops;
    op->px->free_ops = op;
}

void px_ops_free(struct px *px)
{
    while (px->free_ops) {
        struct px_op *op = px->free_ops;
        px->free_ops = op->next_free;
        rmt_cmd_destroy(&op->cmd);
        buf_free(&op->body);
        buf_free(&op->props);
        buf_free(&op->aux);
        free(op);
    }
}

int px_reply(struct px_grpc_call *call, const ProtobufCMessage *msg)
{
    int rc = px_grpc_call_send_pb(call, msg);
    if (rc == 0)
        rc = px_grpc_call_finish(call, PX_GRPC_OK, NULL);
    else if (rc != -ECANCELED)
        px_grpc_call_finish(call, PX_GRPC_INTERNAL, "cannot encode the response");
    return rc;
}

int px_reply_status(struct px_grpc_call *call, const ProtobufCMessageDescriptor *d, px_code code,
                    const char *fmt, ...)
{
    char text[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    Apache__Rocketmq__V2__Status st = APACHE__ROCKETMQ__V2__STATUS__INIT;
    st.code = code;
    st.message = text;
    _Alignas(16) uint8_t mem[512];
    if (d->sizeof_message > sizeof mem)
        return px_grpc_call_finish(call, PX_GRPC_INTERNAL, "response too large");
    ProtobufCMessage *m = (ProtobufCMessage *)mem;
    d->message_init(m);
    const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field(d, 1);
    if (!f || f->type != PROTOBUF_C_TYPE_MESSAGE)
        return px_grpc_call_finish(call, PX_GRPC_INTERNAL, "response has no status");
    *(void **)(mem + f->offset) = &st;
    if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF)
        *(uint32_t *)(mem + f->quantifier_offset) = 1;
    if (code != PXC(OK))
        log_debug("proxy: %s answers %s: %s", px_grpc_call_method(call), px_code_name(code), text);
    return px_reply(call, m);
}

const char *px_broker_addr(struct px *px, const char *topic, const char *broker)
{
    const struct cli_route *r = cli_route_cached(px->cli, topic);
    return r ? cli_route_addr(r, broker, CLI_MASTER_ID) : NULL;
}

int px_with_route(struct px *px, const char *topic, cli_route_fn cb, void *ud)
{
    return cli_route_get(px->cli, topic, cb, ud);
}

bool px_valid_name(const char *s, size_t max)
{
    size_t n = 0;
    if (!s)
        return false;
    for (; s[n]; n++) {
        char c = s[n];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '%' || c == '|' || c == '-' || c == '_'))
            return false;
    }
    return n > 0 && n <= max;
}

bool px_check_group_topic(struct px_grpc_call *call, const ProtobufCMessageDescriptor *d,
                          const Apache__Rocketmq__V2__Resource *group,
                          const Apache__Rocketmq__V2__Resource *topic)
{
    if (!group || !px_valid_name(group->name, CLI_NAME_MAX - 1)) {
        px_reply_status(call, d, PXC(ILLEGAL_CONSUMER_GROUP), "illegal consumer group");
        return false;
    }
    if (!topic || !px_valid_name(topic->name, CLI_NAME_MAX - 1)) {
        px_reply_status(call, d, PXC(ILLEGAL_TOPIC), "illegal topic name");
        return false;
    }
    return true;
}

void px_cmd_reset(struct px *px, rmt_cmd *cmd, int32_t code)
{
    cli_cmd_reset(px->cli, cmd, code);
}

struct rpc_reg {
    struct px *px;
    px_rpc_fn fn;
    px_cancel_fn cancel;
};

#define MAX_RPCS 32
static struct rpc_reg regs[MAX_RPCS];
static int nregs;

static void rpc_on_message(struct px_grpc_call *call, const uint8_t *msg, size_t len, void *arg)
{
    struct rpc_reg *r = arg;
    if (log_get_level() <= LOG_LVL_DEBUG)
        log_debug("proxy: %s from %s (%zu bytes)", px_grpc_call_method(call), px_grpc_call_peer(call), len);
    r->fn(r->px, call, msg, len);
    px_arena_reset();
}

static void rpc_on_cancel(struct px_grpc_call *call, enum px_grpc_end_reason why, void *arg)
{
    struct rpc_reg *r = arg;
    if (r->cancel)
        r->cancel(r->px, call, why);
}

static void rpc_on_half_close(struct px_grpc_call *call, void *arg)
{
    struct rpc_reg *r = arg;
    px_telemetry_half_close(r->px, call);
}

int px_rpc_register(struct px *px, const char *name, enum px_grpc_kind kind, px_rpc_fn fn,
                    px_cancel_fn on_cancel)
{
    if (nregs == MAX_RPCS)
        return -ENOSPC;
    struct rpc_reg *r = &regs[nregs++];
    r->px = px;
    r->fn = fn;
    r->cancel = on_cancel;
    char path[128];
    snprintf(path, sizeof path, PX_SVC "%s", name);
    struct px_grpc_handler h = {
        .kind = kind, .on_message = rpc_on_message, .on_cancel = rpc_on_cancel, .arg = r,
        .on_half_close = kind == PX_GRPC_BIDI_STREAMING ? rpc_on_half_close : NULL,
    };
    int rc = px_grpc_server_register(px->srv, path, &h);
    if (rc)
        log_error("proxy: cannot register %s: %s", path, strerror(-rc));
    return rc;
}

static void unsupported(struct px *px, struct px_grpc_call *call, const uint8_t *msg, size_t len)
{
    const char *m = px_grpc_call_method(call);
    const ProtobufCMessageDescriptor *d = strstr(m, "RecallMessage")
                                              ? &apache__rocketmq__v2__recall_message_response__descriptor
                                              : &apache__rocketmq__v2__sync_lite_subscription_response__descriptor;
    px_reply_status(call, d, PXC(UNSUPPORTED), "%s is not supported by this proxy",
                    strrchr(m, '/') ? strrchr(m, '/') + 1 : m);
}

int px_service_register(struct px *px)
{
    nregs = 0;
    px_route_register(px);
    px_send_register(px);
    px_receive_register(px);
    px_offset_register(px);
    px_telemetry_register(px);
    px_rpc_register(px, "RecallMessage", PX_GRPC_UNARY, unsupported, NULL);
    px_rpc_register(px, "SyncLiteSubscription", PX_GRPC_UNARY, unsupported, NULL);
    return nregs == MAX_RPCS ? -ENOSPC : 0;
}
