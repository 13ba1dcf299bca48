/*
 * Queue locks for ordered consumption: a chained hash table keyed by
 * "group\1topic\1brokerName\1queueId". Lock traffic is light (each orderly
 * consumer renews its queues every 20 s), so entries are plain heap nodes
 * and requests are parsed with jansson.
 */
#include "lock.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "broker.h"
#include "json_util.h"
#include "log.h"

struct lk {
    struct lk *next;
    uint64_t hash;
    char *key;
    char client[256];
    int64_t last;          /* monotonic ms of the last lock / renewal */
};

struct lock_ctx {
    struct broker *b;
    struct lk **bucket;
    size_t nbucket, n;
    size_t sweep_at;       /* sweep expired entries when n reaches this */
    struct buf key;
};

struct lock_ctx *lock_new(struct broker *b)
{
    struct lock_ctx *l = calloc(1, sizeof *l);
    if (!l)
        return NULL;
    l->b = b;
    l->nbucket = 256;
    l->sweep_at = 1024;
    l->bucket = calloc(l->nbucket, sizeof *l->bucket);
    if (!l->bucket) {
        free(l);
        return NULL;
    }
    return l;
}

void lock_free(struct lock_ctx *l)
{
    if (!l)
        return;
    for (size_t i = 0; i < l->nbucket; i++)
        while (l->bucket[i]) {
            struct lk *e = l->bucket[i];
            l->bucket[i] = e->next;
            free(e->key);
            free(e);
        }
    free(l->bucket);
    buf_free(&l->key);
    free(l);
}

static uint64_t hash_key(const char *k)
{
    uint64_t h = 1469598103934665603ull;
    for (const unsigned char *p = (const unsigned char *)k; *p; p++)
        h = (h ^ *p) * 1099511628211ull;
    return h;
}

static bool expired(const struct lock_ctx *l, const struct lk *e, int64_t now)
{
    return now - e->last > l->b->cfg.lock_max_live_ms;
}

static void unlink_entry(struct lock_ctx *l, struct lk **pp)
{
    struct lk *e = *pp;
    *pp = e->next;
    free(e->key);
    free(e);
    l->n--;
}

/* Drops expired entries; the next sweep happens once the table doubles. */
static void sweep(struct lock_ctx *l, int64_t now)
{
    for (size_t i = 0; i < l->nbucket; i++)
        for (struct lk **pp = &l->bucket[i]; *pp;) {
            if (expired(l, *pp, now))
                unlink_entry(l, pp);
            else
                pp = &(*pp)->next;
        }
    l->sweep_at = l->n * 2 > 1024 ? l->n * 2 : 1024;
}

static void grow(struct lock_ctx *l)
{
    size_t nb = l->nbucket * 2;
    struct lk **nbk = calloc(nb, sizeof *nbk);
    if (!nbk)
        return;
    for (size_t i = 0; i < l->nbucket; i++)
        while (l->bucket[i]) {
            struct lk *e = l->bucket[i];
            l->bucket[i] = e->next;
            e->next = nbk[e->hash & (nb - 1)];
            nbk[e->hash & (nb - 1)] = e;
        }
    free(l->bucket);
    l->bucket = nbk;
    l->nbucket = nb;
}

/* The queue's key in l->key (NUL-terminated). Returns 0 or -ENOMEM. */
static int make_key(struct lock_ctx *l, const char *group, json_t *mq)
{
    buf_reset(&l->key);
    int rc = buf_printf(&l->key, "%s\001%s\001%s\001%lld", group,
                        json_string_value(json_object_get(mq, "topic")),
                        json_string_value(json_object_get(mq, "brokerName")),
                        (long long)json_integer_value(json_object_get(mq, "queueId")));
    return rc ? rc : buf_append_u8(&l->key, 0);
}

static struct lk **find(struct lock_ctx *l, const char *key, uint64_t h)
{
    struct lk **pp = &l->bucket[h & (l->nbucket - 1)];
    while (*pp && ((*pp)->hash != h || strcmp((*pp)->key, key) != 0))
        pp = &(*pp)->next;
    return pp;
}

/* Parses and validates a Lock/UnlockBatchRequestBody; answers the error
 * and returns NULL when it is not one. */
static json_t *parse_body(struct lock_ctx *l, rmt_conn *c, const rmt_cmd *req, const char **group,
                          const char **client, json_t **set)
{
    struct broker *b = l->b;
    char err[200];
    const char *what = req->code == RMT_REQ_LOCK_BATCH_MQ ? "LOCK_BATCH_MQ" : "UNLOCK_BATCH_MQ";
    json_t *o = json_parse_rocketmq((const char *)req->body, req->body_len, err, sizeof err);
    if (!o || !json_is_object(o)) {
        json_decref(o);
        brk_err(b, c, req, RMT_RESP_INVALID_PARAMETER, "%s: the body is not a JSON object: %s", what,
                o ? "wrong type" : err);
        return NULL;
    }
    *group = json_string_value(json_object_get(o, "consumerGroup"));
    *client = json_string_value(json_object_get(o, "clientId"));
    *set = json_object_get(o, "mqSet");
    const char *bad = !*group || !**group ? "consumerGroup"
                      : !*client || !**client ? "clientId"
                      : !json_is_array(*set) ? "mqSet"
                      : NULL;
    if (!bad && strlen(*client) >= sizeof ((struct lk *)0)->client)
        bad = "clientId (too long)";
    for (size_t i = 0; !bad && i < json_array_size(*set); i++) {
        json_t *mq = json_array_get(*set, i);
        if (!json_is_string(json_object_get(mq, "topic")) || !json_is_string(json_object_get(mq, "brokerName")) ||
            !json_is_integer(json_object_get(mq, "queueId")))
            bad = "mqSet (each entry needs topic, brokerName and queueId)";
    }
    if (bad) {
        json_decref(o);
        brk_err(b, c, req, RMT_RESP_INVALID_PARAMETER, "%s: the body field '%s' is missing or malformed",
                what, bad);
        return NULL;
    }
    return o;
}

/* Locks one queue for client, or renews its lock. Returns true if client
 * holds it afterwards. */
static bool try_lock(struct lock_ctx *l, const char *group, const char *client, json_t *mq, int64_t now)
{
    if (make_key(l, group, mq))
        return false;
    const char *key = (const char *)l->key.data;
    uint64_t h = hash_key(key);
    struct lk **pp = find(l, key, h);
    struct lk *e = *pp;
    if (e) {
        if (strcmp(e->client, client) == 0) {
            e->last = now;
            return true;
        }
        if (!expired(l, e, now))
            return false;
        log_info("queue lock %s/%s/%lld of group %s expired (held by %s); now held by %s",
                 json_string_value(json_object_get(mq, "topic")),
                 json_string_value(json_object_get(mq, "brokerName")),
                 (long long)json_integer_value(json_object_get(mq, "queueId")), group, e->client, client);
        snprintf(e->client, sizeof e->client, "%s", client);
        e->last = now;
        return true;
    }
    e = calloc(1, sizeof *e);
    if (!e || !(e->key = strdup(key))) {
        free(e);
        log_error("queue locks: out of memory");
        return false;
    }
    e->hash = h;
    snprintf(e->client, sizeof e->client, "%s", client);
    e->last = now;
    e->next = NULL;
    *pp = e;
    l->n++;
    return true;
}

void lock_on_lock(struct lock_ctx *l, rmt_conn *c, rmt_cmd *req)
{
    struct broker *b = l->b;
    const char *group, *client;
    json_t *set;
    json_t *o = parse_body(l, c, req, &group, &client, &set);
    if (!o)
        return;
    int64_t now = brk_mono_ms();
    if (l->n >= l->sweep_at)
        sweep(l, now);
    if (l->n + json_array_size(set) > l->nbucket)
        grow(l);
    json_t *ok = json_array();
    json_t *resp = json_object();
    int rc = ok && resp ? 0 : -ENOMEM;
    for (size_t i = 0; !rc && i < json_array_size(set); i++) {
        json_t *mq = json_array_get(set, i);
        if (try_lock(l, group, client, mq, now))
            rc = json_array_append(ok, mq);
    }
    if (!rc)
        rc = json_object_set(resp, "lockOKMQSet", ok);
    char *text = rc ? NULL : json_dumps(resp, JSON_COMPACT | JSON_SORT_KEYS);
    size_t nok = ok ? json_array_size(ok) : 0;
    json_decref(ok);
    json_decref(resp);
    if (!text) {
        json_decref(o);
        brk_err(b, c, req, RMT_RESP_SYSTEM_ERROR, "out of memory");
        return;
    }
    log_debug("group %s client %s holds %zu of the %zu queues it asked for", group, client, nok,
              json_array_size(set));
    json_decref(o);
    brk_resp(b, RMT_RESP_SUCCESS);
    rc = buf_append(&b->body, text, strlen(text));
    free(text);
    if (rc) {
        brk_err(b, c, req, RMT_RESP_SYSTEM_ERROR, "out of memory");
        return;
    }
    brk_reply(b, c, req, true);
}

void lock_on_unlock(struct lock_ctx *l, rmt_conn *c, rmt_cmd *req)
{
    struct broker *b = l->b;
    const char *group, *client;
    json_t *set;
    json_t *o = parse_body(l, c, req, &group, &client, &set);
    if (!o)
        return;
    for (size_t i = 0; i < json_array_size(set); i++) {
        json_t *mq = json_array_get(set, i);
        if (make_key(l, group, mq))
            break;
        const char *key = (const char *)l->key.data;
        struct lk **pp = find(l, key, hash_key(key));
        if (!*pp)
            continue;
        if (strcmp((*pp)->client, client) == 0)
            unlink_entry(l, pp);
        else
            log_info("client %s of group %s cannot unlock queue %s/%lld: it is locked by %s", client, group,
                     json_string_value(json_object_get(mq, "topic")),
                     (long long)json_integer_value(json_object_get(mq, "queueId")), (*pp)->client);
    }
    json_decref(o);
    brk_resp(b, RMT_RESP_SUCCESS);
    brk_reply(b, c, req, false);
}
