/* Unit tests for the topic tree (storage/topic.c). */
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
#include "tern/topic.h"

#define V(i) ((void *)(uintptr_t)(i))

struct match_case {
    const char *filter;
    const char *name;
    bool match;
};

static const struct match_case cases[] = {
    /* spec 4.7.1.2 */
    {"sport/tennis/player1/#", "sport/tennis/player1", true},
    {"sport/tennis/player1/#", "sport/tennis/player1/ranking", true},
    {"sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", true},
    {"sport/tennis/player1/#", "sport/tennis/player2", false},
    {"sport/#", "sport", true},
    {"sport/#", "sport/", true},
    {"#", "sport/tennis", true},
    {"#", "/", true},
    /* spec 4.7.1.3 */
    {"sport/tennis/+", "sport/tennis/player1", true},
    {"sport/tennis/+", "sport/tennis/player2", true},
    {"sport/tennis/+", "sport/tennis/player1/ranking", false},
    {"sport/+", "sport", false},
    {"sport/+", "sport/", true},
    {"+/+", "/finance", true},
    {"/+", "/finance", true},
    {"+", "/finance", false},
    {"+/tennis/#", "sport/tennis/player1", true},
    {"+/tennis/#", "sport/tennis", true},
    {"+/tennis/#", "sport/golf", false},
    /* spec 4.7.2: '$' topics */
    {"#", "$SYS/x", false},
    {"+/monitor/Clients", "$SYS/monitor/Clients", false},
    {"$SYS/#", "$SYS/monitor/Clients", true},
    {"$SYS/monitor/+", "$SYS/monitor/Clients", true},
    {"$SYS/#", "$SYS", true},
    {"+", "$SYS", false},
    {"a/#", "a/$b", true},
    {"a/+", "a/$b", true},
    /* exact and empty levels */
    {"a/b/c", "a/b/c", true},
    {"a/b/c", "a/b", false},
    {"a/b", "a/b/c", false},
    {"a/b/c", "a/b/d", false},
    {"a//c", "a//c", true},
    {"a/+/c", "a//c", true},
    {"+", "", true},
    {"/", "/", true},
    {"/", "//", false},
    {"+/+", "/", true},
    {"+/+/+", "/", false},
    {"+", "a", true},
    {"+/#", "a", true},
    {"+/#", "a/b/c", true},
    {"a/#", "b", false},
    {"a/#", "ab", false},
    {"ab", "a", false},
    {"a", "ab", false},
    {"a/+/+", "a/b", false},
    {"a/+/#", "a/b", true},
    {"#", "a", true},
    {"A", "a", false},
    {"a/b/", "a/b/", true},
    {"a/b/", "a/b", false},
    {"a/b/#", "a/b/", true},
};

#define NCASES (sizeof(cases) / sizeof(cases[0]))

static void test_matches_table(void **state)
{
    (void)state;
    assert_true(NCASES >= 40);
    for (size_t i = 0; i < NCASES; i++) {
        const struct match_case *c = &cases[i];
        bool got =
            tern_topic_matches(c->filter, strlen(c->filter), c->name, strlen(c->name));
        if (got != c->match)
            fail_msg("matches(%s, %s) = %d", c->filter, c->name, got);
    }
}

struct collect {
    size_t n;
    void *vals[4096];
    char keys[64][64];
    int stop_after; /* 0 = never */
};

static int collect_fn(void *ctx, const char *key, size_t key_len, void *value)
{
    struct collect *c = ctx;
    assert_int_equal(strlen(key), key_len); /* NUL-terminated at key_len */
    if (c->n < 64)
        snprintf(c->keys[c->n], sizeof(c->keys[0]), "%s", key);
    assert_true(c->n < 4096);
    c->vals[c->n++] = value;
    if (c->stop_after && (int)c->n >= c->stop_after)
        return 42;
    return 0;
}

static bool contains(const struct collect *c, void *v)
{
    for (size_t i = 0; i < c->n; i++) {
        if (c->vals[i] == v)
            return true;
    }
    return false;
}

/* Each table case through the tree, both directions. */
static void test_tree_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < NCASES; i++) {
        const struct match_case *c = &cases[i];
        struct tern_topic_tree *t = tern_topic_tree_new();
        assert_non_null(t);
        assert_int_equal(tern_topic_tree_add(t, c->filter, strlen(c->filter), V(1)), 0);
        struct collect col = {0};
        assert_int_equal(
            tern_topic_tree_match(t, c->name, strlen(c->name), collect_fn, &col), 0);
        if (col.n != (c->match ? 1u : 0u))
            fail_msg("tree match(%s, %s) = %zu", c->filter, c->name, col.n);
        if (col.n)
            assert_string_equal(col.keys[0], c->filter);
        tern_topic_tree_free(t);

        t = tern_topic_tree_new();
        assert_int_equal(tern_topic_tree_add(t, c->name, strlen(c->name), V(2)), 0);
        memset(&col, 0, sizeof(col));
        tern_topic_tree_match_filter(t, c->filter, strlen(c->filter), collect_fn, &col);
        if (col.n != (c->match ? 1u : 0u))
            fail_msg("match_filter(%s, %s) = %zu", c->filter, c->name, col.n);
        if (col.n)
            assert_string_equal(col.keys[0], c->name);
        tern_topic_tree_free(t);
    }
}

static void test_validation(void **state)
{
    (void)state;
    static const char *names_ok[] = {"a", "/", "a/b", "$SYS/x", "a//b", " "};
    static const char *names_bad[] = {"", "a/+", "#", "a/b#", "+x"};
    static const char *filters_ok[] = {
        "a",          "#",          "+",     "a/#",
        "+/+",        "/+",         "a/+/b", "$share/g/a/#",
        "$share/g/#", "$share/g/+", "a//b",  "/",
        "$SYS/#",     "$share/g//"};
    static const char *filters_bad[] = {
        "",          "a#",        "a/#/b",       "#/a",        "a+",
        "+a/b",      "a/b+",      "##",          "$share/",    "$share/g",
        "$share/g/", "$share//a", "$share/g+/a", "$share/#/a", "$share/g/a#"};
    for (size_t i = 0; i < sizeof(names_ok) / sizeof(*names_ok); i++)
        assert_true(tern_topic_name_valid(names_ok[i], strlen(names_ok[i])));
    for (size_t i = 0; i < sizeof(names_bad) / sizeof(*names_bad); i++)
        assert_false(tern_topic_name_valid(names_bad[i], strlen(names_bad[i])));
    for (size_t i = 0; i < sizeof(filters_ok) / sizeof(*filters_ok); i++) {
        if (!tern_topic_filter_valid(filters_ok[i], strlen(filters_ok[i])))
            fail_msg("filter %s should be valid", filters_ok[i]);
    }
    for (size_t i = 0; i < sizeof(filters_bad) / sizeof(*filters_bad); i++) {
        if (tern_topic_filter_valid(filters_bad[i], strlen(filters_bad[i])))
            fail_msg("filter %s should be invalid", filters_bad[i]);
    }
    assert_false(tern_topic_name_valid("a\0b", 3));
    assert_false(tern_topic_filter_valid("a\0b", 3));
    /* Length is what counts, not a NUL. */
    assert_true(tern_topic_name_valid("a/b+", 3));
}

static void test_shared_split(void **state)
{
    (void)state;
    const char *g, *in;
    size_t glen, inlen;
    const char *f = "$share/grp/a/+/c";
    assert_true(tern_topic_shared_split(f, strlen(f), &g, &glen, &in, &inlen));
    assert_int_equal(glen, 3);
    assert_memory_equal(g, "grp", 3);
    assert_int_equal(inlen, 5);
    assert_memory_equal(in, "a/+/c", 5);
    assert_false(tern_topic_shared_split("a/b", 3, &g, &glen, &in, &inlen));
    assert_false(tern_topic_shared_split("$shared/x", 9, &g, &glen, &in, &inlen));
    assert_false(tern_topic_shared_split("$SYS/x", 6, &g, &glen, &in, &inlen));
    assert_true(tern_topic_shared_split("$share/g", 8, &g, &glen, &in, &inlen));
    assert_int_equal(glen, 1);
    assert_int_equal(inlen, 0);
    /* Length-bounded: the prefix must be inside len. */
    assert_false(tern_topic_shared_split("$share/g/a", 6, &g, &glen, &in, &inlen));
}

static void test_add_remove_prune(void **state)
{
    (void)state;
    struct tern_topic_tree *t = tern_topic_tree_new();
    assert_non_null(t);
    assert_int_equal(tern_topic_tree_count(t), 0);
    assert_int_equal(tern_topic_tree_add(t, "a/b/c", 5, V(1)), 0);
    assert_int_equal(tern_topic_tree_add(t, "a/b", 3, V(2)), 0);
    assert_int_equal(tern_topic_tree_add(t, "a/+/c", 5, V(3)), 0);
    assert_int_equal(tern_topic_tree_add(t, "a/#", 3, V(4)), 0);
    assert_int_equal(tern_topic_tree_count(t), 4);

    assert_ptr_equal(tern_topic_tree_get(t, "a/b", 3), V(2));
    assert_ptr_equal(tern_topic_tree_get(t, "a/+/c", 5), V(3));
    assert_null(tern_topic_tree_get(t, "a", 1));
    assert_null(tern_topic_tree_get(t, "a/b/c/d", 7));

    assert_int_equal(tern_topic_tree_remove(t, "a/b/c", 5, V(2)), TERN_ENOTFOUND);
    assert_int_equal(tern_topic_tree_remove(t, "a/x", 3, V(2)), TERN_ENOTFOUND);
    assert_int_equal(tern_topic_tree_remove(t, "a", 1, V(2)), TERN_ENOTFOUND);
    assert_int_equal(tern_topic_tree_remove(t, "a/b", 3, V(2)), 0);
    assert_int_equal(tern_topic_tree_remove(t, "a/b", 3, V(2)), TERN_ENOTFOUND);
    assert_null(tern_topic_tree_get(t, "a/b", 3));
    /* "a/b" is now only an inner node of "a/b/c": still matches through it. */
    struct collect col = {0};
    tern_topic_tree_match(t, "a/b/c", 5, collect_fn, &col);
    assert_int_equal(col.n, 3);
    assert_true(contains(&col, V(1)) && contains(&col, V(3)) && contains(&col, V(4)));

    assert_int_equal(tern_topic_tree_remove(t, "a/b/c", 5, V(1)), 0);
    assert_int_equal(tern_topic_tree_remove(t, "a/+/c", 5, V(3)), 0);
    assert_int_equal(tern_topic_tree_remove(t, "a/#", 3, V(4)), 0);
    assert_int_equal(tern_topic_tree_count(t), 0);
    memset(&col, 0, sizeof(col));
    assert_int_equal(tern_topic_tree_walk(t, collect_fn, &col), 0);
    assert_int_equal(col.n, 0);

    /* Re-adding after pruning works. */
    assert_int_equal(tern_topic_tree_add(t, "a/b/c", 5, V(1)), 0);
    assert_ptr_equal(tern_topic_tree_get(t, "a/b/c", 5), V(1));
    assert_int_equal(tern_topic_tree_add(t, "x", 1, NULL), TERN_EINVAL);
    tern_topic_tree_free(t);
    tern_topic_tree_free(NULL);
}

static void test_duplicates_and_sets(void **state)
{
    (void)state;
    struct tern_topic_tree *t = tern_topic_tree_new();
    assert_int_equal(tern_topic_tree_add(t, "a/+", 3, V(1)), 0);
    assert_int_equal(tern_topic_tree_add(t, "a/+", 3, V(1)), 0);
    assert_int_equal(tern_topic_tree_count(t), 1);
    /* Many values on one key: crosses the linear/indexed threshold both ways. */
    for (uintptr_t i = 2; i <= 1000; i++)
        assert_int_equal(tern_topic_tree_add(t, "a/+", 3, V(i)), 0);
    for (uintptr_t i = 1; i <= 1000; i += 7)
        assert_int_equal(tern_topic_tree_add(t, "a/+", 3, V(i)), 0);
    assert_int_equal(tern_topic_tree_count(t), 1000);
    struct collect col = {0};
    tern_topic_tree_match(t, "a/zz", 4, collect_fn, &col);
    assert_int_equal(col.n, 1000);
    for (uintptr_t i = 1; i <= 1000; i++)
        assert_true(contains(&col, V(i)));
    /* Remove in an order that moves values around. */
    for (uintptr_t i = 1; i <= 1000; i += 2)
        assert_int_equal(tern_topic_tree_remove(t, "a/+", 3, V(i)), 0);
    assert_int_equal(tern_topic_tree_count(t), 500);
    for (uintptr_t i = 1; i <= 1000; i++) {
        int rc = tern_topic_tree_add(t, "a/+", 3, V(i));
        assert_int_equal(rc, 0);
    }
    assert_int_equal(tern_topic_tree_count(t), 1000);
    for (uintptr_t i = 1000; i >= 1; i--) {
        assert_int_equal(tern_topic_tree_remove(t, "a/+", 3, V(i)), 0);
        assert_int_equal(tern_topic_tree_remove(t, "a/+", 3, V(i)), TERN_ENOTFOUND);
        if (i > 1)
            assert_non_null(tern_topic_tree_get(t, "a/+", 3));
    }
    assert_int_equal(tern_topic_tree_count(t), 0);
    assert_null(tern_topic_tree_get(t, "a/+", 3));
    tern_topic_tree_free(t);
}

static void test_match_filter_retained(void **state)
{
    (void)state;
    static const char *names[] = {"sport/tennis/player1",
                                  "sport/tennis/player1/ranking",
                                  "sport/tennis/player2",
                                  "sport",
                                  "sport/",
                                  "/finance",
                                  "$SYS/broker/uptime",
                                  "$SYS/monitor/Clients",
                                  "news"};
    const size_t n = sizeof(names) / sizeof(*names);
    struct tern_topic_tree *t = tern_topic_tree_new();
    for (size_t i = 0; i < n; i++)
        assert_int_equal(tern_topic_tree_add(t, names[i], strlen(names[i]), V(i + 1)), 0);
    static const char *filters[] = {"#",
                                    "+",
                                    "+/+",
                                    "sport/#",
                                    "sport/+",
                                    "sport/tennis/+",
                                    "$SYS/#",
                                    "+/monitor/Clients",
                                    "$SYS/+/Clients",
                                    "/+",
                                    "news/#",
                                    "none/#",
                                    "sport/tennis/player1/#"};
    for (size_t f = 0; f < sizeof(filters) / sizeof(*filters); f++) {
        struct collect col = {0};
        tern_topic_tree_match_filter(t, filters[f], strlen(filters[f]), collect_fn, &col);
        size_t expect = 0;
        for (size_t i = 0; i < n; i++) {
            bool m = tern_topic_matches(filters[f], strlen(filters[f]), names[i],
                                        strlen(names[i]));
            expect += m;
            if (m != contains(&col, V(i + 1)))
                fail_msg("match_filter(%s) vs %s", filters[f], names[i]);
        }
        assert_int_equal(col.n, expect);
    }
    /* Stop early: the callback's value comes back. */
    struct collect col = {.stop_after = 2};
    assert_int_equal(tern_topic_tree_match_filter(t, "#", 1, collect_fn, &col), 42);
    assert_int_equal(col.n, 2);
    tern_topic_tree_free(t);
}

static void test_walk_count_stop(void **state)
{
    (void)state;
    struct tern_topic_tree *t = tern_topic_tree_new();
    char buf[32];
    for (uintptr_t i = 0; i < 300; i++) {
        int len = snprintf(buf, sizeof(buf), "w/%u/%u", (unsigned)(i % 7), (unsigned)i);
        assert_int_equal(tern_topic_tree_add(t, buf, (size_t)len, V(i + 1)), 0);
    }
    assert_int_equal(tern_topic_tree_add(t, "w/#", 3, V(1000)), 0);
    assert_int_equal(tern_topic_tree_add(t, "+", 1, V(1001)), 0);
    assert_int_equal(tern_topic_tree_count(t), 302);
    struct collect col = {0};
    assert_int_equal(tern_topic_tree_walk(t, collect_fn, &col), 0);
    assert_int_equal(col.n, 302);
    for (uintptr_t i = 0; i < 300; i++)
        assert_true(contains(&col, V(i + 1)));
    assert_true(contains(&col, V(1000)) && contains(&col, V(1001)));

    memset(&col, 0, sizeof(col));
    col.stop_after = 5;
    assert_int_equal(tern_topic_tree_walk(t, collect_fn, &col), 42);
    assert_int_equal(col.n, 5);
    memset(&col, 0, sizeof(col));
    col.stop_after = 1;
    assert_int_equal(tern_topic_tree_match(t, "w/1/1", 5, collect_fn, &col), 42);
    assert_int_equal(col.n, 1);
    tern_topic_tree_free(t);
}

static void test_wide_node(void **state)
{
    (void)state;
    enum { N = 10000 };
    struct tern_topic_tree *t = tern_topic_tree_new();
    char buf[32];
    for (uintptr_t i = 0; i < N; i++) {
        int len = snprintf(buf, sizeof(buf), "devices/%u/state", (unsigned)i);
        assert_int_equal(tern_topic_tree_add(t, buf, (size_t)len, V(i + 1)), 0);
    }
    assert_int_equal(tern_topic_tree_add(t, "devices/+/state", 15, V(N + 1)), 0);
    assert_int_equal(tern_topic_tree_count(t), N + 1);
    for (uintptr_t i = 0; i < N; i++) {
        int len = snprintf(buf, sizeof(buf), "devices/%u/state", (unsigned)i);
        struct collect col = {0};
        tern_topic_tree_match(t, buf, (size_t)len, collect_fn, &col);
        assert_int_equal(col.n, 2);
        assert_true(contains(&col, V(i + 1)) && contains(&col, V(N + 1)));
        assert_ptr_equal(tern_topic_tree_get(t, buf, (size_t)len), V(i + 1));
    }
    struct collect col = {0};
    tern_topic_tree_match_filter(t, "devices/17/#", 12, collect_fn, &col);
    assert_int_equal(col.n, 1);
    assert_string_equal(col.keys[0], "devices/17/state");
    for (uintptr_t i = 0; i < N; i++) {
        int len = snprintf(buf, sizeof(buf), "devices/%u/state", (unsigned)i);
        assert_int_equal(tern_topic_tree_remove(t, buf, (size_t)len, V(i + 1)), 0);
    }
    assert_int_equal(tern_topic_tree_count(t), 1);
    memset(&col, 0, sizeof(col));
    tern_topic_tree_match(t, "devices/x/state", 15, collect_fn, &col);
    assert_int_equal(col.n, 1);
    tern_topic_tree_free(t);
}

static void test_deep_keys(void **state)
{
    (void)state;
    size_t levels = TERN_TOPIC_LEVELS_MAX;
    size_t len = 2 * levels - 1; /* "a/a/.../a" */
    char *k = malloc(len + 3);
    assert_non_null(k);
    for (size_t i = 0; i < len; i++)
        k[i] = (i % 2) ? '/' : 'a';
    struct tern_topic_tree *t = tern_topic_tree_new();
    assert_int_equal(tern_topic_tree_add(t, k, len, V(1)), 0);
    /* The same shape with '+' at every level: worst case for the stack. */
    char *f = malloc(len + 1);
    memcpy(f, k, len);
    for (size_t i = 0; i < len; i += 2)
        f[i] = '+';
    assert_int_equal(tern_topic_tree_add(t, f, len, V(2)), 0);
    f[len - 1] = '#';
    assert_int_equal(tern_topic_tree_add(t, f, len, V(3)), 0);
    struct collect col = {0};
    tern_topic_tree_match(t, k, len, collect_fn, &col);
    assert_int_equal(col.n, 3);
    memset(&col, 0, sizeof(col));
    f[len - 1] = '+';
    tern_topic_tree_match_filter(t, f, len, collect_fn, &col);
    assert_int_equal(col.n, 3); /* stored '+' levels are children too */
    /* A name deeper than any key, and a very long one, are fine for match. */
    memcpy(k + len, "/a", 2);
    memset(&col, 0, sizeof(col));
    tern_topic_tree_match(t, k, len + 2, collect_fn, &col);
    assert_int_equal(col.n, 1); /* only the '#' filter */
    /* One level more than the cap is refused. */
    assert_int_equal(tern_topic_tree_add(t, k, len + 2, V(4)), TERN_EINVAL);
    assert_int_equal(tern_topic_tree_count(t), 3);
    tern_topic_tree_free(t);
    free(k);
    free(f);
}

/* Random filters and names over a small alphabet; the tree must agree with
 * tern_topic_matches() in both directions, visiting each pair exactly once. */
static void random_key(char *out, size_t cap, bool filter, unsigned *seed)
{
    static const char *lv[] = {"a", "b", "", "$s", "cc"};
    size_t levels = 1 + (size_t)rand_r(seed) % 4;
    size_t n = 0;
    for (size_t i = 0; i < levels; i++) {
        const char *l = lv[rand_r(seed) % 5];
        int r = rand_r(seed) % 10;
        if (filter && r < 3)
            l = "+";
        else if (filter && r == 3 && i + 1 == levels)
            l = "#";
        int w = snprintf(out + n, cap - n, "%s%s", i ? "/" : "", l);
        n += (size_t)w;
    }
    if (n == 0) /* a lone empty level is not a valid key */
        snprintf(out, cap, "%s", filter ? "+" : "/");
}

static void test_random_crosscheck(void **state)
{
    (void)state;
    enum { NK = 400, NQ = 2000 };
    unsigned seed = 12345;
    static char filt[NK][64], names[NK][64];
    struct tern_topic_tree *ft = tern_topic_tree_new();
    struct tern_topic_tree *nt = tern_topic_tree_new();
    for (size_t i = 0; i < NK; i++) {
        random_key(filt[i], sizeof(filt[i]), true, &seed);
        random_key(names[i], sizeof(names[i]), false, &seed);
        assert_true(tern_topic_filter_valid(filt[i], strlen(filt[i])));
        assert_int_equal(tern_topic_tree_add(ft, filt[i], strlen(filt[i]), V(i + 1)), 0);
        assert_int_equal(tern_topic_tree_add(nt, names[i], strlen(names[i]), V(i + 1)),
                         0);
    }
    for (size_t q = 0; q < NQ; q++) {
        char name[64], filter[64];
        random_key(name, sizeof(name), false, &seed);
        random_key(filter, sizeof(filter), true, &seed);
        struct collect col = {0};
        tern_topic_tree_match(ft, name, strlen(name), collect_fn, &col);
        size_t expect = 0;
        for (size_t i = 0; i < NK; i++) {
            if (tern_topic_matches(filt[i], strlen(filt[i]), name, strlen(name))) {
                expect++;
                assert_true(contains(&col, V(i + 1)));
            }
        }
        assert_int_equal(col.n, expect); /* no duplicates, no extras */

        memset(&col, 0, sizeof(col));
        tern_topic_tree_match_filter(nt, filter, strlen(filter), collect_fn, &col);
        expect = 0;
        for (size_t i = 0; i < NK; i++) {
            if (tern_topic_matches(filter, strlen(filter), names[i], strlen(names[i]))) {
                expect++;
                assert_true(contains(&col, V(i + 1)));
            }
        }
        assert_int_equal(col.n, expect);
    }
    /* Remove half, check again. */
    for (size_t i = 0; i < NK; i += 2) {
        assert_int_equal(tern_topic_tree_remove(ft, filt[i], strlen(filt[i]), V(i + 1)),
                         0);
        assert_int_equal(tern_topic_tree_remove(nt, names[i], strlen(names[i]), V(i + 1)),
                         0);
    }
    for (size_t q = 0; q < NQ / 4; q++) {
        char name[64];
        random_key(name, sizeof(name), false, &seed);
        struct collect col = {0};
        tern_topic_tree_match(ft, name, strlen(name), collect_fn, &col);
        size_t expect = 0;
        for (size_t i = 1; i < NK; i += 2)
            expect += tern_topic_matches(filt[i], strlen(filt[i]), name, strlen(name));
        assert_int_equal(col.n, expect);
    }
    assert_int_equal(tern_topic_tree_count(ft), NK / 2);
    tern_topic_tree_free(ft);
    tern_topic_tree_free(nt);
}

struct key_check {
    const char *want;
    size_t want_len, n;
};

static int key_check_fn(void *ctx, const char *key, size_t key_len, void *value)
{
    struct key_check *k = ctx;
    (void)value;
    assert_int_equal(key_len, k->want_len);
    assert_memory_equal(key, k->want, key_len);
    assert_int_equal(key[key_len], 0);
    k->n++;
    return 0;
}

/* Keys are not stored but rebuilt from the levels on each visit: the visitor
 * sees exactly the key that was added, empty levels and long keys (past the
 * stack buffer) included, for one value or several, as values come and go. */
static void test_keys_rebuilt(void **state)
{
    (void)state;
    char longk[700];
    for (size_t i = 0; i < sizeof(longk); i++)
        longk[i] = i % 7 == 6 ? '/' : (char)('a' + i % 26);
    const struct {
        const char *k;
        size_t len;
    } keys[] = {
        {"a", 1}, {"/", 1},     {"a//b", 4},           {"/x/", 3}, {"dev/123/cmd", 11},
        {" ", 1}, {longk, 300}, {longk, sizeof(longk)}};
    struct tern_topic_tree *t = tern_topic_tree_new();
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        for (int nv = 1; nv <= 3; nv++) { /* one value, then two, then three */
            assert_int_equal(tern_topic_tree_add(t, keys[i].k, keys[i].len, V(10 + nv)),
                             0);
            struct key_check k = {keys[i].k, keys[i].len, 0};
            assert_int_equal(
                tern_topic_tree_match_filter(t, keys[i].k, keys[i].len, key_check_fn, &k),
                0);
            assert_int_equal(k.n, (size_t)nv);
        }
        assert_int_equal(tern_topic_tree_remove(t, keys[i].k, keys[i].len, V(11)), 0);
        assert_int_equal(tern_topic_tree_remove(t, keys[i].k, keys[i].len, V(13)), 0);
        assert_ptr_equal(tern_topic_tree_get(t, keys[i].k, keys[i].len), V(12));
        struct key_check k = {keys[i].k, keys[i].len, 0};
        tern_topic_tree_match_filter(t, keys[i].k, keys[i].len, key_check_fn, &k);
        assert_int_equal(k.n, 1);
        assert_int_equal(tern_topic_tree_remove(t, keys[i].k, keys[i].len, V(12)), 0);
        assert_null(tern_topic_tree_get(t, keys[i].k, keys[i].len));
        assert_int_equal(tern_topic_tree_count(t), 0);
    }
    tern_topic_tree_free(t);
}

static int ptr_cmp(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t) * (void *const *)a, y = (uintptr_t) * (void *const *)b;
    return (x > y) - (x < y);
}

/* The same adds and removes under two hash seeds: the children's order follows
 * the seed, what a walk or a match finds does not. */
static void seeded_sets(const uint64_t seed[2], struct collect *c)
{
    tern_hmap_seed_set(seed);
    struct tern_topic_tree *t = tern_topic_tree_new();
    assert_non_null(t);
    char k[32];
    for (int i = 0; i < 1500; i++) {
        snprintf(k, sizeof k, "d/%d/s", i);
        assert_int_equal(tern_topic_tree_add(t, k, strlen(k), V(i + 1)), 0);
    }
    for (int i = 0; i < 1500; i += 3) {
        snprintf(k, sizeof k, "d/%d/s", i);
        assert_int_equal(tern_topic_tree_remove(t, k, strlen(k), V(i + 1)), 0);
    }
    tern_topic_tree_walk(t, collect_fn, &c[0]);
    tern_topic_tree_match_filter(t, "d/+/s", 5, collect_fn, &c[1]);
    tern_topic_tree_match_filter(t, "d/#", 3, collect_fn, &c[2]);
    assert_int_equal(c[0].n, 1000);
    for (int i = 0; i < 3; i++)
        qsort(c[i].vals, c[i].n, sizeof(void *), ptr_cmp);
    tern_topic_tree_free(t);
}

static void test_seed_same_sets(void **state)
{
    (void)state;
    static const uint64_t a[2] = {1, 2}, b[2] = {0xfeedface, 99};
    struct collect *c = calloc(6, sizeof(*c));
    assert_non_null(c);
    seeded_sets(a, &c[0]);
    seeded_sets(b, &c[3]);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(c[i].n, c[i + 3].n);
        assert_memory_equal(c[i].vals, c[i + 3].vals, c[i].n * sizeof(void *));
    }
    free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matches_table),
        cmocka_unit_test(test_tree_table),
        cmocka_unit_test(test_validation),
        cmocka_unit_test(test_shared_split),
        cmocka_unit_test(test_add_remove_prune),
        cmocka_unit_test(test_duplicates_and_sets),
        cmocka_unit_test(test_match_filter_retained),
        cmocka_unit_test(test_walk_count_stop),
        cmocka_unit_test(test_wide_node),
        cmocka_unit_test(test_deep_keys),
        cmocka_unit_test(test_random_crosscheck),
        cmocka_unit_test(test_seed_same_sets),
        cmocka_unit_test(test_keys_rebuilt),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
