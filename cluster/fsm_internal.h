/* Internals of the session state machine, shared by cluster/fsm*.c.
 *
 * Layout in one place so each file can stay about one concern:
 *  fsm.c          lifecycle, apply dispatch, proposal-id dedup, TICK, accessors
 *  fsm_map.c      string -> pointer hash map (sessions, shared groups)
 *  fsm_msg.c      stored messages (refcounted) and retained messages
 *  fsm_queue.c    per-session queue, in-flight window, packet ids, promotion
 *  fsm_session.c  SESSION_OPEN / CLOSE / DELETE, SUBSCRIBE / UNSUBSCRIBE, wills
 *  fsm_publish.c  matching a publish to sessions, shared-group choice, ACK, PUBREL
 *  fsm_dedup.c    proposal-id dedup: a sliding window per origin node
 *  fsm_route.c    routes: which nodes have clean-session subscribers per filter
 *  fsm_snap.c     snapshot writer; fsm_restore.c snapshot reader
 *
 * Determinism: nothing here may depend on addresses or on the visit order of the
 * topic trees or the hash map. Where an order decides an outcome (which shared
 * member, which session a TICK handles first, retained delivery order) the
 * candidates are sorted by replicated keys (subscription seq, epoch, topic).
 */
#ifndef TERN_FSM_INTERNAL_H
#define TERN_FSM_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tern/cmd.h"
#include "tern/error.h"
#include "tern/fsm.h"
#include "tern/topic.h"

#define FSM_EXPIRY_NEVER 0xFFFFFFFFu
#define FSM_PACKET_ID_MAX 65535u
/* Origin nodes remembered for proposal-id dedup; more than a cluster will have.
 * Beyond it the least recently applied origin is forgotten. */
#define FSM_ORIGINS_MAX 256u
#define FSM_PROPOSAL_SEQ_MASK ((UINT64_C(1) << 40) - 1)
/* Sequences remembered below the highest applied one, per origin. */
#define FSM_DEDUP_WINDOW 1024u
/* (filter, node) routes; a bound on the table, far above real use. */
#define FSM_ROUTES_MAX 1000000u

/* --- string-keyed hash map (keys are owned by the values) --- */
struct fsm_map_ent {
    uint64_t hash;
    const char *key;
    size_t len;
    void *val;
    struct fsm_map_ent *next;
};

struct fsm_map {
    struct fsm_map_ent **buckets;
    size_t nbuckets; /* power of two */
    size_t count;
};

int fsm_map_init(struct fsm_map *m);
void fsm_map_free(struct fsm_map *m);
void *fsm_map_get(const struct fsm_map *m, const char *key, size_t len);
int fsm_map_put(struct fsm_map *m, const char *key, size_t len, void *val);
void fsm_map_del(struct fsm_map *m, const char *key, size_t len);
int fsm_map_walk(const struct fsm_map *m, int (*fn)(void *ctx, void *val), void *ctx);

/* --- queue / in-flight entries --- */
struct fsm_entry {
    struct tern_msg *msg; /* holds a reference; NULL in state REL */
    uint8_t qos;
    bool retain; /* retain flag to send */
    uint8_t nids;
    uint32_t ids[TERN_MAX_SUB_IDS];
};

struct fsm_qent {
    struct fsm_qent *next;
    struct fsm_entry e;
};

enum fsm_flight_state {
    FSM_SENT = 1, /* PUBLISH sent, PUBACK / PUBREC owed */
    FSM_REL = 2,  /* PUBREC received, PUBREL sent, PUBCOMP owed */
};

struct fsm_flight {
    uint16_t packet_id;
    uint8_t state;
    struct fsm_entry e;
};

/* Shared subscription group: (group name, inner filter), with its round-robin
 * counter. Refcounted by its member subscriptions. */
struct fsm_group {
    char *key; /* "GROUP/INNER" (GROUP has no '/', so it is unambiguous) */
    size_t key_len;
    uint32_t refs;
    uint64_t next; /* round-robin counter */
    uint64_t mark; /* publish generation that last visited it */
};

struct fsm_sub {
    struct tern_fsm_session *s;
    struct fsm_sub *next; /* session's list, in subscription order */
    char *filter;         /* full filter, NUL-terminated */
    size_t filter_len;
    const char *inner; /* into filter: the tree key */
    size_t inner_len;
    struct fsm_group *group; /* NULL when not shared */
    uint8_t options;
    uint32_t sub_id;
    uint64_t seq; /* creation order: sorts matches deterministically */
};

struct tern_fsm_session {
    char *client_id; /* NUL-terminated; the map key */
    size_t client_id_len;
    uint32_t owner_node;
    uint64_t epoch;
    uint8_t proto;
    bool online;
    uint16_t receive_max;
    uint32_t expiry_s;
    uint64_t offline_since_ms;

    struct tern_msg *will; /* NULL = none */
    uint32_t will_delay_s;
    uint64_t will_at_ms; /* 0 = not pending */

    struct fsm_sub *subs;
    uint32_t sub_count;

    struct fsm_qent *q_head, *q_tail;
    uint32_t queued;
    uint64_t queued_bytes;

    struct fsm_flight *flight; /* in send order */
    uint32_t flight_count;
    size_t flight_cap;

    uint16_t *inbound; /* held inbound QoS 2 ids, unordered */
    uint32_t inbound_count;
    size_t inbound_cap;

    uint16_t next_packet_id;
    void *local;

    uint64_t mark; /* publish generation, for one copy per session */
    uint32_t slot; /* index into the publish scratch when marked */
};

/* Dedup state of one origin node: the highest applied sequence and a bitmap
 * of the FSM_DEDUP_WINDOW sequences up to it (bit seq % window). */
struct fsm_origin {
    uint32_t node;
    uint64_t high;
    uint64_t last_used; /* stats.applied when last recorded: LRU eviction */
    uint64_t bits[FSM_DEDUP_WINDOW / 64];
};

/* One (filter, node) route. key = filter bytes + node (4 bytes LE), so the map
 * needs no second key; inner points into key (the $share prefix skipped). */
struct fsm_route {
    char *key;
    size_t key_len;
    size_t filter_len;
    const char *inner;
    size_t inner_len;
    uint32_t node;
};

/* One pending delivery of a publish. */
struct fsm_pending {
    struct tern_fsm_session *s;
    struct fsm_entry e;
};

struct tern_fsm {
    uint32_t self_node;
    struct tern_fsm_limits limits;
    struct tern_fsm_observer obs;
    struct tern_fsm_stats stats;
    const struct tern_fsm *retained_src;

    struct fsm_map sessions;
    struct fsm_map groups;
    struct tern_topic_tree *subs;     /* inner filter -> struct fsm_sub */
    struct tern_topic_tree *retained; /* topic -> struct tern_msg */

    uint64_t epoch_counter; /* last epoch handed out: epochs never go back */
    uint64_t msg_counter;
    uint64_t sub_counter;
    uint64_t mark_counter;

    struct fsm_origin *origins; /* sorted by node */
    size_t origin_count, origin_cap;

    struct fsm_map routes;              /* route key -> struct fsm_route */
    struct tern_topic_tree *route_tree; /* inner filter -> struct fsm_route */

    struct tern_fsm_member members[TERN_FSM_MEMBERS_MAX]; /* ascending id */
    uint32_t member_count;

    /* Scratch space reused by publish, so a publish allocates nothing in the
     * steady state. Apply is not re-entrant, so one set is enough. */
    struct fsm_sub **match;
    size_t match_count, match_cap;
    struct fsm_pending *pend;
    size_t pend_count, pend_cap;
};

/* --- members (fsm_member.c) --- */
void fsm_member_set_cmd(struct tern_fsm *f, const struct tern_cmd *c,
                        struct tern_fsm_result *r);
void fsm_member_del_cmd(struct tern_fsm *f, const struct tern_cmd *c,
                        struct tern_fsm_result *r);
/* Inserts m in id order (replacing the same id); TERN_ELIMIT when full. */
int fsm_member_put(struct tern_fsm *f, const struct tern_fsm_member *m);

/* --- growable arrays --- */
int fsm_grow(void **arr, size_t *cap, size_t need, size_t elem);

/* --- messages (fsm_msg.c) --- */
struct tern_msg *fsm_msg_new(struct tern_fsm *f, const struct tern_cmd_msg *cm,
                             uint64_t now_ms, uint32_t from_node);
struct tern_msg *fsm_msg_clone(struct tern_fsm *f, const struct tern_msg *src);
void fsm_msg_ref(struct tern_msg *m);
void fsm_msg_unref(struct tern_fsm *f, struct tern_msg *m);
void fsm_msg_set_expiry(const struct tern_fsm *f, struct tern_msg *m, uint64_t now_ms);
bool fsm_msg_expired(const struct tern_msg *m, uint64_t now_ms);
uint64_t fsm_msg_bytes(const struct tern_msg *m);
bool fsm_cmd_msg_valid(const struct tern_cmd_msg *cm);
void fsm_retain(struct tern_fsm *f, struct tern_msg *m);
int fsm_retained_delete(struct tern_fsm *f, const char *topic, size_t len);
void fsm_retained_expire(struct tern_fsm *f, uint64_t now_ms);
void fsm_retained_free_all(struct tern_fsm *f);

/* --- queue and in-flight (fsm_queue.c) --- */
bool fsm_enqueue(struct tern_fsm *f, struct tern_fsm_session *s,
                 const struct fsm_entry *e, uint64_t now_ms);
void fsm_promote(struct tern_fsm *f, struct tern_fsm_session *s, uint64_t now_ms);
void fsm_resume(struct tern_fsm *f, struct tern_fsm_session *s, uint64_t now_ms);
void fsm_queue_clear(struct tern_fsm *f, struct tern_fsm_session *s);
void fsm_flight_clear(struct tern_fsm *f, struct tern_fsm_session *s);
int fsm_flight_find(const struct tern_fsm_session *s, uint16_t packet_id);
void fsm_flight_remove(struct tern_fsm *f, struct tern_fsm_session *s, uint32_t i);
void fsm_deliver(struct tern_fsm *f, struct tern_fsm_session *s,
                 const struct fsm_entry *e, uint16_t packet_id, bool dup, bool pubrel);

/* --- sessions (fsm_session.c) --- */
void fsm_open(struct tern_fsm *f, const struct tern_cmd *c, struct tern_fsm_result *r);
void fsm_close(struct tern_fsm *f, const struct tern_cmd *c, struct tern_fsm_result *r);
void fsm_delete_cmd(struct tern_fsm *f, const struct tern_cmd *c,
                    struct tern_fsm_result *r);
void fsm_subscribe(struct tern_fsm *f, const struct tern_cmd *c,
                   struct tern_fsm_result *r);
void fsm_unsubscribe(struct tern_fsm *f, const struct tern_cmd *c,
                     struct tern_fsm_result *r);
struct tern_fsm_session *fsm_session_find(const struct tern_fsm *f, struct tern_bytes id);
/* The session of id when epoch is current; else NULL with r->status set. */
struct tern_fsm_session *fsm_session_check(const struct tern_fsm *f, struct tern_bytes id,
                                           uint64_t epoch, struct tern_fsm_result *r);
bool fsm_session_expired(const struct tern_fsm_session *s, uint64_t now_ms);
uint64_t fsm_session_deadline(const struct tern_fsm_session *s);
void fsm_session_destroy(struct tern_fsm *f, struct tern_fsm_session *s);
void fsm_will_publish(struct tern_fsm *f, struct tern_fsm_session *s, uint64_t now_ms);
void fsm_session_free_all(struct tern_fsm *f);

/* --- publish, acks (fsm_publish.c) --- */
uint32_t fsm_publish_msg(struct tern_fsm *f, struct tern_msg *m, struct tern_bytes from,
                         uint64_t now_ms);
void fsm_publish(struct tern_fsm *f, const struct tern_cmd *c, struct tern_fsm_result *r);
void fsm_ack(struct tern_fsm *f, const struct tern_cmd *c, struct tern_fsm_result *r);
void fsm_pubrel(struct tern_fsm *f, const struct tern_cmd *c, struct tern_fsm_result *r);

/* --- node down (fsm_session.c) --- */
void fsm_node_down(struct tern_fsm *f, const struct tern_cmd *c,
                   struct tern_fsm_result *r);
/* Subscription restore helper: creates u's index entries (tree, group). */
int fsm_sub_index(struct tern_fsm *f, struct fsm_sub *u);
struct fsm_sub *fsm_sub_find(const struct tern_fsm_session *s, const char *filter,
                             size_t len);

/* --- proposal dedup (fsm_dedup.c) --- */
bool fsm_proposal_dup(const struct tern_fsm *f, uint64_t id);
void fsm_proposal_record(struct tern_fsm *f, uint64_t id);

/* --- routes (fsm_route.c) --- */
void fsm_route_add_cmd(struct tern_fsm *f, const struct tern_cmd *c,
                       struct tern_fsm_result *r);
void fsm_route_del_cmd(struct tern_fsm *f, const struct tern_cmd *c,
                       struct tern_fsm_result *r);
int fsm_route_add(struct tern_fsm *f, const char *filter, size_t len, uint32_t node);
void fsm_routes_drop_node(struct tern_fsm *f, uint32_t node);
void fsm_routes_free_all(struct tern_fsm *f);
/* Routes sorted by (filter bytes, node), for snapshots; caller frees. */
int fsm_routes_sorted(const struct tern_fsm *f, struct fsm_route ***out, size_t *n);

/* --- lifecycle helpers (fsm.c) --- */
/* Frees every piece of replicated state (sessions, groups, trees, routes,
 * origins), leaving f's configuration and scratch space. */
void fsm_state_free(struct tern_fsm *f);

#endif
