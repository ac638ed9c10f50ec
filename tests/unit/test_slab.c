/* Unit tests for the slab (storage/base/slab.c): objects do not overlap, are
 * aligned, keep their bytes, are reused by size, and pages go back when the
 * slab is empty. Under AddressSanitizer the slab is plain malloc (no pages),
 * and only what holds for both is checked. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tern/slab.h"

#define N 20000

static bool pooled(const struct tern_slab *s)
{
    return tern_slab_bytes(s) > 0; /* 0 with objects out: malloc underneath */
}

static void test_objects_keep_their_bytes(void **state)
{
    (void)state;
    struct tern_slab s;
    tern_slab_init(&s);
    static uint8_t *p[N];
    static size_t len[N];
    for (size_t i = 0; i < N; i++) {
        len[i] = 1 + (i * 7919) % TERN_SLAB_SIZE_MAX; /* every size, mixed */
        p[i] = tern_slab_alloc(&s, len[i]);
        assert_non_null(p[i]);
        assert_int_equal((uintptr_t)p[i] % TERN_SLAB_GRAIN, 0);
        memset(p[i], (int)(i & 0xff), len[i]);
    }
    /* Every byte still its object's: no two objects overlap. */
    for (size_t i = 0; i < N; i++)
        for (size_t k = 0; k < len[i]; k++)
            assert_int_equal(p[i][k], (uint8_t)(i & 0xff));
    if (pooled(&s)) {
        size_t need = 0;
        for (size_t i = 0; i < N; i++)
            need += (len[i] + TERN_SLAB_GRAIN - 1) / TERN_SLAB_GRAIN * TERN_SLAB_GRAIN;
        /* Pages of 64 KiB, each wasting at most its link and a tail < 256. */
        assert_true(tern_slab_bytes(&s) >= need);
        assert_true(tern_slab_bytes(&s) <= need + (need / 65536 + 1) * (8 + 256) + 65536);
    }
    for (size_t i = 0; i < N; i++)
        tern_slab_free(&s, p[i], len[i]);
    assert_int_equal(tern_slab_bytes(&s), 0); /* empty: every page went back */
    tern_slab_destroy(&s);
}

static void test_freed_memory_serves_its_size(void **state)
{
    (void)state;
    struct tern_slab s;
    tern_slab_init(&s);
    void *keep = tern_slab_alloc(&s, 80); /* so the slab never empties */
    void *a = tern_slab_alloc(&s, 76);
    void *b = tern_slab_alloc(&s, 40);
    assert_non_null(keep);
    assert_non_null(a);
    assert_non_null(b);
    if (pooled(&s)) {
        size_t bytes = tern_slab_bytes(&s);
        tern_slab_free(&s, a, 76);
        tern_slab_free(&s, b, 40);
        /* 73..80 round to 80 like 76: a's memory, last freed first. */
        assert_ptr_equal(tern_slab_alloc(&s, 73), a);
        assert_ptr_equal(tern_slab_alloc(&s, 33), b);
        assert_int_equal(tern_slab_bytes(&s), bytes);
        tern_slab_free(&s, a, 73);
        tern_slab_free(&s, b, 33);
    } else {
        tern_slab_free(&s, a, 76);
        tern_slab_free(&s, b, 40);
    }
    tern_slab_free(&s, keep, 80);
    tern_slab_destroy(&s);
}

static void test_large_objects_use_malloc(void **state)
{
    (void)state;
    struct tern_slab s;
    tern_slab_init(&s);
    uint8_t *big = tern_slab_alloc(&s, TERN_SLAB_SIZE_MAX + 1);
    assert_non_null(big);
    memset(big, 0xab, TERN_SLAB_SIZE_MAX + 1);
    assert_int_equal(tern_slab_bytes(&s), 0);
    tern_slab_free(&s, big, TERN_SLAB_SIZE_MAX + 1);
    tern_slab_free(&s, NULL, 8); /* ignored */
    tern_slab_destroy(&s);
}

static void test_destroy_with_objects_out(void **state)
{
    (void)state;
    struct tern_slab s;
    tern_slab_init(&s);
    for (int i = 0; i < 5000; i++)
        assert_non_null(tern_slab_alloc(&s, 48));
    tern_slab_destroy(&s); /* frees the pages (under ASan: the objects leak) */
    assert_int_equal(tern_slab_bytes(&s), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_objects_keep_their_bytes),
        cmocka_unit_test(test_freed_memory_serves_its_size),
        cmocka_unit_test(test_large_objects_use_malloc),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    /* Leaks on purpose under ASan (the objects are malloc's), so apart. */
    struct tern_slab probe;
    tern_slab_init(&probe);
    void *p = tern_slab_alloc(&probe, 8);
    bool is_pooled = pooled(&probe);
    tern_slab_free(&probe, p, 8);
    if (is_pooled) {
        const struct CMUnitTest more[] = {
            cmocka_unit_test(test_destroy_with_objects_out)};
        rc |= cmocka_run_group_tests(more, NULL, NULL);
    }
    return rc;
}
