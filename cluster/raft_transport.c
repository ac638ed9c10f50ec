/* See raft_transport.h. */
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <uv.h>

#include <linux/sockios.h>

#include "link.h"
#include "raft_frames.h"
#include "raft_transport.h"
#include "tern/error.h"
#include "tern/log.h"

/* raft_uv_tcp's handshake (libraft src/uv_tcp_connect.c, protocol 1): u64
 * protocol, u64 server id, u64 address length padded to 8, the address
 * NUL-padded; integers little-endian. */
#define HANDSHAKE_PROTOCOL 1
/* A connection attempt that has not completed by then fails. libraft keeps
 * queueing messages for the peer while it has no connection (a probe
 * AppendEntries per heartbeat, each holding every entry the peer lacks) and
 * trims that queue only when an attempt fails: to a node that drops packets, a
 * SYN would otherwise wait out the user timeout (link.h). Half a second covers a
 * SYN's round trip on any network a cluster should span. */
#define CONNECT_TIMEOUT_MS 500
/* With TLS, the handshake (one or two more round trips, a signature each side)
 * gets this long after the TCP connection is up. */
#define TLS_CONNECT_TIMEOUT_MS 1000

/* Unsent bytes an outgoing stream may hold, besides the snapshot it is
 * sending, before the peer counts as not reading (see struct tern_raft_pump).
 * Far above what a healthy link queues: the kernel's own buffers come first. */
#define PUMP_UNSENT_MAX (8u << 20)
#define PUMP_READ_BYTES (64u << 10)
/* A spare connection that failed (raft_transport.h) is made again this much
 * later: a peer that is down costs a SYN a second. */
#define SPARE_RETRY_MS 1000
/* Spare connections kept to each peer: a move (struct tern_raft_pump) takes
 * one, and its replacement needs a SYN's round trip across whatever the network
 * does then (a lost SYN: 1.5 s before the next attempt); a second one is there
 * for a stall that comes sooner (4 of 54 moves in three runs of the loss phases
 * waited 1.1-1.3 s for a spare with one). */
#define SPARES_PER_PEER 2
/* How often every pump's progress is looked at. */
#define PUMP_CHECK_MS 50u
/* A stream with segments in flight and none of them acknowledged for this long,
 * or for this many of its round trips if that is longer, waits on TCP's
 * retransmission timer (a lost segment's first retransmission comes after a
 * round trip or two; the timer is 0.3-1 s under loss and backs off): what libraft
 * writes next goes on the peer's spare connection instead (struct
 * tern_raft_pump). */
#define PUMP_MOVE_MS 250u
#define PUMP_MOVE_RTTS 3u
/* A spare whose peer acknowledged nothing (keep-alive answers come every
 * second) for this long is not moved to. */
#define SPARE_SILENT_MS 2500u
/* What a pump keeps of what it wrote, to write it again on the spare when it
 * moves: from the last message start the peer acknowledged, at most this much
 * (a stall holds a few kB; a stream with more unacknowledged stays where it
 * is). */
#define PUMP_RESEND_MAX (1u << 20)
/* While a pump holds a heartbeat or result back (raft_frames.h): how often it
 * looks whether its stream has sent everything before it. */
#define PUMP_RELEASE_MS 5u
#define PUMP_SLOW_MS 10u
/* Ciphertext a TLS link to a Raft peer may hold before it stops reading the
 * pump's output (link_tls.h): what is unsent then waits in the pump, where it
 * is bounded as over plain TCP. */
#define PUMP_TLS_UNSENT_MAX (1u << 20)

/* An outgoing connection, between libraft and the network. libraft writes to a
 * stream without any bound: to a peer that is alive but not reading (stopped,
 * or its buffers full) every heartbeat's AppendEntries - each holding every
 * entry the peer lacks - queued in libuv, and the leader's memory grew by
 * hundreds of MB in seconds (a SIGSTOPped old leader: 19 -> 241 MB in 5 s).
 * So libraft gets one end of a socketpair, and this pump moves what it writes
 * to the TCP connection (or, with TLS, to link_tls's plaintext end); it closes
 * both, libraft's next write fails, and libraft reconnects (its queue while
 * reconnecting holds three messages), when:
 *   - more than PUMP_UNSENT_MAX is unsent besides the snapshot being sent. An
 *     InstallSnapshot is one message of the whole state (231 MB at a million
 *     sessions), written in one burst: counted in this bound, it closed every
 *     link it went on, and a node added empty never caught up. It is bounded
 *     instead by the state the node already holds, one at a time per link
 *     (raft_frames.h drops a re-sent one while the first is unacknowledged);
 *   - nothing that was sent has been acknowledged for stall_ms (a few election
 *     timeouts) while something is, nothing is in flight (the peer's window
 *     is closed) and the peer's kernel still answers: a peer that stopped
 *     reading gives its stream up even when what it holds is under the
 *     bounds, which frees a snapshot stuck behind it. Data in flight, or
 *     window probes, that go unanswered are TCP's to retransmit and the user
 *     timeout's to give up on (link.h): on a lossy path a stream stalls for
 *     seconds now and then with its peer alive, and a new connection there
 *     costs more than the stall (docs/reliability.md, session 12). */
/*
 * On a lossy path one segment may be lost again and again: the stream then
 * waits one retransmission timeout after another (0.3 s, 0.6 s, 1 s) while the
 * peer, the path and everything after that segment are there, and every
 * commit that needs this peer waits with it (with one follower left, every
 * commit: docs/reliability.md, session 15). When a stream has had segments in
 * flight and none acknowledged for PUMP_MOVE_MS (or PUMP_MOVE_RTTS round
 * trips), the pump moves to the peer's spare connection (its handshake sent
 * long before, tern_raft_transport_warm), at a message boundary, with nothing
 * left in libuv's queue. It writes there again what the peer has not
 * acknowledged, from the start of the message the acknowledgements reached,
 * then what libraft writes next: so the peer gets every message in order on
 * the new stream, and nothing waits on the old one (a vote request, an
 * AppendEntries the next ones build on). The old socket is closed; its kernel
 * still sends what it held, then a FIN, and the peer's libraft reads that too:
 * Raft takes a message twice or late. Plain TCP only: with TLS there are no
 * spares. */
struct tern_raft_pump {
    struct tern_raft_transport *t;
    uv_stream_t *out;         /* TCP (raft_malloc'd by t_connect) or link_tls's end */
    void (*free_out)(void *); /* frees out once closed */
    uv_pipe_t pipe;           /* our end of the socketpair */
    int open;                 /* handles not closed yet */
    int down;
    raft_id peer;
    struct tern_raft_frames frames; /* drops re-sent probes (raft_frames.h) */
    /* Writes kept since the last message start the peer acknowledged (to
     * write again when moving), oldest first; sent_bytes is their total. */
    struct pump_write *sent, **sent_tail;
    uint64_t sent_bytes;
    uint64_t acked; /* of frames.out_total, at the last progress: */
    uint64_t progress_ms;
    struct tern_raft_pump *next;
};

struct pump_write {
    uv_write_t req;
    char *base;
    size_t len;
    uint64_t start; /* offset of base[0] in the forwarded stream */
    int boundary;   /* base[0] starts a message */
    int done;       /* in the kernel (or cancelled) */
    int kept;       /* on the pump's sent list (else freed once written) */
    struct pump_write *next;
};

struct tern_raft_connect {
    struct tern_raft_transport *t;
    struct raft_uv_connect *req;
    uv_tcp_t *tcp; /* raft_malloc'd: libraft frees the stream it is given */
    uv_timer_t timer;
    int open; /* handles (tcp, timer) not closed yet */
    uv_connect_t connect;
    uv_write_t write;
    uv_buf_t handshake;
    raft_id peer;
    int status;      /* != 0: failed or cancelled, reported from the close callback */
    uint64_t serial; /* tern_raft_transport_attempt */
    struct tern_link_tls *tls; /* the TLS handshake (the TCP handle is its) */
    struct tern_raft_connect *next;
};

static struct tern_raft_transport *of_inner(struct raft_uv_transport *inner)
{
    return inner->data;
}

static void unlink_conn(struct tern_raft_connect *r)
{
    for (struct tern_raft_connect **pp = &r->t->conns; *pp; pp = &(*pp)->next)
        if (*pp == r) {
            *pp = r->next;
            return;
        }
}

static void pumps_check(uv_timer_t *timer);
static void pumps_release(uv_timer_t *timer);
static void attempt_ended(struct tern_raft_transport *t, raft_id peer, uint64_t serial);

static int t_init(struct raft_uv_transport *outer, raft_id id, const char *address)
{
    struct tern_raft_transport *t = outer->impl;
    /* Room for the handshake's padding (raft_transport_tls.c reads at most 256). */
    if (strlen(address) >= sizeof(t->address) - 8) {
        snprintf(outer->errmsg, sizeof(outer->errmsg), "address too long");
        return RAFT_INVALID;
    }
    t->id = id;
    strcpy(t->address, address);
    int rv = t->inner.init(&t->inner, id, address);
    if (rv != 0) {
        memcpy(outer->errmsg, t->inner.errmsg, sizeof(outer->errmsg));
        return rv;
    }
    uv_timer_init(t->loop, &t->pump_timer);
    t->pump_timer.data = t;
    uv_timer_start(&t->pump_timer, pumps_check, PUMP_CHECK_MS, PUMP_CHECK_MS);
    uv_unref((uv_handle_t *)&t->pump_timer); /* keeps no loop running */
    uv_timer_init(t->loop, &t->release_timer);
    t->release_timer.data = t;
    uv_unref((uv_handle_t *)&t->release_timer);
    t->pump_timer_on = 1;
    return 0;
}

static void on_accept(struct raft_uv_transport *inner, raft_id id, const char *address,
                      struct uv_stream_s *stream)
{
    struct tern_raft_transport *t = of_inner(inner);
    if (stream && stream->type == UV_TCP)
        tern_link_tune((uv_tcp_t *)stream);
    t->accept_cb(&t->outer, id, address, stream);
}

static int t_listen(struct raft_uv_transport *outer, raft_uv_accept_cb cb)
{
    struct tern_raft_transport *t = outer->impl;
    t->accept_cb = cb;
    if (t->creds)
        return tern_raft_tls_listen(t);
    int rv = t->inner.listen(&t->inner, on_accept);
    if (rv != 0)
        memcpy(outer->errmsg, t->inner.errmsg, sizeof(outer->errmsg));
    return rv;
}

/* Once both handles are closed: a failed or cancelled attempt is reported. */
static void on_conn_closed(uv_handle_t *h)
{
    struct tern_raft_connect *r = h->data;
    if (--r->open > 0)
        return;
    if (r->status != 0) {
        r->req->cb(r->req, NULL, r->status);
        raft_free(r->tcp);
    }
    free(r->handshake.base);
    free(r);
}

static void conn_fail(struct tern_raft_connect *r, int status)
{
    unlink_conn(r);
    r->status = status;
    if (status != RAFT_CANCELED)
        attempt_ended(r->t, r->peer, r->serial);
    if (r->tls) {
        tern_link_tls_cancel(r->tls);
        r->tls = NULL;
    }
    if (r->tcp)
        uv_close((uv_handle_t *)r->tcp, on_conn_closed);
    uv_close((uv_handle_t *)&r->timer, on_conn_closed);
}

static void on_connect_timeout(uv_timer_t *timer)
{
    conn_fail(timer->data, RAFT_NOCONNECTION);
}

/* --- the pump --- */

static void pump_closed(uv_handle_t *h)
{
    struct tern_raft_pump *p = h->data;
    if (--p->open > 0)
        return;
    if (p->frames.dropped)
        TERN_LOGD("raft: link to node %llu: %llu re-sent probes dropped (%llu bytes)",
                  (unsigned long long)p->peer, (unsigned long long)p->frames.dropped,
                  (unsigned long long)p->frames.dropped_bytes);
    if (p->frames.snaps_dropped)
        TERN_LOGD("raft: link to node %llu: %llu re-sent snapshots dropped",
                  (unsigned long long)p->peer,
                  (unsigned long long)p->frames.snaps_dropped);
    p->t->coalesced += p->frames.coalesced;
    tern_raft_frames_free(&p->frames);
    while (p->sent) {
        struct pump_write *pw = p->sent;
        p->sent = pw->next;
        free(pw->base);
        free(pw);
    }
    p->free_out(p->out);
    free(p);
}

static void pump_down(struct tern_raft_pump *p, const char *why)
{
    if (p->down)
        return;
    p->down = 1;
    for (struct tern_raft_pump **pp = &p->t->pumps; *pp; pp = &(*pp)->next)
        if (*pp == p) {
            *pp = p->next;
            break;
        }
    if (why)
        TERN_LOGW("raft: link to node %llu: %s: closed (libraft reconnects)",
                  (unsigned long long)p->peer, why);
    uv_close((uv_handle_t *)&p->pipe, pump_closed);
    uv_close((uv_handle_t *)p->out, pump_closed);
}

static void pump_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    (void)h;
    (void)hint;
    buf->base = malloc(PUMP_READ_BYTES);
    buf->len = buf->base ? PUMP_READ_BYTES : 0;
}

/* The peer's end closed (FIN) or reset: its process is gone. */
static void pump_gone(struct tern_raft_pump *p, int status)
{
    if (!p->down && (status == UV_EOF || status == UV_ECONNRESET || status == UV_EPIPE) &&
        p->t->gone_cb)
        p->t->gone_cb(p->t->gone_data, p->peer);
}

static void pump_written(uv_write_t *w, int status)
{
    struct pump_write *pw = (struct pump_write *)w;
    struct tern_raft_pump *p = w->data;
    pw->done = 1;
    if (!pw->kept) {
        free(pw->base);
        free(pw);
    }
    if (status != 0 && status != UV_ECANCELED) {
        pump_gone(p, status);
        pump_down(p, uv_strerror(status));
    }
}

/* The kernel's view of p's TCP connection; 0 where there is none to ask (TLS:
 * p->out is link_tls's end). */
static int tcp_info_of(const uv_stream_t *s, struct tcp_info *ti)
{
    uv_os_fd_t fd;
    socklen_t len = sizeof(*ti);
    return s->type == UV_TCP && uv_fileno((const uv_handle_t *)s, &fd) == 0 &&
           getsockopt(fd, IPPROTO_TCP, TCP_INFO, ti, &len) == 0;
}

static int pump_tcp_info(const struct tern_raft_pump *p, struct tcp_info *ti)
{
    return tcp_info_of(p->out, ti);
}

/* The stream is backed up: bytes of it not sent yet (libuv's queue, the
 * kernel's unsent bytes) and, over TCP, no acknowledgement from the peer for
 * PUMP_SLOW_MS. A fast link (loopback at full load) has unsent bytes now and
 * then too, and its acknowledgements come within microseconds: holding there
 * would only delay results. */
static int pump_busy(struct tern_raft_pump *p)
{
    int queued = uv_stream_get_write_queue_size(p->out) > 0;
    uv_os_fd_t fd;
    if (p->out->type != UV_TCP || uv_fileno((uv_handle_t *)p->out, &fd) != 0)
        return queued;
    int unsent = 0;
    if (!queued && (ioctl(fd, SIOCOUTQNSD, &unsent) != 0 || unsent <= 0))
        return 0;
    struct tcp_info ti;
    return pump_tcp_info(p, &ti) && ti.tcpi_last_ack_recv >= PUMP_SLOW_MS;
}

/* Bytes written to the peer that it has not acknowledged: libuv's queue and
 * the kernel's send queue. */
static uint64_t pump_unacked(struct tern_raft_pump *p)
{
    uint64_t n = uv_stream_get_write_queue_size(p->out);
    uv_os_fd_t fd;
    int q = 0;
    if (uv_fileno((uv_handle_t *)p->out, &fd) == 0 && ioctl(fd, SIOCOUTQ, &q) == 0 &&
        q > 0)
        n += (uint64_t)q;
    return n;
}

/* Past the bound on what is unsent besides the snapshot (struct tern_raft_pump). */
static void pump_check_unsent(struct tern_raft_pump *p)
{
    uint64_t unsent = uv_stream_get_write_queue_size(p->out);
    uint64_t snap = tern_raft_frames_snapshot_unsent(&p->frames, unsent);
    if (unsent - snap > PUMP_UNSENT_MAX)
        pump_down(p, "peer not reading (8 MiB unsent besides a snapshot)");
}

uint64_t tern_raft_transport_attempt(const struct tern_raft_transport *t, raft_id peer)
{
    for (const struct tern_raft_connect *r = t->conns; r; r = r->next)
        if (r->peer == peer && r->status == 0)
            return r->serial;
    for (size_t i = 0; i < sizeof(t->failed) / sizeof(t->failed[0]); i++)
        if (t->failed[i].peer == peer)
            return t->failed[i].serial;
    return 0;
}

/* serial 0: the peer's last attempt succeeded. A record that finds no slot is
 * left out: the peer then counts as not connecting (libraft gets everything). */
static void attempt_ended(struct tern_raft_transport *t, raft_id peer, uint64_t serial)
{
    size_t n = sizeof(t->failed) / sizeof(t->failed[0]), slot = n;
    for (size_t i = 0; i < n; i++) {
        if (t->failed[i].peer == peer) {
            slot = i;
            break;
        }
        if (t->failed[i].peer == 0 && slot == n)
            slot = i;
    }
    if (slot == n)
        return;
    t->failed[slot].peer = serial ? peer : 0;
    t->failed[slot].serial = serial;
}

/* Whether p's peer is there but not reading: its window is closed on what p
 * holds (nothing of it in flight) and its kernel answered within ms (window
 * probes are answered). A closed window whose probes go unanswered is a lossy
 * or dead path: the user timeout's (link.h). Over TLS (p->out is link_tls's
 * end) none of it can be seen: yes. */
static int pump_not_reading(const struct tern_raft_pump *p, uint64_t ms)
{
    struct tcp_info ti;
    return !pump_tcp_info(p, &ti) || (ti.tcpi_unacked == 0 && ti.tcpi_last_ack_recv < ms);
}

/* Frees the writes kept that a move would not write again: every one before the
 * last that starts a message and is acknowledged from its start (or all, when
 * all are acknowledged and end with a message). Past PUMP_RESEND_MAX, written
 * ones are freed once acknowledged, whole or not: the stream then cannot move
 * until a message start leads the list again. */
static void pump_trim(struct tern_raft_pump *p, uint64_t acked)
{
    struct pump_write *h;
    while ((h = p->sent) && h->done) {
        struct pump_write *n = h->next;
        int whole = h->start + h->len <= acked;
        if (!((n && n->boundary && n->start <= acked) ||
              (!n && whole && tern_raft_frames_at_boundary(&p->frames)) ||
              (whole && p->sent_bytes > PUMP_RESEND_MAX)))
            break;
        p->sent = n;
        if (!n)
            p->sent_tail = &p->sent;
        p->sent_bytes -= h->len;
        free(h->base);
        free(h);
    }
}

static int pump_move(struct tern_raft_pump *p, uint64_t stalled_ms);

/* Whether p's segments in flight have waited on retransmissions for
 * stalled_ms: long enough to carry on elsewhere (PUMP_MOVE_MS). */
static int pump_waits_on_retransmits(const struct tern_raft_pump *p, uint64_t stalled_ms)
{
    struct tcp_info ti;
    if (!pump_tcp_info(p, &ti) || ti.tcpi_unacked == 0)
        return 0;
    uint64_t rtts = (uint64_t)ti.tcpi_rtt * PUMP_MOVE_RTTS / 1000;
    return stalled_ms >= (rtts > PUMP_MOVE_MS ? rtts : PUMP_MOVE_MS);
}

/* Every PUMP_CHECK_MS: a pump whose segments in flight wait on retransmissions
 * moves to its spare connection; one whose peer acknowledged nothing for
 * stall_ms while it holds unacknowledged bytes, and is not reading them, is
 * down. */
static void pumps_check(uv_timer_t *timer)
{
    struct tern_raft_transport *t = timer->data;
    uint64_t now = uv_now(t->loop);
    struct tern_raft_pump *next;
    for (struct tern_raft_pump *p = t->pumps; p; p = next) {
        next = p->next; /* pump_down unlinks p */
        uint64_t unacked = pump_unacked(p);
        uint64_t acked =
            p->frames.out_total > unacked ? p->frames.out_total - unacked : 0;
        pump_trim(p, acked);
        if (unacked == 0 || acked != p->acked) {
            p->acked = acked;
            p->progress_ms = now;
        } else if (pump_waits_on_retransmits(p, now - p->progress_ms) &&
                   pump_move(p, now - p->progress_ms)) {
            continue;
        } else if (now - p->progress_ms >= t->stall_ms &&
                   pump_not_reading(p, t->stall_ms)) {
            char why[96];
            snprintf(
                why, sizeof(why), "no progress for %llu ms (%llu bytes unacknowledged)",
                (unsigned long long)(now - p->progress_ms), (unsigned long long)unacked);
            pump_down(p, why);
        }
    }
}

/* Writes out (malloc'd, len > 0; the pump's then), the last len bytes the
 * frames forwarded, to the peer; boundary: they start a message. Kept on the
 * sent list while a move may need them again (pump_trim). */
static void pump_write_out(struct tern_raft_pump *p, char *out, size_t len, int boundary)
{
    struct pump_write *pw = calloc(1, sizeof(*pw));
    uv_buf_t ob = uv_buf_init(out, (unsigned)len);
    if (!pw || uv_write(&pw->req, p->out, &ob, 1, pump_written) != 0) {
        free(pw);
        free(out);
        pump_down(p, "cannot write");
        return;
    }
    pw->base = out;
    pw->len = len;
    pw->start = p->frames.out_total - len;
    pw->boundary = boundary;
    pw->kept = 1;
    pw->req.data = p;
    *p->sent_tail = pw;
    p->sent_tail = &pw->next;
    p->sent_bytes += len;
    pump_check_unsent(p);
}

/* Every PUMP_RELEASE_MS while any pump holds a heartbeat or result back: out
 * it goes once its stream is not busy. */
static void pumps_release(uv_timer_t *timer)
{
    struct tern_raft_transport *t = timer->data;
    int holding = 0;
    struct tern_raft_pump *next;
    for (struct tern_raft_pump *p = t->pumps; p; p = next) {
        next = p->next; /* pump_write_out may take p down */
        if (!p->frames.held_len)
            continue;
        if (pump_busy(p)) {
            holding = 1;
            continue;
        }
        char *out = malloc(TERN_RAFT_FRAMES_HELD_MAX);
        if (!out) {
            holding = 1;
            continue;
        }
        int boundary = tern_raft_frames_at_boundary(&p->frames);
        pump_write_out(p, out, tern_raft_frames_release(&p->frames, (uint8_t *)out),
                       boundary);
    }
    if (!holding)
        uv_timer_stop(timer);
}

/* What libraft wrote: out on the TCP connection, less re-sent probes and
 * superseded heartbeats and results, unless the peer stopped taking it. */
static void pump_from_raft(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct tern_raft_pump *p = s->data;
    if (n <= 0) {
        free(buf->base);
        if (n < 0)
            pump_down(p, NULL); /* libraft closed its end */
        return;
    }
    uint64_t unacked = pump_unacked(p);
    uint64_t acked = p->frames.out_total > unacked ? p->frames.out_total - unacked : 0;
    pump_trim(p, acked);
    char *out = malloc(tern_raft_frames_out_max(&p->frames, (size_t)n));
    if (!out) {
        free(buf->base);
        pump_down(p, "out of memory");
        return;
    }
    int was_raw = p->frames.raw;
    int boundary = tern_raft_frames_at_boundary(&p->frames);
    size_t len =
        tern_raft_frames_feed(&p->frames, (const uint8_t *)buf->base, (size_t)n,
                              (uint8_t *)out, acked, uv_now(p->t->loop), pump_busy(p));
    free(buf->base);
    if (p->frames.held_len && !uv_is_active((uv_handle_t *)&p->t->release_timer))
        uv_timer_start(&p->t->release_timer, pumps_release, PUMP_RELEASE_MS,
                       PUMP_RELEASE_MS);
    if (p->frames.raw && !was_raw)
        TERN_LOGW(
            "raft: link to node %llu: message framing not understood: re-sent probes "
            "are not dropped and snapshots not told apart on this connection",
            (unsigned long long)p->peer);
    if (len == 0) {
        free(out);
        return;
    }
    pump_write_out(p, out, len, boundary);
}

/* The peer never sends on our outgoing connection: only its end shows here. */
static void pump_from_peer(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    free(buf->base);
    if (n < 0) {
        pump_gone(s->data, (int)n);
        pump_down(s->data, n == UV_EOF ? NULL : uv_strerror((int)n));
    }
}

/* libraft's end of a new socketpair, with the pump on the other moving its bytes
 * to `out`, which is the pump's then (closed, and freed with free_out). NULL on
 * error: out is still the caller's. */
static uv_stream_t *pump_start(struct tern_raft_transport *t, uv_stream_t *out,
                               void (*free_out)(void *), raft_id peer)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0)
        return NULL;
    struct tern_raft_pump *p = calloc(1, sizeof(*p));
    uv_pipe_t *theirs = raft_malloc(sizeof(*theirs)); /* libraft frees it */
    if (!p || !theirs || uv_pipe_init(t->loop, theirs, 0) != 0) {
        free(p);
        raft_free(theirs);
        close(sv[0]);
        close(sv[1]);
        return NULL;
    }
    if (uv_pipe_open(theirs, sv[0]) != 0) {
        close(sv[0]);
        close(sv[1]);
        uv_close((uv_handle_t *)theirs, (uv_close_cb)raft_free);
        free(p);
        return NULL;
    }
    *p = (struct tern_raft_pump){.t = t,
                                 .out = out,
                                 .free_out = free_out,
                                 .open = 2,
                                 .peer = peer,
                                 .progress_ms = uv_now(t->loop)};
    tern_raft_frames_init(&p->frames);
    uv_pipe_init(t->loop, &p->pipe, 0);
    p->pipe.data = p;
    out->data = p;
    p->sent_tail = &p->sent;
    p->next = t->pumps;
    t->pumps = p;
    attempt_ended(t, peer, 0); /* libraft gets a stream: it is not connecting */
    if (uv_pipe_open(&p->pipe, sv[1]) != 0) {
        close(sv[1]);
        pump_down(p, "cannot open the pipe");
    } else if (uv_read_start((uv_stream_t *)&p->pipe, pump_alloc, pump_from_raft) != 0 ||
               uv_read_start(out, pump_alloc, pump_from_peer) != 0) {
        pump_down(p, "cannot read");
    }
    return (uv_stream_t *)theirs; /* after pump_down, libraft's first write fails */
}

static void conn_up(struct tern_raft_connect *r);

static void on_handshake_written(uv_write_t *w, int status)
{
    struct tern_raft_connect *r = w->data;
    if (r->status != 0)
        return; /* cancelled: on_conn_closed reports it */
    if (status != 0) {
        conn_fail(r, RAFT_NOCONNECTION);
        return;
    }
    conn_up(r);
}

/* The connection is up, handshake sent: the pump takes it, libraft gets its end. */
static void conn_up(struct tern_raft_connect *r)
{
    uv_stream_t *stream = pump_start(r->t, (uv_stream_t *)r->tcp, raft_free, r->peer);
    if (!stream) {
        conn_fail(r, RAFT_NOMEM);
        return;
    }
    unlink_conn(r);
    struct raft_uv_connect *req = r->req;
    r->open--; /* the TCP handle is the pump's now; r goes with the timer */
    uv_close((uv_handle_t *)&r->timer, on_conn_closed);
    req->cb(req, stream, 0);
}

static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* raft_uv_tcp's handshake for this node, in a calloc'd buffer. */
static uint8_t *handshake_new(const struct tern_raft_transport *t, size_t *len)
{
    size_t alen = (strlen(t->address) + 1 + 7) / 8 * 8;
    *len = 24 + alen;
    uint8_t *b = calloc(1, *len);
    if (!b)
        return NULL;
    put64(b, HANDSHAKE_PROTOCOL);
    put64(b + 8, t->id);
    put64(b + 16, alen);
    memcpy(b + 24, t->address, strlen(t->address));
    return b;
}

static void free_pipe(void *p)
{
    free(p);
}

/* TLS is up with the node dialled: the Raft handshake goes into the plaintext
 * end (a fresh socketpair takes a few hundred bytes), and libraft gets a pump to
 * it, bounded as over plain TCP. */
static void on_tls_up(void *data, int status, int fd, uint32_t peer_id)
{
    struct tern_raft_connect *r = data;
    (void)peer_id; /* link_tls checked it is r->peer */
    r->tls = NULL;
    if (status != 0) {
        conn_fail(r, RAFT_NOCONNECTION);
        return;
    }
    size_t len;
    uint8_t *b = handshake_new(r->t, &len);
    uv_pipe_t *pipe = malloc(sizeof(*pipe)); /* the pump's, once it starts */
    if (!b || !pipe || write(fd, b, len) != (ssize_t)len ||
        uv_pipe_init(r->t->loop, pipe, 0) != 0) {
        free(b);
        free(pipe);
        close(fd);
        conn_fail(r, RAFT_NOCONNECTION);
        return;
    }
    free(b);
    uv_stream_t *stream = NULL;
    if (uv_pipe_open(pipe, fd) != 0)
        close(fd);
    else
        stream = pump_start(r->t, (uv_stream_t *)pipe, free_pipe, r->peer);
    if (!stream) {
        uv_close((uv_handle_t *)pipe, (uv_close_cb)free);
        conn_fail(r, RAFT_NOCONNECTION);
        return;
    }
    unlink_conn(r);
    struct raft_uv_connect *req = r->req;
    uv_close((uv_handle_t *)&r->timer, on_conn_closed);
    req->cb(req, stream, 0);
}

static void start_tls(struct tern_raft_connect *r)
{
    struct tern_link_tls_opts o = {
        .ctx = r->t->creds->client,
        .expect_id = (uint32_t)r->peer,
        .timeout_ms = TLS_CONNECT_TIMEOUT_MS,
        .unsent_max = PUMP_TLS_UNSENT_MAX,
        .close_when_full = false, /* the pump in front bounds what waits */
        .free_tcp = raft_free,
    };
    uv_tcp_t *tcp = r->tcp;
    r->tcp = NULL; /* link_tls's now, whatever happens */
    r->open--;
    r->tls = tern_link_tls_start(&r->t->tls, r->t->loop, tcp, &o, on_tls_up, r);
    if (!r->tls) {
        conn_fail(r, RAFT_NOMEM);
        return;
    }
    /* The timer bounds the handshake now (link_tls's own is the same). */
    uv_timer_start(&r->timer, on_connect_timeout, TLS_CONNECT_TIMEOUT_MS + 100, 0);
}

static void on_connected(uv_connect_t *c, int status)
{
    struct tern_raft_connect *r = c->data;
    if (r->status != 0)
        return;
    if (status != 0) {
        conn_fail(r, RAFT_NOCONNECTION);
        return;
    }
    if (r->t->creds) {
        start_tls(r);
        return;
    }
    size_t len;
    uint8_t *b = handshake_new(r->t, &len);
    if (!b) {
        conn_fail(r, RAFT_NOMEM);
        return;
    }
    r->handshake = uv_buf_init((char *)b, (unsigned)len);
    r->write.data = r;
    if (uv_write(&r->write, (uv_stream_t *)r->tcp, &r->handshake, 1,
                 on_handshake_written) != 0)
        conn_fail(r, RAFT_NOCONNECTION);
}

/* --- spare connections (raft_transport.h, tern_raft_transport_warm) --- */

#define SPARE_ADDRESS_MAX 256

struct tern_raft_spare {
    struct tern_raft_transport *t;
    raft_id peer;
    char address[SPARE_ADDRESS_MAX];
    struct sockaddr_in sa;
    uv_tcp_t *tcp; /* raft_malloc'd (libraft frees what it is given); NULL: none */
    uv_connect_t connect;
    uv_write_t write;
    uv_buf_t handshake;
    uv_timer_t timer; /* the attempt's timeout, then the next attempt */
    int ready;        /* connected, handshake sent */
    struct tern_raft_spare *next;
};

static void spare_connect(struct tern_raft_spare *s);

static void spare_retry(uv_timer_t *tm)
{
    spare_connect(tm->data);
}

static void spare_drop(struct tern_raft_spare *s, uint64_t retry_ms)
{
    if (s->tcp) {
        uv_close((uv_handle_t *)s->tcp, (uv_close_cb)raft_free);
        s->tcp = NULL;
    }
    s->ready = 0;
    free(s->handshake.base);
    s->handshake.base = NULL;
    if (!s->t->closing)
        uv_timer_start(&s->timer, spare_retry, retry_ms, 0);
}

static void spare_timeout(uv_timer_t *tm)
{
    spare_drop(tm->data, SPARE_RETRY_MS);
}

/* The peer never sends on it: only its end (closed, reset, timed out) shows. */
static void spare_on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
    free(buf->base);
    if (n < 0)
        spare_drop(st->data, SPARE_RETRY_MS);
}

static void spare_on_written(uv_write_t *w, int status)
{
    if (status == UV_ECANCELED)
        return; /* dropped or closing: w's spare may be gone */
    struct tern_raft_spare *s = w->data;
    free(s->handshake.base);
    s->handshake.base = NULL;
    if (status != 0 ||
        uv_read_start((uv_stream_t *)s->tcp, pump_alloc, spare_on_read) != 0) {
        spare_drop(s, SPARE_RETRY_MS);
        return;
    }
    uv_timer_stop(&s->timer);
    s->ready = 1;
}

static void spare_on_connected(uv_connect_t *c, int status)
{
    if (status == UV_ECANCELED)
        return;
    struct tern_raft_spare *s = c->data;
    size_t len;
    uint8_t *b = status == 0 ? handshake_new(s->t, &len) : NULL;
    if (!b) {
        spare_drop(s, SPARE_RETRY_MS);
        return;
    }
    s->handshake = uv_buf_init((char *)b, (unsigned)len);
    s->write.data = s;
    if (uv_write(&s->write, (uv_stream_t *)s->tcp, &s->handshake, 1, spare_on_written) !=
        0)
        spare_drop(s, SPARE_RETRY_MS);
}

static void spare_connect(struct tern_raft_spare *s)
{
    if (s->t->closing || s->tcp)
        return;
    s->tcp = raft_malloc(sizeof(*s->tcp));
    if (!s->tcp || uv_tcp_init_ex(s->t->loop, s->tcp, AF_INET) != 0) {
        raft_free(s->tcp);
        s->tcp = NULL;
        uv_timer_start(&s->timer, spare_retry, SPARE_RETRY_MS, 0);
        return;
    }
    s->tcp->data = s;
    tern_link_tune(s->tcp);
    s->connect.data = s;
    if (uv_tcp_connect(&s->connect, s->tcp, (struct sockaddr *)&s->sa,
                       spare_on_connected) != 0) {
        spare_drop(s, SPARE_RETRY_MS);
        return;
    }
    uv_timer_start(&s->timer, spare_timeout, CONNECT_TIMEOUT_MS, 0);
}

int tern_raft_transport_warm(struct tern_raft_transport *t, raft_id peer,
                             const char *address)
{
    if (t->creds || peer == t->id)
        return TERN_OK; /* TLS: every connection is made on demand */
    unsigned have = 0;
    for (struct tern_raft_spare *s = t->spares; s; s = s->next)
        have += s->peer == peer;
    struct sockaddr_in sa;
    if (strlen(address) >= SPARE_ADDRESS_MAX || tern_link_ipv4(address, &sa) != TERN_OK)
        return TERN_EINVAL;
    for (; have < SPARES_PER_PEER; have++) {
        struct tern_raft_spare *s = calloc(1, sizeof(*s));
        if (!s)
            return TERN_ENOMEM;
        s->t = t;
        s->peer = peer;
        s->sa = sa;
        strcpy(s->address, address);
        uv_timer_init(t->loop, &s->timer);
        s->timer.data = s;
        s->next = t->spares;
        t->spares = s;
        spare_connect(s);
    }
    return TERN_OK;
}

static void spare_handed(uv_timer_t *tm)
{
    struct tern_raft_connect *r = tm->data;
    if (r->status == 0)
        conn_up(r);
}

/* libraft asks for a connection to a peer with a spare ready: it gets that one
 * (on the next loop turn, as from a real attempt) and a new spare is made. */
static struct tern_raft_connect *spare_take(struct tern_raft_transport *t, raft_id id,
                                            const char *address)
{
    struct tern_raft_spare *s = t->spares;
    while (s && (s->peer != id || !s->ready || strcmp(s->address, address) != 0))
        s = s->next;
    if (!s)
        return NULL;
    struct tern_raft_connect *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    uv_read_stop((uv_stream_t *)s->tcp);
    r->t = t;
    r->peer = id;
    r->tcp = s->tcp;
    r->tcp->data = r;
    s->tcp = NULL;
    s->ready = 0;
    uv_timer_init(t->loop, &r->timer);
    r->timer.data = r;
    r->open = 2;
    uv_timer_start(&r->timer, spare_handed, 0, 0);
    r->next = t->conns;
    t->conns = r;
    r->serial = ++t->attempts;
    t->spares_taken++;
    spare_connect(s);
    return r;
}

/* A spare to peer, ready, whose peer answered last (keep-alives), within
 * SPARE_SILENT_MS; or NULL. */
static struct tern_raft_spare *spare_alive(struct tern_raft_transport *t, raft_id peer)
{
    struct tern_raft_spare *best = NULL;
    uint32_t best_ms = SPARE_SILENT_MS;
    for (struct tern_raft_spare *s = t->spares; s; s = s->next) {
        struct tcp_info ti;
        if (s->peer == peer && s->ready && tcp_info_of((uv_stream_t *)s->tcp, &ti) &&
            ti.tcpi_last_ack_recv < best_ms) {
            best = s;
            best_ms = ti.tcpi_last_ack_recv;
        }
    }
    return best;
}

/* struct tern_raft_pump: p carries on over its peer's spare connection, which
 * gets again what the peer has not acknowledged. 0 when it cannot now (no spare
 * ready, a message half written, libuv still holding some of the stream, more
 * unacknowledged than a move writes again). */
static int pump_move(struct tern_raft_pump *p, uint64_t stalled_ms)
{
    struct tern_raft_transport *t = p->t;
    struct tern_raft_spare *s = spare_alive(t, p->peer);
    if (!s || p->out->type != UV_TCP || !tern_raft_frames_at_boundary(&p->frames) ||
        uv_stream_get_write_queue_size(p->out) > 0)
        return 0;
    uint64_t unacked = pump_unacked(p);
    pump_trim(p, p->frames.out_total - unacked);
    if ((p->sent && !p->sent->boundary) || p->sent_bytes > PUMP_RESEND_MAX)
        return 0;
    struct pump_write *again = NULL;
    if (p->sent_bytes) {
        again = calloc(1, sizeof(*again));
        char *b = again ? malloc(p->sent_bytes) : NULL;
        if (!b) {
            free(again);
            return 0;
        }
        size_t at = 0;
        for (struct pump_write *pw = p->sent; pw; pw = pw->next) {
            memcpy(b + at, pw->base, pw->len);
            at += pw->len;
        }
        again->base = b;
        again->len = at;
        again->req.data = p;
    }
    uv_stream_t *next = (uv_stream_t *)s->tcp;
    uv_read_stop(next);
    next->data = p;
    uv_buf_t ob =
        again ? uv_buf_init(again->base, (unsigned)again->len) : uv_buf_init(NULL, 0);
    if (uv_read_start(next, pump_alloc, pump_from_peer) != 0 ||
        (again && uv_write(&again->req, next, &ob, 1, pump_written) != 0)) {
        uv_read_stop(next);
        next->data = s;
        uv_read_start(next, pump_alloc, spare_on_read);
        if (again)
            free(again->base);
        free(again);
        return 0;
    }
    s->tcp = NULL;
    s->ready = 0;
    spare_connect(s);
    /* Closed with its receive queue empty (the peer sends nothing here), so the
     * kernel sends what it holds, then a FIN; no reset. */
    uv_read_stop(p->out);
    uv_close((uv_handle_t *)p->out, (uv_close_cb)raft_free);
    p->out = next;
    p->acked = p->frames.out_total - (again ? again->len : 0);
    p->progress_ms = uv_now(t->loop);
    t->moved++;
    TERN_LOGI("raft: link to node %llu: nothing acknowledged for %llu ms (%llu bytes "
              "waiting): carrying on over the spare connection, %zu bytes written again",
              (unsigned long long)p->peer, (unsigned long long)stalled_ms,
              (unsigned long long)unacked, again ? again->len : (size_t)0);
    return 1;
}

static int t_connect(struct raft_uv_transport *outer, struct raft_uv_connect *req,
                     raft_id id, const char *address, raft_uv_connect_cb cb)
{
    struct tern_raft_transport *t = outer->impl;
    struct sockaddr_in sa;
    if (tern_link_ipv4(address, &sa) != TERN_OK)
        return RAFT_NOCONNECTION;
    struct tern_raft_connect *r = spare_take(t, id, address);
    if (r) {
        r->req = req;
        req->cb = cb;
        return 0;
    }
    r = calloc(1, sizeof(*r));
    if (!r)
        return RAFT_NOMEM;
    r->tcp = raft_malloc(sizeof(*r->tcp));
    if (!r->tcp) {
        free(r);
        return RAFT_NOMEM;
    }
    r->t = t;
    r->req = req;
    r->peer = id;
    req->cb = cb;
    /* The socket exists now, so the options (the user timeout in particular)
     * apply to the SYN too. */
    if (uv_tcp_init_ex(t->loop, r->tcp, AF_INET) != 0) {
        raft_free(r->tcp);
        free(r);
        return RAFT_NOCONNECTION;
    }
    r->tcp->data = r;
    tern_link_tune(r->tcp);
    r->connect.data = r;
    if (uv_tcp_connect(&r->connect, r->tcp, (struct sockaddr *)&sa, on_connected) != 0) {
        /* Its callback never runs: closed without a report, as libraft expects
         * for an error returned here. */
        uv_close((uv_handle_t *)r->tcp, (uv_close_cb)raft_free);
        free(r);
        return RAFT_NOCONNECTION;
    }
    uv_timer_init(t->loop, &r->timer);
    r->timer.data = r;
    r->open = 2;
    uv_timer_start(&r->timer, on_connect_timeout, CONNECT_TIMEOUT_MS, 0);
    r->next = t->conns;
    t->conns = r;
    r->serial = ++t->attempts;
    return 0;
}

static void free_spare(uv_handle_t *h)
{
    free(h->data);
}

static void on_closed(struct raft_uv_transport *inner)
{
    struct tern_raft_transport *t = of_inner(inner);
    if (t->close_cb)
        t->close_cb(&t->outer);
}

static void t_close(struct raft_uv_transport *outer, raft_uv_transport_close_cb cb)
{
    struct tern_raft_transport *t = outer->impl;
    t->close_cb = cb;
    t->closing = 1;
    while (t->spares) {
        struct tern_raft_spare *sp = t->spares;
        t->spares = sp->next;
        if (sp->tcp)
            uv_close((uv_handle_t *)sp->tcp, (uv_close_cb)raft_free);
        free(sp->handshake.base);
        uv_close((uv_handle_t *)&sp->timer, (uv_close_cb)free_spare);
    }
    while (t->conns)
        conn_fail(t->conns, RAFT_CANCELED);
    while (t->pumps)
        pump_down(t->pumps, NULL);
    if (t->pump_timer_on) {
        t->pump_timer_on = 0;
        uv_close((uv_handle_t *)&t->pump_timer, NULL);
        uv_close((uv_handle_t *)&t->release_timer, NULL);
    }
    tern_raft_tls_close(t);
    t->inner.close(&t->inner, on_closed);
}

int tern_raft_transport_init(struct tern_raft_transport *t, struct uv_loop_s *loop,
                             const struct tern_link_creds *creds)
{
    memset(t, 0, sizeof(*t));
    t->creds = creds;
    t->tls.what = "raft";
    t->stall_ms = TERN_RAFT_PUMP_STALL_MS_MIN;
    int rv = raft_uv_tcp_init(&t->inner, loop);
    if (rv != 0)
        return rv;
    t->loop = loop;
    t->inner.data = t;
    t->outer.impl = t;
    t->outer.init = t_init;
    t->outer.listen = t_listen;
    t->outer.connect = t_connect;
    t->outer.close = t_close;
    return 0;
}

void tern_raft_transport_close(struct tern_raft_transport *t)
{
    raft_uv_tcp_close(&t->inner);
}

uint64_t tern_raft_transport_acked_ms(const struct tern_raft_transport *t, raft_id peer)
{
    uint64_t best = UINT64_MAX;
    for (const struct tern_raft_pump *p = t->pumps; p; p = p->next) {
        struct tcp_info ti;
        if (p->peer == peer && !p->down && pump_tcp_info(p, &ti) &&
            ti.tcpi_last_ack_recv < best)
            best = ti.tcpi_last_ack_recv;
    }
    return best;
}

uint64_t tern_raft_transport_moved(const struct tern_raft_transport *t)
{
    return t->moved;
}

uint64_t tern_raft_transport_coalesced(const struct tern_raft_transport *t)
{
    uint64_t n = t->coalesced;
    for (const struct tern_raft_pump *p = t->pumps; p; p = p->next)
        n += p->frames.coalesced;
    return n;
}
