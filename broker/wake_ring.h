/*
 * Wake ring: a bounded, de-duplicating set of 64-bit keys (queue or topic
 * hashes) that store dispatch threads hand to the broker loop to say "a held
 * request under this key may now be answerable". Pull and pop long polling
 * both use it. A full ring only records an overflow, so the loop re-checks
 * everything it holds instead of losing a wake-up; no allocation ever.
 *
 * The struct is embedded by its owner (pull_ctx, pop_ctx) and initialised
 * with wr_init / released with wr_destroy; its fields are private to
 * wake_ring.c.
 */
#ifndef RMQ_WAKE_RING_H
#define RMQ_WAKE_RING_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#define WR_CAP 1024

struct wake_ring {
    pthread_mutex_t mu;
    uint64_t keys[WR_CAP];
    unsigned n;
    bool overflow;
};

void wr_init(struct wake_ring *r);
void wr_destroy(struct wake_ring *r);
/* Adds key unless it is already queued; a full ring marks overflow. Any thread. */
void wr_push(struct wake_ring *r, uint64_t key);
/* Moves the queued keys into out (room for WR_CAP) and empties the ring.
 * Returns how many; *overflow tells whether keys were dropped since the last drain. */
unsigned wr_drain(struct wake_ring *r, uint64_t out[WR_CAP], bool *overflow);

#endif
