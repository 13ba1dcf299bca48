/*
 * Logging shared by every daemon and tool: one line per event, with a
 * timestamp, level and source, written with a single write(2) so lines from
 * different threads never interleave. Goes to stderr (systemd captures it)
 * and, if opened, to a file as well.
 */
#ifndef RMQ_LOG_H
#define RMQ_LOG_H

#include <stdarg.h>

enum log_level { LOG_LVL_DEBUG = 0, LOG_LVL_INFO, LOG_LVL_WARN, LOG_LVL_ERROR, LOG_LVL_OFF };

/* Sets the minimum level that is written. Thread-safe, may change at runtime. */
void log_set_level(enum log_level lvl);
enum log_level log_get_level(void);
/* Parses "debug", "info", "warn", "error", "off"; returns -1 if unknown. */
int log_level_parse(const char *s);

/* Opens (append) a log file in addition to stderr; NULL closes it.
 * Returns 0 or -errno. Called at start-up only. */
int log_open_file(const char *path);
/* Stops writing to stderr (useful for tests and tools that print tables). */
void log_set_stderr(int enabled);
/* Sets a short tag printed on every line, e.g. "broker". Copied. */
void log_set_ident(const char *ident);

void log_write(enum log_level lvl, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void log_vwrite(enum log_level lvl, const char *file, int line, const char *fmt, va_list ap);

#define log_debug(...) log_write(LOG_LVL_DEBUG, __FILE__, __LINE__, __VA_ARGS__)
#define log_info(...)  log_write(LOG_LVL_INFO, __FILE__, __LINE__, __VA_ARGS__)
#define log_warn(...)  log_write(LOG_LVL_WARN, __FILE__, __LINE__, __VA_ARGS__)
#define log_error(...) log_write(LOG_LVL_ERROR, __FILE__, __LINE__, __VA_ARGS__)

#endif
