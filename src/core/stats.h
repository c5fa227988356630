/* stats.h: the statistics of `s2d study` (cli/cmd_study.c): means and spreads over seeds, the paired
 * difference of two arms run on the same seeds, and the verdict rule for a claim.
 *
 *   mean  = sum x_i / n
 *   sd    = sqrt(sum (x_i - mean)^2 / (n - 1))          (sample standard deviation; NaN for n < 2)
 *   paired difference of a and b on the same seeds: d_i = a_i - b_i,
 *         diff = mean(d), sd = sd(d), se = sd(d) / sqrt(n) (NaN for n < 2)
 *   over seeds and test problems (every seed's runs are scored on the same m problems): d_si = a_si - b_si,
 *         the per-problem accuracies of seed s (i < m). diff = mean(d); se_seeds = sd of the seed means
 *         d_s. / sqrt(n) (the paired se above); se_problems = sd of the problem means d_.i / sqrt(m);
 *         se^2 = se_seeds^2 + se_problems^2 - mse / (n m), mse = sum (d_si - d_s. - d_.i + d..)^2 / ((n-1)(m-1)):
 *         the variance of the grand mean under d_si = mu + seed_s + problem_i + e_si (the e term is in both
 *         sds once; mse estimates it), never below se_seeds or se_problems. The seeds' sd alone treats the
 *         test set as the whole population: a difference that the m problems drawn happen to favour repeats
 *         at every seed.
 *   verdict(diff, se): holds when diff > 2 se, reversed when diff < -2 se, otherwise within noise;
 *         undetermined when se is NaN (fewer than 2 seeds). */
#pragma once

typedef struct {
    int n;
    double mean, sd, se; /* of the per-seed differences */
} stats_paired;

typedef struct {
    int n, m;            /* seeds, problems */
    double mean;         /* of d (= the mean of the per-seed differences) */
    double se_seeds, se_problems, se; /* NaN: se_seeds for n < 2 (then se too), se_problems for m < 2 */
} stats_twoway;

typedef enum { VERDICT_HOLDS = 0, VERDICT_REVERSED = 1, VERDICT_NOISE = 2, VERDICT_UNDETERMINED = 3 } stats_verdict;

#define STATS_VERDICT_SE 2.0 /* the rule's threshold in standard errors */

double stats_mean(const double *x, int n);
double stats_sd(const double *x, int n);
stats_paired stats_paired_diff(const double *a, const double *b, int n);
/* a[s], b[s]: [m] per-problem accuracies of seed s (s < n) */
stats_twoway stats_paired_twoway(const double *const *a, const double *const *b, int n, int m);
stats_verdict stats_verdict_of(double diff, double se);
/* "holds" | "reversed" | "within noise" | "undetermined" */
const char *stats_verdict_name(stats_verdict v);
