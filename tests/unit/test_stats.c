/* The study statistics against closed forms: mean and sample sd, the paired difference's SE, the two-way
 * (seeds x problems) SE, and the verdict rule at and around its 2-SE boundary. */
#include <math.h>

#include "core/stats.h"
#include "test.h"

static void test_mean_sd(void) {
    const double x[4] = {1, 2, 3, 4}; /* mean 2.5, sum of squares 5, sd sqrt(5/3) */
    EXPECT_CLOSE(stats_mean(x, 4), 2.5, 1e-15, 0, "mean");
    EXPECT_CLOSE(stats_sd(x, 4), sqrt(5.0 / 3.0), 1e-15, 0, "sample sd (n - 1)");
    EXPECT(isnan(stats_sd(x, 1)), "sd of one value is undefined");
    EXPECT_CLOSE(stats_sd((const double[]){0.7, 0.7, 0.7}, 3), 0, 1e-15, 0, "sd of equal values");
}

static void test_paired(void) {
    /* d = a - b = {0.1, 0.3, 0.2}: mean 0.2, sd 0.1, se 0.1 / sqrt(3) */
    const double a[3] = {0.5, 0.7, 0.6}, b[3] = {0.4, 0.4, 0.4};
    stats_paired p = stats_paired_diff(a, b, 3);
    EXPECT(p.n == 3, "n");
    EXPECT_CLOSE(p.mean, 0.2, 1e-12, 0, "paired mean");
    EXPECT_CLOSE(p.sd, 0.1, 1e-12, 0, "paired sd");
    EXPECT_CLOSE(p.se, 0.1 / sqrt(3.0), 1e-12, 0, "paired se");
    /* pairing removes the seed effect: a shift shared by both arms leaves the difference and its se alone */
    const double a2[3] = {0.5 + 0.3, 0.7 - 0.2, 0.6 + 0.1}, b2[3] = {0.4 + 0.3, 0.4 - 0.2, 0.4 + 0.1};
    stats_paired q = stats_paired_diff(a2, b2, 3);
    EXPECT_CLOSE(q.mean, p.mean, 1e-12, 0, "shared shift: mean");
    EXPECT_CLOSE(q.se, p.se, 1e-12, 0, "shared shift: se");
    /* antisymmetric */
    stats_paired r = stats_paired_diff(b, a, 3);
    EXPECT_CLOSE(r.mean, -p.mean, 1e-12, 0, "b - a");
    EXPECT_CLOSE(r.se, p.se, 1e-12, 0, "b - a se");
    stats_paired one = stats_paired_diff(a, b, 1);
    EXPECT_CLOSE(one.mean, 0.1, 1e-12, 0, "one seed: mean");
    EXPECT(isnan(one.se), "one seed: se undefined");
}

/* The two-way se against the closed forms, computed here by the textbook sums of squares on a 3 x 4 layout. */
static void test_twoway(void) {
    const double a0[4] = {1, 0, 0.5, 1}, a1[4] = {1, 0.5, 0.5, 0.75}, a2[4] = {0.75, 0, 1, 1};
    const double b0[4] = {0.5, 0, 0.5, 0.75}, b1[4] = {1, 0, 0.25, 0.5}, b2[4] = {0.5, 0.25, 0.5, 1};
    const double *a[3] = {a0, a1, a2}, *b[3] = {b0, b1, b2};
    /* d = a - b: rows {.5 0 0 .25}, {0 .5 .25 .25}, {.25 -.25 .5 0} */
    const double d[3][4] = {{.5, 0, 0, .25}, {0, .5, .25, .25}, {.25, -.25, .5, 0}};
    double rm[3] = {0}, cm[4] = {0}, g = 0;
    for (int s = 0; s < 3; s++)
        for (int i = 0; i < 4; i++) rm[s] += d[s][i] / 4, cm[i] += d[s][i] / 3, g += d[s][i] / 12;
    double ssr = 0, ssc = 0, sse = 0;
    for (int s = 0; s < 3; s++) ssr += (rm[s] - g) * (rm[s] - g);
    for (int i = 0; i < 4; i++) ssc += (cm[i] - g) * (cm[i] - g);
    for (int s = 0; s < 3; s++)
        for (int i = 0; i < 4; i++) sse += pow(d[s][i] - rm[s] - cm[i] + g, 2);
    double se_s = sqrt(ssr / 2 / 3), se_p = sqrt(ssc / 3 / 4), mse = sse / (2 * 3);
    double want = sqrt(fmax(se_s * se_s + se_p * se_p - mse / 12, fmax(se_s * se_s, se_p * se_p)));
    stats_twoway t = stats_paired_twoway(a, b, 3, 4);
    EXPECT_CLOSE(t.mean, g, 1e-12, 0, "two-way mean");
    EXPECT_CLOSE(t.mean, 0.1875, 1e-12, 0, "two-way mean, by hand");
    EXPECT_CLOSE(t.se_seeds, se_s, 1e-12, 0, "se over seeds");
    EXPECT_CLOSE(t.se_problems, se_p, 1e-12, 0, "se over problems");
    EXPECT_CLOSE(t.se, want, 1e-12, 0, "combined se");
    EXPECT(t.se >= t.se_seeds && t.se >= t.se_problems, "never below either part");
    /* the seed part is the paired se of the per-seed accuracies (means over problems) */
    double ma[3], mb[3];
    for (int s = 0; s < 3; s++) ma[s] = stats_mean(a[s], 4), mb[s] = stats_mean(b[s], 4);
    EXPECT_CLOSE(t.se_seeds, stats_paired_diff(ma, mb, 3).se, 1e-12, 0, "se_seeds = paired se of seed means");
    /* one shared problem offset (the test set favouring a) is invisible to the seeds but not to the problems */
    const double c0[4] = {1, 0, 0, 0}, c1[4] = {1, 0, 0, 0}, z[4] = {0, 0, 0, 0};
    const double *c[2] = {c0, c1}, *zz[2] = {z, z};
    stats_twoway u = stats_paired_twoway(c, zz, 2, 4);
    EXPECT_CLOSE(u.se_seeds, 0, 1e-15, 0, "equal seeds: no seed spread");
    EXPECT_CLOSE(u.se_problems, sqrt(0.25 * 0.75 * 4 / 3 / 4), 1e-12, 0, "one problem of four: its spread");
    EXPECT(stats_verdict_of(u.mean, u.se) == VERDICT_NOISE, "one lucky problem is within noise");
    EXPECT(stats_verdict_of(u.mean, u.se_seeds) == VERDICT_HOLDS, "by the seeds alone it would hold");
    /* one seed: no seed spread, no verdict; one problem: the seeds' se */
    EXPECT(isnan(stats_paired_twoway(a, b, 1, 4).se), "one seed: se undefined");
    stats_twoway one = stats_paired_twoway(a, b, 3, 1);
    EXPECT(isnan(one.se_problems), "one problem: no problem spread");
    EXPECT_CLOSE(one.se, one.se_seeds, 1e-15, 0, "one problem: the seeds' se");
}

static void test_verdict(void) {
    EXPECT(stats_verdict_of(0.21, 0.1) == VERDICT_HOLDS, "2.1 SE holds");
    EXPECT(stats_verdict_of(0.19, 0.1) == VERDICT_NOISE, "1.9 SE within noise");
    EXPECT(stats_verdict_of(0.2, 0.1) == VERDICT_NOISE, "exactly 2 SE is not > 2 SE");
    EXPECT(stats_verdict_of(-0.21, 0.1) == VERDICT_REVERSED, "-2.1 SE reversed");
    EXPECT(stats_verdict_of(-0.19, 0.1) == VERDICT_NOISE, "-1.9 SE within noise");
    EXPECT(stats_verdict_of(0.0, 0.0) == VERDICT_NOISE, "no difference, no spread");
    EXPECT(stats_verdict_of(0.01, 0.0) == VERDICT_HOLDS, "a constant positive difference holds");
    EXPECT(stats_verdict_of(0.3, NAN) == VERDICT_UNDETERMINED, "no se: undetermined");
    EXPECT_STREQ(stats_verdict_name(VERDICT_NOISE), "within noise");
    EXPECT_STREQ(stats_verdict_name(VERDICT_REVERSED), "reversed");
}

int main(void) {
    RUN_TEST(test_mean_sd);
    RUN_TEST(test_paired);
    RUN_TEST(test_twoway);
    RUN_TEST(test_verdict);
    return TEST_SUMMARY();
}
