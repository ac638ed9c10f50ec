/* See raft_frames.h. */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "raft_frames.h"

#define PREAMBLE 16u
#define MSG_APPEND_ENTRIES 1u   /* RAFT_IO_APPEND_ENTRIES */
#define MSG_AE_RESULT 2u        /* RAFT_IO_APPEND_ENTRIES_RESULT */
#define AE_RESULT_FIXED 24u     /* term, rejected, last index */
#define MSG_INSTALL_SNAPSHOT 5u /* RAFT_IO_INSTALL_SNAPSHOT */
#define MSG_TYPE_MAX 6u         /* RAFT_IO_TIMEOUT_NOW */
#define AE_FIXED 40u            /* term, prev index, prev term, commit, count */
#define ENTRY_TYPE_MAX 3u       /* RAFT_COMMAND, RAFT_BARRIER, RAFT_CHANGE */

static uint64_t get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}

void tern_raft_frames_init(struct tern_raft_frames *f)
{
    memset(f, 0, sizeof(*f));
}

void tern_raft_frames_free(struct tern_raft_frames *f)
{
    free(f->hold);
    f->hold = NULL;
}

size_t tern_raft_frames_out_max(const struct tern_raft_frames *f, size_t n)
{
    return n + f->hold_len + f->held_len;
}

static int hold_more(struct tern_raft_frames *f, size_t cap)
{
    if (cap <= f->hold_cap)
        return 0;
    uint8_t *p = realloc(f->hold, cap);
    if (!p)
        return -1;
    f->hold = p;
    f->hold_cap = cap;
    return 0;
}

/* The payload that follows the held header, or -1: not a layout this parser
 * knows (then nothing is dropped on this stream any more). */
static int64_t payload_of(const struct tern_raft_frames *f, uint64_t type,
                          uint64_t *n_entries)
{
    const uint8_t *h = f->hold + PREAMBLE;
    uint64_t hlen = f->hold_len - PREAMBLE;
    *n_entries = 0;
    if (type == MSG_APPEND_ENTRIES) {
        if (hlen < AE_FIXED)
            return -1;
        uint64_t n = get64(h + 32);
        /* Some libraft versions add an unused u64 after the entry headers. */
        if (n > (hlen - AE_FIXED) / 16 ||
            (hlen != AE_FIXED + 16 * n && hlen != AE_FIXED + 16 * n + 8))
            return -1;
        uint64_t sum = 0;
        for (uint64_t i = 0; i < n; i++) {
            const uint8_t *e = h + AE_FIXED + 16 * i;
            if (e[8] < 1 || e[8] > ENTRY_TYPE_MAX)
                return -1;
            sum += get32(e + 12);
        }
        *n_entries = n;
        return (int64_t)sum;
    }
    if (type == MSG_INSTALL_SNAPSHOT) {
        /* term, last index, last term, conf index, conf length, conf, data
         * length. libraft 0.15 sizes the header for 8 bytes more than it
         * writes (unset bytes after the data length). */
        uint64_t conf = hlen >= 48 ? get64(h + 32) : 0;
        if (hlen < 48 || (conf != hlen - 48 && conf + 8 != hlen - 48))
            return -1;
        return (int64_t)get64(h + 40 + conf);
    }
    return 0;
}

static size_t emit(struct tern_raft_frames *f, uint8_t *out, const uint8_t *p, size_t n)
{
    memcpy(out, p, n);
    f->out_total += n;
    return n;
}

int tern_raft_frames_at_boundary(const struct tern_raft_frames *f)
{
    /* A header being read is not forwarded yet; a dropped copy's payload is not
     * forwarded at all. */
    return !f->raw && (f->payload_left == 0 || f->dropping);
}

size_t tern_raft_frames_release(struct tern_raft_frames *f, uint8_t *out)
{
    size_t n = f->held_len;
    if (n)
        emit(f, out, f->held, n);
    f->held_len = 0;
    return n;
}

/* A heartbeat or an AppendEntries result (read whole: neither has a payload)
 * is held back, replacing the one held before when that says no more than it
 * (raft_frames.h). Returns 0 if the message is not one of those. */
static int coalesce(struct tern_raft_frames *f, uint8_t *out, size_t *o, uint64_t type,
                    uint64_t n_entries)
{
    const uint8_t *h = f->hold + PREAMBLE;
    size_t hlen = f->hold_len - PREAMBLE;
    bool heartbeat = type == MSG_APPEND_ENTRIES && n_entries == 0;
    bool result = type == MSG_AE_RESULT && hlen >= AE_RESULT_FIXED;
    if ((!heartbeat && !result) || f->hold_len > sizeof(f->held))
        return 0;
    uint64_t term = get64(h);
    bool rejection = result && get64(h + 8) != 0;
    if (f->held_len) {
        if (f->held_type != type || f->held_term != term || rejection)
            *o += tern_raft_frames_release(f, out + *o);
        else
            f->coalesced++;
    }
    memcpy(f->held, f->hold, f->hold_len);
    f->held_len = f->hold_len;
    f->held_type = type;
    f->held_term = term;
    f->payload_left = 0;
    f->dropping = 0;
    f->hold_len = 0;
    f->need = 0;
    return 1;
}

/* A message's preamble and header are held: forward or drop it. Returns -1 if
 * its layout is unknown. */
static int decide(struct tern_raft_frames *f, uint8_t *out, size_t *o, uint64_t acked,
                  uint64_t now_ms)
{
    uint64_t type = get64(f->hold);
    uint64_t n_entries;
    int64_t payload = payload_of(f, type, &n_entries);
    if (payload < 0)
        return -1;
    if (coalesce(f, out, o, type, n_entries))
        return 0;
    /* What was held back goes before anything else: the order is kept. */
    *o += tern_raft_frames_release(f, out + *o);
    const uint8_t *h = f->hold + PREAMBLE;
    uint64_t term = 0, prev = 0, prev_term = 0;
    if (type == MSG_APPEND_ENTRIES) {
        term = get64(h);
        prev = get64(h + 8);
        prev_term = get64(h + 16);
    }
    bool same = type == MSG_APPEND_ENTRIES && n_entries > 0 && f->have_last &&
                term == f->last_term && prev == f->last_prev &&
                prev_term == f->last_prev_term;
    /* One snapshot on its way at a time: libraft sends another when the first
     * has not been answered within its install timeout, and on a slow link the
     * first may still be going out. */
    bool snap_again = type == MSG_INSTALL_SNAPSHOT && f->have_snap && acked < f->snap_end;
    if (snap_again) {
        f->snaps_dropped++;
        f->dropped_bytes += f->hold_len + (uint64_t)payload;
        f->dropping = 1;
    } else if (same && (acked < f->last_end ||
                        now_ms - f->last_ms < TERN_RAFT_FRAMES_REPROBE_MS)) {
        f->dropped++;
        f->dropped_bytes += f->hold_len + (uint64_t)payload;
        f->dropping = 1;
    } else {
        if (type == MSG_INSTALL_SNAPSHOT) {
            f->have_snap = 1;
            f->snap_start = f->out_total;
            f->snap_end = f->out_total + f->hold_len + (uint64_t)payload;
        }
        *o += emit(f, out + *o, f->hold, f->hold_len);
        f->dropping = 0;
        if (type == MSG_APPEND_ENTRIES && n_entries > 0) {
            f->have_last = 1;
            f->last_term = term;
            f->last_prev = prev;
            f->last_prev_term = prev_term;
            f->last_end = f->out_total + (uint64_t)payload;
            f->last_ms = now_ms;
        }
    }
    f->payload_left = (uint64_t)payload;
    f->hold_len = 0;
    f->need = 0;
    return 0;
}

uint64_t tern_raft_frames_snapshot_unsent(const struct tern_raft_frames *f,
                                          uint64_t unsent)
{
    if (!f->have_snap || unsent > f->out_total)
        return 0;
    uint64_t from = f->out_total - unsent;
    uint64_t lo = from > f->snap_start ? from : f->snap_start;
    uint64_t hi = f->out_total < f->snap_end ? f->out_total : f->snap_end;
    return hi > lo ? hi - lo : 0;
}

size_t tern_raft_frames_feed(struct tern_raft_frames *f, const uint8_t *in, size_t n,
                             uint8_t *out, uint64_t acked, uint64_t now_ms, int busy)
{
    size_t o = 0, i = 0;
    while (i < n && !f->raw) {
        if (f->payload_left) {
            size_t k = f->payload_left < n - i ? (size_t)f->payload_left : n - i;
            if (!f->dropping) /* a dropped copy's bytes were counted at its header */
                o += emit(f, out + o, in + i, k);
            i += k;
            f->payload_left -= k;
            continue;
        }
        if (!f->need)
            f->need = PREAMBLE;
        if (hold_more(f, f->need) != 0) {
            f->raw = 1;
            break;
        }
        size_t k = f->need - f->hold_len < n - i ? f->need - f->hold_len : n - i;
        memcpy(f->hold + f->hold_len, in + i, k);
        f->hold_len += k;
        i += k;
        if (f->hold_len < f->need)
            break; /* the rest comes with the next bytes */
        if (f->need == PREAMBLE) {
            uint64_t type = get64(f->hold), hlen = get64(f->hold + 8);
            if (type < 1 || type > MSG_TYPE_MAX || hlen == 0 ||
                hlen > TERN_RAFT_FRAMES_HEADER_MAX) {
                f->raw = 1;
                break;
            }
            f->need = PREAMBLE + (size_t)hlen;
            continue;
        }
        if (decide(f, out, &o, acked, now_ms) != 0)
            f->raw = 1;
    }
    if (f->raw) {
        /* Whatever was held (nothing of it was forwarded yet), then the rest. */
        o += tern_raft_frames_release(f, out + o);
        o += emit(f, out + o, f->hold, f->hold_len);
        f->hold_len = 0;
        o += emit(f, out + o, in + i, n - i);
    }
    if (!busy)
        o += tern_raft_frames_release(f, out + o);
    return o;
}
