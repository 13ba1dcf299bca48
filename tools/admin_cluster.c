/*
 * rmqadmin cluster commands: clusterList (cluster info from the nameserver
 * joined with each broker's runtime info), brokerStatus (a broker's runtime
 * KV table) and wipeWritePerm / addWritePerm (on every nameserver).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin.h"
#include "fastjson.h"

/* GET_BROKER_RUNTIME_INFO as the "table" object of the KVTable body. */
static json_t *runtime_table(struct adm *a, const char *addr, char *err, size_t errlen, int *rcp)
{
    char *body = NULL;
    int rc = cli_admin_broker_runtime(adm_client(a), addr, &body, err, errlen);
    *rcp = rc;
    if (rc)
        return NULL;
    json_t *j = fj_parse(body, strlen(body), err, errlen);
    free(body);
    if (!j) {
        *rcp = -EBADMSG;
        return NULL;
    }
    json_t *t = json_object_get(j, "table");
    if (!json_is_object(t)) {
        json_decref(j);
        snprintf(err, errlen, "runtime info of %s has no table", addr);
        *rcp = -EBADMSG;
        return NULL;
    }
    json_incref(t);
    json_decref(j);
    return t;
}

/* First number of a "a b c" TPS string. */
static double first_num(const json_t *t, const char *key)
{
    const char *s = fj_str(t, key);
    return s ? strtod(s, NULL) : 0.0;
}

static int cmp_broker(const void *x, const void *y)
{
    const struct adm_broker *a = x, *b = y;
    int c = strcmp(a->cluster, b->cluster);
    if (!c)
        c = strcmp(a->name, b->name);
    if (!c)
        c = a->id < b->id ? -1 : a->id > b->id;
    return c;
}

int adm_cluster_list(struct adm *a)
{
    struct adm_cluster *ci = malloc(sizeof *ci);
    if (!ci)
        return adm_fail(a, "out of memory");
    if (adm_cluster_info(a, ci)) {
        free(ci);
        return 1;
    }
    qsort(ci->b, (size_t)ci->n, sizeof ci->b[0], cmp_broker);
    static const char *const h[] = { "Cluster", "BrokerName", "BID", "Role", "Addr", "Version",
                                     "InTPS", "OutTPS", "DiskRatio", "Status" };
    tbl *tb = tbl_new(10, h);
    for (int i = 0; tb && i < ci->n; i++) {
        const struct adm_broker *b = &ci->b[i];
        char err[ADM_ERR_MAX];
        int rc;
        json_t *t = runtime_table(a, b->addr, err, sizeof err, &rc);
        tbl_str(tb, b->cluster);
        tbl_str(tb, b->name);
        tbl_int(tb, b->id);
        tbl_str(tb, b->id == CLI_MASTER_ID ? "MASTER" : "SLAVE");
        tbl_str(tb, b->addr);
        if (t) {
            const char *v = fj_str(t, "brokerVersionDesc");
            const char *d = fj_str(t, "commitLogDiskRatio");
            tbl_str(tb, v ? v : "-");
            tbl_dbl(tb, first_num(t, "putTps"), 2);
            tbl_dbl(tb, first_num(t, "getTransferedTps"), 2);
            tbl_dbl(tb, d ? strtod(d, NULL) : 0.0, 4);
            tbl_str(tb, "OK");
            json_decref(t);
        } else {
            tbl_str(tb, "-");
            tbl_str(tb, "-");
            tbl_str(tb, "-");
            tbl_str(tb, "-");
            tbl_str(tb, err);
        }
    }
    free(ci);
    if (!tb)
        return adm_fail(a, "out of memory");
    tbl_print(tb, a->json, stdout);
    tbl_free(tb);
    return 0;
}

static int cmp_key(const void *x, const void *y)
{
    return strcmp(*(const char *const *)x, *(const char *const *)y);
}

int adm_broker_status(struct adm *a)
{
    char addrs[ADM_MAX_BROKERS][CLI_ADDR_MAX];
    int n = adm_targets(a, addrs, NULL, ADM_MAX_BROKERS);
    if (n < 0)
        return 1;
    int failed = 0;
    json_t *all = a->json && n > 1 ? json_object() : NULL;
    for (int i = 0; i < n; i++) {
        char err[ADM_ERR_MAX];
        int rc;
        json_t *t = runtime_table(a, addrs[i], err, sizeof err, &rc);
        if (!t) {
            failed++;
            adm_fail(a, "runtime info of broker %s: %s", addrs[i], err);
            continue;
        }
        size_t nk = json_object_size(t), k = 0;
        const char **keys = calloc(nk ? nk : 1, sizeof *keys);
        const char *key;
        json_t *v;
        json_object_foreach(t, key, v) if (keys) keys[k++] = key;
        if (keys)
            qsort(keys, k, sizeof *keys, cmp_key);
        tbl *tb = tbl_new_kv();
        for (size_t j = 0; tb && keys && j < k; j++) {
            json_t *val = json_object_get(t, keys[j]);
            if (json_is_string(val)) {
                tbl_kv(tb, keys[j], json_string_value(val));
            } else {
                char *s = json_dumps(val, JSON_ENCODE_ANY);
                tbl_kv(tb, keys[j], s ? s : "");
                free(s);
            }
        }
        free(keys);
        if (!tb) {
            json_decref(t);
            return adm_fail(a, "out of memory");
        }
        if (all) {
            json_object_set_new(all, addrs[i], tbl_json(tb));
        } else {
            if (n > 1)
                printf("%sBroker %s\n", i ? "\n" : "", addrs[i]);
            tbl_print(tb, a->json, stdout);
        }
        tbl_free(tb);
        json_decref(t);
    }
    if (all) {
        json_dumpf(all, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        putchar('\n');
        json_decref(all);
    }
    return failed ? 1 : 0;
}

static int write_perm(struct adm *a, bool wipe)
{
    const char *name = adm_arg(a, 'b');
    cli_client *c = adm_client(a);
    if (!c)
        return 1;
    char err[ADM_ERR_MAX];
    int count = 0;
    int rc = cli_admin_write_perm(c, name, wipe, &count, err, sizeof err);
    if (rc < 0)
        return adm_fail(a, "cannot reach the nameserver %s: %s", a->ns, err);
    if (rc > 0)
        return adm_fail(a, "%s write permission of broker '%s' refused: %s", wipe ? "wiping" : "adding",
                        name, err);
    tbl *t = tbl_new_kv();
    if (!t)
        return adm_fail(a, "out of memory");
    tbl_kv(t, "Broker", name);
    tbl_kv(t, "Nameservers", a->ns);
    tbl_kv_int(t, wipe ? "WipedTopics" : "AddedTopics", count);
    tbl_print(t, a->json, stdout);
    tbl_free(t);
    if (count == 0)
        fprintf(stderr, "rmqadmin %s: warning: no topic of broker '%s' was changed (is the name right?)\n",
                a->cmd, name);
    return 0;
}

int adm_wipe_write_perm(struct adm *a) { return write_perm(a, true); }
int adm_add_write_perm(struct adm *a) { return write_perm(a, false); }
