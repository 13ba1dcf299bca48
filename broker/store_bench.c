/*
 * store_bench: throughput of the message store with 1 KiB messages.
 *   ASYNC_FLUSH puts from one thread, SYNC_FLUSH puts from many threads
 *   (group commit), cached reads through store_get, and the raw
 *   write+fdatasync rate of the disk for comparison.
 * Usage: store_bench [dir] [async_count] [sync_threads] [sync_count]
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "store.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static char body[1024];
static const char props[] = "TAGS\001TagA\002KEYS\001bench\002";

static void make_msg(struct store_msg *m, int qid)
{
    memset(m, 0, sizeof(*m));
    m->topic = "BenchTopic";
    m->queue_id = qid;
    m->body = body;
    m->body_len = sizeof(body);
    m->props = props;
    m->props_len = sizeof(props) - 1;
    m->born_ts = 1700000000000LL;
    m->born_host.ip[0] = 127;
    m->born_host.ip[3] = 1;
    m->born_host.port = 1234;
}

static int open_in(const char *dir, enum store_flush_type ft, struct store **s)
{
    struct store_config c;
    store_config_defaults(&c);
    c.root_dir = dir;
    c.flush_type = ft;
    int rc = store_open(&c, s);
    if (rc < 0)
        fprintf(stderr, "store_open(%s): %s\n", dir, strerror(-rc));
    return rc;
}

struct sync_arg {
    struct store *s;
    long n;
    long fails;
};

static void *sync_putter(void *p)
{
    struct sync_arg *a = p;
    struct store_msg m;
    make_msg(&m, 1);
    for (long i = 0; i < a->n; i++) {
        struct store_put_result r;
        if (store_put_wait(a->s, &m, &r) != STORE_PUT_OK)
            a->fails++;
    }
    return NULL;
}

static void fdatasync_rate(const char *dir)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/fsync_probe", dir);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        perror("open");
        return;
    }
    char page[4096];
    memset(page, 'x', sizeof(page));
    long n = 0;
    double t0 = now_s();
    while (now_s() - t0 < 2.0) {
        if (pwrite(fd, page, sizeof(page), (off_t)(n % 1024) * 4096) != (ssize_t)sizeof(page) || fdatasync(fd) < 0) {
            perror("write/fdatasync");
            break;
        }
        n++;
    }
    double dt = now_s() - t0;
    printf("raw 4 KiB write+fdatasync: %.0f/s (%.1f us each)\n", n / dt, dt * 1e6 / (double)n);
    close(fd);
    unlink(path);
}

int main(int argc, char **argv)
{
    char tmpl[] = "/tmp/store_bench_XXXXXX";
    const char *base = argc > 1 ? argv[1] : mkdtemp(tmpl);
    long async_n = argc > 2 ? atol(argv[2]) : 1000000;
    int threads = argc > 3 ? atoi(argv[3]) : 64;
    long sync_n = argc > 4 ? atol(argv[4]) : 200000;
    if (!base || async_n <= 0 || threads <= 0 || sync_n <= 0) {
        fprintf(stderr, "usage: store_bench [dir] [async_count] [sync_threads] [sync_count]\n");
        return 2;
    }
    log_set_level(LOG_LVL_WARN);
    memset(body, 'b', sizeof(body));
    char dir[4096];

    snprintf(dir, sizeof(dir), "%s/async", base);
    struct store *s;
    if (open_in(dir, STORE_ASYNC_FLUSH, &s) < 0)
        return 1;
    struct store_msg m;
    make_msg(&m, 0);
    double t0 = now_s();
    for (long i = 0; i < async_n; i++) {
        struct store_put_result r;
        if (store_put(s, &m, &r) != STORE_PUT_OK) {
            fprintf(stderr, "put failed: %s %s\n", store_put_status_str(r.status), r.remark);
            return 1;
        }
    }
    double dt = now_s() - t0;
    printf("ASYNC_FLUSH put, 1 thread, 1 KiB: %ld msgs in %.2fs = %.0f msgs/s (%.0f MiB/s)\n", async_n, dt,
           async_n / dt, async_n * 1.0 * sizeof(body) / dt / 1048576.0);
    while (store_max_queue_offset(s, "BenchTopic", 0) < async_n)
        usleep(1000);
    struct store_view v[32];
    long got = 0;
    int64_t off = 0;
    t0 = now_s();
    while (off < async_n) {
        struct store_get_req req = { "BenchTopic", 0, off, 32, 0, NULL, NULL, v };
        struct store_get_result res;
        if (store_get(s, &req, &res) != STORE_GET_FOUND) {
            fprintf(stderr, "get at %lld: %s\n", (long long)off, store_get_status_str(res.status));
            store_hold_release(&res.hold);
            break;
        }
        for (uint32_t i = 0; i < res.count; i++)
            got += v[i].data[v[i].len - 1] != 0;
        off = res.next_begin_offset;
        store_hold_release(&res.hold);
    }
    dt = now_s() - t0;
    printf("cached reads (store_get, 32 per call): %ld msgs in %.2fs = %.0f msgs/s\n", got, dt, got / dt);
    store_close(s);

    snprintf(dir, sizeof(dir), "%s/sync", base);
    if (open_in(dir, STORE_SYNC_FLUSH, &s) < 0)
        return 1;
    pthread_t *th = calloc((size_t)threads, sizeof(*th));
    struct sync_arg *args = calloc((size_t)threads, sizeof(*args));
    t0 = now_s();
    for (int i = 0; i < threads; i++) {
        args[i].s = s;
        args[i].n = sync_n / threads;
        pthread_create(&th[i], NULL, sync_putter, &args[i]);
    }
    long fails = 0, total = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(th[i], NULL);
        fails += args[i].fails;
        total += args[i].n;
    }
    dt = now_s() - t0;
    printf("SYNC_FLUSH put+wait, %d threads, 1 KiB: %ld msgs in %.2fs = %.0f msgs/s (%ld not OK)\n", threads,
           total, dt, total / dt, fails);
    store_close(s);
    free(th);
    free(args);
    fdatasync_rate(base);
    printf("data left in %s (remove it when done)\n", base);
    return 0;
}
