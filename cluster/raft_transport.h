/* libraft's TCP transport, with every node-to-node socket tuned (link.h).
 *
 * raft_uv_tcp (libraft 0.15) leaves Nagle's algorithm on. An AppendEntries
 * that follows another before its ACK then waits for the peer's delayed ACK
 * (~40 ms on Linux), which was the p99 of every commit in a cluster. And it
 * sets no timeout on a connection: a stream to a node that vanished without a
 * FIN stays up for ~15 minutes of retransmissions while libraft queues a probe
 * AppendEntries on it every heartbeat, each holding every entry since the
 * node's last acknowledgement (the new leader's memory grew quadratically), and
 * a connection attempt retries its SYN for ~2 minutes.
 *
 * This wraps raft_uv_tcp behind the same raft_uv_transport interface: accepted
 * streams are raft_uv_tcp's (tuned when handed over); outgoing connections are
 * made here, so that the socket is tuned before its SYN, and then send
 * raft_uv_tcp's handshake (the accepting side is raft_uv_tcp's listener). */
#ifndef TERN_RAFT_TRANSPORT_H
#define TERN_RAFT_TRANSPORT_H

#include <raft.h>
#include <raft/uv.h>

#include "link_tls.h"

struct tern_raft_connect;
struct tern_raft_pump;
struct tern_raft_incoming;
struct tern_raft_spare;

/* An outgoing stream that had unacknowledged bytes and none acknowledged for
 * stall_ms is closed (raft_transport.c, struct tern_raft_pump); the owner sets
 * stall_ms, at least this. */
#define TERN_RAFT_PUMP_STALL_MS_MIN 2000u

struct tern_raft_transport {
    struct raft_uv_transport outer; /* give &outer to raft_uv_init() */
    struct raft_uv_transport inner; /* raft_uv_tcp: listens, accepts */
    struct uv_loop_s *loop;
    raft_id id;
    char address[256];               /* ours, sent in the handshake */
    struct tern_raft_connect *conns; /* connection attempts in flight */
    struct tern_raft_pump *pumps;    /* outgoing connections (raft_transport.c) */
    uint64_t attempts;               /* connection attempts libraft asked for, ever */
    struct {
        raft_id peer;
        uint64_t serial; /* its last attempt failed: libraft waits to retry */
    } failed[16];
    uv_timer_t pump_timer;    /* their progress, checked (pumps_check) */
    uv_timer_t release_timer; /* held heartbeats and results (pumps_release) */
    int pump_timer_on;
    uint64_t
        coalesced; /* of pumps closed (raft_frames.h); tern_raft_transport_coalesced */
    uint64_t stall_ms;
    raft_uv_accept_cb accept_cb;
    raft_uv_transport_close_cb close_cb;
    /* Mutual TLS (link_tls.h), when creds is set: connections both ways go
     * through link_tls, and this transport listens itself (raft_uv_tcp's
     * listener would read the handshake in the clear). */
    const struct tern_link_creds *creds;
    struct tern_link_tls_set tls;
    uv_tcp_t listener;
    int listening;
    struct tern_raft_incoming *incoming; /* TLS up, Raft handshake not read yet */
    /* A peer closed or reset our outgoing connection to it (its process ended
     * or restarted): not called for timeouts, which a partition also makes. */
    void (*gone_cb)(void *data, raft_id peer);
    void *gone_data;
    struct tern_raft_spare *spares; /* tern_raft_transport_warm */
    uint64_t spares_taken;
    uint64_t moved; /* streams moved to a spare (struct tern_raft_pump) */
    int closing;
};

/* 0 or a raft error code (from raft_uv_tcp_init). creds NULL: plain TCP;
 * otherwise it outlives the transport (its contexts may be replaced: each new
 * connection uses the ones in force). */
int tern_raft_transport_init(struct tern_raft_transport *t, struct uv_loop_s *loop,
                             const struct tern_link_creds *creds);

/* Keeps two spare connections to peer ready, their handshakes sent, and hands
 * one to libraft when libraft asks for a connection there, or to a stalled
 * stream's pump (struct tern_raft_pump). libraft connects only when
 * it first sends: two followers have none to each other until their leader is
 * lost, and then made one across whatever the network does at that moment
 * (under 30% loss, 0.5-1.4 s of SYNs and connect timeouts before the first
 * vote request went out). An idle spare costs a socket each side and a
 * keep-alive probe a second; one that fails is made again after 1 s. Plain TCP
 * only (with TLS, connections are made on demand). 0, TERN_EINVAL, TERN_ENOMEM. */
int tern_raft_transport_warm(struct tern_raft_transport *t, raft_id peer,
                             const char *address);
/* raft_transport_tls.c, for raft_transport.c: listening with TLS (returns a
 * raft error code, t->outer.errmsg says why), and closing every TLS
 * connection. */
int tern_raft_tls_listen(struct tern_raft_transport *t);
void tern_raft_tls_close(struct tern_raft_transport *t);

/* While libraft has no stream to peer and is connecting or waiting to retry
 * after a failed attempt: the serial number (> 0) of that attempt; otherwise 0. */
uint64_t tern_raft_transport_attempt(const struct tern_raft_transport *t, raft_id peer);

/* Milliseconds since peer's kernel last acknowledged anything on this node's
 * outgoing stream to it (data, or a keep-alive's answer): its host is up and
 * the path back from it carries packets. UINT64_MAX without such a stream, or
 * over TLS (not told apart there). */
uint64_t tern_raft_transport_acked_ms(const struct tern_raft_transport *t, raft_id peer);

/* Heartbeats and AppendEntries results not sent because a newer one of the
 * same term replaced them (raft_frames.h), since start. */
uint64_t tern_raft_transport_coalesced(const struct tern_raft_transport *t);

/* Outgoing streams that waited on retransmissions and went on over the peer's
 * spare connection (raft_transport.c, struct tern_raft_pump), since start. */
uint64_t tern_raft_transport_moved(const struct tern_raft_transport *t);

/* After raft_uv_close(): releases raft_uv_tcp's memory. */
void tern_raft_transport_close(struct tern_raft_transport *t);

#endif
