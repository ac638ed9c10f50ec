/* Unit tests of shared subscriptions across the two FSM instances: the replicated
 * FSM chooses one member per group among its sessions and its routes' nodes
 * (shared_route effect), deterministically and across a snapshot; a PUBLISH with
 * a delivery selection serves only what it lists (tern/fsm.h, tern/cmd.h). */
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

#define CHOICES_MAX 512

/* What the observer saw: each choice as a client id's first letter (a session
 * delivery) or a node digit (a shared_route), in order. */
struct rec {
    char choices[CHOICES_MAX + 1];
    size_t n;
    int per_node[10];
    int published;
};

static void note(struct rec *r, char c)
{
    if (r->n < CHOICES_MAX)
        r->choices[r->n++] = c;
}

static void on_deliver(void *ctx, struct tern_fsm_session *s,
                       const struct tern_delivery *d)
{
    (void)d;
    note(ctx, (char)tern_fsm_session_client_id(s).ptr[0]);
}

static void on_shared_route(void *ctx, const struct tern_msg *m, struct tern_bytes filter,
                            uint32_t node)
{
    struct rec *r = ctx;
    (void)m;
    assert_true(filter.len > 7 && memcmp(filter.ptr, "$share/", 7) == 0);
    assert_true(node < 10);
    r->per_node[node]++;
    note(r, (char)('0' + node));
}

static void on_published(void *ctx, const struct tern_msg *m)
{
    (void)m;
    ((struct rec *)ctx)->published++;
}

static struct tern_fsm *fsm(struct rec *r)
{
    struct tern_fsm_observer obs = {.ctx = r,
                                    .deliver = on_deliver,
                                    .shared_route = on_shared_route,
                                    .published = on_published};
    struct tern_fsm_limits lim;
    tern_fsm_limits_default(&lim);
    lim.inflight_max = 65535; /* every delivery is seen, none waits in a queue */
    struct tern_fsm *f = tern_fsm_new(1, &lim, &obs);
    assert_non_null(f);
    return f;
}

static struct tern_bytes B(const char *s) {
    return (struct tern_bytes){(const uint8_t *)s, (uint32_t)strlen(s)};
}

static struct tern_fsm_result
run(struct tern_fsm *f, struct tern_cmd *c)
{
    struct tern_fsm_result r;
    c->now_ms = 1000;
    tern_fsm_apply(f, c, &r);
    return r;
}

static uint64_t open_s(struct tern_fsm *f, const char *id, uint32_t expiry,
                       const char *will)
{
    struct tern_cmd c = {.type = TERN_CMD_SESSION_OPEN};
    c.u.open.client_id = B(id);
    c.u.open.node = 1;
    c.u.open.proto = TERN_MQTT_5;
    c.u.open.expiry_s = expiry;
    c.u.open.receive_max = 65535;
    if (will) {
        c.u.open.has_will = true;
        c.u.open.will.topic = B(will);
        c.u.open.will.payload = B("gone");
    }
    struct tern_fsm_result r = run(f, &c);
    assert_int_equal(r.status, TERN_OK);
    return r.epoch;
}

static void close_s(struct tern_fsm *f, const char *id, uint64_t epoch, bool will)
{
    struct tern_cmd c = {.type = TERN_CMD_SESSION_CLOSE};
    c.u.close.client_id = B(id);
    c.u.close.epoch = epoch;
    c.u.close.expiry_s = 3600;
    c.u.close.publish_will = will;
    assert_int_equal(run(f, &c).status, TERN_OK);
}

static void sub(struct tern_fsm *f, const char *id, uint64_t epoch, const char *filter)
{
    uint8_t list[128];
    struct tern_cmd_sub e = {B(filter), 1, 0}; /* QoS 1 */
    size_t len = tern_cmd_put_sub(list, sizeof(list), &e);
    struct tern_cmd c = {.type = TERN_CMD_SUBSCRIBE};
    c.u.sub.client_id = B(id);
    c.u.sub.epoch = epoch;
    c.u.sub.list = (struct tern_bytes){list, (uint32_t)len};
    c.u.sub.count = 1;
    assert_int_equal(run(f, &c).status, TERN_OK);
}

static void route(struct tern_fsm *f, uint8_t type, const char *filter, uint32_t node)
{
    struct tern_cmd c = {.type = type};
    c.u.route.node = node;
    c.u.route.filter = B(filter);
    assert_int_equal(run(f, &c).status, TERN_OK);
}

/* Publishes n QoS 1 messages on topic, with a selection when select != 0. */
static void pub(struct tern_fsm *f, const char *topic, int n, uint8_t select,
                const char *group1, const char *group2)
{
    uint8_t groups[128];
    size_t len = 0;
    uint16_t count = 0;
    for (const char *g = group1; g; g = g == group1 ? group2 : NULL, count++)
        len += tern_cmd_put_group(groups + len, sizeof(groups) - len, B(g));
    for (int i = 0; i < n; i++) {
        struct tern_cmd c = {.type = TERN_CMD_PUBLISH};
        c.u.publish.client_id = B("publisher");
        c.u.publish.msg.topic = B(topic);
        c.u.publish.msg.payload = B("x");
        c.u.publish.msg.qos = 1;
        c.u.publish.select = select;
        c.u.publish.group_count = count;
        c.u.publish.groups = (struct tern_bytes){groups, (uint32_t)len};
        assert_int_equal(run(f, &c).status, TERN_OK);
    }
}

static int count_of(const struct rec *r, char c)
{
    int k = 0;
    for (size_t i = 0; i < r->n; i++)
        k += r->choices[i] == c;
    return k;
}

/* A group with a persistent member and clean members on nodes 2 and 3: one choice
 * per message, round robin over the member and the two nodes. Offline, the member
 * yields to the nodes (their clean members are online); without routes it gets
 * its messages queued again. */
static void test_member_and_routes_round_robin(void **state)
{
    (void)state;
    struct rec r = {0};
    struct tern_fsm *f = fsm(&r);
    uint64_t ep = open_s(f, "p", 3600, NULL);
    sub(f, "p", ep, "$share/g/t");
    route(f, TERN_CMD_ROUTE_ADD, "$share/g/t", 3);
    route(f, TERN_CMD_ROUTE_ADD, "$share/g/t", 2);
    route(f, TERN_CMD_ROUTE_ADD, "t", 2); /* a plain route: not a member */
    pub(f, "t", 9, 0, NULL, NULL);
    assert_string_equal(r.choices, "p23p23p23");

    close_s(f, "p", ep, false);
    r.n = 0;
    memset(r.choices, 0, sizeof(r.choices));
    pub(f, "t", 4, 0, NULL, NULL);
    assert_int_equal(r.n, 4);
    assert_int_equal(count_of(&r, '2') + count_of(&r, '3'), 4);
    assert_int_equal(count_of(&r, '2'), 2);
    assert_int_equal(tern_fsm_session_queued(tern_fsm_session_get(f, "p", 1)), 0);

    route(f, TERN_CMD_ROUTE_DEL, "$share/g/t", 2);
    route(f, TERN_CMD_ROUTE_DEL, "$share/g/t", 3);
    r.n = 0;
    pub(f, "t", 2, 0, NULL, NULL);
    assert_int_equal(r.n, 0); /* offline: queued, not delivered */
    assert_int_equal(tern_fsm_session_queued(tern_fsm_session_get(f, "p", 1)), 2);
    tern_fsm_free(f);
}

/* A group that only has routes: each message to exactly one of its nodes, both
 * get a share, and every replica chooses the same (a hash of the message id). */
static void test_route_only_group(void **state)
{
    (void)state;
    struct rec r1 = {0}, r2 = {0};
    struct tern_fsm *f1 = fsm(&r1), *f2 = fsm(&r2);
    struct tern_fsm *fs[] = {f1, f2};
    for (int i = 0; i < 2; i++) {
        route(fs[i], TERN_CMD_ROUTE_ADD, "$share/g/a/+", 2);
        route(fs[i], TERN_CMD_ROUTE_ADD, "$share/g/a/+", 3);
        route(fs[i], TERN_CMD_ROUTE_ADD, "$share/h/#", 3);
        route(fs[i], TERN_CMD_ROUTE_ADD, "a/b", 4);
        pub(fs[i], "a/b", 200, 0, NULL, NULL);
        pub(fs[i], "z", 5, 0, NULL, NULL); /* only group h */
    }
    assert_int_equal(r1.per_node[4], 0);
    assert_int_equal(r1.per_node[2] + r1.per_node[3], 200 + 200 + 5); /* g, h, h */
    assert_true(r1.per_node[2] >= 60 && r1.per_node[2] <= 140);
    assert_int_equal(r1.n, r2.n);
    assert_memory_equal(r1.choices, r2.choices, r1.n);
    tern_fsm_free(f1);
    tern_fsm_free(f2);
}

/* A selection serves only the listed groups (and no plain subscriptions with
 * NO_PLAIN), and never consults routes: the choice was made elsewhere. */
static void test_selection(void **state)
{
    (void)state;
    struct rec r = {0};
    struct tern_fsm *f = fsm(&r);
    sub(f, "a", open_s(f, "a", 0, NULL), "$share/g/t");
    sub(f, "b", open_s(f, "b", 0, NULL), "$share/g/t");
    sub(f, "c", open_s(f, "c", 0, NULL), "$share/h/t");
    sub(f, "d", open_s(f, "d", 0, NULL), "t");
    route(f, TERN_CMD_ROUTE_ADD, "$share/g/t", 2);

    pub(f, "t", 4, TERN_PUB_GROUPS, "$share/g/t", NULL);
    assert_string_equal(r.choices, "adbdadbd"); /* seq order: a, d or d, a... */
    r.n = 0;
    memset(r.choices, 0, sizeof(r.choices));
    pub(f, "t", 2, TERN_PUB_GROUPS | TERN_PUB_NO_PLAIN, "$share/h/t", "$share/g/t");
    assert_int_equal(count_of(&r, 'c'), 2);
    assert_int_equal(count_of(&r, 'a') + count_of(&r, 'b'), 2);
    assert_int_equal(count_of(&r, 'd'), 0);
    r.n = 0;
    memset(r.choices, 0, sizeof(r.choices));
    pub(f, "t", 3, TERN_PUB_GROUPS, NULL, NULL); /* no group here */
    assert_string_equal(r.choices, "ddd");
    assert_int_equal(r.per_node[2], 0);
    r.n = 0;
    memset(r.choices, 0, sizeof(r.choices));
    pub(f, "t", 1, 0, NULL, NULL); /* no selection: g (with node 2), h and d */
    assert_int_equal(r.n, 3);
    assert_int_equal(count_of(&r, 'c'), 1);
    assert_int_equal(count_of(&r, 'd'), 1);
    tern_fsm_free(f);
}

/* A will is a publish of the FSM: its shared groups' members are chosen there too. */
static void test_will_goes_to_one_route(void **state)
{
    (void)state;
    struct rec r = {0};
    struct tern_fsm *f = fsm(&r);
    route(f, TERN_CMD_ROUTE_ADD, "$share/g/w", 2);
    route(f, TERN_CMD_ROUTE_ADD, "$share/g/w", 3);
    uint64_t ep = open_s(f, "x", 3600, "w");
    close_s(f, "x", ep, true);
    assert_int_equal(r.published, 1);
    assert_int_equal(r.per_node[2] + r.per_node[3], 1);
    tern_fsm_free(f);
}

/* The choice is replicated state: a restored FSM goes on choosing exactly as the
 * original (group counter and message ids are in the snapshot). */
static void test_choice_survives_snapshot(void **state)
{
    (void)state;
    struct rec r1 = {0}, r2 = {0};
    struct tern_fsm *f1 = fsm(&r1), *f2 = fsm(&r2);
    uint64_t ep = open_s(f1, "p", 3600, NULL);
    sub(f1, "p", ep, "$share/g/t");
    route(f1, TERN_CMD_ROUTE_ADD, "$share/g/t", 2);
    route(f1, TERN_CMD_ROUTE_ADD, "$share/h/t", 2);
    route(f1, TERN_CMD_ROUTE_ADD, "$share/h/t", 3);
    pub(f1, "t", 7, 0, NULL, NULL);
    uint8_t *snap;
    size_t len;
    assert_int_equal(tern_fsm_snapshot(f1, &snap, &len), TERN_OK);
    char err[TERN_ERRMSG_SIZE];
    assert_int_equal(tern_fsm_restore(f2, snap, len, err), TERN_OK);
    free(snap);
    r1.n = 0;
    pub(f1, "t", 50, 0, NULL, NULL);
    pub(f2, "t", 50, 0, NULL, NULL);
    assert_int_equal(r1.n, 100); /* per message: one of g, one of h */
    assert_int_equal(r2.n, 100);
    assert_memory_equal(r1.choices, r2.choices, r1.n);
    tern_fsm_free(f1);
    tern_fsm_free(f2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_member_and_routes_round_robin),
        cmocka_unit_test(test_route_only_group),
        cmocka_unit_test(test_selection),
        cmocka_unit_test(test_will_goes_to_one_route),
        cmocka_unit_test(test_choice_survives_snapshot),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
