/* libFuzzer target for the beacon datagrams a node takes on its Raft port from
 * the network (cluster/raft_beacon.h): decoding any bytes must refuse or give a
 * frame that encodes back to exactly those bytes.
 *
 * Built with the cluster sources it needs by CMakeLists.txt (TERN_FUZZ=ON).
 */
#include <stdlib.h>
#include <string.h>

#include "../../cluster/raft_beacon.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct tern_raft_beacon_frame f;
    if (tern_raft_beacon_decode(data, size, &f) != 0)
        return 0;
    if (size != TERN_RAFT_BEACON_SIZE)
        abort(); /* only a whole frame is one */
    struct tern_wbuf w;
    tern_wbuf_init(&w);
    tern_raft_beacon_encode(&f, &w);
    if (w.err || w.len != size || memcmp(w.buf, data, size) != 0)
        abort();
    tern_wbuf_free(&w);
    return 0;
}
