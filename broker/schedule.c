/*
 * Delay-level delivery. Each tick handles at most a bounded number of due
 * messages per level so a large backlog cannot stall the loop; a level with
 * work left is visited again on the next iteration through an idle timer.
 */
#include "schedule.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker.h"
#include "log.h"
#include "send.h"

#define SCHED_BATCH 64
#define SCHED_TICK 0.1

struct sched {
    struct broker *b;
    ev_timer tick;
    int nlevels;
    int64_t offset[BRK_DELAY_LEVELS_MAX];
    struct store_view views[SCHED_BATCH];
    char props[MSG_PROPERTIES_MAX + 1];
};

struct sched *sched_new(struct broker *b)
{
    struct sched *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->b = b;
    int64_t ms[BRK_DELAY_LEVELS_MAX];
    s->nlevels = brk_delay_levels(b, ms, BRK_DELAY_LEVELS_MAX);
    for (int i = 0; i < s->nlevels; i++) {
        int64_t off;
        s->offset[i] = meta_offset_query(b->meta, BRK_SCHEDULE_TOPIC, SCHED_GROUP, (uint32_t)i, &off) == 0
                           ? off
                           : 0;
    }
    return s;
}

void sched_free(struct sched *s)
{
    if (!s)
        return;
    sched_stop(s);
    free(s);
}

/* Copies props without DELAY into s->props; *len gets the length. Also
 * extracts REAL_TOPIC and REAL_QID. Returns 0 or -EINVAL when they are
 * missing or malformed. */
static int build(struct sched *s, const struct msg_record *r, char *topic, size_t tcap, int *qid,
                 size_t *len)
{
    const char *name, *val;
    size_t nl, vl, pos = 0;
    *len = 0;
    topic[0] = 0;
    *qid = -1;
    while (msg_prop_next(r->props, r->props_len, &pos, &name, &nl, &val, &vl) == 1) {
        if (nl == strlen(MSG_PROP_DELAY_TIME_LEVEL) && memcmp(name, MSG_PROP_DELAY_TIME_LEVEL, nl) == 0)
            continue;
        if (nl == strlen(MSG_PROP_REAL_TOPIC) && memcmp(name, MSG_PROP_REAL_TOPIC, nl) == 0 && vl < tcap) {
            memcpy(topic, val, vl);
            topic[vl] = 0;
        }
        if (nl == strlen(MSG_PROP_REAL_QUEUE_ID) && memcmp(name, MSG_PROP_REAL_QUEUE_ID, nl) == 0) {
            int q = 0;
            size_t i = 0;
            for (; i < vl && val[i] >= '0' && val[i] <= '9' && q < 1000000; i++)
                q = q * 10 + (val[i] - '0');
            if (i == vl && vl > 0)
                *qid = q;
        }
        char nm[256];
        if (nl >= sizeof nm)
            return -EINVAL;
        memcpy(nm, name, nl);
        nm[nl] = 0;
        if (msg_prop_append(s->props, sizeof s->props, len, nm, val, vl))
            return -EINVAL;
    }
    return topic[0] && *qid >= 0 ? 0 : -EINVAL;
}

/* Delivers due messages of one level; returns true if more may be due. */
static bool run_level(struct sched *s, int level, int64_t now)
{
    struct broker *b = s->b;
    struct store_get_req gr = {
        .topic = BRK_SCHEDULE_TOPIC, .queue_id = level, .offset = s->offset[level],
        .max_count = SCHED_BATCH, .views = s->views,
    };
    struct store_get_result res;
    memset(&res, 0, sizeof res);
    enum store_get_status st = store_get(b->store, &gr, &res);
    bool more = false;
    if (st == STORE_GET_FOUND) {
        uint32_t i = 0;
        for (; i < res.count; i++) {
            struct store_view *v = &s->views[i];
            if (v->tag_hash > now)
                break;
            struct msg_record r;
            char topic[META_TOPIC_NAME_MAX + 64];
            int qid;
            size_t plen;
            if (msg_record_decode(v->data, v->len, &r, 0) <= 0 ||
                build(s, &r, topic, sizeof topic, &qid, &plen)) {
                log_warn("delay level %d: message at offset %lld has no valid REAL_TOPIC/REAL_QID; skipped",
                         level + 1, (long long)v->queue_offset);
            } else {
                int rc = send_republish(b->send, topic, qid, &r, s->props, (uint32_t)plen);
                if (rc != STORE_PUT_OK) {
                    log_warn("delay level %d: delivering to %s/%d failed: %s; will retry", level + 1, topic,
                             qid, store_put_status_str((enum store_put_status)rc));
                    break;
                }
            }
            s->offset[level] = v->queue_offset + 1;
        }
        more = i == res.count && res.count == SCHED_BATCH;
        if (i == res.count && res.next_begin_offset > s->offset[level])
            s->offset[level] = res.next_begin_offset;
    } else if (st == STORE_GET_OFFSET_TOO_SMALL || st == STORE_GET_OFFSET_OVERFLOW_BADLY) {
        s->offset[level] = res.next_begin_offset;
    }
    store_hold_release(&res.hold);
    meta_offset_commit(b->meta, BRK_SCHEDULE_TOPIC, SCHED_GROUP, (uint32_t)level, s->offset[level]);
    return more;
}

static void on_tick(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct sched *s = w->data;
    /* A slave's log is the master's copy: it never appends on its own. */
    if (s->b->stopping || s->b->cfg.role == BRK_SLAVE)
        return;
    int64_t now = brk_now_ms();
    bool more = false;
    for (int l = 0; l < s->nlevels; l++)
        if (store_max_queue_offset(s->b->store, BRK_SCHEDULE_TOPIC, l) > s->offset[l])
            more |= run_level(s, l, now);
    if (more) {
        ev_timer_stop(loop, w);
        ev_timer_set(w, 0.0, SCHED_TICK);
        ev_timer_start(loop, w);
    }
}

void sched_start(struct sched *s)
{
    ev_timer_init(&s->tick, on_tick, SCHED_TICK, SCHED_TICK);
    s->tick.data = s;
    ev_timer_start(s->b->loop, &s->tick);
}

void sched_stop(struct sched *s)
{
    if (s->tick.data)
        ev_timer_stop(s->b->loop, &s->tick);
}

void sched_on_delay_offsets(struct sched *s, rmt_conn *c, rmt_cmd *req)
{
    struct broker *b = s->b;
    brk_resp(b, RMT_RESP_SUCCESS);
    int rc = buf_append(&b->body, "{\"offsetTable\":{", 16);
    for (int l = 0; l < s->nlevels && !rc; l++)
        rc = buf_printf(&b->body, "%s%d:%lld", l ? "," : "", l + 1, (long long)s->offset[l]);
    if (!rc)
        rc = buf_printf(&b->body, "},\"dataVersion\":{\"counter\":0,\"timestamp\":%lld}}", (long long)brk_now_ms());
    if (rc) {
        brk_err(b, c, req, RMT_RESP_SYSTEM_ERROR, "out of memory");
        return;
    }
    brk_reply(b, c, req, true);
}

void sched_set_offset(struct sched *s, int level, int64_t offset)
{
    if (level < 0 || level >= s->nlevels || offset < 0 || s->offset[level] == offset)
        return;
    s->offset[level] = offset;
    meta_offset_commit(s->b->meta, BRK_SCHEDULE_TOPIC, SCHED_GROUP, (uint32_t)level, offset);
}
