/* learner.c: the learner (loss → backward → clip → AdamW) and the scorers of the pipeline. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/pipeline.h"

void pl_learner_init(pl_learner *learner, model *policy, int max_tokens, const tc_stage *s) {
    pl_learner_init_dist(learner, policy, max_tokens, s, NULL, 1);
}

/* Decay segments of the model's tensor table (no decay on norms and embeddings, as the single-process learner
 * had), intersected with [lo, hi) and shifted to start at 0. */
void pl_optim_segments(adamw *opt, const model *m, long lo, long hi) {
    int n = m->n_tensors, k = 0;
    adamw_segment *segs = xmalloc((size_t)n * sizeof *segs);
    for (int i = 0; i < n; i++) {
        const model_tensor *t = &m->tensors[i];
        /* span: the tensor and its alignment padding, so the segments tile the buffer */
        segs[i] = (adamw_segment){.offset = t->offset, .numel = t->span,
                                  .decay = t->kind == TENSOR_LINEAR}; /* not norms, biases, embeddings */
    }
    for (int i = 1; i < n; i++) { /* by offset */
        adamw_segment x = segs[i];
        int j = i - 1;
        while (j >= 0 && segs[j].offset > x.offset) segs[j + 1] = segs[j], j--;
        segs[j + 1] = x;
    }
    adamw_segment *out = xmalloc((size_t)n * sizeof *out);
    for (int i = 0; i < n; i++) {
        long a = S2D_MAX((long)segs[i].offset, lo), b = S2D_MIN((long)(segs[i].offset + segs[i].numel), hi);
        if (b > a) out[k++] = (adamw_segment){.offset = (size_t)(a - lo), .numel = (size_t)(b - a), .decay = segs[i].decay};
    }
    adamw_set_segments(opt, out, k);
    free(segs), free(out);
}

void pl_learner_init_dist(pl_learner *learner, model *policy, int max_tokens, const tc_stage *s, transport *tp,
                          int micro_batches) {
    memset(learner, 0, sizeof *learner);
    learner->policy = policy;
    learner->max_tokens = max_tokens;
    learner->tp = tp;
    learner->micro_batches = micro_batches;
    learner->n_learners = tp && !tp->local ? tp->n_learn : 1;
    learner->index = tp && !tp->local ? tp->index : 0;
    CHECK(tc_tree_aligned(micro_batches, learner->n_learners), "learners %d do not align with %d micro-batches",
          learner->n_learners, micro_batches);
    if (!policy->grads) model_alloc_grads(policy);
    learner->ws = model_ws_new_recompute(policy, max_tokens, true, s->recompute);
    long n = (long)policy->n_params;
    tp_split(n, learner->n_learners, learner->index, &learner->shard_lo, &learner->shard_hi);
    CHECK(learner->shard_hi > learner->shard_lo, "more learners (%d) than parameters (%ld)", learner->n_learners, n);
    adamw_init(&learner->opt, (size_t)(learner->shard_hi - learner->shard_lo), &s->adam);
    pl_optim_segments(&learner->opt, policy, learner->shard_lo, learner->shard_hi);
    ops_queue *q = policy->q;
    learner->norm.n = (size_t)n; /* only the norm and clipping of the full gradient (learner 0) */
    learner->norm.q = q;
    ops_reserve(q, 0, 0, 0, (size_t)n);
    for (int span = 1; span < micro_batches; span *= 2) learner->tree_depth++;
    learner->tree_depth += 1;
    learner->tree_bufs = micro_batches > 1 ? ops_alloc(q, OPS_F32, (size_t)learner->tree_depth * (size_t)n).p : NULL;
    learner->recv = learner->n_learners > 1 ? ops_alloc(q, OPS_F32, (size_t)n).p : NULL;
    learner->row_kl = xmalloc((size_t)(max_tokens + 1) * sizeof(double));
    if (!q->host_memory) learner->row_kl_dev = ops_alloc(q, OPS_F64, (size_t)max_tokens + 1).p;
    learner->mseq = xmalloc((size_t)(max_tokens + 2) * sizeof(int));
    learner->kl_part = xcalloc((size_t)micro_batches, sizeof(double));
    learner->logp = xmalloc((size_t)max_tokens * sizeof(float));
    learner->logp_old = xmalloc((size_t)max_tokens * sizeof(float));
    learner->dlogp = xmalloc((size_t)max_tokens * sizeof(float));
    learner->spine = xcalloc((size_t)learner->tree_depth, sizeof(float *));
}

void pl_learner_set_buckets(pl_learner *learner, double bucket_mb) {
    size_t n = learner->policy->n_params;
    if (bucket_mb <= 0) {
        learner->bucket_floats = 0;
        return;
    }
    size_t want = (size_t)(bucket_mb * 1048576.0 / sizeof(float)), least = n / (TP_MAX_BUCKETS / 2) + 1;
    learner->bucket_floats = S2D_MAX(S2D_MAX(want, least), (size_t)1);
}

void pl_learner_free(pl_learner *learner) {
    ops_queue *q = learner->policy->q;
    model_ws_free(learner->ws);
    adamw_free(&learner->opt);
    ops_free(q, ot_f32(learner->tree_bufs)), ops_free(q, ot_f32(learner->recv)), ops_free(q, ot_f64(learner->row_kl_dev));
    free(learner->row_kl);
    free(learner->mseq), free(learner->kl_part);
    free(learner->logp), free(learner->logp_old), free(learner->dlogp), free(learner->spine);
    memset(learner, 0, sizeof *learner);
}

void pl_micro_view(const pl_batch *b, int M, int mb, pl_batch *v, int *seq_scratch, int *row0) {
    long lo, hi;
    tp_split(b->n_seqs, M, mb, &lo, &hi);
    int r0 = b->seq_start[lo];
    for (long i = lo; i <= hi; i++) seq_scratch[i - lo] = b->seq_start[i] - r0;
    *v = *b;
    v->n_seqs = (int)(hi - lo);
    v->seq_start = seq_scratch;
    v->tokens = b->tokens + r0;
    v->mask = b->mask + r0;
    if (b->logp_behaviour) v->logp_behaviour = b->logp_behaviour + r0;
    if (b->adv) v->adv = b->adv + r0;
    if (b->logp_teacher) v->logp_teacher = b->logp_teacher + r0;
    if (b->logp_ref) v->logp_ref = b->logp_ref + r0;
    if (b->row_slot) v->row_slot = b->row_slot + r0; /* slots stay global: top-k / full rows are shared */
    *row0 = r0;
}

static token_layout layout_of(const pl_batch *b) {
    return (token_layout){.n_seqs = b->n_seqs, .seq_start = b->seq_start, .mask = b->mask};
}

/* Row range of learner j's block of micro-batches. */
static void learner_rows(const pl_learner *learner, const pl_batch *b, int j, int *r0, int *r1) {
    long m0, m1, s0, s1, unused;
    tp_split(learner->micro_batches, learner->n_learners, j, &m0, &m1);
    tp_split(b->n_seqs, learner->micro_batches, (int)m0, &s0, &unused);
    tp_split(b->n_seqs, learner->micro_batches, (int)m1 - 1, &unused, &s1);
    *r0 = b->seq_start[s0], *r1 = b->seq_start[s1];
}

static void forward_micro(pl_learner *learner, const pl_batch *b, int mb, pl_batch *v, int *r0) {
    pl_micro_view(b, learner->micro_batches, mb, v, learner->mseq, r0);
    if (learner->ws_holds == mb) return;
    model_batch mbat = {.n_seqs = v->n_seqs, .seq_start = v->seq_start, .tokens = v->tokens};
    s2d_err err;
    CHECK_OK(model_forward(learner->policy, learner->ws, &mbat, &err), &err);
    learner->ws_holds = mb;
}

/* opd at λ ≠ 1 outside mode full: the reference acts through the sampled-token (1 − λ)ℓref term. */
static bool sampled_reference_term(const tc_stage *s) {
    return s->algo == ALGO_OPD && s->opd.lambda != 1.0f && !pl_opd_exact_reference(s);
}

/* Gradient of micro-batch mb into policy->grads. */
static void leaf_grad(pl_learner *learner, const tc_stage *s, const pl_batch *b, int mb) {
    pl_batch v;
    int r0;
    forward_micro(learner, b, mb, &v, &r0);
    model_zero_grads(learner->policy);
    if (s->teacher_dist != DIST_NONE) { /* fkl full / topk; opd full / topk */
        int T = v.seq_start[v.n_seqs];
        ops_vocab_op op;
        pl_fkl_op(learner->policy->q, s, &v, T, learner->fkl_scale, true, &op);
        op.row_kl = learner->row_kl_dev ? ot_f64(learner->row_kl_dev) : ot_f64(learner->row_kl);
        if (sampled_reference_term(s))
            model_vocab_backward_dlogp(learner->policy, learner->ws, &op, learner->dlogp + r0);
        else
            model_vocab_backward(learner->policy, learner->ws, &op);
        if (learner->row_kl_dev) ops_download(learner->policy->q, learner->row_kl, op.row_kl, (size_t)T);
        double sum = 0; /* taught rows in order */
        for (int t = 0; t < T; t++)
            if (v.row_slot[t] >= 0) sum += learner->row_kl[t];
        learner->kl_part[mb] = sum;
    } else {
        model_backward_logprobs_temp(learner->policy, learner->ws, b->temperature, learner->dlogp + r0);
    }
}

/* Sum of the gradients of micro-batches [lo, hi) over the fixed tree; returns the buffer holding it. */
static float *tree_sum(pl_learner *learner, const tc_stage *s, const pl_batch *b, int lo, int hi, int level) {
    if (hi - lo == 1) {
        leaf_grad(learner, s, b, lo);
        return learner->policy->grads;
    }
    size_t n = learner->policy->n_params;
    CHECK(level < learner->tree_depth, "gradient tree deeper than %d", learner->tree_depth);
    ops_queue *q = learner->policy->q;
    float *buf = learner->tree_bufs + (size_t)level * n;
    int mid = microbatch_tree_split(lo, hi);
    float *left = tree_sum(learner, s, b, lo, mid, level + 1);
    ops_copy(q, ot_f32(buf), ot_f32(left), n);
    const float *right = tree_sum(learner, s, b, mid, hi, level + 1);
    op_add(q, ot_f32(buf), ot_f32(right), n);
    return buf;
}

/* Node [lo, hi) of the tree above the learner blocks: returns the learner that holds its sum (in *mine when
 * that is this learner). Right-hand owners send, left-hand owners add: the same additions as tree_sum. */
static int tree_combine(pl_learner *learner, const tc_stage *s, const pl_batch *b, int lo, int hi, int level,
                        float **mine) {
    for (int j = 0; j < learner->n_learners; j++) {
        long a, z;
        tp_split(learner->micro_batches, learner->n_learners, j, &a, &z);
        if (a == lo && z == hi) {
            if (j == learner->index) *mine = tree_sum(learner, s, b, lo, hi, level);
            return j;
        }
    }
    int mid = microbatch_tree_split(lo, hi);
    int jl = tree_combine(learner, s, b, lo, mid, level + 1, mine);
    int jr = tree_combine(learner, s, b, mid, hi, level + 1, mine);
    size_t n = learner->policy->n_params;
    if (learner->index == jr) tp_send_mem(learner->tp, TP_LEARN, jl, *mine, n * sizeof(float), TP_DEVICE, "a gradient partial sum");
    if (learner->index == jl) {
        tp_recv_mem(learner->tp, TP_LEARN, jr, learner->recv, n * sizeof(float), TP_DEVICE, "a gradient partial sum");
        op_add(learner->policy->q, ot_f32(*mine), ot_f32(learner->recv), n);
    }
    return jl;
}

/* Deterministic reduction: the fixed tree over micro-batches (this learner's subtree first, then up the tree
 * across learners); learner 0 clips the total and sends each learner its shard. Bitwise the same for any
 * number of learners. */
static void reduce_deterministic(pl_learner *learner, const tc_stage *s, const pl_batch *b, float **shard, double *norm) {
    bool multi = learner->n_learners > 1;
    size_t n = learner->policy->n_params;
    float *total = NULL;
    if (multi) tree_combine(learner, s, b, 0, learner->micro_batches, 0, &total);
    else total = tree_sum(learner, s, b, 0, learner->micro_batches, 0);
    double norm_bits[1] = {0};
    if (learner->index == 0) norm_bits[0] = adamw_clip_grad_norm(&learner->norm, total, s->clip);
    if (!multi) {
        *shard = total, *norm = norm_bits[0];
        return;
    }
    if (learner->index == 0) {
        for (int j = 1; j < learner->n_learners; j++) {
            long a, z;
            tp_split((long)n, learner->n_learners, j, &a, &z);
            tp_send_mem(learner->tp, TP_LEARN, j, total + a, (size_t)(z - a) * sizeof(float), TP_DEVICE, "a gradient shard");
        }
        *shard = total + learner->shard_lo;
    } else {
        *shard = learner->recv; /* free again after the combine */
        tp_recv_mem(learner->tp, TP_LEARN, 0, *shard, (size_t)(learner->shard_hi - learner->shard_lo) * sizeof(float), TP_DEVICE,
                    "a gradient shard");
    }
    learner->tp->bcast(learner->tp, TP_LEARN, 0, norm_bits, sizeof norm_bits, "the gradient norm");
    *norm = norm_bits[0];
}

/* Bucketed fast reduction: the reduce-scatter of gradient floats [a, b) of `sum` (the learner's total) starts
 * now; member j gets its ZeRO-1 shard's part of the bucket. */
static void start_bucket(pl_learner *learner, const float *sum, size_t a, size_t b) {
    size_t cnt[4096], n = learner->policy->n_params;
    for (int j = 0; j < learner->n_learners; j++) {
        long lo, hi;
        tp_split((long)n, learner->n_learners, j, &lo, &hi);
        long x = S2D_MAX((long)a, lo), y = S2D_MIN((long)b, hi);
        cnt[j] = y > x ? (size_t)(y - x) : 0;
    }
    long x = S2D_MAX((long)a, learner->shard_lo);
    float *dst = learner->recv + (cnt[learner->index] ? x - learner->shard_lo : 0);
    tp_ireduce_scatter_mem(learner->tp, TP_LEARN, sum + a, a, n, cnt, dst, "gradients (bucketed reduce-scatter)");
    learner->n_buckets++;
}

/* model_grad_ready_fn of the learner's last leaf: floats [lo, hi) of the leaf's gradient are final, so the
 * tree adds along the spine finish for them (the same adds as tree_sum, range by range), and a bucket starts
 * once enough final floats have gathered. */
static void bucket_ready(void *user, size_t lo, size_t hi) {
    pl_learner *learner = user;
    ops_queue *q = learner->policy->q;
    const float *acc = learner->policy->grads;
    for (int k = learner->n_spine - 1; k >= 0; k--) { /* deepest first, as the recursion returns */
        op_add(q, ot_f32(learner->spine[k] + lo), ot_f32(acc + lo), hi - lo);
        acc = learner->spine[k];
    }
    if (hi != learner->pend_lo && learner->pend_hi > learner->pend_lo) start_bucket(learner, acc, learner->pend_lo, learner->pend_hi), learner->pend_hi = hi;
    if (learner->pend_hi <= learner->pend_lo) learner->pend_hi = hi;
    learner->pend_lo = lo;
    if (learner->pend_hi - learner->pend_lo >= learner->bucket_floats) start_bucket(learner, acc, learner->pend_lo, learner->pend_hi), learner->pend_hi = lo;
}

/* This learner's micro-batches [m0, m1) summed over the fixed tree as tree_sum does, with the rightmost leaf's
 * backward reducing buckets across learners as its layers finish (last layer first); waits for every bucket.
 * Returns the buffer holding this learner's sum (the same bits as tree_sum's). */
static float *tree_sum_bucketed(pl_learner *learner, const tc_stage *s, const pl_batch *b, int lo, int hi) {
    size_t n = learner->policy->n_params;
    ops_queue *q = learner->policy->q;
    int level = 0;
    learner->n_spine = 0, learner->n_buckets = 0;
    while (hi - lo > 1) { /* down the right spine: each left subtree summed whole, kept in its level's buffer */
        CHECK(level < learner->tree_depth, "gradient tree deeper than %d", learner->tree_depth);
        float *buf = learner->tree_bufs + (size_t)level * n;
        int mid = microbatch_tree_split(lo, hi);
        const float *left = tree_sum(learner, s, b, lo, mid, level + 1);
        ops_copy(q, ot_f32(buf), ot_f32(left), n);
        learner->spine[learner->n_spine++] = buf;
        lo = mid, level++;
    }
    learner->pend_lo = learner->pend_hi = n;
    model_ws_set_grad_hook(learner->ws, bucket_ready, learner);
    leaf_grad(learner, s, b, lo);
    model_ws_set_grad_hook(learner->ws, NULL, NULL);
    float *sum = learner->n_spine ? learner->spine[0] : learner->policy->grads;
    if (learner->pend_hi > learner->pend_lo) start_bucket(learner, sum, learner->pend_lo, learner->pend_hi);
    tp_wait_reduce_mem(learner->tp, TP_LEARN, "gradients (bucketed reduce-scatter)");
    return sum;
}

/* Fast reduction (runtime.reduce: fast): each learner sums its own micro-batches, the transport's
 * reduce-scatter sums them across learners straight into the ZeRO-1 shards, and the global norm is the square
 * root of the all-reduced shard sums of squares; each learner clips its shard (torch's coefficient). */
static void reduce_fast(pl_learner *learner, const tc_stage *s, const pl_batch *b, float **shard, double *norm) {
    size_t n = learner->policy->n_params;
    long m0, m1;
    tp_split(learner->micro_batches, learner->n_learners, learner->index, &m0, &m1);
    if (learner->bucket_floats > 0) {
        tree_sum_bucketed(learner, s, b, (int)m0, (int)m1); /* reduced bucket by bucket during the backward */
    } else {
        float *mine = tree_sum(learner, s, b, (int)m0, (int)m1, 0);
        size_t cnt[4096], dsp[4096];
        for (int j = 0; j < learner->n_learners; j++) {
            long a, z;
            tp_split((long)n, learner->n_learners, j, &a, &z);
            dsp[j] = (size_t)a, cnt[j] = (size_t)(z - a);
        }
        tp_reduce_scatter_mem(learner->tp, TP_LEARN, mine, cnt, dsp, learner->recv, "gradients (reduce-scatter)");
    }
    *shard = learner->recv;
    size_t len = (size_t)(learner->shard_hi - learner->shard_lo);
    double sq[1] = {op_sumsq(learner->policy->q, ot_f32(*shard), len)};
    learner->tp->allreduce_f64(learner->tp, TP_LEARN, sq, 1, "the gradient's sum of squares");
    *norm = sqrt(sq[0]);
    if (s->clip > 0 && isfinite(*norm)) {
        float coef = s->clip / ((float)*norm + 1e-6f); /* as torch.nn.utils.clip_grad_norm_ */
        if (coef < 1.0f) op_scale(learner->policy->q, ot_f32(*shard), coef, len);
    }
}

void pl_learn_step(pl_learner *learner, const tc_stage *s, const pl_batch *b, long step, pl_learn_stats *st) {
    memset(st, 0, sizeof *st);
    st->pg_loss = st->kl_loss = NAN; /* sft and fkl have neither */
    model *m = learner->policy;
    int T = b->seq_start[b->n_seqs];
    CHECK(T <= learner->max_tokens, "pl_learn_step: %d tokens > workspace %d", T, learner->max_tokens);
    CHECK(learner->micro_batches <= b->n_seqs, "pl_learn_step: %d micro-batches > %d sequences", learner->micro_batches,
          b->n_seqs);
    bool multi = learner->n_learners > 1;
    learner->ws_holds = -1;
    long m0, m1;
    tp_split(learner->micro_batches, learner->n_learners, learner->index, &m0, &m1);
    for (int t = 0; t < T; t++) st->tokens += b->mask[t] != 0;
    token_layout lay = layout_of(b);
    bool logits_loss = s->teacher_dist != DIST_NONE; /* the loss reads the teacher's distribution per row */
    bool token_loss = !logits_loss || sampled_reference_term(s); /* and per-token terms */
    /* counts/displacements of the learners' row blocks (bytes), for the all-gathers */
    size_t cnt[4096], dsp[4096];
    CHECK(learner->n_learners <= 4096, "at most 4096 learners");
    if (logits_loss) learner->fkl_scale = b->n_rows > 0 ? 1.0f / (float)b->n_rows : 0.0f; /* token mean over taught rows */
    if (token_loss) {
        /* pass 1: this learner's rows of log-probs, then everyone's */
        for (long mb = m0; mb < m1; mb++) {
            pl_batch v;
            int r0;
            forward_micro(learner, b, (int)mb, &v, &r0);
            model_token_logprobs_temp(m, learner->ws, b->temperature, learner->logp + r0);
        }
        if (multi) {
            for (int j = 0; j < learner->n_learners; j++) {
                int r0, r1;
                learner_rows(learner, b, j, &r0, &r1);
                dsp[j] = (size_t)r0 * sizeof(float), cnt[j] = (size_t)(r1 - r0) * sizeof(float);
            }
            learner->tp->allgatherv(learner->tp, TP_LEARN, learner->logp, cnt, dsp, "per-token log-probs of the other learners");
        }
        /* The "old" policy: fixed before the first of several minibatch updates (ρ ≠ 1 after the first, so
         * PPO clipping and the truncated IS weight act), else the current one (ρ = 1; clipping inactive). */
        memcpy(learner->logp_old, learner->fixed_old ? learner->fixed_old : learner->logp, (size_t)T * sizeof(float));
        if (s->algo == ALGO_SFT || s->algo == ALGO_FKL) {
            st->loss = sft_loss(&lay, AGG_TOKEN_MEAN, 0, learner->logp, learner->dlogp);
        } else if (s->algo == ALGO_GRPO) {
            grpo_stats gs;
            st->loss = grpo_loss(&s->grpo, &lay, learner->logp, learner->logp_old, s->grpo.tis_cap > 0 ? b->logp_behaviour : NULL,
                                 s->grpo.kl_beta > 0 ? b->logp_ref : NULL, b->adv, learner->dlogp, &gs);
            st->kl = gs.kl;
            st->pg_loss = gs.pg_loss, st->kl_loss = s->grpo.kl_beta * gs.kl;
            st->clip_fraction = gs.clip_fraction;
        } else { /* opd */
            st->loss = opd_loss(&s->opd, &lay, learner->logp, learner->logp_old, b->logp_teacher,
                                b->logp_ref ? b->logp_ref : learner->logp_old, learner->dlogp, NULL);
            st->pg_loss = st->loss;
            double kl = 0; /* reverse KL estimate E_student[ℓθ − ℓT] over counted tokens */
            long n = 0;
            for (int t = 0; t < T; t++)
                if (b->mask[t] != 0) kl += learner->logp[t] - b->logp_teacher[t], n++;
            st->kl = n ? kl / n : 0;
        }
    }
    /* gradients over the micro-batches, reduced across learners into each learner's shard */
    float *shard = NULL;
    double norm;
    if (multi && learner->reduce == TP_REDUCE_FAST) reduce_fast(learner, s, b, &shard, &norm);
    else reduce_deterministic(learner, s, b, &shard, &norm);
    if (logits_loss) {
        if (multi) {
            for (int j = 0; j < learner->n_learners; j++) {
                long a, z;
                tp_split(learner->micro_batches, learner->n_learners, j, &a, &z);
                dsp[j] = (size_t)a * sizeof(double), cnt[j] = (size_t)(z - a) * sizeof(double);
            }
            learner->tp->allgatherv(learner->tp, TP_LEARN, learner->kl_part, cnt, dsp, "the KL sums of the other learners");
        }
        double sum = 0;
        for (int mb = 0; mb < learner->micro_batches; mb++) sum += learner->kl_part[mb];
        st->loss = b->n_rows > 0 ? sum / b->n_rows : 0;
        st->kl = st->loss;
    }
    /* every learner: AdamW on its shard (ZeRO-1), then all-gather the shards */
    size_t n = m->n_params;
    st->grad_norm = norm;
    st->lr = lr_at(&s->sched, step);
    if (isfinite(st->grad_norm)) adamw_step(&learner->opt, m->params + learner->shard_lo, shard, (float)st->lr);
    if (multi) {
        for (int j = 0; j < learner->n_learners; j++) {
            long a, z;
            tp_split((long)n, learner->n_learners, j, &a, &z);
            dsp[j] = (size_t)a * sizeof(float), cnt[j] = (size_t)(z - a) * sizeof(float);
        }
        tp_allgatherv_mem(learner->tp, TP_LEARN, m->params, cnt, dsp, n * sizeof(float), TP_DEVICE, "updated parameter shards");
    }
}

void pl_learn_logprobs(pl_learner *learner, const pl_batch *b, float *out) {
    int T = b->seq_start[b->n_seqs];
    CHECK(T <= learner->max_tokens, "pl_learn_logprobs: %d tokens > workspace %d", T, learner->max_tokens);
    learner->ws_holds = -1;
    long m0, m1;
    tp_split(learner->micro_batches, learner->n_learners, learner->index, &m0, &m1);
    for (long mb = m0; mb < m1; mb++) {
        pl_batch v;
        int r0;
        forward_micro(learner, b, (int)mb, &v, &r0);
        model_token_logprobs_temp(learner->policy, learner->ws, b->temperature, out + r0);
    }
    if (learner->n_learners > 1) {
        size_t cnt[4096], dsp[4096];
        for (int j = 0; j < learner->n_learners; j++) {
            int r0, r1;
            learner_rows(learner, b, j, &r0, &r1);
            dsp[j] = (size_t)r0 * sizeof(float), cnt[j] = (size_t)(r1 - r0) * sizeof(float);
        }
        learner->tp->allgatherv(learner->tp, TP_LEARN, out, cnt, dsp, "per-token log-probs of the other learners");
    }
    learner->ws_holds = -1;
}

bool pl_score_logprobs(const model *m, model_ws *ws, const pl_batch *b, float *logp, s2d_err *err) {
    model_batch mb = {.n_seqs = b->n_seqs, .seq_start = b->seq_start, .tokens = b->tokens};
    if (!model_forward(m, ws, &mb, err)) return false;
    model_token_logprobs_temp(m, ws, b->temperature, logp);
    return true;
}

float pl_stage_temperature(const tc_stage *s) {
    return s->algo != ALGO_SFT && s->sampling.temperature > 0 ? s->sampling.temperature : 1.0f;
}

struct pl_fkl_buffers {
    ops_queue *q;
    int max_rows, k, V;
    bool full;
    int32_t *row_slot, *topk_ids; /* device [max_rows], [max_rows, k] */
    float *topk_logp, *full_logp; /* device [max_rows, k], [max_rows, V] */
};

pl_fkl_buffers *pl_fkl_buffers_new(ops_queue *q, int max_rows, int k, int V, bool full) {
    if (q->host_memory) return NULL;
    pl_fkl_buffers *d = xcalloc(1, sizeof *d);
    *d = (pl_fkl_buffers){.q = q, .max_rows = max_rows, .k = k, .V = V, .full = full};
    d->row_slot = ops_alloc(q, OPS_I32, (size_t)max_rows).p;
    if (full) d->full_logp = ops_alloc(q, OPS_F32, (size_t)max_rows * V).p;
    else d->topk_ids = ops_alloc(q, OPS_I32, (size_t)max_rows * k).p, d->topk_logp = ops_alloc(q, OPS_F32, (size_t)max_rows * k).p;
    return d;
}

void pl_fkl_buffers_free(pl_fkl_buffers *d) {
    if (!d) return;
    ops_free(d->q, ot_i32(d->row_slot)), ops_free(d->q, ot_i32(d->topk_ids));
    ops_free(d->q, ot_f32(d->topk_logp)), ops_free(d->q, ot_f32(d->full_logp));
    free(d);
}

/* The vocabulary op of stage s's forward KL over rows [0, T) of batch b: its teacher data as tensors of q (the
 * host arrays on host-memory backends; b->fkl_dev's device copies otherwise, uploaded when upload is set). */
void pl_fkl_op(ops_queue *q, const tc_stage *s, const pl_batch *b, int T, float scale, bool upload, ops_vocab_op *op) {
    bool full = s->teacher_dist == DIST_FULL;
    ops_vocab_kind kind = s->algo == ALGO_OPD ? (full ? VOCAB_RKL_FULL : VOCAB_RKL_TOPK)
                                              : (full ? VOCAB_FKL_FULL : VOCAB_FKL_TOPK);
    float lambda = pl_opd_exact_reference(s) ? 1.0f : s->opd.lambda; /* the rows already hold λ and the reference */
    *op = (ops_vocab_op){.kind = kind, .k = s->teacher_topk, .scale = scale, .lambda = lambda,
                         .temperature = b->temperature,
                         .row_slot = ot_i32(b->row_slot), .full_logp = ot_f32(b->full_logp),
                         .topk_ids = ot_i32(b->topk_ids), .topk_logp = ot_f32(b->topk_logp)};
    const pl_fkl_buffers *d = b->fkl_dev;
    if (q->host_memory) return;
    CHECK(d, "forward KL on the %s backend: the batch has no device buffers (pl_fkl_buffers_new)", q->name);
    CHECK(T <= d->max_rows && b->n_rows <= d->max_rows, "forward KL: %d rows > the device buffers' %d", T, d->max_rows);
    op->row_slot = ot_i32(d->row_slot);
    op->full_logp = ot_f32(d->full_logp);
    op->topk_ids = ot_i32(d->topk_ids);
    op->topk_logp = ot_f32(d->topk_logp);
    ops_upload(q, op->row_slot, b->row_slot, (size_t)T);
    if (!upload) return;
    if (d->full) ops_upload(q, op->full_logp, b->full_logp, (size_t)b->n_rows * d->V);
    else {
        ops_upload(q, op->topk_ids, b->topk_ids, (size_t)b->n_rows * d->k);
        ops_upload(q, op->topk_logp, b->topk_logp, (size_t)b->n_rows * d->k);
    }
}

bool pl_score_fkl(const model *teacher, model_ws *ws, const tc_stage *s, pl_batch *b, s2d_err *err) {
    model_batch mb = {.n_seqs = b->n_seqs, .seq_start = b->seq_start, .tokens = b->tokens};
    if (!model_forward(teacher, ws, &mb, err)) return false;
    ops_vocab_op op;
    pl_fkl_op(teacher->q, s, b, mb.seq_start[mb.n_seqs], 0.0f, false, &op);
    op.kind = s->teacher_dist == DIST_FULL ? VOCAB_TEACHER_FULL : VOCAB_TEACHER_TOPK;
    model_vocab_forward(teacher, ws, &op);
    if (!teacher->q->host_memory) { /* the teacher data travels to the learners from host arrays */
        int T = mb.seq_start[mb.n_seqs], lo = -1, hi = -1; /* this view's slots: consecutive, in row order */
        for (int t = 0; t < T; t++)
            if (b->row_slot[t] >= 0) hi = b->row_slot[t] + 1, lo = lo < 0 ? b->row_slot[t] : lo;
        if (lo < 0) return true;
        size_t w = s->teacher_dist == DIST_FULL ? (size_t)op.V : (size_t)op.k, n = (size_t)(hi - lo) * w, at = (size_t)lo * w;
        if (s->teacher_dist == DIST_FULL) ops_download(teacher->q, b->full_logp + at, ot_at(op.full_logp, at), n);
        else {
            ops_download(teacher->q, b->topk_ids + at, ot_at(op.topk_ids, at), n);
            ops_download(teacher->q, b->topk_logp + at, ot_at(op.topk_logp, at), n);
        }
    }
    return true;
}

bool pl_score_teacher_dist(const model *teacher, model_ws *ws, const tc_stage *s, pl_batch *b, float *logp,
                           s2d_err *err) {
    if (!pl_score_fkl(teacher, ws, s, b, err)) return false;
    model_token_logprobs_temp(teacher, ws, b->temperature, logp); /* the same forward's hidden states */
    return true;
}

bool pl_opd_exact_reference(const tc_stage *s) {
    return s->algo == ALGO_OPD && s->teacher_dist == DIST_FULL && s->opd.lambda != 1.0f;
}

bool pl_score_opd_target(const model *teacher, model_ws *tws, const model *ref, model_ws *rws, const tc_stage *s,
                         pl_batch *b, float *logp_teacher, float *logp_ref, float *ref_rows, s2d_err *err) {
    CHECK(teacher->q->host_memory && ref->q->host_memory, "pl_score_opd_target: host-memory backends only");
    if (!pl_score_teacher_dist(teacher, tws, s, b, logp_teacher, err)) return false;
    pl_batch rb = *b;
    rb.full_logp = ref_rows; /* the same slots, in the reference's own rows */
    if (!pl_score_teacher_dist(ref, rws, s, &rb, logp_ref, err)) return false;
    const int V = teacher->cfg.vocab, T = b->seq_start[b->n_seqs];
    const float lambda = s->opd.lambda;
    for (int t = 0; t < T; t++) {
        if (b->row_slot[t] < 0) continue;
        float *row = b->full_logp + (size_t)b->row_slot[t] * V;
        const float *r = ref_rows + (size_t)b->row_slot[t] * V;
        for (int v = 0; v < V; v++) row[v] = lambda * row[v] + (1.0f - lambda) * r[v];
    }
    return true;
}

double pl_fkl_value(const model *m, model_ws *ws, const tc_stage *s, const pl_batch *b) {
    model_batch mb = {.n_seqs = b->n_seqs, .seq_start = b->seq_start, .tokens = b->tokens};
    s2d_err err;
    CHECK_OK(model_forward(m, ws, &mb, &err), &err);
    int T = mb.seq_start[mb.n_seqs];
    double *row_kl = xmalloc((size_t)(T + 1) * sizeof(double)); /* host: one value per row (metrics and tests) */
    ops_vocab_op op;
    pl_fkl_op(m->q, s, b, T, 0.0f, true, &op);
    double *row_kl_dev = m->q->host_memory ? NULL : ops_alloc(m->q, OPS_F64, (size_t)T + 1).p; /* metrics only */
    op.row_kl = row_kl_dev ? ot_f64(row_kl_dev) : ot_f64(row_kl);
    model_vocab_forward(m, ws, &op);
    if (row_kl_dev) ops_download(m->q, row_kl, op.row_kl, (size_t)T), ops_free(m->q, op.row_kl);
    double sum = 0;
    for (int t = 0; t < T; t++)
        if (b->row_slot[t] >= 0) sum += row_kl[t];
    free(row_kl);
    return b->n_rows ? sum / b->n_rows : 0;
}
