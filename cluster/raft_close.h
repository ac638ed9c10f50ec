/* raft_close()'s callback, run once.
 *
 * libraft 0.15's uv backend decides that it has closed (uvMaybeFireCloseCb) at
 * every step of its close, and some steps it does not wait for - an open
 * segment's writer, whose close waits for a write still in the threadpool -
 * call it again after it fired (canonical/raft#341, cowsql/raft#45). It then
 * calls raft's close callback a second time: raft frees its address and
 * configuration again, and ours runs again on a node already stopping. Seen as
 * a SEGV at SIGTERM under ASan (docs/reliability.md, session 10). So the
 * callback libraft's uv backend gets is this module's, which passes the first
 * call on and drops the rest; the backend's memory is freed only after the loop
 * has stopped (raft_glue.c), so a late call still finds it. */
#ifndef TERN_RAFT_CLOSE_H
#define TERN_RAFT_CLOSE_H

#include <raft.h>

/* Wraps io->close. Call right after raft_uv_init(), before any other wrapper
 * (the backend must get this callback, not another wrapper's). Returns TERN_OK,
 * or TERN_ELIMIT when too many instances are wrapped (io then works as before). */
int tern_raft_close_wrap(struct raft_io *io);

/* Restores io->close; after the loop has stopped. */
void tern_raft_close_unwrap(struct raft_io *io);

#endif
