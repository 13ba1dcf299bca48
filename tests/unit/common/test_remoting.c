/* Unit tests of the remoting codec and of client/server connections on loopback. */
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"
#include "remoting.h"

static size_t frame_of(const rmt_cmd *c, uint8_t *out, size_t cap)
{
    struct buf b = BUF_INIT;
    ck_assert_int_eq(rmt_encode(c, &b), 0);
    ck_assert_uint_le(b.len, cap);
    memcpy(out, b.data, b.len);
    size_t n = b.len;
    buf_free(&b);
    return n;
}

START_TEST(binary_round_trip)
{
    rmt_cmd c, d;
    rmt_cmd_init(&c, RMT_REQ_GET_ROUTEINFO_BY_TOPIC);
    c.opaque = 42;
    c.flag = RMT_FLAG_ONEWAY;
    ck_assert_int_eq(rmt_cmd_set_ext(&c, "topic", "TopicTest"), 0);
    ck_assert_int_eq(rmt_cmd_set_ext_int(&c, "queueId", -3), 0);
    ck_assert_int_eq(rmt_cmd_set_remark(&c, "hello %d", 7), 0);
    rmt_cmd_set_body(&c, "BODY", 4);
    uint8_t frame[512];
    size_t n = frame_of(&c, frame, sizeof frame);
    size_t flen = 0;
    ck_assert_int_eq(rmt_frame_check(frame, n, 1 << 20, &flen), RMT_FRAME_OK);
    ck_assert_uint_eq(flen, n);
    ck_assert_uint_eq(frame[4], RMT_SERIALIZE_ROCKETMQ);
    rmt_cmd_init(&d, 0);
    char err[128];
    ck_assert_int_eq(rmt_decode(&d, frame, n, err, sizeof err), 0);
    ck_assert_int_eq(d.code, RMT_REQ_GET_ROUTEINFO_BY_TOPIC);
    ck_assert_int_eq(d.opaque, 42);
    ck_assert(rmt_cmd_is_oneway(&d));
    ck_assert_str_eq(rmt_cmd_ext(&d, "topic"), "TopicTest");
    int64_t q;
    ck_assert_int_eq(rmt_cmd_ext_int(&d, "queueId", &q), 0);
    ck_assert_int_eq(q, -3);
    ck_assert_int_eq(rmt_cmd_ext_int(&d, "missing", &q), -ENOENT);
    ck_assert_str_eq(rmt_cmd_remark(&d), "hello 7");
    ck_assert_uint_eq(d.body_len, 4);
    ck_assert_mem_eq(d.body, "BODY", 4);
    rmt_cmd_destroy(&c);
    rmt_cmd_destroy(&d);
}
END_TEST

START_TEST(binary_handmade_bytes)
{
    /* code 103, lang JAVA, version 413, opaque 7, flag 0, remark "", ext {a: bc}, body "Z" */
    static const uint8_t hdr[] = {
        0x00, 0x67, 0x00, 0x01, 0x9d, 0x00, 0x00, 0x00, 0x07, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00,                   /* remark length 0 */
        0x00, 0x00, 0x00, 0x09,                   /* ext length */
        0x00, 0x01, 'a', 0x00, 0x00, 0x00, 0x02, 'b', 'c',
    };
    uint8_t frame[64];
    uint32_t total = 4 + sizeof hdr + 1;
    wr_u32be(frame, total);
    wr_u32be(frame + 4, (1u << 24) | sizeof hdr);
    memcpy(frame + 8, hdr, sizeof hdr);
    frame[8 + sizeof hdr] = 'Z';
    size_t n = 8 + sizeof hdr + 1, flen;
    ck_assert_int_eq(rmt_frame_check(frame, n, 1024, &flen), RMT_FRAME_OK);
    rmt_cmd d;
    rmt_cmd_init(&d, 0);
    ck_assert_int_eq(rmt_decode(&d, frame, flen, NULL, 0), 0);
    ck_assert_int_eq(d.code, 103);
    ck_assert_int_eq(d.language, RMT_LANG_JAVA);
    ck_assert_int_eq(d.version, 413);
    ck_assert_int_eq(d.opaque, 7);
    ck_assert_ptr_null(rmt_cmd_remark(&d));
    ck_assert_str_eq(rmt_cmd_ext(&d, "a"), "bc");
    ck_assert_uint_eq(d.body_len, 1);
    /* Our encoder must produce the very same bytes. */
    rmt_cmd e;
    rmt_cmd_init(&e, 103);
    e.language = RMT_LANG_JAVA;
    e.version = 413;
    e.opaque = 7;
    rmt_cmd_set_ext(&e, "a", "bc");
    rmt_cmd_set_body(&e, "Z", 1);
    uint8_t again[64];
    ck_assert_uint_eq(frame_of(&e, again, sizeof again), n);
    ck_assert_mem_eq(again, frame, n);
    rmt_cmd_destroy(&d);
    rmt_cmd_destroy(&e);
}
END_TEST

START_TEST(json_handmade_and_round_trip)
{
    const char *js = "{\"code\":105,\"extFields\":{\"topic\":\"TopicTest\",\"n\":5},\"flag\":0,"
                     "\"language\":\"JAVA\",\"opaque\":3,\"serializeTypeCurrentRPC\":\"JSON\","
                     "\"version\":317}";
    uint8_t frame[512];
    size_t hl = strlen(js);
    wr_u32be(frame, (uint32_t)(4 + hl));
    wr_u32be(frame + 4, (uint32_t)hl);
    memcpy(frame + 8, js, hl);
    rmt_cmd d;
    rmt_cmd_init(&d, 0);
    char err[128] = "";
    ck_assert_int_eq(rmt_decode(&d, frame, 8 + hl, err, sizeof err), 0);
    ck_assert_int_eq(d.code, 105);
    ck_assert_int_eq(d.serialize, RMT_SERIALIZE_JSON);
    ck_assert_int_eq(d.opaque, 3);
    ck_assert_int_eq(d.version, 317);
    ck_assert_str_eq(rmt_cmd_ext(&d, "topic"), "TopicTest");
    ck_assert_str_eq(rmt_cmd_ext(&d, "n"), "5");
    ck_assert_uint_eq(d.body_len, 0);

    /* JSON encoding with escapes survives a round trip. */
    rmt_cmd c;
    rmt_cmd_init(&c, 17);
    c.serialize = RMT_SERIALIZE_JSON;
    rmt_cmd_set_ext(&c, "k\"ey", "v\\al\n\x01");
    rmt_cmd_set_remark(&c, "quote \" here");
    size_t n = frame_of(&c, frame, sizeof frame);
    ck_assert_uint_eq(frame[4], RMT_SERIALIZE_JSON);
    ck_assert_int_eq(rmt_decode(&d, frame, n, err, sizeof err), 0);
    ck_assert_str_eq(rmt_cmd_ext(&d, "k\"ey"), "v\\al\n\x01");
    ck_assert_str_eq(rmt_cmd_remark(&d), "quote \" here");
    rmt_cmd_destroy(&c);
    rmt_cmd_destroy(&d);
}
END_TEST

START_TEST(frame_check_bad_input)
{
    uint8_t f[16] = { 0 };
    size_t flen;
    ck_assert_int_eq(rmt_frame_check(f, 3, 1024, &flen), RMT_FRAME_NEED_MORE);
    /* zero length */
    ck_assert_int_eq(rmt_frame_check(f, 8, 1024, &flen), RMT_FRAME_BAD);
    /* oversized */
    wr_u32be(f, 5000);
    ck_assert_int_eq(rmt_frame_check(f, 8, 1024, &flen), RMT_FRAME_TOO_BIG);
    /* negative length */
    wr_u32be(f, 0x80000000u);
    ck_assert_int_eq(rmt_frame_check(f, 8, 1u << 30, &flen), RMT_FRAME_TOO_BIG);
    /* header longer than frame */
    wr_u32be(f, 10);
    wr_u32be(f + 4, (1u << 24) | 100);
    ck_assert_int_eq(rmt_frame_check(f, 8, 1024, &flen), RMT_FRAME_BAD);
    /* unknown serialization type */
    wr_u32be(f + 4, (7u << 24) | 4);
    ck_assert_int_eq(rmt_frame_check(f, 8, 1024, &flen), RMT_FRAME_BAD);
    /* truncated body */
    wr_u32be(f + 4, (1u << 24) | 4);
    ck_assert_int_eq(rmt_frame_check(f, 12, 1024, &flen), RMT_FRAME_NEED_MORE);
    /* garbage header contents are refused by the decoder */
    uint8_t g[14];
    memset(g, 0xff, sizeof g);
    wr_u32be(g, 10);
    wr_u32be(g + 4, (1u << 24) | 6);
    ck_assert_int_eq(rmt_frame_check(g, sizeof g, 1024, &flen), RMT_FRAME_OK);
    rmt_cmd d;
    rmt_cmd_init(&d, 0);
    char err[128];
    ck_assert_int_eq(rmt_decode(&d, g, flen, err, sizeof err), -EBADMSG);
    ck_assert(strlen(err) > 0);
    /* bad JSON */
    wr_u32be(g + 4, 6);
    memcpy(g + 8, "{nope}", 6);
    ck_assert_int_eq(rmt_decode(&d, g, flen, err, sizeof err), -EBADMSG);
    ck_assert_ptr_nonnull(strstr(err, "JSON"));
    /* binary header with ext length pointing past the end */
    static const uint8_t bad[] = { 0, 10, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 50 };
    uint8_t fb[64];
    wr_u32be(fb, 4 + sizeof bad);
    wr_u32be(fb + 4, (1u << 24) | sizeof bad);
    memcpy(fb + 8, bad, sizeof bad);
    ck_assert_int_eq(rmt_decode(&d, fb, 8 + sizeof bad, err, sizeof err), -EBADMSG);
    rmt_cmd_destroy(&d);
}
END_TEST

START_TEST(many_ext_fields_spill_to_heap)
{
    rmt_cmd c, d;
    rmt_cmd_init(&c, 10);
    char k[32], v[64];
    for (int i = 0; i < 100; i++) {
        snprintf(k, sizeof k, "key%d", i);
        snprintf(v, sizeof v, "value-%d-xxxxxxxxxxxxxxxxxxxxxxxx", i);
        ck_assert_int_eq(rmt_cmd_set_ext(&c, k, v), 0);
    }
    rmt_cmd_set_ext(&c, "key5", "replaced");
    ck_assert_uint_eq(rmt_cmd_ext_count(&c), 100);
    struct buf b = BUF_INIT;
    ck_assert_int_eq(rmt_encode(&c, &b), 0);
    rmt_cmd_init(&d, 0);
    ck_assert_int_eq(rmt_decode(&d, b.data, b.len, NULL, 0), 0);
    ck_assert_str_eq(rmt_cmd_ext(&d, "key99"), "value-99-xxxxxxxxxxxxxxxxxxxxxxxx");
    ck_assert_str_eq(rmt_cmd_ext(&d, "key5"), "replaced");
    rmt_cmd *dup = rmt_cmd_dup(&d);
    ck_assert_ptr_nonnull(dup);
    ck_assert_str_eq(rmt_cmd_ext(dup, "key42"), "value-42-xxxxxxxxxxxxxxxxxxxxxxxx");
    rmt_cmd_free(dup);
    buf_free(&b);
    rmt_cmd_destroy(&c);
    rmt_cmd_destroy(&d);
}
END_TEST

/* Network tests ------------------------------------------------------------ */

struct srv_state {
    struct ev_loop *loop;
    int requests;
    int oneways;
    int closes;
    rmt_conn *held;           /* a connection whose answer is delayed */
    rmt_cmd held_req;
    int released;
};

static void release_cb(void *ctx) { ((struct srv_state *)ctx)->released++; }

static void srv_request(rmt_conn *c, rmt_cmd *req, void *ud)
{
    struct srv_state *st = ud;
    st->requests++;
    if (rmt_cmd_is_oneway(req)) {
        st->oneways++;
        return;
    }
    switch (req->code) {
    case 1: { /* echo ext "v" back and the body */
        rmt_cmd resp;
        rmt_cmd_init(&resp, RMT_RESP_SUCCESS);
        const char *v = rmt_cmd_ext(req, "v");
        rmt_cmd_set_ext(&resp, "v", v ? v : "");
        rmt_cmd_set_body(&resp, req->body, req->body_len);
        rmt_conn_respond(c, req, &resp);
        rmt_cmd_destroy(&resp);
        break;
    }
    case 2: /* never answered */
        break;
    case 3: { /* zero-copy body */
        static const char part1[] = "zero-", part2[] = "copy";
        struct iovec iov[2] = { { (void *)part1, 5 }, { (void *)part2, 4 } };
        rmt_cmd resp;
        rmt_cmd_init(&resp, RMT_RESP_SUCCESS);
        resp.opaque = req->opaque;
        resp.serialize = req->serialize;
        resp.flag = RMT_FLAG_RESPONSE;
        rmt_conn_send_iov(c, &resp, iov, 2, release_cb, st);
        rmt_cmd_destroy(&resp);
        break;
    }
    default:
        rmt_conn_respond_error(c, req, RMT_RESP_REQUEST_CODE_NOT_SUPPORTED,
                               "request code %d not supported", req->code);
    }
}

static void srv_close(rmt_conn *c, void *ud) { ((struct srv_state *)ud)->closes++; }

static rmt_server *start_server(struct ev_loop *loop, struct srv_state *st, size_t max_frame)
{
    memset(st, 0, sizeof *st);
    st->loop = loop;
    struct rmt_server_opts so = { .host = "127.0.0.1", .port = 0, .max_frame = max_frame,
                                  .on_request = srv_request, .on_close = srv_close, .ud = st };
    int err = 0;
    rmt_server *s = rmt_server_new(loop, &so, &err);
    ck_assert_ptr_nonnull(s);
    ck_assert_int_gt(rmt_server_port(s), 0);
    return s;
}

struct result {
    int done;
    int status;
    int code;
    char v[64];
    char body[64];
};

static void result_cb(int status, rmt_cmd *resp, void *ud)
{
    struct result *r = ud;
    r->done++;
    r->status = status;
    if (resp) {
        r->code = resp->code;
        const char *v = rmt_cmd_ext(resp, "v");
        snprintf(r->v, sizeof r->v, "%s", v ? v : "");
        snprintf(r->body, sizeof r->body, "%.*s", (int)resp->body_len, (const char *)resp->body);
    }
}

static void run_until(struct ev_loop *loop, int *flag, int want)
{
    for (int i = 0; i < 2000 && *flag < want; i++)
        ev_run(loop, EVRUN_ONCE);
}

START_TEST(invoke_matches_opaque)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct srv_state st;
    rmt_server *s = start_server(loop, &st, 0);
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", rmt_server_port(s));
    struct rmt_client_opts co = { 0 };
    rmt_client *cl = rmt_client_new(loop, &co);
    enum { N = 200 };
    static struct result res[N];
    memset(res, 0, sizeof res);
    int done = 0;
    for (int i = 0; i < N; i++) {
        rmt_cmd req;
        rmt_cmd_init(&req, 1);
        if (i % 2)
            req.serialize = RMT_SERIALIZE_JSON;
        char v[16];
        snprintf(v, sizeof v, "%d", i);
        rmt_cmd_set_ext(&req, "v", v);
        rmt_cmd_set_body(&req, v, (uint32_t)strlen(v));
        ck_assert_int_eq(rmt_client_invoke(cl, addr, &req, 3000, result_cb, &res[i]), 0);
        rmt_cmd_destroy(&req);
    }
    for (int k = 0; k < 2000 && done < N; k++) {
        ev_run(loop, EVRUN_ONCE);
        done = 0;
        for (int i = 0; i < N; i++)
            done += res[i].done;
    }
    ck_assert_int_eq(done, N);
    for (int i = 0; i < N; i++) {
        char v[16];
        snprintf(v, sizeof v, "%d", i);
        ck_assert_int_eq(res[i].status, 0);
        ck_assert_int_eq(res[i].done, 1);
        ck_assert_str_eq(res[i].v, v);
        ck_assert_str_eq(res[i].body, v);
    }
    /* Unknown code gets REQUEST_CODE_NOT_SUPPORTED with the code in the remark. */
    rmt_cmd req, *resp = NULL;
    rmt_cmd_init(&req, 999);
    ck_assert_int_eq(rmt_client_invoke_sync(cl, addr, &req, 3000, &resp), 0);
    ck_assert_int_eq(resp->code, RMT_RESP_REQUEST_CODE_NOT_SUPPORTED);
    ck_assert_ptr_nonnull(strstr(rmt_cmd_remark(resp), "999"));
    rmt_cmd_free(resp);
    /* Zero-copy body arrives whole and its release runs once. */
    rmt_cmd_reset(&req, 3);
    ck_assert_int_eq(rmt_client_invoke_sync(cl, addr, &req, 3000, &resp), 0);
    ck_assert_uint_eq(resp->body_len, 9);
    ck_assert_mem_eq(resp->body, "zero-copy", 9);
    rmt_cmd_free(resp);
    ck_assert_int_eq(st.released, 1);
    /* Oneway requests reach the server and get no answer. */
    rmt_cmd_reset(&req, 1);
    ck_assert_int_eq(rmt_client_invoke_oneway(cl, addr, &req), 0);
    run_until(loop, &st.oneways, 1);
    ck_assert_int_eq(st.oneways, 1);
    rmt_cmd_destroy(&req);
    rmt_client_free(cl);
    run_until(loop, &st.closes, 1);
    ck_assert_int_eq(st.closes, 1);
    rmt_server_free(s);
    ev_loop_destroy(loop);
}
END_TEST

START_TEST(timeout_and_refused)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct srv_state st;
    rmt_server *s = start_server(loop, &st, 0);
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", rmt_server_port(s));
    struct rmt_client_opts co = { 0 };
    rmt_client *cl = rmt_client_new(loop, &co);
    rmt_cmd req, *resp = NULL;
    rmt_cmd_init(&req, 2);
    ev_tstamp t0 = ev_time();
    ck_assert_int_eq(rmt_client_invoke_sync(cl, addr, &req, 200, &resp), -ETIMEDOUT);
    ck_assert(ev_time() - t0 >= 0.15);
    /* A port nobody listens on. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    bind(fd, (struct sockaddr *)&sa, sizeof sa);
    socklen_t sl = sizeof sa;
    getsockname(fd, (struct sockaddr *)&sa, &sl);
    char dead[64];
    snprintf(dead, sizeof dead, "127.0.0.1:%d", ntohs(sa.sin_port));
    close(fd);
    int rc = rmt_client_invoke_sync(cl, dead, &req, 1000, &resp);
    ck_assert(rc == -ECONNREFUSED || rc == -ECONNRESET);
    /* Within the backoff window we fail fast. */
    ck_assert_int_eq(rmt_client_invoke_sync(cl, dead, &req, 1000, &resp), -ECONNREFUSED);
    ck_assert_int_eq(rmt_client_invoke(cl, "nonsense", &req, 1000, result_cb, NULL), -EINVAL);
    rmt_cmd_destroy(&req);
    rmt_client_free(cl);
    rmt_server_free(s);
    ev_loop_destroy(loop);
}
END_TEST

static int raw_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    return fd;
}

START_TEST(garbage_closes_only_that_connection)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct srv_state st;
    rmt_server *s = start_server(loop, &st, 4096);
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", rmt_server_port(s));
    struct rmt_client_opts co = { 0 };
    rmt_client *cl = rmt_client_new(loop, &co);

    /* garbage */
    int g = raw_connect(rmt_server_port(s));
    ck_assert_int_eq(write(g, "GET / HTTP/1.1\r\n\r\n", 18), 18);
    run_until(loop, &st.closes, 1);
    ck_assert_int_eq(st.closes, 1);
    char tmp[8];
    ck_assert_int_eq(read(g, tmp, sizeof tmp), 0);
    close(g);
    /* oversized frame */
    int o = raw_connect(rmt_server_port(s));
    uint8_t big[8];
    wr_u32be(big, 1u << 20);
    wr_u32be(big + 4, (1u << 24) | 10);
    ck_assert_int_eq(write(o, big, 8), 8);
    run_until(loop, &st.closes, 2);
    ck_assert_int_eq(st.closes, 2);
    close(o);
    /* undecodable header inside a well-delimited frame */
    int u = raw_connect(rmt_server_port(s));
    uint8_t bad[14];
    memset(bad, 0xee, sizeof bad);
    wr_u32be(bad, 10);
    wr_u32be(bad + 4, (1u << 24) | 6);
    ck_assert_int_eq(write(u, bad, sizeof bad), (ssize_t)sizeof bad);
    run_until(loop, &st.closes, 3);
    ck_assert_int_eq(st.closes, 3);
    close(u);
    /* a half frame then the peer vanishes */
    int h = raw_connect(rmt_server_port(s));
    ck_assert_int_eq(write(h, big, 6), 6);
    close(h);
    run_until(loop, &st.closes, 4);
    ck_assert_int_eq(st.closes, 4);

    /* A well-behaved client is still served. */
    rmt_cmd req, *resp = NULL;
    rmt_cmd_init(&req, 1);
    rmt_cmd_set_ext(&req, "v", "still-here");
    ck_assert_int_eq(rmt_client_invoke_sync(cl, addr, &req, 3000, &resp), 0);
    ck_assert_str_eq(rmt_cmd_ext(resp, "v"), "still-here");
    rmt_cmd_free(resp);
    rmt_cmd_destroy(&req);
    rmt_client_free(cl);
    rmt_server_free(s);
    ev_loop_destroy(loop);
}
END_TEST

START_TEST(peer_that_does_not_read_is_dropped)
{
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    struct srv_state st;
    memset(&st, 0, sizeof st);
    struct rmt_server_opts so = { .host = "127.0.0.1", .max_outbuf = 256 * 1024,
                                  .on_request = srv_request, .on_close = srv_close, .ud = &st };
    int err;
    rmt_server *s = rmt_server_new(loop, &so, &err);
    ck_assert_ptr_nonnull(s);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int rcv = 4096;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof rcv);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)rmt_server_port(s)),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    /* Many echo requests with 8 KiB bodies; the client never reads. */
    enum { NREQ = 1500 };
    rmt_cmd req;
    rmt_cmd_init(&req, 1);
    static uint8_t body[8192];
    rmt_cmd_set_body(&req, body, sizeof body);
    struct buf b = BUF_INIT;
    for (int i = 0; i < NREQ; i++) {
        req.opaque = i;
        rmt_encode(&req, &b);
    }
    size_t off = 0;
    for (int k = 0; k < 20000 && off < b.len && st.closes == 0; k++) {
        ssize_t w = send(fd, b.data + off, b.len - off, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (w > 0)
            off += (size_t)w;
        ev_run(loop, EVRUN_NOWAIT);
    }
    for (int k = 0; k < 200; k++)
        ev_run(loop, EVRUN_NOWAIT);
    /* The server stopped reading instead of queueing without bound. */
    ck_assert_int_eq(st.closes, 0);
    ck_assert_int_lt(st.requests, NREQ);
    /* Once the client reads, everything is answered. */
    struct buf in = BUF_INIT;
    int frames = 0;
    for (int k = 0; k < 200000 && frames < NREQ; k++) {
        if (off < b.len) {
            ssize_t w = send(fd, b.data + off, b.len - off, MSG_DONTWAIT | MSG_NOSIGNAL);
            if (w > 0)
                off += (size_t)w;
        }
        buf_reserve(&in, 65536);
        ssize_t r = recv(fd, in.data + in.len, 65536, MSG_DONTWAIT);
        if (r > 0)
            in.len += (size_t)r;
        size_t flen;
        while (rmt_frame_check(in.data, in.len, 1 << 20, &flen) == RMT_FRAME_OK) {
            frames++;
            buf_consume(&in, flen);
        }
        ev_run(loop, EVRUN_NOWAIT);
    }
    ck_assert_int_eq(frames, NREQ);
    ck_assert_int_eq(st.closes, 0);
    buf_free(&in);
    buf_free(&b);
    rmt_cmd_destroy(&req);
    close(fd);
    rmt_server_free(s);
    ev_loop_destroy(loop);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("remoting");
    TCase *codec = tcase_create("codec");
    tcase_add_test(codec, binary_round_trip);
    tcase_add_test(codec, binary_handmade_bytes);
    tcase_add_test(codec, json_handmade_and_round_trip);
    tcase_add_test(codec, frame_check_bad_input);
    tcase_add_test(codec, many_ext_fields_spill_to_heap);
    suite_add_tcase(s, codec);
    TCase *net = tcase_create("net");
    tcase_set_timeout(net, 30);
    tcase_add_test(net, invoke_matches_opaque);
    tcase_add_test(net, timeout_and_refused);
    tcase_add_test(net, garbage_closes_only_that_connection);
    tcase_add_test(net, peer_that_does_not_read_is_dropped);
    suite_add_tcase(s, net);
    return s;
}

int main(void)
{
    log_set_level(LOG_LVL_ERROR);
    SRunner *r = srunner_create(suite());
    srunner_run_all(r, CK_NORMAL);
    int failed = srunner_ntests_failed(r);
    srunner_free(r);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
