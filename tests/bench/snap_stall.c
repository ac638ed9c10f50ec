/* snap-bench: how long one snapshot of the FSM stops the thread that owns it.
 *
 * Builds the state directly through tern_fsm_apply (no network, no Raft): N
 * persistent sessions, offline, each with one subscription and Q queued QoS 1
 * messages of P payload bytes. Then, for that state:
 *   inline  tern_fsm_snapshot() on the calling thread: what the loop waited for
 *           before snapshots were forked (the whole serialisation);
 *   fork    tern_snapfork_start() (the stall: fork() copying page tables) and,
 *           while the child serialises, a burst of applies on the parent (they
 *           pay the copy-on-write faults), then tern_snapfork_collect();
 *           the bytes must equal the inline snapshot's.
 * Then a second fork after those applies (fork2_cpu): the pages they wrote
 * while the child ran were split from huge pages into small ones (huge2_MB
 * left), which the next fork copies one by one.
 * Prints one line per N; figures, not pass/fail (docs/benchmarks.md).
 *
 * usage: snap-bench [-q queued] [-p payload_bytes] [-b burst] N...   */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../../cluster/snap_fork.h"
#include "tern/cmd.h"
#include "tern/error.h"
#include "tern/fsm.h"

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* CPU time of this thread (user + system): what the stall costs, without the
 * waits of a machine shared with other work. */
static uint64_t cpu_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* Heap on transparent huge pages (GLIBC_TUNABLES=glibc.malloc.hugetlb=1). */
static double anon_huge_mb(void)
{
    char line[256];
    long kb = 0;
    FILE *fp = fopen("/proc/self/smaps_rollup", "r");
    if (!fp)
        return 0;
    while (fgets(line, sizeof(line), fp))
        if (sscanf(line, "AnonHugePages: %ld kB", &kb) == 1)
            break;
    fclose(fp);
    return (double)kb / 1024.0;
}

static double rss_mb(void)
{
    long pages = 0, rss = 0;
    FILE *fp = fopen("/proc/self/statm", "r");
    if (fp) {
        if (fscanf(fp, "%ld %ld", &pages, &rss) != 2)
            rss = 0;
        fclose(fp);
    }
    return (double)rss * (double)sysconf(_SC_PAGESIZE) / 1048576.0;
}

static struct tern_bytes B(const char *s, size_t n) {
    return (struct tern_bytes){(const uint8_t *)s, (uint32_t)n};
}

static void
apply(struct tern_fsm *f, struct tern_cmd *c, uint64_t now_ms)
{
    struct tern_fsm_result r;
    c->now_ms = now_ms;
    tern_fsm_apply(f, c, &r);
    if (r.status != TERN_OK) {
        fprintf(stderr, "snap-bench: command %u: %s\n", c->type, tern_strerror(r.status));
        exit(1);
    }
}

static void publish(struct tern_fsm *f, size_t i, const char *payload, size_t plen,
                    uint64_t now_ms)
{
    char topic[40];
    int tl = snprintf(topic, sizeof(topic), "dev/%zu/cmd", i);
    struct tern_cmd c = {.type = TERN_CMD_PUBLISH};
    c.u.publish.msg.topic = B(topic, (size_t)tl);
    c.u.publish.msg.payload = B(payload, plen);
    c.u.publish.msg.qos = 1;
    apply(f, &c, now_ms);
}

static struct tern_fsm *build(size_t n, unsigned queued, const char *payload, size_t plen)
{
    struct tern_fsm_limits lim;
    tern_fsm_limits_default(&lim);
    lim.sessions_max = (uint32_t)(n + 16);
    struct tern_fsm_observer obs = {0};
    struct tern_fsm *f = tern_fsm_new(1, &lim, &obs);
    if (!f) {
        fprintf(stderr, "snap-bench: no memory\n");
        exit(1);
    }
    uint64_t now_ms = 1800000000000u;
    for (size_t i = 0; i < n; i++) {
        char id[32], filter[40];
        int il = snprintf(id, sizeof(id), "dev-%08zu", i);
        int fl = snprintf(filter, sizeof(filter), "dev/%zu/cmd", i);
        struct tern_cmd c = {.type = TERN_CMD_SESSION_OPEN};
        c.u.open.client_id = B(id, (size_t)il);
        c.u.open.node = 1;
        c.u.open.proto = TERN_MQTT_5;
        c.u.open.expiry_s = 86400;
        c.u.open.receive_max = 32;
        apply(f, &c, now_ms);
        struct tern_fsm_session *s = tern_fsm_session_get(f, id, (size_t)il);
        uint64_t epoch = tern_fsm_session_epoch(s);
        uint8_t list[128];
        struct tern_cmd_sub e = {.filter = B(filter, (size_t)fl), .options = 1};
        size_t ln = tern_cmd_put_sub(list, sizeof(list), &e);
        c = (struct tern_cmd){.type = TERN_CMD_SUBSCRIBE};
        c.u.sub.client_id = B(id, (size_t)il);
        c.u.sub.epoch = epoch;
        c.u.sub.packet_id = 1;
        c.u.sub.list = (struct tern_bytes){list, (uint32_t)ln};
        c.u.sub.count = 1;
        apply(f, &c, now_ms);
        c = (struct tern_cmd){.type = TERN_CMD_SESSION_CLOSE};
        c.u.close.client_id = B(id, (size_t)il);
        c.u.close.epoch = epoch;
        c.u.close.expiry_s = 86400;
        apply(f, &c, now_ms);
        for (unsigned k = 0; k < queued; k++)
            publish(f, i, payload, plen, now_ms);
    }
    return f;
}

int main(int argc, char **argv)
{
    unsigned queued = 10, burst = 10000;
    size_t plen = 32;
    int opt;
    while ((opt = getopt(argc, argv, "q:p:b:")) != -1) {
        if (opt == 'q')
            queued = (unsigned)atoi(optarg);
        else if (opt == 'p')
            plen = (size_t)atoi(optarg);
        else if (opt == 'b')
            burst = (unsigned)atoi(optarg);
        else
            return 2;
    }
    if (optind >= argc) {
        fprintf(stderr, "usage: snap-bench [-q queued] [-p payload] [-b burst] N...\n");
        return 2;
    }
    char *payload = malloc(plen + 1);
    memset(payload, 'x', plen);
    printf("%9s %8s %8s %8s %10s %9s %8s %9s %9s %9s %9s %8s %9s %7s %s\n", "sessions",
           "rss_MB", "huge_MB", "snap_MB", "inline_ms", "inl_cpu", "fork_ms", "fork_cpu",
           "child_ms", "burst_ms", "burst0_ms", "huge2_MB", "fork2_cpu", "build_s",
           "same");
    for (int a = optind; a < argc; a++) {
        size_t n = (size_t)strtoull(argv[a], NULL, 10);
        uint64_t t = now_us();
        struct tern_fsm *f = build(n, queued, payload, plen);
        double build_s = (double)(now_us() - t) / 1e6;
        double huge0 = anon_huge_mb(), rss0 = rss_mb();

        uint8_t *inl = NULL, *forked = NULL;
        size_t inl_len = 0, forked_len = 0;
        t = now_us();
        uint64_t c0 = cpu_us();
        if (tern_fsm_snapshot(f, &inl, &inl_len) != TERN_OK)
            return 1;
        uint64_t inline_us = now_us() - t, inline_cpu_us = cpu_us() - c0;

        char errmsg[TERN_ERRMSG_SIZE] = "";
        struct tern_snapfork sf;
        t = now_us();
        c0 = cpu_us();
        if (tern_snapfork_start(&sf, f, errmsg) != TERN_OK) {
            fprintf(stderr, "snap-bench: %s\n", errmsg);
            return 1;
        }
        uint64_t fork_us = now_us() - t, fork_cpu_us = cpu_us() - c0;
        /* Applies while the child runs: each first write to a page copies it. */
        uint64_t b0 = now_us();
        for (unsigned k = 0; k < burst; k++)
            publish(f, (size_t)k * 7919 % n, payload, plen, 1800000000001u);
        uint64_t burst_us = now_us() - b0;
        if (tern_snapfork_collect(&sf, &forked, &forked_len, 60000, errmsg) != TERN_OK) {
            fprintf(stderr, "snap-bench: %s\n", errmsg);
            return 1;
        }
        uint64_t child_us = now_us() - t;
        /* The same burst again, no child: the apply cost without copy-on-write. */
        b0 = now_us();
        for (unsigned k = 0; k < burst; k++)
            publish(f, (size_t)k * 7919 % n, payload, plen, 1800000000002u);
        uint64_t burst0_us = now_us() - b0;
        /* A second fork after those writes: each written huge page was split
         * when first written under the child (Linux >= 5.8 copies 4 KiB), so
         * the next fork copies more page tables until khugepaged merges them. */
        double huge1 = anon_huge_mb();
        c0 = cpu_us();
        if (tern_snapfork_start(&sf, f, errmsg) != TERN_OK)
            return 1;
        uint64_t fork2_cpu_us = cpu_us() - c0;
        tern_snapfork_abort(&sf);
        int same = inl_len == forked_len && memcmp(inl, forked, inl_len) == 0;
        printf("%9zu %8.0f %8.0f %8.1f %10.1f %9.1f %8.2f %9.2f %9.0f %9.1f %9.1f %8.0f "
               "%9.2f %7.1f %s\n",
               n, rss0, huge0, (double)inl_len / 1048576.0, (double)inline_us / 1000.0,
               (double)inline_cpu_us / 1000.0, (double)fork_us / 1000.0,
               (double)fork_cpu_us / 1000.0, (double)child_us / 1000.0,
               (double)burst_us / 1000.0, (double)burst0_us / 1000.0, huge1,
               (double)fork2_cpu_us / 1000.0, build_s, same ? "yes" : "NO");
        fflush(stdout);
        free(inl);
        free(forked);
        tern_fsm_free(f);
        if (!same)
            return 1;
    }
    free(payload);
    return 0;
}
