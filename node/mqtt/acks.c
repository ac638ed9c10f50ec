/* Ordered acknowledgements to a publishing client.
 *
 * MQTT requires PUBACK / PUBREC in the order the PUBLISH packets arrived, but a
 * PUBLISH with durable effects is acknowledged only after its command commits,
 * while one without is acknowledged at once. Every ack takes a slot in a ring
 * in arrival order; completed slots leave from the head only.
 *
 * A slot is named by its sequence number (31 bits, wrapping), not its index, so
 * the ring can grow (doubling from ACKS_MIN) while acks are pending. It is
 * bounded by our receive maximum: a client that exceeds it is disconnected
 * (0x93) before it can grow anything. The ring is freed whenever it empties: a
 * device that published once and went quiet keeps nothing. */
#include <stdlib.h>
#include <string.h>

#include "tern/frontend.h"

#define ACKS_MIN 8
#define SEQ_MASK 0x7fffffffu

struct tern_acks {
    uint32_t head;     /* index of the oldest slot */
    uint32_t count;    /* slots in use */
    uint32_t cap;      /* power of two */
    uint32_t head_seq; /* sequence number of the oldest slot */
    struct tern_ack_slot slot[];
};

static uint32_t ring_max(const struct tern_conn *c)
{
    /* Each QoS>0 PUBLISH holds at most one slot at a time (PUBACK, PUBREC, then
     * PUBCOMP); PUBRELs for unknown ids take a few more. */
    return (uint32_t)c->node->cfg.receive_maximum + 16;
}

/* A ring twice as large, oldest slot first. */
static struct tern_acks *grow(struct tern_acks *a, uint32_t seq_next)
{
    uint32_t cap = a ? a->cap * 2 : ACKS_MIN;
    struct tern_acks *b = malloc(sizeof(*b) + (size_t)cap * sizeof(b->slot[0]));
    if (!b)
        return NULL;
    *b = (struct tern_acks){0, 0, cap, seq_next};
    if (a) {
        for (uint32_t i = 0; i < a->count; i++)
            b->slot[i] = a->slot[(a->head + i) & (a->cap - 1)];
        b->count = a->count;
        b->head_seq = a->head_seq;
        free(a);
    }
    return b;
}

int tern_acks_push(struct tern_conn *c, uint8_t type, uint16_t packet_id)
{
    struct tern_conn_opt *o = tern_conn_opt(c);
    if (!o)
        return -1;
    struct tern_acks *a = o->acks;
    if (a && a->count >= ring_max(c))
        return -1;
    if (!a || a->count == a->cap) {
        a = grow(a, o->ack_seq_next);
        if (!a)
            return -1;
        o->acks = a;
    }
    uint32_t seq = (a->head_seq + a->count) & SEQ_MASK;
    a->slot[(a->head + a->count) & (a->cap - 1)] =
        (struct tern_ack_slot){packet_id, type, 0, false};
    a->count++;
    o->ack_seq_next = (seq + 1) & SEQ_MASK;
    return (int)seq;
}

void tern_acks_done(struct tern_conn *c, int seq, uint8_t reason)
{
    struct tern_acks *a = c->opt ? c->opt->acks : NULL;
    if (seq < 0 || !a)
        return;
    uint32_t pos = ((uint32_t)seq - a->head_seq) & SEQ_MASK;
    if (pos >= a->count)
        return;
    struct tern_ack_slot *done = &a->slot[(a->head + pos) & (a->cap - 1)];
    done->done = true;
    done->reason = reason;
    while (a->count && a->slot[a->head].done) {
        struct tern_ack_slot *s = &a->slot[a->head];
        struct tern_packet p = {.type = s->type};
        p.u.ack.packet_id = s->packet_id;
        p.u.ack.reason = s->reason;
        tern_conn_send(c, &p);
        /* PUBACK and PUBCOMP end the client's use of a receive-maximum slot. */
        if ((s->type == TERN_PUBACK || s->type == TERN_PUBCOMP ||
             (s->type == TERN_PUBREC && s->reason >= 0x80)) &&
            c->inbound_unacked)
            c->inbound_unacked--;
        a->head = (a->head + 1) & (a->cap - 1);
        a->head_seq = (a->head_seq + 1) & SEQ_MASK;
        a->count--;
    }
    if (a->count == 0) {
        free(a);
        c->opt->acks = NULL;
    }
}

bool tern_acks_holds(const struct tern_conn *c, uint8_t type, uint16_t packet_id)
{
    const struct tern_acks *a = c->opt ? c->opt->acks : NULL;
    for (uint32_t i = 0; a && i < a->count; i++) {
        const struct tern_ack_slot *s = &a->slot[(a->head + i) & (a->cap - 1)];
        if (s->type == type && s->packet_id == packet_id)
            return true;
    }
    return false;
}
