/* Unit tests of the broker message store (broker/store.h). */
#include "store_test_util.h"

#include <check.h>
#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>

#include "buf.h"
#include "message.h"

static char *root;
static int64_t clock_offset_ms;
static double disk_ratio = 0.10;

static int64_t test_clock(void *ud)
{
    (void)ud;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 + clock_offset_ms;
}

static int test_disk(const char *path, double *ratio, void *ud)
{
    (void)path; (void)ud;
    *ratio = disk_ratio;
    return 0;
}

static void setup(void)
{
    log_set_stderr(0);
    root = make_tmp();
    clock_offset_ms = 0;
    disk_ratio = 0.10;
}

static void teardown(void)
{
    rm_rf(root);
    free(root);
}

static struct store *open_store(enum store_flush_type ft)
{
    struct store_config c;
    small_config(&c, root);
    c.flush_type = ft;
    c.clock = test_clock;
    c.disk_probe = test_disk;
    struct store *s = NULL;
    ck_assert_int_eq(store_open(&c, &s), 0);
    return s;
}

/* Body of message i: recognisable, 1000 bytes. */
static void body_of(int i, char *b, size_t n)
{
    for (size_t k = 0; k < n; k++)
        b[k] = (char)('a' + (i + (int)k) % 26);
    snprintf(b, n, "msg-%d-", i);
}

static int64_t put_n(struct store *s, const char *topic, int qid, int from, int n, const char *tag)
{
    char body[1000], props[128];
    int64_t last_end = 0;
    for (int i = from; i < from + n; i++) {
        body_of(i, body, sizeof(body));
        size_t plen = 0;
        char key[32];
        snprintf(key, sizeof(key), "key%d", i);
        ck_assert_int_eq(msg_prop_append(props, sizeof(props), &plen, MSG_PROP_TAGS, tag, strlen(tag)), 0);
        ck_assert_int_eq(msg_prop_append(props, sizeof(props), &plen, MSG_PROP_KEYS, key, strlen(key)), 0);
        struct store_msg m;
        fill_msg(&m, topic, qid, body, sizeof(body), props, (uint32_t)plen);
        struct store_put_result r;
        ck_assert_int_eq(store_put(s, &m, &r), STORE_PUT_OK);
        ck_assert_int_eq(r.queue_offset, i);
        last_end = r.end_offset;
    }
    return last_end;
}

/* Reads the whole queue from offset 0 and checks every record. Returns count. */
static int verify_queue(struct store *s, const char *topic, int qid, int64_t from, int expect_total)
{
    struct store_view v[16];
    int64_t off = from;
    int seen = 0;
    for (;;) {
        struct store_get_req req = { topic, qid, off, 16, 0, NULL, NULL, v };
        struct store_get_result res;
        enum store_get_status st = store_get(s, &req, &res);
        if (st != STORE_GET_FOUND) {
            store_hold_release(&res.hold);
            ck_assert_int_eq(st, STORE_GET_OFFSET_OVERFLOW_ONE);
            break;
        }
        for (uint32_t i = 0; i < res.count; i++) {
            struct msg_record r;
            ck_assert_int_eq(msg_record_decode(v[i].data, v[i].len, &r, 1), (int)v[i].len);
            ck_assert_int_eq(r.queue_offset, v[i].queue_offset);
            ck_assert_int_eq(r.phys_offset, v[i].phys_offset);
            ck_assert_int_eq(r.queue_id, qid);
            ck_assert_mem_eq(r.topic, topic, strlen(topic));
            char body[1000];
            body_of((int)r.queue_offset, body, sizeof(body));
            ck_assert_uint_eq(r.body_len, sizeof(body));
            ck_assert_mem_eq(r.body, body, sizeof(body));
            seen++;
        }
        off = res.next_begin_offset;
        store_hold_release(&res.hold);
    }
    ck_assert_int_eq(seen, expect_total);
    return seen;
}

START_TEST(put_get_rolling)
{
    struct store *s = open_store(STORE_ASYNC_FLUSH);
    put_n(s, "TopicA", 0, 0, 300, "TagA");
    put_n(s, "TopicA", 1, 0, 10, "TagB");
    wait_dispatch(s);
    ck_assert_int_eq(store_max_queue_offset(s, "TopicA", 0), 300);
    ck_assert_int_eq(store_min_queue_offset(s, "TopicA", 0), 0);
    verify_queue(s, "TopicA", 0, 0, 300);
    verify_queue(s, "TopicA", 1, 0, 10);
    struct store_stats st;
    store_get_stats(s, &st);
    ck_assert_uint_ge(st.commitlog_disk_bytes, 5 * 64 * 1024); /* rolled over several segments */
    ck_assert_uint_eq(st.put_count, 310);
    /* status answers */
    struct store_view v[4];
    struct store_get_result res;
    struct store_get_req req = { "TopicA", 0, 300, 4, 0, NULL, NULL, v };
    ck_assert_int_eq(store_get(s, &req, &res), STORE_GET_OFFSET_OVERFLOW_ONE);
    req.offset = 500;
    ck_assert_int_eq(store_get(s, &req, &res), STORE_GET_OFFSET_OVERFLOW_BADLY);
    ck_assert_int_eq(res.next_begin_offset, 0);
    req.topic = "Nope";
    ck_assert_int_eq(store_get(s, &req, &res), STORE_GET_NO_MATCHED_LOGIC_QUEUE);
    /* max_bytes limits the batch but always returns at least one */
    req.topic = "TopicA";
    req.offset = 5;
    req.max_bytes = 10;
    ck_assert_int_eq(store_get(s, &req, &res), STORE_GET_FOUND);
    ck_assert_uint_eq(res.count, 1);
    ck_assert_int_eq(res.next_begin_offset, 6);
    store_hold_release(&res.hold);
    /* lookup by physical offset and msg id */
    struct store_hold h = STORE_HOLD_INIT;
    struct store_view one;
    ck_assert_int_eq(store_lookup(s, 0, &one, &h), STORE_LOOKUP_OK);
    ck_assert_int_eq(one.queue_offset, 0);
    store_hold_release(&h);
    ck_assert_int_eq(store_lookup(s, 1, &one, &h), STORE_LOOKUP_NOT_FOUND);
    ck_assert_int_eq(store_lookup(s, store_commitlog_max_offset(s), &one, &h), STORE_LOOKUP_NOT_FOUND);
    store_close(s);
    /* clean reopen keeps everything and continues offsets */
    s = open_store(STORE_ASYNC_FLUSH);
    ck_assert_int_eq(store_max_queue_offset(s, "TopicA", 0), 300);
    put_n(s, "TopicA", 0, 300, 5, "TagA");
    wait_dispatch(s);
    verify_queue(s, "TopicA", 0, 0, 305);
    store_close(s);
}
END_TEST

static int only_tag_b(int64_t tag, void *ud)
{
    (void)ud;
    return tag == msg_tag_hash("TagB", 4);
}

static int no_tag(int64_t tag, void *ud)
{
    (void)tag; (void)ud;
    return 0;
}

START_TEST(tag_filter)
{
    struct store *s = open_store(STORE_ASYNC_FLUSH);
    for (int i = 0; i < 20; i++)
        put_n(s, "T", 0, i, 1, i % 4 == 3 ? "TagB" : "TagA");
    wait_dispatch(s);
    struct store_view v[32];
    struct store_get_req req = { "T", 0, 0, 32, 0, only_tag_b, NULL, v };
    struct store_get_result res;
    ck_assert_int_eq(store_get(s, &req, &res), STORE_GET_FOUND);
    ck_assert_uint_eq(res.count, 5);
    for (uint32_t i = 0; i < res.count; i++) {
        ck_assert_int_eq(v[i].queue_offset % 4, 3);
        ck_assert_int_eq(v[i].tag_hash, msg_tag_hash("TagB", 4));
    }
    ck_assert_int_eq(res.next_begin_offset, 20);
    store_hold_release(&res.hold);
    req.offset = 0;
    req.max_count = 3;
    req.filter = no_tag;
    ck_assert_int_eq(store_get(s, &req, &res), STORE_GET_NO_MATCHED_MESSAGE);
    ck_assert_uint_eq(res.count, 0);
    ck_assert_int_eq(res.next_begin_offset, 20);
    store_hold_release(&res.hold);
    store_close(s);
}
END_TEST

START_TEST(index_queries)
{
    struct store *s = open_store(STORE_ASYNC_FLUSH);
    put_n(s, "IdxTopic", 0, 0, 300, "T"); /* more than one index file (200 entries each) */
    char props[128];
    size_t plen = 0;
    const char *uniq = "0A0000010001AB12CD34000000000001";
    msg_prop_append(props, sizeof(props), &plen, MSG_PROP_UNIQ_CLIENT_MESSAGE_ID_KEYIDX, uniq, strlen(uniq));
    msg_prop_append(props, sizeof(props), &plen, MSG_PROP_KEYS, "order-1 shared", 14);
    struct store_msg m;
    fill_msg(&m, "IdxTopic", 1, "x", 1, props, (uint32_t)plen);
    struct store_put_result r;
    ck_assert_int_eq(store_put(s, &m, &r), STORE_PUT_OK);
    fill_msg(&m, "Other", 0, "y", 1, props, (uint32_t)plen);
    struct store_put_result r2;
    ck_assert_int_eq(store_put(s, &m, &r2), STORE_PUT_OK);
    wait_dispatch(s);
    int64_t phys[8];
    ck_assert_int_eq(store_query_by_key(s, "IdxTopic", "key7", 8, 0, INT64_MAX, phys), 1);
    struct store_hold h = STORE_HOLD_INIT;
    struct store_view v;
    ck_assert_int_eq(store_lookup(s, phys[0], &v, &h), STORE_LOOKUP_OK);
    ck_assert_int_eq(v.queue_offset, 7);
    store_hold_release(&h);
    ck_assert_int_eq(store_query_by_key(s, "IdxTopic", "key250", 8, 0, INT64_MAX, phys), 1);
    ck_assert_int_eq(store_query_by_key(s, "IdxTopic", "shared", 8, 0, INT64_MAX, phys), 1);
    ck_assert_int_eq(phys[0], r.phys_offset);
    ck_assert_int_eq(store_query_by_key(s, "Other", "shared", 8, 0, INT64_MAX, phys), 1);
    ck_assert_int_eq(phys[0], r2.phys_offset);
    ck_assert_int_eq(store_query_by_key(s, "IdxTopic", "absent", 8, 0, INT64_MAX, phys), 0);
    ck_assert_int_eq(store_query_by_key(s, "IdxTopic", "key7", 8, 0, 1000, phys), 0); /* time range */
    int64_t p;
    ck_assert_int_eq(store_query_by_uniq_id(s, "IdxTopic", uniq, &p), 0);
    ck_assert_int_eq(p, r.phys_offset);
    ck_assert_int_eq(store_query_by_offset_id(s, r.msg_id, &p), 0);
    ck_assert_int_eq(p, r.phys_offset);
    ck_assert_int_eq(store_query_by_offset_id(s, "0A00000200002A9F0000000000000000", &p), -ESRCH);
    store_close(s);
    /* the index survives a restart */
    s = open_store(STORE_ASYNC_FLUSH);
    ck_assert_int_eq(store_query_by_key(s, "IdxTopic", "key7", 8, 0, INT64_MAX, phys), 1);
    ck_assert_int_eq(store_query_by_uniq_id(s, "IdxTopic", uniq, &p), 0);
    store_close(s);
}
END_TEST

START_TEST(flush_modes)
{
    struct store *s = open_store(STORE_SYNC_FLUSH);
    char body[1000];
    body_of(0, body, sizeof(body));
    struct store_msg m;
    fill_msg(&m, "F", 0, body, sizeof(body), "", 0);
    struct store_put_result r;
    ck_assert_int_eq(store_put_wait(s, &m, &r), STORE_PUT_OK);
    struct store_stats st;
    store_get_stats(s, &st);
    ck_assert_int_ge(st.commitlog_flushed_offset, r.end_offset);
    /* an already durable offset answers at once */
    ck_assert_int_eq(store_flush_wait(s, r.end_offset, NULL, NULL), 1);
    ck_assert_int_eq(store_flush_wait(s, r.end_offset + 1000000, NULL, NULL), -EINVAL);
    store_close(s);
    s = open_store(STORE_ASYNC_FLUSH);
    ck_assert_int_eq(store_put(s, &m, &r), STORE_PUT_OK);
    ck_assert_int_eq(store_flush_wait_blocking(s, r.end_offset), STORE_PUT_OK);
    store_get_stats(s, &st);
    ck_assert_int_ge(st.commitlog_flushed_offset, r.end_offset);
    store_close(s);
}
END_TEST

static void crash_reopen_prepare(void);
static int64_t last_segment_base(int64_t off);

/* With the test flush delay above syncFlushTimeout, a SYNC_FLUSH put is
 * stored but answered FLUSH_DISK_TIMEOUT; the record still becomes durable
 * by the next flush and survives a restart. */
START_TEST(flush_disk_timeout)
{
    struct store_config c;
    small_config(&c, root);
    c.flush_type = STORE_SYNC_FLUSH;
    c.sync_flush_timeout_ms = 50;
    c.test_flush_delay_ms = 400;
    struct store *s = NULL;
    ck_assert_int_eq(store_open(&c, &s), 0);
    char body[1000];
    body_of(0, body, sizeof(body));
    struct store_msg m;
    fill_msg(&m, "FT", 0, body, sizeof(body), "", 0);
    struct store_put_result r;
    ck_assert_int_eq(store_put_wait(s, &m, &r), STORE_PUT_FLUSH_DISK_TIMEOUT);
    ck_assert_int_eq(r.status, STORE_PUT_FLUSH_DISK_TIMEOUT);
    ck_assert_ptr_nonnull(strstr(r.remark, "did not complete in 50 ms"));
    struct store_stats st;
    for (int i = 0; i < 300; i++) {
        store_get_stats(s, &st);
        if (st.commitlog_flushed_offset >= r.end_offset)
            break;
        sleep_ms(10);
    }
    ck_assert_int_ge(st.commitlog_flushed_offset, r.end_offset);
    store_close(s);
    s = open_store(STORE_SYNC_FLUSH);
    wait_dispatch(s);
    verify_queue(s, "FT", 0, 0, 1);
    store_close(s);
}
END_TEST

static int count_segments(void)
{
    char p[4096];
    snprintf(p, sizeof(p), "%s/commitlog", root);
    DIR *d = opendir(p);
    ck_assert_ptr_nonnull(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

/* The allocator keeps exactly one segment ready beyond the one being
 * written; a clean close deletes it, and a crash that leaves it behind
 * (all zeros) loses nothing and does not disturb later rolls. */
START_TEST(segment_preallocation)
{
    struct store *s = open_store(STORE_ASYNC_FLUSH);
    put_n(s, "P", 0, 0, 150, "T"); /* ~170 KiB: rolls into the 3rd segment */
    int n = 0;
    for (int i = 0; i < 500 && (n = count_segments()) != 4; i++)
        sleep_ms(2);
    ck_assert_int_eq(n, 4); /* 3 used + 1 prepared */
    store_close(s);
    ck_assert_int_eq(count_segments(), 3);
    s = open_store(STORE_ASYNC_FLUSH);
    for (int i = 0; i < 500 && (n = count_segments()) != 4; i++)
        sleep_ms(2);
    ck_assert_int_eq(n, 4);
    wait_dispatch(s);
    verify_queue(s, "P", 0, 0, 150);
    /* leave like a crash would: the prepared zero segment stays */
    char seg[4096], keep[4200];
    int64_t end = store_commitlog_max_offset(s);
    snprintf(seg, sizeof(seg), "%s/commitlog/%020lld", root, (long long)(last_segment_base(end) + 64 * 1024));
    snprintf(keep, sizeof(keep), "%s.keep", seg);
    ck_assert_int_eq(link(seg, keep), 0);
    store_close(s);
    ck_assert_int_eq(rename(keep, seg), 0);
    crash_reopen_prepare();
    ck_assert_int_eq(count_segments(), 4);
    s = open_store(STORE_ASYNC_FLUSH);
    ck_assert_int_eq(store_commitlog_max_offset(s), end);
    put_n(s, "P", 0, 150, 150, "T");
    wait_dispatch(s);
    verify_queue(s, "P", 0, 0, 300);
    store_close(s);
    s = open_store(STORE_ASYNC_FLUSH);
    wait_dispatch(s);
    verify_queue(s, "P", 0, 0, 300);
    store_close(s);
}
END_TEST

static void crash_reopen_prepare(void)
{
    char p[4096];
    snprintf(p, sizeof(p), "%s/abort", root);
    int fd = open(p, O_CREAT | O_WRONLY, 0644);
    ck_assert_int_ge(fd, 0);
    close(fd);
}

static int64_t last_segment_base(int64_t off) { return off - off % (64 * 1024); }

START_TEST(recovery_torn_tail)
{
    struct store *s = open_store(STORE_ASYNC_FLUSH);
    int64_t end = put_n(s, "R", 0, 0, 100, "T");
    wait_dispatch(s);
    struct store_hold h = STORE_HOLD_INIT;
    struct store_view v;
    struct store_put_result r;
    (void)r;
    int64_t last_phys;
    {
        int64_t phys[1];
        ck_assert_int_eq(store_query_by_key(s, "R", "key99", 1, 0, INT64_MAX, phys), 1);
        last_phys = phys[0];
    }
    ck_assert_int_eq(store_lookup(s, last_phys, &v, &h), STORE_LOOKUP_OK);
    uint8_t copy[2048];
    memcpy(copy, v.data, v.len);
    uint32_t len = v.len;
    store_hold_release(&h);
    store_close(s);
    /* append half of a record (with the right physical offset) at the end */
    wr_u64be(copy + MSG_POS_PHYSOFFSET, (uint64_t)end);
    wr_u64be(copy + MSG_POS_QUEUEOFFSET, 100);
    char path[4096];
    int64_t base = last_segment_base(end);
    snprintf(path, sizeof(path), "%s/commitlog/%020lld", root, (long long)base);
    int fd = open(path, O_WRONLY);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(pwrite(fd, copy, len / 2, end - base), (ssize_t)(len / 2));
    close(fd);
    crash_reopen_prepare();
    s = open_store(STORE_ASYNC_FLUSH);
    ck_assert_int_eq(store_commitlog_max_offset(s), end);
    ck_assert_int_eq(store_max_queue_offset(s, "R", 0), 100);
    verify_queue(s, "R", 0, 0, 100);
    /* writing continues right where the valid log ended */
    put_n(s, "R", 0, 100, 3, "T");
    wait_dispatch(s);
    verify_queue(s, "R", 0, 0, 103);
    store_close(s);
}
END_TEST

START_TEST(recovery_corrupt_crc_middle)
{
    struct store *s = open_store(STORE_ASYNC_FLUSH);
    put_n(s, "C", 0, 0, 100, "T");
    wait_dispatch(s);
    int64_t phys[1];
    ck_assert_int_eq(store_query_by_key(s, "C", "key80", 1, 0, INT64_MAX, phys), 1);
    int64_t bad = phys[0];
    ck_assert_int_eq(store_flush_wait_blocking(s, store_commitlog_max_offset(s)), STORE_PUT_OK);
    store_close(s);
    char path[4096];
    int64_t base = last_segment_base(bad);
    snprintf(path, sizeof(path), "%s/commitlog/%020lld", root, (long long)base);
    int fd = open(path, O_RDWR);
    ck_assert_int_ge(fd, 0);
    uint8_t b;
    off_t pos = (off_t)(bad - base + 200); /* inside the body */
    ck_assert_int_eq(pread(fd, &b, 1, pos), 1);
    b ^= 0x55;
    ck_assert_int_eq(pwrite(fd, &b, 1, pos), 1);
    close(fd);
    crash_reopen_prepare();
    s = open_store(STORE_ASYNC_FLUSH);
    ck_assert_int_eq(store_commitlog_max_offset(s), bad);
    ck_assert_int_eq(store_max_queue_offset(s, "C", 0), 80);
    verify_queue(s, "C", 0, 0, 80);
    struct store_hold h = STORE_HOLD_INIT;
    struct store_view v;
    ck_assert_int_eq(store_lookup(s, bad, &v, &h), STORE_LOOKUP_NOT_FOUND);
    ck_assert_int_eq(store_query_by_key(s, "C", "key90", 1, 0, INT64_MAX, phys), 0);
    put_n(s, "C", 0, 80, 2, "T");
    wait_dispatch(s);
    verify_queue(s, "C", 0, 0, 82);
    store_close(s);
}
END_TEST

START_TEST(retention)
{
    struct store *s = open_store(STORE_ASYNC_FLUSH);
    put_n(s, "Ret", 0, 0, 400, "T");
    wait_dispatch(s);
    ck_assert_int_eq(store_flush_wait_blocking(s, store_commitlog_max_offset(s)), STORE_PUT_OK);
    /* nothing is old yet */
    ck_assert_int_eq(store_cleanup_now(s), 0);
    clock_offset_ms = 100LL * 3600 * 1000; /* 100 hours later */
    int deleted = store_cleanup_now(s);
    ck_assert_int_gt(deleted, 0);
    int64_t cmin = store_commitlog_min_offset(s);
    ck_assert_int_gt(cmin, 0);
    int64_t qmin = store_min_queue_offset(s, "Ret", 0);
    ck_assert_int_gt(qmin, 0);
    struct store_view v[4];
    struct store_get_req req = { "Ret", 0, 0, 4, 0, NULL, NULL, v };
    struct store_get_result res;
    ck_assert_int_eq(store_get(s, &req, &res), STORE_GET_OFFSET_TOO_SMALL);
    ck_assert_int_eq(res.next_begin_offset, qmin);
    req.offset = qmin;
    ck_assert_int_eq(store_get(s, &req, &res), STORE_GET_FOUND);
    ck_assert_int_ge(v[0].phys_offset, cmin);
    store_hold_release(&res.hold);
    struct store_hold h = STORE_HOLD_INIT;
    struct store_view one;
    ck_assert_int_eq(store_lookup(s, 0, &one, &h), STORE_LOOKUP_OFFSET_MOVED);
    verify_queue(s, "Ret", 0, qmin, (int)(400 - qmin));
    store_close(s);
    s = open_store(STORE_ASYNC_FLUSH);
    ck_assert_int_eq(store_min_queue_offset(s, "Ret", 0), qmin);
    ck_assert_int_eq(store_max_queue_offset(s, "Ret", 0), 400);
    store_close(s);
}
END_TEST

START_TEST(reader_hold_survives_delete)
{
    struct store *s = open_store(STORE_ASYNC_FLUSH);
    put_n(s, "H", 0, 0, 200, "T");
    wait_dispatch(s);
    ck_assert_int_eq(store_flush_wait_blocking(s, store_commitlog_max_offset(s)), STORE_PUT_OK);
    struct store_view v[4];
    struct store_get_req req = { "H", 0, 0, 4, 0, NULL, NULL, v };
    struct store_get_result res;
    ck_assert_int_eq(store_get(s, &req, &res), STORE_GET_FOUND);
    clock_offset_ms = 100LL * 3600 * 1000;
    ck_assert_int_gt(store_cleanup_now(s), 0);
    struct msg_record r;
    ck_assert_int_eq(msg_record_decode(v[0].data, v[0].len, &r, 1), (int)v[0].len); /* still mapped */
    store_hold_release(&res.hold);
    store_close(s);
}
END_TEST

START_TEST(disk_full)
{
    struct store *s = open_store(STORE_ASYNC_FLUSH);
    put_n(s, "D", 0, 0, 5, "T");
    wait_dispatch(s);
    disk_ratio = 0.95;
    store_check_disk(s);
    char body[10] = "x";
    struct store_msg m;
    fill_msg(&m, "D", 0, body, 1, "", 0);
    struct store_put_result r;
    ck_assert_int_eq(store_put(s, &m, &r), STORE_PUT_DISK_FULL);
    ck_assert_ptr_nonnull(strstr(r.remark, "90%"));
    ck_assert_ptr_nonnull(strstr(r.remark, "95.0%"));
    struct store_stats st;
    store_get_stats(s, &st);
    ck_assert_int_eq(st.writable, 0);
    verify_queue(s, "D", 0, 0, 5); /* reads keep working */
    disk_ratio = 0.50;
    store_check_disk(s);
    ck_assert_int_eq(store_put(s, &m, &r), STORE_PUT_OK);
    store_close(s);
}
END_TEST

START_TEST(forced_clean)
{
    struct store *s = open_store(STORE_ASYNC_FLUSH);
    put_n(s, "FC", 0, 0, 300, "T");
    wait_dispatch(s);
    ck_assert_int_eq(store_flush_wait_blocking(s, store_commitlog_max_offset(s)), STORE_PUT_OK);
    disk_ratio = 0.80; /* above 75%: only expired files go, none are */
    ck_assert_int_eq(store_cleanup_now(s), 0);
    disk_ratio = 0.88; /* above 85%: oldest segments go even though young */
    ck_assert_int_gt(store_cleanup_now(s), 0);
    ck_assert_int_gt(store_commitlog_min_offset(s), 0);
    ck_assert_int_gt(store_min_queue_offset(s, "FC", 0), 0);
    store_close(s);
}
END_TEST

START_TEST(batches_and_admin)
{
    struct store *s = open_store(STORE_ASYNC_FLUSH);
    uint8_t batch[4096];
    size_t len = 0;
    for (int i = 0; i < 5; i++) {
        char b[16];
        int n = snprintf(b, sizeof(b), "batch-%d", i);
        int w = msg_batch_encode_one(batch + len, sizeof(batch) - len, i, b, (uint32_t)n, "TAGS\001X\002", 7);
        ck_assert_int_gt(w, 0);
        len += (size_t)w;
    }
    struct store_msg tmpl;
    fill_msg(&tmpl, "B", 2, NULL, 0, NULL, 0);
    struct store_put_result r;
    int64_t phys[5];
    ck_assert_int_eq(store_put_encoded_batch(s, &tmpl, batch, len, &r, phys, 5), STORE_PUT_OK);
    ck_assert_uint_eq(r.count, 5);
    ck_assert_int_eq(r.queue_offset, 0);
    ck_assert_int_eq(store_put_encoded_batch(s, &tmpl, batch, len - 1, &r, phys, 5), STORE_PUT_MESSAGE_ILLEGAL);
    struct store_msg arr[2];
    fill_msg(&arr[0], "B", 2, "p", 1, "", 0);
    fill_msg(&arr[1], "B", 3, "q", 1, "", 0);
    ck_assert_int_eq(store_put_batch(s, arr, 2, &r, NULL), STORE_PUT_MESSAGE_ILLEGAL);
    arr[1].queue_id = 2;
    ck_assert_int_eq(store_put_batch(s, arr, 2, &r, NULL), STORE_PUT_OK);
    ck_assert_int_eq(r.queue_offset, 5);
    wait_dispatch(s);
    ck_assert_int_eq(store_max_queue_offset(s, "B", 2), 7);
    struct store_view v[8];
    struct store_get_req req = { "B", 2, 0, 8, 0, NULL, NULL, v };
    struct store_get_result res;
    ck_assert_int_eq(store_get(s, &req, &res), STORE_GET_FOUND);
    ck_assert_uint_eq(res.count, 7);
    for (uint32_t i = 0; i < 7; i++) {
        ck_assert_int_eq(v[i].queue_offset, i);
        if (i < 5)
            ck_assert_int_eq(v[i].phys_offset, phys[i]);
    }
    struct msg_record rec;
    ck_assert_int_gt(msg_record_decode(v[3].data, v[3].len, &rec, 1), 0);
    ck_assert_int_eq(rec.flag, 3);
    ck_assert_mem_eq(rec.body, "batch-3", 7);
    store_hold_release(&res.hold);
    /* illegal input */
    struct store_msg bad;
    fill_msg(&bad, "", 0, "x", 1, "", 0);
    ck_assert_int_eq(store_put(s, &bad, &r), STORE_PUT_MESSAGE_ILLEGAL);
    static char big[20000];
    fill_msg(&bad, "B", 0, big, sizeof(big), "", 0);
    ck_assert_int_eq(store_put(s, &bad, &r), STORE_PUT_MESSAGE_ILLEGAL);
    /* offset by time */
    int64_t t0 = store_message_store_time(s, "B", 2, 0);
    ck_assert_int_gt(t0, 0);
    ck_assert_int_eq(store_offset_by_time(s, "B", 2, 0), 0);
    ck_assert_int_eq(store_offset_by_time(s, "B", 2, t0 + 100000), 7);
    /* delete a topic */
    put_n(s, "Gone", 0, 0, 3, "T");
    wait_dispatch(s);
    ck_assert_int_eq(store_delete_topic(s, "Gone"), 1);
    req.topic = "Gone";
    req.queue_id = 0;
    ck_assert_int_eq(store_get(s, &req, &res), STORE_GET_NO_MATCHED_LOGIC_QUEUE);
    char p[4096];
    snprintf(p, sizeof(p), "%s/consumequeue/Gone", root);
    ck_assert_int_ne(access(p, F_OK), 0);
    store_close(s);
}
END_TEST

START_TEST(raw_replication)
{
    struct store *a = open_store(STORE_ASYNC_FLUSH);
    put_n(a, "Rep", 0, 0, 150, "T");
    char *root_a = root;
    root = make_tmp();
    struct store *b = open_store(STORE_ASYNC_FLUSH);
    int64_t off = 0, end = store_commitlog_max_offset(a);
    while (off < end) {
        struct store_hold h = STORE_HOLD_INIT;
        const uint8_t *p;
        ssize_t n = store_read_raw(a, off, 10000, &p, &h);
        ck_assert_int_gt(n, 0);
        ssize_t used = store_append_raw(b, off, p, (size_t)n);
        store_hold_release(&h);
        ck_assert_int_gt(used, 0);
        off += used;
    }
    ck_assert_int_eq(store_commitlog_max_offset(b), end);
    ck_assert_int_eq(store_append_raw(b, 0, (const uint8_t *)"xx", 2), -EINVAL);
    wait_dispatch(b);
    verify_queue(b, "Rep", 0, 0, 150);
    /* the slave continues queue offsets like the master */
    put_n(b, "Rep", 0, 150, 1, "T");
    store_close(b);
    store_close(a);
    rm_rf(root_a);
    free(root_a);
}
END_TEST

static int count_q(const char *topic, int32_t qid, int64_t mn, int64_t mx, void *ud)
{
    (void)topic; (void)qid; (void)mn; (void)mx;
    (*(int *)ud)++;
    return 0;
}

static int notified;
static void on_dispatch(const char *topic, int qid, int64_t qoff, int64_t tag, void *ud)
{
    (void)topic; (void)qid; (void)qoff; (void)tag; (void)ud;
    __atomic_add_fetch(&notified, 1, __ATOMIC_RELAXED);
}

START_TEST(dispatch_hook_and_list)
{
    struct store_config c;
    small_config(&c, root);
    c.on_dispatch = on_dispatch;
    struct store *s;
    notified = 0;
    ck_assert_int_eq(store_open(&c, &s), 0);
    put_n(s, "L1", 0, 0, 3, "T");
    put_n(s, "L2", 4, 0, 2, "T");
    wait_dispatch(s);
    ck_assert_int_eq(__atomic_load_n(&notified, __ATOMIC_RELAXED), 5);
    int n = 0;
    store_list_queues(s, count_q, &n);
    ck_assert_int_eq(n, 2);
    store_close(s);
}
END_TEST

int main(void)
{
    Suite *su = suite_create("store");
    TCase *tc = tcase_create("store");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, put_get_rolling);
    tcase_add_test(tc, tag_filter);
    tcase_add_test(tc, index_queries);
    tcase_add_test(tc, flush_modes);
    tcase_add_test(tc, flush_disk_timeout);
    tcase_add_test(tc, segment_preallocation);
    tcase_add_test(tc, recovery_torn_tail);
    tcase_add_test(tc, recovery_corrupt_crc_middle);
    tcase_add_test(tc, retention);
    tcase_add_test(tc, reader_hold_survives_delete);
    tcase_add_test(tc, disk_full);
    tcase_add_test(tc, forced_clean);
    tcase_add_test(tc, batches_and_admin);
    tcase_add_test(tc, raw_replication);
    tcase_add_test(tc, dispatch_hook_and_list);
    suite_add_tcase(su, tc);
    SRunner *sr = srunner_create(su);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
