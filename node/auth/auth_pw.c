/* Mosquitto password files (tern/auth.h): parse, check, hash.
 *
 * Entries are kept in one array sorted by user name, so a lookup is a binary
 * search and costs the same whatever names clients choose. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include "auth_int.h"
#include "tern/auth.h"
#include "tern/error.h"
#include "tern/scram.h"

struct pw_entry {
    char *user; /* not NUL-terminated in general: user_len bytes */
    size_t user_len;
    int kind; /* enum tern_pw_kind */
    uint32_t iterations;
    uint8_t salt[TERN_PW_SALT_MAX];
    size_t salt_len;
    uint8_t hash[TERN_PW_HASH_LEN];
};

struct tern_pwfile {
    struct pw_entry *e;
    size_t n;
    char *names; /* every user name, back to back */
};

/* --- base64 (RFC 4648, with or without padding) ----------------------------- */

static int b64_val(unsigned char ch)
{
    if (ch >= 'A' && ch <= 'Z')
        return ch - 'A';
    if (ch >= 'a' && ch <= 'z')
        return ch - 'a' + 26;
    if (ch >= '0' && ch <= '9')
        return ch - '0' + 52;
    if (ch == '+')
        return 62;
    if (ch == '/')
        return 63;
    return -1;
}

long tern_auth_b64_decode(const char *s, size_t len, uint8_t *out, size_t cap)
{
    while (len && s[len - 1] == '=')
        len--;
    if (len % 4 == 1)
        return -1;
    size_t n = 0;
    uint32_t acc = 0;
    unsigned bits = 0;
    for (size_t i = 0; i < len; i++) {
        int v = b64_val((unsigned char)s[i]);
        if (v < 0)
            return -1;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (n == cap)
                return -1;
            out[n++] = (uint8_t)(acc >> bits);
        }
    }
    return (long)n;
}

size_t tern_auth_b64_encode(const uint8_t *in, size_t len, char *out)
{
    static const char tab[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < len)
            v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < len)
            v |= in[i + 2];
        out[o++] = tab[(v >> 18) & 63];
        out[o++] = tab[(v >> 12) & 63];
        out[o++] = i + 1 < len ? tab[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < len ? tab[v & 63] : '=';
    }
    out[o] = '\0';
    return o;
}

/* --- hashing ------------------------------------------------------------------ */

static int digest(int kind, uint32_t iterations, const uint8_t *salt, size_t salt_len,
                  const uint8_t *pw, size_t pw_len, uint8_t out[TERN_PW_HASH_LEN])
{
    if (kind == TERN_PW_PBKDF2) {
        /* OpenSSL wants a non-NULL password pointer even for length 0. */
        return PKCS5_PBKDF2_HMAC(pw_len ? (const char *)pw : "", (int)pw_len, salt,
                                 (int)salt_len, (int)iterations, EVP_sha512(),
                                 TERN_PW_HASH_LEN, out) == 1
                   ? TERN_OK
                   : TERN_ENOMEM;
    }
    /* Mosquitto's $6$: one SHA-512 over the password then the salt. */
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned int len = 0;
    int ok = ctx && EVP_DigestInit_ex(ctx, EVP_sha512(), NULL) == 1 &&
             EVP_DigestUpdate(ctx, pw, pw_len) == 1 &&
             EVP_DigestUpdate(ctx, salt, salt_len) == 1 &&
             EVP_DigestFinal_ex(ctx, out, &len) == 1 && len == TERN_PW_HASH_LEN;
    EVP_MD_CTX_free(ctx);
    return ok ? TERN_OK : TERN_ENOMEM;
}

/* --- parsing ------------------------------------------------------------------ */

static int bad_line(char *errmsg, size_t line, const char *why)
{
    snprintf(errmsg, TERN_ERRMSG_SIZE, "password file line %zu: %s", line, why);
    return TERN_EINVAL;
}

/* A SCRAM entry keeps StoredKey then ServerKey in hash[]. */
static void verifier_of(const struct pw_entry *e, struct tern_scram_verifier *v)
{
    memset(v, 0, sizeof *v);
    v->iterations = e->iterations;
    memcpy(v->salt, e->salt, e->salt_len);
    v->salt_len = e->salt_len;
    memcpy(v->stored_key, e->hash, TERN_SCRAM_KEY_LEN);
    memcpy(v->server_key, e->hash + TERN_SCRAM_KEY_LEN, TERN_SCRAM_KEY_LEN);
}

/* Parses "$6$SALT$HASH", "$7$ITER$SALT$HASH" or a SCRAM-SHA-256 verifier
 * (s[0..len)) into e. */
static const char *parse_hash(const char *s, size_t len, struct pw_entry *e)
{
    if (len > 0 && s[0] == 'S') {
        struct tern_scram_verifier v;
        const char *why = tern_scram_verifier_parse(s, len, &v);
        if (why)
            return why;
        e->kind = TERN_PW_SCRAM;
        e->iterations = v.iterations;
        memcpy(e->salt, v.salt, v.salt_len);
        e->salt_len = v.salt_len;
        memcpy(e->hash, v.stored_key, TERN_SCRAM_KEY_LEN);
        memcpy(e->hash + TERN_SCRAM_KEY_LEN, v.server_key, TERN_SCRAM_KEY_LEN);
        OPENSSL_cleanse(&v, sizeof v);
        return NULL;
    }
    if (len < 3 || s[0] != '$' || (s[1] != '6' && s[1] != '7') || s[2] != '$')
        return "not a $6$ or $7$ hash (plain-text passwords are not accepted: "
               "hash the file with mosquitto_passwd -U or ternctl passwd)";
    e->kind = s[1] - '0';
    const char *p = s + 3, *end = s + len;
    e->iterations = 1;
    if (e->kind == TERN_PW_PBKDF2) {
        uint64_t it = 0;
        const char *q = p;
        for (; q < end && *q >= '0' && *q <= '9'; q++) /* saturates past the cap */
            it = it > TERN_PW_ITER_MAX ? it : it * 10 + (uint64_t)(*q - '0');
        if (q == p || q == end || *q != '$')
            return "$7$: iterations must be a decimal number followed by '$'";
        if (it < TERN_PW_ITER_MIN || it > TERN_PW_ITER_MAX)
            return "$7$: iterations out of range (1 to 10000000)";
        e->iterations = (uint32_t)it;
        p = q + 1;
    }
    const char *dollar = memchr(p, '$', (size_t)(end - p));
    if (!dollar)
        return "missing '$' between salt and hash";
    long sl = tern_auth_b64_decode(p, (size_t)(dollar - p), e->salt, sizeof e->salt);
    if (sl <= 0)
        return "salt is not base64 of 1 to 64 bytes";
    e->salt_len = (size_t)sl;
    uint8_t hash[TERN_PW_HASH_LEN + 1];
    long hl =
        tern_auth_b64_decode(dollar + 1, (size_t)(end - dollar - 1), hash, sizeof hash);
    if (hl != TERN_PW_HASH_LEN)
        return "hash is not base64 of 64 bytes (SHA-512)";
    memcpy(e->hash, hash, TERN_PW_HASH_LEN);
    return NULL;
}

static int cmp_user(const char *a, size_t al, const char *b, size_t bl)
{
    int c = memcmp(a, b, al < bl ? al : bl);
    return c ? c : (al < bl ? -1 : al > bl);
}

static int entry_cmp(const void *x, const void *y)
{
    const struct pw_entry *a = x, *b = y;
    return cmp_user(a->user, a->user_len, b->user, b->user_len);
}

void tern_pwfile_free(struct tern_pwfile *f)
{
    if (!f)
        return;
    if (f->e)
        OPENSSL_cleanse(f->e, f->n * sizeof f->e[0]);
    free(f->e);
    free(f->names);
    free(f);
}

int tern_pwfile_parse(const char *text, size_t len, struct tern_pwfile **out,
                      char *errmsg)
{
    *out = NULL;
    if (len > TERN_PW_FILE_MAX) {
        snprintf(errmsg, TERN_ERRMSG_SIZE, "password file: larger than %u bytes",
                 TERN_PW_FILE_MAX);
        return TERN_ETOOBIG;
    }
    size_t lines = 1;
    for (size_t i = 0; i < len; i++)
        lines += text[i] == '\n';
    struct tern_pwfile *f = calloc(1, sizeof *f);
    if (!f)
        return TERN_ENOMEM;
    f->e = calloc(lines, sizeof f->e[0]);
    f->names = malloc(len ? len : 1);
    if (!f->e || !f->names) {
        tern_pwfile_free(f);
        return TERN_ENOMEM;
    }
    size_t names_used = 0, line = 0;
    const char *p = text, *end = text + len;
    int rc = TERN_OK;
    while (p < end && rc == TERN_OK) {
        line++;
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        const char *next = nl ? nl + 1 : end;
        /* Trailing CR, spaces and tabs are not part of the hash. */
        while (le > p && (le[-1] == '\r' || le[-1] == ' ' || le[-1] == '\t'))
            le--;
        const char *ls = p;
        p = next;
        if (ls == le || ls[0] == '#')
            continue;
        if (memchr(ls, '\0', (size_t)(le - ls))) {
            rc = bad_line(errmsg, line, "NUL byte");
            break;
        }
        const char *colon = memchr(ls, ':', (size_t)(le - ls));
        if (!colon) {
            rc = bad_line(errmsg, line, "expected USER:HASH");
            break;
        }
        size_t ulen = (size_t)(colon - ls);
        if (ulen == 0 || ulen > TERN_PW_USER_MAX) {
            rc = bad_line(errmsg, line, "user name must be 1 to 65535 bytes");
            break;
        }
        struct pw_entry *e = &f->e[f->n];
        const char *why = parse_hash(colon + 1, (size_t)(le - colon - 1), e);
        if (why) {
            rc = bad_line(errmsg, line, why);
            break;
        }
        memcpy(f->names + names_used, ls, ulen);
        e->user = f->names + names_used; /* names is allocated once: stable */
        e->user_len = ulen;
        names_used += ulen;
        f->n++;
    }
    if (rc != TERN_OK) {
        tern_pwfile_free(f);
        return rc;
    }
    qsort(f->e, f->n, sizeof f->e[0], entry_cmp);
    for (size_t i = 1; i < f->n; i++) {
        if (entry_cmp(&f->e[i - 1], &f->e[i]) == 0) {
            snprintf(errmsg, TERN_ERRMSG_SIZE,
                     "password file: user \"%.*s\" appears twice",
                     (int)(f->e[i].user_len > 64 ? 64 : f->e[i].user_len), f->e[i].user);
            tern_pwfile_free(f);
            return TERN_EINVAL;
        }
    }
    *out = f;
    return TERN_OK;
}

int tern_pwfile_load(const char *path, struct tern_pwfile **out, char *errmsg)
{
    *out = NULL;
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        snprintf(errmsg, TERN_ERRMSG_SIZE, "password file %.200s: cannot open", path);
        return TERN_EIO;
    }
    char *buf = malloc(TERN_PW_FILE_MAX + 1);
    if (!buf) {
        fclose(fp);
        return TERN_ENOMEM;
    }
    size_t n = fread(buf, 1, TERN_PW_FILE_MAX + 1, fp);
    int err = ferror(fp);
    fclose(fp);
    int rc;
    if (err) {
        snprintf(errmsg, TERN_ERRMSG_SIZE, "password file %.200s: read error", path);
        rc = TERN_EIO;
    } else {
        rc = tern_pwfile_parse(buf, n, out, errmsg);
    }
    OPENSSL_cleanse(buf, n);
    free(buf);
    return rc;
}

size_t tern_pwfile_count(const struct tern_pwfile *f)
{
    return f ? f->n : 0;
}

bool tern_pwfile_entry(const struct tern_pwfile *f, size_t i, const char **user,
                       size_t *user_len, int *kind, uint32_t *iterations)
{
    if (!f || i >= f->n)
        return false;
    *user = f->e[i].user;
    *user_len = f->e[i].user_len;
    *kind = f->e[i].kind;
    *iterations = f->e[i].iterations;
    return true;
}

static const struct pw_entry *find(const struct tern_pwfile *f, const uint8_t *user,
                                   size_t len)
{
    size_t lo = 0, hi = f ? f->n : 0;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = cmp_user((const char *)user, len, f->e[mid].user, f->e[mid].user_len);
        if (c == 0)
            return &f->e[mid];
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

int tern_pwfile_check(const struct tern_pwfile *f, const uint8_t *user, size_t user_len,
                      const uint8_t *pw, size_t pw_len)
{
    const struct pw_entry *e = find(f, user, user_len);
    /* An unknown user is hashed like the first user (or a default), so the time
     * taken does not say whether the name exists. */
    static const struct pw_entry dummy = {
        .kind = TERN_PW_PBKDF2, .iterations = 101, .salt_len = TERN_PW_SALT_LEN};
    const struct pw_entry *model = e ? e : (f && f->n ? &f->e[0] : &dummy);
    if (model->kind == TERN_PW_SCRAM) {
        struct tern_scram_verifier v;
        verifier_of(model, &v);
        bool same = tern_scram_verifier_check(&v, pw, pw_len);
        OPENSSL_cleanse(&v, sizeof v);
        return e && same ? TERN_OK : TERN_ENOTFOUND;
    }
    uint8_t got[TERN_PW_HASH_LEN];
    if (digest(model->kind, model->iterations, model->salt, model->salt_len, pw, pw_len,
               got) != TERN_OK)
        return TERN_ENOTFOUND;
    int same = CRYPTO_memcmp(got, model->hash, TERN_PW_HASH_LEN) == 0;
    OPENSSL_cleanse(got, sizeof got);
    return e && same ? TERN_OK : TERN_ENOTFOUND;
}

bool tern_pwfile_scram(const struct tern_pwfile *f, const uint8_t *user, size_t user_len,
                       struct tern_scram_verifier *v)
{
    const struct pw_entry *e = find(f, user, user_len);
    if (!e || e->kind != TERN_PW_SCRAM)
        return false;
    verifier_of(e, v);
    return true;
}

uint32_t tern_pwfile_scram_iterations(const struct tern_pwfile *f)
{
    for (size_t i = 0; f && i < f->n; i++)
        if (f->e[i].kind == TERN_PW_SCRAM)
            return f->e[i].iterations;
    return TERN_SCRAM_ITER_DEFAULT;
}

int tern_pw_scram(const uint8_t *pw, size_t pw_len, uint32_t iterations, char *out)
{
    uint8_t salt[TERN_SCRAM_SALT_LEN];
    if (RAND_bytes(salt, sizeof salt) != 1)
        return TERN_EIO;
    struct tern_scram_verifier v;
    int rc = tern_scram_verifier_make(pw, pw_len, iterations, salt, sizeof salt, &v);
    if (rc == TERN_OK)
        tern_scram_verifier_format(&v, out);
    OPENSSL_cleanse(&v, sizeof v);
    return rc;
}

int tern_pw_hash7(const uint8_t *pw, size_t pw_len, uint32_t iterations, char *out,
                  size_t cap)
{
    if (iterations < TERN_PW_ITER_MIN || iterations > TERN_PW_ITER_MAX || cap < 160)
        return TERN_EINVAL;
    uint8_t salt[TERN_PW_SALT_LEN], hash[TERN_PW_HASH_LEN];
    if (RAND_bytes(salt, sizeof salt) != 1)
        return TERN_EIO;
    if (digest(TERN_PW_PBKDF2, iterations, salt, sizeof salt, pw, pw_len, hash) !=
        TERN_OK)
        return TERN_ENOMEM;
    int n = snprintf(out, cap, "$7$%u$", (unsigned)iterations);
    n += (int)tern_auth_b64_encode(salt, sizeof salt, out + n);
    out[n++] = '$';
    tern_auth_b64_encode(hash, sizeof hash, out + n);
    OPENSSL_cleanse(hash, sizeof hash);
    return TERN_OK;
}

void tern_file_digest(const char *path, char *hex)
{
    hex[0] = '\0';
    FILE *fp = path && path[0] ? fopen(path, "rb") : NULL;
    if (!fp)
        return;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    uint8_t buf[4096], md[32];
    unsigned int mdlen = 0;
    int ok = ctx && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1;
    size_t n;
    while (ok && (n = fread(buf, 1, sizeof buf, fp)) > 0)
        ok = EVP_DigestUpdate(ctx, buf, n) == 1;
    ok = ok && !ferror(fp) && EVP_DigestFinal_ex(ctx, md, &mdlen) == 1 && mdlen == 32;
    EVP_MD_CTX_free(ctx);
    fclose(fp);
    if (!ok)
        return;
    for (unsigned i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
}

int tern_token_load(const char *path, char *out, char *errmsg)
{
    out[0] = '\0';
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        snprintf(errmsg, TERN_ERRMSG_SIZE, "admin_token_file %.200s: cannot open", path);
        return TERN_EIO;
    }
    char buf[TERN_TOKEN_MAX + 4];
    size_t n = fread(buf, 1, sizeof buf - 1, fp);
    fclose(fp);
    buf[n] = '\0';
    char *p = buf, *nl = strpbrk(buf, "\r\n");
    if (nl)
        *nl = '\0';
    while (*p == ' ' || *p == '\t')
        p++;
    size_t len = strlen(p);
    while (len && (p[len - 1] == ' ' || p[len - 1] == '\t'))
        p[--len] = '\0';
    int rc = TERN_OK;
    if (len < TERN_TOKEN_MIN || len > TERN_TOKEN_MAX || (!nl && n == sizeof buf - 1)) {
        snprintf(errmsg, TERN_ERRMSG_SIZE,
                 "admin_token_file %.200s: the token must be %u to %u bytes", path,
                 TERN_TOKEN_MIN, TERN_TOKEN_MAX);
        rc = TERN_EINVAL;
    } else {
        memcpy(out, p, len + 1);
    }
    OPENSSL_cleanse(buf, sizeof buf);
    return rc;
}

bool tern_token_equal(const char *a, size_t alen, const char *b, size_t blen)
{
    /* Compare digests: CRYPTO_memcmp needs equal lengths, and a length check
     * first would tell how long the token is. */
    uint8_t da[32], db[32];
    unsigned int la = 0, lb = 0;
    if (EVP_Digest(a, alen, da, &la, EVP_sha256(), NULL) != 1 ||
        EVP_Digest(b, blen, db, &lb, EVP_sha256(), NULL) != 1)
        return false;
    return CRYPTO_memcmp(da, db, sizeof da) == 0 && alen == blen;
}
