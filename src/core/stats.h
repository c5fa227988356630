/* stats.h: the statistics of `s2d study` (cli/cmd_study.c): means and spreads over seeds, the paired
 * difference of two arms run on the same seeds, and the verdict rule for a claim.
 *
 *   mean  = sum x_i / n
 *   sd    = sqrt(sum (x_i - mean)^2 / (n - 1))          (sample standard deviation; NaN for n < 2)
 *   paired difference of a and b on the same seeds: d_i = a_i - b_i,
 *         diff = mean(d), sd = sd(d), se = sd(d) / sqrt(n) (NaN for n < 2)
 *   verdict(diff, se): holds when diff > 2 se, reversed when diff < -2 se, otherwise within noise;
 *         undetermined when se is NaN (fewer than 2 seeds). */
#pragma once

typedef struct {
    int n;
    double mean, sd, se; /* of the per-seed differences */
} stats_paired;

typedef enum { VERDICT_HOLDS = 0, VERDICT_REVERSED = 1, VERDICT_NOISE = 2, VERDICT_UNDETERMINED = 3 } stats_verdict;

#define STATS_VERDICT_SE 2.0 /* the rule's threshold in standard errors */

double stats_mean(const double *x, int n);
double stats_sd(const double *x, int n);
stats_paired stats_paired_diff(const double *a, const double *b, int n);
stats_verdict stats_verdict_of(double diff, double se);
/* "holds" | "reversed" | "within noise" | "undetermined" */
const char *stats_verdict_name(stats_verdict v);
