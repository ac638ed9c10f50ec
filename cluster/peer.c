/* Node-to-node links: see peer.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "link.h"
#include "link_tls.h"
#include "peer.h"
#include "tern/error.h"
#include "tern/log.h"
#include "tern/storage.h"

#define HDR 9 /* u32 length + u8 type + u32 from */
#define RECONNECT_MS 200
/* Unsent bytes per outbound link. Small on purpose: past it a forwarded
 * clean-session message is dropped (and counted) instead of piling up memory
 * and starving the receiving node's loop. Publishers are paused well before
 * (tern_peers_backlog, node/mqtt/conn.c), so this is only reached by a burst. */
#define OUT_BYTES_MAX (16u << 20)
/* Frames to one node are gathered during a loop turn and written with one
 * uv_write by tern_peers_flush (a write per forwarded message was most of a
 * cross-node message's cost); past this much the batch is written at once. */
#define BATCH_BYTES (1u << 20)

struct out_link {
    struct tern_peers *peers;
    struct tern_peer_addr addr;
    /* The TCP connection, or with TLS the plaintext end link_tls gives once
     * the handshake is done; NULL while down. */
    uv_stream_t *conn;
    struct tern_link_tls *tls; /* the TLS handshake in progress */
    uv_connect_t connect;
    uv_timer_t retry;
    int connected;
    int connecting;
    int removed;     /* the member left: never reconnect (addr.id is 0) */
    uint64_t ups;    /* connections made: a new one may have lost what the last held */
    uint64_t queued; /* batched + written but not yet sent */
    uint64_t down_since;
    struct tern_wbuf batch; /* frames not handed to libuv yet */
};

struct in_link {
    struct tern_peers *peers;
    union {
        uv_tcp_t tcp;   /* plain */
        uv_pipe_t pipe; /* TLS: the plaintext end, from link_tls */
    } h;
    struct tern_link_tls *tls; /* TLS handshake in progress: h not initialised */
    uint32_t node;             /* TLS: the node the certificate names, 0 plain */
    char host[64];
    uint8_t *buf;
    size_t len, cap;
    struct in_link *next;
};

struct tern_peers {
    uv_loop_t *loop;
    uint32_t self;
    uv_tcp_t listener;
    struct out_link out[TERN_PEER_MAX];
    size_t nout;
    struct in_link *ins;
    tern_peer_recv_fn fn;
    void *ctx;
    size_t frame_max; /* payload bytes per frame, sent or accepted */
    size_t nins;      /* inbound connections open */
    uint64_t refused; /* inbound connections closed: over the bound, bad frames */
    uint64_t refused_logged_ms;
    int closing;
    int handles; /* initialised handles whose close callback has not run */
    const struct tern_link_creds *creds; /* mutual TLS when set */
    struct tern_link_tls_set tls;
};

#define IN_HANDLE(in) ((uv_handle_t *)&(in)->h)
#define IN_STREAM(in) ((uv_stream_t *)&(in)->h)

/* Everything here may be referenced by a callback until the last handle's close
 * callback has run, so the struct goes only then. */
static void release(struct tern_peers *p)
{
    if (--p->handles == 0 && p->closing)
        free(p);
}

struct send_req {
    uv_write_t req;
    struct out_link *link;
    size_t len;
    uint8_t *data;
};

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}

static void connect_link(struct out_link *l);

static void on_retry(uv_timer_t *t)
{
    connect_link(t->data);
}

static void free_handle(uv_handle_t *h)
{
    struct out_link *l = h->data;
    struct tern_peers *p = l->peers;
    free(h);
    release(p);
}

static void drop_batch(struct out_link *l)
{
    l->queued -= l->batch.len;
    tern_wbuf_free(&l->batch);
}

static void link_down(struct out_link *l)
{
    drop_batch(l);
    if (l->tls) {
        tern_link_tls_cancel(l->tls);
        l->tls = NULL;
    }
    if (l->conn) {
        uv_close((uv_handle_t *)l->conn, free_handle);
        l->conn = NULL;
    }
    if (l->connected || l->connecting)
        l->down_since = uv_now(l->peers->loop);
    l->connected = 0;
    l->connecting = 0;
    if (!l->peers->closing && !l->removed)
        uv_timer_start(&l->retry, on_retry, RECONNECT_MS, 0);
}

static void on_out_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    /* Outbound links carry no replies; a read only tells us the peer went away. */
    struct out_link *l = s->data;
    free(buf->base);
    if (n < 0)
        link_down(l);
}

static void alloc_small(uv_handle_t *h, size_t sz, uv_buf_t *buf)
{
    (void)h;
    (void)sz;
    buf->base = malloc(256);
    buf->len = buf->base ? 256 : 0;
}

static void link_up(struct out_link *l)
{
    l->connecting = 0;
    l->connected = 1;
    l->ups++;
    l->down_since = 0;
    uv_read_start(l->conn, alloc_small, on_out_read);
}

/* TLS with the node dialled is up (its certificate checked): frames go to the
 * plaintext end. */
static void on_out_tls(void *data, int status, int fd, uint32_t node)
{
    struct out_link *l = data;
    (void)node;
    l->tls = NULL;
    if (status != TERN_OK) {
        link_down(l);
        return;
    }
    uv_pipe_t *pipe = malloc(sizeof(*pipe));
    if (!pipe) {
        close(fd);
        link_down(l);
        return;
    }
    uv_pipe_init(l->peers->loop, pipe, 0);
    l->peers->handles++;
    pipe->data = l;
    l->conn = (uv_stream_t *)pipe;
    if (uv_pipe_open(pipe, fd) != 0) {
        close(fd);
        link_down(l);
        return;
    }
    link_up(l);
}

static void on_connect(uv_connect_t *req, int status)
{
    struct out_link *l = req->data;
    if (status < 0 || l->peers->closing) {
        l->connecting = 0;
        if (!l->peers->closing)
            link_down(l);
        return;
    }
    if (!l->peers->creds) {
        link_up(l);
        return;
    }
    struct tern_link_tls_opts o = {
        .ctx = l->peers->creds->client,
        .expect_id = l->addr.id,
        .timeout_ms = TERN_LINK_TLS_HANDSHAKE_MS,
        /* Past this much ciphertext unsent, the plaintext end is not read: the
         * socketpair fills, and this link's own queue (OUT_BYTES_MAX,
         * tern_peers_backlog) grows as it does over plain TCP. */
        .unsent_max = 1u << 20,
        .free_tcp = free,
    };
    uv_tcp_t *tcp = (uv_tcp_t *)l->conn;
    l->conn = NULL;
    l->peers->handles--; /* link_tls closes and frees it */
    l->tls = tern_link_tls_start(&l->peers->tls, l->peers->loop, tcp, &o, on_out_tls, l);
    if (!l->tls)
        link_down(l);
}

static void connect_link(struct out_link *l)
{
    if (l->peers->closing || l->conn || l->tls || l->removed)
        return;
    struct sockaddr_in sa;
    if (uv_ip4_addr(l->addr.host, l->addr.port, &sa) != 0)
        return;
    uv_tcp_t *tcp = malloc(sizeof(*tcp));
    if (!tcp)
        return;
    /* With the socket made now, its options (link.h) cover the SYN too. */
    if (uv_tcp_init_ex(l->peers->loop, tcp, AF_INET) != 0) {
        free(tcp);
        uv_timer_start(&l->retry, on_retry, RECONNECT_MS, 0);
        return;
    }
    l->conn = (uv_stream_t *)tcp;
    l->peers->handles++;
    tcp->data = l;
    tern_link_tune(tcp);
    l->connect.data = l;
    l->connecting = 1;
    if (uv_tcp_connect(&l->connect, tcp, (struct sockaddr *)&sa, on_connect) != 0)
        link_down(l);
}

static void on_written(uv_write_t *req, int status)
{
    struct send_req *w = (struct send_req *)req;
    struct out_link *l = w->link;
    l->queued -= w->len;
    free(w->data);
    free(w);
    if (status < 0 && status != UV_ECANCELED && l->connected)
        link_down(l);
}

/* Hands the link's batch to libuv. */
static void write_batch(struct out_link *l)
{
    if (l->batch.len == 0)
        return;
    struct send_req *w = malloc(sizeof(*w));
    if (!w) {
        drop_batch(l);
        return;
    }
    w->link = l;
    tern_wbuf_take(&l->batch, &w->data, &w->len); /* no error: puts are reserved */
    uv_buf_t b = uv_buf_init((char *)w->data, (unsigned)w->len);
    if (uv_write(&w->req, l->conn, &b, 1, on_written) != 0) {
        l->queued -= w->len;
        free(w->data);
        free(w);
        link_down(l);
    }
}

void tern_peers_set_frame_max(struct tern_peers *p, size_t payload_max)
{
    p->frame_max =
        payload_max < TERN_PEER_FRAME_MAX - HDR ? payload_max : TERN_PEER_FRAME_MAX - HDR;
}

void tern_peers_flush(struct tern_peers *p)
{
    for (size_t i = 0; i < p->nout; i++)
        if (p->out[i].connected)
            write_batch(&p->out[i]);
    if (p->creds) /* through the socketpairs onto TCP, before the acks (link_tls.h) */
        tern_link_tls_flush_all(&p->tls);
}

int tern_peers_send(struct tern_peers *p, uint32_t to, uint8_t type, const uint8_t *data,
                    size_t len)
{
    struct out_link *l = NULL;
    for (size_t i = 0; i < p->nout; i++)
        if (p->out[i].addr.id == to)
            l = &p->out[i];
    if (!l || !l->connected || len > p->frame_max || l->queued + len > OUT_BYTES_MAX)
        return TERN_EAGAIN;
    /* A batch starts at 64 KiB; a failure leaves the frames batched so far. */
    if ((l->batch.cap == 0 && tern_wbuf_try_reserve(&l->batch, 65536) != TERN_OK) ||
        tern_wbuf_try_reserve(&l->batch, HDR + len) != TERN_OK)
        return TERN_ENOMEM;
    uint8_t *f = tern_wbuf_append(&l->batch, HDR + len);
    put32(f, (uint32_t)(len + 5));
    f[4] = type;
    put32(f + 5, p->self);
    memcpy(f + HDR, data, len);
    l->queued += HDR + len;
    if (l->batch.len >= BATCH_BYTES)
        write_batch(l);
    return TERN_OK;
}

uint64_t tern_peers_backlog(const struct tern_peers *p, uint32_t to)
{
    uint64_t most = 0;
    for (size_t i = 0; i < p->nout; i++)
        if ((to == 0 || p->out[i].addr.id == to) && p->out[i].connected &&
            p->out[i].queued > most)
            most = p->out[i].queued;
    return most;
}

int tern_peers_connected(const struct tern_peers *p, uint32_t to)
{
    for (size_t i = 0; i < p->nout; i++)
        if (p->out[i].addr.id == to)
            return p->out[i].connected;
    return 0;
}

uint64_t tern_peers_ups(const struct tern_peers *p, uint32_t to)
{
    for (size_t i = 0; i < p->nout; i++)
        if (p->out[i].addr.id == to)
            return p->out[i].ups;
    return 0;
}

uint64_t tern_peers_down_ms(const struct tern_peers *p, uint32_t to)
{
    for (size_t i = 0; i < p->nout; i++) {
        const struct out_link *l = &p->out[i];
        if (l->addr.id == to)
            return l->connected ? 0 : uv_now(p->loop) - l->down_since;
    }
    return 0;
}

/* An inbound link without a handle of its own (its TLS handshake is not done). */
static void in_free(struct in_link *in)
{
    struct tern_peers *p = in->peers;
    for (struct in_link **pp = &p->ins; *pp; pp = &(*pp)->next)
        if (*pp == in) {
            *pp = in->next;
            break;
        }
    free(in->buf);
    free(in);
    p->nins--;
}

static void in_closed(uv_handle_t *h)
{
    struct in_link *in = h->data;
    struct tern_peers *p = in->peers;
    in_free(in);
    release(p);
}

/* Closes an inbound connection that broke a bound or sent what no member
 * would; logged at most once a second, with the running count. */
static void in_refuse(struct in_link *in, const char *why)
{
    struct tern_peers *p = in->peers;
    p->refused++;
    uint64_t now = uv_now(p->loop);
    if (p->refused == 1 || now - p->refused_logged_ms >= 1000) {
        TERN_LOGW("peer: closed an inbound connection from %s: %s (%llu closed so far)",
                  in->host, why, (unsigned long long)p->refused);
        p->refused_logged_ms = now;
    }
    if (!uv_is_closing(IN_HANDLE(in)))
        uv_close(IN_HANDLE(in), in_closed);
}

/* Frames come only from the other members, and only of the known types. */
static int frame_ok(const struct tern_peers *p, uint8_t type, uint32_t from)
{
    if ((type != TERN_PEER_PROPOSE && type != TERN_PEER_FORWARD &&
         type != TERN_PEER_FLOW && type != TERN_PEER_PROPOSE_LZ4) ||
        from == 0 || from == p->self)
        return 0;
    for (size_t i = 0; i < p->nout; i++)
        if (p->out[i].addr.id == from)
            return 1;
    return 0;
}

static void in_alloc(uv_handle_t *h, size_t sz, uv_buf_t *buf)
{
    struct in_link *in = h->data;
    (void)sz;
    if (in->cap - in->len < 65536) {
        size_t cap = in->len + 65536;
        uint8_t *b = realloc(in->buf, cap);
        if (!b) {
            *buf = uv_buf_init(NULL, 0);
            return;
        }
        in->buf = b;
        in->cap = cap;
    }
    *buf = uv_buf_init((char *)in->buf + in->len, (unsigned)(in->cap - in->len));
}

static void on_in_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    (void)buf;
    struct in_link *in = s->data;
    if (n < 0) {
        uv_close(IN_HANDLE(in), in_closed);
        return;
    }
    in->len += (size_t)n;
    size_t off = 0;
    while (in->len - off >= 4) {
        uint32_t flen = get32(in->buf + off);
        if (flen < 5 || flen - 5 > in->peers->frame_max) {
            in_refuse(in, "frame over the bound");
            return;
        }
        if (in->len - off < HDR)
            break;
        const uint8_t *f = in->buf + off + 4;
        if (!frame_ok(in->peers, f[0], get32(f + 1))) {
            in_refuse(in, "not a frame from a member");
            return;
        }
        if (in->node && get32(f + 1) != in->node) {
            in_refuse(in, "a frame from another node than its certificate names");
            return;
        }
        if (in->len - off < 4 + (size_t)flen)
            break;
        in->peers->fn(in->peers->ctx, get32(f + 1), f[0], f + 5, flen - 5);
        off += 4 + flen;
    }
    memmove(in->buf, in->buf + off, in->len - off);
    in->len -= off;
}

static void peer_name(uv_tcp_t *tcp, char *host, size_t cap)
{
    struct sockaddr_storage sa;
    int len = sizeof(sa);
    snprintf(host, cap, "?");
    if (uv_tcp_getpeername(tcp, (struct sockaddr *)&sa, &len) == 0 &&
        sa.ss_family == AF_INET)
        uv_ip4_name((struct sockaddr_in *)&sa, host, cap);
}

/* TLS from a node is up: its frames are read from the plaintext end. */
static void on_in_tls(void *data, int status, int fd, uint32_t node)
{
    struct in_link *in = data;
    struct tern_peers *p = in->peers;
    in->tls = NULL;
    if (status != TERN_OK) {
        in_free(in);
        return;
    }
    uv_pipe_init(p->loop, &in->h.pipe, 0);
    p->handles++;
    in->h.pipe.data = in;
    in->node = node;
    if (uv_pipe_open(&in->h.pipe, fd) != 0) {
        close(fd);
        uv_close(IN_HANDLE(in), in_closed);
        return;
    }
    uv_read_start(IN_STREAM(in), in_alloc, on_in_read);
}

/* With TLS the accepted TCP connection is link_tls's; the in_link waits for
 * its handshake without a handle. */
static void accept_tls(struct tern_peers *p, uv_stream_t *server, struct in_link *in)
{
    uv_tcp_t *tcp = malloc(sizeof(*tcp));
    if (!tcp) {
        in_free(in);
        return;
    }
    uv_tcp_init(p->loop, tcp);
    if (uv_accept(server, (uv_stream_t *)tcp) != 0 || p->nins > TERN_PEER_INBOUND_MAX) {
        if (p->nins > TERN_PEER_INBOUND_MAX)
            p->refused++;
        uv_close((uv_handle_t *)tcp, (uv_close_cb)free);
        in_free(in);
        return;
    }
    peer_name(tcp, in->host, sizeof(in->host));
    tern_link_tune(tcp);
    struct tern_link_tls_opts o = {
        .ctx = p->creds->server,
        .timeout_ms = TERN_LINK_TLS_HANDSHAKE_MS,
        .unsent_max = 1u << 20, /* nothing is sent back on an inbound link */
        .free_tcp = free,
    };
    in->tls = tern_link_tls_start(&p->tls, p->loop, tcp, &o, on_in_tls, in);
    if (!in->tls)
        in_free(in);
}

static void on_peer_connection(uv_stream_t *server, int status)
{
    struct tern_peers *p = server->data;
    if (status < 0)
        return;
    struct in_link *in = calloc(1, sizeof(*in));
    if (!in)
        return;
    in->peers = p;
    p->nins++;
    in->next = p->ins;
    p->ins = in;
    if (p->creds) {
        accept_tls(p, server, in);
        return;
    }
    uv_tcp_init(p->loop, &in->h.tcp);
    p->handles++;
    in->h.tcp.data = in;
    if (uv_accept(server, IN_STREAM(in)) != 0) {
        uv_close(IN_HANDLE(in), in_closed);
        return;
    }
    peer_name(&in->h.tcp, in->host, sizeof(in->host));
    if (p->nins > TERN_PEER_INBOUND_MAX) {
        in_refuse(in, "too many inbound connections");
        return;
    }
    tern_link_tune(&in->h.tcp);
    uv_read_start(IN_STREAM(in), in_alloc, on_in_read);
}

void tern_peers_set_tls(struct tern_peers *p, const struct tern_link_creds *creds)
{
    p->creds = creds;
}

uint64_t tern_peers_tls_refused(const struct tern_peers *p)
{
    return p->tls.failures;
}

int tern_peers_new(struct tern_peers **out, uv_loop_t *loop, uint32_t self,
                   const struct tern_peer_addr *members, size_t n, tern_peer_recv_fn fn,
                   void *ctx, char *errmsg)
{
    struct tern_peers *p = calloc(1, sizeof(*p));
    if (!p)
        return TERN_ENOMEM;
    p->loop = loop;
    p->self = self;
    p->fn = fn;
    p->ctx = ctx;
    p->frame_max = TERN_PEER_FRAME_MAX - HDR;
    p->tls.what = "peer";
    const struct tern_peer_addr *me = NULL;
    for (size_t i = 0; i < n && i < TERN_PEER_MAX; i++) {
        if (members[i].id == self) {
            me = &members[i];
            continue;
        }
        struct out_link *l = &p->out[p->nout++];
        l->peers = p;
        l->addr = members[i];
        l->down_since = uv_now(loop);
        uv_timer_init(loop, &l->retry);
        p->handles++;
        l->retry.data = l;
    }
    if (me) {
        struct sockaddr_in sa;
        int rv = uv_ip4_addr(me->host, me->port, &sa);
        uv_tcp_init(loop, &p->listener);
        p->handles++;
        p->listener.data = p;
        if (rv == 0)
            rv = uv_tcp_bind(&p->listener, (struct sockaddr *)&sa, 0);
        if (rv == 0)
            rv = uv_listen((uv_stream_t *)&p->listener, 128, on_peer_connection);
        if (rv != 0) {
            snprintf(errmsg, TERN_ERRMSG_SIZE, "peer: cannot listen on %s:%u: %s",
                     me->host, me->port, uv_strerror(rv));
            *out = p; /* the caller closes it with tern_peers_close() */
            return TERN_EIO;
        }
    } else {
        uv_tcp_init(loop, &p->listener);
        p->handles++;
    }
    for (size_t i = 0; i < p->nout; i++)
        connect_link(&p->out[i]);
    *out = p;
    return TERN_OK;
}

static struct out_link *link_find(struct tern_peers *p, uint32_t id)
{
    for (size_t i = 0; i < p->nout; i++)
        if (p->out[i].addr.id == id)
            return &p->out[i];
    return NULL;
}

/* A slot for a new link: a fresh one, else one whose member was removed and
 * whose connection is fully closed (its handles' callbacks may not run on a
 * reused slot while they still hold it: the connect starts after a delay). */
static struct out_link *link_slot(struct tern_peers *p, int *reused)
{
    *reused = 0;
    if (p->nout < TERN_PEER_MAX) {
        struct out_link *l = &p->out[p->nout++];
        memset(l, 0, sizeof(*l));
        l->peers = p;
        uv_timer_init(p->loop, &l->retry);
        p->handles++;
        l->retry.data = l;
        return l;
    }
    for (size_t i = 0; i < p->nout; i++)
        if (p->out[i].removed && p->out[i].conn == NULL && p->out[i].tls == NULL) {
            *reused = 1;
            return &p->out[i];
        }
    return NULL;
}

int tern_peers_add(struct tern_peers *p, const struct tern_peer_addr *a)
{
    if (p->closing)
        return TERN_ESHUTDOWN;
    if (a->id == 0)
        return TERN_EINVAL;
    if (a->id == p->self)
        return TERN_OK;
    struct out_link *l = link_find(p, a->id);
    if (l && strcmp(l->addr.host, a->host) == 0 && l->addr.port == a->port)
        return TERN_OK;
    if (l) { /* moved: reconnect to the new address */
        l->addr = *a;
        link_down(l);
        return TERN_OK;
    }
    int reused;
    l = link_slot(p, &reused);
    if (!l)
        return TERN_ELIMIT;
    l->addr = *a;
    l->removed = 0;
    l->connected = l->connecting = 0;
    l->down_since = uv_now(p->loop);
    if (reused)
        uv_timer_start(&l->retry, on_retry, RECONNECT_MS, 0);
    else
        connect_link(l);
    return TERN_OK;
}

int tern_peers_remove(struct tern_peers *p, uint32_t id)
{
    struct out_link *l = id ? link_find(p, id) : NULL;
    if (!l)
        return TERN_ENOTFOUND;
    l->removed = 1;
    l->addr.id = 0;
    uv_timer_stop(&l->retry);
    link_down(l);
    return TERN_OK;
}

static void on_counted_closed(uv_handle_t *h)
{
    release(h->data);
}

static void on_retry_closed(uv_handle_t *h)
{
    struct out_link *l = h->data;
    release(l->peers);
}

void tern_peers_close(struct tern_peers *p)
{
    if (p->closing)
        return;
    p->closing = 1;
    p->handles++; /* held until this function returns */
    for (size_t i = 0; i < p->nout; i++) {
        struct out_link *l = &p->out[i];
        uv_close((uv_handle_t *)&l->retry, on_retry_closed);
        drop_batch(l);
        l->tls = NULL; /* closed below, with every TLS connection */
        if (l->conn) {
            uv_close((uv_handle_t *)l->conn, free_handle);
            l->conn = NULL;
        }
    }
    tern_link_tls_close_all(&p->tls);
    for (struct in_link *in = p->ins, *next; in; in = next) {
        next = in->next;
        if (in->tls)
            in_free(in); /* its handshake was closed above */
        else if (!uv_is_closing(IN_HANDLE(in)))
            uv_close(IN_HANDLE(in), in_closed);
    }
    p->listener.data = p;
    uv_close((uv_handle_t *)&p->listener, on_counted_closed);
    release(p);
}
