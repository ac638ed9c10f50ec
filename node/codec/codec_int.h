/* Internals shared by the codec source files (node/codec/codec*.c). Not a public API. */
#ifndef TERN_CODEC_INT_H
#define TERN_CODEC_INT_H

#include <stdint.h>
#include <string.h>

#include "tern/codec.h"

/* A bounded cursor over one packet being decoded. Every read checks `end`, so a
 * lying length can never read past the frame. */
struct codec_rd {
    const uint8_t *b;
    uint32_t pos;
    uint32_t end;
    struct tern_codec_error *err;
};

/* Property sets are chosen by packet type; index 0 stands for the will
 * properties inside CONNECT, which have their own set. */
#define CODEC_WILL 0

int codec_fail(struct codec_rd *r, int code, uint8_t reason, const char *msg);
int codec_rd_u8(struct codec_rd *r, uint8_t *v);
int codec_rd_u16(struct codec_rd *r, uint16_t *v);
int codec_rd_bin(struct codec_rd *r, struct tern_bytes *v);
int codec_rd_str(struct codec_rd *r, struct tern_bytes *v);

/* Reads a property block (length prefix included) allowed for `kind`. */
int codec_rd_props(struct codec_rd *r, unsigned kind, struct tern_props *p);

/* Topic checks. A name has no wildcards and is not empty. A filter has '#' only
 * as the whole last level and '+' only as whole levels; "$share/G/F" needs a
 * non-empty G without wildcards and a valid F. */
int codec_topic_name_ok(const uint8_t *s, uint32_t len);
int codec_filter_ok(const uint8_t *s, uint32_t len, int *shared);

/* Property block size (without its length prefix), or SIZE_MAX if some value
 * cannot be encoded (string too long, sub id out of range). */
size_t codec_props_measure(const struct tern_props *p);
/* Writes the property block content measured above; returns the end. */
uint8_t *codec_props_write(uint8_t *w, const struct tern_props *p);

static inline uint8_t *codec_put_u16(uint8_t *w, uint32_t v)
{
    w[0] = (uint8_t)(v >> 8);
    w[1] = (uint8_t)v;
    return w + 2;
}

static inline uint8_t *codec_put_bytes(uint8_t *w, const uint8_t *s, size_t n)
{
    if (n) { /* memcpy from a NULL empty range is undefined */
        memcpy(w, s, n);
    }
    return w + n;
}

static inline uint8_t *codec_put_str(uint8_t *w, struct tern_bytes s)
{
    return codec_put_bytes(codec_put_u16(w, s.len), s.ptr, s.len);
}

#endif
