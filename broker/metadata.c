/*
 * Broker metadata store (see metadata.h for the model). Layout of the LMDB
 * environment, all integers big-endian, every value starting with a format
 * byte so a future layout can be told apart from corruption:
 *
 *   "meta"    "schema" -> u32 1; "topics.dataVersion", "groups.dataVersion"
 *             -> [1][stateVersion u64][timestamp u64][counter u64]
 *   "topics"  name -> [1][read u32][write u32][perm u32][filter u8][sysFlag u32][order u8]
 *   "groups"  name -> [1][flags u8][retryQueueNums u32][retryMaxTimes u32][brokerId u64]
 *                     [whichBrokerWhenConsumeSlowly u64][groupSysFlag u32][timeoutMinute u32]
 *   "offsets" "topic@group" -> [1][count u32] count x [queueId u32][offset u64], ascending
 *
 * Offsets are one record per topic@group so a batch rewrites only the groups
 * that moved; a queue slot array indexed by queue id keeps commits O(1)
 * without allocation.
 */
#include "metadata.h"

#include <errno.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "log.h"

#define FMT_V1 1
#define SCHEMA_VERSION 1u
#define TOPIC_REC_LEN 19
#define GROUP_REC_LEN 34
#define DV_REC_LEN 25
#define OFF_HDR_LEN 5
#define OFF_ITEM_LEN 12

#define GF_CONSUME 0x01
#define GF_FROM_MIN 0x02
#define GF_BROADCAST 0x04
#define GF_ORDERLY 0x08
#define GF_NOTIFY 0x10
#define GF_ALL 0x1f

#define KEY_SCHEMA "schema"
#define KEY_TOPICS_DV "topics.dataVersion"
#define KEY_GROUPS_DV "groups.dataVersion"

struct hnode {
    struct hnode *next;
    uint64_t hash;
};

struct htab {
    struct hnode **b;
    size_t nb;
    size_t n;
};

struct topic_ent {
    struct hnode h;
    struct meta_topic cfg;
};

struct group_ent {
    struct hnode h;
    struct meta_group cfg;
};

struct off_ent {
    struct hnode h;
    struct off_ent *dnext, *dprev; /* dirty list links, valid while dirty */
    bool dirty;
    char *key; /* "topic@group", NUL-terminated */
    size_t topic_len;
    size_t key_len;
    int64_t *offs; /* indexed by queue id, -1 = none */
    uint32_t cap;
    uint32_t count; /* slots holding an offset */
};

struct meta {
    char *dir;
    MDB_env *env;
    MDB_dbi dbi_meta, dbi_topics, dbi_groups, dbi_offsets;
    size_t map_size;
    struct htab topics, groups, offs;
    struct meta_data_version tv, gv;
    struct off_ent *dirty_head;
    size_t ndirty;

    pthread_t writer;
    bool writer_started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool busy;     /* batch owned by the writer thread */
    bool stop;
    int batch_rc;  /* result of the last finished batch, 0 once collected */
    struct buf batch; /* records: [klen u32][key][vlen u32][value] */
    size_t batch_n;
};

static uint64_t fnv_add(uint64_t h, const void *p, size_t n)
{
    const unsigned char *s = p;
    for (size_t i = 0; i < n; i++) {
        h ^= s[i];
        h *= 1099511628211ull;
    }
    return h;
}

#define FNV_INIT 14695981039346656037ull

static uint64_t hash_str(const char *s, size_t n) { return fnv_add(FNV_INIT, s, n); }

static uint64_t hash_tg(const char *t, size_t tl, const char *g, size_t gl)
{
    uint64_t h = fnv_add(FNV_INIT, t, tl);
    h = fnv_add(h, "@", 1);
    return fnv_add(h, g, gl);
}

static int ht_init(struct htab *t)
{
    t->nb = 64;
    t->n = 0;
    t->b = calloc(t->nb, sizeof(*t->b));
    return t->b ? 0 : -ENOMEM;
}

/* Never fails: if growing is impossible the chains just get longer. */
static void ht_insert(struct htab *t, struct hnode *n)
{
    if (t->n >= t->nb && t->nb < SIZE_MAX / (2 * sizeof(*t->b))) {
        size_t nb = t->nb * 2;
        struct hnode **b = calloc(nb, sizeof(*b));
        if (b) {
            for (size_t i = 0; i < t->nb; i++) {
                struct hnode *e = t->b[i];
                while (e) {
                    struct hnode *nx = e->next;
                    e->next = b[e->hash & (nb - 1)];
                    b[e->hash & (nb - 1)] = e;
                    e = nx;
                }
            }
            free(t->b);
            t->b = b;
            t->nb = nb;
        }
    }
    struct hnode **slot = &t->b[n->hash & (t->nb - 1)];
    n->next = *slot;
    *slot = n;
    t->n++;
}

static void ht_remove(struct htab *t, struct hnode *n)
{
    struct hnode **p = &t->b[n->hash & (t->nb - 1)];
    while (*p && *p != n)
        p = &(*p)->next;
    if (*p) {
        *p = n->next;
        t->n--;
    }
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void dv_bump(struct meta_data_version *dv)
{
    dv->timestamp = now_ms();
    dv->counter++;
}

static bool name_valid(const char *s, size_t max)
{
    size_t n = 0;
    for (; s[n]; n++) {
        unsigned char c = (unsigned char)s[n];
        if (n >= max)
            return false;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '%' || c == '|' || c == '_' || c == '-'))
            return false;
    }
    return n > 0;
}

bool meta_topic_name_valid(const char *name)
{
    return name && name_valid(name, META_TOPIC_NAME_MAX);
}

bool meta_group_name_valid(const char *name)
{
    return name && name_valid(name, META_GROUP_NAME_MAX);
}

/* Copies a raw LMDB key into a printable, bounded C string for messages. */
static const char *key_printable(const MDB_val *k, char *out, size_t outsz)
{
    size_t o = 0;
    const unsigned char *p = k->mv_data;
    for (size_t i = 0; i < k->mv_size && o + 5 < outsz; i++) {
        if (p[i] >= 0x20 && p[i] < 0x7f && p[i] != '\\')
            out[o++] = (char)p[i];
        else
            o += (size_t)snprintf(out + o, outsz - o, "\\x%02x", p[i]);
    }
    out[o] = '\0';
    return out;
}

static int mdb_to_errno(int rc)
{
    switch (rc) {
    case MDB_MAP_FULL:
        return -ENOSPC;
    case MDB_NOTFOUND:
        return -ENOENT;
    case MDB_CORRUPTED:
    case MDB_PAGE_NOTFOUND:
    case MDB_INVALID:
    case MDB_VERSION_MISMATCH:
        return -EBADMSG;
    default:
        return rc > 0 ? -rc : -EIO;
    }
}

/* Logs an LMDB failure (a full map gets its own, actionable message). */
static int lmdb_fail(const struct meta *m, const char *what, int rc)
{
    if (rc == MDB_MAP_FULL)
        log_error("metadata %s: store is full (map size %zu KiB) while %s; nothing was changed, "
                  "raise the metadata map size and restart",
                  m->dir, m->map_size >> 10, what);
    else
        log_error("metadata %s: %s failed: %s", m->dir, what, mdb_strerror(rc));
    return mdb_to_errno(rc);
}

static bool topic_fields_valid(const struct meta_topic *t)
{
    return t->read_queue_nums >= 0 && t->read_queue_nums <= META_QUEUE_MAX &&
           t->write_queue_nums >= 0 && t->write_queue_nums <= META_QUEUE_MAX && t->perm >= 0 &&
           t->perm <= 0xf &&
           (t->filter_type == META_FILTER_SINGLE_TAG || t->filter_type == META_FILTER_MULTI_TAG);
}

static bool group_fields_valid(const struct meta_group *g)
{
    return g->retry_queue_nums >= 0 && g->retry_queue_nums <= META_QUEUE_MAX &&
           g->retry_max_times >= -1 && g->broker_id >= 0 &&
           g->which_broker_when_consume_slowly >= 0 && g->consume_timeout_minute >= 0;
}

static void topic_encode(const struct meta_topic *t, uint8_t *p)
{
    p[0] = FMT_V1;
    wr_u32be(p + 1, (uint32_t)t->read_queue_nums);
    wr_u32be(p + 5, (uint32_t)t->write_queue_nums);
    wr_u32be(p + 9, (uint32_t)t->perm);
    p[13] = (uint8_t)t->filter_type;
    wr_u32be(p + 14, (uint32_t)t->sys_flag);
    p[18] = t->order ? 1 : 0;
}

static const char *topic_decode(const MDB_val *v, struct meta_topic *t)
{
    const uint8_t *p = v->mv_data;
    if (v->mv_size < 1 || p[0] != FMT_V1)
        return "unknown record format";
    if (v->mv_size != TOPIC_REC_LEN)
        return "wrong record length";
    t->read_queue_nums = (int32_t)rd_u32be(p + 1);
    t->write_queue_nums = (int32_t)rd_u32be(p + 5);
    t->perm = (int32_t)rd_u32be(p + 9);
    if (p[13] > META_FILTER_MULTI_TAG)
        return "unknown topicFilterType";
    t->filter_type = (enum meta_filter_type)p[13];
    t->sys_flag = (int32_t)rd_u32be(p + 14);
    if (p[18] > 1)
        return "bad order flag";
    t->order = p[18] != 0;
    if (!topic_fields_valid(t))
        return "field out of range";
    return NULL;
}

static void group_encode(const struct meta_group *g, uint8_t *p)
{
    p[0] = FMT_V1;
    p[1] = (uint8_t)((g->consume_enable ? GF_CONSUME : 0) |
                     (g->consume_from_min_enable ? GF_FROM_MIN : 0) |
                     (g->consume_broadcast_enable ? GF_BROADCAST : 0) |
                     (g->consume_message_orderly ? GF_ORDERLY : 0) |
                     (g->notify_consumer_ids_changed_enable ? GF_NOTIFY : 0));
    wr_u32be(p + 2, (uint32_t)g->retry_queue_nums);
    wr_u32be(p + 6, (uint32_t)g->retry_max_times);
    wr_u64be(p + 10, (uint64_t)g->broker_id);
    wr_u64be(p + 18, (uint64_t)g->which_broker_when_consume_slowly);
    wr_u32be(p + 26, (uint32_t)g->group_sys_flag);
    wr_u32be(p + 30, (uint32_t)g->consume_timeout_minute);
}

static const char *group_decode(const MDB_val *v, struct meta_group *g)
{
    const uint8_t *p = v->mv_data;
    if (v->mv_size < 1 || p[0] != FMT_V1)
        return "unknown record format";
    if (v->mv_size != GROUP_REC_LEN)
        return "wrong record length";
    if (p[1] & ~GF_ALL)
        return "unknown flag bits";
    g->consume_enable = p[1] & GF_CONSUME;
    g->consume_from_min_enable = p[1] & GF_FROM_MIN;
    g->consume_broadcast_enable = p[1] & GF_BROADCAST;
    g->consume_message_orderly = p[1] & GF_ORDERLY;
    g->notify_consumer_ids_changed_enable = p[1] & GF_NOTIFY;
    g->retry_queue_nums = (int32_t)rd_u32be(p + 2);
    g->retry_max_times = (int32_t)rd_u32be(p + 6);
    g->broker_id = (int64_t)rd_u64be(p + 10);
    g->which_broker_when_consume_slowly = (int64_t)rd_u64be(p + 18);
    g->group_sys_flag = (int32_t)rd_u32be(p + 26);
    g->consume_timeout_minute = (int32_t)rd_u32be(p + 30);
    if (!group_fields_valid(g))
        return "field out of range";
    return NULL;
}

static void dv_encode(const struct meta_data_version *dv, uint8_t *p)
{
    p[0] = FMT_V1;
    wr_u64be(p + 1, dv->state_version);
    wr_u64be(p + 9, dv->timestamp);
    wr_u64be(p + 17, dv->counter);
}

static const char *dv_decode(const MDB_val *v, struct meta_data_version *dv)
{
    const uint8_t *p = v->mv_data;
    if (v->mv_size < 1 || p[0] != FMT_V1)
        return "unknown record format";
    if (v->mv_size != DV_REC_LEN)
        return "wrong record length";
    dv->state_version = rd_u64be(p + 1);
    dv->timestamp = rd_u64be(p + 9);
    dv->counter = rd_u64be(p + 17);
    return NULL;
}

static size_t off_rec_len(const struct off_ent *e)
{
    return OFF_HDR_LEN + (size_t)e->count * OFF_ITEM_LEN;
}

static void off_encode(const int64_t *offs, uint32_t cap, uint32_t count, uint8_t *p)
{
    p[0] = FMT_V1;
    wr_u32be(p + 1, count);
    p += OFF_HDR_LEN;
    for (uint32_t q = 0; q < cap; q++) {
        if (offs[q] < 0)
            continue;
        wr_u32be(p, q);
        wr_u64be(p + 4, (uint64_t)offs[q]);
        p += OFF_ITEM_LEN;
    }
}

static struct topic_ent *topic_find(const struct meta *m, const char *name)
{
    size_t n = strlen(name);
    uint64_t h = hash_str(name, n);
    for (struct hnode *e = m->topics.b[h & (m->topics.nb - 1)]; e; e = e->next) {
        struct topic_ent *t = (struct topic_ent *)e;
        if (e->hash == h && strcmp(t->cfg.name, name) == 0)
            return t;
    }
    return NULL;
}

static struct group_ent *group_find(const struct meta *m, const char *name)
{
    size_t n = strlen(name);
    uint64_t h = hash_str(name, n);
    for (struct hnode *e = m->groups.b[h & (m->groups.nb - 1)]; e; e = e->next) {
        struct group_ent *g = (struct group_ent *)e;
        if (e->hash == h && strcmp(g->cfg.name, name) == 0)
            return g;
    }
    return NULL;
}

static struct off_ent *off_find(const struct meta *m, const char *t, size_t tl, const char *g,
                                size_t gl, uint64_t h)
{
    for (struct hnode *n = m->offs.b[h & (m->offs.nb - 1)]; n; n = n->next) {
        struct off_ent *e = (struct off_ent *)n;
        if (n->hash == h && e->topic_len == tl && e->key_len == tl + 1 + gl &&
            memcmp(e->key, t, tl) == 0 && memcmp(e->key + tl + 1, g, gl) == 0)
            return e;
    }
    return NULL;
}

static struct off_ent *off_new(const char *t, size_t tl, const char *g, size_t gl, uint32_t cap)
{
    struct off_ent *e = calloc(1, sizeof(*e));
    if (!e)
        return NULL;
    e->key = malloc(tl + gl + 2);
    e->offs = malloc((size_t)cap * sizeof(*e->offs));
    if (!e->key || !e->offs) {
        free(e->key);
        free(e->offs);
        free(e);
        return NULL;
    }
    memcpy(e->key, t, tl);
    e->key[tl] = '@';
    memcpy(e->key + tl + 1, g, gl);
    e->key[tl + 1 + gl] = '\0';
    e->topic_len = tl;
    e->key_len = tl + 1 + gl;
    e->h.hash = hash_tg(t, tl, g, gl);
    e->cap = cap;
    for (uint32_t i = 0; i < cap; i++)
        e->offs[i] = -1;
    return e;
}

static void off_free(struct off_ent *e)
{
    free(e->key);
    free(e->offs);
    free(e);
}

static void dirty_add(struct meta *m, struct off_ent *e)
{
    if (e->dirty)
        return;
    e->dirty = true;
    e->dprev = NULL;
    e->dnext = m->dirty_head;
    if (m->dirty_head)
        m->dirty_head->dprev = e;
    m->dirty_head = e;
    m->ndirty++;
}

static void dirty_del(struct meta *m, struct off_ent *e)
{
    if (!e->dirty)
        return;
    if (e->dprev)
        e->dprev->dnext = e->dnext;
    else
        m->dirty_head = e->dnext;
    if (e->dnext)
        e->dnext->dprev = e->dprev;
    e->dirty = false;
    e->dnext = e->dprev = NULL;
    m->ndirty--;
}

static void mark_all_dirty(struct meta *m)
{
    for (size_t i = 0; i < m->offs.nb; i++)
        for (struct hnode *n = m->offs.b[i]; n; n = n->next)
            dirty_add(m, (struct off_ent *)n);
}

static int mkdir_p(const char *path)
{
    char tmp[4096];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof(tmp))
        return -ENAMETOOLONG;
    memcpy(tmp, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (tmp[i] != '/' && tmp[i] != '\0')
            continue;
        char c = tmp[i];
        tmp[i] = '\0';
        if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
            return -errno;
        tmp[i] = c;
    }
    return 0;
}

static int corrupt(const struct meta *m, const char *table, const MDB_val *k, const char *why)
{
    char kb[256];
    log_error("metadata %s: corrupt record in table '%s', key '%s': %s; refusing to start "
              "(repair or remove the record)",
              m->dir, table, key_printable(k, kb, sizeof(kb)), why);
    return -EBADMSG;
}

static bool key_is_name(const MDB_val *k, size_t max, char *out)
{
    if (k->mv_size == 0 || k->mv_size > max)
        return false;
    memcpy(out, k->mv_data, k->mv_size);
    out[k->mv_size] = '\0';
    return strlen(out) == k->mv_size && name_valid(out, max);
}

static int load_meta(struct meta *m, MDB_txn *txn, bool *fresh)
{
    MDB_cursor *c;
    int rc = mdb_cursor_open(txn, m->dbi_meta, &c);
    if (rc)
        return lmdb_fail(m, "opening a cursor on table 'meta'", rc);
    MDB_val k, v;
    bool have_schema = false, have_tv = false, have_gv = false;
    int err = 0;
    for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0 && !err;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        const char *why = NULL;
        if (k.mv_size == strlen(KEY_SCHEMA) && memcmp(k.mv_data, KEY_SCHEMA, k.mv_size) == 0) {
            if (v.mv_size != 4)
                why = "wrong record length";
            else if (rd_u32be(v.mv_data) != SCHEMA_VERSION)
                why = "unsupported schema version (written by a newer broker?)";
            have_schema = true;
        } else if (k.mv_size == strlen(KEY_TOPICS_DV) &&
                   memcmp(k.mv_data, KEY_TOPICS_DV, k.mv_size) == 0) {
            why = dv_decode(&v, &m->tv);
            have_tv = true;
        } else if (k.mv_size == strlen(KEY_GROUPS_DV) &&
                   memcmp(k.mv_data, KEY_GROUPS_DV, k.mv_size) == 0) {
            why = dv_decode(&v, &m->gv);
            have_gv = true;
        } else {
            why = "unknown key";
        }
        if (why)
            err = corrupt(m, "meta", &k, why);
    }
    mdb_cursor_close(c);
    if (err)
        return err;
    if (rc != MDB_NOTFOUND)
        return lmdb_fail(m, "reading table 'meta'", rc);
    *fresh = !have_schema && !have_tv && !have_gv;
    if (*fresh)
        return 0;
    if (!have_schema || !have_tv || !have_gv) {
        log_error("metadata %s: table 'meta' is incomplete (schema=%d topics.dataVersion=%d "
                  "groups.dataVersion=%d); refusing to start",
                  m->dir, have_schema, have_tv, have_gv);
        return -EBADMSG;
    }
    return 0;
}

static int load_topics(struct meta *m, MDB_txn *txn)
{
    MDB_cursor *c;
    int rc = mdb_cursor_open(txn, m->dbi_topics, &c);
    if (rc)
        return lmdb_fail(m, "opening a cursor on table 'topics'", rc);
    MDB_val k, v;
    int err = 0;
    for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0 && !err;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        struct topic_ent *t = calloc(1, sizeof(*t));
        if (!t) {
            err = -ENOMEM;
            break;
        }
        const char *why = NULL;
        if (!key_is_name(&k, META_TOPIC_NAME_MAX, t->cfg.name))
            why = "key is not a valid topic name";
        else
            why = topic_decode(&v, &t->cfg);
        if (why) {
            free(t);
            err = corrupt(m, "topics", &k, why);
            break;
        }
        t->h.hash = hash_str(t->cfg.name, k.mv_size);
        ht_insert(&m->topics, &t->h);
    }
    mdb_cursor_close(c);
    if (err)
        return err;
    return rc == MDB_NOTFOUND ? 0 : lmdb_fail(m, "reading table 'topics'", rc);
}

static int load_groups(struct meta *m, MDB_txn *txn)
{
    MDB_cursor *c;
    int rc = mdb_cursor_open(txn, m->dbi_groups, &c);
    if (rc)
        return lmdb_fail(m, "opening a cursor on table 'groups'", rc);
    MDB_val k, v;
    int err = 0;
    for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0 && !err;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        struct group_ent *g = calloc(1, sizeof(*g));
        if (!g) {
            err = -ENOMEM;
            break;
        }
        const char *why = NULL;
        if (!key_is_name(&k, META_GROUP_NAME_MAX, g->cfg.name))
            why = "key is not a valid group name";
        else
            why = group_decode(&v, &g->cfg);
        if (why) {
            free(g);
            err = corrupt(m, "groups", &k, why);
            break;
        }
        g->h.hash = hash_str(g->cfg.name, k.mv_size);
        ht_insert(&m->groups, &g->h);
    }
    mdb_cursor_close(c);
    if (err)
        return err;
    return rc == MDB_NOTFOUND ? 0 : lmdb_fail(m, "reading table 'groups'", rc);
}

static const char *off_decode_key(const MDB_val *k, char *topic, char *group)
{
    const char *p = k->mv_data;
    const char *at = memchr(p, '@', k->mv_size);
    if (!at)
        return "key has no '@' separator";
    size_t tl = (size_t)(at - p), gl = k->mv_size - tl - 1;
    MDB_val tk = { tl, (void *)p }, gk = { gl, (void *)(at + 1) };
    if (!key_is_name(&tk, META_TOPIC_NAME_MAX, topic))
        return "key does not start with a valid topic name";
    if (!key_is_name(&gk, META_GROUP_NAME_MAX, group))
        return "key does not end with a valid group name";
    return NULL;
}

static const char *off_check_value(const MDB_val *v, uint32_t *count, uint32_t *maxq)
{
    const uint8_t *p = v->mv_data;
    if (v->mv_size < 1 || p[0] != FMT_V1)
        return "unknown record format";
    if (v->mv_size < OFF_HDR_LEN)
        return "record too short";
    uint32_t n = rd_u32be(p + 1);
    if (n == 0 || n > META_QUEUE_MAX || v->mv_size != OFF_HDR_LEN + (size_t)n * OFF_ITEM_LEN)
        return "wrong record length for its queue count";
    int64_t prev = -1;
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t *it = p + OFF_HDR_LEN + (size_t)i * OFF_ITEM_LEN;
        uint32_t q = rd_u32be(it);
        int64_t off = (int64_t)rd_u64be(it + 4);
        if (q >= META_QUEUE_MAX || (int64_t)q <= prev)
            return "queue ids out of range or not ascending";
        if (off < 0)
            return "negative offset";
        prev = q;
    }
    *count = n;
    *maxq = (uint32_t)prev;
    return NULL;
}

static int load_offsets(struct meta *m, MDB_txn *txn)
{
    MDB_cursor *c;
    int rc = mdb_cursor_open(txn, m->dbi_offsets, &c);
    if (rc)
        return lmdb_fail(m, "opening a cursor on table 'offsets'", rc);
    MDB_val k, v;
    int err = 0;
    char topic[META_TOPIC_NAME_MAX + 1], group[META_GROUP_NAME_MAX + 1];
    for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0 && !err;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        uint32_t count = 0, maxq = 0;
        const char *why = off_decode_key(&k, topic, group);
        if (!why)
            why = off_check_value(&v, &count, &maxq);
        if (why) {
            err = corrupt(m, "offsets", &k, why);
            break;
        }
        struct off_ent *e = off_new(topic, strlen(topic), group, strlen(group), maxq + 1);
        if (!e) {
            err = -ENOMEM;
            break;
        }
        const uint8_t *p = (const uint8_t *)v.mv_data + OFF_HDR_LEN;
        for (uint32_t i = 0; i < count; i++, p += OFF_ITEM_LEN)
            e->offs[rd_u32be(p)] = (int64_t)rd_u64be(p + 4);
        e->count = count;
        ht_insert(&m->offs, &e->h);
    }
    mdb_cursor_close(c);
    if (err)
        return err;
    return rc == MDB_NOTFOUND ? 0 : lmdb_fail(m, "reading table 'offsets'", rc);
}

static int put_raw(MDB_txn *txn, MDB_dbi dbi, const char *key, size_t klen, const void *val,
                   size_t vlen)
{
    MDB_val k = { klen, (void *)key }, v = { vlen, (void *)val };
    return mdb_put(txn, dbi, &k, &v, 0);
}

static int put_dv(MDB_txn *txn, MDB_dbi dbi, const char *key, const struct meta_data_version *dv)
{
    uint8_t rec[DV_REC_LEN];
    dv_encode(dv, rec);
    return put_raw(txn, dbi, key, strlen(key), rec, sizeof(rec));
}

static int init_fresh(struct meta *m, MDB_txn *txn)
{
    uint8_t schema[4];
    wr_u32be(schema, SCHEMA_VERSION);
    m->tv = (struct meta_data_version){ 0, now_ms(), 0 };
    m->gv = m->tv;
    int rc = put_raw(txn, m->dbi_meta, KEY_SCHEMA, strlen(KEY_SCHEMA), schema, sizeof(schema));
    if (!rc)
        rc = put_dv(txn, m->dbi_meta, KEY_TOPICS_DV, &m->tv);
    if (!rc)
        rc = put_dv(txn, m->dbi_meta, KEY_GROUPS_DV, &m->gv);
    return rc ? lmdb_fail(m, "initialising a new store", rc) : 0;
}

static int write_batch(struct meta *m, const struct buf *b, size_t n);

static void *writer_main(void *arg)
{
    struct meta *m = arg;
    pthread_mutex_lock(&m->mu);
    for (;;) {
        while (!m->busy && !m->stop)
            pthread_cond_wait(&m->cv, &m->mu);
        if (!m->busy)
            break;
        pthread_mutex_unlock(&m->mu);
        int rc = write_batch(m, &m->batch, m->batch_n);
        pthread_mutex_lock(&m->mu);
        m->batch_rc = rc;
        m->busy = false;
        pthread_cond_broadcast(&m->cv);
    }
    pthread_mutex_unlock(&m->mu);
    return NULL;
}

static void free_tables(struct meta *m)
{
    struct htab *tabs[] = { &m->topics, &m->groups, &m->offs };
    for (size_t t = 0; t < 3; t++) {
        if (!tabs[t]->b)
            continue;
        for (size_t i = 0; i < tabs[t]->nb; i++) {
            struct hnode *n = tabs[t]->b[i];
            while (n) {
                struct hnode *nx = n->next;
                if (t == 2)
                    off_free((struct off_ent *)n);
                else
                    free(n);
                n = nx;
            }
        }
        free(tabs[t]->b);
    }
}

static void meta_free(struct meta *m)
{
    if (m->writer_started) {
        pthread_mutex_lock(&m->mu);
        m->stop = true;
        pthread_cond_broadcast(&m->cv);
        pthread_mutex_unlock(&m->mu);
        pthread_join(m->writer, NULL);
        pthread_mutex_destroy(&m->mu);
        pthread_cond_destroy(&m->cv);
    }
    if (m->env)
        mdb_env_close(m->env);
    free_tables(m);
    buf_free(&m->batch);
    free(m->dir);
    free(m);
}

static int open_env(struct meta *m, size_t map_size)
{
    int rc = mdb_env_create(&m->env);
    if (rc) {
        m->env = NULL;
        return lmdb_fail(m, "creating the LMDB environment", rc);
    }
    if ((rc = mdb_env_set_maxdbs(m->env, 4)) || (rc = mdb_env_set_mapsize(m->env, map_size)))
        return lmdb_fail(m, "configuring the LMDB environment", rc);
    if ((rc = mdb_env_open(m->env, m->dir, MDB_NOTLS, 0644)))
        return lmdb_fail(m, "opening the LMDB environment", rc);
    MDB_envinfo info;
    if (mdb_env_info(m->env, &info) == 0)
        m->map_size = info.me_mapsize;
    int dead;
    mdb_reader_check(m->env, &dead);
    return 0;
}

int meta_open(const char *store_root, size_t map_size, struct meta **out)
{
    if (!store_root || !*store_root || !out)
        return -EINVAL;
    struct meta *m = calloc(1, sizeof(*m));
    if (!m)
        return -ENOMEM;
    m->map_size = map_size ? map_size : META_DEFAULT_MAP_SIZE;
    size_t dl = strlen(store_root) + sizeof("/metadata");
    m->dir = malloc(dl);
    int rc = -ENOMEM;
    if (!m->dir || ht_init(&m->topics) || ht_init(&m->groups) || ht_init(&m->offs))
        goto fail;
    snprintf(m->dir, dl, "%s/metadata", store_root);
    if ((rc = mkdir_p(m->dir))) {
        log_error("metadata %s: cannot create directory: %s", m->dir, strerror(-rc));
        goto fail;
    }
    if ((rc = open_env(m, m->map_size)))
        goto fail;

    MDB_txn *txn;
    int mrc = mdb_txn_begin(m->env, NULL, 0, &txn);
    if (mrc) {
        rc = lmdb_fail(m, "starting the load transaction", mrc);
        goto fail;
    }
    if ((mrc = mdb_dbi_open(txn, "meta", MDB_CREATE, &m->dbi_meta)) ||
        (mrc = mdb_dbi_open(txn, "topics", MDB_CREATE, &m->dbi_topics)) ||
        (mrc = mdb_dbi_open(txn, "groups", MDB_CREATE, &m->dbi_groups)) ||
        (mrc = mdb_dbi_open(txn, "offsets", MDB_CREATE, &m->dbi_offsets))) {
        mdb_txn_abort(txn);
        rc = lmdb_fail(m, "opening the named tables", mrc);
        goto fail;
    }
    bool fresh = false;
    rc = load_meta(m, txn, &fresh);
    if (!rc && fresh)
        rc = init_fresh(m, txn);
    if (!rc)
        rc = load_topics(m, txn);
    if (!rc)
        rc = load_groups(m, txn);
    if (!rc)
        rc = load_offsets(m, txn);
    if (rc) {
        mdb_txn_abort(txn);
        goto fail;
    }
    if ((mrc = mdb_txn_commit(txn))) {
        rc = lmdb_fail(m, "committing the load transaction", mrc);
        goto fail;
    }

    if ((rc = -pthread_mutex_init(&m->mu, NULL)))
        goto fail;
    if ((rc = -pthread_cond_init(&m->cv, NULL))) {
        pthread_mutex_destroy(&m->mu);
        goto fail;
    }
    if ((rc = -pthread_create(&m->writer, NULL, writer_main, m))) {
        pthread_mutex_destroy(&m->mu);
        pthread_cond_destroy(&m->cv);
        log_error("metadata %s: cannot start the offset writer thread: %s", m->dir,
                  strerror(-rc));
        goto fail;
    }
    m->writer_started = true;
    log_info("metadata %s: loaded %zu topics, %zu groups, %zu offset entries (map %zu KiB)",
             m->dir, m->topics.n, m->groups.n, m->offs.n, m->map_size >> 10);
    *out = m;
    return 0;
fail:
    meta_free(m);
    return rc;
}

/* Waits until no batch is in flight, then handles the result of the last
 * one: a failed batch is logged and all offsets are queued again. */
static int drain(struct meta *m)
{
    pthread_mutex_lock(&m->mu);
    while (m->busy)
        pthread_cond_wait(&m->cv, &m->mu);
    int rc = m->batch_rc;
    m->batch_rc = 0;
    pthread_mutex_unlock(&m->mu);
    if (rc) {
        mark_all_dirty(m);
        log_warn("metadata %s: offset batch failed (%s); %zu entries queued for the next batch",
                 m->dir, strerror(-rc), m->ndirty);
    }
    return rc;
}

int meta_close(struct meta *m)
{
    if (!m)
        return 0;
    int rc = meta_offsets_persist_sync(m);
    meta_free(m);
    return rc;
}

void meta_topic_defaults(struct meta_topic *t, const char *name)
{
    memset(t, 0, sizeof(*t));
    if (name)
        snprintf(t->name, sizeof(t->name), "%s", name);
    t->read_queue_nums = 16;
    t->write_queue_nums = 16;
    t->perm = META_PERM_READ | META_PERM_WRITE;
    t->filter_type = META_FILTER_SINGLE_TAG;
}

void meta_group_defaults(struct meta_group *g, const char *name)
{
    memset(g, 0, sizeof(*g));
    if (name)
        snprintf(g->name, sizeof(g->name), "%s", name);
    g->consume_enable = true;
    g->consume_from_min_enable = true;
    g->consume_broadcast_enable = true;
    g->notify_consumer_ids_changed_enable = true;
    g->retry_queue_nums = 1;
    g->retry_max_times = 16;
    g->broker_id = 0;
    g->which_broker_when_consume_slowly = 1;
    g->consume_timeout_minute = 15;
}

static bool topic_equal(const struct meta_topic *a, const struct meta_topic *b)
{
    return a->read_queue_nums == b->read_queue_nums && a->write_queue_nums == b->write_queue_nums &&
           a->perm == b->perm && a->filter_type == b->filter_type && a->sys_flag == b->sys_flag &&
           a->order == b->order;
}

static bool group_equal(const struct meta_group *a, const struct meta_group *b)
{
    return a->consume_enable == b->consume_enable &&
           a->consume_from_min_enable == b->consume_from_min_enable &&
           a->consume_broadcast_enable == b->consume_broadcast_enable &&
           a->consume_message_orderly == b->consume_message_orderly &&
           a->notify_consumer_ids_changed_enable == b->notify_consumer_ids_changed_enable &&
           a->retry_queue_nums == b->retry_queue_nums && a->retry_max_times == b->retry_max_times &&
           a->broker_id == b->broker_id &&
           a->which_broker_when_consume_slowly == b->which_broker_when_consume_slowly &&
           a->group_sys_flag == b->group_sys_flag &&
           a->consume_timeout_minute == b->consume_timeout_minute;
}

/* Writes (val != NULL) or deletes one config record plus the table's bumped
 * data version in a single transaction. */
static int config_write(struct meta *m, MDB_dbi dbi, const char *dv_key,
                        const struct meta_data_version *dv, const char *table, const char *name,
                        const void *val, size_t vlen)
{
    char what[META_GROUP_NAME_MAX + 64];
    snprintf(what, sizeof(what), "%s %s '%s'", val ? "writing" : "deleting", table, name);
    MDB_txn *txn;
    int rc = mdb_txn_begin(m->env, NULL, 0, &txn);
    if (rc)
        return lmdb_fail(m, what, rc);
    MDB_val k = { strlen(name), (void *)name };
    if (val) {
        MDB_val v = { vlen, (void *)val };
        rc = mdb_put(txn, dbi, &k, &v, 0);
    } else {
        rc = mdb_del(txn, dbi, &k, NULL);
    }
    if (!rc)
        rc = put_dv(txn, m->dbi_meta, dv_key, dv);
    if (rc) {
        mdb_txn_abort(txn);
        return lmdb_fail(m, what, rc);
    }
    if ((rc = mdb_txn_commit(txn)))
        return lmdb_fail(m, what, rc);
    return 0;
}

int meta_topic_put(struct meta *m, const struct meta_topic *t)
{
    if (!meta_topic_name_valid(t->name) || !topic_fields_valid(t))
        return -EINVAL;
    struct topic_ent *e = topic_find(m, t->name);
    if (e && topic_equal(&e->cfg, t))
        return 0;
    struct topic_ent *ne = NULL;
    if (!e && !(ne = calloc(1, sizeof(*ne))))
        return -ENOMEM;
    uint8_t rec[TOPIC_REC_LEN];
    topic_encode(t, rec);
    struct meta_data_version dv = m->tv;
    dv_bump(&dv);
    int rc = config_write(m, m->dbi_topics, KEY_TOPICS_DV, &dv, "topic", t->name, rec, sizeof(rec));
    if (rc) {
        free(ne);
        return rc;
    }
    m->tv = dv;
    if (!e) {
        e = ne;
        e->h.hash = hash_str(t->name, strlen(t->name));
        ht_insert(&m->topics, &e->h);
    }
    e->cfg = *t;
    return 0;
}

int meta_topic_delete(struct meta *m, const char *name)
{
    struct topic_ent *e = name ? topic_find(m, name) : NULL;
    if (!e)
        return -ENOENT;
    struct meta_data_version dv = m->tv;
    dv_bump(&dv);
    int rc = config_write(m, m->dbi_topics, KEY_TOPICS_DV, &dv, "topic", name, NULL, 0);
    if (rc)
        return rc;
    m->tv = dv;
    ht_remove(&m->topics, &e->h);
    free(e);
    return 0;
}

const struct meta_topic *meta_topic_get(const struct meta *m, const char *name)
{
    struct topic_ent *e = name ? topic_find(m, name) : NULL;
    return e ? &e->cfg : NULL;
}

size_t meta_topic_count(const struct meta *m) { return m->topics.n; }

int meta_topic_foreach(const struct meta *m, int (*fn)(const struct meta_topic *t, void *arg),
                       void *arg)
{
    for (size_t i = 0; i < m->topics.nb; i++)
        for (struct hnode *n = m->topics.b[i]; n; n = n->next) {
            int rc = fn(&((struct topic_ent *)n)->cfg, arg);
            if (rc)
                return rc;
        }
    return 0;
}

void meta_topics_version(const struct meta *m, struct meta_data_version *out) { *out = m->tv; }

int meta_group_put(struct meta *m, const struct meta_group *g)
{
    if (!meta_group_name_valid(g->name) || !group_fields_valid(g))
        return -EINVAL;
    struct group_ent *e = group_find(m, g->name);
    if (e && group_equal(&e->cfg, g))
        return 0;
    struct group_ent *ne = NULL;
    if (!e && !(ne = calloc(1, sizeof(*ne))))
        return -ENOMEM;
    uint8_t rec[GROUP_REC_LEN];
    group_encode(g, rec);
    struct meta_data_version dv = m->gv;
    dv_bump(&dv);
    int rc = config_write(m, m->dbi_groups, KEY_GROUPS_DV, &dv, "group", g->name, rec, sizeof(rec));
    if (rc) {
        free(ne);
        return rc;
    }
    m->gv = dv;
    if (!e) {
        e = ne;
        e->h.hash = hash_str(g->name, strlen(g->name));
        ht_insert(&m->groups, &e->h);
    }
    e->cfg = *g;
    return 0;
}

int meta_group_delete(struct meta *m, const char *name)
{
    struct group_ent *e = name ? group_find(m, name) : NULL;
    if (!e)
        return -ENOENT;
    struct meta_data_version dv = m->gv;
    dv_bump(&dv);
    int rc = config_write(m, m->dbi_groups, KEY_GROUPS_DV, &dv, "group", name, NULL, 0);
    if (rc)
        return rc;
    m->gv = dv;
    ht_remove(&m->groups, &e->h);
    free(e);
    return 0;
}

const struct meta_group *meta_group_get(const struct meta *m, const char *name)
{
    struct group_ent *e = name ? group_find(m, name) : NULL;
    return e ? &e->cfg : NULL;
}

size_t meta_group_count(const struct meta *m) { return m->groups.n; }

int meta_group_foreach(const struct meta *m, int (*fn)(const struct meta_group *g, void *arg),
                       void *arg)
{
    for (size_t i = 0; i < m->groups.nb; i++)
        for (struct hnode *n = m->groups.b[i]; n; n = n->next) {
            int rc = fn(&((struct group_ent *)n)->cfg, arg);
            if (rc)
                return rc;
        }
    return 0;
}

void meta_groups_version(const struct meta *m, struct meta_data_version *out) { *out = m->gv; }

static int grow_slots(struct off_ent *e, uint32_t need)
{
    uint64_t cap = e->cap ? (uint64_t)e->cap * 2 : 8;
    if (cap < need)
        cap = need;
    if (cap > META_QUEUE_MAX)
        cap = META_QUEUE_MAX;
    int64_t *p = realloc(e->offs, (size_t)cap * sizeof(*p));
    if (!p)
        return -ENOMEM;
    for (uint64_t i = e->cap; i < cap; i++)
        p[i] = -1;
    e->offs = p;
    e->cap = (uint32_t)cap;
    return 0;
}

int meta_offset_commit(struct meta *m, const char *topic, const char *group, uint32_t queue_id,
                       int64_t offset)
{
    if (!topic || !group || offset < 0 || queue_id >= META_QUEUE_MAX)
        return -EINVAL;
    size_t tl = strlen(topic), gl = strlen(group);
    uint64_t h = hash_tg(topic, tl, group, gl);
    struct off_ent *e = off_find(m, topic, tl, group, gl, h);
    if (!e) {
        if (!meta_topic_name_valid(topic) || !meta_group_name_valid(group))
            return -EINVAL;
        if (!(e = off_new(topic, tl, group, gl, queue_id < 8 ? 8 : queue_id + 1)))
            return -ENOMEM;
        ht_insert(&m->offs, &e->h);
    } else if (queue_id >= e->cap) {
        int rc = grow_slots(e, queue_id + 1);
        if (rc)
            return rc;
    }
    if (e->offs[queue_id] < 0)
        e->count++;
    e->offs[queue_id] = offset;
    dirty_add(m, e);
    return 0;
}

int meta_offset_query(const struct meta *m, const char *topic, const char *group,
                      uint32_t queue_id, int64_t *offset)
{
    if (!topic || !group)
        return -EINVAL;
    size_t tl = strlen(topic), gl = strlen(group);
    struct off_ent *e = off_find(m, topic, tl, group, gl, hash_tg(topic, tl, group, gl));
    if (!e || queue_id >= e->cap || e->offs[queue_id] < 0)
        return -ENOENT;
    *offset = e->offs[queue_id];
    return 0;
}

static bool off_matches(const struct off_ent *e, const char *topic, const char *group)
{
    if (topic && (strlen(topic) != e->topic_len || memcmp(e->key, topic, e->topic_len) != 0))
        return false;
    if (group && strcmp(e->key + e->topic_len + 1, group) != 0)
        return false;
    return true;
}

int meta_offsets_foreach(const struct meta *m, const char *topic, const char *group,
                         int (*fn)(const char *topic, const char *group, uint32_t queue_id,
                                   int64_t offset, void *arg),
                         void *arg)
{
    char tb[META_TOPIC_NAME_MAX + 1];
    for (size_t i = 0; i < m->offs.nb; i++)
        for (struct hnode *n = m->offs.b[i]; n; n = n->next) {
            struct off_ent *e = (struct off_ent *)n;
            if (!off_matches(e, topic, group))
                continue;
            memcpy(tb, e->key, e->topic_len);
            tb[e->topic_len] = '\0';
            for (uint32_t q = 0; q < e->cap; q++) {
                if (e->offs[q] < 0)
                    continue;
                int rc = fn(tb, e->key + e->topic_len + 1, q, e->offs[q], arg);
                if (rc)
                    return rc;
            }
        }
    return 0;
}

/* Deletes every entry matching the filter, on disk first, then in memory. */
static int offsets_delete(struct meta *m, const char *topic, const char *group)
{
    drain(m);
    size_t n = 0, cap = 0;
    struct off_ent **v = NULL;
    for (size_t i = 0; i < m->offs.nb; i++)
        for (struct hnode *h = m->offs.b[i]; h; h = h->next) {
            struct off_ent *e = (struct off_ent *)h;
            if (!off_matches(e, topic, group))
                continue;
            if (n == cap) {
                cap = cap ? cap * 2 : 16;
                struct off_ent **nv = realloc(v, cap * sizeof(*nv));
                if (!nv) {
                    free(v);
                    return -ENOMEM;
                }
                v = nv;
            }
            v[n++] = e;
        }
    if (n == 0)
        return 0;
    char what[META_GROUP_NAME_MAX + 64];
    snprintf(what, sizeof(what), "deleting the offsets of %s '%s'", topic ? "topic" : "group",
             topic ? topic : group);
    MDB_txn *txn;
    int rc = mdb_txn_begin(m->env, NULL, 0, &txn);
    if (rc) {
        free(v);
        return lmdb_fail(m, what, rc);
    }
    for (size_t i = 0; i < n && !rc; i++) {
        MDB_val k = { v[i]->key_len, v[i]->key };
        rc = mdb_del(txn, m->dbi_offsets, &k, NULL);
        if (rc == MDB_NOTFOUND)
            rc = 0;
    }
    if (rc) {
        mdb_txn_abort(txn);
    } else {
        rc = mdb_txn_commit(txn);
    }
    if (rc) {
        free(v);
        return lmdb_fail(m, what, rc);
    }
    for (size_t i = 0; i < n; i++) {
        dirty_del(m, v[i]);
        ht_remove(&m->offs, &v[i]->h);
        off_free(v[i]);
    }
    free(v);
    return (int)n;
}

int meta_offsets_delete_group(struct meta *m, const char *group)
{
    if (!meta_group_name_valid(group))
        return -EINVAL;
    return offsets_delete(m, NULL, group);
}

int meta_offsets_delete_topic(struct meta *m, const char *topic)
{
    if (!meta_topic_name_valid(topic))
        return -EINVAL;
    return offsets_delete(m, topic, NULL);
}

int meta_offsets_reset(struct meta *m, const char *topic, const char *group,
                       const int64_t *offsets, uint32_t n)
{
    if (!meta_topic_name_valid(topic) || !meta_group_name_valid(group) || n == 0 ||
        n > META_QUEUE_MAX || !offsets)
        return -EINVAL;
    for (uint32_t i = 0; i < n; i++)
        if (offsets[i] < 0)
            return -EINVAL;
    drain(m);
    size_t tl = strlen(topic), gl = strlen(group);
    uint64_t h = hash_tg(topic, tl, group, gl);
    struct off_ent *e = off_find(m, topic, tl, group, gl, h);
    struct off_ent *ne = NULL;
    if (!e && !(ne = off_new(topic, tl, group, gl, 1)))
        return -ENOMEM;
    int64_t *slots = malloc((size_t)n * sizeof(*slots));
    size_t rlen = OFF_HDR_LEN + (size_t)n * OFF_ITEM_LEN;
    uint8_t *rec = malloc(rlen);
    if (!slots || !rec) {
        free(slots);
        free(rec);
        if (ne)
            off_free(ne);
        return -ENOMEM;
    }
    memcpy(slots, offsets, (size_t)n * sizeof(*slots));
    off_encode(slots, n, n, rec);

    const char *key = e ? e->key : ne->key;
    size_t klen = e ? e->key_len : ne->key_len;
    char what[META_TOPIC_NAME_MAX + META_GROUP_NAME_MAX + 64];
    snprintf(what, sizeof(what), "resetting the offsets of '%s'", key);
    MDB_txn *txn;
    int rc = mdb_txn_begin(m->env, NULL, 0, &txn);
    if (!rc) {
        rc = put_raw(txn, m->dbi_offsets, key, klen, rec, rlen);
        if (rc)
            mdb_txn_abort(txn);
        else
            rc = mdb_txn_commit(txn);
    }
    free(rec);
    if (rc) {
        free(slots);
        if (ne)
            off_free(ne);
        return lmdb_fail(m, what, rc);
    }
    if (!e) {
        e = ne;
        ht_insert(&m->offs, &e->h);
    }
    free(e->offs);
    e->offs = slots;
    e->cap = n;
    e->count = n;
    dirty_del(m, e);
    return 0;
}

/* Moves every dirty entry into the staging buffer and clears its flag. The
 * size is computed first so the only allocation happens before anything is
 * taken off the dirty list. */
static int build_batch(struct meta *m)
{
    size_t total = 0;
    for (struct off_ent *e = m->dirty_head; e; e = e->dnext)
        total += 8 + e->key_len + off_rec_len(e);
    buf_reset(&m->batch);
    m->batch_n = 0;
    int rc = buf_reserve(&m->batch, total);
    if (rc)
        return rc;
    uint8_t *p = m->batch.data;
    while (m->dirty_head) {
        struct off_ent *e = m->dirty_head;
        size_t vlen = off_rec_len(e);
        wr_u32be(p, (uint32_t)e->key_len);
        memcpy(p + 4, e->key, e->key_len);
        p += 4 + e->key_len;
        wr_u32be(p, (uint32_t)vlen);
        off_encode(e->offs, e->cap, e->count, p + 4);
        p += 4 + vlen;
        m->batch_n++;
        dirty_del(m, e);
    }
    m->batch.len = total;
    return 0;
}

/* Stores a staged batch in one write transaction; runs on the writer thread
 * or, for persist_sync, on the caller's. */
static int write_batch(struct meta *m, const struct buf *b, size_t n)
{
    char what[96];
    snprintf(what, sizeof(what), "persisting a batch of %zu consumer offset entries", n);
    MDB_txn *txn;
    int rc = mdb_txn_begin(m->env, NULL, 0, &txn);
    if (rc)
        return lmdb_fail(m, what, rc);
    const uint8_t *p = b->data;
    for (size_t i = 0; i < n && !rc; i++) {
        MDB_val k, v;
        k.mv_size = rd_u32be(p);
        k.mv_data = (void *)(p + 4);
        p += 4 + k.mv_size;
        v.mv_size = rd_u32be(p);
        v.mv_data = (void *)(p + 4);
        p += 4 + v.mv_size;
        rc = mdb_put(txn, m->dbi_offsets, &k, &v, 0);
    }
    if (rc) {
        mdb_txn_abort(txn);
        return lmdb_fail(m, what, rc);
    }
    if ((rc = mdb_txn_commit(txn)))
        return lmdb_fail(m, what, rc);
    return 0;
}

int meta_offsets_persist(struct meta *m)
{
    pthread_mutex_lock(&m->mu);
    bool busy = m->busy;
    pthread_mutex_unlock(&m->mu);
    if (busy)
        return -EBUSY;
    int prev = drain(m);
    if (m->ndirty == 0)
        return prev;
    int rc = build_batch(m);
    if (rc)
        return rc;
    pthread_mutex_lock(&m->mu);
    m->busy = true;
    pthread_cond_broadcast(&m->cv);
    pthread_mutex_unlock(&m->mu);
    return prev;
}

int meta_offsets_persist_sync(struct meta *m)
{
    drain(m);
    if (m->ndirty == 0)
        return 0;
    int rc = build_batch(m);
    if (rc)
        return rc;
    rc = write_batch(m, &m->batch, m->batch_n);
    if (rc)
        mark_all_dirty(m);
    return rc;
}

size_t meta_offsets_dirty(const struct meta *m) { return m->ndirty; }

int meta_json_string(struct buf *out, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    int rc = buf_append_u8(out, '"');
    size_t run = 0;
    for (size_t i = 0; i < len && !rc; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[6];
        size_t el = 0;
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            el = 2;
        } else if (c < 0x20) {
            memcpy(esc, "\\u00", 4);
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 0xf];
            el = 6;
        }
        if (!el) {
            run++;
            continue;
        }
        rc = buf_append(out, s + i - run, run);
        run = 0;
        if (!rc)
            rc = buf_append(out, esc, el);
    }
    if (!rc)
        rc = buf_append(out, s + len - run, run);
    if (!rc)
        rc = buf_append_u8(out, '"');
    return rc;
}

static int cmp_topic(const void *a, const void *b)
{
    return strcmp((*(const struct topic_ent *const *)a)->cfg.name,
                  (*(const struct topic_ent *const *)b)->cfg.name);
}

static int cmp_group(const void *a, const void *b)
{
    return strcmp((*(const struct group_ent *const *)a)->cfg.name,
                  (*(const struct group_ent *const *)b)->cfg.name);
}

static int cmp_off(const void *a, const void *b)
{
    return strcmp((*(const struct off_ent *const *)a)->key, (*(const struct off_ent *const *)b)->key);
}

/* Returns a malloc'd array of the table's entries sorted with cmp (NULL with
 * *err = -ENOMEM on failure, NULL with *err = 0 for an empty table). */
static void **sorted_entries(const struct htab *t, int (*cmp)(const void *, const void *), int *err)
{
    *err = 0;
    if (t->n == 0)
        return NULL;
    void **v = malloc(t->n * sizeof(*v));
    if (!v) {
        *err = -ENOMEM;
        return NULL;
    }
    size_t k = 0;
    for (size_t i = 0; i < t->nb; i++)
        for (struct hnode *n = t->b[i]; n; n = n->next)
            v[k++] = n;
    qsort(v, k, sizeof(*v), cmp);
    return v;
}

static int json_dv(struct buf *out, const struct meta_data_version *dv)
{
    return buf_printf(out,
                      "\"dataVersion\":{\"stateVersion\":%llu,\"timestamp\":%llu,\"counter\":%llu}}",
                      (unsigned long long)dv->state_version, (unsigned long long)dv->timestamp,
                      (unsigned long long)dv->counter);
}

static const char *tf(bool b) { return b ? "true" : "false"; }

int meta_topics_encode_json(const struct meta *m, struct buf *out)
{
    int rc;
    void **v = sorted_entries(&m->topics, cmp_topic, &rc);
    if (rc)
        return rc;
    rc = buf_append(out, "{\"topicConfigTable\":{", 21);
    for (size_t i = 0; i < m->topics.n && !rc; i++) {
        const struct meta_topic *t = &((struct topic_ent *)v[i])->cfg;
        size_t nl = strlen(t->name);
        if (i)
            rc = buf_append_u8(out, ',');
        if (!rc)
            rc = meta_json_string(out, t->name, nl);
        if (!rc)
            rc = buf_append(out, ":{\"topicName\":", 14);
        if (!rc)
            rc = meta_json_string(out, t->name, nl);
        if (!rc)
            rc = buf_printf(out,
                            ",\"readQueueNums\":%d,\"writeQueueNums\":%d,\"perm\":%d,"
                            "\"topicFilterType\":\"%s\",\"topicSysFlag\":%d,\"order\":%s}",
                            t->read_queue_nums, t->write_queue_nums, t->perm,
                            t->filter_type == META_FILTER_MULTI_TAG ? "MULTI_TAG" : "SINGLE_TAG",
                            t->sys_flag, tf(t->order));
    }
    free(v);
    if (!rc)
        rc = buf_append(out, "},", 2);
    return rc ? rc : json_dv(out, &m->tv);
}

int meta_groups_encode_json(const struct meta *m, struct buf *out)
{
    int rc;
    void **v = sorted_entries(&m->groups, cmp_group, &rc);
    if (rc)
        return rc;
    rc = buf_append(out, "{\"subscriptionGroupTable\":{", 27);
    for (size_t i = 0; i < m->groups.n && !rc; i++) {
        const struct meta_group *g = &((struct group_ent *)v[i])->cfg;
        size_t nl = strlen(g->name);
        if (i)
            rc = buf_append_u8(out, ',');
        if (!rc)
            rc = meta_json_string(out, g->name, nl);
        if (!rc)
            rc = buf_append(out, ":{\"groupName\":", 14);
        if (!rc)
            rc = meta_json_string(out, g->name, nl);
        if (!rc)
            rc = buf_printf(out,
                            ",\"consumeEnable\":%s,\"consumeFromMinEnable\":%s,"
                            "\"consumeBroadcastEnable\":%s,\"consumeMessageOrderly\":%s,"
                            "\"retryQueueNums\":%d,\"retryMaxTimes\":%d,\"brokerId\":%lld,"
                            "\"whichBrokerWhenConsumeSlowly\":%lld,"
                            "\"notifyConsumerIdsChangedEnable\":%s,\"groupSysFlag\":%d,"
                            "\"consumeTimeoutMinute\":%d}",
                            tf(g->consume_enable), tf(g->consume_from_min_enable),
                            tf(g->consume_broadcast_enable), tf(g->consume_message_orderly),
                            g->retry_queue_nums, g->retry_max_times, (long long)g->broker_id,
                            (long long)g->which_broker_when_consume_slowly,
                            tf(g->notify_consumer_ids_changed_enable), g->group_sys_flag,
                            g->consume_timeout_minute);
    }
    free(v);
    if (!rc)
        rc = buf_append(out, "},", 2);
    return rc ? rc : json_dv(out, &m->gv);
}

int meta_offsets_encode_json(const struct meta *m, struct buf *out)
{
    int rc;
    void **v = sorted_entries(&m->offs, cmp_off, &rc);
    if (rc)
        return rc;
    rc = buf_append(out, "{\"offsetTable\":{", 16);
    for (size_t i = 0; i < m->offs.n && !rc; i++) {
        const struct off_ent *e = v[i];
        if (i)
            rc = buf_append_u8(out, ',');
        if (!rc)
            rc = meta_json_string(out, e->key, e->key_len);
        if (!rc)
            rc = buf_append(out, ":{", 2);
        bool first = true;
        for (uint32_t q = 0; q < e->cap && !rc; q++) {
            if (e->offs[q] < 0)
                continue;
            rc = buf_printf(out, "%s%u:%lld", first ? "" : ",", q, (long long)e->offs[q]);
            first = false;
        }
        if (!rc)
            rc = buf_append_u8(out, '}');
    }
    free(v);
    if (!rc)
        rc = buf_append(out, "}}", 2);
    return rc;
}
