/* SCRAM-SHA-256 (node/auth/auth_scram.c) against the example of RFC 7677 section 3
 * (user "user", password "pencil"), the verifier's text form and the password
 * file's SCRAM entries, and the messages a server must refuse. */
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
#include "tern/scram.h"

/* RFC 7677, section 3. */
#define C_FIRST "n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
#define S_NONCE "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
#define S_FIRST                                                                          \
    "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,"   \
    "i=4096"
#define C_FINAL                                                                          \
    "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+"     \
    "Ute9ytag9zjfMHgsqmmiz7AndVQ="
#define S_FINAL "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
/* The salt of the example, and the verifier it gives for "pencil". */
static const uint8_t SALT[] = {0x5b, 0x6d, 0x99, 0x68, 0x9d, 0x12, 0x35, 0x8e,
                               0xec, 0xa0, 0x4b, 0x14, 0x12, 0x36, 0xfa, 0x81};
#define VERIFIER                                                                         \
    "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$"                                       \
    "WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbs"                                            \
    "T4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="

static void pencil(struct tern_scram_verifier *v)
{
    assert_int_equal(tern_scram_verifier_make((const uint8_t *)"pencil", 6, 4096, SALT,
                                              sizeof SALT, v),
                     TERN_OK);
}

static void rfc7677_verifier(void **state)
{
    (void)state;
    struct tern_scram_verifier v, w;
    pencil(&v);
    char text[TERN_SCRAM_VERIFIER_MAX];
    tern_scram_verifier_format(&v, text);
    assert_string_equal(text, VERIFIER);
    assert_null(tern_scram_verifier_parse(text, strlen(text), &w));
    assert_memory_equal(&v, &w, sizeof v);
    assert_true(tern_scram_verifier_check(&w, (const uint8_t *)"pencil", 6));
    assert_false(tern_scram_verifier_check(&w, (const uint8_t *)"pencil ", 7));
    assert_false(tern_scram_verifier_check(&w, (const uint8_t *)"", 0));
}

static void start(struct tern_scram *s, const struct tern_scram_verifier *v)
{
    memset(s, 0, sizeof *s);
    assert_int_equal(
        tern_scram_client_first(s, (const uint8_t *)C_FIRST, strlen(C_FIRST)), TERN_OK);
    assert_string_equal(s->user, "user");
    assert_int_equal(tern_scram_server_first(s, v, S_NONCE, strlen(S_NONCE)), TERN_OK);
    assert_string_equal(s->server_first, S_FIRST);
}

static int final(struct tern_scram *s, const char *msg, char *out, size_t *n)
{
    return tern_scram_client_final(s, (const uint8_t *)msg, strlen(msg), out, n);
}

static void rfc7677_exchange(void **state)
{
    (void)state;
    struct tern_scram_verifier v;
    pencil(&v);
    struct tern_scram s;
    start(&s, &v);
    char out[TERN_SCRAM_FINAL_MAX];
    size_t n = 0;
    assert_int_equal(final(&s, C_FINAL, out, &n), TERN_OK);
    assert_int_equal(n, strlen(S_FINAL));
    assert_memory_equal(out, S_FINAL, n);
    tern_scram_free(&s);
}

static void wrong_proofs(void **state)
{
    (void)state;
    struct tern_scram_verifier v, other;
    pencil(&v);
    assert_int_equal(tern_scram_verifier_make((const uint8_t *)"pencils", 7, 4096, SALT,
                                              sizeof SALT, &other),
                     TERN_OK);
    char out[TERN_SCRAM_FINAL_MAX];
    size_t n = 99;
    struct tern_scram s;
    /* The right proof against another password's verifier. */
    start(&s, &other);
    assert_int_equal(final(&s, C_FINAL, out, &n), TERN_ENOTFOUND);
    assert_int_equal(n, 0);
    tern_scram_free(&s);
    /* One bit of the proof changed ('d' -> 'e' in its first character). */
    char bad[] = C_FINAL;
    char *p = strstr(bad, ",p=") + 3;
    *p = 'e';
    start(&s, &v);
    assert_int_equal(final(&s, bad, out, &n), TERN_ENOTFOUND);
    tern_scram_free(&s);
    /* Another nonce, channel binding, or a proof of the wrong length: malformed. */
    const char *malformed[] = {
        "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k1,p=dHzbZapWIk4jUhN+"
        "Ute9ytag9zjfMHgsqmmiz7AndVQ=",
        "c=eSws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+"
        "Ute9ytag9zjfMHgsqmmiz7AndVQ=",
        "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapW",
        "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
        "c=biws,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
        "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+"
        "Ute9ytag9zjfMHgsqmmiz7AndVQ=,x=1",
        "",
    };
    for (size_t i = 0; i < sizeof malformed / sizeof malformed[0]; i++) {
        start(&s, &v);
        assert_int_equal(final(&s, malformed[i], out, &n), TERN_EMALFORMED);
        tern_scram_free(&s);
    }
    /* An extension before the proof is part of the signed message: the RFC's
     * proof no longer matches. */
    start(&s, &v);
    assert_int_equal(final(&s,
                           "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                           "x=1,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
                           out, &n),
                     TERN_ENOTFOUND);
    tern_scram_free(&s);
    /* Out of turn. */
    memset(&s, 0, sizeof s);
    assert_int_equal(final(&s, C_FINAL, out, &n), TERN_EINVAL);
}

static int first(const char *msg)
{
    struct tern_scram s;
    memset(&s, 0, sizeof s);
    int rc = tern_scram_client_first(&s, (const uint8_t *)msg, strlen(msg));
    tern_scram_free(&s);
    return rc;
}

static void client_first_messages(void **state)
{
    (void)state;
    assert_int_equal(first("y,,n=user,r=abc"), TERN_OK);
    assert_int_equal(first("n,,n=user,r=abc,x=ext"), TERN_OK);
    assert_int_equal(first("p=tls-unique,,n=user,r=abc"), TERN_EUNSUPPORTED);
    assert_int_equal(first("n,a=admin,n=user,r=abc"), TERN_EUNSUPPORTED);
    assert_int_equal(first("n,,m=x,n=user,r=abc"), TERN_EUNSUPPORTED);
    assert_int_equal(first("n,,n=,r=abc"), TERN_EMALFORMED);
    assert_int_equal(first("n,,n=user"), TERN_EMALFORMED);
    assert_int_equal(first("n,,n=user,r="), TERN_EMALFORMED);
    assert_int_equal(first("n,,r=abc,n=user"), TERN_EMALFORMED);
    assert_int_equal(first("n,,n=us=er,r=abc"), TERN_EMALFORMED); /* bad escape */
    assert_int_equal(first("n,,n=user,r=abc,"), TERN_EMALFORMED);
    assert_int_equal(first("x,,n=user,r=abc"), TERN_EMALFORMED);
    assert_int_equal(first("n,,n=\xc3\x28,r=abc"), TERN_EMALFORMED); /* not UTF-8 */
    assert_int_equal(first(""), TERN_EMALFORMED);
    /* Escapes: "=2C" is ',' and "=3D" is '='. */
    struct tern_scram s;
    memset(&s, 0, sizeof s);
    const char *m = "n,,n=a=2Cb=3Dc,r=abc";
    assert_int_equal(tern_scram_client_first(&s, (const uint8_t *)m, strlen(m)), TERN_OK);
    assert_string_equal(s.user, "a,b=c");
    /* And the server's nonce must be printable, without ','. */
    struct tern_scram_verifier v;
    pencil(&v);
    assert_int_equal(tern_scram_server_first(&s, &v, "a,b", 3), TERN_EINVAL);
    assert_int_equal(tern_scram_server_first(&s, &v, "", 0), TERN_EINVAL);
    tern_scram_free(&s);
    /* Long messages are refused before anything is parsed. */
    char big[TERN_SCRAM_MSG_MAX + 20] = "n,,n=user,r=";
    memset(big + strlen(big), 'x', TERN_SCRAM_MSG_MAX);
    big[sizeof big - 1] = '\0';
    assert_int_equal(first(big), TERN_ETOOBIG);
}

static void verifier_texts(void **state)
{
    (void)state;
    struct tern_scram_verifier v;
    const char *bad[] = {
        "SCRAM-SHA-256$:W22ZaJ0SNY7soEsUEjb6gQ==$"
        "WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY="
        ":wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
        "SCRAM-SHA-256$0:W22ZaJ0SNY7soEsUEjb6gQ==$"
        "WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY="
        ":wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
        "SCRAM-SHA-256$99999999999:W22ZaJ0SNY7soEsUEjb6gQ==$"
        "WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcX"
        "kuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
        "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcX",
        "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm:"
        "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQx"
        "SrmfPwDl2dU=",
        "SCRAM-SHA-256$4096:!!$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:"
        "wfPLwcE6nTWhTAmQ7"
        "tl2KeoiWGPlZqQxSrmfPwDl2dU=",
        "SCRAM-SHA-1$4096:W22ZaJ0SNY7soEsUEjb6gQ==$x:y",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_non_null(tern_scram_verifier_parse(bad[i], strlen(bad[i]), &v));
}

/* A password file with a SCRAM entry beside Mosquitto's: CONNECT passwords are
 * checked against it, and only it has a verifier for SCRAM. */
static void password_file_entries(void **state)
{
    (void)state;
    char entry[TERN_SCRAM_VERIFIER_MAX], h7[200];
    assert_int_equal(tern_pw_scram((const uint8_t *)"s3cret", 6, 4096, entry), TERN_OK);
    assert_int_equal(tern_pw_scram((const uint8_t *)"x", 1, 0, entry), TERN_EINVAL);
    assert_int_equal(tern_pw_scram((const uint8_t *)"s3cret", 6, 4096, entry), TERN_OK);
    assert_int_equal(tern_pw_hash7((const uint8_t *)"old", 3, 1000, h7, sizeof h7),
                     TERN_OK);
    char text[1024];
    snprintf(text, sizeof text, "alice:%s\nuser:%s\ncarol:%s\n", entry, VERIFIER, h7);
    struct tern_pwfile *f = NULL;
    char err[TERN_ERRMSG_SIZE] = "";
    assert_int_equal(tern_pwfile_parse(text, strlen(text), &f, err), TERN_OK);
    assert_int_equal(tern_pwfile_count(f), 3);
#define CHECK(u, p)                                                                      \
    tern_pwfile_check(f, (const uint8_t *)u, strlen(u), (const uint8_t *)p, strlen(p))
    assert_int_equal(CHECK("alice", "s3cret"), TERN_OK);
    assert_int_equal(CHECK("alice", "s3cret!"), TERN_ENOTFOUND);
    assert_int_equal(CHECK("user", "pencil"), TERN_OK);
    assert_int_equal(CHECK("carol", "old"), TERN_OK);
    assert_int_equal(CHECK("mallory", "pencil"), TERN_ENOTFOUND);
    struct tern_scram_verifier v, want;
    pencil(&want);
    assert_true(tern_pwfile_scram(f, (const uint8_t *)"user", 4, &v));
    assert_memory_equal(&v, &want, sizeof v);
    assert_true(tern_pwfile_scram(f, (const uint8_t *)"alice", 5, &v));
    assert_int_equal(v.iterations, 4096);
    assert_int_equal(v.salt_len, TERN_SCRAM_SALT_LEN);
    assert_false(tern_pwfile_scram(f, (const uint8_t *)"carol", 5, &v)); /* $7$ */
    assert_false(tern_pwfile_scram(f, (const uint8_t *)"mallory", 7, &v));
    tern_pwfile_free(f);
    /* A broken verifier names its line. */
    const char *broken = "alice:SCRAM-SHA-256$4096:abc\n";
    assert_int_equal(tern_pwfile_parse(broken, strlen(broken), &f, err), TERN_EINVAL);
    assert_non_null(strstr(err, "line 1"));
    assert_non_null(strstr(err, "SCRAM-SHA-256$"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(rfc7677_verifier), cmocka_unit_test(rfc7677_exchange),
        cmocka_unit_test(wrong_proofs),     cmocka_unit_test(client_first_messages),
        cmocka_unit_test(verifier_texts),   cmocka_unit_test(password_file_entries),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
