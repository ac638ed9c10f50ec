/* LD_PRELOAD shim for tests: a child made by fork() stops itself (SIGSTOP) at
 * once while the file named by $TERN_FORK_STOP_FILE exists - a forked
 * serialiser that never writes, as one stuck on a lock another thread held at
 * fork() would be. It dies with its parent (PR_SET_PDEATHSIG), so nothing
 * outlives the test. Built by tests/integration/test_snapshot_fork.py. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <unistd.h>

typedef pid_t (*fork_fn)(void);

pid_t fork(void)
{
    static fork_fn real;
    if (!real)
        real = (fork_fn)dlsym(RTLD_NEXT, "fork");
    pid_t pid = real();
    if (pid == 0) {
        const char *path = getenv("TERN_FORK_STOP_FILE");
        if (path && access(path, F_OK) == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            raise(SIGSTOP);
        }
    }
    return pid;
}
