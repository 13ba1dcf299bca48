/*
 * Memory-mapped segment files and segment queues (see mapped_file.h).
 */
#include "mapped_file.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"

#define PAGE 4096

void mf_name(int64_t off, char *out) { snprintf(out, 21, "%020lld", (long long)off); }

int mf_open(const char *path, int64_t from, size_t size, int create, struct mfile **out)
{
    int fd = open(path, O_RDWR | O_CLOEXEC | (create ? O_CREAT | O_EXCL : 0), 0644);
    if (fd < 0)
        return -errno;
    int rc;
    if (create) {
        rc = posix_fallocate(fd, 0, (off_t)size);
        if (rc != 0) {
            close(fd);
            unlink(path);
            return -rc;
        }
    } else {
        struct stat st;
        if (fstat(fd, &st) < 0) {
            rc = -errno;
            close(fd);
            return rc;
        }
        if ((size_t)st.st_size != size) {
            close(fd);
            return -EINVAL;
        }
    }
    void *base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED) {
        rc = -errno;
        close(fd);
        if (create)
            unlink(path);
        return rc;
    }
    struct mfile *f = calloc(1, sizeof(*f));
    char *p = strdup(path);
    if (!f || !p) {
        free(f);
        free(p);
        munmap(base, size);
        close(fd);
        if (create)
            unlink(path);
        return -ENOMEM;
    }
    f->path = p;
    f->fd = fd;
    f->base = base;
    f->size = size;
    f->from = from;
    f->refs = 1;
    *out = f;
    return 0;
}

void mf_ref(struct mfile *f) { __atomic_add_fetch(&f->refs, 1, __ATOMIC_RELAXED); }

void mf_unref(struct mfile *f)
{
    if (!f || __atomic_sub_fetch(&f->refs, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    munmap(f->base, f->size);
    close(f->fd);
    free(f->path);
    free(f);
}

int mf_flush(struct mfile *f, int64_t upto)
{
    int64_t fl = mf_flushed(f);
    if (upto > (int64_t)f->size)
        upto = (int64_t)f->size;
    if (upto <= fl)
        return 0;
    int64_t start = fl & ~(int64_t)(PAGE - 1);
    if (msync(f->base + start, (size_t)(upto - start), MS_SYNC) < 0) {
        int e = errno;
        log_error("store: msync %s failed: %s", f->path, strerror(e));
        return -e;
    }
    int64_t cur = fl;
    while (cur < upto && !__atomic_compare_exchange_n(&f->flushed, &cur, upto, 0, __ATOMIC_RELEASE,
                                                      __ATOMIC_RELAXED))
        ;
    return 0;
}

int64_t mf_dirty_pages(const struct mfile *f)
{
    int64_t w = mf_wrote(f), fl = mf_flushed(f);
    return w / PAGE - fl / PAGE;
}

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif

/* 1 once the kernel refused MADV_POPULATE_READ (or a test forced it) */
static int populate_touch;

void mf_populate_force_touch(int on) { __atomic_store_n(&populate_touch, on ? 1 : 0, __ATOMIC_RELAXED); }

int mf_populate(struct mfile *f, int64_t from_pos, int64_t to_pos, const int *stop)
{
    const size_t chunk = 1u << 20;
    size_t pos = (size_t)(from_pos < 0 ? 0 : from_pos) & ~(size_t)(PAGE - 1);
    size_t end = to_pos < 0 ? 0 : (size_t)to_pos;
    if (end > f->size)
        end = f->size;
    while (pos < end) {
        if (stop && __atomic_load_n(stop, __ATOMIC_ACQUIRE))
            return 0;
        size_t n = end - pos < chunk ? end - pos : chunk;
        n = (n + PAGE - 1) & ~(size_t)(PAGE - 1);
        if (!__atomic_load_n(&populate_touch, __ATOMIC_RELAXED)) {
            if (madvise(f->base + pos, n, MADV_POPULATE_READ) == 0) {
                pos += n;
                continue;
            }
            if (errno == EINTR)
                continue;
            if (errno != EINVAL)
                return -errno;
            /* kernel before 5.14: touch one byte per page from now on */
            __atomic_store_n(&populate_touch, 1, __ATOMIC_RELAXED);
            log_info("store: MADV_POPULATE_READ not supported; prefaulting by touching pages");
        }
        for (size_t o = 0; o < n; o += PAGE)
            (void)*(volatile const uint8_t *)(f->base + pos + o);
        pos += n;
    }
    return 0;
}

int mf_release(struct mfile *f, int64_t from_pos, int64_t to_pos)
{
    if (from_pos < 0)
        from_pos = 0;
    if (to_pos > (int64_t)f->size)
        to_pos = (int64_t)f->size;
    int64_t s = (from_pos + PAGE - 1) & ~(int64_t)(PAGE - 1);
    int64_t e = to_pos & ~(int64_t)(PAGE - 1);
    if (e <= s)
        return 0;
    if (madvise(f->base + s, (size_t)(e - s), MADV_DONTNEED) < 0)
        return -errno;
    return 0;
}

int64_t mf_zero_tail(struct mfile *f, int64_t from_pos)
{
    if (from_pos < 0 || from_pos >= (int64_t)f->size)
        return 0;
    static const uint8_t zero[PAGE];
    uint8_t chunk[PAGE];
    int64_t dirty_lo = -1, dirty_hi = -1;
    for (int64_t pos = from_pos; pos < (int64_t)f->size;) {
        size_t n = PAGE - (size_t)(pos % PAGE);
        if (pos + (int64_t)n > (int64_t)f->size)
            n = (size_t)((int64_t)f->size - pos);
        /* pread avoids faulting untouched pages of the mapping into memory */
        ssize_t r = pread(f->fd, chunk, n, pos);
        if (r < 0)
            return -errno;
        if (r == 0)
            break;
        if (memcmp(chunk, zero, (size_t)r) != 0) {
            memset(f->base + pos, 0, (size_t)r);
            if (dirty_lo < 0)
                dirty_lo = pos;
            dirty_hi = pos + r;
        }
        pos += r;
    }
    if (dirty_lo >= 0) {
        int64_t s = dirty_lo & ~(int64_t)(PAGE - 1);
        if (msync(f->base + s, (size_t)(dirty_hi - s), MS_SYNC) < 0)
            return -errno;
        return dirty_hi - from_pos;
    }
    return 0;
}

int64_t mf_mtime_ms(const struct mfile *f)
{
    struct stat st;
    if (fstat(f->fd, &st) < 0)
        return 0;
    return (int64_t)st.st_mtim.tv_sec * 1000 + st.st_mtim.tv_nsec / 1000000;
}

int mf_mkdir_p(const char *dir)
{
    char tmp[4096];
    size_t n = strlen(dir);
    if (n >= sizeof(tmp))
        return -ENAMETOOLONG;
    memcpy(tmp, dir, n + 1);
    for (char *p = tmp + 1; *p; p++) {
        if (*p == '/') {
            *p = '\0';
            if (mkdir(tmp, 0755) < 0 && errno != EEXIST)
                return -errno;
            *p = '/';
        }
    }
    if (mkdir(tmp, 0755) < 0 && errno != EEXIST)
        return -errno;
    return 0;
}

int mfq_init(struct mfq *q, const char *dir, size_t file_size)
{
    memset(q, 0, sizeof(*q));
    int rc = mf_mkdir_p(dir);
    if (rc < 0)
        return rc;
    q->dir = strdup(dir);
    if (!q->dir)
        return -ENOMEM;
    q->file_size = file_size;
    pthread_mutex_init(&q->lock, NULL);
    return 0;
}

static int push(struct mfq *q, struct mfile *f)
{
    if (q->n == q->cap) {
        size_t nc = q->cap ? q->cap * 2 : 16;
        struct mfile **nv = realloc(q->v, nc * sizeof(*nv));
        if (!nv)
            return -ENOMEM;
        q->v = nv;
        q->cap = nc;
    }
    q->v[q->n++] = f;
    return 0;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

int mfq_load(struct mfq *q)
{
    DIR *d = opendir(q->dir);
    if (!d)
        return -errno;
    int64_t *offs = NULL;
    size_t n = 0, cap = 0;
    struct dirent *de;
    int rc = 0;
    while ((de = readdir(d))) {
        const char *nm = de->d_name;
        if (strlen(nm) != 20 || strspn(nm, "0123456789") != 20)
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            int64_t *no = realloc(offs, cap * sizeof(*no));
            if (!no) {
                rc = -ENOMEM;
                break;
            }
            offs = no;
        }
        offs[n++] = strtoll(nm, NULL, 10);
    }
    closedir(d);
    if (rc == 0 && n)
        qsort(offs, n, sizeof(*offs), cmp_i64);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        if (i > 0 && offs[i] != offs[i - 1] + (int64_t)q->file_size) {
            log_error("store: %s: segment %020lld does not follow %020lld (size %zu)", q->dir,
                      (long long)offs[i], (long long)offs[i - 1], q->file_size);
            rc = -EINVAL;
            break;
        }
        char path[4096], nm[21];
        mf_name(offs[i], nm);
        snprintf(path, sizeof(path), "%s/%s", q->dir, nm);
        struct mfile *f;
        rc = mf_open(path, offs[i], q->file_size, 0, &f);
        if (rc == -EINVAL && i == n - 1) {
            struct stat st;
            if (stat(path, &st) == 0 && (size_t)st.st_size < q->file_size) {
                /* a crash during creation (preallocation) of the newest
                 * segment: nothing was ever written to it */
                log_warn("store: removing incompletely created segment %s (%lld of %zu bytes)", path,
                         (long long)st.st_size, q->file_size);
                if (unlink(path) < 0)
                    rc = -errno;
                else
                    rc = 0;
                break;
            }
        }
        if (rc < 0) {
            log_error("store: cannot load segment %s: %s%s", path, strerror(-rc),
                      rc == -EINVAL ? " (size differs from the configured segment size)" : "");
            break;
        }
        f->wrote = f->flushed = (int64_t)q->file_size;
        if ((rc = push(q, f)) < 0)
            mf_unref(f);
    }
    free(offs);
    return rc;
}

void mfq_destroy(struct mfq *q)
{
    for (size_t i = 0; i < q->n; i++)
        mf_unref(q->v[i]);
    free(q->v);
    free(q->dir);
    if (q->dir)
        pthread_mutex_destroy(&q->lock);
    memset(q, 0, sizeof(*q));
}

/* Unlinks a segment leaving its queue; the mapping (and the disk space)
 * stays until the last reader drops its reference. */
static void mark_removed(struct mfile *f)
{
    __atomic_store_n(&f->removed, 1, __ATOMIC_RELEASE);
    if (unlink(f->path) < 0 && errno != ENOENT)
        log_error("store: cannot remove %s: %s", f->path, strerror(errno));
}

static struct mfile *ref_at(struct mfq *q, size_t i)
{
    if (i >= q->n)
        return NULL;
    mf_ref(q->v[i]);
    return q->v[i];
}

struct mfile *mfq_last(struct mfq *q)
{
    pthread_mutex_lock(&q->lock);
    struct mfile *f = q->n ? ref_at(q, q->n - 1) : NULL;
    pthread_mutex_unlock(&q->lock);
    return f;
}

struct mfile *mfq_first(struct mfq *q)
{
    pthread_mutex_lock(&q->lock);
    struct mfile *f = ref_at(q, 0);
    pthread_mutex_unlock(&q->lock);
    return f;
}

struct mfile *mfq_at(struct mfq *q, size_t i)
{
    pthread_mutex_lock(&q->lock);
    struct mfile *f = ref_at(q, i);
    pthread_mutex_unlock(&q->lock);
    return f;
}

size_t mfq_count(struct mfq *q)
{
    pthread_mutex_lock(&q->lock);
    size_t n = q->n;
    pthread_mutex_unlock(&q->lock);
    return n;
}

struct mfile *mfq_find(struct mfq *q, int64_t off)
{
    struct mfile *f = NULL;
    pthread_mutex_lock(&q->lock);
    if (q->n && off >= q->v[0]->from) {
        size_t i = (size_t)((off - q->v[0]->from) / (int64_t)q->file_size);
        if (i < q->n)
            f = ref_at(q, i);
    }
    pthread_mutex_unlock(&q->lock);
    return f;
}

int mfq_create(struct mfq *q, int64_t from, struct mfile **out)
{
    char path[4096], nm[21];
    mf_name(from, nm);
    snprintf(path, sizeof(path), "%s/%s", q->dir, nm);
    int rc = mf_open(path, from, q->file_size, 1, out);
    if (rc == -EEXIST) {
        /* a leftover from an earlier truncation or an unused preallocated
         * segment: its content is stale */
        if (unlink(path) == 0)
            rc = mf_open(path, from, q->file_size, 1, out);
    }
    if (rc < 0)
        log_error("store: cannot create segment %s: %s", path, strerror(-rc));
    return rc;
}

void mf_discard(struct mfile *f)
{
    if (!f)
        return;
    mark_removed(f);
    mf_unref(f);
}

int mfq_append(struct mfq *q, struct mfile *f)
{
    pthread_mutex_lock(&q->lock);
    if (f->size != q->file_size || (q->n && q->v[q->n - 1]->from + (int64_t)q->file_size != f->from)) {
        pthread_mutex_unlock(&q->lock);
        return -EINVAL;
    }
    int rc = push(q, f);
    pthread_mutex_unlock(&q->lock);
    return rc;
}

struct mfile *mfq_append_new(struct mfq *q, int64_t from)
{
    struct mfile *f;
    int rc = mfq_create(q, from, &f);
    if (rc < 0) {
        errno = -rc;
        return NULL;
    }
    mf_ref(f);
    if ((rc = mfq_append(q, f)) < 0) {
        mf_unref(f);
        mf_discard(f);
        errno = -rc;
        return NULL;
    }
    return f;
}

int64_t mfq_min_offset(struct mfq *q)
{
    pthread_mutex_lock(&q->lock);
    int64_t r = q->n ? q->v[0]->from : -1;
    pthread_mutex_unlock(&q->lock);
    return r;
}

int64_t mfq_max_offset(struct mfq *q)
{
    pthread_mutex_lock(&q->lock);
    int64_t r = q->n ? q->v[q->n - 1]->from + mf_wrote(q->v[q->n - 1]) : 0;
    pthread_mutex_unlock(&q->lock);
    return r;
}

void mfq_remove_first(struct mfq *q)
{
    pthread_mutex_lock(&q->lock);
    if (q->n) {
        struct mfile *f = q->v[0];
        memmove(q->v, q->v + 1, (q->n - 1) * sizeof(*q->v));
        q->n--;
        mark_removed(f);
        pthread_mutex_unlock(&q->lock);
        mf_unref(f);
        return;
    }
    pthread_mutex_unlock(&q->lock);
}

void mfq_truncate(struct mfq *q, int64_t off)
{
    pthread_mutex_lock(&q->lock);
    while (q->n > 1 && q->v[q->n - 1]->from >= off) {
        struct mfile *f = q->v[--q->n];
        mark_removed(f);
        mf_unref(f);
    }
    if (q->n) {
        struct mfile *f = q->v[q->n - 1];
        int64_t pos = off - f->from;
        if (pos > (int64_t)f->size)
            pos = (int64_t)f->size;
        if (pos < 0)
            pos = 0;
        f->wrote = pos;
        if (f->flushed > pos)
            f->flushed = pos;
    }
    pthread_mutex_unlock(&q->lock);
}

void mfq_remove_all(struct mfq *q)
{
    pthread_mutex_lock(&q->lock);
    while (q->n) {
        struct mfile *f = q->v[--q->n];
        mark_removed(f);
        mf_unref(f);
    }
    pthread_mutex_unlock(&q->lock);
}
