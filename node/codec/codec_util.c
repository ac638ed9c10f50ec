/* Codec building blocks: variable byte integers, UTF-8 and topic validation,
 * framing, and the SUBSCRIBE / UNSUBSCRIBE entry helpers. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "codec_int.h"
#include "tern/codec.h"

int tern_vbi_size(uint32_t value)
{
    if (value < 128u) {
        return 1;
    }
    if (value < 16384u) {
        return 2;
    }
    if (value < 2097152u) {
        return 3;
    }
    return 4;
}

int tern_vbi_encode(uint32_t value, uint8_t *out)
{
    int n = 0;
    do {
        uint8_t b = (uint8_t)(value & 0x7f);
        value >>= 7;
        out[n++] = value ? (uint8_t)(b | 0x80) : b;
    } while (value && n < 4);
    return n;
}

/* Strict: at most 4 bytes and the shortest form (MQTT 5 1.5.5), so a value
 * has exactly one encoding and re-encoding reproduces the input. */
int tern_vbi_decode(const uint8_t *buf, size_t len, uint32_t *value)
{
    uint32_t v = 0;
    for (size_t i = 0; i < 4; i++) {
        if (i >= len) {
            return 0;
        }
        uint8_t b = buf[i];
        v |= (uint32_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80)) {
            if (i > 0 && b == 0) {
                return -1; /* non-minimal: a trailing zero group */
            }
            *value = v;
            return (int)i + 1;
        }
    }
    return -1; /* the fourth byte still had the continuation bit */
}

/* Range of the second byte of a multi-byte sequence: excludes overlongs
 * (E0, F0), surrogates (ED) and code points above U+10FFFF (F4). */
static bool utf8_second_ok(uint8_t lead, uint8_t b)
{
    switch (lead) {
    case 0xE0:
        return b >= 0xA0 && b <= 0xBF;
    case 0xED:
        return b >= 0x80 && b <= 0x9F;
    case 0xF0:
        return b >= 0x90 && b <= 0xBF;
    case 0xF4:
        return b >= 0x80 && b <= 0x8F;
    default:
        return b >= 0x80 && b <= 0xBF;
    }
}

bool tern_utf8_valid(const uint8_t *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        uint8_t c = s[i];
        if (c < 0x80) {
            if (c == 0) {
                return false;
            }
            i++;
            continue;
        }
        size_t n;
        if (c >= 0xC2 && c <= 0xDF) {
            n = 2;
        } else if (c >= 0xE0 && c <= 0xEF) {
            n = 3;
        } else if (c >= 0xF0 && c <= 0xF4) {
            n = 4;
        } else {
            return false; /* stray continuation, C0/C1 overlong, or > F4 */
        }
        if (len - i < n || !utf8_second_ok(c, s[i + 1])) {
            return false;
        }
        for (size_t k = 2; k < n; k++) {
            if ((s[i + k] & 0xC0) != 0x80) {
                return false;
            }
        }
        i += n;
    }
    return true;
}

int codec_topic_name_ok(const uint8_t *s, uint32_t len)
{
    return len > 0 && !memchr(s, '+', len) && !memchr(s, '#', len);
}

static int filter_plain_ok(const uint8_t *s, uint32_t len)
{
    if (len == 0) {
        return 0;
    }
    for (uint32_t i = 0; i < len; i++) {
        bool level_start = i == 0 || s[i - 1] == '/';
        if (s[i] == '+') {
            if (!level_start || (i + 1 < len && s[i + 1] != '/')) {
                return 0;
            }
        } else if (s[i] == '#') {
            if (!level_start || i + 1 != len) {
                return 0;
            }
        }
    }
    return 1;
}

int codec_filter_ok(const uint8_t *s, uint32_t len, int *shared)
{
    static const char prefix[] = "$share/";
    const uint32_t plen = sizeof prefix - 1;
    *shared = 0;
    if (len < plen || memcmp(s, prefix, plen) != 0) {
        return filter_plain_ok(s, len);
    }
    *shared = 1;
    const uint8_t *group = s + plen;
    uint32_t rest = len - plen;
    const uint8_t *slash = memchr(group, '/', rest);
    if (!slash || slash == group) {
        return 0; /* no filter part, or an empty group */
    }
    uint32_t glen = (uint32_t)(slash - group);
    if (memchr(group, '+', glen) || memchr(group, '#', glen)) {
        return 0;
    }
    return filter_plain_ok(slash + 1, rest - glen - 1);
}

int tern_codec_frame(const uint8_t *buf, size_t len, uint32_t max_packet_size,
                     size_t *frame_len, struct tern_codec_error *err)
{
    uint32_t rl;
    if (len < 2) {
        return TERN_EAGAIN;
    }
    int n = tern_vbi_decode(buf + 1, len - 1, &rl);
    if (n == 0) {
        return TERN_EAGAIN;
    }
    if (n < 0) {
        err->reason = TERN_RC_MALFORMED_PACKET;
        err->msg = "bad remaining length";
        return TERN_EMALFORMED;
    }
    uint64_t total = 1u + (uint64_t)n + rl;
    /* 0 means no configured limit: the protocol maximum applies. */
    if (max_packet_size && total > max_packet_size) {
        err->reason = TERN_RC_PACKET_TOO_LARGE;
        err->msg = "packet exceeds maximum packet size";
        return TERN_ETOOBIG;
    }
    if (len < total) {
        return TERN_EAGAIN;
    }
    *frame_len = (size_t)total;
    return TERN_OK;
}

bool tern_codec_next_filter(const struct tern_sublist *s, uint8_t type, uint32_t *pos,
                            struct tern_bytes *filter, uint8_t *options)
{
    uint32_t p = *pos;
    uint32_t end = s->list.len;
    uint32_t opt = type == TERN_SUBSCRIBE ? 1 : 0;
    if (p > end || end - p < 2) {
        return false;
    }
    uint32_t flen = ((uint32_t)s->list.ptr[p] << 8) | s->list.ptr[p + 1];
    if (end - p - 2 < flen + opt) {
        return false; /* a truncated entry (only in a hand-built list) */
    }
    filter->ptr = s->list.ptr + p + 2;
    filter->len = flen;
    if (opt && options) {
        *options = s->list.ptr[p + 2 + flen];
    }
    *pos = p + 2 + flen + opt;
    return true;
}

size_t tern_codec_put_filter(uint8_t *out, size_t cap, struct tern_bytes filter,
                             int options)
{
    size_t need = 2u + filter.len + (options != -1 ? 1u : 0u);
    if (filter.len > 65535u) {
        return 0;
    }
    if (need <= cap) {
        uint8_t *w = codec_put_str(out, filter);
        if (options != -1) {
            *w = (uint8_t)options;
        }
    }
    return need;
}
