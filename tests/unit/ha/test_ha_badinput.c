/* HA bad input: garbage and wrong offsets on the master's HA port close that
 * connection only; a master that sends half a record, a corrupt record or
 * a wrong offset never gets a partial or corrupt record into the slave. */
#include "ha_test_util.h"

#include <errno.h>
#include <poll.h>

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

/* Reads until EOF (the peer closed) or 3 s; true if closed. */
static bool peer_closes(int fd)
{
    char buf[65536];
    for (int i = 0; i < 300; i++) {
        ht_spin(loop, 10);
        struct pollfd pf = { fd, POLLIN, 0 };
        while (poll(&pf, 1, 0) == 1) {
            ssize_t r = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
            if (r == 0 || (r < 0 && errno != EAGAIN))
                return true;
            if (r < 0)
                break;
        }
    }
    return false;
}

START_TEST(garbage_closes_only_that_connection)
{
    struct ht_pair p = { ht_open(dm), ht_open(ds) };
    struct ha_config cfg = ht_config();
    int err;
    struct ha *hm = ha_master_start(loop, p.m, &cfg, &err);
    ck_assert_ptr_nonnull(hm);
    char addr[64];
    ht_master_addr(hm, addr, sizeof(addr));
    ht_put(p.m, "a", 0, 2000, 300);
    struct ha *hs = ha_slave_start(loop, p.s, addr, &cfg, &err);
    ck_assert_ptr_nonnull(hs);
    ck_assert(ht_run_until(loop, ht_caught_up, &p, 5000));
    int port = ha_master_port(hm);

    /* text protocol garbage: the first 8 bytes read as a huge offset */
    int g1 = ht_dial(port);
    const char *http = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    ck_assert_int_eq(send(g1, http, strlen(http), MSG_NOSIGNAL), (ssize_t)strlen(http));
    /* a negative offset */
    int g2 = ht_dial(port);
    ht_send_u64(g2, -5);
    /* valid request, then an acknowledgement going backwards */
    int g3 = ht_dial(port);
    ht_send_u64(g3, 0);
    ht_spin(loop, 50);
    ht_send_u64(g3, 1000);
    ht_spin(loop, 20);
    ht_send_u64(g3, 10);
    /* valid request, then an acknowledgement of bytes never sent */
    int g4 = ht_dial(port);
    ht_send_u64(g4, store_commitlog_max_offset(p.m));
    ht_spin(loop, 20);
    ht_send_u64(g4, store_commitlog_max_offset(p.m) + 4096);
    /* a request below the log minimum of a master that deleted nothing is
     * fine, one in the middle of nowhere beyond the end is not */
    int g5 = ht_dial(port);
    ht_send_u64(g5, store_commitlog_max_offset(p.m) * 3);

    ck_assert(peer_closes(g1));
    ck_assert(peer_closes(g2));
    ck_assert(peer_closes(g3));
    ck_assert(peer_closes(g4));
    ck_assert(peer_closes(g5));
    close(g1);
    close(g2);
    close(g3);
    close(g4);
    close(g5);

    /* the real slave never noticed */
    ht_put(p.m, "b", 2000, 2000, 300);
    ha_notify_new_data(hm);
    ck_assert(ht_run_until(loop, ht_caught_up, &p, 5000));
    ht_assert_same_log(p.m, p.s);
    ht_assert_same_queues(p.m, p.s);
    struct ha_slave_status ss;
    ck_assert_int_eq(ha_slave_status(hs, &ss), 0);
    ck_assert_int_eq(ss.connects, 1);
    ck_assert_int_eq(ht_master_slaves(hm), 1);
    ha_free(hs);
    ha_free(hm);
    store_close(p.s);
    store_close(p.m);
}
END_TEST

/* A fake master: listens, accepts the slave, reads its request. */
struct fake_master {
    int lfd, fd;
    int port;
};

static void fm_listen(struct fake_master *f)
{
    f->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(f->lfd, 0);
    struct sockaddr_in a = { .sin_family = AF_INET };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(bind(f->lfd, (struct sockaddr *)&a, sizeof(a)), 0);
    ck_assert_int_eq(listen(f->lfd, 4), 0);
    socklen_t l = sizeof(a);
    ck_assert_int_eq(getsockname(f->lfd, (struct sockaddr *)&a, &l), 0);
    f->port = ntohs(a.sin_port);
    f->fd = -1;
}

/* Accepts the next slave connection (running the loop meanwhile) and
 * returns its requested offset. */
static int64_t fm_accept(struct fake_master *f)
{
    for (int i = 0; i < 300 && f->fd < 0; i++) {
        ht_spin(loop, 10);
        struct pollfd pf = { f->lfd, POLLIN, 0 };
        if (poll(&pf, 1, 0) == 1)
            f->fd = accept4(f->lfd, NULL, NULL, SOCK_CLOEXEC);
    }
    ck_assert_int_ge(f->fd, 0);
    uint8_t b[8];
    size_t got = 0;
    for (int i = 0; i < 300 && got < 8; i++) {
        ht_spin(loop, 10);
        ssize_t r = recv(f->fd, b + got, 8 - got, MSG_DONTWAIT);
        if (r > 0)
            got += (size_t)r;
    }
    ck_assert_uint_eq(got, 8);
    return (int64_t)rd_u64be(b);
}

static void fm_send_frame(struct fake_master *f, int64_t off, const void *body, uint32_t len, uint32_t claimed)
{
    uint8_t h[12];
    wr_u64be(h, (uint64_t)off);
    wr_u32be(h + 8, claimed);
    ck_assert_int_eq(send(f->fd, h, 12, MSG_NOSIGNAL), 12);
    if (len)
        ck_assert_int_eq(send(f->fd, body, len, MSG_NOSIGNAL), (ssize_t)len);
}

static void fm_drop(struct fake_master *f)
{
    close(f->fd);
    f->fd = -1;
}

START_TEST(bad_master_data_never_reaches_the_store)
{
    /* real records to cut up: the first 20 messages of a master store */
    struct store *src = ht_open(dm);
    ht_put(src, "r", 0, 20, 400);
    int64_t total = store_commitlog_max_offset(src);
    uint8_t *log = malloc((size_t)total);
    ck_assert_ptr_nonnull(log);
    struct store_hold h = STORE_HOLD_INIT;
    const uint8_t *v;
    ck_assert_int_eq(store_read_raw(src, 0, (size_t)total, &v, &h), total);
    memcpy(log, v, (size_t)total);
    store_hold_release(&h);
    int64_t rec = 0; /* end of the first record */
    {
        struct store_view sv;
        struct store_hold h2 = STORE_HOLD_INIT;
        ck_assert_int_eq(store_lookup(src, 0, &sv, &h2), STORE_LOOKUP_OK);
        rec = sv.len;
        store_hold_release(&h2);
    }

    struct store *s = ht_open(ds);
    struct fake_master f;
    fm_listen(&f);
    struct ha_config cfg = ht_config();
    char addr[64];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", f.port);
    int err;
    struct ha *hs = ha_slave_start(loop, s, addr, &cfg, &err);
    ck_assert_ptr_nonnull(hs);

    /* 1: half a record, then the connection closes */
    ck_assert_int_eq(fm_accept(&f), 0);
    fm_send_frame(&f, 0, log, (uint32_t)(rec / 2), (uint32_t)rec);
    ht_spin(loop, 50);
    fm_drop(&f);
    ht_spin(loop, 30);
    ck_assert_int_eq(store_commitlog_max_offset(s), 0);

    /* 2: a record with a flipped body byte (CRC mismatch) after a good one */
    ck_assert_int_eq(fm_accept(&f), 0);
    uint8_t *bad = malloc((size_t)(2 * rec));
    memcpy(bad, log, (size_t)(2 * rec));
    bad[rec + rec / 2] ^= 0x55; /* inside the body */
    fm_send_frame(&f, 0, bad, (uint32_t)(2 * rec), (uint32_t)(2 * rec));
    ck_assert(peer_closes(f.fd));
    fm_drop(&f);
    /* the good first record is kept, the corrupt one never */
    int64_t kept = store_commitlog_max_offset(s);
    ck_assert_int_eq(kept, rec);
    free(bad);

    /* 3: a frame at an offset the slave did not ask for (a slave with data
     * asks from a record start before its end, to compare its tail) */
    int64_t req = fm_accept(&f);
    ck_assert_int_eq(req, 0);
    fm_send_frame(&f, req + 100, log, 0, 0);
    ck_assert(peer_closes(f.fd));
    fm_drop(&f);
    ck_assert_int_eq(store_commitlog_max_offset(s), kept);

    /* 4: a garbage header (negative size) */
    req = fm_accept(&f);
    ck_assert_int_eq(req, 0);
    fm_send_frame(&f, req, NULL, 0, 0x80000000u);
    ck_assert(peer_closes(f.fd));
    fm_drop(&f);

    /* 5: finally the real bytes, in odd-sized pieces: compared, then taken
     * as whole records */
    req = fm_accept(&f);
    ck_assert_int_eq(req, 0);
    for (int64_t off = req; off < total;) {
        uint32_t n = (uint32_t)(total - off < 777 ? total - off : 777);
        fm_send_frame(&f, off, log + off, n, n);
        off += n;
        ht_spin(loop, 1);
    }
    struct ht_pair pp = { src, s };
    ck_assert(ht_run_until(loop, ht_caught_up, &pp, 5000));
    ht_assert_same_log(src, s);
    ht_assert_same_queues(src, s);
    /* the slave acknowledged the end */
    uint8_t ackb[4096];
    size_t have = 0;
    int64_t last = -1;
    for (int i = 0; i < 200 && last != total; i++) {
        ht_spin(loop, 5);
        ssize_t r;
        while ((r = recv(f.fd, ackb + have % 8, 8 - have % 8, MSG_DONTWAIT)) > 0) {
            have += (size_t)r;
            if (have % 8 == 0)
                last = (int64_t)rd_u64be(ackb);
        }
    }
    ck_assert_int_eq(last, total);
    fm_drop(&f);
    close(f.lfd);
    ha_free(hs);
    free(log);
    store_close(s);
    store_close(src);
}
END_TEST

/* An empty slave cannot start in the middle of a log: it stops (logged,
 * status "stopped") instead of retrying forever, and tries again when told
 * the master address again. */
START_TEST(empty_slave_master_log_not_at_zero)
{
    struct store *s = ht_open(ds);
    struct fake_master f;
    fm_listen(&f);
    struct ha_config cfg = ht_config();
    char addr[64];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", f.port);
    int err;
    struct ha *hs = ha_slave_start(loop, s, addr, &cfg, &err);
    ck_assert_ptr_nonnull(hs);
    ck_assert_int_eq(fm_accept(&f), 0);
    fm_send_frame(&f, 256 * 1024, NULL, 0, 0);
    ck_assert(peer_closes(f.fd));
    fm_drop(&f);
    struct ha_slave_status st;
    ck_assert_int_eq(ha_slave_status(hs, &st), 0);
    ck_assert(st.stopped);
    ck_assert(!st.connected);
    ht_spin(loop, 200);
    struct pollfd pf = { f.lfd, POLLIN, 0 };
    ck_assert_int_eq(poll(&pf, 1, 0), 0); /* no reconnect */
    ck_assert_int_eq(ha_slave_set_master(hs, addr), 0);
    ck_assert_int_eq(fm_accept(&f), 0);
    ck_assert_int_eq(ha_slave_status(hs, &st), 0);
    ck_assert(!st.stopped);
    ck_assert_int_eq(store_commitlog_max_offset(s), 0);
    fm_drop(&f);
    close(f.lfd);
    ha_free(hs);
    store_close(s);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("ha_badinput");
    TCase *tc = tcase_create("core");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, garbage_closes_only_that_connection);
    tcase_add_test(tc, bad_master_data_never_reaches_the_store);
    tcase_add_test(tc, empty_slave_master_log_not_at_zero);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
