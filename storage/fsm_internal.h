/* Internals of the session state machine, shared by storage/fsm*.c.
 *
 * Layout in one place so each file can stay about one concern:
 *  fsm.c          lifecycle, apply dispatch, proposal-id dedup, TICK, accessors
 *  fsm_map.c      the hash tables on tern_hmap: shared groups, routes and
 *                 the sessions table
 *  fsm_msg.c      stored messages (refcounted) and retained messages
 *  fsm_queue.c    per-session queue, in-flight window, packet ids, promotion
 *  fsm_session.c  SESSION_OPEN / CLOSE / DELETE, SUBSCRIBE / UNSUBSCRIBE, wills
 *  fsm_publish.c  matching a publish to sessions, shared-group choice, ACK, PUBREL
 *  fsm_dedup.c    proposal order: each node's proposals apply once, in sequence
 *  fsm_route.c    routes: which nodes have clean-session subscribers per filter
 *  fsm_limits.c   the bounds: defaults, LIMITS command
 *  fsm_snap.c     snapshot writer; fsm_restore.c snapshot reader
 *
 * Determinism: nothing here may depend on addresses or on the visit order of the
 * topic trees or the hash map. Where an order decides an outcome (which shared
 * member, which session a TICK handles first, retained delivery order) the
 * candidates are sorted by replicated keys (subscription seq, epoch, topic).
 */
#ifndef TERN_FSM_INTERNAL_H
#define TERN_FSM_INTERNAL_H

#include <assert.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tern/cmd.h"
#include "tern/error.h"
#include "tern/fsm.h"
#include "tern/heap.h"
#include "tern/hmap.h"
#include "tern/slab.h"
#include "tern/topic.h"

#define FSM_EXPIRY_NEVER 0xFFFFFFFFu
#define FSM_PACKET_ID_MAX 65535u
/* Origin nodes whose proposal order is tracked; more than a cluster will have.
 * Beyond it the least recently applied origin is forgotten (its node then starts
 * a new sequence with ORIGIN_START). */
#define FSM_ORIGINS_MAX 256u
#define FSM_PROPOSAL_SEQ_MASK ((UINT64_C(1) << 40) - 1)
/* Snapshot layout of an origin (docs/disk-format.md): a 1024-bit window that
 * older versions used for out-of-order dedup; written full, read and ignored. */
#define FSM_SNAP_ORIGIN_WINDOW_WORDS 16u
/* (filter, node) routes; a bound on the table, far above real use. */
#define FSM_ROUTES_MAX 1000000u

/* --- string-keyed hash map on tern_hmap (keys are owned by the values) --- */
struct fsm_map {
    struct tern_hmap h;
    tern_hmap_eq_fn eq; /* fsm_group_eq or fsm_route_eq */
};

bool fsm_group_eq(const void *item, const void *key, size_t len);
bool fsm_route_eq(const void *item, const void *key, size_t len);
void fsm_map_init(struct fsm_map *m, tern_hmap_eq_fn eq);
void fsm_map_free(struct fsm_map *m);
static inline size_t fsm_map_count(const struct fsm_map *m)
{
    return tern_hmap_count(&m->h);
}
void *fsm_map_get(const struct fsm_map *m, const char *key, size_t len);
/* TERN_ENOMEM when the table cannot grow. */
int fsm_map_put(struct fsm_map *m, const char *key, size_t len, void *val);
void fsm_map_del(struct fsm_map *m, const char *key, size_t len);
/* fn must not change the map (visit order: tern/hmap.h). */
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

/* One allocation with its filter inline (fsm_sub_new): every persistent
 * device holds at least one, so no separate string, and lengths are 16-bit
 * (filters are str16), so that the header is 41 bytes: a filter of up to 15
 * bytes fits a 64-byte malloc chunk. */
struct fsm_sub {
    struct tern_fsm_session *s;
    struct fsm_sub *next;    /* session's list, in subscription order */
    struct fsm_group *group; /* NULL when not shared */
    uint64_t seq;            /* creation order: sorts matches deterministically */
    uint32_t sub_id;
    uint16_t filter_len;
    uint16_t inner_off; /* the tree key: filter + inner_off (past a $share prefix) */
    uint8_t options;
    char filter[]; /* full filter, NUL-terminated */
};

#if UINTPTR_MAX == UINT64_MAX
static_assert(offsetof(struct fsm_sub, filter) == 41, "subscription header: 41 bytes");
#endif

/* Bytes of u's allocation (fsm_obj_alloc). */
static inline size_t fsm_sub_size(size_t filter_len)
{
    size_t n = offsetof(struct fsm_sub, filter) + filter_len + 1;
    return n > sizeof(struct fsm_sub) ? n : sizeof(struct fsm_sub);
}
void fsm_sub_free(struct tern_fsm *f, struct fsm_sub *u);

/* The topic tree's key of u: its filter without a $share/GROUP/ prefix. */
static inline const char *fsm_sub_inner(const struct fsm_sub *u)
{
    return u->filter + u->inner_off;
}

static inline size_t fsm_sub_inner_len(const struct fsm_sub *u)
{
    return (size_t)u->filter_len - u->inner_off;
}

/* A subscription of s to filter (not indexed yet: fsm_sub_index), or NULL when
 * out of memory (f->nomem). */
struct fsm_sub *fsm_sub_new(struct tern_fsm *f, struct tern_fsm_session *s,
                            struct tern_bytes filter, uint8_t options, uint32_t sub_id,
                            uint64_t seq);

/* What a session holds beyond its identity and subscriptions: queue, in-flight
 * window, inbound QoS 2 ids, will, publish mark, deadline. Most sessions (idle
 * clients, persistent devices that only subscribed) have none of it, so it
 * lives in its own allocation: a session without any
 * points at fsm_session_state_empty (all zero, const: a stray write faults)
 * and gets a private copy on its first write (fsm_session_state_mut()). Reads
 * go through s->st directly. A private state that becomes empty again is
 * freed at the end of the command that emptied it (fsm_session_state_trim()),
 * so callers may hold st pointers within a command - with one exception:
 * fsm_publish_msg() trims the sessions it delivered to after its enqueues (a
 * session with only subscriptions got a state there just for the publish's
 * one-copy mark), so an st pointer held across a publish (a will) must be read
 * again from s->st. Its callers (TICK, close, NODE_DOWN, takeover, delete) read
 * no state after it. */
struct fsm_session_state {
    struct fsm_qent *q_head, *q_tail;
    struct fsm_flight *flight; /* ring, in send order: fsm_flight_at() */
    /* Which packet ids are in flight, one bit each (8 KiB), once the ring has
     * grown past FSM_FLIGHT_SCAN entries: choosing the next free id would
     * otherwise scan the whole window for every message sent. */
    uint64_t *flight_ids;
    uint16_t *inbound;     /* held inbound QoS 2 ids, unordered */
    struct tern_msg *will; /* NULL = none */
    uint64_t queued_bytes;
    uint64_t will_at_ms; /* 0 = not pending */
    uint64_t mark;       /* publish generation, for one copy per session */
    uint32_t slot;       /* index into the publish scratch when marked */
    /* Kept when the will goes (it is snapshotted as it is), so a state with a
     * non-zero delay is not empty. */
    uint32_t will_delay_s;
    uint32_t queued;
    uint32_t flight_cap;    /* a power of two, up to 65536 */
    uint32_t inbound_cap;   /* likewise */
    uint16_t flight_count;  /* <= min(inflight_max, receive_max) <= 65535 */
    uint16_t inbound_count; /* distinct non-zero 16-bit ids: <= 65535 */
    uint16_t flight_head;   /* ring index of the oldest in flight */
};

/* Client ids are str16 in commands and snapshots. */
#define FSM_CLIENT_ID_MAX 65535u

/* One allocation per session, client id included; the sessions table points
 * at it, so there is no map entry either. */
struct tern_fsm_session {
    uint64_t epoch;
    uint64_t offline_since_ms;
    const struct fsm_session_state *st; /* never NULL; see above */
    void *local;
    /* Here rather than in st: a persistent device that subscribed and went
     * quiet has nothing else, and then needs no state at all. */
    struct fsm_sub *subs; /* in subscription order */
    uint32_t owner_node;
    uint32_t expiry_s;
    uint16_t receive_max;
    uint16_t client_id_len; /* 1..FSM_CLIENT_ID_MAX */
    /* Here rather than in st: it outlives the traffic that moved it, and
     * keeping it would stop a drained state from being freed. */
    uint16_t next_packet_id;
    uint8_t proto;
    bool online;
    /* Position in f->session_timers (tern/heap.h; 0 = not in it): a session
     * has one while it has a deadline (fsm_session_deadline). */
    uint32_t timer_pos;
    char client_id[]; /* NUL-terminated; the table key */
};

/* Bytes of a session's allocation (fsm_obj_alloc). */
static inline size_t fsm_session_size(size_t client_id_len)
{
    size_t n = offsetof(struct tern_fsm_session, client_id) + client_id_len + 1;
    return n > sizeof(struct tern_fsm_session) ? n : sizeof(struct tern_fsm_session);
}

/* Counted, not stored (a list of one, in most sessions): 4 bytes a session. */
static inline uint32_t fsm_session_sub_count(const struct tern_fsm_session *s)
{
    uint32_t n = 0;
    for (const struct fsm_sub *u = s->subs; u; u = u->next)
        n++;
    return n;
}

#if UINTPTR_MAX == UINT64_MAX
static_assert(offsetof(struct tern_fsm_session, client_id) == 60,
              "session header: 60 bytes, so a 15-byte id takes 76 (fsm_slab)");
/* 104 bytes: a 112-byte malloc chunk. */
static_assert(sizeof(struct fsm_session_state) == 104, "session state: 104 bytes");
#endif

extern const struct fsm_session_state fsm_session_state_empty;

/* The session's private state, allocated (empty) on first use; NULL when out of
 * memory. */
struct fsm_session_state *fsm_session_state_mut(struct tern_fsm *f,
                                                struct tern_fsm_session *s);
/* The session's private state where it must have one already: it has
 * subscriptions, queued or in-flight entries, held inbound ids or a will. */
struct fsm_session_state *fsm_session_state_own(struct tern_fsm_session *s);
/* Frees a private state that holds nothing. Only between commands' steps that
 * hold no st pointer (in practice: at the end of a command handler). */
void fsm_session_state_trim(struct tern_fsm_session *s);

/* --- the sessions table: client id -> session, on tern_hmap --- */
struct fsm_stab {
    struct tern_hmap h;
};

static inline size_t fsm_stab_count(const struct fsm_stab *t)
{
    return tern_hmap_count(&t->h);
}
struct tern_fsm_session *fsm_stab_get(const struct fsm_stab *t, const char *key,
                                      size_t len);
/* s must not be in the table (no session with its id). TERN_ENOMEM when the
 * table cannot grow. */
int fsm_stab_put(struct fsm_stab *t, struct tern_fsm_session *s);
void fsm_stab_del(struct fsm_stab *t, struct tern_fsm_session *s);
/* fn must not change the table. */
int fsm_stab_walk(const struct fsm_stab *t,
                  int (*fn)(void *ctx, struct tern_fsm_session *s), void *ctx);
/* fn may destroy the session it is given (and no other). */
int fsm_stab_walk_del(struct fsm_stab *t,
                      int (*fn)(void *ctx, struct tern_fsm_session *s), void *ctx);

/* Proposal order of one origin node: every sequence up to `high` applied. */
struct fsm_origin {
    uint32_t node;
    uint64_t high;
    uint64_t last_used; /* stats.applied when last recorded: LRU eviction */
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
    uint64_t mark; /* publish generation that chose for its group (not replicated) */
};

/* Is rt a shared filter's route ("$share/GROUP/...", inner after the prefix)? */
static inline bool fsm_route_shared(const struct fsm_route *rt)
{
    return rt->inner != rt->key;
}

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

    /* Sessions and subscriptions (fsm_obj_alloc): the objects every
     * persistent device holds, without malloc's header and rounding. */
    struct tern_slab slab;
    struct fsm_stab sessions;
    struct fsm_map groups;
    struct tern_topic_tree *subs;     /* inner filter -> struct fsm_sub */
    struct tern_topic_tree *retained; /* topic -> struct tern_msg */

    uint64_t epoch_counter; /* last epoch handed out: epochs never go back */
    uint64_t msg_counter;
    uint64_t sub_counter;
    uint64_t mark_counter;

    struct fsm_origin *origins; /* sorted by node */
    size_t origin_count, origin_cap;

    /* Deadlines (fsm_timer.c): sessions by fsm_session_deadline(), retained
     * messages by expire_at_ms. Derived state: rebuilt on restore, never
     * snapshotted. */
    struct tern_heap session_timers;
    struct tern_heap retained_timers;

    struct fsm_map routes;              /* route key -> struct fsm_route */
    struct tern_topic_tree *route_tree; /* inner filter -> struct fsm_route */

    long fail_alloc_after; /* tern_fsm_fail_alloc_after(); < 0: off */
    bool nomem;            /* an allocation failed in the command being applied */

    struct tern_fsm_member members[TERN_FSM_MEMBERS_MAX]; /* ascending id */
    uint32_t member_count;

    /* Scratch space reused by publish, so a publish allocates nothing in the
     * steady state. Apply is not re-entrant, so one set is enough. */
    struct fsm_sub **match;
    size_t match_count, match_cap;
    struct fsm_pending *pend;
    size_t pend_count, pend_cap;
    struct fsm_route **rmatch; /* shared routes matching, by (filter, node) */
    size_t rmatch_count, rmatch_cap;

    /* The current PUBLISH's backlogged sessions (tern_fsm_result.backlogged). */
    struct tern_fsm_session *backlogged[TERN_FSM_BACKLOGGED_MAX];
    uint8_t backlogged_count;
};

/* --- limits (fsm_limits.c) --- */
void fsm_limits_set_cmd(struct tern_fsm *f, const struct tern_cmd *c,
                        struct tern_fsm_result *r);

/* --- members (fsm_member.c) --- */
void fsm_member_set_cmd(struct tern_fsm *f, const struct tern_cmd *c,
                        struct tern_fsm_result *r);
void fsm_member_del_cmd(struct tern_fsm *f, const struct tern_cmd *c,
                        struct tern_fsm_result *r);
/* Inserts m in id order (replacing the same id); TERN_ELIMIT when full. */
int fsm_member_put(struct tern_fsm *f, const struct tern_fsm_member *m);

/* --- growable arrays --- */
int fsm_grow(void **arr, size_t *cap, size_t need, size_t elem);

/* --- allocation while applying ---
 * An allocation that fails in the middle of a command leaves it applied in
 * part, differently from the replicas that had the memory. So every failure
 * on an apply path is recorded (f->nomem) and tern_fsm_apply() reports the
 * command as TERN_ENOMEM; the replicated FSM's caller then stops the node
 * (cluster/raft_fsm.c). These wrappers record it and honour
 * tern_fsm_fail_alloc_after(); fsm_nomem() records a failure reported by a
 * module that allocates on its own (topic tree, map). */
void *fsm_malloc(struct tern_fsm *f, size_t n);
void *fsm_calloc(struct tern_fsm *f, size_t n);
int fsm_grow_in(struct tern_fsm *f, void **arr, size_t *cap, size_t need, size_t elem);
/* From f->slab (not zeroed); freed with the same n. */
void *fsm_obj_alloc(struct tern_fsm *f, size_t n);
void fsm_obj_free(struct tern_fsm *f, void *p, size_t n);
static inline void fsm_nomem(struct tern_fsm *f)
{
    f->nomem = true;
}

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
/* The in-flight window is a ring so that the usual ack, of the oldest message,
 * moves nothing; fsm_flight_at(st, i) is the i-th in send order. */
#define FSM_FLIGHT_SCAN 64 /* up to this many entries, ids are found by a scan */
static inline struct fsm_flight *fsm_flight_at(const struct fsm_session_state *st,
                                               uint32_t i)
{
    return &st->flight[(st->flight_head + i) & (st->flight_cap - 1)];
}
/* Index in send order of packet_id, or -1. */
int fsm_flight_find(const struct tern_fsm_session *s, uint16_t packet_id);
/* Room for n entries in all; TERN_ENOMEM if not. */
int fsm_flight_reserve(struct fsm_session_state *st, uint32_t n);
/* Appends (room reserved); takes fl's message reference. */
void fsm_flight_push(struct tern_fsm *f, struct fsm_session_state *st,
                     const struct fsm_flight *fl);
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
/* A new session with this id (not in f yet), in the table, with the empty state
 * and everything else 0; NULL when out of memory or the id is empty or longer
 * than FSM_CLIENT_ID_MAX. */
struct tern_fsm_session *fsm_session_alloc(struct tern_fsm *f, struct tern_bytes id);
void fsm_session_destroy(struct tern_fsm *f, struct tern_fsm_session *s);
/* --- deadlines (fsm_timer.c) --- */
void fsm_timer_init(struct tern_fsm *f);
/* Empties both heaps (O(n), every slot cleared) before the state they index
 * is freed. */
void fsm_timer_clear(struct tern_fsm *f);
/* Puts s in the session heap at fsm_session_deadline(s), moves it, or takes
 * it out when it has none. Called at the end of every step that changed what
 * the deadline is made of (online, expiry, offline time, will time). On
 * allocation failure f->nomem is set. */
void fsm_timer_session(struct tern_fsm *f, struct tern_fsm_session *s);
void fsm_timer_session_forget(struct tern_fsm *f, struct tern_fsm_session *s);
/* fsm_timer_session() then fsm_session_state_trim(): the end of a command's
 * work on s. */
void fsm_session_settle(struct tern_fsm *f, struct tern_fsm_session *s);
/* A retained message with an expiry enters the retained heap; one leaving the
 * retained tree leaves it. */
void fsm_timer_retained(struct tern_fsm *f, struct tern_msg *m);
void fsm_timer_retained_forget(struct tern_fsm *f, struct tern_msg *m);
/* Takes every session due at now_ms out of the heap into *v (malloc'ed, the
 * caller frees it), in epoch order. On allocation failure (f->nomem) the rest
 * stay in the heap. */
size_t fsm_timer_due_sessions(struct tern_fsm *f, uint64_t now_ms,
                              struct tern_fsm_session ***v);
/* Takes the next retained message due at now_ms out of the heap, or NULL. */
struct tern_msg *fsm_timer_due_retained(struct tern_fsm *f, uint64_t now_ms);
/* Rebuilds both heaps from the sessions and the retained tree (restore).
 * TERN_OK or TERN_ENOMEM. */
int fsm_timer_rebuild(struct tern_fsm *f);
void fsm_will_publish(struct tern_fsm *f, struct tern_fsm_session *s, uint64_t now_ms);
void fsm_session_free_all(struct tern_fsm *f);

/* --- publish, acks (fsm_publish.c) --- */
/* Which matching subscriptions a publish serves: NULL = all, the FSM choosing
 * each shared group's member among its sessions and its routes' nodes. */
struct fsm_select {
    uint8_t flags;            /* TERN_PUB_* */
    struct tern_bytes groups; /* TERN_PUB_GROUPS: tern_cmd_put_group() entries */
};
uint32_t fsm_publish_msg(struct tern_fsm *f, struct tern_msg *m, struct tern_bytes from,
                         uint64_t now_ms, const struct fsm_select *sel);
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

/* --- proposal order (fsm_dedup.c) --- */
/* Where a command stands in its origin's proposal order. */
enum fsm_order {
    FSM_ORDER_NEXT, /* apply it (no id, the next sequence, or a valid ORIGIN_START) */
    FSM_ORDER_DUP,  /* at or below the origin's highest: applied already */
    FSM_ORDER_GAP,  /* beyond the next: an earlier proposal has not applied yet */
};
enum fsm_order fsm_proposal_order(const struct tern_fsm *f, const struct tern_cmd *cmd);
void fsm_proposal_record(struct tern_fsm *f, uint64_t id);

/* --- routes (fsm_route.c) --- */
void fsm_route_add_cmd(struct tern_fsm *f, const struct tern_cmd *c,
                       struct tern_fsm_result *r);
void fsm_route_del_cmd(struct tern_fsm *f, const struct tern_cmd *c,
                       struct tern_fsm_result *r);
int fsm_route_add(struct tern_fsm *f, const char *filter, size_t len, uint32_t node);
void fsm_routes_drop_node(struct tern_fsm *f, uint32_t node);
void fsm_routes_free_all(struct tern_fsm *f);
/* qsort order of struct fsm_route * by (filter bytes, node). */
int fsm_route_cmp(const void *a, const void *b);
/* Routes sorted by (filter bytes, node), for snapshots; caller frees. */
int fsm_routes_sorted(const struct tern_fsm *f, struct fsm_route ***out, size_t *n);

/* --- lifecycle helpers (fsm.c) --- */
/* Frees every piece of replicated state (sessions, groups, trees, routes,
 * origins), leaving f's configuration and scratch space. */
void fsm_state_free(struct tern_fsm *f);

#endif
