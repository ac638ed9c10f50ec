/* Client-id table of one node (see clients.c). */
#ifndef TERN_CLIENTS_H
#define TERN_CLIENTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tern/hmap.h"

struct tern_conn;

/* A slot is also where its connections keep their client id (conn->client_id
 * points at id): one copy per client id. It stays in the table while a
 * connection is active or connecting, and in memory while a connection still
 * points at it. */
struct tern_client_slot {
    struct tern_conn *active;     /* owns the current epoch */
    struct tern_conn *connecting; /* SESSION_OPEN proposed, not applied yet */
    struct tern_conn *waiting;    /* a later CONNECT, handled once connecting is done */
    uint32_t refs;                /* connections whose client_id is id */
    uint16_t id_len;
    bool linked; /* in the table */
    char id[];   /* NUL-terminated copy */
};

struct tern_clients {
    struct tern_hmap map; /* id -> slot; never walked but to free */
    bool wake;            /* a slot with a waiting CONNECT is done connecting */
};

void tern_clients_init(struct tern_clients *t);
void tern_clients_free(struct tern_clients *t);
struct tern_client_slot *tern_clients_get(const struct tern_clients *t, const char *id,
                                          size_t len);
/* Finds or creates the slot; NULL on allocation failure. */
struct tern_client_slot *tern_clients_put(struct tern_clients *t, const char *id,
                                          size_t len);
/* The slot's SESSION_OPEN applied or failed: connecting is cleared, and a
 * waiting CONNECT is due (wake). */
void tern_clients_connected(struct tern_clients *t, struct tern_client_slot *slot);
/* Unlinks the slot when no active, connecting or waiting connection uses it;
 * frees it once no connection points at it either. */
void tern_clients_release(struct tern_clients *t, struct tern_client_slot *slot);
/* A connection takes its client id from the slot (hold) until it is freed (drop). */
void tern_clients_hold(struct tern_client_slot *slot);
void tern_clients_drop(struct tern_clients *t, struct tern_client_slot *slot);
/* The slot whose id `id` is (a conn->client_id). */
struct tern_client_slot *tern_clients_slot_of(const char *id);

#endif
