/* Snapshots of the FSM serialised by a forked child, so the loop that owns the
 * FSM stops only for fork() (copying page tables), not for the serialisation.
 *
 * fork() gives the child a copy-on-write image of the FSM exactly as it is at
 * the call: the parent goes on applying, the child walks a state nobody
 * changes. The child runs tern_fsm_snapshot() (the same code, so the same
 * bytes as an inline snapshot), writes [u64 length LE][bytes] into a pipe and
 * _exit()s. It runs on the one thread fork() copies and touches only its own
 * copy of memory; its allocations go through glibc malloc, which fork() leaves
 * usable in the child (its atfork handlers hold every arena across the call).
 * A child that cannot finish (killed, or stuck on an allocator lock another
 * thread held at fork() - possible with sanitizer allocators that have no
 * atfork handling) is killed after `silence_ms` without a byte: the snapshot
 * fails, and the next one is tried at the next threshold.
 *
 * The child closes every descriptor but its pipe, so a connection the parent
 * closes meanwhile is really closed (a FIN is not held back by the child).
 *
 * tern_snapfork_start() runs on the FSM's thread; tern_snapfork_collect() may
 * run on any thread (it touches only sf); tern_snapfork_abort() on either,
 * never concurrently with collect. */
#ifndef TERN_SNAP_FORK_H
#define TERN_SNAP_FORK_H

#include <stddef.h>
#include <stdint.h>

#include "tern/fsm.h"

struct tern_snapfork {
    int pid; /* the child serialising; 0: none */
    int fd;  /* read end of its pipe; -1: none */
};

/* A handle on the child for the thread that started it, while another thread
 * collects: pidfds name one process, even once it is reaped and its pid
 * reused, so ending it cannot hit another process. */
struct tern_snapfork_handle {
    int pidfd; /* -1: none (or pidfd_open unsupported) */
};

/* Sets sf to "no child". */
void tern_snapfork_init(struct tern_snapfork *sf);

/* Forks a child that serialises f. Returns TERN_OK, or TERN_EIO / TERN_ENOMEM
 * with errmsg (pipe or fork failed; nothing to clean up). */
int tern_snapfork_start(struct tern_snapfork *sf, const struct tern_fsm *f, char *errmsg);

/* Reads the child's snapshot (blocking), reaps the child and checks the
 * snapshot's frame and checksum. On TERN_OK *out (malloc'ed, the caller frees)
 * holds *out_len bytes, byte-identical to tern_fsm_snapshot() of f at the
 * fork. Otherwise TERN_EIO / TERN_ENOMEM / TERN_ETIMEDOUT with errmsg. Either
 * way the child is gone and sf is back to "no child". */
int tern_snapfork_collect(struct tern_snapfork *sf, uint8_t **out, size_t *out_len,
                          unsigned silence_ms, char *errmsg);

/* Kills and reaps a child not collected; nothing when there is none. */
void tern_snapfork_abort(struct tern_snapfork *sf);

/* Right after tern_snapfork_start, on the same thread: a handle on the child. */
void tern_snapfork_handle_open(struct tern_snapfork_handle *h,
                               const struct tern_snapfork *sf);
/* Kills the child (a collect in progress then fails at once); harmless when
 * it is gone. Any thread; does not reap. */
void tern_snapfork_handle_kill(const struct tern_snapfork_handle *h);
/* Closes the handle (after the collect is over). */
void tern_snapfork_handle_close(struct tern_snapfork_handle *h);

#endif
