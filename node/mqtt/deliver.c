/* Local delivery: turns an FSM delivery into a PUBLISH (or PUBREL) for one
 * connection, with the per-connection parts added here: topic alias, message
 * expiry remaining, subscription identifiers, and the client's maximum packet
 * size. */
#include <stdlib.h>
#include <string.h>

#include "tern/frontend.h"
#include "tern/log.h"

/* Outbound alias for topic: existing, newly assigned (send topic too) or none. */
static uint16_t out_alias(struct tern_conn *c, struct tern_bytes topic, bool *fresh)
{
    *fresh = false;
    struct tern_conn_opt *o = c->opt; /* client_alias_max > 0 made it */
    uint16_t max = o ? o->client_alias_max : 0;
    if (max == 0)
        return 0;
    for (uint16_t i = 0; i < o->out_alias_count; i++) {
        const char *t = o->out_alias_topic[i];
        if (strlen(t) == topic.len && memcmp(t, topic.ptr, topic.len) == 0)
            return (uint16_t)(i + 1);
    }
    if (o->out_alias_count >= max)
        return 0;
    if (!o->out_alias_topic) {
        o->out_alias_topic = calloc(TERN_OUT_ALIAS_MAX, sizeof(*o->out_alias_topic));
        if (!o->out_alias_topic)
            return 0;
    }
    char *copy = malloc(topic.len + 1);
    if (!copy)
        return 0;
    memcpy(copy, topic.ptr, topic.len);
    copy[topic.len] = '\0';
    o->out_alias_topic[o->out_alias_count++] = copy;
    *fresh = true;
    return o->out_alias_count;
}

/* A message not sent is acknowledged as if the client had: the session's
 * window moves on (a QoS 2 one ends with a failing PUBREC reason). */
static void ack_unsent(struct tern_conn *c, const struct tern_delivery *d, uint8_t rc2)
{
    if (d->qos == 0)
        return;
    struct tern_cmd cmd = {.type = TERN_CMD_ACK};
    cmd.u.ack.packet_id = d->packet_id;
    cmd.u.ack.kind = d->qos == 1 ? TERN_PUBACK : TERN_PUBREC;
    cmd.u.ack.reason = d->qos == 1 ? TERN_RC_SUCCESS : rc2;
    tern_session_command(c, &cmd, NULL, NULL);
}

/* A message the client cannot take (too large) is dropped as MQTT 5 says:
 * as if sent and acknowledged. */
static void drop_undeliverable(struct tern_conn *c, const struct tern_delivery *d)
{
    c->node->stats.dropped_too_large++;
    char pb[TERN_PEER_STRLEN];
    TERN_LOGD("%s: message on %.*s over the client's maximum packet size: dropped",
              tern_conn_peer(c, pb), (int)d->msg->topic.len,
              (const char *)d->msg->topic.ptr);
    ack_unsent(c, d, TERN_RC_PACKET_TOO_LARGE);
}

void tern_deliver(struct tern_conn *c, const struct tern_delivery *d)
{
    if (d->pubrel) {
        struct tern_packet p = {.type = TERN_PUBREL};
        p.u.ack.packet_id = d->packet_id;
        tern_conn_send(c, &p);
        return;
    }
    const struct tern_msg *m = d->msg;
    if (!tern_access_may_receive(c, m->topic.ptr, m->topic.len)) {
        /* Not readable (a deny rule inside the subscription's filter, or rules
         * reloaded since): never sent, as Mosquitto does. */
        ack_unsent(c, d, TERN_RC_NOT_AUTHORIZED);
        return;
    }
    struct tern_packet p = {.type = TERN_PUBLISH};
    struct tern_publish *pub = &p.u.publish;
    pub->qos = d->qos;
    pub->dup = d->dup;
    pub->retain = d->retain;
    pub->packet_id = d->packet_id;
    pub->topic = m->topic;
    pub->payload = m->payload;
    bool fresh = false;
    if (c->version == TERN_MQTT_5) {
        struct tern_props *pr = &pub->props;
        uint64_t now = tern_now_ms();
        if (m->flags & TERN_MSG_HAS_PAYLOAD_FORMAT) {
            pr->mask |= TERN_PROP_BIT(TERN_PROP_PAYLOAD_FORMAT);
            pr->payload_format = m->payload_format;
        }
        if (m->flags & TERN_MSG_HAS_EXPIRY) {
            uint32_t left = tern_msg_remaining_s(m, now);
            if (left == 0 && m->expire_at_ms && now >= m->expire_at_ms) {
                /* Expired between queueing and sending: treat as delivered. */
                if (d->qos)
                    drop_undeliverable(c, d);
                return;
            }
            pr->mask |= TERN_PROP_BIT(TERN_PROP_MESSAGE_EXPIRY);
            pr->message_expiry = left ? left : 1;
        }
        if (m->flags & TERN_MSG_HAS_CONTENT_TYPE) {
            pr->mask |= TERN_PROP_BIT(TERN_PROP_CONTENT_TYPE);
            pr->content_type = m->content_type;
        }
        if (m->flags & TERN_MSG_HAS_RESPONSE_TOPIC) {
            pr->mask |= TERN_PROP_BIT(TERN_PROP_RESPONSE_TOPIC);
            pr->response_topic = m->response_topic;
        }
        if (m->flags & TERN_MSG_HAS_CORRELATION) {
            pr->mask |= TERN_PROP_BIT(TERN_PROP_CORRELATION_DATA);
            pr->correlation_data = m->correlation_data;
        }
        if (m->user.len)
            pr->user = m->user;
        if (d->sub_id_count) {
            pr->mask |= TERN_PROP_BIT(TERN_PROP_SUBSCRIPTION_ID);
            pr->sub_id_count = d->sub_id_count;
            memcpy(pr->sub_ids, d->sub_ids, d->sub_id_count * sizeof(d->sub_ids[0]));
        }
        uint16_t alias = out_alias(c, m->topic, &fresh);
        if (alias) {
            pr->mask |= TERN_PROP_BIT(TERN_PROP_TOPIC_ALIAS);
            pr->topic_alias = alias;
            if (!fresh)
                pub->topic = (struct tern_bytes){(const uint8_t *)"", 0};
        }
    }
    if (!tern_conn_send_sized(c, &p)) {
        if (fresh) /* the client never learnt this alias */
            free(c->opt->out_alias_topic[--c->opt->out_alias_count]);
        drop_undeliverable(c, d);
        return;
    }
    c->node->stats.msgs_out[d->qos]++;
}

/* Publishes a message to this node's clean sessions (local FSM). */
void tern_deliver_to_local(struct tern_node *n, const struct tern_cmd_msg *m,
                           const char *from_id, size_t from_len)
{
    struct tern_cmd cmd = {.type = TERN_CMD_PUBLISH, .now_ms = tern_now_ms()};
    cmd.u.publish.msg = *m;
    cmd.u.publish.client_id =
        (struct tern_bytes){(const uint8_t *)from_id, (uint32_t)from_len};
    struct tern_fsm_result res;
    tern_fsm_apply(n->local, &cmd, &res);
}

void tern_deliver_to_local_plain(struct tern_node *n, const struct tern_cmd_msg *m)
{
    struct tern_cmd cmd = {.type = TERN_CMD_PUBLISH, .now_ms = tern_now_ms()};
    cmd.u.publish.msg = *m;
    cmd.u.publish.select = TERN_PUB_GROUPS; /* and an empty list: no group here */
    struct tern_fsm_result res;
    tern_fsm_apply(n->local, &cmd, &res);
}

bool tern_deliver_msg_of(const struct tern_msg *m, uint64_t now_ms,
                         struct tern_cmd_msg *out)
{
    *out = (struct tern_cmd_msg){
        .topic = m->topic,
        .payload = m->payload,
        .qos = m->qos,
        .retain = m->retain,
        .flags = m->flags,
        .payload_format = m->payload_format,
        .content_type = m->content_type,
        .response_topic = m->response_topic,
        .correlation_data = m->correlation_data,
        .user = m->user,
    };
    if (m->flags & TERN_MSG_HAS_EXPIRY) {
        out->expiry_s = tern_msg_remaining_s(m, now_ms);
        if (out->expiry_s == 0 && m->expire_at_ms && now_ms >= m->expire_at_ms)
            return false;
    }
    return true;
}
