/* The transport half of coalescing (cluster/raft_transport.c, raft_frames.h),
 * over real sockets on loopback: a pump whose peer stops reading holds the
 * heartbeats libraft writes meanwhile, sends only the newest, and sends it by
 * itself (the release timer) once the peer reads again, with nothing more
 * written by libraft. test_raft_frames.c holds the parser's rules; this is the
 * pump's judgement of "busy" and its release.
 *
 * The peer is a thread with a blocking socket whose receive buffer is small: it
 * reads the handshake, then nothing until told to, then everything. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <unistd.h>

#include <uv.h>

#include "../../cluster/raft_transport.h"

#define BIG_ENTRY (2u << 20) /* far more than the peer's buffers hold */
#define HEARTBEATS 3

static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

/* An AppendEntries as raft_uv encodes it, with one entry of len bytes or, for
 * len 0, none (a heartbeat). Returns its size. */
static size_t ae(uint8_t *b, uint64_t commit, uint32_t len)
{
    unsigned n = len ? 1 : 0;
    put64(b, 1);
    put64(b + 8, 40 + 16 * n);
    put64(b + 16, 7);      /* term */
    put64(b + 24, 10);     /* prev index */
    put64(b + 32, 7);      /* prev term */
    put64(b + 40, commit); /* leader commit */
    put64(b + 48, n);
    size_t at = 56;
    if (n) {
        put64(b + at, 7);
        b[at + 8] = 1; /* RAFT_COMMAND */
        memset(b + at + 9, 0, 3);
        for (int i = 0; i < 4; i++)
            b[at + 12 + i] = (uint8_t)(len >> (8 * i));
        at += 16;
        memset(b + at, 0xab, len);
        at += len;
    }
    return at;
}

/* --- the peer --------------------------------------------------------------- */

struct peer {
    int listen_fd;
    uint16_t port;
    atomic_int go;       /* read again */
    atomic_int done;     /* stop reading */
    int entries;         /* AppendEntries with entries, read whole */
    int heartbeats;      /* AppendEntries without */
    uint64_t commits[8]; /* their leader commit */
    int bad;             /* what came is not libraft's framing */
};

static int read_full(int fd, uint8_t *b, size_t n, struct peer *p)
{
    size_t got = 0;
    while (got < n && !atomic_load(&p->done)) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        if (poll(&pfd, 1, 20) <= 0)
            continue;
        ssize_t r = read(fd, b + got, n - got);
        if (r <= 0)
            return -1;
        got += (size_t)r;
    }
    return got == n ? 0 : -1;
}

static void *peer_main(void *arg)
{
    struct peer *p = arg;
    int fd = accept(p->listen_fd, NULL, NULL);
    if (fd < 0)
        return NULL;
    uint8_t hs[24];
    uint8_t addr[256];
    if (read_full(fd, hs, sizeof(hs), p) != 0 || get64(hs + 16) > sizeof(addr) ||
        read_full(fd, addr, get64(hs + 16), p) != 0) {
        p->bad = 1;
        close(fd);
        return NULL;
    }
    while (!atomic_load(&p->go) && !atomic_load(&p->done))
        usleep(1000);
    uint8_t *body = malloc(BIG_ENTRY + 64);
    for (;;) {
        uint8_t pre[16];
        if (!body || read_full(fd, pre, sizeof(pre), p) != 0)
            break;
        uint64_t type = get64(pre), hlen = get64(pre + 8);
        if (type != 1 || hlen < 40 || hlen > 64 || read_full(fd, body, hlen, p) != 0) {
            p->bad = 1;
            break;
        }
        uint64_t n = get64(body + 32);
        if (n == 0) {
            if (p->heartbeats < 8)
                p->commits[p->heartbeats] = get64(body + 24);
            p->heartbeats++;
            continue;
        }
        uint64_t len = 0;
        for (int i = 0; i < 4; i++)
            len |= (uint64_t)body[40 + 12 + i] << (8 * i);
        if (len > BIG_ENTRY || read_full(fd, body, len, p) != 0) {
            p->bad = 1;
            break;
        }
        p->entries++;
    }
    free(body);
    close(fd);
    return NULL;
}

/* --- the sender: a transport and libraft's end of its stream ----------------- */

struct run {
    uv_loop_t loop;
    struct tern_raft_transport t;
    struct raft_uv_connect req;
    uv_stream_t *stream; /* libraft's end */
    uv_timer_t timer;
    int step;
    struct peer *peer;
};

static void written(uv_write_t *w, int status)
{
    (void)status; /* a write the pump took down shows in what the peer read */
    free(w->data);
    free(w);
}

/* Writes a message to the pump as libraft would. */
static void send_msg(struct run *r, uint64_t commit, uint32_t len)
{
    uint8_t *b = malloc(72 + len);
    uv_write_t *w = malloc(sizeof(*w));
    assert_non_null(b);
    assert_non_null(w);
    uv_buf_t buf = uv_buf_init((char *)b, (unsigned)ae(b, commit, len));
    w->data = b;
    assert_int_equal(uv_write(w, r->stream, &buf, 1, written), 0);
}

static void on_transport_closed(struct raft_uv_transport *t)
{
    (void)t;
}

/* Steps, 40 ms apart: the big entry; the heartbeats, one a step (the peer has
 * stopped reading: its window is shut and it acknowledges nothing more); then
 * the peer reads again and nothing more is written; after 1 s, the end. */
static void on_step(uv_timer_t *timer)
{
    struct run *r = timer->data;
    int s = r->step++;
    if (s == 0) {
        send_msg(r, 1, BIG_ENTRY);
    } else if (s >= 2 && s < 2 + HEARTBEATS) {
        send_msg(r, 100 + (uint64_t)s - 1, 0); /* commits 101, 102, 103 */
    } else if (s == 2 + HEARTBEATS) {
        atomic_store(&r->peer->go, 1);
    } else if (s == 2 + HEARTBEATS + 25) {
        atomic_store(&r->peer->done, 1);
        uv_timer_stop(timer);
        uv_close((uv_handle_t *)timer, NULL);
        uv_close((uv_handle_t *)r->stream, (uv_close_cb)raft_free);
        r->t.outer.close(&r->t.outer, on_transport_closed);
    }
}

static void on_connected(struct raft_uv_connect *req, struct uv_stream_s *stream,
                         int status)
{
    struct run *r = req->data;
    assert_int_equal(status, 0);
    r->stream = stream;
    uv_timer_init(&r->loop, &r->timer);
    r->timer.data = r;
    uv_timer_start(&r->timer, on_step, 40, 40);
}

static void test_held_heartbeat_released_once_the_peer_reads(void **state)
{
    (void)state;
    static struct peer peer;
    memset(&peer, 0, sizeof(peer));
    peer.listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(peer.listen_fd >= 0);
    int small = 4096; /* inherited by the accepted socket; no autotuning then */
    setsockopt(peer.listen_fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = 0};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t sl = sizeof(sa);
    assert_int_equal(bind(peer.listen_fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(peer.listen_fd, 1), 0);
    assert_int_equal(getsockname(peer.listen_fd, (struct sockaddr *)&sa, &sl), 0);
    peer.port = ntohs(sa.sin_port);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, peer_main, &peer), 0);

    static struct run r;
    memset(&r, 0, sizeof(r));
    r.peer = &peer;
    assert_int_equal(uv_loop_init(&r.loop), 0);
    assert_int_equal(tern_raft_transport_init(&r.t, &r.loop, NULL), 0);
    assert_int_equal(r.t.outer.init(&r.t.outer, 1, "127.0.0.1:9"), 0);
    char addr[32];
    snprintf(addr, sizeof(addr), "127.0.0.1:%u", (unsigned)peer.port);
    r.req.data = &r;
    assert_int_equal(r.t.outer.connect(&r.t.outer, &r.req, 2, addr, on_connected), 0);
    uv_run(&r.loop, UV_RUN_DEFAULT);
    uint64_t coalesced = tern_raft_transport_coalesced(&r.t);
    tern_raft_transport_close(&r.t);
    assert_int_equal(uv_loop_close(&r.loop), 0);
    pthread_join(th, NULL);
    close(peer.listen_fd);

    assert_false(peer.bad);
    assert_int_equal(peer.entries, 1);
    /* Only the newest, and without anything written after it. */
    assert_int_equal(peer.heartbeats, 1);
    assert_int_equal(peer.commits[0], 100 + HEARTBEATS);
    assert_int_equal(coalesced, HEARTBEATS - 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_held_heartbeat_released_once_the_peer_reads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
