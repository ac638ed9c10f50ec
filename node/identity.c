/* The identity of a data directory (issue 17): which node and which cluster made
 * it, in DATA_DIR/identity, written once and checked at every start, so a data
 * directory copied to another node, or a config pointed at another cluster's
 * directory, is refused instead of sitting there without a leader.
 *
 * The file is three or four lines of text:
 *   node_id 2
 *   cluster_name tern
 *   cluster_id 5f0e8c1a9b3d7e21
 *   replicated 1
 * The cluster id is made at bootstrap: derived from the static configuration
 * every member bootstraps alike (tern_config_cluster_id), or random for a single
 * node. The first leader puts it in the Raft log (CLUSTER_ID, docs/commands.md),
 * so it is replicated state from then on: a joining node, which has no bootstrap
 * configuration, keeps "" until it applies the id from the log or a snapshot,
 * then writes it here (tern_identity_check), with a line "replicated 1". So
 * does a member whose bootstrap derived another id (its configuration lists the
 * members' addresses differently): the first leader's is the cluster's. A data
 * directory whose identity file holds a replicated id while its replicated
 * state holds another mixes two clusters' files: the node stops (exit 2)
 * naming both. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "node.h"
#include "tern/config.h"
#include "tern/error.h"
#include "tern/log.h"

struct identity {
    uint32_t node_id;
    char name[TERN_CONFIG_STR_MAX];
    char id[17];
    /* "replicated 1": id is the one in the replicated state (seen applied), not
     * only what bootstrap made here; only then does another id stop the node. */
    bool replicated;
};

static int identity_path(const char *dir, const char *file, char *out, size_t cap)
{
    int n = snprintf(out, cap, "%s/%s", dir, file);
    return n > 0 && (size_t)n < cap ? TERN_OK : TERN_EINVAL;
}

/* TERN_OK (read), TERN_ENOTFOUND (no file) or TERN_ECORRUPT / TERN_EIO. */
static int identity_read(const char *path, struct identity *id, char *errmsg)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        if (errno == ENOENT)
            return TERN_ENOTFOUND;
        snprintf(errmsg, TERN_ERRMSG_SIZE, "data_dir: cannot read %.200s: %s", path,
                 strerror(errno));
        return TERN_EIO;
    }
    char line[TERN_CONFIG_STR_MAX + 32];
    int seen = 0;
    memset(id, 0, sizeof(*id));
    while (fgets(line, sizeof(line), f)) {
        line[strcspn(line, "\n")] = '\0';
        if (sscanf(line, "node_id %" SCNu32, &id->node_id) == 1)
            seen |= 1;
        else if (strcmp(line, "replicated 1") == 0)
            id->replicated = true;
        else if (strncmp(line, "cluster_name ", 13) == 0 &&
                 strlen(line + 13) < sizeof(id->name)) {
            strcpy(id->name, line + 13);
            seen |= 2;
        } else if (strncmp(line, "cluster_id", 10) == 0) {
            snprintf(id->id, sizeof(id->id), "%.16s", line[10] ? line + 11 : "");
            seen |= 4;
        }
    }
    fclose(f);
    if (seen != 7 || id->node_id == 0) {
        snprintf(errmsg, TERN_ERRMSG_SIZE,
                 "data_dir: %.150s is not an identity file (node_id, cluster_name, "
                 "cluster_id)",
                 path);
        return TERN_ECORRUPT;
    }
    return TERN_OK;
}

/* Durable: temp, fsync, rename, fsync the directory. */
static int identity_write(const char *dir, const struct identity *id, char *errmsg)
{
    char tmp[TERN_CONFIG_STR_MAX + 32], path[TERN_CONFIG_STR_MAX + 32], text[512];
    if (identity_path(dir, "identity.tmp", tmp, sizeof(tmp)) != TERN_OK ||
        identity_path(dir, "identity", path, sizeof(path)) != TERN_OK) {
        snprintf(errmsg, TERN_ERRMSG_SIZE, "data_dir: path too long");
        return TERN_EINVAL;
    }
    int len =
        snprintf(text, sizeof(text), "node_id %u\ncluster_name %s\ncluster_id %s\n%s",
                 id->node_id, id->name, id->id, id->replicated ? "replicated 1\n" : "");
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    bool ok = fd >= 0 && write(fd, text, (size_t)len) == len && fsync(fd) == 0;
    int err = errno;
    if (fd >= 0)
        close(fd);
    ok = ok && rename(tmp, path) == 0;
    if (!ok) {
        if (!err)
            err = errno;
        snprintf(errmsg, TERN_ERRMSG_SIZE, "data_dir: cannot write %.200s: %s", path,
                 strerror(err));
        unlink(tmp);
        return TERN_EIO;
    }
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    return TERN_OK;
}

static void random_id(char out[17])
{
    uint64_t v = 0;
    FILE *f = fopen("/dev/urandom", "rb");
    if (!f || fread(&v, sizeof(v), 1, f) != 1)
        v = (uint64_t)time(NULL) * UINT64_C(0x9e3779b97f4a7c15) ^ (uint64_t)getpid();
    if (f)
        fclose(f);
    snprintf(out, 17, "%016" PRIx64, v);
}

/* Does DATA_DIR/raft hold anything? Then the identity file was lost, not never
 * written: the cluster id is in the replicated state, learnt from there. */
static bool raft_dir_used(const char *dir)
{
    char path[TERN_CONFIG_STR_MAX + 32];
    if (identity_path(dir, "raft", path, sizeof(path)) != TERN_OK)
        return false;
    DIR *d = opendir(path);
    if (!d)
        return false;
    bool used = false;
    struct dirent *e;
    while (!used && (e = readdir(d)) != NULL)
        used = strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    closedir(d);
    return used;
}

int tern_identity_open(struct tern_config *cfg, char *errmsg)
{
    char path[TERN_CONFIG_STR_MAX + 32];
    struct identity have, want = {.node_id = cfg->node_id};
    snprintf(want.name, sizeof(want.name), "%s", cfg->cluster_name);
    if (identity_path(cfg->data_dir, "identity", path, sizeof(path)) != TERN_OK) {
        snprintf(errmsg, TERN_ERRMSG_SIZE, "data_dir: path too long");
        return TERN_EINVAL;
    }
    int rc = identity_read(path, &have, errmsg);
    if (rc == TERN_ENOTFOUND) {
        bool learn = cfg->join || raft_dir_used(cfg->data_dir);
        if (!learn)
            tern_config_cluster_id(cfg, want.id);
        if (!learn && !want.id[0])
            random_id(want.id);
        if (learn && !cfg->join)
            TERN_LOGW("data_dir %s has Raft files but no identity file: the cluster id "
                      "is taken from the replicated state",
                      cfg->data_dir);
        rc = identity_write(cfg->data_dir, &want, errmsg);
        if (rc == TERN_OK)
            memcpy(cfg->cluster_id, want.id, sizeof(want.id));
        return rc;
    }
    if (rc != TERN_OK)
        return rc;
    if (have.node_id != cfg->node_id) {
        snprintf(errmsg, TERN_ERRMSG_SIZE,
                 "data_dir %.100s was made by node %u, but this is node_id %u: use "
                 "node %u's own data directory",
                 cfg->data_dir, have.node_id, cfg->node_id, cfg->node_id);
        return TERN_EINVAL;
    }
    if (strcmp(have.name, cfg->cluster_name) != 0) {
        snprintf(errmsg, TERN_ERRMSG_SIZE,
                 "data_dir %.80s belongs to cluster \"%.40s\" (id %s), but cluster_name "
                 "is \"%.40s\"",
                 cfg->data_dir, have.name, have.id, cfg->cluster_name);
        return TERN_EINVAL;
    }
    memcpy(cfg->cluster_id, have.id, sizeof(have.id));
    return TERN_OK;
}

/* --- at run time: the id in the replicated state --- */

static uint64_t id_value(const char *hex)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(hex, &end, 16);
    return hex[0] && *end == '\0' && errno == 0 ? (uint64_t)v : 0;
}

static void on_cluster_id_done(void *ctx, int status, const struct tern_fsm_result *res)
{
    struct tern_node *n = ctx;
    n->cluster_id_proposed = false; /* lost with a leader change: proposed again */
    if (status == TERN_OK && res->status == TERN_OK)
        TERN_LOGI("cluster id %s is in the log", n->cfg.cluster_id);
}

/* Writes id, now known to be the replicated one, to the identity file (once per
 * data directory: the first time this node sees it applied). */
static void identity_confirm(struct tern_node *n, uint64_t id, const char *why)
{
    struct identity have;
    char path[TERN_CONFIG_STR_MAX + 32], errmsg[TERN_ERRMSG_SIZE] = "";
    n->cluster_id = id;
    n->cluster_id_replicated = true;
    snprintf(n->cfg.cluster_id, sizeof(n->cfg.cluster_id), "%016" PRIx64, id);
    int rc = identity_path(n->cfg.data_dir, "identity", path, sizeof(path));
    if (rc == TERN_OK)
        rc = identity_read(path, &have, errmsg);
    if (rc == TERN_OK) {
        memcpy(have.id, n->cfg.cluster_id, sizeof(have.id));
        have.replicated = true;
        rc = identity_write(n->cfg.data_dir, &have, errmsg);
    }
    if (rc != TERN_OK)
        TERN_LOGW("cluster id %s: %s (a restart tries again)", n->cfg.cluster_id,
                  errmsg[0] ? errmsg : tern_strerror(rc));
    else if (why)
        TERN_LOGI("cluster id %s, %s, written to %s", n->cfg.cluster_id, why, path);
}

/* Reads once whether DATA_DIR/identity's id was seen in the replicated state. */
static void identity_load(struct tern_node *n)
{
    struct identity have;
    char path[TERN_CONFIG_STR_MAX + 32], errmsg[TERN_ERRMSG_SIZE] = "";
    n->cluster_id = id_value(n->cfg.cluster_id);
    n->cluster_id_parsed = true;
    n->cluster_id_replicated =
        identity_path(n->cfg.data_dir, "identity", path, sizeof(path)) == TERN_OK &&
        identity_read(path, &have, errmsg) == TERN_OK && have.replicated;
}

void tern_identity_check(struct tern_node *n)
{
    if (!n->cluster_id_parsed)
        identity_load(n);
    uint64_t refused, repl = tern_fsm_cluster_id(tern_cluster_fsm(n->cluster), &refused);
    if (refused && refused != n->cluster_id_refused_logged) {
        TERN_LOGW("a CLUSTER_ID %016" PRIx64
                  " was refused: the cluster's id is %016" PRIx64 ", set first",
                  refused, repl);
        n->cluster_id_refused_logged = refused;
    }
    if (repl == n->cluster_id && (n->cluster_id_replicated || repl == 0))
        return; /* the common case */
    if (repl == 0) {
        /* Not in the log yet (a new cluster, or one bootstrapped before it was
         * replicated): the leader puts its own there, once. */
        struct tern_cluster_status st;
        if (n->cluster_id_proposed)
            return;
        tern_cluster_status(n->cluster, &st);
        if (st.state != 3)
            return;
        struct tern_cmd cmd = {.type = TERN_CMD_CLUSTER_ID, .now_ms = tern_now_ms()};
        cmd.u.cluster_id.id = n->cluster_id;
        if (tern_cluster_propose(n->cluster, &cmd, on_cluster_id_done, n) == TERN_OK)
            n->cluster_id_proposed = true;
        return;
    }
    if (repl == n->cluster_id) {
        identity_confirm(n, repl, NULL); /* the id bootstrap made here is the cluster's */
        return;
    }
    if (!n->cluster_id_replicated) {
        /* None here (joined), or only what bootstrap made here and another member's
         * (whose configuration lists other addresses) came first: the cluster's. */
        if (n->cluster_id)
            TERN_LOGW("cluster id %s made at bootstrap here is not the cluster's: "
                      "taking %016" PRIx64 " (the members' configurations differ)",
                      n->cfg.cluster_id, repl);
        identity_confirm(n, repl, "from the replicated state");
        return;
    }
    tern_log(
        TERN_LOG_ERROR,
        "data_dir %s is of cluster id %s (its identity file), but the replicated "
        "state in it (Raft log and snapshots) is of cluster id %016" PRIx64
        ": the directory mixes two clusters' files; give this node its own data "
        "directory, or an empty one to join as a new member: stopping (exit status 2)",
        n->cfg.data_dir, n->cfg.cluster_id, repl);
    fflush(stderr);
    _exit(2); /* no atexit handlers: the loop is mid-turn */
}
