/*
 * Pop consumption state with group-committed LMDB persistence; see
 * pop_state.h. The loop logs every change into `cur`; an ev_prepare
 * watcher hands `cur` (with the waiters registered since the last hand-off)
 * to the writer thread whenever the writer is idle, so one transaction
 * carries everything one or more loop iterations produced and the loop
 * never waits for fsync.
 */
#include "pop_state.h"

#include <errno.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "buf.h"
#include "log.h"

#define NHASH 4096
#define OP_PUT 1
#define OP_DEL 2
#define KEY_MAX 512

struct pst {
    struct ev_loop *loop;
    MDB_env *env;
    MDB_dbi dbi;
    struct pst_queue *hash[NHASH];
    struct pst_queue *all;
    struct buf cur;                 /* ops logged since the last hand-off */
    struct pst_waiter *cur_w, **cur_wtail;
    ev_prepare prep;
    ev_async done_async;
    pthread_t thr;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool busy;                      /* a batch is with the writer (loop's view) */
    bool job_ready, job_done, stop; /* guarded by mu */
    struct buf job;                 /* writer's batch */
    struct pst_waiter *job_w;
    int job_rc;
    uint64_t commits;
    uint8_t key[KEY_MAX];
};

static uint64_t hkey(const char *group, const char *topic, int32_t qid)
{
    uint64_t h = 1469598103934665603ull;
    for (const unsigned char *s = (const unsigned char *)group; *s; s++)
        h = (h ^ *s) * 1099511628211ull;
    h = (h ^ 0xff) * 1099511628211ull;
    for (const unsigned char *s = (const unsigned char *)topic; *s; s++)
        h = (h ^ *s) * 1099511628211ull;
    return (h ^ (uint32_t)qid) * 1099511628211ull;
}

struct pst_queue *pst_first(struct pst *s) { return s->all; }
uint64_t pst_commits(const struct pst *s) { return s->commits; }

struct pst_queue *pst_queue(struct pst *s, const char *group, const char *topic, int32_t qid,
                            bool create)
{
    unsigned h = (unsigned)(hkey(group, topic, qid) % NHASH);
    for (struct pst_queue *q = s->hash[h]; q; q = q->hnext)
        if (q->qid == qid && strcmp(q->topic, topic) == 0 && strcmp(q->group, group) == 0)
            return q;
    if (!create)
        return NULL;
    struct pst_queue *q = calloc(1, sizeof *q);
    if (!q)
        return NULL;
    q->group = strdup(group);
    q->topic = strdup(topic);
    if (!q->group || !q->topic) {
        free(q->group);
        free(q->topic);
        free(q);
        return NULL;
    }
    q->qid = qid;
    q->pop_off = -1;
    q->committed = -1;
    q->next_deadline = INT64_MAX;
    q->hnext = s->hash[h];
    s->hash[h] = q;
    q->next = s->all;
    s->all = q;
    return q;
}

int pst_find(const struct pst_queue *q, int64_t off)
{
    uint32_t lo = 0, hi = q->n;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (q->e[mid].off < off)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < q->n && q->e[lo].off == off ? (int)lo : -1;
}

/* Key prefix: kind group 0 topic 0 be32(qid). Returns its length or -1. */
static int key_prefix(uint8_t *k, char kind, const struct pst_queue *q)
{
    size_t gl = strlen(q->group), tl = strlen(q->topic);
    if (1 + gl + 1 + tl + 1 + 4 + 8 > KEY_MAX)
        return -1;
    uint8_t *p = k;
    *p++ = (uint8_t)kind;
    memcpy(p, q->group, gl + 1);
    p += gl + 1;
    memcpy(p, q->topic, tl + 1);
    p += tl + 1;
    wr_u32be(p, (uint32_t)q->qid);
    p += 4;
    return (int)(p - k);
}

static int log_op(struct pst *s, int op, const uint8_t *key, size_t kl, const uint8_t *val, size_t vl)
{
    if (buf_reserve(&s->cur, 1 + 2 + kl + 2 + vl))
        return -ENOMEM;
    buf_append_u8(&s->cur, (uint8_t)op);
    buf_append_u16be(&s->cur, (uint16_t)kl);
    buf_append(&s->cur, key, kl);
    buf_append_u16be(&s->cur, (uint16_t)vl);
    if (vl)
        buf_append(&s->cur, val, vl);
    return 0;
}

static int log_entry(struct pst *s, const struct pst_queue *q, const struct pst_entry *e, int op)
{
    int kl = key_prefix(s->key, 'I', q);
    if (kl < 0)
        return -ENAMETOOLONG;
    wr_u64be(s->key + kl, (uint64_t)e->off);
    kl += 8;
    uint8_t v[21];
    wr_u64be(v, (uint64_t)e->deadline);
    wr_u64be(v + 8, (uint64_t)e->pop_time);
    wr_u32be(v + 16, (uint32_t)e->count);
    v[20] = e->order;
    return log_op(s, op, s->key, (size_t)kl, v, op == OP_PUT ? sizeof v : 0);
}

static int insert_mem(struct pst_queue *q, const struct pst_entry *e)
{
    int i = pst_find(q, e->off);
    if (i >= 0) {
        q->e[i] = *e;
    } else {
        if (q->n == q->cap) {
            uint32_t nc = q->cap ? q->cap * 2 : 16;
            struct pst_entry *ne = realloc(q->e, nc * sizeof *ne);
            if (!ne)
                return -ENOMEM;
            q->e = ne;
            q->cap = nc;
        }
        uint32_t pos = q->n;
        while (pos > 0 && q->e[pos - 1].off > e->off)
            pos--;
        memmove(q->e + pos + 1, q->e + pos, (q->n - pos) * sizeof *q->e);
        q->e[pos] = *e;
        q->n++;
    }
    if (e->deadline < q->next_deadline)
        q->next_deadline = e->deadline;
    return 0;
}

int pst_put(struct pst *s, struct pst_queue *q, const struct pst_entry *e)
{
    if (pst_find(q, e->off) < 0 && q->n == q->cap) {
        uint32_t nc = q->cap ? q->cap * 2 : 16;
        struct pst_entry *ne = realloc(q->e, nc * sizeof *ne);
        if (!ne)
            return -ENOMEM;
        q->e = ne;
        q->cap = nc;
    }
    int rc = log_entry(s, q, e, OP_PUT);
    if (rc)
        return rc;
    return insert_mem(q, e);
}

int pst_update(struct pst *s, struct pst_queue *q, uint32_t i)
{
    if (q->e[i].deadline < q->next_deadline)
        q->next_deadline = q->e[i].deadline;
    return log_entry(s, q, &q->e[i], OP_PUT);
}

int pst_del(struct pst *s, struct pst_queue *q, uint32_t i)
{
    int rc = log_entry(s, q, &q->e[i], OP_DEL);
    if (rc)
        return rc;
    memmove(q->e + i, q->e + i + 1, (q->n - i - 1) * sizeof *q->e);
    q->n--;
    return 0;
}

int pst_set_pop_off(struct pst *s, struct pst_queue *q, int64_t off)
{
    int kl = key_prefix(s->key, 'O', q);
    if (kl < 0)
        return -ENAMETOOLONG;
    uint8_t v[8];
    wr_u64be(v, (uint64_t)off);
    int rc = log_op(s, OP_PUT, s->key, (size_t)kl, v, sizeof v);
    if (rc == 0)
        q->pop_off = off;
    return rc;
}

void pst_barrier(struct pst *s, struct pst_waiter *w)
{
    w->next = NULL;
    *s->cur_wtail = w;
    s->cur_wtail = &w->next;
}

/* Applies a batch of ops in one write transaction. */
static int apply(struct pst *s, const struct buf *ops)
{
    MDB_txn *txn;
    int rc = mdb_txn_begin(s->env, NULL, 0, &txn);
    if (rc)
        return rc;
    size_t pos = 0;
    while (pos < ops->len) {
        const uint8_t *p = ops->data + pos;
        int op = p[0];
        size_t kl = rd_u16be(p + 1);
        MDB_val k = { kl, (void *)(p + 3) };
        size_t vl = rd_u16be(p + 3 + kl);
        MDB_val v = { vl, (void *)(p + 5 + kl) };
        pos += 5 + kl + vl;
        if (op == OP_PUT)
            rc = mdb_put(txn, s->dbi, &k, &v, 0);
        else {
            rc = mdb_del(txn, s->dbi, &k, NULL);
            if (rc == MDB_NOTFOUND)
                rc = 0;
        }
        if (rc) {
            mdb_txn_abort(txn);
            return rc;
        }
    }
    return mdb_txn_commit(txn);
}

static void *writer(void *arg)
{
    struct pst *s = arg;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (!s->job_ready && !s->stop)
            pthread_cond_wait(&s->cv, &s->mu);
        if (!s->job_ready && s->stop)
            break;
        pthread_mutex_unlock(&s->mu);
        int rc = apply(s, &s->job);
        pthread_mutex_lock(&s->mu);
        s->job_rc = rc;
        s->job_ready = false;
        s->job_done = true;
        pthread_cond_broadcast(&s->cv);
        ev_async_send(s->loop, &s->done_async);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

static void submit(struct pst *s)
{
    pthread_mutex_lock(&s->mu);
    struct buf t = s->job;
    s->job = s->cur;
    s->cur = t;
    buf_reset(&s->cur);
    s->job_w = s->cur_w;
    s->cur_w = NULL;
    s->cur_wtail = &s->cur_w;
    s->job_ready = true;
    s->busy = true;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

static void mdb_log_error(const char *what, int rc)
{
    if (rc == MDB_MAP_FULL)
        log_error("pop state: %s failed: the LMDB map under <store>/pop is full", what);
    else
        log_error("pop state: %s failed: %s", what, mdb_strerror(rc));
}

/* Loop: the writer finished a batch. */
static void finish(struct pst *s)
{
    pthread_mutex_lock(&s->mu);
    if (!s->job_done) {
        pthread_mutex_unlock(&s->mu);
        return;
    }
    s->job_done = false;
    int rc = s->job_rc;
    struct pst_waiter *w = s->job_w;
    s->job_w = NULL;
    pthread_mutex_unlock(&s->mu);
    s->busy = false;
    if (rc) {
        mdb_log_error("committing a batch of pop/ack changes", rc);
        /* Keep the failed ops ahead of the newer ones. */
        if (buf_append(&s->job, s->cur.data, s->cur.len) == 0) {
            struct buf t = s->cur;
            s->cur = s->job;
            s->job = t;
        }
        rc = -EIO;
    } else {
        s->commits++;
    }
    buf_reset(&s->job);
    while (w) {
        struct pst_waiter *n = w->next;
        w->done(w, rc);
        w = n;
    }
}

static void on_done(struct ev_loop *loop, ev_async *a, int revents)
{
    struct pst *s = a->data;
    finish(s);
    if (!s->busy && (s->cur.len || s->cur_w))
        submit(s);
}

static void on_prepare(struct ev_loop *loop, ev_prepare *w, int revents)
{
    struct pst *s = w->data;
    if (!s->busy && (s->cur.len || s->cur_w))
        submit(s);
}

static int load(struct pst *s)
{
    MDB_txn *txn;
    MDB_cursor *cur;
    int rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn);
    if (rc)
        return rc;
    rc = mdb_cursor_open(txn, s->dbi, &cur);
    if (rc) {
        mdb_txn_abort(txn);
        return rc;
    }
    MDB_val k, v;
    size_t nq = 0, ne = 0;
    while ((rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) == 0) {
        const uint8_t *p = k.mv_data;
        size_t kl = k.mv_size;
        const uint8_t *g = p + 1;
        const uint8_t *gz = kl > 1 ? memchr(g, 0, kl - 1) : NULL;
        const uint8_t *t = gz ? gz + 1 : NULL;
        const uint8_t *tz = t ? memchr(t, 0, kl - (size_t)(t - p)) : NULL;
        size_t rest = tz ? kl - (size_t)(tz + 1 - p) : 0;
        bool okk = tz && ((p[0] == 'O' && rest == 4 && v.mv_size == 8) ||
                          (p[0] == 'I' && rest == 12 && v.mv_size == 21));
        if (!okk) {
            log_warn("pop state: skipping an undecodable record (key %zu bytes, value %zu bytes)", kl,
                     v.mv_size);
            continue;
        }
        int32_t qid = (int32_t)rd_u32be(tz + 1);
        struct pst_queue *q = pst_queue(s, (const char *)g, (const char *)t, qid, true);
        if (!q) {
            rc = ENOMEM;
            break;
        }
        const uint8_t *d = v.mv_data;
        if (p[0] == 'O') {
            q->pop_off = (int64_t)rd_u64be(d);
            nq++;
        } else {
            struct pst_entry e = {
                .off = (int64_t)rd_u64be(tz + 5), .deadline = (int64_t)rd_u64be(d),
                .pop_time = (int64_t)rd_u64be(d + 8), .count = (int32_t)rd_u32be(d + 16), .order = d[20],
            };
            if (insert_mem(q, &e)) {
                rc = ENOMEM;
                break;
            }
            ne++;
        }
    }
    mdb_cursor_close(cur);
    mdb_txn_abort(txn);
    if (rc == MDB_NOTFOUND) {
        log_info("pop state: loaded %zu queue offsets and %zu in-flight messages", nq, ne);
        return 0;
    }
    return rc;
}

int pst_open(struct ev_loop *loop, const char *store_root, size_t map_size, struct pst **out)
{
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/pop", store_root);
    if (mkdir(store_root, 0755) && errno != EEXIST) {
        log_error("pop state: cannot create %s: %s", store_root, strerror(errno));
        return -errno;
    }
    if (mkdir(dir, 0755) && errno != EEXIST) {
        log_error("pop state: cannot create %s: %s", dir, strerror(errno));
        return -errno;
    }
    struct pst *s = calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    s->loop = loop;
    s->cur_wtail = &s->cur_w;
    MDB_txn *txn = NULL;
    int rc = mdb_env_create(&s->env);
    if (!rc)
        rc = mdb_env_set_mapsize(s->env, map_size);
    if (!rc)
        rc = mdb_env_open(s->env, dir, 0, 0644);
    if (!rc)
        rc = mdb_txn_begin(s->env, NULL, 0, &txn);
    if (!rc)
        rc = mdb_dbi_open(txn, NULL, 0, &s->dbi);
    if (!rc) {
        rc = mdb_txn_commit(txn);
        txn = NULL;
    }
    if (txn)
        mdb_txn_abort(txn);
    if (!rc)
        rc = load(s);
    if (rc) {
        log_error("pop state: cannot open %s: %s", dir, rc == ENOMEM ? "out of memory" : mdb_strerror(rc));
        if (s->env)
            mdb_env_close(s->env);
        free(s);
        return rc == ENOMEM ? -ENOMEM : -EIO;
    }
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    if (pthread_create(&s->thr, NULL, writer, s)) {
        log_error("pop state: cannot start the writer thread");
        mdb_env_close(s->env);
        free(s);
        return -EAGAIN;
    }
    ev_prepare_init(&s->prep, on_prepare);
    s->prep.data = s;
    ev_prepare_start(loop, &s->prep);
    ev_async_init(&s->done_async, on_done);
    s->done_async.data = s;
    ev_async_start(loop, &s->done_async);
    *out = s;
    return 0;
}

int pst_flush_sync(struct pst *s)
{
    pthread_mutex_lock(&s->mu);
    while (s->job_ready)
        pthread_cond_wait(&s->cv, &s->mu);
    pthread_mutex_unlock(&s->mu);
    finish(s);
    int rc = 0;
    if (s->cur.len) {
        rc = apply(s, &s->cur);
        if (rc) {
            mdb_log_error("committing the last pop/ack changes", rc);
            rc = -EIO;
        } else {
            s->commits++;
            buf_reset(&s->cur);
        }
    }
    struct pst_waiter *w = s->cur_w;
    s->cur_w = NULL;
    s->cur_wtail = &s->cur_w;
    while (w) {
        struct pst_waiter *n = w->next;
        w->done(w, rc);
        w = n;
    }
    return rc;
}

void pst_close(struct pst *s)
{
    if (!s)
        return;
    pst_flush_sync(s);
    pthread_mutex_lock(&s->mu);
    s->stop = true;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->thr, NULL);
    ev_prepare_stop(s->loop, &s->prep);
    ev_async_stop(s->loop, &s->done_async);
    mdb_env_close(s->env);
    for (struct pst_queue *q = s->all; q;) {
        struct pst_queue *n = q->next;
        free(q->e);
        free(q->group);
        free(q->topic);
        free(q);
        q = n;
    }
    buf_free(&s->cur);
    buf_free(&s->job);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    free(s);
}
