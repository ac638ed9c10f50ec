/* libraft's TCP transport with TCP_NODELAY on every connection.
 *
 * raft_uv_tcp (libraft 0.15) leaves Nagle's algorithm on. An AppendEntries
 * that follows another before its ACK then waits for the peer's delayed ACK
 * (~40 ms on Linux), which was the p99 of every commit in a cluster. This
 * wraps raft_uv_tcp behind the same raft_uv_transport interface and turns
 * Nagle off on each stream it hands to libraft, outgoing and accepted. */
#ifndef TERN_RAFT_TRANSPORT_H
#define TERN_RAFT_TRANSPORT_H

#include <raft.h>
#include <raft/uv.h>

struct tern_raft_transport {
    struct raft_uv_transport outer; /* give &outer to raft_uv_init() */
    struct raft_uv_transport inner; /* raft_uv_tcp */
    raft_uv_accept_cb accept_cb;
    raft_uv_transport_close_cb close_cb;
};

/* 0 or a raft error code (from raft_uv_tcp_init). */
int tern_raft_transport_init(struct tern_raft_transport *t, struct uv_loop_s *loop);
/* After raft_uv_close(): releases raft_uv_tcp's memory. */
void tern_raft_transport_close(struct tern_raft_transport *t);

#endif
