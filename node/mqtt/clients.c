/* Client-id table of one node: which local connection holds the session of a
 * client id (active), and which one is waiting for its SESSION_OPEN to apply
 * (connecting). Both exist during a takeover on the same node. A CONNECT that
 * comes while one is connecting waits (waiting) until that one is done.
 *
 * A tern_hmap keyed by client id (seeded, so chosen ids cannot pile up); the
 * slots hold their ids, so the table holds only pointers to them. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tern/clients.h"
#include "tern/error.h"

static bool slot_eq(const void *item, const void *key, size_t len)
{
    const struct tern_client_slot *s = item;
    return s->id_len == len && memcmp(s->id, key, len) == 0;
}

void tern_clients_init(struct tern_clients *t)
{
    tern_hmap_init(&t->map);
}

static int free_visit(void *ctx, void *item)
{
    (void)ctx;
    struct tern_client_slot *s = item;
    s->linked = false;
    if (s->refs == 0)
        free(s); /* else the last connection pointing at it frees it */
    return 0;
}

void tern_clients_free(struct tern_clients *t)
{
    tern_hmap_walk(&t->map, free_visit, NULL);
    tern_hmap_free(&t->map);
}

struct tern_client_slot *tern_clients_get(const struct tern_clients *t, const char *id,
                                          size_t len)
{
    return tern_hmap_get(&t->map, tern_hmap_hash(id, len), id, len, slot_eq);
}

struct tern_client_slot *tern_clients_put(struct tern_clients *t, const char *id,
                                          size_t len)
{
    uint64_t h = tern_hmap_hash(id, len);
    struct tern_client_slot *s = tern_hmap_get(&t->map, h, id, len, slot_eq);
    if (s)
        return s;
    if (len > UINT16_MAX)
        return NULL;
    s = calloc(1, sizeof(*s) + len + 1);
    if (!s)
        return NULL;
    memcpy(s->id, id, len);
    s->id_len = (uint16_t)len;
    if (tern_hmap_put(&t->map, h, s) != TERN_OK) {
        free(s);
        return NULL;
    }
    s->linked = true;
    return s;
}

void tern_clients_connected(struct tern_clients *t, struct tern_client_slot *slot)
{
    slot->connecting = NULL;
    if (slot->waiting)
        t->wake = true;
}

void tern_clients_release(struct tern_clients *t, struct tern_client_slot *slot)
{
    if (slot->active || slot->connecting || slot->waiting)
        return;
    if (slot->linked) {
        tern_hmap_del_item(&t->map, tern_hmap_hash(slot->id, slot->id_len), slot);
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
