/* Election timing that holds up on a lossy network (docs/reliability.md).
 *
 * libraft 0.15 times every election round with a random timeout in [T, 2T)
 * (T = raft_election_timeout_ms) and lets a leader step down when no follower
 * of a majority answered within one T. On a clean network that is what makes a
 * failover fast. Under 30% loss and 50 ms delay, a TCP stream stalls for
 * 0.3-1 s whenever a segment or its retransmission is lost, and two things
 * went wrong (traced with LIBRAFT_TRACE in the fault suite):
 *
 *  - Split votes without end: two nodes that lost their leader at the same
 *    moment start their rounds within a few hundred ms of each other, both
 *    pre-votes succeed (each candidate grants the other's), both vote for
 *    themselves, and each later round starts again within [T, 2T) of the
 *    last: the two rounds' starts differ by less than a message's delay most
 *    of the time (kill -9 under loss: terms 2 -> 11 in 5 s, no leader).
 *    So a round that follows a timed-out round waits longer the higher this
 *    node's rank among the voters (rank x T more: the lowest id goes first),
 *    which separates two candidates by about T whatever the loss. The first
 *    round after losing the leader is unchanged: failover on a clean network
 *    is as fast as before.
 *  - Check-quorum on one T: a leader whose two follower streams both stalled
 *    for 400 ms stepped down although both followers were there. A leader
 *    checks its quorum over LEADER_WINDOW x T instead (libraft uses its
 *    election timeout for that check only while leader; the follower and
 *    candidate timers get T back as soon as the node leaves the leadership).
 *    An isolated leader steps down that much later; the majority elects a new
 *    one on its own timers, unchanged.
 *
 * Both go through libraft's public hooks: io->random (which libraft uses for
 * election timeouts only) and raft_set_election_timeout while leader. */
#ifndef TERN_RAFT_TIMING_H
#define TERN_RAFT_TIMING_H

#include <stdint.h>

#include <raft.h>

/* A leader's check-quorum window, in election timeouts. */
#define TERN_RAFT_LEADER_WINDOW 2u

/* Wraps io->random. Call after raft_uv_init() and before raft_init();
 * election_ms is the configured election timeout. 0 or TERN_ELIMIT. */
int tern_raft_timing_wrap(struct raft_io *io, unsigned election_ms);

/* Gives io->random back (before io's memory goes). */
void tern_raft_timing_unwrap(struct raft_io *io);

/* A peer's process is gone (raft_transport.h, gone_cb): a follower of it starts
 * its election within (rank + 1) heartbeats instead of [T, 2T), and any node but
 * a leader leaves the AppendEntries of its current term from that peer still on
 * their way (a killed process's kernel sends what it had queued, for seconds on
 * a lossy network) unread for 4 T (raft_recv.h): also a candidate, which before
 * took the dead leader back from them. An early election is always safe in
 * Raft; a peer that only closed a connection and is still leader is heard again
 * after 4 T. */
void tern_raft_timing_peer_gone(struct raft *r, raft_id peer, unsigned election_ms,
                                unsigned heartbeat_ms);

/* From the cluster's timer: a leader gets its longer check-quorum window. */
void tern_raft_timing_tick(struct raft *r, unsigned election_ms);

/* A leader's check-quorum counts a follower as heard when any message of it
 * arrived within the window; on a lossy network its results may all wait
 * behind one segment retransmitted for a second or more, and the leader of a
 * majority that can only just commit stepped down while the follower was
 * there (kill -9 under loss: a second election, 1-3 s without a leader). So
 * from the cluster's timer: peer's host acknowledged this leader's own stream
 * to it within an election timeout (raft_transport.h, acked_ms), which counts
 * as hearing it. Not for followers' timers: a stopped leader's kernel goes on
 * acknowledging, and its followers must elect a new one. Returns whether peer
 * was marked heard now (it had not been heard in this window yet). */
int tern_raft_timing_heard(struct raft *r, raft_id peer);

/* The timeout of a candidate's round (exposed for tests): r01 in [0, 1) is
 * the random draw, rank this node's position among the voters by id, after
 * whether an earlier round of this candidacy timed out. */
unsigned tern_raft_timing_round_ms(unsigned election_ms, double r01, unsigned rank,
                                   int after_timeout);

/* Candidate rounds started after a timed-out round, all instances. */
uint64_t tern_raft_timing_staggered(void);

/* Early elections after the leader's process went (all instances). */
uint64_t tern_raft_timing_gone(void);

#endif
