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

#include <stdint.h>

#include <uv.h>

#include "tern/cmd.h"
#include "tern/fsm.h"

struct tern_cluster;

struct tern_cluster_config {
    uint32_t node_id;
    const char *data_dir;
    struct tern_fsm_limits limits;
    uint32_t max_batch_bytes; /* bytes per log entry, default 1 MiB */
};

/* Called once the proposal's entry has been applied on this node (status
 * TERN_OK, result filled), or when it could not be committed (TERN_ENOTLEADER,
 * TERN_ESHUTDOWN, TERN_ENOMEM; result NULL). */
typedef void (*tern_propose_cb)(void *ctx, int status, const struct tern_fsm_result *res);

int tern_cluster_new(struct tern_cluster **out, uv_loop_t *loop,
                     const struct tern_cluster_config *cfg,
                     const struct tern_fsm_observer *obs, char *errmsg);

/* Copies cmd (its bytes may be freed once this returns) and queues it for the log.
 * cb may be NULL. Returns TERN_OK, or an error without calling cb. */
int tern_cluster_propose(struct tern_cluster *c, const struct tern_cmd *cmd,
                         tern_propose_cb cb, void *ctx);

/* The replicated state machine (read it; change it only by proposing). */
struct tern_fsm *tern_cluster_fsm(struct tern_cluster *c);

/* Is this node able to make work durable now (has a leader, quorum)? */
int tern_cluster_ready(const struct tern_cluster *c);

/* A unique proposal id: (node id << 40) | sequence. */
uint64_t tern_cluster_next_proposal_id(struct tern_cluster *c);

/* Stops accepting proposals, fails pending ones with TERN_ESHUTDOWN, closes
 * handles; cb runs when everything is closed, then the cluster is freed. */
void tern_cluster_close(struct tern_cluster *c, void (*cb)(void *ctx), void *ctx);

#endif
