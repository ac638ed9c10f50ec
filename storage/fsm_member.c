/* Cluster members with their addresses (MEMBER_SET / MEMBER_DEL): a small
 * array kept in id order, so walks and snapshots are the same on every
 * replica. And the cluster's id (CLUSTER_ID), set once: what decides whether a
 * second id applies is the replicated state alone, so every replica keeps the
 * first and refuses the others alike. */
#include <string.h>

#include "fsm_internal.h"

static size_t member_pos(const struct tern_fsm *f, uint32_t id)
{
    size_t i = 0;
    while (i < f->member_count && f->members[i].id < id)
        i++;
    return i;
}

int fsm_member_put(struct tern_fsm *f, const struct tern_fsm_member *m)
{
    size_t i = member_pos(f, m->id);
    if (i < f->member_count && f->members[i].id == m->id) {
        f->members[i] = *m;
        return TERN_OK;
    }
    if (f->member_count >= TERN_FSM_MEMBERS_MAX)
        return TERN_ELIMIT;
    memmove(&f->members[i + 1], &f->members[i],
            (f->member_count - i) * sizeof(f->members[0]));
    f->members[i] = *m;
    f->member_count++;
    return TERN_OK;
}

/* Copies an address; false when it does not fit or holds a NUL byte. */
static bool addr_copy(char *dst, struct tern_bytes b)
{
    if (b.len > TERN_MEMBER_ADDR_MAX || (b.len && memchr(b.ptr, 0, b.len)))
        return false;
    if (b.len)
        memcpy(dst, b.ptr, b.len);
    dst[b.len] = '\0';
    return true;
}

void fsm_member_set_cmd(struct tern_fsm *f, const struct tern_cmd *c,
                        struct tern_fsm_result *r)
{
    struct tern_fsm_member m = {.id = c->u.member.id};
    if (m.id == 0 || !addr_copy(m.raft, c->u.member.raft) ||
        !addr_copy(m.peer, c->u.member.peer) || !addr_copy(m.mqtt, c->u.member.mqtt)) {
        r->status = TERN_EINVAL;
        return;
    }
    r->status = fsm_member_put(f, &m);
}

void fsm_member_del_cmd(struct tern_fsm *f, const struct tern_cmd *c,
                        struct tern_fsm_result *r)
{
    size_t i = member_pos(f, c->u.member.id);
    r->status = TERN_OK;
    if (i == f->member_count || f->members[i].id != c->u.member.id)
        return; /* idempotent */
    memmove(&f->members[i], &f->members[i + 1],
            (f->member_count - i - 1) * sizeof(f->members[0]));
    f->member_count--;
}

int tern_fsm_members_walk(const struct tern_fsm *f,
                          int (*fn)(void *ctx, const struct tern_fsm_member *m),
                          void *ctx)
{
    for (uint32_t i = 0; i < f->member_count; i++) {
        int rc = fn(ctx, &f->members[i]);
        if (rc)
            return rc;
    }
    return 0;
}

const struct tern_fsm_member *tern_fsm_member_get(const struct tern_fsm *f, uint32_t id)
{
    size_t i = member_pos(f, id);
    return i < f->member_count && f->members[i].id == id ? &f->members[i] : NULL;
}

void fsm_cluster_id_cmd(struct tern_fsm *f, const struct tern_cmd *c,
                        struct tern_fsm_result *r)
{
    uint64_t id = c->u.cluster_id.id;
    if (id == 0) {
        r->status = TERN_EINVAL;
        return;
    }
    if (f->cluster_id == 0)
        f->cluster_id = id;
    if (f->cluster_id == id)
        return; /* set, or set already: idempotent */
    f->cluster_id_refused = id;
    r->status = TERN_EPROTO; /* another cluster's id: this one keeps its own */
}

uint64_t tern_fsm_cluster_id(const struct tern_fsm *f, uint64_t *refused)
{
    if (refused)
        *refused = f->cluster_id_refused;
    return f->cluster_id;
}
