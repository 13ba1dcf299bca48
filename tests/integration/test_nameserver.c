/* Integration tests: the real nameserver binary on loopback ports. */
#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "log.h"
#include "remoting.h"

static void ns_start(struct th_daemon *h, const char *extra1, const char *extra2)
{
    const char *const ex[] = { extra1, extra2, NULL };
    ck_assert_msg(th_ns_start(h, ex), "nameserver did not start listening");
}

static void ns_finish(struct th_daemon *h)
{
    th_stop(h->pid, 3000);
    th_rmtree(h->dir);
}

static const char *register_body =
    "{\"topicConfigSerializeWrapper\":{\"topicConfigTable\":{"
    "\"TopicA\":{\"topicName\":\"TopicA\",\"readQueueNums\":4,\"writeQueueNums\":4,\"perm\":6,"
    "\"topicFilterType\":\"SINGLE_TAG\",\"topicSysFlag\":0,\"order\":false}},"
    "\"dataVersion\":{\"timestamp\":1700000000000,\"counter\":1}},\"filterServerList\":[]}";

static int do_register(rmt_client *cl, const char *ns, const char *broker_addr, const char *name)
{
    rmt_cmd req, *resp = NULL;
    rmt_cmd_init(&req, RMT_REQ_REGISTER_BROKER);
    rmt_cmd_set_ext(&req, "brokerName", name);
    rmt_cmd_set_ext(&req, "brokerAddr", broker_addr);
    rmt_cmd_set_ext(&req, "clusterName", "TestCluster");
    rmt_cmd_set_ext(&req, "haServerAddr", "127.0.0.1:10912");
    rmt_cmd_set_ext(&req, "brokerId", "0");
    rmt_cmd_set_body(&req, register_body, (uint32_t)strlen(register_body));
    int rc = rmt_client_invoke_sync(cl, ns, &req, 3000, &resp);
    rmt_cmd_destroy(&req);
    if (rc)
        return rc;
    int code = resp->code;
    rmt_cmd_free(resp);
    return code;
}

/* Returns the response code; the body is copied into out (if not NULL). */
static int query(rmt_client *cl, const char *ns, int code, const char *k, const char *v, char *out,
                 size_t outlen, int serialize)
{
    rmt_cmd req, *resp = NULL;
    rmt_cmd_init(&req, code);
    req.serialize = (uint8_t)serialize;
    if (k)
        rmt_cmd_set_ext(&req, k, v);
    int rc = rmt_client_invoke_sync(cl, ns, &req, 3000, &resp);
    rmt_cmd_destroy(&req);
    ck_assert_int_eq(rc, 0);
    int rcode = resp->code;
    if (out) {
        snprintf(out, outlen, "%.*s", (int)resp->body_len, (const char *)resp->body);
        if (rcode != 0 && rmt_cmd_remark(resp))
            snprintf(out, outlen, "%s", rmt_cmd_remark(resp));
    }
    ck_assert_int_eq(resp->serialize, serialize);
    rmt_cmd_free(resp);
    return rcode;
}

static rmt_client *new_client(struct ev_loop *loop)
{
    struct rmt_client_opts co = { 0 };
    return rmt_client_new(loop, &co);
}

START_TEST(register_query_unregister)
{
    struct th_daemon h;
    ns_start(&h, NULL, NULL);
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    rmt_client *cl = new_client(loop);
    char body[4096];
    ck_assert_int_eq(query(cl, h.addr, RMT_REQ_GET_ROUTEINFO_BY_TOPIC, "topic", "TopicA", body,
                           sizeof body, RMT_SERIALIZE_ROCKETMQ), RMT_RESP_TOPIC_NOT_EXIST);
    ck_assert_ptr_nonnull(strstr(body, "TopicA"));
    ck_assert_int_eq(do_register(cl, h.addr, "127.0.0.1:10911", "broker-a"), 0);
    ck_assert_int_eq(query(cl, h.addr, RMT_REQ_GET_ROUTEINFO_BY_TOPIC, "topic", "TopicA", body,
                           sizeof body, RMT_SERIALIZE_ROCKETMQ), 0);
    ck_assert_ptr_nonnull(strstr(body, "\"brokerName\":\"broker-a\""));
    ck_assert_ptr_nonnull(strstr(body, "0:\"127.0.0.1:10911\""));
    ck_assert_ptr_nonnull(strstr(body, "\"writeQueueNums\":4"));
    /* A Java/Node client asking in JSON gets JSON back. */
    ck_assert_int_eq(query(cl, h.addr, RMT_REQ_GET_ROUTEINFO_BY_TOPIC, "topic", "TopicA", body,
                           sizeof body, RMT_SERIALIZE_JSON), 0);
    ck_assert_int_eq(query(cl, h.addr, RMT_REQ_GET_BROKER_CLUSTER_INFO, NULL, NULL, body,
                           sizeof body, RMT_SERIALIZE_ROCKETMQ), 0);
    ck_assert_ptr_nonnull(strstr(body, "TestCluster"));
    ck_assert_int_eq(query(cl, h.addr, RMT_REQ_GET_ALL_TOPIC_LIST_FROM_NAMESERVER, NULL, NULL, body,
                           sizeof body, RMT_SERIALIZE_ROCKETMQ), 0);
    ck_assert_ptr_nonnull(strstr(body, "TopicA"));
    /* Unsupported codes are named in the answer. */
    ck_assert_int_eq(query(cl, h.addr, 4242, NULL, NULL, body, sizeof body, RMT_SERIALIZE_ROCKETMQ),
                     RMT_RESP_REQUEST_CODE_NOT_SUPPORTED);
    ck_assert_ptr_nonnull(strstr(body, "4242"));
    /* A request missing a field gets an error naming it; the connection lives on. */
    ck_assert_int_eq(query(cl, h.addr, RMT_REQ_GET_ROUTEINFO_BY_TOPIC, NULL, NULL, body, sizeof body,
                           RMT_SERIALIZE_ROCKETMQ), RMT_RESP_INVALID_PARAMETER);
    ck_assert_ptr_nonnull(strstr(body, "topic"));

    rmt_cmd req, *resp = NULL;
    rmt_cmd_init(&req, RMT_REQ_UNREGISTER_BROKER);
    rmt_cmd_set_ext(&req, "brokerName", "broker-a");
    rmt_cmd_set_ext(&req, "brokerAddr", "127.0.0.1:10911");
    rmt_cmd_set_ext(&req, "clusterName", "TestCluster");
    rmt_cmd_set_ext(&req, "brokerId", "0");
    ck_assert_int_eq(rmt_client_invoke_sync(cl, h.addr, &req, 3000, &resp), 0);
    ck_assert_int_eq(resp->code, 0);
    rmt_cmd_free(resp);
    rmt_cmd_destroy(&req);
    ck_assert_int_eq(query(cl, h.addr, RMT_REQ_GET_ROUTEINFO_BY_TOPIC, "topic", "TopicA", NULL, 0,
                           RMT_SERIALIZE_ROCKETMQ), RMT_RESP_TOPIC_NOT_EXIST);
    rmt_client_free(cl);
    ev_loop_destroy(loop);
    ns_finish(&h);
}
END_TEST

START_TEST(eviction_after_timeout)
{
    struct th_daemon h;
    ns_start(&h, "brokerChannelExpiredTime=1000", "scanNotActiveBrokerInterval=200");
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    rmt_client *cl = new_client(loop);
    ck_assert_int_eq(do_register(cl, h.addr, "127.0.0.1:10911", "broker-a"), 0);
    ck_assert_int_eq(query(cl, h.addr, RMT_REQ_GET_ROUTEINFO_BY_TOPIC, "topic", "TopicA", NULL, 0,
                           RMT_SERIALIZE_ROCKETMQ), 0);
    /* The connection stays open but no heartbeat follows. */
    long long t0 = th_now_ms();
    int code = 0;
    while (th_now_ms() - t0 < 5000) {
        code = query(cl, h.addr, RMT_REQ_GET_ROUTEINFO_BY_TOPIC, "topic", "TopicA", NULL, 0,
                     RMT_SERIALIZE_ROCKETMQ);
        if (code == RMT_RESP_TOPIC_NOT_EXIST)
            break;
        usleep(100 * 1000);
    }
    long long waited = th_now_ms() - t0;
    ck_assert_int_eq(code, RMT_RESP_TOPIC_NOT_EXIST);
    ck_assert_msg(waited >= 700, "evicted too early (%lld ms)", waited);
    rmt_client_free(cl);
    ev_loop_destroy(loop);
    ns_finish(&h);
}
END_TEST

START_TEST(eviction_on_connection_close)
{
    struct th_daemon h;
    ns_start(&h, NULL, NULL);
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    rmt_client *broker = new_client(loop);
    rmt_client *other = new_client(loop);
    ck_assert_int_eq(do_register(broker, h.addr, "127.0.0.1:10911", "broker-a"), 0);
    ck_assert_int_eq(query(other, h.addr, RMT_REQ_GET_ROUTEINFO_BY_TOPIC, "topic", "TopicA", NULL, 0,
                           RMT_SERIALIZE_ROCKETMQ), 0);
    rmt_client_free(broker);
    int code = 0;
    for (int i = 0; i < 50; i++) {
        code = query(other, h.addr, RMT_REQ_GET_ROUTEINFO_BY_TOPIC, "topic", "TopicA", NULL, 0,
                     RMT_SERIALIZE_ROCKETMQ);
        if (code == RMT_RESP_TOPIC_NOT_EXIST)
            break;
        usleep(20 * 1000);
    }
    ck_assert_int_eq(code, RMT_RESP_TOPIC_NOT_EXIST);
    rmt_client_free(other);
    ev_loop_destroy(loop);
    ns_finish(&h);
}
END_TEST

START_TEST(garbage_does_not_disturb_others)
{
    struct th_daemon h;
    ns_start(&h, "maxFrameSize=65536", NULL);
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    rmt_client *cl = new_client(loop);
    ck_assert_int_eq(do_register(cl, h.addr, "127.0.0.1:10911", "broker-a"), 0);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)h.port),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    const char junk[] = "\x00\x00\x00\x10garbage-garbage!!";
    ck_assert_int_eq(write(fd, junk, sizeof junk), (ssize_t)sizeof junk);
    char tmp[16];
    ck_assert_int_eq(read(fd, tmp, sizeof tmp), 0); /* the nameserver hung up on it */
    close(fd);
    /* an oversized frame */
    fd = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    uint8_t big[8];
    wr_u32be(big, 1u << 24);
    wr_u32be(big + 4, (1u << 24) | 20);
    ck_assert_int_eq(write(fd, big, 8), 8);
    ck_assert_int_eq(read(fd, tmp, sizeof tmp), 0);
    close(fd);
    /* the registered broker's connection and routes are untouched */
    ck_assert_int_eq(query(cl, h.addr, RMT_REQ_GET_ROUTEINFO_BY_TOPIC, "topic", "TopicA", NULL, 0,
                           RMT_SERIALIZE_ROCKETMQ), 0);
    rmt_client_free(cl);
    ev_loop_destroy(loop);
    ck_assert(th_file_contains(h.log, "exceeds the limit"));
    ns_finish(&h);
}
END_TEST

START_TEST(two_nameservers_side_by_side)
{
    struct th_daemon a, b;
    ns_start(&a, NULL, NULL);
    ns_start(&b, NULL, NULL);
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    rmt_client *cl = new_client(loop);
    ck_assert_int_eq(do_register(cl, a.addr, "127.0.0.1:10911", "broker-a"), 0);
    ck_assert_int_eq(query(cl, b.addr, RMT_REQ_GET_ROUTEINFO_BY_TOPIC, "topic", "TopicA", NULL, 0,
                           RMT_SERIALIZE_ROCKETMQ), RMT_RESP_TOPIC_NOT_EXIST);
    ck_assert_int_eq(do_register(cl, b.addr, "127.0.0.1:10911", "broker-a"), 0);
    ck_assert_int_eq(query(cl, a.addr, RMT_REQ_GET_ROUTEINFO_BY_TOPIC, "topic", "TopicA", NULL, 0,
                           RMT_SERIALIZE_ROCKETMQ), 0);
    ck_assert_int_eq(query(cl, b.addr, RMT_REQ_GET_ROUTEINFO_BY_TOPIC, "topic", "TopicA", NULL, 0,
                           RMT_SERIALIZE_ROCKETMQ), 0);
    rmt_client_free(cl);
    ev_loop_destroy(loop);
    ns_finish(&a);
    ns_finish(&b);
}
END_TEST

START_TEST(admin_requests_need_allow_list)
{
    struct th_daemon h;
    ns_start(&h, "adminAllowList=10.1.2.3", NULL);
    struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
    rmt_client *cl = new_client(loop);
    ck_assert_int_eq(do_register(cl, h.addr, "127.0.0.1:10911", "broker-a"), 0);
    char body[512];
    ck_assert_int_eq(query(cl, h.addr, RMT_REQ_DELETE_TOPIC_IN_NAMESRV, "topic", "TopicA", body,
                           sizeof body, RMT_SERIALIZE_ROCKETMQ), RMT_RESP_NO_PERMISSION);
    ck_assert_ptr_nonnull(strstr(body, "adminAllowList"));
    ck_assert_int_eq(query(cl, h.addr, RMT_REQ_WIPE_WRITE_PERM_OF_BROKER, "brokerName", "broker-a",
                           NULL, 0, RMT_SERIALIZE_ROCKETMQ), RMT_RESP_NO_PERMISSION);
    ck_assert_int_eq(query(cl, h.addr, RMT_REQ_GET_ROUTEINFO_BY_TOPIC, "topic", "TopicA", body,
                           sizeof body, RMT_SERIALIZE_ROCKETMQ), 0);
    ck_assert_ptr_nonnull(strstr(body, "\"perm\":6"));
    rmt_client_free(cl);
    ev_loop_destroy(loop);
    ns_finish(&h);

    /* From an allowed address the same requests work. */
    ns_start(&h, NULL, NULL);
    loop = ev_loop_new(EVFLAG_AUTO);
    cl = new_client(loop);
    ck_assert_int_eq(do_register(cl, h.addr, "127.0.0.1:10911", "broker-a"), 0);
    ck_assert_int_eq(query(cl, h.addr, RMT_REQ_WIPE_WRITE_PERM_OF_BROKER, "brokerName", "broker-a",
                           NULL, 0, RMT_SERIALIZE_ROCKETMQ), 0);
    ck_assert_int_eq(query(cl, h.addr, RMT_REQ_GET_ROUTEINFO_BY_TOPIC, "topic", "TopicA", body,
                           sizeof body, RMT_SERIALIZE_ROCKETMQ), 0);
    ck_assert_ptr_nonnull(strstr(body, "\"perm\":4"));
    ck_assert_int_eq(query(cl, h.addr, RMT_REQ_DELETE_TOPIC_IN_NAMESRV, "topic", "TopicA", NULL, 0,
                           RMT_SERIALIZE_ROCKETMQ), 0);
    ck_assert_int_eq(query(cl, h.addr, RMT_REQ_GET_ROUTEINFO_BY_TOPIC, "topic", "TopicA", NULL, 0,
                           RMT_SERIALIZE_ROCKETMQ), RMT_RESP_TOPIC_NOT_EXIST);
    rmt_client_free(cl);
    ev_loop_destroy(loop);
    ns_finish(&h);
}
END_TEST

START_TEST(sigterm_exits_zero)
{
    struct th_daemon h;
    ns_start(&h, NULL, NULL);
    int status = th_stop(h.pid, 3000);
    ck_assert(status >= 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0);
    ck_assert(th_file_contains(h.log, "nameserver stopped"));
    th_rmtree(h.dir);
}
END_TEST

START_TEST(bad_config_refused)
{
    char *dir = th_tmpdir();
    char conf[256], log[256];
    snprintf(conf, sizeof conf, "%s/ns.yaml", dir);
    snprintf(log, sizeof log, "%s/ns.log", dir);
    th_write_file(conf, "listenPort: 9876\nlistenPrt: 1\n");
    char *argv[] = { (char *)th_bin("NAMESRV_BIN"), "-c", conf, NULL };
    pid_t pid = th_spawn(argv, log);
    int status;
    waitpid(pid, &status, 0);
    ck_assert(WIFEXITED(status) && WEXITSTATUS(status) != 0);
    char expect[300];
    snprintf(expect, sizeof expect, "%s:2: listenPrt", conf);
    ck_assert_msg(th_file_contains(log, expect), "error does not name file:line: key");
    th_write_file(conf, "listenPort: 70000\n");
    pid = th_spawn(argv, log);
    waitpid(pid, &status, 0);
    ck_assert(WIFEXITED(status) && WEXITSTATUS(status) != 0);
    snprintf(expect, sizeof expect, "%s:1: listenPort", conf);
    ck_assert(th_file_contains(log, expect));
    th_rmtree(dir);
    free(dir);
}
END_TEST

int main(void)
{
    log_set_level(LOG_LVL_ERROR);
    Suite *s = suite_create("nameserver");
    TCase *tc = tcase_create("daemon");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, register_query_unregister);
    tcase_add_test(tc, eviction_after_timeout);
    tcase_add_test(tc, eviction_on_connection_close);
    tcase_add_test(tc, garbage_does_not_disturb_others);
    tcase_add_test(tc, two_nameservers_side_by_side);
    tcase_add_test(tc, admin_requests_need_allow_list);
    tcase_add_test(tc, sigterm_exits_zero);
    tcase_add_test(tc, bad_config_refused);
    suite_add_tcase(s, tc);
    SRunner *r = srunner_create(s);
    srunner_run_all(r, CK_NORMAL);
    int failed = srunner_ntests_failed(r);
    srunner_free(r);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
