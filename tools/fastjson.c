/*
 * fastjson dialect to strict JSON (see fastjson.h). A single pass with an
 * explicit container stack: in an object, at key position, anything that is
 * not a string is copied out as a quoted, escaped string. String contents
 * are copied verbatim, so nothing inside them is ever rewritten.
 */
#include "fastjson.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"

#define FJ_MAX_DEPTH 256

/* Length of the JSON string literal starting at s[0] == '"', or 0. */
static size_t str_len(const char *s, size_t n)
{
    for (size_t i = 1; i < n; i++) {
        if (s[i] == '\\')
            i++;
        else if (s[i] == '"')
            return i + 1;
    }
    return 0;
}

/* Length of a bare key: a balanced {...}/[...] or a number/word. */
static size_t key_len(const char *s, size_t n)
{
    if (s[0] == '{' || s[0] == '[') {
        int depth = 0;
        for (size_t i = 0; i < n; i++) {
            char ch = s[i];
            if (ch == '"') {
                size_t l = str_len(s + i, n - i);
                if (!l)
                    return 0;
                i += l - 1;
            } else if (ch == '{' || ch == '[') {
                depth++;
            } else if (ch == '}' || ch == ']') {
                if (--depth == 0)
                    return i + 1;
            }
        }
        return 0;
    }
    size_t i = 0;
    while (i < n && s[i] != ':' && s[i] != ' ' && s[i] != '\t' && s[i] != '\n' && s[i] != '\r')
        i++;
    return i;
}

static int append_quoted(struct buf *b, const char *s, size_t n)
{
    int rc = buf_append_u8(b, '"');
    for (size_t i = 0; i < n && !rc; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\')
            rc = buf_append_u8(b, '\\') || buf_append_u8(b, ch) ? -ENOMEM : 0;
        else if (ch < 0x20)
            rc = buf_printf(b, "\\u%04x", ch);
        else
            rc = buf_append_u8(b, ch);
    }
    return rc ? rc : buf_append_u8(b, '"');
}

static int convert(const char *s, size_t n, struct buf *out, char *err, size_t errlen)
{
    char stack[FJ_MAX_DEPTH];
    int depth = 0;
    bool want_key = false;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r') {
            if (buf_append_u8(out, (uint8_t)ch))
                return -ENOMEM;
            continue;
        }
        if (want_key && ch != '}') {
            want_key = false;
            if (ch == '"') {
                size_t l = str_len(s + i, n - i);
                if (!l) {
                    snprintf(err, errlen, "unterminated string at byte %zu", i);
                    return -EBADMSG;
                }
                if (buf_append(out, s + i, l))
                    return -ENOMEM;
                i += l - 1;
                continue;
            }
            size_t l = key_len(s + i, n - i);
            if (!l) {
                snprintf(err, errlen, "malformed key at byte %zu", i);
                return -EBADMSG;
            }
            if (append_quoted(out, s + i, l))
                return -ENOMEM;
            i += l - 1;
            continue;
        }
        switch (ch) {
        case '"': {
            size_t l = str_len(s + i, n - i);
            if (!l) {
                snprintf(err, errlen, "unterminated string at byte %zu", i);
                return -EBADMSG;
            }
            if (buf_append(out, s + i, l))
                return -ENOMEM;
            i += l - 1;
            continue;
        }
        case '{':
        case '[':
            if (depth == FJ_MAX_DEPTH) {
                snprintf(err, errlen, "nesting deeper than %d", FJ_MAX_DEPTH);
                return -EBADMSG;
            }
            stack[depth++] = ch;
            want_key = ch == '{';
            break;
        case '}':
        case ']':
            if (depth > 0)
                depth--;
            want_key = false;
            break;
        case ',':
            want_key = depth > 0 && stack[depth - 1] == '{';
            break;
        default:
            break;
        }
        if (buf_append_u8(out, (uint8_t)ch))
            return -ENOMEM;
    }
    return 0;
}

json_t *fj_parse(const char *text, size_t len, char *err, size_t errlen)
{
    struct buf b = BUF_INIT;
    int rc = convert(text, len, &b, err, errlen);
    if (rc == -ENOMEM)
        snprintf(err, errlen, "out of memory");
    if (rc) {
        buf_free(&b);
        return NULL;
    }
    json_error_t je;
    json_t *j = json_loadb((const char *)b.data, b.len, 0, &je);
    buf_free(&b);
    if (!j)
        snprintf(err, errlen, "line %d column %d: %s", je.line, je.column, je.text);
    return j;
}

json_t *fj_key_object(const char *key)
{
    return json_loads(key, 0, NULL);
}

long long fj_int(const json_t *o, const char *key, long long def)
{
    json_t *v = json_object_get(o, key);
    if (json_is_integer(v))
        return json_integer_value(v);
    if (json_is_real(v))
        return (long long)json_real_value(v);
    if (json_is_string(v)) {
        char *end;
        long long x = strtoll(json_string_value(v), &end, 10);
        if (end != json_string_value(v) && *end == 0)
            return x;
    }
    return def;
}

const char *fj_str(const json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}
