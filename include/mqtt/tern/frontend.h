/* The MQTT front end of one ternd process (node/mqtt): the node's state, its
 * connections, the packet handlers, delivery and flow control. The admin API
 * (tern/admin.h) and the process around it (node/node.h) sit above it; nothing
 * here calls them.
 *
 * One libuv loop. A tern_node owns the listener, every client connection, the
 * node-local FSM (clean sessions) and the cluster (replicated FSM + log).
 *
 * Where a session lives:
 *  - every session is registered in the replicated FSM (client id, owner node,
 *    epoch, will), so takeover and wills work across nodes;
 *  - a persistent session (expiry > 0, or resumed) keeps its subscriptions,
 *    queue and in-flight state there too;
 *  - a clean session keeps them in the node-local FSM, applied directly.
 * The packet handlers talk to either through the same commands (effects.c).
 */
#ifndef TERN_FRONTEND_H
#define TERN_FRONTEND_H

#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#include "tern/cluster.h"
#include "tern/codec.h"
#include "tern/config.h"
#include "tern/fsm.h"

#include "tern/clients.h"
#include "tern/ws.h"

struct tern_conn;
struct tern_acks;
struct tern_deferred_pub;
struct route;
struct tern_admin;
struct tern_tls_ctx;
struct tern_tls_engine;
struct tern_access;
struct tern_proxy_parser;

#define TERN_LOOP_BUCKETS_US                                                             \
    {                                                                                    \
        100, 1000, 5000, 10000, 20000, 50000, 100000                                     \
    }

/* Counters for metrics; the FSMs keep their own. */
struct tern_node_stats {
    uint64_t connections_accepted;
    uint64_t connections_rejected; /* max_connections */
    uint64_t protocol_errors;
    uint64_t msgs_in[3];  /* PUBLISH received by QoS */
    uint64_t msgs_out[3]; /* PUBLISH sent by QoS */
    uint64_t bytes_in, bytes_out;
    uint64_t dropped_too_large;   /* not sent: over the client's max packet size */
    uint64_t dropped_slow_client; /* connections closed: write buffer full */
    uint64_t dropped_forward;     /* not forwarded to a node: peer link down or full */
    uint64_t publishers_paused;   /* times a publisher was paused (peer link backlog) */
    uint64_t snapshots_installed; /* replicated state replaced by a snapshot */
    uint64_t publishers_held;     /* times a publisher was held (a subscriber's queue) */
    uint64_t slow_subscribers;    /* times a subscriber timed out (flow.c) */
    uint64_t forwards_parked;     /* forwards that waited for room (flow_park.c) */
    uint64_t dropped_parked;      /* ... dropped: over the bound of what waits */
    uint64_t tls_handshakes;      /* TLS handshakes completed */
    uint64_t tls_handshake_failures; /* failed or timed out (the connection closed) */
    uint64_t tls_reloads;            /* SIGHUP: listeners whose TLS files were reloaded */
    uint64_t tls_reload_failures;    /* ... that kept their old files (a bad new one) */
    uint64_t subscriptions_refused;  /* SUBSCRIBE entries past subscriptions_max */
    uint64_t proxy_headers;          /* PROXY protocol headers read (conn_proxy.c) */
    uint64_t proxy_refused;         /* connections without a valid one in time (closed) */
    uint64_t ws_handshakes;         /* WebSocket upgrades accepted (ws, wss) */
    uint64_t ws_handshake_failures; /* refused (HTTP 4xx) or timed out */
    uint64_t ws_protocol_errors;    /* closed for a bad frame (close 1002, 1003, 1009) */
    /* Loop iterations by busy time (work, not waiting in poll): the buckets'
     * upper bounds are TERN_LOOP_BUCKETS_US; the last counts the rest. */
    uint64_t loop_busy[8];
    uint64_t loop_busy_max_us;
    uint64_t loop_busy_sum_us; /* of every iteration counted in loop_busy */
};

/* One MQTT listener (listener.c): `listen`, or one of `listeners`. */
struct tern_listener {
    uv_tcp_t tcp;
    struct tern_node *node;
    const char *bind;                       /* the configured address */
    const struct tern_listener_config *cfg; /* NULL: `listen` (plain) */
    struct tern_tls_ctx *tls;               /* mqtts, wss; replaced on SIGHUP */
    bool open;
    bool ws; /* ws, wss: a WebSocket engine per connection, made with ws_opts */
    struct tern_ws_opts ws_opts;
    const char *ws_origins[TERN_WS_ORIGINS_MAX];
};
#define TERN_NODE_LISTENERS_MAX (TERN_LISTENERS_MAX + 1)

struct tern_node {
    uv_loop_t *loop;
    struct tern_config cfg;
    struct tern_listener listeners[TERN_NODE_LISTENERS_MAX];
    uint32_t listener_count;
    /* Loop-wide TLS buffers (conn.c): ciphertext read, ciphertext to write; and
     * a wss connection's plaintext read (WebSocket frames). */
    uint8_t *tls_in, *tls_out, *ws_in;
    uv_timer_t tick_timer; /* drives TICK commands: expiry, delayed wills */
    uv_prepare_t flush;    /* writes out what this loop turn produced */
    uint64_t loop_last_ns, loop_last_idle_ns; /* loop busy-time measurement */
    uv_signal_t sig_int, sig_term, sig_hup;
    /* Reads the configuration again (file, then flags) for a reload; NULL: none. */
    int (*load_config)(struct tern_config *cfg, char *errmsg);
    struct tern_cluster *cluster; /* replicated FSM */
    struct tern_fsm *local;       /* clean sessions */
    struct tern_conn *conns;      /* all connections, intrusive list */
    uint32_t conn_count;
    uint32_t paused_count;    /* connections paused by tern_conn_pause */
    uint64_t paused_scan_ms;  /* last look for paused connections to resume */
    struct tern_conn **dirty; /* connections with output to flush */
    size_t dirty_count, dirty_cap;
    struct tern_clients clients; /* client id -> connection */
    struct tern_buf *rshared;    /* loop-wide read buffer (conn.c) */
    uint64_t next_client_seq;    /* assigned client ids */
    uint64_t epoch_local;
    struct tern_node_stats stats;
    struct tern_hmap routes; /* clean-session filters -> struct route (routes.c) */
    uint64_t shared_rr;      /* publishes routed to shared groups (routes.c) */
    uv_timer_t quorum_timer;
    uv_timer_t retry_timer;    /* in-session retry, when retry_interval_s > 0 */
    uv_timer_t conn_timer;     /* connect timeouts and keepalives (tern_conn_sweep) */
    uint64_t unready_since_ms; /* 0 while the cluster can commit */
    struct tern_admin *admin;  /* admin HTTP API, $SYS (node/admin) */
    bool draining;             /* drained by the admin API (drain.c) */
    bool stopping;
    bool was_ready;
    bool tick_proposed;
    /* Replicated limits (node.c): a LIMITS proposal of ours is in flight; the
     * cluster's limits last warned about as differing from our configuration. */
    bool limits_proposed;
    bool limits_warned;
    struct tern_fsm_limits limits_warned_of;
    /* Cluster id (node/identity.c): cfg.cluster_id as a number (0: not known
     * yet, a joined node), whether it was seen in the replicated state, a
     * CLUSTER_ID of ours in flight, the refused id last logged. */
    uint64_t cluster_id;
    bool cluster_id_parsed, cluster_id_replicated, cluster_id_proposed;
    uint64_t cluster_id_refused_logged;
    /* Flow control (flow.c): backlogged sessions and the publishers they hold. */
    struct tern_flow *flow;
    uint32_t flow_count;
    struct tern_flow_peer *flow_peer; /* held for other nodes (flow_peer.c) */
    struct tern_flow_park *flow_park; /* forwards waiting for room (flow_park.c) */
    uint32_t held_count;              /* connections held (tern_conn_hold) */
    struct tern_access *access;       /* password file, anonymous rule (access.c) */
};

enum tern_conn_state {
    TERN_CONN_NEW,        /* waiting for CONNECT */
    TERN_CONN_WAITING,    /* its CONNECT waits for an earlier one (tern_connect_waits) */
    TERN_CONN_CONNECTING, /* SESSION_OPEN proposed */
    TERN_CONN_ACTIVE,
    TERN_CONN_CLOSING,
};

/* Outbound topic aliases: a small table from topic to alias, filled until the
 * client's topic alias maximum, then new topics go without alias. */
#define TERN_OUT_ALIAS_MAX 64 /* fits conn->client_alias_max, a uint8_t */

struct tern_in_alias {
    char *topic;
    uint16_t len;
};

/* The client's address, kept compactly (formatted only for logs and the admin
 * API): a string would cost 64 bytes on every connection. */
struct tern_conn_addr {
    uint8_t addr[16]; /* IPv4 in the first 4 bytes */
    uint16_t port;
    uint8_t family; /* 0 unknown, 4 or 6 */
};
#define TERN_PEER_STRLEN 56

/* A connection's byte buffer: length and capacity in front of the bytes, so a
 * connection without one pays a single pointer. */
struct tern_buf {
    uint32_t len, cap;
    uint8_t data[];
};
#define TERN_READ_CHUNK 65536

/* What only some connections need, allocated on first use (tern_conn_opt) and
 * kept until the connection is freed: an idle device's connection has none. */
struct tern_conn_opt {
    /* Inbound topic aliases (v5), index 1..topic_alias_maximum. */
    struct tern_in_alias *in_alias;
    /* Outbound topic aliases: TERN_OUT_ALIAS_MAX entries, allocated on first use. */
    char **out_alias_topic;
    /* Acknowledgements to the client in the order MQTT requires (PUBLISH order):
     * an ack whose durable effects are not committed yet holds back later ones. */
    struct tern_acks *acks; /* NULL when none is pending (acks.c) */
    /* SUBACK / UNSUBACK waiting for the command to apply. The SUBACK goes out from
     * the `subscribed` effect, before any retained message. */
    struct tern_pending_sub *subs;
    uint32_t ack_seq_next; /* sequence number of the next ack slot */
    /* PUBLISHes whose clean delivery and ack wait, in order: logged ones until
     * they commit, and the ones behind them (handle_publish.c). */
    struct tern_deferred_pub *deferred, *deferred_tail;
    /* Of those, how many are in the log: a clean SUBSCRIBE waits behind them
     * (read your own retained writes). */
    uint32_t log_pending;
    uint32_t client_max_packet; /* the client's limit (v5 CONNECT), 0 = none */
    uint8_t client_alias_max;   /* min(the client's, TERN_OUT_ALIAS_MAX) */
    uint8_t out_alias_count;
    struct tern_conn_tls *tls; /* a connection to an mqtts listener (conn.c) */
    /* A proxy_protocol listener's connection until its header is read. */
    struct tern_proxy_parser *proxy;
    struct tern_ws_engine *ws; /* a connection to a ws or wss listener (conn.c) */
    uint16_t username_len;
    char
        *username; /* the authenticated user, kept only when an ACL needs it (access.c) */
    struct tern_conn_scram *scram; /* an MQTT 5 SCRAM exchange (access_scram.c) */
};

/* A TLS connection's state: behind the optional part, so a plain connection
 * pays nothing for it. */
struct tern_conn_tls {
    struct tern_tls_engine *engine;
    const struct tern_listener *listener;
    /* The client certificate's CN when the listener has use_identity_as_username
     * (access.c takes it as the user name); NULL otherwise. */
    char *username;
};

/* One client connection. Ordered by size so an idle connection costs as little
 * as it can: everything optional (buffers, aliases, pending acks) is behind a
 * pointer filled on first use. */
struct tern_conn {
    struct tern_conn *next, *prev;
    struct tern_node *node;
    uv_tcp_t tcp;

    struct tern_buf *rbuf; /* a partial packet kept between reads */
    struct tern_buf *wbuf; /* output gathered in this loop turn, flushed at once */
    char *client_id;
    uint64_t epoch;       /* in the replicated FSM */
    uint64_t local_epoch; /* in the local FSM (clean sessions); 0 = not opened */
    union {
        uint64_t last_rx_ms; /* the accept time until CONNACK */
        uint32_t paused_on;  /* while paused (not read, no keepalive): the node
                                whose link is backed up */
    };
    struct tern_conn_opt *opt; /* NULL until needed */
    /* In-session retry (retry_interval_s) waits this long after the later of the
     * client's last PUBACK/PUBREC/PUBCOMP and our last retry. */
    uint32_t retry_quiet_since_s;
    int refs; /* pending proposals + 1 while the handle is open */

    /* Inbound: QoS>0 PUBLISH received and not yet fully acknowledged. */
    uint32_t inbound_unacked;
    uint32_t session_expiry_s;
    struct tern_conn_addr peer;
    uint16_t client_id_len;
    uint16_t keepalive_s;
    uint16_t client_receive_max; /* client's limit (v5 CONNECT property) */
    uint8_t state;               /* enum tern_conn_state */
    uint8_t version;
    bool persistent : 1;       /* session lives in the replicated FSM */
    bool will_suppressed : 1;  /* normal DISCONNECT */
    bool assigned_id : 1;      /* client id chosen by the broker (v5: tell the client) */
    bool keepalive_capped : 1; /* v5: send server keepalive */
    bool expiry_capped : 1;    /* v5: send the session expiry we use */
    bool disconnect_sent : 1;
    bool request_problem_info : 1;
    bool flush_scheduled : 1;
    bool paused : 1;       /* not read: a link to another node is backed up */
    bool v31 : 1;          /* MQTT 3.1 (MQIsdp): version says 3.1.1, CONNACK differs */
    bool draining : 1;     /* closing: write side shut, reading and discarding */
    bool read_ended : 1;   /* the client closed (EOF) or the read failed */
    bool addr_counted : 1; /* in access.c's per-address count */
    bool proxied : 1;      /* from a proxy_protocol listener (conn_proxy.c) */
    bool proxy_addr : 1;   /* peer is the client's address from the PROXY header */
    bool acl_partial : 1;  /* a subscription is only partly readable (access.c) */
    uint16_t acl_gen;      /* the ACL acl_partial was worked out under; 0 = none */
};

struct tern_ack_slot {
    uint16_t packet_id;
    uint8_t type; /* TERN_PUBACK, TERN_PUBREC, TERN_PUBCOMP */
    uint8_t reason;
    bool done;
};

struct tern_pending_sub {
    struct tern_pending_sub *next;
    uint8_t type; /* TERN_SUBACK or TERN_UNSUBACK */
    uint16_t packet_id;
    uint32_t count;
    uint8_t reasons[];
};

/* access.c: who may connect. */
struct tern_access_stats {
    uint64_t successes;         /* CONNECTs with a user name and the right password */
    uint64_t failures;          /* bad user name or password */
    uint64_t throttled;         /* refused unchecked: too soon after a failure */
    uint64_t anonymous_refused; /* no user name, allow_anonymous off */
    uint64_t reloads, reload_failures;
    uint64_t acl_denied[2];          /* [0] read (SUBSCRIBE), [1] write (PUBLISH, will) */
    uint64_t acl_resume_removed;     /* stored subscriptions removed at a resume */
    uint64_t acl_delivery_denied;    /* messages not sent: the ACL denies their topic */
    uint64_t rate_refused;           /* connect_rate_per_address */
    uint64_t per_address_refused;    /* connections_per_address_max */
    uint64_t scram_ok, scram_failed; /* MQTT 5 SCRAM-SHA-256 exchanges */
    uint64_t scram_bad_method;       /* CONNECT with another Authentication Method */
    uint64_t publish_rate_refused;   /* PUBLISH past publish_rate_max */
    uint64_t publish_quota_refused;  /* PUBLISH past publish_quota_max */
    uint64_t publish_limits_evicted; /* client ids whose limit state was reused */
};
int tern_access_init(struct tern_node *n, char *errmsg);
void tern_access_free(struct tern_node *n);
int tern_access_reload(struct tern_node *n); /* SIGHUP; keeps the old file on error */
/* TERN_OK, or TERN_EPROTO with the CONNACK codes to refuse with in *v5 / *v3. */
int tern_access_connect(struct tern_conn *c, const struct tern_connect *p, uint8_t *v5,
                        uint8_t *v3);
const struct tern_access_stats *tern_access_stats(const struct tern_node *n);
const char *tern_access_pw_digest(const struct tern_node *n); /* "" if none */
bool tern_access_anonymous(const struct tern_node *n);
const char *tern_access_acl_digest(const struct tern_node *n);  /* "" if none */
const char *tern_access_admin_token(const struct tern_node *n); /* "" if none */
/* Whether the ACL lets c read (TERN_ACL_READ: a SUBSCRIBE filter) or write
 * (TERN_ACL_WRITE: a PUBLISH or will topic); counts refusals. */
bool tern_access_may(struct tern_conn *c, const uint8_t *topic, size_t len, int access);
/* Whether c may receive a message on topic (a name), checked for every delivery:
 * a subscription may reach topics a deny rule covers, and a reload may have
 * taken rights away. Cheap while every subscription of c is readable whole under
 * the rules in force (worked out once per connection and ACL load); counts
 * refusals. */
bool tern_access_may_receive(struct tern_conn *c, const uint8_t *topic, size_t len);
/* A resumed session's stored subscriptions that this node's ACL does not allow
 * (made on another node, or before a reload) are removed (UNSUBSCRIBE). */
void tern_access_check_resumed(struct tern_conn *c, const struct tern_fsm_session *s);
/* access_scram.c: MQTT 5 enhanced authentication (SCRAM-SHA-256). A v5 CONNECT
 * with an Authentication Method goes to tern_access_scram_connect (frame: its
 * bytes, kept until the proof is checked; an unknown method is refused, 0x8C),
 * AUTH packets before CONNACK to tern_access_scram_auth, which handles the
 * CONNECT once the proof is right. Both return as the packet handlers do. */
int tern_access_scram_connect(struct tern_conn *c, const struct tern_connect *p,
                              const uint8_t *frame, size_t frame_len, uint8_t *reason);
int tern_access_scram_auth(struct tern_conn *c, const struct tern_disconnect *p,
                           uint8_t *reason);
/* An exchange is under way (no CONNACK yet). */
bool tern_access_scram_pending(const struct tern_conn *c);
/* The user the exchange authenticated, or NULL. */
const char *tern_access_scram_user(const struct tern_conn *c, size_t *len);
/* Adds the server-final-message to the CONNACK's properties (if any). */
void tern_access_scram_connack(struct tern_conn *c, struct tern_props *pr);
void tern_access_scram_free(struct tern_conn_opt *o);
/* access_publish.c: publish_rate_max and publish_quota_max. Takes one PUBLISH of
 * c's client id: 0 if it may go, else TERN_RC_MESSAGE_RATE_TOO_HIGH or
 * TERN_RC_QUOTA_EXCEEDED (counted; the PUBLISH is refused). */
uint8_t tern_access_publish_take(struct tern_conn *c);
/* At accept, before anything is read: false if the source address is past
 * connect_rate_per_address or connections_per_address_max (then close it).
 * tern_access_release when a counted connection is freed. */
bool tern_access_accept(struct tern_conn *c);
void tern_access_release(struct tern_conn *c);

/* state.c: the front end's view of the node */
/* False while the cluster cannot commit (past a grace period). */
bool tern_node_available(const struct tern_node *n);
/* Wall clock, ms since the Unix epoch: only for what goes into commands (now_ms:
 * message and session expiry are wall-clock intervals, and replicated) and for
 * unique names. It can step (NTP, an operator): never time a local deadline
 * with it. */
uint64_t tern_now_ms(void);
/* The bounds of the replicated state in force (the cluster's, from the log):
 * what caps a client's session or message expiry, so that what the client is
 * told is what every replica keeps. */
const struct tern_fsm_limits *tern_node_limits(const struct tern_node *n);
/* Monotonic clock in ms (uv_hrtime): every local timeout and duration
 * (keepalive, connect timeout, retry, pauses, grace periods, uptime). */
uint64_t tern_mono_ms(void);

/* listener.c */
/* Makes the TLS contexts of cfg's mqtts listeners into ctx[i] (NULL for plain
 * ones): certificate, key, CA and CRL files are read and checked here, before
 * any socket exists. errmsg names the key ("listeners[0].cert_file: ..."). */
int tern_listeners_tls_load(const struct tern_config *cfg,
                            struct tern_tls_ctx *ctx[TERN_LISTENERS_MAX], char *errmsg);
/* Binds `listen` (unless "none") and every listener; the node takes ctx. */
int tern_listeners_start(struct tern_node *n,
                         struct tern_tls_ctx *ctx[TERN_LISTENERS_MAX], char *errmsg);
void tern_listeners_stop(struct tern_node *n);
void tern_listeners_free(struct tern_node *n); /* after the loop has ended */
/* SIGHUP and POST /reload: every mqtts listener reads its files again; a
 * listener whose new files fail keeps the old ones (logged, the last failure's
 * message in errmsg, TERN_EINVAL). Open connections keep theirs. */
int tern_listeners_reload(struct tern_node *n, uint32_t *reloaded, char *errmsg);

/* conn.c */
void tern_conn_accept(struct tern_node *n, struct tern_listener *l);
/* conn_proxy.c: the PROXY header on a proxy_protocol listener. start: at accept
 * (false: out of memory). input: bytes read while waiting; returns how many were
 * the header's (the rest goes on to TLS or MQTT), or -1 while it needs more or if
 * the connection was closed (refused: counted, logged). expired: the timeout. */
bool tern_conn_proxy_start(struct tern_conn *c);
bool tern_conn_proxy_waiting(const struct tern_conn *c);
long tern_conn_proxy_input(struct tern_conn *c, const uint8_t *data, size_t len);
void tern_conn_proxy_expired(struct tern_conn *c);
/* The TLS identity used as username (use_identity_as_username), or NULL. */
const char *tern_conn_tls_username(const struct tern_conn *c);
void tern_conn_send(struct tern_conn *c, const struct tern_packet *p);
bool tern_conn_send_sized(struct tern_conn *c, const struct tern_packet *p);
void tern_conn_flush(struct tern_conn *c); /* consumes the dirty reference */
void tern_conn_sweep(struct tern_node *n, uint64_t now);
/* Flow control for forwards to other nodes: a publisher whose PUBLISH went on
 * a link to `node` with a long backlog stops being read (TCP then slows it
 * down) until that link's backlog is short again (tern_conn_resume_paused, from
 * the prepare phase). */
void tern_conn_pause(struct tern_conn *c, uint32_t node);
void tern_conn_resume_paused(struct tern_node *n);
/* Flow control for a backlogged subscriber (flow.c): the connection is not read
 * until tern_conn_unhold. paused_on is then TERN_PAUSED_FLOW. */
#define TERN_PAUSED_FLOW UINT32_MAX
bool tern_conn_hold(struct tern_conn *c);
void tern_conn_unhold(struct tern_conn *c);

/* flow.c: a PUBLISH's result names backlogged sessions of `fsm`: hold the
 * publisher until they drain or time out (slow_subscriber_timeout_ms). */
struct tern_flow;
void tern_flow_hold(struct tern_conn *c, struct tern_fsm *fsm,
                    const struct tern_fsm_result *res);
/* A forward from `node` of its publisher's PUBLISH left this node's clean
 * sessions backlogged (res of the local apply): ask that node to hold it. */
void tern_flow_hold_remote(struct tern_node *n, uint32_t node,
                           struct tern_bytes publisher,
                           const struct tern_fsm_result *res);
void tern_flow_check(struct tern_node *n); /* each loop turn and from the timer */
void tern_flow_free(struct tern_node *n);
/* flow_peer.c: another node asks to hold (or read again) this node's publisher
 * client_id. A hold ends by itself after TERN_FLOW_LEASE_MS without a renewal. */
#define TERN_FLOW_LEASE_MS 1000
struct tern_flow_peer;
void tern_flow_peer_recv(struct tern_node *n, uint32_t from, bool hold,
                         const uint8_t *client_id, size_t len);
void tern_flow_peer_check(struct tern_node *n); /* from tern_flow_check */
void tern_flow_peer_free(struct tern_node *n);
/* Would this PUBLISH overflow the queue of an online session that is not slow
 * (a backlogged one whose queue is full)? */
bool tern_flow_would_drop(struct tern_node *n, const struct tern_cmd *cmd);
/* A forward from `node` parked (flow_park.c): its publisher is held too when it
 * feeds a backlogged session (not when it only waits behind others). */
void tern_flow_hold_parked(struct tern_node *n, uint32_t node,
                           const struct tern_cmd *cmd);
/* flow_park.c: a forward from `node` for this node's clean sessions: applied,
 * or parked while it would overflow a healthy subscriber's queue. */
struct tern_flow_park;
void tern_flow_forward(struct tern_node *n, uint32_t node, const struct tern_cmd *cmd);
void tern_flow_park_drain(struct tern_node *n); /* from tern_flow_check */
void tern_flow_park_free(struct tern_node *n);
/* "1.2.3.4:5678" or "[::1]:5678" into buf (TERN_PEER_STRLEN bytes); returns buf. */
const char *tern_conn_peer(const struct tern_conn *c, char *buf);
void tern_conn_flush_now(struct tern_conn *c);
void tern_conn_resume(struct tern_conn *c);
void tern_conn_close(struct tern_conn *c, uint8_t reason, const char *why);
void tern_conn_ref(struct tern_conn *c);
void tern_conn_unref(struct tern_conn *c);
struct tern_conn *tern_conn_find(struct tern_node *n, const char *id, size_t len);
void tern_conn_keepalive_start(struct tern_conn *c);
/* The connection's optional part, allocated if need be; NULL when out of memory. */
struct tern_conn_opt *tern_conn_opt(struct tern_conn *c);
/* Frees the optional part once it holds nothing that must last: a device that
 * subscribed and went quiet is back to an idle connection's size. The ack
 * sequence must not restart, so a connection that published QoS > 0 keeps it. */
void tern_conn_opt_trim(struct tern_conn *c);

/* True if c's CONNECT must wait for an earlier one of its client id: it stays
 * in rbuf (conn_process), handled again by tern_conn_open_waiting. */
bool tern_connect_waits(struct tern_conn *c, const struct tern_connect *p);
/* Each loop turn: CONNECTs whose wait is over are handled. */
void tern_conn_open_waiting(struct tern_node *n);

/* handle_*.c: one handler per packet type. Return TERN_OK, or an error after
 * which the connection is closed with *reason. */
int tern_handle_connect(struct tern_conn *c, const struct tern_connect *p,
                        uint8_t *reason);
int tern_handle_publish(struct tern_conn *c, struct tern_publish *p, uint8_t *reason);
/* Frees the PUBLISHes still held for the connection (when it is freed). */
void tern_publish_deferred_free(struct tern_conn_opt *o);
int tern_handle_ack(struct tern_conn *c, uint8_t type, const struct tern_ack *p,
                    uint8_t *reason);
int tern_handle_subscribe(struct tern_conn *c, const struct tern_sublist *p,
                          uint8_t *reason);
int tern_handle_unsubscribe(struct tern_conn *c, const struct tern_sublist *p,
                            uint8_t *reason);
/* Sends and drops the SUBACK / UNSUBACK still pending for packet_id, if any. */
void tern_pending_sub_send(struct tern_conn *c, uint8_t type, uint16_t packet_id);
int tern_handle_disconnect(struct tern_conn *c, const struct tern_disconnect *p,
                           uint8_t *reason);

/* effects.c: the two FSMs' effects as packets, and the glue between connections and them.
 */
struct tern_fsm_observer tern_session_observer(struct tern_node *n, bool replicated);
void tern_session_closed(struct tern_conn *c);
/* c's SESSION_OPEN came back a duplicate (applied inside an installed snapshot):
 * ends the session it left online here with no connection. */
void tern_session_open_lost(struct tern_conn *c);
struct tern_fsm *tern_session_fsm(struct tern_conn *c);
struct tern_fsm_session *tern_session_get(struct tern_conn *c);
struct tern_fsm_session *tern_session_local(struct tern_conn *c);
/* Sets the command's client id and epoch for this connection's session and
 * applies it: directly for the local FSM (cb runs before this returns), through
 * the log for the replicated one. cb gets ctx; the connection is referenced until
 * cb has run. */
int tern_session_command(struct tern_conn *c, struct tern_cmd *cmd,
                         void (*cb)(struct tern_conn *c, int status,
                                    const struct tern_fsm_result *res, void *arg),
                         void *arg);

/* Proposes cmd to the replicated FSM whatever the session's kind. */
int tern_session_propose(struct tern_conn *c, struct tern_cmd *cmd,
                         void (*cb)(struct tern_conn *c, int status,
                                    const struct tern_fsm_result *res, void *arg),
                         void *arg);

/* handle_publish.c: a command message from a decoded PUBLISH or will. */
int tern_msg_from_packet(struct tern_cmd_msg *m, const struct tern_props *pr,
                         struct tern_bytes topic, struct tern_bytes payload, uint8_t qos,
                         bool retain, uint32_t expiry_max_s, uint8_t **userbuf);

/* routes.c */
void tern_routes_ref(struct tern_node *n, const char *f, size_t len);
void tern_routes_unref(struct tern_node *n, const char *f, size_t len);
/* A client's PUBLISH for clean sessions: applied to this node's local FSM and
 * forwarded to the other nodes with matching routes, each told which shared
 * groups it serves. `log`: the PUBLISH also goes through the log, and the
 * replicated FSM chooses every shared group's member (shared_route). *res is
 * the local apply's result. Returns the node whose link (of those it went on)
 * has the most unsent bytes, or 0. */
uint32_t tern_routes_publish(struct tern_node *n, const struct tern_cmd *cmd, bool log,
                             struct tern_fsm_result *res);
/* Observer shared_route of the replicated FSM: delivers the group's copy to one
 * of this node's clean members when the FSM chose this node. */
void tern_routes_on_shared(void *ctx, const struct tern_msg *m, struct tern_bytes filter,
                           uint32_t node);
void tern_routes_free(struct tern_node *n);

/* acks.c: ordered acknowledgements to publishers. */
/* Reserves the next slot; returns its sequence number (>= 0), or -1 when the
 * window is full (or out of memory). */
int tern_acks_push(struct tern_conn *c, uint8_t type, uint16_t packet_id);
/* Completes slot seq and sends every completed ack at the head, in order. */
void tern_acks_done(struct tern_conn *c, int seq, uint8_t reason);
/* Whether an ack of this type and id is still waiting to be sent (a QoS 2
 * PUBLISH whose PUBREC waits for its commit: a re-send of it is not new). */
bool tern_acks_holds(const struct tern_conn *c, uint8_t type, uint16_t packet_id);

/* deliver.c */
void tern_deliver(struct tern_conn *c, const struct tern_delivery *d);
void tern_deliver_to_local(struct tern_node *n, const struct tern_cmd_msg *m,
                           const char *from_id, size_t from_len);
/* The same, but not to shared groups: for a message the replicated FSM published
 * (a will), which chose the groups' members itself (shared_route). */
void tern_deliver_to_local_plain(struct tern_node *n, const struct tern_cmd_msg *m);
/* m as a command message, with the expiry it has left at now_ms; false when it
 * has expired. Points into m. */
bool tern_deliver_msg_of(const struct tern_msg *m, uint64_t now_ms,
                         struct tern_cmd_msg *out);

/* SIGHUP and admin POST /reload (node/mqtt/reload.c): log level and log file from
 * the configuration read again, then the TLS files of every mqtts listener
 * (*tls_reloaded: how many loaded). TERN_OK, or an error (in errmsg) for what
 * was refused, which kept its old state; the node keeps running either way. */
int tern_node_reload(struct tern_node *n, uint32_t *tls_reloaded, char *errmsg);

/* drain.c: while n->draining, CONNECT is refused (CONNACK 0x9C / 3.1.1 return
 * code 3). tern_node_drain sets it and closes every client (MQTT 5 ones are told
 * to use another server); returns how many it closed. */
unsigned tern_node_drain(struct tern_node *n);
/* MQTT address of another member for a client to move to ("" if none): one whose
 * link is up if possible. */
const char *tern_node_other_member(const struct tern_node *n);

#endif
