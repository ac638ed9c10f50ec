/* Per-client publish limits: publish_rate_max (a token bucket, MQTT 5 reason
 * 0x96 Message rate too high) and publish_quota_max per publish_quota_period_s
 * (a fixed window, 0x97 Quota exceeded), both per client id on this node.
 *
 * The state lives in one fixed table, allocated at the first PUBLISH once a limit
 * is configured: a power of two at least max_connections (at most 2^20) slots of
 * 32 bytes, open addressing over a seeded SipHash of the client id (the 64-bit
 * hash is the key: ids themselves are not stored), TERN_PUBLIM_PROBE slots per
 * probe run, the one used longest ago reused when all are taken. So a client
 * that reconnects keeps its bucket and its window (a reconnect does not refill
 * them), and the table never grows; more publishing client ids than slots evict
 * the stalest ones (counted), which then start afresh. */
#include <stdlib.h>
#include <string.h>

#include "access_int.h"
#include "tern/frontend.h"
#include "tern/siphash.h"

#define TERN_PUBLIM_PROBE 8u
#define TERN_PUBLIM_SLOTS_MAX (1u << 20)
#define MILLI 1000u /* tokens are kept in thousandths of a message */

struct publim_slot {
    uint64_t key;       /* SipHash of the client id; 0 = free */
    uint64_t last_ms;   /* last PUBLISH (monotonic): refill and staleness */
    uint64_t window_ms; /* start of the quota window */
    uint32_t tokens;    /* thousandths of a message */
    uint32_t count;     /* PUBLISHes in the window */
};

struct tern_publim {
    struct publim_slot *slots;
    size_t mask;
    uint64_t seed[2];
};

void tern_access_publish_free(struct tern_access *a)
{
    if (a->publim)
        free(a->publim->slots);
    free(a->publim);
    a->publim = NULL;
}

static struct tern_publim *table(struct tern_node *n)
{
    struct tern_access *a = n->access;
    if (a->publim)
        return a->publim;
    size_t want = n->cfg.max_connections < TERN_PUBLIM_SLOTS_MAX ? n->cfg.max_connections
                                                                 : TERN_PUBLIM_SLOTS_MAX;
    size_t size = 1024;
    while (size < want)
        size *= 2;
    struct tern_publim *t = calloc(1, sizeof *t);
    if (t)
        t->slots = calloc(size, sizeof t->slots[0]);
    if (!t || !t->slots) {
        free(t);
        return NULL;
    }
    t->mask = size - 1;
    tern_siphash_seed(t->seed);
    a->publim = t;
    return t;
}

/* The slot of key, or a fresh one (a free slot of the run or its stalest). */
static struct publim_slot *slot_for(struct tern_access *a, struct tern_publim *t,
                                    uint64_t key, uint64_t now, uint32_t burst)
{
    struct publim_slot *pick = NULL;
    for (size_t i = 0; i < TERN_PUBLIM_PROBE; i++) {
        struct publim_slot *s = &t->slots[(key + i) & t->mask];
        if (s->key == key)
            return s;
        if (!pick || (pick->key && (!s->key || s->last_ms < pick->last_ms)))
            pick = s;
    }
    if (pick->key)
        a->stats.publish_limits_evicted++;
    *pick = (struct publim_slot){
        .key = key, .last_ms = now, .window_ms = now, .tokens = burst * MILLI};
    return pick;
}

uint8_t tern_access_publish_take(struct tern_conn *c)
{
    struct tern_node *n = c->node;
    const struct tern_config *cfg = &n->cfg;
    if (!cfg->publish_rate_max && !cfg->publish_quota_max)
        return 0;
    struct tern_access *a = n->access;
    struct tern_publim *t = table(n);
    if (!t)
        return 0; /* out of memory: not limiting beats refusing everyone */
    uint64_t key = tern_siphash(t->seed, c->client_id, c->client_id_len) | 1;
    uint64_t now = tern_mono_ms();
    uint32_t burst =
        cfg->publish_rate_burst ? cfg->publish_rate_burst : cfg->publish_rate_max;
    struct publim_slot *s = slot_for(a, t, key, now, burst);
    if (cfg->publish_rate_max) {
        /* rate per second = rate thousandths per ms */
        uint64_t cap = (uint64_t)burst * MILLI;
        uint64_t add = (now - s->last_ms) * (uint64_t)cfg->publish_rate_max;
        uint64_t tokens = s->tokens + (add < cap ? add : cap);
        s->tokens = (uint32_t)(tokens < cap ? tokens : cap);
    }
    s->last_ms = now;
    if (cfg->publish_rate_max && s->tokens < MILLI) {
        a->stats.publish_rate_refused++;
        return TERN_RC_MESSAGE_RATE_TOO_HIGH;
    }
    if (cfg->publish_quota_max) {
        if (now - s->window_ms >= (uint64_t)cfg->publish_quota_period_s * 1000) {
            s->window_ms = now;
            s->count = 0;
        }
        if (s->count >= cfg->publish_quota_max) {
            a->stats.publish_quota_refused++;
            return TERN_RC_QUOTA_EXCEEDED;
        }
        s->count++;
    }
    if (cfg->publish_rate_max)
        s->tokens -= MILLI;
    return 0;
}
