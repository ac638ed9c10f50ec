/* What the files of the Raft glue share (cluster/raft_glue.c and the files it
 * was split into by concern). Not a public header: only cluster/ includes it.
 *
 *   raft_glue.c   start-up, the timer, status, leadership transfer, snapshots'
 *                 schedule, shutdown
 *   proposals.c   the proposal table, batching (group commit), forwarding to the
 *                 leader, apply and completion, re-sending in order
 *   liveness.c    declaring an unreachable node down (NODE_DOWN)
 *   membership.c  adding and removing members, the removed marker
 */
#ifndef TERN_CLUSTER_INTERNAL_H
#define TERN_CLUSTER_INTERNAL_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <raft.h>
#include <raft/uv.h>

#include "link_tls.h"
#include "lz4_block.h"
#include "peer.h"
#include "raft_beacon.h"
#include "raft_commit.h"
#include "raft_fsm.h"
#include "raft_recv.h"
#include "raft_send.h"
#include "raft_timing.h"
#include "raft_transport.h"
#include "tern/cluster.h"
#include "tern/error.h"
#include "tern/storage.h"

struct member_req;

#define TIMER_MS 50
/* How far a new sequence (restart, or a hole nothing can fill) jumps past every
 * id the node used: proposals of the old sequence that commit late are then
 * duplicates. */
#define SEQ_JUMP (UINT64_C(1) << 20)
#define SEQ_MASK ((UINT64_C(1) << 40) - 1)

struct proposal {
    uint64_t id;
    tern_propose_cb cb;
    void *ctx;
    uint64_t sent_ms;             /* 0 = waiting to be sent */
    uint32_t gen;                 /* c->gen when last sent */
    uint64_t proposed_ns;         /* uv_hrtime() at tern_cluster_propose */
    struct proposal *next, *prev; /* in proposal order */
    struct proposal *hnext;
    size_t len;
    uint8_t bytes[];
};

struct apply_req {
    struct raft_apply req;
    struct tern_cluster *c;
};

struct tern_cluster {
    uv_loop_t *loop;
    uint32_t node_id;
    struct tern_cluster_config cfg;
    struct raft raft;
    struct raft_io io;
    struct tern_raft_transport transport; /* raft_uv_tcp with TCP_NODELAY */
    struct tern_raft_beacon beacon;       /* plain TCP only (raft_beacon.h) */
    /* The leader's stream was reset while its beacons came: taken for gone at
     * the next tick without one (TERN_RAFT_BEACON_ALIVE_MS), since gone_ms. */
    raft_id gone_peer;
    uint64_t gone_ms;
    struct tern_raft_fsm rfsm;
    struct digest_job *digests; /* GET /state/digest in progress (state_digest.c) */
    struct tern_fsm *fsm;
    struct tern_peers *peers;
    struct tern_link_creds creds; /* cluster_tls: both NULL for plain TCP */
    struct tern_link_tls_files tls_files;
    uv_idle_t idle;
    uv_timer_t timer;
    struct proposal *head, *tail;
    struct proposal **hash;
    size_t hcap, npending;
    struct tern_wbuf
        fwd; /* leader: commands forwarded by followers, for the next entry */
    uint64_t seq;
    uint64_t retry_ms;
    /* Re-sending the outstanding tail: gen counts re-sends, so a refusal of a
     * copy sent before the last one asks for nothing more. */
    uint32_t gen;
    int resend;           /* the FSM refused one of ours as out of order */
    uint32_t sent_leader; /* leader, term and link connection the tail went to */
    uint64_t sent_term;
    uint64_t sent_ups;
    unsigned retry_backoff;    /* timer re-sends since our last proposal applied */
    uint64_t restores_settled; /* snapshots installed whose proposals were settled */
    uint64_t commit_seen;      /* leader: commit index at commit_moved_ms */
    uint64_t commit_moved_ms;
    uint64_t appended_term;    /* leader: term of the last entry this node appended */
    int holding;               /* leader: appends held (see append_held) */
    struct proposal *applying; /* ours, while its command's effects run */
    uint64_t applied_own, entries;
    uint64_t entries_compressed, entry_bytes_commands, entry_bytes_stored;
    uint64_t fwd_compressed; /* proposal batches sent to the leader compressed */
    uint64_t heard_by_ack; /* followers counted heard for check-quorum (raft_timing.h) */
    uint64_t commit_us[TERN_COMMIT_BUCKETS], commit_max_us, commit_sum_us;
    uint32_t down_declared[TERN_PEER_MAX]; /* node ids declared down, 0 = free */
    int closing;
    int push_commit;      /* leader: applied a follower's proposal (see push_commit) */
    uint32_t last_leader; /* for logging leader changes */
    int snapshot_forced;
    uint64_t snapshot_forced_from;
    uint64_t drain_deadline;
    int raft_started;
    int raft_closed; /* raft_close's callback ran: raft_uv_close once the loop ends */
    /* Proposal ids are stamped only once the log this node had at start has been
     * applied, so the sequence continues above everything it proposed before. */
    int seq_ready;
    int barrier_sent;
    uint64_t start_index;
    uint64_t restores_seen;      /* snapshots installed whose members were linked */
    int seen_self;               /* this node was in the Raft configuration */
    int removed;                 /* ... and no longer is: refuses work */
    struct member_req *removing; /* leader: waiting for the node to learn it */
    struct raft_barrier barrier;
    void (*close_cb)(void *ctx);
    void *close_ctx;
};

static inline uint64_t cluster_now_ms(struct tern_cluster *c)
{
    return uv_now(c->loop);
}

/* Wall clock for commands this layer proposes itself (apply never reads it). */
static inline uint64_t cluster_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Appends to a batch that outlives a failure: on TERN_ENOMEM nothing is
 * appended and what the batch holds stays valid. Batches start at 4 KiB. */
static inline int cluster_buf_append(struct tern_wbuf *b, const uint8_t *p, size_t len)
{
    if (b->cap == 0 && tern_wbuf_try_reserve(b, 4096) != TERN_OK)
        return TERN_ENOMEM;
    if (tern_wbuf_try_reserve(b, len) != TERN_OK)
        return TERN_ENOMEM;
    tern_wbuf_put_bytes(b, p, len);
    return TERN_OK;
}

/* proposals.c */
int cluster_check_seq_ready(struct tern_cluster *c);
void cluster_flush(struct tern_cluster *c);
int cluster_pending_grow(struct tern_cluster *c);
void cluster_kick(struct tern_cluster *c);
uint32_t cluster_leader_id(struct tern_cluster *c);
void cluster_on_cmd_applied(void *ctx, const struct tern_cmd *cmd,
                            const struct tern_fsm_result *res);
void cluster_on_cmd_applying(void *ctx, const struct tern_cmd *cmd);
void cluster_on_peer_frame(void *ctx, uint32_t from, uint8_t type, const uint8_t *data,
                           size_t len);
void cluster_pending_remove(struct tern_cluster *c, struct proposal *p);
void cluster_resend_all(struct tern_cluster *c);
void cluster_settle_restored(struct tern_cluster *c);
void cluster_barrier_done(struct raft_barrier *req, int status);

/* liveness.c */
void cluster_declare_down(struct tern_cluster *c);

/* membership.c */
void cluster_check_removed_marker(struct tern_cluster *c);
void cluster_member_applied(struct tern_cluster *c, const struct tern_cmd *cmd,
                            const struct tern_fsm_result *res);
void cluster_member_done(struct member_req *r, int status);
void cluster_members_check(struct tern_cluster *c);

/* raft_glue.c */
int cluster_split_addr(const char *s, struct tern_peer_addr *a);

/* Ends the children of digests in progress (state_digest.c), so that their
 * threads return now: a stop must not wait for a child that writes nothing. */
void cluster_digests_kill(struct tern_cluster *c);

#endif
