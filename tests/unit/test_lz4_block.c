/* The LZ4 block the cluster ships (cluster/lz4_block.h): what is packed comes
 * back exactly; what would not shrink, or is too small, is not packed; a block
 * that does not give exactly the stated length is refused, whatever it holds. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "../../cluster/lz4_block.h"

static void fill_text(uint8_t *b, size_t n)
{
    static const char rec[] =
        "{\"device\":\"press-7\",\"celsius\":21.5,\"status\":\"ok\"}";
    for (size_t i = 0; i < n; i++)
        b[i] = (uint8_t)rec[i % (sizeof(rec) - 1)] ^ (uint8_t)(i / 997);
}

static void fill_noise(uint8_t *b, size_t n)
{
    uint64_t x = 0x2545F4914F6CDD1Dull;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        b[i] = (uint8_t)x;
    }
}

static void test_round_trip(void **state)
{
    (void)state;
    size_t n = 64 * 1024;
    uint8_t *in = malloc(n), *z = malloc(tern_lz4_bound(n)), *out = malloc(n);
    assert_non_null(in);
    assert_non_null(z);
    assert_non_null(out);
    fill_text(in, n);
    size_t zn = tern_lz4_pack(in, n, z, 16);
    assert_true(zn > 0 && zn * 4 < n);
    assert_int_equal(tern_lz4_unpack(z, zn, out, n), 0);
    assert_memory_equal(out, in, n);
    /* Another length than the block gives, or a block cut short: refused. */
    assert_int_equal(tern_lz4_unpack(z, zn, out, n - 1), -1);
    uint8_t *big = malloc(n + 1);
    assert_non_null(big);
    assert_int_equal(tern_lz4_unpack(z, zn, big, n + 1), -1);
    assert_int_equal(tern_lz4_unpack(z, zn / 2, out, n), -1);
    free(big);
    free(in);
    free(z);
    free(out);
}

static void test_not_packed(void **state)
{
    (void)state;
    uint8_t in[8192], z[8192 + 128];
    fill_text(in, sizeof(in));
    assert_int_equal(tern_lz4_bound(TERN_LZ4_MIN - 1), 0);
    assert_int_equal(tern_lz4_pack(in, TERN_LZ4_MIN - 1, z, 0), 0);
    assert_int_equal(tern_lz4_bound((size_t)TERN_LZ4_RAW_MAX + 1), 0);
    fill_noise(in, sizeof(in));
    assert_true(tern_lz4_bound(sizeof(in)) <= sizeof(z));
    assert_int_equal(tern_lz4_pack(in, sizeof(in), z, 0), 0); /* would not shrink */
}

static void test_garbage_refused(void **state)
{
    (void)state;
    uint8_t in[4096], out[4096];
    for (unsigned seed = 1; seed < 200; seed++) {
        uint64_t x = seed * 0x9E3779B97F4A7C15ull;
        for (size_t i = 0; i < sizeof(in); i++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            in[i] = (uint8_t)x;
        }
        size_t len = 1 + (seed * 37) % sizeof(in);
        /* ASan checks that nothing is read or written out of bounds. */
        int rv = tern_lz4_unpack(in, len, out, sizeof(out));
        assert_true(rv == 0 || rv == -1);
    }
    assert_int_equal(tern_lz4_unpack(in, 0, out, sizeof(out)), -1);
    assert_int_equal(tern_lz4_unpack(in, sizeof(in), out, 0), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_not_packed),
        cmocka_unit_test(test_garbage_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
