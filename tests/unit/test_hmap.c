/* The seeded hash table (storage/base/hmap.c): lookups, growth and shrink,
 * walks that remove, and keys chosen to collide. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tern/error.h"
#include "tern/hmap.h"

struct item {
    uint32_t seen; /* walks */
    uint16_t len;
    char key[30];
};

static bool item_eq(const void *item, const void *key, size_t len)
{
    const struct item *it = item;
    return it->len == len && memcmp(it->key, key, len) == 0;
}

static struct item *items_make(size_t n, const char *fmt)
{
    struct item *v = calloc(n, sizeof(*v));
    assert_non_null(v);
    for (size_t i = 0; i < n; i++)
        v[i].len = (uint16_t)snprintf(v[i].key, sizeof v[i].key, fmt, i);
    return v;
}

static uint64_t item_hash(const struct item *it)
{
    return tern_hmap_hash(it->key, it->len);
}

static void put_all(struct tern_hmap *m, struct item *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        assert_int_equal(tern_hmap_put(m, item_hash(&v[i]), &v[i]), TERN_OK);
}

static void expect_all(const struct tern_hmap *m, struct item *v, size_t from, size_t to,
                       bool present)
{
    for (size_t i = from; i < to; i++) {
        void *got = tern_hmap_get(m, item_hash(&v[i]), v[i].key, v[i].len, item_eq);
        if (got != (present ? &v[i] : NULL))
            fail_msg("%s: got %p", v[i].key, got);
    }
}

static void test_put_get_del(void **state)
{
    (void)state;
    enum { N = 50000 };
    struct item *v = items_make(N, "client-%zu");
    struct tern_hmap m;
    tern_hmap_init(&m);
    assert_null(tern_hmap_get(&m, 1, "x", 1, item_eq));
    assert_null(tern_hmap_del(&m, 1, "x", 1, item_eq));
    put_all(&m, v, N);
    assert_int_equal(tern_hmap_count(&m), N);
    expect_all(&m, v, 0, N, true);
    assert_null(tern_hmap_get(&m, tern_hmap_hash("client-x", 8), "client-x", 8, item_eq));
    /* Half by key, a quarter by identity. */
    for (size_t i = 0; i < N / 2; i++)
        assert_ptr_equal(tern_hmap_del(&m, item_hash(&v[i]), v[i].key, v[i].len, item_eq),
                         &v[i]);
    for (size_t i = N / 2; i < 3 * N / 4; i++)
        assert_true(tern_hmap_del_item(&m, item_hash(&v[i]), &v[i]));
    assert_false(tern_hmap_del_item(&m, item_hash(&v[0]), &v[0]));
    assert_int_equal(tern_hmap_count(&m), N / 4);
    expect_all(&m, v, 0, 3 * N / 4, false);
    expect_all(&m, v, 3 * N / 4, N, true);
    tern_hmap_free(&m);
    free(v);
}

static void test_grow_shrink(void **state)
{
    (void)state;
    enum { N = 10000 };
    struct item *v = items_make(N, "%zu");
    struct tern_hmap m = {0};
    assert_int_equal(tern_hmap_bytes(&m), 0);
    size_t prev = 0;
    for (size_t i = 0; i < N; i++) {
        assert_int_equal(tern_hmap_put(&m, item_hash(&v[i]), &v[i]), TERN_OK);
        size_t b = tern_hmap_bytes(&m);
        assert_true(b >= prev);
        prev = b;
        /* Load stays within (1/8, 3/4]: 12 bytes a slot. */
        size_t cap = b / 12;
        assert_true((i + 1) * 4 <= cap * 3);
    }
    size_t full = tern_hmap_bytes(&m);
    printf("%d entries: %zu bytes of slots, longest probe %u\n", N, full,
           tern_hmap_probe_longest(&m));
    for (size_t i = 0; i < N - 10; i++)
        assert_true(tern_hmap_del_item(&m, item_hash(&v[i]), &v[i]));
    assert_true(tern_hmap_bytes(&m) <= 10 * 8 * 12);
    assert_true(tern_hmap_bytes(&m) < full / 100);
    expect_all(&m, v, N - 10, N, true);
    for (size_t i = N - 10; i < N; i++)
        assert_true(tern_hmap_del_item(&m, item_hash(&v[i]), &v[i]));
    assert_int_equal(tern_hmap_count(&m), 0);
    assert_int_equal(tern_hmap_bytes(&m), 0); /* an empty table holds nothing */
    assert_null(m.items);
    tern_hmap_free(&m);
    free(v);
}

static int mark_visit(void *ctx, void *item)
{
    (void)ctx;
    ((struct item *)item)->seen++;
    return 0;
}

struct del_ctx {
    struct tern_hmap *m;
    size_t visits;
    bool all; /* remove everything, else every other visit */
};

static int del_visit(void *ctx, void *p)
{
    struct del_ctx *x = ctx;
    struct item *it = p;
    it->seen++;
    if (x->all || x->visits % 2 == 0)
        assert_true(tern_hmap_del_item(x->m, item_hash(it), it));
    x->visits++;
    return 0;
}

static int stop_visit(void *ctx, void *item)
{
    (void)item;
    return ++*(int *)ctx == 3 ? 42 : 0;
}

static void test_walks(void **state)
{
    (void)state;
    enum { N = 5000 };
    struct item *v = items_make(N, "w/%zu");
    struct tern_hmap m = {0};
    put_all(&m, v, N);
    assert_int_equal(tern_hmap_walk(&m, mark_visit, NULL), 0);
    for (size_t i = 0; i < N; i++)
        assert_int_equal(v[i].seen, 1);
    int calls = 0;
    assert_int_equal(tern_hmap_walk(&m, stop_visit, &calls), 42);
    assert_int_equal(calls, 3);

    /* Position iteration visits each once too. */
    size_t stepped = 0;
    uint32_t pos = 0;
    for (struct item *it = tern_hmap_at(&m, &pos); it; it = tern_hmap_at(&m, &pos)) {
        uint32_t at;
        assert_true(tern_hmap_pos(&m, item_hash(it), it, &at));
        assert_int_equal(at, pos);
        it->seen++;
        stepped++;
        pos++;
    }
    assert_int_equal(stepped, N);
    for (size_t i = 0; i < N; i++)
        assert_int_equal(v[i].seen, 2), v[i].seen = 1;

    /* Removing every other visited item: each item still seen exactly once. */
    struct del_ctx x = {.m = &m};
    assert_int_equal(tern_hmap_walk_del(&m, del_visit, &x), 0);
    assert_int_equal(x.visits, N);
    size_t left = 0;
    for (size_t i = 0; i < N; i++) {
        assert_int_equal(v[i].seen, 2);
        bool in = tern_hmap_get(&m, item_hash(&v[i]), v[i].key, v[i].len, item_eq);
        left += in;
    }
    assert_int_equal(left, N / 2);
    assert_int_equal(tern_hmap_count(&m), N / 2);

    /* Removing all: the table shrinks (frees) only once the walk is over. */
    x = (struct del_ctx){.m = &m, .all = true};
    assert_int_equal(tern_hmap_walk_del(&m, del_visit, &x), 0);
    assert_int_equal(x.visits, N / 2);
    assert_int_equal(tern_hmap_count(&m), 0);
    assert_null(m.items);
    for (size_t i = 0; i < N; i++)
        assert_true(v[i].seen == 2 || v[i].seen == 3);
    tern_hmap_free(&m);
    free(v);
}

/* The worst case: every key has the same hash (a caller's hash, or a seed
 * known to an attacker). Still correct, and the early growth stays bounded. */
static void test_identical_hashes(void **state)
{
    (void)state;
    enum { N = 3000 };
    struct item *v = items_make(N, "same/%zu");
    struct tern_hmap m = {0};
    for (size_t i = 0; i < N; i++) {
        assert_int_equal(tern_hmap_put(&m, 0xABCDEF, &v[i]), TERN_OK);
        assert_true(tern_hmap_bytes(&m) <= (i + 1) * 8 * 12 + 8 * 12);
    }
    for (size_t i = 0; i < N; i++)
        assert_ptr_equal(tern_hmap_get(&m, 0xABCDEF, v[i].key, v[i].len, item_eq), &v[i]);
    assert_null(tern_hmap_get(&m, 0xABCDEF, "same/x", 6, item_eq));
    for (size_t i = 0; i < N; i += 2)
        assert_ptr_equal(tern_hmap_del(&m, 0xABCDEF, v[i].key, v[i].len, item_eq), &v[i]);
    for (size_t i = 0; i < N; i++)
        assert_ptr_equal(tern_hmap_get(&m, 0xABCDEF, v[i].key, v[i].len, item_eq),
                         i % 2 ? &v[i] : NULL);
    tern_hmap_free(&m);
    free(v);
}

static uint32_t fnv1a(const char *s, size_t len)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (uint8_t)s[i]) * 16777619u;
    return h;
}

/* Keys an attacker would choose against the old unkeyed tables: all in one
 * FNV-1a bucket of 4,096 (the routes table's). Under the seeded hash they
 * spread like any keys. Then, with the seed known (set here), keys chosen to
 * share their home slot in a 1,024-slot table: still found, and the table
 * grows early instead of letting the probe run grow without bound. */
static void test_chosen_keys(void **state)
{
    (void)state;
    enum { N = 2000 };
    struct item *v = calloc(N, sizeof(*v));
    assert_non_null(v);
    size_t n = 0;
    for (uint64_t c = 0; n < N; c++) {
        char k[30];
        int len = snprintf(k, sizeof k, "dev/%llx", (unsigned long long)c);
        if ((fnv1a(k, (size_t)len) & 4095) != 7)
            continue;
        memcpy(v[n].key, k, (size_t)len);
        v[n++].len = (uint16_t)len;
    }
    struct tern_hmap m = {0};
    put_all(&m, v, N);
    uint32_t longest = tern_hmap_probe_longest(&m);
    printf("%d keys of one FNV bucket: longest probe %u\n", N, longest);
    assert_true(longest < 32);
    expect_all(&m, v, 0, N, true);
    tern_hmap_free(&m);

    uint64_t seed[2] = {0x0123456789abcdefULL, 0xfedcba9876543210ULL};
    tern_hmap_seed_set(seed);
    n = 0;
    for (uint64_t c = 0; n < N; c++) {
        char k[30];
        int len = snprintf(k, sizeof k, "dev/%llx", (unsigned long long)c);
        if ((tern_hmap_hash(k, (size_t)len) & 1023) != 5)
            continue;
        memcpy(v[n].key, k, (size_t)len);
        v[n++].len = (uint16_t)len;
    }
    put_all(&m, v, N);
    expect_all(&m, v, 0, N, true);
    size_t bytes = tern_hmap_bytes(&m);
    printf("%d keys of one slot (seed known): %zu bytes, longest probe %u\n", N, bytes,
           tern_hmap_probe_longest(&m));
    assert_true(bytes <= (size_t)N * 8 * 12);
    for (size_t i = 0; i < N; i++)
        assert_true(tern_hmap_del_item(&m, item_hash(&v[i]), &v[i]));
    assert_null(m.items);
    tern_hmap_free(&m);
    free(v);
}

/* The seed changes every hash: what a walk visits first is not the same. */
static void test_seed(void **state)
{
    (void)state;
    uint64_t a[2] = {1, 2}, b[2] = {3, 4};
    tern_hmap_seed_set(a);
    uint64_t ha = tern_hmap_hash("topic", 5);
    assert_int_equal(ha, tern_hmap_hash("topic", 5));
    tern_hmap_seed_set(b);
    assert_int_not_equal(ha, tern_hmap_hash("topic", 5));
    tern_hmap_seed_set(a);
    assert_int_equal(ha, tern_hmap_hash("topic", 5));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_put_get_del), cmocka_unit_test(test_grow_shrink),
        cmocka_unit_test(test_walks),       cmocka_unit_test(test_identical_hashes),
        cmocka_unit_test(test_chosen_keys), cmocka_unit_test(test_seed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
