/* tern_slab: small objects that live long and come in many copies (the
 * state machine's sessions and subscriptions, topic tree nodes), without
 * malloc's cost per object (storage/base/slab.c says why it is shaped this way).
 *
 * Sizes are rounded up to 8 bytes and served from 64 KiB pages; the caller
 * gives the size back when it frees (it knows it: an object's length is in the
 * object). Sizes above TERN_SLAB_SIZE_MAX go to malloc and free. The memory
 * of freed objects is reused for objects of the same rounded size; pages go
 * back to malloc when the slab holds no object any more, or at
 * tern_slab_destroy(). Objects are 8-byte aligned and not zeroed.
 *
 * Under AddressSanitizer every object is its own malloc, so that use after
 * free and overflows are still caught.
 *
 * Pure C, single-threaded per slab; all zero is an empty slab. */
#ifndef TERN_SLAB_H
#define TERN_SLAB_H

#include <stddef.h>
#include <stdint.h>

#define TERN_SLAB_GRAIN 8u
#define TERN_SLAB_SIZE_MAX 256u
#define TERN_SLAB_CLASSES (TERN_SLAB_SIZE_MAX / TERN_SLAB_GRAIN)

struct tern_slab {
    void *free[TERN_SLAB_CLASSES]; /* per rounded size: freed objects, linked */
    void *pages;                   /* every page, linked through its first word */
    char *bump;                    /* unused rest of the newest page */
    size_t bump_left;
    size_t live; /* objects handed out and not freed (small ones) */
    size_t pages_bytes;
};

void tern_slab_init(struct tern_slab *s);
/* n bytes (n > 0), or NULL when out of memory. */
void *tern_slab_alloc(struct tern_slab *s, size_t n);
/* p from tern_slab_alloc(s, n) with the same n; NULL is ignored. */
void tern_slab_free(struct tern_slab *s, void *p, size_t n);
/* Frees every page (and so every small object still out); s is empty after. */
void tern_slab_destroy(struct tern_slab *s);
/* Bytes in pages (small objects, free or not; large ones are not counted). */
size_t tern_slab_bytes(const struct tern_slab *s);

#endif
