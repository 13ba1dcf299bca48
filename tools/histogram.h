/*
 * HDR-style log-linear histogram for latencies: values are bucketed by their
 * power of two and, inside it, into HIST_SUB/2 linear sub-buckets, so every
 * recorded value is kept to within 2/HIST_SUB (under 2%) relative error over
 * the whole int64 range with a fixed 64 x HIST_SUB counter array. Recording
 * is O(1) and allocation-free; no sample is stored.
 *
 * A histogram is a plain struct (about 64 KiB) owned by the caller; one
 * writer at a time (give each thread its own and merge them).
 */
#ifndef RMQ_TOOLS_HISTOGRAM_H
#define RMQ_TOOLS_HISTOGRAM_H

#include <stdint.h>

#define HIST_SUB_BITS 7
#define HIST_SUB (1 << HIST_SUB_BITS)
#define HIST_BUCKETS (64 - HIST_SUB_BITS + 1)

struct hist {
    uint64_t count;
    int64_t min, max;
    double sum;
    uint64_t c[HIST_BUCKETS][HIST_SUB];
};

void hist_init(struct hist *h);
/* Negative values are recorded as 0. */
void hist_record(struct hist *h, int64_t v);
void hist_merge(struct hist *dst, const struct hist *src);
/* Value at percentile p (0..100): the upper bound of the bucket holding the
 * p-th value, capped at max; 0 when empty. */
int64_t hist_percentile(const struct hist *h, double p);
double hist_mean(const struct hist *h);

#endif
