/* ternctl over HTTPS (admin_tls_*): one request and its response through tern's
 * TLS engine (include/tls/tern/tls.h) on a blocking socket whose reads and writes already
 * time out (ternctl.c sets SO_RCVTIMEO / SO_SNDTIMEO), so every step is bounded. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "tern/tls.h"
#include "ctl.h"

#define HTTPS_MAX (64u * 1024 * 1024) /* a response larger is refused */

static bool flush(struct tern_tls_engine *e, int fd)
{
    uint8_t buf[16384];
    size_t n;
    while ((n = tern_tls_engine_take(e, buf, sizeof buf)) > 0) {
        for (size_t off = 0; off < n;) {
            ssize_t w = send(fd, buf + off, n - off, MSG_NOSIGNAL);
            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0)
                return false;
            off += (size_t)w;
        }
    }
    return true;
}

/* More ciphertext from the server into the engine; false at EOF or error. */
static bool pull(struct tern_tls_engine *e, int fd)
{
    uint8_t buf[16384];
    ssize_t r;
    do
        r = recv(fd, buf, sizeof buf, 0);
    while (r < 0 && errno == EINTR);
    if (r <= 0)
        return false;
    tern_tls_engine_recv(e, buf, (size_t)r);
    return true;
}

char *ctl_https(int fd, const struct ctl_tls *t, const char *host, const char *req,
                size_t len, size_t *out_len, char *why, size_t why_cap)
{
    struct tern_tls_opts o = {
        .server = false,
        .ca_file = t->ca_file,
        .cert_file = t->cert_file,
        .key_file = t->key_file,
        .server_name = host,
        .min_version = TERN_TLS_1_2,
    };
    struct tern_tls_ctx *ctx = NULL;
    char err[TERN_ERRMSG_SIZE];
    if (tern_tls_ctx_new(&ctx, &o, err) != TERN_OK) {
        snprintf(why, why_cap, "TLS: %s", err);
        return NULL;
    }
    struct tern_tls_engine *e = tern_tls_engine_new(ctx);
    char *out = NULL;
    size_t n = 0, cap = 65536;
    if (!e) {
        snprintf(why, why_cap, "TLS: out of memory");
        goto done;
    }
    for (;;) {
        int rc = tern_tls_engine_handshake(e);
        if (!flush(e, fd)) {
            snprintf(why, why_cap, "TLS handshake: %s", strerror(errno));
            goto done;
        }
        if (rc == TERN_OK)
            break;
        if (rc != TERN_EAGAIN) {
            snprintf(why, why_cap, "TLS handshake: %s", tern_tls_engine_error(e));
            goto done;
        }
        if (!pull(e, fd)) {
            snprintf(why, why_cap, "TLS handshake: %s",
                     errno ? strerror(errno == EAGAIN ? ETIMEDOUT : errno)
                           : "closed by the server");
            goto done;
        }
    }
    if (tern_tls_engine_write(e, (const uint8_t *)req, len) != TERN_OK || !flush(e, fd)) {
        snprintf(why, why_cap, "TLS: cannot send the request");
        goto done;
    }
    out = malloc(cap);
    while (out) {
        if (n + 1 == cap) {
            char *p = cap < HTTPS_MAX ? realloc(out, cap * 2) : NULL;
            if (!p) {
                free(out);
                out = NULL;
                snprintf(why, why_cap, "response too large");
                break;
            }
            out = p;
            cap *= 2;
        }
        size_t got = 0;
        int rc = tern_tls_engine_read(e, (uint8_t *)out + n, cap - n - 1, &got);
        if (rc == TERN_OK) {
            n += got;
            continue;
        }
        if (rc == TERN_ESHUTDOWN)
            break; /* close_notify after the response */
        if (rc == TERN_EAGAIN) {
            if (pull(e, fd))
                continue;
            break; /* EOF without close_notify: take what came */
        }
        snprintf(why, why_cap, "TLS: %s", tern_tls_engine_error(e));
        free(out);
        out = NULL;
    }
    if (out) {
        out[n] = '\0';
        *out_len = n;
    }
done:
    tern_tls_engine_free(e);
    tern_tls_ctx_free(ctx);
    return out;
}
