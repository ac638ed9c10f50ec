/* ternd: one tern node. Reads the configuration (defaults, then --config FILE,
 * then flags, which win), starts the node and runs its loop. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "node.h"
#include "tern/tls.h"
#include "tern/config.h"
#include "tern/error.h"
#include "tern/log.h"

#ifndef TERN_VERSION
#define TERN_VERSION "dev"
#endif

static void usage(FILE *f)
{
    fprintf(
        f,
        "usage: ternd [options]\n"
        "\n"
        "Runs one tern MQTT broker node. With no options: 127.0.0.1:1883, data in\n"
        "./tern-data. Flags override the same keys of the config file.\n"
        "\n"
        "  --config FILE        JSON config file (docs/configuration.md)\n"
        "  --listen HOST:PORT   MQTT listener (key: listen)\n"
        "  --data-dir DIR       data directory (key: data_dir)\n"
        "  --log-level LEVEL    error, warn, info or debug (key: log_level)\n"
        "  --node-id N          this node's id (key: node_id)\n"
        "  --admin HOST:PORT    admin HTTP API (key: admin_listen)\n"
        "  --set KEY=VALUE      any config key\n"
        "  --check-config FILE  validate FILE (and the flags) and exit: 0 valid, 2 not;\n"
        "                       opens no socket and no data directory\n"
        "  --print-config       print the configuration in effect (every key) as JSON\n"
        "  --help               this text\n"
        "  --version            print the version\n");
}

/* Flag name -> config key, for the flags that take one value. */
static const char *flag_key(const char *flag)
{
    static const char *map[][2] = {{"--listen", "listen"},
                                   {"--data-dir", "data_dir"},
                                   {"--log-level", "log_level"},
                                   {"--node-id", "node_id"},
                                   {"--admin", "admin_listen"}};
    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++)
        if (strcmp(flag, map[i][0]) == 0)
            return map[i][1];
    return NULL;
}

static int apply_set(struct tern_config *cfg, const char *kv, char *errmsg)
{
    const char *eq = strchr(kv, '=');
    if (!eq || eq == kv) {
        snprintf(errmsg, TERN_ERRMSG_SIZE, "--set: expected KEY=VALUE, got \"%s\"", kv);
        return TERN_EINVAL;
    }
    char key[64];
    size_t klen = (size_t)(eq - kv);
    if (klen >= sizeof(key)) {
        snprintf(errmsg, TERN_ERRMSG_SIZE, "--set: key too long: \"%.*s\"", (int)klen,
                 kv);
        return TERN_EINVAL;
    }
    memcpy(key, kv, klen);
    key[klen] = '\0';
    return tern_config_set(cfg, key, eq + 1, errmsg);
}

/* Two passes: the config file first wherever --config appears, then the flags in
 * order, so a flag always overrides the file. Returns 0 to run, 1 for an
 * informational exit (help/version), -1 on error (message printed). */
static int parse_args(int argc, char **argv, struct tern_config *cfg)
{
    char errmsg[TERN_ERRMSG_SIZE] = "";
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 1;
        }
        if (strcmp(argv[i], "--version") == 0) {
            printf("ternd %s\n", TERN_VERSION);
            return 1;
        }
        if (strcmp(argv[i], "--print-config") == 0)
            continue; /* after the flags: see main() */
        if (strcmp(argv[i], "--config") == 0 || strcmp(argv[i], "--check-config") == 0) {
            if (i + 1 >= argc) {
                fprintf(stderr, "ternd: %s needs a FILE\n", argv[i]);
                usage(stderr);
                return -1;
            }
            if (tern_config_load_file(cfg, argv[++i], errmsg) != TERN_OK) {
                fprintf(stderr, "ternd: %s\n", errmsg);
                return -1;
            }
        }
    }
    for (int i = 1; i < argc; i++) {
        const char *key = flag_key(argv[i]);
        int rv = TERN_OK;
        if (strcmp(argv[i], "--print-config") == 0)
            continue;
        if (strcmp(argv[i], "--config") == 0 || strcmp(argv[i], "--check-config") == 0) {
            i++;
            continue;
        }
        if (!key && strcmp(argv[i], "--set") != 0) {
            fprintf(stderr, "ternd: unknown option \"%s\"\n", argv[i]);
            usage(stderr);
            return -1;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "ternd: %s needs a value\n", argv[i]);
            usage(stderr);
            return -1;
        }
        rv = key ? tern_config_set(cfg, key, argv[i + 1], errmsg)
                 : apply_set(cfg, argv[i + 1], errmsg);
        if (rv != TERN_OK) {
            fprintf(stderr, "ternd: %s\n", errmsg);
            return -1;
        }
        i++;
    }
    return 0;
}

static const char *check_only(int argc, char **argv)
{
    for (int i = 1; i + 1 < argc; i++)
        if (strcmp(argv[i], "--check-config") == 0)
            return argv[i + 1];
    return NULL;
}

static int make_data_dir(const char *dir)
{
    if (mkdir(dir, 0755) == 0 || errno == EEXIST)
        return 0;
    fprintf(stderr, "ternd: data_dir: cannot create \"%s\": %s\n", dir, strerror(errno));
    return -1;
}

/* The command line, kept for a reload: the same file and flags, read again. */
static int saved_argc;
static char **saved_argv;

static int reload_config(struct tern_config *cfg, char *errmsg)
{
    struct tern_config fresh;
    tern_config_defaults(&fresh);
    /* parse_args prints its errors: a reload's go to the log like the rest. */
    if (parse_args(saved_argc, saved_argv, &fresh) != 0) {
        snprintf(errmsg, TERN_ERRMSG_SIZE, "the configuration does not load (see above)");
        return TERN_EINVAL;
    }
    int rv = tern_config_check(&fresh, errmsg);
    if (rv != TERN_OK)
        return rv;
    memcpy(fresh.cluster_id, cfg->cluster_id, sizeof(fresh.cluster_id));
    *cfg = fresh;
    return TERN_OK;
}

int main(int argc, char **argv)
{
    saved_argc = argc;
    saved_argv = argv;
    struct tern_config cfg;
    tern_config_defaults(&cfg);
    int rv = parse_args(argc, argv, &cfg);
    if (rv != 0)
        return rv > 0 ? 0 : 2;
    char errmsg[TERN_ERRMSG_SIZE] = "";
    /* Configuration errors, TLS files included, exit 2 before any socket or file. */
    struct tern_tls_ctx *tls[TERN_LISTENERS_MAX];
    if (tern_config_check(&cfg, errmsg) != TERN_OK ||
        tern_config_cluster_tls_check(&cfg.cluster_tls, errmsg) != TERN_OK ||
        tern_listeners_tls_load(&cfg, tls, errmsg) != TERN_OK) {
        fprintf(stderr, "ternd: %s\n", errmsg);
        return 2;
    }
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--print-config") == 0) {
            char *json = tern_config_to_json(&cfg);
            if (!json)
                return 1;
            printf("%s\n", json);
            free(json);
            return 0;
        }
    const char *checked = check_only(argc, argv);
    if (checked) {
        char id[17];
        tern_config_cluster_id(&cfg, id);
        printf("%s: valid: node %u of cluster \"%s\", cluster id %s\n", checked,
               cfg.node_id, cfg.cluster_name, id[0] ? id : "(made at the first start)");
        for (uint32_t i = 0; i < cfg.listener_count; i++)
            tern_tls_ctx_free(tls[i]);
        return 0;
    }
    if (cfg.raft_snapshot_fork != TERN_SNAPSHOT_FORK_NEVER)
        tern_heap_thp_reexec(argv); /* before any file or socket is open */
    tern_log_set_level(cfg.log_level);
    if (cfg.log_file[0] && tern_log_open_file(cfg.log_file, errmsg) != TERN_OK) {
        fprintf(stderr, "ternd: %s\n", errmsg);
        return 1;
    }
    if (make_data_dir(cfg.data_dir) != 0)
        return 1;
    rv = tern_identity_open(&cfg, errmsg);
    if (rv != TERN_OK) {
        fprintf(stderr, "ternd: %s\n", errmsg);
        return rv == TERN_EINVAL ? 2 : 1;
    }
    TERN_LOGI("node %u of cluster \"%s\", cluster id %s", cfg.node_id, cfg.cluster_name,
              cfg.cluster_id[0] ? cfg.cluster_id : "(joining: not known yet)");
    /* Before any socket exists: a write to a vanished peer must return EPIPE,
     * not kill the process (a Raft peer's death included). */
    signal(SIGPIPE, SIG_IGN);

    uv_loop_t *loop = uv_default_loop();
    uv_loop_configure(loop, UV_METRICS_IDLE_TIME); /* for the loop busy-time metric */
    static struct tern_node node;
    rv = tern_node_init(&node, loop, &cfg, errmsg);
    node.load_config = reload_config;
    if (rv != TERN_OK || tern_node_start(&node, tls, errmsg) != TERN_OK) {
        fprintf(stderr, "ternd: %s\n", errmsg);
        return 1;
    }
    uv_run(loop, UV_RUN_DEFAULT);
    tern_node_free(&node);
    uv_loop_close(loop);
    TERN_LOGI("ternd stopped");
    return 0;
}
