/* MQTT 5 properties: one table gives each id its wire type, its field in
 * struct tern_props and the packet types that may carry it, so decoding,
 * measuring and encoding are each one loop instead of one case per property. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "codec_int.h"
#include "tern/codec.h"

enum prop_type { PT_NONE, PT_BYTE, PT_U16, PT_U32, PT_VBI, PT_STR, PT_BIN, PT_PAIR };

/* Packet-kind bits for the allowed sets (bit = packet type, bit 0 = will). */
#define K(t) (1u << (t))
#define K_WILL K(CODEC_WILL)
#define K_ACKS (K(TERN_PUBACK) | K(TERN_PUBREC) | K(TERN_PUBREL) | K(TERN_PUBCOMP))
#define K_ALL 0xFFFFu

struct prop_info {
    uint8_t type;
    uint16_t off; /* offset of the value in struct tern_props */
    uint16_t kinds;
};

#define P(id, t, field, k) [id] = {t, offsetof(struct tern_props, field), k}

/* MQTT 5 spec table 2-4. */
static const struct prop_info props_tab[64] = {
    P(TERN_PROP_PAYLOAD_FORMAT, PT_BYTE, payload_format, K(TERN_PUBLISH) | K_WILL),
    P(TERN_PROP_MESSAGE_EXPIRY, PT_U32, message_expiry, K(TERN_PUBLISH) | K_WILL),
    P(TERN_PROP_CONTENT_TYPE, PT_STR, content_type, K(TERN_PUBLISH) | K_WILL),
    P(TERN_PROP_RESPONSE_TOPIC, PT_STR, response_topic, K(TERN_PUBLISH) | K_WILL),
    P(TERN_PROP_CORRELATION_DATA, PT_BIN, correlation_data, K(TERN_PUBLISH) | K_WILL),
    P(TERN_PROP_SUBSCRIPTION_ID, PT_VBI, sub_ids, K(TERN_PUBLISH) | K(TERN_SUBSCRIBE)),
    P(TERN_PROP_SESSION_EXPIRY, PT_U32, session_expiry,
      K(TERN_CONNECT) | K(TERN_CONNACK) | K(TERN_DISCONNECT)),
    P(TERN_PROP_ASSIGNED_CLIENT_ID, PT_STR, assigned_client_id, K(TERN_CONNACK)),
    P(TERN_PROP_SERVER_KEEPALIVE, PT_U16, server_keepalive, K(TERN_CONNACK)),
    P(TERN_PROP_AUTH_METHOD, PT_STR, auth_method,
      K(TERN_CONNECT) | K(TERN_CONNACK) | K(TERN_AUTH)),
    P(TERN_PROP_AUTH_DATA, PT_BIN, auth_data,
      K(TERN_CONNECT) | K(TERN_CONNACK) | K(TERN_AUTH)),
    P(TERN_PROP_REQUEST_PROBLEM_INFO, PT_BYTE, request_problem_info, K(TERN_CONNECT)),
    P(TERN_PROP_WILL_DELAY, PT_U32, will_delay, K_WILL),
    P(TERN_PROP_REQUEST_RESPONSE_INFO, PT_BYTE, request_response_info, K(TERN_CONNECT)),
    P(TERN_PROP_RESPONSE_INFO, PT_STR, response_info, K(TERN_CONNACK)),
    P(TERN_PROP_SERVER_REFERENCE, PT_STR, server_reference,
      K(TERN_CONNACK) | K(TERN_DISCONNECT)),
    P(TERN_PROP_REASON_STRING, PT_STR, reason_string,
      K(TERN_CONNACK) | K_ACKS | K(TERN_SUBACK) | K(TERN_UNSUBACK) | K(TERN_DISCONNECT) |
          K(TERN_AUTH)),
    P(TERN_PROP_RECEIVE_MAX, PT_U16, receive_max, K(TERN_CONNECT) | K(TERN_CONNACK)),
    P(TERN_PROP_TOPIC_ALIAS_MAX, PT_U16, topic_alias_max,
      K(TERN_CONNECT) | K(TERN_CONNACK)),
    P(TERN_PROP_TOPIC_ALIAS, PT_U16, topic_alias, K(TERN_PUBLISH)),
    P(TERN_PROP_MAX_QOS, PT_BYTE, max_qos, K(TERN_CONNACK)),
    P(TERN_PROP_RETAIN_AVAILABLE, PT_BYTE, retain_available, K(TERN_CONNACK)),
    P(TERN_PROP_USER, PT_PAIR, user, K_ALL & ~K(TERN_PINGREQ) & ~K(TERN_PINGRESP)),
    P(TERN_PROP_MAX_PACKET_SIZE, PT_U32, max_packet_size,
      K(TERN_CONNECT) | K(TERN_CONNACK)),
    P(TERN_PROP_WILDCARD_SUB_AVAILABLE, PT_BYTE, wildcard_sub_available, K(TERN_CONNACK)),
    P(TERN_PROP_SUB_ID_AVAILABLE, PT_BYTE, sub_id_available, K(TERN_CONNACK)),
    P(TERN_PROP_SHARED_SUB_AVAILABLE, PT_BYTE, shared_sub_available, K(TERN_CONNACK)),
};

#define FIELD(p, t, off) ((t *)(void *)((char *)(p) + (off)))
#define CFIELD(p, t, off) ((const t *)(const void *)((const char *)(p) + (off)))

static int rd_value(struct codec_rd *r, unsigned id, struct tern_props *p)
{
    const struct prop_info *pi = &props_tab[id];
    switch (pi->type) {
    case PT_BYTE:
        return codec_rd_u8(r, FIELD(p, uint8_t, pi->off));
    case PT_U16:
        return codec_rd_u16(r, FIELD(p, uint16_t, pi->off));
    case PT_U32: {
        uint16_t hi, lo;
        int rc = codec_rd_u16(r, &hi);
        if (rc == TERN_OK && (rc = codec_rd_u16(r, &lo)) == TERN_OK) {
            *FIELD(p, uint32_t, pi->off) = ((uint32_t)hi << 16) | lo;
        }
        return rc;
    }
    case PT_STR:
        return codec_rd_str(r, FIELD(p, struct tern_bytes, pi->off));
    case PT_BIN:
        return codec_rd_bin(r, FIELD(p, struct tern_bytes, pi->off));
    default:
        return codec_fail(r, TERN_EMALFORMED, TERN_RC_MALFORMED_PACKET,
                          "unknown property");
    }
}

static int rd_sub_id(struct codec_rd *r, struct tern_props *p)
{
    uint32_t v;
    int n = tern_vbi_decode(r->b + r->pos, r->end - r->pos, &v);
    if (n <= 0) {
        return codec_fail(r, TERN_EMALFORMED, TERN_RC_MALFORMED_PACKET,
                          "bad subscription identifier");
    }
    r->pos += (uint32_t)n;
    if (v == 0) {
        return codec_fail(r, TERN_EPROTO, TERN_RC_PROTOCOL_ERROR,
                          "subscription identifier 0");
    }
    if (p->sub_id_count >= TERN_MAX_SUB_IDS) {
        return codec_fail(r, TERN_EPROTO, TERN_RC_PROTOCOL_ERROR,
                          "too many subscription identifiers");
    }
    p->sub_ids[p->sub_id_count++] = v;
    return TERN_OK;
}

static int rd_user(struct codec_rd *r, struct tern_props *p)
{
    struct tern_bytes k, v;
    int rc = codec_rd_str(r, &k);
    if (rc == TERN_OK && (rc = codec_rd_str(r, &v)) == TERN_OK) {
        p->user_count++;
    }
    return rc;
}

/* Value ranges the spec makes a protocol error (3.1.2.11, 3.2.2.3, 3.3.2.3). */
static int check_value(struct codec_rd *r, unsigned id, const struct tern_props *p)
{
    const struct prop_info *pi = &props_tab[id];
    if (pi->type == PT_BYTE && *CFIELD(p, uint8_t, pi->off) > 1) {
        return codec_fail(r, TERN_EPROTO, TERN_RC_PROTOCOL_ERROR,
                          "property value must be 0 or 1");
    }
    if ((id == TERN_PROP_RECEIVE_MAX && p->receive_max == 0) ||
        (id == TERN_PROP_MAX_PACKET_SIZE && p->max_packet_size == 0)) {
        return codec_fail(r, TERN_EPROTO, TERN_RC_PROTOCOL_ERROR,
                          "property value must not be 0");
    }
    if (id == TERN_PROP_TOPIC_ALIAS && p->topic_alias == 0) {
        return codec_fail(r, TERN_EPROTO, TERN_RC_PROTOCOL_ERROR, "topic alias 0");
    }
    if (id == TERN_PROP_RESPONSE_TOPIC &&
        !codec_topic_name_ok(p->response_topic.ptr, p->response_topic.len)) {
        return codec_fail(r, TERN_EPROTO, TERN_RC_PROTOCOL_ERROR,
                          "response topic is not a topic name");
    }
    return TERN_OK;
}

static int rd_one(struct codec_rd *r, unsigned kind, struct tern_props *p)
{
    uint8_t id;
    int rc = codec_rd_u8(r, &id);
    if (rc != TERN_OK) {
        return rc;
    }
    /* Ids are VBIs, but every defined id fits in 7 bits. */
    if (id >= 64 || !(props_tab[id].kinds & K(kind))) {
        return codec_fail(r, TERN_EMALFORMED, TERN_RC_MALFORMED_PACKET,
                          "property not allowed in this packet");
    }
    uint64_t bit = TERN_PROP_BIT(id);
    bool may_repeat =
        id == TERN_PROP_USER || (id == TERN_PROP_SUBSCRIPTION_ID && kind == TERN_PUBLISH);
    if ((p->mask & bit) && !may_repeat) {
        return codec_fail(r, TERN_EPROTO, TERN_RC_PROTOCOL_ERROR, "duplicate property");
    }
    p->mask |= bit;
    if (id == TERN_PROP_SUBSCRIPTION_ID) {
        return rd_sub_id(r, p);
    }
    if (id == TERN_PROP_USER) {
        return rd_user(r, p);
    }
    rc = rd_value(r, id, p);
    return rc != TERN_OK ? rc : check_value(r, id, p);
}

int codec_rd_props(struct codec_rd *r, unsigned kind, struct tern_props *p)
{
    uint32_t len;
    int n = tern_vbi_decode(r->b + r->pos, r->end - r->pos, &len);
    if (n <= 0 || len > r->end - r->pos - (uint32_t)n) {
        return codec_fail(r, TERN_EMALFORMED, TERN_RC_MALFORMED_PACKET,
                          "bad property length");
    }
    r->pos += (uint32_t)n;
    p->raw.ptr = r->b + r->pos;
    p->raw.len = len;
    /* Parse within the block so a property cannot run past its end. */
    uint32_t outer_end = r->end;
    r->end = r->pos + len;
    int rc = TERN_OK;
    while (rc == TERN_OK && r->pos < r->end) {
        rc = rd_one(r, kind, p);
    }
    r->end = outer_end;
    if (rc == TERN_OK && (p->mask & TERN_PROP_BIT(TERN_PROP_AUTH_DATA)) &&
        !(p->mask & TERN_PROP_BIT(TERN_PROP_AUTH_METHOD))) {
        return codec_fail(r, TERN_EPROTO, TERN_RC_PROTOCOL_ERROR,
                          "authentication data without method");
    }
    return rc;
}

/* Encoded size of one property value (without the id byte), 0 if too long. */
static size_t value_size(unsigned id, const struct tern_props *p)
{
    const struct prop_info *pi = &props_tab[id];
    switch (pi->type) {
    case PT_BYTE:
        return 1;
    case PT_U16:
        return 2;
    case PT_U32:
        return 4;
    case PT_STR:
    case PT_BIN: {
        uint32_t len = CFIELD(p, struct tern_bytes, pi->off)->len;
        return len <= 65535u ? 2u + len : 0;
    }
    default:
        return 0;
    }
}

/* Ids written from fields; subscription ids and user entries are separate. */
#define SIMPLE_MASK(m)                                                                   \
    ((m) & ~(TERN_PROP_BIT(TERN_PROP_SUBSCRIPTION_ID) | TERN_PROP_BIT(TERN_PROP_USER)))

size_t codec_props_measure(const struct tern_props *p)
{
    size_t n = p->user.len;
    uint64_t m = SIMPLE_MASK(p->mask);
    while (m) {
        unsigned id = (unsigned)__builtin_ctzll(m);
        m &= m - 1;
        if (props_tab[id].type == PT_NONE) {
            continue; /* a bit with no defined property: never written */
        }
        size_t vs = value_size(id, p);
        if (vs == 0) {
            return SIZE_MAX;
        }
        n += 1 + vs;
    }
    if (p->mask & TERN_PROP_BIT(TERN_PROP_SUBSCRIPTION_ID)) {
        for (unsigned i = 0; i < p->sub_id_count && i < TERN_MAX_SUB_IDS; i++) {
            if (p->sub_ids[i] == 0 || p->sub_ids[i] > TERN_MAX_REMAINING_LENGTH) {
                return SIZE_MAX;
            }
            n += 1u + (size_t)tern_vbi_size(p->sub_ids[i]);
        }
    }
    return n;
}

size_t tern_codec_props_size(const struct tern_props *p)
{
    size_t n = codec_props_measure(p);
    return n == SIZE_MAX ? 0 : n;
}

static uint8_t *put_value(uint8_t *w, unsigned id, const struct tern_props *p)
{
    const struct prop_info *pi = &props_tab[id];
    *w++ = (uint8_t)id;
    switch (pi->type) {
    case PT_BYTE:
        *w++ = *CFIELD(p, uint8_t, pi->off);
        return w;
    case PT_U16:
        return codec_put_u16(w, *CFIELD(p, uint16_t, pi->off));
    case PT_U32: {
        uint32_t v = *CFIELD(p, uint32_t, pi->off);
        return codec_put_u16(codec_put_u16(w, v >> 16), v & 0xffff);
    }
    default:
        return codec_put_str(w, *CFIELD(p, struct tern_bytes, pi->off));
    }
}

uint8_t *codec_props_write(uint8_t *w, const struct tern_props *p)
{
    uint64_t m = SIMPLE_MASK(p->mask);
    while (m) {
        unsigned id = (unsigned)__builtin_ctzll(m);
        m &= m - 1;
        if (props_tab[id].type != PT_NONE) {
            w = put_value(w, id, p);
        }
    }
    if (p->mask & TERN_PROP_BIT(TERN_PROP_SUBSCRIPTION_ID)) {
        for (unsigned i = 0; i < p->sub_id_count && i < TERN_MAX_SUB_IDS; i++) {
            *w++ = TERN_PROP_SUBSCRIPTION_ID;
            w += tern_vbi_encode(p->sub_ids[i], w);
        }
    }
    return codec_put_bytes(w, p->user.ptr, p->user.len);
}

/* Length of the property starting at raw[pos] (id included), 0 if it does not
 * fit: raw was validated by the decoder, this only guards a hand-made block. */
static uint32_t raw_prop_len(const uint8_t *raw, uint32_t pos, uint32_t end)
{
    uint8_t id = raw[pos];
    uint32_t left = end - pos - 1;
    uint32_t n = 0;
    const uint8_t *v = raw + pos + 1;
    switch (id < 64 ? props_tab[id].type : PT_NONE) {
    case PT_BYTE:
        n = 1;
        break;
    case PT_U16:
        n = 2;
        break;
    case PT_U32:
        n = 4;
        break;
    case PT_VBI: {
        uint32_t x;
        int k = tern_vbi_decode(v, left, &x);
        n = k > 0 ? (uint32_t)k : UINT32_MAX;
        break;
    }
    case PT_STR:
    case PT_BIN:
        n = left >= 2 ? 2u + (((uint32_t)v[0] << 8) | v[1]) : UINT32_MAX;
        break;
    case PT_PAIR:
        if (left >= 2) {
            uint32_t k = 2u + (((uint32_t)v[0] << 8) | v[1]);
            n = left >= k + 2 ? k + 2u + (((uint32_t)v[k] << 8) | v[k + 1]) : UINT32_MAX;
        } else {
            n = UINT32_MAX;
        }
        break;
    default:
        return 0;
    }
    return n <= left ? n + 1 : 0;
}

size_t tern_props_user_extract(const struct tern_props *props, uint8_t *out)
{
    const uint8_t *raw = props->raw.ptr;
    uint32_t end = props->raw.len;
    uint32_t pos = 0;
    size_t w = 0;
    if (props->user_count == 0) {
        return 0; /* nothing to copy: skip the walk */
    }
    while (pos < end) {
        uint32_t n = raw_prop_len(raw, pos, end);
        if (n == 0) {
            break;
        }
        if (raw[pos] == TERN_PROP_USER) {
            memcpy(out + w, raw + pos, n);
            w += n;
        }
        pos += n;
    }
    return w;
}
