/* The FSM's hash tables, on tern_hmap: shared group key -> group and route key
 * -> route (fsm_map), and client id -> session (fsm_stab, below). The values
 * hold their keys, so the tables hold only pointers to them.
 *
 * Keys are client ids and topic filters, which clients choose: tern_hmap
 * hashes them under a per-process random seed, so they cannot be chosen to
 * share a probe run. Replicas therefore lay their tables out differently, and
 * visit order differs between them: every walk whose order could decide an
 * outcome sorts what it collects (epoch, key), see fsm.c, fsm_snap.c. */
#include <stdlib.h>
#include <string.h>

#include "fsm_internal.h"

bool fsm_group_eq(const void *item, const void *key, size_t len)
{
    const struct fsm_group *g = item;
    return g->key_len == len && memcmp(g->key, key, len) == 0;
}

bool fsm_route_eq(const void *item, const void *key, size_t len)
{
    const struct fsm_route *rt = item;
    return rt->key_len == len && memcmp(rt->key, key, len) == 0;
}

void fsm_map_init(struct fsm_map *m, tern_hmap_eq_fn eq)
{
    tern_hmap_init(&m->h);
    m->eq = eq;
}

void fsm_map_free(struct fsm_map *m)
{
    tern_hmap_free(&m->h);
}

void *fsm_map_get(const struct fsm_map *m, const char *key, size_t len)
{
    return tern_hmap_get(&m->h, tern_hmap_hash(key, len), key, len, m->eq);
}

int fsm_map_put(struct fsm_map *m, const char *key, size_t len, void *val)
{
    uint64_t h = tern_hmap_hash(key, len);
    tern_hmap_del(&m->h, h, key, len, m->eq); /* a value replaces its key's */
    return tern_hmap_put(&m->h, h, val);
}

void fsm_map_del(struct fsm_map *m, const char *key, size_t len)
{
    tern_hmap_del(&m->h, tern_hmap_hash(key, len), key, len, m->eq);
}

int fsm_map_walk(const struct fsm_map *m, int (*fn)(void *ctx, void *val), void *ctx)
{
    return tern_hmap_walk(&m->h, fn, ctx);
}

/* --- sessions table --- */

static bool session_eq(const void *item, const void *key, size_t len)
{
    const struct tern_fsm_session *s = item;
    return s->client_id_len == len && memcmp(s->client_id, key, len) == 0;
}

static uint64_t session_hash(const struct tern_fsm_session *s)
{
    return tern_hmap_hash(s->client_id, s->client_id_len);
}

struct tern_fsm_session *fsm_stab_get(const struct fsm_stab *t, const char *key,
                                      size_t len)
{
    return tern_hmap_get(&t->h, tern_hmap_hash(key, len), key, len, session_eq);
}

int fsm_stab_put(struct fsm_stab *t, struct tern_fsm_session *s)
{
    return tern_hmap_put(&t->h, session_hash(s), s);
}

void fsm_stab_del(struct fsm_stab *t, struct tern_fsm_session *s)
{
    tern_hmap_del_item(&t->h, session_hash(s), s);
}

struct stab_walk {
    int (*fn)(void *ctx, struct tern_fsm_session *s);
    void *ctx;
};

static int stab_visit(void *ctx, void *item)
{
    struct stab_walk *w = ctx;
    return w->fn(w->ctx, item);
}

int fsm_stab_walk(const struct fsm_stab *t,
                  int (*fn)(void *ctx, struct tern_fsm_session *s), void *ctx)
{
    struct stab_walk w = {fn, ctx};
    return tern_hmap_walk(&t->h, stab_visit, &w);
}

int fsm_stab_walk_del(struct fsm_stab *t,
                      int (*fn)(void *ctx, struct tern_fsm_session *s), void *ctx)
{
    struct stab_walk w = {fn, ctx};
    return tern_hmap_walk_del(&t->h, stab_visit, &w);
}
