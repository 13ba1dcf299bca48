/*
 * Receipt-handle auto-renewal for push consumers, as RocketMQ's proxy does
 * it. A 5.x push consumer receives with auto_renew and no invisible
 * duration and relies on the proxy to keep the messages it is processing
 * invisible. The proxy pops them with defaultInvisibleTimeMills, records
 * every handle it handed out, and renewAheadTimeMillis before a handle's
 * invisible time runs out asks the broker (CHANGE_MESSAGE_INVISIBLETIME) to
 * hide the message for renewSliceTimeMillis more, until the client acks,
 * changes the invisible time, dead-letters it, or renewMaxTimeMillis has
 * passed since the receive. Each renewal gives the message a new check
 * point, so the client's AckMessage / ChangeInvisibleDuration /
 * ForwardMessageToDeadLetterQueue must go to the broker with the latest
 * handle: px_renew_take hands it out and forgets the entry. When a client
 * goes away its entries are dropped and their messages made visible again
 * after invisibleTimeMillisWhenClear, so another consumer gets them.
 *
 * Two layers:
 *  - px_renew_reg_*: the registry alone, no I/O (unit tested). Entries sit
 *    in slabs of fixed-size slots with a free list (no malloc per message
 *    once warm), in a hash table keyed by (group, topic, handle as the
 *    client holds it) and, while waiting for their next action, in a
 *    min-heap of deadlines. Entries are grouped by owner, one per (client
 *    id, group, topic), so a client's entries are found without a scan.
 *  - px_renew_*: the proxy side: a libev timer armed for the earliest
 *    deadline, the broker requests, and the hand-over to acks that race a
 *    renewal in flight (they wait for its answer, since the broker has by
 *    then moved the check point).
 *
 * Ownership: the registry owns its entries, owners and slabs; entry
 * pointers stay valid until px_renew_reg_remove. struct px owns the
 * px_renew state (px->renew), created by px_renew_init and freed by
 * px_renew_free after the remoting client is gone.
 */
#ifndef RMQ_PX_RENEW_H
#define RMQ_PX_RENEW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Handles longer than this (absurdly long broker names) are not renewed. */
#define PX_RENEW_HANDLE_MAX 256

struct px_renew_reg;
struct px_renew_owner;

/* One handle handed out with auto_renew. Fields are maintained by the
 * registry (links) and by the renewal layer (the rest); read-only to
 * everyone else. */
struct px_renew_entry {
    char handle[PX_RENEW_HANDLE_MAX]; /* as handed to the client: the key */
    int64_t received_ms;              /* when the client got it */
    int64_t deadline_ms;              /* next action, while scheduled */
    int64_t pop_time;                 /* the latest check point: popTime, */
    int64_t invisible;                /* invisibleTime (ms) */
    int revive_qid;                   /* and reviveQid */
    unsigned state;                   /* renewal layer's flags */
    void *waiters;                    /* renewal layer's takers */
    struct px_renew_owner *owner;
    struct px_renew_entry *hnext;     /* hash chain / free list */
    struct px_renew_entry *onext, *oprev; /* owner's entries */
    uint32_t hash;
    uint32_t heap_pos;                /* PX_RENEW_UNSCHEDULED when not queued */
    bool used;
};
#define PX_RENEW_UNSCHEDULED UINT32_MAX

/* A registry holding at most max_entries entries (>= 1). NULL on ENOMEM. */
struct px_renew_reg *px_renew_reg_new(uint32_t max_entries);
void px_renew_reg_free(struct px_renew_reg *g);
uint32_t px_renew_reg_count(const struct px_renew_reg *g);
/* A pointer for the registry's user, reachable from every entry. */
void px_renew_reg_set_user(struct px_renew_reg *g, void *user);
void *px_renew_entry_user(const struct px_renew_entry *e);

/* Adds an unscheduled entry for a handle a client received; pop_time and
 * invisible start as the handle's own. NULL with *err = -ENOSPC (registry
 * full), -EEXIST (already there), -ENAMETOOLONG (a string too long),
 * -EINVAL (not a receipt handle) or -ENOMEM. */
struct px_renew_entry *px_renew_reg_add(struct px_renew_reg *g, const char *client_id, const char *group,
                                        const char *topic, const char *handle, int64_t received_ms,
                                        int *err);
/* The entry of (group, topic, handle as the client holds it), or NULL. */
struct px_renew_entry *px_renew_reg_find(struct px_renew_reg *g, const char *group, const char *topic,
                                         const char *handle);
/* Unschedules and forgets e; its slot is reused. */
void px_renew_reg_remove(struct px_renew_reg *g, struct px_renew_entry *e);

/* (Re)queues e for deadline_ms / takes it out of the deadline order. */
void px_renew_reg_schedule(struct px_renew_reg *g, struct px_renew_entry *e, int64_t deadline_ms);
void px_renew_reg_unschedule(struct px_renew_reg *g, struct px_renew_entry *e);
/* Earliest deadline queued; INT64_MAX when none. */
int64_t px_renew_reg_next_deadline(const struct px_renew_reg *g);
/* Unschedules and returns the entry with the earliest deadline if that is
 * <= now_ms; NULL otherwise. Ties come out in no particular order. */
struct px_renew_entry *px_renew_reg_pop_due(struct px_renew_reg *g, int64_t now_ms);

/* Calls fn for every entry of client_id (fn may remove the entry it is
 * given, nothing else) and returns how many there were. The client's
 * owners are released as soon as they hold no entry. */
typedef void (*px_renew_entry_fn)(struct px_renew_entry *e, void *ud);
size_t px_renew_reg_client_gone(struct px_renew_reg *g, const char *client_id, px_renew_entry_fn fn, void *ud);
/* Calls fn for every entry (same rule). */
size_t px_renew_reg_each(struct px_renew_reg *g, px_renew_entry_fn fn, void *ud);

const char *px_renew_entry_client(const struct px_renew_entry *e);
const char *px_renew_entry_group(const struct px_renew_entry *e);
const char *px_renew_entry_topic(const struct px_renew_entry *e);
/* The handle to use with the broker now: the client's handle with the
 * latest popTime / invisibleTime / reviveQid. Returns the length or
 * -ENOSPC / -EINVAL. */
int px_renew_entry_current(const struct px_renew_entry *e, char *out, size_t cap);

/* The proxy side, on px->renew. */

struct px;

int px_renew_init(struct px *px);
/* Shutdown begins: no new entries; those there are still renewed and
 * handed over to acks while calls in flight finish. */
void px_renew_stop(struct px *px);
/* Shutdown, once the calls are done: every entry is made visible again
 * after invisibleTimeMillisWhenClear; runs the loop until the broker has
 * answered or max_wait_s passed. */
void px_renew_release_all(struct px *px, double max_wait_s);
void px_renew_free(struct px *px);

/* Registers a handle just delivered to client_id by a receive with
 * auto_renew. Beyond the configured maximum of entries the message is not
 * renewed (logged at most once a minute). */
void px_renew_add(struct px *px, const char *client_id, const char *group, const char *topic,
                  const char *handle);

/*
 * For an ack, change of invisible time or dead-lettering of handle: the
 * handle to send to the broker. Returns
 *   0  not renewed by the proxy: use the client's handle;
 *   1  out holds the latest handle; the entry is forgotten;
 *   2  a renewal is in flight: cb(ud, 0, latest) runs once it is answered
 *      (cb(ud, -ECANCELED, NULL) if the proxy is shutting down meanwhile).
 */
typedef void (*px_renew_take_fn)(void *ud, int status, const char *handle);
int px_renew_take(struct px *px, const char *group, const char *topic, const char *handle, char *out,
                  size_t cap, px_renew_take_fn cb, void *ud);

/* A client's last Telemetry stream ended: its messages become visible again
 * after invisibleTimeMillisWhenClear. */
void px_renew_client_gone(struct px *px, const char *client_id);

#endif
