/*
 * Helpers shared by the rmqadmin subcommands: the blocking client, the
 * cluster view, broker selection by -c/-b, route lookup with errors that
 * name the cause, one-message pulls and printing of stored records.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "admin.h"
#include "fastjson.h"
#include "message.h"

cli_client *adm_client(struct adm *a)
{
    if (a->cli)
        return a->cli;
    a->loop = ev_loop_new(EVFLAG_AUTO);
    if (!a->loop) {
        adm_fail(a, "cannot create an event loop");
        return NULL;
    }
    struct cli_opts o = { 0 };
    o.namesrv_addr = a->ns;
    o.timeout_ms = 3000;
    int err = 0;
    a->cli = cli_client_new(a->loop, &o, &err);
    if (!a->cli) {
        if (err == -EINVAL)
            adm_fail(a, "bad nameserver list '%s': expected host:port[;host:port...]", a->ns);
        else
            adm_fail(a, "cannot create the client: %s", strerror(-err));
        ev_loop_destroy(a->loop);
        a->loop = NULL;
        return NULL;
    }
    return a->cli;
}

void adm_close(struct adm *a)
{
    if (a->cli)
        cli_client_free(a->cli);
    if (a->loop)
        ev_loop_destroy(a->loop);
    a->cli = NULL;
    a->loop = NULL;
}

const char *adm_rc_name(int rc)
{
    switch (rc) {
    case RMT_RESP_SUCCESS: return "SUCCESS";
    case RMT_RESP_SYSTEM_ERROR: return "SYSTEM_ERROR";
    case RMT_RESP_SYSTEM_BUSY: return "SYSTEM_BUSY";
    case RMT_RESP_REQUEST_CODE_NOT_SUPPORTED: return "REQUEST_CODE_NOT_SUPPORTED";
    case RMT_RESP_FLUSH_DISK_TIMEOUT: return "FLUSH_DISK_TIMEOUT";
    case RMT_RESP_SLAVE_NOT_AVAILABLE: return "SLAVE_NOT_AVAILABLE";
    case RMT_RESP_FLUSH_SLAVE_TIMEOUT: return "FLUSH_SLAVE_TIMEOUT";
    case RMT_RESP_MESSAGE_ILLEGAL: return "MESSAGE_ILLEGAL";
    case RMT_RESP_SERVICE_NOT_AVAILABLE: return "SERVICE_NOT_AVAILABLE";
    case RMT_RESP_NO_PERMISSION: return "NO_PERMISSION";
    case RMT_RESP_TOPIC_NOT_EXIST: return "TOPIC_NOT_EXIST";
    case RMT_RESP_QUERY_NOT_FOUND: return "QUERY_NOT_FOUND";
    case RMT_RESP_SUBSCRIPTION_GROUP_NOT_EXIST: return "SUBSCRIPTION_GROUP_NOT_EXIST";
    case RMT_RESP_INVALID_PARAMETER: return "INVALID_PARAMETER";
    case RMT_RESP_CONSUMER_NOT_ONLINE: return "CONSUMER_NOT_ONLINE";
    case RMT_RESP_ILLEGAL_OPERATION: return "ILLEGAL_OPERATION";
    default: break;
    }
    if (rc < 0)
        return strerror(-rc);
    return "error";
}

int adm_cluster_info(struct adm *a, struct adm_cluster *out)
{
    cli_client *c = adm_client(a);
    if (!c)
        return 1;
    char err[ADM_ERR_MAX], *body = NULL;
    int rc = cli_admin_cluster_info(c, &body, err, sizeof err);
    if (rc < 0)
        return adm_fail(a, "cannot reach the nameserver %s: %s", a->ns, err);
    if (rc > 0)
        return adm_fail(a, "cluster info refused: %s", err);
    json_t *j = fj_parse(body, strlen(body), err, sizeof err);
    free(body);
    if (!j)
        return adm_fail(a, "malformed cluster info from %s: %s", a->ns, err);
    out->n = 0;
    json_t *table = json_object_get(j, "brokerAddrTable");
    const char *name;
    json_t *bd;
    json_object_foreach(table, name, bd) {
        const char *cluster = fj_str(bd, "cluster");
        json_t *addrs = json_object_get(bd, "brokerAddrs");
        const char *id;
        json_t *addr;
        json_object_foreach(addrs, id, addr) {
            if (out->n == (int)(sizeof out->b / sizeof out->b[0]) || !json_is_string(addr))
                continue;
            struct adm_broker *b = &out->b[out->n++];
            snprintf(b->name, sizeof b->name, "%s", name);
            snprintf(b->cluster, sizeof b->cluster, "%s", cluster ? cluster : "");
            b->id = strtoll(id, NULL, 10);
            snprintf(b->addr, sizeof b->addr, "%s", json_string_value(addr));
        }
    }
    json_decref(j);
    return 0;
}

int adm_targets(struct adm *a, char addrs[][CLI_ADDR_MAX], char names[][CLI_NAME_MAX], int max)
{
    const char *cluster = adm_arg(a, 'c');
    const char *addr = adm_arg(a, 'b');
    if (!cluster && !addr) {
        adm_fail(a, "give a cluster with -c or a broker address with -b");
        return -1;
    }
    if (cluster && addr) {
        adm_fail(a, "-c and -b exclude each other");
        return -1;
    }
    if (addr) {
        char host[CLI_ADDR_MAX];
        int port;
        if (strlen(addr) >= CLI_ADDR_MAX || rmt_parse_addr(addr, host, sizeof host, &port)) {
            adm_fail(a, "bad broker address '%s': expected host:port", addr);
            return -1;
        }
        snprintf(addrs[0], CLI_ADDR_MAX, "%s", addr);
        if (names) {
            names[0][0] = 0;
            struct adm_cluster *ci = malloc(sizeof *ci);
            if (ci && adm_cluster_info(a, ci) == 0)
                for (int i = 0; i < ci->n; i++)
                    if (strcmp(ci->b[i].addr, addr) == 0)
                        snprintf(names[0], CLI_NAME_MAX, "%s", ci->b[i].name);
            free(ci);
        }
        return 1;
    }
    struct adm_cluster *ci = malloc(sizeof *ci);
    if (!ci) {
        adm_fail(a, "out of memory");
        return -1;
    }
    if (adm_cluster_info(a, ci)) {
        free(ci);
        return -1;
    }
    int n = 0;
    for (int i = 0; i < ci->n && n < max; i++) {
        if (strcmp(ci->b[i].cluster, cluster) || ci->b[i].id != CLI_MASTER_ID)
            continue;
        snprintf(addrs[n], CLI_ADDR_MAX, "%s", ci->b[i].addr);
        if (names)
            snprintf(names[n], CLI_NAME_MAX, "%s", ci->b[i].name);
        n++;
    }
    free(ci);
    if (n == 0) {
        adm_fail(a, "cluster '%s' has no master broker registered on %s", cluster, a->ns);
        return -1;
    }
    return n;
}

struct cli_route *adm_route(struct adm *a, const char *topic)
{
    cli_client *c = adm_client(a);
    if (!c)
        return NULL;
    struct cli_route *r = NULL;
    char err[ADM_ERR_MAX];
    int rc = cli_route_get_sync(c, topic, &r, err, sizeof err);
    if (rc == -ENOENT) {
        adm_fail(a, "topic '%s' does not exist (no route on %s)", topic, a->ns);
        return NULL;
    }
    if (rc) {
        adm_fail(a, "cannot get the route of '%s' from nameserver %s: %s", topic, a->ns, err);
        return NULL;
    }
    return r;
}

struct pull_one {
    bool done;
    int rc;
    int64_t offset;
    uint8_t *rec;
    size_t len;
    char *err;
    size_t errlen;
};

static void pull_one_cb(const struct cli_pull_result *r, void *ud)
{
    struct pull_one *p = ud;
    p->done = true;
    if (r->err) {
        p->rc = r->err < 0 ? r->err : -EPROTO;
        snprintf(p->err, p->errlen, "%s", r->errmsg[0] ? r->errmsg : strerror(-p->rc));
        return;
    }
    if (r->status != CLI_PULL_FOUND) {
        p->rc = 1;
        snprintf(p->err, p->errlen, "no message at offset %lld (queue holds %lld..%lld)",
                 (long long)p->offset, (long long)r->min_offset, (long long)r->max_offset - 1);
        return;
    }
    size_t pos = 0;
    while (pos < r->body_len) {
        struct msg_record m;
        int n = msg_record_decode(r->body + pos, r->body_len - pos, &m, 0);
        if (n <= 0)
            break;
        if (m.queue_offset == p->offset) {
            p->rec = malloc((size_t)n);
            if (!p->rec) {
                p->rc = -ENOMEM;
                snprintf(p->err, p->errlen, "out of memory");
                return;
            }
            memcpy(p->rec, r->body + pos, (size_t)n);
            p->len = (size_t)n;
            p->rc = 0;
            return;
        }
        pos += (size_t)n;
    }
    p->rc = 1;
    snprintf(p->err, p->errlen, "no message at offset %lld in the pulled batch", (long long)p->offset);
}

int adm_pull_one(struct adm *a, const char *addr, const char *topic, int queue_id, int64_t offset,
                 uint8_t **rec, size_t *rec_len, char *err, size_t errlen)
{
    cli_client *c = adm_client(a);
    if (!c) {
        snprintf(err, errlen, "no client");
        return -EINVAL;
    }
    struct pull_one p = { .offset = offset, .err = err, .errlen = errlen };
    struct cli_pull_req q = { 0 };
    q.group = "TOOLS_CONSUMER";
    q.topic = topic;
    q.queue_id = queue_id;
    q.offset = offset;
    q.max_msgs = 1;
    q.commit_offset = -1;
    rmt_cmd cmd;
    cli_cmd_init(c, &cmd, RMT_REQ_PULL_MESSAGE);
    int rc = cli_pull(c, addr, &q, &cmd, pull_one_cb, &p);
    if (rc) {
        rmt_cmd_destroy(&cmd);
        snprintf(err, errlen, "cannot send the pull to %s: %s", addr, strerror(-rc));
        return rc;
    }
    cli_run_until(c, &p.done);
    rmt_cmd_destroy(&cmd);
    *rec = p.rec;
    *rec_len = p.len;
    return p.rc;
}

void adm_fmt_time(int64_t ms, char *out, size_t cap)
{
    time_t s = (time_t)(ms / 1000);
    struct tm tm;
    if (ms <= 0 || !localtime_r(&s, &tm)) {
        snprintf(out, cap, "%lld", (long long)ms);
        return;
    }
    char tmp[32];
    strftime(tmp, sizeof tmp, "%Y-%m-%d %H:%M:%S", &tm);
    snprintf(out, cap, "%s.%03d", tmp, (int)(ms % 1000));
}

int adm_parse_time(const char *s, int64_t *out)
{
    if (strcmp(s, "now") == 0) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        *out = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
        return 0;
    }
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (!errno && end != s && *end == 0 && v >= 0) {
        *out = v;
        return 0;
    }
    struct tm tm = { 0 };
    int ms = 0;
    if (sscanf(s, "%4d-%2d-%2d#%2d:%2d:%2d:%3d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
               &tm.tm_min, &tm.tm_sec, &ms) != 7)
        return -EINVAL;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    tm.tm_isdst = -1;
    time_t t = mktime(&tm);
    if (t == (time_t)-1)
        return -EINVAL;
    *out = (int64_t)t * 1000 + ms;
    return 0;
}

static void fmt_host(const struct msg_host *h, char *out, size_t cap)
{
    if (h->v6) {
        snprintf(out, cap, "[%02x%02x:%02x%02x:...]:%u", h->ip[0], h->ip[1], h->ip[2], h->ip[3],
                 h->port);
        return;
    }
    snprintf(out, cap, "%u.%u.%u.%u:%u", h->ip[0], h->ip[1], h->ip[2], h->ip[3], h->port);
}

static void prop_str(const struct msg_record *m, const char *name, char *out, size_t cap)
{
    const char *v;
    size_t vl;
    if (msg_prop_get(m->props, m->props_len, name, &v, &vl))
        snprintf(out, cap, "%.*s", (int)vl, v);
    else
        out[0] = 0;
}

int adm_record_table(struct adm *a, const uint8_t *rec, size_t len, const char *broker, tbl **out)
{
    struct msg_record m;
    if (msg_record_decode(rec, len, &m, 0) <= 0)
        return adm_fail(a, "the broker returned a malformed message record");
    tbl *t = tbl_new_kv();
    if (!t)
        return adm_fail(a, "out of memory");
    char tmp[512], id[MSG_OFFSET_ID_MAX];
    snprintf(tmp, sizeof tmp, "%.*s", (int)m.topic_len, m.topic);
    tbl_kv(t, "Topic", tmp);
    prop_str(&m, MSG_PROP_TAGS, tmp, sizeof tmp);
    tbl_kv(t, "Tags", tmp);
    prop_str(&m, MSG_PROP_KEYS, tmp, sizeof tmp);
    tbl_kv(t, "Keys", tmp);
    prop_str(&m, MSG_PROP_UNIQ_CLIENT_MESSAGE_ID_KEYIDX, tmp, sizeof tmp);
    tbl_kv(t, "Msg Id", tmp);
    msg_offset_id_encode(&m.store_host, m.phys_offset, id);
    tbl_kv(t, "Offset Msg Id", id);
    if (broker)
        tbl_kv(t, "Broker", broker);
    tbl_kv_int(t, "Queue ID", m.queue_id);
    tbl_kv_int(t, "Queue Offset", m.queue_offset);
    tbl_kv_int(t, "CommitLog Offset", m.phys_offset);
    tbl_kv_int(t, "Reconsume Times", m.reconsume_times);
    adm_fmt_time(m.born_ts, tmp, sizeof tmp);
    tbl_kv(t, "Born Timestamp", tmp);
    adm_fmt_time(m.store_ts, tmp, sizeof tmp);
    tbl_kv(t, "Store Timestamp", tmp);
    fmt_host(&m.born_host, tmp, sizeof tmp);
    tbl_kv(t, "Born Host", tmp);
    fmt_host(&m.store_host, tmp, sizeof tmp);
    tbl_kv(t, "Store Host", tmp);
    tbl_kv_int(t, "System Flag", m.sysflag);
    struct buf props = BUF_INIT;
    size_t pos = 0;
    const char *n, *v;
    size_t nl, vl;
    int prc = buf_append_u8(&props, '{');
    bool first = true;
    while (!prc && msg_prop_next(m.props, m.props_len, &pos, &n, &nl, &v, &vl) == 1) {
        prc = buf_printf(&props, "%s%.*s=%.*s", first ? "" : ", ", (int)nl, n, (int)vl, v);
        first = false;
    }
    if (!prc)
        prc = buf_append(&props, "}", 2);
    tbl_kv(t, "Properties", prc ? "" : (const char *)props.data);
    buf_free(&props);
    tbl_kv_int(t, "Body Length", m.body_len);
    bool printable = !(m.sysflag & MSG_SYSFLAG_COMPRESSED);
    for (uint32_t i = 0; i < m.body_len && printable; i++)
        if (!isprint(m.body[i]) && m.body[i] != '\n' && m.body[i] != '\t' && m.body[i] < 0x80)
            printable = false;
    char *body = malloc((size_t)m.body_len * 2 + 1);
    if (body) {
        if (printable) {
            memcpy(body, m.body, m.body_len);
            body[m.body_len] = 0;
        } else {
            for (uint32_t i = 0; i < m.body_len; i++)
                sprintf(body + 2 * i, "%02x", m.body[i]);
            body[2 * (size_t)m.body_len] = 0;
        }
        tbl_kv(t, printable ? "Body" : "Body (hex)", body);
        free(body);
    }
    *out = t;
    return 0;
}

int adm_print_record(struct adm *a, const uint8_t *rec, size_t len, const char *broker)
{
    tbl *t = NULL;
    if (adm_record_table(a, rec, len, broker, &t))
        return 1;
    int rc = tbl_print(t, a->json, stdout);
    tbl_free(t);
    return rc ? adm_fail(a, "cannot print: %s", strerror(-rc)) : 0;
}
