/* The replicated log: tern_cluster over canonical/raft (libuv I/O backend).
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
 * FSM refuses one whose predecessor has not applied: cluster/fsm_dedup.c). A
 * leader change may lose what the old leader had not committed, or commit it
 * late; so whenever the leader (or its term) changes, when the FSM refuses one
 * of ours as out of order, and when the oldest has waited retry_ms, the node
 * sends its whole outstanding tail again, in order, with the same ids: the
 * copies that had committed are then duplicates, the rest apply in sequence.
 * A proposal is completed only by its own apply, so its callback's TERN_OK
 * always means "applied".
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <unistd.h>
#include <time.h>

#include <raft.h>
#include <raft/uv.h>

#include "peer.h"
#include "raft_fsm.h"
#include "raft_transport.h"
#include "tern/cluster.h"
#include "tern/error.h"
#include "tern/log.h"

#define TIMER_MS 50
/* How far a new sequence (restart, or a hole nothing can fill) jumps past every
 * id the node used: proposals of the old sequence that commit late are then
 * duplicates. */
#define SEQ_JUMP (UINT64_C(1) << 20)
#define SEQ_MASK ((UINT64_C(1) << 40) - 1)

struct proposal {
    uint64_t id;
    tern_propose_cb cb;
    void *ctx;
    uint64_t sent_ms;             /* 0 = waiting to be sent */
    uint32_t gen;                 /* c->gen when last sent */
    uint64_t proposed_ns;         /* uv_hrtime() at tern_cluster_propose */
    struct proposal *next, *prev; /* in proposal order */
    struct proposal *hnext;
    size_t len;
    uint8_t bytes[];
};

struct buf {
    uint8_t *p;
    size_t len, cap;
};

struct apply_req {
    struct raft_apply req;
    struct tern_cluster *c;
};

struct tern_cluster {
    uv_loop_t *loop;
    uint32_t node_id;
    struct tern_cluster_config cfg;
    struct raft raft;
    struct raft_io io;
    struct tern_raft_transport transport; /* raft_uv_tcp with TCP_NODELAY */
    struct tern_raft_fsm rfsm;
    struct tern_fsm *fsm;
    struct tern_peers *peers;
    uv_idle_t idle;
    uv_timer_t timer;
    struct proposal *head, *tail;
    struct proposal **hash;
    size_t hcap, npending;
    struct buf fwd; /* leader: commands forwarded by followers, for the next entry */
    uint64_t seq;
    uint64_t retry_ms;
    /* Re-sending the outstanding tail: gen counts re-sends, so a refusal of a
     * copy sent before the last one asks for nothing more. */
    uint32_t gen;
    int resend;           /* the FSM refused one of ours as out of order */
    uint32_t sent_leader; /* leader, term and link connection the tail went to */
    uint64_t sent_term;
    uint64_t sent_ups;
    unsigned retry_backoff;    /* timer re-sends since our last proposal applied */
    uint64_t restores_settled; /* snapshots installed whose proposals were settled */
    struct proposal *applying; /* ours, while its command's effects run */
    uint64_t applied_own, entries;
    uint64_t commit_us[TERN_COMMIT_BUCKETS], commit_max_us, commit_sum_us;
    uint32_t down_declared[TERN_PEER_MAX]; /* node ids declared down, 0 = free */
    int closing;
    int push_commit;      /* leader: applied a follower's proposal (see push_commit) */
    uint32_t last_leader; /* for logging leader changes */
    int snapshot_forced;
    uint64_t snapshot_forced_from;
    uint64_t drain_deadline;
    int raft_started;
    /* Proposal ids are stamped only once the log this node had at start has been
     * applied, so the sequence continues above everything it proposed before. */
    int seq_ready;
    int barrier_sent;
    uint64_t start_index;
    uint64_t restores_seen;      /* snapshots installed whose members were linked */
    int seen_self;               /* this node was in the Raft configuration */
    int removed;                 /* ... and no longer is: refuses work */
    struct member_req *removing; /* leader: waiting for the node to learn it */
    struct raft_barrier barrier;
    void (*close_cb)(void *ctx);
    void *close_ctx;
};

static uint64_t now_ms(struct tern_cluster *c)
{
    return uv_now(c->loop);
}

/* Wall clock for commands this layer proposes itself (apply never reads it). */
static uint64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int buf_append(struct buf *b, const uint8_t *p, size_t len)
{
    if (b->len + len > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + len)
            cap *= 2;
        uint8_t *q = realloc(b->p, cap);
        if (!q)
            return TERN_ENOMEM;
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->len, p, len);
    b->len += len;
    return TERN_OK;
}

/* --- pending proposals ------------------------------------------------------ */

static size_t hslot(const struct tern_cluster *c, uint64_t id)
{
    return (size_t)((id * 0x9E3779B97F4A7C15ull) >> 32) & (c->hcap - 1);
}

static int hash_grow(struct tern_cluster *c)
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

static void pending_remove(struct tern_cluster *c, struct proposal *p)
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
static void kick(struct tern_cluster *c);

static void member_applied(struct tern_cluster *c, const struct tern_cmd *cmd,
                           const struct tern_fsm_result *res);
static void check_removed_marker(struct tern_cluster *c);

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
    pending_remove(c, pr);
    c->applied_own++;
    commit_latency(c, (uv_hrtime() - pr->proposed_ns) / 1000);
    if (pr->cb)
        pr->cb(pr->ctx, TERN_OK, res);
    free(pr);
}

/* A snapshot installed here holds the effects of our proposals up to its
 * highest sequence of this node, and this node will never apply them itself:
 * they are complete, as duplicates (applied; their results are not known). */
static void settle_restored(struct tern_cluster *c)
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
    kick(c);
}

/* Which of our pending proposals (if any) the command about to apply is. */
static void on_cmd_applying(void *ctx, const struct tern_cmd *cmd)
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

static void on_cmd_applied(void *ctx, const struct tern_cmd *cmd,
                           const struct tern_fsm_result *res)
{
    struct tern_cluster *c = ctx;
    c->applying = NULL;
    if (cmd->type == TERN_CMD_MEMBER_SET || cmd->type == TERN_CMD_MEMBER_DEL)
        member_applied(c, cmd, res);
    if (cmd->proposal_id >> 40 != c->node_id) {
        if (cmd->proposal_id && raft_state(&c->raft) == RAFT_LEADER) {
            c->push_commit = 1; /* a follower is waiting to learn this committed */
            kick(c);
        }
        return;
    }
    settle_restored(c);
    struct proposal *pr = pending_find(c, cmd->proposal_id);
    if (!pr)
        return; /* a duplicate of one completed already */
    if (res->out_of_order)
        out_of_order(c, pr);
    else
        complete(c, pr, res);
}

/* --- sending proposals ------------------------------------------------------- */

static uint32_t leader_id(struct tern_cluster *c)
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
    if (!a || tern_raft_entry_build(data, len, &rb) != TERN_OK) {
        free(a);
        return TERN_ENOMEM;
    }
    a->c = c;
    int rv = raft_apply(&c->raft, &a->req, &rb, 1, on_applied);
    if (rv != 0) {
        raft_free(rb.base);
        free(a);
        return TERN_ENOTLEADER;
    }
    c->entries++;
    return TERN_OK;
}

static void hash_insert(struct tern_cluster *c, struct proposal *p)
{
    if (c->npending >= c->hcap / 2)
        hash_grow(c);
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

/* Everything outstanding goes again, in order, on the next flush. */
static void resend_all(struct tern_cluster *c)
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
    struct tern_cmd start = {.type = TERN_CMD_ORIGIN_START, .now_ms = wall_ms()};
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
    resend_all(c);
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
static int check_seq_ready(struct tern_cluster *c)
{
    if (c->seq_ready)
        return 1;
    int state = raft_state(&c->raft);
    if (state == RAFT_LEADER && !c->barrier_sent) {
        c->barrier.data = c;
        if (raft_barrier(&c->raft, &c->barrier, on_barrier) == 0)
            c->barrier_sent = 1;
    }
    if (leader_id(c) == 0 || raft_last_applied(&c->raft) < c->start_index)
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

/* Sends every proposal waiting to be sent, in order, batched up to
 * max_batch_bytes per entry or frame. With nowhere to send them the idle handle
 * stops (the timer starts it again while any wait): no spinning. */
static void flush(struct tern_cluster *c)
{
    uint32_t leader = leader_id(c);
    bool self = leader == c->node_id && raft_state(&c->raft) == RAFT_LEADER;
    if (!self)
        c->fwd.len = 0; /* followers' proposals for a past term: they re-send */
    if (leader == 0 || !check_seq_ready(c) ||
        (!self && !tern_peers_connected(c->peers, leader))) {
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
        resend_all(c);
    } else if (c->resend) {
        resend_all(c);
    }
    struct buf out = {0};
    if (self && c->fwd.len) {
        out = c->fwd;
        memset(&c->fwd, 0, sizeof(c->fwd));
    }
    uint64_t now = now_ms(c);
    struct proposal *first = NULL;
    for (struct proposal *p = c->head; p; p = p->next) {
        if (p->sent_ms)
            continue;
        if (out.len + p->len > c->cfg.max_batch_bytes && out.len)
            break; /* the rest goes on the next turn */
        if (p->id == 0)
            stamp(c, p);
        if (buf_append(&out, p->bytes, p->len) != TERN_OK)
            break;
        if (!first)
            first = p;
        p->sent_ms = now;
        p->gen = c->gen;
    }
    if (out.len) {
        int rv =
            self ? append_entry(c, out.p, out.len)
                 : tern_peers_send(c->peers, leader, TERN_PEER_PROPOSE, out.p, out.len);
        if (rv != TERN_OK) {
            /* Not sent: again from the timer (the link is full or going). */
            for (struct proposal *p = first; p; p = p->next)
                if (p->sent_ms == now)
                    p->sent_ms = 0;
            free(out.p);
            uv_idle_stop(&c->idle);
            return;
        } else if (!self) {
            /* Clients wait for these: out now, behind the forwards batched
             * before them (also while stopping, with no prepare phase left). */
            tern_peers_flush(c->peers);
        }
    }
    free(out.p);
    /* Sent proposals are a prefix of the list: anything left over (batch
     * limit) is at the tail and goes on the next turn. */
    if (!c->tail || c->tail->sent_ms)
        uv_idle_stop(&c->idle);
}

static void on_push_barrier(struct raft_barrier *req, int status)
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
        return; /* flush is about to append an entry anyway */
    struct raft_barrier *b = malloc(sizeof(*b));
    if (b && raft_barrier(&c->raft, b, on_push_barrier) != 0)
        free(b);
}

static void on_idle(uv_idle_t *h)
{
    struct tern_cluster *c = h->data;
    if (c->push_commit)
        push_commit(c);
    flush(c);
    if (!c->head && !c->fwd.len)
        uv_idle_stop(&c->idle);
}

static void kick(struct tern_cluster *c)
{
    if (!uv_is_active((uv_handle_t *)&c->idle))
        uv_idle_start(&c->idle, on_idle);
}

/* A follower's proposals, arriving at the leader: validated, then appended with
 * the leader's own on this turn. A node that is no longer leader drops them; the
 * follower retries with the same ids. */
static void on_peer_frame(void *ctx, uint32_t from, uint8_t type, const uint8_t *data,
                          size_t len)
{
    struct tern_cluster *c = ctx;
    char errmsg[TERN_ERRMSG_SIZE];
    if (type == TERN_PEER_FORWARD) {
        struct tern_cmd cmd;
        size_t used;
        if (tern_cmd_decode(data, len, &cmd, &used, errmsg) == TERN_OK &&
            cmd.type == TERN_CMD_PUBLISH && c->cfg.on_forward)
            c->cfg.on_forward(c->cfg.forward_ctx, &cmd);
        return;
    }
    if (type != TERN_PEER_PROPOSE || raft_state(&c->raft) != RAFT_LEADER)
        return;
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
            if (buf_append(&c->fwd, data + off, used) != TERN_OK)
                break;
        off += used;
    }
    if (c->fwd.len)
        kick(c);
}

/* --- timer: retries, node-down detection ---------------------------------------- */

/* Which nodes were declared down (one NODE_DOWN each until their link is
 * back), by id: the Raft configuration changes at runtime. */
static uint32_t *down_slot(struct tern_cluster *c, uint32_t id)
{
    for (size_t i = 0; i < TERN_PEER_MAX; i++)
        if (c->down_declared[i] == id)
            return &c->down_declared[i];
    return NULL;
}

static void down_set(struct tern_cluster *c, uint32_t id, bool down)
{
    uint32_t *slot = down_slot(c, id);
    if (!down && slot)
        *slot = 0;
    else if (down && !slot && (slot = down_slot(c, 0)) != NULL)
        *slot = id;
}

static void declare_down(struct tern_cluster *c)
{
    if (raft_state(&c->raft) != RAFT_LEADER)
        return;
    /* Takeover does not wait for this (a client reconnecting elsewhere fences its
     * old connection by epoch); it only decides when the lost node's wills go
     * out, so it can afford to be sure. */
    uint64_t limit = (uint64_t)c->cfg.election_timeout_ms * 10;
    if (limit < 3000)
        limit = 3000;
    const struct raft_configuration *conf = &c->raft.configuration;
    for (unsigned i = 0; i < conf->n; i++) {
        uint32_t id = (uint32_t)conf->servers[i].id;
        if (id == c->node_id)
            continue;
        if (tern_peers_connected(c->peers, id)) {
            down_set(c, id, false);
            continue;
        }
        if (down_slot(c, id) || tern_peers_down_ms(c->peers, id) < limit)
            continue;
        struct tern_cmd cmd = {.type = TERN_CMD_NODE_DOWN, .now_ms = wall_ms()};
        cmd.u.node_down.node = id;
        if (tern_cluster_propose(c, &cmd, NULL, NULL) == TERN_OK) {
            TERN_LOGW("node %u unreachable for %llu ms: marking its sessions offline", id,
                      (unsigned long long)limit);
            down_set(c, id, true);
        }
    }
}

static void members_check(struct tern_cluster *c);
static uint64_t staggered(const struct tern_cluster *c, uint64_t v);
static unsigned snapshot_threshold(const struct tern_cluster *c);

static void on_timer(uv_timer_t *t)
{
    struct tern_cluster *c = t->data;
    uint64_t now = now_ms(c);
    settle_restored(c);
    /* Proposals apply in order, so the oldest tells: overdue (a frame lost
     * without a leader change), everything outstanding goes again. */
    bool resend = false;
    /* Each re-send without progress waits twice as long (up to 8 x): a slow
     * commit (a lossy network) must not be answered by ever more copies. */
    if (c->head && c->head->sent_ms &&
        now - c->head->sent_ms > c->retry_ms << c->retry_backoff) {
        resend_all(c);
        if (c->retry_backoff < 3)
            c->retry_backoff++;
        resend = true;
    }
    if (c->tail && !c->tail->sent_ms)
        resend = true;
    /* A new leader (or term) must get the outstanding tail now, not when the
     * oldest is overdue: flush re-sends it once it sees the change. */
    if (c->head &&
        (leader_id(c) != c->sent_leader || c->raft.current_term != c->sent_term))
        resend = true;
    check_seq_ready(c);
    uint32_t leader = leader_id(c);
    if (leader != c->last_leader) {
        if (leader == c->node_id)
            TERN_LOGI("raft: node %u is leader (term %llu)", c->node_id,
                      (unsigned long long)c->raft.current_term);
        else if (leader)
            TERN_LOGI("raft: leader is node %u (term %llu)", leader,
                      (unsigned long long)c->raft.current_term);
        else
            TERN_LOGW("raft: no leader (term %llu)",
                      (unsigned long long)c->raft.current_term);
        c->last_leader = leader;
    }
    if (c->snapshot_forced && raft_last_applied(&c->raft) > c->snapshot_forced_from + 1) {
        raft_set_snapshot_threshold(&c->raft, snapshot_threshold(c));
        c->snapshot_forced = 0;
    }
    if (!c->snapshot_forced && c->cfg.snapshot_bytes &&
        c->rfsm.applied_bytes - c->rfsm.snapshot_bytes_at >=
            staggered(c, c->cfg.snapshot_bytes))
        tern_cluster_snapshot_soon(c, NULL, NULL);
    if (resend)
        kick(c);
    declare_down(c);
    members_check(c);
}

/* --- setup --------------------------------------------------------------------- */

static int raft_dir(const char *data_dir, char *out, size_t cap)
{
    int n = snprintf(out, cap, "%s/raft", data_dir);
    if (n < 0 || (size_t)n >= cap)
        return TERN_EINVAL;
    if (mkdir(out, 0755) != 0 && errno != EEXIST)
        return TERN_EIO;
    return TERN_OK;
}

static int split_addr(const char *s, struct tern_peer_addr *a)
{
    const char *colon = strrchr(s, ':');
    if (!colon || colon == s || (size_t)(colon - s) >= sizeof(a->host))
        return TERN_EINVAL;
    memcpy(a->host, s, (size_t)(colon - s));
    a->host[colon - s] = '\0';
    a->port = (uint16_t)atoi(colon + 1);
    return TERN_OK;
}

static int bootstrap(struct tern_cluster *c, const char *self_addr, char *errmsg)
{
    struct raft_configuration conf;
    raft_configuration_init(&conf);
    if (c->cfg.member_count == 0)
        raft_configuration_add(&conf, c->node_id, self_addr, RAFT_VOTER);
    for (uint32_t i = 0; i < c->cfg.member_count; i++)
        raft_configuration_add(&conf, c->cfg.members[i].id, c->cfg.members[i].raft,
                               RAFT_VOTER);
    int rv = raft_bootstrap(&c->raft, &conf);
    raft_configuration_close(&conf);
    if (rv != 0 && rv != RAFT_CANTBOOTSTRAP) {
        snprintf(errmsg, TERN_ERRMSG_SIZE, "raft: bootstrap: %s", raft_strerror(rv));
        return rv;
    }
    return 0;
}

/* Every snapshot closes libraft's open log segment, as does a full segment, and
 * libraft 0.15 closes a segment's kernel AIO context with io_destroy() on the
 * loop thread: that call waits for an RCU grace period, ~32 ms here even on an
 * idle machine, and the node serves nothing meanwhile. A commit needs two
 * nodes, so nodes do not take snapshots at the same point of the log: each
 * uses the configured bounds (raft_snapshot_threshold entries, and
 * raft_snapshot_bytes of applied entries, whichever comes first) plus 0, 25, 50
 * or 75% by its position among the members. Measured (three nodes, 20,000
 * persistent QoS 1 msg/s, 30 s runs): PUBACK p99 29-32 ms with one threshold,
 * 17-22 ms staggered (docs/benchmarks.md has the rest). */
static uint64_t staggered(const struct tern_cluster *c, uint64_t v)
{
    uint32_t pos = c->node_id;
    for (uint32_t i = 0; i < c->cfg.member_count; i++)
        if (c->cfg.members[i].id == c->node_id)
            pos = i;
    return v + v * (pos % 4) / 4;
}

static unsigned snapshot_threshold(const struct tern_cluster *c)
{
    uint64_t t = staggered(c, c->cfg.snapshot_threshold);
    return t > UINT32_MAX ? UINT32_MAX : (unsigned)t;
}

/* The OS reason a listener on addr fails, found by binding it once more (libraft
 * 0.15 reports a failed listen as a bare RAFT_IOERR); NULL if it binds now. */
static const char *bind_reason(const char *addr)
{
    struct tern_peer_addr a;
    struct sockaddr_in sa = {.sin_family = AF_INET};
    if (split_addr(addr, &a) != TERN_OK || inet_pton(AF_INET, a.host, &sa.sin_addr) != 1)
        return "not an IPv4 address and port";
    sa.sin_port = htons(a.port);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    int err = 0;
    if (fd < 0)
        return strerror(errno);
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(fd, 1) != 0)
        err = errno;
    close(fd);
    return err ? strerror(err) : NULL;
}

static int start_raft(struct tern_cluster *c, char *errmsg)
{
    char dir[512];
    const char *self_addr = c->cfg.raft_address;
    for (uint32_t i = 0; i < c->cfg.member_count; i++)
        if (c->cfg.members[i].id == c->node_id)
            self_addr = c->cfg.members[i].raft;
    if (raft_dir(c->cfg.data_dir, dir, sizeof(dir)) != TERN_OK) {
        snprintf(errmsg, TERN_ERRMSG_SIZE, "data_dir: cannot create %.200s", dir);
        return TERN_EIO;
    }
    int rv = tern_raft_transport_init(&c->transport, c->loop);
    if (rv == 0)
        rv = raft_uv_init(&c->io, c->loop, dir, &c->transport.outer);
    /* libraft queues messages for a peer while it waits to reconnect (every
     * heartbeat's AppendEntries to a node it cannot reach): retry sooner, so the
     * queue is trimmed sooner. A 20 s cut at 40 msg/s: 30 -> 12 MB. */
    if (rv == 0)
        raft_uv_set_connect_retry_delay(&c->io, 100);
    if (rv != 0) {
        snprintf(errmsg, TERN_ERRMSG_SIZE, "raft: cannot open %.200s: %s", dir,
                 raft_strerror(rv));
        return TERN_EIO;
    }
    /* Fewer, larger segments: closing one stalls the loop (see staggered()). */
    if (c->cfg.segment_bytes)
        raft_uv_set_segment_size(&c->io, (size_t)c->cfg.segment_bytes);
    tern_raft_fsm_init(&c->rfsm, c->fsm, on_cmd_applied, c);
    /* libraft 0.15's raft_uv_init fills async_work but leaves io version 1
     * (later releases say 2), and raft_init wants 2 for an FSM with
     * snapshot_async. */
    bool fork = c->cfg.snapshot_fork != TERN_SNAPSHOT_FORK_NEVER && c->io.async_work;
    if (fork && c->io.version < 2)
        c->io.version = 2;
    tern_raft_fsm_set_fork(&c->rfsm,
                           fork ? c->cfg.snapshot_fork : TERN_SNAPSHOT_FORK_NEVER);
    c->rfsm.on_applying = on_cmd_applying;
    rv = raft_init(&c->raft, &c->io, &c->rfsm.raft, c->node_id, self_addr);
    c->rfsm.r = &c->raft; /* for the entry index in a fatal apply error */
    if (rv != 0) {
        snprintf(errmsg, TERN_ERRMSG_SIZE, "raft: %s", raft_errmsg(&c->raft));
        return TERN_EIO;
    }
    raft_set_election_timeout(&c->raft, c->cfg.election_timeout_ms);
    raft_set_heartbeat_timeout(&c->raft, c->cfg.heartbeat_timeout_ms);
    raft_set_snapshot_threshold(&c->raft, snapshot_threshold(c));
    raft_set_snapshot_trailing(&c->raft, c->cfg.snapshot_trailing);
    raft_set_pre_vote(&c->raft, true);

    /* Every member bootstraps the same static configuration; on a restart the
     * log already has one and bootstrap says so (RAFT_CANTBOOTSTRAP). A joining
     * node bootstraps nothing: the leader's raft_add brings it the
     * configuration (a configuration of its own would let it elect itself). */
    if (!c->cfg.join)
        rv = bootstrap(c, self_addr, errmsg);
    if (rv != 0)
        return TERN_EIO;
    rv = raft_start(&c->raft);
    if (rv != 0) {
        /* libraft leaves its own message empty when the I/O backend failed (the
         * listener, most often): the reason is in the backend's. */
        const char *why = raft_errmsg(&c->raft);
        if (!why[0])
            why = c->io.errmsg[0] ? c->io.errmsg : c->transport.outer.errmsg;
        if (!why[0] && rv == RAFT_IOERR && bind_reason(self_addr))
            why = bind_reason(self_addr);
        snprintf(errmsg, TERN_ERRMSG_SIZE, "raft: start on %.64s: %.150s", self_addr,
                 why[0] ? why : raft_strerror(rv));
        return TERN_EIO;
    }
    c->raft_started = 1;
    c->start_index = raft_last_index(&c->raft);
    return TERN_OK;
}

int tern_cluster_new(struct tern_cluster **out, uv_loop_t *loop,
                     const struct tern_cluster_config *cfg,
                     const struct tern_fsm_observer *obs, char *errmsg)
{
    struct tern_cluster *c = calloc(1, sizeof(*c));
    if (!c)
        return TERN_ENOMEM;
    c->loop = loop;
    c->node_id = cfg->node_id;
    c->cfg = *cfg;
    c->retry_ms = (uint64_t)cfg->election_timeout_ms * 2 + 200;
    c->fsm = tern_fsm_new(cfg->node_id, &cfg->limits, obs);
    if (!c->fsm || hash_grow(c) != TERN_OK) {
        snprintf(errmsg, TERN_ERRMSG_SIZE, "cannot allocate the state machine");
        tern_fsm_free(c->fsm);
        free(c->hash);
        free(c);
        return TERN_ENOMEM;
    }
    struct tern_peer_addr addrs[TERN_CLUSTER_MEMBERS_MAX];
    for (uint32_t i = 0; i < cfg->member_count; i++) {
        addrs[i].id = cfg->members[i].id;
        if (split_addr(cfg->members[i].peer, &addrs[i]) != TERN_OK) {
            snprintf(errmsg, TERN_ERRMSG_SIZE, "members: bad peer address \"%.64s\"",
                     cfg->members[i].peer);
            return TERN_EINVAL;
        }
    }
    check_removed_marker(c);
    uv_idle_init(loop, &c->idle);
    c->idle.data = c;
    uv_timer_init(loop, &c->timer);
    c->timer.data = c;
    *out = c;
    int rv = tern_peers_new(&c->peers, loop, c->node_id, addrs, cfg->member_count,
                            on_peer_frame, c, errmsg);
    if (rv != TERN_OK)
        return rv;
    if (cfg->peer_frame_bytes_max)
        tern_peers_set_frame_max(c->peers, cfg->peer_frame_bytes_max);
    rv = start_raft(c, errmsg);
    if (rv != TERN_OK)
        return rv;
    uv_timer_start(&c->timer, on_timer, TIMER_MS, TIMER_MS);
    /* This node's proposals begin a new sequence (above any it used before a
     * restart); this one is stamped first. */
    struct tern_cmd start = {.type = TERN_CMD_ORIGIN_START, .now_ms = wall_ms()};
    tern_cluster_propose(c, &start, NULL, NULL);
    /* Connections this node had before it stopped are gone: mark their sessions
     * offline (and publish their wills) once the log has caught up to here. */
    struct tern_cmd down = {.type = TERN_CMD_NODE_DOWN, .now_ms = wall_ms()};
    down.u.node_down.node = c->node_id;
    tern_cluster_propose(c, &down, NULL, NULL);
    return TERN_OK;
}

/* An encoded, unstamped proposal, linked nowhere yet. */
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
    if (c->npending >= c->hcap && hash_grow(c) != TERN_OK)
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
    kick(c);
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
    uint32_t leader = leader_id(m);
    if (leader == 0 || c->removed)
        return 0;
    return leader == c->node_id || tern_peers_connected(c->peers, leader);
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

void tern_cluster_flush_links(struct tern_cluster *c)
{
    if (c->peers)
        tern_peers_flush(c->peers);
}

uint64_t tern_cluster_forward_backlog(const struct tern_cluster *c, uint32_t node)
{
    return c->peers ? tern_peers_backlog(c->peers, node) : 0;
}

void tern_cluster_status(const struct tern_cluster *c, struct tern_cluster_status *st)
{
    struct tern_cluster *m = (struct tern_cluster *)c;
    memset(st, 0, sizeof(*st));
    if (!c->raft_started)
        return;
    st->state = raft_state(&m->raft);
    st->leader = leader_id(m);
    st->term = m->raft.current_term;
    st->last_index = raft_last_index(&m->raft);
    st->applied_index = raft_last_applied(&m->raft);
    st->pending = c->npending;
    st->proposals = c->applied_own;
    st->entries = c->entries;
    memcpy(st->commit_us, c->commit_us, sizeof(st->commit_us));
    st->commit_max_us = c->commit_max_us;
    st->commit_sum_us = c->commit_sum_us;
    st->snapshots = c->rfsm.snapshots;
    st->snapshot_max_us = c->rfsm.snapshot_max_us;
    memcpy(st->snapshot_stall_us, c->rfsm.stall_us, sizeof(st->snapshot_stall_us));
    st->snapshot_stall_sum_us = c->rfsm.stall_sum_us;
    st->snapshot_stall_max_us = c->rfsm.stall_max_us;
}

size_t tern_cluster_members(const struct tern_cluster *c, struct tern_member_status *out,
                            size_t cap)
{
    struct tern_cluster *m = (struct tern_cluster *)c;
    if (!c->raft_started)
        return 0;
    uint32_t leader = leader_id(m);
    const struct raft_configuration *conf = &m->raft.configuration;
    size_t n = 0;
    for (unsigned i = 0; i < conf->n && n < cap; i++, n++) {
        struct tern_member_status *s = &out[n];
        memset(s, 0, sizeof(*s));
        s->id = (uint32_t)conf->servers[i].id;
        snprintf(s->raft, sizeof(s->raft), "%s", conf->servers[i].address);
        s->role = conf->servers[i].role;
        s->leader = s->id == leader;
        s->self = s->id == c->node_id;
        s->link_up = s->self || tern_peers_connected(c->peers, s->id);
        if (raft_state(&m->raft) == RAFT_LEADER && m->raft.leader_state.progress)
            s->match_index = m->raft.leader_state.progress[i].match_index;
    }
    return n;
}

struct transfer_req {
    struct raft_transfer req;
    void (*cb)(void *ctx, int status);
    void *ctx;
};

static void on_transferred(struct raft_transfer *req)
{
    struct transfer_req *t = (struct transfer_req *)req;
    struct tern_cluster *c = req->data;
    uint32_t leader = leader_id(c);
    if (t->cb)
        t->cb(t->ctx, leader != 0 && leader != c->node_id ? TERN_OK : TERN_EAGAIN);
    free(t);
}

int tern_cluster_transfer(struct tern_cluster *c, uint32_t to,
                          void (*cb)(void *ctx, int status), void *ctx)
{
    if (!c->raft_started || raft_state(&c->raft) != RAFT_LEADER)
        return TERN_ENOTLEADER;
    struct transfer_req *t = calloc(1, sizeof(*t));
    if (!t)
        return TERN_ENOMEM;
    t->cb = cb;
    t->ctx = ctx;
    t->req.data = c;
    int rv = raft_transfer(&c->raft, &t->req, to, on_transferred);
    if (rv != 0) {
        free(t);
        return rv == RAFT_NOTLEADER ? TERN_ENOTLEADER : TERN_EINVAL;
    }
    return TERN_OK;
}

int tern_cluster_snapshot_soon(struct tern_cluster *c, tern_propose_cb cb, void *ctx)
{
    /* libraft 0.15 has no "snapshot now", and snapshots only after applying an
     * entry: lower the threshold until the next snapshot has been taken (the
     * timer puts it back) and propose an empty entry. */
    if (!c->raft_started)
        return TERN_EAGAIN;
    c->snapshot_forced_from = raft_last_applied(&c->raft);
    c->snapshot_forced = 1;
    raft_set_snapshot_threshold(&c->raft, 1);
    struct tern_cmd cmd = {.type = TERN_CMD_BARRIER, .now_ms = wall_ms()};
    return tern_cluster_propose(c, &cmd, cb, ctx);
}

/* --- membership ------------------------------------------------------------- */

static void member_link(struct tern_cluster *c, const struct tern_fsm_member *m)
{
    struct tern_peer_addr a = {.id = m->id};
    if (m->id == c->node_id)
        return;
    if (split_addr(m->peer, &a) != TERN_OK || tern_peers_add(c->peers, &a) != TERN_OK)
        TERN_LOGW("member %u: cannot open a peer link to \"%s\"", m->id, m->peer);
}

static int member_link_visit(void *ctx, const struct tern_fsm_member *m)
{
    member_link(ctx, m);
    return 0;
}

/* data_dir/removed marks a node removed across restarts: once out of the
 * configuration no leader contacts it, so its log alone would never tell it. */
static int removed_path(const struct tern_cluster *c, char *out, size_t cap)
{
    int n = snprintf(out, cap, "%s/removed", c->cfg.data_dir);
    return n > 0 && (size_t)n < cap ? TERN_OK : TERN_EINVAL;
}

static void removed_log(const struct tern_cluster *c)
{
    TERN_LOGE("this node (id %u) is not a member of the cluster any more: remove its "
              "data directory to join again as a new member",
              c->node_id);
}

static void mark_removed(struct tern_cluster *c)
{
    char path[512];
    if (c->removed)
        return;
    c->removed = 1;
    removed_log(c);
    FILE *f = removed_path(c, path, sizeof(path)) == TERN_OK ? fopen(path, "w") : NULL;
    if (f) {
        fprintf(f, "node %u was removed from the cluster\n", c->node_id);
        fclose(f);
    } else {
        TERN_LOGW("cannot write %s: a restart will not know this node was removed", path);
    }
}

static void check_removed_marker(struct tern_cluster *c)
{
    char path[512];
    struct stat st;
    if (removed_path(c, path, sizeof(path)) == TERN_OK && stat(path, &st) == 0) {
        c->removed = 1;
        removed_log(c);
    }
}

static void member_applied(struct tern_cluster *c, const struct tern_cmd *cmd,
                           const struct tern_fsm_result *res)
{
    uint32_t id = cmd->u.member.id;
    if (res->status != TERN_OK || res->duplicate)
        return;
    if (cmd->type == TERN_CMD_MEMBER_SET) {
        const struct tern_fsm_member *m = tern_fsm_member_get(c->fsm, id);
        if (m)
            member_link(c, m);
    } else if (id == c->node_id) {
        mark_removed(c);
    } else {
        tern_peers_remove(c->peers, id);
    }
}

/* On the timer: links to members a snapshot brought (a restore calls no apply
 * hook), and whether this node is still in the Raft configuration. A node
 * counts as removed only once it has seen itself in it: a joining node's
 * configuration lacks it until the leader's raft_add entry arrives. */
static void removal_step(struct tern_cluster *c);

static void members_check(struct tern_cluster *c)
{
    if (!c->raft_started || c->closing)
        return;
    if (c->removing)
        removal_step(c);
    if (c->rfsm.restores != c->restores_seen) {
        c->restores_seen = c->rfsm.restores;
        tern_fsm_members_walk(c->fsm, member_link_visit, c);
    }
    const struct raft_configuration *conf = &c->raft.configuration;
    bool in = false;
    for (unsigned i = 0; i < conf->n; i++)
        in = in || conf->servers[i].id == c->node_id;
    if (in)
        c->seen_self = 1;
    else if (c->seen_self && conf->n > 0)
        mark_removed(c);
}

int tern_cluster_removed(const struct tern_cluster *c)
{
    return c->removed;
}

struct member_req {
    struct raft_change change; /* first: the raft callback gets this pointer */
    struct tern_cluster *c;
    uint32_t id;
    uint64_t del_index; /* remove: index of the MEMBER_DEL entry */
    uint64_t deadline;  /* remove: when to stop waiting for the node */
    char raft[sizeof(((struct tern_member *)0)->raft)];
    void (*cb)(void *ctx, int status);
    void *ctx;
};

static int from_raft(int rv)
{
    switch (rv) {
    case 0:
        return TERN_OK;
    case RAFT_NOTLEADER:
    case RAFT_LEADERSHIPLOST:
        return TERN_ENOTLEADER;
    case RAFT_CANTCHANGE:
        return TERN_EAGAIN;
    case RAFT_BADID:
    case RAFT_NOTFOUND:
        return TERN_ENOTFOUND;
    case RAFT_DUPLICATEID:
    case RAFT_DUPLICATEADDRESS:
    case RAFT_BADROLE:
        return TERN_EINVAL;
    case RAFT_SHUTDOWN:
        return TERN_ESHUTDOWN;
    case RAFT_NOMEM:
        return TERN_ENOMEM;
    default:
        return TERN_EIO;
    }
}

static void member_done(struct member_req *r, int status)
{
    if (status != TERN_OK)
        TERN_LOGW("membership change for node %u failed: %s", r->id,
                  tern_strerror(status));
    if (r->cb)
        r->cb(r->ctx, status);
    free(r);
}

static int member_status(int status, const struct tern_fsm_result *res)
{
    return status != TERN_OK ? status : res->status;
}

static void on_assigned(struct raft_change *req, int status)
{
    struct member_req *r = (struct member_req *)req;
    if (status == 0)
        TERN_LOGI("node %u is a voter", r->id);
    member_done(r, from_raft(status));
}

static void on_added(struct raft_change *req, int status)
{
    struct member_req *r = (struct member_req *)req;
    if (status != 0) {
        member_done(r, from_raft(status));
        return;
    }
    /* libraft promotes it once it has caught up (log or snapshot). */
    TERN_LOGI("node %u added as a spare: catching up", r->id);
    int rv = raft_assign(&r->c->raft, &r->change, r->id, RAFT_VOTER, on_assigned);
    if (rv != 0)
        member_done(r, from_raft(rv));
}

/* Role of id in the Raft configuration, -1 if absent. */
static int config_role(struct tern_cluster *c, uint32_t id)
{
    const struct raft_configuration *conf = &c->raft.configuration;
    for (unsigned i = 0; i < conf->n; i++)
        if (conf->servers[i].id == id)
            return conf->servers[i].role;
    return -1;
}

static bool in_config(struct tern_cluster *c, uint32_t id)
{
    return config_role(c, id) >= 0;
}

/* A node already there as a non-voter (an earlier add whose catch-up gave up)
 * is only promoted again. */
static void on_member_set(void *ctx, int status, const struct tern_fsm_result *res)
{
    struct member_req *r = ctx;
    struct raft *raft = &r->c->raft;
    status = member_status(status, res);
    int rv = status;
    if (status == TERN_OK && in_config(r->c, r->id))
        rv = from_raft(raft_assign(raft, &r->change, r->id, RAFT_VOTER, on_assigned));
    else if (status == TERN_OK)
        rv = from_raft(raft_add(raft, &r->change, r->id, r->raft, on_added));
    if (rv != TERN_OK)
        member_done(r, rv);
}

static bool addr_ok(const char *s)
{
    struct tern_peer_addr a;
    return strlen(s) <= TERN_MEMBER_ADDR_MAX && split_addr(s, &a) == TERN_OK && a.port;
}

int tern_cluster_add_member(struct tern_cluster *c, const struct tern_member *m,
                            void (*cb)(void *ctx, int status), void *ctx)
{
    if (c->closing || !c->raft_started || raft_state(&c->raft) != RAFT_LEADER)
        return TERN_ENOTLEADER;
    if (m->id == 0 || !addr_ok(m->raft) || !addr_ok(m->peer) ||
        (m->mqtt[0] && !addr_ok(m->mqtt)))
        return TERN_EINVAL;
    if (config_role(c, m->id) == RAFT_VOTER)
        return TERN_EINVAL; /* already a member */
    struct member_req *r = calloc(1, sizeof(*r));
    if (!r)
        return TERN_ENOMEM;
    *r = (struct member_req){.c = c, .id = m->id, .cb = cb, .ctx = ctx};
    snprintf(r->raft, sizeof(r->raft), "%s", m->raft);
    struct tern_cmd cmd = {.type = TERN_CMD_MEMBER_SET, .now_ms = wall_ms()};
    cmd.u.member.id = m->id;
    cmd.u.member.raft = (struct tern_bytes){(const uint8_t *)m->raft, strlen(m->raft)};
    cmd.u.member.peer = (struct tern_bytes){(const uint8_t *)m->peer, strlen(m->peer)};
    cmd.u.member.mqtt = (struct tern_bytes){(const uint8_t *)m->mqtt, strlen(m->mqtt)};
    int rv = tern_cluster_propose(c, &cmd, on_member_set, r);
    if (rv != TERN_OK)
        free(r);
    return rv;
}

static void on_removed(struct raft_change *req, int status)
{
    struct member_req *r = (struct member_req *)req;
    if (status == 0)
        TERN_LOGI("node %u left the Raft configuration", r->id);
    member_done(r, from_raft(status));
}

/* MEMBER_DEL goes first, while the node is still in the configuration: it
 * applies it too, so it learns it was removed (and remembers it on disk) instead
 * of waiting for a leader that never contacts it again. It learns that the entry
 * committed only from a later AppendEntries, so the leader appends a barrier and
 * waits (the timer polls, bounded) until the node has that one too: then it
 * leaves the Raft configuration. */
static uint64_t match_of(struct tern_cluster *c, uint32_t id)
{
    const struct raft_configuration *conf = &c->raft.configuration;
    if (raft_state(&c->raft) != RAFT_LEADER || !c->raft.leader_state.progress)
        return 0;
    for (unsigned i = 0; i < conf->n; i++)
        if (conf->servers[i].id == id)
            return c->raft.leader_state.progress[i].match_index;
    return 0;
}

static void removal_step(struct tern_cluster *c)
{
    struct member_req *r = c->removing;
    bool self = r->id == c->node_id;
    if (r->del_index == 0)
        return; /* MEMBER_DEL not applied yet */
    if (!self && match_of(c, r->id) <= r->del_index && now_ms(c) < r->deadline)
        return;
    c->removing = NULL;
    int rv = from_raft(raft_remove(&c->raft, &r->change, r->id, on_removed));
    if (rv != TERN_OK)
        member_done(r, rv);
}

static void on_del_applied(void *ctx, int status, const struct tern_fsm_result *res)
{
    struct member_req *r = ctx;
    struct tern_cluster *c = r->c;
    status = member_status(status, res);
    if (status != TERN_OK) {
        c->removing = NULL;
        member_done(r, status);
        return;
    }
    /* Called while the entry applies: the last applied index is the one before. */
    r->del_index = raft_last_applied(&c->raft) + 1;
    r->deadline = now_ms(c) + (uint64_t)c->cfg.election_timeout_ms * 4;
    struct raft_barrier *b = malloc(sizeof(*b));
    if (b && raft_barrier(&c->raft, b, on_push_barrier) != 0)
        free(b);
}

int tern_cluster_removal_check(const struct tern_cluster *c, uint32_t id, char *why,
                               size_t cap)
{
    const struct raft_configuration *conf = &c->raft.configuration;
    unsigned voters = 0, up = 0;
    bool voter = false;
    for (unsigned i = 0; i < conf->n; i++) {
        uint32_t s = (uint32_t)conf->servers[i].id;
        if (conf->servers[i].role != RAFT_VOTER)
            continue;
        if (s == id) {
            voter = true;
            continue;
        }
        voters++;
        up += s == c->node_id || tern_peers_connected(c->peers, s);
    }
    if (!voter)
        return TERN_OK; /* a spare or standby: no vote to lose */
    if (voters == 0) {
        snprintf(why, cap,
                 "node %u is the last voter: removing it would leave no cluster", id);
        return TERN_ELIMIT;
    }
    if (up < voters / 2 + 1) {
        snprintf(why, cap,
                 "removing node %u would lose the quorum: %u of the %u voters left are "
                 "reachable, %u needed",
                 id, up, voters, voters / 2 + 1);
        return TERN_ELIMIT;
    }
    return TERN_OK;
}

int tern_cluster_remove_member(struct tern_cluster *c, uint32_t id,
                               void (*cb)(void *ctx, int status), void *ctx)
{
    char why[160];
    if (c->closing || !c->raft_started || raft_state(&c->raft) != RAFT_LEADER)
        return TERN_ENOTLEADER;
    if (id == 0 || !in_config(c, id))
        return TERN_ENOTFOUND;
    if (c->removing)
        return TERN_EAGAIN;
    if (tern_cluster_removal_check(c, id, why, sizeof(why)) != TERN_OK)
        return TERN_ELIMIT;
    struct member_req *r = calloc(1, sizeof(*r));
    if (!r)
        return TERN_ENOMEM;
    *r = (struct member_req){.c = c, .id = id, .cb = cb, .ctx = ctx};
    struct tern_cmd cmd = {.type = TERN_CMD_MEMBER_DEL, .now_ms = wall_ms()};
    cmd.u.member.id = id;
    int rv = tern_cluster_propose(c, &cmd, on_del_applied, r);
    if (rv != TERN_OK) {
        free(r);
        return rv;
    }
    c->removing = r; /* one removal at a time; the timer moves it on */
    /* Its sessions go offline (wills out, clients fenced: they reconnect
     * elsewhere). In the same entry as MEMBER_DEL, so the node applies it too. */
    struct tern_cmd down = {.type = TERN_CMD_NODE_DOWN, .now_ms = cmd.now_ms};
    down.u.node_down.node = id;
    tern_cluster_propose(c, &down, NULL, NULL);
    return TERN_OK;
}

static void fail_pending(struct tern_cluster *c)
{
    while (c->head) {
        struct proposal *p = c->head;
        pending_remove(c, p);
        if (p->cb)
            p->cb(p->ctx, TERN_ESHUTDOWN, NULL);
        free(p);
    }
}

/* Raft's I/O may still close handles after raft_close's callback, so the memory
 * goes only in tern_cluster_free(), once the loop has stopped. */
static void finish_close(struct tern_cluster *c)
{
    if (c->close_cb)
        c->close_cb(c->close_ctx);
}

void tern_cluster_free(struct tern_cluster *c)
{
    if (!c)
        return;
    tern_fsm_free(c->fsm);
    free(c->hash);
    free(c->fwd.p);
    free(c);
}

static void on_raft_closed(struct raft *r)
{
    struct tern_cluster *c = r->data;
    raft_uv_close(&c->io);
    tern_raft_transport_close(&c->transport);
    finish_close(c);
}

static void on_handle_closed(uv_handle_t *h)
{
    (void)h;
}

static void close_now(struct tern_cluster *c)
{
    fail_pending(c);
    if (c->removing) { /* its MEMBER_DEL applied; the removal itself never ran */
        struct member_req *r = c->removing;
        c->removing = NULL;
        member_done(r, TERN_ESHUTDOWN);
    }
    uv_close((uv_handle_t *)&c->idle, on_handle_closed);
    uv_close((uv_handle_t *)&c->timer, on_handle_closed);
    if (c->peers)
        tern_peers_close(c->peers);
    if (c->raft_started) {
        c->raft.data = c;
        tern_raft_fsm_cancel(&c->rfsm); /* raft_close waits for the snapshot's work */
        raft_close(&c->raft, on_raft_closed);
    } else {
        finish_close(c);
    }
}

/* Graceful stop waits (bounded) until this node's last proposals - the session
 * closes of its departing clients - are applied and nothing is being appended:
 * closing libraft 0.15 with appends in flight crashed it here (a NULL read in
 * raft_close), and applying them first is what a clean stop should do anyway. */
static void on_drain(uv_timer_t *t)
{
    struct tern_cluster *c = t->data;
    bool idle =
        c->npending == 0 && c->fwd.len == 0 &&
        (!c->raft_started || raft_last_applied(&c->raft) >= raft_last_index(&c->raft));
    if (idle || now_ms(c) >= c->drain_deadline) {
        uv_timer_stop(&c->timer);
        close_now(c);
        return;
    }
    flush(c);
}

void tern_cluster_close(struct tern_cluster *c, void (*cb)(void *ctx), void *ctx)
{
    c->close_cb = cb;
    c->close_ctx = ctx;
    c->drain_deadline = now_ms(c) + 2000;
    uv_timer_stop(&c->timer);
    uv_timer_start(&c->timer, on_drain, 0, 10);
    c->closing = 1; /* no new proposals from here on */
}
