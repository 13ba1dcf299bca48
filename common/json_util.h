/*
 * JSON helpers for RocketMQ's fastjson dialect.
 *
 * RocketMQ serialises maps with integer keys (e.g. BrokerData.brokerAddrs,
 * HashMap<Long, String>) with the keys unquoted: {"brokerAddrs":{0:"a:10911"}}.
 * That is not JSON and jansson refuses it, so text from a RocketMQ peer goes
 * through json_quote_numeric_keys (or json_parse_rocketmq, which does both
 * steps) before parsing. When we emit such bodies ourselves we build them with
 * the buf helpers below, so the output matches fastjson byte for byte.
 *
 * Ownership: output buffers belong to the caller; json_parse_rocketmq returns a
 * new reference the caller releases with json_decref.
 */
#ifndef RMQ_JSON_UTIL_H
#define RMQ_JSON_UTIL_H

#include <stddef.h>

#include <jansson.h>

#include "buf.h"

/* Appends `in` to `out` with every bare numeric object key ({0:..., -1:...})
 * quoted ({"0":..., "-1":...}). Only keys are touched; string contents,
 * numbers in value position and array elements are copied unchanged.
 * Returns 0, -ENOMEM, or -EINVAL if nesting exceeds JSON_UTIL_MAX_DEPTH. */
#define JSON_UTIL_MAX_DEPTH 512
int json_quote_numeric_keys(const char *in, size_t len, struct buf *out);

/* Parses RocketMQ JSON (bare numeric keys allowed). Returns a new reference,
 * or NULL with "line N column M: reason" (from jansson) in err. */
json_t *json_parse_rocketmq(const char *text, size_t len, char *err, size_t errlen);

/* Appends s as a JSON string literal (quoted, escaped like fastjson: '"', '\\'
 * and control characters; other bytes verbatim). Returns 0 or -ENOMEM. */
int json_buf_str(struct buf *b, const char *s);

/* Appends "key": with the key quoted and escaped. Returns 0 or -ENOMEM. */
int json_buf_key(struct buf *b, const char *key);

#endif
