/* The Raft transport's accepting side with mutual TLS (raft_transport.h).
 *
 * raft_uv_tcp's listener reads the Raft handshake (protocol, server id,
 * address) straight off the TCP connection, so with TLS this transport listens
 * itself: accept, TLS handshake and identity (link_tls.h), then the Raft
 * handshake read from the plaintext end, exactly its bytes (one read buffer
 * per part, so nothing of the first message is consumed), and the server id
 * in it must be the node the certificate names. Then libraft gets the stream,
 * as from its own listener. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#include "link.h"
#include "raft_transport.h"
#include "tern/error.h"
#include "tern/log.h"

#define HANDSHAKE_PROTOCOL 1
#define PREAMBLE 24
#define ADDRESS_MAX 256 /* bytes of the padded address a handshake may carry */
/* Accepted connections in their TLS handshake at once: a member needs one per
 * other member; past this a flood of connections is closed at accept. */
#define HANDSHAKING_MAX 64

struct tern_raft_incoming {
    struct tern_raft_transport *t;
    uv_pipe_t *pipe; /* raft_malloc'd: libraft frees the stream it is given */
    uint32_t peer;   /* the node the certificate names */
    size_t got, need;
    uint8_t hdr[PREAMBLE];
    char address[ADDRESS_MAX + 1];
    struct tern_raft_incoming *next;
};

static uint64_t get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static void incoming_unlink(struct tern_raft_incoming *in)
{
    for (struct tern_raft_incoming **pp = &in->t->incoming; *pp; pp = &(*pp)->next)
        if (*pp == in) {
            *pp = in->next;
            return;
        }
}

static void incoming_drop(struct tern_raft_incoming *in, const char *why)
{
    /* Logged as link_tls logs its refusals: at most once a second. */
    struct tern_link_tls_set *s = &in->t->tls;
    uint64_t now = uv_now(in->t->loop);
    if (why)
        s->failures++;
    if (why && now - s->logged_ms >= 1000) {
        TERN_LOGW("raft: TLS connection from node %u: %s: refused", in->peer, why);
        s->logged_ms = now;
    }
    incoming_unlink(in);
    uv_close((uv_handle_t *)in->pipe, (uv_close_cb)raft_free);
    free(in);
}

static void incoming_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    struct tern_raft_incoming *in = h->data;
    (void)hint;
    if (in->got < PREAMBLE)
        *buf = uv_buf_init((char *)in->hdr + in->got, (unsigned)(PREAMBLE - in->got));
    else
        *buf = uv_buf_init(in->address + (in->got - PREAMBLE),
                           (unsigned)(in->need - in->got));
}

static void incoming_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    (void)buf;
    struct tern_raft_incoming *in = s->data;
    if (n < 0) {
        incoming_drop(in, NULL);
        return;
    }
    in->got += (size_t)n;
    if (in->got == PREAMBLE && in->need == PREAMBLE) {
        uint64_t protocol = get64(in->hdr), id = get64(in->hdr + 8);
        uint64_t alen = get64(in->hdr + 16);
        char why[96];
        if (protocol != HANDSHAKE_PROTOCOL || alen == 0 || alen > ADDRESS_MAX) {
            incoming_drop(in, "not a Raft handshake");
            return;
        }
        if (id != in->peer) {
            snprintf(why, sizeof(why), "speaks as node %llu with node %u's certificate",
                     (unsigned long long)id, in->peer);
            incoming_drop(in, why);
            return;
        }
        in->need = PREAMBLE + (size_t)alen;
        return;
    }
    if (in->got < in->need)
        return;
    /* Whole: the stream is libraft's from here, the next bytes its first
     * message. */
    uv_read_stop(s);
    in->address[in->need - PREAMBLE] = '\0';
    struct tern_raft_transport *t = in->t;
    uv_stream_t *stream = (uv_stream_t *)in->pipe;
    uint32_t peer = in->peer;
    char address[ADDRESS_MAX + 1];
    memcpy(address, in->address, sizeof(address));
    incoming_unlink(in);
    free(in);
    stream->data = NULL;
    t->accept_cb(&t->outer, peer, address, stream);
}

/* The TLS handshake of an accepted connection is done (or failed: logged). */
static void on_tls_accepted(void *data, int status, int fd, uint32_t peer)
{
    struct tern_raft_transport *t = data;
    if (status != TERN_OK)
        return;
    struct tern_raft_incoming *in = calloc(1, sizeof(*in));
    uv_pipe_t *pipe = raft_malloc(sizeof(*pipe));
    if (!in || !pipe || uv_pipe_init(t->loop, pipe, 0) != 0) {
        free(in);
        raft_free(pipe);
        close(fd);
        return;
    }
    in->t = t;
    in->pipe = pipe;
    in->peer = peer;
    in->need = PREAMBLE;
    pipe->data = in;
    in->next = t->incoming;
    t->incoming = in;
    if (uv_pipe_open(pipe, fd) != 0) {
        close(fd);
        incoming_drop(in, "cannot open the socketpair");
        return;
    }
    if (uv_read_start((uv_stream_t *)pipe, incoming_alloc, incoming_read) != 0)
        incoming_drop(in, "cannot read");
}

static void free_tcp(void *p)
{
    free(p);
}

static void on_connection(uv_stream_t *server, int status)
{
    struct tern_raft_transport *t = server->data;
    if (status < 0)
        return;
    uv_tcp_t *tcp = malloc(sizeof(*tcp));
    if (!tcp)
        return;
    uv_tcp_init(t->loop, tcp);
    if (uv_accept(server, (uv_stream_t *)tcp) != 0 ||
        t->tls.handshaking >= HANDSHAKING_MAX) {
        if (t->tls.handshaking >= HANDSHAKING_MAX)
            t->tls.failures++;
        uv_close((uv_handle_t *)tcp, (uv_close_cb)free);
        return;
    }
    tern_link_tune(tcp);
    struct tern_link_tls_opts o = {
        .ctx = t->creds->server,
        .timeout_ms = TERN_LINK_TLS_HANDSHAKE_MS,
        .unsent_max = 8u << 20, /* libraft writes nothing on accepted streams */
        .close_when_full = true,
        .free_tcp = free_tcp,
    };
    tern_link_tls_start(&t->tls, t->loop, tcp, &o, on_tls_accepted, t);
}

int tern_raft_tls_listen(struct tern_raft_transport *t)
{
    char host[64];
    const char *colon = strrchr(t->address, ':');
    struct sockaddr_in sa;
    if (!colon || (size_t)(colon - t->address) >= sizeof(host)) {
        snprintf(t->outer.errmsg, sizeof(t->outer.errmsg), "bad address %.64s",
                 t->address);
        return RAFT_INVALID;
    }
    memcpy(host, t->address, (size_t)(colon - t->address));
    host[colon - t->address] = '\0';
    int rv = uv_ip4_addr(host, atoi(colon + 1), &sa);
    uv_tcp_init(t->loop, &t->listener);
    t->listener.data = t;
    t->listening = 1;
    if (rv == 0)
        rv = uv_tcp_bind(&t->listener, (struct sockaddr *)&sa, 0);
    if (rv == 0)
        rv = uv_listen((uv_stream_t *)&t->listener, 128, on_connection);
    if (rv != 0) {
        snprintf(t->outer.errmsg, sizeof(t->outer.errmsg), "listen: %s", uv_strerror(rv));
        return RAFT_IOERR;
    }
    return 0;
}

static void on_listener_closed(uv_handle_t *h)
{
    (void)h;
}

void tern_raft_tls_close(struct tern_raft_transport *t)
{
    if (t->listening) {
        t->listening = 0;
        uv_close((uv_handle_t *)&t->listener, on_listener_closed);
    }
    while (t->incoming)
        incoming_drop(t->incoming, NULL);
    tern_link_tls_close_all(&t->tls);
}
