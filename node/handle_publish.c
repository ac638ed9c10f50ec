/* PUBLISH from a client, and the acknowledgement packets of both directions.
 *
 * A PUBLISH is delivered at once to this node's clean sessions (local FSM).
 * Its durable effects - the retained store, queues of persistent sessions, the
 * inbound QoS 2 id of a persistent publisher - go through the log as one
 * PUBLISH command, and the client's PUBACK / PUBREC waits until it applies.
 */
#include <stdlib.h>
#include <string.h>

#include "node.h"
#include "tern/log.h"

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

static void on_publish_committed(struct tern_conn *c, int status,
                                 const struct tern_fsm_result *res, void *arg)
{
    int slot = (int)(intptr_t)arg;
    if (c->state == TERN_CONN_CLOSING)
        return;
    if (status != TERN_OK) {
        /* Not durable: no ack; the client re-sends after reconnecting. */
        tern_conn_close(c, TERN_RC_SERVER_UNAVAILABLE, "publish could not be committed");
        return;
    }
    if (res->status != TERN_OK) {
        /* Refused (the session was taken over: a stale epoch; or out of memory):
         * nothing was stored, so nothing is acknowledged. */
        tern_conn_close(c, TERN_RC_SERVER_UNAVAILABLE, "publish was not applied");
        return;
    }
    tern_flow_hold(c, tern_cluster_fsm(c->node->cluster), res);
    tern_acks_done(c, slot, TERN_RC_SUCCESS);
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
        /* A re-sent PUBLISH whose id is still held was delivered already. */
        struct tern_fsm_session *s = tern_session_get(c);
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

    struct tern_cmd cmd = {.type = TERN_CMD_PUBLISH, .now_ms = tern_now_ms()};
    uint8_t *userbuf = NULL;
    if (tern_msg_from_packet(&cmd.u.publish.msg, &p->props, p->topic, p->payload, p->qos,
                             p->retain, tern_node_limits(n)->message_expiry_max_s,
                             &userbuf) != TERN_OK)
        return TERN_ENOMEM;
    struct tern_bytes id = {(const uint8_t *)c->client_id, c->client_id_len};
    cmd.u.publish.client_id = id;

    /* This node's clean sessions, at once. A clean publisher's QoS 2 id is
     * held in the local FSM (it ends with the connection anyway). */
    bool log = needs_log(c, p);
    if (p->qos == 2 && !c->persistent && !tern_session_local(c)) {
        free(userbuf);
        *reason = TERN_RC_SERVER_UNAVAILABLE; /* no local session to hold the id */
        return TERN_ENOMEM;
    }
    cmd.u.publish.epoch = c->local_epoch;
    cmd.u.publish.inbound_packet_id = (p->qos == 2 && !c->persistent) ? p->packet_id : 0;
    struct tern_fsm_result res;
    tern_fsm_apply(n->local, &cmd, &res);
    tern_flow_hold(c, n->local, &res); /* a clean subscriber's queue is backlogged */
    uint32_t fullest = tern_routes_forward(n, &cmd);
    if (fullest)
        tern_conn_pause(c, fullest); /* after this PUBLISH, if that link is backed up */

    int slot = -1;
    if (p->qos > 0) {
        slot = tern_acks_push(c, p->qos == 1 ? TERN_PUBACK : TERN_PUBREC, p->packet_id);
        if (slot < 0) {
            free(userbuf);
            *reason = TERN_RC_RECEIVE_MAX_EXCEEDED;
            return TERN_EPROTO;
        }
    }
    rv = TERN_OK;
    if (log) {
        cmd.u.publish.epoch = c->epoch;
        cmd.u.publish.inbound_packet_id =
            (p->qos == 2 && c->persistent) ? p->packet_id : 0;
        rv = tern_session_propose(c, &cmd, p->qos ? on_publish_committed : NULL,
                                  (void *)(intptr_t)slot);
    } else if (slot >= 0) {
        tern_acks_done(c, slot, TERN_RC_SUCCESS);
    }
    free(userbuf);
    if (rv != TERN_OK) {
        *reason = TERN_RC_SERVER_UNAVAILABLE;
        return rv;
    }
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
    /* An unknown id is not an error worth a disconnect: it may be a late ack of
     * a message we already dropped. */
    if (tern_session_command(c, &cmd, NULL, NULL) != TERN_OK) {
        *reason = TERN_RC_SERVER_UNAVAILABLE;
        return TERN_EPROTO;
    }
    return TERN_OK;
}
