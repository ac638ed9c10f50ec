/* ternctl's commands that do not talk to the admin API. */
#ifndef TERN_CTL_H
#define TERN_CTL_H

/* ternctl passwd [--iterations N] FILE USER; returns the exit status. */
int ctl_passwd(int argc, char **argv);

#include <stddef.h>

/* --ca-file / --cert / --key: HTTPS to an admin_listen with admin_tls_*. */
struct ctl_tls {
    const char *ca_file; /* NULL: plain HTTP */
    const char *cert_file, *key_file;
};
/* Sends req over TLS on the connected socket fd (checking the server's
 * certificate against ca_file and host) and returns the whole response
 * (malloc'ed, NUL-terminated, length in *out_len), or NULL with why filled. */
char *ctl_https(int fd, const struct ctl_tls *t, const char *host, const char *req,
                size_t len, size_t *out_len, char *why, size_t why_cap);

#endif
