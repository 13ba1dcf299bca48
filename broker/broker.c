/*
 * Helpers shared by the broker's request processors: field parsing with
 * errors that name the field, the reusable response command, permission
 * checks and RocketMQ's topic / subscription-group auto-creation rules
 * (TopicConfigManager.createTopicInSendMessageMethod and friends).
 */
#include "broker.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "registrar.h"

int64_t brk_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t brk_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

rmt_cmd *brk_resp(struct broker *b, int32_t code)
{
    rmt_cmd_reset(&b->resp, code);
    buf_reset(&b->body);
    return &b->resp;
}

int brk_reply(struct broker *b, rmt_conn *c, const rmt_cmd *req, bool with_body)
{
    if (with_body)
        rmt_cmd_set_body(&b->resp, b->body.data, (uint32_t)b->body.len);
    return rmt_conn_respond(c, req, &b->resp);
}

int brk_err(struct broker *b, rmt_conn *c, const rmt_cmd *req, int32_t code, const char *fmt, ...)
{
    char tmp[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    rmt_cmd *r = brk_resp(b, code);
    rmt_cmd_set_remark(r, "%s", tmp);
    rmt_conn_respond(c, req, r);
    return -1;
}

int brk_need_str(struct broker *b, rmt_conn *c, const rmt_cmd *req, const char *field,
                 const char **out)
{
    const char *v = rmt_cmd_ext(req, field);
    if (!v || !*v)
        return brk_err(b, c, req, RMT_RESP_INVALID_PARAMETER,
                       "request code %d: the header field '%s' is missing", req->code, field);
    *out = v;
    return 0;
}

int brk_need_int(struct broker *b, rmt_conn *c, const rmt_cmd *req, const char *field, int64_t *out)
{
    int rc = rmt_cmd_ext_int(req, field, out);
    if (rc == -ENOENT)
        return brk_err(b, c, req, RMT_RESP_INVALID_PARAMETER,
                       "request code %d: the header field '%s' is missing", req->code, field);
    if (rc)
        return brk_err(b, c, req, RMT_RESP_INVALID_PARAMETER,
                       "request code %d: the header field '%s' is not a number", req->code, field);
    return 0;
}

int brk_opt_int(struct broker *b, rmt_conn *c, const rmt_cmd *req, const char *field, int64_t def,
                int64_t *out)
{
    const char *v = rmt_cmd_ext(req, field);
    if (!v || !*v || strcmp(v, "null") == 0) {
        *out = def;
        return 0;
    }
    if (rmt_cmd_ext_int(req, field, out))
        return brk_err(b, c, req, RMT_RESP_INVALID_PARAMETER,
                       "request code %d: the header field '%s' is not a number", req->code, field);
    return 0;
}

bool brk_admin_allowed(struct broker *b, rmt_conn *c, const rmt_cmd *req)
{
    if (acl_allows(b->admin, rmt_conn_peer(c)))
        return true;
    log_warn("refused admin request %d from %s (not on adminAllowList)", req->code, rmt_conn_peer(c));
    brk_err(b, c, req, RMT_RESP_NO_PERMISSION,
            "admin request %d refused: %s is not on the broker's adminAllowList", req->code,
            rmt_conn_peer(c));
    return false;
}

bool brk_writable(const struct broker *b)
{
    return (b->cfg.perm & META_PERM_WRITE) && b->cfg.role != BRK_SLAVE;
}

bool brk_readable(const struct broker *b)
{
    return (b->cfg.perm & META_PERM_READ) != 0;
}

static const struct meta_topic *create_topic(struct broker *b, const struct meta_topic *t)
{
    int rc = meta_topic_put(b->meta, t);
    if (rc) {
        log_error("cannot create topic %s: %s", t->name, strerror(-rc));
        return NULL;
    }
    log_info("created topic %s (queues %d/%d, perm %d)", t->name, t->read_queue_nums,
             t->write_queue_nums, t->perm);
    reg_soon(b->reg);
    return meta_topic_get(b->meta, t->name);
}

const struct meta_topic *brk_topic_for_send(struct broker *b, const char *topic,
                                            const char *default_topic, int queue_nums)
{
    const struct meta_topic *t = meta_topic_get(b->meta, topic);
    if (t)
        return t;
    if (!default_topic || !*default_topic)
        default_topic = BRK_DEFAULT_TOPIC;
    const struct meta_topic *d = meta_topic_get(b->meta, default_topic);
    if (!d) {
        log_warn("cannot auto-create topic %s: the default topic %s does not exist", topic,
                 default_topic);
        return NULL;
    }
    int perm = d->perm;
    if (strcmp(default_topic, BRK_DEFAULT_TOPIC) == 0 && !b->cfg.auto_create_topic)
        perm = META_PERM_READ | META_PERM_WRITE;
    if (!(perm & META_PERM_INHERIT)) {
        log_warn("cannot auto-create topic %s: the default topic %s has no inherit permission",
                 topic, default_topic);
        return NULL;
    }
    struct meta_topic nt;
    meta_topic_defaults(&nt, topic);
    int n = queue_nums > 0 ? queue_nums : (int)b->cfg.default_queue_nums;
    if (n > d->write_queue_nums)
        n = d->write_queue_nums;
    if (n < 1)
        n = 1;
    nt.read_queue_nums = nt.write_queue_nums = n;
    nt.perm = perm & ~META_PERM_INHERIT;
    return create_topic(b, &nt);
}

const struct meta_topic *brk_topic_system(struct broker *b, const char *topic, int queue_nums,
                                          int perm)
{
    const struct meta_topic *t = meta_topic_get(b->meta, topic);
    if (t)
        return t;
    struct meta_topic nt;
    meta_topic_defaults(&nt, topic);
    nt.read_queue_nums = nt.write_queue_nums = queue_nums;
    nt.perm = perm;
    return create_topic(b, &nt);
}

const struct meta_group *brk_group(struct broker *b, const char *group)
{
    const struct meta_group *g = meta_group_get(b->meta, group);
    if (g || !b->cfg.auto_create_group || !meta_group_name_valid(group))
        return g;
    struct meta_group ng;
    meta_group_defaults(&ng, group);
    int rc = meta_group_put(b->meta, &ng);
    if (rc) {
        log_error("cannot create subscription group %s: %s", group, strerror(-rc));
        return NULL;
    }
    log_info("created subscription group %s", group);
    return meta_group_get(b->meta, group);
}

int brk_create_system_topics(struct broker *b)
{
    struct {
        const char *name;
        int queues, perm;
    } sys[] = {
        { BRK_SELF_TEST_TOPIC, 1, META_PERM_READ | META_PERM_WRITE },
        { BRK_OFFSET_MOVED_TOPIC, 1, META_PERM_READ | META_PERM_WRITE },
        { BRK_SCHEDULE_TOPIC, 0, META_PERM_READ | META_PERM_WRITE },
        { TMR_TOPIC, 1, META_PERM_READ | META_PERM_WRITE },
        { b->cfg.cluster, 16, META_PERM_INHERIT },
        { b->cfg.name, 1, META_PERM_INHERIT },
        { b->cfg.auto_create_topic ? BRK_DEFAULT_TOPIC : NULL, (int)b->cfg.default_queue_nums,
          META_PERM_INHERIT | META_PERM_READ | META_PERM_WRITE },
    };
    int64_t levels[BRK_DELAY_LEVELS_MAX];
    sys[2].queues = brk_delay_levels(b, levels, BRK_DELAY_LEVELS_MAX);
    for (size_t i = 0; i < sizeof sys / sizeof sys[0]; i++) {
        if (!sys[i].name || meta_topic_get(b->meta, sys[i].name))
            continue;
        if (!meta_topic_name_valid(sys[i].name)) {
            log_warn("not creating the system topic '%s': not a valid topic name", sys[i].name);
            continue;
        }
        struct meta_topic t;
        meta_topic_defaults(&t, sys[i].name);
        t.read_queue_nums = t.write_queue_nums = sys[i].queues > 0 ? sys[i].queues : 1;
        t.perm = sys[i].perm;
        int rc = meta_topic_put(b->meta, &t);
        if (rc) {
            log_error("cannot create system topic %s: %s", sys[i].name, strerror(-rc));
            return rc;
        }
    }
    return 0;
}

int brk_parse_host(const char *addr, struct msg_host *h)
{
    char host[64];
    int port;
    memset(h, 0, sizeof *h);
    if (rmt_parse_addr(addr, host, sizeof host, &port))
        return -EINVAL;
    if (inet_pton(AF_INET, host, h->ip) == 1) {
        h->port = (uint32_t)port;
        return 0;
    }
    if (inet_pton(AF_INET6, host, h->ip) == 1) {
        h->v6 = 1;
        h->port = (uint32_t)port;
        return 0;
    }
    return -EINVAL;
}

int brk_delay_levels(const struct broker *b, int64_t *ms, int max)
{
    int n = 0;
    const char *p = b->cfg.delay_levels;
    while (*p && n < max) {
        while (*p == ' ')
            p++;
        if (!*p)
            break;
        char *end;
        long long v = strtoll(p, &end, 10);
        if (end == p || v < 0)
            break;
        int64_t unit;
        switch (*end) {
        case 's': unit = 1000; break;
        case 'm': unit = 60000; break;
        case 'h': unit = 3600000; break;
        case 'd': unit = 86400000; break;
        default: return n;
        }
        ms[n++] = v * unit;
        p = end + 1;
    }
    return n;
}
