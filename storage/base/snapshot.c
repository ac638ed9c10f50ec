/* Snapshot container: a fixed, checksummed header around an opaque body
 * (docs/disk-format.md).
 *
 * The frame is verified in full (magic, version, flags, reserved, exact length,
 * CRC32C of the body) before a single body byte is handed to a parser, so a
 * torn or bit-rotted file is rejected as a whole rather than half-applied. */
#include <assert.h>
#include <stdio.h>
#include <string.h>

#include "tern/error.h"
#include "tern/storage.h"

#define OFF_VERSION 8u
#define OFF_FLAGS 10u
#define OFF_RESERVED 12u
#define OFF_LENGTH 16u
#define OFF_CRC 24u

static_assert(sizeof(TERN_SNAP_MAGIC) - 1 == 8, "magic is 8 bytes");
static_assert(TERN_SNAP_HEADER_SIZE == 8 + 2 + 2 + 4 + 8 + 4, "header layout");
static_assert(OFF_CRC + 4 == TERN_SNAP_HEADER_SIZE, "crc is the last header field");

void tern_snap_begin(struct tern_wbuf *w)
{
    tern_wbuf_put_bytes(w, TERN_SNAP_MAGIC, 8);
    tern_wbuf_put_u16(w, TERN_SNAP_VERSION);
    tern_wbuf_put_u16(w, 0); /* flags: none defined */
    tern_wbuf_put_u32(w, 0); /* reserved */
    tern_wbuf_put_u64(w, 0); /* body length, patched by finish */
    tern_wbuf_put_u32(w, 0); /* body CRC32C, patched by finish */
}

int tern_snap_finish(struct tern_wbuf *w)
{
    if (w->err)
        return w->err;
    assert(w->len >= TERN_SNAP_HEADER_SIZE);
    size_t body = w->len - TERN_SNAP_HEADER_SIZE;
    tern_wbuf_patch_u64(w, OFF_LENGTH, body);
    tern_wbuf_patch_u32(w, OFF_CRC, tern_crc32c(0, w->buf + TERN_SNAP_HEADER_SIZE, body));
    return w->err;
}

static int open_fail(char *errmsg, int err, const char *what)
{
    if (errmsg)
        snprintf(errmsg, TERN_ERRMSG_SIZE, "snapshot: %s", what);
    return err;
}

int tern_snap_open(const uint8_t *buf, size_t len, const uint8_t **body, size_t *body_len,
                   char *errmsg)
{
    uint16_t version;
    return tern_snap_open_version(buf, len, body, body_len, &version, errmsg);
}

int tern_snap_open_version(const uint8_t *buf, size_t len, const uint8_t **body,
                           size_t *body_len, uint16_t *version_out, char *errmsg)
{
    struct tern_rbuf r;
    tern_rbuf_init(&r, buf, len);
    const uint8_t *magic = tern_rbuf_get_bytes(&r, 8);
    if (!magic || memcmp(magic, TERN_SNAP_MAGIC, 8) != 0)
        return open_fail(errmsg, TERN_ECORRUPT, "bad magic");
    uint16_t version = tern_rbuf_get_u16(&r);
    uint16_t flags = tern_rbuf_get_u16(&r);
    uint32_t reserved = tern_rbuf_get_u32(&r);
    uint64_t n = tern_rbuf_get_u64(&r);
    uint32_t crc = tern_rbuf_get_u32(&r);
    if (r.err)
        return open_fail(errmsg, TERN_ECORRUPT, "truncated header");
    if (version < TERN_SNAP_VERSION_MIN || version > TERN_SNAP_VERSION)
        return open_fail(errmsg, TERN_EUNSUPPORTED, "unknown format version");
    if (flags != 0)
        return open_fail(errmsg, TERN_EUNSUPPORTED, "unknown flags");
    if (reserved != 0)
        return open_fail(errmsg, TERN_ECORRUPT, "reserved field not zero");
    if (n != tern_rbuf_left(&r))
        return open_fail(errmsg, TERN_ECORRUPT, "body length mismatch");
    const uint8_t *b = buf + TERN_SNAP_HEADER_SIZE;
    if (tern_crc32c(0, b, (size_t)n) != crc)
        return open_fail(errmsg, TERN_ECORRUPT, "checksum mismatch");
    *body = b;
    *body_len = (size_t)n;
    *version_out = version;
    return TERN_OK;
}
