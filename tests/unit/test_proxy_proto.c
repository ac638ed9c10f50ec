/* The PROXY protocol parser (node/stream/proxy_proto.c): v1 and v2 headers whole, split
 * at every byte, followed by the client's bytes, and broken in each way the
 * listener must refuse. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tern/proxy_proto.h"

static struct tern_proxy_parser P;

/* Feeds msg in one piece: the result, *used and the header. */
static int feed_all(const void *msg, size_t len, size_t *used,
                    struct tern_proxy_header *h)
{
    const char *why;
    tern_proxy_init(&P);
    int rc = tern_proxy_feed(&P, msg, len, used, h, &why);
    if (rc != TERN_OK && rc != TERN_EAGAIN)
        assert_non_null(why);
    return rc;
}

/* Feeds msg in pieces of `step` bytes: the first result that is not EAGAIN, and
 * the total taken by then. */
static int feed_steps(const uint8_t *msg, size_t len, size_t step, size_t *taken,
                      struct tern_proxy_header *h)
{
    const char *why;
    tern_proxy_init(&P);
    *taken = 0;
    int rc = TERN_EAGAIN;
    for (size_t off = 0; off < len && rc == TERN_EAGAIN; off += step) {
        size_t n = len - off < step ? len - off : step, used;
        rc = tern_proxy_feed(&P, msg + off, n, &used, h, &why);
        assert_true(used <= n);
        if (rc == TERN_EAGAIN)
            assert_int_equal(used, n); /* everything taken while it waits */
        *taken += used;
    }
    return rc;
}

static void test_v1_tcp4_then_mqtt(void **state)
{
    (void)state;
    const char msg[] = "PROXY TCP4 192.0.2.7 127.0.0.1 40001 1884\r\n\x10\x0c";
    size_t used;
    struct tern_proxy_header h;
    assert_int_equal(feed_all(msg, sizeof msg - 1, &used, &h), TERN_OK);
    assert_int_equal(used, sizeof msg - 3); /* the CONNECT's bytes are not taken */
    assert_int_equal(h.version, 1);
    assert_int_equal(h.family, 4);
    assert_memory_equal(h.src, "\xc0\x00\x02\x07", 4);
    assert_memory_equal(h.dst, "\x7f\x00\x00\x01", 4);
    assert_int_equal(h.src_port, 40001);
    assert_int_equal(h.dst_port, 1884);
}

static void test_v1_tcp6_and_unknown(void **state)
{
    (void)state;
    const char msg[] = "PROXY TCP6 2001:db8::1 ::1 65535 0\r\n";
    size_t used;
    struct tern_proxy_header h;
    assert_int_equal(feed_all(msg, sizeof msg - 1, &used, &h), TERN_OK);
    assert_int_equal(h.family, 6);
    assert_int_equal(h.src[0], 0x20);
    assert_int_equal(h.src[15], 1);
    assert_int_equal(h.dst[15], 1);
    assert_int_equal(h.src_port, 65535);
    assert_int_equal(h.dst_port, 0);
    const char unk[] = "PROXY UNKNOWN ffff::1 whatever\r\n";
    assert_int_equal(feed_all(unk, sizeof unk - 1, &used, &h), TERN_OK);
    assert_int_equal(h.family, 0);
    assert_int_equal(feed_all("PROXY UNKNOWN\r\n", 15, &used, &h), TERN_OK);
    assert_int_equal(h.family, 0);
}

static void test_v1_split_everywhere(void **state)
{
    (void)state;
    const char *msg = "PROXY TCP4 10.1.2.3 10.0.0.1 5555 1883\r\nMQTT";
    size_t len = strlen(msg);
    for (size_t step = 1; step <= len; step++) {
        size_t taken;
        struct tern_proxy_header h;
        assert_int_equal(feed_steps((const uint8_t *)msg, len, step, &taken, &h),
                         TERN_OK);
        assert_int_equal(taken, len - 4);
        assert_int_equal(h.src_port, 5555);
        assert_memory_equal(h.src, "\x0a\x01\x02\x03", 4);
    }
}

static void test_v1_refused(void **state)
{
    (void)state;
    static const char *bad[] = {
        "PROXY TCP4 1.2.3.4 5.6.7.8 70000 1\r\n", /* port over 65535 */
        "PROXY TCP4 1.2.3.4 5.6.7.8 0100 1\r\n",  /* leading zero */
        "PROXY TCP4 1.2.3 5.6.7.8 1 1\r\n",       /* not an address */
        "PROXY TCP4 ::1 5.6.7.8 1 1\r\n",         /* v6 address in TCP4 */
        "PROXY TCP6 1.2.3.4 ::1 1 1\r\n",         /* v4 address in TCP6 */
        "PROXY TCP4 1.2.3.4 5.6.7.8 1 1 1\r\n",   /* one field too many */
        "PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",       /* one too few */
        "PROXY TCP4  1.2.3.4 5.6.7.8 1 1\r\n",    /* two spaces */
        "PROXY TCP4 1.2.3.4 5.6.7.8 1 1\n",       /* LF without CR */
        "PROXY UDP4 1.2.3.4 5.6.7.8 1 1\r\n",     /* not TCP */
        "PROXY \r\n",
        "proxy TCP4 1.2.3.4 5.6.7.8 1 1\r\n", /* case matters */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        size_t used;
        struct tern_proxy_header h;
        assert_int_equal(feed_all(bad[i], strlen(bad[i]), &used, &h), TERN_EMALFORMED);
    }
}

static void test_v1_too_long(void **state)
{
    (void)state;
    char msg[300];
    memset(msg, 'a', sizeof msg);
    memcpy(msg, "PROXY UNKNOWN ", 14);
    size_t used;
    struct tern_proxy_header h;
    assert_int_equal(feed_all(msg, sizeof msg, &used, &h), TERN_ETOOBIG);
    assert_int_equal(used, TERN_PROXY_V1_MAX); /* not a byte past the bound */
    size_t taken;
    assert_int_equal(feed_steps((const uint8_t *)msg, sizeof msg, 7, &taken, &h),
                     TERN_ETOOBIG);
    assert_int_equal(taken, TERN_PROXY_V1_MAX);
    /* Exactly at the bound is fine. */
    memcpy(msg + TERN_PROXY_V1_MAX - 2, "\r\n", 2);
    assert_int_equal(feed_all(msg, TERN_PROXY_V1_MAX, &used, &h), TERN_OK);
}

/* The first wrong byte decides: no waiting for a line end or a timeout. */
static void test_not_a_header_at_once(void **state)
{
    (void)state;
    size_t used;
    struct tern_proxy_header h;
    /* An MQTT CONNECT sent straight to the listener. */
    assert_int_equal(feed_all("\x10\x0c\x00\x04MQTT", 8, &used, &h), TERN_EMALFORMED);
    /* A TLS ClientHello. */
    assert_int_equal(feed_all("\x16\x03\x01\x02\x00", 5, &used, &h), TERN_EMALFORMED);
    assert_int_equal(feed_all("PROXZ", 5, &used, &h), TERN_EMALFORMED);
    assert_int_equal(feed_all("PRO", 3, &used, &h), TERN_EAGAIN);
    assert_int_equal(feed_all("\r\n\r\n\0\r\nQUIX", 12, &used, &h), TERN_EMALFORMED);
    assert_int_equal(feed_all("\r\n\r\n\0\r", 6, &used, &h), TERN_EAGAIN);
}

/* A v2 header: signature, version/command, family/protocol, length, body. */
static size_t v2(uint8_t *out, uint8_t ver_cmd, uint8_t fam, const uint8_t *body,
                 uint16_t len)
{
    memcpy(out, "\r\n\r\n\0\r\nQUIT\n", 12);
    out[12] = ver_cmd;
    out[13] = fam;
    out[14] = (uint8_t)(len >> 8);
    out[15] = (uint8_t)len;
    if (body)
        memcpy(out + 16, body, len);
    return 16u + len;
}

static const uint8_t V4_BODY[] = {127, 0, 0, 7, 127, 0, 0, 1, 0x9c, 0x41, 0x07, 0x5c};

static void test_v2_tcp4_then_mqtt(void **state)
{
    (void)state;
    uint8_t msg[64];
    size_t n = v2(msg, 0x21, 0x11, V4_BODY, sizeof V4_BODY);
    msg[n++] = 0x10; /* CONNECT follows */
    size_t used;
    struct tern_proxy_header h;
    assert_int_equal(feed_all(msg, n, &used, &h), TERN_OK);
    assert_int_equal(used, n - 1);
    assert_int_equal(h.version, 2);
    assert_int_equal(h.family, 4);
    assert_memory_equal(h.src, "\x7f\x00\x00\x07", 4);
    assert_int_equal(h.src_port, 0x9c41);
    assert_int_equal(h.dst_port, 1884);
    for (size_t step = 1; step <= n; step++) {
        size_t taken;
        assert_int_equal(feed_steps(msg, n, step, &taken, &h), TERN_OK);
        assert_int_equal(taken, n - 1);
        assert_int_equal(h.src_port, 0x9c41);
    }
}

static void test_v2_tcp6_with_tlvs(void **state)
{
    (void)state;
    uint8_t body[36 + 3 + 5 + 3];
    memset(body, 0, sizeof body);
    body[0] = 0x20;
    body[1] = 0x01;
    body[15] = 9; /* src 2001::9 */
    body[31] = 1; /* dst ::1 */
    body[32] = 0x12;
    body[33] = 0x34;
    /* PP2_TYPE_AUTHORITY "a.b.c", then an empty NOOP */
    memcpy(body + 36,
           "\x02\x00\x05"
           "a.b.c"
           "\x04\x00\x00",
           11);
    uint8_t msg[128];
    size_t n = v2(msg, 0x21, 0x21, body, sizeof body);
    size_t used;
    struct tern_proxy_header h;
    assert_int_equal(feed_all(msg, n, &used, &h), TERN_OK);
    assert_int_equal(used, n);
    assert_int_equal(h.family, 6);
    assert_int_equal(h.src[15], 9);
    assert_int_equal(h.src_port, 0x1234);
}

static void test_v2_without_address(void **state)
{
    (void)state;
    uint8_t msg[300], body[216];
    size_t used;
    struct tern_proxy_header h;
    memset(body, 0, sizeof body);
    /* LOCAL (a health check): whatever the family says, no address. */
    size_t n = v2(msg, 0x20, 0x11, V4_BODY, sizeof V4_BODY);
    assert_int_equal(feed_all(msg, n, &used, &h), TERN_OK);
    assert_int_equal(h.family, 0);
    n = v2(msg, 0x20, 0x00, NULL, 0);
    assert_int_equal(feed_all(msg, n, &used, &h), TERN_OK);
    assert_int_equal(h.family, 0);
    /* PROXY over AF_UNSPEC and AF_UNIX. */
    n = v2(msg, 0x21, 0x00, NULL, 0);
    assert_int_equal(feed_all(msg, n, &used, &h), TERN_OK);
    assert_int_equal(h.family, 0);
    n = v2(msg, 0x21, 0x31, body, sizeof body);
    assert_int_equal(feed_all(msg, n, &used, &h), TERN_OK);
    assert_int_equal(h.family, 0);
}

static void test_v2_refused(void **state)
{
    (void)state;
    uint8_t msg[64];
    size_t used;
    struct tern_proxy_header h;
    static const struct {
        uint8_t ver_cmd, fam;
        uint16_t len;
    } bad[] = {
        {0x11, 0x11, 12}, /* version 1 in the binary form */
        {0x22, 0x11, 12}, /* command 2 */
        {0x21, 0x12, 12}, /* UDP */
        {0x21, 0x41, 12}, /* family 4 */
        {0x21, 0x11, 11}, /* shorter than two IPv4 addresses and ports */
        {0x21, 0x21, 12}, /* shorter than two IPv6 addresses */
        {0x21, 0x11, 14}, /* 2 bytes after the addresses: not a TLV */
    };
    uint8_t body[48] = {0};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        size_t n = v2(msg, bad[i].ver_cmd, bad[i].fam, body, bad[i].len);
        assert_int_equal(feed_all(msg, n, &used, &h), TERN_EMALFORMED);
    }
    /* A TLV whose length runs past the header. */
    memcpy(body, V4_BODY, 12);
    memcpy(body + 12,
           "\x01\x00\x09"
           "h2",
           5);
    size_t n = v2(msg, 0x21, 0x11, body, 17);
    assert_int_equal(feed_all(msg, n, &used, &h), TERN_EMALFORMED);
    /* Refused as soon as the version byte is in: */
    n = v2(msg, 0x31, 0x11, V4_BODY, 12);
    assert_int_equal(feed_all(msg, 13, &used, &h), TERN_EMALFORMED);
}

static void test_v2_too_long(void **state)
{
    (void)state;
    uint8_t msg[16];
    size_t used;
    struct tern_proxy_header h;
    v2(msg, 0x21, 0x11, NULL, TERN_PROXY_V2_LEN_MAX + 1);
    assert_int_equal(feed_all(msg, 16, &used, &h), TERN_ETOOBIG);
    assert_int_equal(used, 16); /* decided on the length, without the body */
    v2(msg, 0x21, 0x11, NULL, 0xFFFF);
    assert_int_equal(feed_all(msg, 16, &used, &h), TERN_ETOOBIG);
    /* At the bound: TLVs filling it are taken. */
    static uint8_t big[16 + TERN_PROXY_V2_LEN_MAX];
    uint8_t body[TERN_PROXY_V2_LEN_MAX];
    memcpy(body, V4_BODY, 12);
    uint16_t tl = TERN_PROXY_V2_LEN_MAX - 12 - 3;
    body[12] = 0x04;
    body[13] = (uint8_t)(tl >> 8);
    body[14] = (uint8_t)tl;
    memset(body + 15, 0, tl);
    size_t n = v2(big, 0x21, 0x11, body, TERN_PROXY_V2_LEN_MAX);
    assert_int_equal(feed_all(big, n, &used, &h), TERN_OK);
    assert_int_equal(used, n);
    assert_int_equal(h.family, 4);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_v1_tcp4_then_mqtt),
        cmocka_unit_test(test_v1_tcp6_and_unknown),
        cmocka_unit_test(test_v1_split_everywhere),
        cmocka_unit_test(test_v1_refused),
        cmocka_unit_test(test_v1_too_long),
        cmocka_unit_test(test_not_a_header_at_once),
        cmocka_unit_test(test_v2_tcp4_then_mqtt),
        cmocka_unit_test(test_v2_tcp6_with_tlvs),
        cmocka_unit_test(test_v2_without_address),
        cmocka_unit_test(test_v2_refused),
        cmocka_unit_test(test_v2_too_long),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
