/* test_sampler: greedy, temperature, top-k and top-p sampling against distributions computed here. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/rng.h"
#include "ops/sampler.h"
#include "test.h"

/* Softmax of logits / T in double (the test's own reference). */
static void softmax_ref(const float *logits, int n, double temperature, double *p) {
    double mx = -INFINITY, z = 0;
    for (int i = 0; i < n; i++) mx = fmax(mx, logits[i] / temperature);
    for (int i = 0; i < n; i++) z += p[i] = exp(logits[i] / temperature - mx);
    for (int i = 0; i < n; i++) p[i] /= z;
}

static void test_greedy(void) {
    sampler s;
    sampler_init(&s, 6);
    const float logits[6] = {0.5f, 2.0f, -1.0f, 2.0f, 1.0f, 2.0f};
    sampler_params sp = {.temperature = 0, .top_p = 1, .seed = 1};
    float lp;
    int id = sampler_sample(&s, &sp, logits, 0, 0, &lp);
    EXPECT(id == 1, "greedy ties go to the lowest id: got %d", id);
    double p[6];
    softmax_ref(logits, 6, 1.0, p);
    EXPECT_CLOSE(lp, log(p[1]), 1e-6, 0, "greedy log-prob is the model's log-softmax");
    int other = 0;
    for (int pos = 0; pos < 50; pos++) other += sampler_sample(&s, &sp, logits, 7, pos, NULL) != 1;
    EXPECT(other == 0, "greedy ignores the random stream (%d changed)", other);
    sampler_free(&s);
}

/* Index of the k-th best logit under (value desc, id asc), by brute force. */
static bool in_top_k(const float *logits, int n, int k, int id) {
    int better = 0;
    for (int i = 0; i < n; i++)
        if (logits[i] > logits[id] || (logits[i] == logits[id] && i < id)) better++;
    return better < k;
}

static void test_top_k_never_outside(void) {
    enum { V = 300, K = 7 };
    float logits[V];
    rng_stream r;
    rng_stream_init(&r, 42, 0);
    for (int i = 0; i < V; i++) logits[i] = (float)rng_next_normal(&r) * 0.5f; /* flat-ish: tail matters */
    logits[10] = logits[20] = logits[30] = 3.0f; /* ties at the top */
    sampler s;
    sampler_init(&s, V);
    sampler_params sp = {.temperature = 1.5f, .top_k = K, .top_p = 1, .seed = 9};
    int outside = 0, distinct = 0, seen[V] = {0};
    for (int pos = 0; pos < 4000; pos++) {
        int id = sampler_sample(&s, &sp, logits, 3, pos, NULL);
        if (!in_top_k(logits, V, K, id)) outside++;
        if (!seen[id]++) distinct++;
    }
    EXPECT(outside == 0, "top-k returned %d tokens outside the k best", outside);
    EXPECT(distinct == K, "top-k with a flat tail should reach all k tokens, reached %d", distinct);
    /* Ties at the k boundary: 5 equal logits, k = 3 → ids 0, 1, 2 only. */
    float flat[8] = {1, 1, 1, 1, 1, -5, -5, -5};
    sampler s8;
    sampler_init(&s8, 8);
    sampler_params sk = {.temperature = 1, .top_k = 3, .top_p = 1, .seed = 5};
    double probs[8];
    int n = sampler_distribution(&s8, &sk, flat, probs);
    EXPECT(n == 3 && probs[0] > 0 && probs[1] > 0 && probs[2] > 0 && probs[3] == 0 && probs[4] == 0,
           "top-k ties keep the lowest ids (n=%d)", n);
    EXPECT_CLOSE(probs[0], 1.0 / 3, 1e-12, 0, "renormalised over the kept 3");
    sampler_free(&s8);
    sampler_free(&s);
}

static void test_top_p_hand_made(void) {
    /* Probabilities 0.05, 0.5, 0.1, 0.2, 0.15 at ids 0..4 (logits = log p). Descending: 1 (0.5), 3 (0.2),
     * 4 (0.15), 2 (0.1), 0 (0.05); cumulative 0.5, 0.7, 0.85, 0.95, 1. */
    const double p[5] = {0.05, 0.5, 0.1, 0.2, 0.15};
    float logits[5];
    for (int i = 0; i < 5; i++) logits[i] = (float)log(p[i]);
    sampler s;
    sampler_init(&s, 5);
    struct {
        float top_p;
        int n;
        int ids[5];
    } cases[] = {{0.3f, 1, {1}}, {0.5f - 1e-3f, 1, {1}}, {0.69f, 2, {1, 3}}, {0.71f, 3, {1, 3, 4}},
                 {0.9f, 4, {1, 3, 4, 2}}, {0.99f, 5, {1, 3, 4, 2, 0}}, {1.0f, 5, {1, 3, 4, 2, 0}}};
    for (size_t c = 0; c < S2D_ARRAY_LEN(cases); c++) {
        sampler_params sp = {.temperature = 1, .top_p = cases[c].top_p, .seed = 2};
        double probs[5];
        int n = sampler_distribution(&s, &sp, logits, probs);
        EXPECT(n == cases[c].n, "top_p %g keeps %d tokens, want %d", cases[c].top_p, n, cases[c].n);
        double kept = 0;
        for (int j = 0; j < cases[c].n; j++) kept += p[cases[c].ids[j]];
        for (int j = 0; j < cases[c].n; j++) {
            int id = cases[c].ids[j];
            EXPECT_CLOSE(probs[id], p[id] / kept, 1e-6, 0, "nucleus renormalised");
        }
        /* Draws and their log-probs agree with the nucleus. */
        int outside = 0;
        double worst = 0;
        for (int pos = 0; pos < 200; pos++) {
            float lp;
            int id = sampler_sample(&s, &sp, logits, 11, pos, &lp);
            if (probs[id] <= 0) outside++;
            else worst = fmax(worst, fabs(lp - log(probs[id])));
        }
        EXPECT(outside == 0, "top_p %g drew %d tokens outside the nucleus", cases[c].top_p, outside);
        EXPECT(worst < 1e-5, "behaviour log-prob is after filtering: worst error %g", worst);
    }
    /* top-k then top-p: k = 3 → {1, 3, 4} renormalised (0.5/0.85, 0.2/0.85, ...); p = 0.8 → cum 0.588, 0.824. */
    sampler_params both = {.temperature = 1, .top_k = 3, .top_p = 0.8f, .seed = 2};
    double probs[5];
    int n = sampler_distribution(&s, &both, logits, probs);
    EXPECT(n == 2 && probs[1] > 0 && probs[3] > 0, "top-k then top-p keeps 2, got %d", n);
    EXPECT_CLOSE(probs[1], 0.5 / 0.7, 1e-6, 0, "top-k + top-p renormalised");
    sampler_free(&s);
}

static void test_top_p_large_vocab_matches_full_sort(void) {
    enum { V = 5000 };
    float *logits = malloc(V * sizeof(float));
    double *probs = malloc(V * sizeof(double)), *ref = malloc(V * sizeof(double));
    int *order = malloc(V * sizeof(int));
    rng_stream r;
    rng_stream_init(&r, 77, 0);
    sampler s;
    sampler_init(&s, V);
    const float tops[] = {0.1f, 0.9f, 0.999f};
    const float scales[] = {0.3f, 3.0f};
    for (size_t a = 0; a < 2; a++)
        for (size_t b = 0; b < 3; b++) {
            for (int i = 0; i < V; i++) logits[i] = (float)rng_next_normal(&r) * scales[a];
            sampler_params sp = {.temperature = 0.8f, .top_p = tops[b], .seed = 1};
            int n = sampler_distribution(&s, &sp, logits, probs);
            /* Reference: full selection sort by (p desc, id asc) of the softmax, cumulative until >= top_p. */
            softmax_ref(logits, V, 0.8, ref);
            for (int i = 0; i < V; i++) order[i] = i;
            double cum = 0;
            int keep = 0;
            for (int i = 0; i < V && cum < tops[b]; i++) {
                int best = i;
                for (int j = i + 1; j < V; j++)
                    if (ref[order[j]] > ref[order[best]]) best = j;
                int t = order[i];
                order[i] = order[best];
                order[best] = t;
                cum += ref[order[i]];
                keep++;
            }
            EXPECT(n == keep, "nucleus size %d, full sort says %d (top_p %g, scale %g)", n, keep, tops[b],
                   scales[a]);
            int mismatch = 0;
            for (int i = 0; i < keep; i++) mismatch += probs[order[i]] <= 0;
            EXPECT(mismatch == 0, "%d nucleus tokens missing", mismatch);
        }
    sampler_free(&s);
    free(logits);
    free(probs);
    free(ref);
    free(order);
}

/* ---- the fast paths against a slow reference of the documented rule ----
 * Weights w = sampler_exp(logit / T - max) (the sampler's exp; its accuracy is test_exp_accuracy's), z their
 * sequential fp64 sum; candidates (w > 0) fully sorted by (w desc, id asc); top-k keeps the first k; top-p the
 * shortest prefix whose sequential cumulative weight reaches top_p times the mass (z, or the k kept); the draw
 * is the first kept position whose cumulative weight exceeds u times the kept mass, else the last kept; with
 * no filter at all the draw walks the tokens in id order instead. */
typedef struct {
    float w;
    int id;
} ref_cand;

static int ref_cmp(const void *pa, const void *pb) {
    const ref_cand *a = pa, *b = pb;
    if (a->w != b->w) return a->w > b->w ? -1 : 1;
    return a->id - b->id;
}

typedef struct {
    ref_cand *c; /* [V] sorted candidates */
    float *w;    /* [V] weights by id */
    int V;
    int n;       /* candidates of positive weight */
    double z;
    float mx;
} ref_row;

static void ref_prepare(ref_row *r, const float *logits, int V, float T) {
    r->V = V;
    r->mx = -INFINITY;
    for (int i = 0; i < V; i++) r->mx = fmaxf(r->mx, logits[i] / T);
    r->n = 0;
    r->z = 0;
    for (int i = 0; i < V; i++) {
        const float w = r->w[i] = sampler_exp(logits[i] / T - r->mx);
        r->z += w;
        if (w > 0) r->c[r->n++] = (ref_cand){w, i};
    }
    qsort(r->c, (size_t)r->n, sizeof *r->c, ref_cmp);
}

/* The pick for u and the kept count; *margin: how close (relative to z) a decision's target came to
 * a cumulative sum it was compared with, i.e. where a different fp64 summation order may decide otherwise. */
static int ref_pick(const ref_row *r, int top_k, float top_p, double u, int *keep_out, double *margin) {
    *margin = INFINITY;
    if (!(top_k > 0 && top_k < r->V) && top_p == 1.0f) {
        double cum = 0;
        int pick = -1;
        for (int i = 0; i < r->V; i++) {
            if (r->w[i] <= 0) continue;
            cum += r->w[i];
            pick = i;
            *margin = fmin(*margin, fabs(cum - u * r->z) / r->z);
            if (cum > u * r->z) break;
        }
        *keep_out = r->n;
        return pick;
    }
    int n = top_k > 0 && top_k < r->n ? top_k : r->n;
    double mass = 0;
    for (int i = 0; i < n; i++) mass += r->c[i].w;
    if (top_p < 1.0f) {
        const double target = (double)top_p * mass;
        double cum = 0;
        int keep = n;
        for (int i = 0; i < n; i++) {
            cum += r->c[i].w;
            *margin = fmin(*margin, fabs(cum - target) / r->z);
            if (cum >= target) {
                keep = i + 1;
                break;
            }
        }
        n = keep;
    }
    double total = 0;
    for (int i = 0; i < n; i++) total += r->c[i].w;
    const double target = u * total;
    double cum = 0;
    int pick = r->c[n - 1].id;
    for (int i = 0; i < n; i++) {
        cum += r->c[i].w;
        *margin = fmin(*margin, fabs(cum - target) / r->z);
        if (cum > target) {
            pick = r->c[i].id;
            break;
        }
    }
    *keep_out = n;
    return pick;
}

typedef struct {
    const char *name;
    int V;
    bool exact; /* weights from a few values: every fp64 sum is exact, so no rounding excuse */
} ref_case;

static void fill_case(int c, float *x, int V, rng_stream *r) {
    for (int i = 0; i < V; i++) {
        switch (c) {
        case 0: x[i] = (float)rng_next_normal(r); break;           /* flat: wide nucleus */
        case 1: x[i] = (float)(4 * rng_next_normal(r)); break;     /* peaked */
        case 2: x[i] = (float)(0.2 * rng_next_normal(r)); break;   /* nearly uniform */
        case 3: x[i] = (float)-(int)(rng_next_u64(r) % 3); break;  /* ties: three values */
        case 4: x[i] = 0.5f; break;                                /* all equal */
        case 5: x[i] = i % 7 ? -1e30f : (float)rng_next_normal(r); break; /* mostly -inf-like */
        case 6: x[i] = (float)rng_next_normal(r) - (i % 3 ? 0.0f : 100.0f); break; /* weights down to 0 */
        case 7: x[i] = (float)rng_next_normal(r) + (i == V / 3 ? 40.0f : 0.0f); break; /* one dominates */
        case 8: x[i] = (float)floor(2 * rng_next_normal(r)); break; /* many ties at many values */
        default: x[i] = (float)rng_next_normal(r) * (float)(1 + i % 5); break;
        }
    }
}

static void test_fast_paths_match_reference(void) {
    const ref_case cases[] = {{"flat", 3000, false},      {"peaked", 3000, false},   {"near-uniform", 3000, false},
                              {"3-value ties", 3000, true}, {"all equal", 1000, true}, {"mostly -1e30", 3000, false},
                              {"underflow", 3000, false},   {"dominant", 3000, false}, {"integer ties", 3000, false},
                              {"mixed scales", 3000, false}, {"flat 60k", 60000, false}};
    const struct {
        float T, top_p;
        int top_k;
    } cfg[] = {{1, 1, 0},     {1, 0.95f, 0},  {0.7f, 0.5f, 0}, {1.3f, 0.999f, 0}, {1, 1e-4f, 0},
               {1, 0.3f, 0},  {1, 1, 50},     {0.8f, 0.9f, 40}, {1, 0.6f, 1},     {2, 0.99f, 0}};
    enum { DRAWS = 40 };
    rng_stream r;
    rng_stream_init(&r, 2024, 0);
    long total = 0, mismatched = 0, excused = 0, kept_bad = 0, lp_bad = 0;
    for (size_t c = 0; c < S2D_ARRAY_LEN(cases); c++) {
        const int V = cases[c].V;
        float *x = malloc((size_t)V * sizeof *x);
        double *probs = malloc((size_t)V * sizeof *probs);
        ref_row row = {.c = malloc((size_t)V * sizeof *row.c), .w = malloc((size_t)V * sizeof *row.w)};
        fill_case(c == 10 ? 0 : (int)c, x, V, &r);
        sampler s;
        sampler_init(&s, V);
        for (size_t k = 0; k < S2D_ARRAY_LEN(cfg); k++) {
            if (V > 10000 && cfg[k].top_k == 0 && cfg[k].top_p == 1) continue; /* keep the big case quick */
            ref_prepare(&row, x, V, cfg[k].T);
            sampler_params sp = {.temperature = cfg[k].T, .top_k = cfg[k].top_k, .top_p = cfg[k].top_p, .seed = 31};
            /* the kept set, through sampler_distribution */
            int keep;
            double margin;
            ref_pick(&row, cfg[k].top_k, cfg[k].top_p, 0.5, &keep, &margin);
            const int n = sampler_distribution(&s, &sp, x, probs);
            int missing = 0, extra = 0;
            for (int i = 0; i < keep; i++) missing += probs[row.c[i].id] <= 0;
            for (int i = 0; i < V; i++) extra += probs[i] > 0;
            const bool set_ok = n == keep && missing == 0 && extra == keep;
            if (!set_ok && (cases[c].exact || margin > 1e-9)) {
                kept_bad++;
                if (kept_bad <= 5)
                    printf("  %s T=%g k=%d p=%g: kept %d (%d positive, %d missing), reference %d\n", cases[c].name,
                           cfg[k].T, cfg[k].top_k, cfg[k].top_p, n, extra, missing, keep);
            }
            for (int d = 0; d < DRAWS; d++) {
                const uint64_t seq = 1000 + c, pos = 17 * k + (uint64_t)d;
                const double u = sampler_uniform(sp.seed, seq, pos);
                float lp;
                const int got = sampler_sample(&s, &sp, x, seq, pos, &lp);
                const int want = ref_pick(&row, cfg[k].top_k, cfg[k].top_p, u, &keep, &margin);
                total++;
                if (got != want) {
                    if (!cases[c].exact && margin <= 1e-9) excused++;
                    else if (++mismatched <= 5)
                        printf("  %s T=%g k=%d p=%g u=%.17g: got %d, reference %d (margin %.3g)\n", cases[c].name,
                               cfg[k].T, cfg[k].top_k, cfg[k].top_p, u, got, want, margin);
                    continue;
                }
                /* log-prob under the kept, renormalised distribution */
                double kept_mass = 0, wg = 0;
                for (int i = 0; i < keep; i++) {
                    kept_mass += row.c[i].w;
                    if (row.c[i].id == got) wg = row.c[i].w;
                }
                if (!(fabs(lp - log(wg / kept_mass)) < 1e-5)) lp_bad++;
            }
        }
        sampler_free(&s);
        free(x), free(probs), free(row.c), free(row.w);
    }
    EXPECT(mismatched == 0, "%ld of %ld draws differ from the reference outside rounding ties", mismatched, total);
    EXPECT(excused * 100 <= total, "%ld of %ld draws excused as rounding ties: too many to be ties", excused, total);
    EXPECT(kept_bad == 0, "%ld kept sets differ from the reference", kept_bad);
    EXPECT(lp_bad == 0, "%ld log-probs differ from log(w / kept mass)", lp_bad);
    printf("  %ld draws, %ld excused as fp64 rounding ties\n", total, excused);
}

/* A non-finite logit (found by the vectorised max pass, in a 4-lane block or in the tail) or one whose
 * logit / T overflows dies naming its index: run in a child, its stderr read back. */
static bool dies_with(const float *logits, int V, float T, const char *want) {
    int fd[2];
    if (pipe(fd) != 0) return false;
    fflush(NULL);
    pid_t kid = fork();
    if (kid == 0) {
        dup2(fd[1], 2);
        close(fd[0]);
        sampler s;
        sampler_init(&s, V);
        sampler_params sp = {.temperature = T, .top_p = 0.9f, .seed = 1};
        (void)sampler_sample(&s, &sp, logits, 0, 0, NULL);
        _exit(0);
    }
    close(fd[1]);
    char buf[4096] = {0};
    size_t got = 0;
    ssize_t r;
    while (got < sizeof buf - 1 && (r = read(fd[0], buf + got, sizeof buf - 1 - got)) > 0) got += (size_t)r;
    close(fd[0]);
    int status = 0;
    waitpid(kid, &status, 0);
    const bool died = !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    if (!died || !strstr(buf, want)) printf("  wanted a death with '%s', got status %d: %s\n", want, status, buf);
    return died && strstr(buf, want);
}

static void test_non_finite_logits_die(void) {
    enum { V = 23 };
    float x[V];
    for (int i = 0; i < V; i++) x[i] = (float)i / 7;
    x[6] = NAN;
    EXPECT(dies_with(x, V, 1, "logit 6 is not finite"), "nan in a block");
    x[6] = 0, x[V - 1] = -INFINITY;
    EXPECT(dies_with(x, V, 1, "logit 22 is not finite"), "-inf in the tail");
    x[V - 1] = 0, x[3] = 3e38f;
    EXPECT(dies_with(x, V, 0.5f, "logit 3 / temperature 0.5 overflows"), "logit / T overflowing");
}

/* The weights' exp against libm: <= 2 ulp (relative 2.4e-7) where the result is normal, within 2 of the
 * smallest subnormal below, exp(0) = 1 exactly, and 0 far below. */
static void test_exp_accuracy(void) {
    double worst = 0, worst_sub = 0;
    rng_stream r;
    rng_stream_init(&r, 5, 0);
    for (int i = 0; i < 400000; i++) {
        const float x = i < 200000 ? -110.0f * (float)i / 200000 : (float)(-110 * rng_next_double(&r));
        const double want = exp((double)x), got = sampler_exp(x);
        if (want >= 1.1754943508222875e-38) worst = fmax(worst, fabs(got - want) / want);
        else worst_sub = fmax(worst_sub, fabs(got - want) / 1.401298464324817e-45);
    }
    EXPECT(worst < 2.4e-7, "sampler_exp relative error %.3g", worst);
    EXPECT(worst_sub <= 2, "sampler_exp subnormal error %.3g of the smallest subnormal", worst_sub);
    EXPECT(sampler_exp(0) == 1.0f && sampler_exp(-200) == 0 && sampler_exp(-1e30f) == 0, "exp(0) = 1, far below 0");
}

/* Pearson chi-square of counts against expected probabilities. */
static double chi_square(const int *counts, const double *p, int n, int draws) {
    double chi = 0;
    for (int i = 0; i < n; i++) {
        double e = p[i] * draws;
        chi += (counts[i] - e) * (counts[i] - e) / e;
    }
    return chi;
}

static void test_temperature_frequencies(void) {
    enum { V = 8, DRAWS = 40000 };
    const float logits[V] = {1.0f, 0.2f, -0.5f, 2.0f, 0.0f, -1.0f, 1.5f, 0.7f};
    sampler s;
    sampler_init(&s, V);
    const float temps[] = {0.5f, 1.0f, 2.0f};
    for (size_t t = 0; t < 3; t++) {
        sampler_params sp = {.temperature = temps[t], .top_p = 1, .seed = 1234};
        int counts[V] = {0};
        double p[V];
        softmax_ref(logits, V, temps[t], p);
        double worst = 0;
        for (int d = 0; d < DRAWS; d++) {
            float lp;
            int id = sampler_sample(&s, &sp, logits, 5, d, &lp);
            counts[id]++;
            worst = fmax(worst, fabs(lp - log(p[id])));
        }
        EXPECT(worst < 1e-5, "log-prob after temperature: worst error %g", worst);
        /* 7 degrees of freedom: P(chi2 > 29) ~ 1e-4. */
        double chi = chi_square(counts, p, V, DRAWS);
        EXPECT(chi < 29, "temperature %g: chi-square %g vs softmax(logits/T)", temps[t], chi);
        /* And the test can fail: the counts are far from softmax at a different temperature. */
        double q[V];
        softmax_ref(logits, V, temps[t] * 1.5, q);
        EXPECT(chi_square(counts, q, V, DRAWS) > 100, "chi-square discriminates temperatures");
    }
    /* Top-p frequencies follow the renormalised nucleus. */
    sampler_params sp = {.temperature = 1, .top_p = 0.8f, .seed = 99};
    double probs[V];
    int n = sampler_distribution(&s, &sp, logits, probs);
    int counts[V] = {0};
    for (int d = 0; d < DRAWS; d++) counts[sampler_sample(&s, &sp, logits, 6, d, NULL)]++;
    double chi = 0;
    for (int i = 0; i < V; i++) {
        if (probs[i] == 0) {
            EXPECT(counts[i] == 0, "filtered token %d drawn %d times", i, counts[i]);
            continue;
        }
        double e = probs[i] * DRAWS;
        chi += (counts[i] - e) * (counts[i] - e) / e;
    }
    EXPECT(n >= 2 && chi < 25, "top-p frequencies: chi-square %g over %d tokens", chi, n);
    sampler_free(&s);
}

static void test_draw_depends_only_on_seed_seq_position(void) {
    enum { V = 50 };
    float logits[V];
    for (int i = 0; i < V; i++) logits[i] = (float)sin(i * 1.3);
    sampler a, b;
    sampler_init(&a, V);
    sampler_init(&b, V);
    sampler_params sp = {.temperature = 1, .top_p = 1, .seed = 17};
    int same = 0, diff_seq = 0, diff_seed = 0;
    for (int pos = 0; pos < 200; pos++) {
        int x = sampler_sample(&a, &sp, logits, 4, pos, NULL);
        /* An unrelated draw in between must not matter (no hidden state). */
        (void)sampler_sample(&b, &sp, logits, 99, pos + 7, NULL);
        same += x == sampler_sample(&b, &sp, logits, 4, pos, NULL);
        diff_seq += x != sampler_sample(&b, &sp, logits, 5, pos, NULL);
        sampler_params sp2 = sp;
        sp2.seed = 18;
        diff_seed += x != sampler_sample(&b, &sp2, logits, 4, pos, NULL);
    }
    EXPECT(same == 200, "same (seed, seq, position) gives the same token: %d/200", same);
    EXPECT(diff_seq > 100 && diff_seed > 100, "other streams differ (%d, %d of 200)", diff_seq, diff_seed);
    double u = sampler_uniform(1, 2, 3);
    EXPECT(u >= 0 && u < 1 && u == sampler_uniform(1, 2, 3), "uniform in [0,1) and pure");
    sampler_free(&a);
    sampler_free(&b);
}

static void test_params_check(void) {
    s2d_err err;
    sampler_params ok = {.temperature = 0.7f, .top_k = 0, .top_p = 1};
    EXPECT(sampler_params_check(&ok, &err), "valid params");
    sampler_params bad = ok;
    bad.temperature = -1;
    EXPECT(!sampler_params_check(&bad, &err) && strstr(err.msg, "temperature"), "negative temperature");
    bad = ok;
    bad.top_p = 0;
    EXPECT(!sampler_params_check(&bad, &err) && strstr(err.msg, "top_p"), "top_p 0");
    bad = ok;
    bad.top_k = -2;
    EXPECT(!sampler_params_check(&bad, &err) && strstr(err.msg, "top_k"), "negative top_k");
}

int main(void) {
    RUN_TEST(test_greedy);
    RUN_TEST(test_top_k_never_outside);
    RUN_TEST(test_top_p_hand_made);
    RUN_TEST(test_top_p_large_vocab_matches_full_sort);
    RUN_TEST(test_temperature_frequencies);
    RUN_TEST(test_draw_depends_only_on_seed_seq_position);
    RUN_TEST(test_params_check);
    RUN_TEST(test_exp_accuracy);
    RUN_TEST(test_non_finite_logits_die);
    RUN_TEST(test_fast_paths_match_reference);
    return TEST_SUMMARY();
}
