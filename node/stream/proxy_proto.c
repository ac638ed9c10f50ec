/* PROXY protocol v1/v2 parser (proxy_proto.h).
 *
 * The header is short and bounded, so its bytes are gathered in the parser's
 * buffer and parsed once complete. What "complete" means is known early: v1
 * ends at its LF, v2's fixed 16 bytes carry the length of the rest. Until then
 * every byte taken is checked against the two signatures, so MQTT or TLS sent
 * to a listener that expects the header is refused at once, not at a timeout.
 */
#include <arpa/inet.h>
#include <string.h>

#include "tern/proxy_proto.h"

static const uint8_t v2_sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                   0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
static const char v1_sig[] = "PROXY ";

#define V2_FIXED 16

void tern_proxy_init(struct tern_proxy_parser *p)
{
    p->len = 0;
}

static int fail(const char **why, const char *msg, int rc)
{
    *why = msg;
    return rc;
}

/* A decimal port: 1 to 5 digits, no leading zero, at most 65535. */
static int v1_port(const char *s, size_t n, uint16_t *out)
{
    if (n == 0 || n > 5 || (s[0] == '0' && n > 1))
        return TERN_EMALFORMED;
    uint32_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return TERN_EMALFORMED;
        v = v * 10 + (uint32_t)(s[i] - '0');
    }
    if (v > 65535)
        return TERN_EMALFORMED;
    *out = (uint16_t)v;
    return TERN_OK;
}

static int v1_addr(int af, const char *s, size_t n, uint8_t out[16])
{
    char tmp[64];
    if (n == 0 || n >= sizeof tmp)
        return TERN_EMALFORMED;
    memcpy(tmp, s, n);
    tmp[n] = '\0';
    memset(out, 0, 16);
    return inet_pton(af, tmp, out) == 1 ? TERN_OK : TERN_EMALFORMED;
}

/* "PROXY TCP4 SRC DST SPORT DPORT\r\n", "PROXY TCP6 ...", "PROXY UNKNOWN...\r\n".
 * line excludes the CRLF. */
static int v1_parse(const char *line, size_t n, struct tern_proxy_header *out,
                    const char **why)
{
    const char *f[6];
    size_t fl[6], nf = 0, start = 0;
    for (size_t i = 0; i <= n && nf < 6; i++) {
        if (i == n || line[i] == ' ') {
            f[nf] = line + start;
            fl[nf++] = i - start;
            start = i + 1;
        }
    }
    /* f[0] is "PROXY" (the signature was checked). */
    memset(out, 0, sizeof *out);
    out->version = 1;
    if (nf >= 2 && fl[1] == 7 && memcmp(f[1], "UNKNOWN", 7) == 0)
        return TERN_OK; /* anything may follow; the connection's addresses stand */
    int af;
    if (nf >= 2 && fl[1] == 4 && memcmp(f[1], "TCP4", 4) == 0)
        af = AF_INET;
    else if (nf >= 2 && fl[1] == 4 && memcmp(f[1], "TCP6", 4) == 0)
        af = AF_INET6;
    else
        return fail(why, "PROXY v1: protocol is not TCP4, TCP6 or UNKNOWN",
                    TERN_EMALFORMED);
    if (nf != 6 || f[5] + fl[5] != line + n)
        return fail(why, "PROXY v1: not \"PROXY TCPn SRC DST SPORT DPORT\"",
                    TERN_EMALFORMED);
    if (v1_addr(af, f[2], fl[2], out->src) != TERN_OK ||
        v1_addr(af, f[3], fl[3], out->dst) != TERN_OK)
        return fail(why, "PROXY v1: bad address", TERN_EMALFORMED);
    if (v1_port(f[4], fl[4], &out->src_port) != TERN_OK ||
        v1_port(f[5], fl[5], &out->dst_port) != TERN_OK)
        return fail(why, "PROXY v1: bad port", TERN_EMALFORMED);
    out->family = af == AF_INET ? 4 : 6;
    return TERN_OK;
}

/* TLVs are not used, but must tile the rest exactly: a length that runs past
 * the header is a broken (or hostile) sender. */
static int v2_tlvs(const uint8_t *p, size_t n, const char **why)
{
    size_t off = 0;
    while (off < n) {
        if (n - off < 3)
            return fail(why, "PROXY v2: truncated TLV", TERN_EMALFORMED);
        size_t l = (size_t)p[off + 1] << 8 | p[off + 2];
        if (l > n - off - 3)
            return fail(why, "PROXY v2: TLV longer than the header", TERN_EMALFORMED);
        off += 3 + l;
    }
    return TERN_OK;
}

static int v2_parse(const uint8_t *b, size_t total, struct tern_proxy_header *out,
                    const char **why)
{
    uint8_t cmd = b[12] & 0x0F, fam = b[13] >> 4, proto = b[13] & 0x0F;
    const uint8_t *a = b + V2_FIXED;
    size_t len = total - V2_FIXED, alen;
    memset(out, 0, sizeof *out);
    out->version = 2;
    if (cmd == 0)
        return TERN_OK; /* LOCAL: the proxy's own connection (a health check) */
    if (proto > 1)
        return fail(why, "PROXY v2: not a stream (TCP) connection", TERN_EMALFORMED);
    switch (fam) {
    case 0:
        alen = 0; /* UNSPEC: no address */
        break;
    case 1:
        alen = 12;
        break;
    case 2:
        alen = 36;
        break;
    case 3:
        alen = 216; /* AF_UNIX: paths, not an address we can use */
        break;
    default:
        return fail(why, "PROXY v2: unknown address family", TERN_EMALFORMED);
    }
    if (len < alen)
        return fail(why, "PROXY v2: length shorter than its addresses", TERN_EMALFORMED);
    int rc = v2_tlvs(a + alen, len - alen, why);
    if (rc != TERN_OK)
        return rc;
    size_t w = fam == 1 ? 4 : 16;
    if (fam == 1 || fam == 2) {
        memcpy(out->src, a, w);
        memcpy(out->dst, a + w, w);
        out->src_port = (uint16_t)(a[2 * w] << 8 | a[2 * w + 1]);
        out->dst_port = (uint16_t)(a[2 * w + 2] << 8 | a[2 * w + 3]);
        out->family = fam == 1 ? 4 : 6;
    }
    return TERN_OK;
}

static int take_v1(struct tern_proxy_parser *p, const uint8_t *data, size_t len,
                   size_t *used, struct tern_proxy_header *out, const char **why)
{
    size_t room = TERN_PROXY_V1_MAX - p->len;
    size_t n = len < room ? len : room;
    const uint8_t *lf = memchr(data, '\n', n);
    if (lf)
        n = (size_t)(lf - data) + 1;
    size_t had = p->len;
    memcpy(p->buf + had, data, n);
    p->len = (uint16_t)(had + n);
    *used = n;
    size_t sig = sizeof v1_sig - 1, k = p->len < sig ? p->len : sig;
    if (memcmp(p->buf, v1_sig, k) != 0)
        return fail(why, "not a PROXY protocol header", TERN_EMALFORMED);
    if (!lf) {
        if (p->len == TERN_PROXY_V1_MAX)
            return fail(why, "PROXY v1: no CRLF within 107 bytes", TERN_ETOOBIG);
        return TERN_EAGAIN;
    }
    if (p->len < 2 || p->buf[p->len - 2] != '\r')
        return fail(why, "PROXY v1: line not ended by CRLF", TERN_EMALFORMED);
    if (p->len < sig + 2)
        return fail(why, "not a PROXY protocol header", TERN_EMALFORMED);
    return v1_parse((const char *)p->buf, p->len - 2u, out, why);
}

static int take_v2(struct tern_proxy_parser *p, const uint8_t *data, size_t len,
                   size_t *used, struct tern_proxy_header *out, const char **why)
{
    size_t off = 0;
    if (p->len < V2_FIXED) {
        size_t had = p->len, n = V2_FIXED - had;
        if (n > len)
            n = len;
        memcpy(p->buf + had, data, n);
        p->len = (uint16_t)(had + n);
        off = n;
        /* Checked again on every call: cheap, and right however it was split. */
        size_t k = p->len < sizeof v2_sig ? p->len : sizeof v2_sig;
        *used = off;
        if (memcmp(p->buf, v2_sig, k) != 0)
            return fail(why, "not a PROXY protocol header", TERN_EMALFORMED);
        if (p->len > 12 && (p->buf[12] >> 4) != 2)
            return fail(why, "PROXY v2: version is not 2", TERN_EMALFORMED);
        if (p->len > 12 && (p->buf[12] & 0x0F) > 1)
            return fail(why, "PROXY v2: command is not LOCAL or PROXY", TERN_EMALFORMED);
        if (p->len < V2_FIXED)
            return TERN_EAGAIN;
    }
    size_t rest = (size_t)p->buf[14] << 8 | p->buf[15];
    if (rest > TERN_PROXY_V2_LEN_MAX) {
        *used = off;
        return fail(why, "PROXY v2: header longer than 1040 bytes", TERN_ETOOBIG);
    }
    size_t total = V2_FIXED + rest, n = total - p->len;
    if (n > len - off)
        n = len - off;
    memcpy(p->buf + p->len, data + off, n);
    p->len = (uint16_t)(p->len + n);
    *used = off + n;
    if (p->len < total)
        return TERN_EAGAIN;
    return v2_parse(p->buf, total, out, why);
}

int tern_proxy_feed(struct tern_proxy_parser *p, const uint8_t *data, size_t len,
                    size_t *used, struct tern_proxy_header *out, const char **why)
{
    *used = 0;
    *why = NULL;
    if (len == 0)
        return TERN_EAGAIN;
    uint8_t first = p->len ? p->buf[0] : data[0];
    if (first == (uint8_t)v1_sig[0])
        return take_v1(p, data, len, used, out, why);
    if (first == v2_sig[0])
        return take_v2(p, data, len, used, out, why);
    return fail(why, "not a PROXY protocol header", TERN_EMALFORMED);
}
