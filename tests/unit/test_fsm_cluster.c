/* Unit tests of the FSM's cluster-facing parts: proposal order,
 * NODE_DOWN and routes (tern/fsm.h). */
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

#define NEVER 0xFFFFFFFFu

struct rec {
    int fenced, published, delivered;
    char fenced_ids[8][16];
    uint8_t reason;
    char will_topics[8][16];
};

static void on_fenced(void *ctx, struct tern_bytes id, uint32_t owner, uint64_t epoch,
                      uint8_t reason)
{
    struct rec *r = ctx;
    (void)owner;
    (void)epoch;
    if (r->fenced < 8)
        snprintf(r->fenced_ids[r->fenced], 16, "%.*s", (int)id.len, (const char *)id.ptr);
    r->fenced++;
    r->reason = reason;
}

static void on_published(void *ctx, const struct tern_msg *m)
{
    struct rec *r = ctx;
    if (r->published < 8)
        snprintf(r->will_topics[r->published], 16, "%.*s", (int)m->topic.len,
                 (const char *)m->topic.ptr);
    r->published++;
}

static void on_deliver(void *ctx, struct tern_fsm_session *s,
                       const struct tern_delivery *d)
{
    (void)s;
    (void)d;
    ((struct rec *)ctx)->delivered++;
}

static struct tern_fsm *fsm(struct rec *r)
{
    struct tern_fsm_observer obs = {
        .ctx = r, .fenced = on_fenced, .published = on_published, .deliver = on_deliver};
    struct tern_fsm *f = tern_fsm_new(1, NULL, &obs);
    assert_non_null(f);
    return f;
}

static struct tern_bytes B(const char *s) {
    return (struct tern_bytes){(const uint8_t *)s, (uint32_t)strlen(s)};
}

static struct tern_fsm_result
run(struct tern_fsm *f, struct tern_cmd *c, uint64_t now)
{
    struct tern_fsm_result r;
    c->now_ms = now;
    tern_fsm_apply(f, c, &r);
    return r;
}

static struct tern_fsm_session *sess(struct tern_fsm *f, const char *id)
{
    return tern_fsm_session_get(f, id, strlen(id));
}

static void open_s(struct tern_fsm *f, const char *id, uint32_t node, uint32_t expiry,
                   const char *will, uint32_t delay)
{
    struct tern_cmd c = {.type = TERN_CMD_SESSION_OPEN};
    c.u.open.client_id = B(id);
    c.u.open.node = node;
    c.u.open.proto = TERN_MQTT_5;
    c.u.open.expiry_s = expiry;
    if (will) {
        c.u.open.has_will = true;
        c.u.open.will_delay_s = delay;
        c.u.open.will.topic = B(will);
        c.u.open.will.payload = B("gone");
        c.u.open.will.qos = 1;
    }
    assert_int_equal(run(f, &c, 1000).status, TERN_OK);
}

static struct tern_fsm_result tick_p(struct tern_fsm *f, uint64_t proposal_id)
{
    struct tern_cmd c = {.type = TERN_CMD_TICK, .proposal_id = proposal_id};
    return run(f, &c, 1000);
}

/* --- proposal order --- */

#define P(node, seq) (((uint64_t)(node) << 40) | (uint64_t)(seq))

static struct tern_fsm_result start_p(struct tern_fsm *f, uint64_t proposal_id)
{
    struct tern_cmd c = {.type = TERN_CMD_ORIGIN_START, .proposal_id = proposal_id};
    return run(f, &c, 1000);
}

/* Applied (not a duplicate, not refused). */
static bool applies(struct tern_fsm_result r)
{
    return r.status == TERN_OK && !r.duplicate && !r.out_of_order;
}

static bool refused(struct tern_fsm_result r)
{
    return r.status == TERN_EAGAIN && r.out_of_order && !r.duplicate;
}

static void test_order_in_sequence(void **state)
{
    (void)state;
    struct rec r = {0};
    struct tern_fsm *f = fsm(&r);
    assert_true(applies(start_p(f, P(1, 1))));
    for (uint64_t s = 2; s <= 3000; s++)
        assert_true(applies(tick_p(f, P(1, s))));
    for (uint64_t s = 1; s <= 3000; s++) /* every retry is a duplicate */
        assert_true(tick_p(f, P(1, s)).duplicate);
    assert_int_equal(tern_fsm_stats(f)->applied, 3000);
    assert_int_equal(tern_fsm_proposal_high(f, 1), 3000);
    assert_true(applies(tick_p(f, 0))); /* 0 = no id: always applies */
    assert_true(applies(tick_p(f, 0)));
    tern_fsm_free(f);
}

/* What the sliding window got wrong: a proposal lost with a leader and retried
 * after more than 1024 newer ones had applied was skipped as "too old" while
 * its proposer was told it had applied. Now the newer ones are refused until
 * it arrives, and then they apply behind it, once each. */
static void test_order_gap_refused_until_filled(void **state)
{
    (void)state;
    struct rec r = {0};
    struct tern_fsm *f = fsm(&r);
    assert_true(applies(start_p(f, P(1, 100))));
    assert_true(applies(tick_p(f, P(1, 101))));
    uint64_t applied = tern_fsm_stats(f)->applied;
    for (uint64_t s = 103; s <= 103 + 2000; s++) /* 102 lost */
        assert_true(refused(tick_p(f, P(1, s))));
    assert_int_equal(tern_fsm_stats(f)->applied, applied); /* refused: no effect */
    assert_int_equal(tern_fsm_proposal_high(f, 1), 101);
    /* The proposer re-sends its tail, in order, from the missing one. */
    for (uint64_t s = 102; s <= 103 + 2000; s++)
        assert_true(applies(tick_p(f, P(1, s))));
    assert_true(tick_p(f, P(1, 102)).duplicate);
    assert_int_equal(tern_fsm_proposal_high(f, 1), 103 + 2000);
    /* Another node's sequence is its own. */
    assert_true(refused(tick_p(f, P(2, 1)))); /* unknown origin: needs a start */
    assert_true(applies(start_p(f, P(2, 7))));
    assert_true(applies(tick_p(f, P(2, 8))));
    tern_fsm_free(f);
}

/* A restarted node jumps past every id it used; its old proposals that commit
 * after the jump are duplicates, the ones before it apply in order. */
static void test_order_start_jumps(void **state)
{
    (void)state;
    struct rec r = {0};
    struct tern_fsm *f = fsm(&r);
    assert_true(applies(start_p(f, P(1, 1))));
    assert_true(applies(tick_p(f, P(1, 2))));
    assert_true(applies(tick_p(f, P(1, 3)))); /* old, committed before the start */
    assert_true(applies(start_p(f, P(1, 1000000))));
    assert_true(tick_p(f, P(1, 4)).duplicate); /* old, committed after it */
    assert_true(start_p(f, P(1, 1000000)).duplicate);
    assert_true(start_p(f, P(1, 5)).duplicate); /* a start never goes back */
    assert_true(refused(tick_p(f, P(1, 1000002))));
    assert_true(applies(tick_p(f, P(1, 1000001))));
    tern_fsm_free(f);
}

static void test_order_origin_bound(void **state)
{
    (void)state;
    struct rec r = {0};
    struct tern_fsm *f = fsm(&r);
    /* 256 origins fit; node 1 is then used again, so node 2 is the LRU. */
    for (uint32_t n = 1; n <= 256; n++)
        assert_true(applies(start_p(f, P(n, 5))));
    assert_true(applies(tick_p(f, P(1, 6))));
    assert_true(applies(start_p(f, P(1000, 1)))); /* evicts node 2 */
    assert_true(refused(tick_p(f, P(2, 6))));     /* forgotten: refused... */
    assert_true(applies(start_p(f, P(2, 100))));  /* ...until it starts again */
    assert_true(tick_p(f, P(1, 5)).duplicate);    /* remembered */
    assert_true(tick_p(f, P(1000, 1)).duplicate);
    assert_true(tick_p(f, P(256, 5)).duplicate);
    tern_fsm_free(f);
}

/* --- NODE_DOWN --- */

static struct tern_fsm_result node_down(struct tern_fsm *f, uint32_t node, uint64_t now)
{
    struct tern_cmd c = {.type = TERN_CMD_NODE_DOWN};
    c.u.node_down.node = node;
    return run(f, &c, now);
}

static void sub1(struct tern_fsm *f, const char *id, const char *filter, uint8_t qos)
{
    uint8_t list[128];
    struct tern_cmd_sub e = {.filter = B(filter), .options = qos};
    size_t n = tern_cmd_put_sub(list, sizeof(list), &e);
    struct tern_cmd c = {.type = TERN_CMD_SUBSCRIBE};
    c.u.sub.client_id = B(id);
    c.u.sub.epoch = tern_fsm_session_epoch(sess(f, id));
    c.u.sub.list = (struct tern_bytes){list, (uint32_t)n};
    c.u.sub.count = 1;
    assert_int_equal(run(f, &c, 1000).status, TERN_OK);
}

static void test_node_down(void **state)
{
    (void)state;
    struct rec r = {0};
    struct tern_fsm *f = fsm(&r);
    open_s(f, "a", 2, NEVER, "will/a", 0);  /* will now */
    open_s(f, "b", 2, NEVER, "will/b", 30); /* will after 30 s */
    open_s(f, "c", 2, 0, "will/c", 30);     /* expiry 0: will now, then ends */
    open_s(f, "d", 3, NEVER, "will/d", 0);  /* other node: untouched */
    open_s(f, "e", 2, NEVER, NULL, 0);
    sub1(f, "e", "will/#", 1); /* on the lost node too */
    sub1(f, "d", "will/#", 1);
    uint64_t old_a = tern_fsm_session_epoch(sess(f, "a"));
    r.delivered = 0;

    struct tern_fsm_result res = node_down(f, 2, 5000);
    assert_int_equal(res.status, TERN_OK);
    assert_int_equal(res.matched, 4);
    /* Fenced in epoch order, all before any will. */
    assert_int_equal(r.fenced, 4);
    assert_string_equal(r.fenced_ids[0], "a");
    assert_string_equal(r.fenced_ids[1], "b");
    assert_string_equal(r.fenced_ids[2], "c");
    assert_string_equal(r.fenced_ids[3], "e");
    assert_int_equal(r.reason, TERN_RC_SERVER_UNAVAILABLE);
    assert_int_equal(r.published, 2);
    assert_string_equal(r.will_topics[0], "will/a");
    assert_string_equal(r.will_topics[1], "will/c");
    /* Only d (node 3, online) got them; e was offline first, so they queued. */
    assert_int_equal(r.delivered, 2);
    assert_int_equal(tern_fsm_session_queued(sess(f, "e")), 2);
    assert_false(tern_fsm_session_online(sess(f, "a")));
    assert_false(tern_fsm_session_online(sess(f, "b")));
    assert_null(sess(f, "c"));
    assert_true(tern_fsm_session_online(sess(f, "d")));
    assert_int_equal(tern_fsm_stats(f)->sessions_online, 1);
    /* b's will waits for its delay. */
    assert_int_equal(tern_fsm_next_deadline(f), 5000 + 30000);

    /* A late command of a's old connection is stale. */
    struct tern_cmd c = {.type = TERN_CMD_SESSION_CLOSE};
    c.u.close.client_id = B("a");
    c.u.close.epoch = old_a;
    c.u.close.expiry_s = 0;
    assert_int_equal(run(f, &c, 6000).status, TERN_ESTALE);
    assert_non_null(sess(f, "a"));

    /* Again: nothing is online there any more. */
    r.fenced = r.published = 0;
    res = node_down(f, 2, 7000);
    assert_int_equal(res.matched, 0);
    assert_int_equal(r.fenced + r.published, 0);
    struct tern_cmd t = {.type = TERN_CMD_TICK};
    run(f, &t, 5000 + 30000);
    assert_int_equal(r.published, 1);
    assert_string_equal(r.will_topics[0], "will/b");
    tern_fsm_free(f);
}

/* --- routes --- */

static struct tern_fsm_result route(struct tern_fsm *f, uint8_t type, const char *filter,
                                    uint32_t node)
{
    struct tern_cmd c = {.type = type};
    c.u.route.filter = B(filter);
    c.u.route.node = node;
    return run(f, &c, 1000);
}

struct nodes {
    uint32_t v[16];
    int n;
    int stop_at;
};

static int collect(void *ctx, uint32_t node)
{
    struct nodes *x = ctx;
    x->v[x->n++] = node;
    return x->n == x->stop_at ? 42 : 0;
}

static struct nodes match(struct tern_fsm *f, const char *topic)
{
    struct nodes x = {0};
    assert_int_equal(tern_fsm_route_match(f, topic, strlen(topic), collect, &x), 0);
    return x;
}

static void test_routes(void **state)
{
    (void)state;
    struct rec r = {0};
    struct tern_fsm *f = fsm(&r);
    assert_int_equal(route(f, TERN_CMD_ROUTE_ADD, "a/#", 7).status, TERN_OK);
    assert_int_equal(route(f, TERN_CMD_ROUTE_ADD, "a/#", 7).status, TERN_OK); /* idem */
    assert_int_equal(route(f, TERN_CMD_ROUTE_ADD, "a/+", 3).status, TERN_OK);
    assert_int_equal(route(f, TERN_CMD_ROUTE_ADD, "$share/g/a/b", 5).status, TERN_OK);
    assert_int_equal(route(f, TERN_CMD_ROUTE_ADD, "a/b", 5).status, TERN_OK);
    assert_int_equal(route(f, TERN_CMD_ROUTE_ADD, "#", 9).status, TERN_OK);
    assert_int_equal(route(f, TERN_CMD_ROUTE_ADD, "a/#/b", 1).status, TERN_EINVAL);
    assert_int_equal(route(f, TERN_CMD_ROUTE_ADD, "", 1).status, TERN_EINVAL);
    assert_int_equal(tern_fsm_route_count(f), 5);

    struct nodes x = match(f, "a/b"); /* each node once, ascending */
    assert_int_equal(x.n, 4);
    assert_int_equal(x.v[0], 3);
    assert_int_equal(x.v[1], 5);
    assert_int_equal(x.v[2], 7);
    assert_int_equal(x.v[3], 9);
    x = match(f, "$SYS/x"); /* wildcards do not match $ topics */
    assert_int_equal(x.n, 0);
    x = match(f, "b");
    assert_int_equal(x.n, 1);
    assert_int_equal(x.v[0], 9);
    struct nodes stop = {.stop_at = 2};
    assert_int_equal(tern_fsm_route_match(f, "a/b", 3, collect, &stop), 42);
    assert_int_equal(stop.n, 2);

    /* Deleting one of node 5's two routes keeps the node matched. */
    assert_int_equal(route(f, TERN_CMD_ROUTE_DEL, "a/b", 5).status, TERN_OK);
    assert_int_equal(route(f, TERN_CMD_ROUTE_DEL, "a/b", 5).status, TERN_OK); /* idem */
    assert_int_equal(route(f, TERN_CMD_ROUTE_DEL, "a/b", 6).status, TERN_OK);
    x = match(f, "a/b");
    assert_int_equal(x.n, 4);
    assert_int_equal(tern_fsm_route_count(f), 4);

    /* NODE_DOWN drops every route of the node. */
    route(f, TERN_CMD_ROUTE_ADD, "z", 7);
    assert_int_equal(node_down(f, 7, 2000).status, TERN_OK);
    assert_int_equal(tern_fsm_route_count(f), 3);
    x = match(f, "a/c");
    assert_int_equal(x.n, 2);
    assert_int_equal(x.v[0], 3);
    assert_int_equal(x.v[1], 9);
    assert_int_equal(match(f, "z").n, 1);
    tern_fsm_free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_order_in_sequence),
        cmocka_unit_test(test_order_gap_refused_until_filled),
        cmocka_unit_test(test_order_start_jumps),
        cmocka_unit_test(test_order_origin_bound),
        cmocka_unit_test(test_node_down),
        cmocka_unit_test(test_routes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
