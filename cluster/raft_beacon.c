/* See raft_beacon.h. */
#include <netinet/in.h>
#include <string.h>

#include "link.h"
#include "raft_beacon.h"
#include "raft_recv.h"
#include "raft_timing.h"
#include "tern/error.h"
#include "tern/log.h"

#define MAGIC "TBCN"

void tern_raft_beacon_encode(const struct tern_raft_beacon_frame *f, struct tern_wbuf *w)
{
    tern_wbuf_put_bytes(w, MAGIC, 4);
    tern_wbuf_put_u8(w, (uint8_t)f->kind);
    tern_wbuf_put_bytes(w, "\0\0\0", 3);
    tern_wbuf_put_u64(w, f->term);
    tern_wbuf_put_u64(w, f->from);
    tern_wbuf_put_u64(w, f->to);
}

int tern_raft_beacon_decode(const uint8_t *in, size_t len,
                            struct tern_raft_beacon_frame *f)
{
    if (len != TERN_RAFT_BEACON_SIZE)
        return -1;
    struct tern_rbuf r;
    tern_rbuf_init(&r, in, len);
    const uint8_t *magic = tern_rbuf_get_bytes(&r, 4);
    f->kind = tern_rbuf_get_u8(&r);
    const uint8_t *pad = tern_rbuf_get_bytes(&r, 3);
    f->term = tern_rbuf_get_u64(&r);
    f->from = tern_rbuf_get_u64(&r);
    f->to = tern_rbuf_get_u64(&r);
    if (r.err || memcmp(magic, MAGIC, 4) != 0 || pad[0] || pad[1] || pad[2] ||
        (f->kind != TERN_RAFT_BEACON_PING && f->kind != TERN_RAFT_BEACON_ANSWER) ||
        f->from == 0 || f->to == 0)
        return -1;
    return 0;
}

static const struct raft_server *member(const struct raft *r, raft_id id)
{
    for (unsigned i = 0; i < r->configuration.n; i++)
        if (r->configuration.servers[i].id == id)
            return &r->configuration.servers[i];
    return NULL;
}

static void send_frame(struct tern_raft_beacon *b, unsigned kind, raft_id to,
                       const struct sockaddr_in *sa)
{
    struct tern_raft_beacon_frame f = {
        .kind = kind, .term = b->r->current_term, .from = b->r->id, .to = to};
    tern_wbuf_reset(&b->out);
    tern_raft_beacon_encode(&f, &b->out);
    if (b->out.err)
        return;
    uv_buf_t buf = uv_buf_init((char *)b->out.buf, (unsigned)b->out.len);
    /* A datagram the kernel cannot take now is one of many: no queue. */
    if (uv_udp_try_send(&b->udp, &buf, 1, (const struct sockaddr *)sa) > 0 &&
        kind == TERN_RAFT_BEACON_PING)
        b->sent++;
}

/* Whether libraft heard peer within the bridge (raft_beacon.h). */
static int bridged(const struct tern_raft_beacon *b, raft_id peer)
{
    return tern_raft_recv_heard_ms(b->r->io, peer) <
           (uint64_t)b->election_ms * TERN_RAFT_BEACON_BRIDGE;
}

int tern_raft_beacon_keeps(const struct raft *r, const struct tern_raft_beacon_frame *f)
{
    if (f->kind != TERN_RAFT_BEACON_PING || r->state != RAFT_FOLLOWER ||
        f->term != r->current_term || f->to != r->id)
        return 0;
    /* Its leader, or the node it voted for in this term before an AppendEntries
     * named a leader: under loss the first one may wait seconds behind a stalled
     * stream, and the one node this follower voted for is the only one that can
     * have won with its vote (kill -9 under loss: the follower timed out and a
     * third election began). */
    raft_id leader = r->follower_state.current_leader.id;
    return leader == f->from || (leader == 0 && r->voted_for == f->from);
}

static void take(struct tern_raft_beacon *b, const struct tern_raft_beacon_frame *f,
                 const struct sockaddr_in *from)
{
    struct raft *r = b->r;
    const struct raft_server *s = member(r, f->from);
    struct sockaddr_in sa;
    /* Only from the address its sender has in the configuration (a forged
     * sender is left alone), and only to bridge a stall of Raft's own messages. */
    if (!s || tern_link_ipv4(s->address, &sa) != TERN_OK ||
        sa.sin_addr.s_addr != from->sin_addr.s_addr || sa.sin_port != from->sin_port ||
        !bridged(b, f->from)) {
        b->refused++;
        return;
    }
    if (tern_raft_beacon_keeps(r, f)) {
        /* What libraft does on an AppendEntries of its leader. */
        r->election_timer_start = r->io->time(r->io);
        b->kept++;
        b->ping_from = f->from;
        b->ping_ms = uv_now(b->udp.loop);
        send_frame(b, TERN_RAFT_BEACON_ANSWER, f->from, &sa);
    } else if (f->kind == TERN_RAFT_BEACON_ANSWER && f->to == r->id &&
               f->term == r->current_term) {
        b->heard += (uint64_t)tern_raft_timing_heard(r, f->from); /* leaders only */
    } else {
        b->refused++; /* another term, not ours, or not our leader */
    }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    struct tern_raft_beacon *b = h->data; /* one datagram at a time */
    *buf = uv_buf_init(b->in, sizeof(b->in));
}

static void on_recv(uv_udp_t *h, ssize_t n, const uv_buf_t *buf,
                    const struct sockaddr *addr, unsigned flags)
{
    struct tern_raft_beacon *b = h->data;
    struct tern_raft_beacon_frame f;
    if (n <= 0 || !addr || addr->sa_family != AF_INET)
        return;
    if ((flags & UV_UDP_PARTIAL) ||
        tern_raft_beacon_decode((const uint8_t *)buf->base, (size_t)n, &f) != 0) {
        b->refused++;
        return;
    }
    take(b, &f, (const struct sockaddr_in *)addr);
}

uint64_t tern_raft_beacon_ping_age_ms(const struct tern_raft_beacon *b, raft_id peer)
{
    if (!b->on || b->ping_from != peer || !b->ping_ms)
        return UINT64_MAX;
    return uv_now(b->udp.loop) - b->ping_ms;
}

int tern_raft_beacon_start(struct tern_raft_beacon *b, uv_loop_t *loop, struct raft *r,
                           const char *addr, unsigned election_ms)
{
    struct sockaddr_in sa;
    memset(b, 0, sizeof(*b));
    b->r = r;
    b->election_ms = election_ms;
    tern_wbuf_init(&b->out);
    if (tern_link_ipv4(addr, &sa) != TERN_OK)
        return TERN_EINVAL;
    if (uv_udp_init(loop, &b->udp) != 0)
        return TERN_EIO;
    b->udp.data = b;
    b->on = 1;
    if (uv_udp_bind(&b->udp, (const struct sockaddr *)&sa, 0) != 0 ||
        uv_udp_recv_start(&b->udp, on_alloc, on_recv) != 0) {
        tern_raft_beacon_close(b, NULL);
        return TERN_EIO;
    }
    return TERN_OK;
}

void tern_raft_beacon_tick(struct tern_raft_beacon *b)
{
    struct raft *r = b->r;
    if (!b->on || raft_state(r) != RAFT_LEADER)
        return;
    for (unsigned i = 0; i < r->configuration.n; i++) {
        const struct raft_server *s = &r->configuration.servers[i];
        struct sockaddr_in sa;
        if (s->id != r->id && tern_link_ipv4(s->address, &sa) == TERN_OK)
            send_frame(b, TERN_RAFT_BEACON_PING, s->id, &sa);
    }
}

void tern_raft_beacon_close(struct tern_raft_beacon *b, uv_close_cb cb)
{
    if (b->on) {
        b->on = 0;
        uv_close((uv_handle_t *)&b->udp, cb);
    }
    tern_wbuf_free(&b->out);
}
