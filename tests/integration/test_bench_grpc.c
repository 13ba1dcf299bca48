/*
 * Smoke test of rmqbench's gRPC transport: a real nameserver, broker and
 * proxy on loopback ports; messages sent through the proxy with
 * `rmqbench producer --transport grpc` and received back (ReceiveMessage +
 * AckMessage) with `rmqbench consumer --transport grpc`. Only counts are
 * judged: every send is acknowledged or failed, every acknowledged message
 * comes back exactly once, and the group has no lag left. No speed is
 * asserted. Also the broker request the proxy reads a consumer group's
 * config with (GET_SUBSCRIPTIONGROUP_CONFIG, 352), and the grouping of an
 * AckMessage's entries into one BATCH_ACK_MESSAGE (a small blocking gRPC
 * client sends ReceiveMessage / AckMessage; the broker requests are read
 * from the counters the proxy logs when it stops).
 */
#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <nghttp2/nghttp2.h>
#include <poll.h>
#include <stdarg.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <ev.h>
#include <jansson.h>

#include "apache/rocketmq/v2/service.pb-c.h"
#include "buf.h"
#include "harness.h"
#include "remoting.h"
#include "rmt_codes.h"

static char g_dir[64], g_ns[64], g_px[64], g_broker[64], g_out[128];
static pid_t g_ns_pid, g_broker_pid, g_px_pid;

#define MAX_ARGS 40

/* Runs a tool (env names the binary) to completion; *out gets its output. */
static int run(const char *env, char **out, ...)
{
    static char buf[1 << 16];
    char *argv[MAX_ARGS];
    int n = 0;
    argv[n++] = (char *)th_bin(env);
    va_list ap;
    va_start(ap, out);
    const char *a;
    while ((a = va_arg(ap, const char *)) && n < MAX_ARGS - 1)
        argv[n++] = (char *)a;
    va_end(ap);
    argv[n] = NULL;
    unlink(g_out);
    pid_t pid = th_spawn(argv, g_out);
    int status = 0;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    buf[0] = 0;
    FILE *f = fopen(g_out, "r");
    if (f) {
        size_t r = fread(buf, 1, sizeof buf - 1, f);
        buf[r] = 0;
        fclose(f);
    }
    *out = buf;
    ck_assert_msg(WIFEXITED(status), "%s did not exit normally: %s", env, buf);
    return WEXITSTATUS(status);
}

/* The JSON document on stdout (stderr lines may come first). */
static json_t *json_of(const char *out)
{
    const char *p = out;
    while (*p && *p != '{')
        p = strchr(p, '\n') ? strchr(p, '\n') + 1 : p + strlen(p);
    json_error_t e;
    json_t *j = json_loads(p, JSON_DISABLE_EOF_CHECK, &e);
    ck_assert_msg(j != NULL, "not JSON (%s): %s", e.text, out);
    return j;
}

static long long jint(const json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    ck_assert_msg(json_is_integer(v), "field %s missing", k);
    return json_integer_value(v);
}

static void start_cluster(void)
{
    char *d = th_tmpdir();
    snprintf(g_dir, sizeof g_dir, "%s", d);
    free(d);
    snprintf(g_out, sizeof g_out, "%s/out.txt", g_dir);
    int nsport = th_free_port(), bport = th_free_port(), pxport = th_free_port();
    snprintf(g_ns, sizeof g_ns, "127.0.0.1:%d", nsport);
    snprintf(g_px, sizeof g_px, "127.0.0.1:%d", pxport);
    snprintf(g_broker, sizeof g_broker, "127.0.0.1:%d", bport);
    char log[128], p1[64], p2[64], p3[96], p4[600], p5[64];
    snprintf(log, sizeof log, "%s/ns.log", g_dir);
    snprintf(p1, sizeof p1, "listenPort=%d", nsport);
    char *nsargv[] = { (char *)th_bin("NAMESRV_BIN"), "--set", p1, "--set", "bindAddress=127.0.0.1", NULL };
    g_ns_pid = th_spawn(nsargv, log);
    ck_assert_msg(th_wait_port(nsport, 5000), "nameserver did not start");
    snprintf(log, sizeof log, "%s/broker.log", g_dir);
    snprintf(p2, sizeof p2, "listenPort=%d", bport);
    snprintf(p3, sizeof p3, "namesrvAddr=%s", g_ns);
    snprintf(p4, sizeof p4, "storePathRootDir=%s/store", g_dir);
    char *bargv[] = { (char *)th_bin("BROKER_BIN"), "--set", p2, "--set", p3, "--set", p4,
                      "--set", "brokerIP1=127.0.0.1", "--set", "bindAddress=127.0.0.1",
                      "--set", "brokerClusterName=GrpcBenchCluster", "--set", "brokerName=broker-g", NULL };
    g_broker_pid = th_spawn(bargv, log);
    ck_assert_msg(th_wait_port(bport, 10000), "broker did not start");
    snprintf(log, sizeof log, "%s/proxy.log", g_dir);
    snprintf(p5, sizeof p5, "grpcServerPort=%d", pxport);
    char *pargv[] = { (char *)th_bin("PROXY_BIN"), "--set", p5, "--set", "bindAddress=127.0.0.1",
                      "--set", p3, NULL };
    g_px_pid = th_spawn(pargv, log);
    ck_assert_msg(th_wait_port(pxport, 10000), "proxy did not start");
}

static void stop_cluster(void)
{
    if (g_px_pid > 0)
        th_stop(g_px_pid, 5000);
    if (g_broker_pid > 0)
        th_stop(g_broker_pid, 5000);
    if (g_ns_pid > 0)
        th_stop(g_ns_pid, 3000);
    g_px_pid = g_broker_pid = g_ns_pid = 0;
    th_rmtree(g_dir);
}

/* Creates the topic with `queues` queues and waits until its route is served. */
static void make_topic_q(const char *topic, const char *queues)
{
    char *out;
    long long t0 = th_now_ms();
    while (run("RMQADMIN_BIN", &out, "updateTopic", "-n", g_ns, "-c", "GrpcBenchCluster", "-t", topic, "-r",
               queues, "-w", queues, NULL) != 0) {
        ck_assert_msg(th_now_ms() - t0 < 10000, "updateTopic kept failing: %s", out);
        usleep(200 * 1000);
    }
    t0 = th_now_ms();
    while (run("RMQADMIN_BIN", &out, "topicRoute", "-n", g_ns, "-t", topic, NULL) != 0 ||
           !strstr(out, "broker-g")) {
        ck_assert_msg(th_now_ms() - t0 < 10000, "no route for %s: %s", topic, out);
        usleep(200 * 1000);
    }
}

static void make_topic(const char *topic)
{
    make_topic_q(topic, "4");
}

START_TEST(grpc_send_receive_counts)
{
    make_topic("GrpcBenchTopic");
    char *out;
    int rc = run("RMQBENCH_BIN", &out, "producer", "--transport", "grpc", "--endpoint", g_px, "-t",
                 "GrpcBenchTopic", "-s", "1024", "-w", "64", "--connections", "2", "--count", "4000", "--json",
                 NULL);
    ck_assert_msg(rc == 0, "producer failed: %s", out);
    json_t *j = json_of(out);
    long long sent = jint(j, "sent"), ok = jint(j, "acknowledged"), failed = jint(j, "failed");
    ck_assert_str_eq(json_string_value(json_object_get(j, "transport")), "grpc");
    ck_assert_int_eq(sent, 4000);
    ck_assert_int_eq(sent, ok + failed);
    ck_assert_int_gt(ok, 0);
    ck_assert(json_object_get(json_object_get(j, "latencyMs"), "p99") != NULL);
    json_decref(j);
    /* Blocking sends count the same way. */
    rc = run("RMQBENCH_BIN", &out, "producer", "--transport", "grpc", "--endpoint", g_px, "-t", "GrpcBenchTopic",
             "--mode", "sync", "-w", "2", "--count", "200", "--json", NULL);
    ck_assert_msg(rc == 0, "sync producer failed: %s", out);
    j = json_of(out);
    ck_assert_int_eq(jint(j, "sent"), 200);
    ck_assert_int_eq(jint(j, "acknowledged") + jint(j, "failed"), 200);
    ok += jint(j, "acknowledged");
    json_decref(j);

    char count[32];
    snprintf(count, sizeof count, "%lld", ok);
    rc = run("RMQBENCH_BIN", &out, "consumer", "--transport", "grpc", "--endpoint", g_px, "-t", "GrpcBenchTopic",
             "-g", "GrpcBenchGroup", "-w", "8", "--count", count, "--duration", "30", "--json", NULL);
    ck_assert_msg(rc == 0, "consumer failed: %s", out);
    j = json_of(out);
    ck_assert_int_eq(jint(j, "received"), ok);
    json_decref(j);

    /* Everything received was acked: the group has no lag, and a second
     * consumer finds nothing within its time. */
    long long t0 = th_now_ms();
    for (;;) {
        rc = run("RMQADMIN_BIN", &out, "consumerProgress", "-n", g_ns, "-g", "GrpcBenchGroup", "-t",
                 "GrpcBenchTopic", "--json", NULL);
        if (rc == 0) {
            j = json_of(out);
            long long lag = jint(j, "diffTotal");
            json_decref(j);
            if (lag == 0)
                break;
        }
        ck_assert_msg(th_now_ms() - t0 < 10000, "group still lags after the consumer acked everything: %s", out);
        usleep(200 * 1000);
    }
    rc = run("RMQBENCH_BIN", &out, "consumer", "--transport", "grpc", "--endpoint", g_px, "-t", "GrpcBenchTopic",
             "-g", "GrpcBenchGroup", "--duration", "2", "--json", NULL);
    ck_assert_msg(rc == 0, "second consumer failed: %s", out);
    j = json_of(out);
    ck_assert_int_eq(jint(j, "received"), 0);
    json_decref(j);
}
END_TEST

START_TEST(grpc_errors_are_reported)
{
    char *out;
    /* Unknown topic: QueryRoute fails at creation, with the proxy's reason. */
    int rc = run("RMQBENCH_BIN", &out, "producer", "--transport", "grpc", "--endpoint", g_px, "-t",
                 "NoSuchGrpcTopic", "--count", "5", NULL);
    ck_assert_int_ne(rc, 0);
    ck_assert_msg(strstr(out, "QueryRoute") && strstr(out, "NoSuchGrpcTopic"), "unexpected output: %s", out);
    /* Nothing listening. */
    char ep[64];
    snprintf(ep, sizeof ep, "127.0.0.1:%d", th_free_port());
    rc = run("RMQBENCH_BIN", &out, "producer", "--transport", "grpc", "--endpoint", ep, "--count", "5", NULL);
    ck_assert_int_ne(rc, 0);
    ck_assert_msg(strstr(out, "cannot connect"), "unexpected output: %s", out);
    rc = run("RMQBENCH_BIN", &out, "producer", "--transport", "grpc", "--endpoint", "no-port", "--count", "5",
             NULL);
    ck_assert_int_ne(rc, 0);
    ck_assert_msg(strstr(out, "host:port"), "unexpected output: %s", out);
    rc = run("RMQBENCH_BIN", &out, "producer", "--transport", "carrier-pigeon", NULL);
    ck_assert_int_eq(rc, 2);
}
END_TEST

/* GET_SUBSCRIPTIONGROUP_CONFIG for `group` (NULL: no header); returns the
 * code, *body the JSON body when there is one (caller frees). */
static int get_group(const char *group, json_t **body)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct rmt_client_opts co = { 0 };
    rmt_client *cl = rmt_client_new(loop, &co);
    ck_assert_ptr_nonnull(cl);
    rmt_cmd req;
    rmt_cmd_init(&req, RMT_REQ_GET_SUBSCRIPTIONGROUP_CONFIG);
    if (group)
        ck_assert_int_eq(rmt_cmd_set_ext(&req, "group", group), 0);
    rmt_cmd *resp = NULL;
    int rc = rmt_client_invoke_sync(cl, g_broker, &req, 5000, &resp);
    ck_assert_msg(rc == 0, "GET_SUBSCRIPTIONGROUP_CONFIG: %s", strerror(-rc));
    int code = resp->code;
    *body = NULL;
    if (resp->body_len) {
        json_error_t e;
        *body = json_loadb((const char *)resp->body, resp->body_len, 0, &e);
        ck_assert_msg(*body != NULL, "body is not JSON: %s", e.text);
    }
    rmt_cmd_free(resp);
    rmt_cmd_destroy(&req);
    rmt_client_free(cl);
    ev_loop_destroy(loop);
    return code;
}

START_TEST(broker_get_subscription_group)
{
    char *out;
    int rc = run("RMQADMIN_BIN", &out, "updateSubGroup", "-b", g_broker, "-g", "GrpcCfgGroup", "-q", "5", NULL);
    ck_assert_msg(rc == 0, "updateSubGroup failed: %s", out);
    json_t *j;
    ck_assert_int_eq(get_group("GrpcCfgGroup", &j), RMT_RESP_SUCCESS);
    ck_assert_ptr_nonnull(j);
    ck_assert_str_eq(json_string_value(json_object_get(j, "groupName")), "GrpcCfgGroup");
    ck_assert_int_eq(jint(j, "retryMaxTimes"), 5);
    ck_assert_int_eq(jint(j, "retryQueueNums"), 1);
    ck_assert(json_is_false(json_object_get(j, "consumeMessageOrderly")));
    ck_assert(json_is_true(json_object_get(j, "consumeEnable")));
    json_decref(j);
    ck_assert_int_eq(get_group("NoSuchGrpcGroup", &j), RMT_RESP_SUBSCRIPTION_GROUP_NOT_EXIST);
    json_decref(j);
    ck_assert_int_ne(get_group(NULL, &j), RMT_RESP_SUCCESS);
    json_decref(j);
    /* A consumer of that group through the proxy (whose settings come from
     * this request) still works; the group has nothing to receive. */
    make_topic("GrpcCfgTopic");
    rc = run("RMQBENCH_BIN", &out, "consumer", "--transport", "grpc", "--endpoint", g_px, "-t", "GrpcCfgTopic",
             "-g", "GrpcCfgGroup", "--duration", "1", "--json", NULL);
    ck_assert_msg(rc == 0, "consumer failed: %s", out);
    j = json_of(out);
    ck_assert_int_eq(jint(j, "received"), 0);
    json_decref(j);
}
END_TEST

/* One gRPC call to the proxy on its own HTTP/2 connection, blocking: the
 * request message goes out framed, the response messages come back framed
 * in rx (the caller frees it). Returns the grpc-status. */
struct gcall {
    const uint8_t *tx;
    size_t tx_len, tx_off;
    struct buf rx;
    int grpc_status;
    bool closed;
};

static int g_on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name, size_t nl,
                       const uint8_t *val, size_t vl, uint8_t flags, void *ud)
{
    (void)s, (void)f, (void)vl, (void)flags;
    struct gcall *c = ud;
    if (nl == 11 && memcmp(name, "grpc-status", 11) == 0)
        c->grpc_status = atoi((const char *)val);
    return 0;
}

static int g_on_data(nghttp2_session *s, uint8_t flags, int32_t sid, const uint8_t *d, size_t len, void *ud)
{
    (void)s, (void)flags, (void)sid;
    ck_assert_int_eq(buf_append(&((struct gcall *)ud)->rx, d, len), 0);
    return 0;
}

static int g_on_close(nghttp2_session *s, int32_t sid, uint32_t code, void *ud)
{
    (void)s, (void)sid, (void)code;
    ((struct gcall *)ud)->closed = true;
    return 0;
}

static ssize_t g_read(nghttp2_session *s, int32_t sid, uint8_t *out, size_t cap, uint32_t *flags,
                      nghttp2_data_source *src, void *ud)
{
    (void)s, (void)sid, (void)src;
    struct gcall *c = ud;
    size_t n = c->tx_len - c->tx_off < cap ? c->tx_len - c->tx_off : cap;
    memcpy(out, c->tx + c->tx_off, n);
    c->tx_off += n;
    if (c->tx_off == c->tx_len)
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

static int grpc_call(const char *method, const ProtobufCMessage *req, struct gcall *c)
{
    memset(c, 0, sizeof *c);
    c->grpc_status = -1;
    size_t plen = protobuf_c_message_get_packed_size(req);
    uint8_t *tx = malloc(plen + 5);
    ck_assert_ptr_nonnull(tx);
    tx[0] = 0;
    wr_u32be(tx + 1, (uint32_t)plen);
    protobuf_c_message_pack(req, tx + 5);
    c->tx = tx;
    c->tx_len = plen + 5;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_in sin = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    sin.sin_port = htons((uint16_t)atoi(strchr(g_px, ':') + 1));
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&sin, sizeof sin), 0);
    nghttp2_session_callbacks *cb;
    ck_assert_int_eq(nghttp2_session_callbacks_new(&cb), 0);
    nghttp2_session_callbacks_set_on_header_callback(cb, g_on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, g_on_data);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, g_on_close);
    nghttp2_session *s;
    ck_assert_int_eq(nghttp2_session_client_new(&s, cb, c), 0);
    nghttp2_session_callbacks_del(cb);
    ck_assert_int_eq(nghttp2_submit_settings(s, NGHTTP2_FLAG_NONE, NULL, 0), 0);
    char path[128];
    snprintf(path, sizeof path, "/apache.rocketmq.v2.MessagingService/%s", method);
    nghttp2_nv nv[7];
    size_t n = 0;
#define NV(a, b) nv[n++] = (nghttp2_nv){ (uint8_t *)(a), (uint8_t *)(b), strlen(a), strlen(b), 0 }
    NV(":method", "POST");
    NV(":scheme", "http");
    NV(":path", path);
    NV(":authority", g_px);
    NV("content-type", "application/grpc");
    NV("te", "trailers");
    NV("x-mq-client-id", "ack-batch-test@1");
#undef NV
    nghttp2_data_provider prd = { .read_callback = g_read };
    ck_assert_int_gt(nghttp2_submit_request(s, NULL, nv, n, &prd, NULL), 0);
    long long t0 = th_now_ms();
    while (!c->closed) {
        ck_assert_msg(th_now_ms() - t0 < 20000, "%s did not finish", method);
        const uint8_t *d;
        ssize_t w;
        while ((w = nghttp2_session_mem_send(s, &d)) > 0)
            ck_assert_int_eq(send(fd, d, (size_t)w, MSG_NOSIGNAL), w);
        ck_assert_int_ge(w, 0);
        struct pollfd p = { fd, POLLIN, 0 };
        if (poll(&p, 1, 100) <= 0)
            continue;
        uint8_t rb[16384];
        ssize_t r = read(fd, rb, sizeof rb);
        ck_assert_msg(r > 0, "%s: the proxy closed the connection", method);
        ck_assert_int_eq(nghttp2_session_mem_recv(s, rb, (size_t)r), r);
    }
    nghttp2_session_del(s);
    close(fd);
    free(tx);
    return c->grpc_status;
}

/* The i-th framed message of rx (0 when there is none). */
static int grpc_msg(const struct gcall *c, size_t *off, const uint8_t **m, size_t *len)
{
    if (*off + 5 > c->rx.len)
        return 0;
    *len = rd_u32be(c->rx.data + *off + 1);
    ck_assert_uint_le(*off + 5 + *len, c->rx.len);
    *m = c->rx.data + *off + 5;
    *off += 5 + *len;
    return 1;
}

#define ACK_MSGS 10

/* Receives until `want` handles are collected (one queue, so one or a few
 * pops); returns how many there are. */
static int receive_handles(const char *topic, const char *group, char handles[][256], int want)
{
    Apache__Rocketmq__V2__Resource g = APACHE__ROCKETMQ__V2__RESOURCE__INIT, t = g;
    g.name = (char *)group;
    t.name = (char *)topic;
    Apache__Rocketmq__V2__Broker br = APACHE__ROCKETMQ__V2__BROKER__INIT;
    br.name = (char *)"broker-g";
    Apache__Rocketmq__V2__MessageQueue mq = APACHE__ROCKETMQ__V2__MESSAGE_QUEUE__INIT;
    mq.topic = &t;
    mq.broker = &br;
    Google__Protobuf__Duration inv = GOOGLE__PROTOBUF__DURATION__INIT, poll_d = inv;
    inv.seconds = 60;
    poll_d.seconds = 2;
    Apache__Rocketmq__V2__FilterExpression fe = APACHE__ROCKETMQ__V2__FILTER_EXPRESSION__INIT;
    fe.type = APACHE__ROCKETMQ__V2__FILTER_TYPE__TAG;
    fe.expression = (char *)"*";
    Apache__Rocketmq__V2__ReceiveMessageRequest req = APACHE__ROCKETMQ__V2__RECEIVE_MESSAGE_REQUEST__INIT;
    req.group = &g;
    req.message_queue = &mq;
    req.filter_expression = &fe;
    req.batch_size = 32;
    req.invisible_duration = &inv;
    req.long_polling_timeout = &poll_d;
    int n = 0;
    long long t0 = th_now_ms();
    while (n < want && th_now_ms() - t0 < 15000) {
        struct gcall c;
        ck_assert_int_eq(grpc_call("ReceiveMessage", &req.base, &c), 0);
        size_t off = 0, len;
        const uint8_t *m;
        while (grpc_msg(&c, &off, &m, &len)) {
            Apache__Rocketmq__V2__ReceiveMessageResponse *r =
                apache__rocketmq__v2__receive_message_response__unpack(NULL, len, m);
            ck_assert_ptr_nonnull(r);
            if (r->content_case == APACHE__ROCKETMQ__V2__RECEIVE_MESSAGE_RESPONSE__CONTENT_MESSAGE) {
                ck_assert_int_lt(n, want);
                snprintf(handles[n++], 256, "%s", r->message->system_properties->receipt_handle);
            }
            apache__rocketmq__v2__receive_message_response__free_unpacked(r, NULL);
        }
        buf_free(&c.rx);
    }
    return n;
}

/* The proxy's counters of broker ack requests, from its log once stopped. */
static void proxy_ack_counters(long long *single, long long *batches, long long *carried)
{
    char path[128], line[1024];
    snprintf(path, sizeof path, "%s/proxy.log", g_dir);
    /* The counters are logged on the way out. The proxy is a child of the
     * fixture's process, not of this (forked) test, so it cannot be reaped
     * here: stop_cluster does that; this waits for the line. */
    kill(g_px_pid, SIGTERM);
    bool found = false;
    for (long long end = th_now_ms() + 10000; !found && th_now_ms() < end;) {
        FILE *f = fopen(path, "r");
        ck_assert_ptr_nonnull(f);
        while (fgets(line, sizeof line, f)) {
            const char *p = strstr(line, "broker ACK_MESSAGE ");
            if (p && sscanf(p, "broker ACK_MESSAGE %lld, BATCH_ACK_MESSAGE %lld carrying %lld", single, batches,
                            carried) == 3)
                found = true;
        }
        fclose(f);
        if (!found)
            usleep(20 * 1000);
    }
    ck_assert_msg(found, "the proxy logged no ack counters");
}

START_TEST(grpc_ack_is_batched)
{
    make_topic_q("GrpcAckTopic", "1");
    char *out;
    int rc = run("RMQBENCH_BIN", &out, "producer", "--transport", "grpc", "--endpoint", g_px, "-t", "GrpcAckTopic",
                 "-s", "64", "--count", "10", "--json", NULL);
    ck_assert_msg(rc == 0, "producer failed: %s", out);
    json_t *j = json_of(out);
    ck_assert_int_eq(jint(j, "acknowledged"), ACK_MSGS);
    json_decref(j);

    static char handles[ACK_MSGS + 2][256];
    ck_assert_int_eq(receive_handles("GrpcAckTopic", "GrpcAckGroup", handles, ACK_MSGS), ACK_MSGS);
    /* Two entries that cannot be acked: a malformed handle, and a valid one
     * naming a broker the route does not know. */
    snprintf(handles[ACK_MSGS], 256, "not a receipt handle");
    char *at = strstr(handles[0], " broker-g ");
    ck_assert_ptr_nonnull(at);
    snprintf(handles[ACK_MSGS + 1], 256, "%.*s broker-x %s", (int)(at - handles[0]), handles[0], at + 10);

    Apache__Rocketmq__V2__Resource g = APACHE__ROCKETMQ__V2__RESOURCE__INIT, t = g;
    g.name = (char *)"GrpcAckGroup";
    t.name = (char *)"GrpcAckTopic";
    Apache__Rocketmq__V2__AckMessageEntry ent[ACK_MSGS + 2], *entp[ACK_MSGS + 2];
    char ids[ACK_MSGS + 2][16];
    /* Bad entries first, in the middle and last: results stay in place. */
    int order[ACK_MSGS + 2] = { ACK_MSGS, 0, 1, 2, 3, 4, ACK_MSGS + 1, 5, 6, 7, 8, 9 };
    for (int i = 0; i < ACK_MSGS + 2; i++) {
        apache__rocketmq__v2__ack_message_entry__init(&ent[i]);
        snprintf(ids[i], sizeof ids[i], "id-%d", order[i]);
        ent[i].message_id = ids[i];
        ent[i].receipt_handle = handles[order[i]];
        entp[i] = &ent[i];
    }
    Apache__Rocketmq__V2__AckMessageRequest req = APACHE__ROCKETMQ__V2__ACK_MESSAGE_REQUEST__INIT;
    req.group = &g;
    req.topic = &t;
    req.n_entries = ACK_MSGS + 2;
    req.entries = entp;
    struct gcall c;
    ck_assert_int_eq(grpc_call("AckMessage", &req.base, &c), 0);
    size_t off = 0, len;
    const uint8_t *m;
    ck_assert(grpc_msg(&c, &off, &m, &len));
    Apache__Rocketmq__V2__AckMessageResponse *r = apache__rocketmq__v2__ack_message_response__unpack(NULL, len, m);
    ck_assert_ptr_nonnull(r);
    ck_assert_int_eq(r->status->code, APACHE__ROCKETMQ__V2__CODE__MULTIPLE_RESULTS);
    ck_assert_uint_eq(r->n_entries, ACK_MSGS + 2);
    for (int i = 0; i < ACK_MSGS + 2; i++) {
        ck_assert_str_eq(r->entries[i]->message_id, ids[i]);
        ck_assert_str_eq(r->entries[i]->receipt_handle, handles[order[i]]);
        int want = order[i] < ACK_MSGS ? APACHE__ROCKETMQ__V2__CODE__OK
                                       : APACHE__ROCKETMQ__V2__CODE__INVALID_RECEIPT_HANDLE;
        ck_assert_msg((int)r->entries[i]->status->code == want, "entry %d (%s): code %d (%s), want %d", i,
                      handles[order[i]], r->entries[i]->status->code, r->entries[i]->status->message, want);
    }
    apache__rocketmq__v2__ack_message_response__free_unpacked(r, NULL);
    buf_free(&c.rx);

    /* The acks took effect: the group has no lag and nothing comes back. */
    long long t0 = th_now_ms();
    for (;;) {
        rc = run("RMQADMIN_BIN", &out, "consumerProgress", "-n", g_ns, "-g", "GrpcAckGroup", "-t", "GrpcAckTopic",
                 "--json", NULL);
        if (rc == 0) {
            j = json_of(out);
            long long lag = jint(j, "diffTotal");
            json_decref(j);
            if (lag == 0)
                break;
        }
        ck_assert_msg(th_now_ms() - t0 < 10000, "group still lags after the batch ack: %s", out);
        usleep(200 * 1000);
    }
    /* Ten entries of one queue went as one BATCH_ACK_MESSAGE; the bad two
     * never reached the broker. */
    long long single, batches, carried;
    proxy_ack_counters(&single, &batches, &carried);
    ck_assert_int_eq(single, 0);
    ck_assert_int_eq(batches, 1);
    ck_assert_int_eq(carried, ACK_MSGS);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("bench-grpc");
    TCase *tc = tcase_create("proxy");
    tcase_set_timeout(tc, 120);
    tcase_add_unchecked_fixture(tc, start_cluster, stop_cluster);
    tcase_add_test(tc, grpc_send_receive_counts);
    tcase_add_test(tc, grpc_errors_are_reported);
    tcase_add_test(tc, broker_get_subscription_group);
    suite_add_tcase(s, tc);
    /* Its own cluster: the test stops the proxy to read its counters. */
    TCase *tack = tcase_create("ack");
    tcase_set_timeout(tack, 120);
    tcase_add_unchecked_fixture(tack, start_cluster, stop_cluster);
    tcase_add_test(tack, grpc_ack_is_batched);
    suite_add_tcase(s, tack);
    SRunner *r = srunner_create(s);
    srunner_run_all(r, CK_NORMAL);
    int failed = srunner_ntests_failed(r);
    srunner_free(r);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
