#include "core/arena.h"

#include <stdlib.h>
#include <string.h>

#include "core/common.h"

void arena_init(arena *a, size_t cap) {
    memset(a, 0, sizeof *a);
    if (posix_memalign((void **)&a->base, 64, cap ? cap : 64) != 0)
        die("out of memory: arena of %zu bytes", cap);
    memset(a->base, 0, cap ? cap : 64);
    a->cap = cap;
}

void arena_measure(arena *a) {
    memset(a, 0, sizeof *a);
    a->cap = SIZE_MAX;
}

void *arena_alloc(arena *a, size_t bytes, size_t align) {
    CHECK(align && (align & (align - 1)) == 0, "arena_alloc: alignment %zu is not a power of two", align);
    size_t start = (a->used + align - 1) & ~(align - 1);
    if (start > a->cap || bytes > a->cap - start)
        die("arena exhausted: need %zu bytes at offset %zu, capacity %zu", bytes, start, a->cap);
    a->used = start + bytes;
    if (a->used > a->peak) a->peak = a->used;
    return a->base ? a->base + start : NULL; /* measuring */
}

float *arena_floats(arena *a, size_t count) { return arena_alloc(a, count * sizeof(float), 64); }
size_t arena_mark(const arena *a) { return a->used; }
void arena_reset_to(arena *a, size_t mark) {
    CHECK(mark <= a->used, "arena_reset_to: mark %zu beyond used %zu", mark, a->used);
    a->used = mark;
}
void arena_free(arena *a) {
    free(a->base);
    memset(a, 0, sizeof *a);
}
