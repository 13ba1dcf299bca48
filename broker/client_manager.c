/*
 * Producer / consumer bookkeeping from heartbeats (RocketMQ ProducerManager,
 * ConsumerManager and ClientHousekeepingService). Groups are few and change
 * only on heartbeats, so they live in plain linked lists with arrays of
 * channels; the pull path only reads them (cm_find_sub).
 */
#include "client_manager.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "broker.h"
#include "json_util.h"
#include "log.h"
#include "message.h"

struct cm_chan {
    rmt_conn *conn;
    char *client_id;
    int language;
    int version;
    int64_t last;            /* monotonic ms of the last heartbeat */
};

struct cm_group {
    struct cm_group *next;
    char *name;
    char consume_type[32];
    char message_model[32];
    char consume_from_where[48];
    struct cm_chan *ch;
    int nch, cap;
    struct cm_sub *subs;
    int nsub;
};

struct cm {
    struct broker *b;
    struct cm_group *consumers;
    struct cm_group *producers;
    ev_timer scan;
    int32_t opaque;
};

static const char *lang_name(int l)
{
    static const char *const names[] = { "JAVA", "CPP", "DOTNET", "PYTHON", "DELPHI", "ERLANG",
                                         "RUBY", "OTHER", "HTTP", "GO", "PHP", "OMS", "RUST" };
    return l >= 0 && l < (int)(sizeof names / sizeof names[0]) ? names[l] : "OTHER";
}

struct cm *cm_new(struct broker *b)
{
    struct cm *m = calloc(1, sizeof *m);
    if (m)
        m->b = b;
    return m;
}

static void free_subs(struct cm_sub *s, int n)
{
    for (int i = 0; i < n; i++) {
        free(s[i].topic);
        free(s[i].sub_string);
        free(s[i].expr_type);
        free(s[i].json);
    }
    free(s);
}

static void free_group(struct cm_group *g)
{
    for (int i = 0; i < g->nch; i++)
        free(g->ch[i].client_id);
    free(g->ch);
    free_subs(g->subs, g->nsub);
    free(g->name);
    free(g);
}

void cm_free(struct cm *m)
{
    if (!m)
        return;
    ev_timer_stop(m->b->loop, &m->scan);
    for (struct cm_group **l = &m->consumers; l; l = l == &m->consumers ? &m->producers : NULL)
        while (*l) {
            struct cm_group *g = *l;
            *l = g->next;
            free_group(g);
        }
    free(m);
}

int cm_parse_filter(const char *expr, struct cm_filter *f)
{
    memset(f, 0, sizeof *f);
    if (!expr)
        expr = "";
    while (*expr == ' ')
        expr++;
    if (!*expr || strcmp(expr, "*") == 0) {
        f->all = true;
        return 0;
    }
    const char *p = expr;
    while (*p) {
        const char *sep = strstr(p, "||");
        const char *end = sep ? sep : p + strlen(p);
        const char *s = p, *e = end;
        while (s < e && (*s == ' ' || *s == '\t'))
            s++;
        while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
            e--;
        if (e > s) {
            if (f->n == CM_MAX_TAGS) {
                f->all = true;
                return 0;
            }
            f->codes[f->n++] = msg_tag_hash(s, (size_t)(e - s));
        }
        if (!sep)
            break;
        p = sep + 2;
    }
    return f->n ? 0 : -EINVAL;
}

static struct cm_group *find_group(struct cm_group *l, const char *name)
{
    for (; l; l = l->next)
        if (strcmp(l->name, name) == 0)
            return l;
    return NULL;
}

static struct cm_group *get_group(struct cm_group **l, const char *name)
{
    struct cm_group *g = find_group(*l, name);
    if (g)
        return g;
    g = calloc(1, sizeof *g);
    if (!g || !(g->name = strdup(name))) {
        free(g);
        return NULL;
    }
    g->next = *l;
    *l = g;
    return g;
}

static int chan_index(struct cm_group *g, rmt_conn *c, const char *client_id)
{
    for (int i = 0; i < g->nch; i++)
        if (client_id ? strcmp(g->ch[i].client_id, client_id) == 0 : g->ch[i].conn == c)
            return i;
    return -1;
}

/* Adds or refreshes a channel; returns 1 if it is new, 0 if refreshed, -ENOMEM. */
static int touch_chan(struct cm_group *g, rmt_conn *c, const rmt_cmd *req, const char *client_id,
                      int64_t now)
{
    int i = chan_index(g, c, client_id);
    if (i >= 0) {
        g->ch[i].last = now;
        g->ch[i].conn = c;
        return 0;
    }
    if (g->nch == g->cap) {
        int nc = g->cap ? g->cap * 2 : 4;
        struct cm_chan *n = realloc(g->ch, (size_t)nc * sizeof *n);
        if (!n)
            return -ENOMEM;
        g->ch = n;
        g->cap = nc;
    }
    char *id = strdup(client_id);
    if (!id)
        return -ENOMEM;
    g->ch[g->nch++] = (struct cm_chan){ .conn = c, .client_id = id, .language = req->language,
                                        .version = req->version, .last = now };
    return 1;
}

static void remove_chan(struct cm_group *g, int i)
{
    free(g->ch[i].client_id);
    g->ch[i] = g->ch[--g->nch];
}

static void unlink_group(struct cm_group **l, struct cm_group *g)
{
    for (; *l; l = &(*l)->next)
        if (*l == g) {
            *l = g->next;
            free_group(g);
            return;
        }
}

static void notify_changed(struct cm *m, struct cm_group *g)
{
    const struct meta_group *mg = meta_group_get(m->b->meta, g->name);
    if (mg && !mg->notify_consumer_ids_changed_enable)
        return;
    rmt_cmd cmd;
    rmt_cmd_init(&cmd, RMT_REQ_NOTIFY_CONSUMER_IDS_CHANGED);
    rmt_cmd_set_ext(&cmd, "consumerGroup", g->name);
    cmd.flag = RMT_FLAG_ONEWAY;
    for (int i = 0; i < g->nch; i++) {
        cmd.opaque = ++m->opaque;
        cmd.serialize = RMT_SERIALIZE_JSON;
        rmt_conn_send(g->ch[i].conn, &cmd);
    }
    rmt_cmd_destroy(&cmd);
}

static char *json_str_dup(json_t *o, const char *key, const char *def)
{
    const char *v = json_string_value(json_object_get(o, key));
    return strdup(v ? v : def);
}

/* Builds the subscription array of one ConsumerData. Returns the count or -errno. */
static int parse_subs(json_t *set, struct cm_sub **out)
{
    size_t n = json_is_array(set) ? json_array_size(set) : 0;
    *out = NULL;
    if (n == 0)
        return 0;
    struct cm_sub *subs = calloc(n, sizeof *subs);
    if (!subs)
        return -ENOMEM;
    int k = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *sd = json_array_get(set, i);
        const char *topic = json_string_value(json_object_get(sd, "topic"));
        if (!topic)
            continue;
        struct cm_sub *s = &subs[k];
        s->topic = strdup(topic);
        s->sub_string = json_str_dup(sd, "subString", "*");
        s->expr_type = json_str_dup(sd, "expressionType", "TAG");
        s->json = json_dumps(sd, JSON_COMPACT);
        s->sub_version = json_integer_value(json_object_get(sd, "subVersion"));
        if (!s->topic || !s->sub_string || !s->expr_type || !s->json) {
            free_subs(subs, k + 1);
            return -ENOMEM;
        }
        json_t *codes = json_object_get(sd, "codeSet");
        json_t *tags = json_object_get(sd, "tagsSet");
        if (strcmp(s->sub_string, "*") == 0 || !s->sub_string[0]) {
            s->filter.all = true;
        } else if (json_is_array(codes) && json_array_size(codes) > 0) {
            if (json_array_size(codes) > CM_MAX_TAGS) {
                s->filter.all = true;
            } else {
                for (size_t j = 0; j < json_array_size(codes); j++)
                    s->filter.codes[s->filter.n++] = json_integer_value(json_array_get(codes, j));
            }
        } else if (json_is_array(tags) && json_array_size(tags) > 0) {
            if (json_array_size(tags) > CM_MAX_TAGS) {
                s->filter.all = true;
            } else {
                for (size_t j = 0; j < json_array_size(tags); j++) {
                    const char *t = json_string_value(json_array_get(tags, j));
                    if (t)
                        s->filter.codes[s->filter.n++] = msg_tag_hash(t, strlen(t));
                }
            }
        } else if (cm_parse_filter(s->sub_string, &s->filter)) {
            s->filter.all = true;
        }
        k++;
    }
    *out = subs;
    return k;
}

void cm_on_heartbeat(struct cm *m, rmt_conn *c, rmt_cmd *req)
{
    struct broker *b = m->b;
    char err[200];
    json_t *hb = json_parse_rocketmq((const char *)req->body, req->body_len, err, sizeof err);
    if (!hb || !json_is_object(hb)) {
        json_decref(hb);
        brk_err(b, c, req, RMT_RESP_INVALID_PARAMETER, "HEART_BEAT: the body is not HeartbeatData JSON: %s",
                hb ? "not an object" : err);
        return;
    }
    const char *client_id = json_string_value(json_object_get(hb, "clientID"));
    if (!client_id || !*client_id) {
        json_decref(hb);
        brk_err(b, c, req, RMT_RESP_INVALID_PARAMETER, "HEART_BEAT: the field 'clientID' is missing");
        return;
    }
    int64_t now = brk_mono_ms();
    json_t *cset = json_object_get(hb, "consumerDataSet");
    for (size_t i = 0; json_is_array(cset) && i < json_array_size(cset); i++) {
        json_t *cd = json_array_get(cset, i);
        const char *gname = json_string_value(json_object_get(cd, "groupName"));
        if (!gname || !meta_group_name_valid(gname)) {
            log_warn("heartbeat from %s: consumer group name '%s' is invalid; ignored", rmt_conn_peer(c),
                     gname ? gname : "(missing)");
            continue;
        }
        const char *model = json_string_value(json_object_get(cd, "messageModel"));
        const struct meta_group *mg = brk_group(b, gname);
        if (mg && (!model || strcmp(model, "BROADCASTING") != 0)) {
            char retry[META_TOPIC_NAME_MAX + 64];
            snprintf(retry, sizeof retry, "%s%s", BRK_RETRY_PREFIX, gname);
            if (strlen(retry) <= META_TOPIC_NAME_MAX && meta_topic_name_valid(retry))
                brk_topic_system(b, retry, mg->retry_queue_nums > 0 ? mg->retry_queue_nums : 1,
                                 META_PERM_READ | META_PERM_WRITE);
        }
        struct cm_group *g = get_group(&m->consumers, gname);
        struct cm_sub *subs = NULL;
        int ns = g ? parse_subs(json_object_get(cd, "subscriptionDataSet"), &subs) : -ENOMEM;
        if (ns < 0) {
            json_decref(hb);
            brk_err(b, c, req, RMT_RESP_SYSTEM_ERROR, "out of memory registering the consumer");
            return;
        }
        free_subs(g->subs, g->nsub);
        g->subs = subs;
        g->nsub = ns;
        snprintf(g->consume_type, sizeof g->consume_type, "%s",
                 json_string_value(json_object_get(cd, "consumeType")) ?: "CONSUME_PASSIVELY");
        snprintf(g->message_model, sizeof g->message_model, "%s", model ? model : "CLUSTERING");
        snprintf(g->consume_from_where, sizeof g->consume_from_where, "%s",
                 json_string_value(json_object_get(cd, "consumeFromWhere")) ?: "CONSUME_FROM_LAST_OFFSET");
        int rc = touch_chan(g, c, req, client_id, now);
        if (rc < 0) {
            json_decref(hb);
            brk_err(b, c, req, RMT_RESP_SYSTEM_ERROR, "out of memory registering the consumer");
            return;
        }
        if (rc == 1) {
            log_info("consumer %s (%s) joined group %s", client_id, rmt_conn_peer(c), gname);
            notify_changed(m, g);
        }
    }
    json_t *pset = json_object_get(hb, "producerDataSet");
    for (size_t i = 0; json_is_array(pset) && i < json_array_size(pset); i++) {
        const char *gname = json_string_value(json_object_get(json_array_get(pset, i), "groupName"));
        if (!gname || !*gname)
            continue;
        struct cm_group *g = get_group(&m->producers, gname);
        if (!g || touch_chan(g, c, req, client_id, now) < 0) {
            json_decref(hb);
            brk_err(b, c, req, RMT_RESP_SYSTEM_ERROR, "out of memory registering the producer");
            return;
        }
    }
    json_decref(hb);
    brk_resp(b, RMT_RESP_SUCCESS);
    brk_reply(b, c, req, false);
}

/* Drops client_id (or, when NULL, every channel on conn) from a group list.
 * Consumer groups that changed are notified. */
static void drop(struct cm *m, struct cm_group **list, const char *only_group, rmt_conn *c,
                 const char *client_id, bool consumers, const char *why)
{
    struct cm_group *g = *list;
    while (g) {
        struct cm_group *next = g->next;
        if (!only_group || strcmp(g->name, only_group) == 0) {
            bool changed = false;
            for (int i = 0; i < g->nch;) {
                struct cm_chan *ch = &g->ch[i];
                if (client_id ? strcmp(ch->client_id, client_id) == 0 : ch->conn == c) {
                    if (consumers)
                        log_info("consumer %s left group %s (%s)", ch->client_id, g->name, why);
                    remove_chan(g, i);
                    changed = true;
                } else {
                    i++;
                }
            }
            if (g->nch == 0)
                unlink_group(list, g);
            else if (changed && consumers)
                notify_changed(m, g);
        }
        g = next;
    }
}

void cm_on_unregister(struct cm *m, rmt_conn *c, rmt_cmd *req)
{
    struct broker *b = m->b;
    const char *client_id;
    if (brk_need_str(b, c, req, "clientID", &client_id))
        return;
    const char *pg = rmt_cmd_ext(req, "producerGroup");
    const char *cg = rmt_cmd_ext(req, "consumerGroup");
    if (pg && *pg)
        drop(m, &m->producers, pg, c, client_id, false, "unregistered");
    if (cg && *cg)
        drop(m, &m->consumers, cg, c, client_id, true, "unregistered");
    brk_resp(b, RMT_RESP_SUCCESS);
    brk_reply(b, c, req, false);
}

void cm_on_conn_closed(struct cm *m, rmt_conn *c)
{
    drop(m, &m->producers, NULL, c, NULL, false, "connection closed");
    drop(m, &m->consumers, NULL, c, NULL, true, "connection closed");
}

void cm_on_consumer_list(struct cm *m, rmt_conn *c, rmt_cmd *req)
{
    struct broker *b = m->b;
    const char *group;
    if (brk_need_str(b, c, req, "consumerGroup", &group))
        return;
    struct cm_group *g = find_group(m->consumers, group);
    if (!g || g->nch == 0) {
        brk_err(b, c, req, RMT_RESP_SYSTEM_ERROR, "no consumer for this group, %s", group);
        return;
    }
    rmt_cmd *r = brk_resp(b, RMT_RESP_SUCCESS);
    (void)r;
    int rc = buf_append(&b->body, "{\"consumerIdList\":[", 19);
    for (int i = 0; i < g->nch && !rc; i++) {
        if (i)
            rc = buf_append_u8(&b->body, ',');
        if (!rc)
            rc = json_buf_str(&b->body, g->ch[i].client_id);
    }
    if (!rc)
        rc = buf_append(&b->body, "]}", 2);
    if (rc) {
        brk_err(b, c, req, RMT_RESP_SYSTEM_ERROR, "out of memory");
        return;
    }
    brk_reply(b, c, req, true);
}

static void expire(struct cm *m, struct cm_group **list, bool consumers, int64_t now)
{
    int64_t limit = m->b->cfg.channel_expire_ms;
    struct cm_group *g = *list;
    while (g) {
        struct cm_group *next = g->next;
        bool changed = false;
        for (int i = 0; i < g->nch;) {
            if (now - g->ch[i].last > limit) {
                log_info("%s %s of group %s expired (no heartbeat for %lld ms)",
                         consumers ? "consumer" : "producer", g->ch[i].client_id, g->name,
                         (long long)(now - g->ch[i].last));
                remove_chan(g, i);
                changed = true;
            } else {
                i++;
            }
        }
        if (g->nch == 0)
            unlink_group(list, g);
        else if (changed && consumers)
            notify_changed(m, g);
        g = next;
    }
}

static void on_scan(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct cm *m = w->data;
    int64_t now = brk_mono_ms();
    expire(m, &m->producers, false, now);
    expire(m, &m->consumers, true, now);
}

void cm_start(struct cm *m)
{
    double iv = (double)m->b->cfg.channel_expire_ms / 4000.0;
    if (iv > 10.0)
        iv = 10.0;
    if (iv < 0.1)
        iv = 0.1;
    ev_timer_init(&m->scan, on_scan, iv, iv);
    m->scan.data = m;
    ev_timer_start(m->b->loop, &m->scan);
}

const struct cm_sub *cm_find_sub(struct cm *m, const char *group, const char *topic,
                                 bool *group_known)
{
    struct cm_group *g = find_group(m->consumers, group);
    *group_known = g != NULL;
    if (!g)
        return NULL;
    for (int i = 0; i < g->nsub; i++)
        if (strcmp(g->subs[i].topic, topic) == 0)
            return &g->subs[i];
    return NULL;
}

static int conn_set_json(struct cm_group *g, struct buf *out)
{
    int rc = buf_append(out, "{\"connectionSet\":[", 18);
    for (int i = 0; i < g->nch && !rc; i++) {
        rc = buf_printf(out, "%s{\"clientAddr\":", i ? "," : "");
        if (!rc)
            rc = json_buf_str(out, rmt_conn_peer(g->ch[i].conn));
        if (!rc)
            rc = buf_append(out, ",\"clientId\":", 12);
        if (!rc)
            rc = json_buf_str(out, g->ch[i].client_id);
        if (!rc)
            rc = buf_printf(out, ",\"language\":\"%s\",\"version\":%d}", lang_name(g->ch[i].language),
                            g->ch[i].version);
    }
    if (!rc)
        rc = buf_append_u8(out, ']');
    return rc;
}

int cm_consumer_connection_json(struct cm *m, const char *group, struct buf *out)
{
    struct cm_group *g = find_group(m->consumers, group);
    if (!g || !g->nch)
        return -ENOENT;
    int rc = conn_set_json(g, out);
    if (!rc)
        rc = buf_append(out, ",\"subscriptionTable\":{", 22);
    for (int i = 0; i < g->nsub && !rc; i++) {
        if (i)
            rc = buf_append_u8(out, ',');
        if (!rc)
            rc = json_buf_str(out, g->subs[i].topic);
        if (!rc)
            rc = buf_append_u8(out, ':');
        if (!rc)
            rc = buf_append(out, g->subs[i].json, strlen(g->subs[i].json));
    }
    if (!rc)
        rc = buf_printf(out, "},\"consumeType\":\"%s\",\"messageModel\":\"%s\",\"consumeFromWhere\":\"%s\"}",
                        g->consume_type, g->message_model, g->consume_from_where);
    return rc;
}

int cm_producer_connection_json(struct cm *m, const char *group, struct buf *out)
{
    struct cm_group *g = find_group(m->producers, group);
    if (!g || !g->nch)
        return -ENOENT;
    int rc = conn_set_json(g, out);
    return rc ? rc : buf_append_u8(out, '}');
}

rmt_conn *cm_producer_channel(struct cm *m, const char *group)
{
    struct cm_group *g = find_group(m->producers, group);
    struct cm_chan *best = NULL;
    for (int i = 0; g && i < g->nch; i++)
        if (rmt_conn_is_open(g->ch[i].conn) && (!best || g->ch[i].last > best->last))
            best = &g->ch[i];
    return best ? best->conn : NULL;
}

void cm_groups_of_topic(struct cm *m, const char *topic, void (*fn)(const char *group, void *ud),
                        void *ud)
{
    for (struct cm_group *g = m->consumers; g; g = g->next)
        for (int i = 0; i < g->nsub; i++)
            if (strcmp(g->subs[i].topic, topic) == 0) {
                fn(g->name, ud);
                break;
            }
}

void cm_foreach_consumer_sub(struct cm *m, void (*fn)(const char *group, const char *topic, void *ud),
                             void *ud)
{
    for (struct cm_group *g = m->consumers; g; g = g->next)
        for (int i = 0; i < g->nsub; i++)
            fn(g->name, g->subs[i].topic, ud);
}

int cm_send_to_group(struct cm *m, const char *group, rmt_cmd *cmd)
{
    struct cm_group *g = find_group(m->consumers, group);
    int n = 0;
    for (int i = 0; g && i < g->nch; i++) {
        cmd->flag = RMT_FLAG_ONEWAY;
        cmd->opaque = ++m->opaque;
        if (rmt_conn_send(g->ch[i].conn, cmd) == 0)
            n++;
    }
    return n;
}

void cm_counts(struct cm *m, int *producers, int *consumers)
{
    *producers = *consumers = 0;
    for (struct cm_group *g = m->producers; g; g = g->next)
        *producers += g->nch;
    for (struct cm_group *g = m->consumers; g; g = g->next)
        *consumers += g->nch;
}
