/* Snapshot writer: all replicated state of the FSM as one checksummed record
 * (layout: docs/disk-format.md; container: storage/base/snapshot.c).
 *
 * Determinism: the same state must give the same bytes on every replica, so
 * nothing is written in a hash-map or topic-tree order. Sessions go in epoch
 * order (epochs are unique), messages in id order, groups and routes in key
 * order, retained messages in id order, inbound ids ascending. Lists that are
 * replicated order already (subscriptions, queues, in-flight windows) go as
 * they are.
 *
 * Messages are written once, before everything that references them; entries,
 * wills and the retained set refer to them by id. */
#include <stdlib.h>
#include <string.h>

#include "fsm_internal.h"
#include "tern/storage.h"

struct snap_ctx {
    struct tern_wbuf w;
    struct tern_fsm_session **sess;
    size_t nsess, sess_cap;
    const struct tern_msg **msgs;
    size_t nmsgs, msgs_cap;
    const struct fsm_group **groups;
    size_t ngroups, groups_cap;
    int err;
};

static void ctx_msg(struct snap_ctx *x, const struct tern_msg *m)
{
    if (!m || x->err)
        return;
    if (fsm_grow((void **)&x->msgs, &x->msgs_cap, x->nmsgs + 1, sizeof(*x->msgs)) !=
        TERN_OK) {
        x->err = TERN_ENOMEM;
        return;
    }
    x->msgs[x->nmsgs++] = m;
}

static int sess_collect(void *ctx, struct tern_fsm_session *s)
{
    struct snap_ctx *x = ctx;
    const struct fsm_session_state *st = s->st;
    if (fsm_grow((void **)&x->sess, &x->sess_cap, x->nsess + 1, sizeof(*x->sess)) !=
        TERN_OK) {
        x->err = TERN_ENOMEM;
        return 1;
    }
    x->sess[x->nsess++] = s;
    ctx_msg(x, st->will);
    for (const struct fsm_qent *q = st->q_head; q; q = q->next)
        ctx_msg(x, q->e.msg);
    for (uint32_t i = 0; i < st->flight_count; i++)
        ctx_msg(x, fsm_flight_at(st, i)->e.msg);
    return x->err;
}

static int retained_collect(void *ctx, const char *key, size_t len, void *value)
{
    (void)key;
    (void)len;
    ctx_msg(ctx, value);
    return ((struct snap_ctx *)ctx)->err;
}

static int sess_epoch_cmp(const void *a, const void *b)
{
    const struct tern_fsm_session *x = *(struct tern_fsm_session *const *)a;
    const struct tern_fsm_session *y = *(struct tern_fsm_session *const *)b;
    return (x->epoch > y->epoch) - (x->epoch < y->epoch);
}

static int msg_id_cmp(const void *a, const void *b)
{
    const struct tern_msg *x = *(const struct tern_msg *const *)a;
    const struct tern_msg *y = *(const struct tern_msg *const *)b;
    return (x->id > y->id) - (x->id < y->id);
}

/* Sessions by epoch; messages by id, each once (one message, one id). */
static int snap_collect(const struct tern_fsm *f, struct snap_ctx *x)
{
    fsm_stab_walk(&f->sessions, sess_collect, x);
    tern_topic_tree_walk(f->retained, retained_collect, x);
    if (x->err)
        return x->err;
    if (x->nsess > 1)
        qsort(x->sess, x->nsess, sizeof(*x->sess), sess_epoch_cmp);
    if (x->nmsgs > 1)
        qsort(x->msgs, x->nmsgs, sizeof(*x->msgs), msg_id_cmp);
    size_t n = 0;
    for (size_t i = 0; i < x->nmsgs; i++) {
        if (n == 0 || x->msgs[n - 1] != x->msgs[i])
            x->msgs[n++] = x->msgs[i];
    }
    x->nmsgs = n;
    return TERN_OK;
}

static void put_counters(struct tern_wbuf *w, const struct tern_fsm *f)
{
    const struct tern_fsm_stats *st = &f->stats;
    tern_wbuf_put_u64(w, f->epoch_counter);
    tern_wbuf_put_u64(w, f->msg_counter);
    tern_wbuf_put_u64(w, f->sub_counter);
    /* Cumulative counters only; gauges are recomputed from the state. */
    tern_wbuf_put_u64(w, st->dropped_queue_full);
    tern_wbuf_put_u64(w, st->dropped_expired);
    tern_wbuf_put_u64(w, st->dropped_qos0_offline);
    tern_wbuf_put_u64(w, st->retained_rejected);
    tern_wbuf_put_u64(w, st->sessions_expired);
    tern_wbuf_put_u64(w, st->wills_published);
    tern_wbuf_put_u64(w, st->applied);
}

static void put_origins(struct tern_wbuf *w, const struct tern_fsm *f)
{
    tern_wbuf_put_u32(w, (uint32_t)f->origin_count);
    for (size_t i = 0; i < f->origin_count; i++) { /* sorted by node */
        const struct fsm_origin *o = &f->origins[i];
        tern_wbuf_put_u32(w, o->node);
        tern_wbuf_put_u64(w, o->high);
        tern_wbuf_put_u64(w, o->last_used);
        /* Every sequence up to high applied: the old window, full. */
        for (size_t k = 0; k < FSM_SNAP_ORIGIN_WINDOW_WORDS; k++)
            tern_wbuf_put_u64(w, UINT64_MAX);
    }
}

static void put_msg(struct tern_wbuf *w, const struct tern_msg *m)
{
    tern_wbuf_put_u64(w, m->id);
    tern_wbuf_put_u32(w, m->refcount);
    tern_wbuf_put_u8(w, m->qos);
    tern_wbuf_put_u8(w, m->retain ? 1 : 0);
    tern_wbuf_put_u8(w, m->flags);
    tern_wbuf_put_u8(w, m->payload_format);
    tern_wbuf_put_u32(w, m->expiry_s);
    tern_wbuf_put_u64(w, m->created_ms);
    tern_wbuf_put_u64(w, m->expire_at_ms);
    tern_wbuf_put_u32(w, m->from_node);
    tern_wbuf_put_lbytes(w, m->topic.ptr, m->topic.len);
    tern_wbuf_put_lbytes(w, m->payload.ptr, m->payload.len);
    tern_wbuf_put_lbytes(w, m->content_type.ptr, m->content_type.len);
    tern_wbuf_put_lbytes(w, m->response_topic.ptr, m->response_topic.len);
    tern_wbuf_put_lbytes(w, m->correlation_data.ptr, m->correlation_data.len);
    tern_wbuf_put_lbytes(w, m->user.ptr, m->user.len);
}

static void put_entry(struct tern_wbuf *w, const struct fsm_entry *e)
{
    tern_wbuf_put_u64(w, e->msg ? e->msg->id : 0);
    tern_wbuf_put_u8(w, e->qos);
    tern_wbuf_put_u8(w, e->retain ? 1 : 0);
    tern_wbuf_put_u8(w, e->nids);
    for (uint8_t i = 0; i < e->nids; i++)
        tern_wbuf_put_u32(w, e->ids[i]);
}

static void put_subs(struct tern_wbuf *w, const struct tern_fsm_session *s)
{
    tern_wbuf_put_u32(w, fsm_session_sub_count(s));
    for (const struct fsm_sub *u = s->subs; u; u = u->next) { /* seq order */
        tern_wbuf_put_lbytes(w, u->filter, u->filter_len);
        tern_wbuf_put_u8(w, u->options);
        tern_wbuf_put_u32(w, u->sub_id);
        tern_wbuf_put_u64(w, u->seq);
    }
}

static int u16_cmp(const void *a, const void *b)
{
    uint16_t x = *(const uint16_t *)a, y = *(const uint16_t *)b;
    return (x > y) - (x < y);
}

/* Inbound ids are a set; the array order is an accident of removals. */
static void put_inbound(struct tern_wbuf *w, const struct fsm_session_state *st)
{
    size_t n = st->inbound_count;
    uint16_t *ids = malloc((n ? n : 1) * sizeof(*ids));
    if (!ids) {
        if (!w->err)
            w->err = TERN_ENOMEM;
        return;
    }
    if (n)
        memcpy(ids, st->inbound, n * sizeof(*ids));
    qsort(ids, n, sizeof(*ids), u16_cmp);
    tern_wbuf_put_u32(w, (uint32_t)n);
    for (size_t i = 0; i < n; i++)
        tern_wbuf_put_u16(w, ids[i]);
    free(ids);
}

static void put_session(struct tern_wbuf *w, const struct tern_fsm_session *s)
{
    const struct fsm_session_state *st = s->st;
    tern_wbuf_put_lbytes(w, s->client_id, s->client_id_len);
    tern_wbuf_put_u32(w, s->owner_node);
    tern_wbuf_put_u64(w, s->epoch);
    tern_wbuf_put_u8(w, s->proto);
    tern_wbuf_put_u8(w, s->online ? 1 : 0);
    tern_wbuf_put_u16(w, s->receive_max);
    tern_wbuf_put_u32(w, s->expiry_s);
    tern_wbuf_put_u64(w, s->offline_since_ms);
    tern_wbuf_put_u64(w, st->will ? st->will->id : 0);
    tern_wbuf_put_u32(w, st->will_delay_s);
    tern_wbuf_put_u64(w, st->will_at_ms);
    tern_wbuf_put_u16(w, s->next_packet_id);
    put_subs(w, s);
    tern_wbuf_put_u32(w, st->queued);
    for (const struct fsm_qent *q = st->q_head; q; q = q->next)
        put_entry(w, &q->e);
    tern_wbuf_put_u32(w, st->flight_count);
    for (uint32_t i = 0; i < st->flight_count; i++) { /* send order */
        const struct fsm_flight *fl = fsm_flight_at(st, i);
        tern_wbuf_put_u16(w, fl->packet_id);
        tern_wbuf_put_u8(w, fl->state);
        put_entry(w, &fl->e);
    }
    put_inbound(w, st);
}

static int group_collect(void *ctx, void *val)
{
    struct snap_ctx *x = ctx;
    if (fsm_grow((void **)&x->groups, &x->groups_cap, x->ngroups + 1,
                 sizeof(*x->groups)) != TERN_OK)
        return TERN_ENOMEM;
    x->groups[x->ngroups++] = val;
    return 0;
}

static int group_key_cmp(const void *a, const void *b)
{
    const struct fsm_group *x = *(const struct fsm_group *const *)a;
    const struct fsm_group *y = *(const struct fsm_group *const *)b;
    size_t n = x->key_len < y->key_len ? x->key_len : y->key_len;
    int c = memcmp(x->key, y->key, n);
    return c ? c : (x->key_len > y->key_len) - (x->key_len < y->key_len);
}

static int put_groups(struct snap_ctx *x, const struct tern_fsm *f)
{
    if (fsm_map_walk(&f->groups, group_collect, x) != 0)
        return TERN_ENOMEM;
    const struct fsm_group **g = x->groups;
    if (x->ngroups > 1)
        qsort(g, x->ngroups, sizeof(*g), group_key_cmp);
    tern_wbuf_put_u32(&x->w, (uint32_t)x->ngroups);
    for (size_t i = 0; i < x->ngroups; i++) {
        tern_wbuf_put_lbytes(&x->w, g[i]->key, g[i]->key_len);
        tern_wbuf_put_u64(&x->w, g[i]->next);
    }
    return TERN_OK;
}

static void put_retained(struct snap_ctx *x, const struct tern_fsm *f)
{
    /* The message table is in id order; retained ones are those in the tree. */
    tern_wbuf_put_u32(&x->w, (uint32_t)f->stats.retained);
    uint32_t n = 0;
    for (size_t i = 0; i < x->nmsgs; i++) {
        const struct tern_msg *m = x->msgs[i];
        if (tern_topic_tree_get(f->retained, (const char *)m->topic.ptr, m->topic.len) ==
            m) {
            tern_wbuf_put_u64(&x->w, m->id);
            n++;
        }
    }
    if (n != f->stats.retained && !x->w.err)
        x->w.err = TERN_EINVAL; /* the retained count is off: a bug, say so */
}

static int put_routes(struct tern_wbuf *w, const struct tern_fsm *f)
{
    struct fsm_route **v;
    size_t n;
    if (fsm_routes_sorted(f, &v, &n) != TERN_OK)
        return TERN_ENOMEM;
    tern_wbuf_put_u32(w, (uint32_t)n);
    for (size_t i = 0; i < n; i++) {
        tern_wbuf_put_lbytes(w, v[i]->key, v[i]->filter_len);
        tern_wbuf_put_u32(w, v[i]->node);
    }
    free(v);
    return TERN_OK;
}

/* Members: written always (format 1 readers treat it as optional). */
static void put_members(struct tern_wbuf *w, const struct tern_fsm *f)
{
    tern_wbuf_put_u32(w, f->member_count);
    for (uint32_t i = 0; i < f->member_count; i++) { /* ascending id */
        const struct tern_fsm_member *m = &f->members[i];
        tern_wbuf_put_u32(w, m->id);
        tern_wbuf_put_lbytes(w, m->raft, strlen(m->raft));
        tern_wbuf_put_lbytes(w, m->peer, strlen(m->peer));
        tern_wbuf_put_lbytes(w, m->mqtt, strlen(m->mqtt));
    }
}

/* Format 2: the bounds in force, replicated state like the rest (LIMITS). */
static void put_limits(struct tern_wbuf *w, const struct tern_fsm *f)
{
    const struct tern_fsm_limits *l = &f->limits;
    tern_wbuf_put_u16(w, l->inflight_max);
    tern_wbuf_put_u32(w, l->queue_max);
    tern_wbuf_put_u64(w, l->queue_bytes_max);
    tern_wbuf_put_u8(w, l->queue_qos0 ? 1 : 0);
    tern_wbuf_put_u8(w, l->drop_policy);
    tern_wbuf_put_u32(w, l->retained_max);
    tern_wbuf_put_u64(w, l->retained_bytes_max);
    tern_wbuf_put_u32(w, l->session_expiry_max_s);
    tern_wbuf_put_u32(w, l->message_expiry_max_s);
    tern_wbuf_put_u32(w, l->sessions_max);
}

static int snap_write(const struct tern_fsm *f, struct snap_ctx *x)
{
    tern_snap_begin(&x->w);
    put_counters(&x->w, f);
    put_origins(&x->w, f);
    tern_wbuf_put_u32(&x->w, (uint32_t)x->nmsgs);
    for (size_t i = 0; i < x->nmsgs; i++)
        put_msg(&x->w, x->msgs[i]);
    tern_wbuf_put_u32(&x->w, (uint32_t)x->nsess);
    for (size_t i = 0; i < x->nsess; i++)
        put_session(&x->w, x->sess[i]);
    put_retained(x, f);
    if (put_groups(x, f) != TERN_OK || put_routes(&x->w, f) != TERN_OK)
        return TERN_ENOMEM;
    put_members(&x->w, f);
    put_limits(&x->w, f);
    return tern_snap_finish(&x->w);
}

int tern_fsm_snapshot(const struct tern_fsm *f, uint8_t **out, size_t *out_len)
{
    struct snap_ctx x = {0};
    tern_wbuf_init(&x.w);
    int rc = snap_collect(f, &x);
    if (rc == TERN_OK)
        rc = snap_write(f, &x);
    free(x.sess);
    free(x.msgs);
    free(x.groups);
    if (rc != TERN_OK) {
        tern_wbuf_free(&x.w);
        return rc;
    }
    return tern_wbuf_take(&x.w, out, out_len);
}
