/* Client-id table of one node: which local connection holds the session of a
 * client id (active), and which one is waiting for its SESSION_OPEN to apply
 * (connecting). Both exist during a takeover on the same node.
 *
 * Chained hash table keyed by client id (SipHash under a per-table random key,
 * so chosen ids cannot fill one bucket), grown at load factor 1. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "clients.h"
#include "tern/error.h"
#include "tern/siphash.h"

static uint64_t hash_id(const struct tern_clients *t, const char *id, size_t len)
{
    return tern_siphash(t->seed, id, len);
}

void tern_clients_init(struct tern_clients *t)
{
    memset(t, 0, sizeof(*t));
    tern_siphash_seed(t->seed);
}

void tern_clients_free(struct tern_clients *t)
{
    for (size_t i = 0; i < t->nbuckets; i++) {
        struct tern_client_slot *s = t->buckets[i];
        while (s) {
            struct tern_client_slot *next = s->next;
            s->linked = false;
            if (s->refs == 0)
                free(s); /* else the last connection pointing at it frees it */
            s = next;
        }
    }
    free(t->buckets);
    memset(t, 0, sizeof(*t));
}

struct tern_client_slot *tern_clients_get(const struct tern_clients *t, const char *id,
                                          size_t len)
{
    if (t->nbuckets == 0)
        return NULL;
    struct tern_client_slot *s = t->buckets[hash_id(t, id, len) & (t->nbuckets - 1)];
    for (; s; s = s->next)
        if (s->id_len == len && memcmp(s->id, id, len) == 0)
            return s;
    return NULL;
}

static int grow(struct tern_clients *t)
{
    size_t n = t->nbuckets ? t->nbuckets * 2 : 64;
    struct tern_client_slot **b = calloc(n, sizeof(*b));
    if (!b)
        return TERN_ENOMEM;
    for (size_t i = 0; i < t->nbuckets; i++) {
        struct tern_client_slot *s = t->buckets[i];
        while (s) {
            struct tern_client_slot *next = s->next;
            size_t j = hash_id(t, s->id, s->id_len) & (n - 1);
            s->next = b[j];
            b[j] = s;
            s = next;
        }
    }
    free(t->buckets);
    t->buckets = b;
    t->nbuckets = n;
    return TERN_OK;
}

struct tern_client_slot *tern_clients_put(struct tern_clients *t, const char *id,
                                          size_t len)
{
    struct tern_client_slot *s = tern_clients_get(t, id, len);
    if (s)
        return s;
    if (t->count >= t->nbuckets && grow(t) != TERN_OK)
        return NULL;
    if (len > UINT16_MAX)
        return NULL;
    s = calloc(1, sizeof(*s) + len + 1);
    if (!s)
        return NULL;
    memcpy(s->id, id, len);
    s->id_len = (uint16_t)len;
    s->linked = true;
    size_t j = hash_id(t, id, len) & (t->nbuckets - 1);
    s->next = t->buckets[j];
    t->buckets[j] = s;
    t->count++;
    return s;
}

void tern_clients_release(struct tern_clients *t, struct tern_client_slot *slot)
{
    if (slot->active || slot->connecting)
        return;
    if (slot->linked) {
        size_t j = hash_id(t, slot->id, slot->id_len) & (t->nbuckets - 1);
        struct tern_client_slot **pp = &t->buckets[j];
        while (*pp && *pp != slot)
            pp = &(*pp)->next;
        if (*pp) {
            *pp = slot->next;
            t->count--;
        }
        slot->linked = false;
    }
    if (slot->refs == 0)
        free(slot);
}

void tern_clients_hold(struct tern_client_slot *slot)
{
    slot->refs++;
}

void tern_clients_drop(struct tern_clients *t, struct tern_client_slot *slot)
{
    slot->refs--;
    tern_clients_release(t, slot);
}

struct tern_client_slot *tern_clients_slot_of(const char *id)
{
    return (struct tern_client_slot *)(void *)(id -
                                               offsetof(struct tern_client_slot, id));
}
