/*
 * Durable state of pop consumption (internal to pop.c): per (group, topic,
 * queue) the next offset to pop and the set of in-flight messages (queue
 * offset -> invisible-until, pop time, delivery count).
 *
 * The state lives in memory (a hash table of queues, each with an
 * offset-sorted array of in-flight entries, grown by doubling so steady
 * state does not allocate) and every change is appended as an operation to
 * a batch buffer. Before the event loop blocks (ev_prepare) the batch is
 * handed to a writer thread that applies it in ONE LMDB write transaction
 * under <storePathRootDir>/pop/ (fsync on commit); the loop keeps
 * accumulating the next batch meanwhile. Waiters registered with
 * pst_barrier are called back on the loop once every operation logged
 * before them is durable (or the commit failed: then the failed operations
 * are retried at the front of the next batch, so order on disk always
 * follows order in memory).
 *
 * LMDB layout (one unnamed DB):
 *   'O' group 0x00 topic 0x00 be32(queue)            -> be64 pop offset
 *   'I' group 0x00 topic 0x00 be32(queue) be64(off)   -> be64 deadline,
 *        be64 pop time, be32 delivery count, u8 order flag
 *
 * Threading: everything except the writer thread belongs to the loop.
 * Ownership: pst_open allocates, pst_close frees (after a final synchronous
 * commit). Queue pointers stay valid until pst_close.
 */
#ifndef RMQ_BROKER_POP_STATE_H
#define RMQ_BROKER_POP_STATE_H

#include <ev.h>
#include <stdbool.h>
#include <stdint.h>

struct pst_entry {
    int64_t off;
    int64_t deadline;   /* wall ms when the message becomes visible again */
    int64_t pop_time;   /* wall ms of the delivery the current receipt belongs to */
    int32_t count;      /* deliveries so far (order mode: drives orderCountInfo) */
    uint8_t order;      /* popped by an orderly (FIFO) pop */
    uint8_t reviving;   /* re-put to retry/DLQ in progress (memory only) */
};

struct pst_queue {
    struct pst_queue *hnext;   /* hash chain */
    struct pst_queue *next;    /* list of all queues */
    char *group;
    char *topic;
    int32_t qid;
    int64_t pop_off;           /* -1: not initialised yet */
    struct pst_entry *e;       /* sorted by off */
    uint32_t n, cap;
    int64_t next_deadline;     /* lower bound of the entries' deadlines */
    int64_t committed;         /* consumer offset last reported to metadata */
};

/* Called on the loop when the operations logged before pst_barrier are
 * durable (rc 0) or their commit failed (rc < 0). */
struct pst_waiter {
    struct pst_waiter *next;
    void (*done)(struct pst_waiter *w, int rc);
};

struct pst;

/* Opens <store_root>/pop/ (map_size bytes of LMDB map) and loads it.
 * Returns 0 or a negative errno (logged). */
int pst_open(struct ev_loop *loop, const char *store_root, size_t map_size, struct pst **out);
/* Commits what is pending synchronously, calls every waiter, frees. */
void pst_close(struct pst *s);
/* Commits everything pending now, in the calling (loop) thread, and calls
 * the waiters. For shutdown. Returns 0 or the commit error. */
int pst_flush_sync(struct pst *s);

/* Queue lookup; with create, allocates a new uninitialised queue (NULL only
 * on ENOMEM). */
struct pst_queue *pst_queue(struct pst *s, const char *group, const char *topic, int32_t qid,
                            bool create);
struct pst_queue *pst_first(struct pst *s);

/* Index of the entry for off, or -1. */
int pst_find(const struct pst_queue *q, int64_t off);
/* Inserts (or replaces) an entry and logs it. Returns 0 or -ENOMEM. */
int pst_put(struct pst *s, struct pst_queue *q, const struct pst_entry *e);
/* Logs the current value of entry i (after the caller changed it). */
int pst_update(struct pst *s, struct pst_queue *q, uint32_t i);
/* Removes entry i and logs it. */
int pst_del(struct pst *s, struct pst_queue *q, uint32_t i);
/* Sets and logs the pop offset. */
int pst_set_pop_off(struct pst *s, struct pst_queue *q, int64_t off);
/* Calls w->done once everything logged so far is durable. */
void pst_barrier(struct pst *s, struct pst_waiter *w);

/* Counters for logs and tests. */
uint64_t pst_commits(const struct pst *s);

#endif
