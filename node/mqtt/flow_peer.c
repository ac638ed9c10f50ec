/* Flow control across the peer links, on the publisher's side.
 *
 * A node whose clean subscriber is backlogged by forwards of a publisher here
 * asks for that publisher to be held (flow.c, TERN_PEER_FLOW): it is then not
 * read (tern_conn_hold, the same state as a local hold) until that node asks
 * for it to be read again, or until the hold's lease ends: TERN_FLOW_LEASE_MS
 * without a renewal (the frame or the node was lost). One record per held
 * connection (a connection is held once at a time, whoever asks), looked at
 * once per loop turn and from the connection timer.
 */
#include <stdlib.h>

#include "tern/frontend.h"

struct tern_flow_peer {
    struct tern_flow_peer *next;
    struct tern_conn *conn; /* held, with a reference */
    uint64_t expires_ms;
    uint32_t from;
};

static struct tern_flow_peer **peer_find(struct tern_node *n, uint32_t from,
                                         const struct tern_conn *c)
{
    struct tern_flow_peer **pp = &n->flow_peer;
    while (*pp && ((*pp)->from != from || (*pp)->conn != c))
        pp = &(*pp)->next;
    return pp;
}

static void peer_free(struct tern_node *n, struct tern_flow_peer **pp)
{
    struct tern_flow_peer *h = *pp;
    *pp = h->next;
    tern_conn_unhold(h->conn); /* nothing if it closed meanwhile */
    tern_conn_unref(h->conn);
    free(h);
}

void tern_flow_peer_recv(struct tern_node *n, uint32_t from, bool hold,
                         const uint8_t *client_id, size_t len)
{
    struct tern_client_slot *slot =
        tern_clients_get(&n->clients, (const char *)client_id, len);
    struct tern_conn *c = slot ? slot->active : NULL;
    if (!c)
        return; /* gone, or it never was ours */
    struct tern_flow_peer **pp = peer_find(n, from, c);
    if (*pp) {
        if (hold)
            (*pp)->expires_ms = tern_mono_ms() + TERN_FLOW_LEASE_MS;
        else
            peer_free(n, pp);
        return;
    }
    /* Paused or held already (another node's subscriber, a local one, a backed
     * up link): not twice. Its node asks again if its forwards keep coming. */
    if (!hold || n->cfg.slow_subscriber_timeout_ms == 0 || n->stopping)
        return;
    struct tern_flow_peer *h = malloc(sizeof(*h));
    if (!h)
        return;
    if (!tern_conn_hold(c)) {
        free(h);
        return;
    }
    tern_conn_ref(c);
    *h = (struct tern_flow_peer){n->flow_peer, c, tern_mono_ms() + TERN_FLOW_LEASE_MS,
                                 from};
    n->flow_peer = h;
}

void tern_flow_peer_check(struct tern_node *n)
{
    if (!n->flow_peer)
        return;
    uint64_t now = tern_mono_ms();
    for (struct tern_flow_peer **pp = &n->flow_peer; *pp;) {
        struct tern_flow_peer *h = *pp;
        /* Its lease ended, or it is no longer held by us (it closed). */
        if (now >= h->expires_ms || h->conn->state != TERN_CONN_ACTIVE ||
            !h->conn->paused)
            peer_free(n, pp);
        else
            pp = &h->next;
    }
}

void tern_flow_peer_free(struct tern_node *n)
{
    while (n->flow_peer)
        peer_free(n, &n->flow_peer);
}
