/* Unit tests for the broker metadata store (broker/metadata.c). */
#include <check.h>
#include <errno.h>
#include <ftw.h>
#include <jansson.h>
#include <lmdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "metadata.h"

static char root[64];

static void make_root(void)
{
    snprintf(root, sizeof(root), "/tmp/metatest.XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(root));
}

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(p);
}

static void rm_root(void)
{
    ck_assert_int_eq(nftw(root, rm_one, 16, FTW_DEPTH | FTW_PHYS), 0);
}

static struct meta *open_ok(size_t map_size)
{
    struct meta *m = NULL;
    ck_assert_int_eq(meta_open(root, map_size, &m), 0);
    ck_assert_ptr_nonnull(m);
    return m;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int64_t q(struct meta *m, const char *t, const char *g, uint32_t qid)
{
    int64_t off = -99;
    int rc = meta_offset_query(m, t, g, qid, &off);
    return rc ? rc : off;
}

START_TEST(test_topics_crud_reopen)
{
    make_root();
    struct meta *m = open_ok(0);
    struct meta_data_version v0, v1, v2;
    meta_topics_version(m, &v0);
    ck_assert_uint_eq(v0.counter, 0);
    ck_assert_uint_gt(v0.timestamp, 0);

    struct meta_topic a, b;
    meta_topic_defaults(&a, "TopicA");
    meta_topic_defaults(&b, "%RETRY%grp");
    b.read_queue_nums = 4;
    b.write_queue_nums = 8;
    b.perm = META_PERM_READ;
    b.filter_type = META_FILTER_MULTI_TAG;
    b.sys_flag = 3;
    b.order = true;
    ck_assert_int_eq(meta_topic_put(m, &a), 0);
    ck_assert_int_eq(meta_topic_put(m, &b), 0);
    meta_topics_version(m, &v1);
    ck_assert_uint_eq(v1.counter, 2);
    ck_assert_uint_ge(v1.timestamp, v0.timestamp);

    /* identical put is a no-op */
    ck_assert_int_eq(meta_topic_put(m, &a), 0);
    meta_topics_version(m, &v2);
    ck_assert_uint_eq(v2.counter, 2);

    a.perm = META_PERM_WRITE;
    ck_assert_int_eq(meta_topic_put(m, &a), 0);
    ck_assert_int_eq(meta_topic_get(m, "TopicA")->perm, META_PERM_WRITE);
    ck_assert_int_eq(meta_topic_delete(m, "%RETRY%grp"), 0);
    ck_assert_int_eq(meta_topic_delete(m, "%RETRY%grp"), -ENOENT);
    ck_assert_ptr_null(meta_topic_get(m, "%RETRY%grp"));
    ck_assert_int_eq(meta_topic_put(m, &b), 0);
    ck_assert_int_eq(meta_topic_delete(m, "TopicA"), 0);
    meta_topics_version(m, &v2);
    ck_assert_uint_eq(v2.counter, 6);
    ck_assert_int_eq(meta_close(m), 0);

    m = open_ok(0);
    ck_assert_uint_eq(meta_topic_count(m), 1);
    ck_assert_ptr_null(meta_topic_get(m, "TopicA"));
    const struct meta_topic *t = meta_topic_get(m, "%RETRY%grp");
    ck_assert_ptr_nonnull(t);
    ck_assert_int_eq(t->read_queue_nums, 4);
    ck_assert_int_eq(t->write_queue_nums, 8);
    ck_assert_int_eq(t->perm, META_PERM_READ);
    ck_assert_int_eq(t->filter_type, META_FILTER_MULTI_TAG);
    ck_assert_int_eq(t->sys_flag, 3);
    ck_assert(t->order);
    struct meta_data_version v3;
    meta_topics_version(m, &v3);
    ck_assert_uint_eq(v3.counter, v2.counter);
    ck_assert_uint_eq(v3.timestamp, v2.timestamp);
    ck_assert_int_eq(meta_close(m), 0);
    rm_root();
}
END_TEST

static int count_group(const struct meta_group *g, void *arg)
{
    (void)g;
    (*(int *)arg)++;
    return 0;
}

START_TEST(test_groups_crud_reopen)
{
    make_root();
    struct meta *m = open_ok(0);
    struct meta_group g1, g2;
    meta_group_defaults(&g1, "CID_one");
    meta_group_defaults(&g2, "CID_two");
    g2.consume_enable = false;
    g2.consume_message_orderly = true;
    g2.retry_queue_nums = 3;
    g2.retry_max_times = -1;
    g2.broker_id = 2;
    g2.which_broker_when_consume_slowly = 7;
    g2.notify_consumer_ids_changed_enable = false;
    g2.group_sys_flag = 5;
    g2.consume_timeout_minute = 30;
    ck_assert_int_eq(meta_group_put(m, &g1), 0);
    ck_assert_int_eq(meta_group_put(m, &g2), 0);
    struct meta_data_version v;
    meta_groups_version(m, &v);
    ck_assert_uint_eq(v.counter, 2);
    g1.retry_max_times = 3;
    ck_assert_int_eq(meta_group_put(m, &g1), 0);
    meta_groups_version(m, &v);
    ck_assert_uint_eq(v.counter, 3);
    int n = 0;
    ck_assert_int_eq(meta_group_foreach(m, count_group, &n), 0);
    ck_assert_int_eq(n, 2);
    ck_assert_int_eq(meta_close(m), 0);

    m = open_ok(0);
    ck_assert_uint_eq(meta_group_count(m), 2);
    const struct meta_group *r = meta_group_get(m, "CID_two");
    ck_assert_ptr_nonnull(r);
    ck_assert(!r->consume_enable && r->consume_from_min_enable && r->consume_broadcast_enable);
    ck_assert(r->consume_message_orderly && !r->notify_consumer_ids_changed_enable);
    ck_assert_int_eq(r->retry_queue_nums, 3);
    ck_assert_int_eq(r->retry_max_times, -1);
    ck_assert_int_eq(r->broker_id, 2);
    ck_assert_int_eq(r->which_broker_when_consume_slowly, 7);
    ck_assert_int_eq(r->group_sys_flag, 5);
    ck_assert_int_eq(r->consume_timeout_minute, 30);
    ck_assert_int_eq(meta_group_get(m, "CID_one")->retry_max_times, 3);
    struct meta_data_version v2;
    meta_groups_version(m, &v2);
    ck_assert_uint_eq(v2.counter, 3);
    ck_assert_int_eq(meta_group_delete(m, "CID_one"), 0);
    ck_assert_int_eq(meta_close(m), 0);

    m = open_ok(0);
    ck_assert_uint_eq(meta_group_count(m), 1);
    ck_assert_ptr_null(meta_group_get(m, "CID_one"));
    meta_groups_version(m, &v2);
    ck_assert_uint_eq(v2.counter, 4);
    ck_assert_int_eq(meta_close(m), 0);
    rm_root();
}
END_TEST

START_TEST(test_invalid_input)
{
    make_root();
    struct meta *m = open_ok(0);
    struct meta_topic t;
    const char *bad[] = { "", "a b", "a@b", "t/x", "t\"q" };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        meta_topic_defaults(&t, bad[i]);
        ck_assert_int_eq(meta_topic_put(m, &t), -EINVAL);
        ck_assert_int_eq(meta_offset_commit(m, bad[i], "G", 0, 1), -EINVAL);
        ck_assert_int_eq(meta_offset_commit(m, "T", bad[i], 0, 1), -EINVAL);
    }
    char longname[200];
    memset(longname, 'x', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    ck_assert(!meta_topic_name_valid(longname));
    ck_assert(meta_group_name_valid(longname));
    meta_topic_defaults(&t, "T");
    t.perm = 16;
    ck_assert_int_eq(meta_topic_put(m, &t), -EINVAL);
    t.perm = 6;
    t.read_queue_nums = -1;
    ck_assert_int_eq(meta_topic_put(m, &t), -EINVAL);
    struct meta_group g;
    meta_group_defaults(&g, "G");
    g.broker_id = -3;
    ck_assert_int_eq(meta_group_put(m, &g), -EINVAL);
    ck_assert_int_eq(meta_offset_commit(m, "T", "G", 0, -1), -EINVAL);
    ck_assert_int_eq(meta_offset_commit(m, "T", "G", META_QUEUE_MAX, 1), -EINVAL);
    int64_t offs[2] = { 1, -5 };
    ck_assert_int_eq(meta_offsets_reset(m, "T", "G", offs, 2), -EINVAL);
    ck_assert_uint_eq(meta_topic_count(m), 0);
    ck_assert_uint_eq(meta_group_count(m), 0);
    ck_assert_uint_eq(meta_offsets_dirty(m), 0);
    struct meta_data_version v;
    meta_topics_version(m, &v);
    ck_assert_uint_eq(v.counter, 0);
    ck_assert_int_eq(meta_close(m), 0);
    rm_root();
}
END_TEST

struct sum {
    int n;
    int64_t total;
};

static int sum_offsets(const char *t, const char *g, uint32_t qid, int64_t off, void *arg)
{
    (void)t;
    (void)g;
    (void)qid;
    struct sum *s = arg;
    s->n++;
    s->total += off;
    return 0;
}

START_TEST(test_offsets_persist_reopen)
{
    make_root();
    struct meta *m = open_ok(0);
    ck_assert_int_eq(meta_offset_commit(m, "T1", "G1", 0, 12), 0);
    ck_assert_int_eq(meta_offset_commit(m, "T1", "G1", 1, 7), 0);
    ck_assert_int_eq(meta_offset_commit(m, "T1", "G1", 1, 9), 0);
    ck_assert_int_eq(meta_offset_commit(m, "T2", "G1", 100, 3), 0);
    ck_assert_int_eq(meta_offset_commit(m, "T1", "G2", 5, 1), 0);
    ck_assert_uint_eq(meta_offsets_dirty(m), 3);
    ck_assert_int_eq(q(m, "T1", "G1", 1), 9);
    ck_assert_int_eq(q(m, "T1", "G1", 2), -ENOENT);
    ck_assert_int_eq(q(m, "T9", "G1", 0), -ENOENT);
    ck_assert_int_eq(meta_offsets_persist_sync(m), 0);
    ck_assert_uint_eq(meta_offsets_dirty(m), 0);
    ck_assert_int_eq(meta_offset_commit(m, "T1", "G1", 0, 13), 0);
    ck_assert_uint_eq(meta_offsets_dirty(m), 1);
    ck_assert_int_eq(meta_offsets_persist(m), 0);
    /* a commit while the batch is in flight must survive the next batch */
    ck_assert_int_eq(meta_offset_commit(m, "T1", "G1", 0, 14), 0);
    ck_assert_int_eq(meta_offsets_persist_sync(m), 0);
    ck_assert_int_eq(meta_close(m), 0);

    m = open_ok(0);
    ck_assert_int_eq(q(m, "T1", "G1", 0), 14);
    ck_assert_int_eq(q(m, "T1", "G1", 1), 9);
    ck_assert_int_eq(q(m, "T2", "G1", 100), 3);
    ck_assert_int_eq(q(m, "T1", "G2", 5), 1);
    ck_assert_int_eq(q(m, "T2", "G1", 99), -ENOENT);
    struct sum s = { 0, 0 };
    ck_assert_int_eq(meta_offsets_foreach(m, NULL, "G1", sum_offsets, &s), 0);
    ck_assert_int_eq(s.n, 3);
    ck_assert_int_eq(s.total, 14 + 9 + 3);
    s = (struct sum){ 0, 0 };
    ck_assert_int_eq(meta_offsets_foreach(m, "T1", NULL, sum_offsets, &s), 0);
    ck_assert_int_eq(s.n, 3);
    ck_assert_int_eq(s.total, 14 + 9 + 1);
    s = (struct sum){ 0, 0 };
    ck_assert_int_eq(meta_offsets_foreach(m, "T1", "G2", sum_offsets, &s), 0);
    ck_assert_int_eq(s.n, 1);
    ck_assert_int_eq(meta_close(m), 0);
    rm_root();
}
END_TEST

/* Batch semantics: commits after the last persist are not on disk. The child
 * leaves without closing, which is what a crash looks like to the store. */
START_TEST(test_offsets_unpersisted_not_on_disk)
{
    make_root();
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        struct meta *m = NULL;
        if (meta_open(root, 0, &m))
            _exit(2);
        if (meta_offset_commit(m, "T", "G", 0, 10) || meta_offsets_persist_sync(m))
            _exit(3);
        if (meta_offset_commit(m, "T", "G", 0, 20) || meta_offset_commit(m, "T", "G", 1, 5) ||
            meta_offset_commit(m, "T", "G2", 0, 1))
            _exit(4);
        _exit(0);
    }
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    struct meta *m = open_ok(0);
    ck_assert_int_eq(q(m, "T", "G", 0), 10);
    ck_assert_int_eq(q(m, "T", "G", 1), -ENOENT);
    ck_assert_int_eq(q(m, "T", "G2", 0), -ENOENT);
    ck_assert_int_eq(meta_close(m), 0);
    rm_root();
}
END_TEST

START_TEST(test_offsets_kill9)
{
    make_root();
    int pfd[2];
    ck_assert_int_eq(pipe(pfd), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        close(pfd[0]);
        struct meta *m = NULL;
        if (meta_open(root, 0, &m))
            _exit(2);
        for (uint32_t i = 0; i < 100; i++)
            if (meta_offset_commit(m, "KillTopic", "KillGroup", i, (int64_t)i * 10))
                _exit(3);
        /* background batch, then wait for it (nothing else is dirty) */
        if (meta_offsets_persist(m) || meta_offsets_persist_sync(m))
            _exit(4);
        for (uint32_t i = 0; i < 100; i++)
            if (meta_offset_commit(m, "KillTopic", "KillGroup", i, (int64_t)i * 10 + 1000))
                _exit(5);
        if (write(pfd[1], "k", 1) != 1)
            _exit(6);
        for (;;)
            pause();
    }
    close(pfd[1]);
    char c;
    ck_assert_int_eq(read(pfd[0], &c, 1), 1);
    close(pfd[0]);
    ck_assert_int_eq(kill(pid, SIGKILL), 0);
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);

    struct meta *m = open_ok(0);
    for (uint32_t i = 0; i < 100; i++)
        ck_assert_int_eq(q(m, "KillTopic", "KillGroup", i), (int64_t)i * 10);
    ck_assert_int_eq(meta_close(m), 0);
    rm_root();
}
END_TEST

START_TEST(test_json_exact)
{
    make_root();
    struct meta *m = open_ok(0);
    struct buf b = BUF_INIT;
    char exp[2048];
    struct meta_data_version v;

    meta_topics_version(m, &v);
    ck_assert_int_eq(meta_topics_encode_json(m, &b), 0);
    snprintf(exp, sizeof(exp),
             "{\"topicConfigTable\":{},\"dataVersion\":{\"stateVersion\":0,\"timestamp\":%llu,"
             "\"counter\":0}}",
             (unsigned long long)v.timestamp);
    ck_assert_uint_eq(b.len, strlen(exp));
    ck_assert(memcmp(b.data, exp, b.len) == 0);

    struct meta_topic t;
    meta_topic_defaults(&t, "T");
    t.read_queue_nums = t.write_queue_nums = 4;
    ck_assert_int_eq(meta_topic_put(m, &t), 0);
    meta_topic_defaults(&t, "A");
    t.perm = 4;
    t.filter_type = META_FILTER_MULTI_TAG;
    t.sys_flag = 1;
    t.order = true;
    ck_assert_int_eq(meta_topic_put(m, &t), 0);
    meta_topics_version(m, &v);
    buf_reset(&b);
    ck_assert_int_eq(meta_topics_encode_json(m, &b), 0);
    snprintf(exp, sizeof(exp),
             "{\"topicConfigTable\":{"
             "\"A\":{\"topicName\":\"A\",\"readQueueNums\":16,\"writeQueueNums\":16,\"perm\":4,"
             "\"topicFilterType\":\"MULTI_TAG\",\"topicSysFlag\":1,\"order\":true},"
             "\"T\":{\"topicName\":\"T\",\"readQueueNums\":4,\"writeQueueNums\":4,\"perm\":6,"
             "\"topicFilterType\":\"SINGLE_TAG\",\"topicSysFlag\":0,\"order\":false}},"
             "\"dataVersion\":{\"stateVersion\":0,\"timestamp\":%llu,\"counter\":2}}",
             (unsigned long long)v.timestamp);
    ck_assert_uint_eq(b.len, strlen(exp));
    ck_assert(memcmp(b.data, exp, b.len) == 0);
    json_error_t jerr;
    json_t *j = json_loadb((const char *)b.data, b.len, 0, &jerr);
    ck_assert_ptr_nonnull(j);
    json_decref(j);

    struct meta_group g;
    meta_group_defaults(&g, "G");
    ck_assert_int_eq(meta_group_put(m, &g), 0);
    meta_groups_version(m, &v);
    buf_reset(&b);
    ck_assert_int_eq(meta_groups_encode_json(m, &b), 0);
    snprintf(exp, sizeof(exp),
             "{\"subscriptionGroupTable\":{\"G\":{\"groupName\":\"G\",\"consumeEnable\":true,"
             "\"consumeFromMinEnable\":true,\"consumeBroadcastEnable\":true,"
             "\"consumeMessageOrderly\":false,\"retryQueueNums\":1,\"retryMaxTimes\":16,"
             "\"brokerId\":0,\"whichBrokerWhenConsumeSlowly\":1,"
             "\"notifyConsumerIdsChangedEnable\":true,\"groupSysFlag\":0,"
             "\"consumeTimeoutMinute\":15}},"
             "\"dataVersion\":{\"stateVersion\":0,\"timestamp\":%llu,\"counter\":1}}",
             (unsigned long long)v.timestamp);
    ck_assert_uint_eq(b.len, strlen(exp));
    ck_assert(memcmp(b.data, exp, b.len) == 0);
    j = json_loadb((const char *)b.data, b.len, 0, &jerr);
    ck_assert_ptr_nonnull(j);
    json_decref(j);

    buf_reset(&b);
    ck_assert_int_eq(meta_offsets_encode_json(m, &b), 0);
    ck_assert_uint_eq(b.len, strlen("{\"offsetTable\":{}}"));
    ck_assert(memcmp(b.data, "{\"offsetTable\":{}}", b.len) == 0);
    ck_assert_int_eq(meta_offset_commit(m, "topic", "group", 1, 7), 0);
    ck_assert_int_eq(meta_offset_commit(m, "topic", "group", 0, 12), 0);
    ck_assert_int_eq(meta_offset_commit(m, "T", "group", 3, 1), 0);
    buf_reset(&b);
    ck_assert_int_eq(meta_offsets_encode_json(m, &b), 0);
    const char *oexp = "{\"offsetTable\":{\"T@group\":{3:1},\"topic@group\":{0:12,1:7}}}";
    ck_assert_uint_eq(b.len, strlen(oexp));
    ck_assert(memcmp(b.data, oexp, b.len) == 0);

    buf_reset(&b);
    const char raw[] = "a\"b\\c\n\x01z";
    ck_assert_int_eq(meta_json_string(&b, raw, sizeof(raw) - 1), 0);
    const char *sexp = "\"a\\\"b\\\\c\\u000a\\u0001z\"";
    ck_assert_uint_eq(b.len, strlen(sexp));
    ck_assert(memcmp(b.data, sexp, b.len) == 0);
    buf_free(&b);
    ck_assert_int_eq(meta_close(m), 0);
    rm_root();
}
END_TEST

/* Writes one raw record into a named table of the store, bypassing the API. */
static void raw_put(const char *table, const char *key, size_t klen, const void *val, size_t vlen)
{
    char dir[128];
    snprintf(dir, sizeof(dir), "%s/metadata", root);
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    ck_assert_int_eq(mdb_env_create(&env), 0);
    ck_assert_int_eq(mdb_env_set_maxdbs(env, 4), 0);
    ck_assert_int_eq(mdb_env_open(env, dir, MDB_NOTLS, 0644), 0);
    ck_assert_int_eq(mdb_txn_begin(env, NULL, 0, &txn), 0);
    ck_assert_int_eq(mdb_dbi_open(txn, table, 0, &dbi), 0);
    MDB_val k = { klen, (void *)key }, v = { vlen, (void *)val };
    ck_assert_int_eq(mdb_put(txn, dbi, &k, &v, 0), 0);
    ck_assert_int_eq(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
}

static void read_file(const char *path, char *out, size_t cap)
{
    FILE *f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    size_t n = fread(out, 1, cap - 1, f);
    out[n] = '\0';
    fclose(f);
}

START_TEST(test_corrupt_record_reported)
{
    static const struct {
        const char *table, *key, *val;
        size_t vlen;
        const char *expect;
    } cases[] = {
        { "topics", "BadTopic", "\x01\x02\x03", 3, "table 'topics', key 'BadTopic'" },
        { "topics", "UnknownFmt", "\x09xxxxxxxxxxxxxxxxxx", 19, "key 'UnknownFmt': unknown" },
        { "groups", "bad group!", "\x01", 1, "table 'groups', key 'bad group!'" },
        { "offsets", "T@G", "\x01\x00\x00\x00\x02\x00", 6, "table 'offsets', key 'T@G'" },
        { "offsets", "NoSeparator", "\x01\x00\x00\x00\x00", 5, "key 'NoSeparator'" },
        { "meta", "surprise", "x", 1, "table 'meta', key 'surprise'" },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        make_root();
        struct meta *m = open_ok(0);
        struct meta_topic t;
        meta_topic_defaults(&t, "GoodTopic");
        ck_assert_int_eq(meta_topic_put(m, &t), 0);
        ck_assert_int_eq(meta_close(m), 0);
        raw_put(cases[i].table, cases[i].key, strlen(cases[i].key), cases[i].val, cases[i].vlen);

        char logpath[128], text[4096];
        snprintf(logpath, sizeof(logpath), "%s/test.log", root);
        ck_assert_int_eq(log_open_file(logpath), 0);
        log_set_stderr(0);
        m = NULL;
        ck_assert_int_eq(meta_open(root, 0, &m), -EBADMSG);
        ck_assert_ptr_null(m);
        log_set_stderr(1);
        ck_assert_int_eq(log_open_file(NULL), 0);
        read_file(logpath, text, sizeof(text));
        ck_assert_msg(strstr(text, cases[i].expect) != NULL, "case %zu: log was: %s", i, text);
        ck_assert_ptr_nonnull(strstr(text, "corrupt record"));
        rm_root();
    }
}
END_TEST

START_TEST(test_many_offsets_one_batch)
{
    make_root();
    struct meta *m = open_ok(0);
    for (uint32_t i = 0; i < 10000; i++)
        ck_assert_int_eq(meta_offset_commit(m, "BigTopic", "BigGroup", i, (int64_t)i * 3), 0);
    char g[32];
    for (int gi = 0; gi < 1000; gi++) {
        snprintf(g, sizeof(g), "G%d", gi);
        for (uint32_t qid = 0; qid < 10; qid++)
            ck_assert_int_eq(meta_offset_commit(m, "Small", g, qid, gi + (int64_t)qid), 0);
    }
    ck_assert_uint_eq(meta_offsets_dirty(m), 1001);
    double t0 = now_s();
    ck_assert_int_eq(meta_offsets_persist_sync(m), 0);
    double t1 = now_s();
    printf("persist of 20000 offsets in 1001 entries: %.2f ms\n", (t1 - t0) * 1e3);

    /* steady state: in-place commits, only the moved entry is rewritten */
    t0 = now_s();
    for (int r = 0; r < 100; r++)
        for (uint32_t i = 0; i < 10000; i++)
            meta_offset_commit(m, "BigTopic", "BigGroup", i, (int64_t)i * 3 + r);
    t1 = now_s();
    printf("1e6 in-memory commits: %.1f ns/commit\n", (t1 - t0) * 1e9 / 1e6);
    ck_assert_uint_eq(meta_offsets_dirty(m), 1);
    ck_assert_int_eq(meta_offsets_persist_sync(m), 0);
    ck_assert_int_eq(meta_close(m), 0);

    m = open_ok(0);
    for (uint32_t i = 0; i < 10000; i++)
        ck_assert_int_eq(q(m, "BigTopic", "BigGroup", i), (int64_t)i * 3 + 99);
    for (int gi = 0; gi < 1000; gi++) {
        snprintf(g, sizeof(g), "G%d", gi);
        for (uint32_t qid = 0; qid < 10; qid++)
            ck_assert_int_eq(q(m, "Small", g, qid), gi + (int64_t)qid);
    }
    ck_assert_int_eq(meta_close(m), 0);
    rm_root();
}
END_TEST

START_TEST(test_map_full)
{
    make_root();
    const size_t small = 64 * 1024;
    struct meta *m = open_ok(small);
    struct meta_topic t;
    char name[128];
    int ok = 0, rc = 0;
    log_set_stderr(0);
    for (int i = 0; i < 100000; i++) {
        snprintf(name, sizeof(name), "Topic_%06d_padding_padding_padding_padding_padding_%d", i, i);
        meta_topic_defaults(&t, name);
        rc = meta_topic_put(m, &t);
        if (rc)
            break;
        ok++;
    }
    log_set_stderr(1);
    ck_assert_int_eq(rc, -ENOSPC);
    ck_assert_int_gt(ok, 0);
    ck_assert_ptr_null(meta_topic_get(m, name));
    ck_assert_uint_eq(meta_topic_count(m), (size_t)ok);
    struct meta_data_version v;
    meta_topics_version(m, &v);
    ck_assert_uint_eq(v.counter, (uint64_t)ok);

    /* an offset batch that does not fit fails, memory keeps every offset */
    char g[32];
    for (int gi = 0; gi < 2000; gi++) {
        snprintf(g, sizeof(g), "G%d", gi);
        ck_assert_int_eq(meta_offset_commit(m, "T", g, 0, gi), 0);
    }
    log_set_stderr(0);
    ck_assert_int_eq(meta_offsets_persist(m), 0);
    ck_assert_int_eq(meta_offsets_persist_sync(m), -ENOSPC);
    log_set_stderr(1);
    ck_assert_uint_eq(meta_offsets_dirty(m), 2000);
    for (int gi = 0; gi < 2000; gi++) {
        snprintf(g, sizeof(g), "G%d", gi);
        ck_assert_int_eq(q(m, "T", g, 0), gi);
    }
    log_set_stderr(0);
    ck_assert_int_eq(meta_close(m), -ENOSPC);
    log_set_stderr(1);

    m = open_ok(small);
    ck_assert_uint_eq(meta_topic_count(m), (size_t)ok);
    struct meta_data_version v2;
    meta_topics_version(m, &v2);
    ck_assert_uint_eq(v2.counter, v.counter);
    ck_assert_int_eq(q(m, "T", "G0", 0), -ENOENT);
    ck_assert_int_eq(meta_close(m), 0);
    rm_root();
}
END_TEST

START_TEST(test_delete_and_reset)
{
    make_root();
    struct meta *m = open_ok(0);
    ck_assert_int_eq(meta_offset_commit(m, "T1", "G1", 0, 1), 0);
    ck_assert_int_eq(meta_offset_commit(m, "T2", "G1", 0, 2), 0);
    ck_assert_int_eq(meta_offset_commit(m, "T1", "G2", 0, 3), 0);
    ck_assert_int_eq(meta_offset_commit(m, "T1", "G2", 9, 4), 0);
    ck_assert_int_eq(meta_offsets_persist_sync(m), 0);
    ck_assert_int_eq(meta_offset_commit(m, "T3", "G1", 0, 5), 0); /* dirty, never persisted */
    ck_assert_int_eq(meta_offsets_delete_group(m, "G1"), 3);
    ck_assert_int_eq(meta_offsets_delete_group(m, "G1"), 0);
    ck_assert_uint_eq(meta_offsets_dirty(m), 0);
    ck_assert_int_eq(q(m, "T1", "G1", 0), -ENOENT);
    ck_assert_int_eq(q(m, "T1", "G2", 0), 3);
    ck_assert_int_eq(meta_close(m), 0);

    m = open_ok(0);
    ck_assert_int_eq(q(m, "T1", "G1", 0), -ENOENT);
    ck_assert_int_eq(q(m, "T2", "G1", 0), -ENOENT);
    ck_assert_int_eq(q(m, "T3", "G1", 0), -ENOENT);
    ck_assert_int_eq(q(m, "T1", "G2", 9), 4);
    int64_t offs[3] = { 50, 60, 70 };
    ck_assert_int_eq(meta_offsets_reset(m, "T1", "G2", offs, 3), 0);
    ck_assert_int_eq(meta_offsets_reset(m, "T5", "G5", offs, 2), 0);
    ck_assert_uint_eq(meta_offsets_dirty(m), 0);
    ck_assert_int_eq(q(m, "T1", "G2", 2), 70);
    ck_assert_int_eq(q(m, "T1", "G2", 9), -ENOENT);
    /* nothing dirty: the close below writes no batch, so reopen shows what reset wrote */
    ck_assert_int_eq(meta_close(m), 0);

    m = open_ok(0);
    ck_assert_int_eq(q(m, "T1", "G2", 0), 50);
    ck_assert_int_eq(q(m, "T1", "G2", 9), -ENOENT);
    ck_assert_int_eq(q(m, "T5", "G5", 1), 60);
    ck_assert_int_eq(meta_offsets_delete_topic(m, "T1"), 1);
    ck_assert_int_eq(meta_close(m), 0);
    m = open_ok(0);
    ck_assert_int_eq(q(m, "T1", "G2", 0), -ENOENT);
    ck_assert_int_eq(q(m, "T5", "G5", 0), 50);
    ck_assert_int_eq(meta_close(m), 0);
    rm_root();
}
END_TEST

static Suite *metadata_suite(void)
{
    Suite *s = suite_create("metadata");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_topics_crud_reopen);
    tcase_add_test(tc, test_groups_crud_reopen);
    tcase_add_test(tc, test_invalid_input);
    tcase_add_test(tc, test_offsets_persist_reopen);
    tcase_add_test(tc, test_offsets_unpersisted_not_on_disk);
    tcase_add_test(tc, test_offsets_kill9);
    tcase_add_test(tc, test_json_exact);
    tcase_add_test(tc, test_corrupt_record_reported);
    tcase_add_test(tc, test_many_offsets_one_batch);
    tcase_add_test(tc, test_map_full);
    tcase_add_test(tc, test_delete_and_reset);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(metadata_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
