/* WebSocket engine (include/stream/tern/ws.h): the RFC 6455 handshake and framing.
 *
 * Input is kept in one buffer from which the handshake is parsed in place and
 * frames are decoded as they come: a data frame's payload is copied out
 * (unmasked) as soon as it is there, so only a frame header or a control frame
 * (at most 125 bytes of payload) ever waits for more input. Output (the HTTP
 * answer, frames) is appended to a second buffer. Both are freed when empty.
 *
 * What is refused and how (RFC 6455 section 5 and 7, MQTT 5.0 chapter 6):
 *  - a handshake that is not a valid upgrade: an HTTP error and no frames;
 *  - unmasked client frames (5.1), RSV bits without an extension (5.2),
 *    reserved opcodes, fragmented or long control frames (5.5), a continuation
 *    without a message or a message inside one (5.4): close 1002;
 *  - text frames (MQTT uses binary frames only, [MQTT-6.0.0-1]): close 1003;
 *  - a frame whose payload is over frame_bytes_max: close 1009, decided on the
 *    header, before the payload is read.
 *
 * About 800 lines on purpose: the handshake and the framing share the input
 * buffer and the close path, and each half alone would export that state.
 */
#include "tern/ws.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h> /* SHA_DIGEST_LENGTH */

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#define KEY_LEN 24 /* base64 of 16 bytes */
#define ERR_TEXT_MAX 160
#define CONTROL_MAX 125

enum ws_state {
    WS_SERVER_HANDSHAKE,
    WS_CLIENT_HANDSHAKE,
    WS_OPEN,
    WS_DONE, /* refused, failed or closed: result says which */
};

struct ws_buf {
    uint8_t *p;
    size_t off, len, cap; /* unread bytes are p[off, len) */
};

struct tern_ws_engine {
    const struct tern_ws_opts *o;
    struct ws_buf in, out;
    uint8_t state;
    bool client;
    /* The frame being decoded. */
    bool in_frame;   /* its header is read */
    bool in_message; /* a fragmented binary message waits for continuations */
    bool masked;
    bool close_sent;
    bool upgraded; /* the handshake succeeded (and the state may be DONE since) */
    uint8_t opcode;
    uint8_t mask[4];
    uint64_t left;  /* payload bytes still to come */
    uint64_t done;  /* payload bytes already handed on (mask offset) */
    size_t scanned; /* handshake: input already searched for the blank line */
    int result;     /* of read once state is WS_DONE */
    int http_status;
    uint16_t close_code;
    char subprotocol[12];
    char accept[TERN_WS_ACCEPT_LEN + 1]; /* client: what the server must answer */
    char error[ERR_TEXT_MAX];
};

/* --- buffers -------------------------------------------------------------------- */

static size_t buf_avail(const struct ws_buf *b)
{
    return b->len - b->off;
}

/* The unread bytes; never NULL, so that an empty buffer (freed when idle) is no
 * null pointer arithmetic (UBSan, found by fuzz_ws). */
static const uint8_t *buf_at(const struct ws_buf *b)
{
    static const uint8_t none[1];
    return b->p ? b->p + b->off : none;
}

/* Room for len more bytes (the unread part moved to the front first). */
static int buf_reserve(struct ws_buf *b, size_t len)
{
    if (b->off > 0 && b->off == b->len)
        b->off = b->len = 0;
    if (b->cap - b->len >= len)
        return TERN_OK;
    if (b->off > 0) {
        memmove(b->p, b->p + b->off, b->len - b->off);
        b->len -= b->off;
        b->off = 0;
        if (b->cap - b->len >= len)
            return TERN_OK;
    }
    if (len > SIZE_MAX / 2 - b->len)
        return TERN_ENOMEM;
    size_t need = b->len + len, cap = b->cap ? b->cap * 2 : 256;
    if (cap < need)
        cap = need;
    uint8_t *p = realloc(b->p, cap);
    if (!p)
        return TERN_ENOMEM;
    b->p = p;
    b->cap = cap;
    return TERN_OK;
}

static int buf_append(struct ws_buf *b, const void *data, size_t len)
{
    if (buf_reserve(b, len) != TERN_OK)
        return TERN_ENOMEM;
    memcpy(b->p + b->len, data, len);
    b->len += len;
    return TERN_OK;
}

/* Drops what was read; an empty buffer gives its memory back. */
static void buf_trim(struct ws_buf *b)
{
    if (b->off < b->len)
        return;
    free(b->p);
    memset(b, 0, sizeof(*b));
}

/* --- helpers -------------------------------------------------------------------- */

void tern_ws_accept_key(const char *key, size_t key_len, char out[TERN_WS_ACCEPT_LEN + 1])
{
    unsigned char md[SHA_DIGEST_LENGTH];
    char in[KEY_LEN + sizeof(WS_GUID)];
    size_t n = key_len < KEY_LEN ? key_len : KEY_LEN; /* longer keys are refused */
    memcpy(in, key, n);
    memcpy(in + n, WS_GUID, sizeof(WS_GUID) - 1);
    EVP_Digest(in, n + sizeof(WS_GUID) - 1, md, NULL, EVP_sha1(), NULL);
    EVP_EncodeBlock((unsigned char *)out, md, SHA_DIGEST_LENGTH); /* 28 + NUL */
}

size_t tern_ws_frame_header(uint8_t *out, bool fin, uint8_t opcode, uint64_t len,
                            const uint8_t mask[4])
{
    size_t n = 0;
    out[n++] = (uint8_t)((fin ? 0x80 : 0) | (opcode & 0x0F));
    uint8_t m = mask ? 0x80 : 0;
    if (len < 126) {
        out[n++] = (uint8_t)(m | len);
    } else if (len <= 0xFFFF) {
        out[n++] = m | 126;
        out[n++] = (uint8_t)(len >> 8);
        out[n++] = (uint8_t)len;
    } else {
        out[n++] = m | 127;
        for (int i = 7; i >= 0; i--)
            out[n++] = (uint8_t)(len >> (8 * i));
    }
    if (mask) {
        memcpy(out + n, mask, 4);
        n += 4;
    }
    return n;
}

void tern_ws_mask(uint8_t *data, size_t len, const uint8_t mask[4], size_t offset)
{
    for (size_t i = 0; i < len; i++)
        data[i] ^= mask[(offset + i) & 3];
}

static bool ieq(const char *a, size_t alen, const char *b)
{
    size_t blen = strlen(b);
    if (alen != blen)
        return false;
    for (size_t i = 0; i < alen; i++) {
        char x = a[i], y = b[i];
        if (x >= 'A' && x <= 'Z')
            x = (char)(x - 'A' + 'a');
        if (y >= 'A' && y <= 'Z')
            y = (char)(y - 'A' + 'a');
        if (x != y)
            return false;
    }
    return true;
}

static bool is_ows(char ch)
{
    return ch == ' ' || ch == '\t';
}

/* Whether a comma-separated header value holds token (case-insensitive when
 * icase, as Upgrade and Connection are; subprotocols are case-sensitive). */
static bool list_has(const char *v, size_t len, const char *token, bool icase)
{
    size_t i = 0;
    while (i < len) {
        while (i < len && (is_ows(v[i]) || v[i] == ','))
            i++;
        size_t s = i;
        while (i < len && v[i] != ',')
            i++;
        size_t e = i;
        while (e > s && is_ows(v[e - 1]))
            e--;
        if (e > s &&
            (icase ? ieq(v + s, e - s, token)
                   : (e - s == strlen(token) && memcmp(v + s, token, e - s) == 0)))
            return true;
    }
    return false;
}

static bool is_b64(char ch)
{
    return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
           (ch >= '0' && ch <= '9') || ch == '+' || ch == '/';
}

/* A Sec-WebSocket-Key must be the base64 of 16 bytes (RFC 6455 4.2.1). */
static bool key_ok(const char *k, size_t len)
{
    if (len != KEY_LEN || k[22] != '=' || k[23] != '=')
        return false;
    for (size_t i = 0; i < 22; i++)
        if (!is_b64(k[i]))
            return false;
    return true;
}

/* --- output --------------------------------------------------------------------- */

static int queue_frame(struct tern_ws_engine *e, uint8_t opcode, const uint8_t *data,
                       size_t len)
{
    uint8_t hdr[TERN_WS_FRAME_HEADER_MAX], mask[4];
    if (e->client && RAND_bytes(mask, sizeof(mask)) != 1)
        return TERN_ENOMEM;
    size_t h = tern_ws_frame_header(hdr, true, opcode, len, e->client ? mask : NULL);
    if (len > SIZE_MAX - h || buf_reserve(&e->out, h + len) != TERN_OK)
        return TERN_ENOMEM; /* nothing half queued */
    buf_append(&e->out, hdr, h);
    if (len)
        buf_append(&e->out, data, len);
    if (e->client)
        tern_ws_mask(e->out.p + e->out.len - len, len, mask, 0);
    return TERN_OK;
}

static void send_close(struct tern_ws_engine *e, uint16_t code)
{
    if (e->close_sent)
        return;
    e->close_sent = true;
    e->close_code = code;
    uint8_t p[2] = {(uint8_t)(code >> 8), (uint8_t)code};
    queue_frame(e, TERN_WS_OP_CLOSE, p, code ? 2 : 0);
}

/* A frame broke the protocol: close with code, and no more input. */
static int fail(struct tern_ws_engine *e, uint16_t code, const char *why)
{
    snprintf(e->error, sizeof(e->error), "%s (close %u)", why, (unsigned)code);
    send_close(e, code);
    e->state = WS_DONE;
    e->result = TERN_EPROTO;
    return TERN_EPROTO;
}

/* --- the server's handshake ----------------------------------------------------- */

static const char *status_text(int status)
{
    switch (status) {
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 426:
        return "Upgrade Required";
    case 431:
        return "Request Header Fields Too Large";
    default:
        return "Bad Request";
    }
}

/* Refuses the upgrade: an HTTP error response with why as its body. */
static int refuse(struct tern_ws_engine *e, int status, const char *why)
{
    char resp[512];
    int n = snprintf(resp, sizeof(resp),
                     "HTTP/1.1 %d %s\r\nConnection: close\r\nContent-Type: text/plain\r\n"
                     "%sContent-Length: %zu\r\n\r\n%s\n",
                     status, status_text(status),
                     status == 426 ? "Sec-WebSocket-Version: 13\r\n" : "",
                     strlen(why) + 1, why);
    if (n > 0 && (size_t)n < sizeof(resp))
        buf_append(&e->out, resp, (size_t)n);
    snprintf(e->error, sizeof(e->error), "HTTP %d: %s", status, why);
    e->http_status = status;
    e->state = WS_DONE;
    e->result = TERN_EPROTO;
    return TERN_EPROTO;
}

/* Where the head (request or status line and headers) ends: the offset just
 * past its blank line, or 0 if it has not all arrived. *scanned remembers how
 * far earlier calls looked, so a request sent a byte at a time costs linear
 * time, not quadratic (the input does not move during the handshake). */
static size_t head_end(const uint8_t *p, size_t len, size_t *scanned)
{
    for (size_t i = *scanned > 3 ? *scanned : 3; i < len; i++)
        if (p[i] == '\n' && p[i - 1] == '\r' && p[i - 2] == '\n' && p[i - 3] == '\r')
            return i + 1;
    *scanned = len;
    return 0;
}

struct request {
    const char *key, *version, *origin;
    size_t key_len, version_len, origin_len;
    int keys, origins;
    bool host, upgrade, connection, mqtt, mqttv31;
};

static void header(struct request *r, const char *name, size_t nlen, const char *v,
                   size_t vlen)
{
    if (ieq(name, nlen, "host")) {
        r->host = true;
    } else if (ieq(name, nlen, "upgrade")) {
        r->upgrade |= list_has(v, vlen, "websocket", true);
    } else if (ieq(name, nlen, "connection")) {
        r->connection |= list_has(v, vlen, "upgrade", true);
    } else if (ieq(name, nlen, "sec-websocket-key")) {
        r->key = v;
        r->key_len = vlen;
        r->keys++;
    } else if (ieq(name, nlen, "sec-websocket-version")) {
        r->version = v;
        r->version_len = vlen;
    } else if (ieq(name, nlen, "sec-websocket-protocol")) {
        r->mqtt |= list_has(v, vlen, "mqtt", false);
        r->mqttv31 |= list_has(v, vlen, "mqttv3.1", false);
    } else if (ieq(name, nlen, "origin")) {
        r->origin = v;
        r->origin_len = vlen;
        r->origins++;
    }
}

/* Splits the header lines of head[0, len) (after the first line) into header(). */
static bool parse_headers(struct request *r, const char *h, size_t len)
{
    size_t i = 0;
    while (i < len) {
        const char *nl = memchr(h + i, '\n', len - i);
        size_t end = nl ? (size_t)(nl - h) : len;
        size_t le = end;
        if (le > i && h[le - 1] == '\r')
            le--;
        if (le == i)
            break; /* the blank line */
        if (is_ows(h[i]))
            return false; /* obsolete line folding */
        const char *colon = memchr(h + i, ':', le - i);
        if (!colon || colon == h + i)
            return false;
        size_t nlen = (size_t)(colon - (h + i));
        for (size_t k = 0; k < nlen; k++)
            if (h[i + k] <= ' ' || h[i + k] >= 127)
                return false;
        size_t vs = (size_t)(colon - h) + 1, ve = le;
        while (vs < ve && is_ows(h[vs]))
            vs++;
        while (ve > vs && is_ows(h[ve - 1]))
            ve--;
        header(r, h + i, nlen, h + vs, ve - vs);
        i = end + 1;
    }
    return true;
}

static bool origin_allowed(const struct tern_ws_opts *o, const struct request *r)
{
    if (!o->origins || o->origin_count == 0)
        return true;
    if (r->origins != 1)
        return false;
    for (size_t i = 0; i < o->origin_count; i++)
        if (ieq(r->origin, r->origin_len, o->origins[i]))
            return true;
    return false;
}

static int server_handshake(struct tern_ws_engine *e)
{
    const char *h = (const char *)buf_at(&e->in);
    size_t avail = buf_avail(&e->in);
    size_t end = head_end((const uint8_t *)h, avail, &e->scanned);
    if (end == 0)
        return avail > e->o->handshake_bytes_max
                   ? refuse(e, 431, "upgrade request over handshake_bytes_max")
                   : TERN_EAGAIN;
    if (end > e->o->handshake_bytes_max)
        return refuse(e, 431, "upgrade request over handshake_bytes_max");
    /* Request line: GET SP target SP HTTP/1.1 */
    const char *nl = memchr(h, '\n', end);
    size_t ll = (size_t)(nl - h);
    if (ll > 0 && h[ll - 1] == '\r')
        ll--;
    const char *sp1 = memchr(h, ' ', ll);
    const char *sp2 = sp1 ? memchr(sp1 + 1, ' ', ll - (size_t)(sp1 + 1 - h)) : NULL;
    if (!sp1 || !sp2 || (size_t)(sp1 - h) != 3 || memcmp(h, "GET", 3) != 0)
        return refuse(e, 400, "not a GET request");
    if (ll - (size_t)(sp2 + 1 - h) != 8 || memcmp(sp2 + 1, "HTTP/1.1", 8) != 0)
        return refuse(e, 400, "not HTTP/1.1");
    const char *target = sp1 + 1;
    size_t tlen = (size_t)(sp2 - target);
    const char *q = memchr(target, '?', tlen);
    if (q)
        tlen = (size_t)(q - target);
    if (tlen != strlen(e->o->path) || memcmp(target, e->o->path, tlen) != 0)
        return refuse(e, 404, "no WebSocket endpoint at this path");
    struct request r;
    memset(&r, 0, sizeof(r));
    if (!parse_headers(&r, nl + 1, end - (size_t)(nl + 1 - h)))
        return refuse(e, 400, "malformed header line");
    if (!r.upgrade || !r.connection)
        return refuse(e, 400,
                      "not a WebSocket upgrade (Upgrade: websocket, "
                      "Connection: Upgrade)");
    if (!r.host)
        return refuse(e, 400, "no Host header");
    if (r.keys != 1 || !key_ok(r.key, r.key_len))
        return refuse(e, 400, "bad Sec-WebSocket-Key");
    if (!r.version || r.version_len != 2 || memcmp(r.version, "13", 2) != 0)
        return refuse(e, 426, "Sec-WebSocket-Version must be 13");
    if (!origin_allowed(e->o, &r))
        return refuse(e, 403, "Origin not allowed");
    if (!r.mqtt && !r.mqttv31)
        return refuse(e, 400, "Sec-WebSocket-Protocol must offer mqtt");
    snprintf(e->subprotocol, sizeof(e->subprotocol), "%s", r.mqtt ? "mqtt" : "mqttv3.1");
    char accept[TERN_WS_ACCEPT_LEN + 1], resp[256];
    tern_ws_accept_key(r.key, r.key_len, accept);
    int n = snprintf(resp, sizeof(resp),
                     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n"
                     "Sec-WebSocket-Protocol: %s\r\n\r\n",
                     accept, e->subprotocol);
    if (buf_append(&e->out, resp, (size_t)n) != TERN_OK)
        return TERN_ENOMEM;
    e->in.off += end;
    e->state = WS_OPEN;
    e->upgraded = true;
    return TERN_OK;
}

/* --- the client's handshake ----------------------------------------------------- */

static int client_handshake(struct tern_ws_engine *e)
{
    const char *h = (const char *)buf_at(&e->in);
    size_t avail = buf_avail(&e->in);
    size_t end = head_end((const uint8_t *)h, avail, &e->scanned);
    if (end == 0 && avail <= e->o->handshake_bytes_max)
        return TERN_EAGAIN;
    e->state = WS_DONE;
    e->result = TERN_EPROTO;
    if (end == 0 || end > e->o->handshake_bytes_max) {
        snprintf(e->error, sizeof(e->error), "answer over handshake_bytes_max");
        return TERN_EPROTO;
    }
    int status = 0;
    for (size_t i = 9; end >= 12 && i < 12 && h[i] >= '0' && h[i] <= '9'; i++)
        status = status * 10 + (h[i] - '0');
    if (end < 12 || memcmp(h, "HTTP/1.1 ", 9) != 0 || status != 101) {
        const char *nl = memchr(h, '\r', end);
        e->http_status = status;
        snprintf(e->error, sizeof(e->error), "server answered \"%.*s\"",
                 nl ? (int)(nl - h) : 0, h);
        return TERN_EPROTO;
    }
    /* Find Sec-WebSocket-Accept and Sec-WebSocket-Protocol. */
    bool accepted = false;
    for (size_t i = 0; i < end;) {
        const char *nl = memchr(h + i, '\n', end - i);
        size_t le = nl ? (size_t)(nl - h) : end;
        const char *line = h + i;
        size_t len = le - i;
        if (len && line[len - 1] == '\r')
            len--;
        const char *colon = memchr(line, ':', len);
        if (colon) {
            size_t nlen = (size_t)(colon - line);
            const char *v = colon + 1;
            size_t vlen = len - nlen - 1;
            while (vlen && is_ows(*v))
                v++, vlen--;
            while (vlen && is_ows(v[vlen - 1]))
                vlen--;
            if (ieq(line, nlen, "sec-websocket-accept"))
                accepted = vlen == TERN_WS_ACCEPT_LEN && memcmp(v, e->accept, vlen) == 0;
            else if (ieq(line, nlen, "sec-websocket-protocol") &&
                     vlen < sizeof(e->subprotocol))
                snprintf(e->subprotocol, sizeof(e->subprotocol), "%.*s", (int)vlen, v);
        }
        i = le + 1;
    }
    if (!accepted) {
        snprintf(e->error, sizeof(e->error), "wrong or no Sec-WebSocket-Accept");
        return TERN_EPROTO;
    }
    e->in.off += end;
    e->state = WS_OPEN;
    e->upgraded = true;
    e->result = TERN_OK;
    return TERN_OK;
}

/* --- frames --------------------------------------------------------------------- */

/* Reads the next frame header: TERN_OK, TERN_EAGAIN (not all there) or the
 * failure. */
static int frame_header(struct tern_ws_engine *e)
{
    const uint8_t *p = buf_at(&e->in);
    size_t avail = buf_avail(&e->in);
    if (avail < 2)
        return TERN_EAGAIN;
    bool fin = p[0] & 0x80, masked = p[1] & 0x80;
    uint8_t op = p[0] & 0x0F, len7 = p[1] & 0x7F;
    size_t hl = 2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0) + (masked ? 4 : 0);
    if (avail < hl)
        return TERN_EAGAIN;
    uint64_t len = len7;
    size_t i = 2;
    if (len7 == 126) {
        len = ((uint64_t)p[2] << 8) | p[3];
        i = 4;
    } else if (len7 == 127) {
        len = 0;
        for (i = 2; i < 10; i++)
            len = (len << 8) | p[i];
        if (len >> 63)
            return fail(e, TERN_WS_CLOSE_PROTOCOL, "frame length with the top bit set");
    }
    if (p[0] & 0x70)
        return fail(e, TERN_WS_CLOSE_PROTOCOL, "RSV bits set (no extension negotiated)");
    if (op != TERN_WS_OP_CONT && op != TERN_WS_OP_TEXT && op != TERN_WS_OP_BINARY &&
        op != TERN_WS_OP_CLOSE && op != TERN_WS_OP_PING && op != TERN_WS_OP_PONG)
        return fail(e, TERN_WS_CLOSE_PROTOCOL, "reserved opcode");
    if (!e->client && !masked)
        return fail(e, TERN_WS_CLOSE_PROTOCOL, "unmasked client frame");
    if (e->client && masked)
        return fail(e, TERN_WS_CLOSE_PROTOCOL, "masked server frame");
    if (op & 0x8) {
        if (!fin || len > CONTROL_MAX)
            return fail(e, TERN_WS_CLOSE_PROTOCOL, "fragmented or long control frame");
    } else if (op == TERN_WS_OP_TEXT) {
        return fail(e, TERN_WS_CLOSE_UNSUPPORTED, "text frame (MQTT is sent in binary)");
    } else if (op == TERN_WS_OP_BINARY && e->in_message) {
        return fail(e, TERN_WS_CLOSE_PROTOCOL, "new message inside a fragmented one");
    } else if (op == TERN_WS_OP_CONT && !e->in_message) {
        return fail(e, TERN_WS_CLOSE_PROTOCOL, "continuation without a message");
    }
    if (len > e->o->frame_bytes_max)
        return fail(e, TERN_WS_CLOSE_TOO_BIG, "frame over frame_bytes_max");
    if (!(op & 0x8))
        e->in_message = !fin;
    if (masked)
        memcpy(e->mask, p + i, 4);
    e->masked = masked;
    e->opcode = op;
    e->left = len;
    e->done = 0;
    e->in_frame = true;
    e->in.off += hl;
    return TERN_OK;
}

static bool close_code_ok(uint16_t c)
{
    return (c >= 1000 && c <= 1003) || (c >= 1007 && c <= 1011) ||
           (c >= 3000 && c <= 4999);
}

/* A whole control frame is in the input: answer it. */
static int control_frame(struct tern_ws_engine *e)
{
    uint8_t p[CONTROL_MAX];
    size_t len = (size_t)e->left;
    memcpy(p, buf_at(&e->in), len);
    if (e->masked)
        tern_ws_mask(p, len, e->mask, 0);
    e->in.off += len;
    e->in_frame = false;
    if (e->opcode == TERN_WS_OP_PING)
        return queue_frame(e, TERN_WS_OP_PONG, p, len) == TERN_OK ? TERN_OK : TERN_ENOMEM;
    if (e->opcode == TERN_WS_OP_PONG)
        return TERN_OK;
    /* Close: echo a valid code (none: 1000), then no more frames either way. */
    uint16_t code = len >= 2 ? (uint16_t)((p[0] << 8) | p[1]) : TERN_WS_CLOSE_NORMAL;
    if (len == 1 || !close_code_ok(code))
        return fail(e, TERN_WS_CLOSE_PROTOCOL, "bad close frame");
    send_close(e, code);
    snprintf(e->error, sizeof(e->error), "close %u from the peer", (unsigned)code);
    e->state = WS_DONE;
    e->result = TERN_ESHUTDOWN;
    return TERN_ESHUTDOWN;
}

int tern_ws_engine_read(struct tern_ws_engine *e, uint8_t *buf, size_t cap, size_t *got)
{
    *got = 0;
    int rc = TERN_OK;
    if (e->state == WS_SERVER_HANDSHAKE)
        rc = server_handshake(e);
    else if (e->state == WS_CLIENT_HANDSHAKE)
        rc = client_handshake(e);
    if (rc != TERN_OK)
        return rc;
    if (e->state == WS_DONE)
        return e->result;
    size_t n = 0;
    while (e->state == WS_OPEN) {
        if (!e->in_frame) {
            if (n == cap && cap > 0)
                break; /* full: a control frame behind the data waits its turn */
            rc = frame_header(e);
            if (rc != TERN_OK)
                break;
        }
        if (e->opcode & 0x8) {
            if (buf_avail(&e->in) < e->left) {
                rc = TERN_EAGAIN;
                break;
            }
            rc = control_frame(e);
            if (rc != TERN_OK)
                break;
            continue;
        }
        size_t take = buf_avail(&e->in);
        if (take > e->left)
            take = (size_t)e->left;
        if (take > cap - n)
            take = cap - n;
        if (take == 0 && e->left > 0)
            break;
        memcpy(buf + n, buf_at(&e->in), take);
        if (e->masked)
            tern_ws_mask(buf + n, take, e->mask, (size_t)(e->done & 3));
        e->in.off += take;
        e->left -= take;
        e->done += take;
        n += take;
        if (e->left == 0)
            e->in_frame = false;
    }
    buf_trim(&e->in);
    *got = n;
    if (n > 0)
        return TERN_OK; /* a close or failure behind it: the next read says so */
    return rc == TERN_OK ? TERN_EAGAIN : rc;
}

/* --- the rest of the API -------------------------------------------------------- */

struct tern_ws_engine *tern_ws_engine_new(const struct tern_ws_opts *o)
{
    struct tern_ws_engine *e = calloc(1, sizeof(*e));
    if (!e)
        return NULL;
    e->o = o;
    e->state = WS_SERVER_HANDSHAKE;
    return e;
}

struct tern_ws_engine *tern_ws_engine_new_client(const struct tern_ws_opts *o,
                                                 const char *host, const char *path,
                                                 const char *subprotocol)
{
    uint8_t raw[16];
    char key[KEY_LEN + 1], req[1024];
    if (RAND_bytes(raw, sizeof(raw)) != 1)
        return NULL;
    EVP_EncodeBlock((unsigned char *)key, raw, sizeof(raw));
    int n = snprintf(req, sizeof(req),
                     "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                     "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: %s\r\n\r\n",
                     path, host, key, subprotocol);
    if (n < 0 || (size_t)n >= sizeof(req))
        return NULL;
    struct tern_ws_engine *e = tern_ws_engine_new(o);
    if (!e)
        return NULL;
    e->client = true;
    e->state = WS_CLIENT_HANDSHAKE;
    tern_ws_accept_key(key, KEY_LEN, e->accept);
    if (buf_append(&e->out, req, (size_t)n) != TERN_OK) {
        tern_ws_engine_free(e);
        return NULL;
    }
    return e;
}

void tern_ws_engine_free(struct tern_ws_engine *e)
{
    if (!e)
        return;
    free(e->in.p);
    free(e->out.p);
    free(e);
}

int tern_ws_engine_recv(struct tern_ws_engine *e, const uint8_t *data, size_t len)
{
    if (e->state == WS_DONE || len == 0)
        return TERN_OK; /* nothing more is read after a close or a refusal */
    return buf_append(&e->in, data, len);
}

int tern_ws_engine_write(struct tern_ws_engine *e, const uint8_t *data, size_t len)
{
    if (e->state != WS_OPEN || e->close_sent) {
        snprintf(e->error, sizeof(e->error), "write %s",
                 e->state == WS_OPEN || e->close_sent ? "after the close"
                                                      : "before the handshake");
        return TERN_EPROTO;
    }
    return len ? queue_frame(e, TERN_WS_OP_BINARY, data, len) : TERN_OK;
}

void tern_ws_engine_close(struct tern_ws_engine *e, uint16_t code)
{
    if (e->state == WS_OPEN)
        send_close(e, code);
}

size_t tern_ws_engine_pending(const struct tern_ws_engine *e)
{
    return buf_avail(&e->out);
}

size_t tern_ws_engine_take(struct tern_ws_engine *e, uint8_t *buf, size_t cap)
{
    size_t n = buf_avail(&e->out);
    if (n > cap)
        n = cap;
    if (n) {
        memcpy(buf, e->out.p + e->out.off, n);
        e->out.off += n;
    }
    buf_trim(&e->out);
    return n;
}

uint8_t *tern_ws_engine_take_buffer(struct tern_ws_engine *e, const uint8_t **data,
                                    size_t *len)
{
    *len = buf_avail(&e->out);
    if (*len == 0) {
        buf_trim(&e->out);
        *data = NULL;
        return NULL;
    }
    uint8_t *p = e->out.p;
    *data = p + e->out.off;
    memset(&e->out, 0, sizeof(e->out));
    return p;
}

bool tern_ws_engine_open(const struct tern_ws_engine *e)
{
    return e->upgraded;
}

int tern_ws_engine_http_status(const struct tern_ws_engine *e)
{
    return e->http_status;
}

uint16_t tern_ws_engine_close_code(const struct tern_ws_engine *e)
{
    return e->close_code;
}

const char *tern_ws_engine_subprotocol(const struct tern_ws_engine *e)
{
    return e->subprotocol;
}

const char *tern_ws_engine_error(const struct tern_ws_engine *e)
{
    return e->error[0] ? e->error : "no error";
}
