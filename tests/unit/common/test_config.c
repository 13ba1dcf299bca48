/* Unit tests for the YAML configuration loader (common/config.c). */
#include <check.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"

struct settings {
    int64_t listenPort;
    bool autoCreateTopicEnable;
    char brokerClusterName[16];
    char namesrvAddr[64];
    int brokerRole;
    double diskMaxUsedSpaceRatio;
    int64_t offsetDelta;
    int untouched;
};

static const char *const roles[] = { "ASYNC_MASTER", "SYNC_MASTER", "SLAVE", NULL };

static const struct cfg_key keys[] = {
    { .name = "listenPort", .type = CFG_INT, .offset = offsetof(struct settings, listenPort),
      .min = 1, .max = 65535, .def = "10911", .help = "TCP port | remoting" },
    { .name = "autoCreateTopicEnable", .type = CFG_BOOL,
      .offset = offsetof(struct settings, autoCreateTopicEnable), .def = "true",
      .help = "create topics on first send" },
    { .name = "brokerClusterName", .type = CFG_STRING,
      .offset = offsetof(struct settings, brokerClusterName),
      .size = sizeof(((struct settings *)0)->brokerClusterName), .def = "DefaultCluster",
      .help = "cluster name" },
    { .name = "namesrvAddr", .type = CFG_STRING, .offset = offsetof(struct settings, namesrvAddr),
      .size = sizeof(((struct settings *)0)->namesrvAddr), .def = NULL,
      .help = "name servers" },
    { .name = "brokerRole", .type = CFG_ENUM, .offset = offsetof(struct settings, brokerRole),
      .enum_values = roles, .def = "ASYNC_MASTER", .help = "replication role" },
    { .name = "diskMaxUsedSpaceRatio", .type = CFG_DOUBLE,
      .offset = offsetof(struct settings, diskMaxUsedSpaceRatio), .dmin = 0.1, .dmax = 0.95,
      .def = "0.75", .help = "disk usage limit" },
    { .name = "offsetDelta", .type = CFG_INT, .offset = offsetof(struct settings, offsetDelta),
      .def = "-5", .help = "unbounded integer" },
    CFG_END,
};

static char tmp_path[64];

/* Writes text to a fresh temporary file and returns its path. */
static const char *write_tmp(const char *text)
{
    snprintf(tmp_path, sizeof tmp_path, "/tmp/test_config_XXXXXX");
    int fd = mkstemp(tmp_path);
    ck_assert_int_ge(fd, 0);
    size_t len = strlen(text);
    ck_assert_int_eq(write(fd, text, len), (ssize_t)len);
    close(fd);
    return tmp_path;
}

static void defaults(struct settings *s)
{
    char err[256] = "";
    memset(s, 0xA5, sizeof *s);
    s->untouched = 42;
    ck_assert_int_eq(cfg_defaults(keys, s, err, sizeof err), 0);
}

/* Loads text and expects failure with "PATH:" + suffix as the exact message,
 * and the settings left as they were. */
static void expect_file_error(const char *text, const char *suffix)
{
    struct settings s, before;
    defaults(&s);
    memcpy(&before, &s, sizeof s);
    const char *path = write_tmp(text);
    char err[512] = "";
    ck_assert_int_eq(cfg_load_file(keys, &s, path, err, sizeof err), -1);
    char want[512];
    snprintf(want, sizeof want, "%s:%s", path, suffix);
    ck_assert_str_eq(err, want);
    ck_assert_mem_eq(&s, &before, sizeof s);
    unlink(path);
}

START_TEST(test_defaults)
{
    struct settings s;
    defaults(&s);
    ck_assert_int_eq(s.listenPort, 10911);
    ck_assert(s.autoCreateTopicEnable);
    ck_assert_str_eq(s.brokerClusterName, "DefaultCluster");
    ck_assert_str_eq(s.namesrvAddr, "");
    ck_assert_int_eq(s.brokerRole, 0);
    ck_assert_double_eq_tol(s.diskMaxUsedSpaceRatio, 0.75, 1e-12);
    ck_assert_int_eq(s.offsetDelta, -5);
    ck_assert_int_eq(s.untouched, 42);
}
END_TEST

START_TEST(test_bad_default)
{
    static const struct cfg_key bad[] = {
        { .name = "listenPort", .type = CFG_INT, .offset = 0, .min = 1, .max = 10, .def = "11" },
        CFG_END,
    };
    int64_t v = 0;
    char err[256];
    ck_assert_int_eq(cfg_defaults(bad, &v, err, sizeof err), -1);
    ck_assert_str_eq(err, "default: listenPort: value 11 out of range [1, 10]");
}
END_TEST

START_TEST(test_file_values)
{
    struct settings s;
    defaults(&s);
    const char *path = write_tmp("# broker settings\n"
                                 "listenPort: 20911\n"
                                 "autoCreateTopicEnable: OFF\n"
                                 "brokerClusterName: \"ClusterB\"\n"
                                 "namesrvAddr: 10.0.0.1:9876;10.0.0.2:9876\n"
                                 "brokerRole: SLAVE\n"
                                 "diskMaxUsedSpaceRatio: 0.9\n"
                                 "offsetDelta: '+17'\n");
    char err[256] = "";
    ck_assert_int_eq(cfg_load_file(keys, &s, path, err, sizeof err), 0);
    ck_assert_int_eq(s.listenPort, 20911);
    ck_assert(!s.autoCreateTopicEnable);
    ck_assert_str_eq(s.brokerClusterName, "ClusterB");
    ck_assert_str_eq(s.namesrvAddr, "10.0.0.1:9876;10.0.0.2:9876");
    ck_assert_int_eq(s.brokerRole, 2);
    ck_assert_double_eq_tol(s.diskMaxUsedSpaceRatio, 0.9, 1e-12);
    ck_assert_int_eq(s.offsetDelta, 17);
    ck_assert_int_eq(s.untouched, 42);
    unlink(path);
}
END_TEST

START_TEST(test_booleans)
{
    static const char *const t[] = { "true", "TRUE", "yes", "Yes", "on", "On", "1" };
    static const char *const f[] = { "false", "False", "no", "NO", "off", "oFF", "0" };
    struct settings s;
    defaults(&s);
    char err[256], a[64];
    for (size_t i = 0; i < 7; i++) {
        snprintf(a, sizeof a, "autoCreateTopicEnable=%s", f[i]);
        ck_assert_int_eq(cfg_set(keys, &s, a, err, sizeof err), 0);
        ck_assert(!s.autoCreateTopicEnable);
        snprintf(a, sizeof a, "autoCreateTopicEnable=%s", t[i]);
        ck_assert_int_eq(cfg_set(keys, &s, a, err, sizeof err), 0);
        ck_assert(s.autoCreateTopicEnable);
    }
    ck_assert_int_eq(cfg_set(keys, &s, "autoCreateTopicEnable=2", err, sizeof err), -1);
    ck_assert_str_eq(err, "--set autoCreateTopicEnable: expected a boolean (true/false, yes/no, "
                          "on/off, 1/0), got '2'");
    ck_assert(s.autoCreateTopicEnable);
}
END_TEST

START_TEST(test_empty_file)
{
    struct settings s, before;
    defaults(&s);
    memcpy(&before, &s, sizeof s);
    char err[256] = "";
    const char *texts[] = { "", "# only a comment\n\n", "---\n", "---\n...\n" };
    for (size_t i = 0; i < 4; i++) {
        const char *path = write_tmp(texts[i]);
        ck_assert_msg(cfg_load_file(keys, &s, path, err, sizeof err) == 0, "%s", err);
        ck_assert_mem_eq(&s, &before, sizeof s);
        unlink(path);
    }
}
END_TEST

START_TEST(test_unknown_key)
{
    expect_file_error("listenPort: 1\nbrokerClusterName: a\nlistenPortt: 3\n",
                      "3: listenPortt: unknown key");
    expect_file_error("listenport: 3\n", "1: listenport: unknown key (did you mean listenPort?)");
}
END_TEST

START_TEST(test_wrong_type)
{
    expect_file_error("brokerClusterName: a\nlistenPort: abc\n",
                      "2: listenPort: expected an integer, got 'abc'");
    expect_file_error("listenPort: 12.5\n", "1: listenPort: expected an integer, got '12.5'");
    expect_file_error("listenPort: 0x10\n", "1: listenPort: expected an integer, got '0x10'");
    expect_file_error("listenPort:\n", "1: listenPort: expected an integer, got ''");
    expect_file_error("autoCreateTopicEnable: maybe\n",
                      "1: autoCreateTopicEnable: expected a boolean (true/false, yes/no, on/off, "
                      "1/0), got 'maybe'");
    expect_file_error("diskMaxUsedSpaceRatio: 0.5x\n",
                      "1: diskMaxUsedSpaceRatio: expected a number, got '0.5x'");
    expect_file_error("diskMaxUsedSpaceRatio: ''\n",
                      "1: diskMaxUsedSpaceRatio: expected a number, got ''");
}
END_TEST

START_TEST(test_out_of_range)
{
    expect_file_error("listenPort: 70000\n", "1: listenPort: value 70000 out of range [1, 65535]");
    expect_file_error("listenPort: -1\n", "1: listenPort: value -1 out of range [1, 65535]");
    expect_file_error("\n\ndiskMaxUsedSpaceRatio: 0.99\n",
                      "3: diskMaxUsedSpaceRatio: value 0.99 out of range [0.1, 0.95]");
    expect_file_error("diskMaxUsedSpaceRatio: nan\n",
                      "1: diskMaxUsedSpaceRatio: number 'nan' is not finite or not representable");
    expect_file_error("offsetDelta: 99999999999999999999\n",
                      "1: offsetDelta: integer '99999999999999999999' overflows 64 bits");
    expect_file_error("offsetDelta: -9223372036854775809\n",
                      "1: offsetDelta: integer '-9223372036854775809' overflows 64 bits");

    struct settings s;
    defaults(&s);
    char err[256];
    ck_assert_int_eq(cfg_set(keys, &s, "offsetDelta=-9223372036854775808", err, sizeof err), 0);
    ck_assert_int_eq(s.offsetDelta, INT64_MIN);
    ck_assert_int_eq(cfg_set(keys, &s, "offsetDelta=9223372036854775807", err, sizeof err), 0);
    ck_assert_int_eq(s.offsetDelta, INT64_MAX);
}
END_TEST

START_TEST(test_duplicate_key)
{
    expect_file_error("listenPort: 1\nbrokerRole: SLAVE\nlistenPort: 2\n",
                      "3: listenPort: duplicate key (first set on line 1)");
}
END_TEST

START_TEST(test_non_scalar)
{
    expect_file_error("namesrvAddr: [a, b]\n", "1: namesrvAddr: value must be a scalar, got a sequence");
    expect_file_error("namesrvAddr:\n  host: a\n",
                      "2: namesrvAddr: value must be a scalar, got a mapping");
    expect_file_error("brokerClusterName: &x a\nnamesrvAddr: *x\n",
                      "2: namesrvAddr: value must be a scalar, got an alias");
    expect_file_error("- listenPort\n- 1\n", "1: the file must be a mapping of key: value pairs");
    expect_file_error("just text\n", "1: the file must be a mapping of key: value pairs");
    expect_file_error("[a]: 1\n", "1: keys must be plain names, got a sequence");
    expect_file_error("listenPort: 1\n---\nlistenPort: 2\n", "2: only one YAML document is allowed");
}
END_TEST

START_TEST(test_string_too_long)
{
    expect_file_error("brokerClusterName: abcdefghijklmnop\n",
                      "1: brokerClusterName: string too long (16 bytes, at most 15)");
    expect_file_error("brokerClusterName: \"a\\0b\"\n",
                      "1: brokerClusterName: value contains a NUL byte");
    struct settings s;
    defaults(&s);
    char err[256];
    ck_assert_int_eq(cfg_set(keys, &s, "brokerClusterName=abcdefghijklmno", err, sizeof err), 0);
    ck_assert_str_eq(s.brokerClusterName, "abcdefghijklmno");
}
END_TEST

START_TEST(test_bad_enum)
{
    expect_file_error("brokerRole: MASTER\n",
                      "1: brokerRole: invalid value 'MASTER' (allowed: ASYNC_MASTER, SYNC_MASTER, "
                      "SLAVE)");
    expect_file_error("brokerRole: slave\n",
                      "1: brokerRole: invalid value 'slave' (allowed: ASYNC_MASTER, SYNC_MASTER, "
                      "SLAVE)");
}
END_TEST

START_TEST(test_malformed_yaml)
{
    expect_file_error("listenPort: 1\nbrokerRole: SLAVE\n- x\n",
                      "3: invalid YAML: did not find expected key while parsing a block mapping "
                      "(line 1)");
    expect_file_error("brokerClusterName: a\n  brokerRole: SLAVE\n",
                      "2: invalid YAML: mapping values are not allowed in this context");
    expect_file_error("brokerClusterName: \"abc\n",
                      "2: invalid YAML: found unexpected end of stream while scanning a quoted "
                      "scalar (line 1)");
    expect_file_error("brokerClusterName: \xff\xfe\n",
                      " invalid YAML: invalid leading UTF-8 octet at byte 19");
}
END_TEST

START_TEST(test_missing_file)
{
    struct settings s;
    defaults(&s);
    char err[256];
    ck_assert_int_eq(cfg_load_file(keys, &s, "/nonexistent/dir/broker.yaml", err, sizeof err), -1);
    ck_assert_str_eq(err, "/nonexistent/dir/broker.yaml: cannot open: No such file or directory");
    ck_assert_int_eq(cfg_load_file(keys, &s, "/tmp", err, sizeof err), -1);
    ck_assert_str_eq(err, "/tmp: cannot open: Is a directory");

    char *argv[] = { "broker", "-c", "/nonexistent/b.yaml", NULL };
    ck_assert_int_eq(cfg_parse_args(keys, &s, "broker", 3, argv, err, sizeof err), -1);
    ck_assert_str_eq(err, "/nonexistent/b.yaml: cannot open: No such file or directory");
}
END_TEST

START_TEST(test_set)
{
    struct settings s;
    defaults(&s);
    char err[256];
    ck_assert_int_eq(cfg_set(keys, &s, "namesrvAddr=a=b", err, sizeof err), 0);
    ck_assert_str_eq(s.namesrvAddr, "a=b");
    ck_assert_int_eq(cfg_set(keys, &s, "namesrvAddr=", err, sizeof err), 0);
    ck_assert_str_eq(s.namesrvAddr, "");

    ck_assert_int_eq(cfg_set(keys, &s, "listenPort=0", err, sizeof err), -1);
    ck_assert_str_eq(err, "--set listenPort: value 0 out of range [1, 65535]");
    ck_assert_int_eq(s.listenPort, 10911);
    ck_assert_int_eq(cfg_set(keys, &s, "listenPort= 5", err, sizeof err), -1);
    ck_assert_str_eq(err, "--set listenPort: expected an integer, got ' 5'");
    ck_assert_int_eq(cfg_set(keys, &s, "listenPort", err, sizeof err), -1);
    ck_assert_str_eq(err, "--set 'listenPort': expected key=value");
    ck_assert_int_eq(cfg_set(keys, &s, "=5", err, sizeof err), -1);
    ck_assert_str_eq(err, "--set '=5': expected key=value");
    ck_assert_int_eq(cfg_set(keys, &s, "nope=1", err, sizeof err), -1);
    ck_assert_str_eq(err, "--set nope: unknown key");
}
END_TEST

START_TEST(test_args_order)
{
    const char *path = write_tmp("listenPort: 20000\nbrokerClusterName: FromFile\nbrokerRole: SLAVE\n");
    struct settings s;
    memset(&s, 0, sizeof s);
    char err[256] = "";
    /* --set before -c on the line still beats the file; later --set beats earlier. */
    char *argv[] = { "broker", "--set", "listenPort=30000", "-c", (char *)path,
                     "--set=brokerRole=SYNC_MASTER", "--set", "listenPort=30001", NULL };
    ck_assert_msg(cfg_parse_args(keys, &s, "broker", 8, argv, err, sizeof err) == 0, "%s", err);
    ck_assert_int_eq(s.listenPort, 30001);
    ck_assert_str_eq(s.brokerClusterName, "FromFile");
    ck_assert_int_eq(s.brokerRole, 1);
    ck_assert_double_eq_tol(s.diskMaxUsedSpaceRatio, 0.75, 1e-12);

    char *argv2[] = { "broker", "--config", (char *)path, NULL };
    ck_assert_int_eq(cfg_parse_args(keys, &s, "broker", 3, argv2, err, sizeof err), 0);
    ck_assert_int_eq(s.listenPort, 20000);

    char *argv3[] = { "broker", NULL };
    ck_assert_int_eq(cfg_parse_args(keys, &s, "broker", 1, argv3, err, sizeof err), 0);
    ck_assert_int_eq(s.listenPort, 10911);
    ck_assert_str_eq(s.brokerClusterName, "DefaultCluster");
    unlink(path);
}
END_TEST

START_TEST(test_args_errors)
{
    struct settings s;
    char err[256];
    char *a1[] = { "broker", "--bogus", NULL };
    ck_assert_int_eq(cfg_parse_args(keys, &s, "broker", 2, a1, err, sizeof err), -1);
    ck_assert_str_eq(err, "unrecognised argument '--bogus' (try --help)");
    char *a2[] = { "broker", "-c", NULL };
    ck_assert_int_eq(cfg_parse_args(keys, &s, "broker", 2, a2, err, sizeof err), -1);
    ck_assert_str_eq(err, "-c: missing file name");
    char *a3[] = { "broker", "--set", NULL };
    ck_assert_int_eq(cfg_parse_args(keys, &s, "broker", 2, a3, err, sizeof err), -1);
    ck_assert_str_eq(err, "--set: missing key=value");
    char *a4[] = { "broker", "--set", "listenPort=x", NULL };
    ck_assert_int_eq(cfg_parse_args(keys, &s, "broker", 3, a4, err, sizeof err), -1);
    ck_assert_str_eq(err, "--set listenPort: expected an integer, got 'x'");
    char *a5[] = { "broker", "-c", "a.yaml", "-c", "b.yaml", NULL };
    ck_assert_int_eq(cfg_parse_args(keys, &s, "broker", 5, a5, err, sizeof err), -1);
    ck_assert_str_eq(err, "-c: only one config file may be given (already have a.yaml)");
    char *a6[] = { "broker", "extra", NULL };
    ck_assert_int_eq(cfg_parse_args(keys, &s, "broker", 2, a6, err, sizeof err), -1);
    ck_assert_str_eq(err, "unrecognised argument 'extra' (try --help)");
}
END_TEST

/* Runs cfg_parse_args with stdout redirected to a file; returns what was printed. */
static char *capture_help(char **argv, int argc, int *rc)
{
    char path[] = "/tmp/test_config_out_XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    fflush(stdout);
    int saved = dup(STDOUT_FILENO);
    ck_assert_int_ge(saved, 0);
    ck_assert_int_ge(dup2(fd, STDOUT_FILENO), 0);
    struct settings s;
    char err[256];
    *rc = cfg_parse_args(keys, &s, "rmq-broker", argc, argv, err, sizeof err);
    fflush(stdout);
    dup2(saved, STDOUT_FILENO);
    close(saved);
    off_t len = lseek(fd, 0, SEEK_END);
    char *text = calloc(1, (size_t)len + 1);
    ck_assert_ptr_nonnull(text);
    ck_assert_int_eq(pread(fd, text, (size_t)len, 0), len);
    close(fd);
    unlink(path);
    return text;
}

START_TEST(test_help)
{
    int rc;
    char *argv[] = { "rmq-broker", "--set", "listenPort=1", "--help", "--bogus", NULL };
    char *out = capture_help(argv, 5, &rc);
    ck_assert_int_eq(rc, 1);
    ck_assert_ptr_nonnull(strstr(out, "Usage: rmq-broker [-c FILE] [--set key=value]... [-h]\n"));
    ck_assert_ptr_nonnull(strstr(out, "| Key | Type | Default | Description |\n"));
    ck_assert_ptr_nonnull(
        strstr(out, "| `listenPort` | int [1, 65535] | `10911` | TCP port \\| remoting |\n"));
    ck_assert_ptr_nonnull(strstr(out, "| `namesrvAddr` | string (max 63) | (empty) | name servers |\n"));
    ck_assert_ptr_nonnull(strstr(out, "| `brokerRole` | one of: ASYNC_MASTER, SYNC_MASTER, SLAVE | "
                                      "`ASYNC_MASTER` | replication role |\n"));
    free(out);

    char *argv2[] = { "rmq-broker", "-h", NULL };
    out = capture_help(argv2, 2, &rc);
    ck_assert_int_eq(rc, 1);
    ck_assert_ptr_nonnull(strstr(out, "| `diskMaxUsedSpaceRatio` | number [0.1, 0.95] | `0.75` |"));
    free(out);
}
END_TEST

START_TEST(test_dump)
{
    struct settings s;
    defaults(&s);
    char err[256];
    ck_assert_int_eq(cfg_set(keys, &s, "namesrvAddr=127.0.0.1:9876", err, sizeof err), 0);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    ck_assert_ptr_nonnull(f);
    cfg_dump(keys, &s, f);
    fclose(f);
    ck_assert_str_eq(buf, "listenPort = 10911\n"
                          "autoCreateTopicEnable = true\n"
                          "brokerClusterName = DefaultCluster\n"
                          "namesrvAddr = 127.0.0.1:9876\n"
                          "brokerRole = ASYNC_MASTER\n"
                          "diskMaxUsedSpaceRatio = 0.75\n"
                          "offsetDelta = -5\n");
    free(buf);
}
END_TEST

static Suite *config_suite(void)
{
    Suite *s = suite_create("config");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_defaults);
    tcase_add_test(tc, test_bad_default);
    tcase_add_test(tc, test_file_values);
    tcase_add_test(tc, test_booleans);
    tcase_add_test(tc, test_empty_file);
    tcase_add_test(tc, test_unknown_key);
    tcase_add_test(tc, test_wrong_type);
    tcase_add_test(tc, test_out_of_range);
    tcase_add_test(tc, test_duplicate_key);
    tcase_add_test(tc, test_non_scalar);
    tcase_add_test(tc, test_string_too_long);
    tcase_add_test(tc, test_bad_enum);
    tcase_add_test(tc, test_malformed_yaml);
    tcase_add_test(tc, test_missing_file);
    tcase_add_test(tc, test_set);
    tcase_add_test(tc, test_args_order);
    tcase_add_test(tc, test_args_errors);
    tcase_add_test(tc, test_help);
    tcase_add_test(tc, test_dump);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(config_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
