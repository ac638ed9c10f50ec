/* SCRAM-SHA-256 (RFC 5802, RFC 7677), the server's side, for MQTT 5 enhanced
 * authentication (Authentication Method "SCRAM-SHA-256").
 *
 * Pure module (node/auth/auth_scram.c, in the tern_auth library): no sockets, no
 * clock; OpenSSL's libcrypto for PBKDF2, HMAC, SHA-256 and CRYPTO_memcmp. The
 * caller supplies the random server nonce, so the RFC's example is a unit test.
 *
 * The verifier a password file keeps for a user (tern/auth.h) is PostgreSQL's
 * text form:  SCRAM-SHA-256$ITERATIONS:BASE64(SALT)$BASE64(StoredKey):BASE64(ServerKey)
 * It holds no password: StoredKey = SHA-256(ClientKey), ServerKey =
 * HMAC(SaltedPassword, "Server Key"), SaltedPassword = PBKDF2-HMAC-SHA-256.
 *
 * An exchange (one per connection):
 *   client-first  "n,,n=USER,r=CNONCE"         tern_scram_client_first
 *   server-first  "r=CNONCE SNONCE,s=SALT,i=N"  tern_scram_server_first
 *   client-final  "c=biws,r=NONCE,p=PROOF"      tern_scram_client_final
 *   server-final  "v=SERVER_SIGNATURE"          (its output)
 * Channel binding ("p=" in the GS2 header) and authorization identities ("a=")
 * are refused: tern offers SCRAM-SHA-256 without -PLUS. */
#ifndef TERN_SCRAM_H
#define TERN_SCRAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TERN_SCRAM_METHOD "SCRAM-SHA-256"
#define TERN_SCRAM_KEY_LEN 32u        /* SHA-256 */
#define TERN_SCRAM_SALT_MAX 64u       /* bytes, decoded */
#define TERN_SCRAM_ITER_MIN 1u        /* a file may hold fewer than we write */
#define TERN_SCRAM_ITER_MAX 10000000u /* as $7$ */
#define TERN_SCRAM_ITER_DEFAULT 4096u /* RFC 7677: at least 4096 */
#define TERN_SCRAM_SALT_LEN 16u       /* what we write */
#define TERN_SCRAM_MSG_MAX 1024u      /* a client message longer is refused */
#define TERN_SCRAM_SNONCE_LEN 18u     /* random bytes of our nonce (24 base64) */
#define TERN_SCRAM_VERIFIER_MAX 200u  /* the text form, NUL included */
#define TERN_SCRAM_FINAL_MAX 64u      /* "v=" + 44 base64 + NUL */

struct tern_scram_verifier {
    uint32_t iterations;
    uint8_t salt[TERN_SCRAM_SALT_MAX];
    size_t salt_len;
    uint8_t stored_key[TERN_SCRAM_KEY_LEN];
    uint8_t server_key[TERN_SCRAM_KEY_LEN];
};

/* s[0..len) in the text form above into *v; NULL, or why it is not one. */
const char *tern_scram_verifier_parse(const char *s, size_t len,
                                      struct tern_scram_verifier *v);
/* The verifier of password pw with this salt and iteration count. TERN_EINVAL for
 * iterations or salt out of bounds, TERN_ENOMEM if OpenSSL fails. */
int tern_scram_verifier_make(const uint8_t *pw, size_t pw_len, uint32_t iterations,
                             const uint8_t *salt, size_t salt_len,
                             struct tern_scram_verifier *v);
/* The text form into out (TERN_SCRAM_VERIFIER_MAX bytes). */
void tern_scram_verifier_format(const struct tern_scram_verifier *v, char *out);
/* Whether pw is the verifier's password (a CONNECT with a password against a
 * SCRAM entry): one PBKDF2, compared in constant time. */
bool tern_scram_verifier_check(const struct tern_scram_verifier *v, const uint8_t *pw,
                               size_t pw_len);

enum tern_scram_state { TERN_SCRAM_NONE, TERN_SCRAM_FIRST, TERN_SCRAM_SENT };

/* The server's state between messages; zero it to start. Owns its buffers
 * (tern_scram_free). */
struct tern_scram {
    uint8_t state; /* enum tern_scram_state */
    char *user;    /* the decoded user name of client-first, NUL-terminated */
    size_t user_len;
    char *client_first_bare; /* "n=...,r=..." as sent */
    size_t client_first_bare_len;
    char *server_first;
    size_t server_first_len;
    size_t cnonce_len; /* the client's part of the nonce in server_first + 2 */
    size_t nonce_len;  /* the whole nonce */
    char gs2[4];       /* "n,," or "y,," */
    struct tern_scram_verifier v;
};

/* Reads client-first-message msg[0..len). TERN_OK: s->user is the user name (the
 * caller looks up its verifier). TERN_EMALFORMED: not a client-first-message (or
 * a user name that is empty, not UTF-8 or holds NUL); TERN_EUNSUPPORTED: channel
 * binding or an authorization identity asked for; TERN_ETOOBIG; TERN_ENOMEM. */
int tern_scram_client_first(struct tern_scram *s, const uint8_t *msg, size_t len);
/* Builds server-first-message (s->server_first) for verifier v (a made-up one
 * for an unknown user: the answer then looks the same) and our part of the
 * nonce, snonce[0..n) (1 to 64 printable characters, no ','; the node's is
 * base64 of TERN_SCRAM_SNONCE_LEN random bytes). TERN_OK, TERN_EINVAL (called
 * out of turn, or a bad snonce) or TERN_ENOMEM. */
int tern_scram_server_first(struct tern_scram *s, const struct tern_scram_verifier *v,
                            const char *snonce, size_t n);
/* The same with a fresh random nonce (TERN_SCRAM_SNONCE_LEN bytes, base64). */
int tern_scram_server_first_rand(struct tern_scram *s,
                                 const struct tern_scram_verifier *v);
/* A verifier for a user the file does not have: salt derived from secret and the
 * name (the same on every attempt, like a real one), keys no password matches,
 * so an unknown user's exchange looks like a known one's and fails at the proof. */
void tern_scram_verifier_fake(const uint8_t secret[32], const char *user, size_t len,
                              uint32_t iterations, struct tern_scram_verifier *v);
/* Checks client-final-message msg[0..len). TERN_OK: the proof is right, and
 * server-final-message is in final[0..*final_len) (TERN_SCRAM_FINAL_MAX bytes).
 * TERN_ENOTFOUND: a wrong proof. TERN_EMALFORMED: not a client-final-message,
 * or its channel binding or nonce is not the one of this exchange. */
int tern_scram_client_final(struct tern_scram *s, const uint8_t *msg, size_t len,
                            char *final, size_t *final_len);
void tern_scram_free(struct tern_scram *s);

#endif
