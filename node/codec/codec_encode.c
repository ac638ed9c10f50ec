/* MQTT packet encoder. Each packet type has a size step (remaining length,
 * SIZE_MAX if it cannot be encoded) and a write step; the caller's buffer is
 * written only once the whole size is known to fit, so writes need no checks.
 * PUBLISH, the hot path, measures its properties once and copies the payload
 * with a single memcpy. */
#include <assert.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "codec_int.h"
#include "tern/codec.h"

/* Sizes computed by the size step and reused by the write step. */
struct enc_sizes {
    size_t props;      /* property block of the packet (v5) */
    size_t will_props; /* will property block (CONNECT v5) */
};

static size_t add(size_t a, size_t b)
{
    return (a == SIZE_MAX || b == SIZE_MAX) ? SIZE_MAX : a + b;
}

/* Length prefix + a property block of ps bytes. */
static size_t props_known(size_t ps)
{
    if (ps > TERN_MAX_REMAINING_LENGTH) {
        return SIZE_MAX;
    }
    return (size_t)tern_vbi_size((uint32_t)ps) + ps;
}

/* Length prefix + property block, or 0 bytes before MQTT 5. */
static size_t props_part(bool v5, const struct tern_props *p, size_t *ps)
{
    if (!v5) {
        *ps = 0;
        return 0;
    }
    *ps = codec_props_measure(p);
    return props_known(*ps);
}

static uint8_t *put_props(uint8_t *w, bool v5, const struct tern_props *p, size_t ps)
{
    if (!v5) {
        return w;
    }
    w += tern_vbi_encode((uint32_t)ps, w);
    return codec_props_write(w, p);
}

static size_t str_part(struct tern_bytes b)
{
    return b.len <= 65535u ? 2u + b.len : SIZE_MAX;
}

/* ---- CONNECT ---------------------------------------------------------------- */

static const char *connect_name(uint8_t version)
{
    return version == TERN_MQTT_31 ? "MQIsdp" : "MQTT";
}

static size_t connect_size(const struct tern_connect *c, bool v5, uint8_t version,
                           struct enc_sizes *s)
{
    size_t n = 2 + strlen(connect_name(version)) + 1 + 1 + 2;
    n = add(n, props_part(v5, &c->props, &s->props));
    n = add(n, str_part(c->client_id));
    if (c->will_flag) {
        if (c->will_qos > 2) {
            return SIZE_MAX;
        }
        n = add(n, props_part(v5, &c->will_props, &s->will_props));
        n = add(n, str_part(c->will_topic));
        n = add(n, str_part(c->will_payload));
    }
    if (c->has_username) {
        n = add(n, str_part(c->username));
    }
    if (c->has_password) {
        n = add(n, str_part(c->password));
    }
    return n;
}

static uint8_t *connect_write(uint8_t *w, const struct tern_connect *c, bool v5,
                              uint8_t version, const struct enc_sizes *s)
{
    const char *name = connect_name(version);
    struct tern_bytes nb = {(const uint8_t *)name, (uint32_t)strlen(name)};
    w = codec_put_str(w, nb);
    *w++ = version;
    uint8_t f = (uint8_t)((c->has_username ? 0x80 : 0) | (c->has_password ? 0x40 : 0) |
                          (c->clean_start ? 0x02 : 0));
    if (c->will_flag) {
        f |= (uint8_t)(0x04 | (c->will_qos << 3) | (c->will_retain ? 0x20 : 0));
    }
    *w++ = f;
    w = codec_put_u16(w, c->keepalive_s);
    w = put_props(w, v5, &c->props, s->props);
    w = codec_put_str(w, c->client_id);
    if (c->will_flag) {
        w = put_props(w, v5, &c->will_props, s->will_props);
        w = codec_put_str(w, c->will_topic);
        w = codec_put_str(w, c->will_payload);
    }
    if (c->has_username) {
        w = codec_put_str(w, c->username);
    }
    if (c->has_password) {
        w = codec_put_str(w, c->password);
    }
    return w;
}

/* ---- CONNACK ---------------------------------------------------------------- */

/* 3.1.1 has return codes 0-5; map an MQTT 5 reason so callers may use one set. */
static uint8_t connack_v3_code(uint8_t rc)
{
    switch (rc) {
    case TERN_RC_SUCCESS:
        return TERN_V3_ACCEPTED;
    case TERN_RC_UNSUPPORTED_PROTOCOL_VERSION:
        return TERN_V3_BAD_PROTOCOL;
    case TERN_RC_CLIENT_ID_NOT_VALID:
        return TERN_V3_ID_REJECTED;
    case TERN_RC_BAD_USERNAME_OR_PASSWORD:
        return TERN_V3_BAD_CREDENTIALS;
    case TERN_RC_NOT_AUTHORIZED:
    case TERN_RC_BANNED:
        return TERN_V3_NOT_AUTHORIZED;
    default:
        return rc <= TERN_V3_NOT_AUTHORIZED ? rc : TERN_V3_SERVER_UNAVAILABLE;
    }
}

static uint8_t *connack_write(uint8_t *w, const struct tern_connack *c, bool v5,
                              const struct enc_sizes *s)
{
    *w++ = c->session_present ? 1 : 0;
    *w++ = v5 ? c->reason : connack_v3_code(c->reason);
    return put_props(w, v5, &c->props, s->props);
}

/* ---- PUBLISH ---------------------------------------------------------------- */

static size_t publish_size(const struct tern_publish *p, bool v5, struct enc_sizes *s)
{
    if (p->qos > 2) {
        return SIZE_MAX;
    }
    size_t n = add(str_part(p->topic), p->qos ? 2 : 0);
    n = add(n, props_part(v5, &p->props, &s->props));
    return add(n, p->payload.len);
}

static uint8_t *publish_write(uint8_t *w, const struct tern_publish *p, bool v5,
                              const struct enc_sizes *s)
{
    w = codec_put_str(w, p->topic);
    if (p->qos) {
        w = codec_put_u16(w, p->packet_id);
    }
    w = put_props(w, v5, &p->props, s->props);
    return codec_put_bytes(w, p->payload.ptr, p->payload.len);
}

/* ---- acks: PUBACK PUBREC PUBREL PUBCOMP, and DISCONNECT / AUTH --------------- */

/* v5 short forms: reason 0 and no properties drop both; no properties drop
 * the property length. */
static size_t ack_size(const struct tern_ack *a, bool v5, struct enc_sizes *s)
{
    if (!v5) {
        return 2;
    }
    s->props = codec_props_measure(&a->props);
    if (s->props == 0) {
        return a->reason ? 3 : 2;
    }
    return add(3, props_known(s->props));
}

static uint8_t *ack_write(uint8_t *w, const struct tern_ack *a, bool v5,
                          const struct enc_sizes *s)
{
    w = codec_put_u16(w, a->packet_id);
    if (v5 && (a->reason || s->props)) {
        *w++ = a->reason;
        if (s->props) {
            w = put_props(w, v5, &a->props, s->props);
        }
    }
    return w;
}

/* DISCONNECT: 0 bytes before v5. AUTH (v5 only) has no 1-byte form. */
static size_t disc_size(uint8_t type, const struct tern_disconnect *d, bool v5,
                        struct enc_sizes *s)
{
    if (!v5) {
        return type == TERN_AUTH ? SIZE_MAX : 0;
    }
    s->props = codec_props_measure(&d->props);
    if (s->props == 0 && d->reason == 0) {
        return 0;
    }
    if (s->props == 0 && type == TERN_DISCONNECT) {
        return 1;
    }
    return add(1, props_known(s->props));
}

static uint8_t *disc_write(uint8_t *w, uint8_t type, const struct tern_disconnect *d,
                           bool v5, const struct enc_sizes *s)
{
    if (!v5 || (s->props == 0 && d->reason == 0)) {
        return w;
    }
    *w++ = d->reason;
    if (s->props || type == TERN_AUTH) {
        w = put_props(w, v5, &d->props, s->props);
    }
    return w;
}

/* ---- SUBSCRIBE family ------------------------------------------------------- */

static size_t sub_size(uint8_t type, const struct tern_sublist *l, bool v5,
                       struct enc_sizes *s)
{
    if (!v5 && type == TERN_UNSUBACK) {
        return 2; /* 3.1.1 UNSUBACK is the packet id alone */
    }
    return add(add(2, props_part(v5, &l->props, &s->props)), l->list.len);
}

static uint8_t *sub_write(uint8_t *w, uint8_t type, const struct tern_sublist *l, bool v5,
                          const struct enc_sizes *s)
{
    w = codec_put_u16(w, l->packet_id);
    if (!v5 && type == TERN_UNSUBACK) {
        return w;
    }
    w = put_props(w, v5, &l->props, s->props);
    if (!v5 && type == TERN_SUBACK) {
        /* 3.1.1 knows only 0, 1, 2 and failure 0x80. */
        for (uint32_t i = 0; i < l->list.len; i++) {
            uint8_t rc = l->list.ptr[i];
            *w++ = rc < 0x80 ? rc : 0x80;
        }
        return w;
    }
    return codec_put_bytes(w, l->list.ptr, l->list.len);
}

/* ---- dispatch --------------------------------------------------------------- */

static size_t body_size(const struct tern_packet *p, bool v5, uint8_t version,
                        struct enc_sizes *s)
{
    switch (p->type) {
    case TERN_CONNECT:
        return connect_size(&p->u.connect, v5, version, s);
    case TERN_CONNACK:
        return add(2, props_part(v5, &p->u.connack.props, &s->props));
    case TERN_PUBLISH:
        return publish_size(&p->u.publish, v5, s);
    case TERN_PUBACK:
    case TERN_PUBREC:
    case TERN_PUBREL:
    case TERN_PUBCOMP:
        return ack_size(&p->u.ack, v5, s);
    case TERN_SUBSCRIBE:
    case TERN_SUBACK:
    case TERN_UNSUBSCRIBE:
    case TERN_UNSUBACK:
        return sub_size(p->type, &p->u.sub, v5, s);
    case TERN_PINGREQ:
    case TERN_PINGRESP:
        return 0;
    case TERN_DISCONNECT:
    case TERN_AUTH:
        return disc_size(p->type, &p->u.disconnect, v5, s);
    default:
        return SIZE_MAX;
    }
}

static uint8_t *body_write(uint8_t *w, const struct tern_packet *p, bool v5,
                           uint8_t version, const struct enc_sizes *s)
{
    switch (p->type) {
    case TERN_CONNECT:
        return connect_write(w, &p->u.connect, v5, version, s);
    case TERN_CONNACK:
        return connack_write(w, &p->u.connack, v5, s);
    case TERN_PUBLISH:
        return publish_write(w, &p->u.publish, v5, s);
    case TERN_PUBACK:
    case TERN_PUBREC:
    case TERN_PUBREL:
    case TERN_PUBCOMP:
        return ack_write(w, &p->u.ack, v5, s);
    case TERN_SUBSCRIBE:
    case TERN_SUBACK:
    case TERN_UNSUBSCRIBE:
    case TERN_UNSUBACK:
        return sub_write(w, p->type, &p->u.sub, v5, s);
    case TERN_DISCONNECT:
    case TERN_AUTH:
        return disc_write(w, p->type, &p->u.disconnect, v5, s);
    default:
        return w; /* PINGREQ, PINGRESP: no body */
    }
}

static uint8_t first_byte(const struct tern_packet *p)
{
    uint8_t flags = 0;
    if (p->type == TERN_PUBLISH) {
        const struct tern_publish *pub = &p->u.publish;
        flags = (uint8_t)((pub->dup ? 8 : 0) | (pub->qos << 1) | (pub->retain ? 1 : 0));
    } else if (p->type == TERN_PUBREL || p->type == TERN_SUBSCRIBE ||
               p->type == TERN_UNSUBSCRIBE) {
        flags = 2;
    }
    return (uint8_t)(p->type << 4) | flags;
}

size_t tern_codec_encode(const struct tern_packet *p, uint8_t version, uint8_t *out,
                         size_t cap)
{
    struct enc_sizes s = {0, 0};
    bool v5 = version == TERN_MQTT_5;
    if (p->type == TERN_CONNECT && version != TERN_MQTT_31 && version != TERN_MQTT_311 &&
        !v5) {
        return 0;
    }
    size_t rl = body_size(p, v5, version, &s);
    if (rl > TERN_MAX_REMAINING_LENGTH) {
        return 0; /* too large or not encodable (also catches SIZE_MAX) */
    }
    size_t total = 1u + (size_t)tern_vbi_size((uint32_t)rl) + rl;
    if (total > cap) {
        return total;
    }
    out[0] = first_byte(p);
    uint8_t *w = out + 1 + tern_vbi_encode((uint32_t)rl, out + 1);
    w = body_write(w, p, v5, version, &s);
    assert((size_t)(w - out) == total); /* size and write steps agree */
    (void)w;
    return total;
}
