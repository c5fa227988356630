#include "algo/optim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"

void adamw_init_on(adamw *opt, size_t n, const adamw_hparams *hp, ops_queue *q) {
    CHECK(n > 0, "adamw_init: empty parameter buffer");
    CHECK(hp->beta1 >= 0 && hp->beta1 < 1 && hp->beta2 >= 0 && hp->beta2 < 1 && hp->eps > 0,
          "adamw_init: bad hyper-parameters beta1=%g beta2=%g eps=%g", hp->beta1, hp->beta2, hp->eps);
    memset(opt, 0, sizeof *opt);
    opt->hp = *hp;
    opt->q = q;
    opt->n = n;
    opt->state = ops_alloc(q, OPS_F32, 2 * n).p;
    opt->m = opt->state;
    opt->v = opt->state + n;
    ops_reserve(q, 0, 0, 0, n);
    adamw_segment all = {.offset = 0, .numel = n, .decay = true};
    adamw_set_segments(opt, &all, 1);
    adamw_reset(opt);
}

void adamw_init(adamw *opt, size_t n, const adamw_hparams *hp) { adamw_init_on(opt, n, hp, ops_default()); }

void adamw_free(adamw *opt) {
    if (opt->q) ops_free(opt->q, ot_f32(opt->state));
    free(opt->segments);
    memset(opt, 0, sizeof *opt);
}

void adamw_reset(adamw *opt) {
    ops_zero(opt->q, ot_f32(opt->state), 2 * opt->n);
    opt->step = 0;
}

void adamw_set_segments(adamw *opt, const adamw_segment *segments, int n_segments) {
    size_t at = 0;
    for (int i = 0; i < n_segments; i++) {
        CHECK(segments[i].offset == at, "adamw_set_segments: segment %d starts at %zu, expected %zu", i,
              segments[i].offset, at);
        at += segments[i].numel;
    }
    CHECK(at == opt->n, "adamw_set_segments: segments cover %zu floats, the buffer has %zu", at, opt->n);
    free(opt->segments);
    opt->segments = xmalloc((size_t)n_segments * sizeof *segments);
    memcpy(opt->segments, segments, (size_t)n_segments * sizeof *segments);
    opt->n_segments = n_segments;
}

void adamw_decay_segments_from_model(adamw *opt, const model *m, bool decay_norms, bool decay_embeddings) {
    CHECK(opt->n == m->n_params, "adamw: optimizer has %zu floats, model %zu", opt->n, m->n_params);
    adamw_segment *segs = xmalloc((size_t)m->n_tensors * sizeof *segs);
    /* The table's offsets need not be in table order: sort a copy by offset so segments tile the buffer. */
    int n = m->n_tensors;
    for (int i = 0; i < n; i++) {
        const model_tensor *t = &m->tensors[i];
        bool decay = true;
        if (t->kind == TENSOR_NORM || t->kind == TENSOR_BIAS) decay = decay_norms; /* 1-D parameters */
        if (t->kind == TENSOR_EMBEDDING) decay = decay_embeddings;
        segs[i] = (adamw_segment){.offset = t->offset, .numel = t->span, .decay = decay};
    }
    for (int i = 1; i < n; i++) { /* insertion sort: a few hundred tensors at most */
        adamw_segment s = segs[i];
        int j = i - 1;
        while (j >= 0 && segs[j].offset > s.offset) {
            segs[j + 1] = segs[j];
            j--;
        }
        segs[j + 1] = s;
    }
    adamw_set_segments(opt, segs, n);
    free(segs);
}

double adamw_grad_norm(adamw *opt, const float *grads) { return sqrt(op_sumsq(opt->q, ot_f32(grads), opt->n)); }

double adamw_clip_grad_norm(adamw *opt, float *grads, float max_norm) {
    double norm = adamw_grad_norm(opt, grads);
    if (max_norm <= 0 || !isfinite(norm)) return norm;
    /* As torch: coefficient computed in fp32 from the fp32 norm, clamped at 1. */
    float coef = max_norm / ((float)norm + 1e-6f);
    if (coef < 1.0f) op_scale(opt->q, ot_f32(grads), coef, opt->n);
    return norm;
}

void adamw_step(adamw *opt, float *params, const float *grads, float lr) {
    opt->step++;
    ops_adamw_step a = {.step = opt->step, .lr = lr, .beta1 = opt->hp.beta1, .beta2 = opt->hp.beta2,
                        .eps = opt->hp.eps, .weight_decay = opt->hp.weight_decay};
    op_adamw(opt->q, ot_f32(params), ot_f32(grads), ot_f32(opt->m), ot_f32(opt->v), opt->segments, opt->n_segments, &a);
}

double lr_at(const lr_schedule *s, long step) {
    if (step < 0) step = 0;
    if (s->kind == LR_CONSTANT) return s->lr;
    if (step < s->warmup) return s->lr * (double)step / (double)S2D_MAX(1L, s->warmup);
    if (s->kind == LR_WARMUP) return s->lr;
    double progress = (double)(step - s->warmup) / (double)S2D_MAX(1L, s->total_steps - s->warmup);
    if (progress > 1) progress = 1;
    return s->min_lr + (s->lr - s->min_lr) * 0.5 * (1.0 + cos(M_PI * progress));
}

bool lr_schedule_kind_parse(const char *name, lr_schedule_kind *kind, s2d_err *err) {
    if (strcmp(name, "constant") == 0) *kind = LR_CONSTANT;
    else if (strcmp(name, "warmup") == 0) *kind = LR_WARMUP;
    else if (strcmp(name, "cosine") == 0) *kind = LR_COSINE;
    else return err_set(err, "unknown lr schedule '%s' (expected constant, warmup or cosine)", name);
    return true;
}

void adamw_ckpt_view(const adamw *opt, ckpt_optim *out) {
    ckpt_segment *segs = xcalloc((size_t)(opt->n_segments ? opt->n_segments : 1), sizeof *segs);
    for (int i = 0; i < opt->n_segments; i++)
        segs[i] = (ckpt_segment){opt->segments[i].offset, opt->segments[i].numel, opt->segments[i].decay};
    *out = (ckpt_optim){.n = opt->n, .m = opt->m, .v = opt->v, .step = opt->step, .beta1 = opt->hp.beta1,
                        .beta2 = opt->hp.beta2, .eps = opt->hp.eps, .weight_decay = opt->hp.weight_decay,
                        .segments = segs, .n_segments = opt->n_segments};
}

void adamw_ckpt_view_free(ckpt_optim *view) {
    free(view->segments);
    view->segments = NULL, view->n_segments = 0;
}
