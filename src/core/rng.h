/* rng.h: counter-based random numbers (Philox4x32-10). A draw is a pure function of (seed, stream, counter),
 * so a sample depends only on (seed, sequence id, position), never on rank layout or batch composition. */
#pragma once
#include <stdint.h>

/* One Philox4x32-10 block: key = seed, counter = (stream, counter) → four 32-bit words. */
void philox4x32(uint64_t seed, uint64_t stream, uint64_t counter, uint32_t out[4]);

/* Uniform in [0, 1) with 24 random bits, from word `lane` (0..3) of block (seed, stream, counter). */
float rng_uniform_at(uint64_t seed, uint64_t stream, uint64_t counter, int lane);

/* A sequential stream for initialisation and shuffling: state is (seed, stream, counter), savable. */
typedef struct {
    uint64_t seed, stream, counter;
    uint32_t buf[4];
    int used; /* words of buf already consumed; 4 = empty */
} rng_stream;

void rng_stream_init(rng_stream *r, uint64_t seed, uint64_t stream);
uint32_t rng_next_u32(rng_stream *r);
uint64_t rng_next_u64(rng_stream *r);
double rng_next_double(rng_stream *r);           /* [0, 1), 53 bits */
uint64_t rng_next_below(rng_stream *r, uint64_t n); /* unbiased in [0, n) */
double rng_next_normal(rng_stream *r);           /* standard normal (Box-Muller) */
