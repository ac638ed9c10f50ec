/* Tests of cluster/peer.c's inbound side against real loopback sockets: what a
 * peer port accepts from the network is bounded (connections, frame size) and
 * frames that no member could have sent close their connection. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <uv.h>

#include "../../cluster/peer.h"
#include "tern/error.h"

struct rx {
    int frames;
    uint32_t from;
    size_t len;
};

static void on_frame(void *ctx, uint32_t from, uint8_t type, const uint8_t *data,
                     size_t len)
{
    struct rx *rx = ctx;
    (void)type;
    (void)data;
    rx->frames++;
    rx->from = from;
    rx->len = len;
}

struct fixture {
    uv_loop_t loop;
    int node2; /* listening socket standing in for node 2 */
    struct tern_peers *p;
    struct rx rx;
    uint16_t port;
};

static uint16_t free_port(void)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001)};
    socklen_t l = sizeof(a);
    assert_int_equal(bind(s, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(getsockname(s, (struct sockaddr *)&a, &l), 0);
    close(s);
    return ntohs(a.sin_port);
}

/* Node 1 is the module under test; node 2 a plain listening socket. */
static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    uv_loop_init(&f->loop);
    f->port = free_port();
    uint16_t port2 = free_port();
    struct tern_peer_addr m[2] = {{.id = 1, .host = "127.0.0.1", .port = f->port},
                                  {.id = 2, .host = "127.0.0.1", .port = port2}};
    f->node2 = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons(port2),
                            .sin_addr.s_addr = htonl(0x7f000001)};
    assert_int_equal(bind(f->node2, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(f->node2, 8), 0);
    char err[TERN_ERRMSG_SIZE];
    assert_int_equal(tern_peers_new(&f->p, &f->loop, 1, m, 2, on_frame, &f->rx, err), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    tern_peers_close(f->p);
    for (int i = 0; i < 100 && uv_run(&f->loop, UV_RUN_NOWAIT); i++)
        ;
    uv_walk(&f->loop, NULL, NULL);
    uv_loop_close(&f->loop);
    close(f->node2);
    free(f);
    return 0;
}

static void spin(struct fixture *f, int ms)
{
    uint64_t end = uv_hrtime() + (uint64_t)ms * 1000000;
    while (uv_hrtime() < end) {
        uv_run(&f->loop, UV_RUN_NOWAIT);
        usleep(1000);
    }
}

static int dial(struct fixture *f)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons(f->port),
                            .sin_addr.s_addr = htonl(0x7f000001)};
    assert_int_equal(connect(s, (struct sockaddr *)&a, sizeof(a)), 0);
    fcntl(s, F_SETFL, O_NONBLOCK);
    return s;
}

/* Closed by the other side: EOF or reset. */
static int closed(int s)
{
    char b[16];
    ssize_t n = recv(s, b, sizeof(b), 0);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
}

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* [u32 length][u8 type][u32 from][payload], length counting type, from, payload. */
static void send_frame(int s, uint32_t from, uint8_t type, size_t payload, uint32_t len)
{
    uint8_t *b = calloc(1, 9 + payload);
    put32(b, len ? len : (uint32_t)(payload + 5));
    b[4] = type;
    put32(b + 5, from);
    assert_int_equal(send(s, b, 9 + payload, 0), (ssize_t)(9 + payload));
    free(b);
}

static void test_valid_frame_is_delivered(void **state)
{
    struct fixture *f = *state;
    int s = dial(f);
    send_frame(s, 2, TERN_PEER_FORWARD, 100, 0);
    spin(f, 50);
    assert_int_equal(f->rx.frames, 1);
    assert_int_equal(f->rx.from, 2);
    assert_int_equal(f->rx.len, 100);
    /* a flow control frame (hold / release a publisher) is a known type too */
    send_frame(s, 2, TERN_PEER_FLOW, 12, 0);
    spin(f, 50);
    assert_int_equal(f->rx.frames, 2);
    assert_int_equal(f->rx.len, 12);
    assert_false(closed(s));
    close(s);
}

static void test_frame_over_the_bound_closes_the_connection(void **state)
{
    struct fixture *f = *state;
    tern_peers_set_frame_max(f->p, 4096);
    int ok = dial(f), big = dial(f);
    send_frame(ok, 2, TERN_PEER_PROPOSE, 4096, 0); /* exactly the bound */
    /* announces one byte more than the bound: closed on the header, before
     * anything of it is buffered */
    send_frame(big, 2, TERN_PEER_PROPOSE, 0, 4096 + 5 + 1);
    spin(f, 50);
    assert_int_equal(f->rx.frames, 1);
    assert_false(closed(ok));
    assert_true(closed(big));
    /* the sending side holds to the same bound */
    static uint8_t data[4097];
    for (int i = 0; i < 100 && !tern_peers_connected(f->p, 2); i++)
        spin(f, 10);
    assert_true(tern_peers_connected(f->p, 2));
    assert_int_equal(tern_peers_send(f->p, 2, TERN_PEER_PROPOSE, data, 4096), TERN_OK);
    assert_int_equal(tern_peers_send(f->p, 2, TERN_PEER_PROPOSE, data, 4097),
                     TERN_EAGAIN);
    close(ok);
    close(big);
}

static void test_frame_from_a_non_member_closes_the_connection(void **state)
{
    struct fixture *f = *state;
    int self = dial(f), stranger = dial(f), badtype = dial(f);
    send_frame(self, 1, TERN_PEER_FORWARD, 10, 0);     /* not from ourselves */
    send_frame(stranger, 7, TERN_PEER_FORWARD, 10, 0); /* not a member */
    send_frame(badtype, 2, 99, 10, 0);                 /* no such frame type */
    spin(f, 50);
    assert_int_equal(f->rx.frames, 0);
    assert_true(closed(self));
    assert_true(closed(stranger));
    assert_true(closed(badtype));
    close(self);
    close(stranger);
    close(badtype);
}

static void test_inbound_connections_are_bounded(void **state)
{
    struct fixture *f = *state;
    enum { N = TERN_PEER_INBOUND_MAX + 10 };
    int s[N];
    for (int i = 0; i < N; i++) {
        s[i] = dial(f);
        spin(f, 2);
    }
    spin(f, 50);
    int open = 0;
    for (int i = 0; i < N; i++)
        open += !closed(s[i]);
    assert_int_equal(open, TERN_PEER_INBOUND_MAX);
    /* those in place keep working */
    send_frame(s[0], 2, TERN_PEER_FORWARD, 10, 0);
    spin(f, 50);
    assert_int_equal(f->rx.frames, 1);
    /* and a slot freed is usable again */
    close(s[1]);
    spin(f, 50);
    int again = dial(f);
    spin(f, 50);
    assert_false(closed(again));
    close(again);
    for (int i = 0; i < N; i++)
        if (i != 1)
            close(s[i]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_valid_frame_is_delivered, setup, teardown),
        cmocka_unit_test_setup_teardown(test_frame_over_the_bound_closes_the_connection,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(
            test_frame_from_a_non_member_closes_the_connection, setup, teardown),
        cmocka_unit_test_setup_teardown(test_inbound_connections_are_bounded, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
