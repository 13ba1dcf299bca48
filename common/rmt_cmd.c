/*
 * Remoting commands and their frame codec (JSON and ROCKETMQ binary headers).
 *
 * Strings of a command (remark, extFields keys and values) live NUL-terminated
 * in one arena addressed by offsets, so growing the arena never invalidates
 * the index, and a reset keeps the capacity for the next request.
 */
#include "remoting.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const lang_names[] = {
    "JAVA", "CPP", "DOTNET", "PYTHON", "DELPHI", "ERLANG", "RUBY",
    "OTHER", "HTTP", "GO", "PHP", "OMS", "RUST",
};
#define LANG_COUNT (sizeof lang_names / sizeof lang_names[0])

void rmt_cmd_init(rmt_cmd *c, int32_t code)
{
    memset(c, 0, offsetof(rmt_cmd, inline_arena));
    c->code = code;
    c->language = RMT_LANG_CPP;
    c->version = RMT_VERSION;
    c->serialize = RMT_SERIALIZE_ROCKETMQ;
    c->remark_off = -1;
    c->arena = c->inline_arena;
    c->arena_cap = RMT_INLINE_ARENA;
    c->kv = c->inline_kv;
    c->kv_cap = RMT_INLINE_KV;
}

void rmt_cmd_reset(rmt_cmd *c, int32_t code)
{
    free(c->owned_body);
    c->owned_body = NULL;
    c->code = code;
    c->language = RMT_LANG_CPP;
    c->version = RMT_VERSION;
    c->opaque = 0;
    c->flag = 0;
    c->serialize = RMT_SERIALIZE_ROCKETMQ;
    c->remark_off = -1;
    c->body = NULL;
    c->body_len = 0;
    c->arena_len = 0;
    c->kv_n = 0;
}

void rmt_cmd_destroy(rmt_cmd *c)
{
    free(c->owned_body);
    c->owned_body = NULL;
    if (c->arena != c->inline_arena)
        free(c->arena);
    if (c->kv != c->inline_kv)
        free(c->kv);
    c->arena = c->inline_arena;
    c->arena_cap = RMT_INLINE_ARENA;
    c->arena_len = 0;
    c->kv = c->inline_kv;
    c->kv_cap = RMT_INLINE_KV;
    c->kv_n = 0;
}

rmt_cmd *rmt_cmd_dup(const rmt_cmd *c)
{
    rmt_cmd *d = malloc(sizeof *d);
    if (!d)
        return NULL;
    rmt_cmd_init(d, c->code);
    d->language = c->language;
    d->version = c->version;
    d->opaque = c->opaque;
    d->flag = c->flag;
    d->serialize = c->serialize;
    d->remark_off = c->remark_off;
    if (c->arena_len > d->arena_cap) {
        d->arena = malloc(c->arena_len);
        if (!d->arena)
            goto fail;
        d->arena_cap = c->arena_len;
    }
    memcpy(d->arena, c->arena, c->arena_len);
    d->arena_len = c->arena_len;
    if (c->kv_n > d->kv_cap) {
        d->kv = malloc(sizeof(struct rmt_kv) * c->kv_n);
        if (!d->kv)
            goto fail;
        d->kv_cap = c->kv_n;
    }
    memcpy(d->kv, c->kv, sizeof(struct rmt_kv) * c->kv_n);
    d->kv_n = c->kv_n;
    if (c->body_len) {
        d->owned_body = malloc(c->body_len);
        if (!d->owned_body)
            goto fail;
        memcpy(d->owned_body, c->body, c->body_len);
        d->body = d->owned_body;
        d->body_len = c->body_len;
    }
    return d;
fail:
    rmt_cmd_free(d);
    return NULL;
}

void rmt_cmd_free(rmt_cmd *c)
{
    if (!c)
        return;
    rmt_cmd_destroy(c);
    free(c);
}

/* Copies n bytes plus a NUL into the arena; returns the offset or -1. */
static int64_t arena_put(rmt_cmd *c, const void *p, size_t n)
{
    if (n > UINT32_MAX / 2 || c->arena_len + n + 1 > UINT32_MAX / 2)
        return -1;
    uint32_t need = c->arena_len + (uint32_t)n + 1;
    if (need > c->arena_cap) {
        uint32_t cap = c->arena_cap * 2;
        while (cap < need)
            cap *= 2;
        uint8_t *a;
        if (c->arena == c->inline_arena) {
            a = malloc(cap);
            if (a)
                memcpy(a, c->arena, c->arena_len);
        } else {
            a = realloc(c->arena, cap);
        }
        if (!a)
            return -1;
        c->arena = a;
        c->arena_cap = cap;
    }
    uint32_t off = c->arena_len;
    if (n)
        memcpy(c->arena + off, p, n);
    c->arena[off + n] = 0;
    c->arena_len = need;
    return off;
}

static int kv_grow(rmt_cmd *c)
{
    if (c->kv_n < c->kv_cap)
        return 0;
    uint32_t cap = c->kv_cap * 2;
    struct rmt_kv *k;
    if (c->kv == c->inline_kv) {
        k = malloc(sizeof *k * cap);
        if (k)
            memcpy(k, c->kv, sizeof *k * c->kv_n);
    } else {
        k = realloc(c->kv, sizeof *k * cap);
    }
    if (!k)
        return -ENOMEM;
    c->kv = k;
    c->kv_cap = cap;
    return 0;
}

const char *rmt_cmd_remark(const rmt_cmd *c)
{
    return c->remark_off < 0 ? NULL : (const char *)c->arena + c->remark_off;
}

int rmt_cmd_set_remark(rmt_cmd *c, const char *fmt, ...)
{
    char tmp[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0)
        return -EINVAL;
    if ((size_t)n >= sizeof tmp)
        n = sizeof tmp - 1;
    int64_t off = arena_put(c, tmp, (size_t)n);
    if (off < 0)
        return -ENOMEM;
    c->remark_off = (int32_t)off;
    return 0;
}

static struct rmt_kv *kv_find(const rmt_cmd *c, const char *key)
{
    for (uint32_t i = 0; i < c->kv_n; i++)
        if (strcmp((const char *)c->arena + c->kv[i].key_off, key) == 0)
            return &c->kv[i];
    return NULL;
}

static int ext_put(rmt_cmd *c, const char *key, size_t key_len, const char *val, size_t val_len,
                   bool replace)
{
    struct rmt_kv *kv = NULL;
    if (replace) {
        char kbuf[256];
        if (key_len < sizeof kbuf) {
            memcpy(kbuf, key, key_len);
            kbuf[key_len] = 0;
            kv = kv_find(c, kbuf);
        }
    }
    int64_t voff = arena_put(c, val, val_len);
    if (voff < 0)
        return -ENOMEM;
    if (kv) {
        kv->val_off = (uint32_t)voff;
        kv->val_len = (uint32_t)val_len;
        return 0;
    }
    int64_t koff = arena_put(c, key, key_len);
    if (koff < 0 || kv_grow(c))
        return -ENOMEM;
    kv = &c->kv[c->kv_n++];
    kv->key_off = (uint32_t)koff;
    kv->key_len = (uint32_t)key_len;
    kv->val_off = (uint32_t)voff;
    kv->val_len = (uint32_t)val_len;
    return 0;
}

int rmt_cmd_set_ext_n(rmt_cmd *c, const char *key, const char *val, size_t val_len)
{
    return ext_put(c, key, strlen(key), val, val_len, true);
}

int rmt_cmd_set_ext(rmt_cmd *c, const char *key, const char *val)
{
    return rmt_cmd_set_ext_n(c, key, val, strlen(val));
}

int rmt_cmd_set_ext_int(rmt_cmd *c, const char *key, int64_t val)
{
    char tmp[24];
    int n = snprintf(tmp, sizeof tmp, "%" PRId64, val);
    return rmt_cmd_set_ext_n(c, key, tmp, (size_t)n);
}

const char *rmt_cmd_ext(const rmt_cmd *c, const char *key)
{
    struct rmt_kv *kv = kv_find(c, key);
    return kv ? (const char *)c->arena + kv->val_off : NULL;
}

int rmt_cmd_ext_int(const rmt_cmd *c, const char *key, int64_t *out)
{
    const char *v = rmt_cmd_ext(c, key);
    if (!v)
        return -ENOENT;
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (errno || end == v || *end)
        return -EINVAL;
    *out = x;
    return 0;
}

int rmt_cmd_ext_int_or(const rmt_cmd *c, const char *key, int64_t def, int64_t *out)
{
    int rc = rmt_cmd_ext_int(c, key, out);
    if (rc == -ENOENT) {
        *out = def;
        return 0;
    }
    return rc;
}

bool rmt_cmd_ext_bool(const rmt_cmd *c, const char *key, bool def)
{
    const char *v = rmt_cmd_ext(c, key);
    if (!v)
        return def;
    if (strcasecmp(v, "true") == 0)
        return true;
    if (strcasecmp(v, "false") == 0)
        return false;
    return def;
}

uint32_t rmt_cmd_ext_count(const rmt_cmd *c) { return c->kv_n; }

void rmt_cmd_ext_at(const rmt_cmd *c, uint32_t i, const char **key, const char **val)
{
    *key = (const char *)c->arena + c->kv[i].key_off;
    *val = (const char *)c->arena + c->kv[i].val_off;
}

static int json_put_string(struct buf *out, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    int rc = buf_reserve(out, n + 2);
    if (rc)
        return rc;
    buf_append_u8(out, '"');
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\') {
            char e[2] = { '\\', (char)ch };
            rc = buf_append(out, e, 2);
        } else if (ch < 0x20) {
            char e[6] = { '\\', 'u', '0', '0', hex[ch >> 4], hex[ch & 15] };
            rc = buf_append(out, e, 6);
        } else {
            rc = buf_append_u8(out, ch);
        }
        if (rc)
            return rc;
    }
    return buf_append_u8(out, '"');
}

static int encode_json_header(const rmt_cmd *c, struct buf *out)
{
    int rc = buf_printf(out, "{\"code\":%d,\"extFields\":{", c->code);
    for (uint32_t i = 0; i < c->kv_n && !rc; i++) {
        const struct rmt_kv *kv = &c->kv[i];
        if (i)
            rc = buf_append_u8(out, ',');
        if (!rc)
            rc = json_put_string(out, (const char *)c->arena + kv->key_off, kv->key_len);
        if (!rc)
            rc = buf_append_u8(out, ':');
        if (!rc)
            rc = json_put_string(out, (const char *)c->arena + kv->val_off, kv->val_len);
    }
    if (!rc)
        rc = buf_printf(out, "},\"flag\":%d,\"language\":\"%s\",\"opaque\":%d,", c->flag,
                        c->language < LANG_COUNT ? lang_names[c->language] : "OTHER", c->opaque);
    const char *remark = rmt_cmd_remark(c);
    if (!rc && remark) {
        rc = buf_printf(out, "\"remark\":");
        if (!rc)
            rc = json_put_string(out, remark, strlen(remark));
        if (!rc)
            rc = buf_append_u8(out, ',');
    }
    if (!rc)
        rc = buf_printf(out, "\"serializeTypeCurrentRPC\":\"JSON\",\"version\":%d}", c->version);
    return rc;
}

static int encode_binary_header(const rmt_cmd *c, struct buf *out)
{
    const char *remark = rmt_cmd_remark(c);
    size_t remark_len = remark ? strlen(remark) : 0;
    size_t ext_len = 0;
    for (uint32_t i = 0; i < c->kv_n; i++)
        ext_len += 2 + c->kv[i].key_len + 4 + c->kv[i].val_len;
    int rc = buf_reserve(out, 2 + 1 + 2 + 4 + 4 + 4 + remark_len + 4 + ext_len);
    if (rc)
        return rc;
    buf_append_u16be(out, (uint16_t)c->code);
    buf_append_u8(out, c->language);
    buf_append_u16be(out, (uint16_t)c->version);
    buf_append_u32be(out, (uint32_t)c->opaque);
    buf_append_u32be(out, (uint32_t)c->flag);
    buf_append_u32be(out, (uint32_t)remark_len);
    buf_append(out, remark, remark_len);
    buf_append_u32be(out, (uint32_t)ext_len);
    for (uint32_t i = 0; i < c->kv_n; i++) {
        const struct rmt_kv *kv = &c->kv[i];
        buf_append_u16be(out, (uint16_t)kv->key_len);
        buf_append(out, c->arena + kv->key_off, kv->key_len);
        buf_append_u32be(out, kv->val_len);
        buf_append(out, c->arena + kv->val_off, kv->val_len);
    }
    return 0;
}

int rmt_encode_header(const rmt_cmd *c, struct buf *out)
{
    size_t start = out->len;
    int rc = buf_reserve(out, 8);
    if (rc)
        return rc;
    out->len += 8;
    rc = c->serialize == RMT_SERIALIZE_JSON ? encode_json_header(c, out)
                                            : encode_binary_header(c, out);
    if (rc) {
        out->len = start;
        return rc;
    }
    size_t hdr_len = out->len - start - 8;
    if (hdr_len > 0xFFFFFF || (uint64_t)4 + hdr_len + c->body_len > INT32_MAX) {
        out->len = start;
        return -EMSGSIZE;
    }
    wr_u32be(out->data + start, (uint32_t)(4 + hdr_len + c->body_len));
    wr_u32be(out->data + start + 4, ((uint32_t)c->serialize << 24) | (uint32_t)hdr_len);
    return 0;
}

int rmt_encode(const rmt_cmd *c, struct buf *out)
{
    size_t start = out->len;
    int rc = rmt_encode_header(c, out);
    if (!rc)
        rc = buf_append(out, c->body, c->body_len);
    if (rc)
        out->len = start;
    return rc;
}

enum rmt_frame_status rmt_frame_check(const uint8_t *p, size_t n, size_t max_frame, size_t *frame_len)
{
    if (n < 4)
        return RMT_FRAME_NEED_MORE;
    uint32_t len = rd_u32be(p);
    if (len > INT32_MAX || (size_t)len + 4 > max_frame)
        return RMT_FRAME_TOO_BIG;
    if (len < 4)
        return RMT_FRAME_BAD;
    if (n >= 8) {
        uint32_t mark = rd_u32be(p + 4);
        uint8_t type = (uint8_t)(mark >> 24);
        uint32_t hdr = mark & 0xFFFFFF;
        if (type > RMT_SERIALIZE_ROCKETMQ || hdr > len - 4 || hdr == 0)
            return RMT_FRAME_BAD;
    }
    if (n < (size_t)len + 4)
        return RMT_FRAME_NEED_MORE;
    *frame_len = (size_t)len + 4;
    return RMT_FRAME_OK;
}

static int fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -EBADMSG;
}

static int decode_binary_header(rmt_cmd *c, const uint8_t *p, size_t n, char *err, size_t errlen)
{
    if (n < 18)
        return fail(err, errlen, "binary header too short (%zu bytes)", n);
    c->code = (int16_t)rd_u16be(p);
    c->language = p[2];
    c->version = (int16_t)rd_u16be(p + 3);
    c->opaque = (int32_t)rd_u32be(p + 5);
    c->flag = (int32_t)rd_u32be(p + 9);
    uint32_t remark_len = rd_u32be(p + 13);
    size_t pos = 17;
    if (remark_len > n - pos || n - pos - remark_len < 4)
        return fail(err, errlen, "remark length %u exceeds header", remark_len);
    if (remark_len) {
        int64_t off = arena_put(c, p + pos, remark_len);
        if (off < 0)
            return fail(err, errlen, "out of memory");
        c->remark_off = (int32_t)off;
    }
    pos += remark_len;
    uint32_t ext_len = rd_u32be(p + pos);
    pos += 4;
    if (ext_len != n - pos)
        return fail(err, errlen, "extFields length %u does not match header (%zu left)", ext_len,
                    n - pos);
    while (pos < n) {
        if (n - pos < 2)
            return fail(err, errlen, "truncated extFields key length");
        uint16_t kl = rd_u16be(p + pos);
        pos += 2;
        if (n - pos < (size_t)kl + 4)
            return fail(err, errlen, "truncated extFields key");
        const uint8_t *k = p + pos;
        pos += kl;
        uint32_t vl = rd_u32be(p + pos);
        pos += 4;
        if (n - pos < vl)
            return fail(err, errlen, "truncated extFields value");
        if (ext_put(c, (const char *)k, kl, (const char *)p + pos, vl, false))
            return fail(err, errlen, "out of memory");
        pos += vl;
    }
    return 0;
}

static int json_int_field(json_t *root, const char *name, int32_t *out, bool required, char *err,
                          size_t errlen)
{
    json_t *v = json_object_get(root, name);
    if (!v) {
        if (required)
            return fail(err, errlen, "JSON header lacks \"%s\"", name);
        return 0;
    }
    if (!json_is_integer(v))
        return fail(err, errlen, "JSON header field \"%s\" is not an integer", name);
    json_int_t x = json_integer_value(v);
    if (x < INT32_MIN || x > INT32_MAX)
        return fail(err, errlen, "JSON header field \"%s\" out of range", name);
    *out = (int32_t)x;
    return 0;
}

static int decode_json_header(rmt_cmd *c, const uint8_t *p, size_t n, char *err, size_t errlen)
{
    json_error_t jerr;
    json_t *root = json_loadb((const char *)p, n, 0, &jerr);
    if (!root)
        return fail(err, errlen, "bad JSON header: %s", jerr.text);
    int rc = -EBADMSG;
    if (!json_is_object(root)) {
        fail(err, errlen, "JSON header is not an object");
        goto out;
    }
    if (json_int_field(root, "code", &c->code, true, err, errlen) ||
        json_int_field(root, "opaque", &c->opaque, false, err, errlen) ||
        json_int_field(root, "flag", &c->flag, false, err, errlen) ||
        json_int_field(root, "version", &c->version, false, err, errlen))
        goto out;
    json_t *lang = json_object_get(root, "language");
    c->language = RMT_LANG_OTHER;
    if (json_is_string(lang)) {
        for (size_t i = 0; i < LANG_COUNT; i++)
            if (strcmp(json_string_value(lang), lang_names[i]) == 0)
                c->language = (uint8_t)i;
    } else if (json_is_integer(lang)) {
        c->language = (uint8_t)json_integer_value(lang);
    }
    json_t *remark = json_object_get(root, "remark");
    if (json_is_string(remark)) {
        int64_t off = arena_put(c, json_string_value(remark), json_string_length(remark));
        if (off < 0) {
            fail(err, errlen, "out of memory");
            goto out;
        }
        c->remark_off = (int32_t)off;
    }
    json_t *ext = json_object_get(root, "extFields");
    if (ext && !json_is_null(ext)) {
        if (!json_is_object(ext)) {
            fail(err, errlen, "JSON header extFields is not an object");
            goto out;
        }
        const char *k;
        json_t *v;
        json_object_foreach(ext, k, v) {
            char num[64];
            const char *sv;
            size_t sl;
            if (json_is_string(v)) {
                sv = json_string_value(v);
                sl = json_string_length(v);
            } else if (json_is_integer(v)) {
                sl = (size_t)snprintf(num, sizeof num, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
                sv = num;
            } else if (json_is_boolean(v)) {
                sv = json_is_true(v) ? "true" : "false";
                sl = strlen(sv);
            } else if (json_is_null(v)) {
                continue;
            } else {
                fail(err, errlen, "extFields value of \"%s\" is not a scalar", k);
                goto out;
            }
            if (ext_put(c, k, strlen(k), sv, sl, false)) {
                fail(err, errlen, "out of memory");
                goto out;
            }
        }
    }
    rc = 0;
out:
    json_decref(root);
    return rc;
}

int rmt_decode(rmt_cmd *c, const uint8_t *frame, size_t frame_len, char *err, size_t errlen)
{
    rmt_cmd_reset(c, 0);
    if (frame_len < 8)
        return fail(err, errlen, "frame shorter than 8 bytes");
    uint32_t len = rd_u32be(frame);
    if ((size_t)len + 4 != frame_len)
        return fail(err, errlen, "length field %u does not match frame size %zu", len, frame_len);
    uint32_t mark = rd_u32be(frame + 4);
    uint8_t type = (uint8_t)(mark >> 24);
    uint32_t hdr_len = mark & 0xFFFFFF;
    if (hdr_len == 0 || hdr_len > len - 4)
        return fail(err, errlen, "header length %u out of range for frame length %u", hdr_len, len);
    const uint8_t *hdr = frame + 8;
    int rc;
    if (type == RMT_SERIALIZE_JSON)
        rc = decode_json_header(c, hdr, hdr_len, err, errlen);
    else if (type == RMT_SERIALIZE_ROCKETMQ)
        rc = decode_binary_header(c, hdr, hdr_len, err, errlen);
    else
        return fail(err, errlen, "unknown serialize type %u", type);
    if (rc)
        return rc;
    c->serialize = type;
    c->body = frame + 8 + hdr_len;
    c->body_len = len - 4 - hdr_len;
    if (c->body_len == 0)
        c->body = NULL;
    return 0;
}

int rmt_parse_addr(const char *addr, char *host, size_t hostlen, int *port)
{
    const char *colon = strrchr(addr, ':');
    if (!colon || colon == addr)
        return -EINVAL;
    size_t hl = (size_t)(colon - addr);
    if (addr[0] == '[' && hl >= 2 && addr[hl - 1] == ']') {
        addr++;
        hl -= 2;
    }
    if (hl == 0 || hl >= hostlen)
        return -EINVAL;
    char *end;
    errno = 0;
    long p = strtol(colon + 1, &end, 10);
    if (errno || end == colon + 1 || *end || p <= 0 || p > 65535)
        return -EINVAL;
    memcpy(host, addr, hl);
    host[hl] = 0;
    *port = (int)p;
    return 0;
}
