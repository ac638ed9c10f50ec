/* See raft_timing.h. */
#include <string.h>

#include "raft_recv.h"
#include "raft_timing.h"
#include "tern/error.h"
#include "tern/log.h"

#define INSTANCES 8

struct wrapped {
    struct raft_io *io;
    int (*random)(struct raft_io *io, int min, int max);
    unsigned election_ms;
    int candidate; /* the last call was a candidate's round */
    int timed_out; /* a round of the current candidacy timed out */
};

static struct wrapped wrapped[INSTANCES];
static uint64_t staggered, gone;

static struct wrapped *find(struct raft_io *io)
{
    for (size_t i = 0; i < INSTANCES; i++)
        if (wrapped[i].io == io)
            return &wrapped[i];
    return NULL;
}

unsigned tern_raft_timing_round_ms(unsigned election_ms, double r01, unsigned rank,
                                   int after_timeout)
{
    unsigned t = election_ms + (unsigned)(r01 * election_ms);
    if (after_timeout)
        t += rank * election_ms;
    return t;
}

static unsigned voter_rank(const struct raft *r)
{
    unsigned rank = 0;
    for (unsigned i = 0; i < r->configuration.n; i++)
        if (r->configuration.servers[i].role == RAFT_VOTER &&
            r->configuration.servers[i].id < r->id)
            rank++;
    return rank;
}

/* libraft calls this from electionResetTimer() only, with [T, 2T) of its
 * current election timeout, before it stores the new timer: the old one tells
 * whether the round that ends timed out. */
static int election_random(struct raft_io *io, int min, int max)
{
    struct wrapped *w = find(io);
    struct raft *r = io->data; /* raft_init sets it */
    if (!w || !r || w->election_ms == 0)
        return w ? w->random(io, min, max) : min;
    unsigned t = w->election_ms;
    /* Back from the leadership: the follower's and candidate's T again (the
     * field, not raft_set_election_timeout, which may reset the timer and so
     * call this again). */
    r->election_timeout = t;
    int draw = w->random(io, 0, (int)t);
    double r01 = (double)draw / t;
    if (r->state != RAFT_CANDIDATE) {
        w->candidate = w->timed_out = 0;
        return (int)tern_raft_timing_round_ms(t, r01, 0, 0);
    }
    /* A round after this candidacy's first whose timer has run out: it timed
     * out (a pre-vote that succeeded starts the vote before its timer ends). */
    raft_time now = io->time(io);
    if (w->candidate &&
        now - r->election_timer_start >= r->candidate_state.randomized_election_timeout)
        w->timed_out = 1;
    w->candidate = 1;
    if (w->timed_out)
        staggered++;
    return (int)tern_raft_timing_round_ms(t, r01, voter_rank(r), w->timed_out);
}

int tern_raft_timing_wrap(struct raft_io *io, unsigned election_ms)
{
    struct wrapped *w = find(io);
    if (!w)
        w = find(NULL);
    if (!w)
        return TERN_ELIMIT;
    w->io = io;
    w->random = io->random;
    w->election_ms = election_ms;
    w->candidate = w->timed_out = 0;
    io->random = election_random;
    return TERN_OK;
}

void tern_raft_timing_unwrap(struct raft_io *io)
{
    struct wrapped *w = find(io);
    if (w) {
        if (io->random == election_random)
            io->random = w->random;
        memset(w, 0, sizeof(*w));
    }
}

void tern_raft_timing_peer_gone(struct raft *r, raft_id peer, unsigned election_ms,
                                unsigned heartbeat_ms)
{
    raft_id leader = 0;
    const char *addr = NULL;
    raft_leader(r, &leader, &addr);
    if (raft_state(r) == RAFT_LEADER || peer == r->id)
        return;
    /* What it sent before it went may still be on its way, and is left unread
     * in any state: a pre-voting candidate keeps its term, and an AppendEntries
     * of that term would make it the gone node's follower again. A node that
     * did not lead this term sends none of it, so nothing is lost. */
    tern_raft_recv_ignore(r->io, peer, r->current_term, (uint64_t)election_ms * 4);
    if (raft_state(r) != RAFT_FOLLOWER || leader != peer)
        return;
    raft_time now = r->io->time(r->io);
    /* libraft's follower timer: expired once now - start >= this. */
    raft_time elapsed = now - r->election_timer_start;
    r->follower_state.randomized_election_timeout =
        (unsigned)elapsed + (voter_rank(r) + 1) * heartbeat_ms;
    gone++;
    TERN_LOGI("raft: leader node %llu closed its connection (process gone): electing now",
              (unsigned long long)peer);
}

void tern_raft_timing_tick(struct raft *r, unsigned election_ms)
{
    if (raft_state(r) == RAFT_LEADER &&
        r->election_timeout != election_ms * TERN_RAFT_LEADER_WINDOW)
        raft_set_election_timeout(r, election_ms * TERN_RAFT_LEADER_WINDOW);
}

int tern_raft_timing_heard(struct raft *r, raft_id peer)
{
    if (raft_state(r) != RAFT_LEADER || peer == r->id)
        return 0;
    for (unsigned i = 0; i < r->configuration.n; i++) {
        struct raft_progress *pr = &r->leader_state.progress[i];
        if (r->configuration.servers[i].id != peer ||
            r->configuration.servers[i].role != RAFT_VOTER || pr->recent_recv)
            continue;
        pr->recent_recv = true;
        return 1;
    }
    return 0;
}

uint64_t tern_raft_timing_staggered(void)
{
    return staggered;
}

uint64_t tern_raft_timing_gone(void)
{
    return gone;
}
