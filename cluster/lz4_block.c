/* See lz4_block.h. */
#include <lz4.h>

#include "lz4_block.h"

size_t tern_lz4_bound(size_t len)
{
    if (len < TERN_LZ4_MIN || len > TERN_LZ4_RAW_MAX)
        return 0;
    int b = LZ4_compressBound((int)len);
    return b > 0 ? (size_t)b : 0;
}

size_t tern_lz4_pack(const uint8_t *in, size_t len, uint8_t *out, size_t slack)
{
    size_t bound = tern_lz4_bound(len);
    if (!bound)
        return 0;
    int n = LZ4_compress_default((const char *)in, (char *)out, (int)len, (int)bound);
    if (n <= 0 || (size_t)n + slack >= len)
        return 0;
    return (size_t)n;
}

int tern_lz4_unpack(const uint8_t *in, size_t len, uint8_t *out, size_t n)
{
    if (len == 0 || len > TERN_LZ4_RAW_MAX || n == 0 || n > TERN_LZ4_RAW_MAX)
        return -1;
    int got = LZ4_decompress_safe((const char *)in, (char *)out, (int)len, (int)n);
    return got >= 0 && (size_t)got == n ? 0 : -1;
}
