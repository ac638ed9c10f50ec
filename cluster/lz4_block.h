/* One LZ4 block (liblz4, no frame) for what the cluster ships between nodes: a
 * large batch in a Raft entry (raft_fsm.h, entry version 3) and in a follower's
 * proposal frame to its leader (peer.h, TERN_PEER_PROPOSE_LZ4). Both carry the
 * block's and the original's lengths themselves. */
#ifndef TERN_LZ4_BLOCK_H
#define TERN_LZ4_BLOCK_H

#include <stddef.h>
#include <stdint.h>

/* Batches below this stay as they are: LZ4 gains little on them (this
 * workload: 1.7x at 256 bytes, 2.4x at 1 KiB) for a call each. */
#define TERN_LZ4_MIN 512u
/* The most a block may claim to expand to (max_batch_bytes' ceiling, with room
 * for a leader's appended forwards). */
#define TERN_LZ4_RAW_MAX (128u << 20)

/* Room tern_lz4_pack() needs for len bytes (0: too large for one block). */
size_t tern_lz4_bound(size_t len);

/* Compresses len bytes of in into out (tern_lz4_bound(len) bytes); returns the
 * block's length, or 0 when it would not be smaller than len - slack (not
 * worth a second form) or len is out of bounds. */
size_t tern_lz4_pack(const uint8_t *in, size_t len, uint8_t *out, size_t slack);

/* Decompresses a block of len bytes into out, which has room for exactly n:
 * 0 when it yields exactly n bytes, -1 otherwise (corrupt, or another length). */
int tern_lz4_unpack(const uint8_t *in, size_t len, uint8_t *out, size_t n);

#endif
