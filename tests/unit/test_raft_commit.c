/* Commits under steady appends (cluster/raft_commit.h), on libraft's in-memory
 * fixture: real libraft servers, simulated time and network.
 *
 * libraft 0.15 alone commits only when a majority holds the leader's last stored
 * index: with one follower left and a round trip longer than the gap between
 * proposals, the commit index stands still for as long as the proposals keep
 * coming, though the follower's match index moves on. With the leader's writes
 * reported as far as a majority has them, the commit index follows the
 * follower's. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <raft.h>
#include <raft/fixture.h>

#include "../../cluster/raft_commit.h"
#include "tern/error.h"

#define N 3
#define WAIT_MS 10000
#define LATENCY_MS 50 /* each way, as the fault suite's delay */
#define GAP_MS 5      /* between proposals */

static int fsm_apply(struct raft_fsm *fsm, const struct raft_buffer *buf, void **result)
{
    (void)fsm, (void)buf;
    *result = NULL;
    return 0;
}

struct cl {
    struct raft_fixture f;
    struct raft_fsm fsm[N];
    unsigned n;
    bool wrapped;
    unsigned applied_cbs, failed_cbs;
};

static struct cl *cl_new(unsigned n, bool wrap)
{
    struct cl *c = calloc(1, sizeof(*c));
    assert_non_null(c);
    c->n = n;
    c->wrapped = wrap;
    assert_int_equal(raft_fixture_initialize(&c->f), 0);
    for (unsigned i = 0; i < n; i++) {
        c->fsm[i].version = 1;
        c->fsm[i].apply = fsm_apply;
        assert_int_equal(raft_fixture_grow(&c->f, &c->fsm[i]), 0);
        struct raft *r = raft_fixture_get(&c->f, i);
        raft_set_snapshot_threshold(r, 1000000);
        if (wrap)
            assert_int_equal(tern_raft_commit_wrap(r->io), TERN_OK);
    }
    struct raft_configuration conf;
    assert_int_equal(raft_fixture_configuration(&c->f, n, &conf), 0);
    assert_int_equal(raft_fixture_bootstrap(&c->f, &conf), 0);
    raft_configuration_close(&conf);
    assert_int_equal(raft_fixture_start(&c->f), 0);
    assert_true(raft_fixture_step_until_has_leader(&c->f, WAIT_MS));
    return c;
}

static void cl_free(struct cl *c)
{
    struct raft_io *io[N];
    for (unsigned i = 0; i < c->n; i++)
        io[i] = raft_fixture_get(&c->f, i)->io;
    raft_fixture_close(&c->f);
    if (c->wrapped)
        for (unsigned i = 0; i < c->n; i++)
            tern_raft_commit_unwrap(io[i]);
    free(c);
}

static struct raft *leader(struct cl *c)
{
    unsigned li = raft_fixture_leader_index(&c->f);
    assert_true(li < c->n);
    return raft_fixture_get(&c->f, li);
}

struct apply {
    struct raft_apply req;
    struct cl *c;
};

static void on_applied(struct raft_apply *req, int status, void *result)
{
    (void)result;
    struct apply *a = req->data;
    if (status == 0)
        a->c->applied_cbs++;
    else
        a->c->failed_cbs++;
    free(a);
}

static void propose(struct cl *c)
{
    struct raft *r = leader(c);
    struct apply *a = calloc(1, sizeof(*a));
    assert_non_null(a);
    a->c = c;
    a->req.data = a;
    struct raft_buffer buf = {.len = 8, .base = raft_malloc(8)};
    assert_non_null(buf.base);
    memset(buf.base, 0x5a, 8);
    assert_int_equal(raft_apply(r, &a->req, &buf, 1, on_applied), 0);
}

/* Leader and one follower, LATENCY_MS each way, a proposal every GAP_MS for
 * run_ms: the commit index at the end and the longest it stood still. */
static void steady(struct cl *c, unsigned run_ms, raft_index *lag, unsigned *still_ms)
{
    struct raft *r = leader(c);
    unsigned li = raft_fixture_leader_index(&c->f);
    unsigned down = (li + 1) % c->n;
    raft_fixture_kill(&c->f, down);
    for (unsigned i = 0; i < c->n; i++)
        raft_fixture_set_network_latency(&c->f, i, LATENCY_MS);
    raft_index seen = r->commit_index;
    unsigned since = 0;
    *still_ms = 0;
    for (unsigned t = 0; t < run_ms; t += GAP_MS) {
        propose(c);
        raft_fixture_step_until_elapsed(&c->f, GAP_MS);
        assert_int_equal(raft_state(r), RAFT_LEADER);
        if (r->commit_index != seen) {
            seen = r->commit_index;
            since = 0;
        } else if ((since += GAP_MS) > *still_ms) {
            *still_ms = since;
        }
    }
    *lag = raft_last_index(r) - r->commit_index;
}

static void test_commit_follows_the_follower(void **state)
{
    (void)state;
    struct cl *c = cl_new(N, true);
    raft_index lag;
    unsigned still_ms;
    steady(c, 2000, &lag, &still_ms);
    struct raft *r = leader(c);
    /* A round trip is 2 x LATENCY_MS, plus the follower's write: what was
     * proposed within about that long is what may be uncommitted. */
    assert_true(lag <= (4 * LATENCY_MS) / GAP_MS);
    assert_true(still_ms <= 4 * LATENCY_MS);
    assert_true(c->applied_cbs >= 2000 / GAP_MS - (4 * LATENCY_MS) / GAP_MS);
    assert_true(tern_raft_commit_held(r->io) > 0);
    /* Once the proposals stop, everything commits and is reported stored. */
    raft_fixture_step_until_elapsed(&c->f, 10 * LATENCY_MS);
    assert_int_equal(r->commit_index, raft_last_index(r));
    assert_int_equal(r->last_stored, raft_last_index(r));
    assert_int_equal(c->failed_cbs, 0);
    cl_free(c);
}

/* A leader deposed with writes held reports them all: its last stored index
 * is its log's again, for the vote it casts and the results it sends. */
static void test_deposed_leader_reports(void **state)
{
    (void)state;
    struct cl *c = cl_new(N, true);
    raft_index lag;
    unsigned still_ms;
    steady(c, 300, &lag, &still_ms);
    struct raft *r = leader(c);
    unsigned li = raft_fixture_leader_index(&c->f);
    /* Cut the leader off from its follower: its writes stay held... */
    for (unsigned i = 0; i < c->n; i++)
        if (i != li) {
            raft_fixture_disconnect(&c->f, li, i);
            raft_fixture_disconnect(&c->f, i, li);
        }
    for (int k = 0; k < 10; k++) {
        propose(c);
        raft_fixture_step_until_elapsed(&c->f, GAP_MS);
    }
    assert_true(r->last_stored < raft_last_index(r));
    /* ...until it steps down (check-quorum). */
    assert_true(raft_fixture_step_until_state_is(&c->f, li, RAFT_FOLLOWER, WAIT_MS));
    raft_fixture_step_until_elapsed(&c->f, 300);
    assert_int_equal(r->last_stored, raft_last_index(r));
    cl_free(c);
}

/* One voter: nothing waits. */
static void test_single_voter_not_held(void **state)
{
    (void)state;
    struct cl *c = cl_new(1, true);
    struct raft *r = leader(c);
    for (int k = 0; k < 20; k++) {
        propose(c);
        raft_fixture_step_until_elapsed(&c->f, GAP_MS);
    }
    raft_fixture_step_until_elapsed(&c->f, 100);
    assert_int_equal(r->commit_index, raft_last_index(r));
    assert_int_equal(c->applied_cbs, 20);
    cl_free(c);
}

/* Closed with writes held: every request's callback still runs (ASan: no leak). */
static void test_close_with_writes_held(void **state)
{
    (void)state;
    struct cl *c = cl_new(N, true);
    raft_index lag;
    unsigned still_ms;
    steady(c, 200, &lag, &still_ms);
    struct raft *r = leader(c);
    assert_true(r->last_stored < raft_last_index(r));
    cl_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_commit_follows_the_follower),
        cmocka_unit_test(test_deposed_leader_reports),
        cmocka_unit_test(test_single_voter_not_held),
        cmocka_unit_test(test_close_with_writes_held),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
