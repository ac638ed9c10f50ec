/* tern commands: the binary record format (docs/commands.md has the layout).
 *
 * Why this shape: a command is written once by the proposer and read by every
 * replica, now and when the log is replayed years later, so the format is
 * explicit bytes (little-endian fixed-width integers, length-prefixed strings),
 * versioned, and canonical: decode rejects anything encode would not produce
 * (unknown flag bits, booleans other than 0/1), so decode + encode gives back
 * the same bytes and two replicas can never read one record two ways.
 *
 * One function per command type describes its fields for both directions
 * (f_u8(c, &field) reads or writes depending on the cursor), so encode and
 * decode cannot drift apart. The read cursor never moves past its end; encode
 * first runs with no output to learn the size, then writes only when the whole
 * record fits.
 */
#include "tern/cmd.h"

#include <assert.h>
#include <stdio.h>
#include <string.h>

#include "tern/error.h"

/* version u8, type u8, now_ms u64, proposal_id u64 */
#define CMD_HEADER_SIZE 18u
/* filter u16 length prefix, options u8, sub_id u32 (plus the filter bytes) */
#define SUB_ENTRY_FIXED 7u
#define STR16_MAX 65535u
#define OPEN_CLEAN_START 0x01u
#define OPEN_HAS_WILL 0x02u
#define MSG_FLAGS_KNOWN                                                                  \
    (TERN_MSG_HAS_PAYLOAD_FORMAT | TERN_MSG_HAS_EXPIRY | TERN_MSG_HAS_CONTENT_TYPE |     \
     TERN_MSG_HAS_RESPONSE_TOPIC | TERN_MSG_HAS_CORRELATION)

static_assert(CMD_HEADER_SIZE == 1 + 1 + 8 + 8, "command header layout");
static_assert(SUB_ENTRY_FIXED == 2 + 1 + 4, "subscription entry layout");
static_assert(TERN_CMD_VERSION >= 1 && TERN_CMD_VERSION <= 255, "version is a u8");
static_assert(sizeof(((struct tern_bytes *)0)->len) == 4, "u32 lengths fit tern_bytes");
static_assert(MSG_FLAGS_KNOWN == 0x1f, "message flag bits");
/* Version 1: every type. Version 2: PUBLISH with a delivery selection. */
#define CMD_VERSION_BASE 1u
#define PUB_SELECT_KNOWN (TERN_PUB_GROUPS | TERN_PUB_NO_PLAIN)
static_assert(TERN_CMD_VERSION == 2, "record versions handled here");

/* --- cursor ------------------------------------------------------------------ */

/* Reads `in` (reading) or writes `out` (out == NULL: only counts). The first
 * error sticks and later calls do nothing, so callers check once at the end. */
struct cur {
    bool reading;
    const uint8_t *in;
    uint8_t *out;
    size_t len; /* reading: input length */
    size_t pos;
    int err;
    const char *what; /* field that failed */
    uint8_t version;  /* of the record being read or written */
};

static void fail(struct cur *c, int err, const char *what)
{
    if (c->err == 0) {
        c->err = err;
        c->what = what;
    }
}

/* A semantic check: malformed input when reading, a bad argument when writing. */
static void check(struct cur *c, bool ok, const char *what)
{
    if (!ok)
        fail(c, c->reading ? TERN_EMALFORMED : TERN_EINVAL, what);
}

static void put(struct cur *c, const void *p, size_t n)
{
    if (c->err)
        return;
    if (n > SIZE_MAX - c->pos) {
        fail(c, TERN_ETOOBIG, "size");
        return;
    }
    if (c->out && n > 0)
        memcpy(c->out + c->pos, p, n);
    c->pos += n;
}

/* Returns n input bytes and advances, or NULL (error set) past the end. */
static const uint8_t *take(struct cur *c, size_t n, const char *what)
{
    if (c->err)
        return NULL;
    if (n > c->len - c->pos) {
        fail(c, TERN_EMALFORMED, what);
        return NULL;
    }
    const uint8_t *p = c->in + c->pos;
    c->pos += n;
    return p;
}

/* Little-endian unsigned integer of n bytes. */
static void f_uint(struct cur *c, uint64_t *v, size_t n, const char *what)
{
    uint8_t b[8];
    if (!c->reading) {
        for (size_t i = 0; i < n; i++)
            b[i] = (uint8_t)(*v >> (8 * i));
        put(c, b, n);
        return;
    }
    const uint8_t *p = take(c, n, what);
    *v = 0;
    for (size_t i = 0; p && i < n; i++)
        *v |= (uint64_t)p[i] << (8 * i);
}

static void f_u8(struct cur *c, uint8_t *v, const char *what)
{
    uint64_t x = *v;
    f_uint(c, &x, 1, what);
    *v = (uint8_t)x;
}

static void f_u16(struct cur *c, uint16_t *v, const char *what)
{
    uint64_t x = *v;
    f_uint(c, &x, 2, what);
    *v = (uint16_t)x;
}

static void f_u32(struct cur *c, uint32_t *v, const char *what)
{
    uint64_t x = *v;
    f_uint(c, &x, 4, what);
    *v = (uint32_t)x;
}

static void f_u64(struct cur *c, uint64_t *v, const char *what)
{
    f_uint(c, v, 8, what);
}

/* A boolean is one byte, 0 or 1 (anything else is not canonical). */
static void f_bool(struct cur *c, bool *v, const char *what)
{
    uint8_t x = *v ? 1 : 0;
    f_u8(c, &x, what);
    check(c, x <= 1, what);
    *v = x == 1;
}

/* Length-prefixed bytes; the prefix is 2 or 4 bytes. */
static void f_lbytes(struct cur *c, struct tern_bytes *b, size_t prefix, const char *what)
{
    uint64_t n = b->len;
    if (!c->reading) {
        check(c, prefix == 4 || n <= STR16_MAX, what);
        check(c, n == 0 || b->ptr != NULL, what);
        f_uint(c, &n, prefix, what);
        put(c, b->ptr, b->len);
        return;
    }
    f_uint(c, &n, prefix, what);
    const uint8_t *p = take(c, (size_t)n, what);
    *b = p ? (struct tern_bytes){p, (uint32_t)n} : (struct tern_bytes){NULL, 0};
}

static void f_str16(struct cur *c, struct tern_bytes *b, const char *what)
{
    f_lbytes(c, b, 2, what);
}

static void f_bytes32(struct cur *c, struct tern_bytes *b, const char *what)
{
    f_lbytes(c, b, 4, what);
}

/* --- subscription lists ------------------------------------------------------ */

static void sub_fields(struct cur *c, struct tern_cmd_sub *e)
{
    f_str16(c, &e->filter, "sub.filter");
    f_u8(c, &e->options, "sub.options");
    f_u32(c, &e->sub_id, "sub.sub_id");
}

size_t tern_cmd_put_sub(uint8_t *out, size_t cap, const struct tern_cmd_sub *e)
{
    struct tern_cmd_sub copy = *e;
    struct cur c = {0};
    sub_fields(&c, &copy);
    if (c.err)
        return 0;
    if (out != NULL && c.pos <= cap) {
        struct cur w = {.out = out};
        sub_fields(&w, &copy);
    }
    return c.pos;
}

bool tern_cmd_next_sub(struct tern_bytes list, uint32_t *pos, struct tern_cmd_sub *e)
{
    if (list.ptr == NULL || *pos >= list.len)
        return false;
    struct tern_cmd_sub tmp = {0};
    struct cur c = {.reading = true, .in = list.ptr, .len = list.len, .pos = *pos};
    sub_fields(&c, &tmp);
    if (c.err)
        return false;
    *e = tmp;
    *pos = (uint32_t)c.pos;
    return true;
}

/* True when list holds exactly count well-formed entries and nothing else. */
static bool sub_list_valid(struct tern_bytes list, uint32_t count)
{
    /* Each entry takes at least SUB_ENTRY_FIXED bytes: bounds the loop. */
    if (count > list.len / SUB_ENTRY_FIXED)
        return false;
    uint32_t pos = 0, n = 0;
    struct tern_cmd_sub e;
    while (n < count && tern_cmd_next_sub(list, &pos, &e))
        n++;
    return n == count && pos == list.len;
}

/* --- PUBLISH group lists -------------------------------------------------------- */

size_t tern_cmd_put_group(uint8_t *out, size_t cap, struct tern_bytes filter)
{
    struct cur c = {0};
    f_str16(&c, &filter, "group");
    if (c.err)
        return 0;
    if (out != NULL && c.pos <= cap) {
        struct cur w = {.out = out};
        f_str16(&w, &filter, "group");
    }
    return c.pos;
}

bool tern_cmd_next_group(struct tern_bytes list, uint32_t *pos, struct tern_bytes *filter)
{
    if (list.ptr == NULL || *pos >= list.len)
        return false;
    struct tern_bytes tmp = {0};
    struct cur c = {.reading = true, .in = list.ptr, .len = list.len, .pos = *pos};
    f_str16(&c, &tmp, "group");
    if (c.err)
        return false;
    *filter = tmp;
    *pos = (uint32_t)c.pos;
    return true;
}

/* True when list holds exactly count entries and nothing else. */
static bool group_list_valid(struct tern_bytes list, uint32_t count)
{
    if (count > list.len / 2) /* an entry takes at least its 2-byte length */
        return false;
    uint32_t pos = 0, n = 0;
    struct tern_bytes e;
    while (n < count && tern_cmd_next_group(list, &pos, &e))
        n++;
    return n == count && pos == list.len;
}

/* --- message ----------------------------------------------------------------- */

static void msg_fields(struct cur *c, struct tern_cmd_msg *m)
{
    f_str16(c, &m->topic, "msg.topic");
    f_bytes32(c, &m->payload, "msg.payload");
    f_u8(c, &m->qos, "msg.qos");
    check(c, m->qos <= 2, "msg.qos");
    f_bool(c, &m->retain, "msg.retain");
    f_u8(c, &m->flags, "msg.flags");
    check(c, (m->flags & ~MSG_FLAGS_KNOWN) == 0, "msg.flags");
    if (m->flags & TERN_MSG_HAS_PAYLOAD_FORMAT)
        f_u8(c, &m->payload_format, "msg.payload_format");
    if (m->flags & TERN_MSG_HAS_EXPIRY)
        f_u32(c, &m->expiry_s, "msg.expiry_s");
    if (m->flags & TERN_MSG_HAS_CONTENT_TYPE)
        f_str16(c, &m->content_type, "msg.content_type");
    if (m->flags & TERN_MSG_HAS_RESPONSE_TOPIC)
        f_str16(c, &m->response_topic, "msg.response_topic");
    if (m->flags & TERN_MSG_HAS_CORRELATION)
        f_str16(c, &m->correlation_data, "msg.correlation_data");
    f_bytes32(c, &m->user, "msg.user");
}

/* --- command bodies ---------------------------------------------------------- */

static void open_fields(struct cur *c, struct tern_cmd *cmd)
{
    f_str16(c, &cmd->u.open.client_id, "open.client_id");
    f_u32(c, &cmd->u.open.node, "open.node");
    f_u8(c, &cmd->u.open.proto, "open.proto");
    uint8_t p = cmd->u.open.proto;
    check(c, p == TERN_MQTT_31 || p == TERN_MQTT_311 || p == TERN_MQTT_5, "open.proto");
    uint8_t bits = (cmd->u.open.clean_start ? OPEN_CLEAN_START : 0) |
                   (cmd->u.open.has_will ? OPEN_HAS_WILL : 0);
    f_u8(c, &bits, "open.flags");
    check(c, (bits & ~(OPEN_CLEAN_START | OPEN_HAS_WILL)) == 0, "open.flags");
    cmd->u.open.clean_start = (bits & OPEN_CLEAN_START) != 0;
    cmd->u.open.has_will = (bits & OPEN_HAS_WILL) != 0;
    f_u32(c, &cmd->u.open.expiry_s, "open.expiry_s");
    f_u16(c, &cmd->u.open.receive_max, "open.receive_max");
    if (cmd->u.open.has_will) {
        f_u32(c, &cmd->u.open.will_delay_s, "open.will_delay_s");
        msg_fields(c, &cmd->u.open.will);
    }
}

static void close_fields(struct cur *c, struct tern_cmd *cmd)
{
    f_str16(c, &cmd->u.close.client_id, "close.client_id");
    f_u64(c, &cmd->u.close.epoch, "close.epoch");
    f_u32(c, &cmd->u.close.expiry_s, "close.expiry_s");
    f_bool(c, &cmd->u.close.publish_will, "close.publish_will");
}

static void sub_cmd_fields(struct cur *c, struct tern_cmd *cmd)
{
    f_str16(c, &cmd->u.sub.client_id, "sub.client_id");
    f_u64(c, &cmd->u.sub.epoch, "sub.epoch");
    f_u16(c, &cmd->u.sub.packet_id, "sub.packet_id");
    f_u32(c, &cmd->u.sub.count, "sub.count");
    f_bytes32(c, &cmd->u.sub.list, "sub.list");
    if (c->err == 0)
        check(c, sub_list_valid(cmd->u.sub.list, cmd->u.sub.count), "sub.list");
}

static void publish_fields(struct cur *c, struct tern_cmd *cmd)
{
    f_str16(c, &cmd->u.publish.client_id, "publish.client_id");
    f_u64(c, &cmd->u.publish.epoch, "publish.epoch");
    f_u16(c, &cmd->u.publish.inbound_packet_id, "publish.inbound_packet_id");
    msg_fields(c, &cmd->u.publish.msg);
    uint8_t *sel = &cmd->u.publish.select;
    if (c->version == CMD_VERSION_BASE) {
        /* Version 1 has no selection: one that is set cannot be written as 1. */
        check(c,
              *sel == 0 && cmd->u.publish.group_count == 0 && !cmd->u.publish.groups.len,
              "publish.select");
        return;
    }
    f_u8(c, sel, "publish.select");
    /* A zero selection is written as version 1 (canonical); NO_PLAIN and a list
     * only come with GROUPS. */
    check(c, *sel != 0 && (*sel & ~PUB_SELECT_KNOWN) == 0 && (*sel & TERN_PUB_GROUPS),
          "publish.select");
    f_u16(c, &cmd->u.publish.group_count, "publish.group_count");
    f_bytes32(c, &cmd->u.publish.groups, "publish.groups");
    if (c->err == 0)
        check(c, group_list_valid(cmd->u.publish.groups, cmd->u.publish.group_count),
              "publish.groups");
}

static void ack_fields(struct cur *c, struct tern_cmd *cmd)
{
    f_str16(c, &cmd->u.ack.client_id, "ack.client_id");
    f_u64(c, &cmd->u.ack.epoch, "ack.epoch");
    f_u16(c, &cmd->u.ack.packet_id, "ack.packet_id");
    f_u8(c, &cmd->u.ack.kind, "ack.kind");
    uint8_t k = cmd->u.ack.kind;
    check(c, k == TERN_PUBACK || k == TERN_PUBREC || k == TERN_PUBCOMP, "ack.kind");
    f_u8(c, &cmd->u.ack.reason, "ack.reason");
}

static void pubrel_fields(struct cur *c, struct tern_cmd *cmd)
{
    f_str16(c, &cmd->u.pubrel.client_id, "pubrel.client_id");
    f_u64(c, &cmd->u.pubrel.epoch, "pubrel.epoch");
    f_u16(c, &cmd->u.pubrel.packet_id, "pubrel.packet_id");
}

static void member_addr(struct cur *c, struct tern_bytes *b, const char *what)
{
    f_str16(c, b, what);
    check(c, b->len <= TERN_MEMBER_ADDR_MAX, what);
}

static void member_fields(struct cur *c, struct tern_cmd *cmd)
{
    f_u32(c, &cmd->u.member.id, "member.id");
    check(c, cmd->u.member.id != 0 && cmd->u.member.id <= TERN_NODE_ID_MAX, "member.id");
    if (cmd->type != TERN_CMD_MEMBER_SET)
        return;
    member_addr(c, &cmd->u.member.raft, "member.raft");
    member_addr(c, &cmd->u.member.peer, "member.peer");
    member_addr(c, &cmd->u.member.mqtt, "member.mqtt");
}

static void limits_fields(struct cur *c, struct tern_cmd *cmd)
{
    f_u16(c, &cmd->u.limits.inflight_max, "limits.inflight_max");
    check(c, cmd->u.limits.inflight_max >= 1, "limits.inflight_max");
    f_u32(c, &cmd->u.limits.queue_max, "limits.queue_max");
    check(c, cmd->u.limits.queue_max >= 1, "limits.queue_max");
    f_u64(c, &cmd->u.limits.queue_bytes_max, "limits.queue_bytes_max");
    check(c, cmd->u.limits.queue_bytes_max >= 1, "limits.queue_bytes_max");
    f_bool(c, &cmd->u.limits.queue_qos0, "limits.queue_qos0");
    f_u8(c, &cmd->u.limits.drop_policy, "limits.drop_policy");
    check(c, cmd->u.limits.drop_policy <= 1, "limits.drop_policy");
    f_u32(c, &cmd->u.limits.retained_max, "limits.retained_max");
    f_u64(c, &cmd->u.limits.retained_bytes_max, "limits.retained_bytes_max");
    f_u32(c, &cmd->u.limits.session_expiry_max_s, "limits.session_expiry_max_s");
    f_u32(c, &cmd->u.limits.message_expiry_max_s, "limits.message_expiry_max_s");
    f_u32(c, &cmd->u.limits.sessions_max, "limits.sessions_max");
    check(c, cmd->u.limits.sessions_max >= 1, "limits.sessions_max");
}

/* Header and body of one command; false for an unknown type. */
static bool cmd_fields(struct cur *c, struct tern_cmd *cmd)
{
    if (cmd->type < TERN_CMD_SESSION_OPEN || cmd->type > TERN_CMD_TYPE_MAX)
        return false;
    f_u64(c, &cmd->now_ms, "now_ms");
    f_u64(c, &cmd->proposal_id, "proposal_id");
    switch (cmd->type) {
    case TERN_CMD_SESSION_OPEN:
        open_fields(c, cmd);
        return true;
    case TERN_CMD_SESSION_CLOSE:
        close_fields(c, cmd);
        return true;
    case TERN_CMD_SUBSCRIBE:
    case TERN_CMD_UNSUBSCRIBE:
        sub_cmd_fields(c, cmd);
        return true;
    case TERN_CMD_PUBLISH:
        publish_fields(c, cmd);
        return true;
    case TERN_CMD_ACK:
        ack_fields(c, cmd);
        return true;
    case TERN_CMD_PUBREL:
        pubrel_fields(c, cmd);
        return true;
    case TERN_CMD_TICK:
    case TERN_CMD_BARRIER:
    case TERN_CMD_ORIGIN_START:
        return true;
    case TERN_CMD_SESSION_DELETE:
        f_str16(c, &cmd->u.del.client_id, "delete.client_id");
        return true;
    case TERN_CMD_RETAIN_DELETE:
        f_str16(c, &cmd->u.retain_delete.topic, "retain_delete.topic");
        return true;
    case TERN_CMD_NODE_DOWN:
        f_u32(c, &cmd->u.node_down.node, "node_down.node");
        return true;
    case TERN_CMD_ROUTE_ADD:
    case TERN_CMD_ROUTE_DEL:
        f_u32(c, &cmd->u.route.node, "route.node");
        f_str16(c, &cmd->u.route.filter, "route.filter");
        return true;
    case TERN_CMD_MEMBER_SET:
    case TERN_CMD_MEMBER_DEL:
        member_fields(c, cmd);
        return true;
    case TERN_CMD_LIMITS:
        limits_fields(c, cmd);
        return true;
    case TERN_CMD_CLUSTER_ID:
        f_u64(c, &cmd->u.cluster_id.id, "cluster_id.id");
        check(c, cmd->u.cluster_id.id != 0, "cluster_id.id");
        return true;
    default:
        return false;
    }
}

/* The oldest version that holds cmd (records are canonical: one encoding). */
static uint8_t cmd_version(const struct tern_cmd *cmd)
{
    return cmd->type == TERN_CMD_PUBLISH && cmd->u.publish.select ? TERN_CMD_VERSION
                                                                  : CMD_VERSION_BASE;
}

static void cmd_write(struct cur *c, struct tern_cmd *cmd)
{
    uint8_t version = cmd_version(cmd);
    c->version = version;
    f_u8(c, &version, "version");
    f_u8(c, &cmd->type, "type");
    if (!cmd_fields(c, cmd))
        fail(c, TERN_EINVAL, "type");
}

size_t tern_cmd_encode(const struct tern_cmd *cmd, uint8_t *out, size_t cap)
{
    /* The field functions take a mutable command (they also decode into it);
     * writing only normalises booleans, so work on a copy. */
    struct tern_cmd copy = *cmd;
    struct cur c = {0};
    cmd_write(&c, &copy);
    if (c.err)
        return 0;
    assert(c.pos >= CMD_HEADER_SIZE);
    if (out != NULL && c.pos <= cap) {
        struct cur w = {.out = out};
        cmd_write(&w, &copy);
        assert(w.err == 0 && w.pos == c.pos);
    }
    return c.pos;
}

static int decode_fail(const struct cur *c, char *errmsg)
{
    if (errmsg != NULL)
        snprintf(errmsg, TERN_ERRMSG_SIZE, "command: bad %s at byte %zu", c->what,
                 c->pos);
    return c->err;
}

int tern_cmd_decode(const uint8_t *buf, size_t len, struct tern_cmd *cmd, size_t *used,
                    char *errmsg)
{
    struct cur c = {.reading = true, .in = buf, .len = buf ? len : 0};
    memset(cmd, 0, sizeof(*cmd));
    uint8_t version = 0;
    f_u8(&c, &version, "version");
    if (c.err == 0 && (version < CMD_VERSION_BASE || version > TERN_CMD_VERSION))
        fail(&c, TERN_EUNSUPPORTED, "version");
    c.version = version;
    f_u8(&c, &cmd->type, "type");
    if (c.err == 0 && !cmd_fields(&c, cmd))
        fail(&c, TERN_EMALFORMED, "type");
    /* Known version, but not the one encode would write (canonical form). */
    if (c.err == 0 && version != cmd_version(cmd))
        fail(&c, TERN_EMALFORMED, "version");
    if (c.err)
        return decode_fail(&c, errmsg);
    if (used != NULL)
        *used = c.pos;
    return TERN_OK;
}
