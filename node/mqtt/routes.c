/* Routes: which filters this node's clean sessions subscribe to, announced to
 * the cluster (ROUTE_ADD / ROUTE_DEL) so other nodes forward matching messages
 * here over the peer link. Reference-counted per filter: only the first
 * subscriber and the last unsubscriber change the replicated state. On a
 * single-node cluster only shared filters are announced (the replicated FSM
 * needs them to choose between a group's clean and persistent members).
 *
 * Shared subscriptions: one member of each group gets each message, chosen at
 * one place (docs/architecture.md, "Shared subscriptions"). A PUBLISH that goes
 * through the log leaves every group to the replicated FSM (shared_route effect);
 * one that does not is routed here: each group's copy goes to one of the nodes
 * with a route for the group (spread by a hash), and every local apply or forward
 * carries the list of groups it serves (tern_cmd publish.select). */
#include <stdlib.h>
#include <string.h>

#include "tern/frontend.h"
#include "tern/log.h"
#include "tern/hmap.h"
#include "tern/topic.h"

struct route {
    uint32_t refs;
    uint16_t len;
    char filter[];
};

static void announce(struct tern_node *n, uint8_t type, const char *f, size_t len)
{
    struct tern_cmd cmd = {.type = type, .now_ms = tern_now_ms()};
    cmd.u.route.node = n->cfg.node_id;
    cmd.u.route.filter = (struct tern_bytes){(const uint8_t *)f, (uint32_t)len};
    if (tern_cluster_propose(n->cluster, &cmd, NULL, NULL) != TERN_OK)
        TERN_LOGW("routes: cannot announce %.*s", (int)len, f);
}

static bool route_eq(const void *item, const void *key, size_t len)
{
    const struct route *r = item;
    return r->len == len && memcmp(r->filter, key, len) == 0;
}

static bool announced(const struct tern_node *n, const char *f, size_t len)
{
    return n->cfg.member_count > 1 ||
           tern_topic_shared_split(f, len, NULL, NULL, NULL, NULL);
}

void tern_routes_ref(struct tern_node *n, const char *f, size_t len)
{
    if (!announced(n, f, len))
        return;
    /* Seeded (tern_hmap): clients choose filters. */
    uint64_t h = tern_hmap_hash(f, len);
    struct route *r = tern_hmap_get(&n->routes, h, f, len, route_eq);
    if (r) {
        r->refs++;
        return;
    }
    r = malloc(sizeof(*r) + len);
    if (!r)
        return;
    r->refs = 1;
    r->len = (uint16_t)len;
    memcpy(r->filter, f, len);
    if (tern_hmap_put(&n->routes, h, r) != TERN_OK) {
        free(r);
        return;
    }
    announce(n, TERN_CMD_ROUTE_ADD, f, len);
}

void tern_routes_unref(struct tern_node *n, const char *f, size_t len)
{
    if (!announced(n, f, len))
        return;
    uint64_t h = tern_hmap_hash(f, len);
    struct route *r = tern_hmap_get(&n->routes, h, f, len, route_eq);
    if (!r || --r->refs > 0)
        return;
    tern_hmap_del_item(&n->routes, h, r);
    announce(n, TERN_CMD_ROUTE_DEL, f, len);
    free(r);
}

static int route_free_visit(void *ctx, void *item)
{
    (void)ctx;
    free(item);
    return 0;
}

/* Frees in slot order: nothing is announced, so the order is not seen. */
void tern_routes_free(struct tern_node *n)
{
    tern_hmap_walk(&n->routes, route_free_visit, NULL);
    tern_hmap_free(&n->routes);
}

/* One matching route (pointers into the replicated FSM: valid until it applies). */
struct hit {
    struct tern_bytes filter;
    uint32_t node;
    bool shared;
    bool chosen; /* shared: this node serves the group for this message */
};

#define HITS_INLINE 32
/* Distinct nodes remembered per forward; past it (routes of more nodes than a
 * cluster has members) earlier hits are scanned instead. */
#define TERN_FORWARD_NODES_MAX 64

struct hits {
    struct hit inline_v[HITS_INLINE];
    struct hit *v;
    size_t n, cap;
    bool oom;
};

static int hit_add(void *ctx, struct tern_bytes filter, bool shared, uint32_t node)
{
    struct hits *h = ctx;
    if (h->n == h->cap) {
        size_t cap = h->cap * 2;
        struct hit *v = h->v == h->inline_v ? malloc(cap * sizeof(*v))
                                            : realloc(h->v, cap * sizeof(*v));
        if (!v) {
            h->oom = true;
            return 1;
        }
        if (h->v == h->inline_v)
            memcpy(v, h->inline_v, sizeof(h->inline_v));
        h->v = v;
        h->cap = cap;
    }
    h->v[h->n++] = (struct hit){filter, node, shared, false};
    return 0;
}

static bool same_filter(struct tern_bytes a, struct tern_bytes b)
{
    return a.len == b.len && memcmp(a.ptr, b.ptr, a.len) == 0;
}

/* splitmix64's finalizer. */
static uint64_t mix64(uint64_t x)
{
    x = (x ^ (x >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    x = (x ^ (x >> 27)) * UINT64_C(0x94d049bb133111eb);
    return x ^ (x >> 31);
}

/* Without the log, this node chooses: per group (a run of one shared filter,
 * ascending nodes), one node, by a hash of this node's publish count and the
 * filter. A plain counter would not do: one shared by all groups, or stepped
 * once per publish, pins a group to one node as soon as publishes of two
 * groups, or two topics, alternate. */
static void choose_nodes(struct tern_node *n, struct hits *h)
{
    uint64_t seq = ++n->shared_rr;
    for (size_t i = 0; i < h->n;) {
        size_t j = i + 1;
        while (j < h->n && same_filter(h->v[i].filter, h->v[j].filter))
            j++;
        if (h->v[i].shared) {
            struct tern_bytes f = h->v[i].filter;
            uint64_t key =
                seq * UINT64_C(0x9e3779b97f4a7c15) ^ tern_hmap_hash(f.ptr, f.len);
            h->v[i + mix64(key) % (j - i)].chosen = true;
        }
        i = j;
    }
}

/* The selection for `node`: the groups chosen for it, as a group list in buf
 * (room for every filter). False when node has no shared route here: it then
 * gets no selection (its local FSM serves every group: what a build without
 * selections does, so such a node still gets its plain messages). */
static bool select_for(const struct hits *h, uint32_t node, uint8_t *buf, size_t cap,
                       struct tern_cmd *cmd)
{
    bool shared = false;
    size_t len = 0;
    uint16_t count = 0;
    for (size_t i = 0; i < h->n; i++) {
        if (h->v[i].node != node || !h->v[i].shared)
            continue;
        shared = true;
        if (h->v[i].chosen && count < UINT16_MAX) {
            len += tern_cmd_put_group(buf + len, cap - len, h->v[i].filter);
            count++;
        }
    }
    cmd->u.publish.select = shared ? TERN_PUB_GROUPS : 0;
    cmd->u.publish.group_count = count;
    cmd->u.publish.groups = (struct tern_bytes){buf, (uint32_t)len};
    return shared;
}

/* Does node get anything from this message: a plain route or a chosen group? */
static bool wanted(const struct hits *h, uint32_t node)
{
    for (size_t i = 0; i < h->n; i++)
        if (h->v[i].node == node && (!h->v[i].shared || h->v[i].chosen))
            return true;
    return false;
}

struct fwd_ctx {
    struct tern_node *n;
    uint32_t fullest; /* node of the most backed-up link forwarded to */
    uint64_t fullest_bytes;
};

static void forward_one(struct fwd_ctx *f, uint32_t node, const struct tern_cmd *cmd)
{
    /* Clean-session messages are not durable: when the link is down or its queue
     * is full the copy for that node is dropped, and counted. */
    if (tern_cluster_forward(f->n->cluster, node, cmd) != TERN_OK) {
        f->n->stats.dropped_forward++;
        return;
    }
    uint64_t backlog = tern_cluster_forward_backlog(f->n->cluster, node);
    if (!f->fullest || backlog > f->fullest_bytes) {
        f->fullest = node;
        f->fullest_bytes = backlog;
    }
}

/* To every other node that gets something, once, with its own selection. The
 * hits are in filter order; a node's hits are found by scanning them, once per
 * node (few nodes, possibly many filters). */
static void forward(struct fwd_ctx *f, const struct hits *h, const struct tern_cmd *cmd,
                    uint8_t *buf, size_t cap)
{
    uint32_t done[TERN_FORWARD_NODES_MAX];
    size_t ndone = 0;
    for (size_t i = 0; i < h->n; i++) {
        uint32_t node = h->v[i].node;
        size_t k = 0;
        while (k < ndone && done[k] != node)
            k++;
        bool seen = k < ndone;
        for (size_t j = 0; !seen && ndone == TERN_FORWARD_NODES_MAX && j < i; j++)
            seen = h->v[j].node == node;
        if (seen || node == f->n->cfg.node_id)
            continue; /* seen already, or this node */
        if (ndone < TERN_FORWARD_NODES_MAX)
            done[ndone++] = node;
        if (!wanted(h, node))
            continue; /* nothing for it: its groups were chosen elsewhere */
        struct tern_cmd copy = *cmd;
        select_for(h, node, buf, cap, &copy);
        forward_one(f, node, &copy);
    }
}

uint32_t tern_routes_publish(struct tern_node *n, const struct tern_cmd *cmd, bool log,
                             struct tern_fsm_result *res)
{
    struct tern_cmd local = *cmd;
    if (n->cfg.member_count < 2) {
        /* One node: without the log its local FSM chooses among its members, the
         * only ones; with it, the replicated FSM chooses (shared_route). */
        local.u.publish.select = log ? TERN_PUB_GROUPS : 0;
        tern_fsm_apply(n->local, &local, res);
        return 0;
    }
    struct hits h = {.cap = HITS_INLINE};
    h.v = h.inline_v;
    const struct tern_bytes *t = &cmd->u.publish.msg.topic;
    tern_fsm_route_visit(tern_cluster_fsm(n->cluster), (const char *)t->ptr, t->len,
                         hit_add, &h);
    if (!log)
        choose_nodes(n, &h);
    size_t cap = 0;
    for (size_t i = 0; i < h.n; i++)
        cap += 2 + (size_t)h.v[i].filter.len;
    uint8_t stack[1024];
    uint8_t *buf = cap <= sizeof(stack) ? stack : malloc(cap);
    struct fwd_ctx f = {n, 0, 0};
    if (buf && !h.oom) {
        /* This node always applies with a selection: its own routes are in
         * the replicated FSM before its members are in the local one (the
         * SUBSCRIBE waits for a barrier behind the ROUTE_ADD). */
        select_for(&h, n->cfg.node_id, buf, cap, &local);
        local.u.publish.select = TERN_PUB_GROUPS;
        tern_fsm_apply(n->local, &local, res);
        struct tern_cmd copy = *cmd;
        copy.u.publish.inbound_packet_id = 0; /* the publisher's state stays here */
        copy.u.publish.epoch = 0;
        forward(&f, &h, &copy, buf, cap);
    } else {
        /* Out of memory: this node's plain subscribers still get it. */
        local.u.publish.select = TERN_PUB_GROUPS;
        local.u.publish.group_count = 0;
        local.u.publish.groups = (struct tern_bytes){NULL, 0};
        tern_fsm_apply(n->local, &local, res);
        n->stats.dropped_forward++;
    }
    if (buf != stack)
        free(buf);
    if (h.v != h.inline_v)
        free(h.v);
    return f.fullest;
}

void tern_routes_on_shared(void *ctx, const struct tern_msg *m, struct tern_bytes filter,
                           uint32_t node)
{
    struct tern_node *n = ctx;
    if (node != n->cfg.node_id)
        return;
    struct tern_cmd_msg cm;
    if (!tern_deliver_msg_of(m, tern_now_ms(), &cm))
        return; /* expired meanwhile */
    uint8_t stack[256];
    size_t len = tern_cmd_put_group(NULL, 0, filter);
    uint8_t *buf = len <= sizeof(stack) ? stack : malloc(len);
    if (len == 0 || !buf) {
        n->stats.dropped_forward++;
        return;
    }
    tern_cmd_put_group(buf, len, filter);
    struct tern_cmd cmd = {.type = TERN_CMD_PUBLISH, .now_ms = tern_now_ms()};
    cmd.u.publish.msg = cm;
    cmd.u.publish.select = TERN_PUB_GROUPS | TERN_PUB_NO_PLAIN;
    cmd.u.publish.group_count = 1;
    cmd.u.publish.groups = (struct tern_bytes){buf, (uint32_t)len};
    struct tern_fsm_result res;
    tern_fsm_apply(n->local, &cmd, &res);
    if (buf != stack)
        free(buf);
}
