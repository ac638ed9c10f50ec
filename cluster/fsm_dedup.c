/* Proposal-id dedup: a retried proposal must not apply twice.
 *
 * A proposal id is (origin node << 40) | per-node sequence. Proposals of one
 * node usually apply in sequence order, but not always: a proposal retried
 * after a leader change may apply after a higher one of the same node. So "the
 * highest applied sequence" is not enough; per origin we keep that highest
 * sequence H and a bitmap of the FSM_DEDUP_WINDOW sequences up to it. A
 * sequence is a duplicate iff its bit is set, or it is below the window (too
 * old: taken as applied, a retry does not take that long).
 *
 * The bitmap is a ring indexed by seq % window; moving H forward clears the
 * slots that enter the window, so a bit set always means "this exact sequence
 * applied". Origins are bounded (FSM_ORIGINS_MAX, sorted by node); a new one
 * beyond the bound evicts the least recently applied, which is replicated state
 * (stats.applied), so every replica evicts the same one. */
#include <string.h>

#include "fsm_internal.h"

static size_t origin_pos(const struct tern_fsm *f, uint32_t node)
{
    size_t lo = 0, hi = f->origin_count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (f->origins[mid].node < node)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static struct fsm_origin *origin_find(const struct tern_fsm *f, uint32_t node)
{
    size_t i = origin_pos(f, node);
    return i < f->origin_count && f->origins[i].node == node ? &f->origins[i] : NULL;
}

static bool bit_get(const struct fsm_origin *o, uint64_t seq)
{
    uint64_t slot = seq % FSM_DEDUP_WINDOW;
    return (o->bits[slot / 64] >> (slot % 64)) & 1u;
}

static void bit_set(struct fsm_origin *o, uint64_t seq, bool on)
{
    uint64_t slot = seq % FSM_DEDUP_WINDOW;
    uint64_t m = UINT64_C(1) << (slot % 64);
    o->bits[slot / 64] = on ? (o->bits[slot / 64] | m) : (o->bits[slot / 64] & ~m);
}

bool fsm_proposal_dup(const struct tern_fsm *f, uint64_t id)
{
    if (id == 0)
        return false;
    const struct fsm_origin *o = origin_find(f, (uint32_t)(id >> 40));
    if (!o)
        return false;
    uint64_t seq = id & FSM_PROPOSAL_SEQ_MASK;
    if (seq > o->high)
        return false;
    if (o->high - seq >= FSM_DEDUP_WINDOW)
        return true; /* below the window */
    return bit_get(o, seq);
}

static void origin_evict_lru(struct tern_fsm *f)
{
    size_t lru = 0;
    for (size_t i = 1; i < f->origin_count; i++) {
        if (f->origins[i].last_used < f->origins[lru].last_used)
            lru = i;
    }
    memmove(&f->origins[lru], &f->origins[lru + 1],
            (f->origin_count - lru - 1) * sizeof(*f->origins));
    f->origin_count--;
}

static struct fsm_origin *origin_add(struct tern_fsm *f, uint32_t node)
{
    if (f->origin_count >= FSM_ORIGINS_MAX)
        origin_evict_lru(f);
    if (fsm_grow((void **)&f->origins, &f->origin_cap, f->origin_count + 1,
                 sizeof(*f->origins)) != TERN_OK)
        return NULL;
    size_t i = origin_pos(f, node);
    memmove(&f->origins[i + 1], &f->origins[i],
            (f->origin_count - i) * sizeof(*f->origins));
    f->origin_count++;
    f->origins[i] = (struct fsm_origin){.node = node};
    return &f->origins[i];
}

/* Moves H up to seq, clearing the slots of the sequences that enter the window
 * (all of them when it jumps by a whole window or more). */
static void window_advance(struct fsm_origin *o, uint64_t seq)
{
    if (seq - o->high >= FSM_DEDUP_WINDOW) {
        memset(o->bits, 0, sizeof(o->bits));
    } else {
        for (uint64_t s = o->high + 1; s <= seq; s++)
            bit_set(o, s, false);
    }
    o->high = seq;
}

/* On allocation failure the id is not remembered (no dedup for it) rather than
 * failing an apply that already happened. */
void fsm_proposal_record(struct tern_fsm *f, uint64_t id)
{
    if (id == 0)
        return;
    uint32_t node = (uint32_t)(id >> 40);
    uint64_t seq = id & FSM_PROPOSAL_SEQ_MASK;
    struct fsm_origin *o = origin_find(f, node);
    if (!o && !(o = origin_add(f, node)))
        return;
    if (seq > o->high)
        window_advance(o, seq);
    bit_set(o, seq, true);
    o->last_used = f->stats.applied;
}

uint64_t tern_fsm_proposal_high(const struct tern_fsm *f, uint32_t node)
{
    const struct fsm_origin *o = origin_find(f, node);
    return o ? o->high : 0;
}
