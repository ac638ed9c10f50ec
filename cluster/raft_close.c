/* See raft_close.h. */
#include <stddef.h>
#include <string.h>

#include "raft_close.h"
#include "tern/error.h"
#include "tern/log.h"

#define INSTANCES 8

struct wrapped {
    struct raft_io *io;
    void (*close)(struct raft_io *io, raft_io_close_cb cb);
    raft_io_close_cb cb; /* raft's, until it ran */
};

static struct wrapped wrapped[INSTANCES];

static struct wrapped *find(struct raft_io *io)
{
    for (size_t i = 0; i < INSTANCES; i++)
        if (wrapped[i].io == io)
            return &wrapped[i];
    return NULL;
}

static void on_closed(struct raft_io *io)
{
    struct wrapped *w = find(io);
    raft_io_close_cb cb = w ? w->cb : NULL;
    if (!cb) {
        TERN_LOGD("raft: the I/O backend reported its close again (ignored)");
        return;
    }
    w->cb = NULL;
    cb(io);
}

static void on_close(struct raft_io *io, raft_io_close_cb cb)
{
    struct wrapped *w = find(io);
    w->cb = cb;
    w->close(io, on_closed);
}

int tern_raft_close_wrap(struct raft_io *io)
{
    struct wrapped *w = find(io);
    if (!w)
        w = find(NULL);
    if (!w)
        return TERN_ELIMIT;
    memset(w, 0, sizeof(*w));
    w->io = io;
    w->close = io->close;
    io->close = on_close;
    return TERN_OK;
}

void tern_raft_close_unwrap(struct raft_io *io)
{
    struct wrapped *w = find(io);
    if (!w)
        return;
    if (io->close == on_close)
        io->close = w->close;
    memset(w, 0, sizeof(*w));
}
