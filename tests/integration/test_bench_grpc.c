/*
 * Smoke test of rmqbench's gRPC transport: a real nameserver, broker and
 * proxy on loopback ports; messages sent through the proxy with
 * `rmqbench producer --transport grpc` and received back (ReceiveMessage +
 * AckMessage) with `rmqbench consumer --transport grpc`. Only counts are
 * judged: every send is acknowledged or failed, every acknowledged message
 * comes back exactly once, and the group has no lag left. No speed is
 * asserted. Also the broker request the proxy reads a consumer group's
 * config with (GET_SUBSCRIPTIONGROUP_CONFIG, 352).
 */
#include <check.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <ev.h>
#include <jansson.h>

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

/* Creates the topic and waits until its route is served. */
static void make_topic(const char *topic)
{
    char *out;
    long long t0 = th_now_ms();
    while (run("RMQADMIN_BIN", &out, "updateTopic", "-n", g_ns, "-c", "GrpcBenchCluster", "-t", topic, "-r", "4",
               "-w", "4", NULL) != 0) {
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
    SRunner *r = srunner_create(s);
    srunner_run_all(r, CK_NORMAL);
    int failed = srunner_ntests_failed(r);
    srunner_free(r);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
