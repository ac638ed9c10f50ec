/* The WebSocket engine (node/ws.c): the handshake against RFC 6455's own
 * example, every refusal, and frames fed whole, byte by byte and broken, between
 * a server engine and a client engine (or frames made here by hand). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tern/ws.h"

static const char *const origins[] = {"https://dash.example", "http://localhost:8080"};

static struct tern_ws_opts opts = {
    .path = "/mqtt",
    .handshake_bytes_max = 4096,
    .frame_bytes_max = 1000,
};

static struct tern_ws_opts opts_origins = {
    .path = "/mqtt",
    .origins = origins,
    .origin_count = 2,
    .handshake_bytes_max = 4096,
    .frame_bytes_max = 1000,
};

static const uint8_t MASK[4] = {0x37, 0xfa, 0x21, 0x3d};

/* Everything the engine has to send, as a NUL-terminated string. */
static size_t take_all(struct tern_ws_engine *e, uint8_t *out, size_t cap)
{
    size_t n = 0, got;
    while ((got = tern_ws_engine_take(e, out + n, cap - 1 - n)) > 0)
        n += got;
    out[n] = 0;
    return n;
}

static char *request(char *buf, const char *path, const char *extra, const char *proto)
{
    sprintf(buf,
            "GET %s HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\n%s%s%s\r\n",
            path, proto ? "Sec-WebSocket-Protocol: " : "", proto ? proto : "",
            proto ? "\r\n" : "");
    if (extra) { /* extra replaces the line that starts like it, or is added */
        char *line = strstr(buf, extra[0] == '-' ? extra + 1 : extra);
        if (extra[0] == '-' && line) { /* "-Name" removes the header */
            char *end = strstr(line, "\r\n") + 2;
            memmove(line, end, strlen(end) + 1);
        } else {
            strcpy(buf + strlen(buf) - 2, extra);
            strcat(buf, "\r\n\r\n");
        }
    }
    return buf;
}

/* Feeds req to a new server engine; returns it after one read (rc in *rc). */
static struct tern_ws_engine *serve(const struct tern_ws_opts *o, const char *req,
                                    int *rc)
{
    struct tern_ws_engine *e = tern_ws_engine_new(o);
    assert_non_null(e);
    assert_int_equal(tern_ws_engine_recv(e, (const uint8_t *)req, strlen(req)), TERN_OK);
    uint8_t buf[64];
    size_t got;
    *rc = tern_ws_engine_read(e, buf, sizeof(buf), &got);
    assert_int_equal(got, 0);
    return e;
}

static void test_accept_key(void **state)
{
    (void)state;
    char out[TERN_WS_ACCEPT_LEN + 1];
    tern_ws_accept_key("dGhlIHNhbXBsZSBub25jZQ==", 24, out); /* RFC 6455 1.3 */
    assert_string_equal(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

static void test_handshake(void **state)
{
    (void)state;
    char req[1024];
    uint8_t out[1024];
    request(req, "/mqtt?x=1", NULL, "mqttv3.1, mqtt");
    /* Byte by byte: the answer comes only with the blank line. */
    struct tern_ws_engine *e = tern_ws_engine_new(&opts);
    uint8_t buf[16];
    size_t got;
    for (size_t i = 0; i < strlen(req); i++) {
        assert_false(tern_ws_engine_open(e));
        assert_int_equal(tern_ws_engine_recv(e, (const uint8_t *)req + i, 1), TERN_OK);
        int rc = tern_ws_engine_read(e, buf, sizeof(buf), &got);
        assert_int_equal(rc, TERN_EAGAIN);
        assert_true((tern_ws_engine_pending(e) == 0) == (i + 1 < strlen(req)));
    }
    assert_true(tern_ws_engine_open(e));
    take_all(e, out, sizeof(out));
    assert_string_equal((char *)out,
                        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                        "Connection: Upgrade\r\n"
                        "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
                        "Sec-WebSocket-Protocol: mqtt\r\n\r\n");
    assert_string_equal(tern_ws_engine_subprotocol(e), "mqtt");
    tern_ws_engine_free(e);

    /* Old clients offer only mqttv3.1; header names in any case. */
    int rc;
    e = serve(&opts, request(req, "/mqtt", NULL, "mqttv3.1"), &rc);
    assert_int_equal(rc, TERN_EAGAIN);
    assert_string_equal(tern_ws_engine_subprotocol(e), "mqttv3.1");
    tern_ws_engine_free(e);
    e = serve(&opts,
              "GET /mqtt HTTP/1.1\r\nhost: h\r\nUPGRADE: WebSocket\r\n"
              "connection: keep-alive, upgrade\r\nsec-websocket-key: "
              "dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n"
              "sec-websocket-protocol: mqtt\r\n\r\n",
              &rc);
    assert_int_equal(rc, TERN_EAGAIN);
    assert_true(tern_ws_engine_open(e));
    tern_ws_engine_free(e);

    /* An allowed Origin, any case. */
    e = serve(&opts_origins,
              request(req, "/mqtt", "Origin: HTTPS://dash.example", "mqtt"), &rc);
    assert_true(tern_ws_engine_open(e));
    tern_ws_engine_free(e);
}

static void refused(const struct tern_ws_opts *o, const char *req, int status)
{
    int rc;
    uint8_t out[1024];
    struct tern_ws_engine *e = serve(o, req, &rc);
    assert_int_equal(rc, TERN_EPROTO);
    assert_false(tern_ws_engine_open(e));
    assert_int_equal(tern_ws_engine_http_status(e), status);
    take_all(e, out, sizeof(out));
    char want[32];
    snprintf(want, sizeof(want), "HTTP/1.1 %d ", status);
    assert_memory_equal(out, want, strlen(want));
    assert_non_null(strstr((char *)out, "Connection: close\r\n"));
    /* Nothing more is read or written. */
    uint8_t buf[8];
    size_t got;
    assert_int_equal(tern_ws_engine_read(e, buf, sizeof(buf), &got), TERN_EPROTO);
    assert_int_equal(tern_ws_engine_write(e, buf, 1), TERN_EPROTO);
    tern_ws_engine_free(e);
}

static void test_refusals(void **state)
{
    (void)state;
    char req[2048];
    refused(&opts, request(req, "/other", NULL, "mqtt"), 404);
    refused(&opts, request(req, "/mqtt/x", NULL, "mqtt"), 404);
    refused(&opts, request(req, "/mqtt", "-Upgrade", "mqtt"), 400);
    refused(&opts, request(req, "/mqtt", "-Connection", "mqtt"), 400);
    refused(&opts, request(req, "/mqtt", "-Host", "mqtt"), 400);
    refused(&opts, request(req, "/mqtt", "-Sec-WebSocket-Key", "mqtt"), 400);
    /* A key that is not 16 bytes in base64, and two keys. */
    char *k = strstr(request(req, "/mqtt", NULL, "mqtt"), "dGhl");
    memcpy(k, "dGhl*", 5);
    refused(&opts, req, 400);
    k = strstr(request(req, "/mqtt", NULL, "mqtt"), "==");
    memcpy(k, "AA", 2);
    refused(&opts, req, 400);
    refused(&opts,
            request(req, "/mqtt", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "mqtt"),
            400);
    char *v = strstr(request(req, "/mqtt", NULL, "mqtt"), "Version: 13");
    memcpy(v, "Version: 12", 11);
    refused(&opts, req, 426);
    refused(&opts, request(req, "/mqtt", NULL, NULL), 400);
    refused(&opts, request(req, "/mqtt", NULL, "mqttv5, MQTT"), 400);
    /* Origins: none sent, another one, two sent. */
    refused(&opts_origins, request(req, "/mqtt", NULL, "mqtt"), 403);
    refused(&opts_origins, request(req, "/mqtt", "Origin: https://evil.example", "mqtt"),
            403);
    refused(&opts_origins,
            request(req, "/mqtt",
                    "Origin: https://dash.example\r\nOrigin: https://dash.example",
                    "mqtt"),
            403);
    memcpy(req, "POST", 4);
    refused(&opts, req, 400);
    refused(&opts, "GET /mqtt HTTP/1.0\r\nHost: x\r\n\r\n", 400);
    refused(&opts, "GET /mqtt HTTP/1.1\r\nHost x\r\n\r\n", 400);
    refused(&opts, "GET /mqtt HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", 400);
    /* Over handshake_bytes_max, with or without its end. */
    char *big = malloc(8192);
    memset(big, 'a', 8191);
    big[8191] = 0;
    memcpy(big, "GET /mqtt HTTP/1.1\r\nX: ", 23);
    refused(&opts, big, 431);
    memcpy(big + 8187, "\r\n\r\n", 4);
    refused(&opts, big, 431);
    free(big);
}

/* A client frame, masked unless mask is NULL. */
static size_t frame(uint8_t *out, bool fin, uint8_t op, const void *p, size_t len,
                    const uint8_t *mask)
{
    size_t h = tern_ws_frame_header(out, fin, op, len, mask);
    memcpy(out + h, p, len);
    if (mask)
        tern_ws_mask(out + h, len, mask, 0);
    return h + len;
}

/* A server engine past a good handshake (the 101 taken). */
static struct tern_ws_engine *opened(void)
{
    char req[1024];
    uint8_t out[1024];
    int rc;
    struct tern_ws_engine *e = serve(&opts, request(req, "/mqtt", NULL, "mqtt"), &rc);
    assert_true(tern_ws_engine_open(e));
    take_all(e, out, sizeof(out));
    return e;
}

static void test_frames(void **state)
{
    (void)state;
    struct tern_ws_engine *e = opened();
    uint8_t in[4096], buf[4096], out[256];
    size_t n = 0, got;
    /* A fragmented message with a ping between its fragments, then a
     * 300-byte frame (16-bit length). */
    n += frame(in + n, false, TERN_WS_OP_BINARY, "ab", 2, MASK);
    n += frame(in + n, true, TERN_WS_OP_PING, "hi", 2, MASK);
    n += frame(in + n, false, TERN_WS_OP_CONT, "", 0, MASK);
    n += frame(in + n, true, TERN_WS_OP_CONT, "cde", 3, MASK);
    uint8_t big[300];
    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = (uint8_t)i;
    n += frame(in + n, true, TERN_WS_OP_BINARY, big, sizeof(big), MASK);
    /* Fed one byte at a time and read with a 1-byte buffer: the mask offset
     * carries across reads. */
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(tern_ws_engine_recv(e, in + i, 1), TERN_OK);
        int rc;
        while ((rc = tern_ws_engine_read(e, buf + total, 1, &got)) == TERN_OK)
            total += got;
        assert_int_equal(rc, TERN_EAGAIN);
    }
    assert_int_equal(total, 5 + sizeof(big));
    assert_memory_equal(buf, "abcde", 5);
    assert_memory_equal(buf + 5, big, sizeof(big));
    /* The pong, unmasked, with the ping's payload. */
    assert_int_equal(take_all(e, out, sizeof(out)), 4);
    assert_memory_equal(out, "\x8a\x02hi", 4);

    /* All at once into a big buffer. */
    assert_int_equal(tern_ws_engine_recv(e, in, n), TERN_OK);
    assert_int_equal(tern_ws_engine_read(e, buf, sizeof(buf), &got), TERN_OK);
    assert_int_equal(got, 5 + sizeof(big));
    assert_memory_equal(buf + 5, big, sizeof(big));

    /* Our frames: one binary frame per write, unmasked. */
    assert_int_equal(tern_ws_engine_write(e, (const uint8_t *)"xyz", 3), TERN_OK);
    take_all(e, out, sizeof(out));
    assert_memory_equal(out, "\x8a\x02hi\x82\x03xyz", 9);
    /* Handed over without a copy; what is queued meanwhile is a new buffer. */
    const uint8_t *data;
    size_t len;
    assert_null(tern_ws_engine_take_buffer(e, &data, &len));
    assert_int_equal(tern_ws_engine_write(e, big, sizeof(big)), TERN_OK);
    uint8_t *owned = tern_ws_engine_take_buffer(e, &data, &len);
    assert_non_null(owned);
    assert_int_equal(len, 4 + sizeof(big));
    assert_memory_equal(data, "\x82\x7e\x01\x2c", 4);
    assert_memory_equal(data + 4, big, sizeof(big));
    assert_int_equal(tern_ws_engine_pending(e), 0);
    assert_int_equal(tern_ws_engine_write(e, (const uint8_t *)"q", 1), TERN_OK);
    assert_int_equal(tern_ws_engine_pending(e), 3);
    free(owned);
    take_all(e, out, sizeof(out));
    assert_memory_equal(out, "\x82\x01q", 3);

    /* An MQTT DISCONNECT then a close from the client in one read: the
     * DISCONNECT first, then the close (echoed), then nothing more. */
    n = frame(in, true, TERN_WS_OP_BINARY, "\xe0\x00", 2, MASK);
    n += frame(in + n, true, TERN_WS_OP_CLOSE,
               "\x03\xe8"
               "bye",
               5, MASK);
    assert_int_equal(tern_ws_engine_recv(e, in, n), TERN_OK);
    assert_int_equal(tern_ws_engine_read(e, buf, sizeof(buf), &got), TERN_OK);
    assert_int_equal(got, 2);
    assert_memory_equal(buf, "\xe0\x00", 2);
    assert_int_equal(tern_ws_engine_read(e, buf, sizeof(buf), &got), TERN_ESHUTDOWN);
    assert_int_equal(take_all(e, out, sizeof(out)), 4);
    assert_memory_equal(out, "\x88\x02\x03\xe8", 4);
    assert_int_equal(tern_ws_engine_write(e, (const uint8_t *)"x", 1), TERN_EPROTO);
    tern_ws_engine_close(e, TERN_WS_CLOSE_NORMAL); /* sent once only */
    assert_int_equal(tern_ws_engine_pending(e), 0);
    tern_ws_engine_free(e);
}

/* in[0, n) breaks the protocol: read fails and a close with code is queued. */
static void broken(const uint8_t *in, size_t n, uint16_t code)
{
    struct tern_ws_engine *e = opened();
    uint8_t buf[2048], out[64];
    size_t got;
    assert_int_equal(tern_ws_engine_recv(e, in, n), TERN_OK);
    int rc = tern_ws_engine_read(e, buf, sizeof(buf), &got);
    if (rc == TERN_OK) /* the data before the bad frame, then the failure */
        rc = tern_ws_engine_read(e, buf, sizeof(buf), &got);
    assert_int_equal(rc, TERN_EPROTO);
    assert_int_equal(tern_ws_engine_close_code(e), code);
    assert_int_equal(take_all(e, out, sizeof(out)), 4);
    uint8_t want[4] = {0x88, 0x02, (uint8_t)(code >> 8), (uint8_t)code};
    assert_memory_equal(out, want, 4);
    /* Input after it is not read. */
    assert_int_equal(tern_ws_engine_recv(e, in, n), TERN_OK);
    assert_int_equal(tern_ws_engine_read(e, buf, sizeof(buf), &got), TERN_EPROTO);
    assert_int_equal(got, 0);
    tern_ws_engine_close(e, TERN_WS_CLOSE_NORMAL);
    assert_int_equal(tern_ws_engine_pending(e), 0);
    tern_ws_engine_free(e);
}

static void test_protocol_errors(void **state)
{
    (void)state;
    uint8_t in[2048];
    size_t n;
    broken(in, frame(in, true, TERN_WS_OP_BINARY, "ab", 2, NULL), 1002); /* unmasked */
    broken(in, frame(in, true, TERN_WS_OP_TEXT, "ab", 2, MASK), 1003);
    broken(in, frame(in, true, 0x3, "ab", 2, MASK), 1002); /* reserved opcode */
    broken(in, frame(in, true, 0xB, "ab", 2, MASK), 1002); /* reserved control */
    broken(in, frame(in, true, TERN_WS_OP_CONT, "ab", 2, MASK), 1002);
    n = frame(in, false, TERN_WS_OP_BINARY, "ab", 2, MASK);
    broken(in, n + frame(in + n, true, TERN_WS_OP_BINARY, "c", 1, MASK), 1002);
    broken(in, frame(in, false, TERN_WS_OP_PING, "ab", 2, MASK), 1002);
    uint8_t p[200] = {0};
    broken(in, frame(in, true, TERN_WS_OP_PING, p, 126, MASK), 1002);
    n = frame(in, true, TERN_WS_OP_BINARY, "ab", 2, MASK);
    in[0] |= 0x40; /* RSV1 without permessage-deflate */
    broken(in, n, 1002);
    broken(in, frame(in, true, TERN_WS_OP_CLOSE, "\x03", 1, MASK), 1002);
    broken(in, frame(in, true, TERN_WS_OP_CLOSE, "\x03\xed", 2, MASK), 1002); /* 1005 */
    /* Over frame_bytes_max (1000): refused on the header alone. */
    n = tern_ws_frame_header(in, true, TERN_WS_OP_BINARY, 1001, MASK);
    broken(in, n, 1009);
    n = tern_ws_frame_header(in, true, TERN_WS_OP_BINARY, (uint64_t)1 << 40, MASK);
    broken(in, n, 1009);
    n = tern_ws_frame_header(in, true, TERN_WS_OP_BINARY, 1001, MASK);
    in[1] = 0x80 | 127; /* 64-bit length with the top bit set */
    memset(in + 2, 0x80, 1);
    memset(in + 3, 0, 7);
    memcpy(in + 10, MASK, 4);
    broken(in, 14, 1002);
}

/* A client engine and a server engine: handshake and data both ways. */
static void pump(struct tern_ws_engine *from, struct tern_ws_engine *to)
{
    uint8_t b[512];
    size_t n;
    while ((n = tern_ws_engine_take(from, b, sizeof(b))) > 0)
        assert_int_equal(tern_ws_engine_recv(to, b, n), TERN_OK);
}

static void test_client(void **state)
{
    (void)state;
    struct tern_ws_engine *s = tern_ws_engine_new(&opts);
    struct tern_ws_engine *c =
        tern_ws_engine_new_client(&opts, "127.0.0.1:1", "/mqtt", "mqtt");
    uint8_t buf[2048];
    size_t got;
    pump(c, s);
    assert_int_equal(tern_ws_engine_read(s, buf, sizeof(buf), &got), TERN_EAGAIN);
    assert_true(tern_ws_engine_open(s));
    pump(s, c);
    assert_int_equal(tern_ws_engine_read(c, buf, sizeof(buf), &got), TERN_EAGAIN);
    assert_true(tern_ws_engine_open(c));
    assert_string_equal(tern_ws_engine_subprotocol(c), "mqtt");
    uint8_t msg[1000];
    for (size_t i = 0; i < sizeof(msg); i++)
        msg[i] = (uint8_t)(i * 7);
    assert_int_equal(tern_ws_engine_write(c, msg, sizeof(msg)), TERN_OK);
    pump(c, s);
    assert_int_equal(tern_ws_engine_read(s, buf, sizeof(buf), &got), TERN_OK);
    assert_int_equal(got, sizeof(msg));
    assert_memory_equal(buf, msg, sizeof(msg));
    assert_int_equal(tern_ws_engine_write(s, msg, 10), TERN_OK);
    pump(s, c);
    assert_int_equal(tern_ws_engine_read(c, buf, sizeof(buf), &got), TERN_OK);
    assert_int_equal(got, 10);
    /* Over the server's frame_bytes_max. */
    assert_int_equal(tern_ws_engine_write(c, msg, 10), TERN_OK);
    uint8_t more[1001] = {0};
    assert_int_equal(tern_ws_engine_write(c, more, sizeof(more)), TERN_OK);
    pump(c, s);
    assert_int_equal(tern_ws_engine_read(s, buf, sizeof(buf), &got), TERN_OK);
    assert_int_equal(got, 10); /* what came before the bad frame */
    assert_int_equal(tern_ws_engine_read(s, buf, sizeof(buf), &got), TERN_EPROTO);
    assert_int_equal(got, 0);
    assert_int_equal(tern_ws_engine_close_code(s), 1009);
    pump(s, c);
    assert_int_equal(tern_ws_engine_read(c, buf, sizeof(buf), &got), TERN_ESHUTDOWN);
    tern_ws_engine_free(s);
    tern_ws_engine_free(c);

    /* A server that says no, and one that answers the wrong key. */
    s = tern_ws_engine_new(&opts);
    c = tern_ws_engine_new_client(&opts, "h", "/nope", "mqtt");
    pump(c, s);
    assert_int_equal(tern_ws_engine_read(s, buf, sizeof(buf), &got), TERN_EPROTO);
    pump(s, c);
    assert_int_equal(tern_ws_engine_read(c, buf, sizeof(buf), &got), TERN_EPROTO);
    assert_int_equal(tern_ws_engine_http_status(c), 404);
    tern_ws_engine_free(s);
    tern_ws_engine_free(c);
    c = tern_ws_engine_new_client(&opts, "h", "/mqtt", "mqtt");
    const char *bad =
        "HTTP/1.1 101 OK\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
    tern_ws_engine_recv(c, (const uint8_t *)bad, strlen(bad));
    assert_int_equal(tern_ws_engine_read(c, buf, sizeof(buf), &got), TERN_EPROTO);
    assert_false(tern_ws_engine_open(c));
    tern_ws_engine_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accept_key),      cmocka_unit_test(test_handshake),
        cmocka_unit_test(test_refusals),        cmocka_unit_test(test_frames),
        cmocka_unit_test(test_protocol_errors), cmocka_unit_test(test_client),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
