/* test_optim: AdamW, gradient clipping and LR schedules against closed forms computed here in double. */
#include <math.h>
#include <stdlib.h>

#include "algo/optim.h"
#include "test.h"

/* The AdamW update written out in double, straight from Loshchilov & Hutter / the torch docs. */
static void adamw_reference(double *p, double *m, double *v, const double *g, int n, int t, double lr, double b1,
                            double b2, double eps, const double *wd) {
    for (int i = 0; i < n; i++) {
        p[i] -= lr * wd[i] * p[i];
        m[i] = b1 * m[i] + (1 - b1) * g[i];
        v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i];
        double mhat = m[i] / (1 - pow(b1, t)), vhat = v[i] / (1 - pow(b2, t));
        p[i] -= lr * mhat / (sqrt(vhat) + eps);
    }
}

static void test_two_steps_match_closed_form(void) {
    enum { N = 5 };
    adamw_hparams hp = {.beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f, .weight_decay = 0.1f};
    adamw opt;
    adamw_init(&opt, N, &hp);
    /* Two segments: [0, 2) decayed, [2, 5) not. */
    adamw_segment segs[2] = {{0, 2, true}, {2, 3, false}};
    adamw_set_segments(&opt, segs, 2);
    float p[N] = {0.5f, -1.25f, 2.0f, 0.0f, -0.3f};
    const float g1[N] = {0.1f, -0.2f, 3.0f, 1e-4f, 0.0f};
    const float g2[N] = {-0.05f, 0.4f, 2.5f, -1e-4f, 0.7f};
    double pd[N], md[N] = {0}, vd[N] = {0}, wd[N] = {0.1, 0.1, 0, 0, 0}, gd[N];
    for (int i = 0; i < N; i++) pd[i] = p[i];
    const float lrs[2] = {1e-2f, 5e-3f};
    for (int step = 0; step < 2; step++) {
        const float *g = step == 0 ? g1 : g2;
        for (int i = 0; i < N; i++) gd[i] = g[i];
        adamw_step(&opt, p, g, lrs[step]);
        adamw_reference(pd, md, vd, gd, N, step + 1, lrs[step], 0.9, 0.95, 1e-8, wd);
    }
    EXPECT(opt.step == 2, "step count %ld", opt.step);
    for (int i = 0; i < N; i++) {
        EXPECT_CLOSE(p[i], pd[i], 1e-6, 1e-6, "param after 2 steps");
        EXPECT_CLOSE(opt.m[i], md[i], 1e-7, 1e-5, "first moment");
        EXPECT_CLOSE(opt.v[i], vd[i], 1e-10, 1e-5, "second moment");
    }
    /* First step of Adam moves each parameter with a gradient by about lr (sign of g): a sanity anchor. */
    adamw_reset(&opt);
    float q[1] = {1.0f}, gq[1] = {-7.0f};
    adamw_segment one = {0, 1, false};
    adamw opt1;
    adamw_init(&opt1, 1, &hp);
    adamw_set_segments(&opt1, &one, 1);
    adamw_step(&opt1, q, gq, 0.01f);
    EXPECT_CLOSE(q[0], 1.01, 1e-6, 0, "first step is lr * sign(g)");
    adamw_free(&opt1);
    adamw_free(&opt);
}

static void test_clip_grad_norm(void) {
    enum { N = 40000 }; /* spans several norm blocks */
    adamw_hparams hp = {.beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f, .weight_decay = 0};
    adamw opt;
    adamw_init(&opt, N, &hp);
    float *g = malloc(N * sizeof(float));
    double sq = 0;
    for (int i = 0; i < N; i++) {
        g[i] = (float)sin(0.37 * i) * 0.01f;
        sq += (double)g[i] * g[i];
    }
    double want = sqrt(sq);
    double norm = adamw_clip_grad_norm(&opt, g, 0.5f);
    EXPECT_CLOSE(norm, want, 0, 1e-12, "pre-clip norm");
    double coef = 0.5 / (want + 1e-6), sq2 = 0, worst = 0;
    for (int i = 0; i < N; i++) {
        double expect = (float)sin(0.37 * i) * 0.01f * coef;
        worst = fmax(worst, fabs(g[i] - expect) / (1e-9 + fabs(expect)));
        sq2 += (double)g[i] * g[i];
    }
    EXPECT(worst < 1e-5, "clipped gradients scaled by max_norm / (norm + 1e-6): worst rel err %g", worst);
    EXPECT(want > 0.5, "test gradient should need clipping (norm %g)", want);
    EXPECT_CLOSE(sqrt(sq2), 0.5 * want / (want + 1e-6), 0, 1e-5, "norm after clipping");
    /* Below the threshold nothing changes. */
    float before = g[123];
    double n2 = adamw_clip_grad_norm(&opt, g, 100.0f);
    EXPECT(g[123] == before, "no clip below max_norm");
    EXPECT_CLOSE(n2, sqrt(sq2), 0, 1e-12, "norm below threshold");
    /* Non-finite: untouched. */
    g[7] = NAN;
    float keep = g[8];
    double nn = adamw_clip_grad_norm(&opt, g, 0.1f);
    EXPECT(!isfinite(nn) && g[8] == keep, "non-finite norm leaves grads alone");
    free(g);
    adamw_free(&opt);
}

static void test_segments_cover_buffer(void) {
    adamw_hparams hp = {.beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f, .weight_decay = 0.5f};
    adamw opt;
    adamw_init(&opt, 4, &hp);
    EXPECT(opt.n_segments == 1 && opt.segments[0].decay && opt.segments[0].numel == 4, "default segment");
    /* Zero gradient: only decay moves a decayed parameter (Adam's update is 0/(0+eps) = 0). */
    adamw_segment segs[2] = {{0, 1, false}, {1, 3, true}};
    adamw_set_segments(&opt, segs, 2);
    float p[4] = {1, 1, 1, 1}, g[4] = {0, 0, 0, 0};
    adamw_step(&opt, p, g, 0.1f);
    EXPECT(p[0] == 1.0f, "non-decayed param unchanged with zero grad: %g", p[0]);
    EXPECT_CLOSE(p[1], 1.0 - 0.1 * 0.5, 1e-7, 0, "decayed param");
    adamw_free(&opt);
}

static void test_schedules(void) {
    lr_schedule c = {.kind = LR_CONSTANT, .lr = 3e-4};
    EXPECT_CLOSE(lr_at(&c, 0), 3e-4, 0, 1e-15, "constant at 0");
    EXPECT_CLOSE(lr_at(&c, 1000), 3e-4, 0, 1e-15, "constant at 1000");
    lr_schedule w = {.kind = LR_WARMUP, .lr = 1e-3, .warmup = 10};
    EXPECT_CLOSE(lr_at(&w, 0), 0.0, 1e-18, 0, "warmup at 0");
    EXPECT_CLOSE(lr_at(&w, 5), 5e-4, 0, 1e-12, "warmup at 5");
    EXPECT_CLOSE(lr_at(&w, 10), 1e-3, 0, 1e-12, "warmup done");
    EXPECT_CLOSE(lr_at(&w, 500), 1e-3, 0, 1e-12, "warmup then constant");
    lr_schedule k = {.kind = LR_COSINE, .lr = 1e-3, .min_lr = 1e-4, .warmup = 10, .total_steps = 110};
    EXPECT_CLOSE(lr_at(&k, 4), 4e-4, 0, 1e-12, "cosine warmup");
    EXPECT_CLOSE(lr_at(&k, 10), 1e-3, 0, 1e-12, "cosine peak");
    EXPECT_CLOSE(lr_at(&k, 60), 1e-4 + 0.9e-3 * 0.5, 0, 1e-12, "cosine halfway = mean of peak and floor");
    EXPECT_CLOSE(lr_at(&k, 35), 1e-4 + 0.9e-3 * 0.5 * (1 + cos(M_PI / 4)), 0, 1e-12, "cosine quarter");
    EXPECT_CLOSE(lr_at(&k, 110), 1e-4, 0, 1e-12, "cosine end");
    EXPECT_CLOSE(lr_at(&k, 1000), 1e-4, 0, 1e-12, "cosine after end stays at floor");
    lr_schedule_kind kind;
    s2d_err err;
    EXPECT(lr_schedule_kind_parse("cosine", &kind, &err) && kind == LR_COSINE, "parse cosine");
    EXPECT(!lr_schedule_kind_parse("cosin", &kind, &err) && strstr(err.msg, "cosin"), "bad name rejected");
}

int main(void) {
    RUN_TEST(test_two_steps_match_closed_form);
    RUN_TEST(test_clip_grad_norm);
    RUN_TEST(test_segments_cover_buffer);
    RUN_TEST(test_schedules);
    return TEST_SUMMARY();
}
