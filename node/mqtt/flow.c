/* Flow control between online clients: backpressure before drops.
 *
 * When a PUBLISH leaves an online session's queue at its high-water mark (half
 * of queue_max or queue_bytes_max, tern_fsm_session_backlogged), the publisher
 * is held: not read (tern_conn_hold), so TCP slows it down, until that queue is
 * drained to its low-water mark (a quarter). For a persistent session the queue
 * is replicated state, so the publisher's node sees it fill and drain whichever
 * node owns the subscriber; a clean session's queue is on this node.
 *
 * A subscriber that makes no progress (its queue neither shrinks nor sends) for
 * slow_subscriber_timeout_ms is slow: its publishers are read again and its
 * queue meets the drop policy, counted and logged, until it drains again. So a
 * stuck device holds its publishers - and through them their other
 * subscribers - for at most that long.
 *
 * One entry per backlogged session (keyed by FSM and client id, never by
 * pointer: a session can end while its publishers wait), each with the
 * connections waiting on it. The entries are looked at once per loop turn and
 * from the connection timer: a lookup each, no pass over sessions.
 *
 * A clean session's queue can also fill from forwards of publishers on other
 * nodes (the peer links). Those publishers are remote waiters of the entry:
 * their node is asked to hold them (TERN_PEER_FLOW, flow_peer.c) and to read
 * them again when the entry ends or turns slow. A hold there is a lease, renewed
 * from here while it lasts, so a lost frame or a lost node costs at most the
 * lease, never a publisher held for ever.
 */
#include <stdlib.h>
#include <string.h>

#include "tern/frontend.h"
#include "tern/log.h"
#include "tern/topic.h"

/* A waiting publisher on another node: asked again if its forwards keep coming
 * this long after the last ask (its node could not hold it then: paused for
 * another reason, or the frame was lost), and renewed this often while held
 * (flow_peer.c lets a hold go after TERN_FLOW_LEASE_MS without one). */
#define REMOTE_ASK_AGAIN_MS 10
#define REMOTE_RENEW_MS 250
/* Remote waiters per entry; past it a publisher is not held (drop policy). */
#define REMOTE_MAX 1024

struct flow_remote {
    struct flow_remote *next;
    uint64_t asked_ms; /* last HOLD sent */
    uint32_t node;
    uint16_t id_len;
    char id[];
};

struct tern_flow {
    struct tern_flow *next;
    struct tern_fsm *fsm;
    struct tern_conn **waiting; /* held, each with a reference */
    uint32_t waiting_count, waiting_cap;
    struct flow_remote *remote; /* publishers held on other nodes */
    uint32_t remote_count;
    uint32_t queued_last; /* queue length when last seen */
    uint16_t sent_last;   /* the session's next packet id then */
    uint64_t progress_ms; /* when it last made progress (or the entry was made) */
    bool slow;            /* timed out: the drop policy applies */
    uint16_t id_len;
    char id[];
};

static struct tern_flow *flow_find(struct tern_node *n, struct tern_fsm *fsm,
                                   struct tern_bytes id)
{
    for (struct tern_flow *e = n->flow; e; e = e->next)
        if (e->fsm == fsm && e->id_len == id.len && memcmp(e->id, id.ptr, id.len) == 0)
            return e;
    return NULL;
}

static struct tern_flow *flow_add(struct tern_node *n, struct tern_fsm *fsm,
                                  const struct tern_fsm_session *s, uint64_t now)
{
    struct tern_bytes id = tern_fsm_session_client_id(s);
    struct tern_flow *e = calloc(1, sizeof(*e) + id.len);
    if (!e)
        return NULL;
    e->fsm = fsm;
    e->id_len = (uint16_t)id.len;
    memcpy(e->id, id.ptr, id.len);
    e->queued_last = tern_fsm_session_queued(s);
    e->sent_last = tern_fsm_session_next_packet_id(s);
    e->progress_ms = now;
    e->next = n->flow;
    n->flow = e;
    n->flow_count++;
    return e;
}

static void flow_wait(struct tern_flow *e, struct tern_conn *c)
{
    if (e->waiting_count == e->waiting_cap) {
        uint32_t cap = e->waiting_cap ? e->waiting_cap * 2 : 4;
        struct tern_conn **w = realloc(e->waiting, cap * sizeof(*w));
        if (!w)
            return; /* not held: the drop policy is the fallback */
        e->waiting = w;
        e->waiting_cap = cap;
    }
    if (!tern_conn_hold(c))
        return;
    tern_conn_ref(c);
    e->waiting[e->waiting_count++] = c;
}

static void remote_ask(struct tern_node *n, struct flow_remote *r, bool hold,
                       uint64_t now)
{
    r->asked_ms = now;
    if (n->stopping)
        return; /* the links are closing (or gone): the lease ends there */
    /* Best effort: a frame lost with its link is asked again or the lease ends. */
    (void)tern_cluster_flow(n->cluster, r->node, hold, (const uint8_t *)r->id, r->id_len);
}

static void flow_wait_remote(struct tern_node *n, struct tern_flow *e, uint32_t node,
                             struct tern_bytes id, uint64_t now)
{
    for (struct flow_remote *r = e->remote; r; r = r->next)
        if (r->node == node && r->id_len == id.len &&
            memcmp(r->id, id.ptr, id.len) == 0) {
            if (now >= r->asked_ms + REMOTE_ASK_AGAIN_MS)
                remote_ask(n, r, true, now); /* still sending: not held there yet */
            return;
        }
    if (e->remote_count >= REMOTE_MAX)
        return;
    struct flow_remote *r = malloc(sizeof(*r) + id.len);
    if (!r)
        return; /* not held: the drop policy is the fallback */
    r->node = node;
    r->id_len = (uint16_t)id.len;
    memcpy(r->id, id.ptr, id.len);
    r->next = e->remote;
    e->remote = r;
    e->remote_count++;
    remote_ask(n, r, true, now);
}

/* Reads the waiting publishers again. They may publish (and be held) at once:
 * the lists are taken off the entry first. */
static void flow_release(struct tern_node *n, struct tern_flow *e)
{
    struct flow_remote *r = e->remote;
    e->remote = NULL;
    e->remote_count = 0;
    while (r) {
        struct flow_remote *next = r->next;
        remote_ask(n, r, false, 0);
        free(r);
        r = next;
    }
    struct tern_conn **w = e->waiting;
    uint32_t count = e->waiting_count;
    e->waiting = NULL;
    e->waiting_count = e->waiting_cap = 0;
    for (uint32_t i = 0; i < count; i++) {
        tern_conn_unhold(w[i]);
        tern_conn_unref(w[i]);
    }
    free(w);
}

void tern_flow_hold(struct tern_conn *c, struct tern_fsm *fsm,
                    const struct tern_fsm_result *res)
{
    struct tern_node *n = c->node;
    if (!res->backlogged_count || n->cfg.slow_subscriber_timeout_ms == 0 ||
        c->state != TERN_CONN_ACTIVE || c->paused)
        return;
    uint64_t now = tern_mono_ms();
    for (uint8_t i = 0; i < res->backlogged_count; i++) {
        const struct tern_fsm_session *s = res->backlogged[i];
        struct tern_bytes id = tern_fsm_session_client_id(s);
        /* Its own subscription: holding it would also stop reading its acks. */
        if (id.len == c->client_id_len && memcmp(id.ptr, c->client_id, id.len) == 0)
            continue;
        struct tern_flow *e = flow_find(n, fsm, id);
        if (!e)
            e = flow_add(n, fsm, s, now);
        if (!e || e->slow)
            continue;
        flow_wait(e, c);
        return; /* one is enough: a publisher read again re-checks the others */
    }
}

void tern_flow_hold_remote(struct tern_node *n, uint32_t node,
                           struct tern_bytes publisher, const struct tern_fsm_result *res)
{
    if (!res->backlogged_count || n->cfg.slow_subscriber_timeout_ms == 0 ||
        publisher.len == 0 || publisher.len > UINT16_MAX)
        return;
    uint64_t now = tern_mono_ms();
    for (uint8_t i = 0; i < res->backlogged_count; i++) {
        const struct tern_fsm_session *s = res->backlogged[i];
        struct tern_bytes id = tern_fsm_session_client_id(s);
        struct tern_flow *e = flow_find(n, n->local, id);
        if (!e)
            e = flow_add(n, n->local, s, now);
        if (!e || e->slow)
            continue;
        flow_wait_remote(n, e, node, publisher, now);
        return; /* one is enough, as for a local publisher */
    }
}

struct match_ctx {
    struct tern_bytes topic;
    bool hit;
};

static int sub_matches(void *ctx, struct tern_bytes filter, uint8_t options,
                       uint32_t sub_id)
{
    (void)options;
    (void)sub_id;
    struct match_ctx *m = ctx;
    const char *f = (const char *)filter.ptr, *group;
    size_t len = filter.len, group_len;
    /* A group member may not be the one chosen: counted as matching. */
    tern_topic_shared_split(f, filter.len, &group, &group_len, &f, &len);
    m->hit = tern_topic_matches(f, len, (const char *)m->topic.ptr, m->topic.len);
    return m->hit;
}

/* The first entry of an online, not slow session that this PUBLISH matches:
 * with `full`, only one whose queue has no room for it. */
static struct tern_flow *flow_matching(struct tern_node *n, const struct tern_cmd *cmd,
                                       bool full)
{
    const struct tern_cmd_msg *m = &cmd->u.publish.msg;
    const struct tern_fsm_limits *l = tern_fsm_limits(n->local);
    for (struct tern_flow *e = n->flow; e; e = e->next) {
        if (e->fsm != n->local || e->slow)
            continue;
        const struct tern_fsm_session *s = tern_fsm_session_get(e->fsm, e->id, e->id_len);
        if (!s || !tern_fsm_session_online(s) ||
            (full && tern_fsm_session_queued(s) < l->queue_max &&
             tern_fsm_session_queued_bytes(s) + m->payload.len <= l->queue_bytes_max))
            continue;
        struct match_ctx mc = {m->topic, false};
        tern_fsm_session_subs_walk(s, sub_matches, &mc);
        if (mc.hit)
            return e;
    }
    return NULL;
}

bool tern_flow_would_drop(struct tern_node *n, const struct tern_cmd *cmd)
{
    return n->flow && flow_matching(n, cmd, true);
}

void tern_flow_hold_parked(struct tern_node *n, uint32_t node, const struct tern_cmd *cmd)
{
    struct tern_bytes publisher = cmd->u.publish.client_id;
    if (!n->flow || publisher.len == 0 || publisher.len > UINT16_MAX)
        return;
    struct tern_flow *e = flow_matching(n, cmd, false);
    if (e)
        flow_wait_remote(n, e, node, publisher, tern_mono_ms());
}

static void flow_free(struct tern_node *n, struct tern_flow **pp)
{
    struct tern_flow *e = *pp;
    *pp = e->next;
    n->flow_count--;
    flow_release(n, e);
    free(e);
}

static void flow_check_entries(struct tern_node *n)
{
    uint64_t now = tern_mono_ms();
    uint32_t timeout = n->cfg.slow_subscriber_timeout_ms;
    for (struct tern_flow **pp = &n->flow; *pp;) {
        struct tern_flow *e = *pp;
        const struct tern_fsm_session *s = tern_fsm_session_get(e->fsm, e->id, e->id_len);
        if (!s || !tern_fsm_session_online(s) || tern_fsm_session_drained(e->fsm, s)) {
            if (e->slow)
                TERN_LOGI("%.*s: subscriber caught up (queue drained)", (int)e->id_len,
                          e->id);
            flow_free(n, pp); /* releasing may add entries, at the head only */
            continue;
        }
        /* Progress: the queue shrank, or messages were sent (acknowledgements
         * made room) even if new ones filled it again since (parked forwards). */
        uint32_t queued = tern_fsm_session_queued(s);
        uint16_t sent = tern_fsm_session_next_packet_id(s);
        if (queued < e->queued_last || sent != e->sent_last)
            e->progress_ms = now;
        e->queued_last = queued;
        e->sent_last = sent;
        /* An entry made by a publisher released above is newer than `now`. */
        if (!e->slow && timeout && now >= e->progress_ms + timeout) {
            e->slow = true;
            n->stats.slow_subscribers++;
            TERN_LOGW("%.*s: no acknowledgement for %u ms with %u messages queued: its "
                      "publishers are read again and its queue meets drop_policy",
                      (int)e->id_len, e->id, timeout, queued);
            flow_release(n, e);
        }
        if (!e->slow)
            for (struct flow_remote *r = e->remote; r; r = r->next)
                if (now >= r->asked_ms + REMOTE_RENEW_MS)
                    remote_ask(n, r, true, now); /* the lease there */
        pp = &e->next;
    }
}

void tern_flow_check(struct tern_node *n)
{
    tern_flow_peer_check(n);
    if (n->flow)
        flow_check_entries(n);
    tern_flow_park_drain(n); /* after the entries: a drained or slow one lets them in */
}

void tern_flow_free(struct tern_node *n)
{
    while (n->flow)
        flow_free(n, &n->flow);
    tern_flow_peer_free(n);
    tern_flow_park_free(n);
}
