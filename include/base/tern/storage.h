/* tern storage primitives: CRC32C, bounded byte writer / reader, and the
 * snapshot container (docs/disk-format.md). The writer is also tern's one
 * growable byte buffer (peer batches, Raft entries, metrics text, command
 * lists): see tern_wbuf_try_reserve() for buffers that live long.
 *
 * The container is a fixed header { magic "TERNSNAP", u16 version, u16 flags,
 * u32 reserved, u64 body length, u32 CRC32C(body) } followed by the body. What
 * the body holds is its producer's business (the FSM writes its state there);
 * this module only frames it and verifies the frame before anyone parses it.
 *
 * Writer and reader latch their first error, so a producer or parser writes a
 * sequence of calls and checks once at the end, and can never write or read
 * past a bound. Integers are little-endian.
 *
 * Pure C: no I/O, no globals. The writer owns its buffer until the caller takes
 * it (tern_wbuf_take); the reader only borrows its input.
 */
#ifndef TERN_STORAGE_H
#define TERN_STORAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tern/log.h" /* TERN_PRINTF */

/* CRC32C (Castagnoli, reflected polynomial 0x82F63B78), as used by iSCSI and
 * ext4. Start with crc = 0; feed pieces by passing the previous result.
 * tern_crc32c(0, "123456789", 9) == 0xE3069283. */
uint32_t tern_crc32c(uint32_t crc, const void *buf, size_t len);

/* --- bounded writer --- */
struct tern_wbuf {
    uint8_t *buf;
    size_t len, cap;
    int err; /* first error (TERN_ENOMEM, TERN_ETOOBIG); later puts do nothing */
};

void tern_wbuf_init(struct tern_wbuf *w);
void tern_wbuf_free(struct tern_wbuf *w);
void tern_wbuf_put_u8(struct tern_wbuf *w, uint8_t v);
void tern_wbuf_put_u16(struct tern_wbuf *w, uint16_t v);
void tern_wbuf_put_u32(struct tern_wbuf *w, uint32_t v);
void tern_wbuf_put_u64(struct tern_wbuf *w, uint64_t v);
void tern_wbuf_put_bytes(struct tern_wbuf *w, const void *p, size_t n);
/* u32 length, then the bytes (TERN_ETOOBIG beyond UINT32_MAX). */
void tern_wbuf_put_lbytes(struct tern_wbuf *w, const void *p, size_t n);
/* Overwrites 4 or 8 bytes already written at pos (for length / checksum fields
 * filled in at the end). Ignored past len. */
void tern_wbuf_patch_u32(struct tern_wbuf *w, size_t pos, uint32_t v);
void tern_wbuf_patch_u64(struct tern_wbuf *w, size_t pos, uint64_t v);
/* Hands the buffer to the caller (who frees it) and resets w. Returns w->err;
 * on error nothing is handed over and w is freed. */
int tern_wbuf_take(struct tern_wbuf *w, uint8_t **out, size_t *out_len);
/* n more bytes at the end, uninitialised, for the caller to fill (formats the
 * puts do not cover: big-endian fields, a codec writing in place); NULL once
 * an error is latched. */
uint8_t *tern_wbuf_append(struct tern_wbuf *w, size_t n);
/* Appends printf output; a NUL follows the text in the buffer (not counted in
 * len), so a text buffer is a C string. TERN_ENOMEM if vsnprintf fails. */
void tern_wbuf_printf(struct tern_wbuf *w, const char *fmt, ...) TERN_PRINTF(2, 3);
/* Makes room for n more bytes (capacity doubling from 256) without latching
 * an error: TERN_OK, or TERN_ENOMEM / TERN_ETOOBIG with w unchanged. For a
 * buffer that outlives one failure: reserve first, then the puts cannot fail.
 * Also to size a new buffer up front. */
int tern_wbuf_try_reserve(struct tern_wbuf *w, size_t n);
/* Empties w (len 0, error cleared) and keeps its memory. */
void tern_wbuf_reset(struct tern_wbuf *w);

/* --- bounded reader --- */
struct tern_rbuf {
    const uint8_t *buf;
    size_t len, pos;
    int err; /* first error (TERN_ECORRUPT unless set otherwise); gets return 0 */
};

void tern_rbuf_init(struct tern_rbuf *r, const uint8_t *buf, size_t len);
uint8_t tern_rbuf_get_u8(struct tern_rbuf *r);
uint16_t tern_rbuf_get_u16(struct tern_rbuf *r);
uint32_t tern_rbuf_get_u32(struct tern_rbuf *r);
uint64_t tern_rbuf_get_u64(struct tern_rbuf *r);
/* n bytes in place, or NULL (error latched) when fewer remain. */
const uint8_t *tern_rbuf_get_bytes(struct tern_rbuf *r, size_t n);
/* u32 length then bytes; NULL with *n = 0 on error. A zero length gives a
 * non-NULL pointer. */
const uint8_t *tern_rbuf_get_lbytes(struct tern_rbuf *r, uint32_t *n);
size_t tern_rbuf_left(const struct tern_rbuf *r);
/* Latches err (if none yet): for semantic checks by the parser. */
void tern_rbuf_fail(struct tern_rbuf *r, int err);
/* A count read from the input that must fit: each item takes at least
 * min_item bytes, so count * min_item <= bytes left. Latches TERN_ECORRUPT and
 * returns false otherwise, before anything is allocated for count items. */
bool tern_rbuf_count_ok(struct tern_rbuf *r, uint64_t count, size_t min_item);

/* --- snapshot container --- */
#define TERN_SNAP_MAGIC "TERNSNAP"
/* Written: 3 (cluster id section). Read: 1 to 3 (docs/disk-format.md). */
#define TERN_SNAP_VERSION 3
#define TERN_SNAP_VERSION_MIN 1
#define TERN_SNAP_HEADER_SIZE 28u

/* Starts a snapshot in an empty writer: writes a header with length and
 * checksum still zero. The body follows through the writer. */
void tern_snap_begin(struct tern_wbuf *w);
/* Fills in body length and checksum. Returns w->err. */
int tern_snap_finish(struct tern_wbuf *w);

/* Verifies a snapshot's frame (magic, version, flags, reserved, length, CRC)
 * and returns its body. TERN_EUNSUPPORTED for an unknown version or flag,
 * TERN_ECORRUPT for anything else wrong; errmsg (TERN_ERRMSG_SIZE, may be NULL)
 * says what. */
int tern_snap_open(const uint8_t *buf, size_t len, const uint8_t **body, size_t *body_len,
                   char *errmsg);
/* The same, also giving the body's format version (TERN_SNAP_VERSION_MIN to
 * TERN_SNAP_VERSION), for a reader that knows several. */
int tern_snap_open_version(const uint8_t *buf, size_t len, const uint8_t **body,
                           size_t *body_len, uint16_t *version, char *errmsg);

#endif
