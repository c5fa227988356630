/* optim.h: AdamW over flat parameter buffers, global-norm gradient clipping, learning-rate schedules.
 *
 * The model keeps every parameter in ONE contiguous buffer and the gradients in another of the same length
 * (model.h: tensor i lives at [offset, offset + numel)). The optimizer state follows the same layout: m and v
 * are two contiguous [n] buffers (one allocation, m first), plus the step count. A "segment" is a range of the
 * flat buffer with its own weight-decay flag (built per tensor from the model's tensor table), so a step is a
 * few tight loops with no allocation.
 *
 * Numerics follow torch.optim.AdamW (single-tensor path) exactly:
 *     p  <- p * (1 - lr * wd)                              (decoupled decay; wd = 0 for excluded tensors)
 *     m  <- m + (1 - beta1) * (g - m)
 *     v  <- beta2 * v + (1 - beta2) * g * g
 *     p  <- p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)      (t = step, from 1)
 * and clipping follows torch.nn.utils.clip_grad_norm_: total = ||g||_2 over all grads, every gradient is
 * scaled by min(1, max_norm / (total + 1e-6)).
 *
 * Usage:
 *     adamw opt; adamw_init(&opt, m.n_params, &hp);
 *     adamw_decay_segments_from_model(&opt, &m, false, false);   // no decay on norms, embeddings
 *     loop: ...backward...; float norm = adamw_clip_grad_norm(&opt, m.grads, 1.0f);
 *           adamw_step(&opt, m.params, m.grads, lr_at(&sched, opt.step));
 */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "io/h5io.h"
#include "model/model.h"

typedef struct {
    float beta1, beta2; /* torch defaults 0.9, 0.999 */
    float eps;          /* 1e-8 */
    float weight_decay; /* applied to segments with decay = true */
} adamw_hparams;

/* A range of the flat buffers (offset, numel) and whether weight decay applies (ops.h's ops_segment). */
typedef ops_segment adamw_segment;

typedef struct {
    adamw_hparams hp;
    ops_queue *q;           /* the backend queue of the state (and of the params / grads it updates) */
    size_t n;               /* floats in params / grads */
    float *state;           /* [2, n] device memory: m then v, zero-initialised */
    float *m;               /* = state      [n] first moment */
    float *v;               /* = state + n  [n] second moment */
    long step;              /* optimizer steps taken so far (bias correction uses step + 1 in the next step) */
    adamw_segment *segments; /* [n_segments], covering [0, n) in order without gaps */
    int n_segments;
} adamw;

/* Allocates the state for n floats on ops_default() (adamw_init_on: on q); initially one segment covering
 * everything, with decay. */
void adamw_init(adamw *opt, size_t n, const adamw_hparams *hp);
void adamw_init_on(adamw *opt, size_t n, const adamw_hparams *hp, ops_queue *q);
void adamw_free(adamw *opt);
/* Zeroes m, v and the step count. */
void adamw_reset(adamw *opt);

/* Replaces the segments with one per tensor of m's table: decay on linear weights always, on norm weights
 * only if decay_norms, on the embedding (and a tied LM head, which is the same tensor) only if
 * decay_embeddings. An untied lm_head is a linear weight and is decayed. Each segment spans its tensor's
 * padding too (model_tensor.span), so the segments tile the buffer. opt->n must equal m->n_params. */
void adamw_decay_segments_from_model(adamw *opt, const model *m, bool decay_norms, bool decay_embeddings);
/* Sets arbitrary segments (copied); they must cover [0, opt->n) in order without gaps (dies otherwise). */
void adamw_set_segments(adamw *opt, const adamw_segment *segments, int n_segments);
/* The arrays of opt (its state in host memory) for ckpt_save: m and v point into it; the segment table is
 * malloc'd (adamw_ckpt_view_free). */
void adamw_ckpt_view(const adamw *opt, ckpt_optim *out);
void adamw_ckpt_view_free(ckpt_optim *view);

/* ||grads||_2 over all n entries (grads: device memory of opt->q), summed in double in fixed-size blocks (same
 * result for any thread count). */
double adamw_grad_norm(adamw *opt, const float *grads);
/* torch.nn.utils.clip_grad_norm_(max_norm): returns the pre-clip norm and scales grads in place by
 * min(1, max_norm / (norm + 1e-6)). A non-finite norm leaves grads untouched (the caller should skip the
 * step). max_norm <= 0 only measures. */
double adamw_clip_grad_norm(adamw *opt, float *grads, float max_norm);

/* One AdamW step with learning rate lr on all n entries: increments opt->step, then updates params, m, v. */
void adamw_step(adamw *opt, float *params, const float *grads, float lr);

/* ---- learning-rate schedules: pure functions of the step (0-based: the step about to be taken) ----
 * Same conventions as Hugging Face transformers' schedulers (step s uses multiplier f(s)):
 *   constant:  lr
 *   warmup:    lr * s / warmup for s < warmup, then lr                       (get_constant_schedule_with_warmup)
 *   cosine:    warmup as above; then with p = (s - warmup) / max(1, total - warmup) clamped to [0, 1]:
 *              min_lr + (lr - min_lr) * 0.5 * (1 + cos(pi * p))        (get_cosine_with_min_lr_schedule_with_warmup)
 */
typedef enum { LR_CONSTANT = 0, LR_WARMUP = 1, LR_COSINE = 2 } lr_schedule_kind;

typedef struct {
    lr_schedule_kind kind;
    double lr;        /* peak learning rate */
    double min_lr;    /* cosine floor */
    long warmup;      /* warmup steps (0 = none) */
    long total_steps; /* cosine: step at which lr reaches min_lr */
} lr_schedule;

double lr_at(const lr_schedule *s, long step);
/* "constant" | "warmup" | "cosine" → kind; false + err naming the value otherwise. */
bool lr_schedule_kind_parse(const char *name, lr_schedule_kind *kind, s2d_err *err);
