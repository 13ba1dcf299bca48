/* Unit tests of how much of its files the store keeps resident: the
 * prefault window ahead of the writer, the release of pages behind it
 * (flushed or not), of pages readers faulted in far behind it, of consume
 * queue pages, and the mapped-file primitives underneath
 * (broker/mapped_file.h). Sizes are read from /proc/self/statm, whose
 * resident count includes mapped file pages, or per file from
 * /proc/self/smaps. */
#include "store_test_util.h"

#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>

#include "mapped_file.h"

#define MIB (1024L * 1024)

static char *root;

static void setup(void)
{
    log_set_stderr(0);
    root = make_tmp();
}

static void teardown(void)
{
    mf_populate_force_touch(0);
    rm_rf(root);
    free(root);
}

/* Resident bytes of the process (all = 1) or only of its file pages (the
 * "shared" column of statm), which sanitizer heap and shadow memory do not
 * disturb. */
static long statm_bytes(int all)
{
    FILE *f = fopen("/proc/self/statm", "r");
    ck_assert_ptr_nonnull(f);
    long size = 0, res = 0, shared = 0;
    ck_assert_int_eq(fscanf(f, "%ld %ld %ld", &size, &res, &shared), 3);
    fclose(f);
    return (all ? res : shared) * sysconf(_SC_PAGESIZE);
}

static long rss_bytes(void) { return statm_bytes(1); }
static long file_bytes(void) { return statm_bytes(0); }

static int count_segments(void)
{
    char p[4096];
    snprintf(p, sizeof(p), "%s/commitlog", root);
    DIR *d = opendir(p);
    if (!d)
        return 0;
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)))
        n += strlen(de->d_name) == 20;
    closedir(d);
    return n;
}

/* Populates 4 MiB of a 32 MiB segment, then releases it: only the window
 * becomes resident, release gives it back, and bytes written through the
 * mapping survive the release. */
static void populate_release_round(void)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/seg", root);
    unlink(path);
    struct mfile *f;
    ck_assert_int_eq(mf_open(path, 0, 32 * MIB, 1, &f), 0);
    long r0 = file_bytes();
    ck_assert_int_eq(mf_populate(f, 0, 4 * MIB, NULL), 0);
    long r1 = file_bytes();
    ck_assert_int_ge(r1 - r0, 4 * MIB - 64 * 1024);
    ck_assert_int_lt(r1 - r0, 5 * MIB);
    memcpy(f->base + 4096, "durable-bytes", 13);
    ck_assert_int_eq(mf_release(f, 0, 32 * MIB), 0);
    long r2 = file_bytes();
    ck_assert_int_lt(r2 - r0, 512 * 1024);
    ck_assert_int_eq(memcmp(f->base + 4096, "durable-bytes", 13), 0);
    char back[13];
    ck_assert_int_eq(pread(f->fd, back, sizeof(back), 4096), (ssize_t)sizeof(back));
    ck_assert_int_eq(memcmp(back, "durable-bytes", 13), 0);
    /* a range in the middle, unaligned: rounded inward */
    ck_assert_int_eq(mf_populate(f, 8 * MIB + 100, 10 * MIB + 100, NULL), 0);
    long r3 = file_bytes();
    ck_assert_int_ge(r3 - r2, 2 * MIB - 64 * 1024);
    ck_assert_int_lt(r3 - r2, 3 * MIB);
    ck_assert_int_eq(mf_release(f, 8 * MIB - 1, 10 * MIB + 4097), 0);
    ck_assert_int_lt(file_bytes() - r2, 256 * 1024);
    mf_unref(f);
}

START_TEST(populate_and_release)
{
    populate_release_round();
}
END_TEST

/* The same on the path kernels before 5.14 take (MADV_POPULATE_READ
 * answers EINVAL there): one read per page. */
START_TEST(populate_touch_fallback)
{
    mf_populate_force_touch(1);
    populate_release_round();
}
END_TEST

/* A stop flag already set makes populate return at once. */
START_TEST(populate_stops)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/seg", root);
    struct mfile *f;
    ck_assert_int_eq(mf_open(path, 0, 16 * MIB, 1, &f), 0);
    int stop = 1;
    long r0 = file_bytes();
    ck_assert_int_eq(mf_populate(f, 0, 16 * MIB, &stop), 0);
    ck_assert_int_lt(file_bytes() - r0, 512 * 1024);
    mf_unref(f);
}
END_TEST

static void big_config(struct store_config *c)
{
    small_config(c, root);
    c->commitlog_file_size = 256 * MIB; /* defaults for prefault window and trail */
    c->cq_entries_per_file = 300000;
    c->message_index_enable = 0;
}

/* Waits up to ms for the growth of file pages over base to drop below
 * lim; returns the last growth seen. */
static long settle(long base, long lim, int ms)
{
    long g = file_bytes() - base;
    for (int i = 0; i < ms / 10 && g >= lim; i++) {
        sleep_ms(10);
        g = file_bytes() - base;
    }
    return g;
}

static void put_some(struct store *s, int from, int n, size_t len)
{
    static char body[4096];
    for (int i = from; i < from + n; i++) {
        memset(body, 'a' + i % 26, len);
        snprintf(body, len, "m%d.", i);
        struct store_msg m;
        fill_msg(&m, "RSS", 0, body, (uint32_t)len, NULL, 0);
        struct store_put_result r;
        ck_assert_int_eq(store_put(s, &m, &r), STORE_PUT_OK);
    }
}

static void check_some(struct store *s, int n, size_t len)
{
    struct store_view v[64];
    int64_t off = 0;
    while (off < n) {
        struct store_get_req req = { "RSS", 0, off, 64, 0, NULL, NULL, v };
        struct store_get_result res;
        ck_assert_int_eq(store_get(s, &req, &res), STORE_GET_FOUND);
        for (uint32_t i = 0; i < res.count; i++) {
            struct msg_record rec;
            ck_assert_int_gt(msg_record_decode(v[i].data, v[i].len, &rec, 1), 0);
            ck_assert_uint_eq(rec.body_len, len);
            char want[32];
            int k = (int)(off + i);
            int wl = snprintf(want, sizeof(want), "m%d.", k);
            ck_assert_int_eq(memcmp(rec.body, want, (size_t)wl), 0);
            ck_assert_int_eq(rec.body[len - 1], 'a' + k % 26);
        }
        off = res.next_begin_offset;
        store_hold_release(&res.hold);
    }
}

/* Regression: the allocator used to fault in the whole current segment and
 * the whole next one (2 GiB with default segments). With 256 MiB segments
 * a fresh store, and the same store reopened, must stay far below one
 * segment while idle: the prefault window (8 MiB) plus small change. */
START_TEST(idle_store_stays_small)
{
    struct store_config c;
    big_config(&c);
    long base = rss_bytes(), fbase = file_bytes();
    struct store *s = NULL;
    ck_assert_int_eq(store_open(&c, &s), 0);
    put_some(s, 0, 20, 1000);
    for (int i = 0; i < 500 && count_segments() < 2; i++)
        sleep_ms(2);
    ck_assert_int_eq(count_segments(), 2); /* the next segment is prepared */
    sleep_ms(300);                         /* the old code faulted 256 MiB meanwhile */
    long g = file_bytes() - fbase, ga = rss_bytes() - base;
    ck_assert_msg(g < 16 * MIB, "fresh store: file pages grew by %ld KiB", g / 1024);
    ck_assert_msg(ga < 48 * MIB, "fresh store: RSS grew by %ld KiB", ga / 1024);
    store_close(s);

    base = rss_bytes();
    fbase = file_bytes();
    ck_assert_int_eq(store_open(&c, &s), 0);
    for (int i = 0; i < 500 && count_segments() < 2; i++)
        sleep_ms(2);
    sleep_ms(300);
    g = file_bytes() - fbase;
    ga = rss_bytes() - base;
    ck_assert_msg(g < 16 * MIB, "reopened store: file pages grew by %ld KiB", g / 1024);
    ck_assert_msg(ga < 48 * MIB, "reopened store: RSS grew by %ld KiB", ga / 1024);
    wait_dispatch(s);
    check_some(s, 20, 1000);
    store_close(s);
}
END_TEST

/* 48 MiB written: once flushed, all but the trail behind the writer leaves
 * the mapping (what stays: prefault window 8 MiB + trail 8 MiB + the
 * consume queue), and every message still reads back intact. Reopening
 * reads the log through the mapping during recovery; that goes too. */
START_TEST(written_pages_released)
{
    struct store_config c;
    big_config(&c);
    const int n = 12 * 1024;
    long base = rss_bytes(), fbase = file_bytes();
    struct store *s = NULL;
    ck_assert_int_eq(store_open(&c, &s), 0);
    put_some(s, 0, n, 4000);
    long g = settle(fbase, 24 * MIB, 5000);
    ck_assert_msg(g < 24 * MIB, "file pages still %ld KiB over the start after writing 48 MiB", g / 1024);
    long ga = rss_bytes() - base;
    ck_assert_msg(ga < 64 * MIB, "RSS still %ld KiB over the start after writing 48 MiB", ga / 1024);
    wait_dispatch(s);
    check_some(s, n, 4000);
    store_close(s);
    ck_assert_int_eq(store_open(&c, &s), 0);
    g = settle(fbase, 24 * MIB, 5000);
    ck_assert_msg(g < 24 * MIB, "reopened: file pages %ld KiB over the start", g / 1024);
    put_some(s, n, 100, 4000);
    wait_dispatch(s);
    check_some(s, n + 100, 4000);
    store_close(s);
}
END_TEST

/* The flush never runs here (interval one minute), yet what was written
 * leaves the mapping behind the writer: unflushed pages are released too
 * (their dirty state moves to the page cache), and a clean close still
 * writes them all. */
START_TEST(unflushed_pages_released)
{
    struct store_config c;
    big_config(&c);
    c.flush_interval_commitlog_ms = 60000;
    c.flush_commitlog_thorough_interval_ms = 60000;
    const int n = 12 * 1024;
    struct store *s = NULL;
    ck_assert_int_eq(store_open(&c, &s), 0);
    put_some(s, 0, n, 4000);
    long g = 0;
    for (int i = 0; i < 500; i++) {
        g = smaps_rss("/commitlog/");
        if (g < 24 * MIB)
            break;
        sleep_ms(10);
    }
    struct store_stats st;
    store_get_stats(s, &st);
    ck_assert_msg(st.commitlog_flushed_offset < 8 * MIB, "the flush ran (flushed %lld)",
                  (long long)st.commitlog_flushed_offset);
    ck_assert_msg(g < 24 * MIB, "commitlog mapping holds %ld KiB after writing 48 MiB unflushed", g / 1024);
    wait_dispatch(s);
    check_some(s, n, 4000);
    store_close(s);
    ck_assert_int_eq(store_open(&c, &s), 0);
    wait_dispatch(s);
    check_some(s, n, 4000);
    store_close(s);
}
END_TEST

/* A reader far behind the writer (a consumer catching up) gives the pages
 * it read back when it releases its hold, not at the next periodic pass. */
START_TEST(cold_reads_released)
{
    struct store_config c;
    big_config(&c);
    c.commitlog_prefault_bytes = 1 * MIB;
    c.commitlog_mapped_trail_bytes = 1 * MIB;
    const int n = 12 * 1024;
    struct store *s = NULL;
    ck_assert_int_eq(store_open(&c, &s), 0);
    put_some(s, 0, n, 4000);
    wait_dispatch(s);
    long base = 0;
    for (int i = 0; i < 500; i++) {
        base = smaps_rss("/commitlog/");
        if (base < 6 * MIB)
            break;
        sleep_ms(10);
    }
    ck_assert_msg(base < 6 * MIB, "commitlog mapping holds %ld KiB before reading", base / 1024);
    struct store_view v[64];
    long worst = 0;
    int64_t off = 0;
    while (off < n) {
        struct store_get_req req = { "RSS", 0, off, 64, 0, NULL, NULL, v };
        struct store_get_result res;
        ck_assert_int_eq(store_get(s, &req, &res), STORE_GET_FOUND);
        for (uint32_t i = 0; i < res.count; i++)
            ck_assert_int_gt(msg_record_decode(v[i].data, v[i].len, &(struct msg_record){ 0 }, 1), 0);
        off = res.next_begin_offset;
        store_hold_release(&res.hold);
        if (off % 512 == 0) {
            long g = smaps_rss("/commitlog/");
            if (g > worst)
                worst = g;
        }
    }
    /* what stays: the 1 MiB trail and prefault window, the 2 MiB folios the
     * reader is in and faults next, and slack; everything it read would be
     * over 48 MiB */
    ck_assert_msg(worst < 12 * MIB, "reading 48 MiB of old messages left up to %ld KiB mapped", worst / 1024);
    store_close(s);
}
END_TEST

/* Consume-queue pages behind the queue's end leave the mapping as the
 * dispatcher writes (64 KiB kept), and reads of old entries are dropped by
 * the periodic pass; every entry still reads back. */
START_TEST(consume_queue_pages_released)
{
    struct store_config c;
    big_config(&c);
    c.cq_entries_per_file = 300000; /* 6 MB segments */
    const int n = 400000;           /* 8 MB of entries */
    struct store *s = NULL;
    ck_assert_int_eq(store_open(&c, &s), 0);
    put_some(s, 0, n, 20);
    wait_dispatch(s);
    long g = smaps_rss("/consumequeue/");
    /* 64 KiB kept, plus the page-cache folio (up to 2 MiB) the writer is in */
    ck_assert_msg(g < 3 * MIB, "consume queue mapping holds %ld KiB for 8 MB of entries", g / 1024);
    struct store_view v[64];
    for (int64_t off = 0; off < n;) {
        struct store_get_req req = { "RSS", 0, off, 64, 0, NULL, NULL, v };
        struct store_get_result res;
        ck_assert_int_eq(store_get(s, &req, &res), STORE_GET_FOUND);
        ck_assert_int_eq(v[0].queue_offset, off);
        off = res.next_begin_offset;
        store_hold_release(&res.hold);
    }
    store_close(s);
}
END_TEST

/* A zero prefault window and trail still give a working store. */
START_TEST(residency_disabled)
{
    struct store_config c;
    big_config(&c);
    c.commitlog_prefault_bytes = 0;
    c.commitlog_mapped_trail_bytes = 0;
    struct store *s = NULL;
    ck_assert_int_eq(store_open(&c, &s), 0);
    put_some(s, 0, 1000, 1000);
    wait_dispatch(s);
    check_some(s, 1000, 1000);
    store_close(s);
    c.commitlog_prefault_bytes = 2ull << 30;
    ck_assert_int_eq(store_open(&c, &s), -EINVAL);
}
END_TEST

int main(void)
{
    Suite *su = suite_create("residency");
    TCase *tc = tcase_create("core");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, populate_and_release);
    tcase_add_test(tc, populate_touch_fallback);
    tcase_add_test(tc, populate_stops);
    tcase_add_test(tc, idle_store_stays_small);
    tcase_add_test(tc, written_pages_released);
    tcase_add_test(tc, unflushed_pages_released);
    tcase_add_test(tc, cold_reads_released);
    tcase_add_test(tc, consume_queue_pages_released);
    tcase_add_test(tc, residency_disabled);
    suite_add_tcase(su, tc);
    SRunner *sr = srunner_create(su);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
