/*
 * Slave metadata sync and consumer-offset flow-back (see ha_sync.h). One
 * round is a chain of four requests to the master, each applied before the
 * next is sent, so a round never holds more than one answer. Locally
 * committed offsets are a small array (one entry per queue a consumer
 * committed on this slave while the master's value was behind), searched
 * linearly: commits arrive every few seconds per queue, not per message.
 */
#include "ha_sync.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "admin.h"
#include "broker.h"
#include "json_util.h"
#include "log.h"
#include "registrar.h"
#include "schedule.h"
#include "timer.h"

#define HS_TIMEOUT_MS 5000
#define HS_KEY_MAX (META_TOPIC_NAME_MAX + META_GROUP_NAME_MAX + 2)

enum hs_step { HS_TOPICS, HS_GROUPS, HS_OFFSETS, HS_DELAY, HS_TIMER, HS_DONE };

struct local_commit {
    char key[HS_KEY_MAX];   /* topic@group */
    uint32_t qid;
    int64_t offset;
    bool seen;              /* present in the master's table this round */
};

struct hs {
    struct broker *b;
    rmt_client *cl;
    ev_timer tick;
    char master[128];
    bool busy;
    bool failing;
    enum hs_step step;
    struct local_commit *lc;
    size_t nlc, caplc;
    uint64_t rounds, failures, pushes, applied_offsets;
    int64_t last_ok_ms;
};

struct hs *hs_new(struct broker *b)
{
    struct hs *h = calloc(1, sizeof *h);
    if (!h)
        return NULL;
    h->b = b;
    struct rmt_client_opts co = { .max_frame = (size_t)b->cfg.max_frame, .connect_timeout_ms = 3000,
                                  .reconnect_max_ms = 3000 };
    h->cl = rmt_client_new(b->loop, &co);
    if (!h->cl) {
        free(h);
        return NULL;
    }
    return h;
}

void hs_free(struct hs *h)
{
    if (!h)
        return;
    ev_timer_stop(h->b->loop, &h->tick);
    h->busy = true; /* cancellations below must not start anything */
    rmt_client_free(h->cl);
    free(h->lc);
    free(h);
}

static void next_step(struct hs *h);

static void round_end(struct hs *h, bool ok, const char *why)
{
    h->busy = false;
    h->step = HS_TOPICS;
    if (ok) {
        h->rounds++;
        h->last_ok_ms = brk_mono_ms();
        if (h->failing)
            log_info("metadata sync with master %s works again", h->master);
        h->failing = false;
        return;
    }
    h->failures++;
    if (!h->failing)
        log_warn("metadata sync with master %s failed: %s (retried every %lld ms)", h->master, why,
                 (long long)h->b->cfg.slave_sync_ms);
    h->failing = true;
}

static bool key_split(const char *key, char *topic, size_t tcap, char *group, size_t gcap)
{
    const char *at = strchr(key, '@');
    if (!at || at == key || !at[1] || (size_t)(at - key) >= tcap || strlen(at + 1) >= gcap)
        return false;
    memcpy(topic, key, (size_t)(at - key));
    topic[at - key] = 0;
    snprintf(group, gcap, "%s", at + 1);
    return meta_topic_name_valid(topic) && meta_group_name_valid(group);
}

struct names {
    char (*v)[META_GROUP_NAME_MAX + 1];
    size_t n, cap;
    int rc;
};

static int names_add(struct names *l, const char *name)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        void *nv = realloc(l->v, cap * sizeof *l->v);
        if (!nv)
            return l->rc = -ENOMEM;
        l->v = nv;
        l->cap = cap;
    }
    snprintf(l->v[l->n++], sizeof l->v[0], "%s", name);
    return 0;
}

static int topic_name_cb(const struct meta_topic *t, void *arg) { return names_add(arg, t->name); }
static int group_name_cb(const struct meta_group *g, void *arg) { return names_add(arg, g->name); }

/* Topics and groups: the master's table replaces ours. */
static int apply_topics(struct hs *h, json_t *root)
{
    struct broker *b = h->b;
    json_t *table = json_object_get(root, "topicConfigTable");
    if (!json_is_object(table))
        return -EBADMSG;
    bool changed = false;
    const char *name;
    json_t *o;
    json_object_foreach(table, name, o) {
        struct meta_topic t;
        if (adm_topic_from_json(o, name, &t)) {
            log_warn("metadata sync: topic '%.200s' from the master is invalid; skipped", name);
            continue;
        }
        const struct meta_topic *cur = meta_topic_get(b->meta, name);
        if (cur && memcmp(cur, &t, sizeof t) == 0)
            continue;
        int rc = meta_topic_put(b->meta, &t);
        if (rc)
            return rc;
        changed = true;
    }
    struct names l = { 0 };
    meta_topic_foreach(b->meta, topic_name_cb, &l);
    int rc = l.rc;
    for (size_t i = 0; i < l.n && !rc; i++)
        if (!json_object_get(table, l.v[i])) {
            rc = meta_topic_delete(b->meta, l.v[i]);
            if (rc == -ENOENT)
                rc = 0;
            changed = true;
        }
    free(l.v);
    if (changed)
        reg_soon(b->reg);
    return rc;
}

static int apply_groups(struct hs *h, json_t *root)
{
    struct broker *b = h->b;
    json_t *table = json_object_get(root, "subscriptionGroupTable");
    if (!json_is_object(table))
        return -EBADMSG;
    const char *name;
    json_t *o;
    json_object_foreach(table, name, o) {
        if (!json_is_object(o) || !meta_group_name_valid(name))
            continue;
        struct meta_group g;
        adm_group_from_json(o, name, &g);
        const struct meta_group *cur = meta_group_get(b->meta, name);
        if (cur && memcmp(cur, &g, sizeof g) == 0)
            continue;
        int rc = meta_group_put(b->meta, &g);
        if (rc)
            return rc;
    }
    struct names l = { 0 };
    meta_group_foreach(b->meta, group_name_cb, &l);
    int rc = l.rc;
    for (size_t i = 0; i < l.n && !rc; i++)
        if (!json_object_get(table, l.v[i])) {
            rc = meta_group_delete(b->meta, l.v[i]);
            if (rc == -ENOENT)
                rc = 0;
        }
    free(l.v);
    return rc;
}

static struct local_commit *lc_find(struct hs *h, const char *key, uint32_t qid)
{
    for (size_t i = 0; i < h->nlc; i++)
        if (h->lc[i].qid == qid && strcmp(h->lc[i].key, key) == 0)
            return &h->lc[i];
    return NULL;
}

int hs_local_commit(struct hs *h, const char *topic, const char *group, uint32_t queue_id, int64_t offset)
{
    if (!h)
        return 0;
    char key[HS_KEY_MAX];
    snprintf(key, sizeof key, "%s@%s", topic, group);
    struct local_commit *e = lc_find(h, key, queue_id);
    if (!e) {
        if (h->nlc == h->caplc) {
            size_t cap = h->caplc ? h->caplc * 2 : 32;
            struct local_commit *n = realloc(h->lc, cap * sizeof *n);
            if (!n)
                return -ENOMEM;
            h->lc = n;
            h->caplc = cap;
        }
        e = &h->lc[h->nlc++];
        memset(e, 0, sizeof *e);
        snprintf(e->key, sizeof e->key, "%s", key);
        e->qid = queue_id;
    }
    e->offset = offset;
    return 0;
}

static void on_pushed(int status, rmt_cmd *resp, void *ud)
{
    struct hs *h = ud;
    if (status == -ECANCELED)
        return;
    if (status || resp->code != RMT_RESP_SUCCESS)
        log_warn("offset flow-back to master %s failed: %s", h->master,
                 status ? strerror(-status) : (rmt_cmd_remark(resp) ? rmt_cmd_remark(resp) : "refused"));
}

static void push(struct hs *h, const struct local_commit *e)
{
    char topic[META_TOPIC_NAME_MAX + 1], group[META_GROUP_NAME_MAX + 1];
    if (!key_split(e->key, topic, sizeof topic, group, sizeof group))
        return;
    rmt_cmd req;
    rmt_cmd_init(&req, RMT_REQ_UPDATE_CONSUMER_OFFSET);
    rmt_cmd_set_ext(&req, "consumerGroup", group);
    rmt_cmd_set_ext(&req, "topic", topic);
    rmt_cmd_set_ext_int(&req, "queueId", e->qid);
    rmt_cmd_set_ext_int(&req, "commitOffset", e->offset);
    rmt_cmd_set_ext(&req, HS_FLOW_BACK_FIELD, "true");
    if (rmt_client_invoke(h->cl, h->master, &req, HS_TIMEOUT_MS, on_pushed, h) == 0)
        h->pushes++;
    rmt_cmd_destroy(&req);
}

/* Offsets: the master's value unless consumers committed further here
 * (then it is pushed to the master; the record goes once the master has
 * caught up). */
static int apply_offsets(struct hs *h, json_t *root)
{
    struct broker *b = h->b;
    json_t *table = json_object_get(root, "offsetTable");
    if (!json_is_object(table))
        return -EBADMSG;
    for (size_t i = 0; i < h->nlc; i++)
        h->lc[i].seen = false;
    const char *key;
    json_t *queues;
    json_object_foreach(table, key, queues) {
        char topic[META_TOPIC_NAME_MAX + 1], group[META_GROUP_NAME_MAX + 1];
        if (!json_is_object(queues) || !key_split(key, topic, sizeof topic, group, sizeof group))
            continue;
        const char *qs;
        json_t *v;
        json_object_foreach(queues, qs, v) {
            char *end;
            long q = strtol(qs, &end, 10);
            if (*end || q < 0 || q >= META_QUEUE_MAX || !json_is_integer(v) || json_integer_value(v) < 0)
                continue;
            int64_t off = json_integer_value(v), cur;
            struct local_commit *e = lc_find(h, key, (uint32_t)q);
            if (e) {
                e->seen = true;
                if (e->offset > off) {
                    push(h, e);
                    continue;
                }
                *e = h->lc[--h->nlc];
            }
            if (meta_offset_query(b->meta, topic, group, (uint32_t)q, &cur) == 0 && cur == off)
                continue;
            int rc = meta_offset_commit(b->meta, topic, group, (uint32_t)q, off);
            if (rc)
                return rc;
            h->applied_offsets++;
        }
    }
    for (size_t i = 0; i < h->nlc; i++)
        if (!h->lc[i].seen)
            push(h, &h->lc[i]);
    return 0;
}

static int apply_delay(struct hs *h, json_t *root)
{
    json_t *table = json_object_get(root, "offsetTable");
    if (!json_is_object(table))
        return -EBADMSG;
    const char *ls;
    json_t *v;
    json_object_foreach(table, ls, v) {
        char *end;
        long level = strtol(ls, &end, 10);
        if (*end || level < 1 || level > BRK_DELAY_LEVELS_MAX || !json_is_integer(v))
            continue;
        sched_set_offset(h->b->sched, (int)level - 1, json_integer_value(v));
    }
    return 0;
}

/* The master's timer checkpoint: RocketMQ's TimerCheckpoint encoding, seven
 * big-endian int64 (lastReadTimeMs, lastTimerLogFlushPos,
 * lastTimerQueueOffset, masterTimerQueueOffset, then the data version's
 * stateVersion, timestamp and counter; older masters send the first four). */
#define TIMER_CP_LEN 56
#define TIMER_CP_MIN 32

static int apply_timer(struct hs *h, const rmt_cmd *resp)
{
    if (resp->body_len < TIMER_CP_MIN)
        return -EBADMSG;
    int64_t read_ms = (int64_t)rd_u64be(resp->body), queue_off = (int64_t)rd_u64be(resp->body + 16);
    if (read_ms < 0 || queue_off < 0)
        return -EBADMSG;
    tmr_follow(h->b->timer, read_ms, queue_off);
    return 0;
}

void hs_on_timer_check_point(struct broker *b, rmt_conn *c, rmt_cmd *req)
{
    struct tmr_checkpoint cp;
    if (!b->timer || b->cfg.role == BRK_SLAVE) {
        brk_err(b, c, req, RMT_RESP_SYSTEM_ERROR, "no timer checkpoint here (a slave, or timerWheelEnable=false)");
        return;
    }
    tmr_get_checkpoint(b->timer, &cp);
    if (cp.seq == 0) {
        brk_err(b, c, req, RMT_RESP_SYSTEM_ERROR, "no timer checkpoint here (timerWheelEnable=false)");
        return;
    }
    uint8_t v[TIMER_CP_LEN];
    wr_u64be(v, (uint64_t)cp.deliver_ms);
    wr_u64be(v + 8, (uint64_t)cp.log_end);
    wr_u64be(v + 16, (uint64_t)cp.queue_offset);
    wr_u64be(v + 24, (uint64_t)cp.queue_offset);
    wr_u64be(v + 32, 0);
    wr_u64be(v + 40, (uint64_t)brk_now_ms());
    wr_u64be(v + 48, cp.seq);
    brk_resp(b, RMT_RESP_SUCCESS);
    if (buf_append(&b->body, v, sizeof v)) {
        brk_err(b, c, req, RMT_RESP_SYSTEM_ERROR, "out of memory");
        return;
    }
    brk_reply(b, c, req, true);
}

static void on_answer(int status, rmt_cmd *resp, void *ud)
{
    struct hs *h = ud;
    if (status == -ECANCELED)
        return;
    static const char *const what[] = { "GET_ALL_TOPIC_CONFIG", "GET_ALL_SUBSCRIPTIONGROUP_CONFIG",
                                        "GET_ALL_CONSUMER_OFFSET", "GET_ALL_DELAY_OFFSET",
                                        "GET_TIMER_CHECK_POINT" };
    char why[256];
    if (status) {
        snprintf(why, sizeof why, "%s: %s", what[h->step], strerror(-status));
        round_end(h, false, why);
        return;
    }
    if (h->step == HS_TIMER && resp->code != RMT_RESP_SUCCESS) {
        /* a master without timer messages: nothing to follow */
        h->step++;
        next_step(h);
        return;
    }
    if (resp->code != RMT_RESP_SUCCESS) {
        snprintf(why, sizeof why, "%s answered code %d %s", what[h->step], resp->code,
                 rmt_cmd_remark(resp) ? rmt_cmd_remark(resp) : "");
        round_end(h, false, why);
        return;
    }
    if (h->step == HS_TIMER) {
        if (apply_timer(h, resp)) {
            snprintf(why, sizeof why, "GET_TIMER_CHECK_POINT: a body of %u bytes is not a timer checkpoint",
                     (unsigned)resp->body_len);
            round_end(h, false, why);
            return;
        }
        h->step++;
        next_step(h);
        return;
    }
    char jerr[160];
    json_t *root = json_parse_rocketmq((const char *)resp->body, resp->body_len, jerr, sizeof jerr);
    if (!root) {
        snprintf(why, sizeof why, "%s: the body is not JSON: %s", what[h->step], jerr);
        round_end(h, false, why);
        return;
    }
    int rc;
    switch (h->step) {
    case HS_TOPICS: rc = apply_topics(h, root); break;
    case HS_GROUPS: rc = apply_groups(h, root); break;
    case HS_OFFSETS: rc = apply_offsets(h, root); break;
    default: rc = apply_delay(h, root); break;
    }
    json_decref(root);
    if (rc) {
        snprintf(why, sizeof why, "applying %s: %s", what[h->step], strerror(-rc));
        round_end(h, false, why);
        return;
    }
    h->step++;
    next_step(h);
}

static void next_step(struct hs *h)
{
    static const int codes[] = { RMT_REQ_GET_ALL_TOPIC_CONFIG, RMT_REQ_GET_ALL_SUBSCRIPTIONGROUP_CONFIG,
                                 RMT_REQ_GET_ALL_CONSUMER_OFFSET, RMT_REQ_GET_ALL_DELAY_OFFSET,
                                 RMT_REQ_GET_TIMER_CHECK_POINT };
    if (h->step == HS_DONE) {
        round_end(h, true, NULL);
        return;
    }
    rmt_cmd req;
    rmt_cmd_init(&req, codes[h->step]);
    int rc = rmt_client_invoke(h->cl, h->master, &req, HS_TIMEOUT_MS, on_answer, h);
    rmt_cmd_destroy(&req);
    if (rc) {
        char why[128];
        snprintf(why, sizeof why, "cannot send: %s", strerror(-rc));
        round_end(h, false, why);
    }
}

static void start_round(struct hs *h)
{
    if (h->busy || !h->master[0] || h->b->stopping)
        return;
    h->busy = true;
    h->step = HS_TOPICS;
    next_step(h);
}

static void on_tick(struct ev_loop *loop, ev_timer *w, int revents)
{
    start_round(w->data);
}

void hs_start(struct hs *h)
{
    if (!h || h->b->cfg.role != BRK_SLAVE)
        return;
    double p = (double)h->b->cfg.slave_sync_ms / 1000.0;
    ev_timer_init(&h->tick, on_tick, p, p);
    h->tick.data = h;
    ev_timer_start(h->b->loop, &h->tick);
}

void hs_set_master(struct hs *h, const char *addr)
{
    if (!h || h->b->cfg.role != BRK_SLAVE)
        return;
    if (!addr)
        addr = "";
    if (strcmp(addr, h->master) == 0)
        return;
    if (addr[0])
        log_info("metadata sync: master is %s", addr);
    snprintf(h->master, sizeof h->master, "%s", addr);
    snprintf(h->b->master_addr, sizeof h->b->master_addr, "%s", addr);
    h->failing = false;
    start_round(h);
}

int hs_runtime_info(struct hs *h, struct buf *out)
{
    if (!h || h->b->cfg.role != BRK_SLAVE)
        return 0;
    int rc = buf_append(out, ",\"masterAddr\":", 14);
    rc = rc ? rc : json_buf_str(out, h->master);
    rc = rc ? rc : buf_printf(out,
                              ",\"slaveSyncRounds\":\"%llu\",\"slaveSyncFailures\":\"%llu\","
                              "\"slaveSyncLastOkMsAgo\":\"%lld\",\"slaveOffsetsApplied\":\"%llu\","
                              "\"slaveLocalCommits\":\"%zu\",\"slaveOffsetFlowBacks\":\"%llu\"",
                              (unsigned long long)h->rounds, (unsigned long long)h->failures,
                              (long long)(h->last_ok_ms ? brk_mono_ms() - h->last_ok_ms : -1),
                              (unsigned long long)h->applied_offsets, h->nlc,
                              (unsigned long long)h->pushes);
    return rc;
}
