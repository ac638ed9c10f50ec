/* Snapshot reader: rebuilds an FSM from tern_fsm_snapshot()'s bytes.
 *
 * Nothing in a snapshot is trusted: the frame is checked first (storage/), then
 * every field as it is read — references to messages that do not exist,
 * duplicate client ids, subscriptions or packet ids, counts larger than the
 * bytes left, refcounts that disagree with the references — and the first
 * problem stops the restore with TERN_ECORRUPT.
 *
 * The new state is built in a separate FSM and moved into the target only when
 * all of it is valid, so a failed restore leaves the target as it was; a
 * successful one ends with the observer's `restored`.
 * Messages are created first, each holding one reference for the restore's own
 * table; every reference read adds one, and at the end each message must have
 * exactly the refcount the snapshot states. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fsm_internal.h"
#include "tern/storage.h"

/* Smallest encodings, to bound counts before allocating (docs/disk-format.md). */
#define MIN_MSG (8 + 4 + 4 + 4 + 8 + 8 + 4 + 6 * 4)
#define MIN_SESSION (4 + 4 + 8 + 1 + 1 + 2 + 4 + 8 + 8 + 4 + 8 + 2 + 4 * 4)
#define MIN_SUB (4 + 1 + 4 + 8)
#define MIN_ENTRY (8 + 1 + 1 + 1)
#define MIN_FLIGHT (2 + 1 + MIN_ENTRY)
#define MIN_ORIGIN (4 + 8 + 8 + FSM_SNAP_ORIGIN_WINDOW_WORDS * 8)
#define MIN_GROUP (4 + 8)
#define MIN_ROUTE (4 + 4)
#define MIN_MEMBER (4 + 3 * 4)
#define STR16_MAX 65535u

struct rs {
    struct tern_rbuf r;
    uint16_t version;      /* body format (TERN_SNAP_VERSION_MIN..) */
    struct tern_fsm *nf;   /* the state being built */
    struct tern_msg **msg; /* by ascending id */
    uint32_t *msg_refs;    /* refcount each message states */
    size_t nmsg;
    uint64_t *seqs; /* every subscription seq, to check they are unique */
    size_t nseqs, seqs_cap;
    const char *what; /* first field found bad */
};

static bool bad(struct rs *x, bool cond, const char *what)
{
    if (cond && !x->r.err) {
        tern_rbuf_fail(&x->r, TERN_ECORRUPT);
        x->what = what;
    }
    return cond;
}

static bool nomem(struct rs *x, bool cond)
{
    if (cond && !x->r.err) {
        tern_rbuf_fail(&x->r, TERN_ENOMEM);
        x->what = "allocation";
    }
    return cond;
}

static bool get_bool(struct rs *x, const char *what)
{
    uint8_t v = tern_rbuf_get_u8(&x->r);
    bad(x, v > 1, what);
    return v == 1;
}

static bool count_ok(struct rs *x, uint64_t n, size_t min_item, const char *what)
{
    if (x->r.err)
        return false;
    if (!tern_rbuf_count_ok(&x->r, n, min_item)) {
        x->what = what;
        return false;
    }
    return true;
}

static struct tern_bytes get_str(struct rs *x, uint32_t max, const char *what)
{
    uint32_t n;
    const uint8_t *p = tern_rbuf_get_lbytes(&x->r, &n);
    bad(x, !x->r.err && n > max, what);
    if (!x->what && x->r.err)
        x->what = what;
    return (struct tern_bytes){p, n};
}

/* The message with this id (0 and unknown ids are corrupt). */
static struct tern_msg *msg_ref(struct rs *x, uint64_t id, const char *what)
{
    size_t lo = 0, hi = x->nmsg;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (x->msg[mid]->id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (bad(x, id == 0 || lo == x->nmsg || x->msg[lo]->id != id, what))
        return NULL;
    fsm_msg_ref(x->msg[lo]);
    return x->msg[lo];
}

/* --- counters, origins --- */

static void get_counters(struct rs *x)
{
    struct tern_fsm *f = x->nf;
    f->epoch_counter = tern_rbuf_get_u64(&x->r);
    f->msg_counter = tern_rbuf_get_u64(&x->r);
    f->sub_counter = tern_rbuf_get_u64(&x->r);
    f->stats.dropped_queue_full = tern_rbuf_get_u64(&x->r);
    f->stats.dropped_expired = tern_rbuf_get_u64(&x->r);
    f->stats.dropped_qos0_offline = tern_rbuf_get_u64(&x->r);
    f->stats.retained_rejected = tern_rbuf_get_u64(&x->r);
    f->stats.sessions_expired = tern_rbuf_get_u64(&x->r);
    f->stats.wills_published = tern_rbuf_get_u64(&x->r);
    f->stats.applied = tern_rbuf_get_u64(&x->r);
}

static void get_origin(struct rs *x, struct fsm_origin *o, const struct fsm_origin *prev)
{
    o->node = tern_rbuf_get_u32(&x->r);
    o->high = tern_rbuf_get_u64(&x->r);
    o->last_used = tern_rbuf_get_u64(&x->r);
    /* The window of older versions: proposals now apply in order, so every
     * sequence up to high has applied and the window says nothing more. */
    uint64_t slot = o->high % (FSM_SNAP_ORIGIN_WINDOW_WORDS * 64), high_bit = 0;
    for (size_t k = 0; k < FSM_SNAP_ORIGIN_WINDOW_WORDS; k++) {
        uint64_t word = tern_rbuf_get_u64(&x->r);
        if (k == slot / 64)
            high_bit = (word >> (slot % 64)) & 1u;
    }
    bad(x, prev && o->node <= prev->node, "origin order");
    bad(x, o->high > FSM_PROPOSAL_SEQ_MASK, "origin sequence");
    /* The highest sequence is always one that applied. */
    bad(x, !high_bit, "origin window");
}

static void get_origins(struct rs *x)
{
    struct tern_fsm *f = x->nf;
    uint32_t n = tern_rbuf_get_u32(&x->r);
    if (bad(x, n > FSM_ORIGINS_MAX, "origin count") ||
        !count_ok(x, n, MIN_ORIGIN, "origin count") || n == 0)
        return;
    if (nomem(x, fsm_grow((void **)&f->origins, &f->origin_cap, n, sizeof(*f->origins)) !=
                     TERN_OK))
        return;
    for (uint32_t i = 0; i < n && !x->r.err; i++)
        get_origin(x, &f->origins[i], i ? &f->origins[i - 1] : NULL);
    f->origin_count = x->r.err ? 0 : n;
}

/* --- messages --- */

static bool msg_fields_ok(const struct tern_cmd_msg *cm)
{
    const uint8_t known = TERN_MSG_HAS_PAYLOAD_FORMAT | TERN_MSG_HAS_EXPIRY |
                          TERN_MSG_HAS_CONTENT_TYPE | TERN_MSG_HAS_RESPONSE_TOPIC |
                          TERN_MSG_HAS_CORRELATION;
    return cm->qos <= 2 && (cm->flags & ~known) == 0 && cm->topic.len <= STR16_MAX &&
           fsm_cmd_msg_valid(cm);
}

static struct tern_msg *get_msg(struct rs *x, uint64_t prev_id, uint32_t *refs)
{
    uint64_t id = tern_rbuf_get_u64(&x->r);
    *refs = tern_rbuf_get_u32(&x->r);
    struct tern_cmd_msg cm = {.qos = tern_rbuf_get_u8(&x->r)};
    cm.retain = get_bool(x, "message retain");
    cm.flags = tern_rbuf_get_u8(&x->r);
    cm.payload_format = tern_rbuf_get_u8(&x->r);
    cm.expiry_s = tern_rbuf_get_u32(&x->r);
    uint64_t created_ms = tern_rbuf_get_u64(&x->r);
    uint64_t expire_at_ms = tern_rbuf_get_u64(&x->r);
    uint32_t from_node = tern_rbuf_get_u32(&x->r);
    cm.topic = get_str(x, STR16_MAX, "message topic");
    cm.payload = get_str(x, UINT32_MAX, "message payload");
    cm.content_type = get_str(x, STR16_MAX, "message content type");
    cm.response_topic = get_str(x, STR16_MAX, "message response topic");
    cm.correlation_data = get_str(x, STR16_MAX, "message correlation data");
    cm.user = get_str(x, UINT32_MAX, "message user properties");
    if (x->r.err || bad(x, id <= prev_id || id > x->nf->msg_counter, "message id") ||
        bad(x, *refs == 0, "message refcount") || bad(x, !msg_fields_ok(&cm), "message"))
        return NULL;
    uint64_t counter = x->nf->msg_counter;
    struct tern_msg *m = fsm_msg_new(x->nf, &cm, created_ms, from_node);
    x->nf->msg_counter = counter; /* fsm_msg_new numbered it: undo */
    if (nomem(x, m == NULL))
        return NULL;
    m->id = id;
    m->created_ms = created_ms;
    m->expire_at_ms = expire_at_ms;
    return m;
}

static void get_msgs(struct rs *x)
{
    uint32_t n = tern_rbuf_get_u32(&x->r);
    if (!count_ok(x, n, MIN_MSG, "message count") || n == 0)
        return;
    x->msg = calloc(n, sizeof(*x->msg));
    x->msg_refs = calloc(n, sizeof(*x->msg_refs));
    if (nomem(x, !x->msg || !x->msg_refs))
        return;
    for (uint32_t i = 0; i < n && !x->r.err; i++) {
        struct tern_msg *m = get_msg(x, i ? x->msg[i - 1]->id : 0, &x->msg_refs[i]);
        if (m)
            x->msg[x->nmsg++] = m;
    }
}

/* --- sessions --- */

static void get_entry(struct rs *x, struct fsm_entry *e, bool need_msg)
{
    uint64_t id = tern_rbuf_get_u64(&x->r);
    e->qos = tern_rbuf_get_u8(&x->r);
    e->retain = get_bool(x, "entry retain");
    e->nids = tern_rbuf_get_u8(&x->r);
    if (bad(x, e->qos > 2, "entry qos") ||
        bad(x, e->nids > TERN_MAX_SUB_IDS, "entry subscription ids"))
        return;
    for (uint8_t i = 0; i < e->nids; i++)
        e->ids[i] = tern_rbuf_get_u32(&x->r);
    if (x->r.err)
        return;
    if (need_msg)
        e->msg = msg_ref(x, id, "entry message");
    else
        bad(x, id != 0, "released entry with a message");
}

static bool seq_add(struct rs *x, uint64_t seq)
{
    if (nomem(x, fsm_grow((void **)&x->seqs, &x->seqs_cap, x->nseqs + 1,
                          sizeof(*x->seqs)) != TERN_OK))
        return false;
    x->seqs[x->nseqs++] = seq;
    return true;
}

static void get_sub(struct rs *x, struct tern_fsm_session *s, struct fsm_sub ***tail,
                    uint64_t *prev_seq)
{
    struct tern_bytes fb = get_str(x, STR16_MAX, "subscription filter");
    uint8_t options = tern_rbuf_get_u8(&x->r);
    uint32_t sub_id = tern_rbuf_get_u32(&x->r);
    uint64_t seq = tern_rbuf_get_u64(&x->r);
    const char *fs = (const char *)fb.ptr;
    if (x->r.err || bad(x, !tern_topic_filter_valid(fs, fb.len), "subscription filter") ||
        bad(x, fsm_sub_find(s, fs, fb.len) != NULL, "duplicate subscription") ||
        bad(x, seq <= *prev_seq || seq > x->nf->sub_counter, "subscription seq") ||
        !seq_add(x, seq))
        return;
    *prev_seq = seq;
    struct fsm_sub *u = fsm_sub_new(x->nf, s, fb, options, sub_id, seq);
    if (nomem(x, !u))
        return;
    int rc = fsm_sub_index(x->nf, u);
    if (nomem(x, rc == TERN_ENOMEM) || bad(x, rc != TERN_OK, "subscription filter"))
        goto err;
    **tail = u;
    *tail = &u->next;
    x->nf->stats.subscriptions++;
    return;
err:
    fsm_sub_free(x->nf, u);
}

static void get_subs(struct rs *x, struct tern_fsm_session *s)
{
    uint32_t n = tern_rbuf_get_u32(&x->r);
    if (!count_ok(x, n, MIN_SUB, "subscription count") || n == 0)
        return;
    struct fsm_sub **tail = &s->subs;
    uint64_t prev_seq = 0;
    for (uint32_t i = 0; i < n && !x->r.err; i++)
        get_sub(x, s, &tail, &prev_seq);
}

static void get_queue(struct rs *x, struct tern_fsm_session *s)
{
    uint32_t n = tern_rbuf_get_u32(&x->r);
    if (!count_ok(x, n, MIN_ENTRY, "queue count") || n == 0)
        return;
    struct fsm_session_state *st = fsm_session_state_mut(x->nf, s);
    if (nomem(x, !st))
        return;
    for (uint32_t i = 0; i < n && !x->r.err; i++) {
        struct fsm_qent *q = calloc(1, sizeof(*q));
        if (nomem(x, !q))
            return;
        get_entry(x, &q->e, true);
        if (!q->e.msg) {
            free(q);
            return;
        }
        if (st->q_tail)
            st->q_tail->next = q;
        else
            st->q_head = q;
        st->q_tail = q;
        st->queued++;
        st->queued_bytes += fsm_msg_bytes(q->e.msg);
        x->nf->stats.queued++;
    }
}

static void get_flight_one(struct rs *x, struct tern_fsm_session *s)
{
    struct fsm_flight fl = {.packet_id = tern_rbuf_get_u16(&x->r),
                            .state = tern_rbuf_get_u8(&x->r)};
    bool sent = fl.state == FSM_SENT;
    if (x->r.err || bad(x, fl.packet_id == 0, "in-flight packet id") ||
        bad(x, fsm_flight_find(s, fl.packet_id) >= 0, "duplicate in-flight packet id") ||
        bad(x, !sent && fl.state != FSM_REL, "in-flight state"))
        return;
    get_entry(x, &fl.e, sent);
    if (x->r.err)
        return;
    if (bad(x, sent ? fl.e.qos == 0 : fl.e.qos != 2, "in-flight qos")) {
        fsm_msg_unref(x->nf, fl.e.msg);
        return;
    }
    /* get_flight made the state and reserved n <= FSM_PACKET_ID_MAX entries */
    fsm_flight_push(x->nf, fsm_session_state_own(s), &fl);
}

static void get_flight(struct rs *x, struct tern_fsm_session *s)
{
    uint32_t n = tern_rbuf_get_u32(&x->r);
    if (!count_ok(x, n, MIN_FLIGHT, "in-flight count") || n == 0 ||
        bad(x, n > FSM_PACKET_ID_MAX, "in-flight count"))
        return;
    struct fsm_session_state *st = fsm_session_state_mut(x->nf, s);
    if (nomem(x, !st || fsm_flight_reserve(st, n) != TERN_OK))
        return;
    for (uint32_t i = 0; i < n && !x->r.err; i++)
        get_flight_one(x, s);
}

/* Ids ascend strictly from 1, so at most 65535 of them pass the check (the
 * 65536th would have to exceed 65535): room for 65535 is enough. */
static void get_inbound(struct rs *x, struct tern_fsm_session *s)
{
    uint32_t n = tern_rbuf_get_u32(&x->r);
    if (!count_ok(x, n, 2, "inbound count") || n == 0)
        return;
    struct fsm_session_state *st = fsm_session_state_mut(x->nf, s);
    size_t cap = st ? st->inbound_cap : 0;
    size_t room = n < FSM_PACKET_ID_MAX ? n : FSM_PACKET_ID_MAX;
    if (nomem(x, !st || fsm_grow((void **)&st->inbound, &cap, room,
                                 sizeof(*st->inbound)) != TERN_OK))
        return;
    st->inbound_cap = (uint32_t)cap; /* <= 65536 */
    for (uint32_t i = 0; i < n && !x->r.err; i++) {
        uint16_t id = tern_rbuf_get_u16(&x->r);
        if (bad(x, i >= room || id == 0 || (i && id <= st->inbound[i - 1]),
                "inbound ids"))
            return;
        st->inbound[st->inbound_count++] = id;
    }
}

/* The session's own fields; it is in the map already, so a failure anywhere
 * later frees it with the rest. */
static void get_session_fields(struct rs *x, struct tern_fsm_session *s)
{
    s->owner_node = tern_rbuf_get_u32(&x->r);
    s->epoch = tern_rbuf_get_u64(&x->r);
    s->proto = tern_rbuf_get_u8(&x->r);
    s->online = get_bool(x, "session online");
    s->receive_max = tern_rbuf_get_u16(&x->r);
    s->expiry_s = tern_rbuf_get_u32(&x->r);
    s->offline_since_ms = tern_rbuf_get_u64(&x->r);
    uint64_t will_id = tern_rbuf_get_u64(&x->r);
    uint32_t will_delay_s = tern_rbuf_get_u32(&x->r);
    uint64_t will_at_ms = tern_rbuf_get_u64(&x->r);
    s->next_packet_id = tern_rbuf_get_u16(&x->r);
    uint8_t p = s->proto;
    if (x->r.err ||
        bad(x, p != TERN_MQTT_31 && p != TERN_MQTT_311 && p != TERN_MQTT_5,
            "session proto") ||
        bad(x, s->epoch == 0 || s->epoch > x->nf->epoch_counter, "session epoch") ||
        bad(x, will_at_ms && (!will_id || s->online), "session will time"))
        return;
    if (s->online)
        x->nf->stats.sessions_online++;
    if (!will_id && !will_delay_s) /* will_at_ms is 0 too: the empty state */
        return;
    struct fsm_session_state *st = fsm_session_state_mut(x->nf, s);
    if (nomem(x, !st))
        return;
    st->will_delay_s = will_delay_s;
    st->will_at_ms = will_at_ms;
    if (will_id)
        st->will = msg_ref(x, will_id, "session will");
}

static struct tern_fsm_session *session_add(struct rs *x, struct tern_bytes id)
{
    struct tern_fsm *f = x->nf;
    if (bad(x, id.len == 0, "client id") ||
        bad(x, fsm_session_find(f, id) != NULL, "duplicate client id"))
        return NULL;
    struct tern_fsm_session *s = fsm_session_alloc(f, id); /* id.len <= 65535 */
    nomem(x, !s);
    return s;
}

static void get_session(struct rs *x, uint64_t *prev_epoch)
{
    struct tern_bytes id = get_str(x, STR16_MAX, "client id");
    struct tern_fsm_session *s = x->r.err ? NULL : session_add(x, id);
    if (!s)
        return;
    get_session_fields(x, s);
    if (bad(x, !x->r.err && s->epoch <= *prev_epoch, "session order"))
        return;
    *prev_epoch = s->epoch;
    get_subs(x, s);
    get_queue(x, s);
    get_flight(x, s);
    get_inbound(x, s);
}

static void get_sessions(struct rs *x)
{
    uint32_t n = tern_rbuf_get_u32(&x->r);
    if (!count_ok(x, n, MIN_SESSION, "session count"))
        return;
    uint64_t prev_epoch = 0;
    for (uint32_t i = 0; i < n && !x->r.err; i++)
        get_session(x, &prev_epoch);
}

/* --- retained, groups, routes --- */

static void get_retained_one(struct rs *x, uint64_t id)
{
    struct tern_fsm *f = x->nf;
    struct tern_msg *m = msg_ref(x, id, "retained message");
    if (!m)
        return;
    const char *t = (const char *)m->topic.ptr;
    int rc = TERN_EINVAL;
    if (m->retain && m->payload.len > 0 &&
        !tern_topic_tree_get(f->retained, t, m->topic.len))
        rc = tern_topic_tree_add(f->retained, t, m->topic.len, m);
    if (nomem(x, rc == TERN_ENOMEM) || bad(x, rc != TERN_OK, "retained message")) {
        fsm_msg_unref(f, m);
        return;
    }
    f->stats.retained++;
    f->stats.retained_bytes += m->payload.len;
}

static void get_retained(struct rs *x)
{
    uint32_t n = tern_rbuf_get_u32(&x->r);
    if (!count_ok(x, n, 8, "retained count"))
        return;
    uint64_t prev = 0;
    for (uint32_t i = 0; i < n && !x->r.err; i++) {
        uint64_t id = tern_rbuf_get_u64(&x->r);
        if (!x->r.err && !bad(x, id <= prev, "retained order"))
            get_retained_one(x, id);
        prev = id;
    }
}

static int bytes_cmp(struct tern_bytes a, struct tern_bytes b)
{
    size_t n = a.len < b.len ? a.len : b.len;
    int c = n ? memcmp(a.ptr, b.ptr, n) : 0;
    return c ? c : (a.len > b.len) - (a.len < b.len);
}

/* Groups exist once their subscriptions are restored; this sets their
 * round-robin counters, and must name each of them exactly once. */
static void get_groups(struct rs *x)
{
    uint32_t n = tern_rbuf_get_u32(&x->r);
    if (bad(x, !x->r.err && n != fsm_map_count(&x->nf->groups), "group count") ||
        !count_ok(x, n, MIN_GROUP, "group count"))
        return;
    struct tern_bytes prev = {0};
    for (uint32_t i = 0; i < n && !x->r.err; i++) {
        struct tern_bytes k = get_str(x, 2 * STR16_MAX, "group key");
        uint64_t next = tern_rbuf_get_u64(&x->r);
        if (x->r.err || bad(x, i && bytes_cmp(prev, k) >= 0, "group order"))
            return;
        struct fsm_group *g = fsm_map_get(&x->nf->groups, (const char *)k.ptr, k.len);
        if (bad(x, g == NULL, "group key"))
            return;
        g->next = next;
        prev = k;
    }
}

static void get_routes(struct rs *x)
{
    uint32_t n = tern_rbuf_get_u32(&x->r);
    if (bad(x, n > FSM_ROUTES_MAX, "route count") ||
        !count_ok(x, n, MIN_ROUTE, "route count"))
        return;
    struct tern_bytes prev = {0};
    uint32_t prev_node = 0;
    for (uint32_t i = 0; i < n && !x->r.err; i++) {
        struct tern_bytes fb = get_str(x, STR16_MAX, "route filter");
        uint32_t node = tern_rbuf_get_u32(&x->r);
        if (x->r.err)
            return;
        int c = i ? bytes_cmp(prev, fb) : -1;
        if (bad(x, c > 0 || (c == 0 && prev_node >= node), "route order"))
            return;
        int rc = fsm_route_add(x->nf, (const char *)fb.ptr, fb.len, node);
        if (nomem(x, rc == TERN_ENOMEM) || bad(x, rc != TERN_OK, "route filter"))
            return;
        prev = fb;
        prev_node = node;
    }
}

/* --- members --- */

static void get_addr(struct rs *x, char *dst, const char *what)
{
    struct tern_bytes b = get_str(x, TERN_MEMBER_ADDR_MAX, what);
    if (x->r.err || bad(x, b.len && memchr(b.ptr, 0, b.len) != NULL, what))
        return;
    if (b.len)
        memcpy(dst, b.ptr, b.len);
    dst[b.len] = '\0';
}

/* Format 1: optional (snapshots from before members existed end after the
 * routes). Format 2: always there. */
static void get_members(struct rs *x)
{
    if (x->r.err || (x->version == 1 && tern_rbuf_left(&x->r) == 0))
        return;
    uint32_t n = tern_rbuf_get_u32(&x->r);
    if (bad(x, n > TERN_FSM_MEMBERS_MAX, "member count") ||
        !count_ok(x, n, MIN_MEMBER, "member count"))
        return;
    uint32_t prev = 0;
    for (uint32_t i = 0; i < n && !x->r.err; i++) {
        struct tern_fsm_member m = {.id = tern_rbuf_get_u32(&x->r)};
        get_addr(x, m.raft, "member raft");
        get_addr(x, m.peer, "member peer");
        get_addr(x, m.mqtt, "member mqtt");
        if (x->r.err || bad(x, m.id <= prev, "member order"))
            return;
        fsm_member_put(x->nf, &m); /* fits: n is bounded above */
        prev = m.id;
    }
}

/* Format 2 only; format 1 snapshots restore with the defaults, on every
 * replica alike (they were written when each node used its own). The same
 * bounds as the LIMITS command. */
static void get_limits(struct rs *x)
{
    struct tern_fsm_limits *l = &x->nf->limits;
    tern_fsm_limits_default(l);
    if (x->r.err || x->version < 2)
        return;
    l->inflight_max = tern_rbuf_get_u16(&x->r);
    l->queue_max = tern_rbuf_get_u32(&x->r);
    l->queue_bytes_max = tern_rbuf_get_u64(&x->r);
    l->queue_qos0 = get_bool(x, "limits queue_qos0");
    l->drop_policy = tern_rbuf_get_u8(&x->r);
    l->retained_max = tern_rbuf_get_u32(&x->r);
    l->retained_bytes_max = tern_rbuf_get_u64(&x->r);
    l->session_expiry_max_s = tern_rbuf_get_u32(&x->r);
    l->message_expiry_max_s = tern_rbuf_get_u32(&x->r);
    l->sessions_max = tern_rbuf_get_u32(&x->r);
    if (x->r.err) {
        x->what = x->what ? x->what : "limits";
        return;
    }
    bad(x,
        l->inflight_max == 0 || l->queue_max == 0 || l->queue_bytes_max == 0 ||
            l->drop_policy > TERN_DROP_NEW || l->sessions_max == 0,
        "limits");
}

/* --- whole body --- */

static int u64_cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* Cross-checks once everything is read: unique subscription seqs, and every
 * message referenced exactly as often as its refcount says. */
static void check_refs(struct rs *x)
{
    if (x->nseqs > 1)
        qsort(x->seqs, x->nseqs, sizeof(*x->seqs), u64_cmp);
    for (size_t i = 1; i < x->nseqs; i++)
        bad(x, x->seqs[i] == x->seqs[i - 1], "duplicate subscription seq");
    for (size_t i = 0; i < x->nmsg; i++) /* minus the table's own reference */
        bad(x, x->msg[i]->refcount - 1 != x->msg_refs[i], "message refcount");
}

static void get_body(struct rs *x)
{
    get_counters(x);
    get_origins(x);
    get_msgs(x);
    get_sessions(x);
    get_retained(x);
    get_groups(x);
    get_routes(x);
    get_members(x);
    get_limits(x);
    bad(x, !x->r.err && tern_rbuf_left(&x->r) != 0, "trailing bytes");
    if (!x->r.err)
        check_refs(x);
}

/* Frees dst's replicated state and moves src's into it; src's shell is freed.
 * dst keeps its configuration, observer and scratch space. */
static void state_move(struct tern_fsm *dst, struct tern_fsm *src)
{
    fsm_state_free(dst);
    dst->slab = src->slab; /* the sessions' and subscriptions' pages */
    dst->sessions = src->sessions;
    dst->groups = src->groups;
    dst->subs = src->subs;
    dst->retained = src->retained;
    dst->routes = src->routes;
    dst->route_tree = src->route_tree;
    dst->session_timers = src->session_timers; /* positions stay valid */
    dst->retained_timers = src->retained_timers;
    memcpy(dst->members, src->members, sizeof(dst->members));
    dst->member_count = src->member_count;
    dst->origins = src->origins;
    dst->origin_count = src->origin_count;
    dst->origin_cap = src->origin_cap;
    dst->epoch_counter = src->epoch_counter;
    dst->msg_counter = src->msg_counter;
    dst->sub_counter = src->sub_counter;
    dst->mark_counter = src->mark_counter;
    dst->stats = src->stats;
    dst->limits = src->limits;
    free(src->match);
    free(src->pend);
    free(src);
}

static int restore_fail(const struct rs *x, char *errmsg)
{
    if (errmsg)
        snprintf(errmsg, TERN_ERRMSG_SIZE, "snapshot: bad %s at body byte %zu",
                 x->what ? x->what : "data", x->r.pos);
    return x->r.err;
}

int tern_fsm_restore(struct tern_fsm *f, const uint8_t *buf, size_t len, char *errmsg)
{
    const uint8_t *body;
    size_t body_len;
    uint16_t version;
    int rc = tern_snap_open_version(buf, len, &body, &body_len, &version, errmsg);
    if (rc != TERN_OK)
        return rc;
    struct rs x = {.version = version, .nf = tern_fsm_new(f->self_node, NULL, NULL)};
    if (!x.nf)
        return TERN_ENOMEM;
    tern_rbuf_init(&x.r, body, body_len);
    get_body(&x);
    /* Drop the table's references: what nothing else holds is freed now. */
    for (size_t i = 0; i < x.nmsg; i++)
        fsm_msg_unref(x.nf, x.msg[i]);
    rc = x.r.err;
    if (rc == TERN_OK && fsm_timer_rebuild(x.nf) != TERN_OK) {
        rc = TERN_ENOMEM; /* the heaps are derived: built here, not read */
        x.what = "allocation";
    }
    if (rc != TERN_OK) {
        restore_fail(&x, errmsg);
        tern_fsm_free(x.nf);
    } else {
        state_move(f, x.nf);
    }
    free(x.msg);
    free(x.msg_refs);
    free(x.seqs);
    /* Nothing the snapshot holds went through apply, so no effect told the
     * owner about it: it reconciles with the whole new state here. */
    if (rc == TERN_OK && f->obs.restored)
        f->obs.restored(f->obs.ctx, f);
    return rc;
}
