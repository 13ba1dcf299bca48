/*
 * Receipt handles, pop check-point info and transaction ids (receipt.h):
 * RocketMQ's text formats, parsed strictly so a forged or truncated handle
 * is refused with INVALID_RECEIPT_HANDLE instead of reaching a broker.
 */
#include "receipt.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RETRY_PREFIX "%RETRY%"

/* Parses a decimal int64 in [p, p+n). */
static int parse_i64(const char *p, size_t n, int64_t *out)
{
    if (n == 0 || n > 20)
        return -EINVAL;
    char tmp[24];
    memcpy(tmp, p, n);
    tmp[n] = 0;
    char *end;
    errno = 0;
    long long v = strtoll(tmp, &end, 10);
    if (errno || *end || end == tmp)
        return -EINVAL;
    *out = v;
    return 0;
}

static int parse_int(const char *p, size_t n, int *out)
{
    int64_t v;
    if (parse_i64(p, n, &v) || v < INT32_MIN || v > INT32_MAX)
        return -EINVAL;
    *out = (int)v;
    return 0;
}

int px_handle_decode(const char *s, size_t len, struct px_handle *h)
{
    const char *f[10];
    size_t fl[10];
    int n = 0;
    size_t i = 0;
    while (i <= len && n < 10) {
        size_t j = i;
        while (j < len && s[j] != ' ')
            j++;
        f[n] = s + i;
        fl[n] = j - i;
        n++;
        i = j + 1;
    }
    if (i <= len || n < 8 || n > 9)
        return -EINVAL;
    memset(h, 0, sizeof *h);
    if (parse_i64(f[0], fl[0], &h->start_offset) || parse_i64(f[1], fl[1], &h->retrieve_time) ||
        parse_i64(f[2], fl[2], &h->invisible_time) || parse_int(f[3], fl[3], &h->revive_qid) ||
        fl[4] != 1 || (f[4][0] != '0' && f[4][0] != '1' && f[4][0] != '2') || fl[5] == 0 ||
        fl[5] >= sizeof h->broker || parse_int(f[6], fl[6], &h->queue_id) ||
        parse_i64(f[7], fl[7], &h->offset))
        return -EINVAL;
    h->topic_type = f[4][0];
    memcpy(h->broker, f[5], fl[5]);
    h->broker[fl[5]] = 0;
    h->commit_log_offset = -1;
    if (n == 9 && parse_i64(f[8], fl[8], &h->commit_log_offset))
        return -EINVAL;
    return 0;
}

int px_handle_build(char *out, size_t cap, int64_t ck_offset, int64_t pop_time, int64_t invisible,
                    int revive_qid, char type, const char *broker, int queue_id, int64_t queue_offset,
                    int64_t commit_log_offset)
{
    int n;
    if (commit_log_offset >= 0)
        n = snprintf(out, cap, "%" PRId64 " %" PRId64 " %" PRId64 " %d %c %s %d %" PRId64 " %" PRId64,
                     ck_offset, pop_time, invisible, revive_qid, type, broker, queue_id, queue_offset,
                     commit_log_offset);
    else
        n = snprintf(out, cap, "%" PRId64 " %" PRId64 " %" PRId64 " %d %c %s %d %" PRId64, ck_offset,
                     pop_time, invisible, revive_qid, type, broker, queue_id, queue_offset);
    if (n < 0 || (size_t)n >= cap)
        return -ENOSPC;
    return n;
}

int px_handle_encode(const struct px_handle *h, char *out, size_t cap)
{
    return px_handle_build(out, cap, h->start_offset, h->retrieve_time, h->invisible_time,
                           h->revive_qid, h->topic_type, h->broker, h->queue_id, h->offset,
                           h->commit_log_offset);
}

int px_handle_real_topic(const struct px_handle *h, const char *topic, const char *group,
                         char *out, size_t cap)
{
    int n;
    switch (h->topic_type) {
    case '0': n = snprintf(out, cap, "%s", topic); break;
    case '1': n = snprintf(out, cap, "%s%s_%s", RETRY_PREFIX, group, topic); break;
    case '2': n = snprintf(out, cap, "%s%s+%s", RETRY_PREFIX, group, topic); break;
    default: return -EINVAL;
    }
    if (n < 0 || (size_t)n >= cap)
        return -ENOSPC;
    return n;
}

char px_topic_type(const char *topic, size_t len)
{
    size_t pl = sizeof(RETRY_PREFIX) - 1;
    if (len < pl || memcmp(topic, RETRY_PREFIX, pl))
        return '0';
    /* v2 retry topics join group and topic with '+', which names cannot hold. */
    if (memchr(topic + pl, '+', len - pl))
        return '2';
    return '1';
}

int px_ckinfo_parse(const char *s, bool msg_offsets, struct px_ckinfo *out)
{
    out->n = 0;
    if (!s || !*s)
        return 0;
    const char *p = s;
    while (*p) {
        const char *end = strchr(p, ';');
        if (!end)
            end = p + strlen(p);
        const char *sp1 = memchr(p, ' ', (size_t)(end - p));
        const char *sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(end - sp1 - 1)) : NULL;
        if (!sp1 || sp1 - p != 1 || !sp2 || sp2 == sp1 + 1 || sp2 + 1 >= end ||
            memchr(sp2 + 1, ' ', (size_t)(end - sp2 - 1)) || out->n == PX_CK_MAX_QUEUES)
            return -EINVAL;
        struct px_ck_entry *e = &out->e[out->n];
        e->type = p[0];
        if (e->type != '0' && e->type != '1' && e->type != '2')
            return -EINVAL;
        const char *k = sp1 + 1;
        size_t kl = (size_t)(sp2 - sp1 - 1);
        e->queue_offset = -1;
        if (!msg_offsets && kl > 2 && k[0] == 'q' && k[1] == 'o') {
            const char *pct = memchr(k, '%', kl);
            if (!pct || parse_int(k + 2, (size_t)(pct - k - 2), &e->queue_id) ||
                parse_i64(pct + 1, (size_t)(k + kl - pct - 1), &e->queue_offset) || e->queue_offset < 0)
                return -EINVAL;
            if (px_ckinfo_find_qo(out, e->type, e->queue_id, e->queue_offset))
                return -EINVAL;
        } else {
            if (parse_int(k, kl, &e->queue_id))
                return -EINVAL;
            if (px_ckinfo_find(out, e->type, e->queue_id))
                return -EINVAL;
        }
        if (msg_offsets) {
            e->offsets = sp2 + 1;
            e->offsets_len = (size_t)(end - sp2 - 1);
            e->value = 0;
            int64_t tmp;
            int count = 1;
            for (size_t j = 0; j < e->offsets_len; j++)
                count += e->offsets[j] == ',';
            for (int j = 0; j < count; j++)
                if (px_ck_offset_at(e, j, &tmp))
                    return -EINVAL;
        } else {
            e->offsets = NULL;
            e->offsets_len = 0;
            if (parse_i64(sp2 + 1, (size_t)(end - sp2 - 1), &e->value))
                return -EINVAL;
        }
        out->n++;
        p = *end ? end + 1 : end;
    }
    return 0;
}

const struct px_ck_entry *px_ckinfo_find(const struct px_ckinfo *ci, char type, int queue_id)
{
    for (int i = 0; i < ci->n; i++)
        if (ci->e[i].type == type && ci->e[i].queue_id == queue_id && ci->e[i].queue_offset < 0)
            return &ci->e[i];
    return NULL;
}

const struct px_ck_entry *px_ckinfo_find_qo(const struct px_ckinfo *ci, char type, int queue_id,
                                            int64_t queue_offset)
{
    for (int i = 0; i < ci->n; i++)
        if (ci->e[i].type == type && ci->e[i].queue_id == queue_id && ci->e[i].queue_offset == queue_offset)
            return &ci->e[i];
    return NULL;
}

int px_ck_offset_at(const struct px_ck_entry *e, int idx, int64_t *out)
{
    const char *p = e->offsets, *end = e->offsets + e->offsets_len;
    for (int i = 0; p < end; i++) {
        const char *c = memchr(p, ',', (size_t)(end - p));
        const char *ve = c ? c : end;
        if (i == idx)
            return parse_i64(p, (size_t)(ve - p), out);
        p = ve + 1;
    }
    return -EINVAL;
}

int px_txid_encode(const struct px_txid *t, char *out, size_t cap)
{
    if (strchr(t->addr, ';') || strchr(t->broker_txid, ';'))
        return -EINVAL;
    int n = snprintf(out, cap, "%s;%" PRId64 ";%" PRId64 ";%s", t->addr, t->commit_log_offset,
                     t->tran_state_offset, t->broker_txid);
    if (n < 0 || (size_t)n >= cap)
        return -ENOSPC;
    return n;
}

int px_txid_decode(const char *s, struct px_txid *t)
{
    const char *a = strchr(s, ';');
    const char *b = a ? strchr(a + 1, ';') : NULL;
    const char *c = b ? strchr(b + 1, ';') : NULL;
    if (!c || a == s || (size_t)(a - s) >= sizeof t->addr || strlen(c + 1) >= sizeof t->broker_txid ||
        strchr(c + 1, ';'))
        return -EINVAL;
    memset(t, 0, sizeof *t);
    memcpy(t->addr, s, (size_t)(a - s));
    if (!strchr(t->addr, ':') || parse_i64(a + 1, (size_t)(b - a - 1), &t->commit_log_offset) ||
        parse_i64(b + 1, (size_t)(c - b - 1), &t->tran_state_offset) || t->commit_log_offset < 0 ||
        t->tran_state_offset < 0)
        return -EINVAL;
    snprintf(t->broker_txid, sizeof t->broker_txid, "%s", c + 1);
    return 0;
}
