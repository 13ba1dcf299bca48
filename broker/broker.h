/*
 * The broker daemon's shared context: settings (RocketMQ key names), the
 * store and metadata it serves, and the subsystems that handle requests
 * (send, pull, client manager, queries, admin, nameserver registrar, delay
 * scheduler). Everything here belongs to the event-loop thread; the only
 * cross-thread entry points are the store callbacks in send.c (flush
 * completions) and pull.c (dispatch wake-ups), which hand work to the loop
 * through ev_async.
 *
 * This header also holds the small helpers every processor shares: reading
 * required header fields (answering an error that names the field), the
 * reusable response command, and topic / subscription-group lookup with
 * RocketMQ's auto-creation rules.
 *
 * Ownership: main.c owns the struct broker and every subsystem hanging off it.
 */
#ifndef RMQ_BROKER_BROKER_H
#define RMQ_BROKER_BROKER_H

#include <ev.h>
#include <stdbool.h>
#include <stdint.h>

#include "acl.h"
#include "buf.h"
#include "config.h"
#include "metadata.h"
#include "remoting.h"
#include "store.h"
#include "timer.h"

#define BRK_DEFAULT_TOPIC "TBW102"
#define BRK_SCHEDULE_TOPIC "SCHEDULE_TOPIC_XXXX"
#define BRK_SELF_TEST_TOPIC "SELF_TEST_TOPIC"
#define BRK_OFFSET_MOVED_TOPIC "OFFSET_MOVED_EVENT"
#define BRK_RETRY_PREFIX "%RETRY%"
#define BRK_DLQ_PREFIX "%DLQ%"
#define BRK_DELAY_LEVELS_MAX 64
#define BRK_VERSION_DESC "V4_9_4"

enum brk_role { BRK_ASYNC_MASTER = 0, BRK_SYNC_MASTER = 1, BRK_SLAVE = 2 };

struct broker_settings {
    char cluster[128];
    char name[128];
    int64_t broker_id;
    char namesrv[1024];
    char bind_address[64];
    int64_t listen_port;
    char ip1[64];
    char store_root[512];
    int flush_type;                 /* enum store_flush_type */
    int role;                       /* enum brk_role */
    int64_t default_queue_nums;
    bool auto_create_topic;
    bool auto_create_group;
    int64_t max_message_size;
    char delete_when[64];
    int64_t file_reserved_time;
    int64_t disk_max_ratio;
    int64_t perm;
    int64_t commitlog_file_size;
    int64_t flush_interval_commitlog;
    int64_t sync_flush_timeout;
    int64_t flush_offset_interval;
    int64_t register_period;
    int64_t register_timeout;
    bool long_polling;
    int64_t short_polling_ms;
    char admin_allow[1024];
    int64_t channel_expire_ms;
    int64_t max_transfer_count;
    int64_t max_transfer_bytes;
    char region[64];
    bool trace_on;
    char delay_levels[256];
    int64_t meta_map_mb;
    bool index_enable;
    int64_t max_hash_slots;
    int64_t max_index_num;
    int log_level;
    char log_file[512];
    int64_t max_frame;
    int64_t tx_timeout_ms;          /* transactionTimeOut */
    int64_t tx_check_interval_ms;   /* transactionCheckInterval */
    int64_t tx_check_max;           /* transactionCheckMax */
    int64_t lock_max_live_ms;       /* rebalanceLockMaxLiveTime */
    int64_t ha_listen_port;         /* haListenPort (-1: listenPort + 1) */
    int64_t ha_heartbeat_ms;        /* haSendHeartbeatInterval */
    int64_t ha_housekeeping_ms;     /* haHousekeepingInterval */
    int64_t ha_transfer_batch;      /* haTransferBatchSize */
    int64_t ha_max_gap;             /* haMaxGapNotInSync */
    int64_t sync_slave_timeout;     /* syncSlaveTimeout */
    char ha_master_addr[128];       /* haMasterAddress (slave; empty: from the nameserver) */
    int64_t slave_sync_ms;          /* slaveMetadataSyncInterval */
    bool slave_read_enable;         /* slaveReadEnable */
    int64_t access_mem_max_ratio;   /* accessMessageInMemoryMaxRatio */
    bool timer_enable;              /* timerWheelEnable */
    int64_t timer_max_delay_sec;    /* timerMaxDelaySec */
    int64_t timer_precision_ms;     /* timerPrecisionMs */
};

struct send_ctx;
struct pull_ctx;
struct cm;
struct reg;
struct sched;
struct adm;
struct pop_ctx;
struct tx;
struct lock_ctx;
struct ha;
struct tmr;
struct hs;
/* The daemon's configuration table (main.c). */
extern const struct cfg_key brk_cfg_keys[];

struct brk_stats {
    uint64_t put_msgs, put_bytes;
    uint64_t get_found, get_miss, get_msgs, get_bytes;
};

struct broker {
    struct ev_loop *loop;
    struct broker_settings cfg;
    struct store *store;
    struct meta *meta;
    acl *admin;
    rmt_server *server;
    int port;
    char addr[128];          /* brokerIP1:port, advertised and used in msgIds */
    struct send_ctx *send;
    struct pull_ctx *pull;
    struct cm *cm;
    struct reg *reg;
    struct sched *sched;
    struct adm *adm;
    struct pop_ctx *pop;      /* pop consumption (pop.c) */
    struct tx *tx;
    struct lock_ctx *lock;
    struct ha *ha;            /* replication (ha.h): master or slave side */
    int ha_port;              /* bound HA port (master) */
    struct tmr *timer;        /* timer messages (timer.h); NULL on a slave */
    struct tmr_config *tmr_cfg; /* the timer's settings for the send path; NULL on a slave */
    struct hs *hs;            /* slave metadata sync / offset flow-back (ha_sync.h) */
    char master_addr[128];    /* slave: the master's remoting address, if known */
    struct brk_stats stats;
    int64_t start_ms;
    uint64_t config_version;  /* bumped by UPDATE_BROKER_CONFIG */
    uint64_t topic_bumps;     /* extra topic data-version bumps (permission changes) */
    int64_t topic_bump_ts;
    bool stopping;            /* SIGTERM received: new sends/pulls are refused */
    rmt_cmd resp;             /* reusable response (loop thread only) */
    struct buf body;          /* reusable response body */
    uint32_t rr;              /* round robin for queueId < 0 */
};

/* Wall clock and monotonic milliseconds. */
int64_t brk_now_ms(void);
int64_t brk_mono_ms(void);

/* Resets and returns the shared response command. */
rmt_cmd *brk_resp(struct broker *b, int32_t code);
/* Answers req with b->resp (body b->body if with_body). */
int brk_reply(struct broker *b, rmt_conn *c, const rmt_cmd *req, bool with_body);
/* Answers with code and remark; always returns -1 so callers can `return brk_err(...)`. */
int brk_err(struct broker *b, rmt_conn *c, const rmt_cmd *req, int32_t code, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* Required header fields: answer INVALID_PARAMETER naming the field and
 * return -1 when absent or malformed. */
int brk_need_str(struct broker *b, rmt_conn *c, const rmt_cmd *req, const char *field,
                 const char **out);
int brk_need_int(struct broker *b, rmt_conn *c, const rmt_cmd *req, const char *field, int64_t *out);
/* Optional integer field: def when absent, -1 (answered) when malformed. */
int brk_opt_int(struct broker *b, rmt_conn *c, const rmt_cmd *req, const char *field, int64_t def,
                int64_t *out);

/* Admin gate: true if the peer is on adminAllowList, else answers
 * NO_PERMISSION and returns false. */
bool brk_admin_allowed(struct broker *b, rmt_conn *c, const rmt_cmd *req);

bool brk_writable(const struct broker *b);
bool brk_readable(const struct broker *b);

/* Topic lookup for a send: existing config, or RocketMQ's auto-creation from
 * default_topic (which must exist and carry the inherit bit; TBW102 only
 * when autoCreateTopicEnable). NULL if it does not exist and cannot be
 * created. */
const struct meta_topic *brk_topic_for_send(struct broker *b, const char *topic,
                                            const char *default_topic, int queue_nums);
/* Creates (if missing) a retry / DLQ topic with the given queues and perm. */
const struct meta_topic *brk_topic_system(struct broker *b, const char *topic, int queue_nums,
                                          int perm);
/* Subscription group config, auto-created when autoCreateSubscriptionGroup. */
const struct meta_group *brk_group(struct broker *b, const char *group);
/* Creates the built-in topics (TBW102, SELF_TEST_TOPIC, cluster / broker
 * name topics, OFFSET_MOVED_EVENT, SCHEDULE_TOPIC_XXXX, the timer wheel topic). Returns 0 or -errno. */
int brk_create_system_topics(struct broker *b);

/* Parses a peer "ip:port" / "[v6]:port" into a msg_host. Returns 0 or -EINVAL. */
int brk_parse_host(const char *addr, struct msg_host *h);

/* Number of configured delay levels and their delays in ms. */
int brk_delay_levels(const struct broker *b, int64_t *ms, int max);

#endif
