/* The TLS engine (node/tls/tls.c): two engines, a client and a server, talking in
 * memory. The certificates come from tests/tls/make_certs.sh (openssl CLI). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "tern/tls.h"

static char pki[256];

static const char *f(const char *name)
{
    static char buf[64][512]; /* a ring: enough for one test's options */
    static int i;
    char *b = buf[i++ % 64];
    snprintf(b, 512, "%s/%s", pki, name);
    return b;
}

static int make_pki(void **state)
{
    (void)state;
    snprintf(pki, sizeof pki, "/tmp/tern_test_tls_XXXXXX");
    if (!mkdtemp(pki))
        return -1;
    const char *file = __FILE__;
    const char *tail = strstr(file, "tests/unit/test_tls.c");
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "sh %.*stests/tls/make_certs.sh %s", (int)(tail - file),
             file, pki);
    return system(cmd) == 0 ? 0 : -1;
}

static int remove_pki(void **state)
{
    (void)state;
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf %s", pki);
    return system(cmd) == 0 ? 0 : -1;
}

/* Moves every pending byte of ciphertext from one engine to the other. */
static size_t pump(struct tern_tls_engine *from, struct tern_tls_engine *to)
{
    uint8_t buf[4096];
    size_t total = 0, n;
    while ((n = tern_tls_engine_take(from, buf, sizeof buf)) > 0) {
        assert_int_equal(tern_tls_engine_recv(to, buf, n), TERN_OK);
        total += n;
    }
    return total;
}

/* Runs both handshakes until neither moves; returns the server's result. */
static int handshake(struct tern_tls_engine *c, struct tern_tls_engine *s, int *crc)
{
    int src = TERN_EAGAIN;
    *crc = TERN_EAGAIN;
    for (int i = 0; i < 20; i++) {
        if (*crc == TERN_EAGAIN)
            *crc = tern_tls_engine_handshake(c);
        size_t moved = pump(c, s);
        if (src == TERN_EAGAIN)
            src = tern_tls_engine_handshake(s);
        moved += pump(s, c);
        if (moved == 0 && (*crc != TERN_EAGAIN || src != TERN_EAGAIN))
            break;
    }
    /* A client whose last flight fails on the server sees the alert on read. */
    if (*crc == TERN_OK && src != TERN_OK) {
        uint8_t b[16];
        size_t got;
        *crc = tern_tls_engine_read(c, b, sizeof b, &got);
    }
    return src;
}

struct pair {
    struct tern_tls_ctx *cctx, *sctx;
    struct tern_tls_engine *c, *s;
};

static void pair_free(struct pair *p)
{
    tern_tls_engine_free(p->c);
    tern_tls_engine_free(p->s);
    tern_tls_ctx_free(p->cctx);
    tern_tls_ctx_free(p->sctx);
}

static void pair_new(struct pair *p, const struct tern_tls_opts *so,
                     const struct tern_tls_opts *co)
{
    char errmsg[TERN_ERRMSG_SIZE] = "";
    memset(p, 0, sizeof *p);
    if (tern_tls_ctx_new(&p->sctx, so, errmsg) != TERN_OK)
        fail_msg("server: %s", errmsg);
    if (tern_tls_ctx_new(&p->cctx, co, errmsg) != TERN_OK)
        fail_msg("client: %s", errmsg);
    p->s = tern_tls_engine_new(p->sctx);
    p->c = tern_tls_engine_new(p->cctx);
    assert_non_null(p->s);
    assert_non_null(p->c);
}

static struct tern_tls_opts server_opts(void)
{
    struct tern_tls_opts o = {
        .server = true, .cert_file = f("server.pem"), .key_file = f("server.key")};
    return o;
}

static struct tern_tls_opts client_opts(const char *cert)
{
    struct tern_tls_opts o = {.ca_file = f("ca.pem"), .server_name = "localhost"};
    if (cert) {
        char *pem = malloc(64), *key = malloc(64);
        snprintf(pem, 64, "%s.pem", cert);
        snprintf(key, 64, "%s.key", cert);
        o.cert_file = strdup(f(pem));
        o.key_file = strdup(f(key));
        free(pem);
        free(key);
    }
    return o;
}

static void client_opts_free(struct tern_tls_opts *o)
{
    free((char *)o->cert_file);
    free((char *)o->key_file);
}

/* Handshake, ALPN "mqtt", SNI, then data both ways, larger than a record. */
static void test_handshake_and_data(void **state)
{
    (void)state;
    struct tern_tls_opts so = server_opts(), co = client_opts(NULL);
    struct pair p;
    pair_new(&p, &so, &co);
    int crc;
    assert_int_equal(handshake(p.c, p.s, &crc), TERN_OK);
    assert_int_equal(crc, TERN_OK);
    assert_true(tern_tls_engine_established(p.s));
    char alpn[16];
    assert_string_equal(tern_tls_engine_alpn(p.s, alpn, sizeof alpn), "mqtt");
    assert_string_equal(tern_tls_engine_sni(p.s), "localhost");
    assert_string_equal(tern_tls_engine_version(p.s), "TLSv1.3");
    char cn[64];
    assert_int_equal(tern_tls_engine_peer_cn(p.s, cn, sizeof cn), TERN_ENOTFOUND);

    size_t big = 100000;
    uint8_t *msg = malloc(big), *got = malloc(big);
    for (size_t i = 0; i < big; i++)
        msg[i] = (uint8_t)(i * 7);
    assert_int_equal(tern_tls_engine_write(p.c, msg, big), TERN_OK);
    pump(p.c, p.s);
    size_t have = 0, n;
    int rc;
    while ((rc = tern_tls_engine_read(p.s, got + have, big - have, &n)) == TERN_OK)
        have += n;
    assert_int_equal(rc, TERN_EAGAIN);
    assert_int_equal(have, big);
    assert_memory_equal(msg, got, big);

    /* The other way, fed one byte at a time: partial records wait. */
    assert_int_equal(tern_tls_engine_write(p.s, (const uint8_t *)"pong", 4), TERN_OK);
    uint8_t b[4096];
    size_t len = tern_tls_engine_take(p.s, b, sizeof b);
    assert_true(len > 4);
    have = 0;
    for (size_t i = 0; i < len; i++) {
        assert_int_equal(tern_tls_engine_recv(p.c, b + i, 1), TERN_OK);
        rc = tern_tls_engine_read(p.c, got + have, big - have, &n);
        if (i + 1 < len) {
            assert_int_equal(rc, TERN_EAGAIN);
        } else {
            assert_int_equal(rc, TERN_OK);
            have += n;
        }
    }
    assert_int_equal(have, 4);
    assert_memory_equal(got, "pong", 4);

    /* close_notify reads as the end of the stream. */
    tern_tls_engine_shutdown(p.c);
    pump(p.c, p.s);
    assert_int_equal(tern_tls_engine_read(p.s, got, big, &n), TERN_ESHUTDOWN);
    free(msg);
    free(got);
    pair_free(&p);
}

/* A client certificate, required and verified: its CN is the identity. */
static void test_client_certificate(void **state)
{
    (void)state;
    struct tern_tls_opts so = server_opts();
    so.ca_file = f("ca.pem");
    so.crl_file = f("crl.pem");
    so.require_certificate = true;
    const struct {
        const char *cert;
        int want;
        const char *why;
    } cases[] = {
        {"client", TERN_OK, NULL},
        {NULL, TERN_EPROTO, "certificate"},
        {"expired", TERN_EPROTO, "certificate has expired"},
        {"revoked", TERN_EPROTO, "certificate revoked"},
        {"other", TERN_EPROTO, "unable to get local issuer certificate"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct tern_tls_opts co = client_opts(cases[i].cert);
        struct pair p;
        pair_new(&p, &so, &co);
        int crc;
        int src = handshake(p.c, p.s, &crc);
        if (src != cases[i].want)
            fail_msg("%s: server handshake %d, wanted %d (%s)", cases[i].cert, src,
                     cases[i].want, tern_tls_engine_error(p.s));
        if (cases[i].why) {
            assert_int_not_equal(crc, TERN_OK); /* the client learns it too */
            if (!strstr(tern_tls_engine_error(p.s), cases[i].why))
                fail_msg("%s: \"%s\", wanted \"%s\"", cases[i].cert,
                         tern_tls_engine_error(p.s), cases[i].why);
        } else {
            char cn[64];
            assert_int_equal(tern_tls_engine_peer_cn(p.s, cn, sizeof cn), TERN_OK);
            assert_string_equal(cn, "device-1");
            assert_int_equal(tern_tls_engine_peer_cn(p.s, cn, 4), TERN_ETOOBIG);
        }
        pair_free(&p);
        client_opts_free(&co);
    }
}

/* The client refuses a server its CA did not sign, or of another name. */
static void test_client_verifies_server(void **state)
{
    (void)state;
    struct tern_tls_opts so = server_opts(), co = client_opts(NULL);
    co.ca_file = f("other-ca.pem");
    struct pair p;
    pair_new(&p, &so, &co);
    int crc;
    handshake(p.c, p.s, &crc);
    assert_int_equal(crc, TERN_EPROTO);
    assert_non_null(strstr(tern_tls_engine_error(p.c), "certificate verify failed"));
    pair_free(&p);

    co = client_opts(NULL);
    co.server_name = "elsewhere.example";
    pair_new(&p, &so, &co);
    handshake(p.c, p.s, &crc);
    assert_int_equal(crc, TERN_EPROTO);
    assert_non_null(strstr(tern_tls_engine_error(p.c), "hostname mismatch"));
    pair_free(&p);
}

/* tls_min_version 1.3 refuses a TLS 1.2 client; ciphers apply to 1.2. */
static void test_versions(void **state)
{
    (void)state;
    struct tern_tls_opts so = server_opts(), co = client_opts(NULL);
    co.max_tls_1_2 = true;
    struct pair p;
    char errmsg[TERN_ERRMSG_SIZE];
    int crc;
    pair_new(&p, &so, &co);
    assert_int_equal(handshake(p.c, p.s, &crc), TERN_OK);
    assert_string_equal(tern_tls_engine_version(p.s), "TLSv1.2");
    pair_free(&p);

    so.min_version = TERN_TLS_1_3;
    pair_new(&p, &so, &co);
    assert_int_equal(handshake(p.c, p.s, &crc), TERN_EPROTO);
    assert_non_null(strstr(tern_tls_engine_error(p.s), "unsupported protocol"));
    pair_free(&p);

    so = server_opts();
    so.ciphers = "ECDHE-RSA-AES128-GCM-SHA256";
    co.ciphers = "ECDHE-RSA-AES256-GCM-SHA384";
    pair_new(&p, &so, &co);
    assert_int_equal(handshake(p.c, p.s, &crc), TERN_EPROTO);
    assert_non_null(strstr(tern_tls_engine_error(p.s), "no shared cipher"));
    pair_free(&p);

    so.ciphers = "NOT-A-CIPHER";
    struct tern_tls_ctx *ctx;
    assert_int_equal(tern_tls_ctx_new(&ctx, &so, errmsg), TERN_EINVAL);
    assert_non_null(strstr(errmsg, "ciphers: "));
    so = server_opts();
    so.ciphersuites = "TLS_NOPE";
    assert_int_equal(tern_tls_ctx_new(&ctx, &so, errmsg), TERN_EINVAL);
    assert_non_null(strstr(errmsg, "ciphersuites: "));
}

/* Each bad file is named in the message, with OpenSSL's reason. */
static void test_ctx_errors(void **state)
{
    (void)state;
    struct tern_tls_ctx *ctx;
    char errmsg[TERN_ERRMSG_SIZE];
    struct tern_tls_opts o = server_opts();
    o.cert_file = f("missing.pem");
    assert_int_not_equal(tern_tls_ctx_new(&ctx, &o, errmsg), TERN_OK);
    assert_non_null(strstr(errmsg, "cert_file: cannot use"));
    o = server_opts();
    o.key_file = f("client.key"); /* not the certificate's key */
    assert_int_not_equal(tern_tls_ctx_new(&ctx, &o, errmsg), TERN_OK);
    assert_non_null(strstr(errmsg, "key_file: "));
    o = server_opts();
    o.ca_file = f("ca.pem");
    o.crl_file = f("ca.pem"); /* a certificate, not a CRL */
    assert_int_not_equal(tern_tls_ctx_new(&ctx, &o, errmsg), TERN_OK);
    assert_non_null(strstr(errmsg, "crl_file: no CRL"));
    o = server_opts();
    o.require_certificate = true;
    assert_int_equal(tern_tls_ctx_new(&ctx, &o, errmsg), TERN_EINVAL);
    assert_non_null(strstr(errmsg, "require_certificate: needs ca_file"));
    o = server_opts();
    o.key_file = NULL;
    assert_int_equal(tern_tls_ctx_new(&ctx, &o, errmsg), TERN_EINVAL);
    assert_non_null(strstr(errmsg, "key_file: required"));
}

/* Garbage instead of a ClientHello fails the handshake, with a reason. */
static void test_garbage(void **state)
{
    (void)state;
    struct tern_tls_opts so = server_opts();
    struct tern_tls_ctx *ctx;
    char errmsg[TERN_ERRMSG_SIZE];
    assert_int_equal(tern_tls_ctx_new(&ctx, &so, errmsg), TERN_OK);
    struct tern_tls_engine *s = tern_tls_engine_new(ctx);
    const char *junk = "\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00";
    assert_int_equal(tern_tls_engine_recv(s, (const uint8_t *)junk, 14), TERN_OK);
    assert_int_equal(tern_tls_engine_handshake(s), TERN_EPROTO);
    assert_non_null(strstr(tern_tls_engine_error(s), "wrong version number"));
    tern_tls_engine_free(s);
    tern_tls_ctx_free(ctx);
}

/* A context freed while an engine made from it lives (reload): the engine
 * goes on. */
static void test_ctx_replaced(void **state)
{
    (void)state;
    struct tern_tls_opts so = server_opts(), co = client_opts(NULL);
    struct pair p;
    pair_new(&p, &so, &co);
    tern_tls_ctx_free(p.sctx);
    p.sctx = NULL;
    int crc;
    assert_int_equal(handshake(p.c, p.s, &crc), TERN_OK);
    assert_int_equal(tern_tls_engine_write(p.s, (const uint8_t *)"x", 1), TERN_OK);
    pair_free(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_handshake_and_data),
        cmocka_unit_test(test_client_certificate),
        cmocka_unit_test(test_client_verifies_server),
        cmocka_unit_test(test_versions),
        cmocka_unit_test(test_ctx_errors),
        cmocka_unit_test(test_garbage),
        cmocka_unit_test(test_ctx_replaced),
    };
    return cmocka_run_group_tests(tests, make_pki, remove_pki);
}
