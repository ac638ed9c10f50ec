/* Bounds of the session state machine: the defaults (documented in tern/fsm.h
 * and docs/configuration.md), comparing them, and the LIMITS command that
 * replicates them, and its apply. The limits decide state (what a full queue
 * drops, how many messages are in flight...), so in the replicated FSM they
 * are replicated state: set only by LIMITS commands and snapshots. */
#include <stdio.h>
#include <string.h>

#include "fsm_internal.h"

void tern_fsm_limits_default(struct tern_fsm_limits *l)
{
    *l = (struct tern_fsm_limits){
        .inflight_max = 32,
        .queue_max = 1000,
        .queue_bytes_max = 16u * 1024 * 1024,
        .queue_qos0 = false,
        .drop_policy = TERN_DROP_OLDEST,
        .retained_max = 100000,
        .retained_bytes_max = 256u * 1024 * 1024,
        .session_expiry_max_s = 0, /* no cap */
        .message_expiry_max_s = 0, /* no cap */
        .sessions_max = 1000000,
    };
}

bool tern_fsm_limits_equal(const struct tern_fsm_limits *a,
                           const struct tern_fsm_limits *b)
{
    return a->inflight_max == b->inflight_max && a->queue_max == b->queue_max &&
           a->queue_bytes_max == b->queue_bytes_max && a->queue_qos0 == b->queue_qos0 &&
           a->drop_policy == b->drop_policy && a->retained_max == b->retained_max &&
           a->retained_bytes_max == b->retained_bytes_max &&
           a->session_expiry_max_s == b->session_expiry_max_s &&
           a->message_expiry_max_s == b->message_expiry_max_s &&
           a->sessions_max == b->sessions_max;
}

struct diff {
    char *out;
    size_t cap, len;
    unsigned n;
};

static void diff_one(struct diff *d, const char *key, unsigned long long ours,
                     unsigned long long theirs)
{
    if (ours == theirs)
        return;
    d->n++;
    if (d->len + 1 >= d->cap)
        return;
    int w = snprintf(d->out + d->len, d->cap - d->len, "%s%s=%llu (cluster %llu)",
                     d->len ? ", " : "", key, ours, theirs);
    if (w > 0)
        d->len = d->len + (size_t)w < d->cap ? d->len + (size_t)w : d->cap - 1;
}

unsigned tern_fsm_limits_diff(const struct tern_fsm_limits *a,
                              const struct tern_fsm_limits *b, char *out, size_t cap)
{
    struct diff d = {out, cap, 0, 0};
    if (cap)
        out[0] = 0;
    diff_one(&d, "inflight_max", a->inflight_max, b->inflight_max);
    diff_one(&d, "queue_max", a->queue_max, b->queue_max);
    diff_one(&d, "queue_bytes_max", a->queue_bytes_max, b->queue_bytes_max);
    diff_one(&d, "queue_qos0", a->queue_qos0, b->queue_qos0);
    diff_one(&d, "drop_policy", a->drop_policy, b->drop_policy);
    diff_one(&d, "retained_max", a->retained_max, b->retained_max);
    diff_one(&d, "retained_bytes_max", a->retained_bytes_max, b->retained_bytes_max);
    diff_one(&d, "session_expiry_max_s", a->session_expiry_max_s,
             b->session_expiry_max_s);
    diff_one(&d, "message_expiry_max_s", a->message_expiry_max_s,
             b->message_expiry_max_s);
    diff_one(&d, "sessions_max", a->sessions_max, b->sessions_max);
    return d.n;
}

void tern_fsm_limits_cmd(struct tern_cmd *cmd, const struct tern_fsm_limits *l)
{
    memset(cmd, 0, sizeof(*cmd));
    cmd->type = TERN_CMD_LIMITS;
    cmd->u.limits.inflight_max = l->inflight_max;
    cmd->u.limits.queue_max = l->queue_max;
    cmd->u.limits.queue_bytes_max = l->queue_bytes_max;
    cmd->u.limits.queue_qos0 = l->queue_qos0;
    cmd->u.limits.drop_policy = l->drop_policy;
    cmd->u.limits.retained_max = l->retained_max;
    cmd->u.limits.retained_bytes_max = l->retained_bytes_max;
    cmd->u.limits.session_expiry_max_s = l->session_expiry_max_s;
    cmd->u.limits.message_expiry_max_s = l->message_expiry_max_s;
    cmd->u.limits.sessions_max = l->sessions_max;
}

/* The bounds a LIMITS command may set: those of the configuration keys. */
static bool limits_valid(const struct tern_cmd *c)
{
    return c->u.limits.inflight_max >= 1 && c->u.limits.queue_max >= 1 &&
           c->u.limits.queue_bytes_max >= 1 && c->u.limits.drop_policy <= TERN_DROP_NEW &&
           c->u.limits.sessions_max >= 1;
}

void fsm_limits_set_cmd(struct tern_fsm *f, const struct tern_cmd *c,
                        struct tern_fsm_result *r)
{
    if (!limits_valid(c)) {
        r->status = TERN_EINVAL;
        return;
    }
    f->limits = (struct tern_fsm_limits){
        .inflight_max = c->u.limits.inflight_max,
        .queue_max = c->u.limits.queue_max,
        .queue_bytes_max = c->u.limits.queue_bytes_max,
        .queue_qos0 = c->u.limits.queue_qos0,
        .drop_policy = c->u.limits.drop_policy,
        .retained_max = c->u.limits.retained_max,
        .retained_bytes_max = c->u.limits.retained_bytes_max,
        .session_expiry_max_s = c->u.limits.session_expiry_max_s,
        .message_expiry_max_s = c->u.limits.message_expiry_max_s,
        .sessions_max = c->u.limits.sessions_max,
    };
}

const struct tern_fsm_limits *tern_fsm_limits(const struct tern_fsm *f)
{
    return &f->limits;
}
