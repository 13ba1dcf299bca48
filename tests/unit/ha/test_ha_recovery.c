/* HA recovery: a restarted slave resumes from its own offset; a slave whose
 * log is longer than the master's or diverges from it truncates to the
 * common point (store_truncate) and then matches byte for byte. */
#include "ha_test_util.h"

#include <errno.h>

#include "store_truncate.h"

static char *dm, *ds;
static struct ev_loop *loop;

static void setup(void)
{
    log_set_stderr(getenv("HA_TEST_LOG") != NULL);
    dm = make_tmp();
    ds = make_tmp();
    loop = ev_loop_new(EVFLAG_AUTO);
}

static void teardown(void)
{
    ev_loop_destroy(loop);
    rm_rf(dm);
    rm_rf(ds);
    free(dm);
    free(ds);
}

struct follow {
    struct ht_pair *p;
    struct ha *hs;
};

/* Caught up and streaming (verification over). */
static bool following(void *ud)
{
    struct follow *f = ud;
    struct ha_slave_status st;
    ha_slave_status(f->hs, &st);
    return st.connected && !st.verifying && ht_caught_up(f->p);
}

/* Replicates everything the master has into the slave, then stops the
 * slave side. */
static void replicate_once(struct ht_pair *p, struct ha *hm)
{
    struct ha_config cfg = ht_config();
    char addr[64];
    ht_master_addr(hm, addr, sizeof(addr));
    int err;
    struct ha *hs = ha_slave_start(loop, p->s, addr, &cfg, &err);
    ck_assert_ptr_nonnull(hs);
    struct follow f = { p, hs };
    ck_assert(ht_run_until(loop, following, &f, 10000));
    ha_free(hs);
}

/* Follows the master again; returns the slave's status once caught up. */
static struct ha_slave_status follow_again(struct ht_pair *p, struct ha *hm)
{
    struct ha_config cfg = ht_config();
    char addr[64];
    ht_master_addr(hm, addr, sizeof(addr));
    int err;
    struct ha *hs = ha_slave_start(loop, p->s, addr, &cfg, &err);
    ck_assert_ptr_nonnull(hs);
    struct follow f = { p, hs };
    ck_assert_msg(ht_run_until(loop, following, &f, 15000), "slave did not catch up: %lld vs %lld",
                  (long long)store_commitlog_max_offset(p->s), (long long)store_commitlog_max_offset(p->m));
    struct ha_slave_status st;
    ck_assert_int_eq(ha_slave_status(hs, &st), 0);
    ck_assert(!st.stopped);
    /* and keeps following */
    ht_put(p->m, "after", 90000, 300, 250);
    ha_notify_new_data(hm);
    ck_assert(ht_run_until(loop, following, &f, 10000));
    ht_assert_same_log(p->m, p->s);
    ht_assert_same_queues(p->m, p->s);
    ha_free(hs);
    return st;
}

START_TEST(restart_resumes_from_own_offset)
{
    struct ht_pair p = { ht_open(dm), ht_open(ds) };
    struct ha_config cfg = ht_config();
    int err;
    struct ha *hm = ha_master_start(loop, p.m, &cfg, &err);
    ck_assert_ptr_nonnull(hm);
    ht_put(p.m, "one", 0, 6000, 300);
    replicate_once(&p, hm);
    store_close(p.s);
    int64_t had = store_commitlog_max_offset(p.m);
    ht_put(p.m, "two", 6000, 1000, 300);
    p.s = ht_open(ds);
    ck_assert_int_eq(store_commitlog_max_offset(p.s), had);
    struct ha_slave_status st = follow_again(&p, hm);
    ck_assert_int_eq(st.truncations, 0);
    /* only the new data and the compared window crossed the wire */
    int64_t fresh = store_commitlog_max_offset(p.m) - had;
    ck_assert_uint_lt(st.bytes_received, (uint64_t)(fresh + 2 * cfg.check_window + 4096));
    ha_free(hm);
    store_close(p.s);
    store_close(p.m);
}
END_TEST

/* Same prefix, the slave has extra records the master never had (longer
 * than the compared window, so it asks beyond the master's end). */
START_TEST(longer_tail_truncated)
{
    struct ht_pair p = { ht_open(dm), ht_open(ds) };
    struct ha_config cfg = ht_config();
    int err;
    struct ha *hm = ha_master_start(loop, p.m, &cfg, &err);
    ck_assert_ptr_nonnull(hm);
    ht_put(p.m, "common", 0, 3000, 300);
    replicate_once(&p, hm);
    int64_t common = store_commitlog_max_offset(p.m);
    ht_put(p.s, "extra", 3000, 500, 300);
    ck_assert_int_gt(store_commitlog_max_offset(p.s), common + (int64_t)cfg.check_window);
    struct ha_slave_status st = follow_again(&p, hm);
    ck_assert_int_ge(st.truncations, 1);
    ha_free(hm);
    store_close(p.s);
    store_close(p.m);
}
END_TEST

/* Diverging histories after a common prefix, the slave's tail longer. */
START_TEST(divergent_longer_tail)
{
    struct ht_pair p = { ht_open(dm), ht_open(ds) };
    struct ha_config cfg = ht_config();
    int err;
    struct ha *hm = ha_master_start(loop, p.m, &cfg, &err);
    ck_assert_ptr_nonnull(hm);
    ht_put(p.m, "common", 0, 3000, 300);
    replicate_once(&p, hm);
    ht_put(p.s, "slaveonly", 3000, 700, 320);
    ht_put(p.m, "masteronly", 3000, 200, 280);
    ck_assert_int_gt(store_commitlog_max_offset(p.s), store_commitlog_max_offset(p.m));
    struct ha_slave_status st = follow_again(&p, hm);
    ck_assert_int_ge(st.truncations, 1);
    ha_free(hm);
    store_close(p.s);
    store_close(p.m);
}
END_TEST

/* Diverging after a common prefix, the slave's tail shorter and within the
 * compared window; also after a slave restart (recovered store). */
START_TEST(divergent_shorter_tail)
{
    struct ht_pair p = { ht_open(dm), ht_open(ds) };
    struct ha_config cfg = ht_config();
    int err;
    struct ha *hm = ha_master_start(loop, p.m, &cfg, &err);
    ck_assert_ptr_nonnull(hm);
    ht_put(p.m, "common", 0, 2000, 300);
    replicate_once(&p, hm);
    ht_put(p.s, "slaveonly", 2000, 3, 500);
    ht_put(p.m, "masteronly", 2000, 800, 200);
    store_close(p.s);
    p.s = ht_open(ds);
    struct ha_slave_status st = follow_again(&p, hm);
    ck_assert_int_ge(st.truncations, 1);
    ha_free(hm);
    store_close(p.s);
    store_close(p.m);
}
END_TEST

/* Nothing in common at all: the slave drops its whole log and copies the
 * master's. */
START_TEST(nothing_in_common)
{
    struct ht_pair p = { ht_open(dm), ht_open(ds) };
    struct ha_config cfg = ht_config();
    int err;
    struct ha *hm = ha_master_start(loop, p.m, &cfg, &err);
    ck_assert_ptr_nonnull(hm);
    ht_put(p.m, "master", 0, 1500, 300);
    ht_put(p.s, "stranger", 0, 1200, 310);
    struct ha_slave_status st = follow_again(&p, hm);
    ck_assert_int_ge(st.truncations, 1);
    ha_free(hm);
    store_close(p.s);
    store_close(p.m);
}
END_TEST

/* store_truncate / store_record_floor on their own. */
START_TEST(truncate_api)
{
    struct store *s = ht_open(ds);
    int64_t ends[100];
    for (int i = 0; i < 100; i++)
        ends[i] = ht_put(s, "t", i, 1, 700 + i);
    int64_t start;
    ck_assert_int_eq(store_record_floor(s, ends[49] + 5, &start), 0);
    ck_assert_int_eq(start, ends[49]);
    ck_assert_int_eq(store_record_floor(s, ends[49], &start), 0);
    ck_assert_int_eq(start, ends[49]);
    ck_assert_int_eq(store_record_floor(s, ends[99] + 10, &start), 0);
    ck_assert_int_eq(start, ends[99]);
    ck_assert_int_eq(store_truncate(s, ends[49] + 5), -EINVAL);
    ck_assert_int_eq(store_truncate(s, ends[99] + 1), -EINVAL);
    wait_dispatch(s);
    ck_assert_int_eq(store_truncate(s, ends[49]), ends[49]);
    ck_assert_int_eq(store_commitlog_max_offset(s), ends[49]);
    int64_t qsum = 0;
    for (int q = 0; q < HT_QUEUES; q++)
        qsum += store_max_queue_offset(s, HT_TOPIC, q);
    ck_assert_int_eq(qsum, 50);
    /* the store keeps working after the cut and after a restart */
    ht_put(s, "t2", 50, 20, 900);
    wait_dispatch(s);
    int64_t end = store_commitlog_max_offset(s);
    store_close(s);
    s = ht_open(ds);
    ck_assert_int_eq(store_commitlog_max_offset(s), end);
    qsum = 0;
    for (int q = 0; q < HT_QUEUES; q++)
        qsum += store_max_queue_offset(s, HT_TOPIC, q);
    ck_assert_int_eq(qsum, 70);
    int64_t phys;
    ck_assert_int_eq(store_query_by_key(s, HT_TOPIC, "k60", 4, 0, INT64_MAX, &phys), 1);
    ck_assert_int_eq(store_query_by_key(s, HT_TOPIC, "k80", 4, 0, INT64_MAX, &phys), 0);
    ck_assert_int_eq(store_truncate(s, 0), 0);
    ck_assert_int_eq(store_commitlog_max_offset(s), 0);
    store_close(s);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("ha_recovery");
    TCase *tc = tcase_create("core");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, truncate_api);
    tcase_add_test(tc, restart_resumes_from_own_offset);
    tcase_add_test(tc, longer_tail_truncated);
    tcase_add_test(tc, divergent_longer_tail);
    tcase_add_test(tc, divergent_shorter_tail);
    tcase_add_test(tc, nothing_in_common);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
