/*
 * HA: master/slave commitlog replication, RocketMQ's classic HAService
 * protocol over a plain TCP connection (not remoting frames), so our slave
 * can follow a RocketMQ master and a RocketMQ slave can follow us.
 *
 * Wire format (big-endian):
 *   slave -> master: 8-byte offset. The first one is where the slave wants
 *     the stream to start; every later one acknowledges that the slave holds
 *     the log up to there (sent after every transfer and every
 *     heartbeat_interval_ms).
 *   master -> slave: 12-byte header (8-byte physical offset, 4-byte body
 *     size) + body: raw commitlog bytes at that offset, cut anywhere (not
 *     at record boundaries). Size 0 is a heartbeat carrying the next offset
 *     the master will send; ours sends one as soon as a slave has caught up
 *     and then every heartbeat_interval_ms while idle.
 *
 * The master streams straight from the mapped segments (writev of a header
 * and a store_read_raw view, batches of up to transfer_batch bytes); there
 * is no per-message work. The slave appends what arrives with
 * store_append_raw, which takes only whole records whose CRCs check, keeps
 * the partial rest, and lets the store's dispatcher build the consume queues
 * and the index.
 *
 * Divergence (an addition to the classic protocol that stays within its
 * frames):
 *  - A slave with data does not ask from its end O but from a record start R
 *    some check_window bytes before it (within O's segment) and compares the
 *    master's bytes in [R, O) with its own before appending anything after
 *    O. Equal bytes mean the logs agree up to O (records embed their own
 *    offset, store time and body CRC, so a different history cannot produce
 *    the same bytes); the slave then acknowledges O and continues as usual.
 *  - At the first differing byte D the slave truncates its log to the start
 *    of its record holding D (store_truncate) and reconnects. If D is in the
 *    very first record of the window, R itself may not be a boundary in the
 *    master's log: the slave reconnects from a record start further back (the
 *    distance grows 8x each time, down to the log minimum) and compares again.
 *  - If the master's log ends inside [R, O), the master says so with a
 *    heartbeat at its end M (our master sends one as soon as it is idle; a
 *    RocketMQ master after heartbeat_interval_ms); everything up to M having
 *    matched, the slave truncates to M and continues on the same connection.
 *  - A slave asking for more than the master has (R > M) gets a heartbeat at
 *    M < R and the connection is closed; the slave retries from a record
 *    start at or below M and the rules above apply. A classic slave treats
 *    such a frame as an offset mismatch and reconnects, as it would anyway.
 *  Every truncation is logged. If no common record is found down to the
 *  slave's log minimum, the slave truncates its whole log and follows the
 *  master from there, or (master's log ends before ours starts) stops and
 *  logs that the slave must be rebuilt.
 *  A RocketMQ master answers a request beyond its end with heartbeats at the
 *  requested offset instead, so our slave cannot learn that it is ahead of
 *  one: it stays connected and verifying (ha_slave_status) until the
 *  master's log grows past the compared range.
 *
 * Records are checked (structure, offset, body CRC) before the store sees
 * them: a connection that brings a corrupt record, a frame at an offset
 * other than the expected one, or closes in the middle of a record, is
 * dropped with a log line after the valid records before it were appended;
 * the partial rest is discarded and asked for again. On the master, a
 * report that is negative, goes backwards or acknowledges bytes never sent
 * closes that connection only.
 *
 * Empty slaves: ours asks for offset 0 and the master sends everything it
 * still has from its log minimum (RocketMQ masters start at the last
 * segment instead). An empty store can only start at offset 0, so a slave
 * whose master's log no longer starts at 0 cannot be seeded this way: it
 * logs the fact and stops (status "stopped"); seeding it needs a store
 * that can start a raw append at the master's minimum.
 * Both sides must use the same commitlog segment size.
 *
 * SYNC_MASTER: ha_wait_slave() registers a send waiting for a slave's
 * acknowledgement; completions run on the loop (never inside the call).
 * A slave's first report only says what it holds (possibly a divergent
 * tail), so it counts for waits once the slave acknowledged bytes beyond it.
 * Timeouts are checked by a 100 ms housekeeping tick.
 *
 * Threads: everything runs on the given libev loop and must be called from
 * its thread, except ha_notify_new_data(), which any thread may call. Store
 * calls are short (memcpy/mmap); only a truncation (a slave repairing a
 * divergent tail, rare) blocks the loop: it waits for the store's
 * dispatcher to be idle (at most 5 s) and scans the segment it cuts.
 * Callbacks must not call ha_free.
 *
 * Ownership: ha_*_start allocates, ha_free frees (the store and the loop
 * stay the caller's; free the ha before closing the store).
 */
#ifndef RMQ_BROKER_HA_H
#define RMQ_BROKER_HA_H

#include <ev.h>
#include <stdbool.h>
#include <stdint.h>

#include "store.h"

struct ha;

/* RocketMQ key names in comments. Start from ha_config_defaults(). */
struct ha_config {
    const char *listen_host;       /* master: bind address, NULL = 0.0.0.0 */
    int listen_port;               /* haListenPort (listenPort + 1, 10912); 0 = ephemeral */
    int heartbeat_interval_ms;     /* haSendHeartbeatInterval (5000) */
    int housekeeping_interval_ms;  /* haHousekeepingInterval (20000): idle peer dropped */
    uint32_t transfer_batch;       /* haTransferBatchSize: RocketMQ 32 KiB, ours 256 KiB */
    int64_t max_gap_not_in_sync;   /* haMaxGapNotInSync (256 MiB) */
    int sync_timeout_ms;           /* syncSlaveTimeout (5000, RocketMQ 4.x waits syncFlushTimeout) */
    int reconnect_ms;              /* slave: pause before reconnecting (1000) */
    int connect_timeout_ms;        /* slave (3000) */
    uint32_t check_window;         /* slave: bytes compared before the resume point (4096) */
    uint32_t recv_buffer;          /* slave: must hold the largest record (8 MiB) */
};

void ha_config_defaults(struct ha_config *c);

/* Starts the master side: listens and serves slaves. cfg is copied (strings
 * too). Returns NULL with *err = -errno (logged) on failure. */
struct ha *ha_master_start(struct ev_loop *loop, struct store *s, const struct ha_config *cfg, int *err);
/* Bound port (useful with listen_port 0). */
int ha_master_port(const struct ha *ha);

/* Starts the slave side following master_addr ("ip:port" of the master's HA
 * port; NULL or "" = wait for ha_slave_set_master). */
struct ha *ha_slave_start(struct ev_loop *loop, struct store *s, const char *master_addr,
                          const struct ha_config *cfg, int *err);
/* Changes the master (e.g. from REGISTER_BROKER's haServerAddr). A different
 * address drops the current connection; the same one is a no-op (except
 * that a stopped slave tries again); NULL or "" disconnects. Returns 0 or
 * -EINVAL (not "ip:port": numeric IPv4, or [IPv6]). */
int ha_slave_set_master(struct ha *ha, const char *addr);

/* Stops, closes every connection, completes pending waits with
 * SLAVE_NOT_AVAILABLE and frees. NULL is a no-op. */
void ha_free(struct ha *ha);

/* The master's log grew: start transfers now instead of at the next 100 ms
 * poll. Thread-safe and cheap (coalesced ev_async). */
void ha_notify_new_data(struct ha *ha);

/* SYNC_MASTER: called with STORE_PUT_OK once a slave acknowledged the log up
 * to the offset, STORE_PUT_FLUSH_SLAVE_TIMEOUT after sync_timeout_ms, or
 * STORE_PUT_SLAVE_NOT_AVAILABLE if the last slave disconnects first. Runs
 * on the loop. */
typedef void (*ha_wait_fn)(enum store_put_status st, void *ud);

#define HA_WAIT_DONE 1
#define HA_WAIT_PENDING 0
/* Registers a wait for end_offset (store_put_result.end_offset). Returns
 * HA_WAIT_DONE (already acknowledged; cb not called), HA_WAIT_PENDING (cb
 * called later, exactly once), -ENOTCONN (answer SLAVE_NOT_AVAILABLE: no
 * slave connected, or the best one is more than max_gap_not_in_sync behind;
 * cb not called), -EINVAL (not a master), -ENOMEM. Waits are expected in
 * increasing end_offset order (the loop's puts); a wait registered out of
 * order completes no later than the ones before it. */
int ha_wait_slave(struct ha *ha, int64_t end_offset, ha_wait_fn cb, void *ud);
/* RocketMQ's isSlaveOK: a slave is connected and within the gap. */
bool ha_slave_ok(struct ha *ha, int64_t end_offset);

#define HA_STATUS_SLAVES 8

struct ha_slave_info {
    char addr[64];
    int64_t ack_offset;        /* log acknowledged by the slave */
    int64_t next_offset;       /* next byte the master will send */
    int64_t lag_bytes;         /* master max - ack */
    int64_t lag_ms;            /* 0 if caught up, else ms since it last was */
    uint64_t bytes_sent;
};

struct ha_master_status {
    int64_t max_offset;        /* master commitlog max */
    int64_t max_ack;           /* best slave acknowledgement (0 if none) */
    int slave_count;           /* connected slaves (may exceed the entries filled) */
    int filled;
    uint64_t pending_waits;
    struct ha_slave_info slaves[HA_STATUS_SLAVES];
};
/* Returns -EINVAL if ha is not a master. */
int ha_master_status(struct ha *ha, struct ha_master_status *st);

struct ha_slave_status {
    char master_addr[128];
    bool connected;
    bool verifying;            /* comparing its tail with the master's */
    bool stopped;              /* gave up: the slave must be rebuilt (logged) */
    int64_t max_offset;        /* own commitlog max */
    int64_t reported_offset;   /* last acknowledgement sent */
    int64_t last_read_ago_ms;  /* -1 if never */
    uint64_t bytes_received;
    uint64_t truncations;
    uint64_t connects;
};
/* Returns -EINVAL if ha is not a slave. */
int ha_slave_status(struct ha *ha, struct ha_slave_status *st);

#endif
