/* Node-to-node links (not Raft's own transport): proposals forwarded to the
 * leader, messages forwarded to nodes with clean-session subscribers.
 *
 * Every node listens on its peer address and keeps one outbound connection to
 * each other member (reconnecting with backoff); a node sends on its outbound
 * link and receives on the links others opened to it. Frames are
 * [u32 length][u8 type][u32 from node][payload], length counting type, from and
 * payload, bounded by TERN_PEER_FRAME_MAX. */
#ifndef TERN_PEER_H
#define TERN_PEER_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#define TERN_PEER_FRAME_MAX (64u << 20)
#define TERN_PEER_MAX 16
/* Connections a peer port holds at once: one from each other member, with room
 * for a reconnection overlapping the connection it replaces. */
#define TERN_PEER_INBOUND_MAX (2 * TERN_PEER_MAX)

enum tern_peer_frame {
    TERN_PEER_PROPOSE = 1, /* concatenated encoded commands, for the leader */
    TERN_PEER_FORWARD = 2, /* one encoded PUBLISH command for local delivery */
    TERN_PEER_FLOW = 3,    /* [u8 hold][client id]: hold / release a publisher there */
    /* [u32 length of the commands][one LZ4 block of them] (lz4_block.h): a
     * PROPOSE batch of TERN_LZ4_MIN bytes or more that it makes smaller, sent
     * with raft_entry_compression lz4 (a build before it closes the link on it,
     * as on any type it does not know). */
    TERN_PEER_PROPOSE_LZ4 = 4,
};

struct tern_peers;

typedef void (*tern_peer_recv_fn)(void *ctx, uint32_t from, uint8_t type,
                                  const uint8_t *data, size_t len);

struct tern_peer_addr {
    uint32_t id;
    char host[64];
    uint16_t port;
};

int tern_peers_new(struct tern_peers **out, uv_loop_t *loop, uint32_t self,
                   const struct tern_peer_addr *members, size_t n, tern_peer_recv_fn fn,
                   void *ctx, char *errmsg);
/* Mutual TLS on every link, both directions (link_tls.h): called right after
 * tern_peers_new, before the loop runs; creds outlives p. */
struct tern_link_creds;
void tern_peers_set_tls(struct tern_peers *p, const struct tern_link_creds *creds);
/* TLS connections refused (handshake failed or timed out, identity wrong). */
uint64_t tern_peers_tls_refused(const struct tern_peers *p);
/* The largest frame payload sent or accepted (default and ceiling
 * TERN_PEER_FRAME_MAX less the header): the node's largest proposal batch or
 * forwarded command (tern_cluster_config.peer_frame_bytes_max). A connection
 * announcing a larger frame is closed before any of it is buffered. */
void tern_peers_set_frame_max(struct tern_peers *p, size_t payload_max);
/* Batches a frame on the outbound link to `to`. Returns TERN_OK, or TERN_EAGAIN when
 * that link is down (the caller retries later) or its output is over the bound. */
int tern_peers_send(struct tern_peers *p, uint32_t to, uint8_t type, const uint8_t *data,
                    size_t len);
/* Writes out the frames batched on every link: once a loop turn from the
 * node's prepare phase (tern_cluster_flush_links), and after proposals. */
void tern_peers_flush(struct tern_peers *p);
/* Unsent bytes on the outbound link to `to` (0: on the fullest link); 0 while
 * that link is down. */
uint64_t tern_peers_backlog(const struct tern_peers *p, uint32_t to);
/* Is the outbound link to `to` up? */
int tern_peers_connected(const struct tern_peers *p, uint32_t to);
/* How many times the outbound link to `to` has connected: frames written on an
 * earlier connection may be lost with it. */
uint64_t tern_peers_ups(const struct tern_peers *p, uint32_t to);
/* Milliseconds since `to` was last seen connected (0 while connected). */
uint64_t tern_peers_down_ms(const struct tern_peers *p, uint32_t to);
/* Opens an outbound link to a member added at runtime (or reconnects to its new
 * address). Adding this node itself or a known member at the same address does
 * nothing. TERN_ELIMIT when TERN_PEER_MAX links are in use (a removed member's
 * link is reused once its connection has closed). */
int tern_peers_add(struct tern_peers *p, const struct tern_peer_addr *a);
/* Closes the outbound link to a member that left; TERN_ENOTFOUND if none. Its
 * inbound connection closes when that node stops or drops it. */
int tern_peers_remove(struct tern_peers *p, uint32_t id);
void tern_peers_close(struct tern_peers *p);

#endif
