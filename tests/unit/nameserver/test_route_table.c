/* Unit tests for the nameserver route table (nameserver/route_table.c) and
 * the fastjson helpers it relies on (common/json_util.c). */
#include <check.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json_util.h"
#include "log.h"
#include "route_table.h"

#define CL "DefaultCluster"
#define A0 "127.0.0.1:10911"
#define A1 "127.0.0.1:10921"
#define B0 "127.0.0.2:10911"

/* One TopicConfig entry as a RocketMQ broker serialises it. */
static void topic_cfg(struct buf *b, const char *name, int rq, int wq, int perm)
{
    ck_assert_int_eq(buf_printf(b,
                                "%s\"%s\":{\"topicName\":\"%s\",\"readQueueNums\":%d,"
                                "\"writeQueueNums\":%d,\"perm\":%d,\"topicFilterType\":"
                                "\"SINGLE_TAG\",\"topicSysFlag\":0,\"order\":false}",
                                b->len ? "," : "", name, name, rq, wq, perm),
                     0);
}

/* RegisterBrokerBody with the given data version and topic entries
 * (name, readQueueNums, writeQueueNums, perm) terminated by a NULL name. */
static char *reg_body(long long ts, long long counter, ...)
{
    struct buf t = BUF_INIT;
    va_list ap;
    va_start(ap, counter);
    const char *name;
    while ((name = va_arg(ap, const char *))) {
        int rq = va_arg(ap, int), wq = va_arg(ap, int), perm = va_arg(ap, int);
        topic_cfg(&t, name, rq, wq, perm);
    }
    va_end(ap);
    struct buf b = BUF_INIT;
    ck_assert_int_eq(buf_printf(&b,
                                "{\"topicConfigSerializeWrapper\":{\"topicConfigTable\":{%.*s},"
                                "\"dataVersion\":{\"timestamp\":%lld,\"counter\":%lld}},"
                                "\"filterServerList\":[]}",
                                (int)t.len, t.len ? (const char *)t.data : "", ts, counter),
                     0);
    buf_free(&t);
    ck_assert_int_eq(buf_append_u8(&b, 0), 0);
    return (char *)b.data;
}

static int reg(struct ns_route_table *rt, const char *cluster, const char *name, const char *addr,
               long long id, const char *body, unsigned long long conn, long long now,
               struct ns_register_result *res)
{
    struct ns_register_result local;
    char err[256] = "";
    int rc = ns_register_broker(rt, cluster, name, addr, id, "", body, body ? strlen(body) : 0,
                                conn, now, res ? res : &local, err, sizeof err);
    ck_assert_msg(rc == 0, "register %s failed: %d %s", addr, rc, err);
    return rc;
}

/* Route JSON of topic as a NUL-terminated string (caller frees), or NULL. */
static char *route(struct ns_route_table *rt, const char *topic)
{
    struct buf b = BUF_INIT;
    int rc = ns_route_json(rt, topic, &b);
    if (rc) {
        ck_assert_int_eq(rc, -ENOENT);
        ck_assert_uint_eq(b.len, 0);
        buf_free(&b);
        return NULL;
    }
    ck_assert_int_eq(buf_append_u8(&b, 0), 0);
    return (char *)b.data;
}

static char *text_of(int (*fn)(const struct ns_route_table *, struct buf *),
                     const struct ns_route_table *rt)
{
    struct buf b = BUF_INIT;
    ck_assert_int_eq(fn(rt, &b), 0);
    ck_assert_int_eq(buf_append_u8(&b, 0), 0);
    return (char *)b.data;
}

#define ASSERT_ROUTE(rt, topic, want)                                                              \
    do {                                                                                           \
        char *got_ = route(rt, topic);                                                             \
        ck_assert_ptr_nonnull(got_);                                                               \
        ck_assert_str_eq(got_, want);                                                              \
        free(got_);                                                                                \
    } while (0)

#define ASSERT_TEXT(fn, rt, want)                                                                  \
    do {                                                                                           \
        char *got_ = text_of(fn, rt);                                                              \
        ck_assert_str_eq(got_, want);                                                              \
        free(got_);                                                                                \
    } while (0)

#define QD(name, perm, rq, wq)                                                                     \
    "{\"brokerName\":\"" name "\",\"perm\":" #perm ",\"readQueueNums\":" #rq                       \
    ",\"topicSysFlag\":0,\"writeQueueNums\":" #wq "}"

START_TEST(test_register_query_unregister)
{
    struct ns_route_table *rt = ns_route_table_create();
    ck_assert_ptr_nonnull(rt);
    char *body = reg_body(1700000000000LL, 1, "TopicA", 4, 4, 6, NULL);
    struct ns_register_result res;
    reg(rt, CL, "broker-a", A0, 0, body, 11, 1000, &res);
    ck_assert(res.first_registration);
    ck_assert_int_eq(res.topics_updated, 1);
    ck_assert_str_eq(res.master_addr, "");
    ck_assert_uint_eq(ns_broker_count(rt), 1);
    ck_assert(ns_topic_exists(rt, "TopicA"));

    ASSERT_ROUTE(rt, "TopicA",
                 "{\"brokerDatas\":[{\"brokerAddrs\":{0:\"127.0.0.1:10911\"},\"brokerName\":"
                 "\"broker-a\",\"cluster\":\"DefaultCluster\"}],\"filterServerTable\":{},"
                 "\"queueDatas\":[{\"brokerName\":\"broker-a\",\"perm\":6,\"readQueueNums\":4,"
                 "\"topicSysFlag\":0,\"writeQueueNums\":4}]}");
    ASSERT_TEXT(ns_cluster_info_json, rt,
                "{\"brokerAddrTable\":{\"broker-a\":{\"brokerAddrs\":{0:\"127.0.0.1:10911\"},"
                "\"brokerName\":\"broker-a\",\"cluster\":\"DefaultCluster\"}},"
                "\"clusterAddrTable\":{\"DefaultCluster\":[\"broker-a\"]}}");
    ASSERT_TEXT(ns_topic_list_json, rt, "{\"topicList\":[\"TopicA\"]}");

    struct ns_data_version dv;
    ck_assert_int_eq(ns_broker_data_version(rt, A0, &dv), 0);
    ck_assert_int_eq(dv.timestamp, 1700000000000LL);
    ck_assert_int_eq(dv.counter, 1);

    ck_assert_int_eq(ns_unregister_broker(rt, "OtherCluster", A0, "broker-a", 0), -ENOENT);
    ck_assert_int_eq(ns_unregister_broker(rt, CL, "127.0.0.9:1", "broker-a", 0), -ENOENT);
    ck_assert_int_eq(ns_unregister_broker(rt, CL, A0, "broker-a", 0), 0);
    ck_assert_int_eq(ns_unregister_broker(rt, CL, A0, "broker-a", 0), -ENOENT);
    ck_assert_ptr_null(route(rt, "TopicA"));
    ck_assert_uint_eq(ns_topic_count(rt), 0);
    ck_assert_uint_eq(ns_broker_count(rt), 0);
    ck_assert_int_eq(ns_broker_data_version(rt, A0, &dv), -ENOENT);
    ASSERT_TEXT(ns_cluster_info_json, rt, "{\"brokerAddrTable\":{},\"clusterAddrTable\":{}}");
    ASSERT_TEXT(ns_topic_list_json, rt, "{\"topicList\":[]}");
    free(body);
    ns_route_table_free(rt);
}
END_TEST

START_TEST(test_data_version)
{
    struct ns_route_table *rt = ns_route_table_create();
    struct ns_register_result res;
    char *b1 = reg_body(1000, 1, "TopicA", 4, 4, 6, NULL);
    reg(rt, CL, "broker-a", A0, 0, b1, 1, 0, &res);

    /* Equal version with different data: heartbeat only. */
    char *b_eq = reg_body(1000, 1, "TopicA", 8, 8, 6, NULL);
    reg(rt, CL, "broker-a", A0, 0, b_eq, 1, 10, &res);
    ck_assert(!res.first_registration);
    ck_assert_int_eq(res.topics_updated, 0);
    char *r = route(rt, "TopicA");
    ck_assert_ptr_nonnull(strstr(r, QD("broker-a", 6, 4, 4)));
    free(r);

    /* Newer version replaces the topic data. */
    char *b_new = reg_body(2000, 2, "TopicA", 8, 8, 6, NULL);
    reg(rt, CL, "broker-a", A0, 0, b_new, 1, 20, &res);
    ck_assert_int_eq(res.topics_updated, 1);
    r = route(rt, "TopicA");
    ck_assert_ptr_nonnull(strstr(r, QD("broker-a", 6, 8, 8)));
    free(r);
    struct ns_data_version dv;
    ck_assert_int_eq(ns_broker_data_version(rt, A0, &dv), 0);
    ck_assert_int_eq(dv.counter, 2);

    /* Older version: ignored, stored version kept. */
    char *b_old = reg_body(1500, 1, "TopicA", 2, 2, 6, NULL);
    reg(rt, CL, "broker-a", A0, 0, b_old, 1, 30, &res);
    ck_assert_int_eq(res.topics_updated, 0);
    r = route(rt, "TopicA");
    ck_assert_ptr_nonnull(strstr(r, QD("broker-a", 6, 8, 8)));
    free(r);
    ck_assert_int_eq(ns_broker_data_version(rt, A0, &dv), 0);
    ck_assert_int_eq(dv.counter, 2);
    ck_assert_int_eq(dv.timestamp, 2000);

    /* Equal version carrying a topic the broker has no queue data for yet
     * (split registration): the new topic is added, the known one is not touched. */
    char *b_split = reg_body(2000, 2, "TopicA", 1, 1, 6, "TopicB", 2, 2, 6, NULL);
    reg(rt, CL, "broker-a", A0, 0, b_split, 1, 40, &res);
    ck_assert_int_eq(res.topics_updated, 1);
    ASSERT_TEXT(ns_topic_list_json, rt, "{\"topicList\":[\"TopicA\",\"TopicB\"]}");
    r = route(rt, "TopicA");
    ck_assert_ptr_nonnull(strstr(r, QD("broker-a", 6, 8, 8)));
    free(r);

    /* A new connection (broker restarted) applies its data whatever the version. */
    reg(rt, CL, "broker-a", A0, 0, b_old, 2, 50, &res);
    ck_assert(res.first_registration);
    r = route(rt, "TopicA");
    ck_assert_ptr_nonnull(strstr(r, QD("broker-a", 6, 2, 2)));
    free(r);

    /* A registration never drops topics the broker no longer lists. */
    ck_assert(ns_topic_exists(rt, "TopicB"));

    /* Empty body: no topics, version 0, heartbeat kept. */
    reg(rt, CL, "broker-c", "127.0.0.3:10911", 0, NULL, 3, 60, &res);
    ck_assert_int_eq(ns_broker_data_version(rt, "127.0.0.3:10911", &dv), 0);
    ck_assert_int_eq(dv.counter, 0);
    ck_assert_int_eq(dv.timestamp, 0);
    ck_assert_int_eq(res.topics_updated, 0);

    free(b1);
    free(b_eq);
    free(b_new);
    free(b_old);
    free(b_split);
    ns_route_table_free(rt);
}
END_TEST

struct evicted {
    int n;
    char addr[4][64];
    unsigned long long conn[4];
};

static void on_evict(void *ctx, const char *addr, uint64_t conn)
{
    struct evicted *e = ctx;
    ck_assert_int_lt(e->n, 4);
    snprintf(e->addr[e->n], sizeof e->addr[0], "%s", addr);
    e->conn[e->n++] = conn;
}

START_TEST(test_expiry)
{
    struct ns_route_table *rt = ns_route_table_create();
    char *body = reg_body(1, 1, "TopicA", 4, 4, 6, NULL);
    reg(rt, CL, "broker-a", A0, 0, body, 1, 0, NULL);
    reg(rt, CL, "broker-a", A1, 1, body, 2, 0, NULL);
    /* Master heartbeats again at t=100 s; the slave does not. */
    reg(rt, CL, "broker-a", A0, 0, body, 1, 100000, NULL);

    struct evicted ev = { 0 };
    ck_assert_int_eq(ns_scan_expired(rt, 120000, 120000, on_evict, &ev), 0);
    ck_assert_int_eq(ns_scan_expired(rt, 120001, 120000, on_evict, &ev), 1);
    ck_assert_int_eq(ev.n, 1);
    ck_assert_str_eq(ev.addr[0], A1);
    ck_assert_uint_eq(ev.conn[0], 2);
    char *r = route(rt, "TopicA");
    ck_assert_ptr_nonnull(strstr(r, "\"brokerAddrs\":{0:\"127.0.0.1:10911\"}"));
    free(r);

    /* ns_touch_broker refreshes like a heartbeat. */
    ck_assert_int_eq(ns_touch_broker(rt, A0, 200000), 0);
    ck_assert_int_eq(ns_touch_broker(rt, A1, 200000), -ENOENT);
    ck_assert_int_eq(ns_scan_expired(rt, 320000, 120000, on_evict, &ev), 0);
    ck_assert_int_eq(ns_scan_expired(rt, 320001, 120000, NULL, NULL), 1);
    ck_assert_ptr_null(route(rt, "TopicA"));
    ck_assert_uint_eq(ns_topic_count(rt), 0);
    ASSERT_TEXT(ns_cluster_info_json, rt, "{\"brokerAddrTable\":{},\"clusterAddrTable\":{}}");
    free(body);
    ns_route_table_free(rt);
}
END_TEST

START_TEST(test_evict_conn)
{
    struct ns_route_table *rt = ns_route_table_create();
    char *body = reg_body(1, 1, "TopicA", 4, 4, 6, NULL);
    reg(rt, CL, "broker-a", A0, 0, body, 7, 0, NULL);
    reg(rt, CL, "broker-b", B0, 0, body, 8, 0, NULL);
    reg(rt, CL, "broker-c", "127.0.0.3:10911", 0, body, 0, 0, NULL);
    ck_assert_int_eq(ns_evict_conn(rt, 7), 1);
    ck_assert_int_eq(ns_evict_conn(rt, 7), 0);
    ck_assert_int_eq(ns_evict_conn(rt, 0), 0);
    ck_assert_uint_eq(ns_broker_count(rt), 2);
    char *r = route(rt, "TopicA");
    ck_assert_ptr_null(strstr(r, "broker-a"));
    ck_assert_ptr_nonnull(strstr(r, "broker-b"));
    free(r);
    ck_assert_int_eq(ns_evict_conn(rt, 8), 1);
    ck_assert_uint_eq(ns_broker_count(rt), 1);
    free(body);
    ns_route_table_free(rt);
}
END_TEST

START_TEST(test_route_two_brokers)
{
    struct ns_route_table *rt = ns_route_table_create();
    char *ba = reg_body(1, 1, "TopicA", 4, 4, 6, NULL);
    char *bb = reg_body(1, 1, "TopicA", 8, 8, 6, "TopicB", 2, 2, 6, NULL);
    char *bs = reg_body(1, 1, "SlaveOnly", 1, 1, 6, NULL);
    struct ns_register_result res;
    char err[128];

    reg(rt, CL, "broker-b", B0, 0, bb, 1, 0, NULL);
    /* Slave first: no master yet, and a slave's topics are not routed. */
    reg(rt, CL, "broker-a", A1, 1, bs, 2, 0, &res);
    ck_assert_str_eq(res.master_addr, "");
    ck_assert(!ns_topic_exists(rt, "SlaveOnly"));
    ck_assert_int_eq(ns_register_broker(rt, CL, "broker-a", A0, 0, "127.0.0.1:10912", ba,
                                        strlen(ba), 3, 0, &res, err, sizeof err),
                     0);
    reg(rt, CL, "broker-a", A1, 1, bs, 2, 10, &res);
    ck_assert_str_eq(res.master_addr, A0);
    ck_assert_str_eq(res.ha_server_addr, "127.0.0.1:10912");

    const char *want = "{\"brokerDatas\":["
                       "{\"brokerAddrs\":{0:\"127.0.0.1:10911\",1:\"127.0.0.1:10921\"},"
                       "\"brokerName\":\"broker-a\",\"cluster\":\"DefaultCluster\"},"
                       "{\"brokerAddrs\":{0:\"127.0.0.2:10911\"},"
                       "\"brokerName\":\"broker-b\",\"cluster\":\"DefaultCluster\"}],"
                       "\"filterServerTable\":{},\"queueDatas\":[" QD("broker-a", 6, 4, 4) ","
                       QD("broker-b", 6, 8, 8) "]}";
    ASSERT_ROUTE(rt, "TopicA", want);
    ASSERT_ROUTE(rt, "TopicB",
                 "{\"brokerDatas\":[{\"brokerAddrs\":{0:\"127.0.0.2:10911\"},\"brokerName\":"
                 "\"broker-b\",\"cluster\":\"DefaultCluster\"}],\"filterServerTable\":{},"
                 "\"queueDatas\":[" QD("broker-b", 6, 2, 2) "]}");

    /* Our own clients parse the answer after quoting the numeric keys. */
    char *r = route(rt, "TopicA");
    char jerr[256];
    json_t *root = json_parse_rocketmq(r, strlen(r), jerr, sizeof jerr);
    ck_assert_msg(root != NULL, "%s", jerr);
    json_t *addrs = json_object_get(json_array_get(json_object_get(root, "brokerDatas"), 0),
                                    "brokerAddrs");
    ck_assert_str_eq(json_string_value(json_object_get(addrs, "1")), A1);
    json_decref(root);
    free(r);

    ASSERT_TEXT(ns_cluster_info_json, rt,
                "{\"brokerAddrTable\":{"
                "\"broker-a\":{\"brokerAddrs\":{0:\"127.0.0.1:10911\",1:\"127.0.0.1:10921\"},"
                "\"brokerName\":\"broker-a\",\"cluster\":\"DefaultCluster\"},"
                "\"broker-b\":{\"brokerAddrs\":{0:\"127.0.0.2:10911\"},"
                "\"brokerName\":\"broker-b\",\"cluster\":\"DefaultCluster\"}},"
                "\"clusterAddrTable\":{\"DefaultCluster\":[\"broker-a\",\"broker-b\"]}}");

    /* Master leaves: the name still has its slave, so its queue data stays. */
    ck_assert_int_eq(ns_unregister_broker(rt, CL, A0, "broker-a", 0), 0);
    r = route(rt, "TopicA");
    ck_assert_ptr_nonnull(strstr(r, "{\"brokerAddrs\":{1:\"127.0.0.1:10921\"}"));
    ck_assert_ptr_nonnull(strstr(r, QD("broker-a", 6, 4, 4)));
    free(r);
    /* Slave leaves too: broker-a's queue data goes, TopicA lives on broker-b. */
    ck_assert_int_eq(ns_unregister_broker(rt, CL, A1, "broker-a", 1), 0);
    ASSERT_ROUTE(rt, "TopicA",
                 "{\"brokerDatas\":[{\"brokerAddrs\":{0:\"127.0.0.2:10911\"},\"brokerName\":"
                 "\"broker-b\",\"cluster\":\"DefaultCluster\"}],\"filterServerTable\":{},"
                 "\"queueDatas\":[" QD("broker-b", 6, 8, 8) "]}");
    free(ba);
    free(bb);
    free(bs);
    ns_route_table_free(rt);
}
END_TEST

START_TEST(test_unknown_topic)
{
    struct ns_route_table *rt = ns_route_table_create();
    struct buf b = BUF_INIT;
    ck_assert_int_eq(ns_route_json(rt, "Nope", &b), -ENOENT);
    char *body = reg_body(1, 1, "TopicA", 4, 4, 6, NULL);
    reg(rt, CL, "broker-a", A0, 0, body, 1, 0, NULL);
    ck_assert_int_eq(buf_printf(&b, "keep"), 0);
    ck_assert_int_eq(ns_route_json(rt, "Nope", &b), -ENOENT);
    ck_assert_int_eq(ns_route_json(rt, "topica", &b), -ENOENT);
    ck_assert_uint_eq(b.len, 4);
    ck_assert(!ns_topic_exists(rt, "Nope"));
    buf_free(&b);
    free(body);
    ns_route_table_free(rt);
}
END_TEST

START_TEST(test_write_perm)
{
    struct ns_route_table *rt = ns_route_table_create();
    char *ba = reg_body(1, 1, "TopicA", 4, 4, 6, "TopicB", 4, 4, 6, NULL);
    char *bb = reg_body(1, 1, "TopicA", 4, 4, 6, NULL);
    reg(rt, CL, "broker-a", A0, 0, ba, 1, 0, NULL);
    reg(rt, CL, "broker-b", B0, 0, bb, 2, 0, NULL);

    ck_assert_int_eq(ns_wipe_write_perm(rt, "broker-a"), 2);
    char *r = route(rt, "TopicA");
    ck_assert_ptr_nonnull(strstr(r, QD("broker-a", 4, 4, 4)));
    ck_assert_ptr_nonnull(strstr(r, QD("broker-b", 6, 4, 4)));
    free(r);
    r = route(rt, "TopicB");
    ck_assert_ptr_nonnull(strstr(r, QD("broker-a", 4, 4, 4)));
    free(r);

    ck_assert_int_eq(ns_add_write_perm(rt, "broker-a"), 2);
    r = route(rt, "TopicA");
    ck_assert_ptr_nonnull(strstr(r, QD("broker-a", 6, 4, 4)));
    free(r);
    ck_assert_int_eq(ns_wipe_write_perm(rt, "broker-x"), 0);
    ck_assert_int_eq(ns_add_write_perm(rt, "broker-x"), 0);
    free(ba);
    free(bb);
    ns_route_table_free(rt);
}
END_TEST

START_TEST(test_delete_topic)
{
    struct ns_route_table *rt = ns_route_table_create();
    char *body = reg_body(1, 1, "TopicA", 4, 4, 6, "TopicB", 4, 4, 6, NULL);
    reg(rt, "c1", "broker-a", A0, 0, body, 1, 0, NULL);
    reg(rt, "c2", "broker-b", B0, 0, body, 2, 0, NULL);

    ck_assert_int_eq(ns_delete_topic(rt, "TopicA", NULL), 0);
    ck_assert_ptr_null(route(rt, "TopicA"));
    ck_assert_int_eq(ns_delete_topic(rt, "TopicA", NULL), -ENOENT);
    ASSERT_TEXT(ns_topic_list_json, rt, "{\"topicList\":[\"TopicB\"]}");

    ck_assert_int_eq(ns_delete_topic(rt, "TopicB", "c3"), -ENOENT);
    ck_assert_int_eq(ns_delete_topic(rt, "TopicB", "c1"), 0);
    ASSERT_ROUTE(rt, "TopicB",
                 "{\"brokerDatas\":[{\"brokerAddrs\":{0:\"127.0.0.2:10911\"},\"brokerName\":"
                 "\"broker-b\",\"cluster\":\"c2\"}],\"filterServerTable\":{},"
                 "\"queueDatas\":[" QD("broker-b", 6, 4, 4) "]}");
    ck_assert_int_eq(ns_delete_topic(rt, "TopicB", "c2"), 0);
    ck_assert_uint_eq(ns_topic_count(rt), 0);

    /* An equal-version heartbeat brings a deleted topic back: the broker still has it. */
    reg(rt, "c1", "broker-a", A0, 0, body, 1, 10, NULL);
    ck_assert(ns_topic_exists(rt, "TopicA"));
    free(body);
    ns_route_table_free(rt);
}
END_TEST

START_TEST(test_topic_lists)
{
    struct ns_route_table *rt = ns_route_table_create();
    char *ba = reg_body(1, 1, "T2", 1, 1, 6, "T1", 1, 1, 6, NULL);
    char *bb = reg_body(1, 1, "T3", 1, 1, 6, "T1", 1, 1, 6, NULL);
    reg(rt, "c1", "broker-a", A0, 0, ba, 1, 0, NULL);
    reg(rt, "c2", "broker-b", B0, 0, bb, 2, 0, NULL);
    ASSERT_TEXT(ns_topic_list_json, rt, "{\"topicList\":[\"T1\",\"T2\",\"T3\"]}");

    struct buf b = BUF_INIT;
    ck_assert_int_eq(ns_topics_by_cluster_json(rt, "c2", &b), 0);
    ck_assert_int_eq(buf_append_u8(&b, 0), 0);
    ck_assert_str_eq((char *)b.data, "{\"topicList\":[\"T1\",\"T3\"]}");
    buf_reset(&b);
    ck_assert_int_eq(ns_topics_by_cluster_json(rt, "c9", &b), -ENOENT);
    ck_assert_uint_eq(b.len, 0);
    buf_free(&b);

    ASSERT_TEXT(ns_system_topic_list_json, rt,
                "{\"brokerAddr\":\"127.0.0.1:10911\",\"topicList\":[\"broker-a\",\"broker-b\","
                "\"c1\",\"c2\"]}");
    ASSERT_TEXT(ns_cluster_info_json, rt,
                "{\"brokerAddrTable\":{"
                "\"broker-a\":{\"brokerAddrs\":{0:\"127.0.0.1:10911\"},\"brokerName\":\"broker-a\","
                "\"cluster\":\"c1\"},"
                "\"broker-b\":{\"brokerAddrs\":{0:\"127.0.0.2:10911\"},\"brokerName\":\"broker-b\","
                "\"cluster\":\"c2\"}},"
                "\"clusterAddrTable\":{\"c1\":[\"broker-a\"],\"c2\":[\"broker-b\"]}}");
    free(ba);
    free(bb);
    ns_route_table_free(rt);
}
END_TEST

START_TEST(test_many_topics)
{
    struct ns_route_table *rt = ns_route_table_create();
    struct buf t = BUF_INIT;
    char name[32];
    for (int i = 0; i < 3000; i++) {
        snprintf(name, sizeof name, "Topic%04d", i);
        topic_cfg(&t, name, 4, 4, 6);
    }
    struct buf body = BUF_INIT;
    ck_assert_int_eq(buf_printf(&body,
                                "{\"topicConfigSerializeWrapper\":{\"topicConfigTable\":{%.*s},"
                                "\"dataVersion\":{\"timestamp\":1,\"counter\":1}}}",
                                (int)t.len, (char *)t.data),
                     0);
    struct ns_register_result res;
    char err[128];
    ck_assert_int_eq(ns_register_broker(rt, CL, "broker-a", A0, 0, NULL, (char *)body.data,
                                        body.len, 1, 0, &res, err, sizeof err),
                     0);
    ck_assert_int_eq(res.topics_updated, 3000);
    ck_assert_uint_eq(ns_topic_count(rt), 3000);
    for (int i = 0; i < 3000; i += 97) {
        snprintf(name, sizeof name, "Topic%04d", i);
        char *r = route(rt, name);
        ck_assert_ptr_nonnull(r);
        free(r);
    }
    char *list = text_of(ns_topic_list_json, rt);
    ck_assert_ptr_nonnull(strstr(list, "[\"Topic0000\",\"Topic0001\","));
    ck_assert_ptr_nonnull(strstr(list, ",\"Topic2999\"]}"));
    free(list);
    ck_assert_int_eq(ns_evict_conn(rt, 1), 1);
    ck_assert_uint_eq(ns_topic_count(rt), 0);
    buf_free(&t);
    buf_free(&body);
    ns_route_table_free(rt);
}
END_TEST

/* Registers body and expects -EINVAL with the exact message; the table's
 * answers must be unchanged. */
static void expect_bad_body(struct ns_route_table *rt, const char *body, const char *want)
{
    char *before_ci = text_of(ns_cluster_info_json, rt);
    char *before_route = route(rt, "TopicA");
    struct ns_register_result res;
    char err[256] = "";
    ck_assert_int_eq(ns_register_broker(rt, CL, "broker-a", A0, 0, "", body, strlen(body), 1,
                                        100000, &res, err, sizeof err),
                     -EINVAL);
    if (want[strlen(want) - 1] == '*')
        ck_assert_msg(strncmp(err, want, strlen(want) - 1) == 0, "got '%s'", err);
    else
        ck_assert_str_eq(err, want);
    char *after_ci = text_of(ns_cluster_info_json, rt);
    char *after_route = route(rt, "TopicA");
    ck_assert_str_eq(after_ci, before_ci);
    ck_assert_str_eq(after_route, before_route);
    free(before_ci);
    free(after_ci);
    free(before_route);
    free(after_route);
}

START_TEST(test_malformed_body)
{
    struct ns_route_table *rt = ns_route_table_create();
    char *good = reg_body(1, 1, "TopicA", 4, 4, 6, NULL);
    reg(rt, CL, "broker-a", A0, 0, good, 1, 0, NULL);

    expect_bad_body(rt, "{\"topicConfigSerializeWrapper\":", "register body: invalid JSON: *");
    expect_bad_body(rt, "not json", "register body: invalid JSON: line 1 column *");
    expect_bad_body(rt, "[]", "register body: expected a JSON object");
    expect_bad_body(rt, "{\"topicConfigSerializeWrapper\":5}",
                    "register body: topicConfigSerializeWrapper: expected an object");
    expect_bad_body(rt, "{\"topicConfigSerializeWrapper\":{\"topicConfigTable\":[]}}",
                    "register body: topicConfigTable: expected an object");
    expect_bad_body(rt, "{\"topicConfigSerializeWrapper\":{\"topicConfigTable\":{\"TopicA\":1}}}",
                    "register body: topic TopicA: expected an object");
    expect_bad_body(rt,
                    "{\"topicConfigSerializeWrapper\":{\"topicConfigTable\":{\"TopicA\":"
                    "{\"topicName\":\"TopicA\",\"perm\":99}},\"dataVersion\":{\"counter\":9}}}",
                    "register body: topic TopicA.perm: expected an integer in [0, 15]");
    expect_bad_body(rt,
                    "{\"topicConfigSerializeWrapper\":{\"topicConfigTable\":{\"TopicA\":"
                    "{\"readQueueNums\":\"4\"}},\"dataVersion\":{\"counter\":9}}}",
                    "register body: topic TopicA.readQueueNums: expected an integer in "
                    "[0, 2147483647]");
    expect_bad_body(rt,
                    "{\"topicConfigSerializeWrapper\":{\"topicConfigTable\":{\"TopicA\":"
                    "{\"writeQueueNums\":-1}},\"dataVersion\":{\"counter\":9}}}",
                    "register body: topic TopicA.writeQueueNums: expected an integer in "
                    "[0, 2147483647]");
    expect_bad_body(rt,
                    "{\"topicConfigSerializeWrapper\":{\"topicConfigTable\":{\"TopicA\":"
                    "{\"topicName\":7}}}}",
                    "register body: topic TopicA.topicName: expected a string");
    expect_bad_body(rt,
                    "{\"topicConfigSerializeWrapper\":{\"topicConfigTable\":{\"\":{}}}}",
                    "register body: topic : invalid topic name (1-255 bytes, no control "
                    "characters)");
    expect_bad_body(rt,
                    "{\"topicConfigSerializeWrapper\":{\"topicConfigTable\":{},"
                    "\"dataVersion\":{\"counter\":\"x\"}}}",
                    "register body: dataVersion.counter: expected an integer in "
                    "[-9223372036854775808, 9223372036854775807]");
    expect_bad_body(rt, "{\"filterServerList\":{}}",
                    "register body: filterServerList: expected an array");

    /* Bad arguments are refused the same way. */
    struct ns_register_result res;
    char err[256];
    ck_assert_int_eq(ns_register_broker(rt, "", "broker-a", A0, 0, NULL, good, strlen(good), 1, 0,
                                        &res, err, sizeof err),
                     -EINVAL);
    ck_assert_str_eq(err, "invalid cluster name");
    ck_assert_int_eq(ns_register_broker(rt, CL, "broker-a", A0, -1, NULL, good, strlen(good), 1,
                                        0, &res, err, sizeof err),
                     -EINVAL);
    ck_assert_str_eq(err, "invalid broker id -1");
    ck_assert_int_eq(ns_register_broker(rt, CL, "bad\nname", A0, 0, NULL, good, strlen(good), 1,
                                        0, &res, err, sizeof err),
                     -EINVAL);
    ck_assert_str_eq(err, "invalid broker name");
    ck_assert_int_eq(ns_register_broker(rt, "c2", "broker-a", A1, 1, NULL, good, strlen(good), 2,
                                        0, &res, err, sizeof err),
                     -EINVAL);
    ck_assert_str_eq(err, "broker name broker-a already belongs to cluster DefaultCluster");
    ck_assert_uint_eq(ns_broker_count(rt), 1);

    /* The refused registrations did not refresh the heartbeat either. */
    ck_assert_int_eq(ns_scan_expired(rt, 120001, 120000, NULL, NULL), 1);
    free(good);
    ns_route_table_free(rt);
}
END_TEST

START_TEST(test_member_moves)
{
    struct ns_route_table *rt = ns_route_table_create();
    char *b = reg_body(1, 1, "TopicA", 4, 4, 6, NULL);
    reg(rt, CL, "broker-a", A0, 0, b, 1, 0, NULL);
    reg(rt, CL, "broker-a", A1, 1, b, 2, 0, NULL);
    /* Master goes; the slave is promoted and re-registers as id 0. */
    ck_assert_int_eq(ns_evict_conn(rt, 1), 1);
    reg(rt, CL, "broker-a", A1, 0, b, 2, 10, NULL);
    ASSERT_ROUTE(rt, "TopicA",
                 "{\"brokerDatas\":[{\"brokerAddrs\":{0:\"127.0.0.1:10921\"},\"brokerName\":"
                 "\"broker-a\",\"cluster\":\"DefaultCluster\"}],\"filterServerTable\":{},"
                 "\"queueDatas\":[" QD("broker-a", 6, 4, 4) "]}");
    ck_assert_uint_eq(ns_broker_count(rt), 1);

    /* Same name/id from another address: a higher state version wins, a lower one
     * is refused. */
    const char *sv5 = "{\"topicConfigSerializeWrapper\":{\"topicConfigTable\":{},"
                      "\"dataVersion\":{\"stateVersion\":5,\"timestamp\":1,\"counter\":1}}}";
    const char *sv3 = "{\"topicConfigSerializeWrapper\":{\"topicConfigTable\":{},"
                      "\"dataVersion\":{\"stateVersion\":3,\"timestamp\":9,\"counter\":9}}}";
    reg(rt, CL, "broker-b", B0, 0, sv5, 5, 0, NULL);
    struct ns_register_result res;
    char err[256];
    ck_assert_int_eq(ns_register_broker(rt, CL, "broker-b", "127.0.0.9:10911", 0, NULL, sv3,
                                        strlen(sv3), 6, 0, &res, err, sizeof err),
                     -EEXIST);
    ck_assert_str_eq(err, "broker-b id 0 is held by 127.0.0.2:10911 with newer state version "
                          "5 > 3");
    reg(rt, CL, "broker-b", "127.0.0.9:10911", 0, sv5, 6, 0, NULL);
    char *ci = text_of(ns_cluster_info_json, rt);
    ck_assert_ptr_nonnull(strstr(ci, "{0:\"127.0.0.9:10911\"}"));
    ck_assert_ptr_null(strstr(ci, B0));
    free(ci);

    /* An address re-registering under another broker name leaves the old one. */
    reg(rt, CL, "broker-c", A1, 0, NULL, 2, 20, NULL);
    ck_assert_ptr_null(route(rt, "TopicA"));
    ck_assert_uint_eq(ns_broker_count(rt), 2);
    free(b);
    ns_route_table_free(rt);
}
END_TEST

START_TEST(test_data_version_json)
{
    struct ns_data_version dv = { .state_version = 2, .timestamp = 1700000000123LL, .counter = 7 };
    struct buf b = BUF_INIT;
    ck_assert_int_eq(ns_data_version_json(&dv, &b), 0);
    ck_assert_int_eq(buf_append_u8(&b, 0), 0);
    ck_assert_str_eq((char *)b.data,
                     "{\"counter\":7,\"stateVersion\":2,\"timestamp\":1700000000123}");

    struct ns_data_version got;
    char err[128];
    ck_assert_int_eq(ns_parse_data_version((char *)b.data, b.len - 1, &got, err, sizeof err), 0);
    ck_assert_mem_eq(&got, &dv, sizeof dv);
    const char *old = "{\"timestatmp\":55,\"counter\":3}";
    ck_assert_int_eq(ns_parse_data_version(old, strlen(old), &got, err, sizeof err), 0);
    ck_assert_int_eq(got.timestamp, 55);
    ck_assert_int_eq(got.counter, 3);
    ck_assert_int_eq(got.state_version, 0);
    ck_assert_int_eq(ns_parse_data_version("[1]", 3, &got, err, sizeof err), -EINVAL);
    ck_assert_str_eq(err, "dataVersion: expected an object");
    ck_assert_int_eq(ns_parse_data_version("{\"counter\":1.5}", 15, &got, err, sizeof err),
                     -EINVAL);
    ck_assert_int_eq(ns_parse_data_version("{", 1, &got, err, sizeof err), -EINVAL);
    buf_free(&b);
}
END_TEST

static char *quote_keys(const char *in)
{
    struct buf b = BUF_INIT;
    ck_assert_int_eq(json_quote_numeric_keys(in, strlen(in), &b), 0);
    ck_assert_int_eq(buf_append_u8(&b, 0), 0);
    return (char *)b.data;
}

START_TEST(test_numeric_key_rewrite)
{
    const char *in = "{\"brokerAddrs\":{0:\"a:1\", 1 :\"b:2\",-1:\"c\"},"
                     "\"s\":\"{0:\\\"x\\\", 7:8}\",\"arr\":[1, 2,{3:[4,5]}],"
                     "\"esc\":\"q\\\\\",\"n\":{10:{11:12}},\"f\":1.5e3}";
    const char *want = "{\"brokerAddrs\":{\"0\":\"a:1\", \"1\" :\"b:2\",\"-1\":\"c\"},"
                       "\"s\":\"{0:\\\"x\\\", 7:8}\",\"arr\":[1, 2,{\"3\":[4,5]}],"
                       "\"esc\":\"q\\\\\",\"n\":{\"10\":{\"11\":12}},\"f\":1.5e3}";
    char *out = quote_keys(in);
    ck_assert_str_eq(out, want);
    free(out);

    /* Already-valid JSON is copied unchanged. */
    const char *plain = "{\"a\":[{\"b\":\"0:1\"}],\"c\":-2,\"d\":[3,4]}";
    out = quote_keys(plain);
    ck_assert_str_eq(out, plain);
    free(out);

    char err[128];
    json_t *j = json_parse_rocketmq(in, strlen(in), err, sizeof err);
    ck_assert_msg(j != NULL, "%s", err);
    ck_assert_str_eq(json_string_value(json_object_get(json_object_get(j, "brokerAddrs"), "-1")),
                     "c");
    ck_assert_str_eq(json_string_value(json_object_get(j, "s")), "{0:\"x\", 7:8}");
    json_decref(j);

    ck_assert_ptr_null(json_parse_rocketmq("{0:}", 4, err, sizeof err));
    ck_assert_ptr_nonnull(strstr(err, "line 1 column"));

    char deep[JSON_UTIL_MAX_DEPTH + 2];
    memset(deep, '[', sizeof deep - 1);
    deep[sizeof deep - 1] = 0;
    struct buf b = BUF_INIT;
    ck_assert_int_eq(json_quote_numeric_keys(deep, strlen(deep), &b), -EINVAL);
    buf_free(&b);
}
END_TEST

START_TEST(test_json_escape)
{
    struct buf b = BUF_INIT;
    ck_assert_int_eq(json_buf_key(&b, "k\"1"), 0);
    ck_assert_int_eq(json_buf_str(&b, "a\\b\n\t\x01z\xc3\xa9"), 0);
    ck_assert_int_eq(buf_append_u8(&b, 0), 0);
    ck_assert_str_eq((char *)b.data, "\"k\\\"1\":\"a\\\\b\\n\\t\\u0001z\xc3\xa9\"");
    buf_free(&b);
}
END_TEST

static Suite *route_suite(void)
{
    Suite *s = suite_create("route_table");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_register_query_unregister);
    tcase_add_test(tc, test_data_version);
    tcase_add_test(tc, test_expiry);
    tcase_add_test(tc, test_evict_conn);
    tcase_add_test(tc, test_route_two_brokers);
    tcase_add_test(tc, test_unknown_topic);
    tcase_add_test(tc, test_write_perm);
    tcase_add_test(tc, test_delete_topic);
    tcase_add_test(tc, test_topic_lists);
    tcase_add_test(tc, test_many_topics);
    tcase_add_test(tc, test_malformed_body);
    tcase_add_test(tc, test_member_moves);
    tcase_add_test(tc, test_data_version_json);
    tcase_add_test(tc, test_numeric_key_rewrite);
    tcase_add_test(tc, test_json_escape);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    log_set_level(LOG_LVL_WARN);
    SRunner *sr = srunner_create(route_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
