/* See raft_recv.h. */
#include <string.h>

#include "raft_recv.h"
#include "tern/error.h"
#include "tern/log.h"

#define INSTANCES 8

struct wrapped {
    struct raft_io *io;
    int (*start)(struct raft_io *io, unsigned msecs, raft_io_tick_cb tick,
                 raft_io_recv_cb recv);
    raft_io_recv_cb recv;
};

static struct wrapped wrapped[INSTANCES];
static uint64_t rebased;

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

static void on_recv(struct raft_io *io, struct raft_message *msg)
{
    struct wrapped *w = find(io);
    struct raft *r = io->data; /* raft_init sets it */
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
    w->recv(io, msg);
}

static int start(struct raft_io *io, unsigned msecs, raft_io_tick_cb tick,
                 raft_io_recv_cb recv)
{
    struct wrapped *w = find(io);
    w->recv = recv;
    return w->start(io, msecs, tick, on_recv);
}

int tern_raft_recv_wrap(struct raft_io *io)
{
    struct wrapped *w = find(io);
    if (!w)
        w = find(NULL);
    if (!w)
        return TERN_ELIMIT;
    w->io = io;
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
        memset(w, 0, sizeof(*w));
    }
}

uint64_t tern_raft_recv_rebased(void)
{
    return rebased;
}
