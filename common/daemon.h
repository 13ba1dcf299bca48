/*
 * What every daemon's main() shares: graceful-stop signals on the event loop
 * and the systemd readiness protocol (sd_notify over $NOTIFY_SOCKET, a
 * datagram; no libsystemd). Ownership: dmn_signals_start keeps the watchers in
 * a static area; call it once per process.
 */
#ifndef RMQ_DAEMON_H
#define RMQ_DAEMON_H

#include <ev.h>

/* Calls on_stop(ud) from the loop on SIGTERM or SIGINT (once per signal);
 * ignores SIGPIPE. */
void dmn_signals_start(struct ev_loop *loop, void (*on_stop)(void *ud), void *ud);
/* Stops the signal watchers (before the loop is destroyed); from then on
 * SIGTERM and SIGINT are ignored so a second one cannot interrupt the stop. */
void dmn_signals_stop(struct ev_loop *loop);
/* Sends a state string such as "READY=1" or "STOPPING=1" to systemd when
 * NOTIFY_SOCKET is set. Returns 0, or -errno (nothing is sent when unset). */
int dmn_notify(const char *state);

#endif
