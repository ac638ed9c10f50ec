/* See raft_transport.h. */
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "raft_transport.h"

struct connect_req {
    struct raft_uv_connect inner;
    struct raft_uv_connect *outer;
    raft_uv_connect_cb cb;
};

static struct tern_raft_transport *of_inner(struct raft_uv_transport *inner)
{
    return inner->data;
}

static void nodelay(struct uv_stream_s *stream)
{
    /* Best effort: a socket without it still works, only slower. */
    if (stream && stream->type == UV_TCP)
        uv_tcp_nodelay((uv_tcp_t *)stream, 1);
}

static int t_init(struct raft_uv_transport *outer, raft_id id, const char *address)
{
    struct tern_raft_transport *t = outer->impl;
    int rv = t->inner.init(&t->inner, id, address);
    if (rv != 0)
        memcpy(outer->errmsg, t->inner.errmsg, sizeof(outer->errmsg));
    return rv;
}

static void on_accept(struct raft_uv_transport *inner, raft_id id, const char *address,
                      struct uv_stream_s *stream)
{
    struct tern_raft_transport *t = of_inner(inner);
    nodelay(stream);
    t->accept_cb(&t->outer, id, address, stream);
}

static int t_listen(struct raft_uv_transport *outer, raft_uv_accept_cb cb)
{
    struct tern_raft_transport *t = outer->impl;
    t->accept_cb = cb;
    int rv = t->inner.listen(&t->inner, on_accept);
    if (rv != 0)
        memcpy(outer->errmsg, t->inner.errmsg, sizeof(outer->errmsg));
    return rv;
}

static void on_connect(struct raft_uv_connect *inner, struct uv_stream_s *stream,
                       int status)
{
    struct connect_req *r = inner->data;
    if (status == 0)
        nodelay(stream);
    struct raft_uv_connect *outer = r->outer;
    raft_uv_connect_cb cb = r->cb;
    free(r);
    cb(outer, stream, status);
}

static int t_connect(struct raft_uv_transport *outer, struct raft_uv_connect *req,
                     raft_id id, const char *address, raft_uv_connect_cb cb)
{
    struct tern_raft_transport *t = outer->impl;
    struct connect_req *r = malloc(sizeof(*r));
    if (!r)
        return RAFT_NOMEM;
    r->inner.data = r;
    r->outer = req;
    r->cb = cb;
    req->cb = cb;
    int rv = t->inner.connect(&t->inner, &r->inner, id, address, on_connect);
    if (rv != 0) {
        memcpy(outer->errmsg, t->inner.errmsg, sizeof(outer->errmsg));
        free(r); /* its callback never runs */
    }
    return rv;
}

static void on_closed(struct raft_uv_transport *inner)
{
    struct tern_raft_transport *t = of_inner(inner);
    if (t->close_cb)
        t->close_cb(&t->outer);
}

static void t_close(struct raft_uv_transport *outer, raft_uv_transport_close_cb cb)
{
    struct tern_raft_transport *t = outer->impl;
    t->close_cb = cb;
    t->inner.close(&t->inner, on_closed);
}

int tern_raft_transport_init(struct tern_raft_transport *t, struct uv_loop_s *loop)
{
    memset(t, 0, sizeof(*t));
    int rv = raft_uv_tcp_init(&t->inner, loop);
    if (rv != 0)
        return rv;
    t->inner.data = t;
    t->outer.impl = t;
    t->outer.init = t_init;
    t->outer.listen = t_listen;
    t->outer.connect = t_connect;
    t->outer.close = t_close;
    return 0;
}

void tern_raft_transport_close(struct tern_raft_transport *t)
{
    raft_uv_tcp_close(&t->inner);
}
