/* SUBSCRIBE and UNSUBSCRIBE: checked here against the broker's features, then
 * one command to the session's FSM. SUBACK goes out when the command applies
 * (before any retained message), UNSUBACK when it completes. */
#include <stdlib.h>
#include <string.h>

#include "tern/frontend.h"
#include "tern/auth.h"
#include "tern/log.h"
#include "tern/topic.h"

static bool has_wildcard(struct tern_bytes f)
{
    return memchr(f.ptr, '+', f.len) || memchr(f.ptr, '#', f.len);
}

/* Reason code for one SUBSCRIBE entry, or the granted QoS. A protocol error
 * (no-local on a shared subscription) closes the connection. */
static uint8_t check_entry(struct tern_conn *c, struct tern_bytes filter,
                           uint8_t *options, bool *fatal)
{
    const struct tern_config *cfg = &c->node->cfg;
    const char *g, *inner;
    size_t glen, ilen;
    bool shared = tern_topic_shared_split((const char *)filter.ptr, filter.len, &g, &glen,
                                          &inner, &ilen);
    if (shared && !cfg->shared_subscriptions)
        return TERN_RC_SHARED_SUBS_NOT_SUPPORTED;
    if (shared && (*options & TERN_SUBOPT_NO_LOCAL)) {
        *fatal = true;
        return TERN_RC_PROTOCOL_ERROR;
    }
    if (!cfg->wildcard_subscriptions && has_wildcard(filter))
        return TERN_RC_WILDCARD_SUBS_NOT_SUPPORTED;
    if (!tern_topic_filter_valid((const char *)filter.ptr, filter.len))
        return TERN_RC_TOPIC_FILTER_INVALID;
    /* The ACL reads the filter a shared subscription wraps: a read rule must
     * cover it and no deny rule cover it (3.1.1: SUBACK 0x80). Where a deny rule
     * covers part of it, each delivery is checked (deliver.c). */
    if (!tern_access_may(c, shared ? (const uint8_t *)inner : filter.ptr,
                         shared ? ilen : filter.len, TERN_ACL_READ))
        return TERN_RC_NOT_AUTHORIZED;
    uint8_t qos = *options & TERN_SUBOPT_QOS_MASK;
    if (qos > cfg->max_qos)
        qos = cfg->max_qos;
    *options = (uint8_t)((*options & ~TERN_SUBOPT_QOS_MASK) | qos);
    return qos;
}

static struct tern_pending_sub *pending_new(uint8_t type, uint16_t packet_id,
                                            uint32_t count)
{
    struct tern_pending_sub *p = calloc(1, sizeof(*p) + count);
    if (p) {
        p->type = type;
        p->packet_id = packet_id;
        p->count = count;
    }
    return p;
}

static void send_pending(struct tern_conn *c, struct tern_pending_sub *p)
{
    struct tern_packet pk = {.type = p->type};
    pk.u.sub.packet_id = p->packet_id;
    pk.u.sub.list = (struct tern_bytes){p->reasons, p->count};
    pk.u.sub.count = p->count;
    tern_conn_send(c, &pk);
}

/* Removes and returns the pending SUBACK/UNSUBACK for packet_id, if still there. */
static struct tern_pending_sub *pending_take(struct tern_conn *c, uint8_t type,
                                             uint16_t packet_id)
{
    if (!c->opt)
        return NULL;
    for (struct tern_pending_sub **pp = &c->opt->subs; *pp; pp = &(*pp)->next) {
        struct tern_pending_sub *p = *pp;
        if (p->type == type && p->packet_id == packet_id) {
            *pp = p->next;
            tern_conn_opt_trim(c);
            return p;
        }
    }
    return NULL;
}

void tern_pending_sub_send(struct tern_conn *c, uint8_t type, uint16_t packet_id)
{
    struct tern_pending_sub *p = pending_take(c, type, packet_id);
    if (p)
        send_pending(c, p);
    free(p);
}

static void on_sub_done(struct tern_conn *c, int status,
                        const struct tern_fsm_result *res, void *arg)
{
    uint16_t packet_id = (uint16_t)(uintptr_t)arg;
    uint8_t type = (uint8_t)((uintptr_t)arg >> 16);
    struct tern_pending_sub *p = pending_take(c, type, packet_id);
    if (c->state == TERN_CONN_CLOSING) {
        free(p);
        return;
    }
    /* A duplicate applied inside a snapshot this node installed: its effects
     * (the SUBACK) never ran here; the client subscribes again. */
    if (status != TERN_OK || res->status != TERN_OK || res->duplicate) {
        free(p);
        tern_conn_close(c, TERN_RC_SERVER_UNAVAILABLE,
                        "subscription could not be committed");
        return;
    }
    if (p) /* UNSUBACK; a SUBACK already went out from the subscribed effect */
        send_pending(c, p);
    free(p);
}

struct sub_lookup {
    struct tern_bytes filter;
    bool found;
};

static int find_sub(void *ctx, struct tern_bytes filter, uint8_t options, uint32_t sub_id)
{
    (void)options;
    (void)sub_id;
    struct sub_lookup *l = ctx;
    if (filter.len == l->filter.len &&
        memcmp(filter.ptr, l->filter.ptr, filter.len) == 0) {
        l->found = true;
        return 1;
    }
    return 0;
}

struct deferred_sub {
    uint16_t packet_id;
    uint32_t count;
    uint8_t *list;
    size_t len;
};

static void on_barrier(struct tern_conn *c, int status, const struct tern_fsm_result *res,
                       void *arg)
{
    (void)res;
    struct deferred_sub *d = arg;
    if (status != TERN_OK && c->state != TERN_CONN_CLOSING)
        tern_conn_close(c, TERN_RC_SERVER_UNAVAILABLE,
                        "subscription could not be ordered");
    if (c->state == TERN_CONN_ACTIVE) {
        struct tern_cmd cmd = {.type = TERN_CMD_SUBSCRIBE};
        cmd.u.sub.packet_id = d->packet_id;
        cmd.u.sub.list = (struct tern_bytes){d->list, (uint32_t)d->len};
        cmd.u.sub.count = d->count;
        tern_session_command(c, &cmd, on_sub_done,
                             (void *)(uintptr_t)((TERN_SUBACK << 16) | d->packet_id));
    }
    free(d->list);
    free(d);
}

/* Takes ownership of list. */
static int subscribe_after_barrier(struct tern_conn *c, uint16_t packet_id, uint8_t *list,
                                   size_t len, uint32_t count)
{
    struct deferred_sub *d = malloc(sizeof(*d));
    if (!d) {
        free(list);
        return TERN_ENOMEM;
    }
    *d = (struct deferred_sub){packet_id, count, list, len};
    struct tern_cmd cmd = {.type = TERN_CMD_BARRIER};
    int rv = tern_session_propose(c, &cmd, on_barrier, d);
    if (rv != TERN_OK) {
        free(list);
        free(d);
    }
    return rv;
}

int tern_handle_subscribe(struct tern_conn *c, const struct tern_sublist *s,
                          uint8_t *reason)
{
    if (c->state != TERN_CONN_ACTIVE)
        return TERN_OK;
    uint32_t sub_id = 0;
    if (s->props.mask & TERN_PROP_BIT(TERN_PROP_SUBSCRIPTION_ID)) {
        if (!c->node->cfg.subscription_identifiers) {
            *reason = TERN_RC_SUB_IDS_NOT_SUPPORTED;
            return TERN_EPROTO;
        }
        sub_id = s->props.sub_ids[0];
    }
    struct tern_pending_sub *p = pending_new(TERN_SUBACK, s->packet_id, s->count);
    uint8_t *list = malloc((size_t)s->list.len + (size_t)s->count * 8 + 16);
    if (!p || !list || !tern_conn_opt(c)) { /* opt: the pending list */
        free(p);
        free(list);
        return TERN_ENOMEM;
    }
    size_t len = 0;
    uint32_t pos = 0, i = 0, granted = 0;
    struct tern_bytes filter;
    uint8_t options;
    /* subscriptions_max: a new filter past it is refused (5.0: 0x97 quota
     * exceeded); one the session has already is a replacement and goes. */
    const struct tern_fsm_session *held = tern_session_get(c);
    uint32_t subs = held ? tern_fsm_session_sub_count(held) : 0;
    uint32_t subs_max = c->node->cfg.subscriptions_max;
    while (i < s->count &&
           tern_codec_next_filter(s, TERN_SUBSCRIBE, &pos, &filter, &options)) {
        bool fatal = false;
        uint8_t rc = check_entry(c, filter, &options, &fatal);
        if (fatal) {
            free(p);
            free(list);
            *reason = rc;
            return TERN_EPROTO;
        }
        if (rc < 0x80) {
            struct sub_lookup l = {filter, false};
            if (held)
                tern_fsm_session_subs_walk(held, find_sub, &l);
            if (!l.found && subs >= subs_max) {
                c->node->stats.subscriptions_refused++;
                rc = TERN_RC_QUOTA_EXCEEDED;
            } else if (!l.found) {
                subs++;
            }
        }
        if (c->version != TERN_MQTT_5 && rc >= 0x80)
            rc = 0x80; /* 3.1.1 has one failure code */
        p->reasons[i++] = rc;
        if (rc >= 0x80)
            continue;
        struct tern_cmd_sub e = {filter, options, sub_id};
        len += tern_cmd_put_sub(list + len, (size_t)s->list.len + s->count * 8 + 16 - len,
                                &e);
        granted++;
    }
    if (granted == 0) {
        /* Nothing to change: answer now. */
        send_pending(c, p);
        free(p);
        free(list);
        return TERN_OK;
    }
    p->next = c->opt->subs;
    c->opt->subs = p;
    /* Clean sessions announce new filters as routes (cluster forwarding). */
    struct tern_fsm_session *sess = c->persistent ? NULL : tern_session_local(c);
    if (!c->persistent && !sess) {
        free(pending_take(c, TERN_SUBACK, s->packet_id));
        free(list);
        *reason = TERN_RC_SERVER_UNAVAILABLE;
        return TERN_ENOMEM;
    }
    uint32_t rpos = 0;
    struct tern_cmd_sub re;
    while (sess &&
           tern_cmd_next_sub((struct tern_bytes){list, (uint32_t)len}, &rpos, &re)) {
        struct sub_lookup l = {re.filter, false};
        tern_fsm_session_subs_walk(sess, find_sub, &l);
        if (!l.found)
            tern_routes_ref(c->node, (const char *)re.filter.ptr, re.filter.len);
    }
    int rv;
    if (!c->persistent &&
        (c->node->cfg.member_count > 1 || (c->opt && c->opt->log_pending))) {
        /* Read index: the retained messages this SUBSCRIBE delivers come from the
         * local replica, so first let a BARRIER go through the log. It applies
         * after this connection's earlier PUBLISHes (one node's proposals apply
         * in order), so the SUBSCRIBE sees their retained messages even on a
         * single node, where nothing else would make it wait. */
        rv = subscribe_after_barrier(c, s->packet_id, list, len, granted);
    } else {
        struct tern_cmd cmd = {.type = TERN_CMD_SUBSCRIBE};
        cmd.u.sub.packet_id = s->packet_id;
        cmd.u.sub.list = (struct tern_bytes){list, (uint32_t)len};
        cmd.u.sub.count = granted;
        rv =
            tern_session_command(c, &cmd, on_sub_done,
                                 (void *)(uintptr_t)((TERN_SUBACK << 16) | s->packet_id));
        free(list);
    }
    if (rv != TERN_OK) {
        free(pending_take(c, TERN_SUBACK, s->packet_id));
        *reason = TERN_RC_SERVER_UNAVAILABLE;
        return rv;
    }
    return TERN_OK;
}

int tern_handle_unsubscribe(struct tern_conn *c, const struct tern_sublist *s,
                            uint8_t *reason)
{
    if (c->state != TERN_CONN_ACTIVE)
        return TERN_OK;
    struct tern_pending_sub *p = pending_new(TERN_UNSUBACK, s->packet_id, s->count);
    uint8_t *list = malloc((size_t)s->list.len + (size_t)s->count * 8 + 16);
    if (!p || !list || !tern_conn_opt(c)) { /* opt: the pending list */
        free(p);
        free(list);
        return TERN_ENOMEM;
    }
    struct tern_fsm_session *sess = tern_session_get(c);
    size_t len = 0;
    uint32_t pos = 0, i = 0;
    struct tern_bytes filter;
    while (i < s->count &&
           tern_codec_next_filter(s, TERN_UNSUBSCRIBE, &pos, &filter, NULL)) {
        struct sub_lookup l = {filter, false};
        if (sess)
            tern_fsm_session_subs_walk(sess, find_sub, &l);
        p->reasons[i++] = l.found ? TERN_RC_SUCCESS : TERN_RC_NO_SUBSCRIPTION_EXISTED;
        if (l.found && !c->persistent)
            tern_routes_unref(c->node, (const char *)filter.ptr, filter.len);
        struct tern_cmd_sub e = {filter, 0, 0};
        len += tern_cmd_put_sub(list + len, (size_t)s->list.len + s->count * 8 + 16 - len,
                                &e);
    }
    p->next = c->opt->subs;
    c->opt->subs = p;
    struct tern_cmd cmd = {.type = TERN_CMD_UNSUBSCRIBE};
    cmd.u.sub.packet_id = s->packet_id;
    cmd.u.sub.list = (struct tern_bytes){list, (uint32_t)len};
    cmd.u.sub.count = i;
    int rv = tern_session_command(
        c, &cmd, on_sub_done, (void *)(uintptr_t)((TERN_UNSUBACK << 16) | s->packet_id));
    free(list);
    if (rv != TERN_OK) {
        free(pending_take(c, TERN_UNSUBACK, s->packet_id));
        *reason = TERN_RC_SERVER_UNAVAILABLE;
        return rv;
    }
    return TERN_OK;
}

/* DISCONNECT from the client: 0x00 drops the will, 0x04 keeps it; v5 may change
 * the session expiry, but not from zero (3.14.2.2.2). */
int tern_handle_disconnect(struct tern_conn *c, const struct tern_disconnect *d,
                           uint8_t *reason)
{
    if (c->version == TERN_MQTT_5 &&
        (d->props.mask & TERN_PROP_BIT(TERN_PROP_SESSION_EXPIRY))) {
        if (c->session_expiry_s == 0 && d->props.session_expiry != 0) {
            *reason = TERN_RC_PROTOCOL_ERROR;
            return TERN_EPROTO;
        }
        c->session_expiry_s = d->props.session_expiry;
        uint32_t cap = tern_node_limits(c->node)->session_expiry_max_s;
        if (cap && c->session_expiry_s > cap)
            c->session_expiry_s = cap;
    }
    c->will_suppressed = d->reason != TERN_RC_DISCONNECT_WITH_WILL;
    c->disconnect_sent = true; /* the client closes; no DISCONNECT back */
    tern_conn_close(c, TERN_RC_SUCCESS, NULL);
    return TERN_OK;
}
