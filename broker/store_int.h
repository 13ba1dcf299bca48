/*
 * Internal definition of struct store, shared by store.c (open/recovery,
 * put, get, dispatch, retention) and flush.c (commitlog group-commit flush,
 * consume-queue/index flush, checkpoint, housekeeping thread). Not part of
 * the public API.
 */
#ifndef RMQ_STORE_INT_H
#define RMQ_STORE_INT_H

#include <pthread.h>

#include "commitlog.h"
#include "consume_queue.h"
#include "index.h"
#include "store.h"

struct qent {
    struct qent *next;
    char *topic;
    size_t topic_len;
    uint32_t hash;
    int32_t qid;
    int64_t next_put;     /* put lock */
    struct cq *cq;        /* set under qlock (write) */
};

struct flush_waiter {
    int64_t end;
    int64_t deadline;     /* monotonic ms */
    store_flush_cb cb;
    void *ud;
};

struct store {
    struct store_config cfg;
    char *root, *cq_root, *delete_when, *host_str, *delay_str;
    struct msg_host store_host;
    int64_t delay_ms[64];
    int delay_n;
    int lock_fd, cp_fd;

    struct commitlog *cl;
    struct idx_service *idx;

    pthread_mutex_t put_lock;
    /* put lock: direct-mapped cache of queue entries for the put path, so a
     * put does not touch qlock (entries are only freed under the put lock,
     * which also clears this cache) */
    struct qent *put_cache[256];
    pthread_rwlock_t qlock;
    struct qent **qtab;
    size_t qcap, qcount;

    pthread_t disp_thr, flush_thr, svc_thr;
    int threads;          /* how many of the above run */
    int stopping;         /* atomic */

    pthread_mutex_t disp_mu;
    pthread_cond_t disp_cv;
    int disp_sleeping;    /* atomic: puts must signal disp_cv */
    int64_t reput;        /* atomic: dispatched up to here */
    int64_t logics_ts;    /* atomic: store time of the last dispatched record */

    pthread_mutex_t fw_mu;
    pthread_cond_t fw_cv;
    struct flush_waiter *fw;
    size_t fw_head, fw_len, fw_cap;
    int64_t physic_ts;    /* atomic: store time known flushed in the log */

    pthread_mutex_t svc_mu;
    pthread_cond_t svc_cv;

    int writable;         /* atomic */
    double disk_ratio;    /* guarded by svc_mu */
    int64_t last_clean_min;

    pthread_mutex_t cp_mu;
    int64_t cp_physic, cp_logics, cp_index;

    uint64_t put_count, put_bytes, get_count; /* atomics */
    int64_t slave_read_gap;   /* bytes behind the log's end that suggest a slave */
    uint64_t tps_last_count;
    int64_t tps_last_ms;
    double tps;
};

int64_t store_now(struct store *s);
int64_t store_mono_ms(void);

/* flush.c */
int flush_start(struct store *s);
void flush_stop(struct store *s);
/* Fires FLUSH_DISK_TIMEOUT for waiters past their deadline (dispatch thread). */
void flush_expire_waiters(struct store *s);
/* Flushes consume queues and index, then writes the checkpoint. */
int flush_logics(struct store *s, int thorough);
/* Consume-queue bytes kept mapped behind each queue's end (0 when the
 * commitlog keeps everything mapped: residency off). */
static inline size_t store_cq_keep(const struct store *s)
{
    return s->cfg.commitlog_mapped_trail_bytes ? (size_t)64 << 10 : 0;
}
int checkpoint_write(struct store *s);

/* store.c, used by the housekeeping thread */
int store_cleanup_pass(struct store *s, int manual);

#endif
