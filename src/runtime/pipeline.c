/* pipeline.c: the stage runner of `s2d train` (single process: generator, scorers and learner are local). */
#include "runtime/pipeline.h"
#include "runtime/run.h"
#include "runtime/rollouts.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/log.h"
#include "runtime/step_metrics.h"
#include "core/timer.h"
#include "model/generate.h"
#include "text/tokenizer.h"
#include "text/verify.h"

/* A text set rendered with the chat template and tokenized (CSR). */
typedef struct {
    int n;
    int *start;      /* [n + 1] prompt ids */
    int32_t *ids;
    int *tstart;     /* [n + 1] SFT target ids (+ stop) */
    int32_t *tids;
    int max_prompt, max_target;
} enc_set;

bool pl_mkdir_p(const char *path, s2d_err *err) {
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(buf, 0777) != 0 && errno != EEXIST) return err_set(err, "%s: cannot create: %s", buf, strerror(errno));
        *p = '/';
    }
    if (mkdir(buf, 0777) != 0 && errno != EEXIST) return err_set(err, "%s: cannot create: %s", buf, strerror(errno));
    return true;
}

named_model *pl_find_named(pl_run *r, const char *name) {
    for (int i = 0; i < r->n_models; i++)
        if (strcmp(r->models[i].name, name) == 0) return &r->models[i];
    return NULL;
}

static bool ensure_loaded(pl_run *r, named_model *nm, s2d_err *err) {
    if (nm->loaded) return true;
    const tc_model *d = &r->tc->models[nm->def];
    if (d->path) {
        log_info("loading model %s from %s", nm->name, d->path);
        if (!model_load(&nm->m, d->path, err)) return err_prefix(err, "model %s", nm->name);
    } else {
        model_create(&nm->m, &d->cfg);
        model_init_random(&nm->m, d->init_seed);
    }
    nm->loaded = true;
    if (nm->tok && tok_vocab_size(nm->tok) > nm->m.cfg.vocab)
        return err_set(err, "%s: model %s: its tokenizer (%s) has %d tokens but the model's vocabulary is %d",
                       d->where, nm->name, nm->tok_dir, tok_vocab_size(nm->tok), nm->m.cfg.vocab);
    return true;
}

static void model_copy(model *dst, const model *src) {
    model_create(dst, &src->cfg);
    model_params_copy(dst, src);
    dst->source_bf16 = src->source_bf16;
}

/* The token string of id in tok, or NULL (tokenizer_config.json's bos/eos when the source has none). */
static const char *token_or_null(const tokenizer *tok, int id) {
    return tok && id >= 0 && id < tok_vocab_size(tok) ? tok_id_to_token(tok, id) : NULL;
}

/* OUT/models/<name>/: an HF directory (config, weights in the source's dtype: bf16 in, bf16 out, the fp32 masters
 * stay in the checkpoints; generation_config.json) with the tokenizer side of the model's tokenizer directory. */
static bool save_model(pl_run *r, const named_model *nm, s2d_err *err) {
    char dir[4096], models_dir[4096];
    path_join(models_dir, sizeof models_dir, r->out, "models");
    path_join(dir, sizeof dir, models_dir, nm->name);
    if (!pl_mkdir_p(dir, err)) return false;
    if (!model_save(&nm->m, dir, nm->m.source_bf16, err)) return false;
    if (!nm->tok_dir) return true;
    const model_config *c = &nm->m.cfg;
    return tok_copy_files(nm->tok_dir, dir, token_or_null(nm->tok, c->bos_id),
                          c->n_eos ? token_or_null(nm->tok, c->eos_ids[0]) : NULL, err);
}

/* ---- data ---- */
static bool load_text_set(const tc_dataset *d, text_set *ts, s2d_err *err) {
    memset(ts, 0, sizeof *ts);
    if (d->arith) {
        arith_set as;
        if (!arith_make(&d->arith_p, d->split, d->size, &as, err)) return err_prefix(err, "%s: datasets.%s", d->where, d->name);
        ts->n = as.n, ts->prompt = as.problem, ts->answer = as.answer, ts->target = as.solution;
        return true; /* ownership moves to ts */
    }
    dataset ds;
    ds_load_opts o = {.format = d->format};
    if (!dataset_load(&ds, d->file, &o, err)) return err_prefix(err, "datasets.%s", d->name);
    int n = d->size > 0 ? S2D_MIN(d->size, ds.n) : ds.n;
    if (n == 0) {
        dataset_free(&ds);
        return err_set(err, "%s: dataset %s has no records", d->file, d->name);
    }
    ts->n = n;
    ts->prompt = xmalloc((size_t)n * sizeof(char *));
    ts->answer = xmalloc((size_t)n * sizeof(char *));
    ts->target = xmalloc((size_t)n * sizeof(char *));
    for (int i = 0; i < n; i++) {
        ts->prompt[i] = xstrdup(ds.rec[i].prompt);
        ts->answer[i] = xstrdup(ds.rec[i].answer);
        size_t L = strlen(ds.rec[i].answer) + 16;
        ts->target[i] = xmalloc(L);
        snprintf(ts->target[i], L, "\\boxed{%s}", ds.rec[i].answer);
    }
    dataset_free(&ds);
    return true;
}

static void free_text_set(text_set *ts) {
    for (int i = 0; i < ts->n; i++) free(ts->prompt[i]), free(ts->answer[i]), free(ts->target[i]);
    free(ts->prompt), free(ts->answer), free(ts->target);
}

/* Stop ids of the template, looked up by name in this tokenizer (the demo tokenizer has its own ids). */
static int stop_ids(const train_config *tc, const tokenizer *tok, int32_t *ids, int max) {
    static const char *const qwen[] = {"<|im_end|>", "<|endoftext|>", NULL};
    static const char *const llama[] = {"<|eot_id|>", "<|end_of_text|>", "<|eom_id|>", NULL};
    static const char *const none[] = {"<|endoftext|>", "<|end_of_text|>", NULL};
    const char *const *names = tc->chat == CHAT_LLAMA3 ? llama : tc->chat == CHAT_NONE ? none : qwen;
    int n = 0;
    for (int i = 0; names[i] && n < max; i++) {
        int32_t id = tok_token_id(tok, names[i]);
        if (id >= 0) ids[n++] = id;
    }
    return n;
}

static bool encode_set(const train_config *tc, const tokenizer *tok, const text_set *ts, int32_t stop, enc_set *e,
                       s2d_err *err) {
    memset(e, 0, sizeof *e);
    e->n = ts->n;
    e->start = xmalloc((size_t)(ts->n + 1) * sizeof(int));
    e->tstart = xmalloc((size_t)(ts->n + 1) * sizeof(int));
    tok_ids p = {0}, t = {0};
    e->start[0] = e->tstart[0] = 0;
    for (int i = 0; i < ts->n; i++) {
        char *text = chat_render_problem(tc->chat, ts->prompt[i], tc->instruction);
        int n1 = tok_encode(tok, text, strlen(text), &p, err);
        free(text);
        if (n1 < 0) return err_prefix(err, "prompt %d", i);
        int n2 = tok_encode(tok, ts->target[i], strlen(ts->target[i]), &t, err);
        if (n2 < 0) return err_prefix(err, "target %d", i);
        if (stop >= 0) {
            tok_ids one = {0};
            (void)one;
            if (t.n == t.cap) {
                t.cap = t.cap ? 2 * t.cap : 16;
                t.ids = xrealloc(t.ids, t.cap * sizeof(int32_t));
            }
            t.ids[t.n++] = stop, n2++;
        }
        e->start[i + 1] = (int)p.n, e->tstart[i + 1] = (int)t.n;
        e->max_prompt = S2D_MAX(e->max_prompt, n1);
        e->max_target = S2D_MAX(e->max_target, n2);
    }
    e->ids = p.ids, e->tids = t.ids;
    return true;
}

static void free_enc_set(enc_set *e) { free(e->start), free(e->ids), free(e->tstart), free(e->tids); }

/* ---- evaluation: greedy accuracy of m on the first `problems` records ---- */
typedef struct {
    generator *gen;
    enc_set enc;
    const text_set *ts;
    int n;
    gen_params gp;
    int *pstart;
    uint64_t *seq_ids;
} evaluator;

static double evaluate(pl_run *r, const model *m, const tokenizer *tok, evaluator *ev, s2d_err *err, bool *ok) {
    gen_result res = {0};
    *ok = generator_run(ev->gen, &ev->gp, ev->n, ev->enc.start, ev->enc.ids, ev->seq_ids, &res, err);
    if (!*ok) return 0;
    int correct = 0;
    for (int i = 0; i < ev->n; i++) {
        int a = res.start[i];
        s2d_err e2;
        if (!tok_decode(tok, res.tokens + a, (size_t)(res.start[i + 1] - a), &r->text, &e2)) continue;
        verify_result vr;
        verify_math(r->text.bytes, ev->ts->answer[i], &vr);
        correct += vr.correct;
    }
    gen_result_free(&res);
    (void)m;
    return (double)correct / ev->n;
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

/* Sequence i's reward from the command: its problem is record p of the stage's data. */
static bool command_reward(pl_run *r, const tc_stage *s, const text_set *ts, int p, int sample, int step, float *reward,
                           s2d_err *err) {
    char id[32], what[160];
    snprintf(id, sizeof id, "%d", p);
    snprintf(what, sizeof what, "stage %s step %d: datasets.%s record %d, sample %d", s->name, step + 1, s->data, p,
             sample);
    double v;
    if (!reward_cmd_score(r->reward, id, what, ts->prompt[p], r->text.bytes ? r->text.bytes : "", ts->answer[p], &v,
                          err))
        return false;
    *reward = (float)v;
    return true;
}

/* ---- one stage ---- */
static void json_num(FILE *f, const char *key, double v) {
    if (isfinite(v)) fprintf(f, ", \"%s\": %.6g", key, v);
    else fprintf(f, ", \"%s\": null", key);
}

/* Architecture of a named model, loaded here or not. */
static const model_config *cfg_of(pl_run *r, const named_model *nm) {
    return nm->loaded ? &nm->m.cfg : &r->tc->models[nm->def].cfg;
}

/* Per-rank timing of one step, gathered by the scheduler. */
typedef struct {
    int32_t role, pad;
    double gen, score, learn, sync;
    double wall; /* this rank's own step span: busy fractions are phases over it (so within 0..1) */
} step_times;

static bool run_stage(pl_run *r, int si, stage_summary *sum, s2d_err *err) {
    const train_config *tc = r->tc;
    const tc_stage *s = &tc->stages[si];
    transport *tp = r->tp;
    const bool is_sched = tp_plays(tp, ROLE_SCHEDULER), is_gen = tp_plays(tp, ROLE_GENERATOR),
               is_scorer = tp_plays(tp, ROLE_SCORER), is_learner = tp_plays(tp, ROLE_LEARNER);
    const bool lroot = tp->local || (tp->role == ROLE_LEARNER && tp->index == 0);
    const int n_score = tp->local ? 1 : tp->n_score;
    memset(sum, 0, sizeof *sum);
    named_model *pol_src = pl_find_named(r, s->policy);
    CHECK(pol_src, "validated config names an unknown model %s", s->policy);
    if (!ensure_loaded(r, pol_src, err)) return false;
    named_model *tea = s->teacher[0] ? pl_find_named(r, s->teacher) : NULL;
    named_model *refm = s->reference[0] ? pl_find_named(r, s->reference) : NULL;
    /* each role loads what it uses: scorers the teacher and reference, generators the teacher of fkl */
    if (tea && (is_scorer || (is_gen && s->algo == ALGO_FKL)) && !ensure_loaded(r, tea, err)) return false;
    if (refm && is_scorer && !ensure_loaded(r, refm, err)) return false;
    tokenizer *tok = pol_src->tok;
    if (!tok) return err_set(err, "%s: stage %s: the policy '%s' has no tokenizer (give models.%s.tokenizer)", s->where,
                             s->name, s->policy, s->policy);
    if (tea && (cfg_of(r, tea)->vocab != pol_src->m.cfg.vocab || !tea->tok || tok_vocab_size(tea->tok) != tok_vocab_size(tok)))
        return err_set(err, "%s: stage %s: teacher '%s' (vocab %d) and policy '%s' (vocab %d) do not share a vocabulary",
                       s->where, s->name, s->teacher, cfg_of(r, tea)->vocab, s->policy, pol_src->m.cfg.vocab);

    /* The output model: a copy of the policy, trained in place (every rank holds one; learners train it,
     * the scheduler and generators receive its weights after each step). */
    r->models = xrealloc(r->models, (size_t)(r->n_models + 1) * sizeof(named_model));
    pol_src = pl_find_named(r, s->policy), tea = s->teacher[0] ? pl_find_named(r, s->teacher) : NULL;
    refm = s->reference[0] ? pl_find_named(r, s->reference) : NULL;
    named_model *out = &r->models[r->n_models++];
    memset(out, 0, sizeof *out);
    snprintf(out->name, sizeof out->name, "%s", s->output);
    model_copy(&out->m, &pol_src->m);
    out->loaded = true, out->tok = pol_src->tok, out->tok_dir = pol_src->tok_dir, out->def = -1;
    model *policy = &out->m;

    /* Reference: named, or the policy's initial weights when the objective needs one (scorers only). */
    bool need_ref = (s->algo == ALGO_OPD && s->opd.lambda != 1.0f) || (s->algo == ALGO_GRPO && s->grpo.kl_beta > 0);
    model ref_copy = {0};
    const model *ref = NULL;
    if (need_ref && is_scorer) {
        if (refm) ref = &refm->m;
        else model_copy(&ref_copy, policy), ref = &ref_copy;
    }

    int32_t stops[GEN_MAX_STOP];
    int n_stop = stop_ids(tc, tok, stops, GEN_MAX_STOP);
    int di = tc_find_dataset(tc, s->data);
    const text_set *ts = &r->data[di];
    enc_set enc;
    if (!encode_set(tc, tok, ts, n_stop ? stops[0] : -1, &enc, err)) return err_prefix(err, "datasets.%s", s->data);

    bool generate = s->algo != ALGO_SFT;
    const model_config *gen_cfg = s->algo == ALGO_FKL ? cfg_of(r, tea) : &policy->cfg;
    const model *gen_model = s->algo == ALGO_FKL ? &tea->m : policy;
    int P = s->prompts_per_step, G = s->group_size, B = P * G, M = s->micro_batches;
    int max_seq = enc.max_prompt + (generate ? s->max_new_tokens : enc.max_target);
    if (max_seq > gen_cfg->max_pos)
        return err_set(err, "%s: stage %s: prompt (%d tokens) + max_new_tokens (%d) exceed the model's %d positions",
                       s->where, s->name, enc.max_prompt, s->max_new_tokens, gen_cfg->max_pos);
    int maxT = B * max_seq, V = policy->cfg.vocab;

    /* Every buffer of the step loop, sized once. */
    pl_batch b = {0};
    b.temperature = pl_stage_temperature(s); /* log-probs at the sampling temperature */
    b.seq_start = xmalloc((size_t)(B + 1) * sizeof(int));
    b.tokens = xmalloc((size_t)maxT * sizeof(int32_t));
    b.mask = xcalloc((size_t)maxT, sizeof(float));
    b.logp_behaviour = xcalloc((size_t)maxT, sizeof(float));
    b.adv = xcalloc((size_t)maxT, sizeof(float));
    b.logp_teacher = xcalloc((size_t)maxT, sizeof(float));
    b.logp_ref = need_ref ? xcalloc((size_t)maxT, sizeof(float)) : NULL;
    b.row_slot = xmalloc((size_t)maxT * sizeof(int));
    bool fkl_logits = s->algo == ALGO_FKL && s->fkl != FKL_SAMPLED;
    if (fkl_logits && s->fkl == FKL_TOPK) {
        if (s->topk > V) return err_set(err, "%s: stage %s: fkl.topk %d > vocabulary %d", s->where, s->name, s->topk, V);
        b.topk_ids = xmalloc((size_t)maxT * s->topk * sizeof(int32_t));
        b.topk_logp = xmalloc((size_t)maxT * s->topk * sizeof(float));
    } else if (fkl_logits) {
        b.full_logp = xmalloc((size_t)maxT * V * sizeof(float));
    }
    if (fkl_logits) { /* device backends: the teacher data's device side (NULL on the CPU) */
        b.fkl_dev = pl_fkl_buffers_new(ops_default(), maxT, s->topk, V, s->fkl == FKL_FULL);
    }
    int *idx = NULL; /* scheduler: [P] prompt indices of the step's rollouts (a queue slot's) */
    float *rewards = xcalloc((size_t)B, sizeof(float)), *adv = xcalloc((size_t)B, sizeof(float));
    bool *zero_var = xcalloc((size_t)P, sizeof(bool));
    unsigned char *seen = xcalloc((size_t)enc.n, 1);
    int *mseq = xmalloc((size_t)(B + 2) * sizeof(int));
    int32_t *prompt_len = xmalloc((size_t)B * sizeof(int32_t));
    float *old_all = s->minibatches > 1 ? xmalloc((size_t)maxT * sizeof(float)) : NULL; /* [T] fixed old policy */
    int *mb_seq = xmalloc((size_t)(B + 2) * sizeof(int));
    /* generation rounds and the rollouts sampled ahead of the learners (runtime.max_policy_lag) */
    pl_rollouts rq;
    pl_rollouts_init(&rq, tp, generate, P, G, enc.max_prompt, s->max_new_tokens, tc->max_policy_lag, s->steps,
                     s->ckpt_every, s->name);
    rq.pstart = enc.start, rq.pids = enc.ids;
    step_times *times = xmalloc((size_t)(tp->size + 1) * sizeof(step_times));
    size_t *time_counts = xmalloc((size_t)(tp->size + 1) * sizeof(size_t));

    pl_learner L = {0};
    if (is_learner) {
        int max_micro_tokens = 0; /* the learner's workspace holds one micro-batch */
        for (int mb = 0; mb < M; mb++) {
            long lo, hi;
            tp_split(B, M, mb, &lo, &hi);
            max_micro_tokens = S2D_MAX(max_micro_tokens, (int)(hi - lo) * max_seq);
        }
        pl_learner_init_dist(&L, policy, maxT, s, tp, M);
        L.reduce = tc->reduce;
        if (L.n_learners > 1 && L.index == 0)
            log_info("%s: gradients reduced across %d learners %s", s->name, L.n_learners,
                     L.reduce == TP_REDUCE_FAST ? "by the transport's reduce-scatter (runtime.reduce: fast)"
                                                : "over the fixed micro-batch tree (runtime.reduce: deterministic)");
        model_ws_free(L.ws);
        L.ws = model_ws_new_recompute(policy, max_micro_tokens, true, s->recompute);
        if (L.reduce == TP_REDUCE_FAST) pl_learner_set_buckets(&L, tc->bucket_mb);
    }
    model_ws *tws = (is_scorer && tea && s->algo != ALGO_SFT && s->algo != ALGO_GRPO) ? model_ws_new(&tea->m, maxT, false) : NULL;
    model_ws *rws = ref ? model_ws_new(ref, maxT, false) : NULL;
    generator *gen = NULL;
    if (is_gen && generate && !generator_new(gen_model, S2D_MIN(B, 64), max_seq, &gen, err)) return false;
    gen_params gp = {.sampling = s->sampling, .max_new_tokens = s->max_new_tokens, .n_stop = n_stop};
    gp.sampling.seed = tc->seed * 1000003u + (uint64_t)si;
    memcpy(gp.stop_ids, stops, sizeof stops);
    /* grpo.dynamic_sampling.mode: refill (refill.c): more generation rounds after the first */
    const bool refill = s->dyn == DYN_REFILL && generate && (is_sched || is_gen);
    /* the refill rounds share the round buffers of the rollout queue (the queue is idle then: lag 0) */
    pl_refill rf = {.tp = tp, .gen = gen, .gp = &gp, .P = P, .G = G, .B = B, .n_gen = rq.n_gen,
                    .max_new = s->max_new_tokens, .is_sched = is_sched, .is_gen = is_gen, .enc_start = enc.start,
                    .enc_ids = enc.ids, .gstart = rq.gstart, .gstart_local = rq.gstart_local, .gids = rq.gids,
                    .seq_ids = rq.seq_ids, .pack = rq.pack, .packs = rq.packs, .pack_words = rq.pack_words,
                    .pack_counts = rq.pack_counts};
    if (refill) pl_refill_init(&rf);
    if (r->budget) { /* model sizes for the stage's compute: policy, generator, scored models */
        bool scores_teacher = s->algo == ALGO_OPD || fkl_logits;
        double ref_params = !need_ref ? 0 : (double)model_config_params(refm ? cfg_of(r, refm) : &policy->cfg);
        pl_budget_stage(r->budget, si, (double)model_config_params(&policy->cfg),
                        generate ? (double)model_config_params(gen_cfg) : 0,
                        (scores_teacher ? (double)model_config_params(cfg_of(r, tea)) : 0) + ref_params);
    }
    int64_t version = 0; /* policy version: optimizer steps of this stage behind the generators' weights */

    /* Evaluation set (greedy), if asked for: the scheduler evaluates its copy of the policy. */
    evaluator ev = {0};
    bool has_eval = s->eval_data[0] != 0 && is_sched;
    if (has_eval) {
        int ei = tc_find_dataset(tc, s->eval_data);
        ev.ts = &r->data[ei];
        if (!encode_set(tc, tok, ev.ts, -1, &ev.enc, err)) return err_prefix(err, "datasets.%s", s->eval_data);
        ev.n = S2D_MIN(s->eval_problems, ev.enc.n);
        ev.gp = (gen_params){.sampling = {.temperature = 0, .top_p = 1}, .max_new_tokens = s->eval_max_new_tokens,
                             .n_stop = n_stop};
        memcpy(ev.gp.stop_ids, stops, sizeof stops);
        if (!generator_new(policy, S2D_MIN(ev.n, 64), S2D_MIN(ev.enc.max_prompt + s->eval_max_new_tokens, policy->cfg.max_pos),
                           &ev.gen, err))
            return false;
        ev.seq_ids = xmalloc((size_t)ev.n * sizeof(uint64_t));
        for (int i = 0; i < ev.n; i++) ev.seq_ids[i] = (uint64_t)i;
    }
    if (is_sched && s->algo == ALGO_GRPO && !use_reward_cmd(r, s, err)) return false;
    bool ok = true;
    bool labelled = s->algo == ALGO_GRPO || s->algo == ALGO_SFT;
    ds_sampler dsamp;
    ds_sampler_init(&dsamp, enc.n, tc->seed + 7919u * (uint64_t)(si + 1));
    stage_cursor cur = {.dsamp = &dsamp, .seen = seen, .n = enc.n, .sampling_seed = gp.sampling.seed};
    int step0 = 0;
    if (r->resume.active && r->resume.stage == si && r->resume.step > 0) { /* continue mid-stage */
        if (!pl_resume_stage(r, si, out, is_learner ? &L : NULL, &cur, err)) return false;
        step0 = (int)r->resume.step;
        version = step0;
    }
    rq.cur = &cur, rq.gen = gen, rq.gp = &gp, rq.next = step0;
    if (has_eval && step0 == 0) {
        sum->acc_before = evaluate(r, policy, tok, &ev, err, &ok);
        if (!ok) return false;
        fprintf(r->metrics.fp, "{\"stage\": \"%s\", \"step\": 0, \"global_step\": %ld, \"event\": \"eval\", \"accuracy\": %.6g, "
                "\"samples\": %d}\n", s->name, r->global_step, sum->acc_before, ev.n);
        log_info("[%s] eval before: accuracy %.3f on %d %s problems", s->name, sum->acc_before, ev.n, s->eval_data);
    }
    sum->has_eval = has_eval;
    double t_stage = time_now(), seconds_before = sum->seconds;
    char layout[64];
    tp_layout(tp, layout, sizeof layout);
    for (int step = step0; step < s->steps; step++) {
        r->global_step++;
        if (tc->fault_rank == tp->rank && r->global_step == tc->fault_step) {
            fprintf(stderr, "s2d: fault injection: rank %d (%s) %s at step %ld\n", tp->rank, tp_role_name(tp->role),
                    tc->fault_kind == FAULT_KILL    ? "raises SIGKILL"
                    : tc->fault_kind == FAULT_ERROR ? "fails"
                    : tc->fault_kind == FAULT_HANG  ? "hangs"
                                                    : "stops (SIGSTOP)",
                    r->global_step);
            fflush(stderr);
            if (tc->fault_kind == FAULT_KILL) raise(SIGKILL);
            if (tc->fault_kind == FAULT_STOP) raise(SIGSTOP); /* its peers' timeouts or heartbeat checks must notice */
            /* hang; or continued after the stop, which is the launcher ending the job (SIGCONT, then SIGTERM) */
            while (tc->fault_kind == FAULT_HANG || tc->fault_kind == FAULT_STOP) sleep(1);
            die("injected fault (fault.kind: error) at step %ld", r->global_step);
        }
        double t0 = time_now();
        step_times me = {.role = (int32_t)tp->role};
        b.n_seqs = B;
        b.seq_start[0] = 0;
        long gen_tokens = 0;
        double reward_mean = NAN;
        /* 1-2. the step's rollouts (generated now, or ahead while the learners trained earlier steps) */
        if (!pl_rollouts_advance(&rq, step, version, &me.gen, err)) return false;
        pl_rollout *rx = is_sched ? pl_rollouts_front(&rq, step) : NULL;
        if (rx && r->budget) { /* its prompts and its first generation round, counted when the step trains */
            if (!pl_budget_prompts(r->budget, tc, si, di, rx->idx, P, rx->unique, rx->total, err)) return false;
            long prompt_tokens = 0;
            for (int i = 0; i < B; i++) prompt_tokens += enc.start[rx->idx[i / G] + 1] - enc.start[rx->idx[i / G]];
            if (generate) pl_budget_round(r->budget, si, B, prompt_tokens, rx->gen_tokens);
        }
        if (refill) { /* DAPO refill rounds (lag 0 only: train_config refuses refill with a policy lag) */
            long extra_tokens = 0;
            if (!pl_refill_step(&rf, r, si, step, version, &cur, tok, ts, rx ? rx->idx : idx, rx ? &rx->res : NULL,
                                rx ? &rx->gen_tokens : &extra_tokens, err))
                return false;
            if (rx) rx->unique = cur.unique, rx->total = cur.total;
        }
        gen_result res = {0};
        if (rx) idx = rx->idx, res = rx->res, gen_tokens = rx->gen_tokens;
        double t1 = time_now();
        int T = 0;
        double acc = NAN;
        if (is_sched) {
            for (int i = 0; i < B; i++) {
                int p = idx[i / G], a = enc.start[p], n = enc.start[p + 1] - a;
                const int32_t *comp = generate ? res.tokens + res.start[i] : enc.tids + enc.tstart[p];
                int nc = generate ? res.start[i + 1] - res.start[i] : enc.tstart[p + 1] - enc.tstart[p];
                memcpy(b.tokens + T, enc.ids + a, (size_t)n * sizeof(int32_t));
                memcpy(b.tokens + T + n, comp, (size_t)nc * sizeof(int32_t));
                for (int t = 0; t < n + nc; t++) {
                    int row = T + t;
                    bool trained = t >= n - 1 && t < n + nc - 1;
                    b.mask[row] = trained ? 1.0f : 0.0f;
                    b.logp_behaviour[row] = trained && generate ? res.logprobs[res.start[i] + (t - n + 1)] : 0.0f;
                }
                T += n + nc;
                b.seq_start[i + 1] = T;
            }
            /* 3. scheduler: verify, group advantages */
            if (s->algo == ALGO_GRPO) {
                int correct = 0;
                double reward_sum = 0;
                if (r->reward) reward_cmd_step_reset(r->reward);
                for (int i = 0; i < B; i++) {
                    int a = res.start[i];
                    rewards[i] = 0;
                    if (tok_decode(tok, res.tokens + a, (size_t)(res.start[i + 1] - a), &r->text, err)) {
                        verify_result vr;
                        verify_math(r->text.bytes, ts->answer[idx[i / G]], &vr);
                        rewards[i] = vr.correct ? 1.0f : 0.0f;
                        correct += vr.correct;
                        if (r->reward && !command_reward(r, s, ts, idx[i / G], i % G, step, &rewards[i], err))
                            return false;
                    }
                    reward_sum += rewards[i];
                }
                acc = (double)correct / B; /* the verifier's accuracy; the reward may be the command's */
                reward_mean = reward_sum / B;
                grpo_group_advantages(rewards, P, G, s->std, 1e-6f, adv, zero_var);
                for (int i = 0; i < B; i++) {
                    bool drop = (s->mask_truncated && res.finish[i] == GEN_FINISH_LENGTH) ||
                                (s->filter_zero_variance && zero_var[i / G]);
                    for (int t = b.seq_start[i]; t < b.seq_start[i + 1]; t++) {
                        b.adv[t] = adv[i];
                        if (drop) b.mask[t] = 0;
                    }
                }
            }
            b.n_rows = 0;
            for (int t = 0; t < T; t++) b.row_slot[t] = b.mask[t] != 0 ? b.n_rows++ : -1;
        }
        /* 4. the token batch -> scorers and learners */
        if (is_sched || is_scorer || is_learner) {
            int hdr[2] = {T, b.n_rows};
            tp->bcast(tp, TP_BATCH, 0, hdr, sizeof hdr, "the token batch header");
            T = hdr[0], b.n_rows = hdr[1];
            tp->bcast(tp, TP_BATCH, 0, b.seq_start, (size_t)(B + 1) * sizeof(int), "the batch layout");
            tp->bcast(tp, TP_BATCH, 0, b.tokens, (size_t)T * sizeof(int32_t), "the batch tokens");
            tp->bcast(tp, TP_BATCH, 0, b.mask, (size_t)T * sizeof(float), "the batch mask");
            tp->bcast(tp, TP_BATCH, 0, b.logp_behaviour, (size_t)T * sizeof(float), "behaviour log-probs");
            tp->bcast(tp, TP_BATCH, 0, b.adv, (size_t)T * sizeof(float), "advantages");
            tp->bcast(tp, TP_BATCH, 0, b.row_slot, (size_t)T * sizeof(int), "row slots");
        }
        /* the rollouts sampled ahead come back while the learners work on this batch */
        pl_rollouts_finish_deferred(&rq);
        /* scorers: per-token teacher / reference log-probs (teacher top-k or full rows for fkl), per micro-batch */
        bool scored = s->algo == ALGO_OPD || need_ref || fkl_logits;
        if (scored && (is_scorer || is_learner)) {
            if (is_scorer) {
                double tsc = time_now();
                long m0, m1;
                tp_split(M, n_score, tp->local ? 0 : tp->index, &m0, &m1);
                for (long mb = m0; mb < m1; mb++) {
                    pl_batch v;
                    int r0;
                    pl_micro_view(&b, M, (int)mb, &v, mseq, &r0);
                    if (s->algo == ALGO_OPD && !pl_score_logprobs(&tea->m, tws, &v, b.logp_teacher + r0, err)) return false;
                    if (ref && !pl_score_logprobs(ref, rws, &v, b.logp_ref + r0, err)) return false;
                    if (fkl_logits && !pl_score_fkl(&tea->m, tws, s, &v, err)) return false;
                }
                me.score = time_now() - tsc;
            }
            for (int k = 0; k < n_score && !tp->local; k++) { /* scorer k's rows -> every learner */
                long m0, m1, s0, s1, unused;
                tp_split(M, n_score, k, &m0, &m1);
                if (m1 <= m0) continue;
                tp_split(B, M, (int)m0, &s0, &unused);
                tp_split(B, M, (int)m1 - 1, &unused, &s1);
                int r0 = b.seq_start[s0], r1 = b.seq_start[s1], sl0 = 0, sl1 = 0;
                for (int t = 0; t < r1; t++) sl1 += b.mask[t] != 0, sl0 += t < r0 && b.mask[t] != 0;
                if (s->algo == ALGO_OPD)
                    tp->bcast(tp, TP_PAYLOAD, k, b.logp_teacher + r0, (size_t)(r1 - r0) * sizeof(float), "teacher log-probs");
                if (need_ref)
                    tp->bcast(tp, TP_PAYLOAD, k, b.logp_ref + r0, (size_t)(r1 - r0) * sizeof(float), "reference log-probs");
                if (fkl_logits && s->fkl == FKL_TOPK) {
                    size_t kk = (size_t)s->topk;
                    tp->bcast(tp, TP_PAYLOAD, k, b.topk_ids + sl0 * kk, (sl1 - sl0) * kk * sizeof(int32_t), "teacher top-k ids");
                    tp->bcast(tp, TP_PAYLOAD, k, b.topk_logp + sl0 * kk, (sl1 - sl0) * kk * sizeof(float), "teacher top-k log-probs");
                } else if (fkl_logits) {
                    tp->bcast(tp, TP_PAYLOAD, k, b.full_logp + (size_t)sl0 * V, (size_t)(sl1 - sl0) * V * sizeof(float),
                              "teacher distributions");
                }
            }
        }
        double t2 = time_now();
        /* 5. learners: loss, backward, tree-ordered gradient sum, ZeRO-1 AdamW */
        pl_learn_stats st = {0};
        if (is_learner) {
            double tl = time_now();
            if (s->minibatches <= 1) {
                pl_learn_step(&L, s, &b, step, &st);
                if (step == step0 && L.index == 0 && L.n_buckets > 0)
                    log_info("%s: %d gradient buckets (of >= %zu floats) reduce-scattered during the backward", s->name,
                             L.n_buckets, L.bucket_floats);
            } else { /* several updates on contiguous minibatches of the step, old policy fixed before the first */
                pl_learn_logprobs(&L, &b, old_all);
                pl_learn_stats part;
                double clip = 0, loss = 0, pg = 0, klp = 0;
                for (int k = 0; k < s->minibatches; k++) {
                    pl_batch v;
                    int r0;
                    pl_micro_view(&b, s->minibatches, k, &v, mb_seq, &r0);
                    L.fixed_old = old_all + r0;
                    pl_learn_step(&L, s, &v, step, &part);
                    clip += part.clip_fraction * part.tokens, loss += part.loss * part.tokens;
                    pg += part.pg_loss * part.tokens, klp += part.kl_loss * part.tokens;
                    st.tokens += part.tokens, st.kl = part.kl, st.grad_norm = part.grad_norm, st.lr = part.lr;
                }
                L.fixed_old = NULL;
                st.clip_fraction = st.tokens ? clip / st.tokens : 0, st.loss = st.tokens ? loss / st.tokens : 0;
                st.pg_loss = st.tokens ? pg / st.tokens : 0, st.kl_loss = st.tokens ? klp / st.tokens : 0;
            }
            me.learn = time_now() - tl;
        }
        /* 6. learner root -> scheduler + generators: stats and the new weights (one contiguous buffer) */
        double tw = time_now();
        if (lroot || is_sched || is_gen) {
            tp->bcast(tp, TP_WEIGHTS, 0, &st, sizeof st, "learner statistics");
            tp_bcast_mem(tp, TP_WEIGHTS, 0, policy->params, policy->n_params * sizeof(float), TP_DEVICE, "new weights");
            version++;
        }
        if (is_learner || lroot) me.sync = time_now() - tw;
        /* the rollout log keeps the scorers' log-probs: the learner root passes them on to the scheduler */
        if (r->tc->log_rollouts && !tp->local && (s->algo == ALGO_OPD || need_ref) && (lroot || is_sched)) {
            int from = tp_world_rank(tp, ROLE_LEARNER, 0);
            size_t bytes = (size_t)T * sizeof(float);
            float *bufs[2] = {s->algo == ALGO_OPD ? b.logp_teacher : NULL, need_ref ? b.logp_ref : NULL};
            for (int k = 0; k < 2; k++) {
                if (!bufs[k]) continue;
                if (lroot) tp->send(tp, TP_WORLD, 0, bufs[k], bytes, "scored log-probs for the rollout log");
                else tp->recv(tp, TP_WORLD, from, bufs[k], bytes, "scored log-probs for the rollout log");
            }
        }
        double t3 = time_now();
        me.wall = t3 - t0;
        /* 7. scheduler: timings of every rank, metrics */
        tp->gatherv(tp, TP_WORLD, &me, sizeof me, times, (size_t)(tp->size + 1) * sizeof(step_times), time_counts,
                    "step timings");
        if (is_sched) {
            double wall = t3 - t0, ph[4] = {0}, busy[4] = {0};
            int cnt[4] = {0};
            int n_rec = tp->local ? 1 : tp->size;
            for (int i = 0; i < n_rec; i++) {
                const step_times *x = &times[i];
                double v[4] = {0, x->gen, x->score, x->learn + x->sync};
                for (int ro = 1; ro < 4; ro++) {
                    if (!tp->local && x->role != ro) continue;
                    busy[ro] += x->wall > 0 ? S2D_MIN(1.0, v[ro] / x->wall) : 0, cnt[ro]++;
                }
                ph[1] = S2D_MAX(ph[1], x->gen), ph[2] = S2D_MAX(ph[2], x->score), ph[3] = S2D_MAX(ph[3], x->learn);
                ph[0] = S2D_MAX(ph[0], x->sync);
            }
            for (int ro = 1; ro < 4; ro++) busy[ro] = cnt[ro] ? busy[ro] / cnt[ro] : 0;
            (void)t1, (void)t2;
            sum->gen_s += ph[1], sum->score_s += ph[2], sum->learn_s += ph[3] + ph[0];
            double elapsed = t3 - t_stage, eta = elapsed / (step + 1 - step0) * (s->steps - step - 1);
            char rw[64] = "-", ac[64] = "-"; /* fkl / opd stages have no reward: "-", not nan */
            if (!isnan(reward_mean)) snprintf(rw, sizeof rw, "%.3f", reward_mean);
            if (!isnan(acc)) snprintf(ac, sizeof ac, "%.3f", acc);
            fprintf(stderr,
                    "[%s] step %d/%d | reward %s acc %s | kl %.4f | loss %.4f | %.0f tok/s | gen %.2fs score %.2fs "
                    "learn %.2fs sync %.2fs | busy g%.0f%% s%.0f%% l%.0f%% | ETA %.0fs\n",
                    s->name, step + 1, s->steps, rw, ac, st.kl, st.loss, (double)T / wall, ph[1], ph[2], ph[3],
                    ph[0], 100 * busy[1], 100 * busy[2], 100 * busy[3], eta);
            if (!isfinite(st.loss) || !isfinite(st.kl) || !isfinite(st.grad_norm)) /* before this step is saved */
                return err_set(err, "[%s] stage %d, step %d: training diverged: loss %g, kl %g, grad_norm %g (not all "
                               "finite); nothing of this step was saved, the last checkpoint is intact (lower "
                               "optimizer.lr or set optimizer.clip)", s->name, si, step + 1, st.loss, st.kl,
                               st.grad_norm);
            /* verl's rollout and reward-group statistics (NaN -> null where a stage has none) */
            rollout_stats ro = {NAN, NAN, NAN, NAN};
            group_stats gs = {NAN, NAN, NAN};
            if (generate) rollout_stats_of(B, res.start, res.finish, res.logprobs, &ro);
            if (s->algo == ALGO_GRPO) group_stats_of(P, G, rewards, adv, zero_var, &gs);
            if (r->budget) pl_budget_step(r->budget, tc, si, T, st.tokens);
            FILE *f = r->metrics.fp;
            fprintf(f, "{\"stage\": \"%s\", \"algo\": \"%s\", \"step\": %d, \"global_step\": %ld", s->name,
                    train_algo_name(s->algo), step + 1, r->global_step);
            json_num(f, "loss", st.loss), json_num(f, "reward_mean", reward_mean), json_num(f, "accuracy", acc);
            json_num(f, "kl", st.kl), json_num(f, "grad_norm", st.grad_norm), json_num(f, "lr", st.lr);
            json_num(f, "clip_fraction", st.clip_fraction);
            json_num(f, "pg_loss", st.pg_loss), json_num(f, "kl_loss", st.kl_loss), json_num(f, "entropy", ro.entropy);
            json_num(f, "response_length_mean", ro.response_length_mean);
            json_num(f, "response_length_max", ro.response_length_max);
            json_num(f, "truncation_rate", ro.truncation_rate), json_num(f, "reward_std", gs.reward_std);
            json_num(f, "advantage_std", gs.advantage_std), json_num(f, "zero_variance_fraction", gs.zero_variance_fraction);
            fprintf(f, ", \"tokens\": %d, \"trained_tokens\": %ld, \"generated_tokens\": %ld", T, st.tokens, gen_tokens);
            json_num(f, "gen_s", ph[1]), json_num(f, "score_s", ph[2]), json_num(f, "learn_s", ph[3]);
            json_num(f, "sync_s", ph[0]), json_num(f, "step_s", wall), json_num(f, "tokens_per_s", wall > 0 ? T / wall : 0);
            json_num(f, "busy_generators", busy[1]), json_num(f, "busy_scorers", busy[2]);
            json_num(f, "busy_learners", busy[3]);
            fprintf(f, ", \"ranks\": %d, \"layout\": \"%s\", \"policy_version\": %lld", tp->size, layout,
                    (long long)version - 1);
            if (tc->max_policy_lag > 0) /* the weights that sampled this batch, and how many updates behind they were */
                fprintf(f, ", \"rollout_version\": %lld, \"policy_lag\": %lld", (long long)rx->version,
                        (long long)(version - 1 - rx->version));
            fprintf(f, ", \"labelled_unique\": %ld, \"labelled_total\": %ld, \"unlabelled_prompts\": %ld",
                    labelled ? rx->unique : 0, labelled ? rx->total : 0, labelled ? 0 : rx->total);
            if (r->reward && s->algo == ALGO_GRPO) reward_cmd_write_metrics(r->reward, f); /* reward/<name> */
            fputs("}\n", f);
            if (has_eval && s->eval_every > 0 && (step + 1) % s->eval_every == 0 && step + 1 < s->steps) {
                double a = evaluate(r, policy, tok, &ev, err, &ok);
                if (!ok) return false;
                fprintf(f, "{\"stage\": \"%s\", \"step\": %d, \"global_step\": %ld, \"event\": \"eval\", \"accuracy\": %.6g, "
                        "\"samples\": %d}\n", s->name, step + 1, r->global_step, a, ev.n);
                log_info("[%s] eval at step %d: accuracy %.3f", s->name, step + 1, a);
            }
            if (r->rollouts || r->metrics_h5) {
                for (int i = 0; i < B; i++) {
                    int p = idx[i / G];
                    prompt_len[i] = enc.start[p + 1] - enc.start[p];
                }
                rollout_step rs = {.stage = si, .step = step + 1, .policy_version = (long)rx->version, .n_seqs = B,
                                   .offsets = b.seq_start, .tokens = b.tokens, .prompt_len = prompt_len,
                                   .reward = s->algo == ALGO_GRPO ? rewards : NULL,
                                   .advantage = s->algo == ALGO_GRPO ? adv : NULL,
                                   .logp_behaviour = generate ? b.logp_behaviour : NULL,
                                   .logp_teacher = s->algo == ALGO_OPD ? b.logp_teacher : NULL,
                                   .logp_reference = need_ref ? b.logp_ref : NULL};
                double row[PL_N_METRIC_FIELDS] = {st.loss, reward_mean, acc, st.kl, st.grad_norm, st.lr, st.clip_fraction,
                                                  T, (double)st.tokens, (double)gen_tokens, (double)version - 1,
                                                  labelled ? rx->unique : 0, labelled ? rx->total : 0,
                                                  labelled ? 0 : rx->total, wall, wall > 0 ? T / wall : 0,
                                                  (double)r->global_step, st.pg_loss, st.kl_loss, ro.entropy,
                                                  ro.response_length_mean, ro.response_length_max, ro.truncation_rate,
                                                  gs.reward_std, gs.advantage_std, gs.zero_variance_fraction};
                if (r->rollouts && !rollout_log_append(r->rollouts, &rs, err)) return false;
                if (r->metrics_h5 && !metrics_log_append(r->metrics_h5, si, step + 1, row, err)) return false;
                r->log_rows++;
            }
            if (s->ckpt_every > 0 && (step + 1) % s->ckpt_every == 0 && step + 1 < s->steps && !save_model(r, out, err))
                return false;
            if (!pl_tb_sync(r, err)) return false; /* this step's lines -> OUT/tensorboard */
        }
        if (rx) pl_rollouts_pop(&rq);
        /* end of the step: a checkpoint at the cadence (and at fault.stop_after_step), collective over every rank */
        bool stop_here = tc->stop_after_step > 0 && tc->stop_after_step == r->global_step;
        if (step + 1 < s->steps && ((s->ckpt_every > 0 && (step + 1) % s->ckpt_every == 0) || stop_here)) {
            /* checkpoints hold no pending rollouts: the queue drains at checkpoint steps (config-checked for stops) */
            CHECK(rq.next == step + 1 && rq.n == 0, "checkpoint at step %d with rollouts of later steps pending", step + 1);
            if (!pl_checkpoint(r, si, step + 1, true, &cur, is_learner ? &L : NULL, err)) return false;
            if (stop_here) {
                r->stopped = true;
                goto done;
            }
        }
    }
    /* the stage's output -> every rank (later stages may score with it or train it) */
    tp_bcast_mem(tp, TP_WORLD, tp_world_rank(tp, ROLE_LEARNER, 0), policy->params, policy->n_params * sizeof(float), TP_DEVICE,
              "the stage's final weights");
    sum->seconds = seconds_before + time_now() - t_stage;
    if (has_eval) {
        sum->acc_after = evaluate(r, policy, tok, &ev, err, &ok);
        if (!ok) return false;
        fprintf(r->metrics.fp, "{\"stage\": \"%s\", \"step\": %d, \"global_step\": %ld, \"event\": \"eval\", \"accuracy\": %.6g, "
                "\"samples\": %d}\n", s->name, s->steps, r->global_step, sum->acc_after, ev.n);
        log_info("[%s] eval after: accuracy %.3f", s->name, sum->acc_after);
    }
    sum->labelled_unique = labelled ? cur.unique : 0, sum->labelled_total = labelled ? cur.total : 0;
    sum->unlabelled_unique = labelled ? 0 : cur.unique, sum->unlabelled_total = labelled ? 0 : cur.total;
    if (is_sched) {
        fprintf(r->metrics.fp,
                "{\"stage\": \"%s\", \"event\": \"labels\", \"global_step\": %ld, \"labelled_unique\": %ld, "
                "\"labelled_total\": %ld, \"unlabelled_prompts\": %ld, \"unlabelled_unique\": %ld}\n",
                s->name, r->global_step, sum->labelled_unique, sum->labelled_total, sum->unlabelled_total,
                sum->unlabelled_unique);
        if (!pl_tb_sync(r, err)) return false; /* flushes metrics.jsonl too */
        log_info("[%s] labels: %ld labelled examples (%ld unique), %ld unlabelled prompts", s->name, sum->labelled_total,
                 sum->labelled_unique, sum->unlabelled_total);
        if (!save_model(r, out, err)) return false;
    }
    /* every stage end is checkpointed: a resume never redoes a finished stage */
    if (!pl_checkpoint(r, si, s->steps, false, &cur, NULL, err)) return false;
    if (tc->stop_after_step > 0 && tc->stop_after_step == r->global_step) r->stopped = true;

done:

    if (is_learner) pl_learner_free(&L);
    if (refill) pl_refill_free(&rf);
    model_ws_free(tws), model_ws_free(rws);
    if (gen) generator_free(gen);
    if (has_eval) generator_free(ev.gen), free_enc_set(&ev.enc), free(ev.seq_ids);
    if (ref == &ref_copy) model_free(&ref_copy);
    model_free_grads(policy);
    free(b.seq_start), free(b.tokens), free(b.mask), free(b.logp_behaviour), free(b.adv), free(b.logp_teacher);
    free(b.logp_ref), free(b.row_slot), free(b.topk_ids), free(b.topk_logp), free(b.full_logp);
    pl_fkl_buffers_free(b.fkl_dev);
    pl_rollouts_free(&rq);
    free(rewards), free(adv), free(zero_var), free(seen);
    free(mseq), free(prompt_len), free(old_all), free(mb_seq), free(times), free(time_counts);
    ds_sampler_free(&dsamp);
    free_enc_set(&enc);
    return true;
}

bool pipeline_run(const train_config *tc, const char *out_dir, transport *tp, bool resume, bool *stopped,
                  s2d_err *err) {
    pl_run r = {.tc = tc, .out = out_dir, .tp = tp};
    if (!tp->dev) tp->dev = ops_default(); /* weights and gradients live there: the transport stages them */
    r.sums = xcalloc((size_t)tc->n_stages, sizeof(stage_summary));
    *stopped = false;
    bool is_sched = tp_plays(tp, ROLE_SCHEDULER);
    if (is_sched && !resume && !pl_mkdir_p(out_dir, err)) return false;
    r.resume.active = resume;
    if (resume && !pl_resume_begin(&r, err)) return false;
    r.global_step = r.resume.global_step;
    /* phase times restored from the checkpoint (earlier sessions): the closing line reports this session's */
    double g0 = 0, sc0 = 0, l0 = 0;
    for (int si = 0; resume && si < tc->n_stages; si++) g0 += r.sums[si].gen_s, sc0 += r.sums[si].score_s, l0 += r.sums[si].learn_s;
    char path[4096];
    if (is_sched) {
        /* the resolved config (after --set) */
        path_join(path, sizeof path, out_dir, "config.yaml");
        atomic_file af;
        if (!atomic_open(&af, path, err)) return false;
        if (!cfg_write(tc->root, af.fp, err)) return atomic_abort(&af), false;
        if (!atomic_commit(&af, err)) return false;
        path_join(path, sizeof path, out_dir, "metrics.jsonl");
        if (!atomic_open(&r.metrics, path, err)) return false;
        const char *so_far = resume ? ckpt_find_text(r.resume.st, "metrics.jsonl") : NULL;
        if (so_far && fputs(so_far, r.metrics.fp) == EOF) return atomic_abort(&r.metrics), err_set(err, "%s: write failed", path);
        if (!pl_logs_open(&r, err)) return atomic_abort(&r.metrics), false;
    }

    /* tokenizers and data first: bad input fails before any training */
    r.toks = xcalloc((size_t)S2D_MAX(tc->n_models, 1), sizeof(tokenizer *));
    r.models = xcalloc((size_t)S2D_MAX(tc->n_models, 1), sizeof(named_model));
    bool ok = true;
    for (int i = 0; i < tc->n_models && ok; i++) {
        named_model *nm = &r.models[r.n_models++];
        snprintf(nm->name, sizeof nm->name, "%s", tc->models[i].name);
        nm->def = i;
        nm->tok_dir = tc->models[i].tokenizer;
        if (nm->tok_dir) {
            for (int j = 0; j < i; j++)
                if (tc->models[j].tokenizer && strcmp(tc->models[j].tokenizer, nm->tok_dir) == 0) nm->tok = r.models[j].tok;
            if (!nm->tok) {
                ok = tok_load(nm->tok_dir, &r.toks[r.n_toks], err);
                if (!ok) err_prefix(err, "%s: models.%s.tokenizer", tc->models[i].where, nm->name);
                else nm->tok = r.toks[r.n_toks++];
            }
            if (ok && tok_vocab_size(nm->tok) > tc->models[i].cfg.vocab)
                ok = err_set(err, "%s: models.%s: its tokenizer (%s) has %d tokens but the model's vocabulary is %d",
                             tc->models[i].where, nm->name, nm->tok_dir, tok_vocab_size(nm->tok), tc->models[i].cfg.vocab);
        }
    }
    r.data = xcalloc((size_t)S2D_MAX(tc->n_datasets, 1), sizeof(text_set));
    for (int i = 0; i < tc->n_datasets && ok; i++) ok = load_text_set(&tc->datasets[i], &r.data[i], err);
    pl_budget budget = {0}; /* labels and compute (scheduler): caps checked here, before any training */
    if (ok && is_sched) ok = pl_budget_open(&r, &budget, err), r.budget = &budget;
    stage_summary *sums = r.sums;
    double t0 = time_now();
    for (int si = 0; si < tc->n_stages && ok && !r.stopped; si++) {
        if (r.resume.active && (si < r.resume.stage || (si == r.resume.stage && r.resume.step >= tc->stages[si].steps))) {
            /* done before the checkpoint: its output comes from there */
            const tc_stage *s = &tc->stages[si];
            r.models = xrealloc(r.models, (size_t)(r.n_models + 1) * sizeof(named_model));
            named_model *src = pl_find_named(&r, s->policy), *o = &r.models[r.n_models];
            CHECK(src, "validated config names an unknown model %s", s->policy);
            memset(o, 0, sizeof *o);
            snprintf(o->name, sizeof o->name, "%s", s->output);
            o->tok = src->tok, o->tok_dir = src->tok_dir, o->def = -1;
            if (!(ok = pl_resume_stage_output(&r, si, o, err))) break;
            o->loaded = true;
            r.n_models++;
            continue;
        }
        log_info("stage %d/%d: %s (%s), policy %s -> %s", si + 1, tc->n_stages, tc->stages[si].name,
                 train_algo_name(tc->stages[si].algo), tc->stages[si].policy, tc->stages[si].output);
        ok = run_stage(&r, si, &sums[si], err);
    }
    double total = time_now() - t0;
    reward_cmd_close(r.reward); /* on every return path: stopped and reaped */
    r.reward = NULL;
    if (is_sched) {
        if (ok) ok = pl_budget_write(&budget, tc, out_dir, err); /* OUT/budget.json, also when stopped */
        if (ok) ok = atomic_commit(&r.metrics, err);
        else atomic_abort(&r.metrics);
        if (!pl_logs_close(&r, err)) ok = false;
    }
    if (r.resume.st) ckpt_state_free(r.resume.st), free(r.resume.st);
    *stopped = r.stopped;
    if (ok && r.stopped && is_sched)
        log_info("stopped after global step %ld (fault.stop_after_step); continue with --resume", r.global_step);
    if (ok && is_sched && !r.stopped) {
        double g = 0, sc = 0, l = 0;
        printf("%-12s %-5s %-26s %10s %10s %8s %8s %8s %8s\n", "stage", "algo", "policy->output", "acc_before",
               "acc_after", "labels", "unique", "prompts", "time_s");
        for (int si = 0; si < tc->n_stages; si++) {
            const tc_stage *s = &tc->stages[si];
            const stage_summary *u = &sums[si];
            char po[160], b1[16] = "-", b2[16] = "-";
            snprintf(po, sizeof po, "%s->%s", s->policy, s->output);
            if (u->has_eval) snprintf(b1, sizeof b1, "%.3f", u->acc_before), snprintf(b2, sizeof b2, "%.3f", u->acc_after);
            printf("%-12s %-5s %-26s %10s %10s %8ld %8ld %8ld %8.1f\n", s->name, train_algo_name(s->algo), po, b1, b2,
                   u->labelled_total, u->labelled_unique, u->unlabelled_total, u->seconds);
            g += u->gen_s, sc += u->score_s, l += u->learn_s;
        }
        g -= g0, sc -= sc0, l -= l0;
        double ph = g + sc + l;
        printf("total %.1f s%s: generation %.1f s (%.0f%%), scoring %.1f s (%.0f%%), learning %.1f s (%.0f%%), "
               "evaluation and the rest %.1f s\n",
               total, resume ? " in this session (resumed; time_s above includes earlier sessions)" : "", g,
               100 * g / (ph > 0 ? ph : 1), sc, 100 * sc / (ph > 0 ? ph : 1), l, 100 * l / (ph > 0 ? ph : 1),
               total - ph);
        pl_budget_print(&budget, tc, stdout);
        fflush(stdout);
    }
    if (is_sched) pl_budget_free(&budget);
    for (int i = 0; i < r.n_models; i++)
        if (r.models[i].loaded) model_free(&r.models[i].m);
    for (int i = 0; i < r.n_toks; i++) tok_free(r.toks[i]);
    for (int i = 0; i < tc->n_datasets; i++) free_text_set(&r.data[i]);
    free(r.models), free(r.toks), free(r.data), free(sums);
    tok_bytes_free(&r.text);
    return ok;
}
