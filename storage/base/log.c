/* The logger of tern/log.h. */
#include "tern/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tern/error.h"

/* Longest line written; longer messages are cut, never split. */
#define LOG_LINE_MAX 2048

/* The one process-wide mutable global tern allows: the log level is a property of
 * the process (stderr is too), and threading a logger through every pure module
 * would cost more than it buys. Atomic because libuv pool threads may log. */
static atomic_int log_level = TERN_LOG_INFO;

static const char *const level_names[] = {"ERROR", "WARN", "INFO", "DEBUG"};

static int clamp_level(int level)
{
    if (level < TERN_LOG_ERROR)
        return TERN_LOG_ERROR;
    if (level > TERN_LOG_DEBUG)
        return TERN_LOG_DEBUG;
    return level;
}

void tern_log_set_level(int level)
{
    atomic_store(&log_level, clamp_level(level));
}

bool tern_log_enabled(int level)
{
    return level <= atomic_load(&log_level);
}

/* "2024-05-01T12:34:56.789Z"; returns its length. */
static size_t format_time(char *buf, size_t cap)
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(buf, cap, "%Y-%m-%dT%H:%M:%S", &tm);
    int m = snprintf(buf + n, cap - n, ".%03dZ", (int)(ts.tv_nsec / 1000000));
    return n + (size_t)(m > 0 ? m : 0);
}

void tern_log(int level, const char *fmt, ...)
{
    char line[LOG_LINE_MAX];
    size_t n = format_time(line, sizeof line);
    int m = snprintf(line + n, sizeof line - n, " %s ", level_names[clamp_level(level)]);
    n += (size_t)m;

    va_list ap;
    va_start(ap, fmt);
    m = vsnprintf(line + n, sizeof line - n, fmt, ap);
    va_end(ap);
    size_t end = n + (m < 0 ? 0 : (size_t)m);
    if (end > sizeof line - 2)
        end = sizeof line - 2; /* truncated: keep room for '\n' */

    /* One record per line, whatever the message holds, so logs stay greppable. */
    for (size_t i = n; i < end; i++) {
        if (line[i] == '\n' || line[i] == '\r')
            line[i] = ' ';
    }
    line[end++] = '\n';
    /* A single write so lines from several threads do not interleave. */
    fwrite(line, 1, end, stderr);
}

int tern_log_open_file(const char *path, char *errmsg)
{
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (fd < 0) {
        snprintf(errmsg, TERN_ERRMSG_SIZE, "log_file: cannot open %.150s: %s", path,
                 strerror(errno));
        return TERN_EIO;
    }
    fflush(stderr);
    /* dup2 swaps the file under fd 2 at once: no line is lost or half written. */
    int rc = dup2(fd, STDERR_FILENO) < 0 ? errno : 0;
    close(fd);
    if (rc) {
        snprintf(errmsg, TERN_ERRMSG_SIZE, "log_file: cannot use %.150s: %s", path,
                 strerror(rc));
        return TERN_EIO;
    }
    return TERN_OK;
}
