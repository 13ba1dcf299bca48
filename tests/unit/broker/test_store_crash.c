/* Crash test: a child process does SYNC_FLUSH puts and reports every
 * acknowledged one through a pipe; the parent kills it with SIGKILL at a
 * random point and checks that every acknowledged message survives. */
#include "store_test_util.h"

#include <check.h>
#include <signal.h>
#include <sys/wait.h>

#include "message.h"

struct ack {
    int32_t i;
    int64_t phys;
};

static void body_of(int i, char *b, size_t n)
{
    for (size_t k = 0; k < n; k++)
        b[k] = (char)('A' + (i * 7 + (int)k) % 26);
    snprintf(b, n, "crash-%d-", i);
}

static void child(const char *root, int wfd)
{
    struct store_config c;
    small_config(&c, root);
    c.flush_type = STORE_SYNC_FLUSH;
    struct store *s;
    if (store_open(&c, &s) != 0)
        _exit(2);
    char body[700];
    for (int i = 0;; i++) {
        body_of(i, body, sizeof(body));
        struct store_msg m;
        char key[32], props[64];
        size_t plen = 0;
        snprintf(key, sizeof(key), "k%d", i);
        msg_prop_append(props, sizeof(props), &plen, MSG_PROP_KEYS, key, strlen(key));
        fill_msg(&m, "Crash", 0, body, sizeof(body), props, (uint32_t)plen);
        struct store_put_result r;
        if (store_put_wait(s, &m, &r) != STORE_PUT_OK)
            _exit(3);
        struct ack a = { i, r.phys_offset };
        if (write(wfd, &a, sizeof(a)) != (ssize_t)sizeof(a))
            _exit(4);
    }
}

static void run_round(int kill_after)
{
    char *root = make_tmp();
    int pfd[2];
    ck_assert_int_eq(pipe(pfd), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        close(pfd[0]);
        log_set_stderr(0);
        child(root, pfd[1]);
    }
    close(pfd[1]);
    struct ack *acks = calloc(100000, sizeof(*acks));
    size_t n = 0;
    while (n < 100000) {
        if ((int)n == kill_after)
            kill(pid, SIGKILL);
        ssize_t r = read(pfd[0], &acks[n], sizeof(acks[n]));
        if (r == 0)
            break;
        ck_assert_int_eq(r, (ssize_t)sizeof(acks[n]));
        n++;
    }
    close(pfd[0]);
    int status;
    waitpid(pid, &status, 0);
    ck_assert(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    ck_assert_uint_ge(n, (size_t)kill_after);

    struct store_config c;
    small_config(&c, root);
    struct store *s;
    ck_assert_int_eq(store_open(&c, &s), 0);
    wait_dispatch(s);
    ck_assert_int_ge(store_max_queue_offset(s, "Crash", 0), (int64_t)n);
    char body[700];
    for (size_t k = 0; k < n; k++) {
        struct store_hold h = STORE_HOLD_INIT;
        struct store_view v;
        ck_assert_int_eq(store_lookup(s, acks[k].phys, &v, &h), STORE_LOOKUP_OK);
        struct msg_record rec;
        ck_assert_int_gt(msg_record_decode(v.data, v.len, &rec, 1), 0);
        ck_assert_int_eq(rec.queue_offset, acks[k].i);
        body_of(acks[k].i, body, sizeof(body));
        ck_assert_mem_eq(rec.body, body, sizeof(body));
        store_hold_release(&h);
    }
    /* the queue is consistent with the log after recovery */
    struct store_view v[32];
    int64_t off = 0, seen = 0;
    for (;;) {
        struct store_get_req req = { "Crash", 0, off, 32, 0, NULL, NULL, v };
        struct store_get_result res;
        if (store_get(s, &req, &res) != STORE_GET_FOUND) {
            store_hold_release(&res.hold);
            break;
        }
        for (uint32_t i = 0; i < res.count; i++) {
            struct msg_record rec;
            ck_assert_int_gt(msg_record_decode(v[i].data, v[i].len, &rec, 1), 0);
            ck_assert_int_eq(rec.queue_offset, seen);
            seen++;
        }
        off = res.next_begin_offset;
        store_hold_release(&res.hold);
    }
    ck_assert_int_eq(seen, store_max_queue_offset(s, "Crash", 0));
    store_close(s);
    free(acks);
    rm_rf(root);
    free(root);
}

START_TEST(sigkill_during_sync_puts)
{
    srand((unsigned)time(NULL));
    run_round(150 + rand() % 300);
    run_round(1 + rand() % 50);
}
END_TEST

int main(void)
{
    Suite *su = suite_create("store_crash");
    TCase *tc = tcase_create("crash");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, sigkill_during_sync_puts);
    suite_add_tcase(su, tc);
    SRunner *sr = srunner_create(su);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
