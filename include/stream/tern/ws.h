/* WebSocket engine (node/ws.c): RFC 6455 for MQTT over WebSockets (MQTT 5.0
 * chapter 6), no sockets, no libuv.
 *
 * Shaped like the TLS engine (include/tls/tern/tls.h): it is fed the bytes that arrived,
 * gives back the MQTT bytes carried in binary frames, and holds the bytes to
 * send (the handshake's HTTP response, frames, pongs, close frames); whoever
 * owns the socket moves them. conn.c stacks it on a plain connection (`ws`
 * listener) or on the TLS engine's plaintext (`wss`), so the MQTT layer sees a
 * byte stream either way. Frames are streamed: a data frame's payload is handed
 * on as it arrives (unmasked in place), never gathered, so a connection holds at
 * most one read plus a frame header of input. Only the handshake digest uses
 * OpenSSL (SHA-1, base64), and only node/ws.c includes it.
 *
 * A server engine parses the client's upgrade request (bounded in size), checks
 * path, Upgrade/Connection, key, version 13, subprotocol ("mqtt", or "mqttv3.1"
 * for old clients) and Origin, and answers 101 or an HTTP error (400, 403, 404,
 * 426) after which the caller closes. A client engine (tests, benchmarks) sends
 * the request and checks the 101 and Sec-WebSocket-Accept.
 *
 * Ownership: an engine keeps a pointer to its opts (the listener's, which
 * outlive every connection); it owns its buffers, which it frees when empty so
 * an idle connection holds none.
 */
#ifndef TERN_WS_H
#define TERN_WS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tern/error.h"

/* Close codes (RFC 6455 7.4.1). */
#define TERN_WS_CLOSE_NORMAL 1000
#define TERN_WS_CLOSE_GOING_AWAY 1001
#define TERN_WS_CLOSE_PROTOCOL 1002
#define TERN_WS_CLOSE_UNSUPPORTED 1003 /* text frames: MQTT uses binary only */
#define TERN_WS_CLOSE_TOO_BIG 1009

/* Frame opcodes. */
#define TERN_WS_OP_CONT 0x0
#define TERN_WS_OP_TEXT 0x1
#define TERN_WS_OP_BINARY 0x2
#define TERN_WS_OP_CLOSE 0x8
#define TERN_WS_OP_PING 0x9
#define TERN_WS_OP_PONG 0xA

#define TERN_WS_FRAME_HEADER_MAX 14 /* 2 + 8 (length) + 4 (mask) */
#define TERN_WS_ACCEPT_LEN 28       /* base64 of a SHA-1 digest */

struct tern_ws_opts {
    const char *path;           /* request path (before any '?'), e.g. "/mqtt" */
    const char *const *origins; /* allowed Origin values; NULL or 0: any */
    size_t origin_count;
    uint32_t handshake_bytes_max; /* the request (line and headers) at most */
    uint64_t frame_bytes_max;     /* a frame's payload at most (close 1009) */
};

struct tern_ws_engine;

/* A server engine checking requests against o. NULL when out of memory. */
struct tern_ws_engine *tern_ws_engine_new(const struct tern_ws_opts *o);
/* A client engine: the request for host and path offering subprotocol is made
 * at once (take it with tern_ws_engine_take). o->frame_bytes_max bounds the
 * server's frames; o->path is not used. */
struct tern_ws_engine *tern_ws_engine_new_client(const struct tern_ws_opts *o,
                                                 const char *host, const char *path,
                                                 const char *subprotocol);
void tern_ws_engine_free(struct tern_ws_engine *e);

/* Bytes that arrived. TERN_OK, or TERN_ENOMEM. The caller bounds how much it
 * feeds before it reads (one read at a time). */
int tern_ws_engine_recv(struct tern_ws_engine *e, const uint8_t *data, size_t len);

/* The handshake, then the payload of binary frames into buf:
 * TERN_OK with *got > 0; TERN_EAGAIN when nothing (more) can be given yet;
 * TERN_ESHUTDOWN when the peer sent a close frame (the answer is queued);
 * TERN_EPROTO when the handshake was refused (the HTTP error response is queued,
 * tern_ws_engine_http_status says which) or a frame broke the protocol (a close
 * frame with tern_ws_engine_close_code is queued). tern_ws_engine_error says
 * why. Pings are answered (pongs queued) on the way. The data before a close
 * or a failure is given first (an MQTT DISCONNECT right before the close frame
 * counts), the close or failure by the next read. */
int tern_ws_engine_read(struct tern_ws_engine *e, uint8_t *buf, size_t cap, size_t *got);

/* One binary frame of data to send (masked for a client engine). TERN_OK,
 * TERN_EPROTO before the handshake or after a close, TERN_ENOMEM. */
int tern_ws_engine_write(struct tern_ws_engine *e, const uint8_t *data, size_t len);

/* Sends a close frame with code (once; nothing before the handshake). */
void tern_ws_engine_close(struct tern_ws_engine *e, uint16_t code);

/* Bytes waiting to be sent: how much, and taking up to cap of them. */
size_t tern_ws_engine_pending(const struct tern_ws_engine *e);
size_t tern_ws_engine_take(struct tern_ws_engine *e, uint8_t *buf, size_t cap);
/* All of them without a copy: the engine hands over its output buffer (the
 * caller frees the returned pointer; *data, *len say where the bytes are in
 * it). NULL when nothing waits. The engine starts a new buffer for what comes
 * next, so the caller may call it again while it still holds this one. */
uint8_t *tern_ws_engine_take_buffer(struct tern_ws_engine *e, const uint8_t **data,
                                    size_t *len);

/* The handshake succeeded (still true after a close). */
bool tern_ws_engine_open(const struct tern_ws_engine *e);
int tern_ws_engine_http_status(const struct tern_ws_engine *e); /* of a refusal, or 0 */
uint16_t tern_ws_engine_close_code(const struct tern_ws_engine *e); /* we sent, or 0 */
const char *tern_ws_engine_subprotocol(const struct tern_ws_engine *e); /* "" before */
const char *tern_ws_engine_error(const struct tern_ws_engine *e);

/* Sec-WebSocket-Accept for a Sec-WebSocket-Key (RFC 6455 4.2.2): 28 characters
 * and a NUL into out. */
void tern_ws_accept_key(const char *key, size_t key_len,
                        char out[TERN_WS_ACCEPT_LEN + 1]);

/* Encodes one frame header into out (at least TERN_WS_FRAME_HEADER_MAX bytes):
 * its length. mask NULL: unmasked. The payload follows it (masked by the
 * caller, see tern_ws_mask). */
size_t tern_ws_frame_header(uint8_t *out, bool fin, uint8_t opcode, uint64_t len,
                            const uint8_t mask[4]);
/* XORs data with mask, starting at mask byte offset % 4. */
void tern_ws_mask(uint8_t *data, size_t len, const uint8_t mask[4], size_t offset);

#endif
