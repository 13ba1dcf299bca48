/*
 * Reading RocketMQ bodies written by fastjson. Besides bare numeric keys
 * (handled by common/json_util.h) fastjson writes maps keyed by objects,
 * e.g. ConsumeStats.offsetTable: {{"brokerName":"b","queueId":0,"topic":"t"}:{...}}.
 * fj_parse turns every non-string key (number, object, array) into a JSON
 * string holding the key's text, so the result is plain JSON; fj_key_object
 * parses such a key back into an object.
 *
 * Ownership: both return new references (json_decref).
 */
#ifndef RMQ_TOOLS_FASTJSON_H
#define RMQ_TOOLS_FASTJSON_H

#include <stddef.h>

#include <jansson.h>

/* NULL with a reason in err on malformed input. */
json_t *fj_parse(const char *text, size_t len, char *err, size_t errlen);
/* The object encoded in a key produced by fj_parse, or NULL. */
json_t *fj_key_object(const char *key);

/* Convenience getters: a missing or mistyped field gives def / NULL. */
long long fj_int(const json_t *o, const char *key, long long def);
const char *fj_str(const json_t *o, const char *key);

#endif
