/* SCRAM-SHA-256, the server's side (tern/scram.h): verifiers and the exchange.
 *
 * Each message is parsed in one pass over at most TERN_SCRAM_MSG_MAX bytes;
 * attributes are "x=value" separated by ','. Secrets (keys, signatures) are
 * cleansed from the stack after use. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include "auth_int.h"
#include "tern/error.h"
#include "tern/scram.h"

#define PREFIX "SCRAM-SHA-256$"

/* --- primitives ---------------------------------------------------------------- */

static bool hmac256(const uint8_t *key, size_t klen, const void *msg, size_t mlen,
                    uint8_t out[TERN_SCRAM_KEY_LEN])
{
    unsigned int n = 0;
    return HMAC(EVP_sha256(), key, (int)klen, msg, mlen, out, &n) && n == 32;
}

static bool sha256(const uint8_t *in, size_t len, uint8_t out[TERN_SCRAM_KEY_LEN])
{
    unsigned int n = 0;
    return EVP_Digest(in, len, out, &n, EVP_sha256(), NULL) == 1 && n == 32;
}

/* SaltedPassword, ClientKey and StoredKey / ServerKey of a password. */
static bool derive(const uint8_t *pw, size_t pw_len, uint32_t iterations,
                   const uint8_t *salt, size_t salt_len, uint8_t stored[32],
                   uint8_t server[32])
{
    uint8_t salted[32], client[32];
    /* OpenSSL wants a non-NULL password pointer even for length 0. */
    bool ok = PKCS5_PBKDF2_HMAC(pw_len ? (const char *)pw : "", (int)pw_len, salt,
                                (int)salt_len, (int)iterations, EVP_sha256(), 32,
                                salted) == 1 &&
              hmac256(salted, 32, "Client Key", 10, client) &&
              sha256(client, 32, stored) && hmac256(salted, 32, "Server Key", 10, server);
    OPENSSL_cleanse(salted, sizeof salted);
    OPENSSL_cleanse(client, sizeof client);
    return ok;
}

/* --- verifiers ------------------------------------------------------------------ */

const char *tern_scram_verifier_parse(const char *s, size_t len,
                                      struct tern_scram_verifier *v)
{
    size_t pl = strlen(PREFIX);
    memset(v, 0, sizeof *v);
    if (len < pl || memcmp(s, PREFIX, pl) != 0)
        return "not a SCRAM-SHA-256$ verifier";
    const char *p = s + pl, *end = s + len;
    uint64_t it = 0;
    const char *q = p;
    for (; q < end && *q >= '0' && *q <= '9'; q++) /* saturates past the cap */
        it = it > TERN_SCRAM_ITER_MAX ? it : it * 10 + (uint64_t)(*q - '0');
    if (q == p || q == end || *q != ':')
        return "SCRAM-SHA-256$: iterations must be a decimal number followed by ':'";
    if (it < TERN_SCRAM_ITER_MIN || it > TERN_SCRAM_ITER_MAX)
        return "SCRAM-SHA-256$: iterations out of range (1 to 10000000)";
    v->iterations = (uint32_t)it;
    p = q + 1;
    const char *dollar = memchr(p, '$', (size_t)(end - p));
    if (!dollar)
        return "SCRAM-SHA-256$: missing '$' after the salt";
    long sl = tern_auth_b64_decode(p, (size_t)(dollar - p), v->salt, sizeof v->salt);
    if (sl <= 0)
        return "SCRAM-SHA-256$: salt is not base64 of 1 to 64 bytes";
    v->salt_len = (size_t)sl;
    p = dollar + 1;
    const char *colon = memchr(p, ':', (size_t)(end - p));
    if (!colon)
        return "SCRAM-SHA-256$: missing ':' between StoredKey and ServerKey";
    uint8_t k[TERN_SCRAM_KEY_LEN + 1];
    if (tern_auth_b64_decode(p, (size_t)(colon - p), k, sizeof k) != TERN_SCRAM_KEY_LEN)
        return "SCRAM-SHA-256$: StoredKey is not base64 of 32 bytes";
    memcpy(v->stored_key, k, TERN_SCRAM_KEY_LEN);
    if (tern_auth_b64_decode(colon + 1, (size_t)(end - colon - 1), k, sizeof k) !=
        TERN_SCRAM_KEY_LEN)
        return "SCRAM-SHA-256$: ServerKey is not base64 of 32 bytes";
    memcpy(v->server_key, k, TERN_SCRAM_KEY_LEN);
    OPENSSL_cleanse(k, sizeof k);
    return NULL;
}

int tern_scram_verifier_make(const uint8_t *pw, size_t pw_len, uint32_t iterations,
                             const uint8_t *salt, size_t salt_len,
                             struct tern_scram_verifier *v)
{
    if (iterations < TERN_SCRAM_ITER_MIN || iterations > TERN_SCRAM_ITER_MAX ||
        salt_len == 0 || salt_len > TERN_SCRAM_SALT_MAX)
        return TERN_EINVAL;
    memset(v, 0, sizeof *v);
    v->iterations = iterations;
    memcpy(v->salt, salt, salt_len);
    v->salt_len = salt_len;
    return derive(pw, pw_len, iterations, salt, salt_len, v->stored_key, v->server_key)
               ? TERN_OK
               : TERN_ENOMEM;
}

void tern_scram_verifier_format(const struct tern_scram_verifier *v, char *out)
{
    int n = snprintf(out, TERN_SCRAM_VERIFIER_MAX, PREFIX "%u:", (unsigned)v->iterations);
    n += (int)tern_auth_b64_encode(v->salt, v->salt_len, out + n);
    out[n++] = '$';
    n += (int)tern_auth_b64_encode(v->stored_key, TERN_SCRAM_KEY_LEN, out + n);
    out[n++] = ':';
    tern_auth_b64_encode(v->server_key, TERN_SCRAM_KEY_LEN, out + n);
}

bool tern_scram_verifier_check(const struct tern_scram_verifier *v, const uint8_t *pw,
                               size_t pw_len)
{
    uint8_t stored[32], server[32];
    bool ok = derive(pw, pw_len, v->iterations, v->salt, v->salt_len, stored, server) &&
              CRYPTO_memcmp(stored, v->stored_key, 32) == 0;
    OPENSSL_cleanse(stored, sizeof stored);
    OPENSSL_cleanse(server, sizeof server);
    return ok;
}

/* --- the exchange ------------------------------------------------------------------ */

void tern_scram_free(struct tern_scram *s)
{
    free(s->user);
    free(s->client_first_bare);
    free(s->server_first);
    OPENSSL_cleanse(&s->v, sizeof s->v);
    memset(s, 0, sizeof *s);
}

static char *dup_bytes(const void *p, size_t n)
{
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, p, n);
        d[n] = '\0';
    }
    return d;
}

/* RFC 5802 printable: %x21-7E except ','. */
static bool printable(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] < 0x21 || s[i] > 0x7e || s[i] == ',')
            return false;
    return n > 0;
}

/* Well-formed UTF-8 without NUL, no overlong forms or surrogates (MQTT 1.5.4). */
static bool utf8_ok(const uint8_t *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        uint8_t c = s[i];
        size_t k;
        uint32_t cp;
        if (c == 0)
            return false;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            k = 1;
            cp = c & 0x1f;
        } else if ((c & 0xf0) == 0xe0) {
            k = 2;
            cp = c & 0x0f;
        } else if ((c & 0xf8) == 0xf0) {
            k = 3;
            cp = c & 0x07;
        } else {
            return false;
        }
        for (size_t j = 1; j <= k; j++) {
            if (i + j >= n || (s[i + j] & 0xc0) != 0x80)
                return false;
            cp = (cp << 6) | (s[i + j] & 0x3f);
        }
        if ((k == 1 && cp < 0x80) || (k == 2 && cp < 0x800) || (k == 3 && cp < 0x10000) ||
            cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += k + 1;
    }
    return true;
}

/* saslname: "=2C" is ',', "=3D" is '=', any other '=' is malformed. Into *out
 * (malloc'ed, NUL-terminated). */
static int decode_saslname(const char *s, size_t n, char **out, size_t *out_len)
{
    char *u = malloc(n + 1);
    if (!u)
        return TERN_ENOMEM;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '=') {
            u[o++] = s[i];
            continue;
        }
        if (i + 2 < n && s[i + 1] == '2' && s[i + 2] == 'C')
            u[o++] = ',';
        else if (i + 2 < n && s[i + 1] == '3' && s[i + 2] == 'D')
            u[o++] = '=';
        else {
            free(u);
            return TERN_EMALFORMED;
        }
        i += 2;
    }
    u[o] = '\0';
    *out = u;
    *out_len = o;
    return TERN_OK;
}

/* The next attribute "x=value" of msg at *pos (up to the next ','). */
static bool attr(const char *m, size_t len, size_t *pos, char *name, const char **val,
                 size_t *vlen)
{
    if (*pos >= len || *pos + 2 > len || m[*pos + 1] != '=')
        return false;
    *name = m[*pos];
    const char *v = m + *pos + 2;
    const char *comma = memchr(v, ',', len - (*pos + 2));
    *vlen = comma ? (size_t)(comma - v) : len - (*pos + 2);
    *val = v;
    *pos += 2 + *vlen + (comma ? 1 : 0);
    if (comma && *pos == len)
        return false; /* a trailing ',' */
    return true;
}

int tern_scram_client_first(struct tern_scram *s, const uint8_t *msg, size_t len)
{
    if (len > TERN_SCRAM_MSG_MAX)
        return TERN_ETOOBIG;
    const char *m = (const char *)msg;
    if (len < 3 || memchr(m, '\0', len))
        return TERN_EMALFORMED;
    /* gs2-header: "n,," or "y,,"; "p=..." (channel binding) and an authzid are
     * not offered. */
    if (m[0] == 'p')
        return TERN_EUNSUPPORTED;
    if ((m[0] != 'n' && m[0] != 'y') || m[1] != ',')
        return TERN_EMALFORMED;
    if (m[2] != ',')
        return m[2] == 'a' ? TERN_EUNSUPPORTED : TERN_EMALFORMED;
    const char *bare = m + 3;
    size_t blen = len - 3, pos = 0, vlen;
    char name;
    const char *val;
    if (!attr(bare, blen, &pos, &name, &val, &vlen))
        return TERN_EMALFORMED;
    if (name == 'm') /* a mandatory extension we do not know: RFC 5802 says fail */
        return TERN_EUNSUPPORTED;
    if (name != 'n' || vlen == 0)
        return TERN_EMALFORMED;
    const char *uval = val;
    size_t ulen = vlen;
    if (!attr(bare, blen, &pos, &name, &val, &vlen) || name != 'r' ||
        !printable(val, vlen) || vlen > 255)
        return TERN_EMALFORMED;
    size_t cnonce_len = vlen;
    /* Optional extensions after the nonce are allowed and ignored. */
    size_t user_len = 0;
    char *user = NULL;
    int rc = decode_saslname(uval, ulen, &user, &user_len);
    if (rc != TERN_OK)
        return rc;
    if (user_len == 0 || !utf8_ok((const uint8_t *)user, user_len)) {
        free(user);
        return TERN_EMALFORMED;
    }
    char *copy = dup_bytes(bare, blen);
    if (!copy) {
        free(user);
        return TERN_ENOMEM;
    }
    tern_scram_free(s);
    s->user = user;
    s->user_len = user_len;
    s->client_first_bare = copy;
    s->client_first_bare_len = blen;
    s->cnonce_len = cnonce_len;
    memcpy(s->gs2, m, 3);
    s->gs2[3] = '\0';
    s->state = TERN_SCRAM_FIRST;
    return TERN_OK;
}

/* The client nonce inside client_first_bare. */
static const char *cnonce_of(const struct tern_scram *s)
{
    const char *r = strstr(s->client_first_bare, ",r=");
    return r ? r + 3 : "";
}

int tern_scram_server_first(struct tern_scram *s, const struct tern_scram_verifier *v,
                            const char *snonce, size_t n)
{
    if (s->state != TERN_SCRAM_FIRST || n > 64 || !printable(snonce, n))
        return TERN_EINVAL;
    char salt[92];
    tern_auth_b64_encode(v->salt, v->salt_len, salt);
    size_t cap = 2 + s->cnonce_len + n + 3 + strlen(salt) + 3 + 10 + 1;
    char *out = malloc(cap);
    if (!out)
        return TERN_ENOMEM;
    int len = snprintf(out, cap, "r=%.*s%.*s,s=%s,i=%u", (int)s->cnonce_len, cnonce_of(s),
                       (int)n, snonce, salt, (unsigned)v->iterations);
    if (len < 0 || (size_t)len >= cap) {
        free(out);
        return TERN_ENOMEM;
    }
    free(s->server_first);
    s->server_first = out;
    s->server_first_len = (size_t)len;
    s->nonce_len = s->cnonce_len + n;
    s->v = *v;
    s->state = TERN_SCRAM_SENT;
    return TERN_OK;
}

int tern_scram_client_final(struct tern_scram *s, const uint8_t *msg, size_t len,
                            char *final, size_t *final_len)
{
    *final_len = 0;
    if (s->state != TERN_SCRAM_SENT)
        return TERN_EINVAL;
    if (len > TERN_SCRAM_MSG_MAX || memchr(msg, '\0', len))
        return TERN_EMALFORMED;
    const char *m = (const char *)msg;
    size_t pos = 0, vlen;
    char name;
    const char *val;
    /* c=: the GS2 header again, base64. */
    char cb[8];
    tern_auth_b64_encode((const uint8_t *)s->gs2, 3, cb);
    if (!attr(m, len, &pos, &name, &val, &vlen) || name != 'c' || vlen != strlen(cb) ||
        memcmp(val, cb, vlen) != 0)
        return TERN_EMALFORMED;
    /* r=: the nonce of server-first (after its "r="). */
    if (!attr(m, len, &pos, &name, &val, &vlen) || name != 'r' || vlen != s->nonce_len ||
        memcmp(val, s->server_first + 2, vlen) != 0)
        return TERN_EMALFORMED;
    /* Extensions, then p= last. */
    size_t without_proof = 0;
    const char *proof_b64 = NULL;
    size_t proof_len = 0;
    for (;;) {
        size_t at = pos;
        if (!attr(m, len, &pos, &name, &val, &vlen))
            return TERN_EMALFORMED;
        if (name == 'p') {
            if (pos != len)
                return TERN_EMALFORMED;
            without_proof = at - 1; /* the ',' before "p=" */
            proof_b64 = val;
            proof_len = vlen;
            break;
        }
    }
    uint8_t proof[TERN_SCRAM_KEY_LEN + 1];
    if (tern_auth_b64_decode(proof_b64, proof_len, proof, sizeof proof) !=
        TERN_SCRAM_KEY_LEN)
        return TERN_EMALFORMED;
    /* AuthMessage = client-first-bare "," server-first "," client-final-without-proof */
    size_t am_len =
        s->client_first_bare_len + 1 + s->server_first_len + 1 + without_proof;
    char *am = malloc(am_len);
    if (!am)
        return TERN_ENOMEM;
    size_t o = 0;
    memcpy(am + o, s->client_first_bare, s->client_first_bare_len);
    o += s->client_first_bare_len;
    am[o++] = ',';
    memcpy(am + o, s->server_first, s->server_first_len);
    o += s->server_first_len;
    am[o++] = ',';
    memcpy(am + o, m, without_proof);
    uint8_t sig[32], client_key[32], stored[32], server_sig[32];
    bool ok = hmac256(s->v.stored_key, 32, am, am_len, sig);
    for (size_t i = 0; i < 32; i++)
        client_key[i] = proof[i] ^ sig[i];
    ok = ok && sha256(client_key, 32, stored);
    bool same = ok && CRYPTO_memcmp(stored, s->v.stored_key, 32) == 0;
    ok = ok && hmac256(s->v.server_key, 32, am, am_len, server_sig);
    free(am);
    if (same && ok) {
        memcpy(final, "v=", 2);
        *final_len = 2 + tern_auth_b64_encode(server_sig, 32, final + 2);
    }
    OPENSSL_cleanse(sig, sizeof sig);
    OPENSSL_cleanse(client_key, sizeof client_key);
    OPENSSL_cleanse(proof, sizeof proof);
    if (!ok)
        return TERN_ENOMEM;
    return same ? TERN_OK : TERN_ENOTFOUND;
}

int tern_scram_server_first_rand(struct tern_scram *s,
                                 const struct tern_scram_verifier *v)
{
    uint8_t raw[TERN_SCRAM_SNONCE_LEN];
    char nonce[4 * ((TERN_SCRAM_SNONCE_LEN + 2) / 3) + 1];
    if (RAND_bytes(raw, sizeof raw) != 1)
        return TERN_ENOMEM;
    size_t n = tern_auth_b64_encode(raw, sizeof raw, nonce); /* 18 bytes: no '=' */
    return tern_scram_server_first(s, v, nonce, n);
}

void tern_scram_verifier_fake(const uint8_t secret[32], const char *user, size_t len,
                              uint32_t iterations, struct tern_scram_verifier *v)
{
    memset(v, 0, sizeof *v);
    uint8_t mac[32];
    hmac256(secret, 32, user, len, mac);
    v->iterations = iterations;
    v->salt_len = TERN_SCRAM_SALT_LEN;
    memcpy(v->salt, mac, TERN_SCRAM_SALT_LEN);
    /* Keys no password gives (the exchange fails whatever the proof). */
    hmac256(mac, 32, "Client Key", 10, v->stored_key);
    hmac256(mac, 32, "Server Key", 10, v->server_key);
    OPENSSL_cleanse(mac, sizeof mac);
}
