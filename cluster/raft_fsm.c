/* The session FSM behind libraft's raft_fsm interface (see raft_fsm.h). */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#include "raft_fsm.h"
#include "tern/error.h"
#include "tern/log.h"
#include "tern/storage.h"

/* A committed entry this replica cannot apply. Skipping it, or applying part
 * of it, would leave this replica in another state than the ones that applied
 * it, silently and for good; so the node stops, saying which entry and why,
 * with its own exit status. A restart meets the same entry again: the
 * operator must upgrade the binary (a newer format) or give it memory. */
static _Noreturn void TERN_PRINTF(2, 3)
    apply_fatal(const struct tern_raft_fsm *rf, const char *fmt, ...)
{
    char why[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    char index[24] = "?"; /* rf->r not set: the index is unknown */
    if (rf->r)
        snprintf(index, sizeof(index), "%llu",
                 (unsigned long long)raft_last_applied(rf->r) + 1);
    tern_log(TERN_LOG_ERROR,
             "raft: cannot apply entry %s: %s: stopping (exit status %d) rather than "
             "diverge from the other replicas",
             index, why, TERN_RAFT_EXIT_APPLY);
    fflush(stderr);
    _exit(TERN_RAFT_EXIT_APPLY); /* no atexit handlers: nothing may run on this state */
}

/* Decodes every command of the entry before applying any, so an entry is
 * applied whole or (the node stops) not at all. Returns the command count. */
static size_t entry_check(const struct tern_raft_fsm *rf, const uint8_t *p, size_t left)
{
    char errmsg[TERN_ERRMSG_SIZE];
    size_t n = 0;
    while (left > 0) {
        struct tern_cmd cmd;
        size_t used = 0;
        n++;
        if (tern_cmd_decode(p, left, &cmd, &used, errmsg) != TERN_OK)
            apply_fatal(rf, "undecodable command %zu of the entry: %s", n, errmsg);
        p += used;
        left -= used;
    }
    return n;
}

static void put32(uint8_t *p, size_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* The commands of an entry, and their length: in the entry itself (version 2)
 * or decompressed into *raw (version 3; the caller frees it). */
static const uint8_t *entry_commands(const struct tern_raft_fsm *rf,
                                     const struct raft_buffer *rb, size_t *left,
                                     uint8_t **raw)
{
    struct tern_rbuf r;
    tern_rbuf_init(&r, rb->base, rb->len);
    uint8_t version = tern_rbuf_get_u8(&r);
    tern_rbuf_get_bytes(&r, 3);
    size_t stored = tern_rbuf_get_u32(&r); /* version 2: the commands' length */
    *raw = NULL;
    if (!r.err && version == TERN_RAFT_ENTRY_VERSION) {
        *left = stored;
        if (stored > tern_rbuf_left(&r))
            apply_fatal(rf, "entry length %zu beyond its %zu bytes", stored, rb->len);
        return r.buf + r.pos;
    }
    size_t n = tern_rbuf_get_u32(&r);
    tern_rbuf_get_bytes(&r, 4);
    if (r.err || version != TERN_RAFT_ENTRY_LZ4)
        apply_fatal(rf, "unknown entry version %u (%zu bytes)", rb->len ? version : 0,
                    rb->len);
    if (stored > tern_rbuf_left(&r) || n == 0 || n > TERN_LZ4_RAW_MAX)
        apply_fatal(rf, "compressed entry of %zu bytes for %zu in its %zu bytes", stored,
                    n, rb->len);
    *raw = malloc(n);
    if (!*raw)
        apply_fatal(rf, "out of memory decompressing the entry (%zu bytes)", n);
    if (tern_lz4_unpack(r.buf + r.pos, stored, *raw, n) != 0)
        apply_fatal(rf, "compressed entry does not decompress to its %zu bytes", n);
    *left = n;
    return *raw;
}

/* Applies one entry (a batch of commands) to the FSM. */
static int fsm_apply(struct raft_fsm *rfsm, const struct raft_buffer *rb, void **result)
{
    struct tern_raft_fsm *rf = rfsm->data;
    *result = NULL;
    rf->applied_bytes += rb->len; /* what libraft keeps in memory until a snapshot */
    size_t left;
    uint8_t *raw;
    const uint8_t *p = entry_commands(rf, rb, &left, &raw);
    entry_check(rf, p, left);
    for (size_t i = 1; left > 0; i++) {
        struct tern_cmd cmd;
        size_t used = 0;
        tern_cmd_decode(p, left, &cmd, &used, NULL); /* checked above */
        struct tern_fsm_result res;
        if (rf->on_applying)
            rf->on_applying(rf->ctx, &cmd);
        tern_fsm_apply(rf->fsm, &cmd, &res);
        if (res.status == TERN_ENOMEM)
            apply_fatal(rf, "out of memory applying command %zu of the entry (type %u)",
                        i, cmd.type);
        if (rf->on_applied)
            rf->on_applied(rf->ctx, &cmd, &res);
        p += used;
        left -= used;
    }
    free(raw);
    return 0;
}

/* The serialised state in one buffer, as libraft wants it. */
static int snapshot_bufs(uint8_t *data, size_t len, struct raft_buffer *bufs[],
                         unsigned *n)
{
    *bufs = malloc(sizeof(**bufs));
    if (!*bufs) {
        free(data);
        return RAFT_NOMEM;
    }
    (*bufs)[0].base = data;
    (*bufs)[0].len = len;
    *n = 1;
    return 0;
}

static void stall_count(struct tern_raft_fsm *rf, uint64_t us)
{
    static const uint64_t bounds[] = TERN_SNAPSHOT_STALL_BUCKETS_US;
    size_t b = 0;
    while (b < TERN_SNAPSHOT_STALL_BUCKETS && us > bounds[b])
        b++;
    rf->stall_us[b]++;
    rf->stall_sum_us += us;
    if (us > rf->stall_max_us)
        rf->stall_max_us = us;
    rf->stall_last_us = us;
}

static bool fork_worth_it(const struct tern_raft_fsm *rf)
{
    if (rf->fork != TERN_SNAPSHOT_FORK_AUTO)
        return rf->fork == TERN_SNAPSHOT_FORK_ALWAYS;
    const struct tern_fsm_stats *st = tern_fsm_stats(rf->fsm);
    return st->sessions + st->subscriptions + st->messages + st->queued + st->inflight >=
           TERN_SNAPSHOT_FORK_AUTO_OBJECTS;
}

/* On the loop, at the snapshot's index. Forked: only fork() here, the child
 * serialises this very state while apply goes on (snap_fork.h), and
 * fsm_snapshot_async collects it on a thread-pool thread. Otherwise (fork off,
 * or it failed) the whole serialisation, as libraft's version 2 did. */
static int fsm_snapshot(struct raft_fsm *rfsm, struct raft_buffer *bufs[], unsigned *n)
{
    struct tern_raft_fsm *rf = rfsm->data;
    uint64_t t0 = uv_hrtime() / 1000;
    *bufs = NULL;
    *n = 0;
    rf->snapshot_started_us = t0;
    rf->snapshot_len = 0;
    rf->snapshot_err[0] = '\0';
    rf->snapshot_forked = false;
    if (fork_worth_it(rf)) {
        char errmsg[TERN_ERRMSG_SIZE];
        if (tern_snapfork_start(&rf->child, rf->fsm, errmsg) == TERN_OK) {
            rf->snapshot_forked = true;
            tern_snapfork_handle_open(&rf->handle, &rf->child);
        } else
            TERN_LOGW("raft: snapshot %" PRIu64 ": %s: serialising on the loop instead",
                      rf->snapshots + 1, errmsg);
    }
    if (!rf->snapshot_forked) {
        uint8_t *data = NULL;
        size_t len = 0;
        if (tern_fsm_snapshot(rf->fsm, &data, &len) != TERN_OK)
            return RAFT_NOMEM;
        int rv = snapshot_bufs(data, len, bufs, n);
        if (rv != 0)
            return rv;
        rf->snapshot_len = len;
    }
    /* What the loop waited for: the stall the snapshot costs every client. */
    uint64_t us = uv_hrtime() / 1000 - t0;
    stall_count(rf, us);
    rf->snapshots++;
    rf->snapshot_bytes_at = rf->applied_bytes;
    return 0;
}

/* On a thread-pool thread (libraft's io->async_work), between fsm_snapshot and
 * fsm_snapshot_finalize: touches only rf->child and the snapshot fields the
 * loop leaves alone until finalize. Nothing to do for an inline snapshot. */
static int fsm_snapshot_async(struct raft_fsm *rfsm, struct raft_buffer *bufs[],
                              unsigned *n)
{
    struct tern_raft_fsm *rf = rfsm->data;
    if (!rf->snapshot_forked)
        return 0;
    uint8_t *data = NULL;
    size_t len = 0;
    int rc = tern_snapfork_collect(&rf->child, &data, &len, TERN_SNAPSHOT_SILENCE_MS,
                                   rf->snapshot_err);
    if (rc != TERN_OK)
        return rc == TERN_ENOMEM ? RAFT_NOMEM : RAFT_IOERR;
    rf->snapshot_len = len;
    int rv = snapshot_bufs(data, len, bufs, n);
    if (rv != 0)
        snprintf(rf->snapshot_err, sizeof(rf->snapshot_err), "out of memory");
    return rv;
}

/* libraft calls this once it has finished writing the snapshot (or failed to,
 * or could not start the thread-pool work). */
static int fsm_snapshot_finalize(struct raft_fsm *rfsm, struct raft_buffer *bufs[],
                                 unsigned *n)
{
    struct tern_raft_fsm *rf = rfsm->data;
    tern_snapfork_abort(&rf->child); /* a child not collected: killed, reaped */
    tern_snapfork_handle_close(&rf->handle);
    uint64_t us = uv_hrtime() / 1000 - rf->snapshot_started_us;
    if (us > rf->snapshot_max_us)
        rf->snapshot_max_us = us;
    if (rf->snapshot_err[0])
        TERN_LOGW("raft: snapshot %" PRIu64 " failed after %" PRIu64
                  " ms (loop stall %" PRIu64 " us): %s",
                  rf->snapshots, us / 1000, rf->stall_last_us, rf->snapshot_err);
    else
        TERN_LOGI("raft: snapshot %" PRIu64 " finished (%zu bytes, %" PRIu64
                  " ms, loop stall %" PRIu64 " us, %s)",
                  rf->snapshots, rf->snapshot_len, us / 1000, rf->stall_last_us,
                  rf->snapshot_forked ? "forked" : "inline");
    if (*bufs) {
        for (unsigned i = 0; i < *n; i++)
            free((*bufs)[i].base);
        free(*bufs);
    }
    *bufs = NULL;
    *n = 0;
    return 0;
}

static int fsm_restore(struct raft_fsm *rfsm, struct raft_buffer *rb)
{
    struct tern_raft_fsm *rf = rfsm->data;
    char errmsg[TERN_ERRMSG_SIZE] = "";
    int rv = tern_fsm_restore(rf->fsm, rb->base, rb->len, errmsg);
    if (rv != TERN_OK) {
        TERN_LOGE("raft: cannot restore snapshot: %s", errmsg);
        return RAFT_CORRUPT;
    }
    raft_free(rb->base);
    rf->snapshot_bytes_at = rf->applied_bytes;
    rf->restores++;
    return 0;
}

int tern_raft_fsm_init(struct tern_raft_fsm *rf, struct tern_fsm *fsm,
                       tern_raft_applied_fn on_applied, void *ctx)
{
    memset(rf, 0, sizeof(*rf));
    rf->fsm = fsm;
    rf->on_applied = on_applied;
    rf->ctx = ctx;
    rf->raft.version = 2;
    rf->raft.data = rf;
    rf->raft.apply = fsm_apply;
    rf->raft.snapshot = fsm_snapshot;
    rf->raft.snapshot_finalize = fsm_snapshot_finalize;
    rf->raft.restore = fsm_restore;
    tern_snapfork_init(&rf->child);
    rf->handle.pidfd = -1;
    return TERN_OK;
}

void tern_raft_fsm_cancel(struct tern_raft_fsm *rf)
{
    tern_snapfork_handle_kill(&rf->handle);
}

void tern_raft_fsm_set_fork(struct tern_raft_fsm *rf, int fork)
{
    bool on = fork != TERN_SNAPSHOT_FORK_NEVER;
    rf->fork = fork;
    rf->raft.version = on ? 3 : 2;
    rf->raft.snapshot_async = on ? fsm_snapshot_async : NULL;
}

/* Version 3 of cmds, or NULL when it would not be smaller than version 2 (or
 * memory is short: version 2 then). */
static uint8_t *entry_lz4(const uint8_t *cmds, size_t len, size_t *total)
{
    size_t bound = tern_lz4_bound(len);
    uint8_t *h = bound ? raft_malloc(TERN_RAFT_ENTRY_LZ4_HDR + bound + 7) : NULL;
    if (!h)
        return NULL;
    size_t stored = tern_lz4_pack(cmds, len, h + TERN_RAFT_ENTRY_LZ4_HDR,
                                  TERN_RAFT_ENTRY_LZ4_HDR - TERN_RAFT_ENTRY_HDR);
    size_t t = (TERN_RAFT_ENTRY_LZ4_HDR + stored + 7) & ~(size_t)7;
    if (!stored || t >= ((TERN_RAFT_ENTRY_HDR + len + 7) & ~(size_t)7)) {
        raft_free(h);
        return NULL;
    }
    memset(h, 0, TERN_RAFT_ENTRY_LZ4_HDR);
    h[0] = TERN_RAFT_ENTRY_LZ4;
    put32(h + 4, stored);
    put32(h + 8, len);
    memset(h + TERN_RAFT_ENTRY_LZ4_HDR + stored, 0, t - TERN_RAFT_ENTRY_LZ4_HDR - stored);
    /* libraft holds the entry in memory until a snapshot: only what it uses. */
    uint8_t *shrunk = raft_realloc(h, t);
    *total = t;
    return shrunk ? shrunk : h;
}

int tern_raft_entry_build(const uint8_t *cmds, size_t len, bool compress,
                          struct raft_buffer *out)
{
    if (len > UINT32_MAX - TERN_RAFT_ENTRY_HDR - 7)
        return TERN_ETOOBIG;
    size_t total;
    uint8_t *h = NULL;
    if (compress)
        h = entry_lz4(cmds, len, &total);
    if (h) {
        out->base = h;
        out->len = total;
        return TERN_OK;
    }
    total = (TERN_RAFT_ENTRY_HDR + len + 7) & ~(size_t)7;
    h = raft_calloc(1, total);
    if (!h)
        return TERN_ENOMEM;
    h[0] = TERN_RAFT_ENTRY_VERSION;
    put32(h + 4, len);
    if (len)
        memcpy(h + TERN_RAFT_ENTRY_HDR, cmds, len);
    out->base = h;
    out->len = total;
    return TERN_OK;
}
