/* SipHash-2-4 (Aumasson and Bernstein), the keyed hash of every table whose keys
 * a client chooses (client ids, topics, source addresses), so chosen keys cannot
 * pile into one bucket without knowing the key (tern/siphash.h). */
#include "tern/siphash.h"

#include <sys/random.h>
#include <sys/types.h>
#include <time.h>

#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                                         \
    do {                                                                                 \
        v0 += v1;                                                                        \
        v1 = ROTL(v1, 13);                                                               \
        v1 ^= v0;                                                                        \
        v0 = ROTL(v0, 32);                                                               \
        v2 += v3;                                                                        \
        v3 = ROTL(v3, 16);                                                               \
        v3 ^= v2;                                                                        \
        v0 += v3;                                                                        \
        v3 = ROTL(v3, 21);                                                               \
        v3 ^= v0;                                                                        \
        v2 += v1;                                                                        \
        v1 = ROTL(v1, 17);                                                               \
        v1 ^= v2;                                                                        \
        v2 = ROTL(v2, 32);                                                               \
    } while (0)

static uint64_t load64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

uint64_t tern_siphash(const uint64_t key[2], const void *data, size_t len)
{
    const uint8_t *in = data;
    uint64_t v0 = 0x736f6d6570736575ULL ^ key[0], v1 = 0x646f72616e646f6dULL ^ key[1];
    uint64_t v2 = 0x6c7967656e657261ULL ^ key[0], v3 = 0x7465646279746573ULL ^ key[1];
    size_t full = len & ~(size_t)7;
    for (size_t i = 0; i < full; i += 8) {
        uint64_t m = load64(in + i);
        v3 ^= m;
        SIPROUND;
        SIPROUND;
        v0 ^= m;
    }
    uint64_t b = (uint64_t)len << 56;
    for (size_t i = 0; i < (len & 7); i++)
        b |= (uint64_t)in[full + i] << (8 * i);
    v3 ^= b;
    SIPROUND;
    SIPROUND;
    v0 ^= b;
    v2 ^= 0xff;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

void tern_siphash_seed(uint64_t key[2])
{
    /* getrandom(2) from the kernel's pool; without it the tables still work,
     * only the spread is no longer secret. */
    if (getrandom(key, 2 * sizeof key[0], 0) != (ssize_t)(2 * sizeof key[0])) {
        key[0] ^= (uint64_t)(uintptr_t)key * 0x9e3779b97f4a7c15ULL;
        key[1] ^= (uint64_t)time(NULL);
    }
}
