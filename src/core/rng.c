#include "core/rng.h"

#include <math.h>

#include "core/common.h"

/* Constants from Salmon et al., "Parallel random numbers: as easy as 1, 2, 3" (SC11). */
#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

static inline void mulhilo(uint32_t a, uint32_t b, uint32_t *hi, uint32_t *lo) {
    uint64_t p = (uint64_t)a * b;
    *hi = (uint32_t)(p >> 32);
    *lo = (uint32_t)p;
}

void philox4x32(uint64_t seed, uint64_t stream, uint64_t counter, uint32_t out[4]) {
    uint32_t c0 = (uint32_t)counter, c1 = (uint32_t)(counter >> 32);
    uint32_t c2 = (uint32_t)stream, c3 = (uint32_t)(stream >> 32);
    uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
    for (int round = 0; round < 10; round++) {
        uint32_t hi0, lo0, hi1, lo1;
        mulhilo(PHILOX_M0, c0, &hi0, &lo0);
        mulhilo(PHILOX_M1, c2, &hi1, &lo1);
        uint32_t n0 = hi1 ^ c1 ^ k0, n1 = lo1, n2 = hi0 ^ c3 ^ k1, n3 = lo0;
        c0 = n0;
        c1 = n1;
        c2 = n2;
        c3 = n3;
        k0 += PHILOX_W0;
        k1 += PHILOX_W1;
    }
    out[0] = c0;
    out[1] = c1;
    out[2] = c2;
    out[3] = c3;
}

float rng_uniform_at(uint64_t seed, uint64_t stream, uint64_t counter, int lane) {
    uint32_t w[4];
    philox4x32(seed, stream, counter, w);
    return (float)(w[lane & 3] >> 8) * (1.0f / 16777216.0f);
}

void rng_stream_init(rng_stream *r, uint64_t seed, uint64_t stream) {
    r->seed = seed;
    r->stream = stream;
    r->counter = 0;
    r->used = 4;
}

uint32_t rng_next_u32(rng_stream *r) {
    if (r->used >= 4) {
        philox4x32(r->seed, r->stream, r->counter++, r->buf);
        r->used = 0;
    }
    return r->buf[r->used++];
}

uint64_t rng_next_u64(rng_stream *r) {
    uint64_t hi = rng_next_u32(r);
    return (hi << 32) | rng_next_u32(r);
}

double rng_next_double(rng_stream *r) { return (double)(rng_next_u64(r) >> 11) * (1.0 / 9007199254740992.0); }

uint64_t rng_next_below(rng_stream *r, uint64_t n) {
    CHECK(n > 0, "rng_next_below: empty range");
    uint64_t limit = UINT64_MAX - UINT64_MAX % n; /* reject the biased tail */
    uint64_t x;
    do x = rng_next_u64(r);
    while (x >= limit);
    return x % n;
}

double rng_next_normal(rng_stream *r) {
    double u1 = rng_next_double(r), u2 = rng_next_double(r);
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}
