/*
 * nameserver: RocketMQ's stateless route registry. Brokers register with
 * every nameserver; clients ask it for topic routes. Everything is in memory;
 * nameservers never talk to each other. One event loop serves all requests;
 * a periodic scan evicts brokers that stopped sending heartbeats, and a
 * closed broker connection evicts at once.
 */
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "acl.h"
#include "config.h"
#include "daemon.h"
#include "log.h"
#include "processor.h"
#include "remoting.h"
#include "route_table.h"

struct ns_settings {
    char bind_address[64];
    int64_t listen_port;
    int64_t scan_interval_ms;
    int64_t expire_ms;
    int64_t max_frame;
    char admin_allow[1024];
    int log_level;
    char log_file[512];
};

static const char *const log_levels[] = { "debug", "info", "warn", "error", NULL };

#define S(f) offsetof(struct ns_settings, f)
static const struct cfg_key ns_keys[] = {
    { .name = "bindAddress", .type = CFG_STRING, .offset = S(bind_address),
      .size = sizeof(((struct ns_settings *)0)->bind_address), .def = "0.0.0.0",
      .help = "Address the nameserver listens on" },
    { .name = "listenPort", .type = CFG_INT, .offset = S(listen_port), .min = 0, .max = 65535,
      .def = "9876", .help = "TCP port for the remoting protocol (0 = any free port)" },
    { .name = "scanNotActiveBrokerInterval", .type = CFG_INT, .offset = S(scan_interval_ms),
      .min = 100, .max = 3600000, .def = "10000",
      .help = "How often (ms) brokers are checked for expired heartbeats" },
    { .name = "brokerChannelExpiredTime", .type = CFG_INT, .offset = S(expire_ms), .min = 1000,
      .max = 86400000, .def = "120000",
      .help = "A broker silent for this long (ms) is removed from the routes" },
    { .name = "maxFrameSize", .type = CFG_INT, .offset = S(max_frame), .min = 4096,
      .max = 1073741824, .def = "16777216",
      .help = "Largest remoting frame accepted (bytes); bigger frames close the connection" },
    { .name = "adminAllowList", .type = CFG_STRING, .offset = S(admin_allow),
      .size = sizeof(((struct ns_settings *)0)->admin_allow), .def = "127.0.0.1;::1",
      .help = "Addresses/CIDRs (';'-separated) allowed to send admin requests" },
    { .name = "logLevel", .type = CFG_ENUM, .offset = S(log_level), .enum_values = log_levels,
      .def = "info", .help = "debug, info, warn or error" },
    { .name = "logFile", .type = CFG_STRING, .offset = S(log_file),
      .size = sizeof(((struct ns_settings *)0)->log_file), .def = "",
      .help = "Also append the log to this file (stderr always gets it)" },
    CFG_END,
};

struct nameserver {
    struct ev_loop *loop;
    struct ns_settings cfg;
    struct ns_route_table *rt;
    struct ns_proc *proc;
    acl *admin;
    rmt_server *server;
    ev_timer scan;
};

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void on_scan(struct ev_loop *loop, ev_timer *w, int revents)
{
    struct nameserver *ns = w->data;
    ns_scan_expired(ns->rt, mono_ms(), ns->cfg.expire_ms, NULL, NULL);
}

static void on_stop(void *ud)
{
    struct nameserver *ns = ud;
    dmn_notify("STOPPING=1");
    rmt_server_stop_accepting(ns->server);
    ev_timer_stop(ns->loop, &ns->scan);
    ev_break(ns->loop, EVBREAK_ALL);
}

int main(int argc, char **argv)
{
    static struct nameserver ns;
    char err[512];
    log_set_ident("nameserver");
    int rc = cfg_parse_args(ns_keys, &ns.cfg, "nameserver", argc, argv, err, sizeof err);
    if (rc == 1)
        return 0;
    if (rc < 0) {
        fprintf(stderr, "nameserver: %s\n", err);
        return 2;
    }
    log_set_level((enum log_level)ns.cfg.log_level);
    if (ns.cfg.log_file[0] && (rc = log_open_file(ns.cfg.log_file)) < 0) {
        fprintf(stderr, "nameserver: cannot open logFile %s: %s\n", ns.cfg.log_file, strerror(-rc));
        return 2;
    }
    ns.admin = acl_parse(ns.cfg.admin_allow, err, sizeof err);
    if (!ns.admin) {
        fprintf(stderr, "nameserver: adminAllowList: %s\n", err);
        return 2;
    }
    ns.loop = ev_default_loop(EVFLAG_AUTO);
    ns.rt = ns_route_table_create();
    ns.proc = ns.rt ? ns_proc_create(ns.rt, ns.admin) : NULL;
    if (!ns.proc) {
        log_error("out of memory at start");
        return 1;
    }
    struct rmt_server_opts so = {
        .host = ns.cfg.bind_address,
        .port = (int)ns.cfg.listen_port,
        .max_frame = (size_t)ns.cfg.max_frame,
        .on_request = ns_proc_on_request,
        .on_close = ns_proc_on_close,
        .ud = ns.proc,
    };
    int serr = 0;
    ns.server = rmt_server_new(ns.loop, &so, &serr);
    if (!ns.server) {
        log_error("cannot listen on %s:%lld: %s", ns.cfg.bind_address, (long long)ns.cfg.listen_port,
                  strerror(-serr));
        return 1;
    }
    ev_timer_init(&ns.scan, on_scan, ns.cfg.scan_interval_ms / 1000.0,
                  ns.cfg.scan_interval_ms / 1000.0);
    ns.scan.data = &ns;
    ev_timer_start(ns.loop, &ns.scan);
    dmn_signals_start(ns.loop, on_stop, &ns);
    log_info("nameserver listening on %s:%d (scan every %lld ms, expire after %lld ms)",
             ns.cfg.bind_address, rmt_server_port(ns.server), (long long)ns.cfg.scan_interval_ms,
             (long long)ns.cfg.expire_ms);
    dmn_notify("READY=1");

    ev_run(ns.loop, 0);
    /* Let answers already produced leave before the connections close. */
    for (int i = 0; i < 3; i++)
        ev_run(ns.loop, EVRUN_NOWAIT);

    rmt_server_free(ns.server);
    dmn_signals_stop(ns.loop);
    ns_proc_free(ns.proc);
    ns_route_table_free(ns.rt);
    acl_free(ns.admin);
    log_info("nameserver stopped");
    ev_loop_destroy(ns.loop);
    return 0;
}
