/* Signal handling and sd_notify for the daemons; see daemon.h. */
#include "daemon.h"

#include <errno.h>
#include <signal.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "log.h"

static ev_signal sig_term, sig_int;
static void (*stop_cb)(void *);
static void *stop_ud;

static void on_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
    log_info("received %s, shutting down", w->signum == SIGTERM ? "SIGTERM" : "SIGINT");
    if (stop_cb)
        stop_cb(stop_ud);
}

void dmn_signals_start(struct ev_loop *loop, void (*on_stop)(void *ud), void *ud)
{
    signal(SIGPIPE, SIG_IGN);
    stop_cb = on_stop;
    stop_ud = ud;
    ev_signal_init(&sig_term, on_signal, SIGTERM);
    ev_signal_init(&sig_int, on_signal, SIGINT);
    ev_signal_start(loop, &sig_term);
    ev_signal_start(loop, &sig_int);
    ev_unref(loop);
    ev_unref(loop);
}

void dmn_signals_stop(struct ev_loop *loop)
{
    ev_ref(loop);
    ev_ref(loop);
    ev_signal_stop(loop, &sig_term);
    ev_signal_stop(loop, &sig_int);
    /* Shutdown has begun: a repeated SIGTERM/SIGINT must not cut it short
     * with the default action (SIGKILL still ends a hung stop). */
    signal(SIGTERM, SIG_IGN);
    signal(SIGINT, SIG_IGN);
}

int dmn_notify(const char *state)
{
    const char *path = getenv("NOTIFY_SOCKET");
    if (!path || !*path)
        return 0;
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    size_t n = strlen(path);
    if (n >= sizeof sa.sun_path || (path[0] != '/' && path[0] != '@'))
        return -EINVAL;
    memcpy(sa.sun_path, path, n);
    if (sa.sun_path[0] == '@')
        sa.sun_path[0] = 0; /* abstract namespace */
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    socklen_t len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
    ssize_t w = sendto(fd, state, strlen(state), MSG_NOSIGNAL, (struct sockaddr *)&sa, len);
    int err = w < 0 ? -errno : 0;
    close(fd);
    if (err)
        log_warn("sd_notify to %s failed: %s", path, strerror(-err));
    return err;
}
