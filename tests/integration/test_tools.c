/*
 * Integration tests of rmqadmin and rmqbench: a real nameserver and broker
 * on loopback ports, every admin subcommand run as a separate process and
 * judged by its exit status and output, and a short benchmark run whose
 * counts must add up. The histogram is checked on its own first.
 */
#include <check.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

#include "harness.h"
#include "histogram.h"

static char g_dir[64], g_outdir[64], g_ns[64], g_broker[64], g_out[128];
static pid_t g_ns_pid, g_broker_pid;
static const char *g_auto_create = "autoCreateTopicEnable=true";

#define MAX_ARGS 32

/* Runs argv (NULL-terminated after the binary's env name) and returns the
 * exit status; *out receives stdout+stderr (static buffer). */
static int run_v(const char *env, const char *sub, bool with_ns, va_list ap, char **out)
{
    static char buf[1 << 16];
    char *argv[MAX_ARGS];
    int n = 0;
    argv[n++] = (char *)th_bin(env);
    argv[n++] = (char *)sub;
    if (with_ns) {
        argv[n++] = "-n";
        argv[n++] = g_ns;
    }
    const char *a;
    while ((a = va_arg(ap, const char *)) && n < MAX_ARGS - 1)
        argv[n++] = (char *)a;
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
    ck_assert_msg(WIFEXITED(status), "%s %s did not exit normally: %s", env, sub, buf);
    return WEXITSTATUS(status);
}

static int admin(char **out, const char *sub, ...)
{
    va_list ap;
    va_start(ap, sub);
    int rc = run_v("RMQADMIN_BIN", sub, true, ap, out);
    va_end(ap);
    return rc;
}

static int admin_raw(char **out, const char *sub, ...)
{
    va_list ap;
    va_start(ap, sub);
    int rc = run_v("RMQADMIN_BIN", sub, false, ap, out);
    va_end(ap);
    return rc;
}

static int bench(char **out, const char *role, ...)
{
    va_list ap;
    va_start(ap, role);
    int rc = run_v("RMQBENCH_BIN", role, false, ap, out);
    va_end(ap);
    return rc;
}

/* JSON document printed on stdout: the first line that starts one (the
 * output may hold stderr lines before it, rmqbench's progress lines
 * "[  1.0s] ..." among them). */
static json_t *json_of(const char *out)
{
    json_error_t e = { .text = "no JSON document" };
    for (const char *p = out; *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : p + strlen(p)) {
        if (*p != '{' && *p != '[')
            continue;
        json_t *j = json_loads(p, JSON_DISABLE_EOF_CHECK, &e);
        if (j)
            return j;
    }
    ck_abort_msg("not JSON (%s): %s", e.text, out);
    return NULL;
}

static long long jint(const json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    ck_assert_msg(json_is_integer(v), "field %s missing", k);
    return json_integer_value(v);
}

/* Sum of an integer column of a JSON table. */
static long long jsum(const json_t *arr, const char *k)
{
    long long s = 0;
    for (size_t i = 0; i < json_array_size(arr); i++)
        s += jint(json_array_get(arr, i), k);
    return s;
}

static void start_cluster(void)
{
    char *d = th_tmpdir();
    snprintf(g_dir, sizeof g_dir, "%s", d);
    free(d);
    int nsport = th_free_port(), bport = th_free_port();
    snprintf(g_ns, sizeof g_ns, "127.0.0.1:%d", nsport);
    snprintf(g_broker, sizeof g_broker, "127.0.0.1:%d", bport);
    char log[128], p1[64], p2[64], p3[96], p4[600];
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
                      "--set", "brokerClusterName=TestCluster", "--set", "brokerName=broker-a",
                      "--set", (char *)g_auto_create, NULL };
    g_broker_pid = th_spawn(bargv, log);
    ck_assert_msg(th_wait_port(bport, 10000), "broker did not start");
}

static void stop_cluster(void)
{
    if (g_broker_pid > 0)
        th_stop(g_broker_pid, 5000);
    if (g_ns_pid > 0)
        th_stop(g_ns_pid, 3000);
    g_broker_pid = g_ns_pid = 0;
    th_rmtree(g_dir);
}

/* Polls an admin command until its output holds needle (dispatch and
 * registration are asynchronous). */
static bool wait_output(const char *needle, int timeout_ms, const char *sub, const char *a1,
                        const char *a2)
{
    long long t0 = th_now_ms();
    char *out;
    do {
        if (admin(&out, sub, a1, a2, NULL) == 0 && strstr(out, needle))
            return true;
        usleep(100 * 1000);
    } while (th_now_ms() - t0 < timeout_ms);
    return false;
}

/* Waits until consumerProgress of group on topic shows the given total lag. */
static long long wait_lag(const char *group, const char *topic, long long want)
{
    long long t0 = th_now_ms(), total = -1;
    do {
        char *out;
        if (admin(&out, "consumerProgress", "-g", group, "-t", topic, "--json", NULL) == 0) {
            json_t *j = json_of(out);
            total = jint(j, "diffTotal");
            json_decref(j);
            if (total == want)
                return total;
        }
        usleep(100 * 1000);
    } while (th_now_ms() - t0 < 5000);
    return total;
}

START_TEST(histogram_percentiles)
{
    static struct hist h, h2;
    hist_init(&h);
    hist_init(&h2);
    for (int64_t v = 1; v <= 100000; v++)
        hist_record(v % 2 ? &h : &h2, v);
    hist_merge(&h, &h2);
    ck_assert_uint_eq(h.count, 100000);
    ck_assert_int_eq(h.min, 1);
    ck_assert_int_eq(h.max, 100000);
    int64_t p50 = hist_percentile(&h, 50), p99 = hist_percentile(&h, 99),
            p999 = hist_percentile(&h, 99.9);
    ck_assert_msg(p50 >= 49000 && p50 <= 51000, "p50 %lld", (long long)p50);
    ck_assert_msg(p99 >= 97000 && p99 <= 101000, "p99 %lld", (long long)p99);
    ck_assert_msg(p999 >= 98000 && p999 <= 100000, "p99.9 %lld", (long long)p999);
    ck_assert_int_eq(hist_percentile(&h, 100), 100000);
    /* Small values are exact. */
    hist_init(&h);
    for (int i = 0; i < 10; i++)
        hist_record(&h, 7);
    ck_assert_int_eq(hist_percentile(&h, 50), 7);
    ck_assert_int_eq(hist_percentile(&h, 99.9), 7);
}
END_TEST

START_TEST(admin_usage_errors)
{
    char *out;
    ck_assert_int_eq(admin_raw(&out, "--help", NULL), 0);
    ck_assert_ptr_nonnull(strstr(out, "consumerProgress"));
    ck_assert_ptr_nonnull(strstr(out, "resetOffsetByTime"));
    ck_assert_int_eq(admin_raw(&out, "frobnicate", NULL), 2);
    ck_assert_ptr_nonnull(strstr(out, "unknown command 'frobnicate'"));
    ck_assert_ptr_nonnull(strstr(out, "updateTopic"));
    ck_assert_int_eq(admin_raw(&out, "updateTopic", "--bogus", NULL), 2);
    ck_assert_ptr_nonnull(strstr(out, "unknown flag '--bogus'"));
    ck_assert_int_eq(admin_raw(&out, "updateTopic", "-c", "X", NULL), 2);
    ck_assert_ptr_nonnull(strstr(out, "missing required flag -t"));
    ck_assert_int_eq(admin_raw(&out, "updateTopic", "-t", "A", "-c", "X", "-p", "7", NULL), 2);
    ck_assert_ptr_nonnull(strstr(out, "-p"));
    ck_assert_int_eq(admin_raw(&out, "queryMsgByOffset", "-t", "A", "-b", "b", "-i", "x", "-o", "0", NULL), 2);
    ck_assert_ptr_nonnull(strstr(out, "'x'"));
    /* Nothing listens on a fresh port: the error names the address. */
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", th_free_port());
    ck_assert_int_eq(admin_raw(&out, "topicList", "-n", addr, NULL), 1);
    ck_assert_msg(strstr(out, addr) != NULL, "address not named: %s", out);
    ck_assert_int_eq(admin_raw(&out, "topicRoute", "-n", addr, "-t", "T", NULL), 1);
    ck_assert_msg(strstr(out, addr) != NULL, "address not named: %s", out);
    ck_assert_int_eq(admin_raw(&out, "topicList", "-n", "not-an-address", NULL), 1);
    ck_assert_ptr_nonnull(strstr(out, "not-an-address"));
    ck_assert_int_eq(bench(&out, "producer", "--mode", "fast", NULL), 2);
    ck_assert_ptr_nonnull(strstr(out, "--mode"));
    ck_assert_int_eq(bench(&out, "lurker", NULL), 2);
}
END_TEST

START_TEST(admin_against_cluster)
{
    char *out;
    ck_assert_msg(wait_output("broker-a", 10000, "clusterList", NULL, NULL), "broker never registered");
    ck_assert_int_eq(admin(&out, "clusterList", "--json", NULL), 0);
    ck_assert_ptr_nonnull(strstr(out, "MASTER"));
    ck_assert_ptr_nonnull(strstr(out, g_broker));
    ck_assert_ptr_nonnull(strstr(out, "TestCluster"));
    ck_assert_int_eq(admin(&out, "brokerStatus", "-b", g_broker, NULL), 0);
    ck_assert_ptr_nonnull(strstr(out, "msgPutTotalTodayNow"));

    ck_assert_int_eq(admin(&out, "updateTopic", "-t", "ToolTopic", "-c", "TestCluster", "-r", "4",
                           "-w", "4", NULL), 0);
    ck_assert_ptr_nonnull(strstr(out, "OK"));
    ck_assert_msg(wait_output("ToolTopic", 5000, "topicList", NULL, NULL), "topic not listed");
    ck_assert_int_eq(admin(&out, "topicRoute", "-t", "ToolTopic", "--json", NULL), 0);
    json_t *j = json_of(out);
    json_t *q = json_array_get(json_object_get(j, "queues"), 0);
    ck_assert_str_eq(json_string_value(json_object_get(q, "Broker")), "broker-a");
    ck_assert_int_eq(jint(q, "ReadQueues"), 4);
    ck_assert_int_eq(jint(q, "WriteQueues"), 4);
    json_decref(j);

    ck_assert_int_eq(admin(&out, "sendMessage", "-t", "ToolTopic", "-p", "hello-tools", "-k", "KEY1",
                           "-c", "TagA", "--json", NULL), 0);
    j = json_of(out);
    char uniq[64], offid[64], qid[16], qoff[32];
    snprintf(uniq, sizeof uniq, "%s", json_string_value(json_object_get(j, "MsgId")));
    snprintf(offid, sizeof offid, "%s", json_string_value(json_object_get(j, "OffsetMsgId")));
    snprintf(qid, sizeof qid, "%lld", jint(j, "QueueId"));
    snprintf(qoff, sizeof qoff, "%lld", jint(j, "QueueOffset"));
    json_decref(j);
    for (int i = 0; i < 4; i++) {
        char body[32];
        snprintf(body, sizeof body, "more-%d", i);
        ck_assert_int_eq(admin(&out, "sendMessage", "-t", "ToolTopic", "-p", body, NULL), 0);
    }
    /* topicStatus: 5 messages over the queues, once dispatched. */
    long long total = 0, t0 = th_now_ms();
    do {
        ck_assert_int_eq(admin(&out, "topicStatus", "-t", "ToolTopic", "--json", NULL), 0);
        j = json_of(out);
        ck_assert_int_eq(json_array_size(j), 4);
        total = jsum(j, "MaxOffset") - jsum(j, "MinOffset");
        json_decref(j);
    } while (total != 5 && th_now_ms() - t0 < 5000 && usleep(100 * 1000) == 0);
    ck_assert_int_eq(total, 5);

    ck_assert_int_eq(admin(&out, "queryMsgByKey", "-t", "ToolTopic", "-k", "KEY1", NULL), 0);
    ck_assert_ptr_nonnull(strstr(out, uniq));
    ck_assert_ptr_nonnull(strstr(out, "TagA"));
    ck_assert_int_eq(admin(&out, "queryMsgByKey", "-t", "ToolTopic", "-k", "NO-SUCH-KEY", NULL), 1);
    ck_assert_ptr_nonnull(strstr(out, "NO-SUCH-KEY"));
    ck_assert_int_eq(admin(&out, "queryMsgById", "-i", offid, NULL), 0);
    ck_assert_ptr_nonnull(strstr(out, "hello-tools"));
    ck_assert_ptr_nonnull(strstr(out, "KEY1"));
    ck_assert_int_eq(admin(&out, "queryMsgById", "-t", "ToolTopic", "-i", uniq, "--json", NULL), 0);
    j = json_of(out);
    ck_assert_str_eq(json_string_value(json_object_get(j, "Body")), "hello-tools");
    ck_assert_str_eq(json_string_value(json_object_get(j, "Tags")), "TagA");
    json_decref(j);
    ck_assert_int_eq(admin(&out, "queryMsgByOffset", "-t", "ToolTopic", "-b", "broker-a", "-i", qid,
                           "-o", qoff, NULL), 0);
    ck_assert_ptr_nonnull(strstr(out, "hello-tools"));
    ck_assert_int_eq(admin(&out, "queryMsgByOffset", "-t", "ToolTopic", "-b", "broker-a", "-i", qid,
                           "-o", "999", NULL), 1);

    /* Lag of a new group, consumption, reset. */
    ck_assert_int_eq(admin(&out, "updateSubGroup", "-g", "ToolGroup", "-c", "TestCluster", NULL), 0);
    ck_assert_int_eq(wait_lag("ToolGroup", "ToolTopic", 5), 5);
    ck_assert_int_eq(admin(&out, "consumeMessage", "-t", "ToolTopic", "-g", "ToolGroup", "-c", "5",
                           "--json", NULL), 0);
    j = json_of(out);
    ck_assert_int_eq(json_array_size(j), 5);
    json_decref(j);
    ck_assert_ptr_nonnull(strstr(out, "hello-tools"));
    ck_assert_int_eq(wait_lag("ToolGroup", "ToolTopic", 0), 0);
    ck_assert_int_eq(admin(&out, "resetOffsetByTime", "-g", "ToolGroup", "-t", "ToolTopic", "-s", "0",
                           NULL), 0);
    ck_assert_int_eq(wait_lag("ToolGroup", "ToolTopic", 5), 5);
    ck_assert_int_eq(admin(&out, "resetOffsetByTime", "-g", "ToolGroup", "-t", "ToolTopic", "-s",
                           "yesterday", NULL), 2);
    ck_assert_int_eq(admin(&out, "deleteSubGroup", "-g", "ToolGroup", "-c", "TestCluster", NULL), 0);
    ck_assert_ptr_nonnull(strstr(out, "OK"));

    /* Write permission. */
    ck_assert_int_eq(admin(&out, "wipeWritePerm", "-b", "broker-a", NULL), 0);
    ck_assert_int_eq(admin(&out, "sendMessage", "-t", "ToolTopic", "-p", "x", NULL), 1);
    ck_assert_msg(strstr(out, "writable") != NULL, "no clear error: %s", out);
    ck_assert_int_eq(admin(&out, "addWritePerm", "-b", "broker-a", NULL), 0);
    ck_assert_int_eq(admin(&out, "sendMessage", "-t", "ToolTopic", "-p", "x", NULL), 0);

    /* Unknown topic, then deletion. */
    ck_assert_int_eq(admin(&out, "topicRoute", "-t", "NoSuchTopic", NULL), 1);
    ck_assert_ptr_nonnull(strstr(out, "'NoSuchTopic' does not exist"));
    ck_assert_int_eq(admin(&out, "topicStatus", "-t", "NoSuchTopic", NULL), 1);
    ck_assert_int_eq(admin(&out, "deleteTopic", "-t", "ToolTopic", "-c", "TestCluster", NULL), 0);
    ck_assert_int_eq(admin(&out, "topicRoute", "-t", "ToolTopic", NULL), 1);
    ck_assert_ptr_nonnull(strstr(out, "does not exist"));
    ck_assert_int_eq(admin(&out, "topicList", NULL), 0);
    ck_assert_ptr_null(strstr(out, "ToolTopic"));
}
END_TEST

/* A send to a topic the nameserver does not know goes through TBW102 and
 * the broker creates the topic, which then has its own route. */
START_TEST(send_auto_creates_topic)
{
    char *out;
    ck_assert_msg(wait_output("broker-a", 10000, "clusterList", NULL, NULL), "broker never registered");
    ck_assert_int_eq(admin(&out, "topicRoute", "-t", "AutoNewTopic", NULL), 1);
    ck_assert_int_eq(admin(&out, "sendMessage", "-t", "AutoNewTopic", "-p", "first", NULL), 0);
    ck_assert_msg(wait_output("broker-a", 5000, "topicRoute", "-t", "AutoNewTopic"),
                  "auto-created topic has no route");
    ck_assert_int_eq(admin(&out, "topicRoute", "-t", "AutoNewTopic", "--json", NULL), 0);
    json_t *j = json_of(out);
    json_t *q = json_array_get(json_object_get(j, "queues"), 0);
    ck_assert_int_eq(jint(q, "WriteQueues"), 4);
    json_decref(j);
    ck_assert_int_eq(admin(&out, "sendMessage", "-t", "AutoNewTopic", "-p", "second", NULL), 0);
}
END_TEST

static void start_cluster_no_auto(void)
{
    g_auto_create = "autoCreateTopicEnable=false";
    start_cluster();
}

START_TEST(send_without_auto_create_fails)
{
    char *out;
    ck_assert_msg(wait_output("broker-a", 10000, "clusterList", NULL, NULL), "broker never registered");
    ck_assert_int_eq(admin(&out, "sendMessage", "-t", "AutoNewTopic", "-p", "x", NULL), 1);
    ck_assert_msg(strstr(out, "'AutoNewTopic' does not exist") != NULL, "no clear error: %s", out);
    ck_assert_int_eq(admin(&out, "topicRoute", "-t", "AutoNewTopic", NULL), 1);
}
END_TEST

START_TEST(bench_smoke)
{
    char *out;
    ck_assert_msg(wait_output("broker-a", 10000, "clusterList", NULL, NULL), "broker never registered");
    ck_assert_int_eq(admin(&out, "updateTopic", "-t", "BenchTopic", "-c", "TestCluster", NULL), 0);
    ck_assert_msg(wait_output("BenchTopic", 5000, "topicList", NULL, NULL), "topic not listed");
    ck_assert_int_eq(bench(&out, "producer", "-n", g_ns, "-t", "BenchTopic", "-s", "256", "-w", "16",
                           "--count", "3000", "--keys", "--json", NULL), 0);
    json_t *j = json_of(out);
    long long sent = jint(j, "sent"), ok = jint(j, "acknowledged"), failed = jint(j, "failed");
    ck_assert_int_eq(sent, 3000);
    ck_assert_int_eq(sent, ok + failed);
    ck_assert_int_gt(ok, 0);
    ck_assert(json_object_get(json_object_get(j, "latencyMs"), "p99") != NULL);
    json_decref(j);
    ck_assert_int_eq(bench(&out, "producer", "-n", g_ns, "-t", "BenchTopic", "--mode", "sync", "-w", "2",
                           "--count", "200", "--json", NULL), 0);
    j = json_of(out);
    ck_assert_int_eq(jint(j, "sent"), 200);
    ck_assert_int_eq(jint(j, "acknowledged") + jint(j, "failed"), 200);
    ok += jint(j, "acknowledged");
    json_decref(j);
    char count[32];
    snprintf(count, sizeof count, "%lld", ok);
    ck_assert_int_eq(bench(&out, "consumer", "-n", g_ns, "-t", "BenchTopic", "-g", "BenchGroup",
                           "--from", "first", "--count", count, "--duration", "20", "--json", NULL), 0);
    j = json_of(out);
    ck_assert_int_eq(jint(j, "received"), ok);
    json_decref(j);
    /* A duration-bound run stops by itself. */
    ck_assert_int_eq(bench(&out, "producer", "-n", g_ns, "-t", "BenchTopic", "--duration", "1", NULL), 0);
    ck_assert_ptr_nonnull(strstr(out, "acknowledged"));
}
END_TEST

/* Timer messages through the real broker: sent due 2 s later, they must
 * not arrive before that (early == 0: the broker held them), must carry
 * their due time (dueToReceiptMs is only printed when it was seen) and
 * must arrive soon after it. */
START_TEST(bench_timer_messages)
{
    char *out;
    ck_assert_msg(wait_output("broker-a", 10000, "clusterList", NULL, NULL), "broker never registered");
    ck_assert_int_eq(admin(&out, "updateTopic", "-t", "TimerBenchTopic", "-c", "TestCluster", NULL), 0);
    ck_assert_msg(wait_output("TimerBenchTopic", 5000, "topicList", NULL, NULL), "topic not listed");
    long long t0 = th_now_ms();
    ck_assert_int_eq(bench(&out, "producer", "-n", g_ns, "-t", "TimerBenchTopic", "--count", "200",
                           "--deliver-after", "2000", "--json", NULL), 0);
    json_t *j = json_of(out);
    ck_assert_int_eq(jint(j, "acknowledged"), 200);
    ck_assert_int_eq(jint(j, "deliverAfterMs"), 2000);
    json_decref(j);
    ck_assert_msg(th_now_ms() - t0 < 1500, "the producer took %lld ms: the due times passed before the "
                  "consumer could start", th_now_ms() - t0);
    ck_assert_int_eq(bench(&out, "consumer", "-n", g_ns, "-t", "TimerBenchTopic", "-g", "TimerBenchGroup",
                           "--from", "first", "--count", "200", "--duration", "10", "--json", NULL), 0);
    j = json_of(out);
    ck_assert_int_eq(jint(j, "received"), 200);
    json_t *due = json_object_get(j, "dueToReceiptMs");
    ck_assert_msg(json_is_object(due), "no dueToReceiptMs: the messages carried no due time: %s", out);
    ck_assert_int_eq(jint(due, "count"), 200);
    ck_assert_msg(jint(due, "early") == 0, "%lld messages arrived before their due time: %s",
                  jint(due, "early"), out);
    ck_assert_msg(jint(due, "p99") < 1500, "due->receipt p99 %lld ms", jint(due, "p99"));
    json_decref(j);
}
END_TEST

int main(void)
{
    char *od = th_tmpdir();
    snprintf(g_outdir, sizeof g_outdir, "%s", od);
    free(od);
    snprintf(g_out, sizeof g_out, "%s/out.txt", g_outdir);
    Suite *s = suite_create("tools");
    TCase *unit = tcase_create("offline");
    tcase_add_test(unit, histogram_percentiles);
    tcase_add_test(unit, admin_usage_errors);
    suite_add_tcase(s, unit);
    TCase *tc = tcase_create("cluster");
    tcase_set_timeout(tc, 90);
    tcase_add_unchecked_fixture(tc, start_cluster, stop_cluster);
    tcase_add_test(tc, admin_against_cluster);
    tcase_add_test(tc, bench_smoke);
    tcase_add_test(tc, bench_timer_messages);
    tcase_add_test(tc, send_auto_creates_topic);
    suite_add_tcase(s, tc);
    TCase *noauto = tcase_create("no-auto-create");
    tcase_set_timeout(noauto, 60);
    tcase_add_unchecked_fixture(noauto, start_cluster_no_auto, stop_cluster);
    tcase_add_test(noauto, send_without_auto_create_fails);
    suite_add_tcase(s, noauto);
    SRunner *r = srunner_create(s);
    srunner_run_all(r, CK_NORMAL);
    int failed = srunner_ntests_failed(r);
    srunner_free(r);
    th_rmtree(g_outdir);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
