/* The admin API's listings: clients, sessions, subscriptions and retained
 * messages, in pages of bounded size with a cursor, and the deletes (kick, retained)
 * answered once applied. */
#include "admin_internal.h"

/* --- clients ----------------------------------------------------------------- */

static const char *conn_state_name(enum tern_conn_state s)
{
    switch (s) {
    case TERN_CONN_NEW:
        return "new";
    case TERN_CONN_WAITING:
        return "waiting";
    case TERN_CONN_CONNECTING:
        return "connecting";
    case TERN_CONN_ACTIVE:
        return "active";
    case TERN_CONN_CLOSING:
        return "closing";
    }
    return "unknown";
}

static cJSON *client_json(struct tern_conn *c)
{
    cJSON *o = cJSON_CreateObject();
    struct tern_bytes id = {(const uint8_t *)(c->client_id ? c->client_id : ""),
                            c->client_id ? c->client_id_len : 0};
    admin_add_bytes(o, "client_id", id);
    char pb[TERN_PEER_STRLEN];
    cJSON_AddStringToObject(o, "peer", tern_conn_peer(c, pb));
    cJSON_AddStringToObject(o, "state", conn_state_name(c->state));
    cJSON_AddBoolToObject(o, "tls", c->opt && c->opt->tls);
    cJSON_AddBoolToObject(o, "websocket", c->opt && c->opt->ws);
    const char *user = tern_conn_tls_username(c);
    if (user)
        cJSON_AddStringToObject(o, "username", user);
    cJSON_AddNumberToObject(o, "protocol", c->version);
    cJSON_AddBoolToObject(o, "persistent", c->persistent);
    cJSON_AddNumberToObject(o, "keepalive_s", c->keepalive_s);
    cJSON_AddNumberToObject(o, "session_expiry_s", c->session_expiry_s);
    struct tern_fsm_session *s =
        c->state == TERN_CONN_ACTIVE && c->client_id ? tern_session_get(c) : NULL;
    cJSON_AddNumberToObject(o, "inflight", s ? tern_fsm_session_inflight(s) : 0);
    cJSON_AddNumberToObject(o, "queued", s ? tern_fsm_session_queued(s) : 0);
    cJSON_AddNumberToObject(o, "inbound_unacked", c->inbound_unacked);
    cJSON_AddNumberToObject(
        o, "write_queued_bytes",
        (double)uv_stream_get_write_queue_size((const uv_stream_t *)&c->tcp));
    return o;
}

/* --- sessions and subscriptions ------------------------------------------------------
 */

static cJSON *session_json(const struct tern_fsm_session *s)
{
    cJSON *o = cJSON_CreateObject();
    admin_add_bytes(o, "client_id", tern_fsm_session_client_id(s));
    cJSON_AddNumberToObject(o, "owner", tern_fsm_session_owner(s));
    cJSON_AddBoolToObject(o, "online", tern_fsm_session_online(s));
    cJSON_AddNumberToObject(o, "protocol", tern_fsm_session_proto(s));
    cJSON_AddNumberToObject(o, "expiry_s", tern_fsm_session_expiry(s));
    cJSON_AddNumberToObject(o, "epoch", (double)tern_fsm_session_epoch(s));
    cJSON_AddNumberToObject(o, "queued", tern_fsm_session_queued(s));
    cJSON_AddNumberToObject(o, "queued_bytes", (double)tern_fsm_session_queued_bytes(s));
    cJSON_AddNumberToObject(o, "inflight", tern_fsm_session_inflight(s));
    cJSON_AddNumberToObject(o, "subscriptions", tern_fsm_session_sub_count(s));
    return o;
}

struct list_walk {
    cJSON *arr;
    size_t count, limit;
    const struct tern_fsm_session *session; /* subscriptions: whose */
};

/* --- pages: the `limit` smallest keys after the cursor, with the prefix ---------
 * A bounded max-heap over one walk: O(n log limit) time, `limit` entries of
 * memory, whatever the size of the state; the walk order does not matter. */

/* Entries are ordered by (key, key2): key2 tells apart entries whose key is the
 * same (a session's subscriptions: client id, filter; connections: client id,
 * peer address), so a cursor never skips one at a page boundary. key2 is empty
 * for lists whose keys are unique. A key2 that is not stored anywhere (the
 * peer address) is kept inline, in k2. */
struct page_entry {
    struct tern_bytes key, key2;
    const void *item;
    uint32_t sub_id; /* subscriptions: the rest of the entry */
    uint8_t options;
    uint8_t k2_len; /* key2 inline in k2 when key2.ptr is NULL */
    char k2[TERN_PEER_STRLEN];
};

struct page {
    struct page_entry *heap;
    size_t n, cap;
    char after[PATH_MAX_BYTES], after2[PATH_MAX_BYTES], prefix[PATH_MAX_BYTES];
    size_t after_len, after2_len, prefix_len;
    bool has_after;
    uint64_t matched; /* entries after the cursor with the prefix */
};

static int key_cmp(struct tern_bytes a, struct tern_bytes b)
{
    int c = a.len && b.len ? memcmp(a.ptr, b.ptr, a.len < b.len ? a.len : b.len) : 0;
    return c ? c : (a.len > b.len) - (a.len < b.len);
}

static struct tern_bytes entry_key2(const struct page_entry *e)
{
    if (e->key2.ptr || !e->k2_len)
        return e->key2;
    return (struct tern_bytes){(const uint8_t *)e->k2, e->k2_len};
}

static int pair_cmp(const struct page_entry *x, const struct page_entry *y)
{
    int c = key_cmp(x->key, y->key);
    return c ? c : key_cmp(entry_key2(x), entry_key2(y));
}

static int entry_cmp(const void *x, const void *y)
{
    return pair_cmp(x, y);
}

static void heap_swap(struct page *p, size_t i, size_t j)
{
    struct page_entry t = p->heap[i];
    p->heap[i] = p->heap[j];
    p->heap[j] = t;
}

/* Offers one entry (its key, key2 and item set; key2 maybe inline). */
static void page_offer_entry(struct page *p, const struct page_entry *e)
{
    struct page_entry after = {
        .key = {(const uint8_t *)p->after, (uint32_t)p->after_len},
        .key2 = {(const uint8_t *)p->after2, (uint32_t)p->after2_len}};
    if (e->key.len < p->prefix_len ||
        (p->prefix_len && memcmp(e->key.ptr, p->prefix, p->prefix_len) != 0) ||
        (p->has_after && pair_cmp(e, &after) <= 0))
        return;
    p->matched++;
    size_t i;
    if (p->n < p->cap) {
        i = p->n++;
        p->heap[i] = *e;
        for (; i > 0 && pair_cmp(&p->heap[(i - 1) / 2], &p->heap[i]) < 0; i = (i - 1) / 2)
            heap_swap(p, i, (i - 1) / 2);
        return;
    }
    if (pair_cmp(e, &p->heap[0]) >= 0)
        return;
    p->heap[0] = *e;
    for (i = 0;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < p->n && pair_cmp(&p->heap[l], &p->heap[m]) > 0)
            m = l;
        if (r < p->n && pair_cmp(&p->heap[r], &p->heap[m]) > 0)
            m = r;
        if (m == i)
            break;
        heap_swap(p, i, m);
        i = m;
    }
}

static void page_offer(struct page *p, struct tern_bytes key, const void *item)
{
    struct page_entry e = {.key = key, .item = item};
    page_offer_entry(p, &e);
}

/* Reads ?limit= ?after= ?prefix= (and ?AFTER2=, the cursor's second half, when
 * the list has one); NULL (answered 400 or 500) if bad. */
static struct page *page_begin2(struct tern_http_conn *hc, const char *query,
                                const char *after2)
{
    size_t limit;
    if (!admin_list_limit(hc, query, &limit))
        return NULL;
    struct page *p = calloc(1, sizeof(*p));
    if (p)
        p->heap = malloc(limit * sizeof(*p->heap));
    if (!p || !p->heap) {
        free(p);
        admin_reply_error(hc, 500, NULL, 0, "out of memory");
        return NULL;
    }
    p->cap = limit;
    const char *names[] = {"after", "prefix", after2};
    char *bufs[] = {p->after, p->prefix, p->after2};
    size_t *lens[] = {&p->after_len, &p->prefix_len, &p->after2_len};
    for (int i = 0; i < (after2 ? 3 : 2); i++) {
        const char *v = NULL;
        size_t nlen = strlen(names[i]);
        for (const char *q = query; q && *q; q = strchr(q, '&'), q = q ? q + 1 : q)
            if (strncmp(q, names[i], nlen) == 0 && q[nlen] == '=')
                v = q + nlen + 1;
        if (!v)
            continue;
        int n = tern_http_unescape(v, strcspn(v, "&"), bufs[i], PATH_MAX_BYTES);
        if (n < 0) {
            admin_reply_error(hc, 400, NULL, 0, "%s: bad percent-encoding, or too long",
                              names[i]);
            free(p->heap);
            free(p);
            return NULL;
        }
        *lens[i] = (size_t)n;
        p->has_after = p->has_after || i == 0;
    }
    return p;
}

static struct page *page_begin(struct tern_http_conn *hc, const char *query)
{
    return page_begin2(hc, query, NULL);
}

/* Adds the page to o as NAME (each entry through to_json), with total, truncated
 * and next (the cursor of the following page, when there is one; with next2 its
 * second half, e.g. "next_filter"); answers. */
static void page_end2(struct tern_http_conn *hc, struct page *p, cJSON *o,
                      const char *name, cJSON *(*to_json)(const struct page_entry *e),
                      uint64_t total, const char *next2)
{
    qsort(p->heap, p->n, sizeof(*p->heap), entry_cmp);
    cJSON *arr = cJSON_AddArrayToObject(o, name);
    for (size_t i = 0; i < p->n; i++)
        cJSON_AddItemToArray(arr, to_json(&p->heap[i]));
    cJSON_AddNumberToObject(o, "total", (double)total);
    bool more = p->matched > p->n;
    cJSON_AddBoolToObject(o, "truncated", more);
    if (more) {
        admin_add_bytes(o, "next", p->heap[p->n - 1].key);
        if (next2)
            admin_add_bytes(o, next2, entry_key2(&p->heap[p->n - 1]));
    }
    admin_reply_json(hc, 200, o);
    free(p->heap);
    free(p);
}

static void page_end(struct tern_http_conn *hc, struct page *p, cJSON *o,
                     const char *name, cJSON *(*to_json)(const struct page_entry *e),
                     uint64_t total)
{
    page_end2(hc, p, o, name, to_json, total, NULL);
}

static cJSON *client_item(const struct page_entry *e)
{
    return client_json((struct tern_conn *)e->item);
}

/* Pages by (client id, peer address): a connection that has not sent CONNECT
 * has the empty id, and two connections can share an id for the moment of a
 * takeover. Cursor: ?after=ID&after_peer=PEER (next, next_peer). */
void admin_get_clients(struct tern_admin *a, struct tern_http_conn *hc, const char *tail,
                       const char *query)
{
    struct page *p = page_begin2(hc, query, "after_peer");
    if (!p)
        return;
    uint64_t count = 0;
    for (struct tern_conn *c = a->node->conns; c; c = c->next) {
        if (c->state == TERN_CONN_CLOSING)
            continue;
        count++;
        struct page_entry e = {.item = c};
        if (c->client_id)
            e.key = (struct tern_bytes){(const uint8_t *)c->client_id, c->client_id_len};
        tern_conn_peer(c, e.k2);
        e.k2_len = (uint8_t)strnlen(e.k2, sizeof(e.k2));
        page_offer_entry(p, &e);
    }
    page_end2(hc, p, cJSON_CreateObject(), "clients", client_item, count, "next_peer");
}

static int session_offer(void *ctx, struct tern_fsm_session *s)
{
    page_offer(ctx, tern_fsm_session_client_id(s), s);
    return 0;
}

static cJSON *session_item(const struct page_entry *e)
{
    return session_json(e->item);
}

void admin_get_sessions(struct tern_admin *a, struct tern_http_conn *hc, const char *tail,
                        const char *query)
{
    struct page *p = page_begin(hc, query);
    if (!p)
        return;
    struct tern_fsm *f = tern_cluster_fsm(a->node->cluster);
    tern_fsm_sessions_walk(f, session_offer, p);
    page_end(hc, p, cJSON_CreateObject(), "sessions", session_item,
             tern_fsm_stats(f)->sessions);
}

static cJSON *sub_json(const struct tern_fsm_session *s, struct tern_bytes filter,
                       uint8_t options, uint32_t sub_id)
{
    cJSON *o = cJSON_CreateObject();
    if (s)
        admin_add_bytes(o, "client_id", tern_fsm_session_client_id(s));
    admin_add_bytes(o, "filter", filter);
    cJSON_AddNumberToObject(o, "qos", options & TERN_SUBOPT_QOS_MASK);
    cJSON_AddBoolToObject(o, "no_local", options & TERN_SUBOPT_NO_LOCAL);
    cJSON_AddBoolToObject(o, "retain_as_published",
                          options & TERN_SUBOPT_RETAIN_AS_PUBLISHED);
    cJSON_AddNumberToObject(o, "retain_handling",
                            (options & TERN_SUBOPT_RETAIN_HANDLING_MASK) >>
                                TERN_SUBOPT_RETAIN_HANDLING_SHIFT);
    cJSON_AddNumberToObject(o, "subscription_id", sub_id);
    return o;
}

static int sub_visit(void *ctx, struct tern_bytes filter, uint8_t options,
                     uint32_t sub_id)
{
    struct list_walk *w = ctx;
    if (w->count >= w->limit)
        return 1;
    w->count++;
    cJSON_AddItemToArray(w->arr, sub_json(w->session, filter, options, sub_id));
    return 0;
}

/* Decodes the {ID} / {TOPIC} part of a path; false (answered 400) if malformed. */
static bool path_arg(struct tern_http_conn *hc, const char *tail, char *out, size_t *len)
{
    int n = tern_http_unescape(tail, strlen(tail), out, PATH_MAX_BYTES);
    if (n <= 0) {
        admin_reply_error(hc, 400, NULL, 0, "bad percent-encoding in the path");
        return false;
    }
    *len = (size_t)n;
    return true;
}

void admin_get_session(struct tern_admin *a, struct tern_http_conn *hc, const char *tail,
                       const char *query)
{
    char id[PATH_MAX_BYTES];
    size_t len;
    if (!path_arg(hc, tail, id, &len))
        return;
    struct tern_fsm_session *s =
        tern_fsm_session_get(tern_cluster_fsm(a->node->cluster), id, len);
    if (!s) {
        admin_reply_error(hc, 404, NULL, 0, "no session \"%.200s\"", id);
        return;
    }
    cJSON *o = session_json(s);
    struct list_walk w = {.limit = LIST_LIMIT_MAX};
    w.arr = cJSON_AddArrayToObject(o, "subscription_list");
    tern_fsm_session_subs_walk(s, sub_visit, &w);
    admin_reply_json(hc, 200, o);
}

/* /subscriptions pages by (client id, filter): the prefix is the client id's,
 * the cursor is ?after=ID&after_filter=FILTER (next, next_filter). */
struct subs_page {
    struct page *p;
    const struct tern_fsm_session *s;
};

static int sub_offer(void *ctx, struct tern_bytes filter, uint8_t options,
                     uint32_t sub_id)
{
    struct subs_page *x = ctx;
    struct page_entry e = {.key = tern_fsm_session_client_id(x->s),
                           .key2 = filter,
                           .item = x->s,
                           .sub_id = sub_id,
                           .options = options};
    page_offer_entry(x->p, &e);
    return 0;
}

static int session_subs_offer(void *ctx, struct tern_fsm_session *s)
{
    struct subs_page *x = ctx;
    struct tern_bytes id = tern_fsm_session_client_id(s);
    struct tern_bytes after = {(const uint8_t *)x->p->after, (uint32_t)x->p->after_len};
    if (tern_fsm_session_sub_count(s) == 0 || id.len < x->p->prefix_len ||
        (x->p->prefix_len && memcmp(id.ptr, x->p->prefix, x->p->prefix_len) != 0) ||
        (x->p->has_after && key_cmp(id, after) < 0))
        return 0; /* none of its subscriptions can be on the page */
    x->s = s;
    return tern_fsm_session_subs_walk(s, sub_offer, x);
}

static cJSON *sub_item(const struct page_entry *e)
{
    return sub_json(e->item, e->key2, e->options, e->sub_id);
}

void admin_get_subscriptions(struct tern_admin *a, struct tern_http_conn *hc,
                             const char *tail, const char *query)
{
    struct subs_page x = {.p = page_begin2(hc, query, "after_filter")};
    if (!x.p)
        return;
    struct tern_fsm *f = tern_cluster_fsm(a->node->cluster);
    tern_fsm_sessions_walk(f, session_subs_offer, &x);
    page_end2(hc, x.p, cJSON_CreateObject(), "subscriptions", sub_item,
              tern_fsm_stats(f)->subscriptions, "next_filter");
}

/* --- proposals answered when applied ------------------------------------------------ */

struct pending_reply {
    struct tern_http_conn *hc;
    uint8_t type; /* the command */
    size_t len;
    char arg[]; /* client id or topic, NUL-terminated */
};

static void on_applied(void *ctx, int status, const struct tern_fsm_result *res)
{
    struct pending_reply *p = ctx;
    const char *what =
        p->type == TERN_CMD_SESSION_DELETE ? "session" : "retained message";
    if (status != TERN_OK) {
        admin_reply_error(p->hc, 503, NULL, 0, "not applied: %s", tern_strerror(status));
    } else if (res->status == TERN_ENOTFOUND) {
        admin_reply_error(p->hc, 404, NULL, 0, "no %s \"%.200s\"", what, p->arg);
    } else if (res->status != TERN_OK) {
        admin_reply_error(p->hc, 500, NULL, 0, "rejected: %s",
                          tern_strerror(res->status));
    } else {
        cJSON *o = cJSON_CreateObject();
        admin_add_bytes(o,
                        p->type == TERN_CMD_SESSION_DELETE ? "deleted_session"
                                                           : "deleted_retained",
                        (struct tern_bytes){(const uint8_t *)p->arg, (uint32_t)p->len});
        admin_reply_json(p->hc, 200, o);
    }
    tern_http_release(p->hc);
    free(p);
}

/* Proposes cmd and answers hc when it has applied on this node. */
static void propose_and_reply(struct tern_admin *a, struct tern_http_conn *hc,
                              struct tern_cmd *cmd, const char *arg, size_t len)
{
    struct pending_reply *p = malloc(sizeof(*p) + len + 1);
    if (!p) {
        admin_reply_error(hc, 500, NULL, 0, "out of memory");
        return;
    }
    p->hc = hc;
    p->type = cmd->type;
    p->len = len;
    memcpy(p->arg, arg, len);
    p->arg[len] = '\0';
    cmd->now_ms = tern_now_ms();
    tern_http_hold(hc);
    int rv = tern_cluster_propose(a->node->cluster, cmd, on_applied, p);
    if (rv != TERN_OK) {
        admin_reply_error(hc, 503, NULL, 0, "cannot propose: %s", tern_strerror(rv));
        tern_http_release(hc);
        free(p);
    }
}

void admin_delete_session(struct tern_admin *a, struct tern_http_conn *hc,
                          const char *tail, const char *query)
{
    char id[PATH_MAX_BYTES];
    size_t len;
    if (!path_arg(hc, tail, id, &len))
        return;
    if (!tern_fsm_session_get(tern_cluster_fsm(a->node->cluster), id, len)) {
        admin_reply_error(hc, 404, NULL, 0, "no session \"%.200s\"", id);
        return;
    }
    struct tern_cmd cmd = {.type = TERN_CMD_SESSION_DELETE};
    cmd.u.del.client_id = (struct tern_bytes){(const uint8_t *)id, (uint32_t)len};
    TERN_LOGI("admin: deleting session %.*s", (int)len, id);
    propose_and_reply(a, hc, &cmd, id, len);
}

/* --- retained messages ---------------------------------------------------------- */

static cJSON *retained_item(const struct page_entry *e)
{
    const struct tern_msg *m = e->item;
    cJSON *o = cJSON_CreateObject();
    admin_add_bytes(o, "topic", m->topic);
    cJSON_AddNumberToObject(o, "payload_bytes", m->payload.len);
    cJSON_AddNumberToObject(o, "qos", m->qos);
    cJSON_AddNumberToObject(o, "created_ms", (double)m->created_ms);
    cJSON_AddNumberToObject(o, "expire_at_ms", (double)m->expire_at_ms);
    return o;
}

static int retained_offer(void *ctx, const struct tern_msg *m)
{
    page_offer(ctx, m->topic, m);
    return 0;
}

void admin_get_retained(struct tern_admin *a, struct tern_http_conn *hc, const char *tail,
                        const char *query)
{
    struct page *p = page_begin(hc, query);
    if (!p)
        return;
    struct tern_fsm *f = tern_cluster_fsm(a->node->cluster);
    const struct tern_fsm_stats *st = tern_fsm_stats(f);
    tern_fsm_retained_walk(f, retained_offer, p);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "total_bytes", (double)st->retained_bytes);
    page_end(hc, p, o, "retained", retained_item, st->retained);
}

static int found_visit(void *ctx, const struct tern_msg *m)
{
    (void)m;
    *(bool *)ctx = true;
    return 1;
}

void admin_delete_retained(struct tern_admin *a, struct tern_http_conn *hc,
                           const char *tail, const char *query)
{
    char topic[PATH_MAX_BYTES];
    size_t len;
    if (!path_arg(hc, tail, topic, &len))
        return;
    if (strpbrk(topic, "+#")) {
        admin_reply_error(hc, 400, NULL, 0, "a topic name has no wildcards: \"%.200s\"",
                          topic);
        return;
    }
    bool found = false;
    tern_fsm_retained_match(tern_cluster_fsm(a->node->cluster), topic, len, found_visit,
                            &found);
    if (!found) {
        admin_reply_error(hc, 404, NULL, 0, "no retained message \"%.200s\"", topic);
        return;
    }
    struct tern_cmd cmd = {.type = TERN_CMD_RETAIN_DELETE};
    cmd.u.retain_delete.topic =
        (struct tern_bytes){(const uint8_t *)topic, (uint32_t)len};
    TERN_LOGI("admin: deleting retained message %.*s", (int)len, topic);
    propose_and_reply(a, hc, &cmd, topic, len);
}
