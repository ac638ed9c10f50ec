/* Incoming Raft messages, looked at before libraft handles them.
 *
 * libraft 0.15 mishandles an AppendEntries whose entries begin at or below the
 * follower's snapshot when the follower no longer holds those entries: it takes
 * an entry it compacted away (its term reads 0) for one it lacks and appends
 * everything from there at the end of its log, under the wrong indexes; then
 * "No log entries found at index 1", the node stops taking part (RAFT_UNAVAILABLE,
 * for good) or, on the error path's truncation, corrupts the heap (SIGSEGV).
 * A leader sends exactly that to a node that took a snapshot and was restarted:
 * a new leader's send to it fails (node down, or the transport closed the link)
 * before the node ever answered, libraft's progressToProbe() sets its next index
 * to match + 1 = 1, and a leader that has not taken a snapshot itself still holds
 * entry 1, so it sends the whole log from there.
 *
 * Entries up to the follower's snapshot are committed, so they are the ones in
 * its snapshot: such a message is rebased onto the snapshot (those entries left
 * out, previous index and term = the snapshot's), which libraft handles.
 *
 * Elections go through here too:
 *  - Pre-vote yield. Two pre-candidates each grant the other's pre-vote, so
 *    both pre-votes succeed, both vote for themselves and the vote splits; on
 *    a lossy network (messages delayed by TCP retransmissions as long as the
 *    round itself) that happened round after round. A pre-candidate that gets
 *    the pre-vote request of a lower-id pre-candidate whose log is at least as
 *    new leaves the pre-vote grants of its current term unread for up to 4
 *    election timeouts: the lower id goes on to the vote, which this node then
 *    grants. Leaving a message unread is always safe in Raft; if the other
 *    does not win, this node's next round goes on as before.
 *  - An InstallSnapshot that arrives while this node takes or stores a snapshot
 *    of its own: libraft 0.15 drops it, and its leader sends the next one only
 *    after install_snapshot_timeout (30 s), so a follower restarted behind a
 *    compacted log (it snapshots what it replays at once) stayed out of the
 *    cluster that long. It is held (the newest one) and handed to libraft on the
 *    first tick after the store.
 *  - Who is electing: the last time each node asked this one for a vote or
 *    granted it one. A node whose majority is electing a leader with it is not
 *    cut off (tern_cluster_electing). */
#ifndef TERN_RAFT_RECV_H
#define TERN_RAFT_RECV_H

#include <stdint.h>

#include <raft.h>

/* Wraps io->start, so that every message received goes through the checks above.
 * Call after raft_uv_init() and before raft_start(); election_ms is the
 * configured election timeout. 0 or TERN_ELIMIT (too many instances in this
 * process). */
int tern_raft_recv_wrap(struct raft_io *io, unsigned election_ms);

/* Gives io->start back (before io's memory goes). */
void tern_raft_recv_unwrap(struct raft_io *io);

/* AppendEntries rebased onto this node's snapshot so far (all instances). */
uint64_t tern_raft_recv_rebased(void);

/* InstallSnapshots held while a snapshot was stored (all instances). */
uint64_t tern_raft_recv_held(void);

/* Pre-vote grants left unread by the yield above (all instances). */
uint64_t tern_raft_recv_yielded(void);

/* Leaves AppendEntries from peer of terms up to term unread for window_ms
 * (raft_timing.h: its process is gone, these were on their way). */
void tern_raft_recv_ignore(struct raft_io *io, raft_id peer, raft_term term,
                           uint64_t window_ms);

/* AppendEntries left unread by the above (all instances). */
uint64_t tern_raft_recv_ignored(void);

/* Nodes that asked this one for a vote, or granted it one, within window_ms. */
unsigned tern_raft_recv_electing(struct raft_io *io, uint64_t window_ms);

/* Milliseconds since a message from peer was last handed to libraft (one
 * left unread above does not count); UINT64_MAX if none was. */
uint64_t tern_raft_recv_heard_ms(struct raft_io *io, raft_id peer);

/* The rebase itself, on a message as libraft's recv callback gets it (exposed for
 * tests): snapshot at snap_index (term snap_term). Returns the entries left out. */
unsigned tern_raft_recv_rebase(struct raft_append_entries *ae, raft_index snap_index,
                               raft_term snap_term);

#endif
