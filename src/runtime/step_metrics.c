/* step_metrics.c: rollout and reward-group statistics of a step (step_metrics.h). Sums in double, in order. */
#include "runtime/step_metrics.h"

#include <math.h>

void rollout_stats_of(int n, const int *start, const gen_finish *finish, const float *logprobs, rollout_stats *out) {
    *out = (rollout_stats){NAN, NAN, NAN, NAN};
    if (n <= 0) return;
    double len_sum = 0, lp_sum = 0;
    int len_max = 0, truncated = 0;
    for (int i = 0; i < n; i++) {
        int len = start[i + 1] - start[i];
        len_sum += len;
        if (len > len_max) len_max = len;
        truncated += finish[i] == GEN_FINISH_LENGTH;
        for (int t = start[i]; t < start[i + 1]; t++) lp_sum += logprobs[t];
    }
    out->response_length_mean = len_sum / n;
    out->response_length_max = len_max;
    out->truncation_rate = (double)truncated / n;
    if (start[n] > start[0]) out->entropy = -lp_sum / (start[n] - start[0]);
}

static double pop_std(const float *x, int n) {
    double mean = 0, ss = 0;
    for (int i = 0; i < n; i++) mean += x[i];
    mean /= n;
    for (int i = 0; i < n; i++) ss += (x[i] - mean) * (x[i] - mean);
    return sqrt(ss / n);
}

void group_stats_of(int n_groups, int group_size, const float *rewards, const float *adv, const bool *zero_var,
                    group_stats *out) {
    *out = (group_stats){NAN, NAN, NAN};
    int n = n_groups * group_size;
    if (n <= 0) return;
    out->reward_std = pop_std(rewards, n);
    out->advantage_std = pop_std(adv, n);
    int zv = 0;
    for (int g = 0; g < n_groups; g++) zv += zero_var[g];
    out->zero_variance_fraction = (double)zv / n_groups;
}
