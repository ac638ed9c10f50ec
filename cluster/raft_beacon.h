/* Beacons: a leader says it is alive in datagrams, beside its Raft streams.
 *
 * libraft's followers hear their leader only through its TCP stream of
 * AppendEntries, and a leader its followers only through their streams of
 * results. Under 30% loss and 50 ms delay one segment of such a stream is lost
 * again and again now and then, and the stream holds everything behind it for
 * 2-3 s (retransmission timeouts of 0.6-1 s, backed off). With two nodes left
 * (kill -9 under loss) that was enough, in most runs traced with
 * LIBRAFT_TRACE, for the follower's election timer to run out or the leader's
 * quorum check to fail: a second election, 1.5-3 s more without a leader, while
 * both nodes and the path between them were there all along.
 *
 * So, on plain TCP clusters, each node also binds a UDP socket on its Raft
 * address. A leader sends every member a beacon (its term and id) on the
 * cluster's timer (50 ms); a follower whose current leader and term it names
 * (or, before an AppendEntries named one, the node it voted for in that term)
 * restarts its election timer, as an AppendEntries would, and answers; the
 * leader counts the answer as hearing that follower for its quorum check. A
 * datagram lost is just one of twenty a second: no stream to wait on.
 *
 * Beacons only bridge a stall of the streams, they do not replace them: a
 * follower keeps a leader by beacons only while libraft got a message from that
 * leader within TERN_RAFT_BEACON_BRIDGE election timeouts, and a leader counts a
 * follower by its answers on the same condition, so a path that carries
 * datagrams but no TCP still ends in an election. A stopped or isolated leader
 * sends nothing and is replaced as before. A beacon is taken only from the
 * address the configuration gives its sender. With cluster_tls the nodes'
 * traffic is authenticated and these datagrams would not be: no beacons then
 * (docs/security.md). Raft addresses that are not IPv4 literals get none
 * either. Elections are only about liveness, so none of this touches what
 * Raft keeps safe. */
#ifndef TERN_RAFT_BEACON_H
#define TERN_RAFT_BEACON_H

#include <stdint.h>

#include <raft.h>
#include <uv.h>

#include "tern/storage.h"

/* How long (in election timeouts) beacons keep a peer without a Raft message. */
#define TERN_RAFT_BEACON_BRIDGE 10u

/* A reset of the stream to the leader is taken for its process gone
 * (raft_timing.h) only if no beacon of it came for this long: a live leader
 * beacons every 50 ms, so three in a row lost under 30% loss is 2.7%, and a
 * killed one is taken for gone this much later at most. Under loss a live
 * leader's node reset a follower's stream now and then, and the follower
 * elected, left its leader's AppendEntries unread for 4 election timeouts and
 * sent its clients away (docs/reliability.md, session 16). */
#define TERN_RAFT_BEACON_ALIVE_MS 150u

/* A beacon or its answer on the wire (little-endian, as tern_wbuf writes):
 * "TBCN", kind (u8), 3 zero bytes, term, sender's id, receiver's id (u64). */
#define TERN_RAFT_BEACON_SIZE 32u
#define TERN_RAFT_BEACON_PING 1u
#define TERN_RAFT_BEACON_ANSWER 2u

struct tern_raft_beacon_frame {
    unsigned kind;
    uint64_t term;
    raft_id from, to;
};

struct tern_raft_beacon {
    uv_udp_t udp;
    int on; /* bound and receiving: uv_close it */
    struct raft *r;
    unsigned election_ms;
    uint64_t sent;     /* beacons sent */
    uint64_t kept;     /* follower: election timer restarted by one */
    uint64_t heard;    /* leader: follower counted heard by its answer */
    uint64_t refused;  /* datagrams not taken (malformed, wrong sender, stale) */
    raft_id ping_from; /* follower: the sender of the last ping that kept it */
    uint64_t ping_ms;  /* and when (the loop's clock) */
    struct tern_wbuf out;
    char in[64]; /* a datagram received (longer ones are refused) */
};

/* Binds addr ("a.b.c.d:port", the Raft address) for UDP and receives. 0, or a
 * TERN_ error (nothing is bound then; the cluster runs without beacons). */
int tern_raft_beacon_start(struct tern_raft_beacon *b, uv_loop_t *loop, struct raft *r,
                           const char *addr, unsigned election_ms);

/* From the cluster's timer: a leader sends one beacon to every other member. */
void tern_raft_beacon_tick(struct tern_raft_beacon *b);

/* Whether a follower restarts its election timer on ping f: of its term, from
 * its leader or, before it knows one, from the node it voted for in that term. */
int tern_raft_beacon_keeps(const struct raft *r, const struct tern_raft_beacon_frame *f);

/* Milliseconds since a ping from peer last kept this follower; UINT64_MAX if
 * the last one was from another node, or there are no beacons. */
uint64_t tern_raft_beacon_ping_age_ms(const struct tern_raft_beacon *b, raft_id peer);

/* Closes the socket, if bound (cb may be NULL). */
void tern_raft_beacon_close(struct tern_raft_beacon *b, uv_close_cb cb);

/* The codec (exposed for tests): encode appends TERN_RAFT_BEACON_SIZE bytes to
 * w; decode returns 0 for a well-formed frame, -1 otherwise. */
void tern_raft_beacon_encode(const struct tern_raft_beacon_frame *f, struct tern_wbuf *w);
int tern_raft_beacon_decode(const uint8_t *in, size_t len,
                            struct tern_raft_beacon_frame *f);

#endif
