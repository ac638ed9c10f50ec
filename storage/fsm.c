/* Session state machine: lifecycle, command dispatch, proposal-id dedup, TICK and
 * read accessors. The command handlers live in fsm_session.c (sessions,
 * subscriptions, wills) and fsm_publish.c (publish, acks); see fsm_internal.h. */
#include <stdlib.h>
#include <string.h>

#include "fsm_internal.h"

/* Creates the containers of replicated state (empty). */
static int fsm_state_init(struct tern_fsm *f)
{
    fsm_timer_init(f);
    tern_hmap_init(&f->sessions.h);
    fsm_map_init(&f->groups, fsm_group_eq);
    fsm_map_init(&f->routes, fsm_route_eq);
    f->subs = tern_topic_tree_new();
    f->retained = tern_topic_tree_new();
    f->route_tree = tern_topic_tree_new();
    return f->subs && f->retained && f->route_tree ? TERN_OK : TERN_ENOMEM;
}

struct tern_fsm *tern_fsm_new(uint32_t self_node, const struct tern_fsm_limits *limits,
                              const struct tern_fsm_observer *obs)
{
    struct tern_fsm *f = calloc(1, sizeof(*f));
    if (!f)
        return NULL;
    f->self_node = self_node;
    f->fail_alloc_after = -1;
    if (limits)
        f->limits = *limits;
    else
        tern_fsm_limits_default(&f->limits);
    if (obs)
        f->obs = *obs;
    if (fsm_state_init(f) != TERN_OK) {
        tern_fsm_free(f);
        return NULL;
    }
    return f;
}

void fsm_state_free(struct tern_fsm *f)
{
    fsm_timer_clear(f);      /* first: it indexes what is freed below */
    fsm_session_free_all(f); /* before the retained tree: both hold messages */
    tern_hmap_free(&f->sessions.h);
    fsm_map_free(&f->groups);
    if (f->subs)
        tern_topic_tree_free(f->subs);
    f->subs = NULL;
    fsm_retained_free_all(f);
    fsm_routes_free_all(f);
    free(f->origins);
    f->origins = NULL;
    f->origin_count = f->origin_cap = 0;
    f->member_count = 0;
    tern_slab_destroy(&f->slab); /* empty by now: every session went */
}

void tern_fsm_free(struct tern_fsm *f)
{
    if (!f)
        return;
    fsm_state_free(f);
    free(f->match);
    free(f->pend);
    free(f->rmatch);
    free(f);
}

void tern_fsm_fail_alloc_after(struct tern_fsm *f, long n)
{
    f->fail_alloc_after = n;
}

void tern_fsm_set_retained_source(struct tern_fsm *f, const struct tern_fsm *src)
{
    f->retained_src = src;
}

/* --- TICK --- */

/* Due sessions are handled in epoch order (epochs are unique), not in heap
 * order, so every replica publishes wills and expires sessions alike. Only
 * what is due is visited (fsm_timer.c). */
static void fsm_tick(struct tern_fsm *f, uint64_t now_ms)
{
    struct tern_fsm_session **v;
    size_t n = fsm_timer_due_sessions(f, now_ms, &v);
    for (size_t i = 0; i < n; i++) {
        struct tern_fsm_session *s = v[i];
        if (s->st->will_at_ms && s->st->will_at_ms <= now_ms)
            fsm_will_publish(f, s, now_ms);
        if (fsm_session_expired(s, now_ms)) {
            fsm_will_publish(f, s, now_ms); /* the session ends: a pending will goes */
            fsm_session_destroy(f, s);
            f->stats.sessions_expired++;
        } else {
            fsm_session_settle(f, s); /* its expiry may still be ahead */
        }
    }
    free(v);
    fsm_retained_expire(f, now_ms);
}

/* --- apply --- */

static void fsm_retain_delete_cmd(struct tern_fsm *f, const struct tern_cmd *c,
                                  struct tern_fsm_result *r)
{
    struct tern_bytes t = c->u.retain_delete.topic;
    r->status =
        t.ptr ? fsm_retained_delete(f, (const char *)t.ptr, t.len) : TERN_ENOTFOUND;
}

static void dispatch(struct tern_fsm *f, const struct tern_cmd *c,
                     struct tern_fsm_result *r)
{
    switch (c->type) {
    case TERN_CMD_SESSION_OPEN:
        fsm_open(f, c, r);
        break;
    case TERN_CMD_SESSION_CLOSE:
        fsm_close(f, c, r);
        break;
    case TERN_CMD_SUBSCRIBE:
        fsm_subscribe(f, c, r);
        break;
    case TERN_CMD_UNSUBSCRIBE:
        fsm_unsubscribe(f, c, r);
        break;
    case TERN_CMD_PUBLISH:
        fsm_publish(f, c, r);
        break;
    case TERN_CMD_ACK:
        fsm_ack(f, c, r);
        break;
    case TERN_CMD_PUBREL:
        fsm_pubrel(f, c, r);
        break;
    case TERN_CMD_TICK:
        fsm_tick(f, c->now_ms);
        break;
    case TERN_CMD_SESSION_DELETE:
        fsm_delete_cmd(f, c, r);
        break;
    case TERN_CMD_RETAIN_DELETE:
        fsm_retain_delete_cmd(f, c, r);
        break;
    case TERN_CMD_NODE_DOWN:
        fsm_node_down(f, c, r);
        break;
    case TERN_CMD_ROUTE_ADD:
        fsm_route_add_cmd(f, c, r);
        break;
    case TERN_CMD_ROUTE_DEL:
        fsm_route_del_cmd(f, c, r);
        break;
    case TERN_CMD_MEMBER_SET:
        fsm_member_set_cmd(f, c, r);
        break;
    case TERN_CMD_MEMBER_DEL:
        fsm_member_del_cmd(f, c, r);
        break;
    case TERN_CMD_LIMITS:
        fsm_limits_set_cmd(f, c, r);
        break;
    case TERN_CMD_BARRIER:
    case TERN_CMD_ORIGIN_START:
        break;
    default:
        r->status = TERN_EINVAL;
        break;
    }
}

void tern_fsm_apply(struct tern_fsm *f, const struct tern_cmd *cmd,
                    struct tern_fsm_result *res)
{
    *res = (struct tern_fsm_result){.status = TERN_OK};
    switch (fsm_proposal_order(f, cmd)) {
    case FSM_ORDER_DUP:
        res->duplicate = true; /* a retried proposal: applied once already */
        return;
    case FSM_ORDER_GAP:
        /* An earlier proposal of its node is missing: refused, changes nothing;
         * the node re-sends them in order. */
        res->status = TERN_EAGAIN;
        res->out_of_order = true;
        return;
    case FSM_ORDER_NEXT:
        break;
    }
    f->nomem = false;
    f->backlogged_count = 0;
    dispatch(f, cmd, res);
    if (cmd->type == TERN_CMD_PUBLISH) {
        /* Only a PUBLISH: other commands may end a session after queueing to it. */
        res->backlogged_count = f->backlogged_count;
        memcpy(res->backlogged, f->backlogged, sizeof(res->backlogged));
    }
    /* Rejected commands count too: a retry would be rejected the same way. */
    fsm_proposal_record(f, cmd->proposal_id);
    f->stats.applied++;
    if (f->nomem) /* last: the dedup bookkeeping can run out of memory too */
        res->status = TERN_ENOMEM; /* maybe applied in part: see fsm_internal.h */
}

/* --- reading --- */

static int any_visit(void *ctx, const char *key, size_t len, void *value)
{
    (void)ctx;
    (void)key;
    (void)len;
    (void)value;
    return 1;
}

bool tern_fsm_has_subscriber(const struct tern_fsm *f, const char *topic, size_t len)
{
    return tern_topic_tree_match(f->subs, topic, len, any_visit, NULL) != 0;
}

const struct tern_fsm_stats *tern_fsm_stats(const struct tern_fsm *f)
{
    return &f->stats;
}

struct tern_fsm_session *tern_fsm_session_get(const struct tern_fsm *f, const char *id,
                                              size_t len)
{
    struct tern_bytes b = {(const uint8_t *)id, (uint32_t)len};
    return len > UINT32_MAX ? NULL : fsm_session_find(f, b);
}

struct tern_bytes tern_fsm_session_client_id(const struct tern_fsm_session *s)
{
    return (struct tern_bytes){(const uint8_t *)s->client_id, s->client_id_len};
}

uint64_t tern_fsm_session_epoch(const struct tern_fsm_session *s)
{
    return s->epoch;
}

uint32_t tern_fsm_session_owner(const struct tern_fsm_session *s)
{
    return s->owner_node;
}

bool tern_fsm_session_online(const struct tern_fsm_session *s)
{
    return s->online;
}

uint32_t tern_fsm_session_expiry(const struct tern_fsm_session *s)
{
    return s->expiry_s;
}

uint8_t tern_fsm_session_proto(const struct tern_fsm_session *s)
{
    return s->proto;
}

uint32_t tern_fsm_session_queued(const struct tern_fsm_session *s)
{
    return s->st->queued;
}

uint64_t tern_fsm_session_queued_bytes(const struct tern_fsm_session *s)
{
    return s->st->queued_bytes;
}

uint32_t tern_fsm_session_inflight(const struct tern_fsm_session *s)
{
    return s->st->flight_count;
}

uint16_t tern_fsm_session_next_packet_id(const struct tern_fsm_session *s)
{
    return s->next_packet_id;
}

uint32_t tern_fsm_session_sub_count(const struct tern_fsm_session *s)
{
    return fsm_session_sub_count(s);
}

bool tern_fsm_session_inbound_held(const struct tern_fsm_session *s, uint16_t packet_id)
{
    for (uint32_t i = 0; i < s->st->inbound_count; i++) {
        if (s->st->inbound[i] == packet_id)
            return true;
    }
    return false;
}

void *tern_fsm_session_local(const struct tern_fsm_session *s)
{
    return s->local;
}

void tern_fsm_session_set_local(struct tern_fsm_session *s, void *local)
{
    s->local = local;
}

int tern_fsm_sessions_walk(const struct tern_fsm *f,
                           int (*fn)(void *ctx, struct tern_fsm_session *s), void *ctx)
{
    return fsm_stab_walk(&f->sessions, fn, ctx);
}

int tern_fsm_session_subs_walk(const struct tern_fsm_session *s,
                               int (*fn)(void *ctx, struct tern_bytes filter,
                                         uint8_t options, uint32_t sub_id),
                               void *ctx)
{
    for (const struct fsm_sub *u = s->subs; u; u = u->next) {
        struct tern_bytes b = {(const uint8_t *)u->filter, (uint32_t)u->filter_len};
        int rc = fn(ctx, b, u->options, u->sub_id);
        if (rc)
            return rc;
    }
    return 0;
}

struct retained_walk {
    int (*fn)(void *ctx, const struct tern_msg *m);
    void *ctx;
};

static int retained_visit(void *ctx, const char *key, size_t len, void *value)
{
    struct retained_walk *w = ctx;
    (void)key;
    (void)len;
    return w->fn(w->ctx, value);
}

int tern_fsm_retained_match(const struct tern_fsm *f, const char *filter, size_t len,
                            int (*fn)(void *ctx, const struct tern_msg *m), void *ctx)
{
    struct retained_walk w = {fn, ctx};
    return tern_topic_tree_match_filter(f->retained, filter, len, retained_visit, &w);
}

int tern_fsm_retained_walk(const struct tern_fsm *f,
                           int (*fn)(void *ctx, const struct tern_msg *m), void *ctx)
{
    struct retained_walk w = {fn, ctx};
    return tern_topic_tree_walk(f->retained, retained_visit, &w);
}
