/* The $SYS topics, published to this node's clean-session subscribers. */
#include "admin_internal.h"

/* --- $SYS topics ----------------------------------------------------------------- */

/* Publishes one $SYS topic to this node's clean-session subscribers. */
static void sys_publish(struct tern_node *n, const char *topic, const char *fmt, ...)
    TERN_PRINTF(3, 4);
static void sys_publish(struct tern_node *n, const char *topic, const char *fmt, ...)
{
    if (!tern_fsm_has_subscriber(n->local, topic, strlen(topic)))
        return;
    char payload[128];
    va_list ap;
    va_start(ap, fmt);
    int len = vsnprintf(payload, sizeof(payload), fmt, ap);
    va_end(ap);
    struct tern_cmd_msg m = {
        .topic = {(const uint8_t *)topic, (uint32_t)strlen(topic)},
        .payload = {(const uint8_t *)payload, (uint32_t)len},
    };
    tern_deliver_to_local(n, &m, NULL, 0);
}

void admin_on_sys_timer(uv_timer_t *t)
{
    struct tern_admin *a = t->data;
    struct tern_node *n = a->node;
    const struct tern_node_stats *s = &n->stats;
    struct tern_cluster_status st;
    tern_cluster_status(n->cluster, &st);
    unsigned connected = 0;
    for (struct tern_conn *c = n->conns; c; c = c->next)
        connected += c->state == TERN_CONN_ACTIVE;
    sys_publish(n, "$SYS/broker/version", "tern %s", TERN_VERSION);
    sys_publish(n, "$SYS/broker/uptime", "%" PRIu64 " seconds",
                (tern_mono_ms() - a->started_ms) / 1000);
    sys_publish(n, "$SYS/broker/clients/connected", "%u", connected);
    sys_publish(n, "$SYS/broker/messages/received", "%" PRIu64,
                s->msgs_in[0] + s->msgs_in[1] + s->msgs_in[2]);
    sys_publish(n, "$SYS/broker/messages/sent", "%" PRIu64,
                s->msgs_out[0] + s->msgs_out[1] + s->msgs_out[2]);
    sys_publish(n, "$SYS/broker/tern/raft/term", "%" PRIu64, st.term);
    sys_publish(n, "$SYS/broker/tern/raft/leader", "%" PRIu32, st.leader);
}
