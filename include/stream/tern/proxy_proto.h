/* PROXY protocol header parser, versions 1 (text) and 2 (binary), as HAProxy's
 * proxy-protocol.txt defines them: a load balancer in front of a listener with
 * `proxy_protocol` writes one header before the client's bytes, naming the
 * client's address.
 *
 * Pure C (no libuv, no sockets), so it is unit-tested and fuzzed alone: feed the
 * bytes as they arrive; the parser takes only the header's bytes, never one after
 * it, so what follows (MQTT, or a TLS ClientHello) goes on to the next layer
 * untouched. Every header is bounded: a v1 line by the specification (107 bytes),
 * a v2 header by TERN_PROXY_V2_LEN_MAX. A prefix that cannot start a header is
 * refused at its first wrong byte. The parser owns no memory; it is a plain
 * struct the caller allocates (about 1 KiB, only while a header is awaited).
 */
#ifndef TERN_PROXY_PROTO_H
#define TERN_PROXY_PROTO_H

#include <stddef.h>
#include <stdint.h>

#include "tern/error.h"

#define TERN_PROXY_V1_MAX 107 /* "PROXY TCP6 <39> <39> 65535 65535\r\n" */
/* Bytes after v2's 16-byte fixed part: addresses (at most 216, AF_UNIX) and
 * TLVs. HAProxy's send-proxy-v2 sends 12 or 36 (no TLV unless proxy-v2-options);
 * cloud balancers add a few TLVs of tens of bytes. Longer is refused. */
#define TERN_PROXY_V2_LEN_MAX 1024
#define TERN_PROXY_HEADER_MAX (16 + TERN_PROXY_V2_LEN_MAX)

struct tern_proxy_header {
    uint8_t version; /* 1 or 2 */
    /* 4 or 6: src/dst hold the client's and the proxy's addresses. 0: the header
     * names no address (v2 LOCAL, as a health check sends; v1 UNKNOWN; v2 UNSPEC or
     * AF_UNIX): the connection's own addresses stand. */
    uint8_t family;
    uint8_t src[16], dst[16]; /* IPv4 in the first 4 bytes, network order */
    uint16_t src_port, dst_port;
};

struct tern_proxy_parser {
    uint16_t len; /* bytes of the header taken so far */
    uint8_t buf[TERN_PROXY_HEADER_MAX];
};

void tern_proxy_init(struct tern_proxy_parser *p);

/* Takes the header's bytes from data[0..len). *used: how many it took.
 *   TERN_EAGAIN     all of data was the header's, and it is not complete yet;
 *   TERN_OK         complete: *out filled; data[*used..len) comes after it;
 *   TERN_EMALFORMED not a PROXY header, or a broken one (*why says what);
 *   TERN_ETOOBIG    longer than the bound (*why).
 * After anything but TERN_EAGAIN the parser is done: init it to use it again. */
int tern_proxy_feed(struct tern_proxy_parser *p, const uint8_t *data, size_t len,
                    size_t *used, struct tern_proxy_header *out, const char **why);

#endif
