/* select.cuh: block-wide selection without a sort of the whole row (vocab.cu's teacher top-k, sample.cu's
 * top-k): a 4-pass radix select finds the k-th best key, one ordered pass gathers the k winners (ties at the
 * threshold by lower id, as the CPU), and a bitonic sort in shared memory orders those k.
 * Order: higher value first, equal values by lower id. Keys are the float bits mapped so that unsigned order
 * is float order (-0 is taken as +0, as float comparison does). Every helper must be called by all threads
 * of the block (they synchronise); blockDim is a multiple of 32. */
#pragma once
#include "cuda_common.cuh"

#define SEL_MAX_K 4096 /* largest k: the sort buffers live in shared memory */

__device__ __forceinline__ uint32_t sel_key(float f) {
    if (f == 0.0f) f = 0.0f;
    const uint32_t u = __float_as_uint(f);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
__device__ __forceinline__ bool sel_better(uint32_t ka, int ia, uint32_t kb, int ib) {
    return ka > kb || (ka == kb && ia < ib);
}

typedef struct {
    unsigned hist[256];
    int warp_tot[32];
    int warp_off[32];
    uint32_t prefix;
    int need;
    int total;
} sel_smem;

/* Exclusive prefix of a 0/1 flag over the block in thread order; *total gets the block's count. */
__device__ __forceinline__ int sel_scan_flag(bool flag, sel_smem *s, int *total) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    const unsigned b = __ballot_sync(0xffffffffu, flag);
    __syncthreads(); /* warp_tot / warp_off of the previous call have been read */
    if (lane == 0) s->warp_tot[warp] = __popc(b);
    __syncthreads();
    if (threadIdx.x == 0) {
        int acc = 0;
        for (int w = 0; w < nw; w++) {
            s->warp_off[w] = acc;
            acc += s->warp_tot[w];
        }
        s->total = acc;
    }
    __syncthreads();
    *total = s->total;
    return s->warp_off[warp] + __popc(b & ((1u << lane) - 1u));
}

/* The key of the k-th best element of x[0..n) (1 <= k <= n) and, in *need, how many elements with exactly that
 * key belong to the best k (the others above it all do). */
static __device__ uint32_t sel_radix_kth(const float *x, int n, int k, sel_smem *s, int *need) {
    uint32_t prefix = 0, mask = 0;
    int remaining = k;
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (int b = threadIdx.x; b < 256; b += blockDim.x) s->hist[b] = 0;
        __syncthreads();
        for (int i = threadIdx.x; i < n; i += blockDim.x) {
            const uint32_t key = sel_key(x[i]);
            if ((key & mask) == prefix) atomicAdd(&s->hist[(key >> shift) & 255u], 1u); /* integer: order-free */
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            int cum = 0, b = 255;
            for (; b > 0; b--) {
                if (cum + (int)s->hist[b] >= remaining) break;
                cum += (int)s->hist[b];
            }
            s->prefix = prefix | ((uint32_t)b << shift);
            s->need = remaining - cum;
        }
        __syncthreads();
        prefix = s->prefix;
        remaining = s->need;
        mask |= 255u << shift;
        __syncthreads();
    }
    *need = remaining;
    return prefix;
}

/* Writes the k best (key above kth, then the `need` lowest ids with key == kth) into keys/ids [0, k), unordered
 * above the threshold; pads [k, P) with the worst possible entry. */
static __device__ void sel_gather(const float *x, int n, int k, uint32_t kth, int need, uint32_t *keys, int *ids, int P,
                           sel_smem *s) {
    const int n_gt = k - need;
    int base_gt = 0, base_eq = 0;
    for (int c0 = 0; c0 < n; c0 += blockDim.x) {
        const int i = c0 + threadIdx.x;
        const uint32_t key = i < n ? sel_key(x[i]) : 0u;
        const bool gt = i < n && key > kth, eq = i < n && key == kth;
        int tot_gt, tot_eq;
        const int pg = sel_scan_flag(gt, s, &tot_gt);
        const int pe = sel_scan_flag(eq, s, &tot_eq);
        if (gt) {
            keys[base_gt + pg] = key;
            ids[base_gt + pg] = i;
        }
        if (eq && base_eq + pe < need) {
            keys[n_gt + base_eq + pe] = key;
            ids[n_gt + base_eq + pe] = i;
        }
        base_gt += tot_gt;
        base_eq += tot_eq;
        if (base_gt >= n_gt && base_eq >= need) break; /* uniform: every thread has the same bases */
    }
    for (int i = k + threadIdx.x; i < P; i += blockDim.x) {
        keys[i] = 0u;
        ids[i] = 0x7fffffff;
    }
    __syncthreads();
}

/* Sorts P (a power of two) entries best first. */
static __device__ void sel_bitonic(uint32_t *keys, int *ids, int P) {
    for (int size = 2; size <= P; size <<= 1)
        for (int stride = size >> 1; stride > 0; stride >>= 1) {
            for (int i = threadIdx.x; i < P; i += blockDim.x) {
                const int j = i ^ stride;
                if (j > i) {
                    const bool up = (i & size) == 0;
                    const bool sw = up ? sel_better(keys[j], ids[j], keys[i], ids[i])
                                       : sel_better(keys[i], ids[i], keys[j], ids[j]);
                    if (sw) {
                        const uint32_t tk = keys[i];
                        keys[i] = keys[j];
                        keys[j] = tk;
                        const int ti = ids[i];
                        ids[i] = ids[j];
                        ids[j] = ti;
                    }
                }
            }
            __syncthreads();
        }
}

__host__ __device__ __forceinline__ int sel_pow2(int k) {
    int p = 1;
    while (p < k) p <<= 1;
    return p;
}
