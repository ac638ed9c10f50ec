/* Routes: which filters this node's clean sessions subscribe to, announced to
 * the cluster (ROUTE_ADD / ROUTE_DEL) so other nodes forward matching messages
 * here over the peer link. Reference-counted per filter: only the first
 * subscriber and the last unsubscriber change the replicated state. Nothing is
 * announced on a single-node cluster. */
#include <stdlib.h>
#include <string.h>

#include "node.h"
#include "tern/log.h"

struct route {
    struct route *next;
    uint32_t refs;
    uint16_t len;
    char filter[];
};

static uint32_t hash(const char *s, size_t len)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (uint8_t)s[i]) * 16777619u;
    return h;
}

static void announce(struct tern_node *n, uint8_t type, const char *f, size_t len)
{
    struct tern_cmd cmd = {.type = type, .now_ms = tern_now_ms()};
    cmd.u.route.node = n->cfg.node_id;
    cmd.u.route.filter = (struct tern_bytes){(const uint8_t *)f, (uint32_t)len};
    if (tern_cluster_propose(n->cluster, &cmd, NULL, NULL) != TERN_OK)
        TERN_LOGW("routes: cannot announce %.*s", (int)len, f);
}

static struct route **find(struct tern_node *n, const char *f, size_t len)
{
    struct route **pp = &n->routes[hash(f, len) % TERN_ROUTE_BUCKETS];
    while (*pp && ((*pp)->len != len || memcmp((*pp)->filter, f, len) != 0))
        pp = &(*pp)->next;
    return pp;
}

void tern_routes_ref(struct tern_node *n, const char *f, size_t len)
{
    if (n->cfg.member_count < 2)
        return;
    struct route **pp = find(n, f, len);
    if (*pp) {
        (*pp)->refs++;
        return;
    }
    struct route *r = malloc(sizeof(*r) + len);
    if (!r)
        return;
    r->next = NULL;
    r->refs = 1;
    r->len = (uint16_t)len;
    memcpy(r->filter, f, len);
    *pp = r;
    announce(n, TERN_CMD_ROUTE_ADD, f, len);
}

void tern_routes_unref(struct tern_node *n, const char *f, size_t len)
{
    if (n->cfg.member_count < 2)
        return;
    struct route **pp = find(n, f, len);
    struct route *r = *pp;
    if (!r || --r->refs > 0)
        return;
    *pp = r->next;
    announce(n, TERN_CMD_ROUTE_DEL, f, len);
    free(r);
}

void tern_routes_free(struct tern_node *n)
{
    for (size_t i = 0; i < TERN_ROUTE_BUCKETS; i++)
        while (n->routes[i]) {
            struct route *r = n->routes[i];
            n->routes[i] = r->next;
            free(r);
        }
}

struct fwd_ctx {
    struct tern_node *n;
    const struct tern_cmd *cmd;
    uint32_t fullest; /* node of the most backed-up link forwarded to */
    uint64_t fullest_bytes;
};

static int forward_one(void *ctx, uint32_t node)
{
    struct fwd_ctx *f = ctx;
    /* Clean-session messages are not durable: when the link is down or its queue
     * is full the copy for that node is dropped, and counted. */
    if (node == f->n->cfg.node_id)
        return 0;
    if (tern_cluster_forward(f->n->cluster, node, f->cmd) != TERN_OK) {
        f->n->stats.dropped_forward++;
        return 0;
    }
    uint64_t backlog = tern_cluster_forward_backlog(f->n->cluster, node);
    if (!f->fullest || backlog > f->fullest_bytes) {
        f->fullest = node;
        f->fullest_bytes = backlog;
    }
    return 0;
}

/* Sends a PUBLISH to every other node with matching clean-session routes.
 * Returns the node whose link (of those it went on) has the most unsent bytes,
 * or 0 if it went on none. */
uint32_t tern_routes_forward(struct tern_node *n, const struct tern_cmd *cmd)
{
    if (n->cfg.member_count < 2)
        return 0;
    struct tern_cmd copy = *cmd;
    copy.u.publish.inbound_packet_id = 0; /* the publisher's state stays here */
    copy.u.publish.epoch = 0;
    struct fwd_ctx f = {n, &copy, 0, 0};
    const struct tern_bytes *t = &cmd->u.publish.msg.topic;
    tern_fsm_route_match(tern_cluster_fsm(n->cluster), (const char *)t->ptr, t->len,
                         forward_one, &f);
    return f.fullest;
}
