/*
 * Admin allow-list: which client addresses may send admin requests (topic and
 * group changes, permission changes, offset resets, deletions). A list is
 * parsed once at start from a config string of IPv4/IPv6 addresses and CIDR
 * blocks separated by ';' or ','. Ownership: acl_parse allocates, acl_free
 * releases.
 */
#ifndef RMQ_ACL_H
#define RMQ_ACL_H

#include <stdbool.h>
#include <stddef.h>

typedef struct acl acl;

/* Parses e.g. "127.0.0.1;::1;10.0.0.0/8". An empty string allows nobody.
 * Returns NULL with a reason naming the bad entry in err. */
acl *acl_parse(const char *spec, char *err, size_t errlen);
void acl_free(acl *a);
/* peer is "ip:port" (or "[v6]:port", or a bare ip) as rmt_conn_peer gives. */
bool acl_allows(const acl *a, const char *peer);

#endif
