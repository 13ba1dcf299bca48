/*
 * Stored records → gRPC messages (what ReceiveMessage, PullMessage and
 * transaction checks hand to clients), the reserved property names, and
 * the MD5 body digest. MD5 is used because the official clients agree on
 * its text form (uppercase hex), while they disagree on CRC32's.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "consumer.h"
#include "proxy.h"

static const char *const reserved[] = {
    MSG_PROP_KEYS, MSG_PROP_TAGS, MSG_PROP_WAIT_STORE_MSG_OK, MSG_PROP_DELAY_TIME_LEVEL,
    MSG_PROP_RETRY_TOPIC, MSG_PROP_REAL_TOPIC, MSG_PROP_REAL_QUEUE_ID, MSG_PROP_TRANSACTION_PREPARED,
    MSG_PROP_PRODUCER_GROUP, MSG_PROP_MIN_OFFSET, MSG_PROP_MAX_OFFSET, MSG_PROP_BUYER_ID,
    MSG_PROP_ORIGIN_MESSAGE_ID, MSG_PROP_TRANSFER_FLAG, MSG_PROP_CORRECTION_FLAG, MSG_PROP_MQ2_FLAG,
    MSG_PROP_RECONSUME_TIME, MSG_PROP_MSG_REGION, MSG_PROP_TRACE_SWITCH,
    MSG_PROP_UNIQ_CLIENT_MESSAGE_ID_KEYIDX, MSG_PROP_MAX_RECONSUME_TIMES,
    MSG_PROP_CONSUME_START_TIMESTAMP, MSG_PROP_TRANSACTION_PREPARED_QUEUE_OFFSET,
    MSG_PROP_TRANSACTION_CHECK_TIMES, MSG_PROP_CHECK_IMMUNITY_TIME_IN_SECONDS, MSG_PROP_INSTANCE_ID,
    MSG_PROP_CORRELATION_ID, MSG_PROP_MESSAGE_REPLY_TO_CLIENT, MSG_PROP_MESSAGE_TTL,
    MSG_PROP_REPLY_MESSAGE_ARRIVE_TIME, MSG_PROP_PUSH_REPLY_TIME, MSG_PROP_CLUSTER,
    MSG_PROP_MESSAGE_TYPE, MSG_PROP_INNER_MULTI_DISPATCH, MSG_PROP_INNER_MULTI_QUEUE_OFFSET,
    MSG_PROP_TIMER_DELIVER_MS, MSG_PROP_TIMER_DELAY_SEC, MSG_PROP_TIMER_DELAY_MS, MSG_PROP_TIMER_OUT_MS,
    MSG_PROP_TIMER_ENQUEUE_MS, MSG_PROP_TIMER_DEQUEUE_MS, MSG_PROP_TIMER_ROLL_TIMES,
    MSG_PROP_TIMER_DEL_UNIQKEY, MSG_PROP_SHARDING_KEY, MSG_PROP_DLQ_ORIGIN_TOPIC,
    MSG_PROP_DLQ_ORIGIN_MESSAGE_ID, MSG_PROP_POP_CK, MSG_PROP_FIRST_POP_TIME, "TRACE_CONTEXT",
    "__transactionId__", "INNER_NUM", "bname", "__BORNHOST", "ORIGIN_MESSAGE_ID",
    "TRAN_PREPARED_QUEUE_OFFSET", "POP_CK_OFFSET", "DLQ_ORIGIN_TOPIC",
};

bool px_prop_reserved(const char *name, size_t len)
{
    for (size_t i = 0; i < sizeof reserved / sizeof reserved[0]; i++)
        if (strlen(reserved[i]) == len && !memcmp(reserved[i], name, len))
            return true;
    return false;
}

/* MD5 (RFC 1321). */
struct md5 {
    uint32_t a, b, c, d;
};

static const uint32_t K[64] = {
    0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee, 0xf57c0faf, 0x4787c62a, 0xa8304613, 0xfd469501,
    0x698098d8, 0x8b44f7af, 0xffff5bb1, 0x895cd7be, 0x6b901122, 0xfd987193, 0xa679438e, 0x49b40821,
    0xf61e2562, 0xc040b340, 0x265e5a51, 0xe9b6c7aa, 0xd62f105d, 0x02441453, 0xd8a1e681, 0xe7d3fbc8,
    0x21e1cde6, 0xc33707d6, 0xf4d50d87, 0x455a14ed, 0xa9e3e905, 0xfcefa3f8, 0x676f02d9, 0x8d2a4c8a,
    0xfffa3942, 0x8771f681, 0x6d9d6122, 0xfde5380c, 0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70,
    0x289b7ec6, 0xeaa127fa, 0xd4ef3085, 0x04881d05, 0xd9d4d039, 0xe6db99e5, 0x1fa27cf8, 0xc4ac5665,
    0xf4292244, 0x432aff97, 0xab9423a7, 0xfc93a039, 0x655b59c3, 0x8f0ccc92, 0xffeff47d, 0x85845dd1,
    0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1, 0xf7537e82, 0xbd3af235, 0x2ad7d2bb, 0xeb86d391,
};
/* One 64-byte block, unrolled: constant rotations and message indices let
 * the compiler keep everything in registers (the per-message digest of
 * every received body runs through here). */
#define MD5_ROTL(x, n) (((x) << (n)) | ((x) >> (32 - (n))))
#define MD5_F(x, y, z) ((z) ^ ((x) & ((y) ^ (z))))
#define MD5_G(x, y, z) ((y) ^ ((z) & ((x) ^ (y))))
#define MD5_H(x, y, z) ((x) ^ (y) ^ (z))
#define MD5_I(x, y, z) ((y) ^ ((x) | ~(z)))
#define MD5_STEP(f, a, b, c, d, i, g, r) ((a) = (b) + MD5_ROTL((a) + f((b), (c), (d)) + K[i] + w[g], r))

static void md5_block(struct md5 *s, const uint8_t *p)
{
    uint32_t w[16];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[i * 4] | (uint32_t)p[i * 4 + 1] << 8 | (uint32_t)p[i * 4 + 2] << 16 |
               (uint32_t)p[i * 4 + 3] << 24;
    uint32_t a = s->a, b = s->b, c = s->c, d = s->d;
    for (int i = 0; i < 16; i += 4) {
        MD5_STEP(MD5_F, a, b, c, d, i, i, 7);
        MD5_STEP(MD5_F, d, a, b, c, i + 1, i + 1, 12);
        MD5_STEP(MD5_F, c, d, a, b, i + 2, i + 2, 17);
        MD5_STEP(MD5_F, b, c, d, a, i + 3, i + 3, 22);
    }
    for (int i = 16; i < 32; i += 4) {
        MD5_STEP(MD5_G, a, b, c, d, i, (5 * i + 1) & 15, 5);
        MD5_STEP(MD5_G, d, a, b, c, i + 1, (5 * i + 6) & 15, 9);
        MD5_STEP(MD5_G, c, d, a, b, i + 2, (5 * i + 11) & 15, 14);
        MD5_STEP(MD5_G, b, c, d, a, i + 3, (5 * i + 16) & 15, 20);
    }
    for (int i = 32; i < 48; i += 4) {
        MD5_STEP(MD5_H, a, b, c, d, i, (3 * i + 5) & 15, 4);
        MD5_STEP(MD5_H, d, a, b, c, i + 1, (3 * i + 8) & 15, 11);
        MD5_STEP(MD5_H, c, d, a, b, i + 2, (3 * i + 11) & 15, 16);
        MD5_STEP(MD5_H, b, c, d, a, i + 3, (3 * i + 14) & 15, 23);
    }
    for (int i = 48; i < 64; i += 4) {
        MD5_STEP(MD5_I, a, b, c, d, i, (7 * i) & 15, 6);
        MD5_STEP(MD5_I, d, a, b, c, i + 1, (7 * i + 7) & 15, 10);
        MD5_STEP(MD5_I, c, d, a, b, i + 2, (7 * i + 14) & 15, 15);
        MD5_STEP(MD5_I, b, c, d, a, i + 3, (7 * i + 21) & 15, 21);
    }
    s->a += a;
    s->b += b;
    s->c += c;
    s->d += d;
}

void px_md5_hex(const void *data, size_t len, char out[33])
{
    struct md5 s = { 0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476 };
    const uint8_t *p = data;
    size_t n = len;
    while (n >= 64) {
        md5_block(&s, p);
        p += 64;
        n -= 64;
    }
    uint8_t tail[128] = { 0 };
    memcpy(tail, p, n);
    tail[n] = 0x80;
    size_t tl = n + 1 + 8 <= 64 ? 64 : 128;
    uint64_t bits = (uint64_t)len * 8;
    for (int i = 0; i < 8; i++)
        tail[tl - 8 + i] = (uint8_t)(bits >> (8 * i));
    md5_block(&s, tail);
    if (tl == 128)
        md5_block(&s, tail + 64);
    uint32_t v[4] = { s.a, s.b, s.c, s.d };
    static const char hex[] = "0123456789ABCDEF";
    for (int i = 0; i < 16; i++) {
        uint8_t byte = (uint8_t)(v[i / 4] >> (8 * (i % 4)));
        out[i * 2] = hex[byte >> 4];
        out[i * 2 + 1] = hex[byte & 15];
    }
    out[32] = 0;
}

/* Copies [s, s+n) NUL-terminated into scratch; returns its offset. */
static size_t keep(struct buf *scratch, const char *s, size_t n)
{
    size_t off = scratch->len;
    if (buf_reserve(scratch, n + 1))
        return (size_t)-1;
    memcpy(scratch->data + off, s, n);
    scratch->data[off + n] = 0;
    scratch->len += n + 1;
    return off;
}

static void host_str(char *out, size_t cap, const struct msg_host *h)
{
    char ip[64];
    if (h->v6)
        inet_ntop(AF_INET6, h->ip, ip, sizeof ip);
    else
        inet_ntop(AF_INET, h->ip, ip, sizeof ip);
    snprintf(out, cap, "%s:%u", ip, h->port);
}

int px_msg_to_pb(struct px_msg_out *o, const struct cli_msg_view *v, const struct msg_record *rec,
                 const char *topic, struct buf *scratch)
{
    /* Offsets into scratch first (it may move while growing), pointers last. */
    enum { F_TAG, F_MID, F_GROUP, F_BHOST, F_SHOST, F_TRACE, F_N };
    size_t off[F_N];
    for (int i = 0; i < F_N; i++)
        off[i] = (size_t)-1;
    size_t nkeys = 0, nprops = 0;
    size_t key_off[64];
    size_t pk_off[256], pv_off[256];
    if (v->tags)
        off[F_TAG] = keep(scratch, v->tags, v->tags_len);
    off[F_MID] = keep(scratch, v->msg_id, v->msg_id_len);
    const char *val;
    size_t vlen;
    bool fifo = false, tx = false, delay = false;
    int64_t deliver = 0;
    if (msg_prop_get(v->props, v->props_len, MSG_PROP_SHARDING_KEY, &val, &vlen)) {
        off[F_GROUP] = keep(scratch, val, vlen);
        fifo = true;
    }
    if (msg_prop_get(v->props, v->props_len, MSG_PROP_TRANSACTION_PREPARED, &val, &vlen) && vlen == 4 &&
        !memcmp(val, "true", 4))
        tx = true;
    /* the due time: as the producer gave it, or as the broker computed it
     * from a relative TIMER_DELAY_SEC / TIMER_DELAY_MS */
    if ((msg_prop_get(v->props, v->props_len, MSG_PROP_TIMER_DELIVER_MS, &val, &vlen) ||
         msg_prop_get(v->props, v->props_len, MSG_PROP_TIMER_OUT_MS, &val, &vlen)) &&
        vlen < 24) {
        char t[24];
        memcpy(t, val, vlen);
        t[vlen] = 0;
        deliver = strtoll(t, NULL, 10);
        delay = deliver > 0;
    }
    if (msg_prop_get(v->props, v->props_len, "TRACE_CONTEXT", &val, &vlen))
        off[F_TRACE] = keep(scratch, val, vlen);
    if (v->keys) {
        size_t pos = 0;
        const char *k;
        size_t kl;
        while (nkeys < 64 && msg_keys_next(v->keys, v->keys_len, &pos, &k, &kl) == 1)
            key_off[nkeys++] = keep(scratch, k, kl);
    }
    {
        size_t pos = 0;
        const char *n, *pv;
        size_t nl, pvl;
        while (nprops < 256 && msg_prop_next(v->props, v->props_len, &pos, &n, &nl, &pv, &pvl) == 1) {
            if (px_prop_reserved(n, nl))
                continue;
            pk_off[nprops] = keep(scratch, n, nl);
            pv_off[nprops] = keep(scratch, pv, pvl);
            nprops++;
        }
    }
    char hb[80] = "", hs[80] = "";
    if (rec) {
        host_str(hb, sizeof hb, &rec->born_host);
        host_str(hs, sizeof hs, &rec->store_host);
    }
    off[F_BHOST] = keep(scratch, hb, strlen(hb));
    off[F_SHOST] = keep(scratch, hs, strlen(hs));
    for (int i = 0; i < F_N; i++)
        if (off[i] == (size_t)-1 && (i == F_MID || i == F_BHOST || i == F_SHOST))
            return -ENOMEM;
    if (nkeys > o->cap_keys) {
        char **k = realloc(o->keys, nkeys * sizeof *k);
        if (!k)
            return -ENOMEM;
        o->keys = k;
        o->cap_keys = nkeys;
    }
    if (nprops > o->cap_entries) {
        void *e = realloc(o->entries, nprops * sizeof *o->entries);
        if (!e)
            return -ENOMEM;
        o->entries = e;
        void *ep = realloc(o->entry_ptrs, nprops * sizeof *o->entry_ptrs);
        if (!ep)
            return -ENOMEM;
        o->entry_ptrs = ep;
        o->cap_entries = nprops;
    }
    char *base = (char *)scratch->data;
#define S(i) (off[i] == (size_t)-1 ? NULL : base + off[i])
    apache__rocketmq__v2__message__init(&o->msg);
    apache__rocketmq__v2__system_properties__init(&o->sp);
    apache__rocketmq__v2__resource__init(&o->topic);
    apache__rocketmq__v2__digest__init(&o->digest);
    google__protobuf__timestamp__init(&o->born);
    google__protobuf__timestamp__init(&o->store);
    google__protobuf__timestamp__init(&o->deliver);
    google__protobuf__duration__init(&o->invisible);
    o->topic.name = (char *)topic;
    o->topic.resource_namespace = (char *)"";
    o->msg.topic = &o->topic;
    o->msg.system_properties = &o->sp;
    o->msg.body.data = (uint8_t *)v->body;
    o->msg.body.len = v->body_len;
    for (size_t i = 0; i < nprops; i++) {
        apache__rocketmq__v2__message__user_properties_entry__init(&o->entries[i]);
        o->entries[i].key = base + pk_off[i];
        o->entries[i].value = base + pv_off[i];
        o->entry_ptrs[i] = &o->entries[i];
    }
    o->msg.n_user_properties = nprops;
    o->msg.user_properties = o->entry_ptrs;
    if (S(F_TAG)) {
        o->sp.opt_tag_case = APACHE__ROCKETMQ__V2__SYSTEM_PROPERTIES__OPT_TAG_TAG;
        o->sp.tag = S(F_TAG);
    }
    for (size_t i = 0; i < nkeys; i++)
        o->keys[i] = base + key_off[i];
    o->sp.n_keys = nkeys;
    o->sp.keys = o->keys;
    o->sp.message_id = S(F_MID);
    px_md5_hex(v->body, v->body_len, o->md5);
    o->digest.type = APACHE__ROCKETMQ__V2__DIGEST_TYPE__MD5;
    o->digest.checksum = o->md5;
    o->sp.body_digest = &o->digest;
    o->sp.body_encoding = APACHE__ROCKETMQ__V2__ENCODING__IDENTITY;
    o->sp.message_type = tx ? APACHE__ROCKETMQ__V2__MESSAGE_TYPE__TRANSACTION
                       : fifo ? APACHE__ROCKETMQ__V2__MESSAGE_TYPE__FIFO
                       : delay ? APACHE__ROCKETMQ__V2__MESSAGE_TYPE__DELAY
                               : APACHE__ROCKETMQ__V2__MESSAGE_TYPE__NORMAL;
    o->born.seconds = v->born_ts / 1000;
    o->born.nanos = (int32_t)(v->born_ts % 1000) * 1000000;
    o->sp.born_timestamp = &o->born;
    o->sp.born_host = S(F_BHOST);
    o->store.seconds = v->store_ts / 1000;
    o->store.nanos = (int32_t)(v->store_ts % 1000) * 1000000;
    o->sp.store_timestamp = &o->store;
    o->sp.store_host = S(F_SHOST);
    if (delay) {
        o->deliver.seconds = deliver / 1000;
        o->deliver.nanos = (int32_t)(deliver % 1000) * 1000000;
        o->sp.delivery_timestamp = &o->deliver;
    }
    o->sp.queue_id = v->queue_id;
    o->sp.opt_queue_offset_case = APACHE__ROCKETMQ__V2__SYSTEM_PROPERTIES__OPT_QUEUE_OFFSET_QUEUE_OFFSET;
    o->sp.queue_offset = v->queue_offset;
    o->sp.opt_delivery_attempt_case =
        APACHE__ROCKETMQ__V2__SYSTEM_PROPERTIES__OPT_DELIVERY_ATTEMPT_DELIVERY_ATTEMPT;
    o->sp.delivery_attempt = v->reconsume_times + 1;
    if (S(F_GROUP)) {
        o->sp.opt_message_group_case = APACHE__ROCKETMQ__V2__SYSTEM_PROPERTIES__OPT_MESSAGE_GROUP_MESSAGE_GROUP;
        o->sp.message_group = S(F_GROUP);
    }
    if (S(F_TRACE)) {
        o->sp.opt_trace_context_case = APACHE__ROCKETMQ__V2__SYSTEM_PROPERTIES__OPT_TRACE_CONTEXT_TRACE_CONTEXT;
        o->sp.trace_context = S(F_TRACE);
    }
#undef S
    return 0;
}

void px_msg_out_free(struct px_msg_out *o)
{
    free(o->entries);
    free(o->entry_ptrs);
    free(o->keys);
    memset(o, 0, sizeof *o);
}
