/* The admin API of a node (docs/operations.md): cluster and health status,
 * clients, sessions, subscriptions, retained messages, Prometheus metrics, and
 * the operations (kick, delete retained, leadership transfer, snapshot, drain).
 * Also publishes the $SYS topics to this node's clean-session subscribers.
 *
 * Reads come straight from this node's replica, so on a follower they may lag
 * the leader by the entries not applied yet. Writes are commands proposed like
 * any other (a kick is a SESSION_DELETE), answered once applied on this node.
 *
 * List endpoints return at most `limit` entries (default and most 10000) and say
 * when they cut the list, so a large cluster cannot make one response unbounded;
 * /sessions and /retained come in key order with a cursor (?after=, `next`) and a
 * key prefix filter (?prefix=).
 */
#include <dirent.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>
#include <strings.h>

#include <cjson/cJSON.h>

#include "node.h"
#include "tern/auth.h"
#include "tern/log.h"

#ifndef TERN_VERSION
#define TERN_VERSION "dev"
#endif

#define LIST_LIMIT_DEFAULT 10000
#define LIST_LIMIT_MAX 10000 /* one page; the cursor (?after=) gets the rest */
#define PATH_MAX_BYTES 8192

struct tern_admin {
    struct tern_node *node;
    struct tern_http_server *http;
    uv_timer_t sys_timer;
    bool sys_started;
    bool draining;
    uint64_t started_ms;
    double started_unix_s; /* process_start_time_seconds */
    char bound[80];
    uint64_t unauthorized; /* requests refused for a missing or wrong token */
};

/* --- replies ------------------------------------------------------------------ */

static void reply_json_h(struct tern_http_conn *hc, int status, cJSON *o,
                         const char *headers)
{
    char *text = o ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    if (!text) {
        const char *oom = "{\"error\":\"out of memory\"}";
        tern_http_respond(hc, 500, "application/json", NULL, oom, strlen(oom));
        return;
    }
    size_t len = strlen(text);
    text[len] = '\n'; /* replaces the NUL: the length is explicit */
    tern_http_respond(hc, status, "application/json", headers, text, len + 1);
    free(text);
}

static void reply_json(struct tern_http_conn *hc, int status, cJSON *o)
{
    reply_json_h(hc, status, o, NULL);
}

/* {"error": "...", key: num}; key NULL for none. */
static void reply_error(struct tern_http_conn *hc, int status, const char *key,
                        double num, const char *fmt, ...) TERN_PRINTF(5, 6);
static void reply_error(struct tern_http_conn *hc, int status, const char *key,
                        double num, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "error", msg);
    if (key)
        cJSON_AddNumberToObject(o, key, num);
    reply_json(hc, status, o);
}

/* Adds a byte string (client id, topic) as a JSON string. */
static void add_bytes(cJSON *o, const char *key, struct tern_bytes b)
{
    char *s = malloc((size_t)b.len + 1);
    if (!s)
        return;
    memcpy(s, b.ptr, b.len);
    s[b.len] = '\0';
    cJSON_AddStringToObject(o, key, s);
    free(s);
}

/* --- query parameters ----------------------------------------------------------- */

/* Finds name=value in the query and percent-decodes the value: 1 found, 0
 * absent, -1 malformed or longer than cap. */
static int query_get(const char *query, const char *name, char *out, size_t cap)
{
    size_t nlen = strlen(name);
    for (const char *p = query; p && *p; p = strchr(p, '&'), p = p ? p + 1 : p) {
        if (strncmp(p, name, nlen) != 0 || p[nlen] != '=')
            continue;
        const char *v = p + nlen + 1;
        return tern_http_unescape(v, strcspn(v, "&"), out, cap) >= 0 ? 1 : -1;
    }
    return 0;
}

/* Unsigned decimal query parameter: 1 found, 0 absent, -1 malformed. */
static int query_uint(const char *query, const char *name, uint64_t max, uint64_t *out)
{
    char buf[32];
    int rv = query_get(query, name, buf, sizeof(buf));
    if (rv <= 0)
        return rv;
    char *end;
    if (buf[0] < '0' || buf[0] > '9')
        return -1;
    unsigned long long v = strtoull(buf, &end, 10);
    if (*end || v > max)
        return -1;
    *out = v;
    return 1;
}

/* The `limit` of a list endpoint; false (answered 400) if malformed. */
static bool list_limit(struct tern_http_conn *hc, const char *query, size_t *limit)
{
    uint64_t v = LIST_LIMIT_DEFAULT;
    if (query_uint(query, "limit", LIST_LIMIT_MAX, &v) < 0 || v == 0) {
        reply_error(hc, 400, NULL, 0, "limit: must be an integer from 1 to %d",
                    LIST_LIMIT_MAX);
        return false;
    }
    *limit = (size_t)v;
    return true;
}

/* --- cluster and health ------------------------------------------------------------ */

static const char *state_name(int state)
{
    static const char *names[] = {"unavailable", "follower", "candidate", "leader"};
    return state >= 0 && state <= 3 ? names[state] : "unknown";
}

static const char *role_name(int role)
{
    static const char *names[] = {"standby", "voter", "spare"};
    return role >= 0 && role <= 2 ? names[role] : "unknown";
}

/* The MQTT address clients should use for member id ("" if not configured). */
static const char *member_mqtt(const struct tern_node *n, uint32_t id)
{
    for (uint32_t i = 0; i < n->cfg.member_count; i++)
        if (n->cfg.members[i].id == id)
            return n->cfg.members[i].mqtt;
    /* A member added at runtime: its addresses are replicated. */
    const struct tern_fsm_member *m =
        tern_fsm_member_get(tern_cluster_fsm(n->cluster), id);
    if (m)
        return m->mqtt;
    return id == n->cfg.node_id ? n->cfg.listen : "";
}

/* Member id's admin API address as configured ("" if unknown): ternctl sends
 * write commands to the leader's. */
static const char *member_admin(const struct tern_node *n, uint32_t id)
{
    if (id == n->cfg.node_id)
        return n->cfg.admin_listen;
    for (uint32_t i = 0; i < n->cfg.member_count; i++)
        if (n->cfg.members[i].id == id)
            return n->cfg.members[i].admin;
    return "";
}

static bool node_ready(const struct tern_admin *a)
{
    const struct tern_node *n = a->node;
    return !n->stopping && tern_cluster_ready(n->cluster) && tern_node_available(n);
}

static cJSON *member_json(const struct tern_node *n, const struct tern_member_status *m)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "id", m->id);
    cJSON_AddStringToObject(o, "raft", m->raft);
    cJSON_AddStringToObject(o, "mqtt", member_mqtt(n, m->id));
    cJSON_AddStringToObject(o, "admin", member_admin(n, m->id));
    cJSON_AddStringToObject(o, "role", role_name(m->role));
    cJSON_AddBoolToObject(o, "leader", m->leader);
    cJSON_AddBoolToObject(o, "self", m->self);
    cJSON_AddBoolToObject(o, "link_up", m->link_up);
    cJSON_AddNumberToObject(o, "match_index", (double)m->match_index);
    return o;
}

/* The limits of the replicated state in force (the cluster's). */
static cJSON *limits_json(const struct tern_fsm_limits *l)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "inflight_max", l->inflight_max);
    cJSON_AddNumberToObject(o, "queue_max", l->queue_max);
    cJSON_AddNumberToObject(o, "queue_bytes_max", (double)l->queue_bytes_max);
    cJSON_AddBoolToObject(o, "queue_qos0", l->queue_qos0);
    cJSON_AddStringToObject(o, "drop_policy",
                            l->drop_policy == TERN_DROP_NEW ? "drop_new" : "drop_oldest");
    cJSON_AddNumberToObject(o, "retained_max", l->retained_max);
    cJSON_AddNumberToObject(o, "retained_bytes_max", (double)l->retained_bytes_max);
    cJSON_AddNumberToObject(o, "session_expiry_max_s", l->session_expiry_max_s);
    cJSON_AddNumberToObject(o, "message_expiry_max_s", l->message_expiry_max_s);
    cJSON_AddNumberToObject(o, "sessions_max", l->sessions_max);
    return o;
}

static void get_cluster(struct tern_admin *a, struct tern_http_conn *hc, const char *tail,
                        const char *query)
{
    struct tern_node *n = a->node;
    struct tern_cluster_status st;
    struct tern_member_status ms[TERN_CLUSTER_MEMBERS_MAX];
    tern_cluster_status(n->cluster, &st);
    size_t count = tern_cluster_members(n->cluster, ms, TERN_CLUSTER_MEMBERS_MAX);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "node_id", n->cfg.node_id);
    cJSON_AddStringToObject(o, "cluster_name", n->cfg.cluster_name);
    cJSON_AddStringToObject(o, "cluster_id", n->cfg.cluster_id);
    cJSON_AddStringToObject(
        o, "state", tern_cluster_removed(n->cluster) ? "removed" : state_name(st.state));
    cJSON_AddNumberToObject(o, "leader", st.leader);
    cJSON_AddNumberToObject(o, "term", (double)st.term);
    cJSON_AddNumberToObject(o, "last_index", (double)st.last_index);
    cJSON_AddNumberToObject(o, "applied_index", (double)st.applied_index);
    cJSON_AddNumberToObject(o, "pending_proposals", (double)st.pending);
    cJSON_AddBoolToObject(o, "ready", node_ready(a));
    cJSON_AddBoolToObject(o, "draining", a->draining);
    const struct tern_fsm_limits *lim = tern_node_limits(n);
    cJSON_AddItemToObject(o, "limits", limits_json(lim));
    cJSON_AddBoolToObject(o, "limits_as_configured",
                          tern_fsm_limits_equal(lim, &n->cfg.limits));
    /* What this node enforces, so ternctl status can flag nodes that differ. */
    cJSON *auth = cJSON_AddObjectToObject(o, "auth");
    cJSON_AddStringToObject(auth, "password_file_sha256", tern_access_pw_digest(n));
    cJSON_AddStringToObject(auth, "acl_file_sha256", tern_access_acl_digest(n));
    cJSON_AddBoolToObject(auth, "allow_anonymous", tern_access_anonymous(n));
    cJSON *arr = cJSON_AddArrayToObject(o, "members");
    for (size_t i = 0; i < count; i++)
        cJSON_AddItemToArray(arr, member_json(n, &ms[i]));
    reply_json(hc, 200, o);
}

static void get_health(struct tern_admin *a, struct tern_http_conn *hc, const char *tail,
                       const char *query)
{
    struct tern_cluster_status st;
    tern_cluster_status(a->node->cluster, &st);
    bool ready = node_ready(a) && !a->draining;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddBoolToObject(o, "live", true);
    cJSON_AddBoolToObject(o, "ready", ready);
    cJSON_AddNumberToObject(o, "node_id", a->node->cfg.node_id);
    cJSON_AddNumberToObject(o, "leader", st.leader);
    cJSON_AddBoolToObject(o, "draining", a->draining);
    reply_json(hc, ready ? 200 : 503, o);
}

/* --- clients ----------------------------------------------------------------- */

static const char *conn_state_name(enum tern_conn_state s)
{
    switch (s) {
    case TERN_CONN_NEW:
        return "new";
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
    add_bytes(o, "client_id", id);
    char pb[TERN_PEER_STRLEN];
    cJSON_AddStringToObject(o, "peer", tern_conn_peer(c, pb));
    cJSON_AddStringToObject(o, "state", conn_state_name(c->state));
    cJSON_AddBoolToObject(o, "tls", c->opt && c->opt->tls);
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

static void get_clients(struct tern_admin *a, struct tern_http_conn *hc, const char *tail,
                        const char *query)
{
    size_t limit, count = 0;
    if (!list_limit(hc, query, &limit))
        return;
    cJSON *o = cJSON_CreateObject();
    cJSON *arr = cJSON_AddArrayToObject(o, "clients");
    for (struct tern_conn *c = a->node->conns; c; c = c->next) {
        if (c->state == TERN_CONN_CLOSING)
            continue;
        if (count++ < limit)
            cJSON_AddItemToArray(arr, client_json(c));
    }
    cJSON_AddNumberToObject(o, "total", (double)count);
    cJSON_AddBoolToObject(o, "truncated", count > limit);
    reply_json(hc, 200, o);
}

/* --- sessions and subscriptions ------------------------------------------------------
 */

static cJSON *session_json(const struct tern_fsm_session *s)
{
    cJSON *o = cJSON_CreateObject();
    add_bytes(o, "client_id", tern_fsm_session_client_id(s));
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

/* A list answer: {"NAME": [...], "total": N, "truncated": bool}. list_begin
 * reads ?limit= (answering 400 itself when it is bad) and returns NULL then. */
static cJSON *list_begin(struct tern_http_conn *hc, const char *query,
                         struct list_walk *w, const char *name)
{
    if (!list_limit(hc, query, &w->limit))
        return NULL;
    cJSON *o = cJSON_CreateObject();
    w->arr = cJSON_AddArrayToObject(o, name);
    return o;
}

static void list_end(struct tern_http_conn *hc, cJSON *o, int stopped, uint64_t total)
{
    cJSON_AddNumberToObject(o, "total", (double)total);
    cJSON_AddBoolToObject(o, "truncated", stopped != 0);
    reply_json(hc, 200, o);
}

/* --- pages: the `limit` smallest keys after the cursor, with the prefix ---------
 * A bounded max-heap over one walk: O(n log limit) time, `limit` entries of
 * memory, whatever the size of the state; the walk order does not matter. */

struct page_entry {
    struct tern_bytes key;
    const void *item;
};

struct page {
    struct page_entry *heap;
    size_t n, cap;
    char after[PATH_MAX_BYTES], prefix[PATH_MAX_BYTES];
    size_t after_len, prefix_len;
    bool has_after;
    uint64_t matched; /* entries after the cursor with the prefix */
};

static int key_cmp(struct tern_bytes a, struct tern_bytes b)
{
    int c = memcmp(a.ptr, b.ptr, a.len < b.len ? a.len : b.len);
    return c ? c : (a.len > b.len) - (a.len < b.len);
}

static int entry_cmp(const void *x, const void *y)
{
    return key_cmp(((const struct page_entry *)x)->key,
                   ((const struct page_entry *)y)->key);
}

static void heap_swap(struct page *p, size_t i, size_t j)
{
    struct page_entry t = p->heap[i];
    p->heap[i] = p->heap[j];
    p->heap[j] = t;
}

static void page_offer(struct page *p, struct tern_bytes key, const void *item)
{
    struct tern_bytes after = {(const uint8_t *)p->after, (uint32_t)p->after_len};
    if (key.len < p->prefix_len || memcmp(key.ptr, p->prefix, p->prefix_len) != 0 ||
        (p->has_after && key_cmp(key, after) <= 0))
        return;
    p->matched++;
    size_t i;
    if (p->n < p->cap) {
        i = p->n++;
        p->heap[i] = (struct page_entry){key, item};
        for (; i > 0 && key_cmp(p->heap[(i - 1) / 2].key, p->heap[i].key) < 0;
             i = (i - 1) / 2)
            heap_swap(p, i, (i - 1) / 2);
        return;
    }
    if (key_cmp(key, p->heap[0].key) >= 0)
        return;
    p->heap[0] = (struct page_entry){key, item};
    for (i = 0;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < p->n && key_cmp(p->heap[l].key, p->heap[m].key) > 0)
            m = l;
        if (r < p->n && key_cmp(p->heap[r].key, p->heap[m].key) > 0)
            m = r;
        if (m == i)
            break;
        heap_swap(p, i, m);
        i = m;
    }
}

/* Reads ?limit= ?after= ?prefix=; NULL (answered 400 or 500) if bad. */
static struct page *page_begin(struct tern_http_conn *hc, const char *query)
{
    size_t limit;
    if (!list_limit(hc, query, &limit))
        return NULL;
    struct page *p = calloc(1, sizeof(*p));
    if (p)
        p->heap = malloc(limit * sizeof(*p->heap));
    if (!p || !p->heap) {
        free(p);
        reply_error(hc, 500, NULL, 0, "out of memory");
        return NULL;
    }
    p->cap = limit;
    const char *names[] = {"after", "prefix"};
    char *bufs[] = {p->after, p->prefix};
    size_t *lens[] = {&p->after_len, &p->prefix_len};
    for (int i = 0; i < 2; i++) {
        const char *v = NULL;
        size_t nlen = strlen(names[i]);
        for (const char *q = query; q && *q; q = strchr(q, '&'), q = q ? q + 1 : q)
            if (strncmp(q, names[i], nlen) == 0 && q[nlen] == '=')
                v = q + nlen + 1;
        if (!v)
            continue;
        int n = tern_http_unescape(v, strcspn(v, "&"), bufs[i], PATH_MAX_BYTES);
        if (n < 0) {
            reply_error(hc, 400, NULL, 0, "%s: bad percent-encoding, or too long",
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

/* Adds the page to o as NAME (each entry through to_json), with total, truncated
 * and next (the cursor of the following page, when there is one); answers. */
static void page_end(struct tern_http_conn *hc, struct page *p, cJSON *o,
                     const char *name, cJSON *(*to_json)(const void *item),
                     uint64_t total)
{
    qsort(p->heap, p->n, sizeof(*p->heap), entry_cmp);
    cJSON *arr = cJSON_AddArrayToObject(o, name);
    for (size_t i = 0; i < p->n; i++)
        cJSON_AddItemToArray(arr, to_json(p->heap[i].item));
    cJSON_AddNumberToObject(o, "total", (double)total);
    bool more = p->matched > p->n;
    cJSON_AddBoolToObject(o, "truncated", more);
    if (more)
        add_bytes(o, "next", p->heap[p->n - 1].key);
    reply_json(hc, 200, o);
    free(p->heap);
    free(p);
}

static int session_offer(void *ctx, struct tern_fsm_session *s)
{
    page_offer(ctx, tern_fsm_session_client_id(s), s);
    return 0;
}

static cJSON *session_item(const void *item)
{
    return session_json((struct tern_fsm_session *)item);
}

static void get_sessions(struct tern_admin *a, struct tern_http_conn *hc,
                         const char *tail, const char *query)
{
    struct page *p = page_begin(hc, query);
    if (!p)
        return;
    struct tern_fsm *f = tern_cluster_fsm(a->node->cluster);
    tern_fsm_sessions_walk(f, session_offer, p);
    page_end(hc, p, cJSON_CreateObject(), "sessions", session_item,
             tern_fsm_stats(f)->sessions);
}

static int sub_visit(void *ctx, struct tern_bytes filter, uint8_t options,
                     uint32_t sub_id)
{
    struct list_walk *w = ctx;
    if (w->count >= w->limit)
        return 1;
    w->count++;
    cJSON *o = cJSON_CreateObject();
    if (w->session)
        add_bytes(o, "client_id", tern_fsm_session_client_id(w->session));
    add_bytes(o, "filter", filter);
    cJSON_AddNumberToObject(o, "qos", options & TERN_SUBOPT_QOS_MASK);
    cJSON_AddBoolToObject(o, "no_local", options & TERN_SUBOPT_NO_LOCAL);
    cJSON_AddBoolToObject(o, "retain_as_published",
                          options & TERN_SUBOPT_RETAIN_AS_PUBLISHED);
    cJSON_AddNumberToObject(o, "retain_handling",
                            (options & TERN_SUBOPT_RETAIN_HANDLING_MASK) >>
                                TERN_SUBOPT_RETAIN_HANDLING_SHIFT);
    cJSON_AddNumberToObject(o, "subscription_id", sub_id);
    cJSON_AddItemToArray(w->arr, o);
    return 0;
}

/* Decodes the {ID} / {TOPIC} part of a path; false (answered 400) if malformed. */
static bool path_arg(struct tern_http_conn *hc, const char *tail, char *out, size_t *len)
{
    int n = tern_http_unescape(tail, strlen(tail), out, PATH_MAX_BYTES);
    if (n <= 0) {
        reply_error(hc, 400, NULL, 0, "bad percent-encoding in the path");
        return false;
    }
    *len = (size_t)n;
    return true;
}

static void get_session(struct tern_admin *a, struct tern_http_conn *hc, const char *tail,
                        const char *query)
{
    char id[PATH_MAX_BYTES];
    size_t len;
    if (!path_arg(hc, tail, id, &len))
        return;
    struct tern_fsm_session *s =
        tern_fsm_session_get(tern_cluster_fsm(a->node->cluster), id, len);
    if (!s) {
        reply_error(hc, 404, NULL, 0, "no session \"%.200s\"", id);
        return;
    }
    cJSON *o = session_json(s);
    struct list_walk w = {.limit = LIST_LIMIT_MAX};
    w.arr = cJSON_AddArrayToObject(o, "subscription_list");
    tern_fsm_session_subs_walk(s, sub_visit, &w);
    reply_json(hc, 200, o);
}

static int session_subs_visit(void *ctx, struct tern_fsm_session *s)
{
    struct list_walk *w = ctx;
    w->session = s;
    return tern_fsm_session_subs_walk(s, sub_visit, w);
}

static void get_subscriptions(struct tern_admin *a, struct tern_http_conn *hc,
                              const char *tail, const char *query)
{
    struct list_walk w = {0};
    cJSON *o = list_begin(hc, query, &w, "subscriptions");
    if (!o)
        return;
    struct tern_fsm *f = tern_cluster_fsm(a->node->cluster);
    int stopped = tern_fsm_sessions_walk(f, session_subs_visit, &w);
    list_end(hc, o, stopped, tern_fsm_stats(f)->subscriptions);
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
        reply_error(p->hc, 503, NULL, 0, "not applied: %s", tern_strerror(status));
    } else if (res->status == TERN_ENOTFOUND) {
        reply_error(p->hc, 404, NULL, 0, "no %s \"%.200s\"", what, p->arg);
    } else if (res->status != TERN_OK) {
        reply_error(p->hc, 500, NULL, 0, "rejected: %s", tern_strerror(res->status));
    } else {
        cJSON *o = cJSON_CreateObject();
        add_bytes(o,
                  p->type == TERN_CMD_SESSION_DELETE ? "deleted_session"
                                                     : "deleted_retained",
                  (struct tern_bytes){(const uint8_t *)p->arg, (uint32_t)p->len});
        reply_json(p->hc, 200, o);
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
        reply_error(hc, 500, NULL, 0, "out of memory");
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
        reply_error(hc, 503, NULL, 0, "cannot propose: %s", tern_strerror(rv));
        tern_http_release(hc);
        free(p);
    }
}

static void delete_session(struct tern_admin *a, struct tern_http_conn *hc,
                           const char *tail, const char *query)
{
    char id[PATH_MAX_BYTES];
    size_t len;
    if (!path_arg(hc, tail, id, &len))
        return;
    if (!tern_fsm_session_get(tern_cluster_fsm(a->node->cluster), id, len)) {
        reply_error(hc, 404, NULL, 0, "no session \"%.200s\"", id);
        return;
    }
    struct tern_cmd cmd = {.type = TERN_CMD_SESSION_DELETE};
    cmd.u.del.client_id = (struct tern_bytes){(const uint8_t *)id, (uint32_t)len};
    TERN_LOGI("admin: deleting session %.*s", (int)len, id);
    propose_and_reply(a, hc, &cmd, id, len);
}

/* --- retained messages ---------------------------------------------------------- */

static cJSON *retained_item(const void *item)
{
    const struct tern_msg *m = item;
    cJSON *o = cJSON_CreateObject();
    add_bytes(o, "topic", m->topic);
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

static void get_retained(struct tern_admin *a, struct tern_http_conn *hc,
                         const char *tail, const char *query)
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

static void delete_retained(struct tern_admin *a, struct tern_http_conn *hc,
                            const char *tail, const char *query)
{
    char topic[PATH_MAX_BYTES];
    size_t len;
    if (!path_arg(hc, tail, topic, &len))
        return;
    if (strpbrk(topic, "+#")) {
        reply_error(hc, 400, NULL, 0, "a topic name has no wildcards: \"%.200s\"", topic);
        return;
    }
    bool found = false;
    tern_fsm_retained_match(tern_cluster_fsm(a->node->cluster), topic, len, found_visit,
                            &found);
    if (!found) {
        reply_error(hc, 404, NULL, 0, "no retained message \"%.200s\"", topic);
        return;
    }
    struct tern_cmd cmd = {.type = TERN_CMD_RETAIN_DELETE};
    cmd.u.retain_delete.topic =
        (struct tern_bytes){(const uint8_t *)topic, (uint32_t)len};
    TERN_LOGI("admin: deleting retained message %.*s", (int)len, topic);
    propose_and_reply(a, hc, &cmd, topic, len);
}

/* --- metrics ------------------------------------------------------------------ */

struct sbuf {
    char *p;
    size_t len, cap;
    bool oom;
};

static void sb_printf(struct sbuf *b, const char *fmt, ...) TERN_PRINTF(2, 3);
static void sb_printf(struct sbuf *b, const char *fmt, ...)
{
    for (int attempt = 0; attempt < 2 && !b->oom; attempt++) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p ? b->p + b->len : NULL, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = true;
            return;
        }
        if (b->len + (size_t)n < b->cap) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap ? b->cap : 4096;
        while (cap <= b->len + (size_t)n)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
}

/* HELP and TYPE lines, then one sample per call of sample(). */
static void metric_head(struct sbuf *b, const char *name, const char *type,
                        const char *help)
{
    sb_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void sample(struct sbuf *b, const char *name, const char *labels, uint64_t v)
{
    sb_printf(b, "%s%s%s%s %" PRIu64 "\n", name, labels ? "{" : "", labels ? labels : "",
              labels ? "}" : "", v);
}

static void metric(struct sbuf *b, const char *name, const char *type, const char *help,
                   uint64_t v)
{
    metric_head(b, name, type, help);
    sample(b, name, NULL, v);
}

/* A gauge in base units (seconds, from microseconds or clocks): a float. */
static void metric_f(struct sbuf *b, const char *name, const char *type, const char *help,
                     double v)
{
    metric_head(b, name, type, help);
    sb_printf(b, "%s %.9g\n", name, v);
}

static void metrics_node(struct sbuf *b, const struct tern_node *n)
{
    const struct tern_node_stats *s = &n->stats;
    metric(b, "tern_connections", "gauge", "Client connections open on this node.",
           n->conn_count);
    metric(b, "tern_connections_accepted_total", "counter",
           "Client connections accepted.", s->connections_accepted);
    metric(b, "tern_connections_rejected_total", "counter",
           "Client connections refused (max_connections, shutting down, drained).",
           s->connections_rejected);
    metric(b, "tern_protocol_errors_total", "counter",
           "Connections closed for a protocol error.", s->protocol_errors);
    metric(b, "tern_tls_handshakes_total", "counter", "TLS handshakes completed.",
           s->tls_handshakes);
    metric(b, "tern_tls_handshake_failures_total", "counter",
           "TLS handshakes that failed or timed out (that connection closed).",
           s->tls_handshake_failures);
    metric(b, "tern_tls_reloads_total", "counter",
           "TLS listeners whose files were loaded again on SIGHUP.", s->tls_reloads);
    metric(b, "tern_tls_reload_failures_total", "counter",
           "TLS reloads refused (a bad new file): the old files stay in use.",
           s->tls_reload_failures);
    const struct tern_access_stats *as = tern_access_stats(n);
    metric_head(b, "tern_auth_total", "counter",
                "CONNECT authentication outcomes (access.c).");
    sample(b, "tern_auth_total", "result=\"ok\"", as->successes);
    sample(b, "tern_auth_total", "result=\"bad_credentials\"", as->failures);
    sample(b, "tern_auth_total", "result=\"throttled\"", as->throttled);
    sample(b, "tern_auth_total", "result=\"anonymous_refused\"", as->anonymous_refused);
    metric_head(b, "tern_auth_reloads_total", "counter",
                "password_file reloads on SIGHUP, by outcome.");
    sample(b, "tern_auth_reloads_total", "result=\"ok\"", as->reloads);
    sample(b, "tern_auth_reloads_total", "result=\"failed\"", as->reload_failures);
    metric_head(b, "tern_connections_limited_total", "counter",
                "Connections closed at accept by a per-address limit.");
    sample(b, "tern_connections_limited_total", "limit=\"rate\"", as->rate_refused);
    sample(b, "tern_connections_limited_total", "limit=\"per_address\"",
           as->per_address_refused);
    metric(b, "tern_subscriptions_refused_total", "counter",
           "SUBSCRIBE entries refused: the session holds subscriptions_max already.",
           s->subscriptions_refused);
    metric(b, "tern_admin_unauthorized_total", "counter",
           "Admin API requests refused: no or a wrong bearer token.",
           n->admin ? n->admin->unauthorized : 0);
    metric_head(b, "tern_acl_denied_total", "counter",
                "Requests the ACL refused: SUBSCRIBE filters (read), PUBLISH and will "
                "topics (write).");
    sample(b, "tern_acl_denied_total", "access=\"read\"", as->acl_denied[0]);
    sample(b, "tern_acl_denied_total", "access=\"write\"", as->acl_denied[1]);
    metric(b, "tern_acl_resume_unsubscribed_total", "counter",
           "Stored subscriptions removed at a resume: this node's ACL forbids them.",
           as->acl_resume_removed);
    const char *qos[] = {"qos=\"0\"", "qos=\"1\"", "qos=\"2\""};
    metric_head(b, "tern_messages_received_total", "counter",
                "PUBLISH packets received.");
    for (int q = 0; q < 3; q++)
        sample(b, "tern_messages_received_total", qos[q], s->msgs_in[q]);
    metric_head(b, "tern_messages_sent_total", "counter", "PUBLISH packets sent.");
    for (int q = 0; q < 3; q++)
        sample(b, "tern_messages_sent_total", qos[q], s->msgs_out[q]);
    metric(b, "tern_bytes_received_total", "counter", "Bytes read from clients.",
           s->bytes_in);
    metric(b, "tern_bytes_sent_total", "counter", "Bytes written to clients.",
           s->bytes_out);
}

static void metrics_fsm(struct sbuf *b, const struct tern_node *n)
{
    const struct tern_fsm_stats *r = tern_fsm_stats(tern_cluster_fsm(n->cluster));
    const struct tern_fsm_stats *l = tern_fsm_stats(n->local);
    const struct tern_node_stats *s = &n->stats;
    metric_head(
        b, "tern_dropped_messages_total", "counter",
        "Messages not delivered, by reason (slow_client counts connections closed).");
    sample(b, "tern_dropped_messages_total", "reason=\"queue_full\"",
           r->dropped_queue_full + l->dropped_queue_full);
    sample(b, "tern_dropped_messages_total", "reason=\"expired\"",
           r->dropped_expired + l->dropped_expired);
    sample(b, "tern_dropped_messages_total", "reason=\"qos0_offline\"",
           r->dropped_qos0_offline + l->dropped_qos0_offline);
    sample(b, "tern_dropped_messages_total", "reason=\"too_large\"",
           s->dropped_too_large);
    sample(b, "tern_dropped_messages_total", "reason=\"slow_client\"",
           s->dropped_slow_client);
    sample(b, "tern_dropped_messages_total", "reason=\"peer_link_full\"",
           s->dropped_forward);
    metric(b, "tern_publishers_paused_total", "counter",
           "Times a publisher stopped being read because a link to another node "
           "was backed up.",
           s->publishers_paused);
    metric(b, "tern_connections_paused", "gauge",
           "Connections not read now (link backlog).", n->paused_count);
    metric(b, "tern_publishers_held_total", "counter",
           "Times a publisher stopped being read because a subscriber's queue it feeds "
           "passed its high-water mark (flow control).",
           s->publishers_held);
    metric(b, "tern_connections_held", "gauge",
           "Connections not read now (a subscriber's queue is backlogged).",
           n->held_count);
    metric(b, "tern_slow_subscribers_total", "counter",
           "Times a backlogged subscriber made no progress for "
           "slow_subscriber_timeout_ms: its queue met drop_policy.",
           s->slow_subscribers);
    metric(b, "tern_retained_rejected_total", "counter",
           "Retained messages refused (limits).", r->retained_rejected);
    metric(b, "tern_sessions", "gauge", "Sessions in the cluster (replicated).",
           r->sessions);
    metric(b, "tern_sessions_online", "gauge", "Sessions with a connection.",
           r->sessions_online);
    metric(b, "tern_sessions_expired_total", "counter", "Sessions ended by expiry.",
           r->sessions_expired);
    metric(b, "tern_wills_published_total", "counter", "Will messages published.",
           r->wills_published);
    const char *store[] = {"store=\"replicated\"", "store=\"local\""};
    const struct tern_fsm_stats *both[] = {r, l};
    metric_head(
        b, "tern_subscriptions", "gauge",
        "Subscriptions: persistent sessions (replicated), clean sessions (local).");
    for (int i = 0; i < 2; i++)
        sample(b, "tern_subscriptions", store[i], both[i]->subscriptions);
    metric_head(b, "tern_queued_messages", "gauge",
                "Messages waiting in session queues.");
    for (int i = 0; i < 2; i++)
        sample(b, "tern_queued_messages", store[i], both[i]->queued);
    metric_head(b, "tern_inflight_messages", "gauge",
                "Messages sent and not acknowledged.");
    for (int i = 0; i < 2; i++)
        sample(b, "tern_inflight_messages", store[i], both[i]->inflight);
    metric(b, "tern_retained_messages", "gauge", "Retained messages.", r->retained);
    metric(b, "tern_retained_bytes", "gauge", "Retained payload bytes.",
           r->retained_bytes);
    metric(b, "tern_routes", "gauge", "Clean-session routes (filter, node).",
           tern_fsm_route_count(tern_cluster_fsm(n->cluster)));
}

/* A Prometheus histogram (seconds) from per-bucket counts: counts[nb] is the
 * rest above the last bound. */
static void histogram(struct sbuf *b, const char *name, const char *help,
                      const uint64_t *bounds_us, size_t nb, const uint64_t *counts,
                      uint64_t sum_us)
{
    char series[96], label[64];
    metric_head(b, name, "histogram", help);
    snprintf(series, sizeof(series), "%s_bucket", name);
    uint64_t cum = 0;
    for (size_t i = 0; i < nb; i++) {
        cum += counts[i];
        snprintf(label, sizeof(label), "le=\"%g\"", (double)bounds_us[i] / 1e6);
        sample(b, series, label, cum);
    }
    cum += counts[nb];
    sample(b, series, "le=\"+Inf\"", cum);
    sb_printf(b, "%s_sum %.9g\n", name, (double)sum_us / 1e6);
    snprintf(series, sizeof(series), "%s_count", name);
    sample(b, series, NULL, cum);
}

/* Loop iterations by busy time; this node's commits by latency. */
static void metrics_loop(struct sbuf *b, const struct tern_node *n)
{
    static const uint64_t loop_us[] = TERN_LOOP_BUCKETS_US;
    histogram(b, "tern_loop_busy_seconds",
              "Event-loop iterations by time spent working (not waiting).", loop_us,
              sizeof(loop_us) / sizeof(loop_us[0]), n->stats.loop_busy,
              n->stats.loop_busy_sum_us);
    metric_f(b, "tern_loop_busy_max_seconds", "gauge",
             "Longest event-loop iteration since start.",
             (double)n->stats.loop_busy_max_us / 1e6);
    static const uint64_t commit_us[] = TERN_COMMIT_BUCKETS_US;
    struct tern_cluster_status st;
    tern_cluster_status(n->cluster, &st);
    histogram(b, "tern_commit_latency_seconds",
              "This node's proposals by time from proposal to apply on this node "
              "(what a PUBACK of a durable PUBLISH waits for).",
              commit_us, sizeof(commit_us) / sizeof(commit_us[0]), st.commit_us,
              st.commit_sum_us);
    metric_f(b, "tern_commit_latency_max_seconds", "gauge",
             "Longest proposal-to-apply time since start.",
             (double)st.commit_max_us / 1e6);
    metric(b, "tern_snapshots_taken_total", "counter",
           "Snapshots this node took of its state machine.", st.snapshots);
    metric(b, "tern_snapshots_installed_total", "counter",
           "Snapshots that replaced this node's state machine (from the leader when "
           "this node was behind, or its own at start).",
           n->stats.snapshots_installed);
    metric_f(b, "tern_snapshot_max_seconds", "gauge",
             "Longest time a snapshot took, from its start to its file written (off the "
             "loop when forked: the stall is below).",
             (double)st.snapshot_max_us / 1e6);
    static const uint64_t stall_us[] = TERN_SNAPSHOT_STALL_BUCKETS_US;
    histogram(b, "tern_snapshot_stall_seconds",
              "Snapshots by how long they stopped the event loop (fork(), or the "
              "whole serialisation when not forked).",
              stall_us, TERN_SNAPSHOT_STALL_BUCKETS, st.snapshot_stall_us,
              st.snapshot_stall_sum_us);
    metric_f(b, "tern_snapshot_stall_max_seconds", "gauge",
             "Longest event-loop stall of one snapshot since start.",
             (double)st.snapshot_stall_max_us / 1e6);
}

static void metrics_raft(struct sbuf *b, const struct tern_admin *a)
{
    const struct tern_node *n = a->node;
    struct tern_cluster_status st;
    tern_cluster_status(n->cluster, &st);
    metric(b, "tern_raft_term", "gauge", "Current Raft term.", st.term);
    metric(b, "tern_raft_last_index", "gauge", "Last Raft log index.", st.last_index);
    metric(b, "tern_raft_applied_index", "gauge", "Last applied Raft log index.",
           st.applied_index);
    metric(b, "tern_raft_leader", "gauge", "Leader node id (0: none).", st.leader);
    metric_head(b, "tern_raft_state", "gauge",
                "1 for this node's Raft state, 0 for the others.");
    static const char *states[] = {"state=\"unavailable\"", "state=\"follower\"",
                                   "state=\"candidate\"", "state=\"leader\""};
    for (int i = 0; i < 4; i++)
        sample(b, "tern_raft_state", states[i], st.state == i);
    metric(b, "tern_raft_pending_proposals", "gauge",
           "This node's proposals not applied yet.", st.pending);
    metric(b, "tern_raft_proposals_applied_total", "counter",
           "This node's proposals applied.", st.proposals);
    metric(b, "tern_raft_entries_appended_total", "counter",
           "Log entries this node appended as leader.", st.entries);
    metric(b, "tern_ready", "gauge", "1 when the node can commit and accepts clients.",
           node_ready(a) && !a->draining);
    metric(b, "tern_draining", "gauge", "1 while the node is drained.", a->draining);
    metric(b, "tern_uptime_seconds", "gauge", "Seconds since the node started.",
           (tern_mono_ms() - a->started_ms) / 1000);
    metric_head(b, "tern_build_info", "gauge", "Version of this ternd.");
    sample(b, "tern_build_info", "version=\"" TERN_VERSION "\"", 1);
}

/* Per member: is its link up, and (on the leader) how many entries it lacks. */
static void metrics_peers(struct sbuf *b, const struct tern_node *n)
{
    struct tern_member_status ms[TERN_CLUSTER_MEMBERS_MAX];
    struct tern_cluster_status st;
    size_t count = tern_cluster_members(n->cluster, ms, TERN_CLUSTER_MEMBERS_MAX);
    tern_cluster_status(n->cluster, &st);
    char label[32];
    bool any = false;
    for (size_t i = 0; i < count; i++)
        any = any || !ms[i].self;
    if (!any)
        return; /* a single node has no peers: no empty families */
    metric_head(b, "tern_peer_up", "gauge", "1 while the link to this member is up.");
    for (size_t i = 0; i < count; i++) {
        snprintf(label, sizeof(label), "peer=\"%u\"", ms[i].id);
        if (!ms[i].self)
            sample(b, "tern_peer_up", label, ms[i].link_up);
    }
    if (st.state != 3)
        return; /* only the leader knows what each member has */
    metric_head(b, "tern_peer_replication_lag_entries", "gauge",
                "Log entries the leader has that this member has not acknowledged.");
    for (size_t i = 0; i < count; i++) {
        snprintf(label, sizeof(label), "peer=\"%u\"", ms[i].id);
        if (!ms[i].self)
            sample(b, "tern_peer_replication_lag_entries", label,
                   st.last_index > ms[i].match_index ? st.last_index - ms[i].match_index
                                                     : 0);
    }
}

/* The process_* metrics of the Prometheus client libraries, from /proc. */
static void metrics_process(struct sbuf *b, const struct tern_admin *a)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    metric_f(b, "process_cpu_seconds_total", "counter", "User and system CPU time spent.",
             (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
                 (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6);
    unsigned long long vm = 0, rss = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        if (fscanf(f, "%llu %llu", &vm, &rss) != 2)
            vm = rss = 0;
        fclose(f);
    }
    uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
    metric(b, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.",
           rss * page);
    metric(b, "process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.",
           vm * page);
    uint64_t fds = 0;
    DIR *d = opendir("/proc/self/fd");
    for (struct dirent *e; d && (e = readdir(d));)
        fds += e->d_name[0] != '.';
    if (d) {
        closedir(d);
        fds--; /* the directory's own descriptor */
    }
    metric(b, "process_open_fds", "gauge", "Number of open file descriptors.", fds);
    struct rlimit rl;
    metric(b, "process_max_fds", "gauge", "Maximum number of open file descriptors.",
           getrlimit(RLIMIT_NOFILE, &rl) == 0 ? (uint64_t)rl.rlim_cur : 0);
    metric_f(b, "process_start_time_seconds", "gauge",
             "Start time of the process since the Unix epoch, in seconds.",
             a->started_unix_s);
    struct statvfs vfs;
    if (statvfs(a->node->cfg.data_dir, &vfs) == 0) {
        metric(b, "tern_data_dir_free_bytes", "gauge",
               "Bytes available to ternd on the data directory's file system.",
               (uint64_t)vfs.f_bavail * vfs.f_frsize);
        metric(b, "tern_data_dir_size_bytes", "gauge",
               "Size of the data directory's file system in bytes.",
               (uint64_t)vfs.f_blocks * vfs.f_frsize);
    }
}

static void get_metrics(struct tern_admin *a, struct tern_http_conn *hc, const char *tail,
                        const char *query)
{
    struct sbuf b = {0};
    metrics_process(&b, a);
    metrics_peers(&b, a->node);
    metrics_node(&b, a->node);
    metrics_fsm(&b, a->node);
    metrics_raft(&b, a);
    metrics_loop(&b, a->node);
    if (b.oom)
        reply_error(hc, 500, NULL, 0, "out of memory");
    else
        tern_http_respond(hc, 200, "text/plain; version=0.0.4; charset=utf-8", NULL, b.p,
                          b.len);
    free(b.p);
}

/* --- leadership, snapshot ---------------------------------------------------------- */

struct transfer_ctx {
    struct tern_admin *admin;
    struct tern_http_conn *hc;
};

static void on_transferred(void *ctx, int status)
{
    struct transfer_ctx *t = ctx;
    struct tern_cluster_status st;
    tern_cluster_status(t->admin->node->cluster, &st);
    if (status == TERN_OK) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "leader", st.leader);
        cJSON_AddNumberToObject(o, "term", (double)st.term);
        reply_json(t->hc, 200, o);
    } else {
        reply_error(t->hc, 409, "leader", st.leader, "leadership did not move (%s)",
                    tern_strerror(status));
    }
    tern_http_release(t->hc);
    free(t);
}

static bool is_member(const struct tern_node *n, uint32_t id)
{
    struct tern_member_status ms[TERN_CLUSTER_MEMBERS_MAX];
    size_t count = tern_cluster_members(n->cluster, ms, TERN_CLUSTER_MEMBERS_MAX);
    for (size_t i = 0; i < count; i++)
        if (ms[i].id == id)
            return true;
    return false;
}

static void post_transfer(struct tern_admin *a, struct tern_http_conn *hc,
                          const char *tail, const char *query)
{
    struct tern_node *n = a->node;
    uint64_t to = 0;
    if (query_uint(query, "to", UINT32_MAX, &to) < 0) {
        reply_error(hc, 400, NULL, 0, "to: must be a node id");
        return;
    }
    struct tern_cluster_status st;
    tern_cluster_status(n->cluster, &st);
    if (st.state != 3) {
        reply_error(hc, 409, "leader", st.leader,
                    "node %u is not the leader: ask the leader (node %u)", n->cfg.node_id,
                    st.leader);
        return;
    }
    if (to == n->cfg.node_id) {
        reply_error(hc, 400, "leader", st.leader, "node %u is already the leader",
                    n->cfg.node_id);
        return;
    }
    if (to && !is_member(n, (uint32_t)to)) {
        reply_error(hc, 404, NULL, 0, "no member %" PRIu64, to);
        return;
    }
    struct transfer_ctx *t = malloc(sizeof(*t));
    if (!t) {
        reply_error(hc, 500, NULL, 0, "out of memory");
        return;
    }
    *t = (struct transfer_ctx){a, hc};
    tern_http_hold(hc);
    int rv = tern_cluster_transfer(n->cluster, (uint32_t)to, on_transferred, t);
    if (rv != TERN_OK) {
        reply_error(hc, 409, "leader", st.leader,
                    "cannot transfer leadership: no other voter can take it (%s)",
                    tern_strerror(rv));
        tern_http_release(hc);
        free(t);
        return;
    }
    TERN_LOGI("admin: transferring leadership to %s%" PRIu64, to ? "node " : "any voter",
              to);
}

static void on_snapshot_barrier(void *ctx, int status, const struct tern_fsm_result *res)
{
    (void)res;
    struct transfer_ctx *t = ctx;
    if (status != TERN_OK) {
        reply_error(t->hc, 503, NULL, 0, "not applied: %s", tern_strerror(status));
    } else {
        struct tern_cluster_status st;
        tern_cluster_status(t->admin->node->cluster, &st);
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "snapshot", "requested");
        cJSON_AddNumberToObject(o, "applied_index", (double)st.applied_index);
        reply_json(t->hc, 202, o);
    }
    tern_http_release(t->hc);
    free(t);
}

static void on_digest(void *ctx, int status, uint64_t index, uint32_t crc, uint64_t bytes,
                      const char *errmsg)
{
    struct tern_http_conn *hc = ctx;
    if (status != TERN_OK) {
        reply_error(hc, 500, NULL, 0, "cannot serialise the state: %s", errmsg);
    } else {
        char hex[9];
        snprintf(hex, sizeof(hex), "%08x", (unsigned)crc);
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "applied_index", (double)index);
        cJSON_AddStringToObject(o, "crc32c", hex);
        cJSON_AddNumberToObject(o, "bytes", (double)bytes);
        reply_json(hc, 200, o);
    }
    tern_http_release(hc);
}

/* The replicated state's digest at this node's applied index: replicas at the
 * same index must give the same one (serialised off the loop). */
static void get_state_digest(struct tern_admin *a, struct tern_http_conn *hc,
                             const char *tail, const char *query)
{
    char errmsg[TERN_ERRMSG_SIZE] = "";
    tern_http_hold(hc);
    if (tern_cluster_state_digest(a->node->cluster, a->node->loop, on_digest, hc,
                                  errmsg) != TERN_OK) {
        reply_error(hc, 503, NULL, 0, "cannot serialise the state: %s", errmsg);
        tern_http_release(hc);
    }
}

/* Answers once the entry that triggers the snapshot has applied. */
static void post_snapshot(struct tern_admin *a, struct tern_http_conn *hc,
                          const char *tail, const char *query)
{
    struct transfer_ctx *t = malloc(sizeof(*t));
    if (!t) {
        reply_error(hc, 500, NULL, 0, "out of memory");
        return;
    }
    *t = (struct transfer_ctx){a, hc};
    tern_http_hold(hc);
    int rv = tern_cluster_snapshot_soon(a->node->cluster, on_snapshot_barrier, t);
    if (rv != TERN_OK) {
        reply_error(hc, 503, NULL, 0, "cannot propose: %s", tern_strerror(rv));
        tern_http_release(hc);
        free(t);
        return;
    }
    TERN_LOGI("admin: snapshot requested");
}

/* --- membership ------------------------------------------------------------------ */

struct member_ctx {
    struct tern_admin *admin;
    struct tern_http_conn *hc;
    uint32_t id;
    bool add;
};

/* A voter already (a spare left by an add that did not finish may be added
 * again: it is then only promoted). */
static bool is_voter(const struct tern_node *n, uint32_t id)
{
    struct tern_member_status ms[TERN_CLUSTER_MEMBERS_MAX];
    size_t count = tern_cluster_members(n->cluster, ms, TERN_CLUSTER_MEMBERS_MAX);
    for (size_t i = 0; i < count; i++)
        if (ms[i].id == id)
            return ms[i].role == 1;
    return false;
}

/* Answers a failed membership change: who to ask, or what was wrong. */
static void member_error(struct tern_node *n, struct tern_http_conn *hc, uint32_t id,
                         int status)
{
    struct tern_cluster_status st;
    tern_cluster_status(n->cluster, &st);
    if (status == TERN_ENOTLEADER)
        reply_error(hc, 409, "leader", st.leader,
                    "node %u is not the leader: ask the leader (node %u)", n->cfg.node_id,
                    st.leader);
    else if (status == TERN_EAGAIN)
        reply_error(hc, 409, "leader", st.leader,
                    "another membership change is in progress: try again");
    else if (status == TERN_ENOTFOUND)
        reply_error(hc, 404, NULL, 0, "no member %u", id);
    else if (status == TERN_EINVAL)
        reply_error(hc, 400, NULL, 0, "member %u: bad id or address", id);
    else if (status == TERN_EIO)
        reply_error(hc, 503, NULL, 0,
                    "node %u did not catch up: is it running, with join? It stays a "
                    "spare; add it again to retry",
                    id);
    else
        reply_error(hc, 503, NULL, 0, "member %u: %s", id, tern_strerror(status));
}

static void on_member_changed(void *ctx, int status)
{
    struct member_ctx *m = ctx;
    if (status == TERN_OK) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "id", m->id);
        cJSON_AddStringToObject(o, "member", m->add ? "added" : "removed");
        reply_json(m->hc, 200, o);
        TERN_LOGI("admin: node %u %s", m->id, m->add ? "added" : "removed");
    } else {
        member_error(m->admin->node, m->hc, m->id, status);
    }
    tern_http_release(m->hc);
    free(m);
}

static bool require_leader(struct tern_node *n, struct tern_http_conn *hc)
{
    struct tern_cluster_status st;
    tern_cluster_status(n->cluster, &st);
    if (st.state == 3)
        return true;
    member_error(n, hc, 0, TERN_ENOTLEADER);
    return false;
}

/* Query parameter `name` as a member address; false (answered 400) if bad. */
static bool member_addr(struct tern_http_conn *hc, const char *query, const char *name,
                        bool required, char *out, size_t cap)
{
    int rv = query_get(query, name, out, cap);
    if (rv == 0 && !required) {
        out[0] = '\0';
        return true;
    }
    if (rv <= 0 || !strchr(out, ':')) {
        reply_error(hc, 400, NULL, 0, "%s: must be HOST:PORT (IPv4)", name);
        return false;
    }
    return true;
}

static struct member_ctx *member_ctx_new(struct tern_admin *a, struct tern_http_conn *hc,
                                         uint32_t id, bool add)
{
    struct member_ctx *m = malloc(sizeof(*m));
    if (!m) {
        reply_error(hc, 500, NULL, 0, "out of memory");
        return NULL;
    }
    *m = (struct member_ctx){a, hc, id, add};
    tern_http_hold(hc);
    return m;
}

/* POST /members?id=N&raft=H:P&peer=H:P&mqtt=H:P (leader only). Answers once the
 * node is a voter: it has caught up. */
static void post_members(struct tern_admin *a, struct tern_http_conn *hc,
                         const char *tail, const char *query)
{
    (void)tail;
    struct tern_node *n = a->node;
    struct tern_member mb = {0};
    uint64_t id = 0;
    if (query_uint(query, "id", TERN_NODE_ID_MAX, &id) <= 0 || id == 0) {
        reply_error(hc, 400, NULL, 0, "id: must be a node id (1 to %u)",
                    TERN_NODE_ID_MAX);
        return;
    }
    mb.id = (uint32_t)id;
    if (!member_addr(hc, query, "raft", true, mb.raft, sizeof(mb.raft)) ||
        !member_addr(hc, query, "peer", true, mb.peer, sizeof(mb.peer)) ||
        !member_addr(hc, query, "mqtt", false, mb.mqtt, sizeof(mb.mqtt)) ||
        !require_leader(n, hc))
        return;
    if (is_voter(n, mb.id)) {
        reply_error(hc, 409, NULL, 0, "node %u is already a member", mb.id);
        return;
    }
    struct member_ctx *m = member_ctx_new(a, hc, mb.id, true);
    if (!m)
        return;
    int rv = tern_cluster_add_member(n->cluster, &mb, on_member_changed, m);
    if (rv != TERN_OK) {
        member_error(n, hc, mb.id, rv);
        tern_http_release(hc);
        free(m);
        return;
    }
    TERN_LOGI("admin: adding node %u (raft %s, peer %s)", mb.id, mb.raft, mb.peer);
}

/* DELETE /members/ID (leader only). */
static void delete_member(struct tern_admin *a, struct tern_http_conn *hc,
                          const char *tail, const char *query)
{
    (void)query;
    struct tern_node *n = a->node;
    char *end;
    unsigned long long id = strtoull(tail, &end, 10);
    if (tail[0] < '0' || tail[0] > '9' || *end || id == 0 || id > TERN_NODE_ID_MAX) {
        reply_error(hc, 400, NULL, 0, "member id: must be a node id");
        return;
    }
    if (!require_leader(n, hc))
        return;
    if (!is_member(n, (uint32_t)id)) {
        reply_error(hc, 404, NULL, 0, "no member %llu", id);
        return;
    }
    char why[160];
    if (tern_cluster_removal_check(n->cluster, (uint32_t)id, why, sizeof(why)) !=
        TERN_OK) {
        reply_error(hc, 409, NULL, 0, "%s", why);
        return;
    }
    struct member_ctx *m = member_ctx_new(a, hc, (uint32_t)id, false);
    if (!m)
        return;
    int rv = tern_cluster_remove_member(n->cluster, (uint32_t)id, on_member_changed, m);
    if (rv != TERN_OK) {
        member_error(n, hc, (uint32_t)id, rv);
        tern_http_release(hc);
        free(m);
        return;
    }
    TERN_LOGI("admin: removing node %llu", id);
}

/* --- drain -------------------------------------------------------------------- */

/* MQTT address of another member for clients to move to ("" if none): one whose
 * link is up if possible. */
static const char *other_member(const struct tern_node *n)
{
    struct tern_member_status ms[TERN_CLUSTER_MEMBERS_MAX];
    size_t count = tern_cluster_members(n->cluster, ms, TERN_CLUSTER_MEMBERS_MAX);
    const char *any = "";
    for (uint32_t i = 0; i < n->cfg.member_count; i++) {
        const struct tern_member *m = &n->cfg.members[i];
        if (m->id == n->cfg.node_id || !m->mqtt[0])
            continue;
        for (size_t j = 0; j < count; j++)
            if (ms[j].id == m->id && ms[j].link_up)
                return m->mqtt;
        if (!any[0])
            any = m->mqtt;
    }
    return any;
}

static void set_server_reference(struct tern_props *pr, const char *ref)
{
    if (!ref[0])
        return;
    pr->mask |= TERN_PROP_BIT(TERN_PROP_SERVER_REFERENCE);
    pr->server_reference =
        (struct tern_bytes){(const uint8_t *)ref, (uint32_t)strlen(ref)};
}

/* Closes every client connection: MQTT 5 clients are told to use another server. */
static unsigned drain_connections(struct tern_node *n, const char *ref)
{
    unsigned closed = 0;
    /* Closing is asynchronous: the list does not change while we walk it. */
    for (struct tern_conn *c = n->conns; c; c = c->next) {
        if (c->state == TERN_CONN_CLOSING)
            continue;
        if (c->state == TERN_CONN_ACTIVE && c->version == TERN_MQTT_5 &&
            !c->disconnect_sent) {
            struct tern_packet p = {.type = TERN_DISCONNECT};
            p.u.disconnect.reason = TERN_RC_USE_ANOTHER_SERVER;
            set_server_reference(&p.u.disconnect.props, ref);
            tern_conn_send(c, &p);
            c->disconnect_sent = true;
        }
        tern_conn_close(c, TERN_RC_USE_ANOTHER_SERVER, "node drained by admin");
        closed++;
    }
    return closed;
}

/* The node named by ?node=ID must be this one; false if answered. */
static bool drain_target_ok(struct tern_admin *a, struct tern_http_conn *hc,
                            const char *query)
{
    uint64_t id = 0;
    if (query_uint(query, "node", UINT32_MAX, &id) != 1) {
        reply_error(hc, 400, NULL, 0, "node: the id of this node is required (?node=ID)");
        return false;
    }
    if (id != a->node->cfg.node_id) {
        reply_error(hc, 409, "node", (double)id,
                    "this is node %u: ask node %" PRIu64 "'s admin API to drain it",
                    a->node->cfg.node_id, id);
        return false;
    }
    return true;
}

static void post_drain(struct tern_admin *a, struct tern_http_conn *hc, const char *tail,
                       const char *query)
{
    if (!drain_target_ok(a, hc, query))
        return;
    const char *ref = other_member(a->node);
    a->draining = true;
    unsigned closed = drain_connections(a->node, ref);
    TERN_LOGI("admin: node drained: %u connections closed, new ones refused%s%s", closed,
              ref[0] ? "; clients sent to " : "", ref);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddBoolToObject(o, "draining", true);
    cJSON_AddNumberToObject(o, "closed", closed);
    if (ref[0])
        cJSON_AddStringToObject(o, "server_reference", ref);
    else
        cJSON_AddNullToObject(o, "server_reference");
    reply_json(hc, 200, o);
}

static void post_undrain(struct tern_admin *a, struct tern_http_conn *hc,
                         const char *tail, const char *query)
{
    if (!drain_target_ok(a, hc, query))
        return;
    if (a->draining)
        TERN_LOGI("admin: node undrained: accepting clients again");
    a->draining = false;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddBoolToObject(o, "draining", false);
    reply_json(hc, 200, o);
}

/* While drained, CONNECT is refused by the normal handler (handle_connect.c):
 * these tell it so and where to send MQTT 5 clients. */
bool tern_admin_draining(const struct tern_node *n)
{
    return n->admin && n->admin->draining;
}

const char *tern_admin_server_reference(const struct tern_node *n)
{
    return other_member(n);
}

/* --- $SYS topics ----------------------------------------------------------------- */

/* Publishes one $SYS topic to this node's clean-session subscribers. */
static void sys_publish(struct tern_node *n, const char *topic, const char *fmt, ...)
    TERN_PRINTF(3, 4);
static void sys_publish(struct tern_node *n, const char *topic, const char *fmt, ...)
{
    if (!tern_fsm_has_subscriber(n->local, topic, strlen(topic)))
        return;
    char payload[128];
    va_list ap;
    va_start(ap, fmt);
    int len = vsnprintf(payload, sizeof(payload), fmt, ap);
    va_end(ap);
    struct tern_cmd_msg m = {
        .topic = {(const uint8_t *)topic, (uint32_t)strlen(topic)},
        .payload = {(const uint8_t *)payload, (uint32_t)len},
    };
    tern_deliver_to_local(n, &m, NULL, 0);
}

static void on_sys_timer(uv_timer_t *t)
{
    struct tern_admin *a = t->data;
    struct tern_node *n = a->node;
    const struct tern_node_stats *s = &n->stats;
    struct tern_cluster_status st;
    tern_cluster_status(n->cluster, &st);
    unsigned connected = 0;
    for (struct tern_conn *c = n->conns; c; c = c->next)
        connected += c->state == TERN_CONN_ACTIVE;
    sys_publish(n, "$SYS/broker/version", "tern %s", TERN_VERSION);
    sys_publish(n, "$SYS/broker/uptime", "%" PRIu64 " seconds",
                (tern_mono_ms() - a->started_ms) / 1000);
    sys_publish(n, "$SYS/broker/clients/connected", "%u", connected);
    sys_publish(n, "$SYS/broker/messages/received", "%" PRIu64,
                s->msgs_in[0] + s->msgs_in[1] + s->msgs_in[2]);
    sys_publish(n, "$SYS/broker/messages/sent", "%" PRIu64,
                s->msgs_out[0] + s->msgs_out[1] + s->msgs_out[2]);
    sys_publish(n, "$SYS/broker/tern/raft/term", "%" PRIu64, st.term);
    sys_publish(n, "$SYS/broker/tern/raft/leader", "%" PRIu32, st.leader);
}

/* --- routing ---------------------------------------------------------------------- */

typedef void (*admin_fn)(struct tern_admin *a, struct tern_http_conn *hc,
                         const char *tail, const char *query);

/* What SIGHUP does (node/reload.c, node/access.c): log level and log file from
 * the config again, the TLS files of every mqtts listener, the password, ACL
 * and token files. */
static void post_reload(struct tern_admin *a, struct tern_http_conn *hc, const char *tail,
                        const char *query)
{
    uint32_t reloaded = 0;
    char errmsg[TERN_ERRMSG_SIZE] = "";
    TERN_LOGI("admin: reloading");
    if (tern_node_reload(a->node, &reloaded, errmsg) != TERN_OK) {
        reply_error(hc, 422, "reloaded", reloaded, "%s", errmsg);
        return;
    }
    /* The password, ACL and token files too (access.c), as SIGHUP does. */
    if (tern_access_reload(a->node) != TERN_OK) {
        reply_error(hc, 422, "reloaded", reloaded,
                    "a password, ACL or token file does not parse (see the log): kept "
                    "the files loaded before");
        return;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "reloaded", reloaded);
    cJSON_AddStringToObject(o, "log_level", tern_log_level_name(a->node->cfg.log_level));
    cJSON_AddStringToObject(o, "log_file",
                            a->node->cfg.log_file[0] ? a->node->cfg.log_file : "stderr");
    reply_json(hc, 200, o);
}

struct admin_route {
    const char *method;
    const char *path; /* ending in '/': a prefix followed by one argument */
    admin_fn fn;
};

static const struct admin_route routes[] = {
    {"GET", "/cluster", get_cluster},
    {"GET", "/health", get_health},
    {"GET", "/clients", get_clients},
    {"GET", "/sessions", get_sessions},
    {"GET", "/sessions/", get_session},
    {"DELETE", "/sessions/", delete_session},
    {"GET", "/subscriptions", get_subscriptions},
    {"GET", "/retained", get_retained},
    {"DELETE", "/retained/", delete_retained},
    {"GET", "/metrics", get_metrics},
    {"POST", "/transfer-leader", post_transfer},
    {"POST", "/snapshot", post_snapshot},
    {"GET", "/state/digest", get_state_digest},
    {"POST", "/reload", post_reload},
    {"POST", "/drain", post_drain},
    {"POST", "/undrain", post_undrain},
    {"POST", "/members", post_members},
    {"DELETE", "/members/", delete_member},
};

/* Does path match the route's path? Sets *tail to the argument of a prefix route. */
static bool path_matches(const char *route, const char *path, const char **tail)
{
    size_t rl = strlen(route);
    if (route[rl - 1] != '/') {
        *tail = "";
        return strcmp(route, path) == 0;
    }
    *tail = path + rl;
    return strncmp(route, path, rl) == 0 && path[rl] != '\0';
}

/* The request's "Authorization: Bearer TOKEN" is the configured token. */
static bool authorized(const struct tern_admin *a, const struct tern_http_req *req)
{
    const char *token = tern_access_admin_token(a->node);
    if (!token[0])
        return true;
    for (const char *p = req->headers; p && *p;
         p = strstr(p, "\r\n"), p = p ? p + 2 : p) {
        if (strncasecmp(p, "Authorization:", 14) != 0)
            continue;
        p += 14;
        while (*p == ' ' || *p == '\t')
            p++;
        if (strncasecmp(p, "Bearer ", 7) != 0)
            return false;
        p += 7;
        const char *end = strstr(p, "\r\n");
        size_t len = end ? (size_t)(end - p) : strlen(p);
        while (len && (p[len - 1] == ' ' || p[len - 1] == '\t'))
            len--;
        return tern_token_equal(p, len, token, strlen(token));
    }
    return false;
}

static void on_request(void *ctx, struct tern_http_conn *hc,
                       const struct tern_http_req *req)
{
    struct tern_admin *a = ctx;
    char allow[64] = "";
    /* /health stays open: load balancers and orchestrators probe it. */
    if (strcmp(req->path, "/health") != 0 && !authorized(a, req)) {
        a->unauthorized++;
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "error",
                                "missing or wrong bearer token (Authorization: Bearer "
                                "TOKEN; ternctl --token-file FILE or TERN_ADMIN_TOKEN)");
        reply_json_h(hc, 401, o, "WWW-Authenticate: Bearer realm=\"tern\"\r\n");
        return;
    }
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
        const char *tail;
        if (!path_matches(routes[i].path, req->path, &tail))
            continue;
        if (strcmp(routes[i].method, req->method) == 0) {
            TERN_LOGD("admin: %s %s", req->method, req->path);
            routes[i].fn(a, hc, tail, req->query);
            return;
        }
        size_t l = strlen(allow);
        snprintf(allow + l, sizeof(allow) - l, "%s%s", l ? ", " : "", routes[i].method);
    }
    if (allow[0]) {
        char msg[400], hdr[96];
        snprintf(msg, sizeof(msg), "%s is not allowed on %.200s (allowed: %s)",
                 req->method, req->path, allow);
        snprintf(hdr, sizeof(hdr), "Allow: %s\r\n", allow);
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "error", msg);
        reply_json_h(hc, 405, o, hdr);
    } else
        reply_error(hc, 404, NULL, 0, "no endpoint %.200s", req->path);
}

/* --- lifetime ---------------------------------------------------------------------- */

int tern_admin_start(struct tern_node *n, char *errmsg)
{
    struct tern_admin *a = calloc(1, sizeof(*a));
    if (!a) {
        snprintf(errmsg, TERN_ERRMSG_SIZE, "admin: out of memory");
        return TERN_ENOMEM;
    }
    a->node = n;
    a->started_ms = tern_mono_ms();
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    a->started_unix_s = (double)now.tv_sec + (double)now.tv_nsec / 1e9;
    n->admin = a;
    int rv = tern_http_start(&a->http, n->loop, n->cfg.admin_listen, on_request, a,
                             a->bound, sizeof(a->bound), errmsg);
    if (rv != TERN_OK)
        return rv;
    TERN_LOGI("admin API listening on %s", a->bound);
    if (n->cfg.sys_interval_s) {
        uint64_t ms = (uint64_t)n->cfg.sys_interval_s * 1000;
        uv_timer_init(n->loop, &a->sys_timer);
        a->sys_timer.data = a;
        uv_timer_start(&a->sys_timer, on_sys_timer, ms, ms);
        a->sys_started = true;
    }
    return TERN_OK;
}

void tern_admin_stop(struct tern_node *n)
{
    struct tern_admin *a = n->admin;
    if (!a)
        return;
    tern_http_stop(a->http);
    a->http = NULL;
    if (a->sys_started)
        uv_close((uv_handle_t *)&a->sys_timer, NULL);
    a->sys_started = false;
}

void tern_admin_free(struct tern_node *n)
{
    free(n->admin);
    n->admin = NULL;
}
