/* Routes: which nodes have clean-session subscribers for which filter.
 *
 * Clean sessions live in each node's local FSM, outside the log; for a publish
 * to reach them, every node must know which other nodes to forward it to. The
 * replicated FSM keeps one presence per (full filter, node): a node proposes
 * ROUTE_ADD when its local count for a filter goes 0 -> 1 and ROUTE_DEL on
 * 1 -> 0, so add and del here are idempotent presences, not counts.
 *
 * Two indexes: a map keyed by (filter, node) for add / del, and a topic tree
 * keyed by the inner filter (no $share prefix) for matching a topic name. A
 * query sorts the matching node ids, so the answer never depends on the tree's
 * visit order. */
#include <stdlib.h>
#include <string.h>

#include "fsm_internal.h"

#define ROUTE_NODES_INLINE 16

/* key = filter bytes + node as 4 bytes LE: unique per (filter, node). */
static size_t route_key(char *out, const char *filter, size_t len, uint32_t node)
{
    memcpy(out, filter, len);
    for (int i = 0; i < 4; i++)
        out[len + (size_t)i] = (char)(uint8_t)(node >> (8 * i));
    return len + 4;
}

static void route_free(struct fsm_route *rt)
{
    if (rt)
        free(rt->key);
    free(rt);
}

static struct fsm_route *route_new(struct tern_fsm *f, const char *filter, size_t len,
                                   uint32_t node)
{
    struct fsm_route *rt = fsm_calloc(f, sizeof(*rt));
    char *key = fsm_malloc(f, len + 4);
    if (!rt || !key) {
        free(key);
        free(rt);
        return NULL;
    }
    rt->key = key;
    rt->key_len = route_key(key, filter, len, node);
    rt->filter_len = len;
    rt->node = node;
    const char *g;
    size_t glen;
    rt->inner = key;
    rt->inner_len = len;
    tern_topic_shared_split(key, len, &g, &glen, &rt->inner, &rt->inner_len);
    return rt;
}

int fsm_route_add(struct tern_fsm *f, const char *filter, size_t len, uint32_t node)
{
    if (!filter || !tern_topic_filter_valid(filter, len))
        return TERN_EINVAL;
    struct fsm_route *rt = route_new(f, filter, len, node);
    if (!rt)
        return TERN_ENOMEM;
    if (fsm_map_get(&f->routes, rt->key, rt->key_len)) {
        route_free(rt); /* already present: idempotent */
        return TERN_OK;
    }
    if (fsm_map_count(&f->routes) >= FSM_ROUTES_MAX) {
        route_free(rt);
        return TERN_ELIMIT;
    }
    int rc = tern_topic_tree_add(f->route_tree, rt->inner, rt->inner_len, rt);
    if (rc == TERN_OK) {
        rc = fsm_map_put(&f->routes, rt->key, rt->key_len, rt);
        if (rc != TERN_OK)
            tern_topic_tree_remove(f->route_tree, rt->inner, rt->inner_len, rt);
    }
    if (rc != TERN_OK) {
        fsm_nomem(f); /* the filter is valid: only memory can fail */
        route_free(rt);
    }
    return rc;
}

static void route_remove(struct tern_fsm *f, struct fsm_route *rt)
{
    tern_topic_tree_remove(f->route_tree, rt->inner, rt->inner_len, rt);
    fsm_map_del(&f->routes, rt->key, rt->key_len);
    route_free(rt);
}

void fsm_route_add_cmd(struct tern_fsm *f, const struct tern_cmd *c,
                       struct tern_fsm_result *r)
{
    struct tern_bytes b = c->u.route.filter;
    r->status = fsm_route_add(f, (const char *)b.ptr, b.len, c->u.route.node);
}

/* Deleting an absent route is a no-op: a retry, or NODE_DOWN came first. */
void fsm_route_del_cmd(struct tern_fsm *f, const struct tern_cmd *c,
                       struct tern_fsm_result *r)
{
    struct tern_bytes b = c->u.route.filter;
    if (!b.ptr || b.len == 0 || b.len > TERN_TOPIC_KEY_MAX) {
        r->status = TERN_EINVAL;
        return;
    }
    char *key = fsm_malloc(f, (size_t)b.len + 4);
    if (!key) {
        r->status = TERN_ENOMEM;
        return;
    }
    size_t klen = route_key(key, (const char *)b.ptr, b.len, c->u.route.node);
    struct fsm_route *rt = fsm_map_get(&f->routes, key, klen);
    free(key);
    if (rt)
        route_remove(f, rt);
}

struct route_vec {
    struct fsm_route **v;
    size_t n, cap;
    uint32_t node; /* drop_node: which node */
    bool all;      /* collect every route */
};

static int route_collect(void *ctx, void *val)
{
    struct route_vec *x = ctx;
    struct fsm_route *rt = val;
    if (!x->all && rt->node != x->node)
        return 0;
    if (fsm_grow((void **)&x->v, &x->cap, x->n + 1, sizeof(*x->v)) != TERN_OK)
        return TERN_ENOMEM;
    x->v[x->n++] = rt;
    return 0;
}

/* Collect, then remove: the map must not change under its walk. Removal is
 * a set operation, so the walk order does not matter. On allocation failure
 * it removes in passes until none is left. */
void fsm_routes_drop_node(struct tern_fsm *f, uint32_t node)
{
    int rc;
    do {
        struct route_vec x = {.node = node};
        rc = fsm_map_walk(&f->routes, route_collect, &x);
        for (size_t i = 0; i < x.n; i++)
            route_remove(f, x.v[i]);
        free(x.v);
        if (rc && x.n == 0)
            break; /* no progress possible */
    } while (rc);
}

static int route_free_visit(void *ctx, void *val)
{
    (void)ctx;
    route_free(val);
    return 0;
}

void fsm_routes_free_all(struct tern_fsm *f)
{
    fsm_map_walk(&f->routes, route_free_visit, NULL);
    fsm_map_free(&f->routes);
    if (f->route_tree)
        tern_topic_tree_free(f->route_tree);
    f->route_tree = NULL;
}

int fsm_route_cmp(const void *a, const void *b)
{
    const struct fsm_route *x = *(const struct fsm_route *const *)a;
    const struct fsm_route *y = *(const struct fsm_route *const *)b;
    size_t n = x->filter_len < y->filter_len ? x->filter_len : y->filter_len;
    int c = memcmp(x->key, y->key, n);
    if (c)
        return c;
    if (x->filter_len != y->filter_len)
        return (x->filter_len > y->filter_len) - (x->filter_len < y->filter_len);
    return (x->node > y->node) - (x->node < y->node);
}

int fsm_routes_sorted(const struct tern_fsm *f, struct fsm_route ***out, size_t *n)
{
    struct route_vec x = {.all = true};
    if (fsm_map_walk(&f->routes, route_collect, &x) != 0) {
        free(x.v);
        return TERN_ENOMEM;
    }
    if (x.n > 1)
        qsort(x.v, x.n, sizeof(*x.v), fsm_route_cmp);
    *out = x.v;
    *n = x.n;
    return TERN_OK;
}

/* --- query --- */

struct node_set {
    uint32_t inline_v[ROUTE_NODES_INLINE];
    uint32_t *v;
    size_t n, cap;
    bool oom;
};

static int node_collect(void *ctx, const char *key, size_t len, void *value)
{
    struct node_set *x = ctx;
    (void)key;
    (void)len;
    if (x->n == x->cap) {
        size_t cap = x->cap * 2;
        uint32_t *v = x->v == x->inline_v ? malloc(cap * sizeof(*v))
                                          : realloc(x->v, cap * sizeof(*v));
        if (!v) {
            x->oom = true;
            return 1;
        }
        if (x->v == x->inline_v)
            memcpy(v, x->inline_v, sizeof(x->inline_v));
        x->v = v;
        x->cap = cap;
    }
    x->v[x->n++] = ((const struct fsm_route *)value)->node;
    return 0;
}

static int u32_cmp(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

static int node_visit_sorted(struct node_set *x, int (*fn)(void *ctx, uint32_t node),
                             void *ctx)
{
    if (x->n > 1)
        qsort(x->v, x->n, sizeof(*x->v), u32_cmp);
    for (size_t i = 0; i < x->n; i++) {
        if (i > 0 && x->v[i] == x->v[i - 1])
            continue;
        int rc = fn(ctx, x->v[i]);
        if (rc)
            return rc;
    }
    return 0;
}

int tern_fsm_route_match(const struct tern_fsm *f, const char *topic, size_t len,
                         int (*fn)(void *ctx, uint32_t node), void *ctx)
{
    struct node_set x = {.cap = ROUTE_NODES_INLINE};
    x.v = x.inline_v;
    tern_topic_tree_match(f->route_tree, topic, len, node_collect, &x);
    int rc = x.oom ? TERN_ENOMEM : node_visit_sorted(&x, fn, ctx);
    if (x.v != x.inline_v)
        free(x.v);
    return rc;
}

uint32_t tern_fsm_route_count(const struct tern_fsm *f)
{
    return (uint32_t)fsm_map_count(&f->routes);
}

struct route_set {
    struct fsm_route *inline_v[ROUTE_NODES_INLINE];
    struct fsm_route **v;
    size_t n, cap;
    bool oom;
};

static int route_set_add(void *ctx, const char *key, size_t len, void *value)
{
    struct route_set *x = ctx;
    (void)key;
    (void)len;
    if (x->n == x->cap) {
        size_t cap = x->cap * 2;
        struct fsm_route **v = x->v == x->inline_v ? malloc(cap * sizeof(*v))
                                                   : realloc(x->v, cap * sizeof(*v));
        if (!v) {
            x->oom = true;
            return 1;
        }
        if (x->v == x->inline_v)
            memcpy(v, x->inline_v, sizeof(x->inline_v));
        x->v = v;
        x->cap = cap;
    }
    x->v[x->n++] = value;
    return 0;
}

int tern_fsm_route_visit(const struct tern_fsm *f, const char *topic, size_t len,
                         int (*fn)(void *ctx, struct tern_bytes filter, bool shared,
                                   uint32_t node),
                         void *ctx)
{
    struct route_set x = {.cap = ROUTE_NODES_INLINE};
    x.v = x.inline_v;
    tern_topic_tree_match(f->route_tree, topic, len, route_set_add, &x);
    int rc = x.oom ? TERN_ENOMEM : 0;
    if (!rc && x.n > 1)
        qsort(x.v, x.n, sizeof(*x.v), fsm_route_cmp);
    for (size_t i = 0; !rc && i < x.n; i++) {
        const struct fsm_route *rt = x.v[i];
        struct tern_bytes b = {(const uint8_t *)rt->key, (uint32_t)rt->filter_len};
        rc = fn(ctx, b, fsm_route_shared(rt), rt->node);
    }
    if (x.v != x.inline_v)
        free(x.v);
    return rc;
}
