/* Drain (docs/operations.md): the node closes its clients and refuses new ones,
 * pointing MQTT 5 clients at another member, until undrained. The state is the
 * node's: the CONNECT handler reads it, the admin API sets it. */
#include <string.h>

#include "tern/frontend.h"

/* MQTT address of another member for clients to move to ("" if none): one whose
 * link is up if possible. */
const char *tern_node_other_member(const struct tern_node *n)
{
    struct tern_member_status ms[TERN_CLUSTER_MEMBERS_MAX];
    size_t count = tern_cluster_members(n->cluster, ms, TERN_CLUSTER_MEMBERS_MAX);
    const char *any = "";
    for (uint32_t i = 0; i < n->cfg.member_count; i++) {
        const struct tern_member *m = &n->cfg.members[i];
        if (m->id == n->cfg.node_id || !m->mqtt[0])
            continue;
        for (size_t j = 0; j < count; j++)
            if (ms[j].id == m->id && ms[j].link_up)
                return m->mqtt;
        if (!any[0])
            any = m->mqtt;
    }
    return any;
}

static void set_server_reference(struct tern_props *pr, const char *ref)
{
    if (!ref[0])
        return;
    pr->mask |= TERN_PROP_BIT(TERN_PROP_SERVER_REFERENCE);
    pr->server_reference =
        (struct tern_bytes){(const uint8_t *)ref, (uint32_t)strlen(ref)};
}

unsigned tern_node_drain(struct tern_node *n)
{
    const char *ref = tern_node_other_member(n);
    unsigned closed = 0;
    n->draining = true;
    /* Closing is asynchronous: the list does not change while we walk it. */
    for (struct tern_conn *c = n->conns; c; c = c->next) {
        if (c->state == TERN_CONN_CLOSING)
            continue;
        if (c->state == TERN_CONN_ACTIVE && c->version == TERN_MQTT_5 &&
            !c->disconnect_sent) {
            struct tern_packet p = {.type = TERN_DISCONNECT};
            p.u.disconnect.reason = TERN_RC_USE_ANOTHER_SERVER;
            set_server_reference(&p.u.disconnect.props, ref);
            tern_conn_send(c, &p);
            c->disconnect_sent = true;
        }
        tern_conn_close(c, TERN_RC_USE_ANOTHER_SERVER, "node drained by admin");
        closed++;
    }
    return closed;
}
