/* Who may connect: the node's side of client authentication (tern/auth.h holds
 * the pure parts). Loads password_file at start and on SIGHUP, decides
 * allow_anonymous, and checks each CONNECT's user name and password, slowing
 * repeated failures from one source address. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sys/random.h>

#include "access_int.h"
#include "tern/frontend.h"
#include "tern/addr.h"
#include "tern/auth.h"
#include "tern/cmd.h"
#include "tern/hmap.h"
#include "tern/log.h"
#include "tern/storage.h"
#include "tern/topic.h"

/* Loopback: 127.0.0.0/8, ::1, localhost. Anything else reaches the network. */
static bool loopback_host(const char *hostport)
{
    char host[TERN_CONFIG_STR_MAX];
    uint16_t port;
    if (tern_addr_split(hostport, host, sizeof host, &port) != TERN_OK)
        return false;
    return strncmp(host, "127.", 4) == 0 || strcmp(host, "::1") == 0 ||
           strcmp(host, "localhost") == 0;
}

/* Mosquitto 2.0's rule: anonymous clients only where nothing says otherwise and
 * no one off this machine can reach the listener. */
static bool decide_anonymous(const struct tern_config *cfg)
{
    if (cfg->allow_anonymous == TERN_ANON_TRUE)
        return true;
    if (cfg->allow_anonymous == TERN_ANON_FALSE)
        return false;
    if (cfg->password_file[0] != '\0')
        return false;
    if (strcmp(cfg->listen, "none") != 0 && !loopback_host(cfg->listen))
        return false;
    for (uint32_t i = 0; i < cfg->listener_count; i++)
        if (!loopback_host(cfg->listeners[i].bind))
            return false;
    return true;
}

static bool loopback_peer(const struct tern_conn_addr *p)
{
    static const uint8_t one[16] = {[15] = 1};
    return (p->family == 4 && p->addr[0] == 127) ||
           (p->family == 6 && memcmp(p->addr, one, 16) == 0);
}

/* Behind a proxy_protocol listener the listener's address says nothing about
 * where clients are (a balancer on this machine may forward from anywhere), so
 * the auto rule looks at the client's address from the PROXY header instead:
 * anonymous only from loopback, and not when the header named no address. An
 * explicit true or false is the operator's and stands. */
static bool anonymous_for(const struct tern_access *a, const struct tern_conn *c)
{
    if (!a->anonymous || !c->proxied || c->node->cfg.allow_anonymous != TERN_ANON_AUTO)
        return a->anonymous;
    return c->proxy_addr && loopback_peer(&c->peer);
}

int tern_access_init(struct tern_node *n, char *errmsg)
{
    struct tern_access *a = calloc(1, sizeof *a);
    if (!a)
        return TERN_ENOMEM;
    uint64_t seed[2] = {0, 0};
    if (getrandom(seed, sizeof seed, 0) != (ssize_t)sizeof seed) {
        /* The seed only spreads addresses; without it the table still works. */
        seed[0] = tern_mono_ms();
        seed[1] = (uint64_t)(uintptr_t)a;
    }
    tern_guard_init(&a->guard, seed[0], seed[1]);
    uint64_t seed2[2] = {seed[0] ^ 0x9e3779b97f4a7c15ULL, seed[1] + 1};
    if (getrandom(seed2, sizeof seed2, 0) != (ssize_t)sizeof seed2) {
        /* as above: only the spread suffers */
    }
    tern_rate_init(&a->rate, seed2[0], seed2[1]);
    if (getrandom(a->scram_secret, sizeof a->scram_secret, 0) !=
        (ssize_t)sizeof a->scram_secret) {
        /* Unknown users' made-up salts then repeat across restarts, no worse. */
        memcpy(a->scram_secret, seed, sizeof seed);
        memcpy(a->scram_secret + sizeof seed, seed2, sizeof seed2);
    }
    a->anonymous = decide_anonymous(&n->cfg);
    a->acl_gen = 1;
    /* Here, before any listener: a bad token file stops the start. */
    if (n->cfg.admin_token_file[0]) {
        int rc = tern_token_load(n->cfg.admin_token_file, a->admin_token, errmsg);
        if (rc != TERN_OK) {
            free(a);
            return rc;
        }
    }
    const char *path = n->cfg.password_file;
    if (path[0]) {
        int rc = tern_pwfile_load(path, &a->pw, errmsg);
        if (rc != TERN_OK) {
            free(a);
            return rc;
        }
        tern_file_digest(path, a->pw_digest);
        TERN_LOGI("password file %s: %zu users", path, tern_pwfile_count(a->pw));
    }
    if (n->cfg.acl_file[0]) {
        int rc = tern_acl_load(n->cfg.acl_file, &a->acl, errmsg);
        if (rc != TERN_OK) {
            tern_pwfile_free(a->pw);
            free(a);
            return rc;
        }
        tern_file_digest(n->cfg.acl_file, a->acl_digest);
        TERN_LOGI("ACL file %s: %zu rules", n->cfg.acl_file, tern_acl_rule_count(a->acl));
    }
    if (a->anonymous && n->cfg.allow_anonymous == TERN_ANON_TRUE)
        TERN_LOGW("allow_anonymous: clients without a user name may connect");
    n->access = a;
    return TERN_OK;
}

static int addr_free_visit(void *ctx, void *item)
{
    (void)ctx;
    free(item);
    return 0;
}

void tern_access_free(struct tern_node *n)
{
    if (!n->access)
        return;
    struct tern_access *a = n->access;
    tern_hmap_walk(&a->by_addr, addr_free_visit, NULL);
    tern_hmap_free(&a->by_addr);
    tern_pwfile_free(a->pw);
    tern_acl_free(a->acl);
    tern_access_publish_free(a);
    free(a);
    n->access = NULL;
}

static int reload_acl(struct tern_node *n)
{
    struct tern_access *a = n->access;
    const char *path = n->cfg.acl_file;
    if (!path[0])
        return TERN_OK;
    char err[TERN_ERRMSG_SIZE];
    struct tern_acl *acl;
    int rc = tern_acl_load(path, &acl, err);
    if (rc != TERN_OK) {
        a->stats.reload_failures++;
        TERN_LOGW("reload: %s; keeping the %zu rules loaded before", err,
                  tern_acl_rule_count(a->acl));
        return rc;
    }
    tern_acl_free(a->acl);
    a->acl = acl;
    /* Connections cached "every subscription readable" under the old rules. A
     * connection's copy is 16 bits: at the wrap (every 65,535 reloads) they are
     * all reset, so an old value never matches again. */
    if (++a->acl_gen == 0) {
        a->acl_gen = 1;
        for (struct tern_conn *c = n->conns; c; c = c->next)
            c->acl_gen = 0;
    }
    tern_file_digest(path, a->acl_digest);
    a->stats.reloads++;
    TERN_LOGI("reload: ACL file %s: %zu rules", path, tern_acl_rule_count(acl));
    return TERN_OK;
}

static int reload_pw(struct tern_node *n);

int tern_access_reload(struct tern_node *n)
{
    if (!n->access)
        return TERN_OK;
    int rc = reload_pw(n);
    int rc2 = reload_acl(n);
    if (n->cfg.admin_token_file[0]) {
        char err[TERN_ERRMSG_SIZE], tok[TERN_TOKEN_MAX + 1];
        if (tern_token_load(n->cfg.admin_token_file, tok, err) == TERN_OK) {
            memcpy(n->access->admin_token, tok, sizeof tok);
            TERN_LOGI("reload: admin token from %s", n->cfg.admin_token_file);
        } else {
            n->access->stats.reload_failures++;
            TERN_LOGW("reload: %s; keeping the admin token loaded before", err);
        }
        memset(tok, 0, sizeof tok);
    }
    return rc != TERN_OK ? rc : rc2;
}

static int reload_pw(struct tern_node *n)
{
    struct tern_access *a = n->access;
    const char *path = n->cfg.password_file;
    if (!path[0])
        return TERN_OK;
    char err[TERN_ERRMSG_SIZE];
    struct tern_pwfile *pw;
    int rc = tern_pwfile_load(path, &pw, err);
    if (rc != TERN_OK) {
        /* A half-edited file must not lock everyone out: keep what we had. */
        a->stats.reload_failures++;
        TERN_LOGW("reload: %s; keeping the %zu users loaded before", err,
                  tern_pwfile_count(a->pw));
        return rc;
    }
    tern_pwfile_free(a->pw);
    a->pw = pw;
    tern_file_digest(path, a->pw_digest);
    a->stats.reloads++;
    TERN_LOGI("reload: password file %s: %zu users", path, tern_pwfile_count(pw));
    return TERN_OK;
}

/* The authenticated user name, kept for the ACL's checks (only when there is
 * an ACL). */
static int keep_name(struct tern_conn *c, const char *name, size_t len)
{
    if (!c->node->access->acl)
        return TERN_OK;
    if (len > UINT16_MAX)
        return TERN_ETOOBIG;
    struct tern_conn_opt *o = tern_conn_opt(c);
    char *u = o ? malloc(len + 1) : NULL;
    if (!u)
        return TERN_ENOMEM;
    memcpy(u, name, len);
    u[len] = '\0';
    o->username = u;
    o->username_len = (uint16_t)len;
    return TERN_OK;
}

static int keep_username(struct tern_conn *c, const struct tern_connect *p)
{
    if (!p->has_username)
        return TERN_OK;
    return keep_name(c, (const char *)p->username.ptr, p->username.len);
}

int tern_access_connect(struct tern_conn *c, const struct tern_connect *p, uint8_t *v5,
                        uint8_t *v3)
{
    struct tern_access *a = c->node->access;
    if (!a)
        return TERN_OK;
    /* SCRAM-SHA-256 (access_scram.c) checked the user before this CONNECT came
     * here; its CONNECT password, if any, is not used. */
    size_t scram_len;
    const char *scram_user = tern_access_scram_user(c, &scram_len);
    if (scram_user) {
        a->stats.successes++;
        return keep_name(c, scram_user, scram_len);
    }
    /* use_identity_as_username (an mqtts listener): the client certificate the
     * handshake verified names the user; CONNECT's user name and password are not
     * used, as in Mosquitto. */
    const char *ident = tern_conn_tls_username(c);
    if (ident) {
        a->stats.successes++;
        return keep_name(c, ident, strlen(ident));
    }
    bool anonymous = anonymous_for(a, c);
    if (!p->has_username) {
        if (anonymous)
            return TERN_OK;
        a->stats.anonymous_refused++;
        *v5 = TERN_RC_NOT_AUTHORIZED;
        *v3 = TERN_V3_NOT_AUTHORIZED;
        return TERN_EPROTO;
    }
    *v5 = TERN_RC_BAD_USERNAME_OR_PASSWORD;
    *v3 = TERN_V3_BAD_CREDENTIALS;
    if (!a->pw && anonymous) {
        /* Nothing to check it against: let in as Mosquitto does, but as an
         * anonymous client - an unverified name gets no user's ACL rules. */
        return TERN_OK;
    }
    const uint8_t *addr = c->peer.addr;
    uint64_t now = tern_mono_ms();
    if (!tern_guard_allow(&a->guard, addr, now)) {
        a->stats.throttled++;
        return TERN_EPROTO;
    }
    /* A user name without a password file cannot be checked: refused where
     * anonymous clients are. */
    if (!a->pw ||
        tern_pwfile_check(a->pw, p->username.ptr, p->username.len, p->password.ptr,
                          p->has_password ? p->password.len : 0) != TERN_OK ||
        !p->has_password) {
        a->stats.failures++;
        tern_guard_fail(&a->guard, addr, now);
        char pb[TERN_PEER_STRLEN];
        TERN_LOGI("%s: CONNECT refused: bad user name or password (user \"%.*s\")",
                  tern_conn_peer(c, pb),
                  (int)(p->username.len > 64 ? 64 : p->username.len),
                  (const char *)p->username.ptr);
        return TERN_EPROTO;
    }
    tern_guard_ok(&a->guard, addr);
    a->stats.successes++;
    return keep_username(c, p);
}

const struct tern_access_stats *tern_access_stats(const struct tern_node *n)
{
    static const struct tern_access_stats none;
    return n->access ? &n->access->stats : &none;
}

const char *tern_access_pw_digest(const struct tern_node *n)
{
    return n->access ? n->access->pw_digest : "";
}

const char *tern_access_admin_token(const struct tern_node *n)
{
    return n->access ? n->access->admin_token : "";
}

const char *tern_access_acl_digest(const struct tern_node *n)
{
    return n->access ? n->access->acl_digest : "";
}

bool tern_access_may(struct tern_conn *c, const uint8_t *topic, size_t len, int access)
{
    struct tern_access *a = c->node->access;
    if (!a || !a->acl)
        return true;
    const struct tern_conn_opt *o = c->opt;
    const uint8_t *user = o && o->username ? (const uint8_t *)o->username : NULL;
    int level = tern_acl_check(a->acl, user, user ? o->username_len : 0,
                               (const uint8_t *)c->client_id, c->client_id_len, topic,
                               len, access);
    if (level == TERN_ACL_NO)
        a->stats.acl_denied[access == TERN_ACL_WRITE ? 1 : 0]++;
    else if (level == TERN_ACL_SOME && access == TERN_ACL_READ)
        c->acl_partial = true; /* deliveries through this filter get checked */
    return level != TERN_ACL_NO;
}

struct partial_walk {
    struct tern_conn *c;
    bool partial;
};

static int partial_visit(void *ctx, struct tern_bytes filter, uint8_t options,
                         uint32_t sub_id)
{
    (void)options;
    (void)sub_id;
    struct partial_walk *w = ctx;
    struct tern_access *a = w->c->node->access;
    const struct tern_conn_opt *o = w->c->opt;
    const uint8_t *user = o && o->username ? (const uint8_t *)o->username : NULL;
    const char *g, *inner;
    size_t glen, ilen;
    bool shared = tern_topic_shared_split((const char *)filter.ptr, filter.len, &g, &glen,
                                          &inner, &ilen);
    if (tern_acl_check(a->acl, user, user ? o->username_len : 0,
                       (const uint8_t *)w->c->client_id, w->c->client_id_len,
                       shared ? (const uint8_t *)inner : filter.ptr,
                       shared ? ilen : filter.len, TERN_ACL_READ) != TERN_ACL_ALL) {
        w->partial = true;
        return 1;
    }
    return 0;
}

bool tern_access_may_receive(struct tern_conn *c, const uint8_t *topic, size_t len)
{
    struct tern_access *a = c->node->access;
    if (!a || !a->acl)
        return true;
    if (c->acl_gen != a->acl_gen) {
        /* First delivery under these rules: if every subscription of the session
         * is readable whole, no delivery through them needs a check until the
         * next reload. A SUBSCRIBE still on its way was checked against the old
         * rules: then check each delivery (until the next reload). */
        struct partial_walk w = {c, c->opt && c->opt->subs};
        const struct tern_fsm_session *s = w.partial ? NULL : tern_session_get(c);
        if (s)
            tern_fsm_session_subs_walk(s, partial_visit, &w);
        c->acl_gen = a->acl_gen;
        c->acl_partial = w.partial;
    }
    if (!c->acl_partial)
        return true;
    const struct tern_conn_opt *o = c->opt;
    const uint8_t *user = o && o->username ? (const uint8_t *)o->username : NULL;
    if (tern_acl_allows(a->acl, user, user ? o->username_len : 0,
                        (const uint8_t *)c->client_id, c->client_id_len, topic, len,
                        TERN_ACL_READ))
        return true;
    a->stats.acl_delivery_denied++;
    return false;
}

bool tern_access_anonymous(const struct tern_node *n)
{
    return n->access && n->access->anonymous;
}

struct resume_walk {
    struct tern_conn *c;
    struct tern_wbuf list; /* UNSUBSCRIBE entries; err latches out of memory */
    uint32_t count;
};

static int resume_visit(void *ctx, struct tern_bytes filter, uint8_t options,
                        uint32_t sub_id)
{
    (void)options;
    (void)sub_id;
    struct resume_walk *w = ctx;
    const char *g, *inner;
    size_t glen, ilen;
    bool shared = tern_topic_shared_split((const char *)filter.ptr, filter.len, &g, &glen,
                                          &inner, &ilen);
    if (tern_access_may(w->c, shared ? (const uint8_t *)inner : filter.ptr,
                        shared ? ilen : filter.len, TERN_ACL_READ))
        return 0;
    struct tern_cmd_sub e = {filter, 0, 0};
    size_t need = tern_cmd_put_sub(NULL, 0, &e);
    uint8_t *p = tern_wbuf_append(&w->list, need);
    if (!p)
        return 1;
    tern_cmd_put_sub(p, need, &e);
    w->count++;
    return 0;
}

void tern_access_check_resumed(struct tern_conn *c, const struct tern_fsm_session *s)
{
    struct tern_access *a = c->node->access;
    if (!a || !a->acl)
        return;
    struct resume_walk w = {.c = c};
    tern_wbuf_init(&w.list);
    tern_fsm_session_subs_walk(s, resume_visit, &w);
    if (w.count && !w.list.err) {
        struct tern_cmd cmd = {.type = TERN_CMD_UNSUBSCRIBE};
        cmd.u.sub.list = (struct tern_bytes){w.list.buf, (uint32_t)w.list.len};
        cmd.u.sub.count = w.count;
        char pb[TERN_PEER_STRLEN];
        TERN_LOGI("%s %.*s: %u stored subscriptions this node's ACL does not allow: "
                  "removed",
                  tern_conn_peer(c, pb), (int)c->client_id_len, c->client_id,
                  (unsigned)w.count);
        a->stats.acl_resume_removed += w.count;
        if (tern_session_command(c, &cmd, NULL, NULL) != TERN_OK)
            tern_conn_close(c, TERN_RC_SERVER_UNAVAILABLE,
                            "subscriptions the ACL forbids could not be removed");
    } else if (w.list.err) {
        tern_conn_close(c, TERN_RC_SERVER_UNAVAILABLE, "out of memory checking the ACL");
    }
    tern_wbuf_free(&w.list);
}

/* --- limits per source address ------------------------------------------------ */

static void addr_key(const struct tern_conn *c, uint8_t key[17])
{
    memcpy(key, c->peer.addr, 16);
    key[16] = c->peer.family;
}

static bool addr_eq(const void *item, const void *key, size_t len)
{
    return memcmp(((const struct addr_count *)item)->key, key, len) == 0;
}

bool tern_access_accept(struct tern_conn *c)
{
    struct tern_node *n = c->node;
    struct tern_access *a = n->access;
    if (!a)
        return true;
    const struct tern_config *cfg = &n->cfg;
    char pb[TERN_PEER_STRLEN];
    if (cfg->connect_rate_per_address &&
        !tern_rate_take(&a->rate, c->peer.addr, tern_mono_ms(),
                        cfg->connect_rate_per_address)) {
        a->stats.rate_refused++;
        TERN_LOGD("%s: refused: connect_rate_per_address (%u/s)", tern_conn_peer(c, pb),
                  cfg->connect_rate_per_address);
        return false;
    }
    if (!cfg->connections_per_address_max)
        return true;
    uint8_t key[17];
    addr_key(c, key);
    uint64_t h = tern_hmap_hash(key, sizeof key);
    struct addr_count *e = tern_hmap_get(&a->by_addr, h, key, sizeof key, addr_eq);
    if (e && e->conns >= cfg->connections_per_address_max) {
        a->stats.per_address_refused++;
        TERN_LOGW("%s: refused: connections_per_address_max (%u) reached",
                  tern_conn_peer(c, pb), cfg->connections_per_address_max);
        return false;
    }
    if (!e) {
        e = calloc(1, sizeof *e);
        if (!e)
            return false;
        memcpy(e->key, key, sizeof key);
        if (tern_hmap_put(&a->by_addr, h, e) != TERN_OK) {
            free(e);
            return false;
        }
    }
    e->conns++;
    c->addr_counted = true;
    return true;
}

void tern_access_release(struct tern_conn *c)
{
    struct tern_access *a = c->node->access;
    if (!a || !c->addr_counted)
        return;
    c->addr_counted = false;
    uint8_t key[17];
    addr_key(c, key);
    uint64_t h = tern_hmap_hash(key, sizeof key);
    struct addr_count *e = tern_hmap_get(&a->by_addr, h, key, sizeof key, addr_eq);
    if (e && --e->conns == 0) {
        tern_hmap_del_item(&a->by_addr, h, e);
        free(e);
    }
}
