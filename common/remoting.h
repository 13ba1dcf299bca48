/*
 * RocketMQ remoting protocol: commands, frame codec, and the libev-driven
 * connections every daemon and the client library use.
 *
 * Wire format (big-endian):
 *   [int32 length = 4 + header length + body length]
 *   [int32 (serialize type << 24) | header length]
 *   [header: JSON or the compact ROCKETMQ binary form]
 *   [body]
 * A response is answered in the serialization of its request.
 *
 * Commands (struct rmt_cmd) keep their remark and extFields in an arena that
 * starts inline and spills to the heap only for large headers, and keep the
 * arena's capacity when reset, so a connection decoding request after request
 * does not allocate. A decoded command's body points into the connection's
 * read buffer and is valid only during the request/response callback; copy it
 * to keep it.
 *
 * Threading: a server, its connections and a client belong to one libev loop
 * and are used from that loop's thread only.
 */
#ifndef RMQ_REMOTING_H
#define RMQ_REMOTING_H

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "buf.h"
#include "rmt_codes.h"

#define RMT_SERIALIZE_JSON 0
#define RMT_SERIALIZE_ROCKETMQ 1

#define RMT_FLAG_RESPONSE 0x1
#define RMT_FLAG_ONEWAY 0x2

/* RocketMQ's LanguageCode byte values. */
enum rmt_language {
    RMT_LANG_JAVA = 0, RMT_LANG_CPP = 1, RMT_LANG_DOTNET = 2, RMT_LANG_PYTHON = 3,
    RMT_LANG_DELPHI = 4, RMT_LANG_ERLANG = 5, RMT_LANG_RUBY = 6, RMT_LANG_OTHER = 7,
    RMT_LANG_HTTP = 8, RMT_LANG_GO = 9, RMT_LANG_PHP = 10, RMT_LANG_OMS = 11, RMT_LANG_RUST = 12,
};

/* Version we announce: RocketMQ V4_9_4 ordinal. */
#define RMT_VERSION 413

#define RMT_DEFAULT_MAX_FRAME (16u * 1024 * 1024)
#define RMT_DEFAULT_MAX_OUTBUF (64u * 1024 * 1024)

struct rmt_kv {
    uint32_t key_off, key_len;
    uint32_t val_off, val_len;
};

#define RMT_INLINE_ARENA 512
#define RMT_INLINE_KV 16

typedef struct rmt_cmd {
    int32_t code;
    uint8_t language;
    int32_t version;
    int32_t opaque;
    int32_t flag;
    uint8_t serialize;      /* RMT_SERIALIZE_* */
    int32_t remark_off;     /* -1 when there is no remark */
    const uint8_t *body;    /* not owned; see rmt_cmd_set_body */
    uint32_t body_len;
    /* private below */
    uint8_t *owned_body;    /* set by rmt_cmd_dup */
    uint8_t *arena;
    uint32_t arena_len, arena_cap;
    struct rmt_kv *kv;
    uint32_t kv_n, kv_cap;
    uint8_t inline_arena[RMT_INLINE_ARENA];
    struct rmt_kv inline_kv[RMT_INLINE_KV];
} rmt_cmd;

/* Initialises a command (request when code >= 0; a response sets flag later).
 * serialize defaults to RMT_SERIALIZE_ROCKETMQ. */
void rmt_cmd_init(rmt_cmd *c, int32_t code);
/* Clears remark, ext fields and body, keeping allocated capacity. */
void rmt_cmd_reset(rmt_cmd *c, int32_t code);
/* Frees heap storage (the struct itself is the caller's). */
void rmt_cmd_destroy(rmt_cmd *c);
/* Heap-allocated deep copy (body included, owned by the copy; freed by
 * rmt_cmd_free). Returns NULL on ENOMEM. */
rmt_cmd *rmt_cmd_dup(const rmt_cmd *c);
void rmt_cmd_free(rmt_cmd *c);

static inline bool rmt_cmd_is_response(const rmt_cmd *c) { return (c->flag & RMT_FLAG_RESPONSE) != 0; }
static inline bool rmt_cmd_is_oneway(const rmt_cmd *c) { return (c->flag & RMT_FLAG_ONEWAY) != 0; }

/* Remark: NULL when unset. Pointer valid until the command is next modified. */
const char *rmt_cmd_remark(const rmt_cmd *c);
int rmt_cmd_set_remark(rmt_cmd *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* extFields. Values are copied. Setting an existing key replaces its value.
 * Returned pointers are valid until the command is next modified. */
int rmt_cmd_set_ext(rmt_cmd *c, const char *key, const char *val);
int rmt_cmd_set_ext_n(rmt_cmd *c, const char *key, const char *val, size_t val_len);
int rmt_cmd_set_ext_int(rmt_cmd *c, const char *key, int64_t val);
const char *rmt_cmd_ext(const rmt_cmd *c, const char *key);
/* Parses an integer ext field. Returns 0, -ENOENT (absent) or -EINVAL (not a number). */
int rmt_cmd_ext_int(const rmt_cmd *c, const char *key, int64_t *out);
/* Same, with a default for an absent field. */
int rmt_cmd_ext_int_or(const rmt_cmd *c, const char *key, int64_t def, int64_t *out);
/* Parses "true"/"false"; absent gives def. */
bool rmt_cmd_ext_bool(const rmt_cmd *c, const char *key, bool def);
uint32_t rmt_cmd_ext_count(const rmt_cmd *c);
/* i-th field, in insertion/decode order. */
void rmt_cmd_ext_at(const rmt_cmd *c, uint32_t i, const char **key, const char **val);

/* Body: the command only borrows the bytes; the caller keeps them alive until
 * the command is encoded/sent (sending copies unless rmt_conn_send_iov is used). */
static inline void rmt_cmd_set_body(rmt_cmd *c, const void *p, uint32_t n)
{
    c->body = (const uint8_t *)p;
    c->body_len = n;
}

/* Appends the frame prefix and header (not the body) to out. The length field
 * already counts body_len, so the body must follow. Returns 0 or -errno. */
int rmt_encode_header(const rmt_cmd *c, struct buf *out);
/* Appends the whole frame, body included. */
int rmt_encode(const rmt_cmd *c, struct buf *out);

enum rmt_frame_status {
    RMT_FRAME_OK = 0,
    RMT_FRAME_NEED_MORE = 1,
    RMT_FRAME_TOO_BIG = -1,   /* length field over max_frame */
    RMT_FRAME_BAD = -2,       /* length/header length inconsistent, unknown serialize type */
};

/* Looks at bytes at the start of a stream. On RMT_FRAME_OK *frame_len is the
 * full frame size including the 4-byte length field. */
enum rmt_frame_status rmt_frame_check(const uint8_t *p, size_t n, size_t max_frame, size_t *frame_len);

/* Decodes a complete frame (as delimited by rmt_frame_check) into c, which
 * must be initialised. The body points into `frame`. Returns 0 or -EBADMSG
 * with a reason in err (err may be NULL). */
int rmt_decode(rmt_cmd *c, const uint8_t *frame, size_t frame_len, char *err, size_t errlen);

/* Connections ---------------------------------------------------------- */

typedef struct rmt_conn rmt_conn;
typedef struct rmt_server rmt_server;
typedef struct rmt_client rmt_client;

/* A request arrived. The command (and its body) is valid only during the call. */
typedef void (*rmt_request_fn)(rmt_conn *conn, rmt_cmd *req, void *ud);
/* The connection is closing; it is freed after the callback unless referenced. */
typedef void (*rmt_close_fn)(rmt_conn *conn, void *ud);
/* An invocation finished. status 0: resp is the answer (valid only during the
 * call); otherwise -ETIMEDOUT, -ECONNRESET, -ECONNREFUSED, ... and resp NULL. */
typedef void (*rmt_response_fn)(int status, rmt_cmd *resp, void *ud);
/* Releases an external body chunk once it has been written or dropped. */
typedef void (*rmt_release_fn)(void *ctx);

/* Peer address "ip:port". */
const char *rmt_conn_peer(const rmt_conn *c);
/* Local address "ip:port" (what the peer connected to). */
const char *rmt_conn_local(const rmt_conn *c);
bool rmt_conn_is_open(const rmt_conn *c);
/* Keeps the struct alive after close (for answers that complete later). */
void rmt_conn_ref(rmt_conn *c);
void rmt_conn_unref(rmt_conn *c);
void rmt_conn_set_data(rmt_conn *c, void *data);
void *rmt_conn_data(const rmt_conn *c);
/* Bytes queued for output. */
size_t rmt_conn_outbuf(const rmt_conn *c);

/* Sends a command as is (copies header and body into the output queue).
 * Returns 0, -EPIPE if the connection is closed, -ENOBUFS if the output
 * queue is over its limit (the connection is then closed: a peer that does
 * not read its answers is cut off), -ENOMEM. */
int rmt_conn_send(rmt_conn *c, const rmt_cmd *cmd);
/* Sends a command whose body is the concatenation of iov (zero-copy: the
 * memory is referenced until written; release(ctx) is called exactly once,
 * also when the connection dies). cmd->body is ignored. */
int rmt_conn_send_iov(rmt_conn *c, const rmt_cmd *cmd, const struct iovec *iov, int iovcnt,
                      rmt_release_fn release, void *ctx);
/* Answers req: copies its opaque and serialization, sets the response flag.
 * Does nothing for oneway requests. */
int rmt_conn_respond(rmt_conn *c, const rmt_cmd *req, rmt_cmd *resp);
/* Convenience: answers with a code and a printf-style remark. */
int rmt_conn_respond_error(rmt_conn *c, const rmt_cmd *req, int32_t code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Closes the connection (output not yet written is dropped). */
void rmt_conn_close(rmt_conn *c, const char *reason);

struct rmt_server_opts {
    const char *host;        /* bind address; NULL/"" = 0.0.0.0 */
    int port;                /* 0 = ephemeral */
    size_t max_frame;        /* 0 = RMT_DEFAULT_MAX_FRAME */
    size_t max_outbuf;       /* 0 = RMT_DEFAULT_MAX_OUTBUF; reading pauses above half */
    rmt_request_fn on_request;
    rmt_close_fn on_close;   /* may be NULL */
    void *ud;
};

/* Listens and starts accepting. Returns NULL with *err = -errno on failure. */
rmt_server *rmt_server_new(struct ev_loop *loop, const struct rmt_server_opts *opts, int *err);
int rmt_server_port(const rmt_server *s);
size_t rmt_server_conn_count(const rmt_server *s);
/* Stops accepting new connections; existing ones keep going. */
void rmt_server_stop_accepting(rmt_server *s);
/* Closes every connection and frees the server. */
void rmt_server_free(rmt_server *s);

struct rmt_client_opts {
    size_t max_frame;
    size_t max_outbuf;
    int connect_timeout_ms;      /* 0 = 3000 */
    int reconnect_min_ms;        /* backoff after a failed connect; 0 = 100 */
    int reconnect_max_ms;        /* 0 = 5000 */
    rmt_request_fn on_request;   /* server-initiated requests; NULL answers REQUEST_CODE_NOT_SUPPORTED */
    rmt_close_fn on_close;       /* a channel closed; may be NULL */
    void *ud;
};

/* A client keeps one channel per "host:port", opened on demand. */
rmt_client *rmt_client_new(struct ev_loop *loop, const struct rmt_client_opts *opts);
/* Fails every pending invocation with -ECANCELED and frees the client. */
void rmt_client_free(rmt_client *cl);
/* Sends req to addr; cb is called exactly once (from the loop, never from
 * inside this call). req->opaque is assigned by the client. Returns 0 or
 * -errno (then cb is not called). */
int rmt_client_invoke(rmt_client *cl, const char *addr, rmt_cmd *req, int timeout_ms,
                      rmt_response_fn cb, void *ud);
/* Fire and forget: sets the oneway flag. */
int rmt_client_invoke_oneway(rmt_client *cl, const char *addr, rmt_cmd *req);
/* Blocks, running the loop, until the answer arrives or timeout. On success
 * *resp is a heap copy owned by the caller (rmt_cmd_free). Must not be called
 * from inside a callback of the same loop. Returns 0 or -errno. */
int rmt_client_invoke_sync(rmt_client *cl, const char *addr, rmt_cmd *req, int timeout_ms,
                           rmt_cmd **resp);
/* Closes the channel to addr if open (pending invocations fail with -ECONNRESET). */
void rmt_client_close_channel(rmt_client *cl, const char *addr);

/* Writes the first non-loopback IPv4 address of an interface that is up
 * (what RocketMQ advertises by default), or "127.0.0.1" if there is none. */
void rmt_local_ipv4(char *out, size_t cap);

/* Splits "host:port" into its parts. Returns 0 or -EINVAL. */
int rmt_parse_addr(const char *addr, char *host, size_t hostlen, int *port);

#endif
