/* tern cluster: the replicated state (a tern_fsm) behind a log.
 *
 * The node proposes commands; the cluster appends them to the log, and when an
 * entry is committed applies it to the FSM on every replica (observer effects
 * fire there), then calls the proposer's callback on the proposing node.
 *
 * Proposals are batched: everything proposed during one loop iteration goes into
 * one log entry (group commit).
 *
 * This file is the seam between the node and the log implementation: today a
 * single-replica in-memory log; the Raft-backed log keeps this interface.
 */
#ifndef TERN_CLUSTER_H
#define TERN_CLUSTER_H

#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#include "tern/cmd.h"
#include "tern/fsm.h"

struct tern_cluster;

#define TERN_CLUSTER_MEMBERS_MAX 16

/* One cluster member: its Raft and peer-link addresses ("HOST:PORT"). */
struct tern_member {
    uint32_t id;
    char raft[64];
    char peer[64];
    char mqtt[64];  /* what clients are told to use (server reference) */
    char admin[64]; /* its admin API, "" if not configured (node only: ternctl follows
                       the leader there); not replicated */
};

/* A PUBLISH command forwarded by node `from` for this node's clean sessions. */
typedef void (*tern_forward_fn)(void *ctx, uint32_t from, const struct tern_cmd *cmd);
/* Node `from` asks this node to hold (or release) the publisher with this
 * client id: a clean subscriber there is backlogged (tern_cluster_flow). */
typedef void (*tern_flow_fn)(void *ctx, uint32_t from, bool hold,
                             const uint8_t *client_id, size_t len);

struct tern_cluster_config {
    uint32_t node_id;
    const char *data_dir;
    struct tern_fsm_limits limits;
    uint32_t max_batch_bytes; /* bytes per log entry, default 1 MiB */
    /* The largest frame a peer link carries (a proposal batch or a forwarded
     * PUBLISH command): max(max_batch_bytes, max_packet_size) plus room for a
     * command's own fields. 0: TERN_PEER_FRAME_MAX (cluster/peer.h). */
    uint64_t peer_frame_bytes_max;
    /* Members; none = a single-voter cluster of this node alone. */
    struct tern_member members[TERN_CLUSTER_MEMBERS_MAX];
    uint32_t member_count;
    const char *raft_address; /* single node: where Raft listens ("127.0.0.1:0") */
    uint32_t election_timeout_ms;
    uint32_t heartbeat_timeout_ms;
    uint32_t snapshot_threshold; /* entries between snapshots */
    uint32_t snapshot_trailing;  /* entries kept after a snapshot */
    uint64_t snapshot_bytes;     /* ... or this many bytes of entries applied */
    uint64_t segment_bytes;      /* Raft log segment file size (0 = libraft's) */
    int snapshot_fork;           /* enum tern_snapshot_fork */
    int entry_compression;       /* enum tern_entry_compression */
    /* Joining a running cluster: bootstrap no configuration; wait for the
     * leader to add this node (tern_cluster_add_member() on the leader). */
    bool join;
    /* Mutual TLS between nodes (cluster_tls; cluster/link_tls.h): the files of
     * this node's certificate ("node-N"), key, the cluster CA and an optional
     * CRL. cert_file NULL or "": plain TCP. */
    const char *tls_cert_file, *tls_key_file, *tls_ca_file, *tls_crl_file;
    tern_forward_fn on_forward;
    tern_flow_fn on_flow; /* called with forward_ctx too */
    void *forward_ctx;
};

/* How a leader stores a batch in the log (docs/configuration.md,
 * raft_entry_compression; cluster/raft_fsm.h). */
enum tern_entry_compression {
    TERN_ENTRY_COMPRESSION_LZ4 = 0,
    TERN_ENTRY_COMPRESSION_NONE = 1,
};

/* Where a snapshot is serialised (docs/configuration.md, raft_snapshot_fork). */
enum tern_snapshot_fork {
    TERN_SNAPSHOT_FORK_AUTO = 0,   /* forked unless the state is tiny */
    TERN_SNAPSHOT_FORK_NEVER = 1,  /* on the loop */
    TERN_SNAPSHOT_FORK_ALWAYS = 2, /* forked */
};

/* Upper bounds of the snapshot stall buckets (tern_cluster_status). */
#define TERN_SNAPSHOT_STALL_BUCKETS_US                                                   \
    {                                                                                    \
        1000, 2000, 5000, 10000, 20000, 50000, 100000, 1000000                           \
    }
#define TERN_SNAPSHOT_STALL_BUCKETS 8

/* Upper bounds of the commit latency buckets (tern_cluster_status.commit_us). */
#define TERN_COMMIT_BUCKETS_US                                                           \
    {                                                                                    \
        500, 1000, 2000, 5000, 10000, 20000, 50000, 100000                               \
    }
#define TERN_COMMIT_BUCKETS 9 /* the bounds above, and the rest */

struct tern_cluster_status {
    int state; /* 0 unavailable, 1 follower, 2 candidate, 3 leader */
    uint32_t leader;
    uint64_t term;
    uint64_t last_index;
    uint64_t applied_index;
    uint64_t pending;   /* proposals not applied yet */
    uint64_t proposals; /* proposals applied (this node's) */
    uint64_t entries;   /* log entries this node appended as leader */
    /* Of those, stored LZ4-compressed; and the bytes of commands they hold
     * against the bytes stored (entries of either form). */
    uint64_t entries_compressed;
    uint64_t entry_bytes_commands, entry_bytes_stored;
    /* Batches of proposals this node sent its leader compressed (peer.h). */
    uint64_t proposal_frames_compressed;
    /* Raft heartbeats and AppendEntries results this node did not send because
     * a newer one replaced them while the stream was busy (raft_frames.h). */
    uint64_t coalesced;
    /* Outgoing Raft streams that waited on retransmissions and carried on over
     * the peer's spare connection (raft_transport.h). */
    uint64_t streams_moved;
    /* Writes of this node as leader reported to libraft only once a majority
     * had them (raft_commit.h): each one a commit libraft 0.15 would have held
     * back until the followers had the whole log. */
    uint64_t writes_held;
    /* Times this node as leader counted a follower heard for its check-quorum
     * because the follower's host acknowledged its stream (raft_timing.h). */
    uint64_t heard_by_ack;
    /* Beacons (raft_beacon.h): sent as leader; this follower's election timer
     * restarted by one; followers counted heard by their answers as leader;
     * datagrams not taken. */
    uint64_t beacons_sent, beacons_kept, heard_by_beacon, beacons_refused;
    /* This node's proposals by time from tern_cluster_propose to their apply
     * here (what a PUBACK waits for), and the longest since start. */
    uint64_t commit_us[TERN_COMMIT_BUCKETS];
    uint64_t commit_max_us;
    uint64_t commit_sum_us;   /* of every proposal counted in commit_us */
    uint64_t snapshots;       /* snapshots this node took of its FSM */
    uint64_t snapshot_max_us; /* longest of them, start to finish (off the loop) */
    /* The loop's stall of each (fork(), or all of the serialisation when
     * inline), by TERN_SNAPSHOT_STALL_BUCKETS_US, and the longest. */
    uint64_t snapshot_stall_us[TERN_SNAPSHOT_STALL_BUCKETS + 1];
    uint64_t snapshot_stall_sum_us;
    uint64_t snapshot_stall_max_us;
};

/* Called once the proposal has been applied on this node: status TERN_OK, the
 * result filled (res->status says whether the FSM accepted it). When it applied
 * inside a snapshot this node installed instead, res->duplicate is set and the
 * rest of the result is unknown: the command took effect, its details must be
 * read from the state. A proposal is never dropped: it is re-sent (same id,
 * in order) until it applies, or the cluster closes (TERN_ESHUTDOWN, res NULL). */
typedef void (*tern_propose_cb)(void *ctx, int status, const struct tern_fsm_result *res);

int tern_cluster_new(struct tern_cluster **out, uv_loop_t *loop,
                     const struct tern_cluster_config *cfg,
                     const struct tern_fsm_observer *obs, char *errmsg);

/* Copies cmd (its bytes may be freed once this returns) and queues it for the log.
 * cb may be NULL. Returns TERN_OK, or an error without calling cb. */
int tern_cluster_propose(struct tern_cluster *c, const struct tern_cmd *cmd,
                         tern_propose_cb cb, void *ctx);

/* During the effects of a command being applied (the FSM observer's calls):
 * true, with the callback and ctx it was proposed with, when the command is
 * one of this node's pending proposals; false for another node's, or for one
 * this node made before it restarted (its log replayed). Effects meant for
 * the proposer (a CONNACK) check this rather than guess from the state. */
bool tern_cluster_applying(const struct tern_cluster *c, tern_propose_cb *cb, void **ctx);

/* The replicated state machine (read it; change it only by proposing). */
struct tern_fsm *tern_cluster_fsm(struct tern_cluster *c);

/* Is this node able to make work durable now (has a leader, quorum)? */
int tern_cluster_ready(const struct tern_cluster *c);

/* No leader, but a majority (this node with the nodes that asked it for a vote
 * or granted it one within the last 4 election timeouts) is electing one: the
 * node is not cut off, a leader is on its way (a lossy network can make that
 * take seconds). Not ready, but no reason to send its clients elsewhere. */
int tern_cluster_electing(const struct tern_cluster *c);

/* Not cut off from the cluster: a leader heard from within an election timeout
 * (even while this node's peer link to it reconnects), or electing one. A node
 * that is not lets its clients go (node.c). */
int tern_cluster_reachable(const struct tern_cluster *c);

/* Sends a PUBLISH command to `node` for its clean sessions (best effort: these
 * messages are not durable). */
int tern_cluster_forward(struct tern_cluster *c, uint32_t node,
                         const struct tern_cmd *cmd);

/* Asks `node` to hold (hold true) or read again (false) its publisher
 * `client_id`, whose forwards fill a clean subscriber's queue here. Best effort,
 * like forwards: batched on the peer link, lost with it (the caller renews). */
int tern_cluster_flow(struct tern_cluster *c, uint32_t node, bool hold,
                      const uint8_t *client_id, size_t len);

/* Writes what this loop turn queued for other nodes (forwards, proposals for
 * the leader): one write per link. Called from the node's prepare phase. */
void tern_cluster_flush_links(struct tern_cluster *c);
/* Bytes not yet written on the link to `node` (0: the fullest link), forwards
 * and forwarded proposals: the node pauses publishers while it is high. */
uint64_t tern_cluster_forward_backlog(const struct tern_cluster *c, uint32_t node);

void tern_cluster_status(const struct tern_cluster *c, struct tern_cluster_status *st);

/* Reads cluster_tls's files again (SIGHUP): new node-to-node connections use
 * them, open ones keep theirs. TERN_OK (also when cluster_tls is not set), or
 * an error with errmsg, the files loaded before kept. */
int tern_cluster_tls_reload(struct tern_cluster *c, char *errmsg);
/* Is node-to-node traffic mutual TLS? */
bool tern_cluster_tls(const struct tern_cluster *c);
/* Node-to-node TLS connections refused since start (Raft and peer links, both
 * directions: handshake failed or timed out, certificate of another node). */
uint64_t tern_cluster_tls_refused(const struct tern_cluster *c);

/* One member as this node sees it. */
struct tern_member_status {
    uint32_t id;
    char raft[64];
    int role;             /* 0 standby, 1 voter, 2 spare (raft roles) */
    int leader;           /* is the current leader */
    int self;             /* is this node */
    int link_up;          /* this node's peer link to it is up (self: 1) */
    uint64_t match_index; /* leader only: highest entry known replicated there */
};

/* Fills up to cap members from the current Raft configuration; returns the
 * number of members. */
size_t tern_cluster_members(const struct tern_cluster *c, struct tern_member_status *out,
                            size_t cap);

/* Asks the leader (must be this node) to hand leadership to `to` (0: the most
 * up-to-date voter). cb(ctx, status) runs when the transfer ends. Returns
 * TERN_ENOTLEADER on a follower. */
int tern_cluster_transfer(struct tern_cluster *c, uint32_t to,
                          void (*cb)(void *ctx, int status), void *ctx);

/* Membership changes, leader only (TERN_ENOTLEADER otherwise; cb is then not
 * called). Adding: MEMBER_SET (every node learns the member's peer and MQTT
 * addresses and opens its peer link), then the node joins the Raft
 * configuration as a spare and is promoted to voter once it has caught up (from
 * a snapshot when the log was compacted). Removing: MEMBER_DEL first (every
 * node closes its link to it; the node itself, still in the configuration,
 * applies it too, stops taking clients and leaves a `removed` marker in its
 * data directory so a restart refuses as well), then the node leaves the Raft
 * configuration. cb(ctx, status) runs when it is done: TERN_OK, TERN_ENOTLEADER
 * (leadership lost on the way), TERN_EAGAIN (another change is in progress), TERN_EINVAL,
 * TERN_ENOTFOUND (remove: not a member), TERN_ELIMIT, TERN_ESHUTDOWN, TERN_EIO. */
int tern_cluster_add_member(struct tern_cluster *c, const struct tern_member *m,
                            void (*cb)(void *ctx, int status), void *ctx);
int tern_cluster_remove_member(struct tern_cluster *c, uint32_t id,
                               void (*cb)(void *ctx, int status), void *ctx);

/* Whether removing member id leaves a working cluster, checked before anything
 * is proposed or written: TERN_OK, or TERN_ELIMIT with the reason in why (the
 * last voter, or the voters left, counting only those whose link is up, would
 * not make a quorum). tern_cluster_remove_member() refuses the same way. */
int tern_cluster_removal_check(const struct tern_cluster *c, uint32_t id, char *why,
                               size_t cap);

/* Was this node removed from the cluster? It then refuses work for good
 * (tern_cluster_ready() is 0); its data directory must go before it can join
 * again as a new member. */
int tern_cluster_removed(const struct tern_cluster *c);

/* Called on the loop with the replicated state's digest: status TERN_OK, the
 * applied index it is of, the CRC32C of its snapshot bytes and their count;
 * otherwise an error and errmsg. */
typedef void (*tern_digest_cb)(void *ctx, int status, uint64_t applied_index,
                               uint32_t crc, uint64_t bytes, const char *errmsg);

/* Computes the digest of the replicated state as it is now (the same on every
 * replica at the same applied index), off the loop: a forked child serialises
 * it (cluster/state_digest.c). Returns TERN_OK (cb will run), or an error with
 * errmsg without calling cb. */
int tern_cluster_state_digest(struct tern_cluster *c, uv_loop_t *loop, tern_digest_cb cb,
                              void *ctx, char *errmsg);

/* Takes a snapshot (compacting the log) at the next applied entry, and proposes an
 * empty one (BARRIER) so that there is one even on an idle node. cb, which may be
 * NULL, is that proposal's: it runs once the entry applied here, after the
 * snapshot was started. Returns TERN_OK, or an error without calling cb. */
int tern_cluster_snapshot_soon(struct tern_cluster *c, tern_propose_cb cb, void *ctx);

/* Stops accepting proposals, fails pending ones with TERN_ESHUTDOWN, closes
 * handles; cb runs when Raft has closed. Free with tern_cluster_free() after the
 * loop has stopped. */
void tern_cluster_close(struct tern_cluster *c, void (*cb)(void *ctx), void *ctx);
void tern_cluster_free(struct tern_cluster *c);

#endif
