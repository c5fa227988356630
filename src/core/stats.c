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
