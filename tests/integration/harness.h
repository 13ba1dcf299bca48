/*
 * Helpers for integration tests that run the real daemons: temporary data
 * directories, free loopback ports, spawning with a death signal so a daemon
 * never outlives a failed test, waiting for a port, stopping.
 */
#ifndef RMQ_TEST_HARNESS_H
#define RMQ_TEST_HARNESS_H

#include <stdbool.h>
#include <sys/types.h>

/* Creates /tmp/rmqtest-XXXXXX; returns a static-lifetime heap string. */
char *th_tmpdir(void);
/* Removes a directory tree created by th_tmpdir. */
void th_rmtree(const char *path);
/* A loopback TCP port that was free a moment ago. */
int th_free_port(void);
/* Path of a built binary from an environment variable set by meson. */
const char *th_bin(const char *env);
/* Starts argv[0] with stdout/stderr appended to logpath (NULL: inherit). The
 * child gets SIGKILL if the test process dies. Returns the pid. */
pid_t th_spawn(char *const argv[], const char *logpath);
/* Waits until 127.0.0.1:port accepts connections. */
bool th_wait_port(int port, int timeout_ms);
/* SIGTERM, then wait up to timeout_ms; returns the exit status as from
 * waitpid (or -1 if it had to be killed). */
int th_stop(pid_t pid, int timeout_ms);
/* SIGKILL and reap. */
void th_kill(pid_t pid);
/* Writes a text file. */
void th_write_file(const char *path, const char *text);
/* True if the file contains the string. */
bool th_file_contains(const char *path, const char *needle);
/* Monotonic milliseconds. */
long long th_now_ms(void);

/* A daemon a test runs: pid, client port (and HA port for brokers that
 * replicate, else 0), "127.0.0.1:<port>", data directory and log file. The
 * test owns the struct; th_rmtree(dir) removes what the daemon left. */
struct th_daemon {
    pid_t pid;
    int port, ha_port;
    char addr[64];
    char dir[64];
    char log[128];
};

/* Starts a nameserver on a free loopback port in a fresh directory, logging
 * to <dir>/ns.log; extra: NULL-terminated key=value list (NULL: none, at
 * most TH_NS_MAX_EXTRA) passed as --set. Returns whether it listens within 5 s. */
#define TH_NS_MAX_EXTRA 4
bool th_ns_start(struct th_daemon *d, const char *const *extra);

#endif
