/* Who may connect: the node's side of client authentication (tern/auth.h holds
 * the pure parts). Loads password_file at start and on SIGHUP, decides
 * allow_anonymous, and checks each CONNECT's user name and password, slowing
 * repeated failures from one source address. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sys/random.h>

#include "node.h"
#include "tern/auth.h"
#include "tern/log.h"

struct tern_access {
    struct tern_pwfile *pw; /* NULL: no password file */
    bool anonymous;         /* allow_anonymous as decided */
    char pw_digest[65];     /* SHA-256 of the password file as loaded */
    struct tern_access_stats stats;
    struct tern_guard guard; /* large: last */
};

/* Loopback: 127.0.0.0/8, ::1, localhost. Anything else reaches the network. */
static bool loopback_host(const char *hostport)
{
    char host[TERN_CONFIG_STR_MAX];
    uint16_t port;
    if (tern_config_split_hostport(hostport, host, sizeof host, &port) != TERN_OK)
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
    return cfg->password_file[0] == '\0' && loopback_host(cfg->listen);
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
    a->anonymous = decide_anonymous(&n->cfg);
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
    if (a->anonymous && !loopback_host(n->cfg.listen))
        TERN_LOGW("allow_anonymous: anyone who reaches %s may connect", n->cfg.listen);
    n->access = a;
    return TERN_OK;
}

void tern_access_free(struct tern_node *n)
{
    if (!n->access)
        return;
    tern_pwfile_free(n->access->pw);
    free(n->access);
    n->access = NULL;
}

int tern_access_reload(struct tern_node *n)
{
    struct tern_access *a = n->access;
    const char *path = n->cfg.password_file;
    if (!a || !path[0])
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

int tern_access_connect(struct tern_conn *c, const struct tern_connect *p, uint8_t *v5,
                        uint8_t *v3)
{
    struct tern_access *a = c->node->access;
    if (!a)
        return TERN_OK;
    if (!p->has_username) {
        if (a->anonymous)
            return TERN_OK;
        a->stats.anonymous_refused++;
        *v5 = TERN_RC_NOT_AUTHORIZED;
        *v3 = TERN_V3_NOT_AUTHORIZED;
        return TERN_EPROTO;
    }
    *v5 = TERN_RC_BAD_USERNAME_OR_PASSWORD;
    *v3 = TERN_V3_BAD_CREDENTIALS;
    const uint8_t *addr = c->peer.addr;
    uint64_t now = tern_mono_ms();
    if (!tern_guard_allow(&a->guard, addr, now)) {
        a->stats.throttled++;
        return TERN_EPROTO;
    }
    /* A user name without a password file cannot be checked: refused, as
     * Mosquitto does when it has no way to verify it. */
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
    return TERN_OK;
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

bool tern_access_anonymous(const struct tern_node *n)
{
    return n->access && n->access->anonymous;
}
