/*
 * HA replication (see ha.h for the protocol and the divergence rules).
 *
 * Both sides are plain state machines on the caller's libev loop over
 * non-blocking sockets; nothing here blocks except a truncation on a slave
 * (a segment scan, rare). The master keeps one struct ha_conn per slave:
 * it reads 8-byte offset reports and streams frames built from
 * store_read_raw views with one sendmsg per frame (12-byte header +
 * mapped bytes, no copy); the view's hold is released when the frame is out.
 * SYNC_MASTER waits sit in a FIFO ring in registration order, completed
 * from its head when acknowledgements arrive and expired from its head by
 * the housekeeping tick (deadlines grow with registration time).
 *
 * The slave reads frame bodies straight into one receive buffer that holds
 * the log bytes not yet appended (a partial record at most, plus what the
 * last read brought), appends whole records with store_append_raw, and
 * while verifying compares the bytes before its own end with its log.
 */
#include "ha.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "log.h"
#include "message.h"
#include "store_truncate.h"

#define HA_HDR 12
#define HA_TICK_MS 100
/* bytes one write callback may send before yielding to the loop */
#define HA_WRITE_BUDGET (8u << 20)
#define HA_READ_BUDGET (8u << 20)

enum ha_role { HA_ROLE_MASTER, HA_ROLE_SLAVE };

struct ha_wait {
    int64_t end;
    int64_t deadline;
    ha_wait_fn cb;
    void *ud;
};

struct ha_conn {
    struct ha_conn *next;
    struct ha *ha;
    int fd;
    ev_io rio, wio;
    char addr[64];
    int64_t req;          /* first report, -1 until received */
    int64_t ack;          /* last report */
    int64_t next_off;     /* next log byte to send, -1 until the request */
    uint8_t rpart[8];
    size_t rpart_len;
    bool in_flight;       /* a frame is being sent */
    uint8_t hdr[HA_HDR];
    size_t frame_len, frame_sent; /* header + body */
    const uint8_t *body;
    struct store_hold hold;
    bool caught_once;     /* sent the first caught-up heartbeat */
    bool close_after;     /* close once the frame in flight is out */
    int64_t last_read_ms, last_write_ms, caught_ms;
    uint64_t bytes_sent;
};

enum sl_state { SL_IDLE, SL_CONNECTING, SL_VERIFYING, SL_STREAMING, SL_STOPPED };

struct ha_slave_side {
    char master[128];
    struct sockaddr_storage sa;
    socklen_t salen;
    int fd;
    ev_io rio, wio;
    ev_timer retry;       /* reconnect delay, connect timeout */
    enum sl_state st;
    uint8_t hdr[HA_HDR];
    size_t hdr_len;
    bool in_body;
    uint32_t body_left;
    int64_t stream_pos;   /* offset of the next byte the master sends */
    uint8_t *buf;         /* pending log bytes at buf + head, offset pend_off */
    size_t cap, head, len;
    int64_t pend_off;
    int64_t req;          /* requested offset R */
    int64_t verify_end;   /* own end O while verifying */
    int64_t hint;         /* master's end learnt from a short heartbeat, INT64_MAX none */
    int64_t walk;         /* walk-back distance, 0 = normal window */
    uint8_t out[8];
    size_t out_sent;
    bool out_busy, out_dirty;
    int64_t out_value;
    int64_t reported;
    int64_t last_read_ms, last_report_ms;
    uint64_t bytes_received, truncations, connects;
};

struct ha {
    struct ev_loop *loop;
    struct store *store;
    enum ha_role role;
    struct ha_config cfg;
    char *listen_host;
    ev_async notify;
    ev_timer tick;

    int lfd, port;
    ev_io lio;
    struct ha_conn *conns;
    int nconns;
    struct ha_wait *waits;
    size_t w_head, w_len, w_cap;
    int64_t best_ack;     /* best confirmed acknowledgement of the connected slaves */

    struct ha_slave_side sl;
};

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void ha_config_defaults(struct ha_config *c)
{
    memset(c, 0, sizeof(*c));
    c->listen_host = NULL;
    c->listen_port = 10912;
    c->heartbeat_interval_ms = 5000;
    c->housekeeping_interval_ms = 20000;
    c->transfer_batch = 256 * 1024;
    c->max_gap_not_in_sync = 256LL * 1024 * 1024;
    c->sync_timeout_ms = 5000;
    c->reconnect_ms = 1000;
    c->connect_timeout_ms = 3000;
    c->check_window = 4096;
    c->recv_buffer = 8u * 1024 * 1024;
}

static int check_config(const struct ha_config *c)
{
    if (c->listen_port < 0 || c->listen_port > 65535 || c->heartbeat_interval_ms < 1 ||
        c->housekeeping_interval_ms < 1 || c->transfer_batch < 1 || c->transfer_batch > INT32_MAX ||
        c->max_gap_not_in_sync < 0 || c->sync_timeout_ms < 1 || c->reconnect_ms < 0 ||
        c->connect_timeout_ms < 1 || c->recv_buffer < 64 * 1024)
        return -EINVAL;
    return 0;
}

static void set_nodelay(int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static void peer_name(int fd, char *out, size_t n)
{
    struct sockaddr_storage ss;
    socklen_t l = sizeof(ss);
    char ip[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (getpeername(fd, (struct sockaddr *)&ss, &l) == 0) {
        if (ss.ss_family == AF_INET) {
            struct sockaddr_in *a = (struct sockaddr_in *)&ss;
            inet_ntop(AF_INET, &a->sin_addr, ip, sizeof(ip));
            port = ntohs(a->sin_port);
        } else if (ss.ss_family == AF_INET6) {
            struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
            inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof(ip));
            port = ntohs(a->sin6_port);
        }
    }
    snprintf(out, n, "%s:%d", ip, port);
}

/* "a.b.c.d:port" or "[v6]:port" into a socket address. */
static int parse_addr(const char *s, struct sockaddr_storage *sa, socklen_t *len)
{
    char host[INET6_ADDRSTRLEN + 2];
    const char *colon = strrchr(s, ':');
    if (!colon || colon == s)
        return -EINVAL;
    size_t hl = (size_t)(colon - s);
    if (hl >= sizeof(host))
        return -EINVAL;
    memcpy(host, s, hl);
    host[hl] = 0;
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end || colon[1] == 0 || port <= 0 || port > 65535)
        return -EINVAL;
    memset(sa, 0, sizeof(*sa));
    if (host[0] == '[' && hl > 2 && host[hl - 1] == ']') {
        host[hl - 1] = 0;
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)sa;
        if (inet_pton(AF_INET6, host + 1, &a->sin6_addr) != 1)
            return -EINVAL;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons((uint16_t)port);
        *len = sizeof(*a);
        return 0;
    }
    struct sockaddr_in *a = (struct sockaddr_in *)sa;
    if (inet_pton(AF_INET, host, &a->sin_addr) != 1)
        return -EINVAL;
    a->sin_family = AF_INET;
    a->sin_port = htons((uint16_t)port);
    *len = sizeof(*a);
    return 0;
}

static struct ha *ha_new(struct ev_loop *loop, struct store *s, const struct ha_config *cfg,
                         enum ha_role role, int *err)
{
    if (check_config(cfg) < 0) {
        log_error("ha: invalid configuration");
        *err = -EINVAL;
        return NULL;
    }
    struct ha *ha = calloc(1, sizeof(*ha));
    if (!ha) {
        *err = -ENOMEM;
        return NULL;
    }
    ha->loop = loop;
    ha->store = s;
    ha->role = role;
    ha->cfg = *cfg;
    ha->lfd = -1;
    ha->sl.fd = -1;
    if (cfg->listen_host && !(ha->listen_host = strdup(cfg->listen_host))) {
        free(ha);
        *err = -ENOMEM;
        return NULL;
    }
    ha->cfg.listen_host = ha->listen_host;
    return ha;
}

/* ---- master ---- */

static int64_t conn_confirmed_ack(const struct ha_conn *c)
{
    /* a report counts for SYNC waits once the slave acknowledged bytes sent
     * on this connection: its first report only states what it had */
    return c->req >= 0 && !c->close_after && c->ack > c->req ? c->ack : -1;
}

static bool conn_active(const struct ha_conn *c) { return c->req >= 0 && !c->close_after; }

static void waits_complete_upto(struct ha *ha, int64_t upto, enum store_put_status st)
{
    while (ha->w_len) {
        struct ha_wait w = ha->waits[ha->w_head];
        if (w.end > upto)
            break;
        ha->w_head = (ha->w_head + 1) % ha->w_cap;
        ha->w_len--;
        w.cb(st, w.ud);
    }
}

static void update_acks(struct ha *ha)
{
    int64_t best = -1;
    for (struct ha_conn *c = ha->conns; c; c = c->next) {
        int64_t a = conn_confirmed_ack(c);
        if (a > best)
            best = a;
    }
    ha->best_ack = best;
    if (best >= 0)
        waits_complete_upto(ha, best, STORE_PUT_OK);
}

static bool any_active(struct ha *ha)
{
    for (struct ha_conn *c = ha->conns; c; c = c->next)
        if (conn_active(c))
            return true;
    return false;
}

static void conn_close(struct ha_conn *c)
{
    struct ha *ha = c->ha;
    ev_io_stop(ha->loop, &c->rio);
    ev_io_stop(ha->loop, &c->wio);
    close(c->fd);
    store_hold_release(&c->hold);
    for (struct ha_conn **pp = &ha->conns; *pp; pp = &(*pp)->next)
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    ha->nconns--;
    free(c);
    update_acks(ha);
    if (!any_active(ha))
        waits_complete_upto(ha, INT64_MAX, STORE_PUT_SLAVE_NOT_AVAILABLE);
}

static void frame_start(struct ha_conn *c, int64_t off, const uint8_t *body, size_t n)
{
    wr_u64be(c->hdr, (uint64_t)off);
    wr_u32be(c->hdr + 8, (uint32_t)n);
    c->body = body;
    c->frame_len = HA_HDR + n;
    c->frame_sent = 0;
    c->in_flight = true;
}

/* Sends what is due. Returns -1 if the connection was closed. */
static int conn_pump(struct ha_conn *c)
{
    struct ha *ha = c->ha;
    size_t budget = HA_WRITE_BUDGET;
    for (;;) {
        if (!c->in_flight) {
            if (c->next_off < 0 || budget == 0)
                break;
            const uint8_t *p = NULL;
            ssize_t n = store_read_raw(ha->store, c->next_off, ha->cfg.transfer_batch, &p, &c->hold);
            if (n < 0) {
                log_error("ha: slave %s: offset %lld is no longer in the log (%s); dropping it", c->addr,
                          (long long)c->next_off, strerror((int)-n));
                conn_close(c);
                return -1;
            }
            int64_t now = mono_ms();
            if (n > 0) {
                frame_start(c, c->next_off, p, (size_t)n);
                c->next_off += n;
            } else if (!c->caught_once || now - c->last_write_ms >= ha->cfg.heartbeat_interval_ms) {
                c->caught_once = true;
                frame_start(c, c->next_off, NULL, 0);
            } else {
                break;
            }
        }
        struct iovec iov[2];
        int k = 0;
        if (c->frame_sent < HA_HDR)
            iov[k++] = (struct iovec){ c->hdr + c->frame_sent, HA_HDR - c->frame_sent };
        if (c->frame_len > HA_HDR) {
            size_t bo = c->frame_sent > HA_HDR ? c->frame_sent - HA_HDR : 0;
            iov[k++] = (struct iovec){ (void *)(c->body + bo), c->frame_len - HA_HDR - bo };
        }
        struct msghdr mh = { .msg_iov = iov, .msg_iovlen = (size_t)k };
        ssize_t w = sendmsg(c->fd, &mh, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                ev_io_start(ha->loop, &c->wio);
                return 0;
            }
            if (errno == EINTR)
                continue;
            log_warn("ha: slave %s: send failed: %s; dropping it", c->addr, strerror(errno));
            conn_close(c);
            return -1;
        }
        c->frame_sent += (size_t)w;
        c->bytes_sent += (uint64_t)w;
        budget = (size_t)w >= budget ? 0 : budget - (size_t)w;
        if (c->frame_sent == c->frame_len) {
            c->in_flight = false;
            store_hold_release(&c->hold);
            c->last_write_ms = mono_ms();
            if (c->close_after) {
                log_info("ha: slave %s: closed after telling it the log ends at %lld", c->addr,
                         (long long)c->next_off);
                conn_close(c);
                return -1;
            }
        }
    }
    if (c->in_flight || (budget == 0 && c->next_off < store_commitlog_max_offset(ha->store)))
        ev_io_start(ha->loop, &c->wio);
    else
        ev_io_stop(ha->loop, &c->wio);
    return 0;
}

/* Handles one 8-byte report. Returns -1 if the connection was closed. */
static int conn_report(struct ha_conn *c, int64_t v)
{
    struct ha *ha = c->ha;
    if (c->close_after)
        return 0;
    if (c->req < 0) {
        int64_t mx = store_commitlog_max_offset(ha->store), mn = store_commitlog_min_offset(ha->store);
        if (v < 0) {
            log_warn("ha: %s sent an invalid offset %lld (not an HA slave?); closing", c->addr, (long long)v);
            conn_close(c);
            return -1;
        }
        c->req = c->ack = v;
        c->caught_ms = mono_ms();
        if (v > mx) {
            log_warn("ha: slave %s asks for offset %lld beyond the log end %lld; telling it the end and "
                     "closing",
                     c->addr, (long long)v, (long long)mx);
            c->next_off = mx;
            c->close_after = true;
            return 0;
        }
        if (v == 0) {
            c->next_off = mn;
        } else if (v < mn) {
            log_error("ha: slave %s asks for offset %lld below the log minimum %lld: it must be rebuilt; "
                      "closing",
                      c->addr, (long long)v, (long long)mn);
            conn_close(c);
            return -1;
        } else {
            c->next_off = v;
        }
        log_info("ha: slave %s connected, requests offset %lld, transfer starts at %lld (log end %lld)",
                 c->addr, (long long)v, (long long)c->next_off, (long long)mx);
        return 0;
    }
    int64_t lim = c->next_off > c->req ? c->next_off : c->req;
    if (v < c->ack || v > lim) {
        log_warn("ha: slave %s reported offset %lld outside [%lld, %lld]; closing", c->addr, (long long)v,
                 (long long)c->ack, (long long)lim);
        conn_close(c);
        return -1;
    }
    c->ack = v;
    if (v >= store_commitlog_max_offset(ha->store))
        c->caught_ms = mono_ms();
    return 0;
}

static void conn_read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct ha_conn *c = w->data;
    struct ha *ha = c->ha;
    uint8_t buf[4096];
    size_t budget = 64 * 1024;
    bool reported = false;
    while (budget) {
        ssize_t r = read(c->fd, buf, sizeof(buf));
        if (r == 0) {
            log_info("ha: slave %s disconnected", c->addr);
            conn_close(c);
            return;
        }
        if (r < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            if (errno == ECONNRESET)
                log_info("ha: slave %s disconnected (reset)", c->addr);
            else
                log_warn("ha: slave %s: read failed: %s; closing", c->addr, strerror(errno));
            conn_close(c);
            return;
        }
        budget = (size_t)r >= budget ? 0 : budget - (size_t)r;
        c->last_read_ms = mono_ms();
        for (ssize_t i = 0; i < r; i++) {
            c->rpart[c->rpart_len++] = buf[i];
            if (c->rpart_len == 8) {
                c->rpart_len = 0;
                if (conn_report(c, (int64_t)rd_u64be(c->rpart)) < 0)
                    return;
                reported = true;
            }
        }
    }
    if (reported) {
        update_acks(ha);
        if (!ev_is_active(&c->wio))
            conn_pump(c);
    }
}

static void conn_write_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct ha_conn *c = w->data;
    conn_pump(c);
}

static void accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct ha *ha = w->data;
    for (;;) {
        int fd = accept4(ha->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR && errno != ECONNABORTED)
                log_warn("ha: accept failed: %s", strerror(errno));
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            return;
        }
        struct ha_conn *c = calloc(1, sizeof(*c));
        if (!c) {
            log_error("ha: out of memory accepting a slave");
            close(fd);
            continue;
        }
        set_nodelay(fd);
        c->ha = ha;
        c->fd = fd;
        c->req = c->ack = c->next_off = -1;
        c->last_read_ms = c->last_write_ms = c->caught_ms = mono_ms();
        c->hold = (struct store_hold)STORE_HOLD_INIT;
        peer_name(fd, c->addr, sizeof(c->addr));
        ev_io_init(&c->rio, conn_read_cb, fd, EV_READ);
        ev_io_init(&c->wio, conn_write_cb, fd, EV_WRITE);
        c->rio.data = c->wio.data = c;
        ev_io_start(loop, &c->rio);
        c->next = ha->conns;
        ha->conns = c;
        ha->nconns++;
        log_debug("ha: connection from %s", c->addr);
    }
}

static void master_tick(struct ha *ha)
{
    int64_t now = mono_ms();
    int64_t mx = store_commitlog_max_offset(ha->store);
    for (struct ha_conn *c = ha->conns, *nx; c; c = nx) {
        nx = c->next;
        if (now - c->last_read_ms > ha->cfg.housekeeping_interval_ms) {
            log_warn("ha: slave %s sent nothing for %lld ms; closing", c->addr, (long long)(now - c->last_read_ms));
            conn_close(c);
            continue;
        }
        if (c->req >= 0 && c->ack >= mx)
            c->caught_ms = now;
        if (!ev_is_active(&c->wio))
            conn_pump(c);
    }
    while (ha->w_len && ha->waits[ha->w_head].deadline <= now) {
        struct ha_wait w = ha->waits[ha->w_head];
        ha->w_head = (ha->w_head + 1) % ha->w_cap;
        ha->w_len--;
        w.cb(STORE_PUT_FLUSH_SLAVE_TIMEOUT, w.ud);
    }
}

static void notify_cb(struct ev_loop *loop, ev_async *w, int revents)
{
    struct ha *ha = w->data;
    if (ha->role != HA_ROLE_MASTER)
        return;
    for (struct ha_conn *c = ha->conns, *nx; c; c = nx) {
        nx = c->next;
        if (!ev_is_active(&c->wio))
            conn_pump(c);
    }
}

static void slave_tick(struct ha *ha);

static void tick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct ha *ha = w->data;
    if (ha->role == HA_ROLE_MASTER)
        master_tick(ha);
    else
        slave_tick(ha);
}

static void start_common(struct ha *ha)
{
    ev_async_init(&ha->notify, notify_cb);
    ha->notify.data = ha;
    ev_async_start(ha->loop, &ha->notify);
    ev_timer_init(&ha->tick, tick_cb, HA_TICK_MS / 1000.0, HA_TICK_MS / 1000.0);
    ha->tick.data = ha;
    ev_timer_start(ha->loop, &ha->tick);
}

struct ha *ha_master_start(struct ev_loop *loop, struct store *s, const struct ha_config *cfg, int *err)
{
    struct ha *ha = ha_new(loop, s, cfg, HA_ROLE_MASTER, err);
    if (!ha)
        return NULL;
    ha->best_ack = -1;
    const char *host = ha->listen_host && *ha->listen_host ? ha->listen_host : "0.0.0.0";
    struct sockaddr_storage sa;
    socklen_t salen;
    char addr[160];
    snprintf(addr, sizeof(addr), strchr(host, ':') ? "[%s]:%d" : "%s:%d", host,
             cfg->listen_port ? cfg->listen_port : 1);
    int rc = parse_addr(addr, &sa, &salen);
    if (rc < 0) {
        log_error("ha: invalid listen address %s", host);
        goto fail;
    }
    if (cfg->listen_port == 0)
        ((struct sockaddr_in *)&sa)->sin_port = 0; /* same offset in sockaddr_in6 */
    ha->lfd = socket(sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (ha->lfd < 0) {
        rc = -errno;
        log_error("ha: socket: %s", strerror(errno));
        goto fail;
    }
    int one = 1;
    setsockopt(ha->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(ha->lfd, (struct sockaddr *)&sa, salen) < 0 || listen(ha->lfd, 64) < 0) {
        rc = -errno;
        log_error("ha: cannot listen on %s:%d: %s", host, cfg->listen_port, strerror(errno));
        goto fail;
    }
    struct sockaddr_storage bound;
    socklen_t bl = sizeof(bound);
    if (getsockname(ha->lfd, (struct sockaddr *)&bound, &bl) == 0)
        ha->port = ntohs(((struct sockaddr_in *)&bound)->sin_port);
    ev_io_init(&ha->lio, accept_cb, ha->lfd, EV_READ);
    ha->lio.data = ha;
    ev_io_start(loop, &ha->lio);
    start_common(ha);
    log_info("ha: master listening on %s:%d", host, ha->port);
    return ha;
fail:
    if (ha->lfd >= 0)
        close(ha->lfd);
    free(ha->listen_host);
    free(ha);
    *err = rc;
    return NULL;
}

int ha_master_port(const struct ha *ha) { return ha && ha->role == HA_ROLE_MASTER ? ha->port : -EINVAL; }

bool ha_slave_ok(struct ha *ha, int64_t end_offset)
{
    if (!ha || ha->role != HA_ROLE_MASTER)
        return false;
    int64_t best = -1;
    for (struct ha_conn *c = ha->conns; c; c = c->next)
        if (conn_active(c) && c->ack > best)
            best = c->ack;
    return best >= 0 && end_offset - best < ha->cfg.max_gap_not_in_sync;
}

int ha_wait_slave(struct ha *ha, int64_t end_offset, ha_wait_fn cb, void *ud)
{
    if (!ha || ha->role != HA_ROLE_MASTER || !cb)
        return -EINVAL;
    if (ha->best_ack >= 0 && end_offset <= ha->best_ack)
        return HA_WAIT_DONE;
    if (!ha_slave_ok(ha, end_offset))
        return -ENOTCONN;
    if (ha->w_len == ha->w_cap) {
        size_t ncap = ha->w_cap ? ha->w_cap * 2 : 64;
        struct ha_wait *nw = malloc(ncap * sizeof(*nw));
        if (!nw)
            return -ENOMEM;
        for (size_t i = 0; i < ha->w_len; i++)
            nw[i] = ha->waits[(ha->w_head + i) % ha->w_cap];
        free(ha->waits);
        ha->waits = nw;
        ha->w_cap = ncap;
        ha->w_head = 0;
    }
    ha->waits[(ha->w_head + ha->w_len) % ha->w_cap] =
        (struct ha_wait){ end_offset, mono_ms() + ha->cfg.sync_timeout_ms, cb, ud };
    ha->w_len++;
    return HA_WAIT_PENDING;
}

int ha_master_status(struct ha *ha, struct ha_master_status *st)
{
    if (!ha || ha->role != HA_ROLE_MASTER)
        return -EINVAL;
    memset(st, 0, sizeof(*st));
    int64_t now = mono_ms();
    st->max_offset = store_commitlog_max_offset(ha->store);
    st->pending_waits = ha->w_len;
    for (struct ha_conn *c = ha->conns; c; c = c->next) {
        if (!conn_active(c))
            continue;
        st->slave_count++;
        if (c->ack > st->max_ack)
            st->max_ack = c->ack;
        if (st->filled == HA_STATUS_SLAVES)
            continue;
        struct ha_slave_info *si = &st->slaves[st->filled++];
        snprintf(si->addr, sizeof(si->addr), "%s", c->addr);
        si->ack_offset = c->ack;
        si->next_offset = c->next_off;
        si->lag_bytes = st->max_offset > c->ack ? st->max_offset - c->ack : 0;
        si->lag_ms = si->lag_bytes ? now - c->caught_ms : 0;
        si->bytes_sent = c->bytes_sent;
    }
    return 0;
}

/* ---- slave ---- */

static void sl_close_fd(struct ha *ha)
{
    struct ha_slave_side *sl = &ha->sl;
    ev_io_stop(ha->loop, &sl->rio);
    ev_io_stop(ha->loop, &sl->wio);
    ev_timer_stop(ha->loop, &sl->retry);
    if (sl->fd >= 0)
        close(sl->fd);
    sl->fd = -1;
    sl->hdr_len = 0;
    sl->in_body = false;
    sl->body_left = 0;
    sl->head = sl->len = 0; /* a partial record is never appended */
    sl->out_busy = sl->out_dirty = false;
    sl->out_sent = 0;
}

/* Drops the connection and reconnects after delay_ms (< 0: stays down). */
static void sl_drop(struct ha *ha, int delay_ms)
{
    struct ha_slave_side *sl = &ha->sl;
    sl_close_fd(ha);
    if (sl->st != SL_STOPPED)
        sl->st = SL_IDLE;
    if (delay_ms >= 0 && sl->st != SL_STOPPED && sl->master[0]) {
        ev_timer_set(&sl->retry, delay_ms / 1000.0, 0.);
        ev_timer_start(ha->loop, &sl->retry);
    }
}

static void sl_stop(struct ha *ha, const char *why)
{
    log_error("ha: slave stops following %s: %s; the slave must be rebuilt", ha->sl.master, why);
    ha->sl.st = SL_STOPPED;
    sl_drop(ha, -1);
}

/* Queues an 8-byte report of v; only the newest unsent value matters. */
static int sl_report(struct ha *ha, int64_t v)
{
    struct ha_slave_side *sl = &ha->sl;
    sl->out_value = v;
    if (sl->out_busy) {
        sl->out_dirty = true;
        return 0;
    }
    wr_u64be(sl->out, (uint64_t)v);
    sl->out_sent = 0;
    sl->out_busy = true;
    sl->out_dirty = false;
    for (;;) {
        ssize_t w = send(sl->fd, sl->out + sl->out_sent, 8 - sl->out_sent, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                ev_io_start(ha->loop, &sl->wio);
                return 0;
            }
            log_warn("ha: slave: sending to master %s failed: %s", sl->master, strerror(errno));
            sl_drop(ha, ha->cfg.reconnect_ms);
            return -1;
        }
        sl->out_sent += (size_t)w;
        if (sl->out_sent == 8)
            break;
    }
    sl->out_busy = false;
    sl->reported = v;
    sl->last_report_ms = mono_ms();
    if (sl->out_dirty)
        return sl_report(ha, sl->out_value);
    return 0;
}

/* Own record boundary at or below off (a segment start if the segment does
 * not parse, never below the log minimum). */
static int64_t sl_floor(struct ha *ha, int64_t off)
{
    struct store *s = ha->store;
    int64_t mn = store_commitlog_min_offset(s);
    if (off <= mn)
        return mn;
    int64_t r;
    if (store_record_floor(s, off, &r) == 0)
        return r;
    int64_t seg = (int64_t)store_segment_size(s);
    r = off - off % seg;
    return r < mn ? mn : r;
}

/* Truncates the own log to off (logged by the store). Returns 0 or -1 after
 * dropping the connection. */
static int sl_truncate(struct ha *ha, int64_t off, const char *why)
{
    struct ha_slave_side *sl = &ha->sl;
    int64_t mx = store_commitlog_max_offset(ha->store);
    log_warn("ha: slave log diverges from master %s (%s): truncating from %lld to %lld", sl->master, why,
             (long long)mx, (long long)off);
    int64_t rc = store_truncate(ha->store, off);
    if (rc < 0) {
        log_error("ha: slave: truncation to %lld failed: %s; retrying later", (long long)off,
                  strerror((int)-rc));
        sl_drop(ha, ha->cfg.reconnect_ms);
        return -1;
    }
    sl->truncations++;
    return 0;
}

/* The master's bytes at d differ from ours. */
static void sl_mismatch(struct ha *ha, int64_t d)
{
    struct ha_slave_side *sl = &ha->sl;
    int64_t t = sl_floor(ha, d);
    int64_t mn = store_commitlog_min_offset(ha->store);
    char why[96];
    if (t > sl->req) {
        snprintf(why, sizeof(why), "first difference at %lld", (long long)d);
        if (sl_truncate(ha, t, why) == 0) {
            sl->walk = 0;
            sl->hint = INT64_MAX;
            sl_drop(ha, 0);
        }
        return;
    }
    if (sl->req <= mn) {
        snprintf(why, sizeof(why), "no common record down to the log minimum %lld", (long long)mn);
        if (sl_truncate(ha, mn, why) == 0) {
            sl->walk = 0;
            sl->hint = INT64_MAX;
            sl_drop(ha, 0);
        }
        return;
    }
    uint64_t w = sl->walk ? (uint64_t)sl->walk * 8 : (uint64_t)ha->cfg.check_window * 8;
    sl->walk = w > (uint64_t)INT64_MAX / 8 ? INT64_MAX / 8 : (int64_t)w;
    log_info("ha: slave: bytes at %lld differ from master %s in the first record compared; comparing "
             "from %lld bytes further back",
             (long long)d, sl->master, (long long)sl->walk);
    sl_drop(ha, 0);
}

/* Length of the prefix of p (log bytes at off) made of whole valid records
 * and end-of-segment blanks, checked the way store_append_raw checks them
 * (CRC included). *bad is set when an invalid record follows it. Checking
 * first means the store is only ever handed data it takes completely. */
static size_t valid_prefix(struct ha *ha, int64_t off, const uint8_t *p, size_t len, bool *bad)
{
    size_t seg = (size_t)store_segment_size(ha->store), used = 0;
    *bad = false;
    while (used < len) {
        size_t room = seg - (size_t)((uint64_t)(off + (int64_t)used) % seg);
        size_t chunk = len - used < room ? len - used : room;
        struct msg_record r;
        int d = msg_record_decode(p + used, chunk, &r, 1);
        if (d == -EAGAIN)
            break;
        if (d < 0 || (d > 0 && r.phys_offset != off + (int64_t)used) || (d == 0 && r.total_size != room)) {
            *bad = true;
            break;
        }
        if (d == 0 && chunk < room)
            break; /* a blank is taken with the whole rest of its segment */
        used += d > 0 ? (size_t)d : room;
    }
    return used;
}

/* Compares / appends the pending bytes. Returns -1 if the connection was
 * dropped. */
static int sl_process(struct ha *ha)
{
    struct ha_slave_side *sl = &ha->sl;
    while (sl->st == SL_VERIFYING && sl->len && sl->pend_off < sl->verify_end) {
        size_t n = sl->len;
        if ((int64_t)n > sl->verify_end - sl->pend_off)
            n = (size_t)(sl->verify_end - sl->pend_off);
        struct store_hold h = STORE_HOLD_INIT;
        const uint8_t *p;
        ssize_t k = store_read_raw(ha->store, sl->pend_off, n, &p, &h);
        if (k <= 0) {
            store_hold_release(&h);
            log_error("ha: slave: cannot read own log at %lld (%zd); reconnecting", (long long)sl->pend_off, k);
            sl_drop(ha, ha->cfg.reconnect_ms);
            return -1;
        }
        const uint8_t *q = sl->buf + sl->head;
        size_t i = 0;
        while (i < (size_t)k && p[i] == q[i])
            i++;
        store_hold_release(&h);
        if (i < (size_t)k) {
            sl_mismatch(ha, sl->pend_off + (int64_t)i);
            return -1;
        }
        sl->head += (size_t)k;
        sl->len -= (size_t)k;
        sl->pend_off += k;
    }
    if (sl->st == SL_VERIFYING && sl->pend_off == sl->verify_end) {
        log_info("ha: slave: log matches master %s over [%lld, %lld); following from %lld", sl->master,
                 (long long)sl->req, (long long)sl->verify_end, (long long)sl->verify_end);
        sl->st = SL_STREAMING;
        sl->walk = 0;
        sl->hint = INT64_MAX;
        if (sl_report(ha, sl->verify_end) < 0)
            return -1;
    }
    if (sl->st != SL_STREAMING || sl->len == 0)
        return 0;
    bool bad;
    size_t v = valid_prefix(ha, sl->pend_off, sl->buf + sl->head, sl->len, &bad);
    ssize_t r = v ? store_append_raw(ha->store, sl->pend_off, sl->buf + sl->head, v) : 0;
    if (r < 0 || (size_t)r != v) {
        log_error("ha: slave: the store refused %zu bytes from master %s at %lld (%s); reconnecting", v,
                  sl->master, (long long)sl->pend_off, r < 0 ? strerror((int)-r) : "short append");
        sl_drop(ha, ha->cfg.reconnect_ms);
        return -1;
    }
    sl->head += v;
    sl->len -= v;
    sl->pend_off += (int64_t)v;
    if (sl->len == 0)
        sl->head = 0;
    if (bad) {
        log_error("ha: slave: master %s sent an invalid record at %lld (corrupt, or not a record start); "
                  "reconnecting",
                  sl->master, (long long)sl->pend_off);
        sl_drop(ha, ha->cfg.reconnect_ms);
        return -1;
    }
    return 0;
}

/* A complete frame header arrived. Returns -1 if dropped. */
static int sl_header(struct ha *ha)
{
    struct ha_slave_side *sl = &ha->sl;
    int64_t off = (int64_t)rd_u64be(sl->hdr);
    int32_t size = (int32_t)rd_u32be(sl->hdr + 8);
    sl->hdr_len = 0;
    if (size < 0 || off < 0) {
        log_warn("ha: slave: invalid frame header from %s (offset %lld, size %d); reconnecting", sl->master,
                 (long long)off, size);
        sl_drop(ha, ha->cfg.reconnect_ms);
        return -1;
    }
    if (off < sl->stream_pos) {
        /* the master's log ends before what we asked for / hold */
        int64_t mn = store_commitlog_min_offset(ha->store);
        log_warn("ha: slave: master %s log ends at %lld, before offset %lld; searching the common point",
                 sl->master, (long long)off, (long long)sl->stream_pos);
        if (off < mn) {
            char why[128];
            snprintf(why, sizeof(why), "master's log ends at %lld, before ours starts at %lld", (long long)off,
                     (long long)mn);
            sl_stop(ha, why);
            return -1;
        }
        sl->hint = off;
        sl_drop(ha, 0);
        return -1;
    }
    if (off > sl->stream_pos) {
        if (store_commitlog_max_offset(ha->store) == 0 && sl->stream_pos == 0) {
            char why[160];
            snprintf(why, sizeof(why),
                     "master's log starts at %lld and an empty store can only start at offset 0",
                     (long long)off);
            sl_stop(ha, why);
        } else {
            log_warn("ha: slave: master %s sent offset %lld, expected %lld; reconnecting", sl->master,
                     (long long)off, (long long)sl->stream_pos);
            sl_drop(ha, ha->cfg.reconnect_ms);
        }
        return -1;
    }
    if (size == 0) {
        if (sl->st == SL_VERIFYING && off < sl->verify_end) {
            /* everything the master has matched: our extra tail goes */
            if (sl_truncate(ha, off, "slave log is longer than the master's") < 0)
                return -1;
            sl->st = SL_STREAMING;
            sl->walk = 0;
            sl->hint = INT64_MAX;
            sl->pend_off = store_commitlog_max_offset(ha->store);
            if (sl->pend_off != off) {
                sl_drop(ha, 0);
                return -1;
            }
            return sl_report(ha, off);
        }
        return 0;
    }
    sl->in_body = true;
    sl->body_left = (uint32_t)size;
    return 0;
}

static void sl_read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct ha *ha = w->data;
    struct ha_slave_side *sl = &ha->sl;
    size_t budget = HA_READ_BUDGET;
    while (budget && sl->fd >= 0) {
        ssize_t r;
        if (!sl->in_body) {
            r = read(sl->fd, sl->hdr + sl->hdr_len, HA_HDR - sl->hdr_len);
        } else {
            if (sl->head && sl->head + sl->len == sl->cap) {
                memmove(sl->buf, sl->buf + sl->head, sl->len);
                sl->head = 0;
            }
            size_t room = sl->cap - sl->head - sl->len;
            if (room == 0) {
                log_error("ha: slave: %zu bytes from master %s at %lld do not form a record; reconnecting",
                          sl->len, sl->master, (long long)sl->pend_off);
                sl_drop(ha, ha->cfg.reconnect_ms);
                return;
            }
            if (room > sl->body_left)
                room = sl->body_left;
            r = read(sl->fd, sl->buf + sl->head + sl->len, room);
        }
        if (r == 0) {
            log_warn("ha: slave: master %s closed the connection", sl->master);
            sl_drop(ha, sl->hint != INT64_MAX ? 0 : ha->cfg.reconnect_ms);
            return;
        }
        if (r < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            log_warn("ha: slave: reading from master %s failed: %s", sl->master, strerror(errno));
            sl_drop(ha, ha->cfg.reconnect_ms);
            return;
        }
        budget = (size_t)r >= budget ? 0 : budget - (size_t)r;
        sl->last_read_ms = mono_ms();
        sl->bytes_received += (uint64_t)r;
        if (!sl->in_body) {
            sl->hdr_len += (size_t)r;
            if (sl->hdr_len == HA_HDR && sl_header(ha) < 0)
                return;
            continue;
        }
        sl->len += (size_t)r;
        sl->body_left -= (uint32_t)r;
        sl->stream_pos += r;
        if (sl_process(ha) < 0)
            return;
        if (sl->body_left == 0) {
            sl->in_body = false;
            if (sl->st == SL_STREAMING && sl_report(ha, store_commitlog_max_offset(ha->store)) < 0)
                return;
        }
    }
}

static void sl_write_cb(struct ev_loop *loop, ev_io *w, int revents)
{
    struct ha *ha = w->data;
    struct ha_slave_side *sl = &ha->sl;
    if (sl->st == SL_CONNECTING) {
        int e = 0;
        socklen_t l = sizeof(e);
        if (getsockopt(sl->fd, SOL_SOCKET, SO_ERROR, &e, &l) < 0)
            e = errno;
        if (e) {
            log_warn("ha: slave: cannot connect to master %s: %s", sl->master, strerror(e));
            sl_drop(ha, ha->cfg.reconnect_ms);
            return;
        }
        ev_io_stop(loop, &sl->wio);
        ev_timer_stop(loop, &sl->retry);
        sl->st = sl->req < sl->verify_end ? SL_VERIFYING : SL_STREAMING;
        sl->last_read_ms = mono_ms();
        sl->connects++;
        log_info("ha: slave: connected to master %s, requesting offset %lld (own end %lld%s)", sl->master,
                 (long long)sl->req, (long long)sl->verify_end,
                 sl->st == SL_VERIFYING ? ", comparing the tail first" : "");
        ev_io_start(loop, &sl->rio);
        sl_report(ha, sl->req);
        return;
    }
    ev_io_stop(loop, &sl->wio);
    if (!sl->out_busy)
        return;
    for (;;) {
        ssize_t k = send(sl->fd, sl->out + sl->out_sent, 8 - sl->out_sent, MSG_NOSIGNAL);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                ev_io_start(loop, &sl->wio);
                return;
            }
            log_warn("ha: slave: sending to master %s failed: %s", sl->master, strerror(errno));
            sl_drop(ha, ha->cfg.reconnect_ms);
            return;
        }
        sl->out_sent += (size_t)k;
        if (sl->out_sent == 8)
            break;
    }
    sl->out_busy = false;
    sl->reported = (int64_t)rd_u64be(sl->out);
    sl->last_report_ms = mono_ms();
    if (sl->out_dirty)
        sl_report(ha, sl->out_value);
}

/* Picks the request offset R (see ha.h) for the own end O. Returns -1 if
 * the slave stopped. */
static int sl_plan(struct ha *ha)
{
    struct ha_slave_side *sl = &ha->sl;
    struct store *s = ha->store;
    int64_t o = store_commitlog_max_offset(s), mn = store_commitlog_min_offset(s);
    sl->verify_end = o;
    if (o <= mn) {
        sl->req = o;
        return 0;
    }
    int64_t base = sl->hint < o ? sl->hint : o;
    if (base < mn) {
        char why[128];
        snprintf(why, sizeof(why), "master's log ends at %lld, before ours starts at %lld", (long long)base,
                 (long long)mn);
        sl_stop(ha, why);
        return -1;
    }
    int64_t seg = (int64_t)store_segment_size(s);
    int64_t dist = sl->walk ? sl->walk : (int64_t)ha->cfg.check_window;
    int64_t target = base - dist;
    if (!sl->walk && base > 0) {
        int64_t segstart = (base - 1) - (base - 1) % seg;
        if (target < segstart)
            target = segstart;
    }
    if (target < mn)
        target = mn;
    sl->req = sl_floor(ha, target);
    if (sl->req > base)
        sl->req = base;
    return 0;
}

static void sl_connect(struct ha *ha)
{
    struct ha_slave_side *sl = &ha->sl;
    if (!sl->master[0] || sl->st == SL_STOPPED)
        return;
    sl_close_fd(ha);
    if (sl_plan(ha) < 0)
        return;
    sl->stream_pos = sl->req;
    sl->pend_off = sl->req;
    int fd = socket(sl->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        log_error("ha: slave: socket: %s", strerror(errno));
        sl_drop(ha, ha->cfg.reconnect_ms);
        return;
    }
    set_nodelay(fd);
    sl->fd = fd;
    sl->st = SL_CONNECTING;
    ev_io_set(&sl->rio, fd, EV_READ);
    ev_io_set(&sl->wio, fd, EV_WRITE);
    if (connect(fd, (struct sockaddr *)&sl->sa, sl->salen) < 0 && errno != EINPROGRESS) {
        log_warn("ha: slave: cannot connect to master %s: %s", sl->master, strerror(errno));
        sl_drop(ha, ha->cfg.reconnect_ms);
        return;
    }
    ev_io_start(ha->loop, &sl->wio);
    ev_timer_set(&sl->retry, ha->cfg.connect_timeout_ms / 1000.0, 0.);
    ev_timer_start(ha->loop, &sl->retry);
}

static void sl_retry_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct ha *ha = w->data;
    if (ha->sl.st == SL_CONNECTING) {
        log_warn("ha: slave: connecting to master %s timed out", ha->sl.master);
        sl_drop(ha, ha->cfg.reconnect_ms);
        return;
    }
    sl_connect(ha);
}

static void slave_tick(struct ha *ha)
{
    struct ha_slave_side *sl = &ha->sl;
    if (sl->st != SL_VERIFYING && sl->st != SL_STREAMING)
        return;
    int64_t now = mono_ms();
    if (now - sl->last_read_ms > ha->cfg.housekeeping_interval_ms) {
        log_warn("ha: slave: nothing from master %s for %lld ms; reconnecting", sl->master,
                 (long long)(now - sl->last_read_ms));
        sl_drop(ha, 0);
        return;
    }
    if (now - sl->last_report_ms >= ha->cfg.heartbeat_interval_ms)
        sl_report(ha, sl->st == SL_STREAMING ? store_commitlog_max_offset(ha->store) : sl->req);
}

int ha_slave_set_master(struct ha *ha, const char *addr)
{
    if (!ha || ha->role != HA_ROLE_SLAVE)
        return -EINVAL;
    struct ha_slave_side *sl = &ha->sl;
    if (!addr)
        addr = "";
    if (strcmp(addr, sl->master) == 0 && sl->st != SL_STOPPED)
        return 0;
    struct sockaddr_storage sa = { 0 };
    socklen_t salen = 0;
    if (*addr && (strlen(addr) >= sizeof(sl->master) || parse_addr(addr, &sa, &salen) < 0))
        return -EINVAL;
    if (sl->master[0])
        log_info("ha: slave: master changes from %s to %s", sl->master, *addr ? addr : "(none)");
    sl_close_fd(ha);
    snprintf(sl->master, sizeof(sl->master), "%s", addr);
    sl->sa = sa;
    sl->salen = salen;
    sl->st = SL_IDLE;
    sl->hint = INT64_MAX;
    sl->walk = 0;
    if (*addr)
        sl_connect(ha);
    return 0;
}

struct ha *ha_slave_start(struct ev_loop *loop, struct store *s, const char *master_addr,
                          const struct ha_config *cfg, int *err)
{
    struct ha *ha = ha_new(loop, s, cfg, HA_ROLE_SLAVE, err);
    if (!ha)
        return NULL;
    struct ha_slave_side *sl = &ha->sl;
    sl->cap = cfg->recv_buffer;
    sl->buf = malloc(sl->cap);
    if (!sl->buf) {
        free(ha->listen_host);
        free(ha);
        *err = -ENOMEM;
        return NULL;
    }
    sl->hint = INT64_MAX;
    ev_io_init(&sl->rio, sl_read_cb, -1, EV_READ);
    ev_io_init(&sl->wio, sl_write_cb, -1, EV_WRITE);
    ev_timer_init(&sl->retry, sl_retry_cb, 0., 0.);
    sl->rio.data = sl->wio.data = sl->retry.data = ha;
    start_common(ha);
    if (master_addr && *master_addr && ha_slave_set_master(ha, master_addr) < 0) {
        log_error("ha: invalid master address %s (want ip:port)", master_addr);
        ha_free(ha);
        *err = -EINVAL;
        return NULL;
    }
    return ha;
}

int ha_slave_status(struct ha *ha, struct ha_slave_status *st)
{
    if (!ha || ha->role != HA_ROLE_SLAVE)
        return -EINVAL;
    struct ha_slave_side *sl = &ha->sl;
    memset(st, 0, sizeof(*st));
    snprintf(st->master_addr, sizeof(st->master_addr), "%s", sl->master);
    st->connected = sl->st == SL_VERIFYING || sl->st == SL_STREAMING;
    st->verifying = sl->st == SL_VERIFYING;
    st->stopped = sl->st == SL_STOPPED;
    st->max_offset = store_commitlog_max_offset(ha->store);
    st->reported_offset = sl->reported;
    st->last_read_ago_ms = sl->connects ? mono_ms() - sl->last_read_ms : -1;
    st->bytes_received = sl->bytes_received;
    st->truncations = sl->truncations;
    st->connects = sl->connects;
    return 0;
}

void ha_notify_new_data(struct ha *ha)
{
    if (ha)
        ev_async_send(ha->loop, &ha->notify);
}

void ha_free(struct ha *ha)
{
    if (!ha)
        return;
    ev_async_stop(ha->loop, &ha->notify);
    ev_timer_stop(ha->loop, &ha->tick);
    if (ha->role == HA_ROLE_MASTER) {
        while (ha->conns) {
            struct ha_conn *c = ha->conns;
            ev_io_stop(ha->loop, &c->rio);
            ev_io_stop(ha->loop, &c->wio);
            close(c->fd);
            store_hold_release(&c->hold);
            ha->conns = c->next;
            free(c);
        }
        waits_complete_upto(ha, INT64_MAX, STORE_PUT_SLAVE_NOT_AVAILABLE);
        free(ha->waits);
        if (ha->lfd >= 0) {
            ev_io_stop(ha->loop, &ha->lio);
            close(ha->lfd);
        }
    } else {
        sl_close_fd(ha);
        free(ha->sl.buf);
    }
    free(ha->listen_host);
    free(ha);
}
