/* libFuzzer target for the LZ4 block the cluster reads from other nodes
 * (cluster/lz4_block.c: compressed Raft entries and proposal frames): the input
 * is a stated length (its first 3 bytes, up to 1 MiB) and a block. Unpacking
 * must refuse or give exactly that length, never touch memory outside it; what
 * it gives packs and unpacks back to the same bytes.
 *
 * clang -fsanitize=fuzzer,address,undefined cluster/lz4_block.c
 * tests/fuzz/fuzz_lz4.c -llz4 -o fuzz_lz4
 */
#include <stdlib.h>
#include <string.h>

#include "../../cluster/lz4_block.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 3)
        return 0;
    size_t n =
        ((size_t)data[0] | (size_t)data[1] << 8 | (size_t)data[2] << 16) % (1u << 20);
    data += 3;
    size -= 3;
    uint8_t *out = malloc(n ? n : 1);
    if (!out)
        return 0;
    int rv = tern_lz4_unpack(data, size, out, n);
    if (rv != 0 && rv != -1)
        abort();
    size_t bound = rv == 0 ? tern_lz4_bound(n) : 0;
    if (bound) {
        uint8_t *z = malloc(bound), *back = malloc(n);
        size_t zn = z && back ? tern_lz4_pack(out, n, z, 0) : 0;
        if (zn && (tern_lz4_unpack(z, zn, back, n) != 0 || memcmp(back, out, n) != 0))
            abort();
        free(z);
        free(back);
    }
    free(out);
    return 0;
}
