#include "ops/sampler.h"

#include <emmintrin.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"

typedef struct sampler_cand cand_t;

bool sampler_params_check(const sampler_params *sp, s2d_err *err) {
    if (!(sp->temperature >= 0) || !isfinite(sp->temperature))
        return err_set(err, "temperature %g must be a finite number >= 0", sp->temperature);
    if (sp->top_k < 0) return err_set(err, "top_k %d must be >= 0 (0 = off)", sp->top_k);
    if (!(sp->top_p > 0 && sp->top_p <= 1)) return err_set(err, "top_p %g must be in (0, 1] (1 = off)", sp->top_p);
    return true;
}

void sampler_init(sampler *s, int vocab) {
    CHECK(vocab > 0, "sampler_init: vocab %d", vocab);
    s->vocab = vocab;
    s->scaled = xmalloc((size_t)vocab * sizeof *s->scaled);
    s->cand = xmalloc(((size_t)vocab + 1) * sizeof *s->cand); /* + 1: gather_bin's branch-free compaction */
    s->cand_tmp = xmalloc((size_t)vocab * sizeof *s->cand_tmp);
    s->bin_mass = xmalloc(SAMPLER_BINS * sizeof *s->bin_mass);
}

void sampler_free(sampler *s) {
    free(s->scaled);
    free(s->cand);
    free(s->cand_tmp);
    free(s->bin_mass);
    s->bin_mass = NULL;
    s->scaled = NULL;
    s->cand = NULL;
    s->cand_tmp = NULL;
}

double sampler_uniform(uint64_t seed, uint64_t seq_id, uint64_t position) {
    uint32_t w[4];
    philox4x32(seed, seq_id, position, w);
    uint64_t bits = ((uint64_t)(w[0] >> 5) << 26) | (w[1] >> 6); /* 27 + 26 = 53 bits */
    return (double)bits * (1.0 / 9007199254740992.0);
}

/* The total order of candidates: more probable first, then lower id. */
static inline bool cand_better(cand_t a, cand_t b) { return a.p > b.p || (a.p == b.p && a.id < b.id); }

static int cand_cmp(const void *pa, const void *pb) {
    cand_t a = *(const cand_t *)pa, b = *(const cand_t *)pb;
    return cand_better(a, b) ? -1 : cand_better(b, a) ? 1 : 0;
}

/* Min-heap on "better" (root = worst kept candidate) for top-k selection. */
static void heap_sift_down(cand_t *h, int n, int i) {
    for (;;) {
        int l = 2 * i + 1, r = l + 1, w = i;
        if (l < n && cand_better(h[w], h[l])) w = l;
        if (r < n && cand_better(h[w], h[r])) w = r;
        if (w == i) return;
        cand_t t = h[i];
        h[i] = h[w];
        h[w] = t;
        i = w;
    }
}

/* The candidates c [n] (gathered in increasing id order) sorted best first: probability descending, ties by
 * lower id — exactly cand_cmp's order — in O(n): a stable LSD radix sort on the weight's bits (weights are
 * finite and >= 0, so their IEEE bits order as their values; stability keeps equal weights in id order).
 * tmp: scratch of n. */
static void sort_by_weight_desc(cand_t *c, cand_t *tmp, int n) {
    cand_t *src = c, *dst = tmp;
    for (int shift = 0; shift < 32; shift += 8) {
        size_t count[257] = {0};
        for (int i = 0; i < n; i++) {
            uint32_t bits;
            memcpy(&bits, &src[i].p, sizeof bits);
            count[((~bits) >> shift & 0xFF) + 1]++;
        }
        for (int b = 0; b < 256; b++) count[b + 1] += count[b];
        for (int i = 0; i < n; i++) {
            uint32_t bits;
            memcpy(&bits, &src[i].p, sizeof bits);
            dst[count[(~bits) >> shift & 0xFF]++] = src[i];
        }
        cand_t *t = src;
        src = dst, dst = t;
    }
    /* four passes: the result is back in c */
}

/* ---- the weights pass: a portable 4-lane exp (GCC vector extensions: SSE2 on x86-64, NEON elsewhere) ----
 * Cephes' expf: n = round(x log2 e), r = x - n ln 2 (ln 2 in two parts), exp r by a degree-7 polynomial,
 * times 2^n in two factors so that results below FLT_MIN round once into the subnormals as expf does. Only
 * IEEE adds, multiplies and conversions (-std=c11 keeps the compiler from contracting them into FMAs), so every
 * lane, the scalar sampler_exp and every machine give the same bits. Max error ~2 ulp against exp(). */
typedef float v4f __attribute__((vector_size(16)));
typedef int32_t v4i __attribute__((vector_size(16)));
typedef uint32_t v4u __attribute__((vector_size(16)));
typedef double v2d __attribute__((vector_size(16)));

static inline v4f v4_splat(float a) { return (v4f){a, a, a, a}; }

/* exp of each lane for x <= 88; x below -110 counts as -110 (exp(-110) rounds to 0). */
static inline v4f exp4(v4f x) {
    x = (v4f)_mm_max_ps((__m128)x, _mm_set1_ps(-110.0f)); /* x is never nan here: maxps's order is moot */
    const v4f nf = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f; /* round to nearest: |n| <= 159 */
    v4f r = x - nf * 0.693359375f;                                           /* ln 2 = C1 + C2, C1 * n exact */
    r = r - nf * -2.12194440e-4f;
    const v4f r2 = r * r;
    v4f p = v4_splat(1.9875691500e-4f);
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r2 + r + 1.0f;
    const v4i n = __builtin_convertvector(nf, v4i), n1 = n >> 1, n2 = n - n1; /* n1, n2 >= -80: normal */
    return p * (v4f)((n1 + 127) << 23) * (v4f)((n2 + 127) << 23);
}

float sampler_exp(float x) { return exp4(v4_splat(x))[0]; }

/* max of x [n] (n >= 1) with a fused finiteness check: *bad is set when some x is inf or nan. */
static float max_finite(const float *x, int n, float scale_div, float *dst, bool *bad) {
    v4f mx = v4_splat(-INFINITY);
    v4i nf = {0, 0, 0, 0};
    int i = 0;
    for (; i + 4 <= n; i += 4) {
        v4f v;
        memcpy(&v, x + i, sizeof v);
        v = v / scale_div;
        nf |= (v - v) != 0; /* inf - inf and nan - nan are nan: only finite values give 0 */
        mx = (v4f)_mm_max_ps((__m128)v, (__m128)mx); /* a nan lane is caught by nf */
        if (dst) memcpy(dst + i, &v, sizeof v);
    }
    float m = fmaxf(fmaxf(mx[0], mx[1]), fmaxf(mx[2], mx[3]));
    bool b = nf[0] | nf[1] | nf[2] | nf[3];
    for (; i < n; i++) {
        float v = x[i] / scale_div;
        b |= !isfinite(v);
        m = v > m ? v : m;
        if (dst) dst[i] = v;
    }
    *bad = b;
    return m;
}

/* sum of exp(x - shift) over x [n] in fp64 (4 lane sums, then added in lane order), weights into dst [n] when
 * dst is not NULL. The tail runs through exp4 too, so a weight does not depend on its position. */
static double exp_sum(float *dst, const float *x, int n, float shift) {
    v2d lo = {0, 0}, hi = {0, 0}; /* lanes 0, 1 and 2, 3 */
    int i = 0;
    for (; i + 4 <= n; i += 4) {
        v4f v;
        memcpy(&v, x + i, sizeof v);
        const v4f w = exp4(v - shift);
        if (dst) memcpy(dst + i, &w, sizeof w);
        lo += (v2d){w[0], w[1]};
        hi += (v2d){w[2], w[3]};
    }
    if (i < n) {
        v4f v = v4_splat(shift);
        for (int j = 0; j < n - i; j++) v[j] = x[i + j];
        const v4f w = exp4(v - shift);
        for (int j = 0; j < n - i; j++) {
            if (dst) dst[i + j] = w[j];
            if (j < 2) lo[j] += w[j];
            else hi[j - 2] += w[j];
        }
    }
    return ((lo[0] + lo[1]) + hi[0]) + hi[1];
}

static int argmax_lowest(const float *logits, int vocab) {
    bool bad;
    const float mx = max_finite(logits, vocab, 1.0f, NULL, &bad);
    int best = 0;
    while (best < vocab - 1 && !(logits[best] == mx)) best++; /* the first maximum; nan rows end at the last */
    return best;
}

/* Weights w_i = exp(logit_i / T - max) into s->scaled; returns max of logit/T; *z = sum of w. */
static float tempered_weights(sampler *s, float temperature, const float *logits, double *z) {
    const int V = s->vocab;
    bool bad;
    const float mx = max_finite(logits, V, temperature, s->scaled, &bad);
    if (bad)
        for (int i = 0; i < V; i++) {
            CHECK(isfinite(logits[i]), "sampler: logit %d is not finite (%g)", i, logits[i]);
            CHECK(isfinite(s->scaled[i]), "sampler: logit %d / temperature %g overflows (%g)", i, temperature,
                  logits[i]);
        }
    *z = exp_sum(s->scaled, s->scaled, V, mx);
    return mx;
}

/* ---- top-p without top-k: the nucleus boundary by a mass histogram over the weights' top bits ----
 * Weights are finite and in [0, 1], so their IEEE bits order as their values; bin = bits >> 19 (exponent and
 * 4 mantissa bits: a bin spans 1/16 of an octave). Candidate order (weight desc, id asc) visits bins from the
 * top, so "the first position where the cumulative weight reaches a target" is: the first bin (from the top)
 * whose mass takes the running sum to the target, then a walk over that bin's members alone, sorted. Only the
 * boundary bins (a few thousand tokens of a flat 152k row) are ever sorted. */
#define BIN_SHIFT 19
static inline int weight_bin(float w) {
    uint32_t bits;
    memcpy(&bits, &w, sizeof bits);
    return (int)(bits >> BIN_SHIFT);
}

static void bin_masses(sampler *s) {
    double *m = s->bin_mass;
    for (int b = 0; b < SAMPLER_BINS; b++) m[b] = 0;
    for (int i = 0; i < s->vocab; i++) m[weight_bin(s->scaled[i])] += s->scaled[i];
}

/* The members of bin b into c (at most vocab), sorted best first; returns how many have positive weight. */
static int gather_bin(sampler *s, int b, cand_t *c) {
    const float *w = s->scaled;
    const int V = s->vocab;
    const v4i key = {b, b, b, b};
    int n = 0, i = 0;
    for (; i + 16 <= V; i += 16) { /* 16 at a time: a bin holds few of the vocabulary's tokens */
        v4u bits[4];
        memcpy(bits, w + i, sizeof bits);
        const v4i hit = ((v4i)(bits[0] >> BIN_SHIFT) == key) | ((v4i)(bits[1] >> BIN_SHIFT) == key) |
                        ((v4i)(bits[2] >> BIN_SHIFT) == key) | ((v4i)(bits[3] >> BIN_SHIFT) == key);
        if (!_mm_movemask_ps((__m128)hit)) continue;
        for (int j = i; j < i + 16; j++) {
            c[n] = (cand_t){w[j], j};
            n += weight_bin(w[j]) == b; /* branch-free compaction, in id order */
        }
    }
    for (; i < V; i++) {
        c[n] = (cand_t){w[i], i};
        n += weight_bin(w[i]) == b;
    }
    sort_by_weight_desc(c, s->cand_tmp, n);
    while (n > 0 && c[n - 1].p <= 0) n--;
    return n;
}

/* The first position, in candidate order, where the running sum of weights passes target (>= when `reach`,
 * else >), over the bins from the top down to bin lo; bin lo counts only lo_c [nlo] (its first members, sorted)
 * when lo_c is not NULL. Returns that token, its bin in *pos_bin, its index among the bin's sorted members in
 * *pos_idx (the bin is gathered into c, of vocab + 1, unless it is lo_c's), and the sum there in *cum_out; a
 * bin whose own walk falls short of its binned mass (rounding) gives its last member; -1 when no bin passes. */
static int mass_position(sampler *s, double target, bool reach, int lo, const cand_t *lo_c, int nlo, cand_t *c,
                         int *pos_bin, int *pos_idx, double *cum_out) {
    double cum = 0;
    for (int b = SAMPLER_BINS - 1; b >= lo; b--) {
        const bool partial = b == lo && lo_c;
        double m = 0;
        if (partial)
            for (int i = 0; i < nlo; i++) m += lo_c[i].p;
        else m = s->bin_mass[b];
        if (m <= 0) continue;
        if (!partial && !(reach ? cum + m >= target : cum + m > target)) {
            cum += m;
            continue;
        }
        const cand_t *bc = lo_c;
        int n = nlo;
        if (!partial) {
            n = gather_bin(s, b, c);
            bc = c;
        }
        for (int i = 0; i < n; i++) {
            cum += bc[i].p;
            if (reach ? cum >= target : cum > target) {
                *pos_bin = b, *pos_idx = i, *cum_out = cum;
                return bc[i].id;
            }
        }
        if (!partial && n > 0) {
            *pos_bin = b, *pos_idx = n - 1, *cum_out = cum;
            return bc[n - 1].id;
        }
    }
    *pos_bin = -1, *pos_idx = -1, *cum_out = cum;
    return -1;
}

/* The nucleus of top_p alone: every token of a bin above s->nuc_bin plus the first s->nuc_n sorted members of
 * bin s->nuc_bin (in s->cand). Returns its mass. */
static double nucleus_cut(sampler *s, float top_p, double z) {
    bin_masses(s);
    int b, i;
    double cum;
    if (mass_position(s, (double)top_p * z, true, 0, NULL, 0, s->cand, &b, &i, &cum) < 0) {
        /* top_p z above the binned total by rounding: every token of positive weight */
        for (b = 0; b < SAMPLER_BINS - 1 && s->bin_mass[b] <= 0; b++) {}
        s->nuc_bin = b;
        s->nuc_n = gather_bin(s, b, s->cand);
        return cum;
    }
    s->nuc_bin = b;
    s->nuc_n = i + 1;
    return cum;
}

/* Top-k (0 < top_k < vocab), then top-p over those k, on the weights in s->scaled: returns the number of
 * candidates left in s->cand, sorted best first. (Top-p alone is nucleus_cut.) */
static int filter_top_k(sampler *s, const sampler_params *sp) {
    const int V = s->vocab;
    cand_t *c = s->cand;
    int n = sp->top_k;
    for (int i = 0; i < n; i++) c[i] = (cand_t){s->scaled[i], i};
    for (int i = n / 2 - 1; i >= 0; i--) heap_sift_down(c, n, i);
    for (int i = n; i < V; i++) {
        cand_t x = {s->scaled[i], i};
        if (cand_better(x, c[0])) {
            c[0] = x;
            heap_sift_down(c, n, 0);
        }
    }
    qsort(c, (size_t)n, sizeof *c, cand_cmp); /* k candidates from a heap: any order */
    while (n > 1 && c[n - 1].p <= 0) n--;     /* weights that underflowed to 0 are never candidates */
    if (sp->top_p < 1.0f) {
        double mass = 0;
        for (int i = 0; i < n; i++) mass += c[i].p;
        const double target = (double)sp->top_p * mass;
        double cum = 0;
        int keep = n;
        for (int i = 0; i < n; i++) {
            cum += c[i].p;
            if (cum >= target) {
                keep = i + 1;
                break;
            }
        }
        n = keep;
    }
    return n;
}

int32_t sampler_sample(sampler *s, const sampler_params *sp, const float *logits, uint64_t seq_id,
                       uint64_t position, float *logprob) {
    const int V = s->vocab;
    if (sp->temperature == 0) {
        int best = argmax_lowest(logits, V);
        if (logprob) *logprob = (float)-log(exp_sum(NULL, logits, V, logits[best])); /* fp32 terms, fp64 sum */
        return best;
    }
    double z;
    float mx = tempered_weights(s, sp->temperature, logits, &z);
    const bool use_k = sp->top_k > 0 && sp->top_k < V, use_p = sp->top_p < 1.0f;
    double u = sampler_uniform(sp->seed, seq_id, position);
    int32_t id = -1;
    double total;
    if (!use_k && !use_p) {
        total = z;
        double target = u * z, cum = 0;
        for (int i = 0; i < V; i++) {
            if (s->scaled[i] <= 0) continue;
            cum += s->scaled[i];
            id = i; /* the last positive-weight token also absorbs rounding at the top end */
            if (cum > target) break;
        }
    } else if (use_k) {
        const int n = filter_top_k(s, sp);
        total = 0;
        for (int i = 0; i < n; i++) total += s->cand[i].p;
        double target = u * total, cum = 0;
        for (int i = 0; i < n; i++) {
            cum += s->cand[i].p;
            id = s->cand[i].id;
            if (cum > target) break;
        }
    } else {
        /* top-p alone: the same first-position rule for the draw, over the nucleus (bins above nuc_bin whole,
         * nuc_bin's kept members); other bins are gathered after those members */
        total = nucleus_cut(s, sp->top_p, z);
        int b, i;
        double cum;
        id = mass_position(s, u * total, false, s->nuc_bin, s->cand, s->nuc_n, s->cand + s->nuc_n, &b, &i, &cum);
        if (id < 0 && s->nuc_n > 0) id = s->cand[s->nuc_n - 1].id; /* rounding at the top end: the last one */
    }
    CHECK(id >= 0, "sampler: empty distribution");
    if (logprob) {
        /* log w_id = logit/T - max exactly, recomputed rather than log(expf(..)) for precision. */
        double lw = (double)(logits[id] / sp->temperature) - mx;
        *logprob = (float)(lw - log(total));
    }
    return id;
}

int sampler_distribution(sampler *s, const sampler_params *sp, const float *logits, double *probs) {
    const int V = s->vocab;
    for (int i = 0; i < V; i++) probs[i] = 0;
    if (sp->temperature == 0) {
        probs[argmax_lowest(logits, V)] = 1;
        return 1;
    }
    double z;
    tempered_weights(s, sp->temperature, logits, &z);
    const bool use_k = sp->top_k > 0 && sp->top_k < V, use_p = sp->top_p < 1.0f;
    int count = 0;
    if (!use_k && !use_p) {
        for (int i = 0; i < V; i++) {
            probs[i] = s->scaled[i] / z;
            count += probs[i] > 0;
        }
    } else if (use_k) {
        const int n = filter_top_k(s, sp);
        double total = 0;
        for (int i = 0; i < n; i++) total += s->cand[i].p;
        for (int i = 0; i < n; i++) probs[s->cand[i].id] = s->cand[i].p / total;
        count = n;
    } else {
        const double total = nucleus_cut(s, sp->top_p, z);
        for (int i = 0; i < V; i++)
            if (weight_bin(s->scaled[i]) > s->nuc_bin) probs[i] = s->scaled[i] / total, count++;
        for (int i = 0; i < s->nuc_n; i++) probs[s->cand[i].id] = s->cand[i].p / total;
        count += s->nuc_n;
    }
    return count;
}
