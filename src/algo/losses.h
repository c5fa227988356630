/* losses.h: the training objectives of DESIGN §3 as pure functions over per-token arrays.
 *
 * A batch of completions is laid out CSR-style: sequence s owns tokens [seq_start[s], seq_start[s+1]).
 * ℓ = log π(y_t | x, y_<t) of the sampled token. Each loss returns its value and writes the gradient with
 * respect to the policy's per-token log-probs (dlogp) or, for forward KL, its logits. Detached quantities
 * (advantages, weights, old/behaviour/teacher/reference log-probs) get no gradient. Sums run in double in a
 * fixed order, so results do not depend on threading. */
#pragma once
#include <stdbool.h>
#include <stdint.h>

typedef enum {
    AGG_TOKEN_MEAN,              /* Σ_tokens l / Σ_tokens 1 over the whole batch */
    AGG_SEQ_MEAN_TOKEN_MEAN,     /* mean over sequences of (mean over the sequence's tokens) */
    AGG_SEQ_MEAN_TOKEN_SUM_NORM, /* mean over sequences of (Σ over the sequence's tokens / norm_len) (Dr.GRPO) */
} loss_agg;

typedef enum { KL_K1, KL_K2, KL_K3 } kl_estimator;

typedef struct {
    int n_seqs;
    const int *seq_start; /* [n_seqs + 1] token offsets */
    const float *mask;    /* [T] 1 = token counts, 0 = masked (prompt, truncated or filtered); NULL = all 1 */
} token_layout;

/* Weights w_t (one per token, sums to the aggregated mean) such that loss = Σ_t w_t l_t. Sequences with no
 * unmasked token contribute nothing. norm_len is used by AGG_SEQ_MEAN_TOKEN_SUM_NORM only. */
void loss_agg_weights(const token_layout *lay, loss_agg agg, int norm_len, float *w /* [T] */);

/* ---- sft: −agg(ℓθ) over target tokens (also seq-KD: SFT on teacher samples; fkl "sampled"). */
double sft_loss(const token_layout *lay, loss_agg agg, int norm_len, const float *logp /* [T] */,
                float *dlogp /* [T] */);

/* ---- GRPO */
/* The std that divides a group's centred rewards (grpo.std): unbiased (÷(G−1), torch.std: verl's and TRL's
 * default), population (÷G), none (Dr.GRPO: r_i − mean r). */
typedef enum { GRPO_STD_UNBIASED = 0, GRPO_STD_POPULATION = 1, GRPO_STD_NONE = 2 } grpo_std;
/* grpo_advantages with the std chosen by mode. */
void grpo_group_advantages(const float *rewards /* [n_groups * group_size] */, int n_groups, int group_size,
                           grpo_std mode, float eps, float *adv /* [n_groups * group_size] */, bool *zero_var);
/* Group advantages A_i = (r_i − mean r) / (std r + eps) (std_normalize) or r_i − mean r (Dr.GRPO).
 * std is the population std (÷G) unless unbiased_std. zero_var[g] = every reward in group g is equal. */
void grpo_advantages(const float *rewards /* [n_groups * group_size] */, int n_groups, int group_size,
                     bool std_normalize, bool unbiased_std, float eps, float *adv /* [n_groups * group_size] */,
                     bool *zero_var /* [n_groups], may be NULL */);

typedef struct {
    float clip_low;     /* ε_low: ratio floor 1 − ε_low */
    float clip_high;    /* ε_high: ratio ceiling 1 + ε_high (DAPO clip-higher when > clip_low) */
    float dual_clip;    /* c > 1 bounds the loss of negative-advantage tokens by −c·A; 0 = off */
    float kl_beta;      /* β of the KL penalty to the reference; 0 = off */
    kl_estimator kl_est;
    loss_agg agg;
    int norm_len;       /* AGG_SEQ_MEAN_TOKEN_SUM_NORM: the constant divisor (max completion length) */
    float tis_cap;      /* C of the truncated importance weight min(e^(ℓold−ℓbehaviour), C); 0 = off */
} grpo_opts;

typedef struct {
    double pg_loss;       /* aggregated policy-gradient part */
    double kl;            /* aggregated KL estimate (k1/k2/k3 as chosen), 0 if β = 0 */
    double clip_fraction; /* share of counted tokens whose clipped branch was active */
    double ratio_mean;    /* mean ρ over counted tokens */
    int tokens;           /* counted tokens */
} grpo_stats;

/* loss = agg( tis_t · max(−A ρ_t, −A clip(ρ_t)) [dual-clipped] + β·k(ℓθ, ℓref) ), ρ_t = e^(ℓθ − ℓold).
 * adv is per token (broadcast a sequence's advantage over its tokens). logp_behaviour and logp_ref may be NULL
 * when tis_cap = 0 and kl_beta = 0 respectively. Returns the total loss; dlogp [T] gets its gradient. */
double grpo_loss(const grpo_opts *o, const token_layout *lay, const float *logp, const float *logp_old,
                 const float *logp_behaviour, const float *logp_ref, const float *adv, float *dlogp,
                 grpo_stats *stats);

/* ---- G-OPD (on-policy distillation with reward scale λ and a free reference) */
typedef struct {
    float lambda;    /* 1 = plain OPD (the reference cancels), > 1 = ExOPD (reward extrapolation) */
    float gamma;     /* discount over future tokens: w'_t = Σ_{s≥t} γ^(s−t) w_s; 0 = per-token */
    float clip_low;  /* PPO clipping when ρ ≠ 1 (off-policy reuse) */
    float clip_high;
    loss_agg agg;
    int norm_len;
    bool teacher_analytic; /* opd.mode full / topk: the λℓT − ℓθ part is the vocabulary op's exact per-position
                              gradient (VOCAB_RKL_*), so opd_loss keeps only the reference's (1 − λ)·ℓref */
} opd_opts;

/* w_t = λ(ℓ_T − ℓ_ref) − (ℓold − ℓ_ref) (detached, discounted by γ), loss = agg(max(−w ρ, −w clip(ρ))).
 * weights_out [T] (may be NULL) receives the detached per-token weights. */
double opd_loss(const opd_opts *o, const token_layout *lay, const float *logp, const float *logp_old,
                const float *logp_teacher, const float *logp_ref, float *dlogp, float *weights_out);

/* ---- forward KL(π_T ‖ πθ): vocabulary-wide, so it runs behind the backend (ops.h op_vocab_rows, kinds
 * VOCAB_FKL_FULL / VOCAB_FKL_TOPK; the teacher side VOCAB_TEACHER_FULL / VOCAB_TEACHER_TOPK). The CPU row
 * functions are in ops/ops_cpu.h. */
