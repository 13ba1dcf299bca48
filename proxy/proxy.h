/*
 * The proxy daemon's shared context: settings (RocketMQ proxy key names),
 * the gRPC server facing RocketMQ 5 clients, the route client (nameservers)
 * and the remoting client used for every broker request, plus the helpers
 * all RPC handlers share.
 *
 * Shape: one libev loop runs everything. A gRPC request is unpacked into a
 * per-loop arena (no malloc per message; the arena is reset after each
 * handler returns), turned into one or more remoting requests to brokers,
 * and answered from the remoting callbacks. Work that outlives the handler
 * lives in a px_op taken from a free list, so steady-state traffic does not
 * allocate either.
 *
 * Receipt handles given to push consumers (auto_renew) are the one piece of
 * per-message state: renew.c keeps them invisible while the client works.
 *
 * Brokers reach the proxy too: CHECK_TRANSACTION_STATE arrives on the broker
 * connections of px->brk (the proxy heartbeats as the producer groups of its
 * clients) and is forwarded to a client's Telemetry stream (telemetry.c).
 *
 * Ownership: main.c owns struct px and every subsystem hanging off it.
 */
#ifndef RMQ_PX_PROXY_H
#define RMQ_PX_PROXY_H

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <protobuf-c/protobuf-c.h>

#include "apache/rocketmq/v2/service.pb-c.h"
#include "buf.h"
#include "client.h"
#include "config.h"
#include "grpc_server.h"
#include "message.h"
#include "remoting.h"

#define PX_SVC "/apache.rocketmq.v2.MessagingService/"

struct px_settings {
    int64_t grpc_port;
    char bind_address[64];
    char advertised[128];          /* host:port clients are told; "" = what they connected to */
    char namesrv[1024];
    int64_t remoting_port;         /* accepted, not served yet */
    int64_t max_message_size;
    int64_t max_user_props;
    int64_t timer_max_delay_sec;
    int64_t request_timeout_ms;    /* per remoting request to a broker */
    int64_t max_long_polling_ms;
    int64_t min_invisible_ms;
    int64_t max_invisible_ms;
    int64_t default_invisible_ms;  /* receives with auto_renew (push consumers) */
    int64_t renew_ahead_ms;        /* renew this long before a handle expires */
    int64_t renew_slice_ms;        /* each renewal hides the message this long */
    int64_t renew_max_ms;          /* renew for at most this long after the receive */
    int64_t clear_invisible_ms;    /* invisible time left to messages of a gone client */
    int64_t renew_max_entries;     /* most handles renewed at once (0 = no auto-renewal) */
    int64_t max_delivery_attempts; /* told to consumers: retryMaxTimes + 1 */
    int64_t heartbeat_ms;
    int64_t max_connections;
    int64_t grpc_max_streams;
    char admin_allow[1024];
    int log_level;
    char log_file[512];
};

/* Config table (main.c). */
extern const struct cfg_key px_cfg_keys[];

struct px_clients;
struct px_op;
struct px_renew;

struct px_stats {
    uint64_t sends, send_failures, receives, received_msgs, acks, tx_checks, renewals;
    /* Broker requests of AckMessage: ACK_MESSAGE, BATCH_ACK_MESSAGE, and
     * the entries the batches carried. */
    uint64_t ack_requests, batch_acks, batch_acked;
};

struct px {
    struct ev_loop *loop;
    struct px_settings cfg;
    struct px_grpc_server *srv;
    cli_client *cli;               /* routes from the nameservers */
    rmt_client *brk;               /* every broker request; answers broker callbacks */
    struct px_clients *clients;    /* telemetry sessions (telemetry.c) */
    struct px_renew *renew;        /* auto-renewed receipt handles (renew.c) */
    struct msg_uniq_gen uniq;
    char ip[64];                   /* our address, used as born host */
    uint16_t port;
    ev_timer heartbeat;
    struct px_op *free_ops;
    uint32_t rr;                   /* round robin for sends */
    struct px_stats stats;
    bool stopping;
};

/* Protobuf-c allocator backed by the loop's arena; px_arena_reset frees
 * everything unpacked since the last reset. */
extern ProtobufCAllocator px_arena_allocator;
void px_arena_reset(void);
void px_arena_release(void);

/* Code enum shortcuts. */
typedef Apache__Rocketmq__V2__Code px_code;
#define PXC(name) APACHE__ROCKETMQ__V2__CODE__##name

/*
 * An asynchronous piece of work (one remoting request, or a fan-out of
 * several) bound to a gRPC call. Taken from px->free_ops; fields keep their
 * capacity when recycled.
 */
struct px_op {
    struct px *px;
    struct px_op *next_free;
    struct px_grpc_call *call;     /* referenced while the op lives */
    struct px_op *parent;          /* fan-out: the op that collects results */
    int index;                     /* fan-out: position of this child */
    int pending;                   /* fan-out: children still running */
    int attempts;
    rmt_cmd cmd;
    struct buf body;               /* request body copy (retries) */
    struct buf props;              /* properties string / scratch */
    struct buf aux;                /* results scratch */
    char topic[CLI_NAME_MAX];
    char group[CLI_NAME_MAX];
    char broker[CLI_NAME_MAX];
    char addr[CLI_ADDR_MAX];
    char str[CLI_NAME_MAX * 2];    /* message id, receipt handle prefix, ... */
    int queue_id;
    int kind;
    int64_t i1, i2, i3;
    double started;
    px_code code;
    char msg[256];
};

struct px_op *px_op_get(struct px *px, struct px_grpc_call *call);
void px_op_put(struct px_op *op);
void px_ops_free(struct px *px);

/* Wall-clock milliseconds. */
int64_t px_now_ms(void);

/* Sends a gRPC response whose only field set is `status` (field 1 of every
 * unary response) and finishes the call with grpc-status OK. */
int px_reply_status(struct px_grpc_call *call, const ProtobufCMessageDescriptor *resp_desc,
                    px_code code, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* Packs `msg` and finishes the call with grpc-status OK. */
int px_reply(struct px_grpc_call *call, const ProtobufCMessage *msg);

/* Remoting → Code mapping (codes.c). `op` says what was asked, since the
 * same remoting code means different things for different requests. */
enum px_rop { PX_ROP_SEND, PX_ROP_POP, PX_ROP_ACK, PX_ROP_CHANGE_INVISIBLE, PX_ROP_PULL,
              PX_ROP_OFFSET, PX_ROP_OTHER };
px_code px_code_from_remoting(enum px_rop op, int rmt_code);
/* Transport failure (-errno from rmt_client_invoke's callback). */
px_code px_code_from_errno(int err);
const char *px_code_name(px_code c);

/* Broker master address of `broker` in topic's cached route; NULL when the
 * route is not cached or has no such broker. */
const char *px_broker_addr(struct px *px, const char *topic, const char *broker);
/* Runs cb once the route of topic is known (cached or fetched). */
int px_with_route(struct px *px, const char *topic, cli_route_fn cb, void *ud);
/* Code for a failed route lookup status. */
px_code px_code_from_route(int status);

/* Copies src into dst (cap bytes, NUL included), truncating; the cheap
 * form of snprintf("%s") for the per-message paths. */
static inline void px_copy(char *dst, size_t cap, const char *src)
{
    size_t n = strnlen(src, cap - 1);
    memcpy(dst, src, n);
    dst[n] = 0;
}

/* Validates names like RocketMQ's TopicValidator / group rules. */
bool px_valid_name(const char *s, size_t max);
/* Checks a consumer request's group and topic; on a bad one answers the call
 * with ILLEGAL_CONSUMER_GROUP / ILLEGAL_TOPIC (response type d) and returns false. */
bool px_check_group_topic(struct px_grpc_call *call, const ProtobufCMessageDescriptor *d,
                          const Apache__Rocketmq__V2__Resource *group,
                          const Apache__Rocketmq__V2__Resource *topic);

/* Prepares a broker request with the proxy's serialization and language. */
void px_cmd_reset(struct px *px, rmt_cmd *cmd, int32_t code);

/* Registers an RPC "Name" of the MessagingService; fn runs with the request
 * bytes, and the unpack arena is reset when it returns. on_cancel may be
 * NULL. Returns 0 or -errno. */
typedef void (*px_rpc_fn)(struct px *px, struct px_grpc_call *call, const uint8_t *msg, size_t len);
typedef void (*px_cancel_fn)(struct px *px, struct px_grpc_call *call, enum px_grpc_end_reason why);
int px_rpc_register(struct px *px, const char *name, enum px_grpc_kind kind, px_rpc_fn fn,
                    px_cancel_fn on_cancel);
/* Unpacks into the arena; NULL when the bytes are not a valid message. */
ProtobufCMessage *px_unpack(const ProtobufCMessageDescriptor *d, const uint8_t *msg, size_t len);

/* Subsystems. */
int px_service_register(struct px *px);
void px_route_register(struct px *px);
void px_send_register(struct px *px);
void px_receive_register(struct px *px);
void px_offset_register(struct px *px);
int px_telemetry_init(struct px *px);
void px_telemetry_register(struct px *px);
void px_telemetry_free(struct px *px);
/* The client finished sending on its Telemetry stream. */
void px_telemetry_half_close(struct px *px, struct px_grpc_call *call);
/* Broker-initiated requests (CHECK_TRANSACTION_STATE, ...). */
void px_on_broker_request(rmt_conn *conn, rmt_cmd *req, void *ud);
/* Whether a client (x-mq-client-id) has a Telemetry session here. */
bool px_telemetry_has_client(struct px *px, const char *client_id);
/* Whether a client (x-mq-client-id) has announced FIFO consumption for a group. */
bool px_telemetry_group_fifo(struct px *px, const char *group);
/* Producer group the proxy uses on behalf of clients publishing to topic
 * (the PGROUP of their transactional messages). */
void px_tx_group(const char *topic, char *out, size_t cap);

/* Converts a stored record popped/pulled from a broker into a gRPC message
 * (pointers into the record and into `scratch`, which must outlive the
 * packing). Returns 0 or -ENOMEM. */
struct px_msg_out {
    Apache__Rocketmq__V2__Message msg;
    Apache__Rocketmq__V2__SystemProperties sp;
    Apache__Rocketmq__V2__Resource topic;
    Apache__Rocketmq__V2__Digest digest;
    Google__Protobuf__Timestamp born, store, deliver;
    Google__Protobuf__Duration invisible;
    Apache__Rocketmq__V2__Message__UserPropertiesEntry *entries;
    Apache__Rocketmq__V2__Message__UserPropertiesEntry **entry_ptrs;
    char **keys;
    size_t cap_entries, cap_keys;
    char md5[33];
};
struct cli_msg_view;
int px_msg_to_pb(struct px_msg_out *out, const struct cli_msg_view *v, const struct msg_record *rec,
                 const char *topic, struct buf *scratch);
void px_msg_out_free(struct px_msg_out *out);

/* True for property names the messaging system owns (TAGS, KEYS, UNIQ_KEY,
 * __SHARDINGKEY, ...): clients may not set them as user properties, and
 * they are not shown to clients as user properties. */
bool px_prop_reserved(const char *name, size_t len);

/* MD5 of data as 32 uppercase hex chars + NUL. */
void px_md5_hex(const void *data, size_t len, char out[33]);

#endif
