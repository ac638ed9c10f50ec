/* Transparent huge pages for the heap, so that fork() is cheap.
 *
 * Snapshots are serialised by a forked child (cluster/snap_fork.h); the loop
 * waits only for fork(), which copies the page tables of the heap: with 4 KiB
 * pages 16 ms at 330 MB of heap here, with 2 MiB pages 3 ms
 * (docs/benchmarks.md, "Snapshot stalls"). glibc's malloc puts
 * its heap on huge pages (madvise) only if told at start, through the
 * GLIBC_TUNABLES environment variable, which glibc reads before main(). So
 * ternd sets it and executes itself again, once, before it has opened
 * anything; an environment that already names the tunable (for instance
 * glibc.malloc.hugetlb=0, to opt out) is left alone. Since Linux 5.8 a write
 * after fork() to a shared huge page copies one 4 KiB page, not 2 MiB. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "node.h"

#define TUNABLE "glibc.malloc.hugetlb"
/* The heap grows 32 MiB at a time: a 2 MiB page is used only where the heap
 * covers the whole aligned 2 MiB when it is first touched, and with glibc's
 * default 128 KiB steps two thirds of it stayed on small pages (190 of 587
 * MiB at 100,000 sessions; 514 of 585 with this, fork() 1.9 -> 1.5 ms CPU). */
/* One arena for every thread: each thread arena keeps that 32 MiB pad too,
 * and the thread-pool threads that collect snapshots (cluster/snap_fork.c)
 * filled theirs with snapshot buffers that stayed resident after free: 4
 * arenas held 108 MB of RSS at 1M sessions with 27 KB in use
 * (docs/benchmarks.md, "Under 300 bytes per idle persistent session at a
 * million"). Those threads allocate rarely and tcache serves their small
 * requests without the arena's lock, so sharing it should not show in the
 * loop's latency (and did not: PUBACK p50 and p99 the same as before). */
#define SETTINGS TUNABLE "=1:glibc.malloc.top_pad=33554432:glibc.malloc.arena_max=1"

void tern_heap_thp_reexec(char **argv)
{
#ifdef __GLIBC__
    const char *old = getenv("GLIBC_TUNABLES");
    if (old && strstr(old, TUNABLE))
        return; /* set already: by us before the exec, or by the operator */
    char value[1024];
    int n = snprintf(value, sizeof(value), "%s%s" SETTINGS, old ? old : "",
                     old && old[0] ? ":" : "");
    if (n < 0 || (size_t)n >= sizeof(value) || setenv("GLIBC_TUNABLES", value, 1) != 0)
        return;
    execv("/proc/self/exe", argv);
    /* No /proc, or not allowed: go on with small pages (slower snapshots). */
    unsetenv("GLIBC_TUNABLES");
    if (old)
        setenv("GLIBC_TUNABLES", old, 1);
#else
    (void)argv;
#endif
}
