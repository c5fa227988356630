/* s2d eval: sample K completions per problem and score them with the verifier.
 *
 *   s2d eval --model DIR [--tokenizer DIR] --data FILE [--data FILE ...] [--samples K] [options]
 *
 * The tokenizer defaults to the model directory, K to 1. The template: --template, else the one the
 * tokenizer's tokenizer_config.json chat_template is (text/chat.h; refused when it is none of the built-in
 * ones), else the architecture's default; a template that does not fit the model's type and K > 1 at
 * temperature 0 (K identical samples) are warned about.
 *
 * For each dataset: every problem is rendered with the chat template ("{problem}\n{instruction}" as the user
 * turn), tokenized, and sampled K times (continuous batching, model/generate.h); each completion is decoded
 * (its stop token removed) and verified against the reference answer (text/verify.h: math mode, or gsm8k mode
 * for the gsm8k format). stdout gets one JSON line per dataset:
 *   {"data", "format", "template", "problems", "samples", "avg@K", "avg@K_stderr", "pass@1", "pass@K", "maj@K",
 *    "no_answer", "truncated", "mean_new_tokens"[, "by_subject", "by_level"][, "reward_mean", "reward/<name>"]}
 *   avg@K   mean over problems of c/K (c = correct samples of the problem); avg@K_stderr its standard error,
 *           sd(c/K over problems, n - 1 denominator) / sqrt(n) (null for one problem)
 *   by_subject / by_level  (records with MATH's `subject` / `level` fields) {"<value>": {"problems", "avg@K",
 *           "avg@K_stderr"}, ...}, keys sorted
 *   --reward-command CMD: each sample is also scored by the command (text/reward_cmd.h; correctness stays the
 *           verifier's): reward_mean and the means of its extra fields, and "reward" on each --out line
 *   pass@k  unbiased estimator 1 - C(K-c, k)/C(K, k) (Chen et al. 2021), for k = 1 and k = K
 *   maj@K   the most common extracted answer (answers grouped by verifier equivalence; ties: the group
 *           formed first) is correct; a problem with no extracted answer counts as wrong
 * --out FILE.jsonl gets every sample: {"dataset", "id", "sample", "correct", "extracted", "finish",
 * "n_tokens", "completion"} (written atomically when everything succeeded).
 * Sample s of a problem uses the random stream keyed by (seed, hash(prompt) + s), so a problem's samples
 * do not depend on the other problems, --limit, or the batch size. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/commands.h"
#include "core/common.h"
#include "core/log.h"
#include "core/timer.h"
#include "io/dataset.h"
#include "model/generate.h"
#include "model/model.h"
#include "text/chat.h"
#include "text/reward_cmd.h"
#include "text/tokenizer.h"
#include "text/verify.h"

enum { EVAL_MAX_DATA = 16 };

static void usage(FILE *out) {
    fprintf(out,
            "usage: s2d eval --model DIR [--tokenizer DIR] --data FILE [--data FILE ...] [--samples K] [options]\n"
            "  --tokenizer DIR     default: the model directory\n"
            "  --format F          math | gsm8k | aime | generic | auto (default auto, from the fields)\n"
            "  --prompt-field F, --answer-field F, --id-field F   field names for --format generic\n"
            "  --samples K         completions per problem (default 1; K > 1 at temperature 0 is warned about)\n"
            "  --temperature T     default 0.6 (0 = greedy)\n"
            "  --top-p P           default 0.95\n"
            "  --top-k K           default 0 (off)\n"
            "  --max-new-tokens N  default 2048\n"
            "  --template NAME     qwen3 | qwen3-nothink | llama3 | none | auto (default auto: the built-in template\n"
            "                      that the tokenizer's tokenizer_config.json chat_template is, refused when none\n"
            "                      of them; without one: qwen3 for Qwen models, llama3 for Llama models); a\n"
            "                      template that does not fit the model's type is warned about\n"
            "  --instruction TEXT  appended to each problem after a newline (default: \"%s\"; '' for none)\n"
            "  --verify MODE       math | gsm8k (default gsm8k for the gsm8k format, else math)\n"
            "  --seed S            default 0\n"
            "  --limit N           only the first N problems of each dataset\n"
            "  --batch B           concurrent sequences (default 16)\n"
            "  --out FILE.jsonl    every sample with its completion, extracted answer and correctness\n"
            "  --reward-command CMD  also score every sample with a reward command (JSON lines, as the train\n"
            "                      key reward.command): reward_mean and reward/<name> in the summary\n"
            "  --reward-timeout S  seconds to wait for each reply (default 60)\n"
            "  --device NAME       backend and device: cpu (default), cuda, cuda:N (see s2d devices)\n"
            "Summary: avg@K with avg@K_stderr (standard error over problems), pass@1, pass@K, maj@K; MATH records\n"
            "with subject / level fields add by_subject / by_level breakdowns.\n",
            CHAT_DEFAULT_INSTRUCTION);
}

/* 1 - C(n-c, k)/C(n, k) as a product (no overflow). */
static double pass_at_k(int n, int c, int k) {
    if (n - c < k) return 1.0;
    double fail = 1.0;
    for (int i = n - c + 1; i <= n; i++) fail *= 1.0 - (double)k / i;
    return 1.0 - fail;
}

static bool answers_equivalent(verify_mode mode, const char *a, const char *b) {
    if (mode == VERIFY_MODE_MATH) return verify_equivalent(a, b);
    /* gsm8k: the verifier reads "#### a" as the prediction and b as the reference number */
    size_t n = strlen(a) + 8;
    char *resp = xmalloc(n);
    snprintf(resp, n, "#### %s", a);
    verify_result *r = xmalloc(sizeof *r);
    verify_gsm8k(resp, b, r);
    bool eq = r->correct;
    free(r);
    free(resp);
    return eq;
}

typedef struct {
    const char *path;
    dataset ds;
    verify_mode mode;
    /* results: n * K samples */
    gen_result res;
    char **text;          /* [n*K] decoded completions */
    verify_result *vr;    /* [n*K] */
    double *reward;       /* [n*K] --reward-command rewards, or NULL */
} eval_set;

/* One subject or level of a breakdown: problems and the sum of c/K and of its square. */
typedef struct {
    const char *key;
    int problems;
    double sum, sumsq;
} group_stat;

static int cmp_group(const void *a, const void *b) {
    return strcmp(((const group_stat *)a)->key, ((const group_stat *)b)->key);
}

/* sd / sqrt(n) of values with this sum and sum of squares (n - 1 denominator); NAN for n < 2. */
static double std_error(int n, double sum, double sumsq) {
    if (n < 2) return NAN;
    double mean = sum / n, var = (sumsq - n * mean * mean) / (n - 1);
    return sqrt(var > 0 ? var : 0) / sqrt((double)n);
}

static void print_num_or_null(double v) {
    if (isfinite(v)) printf("%.6f", v);
    else printf("null");
}

/* , "by_<name>": {"<key>": {"problems", "avg@K", "avg@K_stderr"}, ...} over the problems whose field is set. */
static void print_breakdown(const char *name, const eval_set *es, const double *frac, int K, bool level) {
    int n = es->ds.n, ng = 0;
    group_stat *g = xcalloc((size_t)n, sizeof *g);
    for (int p = 0; p < n; p++) {
        const char *key = level ? es->ds.rec[p].level : es->ds.rec[p].subject;
        if (!key[0]) continue;
        int k = 0;
        while (k < ng && strcmp(g[k].key, key) != 0) k++;
        if (k == ng) g[ng++].key = key;
        g[k].problems++, g[k].sum += frac[p], g[k].sumsq += frac[p] * frac[p];
    }
    if (ng) {
        qsort(g, (size_t)ng, sizeof *g, cmp_group);
        printf(", \"by_%s\": {", name);
        for (int k = 0; k < ng; k++) {
            printf("%s", k ? ", " : "");
            print_json_string(stdout, g[k].key, strlen(g[k].key));
            printf(": {\"problems\": %d, \"avg@%d\": %.6f, \"avg@%d_stderr\": ", g[k].problems, K,
                   g[k].sum / g[k].problems, K);
            print_num_or_null(std_error(g[k].problems, g[k].sum, g[k].sumsq));
            printf("}");
        }
        printf("}");
    }
    free(g);
}

/* The command line of s2d eval. */
typedef struct {
    const char *model_dir, *tok_dir, *out_path, *template_name, *verify_name, *reward_command, *instruction;
    double reward_timeout;
    const char *data[EVAL_MAX_DATA];
    int n_data;
    ds_load_opts lo;
    long samples, max_new, limit, batch;
    gen_params gp;
} eval_args;

static void parse_args(int argc, char **argv, eval_args *e) {
    *e = (eval_args){.instruction = CHAT_DEFAULT_INSTRUCTION, .reward_timeout = 60, .lo = {.format = DS_AUTO},
                     .samples = 1, .max_new = 2048, .limit = -1, .batch = 16,
                     .gp = {.sampling = {.temperature = 0.6f, .top_k = 0, .top_p = 0.95f, .seed = 0}}};
    enum { O_MODEL = 256, O_TOKENIZER, O_DATA, O_FORMAT, O_PROMPT_FIELD, O_ANSWER_FIELD, O_ID_FIELD, O_SAMPLES,
           O_TEMPERATURE, O_TOP_P, O_TOP_K, O_MAX_NEW, O_TEMPLATE, O_INSTRUCTION, O_VERIFY, O_SEED, O_LIMIT, O_BATCH,
           O_OUT, O_REWARD_COMMAND, O_REWARD_TIMEOUT, O_DEVICE };
    static const struct option opts[] = {
        {"help", no_argument, 0, 'h'},
        {"model", required_argument, 0, O_MODEL},
        {"tokenizer", required_argument, 0, O_TOKENIZER},
        {"data", required_argument, 0, O_DATA},
        {"format", required_argument, 0, O_FORMAT},
        {"prompt-field", required_argument, 0, O_PROMPT_FIELD},
        {"answer-field", required_argument, 0, O_ANSWER_FIELD},
        {"id-field", required_argument, 0, O_ID_FIELD},
        {"samples", required_argument, 0, O_SAMPLES},
        {"temperature", required_argument, 0, O_TEMPERATURE},
        {"top-p", required_argument, 0, O_TOP_P},
        {"top-k", required_argument, 0, O_TOP_K},
        {"max-new-tokens", required_argument, 0, O_MAX_NEW},
        {"template", required_argument, 0, O_TEMPLATE},
        {"instruction", required_argument, 0, O_INSTRUCTION},
        {"verify", required_argument, 0, O_VERIFY},
        {"seed", required_argument, 0, O_SEED},
        {"limit", required_argument, 0, O_LIMIT},
        {"batch", required_argument, 0, O_BATCH},
        {"out", required_argument, 0, O_OUT},
        {"reward-command", required_argument, 0, O_REWARD_COMMAND},
        {"reward-timeout", required_argument, 0, O_REWARD_TIMEOUT},
        {"device", required_argument, 0, O_DEVICE},
        {0, 0, 0, 0}};
    cli_options_reset();
    const char *v, *a;
    s2d_err err;
    for (int o; (o = cli_option("eval", argc, argv, opts, usage, &v, &a)) != -1;) {
        switch (o) {
        case 'h': usage(stdout); exit(0);
        case O_MODEL: e->model_dir = v; break;
        case O_TOKENIZER: e->tok_dir = v; break;
        case O_DATA:
            if (e->n_data == EVAL_MAX_DATA) die("eval: at most %d --data files", EVAL_MAX_DATA);
            e->data[e->n_data++] = v;
            break;
        case O_FORMAT: CHECK_OK(ds_format_parse(v, &e->lo.format, &err), &err); break;
        case O_PROMPT_FIELD: e->lo.prompt_field = v; break;
        case O_ANSWER_FIELD: e->lo.answer_field = v; break;
        case O_ID_FIELD: e->lo.id_field = v; break;
        case O_SAMPLES: e->samples = flag_long(a, v, 1, 1 << 16); break;
        case O_TEMPERATURE: e->gp.sampling.temperature = (float)flag_double(a, v, 0, 1e6); break;
        case O_TOP_P: e->gp.sampling.top_p = (float)flag_double(a, v, 1e-9, 1); break;
        case O_TOP_K: e->gp.sampling.top_k = (int)flag_long(a, v, 0, INT32_MAX); break;
        case O_MAX_NEW: e->max_new = flag_long(a, v, 1, 1 << 20); break;
        case O_TEMPLATE: e->template_name = v; break;
        case O_INSTRUCTION: e->instruction = v; break;
        case O_VERIFY: e->verify_name = v; break;
        case O_SEED: e->gp.sampling.seed = (uint64_t)flag_long(a, v, 0, INT64_MAX); break;
        case O_LIMIT: e->limit = flag_long(a, v, 1, INT32_MAX); break;
        case O_BATCH: e->batch = flag_long(a, v, 1, 4096); break;
        case O_OUT: e->out_path = v; break;
        case O_REWARD_COMMAND: e->reward_command = v; break;
        case O_REWARD_TIMEOUT: e->reward_timeout = flag_double(a, v, 0.001, 1e6); break;
        case O_DEVICE: cli_use_device(v); break;
        }
    }
    if (optind < argc) {
        usage(stderr);
        die("eval: unexpected argument '%s'", argv[optind]);
    }
}

/* What every dataset of a run shares. */
typedef struct {
    model m;
    tokenizer *tok;
    chat_template tmpl;
    gen_params gp;
    int K;
    long max_new, batch;
    const char *instruction;
    reward_cmd *rc;        /* --reward-command, or NULL */
    const char *out_path;  /* --out, or NULL */
    atomic_file af;
} eval_ctx;

/* Stops: the template's end tokens as this tokenizer spells them, plus the model's eos ids. */
static void set_stops(eval_ctx *c) {
    c->gp.n_stop = 0;
    for (const char *const *s = chat_stop_tokens(c->tmpl); *s; s++) {
        int32_t id = tok_token_id(c->tok, *s);
        if (id >= 0 && id < c->m.cfg.vocab && c->gp.n_stop < GEN_MAX_STOP) c->gp.stop_ids[c->gp.n_stop++] = id;
    }
    for (int i = 0; i < c->m.cfg.n_eos; i++) {
        bool dup = false;
        for (int j = 0; j < c->gp.n_stop; j++) dup |= c->gp.stop_ids[j] == c->m.cfg.eos_ids[i];
        if (!dup && c->m.cfg.eos_ids[i] < c->m.cfg.vocab && c->gp.n_stop < GEN_MAX_STOP)
            c->gp.stop_ids[c->gp.n_stop++] = c->m.cfg.eos_ids[i];
    }
}

/* Every problem rendered and tokenized, K copies of each, sampled (es->res); returns the seconds it took. */
static double generate_set(eval_ctx *c, eval_set *es) {
    s2d_err err;
    const int K = c->K, n = es->ds.n, total = n * K;
    /* prompts: K copies of each problem's tokens */
    tok_ids one = {0};
    int *prob_start = xmalloc((size_t)(n + 1) * sizeof *prob_start);
    uint64_t *prob_hash = xmalloc((size_t)n * sizeof *prob_hash);
    prob_start[0] = 0;
    for (int p = 0; p < n; p++) {
        const ds_record *r = &es->ds.rec[p];
        char *text = chat_render_problem(c->tmpl, r->prompt, c->instruction);
        size_t before = one.n;
        if (tok_encode(c->tok, text, strlen(text), &one, &err) < 0) die("%s:%d: %s", es->path, r->line, err.msg);
        free(text);
        for (size_t i = before; i < one.n; i++)
            if (one.ids[i] >= c->m.cfg.vocab)
                die("%s:%d: prompt token %d is outside the model's vocabulary [0, %d): the tokenizer does not "
                    "match the model", es->path, r->line, one.ids[i], c->m.cfg.vocab);
        if (one.n - before > (size_t)c->m.cfg.max_pos) /* named by its line, before any generation */
            die("%s:%d: the prompt has %zu tokens (chat template included), more than the model's "
                "max_position_embeddings %d", es->path, r->line, one.n - before, c->m.cfg.max_pos);
        prob_start[p + 1] = (int)one.n;
        prob_hash[p] = ds_prompt_hash(r->prompt, 0);
    }
    int *start = xmalloc((size_t)(total + 1) * sizeof *start);
    int32_t *ids = xmalloc((size_t)S2D_MAX((size_t)prob_start[n] * (size_t)K, 1) * sizeof *ids);
    uint64_t *seq_ids = xmalloc((size_t)total * sizeof *seq_ids);
    int longest = 0;
    start[0] = 0;
    for (int p = 0; p < n; p++) {
        int len = prob_start[p + 1] - prob_start[p];
        longest = S2D_MAX(longest, len);
        for (int s = 0; s < K; s++) {
            int q = p * K + s;
            memcpy(ids + start[q], one.ids + prob_start[p], (size_t)len * sizeof *ids);
            start[q + 1] = start[q] + len;
            seq_ids[q] = prob_hash[p] + (uint64_t)s * 0x9E3779B97F4A7C15ull;
        }
    }
    int max_len = (int)S2D_MIN((long)c->m.cfg.max_pos, (long)longest + c->max_new);
    if (longest > max_len)
        die("%s: a prompt has %d tokens, more than the model's max_position_embeddings %d", es->path, longest,
            c->m.cfg.max_pos);
    generator *g;
    CHECK_OK(generator_new(&c->m, (int)S2D_MIN(c->batch, (long)total), S2D_MAX(max_len, 2), &g, &err), &err);
    double t0 = time_now();
    if (!generator_run(g, &c->gp, total, start, ids, seq_ids, &es->res, &err)) die("eval: %s: %s", es->path, err.msg);
    double dt = time_now() - t0;
    generator_free(g);
    tok_ids_free(&one);
    free(prob_start);
    free(prob_hash);
    free(start);
    free(ids);
    free(seq_ids);
    return dt;
}

/* Each completion decoded (its stop token removed) and verified against the reference answer. */
static void decode_and_verify(eval_ctx *c, eval_set *es) {
    s2d_err err;
    const int K = c->K, total = es->ds.n * K;
    es->text = xmalloc((size_t)total * sizeof *es->text);
    es->vr = xmalloc((size_t)total * sizeof *es->vr);
    tok_bytes tb = {0};
    long n_untokened = 0;
    int32_t *decode_buf = xmalloc((size_t)S2D_MAX(c->max_new, 1) * sizeof *decode_buf);
    for (int q = 0; q < total; q++) {
        int a = es->res.start[q], len = es->res.start[q + 1] - a;
        if (es->res.finish[q] == GEN_FINISH_STOP && len > 0) len--; /* the stop token is not text */
        /* Model vocabularies are padded past the tokenizer's (Qwen3: 151936 rows, 151669 tokens): ids
         * without a token carry no text; they are counted and reported. */
        int kept = 0;
        for (int i = 0; i < len; i++) {
            size_t tl;
            int32_t id = es->res.tokens[a + i];
            if (tok_token_bytes(c->tok, id, &tl)) decode_buf[kept++] = id;
            else n_untokened++;
        }
        CHECK_OK(tok_decode(c->tok, decode_buf, (size_t)kept, &tb, &err), &err);
        es->text[q] = xstrdup(tb.bytes ? tb.bytes : "");
        verify_answer(es->mode, es->text[q], es->ds.rec[q / K].answer, &es->vr[q]);
    }
    tok_bytes_free(&tb);
    free(decode_buf);
    if (n_untokened)
        log_warn("eval %s: %ld sampled ids have no token in the tokenizer (padding rows of the model's "
                 "vocabulary); they were left out of the completion text", es->path, n_untokened);
}

/* --reward-command: every sample through the command too (correctness stays the verifier's). */
static void score_rewards(eval_ctx *c, eval_set *es) {
    s2d_err err;
    const int K = c->K, total = es->ds.n * K;
    es->reward = xmalloc((size_t)total * sizeof *es->reward);
    reward_cmd_step_reset(c->rc);
    for (int q = 0; q < total; q++) {
        const ds_record *r = &es->ds.rec[q / K];
        char what[4200];
        snprintf(what, sizeof what, "%s:%d sample %d", es->path, r->line, q % K);
        if (!reward_cmd_score(c->rc, r->id, what, r->prompt, es->text[q], r->answer, &es->reward[q], &err)) {
            if (c->out_path) atomic_abort(&c->af);
            reward_cmd_close(c->rc);
            die("eval: %s", err.msg);
        }
    }
}

/* The dataset's metrics: its stdout line. */
static void report_set(eval_ctx *c, eval_set *es, double dt) {
    const int K = c->K, n = es->ds.n, total = n * K;
    double avg = 0, avg_sq = 0, pass1 = 0, passk = 0, maj = 0;
    double *frac = xmalloc((size_t)n * sizeof *frac); /* c/K per problem */
    long no_answer = 0, truncated = 0;
    int *group_rep = xmalloc((size_t)K * sizeof *group_rep), *group_count = xmalloc((size_t)K * sizeof(int));
    for (int p = 0; p < n; p++) {
        int n_correct = 0, n_groups = 0;
        for (int s = 0; s < K; s++) {
            int q = p * K + s;
            const verify_result *v = &es->vr[q];
            n_correct += v->correct;
            truncated += es->res.finish[q] == GEN_FINISH_LENGTH;
            if (!v->has_extracted) {
                no_answer++;
                continue;
            }
            int g_found = -1;
            for (int gi = 0; gi < n_groups && g_found < 0; gi++)
                if (answers_equivalent(es->mode, v->extracted, es->vr[group_rep[gi]].extracted)) g_found = gi;
            if (g_found < 0) {
                group_rep[n_groups] = q;
                group_count[n_groups++] = 1;
            } else {
                group_count[g_found]++;
            }
        }
        int best = -1;
        for (int gi = 0; gi < n_groups; gi++)
            if (best < 0 || group_count[gi] > group_count[best]) best = gi;
        avg += (double)n_correct / K, avg_sq += (double)n_correct / K * n_correct / K;
        frac[p] = (double)n_correct / K;
        pass1 += pass_at_k(K, n_correct, 1);
        passk += pass_at_k(K, n_correct, K);
        maj += best >= 0 && es->vr[group_rep[best]].correct;
    }
    free(group_rep);
    free(group_count);
    double avg_se = std_error(n, avg, avg_sq);
    avg /= n, pass1 /= n, passk /= n, maj /= n;
    log_info("eval %s: %d problems x %d samples: avg@%d %.4f pass@1 %.4f pass@%d %.4f maj@%d %.4f "
             "(%ld new tokens in %.1f s, %.1f tok/s)",
             es->path, n, K, K, avg, pass1, K, passk, K, maj, es->res.n_generated, dt,
             es->res.n_generated / (dt > 0 ? dt : 1e-9));
    printf("{\"data\": ");
    print_json_string(stdout, es->path, strlen(es->path));
    printf(", \"format\": \"%s\", \"template\": \"%s\", \"verify\": \"%s\", \"problems\": %d, \"samples\": %d, "
           "\"avg@%d\": %.6f, \"avg@%d_stderr\": ",
           ds_format_name(es->ds.format), chat_template_name(c->tmpl),
           es->mode == VERIFY_MODE_GSM8K ? "gsm8k" : "math", n, K, K, avg, K);
    print_num_or_null(avg_se);
    printf(", \"pass@1\": %.6f, ", pass1);
    if (K != 1) printf("\"pass@%d\": %.6f, ", K, passk); /* K = 1: pass@K is pass@1 (a JSON key once) */
    printf("\"maj@%d\": %.6f, \"no_answer\": %.6f, \"truncated\": %.6f, \"mean_new_tokens\": %.2f", K, maj,
           (double)no_answer / total, (double)truncated / total, (double)es->res.n_generated / total);
    print_breakdown("subject", es, frac, K, false);
    print_breakdown("level", es, frac, K, true);
    free(frac);
    if (c->rc) {
        double rsum = 0;
        for (int q = 0; q < total; q++) rsum += es->reward[q];
        printf(", \"reward_mean\": %.6f", rsum / total);
        fflush(stdout);
        reward_cmd_write_metrics(c->rc, stdout);
    }
    printf("}\n");
    if (fflush(stdout) != 0 || ferror(stdout)) die("eval: writing stdout failed");
}

/* --out: one line per sample. */
static void write_samples(eval_ctx *c, const eval_set *es) {
    const int total = es->ds.n * c->K, K = c->K;
    for (int q = 0; q < total; q++) {
        const verify_result *v = &es->vr[q];
        FILE *f = c->af.fp;
        fputs("{\"dataset\": ", f);
        print_json_string(f, es->path, strlen(es->path));
        fputs(", \"id\": ", f);
        print_json_string(f, es->ds.rec[q / K].id, strlen(es->ds.rec[q / K].id));
        fprintf(f, ", \"sample\": %d, \"correct\": %s, ", q % K, v->correct ? "true" : "false");
        if (es->reward) fprintf(f, "\"reward\": %.6g, ", es->reward[q]);
        fputs("\"extracted\": ", f);
        if (v->has_extracted)
            print_json_string(f, v->extracted, strlen(v->extracted));
        else
            fputs("null", f);
        fprintf(f, ", \"finish\": \"%s\", \"n_tokens\": %d, \"completion\": ", gen_finish_name(es->res.finish[q]),
                es->res.start[q + 1] - es->res.start[q]);
        print_json_string(f, es->text[q], strlen(es->text[q]));
        fputs("}\n", f);
    }
}

int cmd_eval(int argc, char **argv) {
    eval_args args;
    parse_args(argc, argv, &args);
    const char *model_dir = args.model_dir, *tok_dir = args.tok_dir, *template_name = args.template_name;
    const char *verify_name = args.verify_name;
    s2d_err err;
    if (!model_dir) die_hint("s2d eval --help", "eval: --model DIR is required");
    if (!tok_dir) tok_dir = model_dir; /* HF model directories carry their tokenizer */
    if (args.n_data == 0) die_hint("s2d eval --help", "eval: --data FILE is required");
    if (args.lo.format == DS_GENERIC && (!args.lo.prompt_field || !args.lo.answer_field))
        die("eval: --format generic needs --prompt-field and --answer-field");
    verify_mode forced_mode = VERIFY_MODE_MATH;
    if (verify_name && !verify_mode_parse(verify_name, &forced_mode))
        die("eval: --verify must be math or gsm8k, got '%s'", verify_name);
    eval_ctx c = {.gp = args.gp, .K = (int)args.samples, .max_new = args.max_new, .batch = args.batch,
                  .instruction = args.instruction, .out_path = args.out_path};
    c.gp.max_new_tokens = (int)args.max_new;

    /* Everything that can fail on bad input is checked before the (long) generation. */
    const int n_data = args.n_data;
    eval_set *sets = xcalloc((size_t)n_data, sizeof *sets);
    for (int d = 0; d < n_data; d++) {
        sets[d].path = args.data[d];
        CHECK_OK(dataset_load(&sets[d].ds, args.data[d], &args.lo, &err), &err);
        if (args.limit > 0 && sets[d].ds.n > args.limit) sets[d].ds.n = (int)args.limit;
        sets[d].mode = verify_name ? forced_mode : sets[d].ds.format == DS_GSM8K ? VERIFY_MODE_GSM8K : VERIFY_MODE_MATH;
    }
    if (!tok_load(tok_dir, &c.tok, &err)) {
        if (tok_dir == model_dir) die_hint("give --tokenizer DIR", "eval: no --tokenizer, and the model's: %s", err.msg);
        die("%s", err.msg);
    }
    CHECK_OK(model_load(&c.m, model_dir, &err), &err);
    const char *tmpl_from; /* --template, else the tokenizer's chat_template, else the architecture's default */
    CHECK_OK(chat_template_choose(template_name, "--template", &tok_dir, 1, model_arch_of(c.m.cfg.arch)->chat_template,
                                  "the architecture's default", &c.tmpl, &tmpl_from, &err),
             &err);
    log_info("eval: chat template %s (from %s)", chat_template_name(c.tmpl), tmpl_from);
    chat_template_warn_fit("eval", c.tmpl, tmpl_from, model_arch_of(c.m.cfg.arch)->model_type, model_dir);
    if (args.samples > 1 && c.gp.sampling.temperature == 0)
        log_warn("eval: --samples %ld at --temperature 0: greedy decoding gives %ld identical samples per problem "
                 "(pass@K = maj@K = avg@K); use --samples 1 or a temperature > 0", args.samples, args.samples);
    set_stops(&c);
    CHECK_OK(sampler_params_check(&c.gp.sampling, &err), &err);
    if (c.out_path) CHECK_OK(atomic_open(&c.af, c.out_path, &err), &err);
    if (args.reward_command) CHECK_OK(reward_cmd_start(args.reward_command, args.reward_timeout, &c.rc, &err), &err);

    for (int d = 0; d < n_data; d++) {
        eval_set *es = &sets[d];
        double dt = generate_set(&c, es);
        decode_and_verify(&c, es);
        if (c.rc) score_rewards(&c, es);
        report_set(&c, es, dt);
        if (c.out_path) write_samples(&c, es);
    }
    if (c.out_path) CHECK_OK(atomic_commit(&c.af, &err), &err);
    reward_cmd_close(c.rc);

    for (int d = 0; d < n_data; d++) {
        eval_set *es = &sets[d];
        int total = es->ds.n * c.K;
        for (int q = 0; q < total; q++) free(es->text[q]);
        free(es->text);
        free(es->vr);
        free(es->reward);
        gen_result_free(&es->res);
        dataset_free(&es->ds);
    }
    free(sets);
    model_free(&c.m);
    tok_free(c.tok);
    return 0;
}
