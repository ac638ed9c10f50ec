/* Unit tests of the FSM's per-session memory layout (storage/fsm_internal.h):
 * the client id inline in the session, the intrusive sessions table, and the
 * separately allocated session state that a session without subscriptions,
 * queue, in-flight window, held inbound ids or will does not have.
 *
 * Behaviour is covered by test_fsm.c; these tests look inside to check that a
 * state is allocated only when needed and freed again once it holds nothing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../storage/fsm_internal.h"
#include "tern/cmd.h"
#include "tern/error.h"
#include "tern/fsm.h"

static uint64_t now_ms = 1000;

static struct tern_bytes B(const char *s) {
    return (struct tern_bytes){(const uint8_t *)s, (uint32_t)strlen(s)};
}

static struct tern_fsm_result
apply(struct tern_fsm *f, struct tern_cmd *c)
{
    struct tern_fsm_result r;
    c->now_ms = ++now_ms;
    tern_fsm_apply(f, c, &r);
    return r;
}

static uint64_t open_id(struct tern_fsm *f, struct tern_bytes id, bool will,
                        uint32_t will_delay_s)
{
    struct tern_cmd c = {.type = TERN_CMD_SESSION_OPEN};
    c.u.open.client_id = id;
    c.u.open.node = 1;
    c.u.open.proto = TERN_MQTT_5;
    c.u.open.expiry_s = 100;
    c.u.open.has_will = will;
    c.u.open.will_delay_s = will_delay_s;
    c.u.open.will.topic = B("will/t");
    c.u.open.will.payload = B("bye");
    struct tern_fsm_result r = apply(f, &c);
    assert_int_equal(r.status, TERN_OK);
    return r.epoch;
}

static void sub_cmd(struct tern_fsm *f, const char *id, uint64_t epoch, uint8_t type,
                    const char *filter, uint8_t qos)
{
    uint8_t list[256];
    struct tern_cmd_sub e = {.filter = B(filter), .options = qos};
    size_t n = tern_cmd_put_sub(list, sizeof(list), &e);
    struct tern_cmd c = {.type = type};
    c.u.sub.client_id = B(id);
    c.u.sub.epoch = epoch;
    c.u.sub.list = (struct tern_bytes){list, (uint32_t)n};
    c.u.sub.count = 1;
    assert_int_equal(apply(f, &c).status, TERN_OK);
}

static void publish(struct tern_fsm *f, const char *from, uint64_t epoch,
                    const char *topic, uint8_t qos, uint16_t inbound_id)
{
    struct tern_cmd c = {.type = TERN_CMD_PUBLISH};
    c.u.publish.client_id = B(from);
    c.u.publish.epoch = epoch;
    c.u.publish.inbound_packet_id = inbound_id;
    c.u.publish.msg.topic = B(topic);
    c.u.publish.msg.payload = B("x");
    c.u.publish.msg.qos = qos;
    assert_int_equal(apply(f, &c).status, TERN_OK);
}

static bool bare(const struct tern_fsm *f, const char *id)
{
    const struct tern_fsm_session *s = tern_fsm_session_get(f, id, strlen(id));
    assert_non_null(s);
    return s->st == &fsm_session_state_empty;
}

/* Snapshot, restore into a new FSM, snapshot again: the bytes must agree. */
static void check_round_trip(const struct tern_fsm *f)
{
    uint8_t *a, *b;
    size_t alen, blen;
    assert_int_equal(tern_fsm_snapshot(f, &a, &alen), TERN_OK);
    struct tern_fsm *g = tern_fsm_new(1, NULL, NULL);
    assert_non_null(g);
    char err[TERN_ERRMSG_SIZE];
    assert_int_equal(tern_fsm_restore(g, a, alen, err), TERN_OK);
    assert_int_equal(tern_fsm_snapshot(g, &b, &blen), TERN_OK);
    assert_int_equal(alen, blen);
    assert_memory_equal(a, b, alen);
    free(a);
    free(b);
    tern_fsm_free(g);
}

static void test_idle_session_is_bare(void **state)
{
    (void)state;
    struct tern_fsm *f = tern_fsm_new(1, NULL, NULL);
    open_id(f, B("idle-client-1"), false, 0);
    const struct tern_fsm_session *s = tern_fsm_session_get(f, "idle-client-1", 13);
    assert_ptr_equal(s->st, &fsm_session_state_empty);
    struct tern_bytes id = tern_fsm_session_client_id(s);
    assert_ptr_equal(id.ptr, (const uint8_t *)s->client_id); /* inline, no copy */
    assert_int_equal(id.len, 13);
    assert_int_equal(s->client_id[13], 0);
    assert_int_equal(s->next_packet_id, 1);
    check_round_trip(f);
    tern_fsm_free(f);
}

static void test_state_follows_subscriptions(void **state)
{
    (void)state;
    struct tern_fsm *f = tern_fsm_new(1, NULL, NULL);
    uint64_t ep = open_id(f, B("c"), false, 0);
    sub_cmd(f, "c", ep, TERN_CMD_SUBSCRIBE, "a/+", 1);
    /* Subscriptions hang off the session itself: a device that subscribed and
     * went quiet has no state. */
    assert_true(bare(f, "c"));
    const struct tern_fsm_session *s = tern_fsm_session_get(f, "c", 1);
    assert_non_null(s->subs);
    assert_int_equal(tern_fsm_session_sub_count(s), 1);
    check_round_trip(f);
    /* A QoS 0 message sent on at once leaves none behind either (the publish's
     * one-copy mark needed one for the moment). */
    publish(f, "nobody", 0, "a/x", 0, 0);
    assert_true(bare(f, "c"));
    sub_cmd(f, "c", ep, TERN_CMD_UNSUBSCRIBE, "a/+", 0);
    assert_true(bare(f, "c"));
    assert_null(s->subs);
    /* An invalid filter subscribes nothing and leaves nothing behind. */
    sub_cmd(f, "c", ep, TERN_CMD_SUBSCRIBE, "a/#/b", 1);
    assert_true(bare(f, "c"));
    tern_fsm_free(f);
}

static void test_state_freed_after_ack_keeps_packet_ids(void **state)
{
    (void)state;
    struct tern_fsm *f = tern_fsm_new(1, NULL, NULL);
    uint64_t ep = open_id(f, B("c"), false, 0);
    sub_cmd(f, "c", ep, TERN_CMD_SUBSCRIBE, "t", 1);
    publish(f, "nobody", 0, "t", 1, 0);
    const struct tern_fsm_session *s = tern_fsm_session_get(f, "c", 1);
    assert_int_equal(tern_fsm_session_inflight(s), 1);
    assert_int_equal(fsm_flight_at(s->st, 0)->packet_id, 1);
    sub_cmd(f, "c", ep, TERN_CMD_UNSUBSCRIBE, "t", 0);
    assert_false(bare(f, "c")); /* still in flight */
    check_round_trip(f);
    struct tern_cmd c = {.type = TERN_CMD_ACK};
    c.u.ack.client_id = B("c");
    c.u.ack.epoch = ep;
    c.u.ack.packet_id = 1;
    c.u.ack.kind = TERN_PUBACK;
    assert_int_equal(apply(f, &c).status, TERN_OK);
    assert_true(bare(f, "c"));
    /* The packet id sequence went on, state or not. */
    assert_int_equal(s->next_packet_id, 2);
    sub_cmd(f, "c", ep, TERN_CMD_SUBSCRIBE, "t", 1);
    publish(f, "nobody", 0, "t", 1, 0);
    assert_int_equal(fsm_flight_at(s->st, 0)->packet_id, 2);
    check_round_trip(f);
    tern_fsm_free(f);
}

static void ack(struct tern_fsm *f, const char *id, uint64_t epoch, uint16_t packet_id)
{
    struct tern_cmd c = {.type = TERN_CMD_ACK};
    c.u.ack.client_id = B(id);
    c.u.ack.epoch = epoch;
    c.u.ack.packet_id = packet_id;
    c.u.ack.kind = TERN_PUBACK;
    assert_int_equal(apply(f, &c).status, TERN_OK);
}

static struct tern_fsm *fsm_with_window(uint16_t inflight_max)
{
    struct tern_fsm_limits l;
    tern_fsm_limits_default(&l);
    l.inflight_max = inflight_max;
    l.queue_max = 100000;
    struct tern_fsm *f = tern_fsm_new(1, &l, NULL);
    assert_non_null(f);
    return f;
}

/* Client "c" subscribed to "t" at QoS 1, then n messages published to it. */
static const struct tern_fsm_session *subscriber(struct tern_fsm *f, uint64_t *ep, int n)
{
    *ep = open_id(f, B("c"), false, 0);
    sub_cmd(f, "c", *ep, TERN_CMD_SUBSCRIBE, "t", 1);
    for (int i = 0; i < n; i++)
        publish(f, "nobody", 0, "t", 1, 0);
    return tern_fsm_session_get(f, "c", 1);
}

/* Ids of the window in send order are first, first+1, ... (n of them). */
static void assert_window(const struct tern_fsm_session *s, uint16_t first, uint32_t n)
{
    assert_int_equal(tern_fsm_session_inflight(s), n);
    for (uint32_t i = 0; i < n; i++)
        assert_int_equal(fsm_flight_at(s->st, i)->packet_id, first + i);
}

/* The window is a ring: acks of the oldest advance its head, new messages wrap
 * around the end of the array, an ack out of order closes the gap, and the
 * snapshot is in send order whatever the ring's layout. */
static void test_flight_ring_wraps(void **state)
{
    (void)state;
    struct tern_fsm *f = fsm_with_window(1000);
    uint64_t ep;
    const struct tern_fsm_session *s = subscriber(f, &ep, 1000);
    assert_int_equal(s->st->flight_cap, 1024);
    assert_non_null(s->st->flight_ids); /* past FSM_FLIGHT_SCAN */
    assert_window(s, 1, 1000);
    for (uint16_t id = 1; id <= 600; id++)
        ack(f, "c", ep, id);
    assert_int_equal(s->st->flight_head, 600);
    for (int i = 0; i < 600; i++)
        publish(f, "nobody", 0, "t", 1, 0);
    assert_int_equal(s->st->flight_cap, 1024); /* wrapped, not grown */
    assert_window(s, 601, 1000);
    check_round_trip(f);
    publish(f, "nobody", 0, "t", 1, 0); /* the window is full: queued */
    assert_window(s, 601, 1000);
    ack(f, "c", ep, 1030); /* out of order, in the part past the array's end */
    assert_int_equal(tern_fsm_session_inflight(s), 1000); /* the queue refilled it */
    for (uint32_t i = 0; i < 429; i++)
        assert_int_equal(fsm_flight_at(s->st, i)->packet_id, 601 + i);
    for (uint32_t i = 429; i < 999; i++)
        assert_int_equal(fsm_flight_at(s->st, i)->packet_id, 602 + i);
    assert_int_equal(fsm_flight_at(s->st, 999)->packet_id, 1601); /* the refill */
    assert_int_equal(fsm_flight_find(s, 1030), -1);
    assert_int_equal(fsm_flight_find(s, 1031), 429);
    check_round_trip(f);
    tern_fsm_free(f);
}

/* An ack out of order closes the gap from the nearer end; send order holds. */
static void test_flight_remove_from_either_end(void **state)
{
    (void)state;
    struct tern_fsm *f = fsm_with_window(1000);
    uint64_t ep;
    const struct tern_fsm_session *s = subscriber(f, &ep, 10);
    uint16_t head = s->st->flight_head;
    ack(f, "c", ep, 3); /* nearer the oldest: the head moves */
    assert_int_equal(s->st->flight_head, head + 1);
    ack(f, "c", ep, 9); /* nearer the newest: the head stays */
    assert_int_equal(s->st->flight_head, head + 1);
    const uint16_t want[] = {1, 2, 4, 5, 6, 7, 8, 10};
    assert_int_equal(tern_fsm_session_inflight(s), 8);
    for (uint32_t i = 0; i < 8; i++)
        assert_int_equal(fsm_flight_at(s->st, i)->packet_id, want[i]);
    check_round_trip(f);
    tern_fsm_free(f);
}

/* A message that is never acknowledged keeps its id while the others cycle
 * through all 65535: the id is skipped, not reused, with the bitmap in use. */
static void test_flight_ids_skip_a_stuck_one(void **state)
{
    (void)state;
    struct tern_fsm *f = fsm_with_window(1000);
    uint64_t ep;
    const struct tern_fsm_session *s = subscriber(f, &ep, 1); /* id 1: never acked */
    uint32_t sent = 1;
    while (sent < 65535 + 10) {
        for (int i = 0; i < 999; i++)
            publish(f, "nobody", 0, "t", 1, 0);
        sent += 999;
        assert_non_null(s->st->flight_ids);
        /* Newest first: each ack is of the ring's last entry. */
        for (uint32_t i = 999; i >= 1; i--)
            ack(f, "c", ep, fsm_flight_at(s->st, i)->packet_id);
        assert_int_equal(tern_fsm_session_inflight(s), 1);
        assert_int_equal(fsm_flight_at(s->st, 0)->packet_id, 1);
    }
    /* Ids went 2..65535, then 2 again: 1 was never handed out twice. */
    publish(f, "nobody", 0, "t", 1, 0);
    uint16_t id = fsm_flight_at(s->st, 1)->packet_id;
    assert_true(id >= 2);
    assert_int_equal(fsm_flight_find(s, 1), 0);
    check_round_trip(f);
    tern_fsm_free(f);
}

static void test_inbound_ids_then_pubrel(void **state)
{
    (void)state;
    struct tern_fsm *f = tern_fsm_new(1, NULL, NULL);
    uint64_t ep = open_id(f, B("p"), false, 0);
    publish(f, "p", ep, "t", 2, 7);
    assert_false(bare(f, "p"));
    const struct tern_fsm_session *s = tern_fsm_session_get(f, "p", 1);
    assert_true(tern_fsm_session_inbound_held(s, 7));
    check_round_trip(f);
    struct tern_cmd c = {.type = TERN_CMD_PUBREL};
    c.u.pubrel.client_id = B("p");
    c.u.pubrel.epoch = ep;
    c.u.pubrel.packet_id = 7;
    assert_int_equal(apply(f, &c).status, TERN_OK);
    assert_false(tern_fsm_session_inbound_held(s, 7));
    assert_true(bare(f, "p"));
    tern_fsm_free(f);
}

/* The will delay outlives the will (it is snapshotted as it is), so a session
 * that had a delayed will keeps a state; one without a delay does not. */
static void test_will_state(void **state)
{
    (void)state;
    struct tern_fsm *f = tern_fsm_new(1, NULL, NULL);
    uint64_t e1 = open_id(f, B("w0"), true, 0);
    uint64_t e2 = open_id(f, B("w5"), true, 5);
    assert_false(bare(f, "w0"));
    assert_false(bare(f, "w5"));
    struct tern_cmd c = {.type = TERN_CMD_SESSION_CLOSE};
    c.u.close.client_id = B("w0");
    c.u.close.epoch = e1;
    c.u.close.expiry_s = 100;
    c.u.close.publish_will = false;
    assert_int_equal(apply(f, &c).status, TERN_OK);
    /* Offline with an expiry: it waits in the deadline heap (its slot is in the
     * session), with no state; back online it has no deadline. */
    assert_true(bare(f, "w0"));
    assert_true(tern_fsm_timers_valid(f));
    open_id(f, B("w0"), false, 0);
    assert_true(bare(f, "w0"));
    assert_true(tern_fsm_timers_valid(f));
    c.u.close.client_id = B("w5");
    c.u.close.epoch = e2;
    assert_int_equal(apply(f, &c).status, TERN_OK);
    const struct tern_fsm_session *s = tern_fsm_session_get(f, "w5", 2);
    assert_null(s->st->will);
    assert_int_equal(s->st->will_delay_s, 5);
    check_round_trip(f);
    /* A pending delayed will goes out on TICK; the delay stays. */
    open_id(f, B("w5"), true, 5);
    c.u.close.epoch = tern_fsm_session_epoch(s);
    c.u.close.publish_will = true;
    assert_int_equal(apply(f, &c).status, TERN_OK);
    assert_non_null(s->st->will);
    assert_true(s->st->will_at_ms > 0);
    check_round_trip(f);
    struct tern_cmd t = {.type = TERN_CMD_TICK};
    now_ms += 10000;
    apply(f, &t);
    assert_null(s->st->will);
    assert_int_equal(tern_fsm_stats(f)->wills_published, 1);
    tern_fsm_free(f);
}

static void test_client_id_bounds(void **state)
{
    (void)state;
    struct tern_fsm *f = tern_fsm_new(1, NULL, NULL);
    char *id = malloc(FSM_CLIENT_ID_MAX + 1);
    assert_non_null(id);
    memset(id, 'k', FSM_CLIENT_ID_MAX + 1);
    open_id(f, (struct tern_bytes){(const uint8_t *)id, FSM_CLIENT_ID_MAX}, false, 0);
    const struct tern_fsm_session *s = tern_fsm_session_get(f, id, FSM_CLIENT_ID_MAX);
    assert_non_null(s);
    assert_int_equal(tern_fsm_session_client_id(s).len, FSM_CLIENT_ID_MAX);
    assert_null(tern_fsm_session_get(f, id, FSM_CLIENT_ID_MAX + 1));
    check_round_trip(f);
    /* Longer than a str16 can carry: not a valid session. */
    struct tern_cmd c = {.type = TERN_CMD_SESSION_OPEN};
    c.u.open.client_id = (struct tern_bytes){(const uint8_t *)id, FSM_CLIENT_ID_MAX + 1};
    c.u.open.proto = TERN_MQTT_5;
    assert_int_equal(apply(f, &c).status, TERN_EINVAL);
    assert_int_equal(tern_fsm_stats(f)->sessions, 1);
    free(id);
    tern_fsm_free(f);
}

struct walk_ctx {
    uint8_t *seen;
    size_t n;
};

static int walk_mark(void *ctx, struct tern_fsm_session *s)
{
    struct walk_ctx *w = ctx;
    unsigned k;
    assert_int_equal(sscanf(s->client_id, "client-%u", &k), 1);
    assert_int_equal(w->seen[k], 0);
    w->seen[k] = 1;
    w->n++;
    return 0;
}

/* Enough sessions for the table to grow several times, with deletions. */
static void test_many_sessions(void **state)
{
    (void)state;
    enum { N = 5000 };
    struct tern_fsm *f = tern_fsm_new(1, NULL, NULL);
    char id[32];
    for (unsigned i = 0; i < N; i++) {
        snprintf(id, sizeof(id), "client-%u", i);
        open_id(f, B(id), false, 0);
    }
    for (unsigned i = 0; i < N; i += 3) {
        snprintf(id, sizeof(id), "client-%u", i);
        struct tern_cmd c = {.type = TERN_CMD_SESSION_DELETE};
        c.u.del.client_id = B(id);
        assert_int_equal(apply(f, &c).status, TERN_OK);
    }
    for (unsigned i = 0; i < N; i++) {
        snprintf(id, sizeof(id), "client-%u", i);
        const struct tern_fsm_session *s = tern_fsm_session_get(f, id, strlen(id));
        if (i % 3 == 0) {
            assert_null(s);
        } else {
            assert_non_null(s);
            assert_string_equal(s->client_id, id);
        }
    }
    uint8_t *seen = calloc(N, 1);
    struct walk_ctx w = {seen, 0};
    assert_int_equal(tern_fsm_sessions_walk(f, walk_mark, &w), 0);
    assert_int_equal(w.n, N - (N + 2) / 3);
    assert_int_equal(tern_fsm_stats(f)->sessions, w.n);
    free(seen);
    check_round_trip(f);
    tern_fsm_free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_idle_session_is_bare),
        cmocka_unit_test(test_state_follows_subscriptions),
        cmocka_unit_test(test_state_freed_after_ack_keeps_packet_ids),
        cmocka_unit_test(test_flight_ring_wraps),
        cmocka_unit_test(test_flight_remove_from_either_end),
        cmocka_unit_test(test_flight_ids_skip_a_stuck_one),
        cmocka_unit_test(test_inbound_ids_then_pubrel),
        cmocka_unit_test(test_will_state),
        cmocka_unit_test(test_client_id_bounds),
        cmocka_unit_test(test_many_sessions),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
