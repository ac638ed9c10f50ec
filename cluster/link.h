/* Socket options shared by every node-to-node TCP connection (Raft's and the
 * peer links), outgoing and accepted.
 *
 * A link to a node that went away without a FIN or RST (partition, power loss,
 * a dropped route) otherwise stays "up" for as long as TCP keeps retransmitting:
 * ~15 minutes for data, and an idle link never notices. Meanwhile writes pile up
 * behind it (libraft re-sends its probe AppendEntries every heartbeat onto a
 * stream that drains nothing) and, after the network heals, the stream sits in
 * retransmission back-off for seconds. So every link gets:
 *   - TCP_NODELAY (see raft_transport.h);
 *   - TCP_USER_TIMEOUT: data unacknowledged for TERN_LINK_USER_TIMEOUT_MS
 *     fails the connection (its owner reconnects). Set before connect(), it also
 *     bounds a connection attempt (SYN retries would otherwise last ~2 min);
 *   - keep-alive probes after TERN_LINK_KEEPIDLE_S idle, so a link that carries
 *     nothing notices too: with a user timeout set, the kernel aborts it once
 *     nothing came back for that long while a probe is out;
 *   - linear timeouts for thin streams and tighter retransmission timer bounds,
 *     so that a lost segment stalls a stream for less (Raft's heartbeats and
 *     votes ride on it; docs/reliability.md). The kernel counts a stream as
 *     thin only past slow start (snd_ssthresh set), which BBR never sets: under
 *     BBR only the timer bounds act (docs/reliability.md, session 9). */
#ifndef TERN_LINK_H
#define TERN_LINK_H

#include <uv.h>

/* Sized for the links that carry nothing: two followers' links to each other
 * (the spare Raft connection, the peer links) see only keep-alive probes, one a
 * second, until their leader is lost and the election needs them. At 2 s one
 * lost probe or answer aborted such a link, so under loss the first vote
 * request found it dead and waited for a new connection across that loss
 * (docs/reliability.md, session 12). At 10 s, nine in a row must be lost.
 * Where a dead peer matters sooner it is noticed otherwise: a killed process's
 * kernel resets its connections at once, a follower learns of a silent leader
 * from its election timer, and what a leader writes to a silent follower is
 * bounded by raft_transport.c's pump. */
#define TERN_LINK_USER_TIMEOUT_MS 10000u
#define TERN_LINK_KEEPIDLE_S 1
#define TERN_LINK_KEEPINTVL_S 1
#define TERN_LINK_KEEPCNT 2
/* Retransmission timer bounds (Linux 6.15+; older kernels refuse them and keep
 * theirs: 200 ms floor, 120 s ceiling). The floor of 200 ms is sized for the
 * internet's delayed ACKs; between nodes, whose ACKs are never delayed more
 * than TERN_LINK_DELACK_MAX_US, 50 ms is safe, and the timer still adapts to
 * the measured round trip (RTO = srtt + 4 rttvar, at least the floor). The
 * ceiling bounds the back-off: one segment lost again and again is retried at
 * least every second, so a stream that survives a lossy spell resumes within
 * a second of its end. */
#define TERN_LINK_RTO_MIN_US 50000u
#define TERN_LINK_RTO_MAX_MS 1000u
#define TERN_LINK_DELACK_MAX_US 20000u

/* Best effort on a TCP handle whose socket exists (after uv_tcp_init_ex, connect
 * or accept): a socket without these still works, it only notices a dead peer
 * later. */
void tern_link_tune(uv_tcp_t *tcp);

/* A member's address ("a.b.c.d:port", port > 0) as a socket address, as every
 * node-to-node socket reads it (the base layer has no socket headers:
 * tests/layout). TERN_OK, or TERN_EINVAL for anything else (a name, IPv6). */
int tern_link_ipv4(const char *addr, struct sockaddr_in *sa);

#endif
