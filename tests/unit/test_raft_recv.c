/* The rebase of an AppendEntries onto the receiving node's snapshot
 * (cluster/raft_recv.h): entries up to the snapshot are left out, their memory
 * freed as libraft would, the rest kept in order. ASan checks the memory. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_entries_below_the_snapshot_left_out),
        cmocka_unit_test(test_all_below_the_snapshot),
        cmocka_unit_test(test_at_or_above_the_snapshot_untouched),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
