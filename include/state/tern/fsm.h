/* tern session state machine (FSM).
 *
 * Holds sessions, their subscriptions, queued and in-flight messages, inbound
 * QoS 2 ids, wills and retained messages, and changes them only through
 * tern_fsm_apply(). Given the same commands in the same order, every replica ends
 * in the same state: apply never reads a clock (commands carry now_ms), never
 * does I/O and decides everything (packet ids, which message enters the in-flight
 * window, which shared-subscription member gets a message) deterministically.
 *
 * The same FSM is used twice on a node: the replicated instance (persistent
 * sessions, client-id registry, retained messages; commands go through the log)
 * and a node-local instance (clean sessions, whose state need not outlive the
 * connection; commands are applied directly). The session logic is the same;
 * only where its commands come from differs.
 *
 * Effects reach the node through an observer, called during apply, on every
 * replica; the node acts only for sessions it owns (owner_node == its id).
 * Observer callbacks must not call tern_fsm_apply() (or tern_fsm_restore()) on
 * the same FSM: apply is not re-entrant.
 *
 * Memory: the FSM owns everything it stores (it copies from commands). Pointers
 * it hands out (sessions, messages) stay valid until the next apply or restore.
 */
#ifndef TERN_FSM_H
#define TERN_FSM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tern/cmd.h"

/* A stored application message, shared by every queue that holds it. */
struct tern_msg {
    uint64_t id;
    uint32_t refcount;
    uint8_t qos;   /* as published */
    bool retain;   /* as published */
    uint8_t flags; /* TERN_MSG_HAS_* */
    uint8_t payload_format;
    uint32_t expiry_s;       /* interval as published, when TERN_MSG_HAS_EXPIRY */
    uint64_t created_ms;     /* now_ms of the PUBLISH command */
    uint64_t expire_at_ms;   /* 0 = never */
    uint32_t from_node;      /* node the publisher was on */
    uint32_t timer_pos;      /* FSM-private: position in the retained heap */
    struct tern_bytes topic; /* the rest point into this allocation */
    struct tern_bytes payload;
    struct tern_bytes content_type;
    struct tern_bytes response_topic;
    struct tern_bytes correlation_data;
    struct tern_bytes user;
};

/* Remaining message expiry interval in seconds at now_ms (for forwarding), or
 * 0 if expired. Only meaningful with TERN_MSG_HAS_EXPIRY. */
uint32_t tern_msg_remaining_s(const struct tern_msg *m, uint64_t now_ms);

/* What the owner node must send to a session's client. */
struct tern_delivery {
    const struct tern_msg *msg; /* NULL when only a PUBREL is owed */
    uint16_t packet_id;         /* 0 for QoS 0 */
    uint8_t qos;                /* effective QoS */
    bool retain;                /* retain flag to send */
    bool dup;                   /* re-delivery after resume */
    bool pubrel;                /* send PUBREL(packet_id) instead of PUBLISH */
    uint8_t sub_id_count;
    uint32_t sub_ids[TERN_MAX_SUB_IDS];
};

struct tern_fsm;         /* opaque */
struct tern_fsm_session; /* opaque; read through the accessors below */

enum tern_drop_policy {
    TERN_DROP_OLDEST = 0, /* queue full: drop the oldest queued message */
    TERN_DROP_NEW = 1,    /* queue full: drop the new message */
};

/* Bounds. Every replica must use the same values: the replicated FSM starts
 * with tern_fsm_limits_default() on every node and changes them only by LIMITS
 * commands, which the leader proposes from its configuration (and snapshots,
 * which carry them). The node-local FSM uses the node's configuration. */
struct tern_fsm_limits {
    uint16_t inflight_max;         /* per session, default 32 */
    uint32_t queue_max;            /* queued messages per session, default 1000 */
    uint64_t queue_bytes_max;      /* queued payload bytes per session, default 16 MiB */
    bool queue_qos0;               /* queue QoS 0 for offline sessions, default false */
    uint8_t drop_policy;           /* enum tern_drop_policy, default TERN_DROP_OLDEST */
    uint32_t retained_max;         /* retained messages, default 100000 */
    uint64_t retained_bytes_max;   /* retained payload bytes, default 256 MiB */
    uint32_t session_expiry_max_s; /* cap on requested session expiry, default 0 = none */
    uint32_t message_expiry_max_s; /* cap on message expiry, default 0 = none */
    uint32_t sessions_max;         /* default 1000000 */
};

void tern_fsm_limits_default(struct tern_fsm_limits *l);

/* Field by field (no padding compared). */
bool tern_fsm_limits_equal(const struct tern_fsm_limits *a,
                           const struct tern_fsm_limits *b);

/* Names the fields in which a and b differ, as "queue_max=5 (cluster 1000), ..."
 * (a: ours, b: the cluster's), NUL-terminated in out[0..cap). Returns how many
 * differ. */
unsigned tern_fsm_limits_diff(const struct tern_fsm_limits *a,
                              const struct tern_fsm_limits *b, char *out, size_t cap);

/* Fills cmd as a LIMITS command carrying l (other header fields zero). */
void tern_fsm_limits_cmd(struct tern_cmd *cmd, const struct tern_fsm_limits *l);

/* Counters, for metrics. */
struct tern_fsm_stats {
    uint64_t sessions;
    uint64_t sessions_online;
    uint64_t subscriptions;
    uint64_t messages; /* stored messages (queues, in flight, retained) */
    uint64_t retained;
    uint64_t retained_bytes;
    uint64_t queued;   /* entries in all queues */
    uint64_t inflight; /* entries in all in-flight windows */
    uint64_t dropped_queue_full;
    uint64_t dropped_expired;
    uint64_t dropped_qos0_offline;
    uint64_t retained_rejected; /* retained limit hit */
    uint64_t sessions_expired;
    uint64_t wills_published;
    uint64_t applied; /* commands applied */
};

/* Effects, called during apply. Any member may be NULL. */
struct tern_fsm_observer {
    void *ctx;
    /* SESSION_OPEN applied. Called before the resumed session's owed deliveries,
     * so the owner can send CONNACK first. */
    void (*opened)(void *ctx, struct tern_fsm_session *s, bool session_present);
    /* SUBSCRIBE applied; called before retained messages are delivered, so the
     * owner can send SUBACK first. */
    void (*subscribed)(void *ctx, struct tern_fsm_session *s, uint16_t packet_id);
    /* A message entered the in-flight window of an online session, a PUBLISH or
     * PUBREL is owed after resume, or a QoS 0 message is to be sent now. The
     * delivery (and its msg) is valid only during the call. */
    void (*deliver)(void *ctx, struct tern_fsm_session *s, const struct tern_delivery *d);
    /* The connection (owner_node, epoch) of client_id no longer owns the session:
     * taken over, deleted or expired. reason: TERN_RC_SESSION_TAKEN_OVER,
     * TERN_RC_ADMIN_ACTION, or TERN_RC_SERVER_UNAVAILABLE (NODE_DOWN). */
    void (*fenced)(void *ctx, struct tern_bytes client_id, uint32_t owner_node,
                   uint64_t epoch, uint8_t reason);
    /* The FSM published a message of its own (a will). Each node delivers it to
     * subscribers that are not in this FSM (its local clean sessions), but not to
     * shared groups: the FSM chose their members (shared_route). */
    void (*published)(void *ctx, const struct tern_msg *m);
    /* tern_fsm_restore() replaced all state of f (a snapshot installed from the
     * leader, or loaded at start). No other effect is called for what the
     * snapshot holds, so this is where the owner reconciles its connections
     * with the new state: every local annotation is NULL, every pointer handed
     * out before is invalid. Called once f is consistent; it may read f and
     * call tern_fsm_session_resend() / tern_fsm_session_set_local(). */
    void (*restored)(void *ctx, struct tern_fsm *f);
    /* A shared group's copy of a message goes to `node`'s clean members: the FSM
     * chose that node's route for the group `filter` ("$share/GROUP/FILTER")
     * over the group's other routes and members. That node delivers it to one of
     * its clean members of the group, and no other copy of the group is made.
     * Valid only during the call. */
    void (*shared_route)(void *ctx, const struct tern_msg *m, struct tern_bytes filter,
                         uint32_t node);
};

/* self_node: this replica's node id (only used to annotate; apply is identical on
 * every replica). limits: the initial bounds (NULL: the defaults, which is what
 * the replicated instance must get on every node). Returns NULL on allocation
 * failure. */
struct tern_fsm *tern_fsm_new(uint32_t self_node, const struct tern_fsm_limits *limits,
                              const struct tern_fsm_observer *obs);
void tern_fsm_free(struct tern_fsm *f);

#define TERN_FSM_BACKLOGGED_MAX 4

/* The result of applying one command. */
struct tern_fsm_result {
    int status;           /* TERN_OK, TERN_ESTALE (epoch mismatch), TERN_ENOTFOUND,
                             TERN_ELIMIT, TERN_EINVAL */
    bool session_present; /* SESSION_OPEN */
    uint64_t epoch;       /* SESSION_OPEN: the new epoch */
    bool duplicate;       /* PUBLISH: inbound QoS 2 id already held, not enqueued;
                             any command: proposal id already applied, ignored */
    bool out_of_order;    /* an earlier proposal of its node has not applied: the
                             command changed nothing (status TERN_EAGAIN) */
    uint32_t matched;     /* PUBLISH: sessions it was queued or sent to;
                             NODE_DOWN: sessions taken offline */
    /* PUBLISH: online sessions whose queue this message left at or above the
     * high-water mark (tern_fsm_session_backlogged), at most
     * TERN_FSM_BACKLOGGED_MAX; valid until the next apply. The node stops
     * reading the publisher until they drain (node/mqtt/flow.c). */
    uint8_t backlogged_count;
    struct tern_fsm_session *backlogged[TERN_FSM_BACKLOGGED_MAX];
};

/* Applies one command. A rejected command (stale epoch, unknown session) changes
 * nothing and says why in the result.
 *
 * TERN_ENOMEM: an allocation failed while applying. The command may have been
 * applied in part, and another replica with the memory applied all of it, so
 * the replicated FSM's caller must not go on (cluster/raft_fsm.c stops the
 * node); the node-local FSM may.
 *
 * Proposal ids (tern/cmd.h) apply in order per origin node: with H the highest
 * applied sequence of that node, a command applies only as H + 1; one at or
 * below H is ignored (result.duplicate: a retry), one beyond H + 1 is refused
 * (result.out_of_order, status TERN_EAGAIN: its node re-sends from the missing
 * one). A node begins a sequence with ORIGIN_START, which may jump anywhere
 * above H; an unknown origin accepts only that. 256 origin nodes are tracked;
 * beyond that the least recently applied one is forgotten.
 *
 * NODE_DOWN: every online session owned by the node goes offline as if its
 * connection closed with publish_will (wills now or after their delay; sessions
 * with expiry 0 end after their will), in epoch order. Each gets a new epoch
 * (later commands of the old connections are TERN_ESTALE) and its connection is
 * fenced with TERN_RC_SERVER_UNAVAILABLE. The node's routes are removed.
 *
 * MEMBER_SET adds or replaces a member (TERN_ELIMIT past TERN_FSM_MEMBERS_MAX;
 * TERN_EINVAL for an address with a NUL byte); MEMBER_DEL removes one
 * (idempotent: an absent id is TERN_OK).
 *
 * CLUSTER_ID sets the cluster's id (tern_fsm_cluster_id()) when none is set;
 * the same id again is TERN_OK and changes nothing; another one is refused
 * (TERN_EPROTO, the id stays) and remembered for the owner to log. TERN_EINVAL
 * for 0.
 *
 * LIMITS replaces the bounds (tern_fsm_limits()) for every later command; what
 * is stored already stays until a command meets the new bound (a queue longer
 * than a new queue_max is trimmed by its next enqueue under drop_oldest, takes
 * nothing new under drop_new). TERN_EINVAL for a bound out of its range.
 *
 * ROUTE_ADD / ROUTE_DEL: presence of (filter, node); idempotent (adding a
 * present route or deleting an absent one is TERN_OK and changes nothing).
 * TERN_EINVAL for an invalid filter, TERN_ELIMIT beyond 1000000 routes.
 *
 * PUBLISH without a selection (publish.select 0): one copy per session for its
 * plain subscriptions, and per shared group one member, chosen among the
 * group's sessions here and the nodes of its shared routes (those get the
 * shared_route effect instead of a delivery). With TERN_PUB_GROUPS only the
 * listed groups are served, routes are not consulted, and TERN_PUB_NO_PLAIN
 * leaves out the plain subscriptions. */
void tern_fsm_apply(struct tern_fsm *f, const struct tern_cmd *cmd,
                    struct tern_fsm_result *res);

/* For tests: the allocation after the next n made while applying fails (n = 0:
 * the next one), as if memory ran out; n < 0 turns it off. */
void tern_fsm_fail_alloc_after(struct tern_fsm *f, long n);

/* --- snapshots (format: docs/disk-format.md) --- */

/* Serializes all replicated state into a new malloc'ed buffer (the caller frees
 * it). The same state gives the same bytes. The limits are included (they are
 * replicated state); configuration (self node, observer, retained source) and
 * local annotations are not. Returns TERN_OK or TERN_ENOMEM. */
int tern_fsm_snapshot(const struct tern_fsm *f, uint8_t **out, size_t *out_len);

/* Replaces all replicated state of f by the snapshot's. The frame is verified
 * and every field validated before f is touched: on error (TERN_ECORRUPT,
 * TERN_EUNSUPPORTED for an unknown format version, TERN_ENOMEM) f is unchanged,
 * no observer is called, and errmsg (TERN_ERRMSG_SIZE, may be NULL) says why.
 * The limits become the snapshot's (the defaults for a format 1 snapshot, which
 * has none). Keeps f's observer, self node and retained source. On success local
 * annotations are NULL, pointers handed out before are invalid, and the only
 * effect is the observer's `restored`, once, after the new state is in place.
 * A restored FSM applies every later command exactly like the original. */
int tern_fsm_restore(struct tern_fsm *f, const uint8_t *buf, size_t len, char *errmsg);

/* --- routes --- */

/* Visits every node id having a route whose filter (without its $share prefix)
 * matches topic, each at most once, in ascending order. Returns 0, fn's
 * non-zero value (which stops the walk), or TERN_ENOMEM before any visit. */
int tern_fsm_route_match(const struct tern_fsm *f, const char *topic, size_t len,
                         int (*fn)(void *ctx, uint32_t node), void *ctx);
/* Visits every route whose filter (without its $share prefix) matches topic:
 * full filter, whether it is shared, node; ordered by (filter bytes, node).
 * Returns 0, fn's non-zero value, or TERN_ENOMEM before any visit. */
int tern_fsm_route_visit(const struct tern_fsm *f, const char *topic, size_t len,
                         int (*fn)(void *ctx, struct tern_bytes filter, bool shared,
                                   uint32_t node),
                         void *ctx);
/* Number of (filter, node) routes. */
uint32_t tern_fsm_route_count(const struct tern_fsm *f);

/* Retained messages of this FSM's subscribers are read from `src` instead of
 * this FSM (the node-local instance reads the replicated one's). NULL = self. */
void tern_fsm_set_retained_source(struct tern_fsm *f, const struct tern_fsm *src);

/* Earliest now_ms at which a TICK would change something (session expiry, a
 * delayed will, a retained message's expiry), or UINT64_MAX. O(1): deadlines
 * are kept in heaps, and a TICK costs what is due, not what is stored. */
uint64_t tern_fsm_next_deadline(const struct tern_fsm *f);
/* For tests: do the deadline heaps hold exactly the sessions and retained
 * messages that have a deadline, each at its deadline? O(n). */
bool tern_fsm_timers_valid(const struct tern_fsm *f);

/* Does any subscription of this FSM match topic? (Lets the node skip proposing a
 * PUBLISH that would change nothing.) */
bool tern_fsm_has_subscriber(const struct tern_fsm *f, const char *topic, size_t len);

const struct tern_fsm_stats *tern_fsm_stats(const struct tern_fsm *f);

/* The bounds in force (replicated state in the replicated FSM). */
const struct tern_fsm_limits *tern_fsm_limits(const struct tern_fsm *f);

/* The cluster's id (CLUSTER_ID), 0 while none has applied: replicated, in
 * snapshots. *refused (when not NULL): the last other id a CLUSTER_ID carried,
 * refused, 0 if none since this FSM was made or restored (not replicated; for
 * the owner's log). */
uint64_t tern_fsm_cluster_id(const struct tern_fsm *f, uint64_t *refused);

/* Highest proposal sequence applied from `node` (0 if none): a restarted node
 * continues above it so its new proposals are never taken for old ones. */
uint64_t tern_fsm_proposal_high(const struct tern_fsm *f, uint32_t node);

/* --- reading sessions --- */
struct tern_fsm_session *tern_fsm_session_get(const struct tern_fsm *f, const char *id,
                                              size_t len);
struct tern_bytes tern_fsm_session_client_id(const struct tern_fsm_session *s);
uint64_t tern_fsm_session_epoch(const struct tern_fsm_session *s);
uint32_t tern_fsm_session_owner(const struct tern_fsm_session *s);
bool tern_fsm_session_online(const struct tern_fsm_session *s);
uint32_t tern_fsm_session_expiry(const struct tern_fsm_session *s);
uint8_t tern_fsm_session_proto(const struct tern_fsm_session *s);
uint32_t tern_fsm_session_queued(const struct tern_fsm_session *s);
uint64_t tern_fsm_session_queued_bytes(const struct tern_fsm_session *s);
uint32_t tern_fsm_session_inflight(const struct tern_fsm_session *s);
/* The packet id the next QoS>0 message sent to the session gets: it moves on with
 * every one sent, so a change says the session made progress. */
uint16_t tern_fsm_session_next_packet_id(const struct tern_fsm_session *s);
/* Flow control marks: a session is backlogged when its queue holds at least half
 * of queue_max or of queue_bytes_max, and drained again when it holds at most a
 * quarter of both. */
bool tern_fsm_session_backlogged(const struct tern_fsm *f,
                                 const struct tern_fsm_session *s);
bool tern_fsm_session_drained(const struct tern_fsm *f, const struct tern_fsm_session *s);
uint32_t tern_fsm_session_sub_count(const struct tern_fsm_session *s);
/* Is inbound QoS 2 packet id held (PUBLISH seen, PUBREL not yet)? */
bool tern_fsm_session_inbound_held(const struct tern_fsm_session *s, uint16_t packet_id);

/* Emits deliver effects (DUP PUBLISH / PUBREL) for everything in the session's
 * in-flight window, changing nothing: the owner's in-session retry. */
void tern_fsm_session_resend(struct tern_fsm *f, struct tern_fsm_session *s);

/* Node-local annotation (the node's connection for this session). Not part of the
 * replicated state, never snapshotted. */
void *tern_fsm_session_local(const struct tern_fsm_session *s);
void tern_fsm_session_set_local(struct tern_fsm_session *s, void *local);

/* Visits every session; return non-zero from fn to stop. */
int tern_fsm_sessions_walk(const struct tern_fsm *f,
                           int (*fn)(void *ctx, struct tern_fsm_session *s), void *ctx);

/* Visits the session's subscriptions (full filter, options byte, sub id). */
int tern_fsm_session_subs_walk(const struct tern_fsm_session *s,
                               int (*fn)(void *ctx, struct tern_bytes filter,
                                         uint8_t options, uint32_t sub_id),
                               void *ctx);

/* --- members (MEMBER_SET / MEMBER_DEL) --- */

/* Members added or changed at runtime, with the addresses every node needs (the
 * Raft configuration holds only Raft addresses). The statically configured
 * members are not here unless a MEMBER_SET named them. */
#define TERN_FSM_MEMBERS_MAX 16

struct tern_fsm_member {
    uint32_t id;
    char raft[TERN_MEMBER_ADDR_MAX + 1]; /* "HOST:PORT", NUL-terminated */
    char peer[TERN_MEMBER_ADDR_MAX + 1];
    char mqtt[TERN_MEMBER_ADDR_MAX + 1];
};

/* Visits the members in ascending id order; return non-zero from fn to stop. */
int tern_fsm_members_walk(const struct tern_fsm *f,
                          int (*fn)(void *ctx, const struct tern_fsm_member *m),
                          void *ctx);
/* The member with this id, or NULL. */
const struct tern_fsm_member *tern_fsm_member_get(const struct tern_fsm *f, uint32_t id);

/* --- retained messages --- */
/* Visits retained messages whose topic matches filter (no $share prefix). */
int tern_fsm_retained_match(const struct tern_fsm *f, const char *filter, size_t len,
                            int (*fn)(void *ctx, const struct tern_msg *m), void *ctx);
int tern_fsm_retained_walk(const struct tern_fsm *f,
                           int (*fn)(void *ctx, const struct tern_msg *m), void *ctx);

#endif
