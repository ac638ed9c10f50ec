/* PUBLISH from a client, and the acknowledgement packets of both directions.
 *
 * A PUBLISH with durable effects - the retained store, queues of persistent
 * sessions, the inbound QoS 2 id of a persistent publisher - goes through the
 * log as one PUBLISH command; when it applies, this node's clean sessions (local
 * FSM) and the other nodes' get it and the client's PUBACK / PUBREC goes out.
 * One without is delivered and acknowledged at once, unless an earlier one of
 * the same connection is still in the log: then it waits behind it (not in
 * the log), so the publisher's order holds (MQTT 4.6).
 */
#include <stdlib.h>
#include <string.h>

#include "tern/frontend.h"
#include "tern/auth.h"
#include "tern/log.h"
#include "tern/topic.h"

/* Fills a command message from a decoded PUBLISH or will. User properties are
 * copied into *userbuf (malloc'ed; the caller frees it). */
int tern_msg_from_packet(struct tern_cmd_msg *m, const struct tern_props *pr,
                         struct tern_bytes topic, struct tern_bytes payload, uint8_t qos,
                         bool retain, uint32_t expiry_max_s, uint8_t **userbuf)
{
    memset(m, 0, sizeof(*m));
    m->topic = topic;
    m->payload = payload;
    m->qos = qos;
    m->retain = retain;
    *userbuf = NULL;
    if (pr->mask & TERN_PROP_BIT(TERN_PROP_PAYLOAD_FORMAT)) {
        m->flags |= TERN_MSG_HAS_PAYLOAD_FORMAT;
        m->payload_format = pr->payload_format;
    }
    if (pr->mask & TERN_PROP_BIT(TERN_PROP_MESSAGE_EXPIRY)) {
        m->flags |= TERN_MSG_HAS_EXPIRY;
        m->expiry_s = pr->message_expiry;
        if (expiry_max_s && m->expiry_s > expiry_max_s)
            m->expiry_s = expiry_max_s;
    }
    if (pr->mask & TERN_PROP_BIT(TERN_PROP_CONTENT_TYPE)) {
        m->flags |= TERN_MSG_HAS_CONTENT_TYPE;
        m->content_type = pr->content_type;
    }
    if (pr->mask & TERN_PROP_BIT(TERN_PROP_RESPONSE_TOPIC)) {
        m->flags |= TERN_MSG_HAS_RESPONSE_TOPIC;
        m->response_topic = pr->response_topic;
    }
    if (pr->mask & TERN_PROP_BIT(TERN_PROP_CORRELATION_DATA)) {
        m->flags |= TERN_MSG_HAS_CORRELATION;
        m->correlation_data = pr->correlation_data;
    }
    if (pr->user_count) {
        *userbuf = malloc(pr->raw.len);
        if (!*userbuf)
            return TERN_ENOMEM;
        size_t n = tern_props_user_extract(pr, *userbuf);
        m->user = (struct tern_bytes){*userbuf, (uint32_t)n};
    }
    return TERN_OK;
}

/* Resolves a v5 topic alias (3.3.2.3.4): sets it, or fills an empty topic. */
static int resolve_alias(struct tern_conn *c, struct tern_publish *p, uint8_t *reason)
{
    uint16_t max = c->node->cfg.topic_alias_maximum;
    if (c->version != TERN_MQTT_5 ||
        !(p->props.mask & TERN_PROP_BIT(TERN_PROP_TOPIC_ALIAS))) {
        if (p->topic.len == 0) {
            *reason = TERN_RC_PROTOCOL_ERROR;
            return TERN_EPROTO;
        }
        return TERN_OK;
    }
    uint16_t a = p->props.topic_alias;
    if (a == 0 || a > max) {
        *reason = TERN_RC_TOPIC_ALIAS_INVALID;
        return TERN_EPROTO;
    }
    struct tern_conn_opt *o = tern_conn_opt(c);
    if (!o)
        return TERN_ENOMEM;
    if (!o->in_alias) {
        o->in_alias = calloc((size_t)max + 1, sizeof(*o->in_alias));
        if (!o->in_alias)
            return TERN_ENOMEM;
    }
    struct tern_in_alias *in = &o->in_alias[a];
    if (p->topic.len == 0) {
        if (!in->topic) {
            *reason = TERN_RC_PROTOCOL_ERROR;
            return TERN_EPROTO;
        }
        p->topic = (struct tern_bytes){(const uint8_t *)in->topic, in->len};
        return TERN_OK;
    }
    char *t = realloc(in->topic, p->topic.len + 1);
    if (!t)
        return TERN_ENOMEM;
    memcpy(t, p->topic.ptr, p->topic.len);
    t[p->topic.len] = '\0';
    in->topic = t;
    in->len = (uint16_t)p->topic.len;
    return TERN_OK;
}

static int check_publish(struct tern_conn *c, const struct tern_publish *p,
                         uint8_t *reason)
{
    const struct tern_config *cfg = &c->node->cfg;
    if (p->qos > cfg->max_qos) {
        *reason = TERN_RC_QOS_NOT_SUPPORTED;
        return TERN_EPROTO;
    }
    if (p->retain && !cfg->retain_available) {
        *reason = TERN_RC_RETAIN_NOT_SUPPORTED;
        return TERN_EPROTO;
    }
    if (p->props.mask & TERN_PROP_BIT(TERN_PROP_SUBSCRIPTION_ID)) {
        /* Only the server sends subscription identifiers (3.3.4). */
        *reason = TERN_RC_PROTOCOL_ERROR;
        return TERN_EPROTO;
    }
    if (p->qos > 0 && ++c->inbound_unacked > cfg->receive_maximum) {
        *reason = TERN_RC_RECEIVE_MAX_EXCEEDED;
        return TERN_EPROTO;
    }
    return TERN_OK;
}

/* A PUBLISH whose clean delivery waits: a logged one until it commits, and one
 * without durable effects that came after it, behind it (MQTT 4.6 order). The
 * command is kept encoded: the packet's bytes are gone by then. They leave the
 * head of the connection's list in PUBLISH order (release_deferred). */
struct tern_deferred_pub {
    struct tern_deferred_pub *next;
    int slot;     /* ack slot, -1 for QoS 0 */
    bool logged;  /* went through the log (the FSM chose its shared groups) */
    bool done;    /* committed (or never needed to be) */
    bool deliver; /* false: refused, a duplicate, or the connection is closing */
    size_t len;
    uint8_t cmd[];
};

/* This node's clean sessions, and forwards to the nodes with matching routes.
 * For a logged PUBLISH the replicated FSM chose its shared-group members
 * (tern_routes_publish serves only the plain subscriptions then). */
static void deliver_clean(struct tern_conn *c, struct tern_cmd *cmd, uint16_t qos2_id,
                          bool logged)
{
    struct tern_node *n = c->node;
    cmd->u.publish.epoch = c->local_epoch;
    /* A clean publisher's QoS 2 id is held in the local FSM (it ends with the
     * connection anyway). */
    cmd->u.publish.inbound_packet_id = c->persistent ? 0 : qos2_id;
    struct tern_fsm_result res; /* of the apply to this node's clean sessions */
    uint32_t fullest = tern_routes_publish(n, cmd, logged, &res);
    tern_flow_hold(c, n->local, &res); /* a clean subscriber's queue is backlogged */
    if (fullest)
        tern_conn_pause(c, fullest); /* after this PUBLISH, if that link is backed up */
}

static struct tern_deferred_pub *deferred_new(const struct tern_cmd *cmd, int slot,
                                              bool logged)
{
    size_t need = tern_cmd_encode(cmd, NULL, 0);
    struct tern_deferred_pub *h = need ? malloc(sizeof(*h) + need) : NULL;
    if (!h)
        return NULL;
    *h = (struct tern_deferred_pub){NULL, slot, logged, !logged, true, need};
    tern_cmd_encode(cmd, h->cmd, need);
    return h;
}

static void deferred_append(struct tern_conn_opt *o, struct tern_deferred_pub *h)
{
    if (o->deferred_tail)
        o->deferred_tail->next = h;
    else
        o->deferred = h;
    o->deferred_tail = h;
}

/* Delivers and acknowledges what is done at the head of the list, in order. */
static void release_deferred(struct tern_conn *c)
{
    struct tern_conn_opt *o = c->opt;
    while (o && o->deferred && o->deferred->done) {
        struct tern_deferred_pub *h = o->deferred;
        o->deferred = h->next;
        if (!o->deferred)
            o->deferred_tail = NULL;
        struct tern_cmd cmd;
        size_t used;
        if (c->state != TERN_CONN_CLOSING) {
            if (h->deliver &&
                tern_cmd_decode(h->cmd, h->len, &cmd, &used, NULL) == TERN_OK)
                deliver_clean(c, &cmd, cmd.u.publish.inbound_packet_id, h->logged);
            tern_acks_done(c, h->slot, TERN_RC_SUCCESS);
        }
        free(h);
    }
}

void tern_publish_deferred_free(struct tern_conn_opt *o)
{
    while (o->deferred) {
        struct tern_deferred_pub *h = o->deferred;
        o->deferred = h->next;
        free(h);
    }
    o->deferred_tail = NULL;
}

static void on_publish_committed(struct tern_conn *c, int status,
                                 const struct tern_fsm_result *res, void *arg)
{
    struct tern_deferred_pub *h = arg;
    h->done = true;
    if (c->opt && c->opt->log_pending)
        c->opt->log_pending--;
    if (c->state != TERN_CONN_CLOSING && status != TERN_OK) {
        /* Not durable: no ack, no delivery; the client re-sends after reconnecting. */
        h->deliver = false;
        tern_conn_close(c, TERN_RC_SERVER_UNAVAILABLE, "publish could not be committed");
    } else if (c->state != TERN_CONN_CLOSING && res->status != TERN_OK) {
        /* Refused (the session was taken over: a stale epoch; or out of memory):
         * nothing was stored, so nothing is acknowledged nor delivered. */
        h->deliver = false;
        tern_conn_close(c, TERN_RC_SERVER_UNAVAILABLE, "publish was not applied");
    } else if (c->state != TERN_CONN_CLOSING && res->duplicate) {
        /* A QoS 2 copy the FSM found already held (a re-send) is not delivered
         * again. (Nor a duplicate applied inside an installed snapshot: clean
         * subscribers may miss that one, they never get one twice.) */
        h->deliver = false;
    }
    if (c->state != TERN_CONN_CLOSING && status == TERN_OK && res->status == TERN_OK)
        tern_flow_hold(c, tern_cluster_fsm(c->node->cluster), res);
    release_deferred(c);
}

/* Does this PUBLISH change replicated state? */
static bool needs_log(struct tern_conn *c, const struct tern_publish *p)
{
    if (p->retain)
        return true;
    if (p->qos == 2 && c->persistent)
        return true; /* the inbound id must survive the node */
    struct tern_fsm *repl = tern_cluster_fsm(c->node->cluster);
    return tern_fsm_has_subscriber(repl, (const char *)p->topic.ptr, p->topic.len);
}

/* Topics under $SYS/ are the broker's own ($SYS/broker/uptime ...): a client
 * may not publish there (as Mosquitto, MQTT 4.7.2). */
static bool is_sys_topic(struct tern_bytes t)
{
    return t.len >= 4 && memcmp(t.ptr, "$SYS", 4) == 0 && (t.len == 4 || t.ptr[4] == '/');
}

/* A PUBLISH the broker will not take: refused with its reason (5.0) where the
 * ack can say so, or closed (returns TERN_EPROTO). */
static int refuse_publish(struct tern_conn *c, const struct tern_publish *p, uint8_t rc,
                          bool close_v3, uint8_t *reason)
{
    bool v5 = c->version == TERN_MQTT_5;
    if ((!v5 && close_v3) || (v5 && p->qos == 0 && close_v3)) {
        *reason = rc;
        return TERN_EPROTO;
    }
    if (p->qos == 0)
        return TERN_OK; /* dropped */
    int slot = tern_acks_push(c, p->qos == 1 ? TERN_PUBACK : TERN_PUBREC, p->packet_id);
    if (slot < 0) {
        *reason = TERN_RC_RECEIVE_MAX_EXCEEDED;
        return TERN_EPROTO;
    }
    /* 3.1.1 has no negative ack: the message is acknowledged and not forwarded. */
    tern_acks_done(c, slot, v5 ? rc : TERN_RC_SUCCESS);
    return TERN_OK;
}

int tern_handle_publish(struct tern_conn *c, struct tern_publish *p, uint8_t *reason)
{
    struct tern_node *n = c->node;
    int rv = resolve_alias(c, p, reason);
    if (rv != TERN_OK)
        return rv;
    rv = check_publish(c, p, reason);
    if (rv != TERN_OK)
        return rv;
    n->stats.msgs_in[p->qos]++;

    if (p->qos == 2) {
        /* A re-sent PUBLISH whose id is still held was delivered already; one
         * whose PUBREC still waits for the first copy's commit is answered by
         * that PUBREC. */
        struct tern_fsm_session *s = tern_session_get(c);
        if (tern_acks_holds(c, TERN_PUBREC, p->packet_id)) {
            c->inbound_unacked--; /* this re-send did not take a new slot */
            return TERN_OK;
        }
        if (s && tern_fsm_session_inbound_held(s, p->packet_id)) {
            int slot = tern_acks_push(c, TERN_PUBREC, p->packet_id);
            if (slot < 0) {
                *reason = TERN_RC_RECEIVE_MAX_EXCEEDED;
                return TERN_EPROTO;
            }
            c->inbound_unacked--; /* this re-send did not take a new slot */
            tern_acks_done(c, slot, TERN_RC_SUCCESS);
            return TERN_OK;
        }
    }
    /* Refuse what will not be stored or must not be forwarded, never accept and
     * then drop it: a name deeper than the topic tree holds, $SYS. */
    if (!tern_topic_name_valid((const char *)p->topic.ptr, p->topic.len))
        return refuse_publish(c, p, TERN_RC_TOPIC_NAME_INVALID, true, reason);
    if (is_sys_topic(p->topic))
        return refuse_publish(c, p, TERN_RC_NOT_AUTHORIZED, false, reason);
    /* The ACL (access.c): 5.0 PUBACK / PUBREC 0x87; 3.1.1 acknowledged, not
     * delivered, as Mosquitto does. */
    if (!tern_access_may(c, p->topic.ptr, p->topic.len, TERN_ACL_WRITE))
        return refuse_publish(c, p, TERN_RC_NOT_AUTHORIZED, false, reason);
    /* publish_rate_max / publish_quota_max (access_publish.c): 5.0 PUBACK / PUBREC
     * 0x96 / 0x97, QoS 0 dropped; 3.1.1 cannot be told: closed, so nothing is
     * acknowledged and lost (the client re-sends it after reconnecting). */
    uint8_t limited = tern_access_publish_take(c);
    if (limited && c->version != TERN_MQTT_5) {
        *reason = limited;
        return TERN_EPROTO;
    }
    if (limited)
        return refuse_publish(c, p, limited, false, reason);

    struct tern_cmd cmd = {.type = TERN_CMD_PUBLISH, .now_ms = tern_now_ms()};
    uint8_t *userbuf = NULL;
    if (tern_msg_from_packet(&cmd.u.publish.msg, &p->props, p->topic, p->payload, p->qos,
                             p->retain, tern_node_limits(n)->message_expiry_max_s,
                             &userbuf) != TERN_OK)
        return TERN_ENOMEM;
    struct tern_bytes id = {(const uint8_t *)c->client_id, c->client_id_len};
    cmd.u.publish.client_id = id;

    bool log = needs_log(c, p);
    if (p->qos == 2 && !c->persistent && !tern_session_local(c)) {
        free(userbuf);
        *reason = TERN_RC_SERVER_UNAVAILABLE; /* no local session to hold the id */
        return TERN_ENOMEM;
    }
    int slot = -1;
    if (p->qos > 0) {
        slot = tern_acks_push(c, p->qos == 1 ? TERN_PUBACK : TERN_PUBREC, p->packet_id);
        if (slot < 0) {
            free(userbuf);
            *reason = TERN_RC_RECEIVE_MAX_EXCEEDED;
            return TERN_EPROTO;
        }
    }
    uint16_t qos2_id = p->qos == 2 ? p->packet_id : 0;
    bool behind = c->opt && c->opt->deferred;
    if (!log && !behind) {
        /* No durable effect: this node's clean sessions and the other nodes', at once. */
        deliver_clean(c, &cmd, qos2_id, false);
        if (slot >= 0)
            tern_acks_done(c, slot, TERN_RC_SUCCESS);
        free(userbuf);
        return TERN_OK;
    }
    /* Clean subscribers get a logged PUBLISH from its commit, so they never see
     * what could still be lost, nor a QoS 2 re-send twice; one without durable
     * effects behind it waits its turn (not in the log). The local copy keeps
     * a clean publisher's QoS 2 id. */
    cmd.u.publish.epoch = c->epoch;
    cmd.u.publish.inbound_packet_id = qos2_id;
    struct tern_deferred_pub *h = tern_conn_opt(c) ? deferred_new(&cmd, slot, log) : NULL;
    if (!h) {
        free(userbuf);
        return TERN_ENOMEM;
    }
    rv = TERN_OK;
    if (log) {
        /* The replicated FSM holds the id only for a persistent publisher. */
        cmd.u.publish.inbound_packet_id = c->persistent ? qos2_id : 0;
        rv = tern_session_propose(c, &cmd, on_publish_committed, h);
    }
    free(userbuf);
    if (rv != TERN_OK) {
        free(h);
        *reason = TERN_RC_SERVER_UNAVAILABLE;
        return rv;
    }
    deferred_append(c->opt, h);
    if (log)
        c->opt->log_pending++;
    return TERN_OK;
}

static void on_pubrel_done(struct tern_conn *c, int status,
                           const struct tern_fsm_result *res, void *arg)
{
    if (c->state == TERN_CONN_CLOSING)
        return;
    /* An unknown id is released already (a re-sent PUBREL): PUBCOMP all the
     * same. Anything else did not apply: no PUBCOMP; the client re-sends. */
    if (status != TERN_OK || (res->status != TERN_OK && res->status != TERN_ENOTFOUND)) {
        tern_conn_close(c, TERN_RC_SERVER_UNAVAILABLE, "release could not be applied");
        return;
    }
    tern_acks_done(c, (int)(intptr_t)arg, TERN_RC_SUCCESS);
}

/* PUBREL: release the inbound QoS 2 id, then PUBCOMP (in ack order). */
static int handle_pubrel(struct tern_conn *c, const struct tern_ack *a, uint8_t *reason)
{
    int slot = tern_acks_push(c, TERN_PUBCOMP, a->packet_id);
    if (slot < 0) {
        *reason = TERN_RC_RECEIVE_MAX_EXCEEDED;
        return TERN_EPROTO;
    }
    struct tern_cmd cmd = {.type = TERN_CMD_PUBREL};
    cmd.u.pubrel.packet_id = a->packet_id;
    if (tern_session_command(c, &cmd, on_pubrel_done, (void *)(intptr_t)slot) !=
        TERN_OK) {
        *reason = TERN_RC_SERVER_UNAVAILABLE;
        return TERN_EPROTO;
    }
    return TERN_OK;
}

/* What the FSM made of a client's ack (docs/conformance.md, "acknowledgements"):
 * the wrong kind for a message in flight is a protocol error; an unknown id is
 * ignored (a late ack of a message acknowledged, dropped or expired), except a
 * PUBREC, which gets a PUBREL so the client's exchange can end (5.0: 0x92). */
static void on_ack_done(struct tern_conn *c, int status,
                        const struct tern_fsm_result *res, void *arg)
{
    if (status != TERN_OK || c->state != TERN_CONN_ACTIVE)
        return;
    uint16_t packet_id = (uint16_t)((uintptr_t)arg & 0xffff);
    uint8_t kind = (uint8_t)((uintptr_t)arg >> 16);
    if (res->status == TERN_EPROTO) {
        c->node->stats.protocol_errors++;
        tern_conn_close(c, TERN_RC_PROTOCOL_ERROR,
                        "acknowledgement of the wrong kind for a message in flight");
    } else if (res->status == TERN_ENOTFOUND && kind == TERN_PUBREC) {
        struct tern_packet p = {.type = TERN_PUBREL};
        p.u.ack.packet_id = packet_id;
        p.u.ack.reason = TERN_RC_PACKET_ID_NOT_FOUND;
        tern_conn_send(c, &p);
    }
}

/* PUBACK / PUBREC / PUBCOMP from the client for a message we sent. */
int tern_handle_ack(struct tern_conn *c, uint8_t type, const struct tern_ack *a,
                    uint8_t *reason)
{
    if (c->state != TERN_CONN_ACTIVE)
        return TERN_OK;
    if (type == TERN_PUBREL)
        return handle_pubrel(c, a, reason);
    c->retry_quiet_since_s = (uint32_t)(tern_mono_ms() / 1000);
    struct tern_cmd cmd = {.type = TERN_CMD_ACK};
    cmd.u.ack.packet_id = a->packet_id;
    cmd.u.ack.kind = type;
    cmd.u.ack.reason = a->reason;
    uintptr_t arg = ((uintptr_t)type << 16) | a->packet_id;
    if (tern_session_command(c, &cmd, on_ack_done, (void *)arg) != TERN_OK) {
        *reason = TERN_RC_SERVER_UNAVAILABLE;
        return TERN_EPROTO;
    }
    return TERN_OK;
}
