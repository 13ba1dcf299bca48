/*
 * proxy: the RocketMQ 5 gRPC endpoint. Official 5.x clients connect here
 * (only the endpoint changes); the proxy learns routes from the nameservers
 * and speaks RocketMQ remoting to every broker, presenting the whole cluster
 * as this single address. One event loop serves every connection; see
 * proxy.h for the shape.
 */
#include <errno.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "acl.h"
#include "config.h"
#include "daemon.h"
#include "log.h"
#include "proxy.h"
#include "renew.h"

static const char *const log_levels[] = { "debug", "info", "warn", "error", NULL };

#define S(f) offsetof(struct px_settings, f)
#define SZ(f) sizeof(((struct px_settings *)0)->f)
const struct cfg_key px_cfg_keys[] = {
    { .name = "grpcServerPort", .type = CFG_INT, .offset = S(grpc_port), .min = 0, .max = 65535,
      .def = "8081", .help = "Port of the gRPC endpoint for RocketMQ 5 clients (0 = any free port)" },
    { .name = "bindAddress", .type = CFG_STRING, .offset = S(bind_address), .size = SZ(bind_address),
      .def = "0.0.0.0", .help = "Address the gRPC endpoint listens on" },
    { .name = "advertisedAddress", .type = CFG_STRING, .offset = S(advertised), .size = SZ(advertised),
      .def = "", .help = "host:port told to clients in routes when they did not say which endpoint they used" },
    { .name = "namesrvAddr", .type = CFG_STRING, .offset = S(namesrv), .size = SZ(namesrv),
      .def = "127.0.0.1:9876", .help = "Nameservers, 'host:port;host:port'" },
    { .name = "remotingListenPort", .type = CFG_INT, .offset = S(remoting_port), .min = 0, .max = 65535,
      .def = "8080", .help = "Remoting endpoint for 4.x clients (reserved: accepted, not served yet)" },
    { .name = "maxMessageSize", .type = CFG_INT, .offset = S(max_message_size), .min = 1,
      .max = 64 * 1024 * 1024, .def = "4194304", .help = "Largest message body accepted (bytes)" },
    { .name = "maxUserPropertySize", .type = CFG_INT, .offset = S(max_user_props), .min = 1, .max = 1024,
      .def = "128", .help = "Most user properties on one message" },
    { .name = "timerMaxDelaySec", .type = CFG_INT, .offset = S(timer_max_delay_sec), .min = 1,
      .max = 365LL * 86400, .def = "259200", .help = "How far ahead a delay message may be scheduled (s)" },
    { .name = "brokerRequestTimeoutMillis", .type = CFG_INT, .offset = S(request_timeout_ms), .min = 100,
      .max = 600000, .def = "3000", .help = "Timeout of one remoting request to a broker (ms)" },
    { .name = "grpcClientConsumerMaxLongPollingTimeoutMillis", .type = CFG_INT,
      .offset = S(max_long_polling_ms), .min = 0, .max = 600000, .def = "30000",
      .help = "Longest long poll a consumer may ask for (ms)" },
    { .name = "minInvisibleTimeMillisWhenReceive", .type = CFG_INT, .offset = S(min_invisible_ms), .min = 0,
      .max = 86400000, .def = "1000", .help = "Shortest invisible duration of a receive (ms)" },
    { .name = "maxInvisibleTimeMills", .type = CFG_INT, .offset = S(max_invisible_ms), .min = 1000,
      .max = 7 * 86400000LL, .def = "43200000", .help = "Longest invisible duration (ms)" },
    { .name = "defaultInvisibleTimeMills", .type = CFG_INT, .offset = S(default_invisible_ms), .min = 1000,
      .max = 86400000, .def = "60000",
      .help = "Invisible duration of push-consumer receives (auto_renew) until the first renewal (ms)" },
    { .name = "renewAheadTimeMillis", .type = CFG_INT, .offset = S(renew_ahead_ms), .min = 100,
      .max = 86400000, .def = "10000",
      .help = "Renew a push consumer's receipt handle this long before its invisible time ends (ms)" },
    { .name = "renewSliceTimeMillis", .type = CFG_INT, .offset = S(renew_slice_ms), .min = 1000,
      .max = 86400000, .def = "60000",
      .help = "Invisible time one renewal gives (ms); must exceed renewAheadTimeMillis" },
    { .name = "renewMaxTimeMillis", .type = CFG_INT, .offset = S(renew_max_ms), .min = 0,
      .max = 7 * 86400000LL, .def = "10800000",
      .help = "Stop renewing a message this long after it was received (ms)" },
    { .name = "invisibleTimeMillisWhenClear", .type = CFG_INT, .offset = S(clear_invisible_ms), .min = 0,
      .max = 86400000, .def = "1000",
      .help = "Messages held for a client that went away become visible again after this (ms)" },
    { .name = "renewMaxEntries", .type = CFG_INT, .offset = S(renew_max_entries), .min = 0, .max = 10000000,
      .def = "100000",
      .help = "Most receipt handles renewed at once; beyond, messages are not renewed (0 = no auto-renewal)" },
    { .name = "defaultMaxDeliveryAttempts", .type = CFG_INT, .offset = S(max_delivery_attempts), .min = 1,
      .max = 1000, .def = "17", .help = "Delivery attempts told to consumers whose group config is unknown" },
    { .name = "heartbeatIntervalMillis", .type = CFG_INT, .offset = S(heartbeat_ms), .min = 1000,
      .max = 600000, .def = "10000", .help = "How often the proxy heartbeats brokers as its producers' groups (ms)" },
    { .name = "grpcMaxConnections", .type = CFG_INT, .offset = S(max_connections), .min = 1, .max = 1000000,
      .def = "20000", .help = "Most client connections at once" },
    { .name = "grpcMaxConcurrentStreams", .type = CFG_INT, .offset = S(grpc_max_streams), .min = 1,
      .max = 100000, .def = "1000", .help = "Concurrent gRPC calls per connection" },
    { .name = "adminAllowList", .type = CFG_STRING, .offset = S(admin_allow), .size = SZ(admin_allow),
      .def = "127.0.0.1;::1", .help = "Addresses/CIDRs (';'-separated) allowed admin requests" },
    { .name = "logLevel", .type = CFG_ENUM, .offset = S(log_level), .enum_values = log_levels,
      .def = "info", .help = "debug, info, warn or error" },
    { .name = "logFile", .type = CFG_STRING, .offset = S(log_file), .size = SZ(log_file), .def = "",
      .help = "Also append the log to this file (stderr always gets it)" },
    CFG_END,
};

static void stopped(void *ud)
{
    struct px *px = ud;
    ev_break(px->loop, EVBREAK_ALL);
}

static void on_stop(void *ud)
{
    struct px *px = ud;
    if (px->stopping)
        return;
    px->stopping = true;
    dmn_notify("STOPPING=1");
    log_info("proxy stopping: letting calls in flight finish");
    ev_timer_stop(px->loop, &px->heartbeat);
    px_renew_stop(px);
    px_grpc_server_shutdown(px->srv, 3.0, stopped, px);
}

int main(int argc, char **argv)
{
    static struct px px;
    char err[512];
    log_set_ident("proxy");
    int rc = cfg_parse_args(px_cfg_keys, &px.cfg, "proxy", argc, argv, err, sizeof err);
    if (rc == 1)
        return 0;
    if (rc < 0) {
        fprintf(stderr, "proxy: %s\n", err);
        return 2;
    }
    log_set_level((enum log_level)px.cfg.log_level);
    if (px.cfg.log_file[0] && (rc = log_open_file(px.cfg.log_file)) < 0) {
        fprintf(stderr, "proxy: cannot open logFile %s: %s\n", px.cfg.log_file, strerror(-rc));
        return 2;
    }
    acl *admin = acl_parse(px.cfg.admin_allow, err, sizeof err);
    if (!admin) {
        fprintf(stderr, "proxy: adminAllowList: %s\n", err);
        return 2;
    }
    if (px.cfg.renew_slice_ms <= px.cfg.renew_ahead_ms) {
        fprintf(stderr, "proxy: renewSliceTimeMillis (%lld) must exceed renewAheadTimeMillis (%lld)\n",
                (long long)px.cfg.renew_slice_ms, (long long)px.cfg.renew_ahead_ms);
        return 2;
    }
    if (px.cfg.advertised[0]) {
        char host[128];
        int port;
        if (rmt_parse_addr(px.cfg.advertised, host, sizeof host, &port)) {
            fprintf(stderr, "proxy: advertisedAddress '%s' is not host:port\n", px.cfg.advertised);
            return 2;
        }
    }
    px.loop = ev_default_loop(EVFLAG_AUTO);
    rmt_local_ipv4(px.ip, sizeof px.ip);
    uint8_t ip4[4];
    struct in_addr ia;
    inet_pton(AF_INET, px.ip, &ia);
    memcpy(ip4, &ia, 4);
    msg_uniq_init(&px.uniq, ip4, (uint32_t)getpid(), (uint32_t)time(NULL));

    struct cli_opts co = { .namesrv_addr = px.cfg.namesrv, .instance_name = "proxy",
                           .timeout_ms = (int)px.cfg.request_timeout_ms };
    int cerr = 0;
    px.cli = cli_client_new(px.loop, &co, &cerr);
    if (!px.cli) {
        fprintf(stderr, "proxy: namesrvAddr '%s': %s\n", px.cfg.namesrv, strerror(-cerr));
        return 2;
    }
    struct rmt_client_opts ro = { .on_request = px_on_broker_request, .ud = &px };
    px.brk = rmt_client_new(px.loop, &ro);
    struct px_grpc_config gc;
    px_grpc_config_default(&gc);
    gc.max_recv_msg = (size_t)px.cfg.max_message_size + 64 * 1024;
    gc.max_connections = (uint32_t)px.cfg.max_connections;
    gc.max_concurrent_streams = (uint32_t)px.cfg.grpc_max_streams;
    gc.stream_window = 256 * 1024;
    gc.conn_window = 4 * 1024 * 1024;
    gc.idle_timeout = 0;
    px.srv = px_grpc_server_new(px.loop, &gc);
    if (!px.brk || !px.srv || px_telemetry_init(&px) || px_renew_init(&px) || px_service_register(&px)) {
        log_error("proxy: out of memory at start");
        return 1;
    }
    rc = px_grpc_server_listen(px.srv, px.cfg.bind_address, (uint16_t)px.cfg.grpc_port);
    if (rc) {
        log_error("proxy: cannot listen on %s:%lld: %s", px.cfg.bind_address, (long long)px.cfg.grpc_port,
                  strerror(-rc));
        return 1;
    }
    px.port = px_grpc_server_port(px.srv);
    dmn_signals_start(px.loop, on_stop, &px);
    log_info("proxy listening on %s:%u (gRPC), nameservers %s; remotingListenPort %lld is reserved, not served",
             px.cfg.bind_address, px.port, px.cfg.namesrv, (long long)px.cfg.remoting_port);
    dmn_notify("READY=1");

    ev_run(px.loop, 0);

    px_renew_release_all(&px, 1.0);
    dmn_signals_stop(px.loop);
    ev_timer_stop(px.loop, &px.heartbeat);
    px_telemetry_free(&px);
    px_grpc_server_free(px.srv);
    rmt_client_free(px.brk);
    px_renew_free(&px);
    cli_client_free(px.cli);
    for (int i = 0; i < 3; i++)
        ev_run(px.loop, EVRUN_NOWAIT);
    px_ops_free(&px);
    px_arena_release();
    acl_free(admin);
    log_info("proxy stopped (sent %llu, failed %llu, receives %llu, messages received %llu, acks %llu, "
             "renewals %llu, broker ACK_MESSAGE %llu, BATCH_ACK_MESSAGE %llu carrying %llu)",
             (unsigned long long)px.stats.sends, (unsigned long long)px.stats.send_failures,
             (unsigned long long)px.stats.receives, (unsigned long long)px.stats.received_msgs,
             (unsigned long long)px.stats.acks, (unsigned long long)px.stats.renewals,
             (unsigned long long)px.stats.ack_requests, (unsigned long long)px.stats.batch_acks,
             (unsigned long long)px.stats.batch_acked);
    ev_loop_destroy(px.loop);
    return 0;
}
