/* Mosquitto ACL files (tern/auth.h): parse and check.
 *
 * Rules are kept in one array grouped by owner (anonymous, each user, patterns),
 * users sorted by name, so a check walks only the rules that can apply to the
 * client: its own (or the anonymous ones) and the patterns. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tern/auth.h"
#include "tern/error.h"

#define OWNER_ANON 0u
#define OWNER_PATTERN 1u
#define OWNER_USER0 2u /* users are OWNER_USER0 + their index */

struct acl_rule {
    char *topic;
    size_t len;
    size_t owner, seq;
    uint8_t access; /* TERN_ACL_READ | TERN_ACL_WRITE, 0 = deny */
    bool has_c, has_u;
};

struct acl_user {
    const char *name;
    size_t len;
    size_t owner;        /* canonical owner (first line of that name) */
    size_t first, count; /* its rules, after grouping */
};

struct tern_acl {
    struct acl_rule *r;
    size_t nr;
    struct acl_user *u;
    size_t nu;
    size_t anon_first, anon_count, pat_first, pat_count;
    char *text; /* a copy of the file: names and topics point into it */
};

/* --- topic filters ------------------------------------------------------------ */

struct cursor {
    const char *s;
    size_t len, pos;
    bool done;
};

static bool next_level(struct cursor *c, const char **lvl, size_t *n)
{
    if (c->done)
        return false;
    const char *start = c->s + c->pos;
    const char *slash = memchr(start, '/', c->len - c->pos);
    if (slash) {
        *n = (size_t)(slash - start);
        c->pos += *n + 1;
    } else {
        *n = c->len - c->pos;
        c->pos = c->len;
        c->done = true;
    }
    *lvl = start;
    return true;
}

static bool is(const char *l, size_t n, char ch)
{
    return n == 1 && l[0] == ch;
}

static bool dollar(const char *l, size_t n)
{
    return n > 0 && l[0] == '$';
}

bool tern_acl_filter_covers(const char *outer, size_t olen, const char *inner,
                            size_t ilen)
{
    struct cursor co = {outer, olen, 0, false}, ci = {inner, ilen, 0, false};
    const char *o = NULL, *i = NULL;
    size_t on = 0, in = 0;
    for (bool first = true;; first = false) {
        bool ho = next_level(&co, &o, &on), hi = next_level(&ci, &i, &in);
        if (!ho)
            return !hi;
        if (is(o, on, '#')) /* also covers the parent level: a/# covers a */
            return !(first && hi && dollar(i, in));
        if (!hi)
            return false;
        if (is(o, on, '+')) {
            if (is(i, in, '#') || (first && dollar(i, in)))
                return false;
            continue;
        }
        if (is(i, in, '+') || is(i, in, '#') || on != in || memcmp(o, i, on) != 0)
            return false;
    }
}

bool tern_acl_filter_overlaps(const char *a, size_t alen, const char *b, size_t blen)
{
    struct cursor ca = {a, alen, 0, false}, cb = {b, blen, 0, false};
    const char *x = NULL, *y = NULL;
    size_t xn = 0, yn = 0;
    for (bool first = true;; first = false) {
        bool hx = next_level(&ca, &x, &xn), hy = next_level(&cb, &y, &yn);
        if (!hx && !hy)
            return true;
        if (hx && is(x, xn, '#'))
            return !(first && hy && dollar(y, yn));
        if (hy && is(y, yn, '#'))
            return !(first && hx && dollar(x, xn));
        if (!hx || !hy)
            return false;
        if (is(x, xn, '+')) {
            if (first && dollar(y, yn))
                return false;
            continue;
        }
        if (is(y, yn, '+')) {
            if (first && dollar(x, xn))
                return false;
            continue;
        }
        if (xn != yn || memcmp(x, y, xn) != 0)
            return false;
    }
}

/* A filter MQTT accepts: '#' only as the whole last level, '+' only as a whole
 * level, no NUL, 1 to 65535 bytes. */
static bool filter_valid(const char *s, size_t len)
{
    if (len == 0 || len > 65535 || memchr(s, '\0', len))
        return false;
    struct cursor c = {s, len, 0, false};
    const char *l;
    size_t n;
    while (next_level(&c, &l, &n)) {
        for (size_t k = 0; k < n; k++) {
            if ((l[k] == '+' || l[k] == '#') && n != 1)
                return false;
        }
        if (is(l, n, '#') && !c.done)
            return false;
    }
    return true;
}

/* --- parsing ------------------------------------------------------------------ */

static int bad_line(char *errmsg, size_t line, const char *why)
{
    snprintf(errmsg, TERN_ERRMSG_SIZE, "ACL file line %zu: %s", line, why);
    return TERN_EINVAL;
}

static bool word(const char **p, const char *end, const char *w)
{
    size_t n = strlen(w);
    if ((size_t)(end - *p) < n || memcmp(*p, w, n) != 0)
        return false;
    const char *q = *p + n;
    if (q != end && *q != ' ' && *q != '\t')
        return false;
    while (q < end && (*q == ' ' || *q == '\t'))
        q++;
    *p = q;
    return true;
}

static bool contains(const char *s, size_t n, const char *what)
{
    size_t w = strlen(what);
    for (size_t i = 0; i + w <= n; i++)
        if (memcmp(s + i, what, w) == 0)
            return true;
    return false;
}

static int rule_cmp(const void *x, const void *y)
{
    const struct acl_rule *a = x, *b = y;
    if (a->owner != b->owner)
        return a->owner < b->owner ? -1 : 1;
    return a->seq < b->seq ? -1 : a->seq > b->seq;
}

static int name_cmp(const char *a, size_t al, const char *b, size_t bl)
{
    int c = memcmp(a, b, al < bl ? al : bl);
    return c ? c : (al < bl ? -1 : al > bl);
}

static int user_cmp(const void *x, const void *y)
{
    const struct acl_user *a = x, *b = y;
    int c = name_cmp(a->name, a->len, b->name, b->len);
    if (c)
        return c;
    return a->owner < b->owner ? -1 : a->owner > b->owner;
}

void tern_acl_free(struct tern_acl *a)
{
    if (!a)
        return;
    free(a->r);
    free(a->u);
    free(a->text);
    free(a);
}

/* Groups rules by owner, sorts users and folds a user named twice into one. */
static int finish(struct tern_acl *a)
{
    qsort(a->u, a->nu, sizeof a->u[0], user_cmp);
    size_t *canon = malloc((a->nu + 1) * sizeof *canon);
    if (!canon)
        return TERN_ENOMEM;
    size_t w = 0;
    for (size_t i = 0; i < a->nu; i++) {
        if (w &&
            name_cmp(a->u[w - 1].name, a->u[w - 1].len, a->u[i].name, a->u[i].len) == 0) {
            canon[a->u[i].owner - OWNER_USER0] = a->u[w - 1].owner;
            continue;
        }
        canon[a->u[i].owner - OWNER_USER0] = a->u[i].owner;
        a->u[w++] = a->u[i];
    }
    a->nu = w;
    for (size_t i = 0; i < a->nr; i++)
        if (a->r[i].owner >= OWNER_USER0)
            a->r[i].owner = canon[a->r[i].owner - OWNER_USER0];
    free(canon);
    qsort(a->r, a->nr, sizeof a->r[0], rule_cmp);
    /* Users are sorted by name and each keeps its canonical owner id; find each
     * one's run of rules. */
    size_t k = 0;
    for (; k < a->nr && a->r[k].owner == OWNER_ANON; k++)
        ;
    a->anon_first = 0;
    a->anon_count = k;
    a->pat_first = k;
    for (; k < a->nr && a->r[k].owner == OWNER_PATTERN; k++)
        ;
    a->pat_count = k - a->pat_first;
    for (size_t i = 0; i < a->nu; i++) {
        /* Binary search for the first rule of this owner. */
        size_t lo = k, hi = a->nr;
        while (lo < hi) {
            size_t mid = lo + (hi - lo) / 2;
            if (a->r[mid].owner < a->u[i].owner)
                lo = mid + 1;
            else
                hi = mid;
        }
        size_t e = lo;
        while (e < a->nr && a->r[e].owner == a->u[i].owner)
            e++;
        a->u[i].first = lo;
        a->u[i].count = e - lo;
    }
    return TERN_OK;
}

int tern_acl_parse(const char *text, size_t len, struct tern_acl **out, char *errmsg)
{
    *out = NULL;
    if (len > TERN_ACL_FILE_MAX) {
        snprintf(errmsg, TERN_ERRMSG_SIZE, "ACL file: larger than %u bytes",
                 TERN_ACL_FILE_MAX);
        return TERN_ETOOBIG;
    }
    size_t lines = 1;
    for (size_t i = 0; i < len; i++)
        lines += text[i] == '\n';
    struct tern_acl *a = calloc(1, sizeof *a);
    if (!a)
        return TERN_ENOMEM;
    a->text = malloc(len ? len : 1);
    a->r = calloc(lines, sizeof a->r[0]);
    a->u = calloc(lines, sizeof a->u[0]);
    if (!a->text || !a->r || !a->u) {
        tern_acl_free(a);
        return TERN_ENOMEM;
    }
    if (len)
        memcpy(a->text, text, len);
    size_t owner = OWNER_ANON, line = 0;
    const char *p = a->text, *end = a->text + len;
    int rc = TERN_OK;
    while (p < end && rc == TERN_OK) {
        line++;
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end, *ls = p;
        p = nl ? nl + 1 : end;
        while (ls < le && (*ls == ' ' || *ls == '\t'))
            ls++;
        while (le > ls && (le[-1] == '\r' || le[-1] == ' ' || le[-1] == '\t'))
            le--;
        if (ls == le || *ls == '#')
            continue;
        if (memchr(ls, '\0', (size_t)(le - ls))) {
            rc = bad_line(errmsg, line, "NUL byte");
            break;
        }
        bool pattern = false;
        if (word(&ls, le, "user")) {
            if (ls == le) {
                rc = bad_line(errmsg, line, "user: missing name");
                break;
            }
            owner = OWNER_USER0 + a->nu;
            a->u[a->nu++] = (struct acl_user){ls, (size_t)(le - ls), owner, 0, 0};
            continue;
        }
        if (!word(&ls, le, "topic") && !(pattern = word(&ls, le, "pattern"))) {
            rc = bad_line(errmsg, line, "expected topic, pattern or user");
            break;
        }
        uint8_t access = TERN_ACL_READ | TERN_ACL_WRITE;
        const char *t = ls;
        if (word(&t, le, "readwrite"))
            access = TERN_ACL_READ | TERN_ACL_WRITE;
        else if (word(&t, le, "read"))
            access = TERN_ACL_READ;
        else if (word(&t, le, "write"))
            access = TERN_ACL_WRITE;
        else if (word(&t, le, "deny"))
            access = 0;
        else
            t = ls;
        if (t == le) {
            rc = bad_line(errmsg, line, "missing topic");
            break;
        }
        if (!filter_valid(t, (size_t)(le - t))) {
            rc = bad_line(errmsg, line, "not a valid topic filter");
            break;
        }
        struct acl_rule *r = &a->r[a->nr];
        *r = (struct acl_rule){.topic = (char *)t,
                               .len = (size_t)(le - t),
                               .owner = pattern ? OWNER_PATTERN : owner,
                               .seq = a->nr,
                               .access = access};
        r->has_c = pattern && contains(t, r->len, "%c");
        r->has_u = pattern && contains(t, r->len, "%u");
        a->nr++;
    }
    if (rc == TERN_OK)
        rc = finish(a);
    if (rc != TERN_OK) {
        tern_acl_free(a);
        return rc;
    }
    *out = a;
    return TERN_OK;
}

int tern_acl_load(const char *path, struct tern_acl **out, char *errmsg)
{
    *out = NULL;
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        snprintf(errmsg, TERN_ERRMSG_SIZE, "ACL file %.200s: cannot open", path);
        return TERN_EIO;
    }
    char *buf = malloc(TERN_ACL_FILE_MAX + 1);
    if (!buf) {
        fclose(fp);
        return TERN_ENOMEM;
    }
    size_t n = fread(buf, 1, TERN_ACL_FILE_MAX + 1, fp);
    int err = ferror(fp);
    fclose(fp);
    int rc = TERN_EIO;
    if (err)
        snprintf(errmsg, TERN_ERRMSG_SIZE, "ACL file %.200s: read error", path);
    else
        rc = tern_acl_parse(buf, n, out, errmsg);
    free(buf);
    return rc;
}

size_t tern_acl_rule_count(const struct tern_acl *a)
{
    return a ? a->nr : 0;
}

/* --- checking ----------------------------------------------------------------- */

struct who {
    const uint8_t *user, *id;
    size_t user_len, id_len;
};

static bool widens(const uint8_t *s, size_t n)
{
    return memchr(s, '+', n) || memchr(s, '#', n) || memchr(s, '/', n);
}

/* The rule's filter for this client into *f (*buf malloc'ed when it is a pattern
 * with substitutions). 1: the rule applies; 0: it does not (a %u pattern for an
 * anonymous client, a %c pattern for an empty id); -1: the client's id or user
 * name would change the pattern's levels (it holds '+', '#' or '/'), or the
 * result would be too long: the caller fails closed (a deny rule refuses, an
 * allow rule does not allow), so a chosen id never widens a rule. */
static int expand(const struct acl_rule *r, const struct who *w, char **buf,
                  const char **f, size_t *flen)
{
    *buf = NULL;
    *f = r->topic;
    *flen = r->len;
    if (!r->has_c && !r->has_u)
        return 1;
    if ((r->has_c && w->id_len == 0) || (r->has_u && !w->user))
        return 0;
    if ((r->has_c && widens(w->id, w->id_len)) ||
        (r->has_u && (w->user_len == 0 || widens(w->user, w->user_len))))
        return -1;
    size_t need = 0;
    for (size_t i = 0; i < r->len; i++) {
        if (r->topic[i] == '%' && i + 1 < r->len &&
            (r->topic[i + 1] == 'c' || r->topic[i + 1] == 'u')) {
            need += r->topic[i + 1] == 'c' ? w->id_len : w->user_len;
            i++;
        } else {
            need++;
        }
        if (need > 65535) /* longer than any topic MQTT carries */
            return -1;
    }
    char *out = malloc(need + 1);
    if (!out)
        return -1;
    size_t o = 0;
    for (size_t i = 0; i < r->len; i++) {
        if (r->topic[i] == '%' && i + 1 < r->len &&
            (r->topic[i + 1] == 'c' || r->topic[i + 1] == 'u')) {
            bool c = r->topic[i + 1] == 'c';
            memcpy(out + o, c ? w->id : w->user, c ? w->id_len : w->user_len);
            o += c ? w->id_len : w->user_len;
            i++;
        } else {
            out[o++] = r->topic[i];
        }
    }
    *buf = out;
    *f = out;
    *flen = o;
    return 1;
}

/* Allow pass: 1 if an allow rule of the run with `access` covers t, else 0. */
static int scan_allow(const struct acl_rule *r, size_t n, const struct who *w,
                      const char *t, size_t tlen, int access)
{
    for (size_t i = 0; i < n; i++) {
        if (!(r[i].access & access))
            continue;
        char *buf;
        const char *f;
        size_t flen;
        if (expand(&r[i], w, &buf, &f, &flen) <= 0)
            continue;
        bool hit = tern_acl_filter_covers(f, flen, t, tlen);
        free(buf);
        if (hit)
            return 1;
    }
    return 0;
}

/* Deny pass: TERN_ACL_NO if a deny rule of the run covers t (for a topic name:
 * matches it) or fails closed; TERN_ACL_SOME if one only overlaps part of the
 * filter; else TERN_ACL_ALL. */
static int scan_deny(const struct acl_rule *r, size_t n, const struct who *w,
                     const char *t, size_t tlen)
{
    int level = TERN_ACL_ALL;
    for (size_t i = 0; i < n; i++) {
        if (r[i].access != 0)
            continue;
        char *buf;
        const char *f;
        size_t flen;
        int e = expand(&r[i], w, &buf, &f, &flen);
        if (e < 0)
            return TERN_ACL_NO;
        if (e == 0)
            continue;
        bool covers = tern_acl_filter_covers(f, flen, t, tlen);
        bool overlaps = covers || tern_acl_filter_overlaps(f, flen, t, tlen);
        free(buf);
        if (covers)
            return TERN_ACL_NO;
        if (overlaps)
            level = TERN_ACL_SOME;
    }
    return level;
}

int tern_acl_check(const struct tern_acl *a, const uint8_t *user, size_t user_len,
                   const uint8_t *client_id, size_t id_len, const uint8_t *topic,
                   size_t topic_len, int access)
{
    if (!a)
        return TERN_ACL_ALL; /* no ACL file: no restriction */
    struct who w = {user, client_id, user_len, id_len};
    const struct acl_rule *own = NULL;
    size_t own_n = 0;
    if (!user) {
        own = a->r + a->anon_first;
        own_n = a->anon_count;
    } else {
        size_t lo = 0, hi = a->nu;
        while (lo < hi) {
            size_t mid = lo + (hi - lo) / 2;
            int c = name_cmp((const char *)user, user_len, a->u[mid].name, a->u[mid].len);
            if (c == 0) {
                own = a->r + a->u[mid].first;
                own_n = a->u[mid].count;
                break;
            }
            if (c < 0)
                hi = mid;
            else
                lo = mid + 1;
        }
    }
    const char *t = (const char *)topic;
    const struct acl_rule *pat = a->r + a->pat_first;
    int d1 = scan_deny(own, own_n, &w, t, topic_len);
    if (d1 == TERN_ACL_NO)
        return TERN_ACL_NO;
    int d2 = scan_deny(pat, a->pat_count, &w, t, topic_len);
    if (d2 == TERN_ACL_NO)
        return TERN_ACL_NO;
    if (!scan_allow(own, own_n, &w, t, topic_len, access) &&
        !scan_allow(pat, a->pat_count, &w, t, topic_len, access))
        return TERN_ACL_NO;
    return d1 == TERN_ACL_SOME || d2 == TERN_ACL_SOME ? TERN_ACL_SOME : TERN_ACL_ALL;
}

bool tern_acl_allows(const struct tern_acl *a, const uint8_t *user, size_t user_len,
                     const uint8_t *client_id, size_t id_len, const uint8_t *topic,
                     size_t topic_len, int access)
{
    return tern_acl_check(a, user, user_len, client_id, id_len, topic, topic_len,
                          access) != TERN_ACL_NO;
}
