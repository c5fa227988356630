/* arena.h: bump allocator over one contiguous block; memory is sized up front and released at once.
 * A measuring arena (arena_measure) has no block: the same sequence of allocations run on it returns NULLs and
 * leaves `used` at the bytes (alignment included) that an arena_init of that size needs for them. */
#pragma once
#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint8_t *base;
    size_t cap;  /* bytes */
    size_t used; /* bytes */
    size_t peak; /* high-water mark, bytes */
} arena;

void arena_init(arena *a, size_t cap);   /* the block is zero-filled */
void arena_measure(arena *a);             /* counts, allocates nothing */
void *arena_alloc(arena *a, size_t bytes, size_t align); /* dies when the arena is full */
float *arena_floats(arena *a, size_t count);             /* 64-byte aligned */
size_t arena_mark(const arena *a);
void arena_reset_to(arena *a, size_t mark);
void arena_free(arena *a);
