/* The admin API's HTTP server (admin_http.c). */
#ifndef TERN_ADMIN_HTTP_H
#define TERN_ADMIN_HTTP_H

#include <stddef.h>

#include <uv.h>

struct tern_tls_ctx;

/* A minimal HTTP/1.1 server (one request per connection, bounded
 * request size, Connection: close). */
struct tern_http_server;
struct tern_http_conn;
struct tern_http_req {
    const char *method;  /* "GET", "POST", "DELETE" ... */
    const char *path;    /* as sent (still percent-encoded), without the query */
    const char *query;   /* after '?', "" if none */
    const char *headers; /* "Name: value\r\n" lines after the request line */
};
typedef void (*tern_http_handler)(void *ctx, struct tern_http_conn *hc,
                                  const struct tern_http_req *req);
/* Listens on hostport; writes the bound address ("127.0.0.1:8081") to bound.
 * tls: NULL for HTTP, else HTTPS with this context (the server takes it, also on
 * error). */
int tern_http_start(struct tern_http_server **out, uv_loop_t *loop, const char *hostport,
                    struct tern_tls_ctx *tls, tern_http_handler handler, void *ctx,
                    char *bound, size_t bound_cap, char *errmsg);
/* Sends the response and closes the connection; does nothing if the client has
 * gone. extra_headers: NULL or "Name: value\r\n" lines. */
void tern_http_respond(struct tern_http_conn *hc, int status, const char *content_type,
                       const char *extra_headers, const char *body, size_t len);
/* A handler that answers later holds the connection until it has responded. */
void tern_http_hold(struct tern_http_conn *hc);
void tern_http_release(struct tern_http_conn *hc);
/* Closes the listener and every connection; memory goes as handles close. */
void tern_http_stop(struct tern_http_server *s);
/* Percent-decodes in[0..len) into out (NUL-terminated); -1 if malformed, if it
 * holds %00, or if it does not fit. */
int tern_http_unescape(const char *in, size_t len, char *out, size_t cap);

#endif
