/* Liveness: a node whose peer link has been down for longer than the limit is
 * declared down (NODE_DOWN), so its sessions go offline and can resume elsewhere. */

#include "cluster_internal.h"
#include "tern/log.h"

/* Which nodes were declared down (one NODE_DOWN each until their link is
 * back), by id: the Raft configuration changes at runtime. */
static uint32_t *down_slot(struct tern_cluster *c, uint32_t id)
{
    for (size_t i = 0; i < TERN_PEER_MAX; i++)
        if (c->down_declared[i] == id)
            return &c->down_declared[i];
    return NULL;
}

static void down_set(struct tern_cluster *c, uint32_t id, bool down)
{
    uint32_t *slot = down_slot(c, id);
    if (!down && slot)
        *slot = 0;
    else if (down && !slot && (slot = down_slot(c, 0)) != NULL)
        *slot = id;
}

void cluster_declare_down(struct tern_cluster *c)
{
    if (raft_state(&c->raft) != RAFT_LEADER)
        return;
    /* Takeover does not wait for this (a client reconnecting elsewhere fences its
     * old connection by epoch); it only decides when the lost node's wills go
     * out, so it can afford to be sure. */
    uint64_t limit = (uint64_t)c->cfg.election_timeout_ms * 10;
    if (limit < 3000)
        limit = 3000;
    const struct raft_configuration *conf = &c->raft.configuration;
    for (unsigned i = 0; i < conf->n; i++) {
        uint32_t id = (uint32_t)conf->servers[i].id;
        if (id == c->node_id)
            continue;
        if (tern_peers_connected(c->peers, id)) {
            down_set(c, id, false);
            continue;
        }
        if (down_slot(c, id) || tern_peers_down_ms(c->peers, id) < limit)
            continue;
        struct tern_cmd cmd = {.type = TERN_CMD_NODE_DOWN, .now_ms = cluster_wall_ms()};
        cmd.u.node_down.node = id;
        if (tern_cluster_propose(c, &cmd, NULL, NULL) == TERN_OK) {
            TERN_LOGW("node %u unreachable for %llu ms: marking its sessions offline", id,
                      (unsigned long long)limit);
            down_set(c, id, true);
        }
    }
}
