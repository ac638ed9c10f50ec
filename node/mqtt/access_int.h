/* The node's access state (node/access*.c only): what access.c loads and
 * checks, shared with the SCRAM exchange (access_scram.c). */
#ifndef TERN_ACCESS_INT_H
#define TERN_ACCESS_INT_H

#include "tern/frontend.h"
#include "tern/auth.h"
#include "tern/hmap.h"

/* Open connections of one source address (family + address). */
struct addr_count {
    uint8_t key[17];
    uint32_t conns;
};

struct tern_access {
    struct tern_pwfile *pw;   /* NULL: no password file */
    struct tern_hmap by_addr; /* key -> addr_count, while conns > 0 */
    struct tern_acl *acl;     /* NULL: no acl_file (everything allowed) */
    uint16_t acl_gen;         /* changes with every ACL loaded; never 0 */
    char acl_digest[65];
    bool anonymous;     /* allow_anonymous as decided */
    char pw_digest[65]; /* SHA-256 of the password file as loaded */
    struct tern_access_stats stats;
    char admin_token[TERN_TOKEN_MAX + 1]; /* "" = none */
    uint8_t scram_secret[32];             /* made-up salts of unknown users */
    struct tern_publim *publim;           /* publish limits (access_publish.c) */
    struct tern_guard guard;              /* large: last */
    struct tern_rate rate;
};

void tern_access_publish_free(struct tern_access *a);

#endif
