/* See raft_commit.h. */
#include <stdlib.h>
#include <string.h>

#include "raft_commit.h"
#include "tern/error.h"
#include "tern/log.h"

#define INSTANCES 8

/* One write libraft asked for, in the order asked. */
struct write {
    struct raft_io_append *req;
    raft_io_append_cb cb; /* libraft's */
    raft_index end;       /* its last index, if a leader's (0: never held) */
    raft_term term;       /* the term it was made in */
    int done, status;
};

struct wrapped {
    struct raft_io *io;
    int (*append)(struct raft_io *io, struct raft_io_append *req,
                  const struct raft_entry entries[], unsigned n, raft_io_append_cb cb);
    int (*start)(struct raft_io *io, unsigned msecs, raft_io_tick_cb tick,
                 raft_io_recv_cb recv);
    void (*close)(struct raft_io *io, raft_io_close_cb cb);
    raft_io_tick_cb tick;
    raft_io_recv_cb recv;
    struct write *q; /* q[head .. head + len) */
    size_t head, len, cap;
    int passing;   /* nothing held any more: allocation failed, write failed, closing */
    int reporting; /* in report(): a callback's own writes wait for its loop */
    uint64_t held; /* leader writes whose report waited for a follower */
};

static struct wrapped wrapped[INSTANCES];

static struct wrapped *find(struct raft_io *io)
{
    for (size_t i = 0; i < INSTANCES; i++)
        if (wrapped[i].io == io)
            return &wrapped[i];
    return NULL;
}

/* The highest index that, with the leader's own vote, a majority of voters
 * holds: the k-th highest match index among the other voters, k = majority - 1.
 * RAFT_INDEX_MAX where the leader alone is a majority or is no voter (it does
 * not count itself then, so holding its writes changes nothing). */
#define RAFT_INDEX_MAX UINT64_MAX
#define VOTERS_MAX 15
static raft_index majority_match(const struct raft *r)
{
    const struct raft_configuration *conf = &r->configuration;
    raft_index m[VOTERS_MAX]; /* the other voters' match indexes, highest first */
    unsigned voters = 0, others = 0;
    int self_votes = 0;
    for (unsigned i = 0; i < conf->n; i++) {
        if (conf->servers[i].role != RAFT_VOTER)
            continue;
        voters++;
        if (conf->servers[i].id == r->id) {
            self_votes = 1;
            continue;
        }
        if (others == VOTERS_MAX || !r->leader_state.progress)
            return RAFT_INDEX_MAX; /* not a cluster this is built for: as libraft */
        raft_index v = r->leader_state.progress[i].match_index;
        unsigned j = others++;
        for (; j > 0 && m[j - 1] < v; j--)
            m[j] = m[j - 1];
        m[j] = v;
    }
    unsigned k = voters / 2; /* majority - 1 */
    if (!self_votes || k == 0)
        return RAFT_INDEX_MAX;
    return k <= others ? m[k - 1] : 0;
}

static int may_report(const struct wrapped *w, const struct write *x,
                      const struct raft *r, raft_index majority)
{
    if (!x->done)
        return 0;
    return w->passing || x->end == 0 || !r || r->state != RAFT_LEADER ||
           r->current_term != x->term || x->end <= majority;
}

/* Reports, in order, every write from the head that may be reported. */
static void report(struct wrapped *w)
{
    if (w->reporting)
        return;
    w->reporting = 1;
    struct raft *r = w->io->data; /* raft_init sets it */
    int have_majority = 0;
    raft_index majority = 0;
    while (w->len) {
        struct write x = w->q[w->head];
        if (!have_majority && r && r->state == RAFT_LEADER) {
            majority = majority_match(r);
            have_majority = 1;
        }
        if (!may_report(w, &x, r, majority))
            break;
        w->head++;
        w->len--;
        if (w->len == 0)
            w->head = 0;
        /* May append (w->q may move), commit, apply, or step down. */
        x.cb(x.req, x.status);
        have_majority = 0;
    }
    w->reporting = 0;
}

static struct wrapped *owner(struct raft_io_append *req, struct write **x)
{
    for (size_t i = 0; i < INSTANCES; i++) {
        struct wrapped *w = &wrapped[i];
        for (size_t j = 0; w->io && j < w->len; j++)
            if (w->q[w->head + j].req == req && !w->q[w->head + j].done) {
                *x = &w->q[w->head + j];
                return w;
            }
    }
    return NULL;
}

static void on_written(struct raft_io_append *req, int status)
{
    struct write *x = NULL;
    struct wrapped *w = owner(req, &x);
    if (!w)
        return; /* cannot happen: every request given to the backend is queued */
    x->done = 1;
    x->status = status;
    if (status != 0 && !w->passing) {
        /* libraft truncates its log on a failed write and fails its requests:
         * nothing it does then should wait for a follower. */
        w->passing = 1;
        TERN_LOGW("raft: a log write failed (%d): leader writes reported as they end",
                  status);
    }
    if (x->end && !w->passing && w->io->data) {
        struct raft *r = w->io->data;
        if (r->state == RAFT_LEADER && x->end > majority_match(r))
            w->held++;
    }
    report(w);
}

static int grow(struct wrapped *w)
{
    if (w->head && w->head + w->len == w->cap) {
        memmove(w->q, w->q + w->head, w->len * sizeof(*w->q));
        w->head = 0;
    }
    if (w->head + w->len < w->cap)
        return 0;
    size_t cap = w->cap ? 2 * w->cap : 64;
    struct write *q = realloc(w->q, cap * sizeof(*q));
    if (!q)
        return -1;
    w->q = q;
    w->cap = cap;
    return 0;
}

static int on_append(struct raft_io *io, struct raft_io_append *req,
                     const struct raft_entry entries[], unsigned n, raft_io_append_cb cb)
{
    struct wrapped *w = find(io);
    struct raft *r = io->data;
    if (!w->passing && grow(w) != 0) {
        w->passing = 1;
        TERN_LOGW("raft: out of memory: leader writes reported as they end");
    }
    if (w->passing && w->len == 0)
        return w->append(io, req, entries, n, cb);
    if (w->passing && grow(w) != 0) {
        /* Behind queued writes, whose reports must come first: as the backend
         * would fail it. */
        return RAFT_NOMEM;
    }
    int leader = r && r->state == RAFT_LEADER;
    w->q[w->head + w->len++] = (struct write){
        .req = req,
        .cb = cb,
        .end = leader ? raft_last_index(r) : 0, /* appendLeader: from index to the end */
        .term = r ? r->current_term : 0,
    };
    int rv = w->append(io, req, entries, n, on_written);
    if (rv != 0)
        w->len--; /* the last one: nothing ran in between */
    return rv;
}

static void on_recv(struct raft_io *io, struct raft_message *msg)
{
    struct wrapped *w = find(io);
    w->recv(io, msg);
    /* An AppendEntries result moved a follower's match index. */
    report(w);
}

static void on_tick(struct raft_io *io)
{
    struct wrapped *w = find(io);
    report(w); /* a leadership lost in between */
    w->tick(io);
    report(w);
}

static int on_start(struct raft_io *io, unsigned msecs, raft_io_tick_cb tick,
                    raft_io_recv_cb recv)
{
    struct wrapped *w = find(io);
    w->tick = tick;
    w->recv = recv;
    return w->start(io, msecs, on_tick, on_recv);
}

static void on_close(struct raft_io *io, raft_io_close_cb cb)
{
    struct wrapped *w = find(io);
    w->passing = 1;
    report(w); /* the rest the backend ends (or cancels) as it closes */
    w->close(io, cb);
}

int tern_raft_commit_wrap(struct raft_io *io)
{
    struct wrapped *w = find(io);
    if (!w)
        w = find(NULL);
    if (!w)
        return TERN_ELIMIT;
    memset(w, 0, sizeof(*w));
    w->io = io;
    w->append = io->append;
    w->start = io->start;
    w->close = io->close;
    io->append = on_append;
    io->start = on_start;
    io->close = on_close;
    return TERN_OK;
}

void tern_raft_commit_unwrap(struct raft_io *io)
{
    struct wrapped *w = find(io);
    if (!w)
        return;
    if (io->append == on_append)
        io->append = w->append;
    if (io->start == on_start)
        io->start = w->start;
    if (io->close == on_close)
        io->close = w->close;
    free(w->q);
    memset(w, 0, sizeof(*w));
}

uint64_t tern_raft_commit_held(struct raft_io *io)
{
    struct wrapped *w = find(io);
    return w ? w->held : 0;
}
