/* Publishing into the FSM, and the acknowledgements that drain in-flight windows.
 *
 * A publish is matched against the subscription tree, the matches are sorted by
 * subscription seq (the tree's visit order is not replicated state), then:
 *  - plain subscriptions: one copy per session, with the highest granted QoS and
 *    the identifiers of all its matching subscriptions;
 *  - shared subscriptions: per (group, inner filter) one member, round robin
 *    over the online members (or, if none is online, over all of them).
 * Each copy is enqueued, which delivers or queues it.
 *
 * A group may also have clean members on other nodes (or in the node-local
 * FSM), which this FSM knows only as routes ("$share/GROUP/FILTER", node). When
 * a publish is not told which groups it serves (fsm_select), the group's member
 * is chosen here among its sessions AND its routes' nodes, each node counting
 * as one online member; a node chosen gets the copy through the shared_route
 * effect and picks one of its clean members itself. A group that only has
 * routes here has no replicated counter: its node is chosen by a hash of the
 * message id, which every replica computes alike. An apply that is given a
 * selection (the node-local FSMs: the choice was made where the message
 * entered) serves only the groups it lists. */
#include <stdlib.h>
#include <string.h>

#include "fsm_internal.h"

static int match_collect(void *ctx, const char *key, size_t len, void *value)
{
    struct tern_fsm *f = ctx;
    (void)key;
    (void)len;
    if (fsm_grow_in(f, (void **)&f->match, &f->match_cap, f->match_count + 1,
                    sizeof(*f->match)) != TERN_OK)
        return 1; /* out of memory: the command fails (f->nomem) */
    f->match[f->match_count++] = value;
    return 0;
}

static int seq_cmp(const void *a, const void *b)
{
    const struct fsm_sub *x = *(const struct fsm_sub *const *)a;
    const struct fsm_sub *y = *(const struct fsm_sub *const *)b;
    return (x->seq > y->seq) - (x->seq < y->seq);
}

static bool no_local(const struct fsm_sub *u, struct tern_bytes from)
{
    return (u->options & TERN_SUBOPT_NO_LOCAL) && from.len == u->s->client_id_len &&
           memcmp(from.ptr, u->s->client_id, from.len) == 0;
}

/* "$share/" before the group: a group's key "GROUP/INNER" is its filter without it. */
#define SHARE_PREFIX_LEN 7

static int rmatch_collect(void *ctx, const char *key, size_t len, void *value)
{
    struct tern_fsm *f = ctx;
    struct fsm_route *rt = value;
    (void)key;
    (void)len;
    if (!fsm_route_shared(rt))
        return 0;
    if (fsm_grow_in(f, (void **)&f->rmatch, &f->rmatch_cap, f->rmatch_count + 1,
                    sizeof(*f->rmatch)) != TERN_OK)
        return 1; /* out of memory: the command fails (f->nomem) */
    f->rmatch[f->rmatch_count++] = value;
    return 0;
}

static bool route_same_filter(const struct fsm_route *a, const struct fsm_route *b)
{
    return a->filter_len == b->filter_len && memcmp(a->key, b->key, a->filter_len) == 0;
}

static bool route_of_group(const struct fsm_route *rt, const char *key, size_t len)
{
    return rt->filter_len == len + SHARE_PREFIX_LEN &&
           memcmp(rt->key + SHARE_PREFIX_LEN, key, len) == 0;
}

/* The routes of group key: a run of *n entries of the sorted rmatch from *first. */
static void route_run(const struct tern_fsm *f, const char *key, size_t len,
                      size_t *first, size_t *n)
{
    *n = 0;
    for (size_t i = 0; i < f->rmatch_count; i++) {
        if (route_of_group(f->rmatch[i], key, len)) {
            if (*n == 0)
                *first = i;
            ++*n;
        } else if (*n) {
            return;
        }
    }
}

static void route_choose(struct tern_fsm *f, const struct fsm_route *rt,
                         const struct tern_msg *m)
{
    struct tern_bytes filter = {(const uint8_t *)rt->key, (uint32_t)rt->filter_len};
    if (f->obs.shared_route)
        f->obs.shared_route(f->obs.ctx, m, filter, rt->node);
}

/* splitmix64's finalizer: consecutive message ids spread evenly. */
static uint64_t mix64(uint64_t x)
{
    x = (x ^ (x >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    x = (x ^ (x >> 27)) * UINT64_C(0x94d049bb133111eb);
    return x ^ (x >> 31);
}

/* Groups that have routes here but no session: one node each. */
static void pend_routes(struct tern_fsm *f, const struct tern_msg *m, uint64_t mark)
{
    for (size_t i = 0; i < f->rmatch_count;) {
        size_t j = i + 1;
        while (j < f->rmatch_count && route_same_filter(f->rmatch[i], f->rmatch[j]))
            j++;
        if (f->rmatch[i]->mark != mark)
            route_choose(f, f->rmatch[i + mix64(m->id) % (j - i)], m);
        i = j;
    }
}

/* Does the selection let this publish serve group g? */
static bool select_has(const struct fsm_select *sel, const struct fsm_group *g)
{
    if (!sel || !(sel->flags & TERN_PUB_GROUPS))
        return true;
    uint32_t pos = 0;
    struct tern_bytes e;
    while (tern_cmd_next_group(sel->groups, &pos, &e)) {
        if (e.len == g->key_len + SHARE_PREFIX_LEN &&
            memcmp(e.ptr + SHARE_PREFIX_LEN, g->key, g->key_len) == 0)
            return true;
    }
    return false;
}

static struct fsm_entry sub_entry(const struct fsm_sub *u, struct tern_msg *m)
{
    uint8_t sub_qos = u->options & TERN_SUBOPT_QOS_MASK;
    struct fsm_entry e = {.msg = m,
                          .qos = m->qos < sub_qos ? m->qos : sub_qos,
                          .retain = (u->options & TERN_SUBOPT_RETAIN_AS_PUBLISHED) &&
                                    m->retain};
    if (u->sub_id)
        e.ids[e.nids++] = u->sub_id;
    return e;
}

static struct fsm_pending *pend_add(struct tern_fsm *f, struct tern_fsm_session *s,
                                    const struct fsm_entry *e)
{
    if (fsm_grow_in(f, (void **)&f->pend, &f->pend_cap, f->pend_count + 1,
                    sizeof(*f->pend)) != TERN_OK)
        return NULL;
    struct fsm_pending *p = &f->pend[f->pend_count++];
    p->s = s;
    p->e = *e;
    return p;
}

/* Folds a plain subscription into its session's single copy. */
static void pend_plain(struct tern_fsm *f, const struct fsm_sub *u, struct tern_msg *m,
                       uint64_t mark)
{
    struct tern_fsm_session *s = u->s;
    /* The mark lives in the state, which a session with only subscriptions
     * does not have: it gets one here, trimmed again after the enqueues. */
    struct fsm_session_state *st = fsm_session_state_mut(f, s);
    if (!st)
        return; /* f->nomem */
    struct fsm_entry e = sub_entry(u, m);
    if (st->mark != mark) {
        if (pend_add(f, s, &e)) {
            st->mark = mark;
            st->slot = (uint32_t)(f->pend_count - 1);
        }
        return;
    }
    struct fsm_entry *have = &f->pend[st->slot].e;
    if (e.qos > have->qos)
        have->qos = e.qos;
    have->retain = have->retain || e.retain;
    if (e.nids && have->nids < TERN_MAX_SUB_IDS)
        have->ids[have->nids++] = e.ids[0];
}

/* Eligible members of group g from match index i on (earlier matches belong to
 * other groups). Counts them; with out, stops at the want-th and sets *out. */
static uint32_t group_scan(const struct tern_fsm *f, size_t i, const struct fsm_group *g,
                           struct tern_bytes from, bool online_only, uint32_t want,
                           const struct fsm_sub **out)
{
    uint32_t n = 0;
    for (; i < f->match_count; i++) {
        const struct fsm_sub *u = f->match[i];
        if (u->group != g || no_local(u, from) || (online_only && !u->s->online))
            continue;
        if (out && n == want) {
            *out = u;
            return n;
        }
        n++;
    }
    return n;
}

/* One member of group g: its sessions here (matches from i on) first, then the
 * nodes of its routes (clean members elsewhere), which count as online. */
static void pend_shared(struct tern_fsm *f, size_t i, struct tern_msg *m,
                        struct tern_bytes from, uint64_t mark)
{
    struct fsm_group *g = f->match[i]->group;
    size_t r0 = 0, nr = 0;
    route_run(f, g->key, g->key_len, &r0, &nr);
    for (size_t k = 0; k < nr; k++)
        f->rmatch[r0 + k]->mark = mark; /* chosen here, not by pend_routes */
    bool online = nr > 0 || group_scan(f, i, g, from, true, 0, NULL) > 0;
    uint32_t np = group_scan(f, i, g, from, online, 0, NULL);
    uint64_t n = (uint64_t)np + nr;
    if (n == 0)
        return;
    uint64_t k = g->next++ % n;
    if (k >= np) {
        route_choose(f, f->rmatch[r0 + (size_t)(k - np)], m);
        return;
    }
    const struct fsm_sub *u = NULL;
    group_scan(f, i, g, from, online, (uint32_t)k, &u);
    struct fsm_entry e = sub_entry(u, m);
    pend_add(f, u->s, &e);
}

uint32_t fsm_publish_msg(struct tern_fsm *f, struct tern_msg *m, struct tern_bytes from,
                         uint64_t now_ms, const struct fsm_select *sel)
{
    if (m->retain)
        fsm_retain(f, m);
    f->match_count = 0;
    f->pend_count = 0;
    f->rmatch_count = 0;
    const char *topic = (const char *)m->topic.ptr;
    tern_topic_tree_match(f->subs, topic, m->topic.len, match_collect, f);
    if (f->match_count > 1)
        qsort(f->match, f->match_count, sizeof(*f->match), seq_cmp);
    if (!sel && fsm_map_count(&f->routes)) {
        tern_topic_tree_match(f->route_tree, topic, m->topic.len, rmatch_collect, f);
        if (f->rmatch_count > 1)
            qsort(f->rmatch, f->rmatch_count, sizeof(*f->rmatch), fsm_route_cmp);
    }
    bool plain = !sel || !(sel->flags & TERN_PUB_NO_PLAIN);
    uint64_t mark = ++f->mark_counter;
    for (size_t i = 0; i < f->match_count; i++) {
        struct fsm_sub *u = f->match[i];
        if (!u->group && plain && !no_local(u, from))
            pend_plain(f, u, m, mark);
        else if (u->group && u->group->mark != mark) {
            u->group->mark = mark;
            if (select_has(sel, u->group))
                pend_shared(f, i, m, from, mark);
        }
    }
    pend_routes(f, m, mark);
    uint32_t matched = 0;
    for (size_t i = 0; i < f->pend_count; i++)
        matched += fsm_enqueue(f, f->pend[i].s, &f->pend[i].e, now_ms);
    /* A state made only for the mark (the message was dropped, or sent at QoS
     * 0 and not kept) goes again; the others hold what was queued. */
    for (size_t i = 0; i < f->pend_count; i++)
        fsm_session_state_trim(f->pend[i].s);
    return matched;
}

static int inbound_find(const struct tern_fsm_session *s, uint16_t id)
{
    const struct fsm_session_state *st = s->st;
    for (uint32_t i = 0; i < st->inbound_count; i++) {
        if (st->inbound[i] == id)
            return (int)i;
    }
    return -1;
}

/* Returns true when the command must go no further (duplicate or error). id is
 * not 0 and not held, so at most 65535 ids are: inbound_count cannot wrap. */
static bool inbound_hold(struct tern_fsm *f, struct tern_fsm_session *s, uint16_t id,
                         struct tern_fsm_result *r)
{
    if (inbound_find(s, id) >= 0) {
        r->duplicate = true;
        return true;
    }
    struct fsm_session_state *st = fsm_session_state_mut(f, s);
    size_t cap = st ? st->inbound_cap : 0;
    if (!st || fsm_grow_in(f, (void **)&st->inbound, &cap, (size_t)st->inbound_count + 1,
                           sizeof(*st->inbound)) != TERN_OK) {
        if (st)
            fsm_session_state_trim(s);
        r->status = TERN_ENOMEM;
        return true;
    }
    st->inbound_cap = (uint32_t)cap;
    st->inbound[st->inbound_count++] = id;
    return false;
}

void fsm_publish(struct tern_fsm *f, const struct tern_cmd *c, struct tern_fsm_result *r)
{
    const struct tern_cmd_msg *cm = &c->u.publish.msg;
    if (!fsm_cmd_msg_valid(cm)) {
        r->status = TERN_EINVAL;
        return;
    }
    /* A publisher without a session here (a clean client publishing into the
     * replicated FSM) is fine: no fencing, no inbound QoS 2 tracking. */
    struct tern_fsm_session *ps = fsm_session_find(f, c->u.publish.client_id);
    if (ps && ps->epoch != c->u.publish.epoch) {
        r->status = TERN_ESTALE;
        return;
    }
    uint16_t in_id = c->u.publish.inbound_packet_id;
    if (ps && in_id && inbound_hold(f, ps, in_id, r))
        return;
    uint32_t from = ps ? ps->owner_node : (uint32_t)(c->proposal_id >> 40);
    struct tern_msg *m = fsm_msg_new(f, cm, c->now_ms, from);
    if (!m) {
        r->status = TERN_ENOMEM;
        return;
    }
    struct fsm_select sel = {c->u.publish.select, c->u.publish.groups};
    r->matched =
        fsm_publish_msg(f, m, c->u.publish.client_id, c->now_ms, sel.flags ? &sel : NULL);
    fsm_msg_unref(f, m);
}

/* PUBREC moves a QoS 2 entry to REL: the message is no longer needed, and the
 * PUBREL is asked for only now, after the state change is replicated. */
static int ack_pubrec(struct tern_fsm *f, struct tern_fsm_session *s, uint32_t i,
                      uint8_t reason, uint64_t now_ms)
{
    struct fsm_flight *fl = fsm_flight_at(fsm_session_state_own(s), i);
    if (fl->e.qos != 2)
        return TERN_EPROTO; /* a PUBREC for a QoS 1 message */
    if (fl->state == FSM_REL) {
        /* A repeated PUBREC: the PUBREL is owed again (nothing changes). */
        fsm_deliver(f, s, &fl->e, fl->packet_id, false, true);
        return TERN_OK;
    }
    if (reason >= 0x80) {
        fsm_flight_remove(f, s, i);
        fsm_promote(f, s, now_ms);
        return TERN_OK;
    }
    fl->state = FSM_REL;
    fsm_msg_unref(f, fl->e.msg);
    fl->e.msg = NULL;
    fsm_deliver(f, s, &fl->e, fl->packet_id, false, true);
    return TERN_OK;
}

static int ack_apply(struct tern_fsm *f, struct tern_fsm_session *s,
                     const struct tern_cmd *c)
{
    int i = fsm_flight_find(s, c->u.ack.packet_id);
    if (i < 0)
        return TERN_ENOTFOUND;
    const struct fsm_flight *fl = fsm_flight_at(s->st, (uint32_t)i);
    /* An ack of the wrong kind for a message in flight (PUBACK for QoS 2, PUBCOMP
     * for QoS 1 or before PUBREC) is a protocol error: the client's state for
     * this id cannot match ours. An unknown id is only TERN_ENOTFOUND: a late
     * ack of a message already acknowledged, dropped or expired. */
    switch (c->u.ack.kind) {
    case TERN_PUBACK:
        if (fl->e.qos != 1)
            return TERN_EPROTO;
        break;
    case TERN_PUBREC:
        return ack_pubrec(f, s, (uint32_t)i, c->u.ack.reason, c->now_ms);
    case TERN_PUBCOMP:
        if (fl->state != FSM_REL)
            return TERN_EPROTO;
        break;
    default:
        return TERN_EINVAL;
    }
    fsm_flight_remove(f, s, (uint32_t)i);
    fsm_promote(f, s, c->now_ms);
    return TERN_OK;
}

void fsm_ack(struct tern_fsm *f, const struct tern_cmd *c, struct tern_fsm_result *r)
{
    struct tern_fsm_session *s =
        fsm_session_check(f, c->u.ack.client_id, c->u.ack.epoch, r);
    if (s) {
        r->status = ack_apply(f, s, c);
        fsm_session_state_trim(s);
    }
}

void fsm_pubrel(struct tern_fsm *f, const struct tern_cmd *c, struct tern_fsm_result *r)
{
    struct tern_fsm_session *s =
        fsm_session_check(f, c->u.pubrel.client_id, c->u.pubrel.epoch, r);
    if (!s)
        return;
    int i = inbound_find(s, c->u.pubrel.packet_id);
    if (i < 0) {
        r->status = TERN_ENOTFOUND;
        return;
    }
    struct fsm_session_state *st = fsm_session_state_own(s);
    st->inbound[i] = st->inbound[--st->inbound_count];
    fsm_session_state_trim(s);
}
