/* ckpt.c: checkpoints, resume and the HDF5 logs of `s2d train` (DESIGN §5).
 *
 * A checkpoint is written by the scheduler (rank 0) and holds everything needed to continue exactly:
 *   models      every stage output so far (the current stage's output = the policy being trained), with the
 *               policy's full AdamW state (gathered from the learners' ZeRO-1 shards) when written mid-stage
 *   /state      run.global_step, run.log_rows (rows in rollouts.h5 / metrics.h5), and for the stage being run:
 *               cursor.<stage> (seed, epoch, position of the prompt shuffler), labels.<stage> (unique, total),
 *               seen.<stage> [n prompts] (0/1: handed out before), rng.sampling.<stage> (Philox key of the
 *               generators, steps done: sequence ids are step << 32 | i, so the streams need nothing else);
 *               summary.<stage> for every stage so far (accuracy before/after, seconds, phase times as double
 *               bits, label counts, has_eval)
 *   /text       metrics.jsonl: the metrics lines so far (resume restarts the file from them)
 *   /config     the resolved config (a resume must describe the same run)
 * Greedy evaluation has no state; the learning-rate schedule is a function of the step. */
#include <dirent.h>
#include <errno.h>
#include <sys/stat.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "runtime/run.h"
#include "io/dataset.h"
#include "core/log.h"

#define N_SUMMARY 11

static void summary_pack(const stage_summary *u, uint64_t *w) {
    double d[6] = {u->acc_before, u->acc_after, u->seconds, u->gen_s, u->score_s, u->learn_s};
    for (int i = 0; i < 6; i++) memcpy(&w[i], &d[i], sizeof(double));
    w[6] = (uint64_t)u->labelled_total, w[7] = (uint64_t)u->labelled_unique;
    w[8] = (uint64_t)u->unlabelled_total, w[9] = (uint64_t)u->unlabelled_unique, w[10] = u->has_eval;
}

static void summary_unpack(const uint64_t *w, stage_summary *u) {
    double d[6];
    for (int i = 0; i < 6; i++) memcpy(&d[i], &w[i], sizeof(double));
    u->acc_before = d[0], u->acc_after = d[1], u->seconds = d[2], u->gen_s = d[3], u->score_s = d[4];
    u->learn_s = d[5];
    u->labelled_total = (long)w[6], u->labelled_unique = (long)w[7], u->unlabelled_total = (long)w[8];
    u->unlabelled_unique = (long)w[9], u->has_eval = w[10] != 0;
}

/* The resolved config as YAML text (malloc'd). */
static char *config_text(const cfg_node *root, s2d_err *err) {
    char *text = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&text, &len);
    CHECK(mem, "open_memstream failed");
    bool ok = cfg_write(root, mem, err);
    fclose(mem);
    if (!ok) free(text), text = NULL;
    return text;
}

static void ckpt_dir(const pl_run *r, char *out, size_t n) { path_join(out, n, r->out, "checkpoints"); }

typedef struct {
    ckpt_u64 *u;
    int n, cap;
} u64_list;

static void u64_add(u64_list *l, const char *key, const uint64_t *v, size_t n) {
    if (l->n == l->cap) l->cap = l->cap ? 2 * l->cap : 16, l->u = xrealloc(l->u, (size_t)l->cap * sizeof *l->u);
    uint64_t *copy = xmalloc((n ? n : 1) * sizeof(uint64_t));
    if (n) memcpy(copy, v, n * sizeof(uint64_t));
    l->u[l->n++] = (ckpt_u64){.key = xstrdup(key), .values = copy, .n = n};
}

/* checkpoint.keep_last: after a new checkpoint is complete, remove all but the newest `keep` files named
 * ckpt-SS-STEP.h5 (by stage, then step) in dir. Temp files and other names are left alone; a file that cannot
 * be removed is a warning (the run goes on). */
static void prune_checkpoints(const char *dir, int keep) {
    if (keep <= 0) return;
    ckpt_file *files;
    size_t n;
    s2d_err err;
    if (!ckpt_list(dir, &files, &n, &err)) {
        log_warn("checkpoint.keep_last: %s", err.msg);
        return;
    }
    for (size_t i = (size_t)keep; i < n; i++) { /* newest first: all after the first `keep` go */
        if (unlink(files[i].path) != 0) log_warn("checkpoint.keep_last: cannot remove %s: %s", files[i].path, strerror(errno));
        else log_debug("checkpoint.keep_last %d: removed %s", keep, files[i].path);
    }
    ckpt_list_free(files, n);
}

bool pl_checkpoint(pl_run *r, int si, long steps_done, bool mid_stage, const stage_cursor *cur, pl_learner *learner,
                   s2d_err *err) {
    const train_config *tc = r->tc;
    const tc_stage *s = &tc->stages[si];
    transport *tp = r->tp;
    bool is_sched = tp_plays(tp, ROLE_SCHEDULER);
    named_model *out = pl_find_named(r, s->output);
    CHECK(out && out->loaded, "checkpoint: the stage output %s is missing", s->output);
    /* the policy's AdamW state: the learners' shards, concatenated in learner order = flat parameter order */
    adamw full = {0};
    if (mid_stage) {
        size_t n = out->m.n_params, *counts = xmalloc((size_t)(tp->size + 1) * sizeof(size_t));
        if (is_sched) {
            adamw_init_on(&full, n, &s->adam, ops_cpu()); /* host: the writer reads it */
            pl_optim_segments(&full, &out->m, 0, (long)n);
        }
        size_t mine = learner ? learner->opt.n * sizeof(float) : 0;
        tp_gatherv_mem(tp, TP_WORLD, learner ? learner->opt.m : NULL, mine, TP_DEVICE, full.m, n * sizeof(float), counts,
                    "the optimizer's first moments");
        size_t total = 0;
        for (int i = 0; is_sched && i < (tp->local ? 1 : tp->size); i++) total += counts[i];
        CHECK(!is_sched || total == n * sizeof(float), "gathered %zu bytes of AdamW moments, expected %zu", total,
              n * sizeof(float));
        tp_gatherv_mem(tp, TP_WORLD, learner ? learner->opt.v : NULL, mine, TP_DEVICE, full.v, n * sizeof(float), counts,
                    "the optimizer's second moments");
        int64_t step = learner ? learner->opt.step : 0, got = 0;
        bool first = learner && learner->index == 0;
        tp->gatherv(tp, TP_WORLD, &step, first ? sizeof step : 0, &got, sizeof got, counts, "the optimizer's step");
        full.step = (long)got;
        free(counts);
    }
    if (!is_sched) return true;

    char dir[4096], path[4096], key[128];
    ckpt_dir(r, dir, sizeof dir);
    if (!pl_mkdir_p(dir, err)) return adamw_free(&full), false;
    ckpt_path(path, sizeof path, dir, si, steps_done);

    int n_models = 0;
    ckpt_optim full_view = {0};
    if (mid_stage) adamw_ckpt_view(&full, &full_view);
    ckpt_model *models = xcalloc((size_t)r->n_models, sizeof *models);
    model *host_copies = xcalloc((size_t)r->n_models, sizeof *host_copies); /* of models on device backends */
    for (int i = 0; i < r->n_models; i++) {
        named_model *nm = &r->models[i];
        if (nm->def >= 0 || !nm->loaded) continue; /* config models are rebuilt from the config */
        model *m = &nm->m;
        if (!m->q->host_memory) { /* the writer reads host memory */
            model_create_on(&host_copies[i], &m->cfg, ops_cpu());
            model_params_copy(&host_copies[i], m);
            m = &host_copies[i];
        }
        model_ckpt_view(nm->name, m, false, &models[n_models]);
        if (mid_stage && nm == out) models[n_models].opt = &full_view;
        n_models++;
    }
    u64_list u = {0};
    uint64_t v[4];
    v[0] = (uint64_t)r->global_step;
    u64_add(&u, "run.global_step", v, 1);
    v[0] = (uint64_t)r->log_rows;
    u64_add(&u, "run.log_rows", v, 1);
    v[0] = cur->dsamp->cur.seed, v[1] = (uint64_t)cur->dsamp->cur.epoch, v[2] = (uint64_t)cur->dsamp->cur.position;
    snprintf(key, sizeof key, "cursor.%s", s->name);
    u64_add(&u, key, v, 3);
    v[0] = (uint64_t)cur->unique, v[1] = (uint64_t)cur->total;
    snprintf(key, sizeof key, "labels.%s", s->name);
    u64_add(&u, key, v, 2);
    uint64_t *seen = xmalloc((size_t)(cur->n + 1) * sizeof(uint64_t));
    for (int i = 0; i < cur->n; i++) seen[i] = cur->seen[i];
    snprintf(key, sizeof key, "seen.%s", s->name);
    u64_add(&u, key, seen, (size_t)cur->n);
    free(seen);
    v[0] = cur->sampling_seed, v[1] = (uint64_t)steps_done;
    snprintf(key, sizeof key, "rng.sampling.%s", s->name);
    u64_add(&u, key, v, 2);
    for (int j = 0; j <= si; j++) {
        uint64_t w[N_SUMMARY];
        summary_pack(&r->sums[j], w);
        snprintf(key, sizeof key, "summary.%s", tc->stages[j].name);
        u64_add(&u, key, w, N_SUMMARY);
    }
    if (r->budget) { /* labels and compute so far: every stage's counters and the content-seen marks */
        uint64_t w[PL_BUDGET_WORDS];
        for (int j = 0; j <= si; j++) {
            pl_budget_pack(&r->budget->st[j], w);
            snprintf(key, sizeof key, "budget.%s", tc->stages[j].name);
            u64_add(&u, key, w, PL_BUDGET_WORDS);
        }
        uint64_t *marks = xmalloc((size_t)(r->budget->n_canon + 1) * sizeof(uint64_t));
        for (int i = 0; i < r->budget->n_canon; i++) marks[i] = r->budget->seen[i];
        u64_add(&u, "budget.seen", marks, (size_t)r->budget->n_canon);
        free(marks);
    }
    /* metrics.jsonl so far: what the scheduler has written to its temp file */
    char *metrics = NULL;
    size_t len;
    bool ok = fflush(r->metrics.fp) == 0 || err_set(err, "%s: write failed: %s", r->metrics.tmp, strerror(errno));
    ok = ok && read_file(r->metrics.tmp, &metrics, &len, err);
    char *cfg = ok ? config_text(r->tc->root, err) : NULL;
    ok = ok && cfg;
    ckpt_text texts[1] = {{.key = "metrics.jsonl", .text = metrics}};
    ckpt_state st = {.stage_index = si, .stage_name = (char *)s->name, .step = steps_done, .config_text = cfg,
                     .models = models, .n_models = n_models, .u64s = u.u, .n_u64s = u.n, .texts = texts, .n_texts = 1};
    ok = ok && ckpt_save(path, &st, err); /* registers its temp file: removed on die() or a fatal signal */
    if (ok) prune_checkpoints(dir, s->ckpt_keep_last); /* only once the new one is complete */
    for (int i = 0; i < u.n; i++) free(u.u[i].key), free(u.u[i].values);
    for (int i = 0; i < n_models; i++) model_ckpt_view_free(&models[i]);
    adamw_ckpt_view_free(&full_view);
    free(u.u), free(models), free(metrics), free(cfg);
    for (int i = 0; i < r->n_models; i++)
        if (host_copies[i].q) model_free(&host_copies[i]);
    free(host_copies);
    adamw_free(&full);
    return ok;
}

/* ---- resume ---- */
static const ckpt_u64 *need_u64(const resume_point *rp, const char *key, size_t n, s2d_err *err) {
    const ckpt_u64 *c = ckpt_find_u64(rp->st, key);
    if (!c || c->n != n) {
        err_set(err, "%s: /state/%s: %s (expected %zu values)", rp->path, key, c ? "wrong length" : "missing", n);
        return NULL;
    }
    return c;
}

/* The scheduler's checks and restores (runs on rank 0 only). */
static bool resume_sched(pl_run *r, s2d_err *err) {
    resume_point *rp = &r->resume;
    const train_config *tc = r->tc;
    char dir[4096];
    ckpt_dir(r, dir, sizeof dir);
    bool found = false;
    if (access(dir, F_OK) != 0)
        return err_set(err, "%s: nothing to resume: no checkpoints directory (%s does not exist)", r->out, dir);
    rp->st = xcalloc(1, sizeof(ckpt_state));
    /* the newest checkpoint that loads intact: damaged newer ones are skipped with a warning naming them */
    if (!ckpt_load_latest(dir, rp->path, sizeof rp->path, &model_ckpt_binding, rp->st, &found, err)) return false;
    if (!found) return err_set(err, "%s: nothing to resume: no complete, intact checkpoint in %s", r->out, dir);
    const ckpt_state *st = rp->st;
    log_info("resuming from %s: stage %d (%s), step %ld", rp->path, st->stage_index, st->stage_name, st->step);
    /* same run? compare both configs as written and re-read (anchors, merges and --set resolved) */
    if (!st->config_text) return err_set(err, "%s: /config: missing (not a checkpoint of s2d train)", rp->path);
    char *mine = config_text(tc->root, err);
    if (!mine) return false;
    cfg_node *a = NULL, *b = NULL;
    bool ok = cfg_load_string(st->config_text, rp->path, &a, err) && cfg_load_string(mine, "this run's config", &b, err);
    if (ok && !train_config_same_run(a, b, err))
        ok = err_prefix(err, "%s: cannot resume from %s with a different config", tc->path, rp->path);
    if (a) cfg_free(a);
    if (b) cfg_free(b);
    free(mine);
    if (!ok) return false;
    if (st->stage_index < 0 || st->stage_index >= tc->n_stages || strcmp(st->stage_name, tc->stages[st->stage_index].name) != 0 ||
        st->step < 0 || st->step > tc->stages[st->stage_index].steps)
        return err_set(err, "%s: stage %d (%s) step %ld does not fit this config's pipeline", rp->path, st->stage_index,
                       st->stage_name, st->step);
    rp->stage = st->stage_index, rp->step = st->step;
    const ckpt_u64 *g = need_u64(rp, "run.global_step", 1, err), *lr = g ? need_u64(rp, "run.log_rows", 1, err) : NULL;
    if (!lr) return false;
    rp->global_step = (long)g->values[0];
    r->log_rows = (long)lr->values[0];
    char key[128];
    for (int j = 0; j <= rp->stage; j++) {
        snprintf(key, sizeof key, "summary.%s", tc->stages[j].name);
        const ckpt_u64 *c = need_u64(rp, key, N_SUMMARY, err);
        if (!c) return false;
        summary_unpack(c->values, &r->sums[j]);
    }
    if (!ckpt_find_text(st, "metrics.jsonl")) return err_set(err, "%s: /text/metrics.jsonl: missing", rp->path);
    return true;
}

bool pl_resume_begin(pl_run *r, s2d_err *err) {
    resume_point *rp = &r->resume;
    transport *tp = r->tp;
    bool ok = !tp_plays(tp, ROLE_SCHEDULER) || resume_sched(r, err);
    if (!ok) return false; /* die() on the scheduler ends the job (the MPI abort hook) */
    int64_t hdr[3] = {rp->stage, rp->step, rp->global_step};
    tp->bcast(tp, TP_WORLD, 0, hdr, sizeof hdr, "the resume point");
    tp->bcast(tp, TP_WORLD, 0, rp->path, sizeof rp->path, "the checkpoint path");
    rp->stage = (int)hdr[0], rp->step = hdr[1], rp->global_step = hdr[2];
    return true;
}

bool pl_resume_stage_output(pl_run *r, int si, named_model *out, s2d_err *err) {
    const tc_stage *s = &r->tc->stages[si];
    if (!model_ckpt_load(r->resume.path, s->output, &out->m, NULL, err))
        return err_prefix(err, "resuming stage %s", s->name);
    return true;
}

bool pl_resume_stage(pl_run *r, int si, named_model *out, pl_learner *learner, stage_cursor *cur, s2d_err *err) {
    const tc_stage *s = &r->tc->stages[si];
    resume_point *rp = &r->resume;
    model saved;
    if (!model_ckpt_load(rp->path, s->output, &saved, NULL, err)) return err_prefix(err, "resuming stage %s", s->name);
    bool ok = saved.n_params == out->m.n_params ||
              err_set(err, "%s: model %s has %zu parameters, the policy %zu", rp->path, s->output, saved.n_params,
                      out->m.n_params);
    if (ok) model_params_copy(&out->m, &saved);
    model_free(&saved);
    if (!ok) return false;
    if (learner) { /* this learner's slice of the moments, whatever the learner count that wrote them */
        long step = 0;
        if (!ckpt_read_optim_range(rp->path, s->output, (size_t)learner->shard_lo, (size_t)(learner->shard_hi - learner->shard_lo),
                                   learner->opt.m, learner->opt.v, &step, err))
            return err_prefix(err, "resuming stage %s", s->name);
        learner->opt.step = step;
    }
    if (!tp_plays(r->tp, ROLE_SCHEDULER)) return true;
    char key[128];
    snprintf(key, sizeof key, "cursor.%s", s->name);
    const ckpt_u64 *c = need_u64(rp, key, 3, err);
    if (!c) return false;
    ds_cursor dc = {.seed = c->values[0], .epoch = (int64_t)c->values[1], .position = (int64_t)c->values[2]};
    if (dc.seed != cur->dsamp->cur.seed)
        return err_set(err, "%s: /state/%s: shuffling seed %llu, this run's %llu", rp->path, key,
                       (unsigned long long)dc.seed, (unsigned long long)cur->dsamp->cur.seed);
    ds_sampler_free(cur->dsamp); /* restore allocates the permutation afresh (the initial one leaked) */
    if (!ds_sampler_restore(cur->dsamp, cur->n, dc, err)) return err_prefix(err, "%s: /state/%s", rp->path, key);
    snprintf(key, sizeof key, "labels.%s", s->name);
    if (!(c = need_u64(rp, key, 2, err))) return false;
    cur->unique = (long)c->values[0], cur->total = (long)c->values[1];
    snprintf(key, sizeof key, "seen.%s", s->name);
    if (!(c = need_u64(rp, key, (size_t)cur->n, err))) return false;
    for (int i = 0; i < cur->n; i++) cur->seen[i] = c->values[i] != 0;
    snprintf(key, sizeof key, "rng.sampling.%s", s->name);
    if (!(c = need_u64(rp, key, 2, err))) return false;
    if (c->values[0] != cur->sampling_seed || (long)c->values[1] != rp->step)
        return err_set(err, "%s: /state/%s: sampling key %llu at step %llu, expected %llu at step %ld", rp->path, key,
                       (unsigned long long)c->values[0], (unsigned long long)c->values[1],
                       (unsigned long long)cur->sampling_seed, rp->step);
    snprintf(key, sizeof key, "summary.%s", s->name);
    if (!(c = need_u64(rp, key, N_SUMMARY, err))) return false;
    summary_unpack(c->values, &r->sums[si]);
    return true;
}

bool pl_budget_open(pl_run *r, pl_budget *b, s2d_err *err) {
    const train_config *tc = r->tc;
    int nd = tc->n_datasets;
    char ***prompt = xmalloc((size_t)S2D_MAX(nd, 1) * sizeof(char **)), ***answer = xmalloc((size_t)S2D_MAX(nd, 1) * sizeof(char **));
    int *n = xmalloc((size_t)S2D_MAX(nd, 1) * sizeof(int));
    for (int d = 0; d < nd; d++) prompt[d] = r->data[d].prompt, answer[d] = r->data[d].answer, n[d] = r->data[d].n;
    pl_budget_init(b, tc, (char **const *)prompt, (char **const *)answer, n);
    free(prompt), free(answer), free(n);
    if (!pl_budget_check_plan(b, tc, err)) return false;
    const resume_point *rp = &r->resume;
    if (!rp->active || !rp->st) return true;
    char key[128];
    const ckpt_u64 *c = ckpt_find_u64(rp->st, "budget.seen");
    if (!c || c->n != (size_t)b->n_canon) { /* a checkpoint from before the budget was kept */
        log_warn("%s: /state/budget.*: %s; OUT/budget.json counts from this session on", rp->path,
                 c ? "written for other datasets" : "missing");
        return true;
    }
    for (int i = 0; i < b->n_canon; i++) b->seen[i] = (unsigned char)c->values[i];
    for (int j = 0; j <= rp->stage; j++) {
        snprintf(key, sizeof key, "budget.%s", tc->stages[j].name);
        if (!(c = need_u64(rp, key, PL_BUDGET_WORDS, err))) return false;
        pl_budget_unpack(c->values, &b->st[j]);
    }
    return true;
}

/* ---- HDF5 logs ---- */
static const char *const metric_fields[PL_N_METRIC_FIELDS] = {PL_METRIC_FIELDS};

static bool exists(const char *path) { return access(path, F_OK) == 0; }

/* Rows of a log (its per-step /step dataset); 0 when the file does not exist. */
static bool log_rows(const char *path, const char *step_set, long *rows, s2d_err *err) {
    *rows = 0;
    if (!exists(path)) return true;
    int64_t *v = NULL;
    size_t n = 0;
    if (!h5_read_i64(path, step_set, &v, &n, err)) return false;
    free(v);
    *rows = (long)n;
    return true;
}

/* Rewrites the metrics table with its first `keep` rows (a run that went past its last checkpoint). */
static bool cut_metrics(const char *path, long keep, s2d_err *err) {
    int64_t *stage = NULL, *step = NULL;
    double *cols[PL_N_METRIC_FIELDS] = {0};
    size_t n = 0;
    bool ok = h5_read_i64(path, "stage", &stage, &n, err) && h5_read_i64(path, "step", &step, &n, err);
    for (int k = 0; ok && k < PL_N_METRIC_FIELDS; k++) ok = h5_read_f64(path, metric_fields[k], &cols[k], &n, err);
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.cut.%d", path, (int)getpid());
    s2d_tmp_register(tmp); /* removed on die() or a fatal signal */
    metrics_log *ml = ok ? metrics_log_open(tmp, metric_fields, PL_N_METRIC_FIELDS, err) : NULL;
    ok = ml != NULL;
    for (long i = 0; ok && i < keep; i++) {
        double row[PL_N_METRIC_FIELDS];
        for (int k = 0; k < PL_N_METRIC_FIELDS; k++) row[k] = cols[k][i];
        ok = metrics_log_append(ml, (int)stage[i], (long)step[i], row, err);
    }
    if (ml && !metrics_log_close(ml, err)) ok = false;
    if (ok) ok = metrics_log_copy_extras(path, tmp, keep, err); /* the reward/<name> columns */
    if (ok && rename(tmp, path) != 0) ok = err_set(err, "%s: cannot replace: %s", path, strerror(errno));
    if (!ok) unlink(tmp);
    s2d_tmp_unregister(tmp);
    free(stage), free(step);
    for (int k = 0; k < PL_N_METRIC_FIELDS; k++) free(cols[k]);
    return ok;
}

/* Rewrites the rollout log with its first `keep` steps. */
static bool cut_rollouts(const char *path, long keep, s2d_err *err) {
    static const char *const i64_names[7] = {"steps/stage", "steps/step", "steps/policy_version", "steps/seq_begin",
                                             "steps/n_seqs", "seqs/offsets", "seqs/prompt_len"};
    static const char *const f32_names[5] = {"seqs/reward", "seqs/advantage", "logp/behaviour", "logp/teacher",
                                             "logp/reference"};
    int64_t *iv[8] = {0}, *tokens64 = NULL;
    float *fv[5] = {0};
    size_t n;
    bool ok = h5_read_i64(path, "tokens", &tokens64, &n, err);
    for (int k = 0; ok && k < 7; k++) ok = h5_read_i64(path, i64_names[k], &iv[k], &n, err);
    for (int k = 0; ok && k < 5; k++) ok = h5_read_f32(path, f32_names[k], &fv[k], &n, err);
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.cut.%d", path, (int)getpid());
    s2d_tmp_register(tmp); /* removed on die() or a fatal signal */
    rollout_log *rl = ok ? rollout_log_open(tmp, err) : NULL;
    ok = rl != NULL;
    const int64_t *off = ok ? iv[5] : NULL;
    for (long i = 0; ok && i < keep; i++) {
        long s0 = (long)iv[3][i], ns = (long)iv[4][i], t0 = (long)off[s0];
        int32_t *loff = xmalloc((size_t)(ns + 1) * sizeof(int32_t)), *plen = xmalloc((size_t)(ns + 1) * sizeof(int32_t));
        long nt = (long)off[s0 + ns] - t0;
        int32_t *tok = xmalloc((size_t)(nt + 1) * sizeof(int32_t));
        for (long j = 0; j <= ns; j++) loff[j] = (int32_t)(off[s0 + j] - t0);
        for (long j = 0; j < ns; j++) plen[j] = (int32_t)iv[6][s0 + j];
        for (long t = 0; t < nt; t++) tok[t] = (int32_t)tokens64[t0 + t];
        rollout_step st = {.stage = (int)iv[0][i], .step = (long)iv[1][i], .policy_version = (long)iv[2][i],
                           .n_seqs = (int)ns, .offsets = loff, .tokens = tok, .prompt_len = plen,
                           .reward = fv[0] + s0, .advantage = fv[1] + s0, .logp_behaviour = fv[2] + t0,
                           .logp_teacher = fv[3] + t0, .logp_reference = fv[4] + t0};
        ok = rollout_log_append(rl, &st, err);
        free(loff), free(plen), free(tok);
    }
    if (rl && !rollout_log_close(rl, err)) ok = false;
    if (ok && rename(tmp, path) != 0) ok = err_set(err, "%s: cannot replace: %s", path, strerror(errno));
    if (!ok) unlink(tmp);
    s2d_tmp_unregister(tmp);
    free(tokens64);
    for (int k = 0; k < 7; k++) free(iv[k]);
    for (int k = 0; k < 5; k++) free(fv[k]);
    return ok;
}

bool pl_logs_open(pl_run *r, s2d_err *err) {
    const train_config *tc = r->tc;
    char rpath[4096], mpath[4096];
    path_join(rpath, sizeof rpath, r->out, "rollouts.h5");
    path_join(mpath, sizeof mpath, r->out, "metrics.h5");
    const char *paths[2] = {rpath, mpath}, *row_sets[2] = {"steps/step", "step"};
    bool on[2] = {tc->log_rollouts, tc->log_metrics_h5};
    for (int k = 0; k < 2; k++) {
        if (!on[k]) continue;
        if (!r->resume.active) { /* a fresh run starts fresh logs */
            if (exists(paths[k]) && unlink(paths[k]) != 0)
                return err_set(err, "%s: cannot remove the old log: %s", paths[k], strerror(errno));
            continue;
        }
        long rows;
        if (!log_rows(paths[k], row_sets[k], &rows, err)) return false;
        if (rows < r->log_rows)
            return err_set(err, "%s: has %ld steps but the checkpoint %s follows %ld (was logging switched on, or "
                                "the file replaced?)", paths[k], rows, r->resume.path, r->log_rows);
        if (rows > r->log_rows) {
            log_info("%s: dropping %ld steps logged after the checkpoint", paths[k], rows - r->log_rows);
            if (!(k == 0 ? cut_rollouts(paths[k], r->log_rows, err) : cut_metrics(paths[k], r->log_rows, err)))
                return false;
        }
    }
    if (tc->log_rollouts && !(r->rollouts = rollout_log_open(rpath, err))) return false;
    if (tc->log_metrics_h5 && !(r->metrics_h5 = metrics_log_open(mpath, metric_fields, PL_N_METRIC_FIELDS, err)))
        return false;
    if (tc->log_tensorboard && r->metrics.direct) {
        log_warn("%s is not a regular file: no TensorBoard events (logging.tensorboard)", r->metrics.path);
    } else if (tc->log_tensorboard) { /* follows the metrics temp file; a resume rewrites the whole history */
        char tdir[4096];
        path_join(tdir, sizeof tdir, r->out, "tensorboard");
        if (!(r->tb = metrics_tb_open(tdir, r->metrics.tmp, err))) return err_prefix(err, "logging.tensorboard");
    }
    return true;
}

bool pl_tb_sync(pl_run *r, s2d_err *err) {
    if (!r->tb) return true;
    if (fflush(r->metrics.fp) != 0) return err_set(err, "%s: write failed: %s", r->metrics.tmp, strerror(errno));
    return metrics_tb_sync(r->tb, err);
}

bool pl_logs_close(pl_run *r, s2d_err *err) {
    bool ok = true;
    if (r->rollouts) ok = rollout_log_close(r->rollouts, err) && ok, r->rollouts = NULL;
    if (r->metrics_h5) ok = metrics_log_close(r->metrics_h5, err) && ok, r->metrics_h5 = NULL;
    if (r->tb) ok = metrics_tb_close(r->tb, err) && ok, r->tb = NULL;
    return ok;
}

bool pl_prepare_out(const char *out, bool resume, bool overwrite, s2d_err *err) {
    if (!resume && !overwrite && dir_has_entries(out))
        return err_set(err, "%s: the output directory is not empty (an earlier run?): --resume continues that run, "
                       "--overwrite starts a new one there (its checkpoints and logs are removed)", out);
    int n = remove_dead_temps(out, 2);
    if (n) log_info("%s: removed %d temp file(s) left by run(s) that died", out, n);
    if (!resume && overwrite && dir_has_entries(out)) {
        /* the old run's checkpoints must go (a later --resume would pick them); its logs and config are replaced */
        static const char *const files[] = {"config.yaml", "metrics.jsonl", "metrics.h5", "rollouts.h5", "budget.json"};
        char p[4096];
        for (size_t i = 0; i < S2D_ARRAY_LEN(files); i++) {
            path_join(p, sizeof p, out, files[i]);
            if (unlink(p) != 0 && errno != ENOENT) return err_set(err, "%s: cannot remove: %s", p, strerror(errno));
        }
        char dir[4096];
        path_join(dir, sizeof dir, out, "checkpoints");
        DIR *d = opendir(dir);
        struct dirent *e;
        while (d && (e = readdir(d))) {
            int stage, used = 0;
            long step;
            if (sscanf(e->d_name, "ckpt-%d-%ld.h5%n", &stage, &step, &used) != 2 || e->d_name[used] != '\0') continue;
            path_join(p, sizeof p, dir, e->d_name);
            if (unlink(p) != 0) {
                closedir(d);
                return err_set(err, "%s: cannot remove: %s", p, strerror(errno));
            }
        }
        if (d) closedir(d);
        int gone;
        path_join(dir, sizeof dir, out, "tensorboard"); /* its events would mix with the new run's */
        if (!tb_remove_event_files(dir, NULL, &gone, err)) return false;
        log_info("%s: --overwrite: removed the earlier run's checkpoints and logs", out);
    }
    return true;
}

/* The model definition behind a name a stage uses: a models: entry, or an earlier stage's output (whose model
 * is its policy's). NULL when unknown. */
static const tc_model *stage_model(const train_config *tc, int before_stage, const char *name) {
    for (int i = 0; i < tc->n_models; i++)
        if (strcmp(tc->models[i].name, name) == 0) return &tc->models[i];
    for (int j = before_stage - 1; j >= 0; j--)
        if (strcmp(tc->stages[j].output, name) == 0) return stage_model(tc, j, tc->stages[j].policy);
    return NULL;
}

/* A lower bound on the bytes one prompt of stage si costs in the step's buffers (stage_open sizes them once):
 * group_size sequences of at least 1 + max_new_tokens tokens, each token with its six per-token arrays (ids,
 * mask, behaviour / teacher log-probs, advantage, row slot), the generated tokens and log-probs as they travel
 * (packed, then unpacked), and the teacher's top-k or full log-probs of fkl / opd (full, topk). V: the policy's vocabulary. */
static double prompt_bytes(const tc_stage *s, int V) {
    const bool generate = s->algo != ALGO_SFT;
    const double seq = 1.0 + (generate ? s->max_new_tokens : 1);
    double per_token = 6 * 4.0;
    if (s->teacher_dist == DIST_TOPK) per_token += 8.0 * s->teacher_topk;
    if (s->teacher_dist == DIST_FULL) per_token += 4.0 * V;
    return (double)s->group_size * (seq * per_token + (generate ? 16.0 * s->max_new_tokens : 0));
}

/* The step's buffers of each stage against the memory this process can have, naming prompts_per_step (with
 * what multiplies it) and how many prompts would fit; before anything is allocated or written. */
static bool check_stage_memory(const train_config *tc, bool warn_only, s2d_err *err) {
    const char *bound;
    const double avail = (double)s2d_mem_available(&bound);
    for (int si = 0; si < tc->n_stages; si++) {
        const tc_stage *s = &tc->stages[si];
        const tc_model *pm = stage_model(tc, si, s->policy);
        if (!pm || !pm->cfg_known) continue;
        const double per_prompt = prompt_bytes(s, pm->cfg.vocab), need = per_prompt * s->prompts_per_step;
        if (need <= avail) continue;
        s2d_err e;
        err_set(&e, "%s: pipeline[%d].prompts_per_step: %d prompts x group_size %d x (1 + max_new_tokens %d) tokens%s "
                "need at least %.1f GB for the step's buffers, more than the %.1f GB available (%s): at most %.0f "
                "prompts a step fit", s->where, si, s->prompts_per_step, s->group_size,
                s->algo == ALGO_SFT ? 1 : s->max_new_tokens,
                s->teacher_dist != DIST_FULL ? "" : s->algo == ALGO_OPD ? " x the full vocabulary (opd.mode: full)"
                                                                       : " x the full vocabulary (fkl.mode: full)",
                need / 1e9, avail / 1e9, bound, floor(avail / per_prompt));
        if (!warn_only) return err_set(err, "%s", e.msg);
        log_warn("%s", e.msg);
    }
    return true;
}

bool pl_check_inputs(const train_config *tc, bool warn_only, s2d_err *err) {
    s2d_err e;
    bool ok = true;
    /* memory on this machine: a dry run (perhaps elsewhere) warns */
    if (!check_stage_memory(tc, warn_only, err)) return false;
    /* sizes against the models (known from their config.json): errors even in a dry run */
    for (int si = 0; si < tc->n_stages; si++) {
        const tc_stage *s = &tc->stages[si];
        const tc_model *pm = stage_model(tc, si, s->policy);
        for (int k = 0; k < 2 && pm && pm->cfg_known; k++) {
            int n = k == 0 ? s->max_new_tokens : s->eval_data[0] ? s->eval_max_new_tokens : 0;
            if (n >= pm->cfg.max_pos)
                return err_set(err, "%s: pipeline[%d].%s.max_new_tokens: %d leaves no room for a prompt in model '%s' "
                               "(max_position_embeddings %d)", s->where, si, k == 0 ? "sampling" : "eval", n, pm->name,
                               pm->cfg.max_pos);
        }
        const tc_model *tm = s->teacher[0] ? stage_model(tc, si, s->teacher) : NULL;
        if (s->teacher_dist == DIST_TOPK && tm && tm->cfg_known && s->teacher_topk > tm->cfg.vocab)
            return err_set(err, "%s: pipeline[%d].%s.topk: %d is more than the teacher '%s' vocabulary of %d tokens",
                           s->where, si, s->algo == ALGO_OPD ? "opd" : "fkl", s->teacher_topk, tm->name,
                           tm->cfg.vocab);
    }
    for (int i = 0; i < tc->n_models && ok; i++) {
        const tc_model *m = &tc->models[i];
        if (!m->tokenizer || !m->cfg_known) continue; /* a dry run without the model dir checks nothing of it */
        struct stat st;
        char p[4096];
        if (stat(m->tokenizer, &st) == 0 && S_ISDIR(st.st_mode)) path_join(p, sizeof p, m->tokenizer, "tokenizer.json");
        else snprintf(p, sizeof p, "%s", m->tokenizer);
        if (!check_regular(p, &e)) {
            err_prefix(&e, "%s: models.%s.tokenizer", m->where, m->name);
            if (warn_only) log_warn("%s", e.msg);
            else ok = err_set(err, "%s", e.msg);
        }
    }
    for (int i = 0; i < tc->n_datasets && ok; i++) {
        const tc_dataset *d = &tc->datasets[i];
        if (d->file && !check_regular(d->file, &e)) {
            err_prefix(&e, "%s: datasets.%s.file", d->where, d->name);
            if (warn_only) log_warn("%s", e.msg);
            else ok = err_set(err, "%s", e.msg);
        } else if (d->file && !warn_only) { /* a bad line fails now, not after the outputs are started */
            dataset ds;
            ds_load_opts o = {.format = d->format};
            if (!dataset_load(&ds, d->file, &o, err)) ok = err_prefix(err, "%s: datasets.%s", d->where, d->name);
            else dataset_free(&ds);
        }
    }
    return ok;
}
