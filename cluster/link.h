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
 *     nothing notices too (bounded by the same user timeout). */
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

/* Best effort on a TCP handle whose socket exists (after uv_tcp_init_ex, connect
 * or accept): a socket without these still works, it only notices a dead peer
 * later. */
void tern_link_tune(uv_tcp_t *tcp);

#endif
