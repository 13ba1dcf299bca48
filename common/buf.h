/*
 * Growable byte buffer with big-endian helpers. Used for frame encoding and
 * connection I/O. The buffer owns its storage; buf_free releases it. Capacity
 * is kept across buf_reset so steady-state use does not allocate.
 */
#ifndef RMQ_BUF_H
#define RMQ_BUF_H

#include <stddef.h>
#include <stdint.h>

struct buf {
    uint8_t *data;
    size_t len;
    size_t cap;
};

#define BUF_INIT { NULL, 0, 0 }

void buf_free(struct buf *b);
static inline void buf_reset(struct buf *b) { b->len = 0; }
/* Ensures room for `extra` more bytes. Returns 0 or -ENOMEM. */
int buf_reserve(struct buf *b, size_t extra);
int buf_append(struct buf *b, const void *p, size_t n);
int buf_append_u8(struct buf *b, uint8_t v);
int buf_append_u16be(struct buf *b, uint16_t v);
int buf_append_u32be(struct buf *b, uint32_t v);
int buf_append_u64be(struct buf *b, uint64_t v);
int buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Removes the first n bytes. */
void buf_consume(struct buf *b, size_t n);

static inline uint16_t rd_u16be(const uint8_t *p) { return (uint16_t)((p[0] << 8) | p[1]); }
static inline uint32_t rd_u32be(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
static inline uint64_t rd_u64be(const uint8_t *p)
{
    return ((uint64_t)rd_u32be(p) << 32) | rd_u32be(p + 4);
}
static inline void wr_u16be(uint8_t *p, uint16_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }
static inline void wr_u32be(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}
static inline void wr_u64be(uint8_t *p, uint64_t v)
{
    wr_u32be(p, (uint32_t)(v >> 32));
    wr_u32be(p + 4, (uint32_t)v);
}

#endif
