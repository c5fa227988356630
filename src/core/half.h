/* half.h: 16-bit float formats <-> fp32.
 *
 * bf16: the top 16 bits of an IEEE fp32 (1 sign, 8 exponent, 7 mantissa bits).
 * f16:  IEEE binary16 (1 sign, 5 exponent, 10 mantissa bits; max 65504; subnormals down to 2^-24).
 * fp32 -> 16-bit conversions round to nearest, ties to even (as PyTorch does); values beyond the f16 range
 * become +-inf; NaN stays NaN (quiet, sign kept); inf stays inf. 16-bit -> fp32 is exact.
 * The vector helpers read and write unaligned-safe arrays of uint16_t bit patterns. */
#pragma once
#include <stddef.h>
#include <stdint.h>

uint16_t f32_to_bf16(float x);
float bf16_to_f32(uint16_t h);
uint16_t f32_to_f16(float x);
float f16_to_f32(uint16_t h);

/* n elements; src and dst must not overlap. */
void f32_to_bf16_array(const float *src, uint16_t *dst, size_t n);
void bf16_to_f32_array(const uint16_t *src, float *dst, size_t n);
void f32_to_f16_array(const float *src, uint16_t *dst, size_t n);
void f16_to_f32_array(const uint16_t *src, float *dst, size_t n);
/* Rounds each fp32 value to the nearest bf16 and back (what a bf16 round trip stores), in place. */
void f32_round_to_bf16(float *x, size_t n);
