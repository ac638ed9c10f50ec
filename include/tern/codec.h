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

#include "tern/error.h"

/* Protocol levels as they appear in CONNECT. */
#define TERN_MQTT_31 3
#define TERN_MQTT_311 4
#define TERN_MQTT_5 5

/* Largest remaining length MQTT can express (4-byte variable byte integer). */
#define TERN_MAX_REMAINING_LENGTH 268435455u
/* Fixed header is at most 1 + 4 bytes. */
#define TERN_MAX_FIXED_HEADER 5
/* Subscription identifiers a single outgoing PUBLISH may carry (one per matching
 * subscription); more matches than this are truncated by the broker. */
#define TERN_MAX_SUB_IDS 8

enum tern_packet_type {
    TERN_CONNECT = 1,
    TERN_CONNACK = 2,
    TERN_PUBLISH = 3,
    TERN_PUBACK = 4,
    TERN_PUBREC = 5,
    TERN_PUBREL = 6,
    TERN_PUBCOMP = 7,
    TERN_SUBSCRIBE = 8,
    TERN_SUBACK = 9,
    TERN_UNSUBSCRIBE = 10,
    TERN_UNSUBACK = 11,
    TERN_PINGREQ = 12,
    TERN_PINGRESP = 13,
    TERN_DISCONNECT = 14,
    TERN_AUTH = 15,
};

/* MQTT 5 reason codes used by the broker (spec 2.4). */
enum tern_reason {
    TERN_RC_SUCCESS = 0x00, /* also normal disconnection, granted QoS 0 */
    TERN_RC_GRANTED_QOS1 = 0x01,
    TERN_RC_GRANTED_QOS2 = 0x02,
    TERN_RC_DISCONNECT_WITH_WILL = 0x04,
    TERN_RC_NO_MATCHING_SUBSCRIBERS = 0x10,
    TERN_RC_NO_SUBSCRIPTION_EXISTED = 0x11,
    TERN_RC_CONTINUE_AUTH = 0x18,
    TERN_RC_REAUTHENTICATE = 0x19,
    TERN_RC_UNSPECIFIED = 0x80,
    TERN_RC_MALFORMED_PACKET = 0x81,
    TERN_RC_PROTOCOL_ERROR = 0x82,
    TERN_RC_IMPL_SPECIFIC = 0x83,
    TERN_RC_UNSUPPORTED_PROTOCOL_VERSION = 0x84,
    TERN_RC_CLIENT_ID_NOT_VALID = 0x85,
    TERN_RC_BAD_USERNAME_OR_PASSWORD = 0x86,
    TERN_RC_NOT_AUTHORIZED = 0x87,
    TERN_RC_SERVER_UNAVAILABLE = 0x88,
    TERN_RC_SERVER_BUSY = 0x89,
    TERN_RC_BANNED = 0x8A,
    TERN_RC_SERVER_SHUTTING_DOWN = 0x8B,
    TERN_RC_BAD_AUTH_METHOD = 0x8C,
    TERN_RC_KEEP_ALIVE_TIMEOUT = 0x8D,
    TERN_RC_SESSION_TAKEN_OVER = 0x8E,
    TERN_RC_TOPIC_FILTER_INVALID = 0x8F,
    TERN_RC_TOPIC_NAME_INVALID = 0x90,
    TERN_RC_PACKET_ID_IN_USE = 0x91,
    TERN_RC_PACKET_ID_NOT_FOUND = 0x92,
    TERN_RC_RECEIVE_MAX_EXCEEDED = 0x93,
    TERN_RC_TOPIC_ALIAS_INVALID = 0x94,
    TERN_RC_PACKET_TOO_LARGE = 0x95,
    TERN_RC_MESSAGE_RATE_TOO_HIGH = 0x96,
    TERN_RC_QUOTA_EXCEEDED = 0x97,
    TERN_RC_ADMIN_ACTION = 0x98,
    TERN_RC_PAYLOAD_FORMAT_INVALID = 0x99,
    TERN_RC_RETAIN_NOT_SUPPORTED = 0x9A,
    TERN_RC_QOS_NOT_SUPPORTED = 0x9B,
    TERN_RC_USE_ANOTHER_SERVER = 0x9C,
    TERN_RC_SERVER_MOVED = 0x9D,
    TERN_RC_SHARED_SUBS_NOT_SUPPORTED = 0x9E,
    TERN_RC_CONNECTION_RATE_EXCEEDED = 0x9F,
    TERN_RC_MAX_CONNECT_TIME = 0xA0,
    TERN_RC_SUB_IDS_NOT_SUPPORTED = 0xA1,
    TERN_RC_WILDCARD_SUBS_NOT_SUPPORTED = 0xA2,
};

/* MQTT 3.1.1 CONNACK return codes. */
enum tern_connack_v3 {
    TERN_V3_ACCEPTED = 0,
    TERN_V3_BAD_PROTOCOL = 1,
    TERN_V3_ID_REJECTED = 2,
    TERN_V3_SERVER_UNAVAILABLE = 3,
    TERN_V3_BAD_CREDENTIALS = 4,
    TERN_V3_NOT_AUTHORIZED = 5,
};

/* MQTT 5 property identifiers (spec 2.2.2.2). */
enum tern_prop_id {
    TERN_PROP_PAYLOAD_FORMAT = 0x01,
    TERN_PROP_MESSAGE_EXPIRY = 0x02,
    TERN_PROP_CONTENT_TYPE = 0x03,
    TERN_PROP_RESPONSE_TOPIC = 0x08,
    TERN_PROP_CORRELATION_DATA = 0x09,
    TERN_PROP_SUBSCRIPTION_ID = 0x0B,
    TERN_PROP_SESSION_EXPIRY = 0x11,
    TERN_PROP_ASSIGNED_CLIENT_ID = 0x12,
    TERN_PROP_SERVER_KEEPALIVE = 0x13,
    TERN_PROP_AUTH_METHOD = 0x15,
    TERN_PROP_AUTH_DATA = 0x16,
    TERN_PROP_REQUEST_PROBLEM_INFO = 0x17,
    TERN_PROP_WILL_DELAY = 0x18,
    TERN_PROP_REQUEST_RESPONSE_INFO = 0x19,
    TERN_PROP_RESPONSE_INFO = 0x1A,
    TERN_PROP_SERVER_REFERENCE = 0x1C,
    TERN_PROP_REASON_STRING = 0x1F,
    TERN_PROP_RECEIVE_MAX = 0x21,
    TERN_PROP_TOPIC_ALIAS_MAX = 0x22,
    TERN_PROP_TOPIC_ALIAS = 0x23,
    TERN_PROP_MAX_QOS = 0x24,
    TERN_PROP_RETAIN_AVAILABLE = 0x25,
    TERN_PROP_USER = 0x26,
    TERN_PROP_MAX_PACKET_SIZE = 0x27,
    TERN_PROP_WILDCARD_SUB_AVAILABLE = 0x28,
    TERN_PROP_SUB_ID_AVAILABLE = 0x29,
    TERN_PROP_SHARED_SUB_AVAILABLE = 0x2A,
};

/* Bit for property id in tern_props.mask. All ids are < 64. */
#define TERN_PROP_BIT(id) (UINT64_C(1) << (id))

/* A byte range: a UTF-8 string or binary data. Not NUL-terminated. */
struct tern_bytes {
    const uint8_t *ptr;
    uint32_t len;
};

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

/* Subscription options byte (v5 3.8.3.1); in 3.1.1 only the QoS bits exist. */
#define TERN_SUBOPT_QOS_MASK 0x03
#define TERN_SUBOPT_NO_LOCAL 0x04
#define TERN_SUBOPT_RETAIN_AS_PUBLISHED 0x08
#define TERN_SUBOPT_RETAIN_HANDLING_SHIFT 4
#define TERN_SUBOPT_RETAIN_HANDLING_MASK 0x30

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
