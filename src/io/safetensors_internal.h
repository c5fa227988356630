/* safetensors_internal.h: what the reader (safetensors.c) and the writer (safetensors_write.c) share. Not part of
 * the interface: include io/safetensors.h. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "io/safetensors.h"

typedef struct {
    const char *name;
    size_t size;
    int order; /* the reference writer's dtype order (its enum order); files are laid out by it, descending */
} st_dtype_desc;
extern const st_dtype_desc st_dtype_table[ST_DTYPE_COUNT];

/* True when s[0, n) is valid UTF-8; else false with *bad_at = the offset of the first bad byte. */
bool st_utf8_valid(const uint8_t *s, size_t n, size_t *bad_at);
