/* Allocation failure while applying (tern/fsm.h, tern_fsm_fail_alloc_after()).
 *
 * Two replicas apply the same command; one runs out of memory in the middle of
 * it. If the FSM then reported success, that replica would go on in another
 * state than the other (a message queued for fewer sessions, a session without
 * its will, a TICK that expired only some sessions) and nobody would know. The
 * rule checked here, for every allocation of every command kind: either the
 * command reports TERN_ENOMEM (the replicated node then stops), or the result
 * and the state are exactly those of the run that had all the memory. */
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

#define T0 1700000000000ull
#define PROBE_MAX 400 /* far more allocations than any probe makes */

static struct tern_bytes B(const char *s) {
    return (struct tern_bytes){(const uint8_t *)s, (uint32_t)strlen(s)};
}

static void
must(struct tern_fsm *f, struct tern_cmd *c)
{
    struct tern_fsm_result r;
    tern_fsm_apply(f, c, &r);
    assert_int_equal(r.status, TERN_OK);
}

static void open_s(struct tern_fsm *f, const char *id, uint32_t node, bool will,
                   uint32_t expiry_s)
{
    struct tern_cmd c = {.type = TERN_CMD_SESSION_OPEN, .now_ms = T0};
    c.u.open.client_id = B(id);
    c.u.open.node = node;
    c.u.open.proto = TERN_MQTT_5;
    c.u.open.expiry_s = expiry_s;
    c.u.open.has_will = will;
    c.u.open.will_delay_s = 5;
    c.u.open.will.topic = B("will/t");
    c.u.open.will.payload = B("bye");
    c.u.open.will.qos = 1;
    must(f, &c);
}

static uint64_t epoch(struct tern_fsm *f, const char *id)
{
    return tern_fsm_session_epoch(tern_fsm_session_get(f, id, strlen(id)));
}

static void sub_s(struct tern_fsm *f, const char *id, const char *filter, uint8_t qos)
{
    uint8_t list[128];
    struct tern_cmd_sub e = {.filter = B(filter), .options = qos, .sub_id = 3};
    size_t n = tern_cmd_put_sub(list, sizeof(list), &e);
    struct tern_cmd c = {.type = TERN_CMD_SUBSCRIBE, .now_ms = T0};
    c.u.sub.client_id = B(id);
    c.u.sub.epoch = epoch(f, id);
    c.u.sub.packet_id = 1;
    c.u.sub.list = (struct tern_bytes){list, (uint32_t)n};
    c.u.sub.count = 1;
    must(f, &c);
}

static void pub(struct tern_fsm *f, const char *topic, uint8_t qos, bool retain,
                uint32_t expiry_s)
{
    struct tern_cmd c = {.type = TERN_CMD_PUBLISH, .now_ms = T0};
    c.u.publish.msg.topic = B(topic);
    c.u.publish.msg.payload = B("payload");
    c.u.publish.msg.qos = qos;
    c.u.publish.msg.retain = retain;
    if (expiry_s) {
        c.u.publish.msg.flags = TERN_MSG_HAS_EXPIRY;
        c.u.publish.msg.expiry_s = expiry_s;
    }
    must(f, &c);
}

static void close_s(struct tern_fsm *f, const char *id)
{
    struct tern_cmd c = {.type = TERN_CMD_SESSION_CLOSE, .now_ms = T0};
    c.u.close.client_id = B(id);
    c.u.close.epoch = epoch(f, id);
    c.u.close.expiry_s = 10;
    c.u.close.publish_will = true;
    must(f, &c);
}

/* Online and offline persistent sessions on two nodes, plain and shared
 * subscriptions, queued and in-flight messages, wills pending, retained
 * messages (some expiring), routes. */
static struct tern_fsm *setup(void)
{
    struct tern_fsm *f = tern_fsm_new(1, NULL, NULL);
    assert_non_null(f);
    static const char *const ids[] = {"a", "b", "c", "d", "e", "f"};
    for (int i = 0; i < 6; i++) {
        open_s(f, ids[i], 1 + (uint32_t)(i % 2), i % 3 == 0, 3600);
        sub_s(f, ids[i], i % 2 ? "t/#" : "$share/g/t/+", (uint8_t)(1 + i % 2));
    }
    for (int i = 0; i < 4; i++)
        pub(f, i % 2 ? "t/x" : "t/y", 1, i == 1, i == 3 ? 1 : 0);
    pub(f, "r/1", 0, true, 1);
    pub(f, "r/2", 1, true, 0);
    close_s(f, "e");
    close_s(f, "f");
    struct tern_cmd rt = {.type = TERN_CMD_ROUTE_ADD, .now_ms = T0};
    rt.u.route.node = 2;
    rt.u.route.filter = B("t/#");
    must(f, &rt);
    return f;
}

/* The commands probed, each applied to a fresh setup(). */
static void probe_cmd(int kind, struct tern_fsm *f, struct tern_cmd *c, uint8_t *list,
                      size_t cap)
{
    *c = (struct tern_cmd){.now_ms = T0 + 1000};
    switch (kind) {
    case 0: /* fan-out to queues and windows, retained replaced */
        c->type = TERN_CMD_PUBLISH;
        c->u.publish.msg.topic = B("t/x");
        c->u.publish.msg.payload = B("new");
        c->u.publish.msg.qos = 2;
        c->u.publish.msg.retain = true;
        c->u.publish.client_id = B("a");
        c->u.publish.epoch = epoch(f, "a");
        c->u.publish.inbound_packet_id = 9;
        break;
    case 1: { /* new subscriptions that get retained messages */
        struct tern_cmd_sub e1 = {.filter = B("r/#"), .options = 1};
        struct tern_cmd_sub e2 = {.filter = B("$share/h/t/x"), .options = 2};
        size_t n = tern_cmd_put_sub(list, cap, &e1);
        n += tern_cmd_put_sub(list + n, cap - n, &e2);
        c->type = TERN_CMD_SUBSCRIBE;
        c->u.sub.client_id = B("b");
        c->u.sub.epoch = epoch(f, "b");
        c->u.sub.packet_id = 2;
        c->u.sub.list = (struct tern_bytes){list, (uint32_t)n};
        c->u.sub.count = 2;
        break;
    }
    case 2: /* a takeover with a will; resumes the queue */
        c->type = TERN_CMD_SESSION_OPEN;
        c->u.open.client_id = B("e");
        c->u.open.node = 2;
        c->u.open.proto = TERN_MQTT_5;
        c->u.open.expiry_s = 60;
        c->u.open.has_will = true;
        c->u.open.will.topic = B("will/e");
        c->u.open.will.payload = B("gone");
        break;
    case 3: /* wills published, retained messages expired */
        c->type = TERN_CMD_TICK;
        c->now_ms = T0 + 20000;
        break;
    case 4: /* a node's sessions go offline, wills go out */
        c->type = TERN_CMD_NODE_DOWN;
        c->u.node_down.node = 1;
        break;
    case 5:
        c->type = TERN_CMD_ROUTE_ADD;
        c->u.route.node = 3;
        c->u.route.filter = B("$share/g/u/+");
        break;
    default: /* a brand-new session */
        c->type = TERN_CMD_SESSION_OPEN;
        c->u.open.client_id = B("new-client");
        c->u.open.node = 1;
        c->u.open.proto = TERN_MQTT_311;
        c->u.open.expiry_s = 10;
        break;
    }
}

#define PROBES 7

static void snap(const struct tern_fsm *f, uint8_t **b, size_t *n)
{
    assert_int_equal(tern_fsm_snapshot(f, b, n), TERN_OK);
}

static void test_alloc_failure_reported_or_harmless(void **state)
{
    (void)state;
    for (int kind = 0; kind < PROBES; kind++) {
        uint8_t list[256];
        struct tern_cmd c;
        struct tern_fsm *ref = setup();
        probe_cmd(kind, ref, &c, list, sizeof(list));
        struct tern_fsm_result want;
        tern_fsm_apply(ref, &c, &want);
        assert_int_equal(want.status, TERN_OK);
        uint8_t *wb;
        size_t wn;
        snap(ref, &wb, &wn);
        int failed = 0, k;
        for (k = 0; k < PROBE_MAX; k++) {
            struct tern_fsm *f = setup();
            probe_cmd(kind, f, &c, list, sizeof(list));
            tern_fsm_fail_alloc_after(f, k);
            struct tern_fsm_result r;
            tern_fsm_apply(f, &c, &r);
            bool fired = f->fail_alloc_after < 0;
            tern_fsm_fail_alloc_after(f, -1);
            if (r.status == TERN_ENOMEM) {
                assert_true(fired);
                failed++;
            } else {
                uint8_t *b;
                size_t n;
                snap(f, &b, &n);
                if (r.status != want.status || n != wn || memcmp(b, wb, n) != 0)
                    fail_msg("command kind %d: allocation %d failed, the command "
                             "reported %d and left %s state",
                             kind, k, r.status,
                             n == wn && memcmp(b, wb, n) == 0 ? "the same" : "another");
                free(b);
            }
            tern_fsm_free(f);
            if (!fired)
                break; /* the command makes fewer than k + 1 allocations */
        }
        assert_true(k < PROBE_MAX);
        print_message("command kind %d: %d of %d allocations failed and reported\n", kind,
                      failed, k);
        assert_true(failed > 0); /* the probe allocates: it was tested */
        free(wb);
        tern_fsm_free(ref);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_alloc_failure_reported_or_harmless),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
