/* Deadline heap: a binary min-heap of (key, item) with a position back-pointer
 * in each item, so that finding the earliest deadline is O(1) and inserting,
 * moving or cancelling one is O(log n), without a search.
 *
 * Why this shape: timers in the state machine (session expiry, delayed wills,
 * retained message expiry) are set and cancelled far more often than they fire,
 * and a TICK must cost what is due, not what exists. A timer wheel would need
 * a resolution and a horizon; deadlines here are arbitrary wall-clock ms up to
 * years away, and n log n for what fires is cheap.
 *
 * The item keeps a uint32_t slot that the heap writes: 0 when the item is not
 * in the heap, its array index + 1 when it is. So a zeroed item is "not in the
 * heap", and an item whose slot reads 0 is never written to by remove (the slot
 * may live in read-only memory then). The order of equal keys is unspecified:
 * callers that need a deterministic order sort what they took out.
 *
 * Pure: no I/O, no globals. The heap owns its array (and nothing else). */
#ifndef TERN_HEAP_H
#define TERN_HEAP_H

#include <stdbool.h>
#include <stdint.h>

struct tern_heap_ent {
    uint64_t key;
    void *item;
};

/* Returns the address of item's position slot. */
typedef uint32_t *(*tern_heap_slot_fn)(void *item);

struct tern_heap {
    struct tern_heap_ent *v;
    uint32_t count, cap;
    tern_heap_slot_fn slot;
};

#define TERN_HEAP_MAX (UINT32_MAX / 2)

void tern_heap_init(struct tern_heap *h, tern_heap_slot_fn slot);
/* Frees the array; items are untouched (their slots are left as they were). */
void tern_heap_free(struct tern_heap *h);
/* Takes every item out (their slots become 0) in O(n), and frees the array. */
void tern_heap_clear(struct tern_heap *h);

/* Inserts item with key, or moves it to key if it is in the heap already.
 * TERN_ENOMEM (nothing changed) when the array cannot grow, TERN_ELIMIT beyond
 * TERN_HEAP_MAX items. */
int tern_heap_set(struct tern_heap *h, void *item, uint64_t key);
/* Removes item if it is in the heap (a no-op otherwise). */
void tern_heap_remove(struct tern_heap *h, void *item);
bool tern_heap_contains(const struct tern_heap *h, void *item);

/* The smallest key, or UINT64_MAX when empty. */
uint64_t tern_heap_min_key(const struct tern_heap *h);
/* Removes and returns an item with the smallest key if that key is <= limit,
 * else NULL (also when empty). */
void *tern_heap_pop_due(struct tern_heap *h, uint64_t limit);

/* Checks the heap property and every back-pointer (for tests). */
bool tern_heap_valid(const struct tern_heap *h);

#endif
