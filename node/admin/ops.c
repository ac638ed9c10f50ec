/* The admin API's cluster operations: leadership transfer, snapshot now, adding and
 * removing members, drain and undrain. */
#include "admin_internal.h"

/* --- leadership, snapshot ---------------------------------------------------------- */

struct transfer_ctx {
    struct tern_admin *admin;
    struct tern_http_conn *hc;
};

static void on_transferred(void *ctx, int status)
{
    struct transfer_ctx *t = ctx;
    struct tern_cluster_status st;
    tern_cluster_status(t->admin->node->cluster, &st);
    if (status == TERN_OK) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "leader", st.leader);
        cJSON_AddNumberToObject(o, "term", (double)st.term);
        admin_reply_json(t->hc, 200, o);
    } else {
        admin_reply_error(t->hc, 409, "leader", st.leader, "leadership did not move (%s)",
                          tern_strerror(status));
    }
    tern_http_release(t->hc);
    free(t);
}

static bool is_member(const struct tern_node *n, uint32_t id)
{
    struct tern_member_status ms[TERN_CLUSTER_MEMBERS_MAX];
    size_t count = tern_cluster_members(n->cluster, ms, TERN_CLUSTER_MEMBERS_MAX);
    for (size_t i = 0; i < count; i++)
        if (ms[i].id == id)
            return true;
    return false;
}

void admin_post_transfer(struct tern_admin *a, struct tern_http_conn *hc,
                         const char *tail, const char *query)
{
    struct tern_node *n = a->node;
    uint64_t to = 0;
    if (admin_query_uint(query, "to", UINT32_MAX, &to) < 0) {
        admin_reply_error(hc, 400, NULL, 0, "to: must be a node id");
        return;
    }
    struct tern_cluster_status st;
    tern_cluster_status(n->cluster, &st);
    if (st.state != 3) {
        admin_reply_error(hc, 409, "leader", st.leader,
                          "node %u is not the leader: ask the leader (node %u)",
                          n->cfg.node_id, st.leader);
        return;
    }
    if (to == n->cfg.node_id) {
        admin_reply_error(hc, 400, "leader", st.leader, "node %u is already the leader",
                          n->cfg.node_id);
        return;
    }
    if (to && !is_member(n, (uint32_t)to)) {
        admin_reply_error(hc, 404, NULL, 0, "no member %" PRIu64, to);
        return;
    }
    struct transfer_ctx *t = malloc(sizeof(*t));
    if (!t) {
        admin_reply_error(hc, 500, NULL, 0, "out of memory");
        return;
    }
    *t = (struct transfer_ctx){a, hc};
    tern_http_hold(hc);
    int rv = tern_cluster_transfer(n->cluster, (uint32_t)to, on_transferred, t);
    if (rv != TERN_OK) {
        admin_reply_error(hc, 409, "leader", st.leader,
                          "cannot transfer leadership: no other voter can take it (%s)",
                          tern_strerror(rv));
        tern_http_release(hc);
        free(t);
        return;
    }
    TERN_LOGI("admin: transferring leadership to %s%" PRIu64, to ? "node " : "any voter",
              to);
}

static void on_snapshot_barrier(void *ctx, int status, const struct tern_fsm_result *res)
{
    (void)res;
    struct transfer_ctx *t = ctx;
    if (status != TERN_OK) {
        admin_reply_error(t->hc, 503, NULL, 0, "not applied: %s", tern_strerror(status));
    } else {
        struct tern_cluster_status st;
        tern_cluster_status(t->admin->node->cluster, &st);
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "snapshot", "requested");
        cJSON_AddNumberToObject(o, "applied_index", (double)st.applied_index);
        admin_reply_json(t->hc, 202, o);
    }
    tern_http_release(t->hc);
    free(t);
}

static void on_digest(void *ctx, int status, uint64_t index, uint32_t crc, uint64_t bytes,
                      const char *errmsg)
{
    struct tern_http_conn *hc = ctx;
    if (status != TERN_OK) {
        admin_reply_error(hc, 500, NULL, 0, "cannot serialise the state: %s", errmsg);
    } else {
        char hex[9];
        snprintf(hex, sizeof(hex), "%08x", (unsigned)crc);
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "applied_index", (double)index);
        cJSON_AddStringToObject(o, "crc32c", hex);
        cJSON_AddNumberToObject(o, "bytes", (double)bytes);
        admin_reply_json(hc, 200, o);
    }
    tern_http_release(hc);
}

/* The replicated state's digest at this node's applied index: replicas at the
 * same index must give the same one (serialised off the loop). */
void admin_get_state_digest(struct tern_admin *a, struct tern_http_conn *hc,
                            const char *tail, const char *query)
{
    char errmsg[TERN_ERRMSG_SIZE] = "";
    tern_http_hold(hc);
    if (tern_cluster_state_digest(a->node->cluster, a->node->loop, on_digest, hc,
                                  errmsg) != TERN_OK) {
        admin_reply_error(hc, 503, NULL, 0, "cannot serialise the state: %s", errmsg);
        tern_http_release(hc);
    }
}

/* Answers once the entry that triggers the snapshot has applied. */
void admin_post_snapshot(struct tern_admin *a, struct tern_http_conn *hc,
                         const char *tail, const char *query)
{
    struct transfer_ctx *t = malloc(sizeof(*t));
    if (!t) {
        admin_reply_error(hc, 500, NULL, 0, "out of memory");
        return;
    }
    *t = (struct transfer_ctx){a, hc};
    tern_http_hold(hc);
    int rv = tern_cluster_snapshot_soon(a->node->cluster, on_snapshot_barrier, t);
    if (rv != TERN_OK) {
        admin_reply_error(hc, 503, NULL, 0, "cannot propose: %s", tern_strerror(rv));
        tern_http_release(hc);
        free(t);
        return;
    }
    TERN_LOGI("admin: snapshot requested");
}

/* --- membership ------------------------------------------------------------------ */

struct member_ctx {
    struct tern_admin *admin;
    struct tern_http_conn *hc;
    uint32_t id;
    bool add;
};

/* A voter already (a spare left by an add that did not finish may be added
 * again: it is then only promoted). */
static bool is_voter(const struct tern_node *n, uint32_t id)
{
    struct tern_member_status ms[TERN_CLUSTER_MEMBERS_MAX];
    size_t count = tern_cluster_members(n->cluster, ms, TERN_CLUSTER_MEMBERS_MAX);
    for (size_t i = 0; i < count; i++)
        if (ms[i].id == id)
            return ms[i].role == 1;
    return false;
}

/* Answers a failed membership change: who to ask, or what was wrong. */
static void member_error(struct tern_node *n, struct tern_http_conn *hc, uint32_t id,
                         int status)
{
    struct tern_cluster_status st;
    tern_cluster_status(n->cluster, &st);
    if (status == TERN_ENOTLEADER)
        admin_reply_error(hc, 409, "leader", st.leader,
                          "node %u is not the leader: ask the leader (node %u)",
                          n->cfg.node_id, st.leader);
    else if (status == TERN_EAGAIN)
        admin_reply_error(hc, 409, "leader", st.leader,
                          "another membership change is in progress: try again");
    else if (status == TERN_ENOTFOUND)
        admin_reply_error(hc, 404, NULL, 0, "no member %u", id);
    else if (status == TERN_EINVAL)
        admin_reply_error(hc, 400, NULL, 0, "member %u: bad id or address", id);
    else if (status == TERN_EIO)
        admin_reply_error(
            hc, 503, NULL, 0,
            "node %u did not catch up: is it running, with join? It stays a "
            "spare; add it again to retry",
            id);
    else
        admin_reply_error(hc, 503, NULL, 0, "member %u: %s", id, tern_strerror(status));
}

static void on_member_changed(void *ctx, int status)
{
    struct member_ctx *m = ctx;
    if (status == TERN_OK) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "id", m->id);
        cJSON_AddStringToObject(o, "member", m->add ? "added" : "removed");
        admin_reply_json(m->hc, 200, o);
        TERN_LOGI("admin: node %u %s", m->id, m->add ? "added" : "removed");
    } else {
        member_error(m->admin->node, m->hc, m->id, status);
    }
    tern_http_release(m->hc);
    free(m);
}

static bool require_leader(struct tern_node *n, struct tern_http_conn *hc)
{
    struct tern_cluster_status st;
    tern_cluster_status(n->cluster, &st);
    if (st.state == 3)
        return true;
    member_error(n, hc, 0, TERN_ENOTLEADER);
    return false;
}

/* Query parameter `name` as a member address; false (answered 400) if bad. */
static bool member_addr(struct tern_http_conn *hc, const char *query, const char *name,
                        bool required, char *out, size_t cap)
{
    int rv = admin_query_get(query, name, out, cap);
    if (rv == 0 && !required) {
        out[0] = '\0';
        return true;
    }
    if (rv <= 0 || !tern_addr_port_ok(out, TERN_MEMBER_ADDR_MAX)) {
        admin_reply_error(hc, 400, NULL, 0, "%s: must be HOST:PORT (IPv4, port 1-65535)",
                          name);
        return false;
    }
    return true;
}

static struct member_ctx *member_ctx_new(struct tern_admin *a, struct tern_http_conn *hc,
                                         uint32_t id, bool add)
{
    struct member_ctx *m = malloc(sizeof(*m));
    if (!m) {
        admin_reply_error(hc, 500, NULL, 0, "out of memory");
        return NULL;
    }
    *m = (struct member_ctx){a, hc, id, add};
    tern_http_hold(hc);
    return m;
}

/* POST /members?id=N&raft=H:P&peer=H:P&mqtt=H:P (leader only). Answers once the
 * node is a voter: it has caught up. */
void admin_post_members(struct tern_admin *a, struct tern_http_conn *hc, const char *tail,
                        const char *query)
{
    (void)tail;
    struct tern_node *n = a->node;
    struct tern_member mb = {0};
    uint64_t id = 0;
    if (admin_query_uint(query, "id", TERN_NODE_ID_MAX, &id) <= 0 || id == 0) {
        admin_reply_error(hc, 400, NULL, 0, "id: must be a node id (1 to %u)",
                          TERN_NODE_ID_MAX);
        return;
    }
    mb.id = (uint32_t)id;
    if (!member_addr(hc, query, "raft", true, mb.raft, sizeof(mb.raft)) ||
        !member_addr(hc, query, "peer", true, mb.peer, sizeof(mb.peer)) ||
        !member_addr(hc, query, "mqtt", false, mb.mqtt, sizeof(mb.mqtt)) ||
        !require_leader(n, hc))
        return;
    if (is_voter(n, mb.id)) {
        admin_reply_error(hc, 409, NULL, 0, "node %u is already a member", mb.id);
        return;
    }
    struct member_ctx *m = member_ctx_new(a, hc, mb.id, true);
    if (!m)
        return;
    int rv = tern_cluster_add_member(n->cluster, &mb, on_member_changed, m);
    if (rv != TERN_OK) {
        member_error(n, hc, mb.id, rv);
        tern_http_release(hc);
        free(m);
        return;
    }
    TERN_LOGI("admin: adding node %u (raft %s, peer %s)", mb.id, mb.raft, mb.peer);
}

/* DELETE /members/ID (leader only). */
void admin_delete_member(struct tern_admin *a, struct tern_http_conn *hc,
                         const char *tail, const char *query)
{
    (void)query;
    struct tern_node *n = a->node;
    char *end;
    unsigned long long id = strtoull(tail, &end, 10);
    if (tail[0] < '0' || tail[0] > '9' || *end || id == 0 || id > TERN_NODE_ID_MAX) {
        admin_reply_error(hc, 400, NULL, 0, "member id: must be a node id");
        return;
    }
    if (!require_leader(n, hc))
        return;
    if (!is_member(n, (uint32_t)id)) {
        admin_reply_error(hc, 404, NULL, 0, "no member %llu", id);
        return;
    }
    char why[160];
    if (tern_cluster_removal_check(n->cluster, (uint32_t)id, why, sizeof(why)) !=
        TERN_OK) {
        admin_reply_error(hc, 409, NULL, 0, "%s", why);
        return;
    }
    struct member_ctx *m = member_ctx_new(a, hc, (uint32_t)id, false);
    if (!m)
        return;
    int rv = tern_cluster_remove_member(n->cluster, (uint32_t)id, on_member_changed, m);
    if (rv != TERN_OK) {
        member_error(n, hc, (uint32_t)id, rv);
        tern_http_release(hc);
        free(m);
        return;
    }
    TERN_LOGI("admin: removing node %llu", id);
}

/* --- drain -------------------------------------------------------------------- */

/* The node named by ?node=ID must be this one; false if answered. */
static bool drain_target_ok(struct tern_admin *a, struct tern_http_conn *hc,
                            const char *query)
{
    uint64_t id = 0;
    if (admin_query_uint(query, "node", UINT32_MAX, &id) != 1) {
        admin_reply_error(hc, 400, NULL, 0,
                          "node: the id of this node is required (?node=ID)");
        return false;
    }
    if (id != a->node->cfg.node_id) {
        admin_reply_error(hc, 409, "node", (double)id,
                          "this is node %u: ask node %" PRIu64 "'s admin API to drain it",
                          a->node->cfg.node_id, id);
        return false;
    }
    return true;
}

void admin_post_drain(struct tern_admin *a, struct tern_http_conn *hc, const char *tail,
                      const char *query)
{
    if (!drain_target_ok(a, hc, query))
        return;
    const char *ref = tern_node_other_member(a->node);
    unsigned closed = tern_node_drain(a->node);
    TERN_LOGI("admin: node drained: %u connections closed, new ones refused%s%s", closed,
              ref[0] ? "; clients sent to " : "", ref);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddBoolToObject(o, "draining", true);
    cJSON_AddNumberToObject(o, "closed", closed);
    if (ref[0])
        cJSON_AddStringToObject(o, "server_reference", ref);
    else
        cJSON_AddNullToObject(o, "server_reference");
    admin_reply_json(hc, 200, o);
}

void admin_post_undrain(struct tern_admin *a, struct tern_http_conn *hc, const char *tail,
                        const char *query)
{
    if (!drain_target_ok(a, hc, query))
        return;
    if (a->node->draining)
        TERN_LOGI("admin: node undrained: accepting clients again");
    a->node->draining = false;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddBoolToObject(o, "draining", false);
    admin_reply_json(hc, 200, o);
}
