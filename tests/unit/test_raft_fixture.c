/* The session FSM under real Raft, deterministically: libraft's in-memory
 * fixture (raft/fixture.h) runs 3 or 5 servers in one thread on simulated time,
 * each server applying entries to its own tern_fsm through the very adapter
 * ternd uses (cluster/raft_fsm.c: entry format, apply, snapshot, restore).
 *
 * The property checked after every scenario: every replica's FSM serializes to
 * the same bytes (tern_fsm_snapshot), whatever happened on the way - leader
 * killed mid-stream, a proposal retried under a new leader, a follower or the
 * leader cut off, a follower so far behind that it must install a snapshot. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <raft.h>
#include <raft/fixture.h>

#include "../../cluster/raft_fsm.h"
#include "tern/cmd.h"
#include "tern/error.h"
#include "tern/fsm.h"
#include "tern/log.h"

#define MAX_SERVERS 5
#define WAIT_MS 60000 /* simulated milliseconds */
#define ORIGIN 7      /* node id in the proposal ids this test makes */

struct server {
    struct tern_fsm *fsm;
    struct tern_raft_fsm rf;
    uint64_t applied;  /* commands applied (duplicates included) */
    uint64_t watch_id; /* proposal id whose applications are recorded */
    int watch_seen, watch_dups;
    uint64_t restored; /* the FSM's restored effects */
};

struct cl {
    struct raft_fixture f;
    unsigned n;
    struct server s[MAX_SERVERS];
    uint64_t seed, now_ms, seq;
    unsigned excluded;   /* bit i: server i is not waited for */
    bool lz4;            /* entries built as a leader with raft_entry_compression */
    unsigned batch;      /* commands per entry: 1..batch (0: 1..4) */
    unsigned compressed; /* entries built compressed */
};

static uint64_t rnd(struct cl *c)
{
    c->seed ^= c->seed << 13;
    c->seed ^= c->seed >> 7;
    c->seed ^= c->seed << 17;
    return c->seed;
}

static struct tern_bytes B(const char *s) {
    return (struct tern_bytes){(const uint8_t *)s, (uint32_t)strlen(s)};
}

static void
on_applied(void *ctx, const struct tern_cmd *cmd, const struct tern_fsm_result *res)
{
    struct server *s = ctx;
    s->applied++;
    if (s->watch_id && cmd->proposal_id == s->watch_id) {
        s->watch_seen++;
        s->watch_dups += res->duplicate;
    }
}

/* --- cluster ----------------------------------------------------------------- */

static void on_restored(void *ctx, struct tern_fsm *f)
{
    struct server *s = ctx;
    assert_ptr_equal(f, s->fsm);
    s->restored++;
}

/* lim[i]: the limits server i's FSM is built with (NULL: all defaults). */
static struct cl *cl_new_lim(unsigned n, uint64_t seed, const struct tern_fsm_limits *lim)
{
    struct cl *c = calloc(1, sizeof(*c));
    assert_non_null(c);
    c->n = n;
    c->seed = seed;
    c->now_ms = 1700000000000ull;
    assert_int_equal(raft_fixture_initialize(&c->f), 0);
    for (unsigned i = 0; i < n; i++) {
        struct server *s = &c->s[i];
        struct tern_fsm_observer obs = {.ctx = s, .restored = on_restored};
        s->fsm = tern_fsm_new(i + 1, lim ? &lim[i] : NULL, &obs);
        assert_non_null(s->fsm);
        assert_int_equal(tern_raft_fsm_init(&s->rf, s->fsm, on_applied, s), TERN_OK);
        assert_int_equal(raft_fixture_grow(&c->f, &s->rf.raft), 0);
        raft_set_pre_vote(raft_fixture_get(&c->f, i), true); /* as ternd */
    }
    struct raft_configuration conf;
    assert_int_equal(raft_fixture_configuration(&c->f, n, &conf), 0);
    assert_int_equal(raft_fixture_bootstrap(&c->f, &conf), 0);
    raft_configuration_close(&conf);
    assert_int_equal(raft_fixture_start(&c->f), 0);
    assert_true(raft_fixture_step_until_has_leader(&c->f, WAIT_MS));
    return c;
}

static struct cl *cl_new(unsigned n, uint64_t seed)
{
    return cl_new_lim(n, seed, NULL);
}

static void cl_free(struct cl *c)
{
    raft_fixture_close(&c->f);
    for (unsigned i = 0; i < c->n; i++)
        tern_fsm_free(c->s[i].fsm);
    free(c);
}

static unsigned leader(struct cl *c)
{
    unsigned li = raft_fixture_leader_index(&c->f);
    assert_true(li < c->n);
    return li;
}

static struct raft *R(struct cl *c, unsigned i)
{
    return raft_fixture_get(&c->f, i);
}

/* Every alive, not excluded server has applied the leader's whole log. */
static bool caught_up(struct raft_fixture *f, void *arg)
{
    struct cl *c = arg;
    unsigned li = raft_fixture_leader_index(f);
    if (li >= f->n || raft_state(raft_fixture_get(f, li)) != RAFT_LEADER)
        return false;
    raft_index last = raft_last_index(raft_fixture_get(f, li));
    for (unsigned i = 0; i < f->n; i++)
        if (raft_fixture_alive(f, i) && !(c->excluded & (1u << i)) &&
            raft_last_applied(raft_fixture_get(f, i)) < last)
            return false;
    return true;
}

static void wait_caught_up(struct cl *c)
{
    assert_true(raft_fixture_step_until(&c->f, caught_up, c, WAIT_MS));
}

struct not_leader {
    unsigned old;
};

static bool has_other_leader(struct raft_fixture *f, void *arg)
{
    const struct not_leader *nl = arg;
    unsigned li = raft_fixture_leader_index(f);
    return li < f->n && li != nl->old;
}

static unsigned wait_new_leader(struct cl *c, unsigned old)
{
    struct not_leader nl = {old};
    assert_true(raft_fixture_step_until(&c->f, has_other_leader, &nl, WAIT_MS));
    return leader(c);
}

/* Every server's FSM serializes to the same bytes. */
static void assert_equal_fsms(struct cl *c)
{
    uint8_t *ref = NULL;
    size_t ref_len = 0;
    assert_int_equal(tern_fsm_snapshot(c->s[0].fsm, &ref, &ref_len), TERN_OK);
    for (unsigned i = 1; i < c->n; i++) {
        uint8_t *b = NULL;
        size_t len = 0;
        assert_int_equal(tern_fsm_snapshot(c->s[i].fsm, &b, &len), TERN_OK);
        assert_int_equal(len, ref_len);
        assert_memory_equal(b, ref, len);
        assert_int_equal(raft_last_applied(R(c, i)), raft_last_applied(R(c, 0)));
        free(b);
    }
    free(ref);
}

/* --- commands ------------------------------------------------------------------ */

static const char *const ids[] = {"s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7"};
static const char *const filters[] = {"a/#",          "a/+", "+/b", "#",
                                      "$share/g/a/#", "a/b", "c"};
static const char *const topics[] = {"a/b", "a/c", "c", "x/b", "a/b/c"};

/* A session's current epoch as the leader knows it (what a broker would
 * propose with), sometimes stale on purpose. */
static uint64_t epoch_of(struct cl *c, const char *id)
{
    struct tern_fsm_session *s =
        tern_fsm_session_get(c->s[leader(c)].fsm, id, strlen(id));
    uint64_t e = s ? tern_fsm_session_epoch(s) : 1;
    return rnd(c) % 16 == 0 ? e + 1 : e;
}

static void gen_open(struct cl *c, struct tern_cmd *cmd, const char *id)
{
    cmd->type = TERN_CMD_SESSION_OPEN;
    cmd->u.open.client_id = B(id);
    cmd->u.open.node = 1 + (uint32_t)(rnd(c) % 3);
    cmd->u.open.proto = rnd(c) % 2 ? TERN_MQTT_5 : TERN_MQTT_311;
    cmd->u.open.clean_start = rnd(c) % 8 == 0;
    cmd->u.open.expiry_s = rnd(c) % 4 ? 3600 : 0;
    cmd->u.open.receive_max = (uint16_t)(2 + rnd(c) % 8);
    if (rnd(c) % 3 == 0) {
        cmd->u.open.has_will = true;
        cmd->u.open.will_delay_s = (uint32_t)(rnd(c) % 2);
        cmd->u.open.will.topic = B(topics[rnd(c) % 5]);
        cmd->u.open.will.payload = B("will");
        cmd->u.open.will.qos = (uint8_t)(rnd(c) % 3);
    }
}

static void gen_sub(struct cl *c, struct tern_cmd *cmd, const char *id, uint8_t *list,
                    size_t cap)
{
    cmd->type = TERN_CMD_SUBSCRIBE;
    cmd->u.sub.client_id = B(id);
    cmd->u.sub.epoch = epoch_of(c, id);
    cmd->u.sub.packet_id = (uint16_t)(1 + rnd(c) % 100);
    uint32_t count = 1 + (uint32_t)(rnd(c) % 2);
    size_t n = 0;
    for (uint32_t i = 0; i < count; i++) {
        struct tern_cmd_sub e = {.filter = B(filters[rnd(c) % 7]),
                                 .options = (uint8_t)(rnd(c) % 3),
                                 .sub_id = (uint32_t)(rnd(c) % 3)};
        n += tern_cmd_put_sub(list + n, cap - n, &e);
    }
    assert_true(n <= cap);
    cmd->u.sub.list = (struct tern_bytes){list, (uint32_t)n};
    cmd->u.sub.count = count;
}

static void gen_publish(struct cl *c, struct tern_cmd *cmd, const char *id, char *payload,
                        size_t cap)
{
    cmd->type = TERN_CMD_PUBLISH;
    if (rnd(c) % 2) {
        cmd->u.publish.client_id = B(id);
        cmd->u.publish.epoch = epoch_of(c, id);
        cmd->u.publish.inbound_packet_id = (uint16_t)(rnd(c) % 4);
    }
    snprintf(payload, cap, "payload-%llu", (unsigned long long)c->seq);
    cmd->u.publish.msg.topic = B(topics[rnd(c) % 5]);
    cmd->u.publish.msg.payload = B(payload);
    cmd->u.publish.msg.qos = (uint8_t)(rnd(c) % 3);
    cmd->u.publish.msg.retain = rnd(c) % 5 == 0;
    if (rnd(c) % 4 == 0) {
        cmd->u.publish.msg.flags = TERN_MSG_HAS_EXPIRY;
        cmd->u.publish.msg.expiry_s = (uint32_t)(1 + rnd(c) % 60);
    }
}

/* One random command, encoded into out; returns its size. */
static size_t gen_cmd(struct cl *c, uint8_t *out, size_t cap)
{
    uint8_t list[128];
    char payload[32];
    struct tern_cmd cmd = {0};
    const char *id = ids[rnd(c) % 8];
    c->now_ms += 1 + rnd(c) % 400;
    cmd.now_ms = c->now_ms;
    cmd.proposal_id = ((uint64_t)ORIGIN << 40) | ++c->seq;
    uint32_t pick = (uint32_t)(rnd(c) % 100);
    if (pick < 12) {
        gen_open(c, &cmd, id);
    } else if (pick < 18) {
        cmd.type = TERN_CMD_SESSION_CLOSE;
        cmd.u.close.client_id = B(id);
        cmd.u.close.epoch = epoch_of(c, id);
        cmd.u.close.expiry_s = rnd(c) % 4 ? 3600 : 0;
        cmd.u.close.publish_will = rnd(c) % 2;
    } else if (pick < 32) {
        gen_sub(c, &cmd, id, list, sizeof(list));
    } else if (pick < 70) {
        gen_publish(c, &cmd, id, payload, sizeof(payload));
    } else if (pick < 86) {
        static const uint8_t kinds[] = {TERN_PUBACK, TERN_PUBREC, TERN_PUBCOMP};
        cmd.type = TERN_CMD_ACK;
        cmd.u.ack.client_id = B(id);
        cmd.u.ack.epoch = epoch_of(c, id);
        cmd.u.ack.packet_id = (uint16_t)(1 + rnd(c) % 10);
        cmd.u.ack.kind = kinds[rnd(c) % 3];
    } else if (pick < 91) {
        cmd.type = TERN_CMD_TICK;
    } else {
        cmd.type = pick < 96 ? TERN_CMD_ROUTE_ADD : TERN_CMD_ROUTE_DEL;
        cmd.u.route.node = 1 + (uint32_t)(rnd(c) % 3);
        cmd.u.route.filter = B(filters[rnd(c) % 7]);
    }
    size_t n = tern_cmd_encode(&cmd, out, cap);
    assert_true(n > 0 && n <= cap);
    return n;
}

/* --- proposing ------------------------------------------------------------------ */

static void apply_done(struct raft_apply *req, int status, void *result)
{
    (void)status; /* entries lost with a leader are simply lost here */
    (void)result;
    free(req);
}

/* Appends cmds as one entry on server i (its leader); returns raft_apply's
 * status. */
static int append_on(struct cl *c, unsigned i, const uint8_t *cmds, size_t len)
{
    struct raft_buffer rb;
    assert_int_equal(tern_raft_entry_build(cmds, len, c->lz4, &rb), TERN_OK);
    c->compressed += ((const uint8_t *)rb.base)[0] == TERN_RAFT_ENTRY_LZ4;
    struct raft_apply *req = malloc(sizeof(*req));
    assert_non_null(req);
    int rv = raft_apply(R(c, i), req, &rb, 1, apply_done);
    if (rv != 0) {
        raft_free(rb.base);
        free(req);
    }
    return rv;
}

/* An ORIGIN_START well past the origin's last sequence, into out. */
static size_t start_cmd(struct cl *c, uint8_t *out, size_t cap)
{
    c->seq += 1000;
    struct tern_cmd cmd = {.type = TERN_CMD_ORIGIN_START, .now_ms = c->now_ms};
    cmd.proposal_id = ((uint64_t)ORIGIN << 40) | c->seq;
    size_t n = tern_cmd_encode(&cmd, out, cap);
    assert_true(n > 0 && n <= cap);
    return n;
}

/* Proposes `entries` entries of 1..4 random commands each through the leader;
 * returns the number of commands. Each call begins a new sequence of ORIGIN's
 * proposals, as a restarted node does: these tests lose entries with their
 * leaders and re-send nothing, so without it every later proposal would be
 * refused as out of order. */
static unsigned propose(struct cl *c, unsigned entries)
{
    unsigned cmds = 0;
    unsigned li = leader(c);
    for (unsigned e = 0; e < entries; e++) {
        uint8_t buf[8192];
        size_t len = e == 0 ? start_cmd(c, buf, sizeof(buf)) : 0;
        cmds += e == 0;
        unsigned k = 1 + (unsigned)(rnd(c) % (c->batch ? c->batch : 4));
        for (unsigned j = 0; j < k; j++)
            len += gen_cmd(c, buf + len, sizeof(buf) - len);
        assert_int_equal(append_on(c, li, buf, len), 0);
        cmds += k;
    }
    return cmds;
}

/* --- tests ----------------------------------------------------------------------- */

/* The entry format: 8-byte header, length, zero padding to 8 bytes; entries of
 * an unknown version or a bad length are not applied. */
static void test_entry_format(void **state)
{
    (void)state;
    uint8_t cmds[64];
    struct tern_cmd t = {.type = TERN_CMD_TICK, .now_ms = 5};
    size_t n = tern_cmd_encode(&t, cmds, sizeof(cmds));
    assert_true(n > 0 && n % 8 != 0);
    struct raft_buffer rb;
    assert_int_equal(tern_raft_entry_build(cmds, n, false, &rb), TERN_OK);
    assert_int_equal(rb.len % 8, 0);
    assert_true(rb.len >= TERN_RAFT_ENTRY_HDR + n &&
                rb.len < TERN_RAFT_ENTRY_HDR + n + 8);
    const uint8_t *h = rb.base;
    assert_int_equal(h[0], TERN_RAFT_ENTRY_VERSION);
    assert_int_equal(h[1] | h[2] | h[3], 0);
    assert_int_equal(h[4] | h[5] << 8 | h[6] << 16 | h[7] << 24, n);
    assert_memory_equal(h + TERN_RAFT_ENTRY_HDR, cmds, n);
    for (size_t i = TERN_RAFT_ENTRY_HDR + n; i < rb.len; i++)
        assert_int_equal(h[i], 0);

    struct server s = {.fsm = tern_fsm_new(1, NULL, NULL)};
    assert_non_null(s.fsm);
    tern_raft_fsm_init(&s.rf, s.fsm, on_applied, &s);
    void *result = &s;
    assert_int_equal(s.rf.raft.apply(&s.rf.raft, &rb, &result), 0);
    assert_null(result);
    assert_int_equal(s.applied, 1);
    raft_free(rb.base);
    tern_fsm_free(s.fsm);
}

/* Version 3: a batch of 512 bytes or more that LZ4 makes smaller is stored
 * compressed and applies as the same commands; a smaller or incompressible one,
 * or one built without compression, stays version 2. */
static void test_entry_lz4_format(void **state)
{
    (void)state;
    uint8_t cmds[4096];
    size_t n = 0;
    while (n < 2048) {
        struct tern_cmd p = {.type = TERN_CMD_PUBLISH, .now_ms = 5};
        p.u.publish.msg.topic = B("plant/line-4/sensor/temperature");
        p.u.publish.msg.payload = B("{\"celsius\": 21.5, \"status\": \"ok\"}");
        p.u.publish.msg.qos = 1;
        n += tern_cmd_encode(&p, cmds + n, sizeof(cmds) - n);
    }
    struct raft_buffer plain, lz4;
    assert_int_equal(tern_raft_entry_build(cmds, n, false, &plain), TERN_OK);
    assert_int_equal(tern_raft_entry_build(cmds, n, true, &lz4), TERN_OK);
    const uint8_t *h = lz4.base;
    assert_int_equal(((const uint8_t *)plain.base)[0], TERN_RAFT_ENTRY_VERSION);
    assert_int_equal(h[0], TERN_RAFT_ENTRY_LZ4);
    assert_int_equal(h[1] | h[2] | h[3] | h[12] | h[13] | h[14] | h[15], 0);
    size_t stored = h[4] | h[5] << 8 | h[6] << 16 | (size_t)h[7] << 24;
    assert_int_equal(h[8] | h[9] << 8 | h[10] << 16 | (size_t)h[11] << 24, n);
    assert_int_equal(lz4.len % 8, 0);
    assert_true(lz4.len >= TERN_RAFT_ENTRY_LZ4_HDR + stored &&
                lz4.len < TERN_RAFT_ENTRY_LZ4_HDR + stored + 8);
    assert_true(lz4.len * 3 < plain.len); /* repetitive commands: well over 3x */
    for (size_t i = TERN_RAFT_ENTRY_LZ4_HDR + stored; i < lz4.len; i++)
        assert_int_equal(h[i], 0);

    /* Both apply as the same commands, to the same state. */
    struct server s[2];
    const struct raft_buffer *rb[2] = {&plain, &lz4};
    uint8_t *snap[2];
    size_t snap_len[2];
    for (int k = 0; k < 2; k++) {
        memset(&s[k], 0, sizeof(s[k]));
        s[k].fsm = tern_fsm_new(1, NULL, NULL);
        assert_non_null(s[k].fsm);
        tern_raft_fsm_init(&s[k].rf, s[k].fsm, on_applied, &s[k]);
        void *result = NULL;
        assert_int_equal(s[k].rf.raft.apply(&s[k].rf.raft, rb[k], &result), 0);
        assert_int_equal(tern_fsm_snapshot(s[k].fsm, &snap[k], &snap_len[k]), TERN_OK);
    }
    assert_true(s[0].applied >= 20);
    assert_int_equal(s[1].applied, s[0].applied);
    assert_int_equal(snap_len[1], snap_len[0]);
    assert_memory_equal(snap[1], snap[0], snap_len[0]);
    for (int k = 0; k < 2; k++) {
        free(snap[k]);
        tern_fsm_free(s[k].fsm);
    }
    raft_free(plain.base);
    raft_free(lz4.base);

    /* Under the threshold, or incompressible: version 2. */
    struct raft_buffer small, noise;
    assert_int_equal(tern_raft_entry_build(cmds, TERN_LZ4_MIN - 1, true, &small),
                     TERN_OK);
    assert_int_equal(((const uint8_t *)small.base)[0], TERN_RAFT_ENTRY_VERSION);
    uint8_t rnd_bytes[4096];
    uint64_t x = 0x9E3779B97F4A7C15ull;
    for (size_t i = 0; i < sizeof(rnd_bytes); i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        rnd_bytes[i] = (uint8_t)x;
    }
    assert_int_equal(tern_raft_entry_build(rnd_bytes, sizeof(rnd_bytes), true, &noise),
                     TERN_OK);
    assert_int_equal(((const uint8_t *)noise.base)[0], TERN_RAFT_ENTRY_VERSION);
    raft_free(small.base);
    raft_free(noise.base);
}

/* The same proposals under real Raft, in entries of up to 24 commands, built
 * with and without compression: every replica of both runs ends in the same
 * state, and the compressed run did store compressed entries. */
static void test_lz4_entries_same_state(void **state)
{
    (void)state;
    uint8_t *ref[2];
    size_t ref_len[2];
    for (int k = 0; k < 2; k++) {
        struct cl *c = cl_new(3, 0x4C5A34ull);
        c->lz4 = k == 1;
        c->batch = 24;
        for (int round = 0; round < 6; round++) {
            propose(c, 8);
            wait_caught_up(c);
        }
        assert_equal_fsms(c);
        if (c->lz4)
            assert_true(c->compressed >= 20);
        else
            assert_int_equal(c->compressed, 0);
        assert_int_equal(tern_fsm_snapshot(c->s[0].fsm, &ref[k], &ref_len[k]), TERN_OK);
        cl_free(c);
    }
    assert_int_equal(ref_len[1], ref_len[0]);
    assert_memory_equal(ref[1], ref[0], ref_len[0]);
    free(ref[0]);
    free(ref[1]);
}

/* --- entries a replica cannot apply -------------------------------------------- */

enum bad_entry {
    BAD_VERSION, /* header version unknown */
    BAD_LENGTH,  /* length beyond the entry's bytes */
    BAD_COMMAND, /* a valid command, then one that does not decode */
    BAD_ALLOC,   /* an allocation fails while the entry applies */
    BAD_LZ4,     /* a compressed entry that does not decompress to its length */
};

/* In a child: a 3-node cluster applies some commands, then one crafted entry
 * through the leader. Exits 0 if every replica got past it. */
static void bad_entry_child(enum bad_entry kind)
{
    struct cl *c = cl_new(3, 0xFEEDull + kind);
    for (unsigned i = 0; i < c->n; i++)
        c->s[i].rf.r = R(c, i);
    propose(c, 5);
    wait_caught_up(c);
    uint8_t cmds[1024];
    struct tern_cmd t = {.type = TERN_CMD_TICK, .now_ms = c->now_ms};
    size_t n = tern_cmd_encode(&t, cmds, sizeof(cmds));
    if (kind == BAD_ALLOC) {
        /* A retained message: its allocation is the one that fails. */
        struct tern_cmd p = {.type = TERN_CMD_PUBLISH, .now_ms = c->now_ms};
        p.u.publish.msg.topic = B("oom/topic");
        p.u.publish.msg.payload = B("x");
        p.u.publish.msg.retain = true;
        n = tern_cmd_encode(&p, cmds, sizeof(cmds));
        for (unsigned i = 0; i < c->n; i++)
            tern_fsm_fail_alloc_after(c->s[i].fsm, 0);
    }
    if (kind == BAD_COMMAND) {
        size_t m = tern_cmd_encode(&t, cmds + n, sizeof(cmds) - n);
        cmds[n + 1] = 0xEE; /* the second command's type */
        n += m;
    }
    if (kind == BAD_LZ4) /* a batch that compresses: the same command again */
        while (n + 64 < sizeof(cmds))
            n += tern_cmd_encode(&t, cmds + n, sizeof(cmds) - n);
    struct raft_buffer rb;
    assert_int_equal(tern_raft_entry_build(cmds, n, kind == BAD_LZ4, &rb), TERN_OK);
    uint8_t *h = rb.base;
    if (kind == BAD_LZ4) {
        assert_int_equal(h[0], TERN_RAFT_ENTRY_LZ4);
        h[8]++; /* one byte more than it holds */
    }
    if (kind == BAD_VERSION)
        h[0] = TERN_RAFT_ENTRY_LZ4 + 1;
    if (kind == BAD_LENGTH)
        h[4] = (uint8_t)(rb.len - TERN_RAFT_ENTRY_HDR + 1);
    struct raft_apply *req = malloc(sizeof(*req));
    assert_non_null(req);
    assert_int_equal(raft_apply(R(c, leader(c)), req, &rb, 1, apply_done), 0);
    wait_caught_up(c);
    fflush(stderr);
    _exit(0);
}

/* Runs bad_entry_child() in a child process; returns its exit status (-1 if it
 * did not exit) and its stderr in log. */
static int run_bad_entry(enum bad_entry kind, char *log, size_t cap)
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        dup2(fds[1], 2);
        bad_entry_child(kind);
    }
    close(fds[1]);
    size_t got = 0;
    ssize_t r;
    while (got + 1 < cap && (r = read(fds[0], log + got, cap - 1 - got)) > 0)
        got += (size_t)r;
    log[got] = 0;
    close(fds[0]);
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* A replica that cannot apply an entry stops, loudly and with its own exit
 * status, rather than skip it: skipping would leave it with another state than
 * the replicas that applied it. No command of the entry is applied. */
static void test_bad_entry_stops_node(void **state)
{
    (void)state;
    static const struct {
        enum bad_entry kind;
        const char *why;
    } cases[] = {
        {BAD_VERSION, "unknown entry version"},
        {BAD_LENGTH, "beyond its"},
        {BAD_COMMAND, "undecodable command 2 of the entry"},
        {BAD_ALLOC, "out of memory"},
        {BAD_LZ4, "does not decompress to its"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char log[8192];
        int status = run_bad_entry(cases[i].kind, log, sizeof(log));
        if (status != TERN_RAFT_EXIT_APPLY || !strstr(log, "cannot apply entry 7") ||
            !strstr(log, cases[i].why))
            fail_msg("case %zu: exit status %d, log:\n%s", i, status, log);
        print_message("%s", strstr(log, "raft: cannot apply"));
    }
}

/* (a) a few hundred mixed commands through the leader: every replica equal. */
static void run_steady(unsigned n)
{
    struct cl *c = cl_new(n, 0x1234567ull + n);
    unsigned cmds = 0;
    for (int round = 0; round < 10; round++) {
        cmds += propose(c, 12);
        if (round % 2)
            wait_caught_up(c);
    }
    wait_caught_up(c);
    assert_true(cmds >= 200);
    for (unsigned i = 0; i < n; i++) {
        assert_int_equal(c->s[i].applied, cmds);
    }
    const struct tern_fsm_stats *st = tern_fsm_stats(c->s[0].fsm);
    assert_true(st->sessions > 0 && st->subscriptions > 0 && st->retained > 0);
    assert_true(st->queued + st->inflight > 0);
    assert_equal_fsms(c);
    cl_free(c);
}

static void test_steady_3(void **state)
{
    (void)state;
    run_steady(3);
}

static void test_steady_5(void **state)
{
    (void)state;
    run_steady(5);
}

/* (b) the leader dies with entries in flight; another is elected, takes more;
 * the old one comes back and converges (its uncommitted tail replaced). */
static void run_leader_killed(unsigned n)
{
    struct cl *c = cl_new(n, 0xBADC0FFEEull + n);
    propose(c, 30);
    wait_caught_up(c);
    unsigned old = leader(c);
    propose(c, 20);
    raft_fixture_step_n(&c->f, 5); /* some of it replicated, some not */
    raft_fixture_kill(&c->f, old);
    unsigned li = wait_new_leader(c, old);
    propose(c, 40);
    wait_caught_up(c);
    /* The old leader holds entries nobody else has: they must go. */
    assert_true(raft_last_index(R(c, old)) > R(c, old)->commit_index);
    raft_fixture_revive(&c->f, old);
    propose(c, 20);
    wait_caught_up(c);
    assert_int_equal(raft_last_applied(R(c, old)), raft_last_applied(R(c, li)));
    assert_equal_fsms(c);
    cl_free(c);
}

static void test_leader_killed_3(void **state)
{
    (void)state;
    run_leader_killed(3);
}

static void test_leader_killed_5(void **state)
{
    (void)state;
    run_leader_killed(5);
}

static void watch(struct cl *c, uint64_t id)
{
    for (unsigned i = 0; i < c->n; i++) {
        c->s[i].watch_id = id;
        c->s[i].watch_seen = c->s[i].watch_dups = 0;
    }
}

/* A PUBLISH to a subscribed session, whose effect (one more queued message)
 * shows whether it applied once or twice. */
static size_t retry_cmd(struct cl *c, uint8_t *out, size_t cap)
{
    struct tern_cmd cmd = {.type = TERN_CMD_PUBLISH, .now_ms = ++c->now_ms};
    cmd.proposal_id = ((uint64_t)ORIGIN << 40) | ++c->seq;
    cmd.u.publish.msg.topic = B("retry/t");
    cmd.u.publish.msg.payload = B("once");
    cmd.u.publish.msg.qos = 1;
    size_t n = tern_cmd_encode(&cmd, out, cap);
    assert_true(n > 0 && n <= cap);
    return n;
}

static size_t put_cmd(uint8_t *buf, size_t cap, size_t at, const struct tern_cmd *cmd)
{
    size_t n = tern_cmd_encode(cmd, buf + at, cap - at);
    assert_true(n > 0 && n <= cap - at);
    return at + n;
}

/* An offline persistent session "r" subscribed to retry/#. */
static void retry_setup(struct cl *c)
{
    uint8_t buf[512], list[64];
    struct tern_cmd open = {.type = TERN_CMD_SESSION_OPEN, .now_ms = ++c->now_ms};
    open.u.open.client_id = B("r");
    open.u.open.node = 1;
    open.u.open.proto = TERN_MQTT_5;
    open.u.open.expiry_s = 3600;
    open.u.open.receive_max = 10;
    assert_int_equal(append_on(c, leader(c), buf, put_cmd(buf, sizeof(buf), 0, &open)),
                     0);
    wait_caught_up(c);
    struct tern_fsm_session *s = tern_fsm_session_get(c->s[0].fsm, "r", 1);
    assert_non_null(s);
    uint64_t epoch = tern_fsm_session_epoch(s);

    struct tern_cmd_sub e = {.filter = B("retry/#"), .options = 1};
    struct tern_cmd sub = {.type = TERN_CMD_SUBSCRIBE, .now_ms = ++c->now_ms};
    sub.u.sub.client_id = B("r");
    sub.u.sub.epoch = epoch;
    sub.u.sub.packet_id = 1;
    sub.u.sub.list = (struct tern_bytes){list, (uint32_t)tern_cmd_put_sub(list, 64, &e)};
    sub.u.sub.count = 1;
    size_t len = put_cmd(buf, sizeof(buf), 0, &sub);
    struct tern_cmd close = {.type = TERN_CMD_SESSION_CLOSE, .now_ms = ++c->now_ms};
    close.u.close.client_id = B("r");
    close.u.close.epoch = epoch;
    close.u.close.expiry_s = 3600;
    len = put_cmd(buf, sizeof(buf), len, &close);
    assert_int_equal(append_on(c, leader(c), buf, len), 0);
    wait_caught_up(c);
    s = tern_fsm_session_get(c->s[0].fsm, "r", 1);
    assert_non_null(s);
    assert_false(tern_fsm_session_online(s));
    assert_int_equal(tern_fsm_session_sub_count(s), 1);
}

static uint32_t queued_r(struct cl *c, unsigned i)
{
    struct tern_fsm_session *s = tern_fsm_session_get(c->s[i].fsm, "r", 1);
    assert_non_null(s);
    return tern_fsm_session_queued(s) + tern_fsm_session_inflight(s);
}

/* (c) a proposal committed under one leader is retried (same id) under the
 * next: the second copy is a duplicate everywhere. */
static void test_retry_committed(void **state)
{
    (void)state;
    struct cl *c = cl_new(3, 42);
    propose(c, 10);
    retry_setup(c);
    uint8_t cmd[256];
    size_t len = retry_cmd(c, cmd, sizeof(cmd));
    watch(c, c->seq | ((uint64_t)ORIGIN << 40));
    unsigned old = leader(c);
    assert_int_equal(append_on(c, old, cmd, len), 0);
    wait_caught_up(c); /* committed - but say its proposer never heard */
    raft_fixture_depose(&c->f);
    unsigned next = (old + 1) % c->n;
    raft_fixture_elect(&c->f, next);
    assert_int_equal(leader(c), next);
    propose(c, 5);
    assert_int_equal(append_on(c, next, cmd, len), 0); /* the retry */
    propose(c, 5);
    wait_caught_up(c);
    for (unsigned i = 0; i < c->n; i++) {
        assert_int_equal(c->s[i].watch_seen, 2);
        assert_int_equal(c->s[i].watch_dups, 1);
        assert_int_equal(queued_r(c, i), 1);
    }
    assert_equal_fsms(c);
    cl_free(c);
}

/* (c') the first copy dies with its leader before replication; the retry under
 * the next leader applies (not a duplicate), once, everywhere - the old leader
 * included, once it is back and its tail replaced. */
static void test_retry_lost(void **state)
{
    (void)state;
    struct cl *c = cl_new(3, 43);
    propose(c, 10);
    retry_setup(c);
    uint8_t cmd[256];
    size_t len = retry_cmd(c, cmd, sizeof(cmd));
    watch(c, c->seq | ((uint64_t)ORIGIN << 40));
    unsigned old = leader(c);
    assert_int_equal(append_on(c, old, cmd, len), 0);
    raft_fixture_kill(&c->f, old); /* before it could send it */
    unsigned next = wait_new_leader(c, old);
    assert_int_equal(append_on(c, next, cmd, len), 0);
    propose(c, 5);
    wait_caught_up(c);
    raft_fixture_revive(&c->f, old);
    propose(c, 5);
    wait_caught_up(c);
    for (unsigned i = 0; i < c->n; i++) {
        assert_int_equal(c->s[i].watch_seen, 1);
        assert_int_equal(c->s[i].watch_dups, 0);
        assert_int_equal(queued_r(c, i), 1);
    }
    assert_equal_fsms(c);
    cl_free(c);
}

static void isolate(struct cl *c, unsigned j, bool on)
{
    for (unsigned k = 0; k < c->n; k++) {
        if (k == j)
            continue;
        if (on) {
            raft_fixture_saturate(&c->f, j, k);
            raft_fixture_saturate(&c->f, k, j);
        } else {
            raft_fixture_desaturate(&c->f, j, k);
            raft_fixture_desaturate(&c->f, k, j);
        }
    }
}

/* (d) a follower cut off (5 servers): the majority goes on; healed, it catches
 * up. */
static void test_partition_follower(void **state)
{
    (void)state;
    struct cl *c = cl_new(5, 77);
    propose(c, 20);
    wait_caught_up(c);
    unsigned j = (leader(c) + 2) % c->n;
    isolate(c, j, true);
    c->excluded = 1u << j;
    for (int round = 0; round < 4; round++) {
        propose(c, 15);
        wait_caught_up(c);
    }
    assert_true(raft_last_applied(R(c, j)) < raft_last_applied(R(c, leader(c))));
    isolate(c, j, false);
    c->excluded = 0;
    propose(c, 5);
    wait_caught_up(c);
    assert_equal_fsms(c);
    cl_free(c);
}

/* (d') the leader cut off with proposals in hand: the majority elects another
 * and goes on; healed, the old leader steps down and converges. */
static void test_partition_leader(void **state)
{
    (void)state;
    struct cl *c = cl_new(5, 78);
    propose(c, 20);
    wait_caught_up(c);
    unsigned old = leader(c);
    isolate(c, old, true);
    propose(c, 10); /* never committed */
    c->excluded = 1u << old;
    unsigned li = wait_new_leader(c, old);
    for (int round = 0; round < 3; round++) {
        propose(c, 15);
        wait_caught_up(c);
    }
    isolate(c, old, false);
    c->excluded = 0;
    propose(c, 5);
    wait_caught_up(c);
    assert_int_equal(leader(c), li);
    assert_equal_fsms(c);
    cl_free(c);
}

/* (e) snapshots: with a low threshold every server compacts its log; a
 * follower that was down while the leader compacted past it comes back and
 * catches up by installing the leader's snapshot, then applies later entries
 * (and sees retries of pre-snapshot proposals as duplicates) like the others. */
static void test_snapshot_catch_up(void **state)
{
    (void)state;
    struct cl *c = cl_new(3, 99);
    for (unsigned i = 0; i < c->n; i++) {
        raft_set_snapshot_threshold(R(c, i), 8);
        raft_set_snapshot_trailing(R(c, i), 4);
    }
    propose(c, 10);
    wait_caught_up(c);
    unsigned k = (leader(c) + 1) % c->n;
    raft_index k_last = raft_last_index(R(c, k));
    raft_fixture_kill(&c->f, k);
    uint8_t old_cmd[2048];
    size_t old_len =
        gen_cmd(c, old_cmd, sizeof(old_cmd)); /* applied before k's restore */
    uint64_t old_id = c->seq | ((uint64_t)ORIGIN << 40);
    assert_int_equal(append_on(c, leader(c), old_cmd, old_len), 0);
    for (int round = 0; round < 8; round++) {
        propose(c, 8);
        wait_caught_up(c);
    }
    struct raft *lr = R(c, leader(c));
    assert_true(lr->log.snapshot.last_index > k_last + 4); /* k's next entry is gone */
    assert_int_equal(c->s[k].rf.restores, 0);
    raft_fixture_revive(&c->f, k);
    propose(c, 2);
    wait_caught_up(c);
    assert_true(c->s[k].rf.restores >= 1);
    assert_true(raft_fixture_n_recv(&c->f, k, RAFT_IO_INSTALL_SNAPSHOT) >= 1);
    /* The node learns of each install through the FSM's restored effect. */
    for (unsigned i = 0; i < c->n; i++)
        assert_int_equal(c->s[i].restored, c->s[i].rf.restores);
    assert_equal_fsms(c);

    watch(c, old_id);
    assert_int_equal(append_on(c, leader(c), old_cmd, old_len), 0);
    propose(c, 20);
    wait_caught_up(c);
    for (unsigned i = 0; i < c->n; i++) {
        assert_int_equal(c->s[i].watch_seen, 1);
        assert_int_equal(c->s[i].watch_dups, 1);
    }
    assert_equal_fsms(c);
    cl_free(c);
}

/* Whether any two servers' FSMs serialize differently. */
static bool fsms_differ(struct cl *c)
{
    bool differ = false;
    uint8_t *ref = NULL;
    size_t ref_len = 0;
    assert_int_equal(tern_fsm_snapshot(c->s[0].fsm, &ref, &ref_len), TERN_OK);
    for (unsigned i = 1; i < c->n; i++) {
        uint8_t *b = NULL;
        size_t len = 0;
        assert_int_equal(tern_fsm_snapshot(c->s[i].fsm, &b, &len), TERN_OK);
        differ = differ || len != ref_len || memcmp(b, ref, len) != 0;
        free(b);
    }
    free(ref);
    return differ;
}

/* Proposes a LIMITS command carrying l through the leader (after an
 * ORIGIN_START, as propose() does). */
static void propose_limits(struct cl *c, const struct tern_fsm_limits *l)
{
    uint8_t buf[256];
    size_t n = start_cmd(c, buf, sizeof(buf));
    struct tern_cmd cmd;
    tern_fsm_limits_cmd(&cmd, l);
    cmd.now_ms = c->now_ms;
    cmd.proposal_id = ((uint64_t)ORIGIN << 40) | ++c->seq;
    size_t m = tern_cmd_encode(&cmd, buf + n, sizeof(buf) - n);
    assert_true(m > 0 && n + m <= sizeof(buf));
    assert_int_equal(append_on(c, leader(c), buf, n + m), 0);
}

static void test_limits_replicated(void **state)
{
    (void)state;
    /* Three nodes configured differently, as ternd's FSMs were built before
     * the limits were replicated. */
    struct tern_fsm_limits lim[3];
    for (int i = 0; i < 3; i++)
        tern_fsm_limits_default(&lim[i]);
    lim[1].queue_max = 2;
    lim[1].inflight_max = 1;
    lim[1].drop_policy = TERN_DROP_NEW;
    lim[2].queue_max = 3;
    lim[2].retained_max = 1;
    lim[2].queue_qos0 = true;

    /* The same log, each node's own bounds: the replicas diverge. */
    struct cl *c = cl_new_lim(3, 0x11A175ull, lim);
    propose(c, 40);
    wait_caught_up(c);
    assert_true(fsms_differ(c));
    cl_free(c);

    /* The bounds go through the log: one state everywhere, whatever each was
     * built with, also across a LIMITS change, a leader change and a follower
     * catching up from a snapshot (which carries them). */
    c = cl_new_lim(3, 0x11A175ull, lim);
    for (unsigned i = 0; i < c->n; i++) {
        raft_set_snapshot_threshold(R(c, i), 8);
        raft_set_snapshot_trailing(R(c, i), 4);
    }
    propose_limits(c, &lim[1]);
    propose(c, 20);
    wait_caught_up(c);
    assert_equal_fsms(c);
    for (unsigned i = 0; i < c->n; i++)
        assert_true(tern_fsm_limits_equal(tern_fsm_limits(c->s[i].fsm), &lim[1]));
    unsigned k = (leader(c) + 1) % c->n;
    raft_fixture_kill(&c->f, k);
    propose_limits(c, &lim[2]);
    for (int round = 0; round < 6; round++) {
        propose(c, 8);
        wait_caught_up(c);
    }
    raft_fixture_revive(&c->f, k);
    propose(c, 2);
    wait_caught_up(c);
    assert_true(c->s[k].rf.restores >= 1);
    assert_equal_fsms(c);
    assert_true(tern_fsm_limits_equal(tern_fsm_limits(c->s[k].fsm), &lim[2]));
    unsigned old = leader(c);
    raft_fixture_kill(&c->f, old);
    wait_new_leader(c, old);
    propose_limits(c, &lim[0]);
    propose(c, 10);
    raft_fixture_revive(&c->f, old);
    propose(c, 2);
    wait_caught_up(c);
    assert_equal_fsms(c);
    assert_true(tern_fsm_limits_equal(tern_fsm_limits(c->s[old].fsm), &lim[0]));
    cl_free(c);
}

/* Proposes CLUSTER_ID id through the leader (after an ORIGIN_START). */
static void propose_cluster_id(struct cl *c, uint64_t id)
{
    uint8_t buf[128];
    size_t n = start_cmd(c, buf, sizeof(buf));
    struct tern_cmd cmd = {.type = TERN_CMD_CLUSTER_ID, .now_ms = c->now_ms};
    cmd.u.cluster_id.id = id;
    cmd.proposal_id = ((uint64_t)ORIGIN << 40) | ++c->seq;
    size_t m = tern_cmd_encode(&cmd, buf + n, sizeof(buf) - n);
    assert_true(m > 0 && n + m <= sizeof(buf));
    assert_int_equal(append_on(c, leader(c), buf, n + m), 0);
}

/* The cluster id is set once through the log: a second, different one (a new
 * leader of another mind) is refused on every replica alike, and a follower
 * that catches up from a snapshot has the first one too. */
static void test_cluster_id_replicated(void **state)
{
    (void)state;
    struct cl *c = cl_new(3, 0xC1D5ull);
    for (unsigned i = 0; i < c->n; i++) {
        raft_set_snapshot_threshold(R(c, i), 8);
        raft_set_snapshot_trailing(R(c, i), 4);
    }
    propose_cluster_id(c, 0xA1);
    propose(c, 10);
    wait_caught_up(c);
    for (unsigned i = 0; i < c->n; i++)
        assert_int_equal(tern_fsm_cluster_id(c->s[i].fsm, NULL), 0xA1);
    unsigned old = leader(c);
    raft_fixture_kill(&c->f, old);
    wait_new_leader(c, old);
    propose_cluster_id(c, 0xB2); /* refused wherever it applies */
    propose_cluster_id(c, 0xA1); /* the same again: nothing changes */
    for (int round = 0; round < 6; round++) {
        propose(c, 8);
        wait_caught_up(c);
    }
    raft_fixture_revive(&c->f, old); /* behind the leader's snapshot */
    propose(c, 2);
    wait_caught_up(c);
    assert_true(c->s[old].rf.restores >= 1);
    assert_equal_fsms(c);
    unsigned restored = 0;
    for (unsigned i = 0; i < c->n; i++) {
        uint64_t refused;
        assert_int_equal(tern_fsm_cluster_id(c->s[i].fsm, &refused), 0xA1);
        assert_true(refused == 0xB2 || (refused == 0 && c->s[i].rf.restores > 0));
        restored += c->s[i].rf.restores > 0;
    }
    assert_true(restored >= 1); /* one of them caught up from a snapshot */
    cl_free(c);
}

int main(void)
{
    tern_log_set_level(TERN_LOG_ERROR); /* the adapter logs undecodable entries */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_entry_format),
        cmocka_unit_test(test_entry_lz4_format),
        cmocka_unit_test(test_lz4_entries_same_state),
        cmocka_unit_test(test_bad_entry_stops_node),
        cmocka_unit_test(test_steady_3),
        cmocka_unit_test(test_steady_5),
        cmocka_unit_test(test_leader_killed_3),
        cmocka_unit_test(test_leader_killed_5),
        cmocka_unit_test(test_retry_committed),
        cmocka_unit_test(test_retry_lost),
        cmocka_unit_test(test_partition_follower),
        cmocka_unit_test(test_partition_leader),
        cmocka_unit_test(test_snapshot_catch_up),
        cmocka_unit_test(test_cluster_id_replicated),
        cmocka_unit_test(test_limits_replicated),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
