/* Unit tests for the command codec (storage/cmd.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tern/cmd.h"
#include "tern/error.h"

#define B(s) ((struct tern_bytes){(const uint8_t *)(s), (uint32_t)strlen(s)})

static const uint8_t user_props[] = {0x26, 0, 1, 'k', 0, 1, 'v'};

static struct tern_cmd_msg make_msg(bool all)
{
    struct tern_cmd_msg m = {
        .topic = B("sport/tennis"),
        .payload = B("payload bytes"),
        .qos = 2,
        .retain = true,
    };
    if (all) {
        m.flags = TERN_MSG_HAS_PAYLOAD_FORMAT | TERN_MSG_HAS_EXPIRY |
                  TERN_MSG_HAS_CONTENT_TYPE | TERN_MSG_HAS_RESPONSE_TOPIC |
                  TERN_MSG_HAS_CORRELATION;
        m.payload_format = 1;
        m.expiry_s = 3600;
        m.content_type = B("text/plain");
        m.response_topic = B("reply/here");
        m.correlation_data = B("\x01\x02\x03");
        m.user = (struct tern_bytes){user_props, sizeof(user_props)};
    }
    return m;
}

/* Storage for a SUBSCRIBE list built with tern_cmd_put_sub(). */
static uint8_t sub_list[256];

static struct tern_bytes make_sub_list(uint32_t *count, bool unsubscribe)
{
    struct tern_cmd_sub e[3] = {
        {.filter = B("a/+/c"), .options = 0x2d, .sub_id = 7},
        {.filter = B("$share/g/x/#"), .options = 0x01, .sub_id = 0},
        {.filter = B(""), .options = 0, .sub_id = 268435455},
    };
    size_t n = 0;
    for (int i = 0; i < 3; i++) {
        if (unsubscribe) {
            e[i].options = 0;
            e[i].sub_id = 0;
        }
        size_t need = tern_cmd_put_sub(sub_list + n, sizeof(sub_list) - n, &e[i]);
        assert_int_equal(need, 7 + e[i].filter.len);
        n += need;
    }
    *count = 3;
    return (struct tern_bytes){sub_list, (uint32_t)n};
}

static uint8_t group_list[64];

/* Two shared filters, as a PUBLISH delivery selection lists them. */
static struct tern_bytes make_group_list(uint16_t *count)
{
    size_t n = tern_cmd_put_group(group_list, sizeof(group_list), B("$share/g/a/#"));
    n += tern_cmd_put_group(group_list + n, sizeof(group_list) - n, B("$share/h/+"));
    *count = 2;
    return (struct tern_bytes){group_list, (uint32_t)n};
}

/* Every command type, with optional fields on (all = true) and off. */
static struct tern_cmd make_cmd(uint8_t type, bool all)
{
    struct tern_cmd c = {.type = type,
                         .now_ms = all ? 0x0102030405060708ULL : 1,
                         .proposal_id = all ? (3ULL << 40) | 99 : 0};
    switch (type) {
    case TERN_CMD_SESSION_OPEN:
        c.u.open.client_id = B("client-1");
        c.u.open.node = 3;
        c.u.open.proto = all ? 5 : 4;
        c.u.open.clean_start = all;
        c.u.open.expiry_s = all ? UINT32_MAX : 0;
        c.u.open.receive_max = 65535;
        c.u.open.has_will = all;
        if (all) {
            c.u.open.will_delay_s = 30;
            c.u.open.will = make_msg(true);
        }
        break;
    case TERN_CMD_SESSION_CLOSE:
        c.u.close.client_id = B("client-1");
        c.u.close.epoch = UINT64_MAX;
        c.u.close.expiry_s = 10;
        c.u.close.publish_will = all;
        break;
    case TERN_CMD_SUBSCRIBE:
    case TERN_CMD_UNSUBSCRIBE:
        c.u.sub.client_id = B("c");
        c.u.sub.epoch = 5;
        c.u.sub.packet_id = 42;
        if (all)
            c.u.sub.list = make_sub_list(&c.u.sub.count, type == TERN_CMD_UNSUBSCRIBE);
        break;
    case TERN_CMD_PUBLISH:
        c.u.publish.client_id = B("pub");
        c.u.publish.epoch = 2;
        c.u.publish.inbound_packet_id = all ? 7 : 0;
        c.u.publish.msg = make_msg(all);
        if (all) {
            c.u.publish.select = TERN_PUB_GROUPS | TERN_PUB_NO_PLAIN;
            c.u.publish.groups = make_group_list(&c.u.publish.group_count);
        }
        break;
    case TERN_CMD_ACK:
        c.u.ack.client_id = B("c");
        c.u.ack.epoch = 9;
        c.u.ack.packet_id = 1;
        c.u.ack.kind = all ? TERN_PUBREC : TERN_PUBACK;
        c.u.ack.reason = all ? 0x80 : 0;
        break;
    case TERN_CMD_PUBREL:
        c.u.pubrel.client_id = B("c");
        c.u.pubrel.epoch = 9;
        c.u.pubrel.packet_id = 65535;
        break;
    case TERN_CMD_TICK:
    case TERN_CMD_BARRIER:
    case TERN_CMD_ORIGIN_START:
        break;
    case TERN_CMD_SESSION_DELETE:
        c.u.del.client_id = all ? B("kick-me") : B("");
        break;
    case TERN_CMD_RETAIN_DELETE:
        c.u.retain_delete.topic = B("a/b");
        break;
    case TERN_CMD_NODE_DOWN:
        c.u.node_down.node = all ? UINT32_MAX : 7;
        break;
    case TERN_CMD_ROUTE_ADD:
    case TERN_CMD_ROUTE_DEL:
        c.u.route.node = all ? 0x01020304 : 0;
        c.u.route.filter = all ? B("$share/g/a/+/#") : B("x");
        break;
    case TERN_CMD_MEMBER_SET:
        c.u.member.id = all ? TERN_NODE_ID_MAX : 4;
        c.u.member.raft = B("127.0.0.1:7004");
        c.u.member.peer = all ? B("127.0.0.1:7104") : B("");
        c.u.member.mqtt = all ? B("127.0.0.1:1887") : B("");
        break;
    case TERN_CMD_MEMBER_DEL:
        c.u.member.id = all ? TERN_NODE_ID_MAX : 1;
        break;
    case TERN_CMD_LIMITS:
        c.u.limits.inflight_max = all ? 65535 : 1;
        c.u.limits.queue_max = all ? UINT32_MAX : 1;
        c.u.limits.queue_bytes_max = all ? UINT64_MAX : 1;
        c.u.limits.queue_qos0 = all;
        c.u.limits.drop_policy = all ? 1 : 0;
        c.u.limits.retained_max = all ? UINT32_MAX : 0;
        c.u.limits.retained_bytes_max = all ? UINT64_MAX : 0;
        c.u.limits.session_expiry_max_s = all ? UINT32_MAX : 0;
        c.u.limits.message_expiry_max_s = all ? 7 : 0;
        c.u.limits.sessions_max = all ? UINT32_MAX : 1;
        break;
    case TERN_CMD_CLUSTER_ID:
        c.u.cluster_id.id = all ? UINT64_MAX : 1;
        break;
    }
    return c;
}

static void bytes_eq(struct tern_bytes a, struct tern_bytes b)
{
    assert_int_equal(a.len, b.len);
    if (a.len)
        assert_memory_equal(a.ptr, b.ptr, a.len);
}

static void msg_eq(const struct tern_cmd_msg *a, const struct tern_cmd_msg *b)
{
    bytes_eq(a->topic, b->topic);
    bytes_eq(a->payload, b->payload);
    assert_int_equal(a->qos, b->qos);
    assert_int_equal(a->retain, b->retain);
    assert_int_equal(a->flags, b->flags);
    assert_int_equal(a->payload_format, b->payload_format);
    assert_int_equal(a->expiry_s, b->expiry_s);
    bytes_eq(a->content_type, b->content_type);
    bytes_eq(a->response_topic, b->response_topic);
    bytes_eq(a->correlation_data, b->correlation_data);
    bytes_eq(a->user, b->user);
}

static void cmd_eq(const struct tern_cmd *a, const struct tern_cmd *b)
{
    assert_int_equal(a->type, b->type);
    assert_int_equal(a->now_ms, b->now_ms);
    assert_int_equal(a->proposal_id, b->proposal_id);
    switch (a->type) {
    case TERN_CMD_SESSION_OPEN:
        bytes_eq(a->u.open.client_id, b->u.open.client_id);
        assert_int_equal(a->u.open.node, b->u.open.node);
        assert_int_equal(a->u.open.proto, b->u.open.proto);
        assert_int_equal(a->u.open.clean_start, b->u.open.clean_start);
        assert_int_equal(a->u.open.expiry_s, b->u.open.expiry_s);
        assert_int_equal(a->u.open.receive_max, b->u.open.receive_max);
        assert_int_equal(a->u.open.has_will, b->u.open.has_will);
        assert_int_equal(a->u.open.will_delay_s, b->u.open.will_delay_s);
        msg_eq(&a->u.open.will, &b->u.open.will);
        break;
    case TERN_CMD_SESSION_CLOSE:
        bytes_eq(a->u.close.client_id, b->u.close.client_id);
        assert_int_equal(a->u.close.epoch, b->u.close.epoch);
        assert_int_equal(a->u.close.expiry_s, b->u.close.expiry_s);
        assert_int_equal(a->u.close.publish_will, b->u.close.publish_will);
        break;
    case TERN_CMD_SUBSCRIBE:
    case TERN_CMD_UNSUBSCRIBE:
        bytes_eq(a->u.sub.client_id, b->u.sub.client_id);
        assert_int_equal(a->u.sub.epoch, b->u.sub.epoch);
        assert_int_equal(a->u.sub.packet_id, b->u.sub.packet_id);
        assert_int_equal(a->u.sub.count, b->u.sub.count);
        bytes_eq(a->u.sub.list, b->u.sub.list);
        break;
    case TERN_CMD_PUBLISH:
        bytes_eq(a->u.publish.client_id, b->u.publish.client_id);
        assert_int_equal(a->u.publish.epoch, b->u.publish.epoch);
        assert_int_equal(a->u.publish.inbound_packet_id, b->u.publish.inbound_packet_id);
        msg_eq(&a->u.publish.msg, &b->u.publish.msg);
        assert_int_equal(a->u.publish.select, b->u.publish.select);
        assert_int_equal(a->u.publish.group_count, b->u.publish.group_count);
        bytes_eq(a->u.publish.groups, b->u.publish.groups);
        break;
    case TERN_CMD_ACK:
        bytes_eq(a->u.ack.client_id, b->u.ack.client_id);
        assert_int_equal(a->u.ack.epoch, b->u.ack.epoch);
        assert_int_equal(a->u.ack.packet_id, b->u.ack.packet_id);
        assert_int_equal(a->u.ack.kind, b->u.ack.kind);
        assert_int_equal(a->u.ack.reason, b->u.ack.reason);
        break;
    case TERN_CMD_PUBREL:
        bytes_eq(a->u.pubrel.client_id, b->u.pubrel.client_id);
        assert_int_equal(a->u.pubrel.epoch, b->u.pubrel.epoch);
        assert_int_equal(a->u.pubrel.packet_id, b->u.pubrel.packet_id);
        break;
    case TERN_CMD_SESSION_DELETE:
        bytes_eq(a->u.del.client_id, b->u.del.client_id);
        break;
    case TERN_CMD_RETAIN_DELETE:
        bytes_eq(a->u.retain_delete.topic, b->u.retain_delete.topic);
        break;
    case TERN_CMD_NODE_DOWN:
        assert_int_equal(a->u.node_down.node, b->u.node_down.node);
        break;
    case TERN_CMD_ROUTE_ADD:
    case TERN_CMD_ROUTE_DEL:
        assert_int_equal(a->u.route.node, b->u.route.node);
        bytes_eq(a->u.route.filter, b->u.route.filter);
        break;
    case TERN_CMD_MEMBER_SET:
        bytes_eq(a->u.member.raft, b->u.member.raft);
        bytes_eq(a->u.member.peer, b->u.member.peer);
        bytes_eq(a->u.member.mqtt, b->u.member.mqtt);
        /* fall through */
    case TERN_CMD_MEMBER_DEL:
        assert_int_equal(a->u.member.id, b->u.member.id);
        break;
    case TERN_CMD_LIMITS:
        assert_int_equal(a->u.limits.inflight_max, b->u.limits.inflight_max);
        assert_int_equal(a->u.limits.queue_max, b->u.limits.queue_max);
        assert_int_equal(a->u.limits.queue_bytes_max, b->u.limits.queue_bytes_max);
        assert_int_equal(a->u.limits.queue_qos0, b->u.limits.queue_qos0);
        assert_int_equal(a->u.limits.drop_policy, b->u.limits.drop_policy);
        assert_int_equal(a->u.limits.retained_max, b->u.limits.retained_max);
        assert_int_equal(a->u.limits.retained_bytes_max, b->u.limits.retained_bytes_max);
        assert_int_equal(a->u.limits.session_expiry_max_s,
                         b->u.limits.session_expiry_max_s);
        assert_int_equal(a->u.limits.message_expiry_max_s,
                         b->u.limits.message_expiry_max_s);
        assert_int_equal(a->u.limits.sessions_max, b->u.limits.sessions_max);
        break;
    case TERN_CMD_CLUSTER_ID:
        assert_int_equal(a->u.cluster_id.id, b->u.cluster_id.id);
        break;
    }
}

/* Encodes into an exact-size heap buffer (so ASan sees any overrun). */
static uint8_t *encode_heap(const struct tern_cmd *c, size_t *len)
{
    size_t need = tern_cmd_encode(c, NULL, 0);
    assert_true(need >= 18);
    uint8_t *buf = malloc(need);
    assert_non_null(buf);
    assert_int_equal(tern_cmd_encode(c, buf, need), need);
    *len = need;
    return buf;
}

static void test_round_trip_all(void **state)
{
    (void)state;
    for (uint8_t type = TERN_CMD_SESSION_OPEN; type <= TERN_CMD_TYPE_MAX; type++) {
        for (int all = 0; all <= 1; all++) {
            struct tern_cmd in = make_cmd(type, all);
            size_t len;
            uint8_t *buf = encode_heap(&in, &len);
            /* The oldest version that holds it: 2 only for a selection. */
            assert_int_equal(buf[0], type == TERN_CMD_PUBLISH && all ? 2 : 1);
            assert_int_equal(buf[1], type);
            struct tern_cmd out;
            size_t used = 0;
            char err[TERN_ERRMSG_SIZE];
            assert_int_equal(tern_cmd_decode(buf, len, &out, &used, err), TERN_OK);
            assert_int_equal(used, len);
            cmd_eq(&in, &out);
            /* Zero-copy: strings point into the buffer. */
            if (type == TERN_CMD_PUBLISH) {
                assert_true(out.u.publish.msg.topic.ptr > buf);
                assert_true(out.u.publish.msg.topic.ptr < buf + len);
            }
            /* Canonical: re-encoding gives the same bytes. */
            size_t len2;
            uint8_t *buf2 = encode_heap(&out, &len2);
            assert_int_equal(len2, len);
            assert_memory_equal(buf, buf2, len);
            free(buf2);
            free(buf);
        }
    }
}

/* Optional message fields one at a time. */
static void test_msg_flags_each(void **state)
{
    (void)state;
    for (uint8_t bit = 1; bit <= 0x10; bit <<= 1) {
        struct tern_cmd in = make_cmd(TERN_CMD_PUBLISH, true);
        in.u.publish.msg.flags = bit;
        size_t len;
        uint8_t *buf = encode_heap(&in, &len);
        struct tern_cmd out;
        size_t used;
        assert_int_equal(tern_cmd_decode(buf, len, &out, &used, NULL), TERN_OK);
        assert_int_equal(out.u.publish.msg.flags, bit);
        /* Absent fields decode as zero, whatever the encoder was given. */
        assert_int_equal(out.u.publish.msg.expiry_s,
                         bit == TERN_MSG_HAS_EXPIRY ? 3600 : 0);
        assert_int_equal(out.u.publish.msg.payload_format,
                         bit == TERN_MSG_HAS_PAYLOAD_FORMAT ? 1 : 0);
        assert_int_equal(out.u.publish.msg.content_type.len,
                         bit == TERN_MSG_HAS_CONTENT_TYPE ? 10 : 0);
        assert_int_equal(out.u.publish.msg.response_topic.len,
                         bit == TERN_MSG_HAS_RESPONSE_TOPIC ? 10 : 0);
        assert_int_equal(out.u.publish.msg.correlation_data.len,
                         bit == TERN_MSG_HAS_CORRELATION ? 3 : 0);
        assert_int_equal(out.u.publish.msg.user.len, sizeof(user_props));
        free(buf);
    }
}

static void test_truncation(void **state)
{
    (void)state;
    for (uint8_t type = TERN_CMD_SESSION_OPEN; type <= TERN_CMD_TYPE_MAX; type++) {
        for (int all = 0; all <= 1; all++) {
            struct tern_cmd in = make_cmd(type, all);
            size_t len;
            uint8_t *full = encode_heap(&in, &len);
            for (size_t k = 0; k < len; k++) {
                uint8_t *cut = malloc(k ? k : 1);
                memcpy(cut, full, k);
                struct tern_cmd out;
                size_t used = 12345;
                char err[TERN_ERRMSG_SIZE] = "";
                int rc = tern_cmd_decode(cut, k, &out, &used, err);
                if (rc != TERN_EMALFORMED)
                    fail_msg("type %u all %d cut %zu: rc %d", type, all, k, rc);
                assert_int_equal(used, 12345); /* untouched on failure */
                assert_true(strlen(err) > 0);
                free(cut);
            }
            free(full);
        }
    }
    struct tern_cmd out;
    size_t used;
    assert_int_equal(tern_cmd_decode(NULL, 0, &out, &used, NULL), TERN_EMALFORMED);
}

static void test_small_cap(void **state)
{
    (void)state;
    struct tern_cmd in = make_cmd(TERN_CMD_SESSION_OPEN, true);
    size_t need = tern_cmd_encode(&in, NULL, 0);
    uint8_t *buf = malloc(need + 16);
    for (size_t cap = 0; cap < need; cap++) {
        memset(buf, 0xAA, need + 16);
        assert_int_equal(tern_cmd_encode(&in, buf, cap), need);
        for (size_t i = 0; i < need + 16; i++)
            assert_int_equal(buf[i], 0xAA);
    }
    memset(buf, 0xAA, need + 16);
    assert_int_equal(tern_cmd_encode(&in, buf, need + 16), need);
    assert_int_equal(buf[need], 0xAA);
    free(buf);
}

/* The exact bytes of two records: pins the layout docs/commands.md describes. */
static void test_golden(void **state)
{
    (void)state;
    struct tern_cmd tick = {
        .type = TERN_CMD_TICK, .now_ms = 0x1122334455667788ULL, .proposal_id = 0x0102};
    static const uint8_t tick_bytes[] = {1,    8,    0x88, 0x77, 0x66, 0x55,
                                         0x44, 0x33, 0x22, 0x11, 0x02, 0x01,
                                         0,    0,    0,    0,    0,    0};
    uint8_t buf[64];
    assert_int_equal(tern_cmd_encode(&tick, buf, sizeof(buf)), sizeof(tick_bytes));
    assert_memory_equal(buf, tick_bytes, sizeof(tick_bytes));

    struct tern_cmd ack = {.type = TERN_CMD_ACK, .now_ms = 1, .proposal_id = 2};
    ack.u.ack.client_id = B("ab");
    ack.u.ack.epoch = 0x0304;
    ack.u.ack.packet_id = 0x0506;
    ack.u.ack.kind = TERN_PUBCOMP;
    ack.u.ack.reason = 0x92;
    static const uint8_t ack_bytes[] = {1, 6,   1,   0,   0, 0, 0, 0, 0,
                                        0, 2,   0,   0,   0, 0, 0, 0, 0, /* header */
                                        2, 0,   'a', 'b',                /* client_id */
                                        4, 3,   0,   0,   0, 0, 0, 0,    /* epoch */
                                        6, 5,                            /* packet_id */
                                        7, 0x92}; /* kind, reason */
    assert_int_equal(tern_cmd_encode(&ack, buf, sizeof(buf)), sizeof(ack_bytes));
    assert_memory_equal(buf, ack_bytes, sizeof(ack_bytes));

    struct tern_cmd down = {.type = TERN_CMD_NODE_DOWN, .now_ms = 1};
    down.u.node_down.node = 0x0A0B0C0D;
    static const uint8_t down_bytes[] = {
        1, 11, 1, 0, 0, 0, 0, 0,    0,    0,    0,
        0, 0,  0, 0, 0, 0, 0, 0x0D, 0x0C, 0x0B, 0x0A}; /* node */
    assert_int_equal(tern_cmd_encode(&down, buf, sizeof(buf)), sizeof(down_bytes));
    assert_memory_equal(buf, down_bytes, sizeof(down_bytes));

    struct tern_cmd route = {.type = TERN_CMD_ROUTE_ADD, .now_ms = 1};
    route.u.route.node = 2;
    route.u.route.filter = B("a/#");
    static const uint8_t route_bytes[] = {1, 12, 1,   0,   0,  0, 0, 0, 0, 0, 0, 0,
                                          0, 0,  0,   0,   0,  0, 2, 0, 0, 0, /* node */
                                          3, 0,  'a', '/', '#'};              /* filter */
    assert_int_equal(tern_cmd_encode(&route, buf, sizeof(buf)), sizeof(route_bytes));
    assert_memory_equal(buf, route_bytes, sizeof(route_bytes));
    route.type = TERN_CMD_ROUTE_DEL;
    assert_int_equal(tern_cmd_encode(&route, buf, sizeof(buf)), sizeof(route_bytes));
    assert_int_equal(buf[1], 13);

    /* CLUSTER_ID: version 1 (docs/commands.md), the id a u64 after the header. */
    struct tern_cmd cid = {.type = TERN_CMD_CLUSTER_ID, .now_ms = 1, .proposal_id = 2};
    cid.u.cluster_id.id = 0x5f0e8c1a9b3d7e21ULL;
    static const uint8_t cid_bytes[] = {1,    19,   1,    0,    0,    0,    0,    0,   0,
                                        0,    2,    0,    0,    0,    0,    0,    0,   0,
                                        0x21, 0x7e, 0x3d, 0x9b, 0x1a, 0x8c, 0x0e, 0x5f};
    assert_int_equal(tern_cmd_encode(&cid, buf, sizeof(buf)), sizeof(cid_bytes));
    assert_memory_equal(buf, cid_bytes, sizeof(cid_bytes));
    struct tern_cmd back;
    size_t used = 0;
    assert_int_equal(tern_cmd_decode(cid_bytes, sizeof(cid_bytes), &back, &used, NULL),
                     TERN_OK);
    assert_int_equal(used, sizeof(cid_bytes));
    assert_int_equal(back.type, TERN_CMD_CLUSTER_ID);
    assert_int_equal(back.u.cluster_id.id, 0x5f0e8c1a9b3d7e21ULL);
}

static int decode_mutated(const struct tern_cmd *in, size_t at, uint8_t value)
{
    size_t len;
    uint8_t *buf = encode_heap(in, &len);
    assert_true(at < len);
    buf[at] = value;
    struct tern_cmd out;
    size_t used;
    char err[TERN_ERRMSG_SIZE];
    int rc = tern_cmd_decode(buf, len, &out, &used, err);
    free(buf);
    return rc;
}

/* PUBLISH delivery selection: version 2 exactly when it is set, only known and
 * coherent bits, a group list of exactly group_count entries. */
static void test_publish_select(void **state)
{
    (void)state;
    struct tern_cmd in = make_cmd(TERN_CMD_PUBLISH, true);
    size_t len;
    uint8_t *buf = encode_heap(&in, &len);
    struct tern_cmd out;
    size_t used;
    assert_int_equal(tern_cmd_decode(buf, len, &out, &used, NULL), TERN_OK);
    uint32_t pos = 0;
    struct tern_bytes g;
    assert_true(tern_cmd_next_group(out.u.publish.groups, &pos, &g));
    assert_int_equal(g.len, 12);
    assert_memory_equal(g.ptr, "$share/g/a/#", 12);
    assert_true(tern_cmd_next_group(out.u.publish.groups, &pos, &g));
    assert_memory_equal(g.ptr, "$share/h/+", 10);
    assert_false(tern_cmd_next_group(out.u.publish.groups, &pos, &g));
    /* Read as version 1, the record ends before the selection. */
    buf[0] = 1;
    assert_int_equal(tern_cmd_decode(buf, len, &out, &used, NULL), TERN_OK);
    assert_int_equal(used, len - 1 - 2 - 4 - in.u.publish.groups.len);
    assert_int_equal(out.u.publish.select, 0);
    free(buf);

    /* Only GROUPS, with an empty list: "no shared group here". */
    in.u.publish.select = TERN_PUB_GROUPS;
    in.u.publish.group_count = 0;
    in.u.publish.groups = (struct tern_bytes){NULL, 0};
    buf = encode_heap(&in, &len);
    assert_int_equal(buf[0], 2);
    assert_int_equal(tern_cmd_decode(buf, len, &out, &used, NULL), TERN_OK);
    assert_int_equal(out.u.publish.select, TERN_PUB_GROUPS);
    assert_int_equal(out.u.publish.group_count, 0);
    /* select is the byte before group_count (u16) and groups (u32 length). */
    size_t at = len - 7;
    buf[at] = 0; /* a zero selection is written as version 1 */
    assert_int_equal(tern_cmd_decode(buf, len, &out, &used, NULL), TERN_EMALFORMED);
    buf[at] = TERN_PUB_NO_PLAIN; /* NO_PLAIN without GROUPS */
    assert_int_equal(tern_cmd_decode(buf, len, &out, &used, NULL), TERN_EMALFORMED);
    buf[at] = TERN_PUB_GROUPS | 0x04; /* unknown bit */
    assert_int_equal(tern_cmd_decode(buf, len, &out, &used, NULL), TERN_EMALFORMED);
    buf[at] = TERN_PUB_GROUPS;
    buf[at + 1] = 1; /* one entry claimed, none there */
    assert_int_equal(tern_cmd_decode(buf, len, &out, &used, NULL), TERN_EMALFORMED);
    free(buf);

    /* The encoder refuses what it could not write back. */
    struct tern_cmd bad = make_cmd(TERN_CMD_PUBLISH, false);
    bad.u.publish.group_count = 1; /* a list without GROUPS */
    assert_int_equal(tern_cmd_encode(&bad, NULL, 0), 0);
    bad = make_cmd(TERN_CMD_PUBLISH, false);
    bad.u.publish.select = TERN_PUB_NO_PLAIN;
    assert_int_equal(tern_cmd_encode(&bad, NULL, 0), 0);
    bad.u.publish.select = TERN_PUB_GROUPS;
    bad.u.publish.group_count = 3; /* not what the list holds */
    bad.u.publish.groups = make_group_list(&(uint16_t){0});
    assert_int_equal(tern_cmd_encode(&bad, NULL, 0), 0);

    /* Another type at version 2 is not canonical either. */
    struct tern_cmd tick = make_cmd(TERN_CMD_TICK, false);
    assert_int_equal(decode_mutated(&tick, 0, 2), TERN_EMALFORMED);
}

static void test_rejects(void **state)
{
    (void)state;
    struct tern_cmd tick = make_cmd(TERN_CMD_TICK, false);
    assert_int_equal(decode_mutated(&tick, 0, 0), TERN_EUNSUPPORTED);
    assert_int_equal(decode_mutated(&tick, 0, TERN_CMD_VERSION + 1), TERN_EUNSUPPORTED);
    assert_int_equal(decode_mutated(&tick, 1, 0), TERN_EMALFORMED);
    assert_int_equal(decode_mutated(&tick, 1, TERN_CMD_TYPE_MAX + 1), TERN_EMALFORMED);
    assert_int_equal(decode_mutated(&tick, 1, 255), TERN_EMALFORMED);

    /* close: header 18 + client_id 2+8 + epoch 8 + expiry 4 -> publish_will at 40 */
    struct tern_cmd close = make_cmd(TERN_CMD_SESSION_CLOSE, true);
    assert_int_equal(decode_mutated(&close, 40, 1), TERN_OK);
    assert_int_equal(decode_mutated(&close, 40, 2), TERN_EMALFORMED);

    /* ack: header 18 + client_id 3 + epoch 8 + packet_id 2 -> kind at 31 */
    struct tern_cmd ack = make_cmd(TERN_CMD_ACK, false);
    assert_int_equal(decode_mutated(&ack, 31, TERN_PUBCOMP), TERN_OK);
    assert_int_equal(decode_mutated(&ack, 31, TERN_PUBREL), TERN_EMALFORMED);

    /* open: header 18 + client_id 10 + node 4 -> proto at 32, flags at 33 */
    struct tern_cmd open = make_cmd(TERN_CMD_SESSION_OPEN, false);
    assert_int_equal(decode_mutated(&open, 32, 6), TERN_EMALFORMED);
    assert_int_equal(decode_mutated(&open, 33, 0x04), TERN_EMALFORMED);

    /* publish without options: header 18 + client_id 5 + epoch 8 + id 2 +
     * topic 14 + payload 4+13 -> qos at 64, retain 65, flags 66 */
    struct tern_cmd pub = make_cmd(TERN_CMD_PUBLISH, false);
    assert_int_equal(decode_mutated(&pub, 64, 3), TERN_EMALFORMED);
    assert_int_equal(decode_mutated(&pub, 65, 2), TERN_EMALFORMED);
    assert_int_equal(decode_mutated(&pub, 66, 0x20), TERN_EMALFORMED);

    /* The encoder refuses what the decoder would. */
    struct tern_cmd bad = pub;
    bad.u.publish.msg.qos = 3;
    assert_int_equal(tern_cmd_encode(&bad, NULL, 0), 0);
    bad = pub;
    bad.u.publish.msg.flags = 0x40;
    assert_int_equal(tern_cmd_encode(&bad, NULL, 0), 0);
    bad = pub;
    bad.type = 0;
    assert_int_equal(tern_cmd_encode(&bad, NULL, 0), 0);
    bad = ack;
    bad.u.ack.kind = 0;
    assert_int_equal(tern_cmd_encode(&bad, NULL, 0), 0);
    bad = pub;
    static uint8_t big[65536];
    bad.u.publish.client_id = (struct tern_bytes){big, sizeof(big)};
    assert_int_equal(tern_cmd_encode(&bad, NULL, 0), 0);
    bad.u.publish.client_id = (struct tern_bytes){big, sizeof(big) - 1};
    assert_int_equal(tern_cmd_encode(&bad, NULL, 0),
                     18 + 2 + 65535 + 8 + 2 + 14 + 17 + 3 + 4);
    bad.u.publish.client_id = (struct tern_bytes){NULL, 3};
    assert_int_equal(tern_cmd_encode(&bad, NULL, 0), 0);
    /* Members: id 0 and over-long addresses are refused both ways. */
    struct tern_cmd mem = make_cmd(TERN_CMD_MEMBER_SET, false);
    mem.u.member.id = 0;
    assert_int_equal(tern_cmd_encode(&mem, NULL, 0), 0);
    mem.u.member.id = 4;
    mem.u.member.peer = (struct tern_bytes){big, TERN_MEMBER_ADDR_MAX + 1};
    assert_int_equal(tern_cmd_encode(&mem, NULL, 0), 0);
    mem.u.member.peer = (struct tern_bytes){big, TERN_MEMBER_ADDR_MAX};
    assert_true(tern_cmd_encode(&mem, NULL, 0) > 0);
    /* member_del: header 18 -> id at 18..21; ids beyond 24 bits are refused
     * (a proposal id keeps 24 bits of the node id). */
    struct tern_cmd del = make_cmd(TERN_CMD_MEMBER_DEL, false);
    assert_int_equal(decode_mutated(&del, 18, 0), TERN_EMALFORMED);
    assert_int_equal(decode_mutated(&del, 18, 2), TERN_OK);
    assert_int_equal(decode_mutated(&del, 21, 1), TERN_EMALFORMED);
    mem.u.member.id = TERN_NODE_ID_MAX + 1;
    assert_int_equal(tern_cmd_encode(&mem, NULL, 0), 0);

    /* limits: header 18 -> inflight_max 18..19, queue_max 20..23, queue_bytes_max
     * 24..31, queue_qos0 32, drop_policy 33, retained_max 34..37,
     * retained_bytes_max 38..45, expiry caps 46..53, sessions_max 54..57 */
    struct tern_cmd lim = make_cmd(TERN_CMD_LIMITS, false);
    size_t lim_len;
    uint8_t *lim_buf = encode_heap(&lim, &lim_len);
    assert_int_equal(lim_len, 58);
    free(lim_buf);
    assert_int_equal(decode_mutated(&lim, 18, 0), TERN_EMALFORMED);
    assert_int_equal(decode_mutated(&lim, 20, 0), TERN_EMALFORMED);
    assert_int_equal(decode_mutated(&lim, 24, 0), TERN_EMALFORMED);
    assert_int_equal(decode_mutated(&lim, 32, 2), TERN_EMALFORMED);
    assert_int_equal(decode_mutated(&lim, 33, 1), TERN_OK);
    assert_int_equal(decode_mutated(&lim, 33, 2), TERN_EMALFORMED);
    assert_int_equal(decode_mutated(&lim, 54, 0), TERN_EMALFORMED);
    struct tern_cmd badlim = lim;
    badlim.u.limits.drop_policy = 2;
    assert_int_equal(tern_cmd_encode(&badlim, NULL, 0), 0);
    badlim = lim;
    badlim.u.limits.inflight_max = 0;
    assert_int_equal(tern_cmd_encode(&badlim, NULL, 0), 0);

    /* cluster_id: header 18 -> id 18..25, never 0; a version 2 record of it is
     * not canonical. */
    struct tern_cmd cid = make_cmd(TERN_CMD_CLUSTER_ID, false); /* id 1 */
    assert_int_equal(decode_mutated(&cid, 18, 0), TERN_EMALFORMED);
    assert_int_equal(decode_mutated(&cid, 25, 1), TERN_OK);
    assert_int_equal(decode_mutated(&cid, 0, 2), TERN_EMALFORMED);
    cid.u.cluster_id.id = 0;
    assert_int_equal(tern_cmd_encode(&cid, NULL, 0), 0);
    /* A large payload uses the u32 length. */
    bad = pub;
    bad.u.publish.msg.payload = (struct tern_bytes){big, sizeof(big)};
    size_t len;
    uint8_t *buf = encode_heap(&bad, &len);
    struct tern_cmd out;
    size_t used;
    assert_int_equal(tern_cmd_decode(buf, len, &out, &used, NULL), TERN_OK);
    assert_int_equal(out.u.publish.msg.payload.len, sizeof(big));
    free(buf);
}

static void test_sub_list_validation(void **state)
{
    (void)state;
    struct tern_cmd sub = make_cmd(TERN_CMD_SUBSCRIBE, true);
    uint32_t count = sub.u.sub.count;
    /* Encoder: count must agree with the list. */
    sub.u.sub.count = count + 1;
    assert_int_equal(tern_cmd_encode(&sub, NULL, 0), 0);
    sub.u.sub.count = count - 1;
    assert_int_equal(tern_cmd_encode(&sub, NULL, 0), 0);
    sub.u.sub.count = UINT32_MAX;
    assert_int_equal(tern_cmd_encode(&sub, NULL, 0), 0);
    sub.u.sub.count = count;
    struct tern_bytes list = sub.u.sub.list;
    sub.u.sub.list.len = list.len - 1; /* cuts the last entry */
    assert_int_equal(tern_cmd_encode(&sub, NULL, 0), 0);
    sub.u.sub.list = list;

    /* Decoder: count is at header 18 + client_id 3 + epoch 8 + packet_id 2 = 31. */
    assert_int_equal(decode_mutated(&sub, 31, (uint8_t)(count + 1)), TERN_EMALFORMED);
    assert_int_equal(decode_mutated(&sub, 31, (uint8_t)(count - 1)), TERN_EMALFORMED);
    assert_int_equal(decode_mutated(&sub, 31, 0), TERN_EMALFORMED);
    assert_int_equal(decode_mutated(&sub, 34, 0x80), TERN_EMALFORMED); /* huge count */
    /* First entry's filter length (list starts at 31 + 4 + 4 = 39) made too long. */
    assert_int_equal(decode_mutated(&sub, 39, 0xff), TERN_EMALFORMED);

    /* An empty list with count 0 is well formed. */
    struct tern_cmd empty = make_cmd(TERN_CMD_UNSUBSCRIBE, false);
    size_t len;
    uint8_t *buf = encode_heap(&empty, &len);
    struct tern_cmd out;
    size_t used;
    assert_int_equal(tern_cmd_decode(buf, len, &out, &used, NULL), TERN_OK);
    assert_int_equal(out.u.sub.count, 0);
    uint32_t pos = 0;
    struct tern_cmd_sub e;
    assert_false(tern_cmd_next_sub(out.u.sub.list, &pos, &e));
    free(buf);
}

static void test_list_put_next(void **state)
{
    (void)state;
    uint8_t buf[64];
    struct tern_cmd_sub a = {.filter = B("x/#"), .options = 0x11, .sub_id = 0x01020304};
    struct tern_cmd_sub b = {.filter = B("y"), .options = 2, .sub_id = 0};
    size_t na = tern_cmd_put_sub(buf, sizeof(buf), &a);
    assert_int_equal(na, 10);
    static const uint8_t a_bytes[] = {3, 0, 'x', '/', '#', 0x11, 4, 3, 2, 1};
    assert_memory_equal(buf, a_bytes, sizeof(a_bytes));
    /* Too small: nothing written, size returned. */
    memset(buf + na, 0xAA, sizeof(buf) - na);
    assert_int_equal(tern_cmd_put_sub(buf + na, 7, &b), 8);
    assert_int_equal(buf[na], 0xAA);
    assert_int_equal(tern_cmd_put_sub(NULL, 0, &b), 8);
    size_t nb = tern_cmd_put_sub(buf + na, sizeof(buf) - na, &b);
    assert_int_equal(nb, 8);
    static uint8_t big[65536];
    struct tern_cmd_sub huge = {.filter = {big, sizeof(big)}};
    assert_int_equal(tern_cmd_put_sub(NULL, 0, &huge), 0);

    struct tern_bytes list = {buf, (uint32_t)(na + nb)};
    uint32_t pos = 0;
    struct tern_cmd_sub e;
    assert_true(tern_cmd_next_sub(list, &pos, &e));
    assert_int_equal(pos, na);
    bytes_eq(e.filter, a.filter);
    assert_int_equal(e.options, a.options);
    assert_int_equal(e.sub_id, a.sub_id);
    assert_true(tern_cmd_next_sub(list, &pos, &e));
    bytes_eq(e.filter, b.filter);
    assert_int_equal(e.sub_id, 0);
    assert_false(tern_cmd_next_sub(list, &pos, &e));
    assert_int_equal(pos, na + nb);

    /* A truncated list ends the walk without reading past it. */
    for (uint32_t cut = 1; cut < na; cut++) {
        uint8_t *p = malloc(cut);
        memcpy(p, buf, cut);
        pos = 0;
        assert_false(tern_cmd_next_sub((struct tern_bytes){p, cut}, &pos, &e));
        assert_int_equal(pos, 0);
        free(p);
    }
}

/* Records are self-delimiting: a batch is records back to back. */
static void test_batch(void **state)
{
    (void)state;
    uint8_t buf[1024];
    size_t n = 0;
    for (uint8_t type = TERN_CMD_SESSION_OPEN; type <= TERN_CMD_TYPE_MAX; type++) {
        struct tern_cmd c = make_cmd(type, type % 2);
        n += tern_cmd_encode(&c, buf + n, sizeof(buf) - n);
        assert_true(n <= sizeof(buf));
    }
    size_t pos = 0;
    for (uint8_t type = TERN_CMD_SESSION_OPEN; type <= TERN_CMD_TYPE_MAX; type++) {
        struct tern_cmd want = make_cmd(type, type % 2), got;
        size_t used;
        assert_int_equal(tern_cmd_decode(buf + pos, n - pos, &got, &used, NULL), TERN_OK);
        cmd_eq(&want, &got);
        pos += used;
    }
    assert_int_equal(pos, n);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_all), cmocka_unit_test(test_msg_flags_each),
        cmocka_unit_test(test_truncation),     cmocka_unit_test(test_small_cap),
        cmocka_unit_test(test_golden),         cmocka_unit_test(test_rejects),
        cmocka_unit_test(test_publish_select), cmocka_unit_test(test_sub_list_validation),
        cmocka_unit_test(test_list_put_next),  cmocka_unit_test(test_batch),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
