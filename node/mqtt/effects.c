/* Glue between connections and the two FSMs (see node.h: where a session lives).
 *
 * The FSMs call back here (observer effects) while they apply commands; this
 * file maps a session to its connection and turns effects into packets:
 * CONNACK when a SESSION_OPEN applies, SUBACK when a SUBSCRIBE applies, PUBLISH
 * and PUBREL for deliveries, DISCONNECT 0x8E for a fenced (taken over) session;
 * after a snapshot replaced the replicated state, connections are bound to it
 * again or closed (repl_restored).
 */
#include <stdlib.h>
#include <string.h>

#include "tern/frontend.h"
#include "tern/log.h"

struct closure {
    struct tern_conn *conn;
    void (*cb)(struct tern_conn *c, int status, const struct tern_fsm_result *res,
               void *arg);
    void *arg;
};

struct tern_fsm *tern_session_fsm(struct tern_conn *c)
{
    return c->persistent ? tern_cluster_fsm(c->node->cluster) : c->node->local;
}

struct tern_fsm_session *tern_session_get(struct tern_conn *c)
{
    if (!c->persistent && !c->local_epoch)
        return NULL; /* not opened yet */
    return tern_fsm_session_get(tern_session_fsm(c), c->client_id, c->client_id_len);
}

/* A clean session's subscriptions, QoS 2 ids and deliveries live in the node's
 * local FSM. That session is opened on first use (SUBSCRIBE, QoS 2 PUBLISH,
 * PUBREL), not at CONNECT: an idle clean client then costs only its connection
 * and its replicated registration. A clean-start open also fences a local
 * session left by an earlier connection of the same client id. */
struct tern_fsm_session *tern_session_local(struct tern_conn *c)
{
    struct tern_node *n = c->node;
    if (c->persistent || c->state != TERN_CONN_ACTIVE)
        return NULL;
    if (c->local_epoch)
        return tern_session_get(c);
    struct tern_cmd cmd = {.type = TERN_CMD_SESSION_OPEN, .now_ms = tern_now_ms()};
    cmd.u.open.client_id =
        (struct tern_bytes){(const uint8_t *)c->client_id, c->client_id_len};
    cmd.u.open.node = n->cfg.node_id;
    cmd.u.open.proto = c->version;
    cmd.u.open.clean_start = true;
    cmd.u.open.receive_max = c->client_receive_max;
    struct tern_fsm_result res;
    tern_fsm_apply(n->local, &cmd, &res);
    if (res.status != TERN_OK)
        return NULL;
    c->local_epoch = res.epoch;
    struct tern_fsm_session *ls = tern_session_get(c);
    if (ls)
        tern_fsm_session_set_local(ls, c);
    return ls;
}

static void on_proposed(void *ctx, int status, const struct tern_fsm_result *res)
{
    struct closure *cl = ctx;
    if (cl->cb)
        cl->cb(cl->conn, status, res, cl->arg);
    tern_conn_unref(cl->conn);
    free(cl);
}

int tern_session_command(struct tern_conn *c, struct tern_cmd *cmd,
                         void (*cb)(struct tern_conn *c, int status,
                                    const struct tern_fsm_result *res, void *arg),
                         void *arg)
{
    struct tern_bytes id = {(const uint8_t *)c->client_id, c->client_id_len};
    cmd->now_ms = tern_now_ms();
    /* A clean session's first command opens its local session: before the epoch
     * is read below, or the command would name epoch 0 and be refused as stale. */
    if (!c->persistent && !tern_session_local(c))
        return TERN_ENOMEM; /* the local FSM refused the session */
    /* Every command that names a session carries the epoch it holds there. */
    switch (cmd->type) {
    case TERN_CMD_SUBSCRIBE:
    case TERN_CMD_UNSUBSCRIBE:
        cmd->u.sub.client_id = id;
        cmd->u.sub.epoch = c->persistent ? c->epoch : c->local_epoch;
        break;
    case TERN_CMD_ACK:
        cmd->u.ack.client_id = id;
        cmd->u.ack.epoch = c->persistent ? c->epoch : c->local_epoch;
        break;
    case TERN_CMD_PUBREL:
        cmd->u.pubrel.client_id = id;
        cmd->u.pubrel.epoch = c->persistent ? c->epoch : c->local_epoch;
        break;
    default:
        break;
    }
    if (!c->persistent) {
        struct tern_fsm_result res;
        tern_fsm_apply(c->node->local, cmd, &res);
        if (cb)
            cb(c, TERN_OK, &res, arg);
        return TERN_OK;
    }
    return tern_session_propose(c, cmd, cb, arg);
}

int tern_session_propose(struct tern_conn *c, struct tern_cmd *cmd,
                         void (*cb)(struct tern_conn *c, int status,
                                    const struct tern_fsm_result *res, void *arg),
                         void *arg)
{
    struct closure *cl = malloc(sizeof(*cl));
    if (!cl)
        return TERN_ENOMEM;
    *cl = (struct closure){c, cb, arg};
    tern_conn_ref(c);
    int rv = tern_cluster_propose(c->node->cluster, cmd, on_proposed, cl);
    if (rv != TERN_OK) {
        tern_conn_unref(c);
        free(cl);
    }
    return rv;
}

/* SESSION_CLOSE for the connection holding `epoch`: the session goes offline
 * (or ends, expiry 0), publishing its will unless the client said goodbye. */
static struct tern_cmd close_cmd(struct tern_bytes id, uint64_t epoch, uint32_t expiry_s,
                                 bool publish_will)
{
    struct tern_cmd cmd = {.type = TERN_CMD_SESSION_CLOSE, .now_ms = tern_now_ms()};
    cmd.u.close.client_id = id;
    cmd.u.close.epoch = epoch;
    cmd.u.close.expiry_s = expiry_s;
    cmd.u.close.publish_will = publish_will;
    return cmd;
}

/* c's SESSION_OPEN applied where this node did not see it apply (inside a
 * snapshot it installed: its result came back a duplicate), so `opened` never
 * ran and c is refused. The session it opened would stay online here with no
 * connection, its expiry never starting: close it as a refused CONNECT leaves
 * it (offline, no will). Only c can hold it: while c is its slot's
 * `connecting` no other CONNECT of that id opens on this node, and a takeover
 * elsewhere changes the owner. */
void tern_session_open_lost(struct tern_conn *c)
{
    struct tern_node *n = c->node;
    struct tern_fsm_session *s = tern_fsm_session_get(tern_cluster_fsm(n->cluster),
                                                      c->client_id, c->client_id_len);
    const struct tern_client_slot *slot = tern_clients_slot_of(c->client_id);
    if (!s || !tern_fsm_session_online(s) || tern_fsm_session_owner(s) != n->cfg.node_id)
        return;
    uint64_t epoch = tern_fsm_session_epoch(s);
    if (slot->active && slot->active->epoch == epoch)
        return;
    struct tern_cmd cmd = close_cmd(tern_fsm_session_client_id(s), epoch,
                                    tern_fsm_session_expiry(s), false);
    if (tern_cluster_propose(n->cluster, &cmd, NULL, NULL) != TERN_OK)
        TERN_LOGW("%.*s: cannot close the session of a refused connection",
                  (int)c->client_id_len, c->client_id);
}

static int unroute(void *ctx, struct tern_bytes filter, uint8_t options, uint32_t sub_id)
{
    (void)options;
    (void)sub_id;
    tern_routes_unref(ctx, (const char *)filter.ptr, filter.len);
    return 0;
}

/* The connection ended: the session goes offline (will, expiry) in the
 * replicated FSM; a clean session's local state is dropped. */
void tern_session_closed(struct tern_conn *c)
{
    struct tern_node *n = c->node;
    if (!c->client_id)
        return;
    struct tern_client_slot *slot = tern_clients_slot_of(c->client_id);
    if (c->state == TERN_CONN_WAITING) { /* see tern_connect_waits */
        if (slot->waiting == c)
            slot->waiting = NULL;
        tern_clients_release(&n->clients, slot);
        return;
    }
    struct tern_bytes id = {(const uint8_t *)c->client_id, c->client_id_len};
    if (c->state == TERN_CONN_ACTIVE) {
        struct tern_cmd cmd = close_cmd(
            id, c->epoch, c->persistent ? c->session_expiry_s : 0, !c->will_suppressed);
        if (tern_cluster_propose(n->cluster, &cmd, NULL, NULL) != TERN_OK)
            TERN_LOGW("%.*s: cannot record the end of the connection", (int)id.len,
                      c->client_id);
        if (!c->persistent && c->local_epoch) {
            struct tern_fsm_session *ls = tern_session_get(c);
            if (ls && tern_fsm_session_epoch(ls) == c->local_epoch)
                tern_fsm_session_subs_walk(ls, unroute, n);
            cmd.u.close.epoch = c->local_epoch;
            cmd.u.close.publish_will = false;
            struct tern_fsm_result res;
            tern_fsm_apply(n->local, &cmd, &res);
        }
        struct tern_fsm_session *s = tern_session_get(c);
        if (s && tern_fsm_session_local(s) == c)
            tern_fsm_session_set_local(s, NULL);
    }
    if (slot->active == c)
        slot->active = NULL;
    /* A connection that leaves while its SESSION_OPEN is in the log stays the
     * slot's `connecting` until that applies: repl_opened then ends the
     * session it opened (on_open_done clears it if it never applies). */
    if (slot->connecting == c && c->state != TERN_CONN_CONNECTING)
        tern_clients_connected(&n->clients, slot);
    tern_clients_release(&n->clients, slot);
}

static struct tern_conn *conn_of(struct tern_fsm_session *s)
{
    struct tern_conn *c = tern_fsm_session_local(s);
    return c && c->state == TERN_CONN_ACTIVE ? c : NULL;
}

static void send_connack(struct tern_conn *c, bool present)
{
    struct tern_node *n = c->node;
    struct tern_packet p = {.type = TERN_CONNACK};
    /* 3.1's CONNACK has a reserved byte where 3.1.1 has Session Present. */
    p.u.connack.session_present = present && !c->v31;
    p.u.connack.reason = TERN_RC_SUCCESS;
    if (c->version == TERN_MQTT_5) {
        struct tern_props *pr = &p.u.connack.props;
        pr->mask |= TERN_PROP_BIT(TERN_PROP_RECEIVE_MAX) |
                    TERN_PROP_BIT(TERN_PROP_MAX_PACKET_SIZE) |
                    TERN_PROP_BIT(TERN_PROP_TOPIC_ALIAS_MAX);
        pr->receive_max = n->cfg.receive_maximum;
        pr->max_packet_size = n->cfg.max_packet_size;
        pr->topic_alias_max = n->cfg.topic_alias_maximum;
        if (n->cfg.max_qos < 2) {
            pr->mask |= TERN_PROP_BIT(TERN_PROP_MAX_QOS);
            pr->max_qos = n->cfg.max_qos;
        }
        if (!n->cfg.retain_available) {
            pr->mask |= TERN_PROP_BIT(TERN_PROP_RETAIN_AVAILABLE);
            pr->retain_available = 0;
        }
        if (!n->cfg.wildcard_subscriptions) {
            pr->mask |= TERN_PROP_BIT(TERN_PROP_WILDCARD_SUB_AVAILABLE);
            pr->wildcard_sub_available = 0;
        }
        if (!n->cfg.subscription_identifiers) {
            pr->mask |= TERN_PROP_BIT(TERN_PROP_SUB_ID_AVAILABLE);
            pr->sub_id_available = 0;
        }
        if (!n->cfg.shared_subscriptions) {
            pr->mask |= TERN_PROP_BIT(TERN_PROP_SHARED_SUB_AVAILABLE);
            pr->shared_sub_available = 0;
        }
        if (c->assigned_id) {
            pr->mask |= TERN_PROP_BIT(TERN_PROP_ASSIGNED_CLIENT_ID);
            pr->assigned_client_id =
                (struct tern_bytes){(const uint8_t *)c->client_id, c->client_id_len};
        }
        if (c->keepalive_capped) {
            pr->mask |= TERN_PROP_BIT(TERN_PROP_SERVER_KEEPALIVE);
            pr->server_keepalive = c->keepalive_s;
        }
        if (c->expiry_capped) {
            pr->mask |= TERN_PROP_BIT(TERN_PROP_SESSION_EXPIRY);
            pr->session_expiry = c->session_expiry_s;
        }
        tern_access_scram_connack(c, pr); /* server-final-message */
    }
    tern_conn_send(c, &p);
    if (c->opt && c->opt->scram) {
        tern_access_scram_free(c->opt);
        tern_conn_opt_trim(c);
    }
}

/* The connection whose own proposal is being applied, if any. */
static struct tern_conn *proposing_conn(struct tern_node *n)
{
    tern_propose_cb cb;
    void *ctx;
    if (!tern_cluster_applying(n->cluster, &cb, &ctx) || cb != on_proposed)
        return NULL;
    return ((struct closure *)ctx)->conn;
}

/* SESSION_OPEN applied (replicated FSM): bind the waiting connection - only to
 * the SESSION_OPEN it proposed. A restarted node replays its log, holding the
 * SESSION_OPENs of its connections from before, while a new CONNECT of the same
 * client id may be waiting: answered by one of those, it got the old epoch and
 * a stale session-present, and its PUBLISHes were refused as stale. */
static void repl_opened(void *ctx, struct tern_fsm_session *s, bool present)
{
    struct tern_node *n = ctx;
    if (tern_fsm_session_owner(s) != n->cfg.node_id)
        return;
    struct tern_bytes id = tern_fsm_session_client_id(s);
    struct tern_client_slot *slot =
        tern_clients_get(&n->clients, (const char *)id.ptr, id.len);
    struct tern_conn *c = slot ? slot->connecting : NULL;
    if (!c || c != proposing_conn(n))
        return;
    tern_clients_connected(&n->clients, slot);
    c->epoch = tern_fsm_session_epoch(s);
    if (c->state != TERN_CONN_CONNECTING) {
        /* The client went away while its session was being opened: end it. */
        struct tern_cmd cmd = close_cmd(id, c->epoch, tern_fsm_session_expiry(s), true);
        tern_cluster_propose(n->cluster, &cmd, NULL, NULL);
        tern_clients_release(&n->clients, slot);
        return;
    }
    slot->active = c;
    c->persistent = tern_fsm_session_expiry(s) > 0 || present;
    if (c->persistent)
        tern_fsm_session_set_local(s, c);
    /* A clean session's local state opens on first use (tern_session_local). */
    c->state = TERN_CONN_ACTIVE;
    c->retry_quiet_since_s = (uint32_t)(tern_mono_ms() / 1000);
    send_connack(c, present);
    tern_conn_keepalive_start(c);
    if (present)
        tern_access_check_resumed(c, s);
    char pb[TERN_PEER_STRLEN];
    TERN_LOGD("%s %.*s: connected (v%u, %s session, present=%d, epoch %llu)",
              tern_conn_peer(c, pb), (int)id.len, (const char *)id.ptr, c->version,
              c->persistent ? "persistent" : "clean", present,
              (unsigned long long)c->epoch);
    /* Deliveries owed by the resumed session follow in this apply. */
}

static void local_opened(void *ctx, struct tern_fsm_session *s, bool present)
{
    (void)ctx;
    (void)s;
    (void)present;
}

static void on_subscribed(void *ctx, struct tern_fsm_session *s, uint16_t packet_id)
{
    (void)ctx;
    struct tern_conn *c = conn_of(s);
    if (!c)
        return;
    /* SUBACK now: retained messages for this SUBSCRIBE follow in this apply. */
    tern_pending_sub_send(c, TERN_SUBACK, packet_id);
}

static void on_deliver(void *ctx, struct tern_fsm_session *s,
                       const struct tern_delivery *d)
{
    (void)ctx;
    struct tern_conn *c = conn_of(s);
    if (c)
        tern_deliver(c, d);
}

static void fence(struct tern_node *n, struct tern_bytes id, uint32_t owner,
                  uint64_t epoch, uint8_t reason, bool replicated)
{
    if (owner != n->cfg.node_id)
        return;
    struct tern_client_slot *slot =
        tern_clients_get(&n->clients, (const char *)id.ptr, id.len);
    struct tern_conn *c = slot ? slot->active : NULL;
    if (!c || c->state != TERN_CONN_ACTIVE)
        return;
    if ((replicated ? c->epoch : c->local_epoch) != epoch)
        return;
    /* The new owner's SESSION_OPEN supersedes this connection's will. */
    c->will_suppressed = true;
    tern_conn_close(c, reason,
                    reason == TERN_RC_SESSION_TAKEN_OVER ? "session taken over"
                                                         : "session removed by admin");
}

static void repl_fenced(void *ctx, struct tern_bytes id, uint32_t owner, uint64_t epoch,
                        uint8_t reason)
{
    fence(ctx, id, owner, epoch, reason, true);
}

static void local_fenced(void *ctx, struct tern_bytes id, uint32_t owner, uint64_t epoch,
                         uint8_t reason)
{
    fence(ctx, id, owner, epoch, reason, false);
}

static struct tern_cmd_msg msg_of(const struct tern_msg *m)
{
    struct tern_cmd_msg cm = {
        .topic = m->topic,
        .payload = m->payload,
        .qos = m->qos,
        .retain = m->retain,
        .flags = m->flags,
        .payload_format = m->payload_format,
        .expiry_s = m->expiry_s,
        .content_type = m->content_type,
        .response_topic = m->response_topic,
        .correlation_data = m->correlation_data,
        .user = m->user,
    };
    return cm;
}

/* The replicated FSM published a will: this node's clean subscribers get it. */
static void repl_published(void *ctx, const struct tern_msg *m)
{
    struct tern_node *n = ctx;
    struct tern_cmd_msg cm = msg_of(m);
    tern_deliver_to_local_plain(n, &cm);
}

/* Does connection c hold the session the replicated state has for its id? */
static bool still_owns(const struct tern_node *n, const struct tern_conn *c,
                       const struct tern_fsm_session *s)
{
    return s && tern_fsm_session_online(s) &&
           tern_fsm_session_owner(s) == n->cfg.node_id &&
           tern_fsm_session_epoch(s) == c->epoch;
}

/* A snapshot replaced the replicated state (installed from the leader while this
 * node was behind, or loaded at start): what it holds was never applied here, so
 * no opened / fenced / deliver effect ran for it. Each active connection is
 * checked against it. One whose session is still this node's at its epoch is
 * bound again and gets its in-flight messages re-sent (DUP PUBLISH, or PUBREL):
 * some were never sent from here, and the rest of the queue follows as the
 * client acks. One whose session is gone or was taken over (another owner, a
 * newer epoch, or offline after NODE_DOWN) is closed as apply would have closed
 * it; the FSM settled its will already. A clean session's own state is in the
 * local FSM and stays; only its registration is checked. Connections still
 * CONNECTING are left to their SESSION_OPEN's outcome. One pass over this node's
 * connections, not over the sessions. */
static void repl_restored(void *ctx, struct tern_fsm *f)
{
    struct tern_node *n = ctx;
    uint32_t kept = 0, closed = 0;
    uint32_t now_s = (uint32_t)(tern_now_ms() / 1000);
    uint64_t t0 = uv_hrtime();
    n->stats.snapshots_installed++;
    /* Closing only marks a connection; it leaves the list on a later turn. */
    for (struct tern_conn *c = n->conns; c; c = c->next) {
        if (c->state != TERN_CONN_ACTIVE)
            continue;
        struct tern_fsm_session *s =
            tern_fsm_session_get(f, c->client_id, c->client_id_len);
        if (still_owns(n, c, s)) {
            kept++;
            if (!c->persistent)
                continue;
            tern_fsm_session_set_local(s, c);
            c->retry_quiet_since_s = now_s;
            tern_fsm_session_resend(f, s);
            continue;
        }
        closed++;
        c->will_suppressed = true;
        tern_conn_close(c, TERN_RC_SESSION_TAKEN_OVER,
                        "session taken over or ended (snapshot installed)");
    }
    TERN_LOGI("snapshot installed: %u connections kept, %u closed (session taken over "
              "or ended) in %llu us",
              kept, closed, (unsigned long long)((uv_hrtime() - t0) / 1000));
}

struct tern_fsm_observer tern_session_observer(struct tern_node *n, bool replicated)
{
    struct tern_fsm_observer o = {
        .ctx = n,
        .opened = replicated ? repl_opened : local_opened,
        .subscribed = on_subscribed,
        .deliver = on_deliver,
        .fenced = replicated ? repl_fenced : local_fenced,
        .published = replicated ? repl_published : NULL,
        .restored = replicated ? repl_restored : NULL,
    };
    return o;
}
