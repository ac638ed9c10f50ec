/* HOST:PORT (tern/addr.h). Replaces three parsers that disagreed: one used
 * atoi(), which made port 70000 into 4464 and "12x" into 12. */
#include "tern/addr.h"

#include <string.h>

#include "tern/error.h"

/* Decimal digits only (no sign, no space), at most 65535. */
static bool port_digits(const char *s, uint64_t *out)
{
    uint64_t n = 0;
    if (*s == '\0' || strlen(s) > 5)
        return false;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return false;
        n = n * 10 + (unsigned)(*s - '0');
    }
    *out = n;
    return n <= 65535;
}

/* Host text must be printable, without spaces, and without the characters that
 * would make "HOST:PORT" ambiguous. */
static bool host_ok(const char *h, size_t len, bool bracketed)
{
    if (len == 0)
        return false;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)h[i];
        if (ch <= ' ' || ch == 0x7f || ch == '[' || ch == ']' ||
            (!bracketed && ch == ':'))
            return false;
    }
    return true;
}

int tern_addr_split(const char *s, char *host, size_t host_cap, uint16_t *port)
{
    if (!s || !host || host_cap == 0 || !port)
        return TERN_EINVAL;
    const char *colon = strrchr(s, ':');
    if (!colon)
        return TERN_EINVAL;
    const char *h = s;
    size_t hlen = (size_t)(colon - s);
    bool bracketed = s[0] == '[';
    if (bracketed) {
        if (hlen < 2 || s[hlen - 1] != ']')
            return TERN_EINVAL;
        h++;
        hlen -= 2;
    }
    uint64_t p;
    if (!host_ok(h, hlen, bracketed) || hlen >= host_cap || strlen(colon + 1) > 5 ||
        !port_digits(colon + 1, &p))
        return TERN_EINVAL;
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    *port = (uint16_t)p;
    return TERN_OK;
}

bool tern_addr_port_ok(const char *s, size_t host_max)
{
    char host[256];
    uint16_t port;
    if (host_max >= sizeof(host))
        host_max = sizeof(host) - 1;
    return s && tern_addr_split(s, host, host_max + 1, &port) == TERN_OK && port != 0;
}
