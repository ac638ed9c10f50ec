/* SipHash-2-4: a keyed 64-bit hash for tables keyed by what clients choose. */
#ifndef TERN_SIPHASH_H
#define TERN_SIPHASH_H

#include <stddef.h>
#include <stdint.h>

uint64_t tern_siphash(const uint64_t key[2], const void *data, size_t len);
/* A fresh random key (getrandom). */
void tern_siphash_seed(uint64_t key[2]);

#endif
