/* The study statistics against closed forms: mean and sample sd, the paired difference's SE, and the verdict
 * rule at and around its 2-SE boundary. */
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
    RUN_TEST(test_verdict);
    return TEST_SUMMARY();
}
