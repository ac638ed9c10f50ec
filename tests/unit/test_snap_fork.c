/* Unit tests of cluster/snap_fork.c: a snapshot serialised by a forked child is
 * the state at the fork, byte for byte, however the parent changes the state
 * afterwards; a stream that is not a whole, intact snapshot (truncated,
 * corrupt, silent) is refused, and no child is left behind. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "../../cluster/snap_fork.h"
#include "tern/cmd.h"
#include "tern/error.h"
#include "tern/fsm.h"
#include "tern/storage.h"

static struct tern_bytes B(const char *s) {
    return (struct tern_bytes){(const uint8_t *)s, (uint32_t)strlen(s)};
}

static void
apply(struct tern_fsm *f, struct tern_cmd *c)
{
    struct tern_fsm_result r;
    c->now_ms = 1800000000000u;
    tern_fsm_apply(f, c, &r);
    assert_int_equal(r.status, TERN_OK);
}

/* A persistent session subscribed to dev/<i>, offline, so publishes queue. */
static void add_session(struct tern_fsm *f, int i)
{
    char id[32], filter[32];
    snprintf(id, sizeof(id), "dev-%d", i);
    snprintf(filter, sizeof(filter), "dev/%d", i);
    struct tern_cmd c = {.type = TERN_CMD_SESSION_OPEN};
    c.u.open.client_id = B(id);
    c.u.open.node = 1;
    c.u.open.proto = TERN_MQTT_5;
    c.u.open.expiry_s = 3600;
    c.u.open.receive_max = 8;
    apply(f, &c);
    uint64_t epoch = tern_fsm_session_epoch(tern_fsm_session_get(f, id, strlen(id)));
    uint8_t list[64];
    struct tern_cmd_sub e = {.filter = B(filter), .options = 1};
    size_t n = tern_cmd_put_sub(list, sizeof(list), &e);
    c = (struct tern_cmd){.type = TERN_CMD_SUBSCRIBE};
    c.u.sub.client_id = B(id);
    c.u.sub.epoch = epoch;
    c.u.sub.packet_id = 1;
    c.u.sub.list = (struct tern_bytes){list, (uint32_t)n};
    c.u.sub.count = 1;
    apply(f, &c);
    c = (struct tern_cmd){.type = TERN_CMD_SESSION_CLOSE};
    c.u.close.client_id = B(id);
    c.u.close.epoch = epoch;
    c.u.close.expiry_s = 3600;
    apply(f, &c);
}

static void publish(struct tern_fsm *f, int i, bool retain)
{
    char topic[32];
    snprintf(topic, sizeof(topic), "dev/%d", i);
    struct tern_cmd c = {.type = TERN_CMD_PUBLISH};
    c.u.publish.msg.topic = B(topic);
    c.u.publish.msg.payload = B("payload");
    c.u.publish.msg.qos = 1;
    c.u.publish.msg.retain = retain;
    apply(f, &c);
}

static struct tern_fsm *state(int sessions)
{
    struct tern_fsm_limits lim;
    tern_fsm_limits_default(&lim);
    struct tern_fsm_observer obs = {0};
    struct tern_fsm *f = tern_fsm_new(1, &lim, &obs);
    assert_non_null(f);
    for (int i = 0; i < sessions; i++) {
        add_session(f, i);
        publish(f, i, i % 3 == 0);
        publish(f, i, false);
    }
    return f;
}

static void test_forked_is_the_state_at_the_fork(void **unused)
{
    (void)unused;
    struct tern_fsm *f = state(300);
    uint8_t *inl, *forked;
    size_t inl_len, forked_len;
    assert_int_equal(tern_fsm_snapshot(f, &inl, &inl_len), TERN_OK);
    char errmsg[TERN_ERRMSG_SIZE] = "";
    struct tern_snapfork sf;
    assert_int_equal(tern_snapfork_start(&sf, f, errmsg), TERN_OK);
    assert_true(sf.pid > 0);
    /* The parent goes on applying while the child serialises: more sessions,
     * queued messages, a retained message replaced, sessions deleted. */
    for (int i = 300; i < 400; i++)
        add_session(f, i);
    for (int i = 0; i < 400; i++)
        publish(f, i, i % 5 == 0);
    for (int i = 0; i < 50; i++) {
        char id[32];
        snprintf(id, sizeof(id), "dev-%d", i);
        struct tern_cmd c = {.type = TERN_CMD_SESSION_DELETE};
        c.u.del.client_id = B(id);
        apply(f, &c);
    }
    assert_int_equal(tern_snapfork_collect(&sf, &forked, &forked_len, 30000, errmsg),
                     TERN_OK);
    assert_int_equal(sf.pid, 0);
    assert_int_equal(sf.fd, -1);
    assert_int_equal(forked_len, inl_len);
    assert_memory_equal(forked, inl, inl_len);
    /* and the state now is another one: the child did not see the changes */
    uint8_t *now;
    size_t now_len;
    assert_int_equal(tern_fsm_snapshot(f, &now, &now_len), TERN_OK);
    assert_true(now_len != inl_len || memcmp(now, inl, inl_len) != 0);
    free(now);
    free(inl);
    free(forked);
    tern_fsm_free(f);
}

/* The child's stream replaced by one the test writes (the real child's
 * output goes nowhere): collect must refuse what is not a whole snapshot and
 * still reap the child. Returns the write end. */
static int swap_stream(struct tern_snapfork *sf)
{
    /* First the real child finishes (its small snapshot fits in the pipe) and
     * exits 0, still unreaped: what fails is then the stream, nothing else. */
    siginfo_t si;
    assert_int_equal(waitid(P_PID, (id_t)sf->pid, &si, WEXITED | WNOWAIT), 0);
    assert_int_equal(si.si_code, CLD_EXITED);
    assert_int_equal(si.si_status, 0);
    int p[2];
    assert_int_equal(pipe(p), 0);
    assert_int_equal(dup2(p[0], sf->fd), sf->fd);
    close(p[0]);
    return p[1];
}

static void expect_failure(struct tern_snapfork *sf, unsigned silence_ms, int want)
{
    char errmsg[TERN_ERRMSG_SIZE] = "";
    int pid = sf->pid;
    uint8_t *out = (uint8_t *)sf; /* must be reset */
    size_t len = 1;
    assert_int_equal(tern_snapfork_collect(sf, &out, &len, silence_ms, errmsg), want);
    assert_null(out);
    assert_int_equal(len, 0);
    assert_true(errmsg[0] != '\0');
    assert_int_equal(sf->pid, 0);
    assert_int_equal(sf->fd, -1);
    assert_int_equal(waitpid(pid, NULL, WNOHANG), -1); /* reaped */
}

static void test_truncated_stream_is_an_error(void **unused)
{
    (void)unused;
    struct tern_fsm *f = state(50);
    char errmsg[TERN_ERRMSG_SIZE] = "";
    struct tern_snapfork sf;
    assert_int_equal(tern_snapfork_start(&sf, f, errmsg), TERN_OK);
    int w = swap_stream(&sf);
    uint8_t hdr[8] = {100}; /* 100 bytes announced, 10 sent */
    assert_int_equal(write(w, hdr, sizeof(hdr)), 8);
    assert_int_equal(write(w, "0123456789", 10), 10);
    close(w);
    expect_failure(&sf, 30000, TERN_EIO);
    tern_fsm_free(f);
}

static void test_corrupt_snapshot_is_an_error(void **unused)
{
    (void)unused;
    struct tern_fsm *f = state(50);
    uint8_t *good;
    size_t len;
    assert_int_equal(tern_fsm_snapshot(f, &good, &len), TERN_OK);
    good[len / 2] ^= 1; /* whole, but its CRC does not match */
    char errmsg[TERN_ERRMSG_SIZE] = "";
    struct tern_snapfork sf;
    assert_int_equal(tern_snapfork_start(&sf, f, errmsg), TERN_OK);
    int w = swap_stream(&sf);
    uint8_t hdr[8];
    for (int i = 0; i < 8; i++)
        hdr[i] = (uint8_t)((uint64_t)len >> (8 * i));
    assert_int_equal(write(w, hdr, sizeof(hdr)), 8);
    assert_int_equal(write(w, good, len), (ssize_t)len);
    close(w);
    expect_failure(&sf, 30000, TERN_ECORRUPT);
    free(good);
    tern_fsm_free(f);
}

static void test_silent_child_is_killed(void **unused)
{
    (void)unused;
    struct tern_fsm *f = state(50);
    char errmsg[TERN_ERRMSG_SIZE] = "";
    struct tern_snapfork sf;
    assert_int_equal(tern_snapfork_start(&sf, f, errmsg), TERN_OK);
    int w = swap_stream(&sf); /* open, and nothing written */
    expect_failure(&sf, 100, TERN_EIO);
    close(w);
    tern_fsm_free(f);
}

static void test_abort_reaps_the_child(void **unused)
{
    (void)unused;
    struct tern_fsm *f = state(50);
    char errmsg[TERN_ERRMSG_SIZE] = "";
    struct tern_snapfork sf;
    assert_int_equal(tern_snapfork_start(&sf, f, errmsg), TERN_OK);
    int pid = sf.pid;
    tern_snapfork_abort(&sf);
    assert_int_equal(sf.pid, 0);
    assert_int_equal(sf.fd, -1);
    assert_int_equal(waitpid(pid, NULL, WNOHANG), -1);
    tern_snapfork_abort(&sf); /* nothing left: a no-op */
    tern_fsm_free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_forked_is_the_state_at_the_fork),
        cmocka_unit_test(test_truncated_stream_is_an_error),
        cmocka_unit_test(test_corrupt_snapshot_is_an_error),
        cmocka_unit_test(test_silent_child_is_killed),
        cmocka_unit_test(test_abort_reaps_the_child),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
