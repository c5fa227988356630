/* Losses (DESIGN §3) against closed forms and central finite differences. */
#include <stdlib.h>

#include "algo/losses.h"
#include "ops/ops_cpu.h"
#include "core/rng.h"
#include "test.h"

/* Layout used by most tests: 3 sequences of 3, 1 and 4 tokens; token 5 masked. */
static const int SEQ_START[] = {0, 3, 4, 8};
static const float MASK[] = {1, 1, 1, 1, 1, 0, 1, 1};
enum { T = 8 };

static void fill_random(float *x, int n, double lo, double hi, uint64_t stream) {
    rng_stream r;
    rng_stream_init(&r, 1234, stream);
    for (int i = 0; i < n; i++) x[i] = (float)(lo + (hi - lo) * rng_next_double(&r));
}

static void test_agg_weights(void) {
    token_layout lay = {3, SEQ_START, MASK};
    float w[T];
    loss_agg_weights(&lay, AGG_TOKEN_MEAN, 0, w);
    EXPECT_CLOSE(w[0], 1.0 / 7, 1e-7, 0, "token-mean weight");
    EXPECT(w[5] == 0, "masked token has no weight");
    loss_agg_weights(&lay, AGG_SEQ_MEAN_TOKEN_MEAN, 0, w);
    EXPECT_CLOSE(w[0], 1.0 / 9, 1e-7, 0, "seq-mean-token-mean, 3-token sequence");
    EXPECT_CLOSE(w[3], 1.0 / 3, 1e-7, 0, "seq-mean-token-mean, 1-token sequence");
    EXPECT_CLOSE(w[4], 1.0 / 9, 1e-7, 0, "seq-mean-token-mean, sequence with a masked token");
    loss_agg_weights(&lay, AGG_SEQ_MEAN_TOKEN_SUM_NORM, 10, w);
    EXPECT_CLOSE(w[6], 1.0 / 30, 1e-7, 0, "seq-mean-token-sum-norm");
    double s = 0;
    loss_agg_weights(&lay, AGG_SEQ_MEAN_TOKEN_MEAN, 0, w);
    for (int t = 0; t < T; t++) s += w[t];
    EXPECT_CLOSE(s, 1.0, 1e-6, 0, "mean weights sum to one");
}

static void test_sft(void) {
    token_layout lay = {3, SEQ_START, MASK};
    float logp[T], d[T];
    fill_random(logp, T, -3, -0.1, 1);
    double loss = sft_loss(&lay, AGG_TOKEN_MEAN, 0, logp, d);
    double want = 0;
    for (int t = 0; t < T; t++) want -= MASK[t] * logp[t] / 7.0;
    EXPECT_CLOSE(loss, want, 1e-6, 0, "sft loss = -mean logp");
    EXPECT_CLOSE(d[1], -1.0 / 7, 1e-7, 0, "sft gradient");
}

static void test_grpo_advantages(void) {
    float r[] = {1, 0, 0, 1, 1, 1, 1, 1}, a[8];
    bool zv[2];
    grpo_advantages(r, 2, 4, true, false, 1e-6f, a, zv);
    EXPECT_CLOSE(a[0], 0.5 / (0.5 + 1e-6), 1e-6, 0, "std-normalised advantage (population std)");
    EXPECT_CLOSE(a[1], -0.5 / (0.5 + 1e-6), 1e-6, 0, "negative advantage");
    EXPECT(!zv[0] && zv[1], "zero-variance group flagged");
    EXPECT(a[4] == 0 && a[7] == 0, "equal rewards give zero advantage");
    grpo_advantages(r, 2, 4, false, false, 1e-6f, a, NULL);
    EXPECT_CLOSE(a[0], 0.5, 1e-7, 0, "Dr.GRPO: no std division");
    grpo_advantages(r, 1, 4, true, true, 0, a, NULL);
    EXPECT_CLOSE(a[0], 0.5 / sqrt(1.0 / 3.0), 1e-6, 0, "unbiased std");
}

/* Central differences of a loss in the policy log-probs, compared with the analytic gradient. */
typedef double (*loss_fn)(const float *logp, float *dlogp, const void *ctx);

static void check_fd(loss_fn f, const void *ctx, const float *logp0, const char *what) {
    float logp[T], d[T], scratch[T];
    memcpy(logp, logp0, sizeof logp);
    f(logp, d, ctx);
    const float h = 1e-3f;
    for (int t = 0; t < T; t++) {
        float x = logp[t];
        logp[t] = x + h;
        double up = f(logp, scratch, ctx);
        logp[t] = x - h;
        double down = f(logp, scratch, ctx);
        logp[t] = x;
        double fd = (up - down) / (2.0 * h);
        char msg[96];
        snprintf(msg, sizeof msg, "%s: d/dlogp[%d]", what, t);
        EXPECT_CLOSE(d[t], fd, 2e-5, 2e-3, msg);
    }
}

typedef struct {
    grpo_opts o;
    const float *old, *beh, *ref, *adv;
} grpo_ctx;

static double grpo_f(const float *logp, float *d, const void *c) {
    const grpo_ctx *g = c;
    token_layout lay = {3, SEQ_START, MASK};
    return grpo_loss(&g->o, &lay, logp, g->old, g->beh, g->ref, g->adv, d, NULL);
}

/* grpo.std: one right answer in a group of 4, r = {1, 0, 0, 0}: mean 1/4, Σ(r − mean)² = 3/4, so the unbiased
 * std is sqrt(3/4 / 3) = 1/2, the population std sqrt(3/4 / 4) = sqrt(3)/4. A_0 = (3/4)/std and A_i = −(1/4)/std:
 * unbiased 3/2 and −1/2, population sqrt(3) and −1/sqrt(3), none 3/4 and −1/4. A group of equal rewards has
 * A = 0 (and zero_var) in every mode. */
static void test_grpo_std_modes(void) {
    const float r[8] = {1, 0, 0, 0, 1, 1, 1, 1};
    float a[8];
    bool zv[2];
    const double want[3][2] = {{1.5, -0.5}, {sqrt(3.0), -1 / sqrt(3.0)}, {0.75, -0.25}};
    const grpo_std modes[3] = {GRPO_STD_UNBIASED, GRPO_STD_POPULATION, GRPO_STD_NONE};
    for (int m = 0; m < 3; m++) {
        grpo_group_advantages(r, 2, 4, modes[m], 1e-6f, a, zv); /* eps: a zero std divides 0, not 0 / 0 */
        EXPECT(fabs(a[0] - want[m][0]) < 1e-5 && fabs(a[1] - want[m][1]) < 1e-5 && a[2] == a[1] && a[3] == a[1],
               "std mode %d: advantages %g %g %g %g, want %g %g", m, a[0], a[1], a[2], a[3], want[m][0], want[m][1]);
        EXPECT(!zv[0] && zv[1] && a[4] == 0 && a[7] == 0, "std mode %d: the equal group has zero advantages", m);
    }
}

static void test_grpo_gradients(void) {
    float logp[T], old[T], beh[T], ref[T];
    fill_random(old, T, -3, -0.2, 2);
    fill_random(beh, T, -3, -0.2, 3);
    fill_random(ref, T, -3, -0.2, 4);
    /* Ratios inside the clip range except token 2 (ρ ≈ 1.5: clipped for A > 0) and 6 (ρ ≈ 0.5). */
    float delta[T] = {0.05f, -0.08f, 0.4f, 0.02f, -0.03f, 0.3f, -0.7f, 0.1f};
    for (int t = 0; t < T; t++) logp[t] = old[t] + delta[t];
    float adv[T] = {1, 1, 1, -0.5f, 0.7f, 0.7f, 0.7f, 0.7f};
    const char *names[] = {"k1", "k2", "k3"};
    for (int est = 0; est < 3; est++) {
        grpo_ctx c = {{0.2f, 0.28f, 3.0f, 0.1f, (kl_estimator)est, AGG_SEQ_MEAN_TOKEN_MEAN, 0, 2.0f},
                      old, beh, ref, adv};
        char what[64];
        snprintf(what, sizeof what, "grpo, KL %s", names[est]);
        check_fd(grpo_f, &c, logp, what);
    }
    grpo_ctx c = {{0.2f, 0.2f, 0, 0, KL_K1, AGG_SEQ_MEAN_TOKEN_SUM_NORM, 6, 0}, old, NULL, NULL, adv};
    check_fd(grpo_f, &c, logp, "grpo, Dr.GRPO aggregation");

    /* Closed forms at ρ = 1, token-mean, no KL: loss = −mean A, gradient −A/N. */
    grpo_ctx on = {{0.2f, 0.2f, 0, 0, KL_K1, AGG_TOKEN_MEAN, 0, 0}, old, NULL, NULL, adv};
    float d[T];
    grpo_stats st;
    token_layout lay = {3, SEQ_START, MASK};
    double loss = grpo_loss(&on.o, &lay, old, old, NULL, NULL, adv, d, &st);
    double want = 0;
    for (int t = 0; t < T; t++) want -= MASK[t] * adv[t] / 7.0;
    EXPECT_CLOSE(loss, want, 1e-6, 0, "on-policy grpo loss = -mean A");
    EXPECT_CLOSE(d[3], 0.5 / 7, 1e-7, 0, "on-policy gradient = -A/N");
    EXPECT(st.tokens == 7 && st.clip_fraction == 0, "stats: 7 tokens, none clipped");

    /* Clipped tokens carry no gradient: ρ = e^0.4 > 1.2 with A > 0. */
    grpo_loss(&on.o, &lay, logp, old, NULL, NULL, adv, d, &st);
    EXPECT(d[2] == 0, "clipped token (rho %.3f, A>0) has zero gradient", exp(0.4));
    EXPECT(d[6] != 0, "rho < 1-eps with A>0 is not clipped (pessimistic branch is unclipped)");
    EXPECT(d[5] == 0, "masked token has zero gradient");

    /* Dual clip: A < 0, ρ = e^1.5 ≈ 4.48 > c = 3 → loss −A·c, no gradient. */
    float big[T];
    memcpy(big, old, sizeof big);
    big[3] = old[3] + 1.5f;
    grpo_opts dual = {0.2f, 0.2f, 3.0f, 0, KL_K1, AGG_TOKEN_MEAN, 0, 0};
    loss = grpo_loss(&dual, &lay, big, old, NULL, NULL, adv, d, &st);
    EXPECT(d[3] == 0, "dual-clipped token has zero gradient");
    grpo_opts nodual = dual;
    nodual.dual_clip = 0;
    double loss_nodual = grpo_loss(&nodual, &lay, big, old, NULL, NULL, adv, d, NULL);
    EXPECT_CLOSE(loss_nodual - loss, (0.5 * exp(1.5) - 0.5 * 3.0) / 7.0, 1e-5, 0, "dual clip caps -A*rho at -A*c");

    /* Truncated importance weight scales a token's loss by min(e^(old-beh), C). */
    float beh2[T];
    memcpy(beh2, old, sizeof beh2);
    beh2[0] = old[0] - 2.0f; /* e^2 ≈ 7.4 → capped at 2 */
    grpo_opts tis = {0.2f, 0.2f, 0, 0, KL_K1, AGG_TOKEN_MEAN, 0, 2.0f};
    grpo_loss(&tis, &lay, old, old, beh2, NULL, adv, d, NULL);
    EXPECT_CLOSE(d[0], -2.0 * adv[0] / 7.0, 1e-6, 0, "truncated IS weight capped at C");
    EXPECT_CLOSE(d[1], -1.0 * adv[1] / 7.0, 1e-6, 0, "IS weight 1 when behaviour = old");

    /* k3 value: e^(ref-θ) − (ref−θ) − 1 ≥ 0, zero iff equal. */
    float zero_adv[T] = {0};
    grpo_opts k3 = {0.2f, 0.2f, 0, 1.0f, KL_K3, AGG_TOKEN_MEAN, 0, 0};
    grpo_loss(&k3, &lay, logp, logp, NULL, ref, zero_adv, d, &st);
    double want_kl = 0;
    for (int t = 0; t < T; t++) {
        double x = (double)ref[t] - logp[t];
        want_kl += MASK[t] * (exp(x) - x - 1) / 7.0;
    }
    EXPECT_CLOSE(st.kl, want_kl, 1e-6, 1e-6, "k3 estimator value");
}

typedef struct {
    opd_opts o;
    const float *old, *teacher, *ref;
} opd_ctx;

static double opd_f(const float *logp, float *d, const void *c) {
    const opd_ctx *g = c;
    token_layout lay = {3, SEQ_START, MASK};
    return opd_loss(&g->o, &lay, logp, g->old, g->teacher, g->ref, d, NULL);
}

static void test_opd(void) {
    float old[T], teacher[T], ref[T], ref2[T], d1[T], d2[T], w[T];
    fill_random(old, T, -3, -0.2, 5);
    fill_random(teacher, T, -3, -0.2, 6);
    fill_random(ref, T, -3, -0.2, 7);
    fill_random(ref2, T, -5, -0.1, 8);
    token_layout lay = {3, SEQ_START, MASK};
    opd_opts plain = {1.0f, 0, 0.2f, 0.2f, AGG_TOKEN_MEAN, 0, false};
    double l1 = opd_loss(&plain, &lay, old, old, teacher, ref, d1, w);
    double l2 = opd_loss(&plain, &lay, old, old, teacher, ref2, d2, NULL);
    EXPECT(l1 == l2 && memcmp(d1, d2, sizeof d1) == 0, "λ = 1: the reference cancels exactly");
    EXPECT_CLOSE(w[0], (double)teacher[0] - old[0], 1e-6, 0, "λ = 1 weight is ℓ_T − ℓold");
    EXPECT_CLOSE(d1[0], -((double)teacher[0] - old[0]) / 7.0, 1e-6, 0, "on-policy gradient −w/N");

    /* A teacher equal to the policy, with the reference at the policy (step 0): zero gradient for any λ. */
    opd_opts ex = {2.5f, 0, 0.2f, 0.2f, AGG_TOKEN_MEAN, 0, false};
    opd_loss(&ex, &lay, old, old, old, old, d1, NULL);
    int zeros = 0;
    for (int t = 0; t < T; t++) zeros += d1[t] == 0;
    EXPECT(zeros == T, "teacher = policy = reference gives zero gradient (%d of %d zero)", zeros, T);
    opd_loss(&plain, &lay, old, old, old, ref, d1, NULL);
    zeros = 0;
    for (int t = 0; t < T; t++) zeros += d1[t] == 0;
    EXPECT(zeros == T, "λ = 1, teacher = policy gives zero gradient whatever the reference");

    /* opd.mode full / topk: only the reference's (1 − λ)ℓref stays a per-token weight (none at λ = 1); the
     * teacher's log-probs are not read. */
    opd_opts an = {1.25f, 0, 0.2f, 0.2f, AGG_TOKEN_MEAN, 0, true};
    opd_loss(&an, &lay, old, old, NULL, ref, d1, w);
    EXPECT_CLOSE(w[0], (1 - 1.25) * (double)ref[0], 1e-6, 0, "analytic teacher: weight (1 − λ)ℓref");
    EXPECT_CLOSE(d1[0], -(1 - 1.25) * (double)ref[0] / 7.0, 1e-6, 0, "analytic teacher: gradient −w/N");
    an.lambda = 1.0f;
    opd_loss(&an, &lay, old, old, NULL, NULL, d1, NULL);
    zeros = 0;
    for (int t = 0; t < T; t++) zeros += d1[t] == 0;
    EXPECT(zeros == T, "analytic teacher at λ = 1: no per-token gradient (%d of %d zero)", zeros, T);

    /* ExOPD weight closed form and γ discount within a sequence. */
    opd_loss(&ex, &lay, old, old, teacher, ref, d1, w);
    double w2 = 2.5 * ((double)teacher[2] - ref[2]) - ((double)old[2] - ref[2]);
    EXPECT_CLOSE(w[2], w2, 1e-5, 0, "ExOPD weight λ(ℓT−ℓref) − (ℓold−ℓref)");
    opd_opts disc = {2.5f, 0.5f, 0.2f, 0.2f, AGG_TOKEN_MEAN, 0, false};
    float wd[T];
    opd_loss(&disc, &lay, old, old, teacher, ref, d1, wd);
    double w1 = 2.5 * ((double)teacher[1] - ref[1]) - ((double)old[1] - ref[1]);
    EXPECT_CLOSE(wd[1], w1 + 0.5 * w2, 1e-5, 0, "γ-discounted weight w1 + γ w2");
    EXPECT_CLOSE(wd[2], w2, 1e-5, 0, "last token keeps its own weight");
    EXPECT_CLOSE(wd[3], w[3], 1e-6, 0, "discount does not cross sequences");

    float logp[T];
    float delta[T] = {0.05f, -0.08f, 0.1f, 0.02f, -0.03f, 0.3f, -0.1f, 0.15f};
    for (int t = 0; t < T; t++) logp[t] = old[t] + delta[t];
    opd_ctx c = {{2.0f, 0.3f, 0.2f, 0.28f, AGG_SEQ_MEAN_TOKEN_MEAN, 0, false}, old, teacher, ref};
    check_fd(opd_f, &c, logp, "opd off-policy");
}

static double kl_closed_form(const float *pt_logp, const float *z, int V) {
    double mx = -1e300, s = 0, kl = 0;
    for (int v = 0; v < V; v++) mx = z[v] > mx ? z[v] : mx;
    for (int v = 0; v < V; v++) s += exp(z[v] - mx);
    for (int v = 0; v < V; v++) kl += exp(pt_logp[v]) * (pt_logp[v] - (z[v] - mx - log(s)));
    return kl;
}

static void test_fkl(void) {
    enum { V = 37 };
    float zt[V], tl[V], z[V], d[V], d2[V];
    fill_random(zt, V, -4, 4, 9);
    fill_random(z, V, -4, 4, 10);
    cpu_log_softmax_row(zt, V, tl);
    double kl = cpu_fkl_full_row(tl, z, V, 1.0f, d);
    EXPECT_CLOSE(kl, kl_closed_form(tl, z, V), 1e-6, 1e-6, "full KL value");
    double self = cpu_fkl_full_row(tl, zt, V, 1.0f, d2);
    EXPECT(fabs(self) < 1e-6, "KL(p||p) = 0 (got %g)", self);
    for (int v = 0; v < V; v++) { /* finite differences over logits */
        float x = z[v];
        z[v] = x + 1e-3f;
        double up = cpu_fkl_full_row(tl, z, V, 1.0f, d2);
        z[v] = x - 1e-3f;
        double dn = cpu_fkl_full_row(tl, z, V, 1.0f, d2);
        z[v] = x;
        EXPECT_CLOSE(d[v], (up - dn) / 2e-3, 2e-5, 2e-3, "full KL d/dlogit");
    }

    /* top-k with k = V equals the full KL. */
    int32_t ids[V];
    float tk[V];
    cpu_topk_logprobs_row(zt, V, V, ids, tk);
    double kl_all = cpu_fkl_topk_row(ids, tk, V, z, V, 1.0f, d2);
    EXPECT_CLOSE(kl_all, kl, 1e-6, 1e-6, "top-k with k = V equals full KL");
    float maxdiff = 0;
    for (int v = 0; v < V; v++) maxdiff = fmaxf(maxdiff, fabsf(d2[v] - d[v]));
    EXPECT(maxdiff < 1e-6, "top-k (k = V) gradient equals full (max diff %g)", maxdiff);

    /* top-k with a tail bucket: closed form with the bucket computed here in double. */
    const int k = 5;
    cpu_topk_logprobs_row(zt, V, k, ids, tk);
    double kl_k = cpu_fkl_topk_row(ids, tk, k, z, V, 1.0f, d);
    double mx = -1e300, s = 0;
    for (int v = 0; v < V; v++) mx = z[v] > mx ? z[v] : mx;
    for (int v = 0; v < V; v++) s += exp(z[v] - mx);
    double want = 0, pt_in = 0, ps_in = 0;
    for (int i = 0; i < k; i++) {
        double ps = exp(z[ids[i]] - mx) / s;
        want += exp(tk[i]) * (tk[i] - log(ps));
        pt_in += exp(tk[i]);
        ps_in += ps;
    }
    want += (1 - pt_in) * log((1 - pt_in) / (1 - ps_in));
    EXPECT_CLOSE(kl_k, want, 1e-6, 1e-5, "top-k + tail bucket KL value");
    for (int v = 0; v < V; v++) {
        float x = z[v];
        z[v] = x + 1e-3f;
        double up = cpu_fkl_topk_row(ids, tk, k, z, V, 1.0f, d2);
        z[v] = x - 1e-3f;
        double dn = cpu_fkl_topk_row(ids, tk, k, z, V, 1.0f, d2);
        z[v] = x;
        EXPECT_CLOSE(d[v], (up - dn) / 2e-3, 2e-5, 2e-3, "top-k KL d/dlogit");
    }
}

/* opd.mode full / topk: Σ_c Pθ(c)(log Pθ(c) − λ log P_T(c)) over the teacher's categories, in double here. */
static double rkl_closed_form(const int32_t *ids, const float *tl, int k, bool full, const float *z, int V,
                              double lambda, double *kl) {
    double mx = -1e300, s = 0;
    for (int v = 0; v < V; v++) mx = z[v] > mx ? z[v] : mx;
    for (int v = 0; v < V; v++) s += exp(z[v] - mx);
    double loss = 0, pt_in = 0, ps_in = 0;
    *kl = 0;
    for (int i = 0; i < (full ? V : k); i++) {
        int v = full ? i : ids[i];
        double lq = full ? tl[v] : tl[i], lp = z[v] - mx - log(s), p = exp(lp);
        loss += p * (lp - lambda * lq), *kl += p * (lp - lq);
        pt_in += exp(lq), ps_in += p;
    }
    if (!full && k < V) {
        double mt = fmax(1 - pt_in, 1e-6), ms = 1 - ps_in;
        loss += ms * (log(ms) - lambda * log(mt)), *kl += ms * (log(ms) - log(mt));
    }
    return loss;
}

static void test_rkl(void) {
    enum { V = 37 };
    float zt[V], tl[V], z[V], d[V], d2[V], tk[V];
    int32_t ids[V];
    fill_random(zt, V, -4, 4, 19);
    fill_random(z, V, -4, 4, 20);
    cpu_log_softmax_row(zt, V, tl);
    for (int mode = 0; mode < 2; mode++) { /* 0: full, 1: top-5 + tail */
        const int k = 5;
        if (mode) cpu_topk_logprobs_row(zt, V, k, ids, tk);
        const float *tq = mode ? tk : tl;
        for (int li = 0; li < 2; li++) {
            float lambda = li ? 1.25f : 1.0f;
#define RKL(zz, scale, dl, tgt, out)                                                                                   \
    (mode ? cpu_rkl_topk_row(ids, tk, k, zz, V, lambda, scale, dl, tgt, out)                                          \
          : cpu_rkl_full_row(tl, zz, V, lambda, scale, dl, tgt, out))
            double kl_want, kl = RKL(z, 1.0f, 0.0f, -1, d);
            rkl_closed_form(ids, tq, k, !mode, z, V, lambda, &kl_want);
            EXPECT(fabs(kl - kl_want) <= 1e-6 + 1e-5 * fabs(kl_want), "reverse KL value (mode %d, λ %g): %.9g, want %.9g",
                   mode, (double)lambda, kl, kl_want);
            EXPECT(kl > 0, "reverse KL of different distributions is positive (%g)", kl);
            for (int v = 0; v < V; v++) { /* finite differences of the λ-weighted loss over the logits */
                float x = z[v];
                double t;
                z[v] = x + 1e-3f;
                double up = rkl_closed_form(ids, tq, k, !mode, z, V, lambda, &t);
                z[v] = x - 1e-3f;
                double dn = rkl_closed_form(ids, tq, k, !mode, z, V, lambda, &t);
                z[v] = x;
                double fd = (up - dn) / 2e-3;
                EXPECT(fabs(d[v] - fd) <= 2e-5 + 2e-3 * fabs(fd), "reverse KL d/dlogit (mode %d, λ %g, id %d): %.9g, want %.9g",
                       mode, (double)lambda, v, (double)d[v], fd);
            }
            /* the sampled-token term adds dl·(onehot(target) − pθ); scale multiplies the rest */
            RKL(z, 0.5f, 0.3f, 7, d2);
            double mx = -1e300, s = 0;
            for (int v = 0; v < V; v++) mx = z[v] > mx ? z[v] : mx;
            for (int v = 0; v < V; v++) s += exp(z[v] - mx);
            float worst = 0;
            for (int v = 0; v < V; v++) {
                double want = 0.5 * d[v] + 0.3 * ((v == 7) - exp(z[v] - mx) / s);
                worst = fmaxf(worst, fabsf(d2[v] - (float)want));
            }
            EXPECT(worst < 1e-6, "scale and the sampled term (mode %d, max diff %g)", mode, worst);
            /* in place (logits and gradient one array, as op_vocab_rows calls it) */
            float zi[V];
            memcpy(zi, z, sizeof z);
            RKL(zi, 1.0f, 0.0f, -1, zi);
            EXPECT(memcmp(zi, d, sizeof d) == 0, "in place gives the same gradient (mode %d)", mode);
#undef RKL
        }
    }
    /* the teacher itself: zero KL and, at λ = 1, zero gradient */
    double self = cpu_rkl_full_row(tl, zt, V, 1.0f, 1.0f, 0.0f, -1, d);
    float gmax = 0;
    for (int v = 0; v < V; v++) gmax = fmaxf(gmax, fabsf(d[v]));
    EXPECT(fabs(self) < 1e-6 && gmax < 1e-6, "KL(p‖p) = 0 (%g), gradient 0 (max %g)", self, gmax);
    /* top-k with k = V (no tail) equals the full mode */
    cpu_topk_logprobs_row(zt, V, V, ids, tk);
    double full = cpu_rkl_full_row(tl, z, V, 1.25f, 1.0f, 0.0f, -1, d);
    double all = cpu_rkl_topk_row(ids, tk, V, z, V, 1.25f, 1.0f, 0.0f, -1, d2);
    float maxdiff = 0;
    for (int v = 0; v < V; v++) maxdiff = fmaxf(maxdiff, fabsf(d2[v] - d[v]));
    EXPECT(fabs(all - full) < 1e-6 && maxdiff < 1e-6, "top-k (k = V) equals full (KL %g vs %g, grad diff %g)", all,
           full, maxdiff);
}

static void test_topk_selection(void) {
    enum { V = 200 };
    float z[V];
    fill_random(z, V, -5, 5, 11);
    z[17] = z[42] = 9.0f; /* a tie at the top: lower id first */
    int32_t ids[10];
    float lp[10];
    cpu_topk_logprobs_row(z, V, 10, ids, lp);
    EXPECT(ids[0] == 17 && ids[1] == 42, "ties broken by lower id (%d, %d)", ids[0], ids[1]);
    int ok = 1;
    for (int i = 1; i < 10; i++) ok &= lp[i] <= lp[i - 1];
    EXPECT(ok, "descending order");
    int greater = 0; /* no excluded logit may beat the 10th */
    for (int v = 0; v < V; v++) {
        int in = 0;
        for (int i = 0; i < 10; i++) in |= ids[i] == v;
        if (!in && z[v] > z[ids[9]]) greater++;
    }
    EXPECT(greater == 0, "top-10 holds the 10 largest logits");
    float full[V];
    cpu_log_softmax_row(z, V, full);
    EXPECT_CLOSE(lp[3], full[ids[3]], 1e-6, 0, "top-k log-probs are log-softmax values");
}

int main(void) {
    RUN_TEST(test_agg_weights);
    RUN_TEST(test_sft);
    RUN_TEST(test_grpo_advantages);
    RUN_TEST(test_grpo_std_modes);
    RUN_TEST(test_grpo_gradients);
    RUN_TEST(test_opd);
    RUN_TEST(test_fkl);
    RUN_TEST(test_rkl);
    RUN_TEST(test_topk_selection);
    return TEST_SUMMARY();
}
