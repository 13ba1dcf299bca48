/*
 * Remoting connections on a libev loop: servers that accept, clients that
 * keep one channel per peer address, and the framing/dispatch between them.
 *
 * Output is queued per connection and written from an ev_prepare watcher, so
 * every answer produced in one loop iteration leaves in a single writev (the
 * pattern of Redis' beforeSleep). Small writes are coalesced into an owned
 * tail chunk; large or external bodies (mapped commitlog segments) are queued
 * by reference and released once written. A peer whose queue grows past half
 * the limit stops being read until it drains; one past the limit is dropped.
 *
 * Requests and responses are matched by opaque in a per-client table.
 */
#include "remoting.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"

#define READ_CHUNK (64 * 1024)
#define COALESCE_MAX (16 * 1024)
#define TAIL_CHUNK (64 * 1024)
#define MAX_IOV 64

struct out_chunk {
    const uint8_t *base;
    size_t len;
    size_t off;         /* bytes already written */
    uint8_t *owned;     /* heap storage to free, or NULL */
    size_t cap;         /* capacity of owned */
    rmt_release_fn release;
    void *ctx;
};

enum conn_kind { CONN_SERVER, CONN_CLIENT };

struct io_owner;

struct rmt_conn {
    struct ev_loop *loop;
    struct io_owner *owner;
    enum conn_kind kind;
    int fd;
    bool open;
    bool connecting;
    bool read_paused;
    bool dirty;
    int refs;
    ev_io rio, wio;
    ev_timer connect_timer;
    struct buf in;
    struct out_chunk *out;
    size_t out_head, out_n, out_cap;
    size_t out_bytes;
    rmt_cmd cmd;          /* decode target, reused */
    char peer[64];
    char local[64];
    char addr_key[128];   /* client channels: the address asked for */
    void *data;
    rmt_conn *next, *prev;          /* owner's connection list */
    rmt_conn *dirty_next;
};

/* What servers and clients share: a loop, limits, callbacks, connection list
 * and the list of connections with output to flush. */
struct io_owner {
    struct ev_loop *loop;
    enum conn_kind kind;
    size_t max_frame;
    size_t max_outbuf;
    rmt_request_fn on_request;
    rmt_close_fn on_close;
    void *ud;
    rmt_conn *conns;
    size_t nconns;
    rmt_conn *dirty;
    ev_prepare prepare;
    struct buf scratch;   /* header encoding, reused */
};

struct rmt_server {
    struct io_owner o;
    int lfd;
    int port;
    ev_io accept_io;
    ev_timer accept_retry;
    bool accepting;
};

struct pending {
    int32_t opaque;
    rmt_response_fn cb;
    void *ud;
    rmt_conn *conn;
    ev_timer timer;
    struct rmt_client *cl;
    struct pending *next;       /* hash chain / free list */
    struct sync_wait *sync;
};

struct backoff {
    char addr[128];
    ev_tstamp next_try;
    int delay_ms;
    struct backoff *next;
};

#define PENDING_BUCKETS 1024

struct rmt_client {
    struct io_owner o;
    int connect_timeout_ms;
    int reconnect_min_ms, reconnect_max_ms;
    int32_t next_opaque;
    struct pending *buckets[PENDING_BUCKETS];
    struct pending *free_pending;
    struct backoff *backoffs;
};

static void conn_flush(rmt_conn *c);
static void conn_start_reading(rmt_conn *c);

static void addr_to_str(const struct sockaddr_storage *ss, char *out, size_t n)
{
    char host[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    bool v6 = false;
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &s4->sin_addr, host, sizeof host);
        port = ntohs(s4->sin_port);
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &s6->sin6_addr, host, sizeof host);
        port = ntohs(s6->sin6_port);
        v6 = !IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr);
        if (!v6) {
            struct in_addr a4;
            memcpy(&a4, &s6->sin6_addr.s6_addr[12], 4);
            inet_ntop(AF_INET, &a4, host, sizeof host);
        }
    }
    snprintf(out, n, v6 ? "[%s]:%d" : "%s:%d", host, port);
}

static void fill_names(rmt_conn *c)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getpeername(c->fd, (struct sockaddr *)&ss, &sl) == 0)
        addr_to_str(&ss, c->peer, sizeof c->peer);
    sl = sizeof ss;
    if (getsockname(c->fd, (struct sockaddr *)&ss, &sl) == 0)
        addr_to_str(&ss, c->local, sizeof c->local);
}

const char *rmt_conn_peer(const rmt_conn *c) { return c->peer; }
const char *rmt_conn_local(const rmt_conn *c) { return c->local; }
bool rmt_conn_is_open(const rmt_conn *c) { return c->open; }
void rmt_conn_set_data(rmt_conn *c, void *data) { c->data = data; }
void *rmt_conn_data(const rmt_conn *c) { return c->data; }
size_t rmt_conn_outbuf(const rmt_conn *c) { return c->out_bytes; }

void rmt_conn_ref(rmt_conn *c) { c->refs++; }

void rmt_conn_unref(rmt_conn *c)
{
    if (--c->refs > 0)
        return;
    rmt_cmd_destroy(&c->cmd);
    buf_free(&c->in);
    free(c->out);
    free(c);
}

static void out_release_all(rmt_conn *c)
{
    for (size_t i = c->out_head; i < c->out_head + c->out_n; i++) {
        struct out_chunk *ch = &c->out[i];
        free(ch->owned);
        if (ch->release)
            ch->release(ch->ctx);
    }
    c->out_head = c->out_n = 0;
    c->out_bytes = 0;
}

static void owner_unlink(struct io_owner *o, rmt_conn *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        o->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->next = c->prev = NULL;
    o->nconns--;
    if (c->dirty) {
        rmt_conn **pp = &o->dirty;
        while (*pp && *pp != c)
            pp = &(*pp)->dirty_next;
        if (*pp)
            *pp = c->dirty_next;
        c->dirty = false;
    }
}

static void client_fail_conn_pending(struct rmt_client *cl, rmt_conn *c, int status);

void rmt_conn_close(rmt_conn *c, const char *reason)
{
    if (!c->open)
        return;
    c->open = false;
    struct io_owner *o = c->owner;
    ev_io_stop(c->loop, &c->rio);
    ev_io_stop(c->loop, &c->wio);
    ev_timer_stop(c->loop, &c->connect_timer);
    if (reason)
        log_info("remoting: closing connection %s: %s", c->peer, reason);
    close(c->fd);
    c->fd = -1;
    out_release_all(c);
    owner_unlink(o, c);
    rmt_conn_ref(c);
    if (c->kind == CONN_CLIENT)
        client_fail_conn_pending((struct rmt_client *)o, c, -ECONNRESET);
    if (o->on_close)
        o->on_close(c, o->ud);
    rmt_conn_unref(c);   /* the callback's hold */
    rmt_conn_unref(c);   /* the owner's reference */
}

static int out_push(rmt_conn *c, struct out_chunk ch)
{
    if (c->out_head + c->out_n == c->out_cap) {
        if (c->out_head > 0) {
            memmove(c->out, c->out + c->out_head, c->out_n * sizeof *c->out);
            c->out_head = 0;
        } else {
            size_t cap = c->out_cap ? c->out_cap * 2 : 16;
            struct out_chunk *n = realloc(c->out, cap * sizeof *n);
            if (!n)
                return -ENOMEM;
            c->out = n;
            c->out_cap = cap;
        }
    }
    c->out[c->out_head + c->out_n++] = ch;
    c->out_bytes += ch.len;
    return 0;
}

/* Copies bytes into the owned tail chunk, starting a new one when needed. */
static int out_copy(rmt_conn *c, const void *p, size_t n)
{
    while (n > 0) {
        struct out_chunk *tail = c->out_n ? &c->out[c->out_head + c->out_n - 1] : NULL;
        if (tail && tail->owned && tail->len < tail->cap) {
            size_t k = tail->cap - tail->len;
            if (k > n)
                k = n;
            memcpy(tail->owned + tail->len, p, k);
            tail->len += k;
            c->out_bytes += k;
            p = (const uint8_t *)p + k;
            n -= k;
            continue;
        }
        size_t cap = n > TAIL_CHUNK ? n : TAIL_CHUNK;
        uint8_t *mem = malloc(cap);
        if (!mem)
            return -ENOMEM;
        struct out_chunk ch = { .base = mem, .len = 0, .owned = mem, .cap = cap };
        if (out_push(c, ch)) {
            free(mem);
            return -ENOMEM;
        }
    }
    return 0;
}

static void mark_dirty(rmt_conn *c)
{
    if (c->dirty || c->connecting)
        return;
    c->dirty = true;
    c->dirty_next = c->owner->dirty;
    c->owner->dirty = c;
}

static void check_backpressure(rmt_conn *c)
{
    size_t limit = c->owner->max_outbuf;
    if (!c->read_paused && c->out_bytes > limit / 2) {
        c->read_paused = true;
        ev_io_stop(c->loop, &c->rio);
        log_debug("remoting: %s output %zu bytes, pausing reads", c->peer, c->out_bytes);
    }
}

static int enqueue_frame(rmt_conn *c, const rmt_cmd *cmd, const struct iovec *iov, int iovcnt,
                         rmt_release_fn release, void *ctx)
{
    if (!c->open) {
        if (release)
            release(ctx);
        return -EPIPE;
    }
    rmt_cmd tmp;
    const rmt_cmd *enc = cmd;
    size_t body_len = cmd->body_len;
    if (iov) {
        body_len = 0;
        for (int i = 0; i < iovcnt; i++)
            body_len += iov[i].iov_len;
        if (body_len > INT32_MAX) {
            if (release)
                release(ctx);
            return -EMSGSIZE;
        }
        /* Encode the header with the iov's total as body length. */
        memcpy(&tmp, cmd, offsetof(rmt_cmd, inline_arena));
        tmp.body = NULL;
        tmp.body_len = (uint32_t)body_len;
        enc = &tmp;
    }
    struct buf *hb = &c->owner->scratch;
    buf_reset(hb);
    int rc = rmt_encode_header(enc, hb);
    if (rc) {
        if (release)
            release(ctx);
        return rc;
    }
    if (c->out_bytes + hb->len + body_len > c->owner->max_outbuf) {
        if (release)
            release(ctx);
        log_warn("remoting: %s is not reading its answers (%zu bytes queued), dropping it",
                 c->peer, c->out_bytes);
        rmt_conn_close(c, "output queue over limit");
        return -ENOBUFS;
    }
    rc = out_copy(c, hb->data, hb->len);
    if (!rc) {
        if (iov) {
            for (int i = 0; i < iovcnt && !rc; i++) {
                if (iov[i].iov_len == 0)
                    continue;
                if (iov[i].iov_len <= COALESCE_MAX && !(release && i == iovcnt - 1)) {
                    rc = out_copy(c, iov[i].iov_base, iov[i].iov_len);
                } else {
                    struct out_chunk ch = { .base = iov[i].iov_base, .len = iov[i].iov_len };
                    rc = out_push(c, ch);
                }
            }
            if (!rc && release) {
                /* A zero-length marker chunk carries the release callback so
                 * it runs only after every byte before it has been written. */
                struct out_chunk mark = { .release = release, .ctx = ctx };
                rc = out_push(c, mark);
                if (rc)
                    release(ctx);
            }
        } else if (body_len <= COALESCE_MAX) {
            rc = out_copy(c, cmd->body, body_len);
        } else {
            uint8_t *copy = malloc(body_len);
            if (!copy) {
                rc = -ENOMEM;
            } else {
                memcpy(copy, cmd->body, body_len);
                struct out_chunk ch = { .base = copy, .len = body_len, .owned = copy, .cap = body_len };
                rc = out_push(c, ch);
                if (rc)
                    free(copy);
            }
        }
    } else if (release) {
        release(ctx);
    }
    if (rc) {
        rmt_conn_close(c, "out of memory queueing output");
        return rc;
    }
    mark_dirty(c);
    check_backpressure(c);
    return 0;
}

int rmt_conn_send(rmt_conn *c, const rmt_cmd *cmd)
{
    return enqueue_frame(c, cmd, NULL, 0, NULL, NULL);
}

int rmt_conn_send_iov(rmt_conn *c, const rmt_cmd *cmd, const struct iovec *iov, int iovcnt,
                      rmt_release_fn release, void *ctx)
{
    return enqueue_frame(c, cmd, iov, iovcnt, release, ctx);
}

int rmt_conn_respond(rmt_conn *c, const rmt_cmd *req, rmt_cmd *resp)
{
    if (rmt_cmd_is_oneway(req))
        return 0;
    resp->opaque = req->opaque;
    resp->serialize = req->serialize;
    resp->flag |= RMT_FLAG_RESPONSE;
    return rmt_conn_send(c, resp);
}

int rmt_conn_respond_error(rmt_conn *c, const rmt_cmd *req, int32_t code, const char *fmt, ...)
{
    rmt_cmd resp;
    rmt_cmd_init(&resp, code);
    char tmp[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    rmt_cmd_set_remark(&resp, "%s", tmp);
    int rc = rmt_conn_respond(c, req, &resp);
    rmt_cmd_destroy(&resp);
    return rc;
}

/* Writes as much queued output as the socket takes. */
static void conn_flush(rmt_conn *c)
{
    while (c->open && c->out_n > 0) {
        struct iovec iov[MAX_IOV];
        int n = 0;
        for (size_t i = c->out_head; i < c->out_head + c->out_n && n < MAX_IOV; i++) {
            struct out_chunk *ch = &c->out[i];
            if (ch->len == ch->off)
                continue;
            iov[n].iov_base = (void *)(ch->base + ch->off);
            iov[n].iov_len = ch->len - ch->off;
            n++;
        }
        ssize_t w = 0;
        if (n > 0) {
            struct msghdr mh = { .msg_iov = iov, .msg_iovlen = (size_t)n };
            w = sendmsg(c->fd, &mh, MSG_NOSIGNAL);
            if (w < 0) {
                if (errno == EINTR)
                    continue;
                if (errno == EAGAIN || errno == EWOULDBLOCK)
                    break;
                char reason[128];
                snprintf(reason, sizeof reason, "write failed: %s", strerror(errno));
                rmt_conn_close(c, reason);
                return;
            }
        }
        size_t left = (size_t)w;
        while (c->out_n > 0) {
            struct out_chunk *ch = &c->out[c->out_head];
            size_t k = ch->len - ch->off;
            if (k > left)
                k = left;
            ch->off += k;
            left -= k;
            c->out_bytes -= k;
            if (ch->off < ch->len)
                break;
            /* Keep the last coalescing chunk's storage for the next answers. */
            if (c->out_n == 1 && ch->owned && ch->cap == TAIL_CHUNK) {
                ch->len = ch->off = 0;
                if (c->out_head) {
                    c->out[0] = *ch;
                    c->out_head = 0;
                }
                break;
            }
            free(ch->owned);
            if (ch->release)
                ch->release(ch->ctx);
            c->out_head++;
            c->out_n--;
        }
        if (c->out_n == 0)
            c->out_head = 0;
        if (c->out_bytes == 0)
            break;
    }
    if (!c->open)
        return;
    if (c->out_bytes > 0)
        ev_io_start(c->loop, &c->wio);
    else
        ev_io_stop(c->loop, &c->wio);
    if (c->read_paused && c->out_bytes < c->owner->max_outbuf / 4) {
        c->read_paused = false;
        conn_start_reading(c);
    }
}

static void owner_prepare_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
    struct io_owner *o = w->data;
    while (o->dirty) {
        rmt_conn *c = o->dirty;
        o->dirty = c->dirty_next;
        c->dirty = false;
        rmt_conn_ref(c);
        conn_flush(c);
        rmt_conn_unref(c);
    }
}

static void conn_write_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    rmt_conn *c = w->data;
    rmt_conn_ref(c);
    conn_flush(c);
    rmt_conn_unref(c);
}

static void client_handle_response(struct rmt_client *cl, rmt_conn *c, rmt_cmd *cmd);

static void dispatch(rmt_conn *c, rmt_cmd *cmd)
{
    struct io_owner *o = c->owner;
    if (rmt_cmd_is_response(cmd)) {
        if (c->kind == CONN_CLIENT)
            client_handle_response((struct rmt_client *)o, c, cmd);
        else
            log_debug("remoting: %s sent a response (opaque %d) to a server; ignored", c->peer,
                      cmd->opaque);
        return;
    }
    if (o->on_request) {
        o->on_request(c, cmd, o->ud);
    } else {
        rmt_conn_respond_error(c, cmd, RMT_RESP_REQUEST_CODE_NOT_SUPPORTED,
                               "request code %d not supported", cmd->code);
    }
}

static void conn_read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    rmt_conn *c = w->data;
    rmt_conn_ref(c);
    for (int rounds = 0; rounds < 16 && c->open && !c->read_paused; rounds++) {
        if (buf_reserve(&c->in, READ_CHUNK)) {
            rmt_conn_close(c, "out of memory for input");
            break;
        }
        ssize_t r = read(c->fd, c->in.data + c->in.len, c->in.cap - c->in.len);
        if (r == 0) {
            rmt_conn_close(c, "peer closed");
            break;
        }
        if (r < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                char reason[128];
                snprintf(reason, sizeof reason, "read failed: %s", strerror(errno));
                rmt_conn_close(c, reason);
            }
            break;
        }
        c->in.len += (size_t)r;
        size_t pos = 0;
        while (c->open) {
            size_t flen = 0;
            enum rmt_frame_status st =
                rmt_frame_check(c->in.data + pos, c->in.len - pos, c->owner->max_frame, &flen);
            if (st == RMT_FRAME_NEED_MORE)
                break;
            if (st != RMT_FRAME_OK) {
                char reason[160];
                if (st == RMT_FRAME_TOO_BIG)
                    snprintf(reason, sizeof reason,
                             "frame of %u bytes exceeds the limit of %zu bytes",
                             rd_u32be(c->in.data + pos), c->owner->max_frame);
                else
                    snprintf(reason, sizeof reason, "malformed frame header");
                log_warn("remoting: %s sent a bad frame: %s", c->peer, reason);
                rmt_conn_close(c, reason);
                break;
            }
            char err[160];
            if (rmt_decode(&c->cmd, c->in.data + pos, flen, err, sizeof err) != 0) {
                log_warn("remoting: %s sent an undecodable frame: %s", c->peer, err);
                rmt_conn_close(c, err);
                break;
            }
            pos += flen;
            dispatch(c, &c->cmd);
        }
        if (!c->open)
            break;
        buf_consume(&c->in, pos);
        /* Release a large buffer left by one big frame. */
        if (c->in.len == 0 && c->in.cap > 4 * READ_CHUNK)
            buf_free(&c->in);
        if ((size_t)r < READ_CHUNK)
            break;
    }
    rmt_conn_unref(c);
}

static void conn_start_reading(rmt_conn *c)
{
    if (c->open && !c->connecting && !c->read_paused)
        ev_io_start(c->loop, &c->rio);
}

static rmt_conn *conn_new(struct io_owner *o, int fd, enum conn_kind kind)
{
    rmt_conn *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->loop = o->loop;
    c->owner = o;
    c->kind = kind;
    c->fd = fd;
    c->open = true;
    c->refs = 1;
    rmt_cmd_init(&c->cmd, 0);
    ev_io_init(&c->rio, conn_read_cb, fd, EV_READ);
    ev_io_init(&c->wio, conn_write_cb, fd, EV_WRITE);
    c->rio.data = c->wio.data = c;
    c->next = o->conns;
    if (o->conns)
        o->conns->prev = c;
    o->conns = c;
    o->nconns++;
    return c;
}

static void owner_init(struct io_owner *o, struct ev_loop *loop, enum conn_kind kind,
                       size_t max_frame, size_t max_outbuf, rmt_request_fn on_request,
                       rmt_close_fn on_close, void *ud)
{
    o->loop = loop;
    o->kind = kind;
    o->max_frame = max_frame ? max_frame : RMT_DEFAULT_MAX_FRAME;
    o->max_outbuf = max_outbuf ? max_outbuf : RMT_DEFAULT_MAX_OUTBUF;
    o->on_request = on_request;
    o->on_close = on_close;
    o->ud = ud;
    ev_prepare_init(&o->prepare, owner_prepare_cb);
    o->prepare.data = o;
    ev_prepare_start(loop, &o->prepare);
    ev_unref(loop); /* the prepare watcher alone must not keep ev_run alive */
}

static void owner_close_all(struct io_owner *o, const char *reason)
{
    while (o->conns)
        rmt_conn_close(o->conns, reason);
    ev_ref(o->loop);
    ev_prepare_stop(o->loop, &o->prepare);
    buf_free(&o->scratch);
}

static void set_sock_opts(int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
}

static void accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    rmt_server *s = w->data;
    for (int i = 0; i < 64; i++) {
        int fd = accept4(s->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                log_error("remoting: accept failed: %s; pausing accepts for 100 ms", strerror(errno));
                ev_io_stop(loop, &s->accept_io);
                ev_timer_set(&s->accept_retry, 0.1, 0.);
                ev_timer_start(loop, &s->accept_retry);
            }
            return;
        }
        set_sock_opts(fd);
        rmt_conn *c = conn_new(&s->o, fd, CONN_SERVER);
        if (!c) {
            log_error("remoting: out of memory accepting a connection");
            close(fd);
            continue;
        }
        fill_names(c);
        log_debug("remoting: accepted %s", c->peer);
        conn_start_reading(c);
    }
}

static void accept_retry_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    rmt_server *s = w->data;
    if (s->accepting)
        ev_io_start(loop, &s->accept_io);
}

rmt_server *rmt_server_new(struct ev_loop *loop, const struct rmt_server_opts *opts, int *err)
{
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                              .ai_flags = AI_PASSIVE | AI_NUMERICSERV };
    struct addrinfo *ai = NULL;
    char port[16];
    snprintf(port, sizeof port, "%d", opts->port);
    const char *host = opts->host && opts->host[0] ? opts->host : "0.0.0.0";
    int rc = getaddrinfo(host, port, &hints, &ai);
    if (rc != 0) {
        log_error("remoting: cannot resolve listen address %s: %s", host, gai_strerror(rc));
        *err = -EINVAL;
        return NULL;
    }
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        *err = -errno;
        freeaddrinfo(ai);
        return NULL;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 1024) < 0) {
        *err = -errno;
        log_error("remoting: cannot listen on %s:%d: %s", host, opts->port, strerror(errno));
        close(fd);
        freeaddrinfo(ai);
        return NULL;
    }
    freeaddrinfo(ai);
    rmt_server *s = calloc(1, sizeof *s);
    if (!s) {
        close(fd);
        *err = -ENOMEM;
        return NULL;
    }
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    getsockname(fd, (struct sockaddr *)&ss, &sl);
    s->port = ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                                       : ntohs(((struct sockaddr_in *)&ss)->sin_port);
    s->lfd = fd;
    owner_init(&s->o, loop, CONN_SERVER, opts->max_frame, opts->max_outbuf, opts->on_request,
               opts->on_close, opts->ud);
    ev_io_init(&s->accept_io, accept_cb, fd, EV_READ);
    s->accept_io.data = s;
    ev_timer_init(&s->accept_retry, accept_retry_cb, 0.1, 0.);
    s->accept_retry.data = s;
    s->accepting = true;
    ev_io_start(loop, &s->accept_io);
    *err = 0;
    return s;
}

int rmt_server_port(const rmt_server *s) { return s->port; }
size_t rmt_server_conn_count(const rmt_server *s) { return s->o.nconns; }

void rmt_server_stop_accepting(rmt_server *s)
{
    if (!s->accepting)
        return;
    s->accepting = false;
    ev_io_stop(s->o.loop, &s->accept_io);
    ev_timer_stop(s->o.loop, &s->accept_retry);
    close(s->lfd);
    s->lfd = -1;
}

void rmt_server_free(rmt_server *s)
{
    if (!s)
        return;
    rmt_server_stop_accepting(s);
    owner_close_all(&s->o, NULL);
    free(s);
}

/* Client ----------------------------------------------------------------- */

struct sync_wait {
    bool done;
    int status;
    rmt_cmd *resp;
};

static struct pending **pending_slot(struct rmt_client *cl, int32_t opaque)
{
    struct pending **pp = &cl->buckets[(uint32_t)opaque % PENDING_BUCKETS];
    while (*pp && (*pp)->opaque != opaque)
        pp = &(*pp)->next;
    return pp;
}

static struct pending *pending_take(struct rmt_client *cl, int32_t opaque)
{
    struct pending **pp = pending_slot(cl, opaque);
    struct pending *p = *pp;
    if (p) {
        *pp = p->next;
        p->next = NULL;
        ev_timer_stop(cl->o.loop, &p->timer);
    }
    return p;
}

static void pending_finish(struct rmt_client *cl, struct pending *p, int status, rmt_cmd *resp)
{
    rmt_response_fn cb = p->cb;
    void *ud = p->ud;
    rmt_conn *c = p->conn;
    p->next = cl->free_pending;
    cl->free_pending = p;
    cb(status, resp, ud);
    if (c)
        rmt_conn_unref(c);
}

static void pending_timeout_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct pending *p = w->data;
    struct rmt_client *cl = p->cl;
    struct pending *q = pending_take(cl, p->opaque);
    if (q)
        pending_finish(cl, q, -ETIMEDOUT, NULL);
}

static void client_fail_conn_pending(struct rmt_client *cl, rmt_conn *c, int status)
{
    for (int b = 0; b < PENDING_BUCKETS; b++) {
        struct pending **pp = &cl->buckets[b];
        while (*pp) {
            struct pending *p = *pp;
            if (p->conn == c) {
                *pp = p->next;
                p->next = NULL;
                ev_timer_stop(cl->o.loop, &p->timer);
                pending_finish(cl, p, status, NULL);
                pp = &cl->buckets[b]; /* callbacks may have changed the chain */
            } else {
                pp = &p->next;
            }
        }
    }
}

static void client_handle_response(struct rmt_client *cl, rmt_conn *c, rmt_cmd *cmd)
{
    struct pending *p = pending_take(cl, cmd->opaque);
    if (!p) {
        log_debug("remoting: response from %s for unknown opaque %d (timed out?)", c->peer,
                  cmd->opaque);
        return;
    }
    pending_finish(cl, p, 0, cmd);
}

static struct backoff *backoff_get(struct rmt_client *cl, const char *addr, bool create)
{
    for (struct backoff *b = cl->backoffs; b; b = b->next)
        if (strcmp(b->addr, addr) == 0)
            return b;
    if (!create)
        return NULL;
    struct backoff *b = calloc(1, sizeof *b);
    if (!b)
        return NULL;
    snprintf(b->addr, sizeof b->addr, "%s", addr);
    b->next = cl->backoffs;
    cl->backoffs = b;
    return b;
}

static void connect_failed(struct rmt_client *cl, rmt_conn *c, const char *why)
{
    struct backoff *b = backoff_get(cl, c->addr_key, true);
    if (b) {
        b->delay_ms = b->delay_ms ? b->delay_ms * 2 : cl->reconnect_min_ms;
        if (b->delay_ms > cl->reconnect_max_ms)
            b->delay_ms = cl->reconnect_max_ms;
        b->next_try = ev_now(cl->o.loop) + b->delay_ms / 1000.0;
    }
    log_warn("remoting: cannot connect to %s: %s", c->addr_key, why);
    client_fail_conn_pending(cl, c, -ECONNREFUSED);
    rmt_conn_close(c, NULL);
}

static void connect_done(struct rmt_client *cl, rmt_conn *c)
{
    c->connecting = false;
    ev_timer_stop(c->loop, &c->connect_timer);
    ev_io_stop(c->loop, &c->wio);
    struct backoff *b = backoff_get(cl, c->addr_key, false);
    if (b)
        b->delay_ms = 0;
    fill_names(c);
    conn_start_reading(c);
    if (c->out_bytes)
        mark_dirty(c);
}

static void connect_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    rmt_conn *c = w->data;
    struct rmt_client *cl = (struct rmt_client *)c->owner;
    int soerr = 0;
    socklen_t sl = sizeof soerr;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
    ev_io_stop(loop, &c->wio);
    ev_io_init(&c->wio, conn_write_cb, c->fd, EV_WRITE);
    c->wio.data = c;
    if (soerr) {
        connect_failed(cl, c, strerror(soerr));
        return;
    }
    connect_done(cl, c);
}

static void connect_timeout_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    rmt_conn *c = w->data;
    connect_failed((struct rmt_client *)c->owner, c, "connect timed out");
}

static rmt_conn *client_channel(struct rmt_client *cl, const char *addr, int *err)
{
    for (rmt_conn *c = cl->o.conns; c; c = c->next)
        if (c->open && strcmp(c->addr_key, addr) == 0)
            return c;
    struct backoff *b = backoff_get(cl, addr, false);
    if (b && b->delay_ms && ev_now(cl->o.loop) < b->next_try) {
        *err = -ECONNREFUSED;
        return NULL;
    }
    char host[96];
    int port;
    if (rmt_parse_addr(addr, host, sizeof host, &port)) {
        *err = -EINVAL;
        return NULL;
    }
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                              .ai_flags = AI_NUMERICSERV };
    struct addrinfo *ai = NULL;
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    if (getaddrinfo(host, ps, &hints, &ai) != 0 || !ai) {
        *err = -EHOSTUNREACH;
        return NULL;
    }
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        *err = -errno;
        freeaddrinfo(ai);
        return NULL;
    }
    set_sock_opts(fd);
    int rc = connect(fd, ai->ai_addr, ai->ai_addrlen);
    int cerr = errno;
    freeaddrinfo(ai);
    if (rc < 0 && cerr != EINPROGRESS) {
        close(fd);
        if (b || (b = backoff_get(cl, addr, true))) {
            b->delay_ms = b->delay_ms ? b->delay_ms * 2 : cl->reconnect_min_ms;
            if (b->delay_ms > cl->reconnect_max_ms)
                b->delay_ms = cl->reconnect_max_ms;
            b->next_try = ev_now(cl->o.loop) + b->delay_ms / 1000.0;
        }
        *err = -cerr;
        return NULL;
    }
    rmt_conn *c = conn_new(&cl->o, fd, CONN_CLIENT);
    if (!c) {
        close(fd);
        *err = -ENOMEM;
        return NULL;
    }
    snprintf(c->addr_key, sizeof c->addr_key, "%s", addr);
    snprintf(c->peer, sizeof c->peer, "%s", addr);
    if (rc == 0) {
        fill_names(c);
        conn_start_reading(c);
        return c;
    }
    c->connecting = true;
    ev_io_init(&c->wio, connect_io_cb, fd, EV_WRITE);
    c->wio.data = c;
    ev_io_start(c->loop, &c->wio);
    ev_timer_init(&c->connect_timer, connect_timeout_cb, cl->connect_timeout_ms / 1000.0, 0.);
    c->connect_timer.data = c;
    ev_timer_start(c->loop, &c->connect_timer);
    return c;
}

rmt_client *rmt_client_new(struct ev_loop *loop, const struct rmt_client_opts *opts)
{
    struct rmt_client *cl = calloc(1, sizeof *cl);
    if (!cl)
        return NULL;
    owner_init(&cl->o, loop, CONN_CLIENT, opts->max_frame, opts->max_outbuf, opts->on_request,
               opts->on_close, opts->ud);
    cl->connect_timeout_ms = opts->connect_timeout_ms > 0 ? opts->connect_timeout_ms : 3000;
    cl->reconnect_min_ms = opts->reconnect_min_ms > 0 ? opts->reconnect_min_ms : 100;
    cl->reconnect_max_ms = opts->reconnect_max_ms > 0 ? opts->reconnect_max_ms : 5000;
    cl->next_opaque = 1;
    return cl;
}

void rmt_client_free(rmt_client *cl)
{
    if (!cl)
        return;
    owner_close_all(&cl->o, NULL);
    for (int b = 0; b < PENDING_BUCKETS; b++) {
        while (cl->buckets[b]) {
            struct pending *p = cl->buckets[b];
            cl->buckets[b] = p->next;
            ev_timer_stop(cl->o.loop, &p->timer);
            pending_finish(cl, p, -ECANCELED, NULL);
        }
    }
    while (cl->free_pending) {
        struct pending *p = cl->free_pending;
        cl->free_pending = p->next;
        free(p);
    }
    while (cl->backoffs) {
        struct backoff *b = cl->backoffs;
        cl->backoffs = b->next;
        free(b);
    }
    free(cl);
}

static int32_t next_opaque(struct rmt_client *cl)
{
    int32_t o = cl->next_opaque++;
    if (cl->next_opaque <= 0)
        cl->next_opaque = 1;
    return o;
}

int rmt_client_invoke(rmt_client *cl, const char *addr, rmt_cmd *req, int timeout_ms,
                      rmt_response_fn cb, void *ud)
{
    int err = 0;
    rmt_conn *c = client_channel(cl, addr, &err);
    if (!c)
        return err;
    struct pending *p = cl->free_pending;
    if (p)
        cl->free_pending = p->next;
    else if (!(p = malloc(sizeof *p)))
        return -ENOMEM;
    memset(p, 0, sizeof *p);
    req->opaque = next_opaque(cl);
    req->flag &= ~(RMT_FLAG_RESPONSE | RMT_FLAG_ONEWAY);
    p->opaque = req->opaque;
    p->cb = cb;
    p->ud = ud;
    p->cl = cl;
    ev_timer_init(&p->timer, pending_timeout_cb, (timeout_ms > 0 ? timeout_ms : 3000) / 1000.0, 0.);
    p->timer.data = p;
    int rc = enqueue_frame(c, req, NULL, 0, NULL, NULL);
    if (rc) {
        p->next = cl->free_pending;
        cl->free_pending = p;
        return rc;
    }
    p->conn = c;
    rmt_conn_ref(c);
    struct pending **slot = pending_slot(cl, p->opaque);
    p->next = *slot;
    *slot = p;
    ev_timer_start(cl->o.loop, &p->timer);
    return 0;
}

int rmt_client_invoke_oneway(rmt_client *cl, const char *addr, rmt_cmd *req)
{
    int err = 0;
    rmt_conn *c = client_channel(cl, addr, &err);
    if (!c)
        return err;
    req->opaque = next_opaque(cl);
    req->flag = (req->flag & ~RMT_FLAG_RESPONSE) | RMT_FLAG_ONEWAY;
    return enqueue_frame(c, req, NULL, 0, NULL, NULL);
}

static void sync_cb(int status, rmt_cmd *resp, void *ud)
{
    struct sync_wait *sw = ud;
    sw->done = true;
    sw->status = status;
    if (status == 0) {
        sw->resp = rmt_cmd_dup(resp);
        if (!sw->resp)
            sw->status = -ENOMEM;
    }
}

int rmt_client_invoke_sync(rmt_client *cl, const char *addr, rmt_cmd *req, int timeout_ms,
                           rmt_cmd **resp)
{
    struct sync_wait sw = { 0 };
    int rc = rmt_client_invoke(cl, addr, req, timeout_ms, sync_cb, &sw);
    if (rc)
        return rc;
    while (!sw.done)
        ev_run(cl->o.loop, EVRUN_ONCE);
    if (sw.status == 0)
        *resp = sw.resp;
    return sw.status;
}

void rmt_client_close_channel(rmt_client *cl, const char *addr)
{
    for (rmt_conn *c = cl->o.conns; c; c = c->next) {
        if (strcmp(c->addr_key, addr) == 0) {
            rmt_conn_close(c, "closed by owner");
            return;
        }
    }
}

void rmt_local_ipv4(char *out, size_t cap)
{
    struct ifaddrs *ifs = NULL;
    snprintf(out, cap, "127.0.0.1");
    if (getifaddrs(&ifs))
        return;
    for (struct ifaddrs *i = ifs; i; i = i->ifa_next) {
        if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET || !(i->ifa_flags & IFF_UP) ||
            (i->ifa_flags & IFF_LOOPBACK))
            continue;
        inet_ntop(AF_INET, &((struct sockaddr_in *)i->ifa_addr)->sin_addr, out, (socklen_t)cap);
        break;
    }
    freeifaddrs(ifs);
}
