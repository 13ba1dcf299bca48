/* Admin allow-list matching by address prefix; see acl.h. */
#include "acl.h"

#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct acl_entry {
    int family;
    uint8_t addr[16];
    int prefix;
};

struct acl {
    struct acl_entry *e;
    size_t n;
};

static int parse_ip(const char *s, int *family, uint8_t out[16])
{
    memset(out, 0, 16);
    if (inet_pton(AF_INET, s, out) == 1) {
        *family = AF_INET;
        return 0;
    }
    if (inet_pton(AF_INET6, s, out) == 1) {
        *family = AF_INET6;
        return 0;
    }
    return -1;
}

acl *acl_parse(const char *spec, char *err, size_t errlen)
{
    acl *a = calloc(1, sizeof *a);
    char *copy = strdup(spec ? spec : "");
    if (!a || !copy) {
        free(a);
        free(copy);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    char *save = NULL;
    for (char *tok = strtok_r(copy, ";, ", &save); tok; tok = strtok_r(NULL, ";, ", &save)) {
        struct acl_entry ent = { 0 };
        char *slash = strchr(tok, '/');
        if (slash)
            *slash = 0;
        if (parse_ip(tok, &ent.family, ent.addr)) {
            snprintf(err, errlen, "'%s' is not an IP address", tok);
            goto fail;
        }
        int max = ent.family == AF_INET ? 32 : 128;
        ent.prefix = max;
        if (slash) {
            char *end;
            long p = strtol(slash + 1, &end, 10);
            if (*end || end == slash + 1 || p < 0 || p > max) {
                snprintf(err, errlen, "'%s/%s' has a bad prefix length", tok, slash + 1);
                goto fail;
            }
            ent.prefix = (int)p;
        }
        struct acl_entry *ne = realloc(a->e, (a->n + 1) * sizeof *ne);
        if (!ne) {
            snprintf(err, errlen, "out of memory");
            goto fail;
        }
        a->e = ne;
        a->e[a->n++] = ent;
    }
    free(copy);
    return a;
fail:
    free(copy);
    acl_free(a);
    return NULL;
}

void acl_free(acl *a)
{
    if (!a)
        return;
    free(a->e);
    free(a);
}

static bool prefix_match(const uint8_t *x, const uint8_t *y, int bits)
{
    int bytes = bits / 8, rest = bits % 8;
    if (memcmp(x, y, (size_t)bytes) != 0)
        return false;
    if (rest == 0)
        return true;
    uint8_t mask = (uint8_t)(0xff << (8 - rest));
    return (x[bytes] & mask) == (y[bytes] & mask);
}

bool acl_allows(const acl *a, const char *peer)
{
    char host[64];
    const char *start = peer, *end = NULL;
    if (peer[0] == '[') {
        start = peer + 1;
        end = strchr(start, ']');
    } else {
        end = strrchr(peer, ':');
        /* a bare IPv6 address has several colons and no port */
        if (end && strchr(peer, ':') != end)
            end = NULL;
    }
    size_t n = end ? (size_t)(end - start) : strlen(start);
    if (n >= sizeof host)
        return false;
    memcpy(host, start, n);
    host[n] = 0;
    int family;
    uint8_t addr[16];
    if (parse_ip(host, &family, addr))
        return false;
    /* IPv4-mapped IPv6 peers match IPv4 entries. */
    static const uint8_t mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
    if (family == AF_INET6 && memcmp(addr, mapped, 12) == 0) {
        memmove(addr, addr + 12, 4);
        memset(addr + 4, 0, 12);
        family = AF_INET;
    }
    for (size_t i = 0; i < a->n; i++)
        if (a->e[i].family == family && prefix_match(a->e[i].addr, addr, a->e[i].prefix))
            return true;
    return false;
}
