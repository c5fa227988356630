/* pipeline.c: the stage runner of `s2d train` (single process: generator, scorers and learner are local). */
#include "algo/pipeline.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/log.h"
#include "core/timer.h"
#include "model/generate.h"
#include "text/tokenizer.h"
#include "text/verify.h"

/* ---- named models and tokenizers ---- */
typedef struct {
    char name[64];
    model m;
    bool loaded;
    tokenizer *tok;      /* borrowed from the run's tokenizer list */
    const char *tok_dir; /* copied into saved model dirs */
    int def;             /* index in tc->models, or -1 for a stage output */
} named_model;

/* A dataset as prompt / answer / SFT-target strings. */
typedef struct {
    int n;
    char **prompt, **answer, **target;
} text_set;

/* A text set rendered with the chat template and tokenized (CSR). */
typedef struct {
    int n;
    int *start;      /* [n + 1] prompt ids */
    int32_t *ids;
    int *tstart;     /* [n + 1] SFT target ids (+ stop) */
    int32_t *tids;
    int max_prompt, max_target;
} enc_set;

typedef struct {
    const train_config *tc;
    const char *out;
    named_model *models;
    int n_models;
    tokenizer **toks;
    int n_toks;
    text_set *data;  /* [tc->n_datasets] */
    atomic_file metrics;
    tok_bytes text;  /* decode scratch */
} run;

static bool mkdir_p(const char *path, s2d_err *err) {
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

static named_model *find_named(run *r, const char *name) {
    for (int i = 0; i < r->n_models; i++)
        if (strcmp(r->models[i].name, name) == 0) return &r->models[i];
    return NULL;
}

static bool ensure_loaded(run *r, named_model *nm, s2d_err *err) {
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
    memcpy(dst->params, src->params, src->n_params * sizeof(float));
}

static bool save_model(run *r, const named_model *nm, s2d_err *err) {
    char dir[4096], models_dir[4096];
    path_join(models_dir, sizeof models_dir, r->out, "models");
    path_join(dir, sizeof dir, models_dir, nm->name);
    if (!mkdir_p(dir, err)) return false;
    if (!model_save(&nm->m, dir, false, err)) return false;
    if (nm->tok_dir) { /* an HF dir also carries its tokenizer */
        char src[4096], dst[4096], *data;
        size_t len;
        struct stat st;
        if (stat(nm->tok_dir, &st) == 0 && S_ISDIR(st.st_mode)) path_join(src, sizeof src, nm->tok_dir, "tokenizer.json");
        else snprintf(src, sizeof src, "%s", nm->tok_dir);
        path_join(dst, sizeof dst, dir, "tokenizer.json");
        if (!read_file(src, &data, &len, err)) return false;
        atomic_file af;
        bool ok = atomic_open(&af, dst, err);
        if (ok && fwrite(data, 1, len, af.fp) != len) atomic_abort(&af), ok = err_set(err, "%s: write failed", dst);
        else if (ok) ok = atomic_commit(&af, err);
        free(data);
        if (!ok) return false;
    }
    return true;
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

/* ---- evaluation: greedy accuracy of m on the first `samples` records ---- */
typedef struct {
    generator *gen;
    enc_set enc;
    const text_set *ts;
    int n;
    gen_params gp;
    int *pstart;
    uint64_t *seq_ids;
} evaluator;

static double evaluate(run *r, const model *m, const tokenizer *tok, evaluator *ev, s2d_err *err, bool *ok) {
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

/* ---- one stage ---- */
typedef struct {
    double acc_before, acc_after, seconds, gen_s, score_s, learn_s;
    long labelled_total, labelled_unique, unlabelled_total, unlabelled_unique;
    bool has_eval;
} stage_summary;

static void json_num(FILE *f, const char *key, double v) {
    if (isfinite(v)) fprintf(f, ", \"%s\": %.6g", key, v);
    else fprintf(f, ", \"%s\": null", key);
}

static bool run_stage(run *r, int si, stage_summary *sum, s2d_err *err) {
    const train_config *tc = r->tc;
    const tc_stage *s = &tc->stages[si];
    memset(sum, 0, sizeof *sum);
    named_model *pol_src = find_named(r, s->policy);
    CHECK(pol_src, "validated config names an unknown model %s", s->policy);
    if (!ensure_loaded(r, pol_src, err)) return false;
    named_model *tea = s->teacher[0] ? find_named(r, s->teacher) : NULL;
    named_model *refm = s->reference[0] ? find_named(r, s->reference) : NULL;
    if (tea && !ensure_loaded(r, tea, err)) return false;
    if (refm && !ensure_loaded(r, refm, err)) return false;
    tokenizer *tok = pol_src->tok;
    if (!tok) return err_set(err, "%s: stage %s: the policy '%s' has no tokenizer (give models.%s.tokenizer)", s->where,
                             s->name, s->policy, s->policy);
    if (tea && (tea->m.cfg.vocab != pol_src->m.cfg.vocab || !tea->tok || tok_vocab_size(tea->tok) != tok_vocab_size(tok)))
        return err_set(err, "%s: stage %s: teacher '%s' (vocab %d) and policy '%s' (vocab %d) do not share a vocabulary",
                       s->where, s->name, s->teacher, tea->m.cfg.vocab, s->policy, pol_src->m.cfg.vocab);

    /* The output model: a copy of the policy, trained in place. */
    r->models = xrealloc(r->models, (size_t)(r->n_models + 1) * sizeof(named_model));
    pol_src = find_named(r, s->policy), tea = s->teacher[0] ? find_named(r, s->teacher) : NULL;
    refm = s->reference[0] ? find_named(r, s->reference) : NULL;
    named_model *out = &r->models[r->n_models++];
    memset(out, 0, sizeof *out);
    snprintf(out->name, sizeof out->name, "%s", s->output);
    model_copy(&out->m, &pol_src->m);
    out->loaded = true, out->tok = pol_src->tok, out->tok_dir = pol_src->tok_dir, out->def = -1;
    model *policy = &out->m;

    /* Reference: named, or the policy's initial weights when the objective needs one. */
    bool need_ref = (s->algo == ALGO_OPD && s->opd.lambda != 1.0f) || (s->algo == ALGO_GRPO && s->grpo.kl_beta > 0);
    model ref_copy = {0};
    const model *ref = NULL;
    if (need_ref) {
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
    const model *gen_model = s->algo == ALGO_FKL ? &tea->m : policy;
    int P = s->prompts_per_step, G = s->group_size, B = P * G;
    int max_seq = enc.max_prompt + (generate ? s->max_new_tokens : enc.max_target);
    if (max_seq > gen_model->cfg.max_pos)
        return err_set(err, "%s: stage %s: prompt (%d tokens) + max_new_tokens (%d) exceed the model's %d positions",
                       s->where, s->name, enc.max_prompt, s->max_new_tokens, gen_model->cfg.max_pos);
    int maxT = B * max_seq, V = policy->cfg.vocab;

    /* Every buffer of the step loop, sized once. */
    pl_batch b = {0};
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
    int *idx = xmalloc((size_t)P * sizeof(int));
    int *gstart = xmalloc((size_t)(B + 1) * sizeof(int));
    int32_t *gids = xmalloc((size_t)B * S2D_MAX(enc.max_prompt, 1) * sizeof(int32_t));
    uint64_t *seq_ids = xmalloc((size_t)B * sizeof(uint64_t));
    float *rewards = xcalloc((size_t)B, sizeof(float)), *adv = xcalloc((size_t)B, sizeof(float));
    bool *zero_var = xcalloc((size_t)P, sizeof(bool));
    unsigned char *seen = xcalloc((size_t)enc.n, 1);

    pl_learner L;
    pl_learner_init(&L, policy, maxT, s);
    model_ws *tws = (tea && s->algo != ALGO_SFT) ? model_ws_new(&tea->m, maxT, false) : NULL;
    model_ws *rws = ref ? model_ws_new(ref, maxT, false) : NULL;
    generator *gen = NULL;
    if (generate && !generator_new(gen_model, S2D_MIN(B, 64), max_seq, &gen, err)) return false;
    gen_params gp = {.sampling = s->sampling, .max_new_tokens = s->max_new_tokens, .n_stop = n_stop};
    gp.sampling.seed = tc->seed * 1000003u + (uint64_t)si;
    memcpy(gp.stop_ids, stops, sizeof stops);

    /* Evaluation set (greedy), if asked for. */
    evaluator ev = {0};
    bool has_eval = s->eval_data[0] != 0;
    if (has_eval) {
        int ei = tc_find_dataset(tc, s->eval_data);
        ev.ts = &r->data[ei];
        if (!encode_set(tc, tok, ev.ts, -1, &ev.enc, err)) return err_prefix(err, "datasets.%s", s->eval_data);
        ev.n = S2D_MIN(s->eval_samples, ev.enc.n);
        ev.gp = (gen_params){.sampling = {.temperature = 0, .top_p = 1}, .max_new_tokens = s->eval_max_new_tokens,
                             .n_stop = n_stop};
        memcpy(ev.gp.stop_ids, stops, sizeof stops);
        if (!generator_new(policy, S2D_MIN(ev.n, 64), S2D_MIN(ev.enc.max_prompt + s->eval_max_new_tokens, policy->cfg.max_pos),
                           &ev.gen, err))
            return false;
        ev.seq_ids = xmalloc((size_t)ev.n * sizeof(uint64_t));
        for (int i = 0; i < ev.n; i++) ev.seq_ids[i] = (uint64_t)i;
    }
    bool ok = true;
    if (has_eval) {
        sum->acc_before = evaluate(r, policy, tok, &ev, err, &ok);
        if (!ok) return false;
        fprintf(r->metrics.fp, "{\"stage\": \"%s\", \"step\": 0, \"event\": \"eval\", \"accuracy\": %.6g, \"samples\": %d}\n",
                s->name, sum->acc_before, ev.n);
        log_info("[%s] eval before: accuracy %.3f on %d %s problems", s->name, sum->acc_before, ev.n, s->eval_data);
    }
    sum->has_eval = has_eval;

    bool labelled = s->algo == ALGO_GRPO || s->algo == ALGO_SFT;
    ds_sampler dsamp;
    ds_sampler_init(&dsamp, enc.n, tc->seed + 7919u * (uint64_t)(si + 1));
    double t_stage = time_now();
    long unique = 0, total = 0;
    for (int step = 0; step < s->steps; step++) {
        double t0 = time_now();
        ds_sampler_next(&dsamp, P, idx);
        for (int p = 0; p < P; p++) {
            total++;
            if (!seen[idx[p]]) seen[idx[p]] = 1, unique++;
        }
        /* 1. rollouts (or SFT targets) */
        b.n_seqs = B;
        b.seq_start[0] = 0;
        long gen_tokens = 0;
        gen_result res = {0};
        double reward_mean = NAN;
        if (generate) {
            gstart[0] = 0;
            for (int i = 0; i < B; i++) {
                int p = idx[i / G], a = enc.start[p], n = enc.start[p + 1] - a;
                memcpy(gids + gstart[i], enc.ids + a, (size_t)n * sizeof(int32_t));
                gstart[i + 1] = gstart[i] + n;
                seq_ids[i] = ((uint64_t)step << 32) + (uint64_t)i;
            }
            if (!generator_run(gen, &gp, B, gstart, gids, seq_ids, &res, err)) return err_prefix(err, "stage %s", s->name);
            gen_tokens = res.n_generated;
        }
        int T = 0;
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
        double t1 = time_now();
        /* 2. score */
        double acc = NAN;
        if (s->algo == ALGO_GRPO) {
            int correct = 0;
            for (int i = 0; i < B; i++) {
                int a = res.start[i];
                rewards[i] = 0;
                if (tok_decode(tok, res.tokens + a, (size_t)(res.start[i + 1] - a), &r->text, err)) {
                    verify_result vr;
                    verify_math(r->text.bytes, ts->answer[idx[i / G]], &vr);
                    rewards[i] = vr.correct ? 1.0f : 0.0f;
                }
                correct += rewards[i] > 0;
            }
            reward_mean = acc = (double)correct / B;
            grpo_advantages(rewards, P, G, s->std_normalize, false, 1e-6f, adv, zero_var);
            for (int i = 0; i < B; i++) {
                bool drop = (s->mask_truncated && res.finish[i] == GEN_FINISH_LENGTH) ||
                            (s->filter_zero_variance && zero_var[i / G]);
                for (int t = b.seq_start[i]; t < b.seq_start[i + 1]; t++) {
                    b.adv[t] = adv[i];
                    if (drop) b.mask[t] = 0;
                }
            }
        }
        if (s->algo == ALGO_OPD && !pl_score_logprobs(&tea->m, tws, &b, b.logp_teacher, err)) return false;
        if (ref && !pl_score_logprobs(ref, rws, &b, b.logp_ref, err)) return false;
        b.n_rows = 0;
        for (int t = 0; t < T; t++) b.row_slot[t] = b.mask[t] != 0 ? b.n_rows++ : -1;
        if (fkl_logits && !pl_score_fkl(&tea->m, tws, s, &b, err)) return false;
        gen_result_free(&res);
        double t2 = time_now();
        /* 3. learn */
        pl_learn_stats st;
        pl_learn_step(&L, s, &b, step, &st);
        double t3 = time_now();
        sum->gen_s += t1 - t0, sum->score_s += t2 - t1, sum->learn_s += t3 - t2;
        double elapsed = t3 - t_stage, eta = elapsed / (step + 1) * (s->steps - step - 1);
        fprintf(stderr,
                "[%s] step %d/%d | reward %.3f acc %.3f | kl %.4f | loss %.4f | %.0f tok/s | gen %.2fs score %.2fs "
                "learn %.2fs | ETA %.0fs\n",
                s->name, step + 1, s->steps, reward_mean, acc, st.kl, st.loss, (double)T / (t3 - t0), t1 - t0, t2 - t1,
                t3 - t2, eta);
        FILE *f = r->metrics.fp;
        fprintf(f, "{\"stage\": \"%s\", \"algo\": \"%s\", \"step\": %d", s->name, train_algo_name(s->algo), step + 1);
        json_num(f, "loss", st.loss), json_num(f, "reward_mean", reward_mean), json_num(f, "accuracy", acc);
        json_num(f, "kl", st.kl), json_num(f, "grad_norm", st.grad_norm), json_num(f, "lr", st.lr);
        fprintf(f, ", \"tokens\": %d, \"trained_tokens\": %ld, \"generated_tokens\": %ld", T, st.tokens, gen_tokens);
        json_num(f, "gen_s", t1 - t0), json_num(f, "score_s", t2 - t1), json_num(f, "learn_s", t3 - t2);
        fprintf(f, ", \"labelled_unique\": %ld, \"labelled_total\": %ld, \"unlabelled_prompts\": %ld}\n",
                labelled ? unique : 0, labelled ? total : 0, labelled ? 0 : total);
        if (has_eval && s->eval_every > 0 && (step + 1) % s->eval_every == 0 && step + 1 < s->steps) {
            double a = evaluate(r, policy, tok, &ev, err, &ok);
            if (!ok) return false;
            fprintf(f, "{\"stage\": \"%s\", \"step\": %d, \"event\": \"eval\", \"accuracy\": %.6g, \"samples\": %d}\n",
                    s->name, step + 1, a, ev.n);
            log_info("[%s] eval at step %d: accuracy %.3f", s->name, step + 1, a);
        }
        if (s->ckpt_every > 0 && (step + 1) % s->ckpt_every == 0 && step + 1 < s->steps && !save_model(r, out, err))
            return false;
    }
    sum->seconds = time_now() - t_stage;
    if (has_eval) {
        sum->acc_after = evaluate(r, policy, tok, &ev, err, &ok);
        if (!ok) return false;
        fprintf(r->metrics.fp, "{\"stage\": \"%s\", \"step\": %d, \"event\": \"eval\", \"accuracy\": %.6g, \"samples\": %d}\n",
                s->name, s->steps, sum->acc_after, ev.n);
        log_info("[%s] eval after: accuracy %.3f", s->name, sum->acc_after);
    }
    sum->labelled_unique = labelled ? unique : 0, sum->labelled_total = labelled ? total : 0;
    sum->unlabelled_unique = labelled ? 0 : unique, sum->unlabelled_total = labelled ? 0 : total;
    fprintf(r->metrics.fp,
            "{\"stage\": \"%s\", \"event\": \"labels\", \"labelled_unique\": %ld, \"labelled_total\": %ld, "
            "\"unlabelled_prompts\": %ld, \"unlabelled_unique\": %ld}\n",
            s->name, sum->labelled_unique, sum->labelled_total, sum->unlabelled_total, sum->unlabelled_unique);
    fflush(r->metrics.fp);
    log_info("[%s] labels: %ld labelled examples (%ld unique), %ld unlabelled prompts", s->name, sum->labelled_total,
             sum->labelled_unique, sum->unlabelled_total);
    if (!save_model(r, out, err)) return false;

    pl_learner_free(&L);
    model_ws_free(tws), model_ws_free(rws);
    if (gen) generator_free(gen);
    if (has_eval) generator_free(ev.gen), free_enc_set(&ev.enc), free(ev.seq_ids);
    if (ref == &ref_copy) model_free(&ref_copy);
    free(policy->grads), policy->grads = NULL;
    free(b.seq_start), free(b.tokens), free(b.mask), free(b.logp_behaviour), free(b.adv), free(b.logp_teacher);
    free(b.logp_ref), free(b.row_slot), free(b.topk_ids), free(b.topk_logp), free(b.full_logp);
    free(idx), free(gstart), free(gids), free(seq_ids), free(rewards), free(adv), free(zero_var), free(seen);
    ds_sampler_free(&dsamp);
    free_enc_set(&enc);
    return true;
}

bool pipeline_run(const train_config *tc, const char *out_dir, s2d_err *err) {
    run r = {.tc = tc, .out = out_dir};
    if (!mkdir_p(out_dir, err)) return false;
    char path[4096];
    /* the resolved config (after --set) */
    path_join(path, sizeof path, out_dir, "config.yaml");
    atomic_file af;
    if (!atomic_open(&af, path, err)) return false;
    if (!cfg_write(tc->root, af.fp, err)) return atomic_abort(&af), false;
    if (!atomic_commit(&af, err)) return false;
    path_join(path, sizeof path, out_dir, "metrics.jsonl");
    if (!atomic_open(&r.metrics, path, err)) return false;

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
    stage_summary *sums = xcalloc((size_t)tc->n_stages, sizeof(stage_summary));
    double t0 = time_now();
    for (int si = 0; si < tc->n_stages && ok; si++) {
        log_info("stage %d/%d: %s (%s), policy %s -> %s", si + 1, tc->n_stages, tc->stages[si].name,
                 train_algo_name(tc->stages[si].algo), tc->stages[si].policy, tc->stages[si].output);
        ok = run_stage(&r, si, &sums[si], err);
    }
    double total = time_now() - t0;
    if (ok) ok = atomic_commit(&r.metrics, err);
    else atomic_abort(&r.metrics);
    if (ok) {
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
        double ph = g + sc + l;
        printf("total %.1f s: generation %.1f s (%.0f%%), scoring %.1f s (%.0f%%), learning %.1f s (%.0f%%), "
               "evaluation and the rest %.1f s\n",
               total, g, 100 * g / (ph > 0 ? ph : 1), sc, 100 * sc / (ph > 0 ? ph : 1), l, 100 * l / (ph > 0 ? ph : 1),
               total - ph);
        fflush(stdout);
    }
    for (int i = 0; i < r.n_models; i++)
        if (r.models[i].loaded) model_free(&r.models[i].m);
    for (int i = 0; i < r.n_toks; i++) tok_free(r.toks[i]);
    for (int i = 0; i < tc->n_datasets; i++) free_text_set(&r.data[i]);
    free(r.models), free(r.toks), free(r.data), free(sums);
    tok_bytes_free(&r.text);
    return ok;
}
