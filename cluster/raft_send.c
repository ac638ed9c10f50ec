/* See raft_send.h. */
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "raft_send.h"
#include "raft_transport.h"
#include "tern/error.h"
#include "tern/log.h"

#define INSTANCES 8
#define PEERS 16

struct held {
    struct raft_io_send *req;
    raft_io_send_cb cb;
};

struct wrapped {
    struct raft_io *io;
    struct tern_raft_transport *t;
    int (*send)(struct raft_io *io, struct raft_io_send *req,
                const struct raft_message *message, raft_io_send_cb cb);
    void (*close)(struct raft_io *io, raft_io_close_cb cb);
    raft_io_close_cb close_cb; /* raft's, until it ran (raft_send.h) */
    /* Per peer, the connection attempt during which an AppendEntries to it
     * went to libraft's queue. */
    struct {
        raft_id id;
        uint64_t attempt;
    } passed[PEERS];
    struct held *held; /* failed on the next loop turn */
    size_t n_held, cap_held;
    uv_timer_t timer;
    int timer_init, closed;
};

static struct wrapped wrapped[INSTANCES];
static uint64_t dropped;

static struct wrapped *find(struct raft_io *io)
{
    for (size_t i = 0; i < INSTANCES; i++)
        if (wrapped[i].io == io)
            return &wrapped[i];
    return NULL;
}

static int passed_index(const struct wrapped *w, raft_id id)
{
    for (int i = 0; i < PEERS; i++)
        if (w->passed[i].id == id)
            return i;
    return -1;
}

/* Calls the callbacks of every held request with status; those the callbacks
 * add wait for the next turn. */
static void fail_held(struct wrapped *w, int status)
{
    struct held *h = w->held;
    size_t n = w->n_held;
    w->held = NULL;
    w->n_held = w->cap_held = 0;
    for (size_t i = 0; i < n; i++)
        h[i].cb(h[i].req, status);
    free(h);
}

static void on_timer(uv_timer_t *timer)
{
    fail_held(timer->data, RAFT_NOCONNECTION);
}

/* 0: req is held, its callback runs on the next loop turn; -1: it was not. */
static int hold(struct wrapped *w, struct raft_io_send *req, raft_io_send_cb cb)
{
    if (!w->timer_init) {
        if (uv_timer_init(w->t->loop, &w->timer) != 0)
            return -1;
        w->timer.data = w;
        w->timer_init = 1;
    }
    if (w->n_held == w->cap_held) {
        size_t cap = w->cap_held ? 2 * w->cap_held : 8;
        struct held *h = realloc(w->held, cap * sizeof(*h));
        if (!h)
            return -1;
        w->held = h;
        w->cap_held = cap;
    }
    if (w->n_held == 0 && uv_timer_start(&w->timer, on_timer, 0, 0) != 0)
        return -1;
    req->cb = cb;
    w->held[w->n_held++] = (struct held){req, cb};
    return 0;
}

static int on_send(struct raft_io *io, struct raft_io_send *req,
                   const struct raft_message *message, raft_io_send_cb cb)
{
    struct wrapped *w = find(io);
    uint64_t attempt = 0;
    if (!w->closed && w->t && message->type == RAFT_IO_APPEND_ENTRIES)
        attempt = tern_raft_transport_attempt(w->t, message->server_id);
    if (attempt) {
        raft_id id = message->server_id;
        int i = passed_index(w, id);
        if (i >= 0 && w->passed[i].attempt == attempt && hold(w, req, cb) == 0) {
            if (dropped++ % 1000 == 0)
                TERN_LOGD("raft: connecting to node %llu: AppendEntries to it not "
                          "queued meanwhile (%llu so far)",
                          (unsigned long long)id, (unsigned long long)dropped);
            return 0;
        }
        if (i < 0)
            i = passed_index(w, 0);
        if (i >= 0) {
            w->passed[i].id = id;
            w->passed[i].attempt = attempt;
        }
    }
    return w->send(io, req, message, cb);
}

/* The backend's report that it has closed: raft's callback, the first time. */
static void on_closed(struct raft_io *io)
{
    struct wrapped *w = find(io);
    raft_io_close_cb cb = w ? w->close_cb : NULL;
    if (!cb) {
        TERN_LOGD("raft: the I/O backend reported its close again (ignored)");
        return;
    }
    w->close_cb = NULL;
    cb(io);
}

static void on_close(struct raft_io *io, raft_io_close_cb cb)
{
    struct wrapped *w = find(io);
    w->closed = 1;
    /* As libraft's own queue does when it closes (uvSendClose). */
    fail_held(w, RAFT_CANCELED);
    if (w->timer_init) {
        uv_timer_stop(&w->timer);
        uv_close((uv_handle_t *)&w->timer, NULL);
    }
    w->close_cb = cb;
    w->close(io, on_closed);
}

int tern_raft_send_wrap(struct raft_io *io, struct tern_raft_transport *t)
{
    struct wrapped *w = find(io);
    if (!w)
        w = find(NULL);
    if (!w)
        return TERN_ELIMIT;
    memset(w, 0, sizeof(*w));
    w->io = io;
    w->t = t;
    w->send = io->send;
    w->close = io->close;
    io->send = on_send;
    io->close = on_close;
    return TERN_OK;
}

void tern_raft_send_unwrap(struct raft_io *io)
{
    struct wrapped *w = find(io);
    if (!w)
        return;
    if (io->send == on_send)
        io->send = w->send;
    if (io->close == on_close)
        io->close = w->close;
    free(w->held); /* empty: io->close failed them */
    memset(w, 0, sizeof(*w));
}

uint64_t tern_raft_send_dropped(void)
{
    return dropped;
}
