/* Stored messages and retained messages.
 *
 * A message is one allocation (struct + topic + payload + properties), stored
 * once and shared by reference: queue entries, in-flight entries, the retained
 * tree and wills each hold one reference. The creator's reference is dropped at
 * the end of the command, so a message nobody kept is freed right away. */
#include <stdlib.h>
#include <string.h>

#include "fsm_internal.h"

/* Consumes one step of tern_fsm_fail_alloc_after(): true when this allocation
 * is the one to fail. */
static bool alloc_injected(struct tern_fsm *f)
{
    if (f->fail_alloc_after < 0)
        return false;
    return f->fail_alloc_after-- == 0;
}

void *fsm_malloc(struct tern_fsm *f, size_t n)
{
    void *p = alloc_injected(f) ? NULL : malloc(n);
    if (!p)
        fsm_nomem(f);
    return p;
}

void *fsm_calloc(struct tern_fsm *f, size_t n)
{
    void *p = alloc_injected(f) ? NULL : calloc(1, n);
    if (!p)
        fsm_nomem(f);
    return p;
}

void *fsm_obj_alloc(struct tern_fsm *f, size_t n)
{
    void *p = alloc_injected(f) ? NULL : tern_slab_alloc(&f->slab, n);
    if (!p)
        fsm_nomem(f);
    return p;
}

void fsm_obj_free(struct tern_fsm *f, void *p, size_t n)
{
    tern_slab_free(&f->slab, p, n);
}

int fsm_grow_in(struct tern_fsm *f, void **arr, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return TERN_OK;
    if (alloc_injected(f) || fsm_grow(arr, cap, need, elem) != TERN_OK) {
        fsm_nomem(f);
        return TERN_ENOMEM;
    }
    return TERN_OK;
}

int fsm_grow(void **arr, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return TERN_OK;
    size_t n = *cap ? *cap : 8;
    while (n < need)
        n *= 2;
    void *p = realloc(*arr, n * elem);
    if (!p)
        return TERN_ENOMEM;
    *arr = p;
    *cap = n;
    return TERN_OK;
}

uint32_t tern_msg_remaining_s(const struct tern_msg *m, uint64_t now_ms)
{
    if (m->expire_at_ms == 0)
        return m->expiry_s;
    if (now_ms >= m->expire_at_ms)
        return 0;
    /* Round up: a message that has not expired has at least 1 s left. */
    uint64_t left = (m->expire_at_ms - now_ms + 999) / 1000;
    return left > UINT32_MAX ? UINT32_MAX : (uint32_t)left;
}

bool fsm_cmd_msg_valid(const struct tern_cmd_msg *cm)
{
    return cm->qos <= 2 && cm->topic.ptr &&
           tern_topic_name_valid((const char *)cm->topic.ptr, cm->topic.len);
}

static uint8_t *msg_put(uint8_t *dst, struct tern_bytes *out, struct tern_bytes in)
{
    out->ptr = dst;
    out->len = in.len;
    if (in.len)
        memcpy(dst, in.ptr, in.len);
    return dst + in.len;
}

struct tern_msg *fsm_msg_new(struct tern_fsm *f, const struct tern_cmd_msg *cm,
                             uint64_t now_ms, uint32_t from_node)
{
    size_t extra = (size_t)cm->topic.len + 1 + cm->payload.len + cm->content_type.len +
                   cm->response_topic.len + cm->correlation_data.len + cm->user.len;
    struct tern_msg *m = fsm_malloc(f, sizeof(*m) + extra);
    if (!m)
        return NULL;
    *m = (struct tern_msg){.id = ++f->msg_counter,
                           .refcount = 1,
                           .qos = cm->qos,
                           .retain = cm->retain,
                           .flags = cm->flags,
                           .payload_format = cm->payload_format,
                           .expiry_s = cm->expiry_s,
                           .from_node = from_node};
    uint8_t *p = (uint8_t *)(m + 1);
    p = msg_put(p, &m->topic, cm->topic);
    *p++ = 0; /* topic is NUL-terminated for convenience */
    p = msg_put(p, &m->payload, cm->payload);
    p = msg_put(p, &m->content_type, cm->content_type);
    p = msg_put(p, &m->response_topic, cm->response_topic);
    p = msg_put(p, &m->correlation_data, cm->correlation_data);
    msg_put(p, &m->user, cm->user);
    fsm_msg_set_expiry(f, m, now_ms);
    f->stats.messages++;
    return m;
}

struct tern_msg *fsm_msg_clone(struct tern_fsm *f, const struct tern_msg *src)
{
    struct tern_cmd_msg cm = {.topic = src->topic,
                              .payload = src->payload,
                              .qos = src->qos,
                              .retain = src->retain,
                              .flags = src->flags,
                              .payload_format = src->payload_format,
                              .expiry_s = src->expiry_s,
                              .content_type = src->content_type,
                              .response_topic = src->response_topic,
                              .correlation_data = src->correlation_data,
                              .user = src->user};
    struct tern_msg *m = fsm_msg_new(f, &cm, src->created_ms, src->from_node);
    if (m)
        m->expire_at_ms = src->expire_at_ms; /* keep the original deadline */
    return m;
}

void fsm_msg_ref(struct tern_msg *m)
{
    m->refcount++;
}

void fsm_msg_unref(struct tern_fsm *f, struct tern_msg *m)
{
    if (!m || --m->refcount > 0)
        return;
    f->stats.messages--;
    free(m);
}

/* The expiry clock starts when the message is published (for a will: when the
 * will is published, not when the session opened). */
void fsm_msg_set_expiry(const struct tern_fsm *f, struct tern_msg *m, uint64_t now_ms)
{
    uint64_t cap = f->limits.message_expiry_max_s;
    uint64_t s = 0;
    if (m->flags & TERN_MSG_HAS_EXPIRY)
        s = (cap && m->expiry_s > cap) ? cap : m->expiry_s;
    else if (cap)
        s = cap;
    m->created_ms = now_ms;
    bool none = !(m->flags & TERN_MSG_HAS_EXPIRY) && !cap;
    m->expire_at_ms = none ? 0 : now_ms + s * 1000;
}

bool fsm_msg_expired(const struct tern_msg *m, uint64_t now_ms)
{
    return m->expire_at_ms != 0 && now_ms >= m->expire_at_ms;
}

uint64_t fsm_msg_bytes(const struct tern_msg *m)
{
    return (uint64_t)m->payload.len + m->topic.len;
}

static void retained_remove(struct tern_fsm *f, struct tern_msg *old)
{
    fsm_timer_retained_forget(f, old);
    tern_topic_tree_remove(f->retained, (const char *)old->topic.ptr, old->topic.len,
                           old);
    f->stats.retained--;
    f->stats.retained_bytes -= old->payload.len;
    fsm_msg_unref(f, old);
}

/* Stores m as the retained message of its topic (empty payload deletes). When the
 * count or byte bound would be exceeded the message is not retained, and an older
 * retained message of the topic is removed too: it has been superseded, so
 * serving it would be wrong. */
void fsm_retain(struct tern_fsm *f, struct tern_msg *m)
{
    const char *topic = (const char *)m->topic.ptr;
    struct tern_msg *old = tern_topic_tree_get(f->retained, topic, m->topic.len);
    if (m->payload.len == 0) {
        if (old)
            retained_remove(f, old);
        return;
    }
    uint64_t count = f->stats.retained + (old ? 0 : 1);
    uint64_t bytes =
        f->stats.retained_bytes - (old ? old->payload.len : 0) + m->payload.len;
    if (old)
        retained_remove(f, old);
    if (count > f->limits.retained_max || bytes > f->limits.retained_bytes_max) {
        f->stats.retained_rejected++;
        return;
    }
    if (tern_topic_tree_add(f->retained, topic, m->topic.len, m) != TERN_OK) {
        fsm_nomem(f);
        return;
    }
    fsm_msg_ref(m);
    fsm_timer_retained(f, m);
    f->stats.retained++;
    f->stats.retained_bytes += m->payload.len;
}

int fsm_retained_delete(struct tern_fsm *f, const char *topic, size_t len)
{
    struct tern_msg *old = tern_topic_tree_get(f->retained, topic, len);
    if (!old)
        return TERN_ENOTFOUND;
    retained_remove(f, old);
    return TERN_OK;
}

/* Only what is due: the retained heap gives them one by one (fsm_timer.c). */
void fsm_retained_expire(struct tern_fsm *f, uint64_t now_ms)
{
    struct tern_msg *m;
    while ((m = fsm_timer_due_retained(f, now_ms)))
        retained_remove(f, m);
}

static int unref_visit(void *ctx, const char *key, size_t len, void *value)
{
    (void)key;
    (void)len;
    fsm_msg_unref(ctx, value);
    return 0;
}

void fsm_retained_free_all(struct tern_fsm *f)
{
    if (!f->retained)
        return;
    tern_topic_tree_walk(f->retained, unref_visit, f);
    tern_topic_tree_free(f->retained);
    f->retained = NULL;
}
