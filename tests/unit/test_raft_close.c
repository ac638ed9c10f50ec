/* raft_close()'s callback runs once although libraft's uv backend may fire its
 * close callback twice (cluster/raft_send.h, which wraps io->close). A real struct raft
 * over an I/O whose close fires twice, as libraft 0.15's uvMaybeFireCloseCb can:
 * unwrapped, raft's ioCloseCb frees its address twice (ASan, or glibc, aborts) and the
 * user's callback runs twice. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "../../cluster/raft_send.h"
#include "tern/error.h"

static int fake_init(struct raft_io *io, raft_id id, const char *address)
{
    (void)io, (void)id, (void)address;
    return 0;
}

/* As the uv backend does when a late step of its close ends after it fired. */
static void fake_close(struct raft_io *io, raft_io_close_cb cb)
{
    cb(io);
    cb(io);
}

static int closed;

static void on_closed(struct raft *r)
{
    (void)r;
    closed++;
}

static void test_close_callback_runs_once(void **state)
{
    (void)state;
    struct raft_io io;
    struct raft_fsm fsm;
    struct raft r;
    memset(&io, 0, sizeof(io));
    memset(&fsm, 0, sizeof(fsm));
    io.version = 1;
    io.init = fake_init;
    io.close = fake_close;
    fsm.version = 1;
    assert_int_equal(tern_raft_send_wrap(&io, NULL), TERN_OK);
    assert_int_equal(raft_init(&r, &io, &fsm, 1, "127.0.0.1:1"), 0);
    closed = 0;
    raft_close(&r, on_closed);
    assert_int_equal(closed, 1);
    tern_raft_send_unwrap(&io);
    assert_true(io.close == fake_close);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_close_callback_runs_once),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
