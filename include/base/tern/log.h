/* tern logger: one line per call on stderr,
 *   2024-05-01T12:34:56.789Z INFO message
 * (UTC, milliseconds). Levels are enum tern_log_level, below.
 *
 * Use the macros: they test the level first, so the arguments of a disabled
 * message are not even evaluated, let alone formatted. */
#ifndef TERN_LOG_H
#define TERN_LOG_H

#include <stdbool.h>

enum tern_log_level {
    TERN_LOG_ERROR = 0,
    TERN_LOG_WARN = 1,
    TERN_LOG_INFO = 2,
    TERN_LOG_DEBUG = 3,
};

#if defined(__GNUC__)
#define TERN_PRINTF(fmt_idx, arg_idx) __attribute__((format(printf, fmt_idx, arg_idx)))
#else
#define TERN_PRINTF(fmt_idx, arg_idx)
#endif

/* Messages above `level` are dropped. Out-of-range values are clamped. */
void tern_log_set_level(int level);

bool tern_log_enabled(int level);

/* Sends the log (all of stderr, so libraft's and the sanitizers' lines too) to
 * path, appending, creating it if needed; called again it reopens the file (after
 * logrotate moved it). TERN_OK, or TERN_EIO with the OS reason in errmsg
 * (TERN_ERRMSG_SIZE) and the log left where it was. */
int tern_log_open_file(const char *path, char *errmsg);

/* Writes one line; newlines inside the message become spaces. */
void tern_log(int level, const char *fmt, ...) TERN_PRINTF(2, 3);

/* TERN_LOGx(fmt, ...): `...` holds fmt too, so a bare string works in C11. */
#define TERN_LOG_AT(level, ...)                                                          \
    do {                                                                                 \
        if (tern_log_enabled(level))                                                     \
            tern_log(level, __VA_ARGS__);                                                \
    } while (0)
#define TERN_LOGE(...) TERN_LOG_AT(TERN_LOG_ERROR, __VA_ARGS__)
#define TERN_LOGW(...) TERN_LOG_AT(TERN_LOG_WARN, __VA_ARGS__)
#define TERN_LOGI(...) TERN_LOG_AT(TERN_LOG_INFO, __VA_ARGS__)
#define TERN_LOGD(...) TERN_LOG_AT(TERN_LOG_DEBUG, __VA_ARGS__)

#endif
