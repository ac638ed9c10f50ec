/* Outgoing Raft messages, looked at before libraft's uv backend queues them.
 *
 * libraft 0.15 (src/uv_send.c) queues every message to a peer it is not
 * connected to, for as long as the connection attempt lasts, and trims that
 * queue to 3 only when the attempt fails. A leader sends each follower an
 * AppendEntries per heartbeat, and to a follower it is probing - every send to
 * it failed since the election, so progressToProbe() set its next index to
 * match + 1 = 1 for a node that never answered this leader - each holds every
 * entry of the log: 16 bytes of encoded header and 40 of entry array per entry,
 * held with the message (the entries' data is shared). An attempt to a peer
 * whose address drops the SYN (loss, a dead host, a full backlog) lasts the
 * transport's 500 ms: 33 heartbeats. kill-9-under-loss (docs/reliability.md,
 * "Branch rss"): 6 MB a cycle at 3,400 entries, +58 MB at 20,000, and up to
 * 33 x 56 B x (raft_snapshot_threshold + trailing) in general.
 *
 * A message lost is always safe in Raft, and one queued behind an attempt says
 * nothing the next heartbeat will not: while libraft has no stream to a peer and
 * is connecting to it or waiting to retry after a failed attempt
 * (tern_raft_transport_attempt; the attempt ends within the transport's timeout,
 * the wait is libraft's 100 ms, raft_glue.c), one AppendEntries per attempt goes
 * to libraft's queue and later ones fail as libraft fails those it evicts,
 * RAFT_NOCONNECTION on the next loop turn: libraft holds at most 4 (the 3 it
 * keeps at a failure, and one). Nothing else is touched: once a stream came up
 * libraft gets every message, so one the transport closed is still found by
 * libraft's next write (it never reads its end; a first version that dropped
 * whenever no stream was up left a leader silent towards a follower for good).
 * Other messages always pass.
 *
 * The close this wraps (to fail the held requests) also runs raft_close()'s
 * callback once. libraft 0.15's uv backend decides that it has closed
 * (uvMaybeFireCloseCb) at every step of its close, and a step whose end it does
 * not track - an open segment's writer, whose close waits for a write still in
 * the threadpool - can report again after the callback fired
 * (canonical/raft#341, cowsql/raft#45): raft would free its address and
 * configuration twice, and ours would run again on a node already stopping.
 * Seen as a SEGV at SIGTERM under ASan (docs/reliability.md, session 10). So the
 * backend gets this wrapper's callback, which passes the first call on and
 * drops the rest; the backend's memory is freed only after the loop has stopped
 * (raft_glue.c), so a late call still finds it. */
#ifndef TERN_RAFT_SEND_H
#define TERN_RAFT_SEND_H

#include <stdint.h>

#include <raft.h>

struct tern_raft_transport;

/* Wraps io->send and io->close. Call after raft_uv_init() and before
 * raft_start(), and before any other wrapper of io->close (the backend must get
 * this one's callback). t may be NULL (then nothing is held). Returns TERN_OK, or
 * TERN_ELIMIT when too many instances are wrapped (io then works as before). */
int tern_raft_send_wrap(struct raft_io *io, struct tern_raft_transport *t);
/* After the loop stopped (io->close has run). */
void tern_raft_send_unwrap(struct raft_io *io);

/* AppendEntries that did not go to libraft, since start (all instances). */
uint64_t tern_raft_send_dropped(void);

#endif
