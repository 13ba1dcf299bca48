/*
 * Line-oriented logger. Each line is formatted into a stack buffer and
 * written with one write(2) call per sink, which keeps lines atomic across
 * threads without a lock on the hot path.
 */
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static _Atomic int g_level = LOG_LVL_INFO;
static _Atomic int g_file_fd = -1;
static _Atomic int g_stderr = 1;
static char g_ident[32] = "";

static const char *const level_names[] = { "DEBUG", "INFO", "WARN", "ERROR" };

void log_set_level(enum log_level lvl) { atomic_store(&g_level, (int)lvl); }

enum log_level log_get_level(void) { return (enum log_level)atomic_load(&g_level); }

int log_level_parse(const char *s)
{
    static const char *const names[] = { "debug", "info", "warn", "error", "off" };
    for (int i = 0; i < 5; i++)
        if (strcasecmp(s, names[i]) == 0)
            return i;
    return -1;
}

int log_open_file(const char *path)
{
    int old = atomic_exchange(&g_file_fd, -1);
    if (old >= 0)
        close(old);
    if (!path)
        return 0;
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
    if (fd < 0)
        return -errno;
    atomic_store(&g_file_fd, fd);
    return 0;
}

void log_set_stderr(int enabled) { atomic_store(&g_stderr, enabled ? 1 : 0); }

void log_set_ident(const char *ident)
{
    snprintf(g_ident, sizeof g_ident, "%s", ident ? ident : "");
}

static void write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return; /* nowhere left to report a failing log sink */
        }
        p += w;
        n -= (size_t)w;
    }
}

void log_vwrite(enum log_level lvl, const char *file, int line, const char *fmt, va_list ap)
{
    if ((int)lvl < atomic_load(&g_level) || lvl >= LOG_LVL_OFF)
        return;
    char buf[2048];
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    localtime_r(&tv.tv_sec, &tm);
    const char *base = strrchr(file, '/');
    base = base ? base + 1 : file;
    int n = snprintf(buf, sizeof buf, "%04d-%02d-%02d %02d:%02d:%02d.%03ld %-5s %s%s%s:%d: ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, (long)(tv.tv_usec / 1000), level_names[lvl], g_ident,
                     g_ident[0] ? " " : "", base, line);
    if (n < 0)
        return;
    if ((size_t)n < sizeof buf) {
        int m = vsnprintf(buf + n, sizeof buf - (size_t)n, fmt, ap);
        if (m > 0)
            n += m;
    }
    if ((size_t)n >= sizeof buf - 1)
        n = (int)sizeof buf - 2;
    buf[n++] = '\n';
    if (atomic_load(&g_stderr))
        write_all(STDERR_FILENO, buf, (size_t)n);
    int fd = atomic_load(&g_file_fd);
    if (fd >= 0)
        write_all(fd, buf, (size_t)n);
}

void log_write(enum log_level lvl, const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_vwrite(lvl, file, line, fmt, ap);
    va_end(ap);
}
