/*
 * Tests of the proxy's gRPC transport (proxy/grpc_server.c). The server runs
 * on its own libev loop in a thread; the test drives it with a small nghttp2
 * client session over real loopback sockets, plus raw sockets for malformed
 * input. Server-side state is only read on the server thread (srv_exec).
 */
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "apache/rocketmq/v2/service.pb-c.h"
#include "buf.h"
#include "grpc_server.h"
#include "log.h"

#define SVC "/apache.rocketmq.v2.MessagingService/"
#define MAX_RECV (256 * 1024)

struct hstate {
    int route_calls;
    char route_client_id[64];
    int hang_msgs;
    int cancels;
    enum px_grpc_end_reason last_reason;
    int recv_cancels;
    int half_closes;
    int telemetry_msgs;
    int shutdown_done;
    int echo_calls;
    int errors;
};

static struct {
    struct ev_loop *loop;
    struct px_grpc_server *srv;
    pthread_t th;
    ev_async wake;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    void (*fn)(void *);
    void *arg;
    int fn_done;
    int stop;
    uint16_t port;
    struct hstate h;
} S;

static void wake_cb(struct ev_loop *loop, ev_async *w, int revents)
{
    pthread_mutex_lock(&S.mu);
    if (S.fn) {
        S.fn(S.arg);
        S.fn = NULL;
        S.fn_done = 1;
        pthread_cond_broadcast(&S.cv);
    }
    if (S.stop)
        ev_break(loop, EVBREAK_ALL);
    pthread_mutex_unlock(&S.mu);
}

static void *server_thread(void *arg)
{
    ev_run(S.loop, 0);
    return NULL;
}

/* Runs fn(arg) on the server thread and waits for it. */
static void srv_exec(void (*fn)(void *), void *arg)
{
    pthread_mutex_lock(&S.mu);
    S.fn = fn;
    S.arg = arg;
    S.fn_done = 0;
    ev_async_send(S.loop, &S.wake);
    while (!S.fn_done)
        pthread_cond_wait(&S.cv, &S.mu);
    pthread_mutex_unlock(&S.mu);
}

static void get_stats_fn(void *arg) { px_grpc_server_stats(S.srv, arg); }
static struct px_grpc_stats srv_stats(void)
{
    struct px_grpc_stats st;
    srv_exec(get_stats_fn, &st);
    return st;
}
static void get_h_fn(void *arg) { *(struct hstate *)arg = S.h; }
static struct hstate srv_h(void)
{
    struct hstate h;
    srv_exec(get_h_fn, &h);
    return h;
}

/* Checks inside handlers run on the server thread, where Check cannot
 * abort the test; failures are counted and asserted at teardown. */
#define HCHECK(c)                                                              \
    do {                                                                       \
        if (!(c)) {                                                            \
            fprintf(stderr, "%s:%d: server-side check failed: %s\n", __FILE__, \
                    __LINE__, #c);                                             \
            S.h.errors++;                                                      \
        }                                                                      \
    } while (0)
#define HCHECK_EQ(a, b) HCHECK((a) == (b))

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* QueryRoute: proves protoc-c wiring both ways. */
static void route_msg(struct px_grpc_call *call, const uint8_t *msg, size_t len, void *arg)
{
    Apache__Rocketmq__V2__QueryRouteRequest *req =
        apache__rocketmq__v2__query_route_request__unpack(NULL, len, msg);
    if (!req || !req->topic) {
        px_grpc_call_finish(call, PX_GRPC_INVALID_ARGUMENT, "cannot decode QueryRouteRequest");
        if (req)
            apache__rocketmq__v2__query_route_request__free_unpacked(req, NULL);
        return;
    }
    S.h.route_calls++;
    const char *cid = px_grpc_call_header(call, "x-mq-client-id");
    snprintf(S.h.route_client_id, sizeof(S.h.route_client_id), "%s", cid ? cid : "");

    Apache__Rocketmq__V2__Status st = APACHE__ROCKETMQ__V2__STATUS__INIT;
    st.code = APACHE__ROCKETMQ__V2__CODE__OK;
    st.message = (char *)"OK";
    Apache__Rocketmq__V2__Address addr = APACHE__ROCKETMQ__V2__ADDRESS__INIT;
    addr.host = (char *)"10.0.0.7";
    addr.port = 10911;
    Apache__Rocketmq__V2__Address *addrs[] = { &addr };
    Apache__Rocketmq__V2__Endpoints ep = APACHE__ROCKETMQ__V2__ENDPOINTS__INIT;
    ep.scheme = APACHE__ROCKETMQ__V2__ADDRESS_SCHEME__IPv4;
    ep.n_addresses = 1;
    ep.addresses = addrs;
    Apache__Rocketmq__V2__Broker broker = APACHE__ROCKETMQ__V2__BROKER__INIT;
    broker.name = (char *)"broker-a";
    broker.endpoints = &ep;
    Apache__Rocketmq__V2__MessageQueue mq[2];
    Apache__Rocketmq__V2__MessageQueue *mqs[2];
    Apache__Rocketmq__V2__MessageType types[] = { APACHE__ROCKETMQ__V2__MESSAGE_TYPE__NORMAL };
    for (int i = 0; i < 2; i++) {
        apache__rocketmq__v2__message_queue__init(&mq[i]);
        mq[i].topic = req->topic;
        mq[i].id = i;
        mq[i].permission = APACHE__ROCKETMQ__V2__PERMISSION__READ_WRITE;
        mq[i].broker = &broker;
        mq[i].n_accept_message_types = 1;
        mq[i].accept_message_types = types;
        mqs[i] = &mq[i];
    }
    Apache__Rocketmq__V2__QueryRouteResponse resp = APACHE__ROCKETMQ__V2__QUERY_ROUTE_RESPONSE__INIT;
    resp.status = &st;
    resp.n_message_queues = 2;
    resp.message_queues = mqs;
    HCHECK_EQ(px_grpc_call_send_pb(call, &resp.base), 0);
    HCHECK_EQ(px_grpc_call_finish(call, PX_GRPC_OK, NULL), 0);
    HCHECK_EQ(px_grpc_call_finish(call, PX_GRPC_OK, NULL), -EALREADY);
    HCHECK_EQ(px_grpc_call_send(call, "x", 1), -EINVAL);
    apache__rocketmq__v2__query_route_request__free_unpacked(req, NULL);
}

static void echo_msg(struct px_grpc_call *call, const uint8_t *msg, size_t len, void *arg)
{
    S.h.echo_calls++;
    px_grpc_call_send(call, msg, len);
    px_grpc_call_finish(call, PX_GRPC_OK, NULL);
}

/* EchoLater answers from a timer, i.e. asynchronously, holding a reference. */
struct later {
    ev_timer t;
    struct px_grpc_call *call;
    size_t len;
    uint8_t data[];
};

static void later_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct later *l = (struct later *)w;
    if (px_grpc_call_active(l->call)) {
        px_grpc_call_send(l->call, l->data, l->len);
        px_grpc_call_finish(l->call, PX_GRPC_OK, "later");
    }
    px_grpc_call_unref(l->call);
    free(l);
}

static void echo_later_msg(struct px_grpc_call *call, const uint8_t *msg, size_t len, void *arg)
{
    struct later *l = malloc(sizeof(*l) + len);
    HCHECK(l != NULL);
    if (!l)
        return;
    memcpy(l->data, msg, len);
    l->len = len;
    l->call = call;
    px_grpc_call_ref(call);
    ev_timer_init(&l->t, later_cb, 0.001 * (double)(len % 7), 0.);
    ev_timer_start(S.loop, &l->t);
}

/* Hang: keeps the call and never answers; only cancellation ends it. */
static void hang_msg(struct px_grpc_call *call, const uint8_t *msg, size_t len, void *arg)
{
    S.h.hang_msgs++;
    px_grpc_call_ref(call);
}

static void hang_cancel(struct px_grpc_call *call, enum px_grpc_end_reason why, void *arg)
{
    S.h.cancels++;
    S.h.last_reason = why;
    HCHECK_EQ(px_grpc_call_send(call, "x", 1), -ECANCELED);
    HCHECK_EQ(px_grpc_call_finish(call, PX_GRPC_OK, NULL), -ECANCELED);
    px_grpc_call_unref(call);
}

/* ReceiveMessage: server streaming from a timer, batch_size messages then OK. */
struct recv_job {
    ev_timer t;
    struct px_grpc_call *call;
    int sent, want;
};

static void recv_job_end(struct recv_job *j)
{
    ev_timer_stop(S.loop, &j->t);
    px_grpc_call_set_data(j->call, NULL);
    px_grpc_call_unref(j->call);
    free(j);
}

static void recv_tick(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct recv_job *j = (struct recv_job *)w;
    char body[32];
    int n = snprintf(body, sizeof(body), "msg-%d", j->sent);
    Apache__Rocketmq__V2__Message m = APACHE__ROCKETMQ__V2__MESSAGE__INIT;
    m.body.data = (uint8_t *)body;
    m.body.len = (size_t)n;
    Apache__Rocketmq__V2__ReceiveMessageResponse r = APACHE__ROCKETMQ__V2__RECEIVE_MESSAGE_RESPONSE__INIT;
    r.content_case = APACHE__ROCKETMQ__V2__RECEIVE_MESSAGE_RESPONSE__CONTENT_MESSAGE;
    r.message = &m;
    HCHECK_EQ(px_grpc_call_send_pb(j->call, &r.base), 0);
    if (++j->sent == j->want) {
        Apache__Rocketmq__V2__Status st = APACHE__ROCKETMQ__V2__STATUS__INIT;
        st.code = APACHE__ROCKETMQ__V2__CODE__OK;
        r.content_case = APACHE__ROCKETMQ__V2__RECEIVE_MESSAGE_RESPONSE__CONTENT_STATUS;
        r.status = &st;
        HCHECK_EQ(px_grpc_call_send_pb(j->call, &r.base), 0);
        HCHECK_EQ(px_grpc_call_finish(j->call, PX_GRPC_OK, NULL), 0);
        recv_job_end(j);
    }
}

static void recv_msg(struct px_grpc_call *call, const uint8_t *msg, size_t len, void *arg)
{
    Apache__Rocketmq__V2__ReceiveMessageRequest *req =
        apache__rocketmq__v2__receive_message_request__unpack(NULL, len, msg);
    if (!req) {
        px_grpc_call_finish(call, PX_GRPC_INVALID_ARGUMENT, "bad ReceiveMessageRequest");
        return;
    }
    struct recv_job *j = calloc(1, sizeof(*j));
    HCHECK(j != NULL);
    if (!j) {
        apache__rocketmq__v2__receive_message_request__free_unpacked(req, NULL);
        return;
    }
    j->call = call;
    j->want = req->batch_size;
    double iv = req->long_polling_timeout ? req->long_polling_timeout->nanos / 1e9 : 0.005;
    apache__rocketmq__v2__receive_message_request__free_unpacked(req, NULL);
    px_grpc_call_ref(call);
    px_grpc_call_set_data(call, j);
    ev_timer_init(&j->t, recv_tick, iv, iv);
    ev_timer_start(S.loop, &j->t);
}

static void recv_cancel(struct px_grpc_call *call, enum px_grpc_end_reason why, void *arg)
{
    S.h.recv_cancels++;
    S.h.last_reason = why;
    struct recv_job *j = px_grpc_call_data(call);
    if (j)
        recv_job_end(j);
}

/* Telemetry: answers every command with a status "echo N" (+ its settings). */
static void tele_msg(struct px_grpc_call *call, const uint8_t *msg, size_t len, void *arg)
{
    Apache__Rocketmq__V2__TelemetryCommand *in =
        apache__rocketmq__v2__telemetry_command__unpack(NULL, len, msg);
    if (!in) {
        px_grpc_call_finish(call, PX_GRPC_INVALID_ARGUMENT, "bad TelemetryCommand");
        return;
    }
    S.h.telemetry_msgs++;
    char text[32];
    snprintf(text, sizeof(text), "echo %d", S.h.telemetry_msgs);
    Apache__Rocketmq__V2__Status st = APACHE__ROCKETMQ__V2__STATUS__INIT;
    st.code = APACHE__ROCKETMQ__V2__CODE__OK;
    st.message = text;
    Apache__Rocketmq__V2__TelemetryCommand out = APACHE__ROCKETMQ__V2__TELEMETRY_COMMAND__INIT;
    out.status = &st;
    if (in->command_case == APACHE__ROCKETMQ__V2__TELEMETRY_COMMAND__COMMAND_SETTINGS) {
        out.command_case = in->command_case;
        out.settings = in->settings;
    }
    HCHECK_EQ(px_grpc_call_send_pb(call, &out.base), 0);
    apache__rocketmq__v2__telemetry_command__free_unpacked(in, NULL);
}

static void tele_half_close(struct px_grpc_call *call, void *arg)
{
    S.h.half_closes++;
    px_grpc_call_finish(call, PX_GRPC_OK, "bye: 100% done\n");
}

static void tele_cancel(struct px_grpc_call *call, enum px_grpc_end_reason why, void *arg)
{
    S.h.cancels++;
    S.h.last_reason = why;
}

static void server_start(void)
{
    memset(&S, 0, sizeof(S));
    log_set_level(getenv("PX_TEST_DEBUG") ? LOG_LVL_DEBUG : LOG_LVL_WARN);
    pthread_mutex_init(&S.mu, NULL);
    pthread_cond_init(&S.cv, NULL);
    S.loop = ev_loop_new(EVFLAG_AUTO);
    ck_assert_ptr_nonnull(S.loop);
    struct px_grpc_config cfg;
    px_grpc_config_default(&cfg);
    cfg.max_recv_msg = MAX_RECV;
    cfg.handshake_timeout = 0.5;
    cfg.idle_timeout = 1.5;
    cfg.write_stall_timeout = 1.0;
    S.srv = px_grpc_server_new(S.loop, &cfg);
    ck_assert_ptr_nonnull(S.srv);
    struct px_grpc_handler h;
    memset(&h, 0, sizeof(h));
    h.kind = PX_GRPC_UNARY;
    h.on_message = route_msg;
    ck_assert_int_eq(px_grpc_server_register(S.srv, SVC "QueryRoute", &h), 0);
    ck_assert_int_eq(px_grpc_server_register(S.srv, SVC "QueryRoute", &h), -EEXIST);
    h.on_message = echo_msg;
    ck_assert_int_eq(px_grpc_server_register(S.srv, "/test.Echo/Echo", &h), 0);
    h.on_message = echo_later_msg;
    ck_assert_int_eq(px_grpc_server_register(S.srv, "/test.Echo/EchoLater", &h), 0);
    h.on_message = hang_msg;
    h.on_cancel = hang_cancel;
    ck_assert_int_eq(px_grpc_server_register(S.srv, "/test.Hang/Hang", &h), 0);
    h.kind = PX_GRPC_SERVER_STREAMING;
    h.on_message = recv_msg;
    h.on_cancel = recv_cancel;
    ck_assert_int_eq(px_grpc_server_register(S.srv, SVC "ReceiveMessage", &h), 0);
    h.kind = PX_GRPC_BIDI_STREAMING;
    h.on_message = tele_msg;
    h.on_half_close = tele_half_close;
    h.on_cancel = tele_cancel;
    ck_assert_int_eq(px_grpc_server_register(S.srv, SVC "Telemetry", &h), 0);
    ck_assert_int_eq(px_grpc_server_listen(S.srv, "127.0.0.1", 0), 0);
    S.port = px_grpc_server_port(S.srv);
    ck_assert_uint_ne(S.port, 0);
    ev_async_init(&S.wake, wake_cb);
    ev_async_start(S.loop, &S.wake);
    ck_assert_int_eq(pthread_create(&S.th, NULL, server_thread, NULL), 0);
}

static void free_srv_fn(void *arg)
{
    px_grpc_server_free(S.srv);
    S.srv = NULL;
}

static void stop_fn(void *arg) { S.stop = 1; }

static void server_stop(void)
{
    ck_assert_int_eq(srv_h().errors, 0);
    srv_exec(free_srv_fn, NULL);
    srv_exec(stop_fn, NULL);
    pthread_join(S.th, NULL);
    ev_async_stop(S.loop, &S.wake);
    ev_loop_destroy(S.loop);
    pthread_mutex_destroy(&S.mu);
    pthread_cond_destroy(&S.cv);
}

struct tstream {
    int32_t id;
    struct buf tx;
    size_t tx_off;
    size_t chunk;        /* max DATA payload per read (0 = any) */
    int tx_eof;
    int deferred;
    struct buf rx;       /* raw gRPC-framed response bytes */
    int http_status;
    int grpc_status;     /* -1 until seen */
    char grpc_msg[256];
    int closed;
    uint32_t rst_code;
    struct tstream *next;
};

struct tclient {
    int fd;
    nghttp2_session *s;
    struct buf out;
    size_t out_off;
    int eof;
    int got_goaway;
    struct tstream *streams;
};

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

static int c_on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name, size_t nl,
                       const uint8_t *val, size_t vl, uint8_t flags, void *ud)
{
    struct tstream *ts = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
    if (!ts)
        return 0;
    if (nl == 7 && memcmp(name, ":status", 7) == 0)
        ts->http_status = atoi((const char *)val);
    else if (nl == 11 && memcmp(name, "grpc-status", 11) == 0)
        ts->grpc_status = atoi((const char *)val);
    else if (nl == 12 && memcmp(name, "grpc-message", 12) == 0) {
        size_t o = 0;
        for (size_t i = 0; i < vl && o + 1 < sizeof(ts->grpc_msg); i++) {
            if (val[i] == '%' && i + 2 < vl && hexval(val[i + 1]) >= 0 && hexval(val[i + 2]) >= 0) {
                ts->grpc_msg[o++] = (char)(hexval(val[i + 1]) * 16 + hexval(val[i + 2]));
                i += 2;
            } else {
                ts->grpc_msg[o++] = (char)val[i];
            }
        }
        ts->grpc_msg[o] = 0;
    }
    return 0;
}

static int c_on_data(nghttp2_session *s, uint8_t flags, int32_t sid, const uint8_t *data,
                     size_t len, void *ud)
{
    struct tstream *ts = nghttp2_session_get_stream_user_data(s, sid);
    if (ts)
        ck_assert_int_eq(buf_append(&ts->rx, data, len), 0);
    return 0;
}

static int c_on_close(nghttp2_session *s, int32_t sid, uint32_t code, void *ud)
{
    struct tstream *ts = nghttp2_session_get_stream_user_data(s, sid);
    if (ts) {
        ts->closed = 1;
        ts->rst_code = code;
    }
    return 0;
}

static int c_on_frame(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
    struct tclient *tc = ud;
    if (f->hd.type == NGHTTP2_GOAWAY)
        tc->got_goaway = 1;
    return 0;
}

static ssize_t c_read(nghttp2_session *s, int32_t sid, uint8_t *out, size_t length,
                      uint32_t *flags, nghttp2_data_source *src, void *ud)
{
    struct tstream *ts = src->ptr;
    size_t avail = ts->tx.len - ts->tx_off;
    size_t n = avail < length ? avail : length;
    if (ts->chunk && n > ts->chunk)
        n = ts->chunk;
    if (n)
        memcpy(out, ts->tx.data + ts->tx_off, n);
    ts->tx_off += n;
    if (ts->tx_off == ts->tx.len) {
        if (ts->tx_eof)
            *flags |= NGHTTP2_DATA_FLAG_EOF;
        else if (n == 0) {
            ts->deferred = 1;
            return NGHTTP2_ERR_DEFERRED;
        }
    }
    return (ssize_t)n;
}

static int tcp_connect(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_in sin;
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_port = htons(S.port);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sin, sizeof(sin)) != 0) {
        close(fd);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
}

static struct tclient *tc_new(void)
{
    struct tclient *tc = calloc(1, sizeof(*tc));
    ck_assert_ptr_nonnull(tc);
    tc->fd = tcp_connect();
    ck_assert_int_ge(tc->fd, 0);
    fcntl(tc->fd, F_SETFL, fcntl(tc->fd, F_GETFL) | O_NONBLOCK);
    nghttp2_session_callbacks *cb;
    nghttp2_session_callbacks_new(&cb);
    nghttp2_session_callbacks_set_on_header_callback(cb, c_on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, c_on_data);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, c_on_close);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, c_on_frame);
    ck_assert_int_eq(nghttp2_session_client_new(&tc->s, cb, tc), 0);
    nghttp2_session_callbacks_del(cb);
    nghttp2_settings_entry iv[] = {
        { NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20 },
        { NGHTTP2_SETTINGS_ENABLE_PUSH, 0 },
    };
    ck_assert_int_eq(nghttp2_submit_settings(tc->s, NGHTTP2_FLAG_NONE, iv, 2), 0);
    return tc;
}

static void tc_free(struct tclient *tc)
{
    if (tc->fd >= 0)
        close(tc->fd);
    nghttp2_session_del(tc->s);
    while (tc->streams) {
        struct tstream *ts = tc->streams;
        tc->streams = ts->next;
        buf_free(&ts->tx);
        buf_free(&ts->rx);
        free(ts);
    }
    buf_free(&tc->out);
    free(tc);
}

static void frame_msg(struct buf *b, const void *msg, size_t len, uint8_t flag)
{
    ck_assert_int_eq(buf_append_u8(b, flag), 0);
    ck_assert_int_eq(buf_append_u32be(b, (uint32_t)len), 0);
    ck_assert_int_eq(buf_append(b, msg, len), 0);
}

/* Opens a stream; `msg` (may be NULL) is the first message; eof half-closes. */
static struct tstream *tc_call(struct tclient *tc, const char *path, const char *timeout,
                               const void *msg, size_t len, int eof)
{
    struct tstream *ts = calloc(1, sizeof(*ts));
    ck_assert_ptr_nonnull(ts);
    ts->grpc_status = -1;
    if (msg)
        frame_msg(&ts->tx, msg, len, 0);
    ts->tx_eof = eof;
    nghttp2_nv nv[8];
    size_t n = 0;
#define NV(a, b) nv[n++] = (nghttp2_nv){ (uint8_t *)(a), (uint8_t *)(b), strlen(a), strlen(b), 0 }
    NV(":method", "POST");
    NV(":scheme", "http");
    NV(":path", path);
    NV(":authority", "127.0.0.1");
    NV("content-type", "application/grpc");
    NV("te", "trailers");
    NV("x-mq-client-id", "client-7@test");
    if (timeout)
        NV("grpc-timeout", timeout);
#undef NV
    nghttp2_data_provider prd;
    prd.source.ptr = ts;
    prd.read_callback = c_read;
    ts->id = nghttp2_submit_request(tc->s, NULL, nv, n, &prd, ts);
    ck_assert_int_gt(ts->id, 0);
    ts->next = tc->streams;
    tc->streams = ts;
    return ts;
}

static void tc_send(struct tclient *tc, struct tstream *ts, const void *msg, size_t len, int eof)
{
    if (msg)
        frame_msg(&ts->tx, msg, len, 0);
    if (eof)
        ts->tx_eof = 1;
    if (ts->deferred) {
        ts->deferred = 0;
        nghttp2_session_resume_data(tc->s, ts->id);
    }
}

/* One round of I/O: write what nghttp2 has, wait up to ms for input. */
static void tc_pump(struct tclient *tc, int ms)
{
    if (tc->eof)
        return;
    for (;;) {
        const uint8_t *d;
        ssize_t n = nghttp2_session_mem_send(tc->s, &d);
        ck_assert_int_ge(n, 0);
        if (n == 0)
            break;
        ck_assert_int_eq(buf_append(&tc->out, d, (size_t)n), 0);
    }
    while (tc->out_off < tc->out.len) {
        ssize_t w = send(tc->fd, tc->out.data + tc->out_off, tc->out.len - tc->out_off, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EAGAIN)
                break;
            tc->eof = 1;
            return;
        }
        tc->out_off += (size_t)w;
    }
    if (tc->out_off == tc->out.len)
        tc->out.len = tc->out_off = 0;
    struct pollfd p = { tc->fd, POLLIN | (tc->out.len ? POLLOUT : 0), 0 };
    if (poll(&p, 1, ms) <= 0)
        return;
    if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
        uint8_t rb[16384];
        ssize_t r = read(tc->fd, rb, sizeof(rb));
        if (r <= 0) {
            if (r < 0 && errno == EAGAIN)
                return;
            tc->eof = 1;
            return;
        }
        ck_assert_int_ge(nghttp2_session_mem_recv(tc->s, rb, (size_t)r), 0);
    }
}

static int stream_done(struct tstream *ts) { return ts->closed; }

static void tc_wait_stream(struct tclient *tc, struct tstream *ts, double secs)
{
    double end = now_s() + secs;
    while (!stream_done(ts) && !tc->eof && now_s() < end)
        tc_pump(tc, 20);
    ck_assert_msg(stream_done(ts), "stream %d did not finish", ts->id);
}

/* Waits until the server-side predicate holds (polled through srv_exec). */
#define WAIT_SERVER(tc, cond, secs)                                        \
    do {                                                                   \
        double end_ = now_s() + (secs);                                    \
        while (!(cond) && now_s() < end_) {                                \
            if (tc)                                                        \
                tc_pump(tc, 10);                                           \
            else                                                           \
                usleep(10000);                                             \
        }                                                                  \
        ck_assert_msg((cond), "timed out waiting for: %s", #cond);         \
    } while (0)

/* Iterates gRPC messages in a stream's rx bytes. */
static int next_msg(struct tstream *ts, size_t *off, const uint8_t **msg, size_t *len)
{
    if (*off + 5 > ts->rx.len)
        return 0;
    uint32_t l = rd_u32be(ts->rx.data + *off + 1);
    ck_assert_uint_eq(ts->rx.data[*off], 0);
    ck_assert_uint_le(*off + 5 + l, ts->rx.len);
    *msg = ts->rx.data + *off + 5;
    *len = l;
    *off += 5 + l;
    return 1;
}

START_TEST(test_unary_protobuf_roundtrip)
{
    struct tclient *tc = tc_new();
    Apache__Rocketmq__V2__Resource topic = APACHE__ROCKETMQ__V2__RESOURCE__INIT;
    topic.name = (char *)"TopicTest";
    topic.resource_namespace = (char *)"ns1";
    Apache__Rocketmq__V2__QueryRouteRequest req = APACHE__ROCKETMQ__V2__QUERY_ROUTE_REQUEST__INIT;
    req.topic = &topic;
    uint8_t pb[256];
    size_t plen = apache__rocketmq__v2__query_route_request__pack(&req, pb);
    struct tstream *ts = tc_call(tc, SVC "QueryRoute", NULL, pb, plen, 1);
    tc_wait_stream(tc, ts, 5);
    ck_assert_int_eq(ts->http_status, 200);
    ck_assert_int_eq(ts->grpc_status, 0);
    ck_assert_uint_eq(ts->rst_code, 0);
    size_t off = 0, len;
    const uint8_t *m;
    ck_assert(next_msg(ts, &off, &m, &len));
    Apache__Rocketmq__V2__QueryRouteResponse *resp =
        apache__rocketmq__v2__query_route_response__unpack(NULL, len, m);
    ck_assert_ptr_nonnull(resp);
    ck_assert_int_eq(resp->status->code, APACHE__ROCKETMQ__V2__CODE__OK);
    ck_assert_uint_eq(resp->n_message_queues, 2);
    for (int i = 0; i < 2; i++) {
        Apache__Rocketmq__V2__MessageQueue *q = resp->message_queues[i];
        ck_assert_str_eq(q->topic->name, "TopicTest");
        ck_assert_str_eq(q->topic->resource_namespace, "ns1");
        ck_assert_int_eq(q->id, i);
        ck_assert_int_eq(q->permission, APACHE__ROCKETMQ__V2__PERMISSION__READ_WRITE);
        ck_assert_str_eq(q->broker->name, "broker-a");
        ck_assert_str_eq(q->broker->endpoints->addresses[0]->host, "10.0.0.7");
        ck_assert_int_eq(q->broker->endpoints->addresses[0]->port, 10911);
        ck_assert_uint_eq(q->n_accept_message_types, 1);
    }
    apache__rocketmq__v2__query_route_response__free_unpacked(resp, NULL);
    ck_assert(!next_msg(ts, &off, &m, &len));
    struct hstate h = srv_h();
    ck_assert_int_eq(h.route_calls, 1);
    ck_assert_str_eq(h.route_client_id, "client-7@test");

    /* Undecodable request: handler answers with its own error status. */
    ts = tc_call(tc, SVC "QueryRoute", NULL, "\xff\xff\xff", 3, 1);
    tc_wait_stream(tc, ts, 5);
    ck_assert_int_eq(ts->grpc_status, PX_GRPC_INVALID_ARGUMENT);
    ck_assert_str_eq(ts->grpc_msg, "cannot decode QueryRouteRequest");
    tc_free(tc);
    WAIT_SERVER(NULL, srv_stats().calls_live == 0 && srv_stats().conns_open == 0, 5);
}
END_TEST

START_TEST(test_server_streaming)
{
    struct tclient *tc = tc_new();
    Apache__Rocketmq__V2__ReceiveMessageRequest req = APACHE__ROCKETMQ__V2__RECEIVE_MESSAGE_REQUEST__INIT;
    req.batch_size = 3;
    uint8_t pb[64];
    size_t plen = apache__rocketmq__v2__receive_message_request__pack(&req, pb);
    struct tstream *ts = tc_call(tc, SVC "ReceiveMessage", NULL, pb, plen, 1);
    tc_wait_stream(tc, ts, 5);
    ck_assert_int_eq(ts->grpc_status, 0);
    size_t off = 0, len;
    const uint8_t *m;
    int n = 0;
    while (next_msg(ts, &off, &m, &len)) {
        Apache__Rocketmq__V2__ReceiveMessageResponse *r =
            apache__rocketmq__v2__receive_message_response__unpack(NULL, len, m);
        ck_assert_ptr_nonnull(r);
        if (n < 3) {
            char want[16];
            snprintf(want, sizeof(want), "msg-%d", n);
            ck_assert_int_eq(r->content_case, APACHE__ROCKETMQ__V2__RECEIVE_MESSAGE_RESPONSE__CONTENT_MESSAGE);
            ck_assert_uint_eq(r->message->body.len, strlen(want));
            ck_assert(memcmp(r->message->body.data, want, strlen(want)) == 0);
        } else {
            ck_assert_int_eq(r->content_case, APACHE__ROCKETMQ__V2__RECEIVE_MESSAGE_RESPONSE__CONTENT_STATUS);
            ck_assert_int_eq(r->status->code, APACHE__ROCKETMQ__V2__CODE__OK);
        }
        apache__rocketmq__v2__receive_message_response__free_unpacked(r, NULL);
        n++;
    }
    ck_assert_int_eq(n, 4);
    ck_assert_int_eq(srv_h().recv_cancels, 0);
    tc_free(tc);
    WAIT_SERVER(NULL, srv_stats().calls_live == 0, 5);
}
END_TEST

static size_t pack_tele(uint8_t *out, const char *hostname)
{
    Apache__Rocketmq__V2__UA ua = APACHE__ROCKETMQ__V2__UA__INIT;
    ua.language = APACHE__ROCKETMQ__V2__LANGUAGE__NODE_JS;
    ua.hostname = (char *)hostname;
    Apache__Rocketmq__V2__Settings st = APACHE__ROCKETMQ__V2__SETTINGS__INIT;
    st.opt_client_type_case = APACHE__ROCKETMQ__V2__SETTINGS__OPT_CLIENT_TYPE_CLIENT_TYPE;
    st.client_type = APACHE__ROCKETMQ__V2__CLIENT_TYPE__PRODUCER;
    st.user_agent = &ua;
    Apache__Rocketmq__V2__TelemetryCommand c = APACHE__ROCKETMQ__V2__TELEMETRY_COMMAND__INIT;
    c.command_case = APACHE__ROCKETMQ__V2__TELEMETRY_COMMAND__COMMAND_SETTINGS;
    c.settings = &st;
    return apache__rocketmq__v2__telemetry_command__pack(&c, out);
}

static int count_msgs(struct tstream *ts)
{
    size_t off = 0, len;
    const uint8_t *m;
    int n = 0;
    while (next_msg(ts, &off, &m, &len))
        n++;
    return n;
}

START_TEST(test_bidi_streaming)
{
    struct tclient *tc = tc_new();
    uint8_t pb[256];
    size_t plen = pack_tele(pb, "host-0");
    struct tstream *ts = tc_call(tc, SVC "Telemetry", NULL, pb, plen, 0);
    /* Interleaved: wait for each answer before sending the next command. */
    double end = now_s() + 5;
    while (count_msgs(ts) < 1 && now_s() < end)
        tc_pump(tc, 10);
    ck_assert_int_eq(count_msgs(ts), 1);
    /* Two messages in one DATA frame. */
    plen = pack_tele(pb, "host-1");
    frame_msg(&ts->tx, pb, plen, 0);
    plen = pack_tele(pb, "host-2");
    tc_send(tc, ts, pb, plen, 0);
    while (count_msgs(ts) < 3 && now_s() < end)
        tc_pump(tc, 10);
    ck_assert_int_eq(count_msgs(ts), 3);
    /* One message split over many 3-byte DATA frames. */
    ts->chunk = 3;
    plen = pack_tele(pb, "host-3-with-a-longer-name");
    tc_send(tc, ts, pb, plen, 0);
    while (count_msgs(ts) < 4 && now_s() < end)
        tc_pump(tc, 10);
    ck_assert_int_eq(count_msgs(ts), 4);
    ck_assert(!ts->closed);
    tc_send(tc, ts, NULL, 0, 1);
    tc_wait_stream(tc, ts, 5);
    ck_assert_int_eq(ts->grpc_status, 0);
    ck_assert_str_eq(ts->grpc_msg, "bye: 100% done\n");

    size_t off = 0, len;
    const uint8_t *m;
    const char *hosts[] = { "host-0", "host-1", "host-2", "host-3-with-a-longer-name" };
    for (int i = 0; i < 4; i++) {
        ck_assert(next_msg(ts, &off, &m, &len));
        Apache__Rocketmq__V2__TelemetryCommand *c =
            apache__rocketmq__v2__telemetry_command__unpack(NULL, len, m);
        ck_assert_ptr_nonnull(c);
        char want[16];
        snprintf(want, sizeof(want), "echo %d", i + 1);
        ck_assert_str_eq(c->status->message, want);
        ck_assert_int_eq(c->command_case, APACHE__ROCKETMQ__V2__TELEMETRY_COMMAND__COMMAND_SETTINGS);
        ck_assert_int_eq(c->settings->opt_client_type_case,
                         APACHE__ROCKETMQ__V2__SETTINGS__OPT_CLIENT_TYPE_CLIENT_TYPE);
        ck_assert_int_eq(c->settings->client_type, APACHE__ROCKETMQ__V2__CLIENT_TYPE__PRODUCER);
        ck_assert_str_eq(c->settings->user_agent->hostname, hosts[i]);
        apache__rocketmq__v2__telemetry_command__free_unpacked(c, NULL);
    }
    struct hstate h = srv_h();
    ck_assert_int_eq(h.half_closes, 1);
    ck_assert_int_eq(h.cancels, 0);
    tc_free(tc);
    WAIT_SERVER(NULL, srv_stats().calls_live == 0, 5);
}
END_TEST

START_TEST(test_unknown_method_and_bad_requests)
{
    struct tclient *tc = tc_new();
    struct tstream *ts = tc_call(tc, "/apache.rocketmq.v2.MessagingService/NoSuchRpc", NULL, "ab", 2, 1);
    tc_wait_stream(tc, ts, 5);
    ck_assert_int_eq(ts->http_status, 200);
    ck_assert_int_eq(ts->grpc_status, PX_GRPC_UNIMPLEMENTED);
    ck_assert_str_eq(ts->grpc_msg, "unknown method /apache.rocketmq.v2.MessagingService/NoSuchRpc");
    ck_assert_uint_eq(ts->rx.len, 0);

    /* Compressed flag without negotiated compression. */
    ts = tc_call(tc, "/test.Echo/Echo", NULL, NULL, 0, 1);
    frame_msg(&ts->tx, "zz", 2, 1);
    tc_wait_stream(tc, ts, 5);
    ck_assert_int_eq(ts->grpc_status, PX_GRPC_INTERNAL);
    ck_assert_msg(strstr(ts->grpc_msg, "compress") != NULL, "%s", ts->grpc_msg);

    /* Unary without a request message. */
    ts = tc_call(tc, "/test.Echo/Echo", NULL, NULL, 0, 1);
    tc_wait_stream(tc, ts, 5);
    ck_assert_int_eq(ts->grpc_status, PX_GRPC_INTERNAL);

    /* Two request messages on a unary method. */
    ts = tc_call(tc, "/test.Hang/Hang", NULL, "a", 1, 0);
    tc_send(tc, ts, "b", 1, 1);
    tc_wait_stream(tc, ts, 5);
    ck_assert_int_eq(ts->grpc_status, PX_GRPC_INTERNAL);
    struct hstate h = srv_h();
    ck_assert_int_eq(h.cancels, 1);
    ck_assert_int_eq(h.last_reason, PX_GRPC_END_PROTOCOL);

    /* Same connection still serves. */
    ts = tc_call(tc, "/test.Echo/Echo", NULL, "hello", 5, 1);
    tc_wait_stream(tc, ts, 5);
    ck_assert_int_eq(ts->grpc_status, 0);
    ck_assert_uint_eq(ts->rx.len, 10);
    ck_assert(memcmp(ts->rx.data + 5, "hello", 5) == 0);
    tc_free(tc);
    WAIT_SERVER(NULL, srv_stats().calls_live == 0, 5);
}
END_TEST

/* Writes raw bytes on a fresh connection and expects the server to close it. */
static void expect_closed_after(const void *bytes, size_t len)
{
    int fd = tcp_connect();
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(send(fd, bytes, len, MSG_NOSIGNAL), (ssize_t)len);
    double end = now_s() + 5;
    int closed = 0;
    while (!closed && now_s() < end) {
        struct pollfd p = { fd, POLLIN, 0 };
        if (poll(&p, 1, 50) <= 0)
            continue;
        uint8_t rb[4096];
        ssize_t r = read(fd, rb, sizeof(rb));
        if (r == 0 || (r < 0 && errno == ECONNRESET))
            closed = 1;
    }
    close(fd);
    ck_assert_msg(closed, "server kept the bad connection open");
}

static void unary_echo_ok(void)
{
    struct tclient *tc = tc_new();
    struct tstream *ts = tc_call(tc, "/test.Echo/Echo", NULL, "ping", 4, 1);
    tc_wait_stream(tc, ts, 5);
    ck_assert_int_eq(ts->grpc_status, 0);
    ck_assert_uint_eq(ts->rx.len, 9);
    tc_free(tc);
}

START_TEST(test_garbage_preface)
{
    struct tclient *other = tc_new();
    struct tstream *ts = tc_call(other, "/test.Hang/Hang", NULL, "x", 1, 1);
    WAIT_SERVER(other, srv_h().hang_msgs == 1, 5);

    static const char http1[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    expect_closed_after(http1, sizeof(http1) - 1);
    /* Valid preface, then a DATA frame longer than SETTINGS_MAX_FRAME_SIZE. */
    static const uint8_t big_frame[] =
        "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
        "\x00\x00\x00\x04\x00\x00\x00\x00\x00"
        "\x10\x00\x00\x00\x00\x00\x00\x00\x01"
        "xxxxxxxx";
    expect_closed_after(big_frame, sizeof(big_frame) - 1);
    /* Valid preface then a truncated HEADERS frame and a vanishing client. */
    int fd = tcp_connect();
    static const uint8_t trunc[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
                                   "\x00\x00\x00\x04\x00\x00\x00\x00\x00"
                                   "\x00\x00\x40\x01\x04\x00\x00\x00\x01\x82\x86";
    ck_assert_int_eq(send(fd, trunc, sizeof(trunc) - 1, MSG_NOSIGNAL), (ssize_t)(sizeof(trunc) - 1));
    close(fd);

    struct px_grpc_stats st;
    double end = now_s() + 5;
    do {
        st = srv_stats();
        if (st.conns_open == 1)
            break;
        usleep(10000);
    } while (now_s() < end);
    ck_assert_msg(st.conns_open == 1, "open connections: %u (accepted %llu, failed %llu), other eof %d",
                  st.conns_open, (unsigned long long)st.conns_accepted,
                  (unsigned long long)st.conns_failed, other->eof);
    ck_assert_uint_ge(st.conns_failed, 2);
    unary_echo_ok();
    /* The client that was there all along is untouched. */
    ck_assert(!ts->closed);
    ck_assert(!other->eof);
    ck_assert_int_eq(srv_h().cancels, 0);
    tc_free(other);
    WAIT_SERVER(NULL, srv_stats().calls_live == 0, 5);
    ck_assert_int_eq(srv_h().last_reason, PX_GRPC_END_CONN_LOST);
}
END_TEST

START_TEST(test_oversized_message)
{
    struct tclient *tc = tc_new();
    size_t big = MAX_RECV + 1;
    uint8_t *payload = calloc(1, big);
    ck_assert_ptr_nonnull(payload);
    struct tstream *ts = tc_call(tc, "/test.Echo/Echo", NULL, payload, big, 1);
    tc_wait_stream(tc, ts, 10);
    ck_assert_int_eq(ts->grpc_status, PX_GRPC_RESOURCE_EXHAUSTED);
    ck_assert_msg(strstr(ts->grpc_msg, "larger than max") != NULL, "%s", ts->grpc_msg);
    ck_assert_int_eq(srv_h().echo_calls, 0);

    /* Exactly the limit passes, split over many DATA frames, echoed back. */
    for (size_t i = 0; i < MAX_RECV; i++)
        payload[i] = (uint8_t)(i * 31 + 7);
    ts = tc_call(tc, "/test.Echo/Echo", NULL, payload, MAX_RECV, 1);
    tc_wait_stream(tc, ts, 10);
    ck_assert_int_eq(ts->grpc_status, 0);
    ck_assert_uint_eq(ts->rx.len, MAX_RECV + 5);
    ck_assert(memcmp(ts->rx.data + 5, payload, MAX_RECV) == 0);
    free(payload);
    tc_free(tc);
    WAIT_SERVER(NULL, srv_stats().calls_live == 0, 5);
}
END_TEST

START_TEST(test_client_reset_cancels)
{
    struct tclient *tc = tc_new();
    struct tstream *ts = tc_call(tc, "/test.Hang/Hang", NULL, "x", 1, 1);
    WAIT_SERVER(tc, srv_h().hang_msgs == 1, 5);
    ck_assert_uint_eq(srv_stats().calls_live, 1);
    ck_assert_int_eq(nghttp2_submit_rst_stream(tc->s, NGHTTP2_FLAG_NONE, ts->id, NGHTTP2_CANCEL), 0);
    WAIT_SERVER(tc, srv_h().cancels == 1, 5);
    ck_assert_int_eq(srv_h().last_reason, PX_GRPC_END_RESET);
    ck_assert_uint_eq(srv_stats().calls_live, 0);

    /* A streaming call reset midway stops its producer. */
    Apache__Rocketmq__V2__ReceiveMessageRequest req = APACHE__ROCKETMQ__V2__RECEIVE_MESSAGE_REQUEST__INIT;
    req.batch_size = 100000;
    uint8_t pb[64];
    size_t plen = apache__rocketmq__v2__receive_message_request__pack(&req, pb);
    ts = tc_call(tc, SVC "ReceiveMessage", NULL, pb, plen, 1);
    double end = now_s() + 5;
    while (count_msgs(ts) < 3 && now_s() < end)
        tc_pump(tc, 10);
    ck_assert_int_ge(count_msgs(ts), 3);
    nghttp2_submit_rst_stream(tc->s, NGHTTP2_FLAG_NONE, ts->id, NGHTTP2_CANCEL);
    WAIT_SERVER(tc, srv_h().recv_cancels == 1, 5);
    ck_assert_uint_eq(srv_stats().calls_live, 0);
    unary_echo_ok();
    tc_free(tc);
}
END_TEST

START_TEST(test_client_vanishes_mid_stream)
{
    struct tclient *tc = tc_new();
    Apache__Rocketmq__V2__ReceiveMessageRequest req = APACHE__ROCKETMQ__V2__RECEIVE_MESSAGE_REQUEST__INIT;
    req.batch_size = 100000;
    uint8_t pb[64];
    size_t plen = apache__rocketmq__v2__receive_message_request__pack(&req, pb);
    struct tstream *rs = tc_call(tc, SVC "ReceiveMessage", NULL, pb, plen, 1);
    tc_call(tc, "/test.Hang/Hang", NULL, "x", 1, 1);
    struct tstream *bs = tc_call(tc, SVC "Telemetry", NULL, NULL, 0, 0);
    /* Half a message on the bidi stream so the server holds a partial buffer. */
    plen = pack_tele(pb, "h");
    ck_assert_int_eq(buf_append_u8(&bs->tx, 0), 0);
    ck_assert_int_eq(buf_append_u32be(&bs->tx, 1000), 0);
    ck_assert_int_eq(buf_append(&bs->tx, pb, plen), 0);
    tc_send(tc, bs, NULL, 0, 0);
    double end = now_s() + 5;
    while (count_msgs(rs) < 2 && now_s() < end)
        tc_pump(tc, 10);
    ck_assert_int_ge(count_msgs(rs), 2);
    WAIT_SERVER(tc, srv_h().hang_msgs == 1, 5);
    ck_assert_uint_eq(srv_stats().calls_live, 3);
    close(tc->fd);
    tc->fd = -1;
    WAIT_SERVER(NULL, srv_stats().conns_open == 0, 5);
    struct hstate h = srv_h();
    ck_assert_int_eq(h.recv_cancels, 1);
    ck_assert_int_eq(h.cancels, 2); /* Hang and Telemetry */
    ck_assert_int_eq(h.last_reason, PX_GRPC_END_CONN_LOST);
    ck_assert_uint_eq(srv_stats().calls_live, 0);
    tc_free(tc);
    unary_echo_ok();
}
END_TEST

START_TEST(test_deadline)
{
    struct tclient *tc = tc_new();
    double t0 = now_s();
    struct tstream *ts = tc_call(tc, "/test.Hang/Hang", "150m", "x", 1, 1);
    tc_wait_stream(tc, ts, 5);
    ck_assert_double_ge(now_s() - t0, 0.14);
    ck_assert_int_eq(ts->grpc_status, PX_GRPC_DEADLINE_EXCEEDED);
    struct hstate h = srv_h();
    ck_assert_int_eq(h.cancels, 1);
    ck_assert_int_eq(h.last_reason, PX_GRPC_END_DEADLINE);
    ck_assert_uint_eq(srv_stats().calls_live, 0);

    /* Malformed timeout is refused. */
    ts = tc_call(tc, "/test.Hang/Hang", "1000000000S", "x", 1, 1);
    tc_wait_stream(tc, ts, 5);
    ck_assert_int_eq(ts->grpc_status, PX_GRPC_INTERNAL);
    /* A generous deadline does not disturb a normal call. */
    ts = tc_call(tc, "/test.Echo/EchoLater", "5S", "abc", 3, 1);
    tc_wait_stream(tc, ts, 5);
    ck_assert_int_eq(ts->grpc_status, 0);
    ck_assert_str_eq(ts->grpc_msg, "later");
    tc_free(tc);
    WAIT_SERVER(NULL, srv_stats().calls_live == 0, 5);
}
END_TEST

#define NSTREAMS 600

START_TEST(test_many_concurrent_streams)
{
    struct tclient *tc = tc_new();
    struct tstream *ts[NSTREAMS];
    char payload[NSTREAMS][48];
    for (int i = 0; i < NSTREAMS; i++) {
        int n = snprintf(payload[i], sizeof(payload[i]), "request-%d-%.*s", i, i % 20,
                         "abcdefghijklmnopqrstuvwxyz");
        ts[i] = tc_call(tc, (i % 2) ? "/test.Echo/EchoLater" : "/test.Echo/Echo", NULL,
                        payload[i], (size_t)n, 1);
    }
    double end = now_s() + 20;
    int done;
    do {
        tc_pump(tc, 10);
        done = 0;
        for (int i = 0; i < NSTREAMS; i++)
            done += ts[i]->closed;
    } while (done < NSTREAMS && !tc->eof && now_s() < end);
    ck_assert_int_eq(done, NSTREAMS);
    for (int i = 0; i < NSTREAMS; i++) {
        size_t n = strlen(payload[i]);
        ck_assert_int_eq(ts[i]->grpc_status, 0);
        ck_assert_uint_eq(ts[i]->rx.len, n + 5);
        ck_assert(memcmp(ts[i]->rx.data + 5, payload[i], n) == 0);
    }
    tc_free(tc);
    WAIT_SERVER(NULL, srv_stats().calls_live == 0, 5);
}
END_TEST

static void shutdown_done_cb(void *arg) { S.h.shutdown_done++; }
static void shutdown_fn(void *arg) { px_grpc_server_shutdown(S.srv, 5.0, shutdown_done_cb, NULL); }

START_TEST(test_graceful_shutdown)
{
    struct tclient *tc = tc_new();
    Google__Protobuf__Duration iv = GOOGLE__PROTOBUF__DURATION__INIT;
    iv.nanos = 50 * 1000 * 1000;
    Apache__Rocketmq__V2__ReceiveMessageRequest req = APACHE__ROCKETMQ__V2__RECEIVE_MESSAGE_REQUEST__INIT;
    req.batch_size = 4;
    req.long_polling_timeout = &iv;
    uint8_t pb[64];
    size_t plen = apache__rocketmq__v2__receive_message_request__pack(&req, pb);
    struct tstream *ts = tc_call(tc, SVC "ReceiveMessage", NULL, pb, plen, 1);
    double end = now_s() + 5;
    while (count_msgs(ts) < 1 && now_s() < end)
        tc_pump(tc, 10);
    srv_exec(shutdown_fn, NULL);
    tc_wait_stream(tc, ts, 5);
    ck_assert_int_eq(ts->grpc_status, 0);
    ck_assert_int_eq(count_msgs(ts), 5);
    end = now_s() + 5;
    while (!tc->eof && now_s() < end)
        tc_pump(tc, 10);
    ck_assert(tc->got_goaway);
    ck_assert(tc->eof);
    WAIT_SERVER(NULL, srv_h().shutdown_done == 1, 5);
    ck_assert_int_eq(srv_h().recv_cancels, 0);
    ck_assert_int_lt(tcp_connect(), 0);
    tc_free(tc);
}
END_TEST

START_TEST(test_silent_and_idle_connections)
{
    /* Connects and never sends the preface: dropped after handshake_timeout. */
    int fd = tcp_connect();
    ck_assert_int_ge(fd, 0);
    double t0 = now_s(), end = t0 + 5;
    int closed = 0;
    while (!closed && now_s() < end) {
        struct pollfd p = { fd, POLLIN, 0 };
        uint8_t rb[256];
        if (poll(&p, 1, 50) > 0) {
            ssize_t r = read(fd, rb, sizeof(rb));
            closed = r == 0 || (r < 0 && errno == ECONNRESET);
        }
    }
    close(fd);
    ck_assert(closed);
    ck_assert_double_ge(now_s() - t0, 0.4);

    /* An HTTP/2 client without streams gets GOAWAY after idle_timeout. */
    struct tclient *tc = tc_new();
    struct tstream *ts = tc_call(tc, "/test.Echo/Echo", NULL, "x", 1, 1);
    tc_wait_stream(tc, ts, 5);
    t0 = now_s();
    end = t0 + 5;
    while (!tc->eof && now_s() < end)
        tc_pump(tc, 20);
    ck_assert(tc->got_goaway);
    ck_assert(tc->eof);
    ck_assert_double_ge(now_s() - t0, 1.0);
    tc_free(tc);
    struct px_grpc_stats st = srv_stats();
    ck_assert_uint_eq(st.conns_open, 0);
    ck_assert_uint_eq(st.conns_failed, 1);
}
END_TEST

/* Writes whatever the client session has queued, never reads. */
static void tc_write_only(struct tclient *tc)
{
    const uint8_t *d;
    ssize_t n;
    while ((n = nghttp2_session_mem_send(tc->s, &d)) > 0)
        ck_assert_int_eq(buf_append(&tc->out, d, (size_t)n), 0);
    while (tc->out_off < tc->out.len) {
        ssize_t w = send(tc->fd, tc->out.data + tc->out_off, tc->out.len - tc->out_off, MSG_NOSIGNAL);
        if (w <= 0)
            break;
        tc->out_off += (size_t)w;
    }
}

START_TEST(test_peer_not_reading)
{
    struct tclient *tc = tc_new();
    ck_assert_int_eq(nghttp2_session_set_local_window_size(tc->s, NGHTTP2_FLAG_NONE, 0, 1 << 30), 0);
    /* One normal call first, so the client has the server's SETTINGS and windows. */
    struct tstream *first = tc_call(tc, "/test.Echo/Echo", NULL, "x", 1, 1);
    tc_wait_stream(tc, first, 5);
    size_t len = 200 * 1024;
    uint8_t *payload = calloc(1, len);
    ck_assert_ptr_nonnull(payload);
    /* 12 MiB up (within the server's 16 MiB connection window), 12 MiB of
     * responses back that pile up in socket buffers: the server must give up
     * on this connection after write_stall_timeout instead of holding it. */
    for (int i = 0; i < 60; i++)
        tc_call(tc, "/test.Echo/Echo", NULL, payload, len, 1);
    free(payload);
    double end = now_s() + 15;
    struct px_grpc_stats st;
    do {
        tc_write_only(tc);
        usleep(20000);
        st = srv_stats();
    } while (st.conns_failed == 0 && now_s() < end);
    ck_assert_uint_eq(st.conns_failed, 1);
    ck_assert_uint_eq(st.conns_open, 0);
    ck_assert_uint_eq(st.calls_live, 0);
    ck_assert_int_gt(srv_h().echo_calls, 0);
    tc_free(tc);
    unary_echo_ok();
}
END_TEST

static Suite *grpc_suite(void)
{
    Suite *s = suite_create("px_grpc");
    TCase *tc = tcase_create("server");
    tcase_add_checked_fixture(tc, server_start, server_stop);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_unary_protobuf_roundtrip);
    tcase_add_test(tc, test_server_streaming);
    tcase_add_test(tc, test_bidi_streaming);
    tcase_add_test(tc, test_unknown_method_and_bad_requests);
    tcase_add_test(tc, test_garbage_preface);
    tcase_add_test(tc, test_oversized_message);
    tcase_add_test(tc, test_client_reset_cancels);
    tcase_add_test(tc, test_client_vanishes_mid_stream);
    tcase_add_test(tc, test_deadline);
    tcase_add_test(tc, test_many_concurrent_streams);
    tcase_add_test(tc, test_graceful_shutdown);
    tcase_add_test(tc, test_silent_and_idle_connections);
    tcase_add_test(tc, test_peer_not_reading);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(grpc_suite());
    /* No fork: leaks and sanitizer reports surface in this process. */
    srunner_set_fork_status(sr, CK_NOFORK);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
