/* libFuzzer target for the PROXY protocol parser (node/stream/proxy_proto.c): the input
 * is fed whole, then in pieces whose sizes come from its first byte; both ways
 * must give the same result, take the same bytes (never more than the bound,
 * never one after the header) and, if complete, the same header.
 *
 * clang -fsanitize=fuzzer,address,undefined -Iinclude/base -Iinclude/stream
 * node/stream/proxy_proto.c \ tests/fuzz/fuzz_proxy.c -o fuzz_proxy
 */
#include <stdlib.h>
#include <string.h>

#include "tern/proxy_proto.h"

static struct tern_proxy_parser whole, parts;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t step = (size_t)(data[0] % 17) + 1;
    data++;
    size--;
    struct tern_proxy_header h1, h2;
    const char *why;
    size_t used1;
    tern_proxy_init(&whole);
    int rc1 = tern_proxy_feed(&whole, data, size, &used1, &h1, &why);
    if (used1 > size || used1 > TERN_PROXY_HEADER_MAX)
        abort();
    if (rc1 != TERN_OK && rc1 != TERN_EAGAIN &&
        (rc1 != TERN_EMALFORMED && rc1 != TERN_ETOOBIG))
        abort();
    if (rc1 != TERN_OK && rc1 != TERN_EAGAIN && !why)
        abort();
    if (rc1 == TERN_EAGAIN && used1 != size)
        abort();
    if (rc1 == TERN_OK && (h1.version < 1 || h1.version > 2 ||
                           (h1.family != 0 && h1.family != 4 && h1.family != 6)))
        abort();

    tern_proxy_init(&parts);
    size_t taken = 0;
    int rc2 = TERN_EAGAIN;
    for (size_t off = 0; off < size && rc2 == TERN_EAGAIN; off += step) {
        size_t n = size - off < step ? size - off : step, used;
        rc2 = tern_proxy_feed(&parts, data + off, n, &used, &h2, &why);
        if (used > n || (rc2 == TERN_EAGAIN && used != n))
            abort();
        taken += used;
    }
    /* A malformed prefix may be seen earlier in pieces; otherwise alike. */
    if (rc1 != rc2 || (rc1 != TERN_EMALFORMED && taken != used1))
        abort();
    if (rc1 == TERN_OK && memcmp(&h1, &h2, sizeof h1) != 0)
        abort();
    return 0;
}
