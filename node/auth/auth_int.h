/* Shared inside the tern_auth library (node/auth_*.c): base64 (RFC 4648). */
#ifndef TERN_AUTH_INT_H
#define TERN_AUTH_INT_H

#include <stddef.h>
#include <stdint.h>

/* Decodes s[0..len) (padding optional) into out (at most cap bytes); returns the
 * length, or -1 if it is not base64 or does not fit. */
long tern_auth_b64_decode(const char *s, size_t len, uint8_t *out, size_t cap);
/* Encodes in[0..len) with padding into out (4 * ceil(len / 3) + 1 bytes, NUL
 * added); returns the length without the NUL. */
size_t tern_auth_b64_encode(const uint8_t *in, size_t len, char *out);

#endif
