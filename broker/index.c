/*
 * Index files (see index.h). Header values are mirrored in memory (atomics)
 * so queries never read a half-updated big-endian field.
 */
#include "index.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "log.h"
#include "message.h"
#include "mapped_file.h"

#define HDR 40
#define ENTRY 20

struct idx_file {
    struct mfile *mf;
    int64_t begin_ts, end_ts, begin_phy, end_phy; /* atomics */
    uint32_t slot_count, count;                    /* atomics; count starts at 1 */
};

struct idx_service {
    char *dir;
    uint32_t slots, max_entries;
    size_t file_size;
    pthread_mutex_t lock;
    struct idx_file **v;
    size_t n, cap;
};

#define LD(x) __atomic_load_n(&(x), __ATOMIC_ACQUIRE)
#define ST(x, v) __atomic_store_n(&(x), (v), __ATOMIC_RELEASE)

static void hdr_write(struct idx_file *f)
{
    uint8_t *h = f->mf->base;
    wr_u64be(h, (uint64_t)f->begin_ts);
    wr_u64be(h + 8, (uint64_t)f->end_ts);
    wr_u64be(h + 16, (uint64_t)f->begin_phy);
    wr_u64be(h + 24, (uint64_t)f->end_phy);
    wr_u32be(h + 32, f->slot_count);
    wr_u32be(h + 36, f->count);
}

static int push(struct idx_service *s, struct idx_file *f)
{
    if (s->n == s->cap) {
        size_t nc = s->cap ? s->cap * 2 : 8;
        struct idx_file **nv = realloc(s->v, nc * sizeof(*nv));
        if (!nv)
            return -ENOMEM;
        s->v = nv;
        s->cap = nc;
    }
    s->v[s->n++] = f;
    return 0;
}

static int cmp_name(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int idx_open(const char *dir, uint32_t slots, uint32_t max_entries, struct idx_service **out)
{
    if (slots == 0 || max_entries < 2)
        return -EINVAL;
    if (mkdir(dir, 0755) < 0 && errno != EEXIST)
        return -errno;
    struct idx_service *s = calloc(1, sizeof(*s));
    if (!s || !(s->dir = strdup(dir))) {
        free(s);
        return -ENOMEM;
    }
    s->slots = slots;
    s->max_entries = max_entries;
    s->file_size = HDR + (size_t)slots * 4 + (size_t)max_entries * ENTRY;
    pthread_mutex_init(&s->lock, NULL);
    DIR *d = opendir(dir);
    if (!d) {
        int e = -errno;
        idx_close(s);
        return e;
    }
    char **names = NULL;
    size_t nn = 0, nc = 0;
    struct dirent *de;
    int rc = 0;
    while ((de = readdir(d))) {
        if (strlen(de->d_name) != 17 || strspn(de->d_name, "0123456789") != 17)
            continue;
        if (nn == nc) {
            nc = nc ? nc * 2 : 8;
            char **nv = realloc(names, nc * sizeof(*nv));
            if (!nv) { rc = -ENOMEM; break; }
            names = nv;
        }
        if (!(names[nn] = strdup(de->d_name))) { rc = -ENOMEM; break; }
        nn++;
    }
    closedir(d);
    if (nn)
        qsort(names, nn, sizeof(*names), cmp_name);
    for (size_t i = 0; i < nn; i++) {
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
        free(names[i]);
        if (rc < 0)
            continue;
        struct mfile *mf;
        int r = mf_open(path, 0, s->file_size, 0, &mf);
        struct stat st;
        if (r == -EINVAL && i == nn - 1 && stat(path, &st) == 0 && (size_t)st.st_size < s->file_size) {
            log_warn("store: removing incompletely created index file %s", path);
            unlink(path);
            continue;
        }
        if (r < 0) {
            log_error("store: index file %s not loaded: %s%s", path, strerror(-r),
                      r == -EINVAL ? " (size does not match maxHashSlotNum/maxIndexNum)" : "");
            continue;
        }
        struct idx_file *f = calloc(1, sizeof(*f));
        if (!f) {
            mf_unref(mf);
            rc = -ENOMEM;
            continue;
        }
        f->mf = mf;
        const uint8_t *h = mf->base;
        f->begin_ts = (int64_t)rd_u64be(h);
        f->end_ts = (int64_t)rd_u64be(h + 8);
        f->begin_phy = (int64_t)rd_u64be(h + 16);
        f->end_phy = (int64_t)rd_u64be(h + 24);
        f->slot_count = rd_u32be(h + 32);
        f->count = rd_u32be(h + 36);
        if (f->count < 1 || f->count > max_entries)
            f->count = 1;
        mf->wrote = (int64_t)s->file_size;
        if ((rc = push(s, f)) < 0) {
            mf_unref(mf);
            free(f);
        }
    }
    free(names);
    if (rc < 0) {
        idx_close(s);
        return rc;
    }
    *out = s;
    return 0;
}

void idx_close(struct idx_service *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n; i++) {
        mf_unref(s->v[i]->mf);
        free(s->v[i]);
    }
    free(s->v);
    free(s->dir);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

static void remove_at(struct idx_service *s, size_t i)
{
    struct idx_file *f = s->v[i];
    memmove(s->v + i, s->v + i + 1, (s->n - i - 1) * sizeof(*s->v));
    s->n--;
    f->mf->removed = 1;
    if (unlink(f->mf->path) < 0)
        log_error("store: cannot remove index file %s: %s", f->mf->path, strerror(errno));
    mf_unref(f->mf);
    free(f);
}

int idx_recover(struct idx_service *s, int abnormal, int64_t cp_ts, int64_t *rebuild_from)
{
    *rebuild_from = INT64_MAX;
    if (!abnormal)
        return 0;
    pthread_mutex_lock(&s->lock);
    while (s->n && s->v[s->n - 1]->end_ts > cp_ts) {
        log_warn("store: index file %s was written after the last checkpoint; rebuilding it",
                 s->v[s->n - 1]->mf->path);
        remove_at(s, s->n - 1);
        *rebuild_from = s->n ? s->v[s->n - 1]->end_phy : 0;
    }
    pthread_mutex_unlock(&s->lock);
    return 0;
}

static struct idx_file *new_file(struct idx_service *s, int64_t now_ms, struct idx_file *prev)
{
    for (int attempt = 0; attempt < 1000; attempt++, now_ms++) {
        time_t t = (time_t)(now_ms / 1000);
        struct tm tm;
        localtime_r(&t, &tm);
        char path[4096];
        snprintf(path, sizeof(path), "%s/%04d%02d%02d%02d%02d%02d%03d", s->dir, tm.tm_year + 1900,
                 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(now_ms % 1000));
        struct mfile *mf;
        int rc = mf_open(path, 0, s->file_size, 1, &mf);
        if (rc == -EEXIST)
            continue;
        if (rc < 0) {
            log_error("store: cannot create index file %s: %s", path, strerror(-rc));
            errno = -rc;
            return NULL;
        }
        struct idx_file *f = calloc(1, sizeof(*f));
        if (!f) {
            mf->removed = 1;
            unlink(path);
            mf_unref(mf);
            errno = ENOMEM;
            return NULL;
        }
        f->mf = mf;
        f->count = 1;
        if (prev) {
            f->begin_phy = f->end_phy = LD(prev->end_phy);
            f->begin_ts = f->end_ts = LD(prev->end_ts);
        }
        hdr_write(f);
        if (push(s, f) < 0) {
            mf->removed = 1;
            unlink(path);
            mf_unref(mf);
            free(f);
            errno = ENOMEM;
            return NULL;
        }
        return f;
    }
    errno = EEXIST;
    return NULL;
}

/* Slots are big-endian on disk and published atomically. */
static uint32_t be32_load(const uint32_t *p)
{
    uint32_t v = __atomic_load_n(p, __ATOMIC_ACQUIRE);
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    v = __builtin_bswap32(v);
#endif
    return v;
}

static void be32_store(uint32_t *p, uint32_t v)
{
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    v = __builtin_bswap32(v);
#endif
    __atomic_store_n(p, v, __ATOMIC_RELEASE);
}

static uint32_t key_hash(const char *key, size_t klen)
{
    int32_t h = msg_java_hash(key, klen);
    if (h == INT32_MIN)
        return 0;
    return (uint32_t)(h < 0 ? -h : h);
}

int idx_put(struct idx_service *s, const char *key, size_t klen, int64_t phy, int64_t store_ts,
            int64_t now_ms)
{
    pthread_mutex_lock(&s->lock);
    struct idx_file *f = s->n ? s->v[s->n - 1] : NULL;
    if (f && phy < LD(f->end_phy)) {
        pthread_mutex_unlock(&s->lock);
        return 1;
    }
    if (!f || LD(f->count) >= s->max_entries) {
        f = new_file(s, now_ms, f);
        if (!f) {
            int e = -errno;
            pthread_mutex_unlock(&s->lock);
            return e;
        }
    }
    pthread_mutex_unlock(&s->lock);

    uint8_t *base = f->mf->base;
    uint32_t h = key_hash(key, klen);
    size_t slot_pos = HDR + (size_t)(h % s->slots) * 4;
    uint32_t *slotp = (uint32_t *)(void *)(base + slot_pos);
    uint32_t count = f->count;
    uint32_t prev = be32_load(slotp);
    if (prev >= count)
        prev = 0;
    int64_t diff = 0;
    if (f->begin_ts > 0) {
        diff = (store_ts - f->begin_ts) / 1000;
        if (diff < 0)
            diff = 0;
        if (diff > INT32_MAX)
            diff = INT32_MAX;
    }
    uint8_t *e = base + HDR + (size_t)s->slots * 4 + (size_t)count * ENTRY;
    wr_u32be(e, h);
    wr_u64be(e + 4, (uint64_t)phy);
    wr_u32be(e + 12, (uint32_t)diff);
    wr_u32be(e + 16, prev);
    if (prev == 0)
        ST(f->slot_count, f->slot_count + 1);
    if (count == 1) {
        ST(f->begin_ts, store_ts);
        ST(f->begin_phy, phy);
    }
    ST(f->end_ts, store_ts);
    ST(f->end_phy, phy);
    be32_store(slotp, count);
    ST(f->count, count + 1);
    hdr_write(f);
    return 0;
}

static int time_match(const struct idx_file *f, int64_t begin, int64_t end)
{
    int64_t b = LD(f->begin_ts), e = LD(f->end_ts);
    return begin <= e + 999 && end >= b;
}

size_t idx_query(struct idx_service *s, const char *key, size_t klen, int64_t begin_ms, int64_t end_ms,
                 int64_t *out, size_t max)
{
    size_t got = 0;
    uint32_t h = key_hash(key, klen);
    pthread_mutex_lock(&s->lock);
    size_t n = s->n;
    struct idx_file **snap = n ? malloc(n * sizeof(*snap)) : NULL;
    if (n && !snap) {
        pthread_mutex_unlock(&s->lock);
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        snap[i] = s->v[i];
        mf_ref(snap[i]->mf);
    }
    pthread_mutex_unlock(&s->lock);
    for (size_t k = n; k-- > 0;) {
        struct idx_file *f = snap[k];
        if (got < max && time_match(f, begin_ms, end_ms)) {
            const uint8_t *base = f->mf->base;
            uint32_t count = LD(f->count);
            int64_t bts = LD(f->begin_ts);
            const uint32_t *slotp = (const uint32_t *)(const void *)(base + HDR + (size_t)(h % s->slots) * 4);
            uint32_t cur = be32_load(slotp);
            while (cur > 0 && cur < count && got < max) {
                const uint8_t *e = base + HDR + (size_t)s->slots * 4 + (size_t)cur * ENTRY;
                uint32_t eh = rd_u32be(e);
                int64_t phy = (int64_t)rd_u64be(e + 4);
                int64_t t = bts + (int64_t)rd_u32be(e + 12) * 1000;
                uint32_t prev = rd_u32be(e + 16);
                if (eh == h && t <= end_ms && t + 999 >= begin_ms)
                    out[got++] = phy;
                if (prev >= cur)
                    break;
                cur = prev;
            }
        }
        mf_unref(f->mf);
    }
    free(snap);
    return got;
}

int idx_flush(struct idx_service *s, int64_t *ts)
{
    /* the idx_file may be freed once the lock is gone (a truncation or
     * retention removes it); the segment lives on through its reference */
    pthread_mutex_lock(&s->lock);
    struct idx_file *f = s->n ? s->v[s->n - 1] : NULL;
    struct mfile *mf = f ? f->mf : NULL;
    int64_t t = f ? LD(f->end_ts) : 0;
    if (mf)
        mf_ref(mf);
    pthread_mutex_unlock(&s->lock);
    if (!mf) {
        *ts = 0;
        return 0;
    }
    int rc = 0;
    if (msync(mf->base, mf->size, MS_SYNC) < 0) {
        rc = -errno;
        log_error("store: index flush of %s failed: %s", mf->path, strerror(errno));
    }
    mf_unref(mf);
    if (rc == 0)
        *ts = t;
    return rc;
}

void idx_release(struct idx_service *s)
{
    for (size_t i = 0;; i++) {
        pthread_mutex_lock(&s->lock);
        struct mfile *mf = i < s->n ? s->v[i]->mf : NULL;
        if (mf)
            mf_ref(mf);
        pthread_mutex_unlock(&s->lock);
        if (!mf)
            return;
        mf_release(mf, 4096, (int64_t)mf->size);
        mf_unref(mf);
    }
}

int idx_delete_below(struct idx_service *s, int64_t min_phy)
{
    int n = 0;
    pthread_mutex_lock(&s->lock);
    while (s->n > 1 && LD(s->v[0]->end_phy) < min_phy) {
        log_info("store: index file %s deleted (below log offset %lld)", s->v[0]->mf->path,
                 (long long)min_phy);
        remove_at(s, 0);
        n++;
    }
    pthread_mutex_unlock(&s->lock);
    return n;
}

int64_t idx_end_phy(struct idx_service *s)
{
    pthread_mutex_lock(&s->lock);
    int64_t r = s->n ? LD(s->v[s->n - 1]->end_phy) : 0;
    pthread_mutex_unlock(&s->lock);
    return r;
}
