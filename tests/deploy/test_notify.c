/*
 * What the systemd units (Type=notify, KillSignal=SIGTERM, TimeoutStopSec=)
 * rely on, checked against the real daemons started from the shipped
 * YAML files in deploy/conf/: each daemon accepts its configuration, sends
 * READY=1 to $NOTIFY_SOCKET only once its port accepts connections, and on
 * SIGTERM sends STOPPING=1 and exits with status 0 well within the unit's
 * stop timeout. Addresses, ports and store paths are overridden with --set
 * exactly as deploy/local-cluster.sh does, and every peer address points at
 * a closed loopback port, so nothing leaves this host.
 *
 * Environment (set by meson): NAMESRV_BIN, BROKER_BIN, DEPLOY_CONF_DIR;
 * PROXY_BIN when the proxy daemon is built.
 */
#include <check.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

/* The units' TimeoutStopSec for the nameserver and proxy (the broker's is
 * 60 s); a clean stop must take a small fraction of it. */
#define STOP_BUDGET_MS 30000
#define READY_BUDGET_MS 20000

struct notify_sock {
    int fd;
    char path[108];
};

static void notify_open(struct notify_sock *ns, const char *dir)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    snprintf(ns->path, sizeof ns->path, "%s/notify", dir);
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", ns->path);
    ns->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(ns->fd, 0);
    ck_assert_int_eq(bind(ns->fd, (struct sockaddr *)&sa, sizeof sa), 0);
    setenv("NOTIFY_SOCKET", ns->path, 1);
}

static void notify_close(struct notify_sock *ns)
{
    unsetenv("NOTIFY_SOCKET");
    close(ns->fd);
    unlink(ns->path);
}

/* Waits for a datagram containing want (datagrams hold newline-separated
 * assignments). Returns true if it came within timeout_ms; false at the
 * timeout, or at once when pid (if > 0) has exited (*status then holds its
 * wait status; otherwise *status is left alone). */
static bool notify_wait(struct notify_sock *ns, const char *want, int timeout_ms, pid_t pid,
                        int *status)
{
    long long end = th_now_ms() + timeout_ms;
    char msg[4096];
    while (th_now_ms() < end) {
        struct pollfd p = { .fd = ns->fd, .events = POLLIN };
        if (poll(&p, 1, 50) <= 0) {
            if (pid > 0 && waitpid(pid, status, WNOHANG) == pid)
                return false;
            continue;
        }
        ssize_t n = recv(ns->fd, msg, sizeof msg - 1, 0);
        if (n <= 0)
            continue;
        msg[n] = 0;
        for (char *save = NULL, *line = strtok_r(msg, "\n", &save); line;
             line = strtok_r(NULL, "\n", &save))
            if (strcmp(line, want) == 0)
                return true;
    }
    return false;
}

static bool port_open(int port)
{
    return th_wait_port(port, 1);
}

/* Starts bin with argv, checks READY=1 (port open at that moment), then
 * SIGTERM: STOPPING=1 and exit status 0. */
static void ready_and_stop(const char *what, char *const argv[], int port, const char *dir)
{
    struct notify_sock ns;
    notify_open(&ns, dir);
    char log[512];
    snprintf(log, sizeof log, "%s/%s.log", dir, what);
    pid_t pid = th_spawn(argv, log);
    int status = -1;
    bool ready = notify_wait(&ns, "READY=1", READY_BUDGET_MS, pid, &status);
    if (!ready) {
        notify_close(&ns);
        if (status != -1)
            ck_abort_msg("%s exited (status 0x%x) without READY=1 (log %s)", what, status, log);
        th_kill(pid);
        ck_abort_msg("%s: no READY=1 within %d ms (log %s)", what, READY_BUDGET_MS, log);
    }
    ck_assert_msg(port_open(port), "%s sent READY=1 before port %d accepted connections", what,
                  port);
    long long t0 = th_now_ms();
    kill(pid, SIGTERM);
    bool stopping = notify_wait(&ns, "STOPPING=1", STOP_BUDGET_MS, 0, NULL);
    int remaining = STOP_BUDGET_MS - (int)(th_now_ms() - t0);
    status = th_stop(pid, remaining > 0 ? remaining : 1);
    long long took = th_now_ms() - t0;
    notify_close(&ns);
    ck_assert_msg(stopping, "%s: no STOPPING=1 after SIGTERM", what);
    ck_assert_msg(status != -1, "%s: still running %d ms after SIGTERM", what, STOP_BUDGET_MS);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "%s: SIGTERM must end in exit status 0 (got status 0x%x; log %s)", what,
                  status, log);
    printf("%s: READY=1, then SIGTERM -> STOPPING=1 and exit 0 in %lld ms\n", what, took);
}

static char *conf_path(const char *name)
{
    static char path[1024];
    const char *dir = getenv("DEPLOY_CONF_DIR");
    ck_assert_msg(dir != NULL, "DEPLOY_CONF_DIR is not set (run through meson test)");
    snprintf(path, sizeof path, "%s/%s.yaml", dir, name);
    ck_assert_msg(access(path, R_OK) == 0, "%s is not readable", path);
    return path;
}

static void run_nameserver(const char *conf)
{
    char *dir = th_tmpdir();
    int port = th_free_port();
    char setport[64];
    snprintf(setport, sizeof setport, "listenPort=%d", port);
    char *argv[] = { (char *)th_bin("NAMESRV_BIN"), "-c", conf_path(conf), "--set", setport,
                     "--set", "bindAddress=127.0.0.1", NULL };
    ready_and_stop(conf, argv, port, dir);
    th_rmtree(dir);
    free(dir);
}

static void run_broker(const char *conf)
{
    char *dir = th_tmpdir();
    int port = th_free_port();
    int dead_ns = th_free_port(); /* nobody listens there: registration fails, locally */
    char setport[64], setns[96], setstore[600];
    snprintf(setport, sizeof setport, "listenPort=%d", port);
    snprintf(setns, sizeof setns, "namesrvAddr=127.0.0.1:%d", dead_ns);
    snprintf(setstore, sizeof setstore, "storePathRootDir=%s/store", dir);
    char *argv[] = { (char *)th_bin("BROKER_BIN"), "-c", conf_path(conf),
                     "--set", setport, "--set", setns, "--set", setstore,
                     "--set", "bindAddress=127.0.0.1", "--set", "brokerIP1=127.0.0.1",
                     "--set", "mapedFileSizeCommitLog=16777216", NULL };
    ready_and_stop(conf, argv, port, dir);
    th_rmtree(dir);
    free(dir);
}

START_TEST(nameservers)
{
    run_nameserver("namesrv-1");
    run_nameserver("namesrv-2");
}
END_TEST

START_TEST(brokers)
{
    run_broker("broker-a-master");
    run_broker("broker-a-slave");
    run_broker("broker-b-master");
    run_broker("broker-b-slave");
}
END_TEST

START_TEST(proxy)
{
    char *dir = th_tmpdir();
    int port = th_free_port();
    int rport = th_free_port();
    int dead_ns = th_free_port();
    char setport[64], setrport[64], setns[96];
    snprintf(setport, sizeof setport, "grpcServerPort=%d", port);
    snprintf(setrport, sizeof setrport, "remotingListenPort=%d", rport);
    snprintf(setns, sizeof setns, "namesrvAddr=127.0.0.1:%d", dead_ns);
    char *argv[] = { (char *)th_bin("PROXY_BIN"), "-c", conf_path("proxy"), "--set", setport,
                     "--set", setrport, "--set", setns, NULL };
    ready_and_stop("proxy", argv, port, dir);
    th_rmtree(dir);
    free(dir);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("deploy-notify");
    TCase *tc = tcase_create("notify");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, nameservers);
    tcase_add_test(tc, brokers);
    if (getenv("PROXY_BIN"))
        tcase_add_test(tc, proxy);
    else
        printf("proxy: not built, its READY/STOPPING contract is not checked\n");
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_set_fork_status(sr, CK_NOFORK);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
