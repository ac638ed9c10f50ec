/* libFuzzer target for the pump's reading of libraft's message stream
 * (cluster/raft_frames.h). The input's first byte picks a chunk size, the rest
 * is the stream. Fed in those chunks, then again a byte at a time, with the
 * stream idle and nothing acknowledged: each call stays within
 * tern_raft_frames_out_max and forwards no more than it read, out_total counts
 * what came out, nothing is left held, a stream not understood is never at a
 * message boundary, and both runs forward the same bytes unless heartbeats or
 * results read together were coalesced (chunking changes nothing else).
 */
#include <stdlib.h>
#include <string.h>

#include "../../cluster/raft_frames.h"

struct out {
    uint8_t *b;
    size_t len;
    uint64_t coalesced;
};

static int run(const uint8_t *in, size_t n, size_t chunk, struct out *o)
{
    struct tern_raft_frames f;
    tern_raft_frames_init(&f);
    o->b = malloc(n + 1);
    o->len = 0;
    if (!o->b)
        return -1;
    for (size_t at = 0; at < n; at += chunk) {
        size_t k = n - at < chunk ? n - at : chunk;
        size_t max = tern_raft_frames_out_max(&f, k);
        uint8_t *tmp = malloc(max ? max : 1);
        if (!tmp)
            abort();
        size_t got = tern_raft_frames_feed(&f, in + at, k, tmp, 0, 1000, 0);
        if (got > max || o->len + got > n)
            abort(); /* an idle stream forwards at most what it read */
        memcpy(o->b + o->len, tmp, got);
        o->len += got;
        free(tmp);
        if (f.raw && tern_raft_frames_at_boundary(&f))
            abort();
    }
    if (f.out_total != o->len || f.held_len != 0)
        abort();
    o->coalesced = f.coalesced;
    tern_raft_frames_free(&f);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t chunk = (size_t)data[0] + 1;
    struct out a, b;
    if (run(data + 1, size - 1, chunk, &a) != 0)
        return 0;
    if (run(data + 1, size - 1, 1, &b) != 0) {
        free(a.b);
        return 0;
    }
    /* Heartbeats or results read together are coalesced even on an idle stream
     * (the newest goes): only where neither run did that must they agree. */
    if (!a.coalesced && !b.coalesced && (a.len != b.len || memcmp(a.b, b.b, a.len) != 0))
        abort();
    free(a.b);
    free(b.b);
    return 0;
}
