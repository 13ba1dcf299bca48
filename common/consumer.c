/*
 * Pull consumer (see consumer.h): the single PULL_MESSAGE call, the body
 * walker, and the managed consumer with heartbeats, rebalancing, offset
 * storage and one long-polling pull per assigned queue; in orderly mode
 * also the queue locks (LOCK_BATCH_MQ / UNLOCK_BATCH_MQ on each broker's
 * master, renewed on a timer and after each rebalance).
 *
 * Every asynchronous operation holds a reference on the consumer, so a
 * consumer freed while answers are still outstanding lives on (inert) until
 * the last one arrives; rmt_client_free fails outstanding calls, so that
 * always happens.
 */
#include "consumer.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include "json_util.h"
#include "log.h"

int cli_pull_next(const uint8_t *body, size_t len, size_t *pos, struct cli_msg_view *v)
{
    if (*pos >= len)
        return 0;
    struct msg_record r;
    int n = msg_record_decode(body + *pos, len - *pos, &r, 0);
    if (n <= 0)
        return -EBADMSG;
    memset(v, 0, sizeof *v);
    v->topic = r.topic;
    v->topic_len = r.topic_len;
    v->body = r.body;
    v->body_len = r.body_len;
    v->props = r.props;
    v->props_len = r.props_len;
    v->queue_id = r.queue_id;
    v->queue_offset = r.queue_offset;
    v->commit_log_offset = r.phys_offset;
    v->born_ts = r.born_ts;
    v->store_ts = r.store_ts;
    v->flag = r.flag;
    v->sysflag = r.sysflag;
    v->reconsume_times = r.reconsume_times;
    msg_offset_id_encode(&r.store_host, r.phys_offset, v->offset_msg_id);
    const char *val;
    size_t vl;
    if (msg_prop_get(r.props, r.props_len, MSG_PROP_TAGS, &val, &vl)) {
        v->tags = val;
        v->tags_len = vl;
    }
    if (msg_prop_get(r.props, r.props_len, MSG_PROP_KEYS, &val, &vl)) {
        v->keys = val;
        v->keys_len = vl;
    }
    if (msg_prop_get(r.props, r.props_len, MSG_PROP_UNIQ_CLIENT_MESSAGE_ID_KEYIDX, &val, &vl)) {
        v->msg_id = val;
        v->msg_id_len = vl;
    } else {
        v->msg_id = v->offset_msg_id;
        v->msg_id_len = strlen(v->offset_msg_id);
    }
    *pos += (size_t)n;
    return 1;
}

struct pull_call {
    cli_pull_fn cb;
    void *ud;
};

static void pull_resp_cb(int status, rmt_cmd *resp, void *ud)
{
    struct pull_call k = *(struct pull_call *)ud;
    free(ud);
    struct cli_pull_result r;
    memset(&r, 0, sizeof r);
    r.code = -1;
    r.next_begin = r.min_offset = r.max_offset = -1;
    if (status) {
        r.err = status;
        snprintf(r.errmsg, sizeof r.errmsg, "pull failed: %s", strerror(-status));
        k.cb(&r, k.ud);
        return;
    }
    r.code = resp->code;
    switch (resp->code) {
    case RMT_RESP_SUCCESS: r.status = CLI_PULL_FOUND; break;
    case RMT_RESP_PULL_NOT_FOUND: r.status = CLI_PULL_NO_NEW_MSG; break;
    case RMT_RESP_PULL_RETRY_IMMEDIATELY: r.status = CLI_PULL_NO_MATCHED_MSG; break;
    case RMT_RESP_PULL_OFFSET_MOVED: r.status = CLI_PULL_OFFSET_ILLEGAL; break;
    default:
        r.err = -EPROTO;
        snprintf(r.errmsg, sizeof r.errmsg, "pull refused: code %d: %s", resp->code,
                 rmt_cmd_remark(resp) ? rmt_cmd_remark(resp) : "");
        k.cb(&r, k.ud);
        return;
    }
    if (rmt_cmd_ext_int(resp, "nextBeginOffset", &r.next_begin)) {
        r.err = -EBADMSG;
        snprintf(r.errmsg, sizeof r.errmsg, "pull answer (code %d) lacks nextBeginOffset", resp->code);
    }
    rmt_cmd_ext_int_or(resp, "minOffset", -1, &r.min_offset);
    rmt_cmd_ext_int_or(resp, "maxOffset", -1, &r.max_offset);
    rmt_cmd_ext_int_or(resp, "suggestWhichBrokerId", 0, &r.suggest_broker);
    r.body = resp->body;
    r.body_len = resp->body_len;
    k.cb(&r, k.ud);
}

int cli_pull(cli_client *c, const char *addr, const struct cli_pull_req *q, rmt_cmd *cmd,
             cli_pull_fn cb, void *ud)
{
    struct pull_call *k = malloc(sizeof *k);
    if (!k)
        return -ENOMEM;
    k->cb = cb;
    k->ud = ud;
    cli_cmd_reset(c, cmd, RMT_REQ_PULL_MESSAGE);
    int32_t flag = CLI_PULL_FLAG_SUBSCRIPTION;
    if (q->commit_offset >= 0)
        flag |= CLI_PULL_FLAG_COMMIT_OFFSET;
    if (q->suspend_ms > 0)
        flag |= CLI_PULL_FLAG_SUSPEND;
    int rc = rmt_cmd_set_ext(cmd, "consumerGroup", q->group);
    if (!rc) rc = rmt_cmd_set_ext(cmd, "topic", q->topic);
    if (!rc) rc = rmt_cmd_set_ext_int(cmd, "queueId", q->queue_id);
    if (!rc) rc = rmt_cmd_set_ext_int(cmd, "queueOffset", q->offset);
    if (!rc) rc = rmt_cmd_set_ext_int(cmd, "maxMsgNums", q->max_msgs > 0 ? q->max_msgs : 32);
    if (!rc) rc = rmt_cmd_set_ext_int(cmd, "sysFlag", flag);
    if (!rc) rc = rmt_cmd_set_ext_int(cmd, "commitOffset", q->commit_offset >= 0 ? q->commit_offset : 0);
    if (!rc) rc = rmt_cmd_set_ext_int(cmd, "suspendTimeoutMillis", q->suspend_ms);
    if (!rc) rc = rmt_cmd_set_ext(cmd, "subscription", q->sub_expr ? q->sub_expr : "*");
    if (!rc) rc = rmt_cmd_set_ext_int(cmd, "subVersion", q->sub_version);
    if (!rc) rc = rmt_cmd_set_ext(cmd, "expressionType", "TAG");
    if (!rc)
        rc = rmt_client_invoke(cli_client_rmt(c), addr, cmd, q->suspend_ms + cli_client_timeout(c) + 5000,
                               pull_resp_cb, k);
    if (rc)
        free(k);
    return rc;
}

/* Managed consumer. */

struct pq {
    cli_consumer *cs;
    char broker[CLI_NAME_MAX];
    int queue_id;
    int64_t next_offset;       /* -1 until known */
    int64_t consumed;          /* offset to commit; -1 none */
    int64_t committed;         /* last offset acknowledged / written */
    double master_down_until;  /* loop time before which reads go to a slave */
    int64_t pull_from;         /* broker id the last answer suggested (suggestWhichBrokerId) */
    char addr[CLI_ADDR_MAX];   /* broker the last pull went to (commits follow it) */
    bool pulling, loading, dropped, seen;
    bool locked, lock_asked;   /* orderly: lock held / asked for at least once */
    double lock_at;            /* orderly: loop time of the last grant */
    uint64_t id;               /* tells a re-created queue from its predecessor */
    ev_timer delay;
    rmt_cmd cmd;
    struct pq *next;
};

struct local_off {
    char broker[CLI_NAME_MAX];
    int queue_id;
    int64_t offset;
    struct local_off *next;
};

struct cli_consumer {
    cli_client *c;
    struct cli_consumer_opts o;
    char group[CLI_NAME_MAX], topic[CLI_NAME_MAX];
    char *offset_file;
    struct cli_sub sub;
    int64_t sub_version;
    int refs;
    bool started, stopping, freed, rebalancing, rebalance_again;
    struct pq *queues;
    struct local_off *local;
    struct cli_msg_view *views;
    int views_cap;
    ev_timer rebalance_timer, heartbeat_timer, commit_timer, kick_timer, lock_timer;
    uint64_t pq_ids;
    int shutdown_pending, shutdown_failed;
};

static bool orderly(const cli_consumer *cs)
{
    return cs->o.orderly && cs->o.model == CLI_CLUSTERING;
}

/* Orderly: q may be consumed (its last grant is recent enough). */
static bool lock_fresh(const struct pq *q)
{
    cli_consumer *cs = q->cs;
    return q->locked && ev_now(cli_client_loop(cs->c)) - q->lock_at < cs->o.lock_live_ms / 1000.0;
}

static int64_t wall_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

static void pq_free(struct pq *q)
{
    rmt_cmd_destroy(&q->cmd);
    free(q);
}

static void consumer_destroy(cli_consumer *cs)
{
    while (cs->queues) {
        struct pq *q = cs->queues;
        cs->queues = q->next;
        pq_free(q);
    }
    while (cs->local) {
        struct local_off *l = cs->local;
        cs->local = l->next;
        free(l);
    }
    free(cs->views);
    free(cs->offset_file);
    free(cs);
}

static void ref(cli_consumer *cs) { cs->refs++; }

/* Drops the reference of a finished operation. True when the consumer is
 * being freed: the caller must return without touching it. */
static bool unref_dead(cli_consumer *cs)
{
    cs->refs--;
    if (!cs->freed)
        return false;
    if (cs->refs == 0)
        consumer_destroy(cs);
    return true;
}

static struct pq *pq_find(cli_consumer *cs, const char *broker, int qid)
{
    for (struct pq *q = cs->queues; q; q = q->next)
        if (q->queue_id == qid && strcmp(q->broker, broker) == 0)
            return q;
    return NULL;
}

static const char *master_addr(cli_consumer *cs, const char *broker)
{
    const struct cli_route *r = cli_route_cached(cs->c, cs->topic);
    return r ? cli_route_addr(r, broker, CLI_MASTER_ID) : NULL;
}

/* Where a queue is read (and its offset committed): the broker id the last
 * pull answer suggested if the route has an address for it (RocketMQ's
 * PullAPIWrapper.recalculatePullFromWhichNode; commits and offset queries
 * pass CLI_MASTER_ID), else the master of its broker name, or a slave
 * (lowest id) when the route has no master or the master refused / dropped
 * a connection within the last CLI_MASTER_RETRY_MS. */
#define CLI_MASTER_RETRY_MS 5000
static const char *read_addr(cli_consumer *cs, const char *broker, double master_down_until, int64_t want)
{
    const struct cli_route *r = cli_route_cached(cs->c, cs->topic);
    if (!r)
        return NULL;
    const char *w = want != CLI_MASTER_ID ? cli_route_addr(r, broker, want) : NULL;
    if (w)
        return w;
    const char *m = cli_route_addr(r, broker, CLI_MASTER_ID);
    if (m && ev_now(cli_client_loop(cs->c)) >= master_down_until)
        return m;
    const char *slave = NULL;
    int64_t best = 0;
    for (int i = 0; i < r->nbrokers; i++) {
        if (strcmp(r->brokers[i].name, broker) != 0)
            continue;
        for (int j = 0; j < r->brokers[i].naddrs; j++) {
            const struct cli_broker_addr *a = &r->brokers[i].addrs[j];
            if (a->id != CLI_MASTER_ID && (!slave || a->id < best)) {
                slave = a->addr;
                best = a->id;
            }
        }
    }
    return slave ? slave : m;
}

static bool unreachable(int err)
{
    return err == -ECONNREFUSED || err == -ECONNRESET || err == -ETIMEDOUT || err == -EHOSTUNREACH ||
           err == -ENETUNREACH || err == -EPIPE;
}

/* A request to q's master failed at the connection level: read from a slave
 * for a while. */
static void master_failed(struct pq *q, const char *addr, int err)
{
    cli_consumer *cs = q->cs;
    const char *m = master_addr(cs, q->broker);
    if (!unreachable(err) || !m || strcmp(m, addr) != 0)
        return;
    double now = ev_now(cli_client_loop(cs->c));
    if (now >= q->master_down_until)
        log_warn("consumer %s: master %s of %s is unreachable (%s); reading %s/%d from a slave for %d ms",
                 cs->group, m, q->broker, strerror(-err), q->broker, q->queue_id, CLI_MASTER_RETRY_MS);
    q->master_down_until = now + CLI_MASTER_RETRY_MS / 1000.0;
}

/* Local offsets (broadcasting). */
static struct local_off *local_get(cli_consumer *cs, const char *broker, int qid, bool create)
{
    for (struct local_off *l = cs->local; l; l = l->next)
        if (l->queue_id == qid && strcmp(l->broker, broker) == 0)
            return l;
    if (!create)
        return NULL;
    struct local_off *l = calloc(1, sizeof *l);
    if (!l)
        return NULL;
    snprintf(l->broker, sizeof l->broker, "%s", broker);
    l->queue_id = qid;
    l->offset = -1;
    l->next = cs->local;
    cs->local = l;
    return l;
}

/* File format, one queue per line: "<broker> <queueId> <offset>\n". */
static int local_load(cli_consumer *cs)
{
    FILE *f = fopen(cs->offset_file, "r");
    if (!f)
        return errno == ENOENT ? 0 : -errno;
    char line[CLI_NAME_MAX + 64];
    int lineno = 0, rc = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        char b[CLI_NAME_MAX];
        int qid;
        long long off;
        if (sscanf(line, "%127s %d %lld", b, &qid, &off) != 3 || qid < 0 || off < 0) {
            log_error("consumer: %s:%d: expected '<broker> <queueId> <offset>'", cs->offset_file, lineno);
            rc = -EINVAL;
            break;
        }
        struct local_off *l = local_get(cs, b, qid, true);
        if (!l) {
            rc = -ENOMEM;
            break;
        }
        l->offset = off;
    }
    fclose(f);
    return rc;
}

static int local_persist(cli_consumer *cs)
{
    if (!cs->offset_file)
        return 0;
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", cs->offset_file) >= (int)sizeof tmp)
        return -ENAMETOOLONG;
    struct buf b = BUF_INIT;
    int rc = 0;
    for (struct local_off *l = cs->local; !rc && l; l = l->next)
        if (l->offset >= 0)
            rc = buf_printf(&b, "%s %d %lld\n", l->broker, l->queue_id, (long long)l->offset);
    if (rc) {
        buf_free(&b);
        return rc;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        rc = -errno;
    } else {
        size_t off = 0;
        while (off < b.len) {
            ssize_t w = write(fd, b.data + off, b.len - off);
            if (w < 0) {
                if (errno == EINTR)
                    continue;
                rc = -errno;
                break;
            }
            off += (size_t)w;
        }
        if (!rc && fsync(fd))
            rc = -errno;
        if (close(fd) && !rc)
            rc = -errno;
        if (!rc && rename(tmp, cs->offset_file))
            rc = -errno;
    }
    buf_free(&b);
    if (rc)
        log_error("consumer: cannot write offsets to %s: %s", cs->offset_file, strerror(-rc));
    return rc;
}

static void schedule_pull(struct pq *q, int delay_ms);
static void do_pull(struct pq *q);
static void drop_queue(cli_consumer *cs, struct pq *q);

static void pull_done(const struct cli_pull_result *r, void *ud)
{
    struct pq *q = ud;
    cli_consumer *cs = q->cs;
    q->pulling = false;
    bool dropped = q->dropped;
    bool dead = unref_dead(cs);
    if (dropped) {
        pq_free(q);
        return;
    }
    if (dead || cs->stopping)
        return;
    if (r->err) {
        master_failed(q, q->addr, r->err);
        if (r->err != -ECANCELED)
            log_warn("consumer %s: queue %s/%d at offset %lld: %s", cs->group, q->broker, q->queue_id,
                     (long long)q->next_offset, r->errmsg);
        schedule_pull(q, cs->o.pull_retry_ms);
        return;
    }
    q->pull_from = r->suggest_broker;
    switch (r->status) {
    case CLI_PULL_FOUND: {
        size_t pos = 0;
        int n = 0, rc;
        struct cli_msg_view v;
        while ((rc = cli_pull_next(r->body, r->body_len, &pos, &v)) == 1) {
            if (!cli_sub_match(&cs->sub, v.tags, v.tags_len))
                continue;
            if (n == cs->views_cap) {
                int cap = cs->views_cap ? cs->views_cap * 2 : 64;
                struct cli_msg_view *nv = realloc(cs->views, (size_t)cap * sizeof *nv);
                if (!nv) {
                    log_error("consumer %s: out of memory for a pulled batch", cs->group);
                    schedule_pull(q, cs->o.pull_retry_ms);
                    return;
                }
                cs->views = nv;
                cs->views_cap = cap;
            }
            v.broker = q->broker;
            cs->views[n++] = v;
        }
        if (rc < 0) {
            log_error("consumer %s: queue %s/%d: malformed pull body at byte %zu of %u; retrying",
                      cs->group, q->broker, q->queue_id, pos, r->body_len);
            schedule_pull(q, cs->o.pull_retry_ms);
            return;
        }
        if (n > 0 && orderly(cs) && !lock_fresh(q)) {
            log_warn("consumer %s: lock of %s/%d was not renewed in time; releasing the queue "
                     "without delivering the pulled batch", cs->group, q->broker, q->queue_id);
            drop_queue(cs, q);
            return;
        }
        if (n > 0) {
            ref(cs);
            int crc = cs->o.on_messages(cs, cs->views, n, cs->o.ud);
            if (unref_dead(cs) || cs->stopping)
                return;
            if (crc != 0) {
                schedule_pull(q, cs->o.pull_retry_ms);
                return;
            }
        }
        break;
    }
    case CLI_PULL_OFFSET_ILLEGAL:
        log_warn("consumer %s: offset %lld of queue %s/%d is not valid; continuing at %lld", cs->group,
                 (long long)q->next_offset, q->broker, q->queue_id, (long long)r->next_begin);
        break;
    case CLI_PULL_NO_NEW_MSG:
    case CLI_PULL_NO_MATCHED_MSG:
        break;
    }
    /* An answer that moved nothing and sends the next pull to the same
     * broker (a slave that serves no reads while its master is down) is
     * retried after pull_retry_ms, not at once. */
    bool stuck = r->status == CLI_PULL_NO_MATCHED_MSG && r->next_begin == q->next_offset;
    q->next_offset = r->next_begin;
    q->consumed = r->next_begin;
    if (cs->o.model == CLI_BROADCASTING) {
        struct local_off *l = local_get(cs, q->broker, q->queue_id, true);
        if (l)
            l->offset = q->consumed;
    }
    const char *next = stuck ? read_addr(cs, q->broker, q->master_down_until, q->pull_from) : NULL;
    if (next && strcmp(next, q->addr) == 0)
        schedule_pull(q, cs->o.pull_retry_ms);
    else
        do_pull(q);
}

static void do_pull(struct pq *q)
{
    cli_consumer *cs = q->cs;
    if (q->pulling || q->dropped || cs->stopping || q->next_offset < 0)
        return;
    if (orderly(cs) && !lock_fresh(q))
        return;
    const char *addr = read_addr(cs, q->broker, q->master_down_until, q->pull_from);
    if (!addr) {
        schedule_pull(q, cs->o.pull_retry_ms);
        return;
    }
    snprintf(q->addr, sizeof q->addr, "%s", addr);
    struct cli_pull_req req = {
        .group = cs->group, .topic = cs->topic, .sub_expr = cs->sub.expr, .queue_id = q->queue_id,
        .offset = q->next_offset, .max_msgs = cs->o.batch_size, .suspend_ms = cs->o.suspend_ms,
        .commit_offset = cs->o.model == CLI_CLUSTERING && q->consumed >= 0 &&
                                 master_addr(cs, q->broker) && strcmp(addr, master_addr(cs, q->broker)) == 0
                             ? q->consumed : -1,
        .sub_version = cs->sub_version,
    };
    ref(cs);
    q->pulling = true;
    int rc = cli_pull(cs->c, addr, &req, &q->cmd, pull_done, q);
    if (rc) {
        q->pulling = false;
        cs->refs--;
        log_warn("consumer %s: cannot pull %s/%d from %s: %s", cs->group, q->broker, q->queue_id, q->addr,
                 strerror(-rc));
        master_failed(q, q->addr, rc);
        schedule_pull(q, cs->o.pull_retry_ms);
    }
}

static void delay_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    do_pull(w->data);
}

static void schedule_pull(struct pq *q, int delay_ms)
{
    cli_consumer *cs = q->cs;
    if (cs->stopping || q->dropped)
        return;
    ev_timer_stop(cli_client_loop(cs->c), &q->delay);
    ev_timer_set(&q->delay, delay_ms / 1000.0, 0.);
    ev_timer_start(cli_client_loop(cs->c), &q->delay);
}

/* Offset commit. */
struct commit_call {
    cli_consumer *cs;
    char broker[CLI_NAME_MAX];
    int queue_id;
    int64_t offset;
    bool shutdown;
    bool unlock_after;     /* orderly release: unlock the queue once answered */
};

static int send_unlock(cli_consumer *cs, const char *broker, const int *qids, int n, bool shutdown);

static void commit_done(int status, rmt_cmd *resp, void *ud)
{
    struct commit_call *k = ud;
    cli_consumer *cs = k->cs;
    if (unref_dead(cs)) {
        free(k);
        return;
    }
    bool ok = status == 0 && resp->code == RMT_RESP_SUCCESS;
    if (!ok)
        log_warn("consumer %s: commit of offset %lld for %s/%d failed: %s", cs->group,
                 (long long)k->offset, k->broker, k->queue_id,
                 status ? strerror(-status) : (rmt_cmd_remark(resp) ? rmt_cmd_remark(resp) : "refused"));
    struct pq *q = pq_find(cs, k->broker, k->queue_id);
    if (ok && q && q->committed < k->offset)
        q->committed = k->offset;
    if (k->shutdown) {
        cs->shutdown_pending--;
        if (!ok)
            cs->shutdown_failed++;
    }
    if (k->unlock_after && !q)
        send_unlock(cs, k->broker, &k->queue_id, 1, false);
    free(k);
}

static int commit_one(cli_consumer *cs, const char *broker, int qid, int64_t offset, bool shutdown,
                      bool unlock_after)
{
    struct pq *q = pq_find(cs, broker, qid);
    const char *addr = read_addr(cs, broker, q ? q->master_down_until : 0, CLI_MASTER_ID);
    if (!addr)
        return -EHOSTUNREACH;
    struct commit_call *k = calloc(1, sizeof *k);
    if (!k)
        return -ENOMEM;
    k->cs = cs;
    snprintf(k->broker, sizeof k->broker, "%s", broker);
    k->queue_id = qid;
    k->offset = offset;
    k->shutdown = shutdown;
    k->unlock_after = unlock_after;
    rmt_cmd req;
    cli_cmd_init(cs->c, &req, RMT_REQ_UPDATE_CONSUMER_OFFSET);
    rmt_cmd_set_ext(&req, "consumerGroup", cs->group);
    rmt_cmd_set_ext(&req, "topic", cs->topic);
    rmt_cmd_set_ext_int(&req, "queueId", qid);
    rmt_cmd_set_ext_int(&req, "commitOffset", offset);
    int rc = rmt_client_invoke(cli_client_rmt(cs->c), addr, &req, cli_client_timeout(cs->c), commit_done, k);
    rmt_cmd_destroy(&req);
    if (rc) {
        free(k);
        return rc;
    }
    ref(cs);
    if (shutdown)
        cs->shutdown_pending++;
    return 0;
}

static void commit_all(cli_consumer *cs, bool shutdown)
{
    if (cs->o.model == CLI_BROADCASTING) {
        if (local_persist(cs) && shutdown)
            cs->shutdown_failed++;
        return;
    }
    for (struct pq *q = cs->queues; q; q = q->next) {
        if (q->consumed < 0 || (q->consumed == q->committed && !shutdown))
            continue;
        int rc = commit_one(cs, q->broker, q->queue_id, q->consumed, shutdown, false);
        if (rc) {
            log_warn("consumer %s: cannot commit %s/%d: %s", cs->group, q->broker, q->queue_id,
                     strerror(-rc));
            if (shutdown)
                cs->shutdown_failed++;
        }
    }
}

static void commit_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    commit_all(w->data, false);
}

/* Initial offset of a newly assigned queue. */
struct offset_call {
    cli_consumer *cs;
    char broker[CLI_NAME_MAX];
    int queue_id;
    int step;              /* 0: QUERY_CONSUMER_OFFSET, 1: max/min/search */
    char addr[CLI_ADDR_MAX];
};

static void offset_step(struct offset_call *k);

static void offset_done(int status, rmt_cmd *resp, void *ud)
{
    struct offset_call *k = ud;
    cli_consumer *cs = k->cs;
    if (unref_dead(cs)) {
        free(k);
        return;
    }
    struct pq *q = pq_find(cs, k->broker, k->queue_id);
    if (!q || q->dropped || cs->stopping) {
        free(k);
        return;
    }
    int64_t off = -1;
    if (status == 0 && k->step == 0 && resp->code == RMT_RESP_QUERY_NOT_FOUND) {
        k->step = 1;
        offset_step(k);
        return;
    }
    if (status || resp->code != RMT_RESP_SUCCESS || rmt_cmd_ext_int(resp, "offset", &off) || off < 0) {
        log_warn("consumer %s: cannot learn the offset of %s/%d: %s", cs->group, k->broker, k->queue_id,
                 status ? strerror(-status)
                        : (rmt_cmd_remark(resp) ? rmt_cmd_remark(resp) : "bad answer"));
        q->loading = false;
        master_failed(q, k->addr, status);
        free(k);
        cli_consumer_rebalance_now(cs);
        return;
    }
    q->loading = false;
    q->next_offset = off;
    if (k->step == 0)
        q->committed = off;
    free(k);
    log_debug("consumer %s: queue %s/%d starts at offset %lld", cs->group, q->broker, q->queue_id,
              (long long)off);
    do_pull(q);
}

static void offset_step(struct offset_call *k)
{
    cli_consumer *cs = k->cs;
    struct pq *q0 = pq_find(cs, k->broker, k->queue_id);
    const char *addr = read_addr(cs, k->broker, q0 ? q0->master_down_until : 0, CLI_MASTER_ID);
    int rc = -EHOSTUNREACH;
    if (addr) {
        snprintf(k->addr, sizeof k->addr, "%s", addr);
        rmt_cmd req;
        int code = RMT_REQ_QUERY_CONSUMER_OFFSET;
        if (k->step == 1)
            code = cs->o.from == CLI_FROM_LAST_OFFSET    ? RMT_REQ_GET_MAX_OFFSET
                   : cs->o.from == CLI_FROM_FIRST_OFFSET ? RMT_REQ_GET_MIN_OFFSET
                                                         : RMT_REQ_SEARCH_OFFSET_BY_TIMESTAMP;
        cli_cmd_init(cs->c, &req, code);
        if (k->step == 0)
            rmt_cmd_set_ext(&req, "consumerGroup", cs->group);
        rmt_cmd_set_ext(&req, "topic", cs->topic);
        rmt_cmd_set_ext_int(&req, "queueId", k->queue_id);
        if (code == RMT_REQ_SEARCH_OFFSET_BY_TIMESTAMP)
            rmt_cmd_set_ext_int(&req, "timestamp", cs->o.from_timestamp_ms);
        rc = rmt_client_invoke(cli_client_rmt(cs->c), addr, &req, cli_client_timeout(cs->c), offset_done, k);
        rmt_cmd_destroy(&req);
    }
    if (rc == 0) {
        ref(cs);
        return;
    }
    struct pq *q = pq_find(cs, k->broker, k->queue_id);
    if (q)
        q->loading = false;
    log_warn("consumer %s: cannot ask for the offset of %s/%d: %s", cs->group, k->broker, k->queue_id,
             strerror(-rc));
    free(k);
}

static void start_queue(cli_consumer *cs, struct pq *q)
{
    if (cs->o.model == CLI_BROADCASTING) {
        struct local_off *l = local_get(cs, q->broker, q->queue_id, false);
        if (l && l->offset >= 0) {
            q->next_offset = q->consumed = q->committed = l->offset;
            do_pull(q);
            return;
        }
    }
    struct offset_call *k = calloc(1, sizeof *k);
    if (!k)
        return;
    k->cs = cs;
    snprintf(k->broker, sizeof k->broker, "%s", q->broker);
    k->queue_id = q->queue_id;
    k->step = cs->o.model == CLI_BROADCASTING ? 1 : 0;
    q->loading = true;
    offset_step(k);
}

/* Drops q: commits its offset, stops pulling; freed now or when its pull
 * returns. Orderly: the queue is unlocked once the commit is answered. */
static void drop_queue(cli_consumer *cs, struct pq *q)
{
    struct pq **pp = &cs->queues;
    while (*pp != q)
        pp = &(*pp)->next;
    *pp = q->next;
    ev_timer_stop(cli_client_loop(cs->c), &q->delay);
    bool commit = cs->o.model == CLI_CLUSTERING && q->consumed >= 0 && q->consumed != q->committed;
    bool unlock = orderly(cs) && (q->locked || q->lock_asked) && !pq_find(cs, q->broker, q->queue_id);
    if ((!commit || commit_one(cs, q->broker, q->queue_id, q->consumed, false, unlock)) && unlock)
        send_unlock(cs, q->broker, &q->queue_id, 1, false);
    log_info("consumer %s: queue %s/%d released", cs->group, q->broker, q->queue_id);
    q->dropped = true;
    if (!q->pulling)
        pq_free(q);
}

/* Queue locks (orderly mode). Requests go to the master of the queue's
 * broker; the body names the queues as RocketMQ's MessageQueue objects. */
static int lock_body(cli_consumer *cs, struct buf *b, const char *broker, const int *qids, int n)
{
    int rc = buf_printf(b, "{\"clientId\":");
    if (!rc) rc = json_buf_str(b, cli_client_id(cs->c));
    if (!rc) rc = buf_printf(b, ",\"consumerGroup\":");
    if (!rc) rc = json_buf_str(b, cs->group);
    if (!rc) rc = buf_printf(b, ",\"mqSet\":[");
    for (int i = 0; !rc && i < n; i++) {
        rc = buf_printf(b, "%s{\"brokerName\":", i ? "," : "");
        if (!rc) rc = json_buf_str(b, broker);
        if (!rc) rc = buf_printf(b, ",\"queueId\":%d,\"topic\":", qids[i]);
        if (!rc) rc = json_buf_str(b, cs->topic);
        if (!rc) rc = buf_append_u8(b, '}');
    }
    if (!rc) rc = buf_printf(b, "],\"oneway\":false,\"onlyThisBroker\":false}");
    return rc;
}

static void unlock_answer(cli_consumer *cs, int status, rmt_cmd *resp, bool shutdown)
{
    if (unref_dead(cs))
        return;
    bool ok = status == 0 && resp->code == RMT_RESP_SUCCESS;
    if (!ok)
        log_warn("consumer %s: UNLOCK_BATCH_MQ failed: %s", cs->group,
                 status ? strerror(-status) : (rmt_cmd_remark(resp) ? rmt_cmd_remark(resp) : "refused"));
    if (shutdown) {
        cs->shutdown_pending--;
        if (!ok)
            cs->shutdown_failed++;
    }
}

static void unlock_done(int status, rmt_cmd *resp, void *ud)
{
    unlock_answer(ud, status, resp, false);
}

static void unlock_done_shutdown(int status, rmt_cmd *resp, void *ud)
{
    unlock_answer(ud, status, resp, true);
}

/* UNLOCK_BATCH_MQ of n queues of broker. Returns 0 once sent or -errno. */
static int send_unlock(cli_consumer *cs, const char *broker, const int *qids, int n, bool shutdown)
{
    const char *addr = master_addr(cs, broker);
    struct buf b = BUF_INIT;
    int rc = addr ? lock_body(cs, &b, broker, qids, n) : -EHOSTUNREACH;
    if (!rc) {
        rmt_cmd req;
        cli_cmd_init(cs->c, &req, RMT_REQ_UNLOCK_BATCH_MQ);
        rmt_cmd_set_body(&req, b.data, (uint32_t)b.len);
        rc = rmt_client_invoke(cli_client_rmt(cs->c), addr, &req, cli_client_timeout(cs->c),
                               shutdown ? unlock_done_shutdown : unlock_done, cs);
        rmt_cmd_destroy(&req);
    }
    buf_free(&b);
    if (rc) {
        log_warn("consumer %s: cannot unlock %d queue(s) of %s: %s", cs->group, n, broker, strerror(-rc));
        return rc;
    }
    ref(cs);
    if (shutdown)
        cs->shutdown_pending++;
    return 0;
}

struct lock_call {
    cli_consumer *cs;
    char broker[CLI_NAME_MAX];
    int n;
    int *qids;
    uint64_t *ids;         /* pq->id of each queue when asked */
};

static void lock_call_free(struct lock_call *k)
{
    free(k->qids);
    free(k->ids);
    free(k);
}

static bool granted(json_t *set, const char *topic, const char *broker, int qid)
{
    size_t i;
    json_t *mq;
    json_array_foreach(set, i, mq) {
        const char *t = json_string_value(json_object_get(mq, "topic"));
        const char *b = json_string_value(json_object_get(mq, "brokerName"));
        json_t *q = json_object_get(mq, "queueId");
        if (t && b && json_is_integer(q) && json_integer_value(q) == qid && strcmp(t, topic) == 0 &&
            strcmp(b, broker) == 0)
            return true;
    }
    return false;
}

/* Applies a LockBatchResponseBody: granted queues start (or keep) being
 * consumed; a held queue missing from the answer is released; a grant for a
 * queue no longer wanted is given back. A queue that was dropped and
 * assigned again since the request is left to its own request. Unlocks are
 * never sent for a queue currently in the list, so an unlock cannot undo a
 * later grant. A failed call changes nothing: the grants age until
 * lock_live_ms. */

/* The JSON body of a successful answer whose member `field` is an array;
 * NULL with err set for a failed call, an error code, bad JSON or a
 * missing array. The caller owns the result (json_decref). */
static json_t *answer_array(int status, rmt_cmd *resp, const char *field, char *err, size_t cap)
{
    if (status) {
        snprintf(err, cap, "%s", strerror(-status));
        return NULL;
    }
    if (resp->code != RMT_RESP_SUCCESS) {
        snprintf(err, cap, "code %d: %s", resp->code, rmt_cmd_remark(resp) ? rmt_cmd_remark(resp) : "");
        return NULL;
    }
    json_t *root = json_parse_rocketmq((const char *)resp->body, resp->body_len, err, cap);
    if (root && !json_is_array(json_object_get(root, field))) {
        snprintf(err, cap, "body lacks %s", field);
        json_decref(root);
        return NULL;
    }
    return root;
}
static void lock_done(int status, rmt_cmd *resp, void *ud)
{
    struct lock_call *k = ud;
    cli_consumer *cs = k->cs;
    if (unref_dead(cs)) {
        lock_call_free(k);
        return;
    }
    char err[160] = "";
    json_t *root = answer_array(status, resp, "lockOKMQSet", err, sizeof err);
    json_t *set = root ? json_object_get(root, "lockOKMQSet") : NULL;
    if (err[0]) {
        log_warn("consumer %s: LOCK_BATCH_MQ to %s failed: %s", cs->group, k->broker, err);
        json_decref(root);
        lock_call_free(k);
        return;
    }
    double now = ev_now(cli_client_loop(cs->c));
    int norphan = 0;
    for (int i = 0; i < k->n; i++) {
        struct pq *q = pq_find(cs, k->broker, k->qids[i]);
        bool same = q && q->id == k->ids[i];
        if (granted(set, cs->topic, k->broker, k->qids[i])) {
            if (!q) {
                k->qids[norphan++] = k->qids[i];
                continue;
            }
            if (!same)
                continue;
            if (cs->stopping)
                continue;
            if (!q->locked)
                log_info("consumer %s (%s): queue %s/%d locked", cs->group, cli_client_id(cs->c), q->broker,
                         q->queue_id);
            q->locked = true;
            q->lock_at = now;
            if (q->next_offset < 0 && !q->loading)
                start_queue(cs, q);
            else if (q->next_offset >= 0 && !ev_is_active(&q->delay))
                do_pull(q);     /* resumes a queue whose grant had aged */
        } else if (same && q->locked && !cs->stopping) {
            log_warn("consumer %s (%s): lock of queue %s/%d was not renewed; releasing it", cs->group,
                     cli_client_id(cs->c), q->broker, q->queue_id);
            drop_queue(cs, q);
        }
    }
    if (norphan)
        send_unlock(cs, k->broker, k->qids, norphan, false);
    json_decref(root);
    lock_call_free(k);
}

/* LOCK_BATCH_MQ of every queue of broker this consumer has. */
static void send_lock(cli_consumer *cs, const char *broker)
{
    const char *addr = master_addr(cs, broker);
    if (!addr) {
        log_warn("consumer %s: broker %s has no master to lock its queues on", cs->group, broker);
        return;
    }
    int n = 0;
    for (struct pq *q = cs->queues; q; q = q->next)
        n += strcmp(q->broker, broker) == 0;
    struct lock_call *k = calloc(1, sizeof *k);
    if (k) {
        k->qids = malloc((size_t)n * sizeof *k->qids);
        k->ids = malloc((size_t)n * sizeof *k->ids);
    }
    if (!k || !k->qids || !k->ids) {
        if (k)
            lock_call_free(k);
        log_error("consumer %s: out of memory locking queues", cs->group);
        return;
    }
    k->cs = cs;
    snprintf(k->broker, sizeof k->broker, "%s", broker);
    for (struct pq *q = cs->queues; q; q = q->next)
        if (strcmp(q->broker, broker) == 0) {
            k->qids[k->n] = q->queue_id;
            k->ids[k->n++] = q->id;
        }
    struct buf b = BUF_INIT;
    int rc = lock_body(cs, &b, broker, k->qids, k->n);
    if (!rc) {
        rmt_cmd req;
        cli_cmd_init(cs->c, &req, RMT_REQ_LOCK_BATCH_MQ);
        rmt_cmd_set_body(&req, b.data, (uint32_t)b.len);
        rc = rmt_client_invoke(cli_client_rmt(cs->c), addr, &req, cli_client_timeout(cs->c), lock_done, k);
        rmt_cmd_destroy(&req);
    }
    buf_free(&b);
    if (rc) {
        log_warn("consumer %s: cannot lock the queues of %s: %s", cs->group, broker, strerror(-rc));
        lock_call_free(k);
        return;
    }
    ref(cs);
    for (struct pq *q = cs->queues; q; q = q->next)
        if (strcmp(q->broker, broker) == 0)
            q->lock_asked = true;
}

/* True if an earlier queue of the list has q's broker. */
static bool broker_seen_before(const cli_consumer *cs, const struct pq *q)
{
    for (const struct pq *p = cs->queues; p != q; p = p->next)
        if (strcmp(p->broker, q->broker) == 0)
            return true;
    return false;
}

/* Orderly: releases queues whose grant went stale, then locks (or renews)
 * every queue, one request per broker. */
static void lock_all(cli_consumer *cs)
{
    if (!orderly(cs) || cs->stopping)
        return;
    struct pq *q = cs->queues;
    while (q) {
        struct pq *nx = q->next;
        if (q->locked && !lock_fresh(q)) {
            log_warn("consumer %s: lock of %s/%d was not renewed within %d ms; releasing it", cs->group,
                     q->broker, q->queue_id, cs->o.lock_live_ms);
            drop_queue(cs, q);
        }
        q = nx;
    }
    for (q = cs->queues; q; q = q->next)
        if (!broker_seen_before(cs, q))
            send_lock(cs, q->broker);
}

static void lock_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    lock_all(w->data);
}

static void apply_assignment(cli_consumer *cs, const struct cli_mq *mqs, int n)
{
    for (struct pq *q = cs->queues; q; q = q->next)
        q->seen = false;
    for (int i = 0; i < n; i++) {
        struct pq *q = pq_find(cs, mqs[i].broker, mqs[i].queue_id);
        if (q) {
            q->seen = true;
            if (q->next_offset < 0 && !q->loading && (!orderly(cs) || lock_fresh(q)))
                start_queue(cs, q);
            continue;
        }
        q = calloc(1, sizeof *q);
        if (!q) {
            log_error("consumer %s: out of memory taking queue %s/%d", cs->group, mqs[i].broker,
                      mqs[i].queue_id);
            continue;
        }
        q->cs = cs;
        snprintf(q->broker, sizeof q->broker, "%s", mqs[i].broker);
        q->queue_id = mqs[i].queue_id;
        q->next_offset = q->consumed = q->committed = -1;
        q->seen = true;
        q->id = ++cs->pq_ids;
        rmt_cmd_init(&q->cmd, RMT_REQ_PULL_MESSAGE);
        ev_timer_init(&q->delay, delay_cb, 0., 0.);
        q->delay.data = q;
        q->next = cs->queues;
        cs->queues = q;
        log_info("consumer %s (%s): queue %s/%d assigned", cs->group, cli_client_id(cs->c), q->broker,
                 q->queue_id);
        if (!orderly(cs))
            start_queue(cs, q);
    }
    struct pq *q = cs->queues;
    while (q) {
        struct pq *nx = q->next;
        if (!q->seen)
            drop_queue(cs, q);
        q = nx;
    }
    lock_all(cs);
}

static void rebalance_finish(cli_consumer *cs)
{
    cs->rebalancing = false;
    if (cs->rebalance_again && !cs->stopping) {
        cs->rebalance_again = false;
        cli_consumer_rebalance_now(cs);
    }
}

static void consumer_list_done(int status, rmt_cmd *resp, void *ud)
{
    cli_consumer *cs = ud;
    if (unref_dead(cs))
        return;
    if (cs->stopping) {
        rebalance_finish(cs);
        return;
    }
    const struct cli_route *route = cli_route_cached(cs->c, cs->topic);
    char err[160] = "";
    json_t *root = answer_array(status, resp, "consumerIdList", err, sizeof err);
    json_t *ids = root ? json_object_get(root, "consumerIdList") : NULL;
    if (err[0] || !route) {
        log_warn("consumer %s: cannot get the group's consumer list: %s", cs->group,
                 err[0] ? err : "route gone");
        json_decref(root);
        rebalance_finish(cs);
        return;
    }
    size_t n = json_array_size(ids);
    const char **cids = malloc((n ? n : 1) * sizeof *cids);
    int ncid = 0, me = -1;
    if (cids) {
        size_t i;
        json_t *v;
        json_array_foreach(ids, i, v)
            if (json_is_string(v))
                cids[ncid++] = json_string_value(v);
        cli_sort_strings(cids, ncid);
        for (int i2 = 0; i2 < ncid; i2++)
            if (strcmp(cids[i2], cli_client_id(cs->c)) == 0)
                me = i2;
    }
    if (me < 0) {
        log_info("consumer %s: %s is not yet in the group's consumer list (%d members); waiting",
                 cs->group, cli_client_id(cs->c), ncid);
        apply_assignment(cs, NULL, 0);
    } else {
        int start, cnt = cli_allocate_averagely(route->nread, ncid, me, &start);
        struct cli_mq *mqs = malloc((size_t)(cnt ? cnt : 1) * sizeof *mqs);
        if (mqs) {
            for (int i2 = 0; i2 < cnt; i2++)
                mqs[i2] = route->read_queues[(start + i2) % route->nread];
            apply_assignment(cs, mqs, cnt);
            free(mqs);
        }
    }
    free(cids);
    json_decref(root);
    rebalance_finish(cs);
}

static void send_heartbeats(cli_consumer *cs, const struct cli_route *r);

static void rebalance_route(int status, const struct cli_route *r, const char *msg, void *ud)
{
    cli_consumer *cs = ud;
    if (unref_dead(cs))
        return;
    if (cs->stopping) {
        rebalance_finish(cs);
        return;
    }
    if (status) {
        log_warn("consumer %s: %s", cs->group, msg ? msg : strerror(-status));
        rebalance_finish(cs);
        return;
    }
    if (cs->o.model == CLI_BROADCASTING) {
        apply_assignment(cs, r->read_queues, r->nread);
        rebalance_finish(cs);
        return;
    }
    if (!cs->started) {
        cs->started = true;
        send_heartbeats(cs, r);
    }
    const char *addr = NULL;
    for (int i = 0; i < r->nread && !addr; i++)
        addr = cli_route_any_addr(r, r->read_queues[i].broker, false);
    if (!addr) {
        log_warn("consumer %s: topic %s has no readable broker", cs->group, cs->topic);
        apply_assignment(cs, NULL, 0);
        rebalance_finish(cs);
        return;
    }
    rmt_cmd req;
    cli_cmd_init(cs->c, &req, RMT_REQ_GET_CONSUMER_LIST_BY_GROUP);
    rmt_cmd_set_ext(&req, "consumerGroup", cs->group);
    int rc = rmt_client_invoke(cli_client_rmt(cs->c), addr, &req, cli_client_timeout(cs->c),
                               consumer_list_done, cs);
    rmt_cmd_destroy(&req);
    if (rc) {
        log_warn("consumer %s: cannot ask %s for the consumer list: %s", cs->group, addr, strerror(-rc));
        rebalance_finish(cs);
        return;
    }
    ref(cs);
}

static void rebalance(cli_consumer *cs)
{
    if (cs->stopping)
        return;
    if (cs->rebalancing) {
        cs->rebalance_again = true;
        return;
    }
    cs->rebalancing = true;
    int rc = cli_route_get(cs->c, cs->topic, rebalance_route, cs);
    if (rc) {
        cs->rebalancing = false;
        log_warn("consumer %s: route lookup failed: %s", cs->group, strerror(-rc));
        return;
    }
    ref(cs);
}

static void rebalance_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    rebalance(w->data);
}

int cli_consumer_heartbeat_json(const cli_consumer *cs, struct buf *out)
{
    static const char *const from[] = { "CONSUME_FROM_LAST_OFFSET", "CONSUME_FROM_FIRST_OFFSET",
                                        "CONSUME_FROM_TIMESTAMP" };
    int rc = buf_printf(out, "{\"clientID\":");
    if (!rc) rc = json_buf_str(out, cli_client_id(cs->c));
    if (!rc) rc = buf_printf(out, ",\"consumerDataSet\":[{\"consumeFromWhere\":\"%s\","
                                  "\"consumeType\":\"CONSUME_PASSIVELY\",\"groupName\":", from[cs->o.from]);
    if (!rc) rc = json_buf_str(out, cs->group);
    if (!rc) rc = buf_printf(out, ",\"messageModel\":\"%s\",\"subscriptionDataSet\":[{"
                                  "\"classFilterMode\":false,\"codeSet\":[",
                             cs->o.model == CLI_CLUSTERING ? "CLUSTERING" : "BROADCASTING");
    for (int i = 0; !rc && i < cs->sub.ntags; i++)
        rc = buf_printf(out, "%s%d", i ? "," : "", (int)cs->sub.codes[i]);
    if (!rc) rc = buf_printf(out, "],\"expressionType\":\"TAG\",\"subString\":");
    if (!rc) rc = json_buf_str(out, cs->sub.expr);
    if (!rc) rc = buf_printf(out, ",\"subVersion\":%lld,\"tagsSet\":[", (long long)cs->sub_version);
    for (int i = 0; !rc && i < cs->sub.ntags; i++) {
        if (i)
            rc = buf_append_u8(out, ',');
        if (!rc)
            rc = json_buf_str(out, cs->sub.tags[i]);
    }
    if (!rc) rc = buf_printf(out, "],\"topic\":");
    if (!rc) rc = json_buf_str(out, cs->topic);
    if (!rc) rc = buf_printf(out, "}],\"unitMode\":false}],\"producerDataSet\":[]}");
    return rc;
}

static void heartbeat_done(int status, rmt_cmd *resp, void *ud)
{
    cli_consumer *cs = ud;
    if (unref_dead(cs))
        return;
    if (status || resp->code != RMT_RESP_SUCCESS)
        log_warn("consumer %s: heartbeat refused or unanswered: %s", cs->group,
                 status ? strerror(-status) : (rmt_cmd_remark(resp) ? rmt_cmd_remark(resp) : "refused"));
}

static void send_heartbeats(cli_consumer *cs, const struct cli_route *r)
{
    struct buf b = BUF_INIT;
    if (cli_consumer_heartbeat_json(cs, &b)) {
        buf_free(&b);
        log_error("consumer %s: out of memory building the heartbeat", cs->group);
        return;
    }
    for (int i = 0; i < r->nbrokers; i++) {
        for (int j = 0; j < r->brokers[i].naddrs; j++) {
            rmt_cmd req;
            cli_cmd_init(cs->c, &req, RMT_REQ_HEART_BEAT);
            rmt_cmd_set_body(&req, b.data, (uint32_t)b.len);
            int rc = rmt_client_invoke(cli_client_rmt(cs->c), r->brokers[i].addrs[j].addr, &req,
                                       cli_client_timeout(cs->c), heartbeat_done, cs);
            rmt_cmd_destroy(&req);
            if (rc == 0)
                ref(cs);
        }
    }
    buf_free(&b);
}

static void heartbeat_route(int status, const struct cli_route *r, const char *msg, void *ud)
{
    cli_consumer *cs = ud;
    if (unref_dead(cs))
        return;
    if (status) {
        log_warn("consumer %s: heartbeat skipped: %s", cs->group, msg ? msg : strerror(-status));
        return;
    }
    if (!cs->stopping)
        send_heartbeats(cs, r);
}

static void heartbeat_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    cli_consumer *cs = w->data;
    if (cli_route_get(cs->c, cs->topic, heartbeat_route, cs) == 0)
        ref(cs);
}

static void kick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    rebalance(w->data);
}

void cli_consumer_rebalance_now(cli_consumer *cs)
{
    if (cs->stopping || ev_is_active(&cs->kick_timer))
        return;
    ev_timer_set(&cs->kick_timer, 0., 0.);
    ev_timer_start(cli_client_loop(cs->c), &cs->kick_timer);
}

void cli_consumer_on_ids_changed(struct cli_consumer *cs, const char *group)
{
    if (cs->o.model == CLI_CLUSTERING && group && strcmp(group, cs->group) == 0)
        cli_consumer_rebalance_now(cs);
}

cli_consumer *cli_consumer_new(cli_client *c, const struct cli_consumer_opts *o, int *err)
{
    *err = -EINVAL;
    if (!o->group || !*o->group || strlen(o->group) >= CLI_NAME_MAX || !o->topic || !*o->topic ||
        strlen(o->topic) >= CLI_NAME_MAX) {
        log_error("consumer: group and topic (1..%d bytes) are required", CLI_NAME_MAX - 1);
        return NULL;
    }
    if (!o->on_messages) {
        log_error("consumer %s: on_messages callback is required", o->group);
        return NULL;
    }
    if ((unsigned)o->from > CLI_FROM_TIMESTAMP || (unsigned)o->model > CLI_BROADCASTING) {
        log_error("consumer %s: bad message model or consume-from-where", o->group);
        return NULL;
    }
    cli_consumer *cs = calloc(1, sizeof *cs);
    if (!cs) {
        *err = -ENOMEM;
        return NULL;
    }
    char serr[160];
    if (cli_sub_parse(o->sub_expr, &cs->sub, serr, sizeof serr)) {
        log_error("consumer %s: %s", o->group, serr);
        free(cs);
        return NULL;
    }
    cs->c = c;
    cs->o = *o;
    snprintf(cs->group, sizeof cs->group, "%s", o->group);
    snprintf(cs->topic, sizeof cs->topic, "%s", o->topic);
    cs->o.group = cs->group;
    cs->o.topic = cs->topic;
    cs->o.sub_expr = NULL;
    cs->o.offset_file = NULL;
    if (cs->o.batch_size <= 0) cs->o.batch_size = 32;
    if (cs->o.suspend_ms <= 0) cs->o.suspend_ms = 15000;
    if (cs->o.rebalance_ms <= 0) cs->o.rebalance_ms = 20000;
    if (cs->o.heartbeat_ms <= 0) cs->o.heartbeat_ms = 30000;
    if (cs->o.commit_ms <= 0) cs->o.commit_ms = 5000;
    if (cs->o.pull_retry_ms <= 0) cs->o.pull_retry_ms = 1000;
    if (cs->o.lock_interval_ms <= 0) cs->o.lock_interval_ms = 20000;
    if (cs->o.lock_live_ms <= 0) cs->o.lock_live_ms = 30000;
    cs->sub_version = wall_ms();
    if (o->model == CLI_BROADCASTING && o->offset_file) {
        cs->offset_file = strdup(o->offset_file);
        int rc = cs->offset_file ? local_load(cs) : -ENOMEM;
        if (rc) {
            if (rc != -EINVAL)
                log_error("consumer %s: cannot read offsets from %s: %s", cs->group, o->offset_file,
                          strerror(-rc));
            *err = rc;
            consumer_destroy(cs);
            return NULL;
        }
    }
    ev_timer_init(&cs->rebalance_timer, rebalance_timer_cb, cs->o.rebalance_ms / 1000.0,
                  cs->o.rebalance_ms / 1000.0);
    ev_timer_init(&cs->heartbeat_timer, heartbeat_timer_cb, cs->o.heartbeat_ms / 1000.0,
                  cs->o.heartbeat_ms / 1000.0);
    ev_timer_init(&cs->commit_timer, commit_timer_cb, cs->o.commit_ms / 1000.0, cs->o.commit_ms / 1000.0);
    ev_timer_init(&cs->kick_timer, kick_cb, 0., 0.);
    ev_timer_init(&cs->lock_timer, lock_timer_cb, cs->o.lock_interval_ms / 1000.0,
                  cs->o.lock_interval_ms / 1000.0);
    cs->rebalance_timer.data = cs->heartbeat_timer.data = cs->commit_timer.data = cs->kick_timer.data = cs;
    cs->lock_timer.data = cs;
    cli_client_attach_consumer(c, cs);
    *err = 0;
    return cs;
}

int cli_consumer_start(cli_consumer *cs)
{
    struct ev_loop *loop = cli_client_loop(cs->c);
    ev_timer_start(loop, &cs->rebalance_timer);
    if (cs->o.model == CLI_CLUSTERING)
        ev_timer_start(loop, &cs->heartbeat_timer);
    ev_timer_start(loop, &cs->commit_timer);
    if (orderly(cs))
        ev_timer_start(loop, &cs->lock_timer);
    rebalance(cs);
    return 0;
}

static void stop_timers(cli_consumer *cs)
{
    struct ev_loop *loop = cli_client_loop(cs->c);
    ev_timer_stop(loop, &cs->rebalance_timer);
    ev_timer_stop(loop, &cs->heartbeat_timer);
    ev_timer_stop(loop, &cs->commit_timer);
    ev_timer_stop(loop, &cs->kick_timer);
    ev_timer_stop(loop, &cs->lock_timer);
    for (struct pq *q = cs->queues; q; q = q->next)
        ev_timer_stop(loop, &q->delay);
}

static void unregister_done(int status, rmt_cmd *resp, void *ud)
{
    cli_consumer *cs = ud;
    (void)resp;
    if (unref_dead(cs))
        return;
    cs->shutdown_pending--;
    if (status)
        log_warn("consumer %s: UNREGISTER_CLIENT unanswered: %s", cs->group, strerror(-status));
}

static void deadline_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop;
    (void)revents;
    *(bool *)w->data = true;
}

int cli_consumer_shutdown(cli_consumer *cs, int timeout_ms)
{
    if (cs->stopping)
        return 0;
    stop_timers(cs);
    cs->shutdown_pending = cs->shutdown_failed = 0;
    commit_all(cs, true);
    cs->stopping = true;
    bool expired = false;
    ev_timer deadline;
    ev_timer_init(&deadline, deadline_cb, (timeout_ms > 0 ? timeout_ms : 3000) / 1000.0, 0.);
    deadline.data = &expired;
    ev_timer_start(cli_client_loop(cs->c), &deadline);
    /* Orderly: the queues are unlocked only once their offsets are stored,
     * so the next owner starts where this one stopped. */
    if (orderly(cs)) {
        while (cs->shutdown_pending > 0 && !expired)
            ev_run(cli_client_loop(cs->c), EVRUN_ONCE);
        for (struct pq *q = cs->queues; q; q = q->next) {
            if (broker_seen_before(cs, q))
                continue;
            int qids[256], n = 0;
            for (struct pq *p = q; p; p = p->next)
                if (strcmp(p->broker, q->broker) == 0) {
                    qids[n++] = p->queue_id;
                    if (n == 256) {
                        if (send_unlock(cs, q->broker, qids, n, true))
                            cs->shutdown_failed++;
                        n = 0;
                    }
                }
            if (n && send_unlock(cs, q->broker, qids, n, true))
                cs->shutdown_failed++;
        }
    }
    const struct cli_route *r = cli_route_cached(cs->c, cs->topic);
    if (r && cs->o.model == CLI_CLUSTERING) {
        for (int i = 0; i < r->nbrokers; i++)
            for (int j = 0; j < r->brokers[i].naddrs; j++) {
                rmt_cmd req;
                cli_cmd_init(cs->c, &req, RMT_REQ_UNREGISTER_CLIENT);
                rmt_cmd_set_ext(&req, "clientID", cli_client_id(cs->c));
                rmt_cmd_set_ext(&req, "consumerGroup", cs->group);
                int rc = rmt_client_invoke(cli_client_rmt(cs->c), r->brokers[i].addrs[j].addr, &req,
                                           cli_client_timeout(cs->c), unregister_done, cs);
                rmt_cmd_destroy(&req);
                if (rc == 0) {
                    ref(cs);
                    cs->shutdown_pending++;
                }
            }
    }
    while (cs->shutdown_pending > 0 && !expired)
        ev_run(cli_client_loop(cs->c), EVRUN_ONCE);
    ev_timer_stop(cli_client_loop(cs->c), &deadline);
    for (struct pq *q = cs->queues; q; q = q->next)
        log_debug("consumer %s: %s/%d stopped at offset %lld", cs->group, q->broker, q->queue_id,
                  (long long)q->consumed);
    if (cs->shutdown_pending > 0) {
        log_warn("consumer %s: shutdown timed out with %d answers outstanding", cs->group,
                 cs->shutdown_pending);
        return -ETIMEDOUT;
    }
    return cs->shutdown_failed ? -EIO : 0;
}

void cli_consumer_free(cli_consumer *cs)
{
    if (!cs)
        return;
    stop_timers(cs);
    cs->stopping = true;
    cli_client_detach_consumer(cs->c, cs);
    /* queues with a pull in flight stay in the list; the consumer (and
     * they) are destroyed when the last answer is in */
    cs->freed = true;
    if (cs->refs == 0)
        consumer_destroy(cs);
}

int cli_consumer_assigned(const cli_consumer *cs, struct cli_mq *out, int max)
{
    int n = 0;
    for (const struct pq *q = cs->queues; q; q = q->next) {
        if (n < max)
            out[n] = (struct cli_mq){ q->broker, q->queue_id };
        n++;
    }
    return n;
}
