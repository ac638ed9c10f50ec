/* The one parser of "HOST:PORT", for every address tern reads: the
 * configuration's listeners and members, the admin API's member addresses, the
 * Raft transport's connect and the peer links.
 *
 * HOST is a name or IPv4 literal without spaces or ':' ("0.0.0.0", "localhost"),
 * or an IPv6 literal in brackets ("[::1]"); PORT is 0-65535 in decimal digits only.
 * Port 0 is "any port" to a listener; an address to connect to needs 1-65535
 * (tern_addr_port_ok). */
#ifndef TERN_ADDR_H
#define TERN_ADDR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Splits s into host (NUL-terminated, brackets removed, at most host_cap - 1
 * bytes) and port. TERN_OK, or TERN_EINVAL (host and port then unspecified). */
int tern_addr_split(const char *s, char *host, size_t host_cap, uint16_t *port);

/* s is HOST:PORT with a port 1-65535 and a host of at most host_max bytes. */
bool tern_addr_port_ok(const char *s, size_t host_max);

#endif
