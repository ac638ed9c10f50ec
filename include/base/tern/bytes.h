/* A byte range, the one type the MQTT codec and the replicated commands share. */
#ifndef TERN_BYTES_H
#define TERN_BYTES_H

#include <stdint.h>

/* A byte range: a UTF-8 string or binary data. Not NUL-terminated. */
struct tern_bytes {
    const uint8_t *ptr;
    uint32_t len;
};

#endif
