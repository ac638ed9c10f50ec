/* See raft_recv.h. */
#include <stdlib.h>
#include <string.h>

#include "raft_recv.h"
#include "tern/error.h"
#include "tern/log.h"

#define INSTANCES 8
#define CONTACTS 16

struct contact {
    raft_id id;
    raft_time at;
};

struct wrapped {
    struct raft_io *io;
    int (*start)(struct raft_io *io, unsigned msecs, raft_io_tick_cb tick,
                 raft_io_recv_cb recv);
    raft_io_recv_cb recv;
    raft_io_tick_cb tick;
    /* An InstallSnapshot that came while this node stored a snapshot, with a copy
     * of its sender's address (the connection's, which may go first). */
    struct raft_message held;
    char *held_address;
    unsigned election_ms;
    /* Pre-vote yield (raft_recv.h): until then, grants of this term go unread. */
    raft_time yield_until;
    raft_term yield_term;
    struct contact electing[CONTACTS]; /* who last asked for or granted a vote, when */
    struct contact heard[CONTACTS];    /* whose message libraft last got, when */
    raft_id gone; /* AppendEntries from it, up to gone_term, unread */
    raft_term gone_term;
    raft_time gone_until;
};

static struct wrapped wrapped[INSTANCES];
static uint64_t rebased, yielded, ignored, held;

static struct wrapped *find(struct raft_io *io)
{
    for (size_t i = 0; i < INSTANCES; i++)
        if (wrapped[i].io == io)
            return &wrapped[i];
    return NULL;
}

/* Whether any entry in [from, to) still uses batch. */
static int batch_used(const struct raft_entry *e, unsigned from, unsigned to,
                      const void *batch)
{
    for (unsigned i = from; i < to; i++)
        if (e[i].batch == batch)
            return 1;
    return 0;
}

unsigned tern_raft_recv_rebase(struct raft_append_entries *ae, raft_index snap_index,
                               raft_term snap_term)
{
    if (snap_index == 0 || ae->prev_log_index >= snap_index)
        return 0;
    raft_index below = snap_index - ae->prev_log_index; /* entries up to the snapshot */
    unsigned k = below < ae->n_entries ? (unsigned)below : ae->n_entries;
    struct raft_entry *e = ae->entries;
    /* libraft frees each distinct batch of the entries it gets, then the array:
     * a batch only left-out entries use goes now. */
    for (unsigned i = 0; i < k; i++)
        if (e[i].batch && !batch_used(e, 0, i, e[i].batch) &&
            !batch_used(e, k, ae->n_entries, e[i].batch))
            raft_free(e[i].batch);
    if (k == ae->n_entries) {
        raft_free(ae->entries);
        ae->entries = NULL;
    } else if (k) {
        memmove(e, e + k, (ae->n_entries - k) * sizeof(*e));
    }
    ae->n_entries -= k;
    ae->prev_log_index = snap_index;
    ae->prev_log_term = snap_term;
    return k;
}

static raft_term last_term(const struct raft_log *l)
{
    if (l->front == l->back)
        return l->snapshot.last_term;
    return l->entries[(l->back == 0 ? l->size : l->back) - 1].term;
}

/* Records id's contact at now in a table of CONTACTS (the oldest goes). */
static void contact_seen(struct contact *t, raft_id id, raft_time now)
{
    size_t free_slot = CONTACTS, oldest = 0;
    for (size_t i = 0; i < CONTACTS; i++) {
        if (t[i].id == id) {
            t[i].at = now;
            return;
        }
        if (t[i].id == 0 && free_slot == CONTACTS)
            free_slot = i;
        if (t[i].at < t[oldest].at)
            oldest = i;
    }
    size_t i = free_slot < CONTACTS ? free_slot : oldest;
    t[i].id = id;
    t[i].at = now;
}

static void electing_seen(struct wrapped *w, raft_id id, raft_time now)
{
    contact_seen(w->electing, id, now);
}

/* true: the message is not for libraft (a pre-vote grant this node yields). */
static bool election_msg(struct wrapped *w, struct raft *r,
                         const struct raft_message *msg)
{
    raft_time now = w->io->time(w->io);
    if (msg->type == RAFT_IO_APPEND_ENTRIES)
        return msg->server_id == w->gone && now < w->gone_until &&
               msg->append_entries.term <= w->gone_term;
    if (msg->type == RAFT_IO_REQUEST_VOTE) {
        const struct raft_request_vote *rv = &msg->request_vote;
        electing_seen(w, msg->server_id, now);
        /* Another pre-candidate, of a lower id and a log at least as new:
         * it goes first, this node stays in pre-vote for this term for 4
         * election timeouts (and grants it, as libraft decides): under loss
         * the other's vote round takes a second or more. */
        if (rv->pre_vote && r->state == RAFT_CANDIDATE &&
            r->candidate_state.in_pre_vote && rv->candidate_id < r->id &&
            (rv->last_log_term > last_term(&r->log) ||
             (rv->last_log_term == last_term(&r->log) &&
              rv->last_log_index >= raft_last_index(r)))) {
            w->yield_until = now + 4 * (raft_time)w->election_ms;
            w->yield_term = r->current_term;
        }
        return false;
    }
    if (msg->type != RAFT_IO_REQUEST_VOTE_RESULT ||
        !msg->request_vote_result.vote_granted)
        return false;
    electing_seen(w, msg->server_id, now);
    if (msg->request_vote_result.pre_vote == raft_tribool_true && now < w->yield_until &&
        r->state == RAFT_CANDIDATE && r->candidate_state.in_pre_vote &&
        r->current_term == w->yield_term) {
        yielded++;
        return true;
    }
    return false;
}

/* The memory of an AppendEntries not handed to libraft (which would free it):
 * each distinct batch once, then the array. */
static void drop_entries(struct raft_append_entries *ae)
{
    struct raft_entry *e = ae->entries;
    for (unsigned i = 0; i < ae->n_entries; i++)
        if (e[i].batch && !batch_used(e, 0, i, e[i].batch))
            raft_free(e[i].batch);
    raft_free(ae->entries);
    ae->entries = NULL;
    ae->n_entries = 0;
}

/* libraft 0.15 drops an InstallSnapshot while it takes or stores a snapshot
 * ("already taking or installing snapshot") and its leader tries again only after
 * install_snapshot_timeout (30 s); the same test as libraft's. */
static int snapshot_busy(const struct raft *r)
{
    return r->snapshot.pending.term != 0 || r->snapshot.put.data != NULL;
}

static void held_free(struct wrapped *w)
{
    if (!w->held_address)
        return;
    raft_configuration_close(&w->held.install_snapshot.conf);
    raft_free(w->held.install_snapshot.data.base);
    free(w->held_address);
    w->held_address = NULL;
}

/* Keeps msg (the newest one wins) until the snapshot is stored; false when out
 * of memory (libraft gets it now, as before). */
static int hold(struct wrapped *w, const struct raft_message *msg)
{
    char *address = strdup(msg->server_address ? msg->server_address : "");
    if (!address)
        return 0;
    held_free(w);
    w->held = *msg;
    w->held.server_address = w->held_address = address;
    if (held++ % 100 == 0)
        TERN_LOGI("raft: snapshot from node %llu (index %llu) held while this node "
                  "stores one; handed to libraft once stored",
                  (unsigned long long)msg->server_id,
                  (unsigned long long)msg->install_snapshot.last_index);
    return 1;
}

static void on_tick(struct raft_io *io)
{
    struct wrapped *w = find(io);
    struct raft *r = io->data;
    if (w->held_address && r && !snapshot_busy(r)) {
        struct raft_message m = w->held;
        char *address = w->held_address;
        w->held_address = NULL; /* libraft owns the message's memory from here */
        w->recv(io, &m);
        free(address);
    }
    w->tick(io);
}

static void on_recv(struct raft_io *io, struct raft_message *msg)
{
    struct wrapped *w = find(io);
    struct raft *r = io->data; /* raft_init sets it */
    if (r && msg->type == RAFT_IO_INSTALL_SNAPSHOT && snapshot_busy(r) && hold(w, msg))
        return;
    if (r && w->election_ms && election_msg(w, r, msg)) {
        if (msg->type == RAFT_IO_APPEND_ENTRIES) {
            ignored++;
            drop_entries(&msg->append_entries);
        }
        return; /* a vote result holds no memory */
    }
    if (r && msg->type == RAFT_IO_APPEND_ENTRIES &&
        msg->append_entries.prev_log_index < r->log.snapshot.last_index) {
        raft_index prev = msg->append_entries.prev_log_index;
        unsigned k = tern_raft_recv_rebase(
            &msg->append_entries, r->log.snapshot.last_index, r->log.snapshot.last_term);
        if (rebased++ % 1000 == 0)
            TERN_LOGI("raft: AppendEntries from node %llu from index %llu, below this "
                      "node's snapshot (%llu): rebased onto it, %u entries left out "
                      "(libraft 0.15 would corrupt its log)",
                      (unsigned long long)msg->server_id, (unsigned long long)prev + 1,
                      (unsigned long long)r->log.snapshot.last_index, k);
    }
    contact_seen(w->heard, msg->server_id, io->time(io));
    w->recv(io, msg);
}

static int start(struct raft_io *io, unsigned msecs, raft_io_tick_cb tick,
                 raft_io_recv_cb recv)
{
    struct wrapped *w = find(io);
    w->recv = recv;
    w->tick = tick;
    return w->start(io, msecs, on_tick, on_recv);
}

int tern_raft_recv_wrap(struct raft_io *io, unsigned election_ms)
{
    struct wrapped *w = find(io);
    if (!w)
        w = find(NULL);
    if (!w)
        return TERN_ELIMIT;
    memset(w, 0, sizeof(*w));
    w->io = io;
    w->election_ms = election_ms;
    w->start = io->start;
    io->start = start;
    return TERN_OK;
}

void tern_raft_recv_unwrap(struct raft_io *io)
{
    struct wrapped *w = find(io);
    if (w) {
        if (io->start == start)
            io->start = w->start;
        held_free(w);
        memset(w, 0, sizeof(*w));
    }
}

uint64_t tern_raft_recv_rebased(void)
{
    return rebased;
}

uint64_t tern_raft_recv_held(void)
{
    return held;
}

uint64_t tern_raft_recv_yielded(void)
{
    return yielded;
}

void tern_raft_recv_ignore(struct raft_io *io, raft_id peer, raft_term term,
                           uint64_t window_ms)
{
    struct wrapped *w = find(io);
    if (!w)
        return;
    w->gone = peer;
    w->gone_term = term;
    w->gone_until = io->time(io) + window_ms;
}

uint64_t tern_raft_recv_ignored(void)
{
    return ignored;
}

unsigned tern_raft_recv_electing(struct raft_io *io, uint64_t window_ms)
{
    struct wrapped *w = find(io);
    if (!w)
        return 0;
    raft_time now = io->time(io);
    unsigned n = 0;
    for (size_t i = 0; i < CONTACTS; i++)
        if (w->electing[i].id && now - w->electing[i].at < window_ms)
            n++;
    return n;
}

uint64_t tern_raft_recv_heard_ms(struct raft_io *io, raft_id peer)
{
    struct wrapped *w = find(io);
    if (!w)
        return UINT64_MAX;
    for (size_t i = 0; i < CONTACTS; i++)
        if (w->heard[i].id == peer)
            return io->time(io) - w->heard[i].at;
    return UINT64_MAX;
}
