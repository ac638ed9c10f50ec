/* ternd configuration: defaults, JSON file (cJSON), command-line overrides.
 * Every key is documented in docs/configuration.md with its default. */
#ifndef TERN_CONFIG_H
#define TERN_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tern/cluster.h" /* struct tern_member */
#include "tern/fsm.h"     /* struct tern_fsm_limits */
#include "tern/log.h"     /* enum tern_log_level */

#define TERN_CONFIG_STR_MAX 256

/* Listeners besides `listen` (docs/configuration.md, "Listeners and TLS"). */
#define TERN_LISTENERS_MAX 8

enum tern_listener_type {
    TERN_LISTENER_MQTT = 0,  /* MQTT over TCP */
    TERN_LISTENER_MQTTS = 1, /* MQTT over TLS */
    TERN_LISTENER_WS = 2,    /* MQTT over WebSockets (node/ws.h) */
    TERN_LISTENER_WSS = 3,   /* MQTT over WebSockets over TLS */
};
#define TERN_LISTENER_IS_TLS(t) ((t) == TERN_LISTENER_MQTTS || (t) == TERN_LISTENER_WSS)
#define TERN_LISTENER_IS_WS(t) ((t) == TERN_LISTENER_WS || (t) == TERN_LISTENER_WSS)

/* A WebSocket listener's allowed_origins: at most this many, each shorter. */
#define TERN_WS_ORIGINS_MAX 16
#define TERN_WS_ORIGIN_MAX 128

struct tern_listener_config {
    uint8_t type;            /* enum tern_listener_type */
    uint8_t tls_min_version; /* enum tern_tls_version (include/tls/tern/tls.h): 0 = 1.2, 1
                                = 1.3 */
    bool require_certificate;
    bool use_identity_as_username; /* the client certificate's CN is the username */
    bool proxy_protocol;           /* a PROXY v1/v2 header comes first
                                      (include/stream/tern/proxy_proto.h) */
    char bind[64];                 /* "HOST:PORT" */
    /* mqtts only; "" = not given. */
    char cert_file[TERN_CONFIG_STR_MAX];
    char key_file[TERN_CONFIG_STR_MAX];
    char ca_file[TERN_CONFIG_STR_MAX];
    char crl_file[TERN_CONFIG_STR_MAX];
    char ciphers[TERN_CONFIG_STR_MAX];      /* TLS 1.2 cipher list */
    char ciphersuites[TERN_CONFIG_STR_MAX]; /* TLS 1.3 cipher suites */
    /* ws and wss only: the request path (default "/mqtt") and the Origin values
     * accepted (none: any). */
    char path[TERN_WS_ORIGIN_MAX];
    char origins[TERN_WS_ORIGINS_MAX][TERN_WS_ORIGIN_MAX];
    uint32_t origin_count;
};

/* Mutual TLS between nodes (cluster_tls); all "" = plain TCP. */
struct tern_cluster_tls_config {
    char cert_file[TERN_CONFIG_STR_MAX]; /* this node's certificate, CN "node-ID" */
    char key_file[TERN_CONFIG_STR_MAX];
    char ca_file[TERN_CONFIG_STR_MAX];  /* the cluster CA */
    char crl_file[TERN_CONFIG_STR_MAX]; /* optional */
};

struct tern_config {
    char listen[TERN_CONFIG_STR_MAX];   /* "HOST:PORT", default "127.0.0.1:1883";
                                           "none": no plain listener from this key */
    char data_dir[TERN_CONFIG_STR_MAX]; /* default "tern-data" */
    int log_level;                      /* enum tern_log_level, default info */
    uint32_t node_id;                   /* default 1 */

    uint32_t max_connections; /* default 100000 */
    uint32_t max_packet_size; /* bytes, both directions, default 1048576 */
    uint16_t receive_maximum; /* QoS>0 PUBLISH a client may have unacked to us, 1024 */
    uint16_t topic_alias_maximum; /* client-to-server aliases we accept, default 64 */
    uint16_t max_keepalive_s; /* cap on client keepalive (v5 server keepalive), 65535 */
    uint32_t connect_timeout_ms; /* accept to CONNECT, default 10000 */
    uint64_t write_buffer_max;   /* unsent bytes per connection before it is closed as
                                    not reading, default 16777216 */
    uint32_t
        retry_interval_s;  /* in-session re-send of unacked QoS>0, 0 = off (default) */
    uint8_t max_qos;       /* 0..2, default 2 */
    bool retain_available; /* default true */
    bool wildcard_subscriptions;            /* default true */
    bool shared_subscriptions;              /* default true */
    bool subscription_identifiers;          /* default true */
    uint32_t client_id_max_len;             /* default 65535 */
    char admin_listen[TERN_CONFIG_STR_MAX]; /* admin HTTP API, default "127.0.0.1:8081" */
    uint32_t sys_interval_s;                /* $SYS topics period, 0 = off, default 10 */

    struct tern_fsm_limits limits; /* inflight, queue, retained, expiry bounds */

    /* Cluster (none = a single-node cluster). */
    struct tern_member members[TERN_CLUSTER_MEMBERS_MAX];
    uint32_t member_count;
    char raft_address[TERN_CONFIG_STR_MAX]; /* single node, default "127.0.0.1:0" */
    uint32_t raft_election_timeout_ms;      /* default 300 */
    uint32_t raft_heartbeat_timeout_ms;     /* default 15 */
    uint32_t raft_snapshot_threshold;       /* default 32768 */
    uint32_t raft_snapshot_trailing;        /* default 2048 */
    uint64_t raft_snapshot_bytes;           /* default 64 MiB */
    int raft_snapshot_fork;                 /* enum tern_snapshot_fork, default auto */
    int raft_entry_compression;             /* enum tern_entry_compression, default lz4 */
    uint64_t raft_segment_bytes;            /* default 32 MiB */
    uint32_t max_batch_bytes;               /* default 1048576 */
    bool join; /* default false: join a running cluster instead of bootstrapping */

    /* Identity (issue 17): the name every member is configured with (default
     * "tern"), and the cluster id, not a key: made at bootstrap and kept in the
     * data directory (node/identity.c), "" until then. */
    char cluster_name[TERN_CONFIG_STR_MAX];
    char cluster_id[17];

    /* The log: appended to this file, reopened on SIGHUP ("" = stderr, default). */
    char log_file[TERN_CONFIG_STR_MAX];

    /* Flow control (node/mqtt/flow.c): a backlogged subscriber that makes no progress
     * for this long meets the drop policy; 0 = no flow control. Default 2000. */
    uint32_t slow_subscriber_timeout_ms;

    /* Listeners (node.c): `listen` plus these. */
    struct tern_listener_config listeners[TERN_LISTENERS_MAX];
    uint32_t listener_count;
    uint32_t tls_handshake_timeout_ms; /* accept to TLS established, default 10000 */
    uint32_t proxy_header_timeout_ms;  /* accept to PROXY header read, default 5000 */
    uint32_t ws_handshake_timeout_ms;  /* accept to WebSocket upgrade, default 10000 */
    uint32_t ws_handshake_bytes_max;   /* upgrade request size, default 8192 */
    struct tern_cluster_tls_config cluster_tls;

    /* Who may connect (node/mqtt/access.c). */
    char password_file[TERN_CONFIG_STR_MAX];    /* Mosquitto format, "" = none */
    int allow_anonymous;                        /* enum tern_anonymous, default auto */
    char acl_file[TERN_CONFIG_STR_MAX];         /* Mosquitto format, "" = no ACL */
    char admin_token_file[TERN_CONFIG_STR_MAX]; /* bearer token, "" = no token */
    uint32_t subscriptions_max;                 /* per session, default 1000 */
    uint32_t connections_per_address_max; /* open at once, 0 = no limit, default 1000 */
    uint32_t connect_rate_per_address;    /* accepts per second, 0 = off, default 500 */
    char admin_tls_cert_file[TERN_CONFIG_STR_MAX]; /* "" = plain HTTP */
    char admin_tls_key_file[TERN_CONFIG_STR_MAX];
    char admin_tls_ca_file[TERN_CONFIG_STR_MAX]; /* "" = no client certificate */
    uint32_t publish_rate_max;       /* PUBLISH/s per client id, 0 = off (default) */
    uint32_t publish_rate_burst;     /* bucket size, 0 = publish_rate_max (default) */
    uint32_t publish_quota_max;      /* PUBLISH per period per client id, 0 = off */
    uint32_t publish_quota_period_s; /* default 86400 */
};

enum tern_anonymous {
    TERN_ANON_AUTO = 0, /* allowed only without password_file, on loopback listeners */
    TERN_ANON_FALSE = 1,
    TERN_ANON_TRUE = 2,
};

/* Fills every field with its default. */
void tern_config_defaults(struct tern_config *c);

/* Reads a JSON object from `path` onto c (keys not present keep their values).
 * On error returns TERN_EINVAL (or TERN_EIO) and writes a message that names the
 * key and the reason into errmsg (TERN_ERRMSG_SIZE bytes), e.g.
 * "inflight_max: must be an integer from 1 to 65535". Unknown keys are errors. */
int tern_config_load_file(struct tern_config *c, const char *path, char *errmsg);

/* Same, from a JSON text (used by load_file and by tests). */
int tern_config_load_json(struct tern_config *c, const char *json, size_t len,
                          char *errmsg);

/* Sets one key from a string, as a command-line flag does ("inflight_max", "50").
 * Same validation and messages as the file. */
int tern_config_set(struct tern_config *c, const char *key, const char *value,
                    char *errmsg);

/* Checks what no single key can, before anything is opened: every listener
 * address (listen and listeners[].bind) is distinct, and there is at least one
 * listener; node_id among members (unless join); listen, admin_listen and
 * raft_address IP literals; data_dir not a file. TERN_EINVAL with a message
 * naming the key. Call once every source has been applied. */
int tern_config_check(const struct tern_config *c, char *errmsg);

/* Splits "HOST:PORT" ("[::1]:1883" for IPv6). Returns TERN_OK or TERN_EINVAL. */
/* The cluster id every member of a static bootstrap configuration derives alike:
 * 16 hex digits from cluster_name and the members' ids and Raft addresses. A
 * single node (no members) gets "" (node/identity.c makes a random one). */
void tern_config_cluster_id(const struct tern_config *c, char out[17]);

/* The configuration as a JSON config file, every key (malloc'd, NULL if out of
 * memory): what `ternd --print-config` prints. */
char *tern_config_to_json(const struct tern_config *c);

const char *tern_log_level_name(int level);

/* cluster_tls (node/config/config_tls.c), when set: that the files load (the
 * certificate, its key, the CA, the CRL), as ternd checks the listeners' before it
 * opens anything: TERN_OK, or an error
 * with "cluster_tls.key_file: cannot use ...". The cluster loads them again. */
int tern_config_cluster_tls_check(const struct tern_cluster_tls_config *t, char *errmsg);

#endif
