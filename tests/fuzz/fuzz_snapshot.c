/* libFuzzer target for snapshot restore: arbitrary bytes must be refused with
 * TERN_ECORRUPT / TERN_EUNSUPPORTED and leave the FSM unchanged, or be
 * accepted as a state that snapshots and restores again.
 *
 * Random bytes almost never carry a valid CRC32C, which would keep the fuzzer
 * at the frame check. So an input starting with 0xFF has the rest used as the
 * snapshot with its checksum recomputed and patched in: that reaches the field
 * validation of the body.
 *
 * clang -fsanitize=fuzzer,address,undefined -Iinclude/base -Iinclude/state
 * -Iinclude/codec -Iinclude/auth -Iinclude/tls storage/fsm*.c \
 *     storage/topic.c storage/cmd.c storage/base/crc32c.c storage/base/buf.c \
 *     storage/base/snapshot.c storage/base/error.c tests/fuzz/fuzz_snapshot.c
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tern/error.h"
#include "tern/fsm.h"
#include "tern/storage.h"

#define CRC_OFFSET 24

static void check_accepted(struct tern_fsm *f)
{
    uint8_t *snap = NULL;
    size_t len = 0;
    if (tern_fsm_snapshot(f, &snap, &len) != TERN_OK)
        return;
    /* Whatever was accepted must round-trip exactly. */
    if (tern_fsm_restore(f, snap, len, NULL) != TERN_OK)
        abort();
    uint8_t *again = NULL;
    size_t n = 0;
    if (tern_fsm_snapshot(f, &again, &n) == TERN_OK &&
        (n != len || memcmp(again, snap, len) != 0))
        abort();
    free(again);
    free(snap);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *copy = NULL;
    if (size > 0 && data[0] == 0xFF) {
        size--;
        copy = malloc(size ? size : 1);
        if (!copy)
            return 0;
        memcpy(copy, data + 1, size);
        if (size >= TERN_SNAP_HEADER_SIZE) {
            uint32_t c = tern_crc32c(0, copy + TERN_SNAP_HEADER_SIZE,
                                     size - TERN_SNAP_HEADER_SIZE);
            for (int i = 0; i < 4; i++)
                copy[CRC_OFFSET + i] = (uint8_t)(c >> (8 * i));
        }
        data = copy;
    }
    struct tern_fsm *f = tern_fsm_new(1, NULL, NULL);
    if (f) {
        char err[TERN_ERRMSG_SIZE];
        int rc = tern_fsm_restore(f, data, size, err);
        if (rc == TERN_OK)
            check_accepted(f);
        else if (rc != TERN_ECORRUPT && rc != TERN_EUNSUPPORTED && rc != TERN_ENOMEM)
            abort();
        else if (tern_fsm_stats(f)->sessions != 0 || tern_fsm_route_count(f) != 0)
            abort(); /* a refused snapshot changed the FSM */
        tern_fsm_free(f);
    }
    free(copy);
    return 0;
}
