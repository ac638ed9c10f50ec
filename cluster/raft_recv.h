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
 * out, previous index and term = the snapshot's), which libraft handles. */
#ifndef TERN_RAFT_RECV_H
#define TERN_RAFT_RECV_H

#include <stdint.h>

#include <raft.h>

/* Wraps io->start, so that every message received goes through the check above.
 * Call after raft_uv_init() and before raft_start(). 0 or TERN_ELIMIT (too many
 * instances in this process). */
int tern_raft_recv_wrap(struct raft_io *io);

/* Gives io->start back (before io's memory goes). */
void tern_raft_recv_unwrap(struct raft_io *io);

/* AppendEntries rebased onto this node's snapshot so far (all instances). */
uint64_t tern_raft_recv_rebased(void);

/* The rebase itself, on a message as libraft's recv callback gets it (exposed for
 * tests): snapshot at snap_index (term snap_term). Returns the entries left out. */
unsigned tern_raft_recv_rebase(struct raft_append_entries *ae, raft_index snap_index,
                               raft_term snap_term);

#endif
