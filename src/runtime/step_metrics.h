/* step_metrics.h: the per-step statistics of metrics.jsonl that describe a rollout batch (as verl prints them),
 * as pure functions over the host arrays the scheduler already holds. NaN where a statistic has no data. */
#pragma once
#include <stdbool.h>
#include <stdint.h>

#include "model/generate.h"

typedef struct {
    double response_length_mean; /* generated tokens per sequence (a stop token counts) */
    double response_length_max;
    double truncation_rate;      /* share of sequences that hit max_new_tokens (finish "length") */
    double entropy;              /* mean −log p of the sampled tokens under the sampling distribution (after
                                    temperature, top-k, top-p): an unbiased estimate of its per-token entropy */
} rollout_stats;

/* Over n sequences whose completions are start [n + 1] offsets into logprobs; finish [n]. */
void rollout_stats_of(int n, const int *start, const gen_finish *finish, const float *logprobs, rollout_stats *out);

typedef struct {
    double reward_std;             /* population std (÷ n) of the sequence rewards over the step */
    double advantage_std;          /* population std of the sequence advantages */
    double zero_variance_fraction; /* share of groups whose rewards are all equal (no GRPO signal) */
} group_stats;

/* rewards, adv [n_groups * group_size]; zero_var [n_groups] (grpo_advantages). */
void group_stats_of(int n_groups, int group_size, const float *rewards, const float *adv, const bool *zero_var,
                    group_stats *out);
