/*
 * rmqbench transport over RocketMQ 5 gRPC (see bench_transport.h): an h2c
 * client (nghttp2 client session on the caller's libev loop) talking to the
 * proxy the way the official 5.x clients do.
 *
 * A handle opens a few connections and multiplexes many concurrent calls
 * over each (one HTTP/2 stream per call, round robin over connections).
 * Creation blocks until the handle is usable: QueryRoute of the topic (fails
 * early when the proxy does not know it), a Heartbeat, and the Telemetry
 * settings exchange (client type, topics or subscription); the Telemetry
 * stream stays open and a Heartbeat goes out every 10 s, as in the official
 * clients.
 *
 * Producer: one unary SendMessage per message; the entry's status decides
 * success. gRPC has no oneway call: send_oneway is a SendMessage whose answer
 * is only counted, and barrier waits for every answer outstanding. A timer
 * message is a DELAY message with a delivery_timestamp; the consumer reports
 * the delivery_timestamp of what it receives as the due time.
 *
 * Consumer: `concurrency` ReceiveMessage calls (server streaming: status,
 * messages, delivery timestamp) are kept in flight, spread over the brokers
 * of the route; each finished receive hands its batch to on_recv, acks it
 * with one AckMessage carrying every receipt handle, and is issued again.
 *
 * Hot path: calls come from a free list with their buffers kept; requests
 * are packed straight into the call's output buffer; responses are unpacked
 * into a per-handle arena reset after each message; writes of all calls
 * submitted in one loop iteration go out together (ev_prepare flush).
 */
#include <errno.h>
#include <stdatomic.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <nghttp2/nghttp2.h>
#include <protobuf-c/protobuf-c.h>

#include "apache/rocketmq/v2/service.pb-c.h"
#include "bench_transport.h"
#include "buf.h"

#define SVC "/apache.rocketmq.v2.MessagingService/"
#define MAX_CONNS 64
#define MAX_BROKERS 64
#define DEFAULT_CONNS 4
#define DEFAULT_RECEIVES 16
#define MAX_RECV_BATCH 32
#define ARENA_SIZE (512u * 1024)
#define HEARTBEAT_S 10.0
#define LONG_POLL_MS 5000
#define INVISIBLE_MS 30000
#define STARTUP_S 10.0

#define CODE_OK APACHE__ROCKETMQ__V2__CODE__OK
#define CODE_NOT_FOUND APACHE__ROCKETMQ__V2__CODE__MESSAGE_NOT_FOUND

struct gcl;
struct gconn;
struct gcall;

/* One gRPC message of a response; `msg` valid during the call. */
typedef void (*gcall_msg_fn)(struct gcall *c, const uint8_t *msg, size_t len);
/* The call ended: grpc-status (-1: none seen; the stream was reset or the
 * connection lost) and grpc-message. */
typedef void (*gcall_done_fn)(struct gcall *c, int status, const char *msg);

struct gcall {
    struct gcl *cl;
    struct gconn *conn;
    int32_t sid;
    struct buf tx;
    size_t tx_off;
    bool tx_eof, deferred;
    struct buf rx;
    size_t rx_off;
    int status;
    char gmsg[160];
    gcall_msg_fn on_msg;
    gcall_done_fn on_done;
    struct gcall *cprev, *cnext;  /* the connection's open calls */
    /* What the call is for. */
    struct bt_slot *slot;
    void *ctx;                 /* startup steps: their completion */
    int code;                  /* RocketMQ status code seen, -1 none */
    char errmsg[200];
    int broker;                /* consumer: index into brokers */
    int nmsgs;
    struct buf handles;        /* consumer: "msgid\0handle\0" pairs */
    struct buf recs;           /* consumer: struct bt_recv per message */
    struct gcall *next_free;
};

struct gconn {
    struct gcl *cl;
    int fd;
    nghttp2_session *s;
    ev_io rio, wio;
    struct buf out;
    size_t out_off;
    bool dead, goaway, dirty;
    struct gcall *calls;
};

struct gcl {
    struct ev_loop *loop;
    char host[100];
    int port;
    char authority[128];
    char client_id[128];
    char hostname[128];
    int nconns;
    struct gconn conns[MAX_CONNS];
    uint32_t rr;
    ev_prepare flush;
    ev_timer hb, wake;
    struct gcall *free_calls;
    int live_calls;
    struct gcall *telemetry;
    bool settings_ok;
    int ctype;                 /* ClientType */
    char topic[256];
    char group[256];
    int nbrokers;
    char brokers[MAX_BROKERS][128];
    _Alignas(16) uint8_t arena[ARENA_SIZE]; /* 16-aligned: unpacked messages live here */
    size_t arena_used;
    ProtobufCAllocator alloc;
    uint64_t seq;
    int timeout_ms;
    char fatal[512];
    /* producer */
    int inflight;
    /* consumer */
    bt_recv_fn on_recv;
    void *ud;
    int batch, want_receives, receives, acks;
    bool stopping;
};

static double now_mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t ts_ms(const Google__Protobuf__Timestamp *t)
{
    return t ? t->seconds * 1000 + t->nanos / 1000000 : 0;
}

/* Arena for unpacked responses: bump allocation, reset after each use;
 * what does not fit falls back to malloc. */
static void *ar_alloc(void *ud, size_t n)
{
    struct gcl *cl = ud;
    size_t a = (n + 15) & ~(size_t)15;
    if (cl->arena_used + a <= ARENA_SIZE) {
        void *p = cl->arena + cl->arena_used;
        cl->arena_used += a;
        return p;
    }
    return malloc(n);
}

static void ar_free(void *ud, void *p)
{
    struct gcl *cl = ud;
    if ((uint8_t *)p >= cl->arena && (uint8_t *)p < cl->arena + ARENA_SIZE)
        return;
    free(p);
}

static ProtobufCMessage *unpack(struct gcl *cl, const ProtobufCMessageDescriptor *d, const uint8_t *m,
                                size_t len)
{
    return protobuf_c_message_unpack(d, &cl->alloc, len, m);
}

static void unpacked_free(struct gcl *cl, ProtobufCMessage *m)
{
    if (m)
        protobuf_c_message_free_unpacked(m, &cl->alloc);
    cl->arena_used = 0;
}

static void conn_fail(struct gconn *cn, const char *why);

static void conn_flush(struct gconn *cn)
{
    if (cn->dead)
        return;
    cn->dirty = false;
    for (;;) {
        if (cn->out_off == cn->out.len) {
            buf_reset(&cn->out);
            cn->out_off = 0;
            const uint8_t *d;
            ssize_t n;
            /* Gather what nghttp2 has into one write. */
            while ((n = nghttp2_session_mem_send(cn->s, &d)) > 0)
                if (buf_append(&cn->out, d, (size_t)n)) {
                    conn_fail(cn, "out of memory");
                    return;
                }
            if (n < 0) {
                conn_fail(cn, nghttp2_strerror((int)n));
                return;
            }
            if (cn->out.len == 0)
                break;
        }
        ssize_t w = write(cn->fd, cn->out.data + cn->out_off, cn->out.len - cn->out_off);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                if (!ev_is_active(&cn->wio))
                    ev_io_start(cn->cl->loop, &cn->wio);
                return;
            }
            conn_fail(cn, strerror(errno));
            return;
        }
        cn->out_off += (size_t)w;
    }
    if (ev_is_active(&cn->wio))
        ev_io_stop(cn->cl->loop, &cn->wio);
}

static void call_put(struct gcall *c)
{
    struct gcl *cl = c->cl;
    if (c->tx.cap > 1024 * 1024) {
        buf_free(&c->tx);
        c->tx = (struct buf)BUF_INIT;
    }
    if (c->rx.cap > 1024 * 1024) {
        buf_free(&c->rx);
        c->rx = (struct buf)BUF_INIT;
    }
    c->next_free = cl->free_calls;
    cl->free_calls = c;
    cl->live_calls--;
}

static struct gcall *call_get(struct gcl *cl)
{
    struct gcall *c = cl->free_calls;
    if (c) {
        cl->free_calls = c->next_free;
    } else {
        c = calloc(1, sizeof *c);
        if (!c)
            return NULL;
    }
    struct buf tx = c->tx, rx = c->rx, h = c->handles, r = c->recs;
    memset(c, 0, sizeof *c);
    c->tx = tx;
    c->rx = rx;
    c->handles = h;
    c->recs = r;
    buf_reset(&c->tx);
    buf_reset(&c->rx);
    buf_reset(&c->handles);
    buf_reset(&c->recs);
    c->cl = cl;
    c->status = -1;
    c->code = -1;
    cl->live_calls++;
    return c;
}

static void calls_free(struct gcl *cl)
{
    while (cl->free_calls) {
        struct gcall *c = cl->free_calls;
        cl->free_calls = c->next_free;
        buf_free(&c->tx);
        buf_free(&c->rx);
        buf_free(&c->handles);
        buf_free(&c->recs);
        free(c);
    }
}

static int hexval(int ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    return -1;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name, size_t nl,
                     const uint8_t *val, size_t vl, uint8_t flags, void *ud)
{
    struct gcall *c = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
    if (!c)
        return 0;
    if (nl == 11 && memcmp(name, "grpc-status", 11) == 0) {
        c->status = 0;
        for (size_t i = 0; i < vl && val[i] >= '0' && val[i] <= '9' && c->status < 1000; i++)
            c->status = c->status * 10 + (val[i] - '0');
    } else if (nl == 12 && memcmp(name, "grpc-message", 12) == 0) {
        size_t o = 0;
        for (size_t i = 0; i < vl && o + 1 < sizeof c->gmsg; i++) {
            if (val[i] == '%' && i + 2 < vl && hexval(val[i + 1]) >= 0 && hexval(val[i + 2]) >= 0) {
                c->gmsg[o++] = (char)(hexval(val[i + 1]) * 16 + hexval(val[i + 2]));
                i += 2;
            } else {
                c->gmsg[o++] = (char)val[i];
            }
        }
        c->gmsg[o] = 0;
    }
    return 0;
}

/* Hands every complete gRPC message received so far to on_msg. */
static int on_data(nghttp2_session *s, uint8_t flags, int32_t sid, const uint8_t *data, size_t len,
                   void *ud)
{
    struct gcall *c = nghttp2_session_get_stream_user_data(s, sid);
    if (!c)
        return 0;
    if (buf_append(&c->rx, data, len))
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    while (c->rx.len - c->rx_off >= 5) {
        const uint8_t *p = c->rx.data + c->rx_off;
        uint32_t ml = rd_u32be(p + 1);
        if (c->rx.len - c->rx_off - 5 < ml)
            break;
        if (p[0] != 0) {
            snprintf(c->errmsg, sizeof c->errmsg, "compressed response message (not asked for)");
            nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, sid, NGHTTP2_INTERNAL_ERROR);
            c->rx_off = c->rx.len;
            break;
        }
        c->rx_off += 5 + (size_t)ml;
        if (c->on_msg)
            c->on_msg(c, p + 5, ml);
    }
    if (c->rx_off == c->rx.len) {
        buf_reset(&c->rx);
        c->rx_off = 0;
    }
    return 0;
}

static void call_unlink(struct gcall *c)
{
    struct gconn *cn = c->conn;
    if (c->cprev)
        c->cprev->cnext = c->cnext;
    else
        cn->calls = c->cnext;
    if (c->cnext)
        c->cnext->cprev = c->cprev;
    c->cprev = c->cnext = NULL;
    if (c == cn->cl->telemetry)
        cn->cl->telemetry = NULL;
}

static int on_close(nghttp2_session *s, int32_t sid, uint32_t code, void *ud)
{
    struct gcall *c = nghttp2_session_get_stream_user_data(s, sid);
    if (!c)
        return 0;
    nghttp2_session_set_stream_user_data(s, sid, NULL);
    call_unlink(c);
    if (c->status < 0 && !c->gmsg[0])
        snprintf(c->gmsg, sizeof c->gmsg, "stream closed without grpc-status (HTTP/2 code %u)", code);
    c->on_done(c, c->status, c->gmsg);
    call_put(c);
    return 0;
}

static int on_frame(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
    struct gconn *cn = ud;
    if (f->hd.type == NGHTTP2_GOAWAY)
        cn->goaway = true;
    return 0;
}

static ssize_t tx_read(nghttp2_session *s, int32_t sid, uint8_t *out, size_t length, uint32_t *flags,
                       nghttp2_data_source *src, void *ud)
{
    struct gcall *c = src->ptr;
    size_t avail = c->tx.len - c->tx_off;
    size_t n = avail < length ? avail : length;
    memcpy(out, c->tx.data + c->tx_off, n);
    c->tx_off += n;
    if (c->tx_off == c->tx.len) {
        buf_reset(&c->tx);
        c->tx_off = 0;
        if (c->tx_eof) {
            *flags |= NGHTTP2_DATA_FLAG_EOF;
        } else if (n == 0) {
            c->deferred = true;
            return NGHTTP2_ERR_DEFERRED;
        }
    }
    return (ssize_t)n;
}

/* Ends every call of a broken connection (their on_done sees status -1). */
static void conn_fail(struct gconn *cn, const char *why)
{
    if (cn->dead)
        return;
    cn->dead = true;
    struct gcl *cl = cn->cl;
    if (!cl->fatal[0] && !cl->stopping)
        snprintf(cl->fatal, sizeof cl->fatal, "connection to %s lost: %.200s", cl->authority, why);
    ev_io_stop(cl->loop, &cn->rio);
    ev_io_stop(cl->loop, &cn->wio);
    /* nghttp2_session_del runs no callbacks: end the open calls here. */
    while (cn->calls) {
        struct gcall *c = cn->calls;
        if (cn->s)
            nghttp2_session_set_stream_user_data(cn->s, c->sid, NULL);
        call_unlink(c);
        snprintf(c->gmsg, sizeof c->gmsg, "connection lost: %.100s", why);
        c->on_done(c, -1, c->gmsg);
        call_put(c);
    }
    nghttp2_session_del(cn->s);
    cn->s = NULL;
    if (cn->fd >= 0)
        close(cn->fd);
    cn->fd = -1;
}

static void rio_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct gconn *cn = w->data;
    uint8_t b[64 * 1024];
    for (int rounds = 0; rounds < 16 && !cn->dead; rounds++) {
        ssize_t n = read(cn->fd, b, sizeof b);
        if (n == 0) {
            conn_fail(cn, "closed by the server");
            return;
        }
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                conn_fail(cn, strerror(errno));
            break;
        }
        ssize_t r = nghttp2_session_mem_recv(cn->s, b, (size_t)n);
        if (r < 0) {
            conn_fail(cn, nghttp2_strerror((int)r));
            return;
        }
        if ((size_t)n < sizeof b)
            break;
    }
    if (!cn->dead)
        conn_flush(cn);
}

static void wio_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    conn_flush(w->data);
}

static void flush_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
    struct gcl *cl = w->data;
    for (int i = 0; i < cl->nconns; i++)
        if (cl->conns[i].dirty)
            conn_flush(&cl->conns[i]);
}

static int conn_open(struct gcl *cl, struct gconn *cn)
{
    memset(cn, 0, sizeof *cn);
    cn->cl = cl;
    cn->fd = -1;
    char port[16];
    snprintf(port, sizeof port, "%d", cl->port);
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM }, *res = NULL;
    int e = getaddrinfo(cl->host, port, &hints, &res);
    if (e) {
        snprintf(cl->fatal, sizeof cl->fatal, "cannot resolve %s: %s", cl->host, gai_strerror(e));
        return -EHOSTUNREACH;
    }
    int err = ECONNREFUSED;
    for (struct addrinfo *a = res; a && cn->fd < 0; a = a->ai_next) {
        int fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0) {
            err = errno;
            continue;
        }
        if (connect(fd, a->ai_addr, a->ai_addrlen)) {
            err = errno;
            close(fd);
            continue;
        }
        cn->fd = fd;
    }
    freeaddrinfo(res);
    if (cn->fd < 0) {
        snprintf(cl->fatal, sizeof cl->fatal, "cannot connect to %s: %s", cl->authority, strerror(err));
        return -err;
    }
    int one = 1;
    setsockopt(cn->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fcntl(cn->fd, F_SETFL, fcntl(cn->fd, F_GETFL) | O_NONBLOCK);
    nghttp2_session_callbacks *cb;
    if (nghttp2_session_callbacks_new(&cb)) {
        close(cn->fd);
        cn->fd = -1;
        return -ENOMEM;
    }
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_close);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame);
    int rc = nghttp2_session_client_new(&cn->s, cb, cn);
    nghttp2_session_callbacks_del(cb);
    if (rc) {
        close(cn->fd);
        cn->fd = -1;
        return -ENOMEM;
    }
    nghttp2_settings_entry iv[] = {
        { NGHTTP2_SETTINGS_ENABLE_PUSH, 0 },
        { NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 4 * 1024 * 1024 },
        { NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 100000 },
    };
    nghttp2_submit_settings(cn->s, NGHTTP2_FLAG_NONE, iv, 3);
    nghttp2_session_set_local_window_size(cn->s, NGHTTP2_FLAG_NONE, 0, 64 * 1024 * 1024);
    ev_io_init(&cn->rio, rio_cb, cn->fd, EV_READ);
    ev_io_init(&cn->wio, wio_cb, cn->fd, EV_WRITE);
    cn->rio.data = cn->wio.data = cn;
    ev_io_start(cl->loop, &cn->rio);
    cn->dirty = true;
    return 0;
}

static struct gconn *pick_conn(struct gcl *cl)
{
    for (int i = 0; i < cl->nconns; i++) {
        struct gconn *cn = &cl->conns[cl->rr++ % (uint32_t)cl->nconns];
        if (!cn->dead && !cn->goaway)
            return cn;
    }
    return NULL;
}

/* Appends one gRPC-framed message to the call's output. */
static int frame_pb(struct gcall *c, const ProtobufCMessage *m)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    if (buf_reserve(&c->tx, n + 5))
        return -ENOMEM;
    uint8_t *p = c->tx.data + c->tx.len;
    p[0] = 0;
    p[1] = (uint8_t)(n >> 24);
    p[2] = (uint8_t)(n >> 16);
    p[3] = (uint8_t)(n >> 8);
    p[4] = (uint8_t)n;
    protobuf_c_message_pack(m, p + 5);
    c->tx.len += n + 5;
    return 0;
}

/* Starts a call of `method` whose first message is in c->tx; eof: the
 * request is complete (unary / server streaming). */
static int call_start(struct gcall *c, const char *method, int timeout_ms, bool eof)
{
    struct gcl *cl = c->cl;
    struct gconn *cn = pick_conn(cl);
    if (!cn)
        return -ENOTCONN;
    char path[128], tmo[24], reqid[32];
    snprintf(path, sizeof path, SVC "%s", method);
    snprintf(tmo, sizeof tmo, "%dm", timeout_ms);
    snprintf(reqid, sizeof reqid, "%llu", (unsigned long long)++cl->seq);
    nghttp2_nv nv[12];
    size_t n = 0;
#define NV(a, b, fl) nv[n++] = (nghttp2_nv){ (uint8_t *)(a), (uint8_t *)(b), strlen(a), strlen(b), fl }
    NV(":method", "POST", NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE);
    NV(":scheme", "http", NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE);
    NV(":path", path, NGHTTP2_NV_FLAG_NO_COPY_NAME);
    NV(":authority", cl->authority, NGHTTP2_NV_FLAG_NO_COPY_NAME);
    NV("content-type", "application/grpc", NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE);
    NV("te", "trailers", NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE);
    NV("grpc-timeout", tmo, NGHTTP2_NV_FLAG_NO_COPY_NAME);
    NV("x-mq-client-id", cl->client_id, NGHTTP2_NV_FLAG_NO_COPY_NAME);
    NV("x-mq-language", "CPP", NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE);
    NV("x-mq-protocol", "v2", NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE);
    NV("x-mq-client-version", "rmqbench-0.1", NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE);
    NV("x-mq-request-id", reqid, NGHTTP2_NV_FLAG_NO_COPY_NAME);
#undef NV
    c->tx_eof = eof;
    c->tx_off = 0;
    nghttp2_data_provider prd = { .source.ptr = c, .read_callback = tx_read };
    int32_t sid = nghttp2_submit_request(cn->s, NULL, nv, n, &prd, c);
    if (sid < 0)
        return sid == NGHTTP2_ERR_NOMEM ? -ENOMEM : -EAGAIN;
    c->sid = sid;
    c->conn = cn;
    c->cnext = cn->calls;
    if (cn->calls)
        cn->calls->cprev = c;
    cn->calls = c;
    cn->dirty = true;
    return 0;
}

/* Frames m as the call's one request and starts it; on failure the call
 * goes back to the free list. Returns 0 or -errno. */
static int call_send(struct gcall *c, const ProtobufCMessage *m, const char *method, int timeout_ms, bool eof)
{
    int rc = frame_pb(c, m);
    if (!rc)
        rc = call_start(c, method, timeout_ms, eof);
    if (rc)
        call_put(c);
    return rc;
}

/* More messages on an open client-streaming call (Telemetry). */
static int call_more(struct gcall *c, const ProtobufCMessage *m, bool eof)
{
    if (m && frame_pb(c, m))
        return -ENOMEM;
    if (eof)
        c->tx_eof = true;
    if (c->deferred && c->conn && !c->conn->dead) {
        c->deferred = false;
        nghttp2_session_resume_data(c->conn->s, c->sid);
    }
    if (c->conn)
        c->conn->dirty = true;
    return 0;
}

static void wake_cb(struct ev_loop *loop, ev_timer *w, int revents) { }

/* Runs the loop until *flag or the time is up; false on timeout. */
static bool run_until(struct gcl *cl, const bool *flag, double secs)
{
    double end = now_mono() + secs;
    while (!*flag) {
        double left = end - now_mono();
        if (left <= 0)
            return false;
        ev_timer_set(&cl->wake, left < 0.05 ? left : 0.05, 0);
        ev_timer_start(cl->loop, &cl->wake);
        ev_run(cl->loop, EVRUN_ONCE);
        ev_timer_stop(cl->loop, &cl->wake);
    }
    return true;
}

static void status_of(const Apache__Rocketmq__V2__Status *st, struct gcall *c)
{
    c->code = st ? (int)st->code : -1;
    if (st && st->code != CODE_OK)
        snprintf(c->errmsg, sizeof c->errmsg, "%.190s", st->message ? st->message : "");
}

static void make_resource(Apache__Rocketmq__V2__Resource *r, const char *name)
{
    apache__rocketmq__v2__resource__init(r);
    r->name = (char *)name;
    r->resource_namespace = (char *)"";
}

/* The access point clients announce: the endpoint they were given. */
struct ep {
    Apache__Rocketmq__V2__Address a;
    Apache__Rocketmq__V2__Address *ap[1];
    Apache__Rocketmq__V2__Endpoints e;
};

static void make_endpoints(struct gcl *cl, struct ep *ep)
{
    apache__rocketmq__v2__address__init(&ep->a);
    ep->a.host = cl->host;
    ep->a.port = cl->port;
    ep->ap[0] = &ep->a;
    apache__rocketmq__v2__endpoints__init(&ep->e);
    bool name = false, v6 = strchr(cl->host, ':') != NULL;
    for (const char *p = cl->host; *p && !v6; p++)
        if ((*p < '0' || *p > '9') && *p != '.')
            name = true;
    ep->e.scheme = v6 ? APACHE__ROCKETMQ__V2__ADDRESS_SCHEME__IPv6
                      : name ? APACHE__ROCKETMQ__V2__ADDRESS_SCHEME__DOMAIN_NAME
                             : APACHE__ROCKETMQ__V2__ADDRESS_SCHEME__IPv4;
    ep->e.n_addresses = 1;
    ep->e.addresses = ep->ap;
}

/* Startup steps share one completion flag and error. */
struct step {
    bool done;
    int err;
    char msg[256];
};

static void route_msg(struct gcall *c, const uint8_t *m, size_t len)
{
    struct gcl *cl = c->cl;
    Apache__Rocketmq__V2__QueryRouteResponse *r =
        (void *)unpack(cl, &apache__rocketmq__v2__query_route_response__descriptor, m, len);
    if (!r) {
        snprintf(c->errmsg, sizeof c->errmsg, "unreadable QueryRouteResponse");
        return;
    }
    status_of(r->status, c);
    cl->nbrokers = 0;
    for (size_t i = 0; i < r->n_message_queues; i++) {
        const Apache__Rocketmq__V2__MessageQueue *q = r->message_queues[i];
        if (!q->broker || !q->broker->name || q->broker->id != 0)
            continue;
        bool dup = false;
        for (int k = 0; k < cl->nbrokers && !dup; k++)
            dup = !strcmp(cl->brokers[k], q->broker->name);
        if (!dup && cl->nbrokers < MAX_BROKERS)
            snprintf(cl->brokers[cl->nbrokers++], sizeof cl->brokers[0], "%.127s", q->broker->name);
    }
    unpacked_free(cl, &r->base);
}

static void step_done(struct gcall *c, int status, const char *msg)
{
    struct step *st = c->ctx;
    st->done = true;
    if (status != 0) {
        st->err = -EPROTO;
        snprintf(st->msg, sizeof st->msg, "grpc-status %d: %.200s", status, msg);
    } else if (c->code != CODE_OK) {
        st->err = -EPROTO;
        snprintf(st->msg, sizeof st->msg, "code %d: %.200s", c->code, c->code < 0 ? "no response" : c->errmsg);
    }
}

static void status_msg(struct gcall *c, const uint8_t *m, size_t len)
{
    /* Field 1 of every unary response is its Status. */
    Apache__Rocketmq__V2__HeartbeatResponse *r =
        (void *)unpack(c->cl, &apache__rocketmq__v2__heartbeat_response__descriptor, m, len);
    if (r)
        status_of(r->status, c);
    unpacked_free(c->cl, r ? &r->base : NULL);
}

static int query_route(struct gcl *cl, struct step *st)
{
    struct gcall *c = call_get(cl);
    if (!c)
        return -ENOMEM;
    Apache__Rocketmq__V2__Resource t;
    make_resource(&t, cl->topic);
    struct ep ep;
    make_endpoints(cl, &ep);
    Apache__Rocketmq__V2__QueryRouteRequest q = APACHE__ROCKETMQ__V2__QUERY_ROUTE_REQUEST__INIT;
    q.topic = &t;
    q.endpoints = &ep.e;
    c->on_msg = route_msg;
    c->on_done = step_done;
    c->ctx = st;
    return call_send(c, &q.base, "QueryRoute", cl->timeout_ms, true);
}

static void hb_done(struct gcall *c, int status, const char *msg)
{
    if (c->ctx)
        step_done(c, status, msg);
}

static int heartbeat(struct gcl *cl, struct step *st)
{
    struct gcall *c = call_get(cl);
    if (!c)
        return -ENOMEM;
    Apache__Rocketmq__V2__Resource g;
    make_resource(&g, cl->group);
    Apache__Rocketmq__V2__HeartbeatRequest h = APACHE__ROCKETMQ__V2__HEARTBEAT_REQUEST__INIT;
    h.client_type = (Apache__Rocketmq__V2__ClientType)cl->ctype;
    if (cl->ctype != APACHE__ROCKETMQ__V2__CLIENT_TYPE__PRODUCER)
        h.group = &g;
    c->on_msg = status_msg;
    c->on_done = hb_done;
    c->ctx = st;
    return call_send(c, &h.base, "Heartbeat", cl->timeout_ms, true);
}

static void hb_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    heartbeat(w->data, NULL);
}

static void tele_msg(struct gcall *c, const uint8_t *m, size_t len)
{
    struct gcl *cl = c->cl;
    Apache__Rocketmq__V2__TelemetryCommand *t =
        (void *)unpack(cl, &apache__rocketmq__v2__telemetry_command__descriptor, m, len);
    if (t && t->command_case == APACHE__ROCKETMQ__V2__TELEMETRY_COMMAND__COMMAND_SETTINGS) {
        status_of(t->status, c);
        cl->settings_ok = true;
    } else if (t && t->status && t->status->code != CODE_OK) {
        status_of(t->status, c);
        cl->settings_ok = true;
    }
    unpacked_free(cl, t ? &t->base : NULL);
}

static void tele_done(struct gcall *c, int status, const char *msg)
{
    struct gcl *cl = c->cl;
    if (!cl->settings_ok) {
        cl->settings_ok = true;
        c->code = -1;
        snprintf(c->errmsg, sizeof c->errmsg, "Telemetry ended (grpc-status %d: %.120s)", status, msg);
    }
    if (!cl->stopping && !cl->fatal[0])
        snprintf(cl->fatal, sizeof cl->fatal, "Telemetry stream ended by the proxy (grpc-status %d: %.120s)",
                 status, msg);
}

/* Opens the Telemetry stream with this client's settings and waits for the
 * proxy's answer. */
static int telemetry_start(struct gcl *cl, char *err, size_t errlen)
{
    struct gcall *c = call_get(cl);
    if (!c)
        return -ENOMEM;
    struct ep ep;
    make_endpoints(cl, &ep);
    Apache__Rocketmq__V2__Resource topic, group;
    make_resource(&topic, cl->topic);
    make_resource(&group, cl->group);
    Apache__Rocketmq__V2__Resource *topics[1] = { &topic };
    Google__Protobuf__Duration rt = GOOGLE__PROTOBUF__DURATION__INIT, lp = GOOGLE__PROTOBUF__DURATION__INIT;
    rt.seconds = cl->timeout_ms / 1000;
    rt.nanos = (cl->timeout_ms % 1000) * 1000000;
    lp.seconds = LONG_POLL_MS / 1000;
    Apache__Rocketmq__V2__UA ua = APACHE__ROCKETMQ__V2__UA__INIT;
    ua.language = APACHE__ROCKETMQ__V2__LANGUAGE__CPP;
    ua.version = (char *)"rmqbench-0.1";
    ua.platform = (char *)"linux";
    ua.hostname = cl->hostname;
    Apache__Rocketmq__V2__Settings s = APACHE__ROCKETMQ__V2__SETTINGS__INIT;
    s.opt_client_type_case = APACHE__ROCKETMQ__V2__SETTINGS__OPT_CLIENT_TYPE_CLIENT_TYPE;
    s.client_type = (Apache__Rocketmq__V2__ClientType)cl->ctype;
    s.access_point = &ep.e;
    s.request_timeout = &rt;
    s.user_agent = &ua;
    Apache__Rocketmq__V2__Publishing pub = APACHE__ROCKETMQ__V2__PUBLISHING__INIT;
    Apache__Rocketmq__V2__Subscription sub = APACHE__ROCKETMQ__V2__SUBSCRIPTION__INIT;
    Apache__Rocketmq__V2__FilterExpression fe = APACHE__ROCKETMQ__V2__FILTER_EXPRESSION__INIT;
    Apache__Rocketmq__V2__SubscriptionEntry se = APACHE__ROCKETMQ__V2__SUBSCRIPTION_ENTRY__INIT;
    Apache__Rocketmq__V2__SubscriptionEntry *sep[1] = { &se };
    if (cl->ctype == APACHE__ROCKETMQ__V2__CLIENT_TYPE__PRODUCER) {
        pub.n_topics = cl->topic[0] ? 1 : 0;
        pub.topics = topics;
        s.pub_sub_case = APACHE__ROCKETMQ__V2__SETTINGS__PUB_SUB_PUBLISHING;
        s.publishing = &pub;
    } else {
        fe.type = APACHE__ROCKETMQ__V2__FILTER_TYPE__TAG;
        fe.expression = (char *)"*";
        se.topic = &topic;
        se.expression = &fe;
        sub.group = &group;
        sub.n_subscriptions = 1;
        sub.subscriptions = sep;
        sub.long_polling_timeout = &lp;
        s.pub_sub_case = APACHE__ROCKETMQ__V2__SETTINGS__PUB_SUB_SUBSCRIPTION;
        s.subscription = &sub;
    }
    Apache__Rocketmq__V2__TelemetryCommand cmd = APACHE__ROCKETMQ__V2__TELEMETRY_COMMAND__INIT;
    cmd.command_case = APACHE__ROCKETMQ__V2__TELEMETRY_COMMAND__COMMAND_SETTINGS;
    cmd.settings = &s;
    c->on_msg = tele_msg;
    c->on_done = tele_done;
    int rc = call_send(c, &cmd.base, "Telemetry", 3600 * 1000, false);
    if (rc) {
        snprintf(err, errlen, "cannot open the Telemetry stream: %s", strerror(-rc));
        return rc;
    }
    cl->telemetry = c;
    if (!run_until(cl, &cl->settings_ok, STARTUP_S)) {
        snprintf(err, errlen, "the proxy at %s did not answer the Telemetry settings in %.0f s", cl->authority,
                 STARTUP_S);
        return -ETIMEDOUT;
    }
    if (!cl->telemetry || cl->telemetry->code != CODE_OK) {
        snprintf(err, errlen, "Telemetry settings refused: %s",
                 cl->telemetry ? cl->telemetry->errmsg : cl->fatal);
        return -EPROTO;
    }
    return 0;
}

static int step_run(struct gcl *cl, int (*fn)(struct gcl *, struct step *), const char *what, char *err,
                    size_t errlen)
{
    struct step st = { 0 };
    int rc = fn(cl, &st);
    if (rc) {
        snprintf(err, errlen, "%s: %s", what, strerror(-rc));
        return rc;
    }
    if (!run_until(cl, &st.done, STARTUP_S)) {
        snprintf(err, errlen, "%s: no answer from %s in %.0f s", what, cl->authority, STARTUP_S);
        return -ETIMEDOUT;
    }
    if (st.err) {
        snprintf(err, errlen, "%s: %s", what, st.msg);
        return st.err;
    }
    return 0;
}

static void gcl_free(struct gcl *cl);

static struct gcl *gcl_new(struct ev_loop *loop, const char *endpoint, int conns, int ctype, const char *topic,
                           const char *group, int timeout_ms, char *err, size_t errlen)
{
    struct gcl *cl = calloc(1, sizeof *cl);
    if (!cl) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    cl->loop = loop;
    cl->alloc = (ProtobufCAllocator){ .alloc = ar_alloc, .free = ar_free, .allocator_data = cl };
    cl->ctype = ctype;
    cl->timeout_ms = timeout_ms > 0 ? timeout_ms : 3000;
    snprintf(cl->topic, sizeof cl->topic, "%.255s", topic ? topic : "");
    snprintf(cl->group, sizeof cl->group, "%.255s", group ? group : "");
    const char *ep = endpoint ? endpoint : "";
    const char *colon = strrchr(ep, ':');
    char *end = NULL;
    long port = colon ? strtol(colon + 1, &end, 10) : 0;
    size_t hl = colon ? (size_t)(colon - ep) : 0;
    if (ep[0] == '[' && hl >= 2 && ep[hl - 1] == ']') {
        ep++;
        hl -= 2;
    }
    if (!colon || hl == 0 || hl >= sizeof cl->host || !end || *end || port <= 0 || port > 65535) {
        snprintf(err, errlen, "bad proxy endpoint '%s': expected host:port", endpoint ? endpoint : "");
        free(cl);
        return NULL;
    }
    memcpy(cl->host, ep, hl);
    cl->host[hl] = 0;
    cl->port = (int)port;
    snprintf(cl->authority, sizeof cl->authority, "%.*s", (int)sizeof cl->authority - 1, endpoint);
    if (gethostname(cl->hostname, sizeof cl->hostname))
        snprintf(cl->hostname, sizeof cl->hostname, "localhost");
    cl->hostname[sizeof cl->hostname - 1] = 0;
    static unsigned instance;
    snprintf(cl->client_id, sizeof cl->client_id, "%.64s@%d#rmqbench-%u#%lld", cl->hostname, (int)getpid(),
             __atomic_fetch_add(&instance, 1, __ATOMIC_RELAXED), (long long)now_ms());
    ev_prepare_init(&cl->flush, flush_cb);
    cl->flush.data = cl;
    ev_prepare_start(loop, &cl->flush);
    ev_init(&cl->wake, wake_cb);
    ev_timer_init(&cl->hb, hb_cb, HEARTBEAT_S, HEARTBEAT_S);
    cl->hb.data = cl;
    if (conns <= 0)
        conns = DEFAULT_CONNS;
    if (conns > MAX_CONNS)
        conns = MAX_CONNS;
    for (int i = 0; i < conns; i++) {
        int rc = conn_open(cl, &cl->conns[i]);
        if (rc) {
            snprintf(err, errlen, "%s", cl->fatal);
            gcl_free(cl);
            return NULL;
        }
        cl->nconns++;
    }
    if (step_run(cl, query_route, "QueryRoute", err, errlen) ||
        step_run(cl, heartbeat, "Heartbeat", err, errlen) || telemetry_start(cl, err, errlen)) {
        gcl_free(cl);
        return NULL;
    }
    if (cl->nbrokers == 0) {
        snprintf(err, errlen, "the route of %s through %s names no broker", cl->topic, cl->authority);
        gcl_free(cl);
        return NULL;
    }
    ev_timer_start(loop, &cl->hb);
    return cl;
}

static void notify_done(struct gcall *c, int status, const char *msg)
{
    *(bool *)c->ctx = true;
}

/* NotifyClientTermination, half-close of Telemetry, then the connections. */
static void gcl_shutdown(struct gcl *cl)
{
    cl->stopping = true;
    bool done = false;
    struct gcall *c = cl->nconns ? call_get(cl) : NULL;
    if (c) {
        Apache__Rocketmq__V2__Resource g;
        make_resource(&g, cl->group);
        Apache__Rocketmq__V2__NotifyClientTerminationRequest n =
            APACHE__ROCKETMQ__V2__NOTIFY_CLIENT_TERMINATION_REQUEST__INIT;
        if (cl->ctype != APACHE__ROCKETMQ__V2__CLIENT_TYPE__PRODUCER)
            n.group = &g;
        c->on_done = notify_done;
        c->ctx = &done;
        if (call_send(c, &n.base, "NotifyClientTermination", cl->timeout_ms, true) == 0)
            run_until(cl, &done, 2.0);
    }
    if (cl->telemetry) {
        call_more(cl->telemetry, NULL, true);
        bool never = false;
        for (int i = 0; i < 20 && cl->telemetry; i++)
            run_until(cl, &never, 0.05);
    }
}

static void gcl_free(struct gcl *cl)
{
    if (!cl)
        return;
    cl->stopping = true;
    for (int i = 0; i < cl->nconns; i++) {
        struct gconn *cn = &cl->conns[i];
        if (!cn->dead && cn->s) {
            nghttp2_session_terminate_session(cn->s, NGHTTP2_NO_ERROR);
            conn_flush(cn);
        }
        conn_fail(cn, "handle closed");
        buf_free(&cn->out);
    }
    ev_prepare_stop(cl->loop, &cl->flush);
    ev_timer_stop(cl->loop, &cl->hb);
    ev_timer_stop(cl->loop, &cl->wake);
    calls_free(cl);
    free(cl);
}

static void send_msg(struct gcall *c, const uint8_t *m, size_t len)
{
    struct gcl *cl = c->cl;
    Apache__Rocketmq__V2__SendMessageResponse *r =
        (void *)unpack(cl, &apache__rocketmq__v2__send_message_response__descriptor, m, len);
    if (!r) {
        snprintf(c->errmsg, sizeof c->errmsg, "unreadable SendMessageResponse");
        return;
    }
    /* One message per request: its entry's status is the answer. */
    const Apache__Rocketmq__V2__Status *st = r->n_entries ? r->entries[0]->status : r->status;
    status_of(st ? st : r->status, c);
    unpacked_free(cl, &r->base);
}

static void send_done(struct gcall *c, int status, const char *msg)
{
    struct gcl *cl = c->cl;
    cl->inflight--;
    if (!c->slot)
        return;
    struct bt_result r = { 0, c->code, NULL };
    if (status != 0) {
        r.err = status < 0 ? -ECONNRESET : -EPROTO;
        snprintf(c->errmsg, sizeof c->errmsg, "grpc-status %d: %.180s", status, msg);
        r.errmsg = c->errmsg;
    } else if (c->code != CODE_OK) {
        r.err = -EPROTO;
        r.errmsg = c->code < 0 ? "SendMessage answered no status" : c->errmsg;
    }
    c->slot->cb(&r, c->slot->ud);
}

/* Message id in the layout of the 5.x clients' ids (34 hex digits). */
static void make_msgid(struct gcl *cl, char out[40])
{
    static _Atomic uint32_t counter;
    uint32_t n = atomic_fetch_add_explicit(&counter, 1, memory_order_relaxed);
    uint64_t h = 1469598103934665603ULL;
    for (const char *p = cl->client_id; *p; p++)
        h = (h ^ (uint8_t)*p) * 1099511628211ULL;
    snprintf(out, 40, "01%012llX%04X%08X%08X", (unsigned long long)(h & 0xFFFFFFFFFFFFULL),
             (unsigned)getpid() & 0xFFFF, (unsigned)(now_ms() / 1000), n);
}

static int send_start(struct gcl *cl, const struct bt_msg *m, struct bt_slot *slot)
{
    struct gcall *c = call_get(cl);
    if (!c)
        return -ENOMEM;
    char mid[40];
    make_msgid(cl, mid);
    int64_t born = now_ms();
    Apache__Rocketmq__V2__Resource t;
    make_resource(&t, m->topic);
    Google__Protobuf__Timestamp bt = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    bt.seconds = born / 1000;
    bt.nanos = (int32_t)(born % 1000) * 1000000;
    Apache__Rocketmq__V2__SystemProperties sp = APACHE__ROCKETMQ__V2__SYSTEM_PROPERTIES__INIT;
    if (m->tags) {
        sp.opt_tag_case = APACHE__ROCKETMQ__V2__SYSTEM_PROPERTIES__OPT_TAG_TAG;
        sp.tag = (char *)m->tags;
    }
    char *keys[1] = { (char *)m->keys };
    if (m->keys) {
        sp.n_keys = 1;
        sp.keys = keys;
    }
    sp.message_id = mid;
    sp.body_encoding = APACHE__ROCKETMQ__V2__ENCODING__IDENTITY;
    sp.message_type = APACHE__ROCKETMQ__V2__MESSAGE_TYPE__NORMAL;
    Google__Protobuf__Timestamp dt = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    if (m->deliver_ms) {
        dt.seconds = m->deliver_ms / 1000;
        dt.nanos = (int32_t)(m->deliver_ms % 1000) * 1000000;
        sp.delivery_timestamp = &dt;
        sp.message_type = APACHE__ROCKETMQ__V2__MESSAGE_TYPE__DELAY;
    }
    sp.born_timestamp = &bt;
    sp.born_host = cl->hostname;
    Apache__Rocketmq__V2__Message msg = APACHE__ROCKETMQ__V2__MESSAGE__INIT;
    msg.topic = &t;
    msg.system_properties = &sp;
    msg.body.data = (uint8_t *)m->body;
    msg.body.len = m->body_len;
    Apache__Rocketmq__V2__Message *msgs[1] = { &msg };
    Apache__Rocketmq__V2__SendMessageRequest req = APACHE__ROCKETMQ__V2__SEND_MESSAGE_REQUEST__INIT;
    req.n_messages = 1;
    req.messages = msgs;
    c->on_msg = send_msg;
    c->on_done = send_done;
    c->slot = slot;
    int rc = call_send(c, &req.base, "SendMessage", cl->timeout_ms, true);
    if (rc) {
        return rc;
    }
    cl->inflight++;
    return 0;
}

static void *gp_new(struct ev_loop *loop, const struct bt_producer_opts *o, char *err, size_t errlen)
{
    if (!o->topic || !*o->topic) {
        snprintf(err, errlen, "the gRPC transport needs the topic at creation");
        return NULL;
    }
    return gcl_new(loop, o->endpoints, o->connections, APACHE__ROCKETMQ__V2__CLIENT_TYPE__PRODUCER, o->topic,
                   o->group, o->timeout_ms, err, errlen);
}

static int gp_send(void *h, const struct bt_msg *m, struct bt_slot *slot)
{
    return send_start(h, m, slot);
}

struct sync_wait {
    struct bt_slot slot;
    struct bt_result *out;
    bool done;
    char msg[200];
};

static void sync_cb(const struct bt_result *r, void *ud)
{
    struct sync_wait *w = ud;
    *w->out = *r;
    if (r->errmsg) {
        snprintf(w->msg, sizeof w->msg, "%s", r->errmsg);
        w->out->errmsg = w->msg;
    }
    w->done = true;
}

static int gp_send_sync(void *h, const struct bt_msg *m, struct bt_result *r)
{
    struct gcl *cl = h;
    struct sync_wait w = { .slot = { sync_cb, NULL }, .out = r };
    w.slot.ud = &w;
    int rc = send_start(cl, m, &w.slot);
    if (rc) {
        r->err = rc;
        r->code = -1;
        r->errmsg = "the send could not start";
        return rc;
    }
    if (!run_until(cl, &w.done, cl->timeout_ms / 1000.0 + 5)) {
        r->err = -ETIMEDOUT;
        r->code = -1;
        r->errmsg = "no answer in time";
    }
    return r->err;
}

static int gp_send_oneway(void *h, const struct bt_msg *m)
{
    return send_start(h, m, NULL);
}

static int gp_barrier(void *h, const char *topic)
{
    struct gcl *cl = h;
    double end = now_mono() + cl->timeout_ms / 1000.0 + 5;
    bool never = false;
    while (cl->inflight > 0 && now_mono() < end)
        run_until(cl, &never, 0.05);
    return cl->inflight > 0 ? -ETIMEDOUT : 0;
}

static void gp_free(void *h)
{
    struct gcl *cl = h;
    if (!cl)
        return;
    gp_barrier(cl, NULL);
    gcl_shutdown(cl);
    if (cl->fatal[0])
        fprintf(stderr, "rmqbench grpc producer: %s\n", cl->fatal);
    gcl_free(cl);
}

static void recv_issue(struct gcl *cl);

static void recv_msg(struct gcall *c, const uint8_t *m, size_t len)
{
    struct gcl *cl = c->cl;
    Apache__Rocketmq__V2__ReceiveMessageResponse *r =
        (void *)unpack(cl, &apache__rocketmq__v2__receive_message_response__descriptor, m, len);
    if (!r) {
        snprintf(c->errmsg, sizeof c->errmsg, "unreadable ReceiveMessageResponse");
        return;
    }
    switch (r->content_case) {
    case APACHE__ROCKETMQ__V2__RECEIVE_MESSAGE_RESPONSE__CONTENT_STATUS:
        status_of(r->status, c);
        break;
    case APACHE__ROCKETMQ__V2__RECEIVE_MESSAGE_RESPONSE__CONTENT_MESSAGE: {
        const Apache__Rocketmq__V2__Message *msg = r->message;
        const Apache__Rocketmq__V2__SystemProperties *sp = msg ? msg->system_properties : NULL;
        if (!sp || sp->opt_receipt_handle_case != APACHE__ROCKETMQ__V2__SYSTEM_PROPERTIES__OPT_RECEIPT_HANDLE_RECEIPT_HANDLE)
            break;
        struct bt_recv rec = { .born_ts = ts_ms(sp->born_timestamp),
                               .store_ts = ts_ms(sp->store_timestamp),
                               .due_ms = ts_ms(sp->delivery_timestamp),
                               .body_len = (uint32_t)msg->body.len };
        const char *mid = sp->message_id ? sp->message_id : "";
        if (buf_append(&c->recs, &rec, sizeof rec) || buf_append(&c->handles, mid, strlen(mid) + 1) ||
            buf_append(&c->handles, sp->receipt_handle, strlen(sp->receipt_handle) + 1))
            break;
        c->nmsgs++;
        break;
    }
    default:
        break;
    }
    unpacked_free(cl, &r->base);
}

static void ack_msg(struct gcall *c, const uint8_t *m, size_t len)
{
    Apache__Rocketmq__V2__AckMessageResponse *r =
        (void *)unpack(c->cl, &apache__rocketmq__v2__ack_message_response__descriptor, m, len);
    if (r) {
        status_of(r->status, c);
        for (size_t i = 0; i < r->n_entries && c->code == CODE_OK; i++)
            status_of(r->entries[i]->status, c);
    }
    unpacked_free(c->cl, r ? &r->base : NULL);
}

static void ack_done(struct gcall *c, int status, const char *msg)
{
    struct gcl *cl = c->cl;
    cl->acks--;
    if ((status != 0 || c->code != CODE_OK) && !cl->fatal[0])
        snprintf(cl->fatal, sizeof cl->fatal, "AckMessage failed: %s",
                 status ? msg : c->code < 0 ? "no status" : c->errmsg);
}

static int ack_batch(struct gcl *cl, const struct buf *handles, int n)
{
    struct gcall *c = call_get(cl);
    if (!c)
        return -ENOMEM;
    Apache__Rocketmq__V2__Resource g, t;
    make_resource(&g, cl->group);
    make_resource(&t, cl->topic);
    Apache__Rocketmq__V2__AckMessageEntry ent[MAX_RECV_BATCH * 2];
    Apache__Rocketmq__V2__AckMessageEntry *entp[MAX_RECV_BATCH * 2];
    const char *p = (const char *)handles->data;
    int k = 0;
    for (int i = 0; i < n && k < MAX_RECV_BATCH * 2; i++) {
        apache__rocketmq__v2__ack_message_entry__init(&ent[k]);
        ent[k].message_id = (char *)p;
        p += strlen(p) + 1;
        ent[k].receipt_handle = (char *)p;
        p += strlen(p) + 1;
        entp[k] = &ent[k];
        k++;
    }
    Apache__Rocketmq__V2__AckMessageRequest a = APACHE__ROCKETMQ__V2__ACK_MESSAGE_REQUEST__INIT;
    a.group = &g;
    a.topic = &t;
    a.n_entries = (size_t)k;
    a.entries = entp;
    c->on_msg = ack_msg;
    c->on_done = ack_done;
    int rc = call_send(c, &a.base, "AckMessage", cl->timeout_ms, true);
    if (rc) {
        return rc;
    }
    cl->acks++;
    return 0;
}

static void recv_done(struct gcall *c, int status, const char *msg)
{
    struct gcl *cl = c->cl;
    cl->receives--;
    if (c->nmsgs > 0) {
        int rc = cl->on_recv((const struct bt_recv *)c->recs.data, c->nmsgs, cl->ud);
        if (rc == 0 && ack_batch(cl, &c->handles, c->nmsgs) && !cl->fatal[0])
            snprintf(cl->fatal, sizeof cl->fatal, "cannot start AckMessage");
    } else if (status != 0 && !cl->stopping && !cl->fatal[0]) {
        snprintf(cl->fatal, sizeof cl->fatal, "ReceiveMessage failed: grpc-status %d: %.150s", status, msg);
    } else if (status == 0 && c->code != CODE_OK && c->code != CODE_NOT_FOUND && c->code >= 0 && !cl->fatal[0]) {
        snprintf(cl->fatal, sizeof cl->fatal, "ReceiveMessage answered code %d: %.150s", c->code, c->errmsg);
    }
    if (!cl->stopping && !cl->fatal[0])
        recv_issue(cl);
}

static int recv_start(struct gcl *cl, int broker)
{
    struct gcall *c = call_get(cl);
    if (!c)
        return -ENOMEM;
    Apache__Rocketmq__V2__Resource g, t;
    make_resource(&g, cl->group);
    make_resource(&t, cl->topic);
    Apache__Rocketmq__V2__Broker b = APACHE__ROCKETMQ__V2__BROKER__INIT;
    b.name = cl->brokers[broker];
    Apache__Rocketmq__V2__MessageQueue mq = APACHE__ROCKETMQ__V2__MESSAGE_QUEUE__INIT;
    mq.topic = &t;
    mq.id = -1;
    mq.broker = &b;
    mq.permission = APACHE__ROCKETMQ__V2__PERMISSION__READ_WRITE;
    Apache__Rocketmq__V2__FilterExpression fe = APACHE__ROCKETMQ__V2__FILTER_EXPRESSION__INIT;
    fe.type = APACHE__ROCKETMQ__V2__FILTER_TYPE__TAG;
    fe.expression = (char *)"*";
    Google__Protobuf__Duration inv = GOOGLE__PROTOBUF__DURATION__INIT, lp = GOOGLE__PROTOBUF__DURATION__INIT;
    inv.seconds = INVISIBLE_MS / 1000;
    lp.seconds = LONG_POLL_MS / 1000;
    Apache__Rocketmq__V2__ReceiveMessageRequest r = APACHE__ROCKETMQ__V2__RECEIVE_MESSAGE_REQUEST__INIT;
    r.group = &g;
    r.message_queue = &mq;
    r.filter_expression = &fe;
    r.batch_size = cl->batch;
    r.invisible_duration = &inv;
    r.auto_renew = false;
    r.long_polling_timeout = &lp;
    c->on_msg = recv_msg;
    c->on_done = recv_done;
    c->broker = broker;
    int rc = call_send(c, &r.base, "ReceiveMessage", LONG_POLL_MS + cl->timeout_ms, true);
    if (rc) {
        return rc;
    }
    cl->receives++;
    return 0;
}

/* Tops the receive calls in flight up to the wanted number, spread over
 * the brokers round robin. */
static void recv_issue(struct gcl *cl)
{
    while (cl->receives < cl->want_receives && !cl->stopping) {
        int rc = recv_start(cl, (int)(cl->seq % (uint64_t)cl->nbrokers));
        if (rc) {
            if (!cl->fatal[0])
                snprintf(cl->fatal, sizeof cl->fatal, "cannot start ReceiveMessage: %s", strerror(-rc));
            return;
        }
    }
}

static void *gc_new(struct ev_loop *loop, const struct bt_consumer_opts *o, char *err, size_t errlen)
{
    struct gcl *cl = gcl_new(loop, o->endpoints, o->connections, APACHE__ROCKETMQ__V2__CLIENT_TYPE__SIMPLE_CONSUMER,
                             o->topic, o->group, 3000, err, errlen);
    if (!cl)
        return NULL;
    cl->on_recv = o->on_recv;
    cl->ud = o->ud;
    if (!cl->batch || cl->batch > o->batch)
        cl->batch = o->batch;
    if (cl->batch > MAX_RECV_BATCH)
        cl->batch = MAX_RECV_BATCH;
    if (cl->batch < 1)
        cl->batch = 1;
    cl->want_receives = o->concurrency > 0 ? o->concurrency : DEFAULT_RECEIVES;
    return cl;
}

static int gc_start(void *h)
{
    struct gcl *cl = h;
    recv_issue(cl);
    return cl->receives > 0 ? 0 : -ENOTCONN;
}

/* Stops receiving, lets the acks in flight finish, cancels the long polls
 * (their popped messages, if any, become visible again after the invisible
 * time) and leaves. */
static int gc_stop(void *h)
{
    struct gcl *cl = h;
    cl->stopping = true;
    double end = now_mono() + 3.0;
    bool never = false;
    while (cl->acks > 0 && now_mono() < end)
        run_until(cl, &never, 0.05);
    int rc = cl->acks > 0 ? -ETIMEDOUT : 0;
    for (int i = 0; i < cl->nconns; i++) {
        struct gconn *cn = &cl->conns[i];
        if (cn->dead)
            continue;
        for (struct gcall *c = cn->calls; c; c = c->cnext)
            if (c->on_done == recv_done)
                nghttp2_submit_rst_stream(cn->s, NGHTTP2_FLAG_NONE, c->sid, NGHTTP2_CANCEL);
        cn->dirty = true;
    }
    while (cl->receives > 0 && now_mono() < end)
        run_until(cl, &never, 0.05);
    gcl_shutdown(cl);
    if (cl->fatal[0]) {
        fprintf(stderr, "rmqbench grpc consumer: %s\n", cl->fatal);
        if (!rc)
            rc = -EPROTO;
    }
    return rc;
}

static void gc_free(void *h)
{
    gcl_free(h);
}

const struct bt_ops bt_grpc = {
    .name = "grpc",
    .producer_new = gp_new,
    .send = gp_send,
    .send_sync = gp_send_sync,
    .send_oneway = gp_send_oneway,
    .barrier = gp_barrier,
    .producer_free = gp_free,
    .consumer_new = gc_new,
    .consumer_start = gc_start,
    .consumer_stop = gc_stop,
    .consumer_free = gc_free,
};
