/* stage.c: a stage's context: everything its steps use, acquired once (stage_open) and released on one path
 * (stage_close), whatever step failed; its evaluation and its reward command. */
#include "runtime/stage.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/fault_point.h"
#include "core/log.h"
#include "core/timer.h"
#include "text/verify.h"

/* ---- evaluation: greedy accuracy of the policy on the first `n` records of the eval set ---- */
bool stage_eval(stage_ctx *c, int step, stage_eval_when when, double *acc, s2d_err *err) {
    evaluator *ev = &c->ev;
    gen_result res = {0};
    if (!fault_point("evaluation", err) ||
        !generator_run(ev->gen, &ev->gp, ev->n, ev->enc.start, ev->enc.ids, ev->seq_ids, &res, err)) {
        gen_result_free(&res);
        return false;
    }
    int correct = 0;
    for (int i = 0; i < ev->n; i++) {
        int a = res.start[i];
        s2d_err e2;
        if (!tok_decode(c->tok, res.tokens + a, (size_t)(res.start[i + 1] - a), &c->r->text, &e2)) continue;
        verify_result vr;
        verify_math(c->r->text.bytes, ev->ts->answer[i], &vr);
        correct += vr.correct;
    }
    gen_result_free(&res);
    *acc = (double)correct / ev->n;
    fprintf(c->r->metrics.fp,
            "{\"stage\": \"%s\", \"step\": %d, \"global_step\": %ld, \"event\": \"eval\", \"accuracy\": %.6g, "
            "\"problems\": %d}\n",
            c->s->name, step, c->r->global_step, *acc, ev->n);
    if (when == EVAL_BEFORE)
        log_info("[%s] eval before: accuracy %.3f on %d %s problems", c->s->name, *acc, ev->n, c->s->eval_data);
    else if (when == EVAL_AFTER) log_info("[%s] eval after: accuracy %.3f", c->s->name, *acc);
    else log_info("[%s] eval at step %d: accuracy %.3f", c->s->name, step, *acc);
    return true;
}

/* ---- custom rewards (reward.command): one long-lived command per scheduler, restarted when a stage names
 * another command or timeout ---- */
static bool use_reward_cmd(pl_run *r, const tc_stage *s, s2d_err *err) {
    if (r->reward && s->reward_command && strcmp(reward_cmd_command(r->reward), s->reward_command) == 0 &&
        r->reward_timeout_s == s->reward_timeout_s)
        return true;
    reward_cmd_close(r->reward);
    r->reward = NULL;
    if (!s->reward_command) return true;
    log_info("[%s] rewards from the command \"%s\" (timeout %g s per record)", s->name, s->reward_command,
             s->reward_timeout_s);
    r->reward_timeout_s = s->reward_timeout_s;
    return reward_cmd_start(s->reward_command, s->reward_timeout_s, &r->reward, err) ||
           err_prefix(err, "%s: stage %s", s->where, s->name);
}

bool stage_command_reward(stage_ctx *c, int p, int sample, int step, float *reward, s2d_err *err) {
    const tc_stage *s = c->s;
    pl_run *r = c->r;
    char id[32], what[160];
    snprintf(id, sizeof id, "%d", p);
    snprintf(what, sizeof what, "stage %s step %d: datasets.%s record %d, sample %d", s->name, step + 1, s->data, p,
             sample);
    double v;
    if (!reward_cmd_score(r->reward, id, what, c->ts->prompt[p], r->text.bytes ? r->text.bytes : "",
                          c->ts->answer[p], &v, err))
        return false;
    *reward = (float)v;
    return true;
}

/* ---- the context ---- */

/* The models of the stage: the policy, teacher and reference each role uses, and the output (a copy of the
 * policy, trained in place: learners train it, the scheduler and generators receive its weights each step). */
static bool open_models(stage_ctx *c, s2d_err *err) {
    pl_run *r = c->r;
    const tc_stage *s = c->s;
    named_model *pol_src = pl_find_named(r, s->policy);
    CHECK(pol_src, "validated config names an unknown model %s", s->policy);
    if (!fault_point("load the policy", err) || !pl_ensure_loaded(r, pol_src, err)) return false;
    named_model *tea = s->teacher[0] ? pl_find_named(r, s->teacher) : NULL;
    named_model *refm = s->reference[0] ? pl_find_named(r, s->reference) : NULL;
    /* each role loads what it uses: scorers the teacher and reference, generators the teacher of fkl */
    if (tea && (c->is_scorer || (c->is_gen && s->algo == ALGO_FKL)) &&
        (!fault_point("load the teacher", err) || !pl_ensure_loaded(r, tea, err)))
        return false;
    if (refm && c->is_scorer && (!fault_point("load the reference", err) || !pl_ensure_loaded(r, refm, err)))
        return false;
    c->tok = pol_src->tok;
    if (!c->tok)
        return err_set(err, "%s: stage %s: the policy '%s' has no tokenizer (give models.%s.tokenizer)", s->where,
                       s->name, s->policy, s->policy);
    if (tea && (pl_cfg_of(r, tea)->vocab != pol_src->m.cfg.vocab || !tea->tok ||
                tok_vocab_size(tea->tok) != tok_vocab_size(c->tok)))
        return err_set(err, "%s: stage %s: teacher '%s' (vocab %d) and policy '%s' (vocab %d) do not share a vocabulary",
                       s->where, s->name, s->teacher, pl_cfg_of(r, tea)->vocab, s->policy, pol_src->m.cfg.vocab);
    if (!fault_point("the output model", err)) return false;
    r->models = xrealloc(r->models, (size_t)(r->n_models + 1) * sizeof(named_model));
    pol_src = pl_find_named(r, s->policy); /* the table moved */
    c->teacher = s->teacher[0] ? pl_find_named(r, s->teacher) : NULL;
    c->reference = s->reference[0] ? pl_find_named(r, s->reference) : NULL;
    named_model *out = &r->models[r->n_models++]; /* freed with the run's models from here on */
    memset(out, 0, sizeof *out);
    snprintf(out->name, sizeof out->name, "%s", s->output);
    pl_model_copy(&out->m, &pol_src->m);
    out->loaded = true, out->tok = pol_src->tok, out->tok_dir = pol_src->tok_dir, out->def = -1;
    c->out = out;
    c->policy = &out->m;
    /* Reference: named, or the policy's initial weights when the objective needs one (scorers only). */
    c->need_ref = (s->algo == ALGO_OPD && s->opd.lambda != 1.0f) || (s->algo == ALGO_GRPO && s->grpo.kl_beta > 0);
    if (c->need_ref && c->is_scorer) {
        if (c->reference) c->ref = &c->reference->m;
        else pl_model_copy(&c->ref_copy, c->policy), c->own_ref = true, c->ref = &c->ref_copy;
    }
    return true;
}

/* Every host buffer of the step loop, placed in the arena a (a measuring arena: only sizes them). */
static void place_step_buffers(stage_ctx *c, arena *a) {
    const tc_stage *s = c->s;
    const size_t B = (size_t)c->B, P = (size_t)c->P, T = (size_t)c->maxT;
    pl_batch *b = &c->b;
    b->seq_start = arena_alloc(a, (B + 1) * sizeof(int), 64);
    b->tokens = arena_alloc(a, T * sizeof(int32_t), 64);
    b->mask = arena_floats(a, T);
    b->logp_behaviour = arena_floats(a, T);
    b->adv = arena_floats(a, T);
    b->logp_teacher = arena_floats(a, T);
    b->logp_ref = c->need_ref ? arena_floats(a, T) : NULL;
    b->row_slot = arena_alloc(a, T * sizeof(int), 64);
    b->topk_ids = NULL, b->topk_logp = NULL, b->full_logp = NULL;
    if (c->fkl_logits && s->teacher_dist == DIST_TOPK) {
        b->topk_ids = arena_alloc(a, T * (size_t)s->teacher_topk * sizeof(int32_t), 64);
        b->topk_logp = arena_floats(a, T * (size_t)s->teacher_topk);
    } else if (c->fkl_logits) {
        b->full_logp = arena_floats(a, T * (size_t)c->V);
    }
    c->rewards = arena_floats(a, B);
    c->adv = arena_floats(a, B);
    c->zero_var = arena_alloc(a, P * sizeof(bool), 64);
    c->seen = arena_alloc(a, (size_t)c->enc.n, 64);
    c->mseq = arena_alloc(a, (B + 2) * sizeof(int), 64);
    c->mb_seq = arena_alloc(a, (B + 2) * sizeof(int), 64);
    c->prompt_len = arena_alloc(a, B * sizeof(int32_t), 64);
    c->old_all = s->minibatches > 1 ? arena_floats(a, T) : NULL;
    c->ref_rows = c->is_scorer && c->fkl_logits && pl_opd_exact_reference(s) ? arena_floats(a, T * (size_t)c->V) : NULL;
    c->times = arena_alloc(a, (size_t)(c->tp->size + 1) * sizeof(step_times), 64);
    c->time_counts = arena_alloc(a, (size_t)(c->tp->size + 1) * sizeof(size_t), 64);
}

/* Learners: the trained policy's optimizer shard and a workspace for the largest micro-batch. */
static void open_learner(stage_ctx *c) {
    const tc_stage *s = c->s;
    pl_learner *learner = &c->learner;
    int max_micro_tokens = 0;
    for (int mb = 0; mb < c->M; mb++) {
        long lo, hi;
        tp_split(c->B, c->M, mb, &lo, &hi);
        max_micro_tokens = S2D_MAX(max_micro_tokens, (int)(hi - lo) * c->max_seq);
    }
    pl_learner_init_dist(learner, c->policy, c->maxT, s, c->tp, c->M);
    c->learner_open = true;
    learner->reduce = c->r->tc->reduce;
    if (learner->n_learners > 1 && learner->index == 0)
        log_info("%s: gradients reduced across %d learners %s", s->name, learner->n_learners,
                 learner->reduce == TP_REDUCE_FAST ? "by the transport's reduce-scatter (runtime.reduce: fast)"
                                                   : "over the fixed micro-batch tree (runtime.reduce: deterministic)");
    model_ws_free(learner->ws);
    learner->ws = model_ws_new_recompute(c->policy, max_micro_tokens, true, s->recompute);
    if (learner->reduce == TP_REDUCE_FAST) pl_learner_set_buckets(learner, c->r->tc->bucket_mb);
}

/* Scheduler: the greedy evaluator on the stage's eval set. */
static bool open_evaluator(stage_ctx *c, s2d_err *err) {
    const tc_stage *s = c->s;
    evaluator *ev = &c->ev;
    ev->ts = &c->r->data[tc_find_dataset(c->r->tc, s->eval_data)];
    if (!fault_point("encode the eval set", err) || !pl_encode_set(c->r->tc, c->tok, ev->ts, -1, &ev->enc, err))
        return err_prefix(err, "datasets.%s", s->eval_data);
    ev->n = S2D_MIN(s->eval_problems, ev->enc.n);
    ev->gp = (gen_params){.sampling = {.temperature = 0, .top_p = 1}, .max_new_tokens = s->eval_max_new_tokens,
                          .n_stop = c->n_stop};
    memcpy(ev->gp.stop_ids, c->stops, sizeof c->stops);
    if (!fault_point("the eval generator", err) ||
        !generator_new(c->policy, S2D_MIN(ev->n, 64),
                       S2D_MIN(ev->enc.max_prompt + s->eval_max_new_tokens, c->policy->cfg.max_pos), &ev->gen, err))
        return false;
    ev->seq_ids = xmalloc((size_t)ev->n * sizeof(uint64_t));
    for (int i = 0; i < ev->n; i++) ev->seq_ids[i] = (uint64_t)i;
    return true;
}

/* Generators and the scheduler: the rollout queue (runtime.max_policy_lag), the generator, the refill rounds. */
static bool open_generation(stage_ctx *c, s2d_err *err) {
    const tc_stage *s = c->s;
    const train_config *tc = c->r->tc;
    pl_rollouts *rq = &c->rq;
    pl_rollouts_init(rq, c->tp, c->generate, c->P, c->G, c->enc.max_prompt, s->max_new_tokens, tc->max_policy_lag,
                     s->steps, s->ckpt_every, s->name);
    rq->pstart = c->enc.start, rq->pids = c->enc.ids;
    const model *gen_model = s->algo == ALGO_FKL ? &c->teacher->m : c->policy;
    if (c->is_gen && c->generate &&
        (!fault_point("the generator", err) ||
         !generator_new(gen_model, S2D_MIN(c->B, 64), c->max_seq, &c->gen, err)))
        return false;
    c->gp = (gen_params){.sampling = s->sampling, .max_new_tokens = s->max_new_tokens, .n_stop = c->n_stop};
    c->gp.sampling.seed = tc->seed * 1000003u + (uint64_t)c->si;
    memcpy(c->gp.stop_ids, c->stops, sizeof c->stops);
    /* grpo.dynamic_sampling.mode: refill (refill.c): more generation rounds after the first; they share the
     * round buffers of the rollout queue (the queue is idle then: lag 0) */
    c->refill = s->dyn == DYN_REFILL && c->generate && (c->is_sched || c->is_gen);
    c->rf = (pl_refill){.tp = c->tp, .gen = c->gen, .gp = &c->gp, .P = c->P, .G = c->G, .B = c->B, .n_gen = rq->n_gen,
                        .max_new = s->max_new_tokens, .is_sched = c->is_sched, .is_gen = c->is_gen,
                        .enc_start = c->enc.start, .enc_ids = c->enc.ids, .gstart = rq->gstart,
                        .gstart_local = rq->gstart_local, .gids = rq->gids, .seq_ids = rq->seq_ids, .pack = rq->pack,
                        .packs = rq->packs, .pack_words = rq->pack_words, .pack_counts = rq->pack_counts};
    if (c->refill) pl_refill_init(&c->rf), c->refill_open = true;
    return true;
}

/* Scheduler: model sizes for the stage's compute (policy, generator, scored models). */
static void budget_stage(stage_ctx *c, const model_config *gen_cfg) {
    const tc_stage *s = c->s;
    pl_run *r = c->r;
    bool scores_teacher = s->algo == ALGO_OPD || c->fkl_logits;
    double ref_params =
        !c->need_ref ? 0 : (double)model_config_params(c->reference ? pl_cfg_of(r, c->reference) : &c->policy->cfg);
    pl_budget_stage(r->budget, c->si, (double)model_config_params(&c->policy->cfg),
                    c->generate ? (double)model_config_params(gen_cfg) : 0,
                    (scores_teacher ? (double)model_config_params(pl_cfg_of(r, c->teacher)) : 0) + ref_params);
}

bool stage_open(stage_ctx *c, pl_run *r, int si, stage_summary *sum, s2d_err *err) {
    memset(c, 0, sizeof *c);
    const train_config *tc = r->tc;
    const tc_stage *s = &tc->stages[si];
    transport *tp = r->tp;
    c->r = r, c->si = si, c->s = s, c->tp = tp, c->sum = sum;
    c->is_sched = tp_plays(tp, ROLE_SCHEDULER), c->is_gen = tp_plays(tp, ROLE_GENERATOR);
    c->is_scorer = tp_plays(tp, ROLE_SCORER), c->is_learner = tp_plays(tp, ROLE_LEARNER);
    c->learner_root = tp->local || (tp->role == ROLE_LEARNER && tp->index == 0);
    c->n_scorers = tp->local ? 1 : tp->n_score;
    memset(sum, 0, sizeof *sum);
    if (!open_models(c, err)) return false;

    c->n_stop = pl_stop_ids(tc, c->tok, c->stops, GEN_MAX_STOP);
    c->di = tc_find_dataset(tc, s->data);
    c->ts = &r->data[c->di];
    if (!fault_point("encode the stage data", err) ||
        !pl_encode_set(tc, c->tok, c->ts, c->n_stop ? c->stops[0] : -1, &c->enc, err))
        return err_prefix(err, "datasets.%s", s->data);

    c->generate = s->algo != ALGO_SFT;
    const model_config *gen_cfg = s->algo == ALGO_FKL ? pl_cfg_of(r, c->teacher) : &c->policy->cfg;
    c->P = s->prompts_per_step, c->G = s->group_size, c->B = c->P * c->G, c->M = s->micro_batches;
    c->max_seq = c->enc.max_prompt + (c->generate ? s->max_new_tokens : c->enc.max_target);
    if (c->max_seq > gen_cfg->max_pos)
        return err_set(err, "%s: stage %s: prompt (%d tokens) + max_new_tokens (%d) exceed the model's %d positions",
                       s->where, s->name, c->enc.max_prompt, s->max_new_tokens, gen_cfg->max_pos);
    c->maxT = c->B * c->max_seq, c->V = c->policy->cfg.vocab;
    c->b.temperature = pl_stage_temperature(s); /* log-probs at the sampling temperature */
    c->fkl_logits = s->teacher_dist != DIST_NONE; /* fkl full / topk, opd full / topk */
    const char *dist_key = s->algo == ALGO_OPD ? "opd" : "fkl";
    if (c->fkl_logits && s->teacher_dist == DIST_TOPK && s->teacher_topk > c->V)
        return err_set(err, "%s: stage %s: %s.topk %d > vocabulary %d", s->where, s->name, dist_key, s->teacher_topk,
                       c->V);
    if (s->algo == ALGO_OPD && c->fkl_logits && !ops_default()->host_memory)
        return err_set(err, "%s: stage %s: opd.mode %s runs on the CPU backend only (no CUDA kernel yet): use opd.mode: "
                            "sampled on this device", s->where, s->name, s->teacher_dist == DIST_FULL ? "full" : "topk");

    /* the step buffers: measured, then placed in one zero-filled arena */
    if (!fault_point("the step buffers", err)) return false;
    arena measure;
    arena_measure(&measure);
    place_step_buffers(c, &measure);
    arena_init(&c->mem, measure.used);
    place_step_buffers(c, &c->mem);
    if (c->fkl_logits) /* device backends: the teacher data's device side (NULL on the CPU) */
        c->b.fkl_dev = pl_fkl_buffers_new(ops_default(), c->maxT, s->teacher_topk, c->V, s->teacher_dist == DIST_FULL);

    if (!open_generation(c, err)) return false;
    if (c->is_learner) {
        if (!fault_point("the learner", err)) return false;
        open_learner(c);
    }
    if (c->is_scorer && c->teacher && s->algo != ALGO_SFT && s->algo != ALGO_GRPO) {
        if (!fault_point("the teacher workspace", err)) return false;
        c->teacher_ws = model_ws_new(&c->teacher->m, c->maxT, false);
    }
    if (c->ref) {
        if (!fault_point("the reference workspace", err)) return false;
        c->ref_ws = model_ws_new(c->ref, c->maxT, false);
    }
    if (r->budget) budget_stage(c, gen_cfg);
    c->has_eval = s->eval_data[0] != 0 && c->is_sched;
    if (c->has_eval && !open_evaluator(c, err)) return false;
    if (c->is_sched && s->algo == ALGO_GRPO && (!fault_point("the reward command", err) || !use_reward_cmd(r, s, err)))
        return false;
    c->labelled = s->algo == ALGO_GRPO || s->algo == ALGO_SFT;
    ds_sampler_init(&c->dsamp, c->enc.n, tc->seed + 7919u * (uint64_t)(si + 1));
    c->cur = (stage_cursor){.dsamp = &c->dsamp, .seen = c->seen, .n = c->enc.n, .sampling_seed = c->gp.sampling.seed};
    if (r->resume.active && r->resume.stage == si && r->resume.step > 0) { /* continue mid-stage */
        if (!fault_point("resume mid-stage", err) ||
            !pl_resume_stage(r, si, c->out, c->is_learner ? &c->learner : NULL, &c->cur, err))
            return false;
        c->step0 = (int)r->resume.step;
        c->version = c->step0;
    }
    c->rq.cur = &c->cur, c->rq.gen = c->gen, c->rq.gp = &c->gp, c->rq.next = c->step0;
    tp_layout(tp, c->layout, sizeof c->layout);
    return true;
}

void stage_close(stage_ctx *c) {
    if (c->learner_open) pl_learner_free(&c->learner);
    if (c->refill_open) pl_refill_free(&c->rf);
    model_ws_free(c->teacher_ws), model_ws_free(c->ref_ws);
    generator_free(c->gen);
    generator_free(c->ev.gen), pl_free_enc_set(&c->ev.enc), free(c->ev.seq_ids);
    if (c->own_ref) model_free(&c->ref_copy);
    if (c->policy) model_free_grads(c->policy);
    pl_fkl_buffers_free(c->b.fkl_dev);
    pl_rollouts_free(&c->rq);
    arena_free(&c->mem);
    ds_sampler_free(&c->dsamp);
    pl_free_enc_set(&c->enc);
    memset(c, 0, sizeof *c);
}

bool pl_run_stage(pl_run *r, int si, stage_summary *sum, s2d_err *err) {
    stage_ctx c;
    bool ok = stage_open(&c, r, si, sum, err) && stage_steps(&c, err);
    stage_close(&c);
    return ok;
}
