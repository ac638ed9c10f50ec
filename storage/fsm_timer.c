/* Deadlines of the state machine: which sessions and retained messages a TICK
 * at now_ms has to handle, found without a pass over all of them.
 *
 * Two heaps (tern/heap.h): sessions keyed by fsm_session_deadline() (session
 * expiry or a delayed will, whichever is first) and retained messages keyed
 * by expire_at_ms. They are derived state: every replica builds the same set
 * from the same commands (and from a snapshot on restore), and the hash or
 * heap layout never decides an outcome - a TICK sorts the due sessions by
 * epoch, as the pass over the sessions table did, and removing expired
 * retained messages commutes. */
#include <stdlib.h>

#include "fsm_internal.h"

static uint32_t *session_slot(void *item)
{
    return &((struct tern_fsm_session *)item)->timer_pos;
}

static uint32_t *msg_slot(void *item)
{
    return &((struct tern_msg *)item)->timer_pos;
}

void fsm_timer_init(struct tern_fsm *f)
{
    tern_heap_init(&f->session_timers, session_slot);
    tern_heap_init(&f->retained_timers, msg_slot);
}

void fsm_timer_clear(struct tern_fsm *f)
{
    tern_heap_clear(&f->session_timers);
    tern_heap_clear(&f->retained_timers);
}

void fsm_timer_session(struct tern_fsm *f, struct tern_fsm_session *s)
{
    uint64_t d = fsm_session_deadline(s);
    if (d == UINT64_MAX) {
        tern_heap_remove(&f->session_timers, s);
        return;
    }
    if (tern_heap_set(&f->session_timers, s, d) != TERN_OK)
        fsm_nomem(f);
}

void fsm_timer_session_forget(struct tern_fsm *f, struct tern_fsm_session *s)
{
    tern_heap_remove(&f->session_timers, s);
}

void fsm_session_settle(struct tern_fsm *f, struct tern_fsm_session *s)
{
    fsm_timer_session(f, s);
    fsm_session_state_trim(s);
}

void fsm_timer_retained(struct tern_fsm *f, struct tern_msg *m)
{
    if (m->expire_at_ms && tern_heap_set(&f->retained_timers, m, m->expire_at_ms))
        fsm_nomem(f);
}

void fsm_timer_retained_forget(struct tern_fsm *f, struct tern_msg *m)
{
    tern_heap_remove(&f->retained_timers, m);
}

static int epoch_cmp(const void *a, const void *b)
{
    const struct tern_fsm_session *x = *(struct tern_fsm_session *const *)a;
    const struct tern_fsm_session *y = *(struct tern_fsm_session *const *)b;
    return (x->epoch > y->epoch) - (x->epoch < y->epoch);
}

size_t fsm_timer_due_sessions(struct tern_fsm *f, uint64_t now_ms,
                              struct tern_fsm_session ***out)
{
    struct tern_fsm_session **v = NULL;
    size_t n = 0, cap = 0;
    while (tern_heap_min_key(&f->session_timers) <= now_ms) {
        if (fsm_grow_in(f, (void **)&v, &cap, n + 1, sizeof(*v)) != TERN_OK)
            break; /* the command fails (f->nomem) */
        v[n++] = tern_heap_pop_due(&f->session_timers, now_ms);
    }
    /* Epochs are unique: the same order on every replica. */
    if (n > 1)
        qsort(v, n, sizeof(*v), epoch_cmp);
    *out = v;
    return n;
}

struct tern_msg *fsm_timer_due_retained(struct tern_fsm *f, uint64_t now_ms)
{
    return tern_heap_pop_due(&f->retained_timers, now_ms);
}

static int rebuild_session(void *ctx, struct tern_fsm_session *s)
{
    struct tern_fsm *f = ctx;
    fsm_timer_session(f, s);
    return f->nomem;
}

static int rebuild_retained(void *ctx, const char *key, size_t len, void *value)
{
    struct tern_fsm *f = ctx;
    (void)key;
    (void)len;
    fsm_timer_retained(f, value);
    return f->nomem;
}

int fsm_timer_rebuild(struct tern_fsm *f)
{
    f->nomem = false;
    fsm_stab_walk(&f->sessions, rebuild_session, f);
    if (!f->nomem)
        tern_topic_tree_walk(f->retained, rebuild_retained, f);
    return f->nomem ? TERN_ENOMEM : TERN_OK;
}

uint64_t tern_fsm_next_deadline(const struct tern_fsm *f)
{
    uint64_t s = tern_heap_min_key(&f->session_timers);
    uint64_t r = tern_heap_min_key(&f->retained_timers);
    return s < r ? s : r;
}

/* --- consistency check, for tests --- */

struct check_ctx {
    const struct tern_fsm *f;
    size_t n;
    bool ok;
};

static bool in_heap_at(const struct tern_heap *h, void *item, uint64_t key)
{
    uint32_t pos = *h->slot(item);
    return pos && pos <= h->count && h->v[pos - 1].item == item &&
           h->v[pos - 1].key == key;
}

static int check_session(void *ctx, struct tern_fsm_session *s)
{
    struct check_ctx *x = ctx;
    uint64_t d = fsm_session_deadline(s);
    if (d == UINT64_MAX)
        x->ok = x->ok && s->timer_pos == 0;
    else
        x->ok = x->ok && in_heap_at(&x->f->session_timers, s, d);
    x->n += d != UINT64_MAX;
    return 0;
}

static int check_retained(void *ctx, const char *key, size_t len, void *value)
{
    struct check_ctx *x = ctx;
    struct tern_msg *m = value;
    (void)key;
    (void)len;
    if (m->expire_at_ms == 0)
        x->ok = x->ok && m->timer_pos == 0;
    else
        x->ok = x->ok && in_heap_at(&x->f->retained_timers, m, m->expire_at_ms);
    x->n += m->expire_at_ms != 0;
    return 0;
}

bool tern_fsm_timers_valid(const struct tern_fsm *f)
{
    struct check_ctx s = {.f = f, .ok = true}, r = {.f = f, .ok = true};
    fsm_stab_walk(&f->sessions, check_session, &s);
    tern_topic_tree_walk(f->retained, check_retained, &r);
    return s.ok && r.ok && s.n == f->session_timers.count &&
           r.n == f->retained_timers.count && tern_heap_valid(&f->session_timers) &&
           tern_heap_valid(&f->retained_timers);
}
