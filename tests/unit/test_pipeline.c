/* Pipeline learner: one step of each objective moves a tiny random policy the way its definition says.
 *   grpo  raises the log-prob of the rewarded completion and lowers the unrewarded one;
 *   sft   lowers the NLL of the target;
 *   fkl   lowers KL(teacher ‖ policy) on the taught rows (top-k + tail and full vocabulary);
 *   opd   with teacher = policy has zero per-token weights, so the policy does not move; opd.mode full / topk
 *         (the exact per-position reverse KL) lowers KL(policy ‖ teacher) on the batch, has no gradient for a
 *         policy that is its own teacher, and at λ ≠ 1 takes the reference exactly in mode full (target rows
 *         λ log p_T + (1 − λ) log p_ref) and as the sampled (1 − λ)ℓref term in mode topk;
 * and at a sampling temperature T ≠ 1 the learner's log-probs are the generator's behaviour log-probs (ρ = 1
 * on-policy), as they are at T = 1. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/pipeline.h"
#include "runtime/rollouts.h"
#include "model/generate.h"
#include "test.h"

enum { NSEQ = 2, PLEN = 3, CLEN = 4, SEQ = PLEN + CLEN, T = NSEQ * SEQ };

typedef struct {
    int seq_start[NSEQ + 1];
    int32_t tokens[T];
    float mask[T], beh[T], adv[T], lt[T], lr[T];
    int row_slot[T];
    int32_t topk_ids[T * 8];
    float topk_logp[T * 8];
    float *full;
    pl_batch b;
} fixture;

static void make_batch(fixture *f, int V) {
    const int32_t comp[NSEQ][CLEN] = {{10, 11, 12, 13}, {20, 21, 22, 23}};
    for (int s = 0; s < NSEQ; s++) {
        f->seq_start[s] = s * SEQ;
        for (int t = 0; t < SEQ; t++) {
            int row = s * SEQ + t;
            f->tokens[row] = t < PLEN ? 1 + t : comp[s][t - PLEN];
            f->mask[row] = (t >= PLEN - 1 && t < SEQ - 1) ? 1.0f : 0.0f; /* rows that predict completion tokens */
        }
    }
    f->seq_start[NSEQ] = T;
    f->full = calloc((size_t)T * V, sizeof(float));
    f->b = (pl_batch){.n_seqs = NSEQ, .seq_start = f->seq_start, .tokens = f->tokens, .mask = f->mask,
                      .logp_behaviour = f->beh, .adv = f->adv, .logp_teacher = f->lt, .logp_ref = f->lr,
                      .row_slot = f->row_slot, .topk_ids = f->topk_ids, .topk_logp = f->topk_logp, .full_logp = f->full};
    f->b.n_rows = 0;
    for (int t = 0; t < T; t++) f->row_slot[t] = f->mask[t] != 0 ? f->b.n_rows++ : -1;
}

static void tiny_model(model *m, uint64_t seed) {
    model_config c;
    s2d_err err;
    CHECK_OK(model_config_preset("qwen3-tiny", &c, &err), &err);
    c.vocab = 64, c.hidden = 32, c.intermediate = 64, c.n_layers = 1;
    model_create(m, &c);
    model_init_random(m, seed);
}

static tc_stage stage_of(train_algo algo) {
    tc_stage s;
    memset(&s, 0, sizeof s);
    s.algo = algo;
    s.grpo = (grpo_opts){.clip_low = 0.2f, .clip_high = 0.28f, .agg = AGG_TOKEN_MEAN, .kl_est = KL_K3};
    s.opd = (opd_opts){.lambda = 1, .clip_low = 0.2f, .clip_high = 0.28f, .agg = AGG_TOKEN_MEAN};
    s.adam = (adamw_hparams){.beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f};
    s.sched = (lr_schedule){.kind = LR_CONSTANT, .lr = 1e-2, .total_steps = 1};
    s.clip = 1.0f;
    s.topk = 8;
    s.fkl = FKL_TOPK;
    s.teacher_dist = algo == ALGO_FKL ? DIST_TOPK : DIST_NONE, s.teacher_topk = 8; /* as the config reader sets them */
    return s;
}

/* Σ of the completion's log-probs of sequence s under m. */
static double seq_logprob(const model *m, model_ws *ws, fixture *f, int s) {
    float logp[T];
    s2d_err err;
    CHECK_OK(pl_score_logprobs(m, ws, &f->b, logp, &err), &err);
    double sum = 0;
    for (int t = f->seq_start[s]; t < f->seq_start[s + 1]; t++) sum += f->mask[t] * logp[t];
    return sum;
}

static void test_grpo_moves_toward_reward(void) {
    model m;
    tiny_model(&m, 5);
    fixture f;
    make_batch(&f, m.cfg.vocab);
    model_ws *ws = model_ws_new(&m, T, false);
    for (int t = 0; t < T; t++) f.adv[t] = t < SEQ ? 1.0f : -1.0f; /* sequence 0 rewarded, 1 not */
    double a0 = seq_logprob(&m, ws, &f, 0), b0 = seq_logprob(&m, ws, &f, 1);
    tc_stage s = stage_of(ALGO_GRPO);
    pl_learner L;
    pl_learner_init(&L, &m, T, &s);
    pl_learn_stats st;
    pl_learn_step(&L, &s, &f.b, 0, &st);
    double a1 = seq_logprob(&m, ws, &f, 0), b1 = seq_logprob(&m, ws, &f, 1);
    EXPECT(a1 > a0 + 1e-3, "rewarded completion: log-prob %.5f -> %.5f should rise", a0, a1);
    EXPECT(b1 < b0 - 1e-3, "unrewarded completion: log-prob %.5f -> %.5f should fall", b0, b1);
    EXPECT(st.tokens == NSEQ * CLEN, "trained tokens %ld", st.tokens);
    EXPECT(isfinite(st.loss) && st.grad_norm > 0, "loss %g grad norm %g", st.loss, st.grad_norm);
    pl_learner_free(&L), model_ws_free(ws), model_free(&m), free(f.full);
}

static void test_sft_lowers_nll(void) {
    model m;
    tiny_model(&m, 6);
    fixture f;
    make_batch(&f, m.cfg.vocab);
    model_ws *ws = model_ws_new(&m, T, false);
    double nll0 = -(seq_logprob(&m, ws, &f, 0) + seq_logprob(&m, ws, &f, 1));
    tc_stage s = stage_of(ALGO_SFT);
    pl_learner L;
    pl_learner_init(&L, &m, T, &s);
    pl_learn_stats st;
    pl_learn_step(&L, &s, &f.b, 0, &st);
    double nll1 = -(seq_logprob(&m, ws, &f, 0) + seq_logprob(&m, ws, &f, 1));
    EXPECT(nll1 < nll0 - 1e-3, "NLL %.5f -> %.5f should fall", nll0, nll1);
    /* the reported loss is the token-mean NLL before the step */
    EXPECT_CLOSE(st.loss, nll0 / (NSEQ * CLEN), 1e-4, 1e-4, "sft loss = mean NLL");
    pl_learner_free(&L), model_ws_free(ws), model_free(&m), free(f.full);
}

static void fkl_case(fkl_mode mode) {
    model m, teacher;
    tiny_model(&m, 7);
    tiny_model(&teacher, 8);
    fixture f;
    make_batch(&f, m.cfg.vocab);
    model_ws *tws = model_ws_new(&teacher, T, false), *ws = model_ws_new(&m, T, false);
    tc_stage s = stage_of(ALGO_FKL);
    s.fkl = mode;
    s.teacher_dist = mode == FKL_FULL ? DIST_FULL : DIST_TOPK;
    s2d_err err;
    CHECK_OK(pl_score_fkl(&teacher, tws, &s, &f.b, &err), &err);
    double kl0 = pl_fkl_value(&m, ws, &s, &f.b);
    pl_learner L;
    pl_learner_init(&L, &m, T, &s);
    pl_learn_stats st;
    pl_learn_step(&L, &s, &f.b, 0, &st);
    double kl1 = pl_fkl_value(&m, ws, &s, &f.b);
    EXPECT(kl0 > 0 && kl1 < kl0 - 1e-4, "fkl %s: KL %.6f -> %.6f should fall", mode == FKL_FULL ? "full" : "topk", kl0, kl1);
    EXPECT_CLOSE(st.loss, kl0, 1e-5, 1e-4, "the step's loss is the KL before the step");
    /* with the teacher as its own student the KL is zero */
    if (mode == FKL_FULL) EXPECT_CLOSE(pl_fkl_value(&teacher, tws, &s, &f.b), 0, 1e-5, 0, "KL(teacher‖teacher)");
    pl_learner_free(&L), model_ws_free(ws), model_ws_free(tws), model_free(&m), model_free(&teacher), free(f.full);
}

static void test_fkl_lowers_kl(void) {
    fkl_case(FKL_TOPK);
    fkl_case(FKL_FULL);
}

static void test_opd_self_teacher_is_still(void) {
    model m;
    tiny_model(&m, 9);
    fixture f;
    make_batch(&f, m.cfg.vocab);
    model_ws *ws = model_ws_new(&m, T, false);
    s2d_err err;
    CHECK_OK(pl_score_logprobs(&m, ws, &f.b, f.lt, &err), &err); /* teacher = the policy itself */
    float *before = malloc(m.n_params * sizeof(float));
    memcpy(before, m.params, m.n_params * sizeof(float));
    tc_stage s = stage_of(ALGO_OPD);
    f.b.logp_ref = NULL;
    pl_learner L;
    pl_learner_init(&L, &m, T, &s);
    pl_learn_stats st;
    pl_learn_step(&L, &s, &f.b, 0, &st);
    double moved = 0;
    for (size_t i = 0; i < m.n_params; i++) moved = fmax(moved, fabs((double)m.params[i] - before[i]));
    EXPECT(st.grad_norm < 1e-6, "opd with teacher = policy: gradient norm %g should be 0", st.grad_norm);
    EXPECT(moved < 1e-6, "opd with teacher = policy moved a parameter by %g", moved);
    EXPECT_CLOSE(st.kl, 0, 1e-6, 0, "reverse KL to itself");
    /* a different teacher does move it (the test can fail) */
    model t2;
    tiny_model(&t2, 10);
    model_ws *tws = model_ws_new(&t2, T, false);
    CHECK_OK(pl_score_logprobs(&t2, tws, &f.b, f.lt, &err), &err);
    pl_learn_step(&L, &s, &f.b, 1, &st);
    EXPECT(st.grad_norm > 1e-4, "opd with another teacher: gradient norm %g", st.grad_norm);
    pl_learner_free(&L), model_ws_free(ws), model_ws_free(tws), model_free(&m), model_free(&t2), free(f.full), free(before);
}

/* opd.mode full / topk: one step lowers the exact reverse KL of the batch's rows (pl_fkl_value of an opd stage);
 * the step's loss and kl are that KL before it. */
static void opd_dist_case(fkl_mode mode, float lambda) {
    model m, teacher;
    tiny_model(&m, 11);
    tiny_model(&teacher, 12);
    fixture f;
    make_batch(&f, m.cfg.vocab);
    model_ws *tws = model_ws_new(&teacher, T, false), *ws = model_ws_new(&m, T, false);
    tc_stage s = stage_of(ALGO_OPD);
    s.opd_mode = mode, s.teacher_dist = mode == FKL_FULL ? DIST_FULL : DIST_TOPK, s.teacher_topk = 8;
    s.opd.teacher_analytic = true, s.opd.lambda = lambda;
    s2d_err err;
    CHECK_OK(pl_score_teacher_dist(&teacher, tws, &s, &f.b, f.lt, &err), &err);
    float lt_alone[T];
    CHECK_OK(pl_score_logprobs(&teacher, tws, &f.b, lt_alone, &err), &err);
    EXPECT(memcmp(lt_alone, f.lt, sizeof lt_alone) == 0, "the teacher's log-probs from the shared forward");
    if (lambda != 1.0f) CHECK_OK(pl_score_logprobs(&m, ws, &f.b, f.lr, &err), &err); /* reference = the start */
    else f.b.logp_ref = NULL;
    double kl0 = pl_fkl_value(&m, ws, &s, &f.b);
    float *start = malloc(m.n_params * sizeof(float));
    memcpy(start, m.params, m.n_params * sizeof(float));
    pl_learner L;
    pl_learner_init(&L, &m, T, &s);
    pl_learn_stats st;
    pl_learn_step(&L, &s, &f.b, 0, &st);
    double kl1 = pl_fkl_value(&m, ws, &s, &f.b);
    const char *name = mode == FKL_FULL ? "full" : "topk";
    EXPECT_CLOSE(st.loss, kl0, 1e-5, 1e-4, "the step's loss is the reverse KL before the step");
    EXPECT_CLOSE(st.kl, kl0, 1e-5, 1e-4, "the step's kl is the reverse KL before the step");
    pl_learner_free(&L);
    if (lambda == 1.0f) {
        EXPECT(kl0 > 0 && kl1 < kl0 - 1e-4, "opd %s: reverse KL %.6f -> %.6f should fall", name, kl0, kl1);
        /* the teacher as its own student: KL 0 and no gradient (up to rounding, which Adam's first step would
         * still turn into a move of about lr) */
        pl_learner_init(&L, &teacher, T, &s);
        pl_learn_step(&L, &s, &f.b, 0, &st);
        EXPECT(st.grad_norm < 1e-5 && fabs(st.kl) < 1e-6, "opd %s, teacher = policy: grad norm %g, KL %g should be 0",
               name, st.grad_norm, st.kl);
        pl_learner_free(&L);
    } else if (mode == FKL_FULL) {
        /* λ ≠ 1, full: the scorer's target rows are λ log p_T + (1 − λ) log p_ref (here the reference is the
         * start policy itself), so the objective Σ pθ(log pθ − target) is λ·KL(pθ ‖ p_T) at the start, the step's
         * loss, and one step lowers it */
        memcpy(m.params, start, m.n_params * sizeof(float));
        float *teacher_rows = malloc((size_t)f.b.n_rows * m.cfg.vocab * sizeof(float));
        float *ref_rows = malloc((size_t)f.b.n_rows * m.cfg.vocab * sizeof(float));
        memcpy(teacher_rows, f.full, (size_t)f.b.n_rows * m.cfg.vocab * sizeof(float));
        tc_stage s1 = s;
        s1.opd.lambda = 1.0f;
        double kl_teacher = pl_fkl_value(&m, ws, &s1, &f.b);
        EXPECT(pl_opd_exact_reference(&s) && !pl_opd_exact_reference(&s1), "exact reference: full at λ ≠ 1 only");
        CHECK_OK(pl_score_opd_target(&teacher, tws, &m, ws, &s, &f.b, f.lt, f.lr, ref_rows, &err), &err);
        bool rows_ok = true;
        for (size_t i = 0; i < (size_t)f.b.n_rows * m.cfg.vocab; i++)
            rows_ok &= f.full[i] == lambda * teacher_rows[i] + (1.0f - lambda) * ref_rows[i];
        EXPECT(rows_ok, "target rows = λ·teacher + (1 − λ)·reference");
        float lr_alone[T];
        CHECK_OK(pl_score_logprobs(&m, ws, &f.b, lr_alone, &err), &err);
        EXPECT(memcmp(lr_alone, f.lr, sizeof lr_alone) == 0, "the reference's log-probs from the shared forward");
        double obj0 = pl_fkl_value(&m, ws, &s, &f.b);
        EXPECT_CLOSE(obj0, lambda * kl_teacher, 1e-5, 1e-4, "objective at the start = λ·KL(pθ ‖ p_T) (reference = start)");
        pl_learner_init(&L, &m, T, &s);
        pl_learn_step(&L, &s, &f.b, 0, &st);
        EXPECT_CLOSE(st.loss, obj0, 1e-5, 1e-4, "the step's loss is the objective before the step");
        double obj1 = pl_fkl_value(&m, ws, &s, &f.b);
        EXPECT(obj1 < obj0 - 1e-4, "opd full λ %g: objective %.6f -> %.6f should fall", (double)lambda, obj0, obj1);
        pl_learner_free(&L);
        /* teacher = reference = policy: the target is the policy itself, so no gradient at any λ (the sampled
         * (1 − λ)ℓref term of mode sampled / topk is not zero here) */
        CHECK_OK(pl_score_opd_target(&teacher, tws, &teacher, tws, &s, &f.b, f.lt, f.lr, ref_rows, &err), &err);
        pl_learner_init(&L, &teacher, T, &s);
        pl_learn_step(&L, &s, &f.b, 0, &st);
        EXPECT(st.grad_norm < 1e-5, "opd full λ %g, teacher = reference = policy: grad norm %g should be 0",
               (double)lambda, st.grad_norm);
        pl_learner_free(&L), free(teacher_rows), free(ref_rows);
    } else {
        /* λ ≠ 1 (the KL may rise: ExOPD extrapolates past the teacher): the reference's (1 − λ)ℓref term acts,
         * so the same step with ℓref = 0 lands elsewhere */
        float *after = malloc(m.n_params * sizeof(float));
        memcpy(after, m.params, m.n_params * sizeof(float));
        memcpy(m.params, start, m.n_params * sizeof(float));
        memset(f.lr, 0, sizeof f.lr);
        pl_learner_init(&L, &m, T, &s);
        pl_learn_step(&L, &s, &f.b, 0, &st);
        double diff = 0;
        for (size_t i = 0; i < m.n_params; i++) diff = fmax(diff, fabs((double)m.params[i] - after[i]));
        EXPECT(diff > 1e-5 && isfinite(st.grad_norm), "opd %s λ %g: the reference term moved the step by %g", name,
               (double)lambda, diff);
        pl_learner_free(&L), free(after);
    }
    free(start);
    model_ws_free(ws), model_ws_free(tws), model_free(&m), model_free(&teacher), free(f.full);
}

static void test_opd_teacher_dist_lowers_reverse_kl(void) {
    opd_dist_case(FKL_FULL, 1.0f);
    opd_dist_case(FKL_TOPK, 1.0f);
    opd_dist_case(FKL_FULL, 1.25f);
    opd_dist_case(FKL_TOPK, 1.25f);
}

/* Micro-batches: the tree sum of the two micro-batch gradients is the whole-batch gradient (up to rounding), so
 * one grpo step with micro_batches = 2 lands where the unsplit step lands (AdamW's first step is about
 * lr·sign(g), so near-zero gradient entries amplify rounding: tolerance 1e-3 of the step); the fixed tree and the contiguous
 * splits behave as their definitions say. */
static void test_micro_batches_match_whole_batch(void) {
    model m1, m2;
    tiny_model(&m1, 7), tiny_model(&m2, 7);
    fixture f;
    make_batch(&f, m1.cfg.vocab);
    for (int t = 0; t < T; t++) f.adv[t] = t < SEQ ? 1.0f : -0.5f;
    tc_stage s = stage_of(ALGO_GRPO);
    s.clip = 0; /* measure only: compare raw gradient steps */
    pl_learner L1, L2;
    pl_learner_init(&L1, &m1, T, &s);
    pl_learner_init_dist(&L2, &m2, T, &s, NULL, 2);
    pl_learn_stats st1, st2;
    pl_learn_step(&L1, &s, &f.b, 0, &st1);
    pl_learn_step(&L2, &s, &f.b, 0, &st2);
    EXPECT(fabs(st1.loss - st2.loss) <= 1e-7, "loss %.9g vs %.9g", st1.loss, st2.loss);
    EXPECT(fabs(st1.grad_norm - st2.grad_norm) <= 1e-5 * st1.grad_norm, "grad norm %.9g vs %.9g", st1.grad_norm,
           st2.grad_norm);
    double maxdiff = 0, maxmove = 0;
    for (size_t i = 0; i < m1.n_params; i++) maxdiff = fmax(maxdiff, fabs(m1.params[i] - m2.params[i]));
    model m0;
    tiny_model(&m0, 7);
    for (size_t i = 0; i < m1.n_params; i++) maxmove = fmax(maxmove, fabs(m1.params[i] - m0.params[i]));
    EXPECT(maxmove > 1e-3 && maxdiff < 1e-3 * maxmove, "micro-batched step differs by %g (step size %g)", maxdiff,
           maxmove);
    long lo, hi;
    tp_split(10, 3, 0, &lo, &hi);
    EXPECT(lo == 0 && hi == 4, "split 10/3 part 0: [%ld, %ld)", lo, hi);
    tp_split(10, 3, 2, &lo, &hi);
    EXPECT(lo == 7 && hi == 10, "split 10/3 part 2: [%ld, %ld)", lo, hi);
    EXPECT(tc_tree_aligned(4, 1) && tc_tree_aligned(4, 2) && tc_tree_aligned(4, 4) && tc_tree_aligned(6, 2),
           "aligned layouts");
    /* 4 over 3 learners: blocks [0,2) [2,3) [3,4) are tree nodes; 6 over 3: [0,2) [2,4) [4,6) are not */
    EXPECT(tc_tree_aligned(4, 3), "4 micro-batches, 3 learners");
    EXPECT(!tc_tree_aligned(6, 3) && !tc_tree_aligned(2, 3), "misaligned layouts");
    pl_learner_free(&L1), pl_learner_free(&L2), model_free(&m0), model_free(&m1), model_free(&m2), free(f.full);
}

/* training.recompute = layer: the same step gives bitwise the same weights (every stage kind that trains
 * through log-probs or logits), and a qwen3-0.6b training workspace keeps >= 4x fewer activation bytes. */
static void recompute_case(train_algo algo) {
    model a, b, teacher;
    tiny_model(&a, 21), tiny_model(&b, 21), tiny_model(&teacher, 22);
    a.cfg.n_layers = b.cfg.n_layers = 1; /* the tiny model has 1 layer: add depth below */
    model_free(&a), model_free(&b);
    model_config c = teacher.cfg;
    c.n_layers = 3;
    model_create(&a, &c), model_create(&b, &c);
    model_init_random(&a, 23), model_init_random(&b, 23);
    model_free(&teacher), model_create(&teacher, &c), model_init_random(&teacher, 24);
    fixture f;
    make_batch(&f, c.vocab);
    tc_stage s = stage_of(algo);
    s.fkl = FKL_TOPK;
    if (algo == ALGO_FKL) {
        model_ws *tws = model_ws_new(&teacher, T, false);
        s2d_err err;
        CHECK_OK(pl_score_fkl(&teacher, tws, &s, &f.b, &err), &err);
        model_ws_free(tws);
    }
    pl_learner La, Lb;
    pl_learner_init(&La, &a, T, &s);
    s.recompute = RECOMPUTE_LAYER;
    pl_learner_init(&Lb, &b, T, &s);
    pl_learn_stats sa, sb;
    for (int step = 0; step < 2; step++) {
        pl_learn_step(&La, &s, &f.b, step, &sa);
        pl_learn_step(&Lb, &s, &f.b, step, &sb);
    }
    EXPECT(memcmp(a.params, b.params, a.n_params * sizeof(float)) == 0 && sa.grad_norm == sb.grad_norm,
           "algo %d: recompute gives bitwise the same weights (grad norm %.9g vs %.9g)", algo, sa.grad_norm,
           sb.grad_norm);
    EXPECT(sa.grad_norm > 0, "algo %d: the step trains", algo);
    pl_learner_free(&La), pl_learner_free(&Lb), model_free(&a), model_free(&b), model_free(&teacher), free(f.full);
}

static void test_recompute_is_bitwise(void) {
    recompute_case(ALGO_SFT);
    recompute_case(ALGO_FKL);
    model_config c;
    s2d_err err;
    CHECK_OK(model_config_preset("qwen3-0.6b", &c, &err), &err);
    model shape = {.cfg = c, .q = ops_cpu()}; /* a workspace needs only the config: no weights allocated */
    model_ws *full = model_ws_new_recompute(&shape, 64, true, RECOMPUTE_NONE);
    size_t full_bytes = model_ws_activation_bytes(full);
    model_ws_free(full);
    model_ws *re = model_ws_new_recompute(&shape, 64, true, RECOMPUTE_LAYER);
    size_t re_bytes = model_ws_activation_bytes(re);
    model_ws_free(re);
    EXPECT(re_bytes * 4 <= full_bytes, "qwen3-0.6b activations: %.1f MB with recompute vs %.1f MB without (want >= 4x)",
           re_bytes / 1e6, full_bytes / 1e6);
}

/* Tensors whose size is not a multiple of 16 floats (head_dim 8: q/k norms of 8) leave alignment padding in the
 * flat buffer; the optimizer's segments must tile it (this died with "segment 7 starts at ..., expected ..."). */
static void test_unaligned_tensors_train(void) {
    model m;
    model_config c;
    s2d_err err;
    CHECK_OK(model_config_preset("qwen3-tiny", &c, &err), &err);
    c.vocab = 64, c.hidden = 32, c.intermediate = 40, c.n_layers = 2, c.head_dim = 8;
    model_create(&m, &c);
    model_init_random(&m, 31);
    EXPECT(m.n_params > 0 && model_find_tensor(&m, "model.layers.0.self_attn.q_norm.weight")->span == 16,
           "head_dim 8: the q_norm tensor is padded to 16 floats");
    fixture f;
    make_batch(&f, c.vocab);
    tc_stage s = stage_of(ALGO_SFT);
    pl_learner L;
    pl_learner_init(&L, &m, T, &s);
    pl_learn_stats st;
    pl_learn_step(&L, &s, &f.b, 0, &st);
    EXPECT(isfinite(st.loss) && st.grad_norm > 0, "an sft step on a head_dim 8 model runs (loss %g)", st.loss);
    adamw whole;
    adamw_init(&whole, m.n_params, &s.adam);
    adamw_decay_segments_from_model(&whole, &m, false, false); /* dies if the segments leave a gap */
    EXPECT(whole.n_segments == m.n_tensors, "one segment per tensor");
    adamw_free(&whole);
    pl_learner_free(&L), model_free(&m), free(f.full);
}

/* The backward's gradient-ready hook (runtime.bucket_mb): ranges tile the buffer from the top down, and each
 * range's gradient is already its final value when reported (a bucket may be reduced then). */
typedef struct {
    const model *m;
    float *snap; /* [n_params] values at report time */
    size_t next_hi;
    int calls;
    bool ordered;
} hook_log;

static void record_ready(void *user, size_t lo, size_t hi) {
    hook_log *h = user;
    h->ordered = h->ordered && hi == h->next_hi && lo < hi;
    h->next_hi = lo;
    for (size_t i = lo; i < hi; i++) h->snap[i] = h->m->grads[i];
    h->calls++;
}

static void test_grad_ready_hook(void) {
    model m;
    model_config c;
    s2d_err err;
    CHECK_OK(model_config_preset("qwen3-tiny", &c, &err), &err);
    c.vocab = 64, c.hidden = 32, c.intermediate = 40, c.n_layers = 3, c.head_dim = 8; /* padded q/k norms */
    model_create(&m, &c);
    model_init_random(&m, 7);
    model_alloc_grads(&m);
    fixture f;
    make_batch(&f, c.vocab);
    model_ws *ws = model_ws_new(&m, T, true);
    hook_log h = {.m = &m, .snap = calloc(m.n_params, sizeof(float)), .next_hi = m.n_params, .ordered = true};
    model_batch mb = {.n_seqs = NSEQ, .seq_start = f.seq_start, .tokens = f.tokens};
    CHECK_OK(model_forward(&m, ws, &mb, &err), &err);
    float dlogp[T];
    for (int t = 0; t < T; t++) dlogp[t] = f.mask[t] * (t % 3 - 1.0f);
    model_zero_grads(&m);
    model_ws_set_grad_hook(ws, record_ready, &h);
    model_backward_logprobs(&m, ws, dlogp);
    EXPECT(h.ordered && h.next_hi == 0, "ranges tile [0, %zu) from the top down (down to %zu)", m.n_params, h.next_hi);
    EXPECT(h.calls == c.n_layers + 2, "%d reports: after-layers, %d layers, the embedding", h.calls, c.n_layers);
    size_t bad = 0;
    double gsum = 0;
    for (size_t i = 0; i < m.n_params; i++) bad += h.snap[i] != m.grads[i], gsum += fabs(m.grads[i]);
    EXPECT(bad == 0 && gsum > 0, "every reported range was final (%zu floats changed later)", bad);
    model_ws_set_grad_hook(ws, NULL, NULL);
    h.calls = 0;
    model_zero_grads(&m);
    model_backward_logprobs(&m, ws, dlogp);
    EXPECT(h.calls == 0, "no hook, no reports");
    free(h.snap), model_ws_free(ws), model_free(&m), free(f.full);
}

/* The rollout queue's schedule (runtime.max_policy_lag): up to lag steps ahead, never past a drain (the
 * checkpoint steps and the stage end). */
static void test_rollout_horizon(void) {
    pl_rollouts R = {.lag = 1, .steps = 4, .ckpt_every = 2};
    long want1[4] = {1, 1, 3, 3};
    for (long t = 0; t < 4; t++) EXPECT(pl_rollouts_horizon(&R, t) == want1[t], "lag 1, every 2: horizon(%ld)", t);
    R = (pl_rollouts){.lag = 0, .steps = 5, .ckpt_every = 2};
    for (long t = 0; t < 5; t++) EXPECT(pl_rollouts_horizon(&R, t) == t, "lag 0: horizon(%ld) = %ld", t, t);
    R = (pl_rollouts){.lag = 3, .steps = 10, .ckpt_every = 0};
    long want3[10] = {3, 4, 5, 6, 7, 8, 9, 9, 9, 9};
    for (long t = 0; t < 10; t++) EXPECT(pl_rollouts_horizon(&R, t) == want3[t], "lag 3, no checkpoints: horizon(%ld)", t);
    R = (pl_rollouts){.lag = 2, .steps = 7, .ckpt_every = 3};
    long want2[7] = {2, 2, 2, 5, 5, 5, 6};
    for (long t = 0; t < 7; t++) EXPECT(pl_rollouts_horizon(&R, t) == want2[t], "lag 2, every 3: horizon(%ld)", t);
}

/* Rollouts sampled at T = 0.7 from the pre-trained tiny student: the learner's log-probs (logits / T, as verl)
 * equal the generator's behaviour log-probs, so the importance ratio e^(ℓθ − ℓbehaviour) is 1 on-policy; the
 * untempered log-probs are not (the check has teeth). A GRPO step on them clips nothing. */
static void test_tempered_logprobs_on_policy(void) {
    model m;
    s2d_err err;
    CHECK_OK(model_load(&m, "tests/fixtures/models/tiny-student", &err), &err);
    enum { NP = 6, PL = 5, NEW = 12 };
    int pstart[NP + 1];
    int32_t prompts[NP * PL];
    uint64_t ids[NP];
    for (int p = 0; p <= NP; p++) pstart[p] = p * PL;
    for (int i = 0; i < NP * PL; i++) prompts[i] = (int32_t)(3 + (i * 7) % 40);
    for (int p = 0; p < NP; p++) ids[p] = 77 + (uint64_t)p;
    const float temp = 0.7f;
    gen_params gp = {.sampling = {.temperature = temp, .top_p = 1, .top_k = 0, .seed = 11}, .max_new_tokens = NEW};
    generator *g;
    CHECK_OK(generator_new(&m, NP, PL + NEW, &g, &err), &err);
    gen_result res;
    CHECK_OK(generator_run(g, &gp, NP, pstart, prompts, ids, &res, &err), &err);
    /* the packed batch of prompt + completion, as the pipeline lays it out */
    int seq_start[NP + 1], Tn = 0;
    int32_t *tokens = xmalloc((size_t)NP * (PL + NEW) * sizeof(int32_t));
    float *mask = xcalloc((size_t)NP * (PL + NEW), sizeof(float)), *beh = xcalloc((size_t)NP * (PL + NEW), sizeof(float));
    float *adv = xcalloc((size_t)NP * (PL + NEW), sizeof(float));
    seq_start[0] = 0;
    for (int p = 0; p < NP; p++) {
        int nc = res.start[p + 1] - res.start[p];
        memcpy(tokens + Tn, prompts + pstart[p], PL * sizeof(int32_t));
        memcpy(tokens + Tn + PL, res.tokens + res.start[p], (size_t)nc * sizeof(int32_t));
        for (int k = 0; k < nc; k++) { /* completion token k is predicted at row PL - 1 + k */
            mask[Tn + PL - 1 + k] = 1;
            beh[Tn + PL - 1 + k] = res.logprobs[res.start[p] + k];
            adv[Tn + PL - 1 + k] = p % 2 ? 1.0f : -1.0f;
        }
        Tn += PL + nc;
        seq_start[p + 1] = Tn;
    }
    tc_stage s = stage_of(ALGO_GRPO);
    s.sampling.temperature = temp;
    s.grpo.tis_cap = 2.0f;
    EXPECT(pl_stage_temperature(&s) == temp, "grpo stage log-prob temperature %g", (double)pl_stage_temperature(&s));
    tc_stage sft = stage_of(ALGO_SFT);
    sft.sampling.temperature = temp;
    EXPECT(pl_stage_temperature(&sft) == 1.0f, "sft stages do not sample: temperature 1");
    pl_batch b = {.n_seqs = NP, .seq_start = seq_start, .tokens = tokens, .mask = mask, .logp_behaviour = beh, .adv = adv,
                  .temperature = pl_stage_temperature(&s)};
    pl_learner L;
    pl_learner_init(&L, &m, Tn, &s);
    float *lp = xmalloc((size_t)Tn * sizeof(float)), *lp1 = xmalloc((size_t)Tn * sizeof(float));
    pl_learn_logprobs(&L, &b, lp);
    b.temperature = 1;
    pl_learn_logprobs(&L, &b, lp1);
    b.temperature = temp;
    double worst = 0, worst1 = 0;
    int n = 0;
    for (int t = 0; t < Tn; t++) {
        if (mask[t] == 0) continue;
        n++;
        worst = fmax(worst, fabs(exp((double)lp[t] - beh[t]) - 1));
        worst1 = fmax(worst1, fabs(exp((double)lp1[t] - beh[t]) - 1));
    }
    EXPECT(n > NP, "%d completion tokens", n);
    EXPECT(worst < 1e-4, "T = 0.7: importance ratio learner/behaviour is 1 on-policy: max |rho - 1| = %g", worst);
    EXPECT(worst1 > 1e-2, "untempered log-probs are another distribution (max |rho - 1| = %g)", worst1);
    pl_learn_stats st;
    pl_learn_step(&L, &s, &b, 0, &st);
    EXPECT(st.clip_fraction == 0 && isfinite(st.loss) && st.grad_norm > 0, "on-policy step: clip %g loss %g norm %g",
           st.clip_fraction, st.loss, st.grad_norm);
    pl_learner_free(&L);
    free(lp), free(lp1), free(tokens), free(mask), free(beh), free(adv);
    gen_result_free(&res);
    generator_free(g);
    model_free(&m);
}

int main(void) {
    RUN_TEST(test_grad_ready_hook);
    RUN_TEST(test_rollout_horizon);
    RUN_TEST(test_unaligned_tensors_train);
    RUN_TEST(test_recompute_is_bitwise);
    RUN_TEST(test_micro_batches_match_whole_batch);
    RUN_TEST(test_grpo_moves_toward_reward);
    RUN_TEST(test_sft_lowers_nll);
    RUN_TEST(test_fkl_lowers_kl);
    RUN_TEST(test_opd_self_teacher_is_still);
    RUN_TEST(test_opd_teacher_dist_lowers_reverse_kl);
    RUN_TEST(test_tempered_logprobs_on_policy);
    return TEST_SUMMARY();
}
