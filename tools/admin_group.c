/*
 * rmqadmin consumer-group commands: updateSubGroup, deleteSubGroup,
 * consumerProgress and resetOffsetByTime.
 *
 * consumerProgress asks each broker for GET_CONSUME_STATS; a broker without
 * it is read queue by queue (max offset and committed offset). Likewise
 * resetOffsetByTime asks the broker to reset (INVOKE_BROKER_TO_RESET_OFFSET,
 * which also tells online consumers) and, when the broker does not support it
 * or no consumer is online, searches each queue's offset by time and commits
 * it directly, as mqadmin does.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin.h"
#include "fastjson.h"

static int check_group(struct adm *a)
{
    if (strlen(adm_arg(a, 'g')) >= CLI_NAME_MAX)
        return adm_fail(a, "group name is longer than %d bytes", CLI_NAME_MAX - 1);
    return 0;
}

int adm_update_sub_group(struct adm *a)
{
    long long rq, rmax;
    if (adm_int_arg(a, 'r', 1, 0, 64, &rq) || adm_int_arg(a, 'q', 16, 0, 1000, &rmax))
        return 2;
    if (check_group(a))
        return 2;
    const char *g = adm_arg(a, 'g');
    char addrs[ADM_MAX_BROKERS][CLI_ADDR_MAX], names[ADM_MAX_BROKERS][CLI_NAME_MAX];
    int n = adm_targets(a, addrs, names, ADM_MAX_BROKERS);
    if (n < 0)
        return 1;
    static const char *const h[] = { "Broker", "Address", "Group", "Result" };
    tbl *tb = tbl_new(4, h);
    if (!tb)
        return adm_fail(a, "out of memory");
    int failed = 0;
    for (int i = 0; i < n; i++) {
        char err[ADM_ERR_MAX];
        int rc = cli_admin_create_group(adm_client(a), addrs[i], g, (int)rq, (int)rmax, err, sizeof err);
        tbl_str(tb, names[i]);
        tbl_str(tb, addrs[i]);
        tbl_str(tb, g);
        tbl_str(tb, rc ? err : "OK");
        if (rc) {
            failed++;
            adm_fail(a, "updating group '%s' on %s failed: %s", g, addrs[i], err);
        }
    }
    tbl_print(tb, a->json, stdout);
    tbl_free(tb);
    return failed ? 1 : 0;
}

int adm_delete_sub_group(struct adm *a)
{
    if (check_group(a))
        return 2;
    const char *g = adm_arg(a, 'g');
    char addrs[ADM_MAX_BROKERS][CLI_ADDR_MAX], names[ADM_MAX_BROKERS][CLI_NAME_MAX];
    int n = adm_targets(a, addrs, names, ADM_MAX_BROKERS);
    if (n < 0)
        return 1;
    static const char *const h[] = { "Broker", "Address", "Group", "Result" };
    tbl *tb = tbl_new(4, h);
    if (!tb)
        return adm_fail(a, "out of memory");
    int failed = 0;
    for (int i = 0; i < n; i++) {
        char err[ADM_ERR_MAX];
        int rc = cli_admin_delete_group(adm_client(a), addrs[i], g, err, sizeof err);
        tbl_str(tb, names[i]);
        tbl_str(tb, addrs[i]);
        tbl_str(tb, g);
        tbl_str(tb, rc ? err : "OK");
        if (rc) {
            failed++;
            adm_fail(a, "deleting group '%s' on %s failed: %s", g, addrs[i], err);
        }
    }
    tbl_print(tb, a->json, stdout);
    tbl_free(tb);
    return failed ? 1 : 0;
}

struct prow {
    char topic[CLI_NAME_MAX];
    char broker[CLI_NAME_MAX];
    int qid;
    int64_t broker_off, consumer_off, last_ts;
};

struct prows {
    struct prow *v;
    size_t n, cap;
    double tps;
};

static struct prow *prow_add(struct prows *p)
{
    if (p->n == p->cap) {
        size_t nc = p->cap ? p->cap * 2 : 64;
        struct prow *nv = realloc(p->v, nc * sizeof *nv);
        if (!nv)
            return NULL;
        p->v = nv;
        p->cap = nc;
    }
    struct prow *r = &p->v[p->n++];
    memset(r, 0, sizeof *r);
    return r;
}

static int cmp_prow(const void *x, const void *y)
{
    const struct prow *a = x, *b = y;
    int c = strcmp(a->topic, b->topic);
    if (!c)
        c = strcmp(a->broker, b->broker);
    if (!c)
        c = a->qid - b->qid;
    return c;
}

/* GET_CONSUME_STATS of one broker appended to rows. Returns the rc. */
static int consume_stats(struct adm *a, const char *addr, const char *group, const char *topic,
                         struct prows *rows, char *err, size_t errlen)
{
    char *body = NULL;
    int rc = cli_admin_consume_stats(adm_client(a), addr, group, topic, &body, err, errlen);
    if (rc)
        return rc;
    json_t *j = fj_parse(body, strlen(body), err, errlen);
    free(body);
    if (!j)
        return -EBADMSG;
    json_t *tps = json_object_get(j, "consumeTps");
    if (json_is_number(tps))
        rows->tps += json_number_value(tps);
    const char *key;
    json_t *v;
    json_object_foreach(json_object_get(j, "offsetTable"), key, v) {
        json_t *mq = fj_key_object(key);
        const char *t = fj_str(mq, "topic"), *b = fj_str(mq, "brokerName");
        struct prow *r = t && b ? prow_add(rows) : NULL;
        if (r) {
            snprintf(r->topic, sizeof r->topic, "%s", t);
            snprintf(r->broker, sizeof r->broker, "%s", b);
            r->qid = (int)fj_int(mq, "queueId", -1);
            r->broker_off = fj_int(v, "brokerOffset", 0);
            r->consumer_off = fj_int(v, "consumerOffset", 0);
            r->last_ts = fj_int(v, "lastTimestamp", 0);
        }
        json_decref(mq);
    }
    json_decref(j);
    return 0;
}

/* Progress computed from max offsets and committed offsets of a topic's
 * queues on one broker. */
static int progress_by_queue(struct adm *a, const char *addr, const char *broker, int nq,
                             const char *group, const char *topic, struct prows *rows, char *err,
                             size_t errlen)
{
    cli_client *c = adm_client(a);
    for (int q = 0; q < nq; q++) {
        int64_t max, off;
        int rc = cli_admin_max_offset(c, addr, topic, q, &max, err, errlen);
        if (!rc)
            rc = cli_admin_consumer_offset(c, addr, group, topic, q, &off, err, errlen);
        if (rc)
            return rc;
        struct prow *r = prow_add(rows);
        if (!r)
            return -ENOMEM;
        snprintf(r->topic, sizeof r->topic, "%s", topic);
        snprintf(r->broker, sizeof r->broker, "%s", broker);
        r->qid = q;
        r->broker_off = max;
        r->consumer_off = off < 0 ? 0 : off;
    }
    return 0;
}

int adm_consumer_progress(struct adm *a)
{
    const char *group = adm_arg(a, 'g');
    const char *topic = adm_arg(a, 't');
    struct prows rows = { 0 };
    int failed = 0;
    if (topic) {
        struct cli_route *r = adm_route(a, topic);
        if (!r)
            return 1;
        for (int i = 0; i < r->nqd; i++) {
            const char *addr = cli_route_addr(r, r->qd[i].broker, CLI_MASTER_ID);
            if (!addr)
                continue;
            char err[ADM_ERR_MAX];
            int rc = consume_stats(a, addr, group, topic, &rows, err, sizeof err);
            if (rc == RMT_RESP_REQUEST_CODE_NOT_SUPPORTED)
                rc = progress_by_queue(a, addr, r->qd[i].broker, r->qd[i].read_queues, group, topic,
                                       &rows, err, sizeof err);
            if (rc) {
                failed++;
                adm_fail(a, "progress of group '%s' on %s (%s): %s", group, r->qd[i].broker, addr, err);
            }
        }
        cli_route_free(r);
    } else {
        struct adm_cluster *ci = malloc(sizeof *ci);
        if (!ci)
            return adm_fail(a, "out of memory");
        if (adm_cluster_info(a, ci)) {
            free(ci);
            return 1;
        }
        for (int i = 0; i < ci->n; i++) {
            if (ci->b[i].id != CLI_MASTER_ID)
                continue;
            char err[ADM_ERR_MAX];
            int rc = consume_stats(a, ci->b[i].addr, group, NULL, &rows, err, sizeof err);
            if (rc == RMT_RESP_REQUEST_CODE_NOT_SUPPORTED) {
                adm_fail(a, "broker %s cannot list the topics of a group; give the topic with -t",
                         ci->b[i].addr);
                failed++;
            } else if (rc) {
                failed++;
                adm_fail(a, "progress of group '%s' on %s: %s", group, ci->b[i].addr, err);
            }
        }
        free(ci);
    }
    qsort(rows.v, rows.n, sizeof *rows.v, cmp_prow);
    static const char *const h[] = { "Topic", "Broker", "QID", "BrokerOffset", "ConsumerOffset",
                                     "Diff", "LastTime" };
    tbl *tb = tbl_new(7, h);
    int64_t total = 0;
    for (size_t i = 0; tb && i < rows.n; i++) {
        const struct prow *r = &rows.v[i];
        int64_t diff = r->broker_off - r->consumer_off;
        total += diff;
        char ts[64];
        adm_fmt_time(r->last_ts, ts, sizeof ts);
        tbl_str(tb, r->topic);
        tbl_str(tb, r->broker);
        tbl_int(tb, r->qid);
        tbl_int(tb, r->broker_off);
        tbl_int(tb, r->consumer_off);
        tbl_int(tb, diff);
        tbl_str(tb, r->last_ts > 0 ? ts : "-");
    }
    double tps = rows.tps;
    free(rows.v);
    if (!tb)
        return adm_fail(a, "out of memory");
    if (a->json) {
        json_t *o = json_object();
        json_object_set_new(o, "group", json_string(group));
        json_object_set_new(o, "consumeTps", json_real(tps));
        json_object_set_new(o, "diffTotal", json_integer(total));
        json_object_set_new(o, "queues", tbl_json(tb));
        json_dumpf(o, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        putchar('\n');
        json_decref(o);
    } else {
        tbl_print(tb, false, stdout);
        printf("\nConsume TPS: %.2f\nDiff Total: %lld\n", tps, (long long)total);
    }
    tbl_free(tb);
    return failed ? 1 : 0;
}

/* Old-style reset: search each queue's offset by time and commit it. */
static int reset_by_queue(struct adm *a, const char *addr, const char *broker, int nq,
                          const char *group, const char *topic, int64_t ts, tbl *tb, char *err,
                          size_t errlen)
{
    cli_client *c = adm_client(a);
    for (int q = 0; q < nq; q++) {
        int64_t off;
        int rc = cli_admin_search_offset(c, addr, topic, q, ts, &off, err, errlen);
        if (rc)
            return rc;
        rmt_cmd req;
        cli_cmd_init(c, &req, RMT_REQ_UPDATE_CONSUMER_OFFSET);
        rmt_cmd_set_ext(&req, "consumerGroup", group);
        rmt_cmd_set_ext(&req, "topic", topic);
        rmt_cmd_set_ext_int(&req, "queueId", q);
        rmt_cmd_set_ext_int(&req, "commitOffset", off);
        rc = cli_admin_invoke(c, addr, &req, NULL, NULL, err, errlen);
        rmt_cmd_destroy(&req);
        if (rc)
            return rc;
        tbl_str(tb, broker);
        tbl_int(tb, q);
        tbl_int(tb, off);
    }
    return 0;
}

/* INVOKE_BROKER_TO_RESET_OFFSET; rows from the ResetOffsetBody. */
static int reset_on_broker(struct adm *a, const char *addr, const char *group, const char *topic,
                           int64_t ts, tbl *tb, char *err, size_t errlen)
{
    cli_client *c = adm_client(a);
    rmt_cmd req;
    char *body = NULL;
    cli_cmd_init(c, &req, RMT_REQ_INVOKE_BROKER_TO_RESET_OFFSET);
    rmt_cmd_set_ext(&req, "topic", topic);
    rmt_cmd_set_ext(&req, "group", group);
    rmt_cmd_set_ext_int(&req, "timestamp", ts);
    rmt_cmd_set_ext(&req, "isForce", "true");
    rmt_cmd_set_ext_int(&req, "queueId", -1);
    rmt_cmd_set_ext_int(&req, "offset", -1);
    int rc = cli_admin_invoke(c, addr, &req, &body, NULL, err, errlen);
    rmt_cmd_destroy(&req);
    if (rc)
        return rc;
    json_t *j = body && *body ? fj_parse(body, strlen(body), err, errlen) : NULL;
    free(body);
    if (!j) {
        snprintf(err, errlen, "the broker's reset answer has no offset table");
        return -EBADMSG;
    }
    const char *key;
    json_t *v;
    json_object_foreach(json_object_get(j, "offsetTable"), key, v) {
        json_t *mq = fj_key_object(key);
        const char *b = fj_str(mq, "brokerName");
        tbl_str(tb, b ? b : "?");
        tbl_int(tb, fj_int(mq, "queueId", -1));
        tbl_int(tb, json_is_integer(v) ? json_integer_value(v) : -1);
        json_decref(mq);
    }
    json_decref(j);
    return 0;
}

int adm_reset_offset_by_time(struct adm *a)
{
    const char *group = adm_arg(a, 'g');
    const char *topic = adm_arg(a, 't');
    int64_t ts;
    if (adm_parse_time(adm_arg(a, 's'), &ts))
        return adm_fail(a, "bad value '%s' for -s: expected now, epoch milliseconds or "
                           "yyyy-MM-dd#HH:mm:ss:SSS", adm_arg(a, 's')) + 1;
    struct cli_route *r = adm_route(a, topic);
    if (!r)
        return 1;
    static const char *const h[] = { "Broker", "QID", "NewOffset" };
    tbl *tb = tbl_new(3, h);
    int failed = 0;
    for (int i = 0; tb && i < r->nqd; i++) {
        const char *addr = cli_route_addr(r, r->qd[i].broker, CLI_MASTER_ID);
        if (!addr)
            continue;
        char err[ADM_ERR_MAX];
        int rc = reset_on_broker(a, addr, group, topic, ts, tb, err, sizeof err);
        if (rc == RMT_RESP_REQUEST_CODE_NOT_SUPPORTED || rc == RMT_RESP_CONSUMER_NOT_ONLINE)
            rc = reset_by_queue(a, addr, r->qd[i].broker, r->qd[i].read_queues, group, topic, ts, tb,
                                err, sizeof err);
        if (rc) {
            failed++;
            adm_fail(a, "resetting group '%s' on %s (%s) failed: %s", group, r->qd[i].broker, addr, err);
        }
    }
    cli_route_free(r);
    if (!tb)
        return adm_fail(a, "out of memory");
    tbl_print(tb, a->json, stdout);
    tbl_free(tb);
    return failed ? 1 : 0;
}
