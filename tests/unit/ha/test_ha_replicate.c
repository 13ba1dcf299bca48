/* HA replication: a master and a slave store on one loop over 127.0.0.1;
 * the slave's log and consume queues must equal the master's; SYNC_MASTER
 * waits (OK, FLUSH_SLAVE_TIMEOUT, SLAVE_NOT_AVAILABLE) and status. */
#include "ha_test_util.h"

#include <errno.h>

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

struct waitres {
    int calls;
    enum store_put_status st;
};

static void wait_cb(enum store_put_status st, void *ud)
{
    struct waitres *w = ud;
    w->calls++;
    w->st = st;
}

static bool waited(void *ud) { return ((struct waitres *)ud)->calls > 0; }

struct slave_conn {
    struct ha *hm;
    int want;
};
static bool slaves_are(void *ud)
{
    struct slave_conn *c = ud;
    return ht_master_slaves(c->hm) == c->want;
}

START_TEST(replicates_byte_identical)
{
    struct ht_pair p = { ht_open(dm), ht_open(ds) };
    struct ha_config cfg = ht_config();
    int err = 0;
    struct ha *hm = ha_master_start(loop, p.m, &cfg, &err);
    ck_assert_ptr_nonnull(hm);
    char addr[64];
    ht_master_addr(hm, addr, sizeof(addr));
    /* data before the slave exists, then more while it follows */
    ht_put(p.m, "pre", 0, 4000, 200);
    struct ha *hs = ha_slave_start(loop, p.s, addr, &cfg, &err);
    ck_assert_ptr_nonnull(hs);
    for (int round = 0; round < 8; round++) {
        ht_put(p.m, "live", 4000 + round * 1000, 1000, 100 + 300 * (round % 3));
        ha_notify_new_data(hm);
        ht_spin(loop, 5);
    }
    ck_assert(ht_run_until(loop, ht_caught_up, &p, 10000));
    ht_assert_same_log(p.m, p.s);
    ck_assert_int_eq(ht_assert_same_queues(p.m, p.s), 12000);

    /* a wait for replicated data is done at once; a new put waits for the ack */
    struct slave_conn sc = { hm, 1 };
    ck_assert(ht_run_until(loop, slaves_are, &sc, 2000));
    struct waitres w = { 0, STORE_PUT_UNKNOWN_ERROR };
    int64_t end = ht_put(p.m, "sync", 20000, 1, 300);
    int rc = ha_wait_slave(hm, end, wait_cb, &w);
    ck_assert(rc == HA_WAIT_PENDING || rc == HA_WAIT_DONE);
    ck_assert_int_eq(w.calls, 0); /* never inside the call */
    ha_notify_new_data(hm);
    if (rc == HA_WAIT_PENDING) {
        ck_assert(ht_run_until(loop, waited, &w, 3000));
        ck_assert_int_eq(w.calls, 1);
        ck_assert_int_eq(w.st, STORE_PUT_OK);
    }
    ck_assert_int_eq(ha_wait_slave(hm, end, wait_cb, &w), HA_WAIT_DONE);
    ck_assert(ha_slave_ok(hm, end));

    struct ha_master_status ms;
    ck_assert_int_eq(ha_master_status(hm, &ms), 0);
    ck_assert_int_eq(ms.slave_count, 1);
    ck_assert_int_eq(ms.filled, 1);
    ck_assert_int_eq(ms.max_offset, store_commitlog_max_offset(p.m));
    ck_assert_int_eq(ms.slaves[0].ack_offset, ms.max_offset);
    ck_assert_int_eq(ms.slaves[0].lag_bytes, 0);
    ck_assert_uint_ge(ms.slaves[0].bytes_sent, (uint64_t)ms.max_offset);
    struct ha_slave_status ss;
    ck_assert_int_eq(ha_slave_status(hs, &ss), 0);
    ck_assert_str_eq(ss.master_addr, addr);
    ck_assert(ss.connected);
    ck_assert(!ss.verifying && !ss.stopped);
    ck_assert_int_eq(ss.max_offset, ms.max_offset);
    ck_assert_int_eq(ss.truncations, 0);
    ck_assert_int_eq(ha_slave_status(hm, &ss), -EINVAL);
    ck_assert_int_eq(ha_master_status(hs, &ms), -EINVAL);
    ck_assert_int_eq(ha_wait_slave(hs, end, wait_cb, &w), -EINVAL);

    /* the slave stops: a pending wait fails, new ones fail at once */
    end = ht_put(p.m, "gone", 20001, 1, 300);
    struct waitres w2 = { 0, STORE_PUT_OK };
    ha_free(hs);
    rc = ha_wait_slave(hm, end, wait_cb, &w2);
    if (rc == HA_WAIT_PENDING) {
        ck_assert(ht_run_until(loop, waited, &w2, 3000));
        ck_assert_int_eq(w2.st, STORE_PUT_SLAVE_NOT_AVAILABLE);
    } else {
        ck_assert_int_eq(rc, -ENOTCONN);
    }
    sc.want = 0;
    ck_assert(ht_run_until(loop, slaves_are, &sc, 2000));
    ck_assert_int_eq(ha_wait_slave(hm, end, wait_cb, &w2), -ENOTCONN);
    ck_assert(!ha_slave_ok(hm, end));
    ha_free(hm);
    store_close(p.s);
    store_close(p.m);
}
END_TEST

/* A connected slave that stops acknowledging: FLUSH_SLAVE_TIMEOUT; one
 * beyond the gap: SLAVE_NOT_AVAILABLE; disconnect: pending waits fail. */
START_TEST(wait_timeout_and_gap)
{
    struct store *m = ht_open(dm);
    struct ha_config cfg = ht_config();
    cfg.max_gap_not_in_sync = 64 * 1024;
    int err = 0;
    struct ha *hm = ha_master_start(loop, m, &cfg, &err);
    ck_assert_ptr_nonnull(hm);
    int64_t end = ht_put(m, "a", 0, 100, 200);
    struct waitres w = { 0, STORE_PUT_OK };
    ck_assert_int_eq(ha_wait_slave(hm, end, wait_cb, &w), -ENOTCONN);

    int fd = ht_dial(ha_master_port(hm));
    ht_send_u64(fd, end); /* claims to hold everything, then goes silent */
    struct slave_conn sc = { hm, 1 };
    ck_assert(ht_run_until(loop, slaves_are, &sc, 2000));
    end = ht_put(m, "b", 100, 1, 200);
    ck_assert_int_eq(ha_wait_slave(hm, end, wait_cb, &w), HA_WAIT_PENDING);
    ck_assert(ht_run_until(loop, waited, &w, 3000));
    ck_assert_int_eq(w.st, STORE_PUT_FLUSH_SLAVE_TIMEOUT);

    struct ha_master_status ms;
    ck_assert_int_eq(ha_master_status(hm, &ms), 0);
    ck_assert_int_gt(ms.slaves[0].lag_bytes, 0);

    int64_t far = ht_put(m, "c", 101, 400, 200); /* > 64 KiB past the ack */
    ck_assert_int_eq(ha_wait_slave(hm, far, wait_cb, &w), -ENOTCONN);
    ck_assert(!ha_slave_ok(hm, far));

    struct waitres w2 = { 0, STORE_PUT_OK };
    ck_assert_int_eq(ha_wait_slave(hm, end, wait_cb, &w2), HA_WAIT_PENDING);
    close(fd);
    ck_assert(ht_run_until(loop, waited, &w2, 3000));
    ck_assert_int_eq(w2.st, STORE_PUT_SLAVE_NOT_AVAILABLE);

    /* ha_free completes what is still pending */
    fd = ht_dial(ha_master_port(hm));
    ht_send_u64(fd, store_commitlog_max_offset(m));
    ck_assert(ht_run_until(loop, slaves_are, &sc, 2000));
    end = ht_put(m, "d", 501, 1, 200);
    struct waitres w3 = { 0, STORE_PUT_OK };
    ck_assert_int_eq(ha_wait_slave(hm, end, wait_cb, &w3), HA_WAIT_PENDING);
    ha_free(hm);
    ck_assert_int_eq(w3.calls, 1);
    ck_assert_int_eq(w3.st, STORE_PUT_SLAVE_NOT_AVAILABLE);
    close(fd);
    store_close(m);
}
END_TEST

/* Changing the master at runtime: bad address refused, none disconnects,
 * a new one is followed. */
START_TEST(set_master)
{
    struct ht_pair p = { ht_open(dm), ht_open(ds) };
    struct ha_config cfg = ht_config();
    int err = 0;
    struct ha *hm = ha_master_start(loop, p.m, &cfg, &err);
    ck_assert_ptr_nonnull(hm);
    struct ha *hs = ha_slave_start(loop, p.s, NULL, &cfg, &err);
    ck_assert_ptr_nonnull(hs);
    ck_assert_ptr_null(ha_slave_start(loop, p.s, "nonsense", &cfg, &err));
    ck_assert_int_eq(err, -EINVAL);
    ht_put(p.m, "x", 0, 500, 200);
    ht_spin(loop, 100);
    ck_assert_int_eq(store_commitlog_max_offset(p.s), 0);
    ck_assert_int_eq(ha_slave_set_master(hs, "1.2.3"), -EINVAL);
    ck_assert_int_eq(ha_slave_set_master(hs, "127.0.0.1:0"), -EINVAL);
    char addr[64];
    ht_master_addr(hm, addr, sizeof(addr));
    ck_assert_int_eq(ha_slave_set_master(hs, addr), 0);
    ck_assert(ht_run_until(loop, ht_caught_up, &p, 5000));
    ck_assert_int_eq(ha_slave_set_master(hs, addr), 0); /* same: no-op */
    ck_assert_int_eq(ha_slave_set_master(hs, ""), 0);
    struct slave_conn sc = { hm, 0 };
    ck_assert(ht_run_until(loop, slaves_are, &sc, 2000));
    struct ha_slave_status ss;
    ck_assert_int_eq(ha_slave_status(hs, &ss), 0);
    ck_assert(!ss.connected);
    ht_put(p.m, "y", 500, 100, 200);
    ck_assert_int_eq(ha_slave_set_master(hs, addr), 0);
    ck_assert(ht_run_until(loop, ht_caught_up, &p, 5000));
    ht_assert_same_log(p.m, p.s);
    ht_assert_same_queues(p.m, p.s);
    ha_free(hs);
    ha_free(hm);
    store_close(p.s);
    store_close(p.m);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("ha_replicate");
    TCase *tc = tcase_create("core");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, replicates_byte_identical);
    tcase_add_test(tc, wait_timeout_and_gap);
    tcase_add_test(tc, set_master);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
