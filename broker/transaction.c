/*
 * Transactional messages: half-message preparation, END_TRANSACTION, and the
 * check-back pass (RocketMQ TransactionalMessageServiceImpl,
 * TransactionalMessageBridge, EndTransactionProcessor and
 * TransactionalMessageCheckService, re-designed for one loop thread).
 *
 * A transaction is identified by its origin: the half-queue offset of the
 * first half message (copies re-put by checks carry it in
 * TRAN_PREPARED_QUEUE_OFFSET). Decisions live in a small open-addressing
 * table keyed by origin. An entry stays until the half scan has passed
 * every copy that existed when it was decided (hi) and a grace period
 * (transactionTimeOut + 2 * transactionCheckInterval) is over, so late or
 * repeated end requests are recognised. The op-queue offset persisted for
 * CID_SYS_RMQ_TRANS is the oldest op record still backing a table entry,
 * which is what the table is rebuilt from after a restart. Commits are also
 * checked against the index (the real topic holding a committed copy with
 * the same UNIQ_KEY and born time), which catches a repeat after the entry
 * was retired.
 */
#include "transaction.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "broker.h"
#include "client_manager.h"
#include "log.h"
#include "message.h"

#define TX_BATCH 32
#define TX_SCAN_LIMIT 4096
#define TX_PROPS_CAP (MSG_PROPERTIES_MAX + 1)

enum dec_kind { DEC_LOGGED = 0, DEC_COMMIT, DEC_ROLLBACK, DEC_DISCARD };

struct dec {
    int64_t origin;   /* -1: empty slot */
    int64_t op_qoff;  /* op record backing the entry; -1 if it could not be written */
    int64_t hi;       /* half queue end when decided: every copy lies below */
    int64_t at_ms;
    int kind;
};

struct tx {
    struct broker *b;
    ev_timer timer;
    bool started;
    struct dec *tab;
    size_t cap, n;
    int64_t half_off;   /* next half message to scan */
    int64_t op_read;    /* next op record to load */
    int64_t half_saved, op_saved; /* offsets last handed to the metadata store */
    struct msg_host host;
    int32_t opaque;
    struct store_view views[TX_BATCH];
    char props[TX_PROPS_CAP];
    struct buf body;
    rmt_cmd cmd;
};

static const char *kind_name(int k)
{
    switch (k) {
    case DEC_COMMIT: return "committed";
    case DEC_ROLLBACK: return "rolled back";
    case DEC_DISCARD: return "discarded";
    default: return "ended";
    }
}

static size_t slot_of(const struct tx *t, int64_t origin)
{
    uint64_t h = (uint64_t)origin * 0x9e3779b97f4a7c15ull;
    return (size_t)(h >> 17) & (t->cap - 1);
}

static struct dec *dec_find(struct tx *t, int64_t origin)
{
    for (size_t i = slot_of(t, origin);; i = (i + 1) & (t->cap - 1)) {
        if (t->tab[i].origin == origin)
            return &t->tab[i];
        if (t->tab[i].origin < 0)
            return NULL;
    }
}

static int dec_grow(struct tx *t)
{
    size_t ncap = t->cap * 2;
    struct dec *nt = malloc(ncap * sizeof *nt);
    if (!nt)
        return -ENOMEM;
    for (size_t i = 0; i < ncap; i++)
        nt[i].origin = -1;
    struct dec *old = t->tab;
    size_t ocap = t->cap;
    t->tab = nt;
    t->cap = ncap;
    for (size_t i = 0; i < ocap; i++) {
        if (old[i].origin < 0)
            continue;
        size_t j = slot_of(t, old[i].origin);
        while (nt[j].origin >= 0)
            j = (j + 1) & (ncap - 1);
        nt[j] = old[i];
    }
    free(old);
    return 0;
}

/* Records a decision unless one is known already. Returns the entry, or
 * NULL when out of memory (logged). */
static struct dec *dec_put(struct tx *t, int64_t origin, int kind, int64_t op_qoff, int64_t hi,
                           int64_t at_ms)
{
    struct dec *d = dec_find(t, origin);
    if (d)
        return d;
    if ((t->n + 1) * 2 > t->cap && dec_grow(t)) {
        log_error("transaction decisions: out of memory remembering half offset %lld",
                  (long long)origin);
        return NULL;
    }
    size_t i = slot_of(t, origin);
    while (t->tab[i].origin >= 0)
        i = (i + 1) & (t->cap - 1);
    t->tab[i] = (struct dec){ .origin = origin, .op_qoff = op_qoff, .hi = hi, .at_ms = at_ms, .kind = kind };
    t->n++;
    return &t->tab[i];
}

/* Removes slot i (linear probing: later entries of the cluster move back). */
static void dec_del(struct tx *t, size_t i)
{
    size_t mask = t->cap - 1;
    t->tab[i].origin = -1;
    t->n--;
    for (size_t j = (i + 1) & mask; t->tab[j].origin >= 0; j = (j + 1) & mask) {
        size_t home = slot_of(t, t->tab[j].origin);
        bool between = i <= j ? (home > i && home <= j) : (home > i || home <= j);
        if (between)
            continue;
        t->tab[i] = t->tab[j];
        t->tab[j].origin = -1;
        i = j;
    }
}

static bool name_is(const char *name, size_t nl, const char *want)
{
    return strlen(want) == nl && memcmp(name, want, nl) == 0;
}

/* Parses a non-negative decimal; -1 if malformed. */
static int64_t parse_off(const char *v, size_t vl)
{
    if (vl == 0 || vl > 18)
        return -1;
    int64_t x = 0;
    for (size_t i = 0; i < vl; i++) {
        if (v[i] < '0' || v[i] > '9')
            return -1;
        x = x * 10 + (v[i] - '0');
    }
    return x;
}

static int64_t prop_int(const struct msg_record *r, const char *name, int64_t def)
{
    const char *v;
    size_t vl;
    if (!msg_prop_get(r->props, r->props_len, name, &v, &vl))
        return def;
    int64_t x = parse_off(v, vl);
    return x < 0 ? def : x;
}

/* Copies a property value into out (NUL-terminated); "" when absent. */
static const char *prop_str(const struct msg_record *r, const char *name, char *out, size_t cap)
{
    const char *v;
    size_t vl;
    out[0] = 0;
    if (msg_prop_get(r->props, r->props_len, name, &v, &vl) && vl < cap) {
        memcpy(out, v, vl);
        out[vl] = 0;
    }
    return out;
}

static int64_t origin_of(const struct msg_record *r)
{
    return prop_int(r, MSG_PROP_TRANSACTION_PREPARED_QUEUE_OFFSET, r->queue_offset);
}

static bool topic_is(const struct msg_record *r, const char *topic)
{
    return r->topic_len == strlen(topic) && memcmp(r->topic, topic, r->topic_len) == 0;
}

/* Copies r's properties minus the names in skip into t->props. */
static int props_without(struct tx *t, const struct msg_record *r, const char *const *skip, size_t *len)
{
    size_t pos = 0, nl, vl;
    const char *name, *val;
    *len = 0;
    while (msg_prop_next(r->props, r->props_len, &pos, &name, &nl, &val, &vl) == 1) {
        bool drop = false;
        for (int i = 0; skip[i] && !drop; i++)
            drop = name_is(name, nl, skip[i]);
        if (drop)
            continue;
        char nm[256];
        if (nl >= sizeof nm)
            return -ENOSPC;
        memcpy(nm, name, nl);
        nm[nl] = 0;
        if (msg_prop_append(t->props, sizeof t->props, len, nm, val, vl))
            return -ENOSPC;
    }
    return 0;
}

bool tx_is_prepared(const char *props, size_t len, int32_t sysflag)
{
    const char *v;
    size_t vl;
    if ((sysflag & MSG_SYSFLAG_TRANSACTION_MASK) == MSG_SYSFLAG_TRANSACTION_PREPARED)
        return true;
    return props && msg_prop_get(props, len, MSG_PROP_TRANSACTION_PREPARED, &v, &vl) && vl == 4 &&
           strncasecmp(v, "true", 4) == 0;
}

int tx_prepare_half(struct tx *t, char *props, size_t cap, size_t *plen, const char **topic,
                    int32_t *qid, int32_t *sysflag)
{
    (void)t;
    char q[16];
    int ql = snprintf(q, sizeof q, "%d", *qid);
    if (msg_prop_append(props, cap, plen, MSG_PROP_REAL_TOPIC, *topic, strlen(*topic)) ||
        msg_prop_append(props, cap, plen, MSG_PROP_REAL_QUEUE_ID, q, (size_t)ql))
        return -ENOSPC;
    *topic = TX_HALF_TOPIC;
    *qid = 0;
    *sysflag &= ~MSG_SYSFLAG_TRANSACTION_MASK;
    return 0;
}

/* Reads the half message at queue offset qoff. The record views into the
 * log until h is released. Returns 0 or -ENOENT. */
static int read_half(struct tx *t, int64_t qoff, struct msg_record *r, struct store_hold *h)
{
    struct store_view v;
    struct store_get_req gr = { .topic = TX_HALF_TOPIC, .queue_id = 0, .offset = qoff, .max_count = 1,
                                .views = &v };
    struct store_get_result res;
    memset(&res, 0, sizeof res);
    enum store_get_status st = store_get(t->b->store, &gr, &res);
    *h = res.hold;
    if (st != STORE_GET_FOUND || res.count != 1 || v.queue_offset != qoff ||
        msg_record_decode(v.data, v.len, r, 0) <= 0)
        return -ENOENT;
    return 0;
}

/* Appends an op record (tag "d", body = half queue offset). Returns its op
 * queue offset or -1 (logged). */
static int64_t write_op(struct tx *t, int64_t half_qoff)
{
    struct broker *b = t->b;
    char body[24], props[64];
    int bl = snprintf(body, sizeof body, "%lld", (long long)half_qoff);
    size_t pl = 0;
    msg_prop_append(props, sizeof props, &pl, MSG_PROP_TAGS, TX_REMOVE_TAG, 1);
    msg_prop_append(props, sizeof props, &pl, MSG_PROP_WAIT_STORE_MSG_OK, "false", 5);
    struct store_msg m = {
        .topic = TX_OP_TOPIC, .queue_id = 0, .sysflag = t->host.v6 ? MSG_SYSFLAG_BORNHOST_V6 : 0,
        .body = body, .body_len = (uint32_t)bl, .props = props, .props_len = (uint32_t)pl,
        .born_ts = brk_now_ms(), .born_host = t->host,
    };
    struct store_put_result res;
    enum store_put_status st = store_put(b->store, &m, &res);
    if (st != STORE_PUT_OK) {
        log_error("cannot record the transaction decision for half offset %lld in %s: %s",
                  (long long)half_qoff, TX_OP_TOPIC, store_put_status_str(st));
        return -1;
    }
    b->stats.put_msgs++;
    return res.queue_offset;
}

static int64_t half_end(struct tx *t)
{
    return store_max_queue_offset(t->b->store, TX_HALF_TOPIC, 0);
}

/* Loads op records not yet seen into the decision table. */
static void load_ops(struct tx *t)
{
    struct broker *b = t->b;
    int64_t end = store_max_queue_offset(b->store, TX_OP_TOPIC, 0);
    int64_t hi = half_end(t);
    while (t->op_read < end) {
        struct store_get_req gr = { .topic = TX_OP_TOPIC, .queue_id = 0, .offset = t->op_read,
                                    .max_count = TX_BATCH, .views = t->views };
        struct store_get_result res;
        memset(&res, 0, sizeof res);
        enum store_get_status st = store_get(b->store, &gr, &res);
        if (st != STORE_GET_FOUND || res.count == 0) {
            store_hold_release(&res.hold);
            if (res.next_begin_offset > t->op_read &&
                (st == STORE_GET_OFFSET_TOO_SMALL || st == STORE_GET_NO_MATCHED_MESSAGE ||
                 st == STORE_GET_MESSAGE_WAS_REMOVING)) {
                log_warn("%s: op offset %lld unreadable (%s); continuing at %lld", TX_OP_TOPIC,
                         (long long)t->op_read, store_get_status_str(st), (long long)res.next_begin_offset);
                t->op_read = res.next_begin_offset;
                continue;
            }
            break;
        }
        for (uint32_t i = 0; i < res.count; i++) {
            struct msg_record op;
            const char *tag;
            size_t tl;
            int64_t qoff = t->views[i].queue_offset;
            if (msg_record_decode(t->views[i].data, t->views[i].len, &op, 0) <= 0 ||
                !msg_prop_get(op.props, op.props_len, MSG_PROP_TAGS, &tag, &tl) ||
                !name_is(tag, tl, TX_REMOVE_TAG)) {
                log_warn("%s: op record at %lld is not a remove record; ignored", TX_OP_TOPIC,
                         (long long)qoff);
                continue;
            }
            const char *p = (const char *)op.body, *e = p + op.body_len;
            while (p < e) {
                const char *c = memchr(p, ',', (size_t)(e - p));
                const char *stop = c ? c : e;
                int64_t half = parse_off(p, (size_t)(stop - p));
                p = c ? c + 1 : e;
                if (half < 0)
                    continue;
                struct msg_record hr;
                struct store_hold h = STORE_HOLD_INIT;
                int64_t origin = read_half(t, half, &hr, &h) == 0 ? origin_of(&hr) : half;
                store_hold_release(&h);
                dec_put(t, origin, DEC_LOGGED, qoff, hi, op.store_ts);
            }
        }
        t->op_read = t->views[res.count - 1].queue_offset + 1;
        if (res.next_begin_offset > t->op_read)
            t->op_read = res.next_begin_offset;
        store_hold_release(&res.hold);
    }
}

static int32_t put_status_code(enum store_put_status st)
{
    switch (st) {
    case STORE_PUT_OK:
    case STORE_PUT_FLUSH_DISK_TIMEOUT:
    case STORE_PUT_FLUSH_SLAVE_TIMEOUT:
    case STORE_PUT_SLAVE_NOT_AVAILABLE:
        return RMT_RESP_SUCCESS;
    case STORE_PUT_MESSAGE_ILLEGAL:
    case STORE_PUT_PROPERTIES_SIZE_EXCEEDED:
        return RMT_RESP_MESSAGE_ILLEGAL;
    case STORE_PUT_SERVICE_NOT_AVAILABLE:
    case STORE_PUT_DISK_FULL:
        return RMT_RESP_SERVICE_NOT_AVAILABLE;
    default:
        return RMT_RESP_SYSTEM_ERROR;
    }
}

/* True if the real topic already holds the committed copy of half message
 * r (same UNIQ_KEY and born time, commit type). */
static bool committed_before(struct tx *t, const struct msg_record *r, const char *real_topic)
{
    char uniq[128];
    if (!*prop_str(r, MSG_PROP_UNIQ_CLIENT_MESSAGE_ID_KEYIDX, uniq, sizeof uniq))
        return false;
    int64_t phys[4];
    int n = store_query_by_key(t->b->store, real_topic, uniq, 4, 0, INT64_MAX, phys);
    for (int i = 0; i < n; i++) {
        struct store_view v;
        struct store_hold h = STORE_HOLD_INIT;
        struct msg_record c;
        bool same = store_lookup(t->b->store, phys[i], &v, &h) == STORE_LOOKUP_OK &&
                    msg_record_decode(v.data, v.len, &c, 0) > 0 && c.born_ts == r->born_ts &&
                    (c.sysflag & MSG_SYSFLAG_TRANSACTION_MASK) == MSG_SYSFLAG_TRANSACTION_COMMIT;
        store_hold_release(&h);
        if (same)
            return true;
    }
    return false;
}

/* Re-publishes half message r to its real topic. Returns a store status. */
static enum store_put_status commit_half(struct tx *t, const struct msg_record *r, const char *topic,
                                         int32_t qid, int64_t clo)
{
    static const char *const skip[] = { MSG_PROP_REAL_TOPIC, MSG_PROP_REAL_QUEUE_ID,
                                        MSG_PROP_TRANSACTION_PREPARED,
                                        MSG_PROP_TRANSACTION_CHECK_TIMES,
                                        MSG_PROP_TRANSACTION_PREPARED_QUEUE_OFFSET, NULL };
    size_t plen;
    if (props_without(t, r, skip, &plen))
        return STORE_PUT_PROPERTIES_SIZE_EXCEEDED;
    struct store_msg m = {
        .topic = topic, .queue_id = qid, .flag = r->flag,
        .sysflag = (r->sysflag & ~(MSG_SYSFLAG_TRANSACTION_MASK | MSG_SYSFLAG_STOREHOST_V6)) |
                   MSG_SYSFLAG_TRANSACTION_COMMIT,
        .body = r->body, .body_len = r->body_len, .props = t->props, .props_len = (uint32_t)plen,
        .born_ts = r->born_ts, .born_host = r->born_host, .reconsume_times = r->reconsume_times,
        .prepared_tx_offset = clo,
    };
    struct store_put_result res;
    enum store_put_status st = store_put(t->b->store, &m, &res);
    if (st == STORE_PUT_OK)
        t->b->stats.put_msgs++;
    return st;
}

/* Error answer for END_TRANSACTION; logged too, since oneway requests (the
 * usual case) get no answer. */
static void end_fail(struct tx *t, rmt_conn *c, const rmt_cmd *req, int32_t code, const char *what,
                     int64_t clo)
{
    log_warn("END_TRANSACTION from %s for commit log offset %lld refused: %s", rmt_conn_peer(c),
             (long long)clo, what);
    brk_err(t->b, c, req, code, "%s", what);
}

static void end_ok(struct tx *t, rmt_conn *c, const rmt_cmd *req)
{
    brk_resp(t->b, RMT_RESP_SUCCESS);
    brk_reply(t->b, c, req, false);
}

void tx_on_end(struct tx *t, rmt_conn *c, rmt_cmd *req)
{
    struct broker *b = t->b;
    const char *pgroup;
    int64_t tso, clo, cor;
    if (brk_need_str(b, c, req, "producerGroup", &pgroup) ||
        brk_need_int(b, c, req, "tranStateTableOffset", &tso) ||
        brk_need_int(b, c, req, "commitLogOffset", &clo) ||
        brk_need_int(b, c, req, "commitOrRollback", &cor))
        return;
    bool from_check = rmt_cmd_ext_bool(req, "fromTransactionCheck", false);
    const char *msg_id = rmt_cmd_ext(req, "msgId");
    if (!msg_id)
        msg_id = "";
    if (b->cfg.role == BRK_SLAVE) {
        end_fail(t, c, req, RMT_RESP_SLAVE_NOT_AVAILABLE,
                 "the broker is a slave; end transaction is forbidden", clo);
        return;
    }
    if (cor != MSG_SYSFLAG_TRANSACTION_COMMIT && cor != MSG_SYSFLAG_TRANSACTION_ROLLBACK) {
        /* Unknown state: the check pass asks again later; no answer, as RocketMQ. */
        log_info("producer %s (group %s) reports transaction %s%s as %s", rmt_conn_peer(c), pgroup, msg_id,
                 from_check ? " (check answer)" : "",
                 cor == MSG_SYSFLAG_TRANSACTION_NOT ? "unknown" : "an invalid state");
        return;
    }
    bool commit = cor == MSG_SYSFLAG_TRANSACTION_COMMIT;
    struct store_view v;
    struct store_hold h = STORE_HOLD_INIT;
    struct msg_record r;
    if (clo < 0 || store_lookup(b->store, clo, &v, &h) != STORE_LOOKUP_OK ||
        msg_record_decode(v.data, v.len, &r, 0) <= 0 || !topic_is(&r, TX_HALF_TOPIC)) {
        store_hold_release(&h);
        end_fail(t, c, req, RMT_RESP_SYSTEM_ERROR, "Find prepared transaction message failed", clo);
        return;
    }
    char group[META_GROUP_NAME_MAX + 1], topic[META_TOPIC_NAME_MAX + 1], qs[16];
    const char *why = NULL;
    if (strcmp(prop_str(&r, MSG_PROP_PRODUCER_GROUP, group, sizeof group), pgroup) != 0)
        why = "The producer group wrong";
    else if (r.queue_offset != tso)
        why = "The transaction state table offset wrong";
    else if (r.phys_offset != clo)
        why = "The commit log offset wrong";
    if (why) {
        store_hold_release(&h);
        end_fail(t, c, req, RMT_RESP_SYSTEM_ERROR, why, clo);
        return;
    }
    int64_t origin = origin_of(&r);
    struct dec *d = dec_find(t, origin);
    if (d) {
        store_hold_release(&h);
        int want = commit ? DEC_COMMIT : DEC_ROLLBACK;
        log_info("transaction %s (half offset %lld) was already %s; repeated %s from %s ignored", msg_id,
                 (long long)origin, kind_name(d->kind), commit ? "commit" : "rollback", rmt_conn_peer(c));
        if (d->kind == want || d->kind == DEC_LOGGED)
            end_ok(t, c, req);
        else
            brk_err(b, c, req, RMT_RESP_SYSTEM_ERROR, "the transaction was already %s", kind_name(d->kind));
        return;
    }
    int64_t hi = half_end(t);
    if (commit) {
        prop_str(&r, MSG_PROP_REAL_TOPIC, topic, sizeof topic);
        prop_str(&r, MSG_PROP_REAL_QUEUE_ID, qs, sizeof qs);
        int64_t qid = parse_off(qs, strlen(qs));
        if (!topic[0] || qid < 0 || qid >= META_QUEUE_MAX) {
            store_hold_release(&h);
            end_fail(t, c, req, RMT_RESP_SYSTEM_ERROR,
                     "the half message has no valid REAL_TOPIC / REAL_QID", clo);
            return;
        }
        if (committed_before(t, &r, topic)) {
            log_info("transaction %s (half offset %lld) is already committed in %s; not committing again",
                     msg_id, (long long)origin, topic);
        } else {
            enum store_put_status st = commit_half(t, &r, topic, (int32_t)qid, clo);
            if (st != STORE_PUT_OK) {
                store_hold_release(&h);
                char what[160];
                snprintf(what, sizeof what, "committing to %s failed: %s", topic, store_put_status_str(st));
                end_fail(t, c, req, put_status_code(st), what, clo);
                return;
            }
        }
    }
    store_hold_release(&h);
    int64_t op = write_op(t, tso);
    dec_put(t, origin, commit ? DEC_COMMIT : DEC_ROLLBACK, op, hi, brk_now_ms());
    log_debug("transaction %s (half offset %lld, group %s) %s%s", msg_id, (long long)origin, pgroup,
              commit ? "committed" : "rolled back", from_check ? " after a check" : "");
    end_ok(t, c, req);
}

/* Sends CHECK_TRANSACTION_STATE for the copy just re-put (r with the copy's
 * offsets and properties in t->props / plen) to a producer of its group. */
static void send_check(struct tx *t, const struct msg_record *r, size_t plen,
                       const struct store_put_result *copy)
{
    struct broker *b = t->b;
    char group[META_GROUP_NAME_MAX + 1], topic[META_TOPIC_NAME_MAX + 1], qs[16], uniq[128];
    struct msg_record cr = *r;
    cr.props = t->props;
    cr.props_len = (uint32_t)plen;
    prop_str(&cr, MSG_PROP_PRODUCER_GROUP, group, sizeof group);
    prop_str(&cr, MSG_PROP_UNIQ_CLIENT_MESSAGE_ID_KEYIDX, uniq, sizeof uniq);
    prop_str(&cr, MSG_PROP_REAL_TOPIC, topic, sizeof topic);
    prop_str(&cr, MSG_PROP_REAL_QUEUE_ID, qs, sizeof qs);
    int64_t qid = parse_off(qs, strlen(qs));
    rmt_conn *ch = group[0] ? cm_producer_channel(b->cm, group) : NULL;
    if (!ch) {
        log_warn("cannot check transaction %s (half offset %lld): no producer of group '%s' is online",
                 uniq, (long long)copy->queue_offset, group);
        return;
    }
    cr.topic = topic[0] ? topic : TX_HALF_TOPIC;
    cr.topic_len = (uint32_t)strlen(cr.topic);
    cr.queue_id = qid >= 0 ? (int32_t)qid : 0;
    cr.queue_offset = copy->queue_offset;
    cr.phys_offset = copy->phys_offset;
    cr.store_ts = copy->store_ts;
    size_t size = msg_record_size(cr.body_len, cr.topic_len, cr.props_len, cr.sysflag);
    buf_reset(&t->body);
    if (buf_reserve(&t->body, size) || msg_record_encode(t->body.data, size, &cr) < 0) {
        log_error("cannot encode the check of transaction %s", uniq);
        return;
    }
    t->body.len = size;
    rmt_cmd *cmd = &t->cmd;
    rmt_cmd_reset(cmd, RMT_REQ_CHECK_TRANSACTION_STATE);
    cmd->flag = RMT_FLAG_ONEWAY;
    cmd->serialize = RMT_SERIALIZE_JSON;
    cmd->opaque = ++t->opaque;
    rmt_cmd_set_ext_int(cmd, "tranStateTableOffset", copy->queue_offset);
    rmt_cmd_set_ext_int(cmd, "commitLogOffset", copy->phys_offset);
    rmt_cmd_set_ext(cmd, "msgId", uniq);
    rmt_cmd_set_ext(cmd, "transactionId", uniq);
    rmt_cmd_set_ext(cmd, "offsetMsgId", copy->msg_id);
    rmt_cmd_set_ext(cmd, "brokerName", b->cfg.name);
    rmt_cmd_set_body(cmd, t->body.data, (uint32_t)t->body.len);
    int rc = rmt_conn_send(ch, cmd);
    if (rc)
        log_warn("cannot send the check of transaction %s to %s: %s", uniq, rmt_conn_peer(ch), strerror(-rc));
    else
        log_info("checking transaction %s (half offset %lld, check %lld) with producer %s of group %s", uniq,
                 (long long)copy->queue_offset,
                 (long long)prop_int(&cr, MSG_PROP_TRANSACTION_CHECK_TIMES, 0), rmt_conn_peer(ch), group);
}

/* Re-puts a copy of half message r. counted: one more check is recorded in
 * TRANSACTION_CHECK_TIMES and the producer is asked; otherwise (immunity)
 * the copy only moves the message forward. Returns 0, -ENOSPC (properties
 * too long for the extra ones) or -EIO (the store refused; logged). */
static int put_back(struct tx *t, const struct msg_record *r, int64_t origin, int64_t checks, bool counted)
{
    static const char *const skip[] = { MSG_PROP_TRANSACTION_CHECK_TIMES,
                                        MSG_PROP_TRANSACTION_PREPARED_QUEUE_OFFSET, NULL };
    size_t plen;
    char n[24], o[24];
    int nl = snprintf(n, sizeof n, "%lld", (long long)(counted ? checks + 1 : checks));
    int ol = snprintf(o, sizeof o, "%lld", (long long)origin);
    if (props_without(t, r, skip, &plen) ||
        ((counted || checks > 0) &&
         msg_prop_append(t->props, sizeof t->props, &plen, MSG_PROP_TRANSACTION_CHECK_TIMES, n, (size_t)nl)) ||
        msg_prop_append(t->props, sizeof t->props, &plen, MSG_PROP_TRANSACTION_PREPARED_QUEUE_OFFSET, o,
                        (size_t)ol))
        return -ENOSPC;
    struct store_msg m = {
        .topic = TX_HALF_TOPIC, .queue_id = 0, .flag = r->flag,
        .sysflag = r->sysflag & ~MSG_SYSFLAG_STOREHOST_V6, .body = r->body, .body_len = r->body_len,
        .props = t->props, .props_len = (uint32_t)plen, .born_ts = r->born_ts, .born_host = r->born_host,
        .reconsume_times = r->reconsume_times,
    };
    struct store_put_result res;
    enum store_put_status st = store_put(t->b->store, &m, &res);
    if (st != STORE_PUT_OK) {
        log_warn("cannot re-put half message at %lld: %s; retried on the next check",
                 (long long)r->queue_offset, store_put_status_str(st));
        return -EIO;
    }
    t->b->stats.put_msgs++;
    if (counted)
        send_check(t, r, plen, &res);
    return 0;
}

static void discard(struct tx *t, const struct msg_record *r, int64_t origin, const char *why)
{
    char uniq[128], topic[META_TOPIC_NAME_MAX + 1], group[META_GROUP_NAME_MAX + 1];
    log_warn("transaction message %s (topic %s, producer group %s, half offset %lld) discarded: %s",
             prop_str(r, MSG_PROP_UNIQ_CLIENT_MESSAGE_ID_KEYIDX, uniq, sizeof uniq),
             prop_str(r, MSG_PROP_REAL_TOPIC, topic, sizeof topic),
             prop_str(r, MSG_PROP_PRODUCER_GROUP, group, sizeof group), (long long)r->queue_offset, why);
    int64_t op = write_op(t, r->queue_offset);
    dec_put(t, origin, DEC_DISCARD, op, half_end(t), brk_now_ms());
}

enum visit { V_NEXT, V_STOP };

/* Handles half message r at the scan position. */
static enum visit visit(struct tx *t, const struct msg_record *r, int64_t start, int64_t now)
{
    struct broker *b = t->b;
    int64_t origin = origin_of(r);
    if (dec_find(t, origin))
        return V_NEXT;
    int64_t checks = prop_int(r, MSG_PROP_TRANSACTION_CHECK_TIMES, 0);
    if (checks >= b->cfg.tx_check_max) {
        char why[96];
        snprintf(why, sizeof why, "no decision after %lld checks", (long long)checks);
        discard(t, r, origin, why);
        return V_NEXT;
    }
    if (now - r->born_ts > b->cfg.file_reserved_time * 3600000) {
        discard(t, r, origin, "older than fileReservedTime");
        return V_NEXT;
    }
    if (r->store_ts >= start)
        return V_STOP;
    int64_t age = now - r->born_ts;
    int64_t immunity = b->cfg.tx_timeout_ms;
    int64_t secs = prop_int(r, MSG_PROP_CHECK_IMMUNITY_TIME_IN_SECONDS, -1);
    bool counted = true;
    if (secs >= 0) {
        if (secs * 1000 > immunity)
            immunity = secs * 1000;
        counted = !(age >= 0 && age < immunity);
    } else if (age >= 0 && age < immunity) {
        return V_STOP;
    }
    int rc = put_back(t, r, origin, checks, counted);
    if (rc == -ENOSPC) {
        discard(t, r, origin, "properties too long to re-put it for a check");
        return V_NEXT;
    }
    return rc ? V_STOP : V_NEXT;
}

/* Scans half messages from half_off; returns true if the scan limit cut it short. */
static bool scan_half(struct tx *t, int64_t start)
{
    struct broker *b = t->b;
    int64_t now = brk_now_ms();
    int64_t end = half_end(t);
    int done = 0;
    while (t->half_off < end) {
        if (done >= TX_SCAN_LIMIT)
            return true;
        struct store_get_req gr = { .topic = TX_HALF_TOPIC, .queue_id = 0, .offset = t->half_off,
                                    .max_count = TX_BATCH, .views = t->views };
        struct store_get_result res;
        memset(&res, 0, sizeof res);
        enum store_get_status st = store_get(b->store, &gr, &res);
        if (st != STORE_GET_FOUND || res.count == 0) {
            store_hold_release(&res.hold);
            if (res.next_begin_offset > t->half_off &&
                (st == STORE_GET_OFFSET_TOO_SMALL || st == STORE_GET_NO_MATCHED_MESSAGE ||
                 st == STORE_GET_MESSAGE_WAS_REMOVING)) {
                log_warn("%s: half offset %lld unreadable (%s); continuing at %lld", TX_HALF_TOPIC,
                         (long long)t->half_off, store_get_status_str(st), (long long)res.next_begin_offset);
                t->half_off = res.next_begin_offset;
                continue;
            }
            return false;
        }
        bool stop = false;
        for (uint32_t i = 0; i < res.count && !stop; i++, done++) {
            struct msg_record r;
            if (msg_record_decode(t->views[i].data, t->views[i].len, &r, 0) <= 0) {
                log_warn("%s: record at offset %lld is corrupt; skipped", TX_HALF_TOPIC,
                         (long long)t->views[i].queue_offset);
            } else if (visit(t, &r, start, now) == V_STOP) {
                stop = true;
                break;
            }
            t->half_off = t->views[i].queue_offset + 1;
        }
        store_hold_release(&res.hold);
        if (stop)
            return false;
    }
    return false;
}

/* Drops decisions no longer needed and persists the scan progress. */
static void retire(struct tx *t, int64_t now)
{
    struct broker *b = t->b;
    int64_t grace = b->cfg.tx_timeout_ms + 2 * b->cfg.tx_check_interval_ms;
    int64_t op_off = t->op_read;
    for (size_t i = 0; i < t->cap;) {
        struct dec *d = &t->tab[i];
        if (d->origin >= 0 && t->half_off >= d->hi && now - d->at_ms > grace) {
            dec_del(t, i);
            continue;
        }
        if (d->origin >= 0 && d->op_qoff >= 0 && d->op_qoff < op_off)
            op_off = d->op_qoff;
        i++;
    }
    if (t->half_off != t->half_saved &&
        meta_offset_commit(b->meta, TX_HALF_TOPIC, TX_GROUP, 0, t->half_off) == 0)
        t->half_saved = t->half_off;
    if (op_off != t->op_saved && meta_offset_commit(b->meta, TX_OP_TOPIC, TX_GROUP, 0, op_off) == 0)
        t->op_saved = op_off;
}

static void on_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct tx *t = w->data;
    struct broker *b = t->b;
    double iv = (double)b->cfg.tx_check_interval_ms / 1000.0;
    if (b->stopping || b->cfg.role == BRK_SLAVE)
        return;
    int64_t start = brk_now_ms();
    load_ops(t);
    bool more = scan_half(t, start);
    retire(t, brk_now_ms());
    ev_timer_stop(loop, w);
    ev_timer_set(w, more ? 0.0 : iv, iv);
    ev_timer_start(loop, w);
}

static int64_t stored_offset(struct tx *t, const char *topic)
{
    int64_t off;
    if (meta_offset_query(t->b->meta, topic, TX_GROUP, 0, &off) == 0)
        return off;
    return store_min_queue_offset(t->b->store, topic, 0);
}

struct tx *tx_new(struct broker *b)
{
    struct tx *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->b = b;
    rmt_cmd_init(&t->cmd, RMT_REQ_CHECK_TRANSACTION_STATE);
    t->cap = 1024;
    t->tab = malloc(t->cap * sizeof *t->tab);
    if (!t->tab) {
        tx_free(t);
        return NULL;
    }
    for (size_t i = 0; i < t->cap; i++)
        t->tab[i].origin = -1;
    if (brk_parse_host(b->addr, &t->host))
        memset(&t->host, 0, sizeof t->host);
    if (!brk_topic_system(b, TX_HALF_TOPIC, 1, META_PERM_READ | META_PERM_WRITE) ||
        !brk_topic_system(b, TX_OP_TOPIC, 1, META_PERM_READ | META_PERM_WRITE)) {
        log_error("cannot create the transaction topics %s / %s", TX_HALF_TOPIC, TX_OP_TOPIC);
        tx_free(t);
        return NULL;
    }
    t->half_off = t->half_saved = stored_offset(t, TX_HALF_TOPIC);
    t->op_read = t->op_saved = stored_offset(t, TX_OP_TOPIC);
    int64_t op_from = t->op_read;
    load_ops(t);
    if (t->op_read > op_from || t->half_off < half_end(t))
        log_info("transactions: %zu decisions reloaded (op offsets %lld..%lld), half messages from %lld to %lld",
                 t->n, (long long)op_from, (long long)t->op_read, (long long)t->half_off,
                 (long long)half_end(t));
    return t;
}

void tx_start(struct tx *t)
{
    double iv = (double)t->b->cfg.tx_check_interval_ms / 1000.0;
    ev_timer_init(&t->timer, on_timer, iv, iv);
    t->timer.data = t;
    ev_timer_start(t->b->loop, &t->timer);
    t->started = true;
}

void tx_stop(struct tx *t)
{
    if (t && t->started) {
        ev_timer_stop(t->b->loop, &t->timer);
        t->started = false;
    }
}

void tx_free(struct tx *t)
{
    if (!t)
        return;
    tx_stop(t);
    free(t->tab);
    buf_free(&t->body);
    rmt_cmd_destroy(&t->cmd);
    free(t);
}
