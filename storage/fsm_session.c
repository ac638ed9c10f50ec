/* Session lifecycle (open, close, delete, wills) and subscriptions.
 *
 * Wills follow MQTT 5 3.1.2.5: published when the connection is gone and either
 * the will delay has elapsed or the session ends, whichever is first; not
 * published when a new connection resumes the session before the delay elapses,
 * nor after a normal DISCONNECT (the node then closes with publish_will false). */
#include <stdlib.h>
#include <string.h>

#include "fsm_internal.h"

struct tern_fsm_session *fsm_session_find(const struct tern_fsm *f, struct tern_bytes id)
{
    if (!id.ptr || id.len == 0)
        return NULL;
    return fsm_stab_get(&f->sessions, (const char *)id.ptr, id.len);
}

/* --- per-session state --- */

const struct fsm_session_state fsm_session_state_empty; /* all zero */

struct fsm_session_state *fsm_session_state_mut(struct tern_fsm *f,
                                                struct tern_fsm_session *s)
{
    if (s->st == &fsm_session_state_empty) {
        struct fsm_session_state *st = fsm_calloc(f, sizeof(*st));
        if (!st)
            return NULL;
        s->st = st;
    }
    return (struct fsm_session_state *)s->st; /* private: malloc'ed, not const */
}

struct fsm_session_state *fsm_session_state_own(struct tern_fsm_session *s)
{
    assert(s->st != &fsm_session_state_empty);
    return (struct fsm_session_state *)s->st;
}

static void session_state_free(struct tern_fsm_session *s)
{
    if (s->st == &fsm_session_state_empty)
        return;
    struct fsm_session_state *st = fsm_session_state_own(s);
    free(st->flight);
    free(st->flight_ids);
    free(st->inbound);
    free(st);
    s->st = &fsm_session_state_empty;
}

void fsm_session_state_trim(struct tern_fsm_session *s)
{
    const struct fsm_session_state *st = s->st;
    /* mark and slot are publish scratch: a fresh state's mark 0 never equals
     * a publish generation (they start at 1). */
    if (!st->q_head && st->flight_count == 0 && st->inbound_count == 0 && !st->will &&
        st->will_at_ms == 0 && st->will_delay_s == 0)
        session_state_free(s);
}

static struct tern_bytes session_id(const struct tern_fsm_session *s)
{
    return (struct tern_bytes){(const uint8_t *)s->client_id, s->client_id_len};
}

static uint64_t session_expire_at(const struct tern_fsm_session *s)
{
    if (s->online || s->expiry_s == FSM_EXPIRY_NEVER)
        return UINT64_MAX;
    return s->offline_since_ms + (uint64_t)s->expiry_s * 1000;
}

bool fsm_session_expired(const struct tern_fsm_session *s, uint64_t now_ms)
{
    return now_ms >= session_expire_at(s);
}

uint64_t fsm_session_deadline(const struct tern_fsm_session *s)
{
    uint64_t d = session_expire_at(s);
    if (s->st->will_at_ms && s->st->will_at_ms < d)
        d = s->st->will_at_ms;
    return d;
}

static uint32_t expiry_cap(const struct tern_fsm *f, uint32_t expiry_s)
{
    uint32_t cap = f->limits.session_expiry_max_s;
    return (cap && expiry_s > cap) ? cap : expiry_s;
}

/* --- subscriptions --- */

static struct fsm_group *group_get(struct tern_fsm *f, const char *group, size_t glen,
                                   const char *inner, size_t ilen)
{
    char *key = fsm_malloc(f, glen + 1 + ilen + 1);
    if (!key)
        return NULL;
    memcpy(key, group, glen);
    key[glen] = '/';
    memcpy(key + glen + 1, inner, ilen);
    key[glen + 1 + ilen] = 0;
    struct fsm_group *g = fsm_map_get(&f->groups, key, glen + 1 + ilen);
    if (g) {
        free(key);
        g->refs++;
        return g;
    }
    g = fsm_calloc(f, sizeof(*g));
    if (!g || fsm_map_put(&f->groups, key, glen + 1 + ilen, g) != TERN_OK) {
        fsm_nomem(f);
        free(g);
        free(key);
        return NULL;
    }
    g->key = key;
    g->key_len = glen + 1 + ilen;
    g->refs = 1;
    return g;
}

static void group_put(struct tern_fsm *f, struct fsm_group *g)
{
    if (!g || --g->refs > 0)
        return;
    fsm_map_del(&f->groups, g->key, g->key_len);
    free(g->key);
    free(g);
}

struct fsm_sub *fsm_sub_find(const struct tern_fsm_session *s, const char *filter,
                             size_t len)
{
    for (struct fsm_sub *u = s->subs; u; u = u->next) {
        if (u->filter_len == len && memcmp(u->filter, filter, len) == 0)
            return u;
    }
    return NULL;
}

static void sub_append(struct tern_fsm_session *s, struct fsm_sub *u)
{
    struct fsm_sub **p = &s->subs;
    while (*p)
        p = &(*p)->next;
    *p = u;
}

struct fsm_sub *fsm_sub_new(struct tern_fsm *f, struct tern_fsm_session *s,
                            struct tern_bytes filter, uint8_t options, uint32_t sub_id,
                            uint64_t seq)
{
    struct fsm_sub *u = fsm_obj_alloc(f, fsm_sub_size(filter.len));
    if (!u)
        return NULL;
    assert(filter.len <= UINT16_MAX); /* str16 */
    *u = (struct fsm_sub){.s = s,
                          .filter_len = (uint16_t)filter.len,
                          .options = options,
                          .sub_id = sub_id,
                          .seq = seq};
    /* After the assignment, which may cover the filter's first bytes (padding). */
    memcpy(u->filter, filter.ptr, filter.len);
    u->filter[filter.len] = 0;
    return u;
}

int fsm_sub_index(struct tern_fsm *f, struct fsm_sub *u)
{
    const char *g, *inner = u->filter;
    size_t glen, ilen = u->filter_len;
    bool shared =
        tern_topic_shared_split(u->filter, u->filter_len, &g, &glen, &inner, &ilen);
    u->inner_off = (uint16_t)(inner - u->filter);
    if (shared) {
        u->group = group_get(f, g, glen, inner, ilen);
        if (!u->group)
            return TERN_ENOMEM;
    }
    int rc = tern_topic_tree_add(f->subs, inner, ilen, u);
    if (rc != TERN_OK) {
        fsm_nomem(f); /* the filter is valid: only memory can fail */
        group_put(f, u->group);
    }
    return rc;
}

void fsm_sub_free(struct tern_fsm *f, struct fsm_sub *u)
{
    fsm_obj_free(f, u, fsm_sub_size(u->filter_len));
}

static struct fsm_sub *sub_create(struct tern_fsm *f, struct tern_fsm_session *s,
                                  const struct tern_cmd_sub *e)
{
    struct fsm_sub *u =
        fsm_sub_new(f, s, e->filter, e->options, e->sub_id, ++f->sub_counter);
    if (!u || fsm_sub_index(f, u) != TERN_OK) {
        if (u)
            fsm_sub_free(f, u);
        return NULL;
    }
    sub_append(s, u);
    f->stats.subscriptions++;
    return u;
}

static void sub_destroy(struct tern_fsm *f, struct tern_fsm_session *s, struct fsm_sub *u)
{
    struct fsm_sub **p = &s->subs;
    while (*p && *p != u)
        p = &(*p)->next;
    if (*p)
        *p = u->next;
    tern_topic_tree_remove(f->subs, fsm_sub_inner(u), fsm_sub_inner_len(u), u);
    group_put(f, u->group);
    fsm_sub_free(f, u);
    f->stats.subscriptions--;
}

static void subs_clear(struct tern_fsm *f, struct tern_fsm_session *s)
{
    while (s->subs)
        sub_destroy(f, s, s->subs);
}

/* --- wills --- */

static void will_publish_msg(struct tern_fsm *f, struct tern_msg *m,
                             struct tern_bytes from, uint64_t now_ms)
{
    fsm_msg_set_expiry(f, m, now_ms); /* the will is published now */
    fsm_publish_msg(f, m, from, now_ms, NULL);
    if (f->obs.published)
        f->obs.published(f->obs.ctx, m);
    f->stats.wills_published++;
    fsm_msg_unref(f, m);
}

static struct tern_msg *will_detach(struct tern_fsm_session *s)
{
    if (!s->st->will && s->st->will_at_ms == 0)
        return NULL; /* nothing to change (the state may be the shared one) */
    struct fsm_session_state *st = fsm_session_state_own(s);
    struct tern_msg *m = st->will;
    st->will = NULL;
    st->will_at_ms = 0;
    return m;
}

void fsm_will_publish(struct tern_fsm *f, struct tern_fsm_session *s, uint64_t now_ms)
{
    struct tern_msg *m = will_detach(s);
    if (m)
        will_publish_msg(f, m, session_id(s), now_ms);
}

/* --- session state --- */

static void set_offline(struct tern_fsm *f, struct tern_fsm_session *s, uint64_t now_ms)
{
    if (!s->online)
        return;
    s->online = false;
    s->offline_since_ms = now_ms;
    f->stats.sessions_online--;
}

/* Drops everything but identity, epoch and the local annotation (and the will
 * delay, which stays as it was: it is snapshotted). */
static void session_clear(struct tern_fsm *f, struct tern_fsm_session *s)
{
    subs_clear(f, s);
    fsm_queue_clear(f, s);
    fsm_flight_clear(f, s);
    fsm_msg_unref(f, will_detach(s));
    if (s->st != &fsm_session_state_empty) {
        struct fsm_session_state *st = fsm_session_state_own(s);
        free(st->inbound);
        st->inbound = NULL;
        st->inbound_count = 0;
        st->inbound_cap = 0;
    }
    s->next_packet_id = 1;
    fsm_session_state_trim(s);
}

void fsm_session_destroy(struct tern_fsm *f, struct tern_fsm_session *s)
{
    fsm_timer_session_forget(f, s);
    set_offline(f, s, 0);
    session_clear(f, s);
    session_state_free(s);
    fsm_stab_del(&f->sessions, s);
    f->stats.sessions--;
    fsm_obj_free(f, s, fsm_session_size(s->client_id_len));
}

static int destroy_visit(void *ctx, struct tern_fsm_session *s)
{
    fsm_session_destroy(ctx, s);
    return 0;
}

void fsm_session_free_all(struct tern_fsm *f)
{
    fsm_stab_walk_del(&f->sessions, destroy_visit, f);
}

struct tern_fsm_session *fsm_session_alloc(struct tern_fsm *f, struct tern_bytes id)
{
    if (id.len == 0 || id.len > FSM_CLIENT_ID_MAX)
        return NULL;
    size_t size = fsm_session_size(id.len);
    struct tern_fsm_session *s = fsm_obj_alloc(f, size);
    if (!s)
        return NULL;
    memset(s, 0, size);
    memcpy(s->client_id, id.ptr, id.len);
    s->client_id[id.len] = 0;
    s->client_id_len = (uint16_t)id.len;
    s->st = &fsm_session_state_empty;
    if (fsm_stab_put(&f->sessions, s) != TERN_OK) {
        fsm_nomem(f);
        fsm_obj_free(f, s, size);
        return NULL;
    }
    f->stats.sessions++;
    return s;
}

static struct tern_fsm_session *session_new(struct tern_fsm *f, struct tern_bytes id)
{
    struct tern_fsm_session *s = fsm_session_alloc(f, id);
    if (s)
        s->next_packet_id = 1;
    return s;
}

/* An existing session meets a new connection: fence the old one, settle its
 * will, discard its state on clean start or expiry. Returns session_present. */
static bool open_existing(struct tern_fsm *f, struct tern_fsm_session *s,
                          const struct tern_cmd *c)
{
    bool was_online = s->online;
    if (was_online && f->obs.fenced)
        f->obs.fenced(f->obs.ctx, session_id(s), s->owner_node, s->epoch,
                      TERN_RC_SESSION_TAKEN_OVER);
    uint64_t will_at_ms = s->st->will_at_ms;
    /* Offline first: nothing of the old will may reach the old connection. */
    set_offline(f, s, c->now_ms);
    bool expired = !was_online && fsm_session_expired(s, c->now_ms);
    /* An online session with expiry 0 would have ended with its connection:
     * taking it over resumes nothing, so Session Present is 0 [MQTT-3.2.2-3]. */
    bool discard = c->u.open.clean_start || expired || (was_online && s->expiry_s == 0);
    /* The old connection ends now: its will goes out if its delay is 0 or its
     * session ended with it. A will still waiting for its delay is cancelled by
     * this new connection, whatever its clean start [MQTT-3.1.3-9], unless the
     * delay has already run out (the TICK that would publish it is late). */
    bool publish = was_online ? (s->st->will_delay_s == 0 || s->expiry_s == 0)
                              : (will_at_ms != 0 && will_at_ms <= c->now_ms);
    struct tern_msg *will = will_detach(s);
    if (discard)
        session_clear(f, s);
    if (expired)
        f->stats.sessions_expired++;
    if (will && publish)
        will_publish_msg(f, will, session_id(s), c->now_ms);
    else
        fsm_msg_unref(f, will);
    return !discard;
}

static void open_set(struct tern_fsm *f, struct tern_fsm_session *s,
                     const struct tern_cmd *c)
{
    s->owner_node = c->u.open.node;
    s->epoch = ++f->epoch_counter;
    s->proto = c->u.open.proto;
    s->expiry_s = expiry_cap(f, c->u.open.expiry_s);
    s->receive_max = c->u.open.receive_max ? c->u.open.receive_max : 65535;
    s->online = true;
    s->offline_since_ms = 0;
    f->stats.sessions_online++;
    if (c->u.open.has_will) {
        /* On allocation failure the command fails (f->nomem). */
        struct tern_msg *m = fsm_msg_new(f, &c->u.open.will, c->now_ms, c->u.open.node);
        struct fsm_session_state *st = m ? fsm_session_state_mut(f, s) : NULL;
        if (st) {
            st->will = m;
            st->will_delay_s = c->u.open.will_delay_s;
        } else {
            fsm_msg_unref(f, m);
        }
    }
}

void fsm_open(struct tern_fsm *f, const struct tern_cmd *c, struct tern_fsm_result *r)
{
    const struct tern_bytes id = c->u.open.client_id;
    if (!id.ptr || id.len == 0 || id.len > FSM_CLIENT_ID_MAX ||
        (c->u.open.has_will && !fsm_cmd_msg_valid(&c->u.open.will))) {
        r->status = TERN_EINVAL;
        return;
    }
    struct tern_fsm_session *s = fsm_session_find(f, id);
    bool present = false;
    if (s) {
        present = open_existing(f, s, c);
    } else if (f->stats.sessions >= f->limits.sessions_max) {
        r->status = TERN_ELIMIT;
        return;
    } else if (!(s = session_new(f, id))) {
        r->status = TERN_ENOMEM;
        return;
    }
    open_set(f, s, c);
    r->session_present = present;
    r->epoch = s->epoch;
    if (f->obs.opened)
        f->obs.opened(f->obs.ctx, s, present);
    fsm_resume(f, s, c->now_ms);
    fsm_session_settle(f, s); /* online now: no deadline (a takeover had one) */
}

struct tern_fsm_session *fsm_session_check(const struct tern_fsm *f, struct tern_bytes id,
                                           uint64_t epoch, struct tern_fsm_result *r)
{
    struct tern_fsm_session *s = fsm_session_find(f, id);
    if (!s)
        r->status = TERN_ENOTFOUND;
    else if (s->epoch != epoch)
        r->status = TERN_ESTALE;
    return r->status == TERN_OK ? s : NULL;
}

/* The connection of an online session ended (SESSION_CLOSE, NODE_DOWN), s
 * already offline: settle its will and end the session if its expiry is 0. */
static void close_settle(struct tern_fsm *f, struct tern_fsm_session *s, uint64_t now_ms,
                         bool publish_will)
{
    const struct fsm_session_state *st = s->st;
    if (st->will && !publish_will) {
        fsm_msg_unref(f, will_detach(s));
    } else if (st->will && (st->will_delay_s == 0 || s->expiry_s == 0)) {
        fsm_will_publish(f, s, now_ms);
    } else if (st->will) {
        uint64_t d = st->will_delay_s < s->expiry_s ? st->will_delay_s : s->expiry_s;
        fsm_session_state_own(s)->will_at_ms = now_ms + d * 1000;
    }
    if (s->expiry_s == 0)
        fsm_session_destroy(f, s);
    else
        fsm_session_settle(f, s); /* offline: its expiry (or will) is ahead */
}

void fsm_close(struct tern_fsm *f, const struct tern_cmd *c, struct tern_fsm_result *r)
{
    struct tern_fsm_session *s =
        fsm_session_check(f, c->u.close.client_id, c->u.close.epoch, r);
    if (!s || !s->online)
        return; /* a second close of the same epoch changes nothing */
    set_offline(f, s, c->now_ms);
    s->expiry_s = expiry_cap(f, c->u.close.expiry_s);
    close_settle(f, s, c->now_ms, c->u.close.publish_will);
}

struct down_ctx {
    struct tern_fsm *f;
    uint32_t node;
    struct tern_fsm_session **v;
    size_t n, cap;
    bool oom;
};

static int down_collect(void *ctx, struct tern_fsm_session *s)
{
    struct down_ctx *x = ctx;
    if (!s->online || s->owner_node != x->node)
        return 0;
    if (fsm_grow_in(x->f, (void **)&x->v, &x->cap, x->n + 1, sizeof(*x->v)) != TERN_OK) {
        x->oom = true;
        return 1;
    }
    x->v[x->n++] = s;
    return 0;
}

static int down_epoch_cmp(const void *a, const void *b)
{
    const struct tern_fsm_session *x = *(struct tern_fsm_session *const *)a;
    const struct tern_fsm_session *y = *(struct tern_fsm_session *const *)b;
    return (x->epoch > y->epoch) - (x->epoch < y->epoch);
}

/* Every online session of the lost node closes as with publish_will, in epoch
 * order. Two passes: all of them go offline before any will is published, so
 * a will never goes to the in-flight window of a connection on the dead node
 * (it is queued for the session instead). Each gets a new epoch, so commands
 * still in flight from the old connections are rejected as stale; the old
 * connection is fenced in case its node is alive after all. */
void fsm_node_down(struct tern_fsm *f, const struct tern_cmd *c,
                   struct tern_fsm_result *r)
{
    struct down_ctx x = {.f = f, .node = c->u.node_down.node};
    fsm_stab_walk(&f->sessions, down_collect, &x);
    if (x.oom) {
        free(x.v);
        r->status = TERN_ENOMEM;
        return;
    }
    if (x.n > 1)
        qsort(x.v, x.n, sizeof(*x.v), down_epoch_cmp);
    for (size_t i = 0; i < x.n; i++) {
        struct tern_fsm_session *s = x.v[i];
        if (f->obs.fenced)
            f->obs.fenced(f->obs.ctx, session_id(s), s->owner_node, s->epoch,
                          TERN_RC_SERVER_UNAVAILABLE);
        set_offline(f, s, c->now_ms);
        s->epoch = ++f->epoch_counter;
    }
    for (size_t i = 0; i < x.n; i++)
        close_settle(f, x.v[i], c->now_ms, true);
    free(x.v);
    fsm_routes_drop_node(f, c->u.node_down.node);
    r->matched = (uint32_t)x.n;
}

void fsm_delete_cmd(struct tern_fsm *f, const struct tern_cmd *c,
                    struct tern_fsm_result *r)
{
    struct tern_fsm_session *s = fsm_session_find(f, c->u.del.client_id);
    if (!s) {
        r->status = TERN_ENOTFOUND;
        return;
    }
    if (s->online && f->obs.fenced)
        f->obs.fenced(f->obs.ctx, session_id(s), s->owner_node, s->epoch,
                      TERN_RC_ADMIN_ACTION);
    set_offline(f, s, c->now_ms);
    /* An admin kick ends the session, so a will (live or pending) goes out. */
    fsm_will_publish(f, s, c->now_ms);
    fsm_session_destroy(f, s);
}

/* --- SUBSCRIBE / UNSUBSCRIBE --- */

struct sub_done {
    struct fsm_sub *u;
    bool existed;
};

struct retained_ctx {
    const struct tern_msg **v;
    size_t n, cap;
    struct tern_fsm *f;
};

static int retained_collect(void *ctx, const char *key, size_t len, void *value)
{
    struct retained_ctx *x = ctx;
    (void)key;
    (void)len;
    if (fsm_grow_in(x->f, (void **)&x->v, &x->cap, x->n + 1, sizeof(*x->v)) != TERN_OK)
        return 1;
    x->v[x->n++] = value;
    return 0;
}

static int topic_cmp(const void *a, const void *b)
{
    const struct tern_msg *x = *(const struct tern_msg *const *)a;
    const struct tern_msg *y = *(const struct tern_msg *const *)b;
    uint32_t n = x->topic.len < y->topic.len ? x->topic.len : y->topic.len;
    int c = memcmp(x->topic.ptr, y->topic.ptr, n);
    if (c)
        return c;
    return (x->topic.len > y->topic.len) - (x->topic.len < y->topic.len);
}

static void retained_send(struct tern_fsm *f, struct tern_fsm_session *s,
                          const struct fsm_sub *u, const struct tern_msg *src_m,
                          uint64_t now_ms)
{
    bool own = f->retained_src == NULL || f->retained_src == f;
    /* A message of another FSM is copied: refcounts never cross instances. */
    struct tern_msg *m = own ? (struct tern_msg *)src_m : fsm_msg_clone(f, src_m);
    if (!m)
        return;
    uint8_t sub_qos = u->options & TERN_SUBOPT_QOS_MASK;
    struct fsm_entry e = {.msg = m,
                          .qos = m->qos < sub_qos ? m->qos : sub_qos,
                          .retain = true,
                          .nids = u->sub_id ? 1 : 0,
                          .ids = {u->sub_id}};
    fsm_enqueue(f, s, &e, now_ms);
    if (!own)
        fsm_msg_unref(f, m);
}

/* Retained messages for one new subscription, in topic order (the retained
 * tree's visit order is not replicated state). */
static void sub_retained(struct tern_fsm *f, struct tern_fsm_session *s,
                         const struct sub_done *d, uint64_t now_ms)
{
    uint8_t rh = (d->u->options & TERN_SUBOPT_RETAIN_HANDLING_MASK) >>
                 TERN_SUBOPT_RETAIN_HANDLING_SHIFT;
    if (d->u->group || rh >= 2 || (rh == 1 && d->existed))
        return;
    const struct tern_fsm *src = f->retained_src ? f->retained_src : f;
    struct retained_ctx x = {.f = f};
    tern_topic_tree_match_filter(src->retained, fsm_sub_inner(d->u),
                                 fsm_sub_inner_len(d->u), retained_collect, &x);
    if (x.n > 1)
        qsort(x.v, x.n, sizeof(*x.v), topic_cmp);
    for (size_t i = 0; i < x.n; i++) {
        if (!fsm_msg_expired(x.v[i], now_ms))
            retained_send(f, s, d->u, x.v[i], now_ms);
    }
    free(x.v);
}

static bool sub_apply(struct tern_fsm *f, struct tern_fsm_session *s,
                      const struct tern_cmd_sub *e, struct sub_done *d)
{
    if (!e->filter.ptr ||
        !tern_topic_filter_valid((const char *)e->filter.ptr, e->filter.len))
        return false;
    d->u = fsm_sub_find(s, (const char *)e->filter.ptr, e->filter.len);
    d->existed = d->u != NULL;
    if (d->u) {
        d->u->options = e->options; /* replaced in place */
        d->u->sub_id = e->sub_id;
    } else {
        d->u = sub_create(f, s, e);
    }
    return d->u != NULL;
}

void fsm_subscribe(struct tern_fsm *f, const struct tern_cmd *c,
                   struct tern_fsm_result *r)
{
    struct tern_fsm_session *s =
        fsm_session_check(f, c->u.sub.client_id, c->u.sub.epoch, r);
    if (!s)
        return;
    struct sub_done *done = NULL;
    size_t n = 0, cap = 0;
    uint32_t pos = 0;
    struct tern_cmd_sub e;
    while (tern_cmd_next_sub(c->u.sub.list, &pos, &e)) {
        if (fsm_grow_in(f, (void **)&done, &cap, n + 1, sizeof(*done)) != TERN_OK)
            break;
        if (sub_apply(f, s, &e, &done[n]))
            n++;
    }
    if (f->obs.subscribed)
        f->obs.subscribed(f->obs.ctx, s, c->u.sub.packet_id);
    for (size_t i = 0; i < n; i++)
        sub_retained(f, s, &done[i], c->now_ms);
    free(done);
    fsm_session_state_trim(s); /* when nothing was added */
}

void fsm_unsubscribe(struct tern_fsm *f, const struct tern_cmd *c,
                     struct tern_fsm_result *r)
{
    struct tern_fsm_session *s =
        fsm_session_check(f, c->u.sub.client_id, c->u.sub.epoch, r);
    if (!s)
        return;
    uint32_t pos = 0;
    struct tern_cmd_sub e;
    while (tern_cmd_next_sub(c->u.sub.list, &pos, &e)) {
        struct fsm_sub *u = fsm_sub_find(s, (const char *)e.filter.ptr, e.filter.len);
        if (u)
            sub_destroy(f, s, u);
    }
    fsm_session_state_trim(s);
}
