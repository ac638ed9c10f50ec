/* libFuzzer target for the ACL parser and checker: parse arbitrary text; if it
 * parses, check a few accesses for a user, client id and topic taken from the
 * input's first line ("USER\tID\tTOPIC"). Also the filter relations: a filter
 * covers itself, and what one filter covers it overlaps.
 *
 * clang -fsanitize=fuzzer,address,undefined -Iinclude/base -Iinclude/state
 * -Iinclude/codec -Iinclude/auth -Iinclude/tls node/auth/auth_*.c \ tests/fuzz/fuzz_acl.c
 * -lcrypto -o fuzz_acl
 */
#include <stdlib.h>
#include <string.h>

#include "tern/auth.h"
#include "tern/error.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    const char *nl = memchr(s, '\n', size);
    size_t first = nl ? (size_t)(nl - s) : size;
    const char *t1 = memchr(s, '\t', first);
    const char *t2 = t1 ? memchr(t1 + 1, '\t', first - (size_t)(t1 + 1 - s)) : NULL;
    struct tern_acl *a = NULL;
    char err[TERN_ERRMSG_SIZE];
    int rc = tern_acl_parse(s, size, &a, err);
    if (rc != TERN_OK) {
        if (a || (rc != TERN_EINVAL && rc != TERN_ETOOBIG && rc != TERN_ENOMEM))
            abort();
        if (!memchr(err, '\0', sizeof err))
            abort();
    }
    if (t1 && t2) {
        const uint8_t *user = data, *id = (const uint8_t *)t1 + 1,
                      *topic = (const uint8_t *)t2 + 1;
        size_t ulen = (size_t)(t1 - s), ilen = (size_t)(t2 - t1 - 1),
               tlen = first - (size_t)(t2 + 1 - s);
        for (int acc = 1; acc <= 3; acc++) {
            tern_acl_allows(a, user, ulen, id, ilen, topic, tlen, acc);
            tern_acl_allows(a, NULL, 0, id, ilen, topic, tlen, acc);
        }
        const char *f = (const char *)id, *g = (const char *)topic;
        if (!tern_acl_filter_covers(g, tlen, g, tlen))
            abort();
        if (tern_acl_filter_covers(f, ilen, g, tlen) &&
            !tern_acl_filter_overlaps(f, ilen, g, tlen))
            abort();
        if (tern_acl_filter_overlaps(f, ilen, g, tlen) !=
            tern_acl_filter_overlaps(g, tlen, f, ilen))
            abort();
    }
    tern_acl_free(a);
    return 0;
}
