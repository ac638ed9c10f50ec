/* tern_hmap: one seeded hash table for every table keyed by bytes (client ids,
 * filters, topic levels, shared groups, routes).
 *
 * Why this shape:
 *  - Keys are chosen by clients, so the hash is keyed: SipHash-2-4 under a
 *    per-process random seed. Without the seed nobody can pick keys that share
 *    a slot run, which is what bounds the probe cost; an unkeyed hash (FNV)
 *    let 100k chosen ids fall in one chain.
 *  - A table of item pointers, not of links inside the items: the items
 *    already hold their keys (a session's inline client id, a topic node's
 *    level), so they need nothing else, one item can sit in several tables,
 *    and a missing key is usually settled without touching any item (the
 *    stored 32-bit hash differs). Each slot is 12 bytes (pointer + hash, in
 *    two arrays of one allocation).
 *  - Robin Hood linear probing, deletion by backward shift (no tombstones):
 *    probe runs stay short and even at 3/4 load, a lookup stops as soon as it
 *    meets an entry closer to its home than the probe is, and growth re-places
 *    entries from their stored hashes without hashing any key again.
 *  - Grows at 3/4 load, shrinks below 1/8, and holds no memory when empty: a
 *    topic node without children pays 16 bytes for its table.
 *  - A safety valve: an insert that has to probe more than HMAP_PROBE_MAX slots
 *    doubles the table early (while it is at least 1/4 full, so memory stays
 *    within 8x of need). With a secret seed that does not happen; it bounds the
 *    damage if the seed were known.
 *
 * Walks go down the slots from an empty slot: removing the current entry
 * shifts only entries already visited (the run above it ends at an empty slot
 * at or before the start), so tern_hmap_walk_del() can let its callback remove
 * what it is given. The slot order depends on the seed (tern/hmap.h).
 */
#include "tern/hmap.h"

#include <assert.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "tern/error.h"
#include "tern/siphash.h"

#define HMAP_LOG2CAP_MIN 1u  /* first allocation: 2 slots, one entry */
#define HMAP_LOG2CAP_MAX 31u /* count is a uint32_t */
#define HMAP_PROBE_MAX 32u

static uint64_t hmap_seed[2];
static pthread_once_t hmap_seed_once = PTHREAD_ONCE_INIT;

static void hmap_seed_init(void)
{
    tern_siphash_seed(hmap_seed);
}

uint64_t tern_hmap_hash(const void *key, size_t len)
{
    pthread_once(&hmap_seed_once, hmap_seed_init);
    return tern_siphash(hmap_seed, key, len);
}

void tern_hmap_seed_set(const uint64_t seed[2])
{
    pthread_once(&hmap_seed_once, hmap_seed_init);
    hmap_seed[0] = seed[0];
    hmap_seed[1] = seed[1];
}

void tern_hmap_init(struct tern_hmap *m)
{
    *m = (struct tern_hmap){0};
}

void tern_hmap_free(struct tern_hmap *m)
{
    free(m->items);
    tern_hmap_init(m);
}

size_t tern_hmap_bytes(const struct tern_hmap *m)
{
    return m->items ? ((size_t)1 << m->log2cap) * (sizeof(void *) + sizeof(uint32_t)) : 0;
}

/* 0 marks an empty slot, so a hash of 0 is stored as 1. */
static uint32_t stored_hash(uint64_t h)
{
    uint32_t s = (uint32_t)h;
    return s ? s : 1;
}

static uint32_t *hashes_of(void **items, uint32_t cap)
{
    return (uint32_t *)(void *)(items + cap);
}

struct slots {
    void **items;
    uint32_t *hashes;
    uint32_t mask;
};

static struct slots slots_of(const struct tern_hmap *m)
{
    uint32_t cap = (uint32_t)1 << m->log2cap;
    return (struct slots){m->items, hashes_of(m->items, cap), cap - 1};
}

static uint32_t dist_of(const struct slots *s, uint32_t i)
{
    return (i - (s->hashes[i] & s->mask)) & s->mask;
}

/* Robin Hood placement of (sh, item) into slots with room; returns the longest
 * probe the carried entry made. */
static uint32_t place(struct slots *s, uint32_t sh, void *item)
{
    uint32_t i = sh & s->mask, d = 0, longest = 0;
    for (;;) {
        if (s->hashes[i] == 0) {
            s->hashes[i] = sh;
            s->items[i] = item;
            return d > longest ? d : longest;
        }
        uint32_t di = dist_of(s, i);
        if (di < d) {
            /* The resident is closer to home than we are: it moves on. */
            uint32_t th = s->hashes[i];
            void *ti = s->items[i];
            s->hashes[i] = sh;
            s->items[i] = item;
            sh = th;
            item = ti;
            longest = d > longest ? d : longest;
            d = di;
        }
        i = (i + 1) & s->mask;
        d++;
    }
}

static int resize(struct tern_hmap *m, uint32_t log2cap)
{
    uint32_t cap = (uint32_t)1 << log2cap;
    void **items = calloc(cap, sizeof(void *) + sizeof(uint32_t));
    if (!items)
        return TERN_ENOMEM;
    struct slots to = {items, hashes_of(items, cap), cap - 1};
    if (m->items) {
        struct slots from = slots_of(m);
        for (uint32_t i = 0; i <= from.mask; i++)
            if (from.hashes[i])
                place(&to, from.hashes[i], from.items[i]);
        free(m->items);
    }
    m->items = items;
    m->log2cap = (uint8_t)log2cap;
    return TERN_OK;
}

uint32_t tern_hmap_probe_longest(const struct tern_hmap *m)
{
    if (!m->items)
        return 0;
    struct slots s = slots_of(m);
    uint32_t longest = 0;
    for (uint32_t i = 0; i <= s.mask; i++)
        if (s.hashes[i] && dist_of(&s, i) > longest)
            longest = dist_of(&s, i);
    return longest;
}

/* Slot of the entry with stored hash sh for which match() holds, or -1. */
static int64_t find(const struct tern_hmap *m, uint32_t sh, const void *key, size_t len,
                    tern_hmap_eq_fn eq, const void *item)
{
    if (!m->items)
        return -1;
    struct slots s = slots_of(m);
    for (uint32_t i = sh & s.mask, d = 0;; i = (i + 1) & s.mask, d++) {
        uint32_t h = s.hashes[i];
        if (h == 0 || dist_of(&s, i) < d)
            return -1; /* Robin Hood: ours would have been placed before this */
        if (h == sh && (eq ? eq(s.items[i], key, len) : s.items[i] == item))
            return i;
    }
}

void *tern_hmap_get(const struct tern_hmap *m, uint64_t h, const void *key, size_t len,
                    tern_hmap_eq_fn eq)
{
    int64_t i = find(m, stored_hash(h), key, len, eq, NULL);
    return i < 0 ? NULL : m->items[i];
}

int tern_hmap_put(struct tern_hmap *m, uint64_t h, void *item)
{
    assert(item && m->walking == 0);
    uint32_t cap = m->items ? (uint32_t)1 << m->log2cap : 0;
    if ((uint64_t)(m->count + 1) * 4 > (uint64_t)cap * 3) {
        uint32_t want = m->items ? m->log2cap + 1u : HMAP_LOG2CAP_MIN;
        int rc = want <= HMAP_LOG2CAP_MAX ? resize(m, want) : TERN_ENOMEM;
        /* Growth is best effort while one slot stays empty (probes end there). */
        if (rc != TERN_OK && m->count + 2 > cap)
            return TERN_ENOMEM;
    }
    struct slots s = slots_of(m);
    uint32_t probe = place(&s, stored_hash(h), item);
    m->count++;
    if (probe > HMAP_PROBE_MAX && (uint64_t)m->count * 4 >= (uint64_t)s.mask + 1 &&
        m->log2cap < HMAP_LOG2CAP_MAX)
        (void)resize(m, m->log2cap + 1u); /* best effort */
    return TERN_OK;
}

static void maybe_shrink(struct tern_hmap *m)
{
    if (m->walking)
        return;
    if (m->count == 0) {
        tern_hmap_free(m);
        return;
    }
    uint32_t log2cap = m->log2cap;
    while (log2cap > HMAP_LOG2CAP_MIN &&
           (uint64_t)m->count * 8 < ((uint64_t)1 << log2cap))
        log2cap--;
    if (log2cap != m->log2cap)
        (void)resize(m, log2cap); /* best effort */
}

static void remove_at(struct tern_hmap *m, uint32_t i)
{
    struct slots s = slots_of(m);
    /* Backward shift: the run after i moves one slot towards home. */
    for (uint32_t j = (i + 1) & s.mask; s.hashes[j] && dist_of(&s, j) > 0;
         i = j, j = (j + 1) & s.mask) {
        s.hashes[i] = s.hashes[j];
        s.items[i] = s.items[j];
    }
    s.hashes[i] = 0;
    s.items[i] = NULL;
    m->count--;
    maybe_shrink(m);
}

void *tern_hmap_del(struct tern_hmap *m, uint64_t h, const void *key, size_t len,
                    tern_hmap_eq_fn eq)
{
    int64_t i = find(m, stored_hash(h), key, len, eq, NULL);
    if (i < 0)
        return NULL;
    void *item = m->items[i];
    remove_at(m, (uint32_t)i);
    return item;
}

bool tern_hmap_del_item(struct tern_hmap *m, uint64_t h, const void *item)
{
    int64_t i = find(m, stored_hash(h), NULL, 0, NULL, item);
    if (i < 0)
        return false;
    remove_at(m, (uint32_t)i);
    return true;
}

void *tern_hmap_at(const struct tern_hmap *m, uint32_t *pos)
{
    if (!m->items)
        return NULL;
    struct slots s = slots_of(m);
    for (uint32_t i = *pos; i <= s.mask; i++) {
        if (s.hashes[i]) {
            *pos = i;
            return s.items[i];
        }
    }
    return NULL;
}

bool tern_hmap_pos(const struct tern_hmap *m, uint64_t h, const void *item, uint32_t *pos)
{
    int64_t i = find(m, stored_hash(h), NULL, 0, NULL, item);
    if (i < 0)
        return false;
    *pos = (uint32_t)i;
    return true;
}

/* Down the slots, starting below an empty one (see the top of this file). */
static int walk(const struct tern_hmap *m, int (*fn)(void *ctx, void *item), void *ctx)
{
    if (!m->items)
        return 0;
    struct slots s = slots_of(m);
    uint32_t start = 0;
    while (s.hashes[start])
        start++; /* load < 1: there is an empty slot */
    for (uint32_t k = 1; k <= s.mask; k++) {
        uint32_t i = (start - k) & s.mask;
        if (!s.hashes[i])
            continue;
        int rc = fn(ctx, s.items[i]);
        if (rc)
            return rc;
    }
    return 0;
}

int tern_hmap_walk(const struct tern_hmap *m, int (*fn)(void *ctx, void *item), void *ctx)
{
    return walk(m, fn, ctx);
}

int tern_hmap_walk_del(struct tern_hmap *m, int (*fn)(void *ctx, void *item), void *ctx)
{
    assert(m->walking < UINT8_MAX);
    m->walking++;
    int rc = walk(m, fn, ctx);
    m->walking--;
    maybe_shrink(m);
    return rc;
}
