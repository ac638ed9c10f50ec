/* Forwards that would overflow a healthy subscriber's queue wait here.
 *
 * The hold a subscriber's node asks for (flow.c) reaches the publisher's node a
 * peer-link round trip late; what that publisher (or several at once, from
 * several nodes) sent meanwhile can be more than the queue's room above its
 * high-water mark. A forward that would overflow an online, not-slow session's
 * queue (tern_flow_would_drop) is therefore parked instead of meeting the drop
 * policy: kept encoded, per sending node, and every later forward of the same
 * publisher parks behind it (its order holds, MQTT 4.6); its publisher is asked
 * to hold as well. Other publishers' forwards, and proposals on the link, do not
 * wait. The parked ones are applied in order per publisher, each loop turn, as
 * the queue makes room; a subscriber that makes none for
 * slow_subscriber_timeout_ms turns slow (flow.c), and what waits for it goes in
 * and meets the drop policy.
 *
 * Bounded: past PARK_BYTES_MAX for one node a forward is dropped and counted
 * (tern_dropped_messages_total{reason="peer_backlog_full"}).
 */
#include <stdlib.h>
#include <string.h>

#include "tern/frontend.h"

#define PARK_BYTES_MAX (16u << 20)

/* A publisher with forwards parked: its later ones park behind them. */
struct park_pub {
    struct park_pub *next;
    uint32_t count;
    bool blocked; /* in this drain pass: its first parked one still has no room */
    uint16_t id_len;
    char id[];
};

struct park_item {
    struct park_item *next;
    struct park_pub *pub;
    size_t len;
    uint8_t cmd[];
};

struct tern_flow_park {
    struct tern_flow_park *next;
    struct park_item *head, *tail;
    struct park_pub *pubs;
    uint32_t pub_count;
    uint64_t bytes;
    uint32_t from;
};

static void deliver(struct tern_node *n, uint32_t from, const struct tern_cmd *cmd)
{
    struct tern_fsm_result res;
    tern_fsm_apply(n->local, cmd, &res);
    tern_flow_hold_remote(n, from, cmd->u.publish.client_id, &res);
}

static struct tern_flow_park *park_of(struct tern_node *n, uint32_t from, bool make)
{
    for (struct tern_flow_park *p = n->flow_park; p; p = p->next)
        if (p->from == from)
            return p;
    if (!make)
        return NULL;
    struct tern_flow_park *p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    p->from = from;
    p->next = n->flow_park;
    n->flow_park = p;
    return p;
}

static struct park_pub *pub_find(struct tern_flow_park *p, struct tern_bytes id)
{
    for (struct park_pub *u = p->pubs; u; u = u->next)
        if (u->id_len == id.len && memcmp(u->id, id.ptr, id.len) == 0)
            return u;
    return NULL;
}

static struct park_pub *pub_get(struct tern_flow_park *p, struct tern_bytes id)
{
    struct park_pub *u = pub_find(p, id);
    if (u || id.len > UINT16_MAX)
        return u;
    u = malloc(sizeof(*u) + id.len);
    if (!u)
        return NULL;
    u->count = 0;
    u->blocked = false;
    u->id_len = (uint16_t)id.len;
    memcpy(u->id, id.ptr, id.len);
    u->next = p->pubs;
    p->pubs = u;
    p->pub_count++;
    return u;
}

static void pub_put(struct tern_flow_park *p, struct park_pub *u)
{
    if (--u->count > 0)
        return;
    for (struct park_pub **pp = &p->pubs; *pp; pp = &(*pp)->next)
        if (*pp == u) {
            *pp = u->next;
            break;
        }
    p->pub_count--;
    free(u);
}

static bool park(struct tern_node *n, uint32_t from, const struct tern_cmd *cmd)
{
    struct tern_flow_park *p = park_of(n, from, true);
    size_t need = tern_cmd_encode(cmd, NULL, 0);
    if (!p || !need || p->bytes + need > PARK_BYTES_MAX)
        return false;
    struct park_item *it = malloc(sizeof(*it) + need);
    struct park_pub *u = it ? pub_get(p, cmd->u.publish.client_id) : NULL;
    if (!u) {
        free(it);
        return false;
    }
    it->next = NULL;
    it->pub = u;
    u->count++;
    it->len = need;
    tern_cmd_encode(cmd, it->cmd, need);
    if (p->tail)
        p->tail->next = it;
    else
        p->head = it;
    p->tail = it;
    p->bytes += need;
    n->stats.forwards_parked++;
    return true;
}

void tern_flow_forward(struct tern_node *n, uint32_t from, const struct tern_cmd *cmd)
{
    struct tern_flow_park *p = n->flow_park ? park_of(n, from, false) : NULL;
    if ((p && pub_find(p, cmd->u.publish.client_id)) || tern_flow_would_drop(n, cmd)) {
        if (!park(n, from, cmd))
            n->stats.dropped_parked++;
        tern_flow_hold_parked(n, from, cmd); /* it would send more meanwhile */
        return;
    }
    deliver(n, from, cmd);
}

/* Applies what waits, in order per publisher, each up to its first that would
 * still overflow a queue; stops once every publisher there is blocked. */
static void drain_one(struct tern_node *n, struct tern_flow_park *p)
{
    for (struct park_pub *u = p->pubs; u; u = u->next)
        u->blocked = false;
    uint32_t blocked = 0;
    struct park_item *prev = NULL;
    for (struct park_item *it = p->head; it && blocked < p->pub_count;) {
        struct park_item *next = it->next;
        if (it->pub->blocked) {
            prev = it;
            it = next;
            continue;
        }
        struct tern_cmd cmd;
        size_t used;
        bool ok = tern_cmd_decode(it->cmd, it->len, &cmd, &used, NULL) == TERN_OK;
        if (ok && tern_flow_would_drop(n, &cmd)) {
            it->pub->blocked = true;
            blocked++;
            prev = it;
            it = next;
            continue;
        }
        if (ok)
            deliver(n, p->from, &cmd);
        if (prev)
            prev->next = next;
        else
            p->head = next;
        if (p->tail == it)
            p->tail = prev;
        p->bytes -= it->len;
        pub_put(p, it->pub);
        free(it);
        it = next;
    }
}

void tern_flow_park_drain(struct tern_node *n)
{
    for (struct tern_flow_park **pp = &n->flow_park; *pp;) {
        struct tern_flow_park *p = *pp;
        drain_one(n, p);
        if (!p->head) {
            *pp = p->next;
            free(p);
        } else {
            pp = &p->next;
        }
    }
}

void tern_flow_park_free(struct tern_node *n)
{
    while (n->flow_park) {
        struct tern_flow_park *p = n->flow_park;
        n->flow_park = p->next;
        while (p->head) {
            struct park_item *it = p->head;
            p->head = it->next;
            free(it);
        }
        while (p->pubs) {
            struct park_pub *u = p->pubs;
            p->pubs = u->next;
            free(u);
        }
        free(p);
    }
}
