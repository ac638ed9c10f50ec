/* libFuzzer target for the WebSocket engine (node/ws.c): the input is what a
 * hostile peer sends, fed in pieces as conn.c feeds it from the socket.
 *
 * The first byte picks where the input starts:
 *   bits 0-1 = 0: at the first byte of the connection (the upgrade request);
 *            1: after a good handshake, as client frames to a server engine;
 *            2: after a good handshake, as server frames to a client engine;
 *            3: as 1, the input read as (flags, length, payload) triples
 *               made into well-masked frames here (so the fuzzer explores
 *               sequences of opcodes, fragments and control frames);
 * and how the rest is cut and read (bits 2-7: piece size 1..64, the read
 * buffer 1..64 bytes or 4 KiB). Whatever comes in, the engine returns one of its
 * codes, never crashes, leaks or hangs, gives back no more than the buffer
 * holds and nothing after a failure, and what it sends stays bounded.
 *
 *   CC=clang cmake -S . -B build-fuzz -DTERN_FUZZ=ON && cmake --build build-fuzz \
 *       --target fuzz_ws && build-fuzz/fuzz_ws -max_total_time=60 tests/fuzz/corpus/ws
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tern/ws.h"

#define CHECK(c)                                                                         \
    do {                                                                                 \
        if (!(c))                                                                        \
            abort();                                                                     \
    } while (0)

static const char *const origins[] = {"https://ok.example"};
static const struct tern_ws_opts opts = {
    .path = "/mqtt",
    .origins = origins,
    .origin_count = 1,
    .handshake_bytes_max = 2048,
    .frame_bytes_max = 4096,
};

static void pump(struct tern_ws_engine *from, struct tern_ws_engine *to)
{
    uint8_t b[1024];
    size_t n;
    while ((n = tern_ws_engine_take(from, b, sizeof(b))) > 0)
        CHECK(tern_ws_engine_recv(to, b, n) == TERN_OK);
}

/* A server and a client past the handshake (Origin allowed). */
static void pair(struct tern_ws_engine **s, struct tern_ws_engine **c)
{
    uint8_t b[64];
    size_t got;
    *s = tern_ws_engine_new(&opts);
    *c = tern_ws_engine_new_client(&opts, "h", "/mqtt", "mqtt");
    CHECK(*s && *c);
    /* The client engine sends no Origin: add one as a browser would. */
    uint8_t req[1024];
    size_t n = tern_ws_engine_take(*c, req, sizeof(req));
    CHECK(n > 4 && n < sizeof(req) - 64);
    const char *o = "Origin: https://ok.example\r\n\r\n";
    memcpy(req + n - 2, o, strlen(o));
    CHECK(tern_ws_engine_recv(*s, req, n - 2 + strlen(o)) == TERN_OK);
    CHECK(tern_ws_engine_read(*s, b, sizeof(b), &got) == TERN_EAGAIN);
    pump(*s, *c);
    CHECK(tern_ws_engine_read(*c, b, sizeof(b), &got) == TERN_EAGAIN);
    CHECK(tern_ws_engine_open(*s) && tern_ws_engine_open(*c));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t mode = data[0] & 3, cut = (uint8_t)(1 + ((data[0] >> 2) & 63));
    size_t cap = (data[0] >> 2) == 63 ? 4096 : cut;
    data++;
    size--;
    struct tern_ws_engine *s = NULL, *c = NULL, *e;
    if (mode == 0) {
        e = s = tern_ws_engine_new(&opts);
        CHECK(s);
    } else {
        pair(&s, &c);
        e = mode == 2 ? c : s;
    }
    uint8_t *buf = malloc(cap), out[512];
    uint8_t *masked = NULL;
    if (mode == 3 && size) {
        static const uint8_t key[4] = {0x12, 0x34, 0x56, 0x78};
        masked = malloc(size / 2 * TERN_WS_FRAME_HEADER_MAX + size + 16);
        size_t n = 0;
        for (size_t i = 0; i + 1 < size;) {
            uint8_t flags = data[i], len = data[i + 1];
            i += 2;
            if (len > size - i)
                len = (uint8_t)(size - i);
            size_t h =
                tern_ws_frame_header(masked + n, flags & 0x80, flags & 0x0F, len, key);
            masked[n] |= flags & 0x70; /* RSV bits too */
            memcpy(masked + n + h, data + i, len);
            tern_ws_mask(masked + n + h, len, key, 0);
            n += h + len;
            i += len;
        }
        data = masked;
        size = n;
    }
    bool failed = false;
    size_t sent = 0;
    for (size_t off = 0; off < size && !failed; off += cut) {
        size_t n = size - off < cut ? size - off : cut;
        CHECK(tern_ws_engine_recv(e, data + off, n) == TERN_OK);
        for (int i = 0; i < 10000; i++) {
            size_t got = 12345;
            int rc = tern_ws_engine_read(e, buf, cap, &got);
            CHECK(got <= cap);
            if (rc == TERN_OK) {
                CHECK(got > 0);
                continue;
            }
            CHECK(got == 0);
            CHECK(rc == TERN_EAGAIN || rc == TERN_EPROTO || rc == TERN_ESHUTDOWN);
            if (rc != TERN_EAGAIN) {
                failed = true;
                size_t again;
                CHECK(tern_ws_engine_read(e, buf, cap, &again) == rc && again == 0);
            }
            break;
        }
        size_t t;
        if (cut & 1) { /* the way conn.c sends: the whole buffer handed over */
            const uint8_t *d;
            uint8_t *owned = tern_ws_engine_take_buffer(e, &d, &t);
            CHECK((owned != NULL) == (t > 0));
            sent += t;
            free(owned);
        }
        while ((t = tern_ws_engine_take(e, out, sizeof(out))) > 0)
            sent += t;
    }
    /* Pongs echo at most what came in, plus headers; a refusal is short. */
    CHECK(sent <= 2 * size + 1024);
    tern_ws_engine_close(e, TERN_WS_CLOSE_NORMAL);
    free(masked);
    free(buf);
    tern_ws_engine_free(s);
    tern_ws_engine_free(c);
    return 0;
}
