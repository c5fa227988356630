#include "ops/sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "ops/ops_vmath.h"

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
    s->cand = xmalloc((size_t)vocab * sizeof *s->cand);
    s->cand_tmp = xmalloc((size_t)vocab * sizeof *s->cand_tmp);
}

void sampler_free(sampler *s) {
    free(s->scaled);
    free(s->cand);
    free(s->cand_tmp);
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

static int argmax_lowest(const float *logits, int vocab) {
    int best = 0;
    for (int i = 1; i < vocab; i++)
        if (logits[i] > logits[best]) best = i;
    return best;
}

/* Weights w_i = exp(logit_i / T - max) into s->scaled; returns max of logit/T; *z = sum of w. */
static float tempered_weights(sampler *s, float temperature, const float *logits, double *z) {
    const int V = s->vocab;
    float mx = -INFINITY;
    for (int i = 0; i < V; i++) {
        CHECK(isfinite(logits[i]), "sampler: logit %d is not finite (%g)", i, logits[i]);
        float x = logits[i] / temperature;
        s->scaled[i] = x;
        if (x > mx) mx = x;
    }
    double sum = 0;
    for (int i = 0; i < V; i++) {
        float w = expf(s->scaled[i] - mx);
        s->scaled[i] = w;
        sum += w;
    }
    *z = sum;
    return mx;
}

/* Applies top-k then top-p to the weights in s->scaled. Returns the number of candidates in s->cand (sorted
 * best first), or 0 when no filter applies (every token is a candidate, in id order, weights in s->scaled). */
static int filter_candidates(sampler *s, const sampler_params *sp, double z) {
    const int V = s->vocab;
    const bool use_k = sp->top_k > 0 && sp->top_k < V;
    const bool use_p = sp->top_p < 1.0f;
    if (!use_k && !use_p) return 0;
    cand_t *c = s->cand;
    int n;
    double mass;
    if (use_k) {
        n = sp->top_k;
        for (int i = 0; i < n; i++) c[i] = (cand_t){s->scaled[i], i};
        for (int i = n / 2 - 1; i >= 0; i--) heap_sift_down(c, n, i);
        for (int i = n; i < V; i++) {
            cand_t x = {s->scaled[i], i};
            if (cand_better(x, c[0])) {
                c[0] = x;
                heap_sift_down(c, n, 0);
            }
        }
        mass = 0;
        for (int i = 0; i < n; i++) mass += c[i].p;
    } else {
        /* Nucleus without k: {w >= t} is a most-likely-first prefix, so once its mass reaches top_p the
         * nucleus lies inside it and only it needs sorting. Lower t until it does (flat rows end up sorting
         * everything, which they must). */
        const double target = (double)sp->top_p * z;
        /* The nucleus is relative to the whole distribution, not to the candidates gathered. */
        for (double t = 1e-3;; t = t > 1e-30 ? t * 1e-4 : 0) {
            n = 0;
            mass = 0;
            for (int i = 0; i < V; i++)
                if (s->scaled[i] >= t) {
                    c[n++] = (cand_t){s->scaled[i], i};
                    mass += s->scaled[i];
                }
            if (mass >= target || t == 0) break;
        }
        mass = z;
    }
    if (use_k) qsort(c, (size_t)n, sizeof *c, cand_cmp); /* k candidates from a heap: any order */
    else sort_by_weight_desc(c, s->cand_tmp, n);         /* gathered in id order: the same order, O(n) */
    if (use_p) {
        const double target = (double)sp->top_p * mass; /* mass: of the top-k set, or z without top-k */
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
        if (logprob) {
            double sum = vm_exp_sum(NULL, logits, V, logits[best]); /* fp32 terms, fp64 sum */
            *logprob = (float)-log(sum);
        }
        return best;
    }
    double z;
    float mx = tempered_weights(s, sp->temperature, logits, &z);
    int n = filter_candidates(s, sp, z);
    double u = sampler_uniform(sp->seed, seq_id, position);
    int32_t id = -1;
    double total;
    if (n == 0) {
        total = z;
        double target = u * z, cum = 0;
        for (int i = 0; i < V; i++) {
            if (s->scaled[i] <= 0) continue;
            cum += s->scaled[i];
            id = i; /* the last positive-weight token also absorbs rounding at the top end */
            if (cum > target) break;
        }
    } else {
        total = 0;
        for (int i = 0; i < n; i++) total += s->cand[i].p;
        double target = u * total, cum = 0;
        for (int i = 0; i < n; i++) {
            cum += s->cand[i].p;
            id = s->cand[i].id;
            if (cum > target) break;
        }
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
    int n = filter_candidates(s, sp, z);
    if (n == 0) {
        int count = 0;
        for (int i = 0; i < V; i++) {
            probs[i] = s->scaled[i] / z;
            count += probs[i] > 0;
        }
        return count;
    }
    double total = 0;
    for (int i = 0; i < n; i++) total += s->cand[i].p;
    for (int i = 0; i < n; i++) probs[s->cand[i].id] = s->cand[i].p / total;
    return n;
}
