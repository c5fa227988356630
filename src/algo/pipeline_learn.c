/* pipeline_learn.c: the learner (loss → backward → clip → AdamW) and the scorers of the pipeline. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "algo/pipeline.h"

void pl_learner_init(pl_learner *L, model *policy, int max_tokens, const tc_stage *s) {
    memset(L, 0, sizeof *L);
    L->policy = policy;
    L->max_tokens = max_tokens;
    if (!policy->grads) model_alloc_grads(policy);
    L->ws = model_ws_new(policy, max_tokens, true);
    adamw_init(&L->opt, policy->n_params, &s->adam);
    adamw_decay_segments_from_model(&L->opt, policy, false, false);
    L->logp = xmalloc((size_t)max_tokens * sizeof(float));
    L->logp_old = xmalloc((size_t)max_tokens * sizeof(float));
    L->dlogp = xmalloc((size_t)max_tokens * sizeof(float));
}

void pl_learner_free(pl_learner *L) {
    model_ws_free(L->ws);
    adamw_free(&L->opt);
    free(L->logp), free(L->logp_old), free(L->dlogp);
    memset(L, 0, sizeof *L);
}

/* LM-head callback for fkl full/topk: overwrite each chunk's logits with d(loss)/d(logits). */
static void fkl_grad_cb(void *user, int r0, int r1, float *logits, bool want_grad) {
    pl_learner *L = user;
    const pl_batch *b = L->cur;
    int V = L->policy->cfg.vocab, k = L->stage->topk;
    for (int t = r0; t < r1; t++) {
        float *row = logits + (size_t)(t - r0) * V;
        int slot = b->row_slot[t];
        if (slot < 0) {
            if (want_grad) memset(row, 0, (size_t)V * sizeof(float));
            continue;
        }
        double kl;
        if (L->stage->fkl == FKL_FULL)
            kl = fkl_full_row(b->full_logp + (size_t)slot * V, row, V, L->fkl_scale, row);
        else
            kl = fkl_topk_row(b->topk_ids + (size_t)slot * k, b->topk_logp + (size_t)slot * k, k, row, V,
                              L->fkl_scale, row);
        L->fkl_sum += kl;
    }
}

static token_layout layout_of(const pl_batch *b) {
    return (token_layout){.n_seqs = b->n_seqs, .seq_start = b->seq_start, .mask = b->mask};
}

void pl_learn_step(pl_learner *L, const tc_stage *s, const pl_batch *b, long step, pl_learn_stats *st) {
    memset(st, 0, sizeof *st);
    model *m = L->policy;
    int T = b->seq_start[b->n_seqs];
    CHECK(T <= L->max_tokens, "pl_learn_step: %d tokens > workspace %d", T, L->max_tokens);
    model_batch mb = {.n_seqs = b->n_seqs, .seq_start = b->seq_start, .tokens = b->tokens};
    s2d_err err;
    CHECK_OK(model_forward(m, L->ws, &mb, &err), &err);
    model_zero_grads(m);
    for (int t = 0; t < T; t++) st->tokens += b->mask[t] != 0;
    token_layout lay = layout_of(b);
    bool logits_loss = s->algo == ALGO_FKL && s->fkl != FKL_SAMPLED;
    if (logits_loss) {
        L->cur = b, L->stage = s, L->fkl_sum = 0;
        L->fkl_scale = b->n_rows > 0 ? 1.0f / (float)b->n_rows : 0.0f; /* token mean over taught rows */
        model_backward_logits(m, L->ws, fkl_grad_cb, L);
        st->loss = b->n_rows > 0 ? L->fkl_sum / b->n_rows : 0;
        st->kl = st->loss;
    } else {
        model_token_logprobs_from_ws(m, L->ws, L->logp);
        /* One update per batch: the "old" policy is the current one (ρ = 1; clipping inactive). */
        memcpy(L->logp_old, L->logp, (size_t)T * sizeof(float));
        if (s->algo == ALGO_SFT || s->algo == ALGO_FKL) {
            st->loss = sft_loss(&lay, AGG_TOKEN_MEAN, 0, L->logp, L->dlogp);
        } else if (s->algo == ALGO_GRPO) {
            grpo_stats gs;
            st->loss = grpo_loss(&s->grpo, &lay, L->logp, L->logp_old, s->grpo.tis_cap > 0 ? b->logp_behaviour : NULL,
                                 s->grpo.kl_beta > 0 ? b->logp_ref : NULL, b->adv, L->dlogp, &gs);
            st->kl = gs.kl;
            st->clip_fraction = gs.clip_fraction;
        } else { /* opd */
            st->loss = opd_loss(&s->opd, &lay, L->logp, L->logp_old, b->logp_teacher,
                                b->logp_ref ? b->logp_ref : L->logp_old, L->dlogp, NULL);
            double kl = 0; /* reverse KL estimate E_student[ℓθ − ℓT] over counted tokens */
            long n = 0;
            for (int t = 0; t < T; t++)
                if (b->mask[t] != 0) kl += L->logp[t] - b->logp_teacher[t], n++;
            st->kl = n ? kl / n : 0;
        }
        model_backward_logprobs(m, L->ws, L->dlogp);
    }
    st->grad_norm = adamw_clip_grad_norm(&L->opt, m->grads, s->clip);
    st->lr = lr_at(&s->sched, step);
    if (isfinite(st->grad_norm)) adamw_step(&L->opt, m->params, m->grads, (float)st->lr);
}

bool pl_score_logprobs(const model *m, model_ws *ws, const pl_batch *b, float *logp, s2d_err *err) {
    model_batch mb = {.n_seqs = b->n_seqs, .seq_start = b->seq_start, .tokens = b->tokens};
    return model_token_logprobs(m, ws, &mb, logp, err);
}

typedef struct {
    const tc_stage *s;
    pl_batch *b;
    int V;
} fkl_teacher_ctx;

static void fkl_teacher_cb(void *user, int r0, int r1, float *logits, bool want_grad) {
    (void)want_grad;
    fkl_teacher_ctx *c = user;
    int k = c->s->topk;
    for (int t = r0; t < r1; t++) {
        int slot = c->b->row_slot[t];
        if (slot < 0) continue;
        const float *row = logits + (size_t)(t - r0) * c->V;
        if (c->s->fkl == FKL_FULL)
            log_softmax_row(row, c->V, c->b->full_logp + (size_t)slot * c->V);
        else
            topk_logprobs_row(row, c->V, k, c->b->topk_ids + (size_t)slot * k, c->b->topk_logp + (size_t)slot * k);
    }
}

bool pl_score_fkl(const model *teacher, model_ws *ws, const tc_stage *s, pl_batch *b, s2d_err *err) {
    model_batch mb = {.n_seqs = b->n_seqs, .seq_start = b->seq_start, .tokens = b->tokens};
    if (!model_forward(teacher, ws, &mb, err)) return false;
    fkl_teacher_ctx c = {.s = s, .b = b, .V = teacher->cfg.vocab};
    model_logits_chunks(teacher, ws, fkl_teacher_cb, &c);
    return true;
}

typedef struct {
    const tc_stage *s;
    const pl_batch *b;
    int V;
    double sum;
} fkl_value_ctx;

static void fkl_value_cb(void *user, int r0, int r1, float *logits, bool want_grad) {
    (void)want_grad;
    fkl_value_ctx *c = user;
    int k = c->s->topk;
    for (int t = r0; t < r1; t++) {
        int slot = c->b->row_slot[t];
        if (slot < 0) continue;
        float *row = logits + (size_t)(t - r0) * c->V;
        if (c->s->fkl == FKL_FULL)
            c->sum += fkl_full_row(c->b->full_logp + (size_t)slot * c->V, row, c->V, 0.0f, row);
        else
            c->sum += fkl_topk_row(c->b->topk_ids + (size_t)slot * k, c->b->topk_logp + (size_t)slot * k, k, row,
                                   c->V, 0.0f, row);
    }
}

double pl_fkl_value(const model *m, model_ws *ws, const tc_stage *s, const pl_batch *b) {
    model_batch mb = {.n_seqs = b->n_seqs, .seq_start = b->seq_start, .tokens = b->tokens};
    s2d_err err;
    CHECK_OK(model_forward(m, ws, &mb, &err), &err);
    fkl_value_ctx c = {.s = s, .b = b, .V = m->cfg.vocab};
    model_logits_chunks(m, ws, fkl_value_cb, &c);
    return b->n_rows ? c.sum / b->n_rows : 0;
}
