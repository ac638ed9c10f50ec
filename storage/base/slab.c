/* tern_slab (tern/slab.h): size-class pages for many small, long-lived objects.
 *
 * Why: glibc's malloc puts an 8-byte header before every chunk and rounds
 * chunks up to 16 bytes, so an idle persistent session (a 76-byte session, a
 * 52-byte subscription, a 47-byte topic node for its own level) took 96 + 64 +
 * 64 bytes; from a slab it takes 80 + 56 + 48. At a million sessions that is
 * 40 MB. Objects of one kind also stay together on their own pages, apart from
 * the short-lived buffers (log entries, packets) that would otherwise leave
 * holes between them.
 *
 * Shape: sizes are rounded up to TERN_SLAB_GRAIN; a page is carved from the
 * front (bump allocation), whatever the sizes; a freed object goes on the free
 * list of its rounded size and is handed out again for that size first. So
 * the cost of a slab is that memory freed in one size serves only that size
 * until the slab is empty (then every page goes back to malloc): after a
 * churn that changes sizes, the slab holds the peak of each size. The
 * state machine's objects are created and freed by the same commands over and
 * over (a device reconnects with the same id and filter), and a restored
 * snapshot starts a new slab.
 */
#include "tern/slab.h"

#include <stdlib.h>
#include <string.h>

#define SLAB_PAGE_BYTES (64u * 1024u)
/* The page's first word links it to the next page. */
#define SLAB_PAGE_HEAD TERN_SLAB_GRAIN

#if defined(__SANITIZE_ADDRESS__)
#define SLAB_PASSTHROUGH 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SLAB_PASSTHROUGH 1
#endif
#endif

void tern_slab_init(struct tern_slab *s)
{
    memset(s, 0, sizeof(*s));
}

#ifndef SLAB_PASSTHROUGH
static size_t slab_round(size_t n)
{
    return (n + TERN_SLAB_GRAIN - 1) & ~(size_t)(TERN_SLAB_GRAIN - 1);
}
#endif

void *tern_slab_alloc(struct tern_slab *s, size_t n)
{
#ifdef SLAB_PASSTHROUGH
    (void)s;
    return malloc(n ? n : 1);
#else
    if (n == 0 || n > TERN_SLAB_SIZE_MAX)
        return malloc(n ? n : 1);
    size_t size = slab_round(n);
    size_t c = size / TERN_SLAB_GRAIN - 1;
    void *p = s->free[c];
    if (p) {
        memcpy(&s->free[c], p, sizeof(void *));
    } else {
        if (s->bump_left < size) {
            /* The rest of the old page (under 256 bytes) stays unused. */
            char *page = malloc(SLAB_PAGE_BYTES);
            if (!page)
                return NULL;
            memcpy(page, &s->pages, sizeof(void *));
            s->pages = page;
            s->pages_bytes += SLAB_PAGE_BYTES;
            s->bump = page + SLAB_PAGE_HEAD;
            s->bump_left = SLAB_PAGE_BYTES - SLAB_PAGE_HEAD;
        }
        p = s->bump;
        s->bump += size;
        s->bump_left -= size;
    }
    s->live++;
    return p;
#endif
}

void tern_slab_free(struct tern_slab *s, void *p, size_t n)
{
    if (!p)
        return;
#ifdef SLAB_PASSTHROUGH
    (void)s;
    (void)n;
    free(p);
#else
    if (n == 0 || n > TERN_SLAB_SIZE_MAX) {
        free(p);
        return;
    }
    size_t c = slab_round(n) / TERN_SLAB_GRAIN - 1;
    memcpy(p, &s->free[c], sizeof(void *));
    s->free[c] = p;
    if (--s->live == 0)
        tern_slab_destroy(s); /* nothing left: every page goes back */
#endif
}

void tern_slab_destroy(struct tern_slab *s)
{
    void *page = s->pages;
    while (page) {
        void *next;
        memcpy(&next, page, sizeof(void *));
        free(page);
        page = next;
    }
    tern_slab_init(s);
}

size_t tern_slab_bytes(const struct tern_slab *s)
{
    return s->pages_bytes;
}
