/* ops_vmath.h: vectorised exp-based loops shared by the CPU ops (internal to src/ops). AVX-512 with glibc's
 * libmvec expf (_ZGVeN16v_expf, a few ulp) where the CPU has it, scalar expf otherwise; deterministic for a
 * given machine (fixed order of every sum). */
#pragma once
#include <stdbool.h>
#include <stddef.h>

/* max of x[0..n), n >= 1 */
float vm_max(const float *x, int n);
/* dst[i] = expf(x[i] - shift) (dst may equal x, or be NULL to only sum); returns sum of dst in double (16 lane partial sums). */
double vm_exp_sum(float *dst, const float *x, int n, float shift);
/* dst[i] = a * expf(x[i] - shift) (dst may equal x). */
void vm_exp_scale(float *dst, const float *x, int n, float shift, float a);
/* h = silu(g) * u over [n] */
void vm_swiglu_fwd(float *h, const float *g, const float *u, size_t n);
/* dgate = dh * u * s * (1 + g (1 - s)), dup = dh * g * s, s = sigmoid(g) */
void vm_swiglu_bwd(float *dgate, float *dup, const float *dh, const float *g, const float *u, size_t n);
/* The portable loops' expf: glibc's own for CPUs with AVX2 and FMA, computed 8 lanes at a time (bitwise the scalar
 * call; chosen once, after this check). Checks every stride-th float (both signs, up to infinity; nan aside) against expf. */
bool vm_glibc_expf_check(size_t stride);
/* Forces the scalar expf calls (true) or lets the check decide (false); tests compare the two. */
void vm_force_scalar_expf(bool scalar);
