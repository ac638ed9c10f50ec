/* MQTT packet decoder: one function per packet type over a bounded cursor.
 * Validation follows the receiver rules of MQTT 3.1.1 and 5.0; each failure
 * carries the MQTT 5 reason code the broker sends back. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "codec_int.h"
#include "tern/codec.h"

#define MALFORMED(r, msg) codec_fail(r, TERN_EMALFORMED, TERN_RC_MALFORMED_PACKET, msg)
#define PROTO(r, msg) codec_fail(r, TERN_EPROTO, TERN_RC_PROTOCOL_ERROR, msg)
#define TRY(expr)                                                                        \
    do {                                                                                 \
        int try_rc_ = (expr);                                                            \
        if (try_rc_ != TERN_OK) {                                                        \
            return try_rc_;                                                              \
        }                                                                                \
    } while (0)

int codec_fail(struct codec_rd *r, int code, uint8_t reason, const char *msg)
{
    r->err->reason = reason;
    r->err->msg = msg;
    return code;
}

int codec_rd_u8(struct codec_rd *r, uint8_t *v)
{
    if (r->pos >= r->end) {
        return MALFORMED(r, "packet too short");
    }
    *v = r->b[r->pos++];
    return TERN_OK;
}

int codec_rd_u16(struct codec_rd *r, uint16_t *v)
{
    if (r->end - r->pos < 2) {
        return MALFORMED(r, "packet too short");
    }
    *v = (uint16_t)((r->b[r->pos] << 8) | r->b[r->pos + 1]);
    r->pos += 2;
    return TERN_OK;
}

int codec_rd_bin(struct codec_rd *r, struct tern_bytes *v)
{
    uint16_t len;
    TRY(codec_rd_u16(r, &len));
    if (r->end - r->pos < len) {
        return MALFORMED(r, "string or binary data runs past the packet");
    }
    v->ptr = r->b + r->pos;
    v->len = len;
    r->pos += len;
    return TERN_OK;
}

int codec_rd_str(struct codec_rd *r, struct tern_bytes *v)
{
    TRY(codec_rd_bin(r, v));
    if (!tern_utf8_valid(v->ptr, v->len)) {
        return MALFORMED(r, "invalid UTF-8 string");
    }
    return TERN_OK;
}

static int rd_packet_id(struct codec_rd *r, uint16_t *id)
{
    TRY(codec_rd_u16(r, id));
    if (*id == 0) {
        return PROTO(r, "packet identifier 0");
    }
    return TERN_OK;
}

static int expect_end(struct codec_rd *r)
{
    return r->pos == r->end ? TERN_OK : MALFORMED(r, "trailing bytes in packet");
}

/* ---- reason code sets (MQTT 5 spec 2.4 and each packet's reason table) ------ */

static bool rc_in(uint8_t rc, const uint8_t *set, size_t n)
{
    return memchr(set, rc, n) != NULL;
}

static bool reason_valid(uint8_t type, uint8_t rc)
{
    static const uint8_t connack[] = {0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86,
                                      0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95, 0x97,
                                      0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F};
    static const uint8_t puback[] = {0x00, 0x10, 0x80, 0x83, 0x87,
                                     0x90, 0x91, 0x97, 0x99};
    static const uint8_t pubrel[] = {0x00, 0x92};
    static const uint8_t suback[] = {0x00, 0x01, 0x02, 0x80, 0x83, 0x87,
                                     0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2};
    static const uint8_t unsuback[] = {0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91};
    static const uint8_t disconnect[] = {0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89,
                                         0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94, 0x95,
                                         0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D,
                                         0x9E, 0x9F, 0xA0, 0xA1, 0xA2};
    static const uint8_t auth[] = {0x00, 0x18, 0x19};
    switch (type) {
    case TERN_CONNACK:
        return rc_in(rc, connack, sizeof connack);
    case TERN_PUBACK:
    case TERN_PUBREC:
        return rc_in(rc, puback, sizeof puback);
    case TERN_PUBREL:
    case TERN_PUBCOMP:
        return rc_in(rc, pubrel, sizeof pubrel);
    case TERN_SUBACK:
        return rc_in(rc, suback, sizeof suback);
    case TERN_UNSUBACK:
        return rc_in(rc, unsuback, sizeof unsuback);
    case TERN_DISCONNECT:
        return rc_in(rc, disconnect, sizeof disconnect);
    default:
        return rc_in(rc, auth, sizeof auth);
    }
}

static int rd_reason(struct codec_rd *r, uint8_t type, uint8_t *rc)
{
    TRY(codec_rd_u8(r, rc));
    if (!reason_valid(type, *rc)) {
        return PROTO(r, "reason code not valid for this packet");
    }
    return TERN_OK;
}

/* ---- CONNECT ---------------------------------------------------------------- */

static bool bytes_is(struct tern_bytes b, const char *s)
{
    size_t n = strlen(s);
    return b.len == n && memcmp(b.ptr, s, n) == 0;
}

static int rd_connect_header(struct codec_rd *r, struct tern_connect *c)
{
    TRY(codec_rd_str(r, &c->protocol_name));
    TRY(codec_rd_u8(r, &c->version));
    bool mqtt = bytes_is(c->protocol_name, "MQTT");
    if (!(mqtt && (c->version == TERN_MQTT_311 || c->version == TERN_MQTT_5)) &&
        !(bytes_is(c->protocol_name, "MQIsdp") && c->version == TERN_MQTT_31)) {
        return codec_fail(r, TERN_EPROTO, TERN_RC_UNSUPPORTED_PROTOCOL_VERSION,
                          "unsupported protocol name or level");
    }
    uint8_t f;
    TRY(codec_rd_u8(r, &f));
    if (f & 0x01) {
        return MALFORMED(r, "CONNECT reserved flag set");
    }
    c->clean_start = f & 0x02;
    c->will_flag = f & 0x04;
    c->will_qos = (f >> 3) & 3;
    c->will_retain = f & 0x20;
    c->has_password = f & 0x40;
    c->has_username = f & 0x80;
    if (c->will_qos == 3) {
        return MALFORMED(r, "will QoS 3");
    }
    if (!c->will_flag && (c->will_qos || c->will_retain)) {
        return MALFORMED(r, "will QoS or retain without will flag");
    }
    if (c->version != TERN_MQTT_5 && c->has_password && !c->has_username) {
        return MALFORMED(r, "password without user name");
    }
    return codec_rd_u16(r, &c->keepalive_s);
}

static int rd_connect(struct codec_rd *r, struct tern_connect *c)
{
    memset(c, 0, sizeof *c);
    TRY(rd_connect_header(r, c));
    bool v5 = c->version == TERN_MQTT_5;
    if (v5) {
        TRY(codec_rd_props(r, TERN_CONNECT, &c->props));
    }
    TRY(codec_rd_str(r, &c->client_id));
    if (c->will_flag) {
        if (v5) {
            TRY(codec_rd_props(r, CODEC_WILL, &c->will_props));
        }
        TRY(codec_rd_str(r, &c->will_topic));
        if (!codec_topic_name_ok(c->will_topic.ptr, c->will_topic.len)) {
            return codec_fail(r, TERN_EPROTO, TERN_RC_TOPIC_NAME_INVALID,
                              "invalid will topic");
        }
        TRY(codec_rd_bin(r, &c->will_payload));
    }
    if (c->has_username) {
        TRY(codec_rd_str(r, &c->username));
    }
    if (c->has_password) {
        TRY(codec_rd_bin(r, &c->password));
    }
    return expect_end(r);
}

/* ---- CONNACK, PUBLISH, acks ------------------------------------------------ */

static int rd_connack(struct codec_rd *r, bool v5, struct tern_connack *c)
{
    uint8_t f;
    memset(c, 0, sizeof *c);
    TRY(codec_rd_u8(r, &f));
    if (f & 0xFE) {
        return MALFORMED(r, "CONNACK reserved flags set");
    }
    c->session_present = f & 1;
    if (!v5) {
        TRY(codec_rd_u8(r, &c->reason));
        if (c->reason > TERN_V3_NOT_AUTHORIZED) {
            return PROTO(r, "unknown CONNACK return code");
        }
        return expect_end(r);
    }
    TRY(rd_reason(r, TERN_CONNACK, &c->reason));
    TRY(codec_rd_props(r, TERN_CONNACK, &c->props));
    return expect_end(r);
}

static int rd_publish(struct codec_rd *r, uint8_t flags, bool v5, struct tern_publish *p)
{
    memset(p, 0, sizeof *p);
    p->retain = flags & 1;
    p->qos = (flags >> 1) & 3;
    p->dup = flags & 8;
    if (p->qos == 3) {
        return MALFORMED(r, "PUBLISH QoS 3");
    }
    if (p->qos == 0 && p->dup) {
        return MALFORMED(r, "DUP set on a QoS 0 PUBLISH");
    }
    TRY(codec_rd_str(r, &p->topic));
    if (p->topic.len && !codec_topic_name_ok(p->topic.ptr, p->topic.len)) {
        return codec_fail(r, TERN_EPROTO, TERN_RC_TOPIC_NAME_INVALID,
                          "wildcard in PUBLISH topic");
    }
    if (p->qos) {
        TRY(rd_packet_id(r, &p->packet_id));
    }
    if (v5) {
        TRY(codec_rd_props(r, TERN_PUBLISH, &p->props));
    }
    if (p->topic.len == 0) {
        if (!v5) {
            return codec_fail(r, TERN_EPROTO, TERN_RC_TOPIC_NAME_INVALID,
                              "empty PUBLISH topic");
        }
        if (!(p->props.mask & TERN_PROP_BIT(TERN_PROP_TOPIC_ALIAS))) {
            return PROTO(r, "empty PUBLISH topic without topic alias");
        }
    }
    p->payload.ptr = r->b + r->pos;
    p->payload.len = r->end - r->pos;
    r->pos = r->end;
    return TERN_OK;
}

/* PUBACK, PUBREC, PUBREL, PUBCOMP. v5 allows dropping the reason (0 implied)
 * and then the property length. */
static int rd_ack(struct codec_rd *r, uint8_t type, bool v5, struct tern_ack *a)
{
    memset(a, 0, sizeof *a);
    TRY(rd_packet_id(r, &a->packet_id));
    if (v5 && r->pos < r->end) {
        TRY(rd_reason(r, type, &a->reason));
        if (r->pos < r->end) {
            TRY(codec_rd_props(r, type, &a->props));
        }
    }
    return expect_end(r);
}

/* ---- SUBSCRIBE, UNSUBSCRIBE, SUBACK, UNSUBACK ------------------------------ */

static int check_options(struct codec_rd *r, bool v5, uint8_t o, bool shared)
{
    if (!v5) {
        if (o & ~TERN_SUBOPT_QOS_MASK) {
            return MALFORMED(r, "reserved subscription option bits set");
        }
        return (o & 3) == 3 ? MALFORMED(r, "subscription QoS 3") : TERN_OK;
    }
    if (o & 0xC0) {
        return MALFORMED(r, "reserved subscription option bits set");
    }
    if ((o & 3) == 3) {
        return PROTO(r, "subscription QoS 3");
    }
    if ((o & TERN_SUBOPT_RETAIN_HANDLING_MASK) == TERN_SUBOPT_RETAIN_HANDLING_MASK) {
        return PROTO(r, "retain handling 3");
    }
    if (shared && (o & TERN_SUBOPT_NO_LOCAL)) {
        return PROTO(r, "no local on a shared subscription");
    }
    return TERN_OK;
}

static int rd_filter_list(struct codec_rd *r, uint8_t type, bool v5,
                          struct tern_sublist *s)
{
    s->list.ptr = r->b + r->pos;
    s->list.len = r->end - r->pos;
    while (r->pos < r->end) {
        struct tern_bytes f;
        int shared;
        TRY(codec_rd_str(r, &f));
        if (!codec_filter_ok(f.ptr, f.len, &shared)) {
            return codec_fail(r, TERN_EPROTO, TERN_RC_TOPIC_FILTER_INVALID,
                              "invalid topic filter");
        }
        if (type == TERN_SUBSCRIBE) {
            uint8_t o;
            TRY(codec_rd_u8(r, &o));
            TRY(check_options(r, v5, o, shared));
        }
        s->count++;
    }
    return s->count ? TERN_OK : PROTO(r, "no topic filters");
}

static int rd_reason_list(struct codec_rd *r, uint8_t type, bool v5,
                          struct tern_sublist *s)
{
    s->list.ptr = r->b + r->pos;
    s->list.len = r->end - r->pos;
    s->count = s->list.len;
    for (uint32_t i = 0; i < s->count; i++) {
        uint8_t rc = s->list.ptr[i];
        bool ok = v5 ? reason_valid(type, rc) : rc <= 2 || rc == 0x80;
        if (!ok) {
            return PROTO(r, "reason code not valid for this packet");
        }
    }
    r->pos = r->end;
    return s->count ? TERN_OK : PROTO(r, "no reason codes");
}

static int rd_sublist(struct codec_rd *r, uint8_t type, bool v5, struct tern_sublist *s)
{
    memset(s, 0, sizeof *s);
    TRY(rd_packet_id(r, &s->packet_id));
    if (!v5 && type == TERN_UNSUBACK) {
        return expect_end(r); /* 3.1.1 UNSUBACK has no payload */
    }
    if (v5) {
        TRY(codec_rd_props(r, type, &s->props));
    }
    if (type == TERN_SUBSCRIBE || type == TERN_UNSUBSCRIBE) {
        return rd_filter_list(r, type, v5, s);
    }
    return rd_reason_list(r, type, v5, s);
}

/* ---- DISCONNECT, AUTH, PING ------------------------------------------------ */

static int rd_disconnect(struct codec_rd *r, uint8_t type, bool v5,
                         struct tern_disconnect *d)
{
    memset(d, 0, sizeof *d);
    if (type == TERN_AUTH && !v5) {
        return MALFORMED(r, "AUTH before MQTT 5");
    }
    if (!v5 || r->pos == r->end) {
        return expect_end(r);
    }
    TRY(rd_reason(r, type, &d->reason));
    /* DISCONNECT may stop after the reason; AUTH must carry properties then. */
    if (type == TERN_DISCONNECT && r->pos == r->end) {
        return TERN_OK;
    }
    TRY(codec_rd_props(r, type, &d->props));
    return expect_end(r);
}

/* ---- dispatch --------------------------------------------------------------- */

static bool flags_ok(uint8_t type, uint8_t flags)
{
    switch (type) {
    case TERN_PUBLISH:
        return true; /* checked by rd_publish */
    case TERN_PUBREL:
    case TERN_SUBSCRIBE:
    case TERN_UNSUBSCRIBE:
        return flags == 2;
    default:
        return flags == 0;
    }
}

static int rd_body(struct codec_rd *r, uint8_t type, uint8_t flags, bool v5,
                   struct tern_packet *out)
{
    switch (type) {
    case TERN_CONNECT:
        return rd_connect(r, &out->u.connect);
    case TERN_CONNACK:
        return rd_connack(r, v5, &out->u.connack);
    case TERN_PUBLISH:
        return rd_publish(r, flags, v5, &out->u.publish);
    case TERN_PUBACK:
    case TERN_PUBREC:
    case TERN_PUBREL:
    case TERN_PUBCOMP:
        return rd_ack(r, type, v5, &out->u.ack);
    case TERN_SUBSCRIBE:
    case TERN_SUBACK:
    case TERN_UNSUBSCRIBE:
    case TERN_UNSUBACK:
        return rd_sublist(r, type, v5, &out->u.sub);
    case TERN_PINGREQ:
    case TERN_PINGRESP:
        return expect_end(r);
    case TERN_DISCONNECT:
    case TERN_AUTH:
        return rd_disconnect(r, type, v5, &out->u.disconnect);
    default:
        return MALFORMED(r, "reserved packet type 0");
    }
}

int tern_codec_decode(const uint8_t *frame, size_t len, uint8_t version,
                      struct tern_packet *out, struct tern_codec_error *err)
{
    struct codec_rd r = {.b = frame, .pos = 0, .end = 0, .err = err};
    uint32_t rl;
    int n = len >= 2 ? tern_vbi_decode(frame + 1, len - 1, &rl) : 0;
    if (n <= 0 || len != 1u + (size_t)n + rl) {
        return MALFORMED(&r, "frame length does not match remaining length");
    }
    r.pos = 1u + (uint32_t)n;
    r.end = (uint32_t)len;
    out->type = frame[0] >> 4;
    uint8_t flags = frame[0] & 0x0F;
    if (!flags_ok(out->type, flags)) {
        return MALFORMED(&r, "reserved fixed header flags");
    }
    return rd_body(&r, out->type, flags, version == TERN_MQTT_5, out);
}
