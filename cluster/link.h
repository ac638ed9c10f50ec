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
 *     nothing notices too (bounded by the same user timeout);
 *   - linear timeouts for thin streams and tighter retransmission timer bounds,
 *     so that a lost segment stalls a stream for less (Raft's heartbeats and
 *     votes ride on it; docs/reliability.md). The kernel counts a stream as
 *     thin only past slow start (snd_ssthresh set), which BBR never sets: under
 *     BBR only the timer bounds act (docs/reliability.md, session 9). */
#ifndef TERN_LINK_H
#define TERN_LINK_H

#include <uv.h>

/* Long enough for TCP to retransmit a segment through a few losses on a bad
 * network (RTO 200 ms + 2x back-off: 0.2 + 0.4 + 0.8 s, plus the round trip),
 * short enough that a dead stream is replaced well within the cluster's
 * liveness budget. docs/reliability.md has the measurements. */
#define TERN_LINK_USER_TIMEOUT_MS 2000u
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
 * a second of its end, and the user timeout sees more retries (0.15 + 0.3 +
 * 0.6 + 1 s) before it gives up. */
#define TERN_LINK_RTO_MIN_US 50000u
#define TERN_LINK_RTO_MAX_MS 1000u
#define TERN_LINK_DELACK_MAX_US 20000u

/* Best effort on a TCP handle whose socket exists (after uv_tcp_init_ex, connect
 * or accept): a socket without these still works, it only notices a dead peer
 * later. */
void tern_link_tune(uv_tcp_t *tcp);

#endif
