/* MQTT listeners: `listen` (plain) and the `listeners` list (plain or TLS, each
 * possibly with WebSockets on top).
 *
 * A TLS listener holds one TLS context (include/tls/tern/tls.h) made from its files. On
 * SIGHUP a new context is made from the same paths and replaces the old one;
 * connections already open keep the context they were made from (OpenSSL
 * counts references), so none is dropped, and only new connections see the new
 * certificate. A new file that does not load leaves the old context in place.
 */
#include <stdio.h>
#include <string.h>

#include "tern/frontend.h"
#include "tern/addr.h"
#include "tern/log.h"
#include "tern/tls.h"

static struct tern_tls_opts tls_opts(const struct tern_listener_config *l)
{
    struct tern_tls_opts o = {
        .server = true,
        .cert_file = l->cert_file,
        .key_file = l->key_file,
        .ca_file = l->ca_file,
        .crl_file = l->crl_file,
        .require_certificate = l->require_certificate,
        .ciphers = l->ciphers,
        .ciphersuites = l->ciphersuites,
        .min_version = l->tls_min_version == 1 ? TERN_TLS_1_3 : TERN_TLS_1_2,
    };
    return o;
}

/* "listeners[i]." in front of the engine's "cert_file: ..." message. */
static int load_one(const struct tern_listener_config *l, uint32_t i,
                    struct tern_tls_ctx **out, char *errmsg)
{
    char why[TERN_ERRMSG_SIZE];
    struct tern_tls_opts o = tls_opts(l);
    int rc = tern_tls_ctx_new(out, &o, why);
    if (rc != TERN_OK)
        snprintf(errmsg, TERN_ERRMSG_SIZE, "listeners[%u].%.200s", i, why);
    return rc;
}

int tern_listeners_tls_load(const struct tern_config *cfg,
                            struct tern_tls_ctx *ctx[TERN_LISTENERS_MAX], char *errmsg)
{
    memset(ctx, 0, sizeof(ctx[0]) * TERN_LISTENERS_MAX);
    for (uint32_t i = 0; i < cfg->listener_count; i++) {
        if (!TERN_LISTENER_IS_TLS(cfg->listeners[i].type))
            continue;
        int rc = load_one(&cfg->listeners[i], i, &ctx[i], errmsg);
        if (rc != TERN_OK) {
            for (uint32_t j = 0; j < i; j++)
                tern_tls_ctx_free(ctx[j]);
            return rc;
        }
    }
    return TERN_OK;
}

/* A WebSocket listener's engine options. The frame bound is max_packet_size:
 * a frame carries at least one byte of a packet, and a client sends one packet
 * per frame in practice, so a larger frame is either a packet the codec would
 * refuse or several at once (refused with 1009 all the same). Read at start. */
static void ws_setup(struct tern_node *n, struct tern_listener *l)
{
    const struct tern_listener_config *c = l->cfg;
    for (uint32_t i = 0; i < c->origin_count; i++)
        l->ws_origins[i] = c->origins[i];
    l->ws = true;
    l->ws_opts = (struct tern_ws_opts){
        .path = c->path,
        .origins = l->ws_origins,
        .origin_count = c->origin_count,
        .handshake_bytes_max = n->cfg.ws_handshake_bytes_max,
        .frame_bytes_max = n->cfg.max_packet_size,
    };
}

static void on_connection(uv_stream_t *server, int status)
{
    struct tern_listener *l = server->data;
    if (status < 0) {
        TERN_LOGW("accept on %s: %s", l->bind, uv_strerror(status));
        return;
    }
    tern_conn_accept(l->node, l);
}

static int listen_on(struct tern_node *n, struct tern_listener *l, const char *key,
                     char *errmsg)
{
    char host[TERN_CONFIG_STR_MAX];
    uint16_t port;
    if (tern_addr_split(l->bind, host, sizeof(host), &port) != TERN_OK) {
        snprintf(errmsg, TERN_ERRMSG_SIZE, "%s: must be HOST:PORT, got \"%.150s\"", key,
                 l->bind);
        return TERN_EINVAL;
    }
    struct sockaddr_storage addr;
    int rv = strchr(host, ':') ? uv_ip6_addr(host, port, (struct sockaddr_in6 *)&addr)
                               : uv_ip4_addr(host, port, (struct sockaddr_in *)&addr);
    if (rv != 0) {
        snprintf(errmsg, TERN_ERRMSG_SIZE, "%s: bad address \"%.100s\": %s", key, host,
                 uv_strerror(rv));
        return TERN_EINVAL;
    }
    uv_tcp_init(n->loop, &l->tcp);
    l->tcp.data = l;
    l->open = true;
    rv = uv_tcp_bind(&l->tcp, (struct sockaddr *)&addr, 0);
    if (rv == 0)
        rv = uv_listen((uv_stream_t *)&l->tcp, 4096, on_connection);
    if (rv != 0) {
        snprintf(errmsg, TERN_ERRMSG_SIZE, "%s: cannot listen on %.100s: %s", key,
                 l->bind, uv_strerror(rv));
        return TERN_EIO;
    }
    static const char *const types[] = {"mqtt", "mqtts", "ws", "wss"};
    TERN_LOGI("listening on %s (%s%s%s)", l->bind, types[l->cfg ? l->cfg->type : 0],
              l->ws ? ", path " : "", l->ws ? l->ws_opts.path : "");
    return TERN_OK;
}

int tern_listeners_start(struct tern_node *n,
                         struct tern_tls_ctx *ctx[TERN_LISTENERS_MAX], char *errmsg)
{
    /* Every context goes to its listener first: on error, stop frees them. */
    n->listener_count = 0;
    if (strcmp(n->cfg.listen, "none") != 0) {
        struct tern_listener *l = &n->listeners[n->listener_count++];
        l->node = n;
        l->bind = n->cfg.listen;
    }
    for (uint32_t i = 0; i < n->cfg.listener_count; i++) {
        struct tern_listener *l = &n->listeners[n->listener_count++];
        l->node = n;
        l->cfg = &n->cfg.listeners[i];
        l->bind = l->cfg->bind;
        l->tls = ctx[i];
        ctx[i] = NULL;
        if (TERN_LISTENER_IS_WS(l->cfg->type))
            ws_setup(n, l);
    }
    for (uint32_t i = 0; i < n->listener_count; i++) {
        struct tern_listener *l = &n->listeners[i];
        char key[32];
        if (l->cfg)
            snprintf(key, sizeof(key), "listeners[%u].bind",
                     (unsigned)(l->cfg - n->cfg.listeners));
        else
            snprintf(key, sizeof(key), "listen");
        int rc = listen_on(n, l, key, errmsg);
        if (rc != TERN_OK)
            return rc;
    }
    return TERN_OK;
}

void tern_listeners_stop(struct tern_node *n)
{
    for (uint32_t i = 0; i < n->listener_count; i++) {
        struct tern_listener *l = &n->listeners[i];
        if (l->open && !uv_is_closing((uv_handle_t *)&l->tcp))
            uv_close((uv_handle_t *)&l->tcp, NULL);
    }
}

void tern_listeners_free(struct tern_node *n)
{
    for (uint32_t i = 0; i < n->listener_count; i++) {
        tern_tls_ctx_free(n->listeners[i].tls);
        n->listeners[i].tls = NULL;
    }
}

int tern_listeners_reload(struct tern_node *n, uint32_t *reloaded, char *errmsg)
{
    int result = TERN_OK;
    *reloaded = 0;
    for (uint32_t i = 0; i < n->listener_count; i++) {
        struct tern_listener *l = &n->listeners[i];
        if (!l->tls)
            continue;
        uint32_t idx = (uint32_t)(l->cfg - n->cfg.listeners);
        struct tern_tls_ctx *ctx = NULL;
        if (load_one(l->cfg, idx, &ctx, errmsg) != TERN_OK) {
            n->stats.tls_reload_failures++;
            TERN_LOGE("reload: %s: keeping the certificates loaded before", errmsg);
            result = TERN_EINVAL;
            continue;
        }
        tern_tls_ctx_free(l->tls); /* open connections hold their own reference */
        l->tls = ctx;
        n->stats.tls_reloads++;
        (*reloaded)++;
        TERN_LOGI("reload: listeners[%u] (%s): TLS files loaded again", idx, l->bind);
    }
    return result;
}
