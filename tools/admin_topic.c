/*
 * rmqadmin topic commands: updateTopic, deleteTopic, topicList, topicRoute,
 * topicStatus. Topic changes go to the brokers (which register them with
 * the nameservers); reads come from the nameserver and, for offsets, from
 * each broker holding a queue.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin.h"
#include "fastjson.h"
#include "message.h"

/* Sends a request to every nameserver of -n; returns the worst rc. */
static int each_namesrv(struct adm *a, int code, const char *k1, const char *v1, const char *k2,
                        const char *v2, const char *k3, const char *v3, char *err, size_t errlen)
{
    cli_client *c = adm_client(a);
    if (!c)
        return -EINVAL;
    int worst = 0;
    const char *p = a->ns;
    while (*p) {
        size_t n = strcspn(p, ";, ");
        if (n > 0 && n < CLI_ADDR_MAX) {
            char addr[CLI_ADDR_MAX];
            memcpy(addr, p, n);
            addr[n] = 0;
            rmt_cmd req;
            cli_cmd_init(c, &req, code);
            if (k1)
                rmt_cmd_set_ext(&req, k1, v1);
            if (k2)
                rmt_cmd_set_ext(&req, k2, v2);
            if (k3)
                rmt_cmd_set_ext(&req, k3, v3);
            int rc = cli_admin_invoke(c, addr, &req, NULL, NULL, err, errlen);
            rmt_cmd_destroy(&req);
            if (rc)
                worst = rc;
        }
        p += n;
        if (*p)
            p++;
    }
    return worst;
}

int adm_update_topic(struct adm *a)
{
    struct cli_topic_conf t = { 0 };
    long long r, w, perm;
    t.topic = adm_arg(a, 't');
    if (adm_int_arg(a, 'r', 8, 1, 1024, &r) || adm_int_arg(a, 'w', 8, 1, 1024, &w) ||
        adm_int_arg(a, 'p', 6, 2, 6, &perm))
        return 2;
    if (perm != 2 && perm != 4 && perm != 6)
        return adm_fail(a, "bad value %lld for -p: expected 2 (write), 4 (read) or 6 (read+write)", perm) + 1;
    const char *order = adm_arg(a, 'o');
    if (order && strcmp(order, "true") && strcmp(order, "false"))
        return adm_fail(a, "bad value '%s' for -o: expected true or false", order) + 1;
    if (strlen(t.topic) >= CLI_NAME_MAX)
        return adm_fail(a, "topic name is longer than %d bytes", CLI_NAME_MAX - 1) + 1;
    t.read_queues = (int)r;
    t.write_queues = (int)w;
    t.perm = (int)perm;
    t.order = order && strcmp(order, "true") == 0;
    char addrs[ADM_MAX_BROKERS][CLI_ADDR_MAX], names[ADM_MAX_BROKERS][CLI_NAME_MAX];
    int n = adm_targets(a, addrs, names, ADM_MAX_BROKERS);
    if (n < 0)
        return 1;
    cli_client *c = adm_client(a);
    if (!c)
        return 1;
    static const char *const h[] = { "Broker", "Address", "Result" };
    tbl *tb = tbl_new(3, h);
    if (!tb)
        return adm_fail(a, "out of memory");
    int failed = 0;
    struct buf conf = BUF_INIT;
    for (int i = 0; i < n; i++) {
        char err[ADM_ERR_MAX];
        int rc = cli_admin_create_topic(c, addrs[i], &t, err, sizeof err);
        tbl_str(tb, names[i]);
        tbl_str(tb, addrs[i]);
        tbl_str(tb, rc ? err : "OK");
        if (rc) {
            failed++;
            fprintf(stderr, "rmqadmin updateTopic: creating '%s' on %s failed: %s\n", t.topic,
                    addrs[i], err);
        } else if (names[i][0]) {
            buf_printf(&conf, "%s%s:%d", conf.len ? ";" : "", names[i], t.write_queues);
        }
    }
    if (t.order && conf.len && !failed) {
        char err[ADM_ERR_MAX];
        buf_append_u8(&conf, 0);
        int rc = each_namesrv(a, RMT_REQ_PUT_KV_CONFIG, "namespace", "ORDER_TOPIC_CONFIG", "key",
                              t.topic, "value", (const char *)conf.data, err, sizeof err);
        if (rc) {
            failed++;
            fprintf(stderr, "rmqadmin updateTopic: storing the order config of '%s' failed: %s\n",
                    t.topic, err);
        }
    }
    buf_free(&conf);
    tbl_print(tb, a->json, stdout);
    tbl_free(tb);
    return failed ? 1 : 0;
}

int adm_delete_topic(struct adm *a)
{
    const char *topic = adm_arg(a, 't');
    const char *cluster = adm_arg(a, 'c');
    struct adm_cluster *ci = malloc(sizeof *ci);
    if (!ci)
        return adm_fail(a, "out of memory");
    if (adm_cluster_info(a, ci)) {
        free(ci);
        return 1;
    }
    cli_client *c = adm_client(a);
    static const char *const h[] = { "Target", "Address", "Result" };
    tbl *tb = tbl_new(3, h);
    int failed = 0, brokers = 0;
    for (int i = 0; i < ci->n && tb; i++) {
        if (strcmp(ci->b[i].cluster, cluster))
            continue;
        brokers++;
        char err[ADM_ERR_MAX];
        int rc = cli_admin_delete_topic_broker(c, ci->b[i].addr, topic, err, sizeof err);
        tbl_strf(tb, "broker %s", ci->b[i].name);
        tbl_str(tb, ci->b[i].addr);
        tbl_str(tb, rc ? err : "OK");
        if (rc) {
            failed++;
            fprintf(stderr, "rmqadmin deleteTopic: deleting '%s' on %s failed: %s\n", topic,
                    ci->b[i].addr, err);
        }
    }
    free(ci);
    if (!tb)
        return adm_fail(a, "out of memory");
    if (brokers == 0) {
        tbl_free(tb);
        return adm_fail(a, "cluster '%s' has no broker registered on %s", cluster, a->ns);
    }
    char err[ADM_ERR_MAX];
    int rc = each_namesrv(a, RMT_REQ_DELETE_TOPIC_IN_NAMESRV, "topic", topic, NULL, NULL, NULL, NULL,
                          err, sizeof err);
    tbl_str(tb, "nameservers");
    tbl_str(tb, a->ns);
    tbl_str(tb, rc ? err : "OK");
    if (rc) {
        failed++;
        fprintf(stderr, "rmqadmin deleteTopic: deleting '%s' from the nameservers failed: %s\n",
                topic, err);
    }
    each_namesrv(a, RMT_REQ_DELETE_KV_CONFIG, "namespace", "ORDER_TOPIC_CONFIG", "key", topic, NULL,
                 NULL, err, sizeof err);
    tbl_print(tb, a->json, stdout);
    tbl_free(tb);
    return failed ? 1 : 0;
}

static int cmp_str(const void *x, const void *y)
{
    return strcmp(*(const char *const *)x, *(const char *const *)y);
}

int adm_topic_list(struct adm *a)
{
    cli_client *c = adm_client(a);
    if (!c)
        return 1;
    char err[ADM_ERR_MAX], *body = NULL;
    int rc = cli_admin_topic_list(c, &body, err, sizeof err);
    if (rc < 0)
        return adm_fail(a, "cannot reach the nameserver %s: %s", a->ns, err);
    if (rc > 0)
        return adm_fail(a, "topic list refused: %s", err);
    json_t *j = fj_parse(body, strlen(body), err, sizeof err);
    free(body);
    if (!j)
        return adm_fail(a, "malformed topic list from %s: %s", a->ns, err);
    json_t *list = json_object_get(j, "topicList");
    size_t n = json_array_size(list);
    const char **names = calloc(n ? n : 1, sizeof *names);
    if (!names) {
        json_decref(j);
        return adm_fail(a, "out of memory");
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (json_is_string(json_array_get(list, i)))
            names[k++] = json_string_value(json_array_get(list, i));
    qsort(names, k, sizeof *names, cmp_str);
    static const char *const h[] = { "Topic" };
    tbl *tb = a->json ? tbl_new(1, h) : NULL;
    for (size_t i = 0; i < k; i++) {
        if (tb)
            tbl_str(tb, names[i]);
        else
            printf("%s\n", names[i]);
    }
    free(names);
    json_decref(j);
    if (a->json && (!tb || tbl_print(tb, true, stdout))) {
        tbl_free(tb);
        return adm_fail(a, "out of memory");
    }
    tbl_free(tb);
    return 0;
}

static const char *perm_name(int perm)
{
    switch (perm & (CLI_PERM_READ | CLI_PERM_WRITE)) {
    case CLI_PERM_READ | CLI_PERM_WRITE: return "RW";
    case CLI_PERM_READ: return "R";
    case CLI_PERM_WRITE: return "W";
    default: return "-";
    }
}

int adm_topic_route(struct adm *a)
{
    const char *topic = adm_arg(a, 't');
    struct cli_route *r = adm_route(a, topic);
    if (!r)
        return 1;
    static const char *const hb[] = { "Broker", "Cluster", "BID", "Address" };
    static const char *const hq[] = { "Broker", "ReadQueues", "WriteQueues", "Perm", "PermName",
                                      "SysFlag" };
    tbl *tb = tbl_new(4, hb), *tq = tbl_new(6, hq);
    for (int i = 0; tb && i < r->nbrokers; i++)
        for (int k = 0; k < r->brokers[i].naddrs; k++) {
            tbl_str(tb, r->brokers[i].name);
            tbl_str(tb, r->brokers[i].cluster);
            tbl_int(tb, r->brokers[i].addrs[k].id);
            tbl_str(tb, r->brokers[i].addrs[k].addr);
        }
    for (int i = 0; tq && i < r->nqd; i++) {
        tbl_str(tq, r->qd[i].broker);
        tbl_int(tq, r->qd[i].read_queues);
        tbl_int(tq, r->qd[i].write_queues);
        tbl_int(tq, r->qd[i].perm);
        tbl_str(tq, perm_name(r->qd[i].perm));
        tbl_int(tq, r->qd[i].sys_flag);
    }
    cli_route_free(r);
    int rc = 0;
    if (!tb || !tq) {
        rc = adm_fail(a, "out of memory");
    } else if (a->json) {
        json_t *o = json_object();
        json_object_set_new(o, "topic", json_string(topic));
        json_object_set_new(o, "brokers", tbl_json(tb));
        json_object_set_new(o, "queues", tbl_json(tq));
        json_dumpf(o, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        putchar('\n');
        json_decref(o);
    } else {
        printf("Topic: %s\n\n", topic);
        tbl_print(tb, false, stdout);
        putchar('\n');
        tbl_print(tq, false, stdout);
    }
    tbl_free(tb);
    tbl_free(tq);
    return rc;
}

struct qstat {
    int64_t min, max, last;
    bool have;
};

/* GET_TOPIC_STATS_INFO from one broker into st[qid]; returns 0 or the rc. */
static int stats_from_broker(struct adm *a, const char *addr, const char *topic, const char *broker,
                             struct qstat *st, int nq, char *err, size_t errlen)
{
    cli_client *c = adm_client(a);
    rmt_cmd req;
    char *body = NULL;
    cli_cmd_init(c, &req, RMT_REQ_GET_TOPIC_STATS_INFO);
    rmt_cmd_set_ext(&req, "topic", topic);
    int rc = cli_admin_invoke(c, addr, &req, &body, NULL, err, errlen);
    rmt_cmd_destroy(&req);
    if (rc)
        return rc;
    json_t *j = fj_parse(body, strlen(body), err, errlen);
    free(body);
    if (!j)
        return -EBADMSG;
    const char *key;
    json_t *v;
    json_object_foreach(json_object_get(j, "offsetTable"), key, v) {
        json_t *mq = fj_key_object(key);
        const char *bn = fj_str(mq, "brokerName");
        long long qid = fj_int(mq, "queueId", -1);
        if (bn && strcmp(bn, broker) == 0 && qid >= 0 && qid < nq) {
            st[qid].min = fj_int(v, "minOffset", 0);
            st[qid].max = fj_int(v, "maxOffset", 0);
            st[qid].last = fj_int(v, "lastUpdateTimestamp", 0);
            st[qid].have = true;
        }
        json_decref(mq);
    }
    json_decref(j);
    return 0;
}

/* Per-queue offsets when the broker has no GET_TOPIC_STATS_INFO: min and max
 * offsets, and the store time of the last message. */
static int stats_by_queue(struct adm *a, const char *addr, const char *topic, struct qstat *st,
                          int nq, char *err, size_t errlen)
{
    cli_client *c = adm_client(a);
    for (int q = 0; q < nq; q++) {
        int rc = cli_admin_min_offset(c, addr, topic, q, &st[q].min, err, errlen);
        if (!rc)
            rc = cli_admin_max_offset(c, addr, topic, q, &st[q].max, err, errlen);
        if (rc)
            return rc;
        st[q].last = 0;
        if (st[q].max > st[q].min) {
            uint8_t *rec = NULL;
            size_t len = 0;
            char perr[ADM_ERR_MAX];
            if (adm_pull_one(a, addr, topic, q, st[q].max - 1, &rec, &len, perr, sizeof perr) == 0) {
                struct msg_record m;
                if (msg_record_decode(rec, len, &m, 0) > 0)
                    st[q].last = m.store_ts;
                free(rec);
            }
        }
        st[q].have = true;
    }
    return 0;
}

int adm_topic_status(struct adm *a)
{
    const char *topic = adm_arg(a, 't');
    struct cli_route *r = adm_route(a, topic);
    if (!r)
        return 1;
    static const char *const h[] = { "Broker", "QID", "MinOffset", "MaxOffset", "LastUpdated" };
    tbl *tb = tbl_new(5, h);
    int failed = 0;
    for (int i = 0; tb && i < r->nqd; i++) {
        const char *addr = cli_route_any_addr(r, r->qd[i].broker, false);
        int nq = r->qd[i].read_queues > r->qd[i].write_queues ? r->qd[i].read_queues
                                                               : r->qd[i].write_queues;
        if (!addr || nq <= 0)
            continue;
        struct qstat *st = calloc((size_t)nq, sizeof *st);
        if (!st)
            break;
        char err[ADM_ERR_MAX];
        int rc = stats_from_broker(a, addr, topic, r->qd[i].broker, st, nq, err, sizeof err);
        if (rc)
            rc = stats_by_queue(a, addr, topic, st, nq, err, sizeof err);
        if (rc) {
            failed++;
            fprintf(stderr, "rmqadmin topicStatus: offsets of '%s' on %s (%s): %s\n", topic,
                    r->qd[i].broker, addr, err);
        }
        for (int q = 0; q < nq && !rc; q++) {
            if (!st[q].have)
                continue;
            char ts[64];
            adm_fmt_time(st[q].last, ts, sizeof ts);
            tbl_str(tb, r->qd[i].broker);
            tbl_int(tb, q);
            tbl_int(tb, st[q].min);
            tbl_int(tb, st[q].max);
            tbl_str(tb, st[q].last > 0 ? ts : "-");
        }
        free(st);
    }
    cli_route_free(r);
    if (!tb)
        return adm_fail(a, "out of memory");
    tbl_print(tb, a->json, stdout);
    tbl_free(tb);
    return failed ? 1 : 0;
}
