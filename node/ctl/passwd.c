/* ternctl passwd [--scram] [--iterations N] FILE USER: adds or replaces USER's
 * entry in a Mosquitto-format password file ($7$, PBKDF2-SHA512, random salt; with
 * --scram a SCRAM-SHA-256 verifier, tern/scram.h, which Mosquitto cannot read but
 * which serves both MQTT 5 SCRAM and passwords in CONNECT). The password
 * is read from the terminal (twice, not echoed) or, if stdin is not a terminal,
 * as its first line. The file is rewritten as a whole: temp file (mode 0600),
 * fsync, rename, fsync of the directory, so a crash leaves the old or the new one. */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include "ctl.h"
#include "tern/auth.h"
#include "tern/error.h"
#include "tern/scram.h"

#define PW_MAX 1024

static int fail(const char *fmt, const char *a, const char *b)
{
    fprintf(stderr, "ternctl passwd: ");
    fprintf(stderr, fmt, a, b);
    fprintf(stderr, "\n");
    return 1;
}

/* One line from fp without its newline; false at EOF or if longer than PW_MAX. */
static bool read_line(FILE *fp, char *buf)
{
    if (!fgets(buf, PW_MAX + 2, fp))
        return false;
    size_t n = strlen(buf);
    if (n && buf[n - 1] == '\n')
        buf[--n] = '\0';
    else if (n > PW_MAX)
        return false;
    if (n && buf[n - 1] == '\r')
        buf[--n] = '\0';
    return true;
}

static bool prompt(const char *what, char *buf)
{
    struct termios old, quiet;
    fprintf(stderr, "%s", what);
    fflush(stderr);
    bool tty = tcgetattr(STDIN_FILENO, &old) == 0;
    if (tty) {
        quiet = old;
        quiet.c_lflag &= ~(tcflag_t)ECHO;
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
    }
    bool ok = read_line(stdin, buf);
    if (tty) {
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
        fprintf(stderr, "\n");
    }
    return ok;
}

static int read_password(char *pw)
{
    if (!isatty(STDIN_FILENO))
        return read_line(stdin, pw) ? 0 : fail("no password on stdin%s%s", "", "");
    char again[PW_MAX + 2];
    if (!prompt("Password: ", pw) || !prompt("Reenter password: ", again))
        return fail("no password read%s%s", "", "");
    int same = strcmp(pw, again) == 0;
    memset(again, 0, sizeof again);
    return same ? 0 : fail("passwords do not match%s%s", "", "");
}

/* The existing file, or "" if there is none. */
static char *read_file(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    *len = 0;
    if (!fp)
        return errno == ENOENT ? calloc(1, 1) : NULL;
    char *buf = malloc(TERN_PW_FILE_MAX + 1);
    if (buf) {
        *len = fread(buf, 1, TERN_PW_FILE_MAX, fp);
        buf[*len] = '\0';
    }
    fclose(fp);
    return buf;
}

static int write_file(const char *path, const char *old, size_t old_len, const char *user,
                      const char *entry)
{
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp)
        return fail("%s: path too long%s", path, "");
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0)
        return fail("%s: %s", tmp, strerror(errno));
    FILE *fp = fdopen(fd, "w");
    size_t ulen = strlen(user);
    bool replaced = false;
    const char *p = old, *end = old + old_len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
        if (n > ulen && memcmp(p, user, ulen) == 0 && p[ulen] == ':') {
            if (!replaced)
                fprintf(fp, "%s:%s\n", user, entry);
            replaced = true;
        } else {
            fprintf(fp, "%.*s\n", (int)n, p);
        }
        p += n + 1;
    }
    if (!replaced)
        fprintf(fp, "%s:%s\n", user, entry);
    bool ok = fflush(fp) == 0 && fsync(fd) == 0;
    ok = fclose(fp) == 0 && ok;
    if (!ok || rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return fail("%s: %s", path, strerror(e));
    }
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    int dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    return 0;
}

int ctl_passwd(int argc, char **argv)
{
    uint32_t iterations = 0; /* 0: the format's default */
    bool scram = false;
    int i = 0;
    for (; i < argc && argv[i][0] == '-' && argv[i][1] == '-'; i++) {
        if (strcmp(argv[i], "--scram") == 0) {
            scram = true;
            continue;
        }
        if (strcmp(argv[i], "--iterations") != 0) {
            fprintf(stderr, "ternctl passwd: unknown option %s\n", argv[i]);
            return 2;
        }
        char *endp = NULL;
        unsigned long v = i + 1 < argc ? strtoul(argv[i + 1], &endp, 10) : 0;
        if (!endp || *endp || v < TERN_PW_ITER_DEFAULT || v > TERN_PW_ITER_MAX) {
            fprintf(stderr, "ternctl passwd: --iterations must be %u to %u\n",
                    TERN_PW_ITER_DEFAULT, TERN_PW_ITER_MAX);
            return 2;
        }
        iterations = (uint32_t)v;
        i++;
    }
    if (scram && iterations && iterations < TERN_SCRAM_ITER_DEFAULT) {
        fprintf(stderr, "ternctl passwd: --scram --iterations must be %u to %u\n",
                TERN_SCRAM_ITER_DEFAULT, TERN_SCRAM_ITER_MAX);
        return 2;
    }
    if (!iterations)
        iterations = scram ? TERN_SCRAM_ITER_DEFAULT : TERN_PW_ITER_DEFAULT;
    if (argc - i != 2) {
        fprintf(stderr, "usage: ternctl passwd [--scram] [--iterations N] FILE USER\n");
        return 2;
    }
    const char *path = argv[i], *user = argv[i + 1];
    if (!user[0] || strpbrk(user, ":\n\r") || strlen(user) > TERN_PW_USER_MAX)
        return fail("user name \"%s\": 1 to 65535 bytes, no ':' or line breaks%s", user,
                    "");
    char pw[PW_MAX + 2];
    if (read_password(pw) != 0)
        return 1;
    char entry[256];
    int rc = scram ? tern_pw_scram((const uint8_t *)pw, strlen(pw), iterations, entry)
                   : tern_pw_hash7((const uint8_t *)pw, strlen(pw), iterations, entry,
                                   sizeof entry);
    memset(pw, 0, sizeof pw);
    if (rc != TERN_OK)
        return fail("cannot hash the password (OpenSSL)%s%s", "", "");
    size_t len;
    char *old = read_file(path, &len);
    if (!old)
        return fail("%s: %s", path, strerror(errno));
    rc = write_file(path, old, len, user, entry);
    free(old);
    return rc;
}
