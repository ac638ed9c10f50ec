/* String-keyed hash maps for the FSM: shared group key -> group, route key ->
 * route (fsm_map), and client id -> session (fsm_stab, below). Chained buckets,
 * seeded SipHash, doubling at load factor 1. Keys are not copied:
 * each value owns its key and outlives its entry. Visit order depends on the
 * table layout, so replicated logic never lets it decide an outcome. */
#include <stdlib.h>
#include <string.h>

#include "fsm_internal.h"
#include "tern/siphash.h"

#define MAP_BUCKETS_MIN 64u

/* Keys are client ids and topic filters, which clients choose: SipHash under a
 * per-table random key, so they cannot be chosen to share a bucket. Replicas
 * then lay their tables out differently: every walk whose order could decide
 * an outcome sorts what it collects (epoch, key), see fsm.c, fsm_snap.c. */
static uint64_t map_hash(const uint64_t seed[2], const char *key, size_t len)
{
    return tern_siphash(seed, key, len);
}

int fsm_map_init(struct fsm_map *m)
{
    tern_siphash_seed(m->seed);
    m->buckets = calloc(MAP_BUCKETS_MIN, sizeof(*m->buckets));
    m->nbuckets = MAP_BUCKETS_MIN;
    m->count = 0;
    return m->buckets ? TERN_OK : TERN_ENOMEM;
}

void fsm_map_free(struct fsm_map *m)
{
    for (size_t i = 0; m->buckets && i < m->nbuckets; i++) {
        struct fsm_map_ent *e = m->buckets[i];
        while (e) {
            struct fsm_map_ent *next = e->next;
            free(e);
            e = next;
        }
    }
    free(m->buckets);
    m->buckets = NULL;
    m->nbuckets = 0;
    m->count = 0;
}

static struct fsm_map_ent **map_slot(const struct fsm_map *m, const char *key, size_t len,
                                     uint64_t h)
{
    struct fsm_map_ent **p = &m->buckets[h & (m->nbuckets - 1)];
    while (*p) {
        struct fsm_map_ent *e = *p;
        if (e->hash == h && e->len == len && memcmp(e->key, key, len) == 0)
            break;
        p = &e->next;
    }
    return p;
}

void *fsm_map_get(const struct fsm_map *m, const char *key, size_t len)
{
    struct fsm_map_ent *e = *map_slot(m, key, len, map_hash(m->seed, key, len));
    return e ? e->val : NULL;
}

/* Growing is best effort: a failed resize only makes chains longer. */
static void map_grow(struct fsm_map *m)
{
    size_t n = m->nbuckets * 2;
    struct fsm_map_ent **b = calloc(n, sizeof(*b));
    if (!b)
        return;
    for (size_t i = 0; i < m->nbuckets; i++) {
        struct fsm_map_ent *e = m->buckets[i];
        while (e) {
            struct fsm_map_ent *next = e->next;
            e->next = b[e->hash & (n - 1)];
            b[e->hash & (n - 1)] = e;
            e = next;
        }
    }
    free(m->buckets);
    m->buckets = b;
    m->nbuckets = n;
}

int fsm_map_put(struct fsm_map *m, const char *key, size_t len, void *val)
{
    uint64_t h = map_hash(m->seed, key, len);
    struct fsm_map_ent **p = map_slot(m, key, len, h);
    if (*p) {
        (*p)->key = key;
        (*p)->val = val;
        return TERN_OK;
    }
    struct fsm_map_ent *e = malloc(sizeof(*e));
    if (!e)
        return TERN_ENOMEM;
    *e = (struct fsm_map_ent){.hash = h, .key = key, .len = len, .val = val};
    *p = e;
    m->count++;
    if (m->count > m->nbuckets)
        map_grow(m);
    return TERN_OK;
}

void fsm_map_del(struct fsm_map *m, const char *key, size_t len)
{
    struct fsm_map_ent **p = map_slot(m, key, len, map_hash(m->seed, key, len));
    struct fsm_map_ent *e = *p;
    if (!e)
        return;
    *p = e->next;
    free(e);
    m->count--;
}

int fsm_map_walk(const struct fsm_map *m, int (*fn)(void *ctx, void *val), void *ctx)
{
    for (size_t i = 0; i < m->nbuckets; i++) {
        struct fsm_map_ent *e = m->buckets[i];
        while (e) {
            /* Read next first: fn may delete the entry it is given. */
            struct fsm_map_ent *next = e->next;
            int rc = fn(ctx, e->val);
            if (rc)
                return rc;
            e = next;
        }
    }
    return 0;
}

/* --- sessions table ---
 * The same scheme as fsm_map (and the same visit order), but intrusive: a
 * session links to the next in its bucket itself and its key is its inline
 * client id, so there is no entry to allocate. The hash is not stored either;
 * growing rehashes the ids. */

int fsm_stab_init(struct fsm_stab *t)
{
    tern_siphash_seed(t->seed);
    t->buckets = calloc(MAP_BUCKETS_MIN, sizeof(*t->buckets));
    t->nbuckets = MAP_BUCKETS_MIN;
    t->count = 0;
    return t->buckets ? TERN_OK : TERN_ENOMEM;
}

void fsm_stab_free(struct fsm_stab *t)
{
    free(t->buckets);
    t->buckets = NULL;
    t->nbuckets = 0;
    t->count = 0;
}

static size_t stab_index(const struct fsm_stab *t, const char *key, size_t len)
{
    return (size_t)(map_hash(t->seed, key, len) & (t->nbuckets - 1));
}

struct tern_fsm_session *fsm_stab_get(const struct fsm_stab *t, const char *key,
                                      size_t len)
{
    struct tern_fsm_session *s = t->buckets[stab_index(t, key, len)];
    while (s && !(s->client_id_len == len && memcmp(s->client_id, key, len) == 0))
        s = s->hnext;
    return s;
}

/* Best effort, like map_grow: a failed resize only makes chains longer. */
static void stab_grow(struct fsm_stab *t)
{
    size_t n = t->nbuckets * 2;
    struct tern_fsm_session **b = calloc(n, sizeof(*b));
    if (!b)
        return;
    for (size_t i = 0; i < t->nbuckets; i++) {
        struct tern_fsm_session *s = t->buckets[i];
        while (s) {
            struct tern_fsm_session *next = s->hnext;
            size_t k =
                (size_t)(map_hash(t->seed, s->client_id, s->client_id_len) & (n - 1));
            s->hnext = b[k];
            b[k] = s;
            s = next;
        }
    }
    free(t->buckets);
    t->buckets = b;
    t->nbuckets = n;
}

void fsm_stab_put(struct fsm_stab *t, struct tern_fsm_session *s)
{
    struct tern_fsm_session **p =
        &t->buckets[stab_index(t, s->client_id, s->client_id_len)];
    while (*p)
        p = &(*p)->hnext;
    s->hnext = NULL;
    *p = s;
    t->count++;
    if (t->count > t->nbuckets)
        stab_grow(t);
}

void fsm_stab_del(struct fsm_stab *t, struct tern_fsm_session *s)
{
    struct tern_fsm_session **p =
        &t->buckets[stab_index(t, s->client_id, s->client_id_len)];
    while (*p && *p != s)
        p = &(*p)->hnext;
    if (!*p)
        return;
    *p = s->hnext;
    s->hnext = NULL;
    t->count--;
}

int fsm_stab_walk(const struct fsm_stab *t,
                  int (*fn)(void *ctx, struct tern_fsm_session *s), void *ctx)
{
    for (size_t i = 0; i < t->nbuckets; i++) {
        struct tern_fsm_session *s = t->buckets[i];
        while (s) {
            /* Read next first: fn may destroy the session it is given. */
            struct tern_fsm_session *next = s->hnext;
            int rc = fn(ctx, s);
            if (rc)
                return rc;
            s = next;
        }
    }
    return 0;
}
