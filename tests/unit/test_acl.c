/* ACL files (node/auth/auth_acl.c): Mosquitto's syntax, deny before allow, anonymous
 * rules, %c / %u patterns with hostile ids, and the filter relations. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tern/auth.h"
#include "tern/error.h"

static struct tern_acl *parse(const char *text)
{
    struct tern_acl *a = NULL;
    char err[TERN_ERRMSG_SIZE] = "";
    int rc = tern_acl_parse(text, strlen(text), &a, err);
    if (rc != TERN_OK)
        fail_msg("parse: %s", err);
    return a;
}

/* user NULL = anonymous */
static bool ok(const struct tern_acl *a, const char *user, const char *id, const char *t,
               int access)
{
    return tern_acl_allows(a, (const uint8_t *)user, user ? strlen(user) : 0,
                           (const uint8_t *)id, strlen(id), (const uint8_t *)t, strlen(t),
                           access);
}

static int level(const struct tern_acl *a, const char *user, const char *id,
                 const char *t, int access)
{
    return tern_acl_check(a, (const uint8_t *)user, user ? strlen(user) : 0,
                          (const uint8_t *)id, strlen(id), (const uint8_t *)t, strlen(t),
                          access);
}

#define R TERN_ACL_READ
#define W TERN_ACL_WRITE

static void covers_and_overlaps(void **state)
{
    (void)state;
#define COV(o, i) tern_acl_filter_covers(o, strlen(o), i, strlen(i))
#define OVL(a, b) tern_acl_filter_overlaps(a, strlen(a), b, strlen(b))
    assert_true(COV("#", "a/b"));
    assert_true(COV("#", "#"));
    assert_true(COV("a/#", "a"));
    assert_true(COV("a/#", "a/+/c"));
    assert_true(COV("a/+", "a/b"));
    assert_true(COV("a/+", "a/+"));
    assert_true(COV("a/+", "a/"));
    assert_true(COV("a/b", "a/b"));
    assert_false(COV("a/+", "a/#"));
    assert_false(COV("a/+", "a/b/c"));
    assert_false(COV("a/b", "a/+"));
    assert_false(COV("a/b", "a"));
    assert_false(COV("a", "a/b"));
    assert_false(COV("#", "$SYS/x"));
    assert_false(COV("+/x", "$SYS/x"));
    assert_true(COV("$SYS/#", "$SYS/x"));
    assert_true(OVL("a/#", "#"));
    assert_true(OVL("a/+/c", "+/b/#"));
    assert_true(OVL("a/b", "a/#"));
    assert_true(OVL("a", "a/#"));
    assert_false(OVL("a/b", "a/c"));
    assert_false(OVL("a/+", "a/b/c"));
    assert_false(OVL("#", "$SYS/x"));
    assert_true(OVL("+", "#"));
    /* Deep topics: no recursion, a 60,000-level filter walks in a loop. */
    size_t n = 120000;
    char *deep = malloc(n + 1);
    for (size_t i = 0; i < n; i += 2) {
        deep[i] = 'x';
        deep[i + 1] = '/';
    }
    deep[n - 1] = '#';
    deep[n] = '\0';
    assert_true(tern_acl_filter_covers(deep, n, deep, n));
    assert_true(tern_acl_filter_overlaps(deep, n, "#", 1));
    assert_false(tern_acl_filter_overlaps(deep, n, "x", 1));
    free(deep);
}

static void mosquitto_example(void **state)
{
    (void)state;
    struct tern_acl *a = parse("# anonymous clients\n"
                               "topic read public/#\n"
                               "\n"
                               "user alice\n"
                               "topic readwrite home/#\n"
                               "topic deny home/secret\n"
                               "topic write cmd/+\n"
                               "user bob with space\n"
                               "topic home/bob\n"
                               "user alice\n"
                               "topic read extra\n"
                               "pattern readwrite devices/%c/#\n"
                               "pattern read users/%u/in\r\n");
    assert_int_equal(tern_acl_rule_count(a), 8);
    /* anonymous: the rules before the first user, and patterns */
    assert_true(ok(a, NULL, "anon1", "public/x", R));
    assert_false(ok(a, NULL, "anon1", "public/x", W));
    assert_false(ok(a, NULL, "anon1", "home/x", R));
    assert_true(ok(a, NULL, "anon1", "devices/anon1/t", W));
    assert_false(ok(a, NULL, "anon1", "users/anon1/in", R)); /* %u: none */
    /* alice: own rules (both `user alice` blocks), deny before allow */
    assert_true(ok(a, "alice", "c1", "home/kitchen", R));
    assert_true(ok(a, "alice", "c1", "home/kitchen", W));
    assert_false(ok(a, "alice", "c1", "home/secret", R));
    assert_false(ok(a, "alice", "c1", "home/secret", W));
    /* home/# overlaps the deny rule: allowed, each delivery checked */
    assert_int_equal(level(a, "alice", "c1", "home/#", R), TERN_ACL_SOME);
    assert_int_equal(level(a, "alice", "c1", "home/+", R), TERN_ACL_SOME);
    assert_int_equal(level(a, "alice", "c1", "home/secret", R), TERN_ACL_NO);
    assert_int_equal(level(a, "alice", "c1", "home/+/x", R), TERN_ACL_ALL);
    assert_int_equal(level(a, "alice", "c1", "home/kitchen", R), TERN_ACL_ALL);
    assert_true(ok(a, "alice", "c1", "cmd/go", W));
    assert_false(ok(a, "alice", "c1", "cmd/go", R));
    assert_true(ok(a, "alice", "c1", "extra", R));
    assert_false(ok(a, "alice", "c1", "public/x", R)); /* anonymous rules are not hers */
    assert_true(ok(a, "alice", "c1", "users/alice/in", R));
    assert_false(ok(a, "alice", "c1", "users/bob/in", R));
    assert_true(ok(a, "alice", "c1", "devices/c1/+", R));
    assert_false(ok(a, "alice", "c1", "devices/c2/x", W));
    assert_false(ok(a, "alice", "c1", "devices/#", R));
    /* a user name with a space */
    assert_true(ok(a, "bob with space", "c2", "home/bob", W));
    assert_false(ok(a, "bob", "c2", "home/bob", W));
    /* an unknown user: patterns only */
    assert_true(ok(a, "carl", "c3", "devices/c3/x", W));
    assert_false(ok(a, "carl", "c3", "public/x", R));
    tern_acl_free(a);
}

static void hostile_ids(void **state)
{
    (void)state;
    struct tern_acl *a = parse("pattern readwrite devices/%c/#\n"
                               "pattern read users/%u\n"
                               "pattern deny private/%c/#\n"
                               "topic read private/open\n");
    /* An id of "#" or "+" would otherwise make devices/#/# or devices/+/#. */
    assert_false(ok(a, "u", "#", "devices/other/x", R));
    assert_false(ok(a, "u", "+", "devices/other/x", W));
    assert_false(ok(a, "u", "a/b", "devices/a/b/x", W));
    assert_false(ok(a, "+", "c", "users/bob", R));
    assert_false(ok(a, "#", "c", "users/x", R));
    assert_false(ok(a, "a/b", "c", "users/a/b", R));
    /* A hostile id fails closed for deny patterns too: nothing is allowed. */
    assert_false(ok(a, NULL, "x/y", "private/open", R));
    assert_true(ok(a, NULL, "good", "private/open", R));
    /* A deny pattern under an allowed filter: the filter is allowed in part, the
     * denied topics are not (per delivery). */
    assert_int_equal(level(a, "u", "dev1", "devices/dev1/#", R), TERN_ACL_ALL);
    struct tern_acl *p = parse("pattern read devices/%c/#\n"
                               "pattern deny devices/%c/cfg\n");
    assert_int_equal(level(p, "u", "dev1", "devices/dev1/#", R), TERN_ACL_SOME);
    assert_int_equal(level(p, "u", "dev1", "devices/dev1/cfg", R), TERN_ACL_NO);
    assert_int_equal(level(p, "u", "dev1", "devices/dev1/cmd", R), TERN_ACL_ALL);
    assert_int_equal(level(p, "u", "dev1", "devices/dev2/cmd", R), TERN_ACL_NO);
    tern_acl_free(p);
    /* A sane id still works, and a pattern with it cannot reach another id. */
    assert_true(ok(a, "u", "dev1", "devices/dev1/t", W));
    assert_false(ok(a, "u", "dev1", "devices/dev2/t", W));
    assert_false(ok(a, "u", "dev", "devices/dev1/t", W));
    /* A long id against many substitutions stays bounded (no huge allocation). */
    char *id = malloc(65536);
    memset(id, 'i', 65535);
    id[65535] = '\0';
    char pat[2048] = "pattern read ";
    for (int i = 0; i < 300; i++)
        strcat(pat, "%c");
    strcat(pat, "\n");
    struct tern_acl *b = parse(pat);
    assert_false(ok(b, "u", id, "x", R));
    tern_acl_free(b);
    free(id);
    tern_acl_free(a);
}

static void expect_bad(const char *text, const char *part)
{
    struct tern_acl *a = (void *)1;
    char err[TERN_ERRMSG_SIZE] = "";
    assert_int_equal(tern_acl_parse(text, strlen(text), &a, err), TERN_EINVAL);
    assert_null(a);
    if (!strstr(err, part))
        fail_msg("\"%s\" not in \"%s\"", part, err);
}

static void bad_files(void **state)
{
    (void)state;
    expect_bad("topics read a\n", "line 1: expected topic, pattern or user");
    expect_bad("# c\nuser\n", "line 2: user: missing name");
    expect_bad("topic read\n", "missing topic");
    expect_bad("topic deny  \n", "missing topic");
    expect_bad("topic read a/#/b\n", "not a valid topic filter");
    expect_bad("topic read a+\n", "not a valid topic filter");
    /* No access word: the whole rest is the topic, read and write. */
    struct tern_acl *a = parse("topic some topic/x\n");
    assert_true(ok(a, NULL, "c", "some topic/x", R | W));
    tern_acl_free(a);
    /* An empty file: nothing allowed (an ACL file is configured). */
    a = parse("");
    assert_false(ok(a, NULL, "c", "x", R));
    tern_acl_free(a);
    /* No ACL: everything allowed. */
    assert_true(ok(NULL, NULL, "c", "x", R | W));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(covers_and_overlaps),
        cmocka_unit_test(mosquitto_example),
        cmocka_unit_test(hostile_ids),
        cmocka_unit_test(bad_files),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
