/* ternd configuration (tern/config.h).
 *
 * Every key is one row of `keys` below: name, type, where it lives in struct
 * tern_config, its range and its default. The JSON file and tern_config_set()
 * both turn their input into a `struct val` and go through apply_key(), so a key
 * is validated, and its errors worded, the same way wherever it comes from.
 * docs/configuration.md documents the same table for users.
 *
 * Over 800 lines on purpose: the table, the conversion, the error wording and
 * the listeners' members are one grammar; split, a key's row would sit in one
 * file and the checks and messages it relies on in others.
 */
#include "tern/config.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>

#include "tern/addr.h"
#include "config_tls.h"
#include "tern/error.h"

/* A config file larger than this is surely not a config file. */
#define CONFIG_FILE_MAX (1024 * 1024)
/* Longest user text echoed back in an error message. */
#define ECHO_MAX 64
/* Integers from JSON arrive as doubles; above 2^53 they would not be exact. */
#define JSON_EXACT_MAX (UINT64_C(1) << 53)

#define TIB (UINT64_C(1) << 40)

enum key_type {
    KEY_UINT,      /* unsigned integer of 1, 2, 4 or 8 bytes in [min, max] */
    KEY_BOOL,      /* bool */
    KEY_ENUM,      /* integer field, spelled as one of `names` (index = value) */
    KEY_STR,       /* char[TERN_CONFIG_STR_MAX], non-empty */
    KEY_HOSTPORT,  /* KEY_STR that tern_config_split_hostport accepts */
    KEY_OPTSTR,    /* KEY_STR that may be empty ("": not set) */
    KEY_MEMBERS,   /* cluster members: JSON array of objects, or text (see below) */
    KEY_LISTENERS, /* listeners: JSON array of objects (as text too, for --set) */
    KEY_NODE_TLS,  /* cluster_tls: object (config_tls.c) */
};

struct key {
    const char *name;
    enum key_type type;
    size_t offset;
    size_t size;
    uint64_t min, max;        /* KEY_UINT */
    const char *const *names; /* KEY_ENUM, NULL-terminated */
    const char *def;          /* as tern_config_set takes it; NULL: limits default */
    const char *doc;
};

static const char *const log_level_names[] = {"error", "warn", "info", "debug", NULL};
static const char *const drop_policy_names[] = {"drop_oldest", "drop_new", NULL};
static const char *const anonymous_names[] = {"auto", "false", "true", NULL};
static const char *const snapshot_fork_names[] = {"auto", "never", "always", NULL};
/* enum tern_entry_compression */
static const char *const entry_compression_names[] = {"lz4", "none", NULL};

#define FIELD(f) offsetof(struct tern_config, f), sizeof(((struct tern_config *)0)->f)
#define UINT(n, f, lo, hi, d, doc)                                                       \
    {                                                                                    \
        n, KEY_UINT, FIELD(f), lo, hi, NULL, d, doc                                      \
    }
#define BOOL(n, f, d, doc)                                                               \
    {                                                                                    \
        n, KEY_BOOL, FIELD(f), 0, 1, NULL, d, doc                                        \
    }
#define ENUM(n, f, names, d, doc)                                                        \
    {                                                                                    \
        n, KEY_ENUM, FIELD(f), 0, 0, names, d, doc                                       \
    }

/* Limit keys have def NULL: their defaults live in tern_fsm_limits_default(), the
 * one place the FSM and the config agree on. */
static const struct key keys[] = {
    {"listen", KEY_HOSTPORT, FIELD(listen), 0, 0, NULL, "127.0.0.1:1883",
     "MQTT TCP listener address"},
    {"data_dir", KEY_STR, FIELD(data_dir), 0, 0, NULL, "tern-data",
     "directory for the Raft log and snapshots"},
    ENUM("log_level", log_level, log_level_names, "info", "messages above are dropped"),
    UINT("node_id", node_id, 1, TERN_NODE_ID_MAX, "1", "this node's id in the cluster"),
    UINT("max_connections", max_connections, 1, UINT32_MAX, "100000",
         "client connections accepted at once"),
    UINT("max_packet_size", max_packet_size, 16, 268435460, "1048576",
         "largest MQTT packet, both directions, bytes"),
    UINT("receive_maximum", receive_maximum, 1, 65535, "1024",
         "unacked QoS>0 PUBLISH a client may send us"),
    UINT("topic_alias_maximum", topic_alias_maximum, 0, 65535, "64",
         "client-to-server topic aliases accepted"),
    UINT("max_keepalive_s", max_keepalive_s, 1, 65535, "65535",
         "cap on client keepalive"),
    UINT("connect_timeout_ms", connect_timeout_ms, 1, 3600000, "10000",
         "accept to CONNECT"),
    UINT("write_buffer_max", write_buffer_max, 1024, TIB, "16777216",
         "unsent bytes per connection before it is closed"),
    UINT("retry_interval_s", retry_interval_s, 0, 86400, "0",
         "in-session re-send of unacked QoS>0, 0 = off"),
    UINT("slow_subscriber_timeout_ms", slow_subscriber_timeout_ms, 0, 3600000, "2000",
         "backlogged subscriber without progress this long meets drop_policy, 0 = off"),
    UINT("max_qos", max_qos, 0, 2, "2", "highest QoS granted"),
    BOOL("retain_available", retain_available, "true", "retained messages enabled"),
    BOOL("wildcard_subscriptions", wildcard_subscriptions, "true", "+ and # allowed"),
    BOOL("shared_subscriptions", shared_subscriptions, "true", "$share/ allowed"),
    BOOL("subscription_identifiers", subscription_identifiers, "true",
         "MQTT 5 subscription identifiers"),
    UINT("client_id_max_len", client_id_max_len, 23, 65535, "65535",
         "longest client id, bytes (MQTT requires at least 23)"),
    {"admin_listen", KEY_HOSTPORT, FIELD(admin_listen), 0, 0, NULL, "127.0.0.1:8081",
     "admin HTTP API address (port 0 = any)"},
    UINT("sys_interval_s", sys_interval_s, 0, 86400, "10",
         "period of the $SYS topics, 0 = off"),
    UINT("inflight_max", limits.inflight_max, 1, 65535, NULL,
         "unacked QoS>0 deliveries per session"),
    UINT("queue_max", limits.queue_max, 1, UINT32_MAX, NULL,
         "queued messages per session"),
    UINT("queue_bytes_max", limits.queue_bytes_max, 1, TIB, NULL,
         "queued payload bytes per session"),
    BOOL("queue_qos0", limits.queue_qos0, NULL, "queue QoS 0 for offline sessions"),
    ENUM("drop_policy", limits.drop_policy, drop_policy_names, NULL,
         "which message a full queue drops"),
    UINT("retained_max", limits.retained_max, 0, UINT32_MAX, NULL,
         "retained messages in the cluster"),
    UINT("retained_bytes_max", limits.retained_bytes_max, 0, TIB, NULL,
         "retained payload bytes in the cluster"),
    UINT("session_expiry_max_s", limits.session_expiry_max_s, 0, UINT32_MAX, NULL,
         "cap on session expiry, 0 = no cap"),
    UINT("message_expiry_max_s", limits.message_expiry_max_s, 0, UINT32_MAX, NULL,
         "cap on message expiry, 0 = no cap"),
    UINT("sessions_max", limits.sessions_max, 1, UINT32_MAX, NULL,
         "sessions in the cluster"),
    {"members", KEY_MEMBERS, FIELD(members), 0, 0, NULL, NULL,
     "cluster members; empty = a single-node cluster"},
    {"raft_address", KEY_HOSTPORT, FIELD(raft_address), 0, 0, NULL, "127.0.0.1:0",
     "single node only: where Raft listens (port 0 = any)"},
    UINT("raft_election_timeout_ms", raft_election_timeout_ms, 50, 60000, "400",
         "Raft election timeout"),
    UINT("raft_heartbeat_timeout_ms", raft_heartbeat_timeout_ms, 10, 10000, "15",
         "Raft heartbeat interval"),
    UINT("raft_snapshot_threshold", raft_snapshot_threshold, 16, UINT32_MAX, "32768",
         "log entries between snapshots"),
    UINT("raft_snapshot_trailing", raft_snapshot_trailing, 0, UINT32_MAX, "2048",
         "log entries kept after a snapshot"),
    UINT("raft_snapshot_bytes", raft_snapshot_bytes, 1048576, TIB, "67108864",
         "log bytes between snapshots (whichever comes first)"),
    ENUM("raft_snapshot_fork", raft_snapshot_fork, snapshot_fork_names, "auto",
         "serialise snapshots in a forked child (the loop stops only for fork()); "
         "auto = when the state is not tiny"),
    UINT("raft_segment_bytes", raft_segment_bytes, 1048576, UINT64_C(1) << 30, "33554432",
         "size of each Raft log segment file, allocated up front"),
    UINT("max_batch_bytes", max_batch_bytes, 4096, 67108864, "1048576",
         "largest Raft entry (a batch of commands)"),
    ENUM("raft_entry_compression", raft_entry_compression, entry_compression_names, "lz4",
         "how a batch of 512 bytes or more is stored in the log and sent to the "
         "leader; none = as builds before it read them (a rolling upgrade from one)"),
    BOOL("join", join, "false",
         "join a running cluster (no bootstrap; ternctl add-node)"),
    {"listeners", KEY_LISTENERS, FIELD(listeners), 0, 0, NULL, NULL,
     "MQTT over TCP, TLS and WebSockets listeners besides listen"},
    UINT("tls_handshake_timeout_ms", tls_handshake_timeout_ms, 100, 600000, "10000",
         "accept to TLS handshake done"),
    UINT("proxy_header_timeout_ms", proxy_header_timeout_ms, 100, 600000, "5000",
         "accept to PROXY protocol header read (proxy_protocol listeners)"),
    UINT("ws_handshake_timeout_ms", ws_handshake_timeout_ms, 100, 600000, "10000",
         "accept to WebSocket upgrade done (ws and wss listeners)"),
    UINT("ws_handshake_bytes_max", ws_handshake_bytes_max, 1024, 65536, "8192",
         "largest WebSocket upgrade request (request line and headers)"),
    {"cluster_tls", KEY_NODE_TLS, FIELD(cluster_tls), 0, 0, NULL, NULL,
     "mutual TLS between nodes: {cert_file, key_file, ca_file[, crl_file]}"},
    {"cluster_name", KEY_STR, FIELD(cluster_name), 0, 0, NULL, "tern",
     "the cluster's name; a data directory of another name is refused"},
    {"log_file", KEY_OPTSTR, FIELD(log_file), 0, 0, NULL, "",
     "append the log to this file, reopened on SIGHUP; \"\" = stderr"},
    /* Who may connect (node/mqtt/access.c, docs/security.md). */
    {"password_file", KEY_OPTSTR, FIELD(password_file), 0, 0, NULL, "",
     "Mosquitto password file ($7$/$6$ entries), \"\" = none"},
    ENUM("allow_anonymous", allow_anonymous, anonymous_names, "auto",
         "clients without a user name; auto = only without password_file, on loopback"),
    {"acl_file", KEY_OPTSTR, FIELD(acl_file), 0, 0, NULL, "",
     "Mosquitto ACL file (topic/user/pattern), \"\" = no ACL"},
    {"admin_token_file", KEY_OPTSTR, FIELD(admin_token_file), 0, 0, NULL, "",
     "admin API bearer token (all but /health), \"\" = no token"},
    UINT("subscriptions_max", subscriptions_max, 1, 1000000, "1000",
         "subscriptions one session may hold"),
    UINT("connections_per_address_max", connections_per_address_max, 0, UINT32_MAX,
         "1000", "client connections from one source address at once, 0 = no limit"),
    UINT("connect_rate_per_address", connect_rate_per_address, 0, UINT32_MAX, "500",
         "connections accepted per second from one source address, 0 = no limit"),
    /* TLS on admin_listen (node/admin_http.c). */
    {"admin_tls_cert_file", KEY_OPTSTR, FIELD(admin_tls_cert_file), 0, 0, NULL, "",
     "PEM certificate chain: admin_listen speaks HTTPS, \"\" = plain HTTP"},
    {"admin_tls_key_file", KEY_OPTSTR, FIELD(admin_tls_key_file), 0, 0, NULL, "",
     "PEM private key of admin_tls_cert_file"},
    {"admin_tls_ca_file", KEY_OPTSTR, FIELD(admin_tls_ca_file), 0, 0, NULL, "",
     "PEM CA: admin clients must present a certificate it signed, \"\" = none asked"},
    /* Per client id (node/mqtt/access_publish.c). */
    UINT("publish_rate_max", publish_rate_max, 0, 1000000, "0",
         "PUBLISH packets per second per client id (token bucket), 0 = no limit"),
    UINT("publish_rate_burst", publish_rate_burst, 0, 1000000, "0",
         "PUBLISH packets a client id may send at once, 0 = publish_rate_max"),
    UINT("publish_quota_max", publish_quota_max, 0, UINT32_MAX, "0",
         "PUBLISH packets per client id per publish_quota_period_s, 0 = no quota"),
    UINT("publish_quota_period_s", publish_quota_period_s, 1, 31536000, "86400",
         "the window of publish_quota_max"),
};

#define NKEYS (sizeof keys / sizeof keys[0])

/* A value before it is checked against a key. */
struct val {
    enum { VAL_NUM, VAL_BOOL, VAL_STR, VAL_OTHER } kind;
    double num;       /* VAL_NUM */
    bool b;           /* VAL_BOOL */
    const char *str;  /* VAL_STR */
    const char *what; /* VAL_OTHER: "null", "an array", "an object" */
    bool text;        /* from the command line: str may spell a number or a bool */
};

static const struct key *find_key(const char *name)
{
    for (size_t i = 0; i < NKEYS; i++) {
        if (strcmp(keys[i].name, name) == 0)
            return &keys[i];
    }
    return NULL;
}

/* --- error messages ---------------------------------------------------------- */

static bool is_decimal(const char *s)
{
    s += (*s == '-');
    if (*s == '\0')
        return false;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return false;
    }
    return true;
}

/* What the user gave, as the message's "got ..." part. */
static void describe_val(const struct val *v, char *buf, size_t cap)
{
    switch (v->kind) {
    case VAL_NUM:
        snprintf(buf, cap, "%.17g", v->num);
        break;
    case VAL_BOOL:
        snprintf(buf, cap, "%s", v->b ? "true" : "false");
        break;
    case VAL_STR: {
        const char *dots = strlen(v->str) > ECHO_MAX ? "..." : "";
        if (v->text && is_decimal(v->str) && !*dots)
            snprintf(buf, cap, "%s", v->str);
        else
            snprintf(buf, cap, "\"%.*s%s\"", ECHO_MAX, v->str, dots);
        break;
    }
    case VAL_OTHER:
        snprintf(buf, cap, "%s", v->what);
        break;
    }
}

/* What the key wants, e.g. "must be an integer from 1 to 65535". */
static void describe_key(const struct key *k, char *buf, size_t cap)
{
    switch (k->type) {
    case KEY_UINT:
        snprintf(buf, cap, "must be an integer from %llu to %llu",
                 (unsigned long long)k->min, (unsigned long long)k->max);
        break;
    case KEY_BOOL:
        snprintf(buf, cap, "must be true or false");
        break;
    case KEY_ENUM: {
        size_t n = (size_t)snprintf(buf, cap, "must be one of ");
        for (size_t i = 0; k->names[i] && n < cap; i++)
            n += (size_t)snprintf(buf + n, cap - n, "%s%s", i ? ", " : "", k->names[i]);
        break;
    }
    case KEY_STR:
        snprintf(buf, cap, "must be a non-empty string of at most %d bytes",
                 TERN_CONFIG_STR_MAX - 1);
        break;
    case KEY_HOSTPORT:
        snprintf(buf, cap, "must be HOST:PORT (port 0 to 65535, IPv6 host in brackets)");
        break;
    case KEY_OPTSTR:
        snprintf(buf, cap, "must be a string of at most %d bytes",
                 TERN_CONFIG_STR_MAX - 1);
        break;
    case KEY_MEMBERS:
        snprintf(
            buf, cap,
            "must be an array of {id, raft, peer, mqtt} (text: ID=RAFT/PEER/MQTT,...)");
        break;
    case KEY_LISTENERS:
        snprintf(buf, cap, "must be an array of {\"type\", \"bind\", ...}");
        break;
    case KEY_NODE_TLS:
        snprintf(buf, cap,
                 "must be an object {\"cert_file\", \"key_file\", \"ca_file\"}");
        break;
    }
}

static int bad_value(const struct key *k, const struct val *v, char *errmsg)
{
    char want[160], got[ECHO_MAX + 8];
    describe_key(k, want, sizeof want);
    describe_val(v, got, sizeof got);
    snprintf(errmsg, TERN_ERRMSG_SIZE, "%s: %s, got %s", k->name, want, got);
    return TERN_EINVAL;
}

/* Edit distance, to suggest the key a typo meant. Names longer than 63 bytes are
 * not keys and get no suggestion. */
static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b), prev[64], cur[64];
    if (la >= 64 || lb >= 64)
        return SIZE_MAX;
    for (size_t j = 0; j <= lb; j++)
        prev[j] = j;
    for (size_t i = 1; i <= la; i++) {
        cur[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t sub = prev[j - 1] + (a[i - 1] != b[j - 1]);
            size_t del = prev[j] + 1, ins = cur[j - 1] + 1;
            cur[j] = sub < del ? (sub < ins ? sub : ins) : (del < ins ? del : ins);
        }
        memcpy(prev, cur, (lb + 1) * sizeof cur[0]);
    }
    return prev[lb];
}

static int unknown_key(const char *name, char *errmsg)
{
    const struct key *best = NULL;
    size_t best_d = 3; /* suggest only close matches */
    for (size_t i = 0; i < NKEYS; i++) {
        size_t d = edit_distance(name, keys[i].name);
        if (d < best_d) {
            best_d = d;
            best = &keys[i];
        }
    }
    const char *dots = strlen(name) > ECHO_MAX ? "..." : "";
    if (best)
        snprintf(errmsg, TERN_ERRMSG_SIZE,
                 "unknown key \"%.*s%s\" (did you mean \"%s\"?)", ECHO_MAX, name, dots,
                 best->name);
    else
        snprintf(errmsg, TERN_ERRMSG_SIZE, "unknown key \"%.*s%s\"", ECHO_MAX, name,
                 dots);
    return TERN_EINVAL;
}

/* --- conversion and storing ------------------------------------------------- */

/* Strict decimal: digits only, no sign, no spaces, no overflow. */
static bool parse_u64(const char *s, uint64_t *out)
{
    uint64_t n = 0;
    if (*s == '\0')
        return false;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return false;
        unsigned d = (unsigned)(*s - '0');
        if (n > (UINT64_MAX - d) / 10)
            return false;
        n = n * 10 + d;
    }
    *out = n;
    return true;
}

static bool val_to_uint(const struct key *k, const struct val *v, uint64_t *out)
{
    if (v->kind == VAL_NUM) {
        /* Range first: it also keeps the cast below defined. */
        if (!(v->num >= (double)k->min && v->num <= (double)k->max))
            return false;
        *out = (uint64_t)v->num;
        return (double)*out == v->num; /* rejects 1.5 */
    }
    if (v->kind == VAL_STR && v->text && parse_u64(v->str, out))
        return *out >= k->min && *out <= k->max;
    return false;
}

static bool val_to_bool(const struct val *v, bool *out)
{
    if (v->kind == VAL_BOOL) {
        *out = v->b;
        return true;
    }
    if (v->kind == VAL_STR && v->text) {
        *out = strcmp(v->str, "true") == 0;
        return *out || strcmp(v->str, "false") == 0;
    }
    return false;
}

static bool val_to_enum(const struct key *k, const struct val *v, uint64_t *out)
{
    if (v->kind != VAL_STR)
        return false;
    for (uint64_t i = 0; k->names[i]; i++) {
        if (strcmp(k->names[i], v->str) == 0) {
            *out = i;
            return true;
        }
    }
    return false;
}

static bool val_to_str(const struct key *k, const struct val *v)
{
    if (v->kind != VAL_STR || (v->str[0] == '\0' && k->type != KEY_OPTSTR) ||
        strlen(v->str) >= TERN_CONFIG_STR_MAX)
        return false;
    if (k->type == KEY_HOSTPORT) {
        if (strcmp(k->name, "listen") == 0 && strcmp(v->str, "none") == 0)
            return true; /* only the listeners of `listeners` */
        char host[TERN_CONFIG_STR_MAX];
        uint16_t port;
        return tern_addr_split(v->str, host, sizeof host, &port) == TERN_OK;
    }
    return true;
}

/* memcpy of the exact width: the field may be a uintN_t or (log_level) an int, and
 * small non-negative values have the same bytes in either. */
static void store_uint(void *field, size_t size, uint64_t n)
{
    uint8_t u8 = (uint8_t)n;
    uint16_t u16 = (uint16_t)n;
    uint32_t u32 = (uint32_t)n;
    const void *src = size == 1   ? (const void *)&u8
                      : size == 2 ? (const void *)&u16
                      : size == 4 ? (const void *)&u32
                                  : (const void *)&n;
    assert(size == 1 || size == 2 || size == 4 || size == 8);
    memcpy(field, src, size);
}

static bool ipv4_hostport(const char *s)
{
    char host[64];
    uint16_t port;
    struct in_addr a4;
    return tern_addr_split(s, host, sizeof(host), &port) == TERN_OK &&
           inet_pton(AF_INET, host, &a4) == 1;
}

/* Members as text: "ID=RAFT/PEER/MQTT,ID=RAFT/PEER/MQTT,..." (the --set form). */
static int members_from_text(struct tern_config *c, const char *s, char *errmsg)
{
    c->member_count = 0;
    while (*s) {
        if (c->member_count == TERN_CLUSTER_MEMBERS_MAX) {
            snprintf(errmsg, TERN_ERRMSG_SIZE, "members: at most %d members",
                     TERN_CLUSTER_MEMBERS_MAX);
            return TERN_EINVAL;
        }
        struct tern_member *m = &c->members[c->member_count];
        char raft[64], peer[64], mqtt[64];
        unsigned id;
        int used = 0;
        if (sscanf(s, "%u=%63[^/]/%63[^/]/%63[^,]%n", &id, raft, peer, mqtt, &used) !=
                4 ||
            id == 0 || !ipv4_hostport(raft) || !ipv4_hostport(peer) ||
            !ipv4_hostport(mqtt)) {
            snprintf(
                errmsg, TERN_ERRMSG_SIZE,
                "members: expected ID=RAFT/PEER/MQTT[,...] with IPV4:PORT addresses, "
                "got \"%.64s\"",
                s);
            return TERN_EINVAL;
        }
        if (id > TERN_NODE_ID_MAX) {
            snprintf(errmsg, TERN_ERRMSG_SIZE,
                     "members: node id %u out of range (1 to %u)", id, TERN_NODE_ID_MAX);
            return TERN_EINVAL;
        }
        m->id = id;
        memcpy(m->raft, raft, sizeof(raft));
        memcpy(m->peer, peer, sizeof(peer));
        memcpy(m->mqtt, mqtt, sizeof(mqtt));
        c->member_count++;
        s += used;
        if (*s == ',')
            s++;
    }
    return TERN_OK;
}

static int member_str(const cJSON *o, const char *name, char *out, size_t i, char *errmsg)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    char host[64];
    uint16_t port;
    struct in_addr a4;
    /* Raft's TCP transport and the peer links take IPv4 literals only. */
    if (!cJSON_IsString(v) || strlen(v->valuestring) >= 64 ||
        tern_addr_split(v->valuestring, host, sizeof(host), &port) != TERN_OK ||
        inet_pton(AF_INET, host, &a4) != 1) {
        snprintf(errmsg, TERN_ERRMSG_SIZE,
                 "members[%zu].%s: must be \"IPV4:PORT\" (an address, not a host name)",
                 i, name);
        return TERN_EINVAL;
    }
    strcpy(out, v->valuestring);
    return TERN_OK;
}

/* Members as JSON: [{"id": 1, "raft": "H:P", "peer": "H:P", "mqtt": "H:P"}, ...] */
static int members_from_json(struct tern_config *c, const cJSON *arr, char *errmsg)
{
    if (!cJSON_IsArray(arr)) {
        snprintf(errmsg, TERN_ERRMSG_SIZE,
                 "members: must be an array of {\"id\", \"raft\", \"peer\", \"mqtt\"}");
        return TERN_EINVAL;
    }
    c->member_count = 0;
    size_t i = 0;
    for (const cJSON *o = arr->child; o; o = o->next, i++) {
        if (i == TERN_CLUSTER_MEMBERS_MAX) {
            snprintf(errmsg, TERN_ERRMSG_SIZE, "members: at most %d members",
                     TERN_CLUSTER_MEMBERS_MAX);
            return TERN_EINVAL;
        }
        struct tern_member *m = &c->members[i];
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(o, "id");
        if (!cJSON_IsObject(o) || !cJSON_IsNumber(id) || id->valuedouble < 1 ||
            id->valuedouble > TERN_NODE_ID_MAX ||
            id->valuedouble != (double)(uint32_t)id->valuedouble) {
            snprintf(errmsg, TERN_ERRMSG_SIZE,
                     "members[%zu].id: must be an integer from 1 to %u", i,
                     TERN_NODE_ID_MAX);
            return TERN_EINVAL;
        }
        m->id = (uint32_t)id->valuedouble;
        for (size_t j = 0; j < i; j++)
            if (c->members[j].id == m->id) {
                snprintf(errmsg, TERN_ERRMSG_SIZE, "members[%zu].id: duplicate id %u", i,
                         m->id);
                return TERN_EINVAL;
            }
        /* Strict like the file: a misspelt key is an error, not a default. */
        for (const cJSON *f = o->child; f; f = f->next) {
            static const char *const known[] = {"id", "raft", "peer", "mqtt", "admin"};
            bool ok = false;
            for (size_t j = 0; j < sizeof(known) / sizeof(known[0]); j++)
                ok = ok || strcmp(f->string, known[j]) == 0;
            if (!ok) {
                snprintf(errmsg, TERN_ERRMSG_SIZE,
                         "members[%zu]: unknown key \"%.*s\" (keys: id, raft, peer, "
                         "mqtt, admin)",
                         i, ECHO_MAX, f->string);
                return TERN_EINVAL;
            }
        }
        int rc = member_str(o, "raft", m->raft, i, errmsg);
        if (rc == TERN_OK)
            rc = member_str(o, "peer", m->peer, i, errmsg);
        if (rc == TERN_OK)
            rc = member_str(o, "mqtt", m->mqtt, i, errmsg);
        m->admin[0] = '\0';
        if (rc == TERN_OK && cJSON_GetObjectItemCaseSensitive(o, "admin"))
            rc = member_str(o, "admin", m->admin, i, errmsg);
        if (rc != TERN_OK)
            return rc;
        c->member_count++;
    }
    return TERN_OK;
}

/* --- listeners ----------------------------------------------------------------- */

static const char *const listener_type_names[] = {"mqtt", "mqtts", "ws", "wss", NULL};
static const char *const tls_version_names[] = {"1.2", "1.3", NULL};

/* A listener's string member: absent leaves "", present must be a non-empty
 * string that fits. */
static int listener_str(const cJSON *o, const char *name, char *out, size_t cap, size_t i,
                        char *errmsg)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    if (!v)
        return TERN_OK;
    if (!cJSON_IsString(v) || v->valuestring[0] == '\0' ||
        strlen(v->valuestring) >= cap) {
        snprintf(errmsg, TERN_ERRMSG_SIZE,
                 "listeners[%zu].%s: must be a non-empty string of at most %zu bytes", i,
                 name, cap - 1);
        return TERN_EINVAL;
    }
    strcpy(out, v->valuestring);
    return TERN_OK;
}

static int listener_bool(const cJSON *o, const char *name, bool *out, size_t i,
                         char *errmsg)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    if (!v)
        return TERN_OK;
    if (!cJSON_IsBool(v)) {
        snprintf(errmsg, TERN_ERRMSG_SIZE, "listeners[%zu].%s: must be true or false", i,
                 name);
        return TERN_EINVAL;
    }
    *out = cJSON_IsTrue(v);
    return TERN_OK;
}

static int listener_name(const cJSON *o, const char *name, const char *const *names,
                         uint8_t *out, bool required, size_t i, char *errmsg)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    if (!v && !required)
        return TERN_OK;
    for (uint8_t j = 0; v && cJSON_IsString(v) && names[j]; j++)
        if (strcmp(names[j], v->valuestring) == 0) {
            *out = j;
            return TERN_OK;
        }
    size_t n = (size_t)snprintf(errmsg, TERN_ERRMSG_SIZE,
                                "listeners[%zu].%s: must be one of", i, name);
    for (size_t j = 0; names[j] && n < TERN_ERRMSG_SIZE; j++)
        n += (size_t)snprintf(errmsg + n, TERN_ERRMSG_SIZE - n, "%s \"%s\"", j ? "," : "",
                              names[j]);
    return TERN_EINVAL;
}

/* A ws listener's path: "/..." of visible ASCII, no query. */
static int listener_path(const cJSON *o, struct tern_listener_config *l, size_t i,
                         char *errmsg)
{
    snprintf(l->path, sizeof(l->path), "/mqtt");
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, "path");
    if (!v)
        return TERN_OK;
    bool ok = cJSON_IsString(v) && v->valuestring[0] == '/' &&
              strlen(v->valuestring) < sizeof(l->path);
    for (const char *p = ok ? v->valuestring : ""; *p; p++)
        if (*p <= ' ' || *p >= 127 || *p == '?' || *p == '#')
            ok = false;
    if (!ok) {
        snprintf(
            errmsg, TERN_ERRMSG_SIZE,
            "listeners[%zu].path: must start with \"/\", at most %zu bytes of visible "
            "ASCII without '?' or '#'",
            i, sizeof(l->path) - 1);
        return TERN_EINVAL;
    }
    strcpy(l->path, v->valuestring);
    return TERN_OK;
}

static int listener_origins(const cJSON *o, struct tern_listener_config *l, size_t i,
                            char *errmsg)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, "allowed_origins");
    if (!v)
        return TERN_OK;
    bool ok = cJSON_IsArray(v) && cJSON_GetArraySize(v) <= TERN_WS_ORIGINS_MAX;
    for (const cJSON *e = ok ? v->child : NULL; e && ok; e = e->next) {
        ok = cJSON_IsString(e) && e->valuestring[0] &&
             strlen(e->valuestring) < TERN_WS_ORIGIN_MAX;
        for (const char *p = ok ? e->valuestring : ""; *p; p++)
            if (*p <= ' ' || *p >= 127 || *p == ',')
                ok = false;
        if (ok)
            strcpy(l->origins[l->origin_count++], e->valuestring);
    }
    if (!ok) {
        snprintf(errmsg, TERN_ERRMSG_SIZE,
                 "listeners[%zu].allowed_origins: must be an array of at most %d origins "
                 "(\"https://host[:port]\", at most %d bytes each)",
                 i, TERN_WS_ORIGINS_MAX, TERN_WS_ORIGIN_MAX - 1);
        return TERN_EINVAL;
    }
    return TERN_OK;
}

static int listener_from_json(struct tern_listener_config *l, const cJSON *o, size_t i,
                              char *errmsg)
{
    /* type, bind and proxy_protocol (any listener); then the TLS members (mqtts,
     * wss); then the WebSocket ones (ws, wss). */
    static const char *const members[] = {"type",
                                          "bind",
                                          "proxy_protocol",
                                          "cert_file",
                                          "key_file",
                                          "ca_file",
                                          "crl_file",
                                          "require_certificate",
                                          "use_identity_as_username",
                                          "ciphers",
                                          "ciphersuites",
                                          "tls_min_version",
                                          "path",
                                          "allowed_origins",
                                          NULL};
    enum { FIRST_TLS = 3, FIRST_WS = 12 };
    if (!cJSON_IsObject(o)) {
        snprintf(errmsg, TERN_ERRMSG_SIZE,
                 "listeners[%zu]: must be an object {\"type\", \"bind\", ...}", i);
        return TERN_EINVAL;
    }
    for (const cJSON *m = o->child; m; m = m->next) {
        size_t j = 0;
        while (members[j] && strcmp(members[j], m->string) != 0)
            j++;
        if (!members[j]) {
            snprintf(errmsg, TERN_ERRMSG_SIZE, "listeners[%zu]: unknown key \"%.64s\"", i,
                     m->string);
            return TERN_EINVAL;
        }
        for (const cJSON *d = o->child; d != m; d = d->next)
            if (strcmp(d->string, m->string) == 0) {
                snprintf(errmsg, TERN_ERRMSG_SIZE, "listeners[%zu].%s: duplicate key", i,
                         m->string);
                return TERN_EINVAL;
            }
    }
    memset(l, 0, sizeof(*l));
    int rc = listener_name(o, "type", listener_type_names, &l->type, true, i, errmsg);
    if (rc == TERN_OK)
        rc = listener_str(o, "bind", l->bind, sizeof(l->bind), i, errmsg);
    if (rc == TERN_OK) {
        char host[64];
        uint16_t port;
        if (!l->bind[0] ||
            tern_addr_split(l->bind, host, sizeof(host), &port) != TERN_OK) {
            snprintf(errmsg, TERN_ERRMSG_SIZE,
                     "listeners[%zu].bind: must be HOST:PORT (port 0 to 65535, IPv6 host "
                     "in brackets)",
                     i);
            return TERN_EINVAL;
        }
    }
    struct {
        const char *name;
        char *field;
    } strs[] = {{"cert_file", l->cert_file}, {"key_file", l->key_file},
                {"ca_file", l->ca_file},     {"crl_file", l->crl_file},
                {"ciphers", l->ciphers},     {"ciphersuites", l->ciphersuites}};
    for (size_t j = 0; rc == TERN_OK && j < sizeof(strs) / sizeof(strs[0]); j++)
        rc = listener_str(o, strs[j].name, strs[j].field, TERN_CONFIG_STR_MAX, i, errmsg);
    if (rc == TERN_OK)
        rc = listener_bool(o, "proxy_protocol", &l->proxy_protocol, i, errmsg);
    if (rc == TERN_OK)
        rc = listener_bool(o, "require_certificate", &l->require_certificate, i, errmsg);
    if (rc == TERN_OK)
        rc = listener_bool(o, "use_identity_as_username", &l->use_identity_as_username, i,
                           errmsg);
    if (rc == TERN_OK)
        rc = listener_name(o, "tls_min_version", tls_version_names, &l->tls_min_version,
                           false, i, errmsg);
    if (rc == TERN_OK && TERN_LISTENER_IS_WS(l->type))
        rc = listener_path(o, l, i, errmsg);
    if (rc == TERN_OK && TERN_LISTENER_IS_WS(l->type))
        rc = listener_origins(o, l, i, errmsg);
    if (rc != TERN_OK)
        return rc;
    for (size_t j = FIRST_TLS; members[j]; j++) {
        bool tls = j < FIRST_WS;
        if ((tls ? TERN_LISTENER_IS_TLS(l->type) : TERN_LISTENER_IS_WS(l->type)) ||
            !cJSON_GetObjectItemCaseSensitive(o, members[j]))
            continue;
        snprintf(errmsg, TERN_ERRMSG_SIZE, "listeners[%zu].%s: only for %s listener", i,
                 members[j], tls ? "an mqtts or wss" : "a ws or wss");
        return TERN_EINVAL;
    }
    if (!TERN_LISTENER_IS_TLS(l->type))
        return TERN_OK;
    const char *missing = !l->cert_file[0]  ? "cert_file"
                          : !l->key_file[0] ? "key_file"
                                            : NULL;
    if (missing) {
        snprintf(errmsg, TERN_ERRMSG_SIZE,
                 "listeners[%zu].%s: required for a TLS listener (mqtts, wss)", i,
                 missing);
        return TERN_EINVAL;
    }
    const char *needs_ca = l->require_certificate ? "require_certificate"
                           : l->crl_file[0]       ? "crl_file"
                                                  : NULL;
    if (needs_ca && !l->ca_file[0]) {
        snprintf(
            errmsg, TERN_ERRMSG_SIZE,
            "listeners[%zu].%s: needs ca_file (the CA client certificates are checked "
            "against)",
            i, needs_ca);
        return TERN_EINVAL;
    }
    if (l->use_identity_as_username && !l->require_certificate) {
        snprintf(
            errmsg, TERN_ERRMSG_SIZE,
            "listeners[%zu].use_identity_as_username: needs require_certificate true", i);
        return TERN_EINVAL;
    }
    return TERN_OK;
}

static int listeners_from_json(struct tern_config *c, const cJSON *arr, char *errmsg)
{
    if (!cJSON_IsArray(arr)) {
        snprintf(errmsg, TERN_ERRMSG_SIZE,
                 "listeners: must be an array of {\"type\", \"bind\", ...}");
        return TERN_EINVAL;
    }
    c->listener_count = 0;
    size_t i = 0;
    for (const cJSON *o = arr->child; o; o = o->next, i++) {
        if (i == TERN_LISTENERS_MAX) {
            snprintf(errmsg, TERN_ERRMSG_SIZE, "listeners: at most %d listeners",
                     TERN_LISTENERS_MAX);
            return TERN_EINVAL;
        }
        int rc = listener_from_json(&c->listeners[i], o, i, errmsg);
        if (rc != TERN_OK)
            return rc;
        c->listener_count++;
    }
    return TERN_OK;
}

static int listeners_from_text(struct tern_config *c, const char *s, char *errmsg)
{
    cJSON *arr = cJSON_Parse(s);
    if (!arr) {
        snprintf(errmsg, TERN_ERRMSG_SIZE,
                 "listeners: must be a JSON array of {\"type\", \"bind\", ...}");
        return TERN_EINVAL;
    }
    int rc = listeners_from_json(c, arr, errmsg);
    cJSON_Delete(arr);
    return rc;
}

static int check_identity_addrs(const struct tern_config *c, char *errmsg);

int tern_config_check(const struct tern_config *c, char *errmsg)
{
    if (strcmp(c->listen, "none") == 0 && c->listener_count == 0) {
        snprintf(errmsg, TERN_ERRMSG_SIZE,
                 "listen: \"none\" and no listeners: no client could connect");
        return TERN_EINVAL;
    }
    for (uint32_t i = 0; i < c->listener_count; i++) {
        const char *b = c->listeners[i].bind;
        char host[64];
        uint16_t port = 0;
        tern_addr_split(b, host, sizeof(host), &port);
        if (port == 0)
            continue; /* any free port: never the same twice */
        if (strcmp(b, c->listen) == 0) {
            snprintf(errmsg, TERN_ERRMSG_SIZE,
                     "listeners[%u].bind: \"%s\" is the address of listen already", i, b);
            return TERN_EINVAL;
        }
        for (uint32_t j = 0; j < i; j++)
            if (strcmp(b, c->listeners[j].bind) == 0) {
                snprintf(errmsg, TERN_ERRMSG_SIZE,
                         "listeners[%u].bind: duplicate of listeners[%u].bind \"%s\"", i,
                         j, b);
                return TERN_EINVAL;
            }
    }
    return check_identity_addrs(c, errmsg);
}

/* The one validation path: checks v against k and stores it into c. */
static int apply_key(struct tern_config *c, const struct key *k, const struct val *v,
                     char *errmsg)
{
    void *field = (char *)c + k->offset;
    uint64_t n;
    bool b;

    switch (k->type) {
    case KEY_UINT:
        if (!val_to_uint(k, v, &n))
            return bad_value(k, v, errmsg);
        store_uint(field, k->size, n);
        return TERN_OK;
    case KEY_BOOL:
        if (!val_to_bool(v, &b))
            return bad_value(k, v, errmsg);
        *(bool *)field = b;
        return TERN_OK;
    case KEY_ENUM:
        if (!val_to_enum(k, v, &n))
            return bad_value(k, v, errmsg);
        store_uint(field, k->size, n);
        return TERN_OK;
    case KEY_STR:
    case KEY_HOSTPORT:
    case KEY_OPTSTR:
        if (!val_to_str(k, v))
            return bad_value(k, v, errmsg);
        memcpy(field, v->str, strlen(v->str) + 1);
        return TERN_OK;
    case KEY_MEMBERS:
        if (v->kind != VAL_STR)
            return bad_value(k, v, errmsg);
        return members_from_text(c, v->str, errmsg);
    case KEY_LISTENERS:
        if (v->kind != VAL_STR)
            return bad_value(k, v, errmsg);
        return listeners_from_text(c, v->str, errmsg);
    case KEY_NODE_TLS:
        if (v->kind != VAL_STR)
            return bad_value(k, v, errmsg);
        return tern_config_cluster_tls_from_text(&c->cluster_tls, v->str, errmsg);
    }
    return TERN_EINVAL;
}

/* --- public ------------------------------------------------------------------ */

void tern_config_defaults(struct tern_config *c)
{
    char errmsg[TERN_ERRMSG_SIZE];
    memset(c, 0, sizeof *c);
    tern_fsm_limits_default(&c->limits);
    for (size_t i = 0; i < NKEYS; i++) {
        const struct key *k = &keys[i];
        /* The table is code: check it where every run passes. */
        assert(k->type != KEY_UINT || k->size == 8 ||
               k->max < (UINT64_C(1) << (8 * k->size)));
        assert(k->type != KEY_UINT || k->max <= JSON_EXACT_MAX);
        if (k->def) {
            int rc = tern_config_set(c, k->name, k->def, errmsg);
            assert(rc == TERN_OK);
            (void)rc;
        }
    }
}

int tern_config_set(struct tern_config *c, const char *key, const char *value,
                    char *errmsg)
{
    if (!key || !value) {
        snprintf(errmsg, TERN_ERRMSG_SIZE, "config: key and value are required");
        return TERN_EINVAL;
    }
    const struct key *k = find_key(key);
    if (!k)
        return unknown_key(key, errmsg);
    struct val v = {.kind = VAL_STR, .str = value, .text = true};
    return apply_key(c, k, &v, errmsg);
}

static struct val val_from_json(const cJSON *item)
{
    struct val v = {.kind = VAL_OTHER, .what = "null"};
    if (cJSON_IsNumber(item)) {
        v.kind = VAL_NUM;
        v.num = item->valuedouble;
    } else if (cJSON_IsBool(item)) {
        v.kind = VAL_BOOL;
        v.b = cJSON_IsTrue(item);
    } else if (cJSON_IsString(item)) {
        v.kind = VAL_STR;
        v.str = item->valuestring;
    } else if (cJSON_IsArray(item)) {
        v.what = "an array";
    } else if (cJSON_IsObject(item)) {
        v.what = "an object";
    }
    return v;
}

/* "line L, column C" (1-based, columns in bytes) of pos in json. */
static int syntax_error(const char *json, size_t len, const char *pos, const char *what,
                        char *errmsg)
{
    size_t line = 1, col = 1;
    size_t off = pos && pos >= json && pos <= json + len ? (size_t)(pos - json) : 0;
    for (size_t i = 0; i < off; i++) {
        if (json[i] == '\n') {
            line++;
            col = 1;
        } else {
            col++;
        }
    }
    snprintf(errmsg, TERN_ERRMSG_SIZE, "config: %s at line %zu, column %zu", what, line,
             col);
    return TERN_EINVAL;
}

static int apply_object(struct tern_config *c, const cJSON *root, char *errmsg)
{
    bool seen[NKEYS] = {false};
    for (const cJSON *item = root->child; item; item = item->next) {
        const struct key *k = find_key(item->string);
        if (!k)
            return unknown_key(item->string, errmsg);
        /* cJSON keeps duplicates; the last silently winning would hide a mistake. */
        if (seen[k - keys]) {
            snprintf(errmsg, TERN_ERRMSG_SIZE, "%s: duplicate key", k->name);
            return TERN_EINVAL;
        }
        seen[k - keys] = true;
        if (k->type == KEY_MEMBERS) {
            int rc = members_from_json(c, item, errmsg);
            if (rc != TERN_OK)
                return rc;
            continue;
        }
        if (k->type == KEY_LISTENERS) {
            int rc = listeners_from_json(c, item, errmsg);
            if (rc != TERN_OK)
                return rc;
            continue;
        }
        if (k->type == KEY_NODE_TLS) {
            int rc = tern_config_cluster_tls_from_json(&c->cluster_tls, item, errmsg);
            if (rc != TERN_OK)
                return rc;
            continue;
        }
        struct val v = val_from_json(item);
        int rc = apply_key(c, k, &v, errmsg);
        if (rc != TERN_OK)
            return rc;
    }
    return TERN_OK;
}

/* First byte in [p, end) that is not JSON whitespace, or end. */
static const char *skip_space(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

int tern_config_load_json(struct tern_config *c, const char *json, size_t len,
                          char *errmsg)
{
    /* The error position comes from return_parse_end: the same pointer as
     * cJSON_GetErrorPtr(), without reading cJSON's global. */
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(json, len, &end, false);
    if (!root)
        return syntax_error(json, len, end, "invalid JSON", errmsg);
    int rc;
    const char *rest = skip_space(end, json + len);
    if (rest != json + len) {
        rc = syntax_error(json, len, rest, "unexpected text after the JSON object",
                          errmsg);
    } else if (!cJSON_IsObject(root)) {
        snprintf(errmsg, TERN_ERRMSG_SIZE, "config: top level must be a JSON object");
        rc = TERN_EINVAL;
    } else {
        /* Work on a copy: a file with an error changes nothing. */
        struct tern_config tmp = *c;
        rc = apply_object(&tmp, root, errmsg);
        if (rc == TERN_OK)
            *c = tmp;
    }
    cJSON_Delete(root);
    return rc;
}

/* Reads the whole file into a malloc'd buffer. */
static int read_file(const char *path, char **out, size_t *len, char *errmsg)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(errmsg, TERN_ERRMSG_SIZE, "cannot open: %s", strerror(errno));
        return TERN_EIO;
    }
    int rc = TERN_OK;
    char *buf = malloc(CONFIG_FILE_MAX + 1);
    size_t n = buf ? fread(buf, 1, CONFIG_FILE_MAX + 1, f) : 0;
    if (!buf) {
        snprintf(errmsg, TERN_ERRMSG_SIZE, "out of memory");
        rc = TERN_ENOMEM;
    } else if (ferror(f)) {
        snprintf(errmsg, TERN_ERRMSG_SIZE, "cannot read: %s", strerror(errno));
        rc = TERN_EIO;
    } else if (n > CONFIG_FILE_MAX) {
        snprintf(errmsg, TERN_ERRMSG_SIZE, "larger than %d bytes", CONFIG_FILE_MAX);
        rc = TERN_ETOOBIG;
    }
    fclose(f);
    if (rc != TERN_OK) {
        free(buf);
        return rc;
    }
    *out = buf;
    *len = n;
    return TERN_OK;
}

/* "PATH: message", the path cut short if the two do not fit. Built by hand:
 * snprintf into the same size would warn about truncation, which is intended. */
static void prefix_path(const char *path, char *errmsg)
{
    size_t mlen = strnlen(errmsg, TERN_ERRMSG_SIZE - 1);
    size_t room = TERN_ERRMSG_SIZE - 1 - mlen; /* for "PATH: " */
    size_t plen = strlen(path);
    if (room < 3)
        return; /* no room for a path: the message alone */
    if (plen > room - 2)
        plen = room - 2;
    memmove(errmsg + plen + 2, errmsg, mlen);
    memcpy(errmsg, path, plen);
    memcpy(errmsg + plen, ": ", 2);
    errmsg[plen + 2 + mlen] = '\0';
}

int tern_config_load_file(struct tern_config *c, const char *path, char *errmsg)
{
    char *buf = NULL;
    size_t len = 0;
    int rc = read_file(path, &buf, &len, errmsg);
    if (rc == TERN_OK) {
        rc = tern_config_load_json(c, buf, len, errmsg);
        free(buf);
    }
    if (rc != TERN_OK)
        prefix_path(path, errmsg);
    return rc;
}

const char *tern_log_level_name(int level)
{
    if (level < TERN_LOG_ERROR || level > TERN_LOG_DEBUG)
        return "unknown";
    return log_level_names[level];
}

/* --- checks across keys (issue 17) ------------------------------------------- */

static bool ip_hostport(const char *s)
{
    char host[TERN_CONFIG_STR_MAX];
    uint16_t port;
    struct in6_addr a6;
    return tern_addr_split(s, host, sizeof(host), &port) == TERN_OK &&
           (inet_pton(AF_INET, host, &a6) == 1 || inet_pton(AF_INET6, host, &a6) == 1);
}

static int check_ip(const char *key, const char *v, char *errmsg)
{
    if (ip_hostport(v))
        return TERN_OK;
    snprintf(errmsg, TERN_ERRMSG_SIZE,
             "%s: must be an IP address and port (no host names), got \"%.100s\"", key,
             v);
    return TERN_EINVAL;
}

static int check_members(const struct tern_config *c, char *errmsg)
{
    char ids[160] = "";
    size_t len = 0;
    if (c->member_count == 0 || c->join)
        return TERN_OK;
    for (uint32_t i = 0; i < c->member_count; i++) {
        if (c->members[i].id == c->node_id)
            return TERN_OK;
        int n = snprintf(ids + len, sizeof(ids) - len, "%s%u", i ? ", " : "",
                         c->members[i].id);
        if (n > 0 && (size_t)n < sizeof(ids) - len)
            len += (size_t)n;
    }
    snprintf(errmsg, TERN_ERRMSG_SIZE,
             "node_id %u is not in members (ids %.100s): fix node_id, or set join to add "
             "this node to a running cluster",
             c->node_id, ids);
    return TERN_EINVAL;
}

static int check_identity_addrs(const struct tern_config *c, char *errmsg)
{
    struct stat st;
    int rc = check_members(c, errmsg);
    if (rc == TERN_OK && strcmp(c->listen, "none") != 0)
        rc = check_ip("listen", c->listen, errmsg);
    if (rc == TERN_OK)
        rc = check_ip("admin_listen", c->admin_listen, errmsg);
    if (rc == TERN_OK && c->member_count == 0)
        rc = check_ip("raft_address", c->raft_address, errmsg);
    if (rc == TERN_OK && stat(c->data_dir, &st) == 0 && !S_ISDIR(st.st_mode)) {
        snprintf(errmsg, TERN_ERRMSG_SIZE, "data_dir: \"%.200s\" is not a directory",
                 c->data_dir);
        rc = TERN_EINVAL;
    }
    return rc;
}

static uint64_t fnv1a(uint64_t h, const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)s[i]) * UINT64_C(0x100000001b3);
    return h;
}

void tern_config_cluster_id(const struct tern_config *c, char out[17])
{
    out[0] = '\0';
    if (c->member_count == 0)
        return;
    /* Members in id order, so the order they are listed in does not matter. */
    uint64_t h =
        fnv1a(UINT64_C(0xcbf29ce484222325), c->cluster_name, strlen(c->cluster_name) + 1);
    uint32_t last = 0;
    for (uint32_t k = 0; k < c->member_count; k++) {
        const struct tern_member *next = NULL;
        for (uint32_t i = 0; i < c->member_count; i++)
            if (c->members[i].id > last && (!next || c->members[i].id < next->id))
                next = &c->members[i];
        if (!next)
            break; /* a duplicate id (the text form does not refuse them) */
        char one[96];
        int n = snprintf(one, sizeof(one), "%u %s\n", next->id, next->raft);
        h = fnv1a(h, one, (size_t)n);
        last = next->id;
    }
    snprintf(out, 17, "%016" PRIx64, h);
}

/* --- the configuration in effect, as a config file (ternd --print-config) ------- */

static uint64_t load_uint(const void *field, size_t size)
{
    uint8_t u8;
    uint16_t u16;
    uint32_t u32;
    uint64_t u64;
    switch (size) {
    case 1:
        memcpy(&u8, field, 1);
        return u8;
    case 2:
        memcpy(&u16, field, 2);
        return u16;
    case 4:
        memcpy(&u32, field, 4);
        return u32;
    default:
        memcpy(&u64, field, 8);
        return u64;
    }
}

char *tern_config_to_json(const struct tern_config *c)
{
    cJSON *o = cJSON_CreateObject();
    for (size_t i = 0; o && i < NKEYS; i++) {
        const struct key *k = &keys[i];
        const void *field = (const char *)c + k->offset;
        switch (k->type) {
        case KEY_UINT:
            cJSON_AddNumberToObject(o, k->name, (double)load_uint(field, k->size));
            break;
        case KEY_BOOL:
            cJSON_AddBoolToObject(o, k->name, *(const bool *)field);
            break;
        case KEY_ENUM:
            cJSON_AddStringToObject(o, k->name, k->names[load_uint(field, k->size)]);
            break;
        case KEY_STR:
        case KEY_HOSTPORT:
        case KEY_OPTSTR:
            cJSON_AddStringToObject(o, k->name, (const char *)field);
            break;
        case KEY_LISTENERS: {
            cJSON *arr = cJSON_AddArrayToObject(o, k->name);
            for (uint32_t j = 0; arr && j < c->listener_count; j++) {
                const struct tern_listener_config *l = &c->listeners[j];
                cJSON *e = cJSON_CreateObject();
                cJSON_AddStringToObject(e, "type", listener_type_names[l->type]);
                cJSON_AddStringToObject(e, "bind", l->bind);
                cJSON_AddBoolToObject(e, "proxy_protocol", l->proxy_protocol);
                const char *strs[][2] = {
                    {"cert_file", l->cert_file}, {"key_file", l->key_file},
                    {"ca_file", l->ca_file},     {"crl_file", l->crl_file},
                    {"ciphers", l->ciphers},     {"ciphersuites", l->ciphersuites}};
                for (size_t m = 0; m < sizeof(strs) / sizeof(strs[0]); m++)
                    if (strs[m][1][0])
                        cJSON_AddStringToObject(e, strs[m][0], strs[m][1]);
                if (TERN_LISTENER_IS_WS(l->type)) {
                    cJSON_AddStringToObject(e, "path", l->path);
                    cJSON *orr = cJSON_AddArrayToObject(e, "allowed_origins");
                    for (uint32_t m = 0; orr && m < l->origin_count; m++)
                        cJSON_AddItemToArray(orr, cJSON_CreateString(l->origins[m]));
                }
                if (TERN_LISTENER_IS_TLS(l->type)) {
                    cJSON_AddBoolToObject(e, "require_certificate",
                                          l->require_certificate);
                    cJSON_AddBoolToObject(e, "use_identity_as_username",
                                          l->use_identity_as_username);
                    cJSON_AddStringToObject(e, "tls_min_version",
                                            tls_version_names[l->tls_min_version]);
                }
                cJSON_AddItemToArray(arr, e);
            }
            break;
        }
        case KEY_NODE_TLS:
            cJSON_AddItemToObject(o, k->name,
                                  tern_config_cluster_tls_to_json(&c->cluster_tls));
            break;
        case KEY_MEMBERS: {
            cJSON *arr = cJSON_AddArrayToObject(o, k->name);
            for (uint32_t j = 0; arr && j < c->member_count; j++) {
                const struct tern_member *m = &c->members[j];
                cJSON *e = cJSON_CreateObject();
                cJSON_AddNumberToObject(e, "id", m->id);
                cJSON_AddStringToObject(e, "raft", m->raft);
                cJSON_AddStringToObject(e, "peer", m->peer);
                cJSON_AddStringToObject(e, "mqtt", m->mqtt);
                if (m->admin[0])
                    cJSON_AddStringToObject(e, "admin", m->admin);
                cJSON_AddItemToArray(arr, e);
            }
            break;
        }
        }
    }
    char *out = o ? cJSON_Print(o) : NULL;
    cJSON_Delete(o);
    return out;
}
