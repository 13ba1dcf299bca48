/*
 * What rmqbench needs from a transport, as a table of operations, so the
 * benchmark loop does not care how messages reach the cluster. The remoting
 * implementation (bench_remoting.c) talks to the brokers directly with the
 * client library; the gRPC one (bench_grpc.c) talks to a RocketMQ 5 proxy
 * over HTTP/2, as the official 5.x clients do.
 *
 * Every handle belongs to the libev loop it was created on; callbacks come
 * from that loop. Ownership: *_new allocates, *_free releases.
 */
#ifndef RMQ_TOOLS_BENCH_TRANSPORT_H
#define RMQ_TOOLS_BENCH_TRANSPORT_H

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct bt_msg {
    const char *topic;
    const void *body;
    uint32_t body_len;
    const char *tags;   /* NULL: none */
    const char *keys;   /* NULL: none */
    int64_t deliver_ms; /* timer message due at this wall-clock time (ms
                           since the epoch); 0: an ordinary message */
};

struct bt_result {
    int err;            /* 0 acknowledged; -errno otherwise */
    int code;           /* server response code, -1 when none */
    const char *errmsg;
};

typedef void (*bt_send_fn)(const struct bt_result *r, void *ud);

/* Caller-owned context of one async send; stays valid until cb has run. */
struct bt_slot {
    bt_send_fn cb;
    void *ud;
};

/* One received message, as much as the benchmark looks at. */
struct bt_recv {
    int64_t born_ts, store_ts;
    int64_t due_ms;     /* a timer message's due time (ms epoch); 0: none */
    uint32_t body_len;
};
/* Return 0 to acknowledge the batch. */
typedef int (*bt_recv_fn)(const struct bt_recv *msgs, int n, void *ud);

struct bt_producer_opts {
    const char *endpoints;
    const char *group;
    int timeout_ms;
    const char *topic;  /* topic the handle will send to (gRPC: routed and
                           announced at creation); NULL: none known yet */
    int connections;    /* gRPC connections per handle; 0: transport default */
};

struct bt_consumer_opts {
    const char *endpoints;
    const char *group, *topic;
    int batch;
    bool from_first;
    bt_recv_fn on_recv;
    void *ud;
    int connections;    /* gRPC connections; 0: transport default */
    int concurrency;    /* gRPC receive calls in flight; 0: transport default */
};

struct bt_ops {
    const char *name;
    void *(*producer_new)(struct ev_loop *loop, const struct bt_producer_opts *o, char *err,
                          size_t errlen);
    /* Async: 0 and slot->cb later, or -errno (cb not called). */
    int (*send)(void *p, const struct bt_msg *m, struct bt_slot *slot);
    /* Blocking: returns r->err. */
    int (*send_sync)(void *p, const struct bt_msg *m, struct bt_result *r);
    int (*send_oneway)(void *p, const struct bt_msg *m);
    /* Blocks until every message sent so far on this handle was read by the
     * servers (bounds what oneway sends queue up). */
    int (*barrier)(void *p, const char *topic);
    void (*producer_free)(void *p);

    void *(*consumer_new)(struct ev_loop *loop, const struct bt_consumer_opts *o, char *err,
                          size_t errlen);
    int (*consumer_start)(void *c);
    /* Commits and leaves the group; blocks up to a few seconds. */
    int (*consumer_stop)(void *c);
    void (*consumer_free)(void *c);
};

extern const struct bt_ops bt_remoting;
extern const struct bt_ops bt_grpc;

#endif
