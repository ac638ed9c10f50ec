/* tern topic tree: a level trie.
 *
 * Why this shape: a broker's subscription table is dominated by two patterns,
 * wide nodes (100k device ids under "devices/") and popular filters with many
 * subscribers ("broadcast/#"). So each node keeps its plain children in a
 * tern_hmap (seeded: clients choose the levels; O(1) lookup at any width), '+' and '#'
 * children as dedicated pointers (matching never searches for them), and its values in a
 * dense array with a pointer index once it grows (O(1) add/remove, set
 * semantics, and an iteration order that depends only on the history of adds
 * and removes, never on addresses).
 *
 * No recursion: matching uses a fixed stack bounded by the tree depth, which
 * add() caps at TERN_TOPIC_LEVELS_MAX; whole-subtree walks use parent pointers
 * and need no stack at all.
 *
 * About 800 lines on purpose: the value sets, the node, add/remove and the two
 * matchers share the node's layout, which no other file needs to see.
 */
#include "tern/topic.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "tern/error.h"
#include "tern/hmap.h"
#include "tern/slab.h"

/* Value sets up to this size are scanned linearly; bigger ones get an index. */
#define VSET_LINEAR_MAX 16u
#define SHARE_PREFIX "$share/"
#define SHARE_PREFIX_LEN 7u

/* --- validation and plain matching ------------------------------------------ */

/* Deeper keys cannot be stored in a tree (tern_topic_tree_add), so they are not
 * valid: a broker refuses them instead of accepting what it will not keep. */
static bool levels_within_max(const char *key, size_t len)
{
    size_t levels = 1;
    for (const char *p = key, *end = key + len;
         (p = memchr(p, '/', (size_t)(end - p))) != NULL; p++) {
        if (++levels > TERN_TOPIC_LEVELS_MAX)
            return false;
    }
    return true;
}

bool tern_topic_name_valid(const char *name, size_t len)
{
    if (name == NULL || len == 0 || len > TERN_TOPIC_KEY_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        if (name[i] == '+' || name[i] == '#' || name[i] == '\0')
            return false;
    }
    return levels_within_max(name, len);
}

/* Plain filter (no $share handling). */
static bool filter_plain_valid(const char *f, size_t len)
{
    if (f == NULL || len == 0 || len > TERN_TOPIC_KEY_MAX)
        return false;
    size_t level_start = 0;
    for (size_t i = 0; i < len; i++) {
        char c = f[i];
        if (c == '\0')
            return false;
        if (c == '/') {
            level_start = i + 1;
            continue;
        }
        bool alone = i == level_start && (i + 1 == len || f[i + 1] == '/');
        if (c == '+' && !alone)
            return false;
        if (c == '#' && !(alone && i + 1 == len))
            return false;
    }
    return true;
}

bool tern_topic_shared_split(const char *filter, size_t len, const char **group,
                             size_t *group_len, const char **inner, size_t *inner_len)
{
    if (filter == NULL || len < SHARE_PREFIX_LEN ||
        memcmp(filter, SHARE_PREFIX, SHARE_PREFIX_LEN) != 0)
        return false;
    const char *g = filter + SHARE_PREFIX_LEN;
    size_t rest = len - SHARE_PREFIX_LEN;
    const char *slash = memchr(g, '/', rest);
    size_t glen = slash ? (size_t)(slash - g) : rest;
    if (group)
        *group = g;
    if (group_len)
        *group_len = glen;
    if (inner)
        *inner = slash ? slash + 1 : g + rest;
    if (inner_len)
        *inner_len = slash ? rest - glen - 1 : 0;
    return true;
}

bool tern_topic_filter_valid(const char *filter, size_t len)
{
    const char *g, *in;
    size_t glen, inlen;
    if (filter == NULL || !levels_within_max(filter, len))
        return false;
    if (!tern_topic_shared_split(filter, len, &g, &glen, &in, &inlen))
        return filter_plain_valid(filter, len);
    if (glen == 0 || memchr(g, '+', glen) || memchr(g, '#', glen) ||
        memchr(g, '\0', glen))
        return false;
    return filter_plain_valid(in, inlen);
}

/* End of the level starting at pos (index of the next '/' or len). */
static size_t level_end(const char *s, size_t len, size_t pos)
{
    const char *slash = pos < len ? memchr(s + pos, '/', len - pos) : NULL;
    return slash ? (size_t)(slash - s) : len;
}

bool tern_topic_matches(const char *filter, size_t filter_len, const char *name,
                        size_t name_len)
{
    if (name_len > 0 && name[0] == '$' && filter_len > 0 &&
        (filter[0] == '+' || filter[0] == '#'))
        return false;
    /* Positions past the end (len + 1) mean "all levels consumed". */
    size_t fp = 0, np = 0;
    while (fp <= filter_len) {
        size_t fe = level_end(filter, filter_len, fp);
        size_t flen = fe - fp;
        if (flen == 1 && filter[fp] == '#')
            return true; /* matches the parent level and everything below */
        if (np > name_len)
            return false;
        size_t ne = level_end(name, name_len, np);
        bool plus = flen == 1 && filter[fp] == '+';
        if (!plus && (flen != ne - np || memcmp(filter + fp, name + np, flen) != 0))
            return false;
        fp = fe + 1;
        np = ne + 1;
    }
    return np > name_len;
}

/* --- value sets -------------------------------------------------------------- */

/* Dense array (iteration order = history of adds/removes) plus, when large, an
 * open-addressing index of positions (idx[i] = position + 1, 0 = empty). Most
 * keys hold one value (a device's own filter, a retained message), so a single
 * value is kept in place of the array pointer (cap 1): no allocation. */
struct vidx {
    uint32_t cap; /* power of two */
    uint32_t slot[];
};

/* Two values or more: the array, with its index (rare: popular filters) in
 * front, so that the set in every node is 16 bytes. */
struct varr {
    struct vidx *idx; /* NULL when not indexed */
    void *v[];        /* cap values */
};

struct vset {
    union {
        struct varr *arr; /* cap > 1 */
        void *one;        /* cap == 1 */
    } u;
    uint32_t n, cap;
};

static struct vidx *vset_idx(const struct vset *s)
{
    return s->cap > 1 ? s->u.arr->idx : NULL;
}

static uint32_t idx_cap(const struct vset *s)
{
    const struct vidx *idx = vset_idx(s);
    return idx ? idx->cap : 0;
}

/* The i-th value (i < n). */
static void *vset_at(const struct vset *s, uint32_t i)
{
    return s->cap == 1 ? s->u.one : s->u.arr->v[i];
}

static uint32_t ptr_hash(const void *p)
{
    uint64_t x = (uint64_t)(uintptr_t)p;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return (uint32_t)x;
}

/* Slot in the index holding p, or the empty slot where it would go. */
static uint32_t vset_slot(const struct vset *s, const void *p)
{
    const struct varr *a = s->u.arr;
    uint32_t mask = a->idx->cap - 1;
    uint32_t i = ptr_hash(p) & mask;
    while (a->idx->slot[i] != 0 && a->v[a->idx->slot[i] - 1] != p)
        i = (i + 1) & mask;
    return i;
}

static uint32_t vset_find(const struct vset *s, const void *p)
{
    if (idx_cap(s)) {
        const struct vidx *idx = s->u.arr->idx;
        uint32_t slot = vset_slot(s, p);
        return idx->slot[slot] ? idx->slot[slot] - 1 : UINT32_MAX;
    }
    for (uint32_t i = 0; i < s->n; i++) {
        if (vset_at(s, i) == p)
            return i;
    }
    return UINT32_MAX;
}

/* (Re)builds the index with cap slots (load <= 1/2); only for an array. */
static int vset_reindex(struct vset *s, uint32_t cap)
{
    struct varr *a = s->u.arr;
    struct vidx *idx = calloc(1, sizeof(*idx) + (size_t)cap * sizeof(idx->slot[0]));
    if (idx == NULL)
        return TERN_ENOMEM;
    free(a->idx);
    a->idx = idx;
    idx->cap = cap;
    for (uint32_t i = 0; i < s->n; i++)
        idx->slot[vset_slot(s, a->v[i])] = i + 1;
    return 0;
}

static int vset_add(struct vset *s, void *p)
{
    if (s->cap == 0) {
        s->u.one = p;
        s->n = s->cap = 1;
        return 0;
    }
    if (s->n == s->cap) {
        if (s->cap >= UINT32_MAX / 4)
            return TERN_ENOMEM; /* over 1G values: treat as exhausted */
        uint32_t cap = s->cap * 2;
        size_t size = sizeof(struct varr) + cap * sizeof(void *);
        struct varr *a = s->cap == 1 ? malloc(size) : realloc(s->u.arr, size);
        if (a == NULL)
            return TERN_ENOMEM;
        if (s->cap == 1) {
            a->v[0] = s->u.one;
            a->idx = NULL;
        }
        s->u.arr = a;
        s->cap = cap;
    }
    if (idx_cap(s) == 0 && s->n + 1 > VSET_LINEAR_MAX) {
        if (vset_reindex(s, 4 * VSET_LINEAR_MAX) != 0)
            return TERN_ENOMEM;
    } else if (idx_cap(s) && (s->n + 1) * 2 > idx_cap(s)) {
        if (vset_reindex(s, idx_cap(s) * 2) != 0)
            return TERN_ENOMEM;
    }
    s->u.arr->v[s->n++] = p;
    if (idx_cap(s))
        s->u.arr->idx->slot[vset_slot(s, p)] = s->n;
    return 0;
}

/* Linear-probing delete by backward shift (keeps probe chains intact). */
static void vset_unindex(struct vset *s, uint32_t slot)
{
    struct varr *a = s->u.arr;
    uint32_t mask = a->idx->cap - 1;
    uint32_t i = slot, j = slot;
    for (;;) {
        j = (j + 1) & mask;
        if (a->idx->slot[j] == 0)
            break;
        uint32_t home = ptr_hash(a->v[a->idx->slot[j] - 1]) & mask;
        /* Move j back to i unless its home lies cyclically in (i, j]. */
        bool stays = (i <= j) ? (home > i && home <= j) : (home > i || home <= j);
        if (!stays) {
            a->idx->slot[i] = a->idx->slot[j];
            i = j;
        }
    }
    a->idx->slot[i] = 0;
}

static void vset_remove_at(struct vset *s, uint32_t pos)
{
    if (s->cap == 1) {
        s->u.one = NULL;
        s->n = s->cap = 0;
        return;
    }
    struct varr *a = s->u.arr;
    uint32_t last = s->n - 1;
    if (idx_cap(s)) {
        vset_unindex(s, vset_slot(s, a->v[pos]));
        if (pos != last)
            a->idx->slot[vset_slot(s, a->v[last])] = pos + 1;
    }
    a->v[pos] = a->v[last];
    s->n--;
    if (idx_cap(s) && s->n <= VSET_LINEAR_MAX / 2) {
        free(a->idx);
        a->idx = NULL;
    } else if (idx_cap(s) > 4 * VSET_LINEAR_MAX && s->n * 8 < idx_cap(s)) {
        (void)vset_reindex(s, idx_cap(s) / 2); /* best effort */
    }
    if (s->n <= 1 && !idx_cap(s)) {
        void *one = s->n ? a->v[0] : NULL; /* back in place (or empty) */
        free(a);
        s->u.one = one;
        s->cap = s->n;
    } else if (s->cap > 8 && s->n * 4 < s->cap) {
        struct varr *b = realloc(a, sizeof(struct varr) + (s->cap / 2) * sizeof(void *));
        if (b != NULL) { /* best effort */
            s->u.arr = b;
            s->cap /= 2;
        }
    }
}

static void vset_free(struct vset *s)
{
    if (s->cap > 1) {
        free(s->u.arr->idx);
        free(s->u.arr);
    }
    memset(s, 0, sizeof(*s));
}

/* --- nodes ------------------------------------------------------------------- */

/* A node's children, allocated with its first one: most nodes are leaves (a
 * device's own level), and a leaf then needs no room for them. */
struct kids {
    struct node *plus;    /* '+' child */
    struct node *hash;    /* '#' child */
    struct tern_hmap map; /* plain children by level */
};

struct node {
    struct node *parent;
    struct kids *kids; /* NULL when it has no children */
    struct vset vals;
    uint32_t level_hash; /* the low 32 bits of its tern_hmap_hash */
    uint32_t level_len;  /* <= TERN_TOPIC_KEY_MAX */
    /* The node's full key is not stored: it is its levels joined by '/', and
     * visits rebuild it (visit_node). That is a string allocation per key less. */
    char level[]; /* NUL-terminated */
};

#if UINTPTR_MAX == UINT64_MAX
static_assert(offsetof(struct node, level) == 40,
              "node: 40 bytes, so a 7-byte level takes 48 (tern/slab.h)");
#endif

struct tern_topic_tree {
    struct node *root; /* level "", never holds values, never pruned */
    size_t count;
    /* Keys longer than visit_node's stack buffer are rebuilt here; sized by add,
     * so a visit never allocates. */
    char *keybuf;
    size_t keybuf_cap;
    /* Nodes and children records: a tree of a million devices' filters is a
     * million nodes, so no malloc header and rounding for each. */
    struct tern_slab slab;
};

static size_t node_size(size_t level_len)
{
    return offsetof(struct node, level) + level_len + 1;
}

static struct node *node_alloc(struct tern_topic_tree *t, const char *s, size_t len)
{
    struct node *n = tern_slab_alloc(&t->slab, node_size(len));
    if (n == NULL)
        return NULL;
    memset(n, 0, offsetof(struct node, level));
    memcpy(n->level, s, len);
    n->level[len] = '\0';
    n->level_len = (uint32_t)len;
    return n;
}

static void node_free(struct tern_topic_tree *t, struct node *n)
{
    tern_slab_free(&t->slab, n, node_size(n->level_len));
}

static uint64_t level_hash(const char *s, size_t len)
{
    return tern_hmap_hash(s, len);
}

static bool level_eq(const void *item, const void *key, size_t len)
{
    const struct node *c = item;
    return c->level_len == len && memcmp(c->level, key, len) == 0;
}

static bool is_plus(const char *s, size_t len)
{
    return len == 1 && s[0] == '+';
}

static bool is_hash(const char *s, size_t len)
{
    return len == 1 && s[0] == '#';
}

/* Nodes with up to this many plain children (most: a device's own levels)
 * compare their few slots instead of hashing the level. */
#define KIDS_SCAN_MAX 4u

static struct node *kid_plus(const struct node *n)
{
    return n->kids ? n->kids->plus : NULL;
}

static struct node *kid_hash(const struct node *n)
{
    return n->kids ? n->kids->hash : NULL;
}

static struct node *kid_find(const struct node *n, const char *s, size_t len)
{
    if (n->kids == NULL)
        return NULL;
    const struct tern_hmap *m = &n->kids->map;
    if (tern_hmap_count(m) > KIDS_SCAN_MAX)
        return tern_hmap_get(m, level_hash(s, len), s, len, level_eq);
    uint32_t pos = 0;
    for (struct node *c; (c = tern_hmap_at(m, &pos)) != NULL; pos++)
        if (level_eq(c, s, len))
            return c;
    return NULL;
}

/* Exact child for one level, wildcards included. */
static struct node *child_get(const struct node *n, const char *s, size_t len)
{
    if (is_plus(s, len))
        return kid_plus(n);
    if (is_hash(s, len))
        return kid_hash(n);
    return kid_find(n, s, len);
}

static bool kids_empty(const struct kids *k)
{
    return k->plus == NULL && k->hash == NULL && tern_hmap_count(&k->map) == 0;
}

/* Frees n's children record once it holds none. */
static void kids_free(struct tern_topic_tree *t, struct node *n)
{
    tern_hmap_free(&n->kids->map);
    tern_slab_free(&t->slab, n->kids, sizeof(*n->kids));
    n->kids = NULL;
}

static void kids_trim(struct tern_topic_tree *t, struct node *n)
{
    if (n->kids && kids_empty(n->kids))
        kids_free(t, n);
}

static struct node *child_create(struct tern_topic_tree *t, struct node *n, const char *s,
                                 size_t len)
{
    if (n->kids == NULL) {
        n->kids = tern_slab_alloc(&t->slab, sizeof(*n->kids));
        if (n->kids == NULL)
            return NULL;
        memset(n->kids, 0, sizeof(*n->kids));
    }
    struct node *c = node_alloc(t, s, len);
    if (c == NULL) {
        kids_trim(t, n);
        return NULL;
    }
    c->parent = n;
    if (is_plus(s, len)) {
        n->kids->plus = c;
    } else if (is_hash(s, len)) {
        n->kids->hash = c;
    } else {
        uint64_t h = level_hash(s, len);
        c->level_hash = (uint32_t)h;
        if (tern_hmap_put(&n->kids->map, h, c) != TERN_OK) {
            node_free(t, c);
            kids_trim(t, n);
            return NULL;
        }
    }
    return c;
}

static void child_unlink(struct tern_topic_tree *t, struct node *n, struct node *c)
{
    struct kids *k = n->kids;
    if (k->plus == c)
        k->plus = NULL;
    else if (k->hash == c)
        k->hash = NULL;
    else
        tern_hmap_del_item(&k->map, c->level_hash, c); /* shrinks, frees when empty */
    kids_trim(t, n);
}

static bool node_empty(const struct node *n)
{
    return n->vals.n == 0 && n->kids == NULL;
}

/* Frees empty nodes from n upwards (never the root). */
static void prune(struct tern_topic_tree *t, struct node *n)
{
    while (n->parent != NULL && node_empty(n)) {
        struct node *p = n->parent;
        child_unlink(t, p, n);
        node_free(t, n);
        n = p;
    }
}

/* Child iteration: plain children (slot order, so it depends on the hash
 * seed), then '+', then '#'. */
static struct node *plain_from(const struct node *n, uint32_t pos)
{
    if (n->kids == NULL)
        return NULL;
    struct node *c = tern_hmap_at(&n->kids->map, &pos);
    if (c)
        return c;
    return n->kids->plus ? n->kids->plus : n->kids->hash;
}

static struct node *child_first(const struct node *n)
{
    return plain_from(n, 0);
}

static struct node *child_next(const struct node *n, const struct node *c)
{
    if (c == n->kids->hash)
        return NULL;
    if (c == n->kids->plus)
        return n->kids->hash;
    uint32_t pos = 0;
    bool found = tern_hmap_pos(&n->kids->map, c->level_hash, c, &pos);
    assert(found);
    (void)found;
    return plain_from(n, pos + 1);
}

/* --- tree -------------------------------------------------------------------- */

struct tern_topic_tree *tern_topic_tree_new(void)
{
    struct tern_topic_tree *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return NULL;
    t->root = node_alloc(t, "", 0);
    if (t->root == NULL) {
        free(t);
        return NULL;
    }
    return t;
}

static void node_release(struct tern_topic_tree *t, struct node *n)
{
    vset_free(&n->vals);
    if (n->kids)
        kids_free(t, n);
    node_free(t, n);
}

void tern_topic_tree_free(struct tern_topic_tree *t)
{
    if (t == NULL)
        return;
    /* Post-order by parent pointers instead of recursion. A freed node stays
     * in its parent's map until the parent goes: child_next() only compares
     * the pointer, never follows it. */
    struct node *n = t->root, *c;
    while ((c = child_first(n)) != NULL)
        n = c;
    while (n != t->root) {
        struct node *p = n->parent, *next = child_next(p, n);
        node_release(t, n);
        n = next ? next : p;
        while (next && (c = child_first(n)) != NULL)
            n = c;
    }
    node_release(t, t->root);
    tern_slab_destroy(&t->slab);
    free(t->keybuf);
    free(t);
}

/* Counts levels; false when over the cap. */
static bool levels_ok(const char *key, size_t len)
{
    if (len > TERN_TOPIC_KEY_MAX)
        return false;
    size_t levels = 1;
    for (size_t i = 0; i < len; i++) {
        if (key[i] == '/' && ++levels > TERN_TOPIC_LEVELS_MAX)
            return false;
    }
    return true;
}

/* The node for an exact key, or NULL. */
static struct node *node_find(const struct tern_topic_tree *t, const char *key,
                              size_t len)
{
    const struct node *n = t->root;
    size_t pos = 0;
    while (n && pos <= len) {
        size_t e = level_end(key, len, pos);
        n = child_get(n, key + pos, e - pos);
        pos = e + 1;
    }
    return (struct node *)n;
}

#define KEY_STACK_BYTES 256 /* keys shorter than this are rebuilt on the stack */

/* Room in t->keybuf for a key of len bytes, if the stack buffer is too small. */
static int keybuf_reserve(struct tern_topic_tree *t, size_t len)
{
    if (len < KEY_STACK_BYTES || len < t->keybuf_cap)
        return 0;
    char *b = realloc(t->keybuf, len + 1);
    if (b == NULL)
        return TERN_ENOMEM;
    t->keybuf = b;
    t->keybuf_cap = len + 1;
    return 0;
}

int tern_topic_tree_add(struct tern_topic_tree *t, const char *key, size_t len,
                        void *value)
{
    if (t == NULL || (key == NULL && len > 0) || value == NULL || !levels_ok(key, len))
        return TERN_EINVAL;
    struct node *n = t->root;
    size_t pos = 0;
    while (pos <= len) {
        size_t e = level_end(key, len, pos);
        struct node *c = child_get(n, key + pos, e - pos);
        if (c == NULL)
            c = child_create(t, n, key + pos, e - pos);
        if (c == NULL) {
            prune(t, n);
            return TERN_ENOMEM;
        }
        n = c;
        pos = e + 1;
    }
    if (vset_find(&n->vals, value) != UINT32_MAX)
        return 0;
    int rc = keybuf_reserve(t, len);
    if (rc == 0)
        rc = vset_add(&n->vals, value);
    if (rc != 0) {
        prune(t, n);
        return rc;
    }
    t->count++;
    return 0;
}

int tern_topic_tree_remove(struct tern_topic_tree *t, const char *key, size_t len,
                           void *value)
{
    if (t == NULL || (key == NULL && len > 0))
        return TERN_ENOTFOUND;
    struct node *n = node_find(t, key, len);
    if (n == NULL)
        return TERN_ENOTFOUND;
    uint32_t pos = vset_find(&n->vals, value);
    if (pos == UINT32_MAX)
        return TERN_ENOTFOUND;
    vset_remove_at(&n->vals, pos);
    t->count--;
    if (n->vals.n == 0)
        prune(t, n);
    return 0;
}

void *tern_topic_tree_get(const struct tern_topic_tree *t, const char *key, size_t len)
{
    if (t == NULL || (key == NULL && len > 0))
        return NULL;
    const struct node *n = node_find(t, key, len);
    return (n && n->vals.n) ? vset_at(&n->vals, 0) : NULL;
}

size_t tern_topic_tree_count(const struct tern_topic_tree *t)
{
    return t ? t->count : 0;
}

/* n's key (its levels below the root joined by '/') into buf, which has room. */
static size_t key_build(const struct node *n, char *buf, size_t len)
{
    buf[len] = '\0';
    size_t end = len;
    for (const struct node *p = n; p->parent; p = p->parent) {
        end -= p->level_len;
        memcpy(buf + end, p->level, p->level_len);
        if (end)
            buf[--end] = '/';
    }
    return len;
}

static int visit_node(const struct tern_topic_tree *t, const struct node *n,
                      tern_topic_visit_fn fn, void *ctx)
{
    if (n->vals.n == 0)
        return 0;
    size_t len = 0;
    for (const struct node *p = n; p->parent; p = p->parent)
        len += p->level_len + 1;
    len--; /* n is not the root: one level at least */
    char small[KEY_STACK_BYTES];
    char *key = len < sizeof(small) ? small : t->keybuf;
    /* Values may not change during the callback, so index the live array; the
     * key is rebuilt for each, in case a callback visited this tree itself. */
    for (uint32_t i = 0; i < n->vals.n; i++) {
        key_build(n, key, len);
        int rc = fn(ctx, key, len, vset_at(&n->vals, i));
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* Visits top and everything below it, pre-order, using parent pointers. */
static int walk_subtree(const struct tern_topic_tree *t, const struct node *top,
                        tern_topic_visit_fn fn, void *ctx)
{
    const struct node *n = top;
    while (n) {
        int rc = visit_node(t, n, fn, ctx);
        if (rc != 0)
            return rc;
        const struct node *c = child_first(n);
        if (c) {
            n = c;
            continue;
        }
        for (;;) {
            if (n == top)
                return 0;
            const struct node *s = child_next(n->parent, n);
            if (s) {
                n = s;
                break;
            }
            n = n->parent;
        }
    }
    return 0;
}

int tern_topic_tree_walk(const struct tern_topic_tree *t, tern_topic_visit_fn fn,
                         void *ctx)
{
    if (t == NULL || fn == NULL)
        return 0;
    return walk_subtree(t, t->root, fn, ctx);
}

/* A pending match step: node reached, position of the next level in the input
 * (input length + 1 once all levels are consumed), and for '+' steps of
 * match_filter the last child handed out. Depth bounds the stack: at most one
 * pending entry per tree level plus the top (see the pushes below). */
struct frame {
    const struct node *n;
    size_t pos;
    const struct node *iter;
    bool plus;
};

#define STACK_MAX (TERN_TOPIC_LEVELS_MAX + 2)

int tern_topic_tree_match(const struct tern_topic_tree *t, const char *name, size_t len,
                          tern_topic_visit_fn fn, void *ctx)
{
    if (t == NULL || fn == NULL || (name == NULL && len > 0))
        return 0;
    bool dollar = len > 0 && name[0] == '$';
    struct frame st[STACK_MAX];
    size_t top = 0;
    st[top++] = (struct frame){.n = t->root, .pos = 0};
    while (top > 0) {
        struct frame f = st[--top];
        bool root = f.n->parent == NULL;
        int rc;
        /* "x/#" matches "x" and everything below, so check it before the end. */
        const struct node *hash = kid_hash(f.n), *plus = kid_plus(f.n);
        if (hash && !(root && dollar) && (rc = visit_node(t, hash, fn, ctx)))
            return rc;
        if (f.pos > len) {
            if ((rc = visit_node(t, f.n, fn, ctx)) != 0)
                return rc;
            continue;
        }
        size_t e = level_end(name, len, f.pos);
        /* Pushes go one level deeper than the popped entry, so the stack holds at
         * most one pending entry per depth plus two at the deepest: <= depth + 1. */
        assert(top + 2 <= STACK_MAX);
        if (plus && !(root && dollar))
            st[top++] = (struct frame){.n = plus, .pos = e + 1};
        const struct node *c = kid_find(f.n, name + f.pos, e - f.pos);
        if (c)
            st[top++] = (struct frame){.n = c, .pos = e + 1};
    }
    return 0;
}

/* '#' in a filter at node n: n itself ("a/#" matches "a") and all below; at the
 * root, names starting with '$' are skipped. */
static int match_rest(const struct tern_topic_tree *t, const struct node *n,
                      tern_topic_visit_fn fn, void *ctx)
{
    if (n->parent != NULL)
        return walk_subtree(t, n, fn, ctx);
    for (const struct node *c = child_first(n); c; c = child_next(n, c)) {
        if (c->level[0] == '$')
            continue;
        int rc = walk_subtree(t, c, fn, ctx);
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* Next child for a '+' step, skipping '$' levels at the root. */
static const struct node *plus_next(const struct node *n, const struct node *prev)
{
    const struct node *c = prev ? child_next(n, prev) : child_first(n);
    while (c && n->parent == NULL && c->level[0] == '$')
        c = child_next(n, c);
    return c;
}

int tern_topic_tree_match_filter(const struct tern_topic_tree *t, const char *filter,
                                 size_t len, tern_topic_visit_fn fn, void *ctx)
{
    if (t == NULL || fn == NULL || (filter == NULL && len > 0))
        return 0;
    struct frame st[STACK_MAX];
    size_t top = 0;
    st[top++] = (struct frame){.n = t->root, .pos = 0};
    while (top > 0) {
        struct frame *f = &st[top - 1];
        if (f->pos > len) {
            top--;
            int rc = visit_node(t, f->n, fn, ctx);
            if (rc != 0)
                return rc;
            continue;
        }
        size_t e = level_end(filter, len, f->pos);
        const char *lv = filter + f->pos;
        if (is_hash(lv, e - f->pos)) {
            top--;
            int rc = match_rest(t, f->n, fn, ctx);
            if (rc != 0)
                return rc;
            continue;
        }
        if (is_plus(lv, e - f->pos)) {
            /* Stays on the stack, handing out one child per pass. */
            f->iter = plus_next(f->n, f->iter);
            if (f->iter == NULL) {
                top--;
                continue;
            }
            assert(top < STACK_MAX);
            st[top++] = (struct frame){.n = f->iter, .pos = e + 1};
            continue;
        }
        const struct node *c = kid_find(f->n, lv, e - f->pos);
        if (c == NULL)
            top--;
        else
            *f = (struct frame){.n = c, .pos = e + 1};
    }
    return 0;
}
