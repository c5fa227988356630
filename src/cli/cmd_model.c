/* s2d init-model and s2d logprobs.
 *
 *   s2d init-model --preset NAME --out DIR [--seed S] [--dtype f32|bf16]
 *       writes a random-initialised model (normal(0, 0.02), norm weights 1, Philox stream per tensor) as a
 *       Hugging Face directory: DIR/config.json + DIR/model.safetensors; DIR appears only when complete.
 *   s2d logprobs --model DIR [--batch-tokens N]
 *       stdin: one JSON array of token ids per line; stdout: one JSON array per line with the n-1 log-probs of
 *       ids[1..n-1] given their prefixes. Every line is read and checked before any output, so bad input
 *       (invalid JSON, an id out of range) prints nothing on stdout and an error naming stdin:LINE. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/cli.h"
#include "cli/commands.h"
#include "core/common.h"
#include "core/log.h"
#include "core/timer.h"
#include "model/model.h"

/* mkdir -p of the directory that will hold `path` (its parents, not path itself); false + err naming the
 * directory that could not be made. */
static bool make_parents(const char *path, s2d_err *err) {
    char buf[4096];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) return err_set(err, "--out %s: path too long", path);
    size_t n = strlen(buf);
    while (n > 1 && buf[n - 1] == '/') buf[--n] = '\0'; /* "a/b/" -> "a/b" */
    char *slash = strrchr(buf, '/');
    if (!slash || slash == buf) return true;
    *slash = '\0';
    for (char *p = buf + 1;; p++) {
        if (*p == '/' || *p == '\0') {
            char c = *p;
            *p = '\0';
            struct stat st;
            if (stat(buf, &st) != 0) {
                if (mkdir(buf, 0755) != 0 && errno != EEXIST)
                    return err_set(err, "--out %s: cannot create directory %s: %s", path, buf, strerror(errno));
            } else if (!S_ISDIR(st.st_mode)) {
                return err_set(err, "--out %s: %s exists and is not a directory", path, buf);
            }
            *p = c;
            if (c == '\0') break;
        }
    }
    return true;
}

static void init_usage(FILE *out) {
    fprintf(out, "usage: s2d init-model --preset NAME --out DIR [--seed S] [--dtype f32|bf16]\n"
                 "  presets: qwen3-tiny, llama-tiny, qwen3-small, qwen3-0.6b, qwen3-1.7b, llama3.2-1b\n"
                 "  --seed S    Philox seed (default 0): the same seed gives the same weights\n"
                 "  --dtype     weights stored as f32 (default) or bf16\n");
}

int cmd_init_model(int argc, char **argv) {
    const char *preset = NULL, *out = NULL, *dtype = "f32";
    uint64_t seed = 0;
    enum { O_PRESET = 256, O_OUT, O_SEED, O_DTYPE };
    static const struct option opts[] = {{"help", no_argument, 0, 'h'}, {"preset", required_argument, 0, O_PRESET},
                                         {"out", required_argument, 0, O_OUT}, {"seed", required_argument, 0, O_SEED},
                                         {"dtype", required_argument, 0, O_DTYPE}, {0, 0, 0, 0}};
    cli_options_reset();
    const char *val, *opt;
    for (int o; (o = cli_option("init-model", argc, argv, opts, NULL, &val, &opt)) != -1;) {
        switch (o) {
        case 'h': init_usage(stdout); return 0;
        case O_PRESET: preset = val; break;
        case O_OUT: out = val; break;
        case O_SEED: seed = (uint64_t)flag_long(opt, val, 0, INT64_MAX); break;
        case O_DTYPE: dtype = val; break;
        }
    }
    if (optind < argc) die_hint("s2d init-model --help", "init-model: unexpected argument '%s'", argv[optind]);
    if (!preset || !out) die_hint("s2d init-model --help", "init-model needs --preset NAME and --out DIR");
    if (strcmp(dtype, "f32") != 0 && strcmp(dtype, "bf16") != 0)
        die("--dtype must be f32 or bf16, got '%s'", dtype);
    s2d_err err;
    model_config cfg;
    if (!model_config_preset(preset, &cfg, &err)) die("--preset: %s", err.msg);
    model m;
    model_create(&m, &cfg);
    model_init_random(&m, seed);
    if (!make_parents(out, &err)) die("%s", err.msg);
    if (!model_save(&m, out, strcmp(dtype, "bf16") == 0, &err)) die("%s", err.msg);
    size_t count = 0;
    for (int i = 0; i < m.n_tensors; i++) count += m.tensors[i].numel;
    log_info("wrote %s: %s, %zu parameters (%s)", out, preset, count, dtype);
    model_free(&m);
    return 0;
}

static void logprobs_usage(FILE *out) {
    fprintf(out, "usage: s2d logprobs --model DIR [--batch-tokens N] [--device NAME] < ids.jsonl\n"
                 "  stdin: one JSON array of token ids per line\n"
                 "  stdout: one JSON array per line: log p(ids[i] | ids[0..i-1]) for i = 1..n-1\n"
                 "  --batch-tokens N   tokens per packed forward pass (default 4096)\n"
                 "  --device NAME      backend and device: cpu (default), cuda, cuda:N (see s2d devices)\n");
}

int cmd_logprobs(int argc, char **argv) {
    const char *dir = NULL;
    long batch_tokens = 4096;
    enum { O_MODEL = 256, O_BATCH_TOKENS, O_DEVICE };
    static const struct option opts[] = {{"help", no_argument, 0, 'h'}, {"model", required_argument, 0, O_MODEL},
                                         {"batch-tokens", required_argument, 0, O_BATCH_TOKENS},
                                         {"device", required_argument, 0, O_DEVICE}, {0, 0, 0, 0}};
    cli_options_reset();
    const char *val, *opt;
    for (int o; (o = cli_option("logprobs", argc, argv, opts, NULL, &val, &opt)) != -1;) {
        switch (o) {
        case 'h': logprobs_usage(stdout); return 0;
        case O_MODEL: dir = val; break;
        case O_BATCH_TOKENS: batch_tokens = flag_long(opt, val, 1, 1 << 24); break;
        case O_DEVICE: cli_use_device(val); break;
        }
    }
    if (optind < argc) die_hint("s2d logprobs --help", "logprobs: unexpected argument '%s'", argv[optind]);
    if (!dir) die_hint("s2d logprobs --help", "logprobs needs --model DIR");
    s2d_err err;
    model m;
    if (!model_load(&m, dir, &err)) die("%s", err.msg);

    /* Read and check every line first: ids concatenated, start[i] = first id of line i. */
    int n = 0, cap = 64, longest = 0;
    size_t ids_len = 0, ids_cap = 4096;
    int *start = xmalloc(sizeof(int) * (size_t)(cap + 1));
    long *line_of = xmalloc(sizeof(long) * (size_t)cap); /* stdin line of each sequence (blank lines skipped) */
    int32_t *ids = xmalloc(sizeof(int32_t) * ids_cap);
    jsonl_reader r;
    jsonl_reader_init(&r, stdin, "stdin");
    cJSON *j;
    start[0] = 0;
    while ((j = jsonl_next(&r))) {
        int len;
        int32_t *line = json_int_array(j, &len, &r);
        cJSON_Delete(j);
        for (int t = 0; t < len; t++)
            if (line[t] < 0 || line[t] >= m.cfg.vocab)
                die("stdin:%ld: token id %d at position %d is out of range [0, %d)", r.lineno, line[t], t,
                    m.cfg.vocab);
        if (len > m.cfg.max_pos)
            die("stdin:%ld: %d tokens, more than the model's max_position_embeddings %d", r.lineno, len,
                m.cfg.max_pos);
        if (n == cap) {
            cap *= 2;
            start = xrealloc(start, sizeof(int) * (size_t)(cap + 1));
            line_of = xrealloc(line_of, sizeof(long) * (size_t)cap);
        }
        line_of[n] = r.lineno;
        if (ids_len + (size_t)len > ids_cap) {
            while (ids_len + (size_t)len > ids_cap) ids_cap *= 2;
            ids = xrealloc(ids, sizeof(int32_t) * ids_cap);
        }
        CHECK(ids_len + (size_t)len < (size_t)INT32_MAX, "stdin: more than 2^31 tokens in total");
        memcpy(ids + ids_len, line, sizeof(int32_t) * (size_t)len);
        ids_len += (size_t)len;
        start[++n] = (int)ids_len;
        longest = S2D_MAX(longest, len);
        free(line);
    }
    jsonl_reader_free(&r);

    /* Pack consecutive lines up to batch_tokens (a longer line goes alone); print in input order. */
    int ws_tokens = (int)S2D_MAX((long)longest, S2D_MIN(batch_tokens, (long)ids_len));
    model_ws *ws = model_ws_new(&m, S2D_MAX(ws_tokens, 1), false);
    float *logp = xmalloc(sizeof(float) * (size_t)S2D_MAX(ws_tokens, 1));
    int *seq_start = xmalloc(sizeof(int) * (size_t)(n + 1));
    double t0 = time_now();
    for (int i0 = 0; i0 < n;) {
        int i1 = i0 + 1;
        while (i1 < n && start[i1 + 1] - start[i0] <= ws_tokens) i1++;
        for (int i = i0; i <= i1; i++) seq_start[i - i0] = start[i] - start[i0];
        model_batch b = {i1 - i0, seq_start, ids + start[i0]};
        if (!model_token_logprobs(&m, ws, &b, logp, &err)) die("%s", err.msg);
        for (int i = i0; i < i1; i++) /* never print 1e999 or nan: JSON has neither */
            for (int k = start[i] - start[i0], e = start[i + 1] - start[i0] - 1; k < e; k++)
                if (!isfinite(logp[k]))
                    die("stdin:%ld: the log-prob at position %d is not finite (%g): the model's outputs overflow",
                        line_of[i], k - (start[i] - start[i0]) + 1, (double)logp[k]);
        for (int i = i0; i < i1; i++) {
            int len = start[i + 1] - start[i];
            print_float_array(stdout, logp + (start[i] - start[i0]), len > 0 ? len - 1 : 0);
        }
        i0 = i1;
    }
    double dt = time_now() - t0;
    log_info("logprobs: %d sequences, %zu tokens, %.2f s (%.0f tokens/s)", n, ids_len, dt,
             dt > 0 ? (double)ids_len / dt : 0.0);
    if (fflush(stdout) != 0) die("stdout: write failed");
    free(logp);
    free(seq_start);
    free(start);
    free(line_of);
    free(ids);
    model_ws_free(ws);
    model_free(&m);
    return 0;
}
