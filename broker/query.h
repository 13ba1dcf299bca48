/*
 * Consumer-offset and message-query requests (RocketMQ
 * ConsumerManageProcessor and QueryMessageProcessor, plus the offset
 * look-ups of AdminBrokerProcessor that clients use): QUERY_CONSUMER_OFFSET,
 * UPDATE_CONSUMER_OFFSET, GET_MAX_OFFSET, GET_MIN_OFFSET,
 * SEARCH_OFFSET_BY_TIMESTAMP, GET_EARLIEST_MSG_STORETIME, VIEW_MESSAGE_BY_ID
 * and QUERY_MESSAGE (by key, or by unique id). Stateless: every call reads
 * the store and metadata of struct broker.
 */
#ifndef RMQ_BROKER_QUERY_H
#define RMQ_BROKER_QUERY_H

#include <stdbool.h>

#include "remoting.h"

struct broker;

/* Handles req if its code belongs here; returns false otherwise. */
bool qry_on_request(struct broker *b, rmt_conn *c, rmt_cmd *req);

#endif
