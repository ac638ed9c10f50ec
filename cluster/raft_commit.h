/* A leader's own writes, reported to libraft only as far as a majority has them.
 *
 * libraft 0.15 moves the commit index in one way only: on each AppendEntries
 * result and each of the leader's own writes it asks whether a majority holds
 * the leader's last stored index (replicationQuorum(r, r->last_stored)). A
 * follower that has every entry but the newest few counts for nothing, so while
 * a leader keeps appending faster than its followers' results come back - any
 * steady load over a link whose round trip is longer than the gap between
 * appends - nothing commits at all, however far the followers' match indexes
 * move. proposals.c's append hold worked around it by stopping appends until a
 * majority had the whole log: commits then come in rounds of a full round trip
 * each, several across a lossy link (docs/reliability.md, sessions 9 and 10).
 *
 * So a leader's write is reported done to libraft (its append callback, which
 * is what moves last_stored) only once it is done on disk *and* enough
 * followers' match index covers it that the leader's vote completes a majority.
 * last_stored then trails the majority's match index and libraft commits every
 * index a majority holds, as Raft allows; the leader may go on appending (and
 * libraft on sending those entries) meanwhile. Reporting a write later than it
 * happened is always safe: the leader only counts itself for less.
 *
 * Reports keep the order the writes were made in. Nothing is held when this node
 * is not leader, when the write was made in an earlier term or failed, when a
 * single vote is a majority, while closing, or after an allocation failure
 * (everything goes straight through from then). Checked after every message
 * libraft receives, every write that completes and every tick. */
#ifndef TERN_RAFT_COMMIT_H
#define TERN_RAFT_COMMIT_H

#include <stdint.h>

#include <raft.h>

/* Wraps io->append, io->start and io->close. Call after raft_init() (it reads
 * io->data) and the other wrappers of io->close (raft_send.h), before
 * raft_start(). TERN_OK, or TERN_ELIMIT when too many instances are wrapped. */
int tern_raft_commit_wrap(struct raft_io *io);
/* After the loop stopped (io->close has run). */
void tern_raft_commit_unwrap(struct raft_io *io);

/* Leader writes whose report waited for a follower, since io was wrapped. */
uint64_t tern_raft_commit_held(struct raft_io *io);

#endif
