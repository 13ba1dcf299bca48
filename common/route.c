/*
 * Route parsing, queue selection, queue allocation and subscription
 * expressions for the client library (see route.h). Pure functions over
 * plain data so each rule of RocketMQ's client can be unit tested.
 */
#include "route.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "json_util.h"
#include "message.h"

static int cmp_broker(const void *a, const void *b)
{
    return strcmp(((const struct cli_broker *)a)->name, ((const struct cli_broker *)b)->name);
}

static int cmp_qd(const void *a, const void *b)
{
    return strcmp(((const struct cli_queue_data *)a)->broker, ((const struct cli_queue_data *)b)->broker);
}

static int copy_str(char *dst, size_t cap, json_t *v)
{
    if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) >= cap)
        return -1;
    memcpy(dst, json_string_value(v), json_string_length(v) + 1);
    return 0;
}

static int int_field(json_t *o, const char *name, int *out)
{
    json_t *v = json_object_get(o, name);
    if (!json_is_integer(v))
        return -1;
    json_int_t x = json_integer_value(v);
    if (x < 0 || x > 65535)
        return -1;
    *out = (int)x;
    return 0;
}

void cli_route_free(struct cli_route *r)
{
    free(r);
}

const char *cli_route_addr(const struct cli_route *r, const char *broker, int64_t id)
{
    for (int i = 0; i < r->nbrokers; i++) {
        if (strcmp(r->brokers[i].name, broker))
            continue;
        for (int j = 0; j < r->brokers[i].naddrs; j++)
            if (r->brokers[i].addrs[j].id == id)
                return r->brokers[i].addrs[j].addr;
        return NULL;
    }
    return NULL;
}

const char *cli_route_any_addr(const struct cli_route *r, const char *broker, bool master_only)
{
    const char *a = cli_route_addr(r, broker, CLI_MASTER_ID);
    if (a || master_only)
        return a;
    for (int i = 0; i < r->nbrokers; i++)
        if (strcmp(r->brokers[i].name, broker) == 0 && r->brokers[i].naddrs > 0)
            return r->brokers[i].addrs[0].addr;
    return NULL;
}

static const char *broker_name_ptr(const struct cli_route *r, const char *name)
{
    for (int i = 0; i < r->nbrokers; i++)
        if (strcmp(r->brokers[i].name, name) == 0)
            return r->brokers[i].name;
    return NULL;
}

int cli_route_parse(const char *json, size_t len, struct cli_route **out, char *err, size_t errlen)
{
    char jerr[160];
    *out = NULL;
    json_t *root = json_parse_rocketmq(json, len, jerr, sizeof jerr);
    if (!root) {
        snprintf(err, errlen, "route body is not valid JSON: %s", jerr);
        return -EBADMSG;
    }
    json_t *bds = json_object_get(root, "brokerDatas");
    json_t *qds = json_object_get(root, "queueDatas");
    int rc = -EBADMSG;
    struct cli_route *r = NULL;
    if (!json_is_object(root) || !json_is_array(bds) || !json_is_array(qds)) {
        snprintf(err, errlen, "route body lacks the brokerDatas/queueDatas arrays");
        goto out;
    }
    size_t nb = json_array_size(bds), nq = json_array_size(qds), naddr = 0, nwq = 0, nrq = 0;
    json_t *v;
    size_t i;
    json_array_foreach(bds, i, v) {
        json_t *addrs = json_object_get(v, "brokerAddrs");
        if (!json_is_object(addrs)) {
            snprintf(err, errlen, "brokerDatas[%zu] has no brokerAddrs object", i);
            goto out;
        }
        naddr += json_object_size(addrs);
    }
    json_array_foreach(qds, i, v) {
        int rq = 0, wq = 0;
        if (int_field(v, "readQueueNums", &rq) || int_field(v, "writeQueueNums", &wq)) {
            snprintf(err, errlen, "queueDatas[%zu]: readQueueNums/writeQueueNums missing or out of range", i);
            goto out;
        }
        nrq += (size_t)rq;
        nwq += (size_t)wq;
    }
    size_t sz = sizeof *r + nb * sizeof(struct cli_broker) + naddr * sizeof(struct cli_broker_addr) +
                nq * sizeof(struct cli_queue_data) + (nwq + nrq) * sizeof(struct cli_mq);
    r = calloc(1, sz);
    if (!r) {
        snprintf(err, errlen, "out of memory");
        rc = -ENOMEM;
        goto out;
    }
    r->brokers = (struct cli_broker *)(r + 1);
    struct cli_broker_addr *ab = (struct cli_broker_addr *)(r->brokers + nb);
    r->qd = (struct cli_queue_data *)(ab + naddr);
    r->write_queues = (struct cli_mq *)(r->qd + nq);
    r->read_queues = r->write_queues + nwq;

    json_array_foreach(bds, i, v) {
        struct cli_broker *b = &r->brokers[r->nbrokers];
        if (copy_str(b->name, sizeof b->name, json_object_get(v, "brokerName"))) {
            snprintf(err, errlen, "brokerDatas[%zu]: brokerName missing or too long", i);
            goto out;
        }
        json_t *cl = json_object_get(v, "cluster");
        if (cl && copy_str(b->cluster, sizeof b->cluster, cl))
            b->cluster[0] = 0;
        b->addrs = ab;
        const char *k;
        json_t *a;
        json_object_foreach(json_object_get(v, "brokerAddrs"), k, a) {
            char *end;
            errno = 0;
            long long id = strtoll(k, &end, 10);
            if (errno || end == k || *end || copy_str(ab->addr, sizeof ab->addr, a)) {
                snprintf(err, errlen, "broker %s: bad brokerAddrs entry '%s'", b->name, k);
                goto out;
            }
            ab->id = id;
            ab++;
            b->naddrs++;
        }
        r->nbrokers++;
    }
    json_array_foreach(qds, i, v) {
        struct cli_queue_data *q = &r->qd[r->nqd];
        if (copy_str(q->broker, sizeof q->broker, json_object_get(v, "brokerName")) ||
            int_field(v, "perm", &q->perm)) {
            snprintf(err, errlen, "queueDatas[%zu]: brokerName or perm missing", i);
            goto out;
        }
        int_field(v, "readQueueNums", &q->read_queues);
        int_field(v, "writeQueueNums", &q->write_queues);
        json_t *sf = json_object_get(v, "topicSysFlag");
        q->sys_flag = json_is_integer(sf) ? (int)json_integer_value(sf) : 0;
        r->nqd++;
    }
    qsort(r->brokers, (size_t)r->nbrokers, sizeof *r->brokers, cmp_broker);
    qsort(r->qd, (size_t)r->nqd, sizeof *r->qd, cmp_qd);
    for (int q = 0; q < r->nqd; q++) {
        const struct cli_queue_data *d = &r->qd[q];
        const char *bn = broker_name_ptr(r, d->broker);
        if (!bn)
            continue;
        if ((d->perm & CLI_PERM_WRITE) && cli_route_addr(r, bn, CLI_MASTER_ID))
            for (int k = 0; k < d->write_queues; k++)
                r->write_queues[r->nwrite++] = (struct cli_mq){ bn, k };
        if (d->perm & CLI_PERM_READ)
            for (int k = 0; k < d->read_queues; k++)
                r->read_queues[r->nread++] = (struct cli_mq){ bn, k };
    }
    *out = r;
    r = NULL;
    rc = 0;
out:
    free(r);
    json_decref(root);
    return rc;
}

int cli_route_select_rr(const struct cli_route *r, uint32_t *counter, const char *avoid_broker,
                        struct cli_mq *out)
{
    if (r->nwrite == 0)
        return -ENOENT;
    if (avoid_broker) {
        for (int i = 0; i < r->nwrite; i++) {
            const struct cli_mq *mq = &r->write_queues[(*counter)++ % (uint32_t)r->nwrite];
            if (strcmp(mq->broker, avoid_broker) != 0) {
                *out = *mq;
                return 0;
            }
        }
    }
    *out = r->write_queues[(*counter)++ % (uint32_t)r->nwrite];
    return 0;
}

int cli_route_select_hash(const struct cli_route *r, const char *key, size_t keylen,
                          struct cli_mq *out)
{
    if (r->nwrite == 0)
        return -ENOENT;
    int64_t h = msg_java_hash(key, keylen);
    if (h < 0)
        h = -h;
    *out = r->write_queues[h % r->nwrite];
    return 0;
}

static int default_queues_of(const struct cli_route *def, const struct cli_queue_data *d,
                             int queue_nums, const char **bn)
{
    *bn = broker_name_ptr(def, d->broker);
    if (!*bn || !(d->perm & CLI_PERM_WRITE) || !cli_route_addr(def, *bn, CLI_MASTER_ID))
        return 0;
    int n = d->write_queues < queue_nums ? d->write_queues : queue_nums;
    return n > 0 ? n : 0;
}

int cli_route_default_count(const struct cli_route *def, int queue_nums)
{
    int total = 0;
    const char *bn;
    for (int q = 0; q < def->nqd; q++)
        total += default_queues_of(def, &def->qd[q], queue_nums, &bn);
    return total;
}

int cli_route_default_queue(const struct cli_route *def, int queue_nums, uint32_t index,
                            struct cli_mq *out)
{
    int total = cli_route_default_count(def, queue_nums);
    if (total == 0)
        return -ENOENT;
    uint32_t i = index % (uint32_t)total;
    for (int q = 0; q < def->nqd; q++) {
        const char *bn;
        uint32_t n = (uint32_t)default_queues_of(def, &def->qd[q], queue_nums, &bn);
        if (i < n) {
            *out = (struct cli_mq){ bn, (int)i };
            return 0;
        }
        i -= n;
    }
    return -ENOENT;
}

int cli_allocate_averagely(int nmq, int ncid, int index, int *start)
{
    *start = 0;
    if (nmq <= 0 || ncid <= 0 || index < 0 || index >= ncid)
        return 0;
    int mod = nmq % ncid;
    int avg = nmq <= ncid ? 1 : (mod > 0 && index < mod ? nmq / ncid + 1 : nmq / ncid);
    int st = (mod > 0 && index < mod) ? index * avg : index * avg + mod;
    int range = avg < nmq - st ? avg : nmq - st;
    if (range <= 0)
        return 0;
    *start = st;
    return range;
}

static int cmp_pstr(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

void cli_sort_strings(const char **v, int n)
{
    if (n > 1)
        qsort(v, (size_t)n, sizeof *v, cmp_pstr);
}

int cli_sub_parse(const char *expr, struct cli_sub *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (!expr)
        expr = "";
    size_t n = strlen(expr);
    if (n >= sizeof out->expr) {
        snprintf(err, errlen, "subscription expression is longer than %zu bytes", sizeof out->expr - 1);
        return -EINVAL;
    }
    const char *s = expr, *e = expr + n;
    while (s < e && *s == ' ')
        s++;
    while (e > s && e[-1] == ' ')
        e--;
    if (s == e || (e - s == 1 && *s == '*')) {
        out->all = true;
        strcpy(out->expr, "*");
        return 0;
    }
    memcpy(out->expr, expr, n + 1);
    memcpy(out->tagbuf, s, (size_t)(e - s));
    out->tagbuf[e - s] = 0;
    char *p = out->tagbuf;
    for (;;) {
        char *sep = strstr(p, "||");
        if (sep)
            *sep = 0;
        char *t = p, *te = p + strlen(p);
        while (*t == ' ')
            t++;
        while (te > t && te[-1] == ' ')
            *--te = 0;
        if (!*t) {
            snprintf(err, errlen, "subscription expression '%s' has an empty tag", expr);
            return -EINVAL;
        }
        if (strchr(t, '|')) {
            snprintf(err, errlen, "subscription expression '%s': tags are separated by '||'", expr);
            return -EINVAL;
        }
        bool dup = false;
        for (int i = 0; i < out->ntags; i++)
            dup |= strcmp(out->tags[i], t) == 0;
        if (!dup) {
            if (out->ntags == CLI_SUB_MAX_TAGS) {
                snprintf(err, errlen, "subscription expression has more than %d tags", CLI_SUB_MAX_TAGS);
                return -EINVAL;
            }
            out->tags[out->ntags] = t;
            out->codes[out->ntags] = msg_java_hash(t, strlen(t));
            out->ntags++;
        }
        if (!sep)
            break;
        p = sep + 2;
    }
    return 0;
}

bool cli_sub_match(const struct cli_sub *s, const char *tag, size_t taglen)
{
    if (s->all)
        return true;
    if (!tag)
        return false;
    for (int i = 0; i < s->ntags; i++)
        if (strlen(s->tags[i]) == taglen && memcmp(s->tags[i], tag, taglen) == 0)
            return true;
    return false;
}
