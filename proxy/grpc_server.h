/*
 * gRPC server transport for the proxy: HTTP/2 over cleartext TCP with prior
 * knowledge (h2c, what gRPC clients use on an insecure channel), built on
 * nghttp2's server session and driven by libev watchers on the caller's loop.
 *
 * The layer deals in bytes only: it unframes the 5-byte gRPC message prefix
 * and hands whole request messages to handlers registered by method path
 * ("/apache.rocketmq.v2.MessagingService/SendMessage"); handlers answer with
 * serialized messages and a final grpc-status. Protobuf (un)packing is the
 * caller's business (px_grpc_call_send_pb is a zero-extra-copy convenience).
 *
 * Everything runs on one loop and is not thread-safe; for several cores run
 * one server per loop/thread with `reuseport` set so they share the port.
 *
 * Calls: the server allocates a px_grpc_call per HTTP/2 stream and owns it.
 * A handler may answer inside its callback or later (after a broker round
 * trip, a long poll): to keep the call past the callback, take a reference
 * with px_grpc_call_ref and drop it with px_grpc_call_unref once done. The
 * call stays valid while referenced, even after the client went away; sending
 * on such a call fails with -ECANCELED. All references must be dropped on the
 * loop thread; px_grpc_server_free defers the final release of server memory
 * until the last call reference is gone.
 */
#ifndef RMQ_PX_GRPC_SERVER_H
#define RMQ_PX_GRPC_SERVER_H

#include <stddef.h>
#include <stdint.h>

struct ev_loop;
struct ProtobufCMessage;
struct px_grpc_server;
struct px_grpc_call;

/* gRPC status codes (grpc-status trailer). */
enum px_grpc_status {
    PX_GRPC_OK = 0,
    PX_GRPC_CANCELLED = 1,
    PX_GRPC_UNKNOWN = 2,
    PX_GRPC_INVALID_ARGUMENT = 3,
    PX_GRPC_DEADLINE_EXCEEDED = 4,
    PX_GRPC_NOT_FOUND = 5,
    PX_GRPC_ALREADY_EXISTS = 6,
    PX_GRPC_PERMISSION_DENIED = 7,
    PX_GRPC_RESOURCE_EXHAUSTED = 8,
    PX_GRPC_FAILED_PRECONDITION = 9,
    PX_GRPC_ABORTED = 10,
    PX_GRPC_OUT_OF_RANGE = 11,
    PX_GRPC_UNIMPLEMENTED = 12,
    PX_GRPC_INTERNAL = 13,
    PX_GRPC_UNAVAILABLE = 14,
    PX_GRPC_DATA_LOSS = 15,
    PX_GRPC_UNAUTHENTICATED = 16,
};

enum px_grpc_kind {
    PX_GRPC_UNARY,            /* one request, one response */
    PX_GRPC_SERVER_STREAMING, /* one request, any number of responses */
    PX_GRPC_BIDI_STREAMING,   /* messages both ways (also covers client streaming) */
};

/* Why a call ended before its handler finished it. */
enum px_grpc_end_reason {
    PX_GRPC_END_RESET,     /* client reset the stream (RST_STREAM) */
    PX_GRPC_END_CONN_LOST, /* connection closed or failed */
    PX_GRPC_END_DEADLINE,  /* grpc-timeout expired; DEADLINE_EXCEEDED was sent */
    PX_GRPC_END_PROTOCOL,  /* client broke the call (oversized/compressed/extra
                              message); an error status was sent */
    PX_GRPC_END_SHUTDOWN,  /* server shut down before the handler finished */
};

/*
 * Callbacks of one method. `msg` points into a server buffer and is valid
 * only during on_message: unpack or copy it there. All callbacks run on the
 * server's loop.
 */
struct px_grpc_handler {
    enum px_grpc_kind kind;
    /* Optional: request headers accepted, before any message. */
    void (*on_start)(struct px_grpc_call *call, void *arg);
    /* Required: one request message. Unary and server-streaming methods get
     * exactly one; a second one fails the call with INTERNAL. */
    void (*on_message)(struct px_grpc_call *call, const uint8_t *msg, size_t len, void *arg);
    /* Optional, bidi only: the client has finished sending. */
    void (*on_half_close)(struct px_grpc_call *call, void *arg);
    /* Optional: the call ended before the handler called px_grpc_call_finish
     * (see enum px_grpc_end_reason). Called at most once, only for calls the
     * handler has seen; afterwards send/finish return -ECANCELED. A handler
     * holding a reference should drop it here or when its pending work ends. */
    void (*on_cancel)(struct px_grpc_call *call, enum px_grpc_end_reason why, void *arg);
    void *arg;
};

struct px_grpc_config {
    size_t max_recv_msg;             /* largest request message accepted */
    size_t max_conn_rx_buffered;     /* partially received bytes per connection */
    uint32_t max_concurrent_streams; /* SETTINGS_MAX_CONCURRENT_STREAMS */
    uint32_t stream_window;          /* SETTINGS_INITIAL_WINDOW_SIZE */
    uint32_t conn_window;            /* connection-level receive window */
    uint32_t max_header_bytes;       /* request metadata per call */
    uint32_t max_connections;        /* further connections are closed at accept */
    double idle_timeout;             /* seconds without streams before GOAWAY; 0 = never */
    double handshake_timeout;        /* seconds to receive the client preface */
    double write_stall_timeout;      /* seconds the peer may leave our output
                                        unread before we drop it; 0 = never */
    int reuseport;                   /* set SO_REUSEPORT on the listening socket */
};

#define PX_GRPC_DEFAULT_MAX_RECV_MSG ((size_t)4 * 1024 * 1024 + 64 * 1024)

struct px_grpc_stats {
    uint64_t conns_accepted;
    uint64_t conns_failed;  /* closed because of bad input or I/O errors */
    uint64_t calls_started;
    uint32_t conns_open;
    uint32_t calls_live;    /* call objects not yet released */
};

void px_grpc_config_default(struct px_grpc_config *cfg);

/* Creates a server on `loop` (copied config; NULL = defaults). NULL on ENOMEM. */
struct px_grpc_server *px_grpc_server_new(struct ev_loop *loop, const struct px_grpc_config *cfg);
/* Registers `h` (copied) for `path` (copied). 0, -EEXIST, -EINVAL or -ENOMEM. */
int px_grpc_server_register(struct px_grpc_server *srv, const char *path,
                            const struct px_grpc_handler *h);
/* Listens on host:port (port 0 = ephemeral, host NULL = any). 0 or -errno. */
int px_grpc_server_listen(struct px_grpc_server *srv, const char *host, uint16_t port);
/* The bound port, 0 before listen. */
uint16_t px_grpc_server_port(const struct px_grpc_server *srv);
/* Serves an already connected socket; the server owns `fd` in all cases.
 * 0 or -errno. */
int px_grpc_server_adopt(struct px_grpc_server *srv, int fd);
/*
 * Graceful shutdown: stops accepting, sends GOAWAY, lets in-flight calls
 * finish for up to `grace` seconds, then closes what is left (handlers see
 * PX_GRPC_END_SHUTDOWN). `done` (optional) runs from its own loop event once
 * every connection is closed; it may free the server.
 */
void px_grpc_server_shutdown(struct px_grpc_server *srv, double grace,
                             void (*done)(void *arg), void *arg);
/* Closes all connections at once and frees the server (see header comment
 * about outstanding call references). Not to be called from inside a
 * handler callback. */
void px_grpc_server_free(struct px_grpc_server *srv);
void px_grpc_server_stats(const struct px_grpc_server *srv, struct px_grpc_stats *out);

void px_grpc_call_ref(struct px_grpc_call *call);
void px_grpc_call_unref(struct px_grpc_call *call);
/* One pointer of handler state per call; the server never touches it. */
void px_grpc_call_set_data(struct px_grpc_call *call, void *data);
void *px_grpc_call_data(const struct px_grpc_call *call);
/* The request path, e.g. "/apache.rocketmq.v2.MessagingService/Telemetry". */
const char *px_grpc_call_method(const struct px_grpc_call *call);
/* Value of request header `name` (lowercase), NULL if absent. Valid for the
 * life of the call. */
const char *px_grpc_call_header(const struct px_grpc_call *call, const char *name);
/* "ip:port" of the client. */
const char *px_grpc_call_peer(const struct px_grpc_call *call);
/* Identifies the connection the call arrived on (unique per server). */
uint64_t px_grpc_call_conn_id(const struct px_grpc_call *call);
/* Absolute deadline on the loop clock (ev_now), 0 if the client set none. */
double px_grpc_call_deadline(const struct px_grpc_call *call);
/* Bytes queued on this call that the client has not yet taken (flow control);
 * streaming handlers use it to pace themselves. */
size_t px_grpc_call_queued(const struct px_grpc_call *call);
/* 1 while the call can still send. */
int px_grpc_call_active(const struct px_grpc_call *call);

/*
 * Queues one response message (copied). Response headers go out with the
 * first message. 0, -ECANCELED (call gone), -EINVAL (already finished),
 * -EMSGSIZE or -ENOMEM.
 */
int px_grpc_call_send(struct px_grpc_call *call, const void *msg, size_t len);
/* Same, packing a protobuf-c message straight into the output queue. */
int px_grpc_call_send_pb(struct px_grpc_call *call, const struct ProtobufCMessage *msg);
/*
 * Ends the call with grpc-status `status` and an optional message (copied,
 * percent-encoded on the wire). Queued messages are delivered first. Without
 * any message sent this becomes a trailers-only response. 0, -ECANCELED,
 * -EALREADY or -ENOMEM.
 */
int px_grpc_call_finish(struct px_grpc_call *call, enum px_grpc_status status, const char *message);

#endif
