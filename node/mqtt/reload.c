/* Reload (SIGHUP, admin POST /reload): what can change while the node runs.
 * From the configuration read again (the file and the flags, as at start): the
 * log level, and the log file, reopened (logrotate moves it, then signals).
 * Anything else that differs there waits for a restart, and the log says so. A
 * configuration that no longer loads is refused: the node keeps running as it
 * is. Then every mqtts listener reads its TLS files again (node/mqtt/listener.c). */
#include <stdio.h>
#include <string.h>

#include "tern/frontend.h"
#include "tern/config.h"
#include "tern/error.h"
#include "tern/log.h"

static int reload_config(struct tern_node *n, char *errmsg)
{
    struct tern_config cfg = n->cfg;
    int rc = n->load_config ? n->load_config(&cfg, errmsg) : TERN_OK;
    if (rc == TERN_OK && cfg.log_file[0])
        rc = tern_log_open_file(cfg.log_file, errmsg);
    if (rc != TERN_OK)
        return rc;
    bool restart = strcmp(cfg.listen, n->cfg.listen) != 0 ||
                   strcmp(cfg.data_dir, n->cfg.data_dir) != 0 ||
                   strcmp(cfg.admin_listen, n->cfg.admin_listen) != 0 ||
                   cfg.node_id != n->cfg.node_id ||
                   cfg.member_count != n->cfg.member_count;
    memcpy(n->cfg.log_file, cfg.log_file, sizeof(cfg.log_file));
    n->cfg.log_level = cfg.log_level;
    tern_log_set_level(cfg.log_level);
    /* Always logged, whatever the level (tern_log() itself does not filter). */
    tern_log(TERN_LOG_INFO, "reloaded: log level %s, log file %s",
             tern_log_level_name(cfg.log_level),
             cfg.log_file[0] ? cfg.log_file : "stderr");
    if (restart)
        TERN_LOGW("reload: listen, admin_listen, data_dir, node_id and members changes "
                  "take effect at the next restart");
    return TERN_OK;
}

int tern_node_reload(struct tern_node *n, uint32_t *tls_reloaded, char *errmsg)
{
    char why[TERN_ERRMSG_SIZE] = "";
    int rc = reload_config(n, why);
    if (rc != TERN_OK) {
        TERN_LOGE("reload refused: %s", why);
        snprintf(errmsg, TERN_ERRMSG_SIZE, "reload refused: %.200s", why);
    }
    /* The TLS files are read again whatever the configuration said: each
     * failure is logged, and the listener keeps the files it had. */
    if (tern_listeners_reload(n, tls_reloaded, why) != TERN_OK && rc == TERN_OK) {
        snprintf(errmsg, TERN_ERRMSG_SIZE, "%.200s: kept the files loaded before", why);
        rc = TERN_EINVAL;
    }
    /* And the node-to-node certificate (cluster_tls): new connections use it. */
    if (n->cluster && tern_cluster_tls(n->cluster)) {
        if (tern_cluster_tls_reload(n->cluster, why) != TERN_OK) {
            TERN_LOGE("reload: %s; keeping the cluster certificate loaded before", why);
            if (rc == TERN_OK) {
                snprintf(errmsg, TERN_ERRMSG_SIZE, "%.200s: kept the files loaded before",
                         why);
                rc = TERN_EINVAL;
            }
        } else {
            TERN_LOGI("reload: cluster_tls files read again (new node-to-node "
                      "connections use them)");
        }
    }
    return rc;
}
