/* One client connection: reading and framing, writing, timers, closing.
 *
 * Lifetime: a connection is referenced by its open TCP handle and by every
 * pending proposal that carries it as context. It is freed when the last reference goes,
 * never inside a libuv callback that still uses it.
 *
 * Output produced during a loop turn is gathered in wbuf and written once, in
 * the prepare phase (node.c), so a burst of deliveries costs one write.
 *
 * TLS (a connection from an mqtts listener) sits under all of this as a stream
 * layer: ciphertext read goes into the engine (include/tls/tern/tls.h), the plaintext it
 * gives back takes the same path as a plain connection's bytes (conn_input), and
 * wbuf is encrypted on flush (raw_write sends the ciphertext). The codec and
 * the handlers never know.
 *
 * WebSockets (ws and wss listeners) are one more such layer (include/stream/tern/ws.h):
 * the bytes read (or, for wss, the TLS engine's plaintext) go into the WebSocket engine,
 * the payload of its binary frames takes the MQTT path, and wbuf goes out as one binary
 * frame on flush (through TLS for wss). The upgrade request is answered by the engine
 * before the first MQTT byte.
 *
 * Over 800 lines on purpose: the read path, the write path, the stream layers
 * under them and closing all work on the connection's private state (wbuf, the
 * input buffer, the engines, the drain) and on each other's ordering; split, that
 * state would need a header of its own and the hot path would lose inlining.
 * The PROXY header (conn_proxy.c) and SCRAM (access_scram.c) are separate
 * because they touch none of it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include "tern/log.h"
#include "tern/frontend.h"
#include "tern/tls.h"

/* Backlog on a link to another node at which publishers are paused, and below
 * which they are read again (peer.c drops forwards past 16 MiB). */
#define FORWARD_PAUSE_BYTES (4u << 20)
#define FORWARD_RESUME_BYTES (1u << 20)
#define PAUSED_SCAN_MS 5

/* After a server-initiated close the write side is shut (FIN after the last
 * packet, e.g. a DISCONNECT with its reason) and the input read and discarded
 * until the client closes too, for at most this long or this much: closing a
 * socket with unread input sends a reset, and the client may then never read
 * the reason. A client that keeps writing is closed at the bound. */
#define DRAIN_MS 1000
#define DRAIN_BYTES_MAX (1u << 20)

/* Every idle connection pays for this struct (with libuv's TCP handle): keep it
 * from growing unnoticed (docs/benchmarks.md, memory per idle connection). */
_Static_assert(sizeof(struct tern_conn) - sizeof(uv_tcp_t) <= 128,
               "struct tern_conn grew");

struct write_req {
    uv_write_t req;
    struct tern_conn *conn;
    size_t len;
    uint8_t data[];
};

static void conn_process(struct tern_conn *c);
static void tls_pull(struct tern_conn *c);
static void ws_pull(struct tern_conn *c);
static void ws_send(struct tern_conn *c);
static void ws_input(struct tern_conn *c, const uint8_t *data, size_t len);

static struct tern_conn_tls *conn_tls(const struct tern_conn *c)
{
    return c->opt ? c->opt->tls : NULL;
}

static struct tern_ws_engine *conn_ws(const struct tern_conn *c)
{
    return c->opt ? c->opt->ws : NULL;
}

const char *tern_conn_tls_username(const struct tern_conn *c)
{
    const struct tern_conn_tls *t = conn_tls(c);
    return t ? t->username : NULL;
}

void tern_conn_ref(struct tern_conn *c)
{
    c->refs++;
}

static void conn_free(struct tern_conn *c)
{
    struct tern_node *n = c->node;
    if (c->prev)
        c->prev->next = c->next;
    else
        n->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    n->conn_count--;
    tern_access_release(c);
    struct tern_conn_opt *o = c->opt;
    if (o && o->in_alias) {
        for (uint32_t i = 0; i <= n->cfg.topic_alias_maximum; i++)
            free(o->in_alias[i].topic);
        free(o->in_alias);
    }
    if (o) {
        for (uint16_t i = 0; i < o->out_alias_count; i++)
            free(o->out_alias_topic[i]);
        free(o->out_alias_topic);
        while (o->subs) {
            struct tern_pending_sub *p = o->subs;
            o->subs = p->next;
            free(p);
        }
        tern_publish_deferred_free(o);
        free(o->acks);
        free(o->proxy);
        tern_ws_engine_free(o->ws);
        if (o->tls) {
            tern_tls_engine_free(o->tls->engine);
            free(o->tls->username);
            free(o->tls);
        }
        free(o->username);
        tern_access_scram_free(o);
        free(o);
    }
    if (c->client_id)
        tern_clients_drop(&n->clients, tern_clients_slot_of(c->client_id));
    free(c->rbuf);
    free(c->wbuf);
    free(c);
}

struct tern_conn_opt *tern_conn_opt(struct tern_conn *c)
{
    if (!c->opt)
        c->opt = calloc(1, sizeof(*c->opt));
    return c->opt;
}

void tern_conn_opt_trim(struct tern_conn *c)
{
    const struct tern_conn_opt *o = c->opt;
    if (o && !o->in_alias && !o->out_alias_topic && !o->acks && !o->subs &&
        !o->deferred && !o->tls && !o->proxy && !o->ws && o->log_pending == 0 &&
        o->ack_seq_next == 0 && o->client_max_packet == 0 && o->client_alias_max == 0 &&
        !o->username && !o->scram) {
        free(c->opt);
        c->opt = NULL;
    }
}

void tern_conn_unref(struct tern_conn *c)
{
    if (--c->refs == 0)
        conn_free(c);
}

static void on_handle_closed(uv_handle_t *h)
{
    struct tern_conn *c = h->data;
    tern_conn_unref(c);
}

/* Marks the connection as having output; node.c flushes in the prepare phase. */
static void mark_dirty(struct tern_conn *c)
{
    struct tern_node *n = c->node;
    if (c->flush_scheduled)
        return;
    if (n->dirty_count == n->dirty_cap) {
        size_t cap = n->dirty_cap ? n->dirty_cap * 2 : 256;
        struct tern_conn **d = realloc(n->dirty, cap * sizeof(*d));
        if (!d)
            return; /* flushed by the next write that can mark it */
        n->dirty = d;
        n->dirty_cap = cap;
    }
    n->dirty[n->dirty_count++] = c;
    c->flush_scheduled = true;
    tern_conn_ref(c);
}

static void on_write(uv_write_t *req, int status)
{
    struct write_req *w = (struct write_req *)req;
    struct tern_conn *c = w->conn;
    free(w);
    if (status < 0 && c->state != TERN_CONN_CLOSING)
        tern_conn_close(c, TERN_RC_UNSPECIFIED, uv_strerror(status));
    tern_conn_unref(c);
}

/* Writes bytes to the socket: try_write first (usually takes it all), the rest
 * copied and queued. Returns how much was queued, or -1 if the connection was
 * closed for it. */
static long raw_write(struct tern_conn *c, const uint8_t *data, size_t len)
{
    size_t off = 0;
    if (len == 0 || uv_is_closing((uv_handle_t *)&c->tcp))
        return 0;
    if (uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) == 0) {
        uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
        int rv = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
        if (rv > 0)
            off = (size_t)rv;
        else if (rv < 0 && rv != UV_EAGAIN) {
            tern_conn_close(c, TERN_RC_UNSPECIFIED, uv_strerror(rv));
            return -1;
        }
    }
    c->node->stats.bytes_out += len;
    size_t rest = len - off;
    if (rest == 0)
        return 0;
    struct write_req *w = malloc(sizeof(*w) + rest);
    if (!w) {
        tern_conn_close(c, TERN_RC_SERVER_BUSY, "out of memory");
        return -1;
    }
    memcpy(w->data, data + off, rest);
    w->conn = c;
    w->len = rest;
    uv_buf_t b = uv_buf_init((char *)w->data, (unsigned)rest);
    tern_conn_ref(c);
    int rv = uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_write);
    if (rv < 0) {
        free(w);
        tern_conn_unref(c);
        tern_conn_close(c, TERN_RC_UNSPECIFIED, uv_strerror(rv));
        return -1;
    }
    /* libuv counts what it has not written yet (our wqueued). */
    if (uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp) >
            c->node->cfg.write_buffer_max &&
        c->state != TERN_CONN_CLOSING) {
        c->node->stats.dropped_slow_client++;
        tern_conn_close(c, TERN_RC_QUOTA_EXCEEDED,
                        "client is not reading (write buffer full)");
        return -1;
    }
    return (long)rest;
}

/* Sends the ciphertext the TLS engine has ready (handshake, records, alerts). */
static void tls_send(struct tern_conn *c)
{
    struct tern_conn_tls *t = conn_tls(c);
    size_t n;
    while (!uv_is_closing((uv_handle_t *)&c->tcp) &&
           (n = tern_tls_engine_take(t->engine, c->node->tls_out, TERN_READ_CHUNK)) > 0)
        if (raw_write(c, c->node->tls_out, n) < 0)
            return;
}

/* Writes out wbuf (through TLS for a TLS connection). */
void tern_conn_flush(struct tern_conn *c)
{
    c->flush_scheduled = false;
    struct tern_buf *out = c->wbuf;
    struct tern_conn_tls *t = conn_tls(c);
    if (!out || out->len == 0 || uv_is_closing((uv_handle_t *)&c->tcp))
        goto done;
    long queued;
    struct tern_ws_engine *w = conn_ws(c);
    if (w) {
        /* One binary frame (a frame may hold several packets, MQTT 5.0 6.0),
         * then through TLS for wss. After a close nothing more is framed. */
        int rc = tern_ws_engine_write(w, out->data, out->len);
        free(out);
        c->wbuf = NULL;
        if (rc == TERN_ENOMEM) {
            tern_conn_close(c, TERN_RC_SERVER_BUSY, "out of memory");
            goto done;
        }
        ws_send(c);
        goto done;
    }
    if (t) {
        /* Encrypted into the engine's output (records are made at once), then
         * sent as ciphertext: the plaintext buffer is not kept. */
        int rc = tern_tls_engine_established(t->engine)
                     ? tern_tls_engine_write(t->engine, out->data, out->len)
                     : TERN_EPROTO;
        free(out);
        c->wbuf = NULL;
        if (rc != TERN_OK) {
            tern_conn_close(c, TERN_RC_UNSPECIFIED, tern_tls_engine_error(t->engine));
            goto done;
        }
        tls_send(c);
        goto done;
    }
    /* Emptied first: a close on error must not flush the same bytes again. */
    uint32_t len = out->len;
    out->len = 0;
    queued = raw_write(c, out->data, len);
    out = c->wbuf; /* a close on error may have put a DISCONNECT in it */
    if (queued == 0 && out && out->len == 0) {
        /* Idle connections keep no output buffer. */
        free(out);
        c->wbuf = NULL;
    }
done:
    tern_conn_unref(c);
}

static int wbuf_reserve(struct tern_conn *c, size_t need)
{
    struct tern_buf *out = c->wbuf;
    size_t len = out ? out->len : 0, cap = out ? out->cap : 0;
    if (len + need <= cap)
        return TERN_OK;
    if (need > UINT32_MAX / 4 || len > UINT32_MAX / 4)
        return TERN_ENOMEM; /* one turn's output past 1 GiB: not a client to keep */
    /* Small first: a burst of CONNACKs to many connections in one turn must not
     * leave a 4 KiB hole per connection in the heap. Busy ones double up. */
    if (cap == 0)
        cap = 512 - sizeof(*out);
    while (cap < len + need)
        cap *= 2;
    out = realloc(out, sizeof(*out) + cap);
    if (!out)
        return TERN_ENOMEM;
    out->len = (uint32_t)len;
    out->cap = (uint32_t)cap;
    c->wbuf = out;
    return TERN_OK;
}

/* Encodes p into the output buffer. Returns false if it did not fit the
 * client's maximum packet size (nothing written). */
bool tern_conn_send_sized(struct tern_conn *c, const struct tern_packet *p)
{
    if (c->state == TERN_CONN_CLOSING && p->type != TERN_DISCONNECT &&
        p->type != TERN_CONNACK)
        return true;
    size_t need = tern_codec_encode(p, c->version, NULL, 0);
    if (need == 0)
        return false;
    uint32_t max = c->opt ? c->opt->client_max_packet : 0;
    if (max && need > max)
        return false;
    if (wbuf_reserve(c, need) != TERN_OK) {
        tern_conn_close(c, TERN_RC_SERVER_BUSY, "out of memory");
        return true;
    }
    tern_codec_encode(p, c->version, c->wbuf->data + c->wbuf->len, need);
    c->wbuf->len += (uint32_t)need;
    mark_dirty(c);
    return true;
}

void tern_conn_send(struct tern_conn *c, const struct tern_packet *p)
{
    char pb[TERN_PEER_STRLEN];
    if (!tern_conn_send_sized(c, p))
        TERN_LOGD("%s: dropped a %u packet over the client's maximum packet size",
                  tern_conn_peer(c, pb), p->type);
}

static void close_handle(struct tern_conn *c)
{
    c->draining = false;
    if (!uv_is_closing((uv_handle_t *)&c->tcp))
        uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    struct tern_conn *c = req->data;
    free(req);
    /* Draining: the read side closes the handle (EOF, error or the bound). */
    if (!c->draining || status < 0)
        close_handle(c);
    tern_conn_unref(c);
}

static void on_drain_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct tern_conn *c = h->data;
    (void)suggested;
    *buf = uv_buf_init((char *)c->node->rshared->data, c->node->rshared->cap);
}

/* Input after the close decision is not processed; its bytes are counted for the
 * drain bound in inbound_unacked (nothing is acknowledged once closing). */
static void on_drain_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct tern_conn *c = s->data;
    (void)buf;
    if (nread < 0 || (c->inbound_unacked += (uint32_t)nread) > DRAIN_BYTES_MAX)
        close_handle(c);
}

/* Starts the drain: reads are discarded until the client closes, or the bound. */
static bool drain_start(struct tern_conn *c)
{
    if (c->read_ended || c->node->stopping)
        return false;
    c->inbound_unacked = 0; /* bytes drained */
    c->draining = true;
    if (uv_read_start((uv_stream_t *)&c->tcp, on_drain_alloc, on_drain_read) != 0) {
        c->draining = false;
        return false;
    }
    return true;
}

/* Closes the connection: for MQTT 5, tells the client why (DISCONNECT with
 * reason, or the CONNACK already queued), then ends the session's connection
 * (will, session expiry) and closes once pending output is written. */
void tern_conn_close(struct tern_conn *c, uint8_t reason, const char *why)
{
    if (c->state == TERN_CONN_CLOSING) {
        if (c->draining && c->node->stopping)
            close_handle(c); /* the node is stopping: no more waiting */
        return;
    }
    bool was_active = c->state == TERN_CONN_ACTIVE;
    if (why) {
        char pb[TERN_PEER_STRLEN];
        TERN_LOGI("%s %.*s: closing: %s (reason 0x%02x)", tern_conn_peer(c, pb),
                  (int)c->client_id_len, c->client_id ? c->client_id : "", why, reason);
    }
    if (was_active && c->version == TERN_MQTT_5 && !c->disconnect_sent &&
        reason != TERN_RC_SUCCESS) {
        struct tern_packet p = {.type = TERN_DISCONNECT};
        p.u.disconnect.reason = reason;
        tern_conn_send(c, &p);
        c->disconnect_sent = true;
    }
    tern_session_closed(c); /* needs the state before CLOSING */
    c->state = TERN_CONN_CLOSING;
    if (c->paused) {
        c->paused = false;
        if (c->paused_on == TERN_PAUSED_FLOW)
            c->node->held_count--;
        else
            c->node->paused_count--;
    }
    uv_read_stop((uv_stream_t *)&c->tcp);
    if (c->wbuf && c->wbuf->len)
        tern_conn_flush_now(c);
    struct tern_ws_engine *w = conn_ws(c);
    if (w && !uv_is_closing((uv_handle_t *)&c->tcp)) {
        /* A close frame after the last packet (none if one was sent already). */
        tern_ws_engine_close(w, c->node->stopping ? TERN_WS_CLOSE_GOING_AWAY
                                                  : TERN_WS_CLOSE_NORMAL);
        ws_send(c);
    }
    struct tern_conn_tls *t = conn_tls(c);
    if (t && !uv_is_closing((uv_handle_t *)&c->tcp)) {
        tern_tls_engine_shutdown(t->engine); /* close_notify after the last packet */
        tls_send(c);
    }
    if (uv_is_closing((uv_handle_t *)&c->tcp))
        return;                     /* the flush failed and closed it */
    c->last_rx_ms = tern_mono_ms(); /* the drain's start (tern_conn_sweep) */
    uv_shutdown_t *req = malloc(sizeof(*req));
    if (req) {
        req->data = c;
        tern_conn_ref(c);
        if (uv_shutdown(req, (uv_stream_t *)&c->tcp, on_shutdown) == 0) {
            drain_start(c);
            return;
        }
        free(req);
        tern_conn_unref(c);
    }
    close_handle(c);
}

void tern_conn_flush_now(struct tern_conn *c)
{
    /* tern_conn_flush consumes the dirty reference; take one for it. */
    tern_conn_ref(c);
    tern_conn_flush(c);
}

/* Reads go into one loop-wide buffer while a connection has no partial packet
 * pending, so an idle connection holds no read buffer at all; only the bytes of
 * an incomplete packet are kept per connection. */
static uv_buf_t input_buf(struct tern_conn *c)
{
    struct tern_buf *r = c->rbuf;
    if (!r || r->len == 0)
        return uv_buf_init((char *)c->node->rshared->data, c->node->rshared->cap);
    if (r->cap - r->len < TERN_READ_CHUNK) {
        size_t cap = (size_t)r->len + TERN_READ_CHUNK;
        r = realloc(r, sizeof(*r) + cap);
        if (!r)
            return uv_buf_init(NULL, 0);
        r->cap = (uint32_t)cap;
        c->rbuf = r;
    }
    return uv_buf_init((char *)r->data + r->len, r->cap - r->len);
}

/* A TLS connection reads its ciphertext into a loop-wide buffer: the engine
 * keeps what it has not decrypted, the plaintext goes where input_buf says. */
static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct tern_conn *c = h->data;
    (void)suggested;
    if (conn_tls(c) || conn_ws(c))
        *buf = uv_buf_init((char *)c->node->tls_in, TERN_READ_CHUNK);
    else
        *buf = input_buf(c);
}

/* Processes bytes that arrived in the shared buffer, then keeps what is left
 * (a partial packet, or packets held while CONNECTING) in the connection's own
 * buffer, sized to fit. */
static void process_shared(struct tern_conn *c, size_t nread)
{
    struct tern_buf *own = c->rbuf, *shared = c->node->rshared;
    shared->len = (uint32_t)nread;
    c->rbuf = shared;
    tern_conn_ref(c);
    conn_process(c);
    size_t left = c->state == TERN_CONN_CLOSING ? 0 : shared->len;
    c->rbuf = own;
    if (left > 0 && (!own || own->cap < left)) {
        struct tern_buf *p = realloc(own, sizeof(*p) + left);
        if (!p) {
            left = 0;
            tern_conn_close(c, TERN_RC_SERVER_BUSY, "out of memory");
        } else {
            own = c->rbuf = p;
            own->cap = (uint32_t)left;
        }
    }
    if (left) {
        memcpy(own->data, shared->data, left);
        own->len = (uint32_t)left;
    } else {
        free(own);
        c->rbuf = NULL;
    }
    tern_conn_unref(c);
}

/* Plaintext bytes that arrived in the buffer input_buf gave. */
static void conn_input(struct tern_conn *c, char *base, size_t nread)
{
    if (c->state == TERN_CONN_ACTIVE)
        c->last_rx_ms = tern_mono_ms(); /* before: the accept time (connect timeout) */
    if (base == (char *)c->node->rshared->data) {
        process_shared(c, nread);
        return;
    }
    c->rbuf->len += (uint32_t)nread;
    tern_conn_ref(c);
    conn_process(c);
    if (c->rbuf->len == 0 && c->state != TERN_CONN_CLOSING) {
        free(c->rbuf); /* the partial packet is done: back to the shared buffer */
        c->rbuf = NULL;
    }
    tern_conn_unref(c);
}

static void tls_failed(struct tern_conn *c, const char *why)
{
    char pb[TERN_PEER_STRLEN];
    c->node->stats.tls_handshake_failures++;
    TERN_LOGW("%s: TLS handshake failed: %s", tern_conn_peer(c, pb), why);
    tern_conn_close(c, TERN_RC_UNSPECIFIED, NULL); /* only this connection */
}

/* The handshake is done: the identity, when the listener takes it as username. */
static bool tls_established(struct tern_conn *c, struct tern_conn_tls *t)
{
    char pb[TERN_PEER_STRLEN], alpn[16], cn[TERN_CONFIG_STR_MAX];
    const struct tern_listener_config *lc = t->listener->cfg;
    if (lc && lc->use_identity_as_username) {
        int rc = tern_tls_engine_peer_cn(t->engine, cn, sizeof(cn));
        if (rc != TERN_OK) {
            tls_failed(c, rc == TERN_ETOOBIG ? "client certificate CN too long"
                                             : "no CN in the client certificate");
            return false;
        }
        t->username = strdup(cn);
        if (!t->username) {
            tern_conn_close(c, TERN_RC_SERVER_BUSY, "out of memory");
            return false;
        }
    }
    c->node->stats.tls_handshakes++;
    TERN_LOGD("%s: TLS established: %s, ALPN \"%s\", SNI \"%s\"%s%s",
              tern_conn_peer(c, pb), tern_tls_engine_version(t->engine),
              tern_tls_engine_alpn(t->engine, alpn, sizeof(alpn)),
              tern_tls_engine_sni(t->engine), t->username ? ", identity " : "",
              t->username ? t->username : "");
    return true;
}

/* Ciphertext arrived: handshake, then the plaintext to the MQTT layer. */
static void tls_input(struct tern_conn *c, const uint8_t *data, size_t len)
{
    struct tern_conn_tls *t = conn_tls(c);
    if (tern_tls_engine_recv(t->engine, data, len) != TERN_OK) {
        tern_conn_close(c, TERN_RC_SERVER_BUSY, "out of memory");
        return;
    }
    if (!tern_tls_engine_established(t->engine)) {
        int rc = tern_tls_engine_handshake(t->engine);
        tls_send(c); /* the next flight, or the alert that tells why */
        if (rc == TERN_EAGAIN || uv_is_closing((uv_handle_t *)&c->tcp))
            return;
        if (rc != TERN_OK) {
            tls_failed(c, tern_tls_engine_error(t->engine));
            return;
        }
        if (!tls_established(c, t))
            return;
    }
    tls_pull(c);
}

/* Decrypts what the engine holds into the MQTT input, as long as the
 * connection reads: while CONNECTING or paused the rest stays in the engine
 * (and the socket is not read), as a plain connection's stays in the kernel. */
static void tls_pull(struct tern_conn *c)
{
    struct tern_conn_tls *t = conn_tls(c);
    if (!t || !tern_tls_engine_established(t->engine))
        return;
    tern_conn_ref(c);
    bool ws = conn_ws(c) != NULL;
    while ((c->state == TERN_CONN_NEW || c->state == TERN_CONN_ACTIVE) && !c->paused) {
        /* wss: the plaintext is WebSocket frames, for the WebSocket engine. */
        uv_buf_t b =
            ws ? uv_buf_init((char *)c->node->ws_in, TERN_READ_CHUNK) : input_buf(c);
        size_t got = 0;
        if (!b.base) {
            tern_conn_close(c, TERN_RC_SERVER_BUSY, "out of memory");
            break;
        }
        int rc = tern_tls_engine_read(t->engine, (uint8_t *)b.base, b.len, &got);
        if (rc == TERN_EAGAIN)
            break;
        if (rc == TERN_ESHUTDOWN) {
            tern_conn_close(c, TERN_RC_UNSPECIFIED,
                            "connection closed by client (TLS close_notify)");
            break;
        }
        if (rc != TERN_OK) {
            char why[TERN_ERRMSG_SIZE];
            snprintf(why, sizeof(why), "TLS: %.200s", tern_tls_engine_error(t->engine));
            tern_conn_close(c, TERN_RC_UNSPECIFIED, why);
            break;
        }
        if (ws)
            ws_input(c, (const uint8_t *)b.base, got);
        else
            conn_input(c, b.base, got);
    }
    if (c->state != TERN_CONN_CLOSING)
        tls_send(c); /* reading can produce records (key updates) */
    tern_conn_unref(c);
}

/* Sends what the WebSocket engine has ready (the 101 or an HTTP error, frames,
 * pongs, a close), through TLS for wss. */
static void ws_send(struct tern_conn *c)
{
    struct tern_ws_engine *w = conn_ws(c);
    struct tern_conn_tls *t = conn_tls(c);
    const uint8_t *data;
    size_t n;
    /* The engine's buffer itself (no copy): raw_write and the TLS engine copy
     * what they keep. Taken over before the write, so a close on error that
     * queues a close frame starts a buffer of its own. */
    uint8_t *owned = tern_ws_engine_take_buffer(w, &data, &n);
    if (!owned)
        return;
    if (uv_is_closing((uv_handle_t *)&c->tcp)) {
        /* nothing is sent any more */
    } else if (!t) {
        raw_write(c, data, n);
    } else if (!tern_tls_engine_established(t->engine) ||
               tern_tls_engine_write(t->engine, data, n) != TERN_OK) {
        tern_conn_close(c, TERN_RC_UNSPECIFIED, tern_tls_engine_error(t->engine));
    } else {
        tls_send(c);
    }
    free(owned);
}

/* The upgrade was refused or not done in time: counted, logged, and only this
 * connection closed (after the HTTP error the engine queued). */
static void ws_failed(struct tern_conn *c, const char *why)
{
    char pb[TERN_PEER_STRLEN];
    c->node->stats.ws_handshake_failures++;
    TERN_LOGW("%s: WebSocket upgrade failed: %s", tern_conn_peer(c, pb), why);
    ws_send(c);
    tern_conn_close(c, TERN_RC_UNSPECIFIED, NULL);
}

/* The payload of the WebSocket engine's binary frames into the MQTT input, as
 * long as the connection reads (the rest waits in the engine, as for TLS). */
static void ws_pull(struct tern_conn *c)
{
    struct tern_ws_engine *w = conn_ws(c);
    if (!w)
        return;
    tern_conn_ref(c);
    bool was_open = tern_ws_engine_open(w);
    while ((c->state == TERN_CONN_NEW || c->state == TERN_CONN_ACTIVE) && !c->paused) {
        uv_buf_t b = input_buf(c);
        size_t got = 0;
        if (!b.base) {
            tern_conn_close(c, TERN_RC_SERVER_BUSY, "out of memory");
            break;
        }
        int rc = tern_ws_engine_read(w, (uint8_t *)b.base, b.len, &got);
        if (!was_open && tern_ws_engine_open(w)) {
            char pb[TERN_PEER_STRLEN];
            was_open = true;
            c->node->stats.ws_handshakes++;
            TERN_LOGD("%s: WebSocket upgraded, subprotocol %s", tern_conn_peer(c, pb),
                      tern_ws_engine_subprotocol(w));
        }
        if (rc == TERN_EAGAIN)
            break;
        if (rc == TERN_ESHUTDOWN) {
            ws_send(c); /* the close frame's answer */
            tern_conn_close(c, TERN_RC_UNSPECIFIED,
                            "connection closed by client (WebSocket close)");
            break;
        }
        if (rc == TERN_EPROTO && !tern_ws_engine_open(w)) {
            ws_failed(c, tern_ws_engine_error(w));
            break;
        }
        if (rc != TERN_OK) {
            char why[TERN_ERRMSG_SIZE];
            if (rc == TERN_EPROTO)
                c->node->stats.ws_protocol_errors++;
            snprintf(why, sizeof(why), "WebSocket: %.200s",
                     rc == TERN_EPROTO ? tern_ws_engine_error(w) : "out of memory");
            ws_send(c); /* the close frame with its code */
            tern_conn_close(c, TERN_RC_UNSPECIFIED, why);
            break;
        }
        conn_input(c, b.base, got);
    }
    if (c->state != TERN_CONN_CLOSING)
        ws_send(c); /* the 101, pongs */
    tern_conn_unref(c);
}

static void ws_input(struct tern_conn *c, const uint8_t *data, size_t len)
{
    if (tern_ws_engine_recv(conn_ws(c), data, len) != TERN_OK) {
        tern_conn_close(c, TERN_RC_SERVER_BUSY, "out of memory");
        return;
    }
    ws_pull(c);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct tern_conn *c = s->data;
    if (nread < 0) {
        c->read_ended = true; /* nothing to drain */
        tern_conn_close(c, TERN_RC_UNSPECIFIED,
                        nread == UV_EOF ? "connection closed by client"
                                        : uv_strerror((int)nread));
        return;
    }
    if (nread == 0)
        return;
    c->node->stats.bytes_in += (uint64_t)nread;
    char *base = buf->base;
    if (tern_conn_proxy_waiting(c)) {
        /* The PROXY header first (conn_proxy.c); what follows it goes on. */
        long used = tern_conn_proxy_input(c, (const uint8_t *)base, (size_t)nread);
        if (used < 0 || used == nread)
            return;
        nread -= used;
        if (conn_tls(c))
            base += used;
        else /* the shared read buffer: conn_input wants the rest at its start */
            memmove(base, base + used, (size_t)nread);
    }
    if (conn_tls(c))
        tls_input(c, (const uint8_t *)base, (size_t)nread);
    else if (conn_ws(c))
        ws_input(c, (const uint8_t *)base, (size_t)nread);
    else
        conn_input(c, base, (size_t)nread);
}

static const char *packet_name(uint8_t type)
{
    static const char *names[] = {"reserved",  "CONNECT",  "CONNACK",     "PUBLISH",
                                  "PUBACK",    "PUBREC",   "PUBREL",      "PUBCOMP",
                                  "SUBSCRIBE", "SUBACK",   "UNSUBSCRIBE", "UNSUBACK",
                                  "PINGREQ",   "PINGRESP", "DISCONNECT",  "AUTH"};
    return type < 16 ? names[type] : "?";
}

/* Refuses a CONNECT that failed to decode, with the CONNACK the client can read. */
static void reject_connect(struct tern_conn *c, const uint8_t *frame, size_t len,
                           const struct tern_codec_error *err)
{
    /* Protocol level is byte 8 of a CONNECT with a 1-byte remaining length;
     * decode failed, so look at it carefully. */
    uint8_t version = TERN_MQTT_311;
    size_t off = 1;
    while (off < len && off < 5 && (frame[off] & 0x80))
        off++;
    off++;
    if (off + 6 < len && frame[off + 6] == TERN_MQTT_5)
        version = TERN_MQTT_5;
    c->version = version;
    struct tern_packet p = {.type = TERN_CONNACK};
    if (version == TERN_MQTT_5)
        p.u.connack.reason = err->reason;
    else
        p.u.connack.reason = err->reason == TERN_RC_UNSUPPORTED_PROTOCOL_VERSION
                                 ? TERN_V3_BAD_PROTOCOL
                                 : TERN_V3_ID_REJECTED;
    if (version == TERN_MQTT_5 || err->reason == TERN_RC_UNSUPPORTED_PROTOCOL_VERSION)
        tern_conn_send(c, &p);
}

static int dispatch(struct tern_conn *c, struct tern_packet *p, const uint8_t *frame,
                    size_t frame_len, uint8_t *reason)
{
    if (c->state == TERN_CONN_NEW && p->type != TERN_CONNECT &&
        !(p->type == TERN_AUTH && tern_access_scram_pending(c))) {
        *reason = TERN_RC_PROTOCOL_ERROR;
        return TERN_EPROTO;
    }
    switch (p->type) {
    case TERN_CONNECT:
        if (c->state != TERN_CONN_NEW) {
            *reason = TERN_RC_PROTOCOL_ERROR;
            return TERN_EPROTO;
        }
        if (tern_connect_waits(c, &p->u.connect))
            return TERN_EAGAIN;
        if (p->u.connect.version == TERN_MQTT_5 &&
            (p->u.connect.props.mask & TERN_PROP_BIT(TERN_PROP_AUTH_METHOD)))
            return tern_access_scram_connect(c, &p->u.connect, frame, frame_len, reason);
        return tern_handle_connect(c, &p->u.connect, reason);
    case TERN_PUBLISH:
        return tern_handle_publish(c, &p->u.publish, reason);
    case TERN_PUBACK:
    case TERN_PUBREC:
    case TERN_PUBREL:
    case TERN_PUBCOMP:
        return tern_handle_ack(c, p->type, &p->u.ack, reason);
    case TERN_SUBSCRIBE:
        return tern_handle_subscribe(c, &p->u.sub, reason);
    case TERN_UNSUBSCRIBE:
        return tern_handle_unsubscribe(c, &p->u.sub, reason);
    case TERN_PINGREQ: {
        struct tern_packet r = {.type = TERN_PINGRESP};
        tern_conn_send(c, &r);
        return TERN_OK;
    }
    case TERN_DISCONNECT:
        return tern_handle_disconnect(c, &p->u.disconnect, reason);
    case TERN_AUTH:
        /* SCRAM-SHA-256 before CONNACK; re-authentication is not offered. */
        return tern_access_scram_auth(c, &p->u.disconnect, reason);
    default:
        /* CONNACK, SUBACK ... are server-to-client only. */
        *reason = TERN_RC_PROTOCOL_ERROR;
        return TERN_EPROTO;
    }
}

/* Decodes and handles every whole packet in rbuf. Stops while the session is
 * being opened (packets pipelined after CONNECT wait for CONNACK), while the
 * CONNECT waits for an earlier one (it stays in rbuf) and while the connection
 * is paused (the rest waits in rbuf). */
static void conn_process(struct tern_conn *c)
{
    size_t off = 0;
    tern_conn_ref(c);
    while ((c->state == TERN_CONN_NEW || c->state == TERN_CONN_ACTIVE) && !c->paused) {
        size_t frame_len;
        struct tern_codec_error err = {0, NULL};
        int rv = tern_codec_frame(c->rbuf->data + off, c->rbuf->len - off,
                                  c->node->cfg.max_packet_size, &frame_len, &err);
        if (rv == TERN_EAGAIN)
            break;
        if (rv != TERN_OK) {
            c->node->stats.protocol_errors++;
            tern_conn_close(c, err.reason, err.msg);
            break;
        }
        struct tern_packet p;
        rv = tern_codec_decode(c->rbuf->data + off, frame_len, c->version, &p, &err);
        if (rv != TERN_OK) {
            c->node->stats.protocol_errors++;
            const uint8_t *frame = c->rbuf->data + off;
            if (c->state == TERN_CONN_NEW && (frame[0] >> 4) == TERN_CONNECT)
                reject_connect(c, frame, frame_len, &err);
            char why[160];
            snprintf(why, sizeof(why), "bad %s: %s", packet_name(frame[0] >> 4),
                     err.msg ? err.msg : "malformed");
            tern_conn_close(c, err.reason, why);
            break;
        }
        uint8_t reason = TERN_RC_SUCCESS;
        rv = dispatch(c, &p, c->rbuf->data + off, frame_len, &reason);
        if (rv == TERN_EAGAIN && c->state == TERN_CONN_WAITING)
            break; /* the CONNECT waits (tern_connect_waits) */
        off += frame_len;
        if (rv != TERN_OK) {
            c->node->stats.protocol_errors++;
            char why[160];
            snprintf(why, sizeof(why), "%s refused", packet_name(p.type));
            tern_conn_close(c, reason, why);
            break;
        }
    }
    if (off > 0 && c->state != TERN_CONN_CLOSING) {
        memmove(c->rbuf->data, c->rbuf->data + off, c->rbuf->len - off);
        c->rbuf->len -= (uint32_t)off;
    }
    /* Hold reading while CONNECTING so input waits in the kernel, bounded. */
    if (c->state == TERN_CONN_CONNECTING || c->state == TERN_CONN_WAITING)
        uv_read_stop((uv_stream_t *)&c->tcp);
    tern_conn_unref(c);
}

/* Reads again, first what waited in rbuf and in the TLS or WebSocket engine. */
static void read_again(struct tern_conn *c)
{
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    if (c->rbuf && c->rbuf->len)
        conn_process(c);
    ws_pull(c);  /* frames that waited in the WebSocket engine */
    tls_pull(c); /* plaintext that waited in the TLS engine */
}

/* The CONNECT kept in c's rbuf is handled again, with nothing of its wait left
 * on c: the client id is taken from the table afresh. */
static void open_resume(struct tern_conn *c)
{
    struct tern_clients *t = &c->node->clients;
    struct tern_client_slot *slot = tern_clients_slot_of(c->client_id);
    slot->waiting = NULL;
    c->state = TERN_CONN_NEW;
    c->client_id = NULL;
    c->client_id_len = 0;
    tern_clients_release(t, slot);
    tern_conn_ref(c);
    read_again(c);
    tern_clients_drop(t, slot); /* the wait's hold */
    tern_conn_unref(c);
}

void tern_conn_open_waiting(struct tern_node *n)
{
    if (!n->clients.wake)
        return;
    n->clients.wake = false;
    /* Closing a connection frees it only from its close callback. */
    struct tern_conn *next;
    for (struct tern_conn *c = n->conns; c; c = next) {
        next = c->next;
        if (c->state == TERN_CONN_WAITING &&
            !tern_clients_slot_of(c->client_id)->connecting)
            open_resume(c);
    }
}

void tern_conn_pause(struct tern_conn *c, uint32_t node)
{
    struct tern_node *n = c->node;
    if (c->paused || c->state != TERN_CONN_ACTIVE ||
        tern_cluster_forward_backlog(n->cluster, node) < FORWARD_PAUSE_BYTES)
        return;
    c->paused = true;
    c->paused_on = node; /* last_rx_ms is set again on resume */
    n->paused_count++;
    n->stats.publishers_paused++;
    uv_read_stop((uv_stream_t *)&c->tcp);
}

/* Flow control (flow.c): not read while a subscriber it feeds is backlogged.
 * Returns false if it cannot be held (not active, or paused already). */
bool tern_conn_hold(struct tern_conn *c)
{
    struct tern_node *n = c->node;
    if (c->paused || c->state != TERN_CONN_ACTIVE)
        return false;
    c->paused = true;
    c->paused_on = TERN_PAUSED_FLOW;
    n->held_count++;
    n->stats.publishers_held++;
    uv_read_stop((uv_stream_t *)&c->tcp);
    return true;
}

void tern_conn_unhold(struct tern_conn *c)
{
    if (!c->paused || c->paused_on != TERN_PAUSED_FLOW || c->state != TERN_CONN_ACTIVE)
        return;
    c->paused = false;
    c->node->held_count--;
    c->last_rx_ms = tern_mono_ms(); /* we were the ones not reading */
    tern_conn_resume(c);
}

/* Every link short again: everyone resumes (the common case, checked each turn).
 * Otherwise, every few ms, those whose own link is short again: a slow node
 * holds back only the publishers that send to it. */
void tern_conn_resume_paused(struct tern_node *n)
{
    if (n->paused_count == 0)
        return;
    uint64_t now = tern_mono_ms();
    bool all = tern_cluster_forward_backlog(n->cluster, 0) <= FORWARD_RESUME_BYTES;
    if (!all && now - n->paused_scan_ms < PAUSED_SCAN_MS)
        return;
    n->paused_scan_ms = now;
    for (struct tern_conn *c = n->conns; c && n->paused_count; c = c->next) {
        if (!c->paused || c->paused_on == TERN_PAUSED_FLOW ||
            (!all && tern_cluster_forward_backlog(n->cluster, c->paused_on) >
                         FORWARD_RESUME_BYTES))
            continue;
        c->paused = false;
        n->paused_count--;
        c->last_rx_ms = now; /* we were the ones not reading */
        tern_conn_resume(c);
    }
}

/* Resumes reading once CONNACK has been sent, or after a pause. */
void tern_conn_resume(struct tern_conn *c)
{
    if (c->state != TERN_CONN_ACTIVE || c->paused)
        return;
    read_again(c);
}

/* Connect timeout and keepalive for every connection, from one node-wide timer
 * (node.c) instead of a timer handle per connection: an idle connection then
 * costs no timer. Until CONNACK, last_rx_ms is the accept time. */
void tern_conn_sweep(struct tern_node *n, uint64_t now)
{
    for (struct tern_conn *c = n->conns; c; c = c->next) {
        uint64_t idle = now - c->last_rx_ms;
        if (c->state == TERN_CONN_CLOSING) {
            if (c->draining && idle >= DRAIN_MS)
                close_handle(c); /* the client kept its side open (or writing) */
        } else if (c->state == TERN_CONN_NEW && tern_conn_proxy_waiting(c)) {
            if (idle >= n->cfg.proxy_header_timeout_ms ||
                idle >= n->cfg.connect_timeout_ms)
                tern_conn_proxy_expired(c);
        } else if (c->state == TERN_CONN_NEW && conn_tls(c) &&
                   !tern_tls_engine_established(conn_tls(c)->engine)) {
            if (idle >= n->cfg.tls_handshake_timeout_ms)
                tls_failed(c, "not done within tls_handshake_timeout_ms");
            else if (idle >= n->cfg.connect_timeout_ms)
                tern_conn_close(c, TERN_RC_MAX_CONNECT_TIME,
                                "no CONNECT within connect_timeout_ms");
        } else if (c->state == TERN_CONN_NEW && conn_ws(c) &&
                   !tern_ws_engine_open(conn_ws(c))) {
            if (idle >= n->cfg.ws_handshake_timeout_ms)
                ws_failed(c, "upgrade not done within ws_handshake_timeout_ms");
            else if (idle >= n->cfg.connect_timeout_ms)
                tern_conn_close(c, TERN_RC_MAX_CONNECT_TIME,
                                "no CONNECT within connect_timeout_ms");
        } else if (c->state == TERN_CONN_NEW || c->state == TERN_CONN_WAITING ||
                   c->state == TERN_CONN_CONNECTING) {
            if (idle >= n->cfg.connect_timeout_ms)
                tern_conn_close(c, TERN_RC_MAX_CONNECT_TIME,
                                "no CONNECT within connect_timeout_ms");
        } else if (c->state == TERN_CONN_ACTIVE && c->keepalive_s && !c->paused &&
                   idle >= (uint64_t)c->keepalive_s * 1500) {
            tern_conn_close(c, TERN_RC_KEEP_ALIVE_TIMEOUT, "keepalive expired");
        }
    }
}

void tern_conn_keepalive_start(struct tern_conn *c)
{
    c->last_rx_ms = tern_mono_ms(); /* 1.5 x keepalive from CONNACK on (3.1.2.10) */
}

const char *tern_conn_peer(const struct tern_conn *c, char *buf)
{
    char host[48] = "?";
    const struct tern_conn_addr *p = &c->peer;
    if (p->family == 4)
        uv_inet_ntop(AF_INET, p->addr, host, sizeof(host));
    else if (p->family == 6)
        uv_inet_ntop(AF_INET6, p->addr, host, sizeof(host));
    snprintf(buf, TERN_PEER_STRLEN, p->family == 6 ? "[%s]:%u" : "%s:%u", host,
             (unsigned)p->port);
    return buf;
}

void tern_conn_accept(struct tern_node *n, struct tern_listener *l)
{
    struct tern_conn *c = calloc(1, sizeof(*c));
    if (!c)
        return;
    c->node = n;
    c->state = TERN_CONN_NEW;
    uv_tcp_init(n->loop, &c->tcp);
    c->tcp.data = c;
    c->refs = 1; /* the handle */
    c->next = n->conns;
    if (n->conns)
        n->conns->prev = c;
    n->conns = c;
    n->conn_count++;
    if (uv_accept((uv_stream_t *)&l->tcp, (uv_stream_t *)&c->tcp) != 0) {
        c->state = TERN_CONN_CLOSING;
        uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
        return;
    }
    struct sockaddr_storage ss;
    int sl = sizeof(ss);
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &sl) == 0) {
        if (ss.ss_family == AF_INET) {
            const struct sockaddr_in *a = (const struct sockaddr_in *)&ss;
            memcpy(c->peer.addr, &a->sin_addr, 4);
            c->peer.port = ntohs(a->sin_port);
            c->peer.family = 4;
        } else if (ss.ss_family == AF_INET6) {
            const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&ss;
            memcpy(c->peer.addr, &a->sin6_addr, 16);
            c->peer.port = ntohs(a->sin6_port);
            c->peer.family = 6;
        }
    }
    /* Per source address (access.c), before anything is read from it; behind a
     * PROXY header, once the header has named the client (conn_proxy.c). */
    bool proxied = l->cfg && l->cfg->proxy_protocol;
    if (!n->stopping && !proxied && !tern_access_accept(c)) {
        n->stats.connections_rejected++;
        c->state = TERN_CONN_CLOSING;
        uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
        return;
    }
    if (n->conn_count > n->cfg.max_connections || n->stopping) {
        n->stats.connections_rejected++;
        c->state = TERN_CONN_CLOSING;
        char pb[TERN_PEER_STRLEN];
        TERN_LOGW("%s: refused: max_connections (%u) reached", tern_conn_peer(c, pb),
                  n->cfg.max_connections);
        uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
        return;
    }
    if (l->tls) {
        struct tern_conn_opt *o = tern_conn_opt(c);
        struct tern_conn_tls *t = o ? calloc(1, sizeof(*t)) : NULL;
        if (t) {
            o->tls = t;
            t->listener = l;
            t->engine = tern_tls_engine_new(l->tls);
        }
        if (!t || !t->engine) {
            char pb[TERN_PEER_STRLEN];
            TERN_LOGW("%s: refused: out of memory for TLS", tern_conn_peer(c, pb));
            c->state = TERN_CONN_CLOSING;
            uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
            return;
        }
    }
    if (proxied && !tern_conn_proxy_start(c)) {
        char pb[TERN_PEER_STRLEN];
        TERN_LOGW("%s: refused: out of memory for the PROXY header",
                  tern_conn_peer(c, pb));
        c->state = TERN_CONN_CLOSING;
        uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
        return;
    }
    if (l->ws) {
        struct tern_conn_opt *o = tern_conn_opt(c);
        if (o)
            o->ws = tern_ws_engine_new(&l->ws_opts);
        if (!o || !o->ws) {
            char pb[TERN_PEER_STRLEN];
            TERN_LOGW("%s: refused: out of memory for WebSocket", tern_conn_peer(c, pb));
            c->state = TERN_CONN_CLOSING;
            uv_close((uv_handle_t *)&c->tcp, on_handle_closed);
            return;
        }
    }
    n->stats.connections_accepted++;
    uv_tcp_nodelay(&c->tcp, 1);
    /* A device's connection is a thin stream (a few small packets in flight):
     * after a segment lost twice it otherwise waits out a retransmission timer
     * doubled each time, and a client on a lossy network heard nothing for
     * seconds after the network was back (docs/reliability.md, session 8).
     * Linear timeouts for such streams only (the kernel's test: under 4
     * segments in flight, past slow start), for 6 retries at most. Under BBR,
     * which never ends slow start in that sense (no snd_ssthresh), the kernel
     * never applies them (docs/reliability.md, session 9). */
    uv_os_fd_t fd;
    int one = 1;
    if (uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0)
        setsockopt(fd, IPPROTO_TCP, TCP_THIN_LINEAR_TIMEOUTS, &one, sizeof(one));
    c->last_rx_ms = tern_mono_ms();
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}
