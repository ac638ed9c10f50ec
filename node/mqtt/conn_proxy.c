/* The PROXY protocol on the connections of a `proxy_protocol` listener
 * (docs/configuration.md, "The PROXY protocol"): the header
 * include/stream/tern/proxy_proto.h parses comes first, before TLS and MQTT, and the
 * client address it names replaces the connection's (the balancer's) in c->peer.
 * Everything keyed on the address (the log, GET /clients, access.c's per-address limits,
 * the failed-password slow-down, the anonymous loopback rule) then sees the client.
 *
 * Until the header is read the connection holds the parser (behind c->opt, so
 * only connections waiting for a header pay for it) and is not yet counted per
 * address: the balancer's address would otherwise take every limit meant for
 * its clients.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tern/frontend.h"
#include "tern/proxy_proto.h"
#include "tern/log.h"

bool tern_conn_proxy_start(struct tern_conn *c)
{
    struct tern_conn_opt *o = tern_conn_opt(c);
    if (!o)
        return false;
    o->proxy = malloc(sizeof(*o->proxy));
    if (!o->proxy)
        return false;
    tern_proxy_init(o->proxy);
    c->proxied = true;
    return true;
}

bool tern_conn_proxy_waiting(const struct tern_conn *c)
{
    return c->opt && c->opt->proxy;
}

static void refuse(struct tern_conn *c, const char *why)
{
    c->node->stats.proxy_refused++;
    free(c->opt->proxy);
    c->opt->proxy = NULL;
    tern_conn_close(c, TERN_RC_UNSPECIFIED, why);
}

void tern_conn_proxy_expired(struct tern_conn *c)
{
    refuse(c, "PROXY protocol: no header within proxy_header_timeout_ms");
}

/* The header's client address; an IPv4-mapped IPv6 address (a balancer on a
 * dual-stack socket) is taken as the IPv4 address it is. */
static void set_peer(struct tern_conn *c, const struct tern_proxy_header *h)
{
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    struct tern_conn_addr *p = &c->peer;
    memset(p->addr, 0, sizeof(p->addr));
    p->port = h->src_port;
    if (h->family == 6 && memcmp(h->src, mapped, sizeof(mapped)) == 0) {
        memcpy(p->addr, h->src + 12, 4);
        p->family = 4;
    } else {
        memcpy(p->addr, h->src, h->family == 4 ? 4 : 16);
        p->family = h->family;
    }
    c->proxy_addr = true;
}

long tern_conn_proxy_input(struct tern_conn *c, const uint8_t *data, size_t len)
{
    struct tern_node *n = c->node;
    struct tern_proxy_header h;
    size_t used;
    const char *why;
    int rc = tern_proxy_feed(c->opt->proxy, data, len, &used, &h, &why);
    if (rc == TERN_EAGAIN)
        return -1;
    if (rc != TERN_OK) {
        char msg[128];
        snprintf(msg, sizeof(msg), "PROXY protocol: %s", why);
        refuse(c, msg);
        return -1;
    }
    free(c->opt->proxy);
    c->opt->proxy = NULL;
    tern_conn_opt_trim(c);
    n->stats.proxy_headers++;
    char from[TERN_PEER_STRLEN], pb[TERN_PEER_STRLEN];
    tern_conn_peer(c, from);
    if (h.family)
        set_peer(c, &h);
    TERN_LOGD("%s: PROXY v%u from %s%s", tern_conn_peer(c, pb), (unsigned)h.version, from,
              h.family ? "" : " (no address in the header: the balancer's stands)");
    /* Per client address (access.c), as tern_conn_accept does for others. */
    if (!n->stopping && !tern_access_accept(c)) {
        n->stats.connections_rejected++;
        tern_conn_close(c, TERN_RC_UNSPECIFIED, NULL);
        return -1;
    }
    return (long)used;
}
