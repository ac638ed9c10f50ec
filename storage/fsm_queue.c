/* Per-session outbound state: the FIFO queue, the in-flight window and packet
 * ids.
 *
 * A message for a session is appended to its queue; promotion moves queue heads
 * into the in-flight window (min(inflight_max, receive_max)) while the session is
 * online, giving each a packet id, and only then asks the owner to send it. So
 * the send order is the queue order and a packet id is replicated state before
 * anything goes on the wire. */
#include <stdlib.h>
#include <string.h>

#include "fsm_internal.h"

static uint32_t flight_window(const struct tern_fsm *f, const struct tern_fsm_session *s)
{
    uint32_t w = f->limits.inflight_max;
    if (s->receive_max < w)
        w = s->receive_max;
    return w ? w : 1; /* a zero window would stall QoS > 0 for ever */
}

void fsm_deliver(struct tern_fsm *f, struct tern_fsm_session *s,
                 const struct fsm_entry *e, uint16_t packet_id, bool dup, bool pubrel)
{
    if (!f->obs.deliver || !s->online)
        return;
    struct tern_delivery d = {.packet_id = packet_id, .dup = dup, .pubrel = pubrel};
    if (pubrel) {
        d.qos = 2;
    } else {
        d.msg = e->msg;
        d.qos = e->qos;
        d.retain = e->retain;
        d.sub_id_count = e->nids;
        memcpy(d.sub_ids, e->ids, sizeof(d.sub_ids));
    }
    f->obs.deliver(f->obs.ctx, s, &d);
}

/* The queue is not empty. */
static struct fsm_qent *queue_pop(struct tern_fsm *f, struct tern_fsm_session *s)
{
    struct fsm_session_state *st = fsm_session_state_own(s);
    struct fsm_qent *q = st->q_head;
    st->q_head = q->next;
    if (!st->q_head)
        st->q_tail = NULL;
    st->queued--;
    st->queued_bytes -= fsm_msg_bytes(q->e.msg);
    f->stats.queued--;
    return q;
}

static void queue_push(struct tern_fsm *f, struct fsm_session_state *st,
                       struct fsm_qent *q)
{
    q->next = NULL;
    if (st->q_tail)
        st->q_tail->next = q;
    else
        st->q_head = q;
    st->q_tail = q;
    st->queued++;
    st->queued_bytes += fsm_msg_bytes(q->e.msg);
    f->stats.queued++;
}

static void queue_drop_head(struct tern_fsm *f, struct tern_fsm_session *s)
{
    struct fsm_qent *q = queue_pop(f, s);
    fsm_msg_unref(f, q->e.msg);
    free(q);
}

static bool queue_over(const struct tern_fsm *f, const struct tern_fsm_session *s,
                       uint32_t add, uint64_t add_bytes)
{
    return (uint64_t)s->st->queued + add > f->limits.queue_max ||
           s->st->queued_bytes + add_bytes > f->limits.queue_bytes_max;
}

/* Appends, applying the drop policy. Returns whether the new entry was kept. */
static bool queue_append(struct tern_fsm *f, struct tern_fsm_session *s,
                         const struct fsm_entry *e)
{
    if (f->limits.drop_policy == TERN_DROP_NEW &&
        queue_over(f, s, 1, fsm_msg_bytes(e->msg))) {
        f->stats.dropped_queue_full++;
        return false;
    }
    struct fsm_qent *q = fsm_malloc(f, sizeof(*q));
    struct fsm_session_state *st = q ? fsm_session_state_mut(f, s) : NULL;
    if (!st) {
        free(q);
        return false;
    }
    q->e = *e;
    fsm_msg_ref(e->msg);
    queue_push(f, st, q);
    bool kept = true;
    /* Oldest first; the new entry is the tail, so dropping it empties the queue. */
    while (st->q_head && queue_over(f, s, 0, 0)) {
        kept = st->q_head != q;
        queue_drop_head(f, s);
        f->stats.dropped_queue_full++;
    }
    return kept;
}

bool tern_fsm_session_backlogged(const struct tern_fsm *f,
                                 const struct tern_fsm_session *s)
{
    return (uint64_t)s->st->queued * 2 >= f->limits.queue_max ||
           s->st->queued_bytes * 2 >= f->limits.queue_bytes_max;
}

bool tern_fsm_session_drained(const struct tern_fsm *f, const struct tern_fsm_session *s)
{
    return (uint64_t)s->st->queued * 4 <= f->limits.queue_max &&
           s->st->queued_bytes * 4 <= f->limits.queue_bytes_max;
}

/* Flow control: an online session's queue past its high-water mark is reported
 * in the PUBLISH's result, so the node can stop reading the publisher well
 * before queue_max (the drop policy) is reached. Nothing replicated changes. */
static void note_backlogged(struct tern_fsm *f, struct tern_fsm_session *s)
{
    if (!s->online || f->backlogged_count >= TERN_FSM_BACKLOGGED_MAX ||
        !tern_fsm_session_backlogged(f, s))
        return;
    for (uint8_t i = 0; i < f->backlogged_count; i++)
        if (f->backlogged[i] == s)
            return;
    f->backlogged[f->backlogged_count++] = s;
}

bool fsm_enqueue(struct tern_fsm *f, struct tern_fsm_session *s,
                 const struct fsm_entry *e, uint64_t now_ms)
{
    if (e->qos == 0 && s->online) {
        fsm_deliver(f, s, e, 0, false, false);
        return true;
    }
    if (e->qos == 0 && !f->limits.queue_qos0) {
        f->stats.dropped_qos0_offline++;
        return false;
    }
    if (!queue_append(f, s, e))
        return false;
    fsm_promote(f, s, now_ms);
    note_backlogged(f, s);
    return true;
}

static bool id_bit(const struct fsm_session_state *st, uint16_t id)
{
    return st->flight_ids[id / 64] >> (id % 64) & 1;
}

/* Exact (set by push, cleared by remove, filled when created), so the next
 * free id can be read off it: every replica picks the same one. */
static void id_set(struct fsm_session_state *st, uint16_t id, bool on)
{
    if (!st->flight_ids)
        return;
    uint64_t bit = UINT64_C(1) << (id % 64);
    if (on)
        st->flight_ids[id / 64] |= bit;
    else
        st->flight_ids[id / 64] &= ~bit;
}

/* From the oldest: acks usually come in send order. */
int fsm_flight_find(const struct tern_fsm_session *s, uint16_t packet_id)
{
    const struct fsm_session_state *st = s->st;
    if (st->flight_ids && !id_bit(st, packet_id))
        return -1;
    for (uint32_t i = 0; i < st->flight_count; i++) {
        if (fsm_flight_at(st, i)->packet_id == packet_id)
            return (int)i;
    }
    return -1;
}

int fsm_flight_reserve(struct fsm_session_state *st, uint32_t n)
{
    if (n <= st->flight_cap)
        return TERN_OK;
    uint32_t cap = st->flight_cap ? st->flight_cap : 8;
    while (cap < n)
        cap *= 2;
    uint64_t *ids = st->flight_ids;
    if (!ids && cap > FSM_FLIGHT_SCAN) {
        ids = calloc((FSM_PACKET_ID_MAX + 1) / 64, sizeof(*ids));
        if (!ids)
            return TERN_ENOMEM;
    }
    struct fsm_flight *ring = malloc((size_t)cap * sizeof(*ring));
    if (!ring) {
        if (ids != st->flight_ids)
            free(ids);
        return TERN_ENOMEM;
    }
    /* Unwrapped into the new ring, oldest first. */
    for (uint32_t i = 0; i < st->flight_count; i++)
        ring[i] = *fsm_flight_at(st, i);
    free(st->flight);
    st->flight = ring;
    st->flight_cap = cap;
    st->flight_head = 0;
    if (ids != st->flight_ids) {
        st->flight_ids = ids;
        for (uint32_t i = 0; i < st->flight_count; i++)
            id_set(st, ring[i].packet_id, true);
    }
    return TERN_OK;
}

void fsm_flight_push(struct tern_fsm *f, struct fsm_session_state *st,
                     const struct fsm_flight *fl)
{
    *fsm_flight_at(st, st->flight_count++) = *fl;
    id_set(st, fl->packet_id, true);
    f->stats.inflight++;
}

/* Cycles 1..65535, skipping ids in flight. The window is below 65535, so a free
 * id exists; the loop bound is a guard. */
static uint16_t next_packet_id(struct tern_fsm_session *s)
{
    for (uint32_t i = 0; i < FSM_PACKET_ID_MAX; i++) {
        uint16_t id = s->next_packet_id ? s->next_packet_id : 1;
        s->next_packet_id = id == FSM_PACKET_ID_MAX ? 1 : (uint16_t)(id + 1);
        bool busy = s->st->flight_ids ? id_bit(s->st, id) : fsm_flight_find(s, id) >= 0;
        if (!busy)
            return id;
    }
    return 0;
}

/* Moves the queue head into the window. Returns false when it cannot. */
static bool promote_one(struct tern_fsm *f, struct tern_fsm_session *s)
{
    struct fsm_session_state *st = fsm_session_state_own(s); /* the queue is not empty */
    /* The window is at most 65535, so flight_count stays within uint16_t. */
    if (st->flight_count >= flight_window(f, s))
        return false;
    if (fsm_flight_reserve(st, st->flight_count + 1u) != TERN_OK) {
        fsm_nomem(f);
        return false;
    }
    uint16_t id = next_packet_id(s);
    if (id == 0)
        return false;
    struct fsm_qent *q = queue_pop(f, s);
    fsm_flight_push(f, st,
                    &(struct fsm_flight){.packet_id = id, .state = FSM_SENT, .e = q->e});
    free(q);
    const struct fsm_flight *fl = fsm_flight_at(st, st->flight_count - 1u);
    fsm_deliver(f, s, &fl->e, id, false, false);
    return true;
}

void fsm_promote(struct tern_fsm *f, struct tern_fsm_session *s, uint64_t now_ms)
{
    while (s->online && s->st->q_head) {
        struct fsm_qent *q = s->st->q_head;
        if (fsm_msg_expired(q->e.msg, now_ms)) {
            queue_drop_head(f, s);
            f->stats.dropped_expired++;
        } else if (q->e.qos == 0) {
            queue_pop(f, s);
            fsm_deliver(f, s, &q->e, 0, false, false);
            fsm_msg_unref(f, q->e.msg);
            free(q);
        } else if (!promote_one(f, s)) {
            break;
        }
    }
}

/* Owed first, in the order they were sent: DUP PUBLISH or PUBREL, then the queue. */
void fsm_resume(struct tern_fsm *f, struct tern_fsm_session *s, uint64_t now_ms)
{
    for (uint32_t i = 0; i < s->st->flight_count; i++) {
        const struct fsm_flight *fl = fsm_flight_at(s->st, i);
        fsm_deliver(f, s, &fl->e, fl->packet_id, fl->state == FSM_SENT,
                    fl->state == FSM_REL);
    }
    fsm_promote(f, s, now_ms);
}

void fsm_flight_remove(struct tern_fsm *f, struct tern_fsm_session *s, uint32_t i)
{
    struct fsm_session_state *st = fsm_session_state_own(s);
    struct fsm_flight *fl = fsm_flight_at(st, i);
    fsm_msg_unref(f, fl->e.msg);
    id_set(st, fl->packet_id, false);
    /* The shorter side closes the gap: an ack of the oldest moves nothing, and
     * one just behind an entry that stays (a QoS 2 message waiting for PUBCOMP,
     * a message never acknowledged) moves only what is in front of it. */
    if (i < st->flight_count - 1u - i) {
        for (uint32_t j = i; j > 0; j--)
            *fsm_flight_at(st, j) = *fsm_flight_at(st, j - 1);
        st->flight_head = (uint16_t)((st->flight_head + 1u) & (st->flight_cap - 1));
    } else {
        for (uint32_t j = i; j + 1 < st->flight_count; j++)
            *fsm_flight_at(st, j) = *fsm_flight_at(st, j + 1);
    }
    st->flight_count--;
    f->stats.inflight--;
}

void fsm_queue_clear(struct tern_fsm *f, struct tern_fsm_session *s)
{
    while (s->st->q_head)
        queue_drop_head(f, s);
}

void fsm_flight_clear(struct tern_fsm *f, struct tern_fsm_session *s)
{
    if (s->st == &fsm_session_state_empty)
        return;
    struct fsm_session_state *st = fsm_session_state_own(s);
    while (st->flight_count)
        fsm_flight_remove(f, s, st->flight_count - 1u);
    free(st->flight);
    free(st->flight_ids);
    st->flight = NULL;
    st->flight_ids = NULL;
    st->flight_cap = 0;
    st->flight_head = 0;
}

/* In-session retry (off by default): the owner re-sends what is in flight, as
 * on resume but without touching the queue. Emits effects only; the state is
 * unchanged, so replicas need not do it. */
void tern_fsm_session_resend(struct tern_fsm *f, struct tern_fsm_session *s)
{
    for (uint32_t i = 0; i < s->st->flight_count; i++) {
        const struct fsm_flight *fl = fsm_flight_at(s->st, i);
        fsm_deliver(f, s, &fl->e, fl->packet_id, fl->state == FSM_SENT,
                    fl->state == FSM_REL);
    }
}
