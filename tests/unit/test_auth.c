/* Password files (node/auth/auth_pw.c) against lines mosquitto_passwd wrote, and the
 * failed-attempt table (node/auth/auth_guard.c). */
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

/* Written by mosquitto_passwd 2.0 (-b; -H sha512 for carol). */
static const char MOSQ_FILE[] =
    "# made by mosquitto_passwd\n"
    "alice:$7$101$kfCTHcgabiK2L/wr$KOZHAeTyJkuyKHvmDJoFNd3PhtlYPejJbPudiCaX7yhaWVhL2XFpN4"
    "nzEh5+YziUpJfCqoBjLTlj5/CPcByY9g==\n"
    "bob:$7$101$f6AUHpexb27Re9Sh$KnTGbHzChhPCOow3hSyLcPAn0eaDP5bEZOmnKv7Smjsv4AAXSdBSz0j7"
    "hKokpi5i9LrPgLJX9CbCoshtsoz1Aw==\r\n"
    "\n"
    "carol:$6$OvRRaUOfByf/"
    "KG0x$GlLECk4ziQugdP3THnLPyUg+DPZFScU0y9C5MIUgDRUJNDGTDUecDbfqnPZ8"
    "zdMmUt9TzEkuv+mnknkDV2liGQ==\n"
    "dave:$7$101$xKAEujVAuROsRIm+$u7uPTvHqAtJqCO40Z5jJWhZIu+FcrxGF54lwxilkMR/"
    "PB4XqTAARGt8Ke"
    "Zil9wRCpac6uYGm44egchpAVuUyHA==";

static int check(const struct tern_pwfile *f, const char *u, const char *pw)
{
    return tern_pwfile_check(f, (const uint8_t *)u, strlen(u), (const uint8_t *)pw,
                             strlen(pw));
}

static void mosquitto_passwd_file(void **state)
{
    (void)state;
    struct tern_pwfile *f;
    char err[TERN_ERRMSG_SIZE] = "";
    assert_int_equal(tern_pwfile_parse(MOSQ_FILE, strlen(MOSQ_FILE), &f, err), TERN_OK);
    assert_int_equal(tern_pwfile_count(f), 4);
    assert_int_equal(check(f, "alice", "secret"), TERN_OK);
    assert_int_equal(check(f, "bob", "p w:x"), TERN_OK);
    assert_int_equal(check(f, "carol", "hunter2"), TERN_OK);
    assert_int_equal(check(f, "dave", ""), TERN_OK);
    assert_int_equal(check(f, "alice", "Secret"), TERN_ENOTFOUND);
    assert_int_equal(check(f, "alice", "secret "), TERN_ENOTFOUND);
    assert_int_equal(check(f, "alice", ""), TERN_ENOTFOUND);
    assert_int_equal(check(f, "carol", "hunter"), TERN_ENOTFOUND);
    assert_int_equal(check(f, "bob", "secret"), TERN_ENOTFOUND);
    assert_int_equal(check(f, "mallory", "secret"), TERN_ENOTFOUND);
    assert_int_equal(check(f, "alic", "secret"), TERN_ENOTFOUND);
    assert_int_equal(check(f, "alicee", "secret"), TERN_ENOTFOUND);
    const char *u;
    size_t ul;
    int kind;
    uint32_t it;
    assert_true(tern_pwfile_entry(f, 2, &u, &ul, &kind, &it));
    assert_int_equal(ul, 5);
    assert_memory_equal(u, "carol", 5);
    assert_int_equal(kind, TERN_PW_SHA512);
    tern_pwfile_free(f);
}

static void hash7_round_trip(void **state)
{
    (void)state;
    char line[256] = "eve:", err[TERN_ERRMSG_SIZE];
    assert_int_equal(
        tern_pw_hash7((const uint8_t *)"pa55", 4, 1000, line + 4, sizeof line - 4),
        TERN_OK);
    assert_memory_equal(line + 4, "$7$1000$", 8);
    char again[200];
    assert_int_equal(tern_pw_hash7((const uint8_t *)"pa55", 4, 1000, again, sizeof again),
                     TERN_OK);
    assert_string_not_equal(line + 4, again); /* a fresh salt each time */
    struct tern_pwfile *f;
    assert_int_equal(tern_pwfile_parse(line, strlen(line), &f, err), TERN_OK);
    assert_int_equal(check(f, "eve", "pa55"), TERN_OK);
    assert_int_equal(check(f, "eve", "pa56"), TERN_ENOTFOUND);
    tern_pwfile_free(f);
    assert_int_equal(tern_pw_hash7((const uint8_t *)"x", 1, 0, again, sizeof again),
                     TERN_EINVAL);
    assert_int_equal(tern_pw_hash7((const uint8_t *)"x", 1, 1000, again, 100),
                     TERN_EINVAL);
}

static void expect_bad(const char *text, const char *msg_part)
{
    struct tern_pwfile *f = (void *)1;
    char err[TERN_ERRMSG_SIZE] = "";
    assert_int_equal(tern_pwfile_parse(text, strlen(text), &f, err), TERN_EINVAL);
    assert_null(f);
    if (!strstr(err, msg_part))
        fail_msg("\"%s\" not in \"%s\"", msg_part, err);
}

static void bad_files(void **state)
{
    (void)state;
    const char *h64 =
        "GlLECk4ziQugdP3THnLPyUg+DPZFScU0y9C5MIUgDRUJNDGTDUecDbfqnPZ8zdMmUt9TzEk"
        "uv+mnknkDV2liGQ==";
    char buf[512];
    expect_bad("alice:secret\n", "line 1: not a $6$ or $7$");
    expect_bad("# ok\nnocolon\n", "line 2: expected USER:HASH");
    snprintf(buf, sizeof buf, ":$6$c2FsdA==$%s\n", h64);
    expect_bad(buf, "user name");
    snprintf(buf, sizeof buf, "a:$7$0$c2FsdA==$%s\n", h64);
    expect_bad(buf, "iterations out of range");
    snprintf(buf, sizeof buf, "a:$7$99999999999999999999$c2FsdA==$%s\n", h64);
    expect_bad(buf, "iterations out of range");
    snprintf(buf, sizeof buf, "a:$7$x$c2FsdA==$%s\n", h64);
    expect_bad(buf, "iterations must be");
    expect_bad("a:$6$c2FsdA==$AAAA\n", "hash is not base64 of 64 bytes");
    snprintf(buf, sizeof buf, "a:$6$c2F*dA==$%s\n", h64);
    expect_bad(buf, "salt is not base64");
    snprintf(buf, sizeof buf, "a:$6$$%s\n", h64);
    expect_bad(buf, "salt is not base64");
    snprintf(buf, sizeof buf, "a:$6$c2FsdA==%s\n", h64);
    expect_bad(buf, "missing '$'");
    snprintf(buf, sizeof buf, "a:$6$c2FsdA==$%s\nb:x\n", h64);
    expect_bad(buf, "line 2");
    snprintf(buf, sizeof buf, "a:$6$c2FsdA==$%s\na:$6$c2FsdA==$%s\n", h64, h64);
    expect_bad(buf, "appears twice");
    /* Empty and comment-only files parse to no users. */
    struct tern_pwfile *f;
    char err[TERN_ERRMSG_SIZE];
    assert_int_equal(tern_pwfile_parse("", 0, &f, err), TERN_OK);
    assert_int_equal(tern_pwfile_count(f), 0);
    assert_int_equal(check(f, "a", "b"), TERN_ENOTFOUND);
    tern_pwfile_free(f);
}

static void guard_backoff(void **state)
{
    (void)state;
    static struct tern_guard g;
    tern_guard_init(&g, 1, 2);
    uint8_t a[16] = {127, 0, 0, 1}, b[16] = {127, 0, 0, 2};
    assert_true(tern_guard_allow(&g, a, 1000));
    tern_guard_fail(&g, a, 1000);
    assert_false(tern_guard_allow(&g, a, 1099));
    assert_true(tern_guard_allow(&g, a, 1100));
    assert_true(tern_guard_allow(&g, b, 1000)); /* another address is not slowed */
    tern_guard_fail(&g, a, 1100);
    assert_false(tern_guard_allow(&g, a, 1299));
    assert_true(tern_guard_allow(&g, a, 1300));
    for (int i = 0; i < 40; i++)
        tern_guard_fail(&g, a, 2000);
    assert_false(tern_guard_allow(&g, a, 2000 + TERN_GUARD_MAX_MS - 1));
    assert_true(tern_guard_allow(&g, a, 2000 + TERN_GUARD_MAX_MS));
    tern_guard_ok(&g, a);
    assert_true(tern_guard_allow(&g, a, 2001));
    /* Many addresses: the table stays bounded, the newest failures are kept. */
    for (uint32_t i = 0; i < 100000; i++) {
        uint8_t x[16] = {10, (uint8_t)(i >> 16), (uint8_t)(i >> 8), (uint8_t)i};
        tern_guard_fail(&g, x, 5000 + i);
    }
    uint8_t last[16] = {10, (uint8_t)(99999 >> 16), (uint8_t)(99999 >> 8),
                        (uint8_t)99999};
    assert_false(tern_guard_allow(&g, last, 5000 + 99999));
}

static void siphash_vector(void **state)
{
    (void)state;
    /* The reference implementation's first and last 64-bit vectors: key 00..0f,
     * input 00..(len-1). */
    uint64_t key[2] = {0x0706050403020100ULL, 0x0f0e0d0c0b0a0908ULL};
    uint8_t in[64];
    for (int i = 0; i < 64; i++)
        in[i] = (uint8_t)i;
    assert_int_equal(tern_siphash(key, in, 0), 0x726fdb47dd0e0e31ULL);
    assert_int_equal(tern_siphash(key, in, 63), 0x958a324ceb064572ULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(mosquitto_passwd_file),
        cmocka_unit_test(hash7_round_trip),
        cmocka_unit_test(bad_files),
        cmocka_unit_test(guard_backoff),
        cmocka_unit_test(siphash_vector),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
