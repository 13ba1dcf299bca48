/*
 * Store facade: open/recovery, put, dispatch, reads, queries, retention and
 * disk protection, tying together commitlog, consume queues and index (see
 * store.h). Threads and flushing live in flush.c.
 *
 * Queue offsets are assigned at put time from an in-memory table (one entry
 * per topic/queue, also owning its consume queue); the dispatch thread then
 * writes the consume-queue entry found in each record. After a restart the
 * table is rebuilt from the consume queues once recovery has re-dispatched
 * the tail of the log, so offsets continue exactly where the log ends.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "log.h"
#include "store_int.h"

#define LD(x) __atomic_load_n(&(x), __ATOMIC_ACQUIRE)
#define ST(x, v) __atomic_store_n(&(x), (v), __ATOMIC_RELEASE)

#define SCHEDULE_TOPIC "SCHEDULE_TOPIC_XXXX"
#define TOPIC_MAX 255

int64_t store_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t real_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t store_now(struct store *s) { return s->cfg.clock ? s->cfg.clock(s->cfg.clock_ud) : real_ms(); }

void store_config_defaults(struct store_config *c)
{
    memset(c, 0, sizeof(*c));
    c->root_dir = "store";
    c->commitlog_file_size = 1024ull * 1024 * 1024;
    c->commitlog_prefault_bytes = 8ull << 20;
    c->commitlog_mapped_trail_bytes = 8ull << 20;
    c->cq_entries_per_file = 300000;
    c->flush_type = STORE_ASYNC_FLUSH;
    c->flush_interval_commitlog_ms = 500;
    c->flush_commitlog_least_pages = 4;
    c->flush_commitlog_thorough_interval_ms = 10000;
    c->flush_interval_cq_ms = 1000;
    c->flush_cq_least_pages = 2;
    c->flush_cq_thorough_interval_ms = 60000;
    c->sync_flush_timeout_ms = 5000;
    c->file_reserved_time_h = 72;
    c->delete_when = "04";
    c->clean_resource_interval_ms = 10000;
    c->delete_files_batch_max = 10;
    c->disk_max_used_space_ratio = 75;
    c->disk_space_clean_forcibly_ratio = 85;
    c->disk_space_warning_level_ratio = 90;
    c->max_message_size = 4 * 1024 * 1024;
    c->access_message_in_memory_max_ratio = 40;
    c->store_host = "127.0.0.1:10911";
    c->message_index_enable = 1;
    c->max_hash_slot_num = 5000000;
    c->max_index_num = 20000000;
    c->message_delay_level = "1s 5s 10s 30s 1m 2m 3m 4m 5m 6m 7m 8m 9m 10m 20m 30m 1h 2h";
}

const char *store_put_status_str(enum store_put_status st)
{
    static const char *n[] = { "PUT_OK", "FLUSH_DISK_TIMEOUT", "FLUSH_SLAVE_TIMEOUT",
                               "SLAVE_NOT_AVAILABLE", "SERVICE_NOT_AVAILABLE",
                               "CREATE_MAPPED_FILE_FAILED", "MESSAGE_ILLEGAL",
                               "PROPERTIES_SIZE_EXCEEDED", "OS_PAGE_CACHE_BUSY", "UNKNOWN_ERROR",
                               "DISK_FULL" };
    return (unsigned)st < sizeof(n) / sizeof(n[0]) ? n[st] : "UNKNOWN";
}

const char *store_get_status_str(enum store_get_status st)
{
    static const char *n[] = { "FOUND", "NO_MATCHED_MESSAGE", "MESSAGE_WAS_REMOVING",
                               "OFFSET_FOUND_NULL", "OFFSET_OVERFLOW_BADLY", "OFFSET_OVERFLOW_ONE",
                               "OFFSET_TOO_SMALL", "NO_MATCHED_LOGIC_QUEUE", "NO_MESSAGE_IN_QUEUE" };
    return (unsigned)st < sizeof(n) / sizeof(n[0]) ? n[st] : "UNKNOWN";
}

static int parse_host(const char *str, struct msg_host *h)
{
    memset(h, 0, sizeof(*h));
    const char *colon = strrchr(str, ':');
    if (!colon)
        return -EINVAL;
    char ip[64];
    size_t n = (size_t)(colon - str);
    if (n == 0 || n >= sizeof(ip))
        return -EINVAL;
    memcpy(ip, str, n);
    ip[n] = '\0';
    if (ip[0] == '[' && ip[n - 1] == ']') {
        memmove(ip, ip + 1, n - 2);
        ip[n - 2] = '\0';
    }
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end || port <= 0 || port > 65535)
        return -EINVAL;
    h->port = (uint32_t)port;
    if (inet_pton(AF_INET, ip, h->ip) == 1)
        return 0;
    if (inet_pton(AF_INET6, ip, h->ip) == 1) {
        h->v6 = 1;
        return 0;
    }
    return -EINVAL;
}

static int parse_delay_levels(struct store *s, const char *str)
{
    s->delay_n = 0;
    const char *p = str;
    while (*p) {
        while (*p == ' ')
            p++;
        if (!*p)
            break;
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 0)
            return -EINVAL;
        int64_t mult;
        switch (*end) {
        case 's': mult = 1000; break;
        case 'm': mult = 60000; break;
        case 'h': mult = 3600000; break;
        case 'd': mult = 86400000; break;
        default: return -EINVAL;
        }
        if (s->delay_n == (int)(sizeof(s->delay_ms) / sizeof(s->delay_ms[0])))
            return -EINVAL;
        s->delay_ms[s->delay_n++] = v * mult;
        p = end + 1;
    }
    return 0;
}

static int hour_matches(const char *when, int hour)
{
    const char *p = when;
    while (p && *p) {
        char *end;
        long h = strtol(p, &end, 10);
        if (end != p && h == hour)
            return 1;
        p = strchr(p, ';');
        if (p)
            p++;
    }
    return 0;
}

static uint32_t qhash(const char *topic, size_t len, int32_t qid)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (uint8_t)topic[i]) * 16777619u;
    return (h ^ (uint32_t)qid) * 16777619u;
}

/* Caller holds qlock (read or write). */
static struct qent *qfind(struct store *s, const char *topic, size_t len, int32_t qid)
{
    uint32_t h = qhash(topic, len, qid);
    for (struct qent *q = s->qtab[h & (s->qcap - 1)]; q; q = q->next)
        if (q->hash == h && q->qid == qid && q->topic_len == len && memcmp(q->topic, topic, len) == 0)
            return q;
    return NULL;
}

/* Caller holds qlock for writing. */
static struct qent *qinsert(struct store *s, const char *topic, size_t len, int32_t qid)
{
    if (s->qcount + 1 > s->qcap * 3 / 4) {
        size_t nc = s->qcap * 2;
        struct qent **nt = calloc(nc, sizeof(*nt));
        if (!nt)
            return NULL;
        for (size_t i = 0; i < s->qcap; i++)
            for (struct qent *q = s->qtab[i], *nx; q; q = nx) {
                nx = q->next;
                q->next = nt[q->hash & (nc - 1)];
                nt[q->hash & (nc - 1)] = q;
            }
        free(s->qtab);
        s->qtab = nt;
        s->qcap = nc;
    }
    struct qent *q = calloc(1, sizeof(*q));
    if (!q || !(q->topic = malloc(len + 1))) {
        free(q);
        return NULL;
    }
    memcpy(q->topic, topic, len);
    q->topic[len] = '\0';
    q->topic_len = len;
    q->qid = qid;
    q->hash = qhash(topic, len, qid);
    q->next = s->qtab[q->hash & (s->qcap - 1)];
    s->qtab[q->hash & (s->qcap - 1)] = q;
    s->qcount++;
    return q;
}

/* Returns the entry (creating it and, if want_cq, its consume queue) with
 * qlock held for reading; the caller unlocks. NULL (unlocked) on failure. */
static struct qent *qacquire(struct store *s, const char *topic, size_t len, int32_t qid, int want_cq)
{
    pthread_rwlock_rdlock(&s->qlock);
    struct qent *q = qfind(s, topic, len, qid);
    if (q && (!want_cq || q->cq))
        return q;
    pthread_rwlock_unlock(&s->qlock);
    pthread_rwlock_wrlock(&s->qlock);
    q = qfind(s, topic, len, qid);
    if (!q)
        q = qinsert(s, topic, len, qid);
    if (q && want_cq && !q->cq) {
        int rc = cq_open(s->cq_root, q->topic, qid, s->cfg.cq_entries_per_file, &q->cq);
        if (rc < 0) {
            log_error("store: cannot create consume queue %s/%d: %s", q->topic, qid, strerror(-rc));
            q = NULL;
        } else {
            cq_set_mapped_keep(q->cq, store_cq_keep(s));
        }
    }
    pthread_rwlock_unlock(&s->qlock);
    if (!q)
        return NULL;
    pthread_rwlock_rdlock(&s->qlock);
    q = qfind(s, topic, len, qid);
    if (!q || (want_cq && !q->cq)) {
        pthread_rwlock_unlock(&s->qlock); /* deleted meanwhile */
        return NULL;
    }
    return q;
}

static int64_t tag_code(struct store *s, const struct msg_record *r)
{
    const char *v;
    size_t vl;
    if (r->topic_len == sizeof(SCHEDULE_TOPIC) - 1 && memcmp(r->topic, SCHEDULE_TOPIC, r->topic_len) == 0 &&
        msg_prop_get(r->props, r->props_len, MSG_PROP_DELAY_TIME_LEVEL, &v, &vl)) {
        long level = 0;
        for (size_t i = 0; i < vl && v[i] >= '0' && v[i] <= '9' && level < 1000; i++)
            level = level * 10 + (v[i] - '0');
        if (level > s->delay_n)
            level = s->delay_n;
        if (level > 0)
            return r->store_ts + s->delay_ms[level - 1];
    }
    if (msg_prop_get(r->props, r->props_len, MSG_PROP_TAGS, &v, &vl))
        return msg_tag_hash(v, vl);
    return 0;
}

static void index_key(struct store *s, const struct msg_record *r, const char *key, size_t klen)
{
    char buf[1024];
    if (r->topic_len + 1 + klen > sizeof(buf))
        return;
    memcpy(buf, r->topic, r->topic_len);
    buf[r->topic_len] = '#';
    memcpy(buf + r->topic_len + 1, key, klen);
    int rc = idx_put(s->idx, buf, r->topic_len + 1 + klen, r->phys_offset, r->store_ts, store_now(s));
    if (rc < 0)
        log_error("store: index put failed: %s", strerror(-rc));
}

/* Builds consume-queue and index entries for one record. */
static int dispatch_one(struct store *s, const struct msg_record *r)
{
    int tx = r->sysflag & MSG_SYSFLAG_TRANSACTION_MASK;
    if (tx == MSG_SYSFLAG_TRANSACTION_NOT || tx == MSG_SYSFLAG_TRANSACTION_COMMIT) {
        struct qent *q = qacquire(s, r->topic, r->topic_len, r->queue_id, 1);
        if (!q)
            return -ENOMEM;
        int64_t tag = tag_code(s, r);
        int rc = cq_put(q->cq, r->queue_offset, r->phys_offset, (int32_t)r->total_size, tag);
        if (rc < 0) {
            pthread_rwlock_unlock(&s->qlock);
            log_error("store: consume queue %s/%d put failed: %s", q->topic, r->queue_id, strerror(-rc));
            return rc;
        }
        if (rc == 0 && s->cfg.on_dispatch)
            s->cfg.on_dispatch(q->topic, r->queue_id, r->queue_offset, tag, s->cfg.on_dispatch_ud);
        pthread_rwlock_unlock(&s->qlock);
    }
    if (s->idx && tx != MSG_SYSFLAG_TRANSACTION_ROLLBACK) {
        const char *v;
        size_t vl;
        if (msg_prop_get(r->props, r->props_len, MSG_PROP_UNIQ_CLIENT_MESSAGE_ID_KEYIDX, &v, &vl) && vl)
            index_key(s, r, v, vl);
        if (msg_prop_get(r->props, r->props_len, MSG_PROP_KEYS, &v, &vl)) {
            size_t pos = 0, kl;
            const char *k;
            while (msg_keys_next(v, vl, &pos, &k, &kl))
                index_key(s, r, k, kl);
        }
    }
    ST(s->logics_ts, r->store_ts);
    return 0;
}

/* Dispatches committed records from s->reput up to the log end. Returns
 * the number of records dispatched. */
static long dispatch_available(struct store *s)
{
    long n = 0;
    for (;;) {
        int64_t reput = LD(s->reput);
        const uint8_t *p;
        size_t avail;
        struct mfile *seg;
        int rc = cl_locate(s->cl, reput, &p, &avail, &seg);
        if (rc == -ERANGE) {
            int64_t mn = cl_min_offset(s->cl);
            log_warn("store: dispatch behind the log minimum, skipping %lld -> %lld", (long long)reput,
                     (long long)mn);
            ST(s->reput, mn);
            continue;
        }
        if (rc < 0) {
            cl_set_reader_mark(s->cl, reput); /* all read */
            break;
        }
        size_t pos = 0;
        for (;;) {
            struct msg_record r;
            if (avail - pos < 8)
                break;
            int d = msg_record_decode(p + pos, avail - pos, &r, 0);
            if (d > 0) {
                while (dispatch_one(s, &r) < 0 && !LD(s->stopping))
                    usleep(100000); /* resource trouble: retry, never skip */
                pos += (size_t)d;
                ST(s->reput, reput + (int64_t)pos);
                n++;
                continue;
            }
            if (d == 0) {
                ST(s->reput, cl_roll_next(s->cl, reput + (int64_t)pos));
                break;
            }
            if (d == -EAGAIN)
                break;
            log_error("store: dispatch found a corrupt record at %lld; skipping to the next segment",
                      (long long)(reput + (int64_t)pos));
            ST(s->reput, cl_roll_next(s->cl, reput + (int64_t)pos));
            break;
        }
        int64_t after = LD(s->reput);
        cl_set_reader_mark(s->cl, after);
        mf_unref(seg);
        if (after == reput)
            break;
    }
    return n;
}

/* The dispatch thread polls every DISPATCH_POLL_US while the log is busy
 * (no wake-up syscall on the put path) and falls back to sleeping on
 * disp_cv, signalled by puts, after DISPATCH_IDLE_MS without new records. */
#define DISPATCH_POLL_US 1000
#define DISPATCH_IDLE_MS 50

static void *dispatch_main(void *arg)
{
    struct store *s = arg;
    int64_t last_work = store_mono_ms();
    for (;;) {
        long n = dispatch_available(s);
        if (n > 0)
            last_work = store_mono_ms();
        flush_expire_waiters(s);
        if (LD(s->stopping) && LD(s->reput) >= cl_max_offset(s->cl))
            break;
        if (n > 0)
            continue;
        if (!LD(s->stopping) && store_mono_ms() - last_work < DISPATCH_IDLE_MS) {
            usleep(DISPATCH_POLL_US);
            continue;
        }
        pthread_mutex_lock(&s->disp_mu);
        __atomic_store_n(&s->disp_sleeping, 1, __ATOMIC_SEQ_CST);
        /* pairs with the fence in wake_dispatch: either the put sees the
         * flag, or this check sees the put's commit */
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
        if (LD(s->reput) >= cl_max_offset(s->cl) && !LD(s->stopping)) {
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            ts.tv_nsec += 100 * 1000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&s->disp_cv, &s->disp_mu, &ts);
        }
        ST(s->disp_sleeping, 0);
        pthread_mutex_unlock(&s->disp_mu);
    }
    return NULL;
}

static void wake_dispatch(struct store *s)
{
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (__atomic_load_n(&s->disp_sleeping, __ATOMIC_SEQ_CST)) {
        pthread_mutex_lock(&s->disp_mu);
        pthread_cond_signal(&s->disp_cv);
        pthread_mutex_unlock(&s->disp_mu);
    }
}

static int load_queues(struct store *s, int64_t log_end, int abnormal)
{
    DIR *td = opendir(s->cq_root);
    if (!td)
        return -errno;
    struct dirent *te;
    int rc = 0;
    while (rc == 0 && (te = readdir(td))) {
        if (te->d_name[0] == '.')
            continue;
        char tpath[4096];
        snprintf(tpath, sizeof(tpath), "%s/%s", s->cq_root, te->d_name);
        DIR *qd = opendir(tpath);
        if (!qd)
            continue;
        struct dirent *qe;
        while (rc == 0 && (qe = readdir(qd))) {
            char *end;
            long qid = strtol(qe->d_name, &end, 10);
            if (qe->d_name[0] == '.' || *end || qid < 0 || qid > INT32_MAX)
                continue;
            struct qent *q = qinsert(s, te->d_name, strlen(te->d_name), (int32_t)qid);
            if (!q) {
                rc = -ENOMEM;
                break;
            }
            rc = cq_open(s->cq_root, q->topic, (int32_t)qid, s->cfg.cq_entries_per_file, &q->cq);
            if (rc < 0) {
                log_error("store: cannot load consume queue %s/%ld: %s", q->topic, qid, strerror(-rc));
                break;
            }
            rc = cq_recover(q->cq, log_end, abnormal);
            cq_set_mapped_keep(q->cq, store_cq_keep(s));
        }
        closedir(qd);
    }
    closedir(td);
    return rc;
}

static int read_checkpoint(struct store *s)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/checkpoint", s->root);
    s->cp_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (s->cp_fd < 0)
        return -errno;
    uint8_t page[24];
    ssize_t r = pread(s->cp_fd, page, sizeof(page), 0);
    if (r == (ssize_t)sizeof(page)) {
        s->cp_physic = (int64_t)rd_u64be(page);
        s->cp_logics = (int64_t)rd_u64be(page + 8);
        s->cp_index = (int64_t)rd_u64be(page + 16);
    }
    return 0;
}

static void free_store(struct store *s)
{
    if (s->qtab) {
        for (size_t i = 0; i < s->qcap; i++)
            for (struct qent *q = s->qtab[i], *nx; q; q = nx) {
                nx = q->next;
                cq_close(q->cq, 0);
                free(q->topic);
                free(q);
            }
        free(s->qtab);
    }
    idx_close(s->idx);
    cl_close(s->cl);
    if (s->cp_fd >= 0)
        close(s->cp_fd);
    if (s->lock_fd >= 0)
        close(s->lock_fd);
    free(s->fw);
    free(s->root);
    free(s->cq_root);
    free(s->delete_when);
    free(s->host_str);
    free(s->delay_str);
    pthread_mutex_destroy(&s->put_lock);
    pthread_rwlock_destroy(&s->qlock);
    pthread_mutex_destroy(&s->disp_mu);
    pthread_cond_destroy(&s->disp_cv);
    pthread_mutex_destroy(&s->fw_mu);
    pthread_cond_destroy(&s->fw_cv);
    pthread_mutex_destroy(&s->svc_mu);
    pthread_cond_destroy(&s->svc_cv);
    pthread_mutex_destroy(&s->cp_mu);
    free(s);
}

static int validate_config(const struct store_config *c)
{
    if (!c->root_dir || !*c->root_dir) { log_error("store: storePathRootDir is empty"); return -EINVAL; }
    if (c->commitlog_file_size < 4096 || c->commitlog_file_size % 4096) {
        log_error("store: mapedFileSizeCommitLog must be a multiple of 4096"); return -EINVAL;
    }
    if (c->commitlog_prefault_bytes > (1ull << 30) || c->commitlog_mapped_trail_bytes > (1ull << 40)) {
        log_error("store: commitlog prefault window (at most 1 GiB) or mapped trail (at most 1 TiB) too large");
        return -EINVAL;
    }
    if (c->cq_entries_per_file < 1) { log_error("store: mapedFileSizeConsumeQueue too small"); return -EINVAL; }
    if (c->max_message_size < 1 || c->max_message_size + 512 > c->commitlog_file_size) {
        log_error("store: maxMessageSize must be smaller than the commitlog segment"); return -EINVAL;
    }
    if (c->flush_interval_commitlog_ms <= 0 || c->flush_interval_cq_ms <= 0 ||
        c->sync_flush_timeout_ms <= 0 || c->clean_resource_interval_ms <= 0) {
        log_error("store: flush/clean intervals and syncFlushTimeout must be positive"); return -EINVAL;
    }
    if (c->access_message_in_memory_max_ratio < 0 || c->access_message_in_memory_max_ratio > 100) {
        log_error("store: accessMessageInMemoryMaxRatio must be 0..100"); return -EINVAL;
    }
    if (c->message_index_enable && (c->max_hash_slot_num < 1 || c->max_index_num < 2)) {
        log_error("store: maxHashSlotNum/maxIndexNum too small"); return -EINVAL;
    }
    return 0;
}

static void cond_init_mono(pthread_cond_t *cv)
{
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(cv, &a);
    pthread_condattr_destroy(&a);
}

/* Physical memory times ratio percent, read once: what a consumer may lag
 * behind the log's end before reads are steered to a slave. Unknown memory
 * size: never. */
static int64_t slave_read_gap(int ratio)
{
    long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
    if (pages <= 0 || psz <= 0)
        return INT64_MAX;
    uint64_t mem = (uint64_t)pages * (uint64_t)psz;
    return (int64_t)(mem / 100 * (uint64_t)ratio + mem % 100 * (uint64_t)ratio / 100);
}

int store_open(const struct store_config *cfg, struct store **out)
{
    int rc = validate_config(cfg);
    if (rc < 0)
        return rc;
    struct store *s = calloc(1, sizeof(*s));
    if (!s)
        return -ENOMEM;
    s->cfg = *cfg;
    s->cp_fd = s->lock_fd = -1;
    pthread_mutex_init(&s->put_lock, NULL);
    pthread_rwlock_init(&s->qlock, NULL);
    pthread_mutex_init(&s->disp_mu, NULL);
    cond_init_mono(&s->disp_cv);
    pthread_mutex_init(&s->fw_mu, NULL);
    cond_init_mono(&s->fw_cv);
    pthread_mutex_init(&s->svc_mu, NULL);
    cond_init_mono(&s->svc_cv);
    pthread_mutex_init(&s->cp_mu, NULL);
    s->writable = 1;
    s->slave_read_gap = slave_read_gap(cfg->access_message_in_memory_max_ratio);
    s->qcap = 64;
    s->qtab = calloc(s->qcap, sizeof(*s->qtab));
    s->root = strdup(cfg->root_dir);
    s->delete_when = strdup(cfg->delete_when ? cfg->delete_when : "04");
    s->host_str = strdup(cfg->store_host ? cfg->store_host : "127.0.0.1:10911");
    s->delay_str = strdup(cfg->message_delay_level ? cfg->message_delay_level : "");
    if (!s->qtab || !s->root || !s->delete_when || !s->host_str || !s->delay_str) {
        free_store(s);
        return -ENOMEM;
    }
    s->cfg.root_dir = s->root;
    s->cfg.delete_when = s->delete_when;
    s->cfg.store_host = s->host_str;
    s->cfg.message_delay_level = s->delay_str;
    if (parse_host(s->host_str, &s->store_host) < 0) {
        log_error("store: invalid store host '%s' (want ip:port)", s->host_str);
        free_store(s);
        return -EINVAL;
    }
    if (parse_delay_levels(s, s->delay_str) < 0) {
        log_error("store: invalid messageDelayLevel '%s'", s->delay_str);
        free_store(s);
        return -EINVAL;
    }
    char path[4096];
    if ((rc = mf_mkdir_p(s->root)) < 0) {
        log_error("store: cannot create %s: %s", s->root, strerror(-rc));
        free_store(s);
        return rc;
    }
    snprintf(path, sizeof(path), "%s/lock", s->root);
    s->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (s->lock_fd < 0 || flock(s->lock_fd, LOCK_EX | LOCK_NB) < 0) {
        rc = errno == EWOULDBLOCK ? -EBUSY : -errno;
        log_error("store: cannot lock %s: %s", path,
                  rc == -EBUSY ? "another process uses this store" : strerror(-rc));
        free_store(s);
        return rc;
    }
    snprintf(path, sizeof(path), "%s/abort", s->root);
    int abnormal = access(path, F_OK) == 0;
    if ((rc = read_checkpoint(s)) < 0) {
        log_error("store: cannot open the checkpoint: %s", strerror(-rc));
        free_store(s);
        return rc;
    }
    snprintf(path, sizeof(path), "%s/commitlog", s->root);
    if ((rc = cl_open(path, (size_t)cfg->commitlog_file_size, &s->cl)) < 0) {
        log_error("store: cannot open the commitlog in %s: %s", path, strerror(-rc));
        free_store(s);
        return rc;
    }
    if (abnormal)
        log_warn("store: %s/abort exists: the last shutdown was not clean, recovering", s->root);
    int64_t min_ts = s->cp_physic;
    if (s->cp_logics < min_ts)
        min_ts = s->cp_logics;
    if (cfg->message_index_enable && s->cp_index < min_ts)
        min_ts = s->cp_index;
    int64_t scan_start;
    if ((rc = cl_recover(s->cl, abnormal, min_ts - 3000, &scan_start)) < 0) {
        free_store(s);
        return rc;
    }
    int64_t log_end = cl_max_offset(s->cl), log_min = cl_min_offset(s->cl);
    cl_start_allocator(s->cl, (size_t)cfg->commitlog_prefault_bytes,
                       (size_t)cfg->commitlog_mapped_trail_bytes);
    int64_t idx_rebuild = INT64_MAX;
    if (cfg->message_index_enable) {
        snprintf(path, sizeof(path), "%s/index", s->root);
        if ((rc = idx_open(path, cfg->max_hash_slot_num, cfg->max_index_num, &s->idx)) < 0 ||
            (rc = idx_recover(s->idx, abnormal, s->cp_index, &idx_rebuild)) < 0) {
            log_error("store: cannot open the index in %s: %s", path, strerror(-rc));
            free_store(s);
            return rc;
        }
    }
    snprintf(path, sizeof(path), "%s/consumequeue", s->root);
    s->cq_root = strdup(path);
    if (!s->cq_root || (mkdir(path, 0755) < 0 && errno != EEXIST)) {
        rc = s->cq_root ? -errno : -ENOMEM;
        free_store(s);
        return rc;
    }
    if ((rc = load_queues(s, log_end, abnormal)) < 0) {
        free_store(s);
        return rc;
    }
    /* where to re-dispatch from: after a crash from the recovery scan start;
     * after a clean stop from the end of what the consume queues hold */
    int64_t reput;
    if (abnormal) {
        reput = scan_start;
    } else {
        reput = log_min;
        for (size_t i = 0; i < s->qcap; i++)
            for (struct qent *q = s->qtab[i]; q; q = q->next) {
                int64_t e = cq_last_phy_end(q->cq);
                if (e > reput)
                    reput = e;
            }
    }
    if (idx_rebuild < reput)
        reput = idx_rebuild;
    if (reput < log_min)
        reput = log_min;
    if (reput > log_end)
        reput = log_end;
    s->reput = reput;
    long redone = dispatch_available(s);
    if (redone)
        log_info("store: re-dispatched %ld records from offset %lld", redone, (long long)reput);
    for (size_t i = 0; i < s->qcap; i++)
        for (struct qent *q = s->qtab[i]; q; q = q->next) {
            cq_delete_below(q->cq, log_min);
            q->next_put = cq_max_offset(q->cq);
        }
    s->physic_ts = s->cp_physic;
    s->logics_ts = s->cp_logics;
    s->last_clean_min = log_min;
    snprintf(path, sizeof(path), "%s/abort", s->root);
    int afd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (afd < 0) {
        rc = -errno;
        log_error("store: cannot create %s: %s", path, strerror(errno));
        free_store(s);
        return rc;
    }
    fsync(afd);
    close(afd);
    int dfd = open(s->root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    if (flush_logics(s, 1) < 0)
        log_warn("store: initial consume queue flush failed");
    store_check_disk(s);
    rc = pthread_create(&s->disp_thr, NULL, dispatch_main, s);
    if (rc == 0) {
        s->threads |= 1;
        rc = -flush_start(s);
    }
    if (rc != 0) {
        log_error("store: cannot start store threads: %s", strerror(rc));
        __atomic_store_n(&s->stopping, 1, __ATOMIC_RELEASE);
        if (s->threads & 1) {
            pthread_mutex_lock(&s->disp_mu);
            pthread_cond_signal(&s->disp_cv);
            pthread_mutex_unlock(&s->disp_mu);
            pthread_join(s->disp_thr, NULL);
        }
        flush_stop(s);
        free_store(s);
        return -rc;
    }
    log_info("store: opened %s: commitlog [%lld, %lld), %zu queues, %s", s->root, (long long)log_min,
             (long long)log_end, s->qcount, cfg->flush_type == STORE_SYNC_FLUSH ? "SYNC_FLUSH" : "ASYNC_FLUSH");
    *out = s;
    return 0;
}

void store_close(struct store *s)
{
    if (!s)
        return;
    __atomic_store_n(&s->stopping, 1, __ATOMIC_RELEASE);
    if (s->threads & 1) {
        pthread_mutex_lock(&s->disp_mu);
        pthread_cond_signal(&s->disp_cv);
        pthread_mutex_unlock(&s->disp_mu);
        pthread_join(s->disp_thr, NULL);
        s->threads &= ~1;
    }
    flush_stop(s);
    int64_t ts = 0;
    int ok = cl_flush(s->cl, 0, &ts) >= 0;
    if (ts)
        s->physic_ts = ts;
    ok = ok && flush_logics(s, 1) == 0;
    char path[4096];
    snprintf(path, sizeof(path), "%s/abort", s->root);
    if (ok) {
        if (unlink(path) < 0)
            log_error("store: cannot remove %s: %s", path, strerror(errno));
    } else {
        log_error("store: final flush failed; leaving %s so the next start recovers", path);
    }
    log_info("store: closed %s at commitlog offset %lld", s->root, (long long)cl_max_offset(s->cl));
    free_store(s);
}

static enum store_put_status fail(struct store_put_result *r, enum store_put_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static enum store_put_status fail(struct store_put_result *r, enum store_put_status st, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->remark, sizeof(r->remark), fmt, ap);
    va_end(ap);
    r->status = st;
    return st;
}

static enum store_put_status check_msg(struct store *s, const struct store_msg *m, struct store_put_result *r)
{
    size_t tl = m->topic ? strlen(m->topic) : 0;
    if (tl == 0 || tl > TOPIC_MAX)
        return fail(r, STORE_PUT_MESSAGE_ILLEGAL, "topic length %zu not in 1..%d", tl, TOPIC_MAX);
    if (m->queue_id < 0)
        return fail(r, STORE_PUT_MESSAGE_ILLEGAL, "negative queue id %d", m->queue_id);
    if (m->props_len > MSG_PROPERTIES_MAX)
        return fail(r, STORE_PUT_PROPERTIES_SIZE_EXCEEDED, "properties length %u > %d", m->props_len,
                    MSG_PROPERTIES_MAX);
    if (m->body_len > s->cfg.max_message_size)
        return fail(r, STORE_PUT_MESSAGE_ILLEGAL, "message body %u bytes exceeds maxMessageSize %u",
                    m->body_len, s->cfg.max_message_size);
    if (m->body_len && !m->body)
        return fail(r, STORE_PUT_MESSAGE_ILLEGAL, "missing body");
    return STORE_PUT_OK;
}

/* Items are produced by an iterator so arrays and encoded batches share the
 * same locked append path. */
struct put_src {
    const struct store_msg *msgs;   /* array form */
    const struct store_msg *tmpl;   /* encoded-batch form */
    const uint8_t *batch;
    size_t batch_len, pos;
    size_t i, n;
};

static int src_next(struct put_src *src, struct store_msg *m)
{
    if (src->msgs) {
        if (src->i >= src->n)
            return 0;
        *m = src->msgs[src->i++];
        return 1;
    }
    struct msg_batch_item it;
    int rc = msg_batch_next(src->batch, src->batch_len, &src->pos, &it);
    if (rc <= 0)
        return rc;
    *m = *src->tmpl;
    m->flag = it.flag;
    m->body = it.body;
    m->body_len = it.body_len;
    m->props = it.props;
    m->props_len = it.props_len;
    src->i++;
    return 1;
}

static void src_rewind(struct put_src *src) { src->i = 0; src->pos = 0; }

static int32_t effective_sysflag(struct store *s, const struct store_msg *m)
{
    int32_t f = m->sysflag & ~(MSG_SYSFLAG_BORNHOST_V6 | MSG_SYSFLAG_STOREHOST_V6);
    if (m->born_host.v6)
        f |= MSG_SYSFLAG_BORNHOST_V6;
    if (s->store_host.v6)
        f |= MSG_SYSFLAG_STOREHOST_V6;
    return f;
}

static enum store_put_status put_many(struct store *s, struct put_src *src, struct store_put_result *r,
                                      int64_t *phys_out, size_t phys_cap)
{
    memset(r, 0, sizeof(*r));
    struct store_msg m;
    memset(&m, 0, sizeof(m));
    const char *topic = NULL;
    int32_t qid = 0;
    size_t total = 0, count = 0;
    int rc;
    while ((rc = src_next(src, &m)) == 1) {
        enum store_put_status st = check_msg(s, &m, r);
        if (st != STORE_PUT_OK)
            return st;
        if (!topic) {
            topic = m.topic;
            qid = m.queue_id;
        } else if (strcmp(topic, m.topic) != 0 || qid != m.queue_id) {
            return fail(r, STORE_PUT_MESSAGE_ILLEGAL, "a batch must target one topic and queue");
        }
        total += msg_record_size(m.body_len, (uint32_t)strlen(m.topic), m.props_len, effective_sysflag(s, &m));
        count++;
    }
    if (rc < 0)
        return fail(r, STORE_PUT_MESSAGE_ILLEGAL, "malformed batch body");
    if (count == 0)
        return fail(r, STORE_PUT_MESSAGE_ILLEGAL, "empty batch");
    if (phys_out && phys_cap < count)
        return fail(r, STORE_PUT_MESSAGE_ILLEGAL, "batch of %zu messages exceeds the offsets array", count);
    if (total + MSG_END_FILE_MIN_BLANK > cl_seg_size(s->cl) || total > UINT32_MAX)
        return fail(r, STORE_PUT_MESSAGE_ILLEGAL, "batch of %zu bytes does not fit a commitlog segment", total);
    if (!LD(s->writable))
        return fail(r, STORE_PUT_DISK_FULL, "disk full: usage %.1f%% above diskSpaceWarningLevelRatio %d%%",
                    s->disk_ratio * 100.0, s->cfg.disk_space_warning_level_ratio);
    int32_t crc0 = count == 1 ? msg_body_crc(m.body, m.body_len) : 0;
    size_t tlen = strlen(topic);

    uint32_t qh = qhash(topic, tlen, qid);
    pthread_mutex_lock(&s->put_lock);
    struct qent *q = s->put_cache[qh & 255];
    if (!q || q->hash != qh || q->qid != qid || q->topic_len != tlen || memcmp(q->topic, topic, tlen) != 0) {
        q = qacquire(s, topic, tlen, qid, 0);
        if (!q) {
            pthread_mutex_unlock(&s->put_lock);
            return fail(r, STORE_PUT_UNKNOWN_ERROR, "out of memory");
        }
        pthread_rwlock_unlock(&s->qlock); /* q stays valid under the put lock */
        s->put_cache[qh & 255] = q;
    }
    int64_t store_ts = store_now(s);
    uint8_t *dst;
    int64_t phys;
    rc = cl_reserve(s->cl, (uint32_t)total, &dst, &phys);
    if (rc < 0) {
        pthread_mutex_unlock(&s->put_lock);
        log_error("store: cannot allocate commitlog space: %s", strerror(-rc));
        return fail(r, rc == -E2BIG ? STORE_PUT_MESSAGE_ILLEGAL : STORE_PUT_CREATE_MAPPED_FILE_FAILED,
                    "cannot create commitlog segment: %s", strerror(-rc));
    }
    src_rewind(src);
    size_t off = 0, i = 0;
    int64_t qoff0 = q->next_put, qoff = qoff0;
    while (src_next(src, &m) == 1) {
        int32_t sysflag = effective_sysflag(s, &m);
        int tx = sysflag & MSG_SYSFLAG_TRANSACTION_MASK;
        int in_queue = tx == MSG_SYSFLAG_TRANSACTION_NOT || tx == MSG_SYSFLAG_TRANSACTION_COMMIT;
        struct msg_record rec = {
            .body_crc = count == 1 ? crc0 : msg_body_crc(m.body, m.body_len),
            .queue_id = m.queue_id,
            .flag = m.flag,
            .queue_offset = in_queue ? qoff : 0,
            .phys_offset = phys + (int64_t)off,
            .sysflag = sysflag,
            .born_ts = m.born_ts,
            .born_host = m.born_host,
            .store_ts = store_ts,
            .store_host = s->store_host,
            .reconsume_times = m.reconsume_times,
            .prepared_tx_offset = m.prepared_tx_offset,
            .body = m.body,
            .body_len = m.body_len,
            .topic = m.topic,
            .topic_len = (uint32_t)tlen,
            .props = m.props,
            .props_len = m.props_len,
        };
        int w = msg_record_encode(dst + off, total - off, &rec);
        if (w <= 0) {
            /* cannot happen after the checks above; the space stays unused
             * garbage-free because nothing was committed */
            pthread_mutex_unlock(&s->put_lock);
            log_error("store: record encoding failed unexpectedly: %s", strerror(-w));
            return fail(r, STORE_PUT_UNKNOWN_ERROR, "record encoding failed");
        }
        if (phys_out)
            phys_out[i] = rec.phys_offset;
        if (i == 0)
            r->queue_offset = rec.queue_offset;
        if (in_queue)
            qoff++;
        off += (size_t)w;
        i++;
    }
    q->next_put = qoff;
    cl_commit(s->cl, store_ts);
    pthread_mutex_unlock(&s->put_lock);
    (void)qoff0;

    __atomic_add_fetch(&s->put_count, count, __ATOMIC_RELAXED);
    __atomic_add_fetch(&s->put_bytes, total, __ATOMIC_RELAXED);
    wake_dispatch(s);
    r->status = STORE_PUT_OK;
    r->phys_offset = phys;
    r->end_offset = phys + (int64_t)total;
    r->size = (uint32_t)total;
    r->count = (uint32_t)count;
    r->store_ts = store_ts;
    msg_offset_id_encode(&s->store_host, phys, r->msg_id);
    return STORE_PUT_OK;
}

enum store_put_status store_put(struct store *s, const struct store_msg *m, struct store_put_result *r)
{
    struct put_src src = { .msgs = m, .n = 1 };
    return put_many(s, &src, r, NULL, 0);
}

enum store_put_status store_put_batch(struct store *s, const struct store_msg *msgs, size_t n,
                                      struct store_put_result *r, int64_t *phys_offsets)
{
    struct put_src src = { .msgs = msgs, .n = n };
    return put_many(s, &src, r, phys_offsets, n);
}

enum store_put_status store_put_encoded_batch(struct store *s, const struct store_msg *tmpl,
                                              const uint8_t *batch, size_t len,
                                              struct store_put_result *r, int64_t *phys_offsets,
                                              size_t phys_cap)
{
    struct put_src src = { .tmpl = tmpl, .batch = batch, .batch_len = len };
    return put_many(s, &src, r, phys_offsets, phys_cap);
}

enum store_put_status store_put_wait(struct store *s, const struct store_msg *m, struct store_put_result *r)
{
    enum store_put_status st = store_put(s, m, r);
    if (st == STORE_PUT_OK && s->cfg.flush_type == STORE_SYNC_FLUSH) {
        st = store_flush_wait_blocking(s, r->end_offset);
        r->status = st;
        if (st != STORE_PUT_OK)
            snprintf(r->remark, sizeof(r->remark), "stored, but the disk flush did not complete in %d ms",
                     s->cfg.sync_flush_timeout_ms);
    }
    return st;
}

/* Page-cache folios reach 2 MiB (with a large readahead window ext4 and
 * xfs build them that big), and a fault on any page of a folio maps all of
 * it, so what a read faulted in is only known to whole folios. */
#define FOLIO_MAX (2 << 20)

void store_hold_release(struct store_hold *h)
{
    for (int i = 0; i < h->n; i++) {
        struct mfile *f = h->seg[i];
        /* Out to whole folios: the neighbours the faults mapped with the
         * span are just as cold. A sequential reader (a consumer catching
         * up) reads the folio holding the end of its span next, so that one
         * stays, and the one before the span goes too (it was left last
         * time): dropping what the next read faults straight back costs a
         * catching-up consumer a sixth of its speed. */
        if (h->cold_hi > h->cold_lo) {
            int64_t lo = (h->cold_lo - f->from) & ~(int64_t)(FOLIO_MAX - 1);
            int64_t hi = (h->cold_hi - f->from + FOLIO_MAX - 1) & ~(int64_t)(FOLIO_MAX - 1);
            if (h->sequential) {
                lo -= FOLIO_MAX;
                hi = (h->cold_hi - f->from) & ~(int64_t)(FOLIO_MAX - 1);
            }
            mf_release(f, lo, hi);
        }
        mf_unref(f);
    }
    h->n = 0;
    h->cold_lo = h->cold_hi = 0;
    h->sequential = 0;
}

/* Notes [off, off + len) in the hold's cold span when it lies more than
 * the mapped trail behind the writer. */
static void hold_note(struct store *s, struct store_hold *h, int64_t off, int64_t len)
{
    uint64_t trail = s->cfg.commitlog_mapped_trail_bytes;
    if (trail == 0 || off + len > cl_max_offset(s->cl) - (int64_t)trail)
        return;
    if (h->cold_hi <= h->cold_lo) {
        h->cold_lo = off;
        h->cold_hi = off + len;
        return;
    }
    if (off < h->cold_lo)
        h->cold_lo = off;
    if (off + len > h->cold_hi)
        h->cold_hi = off + len;
}

/* Adds seg to the hold (taking over the caller's reference). Returns 0, or
 * -ENOSPC if the hold is full (the reference is dropped). */
static int hold_add(struct store_hold *h, struct mfile *seg)
{
    for (int i = 0; i < h->n; i++)
        if (h->seg[i] == seg) {
            mf_unref(seg);
            return 0;
        }
    if (h->n == STORE_HOLD_MAX) {
        mf_unref(seg);
        return -ENOSPC;
    }
    h->seg[h->n++] = seg;
    return 0;
}

/* A consume-queue entry must point at a record of exactly that size. */
static int record_sane(const uint8_t *p, size_t avail, int32_t size)
{
    if (size < 8 || (size_t)size > avail)
        return 0;
    uint32_t magic = rd_u32be(p + 4);
    return rd_u32be(p) == (uint32_t)size && (magic == MSG_MAGIC_CODE || magic == MSG_MAGIC_CODE_V2);
}

enum store_get_status store_get(struct store *s, const struct store_get_req *req, struct store_get_result *res)
{
    memset(res, 0, sizeof(*res));
    __atomic_add_fetch(&s->get_count, 1, __ATOMIC_RELAXED);
    size_t tl = req->topic ? strlen(req->topic) : 0;
    pthread_rwlock_rdlock(&s->qlock);
    struct qent *q = tl ? qfind(s, req->topic, tl, req->queue_id) : NULL;
    if (!q || !q->cq) {
        pthread_rwlock_unlock(&s->qlock);
        res->status = STORE_GET_NO_MATCHED_LOGIC_QUEUE;
        res->next_begin_offset = 0;
        return res->status;
    }
    int64_t off = req->offset;
    int64_t mn = cq_min_offset(q->cq), mx = cq_max_offset(q->cq);
    res->min_offset = mn;
    res->max_offset = mx;
    if (mx == 0) {
        res->status = STORE_GET_NO_MESSAGE_IN_QUEUE;
        res->next_begin_offset = 0;
    } else if (off < mn) {
        res->status = STORE_GET_OFFSET_TOO_SMALL;
        res->next_begin_offset = mn;
    } else if (off == mx) {
        res->status = STORE_GET_OFFSET_OVERFLOW_ONE;
        res->next_begin_offset = off;
    } else if (off > mx) {
        res->status = STORE_GET_OFFSET_OVERFLOW_BADLY;
        res->next_begin_offset = mn == 0 ? mn : mx;
    } else {
        const uint8_t *ents;
        uint32_t n;
        struct mfile *cqseg;
        int rc = cq_read(q->cq, off, &ents, &n, &cqseg);
        if (rc < 0) {
            res->status = STORE_GET_OFFSET_FOUND_NULL;
            int64_t per = s->cfg.cq_entries_per_file;
            res->next_begin_offset = off + per - off % per;
        } else {
            res->status = STORE_GET_NO_MATCHED_MESSAGE;
            int64_t log_min = cl_min_offset(s->cl);
            uint32_t scan_max = req->max_count * CQ_UNIT > 16000 ? req->max_count * CQ_UNIT : 16000;
            uint32_t i = 0;
            int64_t last_phy = -1;
            for (; i < n && i < scan_max; i++) {
                const uint8_t *e = ents + (size_t)i * CQ_UNIT;
                int64_t phy = (int64_t)rd_u64be(e);
                int32_t size = (int32_t)rd_u32be(e + 8);
                int64_t tag = (int64_t)rd_u64be(e + 12);
                last_phy = phy;
                if (res->count >= req->max_count ||
                    (res->count && req->max_bytes && res->total_bytes + (uint64_t)size > req->max_bytes))
                    break;
                if (size == INT32_MAX)
                    continue;
                if (req->filter && !req->filter(tag, req->filter_ud)) {
                    if (res->count == 0)
                        res->status = STORE_GET_NO_MATCHED_MESSAGE;
                    continue;
                }
                const uint8_t *p;
                size_t avail;
                struct mfile *seg;
                if (phy < log_min || (rc = cl_locate(s->cl, phy, &p, &avail, &seg)) == -ERANGE) {
                    if (res->count == 0)
                        res->status = STORE_GET_MESSAGE_WAS_REMOVING;
                    continue;
                }
                if (rc < 0)
                    break; /* not yet visible in the log */
                if (!record_sane(p, avail, size)) {
                    mf_unref(seg);
                    log_error("store: consume queue %s/%d entry %lld does not match the log at %lld; skipped",
                              q->topic, q->qid, (long long)(off + i), (long long)phy);
                    continue;
                }
                if (hold_add(&res->hold, seg) < 0)
                    break;
                hold_note(s, &res->hold, phy, size);
                res->hold.sequential = 1;
                struct store_view *v = &req->views[res->count++];
                v->data = p;
                v->len = (uint32_t)size;
                v->phys_offset = phy;
                v->queue_offset = off + i;
                v->tag_hash = tag;
                res->total_bytes += (uint64_t)size;
                res->status = STORE_GET_FOUND;
            }
            res->next_begin_offset = off + i;
            res->suggest_pulling_from_slave = last_phy >= 0 && cl_max_offset(s->cl) - last_phy > s->slave_read_gap;
            mf_unref(cqseg);
        }
    }
    pthread_rwlock_unlock(&s->qlock);
    return res->status;
}

enum store_lookup_status store_lookup(struct store *s, int64_t phys, struct store_view *v, struct store_hold *h)
{
    const uint8_t *p;
    size_t avail;
    struct mfile *seg;
    if (phys < 0)
        return STORE_LOOKUP_NOT_FOUND;
    if (phys < cl_min_offset(s->cl))
        return STORE_LOOKUP_OFFSET_MOVED;
    int rc = cl_locate(s->cl, phys, &p, &avail, &seg);
    if (rc == -ERANGE)
        return STORE_LOOKUP_OFFSET_MOVED;
    if (rc < 0)
        return STORE_LOOKUP_NOT_FOUND;
    struct msg_record r;
    int d = msg_record_decode(p, avail, &r, 1);
    if (d <= 0 || r.phys_offset != phys) {
        mf_unref(seg);
        return STORE_LOOKUP_NOT_FOUND;
    }
    if (hold_add(h, seg) < 0)
        return STORE_LOOKUP_NOT_FOUND;
    hold_note(s, h, phys, d);
    v->data = p;
    v->len = (uint32_t)d;
    v->phys_offset = phys;
    v->queue_offset = r.queue_offset;
    v->tag_hash = 0;
    return STORE_LOOKUP_OK;
}

enum store_lookup_status store_lookup_copy(struct store *s, int64_t phys, void *buf, size_t cap, size_t *len)
{
    struct store_hold h = STORE_HOLD_INIT;
    struct store_view v;
    enum store_lookup_status st = store_lookup(s, phys, &v, &h);
    if (st == STORE_LOOKUP_OK) {
        *len = v.len;
        if (v.len > cap)
            st = STORE_LOOKUP_NOT_FOUND;
        else
            memcpy(buf, v.data, v.len);
    }
    store_hold_release(&h);
    return st;
}

static int record_has_key(const struct msg_record *r, const char *key, size_t kl)
{
    const char *v;
    size_t vl;
    if (msg_prop_get(r->props, r->props_len, MSG_PROP_UNIQ_CLIENT_MESSAGE_ID_KEYIDX, &v, &vl) && vl == kl &&
        memcmp(v, key, kl) == 0)
        return 1;
    if (msg_prop_get(r->props, r->props_len, MSG_PROP_KEYS, &v, &vl)) {
        size_t pos = 0, l;
        const char *k;
        while (msg_keys_next(v, vl, &pos, &k, &l))
            if (l == kl && memcmp(k, key, kl) == 0)
                return 1;
    }
    return 0;
}

int store_query_by_key(struct store *s, const char *topic, const char *key, size_t max, int64_t begin_ms,
                       int64_t end_ms, int64_t *phys_out)
{
    if (!s->idx)
        return -ENOTSUP;
    size_t tl = strlen(topic), kl = strlen(key);
    if (tl + 1 + kl > 1024 || max == 0)
        return 0;
    char buf[1024];
    memcpy(buf, topic, tl);
    buf[tl] = '#';
    memcpy(buf + tl + 1, key, kl);
    size_t cap = max * 2 + 32;
    int64_t *cand = malloc(cap * sizeof(*cand));
    if (!cand)
        return -ENOMEM;
    size_t nc = idx_query(s->idx, buf, tl + 1 + kl, begin_ms, end_ms, cand, cap);
    size_t got = 0;
    for (size_t i = 0; i < nc && got < max; i++) {
        int dup = 0;
        for (size_t j = 0; j < got; j++)
            dup |= phys_out[j] == cand[i];
        if (dup)
            continue;
        struct store_hold h = STORE_HOLD_INIT;
        struct store_view v;
        if (store_lookup(s, cand[i], &v, &h) != STORE_LOOKUP_OK)
            continue;
        struct msg_record r;
        if (msg_record_decode(v.data, v.len, &r, 0) > 0 && r.topic_len == tl && memcmp(r.topic, topic, tl) == 0 &&
            r.store_ts >= begin_ms && r.store_ts <= end_ms && record_has_key(&r, key, kl))
            phys_out[got++] = cand[i];
        store_hold_release(&h);
    }
    free(cand);
    return (int)got;
}

int store_query_by_uniq_id(struct store *s, const char *topic, const char *uniq_id, int64_t *phys)
{
    int n = store_query_by_key(s, topic, uniq_id, 1, 0, INT64_MAX, phys);
    if (n < 0)
        return n;
    return n == 1 ? 0 : -ENOENT;
}

int store_query_by_offset_id(struct store *s, const char *msg_id, int64_t *phys)
{
    struct msg_host h;
    int64_t off;
    if (msg_offset_id_decode(msg_id, strlen(msg_id), &h, &off) < 0)
        return -EINVAL;
    if (h.port != s->store_host.port || h.v6 != s->store_host.v6 ||
        memcmp(h.ip, s->store_host.ip, h.v6 ? 16 : 4) != 0)
        return -ESRCH;
    struct store_hold hold = STORE_HOLD_INIT;
    struct store_view v;
    enum store_lookup_status st = store_lookup(s, off, &v, &hold);
    store_hold_release(&hold);
    if (st != STORE_LOOKUP_OK)
        return -ENOENT;
    *phys = off;
    return 0;
}

static struct cq *queue_cq(struct store *s, const char *topic, int32_t qid)
{
    struct qent *q = qfind(s, topic, strlen(topic), qid);
    return q ? q->cq : NULL;
}

int64_t store_min_queue_offset(struct store *s, const char *topic, int32_t queue_id)
{
    pthread_rwlock_rdlock(&s->qlock);
    struct cq *c = queue_cq(s, topic, queue_id);
    int64_t r = c ? cq_min_offset(c) : 0;
    pthread_rwlock_unlock(&s->qlock);
    return r;
}

int64_t store_max_queue_offset(struct store *s, const char *topic, int32_t queue_id)
{
    pthread_rwlock_rdlock(&s->qlock);
    struct cq *c = queue_cq(s, topic, queue_id);
    int64_t r = c ? cq_max_offset(c) : 0;
    pthread_rwlock_unlock(&s->qlock);
    return r;
}

/* Store time of queue entry qoff (qlock held); -1 if unreadable. */
static int64_t entry_time(struct store *s, struct cq *c, int64_t qoff)
{
    int64_t phy, tag;
    int32_t size;
    if (cq_entry(c, qoff, &phy, &size, &tag) < 0 || size == INT32_MAX)
        return -1;
    const uint8_t *p;
    size_t avail;
    struct mfile *seg;
    if (cl_locate(s->cl, phy, &p, &avail, &seg) < 0)
        return -1;
    struct msg_record r;
    int64_t ts = msg_record_decode(p, avail, &r, 0) > 0 ? r.store_ts : -1;
    mf_unref(seg);
    return ts;
}

int64_t store_message_store_time(struct store *s, const char *topic, int32_t queue_id, int64_t qoff)
{
    pthread_rwlock_rdlock(&s->qlock);
    struct cq *c = queue_cq(s, topic, queue_id);
    int64_t r = c ? entry_time(s, c, qoff) : -1;
    pthread_rwlock_unlock(&s->qlock);
    return r;
}

int64_t store_offset_by_time(struct store *s, const char *topic, int32_t queue_id, int64_t ts_ms)
{
    pthread_rwlock_rdlock(&s->qlock);
    struct cq *c = queue_cq(s, topic, queue_id);
    int64_t result = 0;
    if (c) {
        int64_t lo = cq_min_offset(c), hi = cq_max_offset(c);
        /* first offset in [lo, hi) with time >= ts; unreadable entries
         * (blank or removed) count as older */
        int64_t a = lo, b = hi;
        while (a < b) {
            int64_t mid = a + (b - a) / 2;
            int64_t t = entry_time(s, c, mid);
            if (t >= 0 && t >= ts_ms)
                b = mid;
            else
                a = mid + 1;
        }
        result = a;
    }
    pthread_rwlock_unlock(&s->qlock);
    return result;
}

int64_t store_commitlog_min_offset(struct store *s) { return cl_min_offset(s->cl); }
int64_t store_commitlog_max_offset(struct store *s) { return cl_max_offset(s->cl); }

void store_get_stats(struct store *s, struct store_stats *st)
{
    memset(st, 0, sizeof(*st));
    st->commitlog_min_offset = cl_min_offset(s->cl);
    st->commitlog_max_offset = cl_max_offset(s->cl);
    st->commitlog_flushed_offset = cl_flushed_offset(s->cl);
    st->dispatched_offset = LD(s->reput);
    st->commitlog_disk_bytes = (uint64_t)cl_seg_count(s->cl) * cl_seg_size(s->cl);
    pthread_mutex_lock(&s->svc_mu);
    st->disk_used_ratio = s->disk_ratio;
    st->put_tps = s->tps;
    pthread_mutex_unlock(&s->svc_mu);
    st->writable = LD(s->writable);
    st->put_count = LD(s->put_count);
    st->put_bytes = LD(s->put_bytes);
    st->get_count = LD(s->get_count);
    pthread_rwlock_rdlock(&s->qlock);
    st->queue_count = s->qcount;
    pthread_rwlock_unlock(&s->qlock);
}

int store_delete_topic(struct store *s, const char *topic)
{
    size_t tl = strlen(topic);
    int n = 0;
    pthread_mutex_lock(&s->put_lock);
    memset(s->put_cache, 0, sizeof(s->put_cache));
    pthread_rwlock_wrlock(&s->qlock);
    for (size_t i = 0; i < s->qcap; i++) {
        struct qent **pp = &s->qtab[i];
        while (*pp) {
            struct qent *q = *pp;
            if (q->topic_len == tl && memcmp(q->topic, topic, tl) == 0) {
                *pp = q->next;
                cq_close(q->cq, 1);
                free(q->topic);
                free(q);
                s->qcount--;
                n++;
            } else {
                pp = &q->next;
            }
        }
    }
    pthread_rwlock_unlock(&s->qlock);
    pthread_mutex_unlock(&s->put_lock);
    if (n)
        log_info("store: deleted %d consume queue(s) of topic %s", n, topic);
    return n;
}

void store_list_queues(struct store *s, store_queue_fn fn, void *ud)
{
    pthread_rwlock_rdlock(&s->qlock);
    for (size_t i = 0; i < s->qcap; i++)
        for (struct qent *q = s->qtab[i]; q; q = q->next) {
            int64_t mn = q->cq ? cq_min_offset(q->cq) : 0, mx = q->cq ? cq_max_offset(q->cq) : 0;
            if (fn(q->topic, q->qid, mn, mx, ud)) {
                pthread_rwlock_unlock(&s->qlock);
                return;
            }
        }
    pthread_rwlock_unlock(&s->qlock);
}

static int default_disk_probe(const char *path, double *ratio, void *ud)
{
    struct statvfs v;
    if (statvfs(path, &v) < 0)
        return -errno;
    if (v.f_blocks == 0) {
        *ratio = 0;
        return 0;
    }
    *ratio = (double)(v.f_blocks - v.f_bfree) / (double)v.f_blocks;
    return 0;
}

void store_check_disk(struct store *s)
{
    double ratio;
    int rc = s->cfg.disk_probe ? s->cfg.disk_probe(s->root, &ratio, s->cfg.disk_probe_ud)
                               : default_disk_probe(s->root, &ratio, NULL);
    if (rc < 0) {
        log_warn("store: disk usage probe failed: %s", strerror(-rc));
        return;
    }
    pthread_mutex_lock(&s->svc_mu);
    s->disk_ratio = ratio;
    pthread_mutex_unlock(&s->svc_mu);
    int full = ratio * 100.0 > s->cfg.disk_space_warning_level_ratio;
    int was_writable = LD(s->writable);
    if (full && was_writable) {
        ST(s->writable, 0);
        log_error("store: disk full: usage %.1f%% above diskSpaceWarningLevelRatio %d%%; refusing writes",
                  ratio * 100.0, s->cfg.disk_space_warning_level_ratio);
    } else if (!full && !was_writable) {
        ST(s->writable, 1);
        log_info("store: disk usage %.1f%% back below %d%%; accepting writes again", ratio * 100.0,
                 s->cfg.disk_space_warning_level_ratio);
    }
}

int store_cleanup_pass(struct store *s, int manual)
{
    store_check_disk(s);
    pthread_mutex_lock(&s->svc_mu);
    double ratio = s->disk_ratio;
    pthread_mutex_unlock(&s->svc_mu);
    int64_t now = store_now(s);
    time_t t = (time_t)(now / 1000);
    struct tm tm;
    localtime_r(&t, &tm);
    int time_ok = manual || hour_matches(s->delete_when, tm.tm_hour);
    int space = ratio * 100.0 > s->cfg.disk_max_used_space_ratio;
    int forcibly = ratio * 100.0 > s->cfg.disk_space_clean_forcibly_ratio;
    int64_t limit = cl_flushed_offset(s->cl);
    int64_t reput = LD(s->reput);
    if (reput < limit)
        limit = reput;
    int64_t expire = (int64_t)s->cfg.file_reserved_time_h * 3600 * 1000;
    int deleted = 0;
    int64_t bytes = 0;
    if (time_ok || space || forcibly)
        deleted = cl_delete_expired(s->cl, now, expire, 0, s->cfg.delete_files_batch_max, limit, &bytes);
    if (forcibly && deleted < s->cfg.delete_files_batch_max) {
        int64_t fb = 0;
        int64_t first = cl_min_offset(s->cl);
        int fd = cl_delete_expired(s->cl, now, expire, 1, s->cfg.delete_files_batch_max - deleted, limit, &fb);
        if (fd)
            log_warn("store: disk usage %.1f%% above diskSpaceCleanForciblyRatio %d%%: deleted %d unexpired "
                     "commitlog segment(s), %lld MiB of messages from offset %lld to %lld dropped",
                     ratio * 100.0, s->cfg.disk_space_clean_forcibly_ratio, fd, (long long)(fb >> 20),
                     (long long)first, (long long)cl_min_offset(s->cl));
        deleted += fd;
        bytes += fb;
    }
    int64_t mn = cl_min_offset(s->cl);
    if (mn != s->last_clean_min) {
        pthread_rwlock_rdlock(&s->qlock);
        for (size_t i = 0; i < s->qcap; i++)
            for (struct qent *q = s->qtab[i]; q; q = q->next)
                if (q->cq)
                    cq_delete_below(q->cq, mn);
        pthread_rwlock_unlock(&s->qlock);
        if (s->idx)
            idx_delete_below(s->idx, mn);
        s->last_clean_min = mn;
    }
    if (deleted)
        log_info("store: retention removed %d commitlog segment(s) (%lld MiB); minimum offset now %lld", deleted,
                 (long long)(bytes >> 20), (long long)mn);
    return deleted;
}

int store_cleanup_now(struct store *s)
{
    pthread_mutex_lock(&s->cp_mu); /* serialises with a concurrent housekeeping pass */
    pthread_mutex_unlock(&s->cp_mu);
    return store_cleanup_pass(s, 1);
}

ssize_t store_read_raw(struct store *s, int64_t off, size_t n, const uint8_t **p, struct store_hold *h)
{
    size_t avail;
    struct mfile *seg;
    int rc = cl_locate(s->cl, off, p, &avail, &seg);
    if (rc == -ERANGE)
        return -ERANGE;
    if (rc < 0)
        return 0;
    if (hold_add(h, seg) < 0)
        return -ENOSPC;
    size_t got = avail < n ? avail : n;
    hold_note(s, h, off, (int64_t)got);
    h->sequential = 1;
    return (ssize_t)got;
}

ssize_t store_append_raw(struct store *s, int64_t off, const uint8_t *data, size_t len)
{
    if (!LD(s->writable))
        return -ENOSPC;
    pthread_mutex_lock(&s->put_lock);
    int64_t end = cl_max_offset(s->cl);
    if (off != end) {
        pthread_mutex_unlock(&s->put_lock);
        return -EINVAL;
    }
    size_t seg = cl_seg_size(s->cl), used = 0;
    int64_t last_ts = 0;
    while (used < len) {
        int64_t pos = (end + (int64_t)used) % (int64_t)seg;
        size_t room = seg - (size_t)pos;
        size_t chunk = len - used < room ? len - used : room;
        struct msg_record r;
        int d = msg_record_decode(data + used, chunk, &r, 1);
        if (d == -EAGAIN)
            break;
        if (d < 0 || (d > 0 && r.phys_offset != end + (int64_t)used) ||
            (d == 0 && r.total_size != room)) {
            pthread_mutex_unlock(&s->put_lock);
            log_error("store: raw append: invalid record at offset %lld", (long long)(end + (int64_t)used));
            return -EINVAL;
        }
        size_t step = d > 0 ? (size_t)d : room;
        if (d == 0 && chunk < room)
            break; /* the blank marker is taken together with the whole tail */
        int rc = cl_append_raw(s->cl, end + (int64_t)used, data + used, d > 0 ? step : 8, step);
        if (rc < 0) {
            pthread_mutex_unlock(&s->put_lock);
            return rc;
        }
        if (d > 0) {
            int tx = r.sysflag & MSG_SYSFLAG_TRANSACTION_MASK;
            if (tx == MSG_SYSFLAG_TRANSACTION_NOT || tx == MSG_SYSFLAG_TRANSACTION_COMMIT) {
                struct qent *q = qacquire(s, r.topic, r.topic_len, r.queue_id, 0);
                if (q) {
                    if (r.queue_offset + 1 > q->next_put)
                        q->next_put = r.queue_offset + 1;
                    pthread_rwlock_unlock(&s->qlock);
                }
            }
            last_ts = r.store_ts;
        }
        used += step;
    }
    if (used) {
        cl_commit(s->cl, last_ts);
        wake_dispatch(s);
    }
    pthread_mutex_unlock(&s->put_lock);
    return (ssize_t)used;
}
