/*
 * Wake ring (wake_ring.h): one mutex around a small array. The linear
 * duplicate check is cheap because the loop drains the ring on every
 * wake-up, so it rarely holds more than a few keys.
 */
#include "wake_ring.h"

#include <string.h>

void wr_init(struct wake_ring *r)
{
    pthread_mutex_init(&r->mu, NULL);
    r->n = 0;
    r->overflow = false;
}

void wr_destroy(struct wake_ring *r) { pthread_mutex_destroy(&r->mu); }

void wr_push(struct wake_ring *r, uint64_t key)
{
    pthread_mutex_lock(&r->mu);
    bool dup = false;
    for (unsigned i = 0; i < r->n && !dup; i++)
        dup = r->keys[i] == key;
    if (!dup) {
        if (r->n < WR_CAP)
            r->keys[r->n++] = key;
        else
            r->overflow = true;
    }
    pthread_mutex_unlock(&r->mu);
}

unsigned wr_drain(struct wake_ring *r, uint64_t out[WR_CAP], bool *overflow)
{
    pthread_mutex_lock(&r->mu);
    unsigned n = r->n;
    *overflow = r->overflow;
    memcpy(out, r->keys, n * sizeof out[0]);
    r->n = 0;
    r->overflow = false;
    pthread_mutex_unlock(&r->mu);
    return n;
}
