/* The rebase of an AppendEntries onto the receiving node's snapshot
 * (cluster/raft_recv.h): entries up to the snapshot are left out, their memory
 * freed as libraft would, the rest kept in order. ASan checks the memory. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "../../cluster/raft_recv.h"

/* n entries from prev + 1 on, sharing one batch as raft_uv's receive path
 * makes them (entry i's data holds its index). */
static struct raft_append_entries ae(raft_index prev, unsigned n)
{
    struct raft_append_entries a = {.term = 5,
                                    .prev_log_index = prev,
                                    .prev_log_term = 4,
                                    .leader_commit = prev + n,
                                    .n_entries = n};
    if (!n)
        return a;
    uint64_t *batch = raft_malloc(n * sizeof(uint64_t));
    a.entries = raft_calloc(n, sizeof(*a.entries));
    assert_non_null(batch);
    assert_non_null(a.entries);
    for (unsigned i = 0; i < n; i++) {
        batch[i] = prev + 1 + i;
        a.entries[i] = (struct raft_entry){.term = 4,
                                           .type = RAFT_COMMAND,
                                           .buf = {.base = &batch[i], .len = 8},
                                           .batch = batch};
    }
    return a;
}

/* libraft's clean-up of a received message: each distinct batch, then the array. */
static void destroy(struct raft_append_entries *a)
{
    void *last = NULL;
    for (unsigned i = 0; i < a->n_entries; i++)
        if (a->entries[i].batch != last)
            raft_free(last = a->entries[i].batch);
    raft_free(a->entries);
}

static void test_entries_below_the_snapshot_left_out(void **state)
{
    (void)state;
    /* from index 1, snapshot at 6: entries 1..6 out, 7..10 kept, prev = 6 */
    struct raft_append_entries a = ae(0, 10);
    assert_int_equal(tern_raft_recv_rebase(&a, 6, 3), 6);
    assert_int_equal(a.n_entries, 4);
    assert_int_equal(a.prev_log_index, 6);
    assert_int_equal(a.prev_log_term, 3);
    for (unsigned i = 0; i < 4; i++)
        assert_int_equal(*(uint64_t *)a.entries[i].buf.base, 7 + i);
    destroy(&a);
}

static void test_all_below_the_snapshot(void **state)
{
    (void)state;
    /* every entry inside the snapshot: an empty AppendEntries from the snapshot,
     * the batch and the array freed here (libraft gets n 0, entries NULL) */
    struct raft_append_entries a = ae(2, 5);
    assert_int_equal(tern_raft_recv_rebase(&a, 20, 9), 5);
    assert_int_equal(a.n_entries, 0);
    assert_null(a.entries);
    assert_int_equal(a.prev_log_index, 20);
    assert_int_equal(a.prev_log_term, 9);
    /* a heartbeat below the snapshot */
    struct raft_append_entries h = ae(3, 0);
    assert_int_equal(tern_raft_recv_rebase(&h, 20, 9), 0);
    assert_int_equal(h.prev_log_index, 20);
}

static void test_at_or_above_the_snapshot_untouched(void **state)
{
    (void)state;
    struct raft_append_entries a = ae(6, 3);
    assert_int_equal(tern_raft_recv_rebase(&a, 6, 3), 0);
    assert_int_equal(a.prev_log_index, 6);
    assert_int_equal(a.prev_log_term, 4);
    assert_int_equal(a.n_entries, 3);
    assert_int_equal(tern_raft_recv_rebase(&a, 0, 0), 0); /* no snapshot */
    assert_int_equal(a.n_entries, 3);
    destroy(&a);
}

/* --- an InstallSnapshot that arrives while this node stores a snapshot ------ */

/* libraft 0.15 drops such a message ("already taking or installing snapshot")
 * and its leader sends the next one only after install_snapshot_timeout (30 s):
 * a follower restarted behind a compacted log stayed out that long. The wrapper
 * holds it until the store is done and hands it over then. */
static struct raft_io fake_io;
static struct raft fake_raft;
static raft_io_tick_cb wrapped_tick;
static raft_io_recv_cb wrapped_recv;
static int ticks, delivered;
static struct raft_message last;
static char last_address[64];

static int fake_start(struct raft_io *io, unsigned msecs, raft_io_tick_cb tick,
                      raft_io_recv_cb recv)
{
    (void)io;
    (void)msecs;
    wrapped_tick = tick;
    wrapped_recv = recv;
    return 0;
}

static void fake_tick(struct raft_io *io)
{
    (void)io;
    ticks++;
}

/* What libraft does with an InstallSnapshot it handles: reads it, frees it. */
static void fake_recv(struct raft_io *io, struct raft_message *m)
{
    (void)io;
    delivered++;
    last = *m;
    snprintf(last_address, sizeof last_address, "%s", m->server_address);
    if (m->type == RAFT_IO_INSTALL_SNAPSHOT) {
        raft_configuration_close(&m->install_snapshot.conf);
        raft_free(m->install_snapshot.data.base);
    }
}

/* The wrapper notes when each peer was last heard (tern_raft_recv_heard_ms). */
static raft_time fake_time(struct raft_io *io)
{
    (void)io;
    return 1000;
}

static void wrap_fake(void)
{
    memset(&fake_io, 0, sizeof fake_io);
    memset(&fake_raft, 0, sizeof fake_raft);
    fake_io.start = fake_start;
    fake_io.time = fake_time;
    fake_io.data = &fake_raft;
    ticks = delivered = 0;
    assert_int_equal(tern_raft_recv_wrap(&fake_io, 0), 0);
    assert_int_equal(fake_io.start(&fake_io, 15, fake_tick, fake_recv), 0);
}

/* An InstallSnapshot as raft_uv's receive path hands it over; address is the
 * connection's (freed with it). */
static struct raft_message install(raft_index last_index, char *address)
{
    struct raft_message m = {
        .type = RAFT_IO_INSTALL_SNAPSHOT, .server_id = 1, .server_address = address};
    m.install_snapshot = (struct raft_install_snapshot){
        .term = 2, .last_index = last_index, .last_term = 2, .conf_index = 1};
    raft_configuration_init(&m.install_snapshot.conf);
    assert_int_equal(
        raft_configuration_add(&m.install_snapshot.conf, 1, "127.0.0.1:7001", RAFT_VOTER),
        0);
    m.install_snapshot.data.len = 100;
    m.install_snapshot.data.base = raft_malloc(100);
    assert_non_null(m.install_snapshot.data.base);
    return m;
}

static void test_install_snapshot_held_while_storing(void **state)
{
    (void)state;
    wrap_fake();
    char address[32] = "127.0.0.1:7001";
    fake_raft.snapshot.put.data = &fake_raft; /* storing its own snapshot */
    struct raft_message m = install(400, address);
    void *data = m.install_snapshot.data.base;
    wrapped_recv(&fake_io, &m);
    assert_int_equal(delivered, 0);
    memset(address, 'x', sizeof address - 1); /* the connection went meanwhile */
    wrapped_tick(&fake_io);
    assert_int_equal(ticks, 1);
    assert_int_equal(delivered, 0); /* still storing */
    fake_raft.snapshot.put.data = NULL;
    wrapped_tick(&fake_io);
    assert_int_equal(ticks, 2);
    assert_int_equal(delivered, 1);
    assert_int_equal(last.type, RAFT_IO_INSTALL_SNAPSHOT);
    assert_int_equal(last.install_snapshot.last_index, 400);
    assert_ptr_equal(last.install_snapshot.data.base, data);
    assert_string_equal(last_address, "127.0.0.1:7001");
    wrapped_tick(&fake_io);
    assert_int_equal(delivered, 1); /* once */
    tern_raft_recv_unwrap(&fake_io);
}

static void test_install_snapshot_held_while_taking(void **state)
{
    (void)state;
    wrap_fake();
    char address[] = "127.0.0.1:7001";
    fake_raft.snapshot.pending.term = 2; /* taking one (libraft's other busy case) */
    struct raft_message a = install(400, address), b = install(410, address);
    wrapped_recv(&fake_io, &a);
    wrapped_recv(&fake_io, &b); /* the newer replaces it; ASan: a's memory went */
    assert_int_equal(delivered, 0);
    fake_raft.snapshot.pending.term = 0;
    wrapped_tick(&fake_io);
    assert_int_equal(delivered, 1);
    assert_int_equal(last.install_snapshot.last_index, 410);
    /* not busy: straight through */
    struct raft_message c = install(420, address);
    wrapped_recv(&fake_io, &c);
    assert_int_equal(delivered, 2);
    /* handed to libraft: its sender was heard now (the fake clock stands still) */
    assert_int_equal(tern_raft_recv_heard_ms(&fake_io, 1), 0);
    assert_true(tern_raft_recv_heard_ms(&fake_io, 2) == UINT64_MAX);
    /* held when the node closes: freed with the wrapper (ASan) */
    fake_raft.snapshot.put.data = &fake_raft;
    struct raft_message d = install(430, address);
    wrapped_recv(&fake_io, &d);
    assert_int_equal(delivered, 2);
    tern_raft_recv_unwrap(&fake_io);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_entries_below_the_snapshot_left_out),
        cmocka_unit_test(test_all_below_the_snapshot),
        cmocka_unit_test(test_at_or_above_the_snapshot_untouched),
        cmocka_unit_test(test_install_snapshot_held_while_storing),
        cmocka_unit_test(test_install_snapshot_held_while_taking),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
