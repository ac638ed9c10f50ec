/* Unit tests of the session state machine (tern/fsm.h).
 *
 * Commands are built directly as struct tern_cmd; an observer records every
 * effect in an array, so each test checks both the state (accessors, stats) and
 * what the owner node would have been asked to send, in order. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tern/cmd.h"
#include "tern/error.h"
#include "tern/fsm.h"

#define EFF_MAX 1024
#define STR_MAX 64
#define NEVER 0xFFFFFFFFu

enum eff_kind { E_OPENED = 1, E_SUBSCRIBED, E_DELIVER, E_FENCED, E_PUBLISHED };

struct eff {
    int kind;
    char client[STR_MAX];
    bool present; /* opened */
    uint16_t pid; /* subscribed: packet id; deliver: packet id */
    char topic[STR_MAX];
    char payload[STR_MAX];
    uint8_t qos;
    bool retain, dup, pubrel;
    uint8_t nids;
    uint32_t ids[TERN_MAX_SUB_IDS];
    uint32_t owner; /* fenced */
    uint64_t epoch;
    uint8_t reason;
};

struct fx {
    struct tern_fsm *f;
    struct tern_fsm_limits lim;
    uint64_t now;
    uint64_t next_proposal;
    struct eff e[EFF_MAX];
    int n;
};

/* --- recording observer --- */

static void copy_str(char *dst, const uint8_t *p, uint32_t len)
{
    size_t n = len < STR_MAX - 1 ? len : STR_MAX - 1;
    if (n)
        memcpy(dst, p, n);
    dst[n] = 0;
}

static struct eff *eff_add(struct fx *x, int kind, const struct tern_fsm_session *s)
{
    assert_true(x->n < EFF_MAX);
    struct eff *e = &x->e[x->n++];
    memset(e, 0, sizeof(*e));
    e->kind = kind;
    if (s) {
        struct tern_bytes id = tern_fsm_session_client_id(s);
        copy_str(e->client, id.ptr, id.len);
    }
    return e;
}

static void on_opened(void *ctx, struct tern_fsm_session *s, bool present)
{
    eff_add(ctx, E_OPENED, s)->present = present;
}

static void on_subscribed(void *ctx, struct tern_fsm_session *s, uint16_t packet_id)
{
    eff_add(ctx, E_SUBSCRIBED, s)->pid = packet_id;
}

static void on_deliver(void *ctx, struct tern_fsm_session *s,
                       const struct tern_delivery *d)
{
    struct eff *e = eff_add(ctx, E_DELIVER, s);
    e->pid = d->packet_id;
    e->qos = d->qos;
    e->retain = d->retain;
    e->dup = d->dup;
    e->pubrel = d->pubrel;
    e->nids = d->sub_id_count;
    memcpy(e->ids, d->sub_ids, sizeof(e->ids));
    if (d->msg) {
        copy_str(e->topic, d->msg->topic.ptr, d->msg->topic.len);
        copy_str(e->payload, d->msg->payload.ptr, d->msg->payload.len);
    }
    /* The owner only acts on sessions it owns, and only on online ones. */
    assert_true(tern_fsm_session_online(s));
}

static void on_fenced(void *ctx, struct tern_bytes id, uint32_t owner, uint64_t epoch,
                      uint8_t reason)
{
    struct eff *e = eff_add(ctx, E_FENCED, NULL);
    copy_str(e->client, id.ptr, id.len);
    e->owner = owner;
    e->epoch = epoch;
    e->reason = reason;
}

static void on_published(void *ctx, const struct tern_msg *m)
{
    struct eff *e = eff_add(ctx, E_PUBLISHED, NULL);
    copy_str(e->topic, m->topic.ptr, m->topic.len);
    copy_str(e->payload, m->payload.ptr, m->payload.len);
    e->qos = m->qos;
}

static struct tern_fsm *fx_fsm(struct fx *x)
{
    struct tern_fsm_observer obs = {.ctx = x,
                                    .opened = on_opened,
                                    .subscribed = on_subscribed,
                                    .deliver = on_deliver,
                                    .fenced = on_fenced,
                                    .published = on_published};
    return tern_fsm_new(1, &x->lim, &obs);
}

/* Recreates the FSM with x->lim (after a test changed the limits). */
static void fx_reset(struct fx *x)
{
    tern_fsm_free(x->f);
    x->f = fx_fsm(x);
    assert_non_null(x->f);
    x->n = 0;
}

static int setup(void **state)
{
    struct fx *x = calloc(1, sizeof(*x));
    assert_non_null(x);
    tern_fsm_limits_default(&x->lim);
    x->now = 1000000;
    x->f = fx_fsm(x);
    assert_non_null(x->f);
    *state = x;
    return 0;
}

static int teardown(void **state)
{
    struct fx *x = *state;
    tern_fsm_free(x->f);
    free(x);
    return 0;
}

/* --- command helpers --- */

static struct tern_bytes B(const char *s) {
    return (struct tern_bytes){(const uint8_t *)s, (uint32_t)strlen(s)};
}

static struct tern_fsm_result
apply(struct fx *x, struct tern_cmd *c)
{
    struct tern_fsm_result r;
    c->now_ms = x->now;
    tern_fsm_apply(x->f, c, &r);
    return r;
}

struct open_opts {
    uint32_t node;
    bool clean;
    uint32_t expiry;
    uint16_t rmax;
    const char *will_topic; /* NULL: no will */
    const char *will_payload;
    uint8_t will_qos;
    bool will_retain;
    uint32_t will_delay;
};

static struct tern_fsm_result open_o(struct fx *x, const char *id, struct open_opts o)
{
    struct tern_cmd c = {.type = TERN_CMD_SESSION_OPEN};
    c.u.open.client_id = B(id);
    c.u.open.node = o.node ? o.node : 1;
    c.u.open.proto = TERN_MQTT_5;
    c.u.open.clean_start = o.clean;
    c.u.open.expiry_s = o.expiry;
    c.u.open.receive_max = o.rmax;
    if (o.will_topic) {
        c.u.open.has_will = true;
        c.u.open.will_delay_s = o.will_delay;
        c.u.open.will.topic = B(o.will_topic);
        c.u.open.will.payload = B(o.will_payload ? o.will_payload : "bye");
        c.u.open.will.qos = o.will_qos;
        c.u.open.will.retain = o.will_retain;
    }
    return apply(x, &c);
}

/* A persistent session (expiry never), resumed if it exists. */
static uint64_t open_p(struct fx *x, const char *id)
{
    struct tern_fsm_result r = open_o(x, id, (struct open_opts){.expiry = NEVER});
    assert_int_equal(r.status, TERN_OK);
    return r.epoch;
}

static uint64_t epoch_of(struct fx *x, const char *id)
{
    struct tern_fsm_session *s = tern_fsm_session_get(x->f, id, strlen(id));
    assert_non_null(s);
    return tern_fsm_session_epoch(s);
}

static struct tern_fsm_session *sess(struct fx *x, const char *id)
{
    return tern_fsm_session_get(x->f, id, strlen(id));
}

static struct tern_fsm_result close_s(struct fx *x, const char *id, uint32_t expiry,
                                      bool will)
{
    struct tern_cmd c = {.type = TERN_CMD_SESSION_CLOSE};
    c.u.close.client_id = B(id);
    c.u.close.epoch = epoch_of(x, id);
    c.u.close.expiry_s = expiry;
    c.u.close.publish_will = will;
    return apply(x, &c);
}

static struct tern_fsm_result sub_e(struct fx *x, const char *id, uint64_t epoch,
                                    int type, const char *filter, uint8_t opts,
                                    uint32_t sub_id)
{
    static const uint16_t packet_id = 42;
    uint8_t buf[512];
    struct tern_cmd_sub e = {.filter = B(filter), .options = opts, .sub_id = sub_id};
    size_t n = tern_cmd_put_sub(buf, sizeof(buf), &e);
    assert_true(n > 0 && n <= sizeof(buf));
    struct tern_cmd c = {.type = (uint8_t)type};
    c.u.sub.client_id = B(id);
    c.u.sub.epoch = epoch;
    c.u.sub.packet_id = packet_id;
    c.u.sub.list = (struct tern_bytes){buf, (uint32_t)n};
    c.u.sub.count = 1;
    return apply(x, &c);
}

static void sub(struct fx *x, const char *id, const char *filter, uint8_t opts,
                uint32_t sub_id)
{
    struct tern_fsm_result r =
        sub_e(x, id, epoch_of(x, id), TERN_CMD_SUBSCRIBE, filter, opts, sub_id);
    assert_int_equal(r.status, TERN_OK);
}

static void unsub(struct fx *x, const char *id, const char *filter)
{
    struct tern_fsm_result r =
        sub_e(x, id, epoch_of(x, id), TERN_CMD_UNSUBSCRIBE, filter, 0, 0);
    assert_int_equal(r.status, TERN_OK);
}

struct pub_opts {
    const char *from; /* NULL: anonymous */
    uint8_t qos;
    bool retain;
    uint16_t inbound;
    bool has_expiry;
    uint32_t expiry_s;
    uint64_t proposal_id;
    bool stale; /* use a wrong epoch */
};

static struct tern_fsm_result pub_o(struct fx *x, const char *topic, const char *payload,
                                    struct pub_opts o)
{
    struct tern_cmd c = {.type = TERN_CMD_PUBLISH, .proposal_id = o.proposal_id};
    if (o.from) {
        c.u.publish.client_id = B(o.from);
        struct tern_fsm_session *s = sess(x, o.from);
        c.u.publish.epoch = (s ? tern_fsm_session_epoch(s) : 0) + (o.stale ? 100 : 0);
    }
    c.u.publish.inbound_packet_id = o.inbound;
    c.u.publish.msg.topic = B(topic);
    c.u.publish.msg.payload = B(payload);
    c.u.publish.msg.qos = o.qos;
    c.u.publish.msg.retain = o.retain;
    if (o.has_expiry) {
        c.u.publish.msg.flags = TERN_MSG_HAS_EXPIRY;
        c.u.publish.msg.expiry_s = o.expiry_s;
    }
    return apply(x, &c);
}

static uint32_t pub(struct fx *x, const char *topic, const char *payload, uint8_t qos)
{
    struct tern_fsm_result r = pub_o(x, topic, payload, (struct pub_opts){.qos = qos});
    assert_int_equal(r.status, TERN_OK);
    return r.matched;
}

static int ack(struct fx *x, const char *id, uint8_t kind, uint16_t pid, uint8_t reason)
{
    struct tern_cmd c = {.type = TERN_CMD_ACK};
    c.u.ack.client_id = B(id);
    c.u.ack.epoch = epoch_of(x, id);
    c.u.ack.kind = kind;
    c.u.ack.packet_id = pid;
    c.u.ack.reason = reason;
    return apply(x, &c).status;
}

static int pubrel(struct fx *x, const char *id, uint16_t pid)
{
    struct tern_cmd c = {.type = TERN_CMD_PUBREL};
    c.u.pubrel.client_id = B(id);
    c.u.pubrel.epoch = epoch_of(x, id);
    c.u.pubrel.packet_id = pid;
    return apply(x, &c).status;
}

static void tick(struct fx *x)
{
    struct tern_cmd c = {.type = TERN_CMD_TICK};
    assert_int_equal(apply(x, &c).status, TERN_OK);
}

static int del(struct fx *x, const char *id)
{
    struct tern_cmd c = {.type = TERN_CMD_SESSION_DELETE};
    c.u.del.client_id = B(id);
    return apply(x, &c).status;
}

static int retain_del(struct fx *x, const char *topic)
{
    struct tern_cmd c = {.type = TERN_CMD_RETAIN_DELETE};
    c.u.retain_delete.topic = B(topic);
    return apply(x, &c).status;
}

/* --- effect queries --- */

static int count_kind(const struct fx *x, int kind)
{
    int n = 0;
    for (int i = 0; i < x->n; i++)
        n += x->e[i].kind == kind;
    return n;
}

/* Deliveries to client, in order, into out (up to max). */
static int deliveries(const struct fx *x, const char *client, const struct eff **out,
                      int max)
{
    int n = 0;
    for (int i = 0; i < x->n; i++) {
        if (x->e[i].kind == E_DELIVER && strcmp(x->e[i].client, client) == 0) {
            if (n < max)
                out[n] = &x->e[i];
            n++;
        }
    }
    return n;
}

static const struct eff *last(const struct fx *x, int kind)
{
    for (int i = x->n - 1; i >= 0; i--) {
        if (x->e[i].kind == kind)
            return &x->e[i];
    }
    return NULL;
}

static const struct tern_fsm_stats *st(struct fx *x)
{
    return tern_fsm_stats(x->f);
}

#define SUBOPT_RH(n) ((uint8_t)((n) << TERN_SUBOPT_RETAIN_HANDLING_SHIFT))

/* ---------------------------------------------------------------- sessions */

static void test_open_new_resume_clean(void **state)
{
    struct fx *x = *state;
    struct tern_fsm_result r = open_o(x, "a", (struct open_opts){.expiry = 100});
    assert_int_equal(r.status, TERN_OK);
    assert_false(r.session_present);
    assert_int_equal(r.epoch, 1);
    assert_int_equal(x->e[0].kind, E_OPENED);
    assert_false(x->e[0].present);
    assert_true(tern_fsm_session_online(sess(x, "a")));
    assert_int_equal(tern_fsm_session_proto(sess(x, "a")), TERN_MQTT_5);
    assert_int_equal(tern_fsm_session_expiry(sess(x, "a")), 100);
    sub(x, "a", "t", 1, 0);

    assert_int_equal(close_s(x, "a", 100, false).status, TERN_OK);
    assert_false(tern_fsm_session_online(sess(x, "a")));
    r = open_o(x, "a", (struct open_opts){.node = 2, .expiry = 100});
    assert_true(r.session_present);
    assert_int_equal(r.epoch, 2);
    assert_int_equal(tern_fsm_session_owner(sess(x, "a")), 2);
    assert_int_equal(tern_fsm_session_sub_count(sess(x, "a")), 1);
    assert_int_equal(count_kind(x, E_FENCED), 0); /* it was offline */

    /* Clean start while online: the old connection is fenced, state dropped. */
    r = open_o(x, "a", (struct open_opts){.node = 3, .clean = true, .expiry = 100});
    assert_false(r.session_present);
    assert_int_equal(r.epoch, 3);
    const struct eff *f = last(x, E_FENCED);
    assert_non_null(f);
    assert_string_equal(f->client, "a");
    assert_int_equal(f->owner, 2);
    assert_int_equal(f->epoch, 2);
    assert_int_equal(f->reason, TERN_RC_SESSION_TAKEN_OVER);
    assert_int_equal(tern_fsm_session_sub_count(sess(x, "a")), 0);
    assert_int_equal(last(x, E_OPENED)->present, false);

    /* Epochs keep rising across clients and across delete + recreate. */
    assert_int_equal(open_p(x, "b"), 4);
    assert_int_equal(close_s(x, "a", 0, false).status, TERN_OK);
    assert_null(sess(x, "a"));
    assert_int_equal(open_p(x, "a"), 5);
    assert_int_equal(st(x)->sessions, 2);
    assert_int_equal(st(x)->sessions_online, 2);
}

static void test_open_invalid_and_limit(void **state)
{
    struct fx *x = *state;
    assert_int_equal(open_o(x, "", (struct open_opts){0}).status, TERN_EINVAL);
    struct tern_fsm_result r = open_o(x, "a", (struct open_opts){.will_topic = "bad/#"});
    assert_int_equal(r.status, TERN_EINVAL);
    assert_null(sess(x, "a"));

    x->lim.sessions_max = 2;
    fx_reset(x);
    open_p(x, "a");
    open_p(x, "b");
    assert_int_equal(open_o(x, "c", (struct open_opts){0}).status, TERN_ELIMIT);
    assert_null(sess(x, "c"));
    open_p(x, "a"); /* an existing id is not limited */
    assert_int_equal(st(x)->sessions, 2);
}

static void test_session_expiry_cap(void **state)
{
    struct fx *x = *state;
    x->lim.session_expiry_max_s = 60;
    fx_reset(x);
    open_p(x, "a");
    assert_int_equal(tern_fsm_session_expiry(sess(x, "a")), 60);
    close_s(x, "a", 1000, false);
    assert_int_equal(tern_fsm_session_expiry(sess(x, "a")), 60);
    assert_int_equal(tern_fsm_next_deadline(x->f), x->now + 60000);
}

static void test_receive_max_zero_means_max(void **state)
{
    struct fx *x = *state;
    x->lim.inflight_max = 100;
    fx_reset(x);
    open_o(x, "a", (struct open_opts){.expiry = NEVER, .rmax = 0});
    sub(x, "a", "t", 1, 0);
    for (int i = 0; i < 50; i++)
        pub(x, "t", "m", 1);
    assert_int_equal(tern_fsm_session_inflight(sess(x, "a")), 50);
}

/* ---------------------------------------------------------------- delivery */

static void test_publish_qos_downgrade(void **state)
{
    struct fx *x = *state;
    open_p(x, "a");
    sub(x, "a", "t/#", 1, 0);
    assert_int_equal(last(x, E_SUBSCRIBED)->pid, 42);
    x->n = 0;
    assert_int_equal(pub(x, "t/x", "p2", 2), 1);
    assert_int_equal(pub(x, "t/y", "p0", 0), 1);
    assert_int_equal(pub(x, "u", "none", 1), 0);
    const struct eff *d[4];
    assert_int_equal(deliveries(x, "a", d, 4), 2);
    assert_string_equal(d[0]->topic, "t/x");
    assert_int_equal(d[0]->qos, 1);
    assert_int_equal(d[0]->pid, 1);
    assert_false(d[0]->dup);
    assert_int_equal(d[1]->qos, 0);
    assert_int_equal(d[1]->pid, 0);
    assert_string_equal(d[1]->payload, "p0");
    assert_int_equal(tern_fsm_session_inflight(sess(x, "a")), 1);
    assert_true(tern_fsm_has_subscriber(x->f, "t/z", 3));
    assert_false(tern_fsm_has_subscriber(x->f, "u", 1));
}

static void test_overlapping_subs(void **state)
{
    struct fx *x = *state;
    open_p(x, "a");
    sub(x, "a", "t/+", 0, 1);
    sub(x, "a", "t/#", 2, 2);
    sub(x, "a", "#", 1, 0);
    sub(x, "a", "t/+", 0, 3); /* replaces the first, in place */
    assert_int_equal(tern_fsm_session_sub_count(sess(x, "a")), 3);
    x->n = 0;
    assert_int_equal(pub(x, "t/x", "m", 2), 1);
    const struct eff *d[4];
    assert_int_equal(deliveries(x, "a", d, 4), 1);
    assert_int_equal(d[0]->qos, 2);
    assert_int_equal(d[0]->nids, 2);
    assert_int_equal(d[0]->ids[0], 3);
    assert_int_equal(d[0]->ids[1], 2);

    unsub(x, "a", "t/#");
    unsub(x, "a", "nope");
    assert_int_equal(tern_fsm_session_sub_count(sess(x, "a")), 2);
    assert_int_equal(st(x)->subscriptions, 2);
    x->n = 0;
    pub(x, "t/x", "m", 2);
    assert_int_equal(deliveries(x, "a", d, 4), 1);
    assert_int_equal(d[0]->qos, 1);
}

static void test_no_local(void **state)
{
    struct fx *x = *state;
    open_p(x, "a");
    open_p(x, "b");
    sub(x, "a", "t", 1 | TERN_SUBOPT_NO_LOCAL, 0);
    x->n = 0;
    struct tern_fsm_result r =
        pub_o(x, "t", "self", (struct pub_opts){.from = "a", .qos = 1});
    assert_int_equal(r.status, TERN_OK);
    assert_int_equal(r.matched, 0);
    r = pub_o(x, "t", "other", (struct pub_opts){.from = "b", .qos = 1});
    assert_int_equal(r.matched, 1);
    const struct eff *d[2];
    assert_int_equal(deliveries(x, "a", d, 2), 1);
    assert_string_equal(d[0]->payload, "other");
}

static void test_retain_as_published(void **state)
{
    struct fx *x = *state;
    open_p(x, "a");
    open_p(x, "b");
    sub(x, "a", "t", 1 | TERN_SUBOPT_RETAIN_AS_PUBLISHED | SUBOPT_RH(2), 0);
    sub(x, "b", "t", 1 | SUBOPT_RH(2), 0);
    x->n = 0;
    pub_o(x, "t", "m", (struct pub_opts){.qos = 1, .retain = true});
    const struct eff *d[2];
    assert_int_equal(deliveries(x, "a", d, 2), 1);
    assert_true(d[0]->retain);
    assert_int_equal(deliveries(x, "b", d, 2), 1);
    assert_false(d[0]->retain);
}

static void test_publish_invalid(void **state)
{
    struct fx *x = *state;
    struct tern_fsm_result r = pub_o(x, "a/+", "m", (struct pub_opts){0});
    assert_int_equal(r.status, TERN_EINVAL);
    r = pub_o(x, "a", "m", (struct pub_opts){.qos = 3});
    assert_int_equal(r.status, TERN_EINVAL);
}

/* ---------------------------------------------------------------- retained */

static void test_retained_store_replace_delete(void **state)
{
    struct fx *x = *state;
    pub_o(x, "r/1", "x", (struct pub_opts){.qos = 1, .retain = true});
    assert_int_equal(st(x)->retained, 1);
    assert_int_equal(st(x)->retained_bytes, 1);
    pub_o(x, "r/1", "yy", (struct pub_opts){.qos = 2, .retain = true});
    assert_int_equal(st(x)->retained, 1);
    assert_int_equal(st(x)->retained_bytes, 2);
    assert_int_equal(st(x)->messages, 1);

    open_p(x, "a");
    x->n = 0;
    sub(x, "a", "r/#", 1, 7);
    /* SUBACK first, then the retained message. */
    assert_int_equal(x->e[0].kind, E_SUBSCRIBED);
    const struct eff *d[2];
    assert_int_equal(deliveries(x, "a", d, 2), 1);
    assert_string_equal(d[0]->payload, "yy");
    assert_true(d[0]->retain);
    assert_int_equal(d[0]->qos, 1);
    assert_int_equal(d[0]->nids, 1);
    assert_int_equal(d[0]->ids[0], 7);

    /* Empty payload deletes, and is still delivered (not retained: no RAP). */
    x->n = 0;
    pub_o(x, "r/1", "", (struct pub_opts){.qos = 0, .retain = true});
    assert_int_equal(st(x)->retained, 0);
    assert_int_equal(st(x)->retained_bytes, 0);
    assert_int_equal(deliveries(x, "a", d, 2), 1);
    assert_false(d[0]->retain);

    assert_int_equal(retain_del(x, "r/1"), TERN_ENOTFOUND);
    pub_o(x, "r/2", "z", (struct pub_opts){.retain = true});
    assert_int_equal(retain_del(x, "r/2"), TERN_OK);
    assert_int_equal(st(x)->retained, 0);
}

static int count_msg(void *ctx, const struct tern_msg *m)
{
    (void)m;
    (*(int *)ctx)++;
    return 0;
}

static void test_retained_wildcards_and_accessors(void **state)
{
    struct fx *x = *state;
    const char *topics[] = {"a/b/c", "a/x/c", "a/b", "b/b/c", "$SYS/up"};
    for (int i = 0; i < 5; i++)
        pub_o(x, topics[i], topics[i], (struct pub_opts){.qos = 1, .retain = true});
    int n = 0;
    tern_fsm_retained_match(x->f, "a/+/c", 5, count_msg, &n);
    assert_int_equal(n, 2);
    n = 0;
    tern_fsm_retained_match(x->f, "#", 1, count_msg, &n);
    assert_int_equal(n, 4); /* not $SYS */
    n = 0;
    tern_fsm_retained_walk(x->f, count_msg, &n);
    assert_int_equal(n, 5);

    open_p(x, "s");
    x->n = 0;
    sub(x, "s", "+/b/#", 2, 0);
    const struct eff *d[8];
    /* In topic order, whatever the tree's order. */
    assert_int_equal(deliveries(x, "s", d, 8), 3);
    assert_string_equal(d[0]->topic, "a/b");
    assert_string_equal(d[1]->topic, "a/b/c");
    assert_string_equal(d[2]->topic, "b/b/c");
    x->n = 0;
    sub(x, "s", "$SYS/#", 2, 0);
    assert_int_equal(deliveries(x, "s", d, 8), 1);
}

static void test_retain_handling(void **state)
{
    struct fx *x = *state;
    pub_o(x, "r", "v", (struct pub_opts){.qos = 1, .retain = true});
    open_p(x, "a");
    const struct eff *d[4];

    x->n = 0;
    sub(x, "a", "r", 1 | SUBOPT_RH(0), 0);
    sub(x, "a", "r", 1 | SUBOPT_RH(0), 0);
    assert_int_equal(deliveries(x, "a", d, 4), 2);

    x->n = 0;
    sub(x, "a", "+", 1 | SUBOPT_RH(1), 0); /* new: sent */
    sub(x, "a", "+", 1 | SUBOPT_RH(1), 0); /* existed: not sent */
    assert_int_equal(deliveries(x, "a", d, 4), 1);

    x->n = 0;
    sub(x, "a", "#", 1 | SUBOPT_RH(2), 0);
    assert_int_equal(deliveries(x, "a", d, 4), 0);

    /* Shared subscriptions get no retained messages. */
    sub(x, "a", "$share/g/r", 1, 0);
    assert_int_equal(deliveries(x, "a", d, 4), 0);
}

static void test_retained_limits(void **state)
{
    struct fx *x = *state;
    x->lim.retained_max = 1;
    x->lim.retained_bytes_max = 4;
    fx_reset(x);
    open_p(x, "a");
    sub(x, "a", "#", 1, 0);
    pub_o(x, "t1", "ab", (struct pub_opts){.qos = 1, .retain = true});
    struct tern_fsm_result r =
        pub_o(x, "t2", "cd", (struct pub_opts){.qos = 1, .retain = true});
    assert_int_equal(r.matched, 1); /* still delivered */
    assert_int_equal(st(x)->retained, 1);
    assert_int_equal(st(x)->retained_rejected, 1);
    pub_o(x, "t1", "abc", (struct pub_opts){.qos = 1, .retain = true}); /* replace */
    assert_int_equal(st(x)->retained, 1);
    assert_int_equal(st(x)->retained_bytes, 3);
    pub_o(x, "t1", "abcde", (struct pub_opts){.qos = 1, .retain = true}); /* too big */
    assert_int_equal(st(x)->retained_rejected, 2);
    assert_int_equal(st(x)->retained, 0);
}

static void test_retained_expiry(void **state)
{
    struct fx *x = *state;
    pub_o(x, "r", "v",
          (struct pub_opts){.qos = 1, .retain = true, .has_expiry = true, .expiry_s = 5});
    x->now += 6000;
    open_p(x, "a");
    x->n = 0;
    sub(x, "a", "r", 1, 0);
    const struct eff *d[2];
    assert_int_equal(deliveries(x, "a", d, 2), 0); /* expired: not sent */
    assert_int_equal(st(x)->retained, 1);
    tick(x);
    assert_int_equal(st(x)->retained, 0);
}

/* A retained message's expiry is a deadline of its own: with no session
 * waiting for anything, the node must still propose the TICK that frees it
 * (tern_fsm_next_deadline is what the node's 1 s timer asks). Replacing or
 * deleting it cancels that deadline. */
static void test_retained_expiry_deadline(void **state)
{
    struct fx *x = *state;
    uint64_t t0 = x->now;
    assert_int_equal(tern_fsm_next_deadline(x->f), UINT64_MAX);
    pub_o(x, "r", "v",
          (struct pub_opts){.qos = 1, .retain = true, .has_expiry = true, .expiry_s = 5});
    pub_o(x, "q", "v",
          (struct pub_opts){.qos = 1, .retain = true, .has_expiry = true, .expiry_s = 9});
    assert_int_equal(tern_fsm_next_deadline(x->f), t0 + 5000);
    pub_o(x, "r", "w", (struct pub_opts){.qos = 1, .retain = true}); /* no expiry now */
    assert_int_equal(tern_fsm_next_deadline(x->f), t0 + 9000);
    x->now = t0 + 8999;
    tick(x);
    assert_int_equal(st(x)->retained, 2);
    x->now = t0 + 9000;
    tick(x);
    assert_int_equal(st(x)->retained, 1); /* "q" went, "r" stays */
    assert_int_equal(tern_fsm_next_deadline(x->f), UINT64_MAX);
    pub_o(x, "q", "v",
          (struct pub_opts){.qos = 1, .retain = true, .has_expiry = true, .expiry_s = 1});
    assert_int_equal(retain_del(x, "q"), TERN_OK);
    assert_int_equal(tern_fsm_next_deadline(x->f), UINT64_MAX);
}

static void test_retained_source(void **state)
{
    struct fx *x = *state;
    struct fx *y = calloc(1, sizeof(*y));
    assert_non_null(y);
    tern_fsm_limits_default(&y->lim);
    y->now = x->now;
    y->f = fx_fsm(y);
    tern_fsm_set_retained_source(y->f, x->f);
    pub_o(x, "r", "from-x", (struct pub_opts){.qos = 1, .retain = true});
    open_p(y, "c");
    sub(y, "c", "r", 1, 0);
    const struct eff *d[2];
    assert_int_equal(deliveries(y, "c", d, 2), 1);
    assert_string_equal(d[0]->payload, "from-x");
    tern_fsm_free(x->f); /* y holds its own copy */
    x->f = NULL;
    assert_int_equal(tern_fsm_session_inflight(sess(y, "c")), 1);
    assert_int_equal(ack(y, "c", TERN_PUBACK, d[0]->pid, 0), TERN_OK);
    tern_fsm_free(y->f);
    free(y);
}

static void test_dollar_topics(void **state)
{
    struct fx *x = *state;
    open_p(x, "a");
    open_p(x, "b");
    sub(x, "a", "#", 1, 0);
    sub(x, "a", "+/up", 1, 0);
    sub(x, "b", "$SYS/#", 1, 0);
    assert_int_equal(pub(x, "$SYS/up", "m", 1), 1);
    const struct eff *d[2];
    assert_int_equal(deliveries(x, "a", d, 2), 0);
    assert_int_equal(deliveries(x, "b", d, 2), 1);
}

/* ---------------------------------------------------------------- shared */

static void test_shared_round_robin(void **state)
{
    struct fx *x = *state;
    const char *m[] = {"m1", "m2", "m3"};
    for (int i = 0; i < 3; i++) {
        open_p(x, m[i]);
        sub(x, m[i], "$share/g/t/#", 1, 0);
    }
    open_p(x, "h");
    sub(x, "h", "$share/h/t/#", 1, 0);
    /* Round robin in subscription order, one copy per group. */
    x->n = 0;
    for (int i = 0; i < 4; i++)
        assert_int_equal(pub(x, "t/x", "p", 1), 2);
    const char *want[] = {"m1", "m2", "m3", "m1"};
    int k = 0;
    for (int i = 0; i < x->n; i++) {
        if (x->e[i].kind == E_DELIVER && x->e[i].client[0] == 'm')
            assert_string_equal(x->e[i].client, want[k++]);
    }
    assert_int_equal(k, 4);

    sub(x, "m1", "t/#", 1, 0); /* a plain sub: its own copy */
    x->n = 0;
    for (int i = 0; i < 6; i++)
        assert_int_equal(pub(x, "t/x", "p", 1), 3);
    const struct eff *d[16];
    assert_int_equal(deliveries(x, "m1", d, 16), 2 + 6);
    assert_int_equal(deliveries(x, "m2", d, 16), 2);
    assert_int_equal(deliveries(x, "m3", d, 16), 2);
    assert_int_equal(deliveries(x, "h", d, 16), 6);

    /* Offline members are passed over while someone is online. */
    unsub(x, "m1", "t/#");
    close_s(x, "m2", NEVER, false);
    close_s(x, "m3", NEVER, false);
    x->n = 0;
    for (int i = 0; i < 4; i++)
        pub(x, "t/x", "q", 1);
    assert_int_equal(deliveries(x, "m1", d, 16), 4);
    assert_int_equal(tern_fsm_session_queued(sess(x, "m2")), 0);
    assert_int_equal(tern_fsm_session_queued(sess(x, "m3")), 0);

    /* Nobody online: still one copy, into an offline member's queue. */
    close_s(x, "m1", NEVER, false);
    pub(x, "t/x", "r", 1);
    uint32_t q = tern_fsm_session_queued(sess(x, "m1")) +
                 tern_fsm_session_queued(sess(x, "m2")) +
                 tern_fsm_session_queued(sess(x, "m3"));
    assert_int_equal(q, 1);
}

static void test_shared_unsubscribe_frees_group(void **state)
{
    struct fx *x = *state;
    open_p(x, "a");
    sub(x, "a", "$share/g/t", 1, 0);
    sub(x, "a", "$share/g2/t", 1, 0);
    unsub(x, "a", "$share/g/t");
    assert_int_equal(pub(x, "t", "m", 1), 1);
    unsub(x, "a", "$share/g2/t");
    assert_int_equal(pub(x, "t", "m", 1), 0);
    assert_false(tern_fsm_has_subscriber(x->f, "t", 1));
}

/* ---------------------------------------------------------------- queues */

static void test_offline_queue(void **state)
{
    struct fx *x = *state;
    open_p(x, "a");
    sub(x, "a", "t", 2, 0);
    close_s(x, "a", NEVER, false);
    x->n = 0;
    pub(x, "t", "1", 1);
    pub(x, "t", "2", 2);
    assert_int_equal(pub(x, "t", "zero", 0), 0); /* QoS 0 not queued */
    pub(x, "t", "3", 1);
    assert_int_equal(x->n, 0); /* offline: nothing delivered */
    assert_int_equal(tern_fsm_session_queued(sess(x, "a")), 3);
    assert_int_equal(tern_fsm_session_queued_bytes(sess(x, "a")), 3 * 2);
    assert_int_equal(st(x)->dropped_qos0_offline, 1);
    assert_int_equal(st(x)->queued, 3);
    assert_int_equal(st(x)->messages, 3);
    assert_int_equal(tern_fsm_session_inflight(sess(x, "a")), 0);

    open_p(x, "a");
    const struct eff *d[4];
    assert_int_equal(deliveries(x, "a", d, 4), 3);
    assert_int_equal(x->e[0].kind, E_OPENED); /* CONNACK first */
    for (int i = 0; i < 3; i++) {
        assert_int_equal(d[i]->pid, i + 1);
        assert_false(d[i]->dup);
    }
    assert_string_equal(d[1]->payload, "2");
    assert_int_equal(d[1]->qos, 2);
    assert_int_equal(st(x)->queued, 0);
    assert_int_equal(st(x)->inflight, 3);
}

static void test_offline_queue_qos0(void **state)
{
    struct fx *x = *state;
    x->lim.queue_qos0 = true;
    fx_reset(x);
    open_p(x, "a");
    sub(x, "a", "t", 1, 0);
    close_s(x, "a", NEVER, false);
    pub(x, "t", "z", 0);
    pub(x, "t", "o", 1);
    assert_int_equal(tern_fsm_session_queued(sess(x, "a")), 2);
    x->n = 0;
    open_p(x, "a");
    const struct eff *d[4];
    assert_int_equal(deliveries(x, "a", d, 4), 2);
    assert_int_equal(d[0]->pid, 0);
    assert_string_equal(d[0]->payload, "z");
    assert_int_equal(d[1]->pid, 1);
    assert_int_equal(tern_fsm_session_inflight(sess(x, "a")), 1);
}

static void queue_bound(struct fx *x, uint8_t policy, const char *first)
{
    x->lim.queue_max = 2;
    x->lim.drop_policy = policy;
    fx_reset(x);
    open_p(x, "a");
    sub(x, "a", "t", 1, 0);
    close_s(x, "a", NEVER, false);
    uint32_t m1 = pub(x, "t", "1", 1);
    uint32_t m2 = pub(x, "t", "2", 1);
    uint32_t m3 = pub(x, "t", "3", 1);
    assert_int_equal(m1 + m2, 2);
    assert_int_equal(m3, policy == TERN_DROP_NEW ? 0 : 1);
    assert_int_equal(tern_fsm_session_queued(sess(x, "a")), 2);
    assert_int_equal(st(x)->dropped_queue_full, 1);
    assert_int_equal(st(x)->messages, 2);
    x->n = 0;
    open_p(x, "a");
    const struct eff *d[4];
    assert_int_equal(deliveries(x, "a", d, 4), 2);
    assert_string_equal(d[0]->payload, first);
}

static void test_queue_bound_drop_oldest(void **state)
{
    queue_bound(*state, TERN_DROP_OLDEST, "2");
}

static void test_queue_bound_drop_new(void **state)
{
    queue_bound(*state, TERN_DROP_NEW, "1");
}

static void test_queue_bytes_bound(void **state)
{
    struct fx *x = *state;
    x->lim.queue_bytes_max = 10; /* topic + payload bytes */
    fx_reset(x);
    open_p(x, "a");
    sub(x, "a", "t", 1, 0);
    close_s(x, "a", NEVER, false);
    pub(x, "t", "1234", 1); /* 5 */
    pub(x, "t", "5678", 1); /* 10 */
    assert_int_equal(tern_fsm_session_queued_bytes(sess(x, "a")), 10);
    pub(x, "t", "9", 1); /* 12 > 10: oldest goes */
    assert_int_equal(tern_fsm_session_queued(sess(x, "a")), 2);
    assert_int_equal(tern_fsm_session_queued_bytes(sess(x, "a")), 7);
    assert_int_equal(pub(x, "t", "0123456789abc", 1), 0); /* alone too big */
    assert_int_equal(tern_fsm_session_queued(sess(x, "a")), 0);
    assert_int_equal(st(x)->dropped_queue_full, 4); /* the new one and two older */
}

static void test_inflight_window(void **state)
{
    struct fx *x = *state;
    open_o(x, "a", (struct open_opts){.expiry = NEVER, .rmax = 2});
    sub(x, "a", "t", 1, 0);
    x->n = 0;
    for (int i = 0; i < 5; i++)
        pub(x, "t", "m", 1);
    const struct eff *d[8];
    assert_int_equal(deliveries(x, "a", d, 8), 2);
    assert_int_equal(tern_fsm_session_inflight(sess(x, "a")), 2);
    assert_int_equal(tern_fsm_session_queued(sess(x, "a")), 3);
    assert_int_equal(ack(x, "a", TERN_PUBACK, 1, 0), TERN_OK);
    assert_int_equal(deliveries(x, "a", d, 8), 3);
    assert_int_equal(d[2]->pid, 3);
    assert_int_equal(ack(x, "a", TERN_PUBACK, 1, 0), TERN_ENOTFOUND);
    assert_int_equal(ack(x, "a", TERN_PUBACK, 2, 0), TERN_OK);
    assert_int_equal(ack(x, "a", TERN_PUBACK, 3, 0), TERN_OK);
    assert_int_equal(deliveries(x, "a", d, 8), 5);
    assert_int_equal(d[3]->pid, 4);
    assert_int_equal(d[4]->pid, 5);
    assert_int_equal(tern_fsm_session_queued(sess(x, "a")), 0);

    /* inflight_max bounds too, below receive_max. */
    x->lim.inflight_max = 1;
    fx_reset(x);
    open_o(x, "a", (struct open_opts){.expiry = NEVER, .rmax = 10});
    sub(x, "a", "t", 1, 0);
    pub(x, "t", "m", 1);
    pub(x, "t", "m", 1);
    assert_int_equal(tern_fsm_session_inflight(sess(x, "a")), 1);
}

static void test_packet_id_wraps_and_skips(void **state)
{
    struct fx *x = *state;
    open_o(x, "a", (struct open_opts){.expiry = NEVER, .rmax = 3});
    sub(x, "a", "t", 1, 0);
    pub(x, "t", "m", 1); /* pid 1, kept in flight */
    for (uint32_t i = 2; i <= 65535; i++) {
        x->n = 0;
        pub(x, "t", "m", 1);
        assert_int_equal(ack(x, "a", TERN_PUBACK, (uint16_t)i, 0), TERN_OK);
    }
    x->n = 0;
    pub(x, "t", "m", 1); /* 1 is in flight: 2 */
    assert_int_equal(last(x, E_DELIVER)->pid, 2);
}

static void test_qos2_flow(void **state)
{
    struct fx *x = *state;
    open_p(x, "a");
    sub(x, "a", "t", 2, 0);
    x->n = 0;
    pub(x, "t", "m", 2);
    assert_int_equal(last(x, E_DELIVER)->pid, 1);
    /* Wrong kinds for an id in flight: protocol errors, nothing changes. */
    assert_int_equal(ack(x, "a", TERN_PUBACK, 1, 0), TERN_EPROTO);
    assert_int_equal(ack(x, "a", TERN_PUBCOMP, 1, 0), TERN_EPROTO);
    assert_int_equal(tern_fsm_session_inflight(sess(x, "a")), 1);
    assert_int_equal(ack(x, "a", TERN_PUBREC, 1, 0), TERN_OK);
    const struct eff *e = last(x, E_DELIVER);
    assert_true(e->pubrel);
    assert_int_equal(e->pid, 1);
    assert_int_equal(st(x)->messages, 0); /* REL keeps only the id */
    assert_int_equal(tern_fsm_session_inflight(sess(x, "a")), 1);
    /* A repeated PUBREC gets the PUBREL again. */
    x->n = 0;
    assert_int_equal(ack(x, "a", TERN_PUBREC, 1, 0), TERN_OK);
    assert_true(last(x, E_DELIVER)->pubrel);
    assert_int_equal(ack(x, "a", TERN_PUBACK, 1, 0), TERN_EPROTO);
    assert_int_equal(ack(x, "a", TERN_PUBCOMP, 1, 0), TERN_OK);
    assert_int_equal(ack(x, "a", TERN_PUBCOMP, 1, 0), TERN_ENOTFOUND); /* late */
    assert_int_equal(tern_fsm_session_inflight(sess(x, "a")), 0);
    assert_int_equal(st(x)->inflight, 0);

    /* A PUBREC with an error reason ends the exchange. */
    pub(x, "t", "m", 2);
    assert_int_equal(ack(x, "a", TERN_PUBREC, 2, 0x80), TERN_OK);
    assert_int_equal(tern_fsm_session_inflight(sess(x, "a")), 0);
    assert_int_equal(ack(x, "a", 99, 2, 0), TERN_ENOTFOUND);
}

static void test_resume_redelivery(void **state)
{
    struct fx *x = *state;
    open_o(x, "a", (struct open_opts){.expiry = NEVER, .rmax = 3});
    sub(x, "a", "t", 2, 5);
    pub(x, "t", "1", 2);
    pub(x, "t", "2", 2);
    pub(x, "t", "3", 1);
    pub(x, "t", "4", 1); /* queued: window 3 */
    assert_int_equal(ack(x, "a", TERN_PUBREC, 1, 0), TERN_OK);
    close_s(x, "a", NEVER, true);
    pub(x, "t", "5", 1);
    x->n = 0;
    struct tern_fsm_result r =
        open_o(x, "a", (struct open_opts){.expiry = NEVER, .rmax = 10});
    assert_true(r.session_present);
    assert_int_equal(x->e[0].kind, E_OPENED);
    assert_true(x->e[0].present);
    const struct eff *d[8];
    assert_int_equal(deliveries(x, "a", d, 8), 5);
    assert_true(d[0]->pubrel);
    assert_int_equal(d[0]->pid, 1);
    assert_true(d[1]->dup);
    assert_int_equal(d[1]->pid, 2);
    assert_string_equal(d[1]->payload, "2");
    assert_int_equal(d[1]->qos, 2);
    assert_int_equal(d[1]->nids, 1);
    assert_int_equal(d[1]->ids[0], 5);
    assert_true(d[2]->dup);
    assert_int_equal(d[2]->pid, 3);
    assert_false(d[3]->dup);
    assert_string_equal(d[3]->payload, "4");
    assert_int_equal(d[3]->pid, 4);
    assert_string_equal(d[4]->payload, "5");
    assert_int_equal(d[4]->pid, 5);
}

static void test_takeover_redelivers(void **state)
{
    struct fx *x = *state;
    open_p(x, "a");
    sub(x, "a", "t", 1, 0);
    pub(x, "t", "m", 1);
    x->n = 0;
    uint64_t e2 = open_p(x, "a"); /* online takeover, resumed */
    assert_int_equal(x->e[0].kind, E_FENCED);
    assert_int_equal(x->e[1].kind, E_OPENED);
    assert_true(x->e[1].present);
    assert_int_equal(x->e[2].kind, E_DELIVER);
    assert_true(x->e[2].dup);
    assert_int_equal(epoch_of(x, "a"), e2);
    assert_int_equal(st(x)->sessions_online, 1);
}

static void test_message_expiry(void **state)
{
    struct fx *x = *state;
    open_p(x, "a");
    sub(x, "a", "t", 1, 0);
    close_s(x, "a", NEVER, false);
    pub_o(x, "t", "short",
          (struct pub_opts){.qos = 1, .has_expiry = true, .expiry_s = 5});
    pub_o(x, "t", "long",
          (struct pub_opts){.qos = 1, .has_expiry = true, .expiry_s = 50});
    pub(x, "t", "forever", 1);
    x->now += 6000;
    x->n = 0;
    open_p(x, "a");
    const struct eff *d[4];
    assert_int_equal(deliveries(x, "a", d, 4), 2);
    assert_string_equal(d[0]->payload, "long");
    assert_int_equal(st(x)->dropped_expired, 1);
}

static int find_msg(void *ctx, const struct tern_msg *m)
{
    *(const struct tern_msg **)ctx = m;
    return 1;
}

static void test_message_expiry_cap_and_remaining(void **state)
{
    struct fx *x = *state;
    x->lim.message_expiry_max_s = 10;
    fx_reset(x);
    pub_o(x, "a", "v",
          (struct pub_opts){.retain = true, .has_expiry = true, .expiry_s = 100});
    pub_o(x, "b", "v", (struct pub_opts){.retain = true});
    const struct tern_msg *m = NULL;
    tern_fsm_retained_match(x->f, "a", 1, find_msg, &m);
    assert_non_null(m);
    assert_int_equal(m->expire_at_ms, x->now + 10000);
    assert_int_equal(tern_msg_remaining_s(m, x->now + 1), 10);
    assert_int_equal(tern_msg_remaining_s(m, x->now + 9001), 1);
    assert_int_equal(tern_msg_remaining_s(m, x->now + 10000), 0);
    tern_fsm_retained_match(x->f, "b", 1, find_msg, &m);
    assert_int_equal(m->expire_at_ms, x->now + 10000); /* capped even without one */
    x->now += 10000;
    tick(x);
    assert_int_equal(st(x)->retained, 0);
}

/* ---------------------------------------------------------------- inbound QoS 2 */

static void test_inbound_qos2(void **state)
{
    struct fx *x = *state;
    open_p(x, "p");
    open_p(x, "s");
    sub(x, "s", "t", 2, 0);
    struct pub_opts o = {.from = "p", .qos = 2, .inbound = 7};
    struct tern_fsm_result r = pub_o(x, "t", "m", o);
    assert_int_equal(r.status, TERN_OK);
    assert_false(r.duplicate);
    assert_int_equal(r.matched, 1);
    assert_true(tern_fsm_session_inbound_held(sess(x, "p"), 7));
    r = pub_o(x, "t", "m", o);
    assert_int_equal(r.status, TERN_OK);
    assert_true(r.duplicate);
    assert_int_equal(r.matched, 0);
    assert_int_equal(tern_fsm_session_inflight(sess(x, "s")), 1);
    assert_int_equal(pubrel(x, "p", 7), TERN_OK);
    assert_false(tern_fsm_session_inbound_held(sess(x, "p"), 7));
    assert_int_equal(pubrel(x, "p", 7), TERN_ENOTFOUND);
    r = pub_o(x, "t", "m", o);
    assert_false(r.duplicate);
    assert_int_equal(tern_fsm_session_inflight(sess(x, "s")), 2);

    /* A publisher with no session here: no tracking, no fencing. */
    r = pub_o(x, "t", "m", (struct pub_opts){.from = "ghost", .qos = 2, .inbound = 7});
    assert_int_equal(r.status, TERN_OK);
    r = pub_o(x, "t", "m", (struct pub_opts){.from = "ghost", .qos = 2, .inbound = 7});
    assert_false(r.duplicate);
    /* Held ids survive a resume, go with a clean start. */
    pub_o(x, "t", "m", (struct pub_opts){.from = "p", .qos = 2, .inbound = 9});
    close_s(x, "p", NEVER, false);
    open_p(x, "p");
    assert_true(tern_fsm_session_inbound_held(sess(x, "p"), 9));
    open_o(x, "p", (struct open_opts){.clean = true, .expiry = NEVER});
    assert_false(tern_fsm_session_inbound_held(sess(x, "p"), 9));
}

/* ---------------------------------------------------------------- wills */

static void will_sub(struct fx *x)
{
    open_p(x, "w");
    sub(x, "w", "will/#", 1, 0);
}

static void test_will_on_close(void **state)
{
    struct fx *x = *state;
    will_sub(x);
    open_o(x, "a",
           (struct open_opts){.expiry = 100, .will_topic = "will/a", .will_qos = 1});
    x->n = 0;
    close_s(x, "a", 100, true);
    const struct eff *d[2];
    assert_int_equal(deliveries(x, "w", d, 2), 1);
    assert_string_equal(d[0]->topic, "will/a");
    assert_string_equal(d[0]->payload, "bye");
    const struct eff *p = last(x, E_PUBLISHED);
    assert_non_null(p);
    assert_string_equal(p->topic, "will/a");
    assert_int_equal(st(x)->wills_published, 1);

    /* A normal DISCONNECT drops the will. */
    open_o(x, "a", (struct open_opts){.expiry = 100, .will_topic = "will/a"});
    x->n = 0;
    close_s(x, "a", 100, false);
    assert_int_equal(count_kind(x, E_PUBLISHED), 0);
    x->now += 1000000;
    tick(x); /* expires it; no will left */
    assert_int_equal(count_kind(x, E_PUBLISHED), 0);
    assert_null(sess(x, "a"));
    assert_int_equal(st(x)->wills_published, 1);
}

static void test_will_retained(void **state)
{
    struct fx *x = *state;
    open_o(x, "a",
           (struct open_opts){
               .will_topic = "st/a", .will_payload = "offline", .will_retain = true});
    close_s(x, "a", 0, true); /* expiry 0: will now, session deleted */
    assert_null(sess(x, "a"));
    assert_int_equal(st(x)->retained, 1);
    assert_int_equal(st(x)->wills_published, 1);
    assert_int_equal(st(x)->sessions, 0);
}

static void test_will_delay_tick(void **state)
{
    struct fx *x = *state;
    will_sub(x);
    open_o(x, "a",
           (struct open_opts){.expiry = NEVER, .will_topic = "will/a", .will_delay = 10});
    uint64_t t0 = x->now;
    x->n = 0;
    close_s(x, "a", NEVER, true);
    assert_int_equal(count_kind(x, E_PUBLISHED), 0);
    assert_int_equal(tern_fsm_next_deadline(x->f), t0 + 10000);
    x->now = t0 + 9999;
    tick(x);
    assert_int_equal(count_kind(x, E_PUBLISHED), 0);
    x->now = t0 + 10000;
    tick(x);
    assert_int_equal(count_kind(x, E_PUBLISHED), 1);
    assert_non_null(sess(x, "a")); /* the session lives on */
    assert_int_equal(tern_fsm_next_deadline(x->f), UINT64_MAX);
    x->now += 100000;
    tick(x);
    assert_int_equal(count_kind(x, E_PUBLISHED), 1);
}

static void test_will_cancelled_by_resume(void **state)
{
    struct fx *x = *state;
    will_sub(x);
    open_o(x, "a",
           (struct open_opts){.expiry = NEVER, .will_topic = "will/a", .will_delay = 10});
    close_s(x, "a", NEVER, true);
    x->now += 5000;
    x->n = 0;
    open_p(x, "a"); /* resumed before the delay: no will */
    x->now += 100000;
    tick(x);
    close_s(x, "a", NEVER, true); /* the new connection had no will */
    x->now += 100000;
    tick(x);
    assert_int_equal(count_kind(x, E_PUBLISHED), 0);
    assert_int_equal(st(x)->wills_published, 0);
}

/* A new connection before the will delay ends cancels the will, even with clean
 * start [MQTT-3.1.3-9]; once the delay is over the will is owed (a late TICK). */
static void test_will_clean_start_cancels_pending(void **state)
{
    struct fx *x = *state;
    will_sub(x);
    open_o(x, "a",
           (struct open_opts){.expiry = NEVER, .will_topic = "will/a", .will_delay = 10});
    close_s(x, "a", NEVER, true);
    x->n = 0;
    open_o(x, "a", (struct open_opts){.clean = true, .expiry = NEVER});
    assert_int_equal(count_kind(x, E_PUBLISHED), 0);
    assert_int_equal(st(x)->wills_published, 0);
    x->now += 100000;
    tick(x);
    assert_int_equal(count_kind(x, E_PUBLISHED), 0);

    open_o(x, "b",
           (struct open_opts){.expiry = NEVER, .will_topic = "will/b", .will_delay = 10});
    close_s(x, "b", NEVER, true);
    x->now += 10000; /* the delay is over, its TICK not applied yet */
    x->n = 0;
    open_o(x, "b", (struct open_opts){.clean = true, .expiry = NEVER});
    assert_int_equal(count_kind(x, E_PUBLISHED), 1);
}

/* Taking over an online session with expiry 0 resumes nothing: it would have
 * ended with its connection [MQTT-3.2.2-3]. */
static void test_takeover_of_clean_session_not_present(void **state)
{
    struct fx *x = *state;
    open_o(x, "a", (struct open_opts){.clean = true, .expiry = 0});
    struct tern_fsm_result r = open_o(x, "a", (struct open_opts){.expiry = NEVER});
    assert_false(r.session_present);
    r = open_o(x, "a", (struct open_opts){.expiry = NEVER});
    assert_true(r.session_present);
}

static void test_will_on_takeover(void **state)
{
    struct fx *x = *state;
    will_sub(x);
    /* Delay 0: the old connection's will goes out when it is taken over. */
    open_o(x, "a", (struct open_opts){.expiry = NEVER, .will_topic = "will/a"});
    x->n = 0;
    open_p(x, "a");
    assert_int_equal(count_kind(x, E_FENCED), 1);
    assert_int_equal(count_kind(x, E_PUBLISHED), 1);
    /* Delay > 0 and resumed: cancelled. */
    open_o(x, "b",
           (struct open_opts){.expiry = NEVER, .will_topic = "will/b", .will_delay = 5});
    x->n = 0;
    open_p(x, "b");
    assert_int_equal(count_kind(x, E_PUBLISHED), 0);
}

static void test_will_delay_capped_by_expiry(void **state)
{
    struct fx *x = *state;
    will_sub(x);
    open_o(x, "a",
           (struct open_opts){.expiry = 5, .will_topic = "will/a", .will_delay = 100});
    uint64_t t0 = x->now;
    close_s(x, "a", 5, true);
    assert_int_equal(tern_fsm_next_deadline(x->f), t0 + 5000);
    x->n = 0;
    x->now = t0 + 5000;
    tick(x);
    assert_int_equal(count_kind(x, E_PUBLISHED), 1);
    assert_null(sess(x, "a"));
    assert_int_equal(st(x)->sessions_expired, 1);
}

static void test_session_expiry_tick(void **state)
{
    struct fx *x = *state;
    open_o(x, "a", (struct open_opts){.expiry = 10});
    sub(x, "a", "t", 1, 0);
    close_s(x, "a", 10, false);
    pub(x, "t", "q", 1);
    uint64_t t0 = x->now;
    assert_int_equal(tern_fsm_next_deadline(x->f), t0 + 10000);
    x->now = t0 + 9999;
    tick(x);
    assert_non_null(sess(x, "a"));
    x->now = t0 + 10000;
    tick(x);
    assert_null(sess(x, "a"));
    assert_int_equal(st(x)->sessions_expired, 1);
    assert_int_equal(st(x)->sessions, 0);
    assert_int_equal(st(x)->subscriptions, 0);
    assert_int_equal(st(x)->queued, 0);
    assert_int_equal(st(x)->messages, 0);
    assert_int_equal(tern_fsm_next_deadline(x->f), UINT64_MAX);
}

static void test_expired_session_not_resumed(void **state)
{
    struct fx *x = *state;
    open_o(x, "a", (struct open_opts){.expiry = 10});
    sub(x, "a", "t", 1, 0);
    close_s(x, "a", 10, false);
    x->now += 20000; /* no TICK ran */
    struct tern_fsm_result r = open_o(x, "a", (struct open_opts){.expiry = 10});
    assert_false(r.session_present);
    assert_int_equal(tern_fsm_session_sub_count(sess(x, "a")), 0);
    assert_int_equal(st(x)->sessions_expired, 1);
}

static void test_expiry_zero_close(void **state)
{
    struct fx *x = *state;
    will_sub(x);
    open_o(x, "a",
           (struct open_opts){.expiry = 0, .will_topic = "will/a", .will_delay = 30});
    sub(x, "a", "x", 1, 0);
    x->n = 0;
    assert_int_equal(close_s(x, "a", 0, true).status, TERN_OK);
    assert_null(sess(x, "a"));
    assert_int_equal(count_kind(x, E_PUBLISHED), 1); /* session ended: will now */
    assert_int_equal(st(x)->subscriptions, 1);
    assert_int_equal(st(x)->sessions, 1);
}

/* ---------------------------------------------------------------- fencing */

static void test_stale_epoch(void **state)
{
    struct fx *x = *state;
    uint64_t e1 = open_p(x, "a");
    open_p(x, "a");
    struct tern_cmd c = {.type = TERN_CMD_SESSION_CLOSE};
    c.u.close.client_id = B("a");
    c.u.close.epoch = e1;
    c.u.close.publish_will = true;
    assert_int_equal(apply(x, &c).status, TERN_ESTALE);
    assert_true(tern_fsm_session_online(sess(x, "a")));

    struct tern_fsm_result r = sub_e(x, "a", e1, TERN_CMD_SUBSCRIBE, "t", 1, 0);
    assert_int_equal(r.status, TERN_ESTALE);
    assert_int_equal(tern_fsm_session_sub_count(sess(x, "a")), 0);
    r = sub_e(x, "nobody", 1, TERN_CMD_SUBSCRIBE, "t", 1, 0);
    assert_int_equal(r.status, TERN_ENOTFOUND);
    r = sub_e(x, "a", e1, TERN_CMD_UNSUBSCRIBE, "t", 0, 0);
    assert_int_equal(r.status, TERN_ESTALE);

    sub(x, "a", "t", 1, 0);
    r = pub_o(x, "t", "m", (struct pub_opts){.from = "a", .qos = 1, .stale = true});
    assert_int_equal(r.status, TERN_ESTALE);
    assert_int_equal(tern_fsm_session_inflight(sess(x, "a")), 0);

    pub(x, "t", "m", 1);
    struct tern_cmd a = {.type = TERN_CMD_ACK};
    a.u.ack.client_id = B("a");
    a.u.ack.epoch = e1;
    a.u.ack.kind = TERN_PUBACK;
    a.u.ack.packet_id = 1;
    assert_int_equal(apply(x, &a).status, TERN_ESTALE);
    assert_int_equal(tern_fsm_session_inflight(sess(x, "a")), 1);
    struct tern_cmd p = {.type = TERN_CMD_PUBREL};
    p.u.pubrel.client_id = B("a");
    p.u.pubrel.epoch = e1;
    assert_int_equal(apply(x, &p).status, TERN_ESTALE);
    struct tern_cmd bad = {.type = 99};
    assert_int_equal(apply(x, &bad).status, TERN_EINVAL);
    /* A second close of the current epoch is a no-op. */
    close_s(x, "a", NEVER, false);
    assert_int_equal(close_s(x, "a", 0, false).status, TERN_OK);
    assert_non_null(sess(x, "a"));
    assert_int_equal(tern_fsm_session_expiry(sess(x, "a")), NEVER);
}

static void test_duplicate_proposal(void **state)
{
    struct fx *x = *state;
    open_p(x, "a");
    sub(x, "a", "t", 1, 0);
    uint64_t n1 = UINT64_C(1) << 40, n2 = UINT64_C(2) << 40;
    struct tern_cmd start = {.type = TERN_CMD_ORIGIN_START, .proposal_id = n1 | 4};
    assert_int_equal(apply(x, &start).status, TERN_OK);
    start.proposal_id = n2 | 1;
    assert_int_equal(apply(x, &start).status, TERN_OK);
    struct tern_fsm_result r =
        pub_o(x, "t", "m", (struct pub_opts){.qos = 1, .proposal_id = n1 | 5});
    assert_false(r.duplicate);
    assert_int_equal(r.matched, 1);
    uint64_t applied = st(x)->applied;
    r = pub_o(x, "t", "m", (struct pub_opts){.qos = 1, .proposal_id = n1 | 5});
    assert_int_equal(r.status, TERN_OK);
    assert_true(r.duplicate);
    assert_int_equal(r.matched, 0);
    assert_int_equal(st(x)->applied, applied);
    r = pub_o(x, "t", "m", (struct pub_opts){.qos = 1, .proposal_id = n2 | 2});
    assert_false(r.duplicate);
    /* Out of order (6 missing): refused, nothing enqueued, nothing counted. */
    r = pub_o(x, "t", "m", (struct pub_opts){.qos = 1, .proposal_id = n1 | 7});
    assert_int_equal(r.status, TERN_EAGAIN);
    assert_true(r.out_of_order);
    assert_int_equal(r.matched, 0);
    assert_int_equal(tern_fsm_session_inflight(sess(x, "a")), 2);
    r = pub_o(x, "t", "m", (struct pub_opts){.qos = 1, .proposal_id = n1 | 6});
    assert_false(r.duplicate);
    r = pub_o(x, "t", "m", (struct pub_opts){.qos = 1, .proposal_id = n1 | 7});
    assert_false(r.duplicate);
    assert_false(r.out_of_order);
    assert_int_equal(tern_fsm_session_inflight(sess(x, "a")), 4);
    /* A rejected command is remembered too: a retry would be rejected the same. */
    r = pub_o(x, "t/#", "m", (struct pub_opts){.proposal_id = n1 | 8});
    assert_int_equal(r.status, TERN_EINVAL);
    r = pub_o(x, "t/#", "m", (struct pub_opts){.proposal_id = n1 | 8});
    assert_true(r.duplicate);
}

static void test_session_delete(void **state)
{
    struct fx *x = *state;
    will_sub(x);
    open_o(x, "a",
           (struct open_opts){.node = 4,
                              .expiry = NEVER,
                              .will_topic = "will/a",
                              .will_qos = 1,
                              .will_delay = 60});
    sub(x, "a", "t", 1, 0);
    pub(x, "t", "m", 1);
    x->n = 0;
    assert_int_equal(del(x, "a"), TERN_OK);
    const struct eff *f = last(x, E_FENCED);
    assert_non_null(f);
    assert_int_equal(f->reason, TERN_RC_ADMIN_ACTION);
    assert_int_equal(f->owner, 4);
    assert_int_equal(count_kind(x, E_PUBLISHED), 1);
    assert_null(sess(x, "a"));
    assert_int_equal(del(x, "a"), TERN_ENOTFOUND);
    assert_int_equal(st(x)->sessions, 1);
    assert_int_equal(st(x)->sessions_online, 1);
    assert_int_equal(st(x)->inflight, 1); /* the will, in flight to w */
    assert_int_equal(st(x)->subscriptions, 1);

    /* Offline: no fencing. */
    close_s(x, "w", NEVER, false);
    x->n = 0;
    assert_int_equal(del(x, "w"), TERN_OK);
    assert_int_equal(count_kind(x, E_FENCED), 0);
    assert_int_equal(st(x)->messages, 0);
    assert_int_equal(st(x)->inflight, 0);
}

struct walk_ctx {
    int n;
    char seen[8][STR_MAX];
    uint8_t opts[8];
    uint32_t ids[8];
};

static int session_count(void *ctx, struct tern_fsm_session *s)
{
    (void)s;
    ((struct walk_ctx *)ctx)->n++;
    return 0;
}

static int sub_visit(void *ctx, struct tern_bytes filter, uint8_t options, uint32_t id)
{
    struct walk_ctx *w = ctx;
    copy_str(w->seen[w->n], filter.ptr, filter.len);
    w->opts[w->n] = options;
    w->ids[w->n] = id;
    w->n++;
    return w->n >= 8;
}

static void test_walks_and_local(void **state)
{
    struct fx *x = *state;
    open_p(x, "a");
    open_p(x, "b");
    sub(x, "a", "x/y", 1, 9);
    sub(x, "a", "$share/g/z", 2, 0);
    struct walk_ctx w = {0};
    tern_fsm_sessions_walk(x->f, session_count, &w);
    assert_int_equal(w.n, 2);
    memset(&w, 0, sizeof(w));
    tern_fsm_session_subs_walk(sess(x, "a"), sub_visit, &w);
    assert_int_equal(w.n, 2);
    assert_string_equal(w.seen[0], "x/y");
    assert_int_equal(w.ids[0], 9);
    assert_string_equal(w.seen[1], "$share/g/z");
    assert_int_equal(w.opts[1], 2);

    int dummy;
    tern_fsm_session_set_local(sess(x, "a"), &dummy);
    close_s(x, "a", NEVER, false);
    open_p(x, "a");
    assert_ptr_equal(tern_fsm_session_local(sess(x, "a")), &dummy);
    assert_null(tern_fsm_session_local(sess(x, "b")));
}

static void test_stats(void **state)
{
    struct fx *x = *state;
    open_p(x, "a");
    open_o(x, "b", (struct open_opts){.expiry = NEVER, .rmax = 1});
    sub(x, "a", "t", 1, 0);
    sub(x, "b", "t", 1, 0);
    sub(x, "b", "u", 1, 0);
    pub_o(x, "t", "r", (struct pub_opts){.qos = 1, .retain = true});
    pub(x, "t", "m", 1);
    const struct tern_fsm_stats *s = st(x);
    assert_int_equal(s->sessions, 2);
    assert_int_equal(s->sessions_online, 2);
    assert_int_equal(s->subscriptions, 3);
    assert_int_equal(s->retained, 1);
    assert_int_equal(s->messages, 2);
    assert_int_equal(s->inflight, 3); /* a: 2, b: 1 */
    assert_int_equal(s->queued, 1);   /* b's window is 1 */
    assert_int_equal(s->applied, 7);
    close_s(x, "a", NEVER, false);
    assert_int_equal(s->sessions_online, 1);
}

/* ---------------------------------------------------------------- determinism */

/* A recording observer that folds every effect into a hash, for comparing long
 * runs of two instances. */
struct hrec {
    uint64_t h;
    uint64_t n;
};

static void hmix(struct hrec *r, const void *p, size_t len)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < len; i++) {
        r->h ^= b[i];
        r->h *= UINT64_C(1099511628211);
    }
}

static void hmix_session(struct hrec *r, int kind, const struct tern_fsm_session *s)
{
    struct tern_bytes id = tern_fsm_session_client_id(s);
    hmix(r, &kind, sizeof(kind));
    hmix(r, id.ptr, id.len);
    r->n++;
}

static void h_opened(void *ctx, struct tern_fsm_session *s, bool present)
{
    hmix_session(ctx, 1, s);
    hmix(ctx, &present, sizeof(present));
}

static void h_subscribed(void *ctx, struct tern_fsm_session *s, uint16_t pid)
{
    hmix_session(ctx, 2, s);
    hmix(ctx, &pid, sizeof(pid));
}

static void h_deliver(void *ctx, struct tern_fsm_session *s,
                      const struct tern_delivery *d)
{
    hmix_session(ctx, 3, s);
    uint8_t f[5] = {d->qos, d->retain, d->dup, d->pubrel, d->sub_id_count};
    hmix(ctx, f, sizeof(f));
    hmix(ctx, &d->packet_id, sizeof(d->packet_id));
    hmix(ctx, d->sub_ids, d->sub_id_count * sizeof(uint32_t));
    if (d->msg) {
        hmix(ctx, d->msg->topic.ptr, d->msg->topic.len);
        hmix(ctx, d->msg->payload.ptr, d->msg->payload.len);
    }
}

static void h_fenced(void *ctx, struct tern_bytes id, uint32_t owner, uint64_t epoch,
                     uint8_t reason)
{
    struct hrec *r = ctx;
    hmix(r, id.ptr, id.len);
    hmix(r, &owner, sizeof(owner));
    hmix(r, &epoch, sizeof(epoch));
    hmix(r, &reason, sizeof(reason));
    r->n++;
}

static void h_published(void *ctx, const struct tern_msg *m)
{
    struct hrec *r = ctx;
    hmix(r, m->topic.ptr, m->topic.len);
    r->n++;
}

static uint64_t rnd(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

struct det {
    struct tern_fsm *f[2];
    struct hrec rec[2];
    uint64_t now;
    uint64_t seed;
};

static void det_apply(struct det *d, struct tern_cmd *c)
{
    c->now_ms = d->now;
    struct tern_fsm_result r[2];
    for (int i = 0; i < 2; i++)
        tern_fsm_apply(d->f[i], c, &r[i]);
    assert_int_equal(r[0].status, r[1].status);
    assert_int_equal(r[0].epoch, r[1].epoch);
    assert_int_equal(r[0].matched, r[1].matched);
    assert_int_equal(r[0].duplicate, r[1].duplicate);
    assert_int_equal(r[0].session_present, r[1].session_present);
}

static const char *const det_ids[] = {"c0", "c1", "c2", "c3", "c4", "c5"};
static const char *const det_filters[] = {"a/#",          "a/+",          "+/b", "#",
                                          "$share/g/a/#", "$share/h/+/b", "a/b", "c"};
static const char *const det_topics[] = {"a/b", "a/c", "c", "x/b", "a/b/c"};

static uint64_t det_epoch(struct det *d, const char *id, uint64_t *seed)
{
    struct tern_fsm_session *s = tern_fsm_session_get(d->f[0], id, strlen(id));
    uint64_t e = s ? tern_fsm_session_epoch(s) : 1;
    return (rnd(seed) % 10 == 0) ? e + 1 : e; /* sometimes stale */
}

static void det_step(struct det *d)
{
    uint64_t *sd = &d->seed;
    const char *id = det_ids[rnd(sd) % 6];
    struct tern_cmd c = {0};
    uint8_t buf[128];
    uint32_t pick = (uint32_t)(rnd(sd) % 100);
    if (rnd(sd) % 8 == 0)
        c.proposal_id = (UINT64_C(1) << 40) | (rnd(sd) % 64);
    if (pick < 12) {
        c.type = TERN_CMD_SESSION_OPEN;
        c.u.open.client_id = B(id);
        c.u.open.node = 1 + (uint32_t)(rnd(sd) % 3);
        c.u.open.clean_start = rnd(sd) % 4 == 0;
        static const uint32_t exp[] = {0, 3, 30, NEVER};
        c.u.open.expiry_s = exp[rnd(sd) % 4];
        c.u.open.receive_max = (uint16_t)(rnd(sd) % 4);
        c.u.open.has_will = rnd(sd) % 2;
        c.u.open.will_delay_s = (uint32_t)(rnd(sd) % 3) * 2;
        c.u.open.will.topic = B(det_topics[rnd(sd) % 5]);
        c.u.open.will.payload = B("w");
        c.u.open.will.qos = (uint8_t)(rnd(sd) % 3);
        c.u.open.will.retain = rnd(sd) % 2;
    } else if (pick < 20) {
        c.type = TERN_CMD_SESSION_CLOSE;
        c.u.close.client_id = B(id);
        c.u.close.epoch = det_epoch(d, id, sd);
        c.u.close.expiry_s = rnd(sd) % 2 ? NEVER : 5;
        c.u.close.publish_will = rnd(sd) % 2;
    } else if (pick < 35) {
        c.type = rnd(sd) % 4 ? TERN_CMD_SUBSCRIBE : TERN_CMD_UNSUBSCRIBE;
        c.u.sub.client_id = B(id);
        c.u.sub.epoch = det_epoch(d, id, sd);
        c.u.sub.packet_id = 1;
        size_t n = 0;
        for (int i = 0; i < 2; i++) {
            struct tern_cmd_sub e = {.filter = B(det_filters[rnd(sd) % 8]),
                                     .options = (uint8_t)(rnd(sd) % 64),
                                     .sub_id = (uint32_t)(rnd(sd) % 3)};
            if ((e.options & 3) == 3)
                e.options &= (uint8_t)~3;
            n += tern_cmd_put_sub(buf + n, sizeof(buf) - n, &e);
        }
        c.u.sub.list = (struct tern_bytes){buf, (uint32_t)n};
        c.u.sub.count = 2;
    } else if (pick < 70) {
        c.type = TERN_CMD_PUBLISH;
        if (rnd(sd) % 2) {
            c.u.publish.client_id = B(id);
            c.u.publish.epoch = det_epoch(d, id, sd);
            c.u.publish.inbound_packet_id = (uint16_t)(rnd(sd) % 4);
        }
        c.u.publish.msg.topic = B(det_topics[rnd(sd) % 5]);
        c.u.publish.msg.payload = B(rnd(sd) % 5 ? "payload" : "");
        c.u.publish.msg.qos = (uint8_t)(rnd(sd) % 3);
        c.u.publish.msg.retain = rnd(sd) % 4 == 0;
        if (rnd(sd) % 3 == 0) {
            c.u.publish.msg.flags = TERN_MSG_HAS_EXPIRY;
            c.u.publish.msg.expiry_s = (uint32_t)(rnd(sd) % 4);
        }
    } else if (pick < 88) {
        c.type = TERN_CMD_ACK;
        c.u.ack.client_id = B(id);
        c.u.ack.epoch = det_epoch(d, id, sd);
        c.u.ack.packet_id = (uint16_t)(1 + rnd(sd) % 8);
        static const uint8_t kinds[] = {TERN_PUBACK, TERN_PUBREC, TERN_PUBCOMP};
        c.u.ack.kind = kinds[rnd(sd) % 3];
        c.u.ack.reason = rnd(sd) % 8 ? 0 : 0x80;
    } else if (pick < 92) {
        c.type = TERN_CMD_PUBREL;
        c.u.pubrel.client_id = B(id);
        c.u.pubrel.epoch = det_epoch(d, id, sd);
        c.u.pubrel.packet_id = (uint16_t)(rnd(sd) % 4);
    } else if (pick < 97) {
        c.type = TERN_CMD_TICK;
    } else if (pick < 99) {
        c.type = TERN_CMD_SESSION_DELETE;
        c.u.del.client_id = B(id);
    } else {
        c.type = TERN_CMD_RETAIN_DELETE;
        c.u.retain_delete.topic = B(det_topics[rnd(sd) % 5]);
    }
    d->now += rnd(sd) % 1500;
    det_apply(d, &c);
}

struct cmp_ctx {
    const struct tern_fsm *other;
    int n;
};

static int session_cmp(void *ctx, struct tern_fsm_session *s)
{
    struct cmp_ctx *c = ctx;
    struct tern_bytes id = tern_fsm_session_client_id(s);
    struct tern_fsm_session *o =
        tern_fsm_session_get(c->other, (const char *)id.ptr, id.len);
    assert_non_null(o);
    assert_int_equal(tern_fsm_session_epoch(s), tern_fsm_session_epoch(o));
    assert_int_equal(tern_fsm_session_online(s), tern_fsm_session_online(o));
    assert_int_equal(tern_fsm_session_owner(s), tern_fsm_session_owner(o));
    assert_int_equal(tern_fsm_session_queued(s), tern_fsm_session_queued(o));
    assert_int_equal(tern_fsm_session_queued_bytes(s), tern_fsm_session_queued_bytes(o));
    assert_int_equal(tern_fsm_session_inflight(s), tern_fsm_session_inflight(o));
    assert_int_equal(tern_fsm_session_sub_count(s), tern_fsm_session_sub_count(o));
    c->n++;
    return 0;
}

static void test_determinism(void **state)
{
    (void)state;
    struct tern_fsm_limits lim;
    tern_fsm_limits_default(&lim);
    lim.inflight_max = 4;
    lim.queue_max = 6;
    lim.retained_max = 3;
    for (uint64_t seed = 1; seed <= 8; seed++) {
        struct det d = {.now = 1000000, .seed = seed * 0x9E3779B97F4A7C15ull};
        for (int i = 0; i < 2; i++) {
            d.rec[i].h = UINT64_C(14695981039346656037);
            struct tern_fsm_observer obs = {.ctx = &d.rec[i],
                                            .opened = h_opened,
                                            .subscribed = h_subscribed,
                                            .deliver = h_deliver,
                                            .fenced = h_fenced,
                                            .published = h_published};
            lim.drop_policy = (uint8_t)(seed % 2);
            lim.queue_qos0 = seed % 3 == 0;
            d.f[i] = tern_fsm_new((uint32_t)i + 1, &lim, &obs);
            assert_non_null(d.f[i]);
        }
        for (int step = 0; step < 3000; step++)
            det_step(&d);
        assert_int_equal(d.rec[0].n, d.rec[1].n);
        assert_int_equal(d.rec[0].h, d.rec[1].h);
        assert_true(d.rec[0].n > 100);
        assert_memory_equal(tern_fsm_stats(d.f[0]), tern_fsm_stats(d.f[1]),
                            sizeof(struct tern_fsm_stats));
        struct cmp_ctx c = {.other = d.f[1]};
        tern_fsm_sessions_walk(d.f[0], session_cmp, &c);
        assert_int_equal((uint64_t)c.n, tern_fsm_stats(d.f[1])->sessions);
        for (int i = 0; i < 2; i++)
            tern_fsm_free(d.f[i]);
    }
}

/* Gives f a different internal layout (hash buckets, topic tree child tables)
 * with the same replicated counters as its twin: `spread` uses 300 client ids
 * and deep filters, otherwise one id is reused 300 times with filters at the
 * root level. Either way 300 epochs and 300
 * subscriptions are used up and 900 commands applied, and nothing is left. */
static void det_perturb(struct tern_fsm *f, bool spread)
{
    for (int i = 0; i < 300; i++) {
        char id[16], filter[32];
        snprintf(id, sizeof(id), "zz%03d", spread ? i : 0);
        const char *fmt = spread ? (i % 2 ? "p/%d/#" : "$share/g%d/p") : "%d/+/x";
        snprintf(filter, sizeof(filter), fmt, i);
        struct tern_fsm_result r;
        struct tern_cmd c = {.type = TERN_CMD_SESSION_OPEN};
        c.u.open.client_id = B(id);
        c.u.open.expiry_s = NEVER;
        tern_fsm_apply(f, &c, &r);
        assert_int_equal(r.status, TERN_OK);
        uint8_t buf[64];
        struct tern_cmd_sub e = {.filter = B(filter), .options = 1};
        size_t n = tern_cmd_put_sub(buf, sizeof(buf), &e);
        struct tern_cmd sc = {.type = TERN_CMD_SUBSCRIBE};
        sc.u.sub.client_id = B(id);
        sc.u.sub.epoch = r.epoch;
        sc.u.sub.list = (struct tern_bytes){buf, (uint32_t)n};
        sc.u.sub.count = 1;
        tern_fsm_apply(f, &sc, &r);
        assert_int_equal(r.status, TERN_OK);
    }
    for (int i = 0; i < 300; i++) {
        char id[16];
        snprintf(id, sizeof(id), "zz%03d", i);
        struct tern_fsm_result r;
        struct tern_cmd c = {.type = TERN_CMD_SESSION_DELETE};
        c.u.del.client_id = B(id);
        tern_fsm_apply(f, &c, &r);
    }
}

/* The same commands on two replicas whose maps and trees are laid out
 * differently: nothing may depend on visit order. */
static void test_determinism_layout(void **state)
{
    (void)state;
    struct tern_fsm_limits lim;
    tern_fsm_limits_default(&lim);
    lim.inflight_max = 3;
    lim.queue_max = 5;
    for (uint64_t seed = 11; seed <= 14; seed++) {
        struct det d = {.now = 5000000, .seed = seed * 0x9E3779B97F4A7C15ull};
        for (int i = 0; i < 2; i++) {
            d.rec[i].h = UINT64_C(14695981039346656037);
            struct tern_fsm_observer obs = {.ctx = &d.rec[i],
                                            .opened = h_opened,
                                            .subscribed = h_subscribed,
                                            .deliver = h_deliver,
                                            .fenced = h_fenced,
                                            .published = h_published};
            d.f[i] = tern_fsm_new(1, &lim, &obs);
            assert_non_null(d.f[i]);
        }
        /* Perturb mid-run, so live entries get reordered around the churn. */
        for (int step = 0; step < 3000; step++) {
            det_step(&d);
            if (step % 1000 != 500)
                continue;
            for (int i = 0; i < 2; i++) {
                struct hrec keep = d.rec[i];
                det_perturb(d.f[i], i == 0);
                d.rec[i] = keep;
            }
            assert_memory_equal(tern_fsm_stats(d.f[0]), tern_fsm_stats(d.f[1]),
                                sizeof(struct tern_fsm_stats));
        }
        assert_int_equal(d.rec[0].n, d.rec[1].n);
        assert_int_equal(d.rec[0].h, d.rec[1].h);
        assert_memory_equal(tern_fsm_stats(d.f[0]), tern_fsm_stats(d.f[1]),
                            sizeof(struct tern_fsm_stats));
        struct cmp_ctx c = {.other = d.f[1]};
        tern_fsm_sessions_walk(d.f[0], session_cmp, &c);
        for (int i = 0; i < 2; i++)
            tern_fsm_free(d.f[i]);
    }
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_open_new_resume_clean),
        T(test_open_invalid_and_limit),
        T(test_session_expiry_cap),
        T(test_receive_max_zero_means_max),
        T(test_publish_qos_downgrade),
        T(test_overlapping_subs),
        T(test_no_local),
        T(test_retain_as_published),
        T(test_publish_invalid),
        T(test_retained_store_replace_delete),
        T(test_retained_wildcards_and_accessors),
        T(test_retain_handling),
        T(test_retained_limits),
        T(test_retained_expiry),
        T(test_retained_expiry_deadline),
        T(test_retained_source),
        T(test_dollar_topics),
        T(test_shared_round_robin),
        T(test_shared_unsubscribe_frees_group),
        T(test_offline_queue),
        T(test_offline_queue_qos0),
        T(test_queue_bound_drop_oldest),
        T(test_queue_bound_drop_new),
        T(test_queue_bytes_bound),
        T(test_inflight_window),
        T(test_packet_id_wraps_and_skips),
        T(test_qos2_flow),
        T(test_resume_redelivery),
        T(test_takeover_redelivers),
        T(test_message_expiry),
        T(test_message_expiry_cap_and_remaining),
        T(test_inbound_qos2),
        T(test_will_on_close),
        T(test_will_retained),
        T(test_will_delay_tick),
        T(test_will_cancelled_by_resume),
        T(test_will_clean_start_cancels_pending),
        T(test_takeover_of_clean_session_not_present),
        T(test_will_on_takeover),
        T(test_will_delay_capped_by_expiry),
        T(test_session_expiry_tick),
        T(test_expired_session_not_resumed),
        T(test_expiry_zero_close),
        T(test_stale_epoch),
        T(test_duplicate_proposal),
        T(test_session_delete),
        T(test_walks_and_local),
        T(test_stats),
        T(test_determinism),
        T(test_determinism_layout),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
