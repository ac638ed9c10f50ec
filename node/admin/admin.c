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
#include "admin_internal.h"

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

void admin_reply_json(struct tern_http_conn *hc, int status, cJSON *o)
{
    reply_json_h(hc, status, o, NULL);
}

/* {"error": "...", key: num}; key NULL for none. */
void admin_reply_error(struct tern_http_conn *hc, int status, const char *key, double num,
                       const char *fmt, ...)
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
    admin_reply_json(hc, status, o);
}

/* Adds a byte string (client id, topic) as a JSON string. */
void admin_add_bytes(cJSON *o, const char *key, struct tern_bytes b)
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
int admin_query_get(const char *query, const char *name, char *out, size_t cap)
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
int admin_query_uint(const char *query, const char *name, uint64_t max, uint64_t *out)
{
    char buf[32];
    int rv = admin_query_get(query, name, buf, sizeof(buf));
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
bool admin_list_limit(struct tern_http_conn *hc, const char *query, size_t *limit)
{
    uint64_t v = LIST_LIMIT_DEFAULT;
    if (admin_query_uint(query, "limit", LIST_LIMIT_MAX, &v) < 0 || v == 0) {
        admin_reply_error(hc, 400, NULL, 0, "limit: must be an integer from 1 to %d",
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

bool admin_node_ready(const struct tern_admin *a)
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
    cJSON_AddBoolToObject(o, "ready", admin_node_ready(a));
    cJSON_AddBoolToObject(o, "draining", a->node->draining);
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
    admin_reply_json(hc, 200, o);
}

static void get_health(struct tern_admin *a, struct tern_http_conn *hc, const char *tail,
                       const char *query)
{
    struct tern_cluster_status st;
    tern_cluster_status(a->node->cluster, &st);
    bool ready = admin_node_ready(a) && !a->node->draining;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddBoolToObject(o, "live", true);
    cJSON_AddBoolToObject(o, "ready", ready);
    cJSON_AddNumberToObject(o, "node_id", a->node->cfg.node_id);
    cJSON_AddNumberToObject(o, "leader", st.leader);
    cJSON_AddBoolToObject(o, "draining", a->node->draining);
    admin_reply_json(hc, ready ? 200 : 503, o);
}

/* --- routing ---------------------------------------------------------------------- */

typedef void (*admin_fn)(struct tern_admin *a, struct tern_http_conn *hc,
                         const char *tail, const char *query);

/* What SIGHUP does (node/reload.c, node/mqtt/access.c): log level and log file from
 * the config again, the TLS files of every mqtts listener, the password, ACL
 * and token files. */
static void post_reload(struct tern_admin *a, struct tern_http_conn *hc, const char *tail,
                        const char *query)
{
    uint32_t reloaded = 0;
    char errmsg[TERN_ERRMSG_SIZE] = "";
    TERN_LOGI("admin: reloading");
    if (tern_node_reload(a->node, &reloaded, errmsg) != TERN_OK) {
        admin_reply_error(hc, 422, "reloaded", reloaded, "%s", errmsg);
        return;
    }
    /* The password, ACL and token files too (access.c), as SIGHUP does. */
    if (tern_access_reload(a->node) != TERN_OK) {
        admin_reply_error(
            hc, 422, "reloaded", reloaded,
            "a password, ACL or token file does not parse (see the log): kept "
            "the files loaded before");
        return;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "reloaded", reloaded);
    cJSON_AddStringToObject(o, "log_level", tern_log_level_name(a->node->cfg.log_level));
    cJSON_AddStringToObject(o, "log_file",
                            a->node->cfg.log_file[0] ? a->node->cfg.log_file : "stderr");
    admin_reply_json(hc, 200, o);
}

struct admin_route {
    const char *method;
    const char *path; /* ending in '/': a prefix followed by one argument */
    admin_fn fn;
};

static const struct admin_route routes[] = {
    {"GET", "/cluster", get_cluster},
    {"GET", "/health", get_health},
    {"GET", "/clients", admin_get_clients},
    {"GET", "/sessions", admin_get_sessions},
    {"GET", "/sessions/", admin_get_session},
    {"DELETE", "/sessions/", admin_delete_session},
    {"GET", "/subscriptions", admin_get_subscriptions},
    {"GET", "/retained", admin_get_retained},
    {"DELETE", "/retained/", admin_delete_retained},
    {"GET", "/metrics", admin_get_metrics},
    {"POST", "/transfer-leader", admin_post_transfer},
    {"POST", "/snapshot", admin_post_snapshot},
    {"GET", "/state/digest", admin_get_state_digest},
    {"POST", "/reload", post_reload},
    {"POST", "/drain", admin_post_drain},
    {"POST", "/undrain", admin_post_undrain},
    {"POST", "/members", admin_post_members},
    {"DELETE", "/members/", admin_delete_member},
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
        admin_reply_error(hc, 404, NULL, 0, "no endpoint %.200s", req->path);
}

/* --- lifetime ---------------------------------------------------------------------- */

/* admin_tls_cert_file / key_file / ca_file: the HTTPS context, or NULL for HTTP.
 * The messages name the key ("admin_tls_cert_file: ..."). */
int tern_admin_tls_load(const struct tern_config *cfg, struct tern_tls_ctx **out,
                        char *errmsg)
{
    *out = NULL;
    if (!cfg->admin_tls_cert_file[0] && !cfg->admin_tls_key_file[0]) {
        if (cfg->admin_tls_ca_file[0]) {
            snprintf(
                errmsg, TERN_ERRMSG_SIZE,
                "admin_tls_ca_file: needs admin_tls_cert_file and admin_tls_key_file");
            return TERN_EINVAL;
        }
        return TERN_OK;
    }
    struct tern_tls_opts o = {
        .server = true,
        .cert_file = cfg->admin_tls_cert_file,
        .key_file = cfg->admin_tls_key_file,
        .ca_file = cfg->admin_tls_ca_file,
        .require_certificate = cfg->admin_tls_ca_file[0] != '\0',
        .min_version = TERN_TLS_1_2,
    };
    char why[TERN_ERRMSG_SIZE];
    int rc = tern_tls_ctx_new(out, &o, why);
    if (rc != TERN_OK)
        snprintf(errmsg, TERN_ERRMSG_SIZE, "admin_tls_%.200s", why);
    return rc;
}

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
    struct tern_tls_ctx *tls = NULL;
    int rv = tern_admin_tls_load(&n->cfg, &tls, errmsg);
    if (rv != TERN_OK)
        return rv;
    rv = tern_http_start(&a->http, n->loop, n->cfg.admin_listen, tls, on_request, a,
                         a->bound, sizeof(a->bound), errmsg);
    if (rv != TERN_OK)
        return rv;
    TERN_LOGI("admin API listening on %s%s", a->bound, tls ? " (HTTPS)" : "");
    if (n->cfg.sys_interval_s) {
        uint64_t ms = (uint64_t)n->cfg.sys_interval_s * 1000;
        uv_timer_init(n->loop, &a->sys_timer);
        a->sys_timer.data = a;
        uv_timer_start(&a->sys_timer, admin_on_sys_timer, ms, ms);
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
