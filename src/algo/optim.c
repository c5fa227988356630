#include "algo/optim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"

/* Floats per block of the gradient norm: each block is summed serially in double, blocks are combined in
 * order, so the norm does not depend on the number of OpenMP threads. */
#define NORM_BLOCK 16384

void adamw_init(adamw *opt, size_t n, const adamw_hparams *hp) {
    CHECK(n > 0, "adamw_init: empty parameter buffer");
    CHECK(hp->beta1 >= 0 && hp->beta1 < 1 && hp->beta2 >= 0 && hp->beta2 < 1 && hp->eps > 0,
          "adamw_init: bad hyper-parameters beta1=%g beta2=%g eps=%g", hp->beta1, hp->beta2, hp->eps);
    memset(opt, 0, sizeof *opt);
    opt->hp = *hp;
    opt->n = n;
    void *p = NULL;
    CHECK(posix_memalign(&p, 64, 2 * n * sizeof(float)) == 0, "adamw_init: out of memory (%zu floats)", 2 * n);
    opt->state = p;
    opt->m = opt->state;
    opt->v = opt->state + n;
    opt->n_blocks = (n + NORM_BLOCK - 1) / NORM_BLOCK;
    opt->norm_partials = xcalloc(opt->n_blocks, sizeof(double));
    adamw_segment all = {.offset = 0, .numel = n, .decay = true};
    adamw_set_segments(opt, &all, 1);
    adamw_reset(opt);
}

void adamw_free(adamw *opt) {
    free(opt->state);
    free(opt->segments);
    free(opt->norm_partials);
    memset(opt, 0, sizeof *opt);
}

void adamw_reset(adamw *opt) {
    memset(opt->state, 0, 2 * opt->n * sizeof(float));
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
        if (t->kind == TENSOR_NORM) decay = decay_norms;
        if (t->kind == TENSOR_EMBEDDING) decay = decay_embeddings;
        segs[i] = (adamw_segment){.offset = t->offset, .numel = t->numel, .decay = decay};
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

double adamw_grad_norm(adamw *opt, const float *grads) {
    const size_t n = opt->n;
    const long nb = (long)opt->n_blocks;
    double *partial = opt->norm_partials;
#pragma omp parallel for schedule(static)
    for (long b = 0; b < nb; b++) {
        size_t lo = (size_t)b * NORM_BLOCK, hi = S2D_MIN(n, lo + NORM_BLOCK);
        double s = 0;
        for (size_t i = lo; i < hi; i++) s += (double)grads[i] * grads[i];
        partial[b] = s;
    }
    double total = 0;
    for (long b = 0; b < nb; b++) total += partial[b];
    return sqrt(total);
}

double adamw_clip_grad_norm(adamw *opt, float *grads, float max_norm) {
    double norm = adamw_grad_norm(opt, grads);
    if (max_norm <= 0 || !isfinite(norm)) return norm;
    /* As torch: coefficient computed in fp32 from the fp32 norm, clamped at 1. */
    float coef = max_norm / ((float)norm + 1e-6f);
    if (coef < 1.0f) {
        const long n = (long)opt->n;
#pragma omp parallel for schedule(static)
        for (long i = 0; i < n; i++) grads[i] *= coef;
    }
    return norm;
}

void adamw_step(adamw *opt, float *params, const float *grads, float lr) {
    opt->step++;
    const double t = (double)opt->step;
    const float b1 = opt->hp.beta1, b2 = opt->hp.beta2, eps = opt->hp.eps;
    /* Scalars in double as torch computes them in Python, then used as fp32 in the element loop. */
    const double bias1 = 1.0 - pow((double)b1, t);
    const double bias2 = 1.0 - pow((double)b2, t);
    const float step_size = (float)((double)lr / bias1);
    const float bias2_sqrt = (float)sqrt(bias2);
    float *m = opt->m, *v = opt->v;
    for (int s = 0; s < opt->n_segments; s++) {
        const adamw_segment *seg = &opt->segments[s];
        const float keep = seg->decay ? (float)(1.0 - (double)lr * opt->hp.weight_decay) : 1.0f;
        const long lo = (long)seg->offset, hi = (long)(seg->offset + seg->numel);
#pragma omp parallel for schedule(static)
        for (long i = lo; i < hi; i++) {
            float g = grads[i];
            float p = params[i] * keep;
            float mi = m[i] + (1.0f - b1) * (g - m[i]);
            float vi = b2 * v[i] + (1.0f - b2) * (g * g);
            float denom = sqrtf(vi) / bias2_sqrt + eps;
            params[i] = p - step_size * (mi / denom);
            m[i] = mi;
            v[i] = vi;
        }
    }
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
