/* The beacon's wire format (cluster/raft_beacon.h): what is encoded decodes
 * back, and a datagram that is not exactly a well-formed beacon is refused
 * (its length, magic, padding, kind, or a zero id); and which pings keep a
 * follower. What beacons do to real nodes is tests/integration/test_faults.py's. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "../../cluster/raft_beacon.h"

static void encode(const struct tern_raft_beacon_frame *f, uint8_t *out)
{
    struct tern_wbuf w;
    tern_wbuf_init(&w);
    tern_raft_beacon_encode(f, &w);
    assert_int_equal(w.err, 0);
    assert_int_equal(w.len, TERN_RAFT_BEACON_SIZE);
    memcpy(out, w.buf, w.len);
    tern_wbuf_free(&w);
}

static void test_round_trip(void **state)
{
    (void)state;
    struct tern_raft_beacon_frame f = {TERN_RAFT_BEACON_ANSWER,
                                       UINT64_C(0x0102030405060708), 3, UINT64_MAX};
    struct tern_raft_beacon_frame g;
    uint8_t b[TERN_RAFT_BEACON_SIZE];
    encode(&f, b);
    assert_memory_equal(b, "TBCN\2\0\0\0\x08\x07\x06\x05\x04\x03\x02\x01", 16);
    assert_int_equal(tern_raft_beacon_decode(b, sizeof(b), &g), 0);
    assert_int_equal(g.kind, f.kind);
    assert_true(g.term == f.term && g.from == f.from && g.to == f.to);
}

static void test_malformed_is_refused(void **state)
{
    (void)state;
    struct tern_raft_beacon_frame f = {TERN_RAFT_BEACON_PING, 7, 1, 2}, g;
    uint8_t good[TERN_RAFT_BEACON_SIZE], b[TERN_RAFT_BEACON_SIZE + 1];
    encode(&f, good);
    assert_int_equal(tern_raft_beacon_decode(good, sizeof(good), &g), 0);
    /* Every length but the one. */
    memcpy(b, good, sizeof(good));
    b[sizeof(good)] = 0;
    for (size_t n = 0; n <= sizeof(b); n++)
        if (n != sizeof(good))
            assert_int_equal(tern_raft_beacon_decode(b, n, &g), -1);
    /* Magic, kind, padding: each byte of the header changed. */
    for (size_t i = 0; i < 8; i++) {
        memcpy(b, good, sizeof(good));
        b[i] ^= 0x40;
        assert_int_equal(tern_raft_beacon_decode(b, sizeof(good), &g), -1);
    }
    for (unsigned kind = 0; kind < 256; kind++) {
        memcpy(b, good, sizeof(good));
        b[4] = (uint8_t)kind;
        int ok = kind == TERN_RAFT_BEACON_PING || kind == TERN_RAFT_BEACON_ANSWER;
        assert_int_equal(tern_raft_beacon_decode(b, sizeof(good), &g), ok ? 0 : -1);
    }
    /* No node has id 0. */
    struct tern_raft_beacon_frame zero_from = {TERN_RAFT_BEACON_PING, 7, 0, 2};
    struct tern_raft_beacon_frame zero_to = {TERN_RAFT_BEACON_PING, 7, 1, 0};
    encode(&zero_from, b);
    assert_int_equal(tern_raft_beacon_decode(b, sizeof(good), &g), -1);
    encode(&zero_to, b);
    assert_int_equal(tern_raft_beacon_decode(b, sizeof(good), &g), -1);
}

/* A follower as libraft leaves it (only the fields the decision reads). */
static void follower(struct raft *r, raft_term term, raft_id leader, raft_id voted_for)
{
    memset(r, 0, sizeof(*r));
    r->id = 1;
    r->state = RAFT_FOLLOWER;
    r->current_term = term;
    r->voted_for = voted_for;
    r->follower_state.current_leader.id = leader;
}

static void test_who_keeps_a_follower(void **state)
{
    (void)state;
    static struct raft r; /* large */
    struct tern_raft_beacon_frame from2 = {TERN_RAFT_BEACON_PING, 4, 2, 1};
    struct tern_raft_beacon_frame from3 = {TERN_RAFT_BEACON_PING, 4, 3, 1};
    follower(&r, 4, 2, 2);
    assert_true(tern_raft_beacon_keeps(&r, &from2));
    assert_false(tern_raft_beacon_keeps(&r, &from3));
    /* Voted for 2 in term 4, no AppendEntries yet: 2 is the only one that can
     * have won with this vote. */
    follower(&r, 4, 0, 2);
    assert_true(tern_raft_beacon_keeps(&r, &from2));
    assert_false(tern_raft_beacon_keeps(&r, &from3));
    /* No vote, no leader: nobody. */
    follower(&r, 4, 0, 0);
    assert_false(tern_raft_beacon_keeps(&r, &from2));
    /* Another term, another receiver, not a follower, an answer: no. */
    follower(&r, 5, 2, 2);
    assert_false(tern_raft_beacon_keeps(&r, &from2));
    follower(&r, 4, 2, 2);
    r.id = 3;
    assert_false(tern_raft_beacon_keeps(&r, &from2));
    follower(&r, 4, 2, 2);
    r.state = RAFT_CANDIDATE;
    assert_false(tern_raft_beacon_keeps(&r, &from2));
    follower(&r, 4, 2, 2);
    struct tern_raft_beacon_frame answer = {TERN_RAFT_BEACON_ANSWER, 4, 2, 1};
    assert_false(tern_raft_beacon_keeps(&r, &answer));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_malformed_is_refused),
        cmocka_unit_test(test_who_keeps_a_follower),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
