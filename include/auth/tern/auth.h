/* Client authentication: Mosquitto's password file format, and a bounded table
 * that slows repeated failures per source address.
 *
 * Pure module (node/auth/auth_*.c): no libuv, no sockets, no globals; OpenSSL's
 * libcrypto for PBKDF2, SHA-512, base64, CRYPTO_memcmp and RAND_bytes. Built as
 * its own library so ternctl, the unit tests and the fuzzer link it alone.
 *
 * File format (Mosquitto 1.6 / 2.0, what mosquitto_passwd writes), one entry a
 * line, '#' comments and blank lines ignored, CR LF accepted:
 *   user:$7$ITERATIONS$BASE64_SALT$BASE64_HASH   PBKDF2-HMAC-SHA512, 64-byte hash
 *   user:$6$BASE64_SALT$BASE64_HASH              SHA-512(password || salt)
 *   user:SCRAM-SHA-256$ITER:SALT$STOREDKEY:SERVERKEY   (tern/scram.h; not Mosquitto's)
 * The user name is everything before the first ':' (it may hold spaces). */
#ifndef TERN_AUTH_H
#define TERN_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tern/siphash.h" /* tern_siphash */

#define TERN_PW_FILE_MAX (16u * 1024 * 1024) /* bytes; larger is refused */
#define TERN_PW_USER_MAX 65535u              /* MQTT's string limit */
#define TERN_PW_SALT_MAX 64u                 /* bytes, decoded */
#define TERN_PW_HASH_LEN 64u                 /* SHA-512 */
#define TERN_PW_ITER_MIN 1u
#define TERN_PW_ITER_MAX 10000000u /* a file asking for more is refused */
#define TERN_PW_SALT_LEN 12u       /* what we write, as mosquitto_passwd does */
#define TERN_PW_ITER_DEFAULT 1000u /* what ternctl passwd writes by default */

/* TERN_PW_SCRAM: a SCRAM-SHA-256 verifier (tern/scram.h), for MQTT 5 enhanced
 * authentication and for passwords in CONNECT alike. */
enum tern_pw_kind { TERN_PW_SHA512 = 6, TERN_PW_PBKDF2 = 7, TERN_PW_SCRAM = 8 };
struct tern_scram_verifier;

struct tern_pwfile; /* users and their hashes; immutable once parsed */

/* Parses a whole file's text. On error returns TERN_EINVAL (bad line, message
 * names the line number), TERN_ETOOBIG or TERN_ENOMEM, and *out is NULL.
 * The result is owned by the caller (tern_pwfile_free). */
int tern_pwfile_parse(const char *text, size_t len, struct tern_pwfile **out,
                      char *errmsg);
/* Reads and parses `path` (TERN_EIO if it cannot be read). */
int tern_pwfile_load(const char *path, struct tern_pwfile **out, char *errmsg);
void tern_pwfile_free(struct tern_pwfile *f);
size_t tern_pwfile_count(const struct tern_pwfile *f);
/* Name and kind of entry i (for tests and the fuzzer). */
bool tern_pwfile_entry(const struct tern_pwfile *f, size_t i, const char **user,
                       size_t *user_len, int *kind, uint32_t *iterations);

/* TERN_OK if `user` is in the file and `pw` is its password, else TERN_ENOTFOUND
 * (unknown user, wrong password: the caller cannot tell which, and an unknown
 * user costs the same hashing as a known one). Comparison in constant time. */
int tern_pwfile_check(const struct tern_pwfile *f, const uint8_t *user, size_t user_len,
                      const uint8_t *pw, size_t pw_len);

/* The SCRAM verifier of user, if the file has one for it (a SCRAM-SHA-256$ entry):
 * true and *v filled; false for an unknown user or a $6$ / $7$ entry. */
bool tern_pwfile_scram(const struct tern_pwfile *f, const uint8_t *user, size_t user_len,
                       struct tern_scram_verifier *v);
/* The iteration count of the file's first SCRAM entry (TERN_SCRAM_ITER_DEFAULT if
 * none): what an unknown user's made-up verifier says. */
uint32_t tern_pwfile_scram_iterations(const struct tern_pwfile *f);
/* Writes the SCRAM-SHA-256$ text of pw with a fresh random salt into out
 * (TERN_SCRAM_VERIFIER_MAX bytes). TERN_EINVAL for iterations out of bounds. */
int tern_pw_scram(const uint8_t *pw, size_t pw_len, uint32_t iterations, char *out);

/* Writes "$7$ITER$SALT$HASH" (NUL-terminated) for pw with a fresh random salt
 * into out (cap >= 160). TERN_EINVAL for iterations out of bounds. */
int tern_pw_hash7(const uint8_t *pw, size_t pw_len, uint32_t iterations, char *out,
                  size_t cap);

/* SHA-256 of a file's bytes as 64 hex digits into hex (65 bytes); "" if the
 * file cannot be read. For the admin API's configuration digest. */
void tern_file_digest(const char *path, char *hex);

/* --- admin API bearer token -------------------------------------------------- */
#define TERN_TOKEN_MIN 16u  /* bytes; a shorter token is refused */
#define TERN_TOKEN_MAX 512u /* bytes */
/* Reads the token from path (its first line, surrounding whitespace removed)
 * into out (TERN_TOKEN_MAX + 1 bytes). TERN_EIO, or TERN_EINVAL if shorter than
 * TERN_TOKEN_MIN or longer than TERN_TOKEN_MAX. */
int tern_token_load(const char *path, char *out, char *errmsg);
/* Equal, in time that depends on neither's content (nor on where they differ). */
bool tern_token_equal(const char *a, size_t alen, const char *b, size_t blen);

/* --- failed attempts per source address --------------------------------------
 * A fixed table (TERN_GUARD_SLOTS entries, open addressing over a seeded hash of
 * the address, the stalest entry of a probe run is reused): after F failures from
 * an address, its next password check waits until min(100 ms * 2^(F-1), 10 s) past
 * the last failure; an attempt before that is refused without checking. */
#define TERN_GUARD_SLOTS 1024u
#define TERN_GUARD_PROBE 8u
#define TERN_GUARD_BASE_MS 100u
#define TERN_GUARD_MAX_MS 10000u

struct tern_guard_slot {
    uint8_t addr[16];
    uint64_t last_fail_ms;
    uint32_t fails;
    bool used;
};

struct tern_guard {
    struct tern_guard_slot slots[TERN_GUARD_SLOTS];
    uint64_t seed[2];
};

void tern_guard_init(struct tern_guard *g, uint64_t seed0, uint64_t seed1);
/* True if a check from addr may go ahead at now_ms. */
bool tern_guard_allow(const struct tern_guard *g, const uint8_t addr[16],
                      uint64_t now_ms);
void tern_guard_fail(struct tern_guard *g, const uint8_t addr[16], uint64_t now_ms);
void tern_guard_ok(struct tern_guard *g, const uint8_t addr[16]);

/* --- CONNECT attempts per second per source address ------------------------------
 * The same fixed table shape: a slot counts an address's attempts in the current
 * one-second window; a new address takes a free slot of its probe run or the one
 * whose window is oldest. */
struct tern_rate_slot {
    uint8_t addr[16];
    uint64_t window_ms; /* start of the current window */
    uint32_t count;
    bool used;
};

struct tern_rate {
    struct tern_rate_slot slots[TERN_GUARD_SLOTS];
    uint64_t seed[2];
};

void tern_rate_init(struct tern_rate *r, uint64_t seed0, uint64_t seed1);
/* Counts an attempt from addr at now_ms; false if it is past `per_s` in its
 * one-second window (the attempt is then not counted). */
bool tern_rate_take(struct tern_rate *r, const uint8_t addr[16], uint64_t now_ms,
                    uint32_t per_s);

/* --- ACL file (Mosquitto's format, node/auth/auth_acl.c) -----------------------------
 *   topic [read|write|readwrite|deny] TOPIC    for the user of the last `user` line,
 *                                              or anonymous clients before the first
 *   user NAME                                  the rules below are NAME's
 *   pattern [read|write|readwrite|deny] TOPIC  for every client; %c = its client id,
 *                                              %u = its user name
 * No access word means readwrite. '#' starts a comment line. A pattern naming %c
 * (%u) does not apply to a client whose id (user name) holds '+', '#' or '/', nor
 * %u to an anonymous client, so a chosen id never widens a rule (CVE-2017-7650).
 *
 * A check: a deny rule that matches the topic (for a SUBSCRIBE filter: every
 * topic the filter matches) refuses; else an allow rule with the access asked
 * for that covers the topic (for a filter: every topic it matches) allows; else
 * refused. A filter that a deny rule only partly overlaps is allowed, and its
 * deliveries are checked one by one (the topic of each message is a name).
 * Nothing here recurses per topic level. */
#define TERN_ACL_FILE_MAX (16u * 1024 * 1024)
#define TERN_ACL_READ 1  /* subscribe, receive */
#define TERN_ACL_WRITE 2 /* publish, wills */

struct tern_acl;

int tern_acl_parse(const char *text, size_t len, struct tern_acl **out, char *errmsg);
int tern_acl_load(const char *path, struct tern_acl **out, char *errmsg);
void tern_acl_free(struct tern_acl *a);
size_t tern_acl_rule_count(const struct tern_acl *a);

/* user NULL: anonymous. topic: a topic name (write, or a message to deliver) or
 * filter (read); for a shared subscription the caller passes the filter inside
 * "$share/GROUP/". TERN_ACL_NO: refused. TERN_ACL_SOME: allowed, but a deny rule
 * overlaps part of the filter (each message through it must be checked).
 * TERN_ACL_ALL: allowed for every topic it matches (for a name: allowed). */
#define TERN_ACL_NO 0
#define TERN_ACL_SOME 1
#define TERN_ACL_ALL 2
int tern_acl_check(const struct tern_acl *a, const uint8_t *user, size_t user_len,
                   const uint8_t *client_id, size_t id_len, const uint8_t *topic,
                   size_t topic_len, int access);
/* tern_acl_check() != TERN_ACL_NO */
bool tern_acl_allows(const struct tern_acl *a, const uint8_t *user, size_t user_len,
                     const uint8_t *client_id, size_t id_len, const uint8_t *topic,
                     size_t topic_len, int access);

/* Topic filters, level by level without recursion ('$' topics excepted from
 * leading wildcards, as MQTT matches them): */
/* every topic that `inner` matches, `outer` matches too (a name is a filter
 * that matches itself) */
bool tern_acl_filter_covers(const char *outer, size_t olen, const char *inner,
                            size_t ilen);
/* some topic matches both */
bool tern_acl_filter_overlaps(const char *a, size_t alen, const char *b, size_t blen);

#endif
