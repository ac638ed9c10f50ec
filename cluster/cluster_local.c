/* Single-replica log: the seam the Raft-backed log will fill.
 *
 * Proposals made during one loop iteration are encoded into one batch (the same
 * group commit the Raft log does with one entry per batch) and applied on the
 * next iteration, so callers see the same asynchronous contract: effects and
 * callbacks never run inside tern_cluster_propose(). Nothing is durable here.
 */
#include <stdlib.h>
#include <string.h>

#include "tern/cluster.h"
#include "tern/error.h"

#define PENDING_MIN 64

struct pending {
    tern_propose_cb cb;
    void *ctx;
};

struct batch {
    uint8_t *buf;
    size_t len, cap;
    struct pending *pend;
    size_t count, pend_cap;
};

struct tern_cluster {
    uv_loop_t *loop;
    uv_idle_t idle;
    struct tern_fsm *fsm;
    uint32_t node_id;
    uint64_t seq;
    struct batch cur, spare;
    int closing;
    void (*close_cb)(void *ctx);
    void *close_ctx;
};

static int batch_reserve(struct batch *b, size_t need)
{
    if (b->len + need <= b->cap)
        return TERN_OK;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + need)
        cap *= 2;
    uint8_t *p = realloc(b->buf, cap);
    if (!p)
        return TERN_ENOMEM;
    b->buf = p;
    b->cap = cap;
    return TERN_OK;
}

static int batch_add_pending(struct batch *b, tern_propose_cb cb, void *ctx)
{
    if (b->count == b->pend_cap) {
        size_t cap = b->pend_cap ? b->pend_cap * 2 : PENDING_MIN;
        struct pending *p = realloc(b->pend, cap * sizeof(*p));
        if (!p)
            return TERN_ENOMEM;
        b->pend = p;
        b->pend_cap = cap;
    }
    b->pend[b->count++] = (struct pending){cb, ctx};
    return TERN_OK;
}

static void batch_free(struct batch *b)
{
    free(b->buf);
    free(b->pend);
    memset(b, 0, sizeof(*b));
}

static void apply_batch(struct tern_cluster *c, struct batch *b)
{
    size_t off = 0;
    char errmsg[TERN_ERRMSG_SIZE];
    for (size_t i = 0; i < b->count; i++) {
        struct tern_cmd cmd;
        size_t used = 0;
        int rv = tern_cmd_decode(b->buf + off, b->len - off, &cmd, &used, errmsg);
        struct pending *p = &b->pend[i];
        if (rv != TERN_OK) {
            /* We encoded it ourselves: a failure here is a bug, not input. */
            abort();
        }
        off += used;
        struct tern_fsm_result res;
        tern_fsm_apply(c->fsm, &cmd, &res);
        if (p->cb)
            p->cb(p->ctx, TERN_OK, &res);
    }
    b->len = 0;
    b->count = 0;
}

static void on_idle(uv_idle_t *h)
{
    struct tern_cluster *c = h->data;
    /* Swap so that proposals made by callbacks land in the next batch. */
    struct batch b = c->cur;
    c->cur = c->spare;
    c->spare = b;
    apply_batch(c, &c->spare);
    if (c->cur.count == 0)
        uv_idle_stop(&c->idle);
}

int tern_cluster_new(struct tern_cluster **out, uv_loop_t *loop,
                     const struct tern_cluster_config *cfg,
                     const struct tern_fsm_observer *obs, char *errmsg)
{
    struct tern_cluster *c = calloc(1, sizeof(*c));
    if (!c)
        return TERN_ENOMEM;
    c->loop = loop;
    c->node_id = cfg->node_id;
    c->fsm = tern_fsm_new(cfg->node_id, &cfg->limits, obs);
    if (!c->fsm) {
        free(c);
        if (errmsg)
            strcpy(errmsg, "cannot allocate the state machine");
        return TERN_ENOMEM;
    }
    uv_idle_init(loop, &c->idle);
    c->idle.data = c;
    *out = c;
    return TERN_OK;
}

int tern_cluster_propose(struct tern_cluster *c, const struct tern_cmd *cmd,
                         tern_propose_cb cb, void *ctx)
{
    if (c->closing)
        return TERN_ESHUTDOWN;
    struct tern_cmd stamped = *cmd;
    if (stamped.proposal_id == 0)
        stamped.proposal_id = tern_cluster_next_proposal_id(c);
    size_t need = tern_cmd_encode(&stamped, NULL, 0);
    if (need == 0)
        return TERN_ETOOBIG;
    struct batch *b = &c->cur;
    if (batch_reserve(b, need) != TERN_OK)
        return TERN_ENOMEM;
    if (batch_add_pending(b, cb, ctx) != TERN_OK)
        return TERN_ENOMEM;
    tern_cmd_encode(&stamped, b->buf + b->len, need);
    b->len += need;
    if (!uv_is_active((uv_handle_t *)&c->idle))
        uv_idle_start(&c->idle, on_idle);
    return TERN_OK;
}

struct tern_fsm *tern_cluster_fsm(struct tern_cluster *c)
{
    return c->fsm;
}

int tern_cluster_ready(const struct tern_cluster *c)
{
    return !c->closing;
}

uint64_t tern_cluster_next_proposal_id(struct tern_cluster *c)
{
    return ((uint64_t)c->node_id << 40) | (++c->seq & ((UINT64_C(1) << 40) - 1));
}

static void fail_pending(struct batch *b)
{
    for (size_t i = 0; i < b->count; i++)
        if (b->pend[i].cb)
            b->pend[i].cb(b->pend[i].ctx, TERN_ESHUTDOWN, NULL);
    b->count = 0;
    b->len = 0;
}

static void on_closed(uv_handle_t *h)
{
    struct tern_cluster *c = h->data;
    void (*cb)(void *) = c->close_cb;
    void *ctx = c->close_ctx;
    batch_free(&c->cur);
    batch_free(&c->spare);
    tern_fsm_free(c->fsm);
    free(c);
    if (cb)
        cb(ctx);
}

void tern_cluster_close(struct tern_cluster *c, void (*cb)(void *ctx), void *ctx)
{
    c->closing = 1;
    c->close_cb = cb;
    c->close_ctx = ctx;
    fail_pending(&c->cur);
    uv_close((uv_handle_t *)&c->idle, on_closed);
}
