/* libFuzzer target for the password-file parser: parse arbitrary text; whatever
 * parses must list exactly its entries, sorted, each of a known kind, and a
 * check against the parsed file must not crash (iterations are capped here so a
 * run stays fast: the parser itself accepts up to TERN_PW_ITER_MAX).
 *
 * clang -fsanitize=fuzzer,address,undefined -Iinclude/base -Iinclude/state
 * -Iinclude/codec -Iinclude/auth -Iinclude/tls node/auth/auth_*.c \
 *     tests/fuzz/fuzz_pwfile.c -lcrypto -o fuzz_pwfile
 */
#include <stdlib.h>
#include <string.h>

#include "tern/auth.h"
#include "tern/error.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct tern_pwfile *f = NULL;
    char err[TERN_ERRMSG_SIZE];
    int rc = tern_pwfile_parse((const char *)data, size, &f, err);
    if (rc != TERN_OK) {
        if (f || (rc != TERN_EINVAL && rc != TERN_ETOOBIG && rc != TERN_ENOMEM))
            abort();
        if (!memchr(err, '\0', sizeof err))
            abort();
        return 0;
    }
    const char *prev = NULL, *user;
    size_t prev_len = 0, len;
    int kind;
    uint32_t it;
    bool slow = false;
    for (size_t i = 0; i < tern_pwfile_count(f); i++) {
        if (!tern_pwfile_entry(f, i, &user, &len, &kind, &it))
            abort();
        if ((kind != TERN_PW_SHA512 && kind != TERN_PW_PBKDF2 && kind != TERN_PW_SCRAM) ||
            len == 0 || it == 0)
            abort();
        if (memchr(user, ':', len) || memchr(user, '\n', len))
            abort();
        if (prev) {
            int c = memcmp(prev, user, prev_len < len ? prev_len : len);
            if (c > 0 || (c == 0 && prev_len >= len))
                abort(); /* sorted, no duplicates */
        }
        prev = user;
        prev_len = len;
        slow |= it > 1000;
    }
    if (tern_pwfile_entry(f, tern_pwfile_count(f), &user, &len, &kind, &it))
        abort();
    if (!slow && tern_pwfile_count(f)) {
        tern_pwfile_entry(f, 0, &user, &len, &kind, &it);
        tern_pwfile_check(f, (const uint8_t *)user, len, data, size > 32 ? 32 : size);
    }
    tern_pwfile_free(f);
    return 0;
}
