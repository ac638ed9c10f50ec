/* Unit tests for the MQTT codec (node/codec/codec*.c): framing, VBI, UTF-8, decode
 * validation with the exact MQTT 5 reason codes, encode round trips for every
 * packet type in 3.1.1 and 5.0, and the list / user property helpers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "tern/codec.h"

/* ---- a small packet builder ------------------------------------------------ */

struct bld {
    uint8_t body[4096];
    size_t n;
    uint8_t out[4200];
    size_t outn;
};

static void b8(struct bld *b, uint8_t v)
{
    b->body[b->n++] = v;
}

static void b16(struct bld *b, uint16_t v)
{
    b8(b, (uint8_t)(v >> 8));
    b8(b, (uint8_t)v);
}

static void braw(struct bld *b, const void *p, size_t n)
{
    memcpy(b->body + b->n, p, n);
    b->n += n;
}

static void bstr(struct bld *b, const char *s)
{
    b16(b, (uint16_t)strlen(s));
    braw(b, s, strlen(s));
}

static void bvbi(struct bld *b, uint32_t v)
{
    b->n += (size_t)tern_vbi_encode(v, b->body + b->n);
}

/* Property block: length then the given bytes. */
static void bprops(struct bld *b, const void *p, size_t n)
{
    bvbi(b, (uint32_t)n);
    if (n) {
        braw(b, p, n);
    }
}

static const uint8_t *bfin(struct bld *b, uint8_t first)
{
    b->out[0] = first;
    int k = tern_vbi_encode((uint32_t)b->n, b->out + 1);
    memcpy(b->out + 1 + k, b->body, b->n);
    b->outn = 1 + (size_t)k + b->n;
    return b->out;
}

static int decode_bld(struct bld *b, uint8_t first, uint8_t ver, struct tern_packet *p,
                      struct tern_codec_error *e)
{
    bfin(b, first);
    return tern_codec_decode(b->out, b->outn, ver, p, e);
}

/* Asserts the packet fails with the given code and reason. */
static void expect_err(struct bld *b, uint8_t first, uint8_t ver, int code,
                       uint8_t reason)
{
    struct tern_packet p;
    struct tern_codec_error e = {0, NULL};
    assert_int_equal(decode_bld(b, first, ver, &p, &e), code);
    assert_int_equal(e.reason, reason);
    assert_non_null(e.msg);
}

static void expect_ok(struct bld *b, uint8_t first, uint8_t ver, struct tern_packet *p)
{
    struct tern_codec_error e = {0, NULL};
    int rc = decode_bld(b, first, ver, p, &e);
    if (rc != TERN_OK) {
        print_error("decode failed: %s (0x%02x)\n", e.msg, e.reason);
    }
    assert_int_equal(rc, TERN_OK);
}

#define MALF TERN_EMALFORMED, TERN_RC_MALFORMED_PACKET
#define PROTO TERN_EPROTO, TERN_RC_PROTOCOL_ERROR

static struct tern_bytes S(const char *s) {
    struct tern_bytes b = {(const uint8_t *)s, (uint32_t)strlen(s)};
    return b;
}

static void
assert_bytes(struct tern_bytes b, const char *s)
{
    assert_int_equal(b.len, strlen(s));
    assert_memory_equal(b.ptr, s, b.len);
}

/* ---- VBI, UTF-8, framing ---------------------------------------------------- */

static void test_vbi_boundaries(void **state)
{
    static const struct {
        uint32_t v;
        int n;
    } cases[] = {{0, 1},     {127, 1},     {128, 2},     {16383, 2},
                 {16384, 3}, {2097151, 3}, {2097152, 4}, {268435455, 4}};
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint8_t buf[4];
        uint32_t v = 1;
        assert_int_equal(tern_vbi_size(cases[i].v), cases[i].n);
        assert_int_equal(tern_vbi_encode(cases[i].v, buf), cases[i].n);
        assert_int_equal(tern_vbi_decode(buf, 4, &v), cases[i].n);
        assert_int_equal(v, cases[i].v);
        /* every shorter prefix asks for more input */
        for (int k = 0; k < cases[i].n; k++) {
            assert_int_equal(tern_vbi_decode(buf, (size_t)k, &v), 0);
        }
    }
    uint8_t spec[] = {0xff, 0xff, 0xff, 0x7f};
    uint32_t v;
    assert_int_equal(tern_vbi_decode(spec, 4, &v), 4);
    assert_int_equal(v, 268435455u);
    uint8_t five[] = {0x80, 0x80, 0x80, 0x80, 0x01};
    assert_int_equal(tern_vbi_decode(five, 5, &v), -1);
    assert_int_equal(tern_vbi_decode(five, 4, &v), -1);
    uint8_t overlong[] = {0x80, 0x00};
    assert_int_equal(tern_vbi_decode(overlong, 2, &v), -1);
    uint8_t e1[] = {0xc1, 0x02}; /* 321 = 0xC1 0x02 (spec 1.5.5) */
    assert_int_equal(tern_vbi_decode(e1, 2, &v), 2);
    assert_int_equal(v, 321);
}

static void test_utf8(void **state)
{
    (void)state;
    assert_true(tern_utf8_valid((const uint8_t *)"", 0));
    assert_true(tern_utf8_valid((const uint8_t *)"a/b c", 5));
    assert_true(tern_utf8_valid((const uint8_t *)"\xc3\xa9", 2));         /* é */
    assert_true(tern_utf8_valid((const uint8_t *)"\xe2\x82\xac", 3));     /* € */
    assert_true(tern_utf8_valid((const uint8_t *)"\xef\xbb\xbf", 3));     /* BOM */
    assert_true(tern_utf8_valid((const uint8_t *)"\xf0\x9f\x98\x80", 4)); /* emoji */
    assert_true(tern_utf8_valid((const uint8_t *)"\xf4\x8f\xbf\xbf", 4)); /* U+10FFFF */
    assert_true(tern_utf8_valid((const uint8_t *)"\xed\x9f\xbf", 3));     /* U+D7FF */
    assert_false(tern_utf8_valid((const uint8_t *)"a\0b", 3));
    assert_false(tern_utf8_valid((const uint8_t *)"\xc0\x80", 2));     /* overlong NUL */
    assert_false(tern_utf8_valid((const uint8_t *)"\xc1\xbf", 2));     /* overlong */
    assert_false(tern_utf8_valid((const uint8_t *)"\xe0\x80\xaf", 3)); /* overlong */
    assert_false(tern_utf8_valid((const uint8_t *)"\xf0\x8f\xbf\xbf", 4));
    assert_false(tern_utf8_valid((const uint8_t *)"\xed\xa0\x80", 3)); /* U+D800 */
    assert_false(tern_utf8_valid((const uint8_t *)"\xed\xbf\xbf", 3)); /* U+DFFF */
    assert_false(tern_utf8_valid((const uint8_t *)"\xf4\x90\x80\x80", 4));
    assert_false(tern_utf8_valid((const uint8_t *)"\xf5\x80\x80\x80", 4));
    assert_false(tern_utf8_valid((const uint8_t *)"\x80", 1));
    assert_false(tern_utf8_valid((const uint8_t *)"\xe2\x82", 2)); /* truncated */
    assert_false(tern_utf8_valid((const uint8_t *)"\xe2\x28\xa1", 3));
    assert_false(tern_utf8_valid((const uint8_t *)"\xff", 1));
}

static void test_frame_partial(void **state)
{
    (void)state;
    struct bld b = {.n = 0};
    bstr(&b, "a/b");
    for (int i = 0; i < 200; i++) {
        b8(&b, (uint8_t)i); /* remaining length 205: a 2-byte VBI */
    }
    bfin(&b, 0x30);
    struct tern_codec_error e;
    size_t flen = 0;
    for (size_t k = 0; k < b.outn; k++) {
        assert_int_equal(tern_codec_frame(b.out, k, 0, &flen, &e), TERN_EAGAIN);
    }
    assert_int_equal(tern_codec_frame(b.out, b.outn, 0, &flen, &e), TERN_OK);
    assert_int_equal(flen, b.outn);
    /* a second packet behind the first does not change the frame */
    uint8_t two[] = {0xc0, 0x00, 0xd0, 0x00};
    assert_int_equal(tern_codec_frame(two, 4, 0, &flen, &e), TERN_OK);
    assert_int_equal(flen, 2);
}

static void test_frame_errors(void **state)
{
    (void)state;
    struct tern_codec_error e;
    size_t flen = 0;
    uint8_t bad[] = {0x30, 0xff, 0xff, 0xff, 0xff, 0x01};
    assert_int_equal(tern_codec_frame(bad, sizeof bad, 0, &flen, &e), TERN_EMALFORMED);
    assert_int_equal(e.reason, TERN_RC_MALFORMED_PACKET);
    /* fails as soon as the 4th length byte has a continuation bit */
    assert_int_equal(tern_codec_frame(bad, 5, 0, &flen, &e), TERN_EMALFORMED);
    uint8_t big[] = {0x30, 0xff, 0xff, 0xff, 0x7f};
    assert_int_equal(tern_codec_frame(big, sizeof big, 0, &flen, &e), TERN_EAGAIN);
    assert_int_equal(tern_codec_frame(big, sizeof big, 1u << 20, &flen, &e),
                     TERN_ETOOBIG);
    assert_int_equal(e.reason, TERN_RC_PACKET_TOO_LARGE);
    /* the limit is on the whole packet: 2 + 100 bytes */
    uint8_t hdr[] = {0x30, 100};
    assert_int_equal(tern_codec_frame(hdr, 2, 101, &flen, &e), TERN_ETOOBIG);
    assert_int_equal(tern_codec_frame(hdr, 2, 102, &flen, &e), TERN_EAGAIN);
    uint8_t ping[] = {0xc0, 0x00};
    assert_int_equal(tern_codec_frame(ping, 2, 2, &flen, &e), TERN_OK);
    assert_int_equal(tern_codec_frame(ping, 1, 2, &flen, &e), TERN_EAGAIN);
}

static void test_decode_length_mismatch(void **state)
{
    (void)state;
    struct tern_packet p;
    struct tern_codec_error e;
    uint8_t ping[] = {0xc0, 0x00, 0x00};
    assert_int_equal(tern_codec_decode(ping, 3, 4, &p, &e), TERN_EMALFORMED);
    assert_int_equal(tern_codec_decode(ping, 1, 4, &p, &e), TERN_EMALFORMED);
    assert_int_equal(tern_codec_decode(ping, 2, 4, &p, &e), TERN_OK);
    assert_int_equal(p.type, TERN_PINGREQ);
    uint8_t pingresp[] = {0xd0, 0x01, 0x00};
    assert_int_equal(tern_codec_decode(pingresp, 3, 4, &p, &e), TERN_EMALFORMED);
    uint8_t type0[] = {0x00, 0x00};
    assert_int_equal(tern_codec_decode(type0, 2, 4, &p, &e), TERN_EMALFORMED);
    assert_int_equal(e.reason, TERN_RC_MALFORMED_PACKET);
}

/* ---- CONNECT ---------------------------------------------------------------- */

/* CONNECT variable header up to keep alive. */
static void connect_head(struct bld *b, const char *name, uint8_t level, uint8_t flags)
{
    bstr(b, name);
    b8(b, level);
    b8(b, flags);
    b16(b, 10);
}

static void test_connect_spec_example(void **state)
{
    (void)state;
    /* MQTT 3.1.1 figure 3.6: name MQTT, level 4, flags 0xCE, keep alive 10. */
    struct bld b = {.n = 0};
    connect_head(&b, "MQTT", 4, 0xCE);
    bstr(&b, "cid");
    bstr(&b, "will/topic");
    bstr(&b, "bye");
    bstr(&b, "user");
    bstr(&b, "pw");
    struct tern_packet p;
    expect_ok(&b, 0x10, 0, &p);
    const struct tern_connect *c = &p.u.connect;
    assert_int_equal(p.type, TERN_CONNECT);
    assert_int_equal(c->version, TERN_MQTT_311);
    assert_true(c->clean_start && c->will_flag && c->has_username && c->has_password);
    assert_int_equal(c->will_qos, 1);
    assert_false(c->will_retain);
    assert_int_equal(c->keepalive_s, 10);
    assert_bytes(c->protocol_name, "MQTT");
    assert_bytes(c->client_id, "cid");
    assert_bytes(c->will_topic, "will/topic");
    assert_bytes(c->will_payload, "bye");
    assert_bytes(c->username, "user");
    assert_bytes(c->password, "pw");
    /* re-encoding gives the same bytes */
    uint8_t out[256];
    assert_int_equal(tern_codec_encode(&p, 4, out, sizeof out), b.outn);
    assert_memory_equal(out, b.out, b.outn);
}

static void test_connect_versions(void **state)
{
    (void)state;
    struct tern_packet p;
    struct bld b = {.n = 0};
    connect_head(&b, "MQIsdp", 3, 0x02);
    bstr(&b, "c31");
    expect_ok(&b, 0x10, 0, &p);
    assert_int_equal(p.u.connect.version, TERN_MQTT_31);

    b.n = 0; /* v5 with properties, empty client id, password without user */
    connect_head(&b, "MQTT", 5, 0x42);
    uint8_t props[] = {0x11, 0, 0, 0, 60, 0x21, 0, 10, 0x27, 0, 0, 0x10, 0, 0x17, 1};
    bprops(&b, props, sizeof props);
    bstr(&b, "");
    bstr(&b, "secret");
    expect_ok(&b, 0x10, 0, &p);
    const struct tern_connect *c = &p.u.connect;
    assert_int_equal(c->version, TERN_MQTT_5);
    assert_int_equal(c->client_id.len, 0);
    assert_true(c->has_password && !c->has_username);
    assert_int_equal(c->props.session_expiry, 60);
    assert_int_equal(c->props.receive_max, 10);
    assert_int_equal(c->props.max_packet_size, 4096);
    assert_int_equal(c->props.request_problem_info, 1);
    assert_int_equal(c->props.mask, TERN_PROP_BIT(TERN_PROP_SESSION_EXPIRY) |
                                        TERN_PROP_BIT(TERN_PROP_RECEIVE_MAX) |
                                        TERN_PROP_BIT(TERN_PROP_MAX_PACKET_SIZE) |
                                        TERN_PROP_BIT(TERN_PROP_REQUEST_PROBLEM_INFO));
    assert_bytes(c->password, "secret");
}

static void test_connect_errors(void **state)
{
    (void)state;
    struct bld b = {.n = 0};
    struct tern_packet p;
    struct tern_codec_error e;

    connect_head(&b, "MQTT", 6, 0x02); /* unknown level: 0x84, level reported */
    bstr(&b, "c");
    assert_int_equal(decode_bld(&b, 0x10, 0, &p, &e), TERN_EPROTO);
    assert_int_equal(e.reason, TERN_RC_UNSUPPORTED_PROTOCOL_VERSION);
    assert_int_equal(p.u.connect.version, 6);

    static const struct {
        const char *name;
        uint8_t level;
    } bad_names[] = {{"MQTX", 4}, {"MQIsdp", 4}, {"MQTT", 3}, {"", 4}, {"MQTT", 0}};
    for (size_t i = 0; i < sizeof bad_names / sizeof bad_names[0]; i++) {
        b.n = 0;
        connect_head(&b, bad_names[i].name, bad_names[i].level, 0x02);
        bstr(&b, "c");
        expect_err(&b, 0x10, 0, TERN_EPROTO, TERN_RC_UNSUPPORTED_PROTOCOL_VERSION);
    }
    static const uint8_t bad_flags[] = {
        0x03, /* reserved bit */
        0x1E, /* will QoS 3 */
        0x0A, /* will QoS 1 without will flag */
        0x22, /* will retain without will flag */
        0x42, /* password without user name (3.1.1) */
    };
    for (size_t i = 0; i < sizeof bad_flags; i++) {
        b.n = 0;
        connect_head(&b, "MQTT", 4, bad_flags[i]);
        bstr(&b, "c");
        if (bad_flags[i] & 0x04) {
            bstr(&b, "t");
            bstr(&b, "m");
        }
        if (bad_flags[i] & 0x40) {
            bstr(&b, "pw");
        }
        expect_err(&b, 0x10, 0, MALF);
    }
    b.n = 0; /* fixed header flags must be 0 */
    connect_head(&b, "MQTT", 4, 0x02);
    bstr(&b, "c");
    expect_err(&b, 0x11, 0, MALF);
    b8(&b, 0); /* trailing byte */
    expect_err(&b, 0x10, 0, MALF);

    b.n = 0; /* will topic with a wildcard */
    connect_head(&b, "MQTT", 4, 0x06);
    bstr(&b, "c");
    bstr(&b, "a/#");
    bstr(&b, "m");
    expect_err(&b, 0x10, 0, TERN_EPROTO, TERN_RC_TOPIC_NAME_INVALID);

    b.n = 0; /* client id that is not UTF-8 */
    connect_head(&b, "MQTT", 4, 0x02);
    b16(&b, 2);
    b8(&b, 0xc0);
    b8(&b, 0x80);
    expect_err(&b, 0x10, 0, MALF);

    b.n = 0; /* truncated: client id length beyond the packet */
    connect_head(&b, "MQTT", 4, 0x02);
    b16(&b, 10);
    b8(&b, 'x');
    expect_err(&b, 0x10, 0, MALF);

    b.n = 0; /* user name flag set but no user name */
    connect_head(&b, "MQTT", 4, 0x82);
    bstr(&b, "c");
    expect_err(&b, 0x10, 0, MALF);
}

static void test_connect_will_props(void **state)
{
    (void)state;
    struct bld b = {.n = 0};
    struct tern_packet p;
    connect_head(&b, "MQTT", 5, 0x2E); /* will, QoS 1, retain, clean */
    bprops(&b, NULL, 0);
    bstr(&b, "c");
    uint8_t wp[] = {0x18, 0, 0, 0, 5, 0x01, 1, 0x03, 0, 1, 't'};
    bprops(&b, wp, sizeof wp);
    bstr(&b, "w");
    bstr(&b, "m");
    expect_ok(&b, 0x10, 0, &p);
    assert_int_equal(p.u.connect.will_props.will_delay, 5);
    assert_int_equal(p.u.connect.will_props.payload_format, 1);
    assert_bytes(p.u.connect.will_props.content_type, "t");
    assert_true(p.u.connect.will_retain);

    b.n = 0; /* will delay is not a CONNECT property */
    connect_head(&b, "MQTT", 5, 0x02);
    uint8_t bad[] = {0x18, 0, 0, 0, 5};
    bprops(&b, bad, sizeof bad);
    bstr(&b, "c");
    expect_err(&b, 0x10, 0, MALF);

    b.n = 0; /* session expiry is not a will property */
    connect_head(&b, "MQTT", 5, 0x06);
    bprops(&b, NULL, 0);
    bstr(&b, "c");
    uint8_t bad2[] = {0x11, 0, 0, 0, 5};
    bprops(&b, bad2, sizeof bad2);
    bstr(&b, "w");
    bstr(&b, "m");
    expect_err(&b, 0x10, 0, MALF);
}

/* ---- properties ------------------------------------------------------------- */

/* A v5 CONNECT carrying the given property block. */
static void connect_with_props(struct bld *b, const uint8_t *props, size_t n)
{
    b->n = 0;
    connect_head(b, "MQTT", 5, 0x02);
    bprops(b, props, n);
    bstr(b, "c");
}

static void test_props_errors(void **state)
{
    (void)state;
    struct bld b;
    static const struct {
        uint8_t props[16];
        size_t n;
        int code;
        uint8_t reason;
    } cases[] = {
        {{0x11, 0, 0, 0, 1, 0x11, 0, 0, 0, 2}, 10, PROTO}, /* duplicate */
        {{0x21, 0, 0}, 3, PROTO},                          /* receive max 0 */
        {{0x27, 0, 0, 0, 0}, 5, PROTO},                    /* max packet size 0 */
        {{0x17, 2}, 2, PROTO},                             /* request problem 2 */
        {{0x19, 3}, 2, PROTO},                             /* request response 3 */
        {{0x23, 0, 1}, 3, MALF},                           /* topic alias: PUBLISH only */
        {{0x24, 0}, 2, MALF},                              /* max QoS: CONNACK only */
        {{0x00, 0}, 2, MALF},                              /* id 0 */
        {{0x7f, 0}, 2, MALF},                              /* unknown id */
        {{0x80, 0x01}, 2, MALF},                           /* multi-byte id */
        {{0x11, 0, 0}, 3, MALF},                           /* value cut by block end */
        {{0x16, 0, 1, 'x'}, 4, PROTO},                     /* auth data, no method */
        {{0x15, 0, 2, 0xed, 0xa0}, 5, MALF},               /* bad UTF-8 (truncated) */
        {{0x26, 0, 1, 'k'}, 4, MALF},                      /* user property w/o value */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        connect_with_props(&b, cases[i].props, cases[i].n);
        expect_err(&b, 0x10, 0, cases[i].code, cases[i].reason);
    }
    /* property length larger than the packet */
    b.n = 0;
    connect_head(&b, "MQTT", 5, 0x02);
    bvbi(&b, 50);
    bstr(&b, "c");
    expect_err(&b, 0x10, 0, MALF);
    /* property length as a non-minimal VBI */
    b.n = 0;
    connect_head(&b, "MQTT", 5, 0x02);
    b8(&b, 0x80);
    b8(&b, 0x00);
    bstr(&b, "c");
    expect_err(&b, 0x10, 0, MALF);
}

static void test_user_props(void **state)
{
    (void)state;
    struct bld b = {.n = 0};
    struct tern_packet p;
    bstr(&b, "t");
    uint8_t props[] = {0x26, 0,   1, 'a', 0,   1,   '1',  0x01, 1, 0x26, 0,
                       1,    'a', 0, 2,   '2', '2', 0x02, 0,    0, 0,    9};
    bprops(&b, props, sizeof props);
    braw(&b, "pl", 2);
    expect_ok(&b, 0x30, 5, &p);
    const struct tern_props *pp = &p.u.publish.props;
    assert_int_equal(pp->user_count, 2);
    assert_true(pp->mask & TERN_PROP_BIT(TERN_PROP_USER));
    assert_int_equal(pp->raw.len, sizeof props);
    assert_int_equal(pp->message_expiry, 9);
    uint8_t users[64];
    size_t n = tern_props_user_extract(pp, users);
    static const uint8_t expect[] = {0x26, 0, 1,   'a', 0, 1,   '1', 0x26,
                                     0,    1, 'a', 0,   2, '2', '2'};
    assert_int_equal(n, sizeof expect);
    assert_memory_equal(users, expect, n);

    /* forward them: encode with user = the extracted entries */
    struct tern_packet q = p;
    q.u.publish.props.user.ptr = users;
    q.u.publish.props.user.len = (uint32_t)n;
    q.u.publish.props.mask = TERN_PROP_BIT(TERN_PROP_USER);
    assert_int_equal(tern_codec_props_size(&q.u.publish.props), n);
    uint8_t out[128];
    size_t len = tern_codec_encode(&q, 5, out, sizeof out);
    assert_true(len > 0 && len <= sizeof out);
    struct tern_packet r;
    struct tern_codec_error e;
    assert_int_equal(tern_codec_decode(out, len, 5, &r, &e), TERN_OK);
    assert_int_equal(r.u.publish.props.user_count, 2);
    assert_int_equal(r.u.publish.props.raw.len, n);
    assert_memory_equal(r.u.publish.props.raw.ptr, expect, n);
    assert_bytes(r.u.publish.payload, "pl");

    /* user entries mixed with every other property shape */
    b.n = 0;
    bstr(&b, "t");
    uint8_t mixed[] = {0x0B, 0x80, 0x01, 0x26, 0, 0,    0, 0, 0x03, 0, 1, 'c', 0x23, 0, 9,
                       0x02, 0,    0,    0,    1, 0x09, 0, 0, 0x26, 0, 1, 'k', 0,    0};
    bprops(&b, mixed, sizeof mixed);
    expect_ok(&b, 0x30, 5, &p);
    assert_int_equal(p.u.publish.props.user_count, 2);
    assert_int_equal(p.u.publish.props.sub_ids[0], 128);
    static const uint8_t expect2[] = {0x26, 0, 0, 0, 0, 0x26, 0, 1, 'k', 0, 0};
    n = tern_props_user_extract(&p.u.publish.props, users);
    assert_int_equal(n, sizeof expect2);
    assert_memory_equal(users, expect2, n);

    /* none: extract writes nothing */
    struct tern_props empty;
    memset(&empty, 0, sizeof empty);
    assert_int_equal(tern_props_user_extract(&empty, users), 0);
}

/* ---- PUBLISH ---------------------------------------------------------------- */

static void test_publish_decode(void **state)
{
    (void)state;
    struct bld b = {.n = 0};
    struct tern_packet p;
    bstr(&b, "a/b");
    b16(&b, 10);
    braw(&b, "data", 4);
    expect_ok(&b, 0x3B, 4, &p); /* DUP, QoS 1, retain */
    assert_int_equal(p.u.publish.qos, 1);
    assert_true(p.u.publish.dup && p.u.publish.retain);
    assert_int_equal(p.u.publish.packet_id, 10);
    assert_bytes(p.u.publish.topic, "a/b");
    assert_bytes(p.u.publish.payload, "data");

    b.n = 0; /* v5: topic alias with empty topic, two subscription ids */
    bstr(&b, "");
    b16(&b, 7);
    uint8_t props[] = {0x23, 0, 3, 0x0B, 0x01, 0x0B, 0xff, 0xff, 0xff, 0x7f};
    bprops(&b, props, sizeof props);
    expect_ok(&b, 0x34, 5, &p);
    assert_int_equal(p.u.publish.qos, 2);
    assert_int_equal(p.u.publish.topic.len, 0);
    assert_int_equal(p.u.publish.props.topic_alias, 3);
    assert_int_equal(p.u.publish.props.sub_id_count, 2);
    assert_int_equal(p.u.publish.props.sub_ids[0], 1);
    assert_int_equal(p.u.publish.props.sub_ids[1], 268435455u);
    assert_int_equal(p.u.publish.payload.len, 0);
}

static void test_publish_errors(void **state)
{
    (void)state;
    struct bld b = {.n = 0};
    bstr(&b, "a/b");
    b16(&b, 1);
    expect_err(&b, 0x36, 4, MALF); /* QoS 3 */
    expect_err(&b, 0x36, 5, MALF);
    b.n = 0;
    bstr(&b, "a/b");
    expect_err(&b, 0x38, 4, MALF); /* DUP on QoS 0 */

    static const char *bad_topics[] = {"a/+", "#", "a/#", "+/b", "a+b"};
    for (size_t i = 0; i < 5; i++) {
        b.n = 0;
        bstr(&b, bad_topics[i]);
        expect_err(&b, 0x30, 4, TERN_EPROTO, TERN_RC_TOPIC_NAME_INVALID);
        b.n = 0;
        bstr(&b, bad_topics[i]);
        bprops(&b, NULL, 0);
        expect_err(&b, 0x30, 5, TERN_EPROTO, TERN_RC_TOPIC_NAME_INVALID);
    }
    b.n = 0; /* empty topic */
    bstr(&b, "");
    expect_err(&b, 0x30, 4, TERN_EPROTO, TERN_RC_TOPIC_NAME_INVALID);
    bprops(&b, NULL, 0);
    expect_err(&b, 0x30, 5, PROTO);

    b.n = 0; /* packet id 0 */
    bstr(&b, "t");
    b16(&b, 0);
    expect_err(&b, 0x32, 4, PROTO);
    b.n = 0; /* packet id missing entirely */
    bstr(&b, "t");
    expect_err(&b, 0x32, 4, MALF);

    b.n = 0; /* topic alias 0 */
    bstr(&b, "t");
    uint8_t alias0[] = {0x23, 0, 0};
    bprops(&b, alias0, sizeof alias0);
    expect_err(&b, 0x30, 5, PROTO);

    b.n = 0; /* subscription id 0 */
    bstr(&b, "t");
    uint8_t sid0[] = {0x0B, 0};
    bprops(&b, sid0, sizeof sid0);
    expect_err(&b, 0x30, 5, PROTO);

    b.n = 0; /* payload format 2, and duplicate payload format */
    bstr(&b, "t");
    uint8_t pf2[] = {0x01, 2};
    bprops(&b, pf2, sizeof pf2);
    expect_err(&b, 0x30, 5, PROTO);
    b.n = 0;
    bstr(&b, "t");
    uint8_t pfdup[] = {0x01, 1, 0x01, 1};
    bprops(&b, pfdup, sizeof pfdup);
    expect_err(&b, 0x30, 5, PROTO);

    b.n = 0; /* response topic with a wildcard */
    bstr(&b, "t");
    uint8_t rt[] = {0x08, 0, 1, '#'};
    bprops(&b, rt, sizeof rt);
    expect_err(&b, 0x30, 5, PROTO);

    b.n = 0; /* session expiry is not a PUBLISH property */
    bstr(&b, "t");
    uint8_t se[] = {0x11, 0, 0, 0, 1};
    bprops(&b, se, sizeof se);
    expect_err(&b, 0x30, 5, MALF);

    b.n = 0; /* U+0000 and a surrogate in the topic */
    b16(&b, 3);
    braw(&b, "a\0b", 3);
    expect_err(&b, 0x30, 4, MALF);
    b.n = 0;
    b16(&b, 3);
    braw(&b, "\xed\xa0\x80", 3);
    expect_err(&b, 0x30, 4, MALF);

    b.n = 0; /* too many subscription ids */
    bstr(&b, "t");
    uint8_t many[2 * (TERN_MAX_SUB_IDS + 1)];
    for (size_t i = 0; i < sizeof many; i += 2) {
        many[i] = 0x0B;
        many[i + 1] = 1;
    }
    bprops(&b, many, sizeof many);
    expect_err(&b, 0x30, 5, PROTO);
}

/* ---- acks ------------------------------------------------------------------- */

static void test_acks(void **state)
{
    (void)state;
    struct bld b = {.n = 0};
    struct tern_packet p;
    b16(&b, 5);
    expect_ok(&b, 0x40, 4, &p);
    assert_int_equal(p.type, TERN_PUBACK);
    assert_int_equal(p.u.ack.packet_id, 5);
    expect_ok(&b, 0x50, 4, &p);
    expect_ok(&b, 0x62, 4, &p);
    expect_ok(&b, 0x70, 4, &p);
    expect_ok(&b, 0x40, 5, &p); /* v5 short form: reason 0 implied */
    assert_int_equal(p.u.ack.reason, 0);
    expect_err(&b, 0x60, 4, MALF); /* PUBREL flags must be 0010 */
    expect_err(&b, 0x42, 4, MALF); /* PUBACK flags must be 0000 */
    b8(&b, 0x10);
    expect_err(&b, 0x40, 4, MALF); /* 3.1.1 has no reason */
    expect_ok(&b, 0x40, 5, &p);    /* v5: reason, no properties */
    assert_int_equal(p.u.ack.reason, TERN_RC_NO_MATCHING_SUBSCRIBERS);
    expect_err(&b, 0x62, 5, PROTO); /* 0x10 is not a PUBREL reason */
    uint8_t rs[] = {0x1F, 0, 2, 'n', 'o'};
    bprops(&b, rs, sizeof rs);
    expect_ok(&b, 0x50, 5, &p);
    assert_bytes(p.u.ack.props.reason_string, "no");

    b.n = 0;
    b16(&b, 0); /* packet id 0 */
    expect_err(&b, 0x40, 4, PROTO);
    b.n = 0;
    b8(&b, 1); /* too short */
    expect_err(&b, 0x40, 4, MALF);
    b.n = 0;
    b16(&b, 1);
    b8(&b, 0x92);
    expect_ok(&b, 0x70, 5, &p); /* PUBCOMP packet id not found */
    expect_err(&b, 0x40, 5, PROTO);
}

/* ---- SUBSCRIBE / UNSUBSCRIBE ------------------------------------------------ */

static void sub_one(struct bld *b, bool v5, const char *filter, uint8_t opts)
{
    b->n = 0;
    b16(b, 1);
    if (v5) {
        bprops(b, NULL, 0);
    }
    bstr(b, filter);
    b8(b, opts);
}

static void test_subscribe_filters(void **state)
{
    (void)state;
    struct bld b;
    struct tern_packet p;
    static const char *good[] = {"#",          "+",
                                 "a/b",        "a/+/c",
                                 "a/#",        "+/+/#",
                                 "/",          "//",
                                 "/a/",        "$SYS/#",
                                 "$share/g/#", "$share/g/a/+",
                                 "$share/g//", "sport/tennis/+"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        sub_one(&b, true, good[i], 1);
        expect_ok(&b, 0x82, 5, &p);
        sub_one(&b, false, good[i], 2);
        expect_ok(&b, 0x82, 4, &p);
    }
    static const char *bad[] = {"",           "a/#/b",       "a#",         "#/a",
                                "a+",         "+a",          "a/b+/c",     "$share/",
                                "$share/g",   "$share//a",   "$share/g/",  "$share/g+/a",
                                "$share/#/a", "$share/g#/a", "$share/g/a#"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        sub_one(&b, true, bad[i], 0);
        expect_err(&b, 0x82, 5, TERN_EPROTO, TERN_RC_TOPIC_FILTER_INVALID);
        sub_one(&b, false, bad[i], 0);
        expect_err(&b, 0x82, 4, TERN_EPROTO, TERN_RC_TOPIC_FILTER_INVALID);
    }
}

static void test_subscribe_errors(void **state)
{
    (void)state;
    struct bld b;
    struct tern_packet p;
    sub_one(&b, true, "a", 0x2d); /* QoS 1, no local, RAP, handling 2 */
    expect_ok(&b, 0x82, 5, &p);
    expect_err(&b, 0x80, 5, MALF); /* flags must be 0010 */
    expect_err(&b, 0x83, 5, MALF);
    sub_one(&b, true, "a", 0x40);
    expect_err(&b, 0x82, 5, MALF); /* reserved bit 6 */
    sub_one(&b, true, "a", 0x80);
    expect_err(&b, 0x82, 5, MALF); /* reserved bit 7 */
    sub_one(&b, true, "a", 0x30);
    expect_err(&b, 0x82, 5, PROTO); /* retain handling 3 */
    sub_one(&b, true, "a", 0x03);
    expect_err(&b, 0x82, 5, PROTO); /* QoS 3 */
    sub_one(&b, true, "$share/g/a", 0x04);
    expect_err(&b, 0x82, 5, PROTO); /* no local on a shared subscription */
    sub_one(&b, false, "a", 0x04);
    expect_err(&b, 0x82, 4, MALF); /* 3.1.1: only QoS bits */
    sub_one(&b, false, "a", 0x03);
    expect_err(&b, 0x82, 4, MALF);

    b.n = 0; /* no entries */
    b16(&b, 1);
    expect_err(&b, 0x82, 4, PROTO);
    bprops(&b, NULL, 0);
    expect_err(&b, 0x82, 5, PROTO);

    b.n = 0; /* option byte missing */
    b16(&b, 1);
    bstr(&b, "a");
    expect_err(&b, 0x82, 4, MALF);

    b.n = 0; /* packet id 0 */
    b16(&b, 0);
    bstr(&b, "a");
    b8(&b, 0);
    expect_err(&b, 0x82, 4, PROTO);

    /* subscription identifier: one allowed, in range, not two */
    b.n = 0;
    b16(&b, 1);
    uint8_t sid[] = {0x0B, 0xff, 0xff, 0xff, 0x7f};
    bprops(&b, sid, sizeof sid);
    bstr(&b, "a");
    b8(&b, 0);
    expect_ok(&b, 0x82, 5, &p);
    assert_int_equal(p.u.sub.props.sub_ids[0], 268435455u);
    assert_int_equal(p.u.sub.props.sub_id_count, 1);
    b.n = 0;
    b16(&b, 1);
    uint8_t sid2[] = {0x0B, 1, 0x0B, 2};
    bprops(&b, sid2, sizeof sid2);
    bstr(&b, "a");
    b8(&b, 0);
    expect_err(&b, 0x82, 5, PROTO);
    b.n = 0;
    b16(&b, 1);
    uint8_t sid0[] = {0x0B, 0};
    bprops(&b, sid0, sizeof sid0);
    bstr(&b, "a");
    b8(&b, 0);
    expect_err(&b, 0x82, 5, PROTO);
    b.n = 0;
    b16(&b, 1);
    uint8_t sid5[] = {0x0B, 0x80, 0x80, 0x80, 0x80, 0x01};
    bprops(&b, sid5, sizeof sid5);
    bstr(&b, "a");
    b8(&b, 0);
    expect_err(&b, 0x82, 5, MALF);
}

static void test_unsubscribe(void **state)
{
    (void)state;
    struct bld b = {.n = 0};
    struct tern_packet p;
    b16(&b, 9);
    bstr(&b, "a/+");
    bstr(&b, "$share/g/#");
    expect_ok(&b, 0xA2, 4, &p);
    assert_int_equal(p.u.sub.count, 2);
    assert_int_equal(p.u.sub.packet_id, 9);
    uint32_t pos = 0;
    struct tern_bytes f;
    assert_true(tern_codec_next_filter(&p.u.sub, TERN_UNSUBSCRIBE, &pos, &f, NULL));
    assert_bytes(f, "a/+");
    assert_true(tern_codec_next_filter(&p.u.sub, TERN_UNSUBSCRIBE, &pos, &f, NULL));
    assert_bytes(f, "$share/g/#");
    assert_false(tern_codec_next_filter(&p.u.sub, TERN_UNSUBSCRIBE, &pos, &f, NULL));
    expect_err(&b, 0xA0, 4, MALF); /* flags */
    b.n = 0;
    b16(&b, 9);
    expect_err(&b, 0xA2, 4, PROTO); /* no entries */
    bstr(&b, "a/#/b");
    expect_err(&b, 0xA2, 4, TERN_EPROTO, TERN_RC_TOPIC_FILTER_INVALID);
    b.n = 0;
    b16(&b, 9);
    uint8_t sid[] = {0x0B, 1};
    bprops(&b, sid, sizeof sid); /* sub id not allowed in UNSUBSCRIBE */
    bstr(&b, "a");
    expect_err(&b, 0xA2, 5, MALF);
}

static void test_sub_acks_decode(void **state)
{
    (void)state;
    struct bld b = {.n = 0};
    struct tern_packet p;
    b16(&b, 1);
    uint8_t codes[] = {0, 1, 2, 0x80};
    braw(&b, codes, 4);
    expect_ok(&b, 0x90, 4, &p);
    assert_int_equal(p.u.sub.count, 4);
    b8(&b, 0x87);
    expect_err(&b, 0x90, 4, PROTO); /* 3.1.1 knows no 0x87 */
    b.n = 0;
    b16(&b, 1);
    expect_err(&b, 0x90, 4, PROTO); /* SUBACK without codes */
    expect_ok(&b, 0xB0, 4, &p);     /* 3.1.1 UNSUBACK */
    assert_int_equal(p.u.sub.count, 0);
    b8(&b, 0);
    expect_err(&b, 0xB0, 4, MALF); /* ... has no payload */
    b.n = 0;
    b16(&b, 1);
    bprops(&b, NULL, 0);
    b8(&b, 0x11);
    expect_ok(&b, 0xB0, 5, &p);
    expect_err(&b, 0x90, 5, PROTO); /* 0x11 is not a SUBACK code */
    expect_err(&b, 0xB2, 5, MALF);  /* flags */
}

/* ---- CONNACK, DISCONNECT, AUTH, PING ---------------------------------------- */

static void test_connack_decode(void **state)
{
    (void)state;
    struct bld b = {.n = 0};
    struct tern_packet p;
    b8(&b, 1);
    b8(&b, 0);
    expect_ok(&b, 0x20, 4, &p);
    assert_true(p.u.connack.session_present);
    b8(&b, 0);
    expect_err(&b, 0x20, 4, MALF); /* v3 CONNACK is 2 bytes */
    b.n = 0;
    b8(&b, 0);
    b8(&b, 6);
    expect_err(&b, 0x20, 4, PROTO); /* 3.1.1 return codes stop at 5 */
    b.n = 0;
    b8(&b, 2); /* reserved flag */
    b8(&b, 0);
    expect_err(&b, 0x20, 4, MALF);
    b.n = 0;
    b8(&b, 0);
    b8(&b, 0);
    uint8_t props[] = {0x24, 1, 0x22, 0, 10, 0x12, 0, 1, 'x', 0x13, 0, 30};
    bprops(&b, props, sizeof props);
    expect_ok(&b, 0x20, 5, &p);
    assert_int_equal(p.u.connack.props.max_qos, 1);
    assert_int_equal(p.u.connack.props.topic_alias_max, 10);
    assert_int_equal(p.u.connack.props.server_keepalive, 30);
    assert_bytes(p.u.connack.props.assigned_client_id, "x");
    b.n = 0;
    b8(&b, 0);
    b8(&b, 0);
    uint8_t qos2[] = {0x24, 2};
    bprops(&b, qos2, sizeof qos2);
    expect_err(&b, 0x20, 5, PROTO); /* maximum QoS 2 */
    b.n = 0;
    b8(&b, 0);
    b8(&b, 0);
    uint8_t ra[] = {0x25, 2};
    bprops(&b, ra, sizeof ra);
    expect_err(&b, 0x20, 5, PROTO); /* retain available 2 */
}

/* ---- MQTT 5 property errors, per packet kind (docs/conformance.md) ---------- */

enum pkind {
    PK_CONNECT,
    PK_WILL,
    PK_PUBLISH,
    PK_PUBACK,
    PK_SUBSCRIBE,
    PK_UNSUBSCRIBE,
    PK_DISCONNECT
};

/* A v5 packet of the given kind carrying the property block; returns its first byte. */
static uint8_t with_props(struct bld *b, enum pkind k, const uint8_t *pr, size_t n)
{
    b->n = 0;
    switch (k) {
    case PK_CONNECT:
        connect_with_props(b, pr, n);
        return 0x10;
    case PK_WILL:
        connect_head(b, "MQTT", 5, 0x06); /* will, clean */
        bprops(b, NULL, 0);
        bstr(b, "c");
        bprops(b, pr, n);
        bstr(b, "w");
        bstr(b, "m");
        return 0x10;
    case PK_PUBLISH:
        bstr(b, "t");
        b16(b, 1);
        bprops(b, pr, n);
        return 0x32; /* QoS 1 */
    case PK_PUBACK:
        b16(b, 1);
        b8(b, 0);
        bprops(b, pr, n);
        return 0x40;
    case PK_SUBSCRIBE:
        b16(b, 1);
        bprops(b, pr, n);
        bstr(b, "a");
        b8(b, 0);
        return 0x82;
    case PK_UNSUBSCRIBE:
        b16(b, 1);
        bprops(b, pr, n);
        bstr(b, "a");
        return 0xA2;
    case PK_DISCONNECT:
        b8(b, 0);
        bprops(b, pr, n);
        return 0xE0;
    }
    return 0;
}

static void test_props_errors_per_packet(void **state)
{
    (void)state;
    struct bld b;
    struct tern_packet p;
#define OK 0, 0
    static const struct {
        enum pkind k;
        uint8_t props[16];
        size_t n;
        int code;
        uint8_t reason;
        const char *what;
    } cases[] = {
        /* Payload Format Indicator: 0 or 1 only, once, PUBLISH and will only */
        {PK_PUBLISH, {0x01, 0}, 2, OK, "payload format 0"},
        {PK_PUBLISH, {0x01, 1}, 2, OK, "payload format 1"},
        {PK_PUBLISH, {0x01, 2}, 2, PROTO, "payload format 2"},
        {PK_PUBLISH, {0x01, 0xff}, 2, PROTO, "payload format 255"},
        {PK_WILL, {0x01, 2}, 2, PROTO, "will payload format 2"},
        {PK_WILL, {0x01, 1, 0x01, 1}, 4, PROTO, "will payload format twice"},
        {PK_CONNECT, {0x01, 1}, 2, MALF, "payload format in CONNECT"},
        {PK_PUBACK, {0x01, 1}, 2, MALF, "payload format in PUBACK"},
        /* Topic Alias: non-zero, once, PUBLISH only (its upper bound is the
         * broker's topic_alias_maximum: node/mqtt/handle_publish.c, 0x94) */
        {PK_PUBLISH, {0x23, 0xff, 0xff}, 3, OK, "topic alias 65535: range checked later"},
        {PK_PUBLISH, {0x23, 0, 1, 0x23, 0, 2}, 6, PROTO, "topic alias twice"},
        {PK_WILL, {0x23, 0, 1}, 3, MALF, "topic alias in will"},
        {PK_SUBSCRIBE, {0x23, 0, 1}, 3, MALF, "topic alias in SUBSCRIBE"},
        /* Other duplicates: a protocol error (2.2.2.2) */
        {PK_PUBLISH, {0x02, 0, 0, 0, 1, 0x02, 0, 0, 0, 1}, 10, PROTO, "expiry twice"},
        {PK_PUBLISH, {0x03, 0, 1, 'a', 0x03, 0, 1, 'b'}, 8, PROTO, "content type twice"},
        {PK_PUBLISH, {0x08, 0, 1, 'a', 0x08, 0, 1, 'b'}, 8, PROTO, "resp. topic twice"},
        {PK_PUBLISH, {0x09, 0, 1, 'a', 0x09, 0, 0}, 7, PROTO, "correlation data twice"},
        {PK_WILL, {0x18, 0, 0, 0, 1, 0x18, 0, 0, 0, 2}, 10, PROTO, "will delay twice"},
        {PK_CONNECT, {0x22, 0, 1, 0x22, 0, 1}, 6, PROTO, "topic alias max twice"},
        {PK_CONNECT, {0x21, 0, 1, 0x21, 0, 1}, 6, PROTO, "receive max twice"},
        {PK_CONNECT, {0x27, 0, 0, 1, 0, 0x27, 0, 0, 1, 0}, 10, PROTO, "max packet twice"},
        {PK_CONNECT, {0x17, 1, 0x17, 1}, 4, PROTO, "request problem info twice"},
        {PK_CONNECT, {0x15, 0, 1, 'M', 0x15, 0, 1, 'M'}, 8, PROTO, "auth method twice"},
        {PK_PUBACK, {0x1F, 0, 1, 'a', 0x1F, 0, 1, 'b'}, 8, PROTO, "reason string twice"},
        {PK_DISCONNECT, {0x11, 0, 0, 0, 1, 0x11, 0, 0, 0, 1}, 10, PROTO, "expiry twice"},
        {PK_SUBSCRIBE, {0x0B, 1, 0x0B, 2}, 4, PROTO, "sub id twice"},
        /* User properties may repeat; so may subscription ids in a PUBLISH (the
         * broker refuses those from clients: node/mqtt/handle_publish.c) */
        {PK_PUBLISH, {0x26, 0, 1, 'k', 0, 0, 0x26, 0, 1, 'k', 0, 0}, 12, OK, "user x2"},
        {PK_PUBLISH, {0x0B, 1, 0x0B, 2}, 4, OK, "two subscription ids in PUBLISH"},
        /* Values outside their range */
        {PK_SUBSCRIBE, {0x0B, 0}, 2, PROTO, "subscription id 0"},
        {PK_SUBSCRIBE, {0x0B, 0x80, 0x80, 0x80, 0x80, 0x01}, 6, MALF, "sub id 5 bytes"},
        {PK_CONNECT, {0x19, 2}, 2, PROTO, "request response info 2"},
        {PK_CONNECT, {0x21, 0, 0}, 3, PROTO, "receive max 0"},
        /* Properties the packet may not carry: malformed (2.2.2.2) */
        {PK_CONNECT, {0x02, 0, 0, 0, 1}, 5, MALF, "message expiry in CONNECT"},
        {PK_CONNECT, {0x13, 0, 1}, 3, MALF, "server keep alive from a client"},
        {PK_CONNECT, {0x12, 0, 1, 'x'}, 4, MALF, "assigned client id from a client"},
        {PK_UNSUBSCRIBE, {0x0B, 1}, 2, MALF, "subscription id in UNSUBSCRIBE"},
        {PK_DISCONNECT, {0x18, 0, 0, 0, 1}, 5, MALF, "will delay in DISCONNECT"},
        {PK_PUBACK, {0x11, 0, 0, 0, 1}, 5, MALF, "session expiry in PUBACK"},
        {PK_PUBLISH, {0x21, 0, 1}, 3, MALF, "receive max in PUBLISH"},
    };
#undef OK
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint8_t first = with_props(&b, cases[i].k, cases[i].props, cases[i].n);
        uint8_t ver = cases[i].k == PK_CONNECT || cases[i].k == PK_WILL ? 0 : 5;
        struct tern_codec_error e = {0, NULL};
        int rc = decode_bld(&b, first, ver, &p, &e);
        if (rc != cases[i].code || e.reason != cases[i].reason)
            print_error("case %zu (%s): got %d/0x%02x (%s)\n", i, cases[i].what, rc,
                        e.reason, e.msg ? e.msg : "");
        assert_int_equal(rc, cases[i].code);
        assert_int_equal(e.reason, cases[i].reason);
    }
}

static void test_disconnect_auth_ping(void **state)
{
    (void)state;
    struct bld b = {.n = 0};
    struct tern_packet p;
    expect_ok(&b, 0xE0, 4, &p);
    expect_ok(&b, 0xE0, 5, &p);
    assert_int_equal(p.u.disconnect.reason, 0);
    expect_ok(&b, 0xF0, 5, &p); /* AUTH with remaining length 0 */
    expect_err(&b, 0xF0, 4, MALF);
    expect_err(&b, 0xE1, 5, MALF);
    expect_ok(&b, 0xC0, 4, &p);
    expect_ok(&b, 0xD0, 5, &p);
    expect_err(&b, 0xC2, 4, MALF);
    b8(&b, 0x04);
    expect_ok(&b, 0xE0, 5, &p); /* DISCONNECT with will, no properties */
    assert_int_equal(p.u.disconnect.reason, TERN_RC_DISCONNECT_WITH_WILL);
    expect_err(&b, 0xE0, 4, MALF);
    expect_err(&b, 0xC0, 4, MALF);
    b.n = 0;
    b8(&b, 0x18);
    expect_err(&b, 0xF0, 5, MALF); /* AUTH needs properties after a reason */
    uint8_t am[] = {0x15, 0, 1, 'M', 0x16, 0, 1, 0};
    bprops(&b, am, sizeof am);
    expect_ok(&b, 0xF0, 5, &p);
    assert_bytes(p.u.disconnect.props.auth_method, "M");
    assert_int_equal(p.u.disconnect.props.auth_data.len, 1);
    b.n = 0;
    b8(&b, 0x01);
    expect_err(&b, 0xE0, 5, PROTO); /* not a DISCONNECT reason */
    b.n = 0;
    b8(&b, 0x00);
    uint8_t se[] = {0x11, 0, 0, 0, 5, 0x1C, 0, 1, 'h'};
    bprops(&b, se, sizeof se);
    expect_ok(&b, 0xE0, 5, &p);
    assert_int_equal(p.u.disconnect.props.session_expiry, 5);
    assert_bytes(p.u.disconnect.props.server_reference, "h");
}

/* ---- encoding ---------------------------------------------------------------- */

/* Encodes, checks the exact size, decodes, re-encodes to the same bytes. */
static size_t rt(const struct tern_packet *p, uint8_t ver, struct tern_packet *out,
                 uint8_t *buf, size_t cap)
{
    size_t need = tern_codec_encode(p, ver, NULL, 0);
    assert_true(need > 0 && need <= cap);
    memset(buf, 0xAA, cap);
    assert_int_equal(tern_codec_encode(p, ver, buf, need - 1), need);
    assert_int_equal(buf[0], 0xAA); /* too small: nothing written */
    assert_int_equal(tern_codec_encode(p, ver, buf, cap), need);
    struct tern_codec_error e = {0, NULL};
    size_t flen;
    assert_int_equal(tern_codec_frame(buf, need, 0, &flen, &e), TERN_OK);
    assert_int_equal(flen, need);
    int rc = tern_codec_decode(buf, need, ver, out, &e);
    if (rc != TERN_OK) {
        print_error("round trip decode: %s\n", e.msg);
    }
    assert_int_equal(rc, TERN_OK);
    uint8_t again[512];
    assert_int_equal(tern_codec_encode(out, ver, again, sizeof again), need);
    assert_memory_equal(again, buf, need);
    return need;
}

static void expect_bytes(const struct tern_packet *p, uint8_t ver, const uint8_t *want,
                         size_t n)
{
    uint8_t out[256];
    assert_int_equal(tern_codec_encode(p, ver, out, sizeof out), n);
    assert_memory_equal(out, want, n);
}

static void test_encode_connect(void **state)
{
    (void)state;
    struct tern_packet p, q;
    uint8_t buf[512];
    memset(&p, 0, sizeof p);
    p.type = TERN_CONNECT;
    struct tern_connect *c = &p.u.connect;
    c->clean_start = true;
    c->keepalive_s = 30;
    c->client_id = S("client");
    c->will_flag = true;
    c->will_qos = 2;
    c->will_retain = true;
    c->will_topic = S("w/t");
    c->will_payload = S("gone");
    c->has_username = true;
    c->username = S("u");
    c->has_password = true;
    c->password = S("p");
    for (uint8_t ver = 3; ver <= 5; ver++) {
        rt(&p, ver, &q, buf, sizeof buf);
        assert_int_equal(q.u.connect.version, ver);
        assert_bytes(q.u.connect.protocol_name, ver == 3 ? "MQIsdp" : "MQTT");
        assert_int_equal(q.u.connect.will_qos, 2);
        assert_true(q.u.connect.will_retain && q.u.connect.clean_start);
        assert_bytes(q.u.connect.will_payload, "gone");
        assert_bytes(q.u.connect.password, "p");
    }
    c->props.mask = TERN_PROP_BIT(TERN_PROP_SESSION_EXPIRY) |
                    TERN_PROP_BIT(TERN_PROP_AUTH_METHOD) |
                    TERN_PROP_BIT(TERN_PROP_TOPIC_ALIAS_MAX);
    c->props.session_expiry = 0xFFFFFFFFu;
    c->props.auth_method = S("SCRAM-SHA-1");
    c->props.topic_alias_max = 100;
    c->will_props.mask = TERN_PROP_BIT(TERN_PROP_WILL_DELAY) |
                         TERN_PROP_BIT(TERN_PROP_CORRELATION_DATA) |
                         TERN_PROP_BIT(TERN_PROP_RESPONSE_TOPIC);
    c->will_props.will_delay = 7;
    c->will_props.correlation_data = S("cd");
    c->will_props.response_topic = S("r/t");
    rt(&p, 5, &q, buf, sizeof buf);
    assert_int_equal(q.u.connect.props.session_expiry, 0xFFFFFFFFu);
    assert_int_equal(q.u.connect.props.topic_alias_max, 100);
    assert_bytes(q.u.connect.props.auth_method, "SCRAM-SHA-1");
    assert_int_equal(q.u.connect.will_props.will_delay, 7);
    assert_bytes(q.u.connect.will_props.response_topic, "r/t");
    /* 3.1.1 writes no properties */
    size_t n4 = rt(&p, 4, &q, buf, sizeof buf);
    assert_int_equal(q.u.connect.props.mask, 0);
    assert_true(n4 < tern_codec_encode(&p, 5, NULL, 0));
    /* unknown version cannot be encoded */
    assert_int_equal(tern_codec_encode(&p, 7, buf, sizeof buf), 0);
}

static void test_encode_connack(void **state)
{
    (void)state;
    struct tern_packet p, q;
    uint8_t buf[256];
    memset(&p, 0, sizeof p);
    p.type = TERN_CONNACK;
    p.u.connack.session_present = true;
    static const uint8_t v3[] = {0x20, 0x02, 0x01, 0x00};
    expect_bytes(&p, 4, v3, sizeof v3);
    static const uint8_t v5[] = {0x20, 0x03, 0x01, 0x00, 0x00};
    expect_bytes(&p, 5, v5, sizeof v5);
    p.u.connack.session_present = false;
    p.u.connack.reason = TERN_RC_NOT_AUTHORIZED; /* mapped for 3.1.1 */
    static const uint8_t v3na[] = {0x20, 0x02, 0x00, TERN_V3_NOT_AUTHORIZED};
    expect_bytes(&p, 4, v3na, sizeof v3na);
    p.u.connack.reason = TERN_RC_UNSUPPORTED_PROTOCOL_VERSION;
    static const uint8_t v3bp[] = {0x20, 0x02, 0x00, TERN_V3_BAD_PROTOCOL};
    expect_bytes(&p, 4, v3bp, sizeof v3bp);
    p.u.connack.reason = TERN_V3_ID_REJECTED; /* a 3.1.1 code is kept */
    rt(&p, 4, &q, buf, sizeof buf);
    assert_int_equal(q.u.connack.reason, TERN_V3_ID_REJECTED);

    p.u.connack.reason = 0;
    struct tern_props *pp = &p.u.connack.props;
    pp->mask = TERN_PROP_BIT(TERN_PROP_RECEIVE_MAX) | TERN_PROP_BIT(TERN_PROP_MAX_QOS) |
               TERN_PROP_BIT(TERN_PROP_RETAIN_AVAILABLE) |
               TERN_PROP_BIT(TERN_PROP_MAX_PACKET_SIZE) |
               TERN_PROP_BIT(TERN_PROP_ASSIGNED_CLIENT_ID) |
               TERN_PROP_BIT(TERN_PROP_WILDCARD_SUB_AVAILABLE) |
               TERN_PROP_BIT(TERN_PROP_SUB_ID_AVAILABLE) |
               TERN_PROP_BIT(TERN_PROP_SHARED_SUB_AVAILABLE) |
               TERN_PROP_BIT(TERN_PROP_SERVER_KEEPALIVE) |
               TERN_PROP_BIT(TERN_PROP_RESPONSE_INFO) |
               TERN_PROP_BIT(TERN_PROP_REASON_STRING);
    pp->receive_max = 65535;
    pp->max_qos = 1;
    pp->max_packet_size = 1u << 20;
    pp->assigned_client_id = S("auto-7");
    pp->server_keepalive = 60;
    pp->response_info = S("ri");
    pp->reason_string = S("welcome");
    /* 1+2 +1+1 +1+1 +1+4 +1+8 +1+1 +1+1 +1+1 +1+2 +1+4 +1+9 */
    assert_int_equal(tern_codec_props_size(pp),
                     3 + 2 + 2 + 5 + 9 + 2 + 2 + 2 + 3 + 5 + 10);
    rt(&p, 5, &q, buf, sizeof buf);
    assert_int_equal(q.u.connack.props.mask, pp->mask);
    assert_int_equal(q.u.connack.props.receive_max, 65535);
    assert_int_equal(q.u.connack.props.max_packet_size, 1u << 20);
    assert_bytes(q.u.connack.props.reason_string, "welcome");
}

static void test_encode_publish(void **state)
{
    (void)state;
    struct tern_packet p, q;
    uint8_t buf[512];
    memset(&p, 0, sizeof p);
    p.type = TERN_PUBLISH;
    p.u.publish.topic = S("a/b");
    p.u.publish.payload = S("hello");
    static const uint8_t q0[] = {0x30, 10, 0, 3, 'a', '/', 'b', 'h', 'e', 'l', 'l', 'o'};
    expect_bytes(&p, 4, q0, sizeof q0);
    static const uint8_t q0v5[] = {0x30, 11,  0,   3,   'a', '/', 'b',
                                   0,    'h', 'e', 'l', 'l', 'o'};
    expect_bytes(&p, 5, q0v5, sizeof q0v5);
    p.u.publish.qos = 2;
    p.u.publish.dup = true;
    p.u.publish.retain = true;
    p.u.publish.packet_id = 0x1234;
    for (uint8_t ver = 3; ver <= 5; ver++) {
        rt(&p, ver, &q, buf, sizeof buf);
        assert_int_equal(buf[0], 0x3D);
        assert_int_equal(q.u.publish.packet_id, 0x1234);
        assert_bytes(q.u.publish.payload, "hello");
    }
    struct tern_props *pp = &p.u.publish.props;
    pp->mask = TERN_PROP_BIT(TERN_PROP_SUBSCRIPTION_ID) |
               TERN_PROP_BIT(TERN_PROP_PAYLOAD_FORMAT) |
               TERN_PROP_BIT(TERN_PROP_MESSAGE_EXPIRY) |
               TERN_PROP_BIT(TERN_PROP_CONTENT_TYPE) |
               TERN_PROP_BIT(TERN_PROP_TOPIC_ALIAS);
    pp->sub_id_count = 3;
    pp->sub_ids[0] = 1;
    pp->sub_ids[1] = 128;
    pp->sub_ids[2] = 268435455;
    pp->payload_format = 1;
    pp->message_expiry = 3600;
    pp->content_type = S("json");
    pp->topic_alias = 4;
    rt(&p, 5, &q, buf, sizeof buf);
    assert_int_equal(q.u.publish.props.sub_id_count, 3);
    assert_int_equal(q.u.publish.props.sub_ids[2], 268435455);
    assert_int_equal(q.u.publish.props.message_expiry, 3600);
    assert_int_equal(q.u.publish.props.topic_alias, 4);
    p.u.publish.topic = S(""); /* alias only */
    rt(&p, 5, &q, buf, sizeof buf);
    assert_int_equal(q.u.publish.topic.len, 0);
    /* not encodable */
    pp->sub_ids[0] = 0;
    assert_int_equal(tern_codec_encode(&p, 5, buf, sizeof buf), 0);
    pp->sub_ids[0] = 1;
    p.u.publish.qos = 3;
    assert_int_equal(tern_codec_encode(&p, 5, buf, sizeof buf), 0);
    p.u.publish.qos = 0;
    p.u.publish.payload.ptr = NULL; /* never read: too large */
    p.u.publish.payload.len = TERN_MAX_REMAINING_LENGTH;
    assert_int_equal(tern_codec_encode(&p, 4, buf, sizeof buf), 0);
    p.u.publish.payload.len = TERN_MAX_REMAINING_LENGTH - 2; /* empty topic: the max */
    assert_int_equal(tern_codec_encode(&p, 4, buf, 0), 5 + TERN_MAX_REMAINING_LENGTH);
    p.u.publish.payload.len++;
    assert_int_equal(tern_codec_encode(&p, 4, buf, 0), 0);
    p.u.publish.payload.len = 0;
    p.u.publish.topic.len = 65536;
    assert_int_equal(tern_codec_encode(&p, 4, buf, sizeof buf), 0);
}

static void test_encode_acks(void **state)
{
    (void)state;
    struct tern_packet p, q;
    uint8_t buf[256];
    memset(&p, 0, sizeof p);
    p.type = TERN_PUBACK;
    p.u.ack.packet_id = 1;
    static const uint8_t short2[] = {0x40, 2, 0, 1};
    expect_bytes(&p, 4, short2, 4);
    expect_bytes(&p, 5, short2, 4);
    p.u.ack.reason = TERN_RC_NO_MATCHING_SUBSCRIBERS;
    expect_bytes(&p, 4, short2, 4); /* 3.1.1 has no reason */
    static const uint8_t short3[] = {0x40, 3, 0, 1, 0x10};
    expect_bytes(&p, 5, short3, 5);
    p.type = TERN_PUBREL;
    p.u.ack.reason = 0;
    static const uint8_t rel[] = {0x62, 2, 0, 1};
    expect_bytes(&p, 4, rel, 4);
    p.u.ack.props.mask = TERN_PROP_BIT(TERN_PROP_REASON_STRING);
    p.u.ack.props.reason_string = S("why");
    static const uint8_t full[] = {0x62, 10, 0, 1, 0, 6, 0x1F, 0, 3, 'w', 'h', 'y'};
    expect_bytes(&p, 5, full, sizeof full);
    static const uint8_t types[] = {TERN_PUBACK, TERN_PUBREC, TERN_PUBREL, TERN_PUBCOMP};
    for (size_t i = 0; i < 4; i++) {
        p.type = types[i];
        for (uint8_t ver = 4; ver <= 5; ver++) {
            rt(&p, ver, &q, buf, sizeof buf);
            assert_int_equal(q.type, types[i]);
            assert_int_equal(q.u.ack.packet_id, 1);
        }
        assert_bytes(q.u.ack.props.reason_string, "why");
    }
}

static void test_encode_sub_family(void **state)
{
    (void)state;
    struct tern_packet p, q;
    uint8_t buf[256], list[64];
    size_t n = 0;
    /* put_filter: size with cap 0, no write when it does not fit */
    memset(list, 0xEE, sizeof list);
    assert_int_equal(tern_codec_put_filter(list, 0, S("a/+"), 1), 6);
    assert_int_equal(tern_codec_put_filter(list, 5, S("a/+"), 1), 6);
    assert_int_equal(list[0], 0xEE);
    n += tern_codec_put_filter(list + n, sizeof list - n, S("a/+"), 1);
    n += tern_codec_put_filter(list + n, sizeof list - n, S("$share/g/#"), 0x22);
    assert_int_equal(n, 6 + 13);
    memset(&p, 0, sizeof p);
    p.type = TERN_SUBSCRIBE;
    p.u.sub.packet_id = 3;
    p.u.sub.list.ptr = list;
    p.u.sub.list.len = (uint32_t)n;
    p.u.sub.props.mask = TERN_PROP_BIT(TERN_PROP_SUBSCRIPTION_ID);
    p.u.sub.props.sub_ids[0] = 42;
    p.u.sub.props.sub_id_count = 1;
    rt(&p, 5, &q, buf, sizeof buf);
    assert_int_equal(buf[0], 0x82);
    assert_int_equal(q.u.sub.count, 2);
    assert_int_equal(q.u.sub.props.sub_ids[0], 42);
    uint32_t pos = 0;
    struct tern_bytes f;
    uint8_t opt = 0;
    assert_true(tern_codec_next_filter(&q.u.sub, TERN_SUBSCRIBE, &pos, &f, &opt));
    assert_bytes(f, "a/+");
    assert_int_equal(opt, 1);
    assert_true(tern_codec_next_filter(&q.u.sub, TERN_SUBSCRIBE, &pos, &f, &opt));
    assert_bytes(f, "$share/g/#");
    assert_int_equal(opt, 0x22);
    assert_false(tern_codec_next_filter(&q.u.sub, TERN_SUBSCRIBE, &pos, &f, &opt));

    /* 3.1.1 SUBSCRIBE: only QoS options */
    n = tern_codec_put_filter(list, sizeof list, S("x/#"), 2);
    p.u.sub.list.len = (uint32_t)n;
    rt(&p, 4, &q, buf, sizeof buf);
    assert_int_equal(q.u.sub.count, 1);

    /* UNSUBSCRIBE */
    n = tern_codec_put_filter(list, sizeof list, S("x/#"), -1);
    assert_int_equal(n, 5);
    n += tern_codec_put_filter(list + n, sizeof list - n, S("y"), -1);
    p.type = TERN_UNSUBSCRIBE;
    p.u.sub.list.len = (uint32_t)n;
    p.u.sub.props.mask = 0;
    for (uint8_t ver = 4; ver <= 5; ver++) {
        rt(&p, ver, &q, buf, sizeof buf);
        assert_int_equal(buf[0], 0xA2);
        assert_int_equal(q.u.sub.count, 2);
    }

    /* SUBACK: v5 codes mapped to 0x80 in 3.1.1 */
    static const uint8_t codes[] = {0x00, 0x01, 0x02, 0x87, 0x9E};
    p.type = TERN_SUBACK;
    p.u.sub.list.ptr = codes;
    p.u.sub.list.len = sizeof codes;
    static const uint8_t v3[] = {0x90, 7, 0, 3, 0, 1, 2, 0x80, 0x80};
    expect_bytes(&p, 4, v3, sizeof v3);
    rt(&p, 5, &q, buf, sizeof buf);
    assert_int_equal(q.u.sub.count, 5);
    assert_memory_equal(q.u.sub.list.ptr, codes, 5);
    rt(&p, 4, &q, buf, sizeof buf);

    /* UNSUBACK: 3.1.1 has no payload */
    static const uint8_t ucodes[] = {0x00, 0x11};
    p.type = TERN_UNSUBACK;
    p.u.sub.list.ptr = ucodes;
    p.u.sub.list.len = 2;
    static const uint8_t u3[] = {0xB0, 2, 0, 3};
    expect_bytes(&p, 4, u3, sizeof u3);
    static const uint8_t u5[] = {0xB0, 5, 0, 3, 0, 0, 0x11};
    expect_bytes(&p, 5, u5, sizeof u5);
    rt(&p, 5, &q, buf, sizeof buf);
    rt(&p, 4, &q, buf, sizeof buf);
}

static void test_encode_disconnect_auth_ping(void **state)
{
    (void)state;
    struct tern_packet p, q;
    uint8_t buf[256];
    memset(&p, 0, sizeof p);
    p.type = TERN_PINGREQ;
    static const uint8_t ping[] = {0xC0, 0};
    expect_bytes(&p, 4, ping, 2);
    p.type = TERN_PINGRESP;
    static const uint8_t pong[] = {0xD0, 0};
    expect_bytes(&p, 5, pong, 2);
    p.type = TERN_DISCONNECT;
    static const uint8_t d0[] = {0xE0, 0};
    expect_bytes(&p, 4, d0, 2);
    expect_bytes(&p, 5, d0, 2);
    p.u.disconnect.reason = TERN_RC_SESSION_TAKEN_OVER;
    expect_bytes(&p, 4, d0, 2); /* 3.1.1 DISCONNECT is empty */
    static const uint8_t d1[] = {0xE0, 1, 0x8E};
    expect_bytes(&p, 5, d1, 3);
    p.u.disconnect.props.mask = TERN_PROP_BIT(TERN_PROP_SERVER_REFERENCE);
    p.u.disconnect.props.server_reference = S("other:1883");
    rt(&p, 5, &q, buf, sizeof buf);
    assert_int_equal(q.u.disconnect.reason, 0x8E);
    assert_bytes(q.u.disconnect.props.server_reference, "other:1883");

    memset(&p, 0, sizeof p);
    p.type = TERN_AUTH;
    assert_int_equal(tern_codec_encode(&p, 4, buf, sizeof buf), 0); /* v5 only */
    static const uint8_t a0[] = {0xF0, 0};
    expect_bytes(&p, 5, a0, 2);
    p.u.disconnect.reason = TERN_RC_CONTINUE_AUTH;
    static const uint8_t a1[] = {0xF0, 2, 0x18, 0};
    expect_bytes(&p, 5, a1, 4); /* never the 1-byte form */
    rt(&p, 5, &q, buf, sizeof buf);
    p.u.disconnect.props.mask =
        TERN_PROP_BIT(TERN_PROP_AUTH_METHOD) | TERN_PROP_BIT(TERN_PROP_AUTH_DATA);
    p.u.disconnect.props.auth_method = S("SCRAM");
    p.u.disconnect.props.auth_data = S("\x01\x02");
    rt(&p, 5, &q, buf, sizeof buf);
    assert_int_equal(q.u.disconnect.reason, TERN_RC_CONTINUE_AUTH);
    assert_bytes(q.u.disconnect.props.auth_data, "\x01\x02");

    p.type = 0; /* not a packet */
    assert_int_equal(tern_codec_encode(&p, 5, buf, sizeof buf), 0);
}

static void test_props_size(void **state)
{
    (void)state;
    struct tern_props pp;
    memset(&pp, 0, sizeof pp);
    assert_int_equal(tern_codec_props_size(&pp), 0);
    pp.mask = TERN_PROP_BIT(TERN_PROP_REASON_STRING);
    pp.reason_string = S("abc");
    assert_int_equal(tern_codec_props_size(&pp), 6);
    static const uint8_t user[] = {0x26, 0, 1, 'k', 0, 1, 'v'};
    pp.user.ptr = user;
    pp.user.len = sizeof user;
    assert_int_equal(tern_codec_props_size(&pp), 13);
    pp.mask |= TERN_PROP_BIT(TERN_PROP_SUBSCRIPTION_ID);
    pp.sub_id_count = 2;
    pp.sub_ids[0] = 127;
    pp.sub_ids[1] = 16384;
    assert_int_equal(tern_codec_props_size(&pp), 13 + 2 + 4);
    /* a bare mask bit for an undefined id is ignored */
    pp.mask |= TERN_PROP_BIT(0x3F);
    assert_int_equal(tern_codec_props_size(&pp), 19);
}

/* Large property block: a 2-byte property length VBI round-trips. */
static void test_large_props(void **state)
{
    (void)state;
    static uint8_t big[300];
    memset(big, 'x', sizeof big);
    struct tern_packet p, q;
    static uint8_t buf[1024];
    memset(&p, 0, sizeof p);
    p.type = TERN_PUBLISH;
    p.u.publish.topic = S("t");
    p.u.publish.props.mask = TERN_PROP_BIT(TERN_PROP_CORRELATION_DATA);
    p.u.publish.props.correlation_data.ptr = big;
    p.u.publish.props.correlation_data.len = sizeof big;
    size_t need = tern_codec_encode(&p, 5, NULL, 0);
    assert_int_equal(need, 1 + 2 + 3 + 2 + 3 + sizeof big);
    assert_int_equal(tern_codec_encode(&p, 5, buf, sizeof buf), need);
    struct tern_codec_error e;
    assert_int_equal(tern_codec_decode(buf, need, 5, &q, &e), TERN_OK);
    assert_int_equal(q.u.publish.props.correlation_data.len, sizeof big);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vbi_boundaries),
        cmocka_unit_test(test_utf8),
        cmocka_unit_test(test_frame_partial),
        cmocka_unit_test(test_frame_errors),
        cmocka_unit_test(test_decode_length_mismatch),
        cmocka_unit_test(test_connect_spec_example),
        cmocka_unit_test(test_connect_versions),
        cmocka_unit_test(test_connect_errors),
        cmocka_unit_test(test_connect_will_props),
        cmocka_unit_test(test_props_errors),
        cmocka_unit_test(test_props_errors_per_packet),
        cmocka_unit_test(test_user_props),
        cmocka_unit_test(test_publish_decode),
        cmocka_unit_test(test_publish_errors),
        cmocka_unit_test(test_acks),
        cmocka_unit_test(test_subscribe_filters),
        cmocka_unit_test(test_subscribe_errors),
        cmocka_unit_test(test_unsubscribe),
        cmocka_unit_test(test_sub_acks_decode),
        cmocka_unit_test(test_connack_decode),
        cmocka_unit_test(test_disconnect_auth_ping),
        cmocka_unit_test(test_encode_connect),
        cmocka_unit_test(test_encode_connack),
        cmocka_unit_test(test_encode_publish),
        cmocka_unit_test(test_encode_acks),
        cmocka_unit_test(test_encode_sub_family),
        cmocka_unit_test(test_encode_disconnect_auth_ping),
        cmocka_unit_test(test_props_size),
        cmocka_unit_test(test_large_props),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
