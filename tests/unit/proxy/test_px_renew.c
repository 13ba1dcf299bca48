/*
 * Tests of the receipt-handle renewal registry (proxy/renew.h) without a
 * broker: lookups by (group, topic, handle), removal and slot reuse, the
 * bound on entries, the deadline order the renewal timer relies on, the
 * entries of a client that went away, and the latest handle handed to acks.
 */
#include <check.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "receipt.h"
#include "renew.h"

/* A receipt handle as the proxy builds them; i makes it unique. */
static const char *handle(int i, char *buf, size_t cap)
{
    ck_assert_int_gt(px_handle_build(buf, cap, 100 + i, 1700000000000 + i, 60000, 3, '0', "broker-a", i % 4,
                                     200 + i, 5000 + i),
                     0);
    return buf;
}

START_TEST(add_find_remove)
{
    struct px_renew_reg *g = px_renew_reg_new(100);
    ck_assert_ptr_nonnull(g);
    char h[3][PX_RENEW_HANDLE_MAX];
    struct px_renew_entry *e[3];
    for (int i = 0; i < 3; i++) {
        int err = 1;
        e[i] = px_renew_reg_add(g, "client-1", "G", "T", handle(i, h[i], sizeof h[i]), 1000 + i, &err);
        ck_assert_ptr_nonnull(e[i]);
        ck_assert_int_eq(err, 0);
        /* The latest check point starts as the handle's own. */
        ck_assert_int_eq(e[i]->pop_time, 1700000000000 + i);
        ck_assert_int_eq(e[i]->invisible, 60000);
        ck_assert_int_eq(e[i]->revive_qid, 3);
        ck_assert_int_eq(e[i]->received_ms, 1000 + i);
        ck_assert_uint_eq(e[i]->heap_pos, PX_RENEW_UNSCHEDULED);
    }
    ck_assert_uint_eq(px_renew_reg_count(g), 3);
    for (int i = 0; i < 3; i++)
        ck_assert_ptr_eq(px_renew_reg_find(g, "G", "T", h[i]), e[i]);
    ck_assert_str_eq(px_renew_entry_client(e[1]), "client-1");
    ck_assert_str_eq(px_renew_entry_group(e[1]), "G");
    ck_assert_str_eq(px_renew_entry_topic(e[1]), "T");
    /* The key is the whole triple. */
    ck_assert_ptr_null(px_renew_reg_find(g, "G2", "T", h[0]));
    ck_assert_ptr_null(px_renew_reg_find(g, "G", "T2", h[0]));
    ck_assert_ptr_null(px_renew_reg_find(g, "G", "T", "1 2 3 4 0 broker-a 0 9 9"));
    /* The same handle for another group is another entry. */
    int err;
    struct px_renew_entry *other = px_renew_reg_add(g, "client-2", "G2", "T", h[0], 5, &err);
    ck_assert_ptr_nonnull(other);
    ck_assert_ptr_eq(px_renew_reg_find(g, "G2", "T", h[0]), other);
    ck_assert_ptr_eq(px_renew_reg_find(g, "G", "T", h[0]), e[0]);
    ck_assert_ptr_null(px_renew_reg_add(g, "client-1", "G", "T", h[0], 5, &err));
    ck_assert_int_eq(err, -EEXIST);

    px_renew_reg_remove(g, e[1]);
    ck_assert_ptr_null(px_renew_reg_find(g, "G", "T", h[1]));
    ck_assert_ptr_eq(px_renew_reg_find(g, "G", "T", h[2]), e[2]);
    ck_assert_uint_eq(px_renew_reg_count(g), 3);
    /* The freed slot is reused. */
    char h9[PX_RENEW_HANDLE_MAX];
    struct px_renew_entry *again = px_renew_reg_add(g, "client-1", "G", "T", handle(9, h9, sizeof h9), 7, &err);
    ck_assert_ptr_eq(again, e[1]);
    ck_assert_ptr_eq(px_renew_reg_find(g, "G", "T", h9), again);
    px_renew_reg_free(g);
}
END_TEST

START_TEST(rejects)
{
    struct px_renew_reg *g = px_renew_reg_new(10);
    int err;
    ck_assert_ptr_null(px_renew_reg_add(g, "c", "G", "T", "not a handle", 0, &err));
    ck_assert_int_eq(err, -EINVAL);
    char longname[200];
    memset(longname, 'x', sizeof longname - 1);
    longname[sizeof longname - 1] = 0;
    char h[PX_RENEW_HANDLE_MAX];
    handle(1, h, sizeof h);
    ck_assert_ptr_null(px_renew_reg_add(g, longname, "G", "T", h, 0, &err));
    ck_assert_int_eq(err, -ENAMETOOLONG);
    ck_assert_ptr_null(px_renew_reg_add(g, "c", "G", longname, h, 0, &err));
    ck_assert_int_eq(err, -ENAMETOOLONG);
    char big[400], broker[260];
    memset(broker, 'b', sizeof broker - 1);
    broker[sizeof broker - 1] = 0;
    ck_assert_int_gt(px_handle_build(big, sizeof big, 1, 2, 3, 4, '0', broker, 0, 9, 10), 0);
    ck_assert_ptr_null(px_renew_reg_add(g, "c", "G", "T", big, 0, &err));
    ck_assert_int_eq(err, -ENAMETOOLONG);
    ck_assert_uint_eq(px_renew_reg_count(g), 0);
    px_renew_reg_free(g);
}
END_TEST

START_TEST(bound)
{
    /* Several slabs' worth, then full. */
    const int max = 2500;
    struct px_renew_reg *g = px_renew_reg_new(max);
    char h[PX_RENEW_HANDLE_MAX];
    int err;
    for (int i = 0; i < max; i++) {
        struct px_renew_entry *e = px_renew_reg_add(g, i % 2 ? "a" : "b", "G", "T", handle(i, h, sizeof h), i, &err);
        ck_assert_msg(e != NULL, "entry %d refused: %d", i, err);
        px_renew_reg_schedule(g, e, 10 * (int64_t)(max - i));
    }
    ck_assert_uint_eq(px_renew_reg_count(g), (unsigned)max);
    ck_assert_ptr_null(px_renew_reg_add(g, "a", "G", "T", handle(max, h, sizeof h), 0, &err));
    ck_assert_int_eq(err, -ENOSPC);
    for (int i = 0; i < max; i++) {
        struct px_renew_entry *e = px_renew_reg_find(g, "G", "T", handle(i, h, sizeof h));
        ck_assert_ptr_nonnull(e);
        ck_assert_int_eq(e->received_ms, i);
    }
    /* Room again after a removal, and only one. */
    px_renew_reg_remove(g, px_renew_reg_find(g, "G", "T", handle(7, h, sizeof h)));
    ck_assert_ptr_nonnull(px_renew_reg_add(g, "a", "G", "T", handle(max, h, sizeof h), 0, &err));
    ck_assert_ptr_null(px_renew_reg_add(g, "a", "G", "T", handle(max + 1, h, sizeof h), 0, &err));
    ck_assert_int_eq(err, -ENOSPC);
    px_renew_reg_free(g);
}
END_TEST

START_TEST(deadline_order)
{
    enum { N = 500 };
    struct px_renew_reg *g = px_renew_reg_new(N);
    struct px_renew_entry *e[N];
    int64_t want[N];
    char h[PX_RENEW_HANDLE_MAX];
    srand(7);
    ck_assert_int_eq(px_renew_reg_next_deadline(g), INT64_MAX);
    ck_assert_ptr_null(px_renew_reg_pop_due(g, INT64_MAX - 1));
    for (int i = 0; i < N; i++) {
        e[i] = px_renew_reg_add(g, "c", "G", "T", handle(i, h, sizeof h), i, NULL);
        ck_assert_ptr_nonnull(e[i]);
        want[i] = 1000 + rand() % 100000;
        px_renew_reg_schedule(g, e[i], want[i]);
    }
    /* Move some later, some earlier, and take some out (what renewals,
     * retries and acks do). */
    for (int i = 0; i < N; i += 3) {
        want[i] = 1000 + rand() % 100000;
        px_renew_reg_schedule(g, e[i], want[i]);
    }
    for (int i = 1; i < N; i += 10) {
        px_renew_reg_unschedule(g, e[i]);
        ck_assert_uint_eq(e[i]->heap_pos, PX_RENEW_UNSCHEDULED);
        want[i] = -1;
    }
    for (int i = 2; i < N; i += 10) {
        px_renew_reg_remove(g, e[i]);
        want[i] = -1;
    }
    int64_t min = INT64_MAX;
    int left = 0;
    for (int i = 0; i < N; i++)
        if (want[i] >= 0) {
            left++;
            if (want[i] < min)
                min = want[i];
        }
    ck_assert_int_eq(px_renew_reg_next_deadline(g), min);
    /* Nothing before its time. */
    ck_assert_ptr_null(px_renew_reg_pop_due(g, min - 1));
    /* Then everything in deadline order, each exactly once, in two rounds. */
    int64_t last = 0;
    int got = 0;
    bool seen[N] = { false };
    struct px_renew_entry *x;
    while ((x = px_renew_reg_pop_due(g, 50000))) {
        ck_assert_int_le(x->deadline_ms, 50000);
        ck_assert_int_ge(x->deadline_ms, last);
        ck_assert_uint_eq(x->heap_pos, PX_RENEW_UNSCHEDULED);
        last = x->deadline_ms;
        int i = (int)x->received_ms;
        ck_assert_ptr_eq(e[i], x);
        ck_assert(!seen[i]);
        ck_assert_int_eq(x->deadline_ms, want[i]);
        seen[i] = true;
        got++;
    }
    ck_assert(px_renew_reg_next_deadline(g) > 50000);
    while ((x = px_renew_reg_pop_due(g, INT64_MAX - 1))) {
        ck_assert_int_ge(x->deadline_ms, last);
        last = x->deadline_ms;
        got++;
    }
    ck_assert_int_eq(got, left);
    ck_assert_int_eq(px_renew_reg_next_deadline(g), INT64_MAX);
    /* Popped entries are still registered: the renewal is in flight. */
    ck_assert_uint_eq(px_renew_reg_count(g), (unsigned)(N - N / 10));
    px_renew_reg_free(g);
}
END_TEST

static void remove_cb(struct px_renew_entry *e, void *ud)
{
    struct px_renew_reg *g = ud;
    px_renew_reg_remove(g, e);
}

static int counted;
static void count_cb(struct px_renew_entry *e, void *ud)
{
    (void)e;
    (void)ud;
    counted++;
}

START_TEST(client_gone)
{
    struct px_renew_reg *g = px_renew_reg_new(100);
    char h[30][PX_RENEW_HANDLE_MAX];
    const char *clients[3] = { "c-1", "c-2", "c-3" };
    const char *topics[2] = { "T1", "T2" };
    struct px_renew_entry *e[30];
    for (int i = 0; i < 30; i++) {
        e[i] = px_renew_reg_add(g, clients[i % 3], "G", topics[i % 2], handle(i, h[i], sizeof h[i]), 0, NULL);
        ck_assert_ptr_nonnull(e[i]);
        px_renew_reg_schedule(g, e[i], 100 + i);
    }
    /* c-2's entries go (over both topics), nobody else's. */
    ck_assert_uint_eq(px_renew_reg_client_gone(g, "c-2", remove_cb, g), 10);
    ck_assert_uint_eq(px_renew_reg_count(g), 20);
    for (int i = 0; i < 30; i++) {
        struct px_renew_entry *f = px_renew_reg_find(g, "G", topics[i % 2], h[i]);
        if (i % 3 == 1)
            ck_assert_ptr_null(f);
        else
            ck_assert_ptr_eq(f, e[i]);
    }
    ck_assert_uint_eq(px_renew_reg_client_gone(g, "c-2", remove_cb, g), 0);
    ck_assert_uint_eq(px_renew_reg_client_gone(g, "nobody", remove_cb, g), 0);
    /* An entry the callback keeps (a renewal in flight) stays until removed. */
    counted = 0;
    ck_assert_uint_eq(px_renew_reg_client_gone(g, "c-1", count_cb, NULL), 10);
    ck_assert_int_eq(counted, 10);
    ck_assert_uint_eq(px_renew_reg_count(g), 20);
    ck_assert_ptr_eq(px_renew_reg_find(g, "G", "T1", h[0]), e[0]);
    for (int i = 0; i < 30; i += 3)
        px_renew_reg_remove(g, e[i]);
    ck_assert_uint_eq(px_renew_reg_count(g), 10);
    /* The client may come back (a new session with the same id). */
    struct px_renew_entry *back = px_renew_reg_add(g, "c-1", "G", "T1", h[0], 0, NULL);
    ck_assert_ptr_nonnull(back);
    ck_assert_str_eq(px_renew_entry_client(back), "c-1");
    counted = 0;
    ck_assert_uint_eq(px_renew_reg_each(g, count_cb, NULL), 11);
    ck_assert_int_eq(counted, 11);
    ck_assert_uint_eq(px_renew_reg_each(g, remove_cb, g), 11);
    ck_assert_uint_eq(px_renew_reg_count(g), 0);
    ck_assert_int_eq(px_renew_reg_next_deadline(g), INT64_MAX);
    px_renew_reg_free(g);
}
END_TEST

START_TEST(latest_handle)
{
    struct px_renew_reg *g = px_renew_reg_new(4);
    char h[PX_RENEW_HANDLE_MAX];
    ck_assert_int_gt(px_handle_build(h, sizeof h, 17, 1700000000000, 3000, 2, '2', "broker-b", 3, 21, 998877), 0);
    struct px_renew_entry *e = px_renew_reg_add(g, "c", "G", "T", h, 0, NULL);
    ck_assert_ptr_nonnull(e);
    char cur[PX_RENEW_HANDLE_MAX];
    ck_assert_int_gt(px_renew_entry_current(e, cur, sizeof cur), 0);
    ck_assert_str_eq(cur, h);
    /* A renewal moved the check point: only popTime, invisibleTime and
     * reviveQid change; the message's coordinates stay. */
    e->pop_time = 1700000002500;
    e->invisible = 60000;
    e->revive_qid = 5;
    ck_assert_int_gt(px_renew_entry_current(e, cur, sizeof cur), 0);
    ck_assert_str_eq(cur, "17 1700000002500 60000 5 2 broker-b 3 21 998877");
    /* Lookups still use the handle the client holds. */
    ck_assert_ptr_eq(px_renew_reg_find(g, "G", "T", h), e);
    ck_assert_ptr_null(px_renew_reg_find(g, "G", "T", cur));
    ck_assert_int_eq(px_renew_entry_current(e, cur, 10), -ENOSPC);
    px_renew_reg_free(g);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("px_renew");
    TCase *tc = tcase_create("registry");
    tcase_add_test(tc, add_find_remove);
    tcase_add_test(tc, rejects);
    tcase_add_test(tc, bound);
    tcase_add_test(tc, deadline_order);
    tcase_add_test(tc, client_gone);
    tcase_add_test(tc, latest_handle);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
