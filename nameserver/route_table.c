/*
 * Nameserver route table; see route_table.h for the rules.
 *
 * Shape: broker names ("groups", RocketMQ's BrokerData) live in an array kept
 * sorted by name, each with its members sorted by broker id; a member carries
 * its own liveness (RocketMQ's BrokerLiveInfo), so the address table and the
 * live table can never disagree. Topics live in a chained hash table (route
 * lookups are the hot path, and clusters hold thousands of topics); each topic
 * holds one small queue-data entry per broker name, pointing at the group.
 * Whenever a group is freed its queue data is purged in the same step, which
 * keeps those pointers valid. JSON is written by hand into a struct buf so the
 * layout (key order, bare numeric brokerAddrs keys) matches fastjson exactly,
 * and every listing is sorted so answers are deterministic.
 */
#include "route_table.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "json_util.h"
#include "log.h"

struct member {
    int64_t id;
    uint64_t conn_id;
    int64_t last_ms;
    struct ns_data_version dv;
    char addr[NS_ADDR_MAX + 1];
    char ha_addr[NS_ADDR_MAX + 1];
};

struct group {
    char name[NS_NAME_MAX + 1];
    char cluster[NS_NAME_MAX + 1];
    struct member *m;
    size_t n, cap;
};

struct qdata {
    struct group *g;
    int32_t read_queues, write_queues, perm, sys_flag;
};

struct topic {
    struct topic *next;
    struct qdata *qd;
    size_t n, cap;
    char name[];
};

struct ns_route_table {
    struct group **groups;
    size_t ngroups, gcap;
    struct topic **buckets;
    size_t nbuckets, ntopics;
};

/* A topic entry of a register body, validated but not yet applied. */
struct topic_cfg {
    const char *name;
    int32_t read_queues, write_queues, perm, sys_flag;
};

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || !errlen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return h;
}

/* Non-empty, at most max bytes, no control characters. */
static bool name_ok(const char *s, size_t max)
{
    if (!s || !*s)
        return false;
    size_t n = 0;
    for (; s[n]; n++) {
        unsigned char c = (unsigned char)s[n];
        if (c < 0x20 || c == 0x7f || n >= max)
            return false;
    }
    return true;
}

struct ns_route_table *ns_route_table_create(void)
{
    struct ns_route_table *rt = calloc(1, sizeof *rt);
    if (!rt)
        return NULL;
    rt->nbuckets = 64;
    rt->buckets = calloc(rt->nbuckets, sizeof *rt->buckets);
    if (!rt->buckets) {
        free(rt);
        return NULL;
    }
    return rt;
}

void ns_route_table_free(struct ns_route_table *rt)
{
    if (!rt)
        return;
    for (size_t b = 0; b < rt->nbuckets; b++) {
        struct topic *t = rt->buckets[b];
        while (t) {
            struct topic *next = t->next;
            free(t->qd);
            free(t);
            t = next;
        }
    }
    free(rt->buckets);
    for (size_t i = 0; i < rt->ngroups; i++) {
        free(rt->groups[i]->m);
        free(rt->groups[i]);
    }
    free(rt->groups);
    free(rt);
}

static struct topic *topic_find(const struct ns_route_table *rt, const char *name)
{
    struct topic *t = rt->buckets[hash_str(name) & (rt->nbuckets - 1)];
    while (t && strcmp(t->name, name) != 0)
        t = t->next;
    return t;
}

/* Doubles the bucket array; on allocation failure the table keeps working
 * with longer chains. */
static void topics_grow(struct ns_route_table *rt)
{
    size_t nb = rt->nbuckets * 2;
    struct topic **b = calloc(nb, sizeof *b);
    if (!b)
        return;
    for (size_t i = 0; i < rt->nbuckets; i++) {
        struct topic *t = rt->buckets[i];
        while (t) {
            struct topic *next = t->next;
            size_t h = hash_str(t->name) & (nb - 1);
            t->next = b[h];
            b[h] = t;
            t = next;
        }
    }
    free(rt->buckets);
    rt->buckets = b;
    rt->nbuckets = nb;
}

static struct topic *topic_create(struct ns_route_table *rt, const char *name)
{
    size_t len = strlen(name);
    struct topic *t = calloc(1, sizeof *t + len + 1);
    if (!t)
        return NULL;
    memcpy(t->name, name, len + 1);
    if (rt->ntopics >= rt->nbuckets)
        topics_grow(rt);
    size_t h = hash_str(name) & (rt->nbuckets - 1);
    t->next = rt->buckets[h];
    rt->buckets[h] = t;
    rt->ntopics++;
    return t;
}

/* Unlinks and frees the topic that *link points at. */
static void topic_unlink(struct ns_route_table *rt, struct topic **link)
{
    struct topic *t = *link;
    *link = t->next;
    free(t->qd);
    free(t);
    rt->ntopics--;
}

static void topic_drop(struct ns_route_table *rt, struct topic *t)
{
    struct topic **link = &rt->buckets[hash_str(t->name) & (rt->nbuckets - 1)];
    while (*link != t)
        link = &(*link)->next;
    topic_unlink(rt, link);
}

static struct qdata *qd_find(const struct topic *t, const struct group *g)
{
    for (size_t i = 0; i < t->n; i++)
        if (t->qd[i].g == g)
            return &t->qd[i];
    return NULL;
}

static void qd_remove_at(struct topic *t, size_t i)
{
    memmove(&t->qd[i], &t->qd[i + 1], (t->n - i - 1) * sizeof *t->qd);
    t->n--;
}

/* Binary search for name in the sorted group array; *pos gets the insertion
 * point when absent. */
static struct group *group_find(const struct ns_route_table *rt, const char *name, size_t *pos)
{
    size_t lo = 0, hi = rt->ngroups;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(rt->groups[mid]->name, name);
        if (c == 0) {
            if (pos)
                *pos = mid;
            return rt->groups[mid];
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (pos)
        *pos = lo;
    return NULL;
}

static struct member *member_by_id(const struct group *g, int64_t id)
{
    for (size_t i = 0; i < g->n; i++)
        if (g->m[i].id == id)
            return &g->m[i];
    return NULL;
}

/* Finds the member registered with addr anywhere in the table. */
static bool find_addr(const struct ns_route_table *rt, const char *addr, size_t *gi, size_t *mi)
{
    for (size_t i = 0; i < rt->ngroups; i++) {
        const struct group *g = rt->groups[i];
        for (size_t j = 0; j < g->n; j++) {
            if (strcmp(g->m[j].addr, addr) == 0) {
                *gi = i;
                *mi = j;
                return true;
            }
        }
    }
    return false;
}

/* Frees group gi after purging its queue data; topics left without any
 * queue data disappear. */
static void group_remove(struct ns_route_table *rt, size_t gi)
{
    struct group *g = rt->groups[gi];
    for (size_t b = 0; b < rt->nbuckets; b++) {
        struct topic **link = &rt->buckets[b];
        while (*link) {
            struct topic *t = *link;
            for (size_t i = 0; i < t->n; i++) {
                if (t->qd[i].g == g) {
                    qd_remove_at(t, i);
                    break;
                }
            }
            if (t->n == 0) {
                log_info("topic %s removed: its last broker %s is gone", t->name, g->name);
                topic_unlink(rt, link);
            } else {
                link = &t->next;
            }
        }
    }
    log_info("broker name %s removed from cluster %s: no member left", g->name, g->cluster);
    memmove(&rt->groups[gi], &rt->groups[gi + 1], (rt->ngroups - gi - 1) * sizeof *rt->groups);
    rt->ngroups--;
    free(g->m);
    free(g);
}

/* Removes member mi of group gi, and the group with it if it was the last. */
static void member_remove(struct ns_route_table *rt, size_t gi, size_t mi, const char *why)
{
    struct group *g = rt->groups[gi];
    log_info("broker %s (%s id %" PRId64 ", cluster %s) removed: %s", g->m[mi].addr, g->name,
             g->m[mi].id, g->cluster, why);
    memmove(&g->m[mi], &g->m[mi + 1], (g->n - mi - 1) * sizeof *g->m);
    g->n--;
    if (g->n == 0)
        group_remove(rt, gi);
}

static int grow(void **arr, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return 0;
    size_t nc = *cap ? *cap * 2 : 4;
    while (nc < need)
        nc *= 2;
    void *p = realloc(*arr, nc * elem);
    if (!p)
        return -ENOMEM;
    *arr = p;
    *cap = nc;
    return 0;
}

static bool dv_newer(const struct ns_data_version *a, const struct ns_data_version *b)
{
    if (a->state_version != b->state_version)
        return a->state_version > b->state_version;
    if (a->counter != b->counter)
        return a->counter > b->counter;
    return a->timestamp > b->timestamp;
}

/* Reads an optional integer member into *out within [lo, hi]; absent or null
 * keeps *out. */
static int get_int(json_t *obj, const char *key, int64_t lo, int64_t hi, int64_t *out,
                   const char *where, char *err, size_t errlen)
{
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi) {
        set_err(err, errlen, "%s.%s: expected an integer in [%" PRId64 ", %" PRId64 "]", where,
                key, lo, hi);
        return -1;
    }
    *out = json_integer_value(v);
    return 0;
}

static int dv_from_json(json_t *obj, struct ns_data_version *dv, const char *where, char *err,
                        size_t errlen)
{
    memset(dv, 0, sizeof *dv);
    if (!obj || json_is_null(obj))
        return 0;
    if (!json_is_object(obj)) {
        set_err(err, errlen, "%s: expected an object", where);
        return -1;
    }
    if (get_int(obj, "stateVersion", INT64_MIN, INT64_MAX, &dv->state_version, where, err, errlen) ||
        get_int(obj, "timestatmp", INT64_MIN, INT64_MAX, &dv->timestamp, where, err, errlen) ||
        get_int(obj, "timestamp", INT64_MIN, INT64_MAX, &dv->timestamp, where, err, errlen) ||
        get_int(obj, "counter", INT64_MIN, INT64_MAX, &dv->counter, where, err, errlen))
        return -1;
    return 0;
}

int ns_parse_data_version(const char *json, size_t len, struct ns_data_version *out, char *err,
                          size_t errlen)
{
    char jerr[256];
    json_t *root = json_parse_rocketmq(json, len, jerr, sizeof jerr);
    if (!root) {
        set_err(err, errlen, "data version: invalid JSON: %s", jerr);
        return -EINVAL;
    }
    int rc = json_is_object(root) ? dv_from_json(root, out, "dataVersion", err, errlen) : -1;
    if (!json_is_object(root))
        set_err(err, errlen, "dataVersion: expected an object");
    json_decref(root);
    return rc ? -EINVAL : 0;
}

/* Validates a RegisterBrokerBody. On success *root holds the parsed JSON
 * (the topic names point into it) and *topics an array the caller frees. */
static int parse_register_body(const char *body, size_t len, json_t **root,
                               struct ns_data_version *dv, struct topic_cfg **topics,
                               size_t *ntopics, char *err, size_t errlen)
{
    *root = NULL;
    *topics = NULL;
    *ntopics = 0;
    memset(dv, 0, sizeof *dv);
    if (!body || len == 0)
        return 0;
    char jerr[256];
    json_t *r = json_parse_rocketmq(body, len, jerr, sizeof jerr);
    if (!r) {
        set_err(err, errlen, "register body: invalid JSON: %s", jerr);
        return -EINVAL;
    }
    if (!json_is_object(r)) {
        set_err(err, errlen, "register body: expected a JSON object");
        goto bad;
    }
    json_t *fsl = json_object_get(r, "filterServerList");
    if (fsl && !json_is_null(fsl) && !json_is_array(fsl)) {
        set_err(err, errlen, "register body: filterServerList: expected an array");
        goto bad;
    }
    json_t *wrap = json_object_get(r, "topicConfigSerializeWrapper");
    if (!wrap || json_is_null(wrap)) {
        *root = r;
        return 0;
    }
    if (!json_is_object(wrap)) {
        set_err(err, errlen, "register body: topicConfigSerializeWrapper: expected an object");
        goto bad;
    }
    if (dv_from_json(json_object_get(wrap, "dataVersion"), dv, "register body: dataVersion", err,
                     errlen))
        goto bad;
    json_t *table = json_object_get(wrap, "topicConfigTable");
    if (table && !json_is_null(table)) {
        if (!json_is_object(table)) {
            set_err(err, errlen, "register body: topicConfigTable: expected an object");
            goto bad;
        }
        size_t n = json_object_size(table);
        struct topic_cfg *tc = calloc(n ? n : 1, sizeof *tc);
        if (!tc) {
            json_decref(r);
            set_err(err, errlen, "out of memory");
            return -ENOMEM;
        }
        size_t i = 0;
        const char *key;
        json_t *val;
        json_object_foreach(table, key, val) {
            char where[NS_NAME_MAX + 64];
            snprintf(where, sizeof where, "register body: topic %.*s", NS_NAME_MAX, key);
            if (!json_is_object(val)) {
                set_err(err, errlen, "%s: expected an object", where);
                free(tc);
                goto bad;
            }
            const char *name = key;
            json_t *tn = json_object_get(val, "topicName");
            if (tn && !json_is_null(tn)) {
                if (!json_is_string(tn)) {
                    set_err(err, errlen, "%s.topicName: expected a string", where);
                    free(tc);
                    goto bad;
                }
                name = json_string_value(tn);
            }
            if (!name_ok(name, NS_NAME_MAX)) {
                set_err(err, errlen, "%s: invalid topic name (1-%d bytes, no control characters)",
                        where, NS_NAME_MAX);
                free(tc);
                goto bad;
            }
            /* Defaults are RocketMQ's TopicConfig defaults. */
            int64_t rq = 16, wq = 16, perm = NS_PERM_READ | NS_PERM_WRITE, flag = 0;
            if (get_int(val, "readQueueNums", 0, INT32_MAX, &rq, where, err, errlen) ||
                get_int(val, "writeQueueNums", 0, INT32_MAX, &wq, where, err, errlen) ||
                get_int(val, "perm", 0, 15, &perm, where, err, errlen) ||
                get_int(val, "topicSysFlag", 0, INT32_MAX, &flag, where, err, errlen)) {
                free(tc);
                goto bad;
            }
            tc[i++] = (struct topic_cfg){ name, (int32_t)rq, (int32_t)wq, (int32_t)perm,
                                          (int32_t)flag };
        }
        *topics = tc;
        *ntopics = i;
    }
    *root = r;
    return 0;
bad:
    json_decref(r);
    return -EINVAL;
}

/* Adds or updates g's queue data for one topic. Returns 1 if it changed,
 * 0 if identical, -ENOMEM. */
static int apply_topic(struct ns_route_table *rt, struct group *g, const struct topic_cfg *tc)
{
    struct topic *t = topic_find(rt, tc->name);
    bool created = false;
    if (!t) {
        if (!(t = topic_create(rt, tc->name)))
            return -ENOMEM;
        created = true;
    }
    struct qdata nq = { g, tc->read_queues, tc->write_queues, tc->perm, tc->sys_flag };
    struct qdata *q = qd_find(t, g);
    if (q) {
        if (q->read_queues == nq.read_queues && q->write_queues == nq.write_queues &&
            q->perm == nq.perm && q->sys_flag == nq.sys_flag)
            return 0;
        log_info("topic %s on %s changed: queues r%d/w%d perm %d flag %d -> r%d/w%d perm %d flag %d",
                 t->name, g->name, q->read_queues, q->write_queues, q->perm, q->sys_flag,
                 nq.read_queues, nq.write_queues, nq.perm, nq.sys_flag);
        *q = nq;
        return 1;
    }
    if (grow((void **)&t->qd, &t->cap, t->n + 1, sizeof *t->qd)) {
        if (created)
            topic_drop(rt, t);
        return -ENOMEM;
    }
    t->qd[t->n++] = nq;
    if (created)
        log_info("new topic registered: %s on %s (r%d/w%d perm %d)", t->name, g->name,
                 nq.read_queues, nq.write_queues, nq.perm);
    return 1;
}

int ns_register_broker(struct ns_route_table *rt, const char *cluster, const char *broker_name,
                       const char *broker_addr, int64_t broker_id, const char *ha_addr,
                       const char *body, size_t body_len, uint64_t conn_id, int64_t now_ms,
                       struct ns_register_result *result, char *err, size_t errlen)
{
    memset(result, 0, sizeof *result);
    if (!name_ok(cluster, NS_NAME_MAX)) {
        set_err(err, errlen, "invalid cluster name");
        return -EINVAL;
    }
    if (!name_ok(broker_name, NS_NAME_MAX)) {
        set_err(err, errlen, "invalid broker name");
        return -EINVAL;
    }
    if (!name_ok(broker_addr, NS_ADDR_MAX)) {
        set_err(err, errlen, "invalid broker address");
        return -EINVAL;
    }
    if (ha_addr && *ha_addr && !name_ok(ha_addr, NS_ADDR_MAX)) {
        set_err(err, errlen, "invalid HA server address");
        return -EINVAL;
    }
    if (broker_id < 0) {
        set_err(err, errlen, "invalid broker id %" PRId64, broker_id);
        return -EINVAL;
    }

    json_t *root;
    struct ns_data_version dv;
    struct topic_cfg *topics;
    size_t ntopics;
    int rc = parse_register_body(body, body_len, &root, &dv, &topics, &ntopics, err, errlen);
    if (rc)
        return rc;

    size_t gpos;
    struct group *g = group_find(rt, broker_name, &gpos);
    if (g && strcmp(g->cluster, cluster) != 0) {
        set_err(err, errlen, "broker name %s already belongs to cluster %s", broker_name,
                g->cluster);
        rc = -EINVAL;
        goto out;
    }
    struct member *m = g ? member_by_id(g, broker_id) : NULL;
    if (m && strcmp(m->addr, broker_addr) != 0 && m->dv.state_version > dv.state_version) {
        set_err(err, errlen,
                "%s id %" PRId64 " is held by %s with newer state version %" PRId64 " > %" PRId64,
                broker_name, broker_id, m->addr, m->dv.state_version, dv.state_version);
        rc = -EEXIST;
        goto out;
    }
    /* Reserve what the structural changes need before changing anything. */
    if (!g && grow((void **)&rt->groups, &rt->gcap, rt->ngroups + 1, sizeof *rt->groups)) {
        rc = -ENOMEM;
        goto out;
    }
    if (g && !m && grow((void **)&g->m, &g->cap, g->n + 1, sizeof *g->m)) {
        rc = -ENOMEM;
        goto out;
    }
    struct group *ng = NULL;
    if (!g && !(ng = calloc(1, sizeof *ng))) {
        rc = -ENOMEM;
        goto out;
    }
    if (ng && grow((void **)&ng->m, &ng->cap, 1, sizeof *ng->m)) {
        free(ng);
        rc = -ENOMEM;
        goto out;
    }

    /* One address is one member: a broker that switched id (slave promoted)
     * or name leaves its old slot. */
    size_t ogi, omi;
    if (find_addr(rt, broker_addr, &ogi, &omi)) {
        struct group *og = rt->groups[ogi];
        if (og == g && og->m[omi].id != broker_id) {
            log_info("broker %s moves from %s id %" PRId64 " to id %" PRId64, broker_addr,
                     og->name, og->m[omi].id, broker_id);
            memmove(&og->m[omi], &og->m[omi + 1], (og->n - omi - 1) * sizeof *og->m);
            og->n--;
            m = member_by_id(g, broker_id);
        } else if (og != g) {
            member_remove(rt, ogi, omi, "re-registered under another broker name");
            group_find(rt, broker_name, &gpos);
        }
    }

    if (ng) {
        snprintf(ng->name, sizeof ng->name, "%s", broker_name);
        snprintf(ng->cluster, sizeof ng->cluster, "%s", cluster);
        memmove(&rt->groups[gpos + 1], &rt->groups[gpos], (rt->ngroups - gpos) * sizeof *rt->groups);
        rt->groups[gpos] = ng;
        rt->ngroups++;
        g = ng;
        log_info("new broker name %s in cluster %s", broker_name, cluster);
    }

    bool first = false;
    if (!m) {
        size_t at = 0;
        while (at < g->n && g->m[at].id < broker_id)
            at++;
        memmove(&g->m[at + 1], &g->m[at], (g->n - at) * sizeof *g->m);
        g->n++;
        m = &g->m[at];
        memset(m, 0, sizeof *m);
        m->id = broker_id;
        first = true;
    } else if (strcmp(m->addr, broker_addr) != 0) {
        log_info("%s id %" PRId64 " moves from %s to %s", broker_name, broker_id, m->addr,
                 broker_addr);
        first = true;
    } else if (m->conn_id != conn_id) {
        first = true;
    }
    bool newer = first || dv_newer(&dv, &m->dv);
    if (first)
        log_info("broker registered: %s (%s id %" PRId64 ", cluster %s, HA %s)", broker_addr,
                 broker_name, broker_id, cluster, (ha_addr && *ha_addr) ? ha_addr : "-");
    snprintf(m->addr, sizeof m->addr, "%s", broker_addr);
    snprintf(m->ha_addr, sizeof m->ha_addr, "%s", ha_addr ? ha_addr : "");
    m->conn_id = conn_id;
    m->last_ms = now_ms;
    if (newer)
        m->dv = dv;
    result->first_registration = first;

    if (broker_id == 0) {
        for (size_t i = 0; i < ntopics; i++) {
            struct topic *t = topic_find(rt, topics[i].name);
            if (!newer && t && qd_find(t, g))
                continue;
            int changed = apply_topic(rt, g, &topics[i]);
            if (changed < 0) {
                set_err(err, errlen, "out of memory applying topic %s", topics[i].name);
                rc = -ENOMEM;
                goto out;
            }
            result->topics_updated += changed;
        }
    } else {
        const struct member *master = member_by_id(g, 0);
        if (master) {
            snprintf(result->master_addr, sizeof result->master_addr, "%s", master->addr);
            snprintf(result->ha_server_addr, sizeof result->ha_server_addr, "%s", master->ha_addr);
        }
    }
    rc = 0;
out:
    free(topics);
    json_decref(root);
    return rc;
}

int ns_unregister_broker(struct ns_route_table *rt, const char *cluster, const char *broker_addr,
                         const char *broker_name, int64_t broker_id)
{
    size_t gi;
    struct group *g = group_find(rt, broker_name, &gi);
    if (!g || strcmp(g->cluster, cluster) != 0)
        return -ENOENT;
    for (size_t i = 0; i < g->n; i++) {
        if (strcmp(g->m[i].addr, broker_addr) == 0) {
            if (g->m[i].id != broker_id)
                log_warn("unregister of %s names id %" PRId64 " but it holds id %" PRId64,
                         broker_addr, broker_id, g->m[i].id);
            member_remove(rt, gi, i, "unregistered");
            return 0;
        }
    }
    return -ENOENT;
}

int ns_touch_broker(struct ns_route_table *rt, const char *broker_addr, int64_t now_ms)
{
    size_t gi, mi;
    if (!find_addr(rt, broker_addr, &gi, &mi))
        return -ENOENT;
    rt->groups[gi]->m[mi].last_ms = now_ms;
    return 0;
}

int ns_broker_data_version(const struct ns_route_table *rt, const char *broker_addr,
                           struct ns_data_version *out)
{
    size_t gi, mi;
    if (!find_addr(rt, broker_addr, &gi, &mi))
        return -ENOENT;
    *out = rt->groups[gi]->m[mi].dv;
    return 0;
}

int ns_scan_expired(struct ns_route_table *rt, int64_t now_ms, int64_t timeout_ms, ns_evict_fn fn,
                    void *ctx)
{
    int evicted = 0;
    for (size_t gi = rt->ngroups; gi-- > 0;) {
        struct group *g = rt->groups[gi];
        for (size_t mi = g->n; mi-- > 0;) {
            struct member *m = &g->m[mi];
            int64_t idle = now_ms - m->last_ms;
            if (idle <= timeout_ms)
                continue;
            char addr[NS_ADDR_MAX + 1];
            uint64_t conn = m->conn_id;
            snprintf(addr, sizeof addr, "%s", m->addr);
            log_warn("broker %s (%s id %" PRId64 ") expired: no heartbeat for %" PRId64 " ms",
                     addr, g->name, m->id, idle);
            bool last = g->n == 1;
            member_remove(rt, gi, mi, "heartbeat timeout");
            evicted++;
            if (fn)
                fn(ctx, addr, conn);
            if (last)
                break;
        }
    }
    return evicted;
}

int ns_evict_conn(struct ns_route_table *rt, uint64_t conn_id)
{
    if (conn_id == 0)
        return 0;
    int evicted = 0;
    for (size_t gi = rt->ngroups; gi-- > 0;) {
        struct group *g = rt->groups[gi];
        for (size_t mi = g->n; mi-- > 0;) {
            if (g->m[mi].conn_id != conn_id)
                continue;
            bool last = g->n == 1;
            member_remove(rt, gi, mi, "connection closed");
            evicted++;
            if (last)
                break;
        }
    }
    return evicted;
}

static int cmp_qd(const void *a, const void *b)
{
    return strcmp(((const struct qdata *)a)->g->name, ((const struct qdata *)b)->g->name);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* {"brokerAddrs":{0:"a",1:"b"},"brokerName":"n","cluster":"c"} */
static int broker_data_json(const struct group *g, struct buf *out)
{
    int rc = buf_printf(out, "{\"brokerAddrs\":{");
    for (size_t i = 0; !rc && i < g->n; i++) {
        rc = buf_printf(out, "%s%" PRId64 ":", i ? "," : "", g->m[i].id);
        if (!rc)
            rc = json_buf_str(out, g->m[i].addr);
    }
    if (!rc)
        rc = buf_printf(out, "},\"brokerName\":");
    if (!rc)
        rc = json_buf_str(out, g->name);
    if (!rc)
        rc = buf_printf(out, ",\"cluster\":");
    if (!rc)
        rc = json_buf_str(out, g->cluster);
    if (!rc)
        rc = buf_append_u8(out, '}');
    return rc;
}

int ns_route_json(const struct ns_route_table *rt, const char *topic, struct buf *out)
{
    const struct topic *t = topic_find(rt, topic);
    if (!t || t->n == 0)
        return -ENOENT;
    struct qdata *qd = malloc(t->n * sizeof *qd);
    if (!qd)
        return -ENOMEM;
    memcpy(qd, t->qd, t->n * sizeof *qd);
    qsort(qd, t->n, sizeof *qd, cmp_qd);

    size_t mark = out->len;
    int rc = buf_printf(out, "{\"brokerDatas\":[");
    for (size_t i = 0; !rc && i < t->n; i++) {
        if (i)
            rc = buf_append_u8(out, ',');
        if (!rc)
            rc = broker_data_json(qd[i].g, out);
    }
    if (!rc)
        rc = buf_printf(out, "],\"filterServerTable\":{},\"queueDatas\":[");
    for (size_t i = 0; !rc && i < t->n; i++) {
        rc = buf_printf(out, "%s{\"brokerName\":", i ? "," : "");
        if (!rc)
            rc = json_buf_str(out, qd[i].g->name);
        if (!rc)
            rc = buf_printf(out,
                            ",\"perm\":%d,\"readQueueNums\":%d,\"topicSysFlag\":%d,"
                            "\"writeQueueNums\":%d}",
                            qd[i].perm, qd[i].read_queues, qd[i].sys_flag, qd[i].write_queues);
    }
    if (!rc)
        rc = buf_printf(out, "]}");
    free(qd);
    if (rc)
        out->len = mark;
    return rc;
}

int ns_cluster_info_json(const struct ns_route_table *rt, struct buf *out)
{
    const char **clusters = malloc((rt->ngroups ? rt->ngroups : 1) * sizeof *clusters);
    if (!clusters)
        return -ENOMEM;
    size_t nc = 0;
    for (size_t i = 0; i < rt->ngroups; i++)
        clusters[nc++] = rt->groups[i]->cluster;
    qsort(clusters, nc, sizeof *clusters, cmp_str);

    size_t mark = out->len;
    int rc = buf_printf(out, "{\"brokerAddrTable\":{");
    for (size_t i = 0; !rc && i < rt->ngroups; i++) {
        if (i)
            rc = buf_append_u8(out, ',');
        if (!rc)
            rc = json_buf_key(out, rt->groups[i]->name);
        if (!rc)
            rc = broker_data_json(rt->groups[i], out);
    }
    if (!rc)
        rc = buf_printf(out, "},\"clusterAddrTable\":{");
    for (size_t i = 0; !rc && i < nc; i++) {
        if (i && strcmp(clusters[i], clusters[i - 1]) == 0)
            continue;
        if (i)
            rc = buf_append_u8(out, ',');
        if (!rc)
            rc = json_buf_key(out, clusters[i]);
        if (!rc)
            rc = buf_append_u8(out, '[');
        bool any = false;
        for (size_t j = 0; !rc && j < rt->ngroups; j++) {
            if (strcmp(rt->groups[j]->cluster, clusters[i]) != 0)
                continue;
            if (any)
                rc = buf_append_u8(out, ',');
            if (!rc)
                rc = json_buf_str(out, rt->groups[j]->name);
            any = true;
        }
        if (!rc)
            rc = buf_append_u8(out, ']');
    }
    if (!rc)
        rc = buf_printf(out, "}}");
    free(clusters);
    if (rc)
        out->len = mark;
    return rc;
}

/* Appends {["brokerAddr":..,]"topicList":[names]} with names sorted and
 * duplicates dropped; sorts names in place. */
static int topic_list_body(const char **names, size_t n, const char *broker_addr, struct buf *out)
{
    qsort(names, n, sizeof *names, cmp_str);
    size_t mark = out->len;
    int rc = buf_append_u8(out, '{');
    if (!rc && broker_addr) {
        rc = buf_printf(out, "\"brokerAddr\":");
        if (!rc)
            rc = json_buf_str(out, broker_addr);
        if (!rc)
            rc = buf_append_u8(out, ',');
    }
    if (!rc)
        rc = buf_printf(out, "\"topicList\":[");
    bool any = false;
    for (size_t i = 0; !rc && i < n; i++) {
        if (i && strcmp(names[i], names[i - 1]) == 0)
            continue;
        if (any)
            rc = buf_append_u8(out, ',');
        if (!rc)
            rc = json_buf_str(out, names[i]);
        any = true;
    }
    if (!rc)
        rc = buf_printf(out, "]}");
    if (rc)
        out->len = mark;
    return rc;
}

/* Collects topic names, optionally only those with queue data in cluster. */
static const char **collect_topics(const struct ns_route_table *rt, const char *cluster, size_t *n)
{
    const char **names = malloc((rt->ntopics ? rt->ntopics : 1) * sizeof *names);
    if (!names)
        return NULL;
    size_t k = 0;
    for (size_t b = 0; b < rt->nbuckets; b++) {
        for (const struct topic *t = rt->buckets[b]; t; t = t->next) {
            bool take = !cluster;
            for (size_t i = 0; !take && i < t->n; i++)
                take = strcmp(t->qd[i].g->cluster, cluster) == 0;
            if (take)
                names[k++] = t->name;
        }
    }
    *n = k;
    return names;
}

int ns_topic_list_json(const struct ns_route_table *rt, struct buf *out)
{
    size_t n;
    const char **names = collect_topics(rt, NULL, &n);
    if (!names)
        return -ENOMEM;
    int rc = topic_list_body(names, n, NULL, out);
    free(names);
    return rc;
}

int ns_topics_by_cluster_json(const struct ns_route_table *rt, const char *cluster,
                              struct buf *out)
{
    bool known = false;
    for (size_t i = 0; !known && i < rt->ngroups; i++)
        known = strcmp(rt->groups[i]->cluster, cluster) == 0;
    if (!known)
        return -ENOENT;
    size_t n;
    const char **names = collect_topics(rt, cluster, &n);
    if (!names)
        return -ENOMEM;
    int rc = topic_list_body(names, n, NULL, out);
    free(names);
    return rc;
}

int ns_system_topic_list_json(const struct ns_route_table *rt, struct buf *out)
{
    const char **names = malloc((2 * rt->ngroups + 1) * sizeof *names);
    if (!names)
        return -ENOMEM;
    size_t n = 0;
    for (size_t i = 0; i < rt->ngroups; i++) {
        names[n++] = rt->groups[i]->cluster;
        names[n++] = rt->groups[i]->name;
    }
    const char *addr = rt->ngroups ? rt->groups[0]->m[0].addr : NULL;
    int rc = topic_list_body(names, n, addr, out);
    free(names);
    return rc;
}

int ns_data_version_json(const struct ns_data_version *dv, struct buf *out)
{
    return buf_printf(out, "{\"counter\":%" PRId64 ",\"stateVersion\":%" PRId64
                           ",\"timestamp\":%" PRId64 "}",
                      dv->counter, dv->state_version, dv->timestamp);
}

int ns_delete_topic(struct ns_route_table *rt, const char *topic, const char *cluster)
{
    struct topic *t = topic_find(rt, topic);
    if (!t)
        return -ENOENT;
    if (!cluster) {
        log_info("topic %s deleted", topic);
        topic_drop(rt, t);
        return 0;
    }
    size_t before = t->n;
    for (size_t i = t->n; i-- > 0;)
        if (strcmp(t->qd[i].g->cluster, cluster) == 0)
            qd_remove_at(t, i);
    if (t->n == before)
        return -ENOENT;
    log_info("topic %s deleted from cluster %s", topic, cluster);
    if (t->n == 0)
        topic_drop(rt, t);
    return 0;
}

/* Applies a perm change to broker_name's queue data in every topic. */
static int change_perm(struct ns_route_table *rt, const char *broker_name, bool add)
{
    const struct group *g = group_find(rt, broker_name, NULL);
    if (!g)
        return 0;
    int count = 0;
    for (size_t b = 0; b < rt->nbuckets; b++) {
        for (struct topic *t = rt->buckets[b]; t; t = t->next) {
            struct qdata *q = qd_find(t, g);
            if (!q)
                continue;
            q->perm = add ? (NS_PERM_READ | NS_PERM_WRITE) : (q->perm & ~NS_PERM_WRITE);
            count++;
        }
    }
    log_info("%s write permission of %s on %d topics", add ? "added" : "wiped", broker_name, count);
    return count;
}

int ns_wipe_write_perm(struct ns_route_table *rt, const char *broker_name)
{
    return change_perm(rt, broker_name, false);
}

int ns_add_write_perm(struct ns_route_table *rt, const char *broker_name)
{
    return change_perm(rt, broker_name, true);
}

bool ns_topic_exists(const struct ns_route_table *rt, const char *topic)
{
    return topic_find(rt, topic) != NULL;
}

size_t ns_topic_count(const struct ns_route_table *rt) { return rt->ntopics; }

size_t ns_broker_count(const struct ns_route_table *rt)
{
    size_t n = 0;
    for (size_t i = 0; i < rt->ngroups; i++)
        n += rt->groups[i]->n;
    return n;
}
