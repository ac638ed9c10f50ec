/* The identity of a data directory (issue 17): which node and which cluster made
 * it, in DATA_DIR/identity, written once and checked at every start, so a data
 * directory copied to another node, or a config pointed at another cluster's
 * directory, is refused instead of sitting there without a leader.
 *
 * The file is three lines of text:
 *   node_id 2
 *   cluster_name tern
 *   cluster_id 5f0e8c1a9b3d7e21
 * The cluster id is made at bootstrap: derived from the static configuration
 * every member bootstraps alike (tern_config_cluster_id), or random for a single
 * node. A joining node has no bootstrap configuration: it keeps "" until an
 * operator-visible id is known (see docs/operations.md). */
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
    int len = snprintf(text, sizeof(text), "node_id %u\ncluster_name %s\ncluster_id %s\n",
                       id->node_id, id->name, id->id);
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
        if (!cfg->join)
            tern_config_cluster_id(cfg, want.id);
        if (!cfg->join && !want.id[0])
            random_id(want.id);
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
