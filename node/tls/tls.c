/* TLS engine over memory BIOs (include/tls/tern/tls.h).
 *
 * Each engine is an SSL with two memory BIOs: `in` holds the ciphertext the
 * socket delivered, `out` the ciphertext to send. OpenSSL never sees a socket,
 * so the engine is driven the same way by libuv (conn.c), by a unit test and by
 * a fuzzer. Errors are read off OpenSSL's error queue right after the call that
 * failed (cleared before each call) and kept as text for the log.
 */
#include "tern/tls.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#define ALPN_MQTT "\x04mqtt"
#define ERR_TEXT_MAX 256
#define REASON_MAX 120

struct tern_tls_ctx {
    SSL_CTX *ssl_ctx;
};

struct tern_tls_engine {
    SSL *ssl;
    BIO *in, *out; /* owned by ssl */
    bool established;
    char error[ERR_TEXT_MAX];
};

/* "what: OpenSSL's reason" into errmsg; the queue is emptied. */
static int ctx_error(char *errmsg, int rc, const char *what, const char *file)
{
    unsigned long e = ERR_peek_last_error();
    char reason[REASON_MAX] = "";
    if (e)
        ERR_error_string_n(e, reason, sizeof(reason));
    ERR_clear_error();
    snprintf(errmsg, TERN_ERRMSG_SIZE, "%s: cannot use \"%.80s\"%s%s", what,
             file ? file : "", reason[0] ? ": " : "", reason);
    return rc;
}

static bool given(const char *s)
{
    return s && s[0];
}

/* Offers nothing but picks "mqtt" when the client offers it; a client that
 * offers no ALPN, or others only, is served without (as by Mosquitto). */
static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen, void *arg)
{
    (void)ssl;
    (void)arg;
    unsigned char *sel = NULL;
    if (SSL_select_next_proto(&sel, outlen, (const unsigned char *)ALPN_MQTT,
                              sizeof(ALPN_MQTT) - 1, in,
                              inlen) == OPENSSL_NPN_NEGOTIATED) {
        *out = sel;
        return SSL_TLSEXT_ERR_OK;
    }
    return SSL_TLSEXT_ERR_NOACK;
}

/* Every CRL in a PEM file into the context's store; leaf certificates are then
 * checked against them (a CA without a CRL in the file fails the check, as
 * OpenSSL does: a CRL file must cover the CAs it is used with). */
static int load_crls(SSL_CTX *sc, const char *path, char *errmsg)
{
    BIO *b = BIO_new_file(path, "r");
    if (!b)
        return ctx_error(errmsg, TERN_EIO, "crl_file", path);
    X509_STORE *st = SSL_CTX_get_cert_store(sc);
    int n = 0;
    X509_CRL *crl;
    while ((crl = PEM_read_bio_X509_CRL(b, NULL, NULL, NULL)) != NULL) {
        int ok = X509_STORE_add_crl(st, crl);
        X509_CRL_free(crl);
        if (!ok) {
            BIO_free(b);
            return ctx_error(errmsg, TERN_EINVAL, "crl_file", path);
        }
        n++;
    }
    BIO_free(b);
    ERR_clear_error(); /* the end of the file reads as "no start line" */
    if (n == 0) {
        snprintf(errmsg, TERN_ERRMSG_SIZE, "crl_file: no CRL in \"%.80s\"", path);
        return TERN_EINVAL;
    }
    X509_STORE_set_flags(st, X509_V_FLAG_CRL_CHECK);
    return TERN_OK;
}

static int ctx_setup(SSL_CTX *sc, const struct tern_tls_opts *o, char *errmsg)
{
    SSL_CTX_set_min_proto_version(sc, o->min_version == TERN_TLS_1_3 ? TLS1_3_VERSION
                                                                     : TLS1_2_VERSION);
    if (o->max_tls_1_2)
        SSL_CTX_set_max_proto_version(sc, TLS1_2_VERSION);
    /* Idle connections give their record buffers back (docs/benchmarks.md,
     * memory per idle connection). */
    SSL_CTX_set_mode(sc, SSL_MODE_RELEASE_BUFFERS);
    if (given(o->ciphers) && !SSL_CTX_set_cipher_list(sc, o->ciphers))
        return ctx_error(errmsg, TERN_EINVAL, "ciphers", o->ciphers);
    if (given(o->ciphersuites) && !SSL_CTX_set_ciphersuites(sc, o->ciphersuites))
        return ctx_error(errmsg, TERN_EINVAL, "ciphersuites", o->ciphersuites);
    if (given(o->cert_file) && SSL_CTX_use_certificate_chain_file(sc, o->cert_file) != 1)
        return ctx_error(errmsg, TERN_EINVAL, "cert_file", o->cert_file);
    if (given(o->key_file)) {
        if (SSL_CTX_use_PrivateKey_file(sc, o->key_file, SSL_FILETYPE_PEM) != 1)
            return ctx_error(errmsg, TERN_EINVAL, "key_file", o->key_file);
        if (SSL_CTX_check_private_key(sc) != 1)
            return ctx_error(errmsg, TERN_EINVAL, "key_file", o->key_file);
    }
    if (o->server && (!given(o->cert_file) || !given(o->key_file))) {
        snprintf(errmsg, TERN_ERRMSG_SIZE, "%s: required for a TLS server",
                 given(o->cert_file) ? "key_file" : "cert_file");
        return TERN_EINVAL;
    }
    if (given(o->ca_file)) {
        if (SSL_CTX_load_verify_locations(sc, o->ca_file, NULL) != 1)
            return ctx_error(errmsg, TERN_EINVAL, "ca_file", o->ca_file);
        if (o->server) {
            STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(o->ca_file);
            if (!names)
                return ctx_error(errmsg, TERN_EINVAL, "ca_file", o->ca_file);
            SSL_CTX_set_client_CA_list(sc, names);
        }
    } else if (o->require_certificate || given(o->crl_file)) {
        snprintf(errmsg, TERN_ERRMSG_SIZE, "%s: needs ca_file",
                 o->require_certificate ? "require_certificate" : "crl_file");
        return TERN_EINVAL;
    }
    if (given(o->crl_file)) {
        int rc = load_crls(sc, o->crl_file, errmsg);
        if (rc != TERN_OK)
            return rc;
    }
    if (o->server) {
        int mode = SSL_VERIFY_NONE;
        if (given(o->ca_file))
            mode = SSL_VERIFY_PEER |
                   (o->require_certificate ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0);
        SSL_CTX_set_verify(sc, mode, NULL);
        SSL_CTX_set_alpn_select_cb(sc, alpn_select, NULL);
    } else {
        SSL_CTX_set_verify(sc, given(o->ca_file) ? SSL_VERIFY_PEER : SSL_VERIFY_NONE,
                           NULL);
        SSL_CTX_set_alpn_protos(sc, (const unsigned char *)ALPN_MQTT,
                                sizeof(ALPN_MQTT) - 1);
    }
    return TERN_OK;
}

int tern_tls_ctx_new(struct tern_tls_ctx **out, const struct tern_tls_opts *o,
                     char *errmsg)
{
    ERR_clear_error();
    struct tern_tls_ctx *ctx = calloc(1, sizeof(*ctx));
    if (!ctx) {
        snprintf(errmsg, TERN_ERRMSG_SIZE, "tls: out of memory");
        return TERN_ENOMEM;
    }
    ctx->ssl_ctx = SSL_CTX_new(o->server ? TLS_server_method() : TLS_client_method());
    if (!ctx->ssl_ctx) {
        free(ctx);
        return ctx_error(errmsg, TERN_ENOMEM, "tls", "");
    }
    int rc = ctx_setup(ctx->ssl_ctx, o, errmsg);
    if (rc != TERN_OK) {
        tern_tls_ctx_free(ctx);
        return rc;
    }
    /* The server name is per connection, but a client context is made per use
     * (tests, later the node links): keep it in the context's ex data would be
     * more machinery than it is worth; store it as the verify parameter. */
    if (!o->server && given(o->server_name)) {
        X509_VERIFY_PARAM *vp = SSL_CTX_get0_param(ctx->ssl_ctx);
        /* An address is checked against the certificate's IP SANs, a name
         * against its DNS names (set1_host does not match addresses);
         * set1_ip_asc refuses what is not an IPv4 or IPv6 literal. */
        int named = X509_VERIFY_PARAM_set1_ip_asc(vp, o->server_name);
        if (!named) {
            ERR_clear_error();
            named = X509_VERIFY_PARAM_set1_host(vp, o->server_name, 0);
        }
        if (!named) {
            tern_tls_ctx_free(ctx);
            return ctx_error(errmsg, TERN_EINVAL, "server_name", o->server_name);
        }
    }
    *out = ctx;
    return TERN_OK;
}

void tern_tls_ctx_free(struct tern_tls_ctx *ctx)
{
    if (!ctx)
        return;
    SSL_CTX_free(ctx->ssl_ctx);
    free(ctx);
}

struct tern_tls_engine *tern_tls_engine_new(struct tern_tls_ctx *ctx)
{
    struct tern_tls_engine *e = calloc(1, sizeof(*e));
    if (!e)
        return NULL;
    e->ssl = SSL_new(ctx->ssl_ctx);
    e->in = BIO_new(BIO_s_mem());
    e->out = BIO_new(BIO_s_mem());
    if (!e->ssl || !e->in || !e->out) {
        SSL_free(e->ssl);
        BIO_free(e->in);
        BIO_free(e->out);
        free(e);
        ERR_clear_error();
        return NULL;
    }
    /* An empty input BIO means "more to come", not end of file. */
    BIO_set_mem_eof_return(e->in, -1);
    BIO_set_mem_eof_return(e->out, -1);
    SSL_set_bio(e->ssl, e->in, e->out);
    if (SSL_is_server(e->ssl)) {
        SSL_set_accept_state(e->ssl);
    } else {
        SSL_set_connect_state(e->ssl);
        X509_VERIFY_PARAM *vp = SSL_CTX_get0_param(ctx->ssl_ctx);
        const char *host = X509_VERIFY_PARAM_get0_host(vp, 0);
        if (host)
            SSL_set_tlsext_host_name(e->ssl, host);
    }
    return e;
}

void tern_tls_engine_free(struct tern_tls_engine *e)
{
    if (!e)
        return;
    SSL_free(e->ssl); /* frees both BIOs */
    free(e);
}

int tern_tls_engine_recv(struct tern_tls_engine *e, const uint8_t *data, size_t len)
{
    while (len > 0) {
        int chunk = len > (1u << 30) ? (1 << 30) : (int)len;
        int n = BIO_write(e->in, data, chunk);
        if (n <= 0) {
            ERR_clear_error();
            return TERN_ENOMEM;
        }
        data += n;
        len -= (size_t)n;
    }
    return TERN_OK;
}

/* Keeps why an SSL call failed; returns the engine's error code for it. */
static int engine_fail(struct tern_tls_engine *e, int ssl_err)
{
    unsigned long err = ERR_peek_last_error();
    long vr = SSL_get_verify_result(e->ssl);
    char reason[REASON_MAX] = "";
    if (err)
        ERR_error_string_n(err, reason, sizeof(reason));
    else if (ssl_err == SSL_ERROR_SYSCALL || ssl_err == SSL_ERROR_ZERO_RETURN)
        snprintf(reason, sizeof(reason), "unexpected end of the stream");
    else
        snprintf(reason, sizeof(reason), "TLS error %d", ssl_err);
    if (vr != X509_V_OK)
        snprintf(e->error, sizeof(e->error), "%s (certificate: %s)", reason,
                 X509_verify_cert_error_string(vr));
    else
        snprintf(e->error, sizeof(e->error), "%s", reason);
    ERR_clear_error();
    return TERN_EPROTO;
}

int tern_tls_engine_handshake(struct tern_tls_engine *e)
{
    if (e->established)
        return TERN_OK;
    ERR_clear_error();
    int rv = SSL_do_handshake(e->ssl);
    if (rv == 1) {
        e->established = true;
        return TERN_OK;
    }
    int se = SSL_get_error(e->ssl, rv);
    if (se == SSL_ERROR_WANT_READ || se == SSL_ERROR_WANT_WRITE)
        return TERN_EAGAIN;
    return engine_fail(e, se);
}

bool tern_tls_engine_established(const struct tern_tls_engine *e)
{
    return e->established;
}

int tern_tls_engine_read(struct tern_tls_engine *e, uint8_t *buf, size_t cap, size_t *got)
{
    *got = 0;
    if (!e->established) {
        int rc = tern_tls_engine_handshake(e);
        if (rc != TERN_OK)
            return rc;
    }
    if (cap == 0)
        return TERN_EAGAIN;
    ERR_clear_error();
    size_t n = 0;
    int rv = SSL_read_ex(e->ssl, buf, cap, &n);
    if (rv == 1) {
        *got = n;
        return TERN_OK;
    }
    int se = SSL_get_error(e->ssl, rv);
    if (se == SSL_ERROR_WANT_READ || se == SSL_ERROR_WANT_WRITE)
        return TERN_EAGAIN;
    if (se == SSL_ERROR_ZERO_RETURN)
        return TERN_ESHUTDOWN;
    return engine_fail(e, se);
}

int tern_tls_engine_write(struct tern_tls_engine *e, const uint8_t *data, size_t len)
{
    if (!e->established) {
        snprintf(e->error, sizeof(e->error), "write before the handshake");
        return TERN_EPROTO;
    }
    ERR_clear_error();
    /* A memory BIO takes everything: without partial writes SSL_write_ex
     * writes all records or fails. */
    size_t n = 0;
    if (len == 0)
        return TERN_OK;
    int rv = SSL_write_ex(e->ssl, data, len, &n);
    if (rv == 1 && n == len)
        return TERN_OK;
    return engine_fail(e, SSL_get_error(e->ssl, rv));
}

void tern_tls_engine_shutdown(struct tern_tls_engine *e)
{
    if (!e->established)
        return;
    ERR_clear_error();
    SSL_shutdown(e->ssl);
    ERR_clear_error();
}

size_t tern_tls_engine_pending(const struct tern_tls_engine *e)
{
    return BIO_ctrl_pending(e->out);
}

size_t tern_tls_engine_take(struct tern_tls_engine *e, uint8_t *buf, size_t cap)
{
    size_t n = 0;
    if (cap == 0 || BIO_read_ex(e->out, buf, cap, &n) != 1)
        n = 0;
    ERR_clear_error();
    return n;
}

const char *tern_tls_engine_error(const struct tern_tls_engine *e)
{
    return e->error[0] ? e->error : "no error";
}

int tern_tls_engine_peer_cn(const struct tern_tls_engine *e, char *buf, size_t cap)
{
    X509 *cert = SSL_get1_peer_certificate(e->ssl);
    if (!cert)
        return TERN_ENOTFOUND;
    int rc = TERN_ENOTFOUND;
    X509_NAME *name = X509_get_subject_name(cert);
    int i = name ? X509_NAME_get_index_by_NID(name, NID_commonName, -1) : -1;
    if (i >= 0) {
        const ASN1_STRING *s = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, i));
        unsigned char *utf8 = NULL;
        int len = ASN1_STRING_to_UTF8(&utf8, s);
        if (len >= 0 && memchr(utf8, 0, (size_t)len) == NULL) {
            if ((size_t)len < cap) {
                memcpy(buf, utf8, (size_t)len);
                buf[len] = '\0';
                rc = TERN_OK;
            } else {
                rc = TERN_ETOOBIG;
            }
        }
        OPENSSL_free(utf8);
    }
    X509_free(cert);
    ERR_clear_error();
    return rc;
}

const char *tern_tls_engine_version(const struct tern_tls_engine *e)
{
    return SSL_get_version(e->ssl);
}

const char *tern_tls_engine_alpn(const struct tern_tls_engine *e, char *buf, size_t cap)
{
    const unsigned char *p = NULL;
    unsigned int len = 0;
    SSL_get0_alpn_selected(e->ssl, &p, &len);
    if (!p || len >= cap)
        len = 0;
    if (len)
        memcpy(buf, p, len);
    buf[len] = '\0';
    return buf;
}

const char *tern_tls_engine_sni(const struct tern_tls_engine *e)
{
    const char *s = SSL_get_servername(e->ssl, TLSEXT_NAMETYPE_host_name);
    return s ? s : "";
}
