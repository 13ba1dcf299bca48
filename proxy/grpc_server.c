/*
 * gRPC over HTTP/2 (h2c, prior knowledge) for the proxy; see grpc_server.h.
 *
 * Shape: nghttp2 owns the protocol state of each connection (framing, HPACK,
 * flow control, PING, SETTINGS, GOAWAY); this file owns sockets, timers, the
 * gRPC message framing and call lifetimes.
 *
 * - Input: one read(2) into a per-server buffer per readiness event, fed to
 *   nghttp2_session_mem_recv. A request message that arrives within one DATA
 *   chunk is handed to the handler straight from that buffer; only messages
 *   split across chunks are assembled in the call's rx buffer.
 * - Output: responses sit in the call's tx queue (5-byte prefix + message)
 *   and reach nghttp2 through a data provider, so nghttp2's flow control
 *   decides what goes out. Connections with something to send are flushed
 *   once per loop iteration from an ev_prepare watcher, which batches all
 *   responses produced in that iteration into as few write(2)s as possible.
 *   While the socket refuses more output, the connection is not read either.
 * - Calls come from a per-server free list and keep their buffers, so steady
 *   state traffic does no allocation here beyond what nghttp2 does.
 */
#include "grpc_server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <protobuf-c/protobuf-c.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "buf.h"
#include "log.h"

#define RBUF_SIZE (64 * 1024)
#define OUT_CHUNK (64 * 1024)        /* gather this much before write(2) */
#define OUT_KEEP (64 * 1024)         /* keep at most this much idle capacity */
#define CALL_BUF_KEEP (16 * 1024)    /* pooled calls keep buffers up to this */
#define CALL_POOL_MAX 4096
#define GRPC_HDR 5

struct conn;

struct method {
    char *path;
    size_t len;
    struct px_grpc_handler h;
};

struct px_grpc_call {
    struct px_grpc_server *srv;
    struct conn *conn;                 /* NULL once the stream is gone */
    struct px_grpc_call *prev, *next;  /* conn's call list, or free list */
    const struct method *m;
    void *user;
    int32_t stream_id;
    int refs;
    unsigned handed : 1;       /* handler has seen the call */
    unsigned handler_done : 1; /* handler called finish */
    unsigned done : 1;         /* final status decided (by handler or us) */
    unsigned cancelled : 1;    /* no more sending through the public API */
    unsigned notified : 1;     /* on_cancel called */
    unsigned hdrs_sent : 1;    /* response HEADERS submitted */
    unsigned deferred : 1;     /* data provider waits for more tx */
    unsigned remote_closed : 1;
    unsigned bad_method : 1;   /* :method is not POST */
    unsigned meta_overflow : 1;
    unsigned has_timeout : 1;
    unsigned bad_timeout : 1;
    int status;
    uint32_t nmsgs;
    double timeout;
    double deadline_at;
    ev_timer deadline;
    uint8_t rx_hdr[GRPC_HDR];
    uint8_t rx_hdr_have;
    uint32_t rx_len;           /* body length of the message being received */
    uint32_t rx_have;          /* body bytes of it in rx */
    struct buf rx;
    struct buf tx;
    size_t tx_off;
    struct buf meta;           /* request headers: "name\0value\0"... */
    size_t path_off;
    size_t ctype_off;
    size_t encoding_off;
    struct buf trail;          /* percent-encoded grpc-message */
    uint64_t conn_id;
    char peer[64];
};

struct conn {
    struct px_grpc_server *srv;
    struct conn *prev, *next;
    struct conn *dirty_next;
    nghttp2_session *h2;
    struct px_grpc_call *calls;
    int fd;
    uint32_t nstreams;
    unsigned dirty : 1;
    unsigned got_preface : 1;
    unsigned read_paused : 1;
    unsigned goaway_err : 1;
    unsigned closing : 1;
    uint32_t goaway_code;
    size_t rx_buffered;
    ev_io rio, wio;
    ev_timer timer;
    double last_active;
    double last_write;         /* start of a write stall, or last progress in it */
    uint64_t id;
    struct buf out;
    size_t out_off;
    char peer[64];
    char err[128];
};

struct px_grpc_server {
    struct ev_loop *loop;
    struct px_grpc_config cfg;
    struct method *methods;
    size_t nmethods;
    int lfd;
    uint16_t port;
    ev_io aio;
    ev_timer accept_retry;
    ev_prepare prep;
    ev_timer shut_timer;
    ev_timer shut_done_timer;  /* runs the done callback from its own event */
    int shut_phase;            /* 0 running, 1 notice sent, 2 GOAWAY sent */
    double shut_rest;          /* grace left after the notice phase */
    void (*shut_done)(void *);
    void *shut_arg;
    int freeing;
    struct conn *conns;
    struct conn *dirty;
    struct px_grpc_call *pool;
    size_t npool;
    nghttp2_session_callbacks *cbs;
    nghttp2_option *opt;
    uint8_t *rbuf;
    uint64_t next_conn_id;
    double last_accept_warn;
    struct px_grpc_stats st;
};

static void conn_close(struct conn *c, int failed, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void conn_mark_dirty(struct conn *c);
static void server_destroy(struct px_grpc_server *srv);
static void maybe_shutdown_done(struct px_grpc_server *srv);
static void shut_done_cb(struct ev_loop *loop, ev_timer *w, int revents);

void px_grpc_config_default(struct px_grpc_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->max_recv_msg = PX_GRPC_DEFAULT_MAX_RECV_MSG;
    cfg->max_conn_rx_buffered = 32u * 1024 * 1024;
    cfg->max_concurrent_streams = 1000;
    cfg->stream_window = 1024 * 1024;
    cfg->conn_window = 16 * 1024 * 1024;
    cfg->max_header_bytes = 16 * 1024;
    cfg->max_connections = 20000;
    cfg->idle_timeout = 600.0;
    cfg->handshake_timeout = 10.0;
    cfg->write_stall_timeout = 60.0;
    cfg->reuseport = 0;
}

static const struct method *method_find(const struct px_grpc_server *srv, const char *path, size_t len)
{
    for (size_t i = 0; i < srv->nmethods; i++) {
        const struct method *m = &srv->methods[i];
        if (m->len == len && memcmp(m->path, path, len) == 0)
            return m;
    }
    return NULL;
}

int px_grpc_server_register(struct px_grpc_server *srv, const char *path,
                            const struct px_grpc_handler *h)
{
    if (!path || path[0] != '/' || !h || !h->on_message)
        return -EINVAL;
    if (h->kind != PX_GRPC_UNARY && h->kind != PX_GRPC_SERVER_STREAMING &&
        h->kind != PX_GRPC_BIDI_STREAMING)
        return -EINVAL;
    size_t len = strlen(path);
    if (method_find(srv, path, len))
        return -EEXIST;
    struct method *nm = realloc(srv->methods, (srv->nmethods + 1) * sizeof(*nm));
    if (!nm)
        return -ENOMEM;
    srv->methods = nm;
    char *p = strdup(path);
    if (!p)
        return -ENOMEM;
    nm[srv->nmethods].path = p;
    nm[srv->nmethods].len = len;
    nm[srv->nmethods].h = *h;
    srv->nmethods++;
    return 0;
}

static void buf_trim(struct buf *b, size_t keep)
{
    if (b->cap > keep)
        buf_free(b);
    else
        buf_reset(b);
}

static struct px_grpc_call *call_alloc(struct px_grpc_server *srv)
{
    struct px_grpc_call *call = srv->pool;
    struct buf rx, tx, meta, trail;
    if (call) {
        srv->pool = call->next;
        srv->npool--;
        rx = call->rx; tx = call->tx; meta = call->meta; trail = call->trail;
    } else {
        call = malloc(sizeof(*call));
        if (!call)
            return NULL;
        rx = (struct buf)BUF_INIT; tx = rx; meta = rx; trail = rx;
    }
    memset(call, 0, sizeof(*call));
    call->rx = rx; call->tx = tx; call->meta = meta; call->trail = trail;
    call->srv = srv;
    call->refs = 1;
    srv->st.calls_live++;
    return call;
}

static void call_release(struct px_grpc_call *call)
{
    struct px_grpc_server *srv = call->srv;
    ev_timer_stop(srv->loop, &call->deadline);
    srv->st.calls_live--;
    if (!srv->freeing && srv->npool < CALL_POOL_MAX) {
        buf_trim(&call->rx, CALL_BUF_KEEP);
        buf_trim(&call->tx, CALL_BUF_KEEP);
        buf_trim(&call->meta, CALL_BUF_KEEP);
        buf_trim(&call->trail, CALL_BUF_KEEP);
        call->next = srv->pool;
        srv->pool = call;
        srv->npool++;
    } else {
        buf_free(&call->rx);
        buf_free(&call->tx);
        buf_free(&call->meta);
        buf_free(&call->trail);
        free(call);
    }
    if (srv->freeing && srv->st.calls_live == 0)
        server_destroy(srv);
}

void px_grpc_call_ref(struct px_grpc_call *call)
{
    call->refs++;
}

void px_grpc_call_unref(struct px_grpc_call *call)
{
    if (--call->refs == 0)
        call_release(call);
}

void px_grpc_call_set_data(struct px_grpc_call *call, void *data) { call->user = data; }
void *px_grpc_call_data(const struct px_grpc_call *call) { return call->user; }
const char *px_grpc_call_peer(const struct px_grpc_call *call) { return call->peer; }
uint64_t px_grpc_call_conn_id(const struct px_grpc_call *call) { return call->conn_id; }
double px_grpc_call_deadline(const struct px_grpc_call *call) { return call->deadline_at; }
size_t px_grpc_call_queued(const struct px_grpc_call *call) { return call->tx.len - call->tx_off; }

int px_grpc_call_active(const struct px_grpc_call *call)
{
    return !call->cancelled && !call->done && call->conn != NULL;
}

const char *px_grpc_call_method(const struct px_grpc_call *call)
{
    return call->meta.len ? (const char *)call->meta.data + call->path_off : "";
}

const char *px_grpc_call_header(const struct px_grpc_call *call, const char *name)
{
    const char *p = (const char *)call->meta.data;
    const char *end = p + call->meta.len;
    while (p < end) {
        const char *val = p + strlen(p) + 1;
        if (strcmp(p, name) == 0)
            return val;
        p = val + strlen(val) + 1;
    }
    return NULL;
}

/* Stores "name\0value\0"; returns the value's offset or -1 (ENOMEM). */
static long meta_add(struct px_grpc_call *call, const uint8_t *name, size_t nlen,
                     const uint8_t *val, size_t vlen)
{
    if (buf_reserve(&call->meta, nlen + vlen + 2))
        return -1;
    uint8_t *p = call->meta.data + call->meta.len;
    memcpy(p, name, nlen);
    p[nlen] = 0;
    memcpy(p + nlen + 1, val, vlen);
    p[nlen + 1 + vlen] = 0;
    long off = (long)(call->meta.len + nlen + 1);
    call->meta.len += nlen + vlen + 2;
    return off;
}

/* grpc-message is percent-encoded: anything outside printable ASCII and '%'. */
static int trail_set(struct px_grpc_call *call, const char *msg)
{
    static const char hex[] = "0123456789ABCDEF";
    buf_reset(&call->trail);
    if (!msg)
        return 0;
    size_t n = strlen(msg);
    if (n > 1024)
        n = 1024;
    if (buf_reserve(&call->trail, n * 3 + 1))
        return -ENOMEM;
    uint8_t *o = call->trail.data;
    for (size_t i = 0; i < n; i++) {
        uint8_t ch = (uint8_t)msg[i];
        if (ch < 0x20 || ch > 0x7e || ch == '%') {
            *o++ = '%';
            *o++ = (uint8_t)hex[ch >> 4];
            *o++ = (uint8_t)hex[ch & 15];
        } else {
            *o++ = ch;
        }
    }
    call->trail.len = (size_t)(o - call->trail.data);
    *o = 0;
    return 0;
}

#define NV_LIT(n, v) { (uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, sizeof(v) - 1, \
                       NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE }

/* Fills grpc-status / grpc-message name-value pairs; returns how many. */
static size_t status_nv(struct px_grpc_call *call, nghttp2_nv *nv, char *sbuf)
{
    int len = snprintf(sbuf, 8, "%d", call->status);
    nv[0] = (nghttp2_nv){ (uint8_t *)"grpc-status", (uint8_t *)sbuf, 11, (size_t)len,
                          NGHTTP2_NV_FLAG_NO_COPY_NAME };
    if (call->trail.len == 0)
        return 1;
    nv[1] = (nghttp2_nv){ (uint8_t *)"grpc-message", call->trail.data, 12, call->trail.len,
                          NGHTTP2_NV_FLAG_NO_COPY_NAME };
    return 2;
}

static ssize_t data_read_cb(nghttp2_session *session, int32_t stream_id, uint8_t *out,
                            size_t length, uint32_t *data_flags, nghttp2_data_source *source,
                            void *user_data)
{
    struct px_grpc_call *call = source->ptr;
    size_t avail = call->tx.len - call->tx_off;
    size_t n = avail < length ? avail : length;
    if (n) {
        memcpy(out, call->tx.data + call->tx_off, n);
        call->tx_off += n;
        if (call->tx_off == call->tx.len)
            call->tx.len = call->tx_off = 0;
    }
    if (call->tx.len == 0) {
        if (call->done) {
            nghttp2_nv nv[2];
            char sbuf[8];
            size_t nnv = status_nv(call, nv, sbuf);
            *data_flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
            if (nghttp2_submit_trailer(session, stream_id, nv, nnv) != 0)
                return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
        } else if (n == 0) {
            call->deferred = 1;
            return NGHTTP2_ERR_DEFERRED;
        }
    }
    return (ssize_t)n;
}

static int submit_headers(struct px_grpc_call *call)
{
    static const nghttp2_nv hdrs[] = {
        NV_LIT(":status", "200"),
        NV_LIT("content-type", "application/grpc"),
    };
    nghttp2_data_provider prd;
    prd.source.ptr = call;
    prd.read_callback = data_read_cb;
    int rv = nghttp2_submit_response(call->conn->h2, call->stream_id, hdrs, 2, &prd);
    if (rv != 0)
        return rv == NGHTTP2_ERR_NOMEM ? -ENOMEM : -ECANCELED;
    call->hdrs_sent = 1;
    return 0;
}

/* Decides the final status; the trailers follow whatever is still queued. */
static int finish_internal(struct px_grpc_call *call, int status, const char *msg)
{
    call->done = 1;
    call->status = status;
    ev_timer_stop(call->srv->loop, &call->deadline);
    int rc = trail_set(call, msg);
    if (!call->conn)
        return -ECANCELED;
    nghttp2_session *h2 = call->conn->h2;
    if (!call->hdrs_sent) {
        nghttp2_nv nv[4] = {
            NV_LIT(":status", "200"),
            NV_LIT("content-type", "application/grpc"),
        };
        char sbuf[8];
        size_t n = 2 + status_nv(call, nv + 2, sbuf);
        int rv = nghttp2_submit_response(h2, call->stream_id, nv, n, NULL);
        if (rv != 0)
            rc = rv == NGHTTP2_ERR_NOMEM ? -ENOMEM : -ECANCELED;
        call->hdrs_sent = 1;
    } else if (call->deferred) {
        call->deferred = 0;
        nghttp2_session_resume_data(h2, call->stream_id);
    }
    conn_mark_dirty(call->conn);
    return rc;
}

static void notify_cancel(struct px_grpc_call *call, enum px_grpc_end_reason why)
{
    call->cancelled = 1;
    if (call->handed && !call->handler_done && !call->notified) {
        call->notified = 1;
        if (call->m->h.on_cancel)
            call->m->h.on_cancel(call, why, call->m->h.arg);
    }
}

/* Ends a call on the server's initiative and tells the handler if it had it. */
static void call_fail(struct px_grpc_call *call, int status, const char *msg,
                      enum px_grpc_end_reason why)
{
    if (call->done)
        return;
    finish_internal(call, status, msg);
    notify_cancel(call, why);
}

/* Makes room for one framed message of `len` bytes in tx and writes its
 * prefix; returns where the body goes. Sets *rc on failure. */
static uint8_t *tx_begin(struct px_grpc_call *call, size_t len, int *rc)
{
    if (call->cancelled || !call->conn) {
        *rc = -ECANCELED;
        return NULL;
    }
    if (call->done) {
        *rc = -EINVAL;
        return NULL;
    }
    if (len > UINT32_MAX - GRPC_HDR) {
        *rc = -EMSGSIZE;
        return NULL;
    }
    if (call->tx_off > OUT_KEEP && call->tx_off * 2 > call->tx.len) {
        memmove(call->tx.data, call->tx.data + call->tx_off, call->tx.len - call->tx_off);
        call->tx.len -= call->tx_off;
        call->tx_off = 0;
    }
    if (buf_reserve(&call->tx, GRPC_HDR + len)) {
        *rc = -ENOMEM;
        return NULL;
    }
    uint8_t *p = call->tx.data + call->tx.len;
    p[0] = 0;
    wr_u32be(p + 1, (uint32_t)len);
    return p + GRPC_HDR;
}

/* Appends the message prepared by tx_begin and wakes the data provider. */
static int tx_commit(struct px_grpc_call *call, size_t len)
{
    call->tx.len += GRPC_HDR + len;
    int rc = 0;
    if (!call->hdrs_sent) {
        rc = submit_headers(call);
    } else if (call->deferred) {
        call->deferred = 0;
        nghttp2_session_resume_data(call->conn->h2, call->stream_id);
    }
    conn_mark_dirty(call->conn);
    return rc;
}

int px_grpc_call_send(struct px_grpc_call *call, const void *msg, size_t len)
{
    int rc = 0;
    uint8_t *p = tx_begin(call, len, &rc);
    if (!p)
        return rc;
    if (len)
        memcpy(p, msg, len);
    return tx_commit(call, len);
}

int px_grpc_call_send_pb(struct px_grpc_call *call, const struct ProtobufCMessage *msg)
{
    int rc = 0;
    size_t len = protobuf_c_message_get_packed_size(msg);
    uint8_t *p = tx_begin(call, len, &rc);
    if (!p)
        return rc;
    protobuf_c_message_pack(msg, p);
    return tx_commit(call, len);
}

int px_grpc_call_finish(struct px_grpc_call *call, enum px_grpc_status status, const char *message)
{
    if (call->cancelled || !call->conn)
        return -ECANCELED;
    if (call->done)
        return -EALREADY;
    call->handler_done = 1;
    return finish_internal(call, (int)status, message);
}

static void deadline_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct px_grpc_call *call = (struct px_grpc_call *)((char *)w - offsetof(struct px_grpc_call, deadline));
    call_fail(call, PX_GRPC_DEADLINE_EXCEEDED, "deadline exceeded", PX_GRPC_END_DEADLINE);
}

/* Detaches a call from its stream/connection and drops the server's reference. */
static void call_detach(struct px_grpc_call *call, enum px_grpc_end_reason why)
{
    struct conn *c = call->conn;
    if (call->prev)
        call->prev->next = call->next;
    else
        c->calls = call->next;
    if (call->next)
        call->next->prev = call->prev;
    call->prev = call->next = NULL;
    c->nstreams--;
    c->rx_buffered -= call->rx_have;
    call->rx_have = 0;
    c->last_active = ev_now(c->srv->loop);
    call->conn = NULL;
    ev_timer_stop(c->srv->loop, &call->deadline);
    notify_cancel(call, why);
    px_grpc_call_unref(call);
}

/* Parses grpc-timeout ("<1-8 digits><H|M|S|m|u|n>") into seconds. */
static int parse_timeout(const uint8_t *v, size_t len, double *out)
{
    if (len < 2 || len > 9)
        return -1;
    double n = 0;
    for (size_t i = 0; i + 1 < len; i++) {
        if (v[i] < '0' || v[i] > '9')
            return -1;
        n = n * 10 + (v[i] - '0');
    }
    switch (v[len - 1]) {
    case 'H': *out = n * 3600; break;
    case 'M': *out = n * 60; break;
    case 'S': *out = n; break;
    case 'm': *out = n / 1e3; break;
    case 'u': *out = n / 1e6; break;
    case 'n': *out = n / 1e9; break;
    default: return -1;
    }
    return 0;
}

/* Request headers complete: validate, route, start the deadline. */
static void call_start(struct conn *c, struct px_grpc_call *call)
{
    struct px_grpc_server *srv = c->srv;
    srv->st.calls_started++;
    if (call->bad_method || !call->ctype_off) {
        static const nghttp2_nv nv405[] = { NV_LIT(":status", "405") };
        static const nghttp2_nv nv415[] = { NV_LIT(":status", "415") };
        call->done = 1;
        call->hdrs_sent = 1;
        nghttp2_submit_response(c->h2, call->stream_id, call->bad_method ? nv405 : nv415, 1, NULL);
        return;
    }
    const char *ct = (const char *)call->meta.data + call->ctype_off;
    if (strncmp(ct, "application/grpc", 16) != 0 || (ct[16] && ct[16] != '+' && ct[16] != ';')) {
        static const nghttp2_nv nv415[] = { NV_LIT(":status", "415") };
        call->done = 1;
        call->hdrs_sent = 1;
        nghttp2_submit_response(c->h2, call->stream_id, nv415, 1, NULL);
        return;
    }
    if (call->meta_overflow) {
        finish_internal(call, PX_GRPC_RESOURCE_EXHAUSTED, "request metadata too large");
        return;
    }
    const char *path = px_grpc_call_method(call);
    call->m = method_find(srv, path, strlen(path));
    if (!call->m) {
        char msg[320];
        snprintf(msg, sizeof(msg), "unknown method %.256s", path);
        finish_internal(call, PX_GRPC_UNIMPLEMENTED, msg);
        return;
    }
    if (call->encoding_off) {
        const char *enc = (const char *)call->meta.data + call->encoding_off;
        if (strcmp(enc, "identity") != 0) {
            char msg[128];
            snprintf(msg, sizeof(msg), "grpc-encoding %.64s is not supported (identity only)", enc);
            finish_internal(call, PX_GRPC_UNIMPLEMENTED, msg);
            return;
        }
    }
    if (call->bad_timeout) {
        finish_internal(call, PX_GRPC_INTERNAL, "malformed grpc-timeout");
        return;
    }
    call->handed = 1;
    if (call->has_timeout) {
        call->deadline_at = ev_now(srv->loop) + call->timeout;
        ev_timer_init(&call->deadline, deadline_cb, call->timeout, 0.);
        ev_timer_start(srv->loop, &call->deadline);
    }
    if (call->m->h.on_start)
        call->m->h.on_start(call, call->m->h.arg);
}

static void deliver(struct px_grpc_call *call, const uint8_t *msg, size_t len)
{
    if (call->nmsgs++ > 0 && call->m->h.kind != PX_GRPC_BIDI_STREAMING) {
        call_fail(call, PX_GRPC_INTERNAL, "more than one request message for a unary method",
                  PX_GRPC_END_PROTOCOL);
        return;
    }
    call->m->h.on_message(call, msg, len, call->m->h.arg);
}

/* Splits DATA payload into gRPC messages (prefix: flag byte + u32 length). */
static void call_rx(struct conn *c, struct px_grpc_call *call, const uint8_t *p, size_t len)
{
    const struct px_grpc_config *cfg = &c->srv->cfg;
    while (len > 0 && !call->done) {
        if (call->rx_hdr_have < GRPC_HDR) {
            size_t take = GRPC_HDR - call->rx_hdr_have;
            if (take > len)
                take = len;
            memcpy(call->rx_hdr + call->rx_hdr_have, p, take);
            call->rx_hdr_have += (uint8_t)take;
            p += take;
            len -= take;
            if (call->rx_hdr_have < GRPC_HDR)
                return;
            call->rx_len = rd_u32be(call->rx_hdr + 1);
            call->rx_have = 0;
            if (call->rx_hdr[0] == 1) {
                call_fail(call, PX_GRPC_INTERNAL,
                          "compressed message received but no compression was negotiated",
                          PX_GRPC_END_PROTOCOL);
                return;
            }
            if (call->rx_hdr[0] != 0) {
                call_fail(call, PX_GRPC_INTERNAL, "invalid message flags", PX_GRPC_END_PROTOCOL);
                return;
            }
            if (call->rx_len > cfg->max_recv_msg) {
                char msg[128];
                snprintf(msg, sizeof(msg), "received message larger than max (%u vs. %zu)",
                         call->rx_len, cfg->max_recv_msg);
                call_fail(call, PX_GRPC_RESOURCE_EXHAUSTED, msg, PX_GRPC_END_PROTOCOL);
                return;
            }
            if (call->rx_len == 0) {
                call->rx_hdr_have = 0;
                deliver(call, (const uint8_t *)"", 0);
                continue;
            }
        }
        size_t need = call->rx_len - call->rx_have;
        if (call->rx_have == 0 && len >= need) {
            call->rx_hdr_have = 0;
            p += need;
            len -= need;
            deliver(call, p - need, need);
            continue;
        }
        size_t take = need < len ? need : len;
        if (c->rx_buffered + take > cfg->max_conn_rx_buffered) {
            call_fail(call, PX_GRPC_RESOURCE_EXHAUSTED,
                      "too much partially received data on this connection", PX_GRPC_END_PROTOCOL);
            return;
        }
        if (call->rx_have == 0) {
            buf_reset(&call->rx);
            if (buf_reserve(&call->rx, call->rx_len)) {
                call_fail(call, PX_GRPC_RESOURCE_EXHAUSTED, "out of memory for request message",
                          PX_GRPC_END_PROTOCOL);
                return;
            }
        }
        memcpy(call->rx.data + call->rx_have, p, take);
        call->rx_have += (uint32_t)take;
        c->rx_buffered += take;
        p += take;
        len -= take;
        if (call->rx_have == call->rx_len) {
            c->rx_buffered -= call->rx_have;
            call->rx_have = 0;
            call->rx_hdr_have = 0;
            call->rx.len = call->rx_len;
            deliver(call, call->rx.data, call->rx_len);
        }
    }
}

static int on_begin_headers(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    struct conn *c = user_data;
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    struct px_grpc_call *call = call_alloc(c->srv);
    if (!call)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    call->conn = c;
    call->stream_id = frame->hd.stream_id;
    call->conn_id = c->id;
    memcpy(call->peer, c->peer, sizeof(call->peer));
    ev_timer_init(&call->deadline, deadline_cb, 0., 0.);
    call->next = c->calls;
    if (c->calls)
        c->calls->prev = call;
    c->calls = call;
    c->nstreams++;
    nghttp2_session_set_stream_user_data(session, frame->hd.stream_id, call);
    return 0;
}

static int on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *user_data)
{
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    struct px_grpc_call *call = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
    if (!call)
        return 0;
    struct conn *c = user_data;
    if (namelen > 0 && name[0] == ':') {
        if (namelen == 7 && memcmp(name, ":method", 7) == 0) {
            if (valuelen != 4 || memcmp(value, "POST", 4) != 0)
                call->bad_method = 1;
            return 0;
        }
        if (!(namelen == 5 && memcmp(name, ":path", 5) == 0))
            return 0;
    }
    if (call->meta_overflow)
        return 0;
    if (call->meta.len + namelen + valuelen + 2 > c->srv->cfg.max_header_bytes) {
        call->meta_overflow = 1;
        return 0;
    }
    long off = meta_add(call, name, namelen, value, valuelen);
    if (off < 0)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    if (namelen == 5 && memcmp(name, ":path", 5) == 0)
        call->path_off = (size_t)off;
    else if (namelen == 12 && memcmp(name, "content-type", 12) == 0)
        call->ctype_off = (size_t)off;
    else if (namelen == 13 && memcmp(name, "grpc-encoding", 13) == 0)
        call->encoding_off = (size_t)off;
    else if (namelen == 12 && memcmp(name, "grpc-timeout", 12) == 0) {
        if (parse_timeout(value, valuelen, &call->timeout) == 0)
            call->has_timeout = 1;
        else
            call->bad_timeout = 1;
    }
    return 0;
}

static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    struct conn *c = user_data;
    c->got_preface = 1;
    if (frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA) {
        if (frame->hd.type == NGHTTP2_GOAWAY && frame->goaway.error_code != NGHTTP2_NO_ERROR)
            log_info("grpc: %s sent GOAWAY with error %s", c->peer,
                     nghttp2_http2_strerror(frame->goaway.error_code));
        return 0;
    }
    struct px_grpc_call *call = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
    if (!call)
        return 0;
    if (frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat == NGHTTP2_HCAT_REQUEST)
        call_start(c, call);
    if (!(frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
        return 0;
    call->remote_closed = 1;
    if (call->done)
        return 0;
    if (call->rx_hdr_have > 0)
        call_fail(call, PX_GRPC_INTERNAL, "stream ended in the middle of a message",
                  PX_GRPC_END_PROTOCOL);
    else if (call->m->h.kind != PX_GRPC_BIDI_STREAMING && call->nmsgs == 0)
        call_fail(call, PX_GRPC_INTERNAL, "half-closed without a request message",
                  PX_GRPC_END_PROTOCOL);
    else if (call->m->h.kind == PX_GRPC_BIDI_STREAMING && call->m->h.on_half_close)
        call->m->h.on_half_close(call, call->m->h.arg);
    return 0;
}

static int on_data_chunk(nghttp2_session *session, uint8_t flags, int32_t stream_id,
                         const uint8_t *data, size_t len, void *user_data)
{
    struct px_grpc_call *call = nghttp2_session_get_stream_user_data(session, stream_id);
    if (!call || call->done || !call->handed)
        return 0;
    call_rx(user_data, call, data, len);
    return 0;
}

static int on_frame_send(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    struct conn *c = user_data;
    if (frame->hd.type == NGHTTP2_GOAWAY) {
        if (frame->goaway.error_code != NGHTTP2_NO_ERROR) {
            c->goaway_err = 1;
            c->goaway_code = frame->goaway.error_code;
        }
        return 0;
    }
    if ((frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA) ||
        !(frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
        return 0;
    /* Our side is complete; stop a client that is still sending (gRPC servers
     * answer early on errors and must not have to swallow the rest). */
    if (nghttp2_session_get_stream_remote_close(session, frame->hd.stream_id) == 0)
        nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, frame->hd.stream_id,
                                  NGHTTP2_NO_ERROR);
    return 0;
}

static int on_stream_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code,
                           void *user_data)
{
    struct px_grpc_call *call = nghttp2_session_get_stream_user_data(session, stream_id);
    if (call)
        call_detach(call, PX_GRPC_END_RESET);
    return 0;
}

static int on_error(nghttp2_session *session, int lib_error_code, const char *msg, size_t len,
                    void *user_data)
{
    struct conn *c = user_data;
    if (!c->err[0])
        snprintf(c->err, sizeof(c->err), "%.*s", (int)len, msg);
    log_debug("grpc: %s: %.*s", c->peer, (int)len, msg);
    return 0;
}

static void conn_mark_dirty(struct conn *c)
{
    if (c->dirty || c->closing)
        return;
    c->dirty = 1;
    c->dirty_next = c->srv->dirty;
    c->srv->dirty = c;
    ev_prepare_start(c->srv->loop, &c->srv->prep);
}

static void conn_close_v(struct conn *c, int failed, const char *fmt, va_list ap)
{
    struct px_grpc_server *srv = c->srv;
    char why[256];
    vsnprintf(why, sizeof(why), fmt, ap);
    c->closing = 1;
    /* Every call is dead before any handler hears of it, so a handler's
     * reaction (sending on a sibling call) cannot touch this connection. */
    for (struct px_grpc_call *call = c->calls; call; call = call->next)
        call->cancelled = 1;
    if (failed) {
        log_warn("grpc: closing connection from %s: %s (%u open streams)", c->peer, why, c->nstreams);
        srv->st.conns_failed++;
    } else if (c->nstreams) {
        log_info("grpc: closing connection from %s: %s (%u open streams)", c->peer, why, c->nstreams);
    } else {
        log_debug("grpc: closing connection from %s: %s", c->peer, why);
    }
    if (c->dirty) {
        struct conn **pp = &srv->dirty;
        while (*pp != c)
            pp = &(*pp)->dirty_next;
        *pp = c->dirty_next;
        c->dirty = 0;
    }
    ev_io_stop(srv->loop, &c->rio);
    ev_io_stop(srv->loop, &c->wio);
    ev_timer_stop(srv->loop, &c->timer);
    close(c->fd);
    enum px_grpc_end_reason why_end = srv->shut_phase ? PX_GRPC_END_SHUTDOWN : PX_GRPC_END_CONN_LOST;
    while (c->calls) {
        struct px_grpc_call *call = c->calls;
        call_detach(call, why_end);
    }
    nghttp2_session_del(c->h2);
    buf_free(&c->out);
    if (c->prev)
        c->prev->next = c->next;
    else
        srv->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    srv->st.conns_open--;
    free(c);
    maybe_shutdown_done(srv);
}

static void conn_close(struct conn *c, int failed, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    conn_close_v(c, failed, fmt, ap);
    va_end(ap);
}

/* Moves nghttp2 output to the socket. May close the connection. */
static void conn_flush(struct conn *c)
{
    struct px_grpc_server *srv = c->srv;
    for (;;) {
        while (c->out.len - c->out_off < OUT_CHUNK) {
            const uint8_t *data;
            ssize_t n = nghttp2_session_mem_send(c->h2, &data);
            if (n < 0) {
                conn_close(c, 1, "HTTP/2 send failed: %s", nghttp2_strerror((int)n));
                return;
            }
            if (n == 0)
                break;
            if (buf_append(&c->out, data, (size_t)n)) {
                conn_close(c, 1, "out of memory for output");
                return;
            }
        }
        size_t pending = c->out.len - c->out_off;
        if (pending == 0)
            break;
        ssize_t w = send(c->fd, c->out.data + c->out_off, pending, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            conn_close(c, errno != EPIPE && errno != ECONNRESET, "write failed: %s", strerror(errno));
            return;
        }
        c->out_off += (size_t)w;
        c->last_write = ev_now(srv->loop);
        if (c->out_off < c->out.len)
            break;
        c->out.len = c->out_off = 0;
    }
    size_t pending = c->out.len - c->out_off;
    if (pending) {
        ev_io_start(srv->loop, &c->wio);
        if (!c->read_paused) {
            c->read_paused = 1;
            c->last_write = ev_now(srv->loop);
            ev_io_stop(srv->loop, &c->rio);
        }
        return;
    }
    ev_io_stop(srv->loop, &c->wio);
    if (c->out.cap > OUT_KEEP)
        buf_free(&c->out);
    if (!nghttp2_session_want_read(c->h2) && !nghttp2_session_want_write(c->h2)) {
        if (c->goaway_err)
            conn_close(c, 1, "protocol error (%s)%s%s", nghttp2_http2_strerror(c->goaway_code),
                       c->err[0] ? ": " : "", c->err);
        else
            conn_close(c, 0, "session finished");
        return;
    }
    if (c->read_paused) {
        c->read_paused = 0;
        ev_io_start(srv->loop, &c->rio);
    }
}

static void conn_read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct conn *c = w->data;
    struct px_grpc_server *srv = c->srv;
    ssize_t n = read(c->fd, srv->rbuf, RBUF_SIZE);
    if (n == 0) {
        if (c->nstreams)
            conn_close(c, 0, "peer closed the connection");
        else if (!c->got_preface)
            conn_close(c, 1, "peer closed before completing the HTTP/2 preface");
        else
            conn_close(c, 0, "peer closed the connection");
        return;
    }
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return;
        conn_close(c, errno != ECONNRESET, "read failed: %s", strerror(errno));
        return;
    }
    c->last_active = ev_now(loop);
    ssize_t rv = nghttp2_session_mem_recv(c->h2, srv->rbuf, (size_t)n);
    if (rv < 0) {
        if (rv == NGHTTP2_ERR_BAD_CLIENT_MAGIC)
            conn_close(c, 1, "not an HTTP/2 client preface (plain HTTP/1, TLS or garbage)");
        else if (rv == NGHTTP2_ERR_FLOODED)
            conn_close(c, 1, "flooding (too many control frames queued)");
        else
            conn_close(c, 1, "HTTP/2 error: %s%s%s", nghttp2_strerror((int)rv),
                       c->err[0] ? ": " : "", c->err);
        return;
    }
    conn_flush(c);
}

static void conn_write_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    conn_flush(w->data);
}

/* Handshake deadline, then a periodic check for write stalls and idleness. */
static void conn_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct conn *c = w->data;
    const struct px_grpc_config *cfg = &c->srv->cfg;
    double now = ev_now(loop);
    if (!c->got_preface) {
        conn_close(c, 1, "no HTTP/2 preface within %.1f s", cfg->handshake_timeout);
        return;
    }
    if (cfg->write_stall_timeout > 0 && c->out.len > c->out_off &&
        now - c->last_write >= cfg->write_stall_timeout) {
        conn_close(c, 1, "peer has not read its socket for %.1f s", now - c->last_write);
        return;
    }
    if (cfg->idle_timeout > 0 && c->nstreams == 0 && now - c->last_active >= cfg->idle_timeout) {
        log_debug("grpc: %s idle for %.0f s, sending GOAWAY", c->peer, cfg->idle_timeout);
        nghttp2_session_terminate_session(c->h2, NGHTTP2_NO_ERROR);
        conn_mark_dirty(c);
        return;
    }
    double next = 0;
    if (cfg->idle_timeout > 0)
        next = c->nstreams ? cfg->idle_timeout : c->last_active + cfg->idle_timeout - now;
    if (cfg->write_stall_timeout > 0 && (next == 0 || cfg->write_stall_timeout / 2 < next))
        next = cfg->write_stall_timeout / 2;
    if (next == 0)
        return;
    if (next < 0.01)
        next = 0.01;
    ev_timer_set(w, next, 0.);
    ev_timer_start(loop, w);
}

static void format_peer(int fd, char *out, size_t outlen)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    char host[INET6_ADDRSTRLEN] = "?";
    unsigned port = 0;
    if (getpeername(fd, (struct sockaddr *)&ss, &sl) == 0) {
        if (ss.ss_family == AF_INET) {
            struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
            inet_ntop(AF_INET, &sin->sin_addr, host, sizeof(host));
            port = ntohs(sin->sin_port);
        } else if (ss.ss_family == AF_INET6) {
            struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
            inet_ntop(AF_INET6, &sin6->sin6_addr, host, sizeof(host));
            port = ntohs(sin6->sin6_port);
            snprintf(out, outlen, "[%s]:%u", host, port);
            return;
        } else {
            snprintf(out, outlen, "local");
            return;
        }
    }
    snprintf(out, outlen, "%s:%u", host, port);
}

int px_grpc_server_adopt(struct px_grpc_server *srv, int fd)
{
    if (srv->shut_phase || srv->freeing) {
        close(fd);
        return -ESHUTDOWN;
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    struct conn *c = calloc(1, sizeof(*c));
    if (!c) {
        close(fd);
        return -ENOMEM;
    }
    c->srv = srv;
    c->fd = fd;
    c->id = ++srv->next_conn_id;
    format_peer(fd, c->peer, sizeof(c->peer));
    if (nghttp2_session_server_new2(&c->h2, srv->cbs, c, srv->opt) != 0) {
        close(fd);
        free(c);
        return -ENOMEM;
    }
    nghttp2_settings_entry iv[] = {
        { NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, srv->cfg.max_concurrent_streams },
        { NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, srv->cfg.stream_window },
        { NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, srv->cfg.max_header_bytes * 2 },
        { NGHTTP2_SETTINGS_NO_RFC7540_PRIORITIES, 1 },
    };
    int rv = nghttp2_submit_settings(c->h2, NGHTTP2_FLAG_NONE, iv, sizeof(iv) / sizeof(iv[0]));
    if (rv == 0 && srv->cfg.conn_window > NGHTTP2_INITIAL_CONNECTION_WINDOW_SIZE)
        rv = nghttp2_session_set_local_window_size(c->h2, NGHTTP2_FLAG_NONE, 0,
                                                   (int32_t)srv->cfg.conn_window);
    if (rv != 0) {
        nghttp2_session_del(c->h2);
        close(fd);
        free(c);
        return -ENOMEM;
    }
    c->last_active = c->last_write = ev_now(srv->loop);
    ev_io_init(&c->rio, conn_read_cb, fd, EV_READ);
    ev_io_init(&c->wio, conn_write_cb, fd, EV_WRITE);
    c->rio.data = c->wio.data = c;
    ev_timer_init(&c->timer, conn_timer_cb, srv->cfg.handshake_timeout, 0.);
    c->timer.data = c;
    ev_io_start(srv->loop, &c->rio);
    ev_timer_start(srv->loop, &c->timer);
    c->next = srv->conns;
    if (srv->conns)
        srv->conns->prev = c;
    srv->conns = c;
    srv->st.conns_open++;
    srv->st.conns_accepted++;
    conn_mark_dirty(c);
    log_debug("grpc: connection from %s", c->peer);
    return 0;
}

static void prepare_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
    struct px_grpc_server *srv = w->data;
    struct conn *c;
    while ((c = srv->dirty) != NULL) {
        srv->dirty = c->dirty_next;
        c->dirty = 0;
        conn_flush(c);
    }
    ev_prepare_stop(loop, w);
}

static void accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct px_grpc_server *srv = w->data;
    for (int i = 0; i < 64; i++) {
        int fd = accept4(srv->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ||
                errno == ECONNABORTED)
                return;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                log_warn("grpc: accept: %s; pausing accepts for 100 ms", strerror(errno));
                ev_io_stop(loop, &srv->aio);
                ev_timer_start(loop, &srv->accept_retry);
                return;
            }
            log_error("grpc: accept: %s", strerror(errno));
            return;
        }
        if (srv->st.conns_open >= srv->cfg.max_connections) {
            double now = ev_now(loop);
            if (now - srv->last_accept_warn >= 1.0) {
                char peer[64];
                format_peer(fd, peer, sizeof(peer));
                log_warn("grpc: refusing connection from %s: %u connections open (limit)",
                         peer, srv->st.conns_open);
                srv->last_accept_warn = now;
            }
            close(fd);
            continue;
        }
        int rc = px_grpc_server_adopt(srv, fd);
        if (rc < 0)
            log_error("grpc: cannot set up accepted connection: %s", strerror(-rc));
    }
}

static void accept_retry_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct px_grpc_server *srv = w->data;
    if (srv->lfd >= 0)
        ev_io_start(loop, &srv->aio);
}

int px_grpc_server_listen(struct px_grpc_server *srv, const char *host, uint16_t port)
{
    if (srv->lfd >= 0)
        return -EALREADY;
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    char ps[8];
    snprintf(ps, sizeof(ps), "%u", port);
    int gai = getaddrinfo(host, ps, &hints, &res);
    if (gai != 0) {
        log_error("grpc: cannot resolve listen address %s: %s", host ? host : "*", gai_strerror(gai));
        return -EINVAL;
    }
    int err = EADDRNOTAVAIL;
    int fd = -1;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            err = errno;
            continue;
        }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (srv->cfg.reuseport)
            setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 1024) == 0)
            break;
        err = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0) {
        log_error("grpc: cannot listen on %s:%u: %s", host ? host : "*", port, strerror(err));
        return -err;
    }
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
        srv->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                   : ((struct sockaddr_in *)&ss)->sin_port);
    srv->lfd = fd;
    ev_io_init(&srv->aio, accept_cb, fd, EV_READ);
    srv->aio.data = srv;
    ev_io_start(srv->loop, &srv->aio);
    log_info("grpc: listening on %s:%u", host ? host : "*", srv->port);
    return 0;
}

uint16_t px_grpc_server_port(const struct px_grpc_server *srv)
{
    return srv->port;
}

struct px_grpc_server *px_grpc_server_new(struct ev_loop *loop, const struct px_grpc_config *cfg)
{
    struct px_grpc_server *srv = calloc(1, sizeof(*srv));
    if (!srv)
        return NULL;
    srv->loop = loop;
    if (cfg)
        srv->cfg = *cfg;
    else
        px_grpc_config_default(&srv->cfg);
    srv->lfd = -1;
    srv->rbuf = malloc(RBUF_SIZE);
    if (!srv->rbuf || nghttp2_session_callbacks_new(&srv->cbs) != 0 ||
        nghttp2_option_new(&srv->opt) != 0) {
        server_destroy(srv);
        return NULL;
    }
    nghttp2_session_callbacks_set_on_begin_headers_callback(srv->cbs, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(srv->cbs, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(srv->cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(srv->cbs, on_data_chunk);
    nghttp2_session_callbacks_set_on_frame_send_callback(srv->cbs, on_frame_send);
    nghttp2_session_callbacks_set_on_stream_close_callback(srv->cbs, on_stream_close);
    nghttp2_session_callbacks_set_error_callback2(srv->cbs, on_error);
    nghttp2_option_set_no_closed_streams(srv->opt, 1);
    ev_prepare_init(&srv->prep, prepare_cb);
    srv->prep.data = srv;
    ev_timer_init(&srv->accept_retry, accept_retry_cb, 0.1, 0.);
    srv->accept_retry.data = srv;
    srv->shut_timer.data = srv;
    ev_timer_init(&srv->shut_done_timer, shut_done_cb, 0., 0.);
    srv->shut_done_timer.data = srv;
    return srv;
}

static void stop_listening(struct px_grpc_server *srv)
{
    ev_io_stop(srv->loop, &srv->aio);
    ev_timer_stop(srv->loop, &srv->accept_retry);
    if (srv->lfd >= 0) {
        close(srv->lfd);
        srv->lfd = -1;
    }
}

static void maybe_shutdown_done(struct px_grpc_server *srv)
{
    if (srv->shut_phase && !srv->conns && srv->shut_done) {
        ev_timer_stop(srv->loop, &srv->shut_timer);
        ev_timer_start(srv->loop, &srv->shut_done_timer);
    }
}

/* Separate event so that `done` may free the server. */
static void shut_done_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct px_grpc_server *srv = w->data;
    void (*done)(void *) = srv->shut_done;
    srv->shut_done = NULL;
    if (done)
        done(srv->shut_arg);
}

static void shut_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct px_grpc_server *srv = w->data;
    if (srv->shut_phase == 1) {
        /* Clients had a round trip to see the notice; now the real GOAWAY. */
        srv->shut_phase = 2;
        for (struct conn *c = srv->conns; c; c = c->next) {
            nghttp2_submit_goaway(c->h2, NGHTTP2_FLAG_NONE,
                                  nghttp2_session_get_last_proc_stream_id(c->h2),
                                  NGHTTP2_NO_ERROR, NULL, 0);
            conn_mark_dirty(c);
        }
        ev_timer_set(w, srv->shut_rest, 0.);
        ev_timer_start(loop, w);
        return;
    }
    while (srv->conns)
        conn_close(srv->conns, 0, "shutdown grace period over");
}

void px_grpc_server_shutdown(struct px_grpc_server *srv, double grace,
                             void (*done)(void *arg), void *arg)
{
    stop_listening(srv);
    srv->shut_done = done;
    srv->shut_arg = arg;
    if (srv->shut_phase == 0) {
        srv->shut_phase = 1;
        for (struct conn *c = srv->conns; c; c = c->next) {
            nghttp2_submit_shutdown_notice(c->h2);
            conn_mark_dirty(c);
        }
        double notice = grace > 0.2 ? 0.1 : grace / 2;
        srv->shut_rest = grace - notice;
        ev_timer_init(&srv->shut_timer, shut_timer_cb, notice, 0.);
        ev_timer_start(srv->loop, &srv->shut_timer);
    }
    maybe_shutdown_done(srv);
}

static void server_destroy(struct px_grpc_server *srv)
{
    while (srv->pool) {
        struct px_grpc_call *call = srv->pool;
        srv->pool = call->next;
        buf_free(&call->rx);
        buf_free(&call->tx);
        buf_free(&call->meta);
        buf_free(&call->trail);
        free(call);
    }
    for (size_t i = 0; i < srv->nmethods; i++)
        free(srv->methods[i].path);
    free(srv->methods);
    if (srv->cbs)
        nghttp2_session_callbacks_del(srv->cbs);
    if (srv->opt)
        nghttp2_option_del(srv->opt);
    free(srv->rbuf);
    free(srv);
}

void px_grpc_server_free(struct px_grpc_server *srv)
{
    if (!srv)
        return;
    stop_listening(srv);
    if (!srv->shut_phase)
        srv->shut_phase = 2;
    srv->shut_done = NULL;
    ev_timer_stop(srv->loop, &srv->shut_timer);
    ev_timer_stop(srv->loop, &srv->shut_done_timer);
    while (srv->conns)
        conn_close(srv->conns, 0, "server stopped");
    ev_prepare_stop(srv->loop, &srv->prep);
    srv->freeing = 1;
    if (srv->st.calls_live == 0)
        server_destroy(srv);
}

void px_grpc_server_stats(const struct px_grpc_server *srv, struct px_grpc_stats *out)
{
    *out = srv->st;
}
