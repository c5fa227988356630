/* stats.c: means, sample standard deviations, paired differences and the verdict rule (stats.h). */
#include "core/stats.h"

#include <math.h>

double stats_mean(const double *x, int n) {
    if (n < 1) return NAN;
    double s = 0;
    for (int i = 0; i < n; i++) s += x[i];
    return s / n;
}

double stats_sd(const double *x, int n) {
    if (n < 2) return NAN;
    double m = stats_mean(x, n), s = 0;
    for (int i = 0; i < n; i++) s += (x[i] - m) * (x[i] - m);
    return sqrt(s / (n - 1));
}

stats_paired stats_paired_diff(const double *a, const double *b, int n) {
    stats_paired p = {.n = n, .mean = NAN, .sd = NAN, .se = NAN};
    if (n < 1) return p;
    /* two passes over the differences, without a buffer: mean, then the squared deviations */
    double s = 0;
    for (int i = 0; i < n; i++) s += a[i] - b[i];
    p.mean = s / n;
    if (n < 2) return p;
    double q = 0;
    for (int i = 0; i < n; i++) q += (a[i] - b[i] - p.mean) * (a[i] - b[i] - p.mean);
    p.sd = sqrt(q / (n - 1));
    p.se = p.sd / sqrt((double)n);
    return p;
}

stats_twoway stats_paired_twoway(const double *const *a, const double *const *b, int n, int m) {
    stats_twoway t = {.n = n, .m = m, .mean = NAN, .se_seeds = NAN, .se_problems = NAN, .se = NAN};
    if (n < 1 || m < 1) return t;
    /* seed means, then problem means and the residual, in three passes (no buffer of m problem means) */
    double seed_mean[n], grand = 0;
    for (int s = 0; s < n; s++) {
        double q = 0;
        for (int i = 0; i < m; i++) q += a[s][i] - b[s][i];
        seed_mean[s] = q / m, grand += q / m;
    }
    grand /= n;
    t.mean = grand;
    double ss_seeds = 0, ss_problems = 0, ss_resid = 0;
    for (int s = 0; s < n; s++) ss_seeds += (seed_mean[s] - grand) * (seed_mean[s] - grand);
    for (int i = 0; i < m; i++) {
        double pm = 0;
        for (int s = 0; s < n; s++) pm += a[s][i] - b[s][i];
        pm /= n;
        ss_problems += (pm - grand) * (pm - grand);
        for (int s = 0; s < n; s++) {
            double r = a[s][i] - b[s][i] - seed_mean[s] - pm + grand;
            ss_resid += r * r;
        }
    }
    if (n >= 2) t.se_seeds = sqrt(ss_seeds / (n - 1) / n);
    if (m >= 2) t.se_problems = sqrt(ss_problems / (m - 1) / m);
    if (n < 2) return t;
    if (m < 2) {
        t.se = t.se_seeds;
        return t;
    }
    double mse = ss_resid / ((double)(n - 1) * (m - 1));
    double v = t.se_seeds * t.se_seeds + t.se_problems * t.se_problems - mse / ((double)n * m);
    double floor2 = fmax(t.se_seeds * t.se_seeds, t.se_problems * t.se_problems);
    t.se = sqrt(fmax(v, floor2));
    return t;
}

stats_verdict stats_verdict_of(double diff, double se) {
    if (!isfinite(diff) || !isfinite(se)) return VERDICT_UNDETERMINED;
    if (diff > STATS_VERDICT_SE * se) return VERDICT_HOLDS;
    if (diff < -STATS_VERDICT_SE * se) return VERDICT_REVERSED;
    return VERDICT_NOISE;
}

const char *stats_verdict_name(stats_verdict v) {
    static const char *const names[4] = {"holds", "reversed", "within noise", "undetermined"};
    return names[v];
}
