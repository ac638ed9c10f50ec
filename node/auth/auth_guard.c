/* Failed CONNECT attempts per source address (tern/auth.h), and SipHash.
 *
 * The table is fixed in size so an attacker with many addresses cannot grow
 * it: a new address takes a free slot of its probe run, else the one whose last
 * failure is oldest. Slots are keyed by a seeded hash so chosen addresses cannot
 * crowd one run. */
#include <string.h>

#include "tern/auth.h"
#include "tern/siphash.h"

void tern_guard_init(struct tern_guard *g, uint64_t seed0, uint64_t seed1)
{
    memset(g, 0, sizeof *g);
    g->seed[0] = seed0;
    g->seed[1] = seed1;
}

static size_t home(const struct tern_guard *g, const uint8_t addr[16])
{
    return (size_t)(tern_siphash(g->seed, addr, 16) % TERN_GUARD_SLOTS);
}

static const struct tern_guard_slot *lookup(const struct tern_guard *g,
                                            const uint8_t addr[16])
{
    size_t h = home(g, addr);
    for (size_t i = 0; i < TERN_GUARD_PROBE; i++) {
        const struct tern_guard_slot *s = &g->slots[(h + i) % TERN_GUARD_SLOTS];
        if (s->used && memcmp(s->addr, addr, 16) == 0)
            return s;
    }
    return NULL;
}

static uint64_t wait_ms(uint32_t fails)
{
    if (fails == 0)
        return 0;
    uint32_t shift = fails - 1 > 16 ? 16 : fails - 1;
    uint64_t w = (uint64_t)TERN_GUARD_BASE_MS << shift;
    return w > TERN_GUARD_MAX_MS ? TERN_GUARD_MAX_MS : w;
}

bool tern_guard_allow(const struct tern_guard *g, const uint8_t addr[16], uint64_t now_ms)
{
    const struct tern_guard_slot *s = lookup(g, addr);
    return !s || now_ms >= s->last_fail_ms + wait_ms(s->fails);
}

void tern_guard_fail(struct tern_guard *g, const uint8_t addr[16], uint64_t now_ms)
{
    struct tern_guard_slot *s = (struct tern_guard_slot *)lookup(g, addr);
    if (!s) {
        size_t h = home(g, addr);
        for (size_t i = 0; i < TERN_GUARD_PROBE; i++) {
            struct tern_guard_slot *c = &g->slots[(h + i) % TERN_GUARD_SLOTS];
            if (!c->used) {
                s = c;
                break;
            }
            if (!s || c->last_fail_ms < s->last_fail_ms)
                s = c;
        }
        memset(s, 0, sizeof *s);
        memcpy(s->addr, addr, 16);
        s->used = true;
    }
    if (s->fails < UINT32_MAX)
        s->fails++;
    s->last_fail_ms = now_ms;
}

void tern_guard_ok(struct tern_guard *g, const uint8_t addr[16])
{
    struct tern_guard_slot *s = (struct tern_guard_slot *)lookup(g, addr);
    if (s)
        memset(s, 0, sizeof *s);
}

void tern_rate_init(struct tern_rate *r, uint64_t seed0, uint64_t seed1)
{
    memset(r, 0, sizeof *r);
    r->seed[0] = seed0;
    r->seed[1] = seed1;
}

bool tern_rate_take(struct tern_rate *r, const uint8_t addr[16], uint64_t now_ms,
                    uint32_t per_s)
{
    size_t h = (size_t)(tern_siphash(r->seed, addr, 16) % TERN_GUARD_SLOTS);
    struct tern_rate_slot *s = NULL, *victim = NULL;
    for (size_t i = 0; i < TERN_GUARD_PROBE && !s; i++) {
        struct tern_rate_slot *c = &r->slots[(h + i) % TERN_GUARD_SLOTS];
        if (c->used && memcmp(c->addr, addr, 16) == 0)
            s = c;
        else if (!victim || !c->used ||
                 (victim->used && c->window_ms < victim->window_ms))
            victim = victim && !victim->used ? victim : c;
    }
    if (!s) {
        s = victim;
        memset(s, 0, sizeof *s);
        memcpy(s->addr, addr, 16);
        s->used = true;
        s->window_ms = now_ms;
    }
    if (now_ms >= s->window_ms + 1000) {
        s->window_ms = now_ms;
        s->count = 0;
    }
    if (s->count >= per_s)
        return false;
    s->count++;
    return true;
}
