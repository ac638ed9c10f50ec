/* The message framing of libraft's TCP stream, read by the transport's pump
 * (raft_transport.c) on its way out, to drop re-sent probes.
 *
 * libraft 0.15 sends a follower it is probing (after an election, a rejection,
 * a failed send) one AppendEntries per heartbeat, each with every entry from
 * the probe's index to the end of the log, until the follower answers. On a
 * link that drains slowly - 30% loss and 50 ms delay, or a peer that reads
 * nothing for a while - those copies queue behind the first: every 15 ms
 * another one holding the whole tail. The stream then carries nothing but stale
 * copies (the pump's 8 MiB bound closed it over and over under loss, so a new
 * leader never brought a follower up to date), and the leader's memory grows.
 *
 * A copy is redundant while the one before it is still on its way: an
 * AppendEntries with entries whose term, previous index and previous term are
 * those of the last one forwarded, while the peer has not acknowledged (TCP)
 * all of that one yet, or within TERN_RAFT_FRAMES_REPROBE_MS of it. Such a copy
 * is dropped whole (Raft tolerates lost messages: the next probe carries the
 * same entries and more). Everything else passes unchanged, and a stream this
 * parser does not understand passes through untouched from then on.
 *
 * An InstallSnapshot is dropped too while the last one forwarded is not all
 * acknowledged: libraft sends the snapshot again when the first was not answered
 * within its install timeout (raft_set_install_snapshot_timeout), and at a
 * million sessions each copy is hundreds of MB. Where the last snapshot lies in
 * the forwarded stream is kept, so that the pump can tell its bytes from the
 * rest of what is unsent (raft_transport.c).
 *
 * Heartbeats (AppendEntries without entries) and AppendEntries results are
 * coalesced while the stream is busy (the pump's judgement, raft_transport.c:
 * bytes of it not sent yet and the peer silent for 10 ms): a newer one of the
 * same term replaces the one held back, which goes out once the stream is not
 * busy any more. Under 30% loss a stream carries 11-49 kB/s, and a
 * follower's results (one per AppendEntries, ~800/s at this suite's load, 42
 * kB/s) queued for seconds behind a stalled segment: the leader then learnt
 * late what the follower had, and committed late. Each newer one says all the
 * older said: a result carries the follower's last index, a heartbeat the
 * leader's commit index. Except a rejection after a success (the success's
 * match index would be lost): the held one goes out first then. Anything else
 * that follows also sends the held one first, so the order is kept.
 *
 * Wire format (libraft src/uv_encoding.c, protocol 1; integers little-endian):
 * a preamble of u64 message type and u64 header length, the header, then for
 * AppendEntries the entries' data (lengths in its header) and for
 * InstallSnapshot the snapshot data (length in the header's last u64). An
 * AppendEntries header: u64 term, prev_log_index, prev_log_term, leader_commit,
 * u64 entry count n, then per entry u64 term, u8 type, 3 bytes, u32 length. An
 * AppendEntries result header: u64 term, rejected index (0: success), last
 * index. */
#ifndef TERN_RAFT_FRAMES_H
#define TERN_RAFT_FRAMES_H

#include <stddef.h>
#include <stdint.h>

#define TERN_RAFT_FRAMES_REPROBE_MS 100u
/* A header larger than this is not held: the stream passes through from then. */
#define TERN_RAFT_FRAMES_HEADER_MAX (1u << 20)
/* Room for a heartbeat's or result's preamble and header (64 and 40 bytes). */
#define TERN_RAFT_FRAMES_HELD_MAX 80u

struct tern_raft_frames {
    int raw;       /* not understood: everything passes through */
    uint8_t *hold; /* preamble and header of the message being read */
    size_t hold_len, hold_cap, need;
    uint64_t payload_left;
    int dropping;  /* the payload being read belongs to a dropped copy */
    int have_last; /* the last AppendEntries with entries that was forwarded: */
    uint64_t last_term, last_prev, last_prev_term;
    uint64_t last_end; /* its end, as an offset in the forwarded stream */
    uint64_t last_ms;
    int have_snap;                 /* the last InstallSnapshot forwarded: */
    uint64_t snap_start, snap_end; /* offsets in the forwarded stream */
    uint64_t out_total;            /* bytes forwarded */
    uint64_t dropped, snaps_dropped, dropped_bytes;
    uint8_t held[TERN_RAFT_FRAMES_HELD_MAX]; /* a heartbeat or result held back */
    size_t held_len;
    uint64_t held_type, held_term;
    uint64_t coalesced; /* heartbeats and results replaced by newer ones */
};

void tern_raft_frames_init(struct tern_raft_frames *f);
void tern_raft_frames_free(struct tern_raft_frames *f);

/* Room `out` needs for tern_raft_frames_feed() of n bytes. */
size_t tern_raft_frames_out_max(const struct tern_raft_frames *f, size_t n);

/* Of the last `unsent` bytes forwarded, how many belong to the last
 * InstallSnapshot forwarded. */
uint64_t tern_raft_frames_snapshot_unsent(const struct tern_raft_frames *f,
                                          uint64_t unsent);

/* Reads n bytes of libraft's stream; writes what is to be forwarded to out and
 * returns its length. `acked`: how many of the forwarded bytes the peer has
 * acknowledged so far; now_ms: a monotonic clock; busy: the stream is backed
 * up (then a heartbeat or result last in `in` is held back, and the newest of
 * several read at once goes even when it is not). */
size_t tern_raft_frames_feed(struct tern_raft_frames *f, const uint8_t *in, size_t n,
                             uint8_t *out, uint64_t acked, uint64_t now_ms, int busy);

/* Whether what was forwarded so far ends at a message's end (nothing of a
 * message is half forwarded), so that the next bytes may go on another
 * connection: not on a stream this parser does not understand. */
int tern_raft_frames_at_boundary(const struct tern_raft_frames *f);

/* Writes the heartbeat or result held back, if any, to out (room for
 * TERN_RAFT_FRAMES_HELD_MAX) and returns its length: once the stream is not
 * busy any more. */
size_t tern_raft_frames_release(struct tern_raft_frames *f, uint8_t *out);

#endif
