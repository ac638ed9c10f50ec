/* tern_hmap: the one hash table of tern (storage/base/hmap.c says why it is
 * shaped this way).
 *
 * A table of pointers to caller-owned items, keyed by bytes the item holds
 * itself (a client id, a filter, a topic level): the table never copies or
 * frees an item, and an item needs no link field. Callers hash a key once with
 * tern_hmap_hash() (SipHash-2-4 under one random seed per process) and pass the
 * hash with every call, plus an equality function that compares an item with
 * a key.
 *
 * Open addressing (Robin Hood linear probing): grows at 3/4 load, shrinks
 * below 1/8, frees its slots when empty (an empty table holds no memory). A
 * lookup probes O(1) slots on average and at most a few dozen in practice,
 * since keys cannot be chosen to collide without the seed.
 *
 * The visit order of tern_hmap_walk() is the slot order: it depends on the
 * seed, so it differs between processes. Whatever is observable (snapshot
 * bytes, delivery order, listings) must sort what a walk collects, or keep its
 * own ordered list.
 *
 * Pure C, single-threaded per table; the seed is set once per process.
 */
#ifndef TERN_HMAP_H
#define TERN_HMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct tern_hmap {
    void **items; /* cap item pointers, then cap uint32 hashes; NULL when empty */
    uint32_t count;
    uint8_t log2cap; /* cap = 1 << log2cap while items != NULL */
    uint8_t walking; /* tern_hmap_walk_del() calls in progress: no shrinking */
};

/* Is `item` the item of key (key, len)? */
typedef bool (*tern_hmap_eq_fn)(const void *item, const void *key, size_t len);

/* SipHash-2-4 of key under the process seed (random at the first call). */
uint64_t tern_hmap_hash(const void *key, size_t len);
/* Replaces the process seed: for tests that check an outcome does not depend
 * on it. Only while no table holds entries. */
void tern_hmap_seed_set(const uint64_t seed[2]);

/* An empty table (all zero is one too). */
void tern_hmap_init(struct tern_hmap *m);
/* Frees the slots, not the items; m is empty afterwards. */
void tern_hmap_free(struct tern_hmap *m);

static inline size_t tern_hmap_count(const struct tern_hmap *m)
{
    return m->count;
}

/* The item of key (hash h), or NULL. */
void *tern_hmap_get(const struct tern_hmap *m, uint64_t h, const void *key, size_t len,
                    tern_hmap_eq_fn eq);
/* Adds item under hash h; its key must not be in m yet. TERN_ENOMEM when the
 * table is full and cannot grow (a failed growth below full is not an error:
 * probes only get longer). Not during a walk. */
int tern_hmap_put(struct tern_hmap *m, uint64_t h, void *item);
/* Removes and returns the item of key, or NULL. */
void *tern_hmap_del(struct tern_hmap *m, uint64_t h, const void *key, size_t len,
                    tern_hmap_eq_fn eq);
/* Removes this very item (found by identity under hash h); false if absent. */
bool tern_hmap_del_item(struct tern_hmap *m, uint64_t h, const void *item);

/* Calls fn for each item (slot order, see above) until fn returns non-zero,
 * which is returned (else 0). fn must not change the table. */
int tern_hmap_walk(const struct tern_hmap *m, int (*fn)(void *ctx, void *item),
                   void *ctx);
/* The same, but fn may remove the item it is given (and no other); the table
 * does not shrink before the walk ends. */
int tern_hmap_walk_del(struct tern_hmap *m, int (*fn)(void *ctx, void *item), void *ctx);

/* Iteration by slot position, for a caller that cannot hold a walk's callback
 * open (the topic tree steps through children with parent pointers): the item
 * at the first occupied slot at or after *pos, with *pos set to that slot, or
 * NULL past the end. The table must not change in between. */
void *tern_hmap_at(const struct tern_hmap *m, uint32_t *pos);
/* The slot of this very item (hash h), for tern_hmap_at(*pos + 1); false if
 * absent. */
bool tern_hmap_pos(const struct tern_hmap *m, uint64_t h, const void *item,
                   uint32_t *pos);

/* Bytes of slots the table holds, and the longest probe any entry needs from
 * its home slot (for tests and measurements; the second walks every slot). */
size_t tern_hmap_bytes(const struct tern_hmap *m);
uint32_t tern_hmap_probe_longest(const struct tern_hmap *m);

#endif
