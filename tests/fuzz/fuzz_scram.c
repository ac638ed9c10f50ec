/* libFuzzer target for the SCRAM-SHA-256 exchange (node/auth/auth_scram.c): the input
 * is split at its first NUL into a client-first and a client-final message (the
 * two a client controls), run against a fixed verifier; a verifier text is also
 * parsed from the whole input. Nothing may crash or leak, an accepted
 * client-first leaves a non-empty NUL-terminated user name, and server-final is
 * written exactly when the proof is accepted.
 *
 * clang -fsanitize=fuzzer,address,undefined -Iinclude node/auth_*.c \
 *     tests/fuzz/fuzz_scram.c -lcrypto -o fuzz_scram
 */
#include <stdlib.h>
#include <string.h>

#include "tern/error.h"
#include "tern/scram.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct tern_scram_verifier v;
    tern_scram_verifier_parse((const char *)data, size, &v);
    static struct tern_scram_verifier fixed;
    static int ready;
    if (!ready) {
        static const uint8_t salt[16] = "fuzz-salt-16byte";
        if (tern_scram_verifier_make((const uint8_t *)"secret", 6, 1, salt, sizeof salt,
                                     &fixed) != TERN_OK)
            abort();
        ready = 1;
    }
    const uint8_t *nul = memchr(data, '\0', size);
    size_t first_len = nul ? (size_t)(nul - data) : size;
    struct tern_scram s;
    memset(&s, 0, sizeof s);
    int rc = tern_scram_client_first(&s, data, first_len);
    if (rc == TERN_OK) {
        if (!s.user || s.user[s.user_len] != '\0' || s.user_len == 0)
            abort();
        if (tern_scram_server_first(&s, &fixed, "fuzznonce", 9) != TERN_OK)
            abort();
        if (nul) {
            char final[TERN_SCRAM_FINAL_MAX];
            size_t n = 0;
            rc = tern_scram_client_final(&s, nul + 1, size - first_len - 1, final, &n);
            if (rc == TERN_OK && n == 0)
                abort();
            if (rc != TERN_OK && n != 0)
                abort();
        }
    }
    tern_scram_free(&s);
    return 0;
}
