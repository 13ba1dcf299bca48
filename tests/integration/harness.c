/* Integration-test helpers; see harness.h. */
#include "harness.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

char *th_tmpdir(void)
{
    char *p = strdup("/tmp/rmqtest-XXXXXX");
    if (!p || !mkdtemp(p)) {
        perror("mkdtemp");
        abort();
    }
    return p;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb; (void)flag; (void)ftw;
    remove(path);
    return 0;
}

void th_rmtree(const char *path)
{
    if (path && strncmp(path, "/tmp/rmqtest-", 13) == 0)
        nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

int th_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0)
        abort();
    socklen_t sl = sizeof sa;
    getsockname(fd, (struct sockaddr *)&sa, &sl);
    close(fd);
    return ntohs(sa.sin_port);
}

const char *th_bin(const char *env)
{
    const char *p = getenv(env);
    if (!p) {
        fprintf(stderr, "environment variable %s is not set (run through meson test)\n", env);
        abort();
    }
    return p;
}

pid_t th_spawn(char *const argv[], const char *logpath)
{
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0)
        abort();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
        if (logpath) {
            int fd = open(logpath, O_WRONLY | O_CREAT | O_APPEND, 0644);
            if (fd >= 0) {
                dup2(fd, 1);
                dup2(fd, 2);
                close(fd);
            }
        }
        execv(argv[0], argv);
        perror("execv");
        _exit(127);
    }
    return pid;
}

bool th_wait_port(int port, int timeout_ms)
{
    long long end = th_now_ms() + timeout_ms;
    while (th_now_ms() < end) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                                  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        int rc = connect(fd, (struct sockaddr *)&sa, sizeof sa);
        close(fd);
        if (rc == 0)
            return true;
        usleep(20 * 1000);
    }
    return false;
}

int th_stop(pid_t pid, int timeout_ms)
{
    if (pid <= 0)
        return -1;
    kill(pid, SIGTERM);
    long long end = th_now_ms() + timeout_ms;
    int status;
    while (th_now_ms() < end) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            return status;
        usleep(10 * 1000);
    }
    th_kill(pid);
    return -1;
}

void th_kill(pid_t pid)
{
    if (pid <= 0)
        return;
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

void th_write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (!f)
        abort();
    fputs(text, f);
    fclose(f);
}

bool th_file_contains(const char *path, const char *needle)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    char *line = NULL;
    size_t cap = 0;
    bool found = false;
    while (!found && getline(&line, &cap, f) > 0)
        found = strstr(line, needle) != NULL;
    free(line);
    fclose(f);
    return found;
}

long long th_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

bool th_ns_start(struct th_daemon *d, const char *const *extra)
{
    char *dir = th_tmpdir();
    snprintf(d->dir, sizeof d->dir, "%s", dir);
    free(dir);
    d->port = th_free_port();
    snprintf(d->addr, sizeof d->addr, "127.0.0.1:%d", d->port);
    snprintf(d->log, sizeof d->log, "%s/ns.log", d->dir);
    char port_set[64];
    snprintf(port_set, sizeof port_set, "listenPort=%d", d->port);
    char *argv[6 + 2 * TH_NS_MAX_EXTRA];
    int n = 0;
    argv[n++] = (char *)th_bin("NAMESRV_BIN");
    argv[n++] = "--set";
    argv[n++] = port_set;
    argv[n++] = "--set";
    argv[n++] = "bindAddress=127.0.0.1";
    for (int i = 0; i < TH_NS_MAX_EXTRA && extra && extra[i]; i++) {
        argv[n++] = "--set";
        argv[n++] = (char *)extra[i];
    }
    argv[n] = NULL;
    d->pid = th_spawn(argv, d->log);
    return th_wait_port(d->port, 5000);
}
