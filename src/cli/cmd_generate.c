/* s2d generate: sample continuations of token-id prompts with a KV cache and continuous batching.
 *
 *   s2d generate --model DIR --max-new-tokens N [--temperature T] [--top-p P] [--top-k K] [--seed S]
 *                [--stop ID,ID | --stop none] [--batch B] [--max-len L] [--details]
 *
 * stdin: one JSON array of prompt token ids per line. stdout: one JSON array of generated ids per line, same
 * order (with --details: {"ids": [...], "logprobs": [...], "finish": "stop"|"length"}). Nothing is written to
 * stdout unless every prompt succeeds. Prompt i's random stream is keyed by a hash of its tokens and how many
 * identical prompts came before it, so its output never depends on the other prompts or their order. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/commands.h"
#include "core/common.h"
#include "core/log.h"
#include "core/timer.h"
#include "model/generate.h"
#include "model/model.h"

static void usage(FILE *out) {
    fprintf(out,
            "usage: s2d generate --model DIR --max-new-tokens N [options] < prompts.jsonl\n"
            "  stdin: one JSON array of prompt token ids per line; stdout: one JSON array of new ids per line\n"
            "  --temperature T   0 = greedy (argmax); default 1\n"
            "  --top-p P         nucleus sampling, (0, 1]; default 1 (off)\n"
            "  --top-k K         keep the K most likely tokens; default 0 (off)\n"
            "  --seed S          random seed; default 0\n"
            "  --stop ID,ID      stop token ids (included in the output); default the model's eos_token_id;\n"
            "                    'none' for no stop tokens\n"
            "  --batch B         concurrent sequences (KV-cache slots); default 8\n"
            "  --max-len L       KV-cache positions per sequence; default min(max_position_embeddings,\n"
            "                    longest prompt + N)\n"
            "  --details         print {\"ids\", \"logprobs\", \"finish\"} objects instead of id arrays\n"
            "  --device NAME     backend and device: cpu (default), cuda, cuda:N (see s2d devices)\n");
}

static void parse_stop(const char *value, gen_params *gp) {
    if (!value) die("--stop needs a value (ID,ID or none)");
    gp->n_stop = 0;
    if (strcmp(value, "none") == 0 || value[0] == '\0') return;
    char *copy = xstrdup(value), *save = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (gp->n_stop == GEN_MAX_STOP) die("--stop: at most %d stop tokens", GEN_MAX_STOP);
        gp->stop_ids[gp->n_stop++] = (int32_t)flag_long("--stop", tok, 0, INT32_MAX);
    }
    free(copy);
}

/* FNV-1a over the prompt's ids, then mixed with the occurrence index of identical prompts. */
static uint64_t prompt_hash(const int32_t *ids, int n) {
    uint64_t h = 1469598103934665603ULL;
    for (int i = 0; i < n; i++) {
        uint32_t v = (uint32_t)ids[i];
        for (int b = 0; b < 4; b++) {
            h ^= (v >> (8 * b)) & 0xff;
            h *= 1099511628211ULL;
        }
    }
    return h;
}

typedef struct {
    int n, cap;
    int *start;    /* [n + 1] */
    int32_t *ids;  /* [start[n]] */
    int ids_cap;
    long *line;    /* [n] stdin line of each prompt */
} prompt_list;

static void read_prompts(prompt_list *pl, int vocab) {
    jsonl_reader r;
    jsonl_reader_init(&r, stdin, "stdin");
    pl->n = 0;
    pl->cap = 64;
    pl->start = xmalloc((size_t)(pl->cap + 1) * sizeof(int));
    pl->line = xmalloc((size_t)pl->cap * sizeof(long));
    pl->ids_cap = 1024;
    pl->ids = xmalloc((size_t)pl->ids_cap * sizeof(int32_t));
    pl->start[0] = 0;
    cJSON *j;
    while ((j = jsonl_next(&r))) {
        int len;
        int32_t *ids = json_int_array(j, &len, &r);
        cJSON_Delete(j);
        if (len == 0) die("stdin:%ld: empty prompt (need at least one token id)", r.lineno);
        for (int i = 0; i < len; i++)
            if (ids[i] < 0 || ids[i] >= vocab)
                die("stdin:%ld: element %d: token id %d is outside the vocabulary [0, %d)", r.lineno, i, ids[i],
                    vocab);
        if (pl->n == pl->cap) {
            pl->cap *= 2;
            pl->start = xrealloc(pl->start, (size_t)(pl->cap + 1) * sizeof(int));
            pl->line = xrealloc(pl->line, (size_t)pl->cap * sizeof(long));
        }
        int at = pl->start[pl->n];
        if ((long)at + len > INT32_MAX) die("stdin:%ld: too many prompt tokens in total", r.lineno);
        while (at + len > pl->ids_cap) {
            pl->ids_cap *= 2;
            pl->ids = xrealloc(pl->ids, (size_t)pl->ids_cap * sizeof(int32_t));
        }
        memcpy(pl->ids + at, ids, (size_t)len * sizeof(int32_t));
        free(ids);
        pl->line[pl->n] = r.lineno;
        pl->start[++pl->n] = at + len;
    }
    jsonl_reader_free(&r);
}

int cmd_generate(int argc, char **argv) {
    const char *model_dir = NULL;
    long max_new = -1, batch = 8, max_len = 0;
    bool details = false, stop_given = false;
    gen_params gp = {.sampling = {.temperature = 1.0f, .top_k = 0, .top_p = 1.0f, .seed = 0}};
    enum { O_MODEL = 256, O_MAX_NEW, O_TEMPERATURE, O_TOP_P, O_TOP_K, O_SEED, O_STOP, O_BATCH, O_MAX_LEN, O_DEVICE,
           O_DETAILS };
    static const struct option opts[] = {
        {"help", no_argument, 0, 'h'},          {"model", required_argument, 0, O_MODEL},
        {"max-new-tokens", required_argument, 0, O_MAX_NEW}, {"temperature", required_argument, 0, O_TEMPERATURE},
        {"top-p", required_argument, 0, O_TOP_P}, {"top-k", required_argument, 0, O_TOP_K},
        {"seed", required_argument, 0, O_SEED},  {"stop", required_argument, 0, O_STOP},
        {"batch", required_argument, 0, O_BATCH}, {"max-len", required_argument, 0, O_MAX_LEN},
        {"device", required_argument, 0, O_DEVICE}, {"details", no_argument, 0, O_DETAILS},
        {0, 0, 0, 0}};
    cli_options_reset();
    const char *val, *opt;
    for (int o; (o = cli_option("generate", argc, argv, opts, usage, &val, &opt)) != -1;) {
        switch (o) {
        case 'h': usage(stdout); return 0;
        case O_MODEL: model_dir = val; break;
        case O_MAX_NEW: max_new = flag_long(opt, val, 1, 1 << 20); break;
        case O_TEMPERATURE: gp.sampling.temperature = (float)flag_double(opt, val, 0, 1e6); break;
        case O_TOP_P: gp.sampling.top_p = (float)flag_double(opt, val, 1e-9, 1); break;
        case O_TOP_K: gp.sampling.top_k = (int)flag_long(opt, val, 0, INT32_MAX); break;
        case O_SEED: gp.sampling.seed = (uint64_t)flag_long(opt, val, 0, INT64_MAX); break;
        case O_STOP: parse_stop(val, &gp), stop_given = true; break;
        case O_BATCH: batch = flag_long(opt, val, 1, 4096); break;
        case O_MAX_LEN: max_len = flag_long(opt, val, 2, 1 << 24); break;
        case O_DEVICE: cli_use_device(val); break;
        case O_DETAILS: details = true; break;
        }
    }
    if (optind < argc) die_hint("s2d generate --help", "generate: unexpected argument '%s'", argv[optind]);
    if (!model_dir) die_hint("s2d generate --help", "generate: --model DIR is required");
    if (max_new < 0) die_hint("s2d generate --help", "generate: --max-new-tokens N is required");
    gp.max_new_tokens = (int)max_new;

    s2d_err err;
    model m;
    CHECK_OK(model_load(&m, model_dir, &err), &err);
    if (!stop_given) {
        gp.n_stop = S2D_MIN(m.cfg.n_eos, GEN_MAX_STOP);
        memcpy(gp.stop_ids, m.cfg.eos_ids, (size_t)gp.n_stop * sizeof(int32_t));
    }
    for (int i = 0; i < gp.n_stop; i++)
        if (gp.stop_ids[i] >= m.cfg.vocab)
            die("--stop: token %d is outside the vocabulary [0, %d)", gp.stop_ids[i], m.cfg.vocab);

    prompt_list pl;
    read_prompts(&pl, m.cfg.vocab);
    int longest = 0;
    for (int p = 0; p < pl.n; p++) longest = S2D_MAX(longest, pl.start[p + 1] - pl.start[p]);
    if (max_len == 0) max_len = S2D_MIN((long)m.cfg.max_pos, (long)longest + max_new);
    max_len = S2D_MAX(max_len, 2);
    for (int p = 0; p < pl.n; p++) {
        int len = pl.start[p + 1] - pl.start[p];
        if (len > max_len)
            die("stdin:%ld: prompt has %d tokens, more than the maximum length %ld (--max-len, or the model's "
                "max_position_embeddings %d)",
                pl.line[p], len, max_len, m.cfg.max_pos);
    }

    /* Random stream of prompt p: its content hash, plus the count of identical prompts before it. */
    uint64_t *seq_ids = xmalloc((size_t)S2D_MAX(pl.n, 1) * sizeof(uint64_t));
    uint64_t *hashes = xmalloc((size_t)S2D_MAX(pl.n, 1) * sizeof(uint64_t));
    for (int p = 0; p < pl.n; p++) {
        int len = pl.start[p + 1] - pl.start[p];
        hashes[p] = prompt_hash(pl.ids + pl.start[p], len);
        uint64_t k = 0;
        for (int q = 0; q < p; q++)
            if (hashes[q] == hashes[p] && pl.start[q + 1] - pl.start[q] == len &&
                memcmp(pl.ids + pl.start[q], pl.ids + pl.start[p], (size_t)len * sizeof(int32_t)) == 0)
                k++;
        seq_ids[p] = hashes[p] + k * 0x9E3779B97F4A7C15ULL;
    }
    free(hashes);

    gen_result res = {0};
    if (pl.n > 0) {
        generator *g;
        int slots = (int)S2D_MIN(batch, (long)pl.n);
        CHECK_OK(generator_new(&m, slots, (int)max_len, &g, &err), &err);
        double t0 = time_now();
        if (!generator_run(g, &gp, pl.n, pl.start, pl.ids, seq_ids, &res, &err)) die("generate: %s", err.msg);
        double dt = time_now() - t0;
        log_info("generate: %d prompts, %ld new tokens in %.3f s (%.1f tok/s; decode %.3f s over %ld steps, "
                 "%.1f tok/s; prefill %.3f s; sampling %.3f s; batch %d)",
                 pl.n, res.n_generated, dt, res.n_generated / (dt > 0 ? dt : 1e-9), res.decode_seconds,
                 res.n_decode_steps, res.n_decode_rows / (res.decode_seconds > 0 ? res.decode_seconds : 1e-9),
                 res.prefill_seconds, res.sample_seconds, slots);
        generator_free(g);
    }
    /* finite weights can still overflow (huge values): a non-finite log-prob is an error, before any output
     * (it printed as nan, which is not JSON) */
    for (int p = 0; p < pl.n; p++)
        for (int i = res.start[p]; i < res.start[p + 1]; i++)
            if (!isfinite(res.logprobs[i]))
                die("stdin:%ld: the log-prob of generated token %d is not finite (%g): the model's activations "
                    "overflow", pl.line[p], i - res.start[p], (double)res.logprobs[i]);
    for (int p = 0; p < pl.n; p++) {
        int a = res.start[p], n = res.start[p + 1] - a;
        if (!details) {
            print_int_array(stdout, res.tokens + a, n);
            continue;
        }
        fputs("{\"ids\": [", stdout);
        for (int i = 0; i < n; i++) fprintf(stdout, i ? ",%d" : "%d", res.tokens[a + i]);
        fputs("], \"logprobs\": [", stdout);
        for (int i = 0; i < n; i++) fprintf(stdout, i ? ",%.9g" : "%.9g", (double)res.logprobs[a + i]);
        fprintf(stdout, "], \"finish\": \"%s\"}\n", gen_finish_name(res.finish[p]));
    }
    if (fflush(stdout) != 0 || ferror(stdout)) die("generate: writing stdout failed");
    gen_result_free(&res);
    free(seq_ids);
    free(pl.start);
    free(pl.ids);
    free(pl.line);
    model_free(&m);
    return 0;
}
