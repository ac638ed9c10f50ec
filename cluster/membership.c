/* Membership of tern_cluster: adding a node (as a spare until it has caught up,
 * then a voter), removing one (MEMBER_DEL, then the Raft change once it knows),
 * and the removed marker (DATA_DIR/removed) of a node taken out. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cluster_internal.h"
#include "tern/addr.h"
#include "tern/log.h"

/* --- membership ------------------------------------------------------------- */

static void member_link(struct tern_cluster *c, const struct tern_fsm_member *m)
{
    struct tern_peer_addr a = {.id = m->id};
    if (m->id == c->node_id)
        return;
    if (cluster_split_addr(m->peer, &a) != TERN_OK ||
        tern_peers_add(c->peers, &a) != TERN_OK)
        TERN_LOGW("member %u: cannot open a peer link to \"%s\"", m->id, m->peer);
}

static int member_link_visit(void *ctx, const struct tern_fsm_member *m)
{
    member_link(ctx, m);
    return 0;
}

/* data_dir/removed marks a node removed across restarts: once out of the
 * configuration no leader contacts it, so its log alone would never tell it. */
static int removed_path(const struct tern_cluster *c, char *out, size_t cap)
{
    int n = snprintf(out, cap, "%s/removed", c->cfg.data_dir);
    return n > 0 && (size_t)n < cap ? TERN_OK : TERN_EINVAL;
}

static void removed_log(const struct tern_cluster *c)
{
    TERN_LOGE("this node (id %u) is not a member of the cluster any more: remove its "
              "data directory to join again as a new member",
              c->node_id);
}

static void mark_removed(struct tern_cluster *c)
{
    char path[512];
    if (c->removed)
        return;
    c->removed = 1;
    removed_log(c);
    FILE *f = removed_path(c, path, sizeof(path)) == TERN_OK ? fopen(path, "w") : NULL;
    if (f) {
        fprintf(f, "node %u was removed from the cluster\n", c->node_id);
        fclose(f);
    } else {
        TERN_LOGW("cannot write %s: a restart will not know this node was removed", path);
    }
}

void cluster_check_removed_marker(struct tern_cluster *c)
{
    char path[512];
    struct stat st;
    if (removed_path(c, path, sizeof(path)) == TERN_OK && stat(path, &st) == 0) {
        c->removed = 1;
        removed_log(c);
    }
}

void cluster_member_applied(struct tern_cluster *c, const struct tern_cmd *cmd,
                            const struct tern_fsm_result *res)
{
    uint32_t id = cmd->u.member.id;
    if (res->status != TERN_OK || res->duplicate)
        return;
    if (cmd->type == TERN_CMD_MEMBER_SET) {
        const struct tern_fsm_member *m = tern_fsm_member_get(c->fsm, id);
        if (m)
            member_link(c, m);
    } else if (id == c->node_id) {
        mark_removed(c);
    } else {
        tern_peers_remove(c->peers, id);
    }
}

/* On the timer: links to members a snapshot brought (a restore calls no apply
 * hook), and whether this node is still in the Raft configuration. A node
 * counts as removed only once it has seen itself in it: a joining node's
 * configuration lacks it until the leader's raft_add entry arrives. */
static void removal_step(struct tern_cluster *c);

void cluster_members_check(struct tern_cluster *c)
{
    if (!c->raft_started || c->closing)
        return;
    if (c->removing)
        removal_step(c);
    if (c->rfsm.restores != c->restores_seen) {
        c->restores_seen = c->rfsm.restores;
        tern_fsm_members_walk(c->fsm, member_link_visit, c);
    }
    const struct raft_configuration *conf = &c->raft.configuration;
    bool in = false;
    for (unsigned i = 0; i < conf->n; i++)
        in = in || conf->servers[i].id == c->node_id;
    if (in)
        c->seen_self = 1;
    else if (c->seen_self && conf->n > 0)
        mark_removed(c);
}

int tern_cluster_removed(const struct tern_cluster *c)
{
    return c->removed;
}

struct member_req {
    struct raft_change change; /* first: the raft callback gets this pointer */
    struct tern_cluster *c;
    uint32_t id;
    uint64_t del_index;  /* remove: index of the MEMBER_DEL entry */
    uint64_t deadline;   /* remove: when to stop waiting for the node */
    unsigned promotions; /* add: raft_assign calls libraft gave up (on_assigned) */
    char raft[sizeof(((struct tern_member *)0)->raft)];
    void (*cb)(void *ctx, int status);
    void *ctx;
};

static int from_raft(int rv)
{
    switch (rv) {
    case 0:
        return TERN_OK;
    case RAFT_NOTLEADER:
    case RAFT_LEADERSHIPLOST:
        return TERN_ENOTLEADER;
    case RAFT_CANTCHANGE:
        return TERN_EAGAIN;
    case RAFT_BADID:
    case RAFT_NOTFOUND:
        return TERN_ENOTFOUND;
    case RAFT_DUPLICATEID:
    case RAFT_DUPLICATEADDRESS:
    case RAFT_BADROLE:
        return TERN_EINVAL;
    case RAFT_SHUTDOWN:
        return TERN_ESHUTDOWN;
    case RAFT_NOMEM:
        return TERN_ENOMEM;
    default:
        return TERN_EIO;
    }
}

void cluster_member_done(struct member_req *r, int status)
{
    if (status != TERN_OK)
        TERN_LOGW("membership change for node %u failed: %s", r->id,
                  tern_strerror(status));
    if (r->cb)
        r->cb(r->ctx, status);
    free(r);
}

static int member_status(int status, const struct tern_fsm_result *res)
{
    return status != TERN_OK ? status : res->status;
}

/* libraft gives a promotion up (RAFT_NOCONNECTION) when one catch-up round takes
 * over 5 s (raft_set_max_catch_up_round_duration), and the first round of a node
 * added empty is its whole snapshot, sent and installed: 7.7 s at a million
 * sessions (docs/benchmarks.md). A node whose peer link is up is running, so it
 * is asked again a few times before the add fails; one that is down fails at the
 * first, as before. */
#define PROMOTIONS_MAX 4

static void on_assigned(struct raft_change *req, int status)
{
    struct member_req *r = (struct member_req *)req;
    struct tern_cluster *c = r->c;
    if (status == RAFT_NOCONNECTION && ++r->promotions < PROMOTIONS_MAX && !c->closing &&
        raft_state(&c->raft) == RAFT_LEADER && tern_peers_connected(c->peers, r->id)) {
        TERN_LOGI("node %u: a catch-up round took over 5 s, its link is up: promoting "
                  "again",
                  r->id);
        status = raft_assign(&c->raft, &r->change, r->id, RAFT_VOTER, on_assigned);
        if (status == 0)
            return;
    }
    if (status == 0)
        TERN_LOGI("node %u is a voter", r->id);
    cluster_member_done(r, from_raft(status));
}

static void on_added(struct raft_change *req, int status)
{
    struct member_req *r = (struct member_req *)req;
    if (status != 0) {
        cluster_member_done(r, from_raft(status));
        return;
    }
    /* libraft promotes it once it has caught up (log or snapshot). */
    TERN_LOGI("node %u added as a spare: catching up", r->id);
    int rv = raft_assign(&r->c->raft, &r->change, r->id, RAFT_VOTER, on_assigned);
    if (rv != 0)
        cluster_member_done(r, from_raft(rv));
}

/* Role of id in the Raft configuration, -1 if absent. */
static int config_role(struct tern_cluster *c, uint32_t id)
{
    const struct raft_configuration *conf = &c->raft.configuration;
    for (unsigned i = 0; i < conf->n; i++)
        if (conf->servers[i].id == id)
            return conf->servers[i].role;
    return -1;
}

static bool in_config(struct tern_cluster *c, uint32_t id)
{
    return config_role(c, id) >= 0;
}

/* A node already there as a non-voter (an earlier add whose catch-up gave up)
 * is only promoted again. */
static void on_member_set(void *ctx, int status, const struct tern_fsm_result *res)
{
    struct member_req *r = ctx;
    struct raft *raft = &r->c->raft;
    status = member_status(status, res);
    int rv = status;
    if (status == TERN_OK && in_config(r->c, r->id))
        rv = from_raft(raft_assign(raft, &r->change, r->id, RAFT_VOTER, on_assigned));
    else if (status == TERN_OK)
        rv = from_raft(raft_add(raft, &r->change, r->id, r->raft, on_added));
    if (rv != TERN_OK)
        cluster_member_done(r, rv);
}

static bool addr_ok(const char *s)
{
    struct tern_peer_addr a;
    return strlen(s) <= TERN_MEMBER_ADDR_MAX && tern_addr_port_ok(s, sizeof(a.host) - 1);
}

int tern_cluster_add_member(struct tern_cluster *c, const struct tern_member *m,
                            void (*cb)(void *ctx, int status), void *ctx)
{
    if (c->closing || !c->raft_started || raft_state(&c->raft) != RAFT_LEADER)
        return TERN_ENOTLEADER;
    if (m->id == 0 || !addr_ok(m->raft) || !addr_ok(m->peer) ||
        (m->mqtt[0] && !addr_ok(m->mqtt)))
        return TERN_EINVAL;
    if (config_role(c, m->id) == RAFT_VOTER)
        return TERN_EINVAL; /* already a member */
    struct member_req *r = calloc(1, sizeof(*r));
    if (!r)
        return TERN_ENOMEM;
    *r = (struct member_req){.c = c, .id = m->id, .cb = cb, .ctx = ctx};
    snprintf(r->raft, sizeof(r->raft), "%s", m->raft);
    struct tern_cmd cmd = {.type = TERN_CMD_MEMBER_SET, .now_ms = cluster_wall_ms()};
    cmd.u.member.id = m->id;
    cmd.u.member.raft = (struct tern_bytes){(const uint8_t *)m->raft, strlen(m->raft)};
    cmd.u.member.peer = (struct tern_bytes){(const uint8_t *)m->peer, strlen(m->peer)};
    cmd.u.member.mqtt = (struct tern_bytes){(const uint8_t *)m->mqtt, strlen(m->mqtt)};
    int rv = tern_cluster_propose(c, &cmd, on_member_set, r);
    if (rv != TERN_OK)
        free(r);
    return rv;
}

static void on_removed(struct raft_change *req, int status)
{
    struct member_req *r = (struct member_req *)req;
    if (status == 0)
        TERN_LOGI("node %u left the Raft configuration", r->id);
    cluster_member_done(r, from_raft(status));
}

/* MEMBER_DEL goes first, while the node is still in the configuration: it
 * applies it too, so it learns it was removed (and remembers it on disk) instead
 * of waiting for a leader that never contacts it again. It learns that the entry
 * committed only from a later AppendEntries, so the leader appends a barrier and
 * waits (the timer polls, bounded) until the node has that one too: then it
 * leaves the Raft configuration. */
static uint64_t match_of(struct tern_cluster *c, uint32_t id)
{
    const struct raft_configuration *conf = &c->raft.configuration;
    if (raft_state(&c->raft) != RAFT_LEADER || !c->raft.leader_state.progress)
        return 0;
    for (unsigned i = 0; i < conf->n; i++)
        if (conf->servers[i].id == id)
            return c->raft.leader_state.progress[i].match_index;
    return 0;
}

static void removal_step(struct tern_cluster *c)
{
    struct member_req *r = c->removing;
    bool self = r->id == c->node_id;
    if (r->del_index == 0)
        return; /* MEMBER_DEL not applied yet */
    if (!self && match_of(c, r->id) <= r->del_index && cluster_now_ms(c) < r->deadline)
        return;
    c->removing = NULL;
    int rv = from_raft(raft_remove(&c->raft, &r->change, r->id, on_removed));
    if (rv != TERN_OK)
        cluster_member_done(r, rv);
}

static void on_del_applied(void *ctx, int status, const struct tern_fsm_result *res)
{
    struct member_req *r = ctx;
    struct tern_cluster *c = r->c;
    status = member_status(status, res);
    if (status != TERN_OK) {
        c->removing = NULL;
        cluster_member_done(r, status);
        return;
    }
    /* Called while the entry applies: the last applied index is the one before. */
    r->del_index = raft_last_applied(&c->raft) + 1;
    r->deadline = cluster_now_ms(c) + (uint64_t)c->cfg.election_timeout_ms * 4;
    struct raft_barrier *b = malloc(sizeof(*b));
    if (b && raft_barrier(&c->raft, b, cluster_barrier_done) != 0)
        free(b);
}

int tern_cluster_removal_check(const struct tern_cluster *c, uint32_t id, char *why,
                               size_t cap)
{
    const struct raft_configuration *conf = &c->raft.configuration;
    unsigned voters = 0, up = 0;
    bool voter = false;
    for (unsigned i = 0; i < conf->n; i++) {
        uint32_t s = (uint32_t)conf->servers[i].id;
        if (conf->servers[i].role != RAFT_VOTER)
            continue;
        if (s == id) {
            voter = true;
            continue;
        }
        voters++;
        up += s == c->node_id || tern_peers_connected(c->peers, s);
    }
    if (!voter)
        return TERN_OK; /* a spare or standby: no vote to lose */
    if (voters == 0) {
        snprintf(why, cap,
                 "node %u is the last voter: removing it would leave no cluster", id);
        return TERN_ELIMIT;
    }
    if (up < voters / 2 + 1) {
        snprintf(why, cap,
                 "removing node %u would lose the quorum: %u of the %u voters left are "
                 "reachable, %u needed",
                 id, up, voters, voters / 2 + 1);
        return TERN_ELIMIT;
    }
    return TERN_OK;
}

int tern_cluster_remove_member(struct tern_cluster *c, uint32_t id,
                               void (*cb)(void *ctx, int status), void *ctx)
{
    char why[160];
    if (c->closing || !c->raft_started || raft_state(&c->raft) != RAFT_LEADER)
        return TERN_ENOTLEADER;
    if (id == 0 || !in_config(c, id))
        return TERN_ENOTFOUND;
    if (c->removing)
        return TERN_EAGAIN;
    if (tern_cluster_removal_check(c, id, why, sizeof(why)) != TERN_OK)
        return TERN_ELIMIT;
    struct member_req *r = calloc(1, sizeof(*r));
    if (!r)
        return TERN_ENOMEM;
    *r = (struct member_req){.c = c, .id = id, .cb = cb, .ctx = ctx};
    struct tern_cmd cmd = {.type = TERN_CMD_MEMBER_DEL, .now_ms = cluster_wall_ms()};
    cmd.u.member.id = id;
    int rv = tern_cluster_propose(c, &cmd, on_del_applied, r);
    if (rv != TERN_OK) {
        free(r);
        return rv;
    }
    c->removing = r; /* one removal at a time; the timer moves it on */
    /* Its sessions go offline (wills out, clients fenced: they reconnect
     * elsewhere). In the same entry as MEMBER_DEL, so the node applies it too. */
    struct tern_cmd down = {.type = TERN_CMD_NODE_DOWN, .now_ms = cmd.now_ms};
    down.u.node_down.node = id;
    tern_cluster_propose(c, &down, NULL, NULL);
    return TERN_OK;
}
