/* libFuzzer target for the MQTT codec: frames and decodes the input as each
 * protocol version; every packet that decodes is re-encoded, decoded again and
 * must come back equal, and encoding that copy must give the same bytes.
 *
 *   clang -fsanitize=fuzzer,address,undefined -Iinclude/base -Iinclude/state
 * -Iinclude/codec -Iinclude/auth -Iinclude/tls node/codec/codec*.c \
 *         tests/fuzz/fuzz_codec.c -o fuzz_codec
 *   ./fuzz_codec -max_total_time=60 tests/fuzz/corpus/codec
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tern/codec.h"

#define CHECK(c)                                                                         \
    do {                                                                                 \
        if (!(c)) {                                                                      \
            abort();                                                                     \
        }                                                                                \
    } while (0)

static void same_bytes(struct tern_bytes a, struct tern_bytes b)
{
    CHECK(a.len == b.len);
    CHECK(a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0);
}

/* Decoded user properties are only in raw: copy them to `user` for encoding. */
static void take_user(struct tern_props *p, uint8_t *buf)
{
    p->user.ptr = buf;
    p->user.len = (uint32_t)tern_props_user_extract(p, buf);
}

static void same_props(const struct tern_props *a, const struct tern_props *b)
{
    CHECK(a->mask == b->mask);
    CHECK(a->user_count == b->user_count);
    CHECK(a->sub_id_count == b->sub_id_count);
    CHECK(memcmp(a->sub_ids, b->sub_ids, sizeof a->sub_ids) == 0);
    CHECK(a->payload_format == b->payload_format);
    CHECK(a->message_expiry == b->message_expiry);
    CHECK(a->session_expiry == b->session_expiry);
    CHECK(a->server_keepalive == b->server_keepalive);
    CHECK(a->request_problem_info == b->request_problem_info);
    CHECK(a->will_delay == b->will_delay);
    CHECK(a->request_response_info == b->request_response_info);
    CHECK(a->receive_max == b->receive_max);
    CHECK(a->topic_alias_max == b->topic_alias_max);
    CHECK(a->topic_alias == b->topic_alias);
    CHECK(a->max_qos == b->max_qos);
    CHECK(a->retain_available == b->retain_available);
    CHECK(a->max_packet_size == b->max_packet_size);
    CHECK(a->wildcard_sub_available == b->wildcard_sub_available);
    CHECK(a->sub_id_available == b->sub_id_available);
    CHECK(a->shared_sub_available == b->shared_sub_available);
    same_bytes(a->content_type, b->content_type);
    same_bytes(a->response_topic, b->response_topic);
    same_bytes(a->correlation_data, b->correlation_data);
    same_bytes(a->assigned_client_id, b->assigned_client_id);
    same_bytes(a->auth_method, b->auth_method);
    same_bytes(a->auth_data, b->auth_data);
    same_bytes(a->response_info, b->response_info);
    same_bytes(a->server_reference, b->server_reference);
    same_bytes(a->reason_string, b->reason_string);
}

static void same_connect(const struct tern_connect *a, const struct tern_connect *b)
{
    CHECK(a->version == b->version && a->clean_start == b->clean_start);
    CHECK(a->will_flag == b->will_flag && a->will_qos == b->will_qos);
    CHECK(a->will_retain == b->will_retain && a->keepalive_s == b->keepalive_s);
    CHECK(a->has_username == b->has_username && a->has_password == b->has_password);
    same_bytes(a->protocol_name, b->protocol_name);
    same_bytes(a->client_id, b->client_id);
    same_bytes(a->will_topic, b->will_topic);
    same_bytes(a->will_payload, b->will_payload);
    same_bytes(a->username, b->username);
    same_bytes(a->password, b->password);
    same_props(&a->props, &b->props);
    same_props(&a->will_props, &b->will_props);
}

static void same_packet(const struct tern_packet *a, const struct tern_packet *b)
{
    CHECK(a->type == b->type);
    switch (a->type) {
    case TERN_CONNECT:
        same_connect(&a->u.connect, &b->u.connect);
        break;
    case TERN_CONNACK:
        CHECK(a->u.connack.session_present == b->u.connack.session_present);
        CHECK(a->u.connack.reason == b->u.connack.reason);
        same_props(&a->u.connack.props, &b->u.connack.props);
        break;
    case TERN_PUBLISH:
        CHECK(a->u.publish.qos == b->u.publish.qos &&
              a->u.publish.dup == b->u.publish.dup);
        CHECK(a->u.publish.retain == b->u.publish.retain);
        CHECK(a->u.publish.packet_id == b->u.publish.packet_id);
        same_bytes(a->u.publish.topic, b->u.publish.topic);
        same_bytes(a->u.publish.payload, b->u.publish.payload);
        same_props(&a->u.publish.props, &b->u.publish.props);
        break;
    case TERN_PUBACK:
    case TERN_PUBREC:
    case TERN_PUBREL:
    case TERN_PUBCOMP:
        CHECK(a->u.ack.packet_id == b->u.ack.packet_id);
        CHECK(a->u.ack.reason == b->u.ack.reason);
        same_props(&a->u.ack.props, &b->u.ack.props);
        break;
    case TERN_SUBSCRIBE:
    case TERN_SUBACK:
    case TERN_UNSUBSCRIBE:
    case TERN_UNSUBACK:
        CHECK(a->u.sub.packet_id == b->u.sub.packet_id);
        CHECK(a->u.sub.count == b->u.sub.count);
        same_bytes(a->u.sub.list, b->u.sub.list);
        same_props(&a->u.sub.props, &b->u.sub.props);
        break;
    case TERN_DISCONNECT:
    case TERN_AUTH:
        CHECK(a->u.disconnect.reason == b->u.disconnect.reason);
        same_props(&a->u.disconnect.props, &b->u.disconnect.props);
        break;
    default:
        break;
    }
}

/* Points the user fields of every property block of p at copies in buf. */
static void prepare_encode(struct tern_packet *p, uint8_t *buf, size_t half)
{
    switch (p->type) {
    case TERN_CONNECT:
        take_user(&p->u.connect.props, buf);
        take_user(&p->u.connect.will_props, buf + half);
        break;
    case TERN_CONNACK:
        take_user(&p->u.connack.props, buf);
        break;
    case TERN_PUBLISH:
        take_user(&p->u.publish.props, buf);
        break;
    case TERN_PUBACK:
    case TERN_PUBREC:
    case TERN_PUBREL:
    case TERN_PUBCOMP:
        take_user(&p->u.ack.props, buf);
        break;
    case TERN_SUBSCRIBE:
    case TERN_SUBACK:
    case TERN_UNSUBSCRIBE:
    case TERN_UNSUBACK:
        take_user(&p->u.sub.props, buf);
        break;
    case TERN_DISCONNECT:
    case TERN_AUTH:
        take_user(&p->u.disconnect.props, buf);
        break;
    default:
        break;
    }
}

static void walk_filters(const struct tern_packet *p)
{
    if (p->type != TERN_SUBSCRIBE && p->type != TERN_UNSUBSCRIBE) {
        return;
    }
    uint32_t pos = 0, n = 0;
    struct tern_bytes f;
    uint8_t opt;
    while (tern_codec_next_filter(&p->u.sub, p->type, &pos, &f, &opt)) {
        CHECK(tern_utf8_valid(f.ptr, f.len));
        n++;
    }
    CHECK(n == p->u.sub.count && pos == p->u.sub.list.len);
}

static void round_trip(const uint8_t *frame, size_t len, uint8_t version)
{
    struct tern_packet a, b;
    struct tern_codec_error err;
    if (tern_codec_decode(frame, len, version, &a, &err) != TERN_OK) {
        return;
    }
    walk_filters(&a);
    uint8_t ver = a.type == TERN_CONNECT ? a.u.connect.version : version;
    uint8_t *users = malloc(2 * len + 2);
    CHECK(users);
    prepare_encode(&a, users, len + 1);
    size_t need = tern_codec_encode(&a, ver, NULL, 0);
    CHECK(need > 0);
    uint8_t *enc = malloc(need);
    uint8_t *enc2 = malloc(need);
    CHECK(enc && enc2);
    CHECK(tern_codec_encode(&a, ver, enc, need) == need);
    size_t flen = 0;
    CHECK(tern_codec_frame(enc, need, 0, &flen, &err) == TERN_OK && flen == need);
    CHECK(tern_codec_decode(enc, need, ver, &b, &err) == TERN_OK);
    same_packet(&a, &b);
    uint8_t *users2 = malloc(2 * need + 2);
    CHECK(users2);
    prepare_encode(&b, users2, need + 1);
    CHECK(tern_codec_encode(&b, ver, enc2, need) == need);
    CHECK(memcmp(enc, enc2, need) == 0);
    free(users2);
    free(enc2);
    free(enc);
    free(users);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const uint8_t versions[] = {TERN_MQTT_31, TERN_MQTT_311, TERN_MQTT_5};
    for (size_t i = 0; i < sizeof versions; i++) {
        size_t flen = 0;
        struct tern_codec_error err;
        if (tern_codec_frame(data, size, 1u << 20, &flen, &err) != TERN_OK) {
            continue;
        }
        /* A copy of exactly the frame, so reads past it are caught by ASan. */
        uint8_t *frame = malloc(flen);
        CHECK(frame);
        memcpy(frame, data, flen);
        round_trip(frame, flen, versions[i]);
        free(frame);
    }
    return 0;
}
