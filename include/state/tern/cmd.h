/* tern commands: the mutations of the session state machine.
 *
 * A command is a small versioned binary record (docs/commands.md). Everything that
 * changes a session or a retained message is a command, applied by tern_fsm_apply()
 * on every replica in log order. Commands carry the proposer's clock (now_ms) so
 * that apply is deterministic: the FSM never reads a clock.
 *
 * Decoding is zero-copy: tern_bytes point into the encoded record. Lists
 * (SUBSCRIBE / UNSUBSCRIBE entries) are raw encoded lists walked with
 * tern_cmd_next_sub() / built with tern_cmd_put_sub(), so a command needs no
 * allocation to build or to read.
 *
 * Pure C: no I/O, no globals.
 */
#ifndef TERN_CMD_H
#define TERN_CMD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tern/bytes.h"
#include "tern/mqtt.h"

/* Newest record version this build reads and writes. A record is written in the
 * oldest version that can hold it: 2 only for a PUBLISH with a delivery selection
 * (publish.select != 0), which goes between nodes and never into the log. */
#define TERN_CMD_VERSION 2

enum tern_cmd_type {
    TERN_CMD_SESSION_OPEN = 1,  /* CONNECT: create, resume or take over a session */
    TERN_CMD_SESSION_CLOSE = 2, /* connection ended: offline, maybe will, maybe delete */
    TERN_CMD_SUBSCRIBE = 3,
    TERN_CMD_UNSUBSCRIBE = 4,
    TERN_CMD_PUBLISH = 5,        /* retain + enqueue to matching sessions */
    TERN_CMD_ACK = 6,            /* PUBACK / PUBREC / PUBCOMP from the subscriber */
    TERN_CMD_PUBREL = 7,         /* PUBREL from the publisher: release inbound QoS 2 id */
    TERN_CMD_TICK = 8,           /* time passes: session expiry, will delay, msg expiry */
    TERN_CMD_SESSION_DELETE = 9, /* admin: discard a session (kick) */
    TERN_CMD_RETAIN_DELETE = 10, /* admin: delete one retained message */
    TERN_CMD_NODE_DOWN = 11,     /* a node is lost: its online sessions go offline */
    TERN_CMD_ROUTE_ADD = 12,     /* node has clean-session subscribers for a filter */
    TERN_CMD_ROUTE_DEL = 13,     /* ... no longer */
    TERN_CMD_BARRIER = 14,       /* changes nothing: applied, it proves the replica has
                                    caught up to the log as of its proposal (read index) */
    TERN_CMD_MEMBER_SET = 15,    /* a member's addresses, added or replaced */
    TERN_CMD_MEMBER_DEL = 16,    /* a member left the cluster */
    TERN_CMD_ORIGIN_START = 17,  /* changes nothing but its node's proposal order: the
                                    node's proposals continue from this one's sequence */
    TERN_CMD_LIMITS = 18,        /* the bounds of the replicated state (the leader's
                                    configuration): every replica applies the same */
    TERN_CMD_CLUSTER_ID = 19,    /* the cluster's id, made at bootstrap: set once */
};
#define TERN_CMD_TYPE_MAX TERN_CMD_CLUSTER_ID /* the highest type this build knows */

/* Highest node id: a proposal id keeps 24 bits of it (tern_cmd.proposal_id). */
#define TERN_NODE_ID_MAX 16777215u

/* Longest member address ("HOST:PORT") a MEMBER_SET may carry. */
#define TERN_MEMBER_ADDR_MAX 63

/* Presence bits of optional message properties (tern_cmd_msg.flags). */
#define TERN_MSG_HAS_PAYLOAD_FORMAT 0x01
#define TERN_MSG_HAS_EXPIRY 0x02
#define TERN_MSG_HAS_CONTENT_TYPE 0x04
#define TERN_MSG_HAS_RESPONSE_TOPIC 0x08
#define TERN_MSG_HAS_CORRELATION 0x10

/* An application message as carried by PUBLISH and as a will. The MQTT 5
 * properties that travel with a message are kept as fields; `user` holds the user
 * properties as encoded entries (see tern_props.user). */
struct tern_cmd_msg {
    struct tern_bytes topic;
    struct tern_bytes payload;
    uint8_t qos;
    bool retain;
    uint8_t flags; /* TERN_MSG_HAS_* */
    uint8_t payload_format;
    uint32_t expiry_s; /* message expiry interval, when TERN_MSG_HAS_EXPIRY */
    struct tern_bytes content_type;
    struct tern_bytes response_topic;
    struct tern_bytes correlation_data;
    struct tern_bytes user;
};

/* PUBLISH delivery selection (tern_cmd.u.publish.select). A shared group's
 * member is chosen at one place per message (docs/architecture.md, "Shared
 * subscriptions"); an apply elsewhere serves only what it is told to. */
#define TERN_PUB_GROUPS 0x01   /* shared groups: only those listed in `groups` */
#define TERN_PUB_NO_PLAIN 0x02 /* no non-shared subscription (needs TERN_PUB_GROUPS) */

/* Kinds of outbound acknowledgement (tern_cmd.u.ack.kind): the packet types. */

struct tern_cmd {
    uint8_t type;    /* enum tern_cmd_type */
    uint64_t now_ms; /* proposer's wall clock, milliseconds since the epoch */
    /* Proposal id: (node id << 40) | per-node sequence. A node's proposals apply
     * in sequence order, each once (tern/fsm.h, tern_fsm_apply). 0 = none. Node
     * ids are at most TERN_NODE_ID_MAX so that they fit the top 24 bits. */
    uint64_t proposal_id;
    union {
        struct {
            struct tern_bytes client_id;
            uint32_t node;        /* node that owns the new connection */
            uint8_t proto;        /* TERN_MQTT_311 / TERN_MQTT_5 ... */
            bool clean_start;     /* discard any existing session first */
            uint32_t expiry_s;    /* session expiry interval; 0 = ends with connection */
            uint16_t receive_max; /* client's receive maximum (bounds in-flight) */
            bool has_will;
            uint32_t will_delay_s;
            struct tern_cmd_msg will;
        } open;
        struct {
            struct tern_bytes client_id;
            uint64_t epoch;
            uint32_t expiry_s; /* may be changed by a v5 DISCONNECT */
            bool publish_will; /* false after a normal DISCONNECT (reason 0x00) */
        } close;
        struct {
            struct tern_bytes client_id;
            uint64_t epoch;
            uint16_t packet_id;
            struct tern_bytes list; /* entries from tern_cmd_put_sub() */
            uint32_t count;
        } sub; /* SUBSCRIBE and UNSUBSCRIBE */
        struct {
            struct tern_bytes client_id; /* publisher (no-local; inbound QoS 2) */
            uint64_t epoch;
            uint16_t inbound_packet_id; /* QoS 2: id to hold until PUBREL; else 0 */
            struct tern_cmd_msg msg;
            /* Which matching subscriptions this apply serves (TERN_PUB_*); 0 =
             * all, the FSM choosing each shared group's member itself. */
            uint8_t select;
            uint16_t group_count;     /* TERN_PUB_GROUPS: entries in groups */
            struct tern_bytes groups; /* entries from tern_cmd_put_group() */
        } publish;
        struct {
            struct tern_bytes client_id;
            uint64_t epoch;
            uint16_t packet_id;
            uint8_t kind;   /* TERN_PUBACK, TERN_PUBREC or TERN_PUBCOMP */
            uint8_t reason; /* the client's reason code (>= 0x80: not accepted) */
        } ack;
        struct {
            struct tern_bytes client_id;
            uint64_t epoch;
            uint16_t packet_id;
        } pubrel;
        struct {
            struct tern_bytes client_id;
        } del; /* SESSION_DELETE */
        struct {
            struct tern_bytes topic;
        } retain_delete;
        struct {
            uint32_t node;
        } node_down;
        struct {
            uint32_t node;
            struct tern_bytes filter; /* full filter as subscribed ($share/ kept) */
        } route;                      /* ROUTE_ADD and ROUTE_DEL */
        struct {
            uint32_t id;            /* node id, not 0 */
            struct tern_bytes raft; /* MEMBER_SET only: "HOST:PORT", at most */
            struct tern_bytes peer; /* TERN_MEMBER_ADDR_MAX bytes each */
            struct tern_bytes mqtt;
        } member; /* MEMBER_SET and MEMBER_DEL */
        struct {
            /* Fields and bounds of struct tern_fsm_limits (tern/fsm.h). */
            uint16_t inflight_max;    /* >= 1 */
            uint32_t queue_max;       /* >= 1 */
            uint64_t queue_bytes_max; /* >= 1 */
            bool queue_qos0;
            uint8_t drop_policy; /* enum tern_drop_policy: 0 or 1 */
            uint32_t retained_max;
            uint64_t retained_bytes_max;
            uint32_t session_expiry_max_s; /* 0 = no cap */
            uint32_t message_expiry_max_s; /* 0 = no cap */
            uint32_t sessions_max;         /* >= 1 */
        } limits;                          /* LIMITS */
        struct {
            uint64_t id; /* not 0 */
        } cluster_id;    /* CLUSTER_ID */
    } u;
};

/* Byte offset of the u64 little-endian proposal id in an encoded command, so a
 * queued command can be stamped when it is first sent. */
#define TERN_CMD_PROPOSAL_ID_OFFSET 10

/* Encodes cmd into out[0..cap). Returns the size it needs; writes only when it
 * fits. Returns 0 (writes nothing) when cmd cannot be encoded: unknown type, a
 * u16-prefixed field over 65535 bytes, qos > 2, unknown flag bits, proto or ack
 * kind, or a SUBSCRIBE list that is not exactly `count` entries. */
size_t tern_cmd_encode(const struct tern_cmd *cmd, uint8_t *out, size_t cap);

/* Decodes one command from buf. On success sets *used to the bytes consumed and
 * returns TERN_OK; returns TERN_EMALFORMED (or TERN_EUNSUPPORTED for an unknown
 * version) otherwise, with a message in errmsg (TERN_ERRMSG_SIZE) when non-NULL. */
int tern_cmd_decode(const uint8_t *buf, size_t len, struct tern_cmd *cmd, size_t *used,
                    char *errmsg);

/* SUBSCRIBE / UNSUBSCRIBE entry. For UNSUBSCRIBE only `filter` is used. The
 * filter is the full filter, "$share/GROUP/..." included. */
struct tern_cmd_sub {
    struct tern_bytes filter;
    uint8_t options; /* TERN_SUBOPT_* byte; QoS already capped by the broker */
    uint32_t sub_id; /* subscription identifier, 0 = none */
};

/* Appends an entry to a list buffer; returns the bytes it needs, writes when fits
 * (0: filter over 65535 bytes). */
size_t tern_cmd_put_sub(uint8_t *out, size_t cap, const struct tern_cmd_sub *e);

/* Walks a list; *pos starts at 0. Returns false at the end or on a malformed
 * entry (tern_cmd_decode already validated lists it decoded). */
bool tern_cmd_next_sub(struct tern_bytes list, uint32_t *pos, struct tern_cmd_sub *e);

/* PUBLISH group list entry: one shared filter "$share/GROUP/FILTER" as a str16.
 * Appends to out; returns the bytes it needs, writes when it fits (0: over 65535
 * bytes). */
size_t tern_cmd_put_group(uint8_t *out, size_t cap, struct tern_bytes filter);

/* Walks a group list; *pos starts at 0. False at the end or on a malformed entry. */
bool tern_cmd_next_group(struct tern_bytes list, uint32_t *pos,
                         struct tern_bytes *filter);

#endif
