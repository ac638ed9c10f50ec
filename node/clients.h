/* Client-id table of one node (see clients.c). */
#ifndef TERN_CLIENTS_H
#define TERN_CLIENTS_H

#include <stddef.h>

struct tern_conn;

struct tern_client_slot {
    struct tern_client_slot *next;
    struct tern_conn *active;     /* owns the current epoch */
    struct tern_conn *connecting; /* SESSION_OPEN proposed, not applied yet */
    size_t id_len;
    char id[]; /* NUL-terminated copy */
};

struct tern_clients {
    struct tern_client_slot **buckets;
    size_t nbuckets; /* power of two */
    size_t count;
};

void tern_clients_init(struct tern_clients *t);
void tern_clients_free(struct tern_clients *t);
struct tern_client_slot *tern_clients_get(const struct tern_clients *t, const char *id,
                                          size_t len);
/* Finds or creates the slot; NULL on allocation failure. */
struct tern_client_slot *tern_clients_put(struct tern_clients *t, const char *id,
                                          size_t len);
void tern_clients_release(struct tern_clients *t, struct tern_client_slot *slot);

#endif
