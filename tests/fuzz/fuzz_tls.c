/* libFuzzer target for the TLS record path (node/tls/tls.c) over memory BIOs: the
 * input is ciphertext from a hostile client, fed in pieces to a server engine
 * as conn.c feeds it from the socket.
 *
 * The first byte picks where the input starts:
 *   even: at the first byte of the connection (ClientHello parsing, alerts);
 *   odd:  after a real handshake with a client engine (TLS 1.2 or 1.3 by the
 *         second bit), as records on an established connection;
 * and how the rest is cut (bits 2..7: piece size 1..64). Whatever comes in, the
 * engine must return one of its codes, never crash, leak or hang, and what it
 * decrypts must fit the buffer it was given.
 *
 * The server certificate is a throwaway P-256 one made at start-up, written to
 * temporary files because the engine takes file names (as its users do).
 *
 *   CC=clang cmake -S . -B build-fuzz -DTERN_FUZZ=ON && cmake --build build-fuzz \
 *       --target fuzz_tls && build-fuzz/fuzz_tls -max_total_time=60 tests/fuzz/corpus/tls
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "tern/tls.h"

#define CHECK(c)                                                                         \
    do {                                                                                 \
        if (!(c))                                                                        \
            abort();                                                                     \
    } while (0)

static struct tern_tls_ctx *server_ctx, *client_ctx, *client12_ctx;

static void write_pem(const char *path, EVP_PKEY *key, X509 *cert)
{
    FILE *f = fopen(path, "w");
    CHECK(f);
    if (key)
        CHECK(PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL));
    if (cert)
        CHECK(PEM_write_X509(f, cert));
    fclose(f);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    EVP_PKEY *key = EVP_EC_gen("P-256");
    X509 *cert = X509_new();
    CHECK(key && cert);
    ASN1_INTEGER_set(X509_get_serialNumber(cert), 1);
    X509_gmtime_adj(X509_getm_notBefore(cert), -3600);
    X509_gmtime_adj(X509_getm_notAfter(cert), 86400);
    X509_set_pubkey(cert, key);
    X509_NAME *name = X509_get_subject_name(cert);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"fuzz",
                               -1, -1, 0);
    X509_set_issuer_name(cert, name);
    CHECK(X509_sign(cert, key, EVP_sha256()) > 0);

    char dir[] = "/tmp/tern_fuzz_tls_XXXXXX", cpath[64], kpath[64];
    CHECK(mkdtemp(dir));
    snprintf(cpath, sizeof cpath, "%s/cert.pem", dir);
    snprintf(kpath, sizeof kpath, "%s/key.pem", dir);
    write_pem(cpath, NULL, cert);
    write_pem(kpath, key, NULL);
    char errmsg[TERN_ERRMSG_SIZE];
    struct tern_tls_opts so = {.server = true, .cert_file = cpath, .key_file = kpath};
    struct tern_tls_opts co = {.server = false};
    struct tern_tls_opts co12 = {.server = false, .max_tls_1_2 = true};
    CHECK(tern_tls_ctx_new(&server_ctx, &so, errmsg) == TERN_OK);
    CHECK(tern_tls_ctx_new(&client_ctx, &co, errmsg) == TERN_OK);
    CHECK(tern_tls_ctx_new(&client12_ctx, &co12, errmsg) == TERN_OK);
    unlink(cpath);
    unlink(kpath);
    rmdir(dir);
    X509_free(cert);
    EVP_PKEY_free(key);
    return 0;
}

static void pump(struct tern_tls_engine *from, struct tern_tls_engine *to)
{
    uint8_t buf[4096];
    size_t n;
    while ((n = tern_tls_engine_take(from, buf, sizeof buf)) > 0)
        CHECK(tern_tls_engine_recv(to, buf, n) == TERN_OK);
}

static bool handshake(struct tern_tls_engine *c, struct tern_tls_engine *s)
{
    for (int i = 0; i < 10; i++) {
        int crc = tern_tls_engine_handshake(c);
        pump(c, s);
        int src = tern_tls_engine_handshake(s);
        pump(s, c);
        if (crc == TERN_OK && src == TERN_OK)
            return true;
        if ((crc != TERN_OK && crc != TERN_EAGAIN) ||
            (src != TERN_OK && src != TERN_EAGAIN))
            return false;
    }
    return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t mode = data[0];
    data++;
    size--;
    struct tern_tls_engine *s = tern_tls_engine_new(server_ctx);
    CHECK(s);
    struct tern_tls_engine *c = NULL;
    if (mode & 1) {
        c = tern_tls_engine_new((mode & 2) ? client12_ctx : client_ctx);
        CHECK(c && handshake(c, s));
        CHECK(tern_tls_engine_established(s));
    }
    size_t piece = 1 + (mode >> 2);
    uint8_t out[1024], sink[4096];
    bool dead = false;
    while (size > 0 && !dead) {
        size_t n = size < piece ? size : piece;
        CHECK(tern_tls_engine_recv(s, data, n) == TERN_OK);
        data += n;
        size -= n;
        for (;;) {
            size_t got = 0;
            int rc = tern_tls_engine_read(s, out, sizeof out, &got);
            CHECK(got <= sizeof out);
            if (rc == TERN_OK) {
                CHECK(got > 0);
                /* An answer to what was read: as conn.c would send one. */
                CHECK(tern_tls_engine_write(s, out, got) == TERN_OK);
                continue;
            }
            CHECK(rc == TERN_EAGAIN || rc == TERN_EPROTO || rc == TERN_ESHUTDOWN);
            if (rc != TERN_EAGAIN) {
                CHECK(tern_tls_engine_error(s)[0] != '\0');
                dead = true;
            }
            break;
        }
        while (tern_tls_engine_take(s, sink, sizeof sink) > 0)
            ;
    }
    tern_tls_engine_shutdown(s);
    tern_tls_engine_free(s);
    tern_tls_engine_free(c);
    return 0;
}
