/*
 * Timer messages: delivery at an arbitrary time (RocketMQ 5 TIMER_DELIVER_MS,
 * TIMER_DELAY_SEC, TIMER_DELAY_MS) through a persistent timing wheel.
 *
 * Send path: tmr_prepare_put() rewrites a timer message to the system topic
 * rmq_sys_wheel_timer, queue 0, keeping its real topic and queue in
 * REAL_TOPIC / REAL_QID and its delivery time in TIMER_OUT_MS, so it is in
 * the commitlog (durable as any message) when the producer gets its ack.
 *
 * Timer thread (started by tmr_open): reads that queue from a checkpointed
 * offset and links each message into the wheel: a slot per precision_ms
 * step over twice the maximum delay, each slot the head of a chain of
 * fixed-size entries (commitlog offset, size, delivery time, previous entry
 * of the same slot) in an append-only, segmented timer log on disk. Memory
 * is the slot array (fixed by the window, not by the pending count) plus
 * the mapped log pages the kernel keeps cached. When a slot's time comes,
 * its chain is walked, each message read from the commitlog and put back as
 * a normal message of its real topic / queue (body, flag, tags, keys and
 * other properties intact; REAL_TOPIC, REAL_QID, TIMER_DELAY_SEC and
 * TIMER_DELAY_MS dropped). A message goes into the slot at or after its
 * delivery time (rounded up), so it is never delivered early and at most
 * precision_ms plus the processing time late.
 *
 * Crash safety: the checkpoint (timercheck) holds the queue offset linked so
 * far, the next slot time to deliver and the durable end of the timer log.
 * It is written (fdatasync) only after the timer log up to that end is
 * msynced and the store has flushed every message delivered so far. At open
 * the log is cut back to the checkpointed end and the wheel is rebuilt from
 * it; messages linked after the checkpoint are read again from the queue,
 * and a slot being delivered at the crash is delivered again. So a restart
 * or kill -9 can duplicate the deliveries of at most the last checkpoint
 * interval (about a second), never lose one.
 *
 * Limits: a message whose commitlog segment retention removed before its
 * delivery time (fileReservedTime shorter than the delay) cannot be
 * delivered and is reported. A broker down for longer than the wheel window
 * (2 x timerMaxDelaySec) still delivers everything, late.
 *
 * Ownership: tmr_open allocates the struct tmr, tmr_close stops the thread
 * and frees it. The store must outlive the timer.
 */
#ifndef RMQ_TIMER_H
#define RMQ_TIMER_H

#include <stddef.h>
#include <stdint.h>

#include "store.h"

#define TMR_TOPIC "rmq_sys_wheel_timer"
#define TMR_QUEUE_ID 0
#define TMR_DEFAULT_MAX_DELAY_SEC (3 * 24 * 3600)

struct tmr;

struct tmr_config {
    const char *root_dir;       /* timer files (timerlog/, timercheck); copied */
    int enable;                 /* timerWheelEnable (1) */
    int64_t max_delay_sec;      /* timerMaxDelaySec (259200 = 3 days) */
    int precision_ms;           /* timerPrecisionMs (500 here; RocketMQ uses 1000) */
    uint32_t log_segment_size;  /* timer log segment bytes (4000000) */
    int follower;               /* a slave's timer (see tmr_follow) */
    store_clock_fn clock;       /* optional; default CLOCK_REALTIME ms */
    void *clock_ud;
};

void tmr_config_defaults(struct tmr_config *c);

/* Checks a delivery time against the one limit every entry point enforces
 * (broker send path and proxy). Returns 0 if deliver_ms is at most
 * max_delay_sec after now_ms (times in the past are fine: delivered at
 * once), else -ERANGE with a message naming timerMaxDelaySec in err. */
int tmr_check_delay(int64_t deliver_ms, int64_t now_ms, int64_t max_delay_sec, char *err, size_t errlen);

/* Send path rewrite for one incoming message. Outputs go to caller buffers
 * (props_out of props_cap bytes, MSG_PROPERTIES_MAX + 1 is always enough
 * for valid input); nothing is allocated. Returns:
 *   0  store the message unchanged (not a timer message, a transactional
 *      half message, a delivery time already reached, or the timer topic
 *      itself);
 *   1  store it with *topic_out, *qid_out and props_out[0..*props_out_len)
 *      instead (a timer message moved to TMR_TOPIC; or, when the message
 *      also carries a delay level, the same topic with the TIMER_* delay
 *      properties removed, as RocketMQ does: the delay level wins);
 *  <0  refuse it; err holds the reason: -ENOTSUP timers disabled
 *      (WHEEL_TIMER_NOT_ENABLE), -EINVAL malformed property, -ERANGE beyond
 *      timerMaxDelaySec, -ENOSPC props_cap too small (all
 *      WHEEL_TIMER_MSG_ILLEGAL / MESSAGE_ILLEGAL for the client).
 * *deliver_ms receives the delivery time when 1 is returned for a move. */
int tmr_prepare_put(const struct tmr_config *cfg, const char *topic, int32_t queue_id, int32_t sysflag,
                    const char *props, size_t props_len, int64_t now_ms, const char **topic_out,
                    int32_t *qid_out, char *props_out, size_t props_cap, size_t *props_out_len,
                    int64_t *deliver_ms, char *err, size_t errlen);

/* Opens (creating) the timer files under cfg->root_dir, rebuilds the wheel
 * from the timer log and starts the timer thread. A disabled config still
 * opens (nothing runs) so the caller needs no special case. Returns 0 or
 * -errno (logged). */
int tmr_open(struct store *s, const struct tmr_config *cfg, struct tmr **out);
/* Stops the thread, writes a final checkpoint and frees t. */
void tmr_close(struct tmr *t);

struct tmr_stats {
    uint64_t pending;           /* linked in the wheel, not yet delivered */
    uint64_t enqueued;          /* linked since open */
    uint64_t delivered;         /* delivered since open */
    uint64_t lost;              /* could not be read back (removed by retention) */
    int64_t last_lag_ms;        /* delivery time - due time of the latest delivery */
    int64_t max_lag_ms;         /* largest lag since open */
    int64_t enqueue_offset;     /* timer queue offset linked so far */
    int64_t dequeue_ms;         /* next slot time to deliver */
    uint64_t wheel_bytes;       /* slot array size (fixed by window and precision) */
    uint64_t heap_bytes;        /* other memory the timer holds (buffers, tables) */
    uint64_t log_bytes;         /* timer log on disk */
};
void tmr_get_stats(struct tmr *t, struct tmr_stats *st);

/* What the latest durable checkpoint holds (what a master tells its
 * slaves: RocketMQ's TimerCheckpoint). */
struct tmr_checkpoint {
    int64_t deliver_ms;         /* every slot before it delivered (lastReadTimeMs) */
    int64_t queue_offset;       /* timer queue read below it (lastTimerQueueOffset) */
    int64_t log_end;            /* timer log durable below it (lastTimerLogFlushPos) */
    uint64_t seq;               /* checkpoint sequence number */
};
void tmr_get_checkpoint(struct tmr *t, struct tmr_checkpoint *cp);

/* Follower mode (a slave): the timer links what replication brings into
 * its own wheel and log but never delivers, since the master's deliveries
 * arrive through replication too; its delivery position follows the
 * master's instead. Each call hands over the master's position (every slot
 * before deliver_ms delivered there, every timer queue entry before
 * queue_offset read there: RocketMQ's lastReadTimeMs and
 * lastTimerQueueOffset, which slaves fetch with GET_TIMER_CHECK_POINT):
 * the thread drops those slots, and an entry already due when it is read
 * counts as delivered only below queue_offset (above, linking waits for
 * the master). A follower opened without a checkpoint of its own links
 * nothing until the first call. So a follower never takes a message the
 * master has not delivered for delivered: promoted (reopened without
 * follower), the timer resumes at the position followed last, nothing
 * pending is lost, and what the old master delivered since that position
 * is delivered again. No-op for a timer that is not a follower. */
void tmr_follow(struct tmr *t, int64_t deliver_ms, int64_t queue_offset);

#endif
