/*
 * The nameserver's request processor: turns RocketMQ remoting requests into
 * route-table operations and answers them (RocketMQ's DefaultRequestProcessor).
 * Admin requests are answered NO_PERMISSION unless the peer is on the admin
 * allow-list. Ownership: ns_proc_create borrows the route table and the acl
 * (both must outlive the processor); ns_proc_free releases the processor only.
 */
#ifndef RMQ_NS_PROCESSOR_H
#define RMQ_NS_PROCESSOR_H

#include "acl.h"
#include "remoting.h"
#include "route_table.h"

struct ns_proc;

struct ns_proc *ns_proc_create(struct ns_route_table *rt, const acl *admin);
void ns_proc_free(struct ns_proc *p);
/* rmt_request_fn: pass the processor as ud. */
void ns_proc_on_request(rmt_conn *conn, rmt_cmd *req, void *ud);
/* rmt_close_fn: evicts brokers registered over the closed connection. */
void ns_proc_on_close(rmt_conn *conn, void *ud);

#endif
