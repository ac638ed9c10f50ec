/* See link_tls.h. */
#include "link_tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* The TLS engine lives in node/ until the layout move gives it a folder of its
 * own; it is a library of its own already (tern_tls), with no node code. */
#include "tern/tls.h"
#include "tern/error.h"
#include "tern/log.h"

#define READ_BYTES (64u << 10)
/* Plaintext written to the socketpair and not read by the owner yet: past
 * this the TCP connection is not read until it drains (backpressure). */
#define PLAIN_UNSENT_MAX (4u << 20)
#define LOG_EVERY_MS 1000

enum { HANDSHAKING, UP, CLOSING };

struct tern_link_tls {
    struct tern_link_tls_set *set;
    struct tern_link_tls *next;
    uv_loop_t *loop;
    uv_tcp_t *tcp;
    uv_pipe_t pipe; /* our end of the socketpair, once UP */
    uv_timer_t timer;
    int open; /* handles not closed yet */
    int state;
    bool tcp_paused, pipe_paused;
    bool pipe_open;       /* the pipe handle is initialised */
    const char *late_why; /* a failure in start, reported from the timer */
    struct tern_tls_engine *e;
    struct tern_link_tls_opts o;
    tern_link_tls_cb cb;
    void *data;
    char peer[96]; /* "node N at ADDRESS", for the log */
};

struct wreq {
    uv_write_t req;
    struct tern_link_tls *l;
    uint8_t bytes[];
};

static int creds_ctx(struct tern_tls_ctx **out, const struct tern_link_tls_files *f,
                     bool server, char *errmsg)
{
    struct tern_tls_opts o = {
        .server = server,
        .cert_file = f->cert_file,
        .key_file = f->key_file,
        .ca_file = f->ca_file,
        .crl_file = f->crl_file,
        .require_certificate = true,
        .min_version = TERN_TLS_1_2,
    };
    char why[TERN_ERRMSG_SIZE];
    int rc = tern_tls_ctx_new(out, &o, why);
    if (rc != TERN_OK)
        snprintf(errmsg, TERN_ERRMSG_SIZE, "cluster_tls.%.200s", why);
    return rc;
}

int tern_link_creds_load(struct tern_link_creds *c, const struct tern_link_tls_files *f,
                         char *errmsg)
{
    const char *missing = !f->cert_file || !f->cert_file[0] ? "cert_file"
                          : !f->key_file || !f->key_file[0] ? "key_file"
                          : !f->ca_file || !f->ca_file[0]   ? "ca_file"
                                                            : NULL;
    if (missing) {
        snprintf(errmsg, TERN_ERRMSG_SIZE, "cluster_tls.%s: required", missing);
        return TERN_EINVAL;
    }
    struct tern_link_creds n = {0};
    int rc = creds_ctx(&n.server, f, true, errmsg);
    if (rc == TERN_OK)
        rc = creds_ctx(&n.client, f, false, errmsg);
    if (rc != TERN_OK) {
        tern_link_creds_free(&n);
        return rc;
    }
    tern_link_creds_free(c);
    *c = n;
    return TERN_OK;
}

void tern_link_creds_free(struct tern_link_creds *c)
{
    tern_tls_ctx_free(c->server);
    tern_tls_ctx_free(c->client);
    c->server = c->client = NULL;
}

uint32_t tern_link_tls_node_of(const char *cn)
{
    if (strncmp(cn, "node-", 5) != 0)
        return 0;
    const char *p = cn + 5;
    uint64_t v = 0;
    if (*p < '1' || *p > '9') /* no sign, no leading zero: one spelling per id */
        return 0;
    for (; *p; p++) {
        if (*p < '0' || *p > '9')
            return 0;
        v = v * 10 + (uint64_t)(*p - '0');
        if (v > UINT32_MAX)
            return 0;
    }
    return (uint32_t)v;
}

/* --- closing --- */

static void unlink_set(struct tern_link_tls *l)
{
    for (struct tern_link_tls **pp = &l->set->head; *pp; pp = &(*pp)->next)
        if (*pp == l) {
            *pp = l->next;
            return;
        }
}

static void on_closed(uv_handle_t *h)
{
    struct tern_link_tls *l = h->data;
    if (--l->open > 0)
        return;
    l->o.free_tcp(l->tcp);
    tern_tls_engine_free(l->e);
    free(l);
}

static void close_link(struct tern_link_tls *l)
{
    if (l->state == CLOSING)
        return;
    if (l->state == HANDSHAKING)
        l->set->handshaking--;
    l->state = CLOSING;
    unlink_set(l);
    uv_close((uv_handle_t *)l->tcp, on_closed);
    uv_close((uv_handle_t *)&l->timer, on_closed);
    if (l->pipe_open)
        uv_close((uv_handle_t *)&l->pipe, on_closed);
}

/* A failure worth the operator's eye: logged at most once a second per set,
 * with how many were not. */
static void log_failure(struct tern_link_tls *l, const char *why)
{
    struct tern_link_tls_set *s = l->set;
    s->failures++;
    uint64_t now = uv_now(l->loop);
    if (s->failures > 1 && now - s->logged_ms < LOG_EVERY_MS) {
        s->unlogged++;
        return;
    }
    char more[64] = "";
    if (s->unlogged)
        snprintf(more, sizeof(more), " (and %llu more since the last line)",
                 (unsigned long long)s->unlogged);
    TERN_LOGW("%s: TLS %s %s: %s: refused%s", s->what,
              l->o.expect_id ? "connection to" : "connection from", l->peer, why, more);
    s->logged_ms = now;
    s->unlogged = 0;
}

static void fail(struct tern_link_tls *l, const char *why)
{
    if (l->state != HANDSHAKING) {
        close_link(l);
        return;
    }
    log_failure(l, why);
    tern_link_tls_cb cb = l->cb;
    void *data = l->data;
    close_link(l);
    cb(data, TERN_EPROTO, -1, 0);
}

/* --- moving bytes --- */

static void alloc_read(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    (void)h;
    (void)hint;
    buf->base = malloc(READ_BYTES);
    buf->len = buf->base ? READ_BYTES : 0;
}

static void on_pipe_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf);

static void on_tcp_written(uv_write_t *w, int status)
{
    struct wreq *r = (struct wreq *)w;
    struct tern_link_tls *l = r->l;
    free(r);
    if (l->state == CLOSING)
        return;
    if (status != 0) {
        fail(l, uv_strerror(status));
        return;
    }
    if (l->pipe_paused &&
        uv_stream_get_write_queue_size((uv_stream_t *)l->tcp) <= l->o.unsent_max / 2) {
        l->pipe_paused = false;
        uv_read_start((uv_stream_t *)&l->pipe, alloc_read, on_pipe_read);
    }
}

/* The engine's ciphertext out on the TCP connection. */
static int flush_tcp(struct tern_link_tls *l)
{
    size_t n = tern_tls_engine_pending(l->e);
    if (n == 0)
        return TERN_OK;
    struct wreq *r = malloc(sizeof(*r) + n);
    if (!r)
        return TERN_ENOMEM;
    r->l = l;
    size_t got = tern_tls_engine_take(l->e, r->bytes, n);
    uv_buf_t b = uv_buf_init((char *)r->bytes, (unsigned)got);
    if (uv_write(&r->req, (uv_stream_t *)l->tcp, &b, 1, on_tcp_written) != 0) {
        free(r);
        return TERN_EIO;
    }
    return TERN_OK;
}

static void on_tcp_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf);

static void on_pipe_written(uv_write_t *w, int status)
{
    struct wreq *r = (struct wreq *)w;
    struct tern_link_tls *l = r->l;
    free(r);
    if (l->state == CLOSING)
        return;
    if (status != 0) {
        close_link(l); /* the owner closed its end */
        return;
    }
    if (l->tcp_paused &&
        uv_stream_get_write_queue_size((uv_stream_t *)&l->pipe) <= PLAIN_UNSENT_MAX / 2) {
        l->tcp_paused = false;
        uv_read_start((uv_stream_t *)l->tcp, alloc_read, on_tcp_read);
    }
}

/* Plaintext the engine has decrypted, to the owner: as many records as fill
 * READ_BYTES per write (one system call for a burst of AppendEntries, not one
 * per 16 KiB record). */
static void drain_plain(struct tern_link_tls *l)
{
    for (;;) {
        struct wreq *r = malloc(sizeof(*r) + READ_BYTES);
        if (!r) {
            close_link(l);
            return;
        }
        r->l = l;
        size_t len = 0;
        int rc = TERN_OK;
        while (len < READ_BYTES) {
            size_t got = 0;
            rc = tern_tls_engine_read(l->e, r->bytes + len, READ_BYTES - len, &got);
            if (rc != TERN_OK)
                break;
            len += got;
        }
        if (len > 0) {
            uv_buf_t b = uv_buf_init((char *)r->bytes, (unsigned)len);
            if (uv_write(&r->req, (uv_stream_t *)&l->pipe, &b, 1, on_pipe_written) != 0) {
                free(r);
                close_link(l);
                return;
            }
        } else {
            free(r);
        }
        if (rc == TERN_OK)
            continue; /* the buffer filled: there may be more */
        if (rc == TERN_ESHUTDOWN) {
            close_link(l);
            return;
        }
        if (rc != TERN_EAGAIN) {
            TERN_LOGW("%s: TLS link with %s: %s: closed", l->set->what, l->peer,
                      tern_tls_engine_error(l->e));
            close_link(l);
            return;
        }
        break;
    }
    /* Ciphertext the reads made (TLS 1.3 key updates, alerts). */
    if (flush_tcp(l) != TERN_OK) {
        close_link(l);
        return;
    }
    if (!l->tcp_paused &&
        uv_stream_get_write_queue_size((uv_stream_t *)&l->pipe) > PLAIN_UNSENT_MAX) {
        l->tcp_paused = true;
        uv_read_stop((uv_stream_t *)l->tcp);
    }
}

/* The handshake is done: check who the peer is, then hand over the plaintext. */
static void established(struct tern_link_tls *l)
{
    char cn[128];
    char why[200];
    uint32_t id = 0;
    if (tern_tls_engine_peer_cn(l->e, cn, sizeof(cn)) != TERN_OK) {
        fail(l, "the certificate has no usable CN");
        return;
    }
    id = tern_link_tls_node_of(cn);
    if (id == 0) {
        snprintf(why, sizeof(why), "certificate CN \"%.64s\" names no node (node-N)", cn);
        fail(l, why);
        return;
    }
    if (l->o.expect_id && id != l->o.expect_id) {
        snprintf(why, sizeof(why), "certificate names node %u, not node %u", id,
                 l->o.expect_id);
        fail(l, why);
        return;
    }
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0) {
        fail(l, strerror(errno));
        return;
    }
    uv_pipe_init(l->loop, &l->pipe, 0);
    l->pipe.data = l;
    l->open++;
    l->pipe_open = true;
    if (uv_pipe_open(&l->pipe, sv[1]) != 0) {
        close(sv[0]);
        close(sv[1]);
        fail(l, "cannot open the socketpair");
        return;
    }
    uv_timer_stop(&l->timer);
    l->state = UP;
    l->set->handshaking--;
    uv_read_start((uv_stream_t *)&l->pipe, alloc_read, on_pipe_read);
    l->cb(l->data, TERN_OK, sv[0], id);
    if (l->state == UP)
        drain_plain(l); /* application data that came with the handshake */
}

static void on_tcp_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct tern_link_tls *l = s->data;
    if (n <= 0 || l->state == CLOSING) {
        free(buf->base);
        if (n < 0 && l->state != CLOSING)
            fail(l, n == UV_EOF ? "closed by the peer" : uv_strerror((int)n));
        return;
    }
    int rc = tern_tls_engine_recv(l->e, (const uint8_t *)buf->base, (size_t)n);
    free(buf->base);
    if (rc != TERN_OK) {
        fail(l, "out of memory");
        return;
    }
    if (l->state == UP) {
        drain_plain(l);
        return;
    }
    rc = tern_tls_engine_handshake(l->e);
    int frc = flush_tcp(l); /* the next flight, or the alert that says why */
    if (rc == TERN_OK && frc == TERN_OK)
        established(l);
    else if (rc == TERN_EPROTO)
        fail(l, tern_tls_engine_error(l->e));
    else if (frc != TERN_OK)
        fail(l, "cannot write");
}

/* What the owner wrote to its end: encrypted onto the TCP connection. */
static void pipe_data(struct tern_link_tls *l, const uint8_t *data, size_t n)
{
    if (tern_tls_engine_write(l->e, data, n) != TERN_OK || flush_tcp(l) != TERN_OK) {
        close_link(l);
        return;
    }
    if (uv_stream_get_write_queue_size((uv_stream_t *)l->tcp) > l->o.unsent_max) {
        if (l->o.close_when_full) {
            TERN_LOGW("%s: link to node %u: peer not reading (%zu bytes unsent): closed",
                      l->set->what, l->o.expect_id, l->o.unsent_max);
            close_link(l);
        } else if (!l->pipe_paused) {
            l->pipe_paused = true;
            uv_read_stop((uv_stream_t *)&l->pipe);
        }
    }
}

static void on_pipe_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct tern_link_tls *l = s->data;
    if (n <= 0 || l->state != UP) {
        free(buf->base);
        if (n < 0 && l->state == UP) {
            /* The owner closed: close_notify, then close. */
            tern_tls_engine_shutdown(l->e);
            flush_tcp(l);
            close_link(l);
        }
        return;
    }
    pipe_data(l, (const uint8_t *)buf->base, (size_t)n);
    free(buf->base);
}

/* Reads the owner's end now rather than in the loop's next poll phase: what is
 * read here is on the TCP connection (in the kernel) when this returns. At most
 * 64 reads, and not while the link is paused. */
static void pump_now(struct tern_link_tls *l, uint8_t *buf)
{
    uv_os_fd_t fd;
    if (uv_fileno((const uv_handle_t *)&l->pipe, &fd) != 0)
        return;
    for (int i = 0; i < 64 && l->state == UP && !l->pipe_paused; i++) {
        ssize_t n = read(fd, buf, READ_BYTES);
        if (n <= 0)
            return; /* nothing more, or the end: libuv's own read sees it */
        pipe_data(l, buf, (size_t)n);
    }
}

void tern_link_tls_flush_all(struct tern_link_tls_set *set)
{
    uint8_t *buf = NULL;
    for (struct tern_link_tls *l = set->head, *next; l; l = next) {
        next = l->next; /* pump_now may close l (it leaves the list then) */
        if (l->state != UP)
            continue;
        if (!buf && !(buf = malloc(READ_BYTES)))
            return;
        pump_now(l, buf);
    }
    free(buf);
}

static void on_timeout(uv_timer_t *t)
{
    struct tern_link_tls *l = t->data;
    fail(l, l->late_why ? l->late_why : "TLS handshake timed out");
}

struct tern_link_tls *tern_link_tls_start(struct tern_link_tls_set *set, uv_loop_t *loop,
                                          uv_tcp_t *tcp,
                                          const struct tern_link_tls_opts *o,
                                          tern_link_tls_cb cb, void *data)
{
    struct tern_link_tls *l = calloc(1, sizeof(*l));
    struct tern_tls_engine *e = l && o->ctx ? tern_tls_engine_new(o->ctx) : NULL;
    if (!e) {
        free(l);
        uv_close((uv_handle_t *)tcp, (uv_close_cb)o->free_tcp);
        return NULL;
    }
    *l = (struct tern_link_tls){.set = set,
                                .loop = loop,
                                .tcp = tcp,
                                .open = 2,
                                .state = HANDSHAKING,
                                .e = e,
                                .o = *o,
                                .cb = cb,
                                .data = data};
    char host[32] = "?";
    unsigned port = 0;
    struct sockaddr_storage sa;
    int len = sizeof(sa);
    if (uv_tcp_getpeername(tcp, (struct sockaddr *)&sa, &len) == 0 &&
        sa.ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)&sa;
        uv_ip4_name(in, host, sizeof(host));
        port = ntohs(in->sin_port);
    }
    if (o->expect_id)
        snprintf(l->peer, sizeof(l->peer), "node %u at %s:%u", o->expect_id, host, port);
    else
        snprintf(l->peer, sizeof(l->peer), "%s:%u", host, port);
    tcp->data = l;
    uv_timer_init(loop, &l->timer);
    l->timer.data = l;
    l->next = set->head;
    set->head = l;
    set->handshaking++;
    uv_timer_start(&l->timer, on_timeout, o->timeout_ms, 0);
    if (uv_read_start((uv_stream_t *)tcp, alloc_read, on_tcp_read) != 0) {
        /* As if it had failed at once, but reported later: the caller's
         * callback never runs inside this call. */
        l->late_why = "cannot read";
        uv_timer_start(&l->timer, on_timeout, 0, 0);
        return l;
    }
    if (o->expect_id) { /* a client speaks first */
        int rc = tern_tls_engine_handshake(e);
        if (rc == TERN_EPROTO || flush_tcp(l) != TERN_OK) {
            l->late_why = "cannot start the handshake";
            uv_timer_start(&l->timer, on_timeout, 0, 0);
        }
    }
    return l;
}

void tern_link_tls_cancel(struct tern_link_tls *l)
{
    close_link(l);
}

void tern_link_tls_close_all(struct tern_link_tls_set *set)
{
    while (set->head)
        close_link(set->head);
}
