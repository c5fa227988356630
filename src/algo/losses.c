#include "algo/losses.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"

static inline float mask_at(const token_layout *lay, int t) { return lay->mask ? lay->mask[t] : 1.0f; }

void loss_agg_weights(const token_layout *lay, loss_agg agg, int norm_len, float *w) {
    const int T = lay->seq_start[lay->n_seqs];
    if (agg == AGG_TOKEN_MEAN) {
        double total = 0;
        for (int t = 0; t < T; t++) total += mask_at(lay, t);
        for (int t = 0; t < T; t++) w[t] = total > 0 ? (float)(mask_at(lay, t) / total) : 0.0f;
        return;
    }
    CHECK(agg != AGG_SEQ_MEAN_TOKEN_SUM_NORM || norm_len > 0, "seq-mean-token-sum-norm needs norm_len > 0");
    int live_seqs = 0; /* sequences with at least one counted token */
    for (int s = 0; s < lay->n_seqs; s++) {
        double n = 0;
        for (int t = lay->seq_start[s]; t < lay->seq_start[s + 1]; t++) n += mask_at(lay, t);
        live_seqs += n > 0;
    }
    for (int s = 0; s < lay->n_seqs; s++) {
        double n = 0;
        for (int t = lay->seq_start[s]; t < lay->seq_start[s + 1]; t++) n += mask_at(lay, t);
        double denom = agg == AGG_SEQ_MEAN_TOKEN_MEAN ? n * live_seqs : (double)norm_len * live_seqs;
        for (int t = lay->seq_start[s]; t < lay->seq_start[s + 1]; t++)
            w[t] = n > 0 ? (float)(mask_at(lay, t) / denom) : 0.0f;
    }
}

/* Aggregation weights live in dlogp while the loss is built, so no scratch buffer is needed. */
double sft_loss(const token_layout *lay, loss_agg agg, int norm_len, const float *logp, float *dlogp) {
    const int T = lay->seq_start[lay->n_seqs];
    loss_agg_weights(lay, agg, norm_len, dlogp);
    double loss = 0;
    for (int t = 0; t < T; t++) {
        loss -= (double)dlogp[t] * logp[t];
        dlogp[t] = -dlogp[t];
    }
    return loss;
}

void grpo_advantages(const float *rewards, int n_groups, int group_size, bool std_normalize, bool unbiased_std,
                     float eps, float *adv, bool *zero_var) {
    CHECK(group_size >= 1, "grpo_advantages: group size %d", group_size);
    for (int g = 0; g < n_groups; g++) {
        const float *r = rewards + (size_t)g * group_size;
        double mean = 0, var = 0;
        for (int i = 0; i < group_size; i++) mean += r[i];
        mean /= group_size;
        for (int i = 0; i < group_size; i++) var += (r[i] - mean) * (r[i] - mean);
        int dof = unbiased_std ? group_size - 1 : group_size;
        double std = dof > 0 ? sqrt(var / dof) : 0.0;
        bool all_equal = true;
        for (int i = 1; i < group_size; i++) all_equal &= r[i] == r[0];
        if (zero_var) zero_var[g] = all_equal;
        for (int i = 0; i < group_size; i++) {
            double a = r[i] - mean;
            if (std_normalize) a /= std + eps;
            adv[(size_t)g * group_size + i] = (float)a;
        }
    }
}

void grpo_group_advantages(const float *rewards, int n_groups, int group_size, grpo_std mode, float eps, float *adv,
                           bool *zero_var) {
    grpo_advantages(rewards, n_groups, group_size, mode != GRPO_STD_NONE, mode == GRPO_STD_UNBIASED, eps, adv, zero_var);
}

/* PPO clipped surrogate for one token with advantage a and log-ratio lr = ℓθ − ℓold.
 * Returns the loss; *grad gets d loss / d ℓθ; *clipped whether a clipped branch is active. */
static double ppo_token(double a, double lr, double clip_low, double clip_high, double dual_clip, double *grad,
                        bool *clipped) {
    double rho = exp(lr);
    double unclipped = -a * rho;
    double rho_c = rho < 1 - clip_low ? 1 - clip_low : (rho > 1 + clip_high ? 1 + clip_high : rho);
    double clipped_loss = -a * rho_c;
    double loss = unclipped, g = -a * rho;
    *clipped = false;
    if (clipped_loss > unclipped) { /* the pessimistic (larger) loss is the clipped one: constant in θ */
        loss = clipped_loss;
        g = 0;
        *clipped = true;
    }
    if (dual_clip > 0 && a < 0 && loss > -a * dual_clip) {
        loss = -a * dual_clip;
        g = 0;
        *clipped = true;
    }
    *grad = g;
    return loss;
}

double grpo_loss(const grpo_opts *o, const token_layout *lay, const float *logp, const float *logp_old,
                 const float *logp_behaviour, const float *logp_ref, const float *adv, float *dlogp,
                 grpo_stats *stats) {
    CHECK(o->tis_cap == 0 || logp_behaviour, "grpo_loss: tis_cap set but no behaviour log-probs");
    CHECK(o->kl_beta == 0 || logp_ref, "grpo_loss: kl_beta set but no reference log-probs");
    CHECK(o->dual_clip == 0 || o->dual_clip > 1, "grpo_loss: dual clip c must be > 1 (got %g)", o->dual_clip);
    const int T = lay->seq_start[lay->n_seqs];
    loss_agg_weights(lay, o->agg, o->norm_len, dlogp);
    double loss = 0, pg = 0, kl_sum = 0, clipped_n = 0, ratio_sum = 0;
    int counted = 0;
    for (int t = 0; t < T; t++) {
        double w = dlogp[t];
        if (mask_at(lay, t) == 0) {
            dlogp[t] = 0;
            continue;
        }
        double lr = (double)logp[t] - logp_old[t];
        double g;
        bool clipped;
        double l = ppo_token(adv[t], lr, o->clip_low, o->clip_high, o->dual_clip, &g, &clipped);
        if (o->tis_cap > 0) {
            double is = exp((double)logp_old[t] - logp_behaviour[t]);
            if (is > o->tis_cap) is = o->tis_cap;
            l *= is;
            g *= is;
        }
        double kl = 0, gk = 0;
        if (o->kl_beta != 0) {
            double d = (double)logp[t] - logp_ref[t];
            switch (o->kl_est) {
            case KL_K1: kl = d; gk = 1; break;
            case KL_K2: kl = 0.5 * d * d; gk = d; break;
            case KL_K3: kl = exp(-d) + d - 1; gk = 1 - exp(-d); break;
            }
        }
        pg += w * l;
        kl_sum += w * kl;
        loss += w * (l + o->kl_beta * kl);
        dlogp[t] = (float)(w * (g + o->kl_beta * gk));
        counted++;
        clipped_n += clipped;
        ratio_sum += exp(lr);
    }
    if (stats) {
        stats->pg_loss = pg;
        stats->kl = kl_sum;
        stats->tokens = counted;
        stats->clip_fraction = counted ? clipped_n / counted : 0;
        stats->ratio_mean = counted ? ratio_sum / counted : 0;
    }
    return loss;
}

double opd_loss(const opd_opts *o, const token_layout *lay, const float *logp, const float *logp_old,
                const float *logp_teacher, const float *logp_ref, float *dlogp, float *weights_out) {
    CHECK(logp_ref || o->lambda == 1.0f, "opd_loss: λ = %g ≠ 1 needs reference log-probs", o->lambda);
    CHECK(o->gamma >= 0 && o->gamma <= 1, "opd_loss: γ = %g outside [0, 1]", o->gamma);
    loss_agg_weights(lay, o->agg, o->norm_len, dlogp);
    double loss = 0;
    for (int s = 0; s < lay->n_seqs; s++) {
        double future = 0; /* Σ_{u>t} γ^(u−t) w_u, accumulated backwards */
        for (int t = lay->seq_start[s + 1] - 1; t >= lay->seq_start[s]; t--) {
            double agg_w = dlogp[t];
            double w = 0;
            if (mask_at(lay, t) != 0 && o->teacher_analytic) {
                /* w = (λℓT − ℓold) + (1 − λ)ℓref: the first part is exact in the vocabulary op (VOCAB_RKL_*) */
                w = o->lambda == 1.0f ? 0.0 : (1.0 - o->lambda) * (double)logp_ref[t];
            } else if (mask_at(lay, t) != 0) {
                /* λ = 1 cancels the reference exactly; computing it that way keeps λ = 1 reference-free. */
                w = o->lambda == 1.0f ? (double)logp_teacher[t] - logp_old[t]
                                      : o->lambda * ((double)logp_teacher[t] - logp_ref[t]) -
                                            ((double)logp_old[t] - logp_ref[t]);
            }
            double w_disc = w + o->gamma * future;
            future = w_disc;
            if (weights_out) weights_out[t] = mask_at(lay, t) != 0 ? (float)w_disc : 0.0f;
            if (mask_at(lay, t) == 0) {
                dlogp[t] = 0;
                continue;
            }
            double g;
            bool clipped;
            double l = ppo_token(w_disc, (double)logp[t] - logp_old[t], o->clip_low, o->clip_high, 0, &g, &clipped);
            loss += agg_w * l;
            dlogp[t] = (float)(agg_w * g);
        }
    }
    return loss;
}

