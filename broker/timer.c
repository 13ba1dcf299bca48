/*
 * Timer messages through a persistent timing wheel (see timer.h for the
 * design and its guarantees).
 *
 * On disk (under root_dir): timerlog/ holds the append-only timer log in
 * fixed-size mapped segments of 40-byte entries; timercheck holds two
 * alternating checkpoint copies (sequence number + CRC), so a torn write
 * never loses the previous one. The slot array is an anonymous mapping
 * rebuilt from the log at every open: it is an index of the log, like a
 * consume queue is of the commitlog, and rebuilding it makes a clean stop
 * and a kill -9 take the same, tested path.
 *
 * Entry (big-endian): prev entry of the same slot (-1 none), commitlog
 * offset, delivery ms, slot ms, record size, magic. A slot holds its time,
 * the newest entry and a count; chains are walked newest first.
 *
 * One thread does everything (link, deliver, checkpoint), so the wheel and
 * the log need no locks; statistics are atomics. Appends drop the log's
 * pages behind a short tail from the mapping as they go, and every
 * checkpoint drops what deliveries faulted in, so the resident set holds
 * the wheel and a window of the log, not the pending entries.
 */
#include "timer.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "log.h"
#include "mapped_file.h"
#include "message.h"

#define ENTRY 40
#define ENTRY_MAGIC 0x544d5231u /* "TMR1" */
#define CP_MAGIC 0x544d52434b505431ull /* "TMRCKPT1" */
#define CP_PAGE 4096
#define BATCH 64
#define ENQUEUE_PER_ROUND 4096
#define POLL_MS 10
#define CHECKPOINT_MS 1000
#define LOG_MAPPED_KEEP (64 << 10)   /* timer-log bytes kept mapped behind the end */
#define LOG_RELEASE_STEP (256 << 10) /* appends drop the pages behind at this pace */

#define LD(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)
#define ST(x, v) __atomic_store_n(&(x), (v), __ATOMIC_RELAXED)
#define ADD(x, v) __atomic_add_fetch(&(x), (v), __ATOMIC_RELAXED)

struct slot {
    int64_t slot_ms; /* time of the chain held, 0 when empty */
    int64_t last;    /* newest entry, -1 none */
    int64_t count;
};

struct entry {
    int64_t prev, phys, deliver_ms, slot_ms;
    int32_t size;
};

struct tmr {
    struct tmr_config cfg;
    char *root;
    struct store *s;
    int64_t prec;

    struct mfq log;
    int log_ok;
    struct mfile *cur;        /* segment being appended to (own reference) */
    int64_t log_end;          /* next append position */
    int64_t *seg_max;         /* per segment from the first: largest slot_ms */
    size_t seg_n, seg_cap;

    struct slot *wheel;
    size_t nslots, wheel_bytes;

    int cp_fd;
    uint64_t cp_seq;
    int64_t enq_off;          /* timer queue offset linked so far */
    int64_t deq_ms;           /* next slot time to deliver */
    int64_t deliver_end;      /* commitlog end after the latest delivery */
    int64_t resume;           /* entry to continue a slot walk from, -1 none */
    int64_t follow_ms;        /* atomic: follower: the master's delivery position, 0 none yet */
    int64_t follow_enq;       /* atomic: follower: the master's timer queue offset read so far */
    int waiting;              /* follower without a position yet: links nothing */
    char props[MSG_PROPERTIES_MAX + 1];
    char topic[256];

    pthread_t thr;
    int running;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stop;

    struct tmr_stats st;      /* atomics */
    struct tmr_checkpoint cp; /* atomics: the latest durable checkpoint */
};

static int64_t real_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t cfg_now(const struct tmr_config *c) { return c->clock ? c->clock(c->clock_ud) : real_ms(); }

void tmr_config_defaults(struct tmr_config *c)
{
    memset(c, 0, sizeof(*c));
    c->root_dir = "store/timer";
    c->enable = 1;
    c->max_delay_sec = TMR_DEFAULT_MAX_DELAY_SEC;
    c->precision_ms = 500;
    c->log_segment_size = ENTRY * 100000;
}

int tmr_check_delay(int64_t deliver_ms, int64_t now_ms, int64_t max_delay_sec, char *err, size_t errlen)
{
    if (deliver_ms <= now_ms || deliver_ms - now_ms <= max_delay_sec * 1000)
        return 0;
    snprintf(err, errlen,
             "delivery time %" PRId64 " is %" PRId64 " s ahead, beyond timerMaxDelaySec=%" PRId64
             " (%" PRId64 " h)",
             deliver_ms, (deliver_ms - now_ms + 999) / 1000, max_delay_sec, max_delay_sec / 3600);
    return -ERANGE;
}

/* Decimal integer of a property value view; 0 or -EINVAL. */
static int parse_i64(const char *v, size_t n, int64_t *out)
{
    size_t i = 0;
    int neg = 0;
    if (n && (v[0] == '-' || v[0] == '+')) {
        neg = v[0] == '-';
        i = 1;
    }
    if (i == n || n - i > 18)
        return -EINVAL;
    int64_t x = 0;
    for (; i < n; i++) {
        if (v[i] < '0' || v[i] > '9')
            return -EINVAL;
        x = x * 10 + (v[i] - '0');
    }
    *out = neg ? -x : x;
    return 0;
}

static int name_is(const char *n, size_t nl, const char *want)
{
    return strlen(want) == nl && memcmp(n, want, nl) == 0;
}

static int append_raw(char *dst, size_t cap, size_t *len, const char *n, size_t nl, const char *v, size_t vl)
{
    if (*len + nl + vl + 2 > cap)
        return -ENOSPC;
    memcpy(dst + *len, n, nl);
    dst[*len + nl] = MSG_NAME_VALUE_SEPARATOR;
    memcpy(dst + *len + nl + 1, v, vl);
    dst[*len + nl + 1 + vl] = MSG_PROPERTY_SEPARATOR;
    *len += nl + vl + 2;
    return 0;
}

/* Copies props without the properties named in drop (NULL-terminated). */
static int copy_props_without(const char *props, size_t len, const char *const *drop, char *out, size_t cap,
                              size_t *olen)
{
    size_t pos = 0, nl, vl;
    const char *n, *v;
    *olen = 0;
    while (msg_prop_next(props, len, &pos, &n, &nl, &v, &vl)) {
        int skip = 0;
        for (const char *const *d = drop; *d && !skip; d++)
            skip = name_is(n, nl, *d);
        if (!skip && append_raw(out, cap, olen, n, nl, v, vl) < 0)
            return -ENOSPC;
    }
    return 0;
}

int tmr_prepare_put(const struct tmr_config *cfg, const char *topic, int32_t queue_id, int32_t sysflag,
                    const char *props, size_t props_len, int64_t now_ms, const char **topic_out,
                    int32_t *qid_out, char *props_out, size_t props_cap, size_t *props_out_len,
                    int64_t *deliver_ms, char *err, size_t errlen)
{
    int tx = sysflag & MSG_SYSFLAG_TRANSACTION_MASK;
    if (tx != MSG_SYSFLAG_TRANSACTION_NOT && tx != MSG_SYSFLAG_TRANSACTION_COMMIT)
        return 0;
    if (strcmp(topic, TMR_TOPIC) == 0)
        return 0;
    const char *vs, *vm, *vd, *vl;
    size_t ls, lm, ld, ll;
    int has_s = msg_prop_get(props, props_len, MSG_PROP_TIMER_DELAY_SEC, &vs, &ls);
    int has_m = msg_prop_get(props, props_len, MSG_PROP_TIMER_DELAY_MS, &vm, &lm);
    int has_d = msg_prop_get(props, props_len, MSG_PROP_TIMER_DELIVER_MS, &vd, &ld);
    if (!has_s && !has_m && !has_d)
        return 0;
    static const char *const timer_props[] = { MSG_PROP_TIMER_DELIVER_MS, MSG_PROP_TIMER_DELAY_SEC,
                                               MSG_PROP_TIMER_DELAY_MS, NULL };
    int64_t level;
    if (msg_prop_get(props, props_len, MSG_PROP_DELAY_TIME_LEVEL, &vl, &ll) && parse_i64(vl, ll, &level) == 0 &&
        level > 0) {
        /* a delay level wins over the timer properties (RocketMQ 5) */
        if (copy_props_without(props, props_len, timer_props, props_out, props_cap, props_out_len) < 0) {
            snprintf(err, errlen, "properties do not fit %zu bytes", props_cap);
            return -ENOSPC;
        }
        *topic_out = topic;
        *qid_out = queue_id;
        return 1;
    }
    if (!cfg->enable) {
        snprintf(err, errlen, "timer messages are disabled on this broker (timerWheelEnable=false)");
        return -ENOTSUP;
    }
    int64_t v, d;
    const char *which = has_s ? MSG_PROP_TIMER_DELAY_SEC : has_m ? MSG_PROP_TIMER_DELAY_MS : MSG_PROP_TIMER_DELIVER_MS;
    const char *val = has_s ? vs : has_m ? vm : vd;
    size_t vlen = has_s ? ls : has_m ? lm : ld;
    if (parse_i64(val, vlen, &v) < 0 || (has_s && (v > INT32_MAX || v < INT32_MIN))) {
        snprintf(err, errlen, "invalid %s '%.*s' (want an integer)", which, (int)(vlen > 40 ? 40 : vlen), val);
        return -EINVAL;
    }
    d = has_s ? now_ms + v * 1000 : has_m ? now_ms + v : v;
    if (d <= now_ms)
        return 0; /* already due: an ordinary message */
    int rc = tmr_check_delay(d, now_ms, cfg->max_delay_sec, err, errlen);
    if (rc < 0)
        return rc;
    static const char *const moved[] = { MSG_PROP_REAL_TOPIC, MSG_PROP_REAL_QUEUE_ID, MSG_PROP_TIMER_OUT_MS, NULL };
    char num[32];
    size_t olen;
    int n = snprintf(num, sizeof(num), "%d", queue_id);
    int n2;
    char out_ms[32];
    n2 = snprintf(out_ms, sizeof(out_ms), "%" PRId64, d);
    if (copy_props_without(props, props_len, moved, props_out, props_cap, &olen) < 0 ||
        append_raw(props_out, props_cap, &olen, MSG_PROP_REAL_TOPIC, strlen(MSG_PROP_REAL_TOPIC), topic,
                   strlen(topic)) < 0 ||
        append_raw(props_out, props_cap, &olen, MSG_PROP_REAL_QUEUE_ID, strlen(MSG_PROP_REAL_QUEUE_ID), num,
                   (size_t)n) < 0 ||
        append_raw(props_out, props_cap, &olen, MSG_PROP_TIMER_OUT_MS, strlen(MSG_PROP_TIMER_OUT_MS), out_ms,
                   (size_t)n2) < 0 ||
        olen > MSG_PROPERTIES_MAX) {
        snprintf(err, errlen, "properties exceed %d bytes once the timer properties are added",
                 MSG_PROPERTIES_MAX);
        return -ENOSPC;
    }
    *props_out_len = olen;
    *topic_out = TMR_TOPIC;
    *qid_out = TMR_QUEUE_ID;
    *deliver_ms = d;
    return 1;
}

static int64_t ceil_slot(int64_t ms, int64_t prec)
{
    int64_t k = ms / prec;
    if (k * prec < ms)
        k++;
    return k * prec;
}

static struct slot *slot_of(struct tmr *t, int64_t slot_ms)
{
    return &t->wheel[(size_t)((uint64_t)(slot_ms / t->prec) % t->nslots)];
}

static void entry_put(uint8_t *p, const struct entry *e)
{
    wr_u64be(p, (uint64_t)e->prev);
    wr_u64be(p + 8, (uint64_t)e->phys);
    wr_u64be(p + 16, (uint64_t)e->deliver_ms);
    wr_u64be(p + 24, (uint64_t)e->slot_ms);
    wr_u32be(p + 32, (uint32_t)e->size);
    wr_u32be(p + 36, ENTRY_MAGIC);
}

static int entry_get(const uint8_t *p, struct entry *e)
{
    e->prev = (int64_t)rd_u64be(p);
    e->phys = (int64_t)rd_u64be(p + 8);
    e->deliver_ms = (int64_t)rd_u64be(p + 16);
    e->slot_ms = (int64_t)rd_u64be(p + 24);
    e->size = (int32_t)rd_u32be(p + 32);
    return rd_u32be(p + 36) == ENTRY_MAGIC ? 0 : -EBADMSG;
}

/* Entry at pos: a pointer into its mapped segment (reference in *seg). */
static uint8_t *entry_at(struct tmr *t, int64_t pos, struct mfile **seg)
{
    struct mfile *f = mfq_find(&t->log, pos);
    if (!f)
        return NULL;
    if (pos - f->from + ENTRY > (int64_t)f->size) {
        mf_unref(f);
        return NULL;
    }
    *seg = f;
    return f->base + (pos - f->from);
}

static int seg_note(struct tmr *t, int64_t pos, int64_t slot_ms)
{
    int64_t first = mfq_min_offset(&t->log);
    size_t i = (size_t)((pos - first) / (int64_t)t->cfg.log_segment_size);
    if (i >= t->seg_cap) {
        size_t nc = t->seg_cap ? t->seg_cap * 2 : 16;
        while (nc <= i)
            nc *= 2;
        int64_t *nv = realloc(t->seg_max, nc * sizeof(*nv));
        if (!nv)
            return -ENOMEM;
        t->seg_max = nv;
        t->seg_cap = nc;
    }
    while (t->seg_n <= i)
        t->seg_max[t->seg_n++] = 0;
    if (slot_ms > t->seg_max[i])
        t->seg_max[i] = slot_ms;
    return 0;
}

/* Appends e to the log and links it into its slot. */
static int link_entry(struct tmr *t, struct entry *e)
{
    int64_t horizon = t->deq_ms + (int64_t)(t->nslots - 1) * t->prec;
    if (e->slot_ms > horizon)
        e->slot_ms = horizon; /* beyond the window: relinked when that slot comes */
    if (e->slot_ms < t->deq_ms)
        e->slot_ms = t->deq_ms;
    int64_t seg = (int64_t)t->cfg.log_segment_size;
    int64_t pos = t->log_end;
    if (!t->cur || pos + ENTRY > t->cur->from + seg) {
        /* the next segment; with none open, a fresh one at the next boundary */
        int64_t from = t->cur ? t->cur->from + seg : (pos + seg - 1) / seg * seg;
        struct mfile *nf = mfq_append_new(&t->log, from);
        if (!nf) {
            int e2 = errno;
            log_error("timer: cannot create a timer log segment: %s", strerror(e2));
            return -e2;
        }
        if (t->cur) {
            mf_set_wrote(t->cur, seg);
            mf_release(t->cur, 0, seg);
            mf_unref(t->cur);
        }
        t->cur = nf;
        pos = from;
    } else if ((pos - t->cur->from) % LOG_RELEASE_STEP + ENTRY > LOG_RELEASE_STEP) {
        mf_release(t->cur, 0, pos - LOG_MAPPED_KEEP - t->cur->from);
    }
    if (seg_note(t, pos, e->slot_ms) < 0)
        return -ENOMEM;
    struct slot *sl = slot_of(t, e->slot_ms);
    if (sl->slot_ms != e->slot_ms) {
        sl->slot_ms = e->slot_ms;
        sl->last = -1;
        sl->count = 0;
    }
    e->prev = sl->last;
    entry_put(t->cur->base + (pos - t->cur->from), e);
    mf_set_wrote(t->cur, pos + ENTRY - t->cur->from);
    sl->last = pos;
    sl->count++;
    t->log_end = pos + ENTRY;
    ADD(t->st.pending, 1);
    return 0;
}

static int retryable(enum store_put_status st)
{
    return st == STORE_PUT_DISK_FULL || st == STORE_PUT_CREATE_MAPPED_FILE_FAILED ||
           st == STORE_PUT_OS_PAGE_CACHE_BUSY || st == STORE_PUT_SERVICE_NOT_AVAILABLE ||
           st == STORE_PUT_UNKNOWN_ERROR;
}

/* Puts the timer message at phys back as a message of its real topic.
 * Returns 0 (delivered, or undeliverable and counted lost) or -EAGAIN. */
static int deliver(struct tmr *t, int64_t phys, int64_t due_ms)
{
    struct store_hold h = STORE_HOLD_INIT;
    struct store_view v;
    enum store_lookup_status ls = store_lookup(t->s, phys, &v, &h);
    if (ls != STORE_LOOKUP_OK) {
        store_hold_release(&h);
        log_error("timer: message at commitlog offset %" PRId64 " due at %" PRId64 " is %s; it cannot be delivered",
                  phys, due_ms, ls == STORE_LOOKUP_OFFSET_MOVED ? "already removed by retention" : "missing");
        ADD(t->st.lost, 1);
        return 0;
    }
    struct msg_record r;
    const char *tv, *qv;
    size_t tl, ql;
    int64_t qid;
    if (msg_record_decode(v.data, v.len, &r, 0) <= 0 ||
        !msg_prop_get(r.props, r.props_len, MSG_PROP_REAL_TOPIC, &tv, &tl) || tl == 0 || tl >= sizeof(t->topic) ||
        !msg_prop_get(r.props, r.props_len, MSG_PROP_REAL_QUEUE_ID, &qv, &ql) || parse_i64(qv, ql, &qid) < 0 ||
        qid < 0 || qid > INT32_MAX) {
        store_hold_release(&h);
        log_error("timer: message at commitlog offset %" PRId64 " lacks a valid REAL_TOPIC / REAL_QID; dropped", phys);
        ADD(t->st.lost, 1);
        return 0;
    }
    memcpy(t->topic, tv, tl);
    t->topic[tl] = '\0';
    static const char *const drop[] = { MSG_PROP_REAL_TOPIC, MSG_PROP_REAL_QUEUE_ID, MSG_PROP_TIMER_DELAY_SEC,
                                        MSG_PROP_TIMER_DELAY_MS, NULL };
    size_t plen;
    copy_props_without(r.props, r.props_len, drop, t->props, sizeof(t->props), &plen); /* never grows */
    struct store_msg m = {
        .topic = t->topic,
        .queue_id = (int32_t)qid,
        .flag = r.flag,
        .sysflag = r.sysflag,
        .body = r.body,
        .body_len = r.body_len,
        .props = t->props,
        .props_len = (uint32_t)plen,
        .born_ts = r.born_ts,
        .born_host = r.born_host,
        .reconsume_times = r.reconsume_times,
        .prepared_tx_offset = r.prepared_tx_offset,
    };
    struct store_put_result res;
    enum store_put_status st = store_put(t->s, &m, &res);
    store_hold_release(&h);
    if (st != STORE_PUT_OK) {
        if (retryable(st)) {
            log_warn("timer: delivery to %s/%d failed (%s: %s); retrying", t->topic, (int)qid,
                     store_put_status_str(st), res.remark);
            return -EAGAIN;
        }
        log_error("timer: delivery to %s/%d refused (%s: %s); dropped", t->topic, (int)qid,
                  store_put_status_str(st), res.remark);
        ADD(t->st.lost, 1);
        return 0;
    }
    if (res.end_offset > t->deliver_end)
        t->deliver_end = res.end_offset;
    int64_t lag = res.store_ts - due_ms;
    ST(t->st.last_lag_ms, lag);
    if (lag > LD(t->st.max_lag_ms))
        ST(t->st.max_lag_ms, lag);
    ADD(t->st.delivered, 1);
    return 0;
}

/* Delivers the chain of the slot at slot_ms (a follower only drops it).
 * Returns 0 when the slot is done, -EAGAIN to retry later (progress kept
 * in t->resume). */
static int deliver_slot(struct tmr *t, int64_t slot_ms, int64_t now)
{
    struct slot *sl = slot_of(t, slot_ms);
    if (sl->slot_ms != slot_ms) {
        t->resume = -1;
        return 0;
    }
    int64_t pos = t->resume >= 0 ? t->resume : sl->last;
    while (pos >= 0) {
        struct mfile *seg;
        uint8_t *p = entry_at(t, pos, &seg);
        struct entry e;
        if (!p || entry_get(p, &e) < 0) {
            if (p)
                mf_unref(seg);
            log_error("timer: broken chain at timer log position %" PRId64 " for slot %" PRId64
                      "; the rest of that slot is lost",
                      pos, slot_ms);
            break;
        }
        mf_unref(seg);
        if (e.deliver_ms > now) {
            /* parked beyond the window earlier: link it where it belongs */
            e.slot_ms = ceil_slot(e.deliver_ms, t->prec);
            int rc = link_entry(t, &e);
            if (rc < 0) {
                t->resume = pos;
                return -EAGAIN;
            }
            __atomic_sub_fetch(&t->st.pending, 1, __ATOMIC_RELAXED);
        } else {
            /* a follower's master delivered it; it reaches this log by
             * replication */
            if (!t->cfg.follower && deliver(t, e.phys, e.deliver_ms) < 0) {
                t->resume = pos;
                return -EAGAIN;
            }
            __atomic_sub_fetch(&t->st.pending, 1, __ATOMIC_RELAXED);
        }
        pos = e.prev;
    }
    sl->slot_ms = 0;
    sl->last = -1;
    sl->count = 0;
    t->resume = -1;
    return 0;
}

/* Links (or, if already due, delivers) new messages of the timer queue.
 * Returns how many were consumed, or -EAGAIN when a delivery must be
 * retried. */
static int enqueue_round(struct tmr *t)
{
    struct store_view v[BATCH];
    int done = 0;
    while (done < ENQUEUE_PER_ROUND && !__atomic_load_n(&t->stop, __ATOMIC_ACQUIRE)) {
        struct store_get_req req = { TMR_TOPIC, TMR_QUEUE_ID, t->enq_off, BATCH, 0, NULL, NULL, v };
        struct store_get_result res;
        enum store_get_status st = store_get(t->s, &req, &res);
        if (st != STORE_GET_FOUND) {
            store_hold_release(&res.hold);
            if ((st == STORE_GET_OFFSET_TOO_SMALL || st == STORE_GET_OFFSET_OVERFLOW_BADLY ||
                 st == STORE_GET_OFFSET_FOUND_NULL || st == STORE_GET_MESSAGE_WAS_REMOVING ||
                 st == STORE_GET_NO_MATCHED_MESSAGE) &&
                res.next_begin_offset != t->enq_off) {
                log_warn("timer: timer queue offset %" PRId64 " not readable (%s); continuing at %" PRId64,
                         t->enq_off, store_get_status_str(st), res.next_begin_offset);
                t->enq_off = res.next_begin_offset;
                continue;
            }
            break;
        }
        int rc = 0;
        for (uint32_t i = 0; i < res.count; i++) {
            struct msg_record r;
            const char *ov;
            size_t ol;
            int64_t d;
            if (msg_record_decode(v[i].data, v[i].len, &r, 0) <= 0 ||
                !msg_prop_get(r.props, r.props_len, MSG_PROP_TIMER_OUT_MS, &ov, &ol) || parse_i64(ov, ol, &d) < 0) {
                log_warn("timer: timer queue entry %" PRId64 " has no valid TIMER_OUT_MS; skipped",
                         v[i].queue_offset);
                t->enq_off = v[i].queue_offset + 1;
                continue;
            }
            struct entry e = { -1, v[i].phys_offset, d, ceil_slot(d, t->prec), (int32_t)v[i].len };
            if (e.slot_ms < t->deq_ms) {
                if (t->cfg.follower) {
                    /* already due: the master delivered it if it had read
                     * it; if not, wait here until it has (promoted at this
                     * point, this timer reads it again and delivers it) */
                    if (v[i].queue_offset >= __atomic_load_n(&t->follow_enq, __ATOMIC_ACQUIRE)) {
                        rc = 1;
                        break;
                    }
                } else if ((rc = deliver(t, e.phys, d)) < 0) {
                    break;
                }
            } else if ((rc = link_entry(t, &e)) < 0) {
                rc = -EAGAIN;
                break;
            } else {
                ADD(t->st.enqueued, 1);
            }
            t->enq_off = v[i].queue_offset + 1;
            done++;
        }
        if (rc == 0 && res.next_begin_offset > t->enq_off)
            t->enq_off = res.next_begin_offset; /* filtered holes */
        store_hold_release(&res.hold);
        ST(t->st.enqueue_offset, t->enq_off);
        if (rc < 0)
            return rc;
        if (rc > 0)
            break;
    }
    return done;
}

static int checkpoint(struct tmr *t)
{
    if (t->deliver_end > 0) {
        enum store_put_status st = store_flush_wait_blocking(t->s, t->deliver_end);
        if (st != STORE_PUT_OK) {
            log_warn("timer: store flush before checkpoint: %s; checkpoint postponed", store_put_status_str(st));
            return -EIO;
        }
    }
    for (size_t i = 0;; i++) {
        struct mfile *f = mfq_at(&t->log, i);
        if (!f)
            break;
        int rc = mf_flush(f, mf_wrote(f));
        /* chains reach back anywhere, so the log is read all over: drop
         * everything but the append tail from the mapping; what a delivery
         * walks again faults back from the page cache */
        mf_release(f, 0, t->log_end - LOG_MAPPED_KEEP - f->from);
        mf_unref(f);
        if (rc < 0)
            return rc;
    }
    uint8_t page[CP_PAGE];
    memset(page, 0, sizeof(page));
    uint64_t seq = t->cp_seq + 1;
    wr_u64be(page, CP_MAGIC);
    wr_u64be(page + 8, seq);
    wr_u64be(page + 16, (uint64_t)t->enq_off);
    wr_u64be(page + 24, (uint64_t)t->deq_ms);
    wr_u64be(page + 32, (uint64_t)t->log_end);
    wr_u32be(page + 40, msg_crc32(0, page, 40));
    off_t at = (off_t)(seq & 1) * CP_PAGE;
    ssize_t w = pwrite(t->cp_fd, page, sizeof(page), at);
    if (w != (ssize_t)sizeof(page) || fdatasync(t->cp_fd) < 0) {
        int e = w < 0 || w == (ssize_t)sizeof(page) ? errno : EIO;
        log_error("timer: checkpoint write failed: %s", strerror(e));
        return -e;
    }
    t->cp_seq = seq;
    ST(t->cp.deliver_ms, t->deq_ms);
    ST(t->cp.queue_offset, t->enq_off);
    ST(t->cp.log_end, t->log_end);
    ST(t->cp.seq, seq);
    /* segments whose every entry was delivered before this checkpoint */
    while (t->seg_n > 1 && mfq_count(&t->log) > 1 && t->seg_max[0] < t->deq_ms) {
        struct mfile *f = mfq_first(&t->log);
        int is_cur = f == t->cur;
        mf_unref(f);
        if (is_cur)
            break;
        mfq_remove_first(&t->log);
        memmove(t->seg_max, t->seg_max + 1, (t->seg_n - 1) * sizeof(*t->seg_max));
        t->seg_n--;
    }
    return 0;
}

static int read_checkpoint(struct tmr *t, int *found)
{
    *found = 0;
    for (int i = 0; i < 2; i++) {
        uint8_t page[64];
        if (pread(t->cp_fd, page, sizeof(page), (off_t)i * CP_PAGE) != (ssize_t)sizeof(page))
            continue;
        if (rd_u64be(page) != CP_MAGIC || rd_u32be(page + 40) != msg_crc32(0, page, 40))
            continue;
        uint64_t seq = rd_u64be(page + 8);
        if (*found && seq <= t->cp_seq)
            continue;
        *found = 1;
        t->cp_seq = seq;
        t->enq_off = (int64_t)rd_u64be(page + 16);
        t->deq_ms = (int64_t)rd_u64be(page + 24);
        t->log_end = (int64_t)rd_u64be(page + 32);
    }
    return 0;
}

/* Cuts the log back to the checkpointed end and relinks every entry not
 * yet delivered into a fresh wheel. */
static int rebuild(struct tmr *t)
{
    if (mfq_count(&t->log) == 0)
        return 0;
    mfq_truncate(&t->log, t->log_end);
    struct mfile *last = mfq_last(&t->log);
    int64_t last_from = last->from;
    mf_unref(last);
    if (last_from > t->log_end || mfq_min_offset(&t->log) > t->log_end) {
        log_error("timer: the timer log does not match the checkpoint (end %" PRId64 "); discarding it",
                  t->log_end);
        mfq_remove_all(&t->log);
        return 0;
    }
    uint64_t pending = 0;
    for (size_t i = 0;; i++) {
        struct mfile *f = mfq_at(&t->log, i);
        if (!f)
            break;
        for (int64_t off = 0; off + ENTRY <= (int64_t)f->size && f->from + off < t->log_end; off += ENTRY) {
            struct entry e;
            uint8_t *p = f->base + off;
            if (entry_get(p, &e) < 0) {
                log_error("timer: corrupt timer log entry at %" PRId64 "; skipped", f->from + off);
                continue;
            }
            if (seg_note(t, f->from + off, e.slot_ms) < 0) {
                mf_unref(f);
                return -ENOMEM;
            }
            if (e.slot_ms < t->deq_ms)
                continue;
            struct slot *sl = slot_of(t, e.slot_ms);
            if (sl->slot_ms != e.slot_ms) {
                sl->slot_ms = e.slot_ms;
                sl->last = -1;
                sl->count = 0;
            }
            if (e.prev != sl->last) {
                e.prev = sl->last;
                wr_u64be(p, (uint64_t)e.prev);
            }
            sl->last = f->from + off;
            sl->count++;
            pending++;
        }
        int64_t w = t->log_end - f->from;
        mf_set_wrote(f, w > (int64_t)f->size ? (int64_t)f->size : w);
        mf_unref(f);
    }
    t->cur = mfq_last(&t->log);
    ST(t->st.pending, pending);
    return 0;
}

static void *timer_main(void *arg)
{
    struct tmr *t = arg;
    int64_t last_cp = real_ms();
    int64_t cp_deq = t->deq_ms, cp_enq = t->enq_off;
    while (!__atomic_load_n(&t->stop, __ATOMIC_ACQUIRE)) {
        int64_t now = cfg_now(&t->cfg);
        int busy = 0;
        if (t->cfg.follower) {
            /* deliver_slot drops the slots the master is past, relinking
             * what was parked beyond the window and is not due yet */
            int64_t f = __atomic_load_n(&t->follow_ms, __ATOMIC_ACQUIRE);
            if (t->waiting && f > 0) {
                t->deq_ms = f - f % t->prec; /* nothing linked yet: any start is fine */
                t->waiting = 0;
                ST(t->st.dequeue_ms, t->deq_ms);
            }
            now = f - 1;
        }
        while (!t->waiting && t->deq_ms <= now && !__atomic_load_n(&t->stop, __ATOMIC_ACQUIRE)) {
            if (deliver_slot(t, t->deq_ms, now) < 0) {
                busy = -1;
                break;
            }
            t->deq_ms += t->prec;
            ST(t->st.dequeue_ms, t->deq_ms);
        }
        if (t->waiting)
            busy = -1; /* poll for the first position */
        if (busy == 0) {
            int n = enqueue_round(t);
            if (n < 0)
                busy = -1;
            else if (n >= ENQUEUE_PER_ROUND)
                busy = 1;
        }
        int64_t mono = real_ms();
        if (mono - last_cp >= CHECKPOINT_MS && (t->deq_ms != cp_deq || t->enq_off != cp_enq)) {
            if (checkpoint(t) == 0) {
                cp_deq = t->deq_ms;
                cp_enq = t->enq_off;
            }
            last_cp = mono;
        }
        if (busy > 0)
            continue;
        int64_t wait = busy < 0 ? 100 : POLL_MS;
        int64_t to_slot = t->deq_ms - cfg_now(&t->cfg);
        if (to_slot < wait && !t->cfg.follower)
            wait = to_slot < 1 ? 1 : to_slot;
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += (long)wait * 1000000L;
        while (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_mutex_lock(&t->mu);
        if (!t->stop)
            pthread_cond_timedwait(&t->cv, &t->mu, &ts);
        pthread_mutex_unlock(&t->mu);
    }
    return NULL;
}

static void tmr_free(struct tmr *t)
{
    if (t->wheel)
        munmap(t->wheel, t->wheel_bytes);
    mf_unref(t->cur);
    if (t->log_ok)
        mfq_destroy(&t->log);
    if (t->cp_fd >= 0)
        close(t->cp_fd);
    free(t->seg_max);
    free(t->root);
    pthread_mutex_destroy(&t->mu);
    pthread_cond_destroy(&t->cv);
    free(t);
}

int tmr_open(struct store *s, const struct tmr_config *cfg, struct tmr **out)
{
    if (cfg->enable && (cfg->precision_ms < 10 || cfg->precision_ms > 60000 || cfg->max_delay_sec < 1 ||
                        cfg->max_delay_sec > 400LL * 24 * 3600 || cfg->log_segment_size < ENTRY * 16 ||
                        !cfg->root_dir || !*cfg->root_dir)) {
        log_error("timer: invalid configuration: timerPrecisionMs must be 10..60000, timerMaxDelaySec "
                  "1..34560000, the timer log segment at least %d bytes and the directory set",
                  ENTRY * 16);
        return -EINVAL;
    }
    struct tmr *t = calloc(1, sizeof(*t));
    if (!t)
        return -ENOMEM;
    t->cfg = *cfg;
    t->s = s;
    t->cp_fd = -1;
    t->resume = -1;
    t->prec = cfg->precision_ms > 0 ? cfg->precision_ms : 1000;
    pthread_mutex_init(&t->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&t->cv, &ca);
    pthread_condattr_destroy(&ca);
    t->root = strdup(cfg->root_dir ? cfg->root_dir : "");
    if (!t->root) {
        tmr_free(t);
        return -ENOMEM;
    }
    t->cfg.root_dir = t->root;
    if (!cfg->enable) {
        log_info("timer: timer messages disabled (timerWheelEnable=false)");
        *out = t;
        return 0;
    }
    char path[4096];
    int rc = mf_mkdir_p(t->root);
    if (rc == 0) {
        snprintf(path, sizeof(path), "%s/timercheck", t->root);
        t->cp_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
        if (t->cp_fd < 0)
            rc = -errno;
    }
    int found = 0;
    if (rc == 0)
        rc = read_checkpoint(t, &found);
    if (rc == 0) {
        snprintf(path, sizeof(path), "%s/timerlog", t->root);
        rc = mfq_init(&t->log, path, cfg->log_segment_size);
        if (rc == 0) {
            t->log_ok = 1;
            rc = mfq_load(&t->log);
        }
    }
    if (rc < 0) {
        log_error("timer: cannot open the timer files in %s: %s", t->root, strerror(-rc));
        tmr_free(t);
        return rc;
    }
    int64_t now = cfg_now(cfg);
    t->waiting = cfg->follower && !found;
    if (!found) {
        if (mfq_count(&t->log))
            log_warn("timer: no checkpoint in %s: discarding the timer log and relinking the timer queue "
                     "from its start", t->root);
        mfq_remove_all(&t->log);
        t->enq_off = 0;
        t->deq_ms = now - now % t->prec;
        int64_t first = mfq_min_offset(&t->log);
        t->log_end = first > 0 ? first : 0;
    }
    t->nslots = (size_t)((2 * cfg->max_delay_sec * 1000 + t->prec - 1) / t->prec) + 2;
    t->wheel_bytes = (t->nslots * sizeof(struct slot) + 4095) & ~(size_t)4095;
    void *w = mmap(NULL, t->wheel_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (w == MAP_FAILED) {
        rc = -errno;
        log_error("timer: cannot map the wheel (%zu bytes): %s", t->wheel_bytes, strerror(errno));
        tmr_free(t);
        return rc;
    }
    t->wheel = w; /* zero: every slot empty (slot_ms 0) */
    if ((rc = rebuild(t)) < 0 || (rc = checkpoint(t)) < 0) {
        log_error("timer: cannot rebuild the timing wheel: %s", strerror(-rc));
        tmr_free(t);
        return rc;
    }
    ST(t->st.enqueue_offset, t->enq_off);
    ST(t->st.dequeue_ms, t->deq_ms);
    rc = pthread_create(&t->thr, NULL, timer_main, t);
    if (rc != 0) {
        log_error("timer: cannot start the timer thread: %s", strerror(rc));
        tmr_free(t);
        return -rc;
    }
    t->running = 1;
    log_info("timer: opened %s: %" PRIu64 " pending, queue offset %" PRId64 ", delivering from %" PRId64
             " (%" PRId64 " ms behind), wheel %zu slots of %d ms",
             t->root, (uint64_t)LD(t->st.pending), t->enq_off, t->deq_ms, now - t->deq_ms, t->nslots,
             (int)t->prec);
    *out = t;
    return 0;
}

void tmr_close(struct tmr *t)
{
    if (!t)
        return;
    if (t->running) {
        pthread_mutex_lock(&t->mu);
        __atomic_store_n(&t->stop, 1, __ATOMIC_RELEASE);
        pthread_cond_signal(&t->cv);
        pthread_mutex_unlock(&t->mu);
        pthread_join(t->thr, NULL);
        if (checkpoint(t) < 0)
            log_error("timer: final checkpoint failed; the next start redelivers from the previous one");
    }
    tmr_free(t);
}

void tmr_follow(struct tmr *t, int64_t deliver_ms, int64_t queue_offset)
{
    if (!t || !t->cfg.follower || deliver_ms <= 0 || queue_offset < 0)
        return;
    int64_t q = __atomic_load_n(&t->follow_enq, __ATOMIC_RELAXED);
    while (queue_offset > q && !__atomic_compare_exchange_n(&t->follow_enq, &q, queue_offset, 0, __ATOMIC_RELEASE,
                                                             __ATOMIC_RELAXED))
        ;
    int64_t cur = __atomic_load_n(&t->follow_ms, __ATOMIC_RELAXED);
    while (deliver_ms > cur && !__atomic_compare_exchange_n(&t->follow_ms, &cur, deliver_ms, 0, __ATOMIC_RELEASE,
                                                             __ATOMIC_RELAXED))
        ;
    pthread_mutex_lock(&t->mu);
    pthread_cond_signal(&t->cv);
    pthread_mutex_unlock(&t->mu);
}

void tmr_get_checkpoint(struct tmr *t, struct tmr_checkpoint *cp)
{
    cp->deliver_ms = LD(t->cp.deliver_ms);
    cp->queue_offset = LD(t->cp.queue_offset);
    cp->log_end = LD(t->cp.log_end);
    cp->seq = LD(t->cp.seq);
}

void tmr_get_stats(struct tmr *t, struct tmr_stats *st)
{
    st->pending = LD(t->st.pending);
    st->enqueued = LD(t->st.enqueued);
    st->delivered = LD(t->st.delivered);
    st->lost = LD(t->st.lost);
    st->last_lag_ms = LD(t->st.last_lag_ms);
    st->max_lag_ms = LD(t->st.max_lag_ms);
    st->enqueue_offset = LD(t->st.enqueue_offset);
    st->dequeue_ms = LD(t->st.dequeue_ms);
    st->wheel_bytes = t->wheel_bytes;
    st->heap_bytes = sizeof(*t) + t->seg_cap * sizeof(*t->seg_max);
    st->log_bytes = t->log_ok ? (uint64_t)mfq_count(&t->log) * t->cfg.log_segment_size : 0;
}
