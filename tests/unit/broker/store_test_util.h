/* Helpers shared by the store unit tests: temp dirs and a small config. */
#ifndef STORE_TEST_UTIL_H
#define STORE_TEST_UTIL_H

#define _XOPEN_SOURCE 700
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "store.h"

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb; (void)flag; (void)ftw;
    return remove(p);
}

static inline void rm_rf(const char *dir) { nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS); }

static inline char *make_tmp(void)
{
    char *d = strdup("/tmp/store_test_XXXXXX");
    if (!d || !mkdtemp(d))
        abort();
    return d;
}

static inline void small_config(struct store_config *c, const char *root)
{
    store_config_defaults(c);
    c->root_dir = root;
    c->commitlog_file_size = 64 * 1024;
    c->cq_entries_per_file = 100;
    c->max_message_size = 16 * 1024;
    c->max_hash_slot_num = 64;
    c->max_index_num = 200;
    c->flush_interval_commitlog_ms = 20;
    c->flush_interval_cq_ms = 50;
    c->store_host = "10.0.0.1:10911";
}

static inline void sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}

/* Waits until everything in the log reached the consume queues. */
static inline void wait_dispatch(struct store *s)
{
    for (int i = 0; i < 5000; i++) {
        struct store_stats st;
        store_get_stats(s, &st);
        if (st.dispatched_offset >= st.commitlog_max_offset)
            return;
        sleep_ms(1);
    }
}

static inline void fill_msg(struct store_msg *m, const char *topic, int qid, void *body, uint32_t len,
                            const char *props, uint32_t plen)
{
    memset(m, 0, sizeof(*m));
    m->topic = topic;
    m->queue_id = qid;
    m->body = body;
    m->body_len = len;
    m->props = props;
    m->props_len = plen;
    m->born_ts = 1700000000000LL;
    m->born_host.ip[0] = 127;
    m->born_host.ip[3] = 1;
    m->born_host.port = 40000;
}

/* Resident bytes of this process's mappings of files whose path contains
 * part (from /proc/self/smaps). */
static inline long smaps_rss(const char *part)
{
    FILE *f = fopen("/proc/self/smaps", "r");
    if (!f)
        abort();
    char line[4096];
    int in = 0;
    long kb = 0, total = 0;
    while (fgets(line, sizeof(line), f)) {
        unsigned long a, b;
        if (sscanf(line, "%lx-%lx ", &a, &b) == 2 && strchr(line, ' ')) {
            in = strstr(line, part) != NULL;
            continue;
        }
        if (in && sscanf(line, "Rss: %ld kB", &kb) == 1)
            total += kb * 1024;
    }
    fclose(f);
    return total;
}

#endif
