/*
 * Transactional messages (RocketMQ's two-phase "half message" protocol).
 *
 * A send carrying TRAN_MSG=true is stored as a half message in
 * RMQ_SYS_TRANS_HALF_TOPIC queue 0 (REAL_TOPIC / REAL_QID keep where it was
 * going), so consumers of the real topic never see it. END_TRANSACTION (37)
 * commits (the half message is re-published to its real topic) or rolls
 * back; either way the decision is recorded as an op message in
 * RMQ_SYS_TRANS_OP_HALF_TOPIC (tag "d", body = the half message's queue
 * offset). A half message left undecided for transactionTimeOut is checked
 * with its producer group (CHECK_TRANSACTION_STATE, 39) every
 * transactionCheckInterval, at most transactionCheckMax times, each check
 * re-putting a copy with TRANSACTION_CHECK_TIMES counted up; then it is
 * discarded and logged.
 *
 * Decisions are remembered per transaction (the queue offset of the first
 * half message; copies name it in TRAN_PREPARED_QUEUE_OFFSET), so a
 * duplicate END_TRANSACTION, or a producer answering both its own end
 * request and a check, never commits twice. The check progress (half and op
 * queue offsets) is kept as consumer offsets of CID_SYS_RMQ_TRANS, and the
 * decisions still needed are rebuilt from the op queue at start, so a
 * restart neither loses nor re-commits.
 *
 * Threading: loop thread only. Ownership: tx_new allocates, tx_free
 * releases (after tx_stop).
 */
#ifndef RMQ_BROKER_TRANSACTION_H
#define RMQ_BROKER_TRANSACTION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "remoting.h"

#define TX_HALF_TOPIC "RMQ_SYS_TRANS_HALF_TOPIC"
#define TX_OP_TOPIC "RMQ_SYS_TRANS_OP_HALF_TOPIC"
#define TX_GROUP "CID_SYS_RMQ_TRANS"
#define TX_REMOVE_TAG "d"

struct broker;
struct tx;

/* Creates the context, the half / op topics if missing, and reloads the
 * decisions recorded since the persisted op offset. NULL on failure
 * (logged). */
struct tx *tx_new(struct broker *b);
void tx_free(struct tx *t);
/* Starts / stops the check timer. */
void tx_start(struct tx *t);
void tx_stop(struct tx *t);

/* True if a send is a transaction half message (TRAN_MSG=true, or the
 * prepared transaction type in sysflag). */
bool tx_is_prepared(const char *props, size_t len, int32_t sysflag);
/* Turns a send into a half message in place: appends REAL_TOPIC / REAL_QID
 * to props (cap bytes, *plen used), points *topic at the half topic, sets
 * *qid to 0 and clears the transaction bits of *sysflag. Returns 0 or
 * -ENOSPC (properties too long; nothing usable is left in props then). */
int tx_prepare_half(struct tx *t, char *props, size_t cap, size_t *plen, const char **topic,
                    int32_t *qid, int32_t *sysflag);

/* END_TRANSACTION (37). Answered only when not oneway. */
void tx_on_end(struct tx *t, rmt_conn *c, rmt_cmd *req);

#endif
