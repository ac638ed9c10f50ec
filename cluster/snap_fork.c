/* FSM snapshots serialised in a forked child (see snap_fork.h). */
#define _GNU_SOURCE /* pipe2, F_SETPIPE_SZ */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "snap_fork.h"
#include "tern/error.h"
#include "tern/storage.h"

/* Exit statuses of the child, so the parent can say what went wrong. */
#define CHILD_OK 0
#define CHILD_ORPHAN 3              /* the parent was gone before it could serialise */
#define CHILD_SNAPSHOT 4            /* tern_fsm_snapshot() failed (out of memory) */
#define CHILD_WRITE 5               /* the pipe broke (the reader gave up) */
#define PIPE_BYTES (1 << 20)        /* fewer wake-ups of the reader */
#define LEN_MAX ((uint64_t)1 << 40) /* a length beyond this is not ours */

void tern_snapfork_init(struct tern_snapfork *sf)
{
    sf->pid = 0;
    sf->fd = -1;
}

static int write_all(int fd, const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Every descriptor but keep: the child must not keep the parent's sockets
 * open (a closed connection would send no FIN until the child exits). */
static void close_all_but(int keep)
{
#ifdef SYS_close_range
    if (keep > 3)
        syscall(SYS_close_range, 3u, (unsigned)keep - 1, 0u);
    if (syscall(SYS_close_range, (unsigned)keep + 1, ~0u, 0u) == 0)
        return;
#endif
    long max = sysconf(_SC_OPEN_MAX);
    for (long fd = 3; fd < (max > 0 ? max : 1024); fd++)
        if (fd != keep)
            close((int)fd);
}

/* The child: one thread, its own copy of the FSM. Never returns. */
static _Noreturn void child_run(const struct tern_fsm *f, int wfd, pid_t parent)
{
    /* Signals meant for the node (a terminal's ^C, a stop script's TERM) must
     * end the child too, not reach the node's handlers in this copy. */
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    signal(SIGHUP, SIG_DFL);
    signal(SIGPIPE, SIG_IGN); /* a reader gone: EPIPE, handled below */
    close_all_but(wfd);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        _exit(CHILD_ORPHAN);
    uint8_t *data = NULL;
    size_t len = 0;
    if (tern_fsm_snapshot(f, &data, &len) != TERN_OK)
        _exit(CHILD_SNAPSHOT);
    uint8_t hdr[8];
    for (int i = 0; i < 8; i++)
        hdr[i] = (uint8_t)((uint64_t)len >> (8 * i));
    if (write_all(wfd, hdr, sizeof(hdr)) != 0 || write_all(wfd, data, len) != 0)
        _exit(CHILD_WRITE);
    _exit(CHILD_OK); /* no atexit handlers, no stdio flush: nothing of the parent's */
}

int tern_snapfork_start(struct tern_snapfork *sf, const struct tern_fsm *f, char *errmsg)
{
    int p[2];
    tern_snapfork_init(sf);
    if (pipe2(p, O_CLOEXEC) != 0) {
        snprintf(errmsg, TERN_ERRMSG_SIZE, "pipe: %s", strerror(errno));
        return TERN_EIO;
    }
    (void)fcntl(p[0], F_SETPIPE_SZ, PIPE_BYTES); /* best effort */
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0)
        child_run(f, p[1], parent);
    int err = errno;
    close(p[1]);
    if (pid < 0) {
        close(p[0]);
        snprintf(errmsg, TERN_ERRMSG_SIZE, "fork: %s", strerror(err));
        return err == ENOMEM ? TERN_ENOMEM : TERN_EIO;
    }
    sf->pid = (int)pid;
    sf->fd = p[0];
    return TERN_OK;
}

/* Reads n bytes; 0, or -1 with errmsg (EOF, error, silence). */
static int read_all(int fd, uint8_t *p, size_t n, unsigned silence_ms, char *errmsg,
                    int *timed_out)
{
    while (n > 0) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int rv = poll(&pfd, 1, (int)silence_ms);
        if (rv < 0 && errno == EINTR)
            continue;
        if (rv == 0) {
            *timed_out = 1;
            snprintf(errmsg, TERN_ERRMSG_SIZE, "the child wrote nothing for %u ms",
                     silence_ms);
            return -1;
        }
        ssize_t r = rv < 0 ? -1 : read(fd, p, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            snprintf(errmsg, TERN_ERRMSG_SIZE, "reading the child's snapshot: %s",
                     r == 0 ? "end of data" : strerror(errno));
            return -1;
        }
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

/* Waits for the child; TERN_OK if it exited with CHILD_OK. */
static int reap(struct tern_snapfork *sf, char *errmsg)
{
    int status = 0;
    pid_t w;
    do
        w = waitpid((pid_t)sf->pid, &status, 0);
    while (w < 0 && errno == EINTR);
    sf->pid = 0;
    if (w < 0) {
        snprintf(errmsg, TERN_ERRMSG_SIZE, "waitpid: %s", strerror(errno));
        return TERN_EIO;
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == CHILD_OK)
        return TERN_OK;
    if (WIFEXITED(status))
        snprintf(errmsg, TERN_ERRMSG_SIZE, "the child exited with status %d%s",
                 WEXITSTATUS(status),
                 WEXITSTATUS(status) == CHILD_SNAPSHOT ? " (out of memory)" : "");
    else
        snprintf(errmsg, TERN_ERRMSG_SIZE, "the child was killed by signal %d",
                 WIFSIGNALED(status) ? WTERMSIG(status) : 0);
    return TERN_EIO;
}

int tern_snapfork_collect(struct tern_snapfork *sf, uint8_t **out, size_t *out_len,
                          unsigned silence_ms, char *errmsg)
{
    uint8_t hdr[8], extra;
    uint8_t *data = NULL;
    uint64_t len = 0;
    int timed_out = 0;
    int rc = TERN_EIO;
    *out = NULL;
    *out_len = 0;
    if (read_all(sf->fd, hdr, sizeof(hdr), silence_ms, errmsg, &timed_out) != 0)
        goto fail;
    for (int i = 0; i < 8; i++)
        len |= (uint64_t)hdr[i] << (8 * i);
    if (len == 0 || len > LEN_MAX || len > SIZE_MAX) {
        snprintf(errmsg, TERN_ERRMSG_SIZE, "the child announced %llu bytes",
                 (unsigned long long)len);
        goto fail;
    }
    data = malloc((size_t)len);
    if (!data) {
        snprintf(errmsg, TERN_ERRMSG_SIZE, "no memory for %llu bytes",
                 (unsigned long long)len);
        rc = TERN_ENOMEM;
        goto fail;
    }
    if (read_all(sf->fd, data, (size_t)len, silence_ms, errmsg, &timed_out) != 0)
        goto fail;
    /* Then the end of the stream: anything more is not the format we wrote. */
    struct pollfd pfd = {.fd = sf->fd, .events = POLLIN};
    if (poll(&pfd, 1, (int)silence_ms) <= 0 || read(sf->fd, &extra, 1) != 0) {
        snprintf(errmsg, TERN_ERRMSG_SIZE,
                 "the child's snapshot does not end after "
                 "its length");
        goto fail;
    }
    close(sf->fd);
    sf->fd = -1;
    if (reap(sf, errmsg) != TERN_OK)
        goto fail;
    /* Written by the same code a moment ago; checked anyway, as every read-back
     * is (the frame, its length and CRC). */
    const uint8_t *body;
    size_t body_len;
    if (tern_snap_open(data, (size_t)len, &body, &body_len, errmsg) != TERN_OK) {
        rc = TERN_ECORRUPT;
        goto fail;
    }
    *out = data;
    *out_len = (size_t)len;
    return TERN_OK;
fail:
    free(data);
    if (timed_out && sf->pid)
        kill((pid_t)sf->pid, SIGKILL);
    tern_snapfork_abort(sf);
    return rc;
}

void tern_snapfork_handle_open(struct tern_snapfork_handle *h,
                               const struct tern_snapfork *sf)
{
    h->pidfd = -1;
#ifdef SYS_pidfd_open
    if (sf->pid)
        h->pidfd = (int)syscall(SYS_pidfd_open, (pid_t)sf->pid, 0u);
#else
    (void)sf;
#endif
}

void tern_snapfork_handle_kill(const struct tern_snapfork_handle *h)
{
#ifdef SYS_pidfd_send_signal
    if (h->pidfd >= 0)
        syscall(SYS_pidfd_send_signal, h->pidfd, SIGKILL, NULL, 0u);
#else
    (void)h;
#endif
}

void tern_snapfork_handle_close(struct tern_snapfork_handle *h)
{
    if (h->pidfd >= 0)
        close(h->pidfd);
    h->pidfd = -1;
}

void tern_snapfork_abort(struct tern_snapfork *sf)
{
    if (sf->fd >= 0)
        close(sf->fd); /* a child still writing gets EPIPE and exits */
    sf->fd = -1;
    if (sf->pid) {
        kill((pid_t)sf->pid, SIGKILL);
        int status;
        while (waitpid((pid_t)sf->pid, &status, 0) < 0 && errno == EINTR)
            ;
    }
    sf->pid = 0;
}
