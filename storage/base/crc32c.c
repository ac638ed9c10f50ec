/* CRC32C (Castagnoli), table-driven, one byte at a time.
 *
 * Why Castagnoli and not zlib's CRC32: better error detection for the lengths we
 * checksum, and hardware support (SSE4.2, ARMv8) if it ever shows up in a
 * profile. Why one table byte-at-a-time: snapshots are written rarely and the
 * table is 1 KiB of constants, computed at compile time so there is no global
 * mutable state and no init call. */
#include <stddef.h>
#include <stdint.h>

#include "tern/storage.h"

#define POLY 0x82F63B78u /* reflected 0x1EDC6F41 */

/* One table entry: the CRC of byte b, shifted through 8 rounds. */
#define R1(c) (((c) >> 1) ^ (((c)&1u) ? POLY : 0u))
#define R8(c) R1(R1(R1(R1(R1(R1(R1(R1((uint32_t)(c)))))))))
#define T4(b) R8(b), R8((b) + 1), R8((b) + 2), R8((b) + 3)
#define T16(b) T4(b), T4((b) + 4), T4((b) + 8), T4((b) + 12)
#define T64(b) T16(b), T16((b) + 16), T16((b) + 32), T16((b) + 48)

static const uint32_t crc_table[256] = {T64(0), T64(64), T64(128), T64(192)};

uint32_t tern_crc32c(uint32_t crc, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    crc = ~crc;
    for (size_t i = 0; i < len; i++)
        crc = crc_table[(crc ^ p[i]) & 0xFFu] ^ (crc >> 8);
    return ~crc;
}
