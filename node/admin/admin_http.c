/* A minimal HTTP/1.1 server for the admin API (node.h: admin_http.c).
 *
 * Shaped for a handful of operators and scripts, not for traffic: one request per
 * connection (every response says Connection: close), the whole request (line,
 * headers and any body) at most 8 KiB, at most 64 connections at once, 10 s to
 * send the request. GET/POST/DELETE are parsed alike; the handler decides what a
 * method means. Bodies are read (so closing does not reset the connection) and
 * ignored: every parameter is in the path or the query.
 *
 * Lifetime: a connection is referenced by its two handles (one reference for the
 * pair), by a handler that answers later (tern_http_hold) and by each write in
 * flight. It is freed when the last reference goes.
 *
 * HTTPS (admin_tls_*): each connection gets a TLS engine (include/tls/tern/tls.h); the
 * ciphertext read goes through a server-wide buffer into the engine, the
 * plaintext into the request buffer as without TLS; handshake flights are written
 * as they come, and the response is encrypted, followed by close_notify, in one
 * write. The 10 s request timeout covers the handshake.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "admin_http.h"
#include "tern/addr.h"
#include "tern/config.h" /* TERN_CONFIG_STR_MAX */
#include "tern/log.h"
#include "tern/tls.h"

#define HTTP_REQUEST_MAX 8192
#define HTTP_CONNS_MAX 64
#define HTTP_READ_TIMEOUT_MS 10000

struct tern_http_server {
    uv_tcp_t tcp;
    uv_loop_t *loop;
    struct tern_tls_ctx *tls; /* NULL: plain HTTP */
    tern_http_handler handler;
    void *ctx;
    struct tern_http_conn *conns;
    unsigned nconns;
    bool stopping;
    int refs;           /* the listener + every connection */
    char cipher[16384]; /* TLS: one read's ciphertext, handed to the engine at once */
};

struct tern_http_conn {
    struct tern_http_conn *next, *prev;
    struct tern_http_server *srv;
    struct tern_tls_engine *tls; /* HTTPS; NULL for plain HTTP */
    uv_tcp_t tcp;
    uv_timer_t timer;
    int refs;
    int handles_closed;
    bool closing;
    bool answered;
    size_t len;
    char buf[HTTP_REQUEST_MAX + 1];
};

struct http_write {
    uv_write_t req;
    struct tern_http_conn *hc;
    char data[];
};

static void server_unref(struct tern_http_server *s)
{
    if (--s->refs == 0) {
        tern_tls_ctx_free(s->tls);
        free(s);
    }
}

static void conn_unref(struct tern_http_conn *hc)
{
    if (--hc->refs > 0)
        return;
    struct tern_http_server *s = hc->srv;
    if (hc->prev)
        hc->prev->next = hc->next;
    else
        s->conns = hc->next;
    if (hc->next)
        hc->next->prev = hc->prev;
    s->nconns--;
    tern_tls_engine_free(hc->tls);
    free(hc);
    server_unref(s);
}

static void on_conn_closed(uv_handle_t *h)
{
    struct tern_http_conn *hc = h->data;
    /* The two handles hold one reference: drop it with the last one closed. */
    if (++hc->handles_closed == 2)
        conn_unref(hc);
}

static void conn_close(struct tern_http_conn *hc)
{
    if (hc->closing)
        return;
    hc->closing = true;
    uv_close((uv_handle_t *)&hc->tcp, on_conn_closed);
    uv_close((uv_handle_t *)&hc->timer, on_conn_closed);
}

void tern_http_hold(struct tern_http_conn *hc)
{
    hc->refs++;
}

void tern_http_release(struct tern_http_conn *hc)
{
    conn_unref(hc);
}

static const char *status_text(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 202:
        return "Accepted";
    case 400:
        return "Bad Request";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 413:
        return "Content Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 503:
        return "Service Unavailable";
    default:
        return "Status";
    }
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    (void)status;
    struct tern_http_conn *hc = req->data;
    free(req);
    conn_close(hc);
    conn_unref(hc);
}

static void on_written(uv_write_t *req, int status)
{
    struct http_write *w = (struct http_write *)req;
    struct tern_http_conn *hc = w->hc;
    free(w);
    uv_shutdown_t *sh = status == 0 && !hc->closing ? malloc(sizeof(*sh)) : NULL;
    if (sh) {
        sh->data = hc;
        if (uv_shutdown(sh, (uv_stream_t *)&hc->tcp, on_shutdown) == 0)
            return; /* keeps the write's reference */
        free(sh);
    }
    conn_close(hc);
    conn_unref(hc);
}

void tern_http_respond(struct tern_http_conn *hc, int status, const char *content_type,
                       const char *extra_headers, const char *body, size_t len)
{
    if (hc->answered || hc->closing)
        return;
    hc->answered = true;
    char head[512];
    int hl = snprintf(head, sizeof(head),
                      "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                      "Cache-Control: no-store\r\nConnection: close\r\n%s\r\n",
                      status, status_text(status), content_type, len,
                      extra_headers ? extra_headers : "");
    if (hl < 0 || (size_t)hl >= sizeof(head)) {
        conn_close(hc);
        return;
    }
    struct http_write *w = malloc(sizeof(*w) + (size_t)hl + len);
    if (!w) {
        conn_close(hc);
        return;
    }
    memcpy(w->data, head, (size_t)hl);
    if (len)
        memcpy(w->data + hl, body, len);
    w->hc = hc;
    size_t out_len = (size_t)hl + len;
    if (hc->tls) {
        /* The response encrypted, then close_notify: one write, as without TLS. */
        struct http_write *cw = NULL;
        if (tern_tls_engine_established(hc->tls) &&
            tern_tls_engine_write(hc->tls, (const uint8_t *)w->data, out_len) ==
                TERN_OK) {
            tern_tls_engine_shutdown(hc->tls);
            size_t n = tern_tls_engine_pending(hc->tls);
            cw = malloc(sizeof(*cw) + n);
            if (cw) {
                out_len = tern_tls_engine_take(hc->tls, (uint8_t *)cw->data, n);
                cw->hc = hc;
            }
        }
        free(w);
        if (!cw) { /* before the handshake (503, 408) or out of memory: no answer */
            conn_close(hc);
            return;
        }
        w = cw;
    }
    uv_buf_t b = uv_buf_init(w->data, (unsigned)out_len);
    uv_read_stop((uv_stream_t *)&hc->tcp);
    uv_timer_stop(&hc->timer);
    hc->refs++;
    if (uv_write(&w->req, (uv_stream_t *)&hc->tcp, &b, 1, on_written) != 0) {
        free(w);
        hc->refs--;
        conn_close(hc);
    }
}

static void respond_error(struct tern_http_conn *hc, int status, const char *msg)
{
    char body[256];
    int n = snprintf(body, sizeof(body), "{\"error\":\"%s\"}", msg);
    tern_http_respond(hc, status, "application/json", NULL, body, (size_t)n);
}

static int hex_value(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

int tern_http_unescape(const char *in, size_t len, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        int ch = (unsigned char)in[i];
        if (ch == '%') {
            int hi = i + 2 < len ? hex_value(in[i + 1]) : -1;
            int lo = i + 2 < len ? hex_value(in[i + 2]) : -1;
            if (hi < 0 || lo < 0 || (hi | lo) == 0)
                return -1; /* truncated, not hex, or %00 */
            ch = hi * 16 + lo;
            i += 2;
        }
        if (o + 1 >= cap)
            return -1;
        out[o++] = (char)ch;
    }
    out[o] = '\0';
    return (int)o;
}

/* Content-Length of the request, 0 if absent; -1 if unusable. */
static long content_length(const char *headers)
{
    for (const char *p = headers; p && *p; p = strstr(p, "\r\n"), p = p ? p + 2 : p) {
        if (strncasecmp(p, "Transfer-Encoding:", 18) == 0)
            return -1; /* chunked bodies: not for this API */
        if (strncasecmp(p, "Content-Length:", 15) != 0)
            continue;
        char *end;
        long n = strtol(p + 15, &end, 10);
        return n >= 0 && (*end == '\r' || *end == ' ') ? n : -1;
    }
    return 0;
}

/* Splits "METHOD SP TARGET SP HTTP/1.x" in place. */
static bool parse_request_line(char *line, struct tern_http_req *req, char **target)
{
    char *sp1 = strchr(line, ' ');
    char *sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
    if (!sp1 || !sp2 || sp1 == line || strncmp(sp2 + 1, "HTTP/1.", 7) != 0)
        return false;
    *sp1 = *sp2 = '\0';
    req->method = line;
    *target = sp1 + 1;
    if (**target != '/')
        return false;
    char *q = strchr(*target, '?');
    if (q)
        *q++ = '\0';
    req->path = *target;
    req->query = q ? q : "";
    return true;
}

/* Called after every read: dispatches once the request is complete. */
static void try_dispatch(struct tern_http_conn *hc)
{
    hc->buf[hc->len] = '\0';
    char *end = strstr(hc->buf, "\r\n\r\n");
    if (!end) {
        if (hc->len >= HTTP_REQUEST_MAX)
            respond_error(hc, 413, "request larger than 8 KiB");
        return;
    }
    char *line_end = strstr(hc->buf, "\r\n");
    long body = content_length(line_end + 2);
    if (body < 0) {
        respond_error(hc, 400, "bad Content-Length or Transfer-Encoding");
        return;
    }
    size_t need = (size_t)(end + 4 - hc->buf) + (size_t)body;
    if (need > HTTP_REQUEST_MAX) {
        respond_error(hc, 413, "request larger than 8 KiB");
        return;
    }
    if (hc->len < need)
        return; /* the body is still coming */
    *line_end = '\0';
    struct tern_http_req req;
    char *target;
    if (!parse_request_line(hc->buf, &req, &target)) {
        respond_error(hc, 400, "malformed request line");
        return;
    }
    req.headers = line_end + 2;
    uv_read_stop((uv_stream_t *)&hc->tcp);
    uv_timer_stop(&hc->timer);
    hc->refs++; /* the handler may close us by responding */
    hc->srv->handler(hc->srv->ctx, hc, &req);
    conn_unref(hc);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    struct tern_http_conn *hc = h->data;
    if (hc->tls)
        *buf = uv_buf_init(hc->srv->cipher, sizeof hc->srv->cipher);
    else
        *buf = uv_buf_init(hc->buf + hc->len, (unsigned)(HTTP_REQUEST_MAX - hc->len));
}

static void on_flight_written(uv_write_t *req, int status)
{
    struct http_write *w = (struct http_write *)req;
    struct tern_http_conn *hc = w->hc;
    free(w);
    if (status != 0)
        conn_close(hc);
    conn_unref(hc);
}

/* TLS: writes what the engine has to send (handshake flights, alerts). */
static void tls_flush(struct tern_http_conn *hc)
{
    size_t n = tern_tls_engine_pending(hc->tls);
    if (n == 0 || hc->closing)
        return;
    struct http_write *w = malloc(sizeof(*w) + n);
    if (!w) {
        conn_close(hc);
        return;
    }
    w->hc = hc;
    uv_buf_t b = uv_buf_init(
        w->data, (unsigned)tern_tls_engine_take(hc->tls, (uint8_t *)w->data, n));
    hc->refs++;
    if (uv_write(&w->req, (uv_stream_t *)&hc->tcp, &b, 1, on_flight_written) != 0) {
        free(w);
        hc->refs--;
        conn_close(hc);
    }
}

/* TLS: ciphertext in, plaintext into the request buffer. False when there is
 * nothing to dispatch yet (or the connection is closing). */
static bool tls_input(struct tern_http_conn *hc, const uint8_t *data, size_t n)
{
    struct tern_tls_engine *e = hc->tls;
    tern_tls_engine_recv(e, data, n);
    if (!tern_tls_engine_established(e)) {
        int rc = tern_tls_engine_handshake(e);
        tls_flush(hc);
        if (rc == TERN_EAGAIN)
            return false;
        if (rc != TERN_OK) {
            TERN_LOGI("admin API: TLS handshake failed: %s", tern_tls_engine_error(e));
            conn_close(hc);
            return false;
        }
    }
    while (hc->len < HTTP_REQUEST_MAX) {
        size_t got = 0;
        int rc = tern_tls_engine_read(e, (uint8_t *)hc->buf + hc->len,
                                      HTTP_REQUEST_MAX - hc->len, &got);
        if (rc == TERN_EAGAIN)
            break;
        if (rc != TERN_OK) {
            conn_close(hc);
            return false;
        }
        hc->len += got;
    }
    tls_flush(hc);
    return !hc->closing;
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    struct tern_http_conn *hc = st->data;
    if (nread < 0) {
        conn_close(hc);
        return;
    }
    if (hc->tls) {
        if (!tls_input(hc, (const uint8_t *)buf->base, (size_t)nread))
            return;
    } else {
        hc->len += (size_t)nread;
    }
    /* A 0-byte buffer means it is full: try_dispatch answers 413. */
    try_dispatch(hc);
}

static void on_timeout(uv_timer_t *t)
{
    struct tern_http_conn *hc = t->data;
    respond_error(hc, 408, "request not received within 10 s");
}

static void on_connection(uv_stream_t *server, int status)
{
    struct tern_http_server *s = server->data;
    if (status < 0 || s->stopping)
        return;
    struct tern_http_conn *hc = calloc(1, sizeof(*hc));
    if (!hc)
        return;
    hc->srv = s;
    hc->refs = 1;
    s->refs++;
    hc->next = s->conns;
    if (s->conns)
        s->conns->prev = hc;
    s->conns = hc;
    s->nconns++;
    uv_tcp_init(s->loop, &hc->tcp);
    uv_timer_init(s->loop, &hc->timer);
    hc->tcp.data = hc->timer.data = hc;
    if (uv_accept(server, (uv_stream_t *)&hc->tcp) != 0) {
        conn_close(hc);
        return;
    }
    if (s->tls && !(hc->tls = tern_tls_engine_new(s->tls))) {
        conn_close(hc);
        return;
    }
    if (s->nconns > HTTP_CONNS_MAX) {
        respond_error(hc, 503, "too many admin connections");
        return;
    }
    uv_timer_start(&hc->timer, on_timeout, HTTP_READ_TIMEOUT_MS, 0);
    uv_read_start((uv_stream_t *)&hc->tcp, on_alloc, on_read);
}

/* "HOST:PORT" of a bound socket. */
static void sock_name(uv_tcp_t *t, char *out, size_t cap)
{
    struct sockaddr_storage ss;
    int sl = sizeof(ss);
    char host[64] = "?";
    unsigned port = 0;
    snprintf(out, cap, "?");
    if (uv_tcp_getsockname(t, (struct sockaddr *)&ss, &sl) != 0)
        return;
    if (ss.ss_family == AF_INET6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        uv_ip6_name(a, host, sizeof(host));
        port = ntohs(a->sin6_port);
        snprintf(out, cap, "[%s]:%u", host, port);
        return;
    }
    struct sockaddr_in *a = (struct sockaddr_in *)&ss;
    uv_ip4_name(a, host, sizeof(host));
    snprintf(out, cap, "%s:%u", host, ntohs(a->sin_port));
}

static void on_listener_closed(uv_handle_t *h)
{
    server_unref(h->data);
}

int tern_http_start(struct tern_http_server **out, uv_loop_t *loop, const char *hostport,
                    struct tern_tls_ctx *tls, tern_http_handler handler, void *ctx,
                    char *bound, size_t bound_cap, char *errmsg)
{
    char host[TERN_CONFIG_STR_MAX];
    uint16_t port;
    struct sockaddr_storage addr;
    if (tern_addr_split(hostport, host, sizeof(host), &port) != TERN_OK ||
        (strchr(host, ':') ? uv_ip6_addr(host, port, (struct sockaddr_in6 *)&addr)
                           : uv_ip4_addr(host, port, (struct sockaddr_in *)&addr)) != 0) {
        snprintf(errmsg, TERN_ERRMSG_SIZE,
                 "admin_listen: must be an IP address and port, got \"%.100s\"",
                 hostport);
        return TERN_EINVAL;
    }
    struct tern_http_server *s = calloc(1, sizeof(*s));
    if (!s) {
        tern_tls_ctx_free(tls);
        snprintf(errmsg, TERN_ERRMSG_SIZE, "admin_listen: out of memory");
        return TERN_ENOMEM;
    }
    s->tls = tls;
    s->loop = loop;
    s->handler = handler;
    s->ctx = ctx;
    s->refs = 1;
    uv_tcp_init(loop, &s->tcp);
    s->tcp.data = s;
    int rv = uv_tcp_bind(&s->tcp, (struct sockaddr *)&addr, 0);
    if (rv == 0)
        rv = uv_listen((uv_stream_t *)&s->tcp, 64, on_connection);
    if (rv != 0) {
        snprintf(errmsg, TERN_ERRMSG_SIZE, "admin_listen: cannot listen on %.100s: %s",
                 hostport, uv_strerror(rv));
        s->stopping = true;
        uv_close((uv_handle_t *)&s->tcp, on_listener_closed);
        return TERN_EIO;
    }
    sock_name(&s->tcp, bound, bound_cap);
    *out = s;
    return TERN_OK;
}

void tern_http_stop(struct tern_http_server *s)
{
    if (!s || s->stopping)
        return;
    s->stopping = true;
    for (struct tern_http_conn *hc = s->conns; hc; hc = hc->next)
        conn_close(hc);
    uv_close((uv_handle_t *)&s->tcp, on_listener_closed);
}
