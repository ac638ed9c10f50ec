/* libFuzzer target for the command codec: decode arbitrary bytes; whatever
 * decodes must re-encode to exactly the bytes consumed (the format is
 * canonical), and its SUBSCRIBE list must walk to exactly `count` entries.
 *
 * clang -fsanitize=fuzzer,address,undefined -Iinclude/base -Iinclude/state
 * -Iinclude/codec -Iinclude/auth -Iinclude/tls storage/cmd.c \ tests/fuzz/fuzz_cmd.c -o
 * fuzz_cmd
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tern/cmd.h"
#include "tern/error.h"

static void check_list(const struct tern_cmd *c)
{
    if (c->type != TERN_CMD_SUBSCRIBE && c->type != TERN_CMD_UNSUBSCRIBE)
        return;
    uint32_t pos = 0, n = 0;
    struct tern_cmd_sub e;
    while (tern_cmd_next_sub(c->u.sub.list, &pos, &e))
        n++;
    if (n != c->u.sub.count || pos != c->u.sub.list.len)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct tern_cmd c;
    size_t used = 0;
    char err[TERN_ERRMSG_SIZE];
    int rc = tern_cmd_decode(data, size, &c, &used, err);
    if (rc != TERN_OK) {
        if (rc != TERN_EMALFORMED && rc != TERN_EUNSUPPORTED)
            abort();
        return 0;
    }
    if (used > size)
        abort();
    check_list(&c);
    size_t need = tern_cmd_encode(&c, NULL, 0);
    if (need != used)
        abort();
    uint8_t *out = malloc(need);
    if (out == NULL)
        return 0;
    if (tern_cmd_encode(&c, out, need) != need || memcmp(out, data, need) != 0)
        abort();
    free(out);
    return 0;
}
