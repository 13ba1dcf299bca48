/*
 * RocketMQ message codec: stored-record encode/decode, properties, tag hash,
 * offsetMsgId, SEND_BATCH bodies and unique ids. See message.h for layouts.
 * Everything here works on caller buffers; nothing allocates.
 */
#include "message.h"

#include <errno.h>
#include <string.h>
#include <time.h>

#include "buf.h"

static uint32_t crc_tab[8][256];
static int crc_ready;

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
        crc_tab[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++)
            crc_tab[t][i] = (crc_tab[t - 1][i] >> 8) ^ crc_tab[0][crc_tab[t - 1][i] & 0xff];
    __atomic_store_n(&crc_ready, 1, __ATOMIC_RELEASE);
}

static uint32_t crc32_table(uint32_t crc, const uint8_t *p, size_t len)
{
    while (len && ((uintptr_t)p & 7)) {
        crc = crc_tab[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
        len--;
    }
    while (len >= 8) {
        uint32_t a, b;
        memcpy(&a, p, 4);
        memcpy(&b, p + 4, 4);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
        a = __builtin_bswap32(a);
        b = __builtin_bswap32(b);
#endif
        a ^= crc;
        crc = crc_tab[7][a & 0xff] ^ crc_tab[6][(a >> 8) & 0xff] ^ crc_tab[5][(a >> 16) & 0xff] ^
              crc_tab[4][a >> 24] ^ crc_tab[3][b & 0xff] ^ crc_tab[2][(b >> 8) & 0xff] ^
              crc_tab[1][(b >> 16) & 0xff] ^ crc_tab[0][b >> 24];
        p += 8;
        len -= 8;
    }
    while (len--)
        crc = crc_tab[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
    return crc;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

/* Carry-less multiplication folding (Intel, "Fast CRC Computation for
 * Generic Polynomials Using PCLMULQDQ"), bit-reflected CRC-32/IEEE. Takes
 * and returns the non-inverted register; len is a multiple of 16, >= 64.
 * The constants are x^(k) mod P for the fold distances 4*128+-32, 128+-32
 * and 64, then the Barrett pair (floor(x^64 / P), P). */
__attribute__((target("pclmul,sse4.1")))
static uint32_t crc32_clmul(uint32_t crc, const uint8_t *p, size_t len)
{
    const __m128i k_fold4 = _mm_set_epi64x(0x01c6e41596LL, 0x0154442bd4LL);
    const __m128i k_fold1 = _mm_set_epi64x(0x00ccaa009eLL, 0x01751997d0LL);
    const __m128i k_64 = _mm_set_epi64x(0, 0x0163cd6124LL);
    const __m128i k_barrett = _mm_set_epi64x(0x01f7011641LL, 0x01db710641LL);
    const __m128i low32 = _mm_setr_epi32(-1, 0, -1, 0);

    __m128i a = _mm_xor_si128(_mm_loadu_si128((const __m128i *)p), _mm_cvtsi32_si128((int)crc));
    __m128i b = _mm_loadu_si128((const __m128i *)(p + 16));
    __m128i c = _mm_loadu_si128((const __m128i *)(p + 32));
    __m128i d = _mm_loadu_si128((const __m128i *)(p + 48));
    p += 64;
    len -= 64;
    while (len >= 64) {
        __m128i a0 = _mm_clmulepi64_si128(a, k_fold4, 0x00), a1 = _mm_clmulepi64_si128(a, k_fold4, 0x11);
        __m128i b0 = _mm_clmulepi64_si128(b, k_fold4, 0x00), b1 = _mm_clmulepi64_si128(b, k_fold4, 0x11);
        __m128i c0 = _mm_clmulepi64_si128(c, k_fold4, 0x00), c1 = _mm_clmulepi64_si128(c, k_fold4, 0x11);
        __m128i d0 = _mm_clmulepi64_si128(d, k_fold4, 0x00), d1 = _mm_clmulepi64_si128(d, k_fold4, 0x11);
        a = _mm_xor_si128(_mm_xor_si128(a0, a1), _mm_loadu_si128((const __m128i *)p));
        b = _mm_xor_si128(_mm_xor_si128(b0, b1), _mm_loadu_si128((const __m128i *)(p + 16)));
        c = _mm_xor_si128(_mm_xor_si128(c0, c1), _mm_loadu_si128((const __m128i *)(p + 32)));
        d = _mm_xor_si128(_mm_xor_si128(d0, d1), _mm_loadu_si128((const __m128i *)(p + 48)));
        p += 64;
        len -= 64;
    }
    /* four lanes into one */
    a = _mm_xor_si128(_mm_xor_si128(_mm_clmulepi64_si128(a, k_fold1, 0x00), _mm_clmulepi64_si128(a, k_fold1, 0x11)), b);
    a = _mm_xor_si128(_mm_xor_si128(_mm_clmulepi64_si128(a, k_fold1, 0x00), _mm_clmulepi64_si128(a, k_fold1, 0x11)), c);
    a = _mm_xor_si128(_mm_xor_si128(_mm_clmulepi64_si128(a, k_fold1, 0x00), _mm_clmulepi64_si128(a, k_fold1, 0x11)), d);
    while (len >= 16) {
        __m128i x = _mm_xor_si128(_mm_clmulepi64_si128(a, k_fold1, 0x00), _mm_clmulepi64_si128(a, k_fold1, 0x11));
        a = _mm_xor_si128(x, _mm_loadu_si128((const __m128i *)p));
        p += 16;
        len -= 16;
    }
    /* 128 -> 64 bits */
    __m128i t = _mm_clmulepi64_si128(a, k_fold1, 0x10);
    a = _mm_xor_si128(_mm_srli_si128(a, 8), t);
    t = _mm_srli_si128(a, 4);
    a = _mm_xor_si128(_mm_clmulepi64_si128(_mm_and_si128(a, low32), k_64, 0x00), t);
    /* Barrett reduction to 32 bits */
    t = _mm_clmulepi64_si128(_mm_and_si128(a, low32), k_barrett, 0x10);
    t = _mm_clmulepi64_si128(_mm_and_si128(t, low32), k_barrett, 0x00);
    a = _mm_xor_si128(a, t);
    return (uint32_t)_mm_extract_epi32(a, 1);
}

static int clmul_ok = -1;
#endif

uint32_t msg_crc32(uint32_t crc, const void *data, size_t len)
{
    if (!__atomic_load_n(&crc_ready, __ATOMIC_ACQUIRE))
        crc_init(); /* idempotent: concurrent callers compute identical tables */
    const uint8_t *p = data;
    crc = ~crc;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    if (len >= 64) {
        int ok = __atomic_load_n(&clmul_ok, __ATOMIC_RELAXED);
        if (ok < 0) {
            __builtin_cpu_init();
            ok = __builtin_cpu_supports("pclmul") && __builtin_cpu_supports("sse4.1");
            __atomic_store_n(&clmul_ok, ok, __ATOMIC_RELAXED);
        }
        if (ok) {
            size_t n = len & ~(size_t)15;
            crc = crc32_clmul(crc, p, n);
            p += n;
            len -= n;
        }
    }
#endif
    return ~crc32_table(crc, p, len);
}

int32_t msg_body_crc(const void *data, size_t len)
{
    return (int32_t)(msg_crc32(0, data, len) & 0x7fffffffu);
}

static size_t host_len(int v6) { return v6 ? 20 : 8; }

size_t msg_record_size(uint32_t body_len, uint32_t topic_len, uint32_t props_len, int32_t sysflag)
{
    size_t tl = topic_len > MSG_TOPIC_MAX_V1 ? 2 : 1;
    return 4 + 4 + 4 + 4 + 4 + 8 + 8 + 4 + 8 + host_len(sysflag & MSG_SYSFLAG_BORNHOST_V6) + 8 +
           host_len(sysflag & MSG_SYSFLAG_STOREHOST_V6) + 4 + 8 + 4 + (size_t)body_len + tl +
           topic_len + 2 + props_len;
}

static uint8_t *put_host(uint8_t *p, const struct msg_host *h, int v6)
{
    memcpy(p, h->ip, v6 ? 16 : 4);
    p += v6 ? 16 : 4;
    wr_u32be(p, h->port);
    return p + 4;
}

static const uint8_t *get_host(const uint8_t *p, struct msg_host *h, int v6)
{
    memset(h->ip, 0, sizeof(h->ip));
    memcpy(h->ip, p, v6 ? 16 : 4);
    p += v6 ? 16 : 4;
    h->port = rd_u32be(p);
    h->v6 = v6 ? 1 : 0;
    return p + 4;
}

int msg_record_encode(uint8_t *dst, size_t cap, const struct msg_record *r)
{
    if (r->topic_len == 0 || r->topic_len > 65535 || r->props_len > MSG_PROPERTIES_MAX ||
        r->body_len > INT32_MAX)
        return -EINVAL;
    size_t size = msg_record_size(r->body_len, r->topic_len, r->props_len, r->sysflag);
    if (size > cap)
        return -ENOSPC;
    if (size > INT32_MAX)
        return -EINVAL;
    int v2 = r->topic_len > MSG_TOPIC_MAX_V1;
    uint8_t *p = dst;
    wr_u32be(p, (uint32_t)size); p += 4;
    wr_u32be(p, v2 ? MSG_MAGIC_CODE_V2 : MSG_MAGIC_CODE); p += 4;
    wr_u32be(p, (uint32_t)r->body_crc); p += 4;
    wr_u32be(p, (uint32_t)r->queue_id); p += 4;
    wr_u32be(p, (uint32_t)r->flag); p += 4;
    wr_u64be(p, (uint64_t)r->queue_offset); p += 8;
    wr_u64be(p, (uint64_t)r->phys_offset); p += 8;
    wr_u32be(p, (uint32_t)r->sysflag); p += 4;
    wr_u64be(p, (uint64_t)r->born_ts); p += 8;
    p = put_host(p, &r->born_host, r->sysflag & MSG_SYSFLAG_BORNHOST_V6);
    wr_u64be(p, (uint64_t)r->store_ts); p += 8;
    p = put_host(p, &r->store_host, r->sysflag & MSG_SYSFLAG_STOREHOST_V6);
    wr_u32be(p, (uint32_t)r->reconsume_times); p += 4;
    wr_u64be(p, (uint64_t)r->prepared_tx_offset); p += 8;
    wr_u32be(p, r->body_len); p += 4;
    if (r->body_len)
        memcpy(p, r->body, r->body_len);
    p += r->body_len;
    if (v2) {
        wr_u16be(p, (uint16_t)r->topic_len);
        p += 2;
    } else {
        *p++ = (uint8_t)r->topic_len;
    }
    memcpy(p, r->topic, r->topic_len);
    p += r->topic_len;
    wr_u16be(p, (uint16_t)r->props_len); p += 2;
    if (r->props_len)
        memcpy(p, r->props, r->props_len);
    p += r->props_len;
    return (int)(p - dst);
}

int msg_record_decode(const uint8_t *p, size_t avail, struct msg_record *out, int check_crc)
{
    if (avail < 8)
        return -EAGAIN;
    uint32_t size = rd_u32be(p);
    uint32_t magic = rd_u32be(p + 4);
    if (magic == MSG_BLANK_MAGIC_CODE) {
        out->total_size = size;
        out->magic = magic;
        return 0;
    }
    if (magic != MSG_MAGIC_CODE && magic != MSG_MAGIC_CODE_V2)
        return -EBADMSG;
    if (size > INT32_MAX || size < msg_record_size(0, 1, 0, 0))
        return -EBADMSG;
    if (size > avail)
        return -EAGAIN;
    const uint8_t *q = p + 8, *end = p + size;
    out->total_size = size;
    out->magic = magic;
    out->body_crc = (int32_t)rd_u32be(q); q += 4;
    out->queue_id = (int32_t)rd_u32be(q); q += 4;
    out->flag = (int32_t)rd_u32be(q); q += 4;
    out->queue_offset = (int64_t)rd_u64be(q); q += 8;
    out->phys_offset = (int64_t)rd_u64be(q); q += 8;
    out->sysflag = (int32_t)rd_u32be(q); q += 4;
    out->born_ts = (int64_t)rd_u64be(q); q += 8;
    int bv6 = out->sysflag & MSG_SYSFLAG_BORNHOST_V6, sv6 = out->sysflag & MSG_SYSFLAG_STOREHOST_V6;
    /* fixed part after the born timestamp: hosts, store ts, reconsume, prep, body len */
    if ((size_t)(end - q) < host_len(bv6) + 8 + host_len(sv6) + 4 + 8 + 4)
        return -EBADMSG;
    q = get_host(q, &out->born_host, bv6);
    out->store_ts = (int64_t)rd_u64be(q); q += 8;
    q = get_host(q, &out->store_host, sv6);
    out->reconsume_times = (int32_t)rd_u32be(q); q += 4;
    out->prepared_tx_offset = (int64_t)rd_u64be(q); q += 8;
    uint32_t blen = rd_u32be(q); q += 4;
    if (blen > (size_t)(end - q))
        return -EBADMSG;
    out->body = q;
    out->body_len = blen;
    q += blen;
    uint32_t tlen;
    if (magic == MSG_MAGIC_CODE_V2) {
        if (end - q < 2)
            return -EBADMSG;
        tlen = rd_u16be(q);
        q += 2;
    } else {
        if (end - q < 1)
            return -EBADMSG;
        tlen = *q++;
        if (tlen > MSG_TOPIC_MAX_V1)
            return -EBADMSG;
    }
    if (tlen == 0 || tlen > (size_t)(end - q))
        return -EBADMSG;
    out->topic = (const char *)q;
    out->topic_len = tlen;
    q += tlen;
    if (end - q < 2)
        return -EBADMSG;
    uint32_t plen = rd_u16be(q);
    q += 2;
    if (plen > MSG_PROPERTIES_MAX || plen != (size_t)(end - q))
        return -EBADMSG;
    out->props = (const char *)q;
    out->props_len = plen;
    if (check_crc && msg_body_crc(out->body, blen) != out->body_crc)
        return -EBADMSG;
    return (int)size;
}

int32_t msg_java_hash(const char *s, size_t len)
{
    uint32_t h = 0;
    const uint8_t *p = (const uint8_t *)s, *e = p + len;
    while (p < e) {
        uint32_t cp;
        uint8_t c = *p;
        size_t n;
        if (c < 0x80) { cp = c; n = 1; }
        else if ((c & 0xe0) == 0xc0) { cp = c & 0x1f; n = 2; }
        else if ((c & 0xf0) == 0xe0) { cp = c & 0x0f; n = 3; }
        else if ((c & 0xf8) == 0xf0) { cp = c & 0x07; n = 4; }
        else { cp = 0xfffd; n = 1; }
        if (n > 1) {
            if ((size_t)(e - p) < n) {
                cp = 0xfffd;
                n = (size_t)(e - p);
            } else {
                for (size_t i = 1; i < n; i++) {
                    if ((p[i] & 0xc0) != 0x80) { cp = 0xfffd; n = i; break; }
                    cp = (cp << 6) | (p[i] & 0x3f);
                }
            }
        }
        p += n;
        if (cp >= 0x10000) {
            cp -= 0x10000;
            h = 31 * h + (0xd800 + (cp >> 10));
            h = 31 * h + (0xdc00 + (cp & 0x3ff));
        } else {
            h = 31 * h + cp;
        }
    }
    return (int32_t)h;
}

int msg_prop_next(const char *props, size_t len, size_t *pos, const char **name, size_t *nlen,
                  const char **val, size_t *vlen)
{
    while (*pos < len) {
        const char *item = props + *pos;
        const char *end = memchr(item, MSG_PROPERTY_SEPARATOR, len - *pos);
        size_t ilen = end ? (size_t)(end - item) : len - *pos;
        *pos += ilen + (end ? 1 : 0);
        const char *sep = memchr(item, MSG_NAME_VALUE_SEPARATOR, ilen);
        if (!sep)
            continue;
        *name = item;
        *nlen = (size_t)(sep - item);
        *val = sep + 1;
        *vlen = ilen - *nlen - 1;
        return 1;
    }
    return 0;
}

int msg_prop_get(const char *props, size_t len, const char *name, const char **val, size_t *vlen)
{
    size_t pos = 0, nl, want = strlen(name);
    const char *n;
    while (msg_prop_next(props, len, &pos, &n, &nl, val, vlen))
        if (nl == want && memcmp(n, name, nl) == 0)
            return 1;
    return 0;
}

int msg_prop_append(char *dst, size_t cap, size_t *len, const char *name, const char *val,
                    size_t vlen)
{
    size_t nl = strlen(name);
    if (memchr(name, MSG_NAME_VALUE_SEPARATOR, nl) || memchr(name, MSG_PROPERTY_SEPARATOR, nl) ||
        memchr(val, MSG_NAME_VALUE_SEPARATOR, vlen) || memchr(val, MSG_PROPERTY_SEPARATOR, vlen))
        return -EINVAL;
    if (*len + nl + vlen + 2 > cap)
        return -ENOSPC;
    memcpy(dst + *len, name, nl);
    dst[*len + nl] = MSG_NAME_VALUE_SEPARATOR;
    memcpy(dst + *len + nl + 1, val, vlen);
    dst[*len + nl + 1 + vlen] = MSG_PROPERTY_SEPARATOR;
    *len += nl + vlen + 2;
    return 0;
}

int msg_keys_next(const char *keys, size_t len, size_t *pos, const char **key, size_t *klen)
{
    while (*pos < len) {
        const char *k = keys + *pos;
        const char *e = memchr(k, MSG_KEY_SEPARATOR, len - *pos);
        size_t l = e ? (size_t)(e - k) : len - *pos;
        *pos += l + (e ? 1 : 0);
        if (l) {
            *key = k;
            *klen = l;
            return 1;
        }
    }
    return 0;
}

static const char hexd[] = "0123456789ABCDEF";

static void hex_encode(const uint8_t *p, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hexd[p[i] >> 4];
        out[2 * i + 1] = hexd[p[i] & 15];
    }
}

static int hexv(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

static int hex_decode(const char *s, size_t n, uint8_t *out)
{
    for (size_t i = 0; i < n; i++) {
        int a = hexv(s[2 * i]), b = hexv(s[2 * i + 1]);
        if (a < 0 || b < 0)
            return -EINVAL;
        out[i] = (uint8_t)(a << 4 | b);
    }
    return 0;
}

int msg_offset_id_encode(const struct msg_host *h, int64_t phys_offset, char *out)
{
    uint8_t raw[28];
    size_t il = h->v6 ? 16 : 4;
    memcpy(raw, h->ip, il);
    wr_u32be(raw + il, h->port);
    wr_u64be(raw + il + 4, (uint64_t)phys_offset);
    size_t n = il + 12;
    hex_encode(raw, n, out);
    out[2 * n] = '\0';
    return (int)(2 * n);
}

int msg_offset_id_decode(const char *id, size_t len, struct msg_host *h, int64_t *phys_offset)
{
    uint8_t raw[28];
    if (len != 32 && len != 56)
        return -EINVAL;
    if (hex_decode(id, len / 2, raw) < 0)
        return -EINVAL;
    size_t il = len == 56 ? 16 : 4;
    memset(h, 0, sizeof(*h));
    memcpy(h->ip, raw, il);
    h->v6 = len == 56;
    h->port = rd_u32be(raw + il);
    *phys_offset = (int64_t)rd_u64be(raw + il + 4);
    return 0;
}

int msg_batch_next(const uint8_t *p, size_t len, size_t *pos, struct msg_batch_item *out)
{
    if (*pos >= len)
        return 0;
    size_t rem = len - *pos;
    const uint8_t *q = p + *pos;
    if (rem < 20)
        return -EBADMSG;
    uint32_t total = rd_u32be(q);
    if (total < 22 || total > rem)
        return -EBADMSG;
    out->flag = (int32_t)rd_u32be(q + 12);
    uint32_t blen = rd_u32be(q + 16);
    if (blen > total - 22)
        return -EBADMSG;
    out->body = q + 20;
    out->body_len = blen;
    uint32_t plen = rd_u16be(q + 20 + blen);
    if (plen > MSG_PROPERTIES_MAX || 22 + (size_t)blen + plen != total)
        return -EBADMSG;
    out->props = (const char *)(q + 22 + blen);
    out->props_len = plen;
    *pos += total;
    return 1;
}

int msg_batch_count(const uint8_t *p, size_t len)
{
    size_t pos = 0;
    struct msg_batch_item it;
    int n = 0, rc;
    while ((rc = msg_batch_next(p, len, &pos, &it)) == 1)
        n++;
    return rc < 0 ? rc : n;
}

int msg_batch_encode_one(uint8_t *dst, size_t cap, int32_t flag, const void *body, uint32_t body_len,
                         const char *props, uint32_t props_len)
{
    if (props_len > MSG_PROPERTIES_MAX)
        return -EINVAL;
    size_t total = 22 + (size_t)body_len + props_len;
    if (total > cap || total > INT32_MAX)
        return -ENOSPC;
    wr_u32be(dst, (uint32_t)total);
    wr_u32be(dst + 4, 0);
    wr_u32be(dst + 8, 0);
    wr_u32be(dst + 12, (uint32_t)flag);
    wr_u32be(dst + 16, body_len);
    if (body_len)
        memcpy(dst + 20, body, body_len);
    wr_u16be(dst + 20 + body_len, (uint16_t)props_len);
    if (props_len)
        memcpy(dst + 22 + body_len, props, props_len);
    return (int)total;
}

void msg_uniq_init(struct msg_uniq_gen *g, const uint8_t ip4[4], uint32_t pid, uint32_t seed)
{
    uint8_t raw[10];
    if (ip4) {
        memcpy(raw, ip4, 4);
    } else {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint32_t r = (uint32_t)ts.tv_nsec ^ (pid << 16);
        raw[0] = 10; /* private range so it cannot collide with a real host */
        raw[1] = (uint8_t)(r >> 16);
        raw[2] = (uint8_t)(r >> 8);
        raw[3] = (uint8_t)r;
    }
    wr_u16be(raw + 4, (uint16_t)pid);
    wr_u32be(raw + 6, seed);
    hex_encode(raw, 10, g->fix);
    g->fix[20] = '\0';
    g->counter = 0;
}

static int64_t month_start_ms(int64_t now_ms)
{
    time_t t = (time_t)(now_ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    tm.tm_mday = 1;
    tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
    return (int64_t)timegm(&tm) * 1000;
}

void msg_uniq_next(struct msg_uniq_gen *g, int64_t now_ms, char *out)
{
    uint8_t raw[6];
    uint32_t c = __atomic_fetch_add(&g->counter, 1, __ATOMIC_RELAXED);
    wr_u32be(raw, (uint32_t)(now_ms - month_start_ms(now_ms)));
    wr_u16be(raw + 4, (uint16_t)c);
    memcpy(out, g->fix, 20);
    hex_encode(raw, 6, out + 20);
    out[32] = '\0';
}
