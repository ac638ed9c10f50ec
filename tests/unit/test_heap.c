/* Unit tests for the deadline heap (storage/heap.c), checked against a plain
 * array that is searched linearly. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tern/error.h"
#include "tern/heap.h"

struct item {
    uint64_t key; /* the model: the key it should have when in */
    bool in;
    uint32_t pos; /* the heap's slot */
};

static uint32_t *item_slot(void *p)
{
    return &((struct item *)p)->pos;
}

static uint64_t rnd(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static void test_empty(void **state)
{
    (void)state;
    struct tern_heap h;
    tern_heap_init(&h, item_slot);
    assert_int_equal(tern_heap_min_key(&h), UINT64_MAX);
    assert_null(tern_heap_pop_due(&h, UINT64_MAX));
    struct item a = {0};
    tern_heap_remove(&h, &a); /* absent: no-op */
    assert_false(tern_heap_contains(&h, &a));
    assert_true(tern_heap_valid(&h));
    tern_heap_free(&h);
}

static void test_order_and_limit(void **state)
{
    (void)state;
    struct tern_heap h;
    tern_heap_init(&h, item_slot);
    struct item it[5] = {0};
    const uint64_t keys[5] = {50, 10, 40, 10, 30};
    for (int i = 0; i < 5; i++)
        assert_int_equal(tern_heap_set(&h, &it[i], keys[i]), TERN_OK);
    assert_int_equal(tern_heap_min_key(&h), 10);
    assert_null(tern_heap_pop_due(&h, 9)); /* nothing due before 10 */
    struct item *a = tern_heap_pop_due(&h, 10), *b = tern_heap_pop_due(&h, 10);
    assert_true((a == &it[1] && b == &it[3]) || (a == &it[3] && b == &it[1]));
    assert_int_equal(a->pos, 0); /* out of the heap: slot cleared */
    assert_null(tern_heap_pop_due(&h, 29));
    assert_ptr_equal(tern_heap_pop_due(&h, 1000), &it[4]);
    /* Move one earlier and one later, remove one. */
    assert_int_equal(tern_heap_set(&h, &it[0], 5), TERN_OK); /* 50 -> 5 */
    assert_int_equal(tern_heap_min_key(&h), 5);
    assert_int_equal(tern_heap_set(&h, &it[0], 60), TERN_OK); /* 5 -> 60 */
    assert_int_equal(tern_heap_min_key(&h), 40);
    tern_heap_remove(&h, &it[2]);
    assert_false(tern_heap_contains(&h, &it[2]));
    assert_ptr_equal(tern_heap_pop_due(&h, UINT64_MAX), &it[0]);
    assert_null(tern_heap_pop_due(&h, UINT64_MAX));
    tern_heap_free(&h);
}

/* Random inserts, moves, removes and pops against the model; the heap's
 * invariants hold after every step, and it shrinks back once emptied. */
static void test_random_against_model(void **state)
{
    (void)state;
    enum { N = 2000, STEPS = 60000 };
    struct item *it = calloc(N, sizeof(*it));
    assert_non_null(it);
    struct tern_heap h;
    tern_heap_init(&h, item_slot);
    uint64_t seed = 0x9E3779B97F4A7C15ull;
    uint32_t live = 0;
    for (int step = 0; step < STEPS; step++) {
        uint64_t r = rnd(&seed);
        struct item *x = &it[r % N];
        switch ((r >> 20) % 4) {
        case 0:
        case 1: { /* set (insert or move); few distinct keys, so ties happen */
            uint64_t key = (r >> 32) % 500;
            assert_int_equal(tern_heap_set(&h, x, key), TERN_OK);
            live += !x->in;
            x->in = true;
            x->key = key;
            break;
        }
        case 2:
            tern_heap_remove(&h, x);
            live -= x->in;
            x->in = false;
            break;
        case 3: { /* pop what is due at a random limit: must be a minimum */
            uint64_t limit = (r >> 32) % 500, min = UINT64_MAX;
            for (uint32_t i = 0; i < N; i++)
                if (it[i].in && it[i].key < min)
                    min = it[i].key;
            struct item *p = tern_heap_pop_due(&h, limit);
            if (min > limit) {
                assert_null(p);
            } else {
                assert_non_null(p);
                assert_true(p->in);
                assert_int_equal(p->key, min);
                p->in = false;
                live--;
            }
            break;
        }
        }
        assert_int_equal(h.count, live);
        if (step % 97 == 0)
            assert_true(tern_heap_valid(&h));
        for (uint32_t i = 0; i < N && step % 997 == 0; i++)
            assert_int_equal(tern_heap_contains(&h, &it[i]), it[i].in);
    }
    assert_true(tern_heap_valid(&h));
    /* Drain in order. */
    uint64_t prev = 0;
    struct item *p;
    while ((p = tern_heap_pop_due(&h, UINT64_MAX))) {
        assert_true(p->in);
        assert_true(p->key >= prev);
        prev = p->key;
        p->in = false;
    }
    for (uint32_t i = 0; i < N; i++)
        assert_false(it[i].in);
    assert_true(h.cap <= 32); /* the array shrank as it emptied */
    tern_heap_free(&h);
    free(it);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_order_and_limit),
        cmocka_unit_test(test_random_against_model),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
