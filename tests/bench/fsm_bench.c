/* fsm-bench: what time costs the replicated state machine, per step, with N
 * sessions stored (docs/benchmarks.md, "Timers at scale").
 *
 * Builds an FSM the way a node holds it: N persistent sessions with one
 * subscription each, 90% online and idle, 10% offline with a day of expiry
 * left, and N/10 retained messages expiring in a day. Then it measures the two
 * things time does on every node:
 *   - the node's 1 s timer asks tern_fsm_next_deadline() whether a TICK is due;
 *   - a TICK applies with one session due (it expires).
 * and prints the CPU time of each (mean over many runs) and the heap growth
 * per session. Pure: links only the FSM, so the same source measures any
 * version of it.
 *
 * usage: fsm-bench [N ...]   (default: 10000 100000)
 *        fsm-bench --idle N ... (memory only: the sessions of
 *        tests/bench/sessions_mem.sh, each step's heap growth per session) */
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tern/cmd.h"
#include "tern/error.h"
#include "tern/fsm.h"

#define DAY_S 86400u
#define NEVER 0xFFFFFFFFu

static uint64_t now_ms = 1700000000000ull;

static double cpu_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static size_t heap_bytes(void)
{
    struct mallinfo2 mi = mallinfo2();
    return mi.uordblks + mi.hblkhd;
}

static struct tern_bytes B(const char *s) {
    return (struct tern_bytes){(const uint8_t *)s, (uint32_t)strlen(s)};
}

static void
must(struct tern_fsm *f, struct tern_cmd *c)
{
    struct tern_fsm_result r;
    c->now_ms = now_ms;
    tern_fsm_apply(f, c, &r);
    if (r.status != TERN_OK) {
        fprintf(stderr, "command %u: %s\n", c->type, tern_strerror(r.status));
        exit(1);
    }
}

static uint64_t open_session(struct tern_fsm *f, const char *id)
{
    struct tern_cmd c = {.type = TERN_CMD_SESSION_OPEN};
    c.u.open.client_id = B(id);
    c.u.open.node = 1;
    c.u.open.proto = TERN_MQTT_311;
    c.u.open.expiry_s = DAY_S;
    struct tern_fsm_result r;
    c.now_ms = now_ms;
    tern_fsm_apply(f, &c, &r);
    return r.epoch;
}

static void subscribe(struct tern_fsm *f, const char *id, uint64_t epoch, const char *flt)
{
    uint8_t buf[256];
    struct tern_cmd_sub e = {.filter = B(flt), .options = 1};
    size_t n = tern_cmd_put_sub(buf, sizeof(buf), &e);
    struct tern_cmd c = {.type = TERN_CMD_SUBSCRIBE};
    c.u.sub.client_id = B(id);
    c.u.sub.epoch = epoch;
    c.u.sub.packet_id = 1;
    c.u.sub.list = (struct tern_bytes){buf, (uint32_t)n};
    c.u.sub.count = 1;
    must(f, &c);
}

static void close_session(struct tern_fsm *f, const char *id, uint64_t epoch,
                          uint32_t expiry_s)
{
    struct tern_cmd c = {.type = TERN_CMD_SESSION_CLOSE};
    c.u.close.client_id = B(id);
    c.u.close.epoch = epoch;
    c.u.close.expiry_s = expiry_s;
    must(f, &c);
}

static void retain(struct tern_fsm *f, const char *topic, uint32_t expiry_s)
{
    struct tern_cmd c = {.type = TERN_CMD_PUBLISH};
    c.u.publish.msg.topic = B(topic);
    c.u.publish.msg.payload = B("42");
    c.u.publish.msg.retain = true;
    c.u.publish.msg.flags = TERN_MSG_HAS_EXPIRY;
    c.u.publish.msg.expiry_s = expiry_s;
    must(f, &c);
}

static void run(uint32_t n)
{
    size_t heap0 = heap_bytes();
    struct tern_fsm_limits lim;
    tern_fsm_limits_default(&lim);
    lim.sessions_max = n + 1000; /* the defaults stop at 1M */
    lim.retained_max = n;
    struct tern_fsm *f = tern_fsm_new(1, &lim, NULL);
    char id[32], topic[48];
    for (uint32_t i = 0; i < n; i++) {
        snprintf(id, sizeof(id), "dev-%07u", i);
        snprintf(topic, sizeof(topic), "dev/%07u/cmd", i);
        uint64_t e = open_session(f, id);
        subscribe(f, id, e, topic);
        if (i % 10 == 9)
            close_session(f, id, e, DAY_S);
        if (i % 10 == 5) {
            snprintf(topic, sizeof(topic), "state/%07u", i);
            retain(f, topic, DAY_S);
        }
    }
    size_t heap1 = heap_bytes();

    /* The 1 s timer's question, asked many times. */
    int reps = n >= 1000000 ? 20 : n >= 100000 ? 100 : 1000;
    volatile uint64_t sink = 0;
    double t0 = cpu_us();
    for (int r = 0; r < reps; r++)
        sink += tern_fsm_next_deadline(f);
    double ask_us = (cpu_us() - t0) / reps;

    /* A TICK with one session due: a short-lived session is closed with 1 s of
     * expiry, time moves on by 1 s, the TICK expires it. */
    int ticks = n >= 1000000 ? 10 : n >= 100000 ? 50 : 500;
    double tick_us = 0;
    for (int r = 0; r < ticks; r++) {
        snprintf(id, sizeof(id), "short-%d", r);
        uint64_t e = open_session(f, id);
        close_session(f, id, e, 1);
        now_ms += 1000;
        struct tern_cmd c = {.type = TERN_CMD_TICK};
        double a = cpu_us();
        must(f, &c);
        tick_us += cpu_us() - a;
    }
    tick_us /= ticks;
    if (tern_fsm_stats(f)->sessions_expired != (uint64_t)ticks) {
        fprintf(stderr, "expected %d expiries, got %llu\n", ticks,
                (unsigned long long)tern_fsm_stats(f)->sessions_expired);
        exit(1);
    }
    printf("%8u sessions (%u retained): next_deadline %9.1f us, TICK %9.1f us, "
           "FSM heap %6.1f B/session\n",
           n, n / 10, ask_us, tick_us, (double)(heap1 - heap0) / n);
    fflush(stdout);
    tern_fsm_free(f);
    (void)sink;
}

/* The FSM side of tests/bench/sessions_mem.sh: N MQTT 3.1.1 persistent
 * sessions (tern-bench's client ids, "tb<pid>-i<i>"), each subscribed to
 * dev/<i> at QoS 1 and then closed (offline, no expiry). Prints the heap that
 * each step adds per session (mallinfo2: chunks with their headers), so the
 * FSM's part of the broker's RSS per session can be told from the rest. */
static void run_idle(uint32_t n)
{
    struct tern_fsm_limits lim;
    tern_fsm_limits_default(&lim);
    lim.sessions_max = n + 1000;
    size_t heap0 = heap_bytes();
    struct tern_fsm *f = tern_fsm_new(1, &lim, NULL);
    size_t step[3] = {0, 0, 0};
    char id[32], topic[32];
    for (uint32_t i = 0; i < n; i++) {
        snprintf(id, sizeof(id), "tb12345-i%u", i);
        snprintf(topic, sizeof(topic), "dev/%u", i);
        size_t h = heap_bytes();
        struct tern_cmd c = {.type = TERN_CMD_SESSION_OPEN};
        c.u.open.client_id = B(id);
        c.u.open.node = 1;
        c.u.open.proto = TERN_MQTT_311;
        c.u.open.expiry_s = NEVER;
        struct tern_fsm_result r;
        c.now_ms = now_ms;
        tern_fsm_apply(f, &c, &r);
        if (r.status != TERN_OK) {
            fprintf(stderr, "open: %s\n", tern_strerror(r.status));
            exit(1);
        }
        size_t h1 = heap_bytes();
        subscribe(f, id, r.epoch, topic);
        size_t h2 = heap_bytes();
        close_session(f, id, r.epoch, NEVER);
        size_t h3 = heap_bytes();
        step[0] += h1 - h;
        step[1] += h2 - h1;
        step[2] += h3 - h2;
    }
    size_t total = heap_bytes() - heap0;
    /* A snapshot's bytes are held whole while it is taken (the node's buffer
     * for libraft), so they are part of the peak, not of the idle state. */
    uint8_t *snap = NULL;
    size_t snap_len = 0;
    if (tern_fsm_snapshot(f, &snap, &snap_len) != TERN_OK)
        snap_len = 0;
    free(snap);
    printf("%8u idle sessions: SESSION_OPEN %6.1f B, SUBSCRIBE %6.1f B, "
           "SESSION_CLOSE %5.1f B, FSM heap %6.1f B/session, snapshot %5.1f B/session\n",
           n, (double)step[0] / n, (double)step[1] / n, (double)step[2] / n,
           (double)total / n, (double)snap_len / n);
    fflush(stdout);
    tern_fsm_free(f);
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--idle") == 0) {
        for (int i = 2; i < argc; i++)
            run_idle((uint32_t)strtoul(argv[i], NULL, 10));
        return 0;
    }
    if (argc < 2) {
        run(10000);
        run(100000);
        return 0;
    }
    for (int i = 1; i < argc; i++)
        run((uint32_t)strtoul(argv[i], NULL, 10));
    return 0;
}
