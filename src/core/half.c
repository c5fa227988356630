#include "core/half.h"

#include <string.h>

static inline uint32_t float_bits(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}
static inline float bits_float(uint32_t u) {
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

uint16_t f32_to_bf16(float x) {
    uint32_t u = float_bits(x);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x0040u); /* NaN: keep sign, make quiet */
    /* Adding 0x7fff plus the lowest kept bit rounds to nearest, ties to even; a carry out of the mantissa
     * bumps the exponent, and the largest finite values round up to inf, as they should. */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

float bf16_to_f32(uint16_t h) { return bits_float((uint32_t)h << 16); }

uint16_t f32_to_f16(float x) {
    uint32_t u = float_bits(x);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t a = u & 0x7fffffffu;
    if (a >= 0x7f800000u) /* inf, or NaN (quiet, top mantissa bits kept) */
        return (uint16_t)(sign | (a > 0x7f800000u ? 0x7e00u | ((a >> 13) & 0x3ffu) : 0x7c00u));
    if (a >= 0x38800000u) { /* >= 2^-14: a normal f16 unless it overflows */
        uint32_t h = (a - 0x38000000u) >> 13; /* rebias exponent 127 -> 15, keep 10 mantissa bits */
        uint32_t rest = a & 0x1fffu;
        if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) h++;
        if (h >= 0x7c00u) return (uint16_t)(sign | 0x7c00u);
        return (uint16_t)(sign | h);
    }
    /* f16 subnormal (or zero): value = round(x * 2^24) units of 2^-24. x = m * 2^(E-150), so the count is
     * m >> (126 - E) rounded; f32 subnormals (E == 0) are far below half a unit and give zero. */
    uint32_t e = a >> 23;
    if (e < 102) return sign; /* x < 2^-25: rounds to zero (2^-25 itself, a tie with even 0, too) */
    uint32_t m = (a & 0x7fffffu) | 0x800000u;
    uint32_t shift = 126u - e; /* 14..24 */
    uint32_t h = m >> shift;
    uint32_t rest = m & ((1u << shift) - 1u), half = 1u << (shift - 1u);
    if (rest > half || (rest == half && (h & 1u))) h++; /* may carry into the smallest normal: still right */
    return (uint16_t)(sign | h);
}

float f16_to_f32(uint16_t h) {
    uint32_t sign = ((uint32_t)h & 0x8000u) << 16;
    uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    if (e == 0) { /* zero or subnormal: m * 2^-24, exact in fp32 */
        float v = (float)m * 5.9604644775390625e-08f;
        return bits_float(float_bits(v) | sign);
    }
    if (e == 31) return bits_float(sign | 0x7f800000u | (m << 13));
    return bits_float(sign | ((e + 112u) << 23) | (m << 13));
}

/* Array loops are parallel only when long enough to pay for the threads (loading a checkpoint). */
enum { PAR_MIN = 1 << 16 };

void f32_to_bf16_array(const float *src, uint16_t *dst, size_t n) {
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (size_t i = 0; i < n; i++) dst[i] = f32_to_bf16(src[i]);
}
void bf16_to_f32_array(const uint16_t *src, float *dst, size_t n) {
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (size_t i = 0; i < n; i++) dst[i] = bf16_to_f32(src[i]);
}
void f32_to_f16_array(const float *src, uint16_t *dst, size_t n) {
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (size_t i = 0; i < n; i++) dst[i] = f32_to_f16(src[i]);
}
void f16_to_f32_array(const uint16_t *src, float *dst, size_t n) {
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (size_t i = 0; i < n; i++) dst[i] = f16_to_f32(src[i]);
}
void f32_round_to_bf16(float *x, size_t n) {
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (size_t i = 0; i < n; i++) x[i] = bf16_to_f32(f32_to_bf16(x[i]));
}
