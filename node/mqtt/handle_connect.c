/* CONNECT: validate, register the session in the replicated FSM (SESSION_OPEN),
 * and answer with CONNACK when that command applies (effects.c: repl_opened). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tern/frontend.h"
#include "tern/auth.h"
#include "tern/log.h"

/* CONNACK refusing the connection, in the client's protocol version. */
static void refuse(struct tern_conn *c, uint8_t v5_reason, uint8_t v3_code)
{
    struct tern_packet p = {.type = TERN_CONNACK};
    p.u.connack.reason = c->version == TERN_MQTT_5 ? v5_reason : v3_code;
    tern_conn_send(c, &p);
}

static void on_open_done(struct tern_conn *c, int status,
                         const struct tern_fsm_result *res, void *arg)
{
    (void)arg;
    /* A duplicate applied inside a snapshot this node installed: no CONNACK
     * went out from its effects, so it is refused and the client retries. */
    if (status == TERN_OK && res->status == TERN_OK && !res->duplicate) {
        /* CONNACK went out when the command applied; now read what the client
         * sent after CONNECT (outside the FSM's apply). */
        tern_conn_resume(c);
        return;
    }
    struct tern_client_slot *slot = tern_clients_slot_of(c->client_id);
    if (slot->connecting == c) {
        if (status == TERN_OK && res->duplicate)
            tern_session_open_lost(c);
        tern_clients_connected(&c->node->clients, slot);
        tern_clients_release(&c->node->clients, slot);
    }
    if (c->state != TERN_CONN_CONNECTING)
        return;
    refuse(c,
           status == TERN_OK && res->status == TERN_ELIMIT ? TERN_RC_QUOTA_EXCEEDED
                                                           : TERN_RC_SERVER_UNAVAILABLE,
           TERN_V3_SERVER_UNAVAILABLE);
    c->state = TERN_CONN_NEW; /* no session to close */
    tern_conn_close(c, TERN_RC_SUCCESS, "session could not be opened");
}

/* An id for a client that sent none, into buf (64 bytes); returns its length. */
static size_t assign_client_id(struct tern_conn *c, char *buf)
{
    int len = snprintf(buf, 64, "tern-%" PRIu32 "-%" PRIx64 "-%" PRIu64,
                       c->node->cfg.node_id, tern_now_ms(), ++c->node->next_client_seq);
    c->assigned_id = true;
    return (size_t)len;
}

static int check_will(struct tern_conn *c, const struct tern_connect *p, uint8_t *v5,
                      uint8_t *v3)
{
    const struct tern_config *cfg = &c->node->cfg;
    if (!p->will_flag)
        return TERN_OK;
    if (p->will_qos > cfg->max_qos) {
        *v5 = TERN_RC_QOS_NOT_SUPPORTED;
        *v3 = TERN_V3_NOT_AUTHORIZED;
        return TERN_EPROTO;
    }
    if (p->will_retain && !cfg->retain_available) {
        *v5 = TERN_RC_RETAIN_NOT_SUPPORTED;
        *v3 = TERN_V3_NOT_AUTHORIZED;
        return TERN_EPROTO;
    }
    return TERN_OK;
}

/* Reads the client's v5 limits and our session expiry / keepalive choices.
 * TERN_ENOMEM if the connection's optional part was needed and not allocated. */
static int read_limits(struct tern_conn *c, const struct tern_connect *p)
{
    const struct tern_config *cfg = &c->node->cfg;
    const struct tern_props *pr = &p->props;
    c->keepalive_s = p->keepalive_s;
    if (cfg->max_keepalive_s && (c->keepalive_s > cfg->max_keepalive_s ||
                                 (c->keepalive_s == 0 && c->version == TERN_MQTT_5))) {
        /* 3.1.1 has no way to tell the client, so only v5 gets keepalive 0 capped. */
        if (c->keepalive_s > cfg->max_keepalive_s || cfg->max_keepalive_s < 65535) {
            c->keepalive_s = cfg->max_keepalive_s;
            c->keepalive_capped = c->version == TERN_MQTT_5;
        }
    }
    c->client_receive_max = 65535;
    c->request_problem_info = true;
    if (c->version == TERN_MQTT_5) {
        c->session_expiry_s =
            (pr->mask & TERN_PROP_BIT(TERN_PROP_SESSION_EXPIRY)) ? pr->session_expiry : 0;
        if (pr->mask & TERN_PROP_BIT(TERN_PROP_RECEIVE_MAX))
            c->client_receive_max = pr->receive_max;
        bool max_packet = pr->mask & TERN_PROP_BIT(TERN_PROP_MAX_PACKET_SIZE);
        bool aliases = (pr->mask & TERN_PROP_BIT(TERN_PROP_TOPIC_ALIAS_MAX)) &&
                       pr->topic_alias_max > 0;
        if (max_packet || aliases) {
            struct tern_conn_opt *o = tern_conn_opt(c);
            if (!o)
                return TERN_ENOMEM;
            if (max_packet)
                o->client_max_packet = pr->max_packet_size;
            if (aliases) /* We use at most TERN_OUT_ALIAS_MAX of them. */
                o->client_alias_max = pr->topic_alias_max < TERN_OUT_ALIAS_MAX
                                          ? (uint8_t)pr->topic_alias_max
                                          : TERN_OUT_ALIAS_MAX;
        }
        if (pr->mask & TERN_PROP_BIT(TERN_PROP_REQUEST_PROBLEM_INFO))
            c->request_problem_info = pr->request_problem_info;
    } else {
        /* 3.1.1: a persistent session lasts until the client cleans it. */
        c->session_expiry_s = p->clean_start ? 0 : UINT32_MAX;
    }
    uint32_t cap = tern_node_limits(c->node)->session_expiry_max_s;
    if (cap && c->session_expiry_s > cap) {
        c->session_expiry_s = cap;
        c->expiry_capped = c->version == TERN_MQTT_5;
    }
    return TERN_OK;
}

/* A CONNECT whose client id has a SESSION_OPEN of this node still in the log
 * waits for it, unread in rbuf, and is handled once that applies or fails
 * (tern_conn_open_waiting): refused (Server busy), a client on a lossy network
 * went into its back-off and stayed away well after the cluster had recovered.
 * Only the newest waits: an older one's client gave up on it. The wait ends
 * at connect_timeout_ms like any CONNECT not answered. */
bool tern_connect_waits(struct tern_conn *c, const struct tern_connect *p)
{
    struct tern_clients *t = &c->node->clients;
    if (p->client_id.len == 0)
        return false;
    struct tern_client_slot *slot =
        tern_clients_get(t, (const char *)p->client_id.ptr, p->client_id.len);
    if (!slot || !slot->connecting)
        return false;
    if (slot->waiting)
        tern_conn_close(slot->waiting, TERN_RC_SESSION_TAKEN_OVER,
                        "a newer CONNECT of this client id came while it waited");
    tern_clients_hold(slot);
    c->client_id = slot->id;
    c->client_id_len = slot->id_len;
    c->state = TERN_CONN_WAITING;
    slot->waiting = c;
    return true;
}

int tern_handle_connect(struct tern_conn *c, const struct tern_connect *p,
                        uint8_t *reason)
{
    struct tern_node *n = c->node;
    const struct tern_config *cfg = &n->cfg;
    /* 3.1 speaks 3.1.1's packets; only CONNECT and CONNACK differ (v31). */
    c->version = p->version == TERN_MQTT_31 ? TERN_MQTT_311 : p->version;
    c->v31 = p->version == TERN_MQTT_31;
    *reason = TERN_RC_SUCCESS; /* a refusal is said by CONNACK, not DISCONNECT */

    if (!tern_node_available(n)) {
        refuse(c, TERN_RC_SERVER_UNAVAILABLE, TERN_V3_SERVER_UNAVAILABLE);
        return TERN_EPROTO;
    }
    if (n->draining) {
        /* Drained for maintenance: MQTT 5 clients are pointed at another member. */
        struct tern_packet p2 = {.type = TERN_CONNACK};
        p2.u.connack.reason = c->version == TERN_MQTT_5 ? TERN_RC_USE_ANOTHER_SERVER
                                                        : TERN_V3_SERVER_UNAVAILABLE;
        const char *ref = tern_node_other_member(n);
        if (c->version == TERN_MQTT_5 && ref[0]) {
            p2.u.connack.props.mask |= TERN_PROP_BIT(TERN_PROP_SERVER_REFERENCE);
            p2.u.connack.props.server_reference =
                (struct tern_bytes){(const uint8_t *)ref, (uint32_t)strlen(ref)};
        }
        n->stats.connections_rejected++;
        tern_conn_send(c, &p2);
        return TERN_EPROTO;
    }
    size_t scram_len;
    if (c->version == TERN_MQTT_5 &&
        (p->props.mask & TERN_PROP_BIT(TERN_PROP_AUTH_METHOD)) &&
        !tern_access_scram_user(c, &scram_len)) {
        /* Only access_scram.c's exchange comes here with a method. */
        refuse(c, TERN_RC_BAD_AUTH_METHOD, TERN_V3_NOT_AUTHORIZED);
        return TERN_EPROTO;
    }
    char assigned[64];
    const char *id = (const char *)p->client_id.ptr;
    size_t id_len = p->client_id.len;
    if (p->version == TERN_MQTT_31 && (id_len == 0 || id_len > 23)) {
        /* MQTT 3.1 (MQIsdp): a client id of 1 to 23 characters, else return code 2. */
        refuse(c, TERN_RC_CLIENT_ID_NOT_VALID, TERN_V3_ID_REJECTED);
        return TERN_EPROTO;
    }
    if (id_len == 0) {
        if (c->version != TERN_MQTT_5 && !p->clean_start) {
            refuse(c, TERN_RC_CLIENT_ID_NOT_VALID, TERN_V3_ID_REJECTED);
            return TERN_EPROTO;
        }
        id_len = assign_client_id(c, assigned);
        id = assigned;
    } else if (id_len > cfg->client_id_max_len) {
        refuse(c, TERN_RC_CLIENT_ID_NOT_VALID, TERN_V3_ID_REJECTED);
        return TERN_EPROTO;
    }
    uint8_t auth_v5 = 0, auth_v3 = 0;
    int arv = tern_access_connect(c, p, &auth_v5, &auth_v3);
    if (arv == TERN_ENOMEM)
        return arv;
    if (arv != TERN_OK) {
        n->stats.connections_rejected++;
        refuse(c, auth_v5, auth_v3);
        return TERN_EPROTO;
    }
    /* The connection's client id is the one kept in the node's client table. */
    struct tern_client_slot *slot = tern_clients_put(&n->clients, id, id_len);
    if (!slot)
        return TERN_ENOMEM;
    tern_clients_hold(slot);
    c->client_id = slot->id;
    c->client_id_len = slot->id_len;
    uint8_t v5 = 0, v3 = 0;
    if (check_will(c, p, &v5, &v3) != TERN_OK) {
        refuse(c, v5, v3);
        return TERN_EPROTO;
    }
    if (read_limits(c, p) != TERN_OK)
        return TERN_ENOMEM;
    if (slot->connecting) {
        /* Another CONNECT for this id came in a SCRAM exchange's round trip (the
         * others wait in tern_connect_waits). */
        refuse(c, TERN_RC_SERVER_BUSY, TERN_V3_SERVER_UNAVAILABLE);
        return TERN_EPROTO;
    }

    struct tern_cmd cmd = {.type = TERN_CMD_SESSION_OPEN, .now_ms = tern_now_ms()};
    cmd.u.open.client_id =
        (struct tern_bytes){(const uint8_t *)c->client_id, c->client_id_len};
    cmd.u.open.node = cfg->node_id;
    cmd.u.open.proto = c->version;
    cmd.u.open.clean_start = p->clean_start;
    cmd.u.open.expiry_s = c->session_expiry_s;
    cmd.u.open.receive_max = c->client_receive_max;
    uint8_t *userbuf = NULL;
    bool will = p->will_flag;
    if (will &&
        !tern_access_may(c, p->will_topic.ptr, p->will_topic.len, TERN_ACL_WRITE)) {
        /* A will the client may not publish is not kept, so never published. */
        char pb[TERN_PEER_STRLEN];
        TERN_LOGI("%s %.*s: will on a topic the ACL does not allow: dropped",
                  tern_conn_peer(c, pb), (int)c->client_id_len, c->client_id);
        will = false;
    }
    if (will) {
        cmd.u.open.has_will = true;
        if (p->will_props.mask & TERN_PROP_BIT(TERN_PROP_WILL_DELAY))
            cmd.u.open.will_delay_s = p->will_props.will_delay;
        if (tern_msg_from_packet(&cmd.u.open.will, &p->will_props, p->will_topic,
                                 p->will_payload, p->will_qos, p->will_retain,
                                 tern_node_limits(c->node)->message_expiry_max_s,
                                 &userbuf) != TERN_OK)
            return TERN_ENOMEM;
    }
    slot->connecting = c;
    c->state = TERN_CONN_CONNECTING;
    tern_conn_ref(c);
    int rv = tern_session_propose(c, &cmd, on_open_done, NULL);
    tern_conn_unref(c);
    free(userbuf);
    if (rv != TERN_OK) {
        tern_clients_connected(&n->clients, slot);
        c->state = TERN_CONN_NEW;
        refuse(c, TERN_RC_SERVER_UNAVAILABLE, TERN_V3_SERVER_UNAVAILABLE);
        return TERN_EPROTO;
    }
    return TERN_OK;
}
