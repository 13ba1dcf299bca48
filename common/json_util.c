/*
 * fastjson-compatible JSON helpers; see json_util.h. The key rewriter is a
 * single pass with a small container stack: it needs to know only whether it
 * is inside a string and whether the next token sits in key position of an
 * object, so it never builds a tree.
 */
#include "json_util.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

static bool is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

static bool is_num_char(char c)
{
    return (c >= '0' && c <= '9') || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E';
}

int json_quote_numeric_keys(const char *in, size_t len, struct buf *out)
{
    char stack[JSON_UTIL_MAX_DEPTH];
    size_t depth = 0;
    bool in_string = false, expect_key = false;
    int rc = buf_reserve(out, len + 16);
    if (rc)
        return rc;

    size_t i = 0;
    while (i < len) {
        char c = in[i];
        if (in_string) {
            size_t start = i;
            while (i < len && in[i] != '"' && in[i] != '\\')
                i++;
            if (i < len && in[i] == '\\')
                i = (i + 2 <= len) ? i + 2 : len;
            else if (i < len) {
                i++;
                in_string = false;
            }
            if ((rc = buf_append(out, in + start, i - start)))
                return rc;
            continue;
        }
        if (expect_key && ((c >= '0' && c <= '9') || c == '-')) {
            size_t end = i;
            while (end < len && is_num_char(in[end]))
                end++;
            size_t j = end;
            while (j < len && is_ws(in[j]))
                j++;
            if (j < len && in[j] == ':') {
                if ((rc = buf_append_u8(out, '"')) || (rc = buf_append(out, in + i, end - i)) ||
                    (rc = buf_append_u8(out, '"')))
                    return rc;
                expect_key = false;
                i = end;
                continue;
            }
        }
        switch (c) {
        case '{':
        case '[':
            if (depth == JSON_UTIL_MAX_DEPTH)
                return -EINVAL;
            stack[depth++] = c;
            expect_key = (c == '{');
            break;
        case '}':
        case ']':
            if (depth)
                depth--;
            expect_key = false;
            break;
        case ',':
            expect_key = depth && stack[depth - 1] == '{';
            break;
        case '"':
            in_string = true;
            expect_key = false;
            break;
        default:
            if (!is_ws(c))
                expect_key = false;
            break;
        }
        if ((rc = buf_append_u8(out, (uint8_t)c)))
            return rc;
        i++;
    }
    return 0;
}

json_t *json_parse_rocketmq(const char *text, size_t len, char *err, size_t errlen)
{
    struct buf fixed = BUF_INIT;
    int rc = json_quote_numeric_keys(text, len, &fixed);
    if (rc) {
        snprintf(err, errlen, "%s", rc == -EINVAL ? "JSON nested too deeply" : "out of memory");
        buf_free(&fixed);
        return NULL;
    }
    json_error_t je;
    json_t *root = json_loadb((const char *)fixed.data, fixed.len, 0, &je);
    buf_free(&fixed);
    if (!root)
        snprintf(err, errlen, "line %d column %d: %s", je.line, je.column, je.text);
    return root;
}

int json_buf_str(struct buf *b, const char *s)
{
    int rc = buf_append_u8(b, '"');
    while (!rc && *s) {
        const char *run = s;
        while (*s && *s != '"' && *s != '\\' && (unsigned char)*s >= 0x20)
            s++;
        if ((rc = buf_append(b, run, (size_t)(s - run))) || !*s)
            break;
        unsigned char c = (unsigned char)*s++;
        switch (c) {
        case '"': rc = buf_append(b, "\\\"", 2); break;
        case '\\': rc = buf_append(b, "\\\\", 2); break;
        case '\b': rc = buf_append(b, "\\b", 2); break;
        case '\f': rc = buf_append(b, "\\f", 2); break;
        case '\n': rc = buf_append(b, "\\n", 2); break;
        case '\r': rc = buf_append(b, "\\r", 2); break;
        case '\t': rc = buf_append(b, "\\t", 2); break;
        default: rc = buf_printf(b, "\\u%04x", c); break;
        }
    }
    return rc ? rc : buf_append_u8(b, '"');
}

int json_buf_key(struct buf *b, const char *key)
{
    int rc = json_buf_str(b, key);
    return rc ? rc : buf_append_u8(b, ':');
}
