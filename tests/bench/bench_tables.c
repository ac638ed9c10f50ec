/* Memory per entry and lookup cost of tern's hash tables (docs/benchmarks.md,
 * "Hash tables"). Prints figures; asserts nothing about speed.
 *
 *   build/tern-bench-tables [N]     (default N = 100000)
 *
 * Memory is the heap in use (mallinfo2) after filling a table, minus before,
 * divided by N: it includes the entries themselves, not only the table. Lookup
 * cost is the mean over N lookups in a shuffled order (hits), and N lookups of
 * absent keys (misses); see time_lookups() for how noise is filtered. A
 * batch repeated runs warm, so these are lookups in a warm cache for tables
 * that fit it, and the figures compare implementations, not capacity. */
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tern/clients.h"
#include "tern/cmd.h"
#include "tern/fsm.h"
#include "tern/topic.h"

static size_t heap_used(void)
{
    return mallinfo2().uordblks;
}

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/* A fixed permutation (xorshift), so each build looks up in the same order. */
static size_t *shuffled(size_t n)
{
    size_t *p = malloc(n * sizeof(*p));
    uint64_t x = 88172645463325252ULL;
    for (size_t i = 0; i < n; i++)
        p[i] = i;
    for (size_t i = n - 1; i > 0; i--) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        size_t j = (size_t)(x % (i + 1));
        size_t t = p[i];
        p[i] = p[j];
        p[j] = t;
    }
    return p;
}

static char **keys_make(size_t n, const char *fmt)
{
    char **k = malloc(n * sizeof(*k));
    for (size_t i = 0; i < n; i++) {
        char buf[64];
        snprintf(buf, sizeof buf, fmt, (unsigned long)i);
        k[i] = strdup(buf);
    }
    return k;
}

static void keys_free(char **k, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(k[i]);
    free(k);
}

typedef int (*lookup_fn)(void *ctx, const char *key);

/* ns per lookup of every key (in order p): the lookups run in batches of
 * BATCH, each batch timed 5 times and its fastest run counted, so that a
 * batch during which the (shared) machine ran something else does not count. */
#define BATCH 500
static double time_lookups(void *ctx, lookup_fn fn, char **keys, const size_t *p,
                           size_t n, long *found)
{
    double total = 0;
    long hits = 0;
    for (size_t b = 0; b < n; b += BATCH) {
        size_t e = b + BATCH < n ? b + BATCH : n;
        double best = 1e30;
        for (int r = 0; r < 5; r++) {
            long h = 0;
            double t0 = now_ns();
            for (size_t i = b; i < e; i++)
                h += fn(ctx, keys[p[i]]);
            double dt = now_ns() - t0;
            if (dt < best)
                best = dt;
            if (r == 0)
                hits += h;
        }
        total += best;
    }
    *found = hits;
    return total / (double)n;
}

static void report(const char *what, size_t n, size_t bytes, double hit_ns, long hits,
                   double miss_ns, long misses)
{
    printf("%-34s %8zu %10.1f %10.1f %10.1f   (%ld hits, %ld false hits)\n", what, n,
           (double)bytes / (double)n, hit_ns, miss_ns, hits, misses);
}

/* --- the FSM's sessions table (client id -> session) --- */
static int session_lookup(void *ctx, const char *key)
{
    return tern_fsm_session_get(ctx, key, strlen(key)) != NULL;
}

static void bench_sessions(size_t n, const size_t *p)
{
    char **ids = keys_make(n, "client-%lu"), **miss = keys_make(n, "absent-%lu");
    size_t h0 = heap_used();
    struct tern_fsm *f = tern_fsm_new(1, NULL, NULL);
    size_t h1 = heap_used();
    for (size_t i = 0; i < n; i++) {
        struct tern_cmd c = {.type = TERN_CMD_SESSION_OPEN, .now_ms = 1};
        c.u.open.client_id =
            (struct tern_bytes){(const uint8_t *)ids[i], (uint32_t)strlen(ids[i])};
        c.u.open.node = 1;
        c.u.open.proto = TERN_MQTT_5;
        c.u.open.expiry_s = 3600;
        struct tern_fsm_result r;
        tern_fsm_apply(f, &c, &r);
    }
    size_t bytes = heap_used() - h1;
    long hits, false_hits;
    double hit = time_lookups(f, session_lookup, ids, p, n, &hits);
    double mis = time_lookups(f, session_lookup, miss, p, n, &false_hits);
    report("fsm sessions (open, idle)", n, bytes, hit, hits, mis, false_hits);
    tern_fsm_free(f);
    (void)h0;
    keys_free(ids, n);
    keys_free(miss, n);
}

/* --- the node's client-id table --- */
static int client_lookup(void *ctx, const char *key)
{
    return tern_clients_get(ctx, key, strlen(key)) != NULL;
}

static void bench_clients(size_t n, const size_t *p)
{
    char **ids = keys_make(n, "client-%lu"), **miss = keys_make(n, "absent-%lu");
    struct tern_clients t;
    size_t h0 = heap_used();
    tern_clients_init(&t);
    for (size_t i = 0; i < n; i++)
        tern_clients_put(&t, ids[i], strlen(ids[i]));
    size_t bytes = heap_used() - h0;
    long hits, false_hits;
    double hit = time_lookups(&t, client_lookup, ids, p, n, &hits);
    double mis = time_lookups(&t, client_lookup, miss, p, n, &false_hits);
    report("node clients (slots)", n, bytes, hit, hits, mis, false_hits);
    tern_clients_free(&t);
    keys_free(ids, n);
    keys_free(miss, n);
}

/* --- the topic tree --- */
static int any_visit(void *ctx, const char *key, size_t len, void *value)
{
    (void)ctx;
    (void)key;
    (void)len;
    (void)value;
    return 1;
}

static int topic_lookup(void *ctx, const char *key)
{
    return tern_topic_tree_match(ctx, key, strlen(key), any_visit, NULL);
}

static void bench_topic(size_t n, const size_t *p, const char *what, const char *fmt,
                        const char *miss_fmt)
{
    char **keys = keys_make(n, fmt), **miss = keys_make(n, miss_fmt);
    size_t h0 = heap_used();
    struct tern_topic_tree *t = tern_topic_tree_new();
    for (size_t i = 0; i < n; i++)
        tern_topic_tree_add(t, keys[i], strlen(keys[i]), (void *)(uintptr_t)(i + 1));
    size_t bytes = heap_used() - h0;
    long hits, false_hits;
    double hit = time_lookups(t, topic_lookup, keys, p, n, &hits);
    double mis = time_lookups(t, topic_lookup, miss, p, n, &false_hits);
    report(what, n, bytes, hit, hits, mis, false_hits);
    tern_topic_tree_free(t);
    keys_free(keys, n);
    keys_free(miss, n);
}

/* --- the FSM's routes (map + route tree) --- */
static int node_visit(void *ctx, uint32_t node)
{
    (void)ctx;
    (void)node;
    return 1;
}

static int route_lookup(void *ctx, const char *key)
{
    return tern_fsm_route_match(ctx, key, strlen(key), node_visit, NULL) != 0;
}

static void bench_routes(size_t n, const size_t *p)
{
    char **keys = keys_make(n, "r/%lu"), **miss = keys_make(n, "r/x%lu");
    struct tern_fsm *f = tern_fsm_new(1, NULL, NULL);
    size_t h0 = heap_used();
    for (size_t i = 0; i < n; i++) {
        struct tern_cmd c = {.type = TERN_CMD_ROUTE_ADD, .now_ms = 1};
        c.u.route.node = 2;
        c.u.route.filter =
            (struct tern_bytes){(const uint8_t *)keys[i], (uint32_t)strlen(keys[i])};
        struct tern_fsm_result r;
        tern_fsm_apply(f, &c, &r);
    }
    size_t bytes = heap_used() - h0;
    long hits, false_hits;
    double hit = time_lookups(f, route_lookup, keys, p, n, &hits);
    double mis = time_lookups(f, route_lookup, miss, p, n, &false_hits);
    report("fsm routes (map + tree)", n, bytes, hit, hits, mis, false_hits);
    tern_fsm_free(f);
    keys_free(keys, n);
    keys_free(miss, n);
}

int main(int argc, char **argv)
{
    size_t n = argc > 1 ? (size_t)strtoul(argv[1], NULL, 10) : 100000;
    if (n < 2)
        n = 2;
    size_t *p = shuffled(n);
    printf("%-34s %8s %10s %10s %10s\n", "table", "entries", "bytes/ent", "hit ns",
           "miss ns");
    bench_sessions(n, p);
    bench_clients(n, p);
    bench_topic(n, p, "topic tree, one wide level", "devices/%lu", "devices/x%lu");
    bench_topic(n, p, "topic tree, devices/ID/state", "devices/%lu/state",
                "devices/%lu/other");
    bench_routes(n, p);
    free(p);
    return 0;
}
