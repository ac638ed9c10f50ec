/* tern MQTT codec: MQTT 3.1, 3.1.1 and 5.0 packets, pure C (no I/O, no globals,
 * no allocation).
 *
 * Decoding is zero-copy: every tern_bytes in a decoded packet points into the
 * caller's input buffer and is valid as long as that buffer is. Works like
 * hiredis' reader: the caller feeds bytes, asks tern_codec_frame() whether a whole
 * packet is there, then decodes it with tern_codec_decode(). Every length is
 * bounded by the remaining length, which is bounded by max_packet_size.
 *
 * Encoding writes into a caller buffer; tern_codec_encode() returns the size the
 * packet needs, writing only when it fits, so a caller may size first with cap 0.
 */
#ifndef TERN_CODEC_H
#define TERN_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tern/bytes.h"
#include "tern/error.h"
#include "tern/mqtt.h"

/* MQTT 5 properties of one packet. A field is meaningful only when its bit is
 * set in mask (TERN_PROP_BIT(TERN_PROP_...)). The decoder checks that each
 * property is allowed for the packet type and appears at most once (except user
 * properties and, in outgoing PUBLISH, subscription identifiers).
 *
 * User properties: on decode, `raw` is the whole property block and user_count
 * how many user properties it holds; tern_props_user_extract() copies them out as
 * encoded entries. On encode, `user` holds already encoded entries
 * (0x26, key string, value string, repeated), copied verbatim; this is how the
 * broker forwards them. */
struct tern_props {
    uint64_t mask;
    struct tern_bytes raw; /* decode only: the whole property block */

    uint8_t payload_format;
    uint32_t message_expiry;
    struct tern_bytes content_type;
    struct tern_bytes response_topic;
    struct tern_bytes correlation_data;
    uint32_t sub_ids[TERN_MAX_SUB_IDS];
    uint8_t sub_id_count;
    uint32_t session_expiry;
    struct tern_bytes assigned_client_id;
    uint16_t server_keepalive;
    struct tern_bytes auth_method;
    struct tern_bytes auth_data;
    uint8_t request_problem_info;
    uint32_t will_delay;
    uint8_t request_response_info;
    struct tern_bytes response_info;
    struct tern_bytes server_reference;
    struct tern_bytes reason_string;
    uint16_t receive_max;
    uint16_t topic_alias_max;
    uint16_t topic_alias;
    uint8_t max_qos;
    uint8_t retain_available;
    uint32_t max_packet_size;
    uint8_t wildcard_sub_available;
    uint8_t sub_id_available;
    uint8_t shared_sub_available;

    struct tern_bytes user; /* encode: encoded user-property entries */
    uint32_t user_count;    /* decode: number of user properties in raw */
};

struct tern_connect {
    struct tern_bytes protocol_name; /* "MQTT" or "MQIsdp" */
    uint8_t version;                 /* TERN_MQTT_31 / _311 / _5 */
    bool clean_start;                /* clean session in 3.1.1 */
    bool will_flag;
    uint8_t will_qos;
    bool will_retain;
    bool has_username;
    bool has_password;
    uint16_t keepalive_s;
    struct tern_props props;
    struct tern_bytes client_id; /* may be empty */
    struct tern_props will_props;
    struct tern_bytes will_topic;
    struct tern_bytes will_payload;
    struct tern_bytes username;
    struct tern_bytes password;
};

struct tern_connack {
    bool session_present;
    uint8_t reason; /* v5 reason code, or 3.1.1 return code */
    struct tern_props props;
};

struct tern_publish {
    uint8_t qos;
    bool dup;
    bool retain;
    struct tern_bytes topic; /* may be empty in v5 when a topic alias is used */
    uint16_t packet_id;      /* 0 for QoS 0 */
    struct tern_props props;
    struct tern_bytes payload;
};

/* PUBACK, PUBREC, PUBREL, PUBCOMP. */
struct tern_ack {
    uint16_t packet_id;
    uint8_t reason;
    struct tern_props props;
};

/* SUBSCRIBE and UNSUBSCRIBE carry a list of entries. On decode `list` is the
 * validated raw entry list and `count` the number of entries, walked with
 * tern_codec_next_filter(). On encode `list` holds entries built with
 * tern_codec_put_filter(). SUBACK and UNSUBACK carry one reason byte per entry in
 * `list` (count = list.len). */
struct tern_sublist {
    uint16_t packet_id;
    struct tern_props props;
    struct tern_bytes list;
    uint32_t count;
};

struct tern_disconnect {
    uint8_t reason;
    struct tern_props props;
};

struct tern_packet {
    uint8_t type; /* enum tern_packet_type */
    union {
        struct tern_connect connect;
        struct tern_connack connack;
        struct tern_publish publish;
        struct tern_ack ack;               /* PUBACK PUBREC PUBREL PUBCOMP */
        struct tern_sublist sub;           /* SUBSCRIBE SUBACK UNSUBSCRIBE UNSUBACK */
        struct tern_disconnect disconnect; /* DISCONNECT and AUTH */
    } u;
};

/* Why decoding failed: reason is the MQTT 5 reason code to send in DISCONNECT
 * (or CONNACK), msg a static human-readable explanation for the log. */
struct tern_codec_error {
    uint8_t reason;
    const char *msg;
};

/* Looks at the start of buf. If a whole packet is there, sets *frame_len
 * (fixed header + remaining length) and returns TERN_OK. Returns TERN_EAGAIN if
 * more bytes are needed, TERN_EMALFORMED if the remaining length encoding is
 * invalid, TERN_ETOOBIG if the packet would exceed max_packet_size (the total
 * packet size, as MQTT 5 defines it; 0 means no limit beyond the protocol's).
 * Errors fill *err. */
int tern_codec_frame(const uint8_t *buf, size_t len, uint32_t max_packet_size,
                     size_t *frame_len, struct tern_codec_error *err);

/* Decodes one whole packet (as framed by tern_codec_frame). `version` is the
 * connection's protocol version; it is ignored for CONNECT, which carries its
 * own. Validates everything the spec requires of a receiver: reserved flags,
 * lengths, UTF-8 (well formed, no U+0000, no surrogates), topic names without
 * wildcards, topic filters with wildcards in the right places, non-zero packet
 * ids where required, QoS 3, property ids allowed for the packet, duplicate
 * properties, property value ranges. Returns TERN_OK, TERN_EMALFORMED or
 * TERN_EPROTO with *err filled. A CONNECT refused with reason 0x84 still has
 * protocol_name and version set, so the broker can answer in kind. */
int tern_codec_decode(const uint8_t *frame, size_t len, uint8_t version,
                      struct tern_packet *out, struct tern_codec_error *err);

/* Encodes `p` for protocol `version` into out[0..cap). Returns the number of bytes
 * the packet needs; writes only if that is <= cap. Properties are written only
 * for version 5. Returns 0 if the packet cannot be encoded (too large). */
size_t tern_codec_encode(const struct tern_packet *p, uint8_t version, uint8_t *out,
                         size_t cap);

/* Size of the v5 property block (without its length prefix) that encoding `p`
 * would write (0 if it cannot be encoded). Lets the broker strip optional
 * properties (reason string, user properties) to respect a client's maximum
 * packet size. */
size_t tern_codec_props_size(const struct tern_props *p);

/* Iterates a decoded SUBSCRIBE or UNSUBSCRIBE list. *pos starts at 0. Returns
 * true and fills *filter (and *options for SUBSCRIBE) while entries remain. */
bool tern_codec_next_filter(const struct tern_sublist *s, uint8_t type, uint32_t *pos,
                            struct tern_bytes *filter, uint8_t *options);

/* Appends one SUBSCRIBE entry (options != -1) or UNSUBSCRIBE entry (options == -1)
 * to out[0..cap); returns the bytes it needs, writing only if they fit (0 if the
 * filter is longer than 65535 bytes). */
size_t tern_codec_put_filter(uint8_t *out, size_t cap, struct tern_bytes filter,
                             int options);

/* Copies the user properties of a decoded property block to out as encoded
 * entries (ready for tern_props.user on encode). out needs props->raw.len bytes at
 * most. Returns the number of bytes written. */
size_t tern_props_user_extract(const struct tern_props *props, uint8_t *out);

/* Validates UTF-8 as MQTT requires (well formed, no U+0000, no surrogates). */
bool tern_utf8_valid(const uint8_t *s, size_t len);

/* Variable byte integer helpers. tern_vbi_encode returns bytes written (1-4);
 * tern_vbi_decode returns bytes read, 0 if more input is needed, -1 if malformed. */
int tern_vbi_encode(uint32_t value, uint8_t *out);
int tern_vbi_decode(const uint8_t *buf, size_t len, uint32_t *value);
int tern_vbi_size(uint32_t value);

#endif
