/* Helpers shared by the HA unit tests: stores in temp dirs, message puts,
 * running the loop until a condition holds, and log / queue comparison. */
#ifndef HA_TEST_UTIL_H
#define HA_TEST_UTIL_H

#include "store_test_util.h"

#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "buf.h"
#include "ha.h"
#include "message.h"

#define HT_TOPIC "HaTopic"
#define HT_QUEUES 4

static inline struct store *ht_open(const char *dir)
{
    struct store_config c;
    small_config(&c, dir);
    c.commitlog_file_size = 256 * 1024;
    c.cq_entries_per_file = 1000;
    c.max_hash_slot_num = 1024;
    c.max_index_num = 20000;
    struct store *s = NULL;
    int rc = store_open(&c, &s);
    /* -EINVAL on reopening a replicated store has been a missing commitlog
     * segment: a writer/allocator race in commitlog.c take_segment */
    ck_assert_msg(rc == 0, "store_open(%s) failed: %s", dir, strerror(-rc));
    return s;
}

/* Puts n messages (queue i % HT_QUEUES) whose bodies start with tag and i.
 * Returns the end offset of the last one. */
static inline int64_t ht_put(struct store *s, const char *tag, int from, int n, uint32_t body_len)
{
    char body[4096], props[128];
    ck_assert_uint_le(body_len, sizeof(body));
    int64_t end = 0;
    for (int i = from; i < from + n; i++) {
        for (uint32_t k = 0; k < body_len; k++)
            body[k] = (char)('a' + (i * 7 + (int)k) % 26);
        snprintf(body, body_len, "%s-%d-", tag, i);
        char key[32];
        snprintf(key, sizeof(key), "k%d", i);
        size_t plen = 0;
        ck_assert_int_eq(msg_prop_append(props, sizeof(props), &plen, MSG_PROP_TAGS, tag, strlen(tag)), 0);
        ck_assert_int_eq(msg_prop_append(props, sizeof(props), &plen, MSG_PROP_KEYS, key, strlen(key)), 0);
        struct store_msg m;
        fill_msg(&m, HT_TOPIC, i % HT_QUEUES, body, body_len, props, (uint32_t)plen);
        struct store_put_result r;
        ck_assert_int_eq(store_put(s, &m, &r), STORE_PUT_OK);
        end = r.end_offset;
    }
    return end;
}

static void ht_guard_cb(struct ev_loop *loop, ev_timer *w, int revents) { (void)loop; (void)w; (void)revents; }

typedef bool (*ht_pred)(void *ud);

/* Runs the loop until pred(ud) or timeout_ms; returns pred's last value. */
static inline bool ht_run_until(struct ev_loop *loop, ht_pred pred, void *ud, int timeout_ms)
{
    ev_timer guard;
    ev_timer_init(&guard, ht_guard_cb, 0.005, 0.005);
    ev_timer_start(loop, &guard);
    ev_now_update(loop);
    ev_tstamp end = ev_now(loop) + timeout_ms / 1000.0;
    bool ok = pred(ud);
    while (!ok && ev_now(loop) < end) {
        ev_run(loop, EVRUN_ONCE);
        ok = pred(ud);
    }
    ev_timer_stop(loop, &guard);
    return ok;
}

static inline bool ht_never(void *ud) { (void)ud; return false; }

static inline void ht_spin(struct ev_loop *loop, int ms) { ht_run_until(loop, ht_never, NULL, ms); }

struct ht_pair {
    struct store *m, *s;
};

static inline bool ht_caught_up(void *ud)
{
    struct ht_pair *p = ud;
    return store_commitlog_max_offset(p->s) == store_commitlog_max_offset(p->m);
}

/* Asserts the slave's log equals the master's byte for byte over the whole
 * master log. */
static inline void ht_assert_same_log(struct store *m, struct store *s)
{
    int64_t mx = store_commitlog_max_offset(m);
    ck_assert_int_eq(store_commitlog_max_offset(s), mx);
    ck_assert_int_eq(store_commitlog_min_offset(s), store_commitlog_min_offset(m));
    for (int64_t off = store_commitlog_min_offset(m); off < mx;) {
        struct store_hold hm = STORE_HOLD_INIT, hs = STORE_HOLD_INIT;
        const uint8_t *pm, *ps;
        ssize_t a = store_read_raw(m, off, 1 << 20, &pm, &hm);
        ssize_t b = store_read_raw(s, off, (size_t)(a > 0 ? a : 1), &ps, &hs);
        ck_assert_int_gt(a, 0);
        ck_assert_int_eq(b, a);
        if (memcmp(pm, ps, (size_t)a) != 0)
            ck_abort_msg("logs differ in [%lld, %lld)", (long long)off, (long long)(off + a));
        store_hold_release(&hm);
        store_hold_release(&hs);
        off += a;
    }
}

/* Asserts every consume queue of the master serves the same messages on
 * the slave (same queue bounds, same records). Returns the message count. */
static inline long ht_assert_same_queues(struct store *m, struct store *s)
{
    wait_dispatch(m);
    wait_dispatch(s);
    long total = 0;
    for (int q = 0; q < HT_QUEUES; q++) {
        int64_t mmax = store_max_queue_offset(m, HT_TOPIC, q);
        ck_assert_int_eq(store_max_queue_offset(s, HT_TOPIC, q), mmax);
        ck_assert_int_eq(store_min_queue_offset(s, HT_TOPIC, q), store_min_queue_offset(m, HT_TOPIC, q));
        int64_t off = store_min_queue_offset(m, HT_TOPIC, q);
        while (off < mmax) {
            struct store_view vm[32], vs[32];
            struct store_get_req rm = { HT_TOPIC, q, off, 32, 0, NULL, NULL, vm };
            struct store_get_req rs = { HT_TOPIC, q, off, 32, 0, NULL, NULL, vs };
            struct store_get_result gm, gs;
            ck_assert_int_eq(store_get(m, &rm, &gm), STORE_GET_FOUND);
            ck_assert_int_eq(store_get(s, &rs, &gs), STORE_GET_FOUND);
            ck_assert_uint_eq(gs.count, gm.count);
            ck_assert_int_eq(gs.next_begin_offset, gm.next_begin_offset);
            for (uint32_t i = 0; i < gm.count; i++) {
                ck_assert_int_eq(vs[i].phys_offset, vm[i].phys_offset);
                ck_assert_uint_eq(vs[i].len, vm[i].len);
                ck_assert(memcmp(vs[i].data, vm[i].data, vm[i].len) == 0);
            }
            total += gm.count;
            off = gm.next_begin_offset;
            store_hold_release(&gm.hold);
            store_hold_release(&gs.hold);
        }
    }
    return total;
}

static inline struct ha_config ht_config(void)
{
    struct ha_config c;
    ha_config_defaults(&c);
    c.listen_host = "127.0.0.1";
    c.listen_port = 0;
    c.reconnect_ms = 50;
    c.heartbeat_interval_ms = 200;
    c.sync_timeout_ms = 300;
    return c;
}

static inline void ht_master_addr(struct ha *hm, char *buf, size_t n)
{
    snprintf(buf, n, "127.0.0.1:%d", ha_master_port(hm));
}

/* Blocking TCP client to the master's HA port (a fake slave). */
static inline int ht_dial(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    return fd;
}

static inline void ht_send_u64(int fd, int64_t v)
{
    uint8_t b[8];
    wr_u64be(b, (uint64_t)v);
    ck_assert_int_eq(send(fd, b, 8, MSG_NOSIGNAL), 8);
}

static inline int ht_master_slaves(struct ha *hm)
{
    struct ha_master_status st;
    ck_assert_int_eq(ha_master_status(hm, &st), 0);
    return st.slave_count;
}

#endif
