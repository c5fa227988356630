/* step.c: the step protocol of a stage (docs/design.md §2): one function per step of the data flow, each a
 * collective over the group it names, driven by stage_steps. */
#include "runtime/stage.h"

#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/fault_point.h"
#include "core/log.h"
#include "core/timer.h"
#include "runtime/step_metrics.h"
#include "text/verify.h"

static void json_num(FILE *f, const char *key, double v) {
    if (isfinite(v)) fprintf(f, ", \"%s\": %.6g", key, v);
    else fprintf(f, ", \"%s\": null", key);
}

/* fault.rank / fault.step / fault.kind: the injected failure of the MPI tests (kill, error, hang, stop). */
static void inject_fault(const train_config *tc, const transport *tp, long global_step) {
    if (tc->fault_rank != tp->rank || global_step != tc->fault_step) return;
    fprintf(stderr, "s2d: fault injection: rank %d (%s) %s at step %ld\n", tp->rank, tp_role_name(tp->role),
            tc->fault_kind == FAULT_KILL    ? "raises SIGKILL"
            : tc->fault_kind == FAULT_ERROR ? "fails"
            : tc->fault_kind == FAULT_HANG  ? "hangs"
                                            : "stops (SIGSTOP)",
            global_step);
    fflush(stderr);
    if (tc->fault_kind == FAULT_KILL) raise(SIGKILL);
    if (tc->fault_kind == FAULT_STOP) raise(SIGSTOP); /* its peers' timeouts or heartbeat checks must notice */
    /* hang; or continued after the stop, which is the launcher ending the job (SIGCONT, then SIGTERM) */
    while (tc->fault_kind == FAULT_HANG || tc->fault_kind == FAULT_STOP) sleep(1);
    die("injected fault (fault.kind: error) at step %ld", global_step);
}

/* 1-2. prompts out, completions back (TP_GEN) */
bool step_rollouts(stage_ctx *c, step_state *x, s2d_err *err) {
    pl_run *r = c->r;
    if (!fault_point("the step's rollouts", err)) return false;
    if (!pl_rollouts_advance(&c->rq, x->step, c->version, &x->me.gen, err)) return false;
    pl_rollout *rx = c->is_sched ? pl_rollouts_front(&c->rq, x->step) : NULL;
    if (rx && r->budget) { /* its prompts and its first generation round, counted when the step trains */
        if (!pl_budget_prompts(r->budget, r->tc, c->si, c->di, rx->idx, c->P, rx->unique, rx->total, err)) return false;
        long prompt_tokens = 0;
        for (int i = 0; i < c->B; i++)
            prompt_tokens += c->enc.start[rx->idx[i / c->G] + 1] - c->enc.start[rx->idx[i / c->G]];
        if (c->generate) pl_budget_round(r->budget, c->si, c->B, prompt_tokens, rx->gen_tokens);
    }
    if (c->refill) { /* DAPO refill rounds (lag 0 only: train_config refuses refill with a policy lag) */
        long extra_tokens = 0;
        if (!pl_refill_step(&c->rf, r, c->si, x->step, c->version, &c->cur, c->tok, c->ts, rx ? rx->idx : NULL,
                            rx ? &rx->res : NULL, rx ? &rx->gen_tokens : &extra_tokens, err))
            return false;
        if (rx) rx->unique = c->cur.unique, rx->total = c->cur.total;
    }
    x->rx = rx;
    if (rx) x->idx = rx->idx, x->res = rx->res, x->gen_tokens = rx->gen_tokens;
    return true;
}

/* The scheduler's rewards (the verifier's, or the reward command's) and group advantages of a grpo step; the
 * advantage on every row, the mask cleared on dropped sequences. */
static bool verify_and_advantages(stage_ctx *c, step_state *x, s2d_err *err) {
    const tc_stage *s = c->s;
    pl_run *r = c->r;
    pl_batch *b = &c->b;
    const int B = c->B, G = c->G;
    const gen_result *res = &x->res;
    int correct = 0;
    double reward_sum = 0;
    if (r->reward) reward_cmd_step_reset(r->reward);
    for (int i = 0; i < B; i++) {
        int a = res->start[i];
        c->rewards[i] = 0;
        if (tok_decode(c->tok, res->tokens + a, (size_t)(res->start[i + 1] - a), &r->text, err)) {
            verify_result vr;
            verify_math(r->text.bytes, c->ts->answer[x->idx[i / G]], &vr);
            c->rewards[i] = vr.correct ? 1.0f : 0.0f;
            correct += vr.correct;
            if (r->reward && !stage_command_reward(c, x->idx[i / G], i % G, x->step, &c->rewards[i], err)) return false;
        }
        reward_sum += c->rewards[i];
    }
    x->acc = (double)correct / B; /* the verifier's accuracy; the reward may be the command's */
    x->reward_mean = reward_sum / B;
    grpo_group_advantages(c->rewards, c->P, G, s->std, 1e-6f, c->adv, c->zero_var);
    for (int i = 0; i < B; i++) {
        bool drop = (s->mask_truncated && res->finish[i] == GEN_FINISH_LENGTH) ||
                    (s->filter_zero_variance && c->zero_var[i / G]);
        for (int t = b->seq_start[i]; t < b->seq_start[i + 1]; t++) {
            b->adv[t] = c->adv[i];
            if (drop) b->mask[t] = 0;
        }
    }
    return true;
}

/* 3. scheduler: prompt + completion per sequence (the SFT target when nothing is generated), the trained rows,
 * behaviour log-probs; grpo rewards and advantages; the row slots of the masked rows */
bool step_build_batch(stage_ctx *c, step_state *x, s2d_err *err) {
    pl_batch *b = &c->b;
    b->n_seqs = c->B;
    b->seq_start[0] = 0;
    x->reward_mean = NAN, x->acc = NAN;
    if (!c->is_sched) return true;
    const enc_set *enc = &c->enc;
    const gen_result *res = &x->res;
    int T = 0;
    for (int i = 0; i < c->B; i++) {
        int p = x->idx[i / c->G], a = enc->start[p], n = enc->start[p + 1] - a;
        const int32_t *comp = c->generate ? res->tokens + res->start[i] : enc->tids + enc->tstart[p];
        int nc = c->generate ? res->start[i + 1] - res->start[i] : enc->tstart[p + 1] - enc->tstart[p];
        memcpy(b->tokens + T, enc->ids + a, (size_t)n * sizeof(int32_t));
        memcpy(b->tokens + T + n, comp, (size_t)nc * sizeof(int32_t));
        for (int t = 0; t < n + nc; t++) {
            int row = T + t;
            bool trained = t >= n - 1 && t < n + nc - 1;
            b->mask[row] = trained ? 1.0f : 0.0f;
            b->logp_behaviour[row] = trained && c->generate ? res->logprobs[res->start[i] + (t - n + 1)] : 0.0f;
        }
        T += n + nc;
        b->seq_start[i + 1] = T;
    }
    x->T = T;
    if (c->s->algo == ALGO_GRPO && !verify_and_advantages(c, x, err)) return false;
    b->n_rows = 0;
    for (int t = 0; t < T; t++) b->row_slot[t] = b->mask[t] != 0 ? b->n_rows++ : -1;
    return true;
}

/* 4a. TP_BATCH: the token batch -> scorers and learners; then the rollouts sampled ahead come back while the
 * learners work on it */
void step_send_batch(stage_ctx *c, step_state *x) {
    transport *tp = c->tp;
    pl_batch *b = &c->b;
    if (c->is_sched || c->is_scorer || c->is_learner) {
        int hdr[2] = {x->T, b->n_rows};
        tp->bcast(tp, TP_BATCH, 0, hdr, sizeof hdr, "the token batch header");
        x->T = hdr[0], b->n_rows = hdr[1];
        const size_t T = (size_t)x->T;
        tp->bcast(tp, TP_BATCH, 0, b->seq_start, (size_t)(c->B + 1) * sizeof(int), "the batch layout");
        tp->bcast(tp, TP_BATCH, 0, b->tokens, T * sizeof(int32_t), "the batch tokens");
        tp->bcast(tp, TP_BATCH, 0, b->mask, T * sizeof(float), "the batch mask");
        tp->bcast(tp, TP_BATCH, 0, b->logp_behaviour, T * sizeof(float), "behaviour log-probs");
        tp->bcast(tp, TP_BATCH, 0, b->adv, T * sizeof(float), "advantages");
        tp->bcast(tp, TP_BATCH, 0, b->row_slot, T * sizeof(int), "row slots");
    }
    pl_rollouts_finish_deferred(&c->rq);
}

/* Scorer k's rows of the batch -> every learner (TP_PAYLOAD). */
static void send_scores(stage_ctx *c, int k) {
    const tc_stage *s = c->s;
    transport *tp = c->tp;
    pl_batch *b = &c->b;
    long m0, m1, s0, s1, unused;
    tp_split(c->M, c->n_scorers, k, &m0, &m1);
    if (m1 <= m0) return;
    tp_split(c->B, c->M, (int)m0, &s0, &unused);
    tp_split(c->B, c->M, (int)m1 - 1, &unused, &s1);
    int r0 = b->seq_start[s0], r1 = b->seq_start[s1], sl0 = 0, sl1 = 0;
    for (int t = 0; t < r1; t++) sl1 += b->mask[t] != 0, sl0 += t < r0 && b->mask[t] != 0;
    if (s->algo == ALGO_OPD)
        tp->bcast(tp, TP_PAYLOAD, k, b->logp_teacher + r0, (size_t)(r1 - r0) * sizeof(float), "teacher log-probs");
    if (c->need_ref)
        tp->bcast(tp, TP_PAYLOAD, k, b->logp_ref + r0, (size_t)(r1 - r0) * sizeof(float), "reference log-probs");
    if (c->fkl_logits && s->teacher_dist == DIST_TOPK) {
        size_t kk = (size_t)s->teacher_topk;
        tp->bcast(tp, TP_PAYLOAD, k, b->topk_ids + sl0 * kk, (sl1 - sl0) * kk * sizeof(int32_t), "teacher top-k ids");
        tp->bcast(tp, TP_PAYLOAD, k, b->topk_logp + sl0 * kk, (sl1 - sl0) * kk * sizeof(float),
                  "teacher top-k log-probs");
    } else if (c->fkl_logits) {
        tp->bcast(tp, TP_PAYLOAD, k, b->full_logp + (size_t)sl0 * c->V, (size_t)(sl1 - sl0) * c->V * sizeof(float),
                  "teacher distributions");
    }
}

/* 4b. scorers: per-token teacher / reference log-probs (teacher top-k or full rows for fkl), per micro-batch,
 * then TP_PAYLOAD to the learners */
bool step_score(stage_ctx *c, step_state *x, s2d_err *err) {
    const tc_stage *s = c->s;
    transport *tp = c->tp;
    bool scored = s->algo == ALGO_OPD || c->need_ref || c->fkl_logits;
    if (!scored || !(c->is_scorer || c->is_learner)) return true;
    if (c->is_scorer) {
        double t_score = time_now();
        if (!fault_point("scoring", err)) return false;
        long m0, m1;
        tp_split(c->M, c->n_scorers, tp->local ? 0 : tp->index, &m0, &m1);
        for (long mb = m0; mb < m1; mb++) {
            pl_batch v;
            int r0;
            pl_micro_view(&c->b, c->M, (int)mb, &v, c->mseq, &r0);
            if (c->ref_rows) { /* opd full at λ != 1: the target rows λ log p_T + (1 − λ) log p_ref, exact */
                if (!pl_score_opd_target(&c->teacher->m, c->teacher_ws, c->ref, c->ref_ws, s, &v, c->b.logp_teacher + r0,
                                         c->b.logp_ref + r0, c->ref_rows, err))
                    return false;
            } else if (s->algo == ALGO_OPD && c->fkl_logits) { /* opd full / topk: one teacher forward for both */
                if (!pl_score_teacher_dist(&c->teacher->m, c->teacher_ws, s, &v, c->b.logp_teacher + r0, err)) return false;
            } else if (s->algo == ALGO_OPD &&
                       !pl_score_logprobs(&c->teacher->m, c->teacher_ws, &v, c->b.logp_teacher + r0, err)) {
                return false;
            }
            if (c->ref && !c->ref_rows && !pl_score_logprobs(c->ref, c->ref_ws, &v, c->b.logp_ref + r0, err)) return false;
            if (c->fkl_logits && s->algo == ALGO_FKL && !pl_score_fkl(&c->teacher->m, c->teacher_ws, s, &v, err))
                return false;
        }
        x->me.score = time_now() - t_score;
    }
    for (int k = 0; k < c->n_scorers && !tp->local; k++) send_scores(c, k);
    return true;
}

/* Several updates on contiguous minibatches of the step, the old policy fixed before the first. */
static void learn_minibatches(stage_ctx *c, step_state *x) {
    const tc_stage *s = c->s;
    pl_learner *learner = &c->learner;
    pl_learn_stats *st = &x->st, part;
    pl_learn_logprobs(learner, &c->b, c->old_all);
    double clip = 0, loss = 0, pg = 0, klp = 0;
    for (int k = 0; k < s->minibatches; k++) {
        pl_batch v;
        int r0;
        pl_micro_view(&c->b, s->minibatches, k, &v, c->mb_seq, &r0);
        learner->fixed_old = c->old_all + r0;
        pl_learn_step(learner, s, &v, x->step, &part);
        clip += part.clip_fraction * part.tokens, loss += part.loss * part.tokens;
        pg += part.pg_loss * part.tokens, klp += part.kl_loss * part.tokens;
        st->tokens += part.tokens, st->kl = part.kl, st->grad_norm = part.grad_norm, st->lr = part.lr;
    }
    learner->fixed_old = NULL;
    st->clip_fraction = st->tokens ? clip / st->tokens : 0, st->loss = st->tokens ? loss / st->tokens : 0;
    st->pg_loss = st->tokens ? pg / st->tokens : 0, st->kl_loss = st->tokens ? klp / st->tokens : 0;
}

/* 5. learners: loss, backward, tree-ordered gradient sum, ZeRO-1 AdamW (collective over the learners) */
void step_learn(stage_ctx *c, step_state *x) {
    if (!c->is_learner) return;
    const tc_stage *s = c->s;
    pl_learner *learner = &c->learner;
    double t_learn = time_now();
    if (s->minibatches <= 1) {
        pl_learn_step(learner, s, &c->b, x->step, &x->st);
        if (x->step == c->step0 && learner->index == 0 && learner->n_buckets > 0)
            log_info("%s: %d gradient buckets (of >= %zu floats) reduce-scattered during the backward", s->name,
                     learner->n_buckets, learner->bucket_floats);
    } else {
        learn_minibatches(c, x);
    }
    x->me.learn = time_now() - t_learn;
}

/* 6. TP_WEIGHTS: learner root -> scheduler + generators: stats and the new weights (one contiguous buffer); the
 * rollout log keeps the scorers' log-probs, which the learner root passes on to the scheduler (TP_WORLD) */
void step_publish(stage_ctx *c, step_state *x) {
    transport *tp = c->tp;
    const tc_stage *s = c->s;
    model *policy = c->policy;
    double t_sync = time_now();
    if (c->learner_root || c->is_sched || c->is_gen) {
        tp->bcast(tp, TP_WEIGHTS, 0, &x->st, sizeof x->st, "learner statistics");
        tp_bcast_mem(tp, TP_WEIGHTS, 0, policy->params, policy->n_params * sizeof(float), TP_DEVICE, "new weights");
        c->version++;
    }
    if (c->is_learner || c->learner_root) x->me.sync = time_now() - t_sync;
    if (c->r->tc->log_rollouts && !tp->local && (s->algo == ALGO_OPD || c->need_ref) && (c->learner_root || c->is_sched)) {
        int from = tp_world_rank(tp, ROLE_LEARNER, 0);
        size_t bytes = (size_t)x->T * sizeof(float);
        float *bufs[2] = {s->algo == ALGO_OPD ? c->b.logp_teacher : NULL, c->need_ref ? c->b.logp_ref : NULL};
        for (int k = 0; k < 2; k++) {
            if (!bufs[k]) continue;
            if (c->learner_root) tp->send(tp, TP_WORLD, 0, bufs[k], bytes, "scored log-probs for the rollout log");
            else tp->recv(tp, TP_WORLD, from, bufs[k], bytes, "scored log-probs for the rollout log");
        }
    }
}

/* The slowest rank's seconds per phase and the mean busy fraction per role, from every rank's timings. */
static step_phases phases_of(const stage_ctx *c) {
    const transport *tp = c->tp;
    step_phases ph = {0};
    double busy[ROLE_LEARNER + 1] = {0};
    int count[ROLE_LEARNER + 1] = {0};
    int n_rec = tp->local ? 1 : tp->size;
    for (int i = 0; i < n_rec; i++) {
        const step_times *t = &c->times[i];
        double role_s[ROLE_LEARNER + 1] = {0};
        role_s[ROLE_GENERATOR] = t->gen, role_s[ROLE_SCORER] = t->score, role_s[ROLE_LEARNER] = t->learn + t->sync;
        for (int role = ROLE_GENERATOR; role <= ROLE_LEARNER; role++) {
            if (!tp->local && t->role != role) continue;
            busy[role] += t->wall > 0 ? S2D_MIN(1.0, role_s[role] / t->wall) : 0, count[role]++;
        }
        ph.gen_s = S2D_MAX(ph.gen_s, t->gen), ph.score_s = S2D_MAX(ph.score_s, t->score);
        ph.learn_s = S2D_MAX(ph.learn_s, t->learn), ph.sync_s = S2D_MAX(ph.sync_s, t->sync);
    }
    ph.busy_generators = count[ROLE_GENERATOR] ? busy[ROLE_GENERATOR] / count[ROLE_GENERATOR] : 0;
    ph.busy_scorers = count[ROLE_SCORER] ? busy[ROLE_SCORER] / count[ROLE_SCORER] : 0;
    ph.busy_learners = count[ROLE_LEARNER] ? busy[ROLE_LEARNER] / count[ROLE_LEARNER] : 0;
    return ph;
}

/* Scheduler: the step's line of metrics.jsonl (verl's rollout and reward-group statistics: NaN -> null where
 * a stage has none). */
static void write_metrics_line(stage_ctx *c, const step_state *x, const step_phases *ph, const rollout_stats *ro,
                               const group_stats *gs) {
    const tc_stage *s = c->s;
    const train_config *tc = c->r->tc;
    const pl_learn_stats *st = &x->st;
    const pl_rollout *rx = x->rx;
    const double wall = x->wall;
    FILE *f = c->r->metrics.fp;
    fprintf(f, "{\"stage\": \"%s\", \"algo\": \"%s\", \"step\": %d, \"global_step\": %ld", s->name,
            train_algo_name(s->algo), x->step + 1, c->r->global_step);
    json_num(f, "loss", st->loss), json_num(f, "reward_mean", x->reward_mean), json_num(f, "accuracy", x->acc);
    json_num(f, "kl", st->kl), json_num(f, "grad_norm", st->grad_norm), json_num(f, "lr", st->lr);
    json_num(f, "clip_fraction", st->clip_fraction);
    json_num(f, "pg_loss", st->pg_loss), json_num(f, "kl_loss", st->kl_loss), json_num(f, "entropy", ro->entropy);
    json_num(f, "response_length_mean", ro->response_length_mean);
    json_num(f, "response_length_max", ro->response_length_max);
    json_num(f, "truncation_rate", ro->truncation_rate), json_num(f, "reward_std", gs->reward_std);
    json_num(f, "advantage_std", gs->advantage_std), json_num(f, "zero_variance_fraction", gs->zero_variance_fraction);
    fprintf(f, ", \"tokens\": %d, \"trained_tokens\": %ld, \"generated_tokens\": %ld", x->T, st->tokens, x->gen_tokens);
    json_num(f, "gen_s", ph->gen_s), json_num(f, "score_s", ph->score_s), json_num(f, "learn_s", ph->learn_s);
    json_num(f, "sync_s", ph->sync_s), json_num(f, "step_s", wall), json_num(f, "tokens_per_s", wall > 0 ? x->T / wall : 0);
    json_num(f, "busy_generators", ph->busy_generators), json_num(f, "busy_scorers", ph->busy_scorers);
    json_num(f, "busy_learners", ph->busy_learners);
    fprintf(f, ", \"ranks\": %d, \"layout\": \"%s\", \"policy_version\": %lld", c->tp->size, c->layout,
            (long long)c->version - 1);
    if (tc->max_policy_lag > 0) /* the weights that sampled this batch, and how many updates behind they were */
        fprintf(f, ", \"rollout_version\": %lld, \"policy_lag\": %lld", (long long)rx->version,
                (long long)(c->version - 1 - rx->version));
    fprintf(f, ", \"labelled_unique\": %ld, \"labelled_total\": %ld, \"unlabelled_prompts\": %ld",
            c->labelled ? rx->unique : 0, c->labelled ? rx->total : 0, c->labelled ? 0 : rx->total);
    if (c->r->reward && s->algo == ALGO_GRPO) reward_cmd_write_metrics(c->r->reward, f); /* reward/<name> */
    fputs("}\n", f);
}

/* Scheduler: the step's rows of OUT/rollouts.h5 and OUT/metrics.h5. */
static bool append_logs(stage_ctx *c, const step_state *x, const rollout_stats *ro, const group_stats *gs,
                        s2d_err *err) {
    pl_run *r = c->r;
    const tc_stage *s = c->s;
    const pl_learn_stats *st = &x->st;
    const pl_rollout *rx = x->rx;
    const double wall = x->wall;
    if (!fault_point("the HDF5 logs", err)) return false;
    for (int i = 0; i < c->B; i++) {
        int p = x->idx[i / c->G];
        c->prompt_len[i] = c->enc.start[p + 1] - c->enc.start[p];
    }
    const bool grpo = s->algo == ALGO_GRPO;
    rollout_step rs = {.stage = c->si, .step = x->step + 1, .policy_version = (long)rx->version, .n_seqs = c->B,
                       .offsets = c->b.seq_start, .tokens = c->b.tokens, .prompt_len = c->prompt_len,
                       .reward = grpo ? c->rewards : NULL, .advantage = grpo ? c->adv : NULL,
                       .logp_behaviour = c->generate ? c->b.logp_behaviour : NULL,
                       .logp_teacher = s->algo == ALGO_OPD ? c->b.logp_teacher : NULL,
                       .logp_reference = c->need_ref ? c->b.logp_ref : NULL};
    double row[PL_N_METRIC_FIELDS] = {st->loss, x->reward_mean, x->acc, st->kl, st->grad_norm, st->lr,
                                      st->clip_fraction, x->T, (double)st->tokens, (double)x->gen_tokens,
                                      (double)c->version - 1, c->labelled ? rx->unique : 0,
                                      c->labelled ? rx->total : 0, c->labelled ? 0 : rx->total, wall,
                                      wall > 0 ? x->T / wall : 0, (double)r->global_step, st->pg_loss, st->kl_loss,
                                      ro->entropy, ro->response_length_mean, ro->response_length_max,
                                      ro->truncation_rate, gs->reward_std, gs->advantage_std,
                                      gs->zero_variance_fraction};
    if (r->rollouts && !rollout_log_append(r->rollouts, &rs, err)) return false;
    const char *extra_names[REWARD_MAX_EXTRAS]; /* reward/<name>: the reward command's extras */
    double extra_values[REWARD_MAX_EXTRAS];
    const int n_extra =
        r->reward && grpo ? reward_cmd_extras(r->reward, extra_names, extra_values, REWARD_MAX_EXTRAS) : 0;
    if (r->metrics_h5 && !metrics_log_append_extras(r->metrics_h5, c->si, x->step + 1, row, extra_names,
                                                    extra_values, n_extra, err))
        return false;
    r->log_rows++;
    return true;
}

/* 7. TP_WORLD: every rank's timings -> the scheduler; scheduler: progress line, metrics, periodic eval, logs,
 * the periodic model save, TensorBoard */
bool step_log(stage_ctx *c, step_state *x, s2d_err *err) {
    const tc_stage *s = c->s;
    pl_run *r = c->r;
    transport *tp = c->tp;
    double t_end = time_now();
    x->me.wall = x->wall = t_end - x->t0;
    tp->gatherv(tp, TP_WORLD, &x->me, sizeof x->me, c->times, (size_t)(tp->size + 1) * sizeof(step_times),
                c->time_counts, "step timings");
    if (!c->is_sched) return true;
    const pl_learn_stats *st = &x->st;
    step_phases ph = phases_of(c);
    c->sum->gen_s += ph.gen_s, c->sum->score_s += ph.score_s, c->sum->learn_s += ph.learn_s + ph.sync_s;
    double elapsed = t_end - c->t_stage, eta = elapsed / (x->step + 1 - c->step0) * (s->steps - x->step - 1);
    char rw[64] = "-", ac[64] = "-"; /* fkl / opd stages have no reward: "-", not nan */
    if (!isnan(x->reward_mean)) snprintf(rw, sizeof rw, "%.3f", x->reward_mean);
    if (!isnan(x->acc)) snprintf(ac, sizeof ac, "%.3f", x->acc);
    fprintf(stderr,
            "[%s] step %d/%d | reward %s acc %s | kl %.4f | loss %.4f | %.0f tok/s | gen %.2fs score %.2fs "
            "learn %.2fs sync %.2fs | busy g%.0f%% s%.0f%% l%.0f%% | ETA %.0fs\n",
            s->name, x->step + 1, s->steps, rw, ac, st->kl, st->loss, (double)x->T / x->wall, ph.gen_s, ph.score_s,
            ph.learn_s, ph.sync_s, 100 * ph.busy_generators, 100 * ph.busy_scorers, 100 * ph.busy_learners, eta);
    if (!isfinite(st->loss) || !isfinite(st->kl) || !isfinite(st->grad_norm)) /* before this step is saved */
        return err_set(err, "[%s] stage %d, step %d: training diverged: loss %g, kl %g, grad_norm %g (not all "
                       "finite); nothing of this step was saved, the last checkpoint is intact (lower "
                       "optimizer.lr or set optimizer.clip)", s->name, c->si, x->step + 1, st->loss, st->kl,
                       st->grad_norm);
    rollout_stats ro = {NAN, NAN, NAN, NAN};
    group_stats gs = {NAN, NAN, NAN};
    if (c->generate) rollout_stats_of(c->B, x->res.start, x->res.finish, x->res.logprobs, &ro);
    if (s->algo == ALGO_GRPO) group_stats_of(c->P, c->G, c->rewards, c->adv, c->zero_var, &gs);
    if (r->budget) pl_budget_step(r->budget, r->tc, c->si, x->T, st->tokens);
    write_metrics_line(c, x, &ph, &ro, &gs);
    if (c->has_eval && s->eval_every > 0 && (x->step + 1) % s->eval_every == 0 && x->step + 1 < s->steps) {
        double acc;
        if (!stage_eval(c, x->step + 1, EVAL_DURING, &acc, err)) return false;
    }
    if ((r->rollouts || r->metrics_h5) && !append_logs(c, x, &ro, &gs, err)) return false;
    if (s->ckpt_every > 0 && (x->step + 1) % s->ckpt_every == 0 && x->step + 1 < s->steps &&
        (!fault_point("save the model", err) || !pl_save_model(r, c->out, err)))
        return false;
    return fault_point("TensorBoard", err) && pl_tb_sync(r, err); /* this step's lines -> OUT/tensorboard */
}

bool step_end(stage_ctx *c, step_state *x, bool *stop, s2d_err *err) {
    const tc_stage *s = c->s;
    const train_config *tc = c->r->tc;
    if (x->rx) pl_rollouts_pop(&c->rq);
    /* a checkpoint at the cadence (and at fault.stop_after_step), collective over every rank */
    bool stop_here = tc->stop_after_step > 0 && tc->stop_after_step == c->r->global_step;
    *stop = false;
    if (x->step + 1 < s->steps && ((s->ckpt_every > 0 && (x->step + 1) % s->ckpt_every == 0) || stop_here)) {
        /* checkpoints hold no pending rollouts: the queue drains at checkpoint steps (config-checked for stops) */
        CHECK(c->rq.next == x->step + 1 && c->rq.n == 0, "checkpoint at step %d with rollouts of later steps pending",
              x->step + 1);
        if (!fault_point("the checkpoint", err) ||
            !pl_checkpoint(c->r, c->si, x->step + 1, true, &c->cur, c->is_learner ? &c->learner : NULL, err))
            return false;
        *stop = stop_here;
    }
    return true;
}

/* The stage's end: its output -> every rank (later stages may score with it or train it), the last eval, the
 * label counts, the saved model and the stage-end checkpoint (a resume never redoes a finished stage). */
static bool stage_end(stage_ctx *c, s2d_err *err) {
    const tc_stage *s = c->s;
    pl_run *r = c->r;
    transport *tp = c->tp;
    stage_summary *sum = c->sum;
    tp_bcast_mem(tp, TP_WORLD, tp_world_rank(tp, ROLE_LEARNER, 0), c->policy->params,
                 c->policy->n_params * sizeof(float), TP_DEVICE, "the stage's final weights");
    sum->seconds = c->seconds_before + time_now() - c->t_stage;
    if (c->has_eval && !stage_eval(c, s->steps, EVAL_AFTER, &sum->acc_after, err)) return false;
    sum->labelled_unique = c->labelled ? c->cur.unique : 0, sum->labelled_total = c->labelled ? c->cur.total : 0;
    sum->unlabelled_unique = c->labelled ? 0 : c->cur.unique, sum->unlabelled_total = c->labelled ? 0 : c->cur.total;
    if (c->is_sched) {
        fprintf(r->metrics.fp,
                "{\"stage\": \"%s\", \"event\": \"labels\", \"global_step\": %ld, \"labelled_unique\": %ld, "
                "\"labelled_total\": %ld, \"unlabelled_prompts\": %ld, \"unlabelled_unique\": %ld}\n",
                s->name, r->global_step, sum->labelled_unique, sum->labelled_total, sum->unlabelled_total,
                sum->unlabelled_unique);
        if (!fault_point("TensorBoard", err) || !pl_tb_sync(r, err)) return false; /* flushes metrics.jsonl too */
        log_info("[%s] labels: %ld labelled examples (%ld unique), %ld unlabelled prompts", s->name, sum->labelled_total,
                 sum->labelled_unique, sum->unlabelled_total);
        if (!fault_point("save the model", err) || !pl_save_model(r, c->out, err)) return false;
    }
    if (!fault_point("the checkpoint", err) || !pl_checkpoint(r, c->si, s->steps, false, &c->cur, NULL, err))
        return false;
    if (r->tc->stop_after_step > 0 && r->tc->stop_after_step == r->global_step) r->stopped = true;
    return true;
}

bool stage_steps(stage_ctx *c, s2d_err *err) {
    const tc_stage *s = c->s;
    pl_run *r = c->r;
    if (c->has_eval && c->step0 == 0 && !stage_eval(c, 0, EVAL_BEFORE, &c->sum->acc_before, err)) return false;
    c->sum->has_eval = c->has_eval;
    c->t_stage = time_now(), c->seconds_before = c->sum->seconds;
    for (int step = c->step0; step < s->steps; step++) {
        r->global_step++;
        inject_fault(r->tc, c->tp, r->global_step);
        step_state x = {.step = step, .t0 = time_now(), .me = {.role = (int32_t)c->tp->role}};
        bool stop = false;
        if (!step_rollouts(c, &x, err) || !step_build_batch(c, &x, err)) return false;
        step_send_batch(c, &x);
        if (!step_score(c, &x, err)) return false;
        step_learn(c, &x);
        step_publish(c, &x);
        if (!step_log(c, &x, err) || !step_end(c, &x, &stop, err)) return false;
        if (stop) {
            r->stopped = true;
            return true;
        }
    }
    return stage_end(c, err);
}
