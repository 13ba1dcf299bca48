/*
 * broker: puts the message store on the network with RocketMQ's remoting
 * protocol, so RocketMQ 4.x clients work against it directly.
 *
 * One libev loop does all network work and appends to the store (a memcpy
 * into the mapped log). The store's own threads flush, dispatch consume
 * queues and clean up; they reach the loop only through ev_async (SYNC_FLUSH
 * completions in send.c, long-polling wake-ups in pull.c). Consumer offsets
 * are batched to LMDB by the metadata writer thread every
 * flushConsumerOffsetInterval.
 *
 * Start: config -> listen -> metadata -> store recovery -> HA (master:
 * listen for slaves; slave: follow the master) and the timer wheel (masters
 * only: a slave's log is the master's copy and never gets its own appends)
 * -> system topics -> register with the nameservers -> READY=1. SIGTERM:
 * stop accepting, refuse new sends/pulls, answer held pulls and pending
 * flush / slave waits, stop HA, unregister, close connections, close the
 * timer and the store, persist offsets, exit 0.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "admin.h"
#include "broker.h"
#include "client_manager.h"
#include "config.h"
#include "daemon.h"
#include "ha.h"
#include "ha_sync.h"
#include "lock.h"
#include "log.h"
#include "pop.h"
#include "pull.h"
#include "query.h"
#include "registrar.h"
#include "schedule.h"
#include "send.h"
#include "timer.h"
#include "transaction.h"

static const char *const log_levels[] = { "debug", "info", "warn", "error", NULL };
static const char *const flush_types[] = { "ASYNC_FLUSH", "SYNC_FLUSH", NULL };
static const char *const roles[] = { "ASYNC_MASTER", "SYNC_MASTER", "SLAVE", NULL };

#define S(f) offsetof(struct broker_settings, f)
#define SZ(f) sizeof(((struct broker_settings *)0)->f)
const struct cfg_key brk_cfg_keys[] = {
    { .name = "brokerClusterName", .type = CFG_STRING, .offset = S(cluster), .size = SZ(cluster),
      .def = "DefaultCluster", .help = "Cluster this broker belongs to" },
    { .name = "brokerName", .type = CFG_STRING, .offset = S(name), .size = SZ(name), .def = "broker-a",
      .help = "Broker name (master and slaves of one broker share it)" },
    { .name = "brokerId", .type = CFG_INT, .offset = S(broker_id), .min = 0, .max = 1024, .def = "0",
      .help = "0 for the master, > 0 for slaves" },
    { .name = "namesrvAddr", .type = CFG_STRING, .offset = S(namesrv), .size = SZ(namesrv), .def = "",
      .help = "Nameservers (host:port, ';'-separated) to register with; empty: none" },
    { .name = "bindAddress", .type = CFG_STRING, .offset = S(bind_address), .size = SZ(bind_address),
      .def = "0.0.0.0", .help = "Address the broker listens on" },
    { .name = "listenPort", .type = CFG_INT, .offset = S(listen_port), .min = 0, .max = 65535,
      .def = "10911", .help = "TCP port for the remoting protocol (0 = any free port)" },
    { .name = "brokerIP1", .type = CFG_STRING, .offset = S(ip1), .size = SZ(ip1), .def = "",
      .help = "Address advertised to nameservers and clients and used in message ids; empty: the "
              "first non-loopback IPv4 address of the host (127.0.0.1 if there is none)" },
    { .name = "storePathRootDir", .type = CFG_STRING, .offset = S(store_root), .size = SZ(store_root),
      .def = "store", .help = "Data directory (commitlog, consume queues, index, metadata); start-time only" },
    { .name = "flushDiskType", .type = CFG_ENUM, .offset = S(flush_type), .enum_values = flush_types,
      .def = "ASYNC_FLUSH", .help = "ASYNC_FLUSH, or SYNC_FLUSH (a send is answered once on disk)" },
    { .name = "brokerRole", .type = CFG_ENUM, .offset = S(role), .enum_values = roles,
      .def = "ASYNC_MASTER",
      .help = "ASYNC_MASTER, SYNC_MASTER (a send is answered once a slave holds it) or SLAVE (follows "
              "the master of its brokerName, refuses sends, serves reads if slaveReadEnable); start-time only" },
    { .name = "defaultTopicQueueNums", .type = CFG_INT, .offset = S(default_queue_nums), .min = 1,
      .max = 1024, .def = "4", .help = "Queues of an auto-created topic" },
    { .name = "autoCreateTopicEnable", .type = CFG_BOOL, .offset = S(auto_create_topic), .def = "true",
      .help = "Create unknown topics on first send (through TBW102)" },
    { .name = "autoCreateSubscriptionGroup", .type = CFG_BOOL, .offset = S(auto_create_group),
      .def = "true", .help = "Create unknown consumer groups on first use" },
    { .name = "maxMessageSize", .type = CFG_INT, .offset = S(max_message_size), .min = 1,
      .max = 1073741824, .def = "4194304", .help = "Largest message body (bytes); bigger sends get MESSAGE_ILLEGAL" },
    { .name = "deleteWhen", .type = CFG_STRING, .offset = S(delete_when), .size = SZ(delete_when),
      .def = "04", .help = "Hour(s) of day (\"04\" or \"04;05\") when expired commitlog files are deleted" },
    { .name = "fileReservedTime", .type = CFG_INT, .offset = S(file_reserved_time), .min = 1,
      .max = 87600, .def = "72", .help = "Hours a commitlog file is kept" },
    { .name = "diskMaxUsedSpaceRatio", .type = CFG_INT, .offset = S(disk_max_ratio), .min = 10,
      .max = 95, .def = "75", .help = "Disk usage (%) above which old files are removed early" },
    { .name = "brokerPermission", .type = CFG_INT, .offset = S(perm), .min = 0, .max = 15, .def = "6",
      .help = "PermName bits: 4 read, 2 write (6 = read+write); runtime-changeable" },
    { .name = "mapedFileSizeCommitLog", .type = CFG_INT, .offset = S(commitlog_file_size),
      .min = 65536, .max = 4294967296LL, .def = "1073741824", .help = "Commitlog segment size (bytes)" },
    { .name = "flushIntervalCommitLog", .type = CFG_INT, .offset = S(flush_interval_commitlog),
      .min = 1, .max = 60000, .def = "500", .help = "ASYNC_FLUSH: ms between commitlog flushes" },
    { .name = "syncFlushTimeout", .type = CFG_INT, .offset = S(sync_flush_timeout), .min = 100,
      .max = 600000, .def = "5000", .help = "SYNC_FLUSH: ms before a send answers FLUSH_DISK_TIMEOUT" },
    { .name = "flushConsumerOffsetInterval", .type = CFG_INT, .offset = S(flush_offset_interval),
      .min = 10, .max = 3600000, .def = "5000", .help = "ms between consumer-offset batches to disk" },
    { .name = "registerNameServerPeriod", .type = CFG_INT, .offset = S(register_period), .min = 100,
      .max = 600000, .def = "30000", .help = "ms between registrations with the nameservers" },
    { .name = "registerBrokerTimeoutMills", .type = CFG_INT, .offset = S(register_timeout), .min = 100,
      .max = 600000, .def = "6000", .help = "Timeout (ms) of one registration" },
    { .name = "longPollingEnable", .type = CFG_BOOL, .offset = S(long_polling), .def = "true",
      .help = "Hold empty pulls up to the client's suspend timeout" },
    { .name = "shortPollingTimeMills", .type = CFG_INT, .offset = S(short_polling_ms), .min = 0,
      .max = 600000, .def = "1000", .help = "Hold time (ms) of empty pulls when long polling is off" },
    { .name = "adminAllowList", .type = CFG_STRING, .offset = S(admin_allow), .size = SZ(admin_allow),
      .def = "127.0.0.1;::1", .help = "Addresses/CIDRs (';'-separated) allowed to send admin requests" },
    { .name = "channelNotActiveInterval", .type = CFG_INT, .offset = S(channel_expire_ms), .min = 100,
      .max = 86400000, .def = "120000", .help = "Clients silent for this long (ms) are dropped" },
    { .name = "maxTransferCountOnMessageInMemory", .type = CFG_INT, .offset = S(max_transfer_count),
      .min = 1, .max = 4096, .def = "32", .help = "Most messages returned by one pull" },
    { .name = "maxTransferBytesOnMessageInMemory", .type = CFG_INT, .offset = S(max_transfer_bytes),
      .min = 1024, .max = 1073741824, .def = "262144", .help = "Most bytes returned by one pull" },
    { .name = "regionId", .type = CFG_STRING, .offset = S(region), .size = SZ(region),
      .def = "DefaultRegion", .help = "Region reported in send answers (MSG_REGION)" },
    { .name = "traceOn", .type = CFG_BOOL, .offset = S(trace_on), .def = "true",
      .help = "TRACE_ON flag reported in send answers" },
    { .name = "messageDelayLevel", .type = CFG_STRING, .offset = S(delay_levels), .size = SZ(delay_levels),
      .def = "1s 5s 10s 30s 1m 2m 3m 4m 5m 6m 7m 8m 9m 10m 20m 30m 1h 2h",
      .help = "Delays of the delay levels 1..n (s, m, h, d units)" },
    { .name = "messageIndexEnable", .type = CFG_BOOL, .offset = S(index_enable), .def = "true",
      .help = "Index message keys and unique ids (QUERY_MESSAGE); start-time only" },
    { .name = "maxHashSlotNum", .type = CFG_INT, .offset = S(max_hash_slots), .min = 1024,
      .max = 100000000, .def = "5000000", .help = "Hash slots per index file; start-time only" },
    { .name = "maxIndexNum", .type = CFG_INT, .offset = S(max_index_num), .min = 4096,
      .max = 400000000, .def = "20000000", .help = "Entries per index file; start-time only" },
    { .name = "metadataMapSizeMB", .type = CFG_INT, .offset = S(meta_map_mb), .min = 1, .max = 1048576,
      .def = "1024", .help = "LMDB map size of the metadata store (MiB)" },
    { .name = "logLevel", .type = CFG_ENUM, .offset = S(log_level), .enum_values = log_levels,
      .def = "info", .help = "debug, info, warn or error; runtime-changeable" },
    { .name = "logFile", .type = CFG_STRING, .offset = S(log_file), .size = SZ(log_file), .def = "",
      .help = "Also append the log to this file (stderr always gets it); start-time only" },
    { .name = "maxFrameSize", .type = CFG_INT, .offset = S(max_frame), .min = 4096, .max = 1073741824,
      .def = "16777216", .help = "Largest remoting frame accepted (bytes); bigger frames close the connection" },
    { .name = "transactionTimeOut", .type = CFG_INT, .offset = S(tx_timeout_ms), .min = 100,
      .max = 86400000, .def = "6000", .help = "ms a half (transaction) message waits for its decision before the producer is checked" },
    { .name = "transactionCheckInterval", .type = CFG_INT, .offset = S(tx_check_interval_ms), .min = 100,
      .max = 86400000, .def = "30000", .help = "ms between transaction check passes" },
    { .name = "transactionCheckMax", .type = CFG_INT, .offset = S(tx_check_max), .min = 1, .max = 10000,
      .def = "15", .help = "Checks of an undecided half message before it is discarded" },
    { .name = "rebalanceLockMaxLiveTime", .type = CFG_INT, .offset = S(lock_max_live_ms), .min = 100,
      .max = 86400000, .def = "60000", .help = "ms an orderly consumer's queue lock lasts without renewal" },
    { .name = "haListenPort", .type = CFG_INT, .offset = S(ha_listen_port), .min = -1, .max = 65535,
      .def = "-1",
      .help = "Master: TCP port slaves replicate from (-1 = listenPort + 1, or any free port if that one is "
              "taken; 0 = any free port); advertised to the nameserver as haServerAddr" },
    { .name = "haSendHeartbeatInterval", .type = CFG_INT, .offset = S(ha_heartbeat_ms), .min = 100,
      .max = 600000, .def = "5000", .help = "ms between HA heartbeats / slave acknowledgements when idle" },
    { .name = "haHousekeepingInterval", .type = CFG_INT, .offset = S(ha_housekeeping_ms), .min = 1000,
      .max = 3600000, .def = "20000", .help = "ms of silence after which an HA connection is dropped" },
    { .name = "haTransferBatchSize", .type = CFG_INT, .offset = S(ha_transfer_batch), .min = 4096,
      .max = 67108864, .def = "262144", .help = "Most commitlog bytes per HA transfer" },
    { .name = "haMaxGapNotInSync", .type = CFG_INT, .offset = S(ha_max_gap), .min = 1,
      .max = 1099511627776LL, .def = "268435456",
      .help = "SYNC_MASTER: a slave further behind than this (bytes) does not count (SLAVE_NOT_AVAILABLE)" },
    { .name = "syncSlaveTimeout", .type = CFG_INT, .offset = S(sync_slave_timeout), .min = 100,
      .max = 600000, .def = "5000", .help = "SYNC_MASTER: ms before a send answers FLUSH_SLAVE_TIMEOUT" },
    { .name = "haMasterAddress", .type = CFG_STRING, .offset = S(ha_master_addr), .size = SZ(ha_master_addr),
      .def = "", .help = "Slave: the master's HA address ip:port; empty = the haServerAddr the nameserver reports" },
    { .name = "slaveMetadataSyncInterval", .type = CFG_INT, .offset = S(slave_sync_ms), .min = 100,
      .max = 3600000, .def = "10000",
      .help = "Slave: ms between copies of the master's topics, groups and offsets (and offset flow-back)" },
    { .name = "slaveReadEnable", .type = CFG_BOOL, .offset = S(slave_read_enable), .def = "false",
      .help = "Master: send consumers that fall far behind to a slave (suggestWhichBrokerId); slave: serve "
              "pulls (false: answer PULL_RETRY_IMMEDIATELY, pointing the consumer back at the master)" },
    { .name = "accessMessageInMemoryMaxRatio", .type = CFG_INT, .offset = S(access_mem_max_ratio), .min = 0,
      .max = 100, .def = "40",
      .help = "A pull whose last message lies further behind the commitlog's end than this % of physical "
              "memory counts as far behind (see slaveReadEnable); start-time only" },
    { .name = "timerWheelEnable", .type = CFG_BOOL, .offset = S(timer_enable), .def = "true",
      .help = "Timer messages (TIMER_DELIVER_MS / TIMER_DELAY_SEC / TIMER_DELAY_MS); start-time only" },
    { .name = "timerMaxDelaySec", .type = CFG_INT, .offset = S(timer_max_delay_sec), .min = 1,
      .max = 315360000, .def = "259200", .help = "Longest timer delay accepted (s); start-time only" },
    { .name = "timerPrecisionMs", .type = CFG_INT, .offset = S(timer_precision_ms), .min = 10,
      .max = 60000, .def = "500", .help = "Timer wheel slot (ms); start-time only" },
    CFG_END,
};

static struct broker B;
static struct tmr_config timer_cfg;
static char timer_dir[sizeof B.cfg.store_root + 16];
static ev_timer offsets_timer;

static void on_request(rmt_conn *c, rmt_cmd *req, void *ud)
{
    struct broker *b = ud;
    switch (req->code) {
    case RMT_REQ_SEND_MESSAGE:
    case RMT_REQ_SEND_MESSAGE_V2:
    case RMT_REQ_SEND_BATCH_MESSAGE:
        send_on_request(b->send, c, req);
        return;
    case RMT_REQ_CONSUMER_SEND_MSG_BACK:
        send_on_msg_back(b->send, c, req);
        return;
    case RMT_REQ_PULL_MESSAGE:
        pull_on_request(b->pull, c, req);
        return;
    case RMT_REQ_POP_MESSAGE:
    case RMT_REQ_ACK_MESSAGE:
    case RMT_REQ_BATCH_ACK_MESSAGE:
    case RMT_REQ_CHANGE_MESSAGE_INVISIBLETIME:
        pop_on_request(b->pop, c, req);
        return;
    case RMT_REQ_HEART_BEAT:
        cm_on_heartbeat(b->cm, c, req);
        return;
    case RMT_REQ_UNREGISTER_CLIENT:
        cm_on_unregister(b->cm, c, req);
        return;
    case RMT_REQ_GET_CONSUMER_LIST_BY_GROUP:
        cm_on_consumer_list(b->cm, c, req);
        return;
    case RMT_REQ_GET_ALL_DELAY_OFFSET:
        sched_on_delay_offsets(b->sched, c, req);
        return;
    case RMT_REQ_GET_TIMER_CHECK_POINT:
        hs_on_timer_check_point(b, c, req);
        return;
    case RMT_REQ_END_TRANSACTION:
        tx_on_end(b->tx, c, req);
        return;
    case RMT_REQ_LOCK_BATCH_MQ:
        lock_on_lock(b->lock, c, req);
        return;
    case RMT_REQ_UNLOCK_BATCH_MQ:
        lock_on_unlock(b->lock, c, req);
        return;
    default:
        break;
    }
    if (qry_on_request(b, c, req) || adm_on_request(b->adm, c, req))
        return;
    log_debug("unsupported request code %d from %s", req->code, rmt_conn_peer(c));
    brk_err(b, c, req, RMT_RESP_REQUEST_CODE_NOT_SUPPORTED,
            "request code %d not supported by this broker", req->code);
}

static void on_close(rmt_conn *c, void *ud)
{
    struct broker *b = ud;
    cm_on_conn_closed(b->cm, c);
    pull_on_conn_closed(b->pull, c);
    pop_on_conn_closed(b->pop, c);
}

static void on_offsets_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
    int rc = meta_offsets_persist(B.meta);
    if (rc && rc != -EBUSY)
        log_warn("consumer offset batch failed: %s (retried next time)", strerror(-rc));
}

static void on_stop(void *ud)
{
    struct broker *b = ud;
    if (b->stopping)
        return;
    log_info("stopping");
    dmn_notify("STOPPING=1");
    b->stopping = true;
    rmt_server_stop_accepting(b->server);
    ev_break(b->loop, EVBREAK_ALL);
}

static void run_briefly(struct ev_loop *loop, int ms)
{
    int64_t end = brk_mono_ms() + ms;
    while (brk_mono_ms() < end) {
        ev_run(loop, EVRUN_NOWAIT);
        if (send_pending(B.send) == 0)
            break;
        struct timespec ts = { 0, 1000000 };
        nanosleep(&ts, NULL);
    }
}

int main(int argc, char **argv)
{
    struct broker *b = &B;
    char err[512];
    log_set_ident("broker");
    int rc = cfg_parse_args(brk_cfg_keys, &b->cfg, "broker", argc, argv, err, sizeof err);
    if (rc == 1)
        return 0;
    if (rc < 0) {
        fprintf(stderr, "broker: %s\n", err);
        return 2;
    }
    log_set_level((enum log_level)b->cfg.log_level);
    if (b->cfg.log_file[0] && (rc = log_open_file(b->cfg.log_file)) < 0) {
        fprintf(stderr, "broker: cannot open logFile %s: %s\n", b->cfg.log_file, strerror(-rc));
        return 2;
    }
    b->admin = acl_parse(b->cfg.admin_allow, err, sizeof err);
    if (!b->admin) {
        fprintf(stderr, "broker: adminAllowList: %s\n", err);
        return 2;
    }
    int64_t levels[BRK_DELAY_LEVELS_MAX];
    if (brk_delay_levels(b, levels, BRK_DELAY_LEVELS_MAX) <= 0) {
        fprintf(stderr, "broker: messageDelayLevel: '%s' has no valid level (e.g. \"1s 5s 1m 2h\")\n",
                b->cfg.delay_levels);
        return 2;
    }
    if (b->cfg.max_message_size + 65536 > b->cfg.max_frame) {
        fprintf(stderr, "broker: maxMessageSize (%lld) must be at least 64 KiB below maxFrameSize (%lld)\n",
                (long long)b->cfg.max_message_size, (long long)b->cfg.max_frame);
        return 2;
    }
    if (!b->cfg.ip1[0])
        rmt_local_ipv4(b->cfg.ip1, sizeof b->cfg.ip1);
    b->start_ms = brk_mono_ms();
    rmt_cmd_init(&b->resp, 0);
    b->loop = ev_default_loop(EVFLAG_AUTO);

    struct rmt_server_opts so = {
        .host = b->cfg.bind_address, .port = (int)b->cfg.listen_port,
        .max_frame = (size_t)b->cfg.max_frame, .on_request = on_request, .on_close = on_close, .ud = b,
    };
    int serr = 0;
    b->server = rmt_server_new(b->loop, &so, &serr);
    if (!b->server) {
        log_error("cannot listen on %s:%lld: %s", b->cfg.bind_address, (long long)b->cfg.listen_port,
                  strerror(-serr));
        return 1;
    }
    b->port = rmt_server_port(b->server);
    snprintf(b->addr, sizeof b->addr, "%.63s:%d", b->cfg.ip1, b->port);

    rc = meta_open(b->cfg.store_root, (size_t)b->cfg.meta_map_mb << 20, &b->meta);
    if (rc) {
        log_error("cannot open the metadata store under %s: %s", b->cfg.store_root, strerror(-rc));
        return 1;
    }
    b->pull = pull_new(b);
    b->pop = pop_new(b);
    if (!b->pop) {
        log_error("cannot open the pop consumption state under %s", b->cfg.store_root);
        return 1;
    }
    b->cm = cm_new(b);
    b->adm = adm_new(b);
    b->reg = reg_new(b, err, sizeof err);
    if (!b->reg) {
        log_error("%s", err);
        return 2;
    }
    if (!b->pull || !b->cm || !b->adm) {
        log_error("out of memory at start");
        return 1;
    }
    struct store_config sc;
    store_config_defaults(&sc);
    sc.root_dir = b->cfg.store_root;
    sc.commitlog_file_size = (uint64_t)b->cfg.commitlog_file_size;
    sc.flush_type = b->cfg.flush_type ? STORE_SYNC_FLUSH : STORE_ASYNC_FLUSH;
    sc.flush_interval_commitlog_ms = (int)b->cfg.flush_interval_commitlog;
    sc.sync_flush_timeout_ms = (int)b->cfg.sync_flush_timeout;
    sc.file_reserved_time_h = (int)b->cfg.file_reserved_time;
    sc.delete_when = b->cfg.delete_when;
    sc.disk_max_used_space_ratio = (int)b->cfg.disk_max_ratio;
    sc.max_message_size = (uint32_t)b->cfg.max_message_size + 65536;
    sc.access_message_in_memory_max_ratio = (int)b->cfg.access_mem_max_ratio;
    sc.store_host = b->addr;
    sc.message_delay_level = b->cfg.delay_levels;
    sc.on_dispatch = pop_dispatch_hook; /* forwards to pull_dispatch_hook */
    sc.on_dispatch_ud = b->pop;
    rc = store_open(&sc, &b->store);
    if (rc) {
        log_error("cannot open the message store under %s: %s", b->cfg.store_root, strerror(-rc));
        return 1;
    }
    struct ha_config hc;
    ha_config_defaults(&hc);
    hc.listen_host = b->cfg.bind_address;
    hc.listen_port = b->cfg.ha_listen_port >= 0 ? (int)b->cfg.ha_listen_port : b->port < 65535 ? b->port + 1 : 0;
    hc.heartbeat_interval_ms = (int)b->cfg.ha_heartbeat_ms;
    hc.housekeeping_interval_ms = (int)b->cfg.ha_housekeeping_ms;
    hc.transfer_batch = (uint32_t)b->cfg.ha_transfer_batch;
    hc.max_gap_not_in_sync = b->cfg.ha_max_gap;
    hc.sync_timeout_ms = (int)b->cfg.sync_slave_timeout;
    if (hc.recv_buffer < 2 * ((uint32_t)b->cfg.max_message_size + 65536))
        hc.recv_buffer = 2 * ((uint32_t)b->cfg.max_message_size + 65536);
    int herr = 0;
    if (b->cfg.role == BRK_SLAVE) {
        b->ha = ha_slave_start(b->loop, b->store, b->cfg.ha_master_addr, &hc, &herr);
    } else {
        b->ha = ha_master_start(b->loop, b->store, &hc, &herr);
        if (!b->ha && herr == -EADDRINUSE && b->cfg.ha_listen_port < 0) {
            /* Only the implicit listenPort + 1 may move: the address
             * slaves use comes from the nameserver (haServerAddr). */
            log_warn("HA: listenPort + 1 (%d) is in use; listening for slaves on a free port instead "
                     "(set haListenPort to fix it)", hc.listen_port);
            hc.listen_port = 0;
            b->ha = ha_master_start(b->loop, b->store, &hc, &herr);
        }
        b->ha_port = b->ha ? ha_master_port(b->ha) : 0;
    }
    if (!b->ha) {
        log_error("cannot start HA (%s): %s", b->cfg.role == BRK_SLAVE ? "slave" : "master",
                  strerror(-herr));
        store_close(b->store);
        meta_close(b->meta);
        return 1;
    }
    /* a slave's timer follows the master's (tmr_follow), ready for promotion */
    tmr_config_defaults(&timer_cfg);
    snprintf(timer_dir, sizeof timer_dir, "%.511s/timer", b->cfg.store_root);
    timer_cfg.root_dir = timer_dir;
    timer_cfg.enable = b->cfg.timer_enable;
    timer_cfg.max_delay_sec = b->cfg.timer_max_delay_sec;
    timer_cfg.precision_ms = (int)b->cfg.timer_precision_ms;
    timer_cfg.follower = b->cfg.role == BRK_SLAVE;
    rc = tmr_open(b->store, &timer_cfg, &b->timer);
    if (rc) {
        log_error("cannot open the timer wheel under %s: %s", timer_dir, strerror(-rc));
        ha_free(b->ha);
        store_close(b->store);
        meta_close(b->meta);
        return 1;
    }
    if (b->cfg.role != BRK_SLAVE)
        b->tmr_cfg = &timer_cfg;
    b->hs = hs_new(b);
    b->send = b->hs ? send_new(b) : NULL;
    b->sched = b->send ? sched_new(b) : NULL;
    b->tx = b->sched ? tx_new(b) : NULL;
    b->lock = lock_new(b);
    if (!b->send || !b->sched || !b->tx || !b->lock || brk_create_system_topics(b)) {
        log_error("broker start failed");
        ha_free(b->ha);
        tmr_close(b->timer);
        store_close(b->store);
        meta_close(b->meta);
        return 1;
    }
    ev_timer_init(&offsets_timer, on_offsets_timer, b->cfg.flush_offset_interval / 1000.0,
                  b->cfg.flush_offset_interval / 1000.0);
    ev_timer_start(b->loop, &offsets_timer);
    dmn_signals_start(b->loop, on_stop, b);
    cm_start(b->cm);
    adm_start(b->adm);
    sched_start(b->sched);
    tx_start(b->tx);
    pop_start(b->pop);
    hs_start(b->hs);
    reg_start(b->reg);
    log_info("broker %s (%s/%s id %lld, %s, %s) listening on %s:%d, store %s", b->addr, b->cfg.cluster,
             b->cfg.name, (long long)b->cfg.broker_id, roles[b->cfg.role], flush_types[b->cfg.flush_type],
             b->cfg.bind_address, b->port, b->cfg.store_root);
    if (b->cfg.role == BRK_SLAVE)
        log_info("HA slave: following %s", b->cfg.ha_master_addr[0] ? b->cfg.ha_master_addr
                                                                      : "the master the nameserver reports");
    else
        log_info("HA: listening for slaves on %s:%d", b->cfg.bind_address, b->ha_port);
    dmn_notify("READY=1");

    ev_run(b->loop, 0);

    ev_timer_stop(b->loop, &offsets_timer);
    sched_stop(b->sched);
    tx_stop(b->tx);
    pull_answer_all(b->pull);
    pop_stop(b->pop);
    reg_unregister_all(b->reg, 3000);
    run_briefly(b->loop, (int)(b->cfg.sync_flush_timeout + b->cfg.sync_slave_timeout) + 1000);
    /* Answers the slave waits still pending (SLAVE_NOT_AVAILABLE) while the
     * connections are still open. */
    ha_free(b->ha);
    b->ha = NULL;
    hs_free(b->hs);
    b->hs = NULL;
    /* Let the answers already produced leave before connections close. */
    for (int i = 0; i < 20; i++)
        ev_run(b->loop, EVRUN_NOWAIT);
    rmt_server_free(b->server);
    b->server = NULL;
    tmr_close(b->timer);
    b->timer = NULL;
    store_close(b->store);
    send_drain(b->send);
    pop_free(b->pop);
    rc = meta_close(b->meta);
    if (rc)
        log_error("persisting consumer offsets at shutdown failed: %s", strerror(-rc));
    sched_free(b->sched);
    tx_free(b->tx);
    lock_free(b->lock);
    send_free(b->send);
    pull_free(b->pull);
    cm_free(b->cm);
    adm_free(b->adm);
    reg_free(b->reg);
    dmn_signals_stop(b->loop);
    acl_free(b->admin);
    rmt_cmd_destroy(&b->resp);
    buf_free(&b->body);
    log_info("broker stopped");
    ev_loop_destroy(b->loop);
    return rc ? 1 : 0;
}
