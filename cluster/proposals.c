/* Proposals of tern_cluster (cluster/raft_glue.c has the rest).
 *
 * Proposals: every command is encoded once and kept, under its proposal id,
 * until this node applies it. Proposals made during a loop turn leave together
 * (group commit): the leader appends them - with those other nodes forwarded to
 * it - as one Raft entry; a follower sends them to the leader over the peer
 * link. An entry is a plain concatenation of encoded commands.
 *
 * Apply: every node applies every command; the node whose id is in a command's
 * proposal id then completes that proposal (its callback runs after the
 * command's effects).
 *
 * Order: a node's proposals apply in the order it made them, each once (the
 * FSM refuses one whose predecessor has not applied: storage/fsm_dedup.c). A
 * leader change may lose what the old leader had not committed, or commit it
 * late; so whenever the leader (or its term) changes, when the FSM refuses one
 * of ours as out of order, and when the oldest has waited retry_ms, the node
 * sends its whole outstanding tail again, in order, with the same ids: the
 * copies that had committed are then duplicates, the rest apply in sequence.
 * A proposal is completed only by its own apply, so its callback's TERN_OK
 * always means "applied".
 */
#include <stdio.h>

#include "cluster_internal.h"
#include "tern/log.h"

/* --- pending proposals ------------------------------------------------------ */

static size_t hslot(const struct tern_cluster *c, uint64_t id)
{
    return (size_t)((id * 0x9E3779B97F4A7C15ull) >> 32) & (c->hcap - 1);
}

int cluster_pending_grow(struct tern_cluster *c)
{
    size_t cap = c->hcap ? c->hcap * 2 : 1024;
    struct proposal **h = calloc(cap, sizeof(*h));
    if (!h)
        return TERN_ENOMEM;
    struct proposal **old = c->hash;
    size_t oldcap = c->hcap;
    c->hash = h;
    c->hcap = cap;
    for (size_t i = 0; i < oldcap; i++)
        for (struct proposal *p = old[i], *n; p; p = n) {
            n = p->hnext;
            size_t s = hslot(c, p->id);
            p->hnext = h[s];
            h[s] = p;
        }
    free(old);
    return TERN_OK;
}

static struct proposal *pending_find(struct tern_cluster *c, uint64_t id)
{
    if (!c->hcap)
        return NULL;
    for (struct proposal *p = c->hash[hslot(c, id)]; p; p = p->hnext)
        if (p->id == id)
            return p;
    return NULL;
}

static void hash_remove(struct tern_cluster *c, struct proposal *p);

void cluster_pending_remove(struct tern_cluster *c, struct proposal *p)
{
    if (p->id)
        hash_remove(c, p);
    if (p->prev)
        p->prev->next = p->next;
    else
        c->head = p->next;
    if (p->next)
        p->next->prev = p->prev;
    else
        c->tail = p->prev;
    c->npending--;
}

/* --- apply ------------------------------------------------------------------- */

/* Every command of an applied entry (raft_fsm.c applies it): the node whose id
 * is in its proposal id completes that proposal. */

_Static_assert(sizeof((uint64_t[])TERN_COMMIT_BUCKETS_US) / sizeof(uint64_t) ==
                   TERN_COMMIT_BUCKETS - 1,
               "one bucket per bound, and the rest");

static void commit_latency(struct tern_cluster *c, uint64_t us)
{
    static const uint64_t bounds_us[] = TERN_COMMIT_BUCKETS_US;
    size_t i = 0;
    while (i < TERN_COMMIT_BUCKETS - 1 && us > bounds_us[i])
        i++;
    c->commit_us[i]++;
    c->commit_sum_us += us;
    if (us > c->commit_max_us)
        c->commit_max_us = us;
}

static void complete(struct tern_cluster *c, struct proposal *pr,
                     const struct tern_fsm_result *res)
{
    c->retry_backoff = 0; /* the log moves again */
    cluster_pending_remove(c, pr);
    c->applied_own++;
    commit_latency(c, (uv_hrtime() - pr->proposed_ns) / 1000);
    if (pr->cb)
        pr->cb(pr->ctx, TERN_OK, res);
    free(pr);
}

/* A snapshot installed here holds the effects of our proposals up to its
 * highest sequence of this node, and this node will never apply them itself:
 * they are complete, as duplicates (applied; their results are not known). */
void cluster_settle_restored(struct tern_cluster *c)
{
    if (c->rfsm.restores == c->restores_settled)
        return;
    c->restores_settled = c->rfsm.restores;
    uint64_t high = tern_fsm_proposal_high(c->fsm, c->node_id);
    const struct tern_fsm_result dup = {.status = TERN_OK, .duplicate = true};
    while (c->head && c->head->id && (c->head->id & SEQ_MASK) <= high)
        complete(c, c->head, &dup);
}

static void restart_sequence(struct tern_cluster *c);

/* The FSM refused one of ours: an earlier one is missing. Re-send the tail
 * from the oldest outstanding one - unless this copy was sent before the last
 * re-send, whose copies are behind it. If the missing one is not outstanding
 * either (nothing can fill the hole), start a new sequence. */
static void out_of_order(struct tern_cluster *c, const struct proposal *pr)
{
    if (pr->gen != c->gen)
        return;
    uint64_t high = tern_fsm_proposal_high(c->fsm, c->node_id);
    if (!c->head->id || (c->head->id & SEQ_MASK) > high + 1)
        restart_sequence(c);
    else
        c->resend = 1;
    cluster_kick(c);
}

/* Which of our pending proposals (if any) the command about to apply is. */
void cluster_on_cmd_applying(void *ctx, const struct tern_cmd *cmd)
{
    struct tern_cluster *c = ctx;
    c->applying = cmd->proposal_id >> 40 == c->node_id && cmd->proposal_id
                      ? pending_find(c, cmd->proposal_id)
                      : NULL;
}

bool tern_cluster_applying(const struct tern_cluster *c, tern_propose_cb *cb, void **ctx)
{
    if (!c->applying)
        return false;
    *cb = c->applying->cb;
    *ctx = c->applying->ctx;
    return true;
}

void cluster_on_cmd_applied(void *ctx, const struct tern_cmd *cmd,
                            const struct tern_fsm_result *res)
{
    struct tern_cluster *c = ctx;
    c->applying = NULL;
    if (c->holding)
        cluster_kick(c); /* the commit index moved: flush sees whether it caught up */
    if (cmd->type == TERN_CMD_MEMBER_SET || cmd->type == TERN_CMD_MEMBER_DEL)
        cluster_member_applied(c, cmd, res);
    if (cmd->proposal_id >> 40 != c->node_id) {
        if (cmd->proposal_id && raft_state(&c->raft) == RAFT_LEADER) {
            c->push_commit = 1; /* a follower is waiting to learn this committed */
            cluster_kick(c);
        }
        return;
    }
    cluster_settle_restored(c);
    struct proposal *pr = pending_find(c, cmd->proposal_id);
    if (!pr)
        return; /* a duplicate of one completed already */
    if (res->out_of_order)
        out_of_order(c, pr);
    else
        complete(c, pr, res);
}

/* --- sending proposals ------------------------------------------------------- */

uint32_t cluster_leader_id(struct tern_cluster *c)
{
    raft_id id = 0;
    const char *addr = NULL;
    raft_leader(&c->raft, &id, &addr);
    return (uint32_t)id;
}

static void on_applied(struct raft_apply *req, int status, void *result)
{
    (void)result;
    struct apply_req *a = (struct apply_req *)req;
    if (status != 0)
        TERN_LOGD("raft: entry not committed here: %s (proposals will be retried)",
                  raft_strerror(status));
    free(a);
}

/* Leader: appends `data` as one entry. Takes ownership of nothing. */
static int append_entry(struct tern_cluster *c, const uint8_t *data, size_t len)
{
    struct raft_buffer rb = {0};
    struct apply_req *a = malloc(sizeof(*a));
    bool lz4 = c->cfg.entry_compression == TERN_ENTRY_COMPRESSION_LZ4;
    if (!a || tern_raft_entry_build(data, len, lz4, &rb) != TERN_OK) {
        free(a);
        return TERN_ENOMEM;
    }
    a->c = c;
    bool compressed = ((const uint8_t *)rb.base)[0] == TERN_RAFT_ENTRY_LZ4;
    size_t stored = rb.len; /* libraft's once applied */
    int rv = raft_apply(&c->raft, &a->req, &rb, 1, on_applied);
    if (rv != 0) {
        raft_free(rb.base);
        free(a);
        return TERN_ENOTLEADER;
    }
    c->entries++;
    c->entries_compressed += compressed;
    c->entry_bytes_commands += len;
    c->entry_bytes_stored += stored;
    c->appended_term = c->raft.current_term;
    return TERN_OK;
}

static void hash_insert(struct tern_cluster *c, struct proposal *p)
{
    if (c->npending >= c->hcap / 2)
        cluster_pending_grow(c);
    size_t s = hslot(c, p->id);
    p->hnext = c->hash[s];
    c->hash[s] = p;
}

static void hash_remove(struct tern_cluster *c, struct proposal *p)
{
    for (struct proposal **pp = &c->hash[hslot(c, p->id)]; *pp; pp = &(*pp)->hnext)
        if (*pp == p) {
            *pp = p->hnext;
            break;
        }
}

/* Ids are given when a proposal is first sent, in proposal order. */
static void stamp(struct tern_cluster *c, struct proposal *p)
{
    p->id = ((uint64_t)c->node_id << 40) | (++c->seq & SEQ_MASK);
    for (int i = 0; i < 8; i++)
        p->bytes[TERN_CMD_PROPOSAL_ID_OFFSET + i] = (uint8_t)(p->id >> (8 * i));
    hash_insert(c, p);
}

/* Everything outstanding goes again, in order, on the next cluster_flush. */
void cluster_resend_all(struct tern_cluster *c)
{
    for (struct proposal *p = c->head; p; p = p->next)
        p->sent_ms = 0;
    c->gen++;
    c->resend = 0;
}

static struct proposal *proposal_new(const struct tern_cmd *cmd, tern_propose_cb cb,
                                     void *ctx);

/* A new sequence above every id this node used, begun by an ORIGIN_START at the
 * head; the outstanding proposals follow it with new ids, in their order. The
 * copies of their old ids that are still in some log become duplicates. */
static void restart_sequence(struct tern_cluster *c)
{
    struct tern_cmd start = {.type = TERN_CMD_ORIGIN_START, .now_ms = cluster_wall_ms()};
    struct proposal *p = proposal_new(&start, NULL, NULL);
    if (!p)
        return; /* the next refusal tries again */
    for (struct proposal *q = c->head; q; q = q->next) {
        if (q->id)
            hash_remove(c, q);
        q->id = 0;
    }
    p->next = c->head;
    if (c->head)
        c->head->prev = p;
    else
        c->tail = p;
    c->head = p;
    c->npending++;
    c->seq += SEQ_JUMP;
    cluster_resend_all(c);
    TERN_LOGW("raft: proposal sequence of node %u has a gap: new sequence from %llu",
              c->node_id, (unsigned long long)(c->seq + 1));
}

static void on_barrier(struct raft_barrier *req, int status)
{
    struct tern_cluster *c = req->data;
    if (status != 0)
        c->barrier_sent = 0; /* try again as the next leader */
}

/* After a (re)start, waits until the log this node had is applied (a leader
 * commits a barrier for that; a follower learns the commit index), then
 * continues proposal sequences above the highest this node ever had applied,
 * plus room for proposals that were in flight when it stopped. */
int cluster_check_seq_ready(struct tern_cluster *c)
{
    if (c->seq_ready)
        return 1;
    int state = raft_state(&c->raft);
    if (state == RAFT_LEADER && !c->barrier_sent) {
        c->barrier.data = c;
        if (raft_barrier(&c->raft, &c->barrier, on_barrier) == 0)
            c->barrier_sent = 1;
    }
    if (cluster_leader_id(c) == 0 || raft_last_applied(&c->raft) < c->start_index)
        return 0;
    /* The first proposal, ORIGIN_START (tern_cluster_new), takes the next. */
    uint64_t high = tern_fsm_proposal_high(c->fsm, c->node_id);
    c->seq = high + SEQ_JUMP;
    c->seq_ready = 1;
    TERN_LOGI("raft: log applied up to %llu; proposals continue at %llu",
              (unsigned long long)raft_last_applied(&c->raft),
              (unsigned long long)c->seq);
    return 1;
}

/* libraft 0.15 advances the commit index only to the leader's last stored
 * index, once a majority has all of it; raft_commit.h makes the last stored
 * index trail what a majority holds, so commits follow the followers. What
 * remains of the append hold is batching while commits stall (a stream stalled
 * by retransmissions under loss): when the commit index has not moved for
 * HOLD_MS with entries uncommitted, the leader appends nothing more until it
 * moves again, and what was proposed meanwhile goes in the next entries (fewer,
 * larger, compressed ones rather than one AppendEntries per batch of a few
 * proposals behind the stall). Before raft_commit.h this was what let a lossy
 * cluster commit at all (under 30% loss and 50 ms delay the commit index stood
 * still for 3.5 s at a time while the followers' match index moved on). Only
 * once the leader has appended in its own term: entries of earlier terms commit
 * only under one of the current term, so holding before one would wait forever.
 * On a healthy cluster the commit index moves every few ms and this never
 * holds. */
#define HOLD_MS 100

static bool append_held(struct tern_cluster *c)
{
    uint64_t commit = c->raft.commit_index, now = cluster_now_ms(c);
    if (commit != c->commit_seen || commit >= raft_last_index(&c->raft) ||
        c->appended_term != c->raft.current_term) {
        c->commit_seen = commit;
        c->commit_moved_ms = now;
        if (c->holding)
            TERN_LOGD("raft: commit index %llu moved: appending again",
                      (unsigned long long)commit);
        c->holding = 0;
        return false;
    }
    if (now - c->commit_moved_ms < HOLD_MS)
        return false;
    if (!c->holding)
        TERN_LOGD("raft: commit index %llu stalled %llu ms behind %llu: holding appends",
                  (unsigned long long)commit,
                  (unsigned long long)(now - c->commit_moved_ms),
                  (unsigned long long)raft_last_index(&c->raft));
    c->holding = 1;
    return true;
}

/* Follower: a batch to the leader, compressed as a leader stores it (the peer
 * link crosses the same network as Raft's streams, and after a failover it
 * carries this node's whole re-sent tail). */
static int send_proposals(struct tern_cluster *c, uint32_t leader, const uint8_t *data,
                          size_t len)
{
    size_t bound =
        c->cfg.entry_compression == TERN_ENTRY_COMPRESSION_LZ4 ? tern_lz4_bound(len) : 0;
    struct tern_wbuf z;
    tern_wbuf_init(&z);
    size_t n = 0;
    if (bound && tern_wbuf_try_reserve(&z, 4 + bound) == TERN_OK) {
        tern_wbuf_put_u32(&z, (uint32_t)len);
        n = tern_lz4_pack(data, len, z.buf + z.len, 4);
    }
    int rv;
    if (n) {
        c->fwd_compressed++;
        rv = tern_peers_send(c->peers, leader, TERN_PEER_PROPOSE_LZ4, z.buf, 4 + n);
    } else {
        rv = tern_peers_send(c->peers, leader, TERN_PEER_PROPOSE, data, len);
    }
    tern_wbuf_free(&z);
    return rv;
}

/* Sends every proposal waiting to be sent, in order, batched up to
 * max_batch_bytes per entry or frame. With nowhere to send them the idle handle
 * stops (the timer starts it again while any wait): no spinning. */
void cluster_flush(struct tern_cluster *c)
{
    uint32_t leader = cluster_leader_id(c);
    bool self = leader == c->node_id && raft_state(&c->raft) == RAFT_LEADER;
    if (!self)
        c->fwd.len = 0; /* followers' proposals for a past term: they re-send */
    if (leader == 0 || !cluster_check_seq_ready(c) ||
        (!self && !tern_peers_connected(c->peers, leader)) || (self && append_held(c))) {
        uv_idle_stop(&c->idle);
        return;
    }
    /* A leader unknown for a moment (a pre-vote round under packet loss) and
     * back in the same term over the same connection has all we sent it:
     * re-sending then only fills the log with duplicates (under 30% loss the
     * new leader's memory grew by 170 MB that way). A new leader or term may
     * lack what the old one had not committed, and frames on a link that went
     * down may be lost with it: then everything outstanding goes again. */
    uint64_t term = c->raft.current_term;
    uint64_t ups = self ? 0 : tern_peers_ups(c->peers, leader);
    if (leader != c->sent_leader || term != c->sent_term || ups != c->sent_ups) {
        c->sent_leader = leader;
        c->sent_term = term;
        c->sent_ups = ups;
        cluster_resend_all(c);
    } else if (c->resend) {
        cluster_resend_all(c);
    }
    struct tern_wbuf out;
    tern_wbuf_init(&out);
    if (self && c->fwd.len) {
        out = c->fwd;
        tern_wbuf_init(&c->fwd);
    }
    uint64_t now = cluster_now_ms(c);
    struct proposal *first = NULL;
    for (struct proposal *p = c->head; p; p = p->next) {
        if (p->sent_ms)
            continue;
        if (out.len + p->len > c->cfg.max_batch_bytes && out.len)
            break; /* the rest goes on the next turn */
        if (p->id == 0)
            stamp(c, p);
        if (cluster_buf_append(&out, p->bytes, p->len) != TERN_OK)
            break;
        if (!first)
            first = p;
        p->sent_ms = now;
        p->gen = c->gen;
    }
    if (out.len) {
        int rv = self ? append_entry(c, out.buf, out.len)
                      : send_proposals(c, leader, out.buf, out.len);
        if (rv != TERN_OK) {
            /* Not sent: again from the timer (the link is full or going). */
            for (struct proposal *p = first; p; p = p->next)
                if (p->sent_ms == now)
                    p->sent_ms = 0;
            tern_wbuf_free(&out);
            uv_idle_stop(&c->idle);
            return;
        } else if (!self) {
            /* Clients wait for these: out now, behind the forwards batched
             * before them (also while stopping, with no prepare phase left). */
            tern_peers_flush(c->peers);
        }
    }
    tern_wbuf_free(&out);
    /* Sent proposals are a prefix of the list: anything left over (batch
     * limit) is at the tail and goes on the next turn. */
    if (!c->tail || c->tail->sent_ms)
        uv_idle_stop(&c->idle);
}

void cluster_barrier_done(struct raft_barrier *req, int status)
{
    (void)status;
    free(req);
}

/* A follower learns that its forwarded proposals committed only from the
 * leader's next AppendEntries: with nothing else to append that is the next
 * heartbeat, up to raft_heartbeat_timeout_ms away. A barrier entry makes the
 * leader send the new commit index now. Under load there is always a next
 * entry, so this costs an entry only when the log is otherwise quiet. */
static void push_commit(struct tern_cluster *c)
{
    c->push_commit = 0;
    if (raft_state(&c->raft) != RAFT_LEADER || c->fwd.len)
        return;
    if (c->tail && !c->tail->sent_ms)
        return; /* cluster_flush is about to append an entry anyway */
    struct raft_barrier *b = malloc(sizeof(*b));
    if (b && raft_barrier(&c->raft, b, cluster_barrier_done) != 0)
        free(b);
}

static void on_idle(uv_idle_t *h)
{
    struct tern_cluster *c = h->data;
    if (c->push_commit)
        push_commit(c);
    cluster_flush(c);
    if (!c->head && !c->fwd.len)
        uv_idle_stop(&c->idle);
}

void cluster_kick(struct tern_cluster *c)
{
    if (!uv_is_active((uv_handle_t *)&c->idle))
        uv_idle_start(&c->idle, on_idle);
}

static void take_proposals(struct tern_cluster *c, uint32_t from, const uint8_t *data,
                           size_t len);

/* A follower's proposals, arriving at the leader: validated, then appended with
 * the leader's own on this turn. A node that is no longer leader drops them; the
 * follower retries with the same ids. */
void cluster_on_peer_frame(void *ctx, uint32_t from, uint8_t type, const uint8_t *data,
                           size_t len)
{
    struct tern_cluster *c = ctx;
    char errmsg[TERN_ERRMSG_SIZE];
    if (type == TERN_PEER_FORWARD) {
        struct tern_cmd cmd;
        size_t used;
        if (tern_cmd_decode(data, len, &cmd, &used, errmsg) == TERN_OK &&
            cmd.type == TERN_CMD_PUBLISH && c->cfg.on_forward)
            c->cfg.on_forward(c->cfg.forward_ctx, from, &cmd);
        return;
    }
    if (type == TERN_PEER_FLOW) {
        if (len >= 1 && len - 1 <= UINT16_MAX && c->cfg.on_flow)
            c->cfg.on_flow(c->cfg.forward_ctx, from, data[0] != 0, data + 1, len - 1);
        return;
    }
    if ((type != TERN_PEER_PROPOSE && type != TERN_PEER_PROPOSE_LZ4) ||
        raft_state(&c->raft) != RAFT_LEADER)
        return;
    if (type == TERN_PEER_PROPOSE) {
        take_proposals(c, from, data, len);
        return;
    }
    /* Bounded as a plain frame is (peer_frame_bytes_max): no batch grows more
     * than one could carry. */
    struct tern_rbuf r;
    tern_rbuf_init(&r, data, len);
    size_t n = tern_rbuf_get_u32(&r);
    uint64_t max =
        c->cfg.peer_frame_bytes_max ? c->cfg.peer_frame_bytes_max : TERN_PEER_FRAME_MAX;
    uint8_t *raw = !r.err && n && n <= max ? malloc(n) : NULL;
    if (!raw || tern_lz4_unpack(r.buf + r.pos, tern_rbuf_left(&r), raw, n) != 0) {
        TERN_LOGW("peer %u: dropped a compressed proposal batch: %s", from,
                  raw ? "it does not decompress to its length" : "bad length");
        free(raw);
        return;
    }
    take_proposals(c, from, raw, n);
    free(raw);
}

/* A batch of a follower's proposals, on the leader: validated whole, then what
 * has not applied yet is appended with the leader's own on this turn. */
static void take_proposals(struct tern_cluster *c, uint32_t from, const uint8_t *data,
                           size_t len)
{
    char errmsg[TERN_ERRMSG_SIZE];
    size_t off = 0;
    while (off < len) {
        struct tern_cmd cmd;
        size_t used;
        if (tern_cmd_decode(data + off, len - off, &cmd, &used, errmsg) != TERN_OK) {
            TERN_LOGW("peer %u: dropped a malformed proposal batch: %s", from, errmsg);
            return;
        }
        off += used;
    }
    /* A re-sent tail starts with what may have applied already: those copies
     * would be duplicates, so they are not appended at all. */
    for (off = 0; off < len;) {
        struct tern_cmd cmd;
        size_t used;
        tern_cmd_decode(data + off, len - off, &cmd, &used, NULL); /* checked above */
        uint64_t seq = cmd.proposal_id & SEQ_MASK;
        if (!cmd.proposal_id ||
            seq > tern_fsm_proposal_high(c->fsm, (uint32_t)(cmd.proposal_id >> 40)))
            if (cluster_buf_append(&c->fwd, data + off, used) != TERN_OK)
                break;
        off += used;
    }
    if (c->fwd.len)
        cluster_kick(c);
}

static struct proposal *proposal_new(const struct tern_cmd *cmd, tern_propose_cb cb,
                                     void *ctx)
{
    struct tern_cmd unstamped = *cmd;
    unstamped.proposal_id = 0; /* stamped when first sent (see stamp()) */
    size_t need = tern_cmd_encode(&unstamped, NULL, 0);
    struct proposal *p = need ? malloc(sizeof(*p) + need) : NULL;
    if (!p)
        return NULL;
    *p = (struct proposal){.cb = cb, .ctx = ctx, .proposed_ns = uv_hrtime(), .len = need};
    tern_cmd_encode(&unstamped, p->bytes, need);
    return p;
}

int tern_cluster_propose(struct tern_cluster *c, const struct tern_cmd *cmd,
                         tern_propose_cb cb, void *ctx)
{
    if (c->closing)
        return TERN_ESHUTDOWN;
    size_t need = tern_cmd_encode(cmd, NULL, 0);
    if (need == 0 || need > c->cfg.max_batch_bytes)
        return TERN_ETOOBIG;
    if (c->npending >= c->hcap && cluster_pending_grow(c) != TERN_OK)
        return TERN_ENOMEM;
    struct proposal *p = proposal_new(cmd, cb, ctx);
    if (!p)
        return TERN_ENOMEM;
    p->prev = c->tail;
    if (c->tail)
        c->tail->next = p;
    else
        c->head = p;
    c->tail = p;
    c->npending++;
    cluster_kick(c);
    return TERN_OK;
}

struct tern_fsm *tern_cluster_fsm(struct tern_cluster *c)
{
    return c->fsm;
}

int tern_cluster_ready(const struct tern_cluster *c)
{
    struct tern_cluster *m = (struct tern_cluster *)c;
    if (c->closing || !c->raft_started)
        return 0;
    uint32_t leader = cluster_leader_id(m);
    if (leader == 0 || c->removed)
        return 0;
    return leader == c->node_id || tern_peers_connected(c->peers, leader);
}

int tern_cluster_electing(const struct tern_cluster *c)
{
    struct tern_cluster *m = (struct tern_cluster *)c;
    if (c->closing || !c->raft_started || c->removed || cluster_leader_id(m) != 0)
        return 0;
    unsigned voters = 0;
    const struct raft_configuration *conf = &c->raft.configuration;
    for (unsigned i = 0; i < conf->n; i++)
        voters += conf->servers[i].role == RAFT_VOTER;
    /* The window: a vote request or grant per round, rounds of up to about
     * 2 election timeouts (raft_timing.h), and one lost or late now and then. */
    uint64_t window = (uint64_t)c->cfg.election_timeout_ms * 4;
    return voters > 1 && 1 + tern_raft_recv_electing(&m->io, window) > voters / 2;
}

int tern_cluster_reachable(const struct tern_cluster *c)
{
    struct tern_cluster *m = (struct tern_cluster *)c;
    if (c->closing || !c->raft_started || c->removed)
        return 0;
    /* libraft forgets the leader once it has not heard from it for an election
     * timeout (or on becoming a candidate). */
    return cluster_leader_id(m) != 0 || tern_cluster_electing(c);
}

int tern_cluster_forward(struct tern_cluster *c, uint32_t node,
                         const struct tern_cmd *cmd)
{
    uint8_t stack[4096];
    size_t need = tern_cmd_encode(cmd, NULL, 0);
    if (need == 0)
        return TERN_ETOOBIG;
    uint8_t *b = need <= sizeof(stack) ? stack : malloc(need);
    if (!b)
        return TERN_ENOMEM;
    tern_cmd_encode(cmd, b, need);
    int rv = tern_peers_send(c->peers, node, TERN_PEER_FORWARD, b, need);
    if (b != stack)
        free(b);
    return rv;
}

int tern_cluster_flow(struct tern_cluster *c, uint32_t node, bool hold,
                      const uint8_t *client_id, size_t len)
{
    uint8_t stack[256];
    if (!c->peers || len > UINT16_MAX)
        return TERN_EINVAL;
    uint8_t *b = 1 + len <= sizeof(stack) ? stack : malloc(1 + len);
    if (!b)
        return TERN_ENOMEM;
    b[0] = hold ? 1 : 0;
    memcpy(b + 1, client_id, len);
    int rv = tern_peers_send(c->peers, node, TERN_PEER_FLOW, b, 1 + len);
    if (b != stack)
        free(b);
    return rv;
}

void tern_cluster_flush_links(struct tern_cluster *c)
{
    if (c->peers)
        tern_peers_flush(c->peers);
}

uint64_t tern_cluster_forward_backlog(const struct tern_cluster *c, uint32_t node)
{
    return c->peers ? tern_peers_backlog(c->peers, node) : 0;
}
