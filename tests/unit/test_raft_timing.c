/* Candidate round timeouts (cluster/raft_timing.h): the first round of a
 * candidacy keeps libraft's [T, 2T); a round after a timed-out one waits rank
 * x T more, so that two candidates of different ranks retry at least apart by
 * 0 and on average by T per rank, whatever their draws. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "../../cluster/raft_timing.h"

static void test_first_round_is_libraft_s(void **state)
{
    (void)state;
    for (unsigned rank = 0; rank < 3; rank++) {
        assert_int_equal(tern_raft_timing_round_ms(400, 0.0, rank, 0), 400);
        assert_int_equal(tern_raft_timing_round_ms(400, 0.5, rank, 0), 600);
        assert_true(tern_raft_timing_round_ms(400, 0.999, rank, 0) < 800);
    }
}

static void test_rounds_after_a_timeout_are_staggered_by_rank(void **state)
{
    (void)state;
    assert_int_equal(tern_raft_timing_round_ms(400, 0.0, 0, 1), 400);
    assert_int_equal(tern_raft_timing_round_ms(400, 0.0, 1, 1), 800);
    assert_int_equal(tern_raft_timing_round_ms(400, 0.25, 2, 1), 1300);
    /* Any two draws: a higher rank never retries before a lower one's
     * earliest, and on the same draw it is a whole T later per rank. */
    for (double a = 0; a < 1; a += 0.1)
        for (double b = 0; b < 1; b += 0.1) {
            unsigned lo = tern_raft_timing_round_ms(400, a, 0, 1);
            unsigned hi = tern_raft_timing_round_ms(400, b, 2, 1);
            assert_true(hi >= lo + 400);
        }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_first_round_is_libraft_s),
        cmocka_unit_test(test_rounds_after_a_timeout_are_staggered_by_rank),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
