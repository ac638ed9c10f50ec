/* Ordered acknowledgements to a publishing client.
 *
 * MQTT requires PUBACK / PUBREC in the order the PUBLISH packets arrived, but a
 * PUBLISH with durable effects is acknowledged only after its command commits,
 * while one without is acknowledged at once. Every ack takes a slot in a ring
 * in arrival order; completed slots leave from the head only. The ring is
 * bounded by our receive maximum: a client that exceeds it is disconnected
 * (0x93) before it can grow anything. */
#include <stdlib.h>

#include "node.h"

static uint32_t ring_cap(const struct tern_conn *c)
{
    /* Each QoS>0 PUBLISH holds at most one slot at a time (PUBACK, PUBREC, then
     * PUBCOMP); PUBRELs for unknown ids take a few more. */
    return (uint32_t)c->node->cfg.receive_maximum + 16;
}

int tern_acks_push(struct tern_conn *c, uint8_t type, uint16_t packet_id)
{
    uint32_t cap = ring_cap(c);
    if (!c->acks) {
        c->acks = calloc(cap, sizeof(*c->acks));
        if (!c->acks)
            return -1;
    }
    if (c->ack_count == cap)
        return -1;
    uint32_t idx = (c->ack_head + c->ack_count) % cap;
    c->acks[idx] = (struct tern_ack_slot){packet_id, type, 0, false};
    c->ack_count++;
    return (int)idx;
}

void tern_acks_done(struct tern_conn *c, int idx, uint8_t reason)
{
    uint32_t cap = ring_cap(c);
    if (idx < 0 || (uint32_t)idx >= cap || !c->acks)
        return;
    c->acks[idx].done = true;
    c->acks[idx].reason = reason;
    while (c->ack_count && c->acks[c->ack_head].done) {
        struct tern_ack_slot *s = &c->acks[c->ack_head];
        struct tern_packet p = {.type = s->type};
        p.u.ack.packet_id = s->packet_id;
        p.u.ack.reason = s->reason;
        tern_conn_send(c, &p);
        /* PUBACK and PUBCOMP end the client's use of a receive-maximum slot. */
        if ((s->type == TERN_PUBACK || s->type == TERN_PUBCOMP ||
             (s->type == TERN_PUBREC && s->reason >= 0x80)) &&
            c->inbound_unacked)
            c->inbound_unacked--;
        c->ack_head = (c->ack_head + 1) % cap;
        c->ack_count--;
    }
}
