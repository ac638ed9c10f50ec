/* The session FSM as libraft sees it: the Raft entry format and the raft_fsm
 * callbacks (apply, snapshot, restore). raft_glue.c and the fixture tests
 * (tests/unit/test_raft_fixture.c) use this same code.
 *
 * Entry layout: [u8 version][u8 group (0)][u16 reserved][u32 length LE]
 * then `length` bytes of concatenated encoded commands (tern/cmd.h),
 * zero-padded to a multiple of 8: libraft 0.15's segment loader mis-reads
 * entries whose length is not 8-byte aligned (seen here: a restart lost every
 * entry after the first unaligned one), so we never give it one. */
#ifndef TERN_RAFT_FSM_H
#define TERN_RAFT_FSM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <raft.h>

#include "lz4_block.h"
#include "snap_fork.h"
#include "tern/cluster.h"
#include "tern/cmd.h"
#include "tern/error.h"
#include "tern/fsm.h"

/* 2: a node's proposals apply in sequence order (ORIGIN_START begins one).
 * Entries of version 1 were applied with a sliding dedup window instead; this
 * build does not apply them (docs/disk-format.md). */
#define TERN_RAFT_ENTRY_VERSION 2
#define TERN_RAFT_ENTRY_HDR 8
/* 3: the same batch of commands, LZ4-compressed (one block): a 16-byte header
 * - version, three zero bytes, u32 stored length, u32 length of the commands,
 * four zero bytes - then the stored bytes, zero padding to 8. A leader writes it
 * for a batch of TERN_LZ4_MIN bytes or more that it makes smaller
 * (raft_entry_compression). Under 30% loss a Raft stream carries 5-40 kB/s and
 * a commit waits for the whole batch to cross it; this workload's batches
 * compress 2.4x at 1 KiB, 3.1x at 4 KiB, 3.5x at 16 KiB (docs/reliability.md,
 * session 9). Builds before this one stop at such an entry (exit status 70). */
#define TERN_RAFT_ENTRY_LZ4 3
#define TERN_RAFT_ENTRY_LZ4_HDR 16

/* Exit status of a node that cannot apply a committed entry (unknown version,
 * undecodable command, out of memory): it stops rather than diverge from the
 * replicas that applied it (docs/operations.md, "A node that stopped with exit
 * status 70"). */
#define TERN_RAFT_EXIT_APPLY 70

/* Called after each command of an applied entry has been applied, with its
 * result (a duplicate proposal included); on every replica. */
typedef void (*tern_raft_applied_fn)(void *ctx, const struct tern_cmd *cmd,
                                     const struct tern_fsm_result *res);

struct tern_raft_fsm {
    struct raft_fsm raft; /* give &raft to raft_init(); raft.data points here */
    struct tern_fsm *fsm; /* not owned */
    tern_raft_applied_fn on_applied; /* may be NULL */
    /* Called just before each command is applied (may be NULL): so the owner
     * knows, during the command's effects, whose proposal is applying. */
    void (*on_applying)(void *ctx, const struct tern_cmd *cmd);
    /* The raft instance, when set: names the entry index when one cannot be
     * applied (its last applied index + 1). */
    struct raft *r;
    void *ctx;
    uint64_t restores;            /* snapshots installed (restore succeeded) */
    uint64_t snapshots;           /* snapshots taken */
    uint64_t applied_bytes;       /* bytes of entries applied since start */
    uint64_t snapshot_bytes_at;   /* applied_bytes at the last snapshot or restore */
    uint64_t snapshot_max_us;     /* longest from start to finalize (off the loop) */
    uint64_t snapshot_started_us; /* uv_hrtime() / 1000 of the one in progress */
    size_t snapshot_len;          /* its serialised size */
    /* The loop's stall of each snapshot (fork(), or the whole serialisation
     * inline), by TERN_SNAPSHOT_STALL_BUCKETS_US; the rest above the last. */
    uint64_t stall_us[TERN_SNAPSHOT_STALL_BUCKETS + 1];
    uint64_t stall_sum_us, stall_max_us, stall_last_us;
    int fork;                            /* enum tern_snapshot_fork */
    bool snapshot_forked;                /* the one in progress is */
    struct tern_snapfork child;          /* its child */
    struct tern_snapfork_handle handle;  /* the loop's handle on it */
    char snapshot_err[TERN_ERRMSG_SIZE]; /* why it failed ("": it did not) */
};

/* A forked child that writes nothing for this long is killed: the snapshot
 * fails and the next one is tried (snap_fork.h). */
#define TERN_SNAPSHOT_SILENCE_MS 30000

/* Fills rf's raft_fsm (version 2: snapshots serialised inline, on the loop)
 * over fsm. Cannot fail: returns TERN_OK. */
int tern_raft_fsm_init(struct tern_raft_fsm *rf, struct tern_fsm *fsm,
                       tern_raft_applied_fn on_applied, void *ctx);

/* Below this many objects (sessions, subscriptions, messages, queue and
 * in-flight entries) an inline snapshot costs less than fork() (~1 ms at
 * 0.75 us an object; docs/benchmarks.md): "auto" serialises it on the loop. */
#define TERN_SNAPSHOT_FORK_AUTO_OBJECTS 2000

/* fork (enum tern_snapshot_fork): AUTO or ALWAYS, snapshots serialised by a
 * forked child, collected on a thread-pool thread (raft_fsm version 3,
 * snapshot_async; the raft_io must offer async_work, as raft_uv does). Before
 * raft_init(). */
void tern_raft_fsm_set_fork(struct tern_raft_fsm *rf, int fork);

/* Ends a forked snapshot in progress (before raft_close): its child is killed,
 * so the collect fails at once rather than the close waiting for the child to
 * finish serialising (tens of seconds at a million sessions). */
void tern_raft_fsm_cancel(struct tern_raft_fsm *rf);

/* Builds one entry from `len` bytes of concatenated encoded commands into a new
 * raft_calloc'ed buffer (raft_apply() takes it; otherwise raft_free() it):
 * version 3 (compressed) when `compress` is set, len is at least
 * TERN_LZ4_MIN and the result is smaller, version 2 otherwise.
 * Returns TERN_OK, TERN_ETOOBIG (len beyond u32) or TERN_ENOMEM. */
int tern_raft_entry_build(const uint8_t *cmds, size_t len, bool compress,
                          struct raft_buffer *out);

#endif
