/* arena.h: bump allocator over one contiguous block; memory is sized up front and released at once. */
#pragma once
#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint8_t *base;
    size_t cap;  /* bytes */
    size_t used; /* bytes */
    size_t peak; /* high-water mark, bytes */
} arena;

void arena_init(arena *a, size_t cap);
void *arena_alloc(arena *a, size_t bytes, size_t align); /* dies when the arena is full */
float *arena_floats(arena *a, size_t count);             /* 64-byte aligned */
size_t arena_mark(const arena *a);
void arena_reset_to(arena *a, size_t mark);
void arena_free(arena *a);
