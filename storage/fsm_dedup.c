/* Proposal order: each node's proposals apply exactly once, in the order the
 * node made them.
 *
 * A proposal id is (origin node << 40) | per-node sequence. Per origin the FSM
 * keeps the highest applied sequence H; every sequence up to H has applied. A
 * command applies only when its sequence is H + 1. At or below H it is a
 * duplicate (a retry of one that applied: ignored). Above H + 1 it is out of
 * order: an earlier proposal of that node has not applied yet - lost with a
 * leader, or still on its way behind a retry - so this one is refused and
 * changes nothing, and its node re-sends its whole outstanding tail, in order
 * (cluster/raft_glue.c). So a leader change can neither drop nor reorder one
 * node's proposals however many newer ones it made meanwhile: there is no
 * window to outrun, which the sliding window this replaced had (1024 newer
 * applied proposals made a lost one "too old" and it was skipped).
 *
 * A node begins a sequence with ORIGIN_START, whose sequence may be anywhere
 * above H (a restarted node does not know which of its last proposals will
 * still commit, so it jumps well past them; the ones that commit later are
 * then duplicates). An origin the FSM does not know accepts only an
 * ORIGIN_START. Origins are bounded (FSM_ORIGINS_MAX, sorted by node); a new
 * one beyond the bound evicts the least recently applied, which is replicated
 * state (stats.applied), so every replica evicts the same one; that node's next
 * proposal is then refused until it starts a new sequence. */
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

enum fsm_order fsm_proposal_order(const struct tern_fsm *f, const struct tern_cmd *cmd)
{
    uint64_t id = cmd->proposal_id;
    if (id == 0)
        return FSM_ORDER_NEXT;
    const struct fsm_origin *o = origin_find(f, (uint32_t)(id >> 40));
    uint64_t seq = id & FSM_PROPOSAL_SEQ_MASK;
    bool start = cmd->type == TERN_CMD_ORIGIN_START;
    if (!o)
        return start ? FSM_ORDER_NEXT : FSM_ORDER_GAP;
    if (seq <= o->high)
        return FSM_ORDER_DUP;
    return start || seq == o->high + 1 ? FSM_ORDER_NEXT : FSM_ORDER_GAP;
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
    if (fsm_grow_in(f, (void **)&f->origins, &f->origin_cap, f->origin_count + 1,
                    sizeof(*f->origins)) != TERN_OK)
        return NULL;
    size_t i = origin_pos(f, node);
    memmove(&f->origins[i + 1], &f->origins[i],
            (f->origin_count - i) * sizeof(*f->origins));
    f->origin_count++;
    f->origins[i] = (struct fsm_origin){.node = node};
    return &f->origins[i];
}

/* Called only for a command that fsm_proposal_order() let through. An
 * allocation failure is recorded (fsm_grow_in) and stops the node, as any
 * other in apply: a replica that forgot an origin would diverge. */
void fsm_proposal_record(struct tern_fsm *f, uint64_t id)
{
    if (id == 0)
        return;
    uint32_t node = (uint32_t)(id >> 40);
    struct fsm_origin *o = origin_find(f, node);
    if (!o && !(o = origin_add(f, node)))
        return;
    o->high = id & FSM_PROPOSAL_SEQ_MASK;
    o->last_used = f->stats.applied;
}

uint64_t tern_fsm_proposal_high(const struct tern_fsm *f, uint32_t node)
{
    const struct fsm_origin *o = origin_find(f, node);
    return o ? o->high : 0;
}
