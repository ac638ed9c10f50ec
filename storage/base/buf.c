/* Bounded byte writer and reader (tern/storage.h).
 *
 * Both latch the first error so that a serializer is a straight list of puts or
 * gets with one check at the end, and neither can run past its bound: the
 * writer grows with realloc (reporting ENOMEM once), the reader returns zeros
 * once anything is missing. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tern/error.h"
#include "tern/storage.h"

void tern_wbuf_init(struct tern_wbuf *w)
{
    *w = (struct tern_wbuf){0};
}

void tern_wbuf_free(struct tern_wbuf *w)
{
    free(w->buf);
    tern_wbuf_init(w);
}

int tern_wbuf_try_reserve(struct tern_wbuf *w, size_t n)
{
    if (n > SIZE_MAX / 2 - w->len)
        return TERN_ETOOBIG;
    if (w->len + n <= w->cap)
        return TERN_OK;
    size_t cap = w->cap ? w->cap : 256;
    while (cap < w->len + n)
        cap *= 2;
    uint8_t *p = realloc(w->buf, cap);
    if (!p)
        return TERN_ENOMEM;
    w->buf = p;
    w->cap = cap;
    return TERN_OK;
}

static bool wbuf_reserve(struct tern_wbuf *w, size_t n)
{
    if (w->err)
        return false;
    w->err = tern_wbuf_try_reserve(w, n);
    return w->err == TERN_OK;
}

void tern_wbuf_reset(struct tern_wbuf *w)
{
    w->len = 0;
    w->err = 0;
}

uint8_t *tern_wbuf_append(struct tern_wbuf *w, size_t n)
{
    if (!wbuf_reserve(w, n))
        return NULL;
    uint8_t *p = w->buf + w->len;
    w->len += n;
    return p;
}

void tern_wbuf_printf(struct tern_wbuf *w, const char *fmt, ...)
{
    for (int attempt = 0; attempt < 2 && !w->err; attempt++) {
        va_list ap;
        va_start(ap, fmt);
        size_t room = w->cap - w->len;
        int n = vsnprintf(room ? (char *)w->buf + w->len : NULL, room, fmt, ap);
        va_end(ap);
        if (n < 0) {
            w->err = TERN_ENOMEM;
            return;
        }
        if ((size_t)n < room) {
            w->len += (size_t)n;
            return;
        }
        if (!wbuf_reserve(w, (size_t)n + 1)) /* and the NUL */
            return;
    }
}

static void put_le(struct tern_wbuf *w, uint64_t v, size_t n)
{
    if (!wbuf_reserve(w, n))
        return;
    for (size_t i = 0; i < n; i++)
        w->buf[w->len++] = (uint8_t)(v >> (8 * i));
}

void tern_wbuf_put_u8(struct tern_wbuf *w, uint8_t v)
{
    put_le(w, v, 1);
}

void tern_wbuf_put_u16(struct tern_wbuf *w, uint16_t v)
{
    put_le(w, v, 2);
}

void tern_wbuf_put_u32(struct tern_wbuf *w, uint32_t v)
{
    put_le(w, v, 4);
}

void tern_wbuf_put_u64(struct tern_wbuf *w, uint64_t v)
{
    put_le(w, v, 8);
}

void tern_wbuf_put_bytes(struct tern_wbuf *w, const void *p, size_t n)
{
    if (n == 0 || !wbuf_reserve(w, n))
        return;
    memcpy(w->buf + w->len, p, n);
    w->len += n;
}

void tern_wbuf_put_lbytes(struct tern_wbuf *w, const void *p, size_t n)
{
    if (n > UINT32_MAX) {
        if (!w->err)
            w->err = TERN_ETOOBIG;
        return;
    }
    tern_wbuf_put_u32(w, (uint32_t)n);
    tern_wbuf_put_bytes(w, p, n);
}

static void patch_le(struct tern_wbuf *w, size_t pos, uint64_t v, size_t n)
{
    if (w->err || pos > w->len || n > w->len - pos)
        return;
    for (size_t i = 0; i < n; i++)
        w->buf[pos + i] = (uint8_t)(v >> (8 * i));
}

void tern_wbuf_patch_u32(struct tern_wbuf *w, size_t pos, uint32_t v)
{
    patch_le(w, pos, v, 4);
}

void tern_wbuf_patch_u64(struct tern_wbuf *w, size_t pos, uint64_t v)
{
    patch_le(w, pos, v, 8);
}

int tern_wbuf_take(struct tern_wbuf *w, uint8_t **out, size_t *out_len)
{
    int err = w->err;
    if (err) {
        tern_wbuf_free(w);
        return err;
    }
    *out = w->buf;
    *out_len = w->len;
    tern_wbuf_init(w);
    return TERN_OK;
}

void tern_rbuf_init(struct tern_rbuf *r, const uint8_t *buf, size_t len)
{
    *r = (struct tern_rbuf){.buf = buf, .len = buf ? len : 0};
}

void tern_rbuf_fail(struct tern_rbuf *r, int err)
{
    if (!r->err)
        r->err = err;
}

size_t tern_rbuf_left(const struct tern_rbuf *r)
{
    return r->err ? 0 : r->len - r->pos;
}

const uint8_t *tern_rbuf_get_bytes(struct tern_rbuf *r, size_t n)
{
    if (r->err)
        return NULL;
    if (n > r->len - r->pos) {
        tern_rbuf_fail(r, TERN_ECORRUPT);
        return NULL;
    }
    const uint8_t *p = r->buf + r->pos;
    r->pos += n;
    return p;
}

static uint64_t get_le(struct tern_rbuf *r, size_t n)
{
    const uint8_t *p = tern_rbuf_get_bytes(r, n);
    uint64_t v = 0;
    for (size_t i = 0; p && i < n; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

uint8_t tern_rbuf_get_u8(struct tern_rbuf *r)
{
    return (uint8_t)get_le(r, 1);
}

uint16_t tern_rbuf_get_u16(struct tern_rbuf *r)
{
    return (uint16_t)get_le(r, 2);
}

uint32_t tern_rbuf_get_u32(struct tern_rbuf *r)
{
    return (uint32_t)get_le(r, 4);
}

uint64_t tern_rbuf_get_u64(struct tern_rbuf *r)
{
    return get_le(r, 8);
}

const uint8_t *tern_rbuf_get_lbytes(struct tern_rbuf *r, uint32_t *n)
{
    uint32_t len = tern_rbuf_get_u32(r);
    const uint8_t *p = tern_rbuf_get_bytes(r, len);
    *n = p ? len : 0;
    return p;
}

bool tern_rbuf_count_ok(struct tern_rbuf *r, uint64_t count, size_t min_item)
{
    if (r->err)
        return false;
    if (min_item == 0)
        min_item = 1;
    if (count > (r->len - r->pos) / min_item) {
        tern_rbuf_fail(r, TERN_ECORRUPT);
        return false;
    }
    return true;
}
