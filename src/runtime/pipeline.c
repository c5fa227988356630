/* pipeline.c: the driver of `s2d train`: the run's resources, then its stages in order (stage.c, step.c), then
 * the closing table. Every rank runs it; what a rank does in a stage follows its roles. */
#include "runtime/pipeline.h"
#include "runtime/stage.h"

#include <stdlib.h>
#include <string.h>

#include "core/fault_point.h"
#include "core/log.h"
#include "core/timer.h"
#include "text/tokenizer.h"

/* Scheduler: OUT/, the resolved config (after --set), metrics.jsonl (on --resume: the lines so far) and the
 * HDF5 / TensorBoard logs. */
static bool open_outputs(pl_run *r, bool resume, s2d_err *err) {
    char path[4096];
    if (!resume && (!fault_point("create OUT", err) || !pl_mkdir_p(r->out, err))) return false;
    path_join(path, sizeof path, r->out, "config.yaml");
    atomic_file af;
    if (!fault_point("write config.yaml", err) || !atomic_open(&af, path, err)) return false;
    if (!cfg_write(r->tc->root, af.fp, err)) return atomic_abort(&af), false;
    if (!atomic_commit(&af, err)) return false;
    path_join(path, sizeof path, r->out, "metrics.jsonl");
    if (!fault_point("open metrics.jsonl", err) || !atomic_open(&r->metrics, path, err)) return false;
    const char *so_far = resume ? ckpt_find_text(r->resume.st, "metrics.jsonl") : NULL;
    if (so_far && fputs(so_far, r->metrics.fp) == EOF) return err_set(err, "%s: write failed", path);
    return fault_point("open the HDF5 logs", err) && pl_logs_open(r, err);
}

/* Every rank: the tokenizers and the datasets, first, so that bad input fails before any training. */
static bool load_inputs(pl_run *r, s2d_err *err) {
    const train_config *tc = r->tc;
    r->toks = xcalloc((size_t)S2D_MAX(tc->n_models, 1), sizeof(tokenizer *));
    r->models = xcalloc((size_t)S2D_MAX(tc->n_models, 1), sizeof(named_model));
    r->data = xcalloc((size_t)S2D_MAX(tc->n_datasets, 1), sizeof(text_set));
    for (int i = 0; i < tc->n_models; i++) {
        named_model *nm = &r->models[r->n_models++];
        snprintf(nm->name, sizeof nm->name, "%s", tc->models[i].name);
        nm->def = i;
        nm->tok_dir = tc->models[i].tokenizer;
        if (!nm->tok_dir) continue;
        for (int j = 0; j < i; j++)
            if (tc->models[j].tokenizer && strcmp(tc->models[j].tokenizer, nm->tok_dir) == 0) nm->tok = r->models[j].tok;
        if (!nm->tok) {
            if (!fault_point("load a tokenizer", err) || !tok_load(nm->tok_dir, &r->toks[r->n_toks], err))
                return err_prefix(err, "%s: models.%s.tokenizer", tc->models[i].where, nm->name);
            nm->tok = r->toks[r->n_toks++];
        }
        if (tok_vocab_size(nm->tok) > tc->models[i].cfg.vocab)
            return err_set(err, "%s: models.%s: its tokenizer (%s) has %d tokens but the model's vocabulary is %d",
                           tc->models[i].where, nm->name, nm->tok_dir, tok_vocab_size(nm->tok), tc->models[i].cfg.vocab);
    }
    for (int i = 0; i < tc->n_datasets; i++)
        if (!fault_point("load a dataset", err) || !pl_load_text_set(&tc->datasets[i], &r->data[i], err)) return false;
    return true;
}

/* A stage done before the resume point: its output comes from the checkpoint. */
static bool restore_stage_output(pl_run *r, int si, s2d_err *err) {
    const tc_stage *s = &r->tc->stages[si];
    r->models = xrealloc(r->models, (size_t)(r->n_models + 1) * sizeof(named_model));
    named_model *src = pl_find_named(r, s->policy), *o = &r->models[r->n_models];
    CHECK(src, "validated config names an unknown model %s", s->policy);
    memset(o, 0, sizeof *o);
    snprintf(o->name, sizeof o->name, "%s", s->output);
    o->tok = src->tok, o->tok_dir = src->tok_dir, o->def = -1;
    if (!fault_point("restore a stage output", err) || !pl_resume_stage_output(r, si, o, err)) {
        model_free(&o->m);
        return false;
    }
    o->loaded = true;
    r->n_models++;
    return true;
}

static bool run_stages(pl_run *r, s2d_err *err) {
    const train_config *tc = r->tc;
    for (int si = 0; si < tc->n_stages && !r->stopped; si++) {
        const tc_stage *s = &tc->stages[si];
        if (r->resume.active && (si < r->resume.stage || (si == r->resume.stage && r->resume.step >= s->steps))) {
            if (!restore_stage_output(r, si, err)) return false;
            continue;
        }
        log_info("stage %d/%d: %s (%s), policy %s -> %s", si + 1, tc->n_stages, s->name, train_algo_name(s->algo),
                 s->policy, s->output);
        if (!pl_run_stage(r, si, &r->sums[si], err)) return false;
    }
    return true;
}

/* Scheduler: the closing table (per stage), this session's phase split and the label / compute budget.
 * phases0: generation, scoring and learning seconds of earlier sessions (restored on --resume). */
static void print_summary(const pl_run *r, double total, const double phases0[3], bool resume) {
    const train_config *tc = r->tc;
    double g = 0, sc = 0, l = 0;
    printf("%-12s %-5s %-26s %10s %10s %8s %8s %8s %8s\n", "stage", "algo", "policy->output", "acc_before",
           "acc_after", "labels", "unique", "prompts", "time_s");
    for (int si = 0; si < tc->n_stages; si++) {
        const tc_stage *s = &tc->stages[si];
        const stage_summary *u = &r->sums[si];
        char po[160], b1[16] = "-", b2[16] = "-";
        snprintf(po, sizeof po, "%s->%s", s->policy, s->output);
        if (u->has_eval) snprintf(b1, sizeof b1, "%.3f", u->acc_before), snprintf(b2, sizeof b2, "%.3f", u->acc_after);
        printf("%-12s %-5s %-26s %10s %10s %8ld %8ld %8ld %8.1f\n", s->name, train_algo_name(s->algo), po, b1, b2,
               u->labelled_total, u->labelled_unique, u->unlabelled_total, u->seconds);
        g += u->gen_s, sc += u->score_s, l += u->learn_s;
    }
    g -= phases0[0], sc -= phases0[1], l -= phases0[2];
    double ph = g + sc + l, div = ph > 0 ? ph : 1;
    printf("total %.1f s%s: generation %.1f s (%.0f%%), scoring %.1f s (%.0f%%), learning %.1f s (%.0f%%), "
           "evaluation and the rest %.1f s\n",
           total, resume ? " in this session (resumed; time_s above includes earlier sessions)" : "", g, 100 * g / div,
           sc, 100 * sc / div, l, 100 * l / div, total - ph);
    pl_budget_print(r->budget, tc, stdout);
    fflush(stdout);
}

/* The one cleanup path of a run: the reward command stopped, OUT/budget.json and metrics.jsonl committed when
 * the run succeeded (also when it stopped early), discarded otherwise; logs closed; everything freed. */
static bool close_run(pl_run *r, bool ok, s2d_err *err) {
    const train_config *tc = r->tc;
    reward_cmd_close(r->reward); /* stopped and reaped */
    r->reward = NULL;
    if (r->budget && ok) ok = fault_point("write budget.json", err) && pl_budget_write(r->budget, tc, r->out, err);
    if (r->metrics.fp) {
        if (ok) ok = fault_point("commit metrics.jsonl", err) && atomic_commit(&r->metrics, err);
        if (!ok) atomic_abort(&r->metrics);
    }
    s2d_err close_err;
    if (!pl_logs_close(r, ok ? err : &close_err)) ok = false; /* the first error is the one reported */
    if (r->resume.st) ckpt_state_free(r->resume.st), free(r->resume.st);
    if (r->budget) pl_budget_free(r->budget);
    for (int i = 0; i < r->n_models; i++)
        if (r->models[i].loaded) model_free(&r->models[i].m);
    for (int i = 0; i < r->n_toks; i++) tok_free(r->toks[i]);
    for (int i = 0; r->data && i < tc->n_datasets; i++) pl_free_text_set(&r->data[i]);
    free(r->models), free(r->toks), free(r->data), free(r->sums);
    tok_bytes_free(&r->text);
    return ok;
}

bool pipeline_run(const train_config *tc, const char *out_dir, transport *tp, bool resume, bool *stopped,
                  s2d_err *err) {
    pl_run r = {.tc = tc, .out = out_dir, .tp = tp};
    if (!tp->dev) tp->dev = ops_default(); /* weights and gradients live there: the transport stages them */
    r.sums = xcalloc((size_t)tc->n_stages, sizeof(stage_summary));
    *stopped = false;
    const bool is_sched = tp_plays(tp, ROLE_SCHEDULER);
    pl_budget budget = {0}; /* labels and compute (scheduler): caps checked before any training */
    r.resume.active = resume;
    bool ok = !resume || pl_resume_begin(&r, err);
    r.global_step = r.resume.global_step;
    /* phase times restored from the checkpoint (earlier sessions): the closing line reports this session's */
    double phases0[3] = {0};
    for (int si = 0; resume && si < tc->n_stages; si++)
        phases0[0] += r.sums[si].gen_s, phases0[1] += r.sums[si].score_s, phases0[2] += r.sums[si].learn_s;
    if (ok && is_sched) ok = open_outputs(&r, resume, err);
    ok = ok && load_inputs(&r, err);
    if (ok && is_sched) ok = pl_budget_open(&r, &budget, err), r.budget = &budget;
    double t0 = time_now();
    ok = ok && run_stages(&r, err);
    double total = time_now() - t0;
    *stopped = r.stopped;
    if (ok && r.stopped && is_sched)
        log_info("stopped after global step %ld (fault.stop_after_step); continue with --resume", r.global_step);
    if (ok && is_sched && !r.stopped) print_summary(&r, total, phases0, resume);
    return close_run(&r, ok, err);
}
