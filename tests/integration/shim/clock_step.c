/* LD_PRELOAD shim for tests: shifts CLOCK_REALTIME by the number of seconds
 * written in the file named by $TERN_CLOCK_STEP_FILE (absent or empty: no
 * shift), as an NTP step or an operator's `date -s` would. Every other clock
 * passes through untouched, so a process that times its deadlines with a
 * monotonic clock does not see the step. Built by tests/integration/
 * test_clock_step.py. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/time.h>
#include <time.h>

typedef int (*clock_gettime_fn)(clockid_t, struct timespec *);

static long step_s(void)
{
    const char *path = getenv("TERN_CLOCK_STEP_FILE");
    FILE *f = path ? fopen(path, "r") : NULL;
    long s = 0;
    if (f) {
        if (fscanf(f, "%ld", &s) != 1)
            s = 0;
        fclose(f);
    }
    return s;
}

int clock_gettime(clockid_t id, struct timespec *ts)
{
    static clock_gettime_fn real;
    if (!real)
        real = (clock_gettime_fn)dlsym(RTLD_NEXT, "clock_gettime");
    int rc = real(id, ts);
    if (rc == 0 && (id == CLOCK_REALTIME || id == CLOCK_REALTIME_COARSE))
        ts->tv_sec += step_s();
    return rc;
}

int gettimeofday(struct timeval *tv, void *tz)
{
    struct timespec ts;
    (void)tz;
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0)
        return -1;
    tv->tv_sec = ts.tv_sec;
    tv->tv_usec = ts.tv_nsec / 1000;
    return 0;
}

time_t time(time_t *t)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (t)
        *t = ts.tv_sec;
    return ts.tv_sec;
}
