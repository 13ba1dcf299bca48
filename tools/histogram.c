/*
 * Log-linear latency histogram (see histogram.h). Bucket b >= 1 covers
 * [2^(b-1+SUB_BITS), 2^(b+SUB_BITS)) in steps of 2^b, using sub-buckets
 * HIST_SUB/2..HIST_SUB-1 (the layout of HdrHistogram); bucket 0 holds
 * 0..HIST_SUB-1 exactly.
 */
#include "histogram.h"

#include <string.h>

void hist_init(struct hist *h)
{
    memset(h, 0, sizeof *h);
    h->min = INT64_MAX;
}

static void index_of(uint64_t v, int *b, int *s)
{
    if (v < HIST_SUB) {
        *b = 0;
        *s = (int)v;
        return;
    }
    int msb = 63 - __builtin_clzll(v);
    int shift = msb - HIST_SUB_BITS + 1;
    *b = shift;
    /* v >> shift lies in [HIST_SUB/2, HIST_SUB): the upper half of the row */
    *s = (int)(v >> shift);
}

/* Largest value that maps to bucket b, sub-bucket s. */
static uint64_t upper_of(int b, int s)
{
    if (b == 0)
        return (uint64_t)s;
    return (((uint64_t)s + 1) << b) - 1;
}

void hist_record(struct hist *h, int64_t v)
{
    if (v < 0)
        v = 0;
    int b, s;
    index_of((uint64_t)v, &b, &s);
    h->c[b][s]++;
    h->count++;
    h->sum += (double)v;
    if (v < h->min)
        h->min = v;
    if (v > h->max)
        h->max = v;
}

void hist_merge(struct hist *dst, const struct hist *src)
{
    if (!src->count)
        return;
    for (int b = 0; b < HIST_BUCKETS; b++)
        for (int s = 0; s < HIST_SUB; s++)
            dst->c[b][s] += src->c[b][s];
    dst->count += src->count;
    dst->sum += src->sum;
    if (src->min < dst->min)
        dst->min = src->min;
    if (src->max > dst->max)
        dst->max = src->max;
}

int64_t hist_percentile(const struct hist *h, double p)
{
    if (!h->count)
        return 0;
    if (p <= 0)
        return h->min;
    uint64_t rank = (uint64_t)((p / 100.0) * (double)h->count + 0.5);
    if (rank < 1)
        rank = 1;
    if (rank > h->count)
        rank = h->count;
    uint64_t seen = 0;
    for (int b = 0; b < HIST_BUCKETS; b++)
        for (int s = 0; s < HIST_SUB; s++) {
            seen += h->c[b][s];
            if (seen >= rank) {
                int64_t u = (int64_t)upper_of(b, s);
                return u > h->max ? h->max : (u < h->min ? h->min : u);
            }
        }
    return h->max;
}

double hist_mean(const struct hist *h)
{
    return h->count ? h->sum / (double)h->count : 0.0;
}
