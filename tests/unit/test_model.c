/* Model engine: config parsing and errors, the llama3 RoPE scaling rule, presets, init determinism, save/load
 * round trips and load errors, packing independence, chunked-vs-whole LM head, gradients of the general
 * logits-callback backward against finite differences, determinism, and KV-cache prefill/decode against the
 * packed forward. (Numerical parity with HF transformers is in test_parity.c.) */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ops/ops_cpu.h"
#include "core/half.h"
#include "core/rng.h"
#include "io/safetensors.h"
#include "model/model.h"
#include "ops/ops.h"
#include "test.h"

static char g_tmp[4096];

static const char *BASE_CONFIG =
    "{\"model_type\": \"qwen3\", \"hidden_size\": 64, \"num_hidden_layers\": 2, \"num_attention_heads\": 4,\n"
    " \"num_key_value_heads\": 2, \"head_dim\": 32, \"intermediate_size\": 128, \"vocab_size\": 512,\n"
    " \"max_position_embeddings\": 1024, \"rms_norm_eps\": 1e-6, \"tie_word_embeddings\": true,\n"
    " \"eos_token_id\": [3, 4], \"bos_token_id\": 2, %s}";

static bool parse_with(const char *extra, model_config *c, s2d_err *err) {
    char buf[4096];
    snprintf(buf, sizeof buf, BASE_CONFIG, extra);
    return model_config_parse(buf, "dir/config.json", c, err);
}

static void expect_parse_error(const char *text, const char *needle) {
    model_config c;
    s2d_err err = {{0}};
    bool ok = model_config_parse(text, "dir/config.json", &c, &err);
    EXPECT(!ok && strstr(err.msg, needle) && strstr(err.msg, "dir/config.json"), "want error with '%s', got '%s'",
           needle, ok ? "(accepted)" : err.msg);
}

static void test_config_parse(void) {
    model_config c;
    s2d_err err;
    EXPECT(parse_with("\"rope_theta\": 1000000.0", &c, &err), "parse: %s", err.msg);
    EXPECT(c.arch == MODEL_QWEN3 && c.head_dim == 32 && c.n_kv_heads == 2 && c.tie_embeddings, "fields");
    EXPECT(c.bos_id == 2 && c.n_eos == 2 && c.eos_ids[1] == 4, "bos/eos");
    EXPECT(c.rope_kind == ROPE_DEFAULT && c.rope_theta == 1e6, "rope default");
    /* head_dim absent: hidden / heads */
    EXPECT(model_config_parse("{\"model_type\": \"llama\", \"hidden_size\": 64, \"num_hidden_layers\": 1, "
                              "\"num_attention_heads\": 4, \"intermediate_size\": 8, \"vocab_size\": 10}",
                              "x", &c, &err),
           "minimal llama: %s", err.msg);
    EXPECT(c.head_dim == 16 && c.n_kv_heads == 4 && !c.tie_embeddings && c.n_eos == 0 && c.bos_id == -1,
           "defaults");
    /* both RoPE spellings give the same llama3 parameters */
    model_config a, b;
    EXPECT(parse_with("\"rope_theta\": 500000.0, \"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 32.0, "
                      "\"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0, \"original_max_position_embeddings\": 8192}",
                      &a, &err),
           "old spelling: %s", err.msg);
    EXPECT(parse_with("\"rope_parameters\": {\"rope_type\": \"llama3\", \"rope_theta\": 500000.0, \"factor\": 32.0, "
                      "\"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0, \"original_max_position_embeddings\": 8192}",
                      &b, &err),
           "v5 spelling: %s", err.msg);
    EXPECT(a.rope_kind == ROPE_LLAMA3 && b.rope_kind == ROPE_LLAMA3 && a.rope_theta == b.rope_theta &&
               a.rope_factor == 32 && b.rope_factor == 32 && a.rope_orig_max_pos == 8192 &&
               b.rope_orig_max_pos == 8192 && b.rope_high_freq_factor == 4,
           "rope spellings agree");
    /* errors name the file and the key */
    char buf[4096];
    snprintf(buf, sizeof buf, BASE_CONFIG, "\"rope_parameters\": {\"rope_type\": \"yarn\", \"factor\": 4.0}");
    expect_parse_error(buf, "rope_parameters.rope_type");
    snprintf(buf, sizeof buf, BASE_CONFIG, "\"rope_scaling\": {\"type\": \"dynamic\", \"factor\": 2.0}");
    expect_parse_error(buf, "rope_scaling.rope_type");
    snprintf(buf, sizeof buf, BASE_CONFIG, "\"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 2.0}");
    expect_parse_error(buf, "rope_scaling.low_freq_factor");
    snprintf(buf, sizeof buf, BASE_CONFIG, "\"attention_bias\": true");
    expect_parse_error(buf, "attention_bias");
    expect_parse_error("{\"model_type\": \"llama\", \"hidden_size\": 64, \"num_hidden_layers\": 1, "
                       "\"num_attention_heads\": 4, \"num_key_value_heads\": 3, \"intermediate_size\": 8, "
                       "\"vocab_size\": 10}",
                       "num_key_value_heads");
    expect_parse_error("{\"model_type\": \"llama\", \"hidden_size\": \"big\", \"num_hidden_layers\": 1, "
                       "\"num_attention_heads\": 4, \"intermediate_size\": 8, \"vocab_size\": 10}",
                       "hidden_size");
    expect_parse_error("{\"model_type\": \"qwen3\", \"num_hidden_layers\": 2}", "'hidden_size'");
    expect_parse_error("{\"model_type\": \"gpt2\"}", "model_type");
    expect_parse_error("{\n\"model_type\": \"qwen3\",\n\"hidden_size\": 64,,\n}", "dir/config.json:3");
}

static void test_presets_round_trip(void) {
    const char *names[] = {"qwen3-tiny", "llama-tiny", "qwen3-small", "qwen3-0.6b", "qwen3-1.7b", "llama3.2-1b"};
    for (size_t i = 0; i < S2D_ARRAY_LEN(names); i++) {
        model_config c, back;
        s2d_err err;
        EXPECT(model_config_preset(names[i], &c, &err), "preset %s", names[i]);
        char *json = model_config_to_json(&c);
        EXPECT(model_config_parse(json, names[i], &back, &err), "reparse %s: %s", names[i], err.msg);
        EXPECT(memcmp(&c, &back, sizeof c) == 0 || (c.arch == back.arch && c.hidden == back.hidden &&
                                                     c.n_layers == back.n_layers && c.head_dim == back.head_dim &&
                                                     c.rms_eps == back.rms_eps && c.rope_kind == back.rope_kind &&
                                                     c.rope_theta == back.rope_theta && c.n_eos == back.n_eos &&
                                                     c.tie_embeddings == back.tie_embeddings &&
                                                     c.rope_factor == back.rope_factor),
               "%s: config.json round trip", names[i]);
        free(json);
    }
    model_config c;
    s2d_err err;
    EXPECT(!model_config_preset("gpt-5", &c, &err) && strstr(err.msg, "gpt-5"), "unknown preset");
    /* the published Qwen3-0.6B has 596,049,920 parameters with tied embeddings */
    EXPECT(model_config_preset("qwen3-0.6b", &c, &err), "preset");
    size_t H = c.hidden, qd = (size_t)c.n_heads * c.head_dim, kvd = (size_t)c.n_kv_heads * c.head_dim;
    size_t n = (size_t)c.vocab * H + H +
               (size_t)c.n_layers * (2 * H + 2 * H * qd + 2 * H * kvd + 3 * H * c.intermediate + 2 * c.head_dim);
    EXPECT(n == 596049920u, "qwen3-0.6b parameter count %zu", n);
}

static void test_llama3_rope_rule(void) {
    /* Llama 3 scaling: wavelengths shorter than orig/high_freq_factor keep their frequency, longer than
     * orig/low_freq_factor are divided by factor, and those between are blended (between the two). */
    model_config c;
    s2d_err err;
    CHECK_OK(model_config_preset("llama3.2-1b", &c, &err), &err);
    int half = c.head_dim / 2;
    double f[64], base[64];
    model_rope_inv_freq(&c, f);
    c.rope_kind = ROPE_DEFAULT;
    model_rope_inv_freq(&c, base);
    int n_hi = 0, n_lo = 0, n_mid = 0;
    for (int i = 0; i < half; i++) {
        double expect_base = 1.0 / pow(500000.0, 2.0 * i / c.head_dim), wl = 2 * M_PI / base[i];
        EXPECT(fabs(base[i] - expect_base) <= 1e-6 * expect_base, "default inv_freq %d", i);
        if (wl < 8192.0 / 4) {
            EXPECT(f[i] == base[i], "high frequency %d kept", i);
            n_hi++;
        } else if (wl > 8192.0 / 1) {
            EXPECT(fabs(f[i] - base[i] / 32) <= 1e-7 * base[i], "low frequency %d divided by factor", i);
            n_lo++;
        } else {
            double smooth = (8192.0 / wl - 1) / (4 - 1);
            double want = (1 - smooth) * base[i] / 32 + smooth * base[i];
            EXPECT(fabs(f[i] - want) <= 1e-6 * want && f[i] <= base[i] && f[i] >= base[i] / 32, "blend %d", i);
            n_mid++;
        }
    }
    EXPECT(n_hi > 0 && n_lo > 0 && n_mid > 0, "all three regimes present (%d %d %d)", n_hi, n_lo, n_mid);
}

static void make_tiny(model *m, const char *preset, uint64_t seed) {
    model_config c;
    s2d_err err;
    CHECK_OK(model_config_preset(preset, &c, &err), &err);
    model_create(m, &c);
    model_init_random(m, seed);
    /* non-trivial norm weights so their gradients matter */
    rng_stream r;
    rng_stream_init(&r, seed + 99, 0);
    for (int i = 0; i < m->n_tensors; i++)
        if (m->tensors[i].kind == TENSOR_NORM)
            for (size_t j = 0; j < m->tensors[i].numel; j++)
                m->params[m->tensors[i].offset + j] = (float)(1 + 0.3 * rng_next_normal(&r));
}

static void test_init_random(void) {
    model a, b, c;
    s2d_err err;
    model_config cfg;
    CHECK_OK(model_config_preset("qwen3-tiny", &cfg, &err), &err);
    model_create(&a, &cfg), model_create(&b, &cfg), model_create(&c, &cfg);
    model_init_random(&a, 7), model_init_random(&b, 7), model_init_random(&c, 8);
    EXPECT(memcmp(a.params, b.params, sizeof(float) * a.n_params) == 0, "same seed, same model");
    EXPECT(memcmp(a.params, c.params, sizeof(float) * a.n_params) != 0, "different seed, different model");
    const model_tensor *e = model_find_tensor(&a, "model.embed_tokens.weight");
    const model_tensor *nw = model_find_tensor(&a, "model.layers.1.self_attn.k_norm.weight");
    EXPECT(e && nw && !model_find_tensor(&a, "lm_head.weight"), "tensor table names (tied: no lm_head)");
    double s2 = 0;
    for (size_t j = 0; j < e->numel; j++) s2 += (double)a.params[e->offset + j] * a.params[e->offset + j];
    EXPECT(fabs(sqrt(s2 / e->numel) - 0.02) < 0.001, "embedding std %.4f ~ 0.02", sqrt(s2 / e->numel));
    int ones = 1;
    for (size_t j = 0; j < nw->numel; j++) ones &= a.params[nw->offset + j] == 1.0f;
    EXPECT(ones && nw->numel == 32, "norm weights 1, k_norm over head_dim");
    EXPECT(a.w.lm_head == a.w.embed, "tied lm_head views the embedding");
    model_free(&a), model_free(&b), model_free(&c);
}

static void write_config(const char *dir, const char *text) {
    char p[4200];
    snprintf(p, sizeof p, "%s/config.json", dir);
    FILE *f = fopen(p, "w");
    CHECK(f, "cannot write %s", p);
    fputs(text, f);
    fclose(f);
}

static void test_save_load(void) {
    model m, back;
    s2d_err err;
    make_tiny(&m, "llama-tiny", 11);
    char dir[4200], dir16[4200];
    snprintf(dir, sizeof dir, "%s/llama", g_tmp);
    snprintf(dir16, sizeof dir16, "%s/llama16", g_tmp);
    EXPECT(model_save(&m, dir, false, &err), "save: %s", err.msg);
    EXPECT(model_load(&back, dir, &err), "load: %s", err.msg);
    EXPECT(back.n_params == m.n_params && memcmp(back.params, m.params, sizeof(float) * m.n_params) == 0,
           "f32 round trip is exact");
    EXPECT(back.cfg.rope_kind == ROPE_LLAMA3 && !back.cfg.tie_embeddings, "config round trip");
    model_free(&back);
    EXPECT(model_save(&m, dir16, true, &err), "save bf16: %s", err.msg);
    EXPECT(model_load(&back, dir16, &err), "load bf16: %s", err.msg);
    float *r = malloc(sizeof(float) * m.n_params);
    memcpy(r, m.params, sizeof(float) * m.n_params);
    f32_round_to_bf16(r, m.n_params);
    EXPECT(memcmp(back.params, r, sizeof(float) * m.n_params) == 0, "bf16 round trip = rounding to bf16");
    free(r);
    model_free(&back);

    /* errors: missing weights file, malformed config, wrong shape, unexpected and missing tensors */
    char bad[4200], p[4300];
    snprintf(bad, sizeof bad, "%s/bad", g_tmp);
    mkdir(bad, 0755);
    char *json = model_config_to_json(&m.cfg);
    write_config(bad, json);
    EXPECT(!model_load(&back, bad, &err) && strstr(err.msg, "model.safetensors"), "missing weights: %s", err.msg);
    write_config(bad, "{\"model_type\": \"llama\", \"hidden_size\": 64");
    EXPECT(!model_load(&back, bad, &err) && strstr(err.msg, "config.json"), "malformed config: %s", err.msg);
    write_config(bad, json);
    st_write_tensor *ts = calloc((size_t)m.n_tensors + 1, sizeof *ts);
    for (int i = 0; i < m.n_tensors; i++) {
        ts[i].name = m.tensors[i].name;
        ts[i].ndim = m.tensors[i].ndim;
        ts[i].shape[0] = m.tensors[i].shape[0];
        ts[i].shape[1] = m.tensors[i].shape[1];
        ts[i].f32 = m.params + m.tensors[i].offset;
    }
    snprintf(p, sizeof p, "%s/model.safetensors", bad);
    const model_tensor *wk = model_find_tensor(&m, "model.layers.1.self_attn.o_proj.weight");
    int ik = (int)(wk - m.tensors);
    ts[ik].shape[0] = wk->shape[1], ts[ik].shape[1] = wk->shape[0]; /* transposed */
    CHECK_OK(st_write(p, ts, m.n_tensors, ST_F32, NULL, 0, &err), &err);
    bool loaded = model_load(&back, bad, &err);
    EXPECT(!loaded && strstr(err.msg, "model.layers.1.self_attn.o_proj.weight"), "wrong shape names the tensor: %s",
           loaded ? "(loaded)" : err.msg);
    /* ... and the config.json keys behind both of its dimensions, checked before anything is allocated */
    EXPECT(!loaded && strstr(err.msg, "config.json: key 'hidden_size' 64 and keys 'num_attention_heads' x 'head_dim' "
                             "4 x 32 does not match the weights") && strstr(err.msg, "has shape [128, 64]"),
           "wrong shape names the keys: %s", loaded ? "(loaded)" : err.msg);
    if (loaded) model_free(&back);
    ts[ik].shape[0] = wk->shape[0], ts[ik].shape[1] = wk->shape[1];
    ts[m.n_tensors] = ts[0];
    ts[m.n_tensors].name = "model.layers.0.self_attn.q_proj.bias";
    CHECK_OK(st_write(p, ts, m.n_tensors + 1, ST_F32, NULL, 0, &err), &err);
    EXPECT(!model_load(&back, bad, &err) && strstr(err.msg, "q_proj.bias"), "unexpected tensor: %s", err.msg);
    ts[m.n_tensors].name = "model.layers.0.self_attn.rotary_emb.inv_freq"; /* a buffer: ignored */
    CHECK_OK(st_write(p, ts, m.n_tensors + 1, ST_F32, NULL, 0, &err), &err);
    EXPECT(model_load(&back, bad, &err), "rotary inv_freq ignored: %s", err.msg);
    model_free(&back);
    CHECK_OK(st_write(p, ts + 1, m.n_tensors - 1, ST_F32, NULL, 0, &err), &err);
    EXPECT(!model_load(&back, bad, &err) && strstr(err.msg, "model.embed_tokens.weight"), "missing tensor: %s",
           err.msg);
    free(json);
    free(ts);
    model_free(&m);

    /* tied model with a stored lm_head: ignored, as HF does */
    make_tiny(&m, "qwen3-tiny", 12);
    snprintf(bad, sizeof bad, "%s/tied", g_tmp);
    EXPECT(model_save(&m, bad, false, &err), "save: %s", err.msg);
    st_write_tensor *tt = calloc((size_t)m.n_tensors + 1, sizeof *tt);
    for (int i = 0; i < m.n_tensors; i++) {
        tt[i].name = m.tensors[i].name;
        tt[i].ndim = m.tensors[i].ndim;
        tt[i].shape[0] = m.tensors[i].shape[0];
        tt[i].shape[1] = m.tensors[i].shape[1];
        tt[i].f32 = m.params + m.tensors[i].offset;
    }
    tt[m.n_tensors] = tt[0];
    tt[m.n_tensors].name = "lm_head.weight";
    snprintf(p, sizeof p, "%s/model.safetensors", bad);
    CHECK_OK(st_write(p, tt, m.n_tensors + 1, ST_F32, NULL, 0, &err), &err);
    EXPECT(model_load(&back, bad, &err) && back.w.lm_head == back.w.embed, "tied + stored lm_head loads: %s",
           err.msg);
    model_free(&back);
    free(tt);
    model_free(&m);
}

static void test_packing_and_errors(void) {
    model m;
    s2d_err err;
    make_tiny(&m, "qwen3-tiny", 3);
    /* three sequences (one of 150 rows so attention spans several query blocks; 300 rows -> two LM-head
     * chunks), packed, must give what each gives alone */
    int lens[3] = {150, 1, 149}, T = 300;
    int32_t *tok = malloc(sizeof(int32_t) * T);
    rng_stream r;
    rng_stream_init(&r, 5, 0);
    for (int t = 0; t < T; t++) tok[t] = (int32_t)rng_next_below(&r, 512);
    int seq_start[4] = {0, 150, 151, 300};
    model_batch b = {3, seq_start, tok};
    model_ws *ws = model_ws_new(&m, T, false);
    float *packed = malloc(sizeof(float) * T), *alone = malloc(sizeof(float) * T);
    EXPECT(model_token_logprobs(&m, ws, &b, packed, &err), "packed: %s", err.msg);
    double worst = 0;
    for (int s = 0; s < 3; s++) {
        int st[2] = {0, lens[s]};
        model_batch one = {1, st, tok + seq_start[s]};
        EXPECT(model_token_logprobs(&m, ws, &one, alone, &err), "alone: %s", err.msg);
        for (int t = 0; t < lens[s]; t++) worst = fmax(worst, fabs(alone[t] - packed[seq_start[s] + t]));
    }
    EXPECT(worst < 2e-5, "packed == separate (%.3g)", worst);
    EXPECT(packed[149] == 0 && packed[150] == 0 && packed[299] == 0, "last row of each sequence is 0");
    double mean = 0;
    for (int t = 0; t < 149; t++) mean += packed[t];
    EXPECT(fabs(mean / 149 + log(512.0)) < 0.5, "random model ~ uniform: mean logp %.3f", mean / 149);

    tok[200] = 512;
    EXPECT(!model_token_logprobs(&m, ws, &b, packed, &err) && strstr(err.msg, "512") && strstr(err.msg, "200"),
           "out-of-range token names token and position: %s", err.msg);
    tok[200] = 1;
    int big[2] = {0, 301};
    model_batch too = {1, big, tok};
    EXPECT(!model_forward(&m, ws, &too, &err) && strstr(err.msg, "301"), "too many tokens: %s", err.msg);
    model_ws_free(ws);
    free(tok), free(packed), free(alone);
    model_free(&m);
}

/* loss = sum_{r,v} a[r,v] * logits[r,v] + sum_r b[r] * logsumexp(logits[r]) through the callback API. */
typedef struct {
    const float *a, *b;
    int V;
    double loss;
} cb_ctx;
static void lin_cb(void *user, int r0, int r1, float *logits, bool want_grad) {
    cb_ctx *c = user;
    for (int r = r0; r < r1; r++) {
        float *x = logits + (size_t)(r - r0) * c->V;
        double mx = x[0], s = 0;
        for (int v = 1; v < c->V; v++) mx = fmax(mx, x[v]);
        for (int v = 0; v < c->V; v++) s += exp(x[v] - mx);
        double lse = mx + log(s);
        for (int v = 0; v < c->V; v++) c->loss += (double)c->a[(size_t)r * c->V + v] * x[v];
        c->loss += c->b[r] * lse;
        if (want_grad)
            for (int v = 0; v < c->V; v++)
                x[v] = c->a[(size_t)r * c->V + v] + c->b[r] * (float)exp(x[v] - lse);
    }
}

static double cb_loss(model *m, model_ws *ws, const model_batch *b, cb_ctx *c) {
    s2d_err err;
    CHECK_OK(model_forward(m, ws, b, &err), &err);
    c->loss = 0;
    model_logits_chunks(m, ws, lin_cb, c);
    return c->loss;
}

static void test_backward_finite_differences(void) {
    const char *presets[] = {"qwen3-tiny", "llama-tiny"};
    for (int pi = 0; pi < 2; pi++) {
        model m;
        make_tiny(&m, presets[pi], 21 + pi);
        /* larger weights make every path matter */
        for (size_t i = 0; i < m.n_params; i++) m.params[i] *= 2;
        int T = 11, V = m.cfg.vocab;
        int32_t tok[11] = {5, 9, 9, 100, 3, 7, 511, 0, 42, 9, 5};
        int seq_start[3] = {0, 6, 11};
        model_batch b = {2, seq_start, tok};
        rng_stream r;
        rng_stream_init(&r, 77, 0);
        float *a = malloc(sizeof(float) * T * V), bb[11];
        for (int i = 0; i < T * V; i++) a[i] = (float)(0.05 * rng_next_normal(&r));
        for (int i = 0; i < T; i++) bb[i] = (float)rng_next_normal(&r);
        cb_ctx c = {a, bb, V, 0};
        model_ws *ws = model_ws_new(&m, T, true);
        model_alloc_grads(&m);
        model_zero_grads(&m);
        cb_loss(&m, ws, &b, &c);
        model_backward_logits(&m, ws, lin_cb, &c);
        float *g1 = malloc(sizeof(float) * m.n_params);
        memcpy(g1, m.grads, sizeof(float) * m.n_params);
        /* determinism: the same backward again gives identical bits */
        model_zero_grads(&m);
        cb_loss(&m, ws, &b, &c);
        model_backward_logits(&m, ws, lin_cb, &c);
        EXPECT(memcmp(g1, m.grads, sizeof(float) * m.n_params) == 0, "%s: backward is deterministic", presets[pi]);
        /* central differences (fp32 forward, double loss) on 3 entries of each tensor */
        for (int ti = 0; ti < m.n_tensors; ti++) {
            const model_tensor *t = &m.tensors[ti];
            double gmax = 0;
            for (size_t j = 0; j < t->numel; j++) gmax = fmax(gmax, fabs(g1[t->offset + j]));
            double worst = 0;
            for (int k = 0; k < 3; k++) { /* the largest-gradient entry of each third of the tensor */
                size_t j0 = t->numel * (size_t)k / 3, j1 = t->numel * (size_t)(k + 1) / 3, best = j0;
                for (size_t j = j0; j < j1; j++)
                    if (fabs(g1[t->offset + j]) > fabs(g1[t->offset + best])) best = j;
                float *p = m.params + t->offset + best, keep = *p, h = 1e-3f * fmaxf(1.0f, fabsf(keep));
                *p = keep + h;
                double lp = cb_loss(&m, ws, &b, &c);
                *p = keep - h;
                double lm = cb_loss(&m, ws, &b, &c);
                *p = keep;
                double fd = (lp - lm) / ((double)(keep + h) - (double)(keep - h));
                worst = fmax(worst, fabs(fd - g1[t->offset + best]));
            }
            EXPECT(worst <= 2e-2 * gmax + 1e-6, "%s: %s finite differences: err %.3g vs max|g| %.3g", presets[pi],
                   t->name, worst, gmax);
        }
        free(a), free(g1);
        model_ws_free(ws);
        model_free(&m);
    }
}

typedef struct {
    float *out; /* [V] logits of row `row` */
    int row, V;
} grab_ctx;
static void grab_cb(void *user, int r0, int r1, float *logits, bool want_grad) {
    grab_ctx *g = user;
    if (g->row >= r0 && g->row < r1) memcpy(g->out, logits + (size_t)(g->row - r0) * g->V, sizeof(float) * g->V);
}

static void test_kv_cache(void) {
    model m;
    s2d_err err;
    make_tiny(&m, "llama-tiny", 31);
    int V = m.cfg.vocab, n = 300; /* longer than one prefill piece (256) */
    int32_t *tok = malloc(sizeof(int32_t) * n);
    for (int t = 0; t < n; t++) tok[t] = (t * 37 + 11) % V;
    model_ws *ws = model_ws_new(&m, n, false);
    int st[2] = {0, n};
    model_batch b = {1, st, tok};
    CHECK_OK(model_forward(&m, ws, &b, &err), &err);
    float *want = malloc(sizeof(float) * V), *got = malloc(sizeof(float) * 3 * V);
    grab_ctx g = {want, n - 1, V};
    model_logits_chunks(&m, ws, grab_cb, &g);
    model_kv_cache kv;
    EXPECT(model_kv_init(&kv, &m, 3, n + 4, &err), "kv init: %s", err.msg);
    EXPECT(model_prefill(&m, &kv, 1, tok, n, got, &err), "prefill: %s", err.msg);
    double e = 0;
    for (int v = 0; v < V; v++) e = fmax(e, fabs(got[v] - want[v]));
    EXPECT(e < 1e-4 && kv.len[1] == n, "prefill of 300 tokens == packed forward (%.3g)", e);
    /* decode: slot 1 alone vs together with slots 0 and 2 */
    int32_t p0[2] = {1, 2};
    CHECK_OK(model_prefill(&m, &kv, 0, p0, 2, got, &err), &err);
    CHECK_OK(model_prefill(&m, &kv, 2, p0, 1, got, &err), &err);
    int slots_all[3] = {2, 1, 0}, slot1[1] = {1};
    int32_t next_all[3] = {8, 77, 9}, next1[1] = {77};
    float *alone = malloc(sizeof(float) * V);
    EXPECT(model_decode_step(&m, &kv, 1, slot1, next1, alone, &err), "decode alone: %s", err.msg);
    kv.len[1]--; /* overwrite the same position again, now in a batch of three */
    EXPECT(model_decode_step(&m, &kv, 3, slots_all, next_all, got, &err), "decode batch: %s", err.msg);
    e = 0;
    for (int v = 0; v < V; v++) e = fmax(e, fabs(got[(size_t)V + v] - alone[v]));
    EXPECT(e < 1e-5, "a slot's logits do not depend on the other active slots (%.3g)", e);
    /* and it equals the packed forward over the 301 tokens */
    int32_t *tok2 = malloc(sizeof(int32_t) * (n + 1));
    memcpy(tok2, tok, sizeof(int32_t) * n);
    tok2[n] = 77;
    model_ws *ws2 = model_ws_new(&m, n + 1, false);
    int st2[2] = {0, n + 1};
    model_batch b2 = {1, st2, tok2};
    CHECK_OK(model_forward(&m, ws2, &b2, &err), &err);
    g.row = n;
    model_logits_chunks(&m, ws2, grab_cb, &g);
    e = 0;
    for (int v = 0; v < V; v++) e = fmax(e, fabs(alone[v] - want[v]));
    EXPECT(e < 1e-4, "decode step == packed forward (%.3g)", e);
    /* errors */
    int dup[2] = {0, 0};
    EXPECT(!model_decode_step(&m, &kv, 2, dup, next_all, got, &err) && strstr(err.msg, "twice"), "duplicate slot");
    int32_t badtok[1] = {-3};
    EXPECT(!model_decode_step(&m, &kv, 1, slot1, badtok, got, &err) && strstr(err.msg, "-3"), "bad token");
    EXPECT(!model_prefill(&m, &kv, 1, tok, 10, got, &err) && strstr(err.msg, "slot 1"), "slot overflow");
    model_kv_reset(&kv, 1);
    EXPECT(kv.len[1] == 0 && model_prefill(&m, &kv, 1, tok, 10, got, &err), "reset slot reusable");
    model_kv_free(&kv);
    model_ws_free(ws), model_ws_free(ws2);
    free(tok), free(tok2), free(want), free(got), free(alone);
    model_free(&m);
}

/* model_prefill_batch: several prompts (one longer than a scratch pack, one continuing a slot that already
 * holds tokens) in one call give bitwise the logits and cache contents of prefilling each alone. */
static void test_kv_prefill_batch(void) {
    model m;
    s2d_err err;
    make_tiny(&m, "qwen3-tiny", 7);
    const int V = m.cfg.vocab, n = 4, max_len = 320;
    const int len[4] = {5, 300, 1, 12}, slots[4] = {3, 0, 2, 1};
    int start[5] = {0};
    for (int i = 0; i < n; i++) start[i + 1] = start[i] + len[i];
    int32_t *tok = malloc(sizeof(int32_t) * start[n]), pre[4] = {3, 1, 4, 1};
    for (int t = 0; t < start[n]; t++) tok[t] = (t * 53 + 7) % V;
    model_kv_cache kb, ka;
    CHECK_OK(model_kv_init(&kb, &m, 4, max_len, &err), &err);
    CHECK_OK(model_kv_init(&ka, &m, 4, max_len, &err), &err);
    float *lb = malloc(sizeof(float) * n * V), *la = malloc(sizeof(float) * n * V);
    CHECK_OK(model_prefill(&m, &kb, 2, pre, 4, lb, &err), &err); /* slot 2 continues from position 4 */
    CHECK_OK(model_prefill(&m, &ka, 2, pre, 4, la, &err), &err);
    EXPECT(model_prefill_batch(&m, &kb, n, slots, start, tok, lb, &err), "prefill batch: %s", err.msg);
    for (int i = 0; i < n; i++) CHECK_OK(model_prefill(&m, &ka, slots[i], tok + start[i], len[i], la + (size_t)i * V, &err), &err);
    EXPECT(memcmp(la, lb, sizeof(float) * n * V) == 0, "batched prefill logits == one prompt at a time (bitwise)");
    bool lens = true;
    for (int s = 0; s < 4; s++) lens = lens && ka.len[s] == kb.len[s];
    EXPECT(lens && kb.len[2] == 5 && kb.len[0] == 300, "slot lengths after batched prefill");
    int all[4] = {0, 1, 2, 3};
    int32_t next[4] = {9, 8, 7, 6};
    CHECK_OK(model_decode_step(&m, &kb, 4, all, next, lb, &err), &err);
    CHECK_OK(model_decode_step(&m, &ka, 4, all, next, la, &err), &err);
    EXPECT(memcmp(la, lb, sizeof(float) * n * V) == 0, "decode after batched prefill == after single prefills");
    /* errors are found before any slot changes */
    int before = kb.len[1], dup[2] = {1, 1}, two[2] = {1, 2}, st_empty[3] = {0, 3, 3};
    EXPECT(!model_prefill_batch(&m, &kb, 2, dup, start, tok, lb, &err) && strstr(err.msg, "twice"), "duplicate slot");
    EXPECT(!model_prefill_batch(&m, &kb, 2, two, st_empty, tok, lb, &err) && strstr(err.msg, "prompt 1 is empty"),
           "empty prompt: %s", err.msg);
    int st_long[3] = {0, 1, 316}; /* slot 2 holds 6: 6 + 315 > 320 */
    EXPECT(!model_prefill_batch(&m, &kb, 2, two, st_long, tok, lb, &err) && strstr(err.msg, "prompt 1") &&
               strstr(err.msg, "slot 2"), "too long for its slot: %s", err.msg);
    EXPECT(kb.len[1] == before, "no slot changed by a failed call");
    model_kv_free(&kb), model_kv_free(&ka);
    free(tok), free(lb), free(la);
    model_free(&m);
}

/* Three prompts prefilled in one batch (one continuing a slot), then two decode steps, on an emptied cache:
 * logits [3 + 3 + 3, V] into out. */
static void kv_steps(const model *m, model_kv_cache *kv, float *out) {
    s2d_err err;
    const int V = m->cfg.vocab;
    for (int s = 0; s < kv->n_slots; s++) model_kv_reset(kv, s);
    int32_t tok[20], pre[3] = {5, 6, 7};
    for (int t = 0; t < 20; t++) tok[t] = (t * 29 + 3) % V;
    const int slots[3] = {2, 0, 1}, start[4] = {0, 4, 15, 20};
    CHECK_OK(model_prefill(m, kv, 1, pre, 3, out, &err), &err);
    CHECK_OK(model_prefill_batch(m, kv, 3, slots, start, tok, out, &err), &err);
    int all[3] = {0, 1, 2};
    int32_t next[3] = {9, 8, 7};
    CHECK_OK(model_decode_step(m, kv, 3, all, next, out + 3 * (size_t)V, &err), &err);
    CHECK_OK(model_decode_step(m, kv, 3, all, next, out + 6 * (size_t)V, &err), &err);
}

/* bf16 weight copy: on a model whose weights are all bf16-exact, prefill and decode from the copy give logits
 * and cache rows BITWISE equal to the fp32 weights (AVX-512 and portable paths); a model with one non-bf16
 * weight keeps fp32; the copy is a snapshot that model_kv_refresh_weights brings up to date. */
static void test_kv_bf16_weights(void) {
    model m;
    s2d_err err;
    make_tiny(&m, "qwen3-tiny", 13);
    f32_round_to_bf16(m.params, m.n_params);
    const int V = m.cfg.vocab, max_len = 40;
    const size_t nl = 9 * (size_t)V;
    float *a = malloc(sizeof(float) * nl), *b = malloc(sizeof(float) * nl);
    model_kv_cache k32, k16;
    CHECK_OK(model_kv_init(&k32, &m, 3, max_len, &err), &err);
    CHECK_OK(model_kv_init(&k16, &m, 3, max_len, &err), &err);
    EXPECT(!k16.bf16_weights, "a new cache starts on the fp32 weights");
    EXPECT(model_kv_refresh_weights(&k16, &m) && k16.bf16_weights, "bf16-exact model: the bf16 copy is used");
    const bool have_avx512 = ops_avx512_active();
    for (int portable = 0; portable <= 1; portable++) {
        ops_set_portable(portable);
        const char *path = ops_avx512_active() ? "AVX-512" : "portable";
        kv_steps(&m, &k32, a);
        kv_steps(&m, &k16, b);
        EXPECT(memcmp(a, b, sizeof(float) * nl) == 0, "%s: prefill/decode logits from the bf16 copy == fp32, bitwise",
               path);
        EXPECT(memcmp(k32.buf, k16.buf, k32.bytes) == 0, "%s: KV cache rows from the bf16 copy == fp32, bitwise", path);
    }
    ops_set_portable(!have_avx512);
    /* In-place update to other bf16-exact weights (doubling is exact): without a refresh the cache still reads
     * its snapshot (proof that the copy is what runs); after the refresh it matches fp32 on the new weights. */
    const model_tensor *wq = model_find_tensor(&m, "model.layers.0.self_attn.q_proj.weight");
    CHECK(wq, "no q_proj");
    float *old_logits = malloc(sizeof(float) * nl);
    kv_steps(&m, &k32, old_logits); /* on the default path again */
    for (size_t i = 0; i < wq->numel; i++) m.params[wq->offset + i] *= 2;
    kv_steps(&m, &k16, b);
    EXPECT(memcmp(b, old_logits, sizeof(float) * nl) == 0, "without a refresh the bf16 snapshot is what runs");
    kv_steps(&m, &k32, a);
    EXPECT(memcmp(a, old_logits, sizeof(float) * nl) != 0, "the doubled q_proj changes the fp32 logits");
    EXPECT(model_kv_refresh_weights(&k16, &m), "still bf16-exact after doubling");
    kv_steps(&m, &k16, b);
    EXPECT(memcmp(a, b, sizeof(float) * nl) == 0, "after model_kv_refresh_weights: bitwise fp32 of the new weights");
    /* One weight off the bf16 grid (the last one: the scan reaches it last): the fp32 path. */
    m.params[m.n_params - 1] += 0x1p-20f * (1 + fabsf(m.params[m.n_params - 1]));
    EXPECT(!model_kv_refresh_weights(&k16, &m) && !k16.bf16_weights, "one non-bf16 weight: fp32 path");
    kv_steps(&m, &k32, a);
    kv_steps(&m, &k16, b);
    EXPECT(memcmp(a, b, sizeof(float) * nl) == 0, "non-bf16 model: the cache computes with the fp32 weights");
    model_kv_free(&k32), model_kv_free(&k16);
    free(a), free(b), free(old_logits);
    model_free(&m);
}

int main(void) {
    snprintf(g_tmp, sizeof g_tmp, "%s/s2d-test-model.XXXXXX", getenv("S2D_TMP") ? getenv("S2D_TMP") : "/tmp");
    CHECK(mkdtemp(g_tmp), "mkdtemp failed");
    RUN_TEST(test_config_parse);
    RUN_TEST(test_presets_round_trip);
    RUN_TEST(test_llama3_rope_rule);
    RUN_TEST(test_init_random);
    RUN_TEST(test_save_load);
    RUN_TEST(test_packing_and_errors);
    RUN_TEST(test_backward_finite_differences);
    RUN_TEST(test_kv_cache);
    RUN_TEST(test_kv_prefill_batch);
    RUN_TEST(test_kv_bf16_weights);
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_tmp);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", g_tmp);
    return TEST_SUMMARY();
}
