/* Deadline heap (tern/heap.h): an array-backed binary min-heap whose items know
 * their position, so cancel and move need no search. */
#include <stdlib.h>

#include "tern/error.h"
#include "tern/heap.h"

#define HEAP_MIN_CAP 16u

void tern_heap_init(struct tern_heap *h, tern_heap_slot_fn slot)
{
    *h = (struct tern_heap){.slot = slot};
}

void tern_heap_free(struct tern_heap *h)
{
    free(h->v);
    h->v = NULL;
    h->count = h->cap = 0;
}

void tern_heap_clear(struct tern_heap *h)
{
    for (uint32_t i = 0; i < h->count; i++)
        *h->slot(h->v[i].item) = 0;
    tern_heap_free(h);
}

static void place(struct tern_heap *h, uint32_t i, struct tern_heap_ent e)
{
    h->v[i] = e;
    *h->slot(e.item) = i + 1;
}

static void sift_up(struct tern_heap *h, uint32_t i)
{
    struct tern_heap_ent e = h->v[i];
    while (i > 0) {
        uint32_t parent = (i - 1) / 2;
        if (h->v[parent].key <= e.key)
            break;
        place(h, i, h->v[parent]);
        i = parent;
    }
    place(h, i, e);
}

static void sift_down(struct tern_heap *h, uint32_t i)
{
    struct tern_heap_ent e = h->v[i];
    for (;;) {
        uint32_t child = 2 * i + 1;
        if (child >= h->count)
            break;
        if (child + 1 < h->count && h->v[child + 1].key < h->v[child].key)
            child++;
        if (e.key <= h->v[child].key)
            break;
        place(h, i, h->v[child]);
        i = child;
    }
    place(h, i, e);
}

static int grow(struct tern_heap *h)
{
    if (h->count < h->cap)
        return TERN_OK;
    if (h->cap >= TERN_HEAP_MAX)
        return TERN_ELIMIT;
    uint32_t cap = h->cap ? h->cap * 2 : HEAP_MIN_CAP;
    struct tern_heap_ent *v = realloc(h->v, (size_t)cap * sizeof(*v));
    if (!v)
        return TERN_ENOMEM;
    h->v = v;
    h->cap = cap;
    return TERN_OK;
}

/* Gives memory back after a mass expiry: a quarter full halves the array. */
static void shrink(struct tern_heap *h)
{
    if (h->cap <= HEAP_MIN_CAP || h->count > h->cap / 4)
        return;
    uint32_t cap = h->cap / 2;
    struct tern_heap_ent *v = realloc(h->v, (size_t)cap * sizeof(*v));
    if (v) { /* on failure the larger array simply stays */
        h->v = v;
        h->cap = cap;
    }
}

int tern_heap_set(struct tern_heap *h, void *item, uint64_t key)
{
    uint32_t pos = *h->slot(item);
    if (pos) {
        uint32_t i = pos - 1;
        uint64_t old = h->v[i].key;
        h->v[i].key = key;
        if (key < old)
            sift_up(h, i);
        else if (key > old)
            sift_down(h, i);
        return TERN_OK;
    }
    int rc = grow(h);
    if (rc != TERN_OK)
        return rc;
    h->v[h->count++] = (struct tern_heap_ent){.key = key, .item = item};
    sift_up(h, h->count - 1);
    return TERN_OK;
}

static void remove_at(struct tern_heap *h, uint32_t i)
{
    *h->slot(h->v[i].item) = 0;
    struct tern_heap_ent last = h->v[--h->count];
    if (i < h->count) {
        h->v[i] = last;
        /* The moved entry may belong above or below i. */
        if (i > 0 && last.key < h->v[(i - 1) / 2].key)
            sift_up(h, i);
        else
            sift_down(h, i);
    }
    shrink(h);
}

void tern_heap_remove(struct tern_heap *h, void *item)
{
    uint32_t pos = *h->slot(item);
    if (pos)
        remove_at(h, pos - 1);
}

bool tern_heap_contains(const struct tern_heap *h, void *item)
{
    return *h->slot(item) != 0;
}

uint64_t tern_heap_min_key(const struct tern_heap *h)
{
    return h->count ? h->v[0].key : UINT64_MAX;
}

void *tern_heap_pop_due(struct tern_heap *h, uint64_t limit)
{
    if (!h->count || h->v[0].key > limit)
        return NULL;
    void *item = h->v[0].item;
    remove_at(h, 0);
    return item;
}

bool tern_heap_valid(const struct tern_heap *h)
{
    for (uint32_t i = 0; i < h->count; i++) {
        if (*h->slot(h->v[i].item) != i + 1)
            return false;
        if (i > 0 && h->v[(i - 1) / 2].key > h->v[i].key)
            return false;
    }
    return h->count <= h->cap;
}
