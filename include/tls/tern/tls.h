/* TLS engine (node/tls/tls.c): OpenSSL 3 over memory BIOs, no sockets.
 *
 * Modelled on NNG's TLS engine (src/supplemental/tls/): the engine is fed the
 * ciphertext that arrived, gives back the plaintext it decrypted and the
 * ciphertext to send; whoever owns the socket moves the bytes. conn.c does that
 * for MQTT client connections over libuv streams; the unit test
 * (tests/unit/test_tls.c) and the fuzzer (tests/fuzz/fuzz_tls.c) make two
 * engines talk in memory. Nothing here knows about MQTT or libuv, so the node
 * to node links can use it as it is.
 *
 * OpenSSL's types stay out of this header: only node/tls/tls.c includes OpenSSL.
 *
 * Ownership: a tern_tls_ctx (certificates, key, CA, CRL, versions, ciphers) is
 * made from files and freed by its owner; an engine made from it keeps what it
 * needs (OpenSSL counts references), so a context may be replaced and freed
 * while engines made from the old one go on (certificate reload).
 */
#ifndef TERN_TLS_H
#define TERN_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tern/error.h"

enum tern_tls_version {
    TERN_TLS_1_2 = 0,
    TERN_TLS_1_3 = 1,
};

/* What a context is made from. Strings are file names or OpenSSL cipher lists;
 * NULL or "" means not given. */
struct tern_tls_opts {
    bool server;
    const char *cert_file; /* PEM chain, leaf first (required for a server) */
    const char *key_file;  /* PEM private key */
    const char *ca_file;   /* PEM CA(s) that peers' certificates must chain to */
    const char *crl_file;  /* PEM CRL(s): a revoked peer certificate is refused */
    /* Server: ask for a client certificate (verified against ca_file when one
     * is sent); require_certificate: and refuse a client without one. A client
     * always verifies the server when ca_file is given. */
    bool require_certificate;
    const char *ciphers;      /* TLS 1.2 cipher list */
    const char *ciphersuites; /* TLS 1.3 cipher suites */
    int min_version;          /* enum tern_tls_version */
    bool max_tls_1_2;         /* at most TLS 1.2 (test and benchmark clients) */
    /* Client: name sent as SNI and checked against the server's certificate
     * (NULL: none sent, name not checked). */
    const char *server_name;
};

struct tern_tls_ctx;
struct tern_tls_engine;

/* Makes a context. On error returns TERN_EINVAL or TERN_EIO and writes what is
 * wrong into errmsg, starting with the option's name ("cert_file: ..."). */
int tern_tls_ctx_new(struct tern_tls_ctx **out, const struct tern_tls_opts *o,
                     char *errmsg);
void tern_tls_ctx_free(struct tern_tls_ctx *ctx);

/* One connection's TLS state. NULL when out of memory. */
struct tern_tls_engine *tern_tls_engine_new(struct tern_tls_ctx *ctx);
void tern_tls_engine_free(struct tern_tls_engine *e);

/* Ciphertext that arrived from the peer. Always takes all of it (it is kept in
 * memory until read): the caller bounds how much it reads before it pulls
 * plaintext out. */
int tern_tls_engine_recv(struct tern_tls_engine *e, const uint8_t *data, size_t len);

/* Advances the handshake with what has arrived. TERN_OK once it is complete,
 * TERN_EAGAIN while it needs more input (ciphertext to send may be waiting),
 * TERN_EPROTO when it failed (tern_tls_engine_error says why; an alert to the
 * peer may be waiting to be sent). */
int tern_tls_engine_handshake(struct tern_tls_engine *e);
bool tern_tls_engine_established(const struct tern_tls_engine *e);

/* Decrypts into buf: TERN_OK with *got > 0, TERN_EAGAIN when no whole record is
 * there, TERN_ESHUTDOWN when the peer closed (close_notify), TERN_EPROTO on a
 * bad record (tern_tls_engine_error says why). Drives the handshake too. */
int tern_tls_engine_read(struct tern_tls_engine *e, uint8_t *buf, size_t cap,
                         size_t *got);

/* Encrypts all of data (after the handshake). TERN_OK or TERN_EPROTO. */
int tern_tls_engine_write(struct tern_tls_engine *e, const uint8_t *data, size_t len);

/* Sends close_notify (ciphertext then waits to be sent). */
void tern_tls_engine_shutdown(struct tern_tls_engine *e);

/* Ciphertext waiting to be sent: how much, and taking up to cap of it. */
size_t tern_tls_engine_pending(const struct tern_tls_engine *e);
size_t tern_tls_engine_take(struct tern_tls_engine *e, uint8_t *buf, size_t cap);

/* Why the last operation failed (OpenSSL's reason, the certificate check's). */
const char *tern_tls_engine_error(const struct tern_tls_engine *e);

/* After the handshake: the peer certificate's subject CN into buf
 * (NUL-terminated). TERN_OK, TERN_ENOTFOUND (no certificate or no CN, or a CN
 * with a NUL in it), TERN_ETOOBIG (it does not fit). */
int tern_tls_engine_peer_cn(const struct tern_tls_engine *e, char *buf, size_t cap);

/* After the handshake: "TLSv1.3"; the negotiated ALPN protocol into buf ("" if
 * none or it does not fit), returns buf; the SNI name the client sent ("" if
 * none). */
const char *tern_tls_engine_version(const struct tern_tls_engine *e);
const char *tern_tls_engine_alpn(const struct tern_tls_engine *e, char *buf, size_t cap);
const char *tern_tls_engine_sni(const struct tern_tls_engine *e);

#endif
