/* MQTT's numbers: protocol levels, packet types, reason codes, property ids and
 * subscription options (MQTT 3.1.1 and 5.0). Vocabulary shared by the codec
 * (node/codec) and the replicated state (storage/), which stores versions, ack
 * types and reason codes but never parses a packet. */
#ifndef TERN_MQTT_H
#define TERN_MQTT_H

#include <stdint.h>

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

/* Subscription options byte (v5 3.8.3.1); in 3.1.1 only the QoS bits exist. */
#define TERN_SUBOPT_QOS_MASK 0x03
#define TERN_SUBOPT_NO_LOCAL 0x04
#define TERN_SUBOPT_RETAIN_AS_PUBLISHED 0x08
#define TERN_SUBOPT_RETAIN_HANDLING_SHIFT 4
#define TERN_SUBOPT_RETAIN_HANDLING_MASK 0x30

#endif
