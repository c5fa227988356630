/* test_adamw_parity: AdamW (clip 1.0, decay on linear weights only) on the PyTorch/HF fixture models against
 * torch.optim.AdamW (tests/fixtures/parity/<case>/ref.safetensors, made by tools/make_fixtures.py):
 *  - one step fed torch's own gradients (grad.*) must give torch's parameters (adamw_step1.*) to 1e-6:
 *    this isolates the optimizer from forward/backward rounding;
 *  - 5 full steps (our forward/backward) must give the loss before each step to 1e-4 relative, the pre-clip
 *    gradient norms to 1e-3 relative, and the parameters after step 5 to 1e-4. Adam divides by sqrt(v), so
 *    for the rare weights whose gradient keeps changing sign (|m| << sqrt(v)) fp32 rounding in the
 *    gradients is amplified: the same torch run with 1e-6 gradient noise moves some weights by > 1e-2.
 *    So at most 0.1% of the weights may exceed 1e-4, and none may exceed 1e-3. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "algo/optim.h"
#include "io/safetensors.h"
#include "model/model.h"
#include "fixture.h"
#include "test.h"

static const char *root(void) {
    const char *r = getenv("S2D_ROOT");
    return r ? r : ".";
}


/* Mean next-token NLL over the packed batch and its gradient w.r.t. each log-prob. */
static double loss_and_dlogp(const float *logp, const int *seq_start, int n_seqs, float *dlogp) {
    int T = seq_start[n_seqs], targets = T - n_seqs;
    double sum = 0;
    for (int t = 0; t < T; t++) dlogp[t] = 0;
    for (int s = 0; s < n_seqs; s++)
        for (int t = seq_start[s]; t < seq_start[s + 1] - 1; t++) {
            sum += logp[t];
            dlogp[t] = -1.0f / (float)targets;
        }
    return -sum / targets;
}

static void run_case(const char *name) {
    char dir[1024], path[1200];
    snprintf(dir, sizeof dir, "%s/tests/fixtures/parity/%s", root(), name);
    s2d_err err;
    model m;
    CHECK_OK(model_load(&m, dir, &err), &err);
    model_alloc_grads(&m);
    snprintf(path, sizeof path, "%s/ref.safetensors", dir);
    st_set *ref;
    CHECK_OK(st_open_file(path, &ref, &err), &err);
    snprintf(path, sizeof path, "%s/ref.json", dir);
    char *json_text;
    size_t json_len;
    CHECK_OK(read_file(path, &json_text, &json_len, &err), &err);
    cJSON *meta = cJSON_Parse(json_text);
    CHECK(meta, "%s: invalid JSON", path);
    const cJSON *hp_json = cJSON_GetObjectItem(meta, "adamw");
    const cJSON *betas = cJSON_GetObjectItem(hp_json, "betas");
    const double lr = cJSON_GetObjectItem(hp_json, "lr")->valuedouble;
    const double max_norm = cJSON_GetObjectItem(hp_json, "max_grad_norm")->valuedouble;
    const int steps = cJSON_GetObjectItem(hp_json, "steps")->valueint;
    adamw_hparams hp = {.beta1 = (float)cJSON_GetArrayItem(betas, 0)->valuedouble,
                        .beta2 = (float)cJSON_GetArrayItem(betas, 1)->valuedouble,
                        .eps = (float)cJSON_GetObjectItem(hp_json, "eps")->valuedouble,
                        .weight_decay = (float)cJSON_GetObjectItem(hp_json, "weight_decay")->valuedouble};

    adamw opt;
    adamw_init(&opt, m.n_params, &hp);
    adamw_decay_segments_from_model(&opt, &m, false, false);
    /* The decay mask must be torch's param groups (ref.json "decay"). */
    const cJSON *decay = cJSON_GetObjectItem(meta, "decay");
    int mask_errors = 0;
    for (int i = 0; i < m.n_tensors; i++) {
        bool want = false;
        const cJSON *e;
        cJSON_ArrayForEach(e, decay) want |= strcmp(e->valuestring, m.tensors[i].name) == 0;
        for (int s = 0; s < opt.n_segments; s++)
            if (opt.segments[s].offset == m.tensors[i].offset && opt.segments[s].decay != want) {
                mask_errors++;
                fprintf(stderr, "  %s: decay %d, torch group says %d\n", m.tensors[i].name, !want, want);
            }
    }
    EXPECT(mask_errors == 0 && opt.n_segments == m.n_tensors, "%s: decay mask matches torch param groups", name);

    size_t n_tok, n_seq, n_losses, n_norms;
    int32_t *tokens = fixture_i32(ref, "tokens", &n_tok);
    int32_t *seq_lens = fixture_i32(ref, "seq_lens", &n_seq);
    float *want_losses = fixture_f32(ref, "adamw_losses", &n_losses);
    float *want_norms = fixture_f32(ref, "adamw_grad_norms", &n_norms);
    CHECK((int)n_losses == steps && (int)n_norms == steps, "fixture has %zu losses for %d steps", n_losses, steps);
    int *seq_start = xmalloc((n_seq + 1) * sizeof(int));
    seq_start[0] = 0;
    for (size_t s = 0; s < n_seq; s++) seq_start[s + 1] = seq_start[s] + seq_lens[s];
    model_batch batch = {.n_seqs = (int)n_seq, .seq_start = seq_start, .tokens = tokens};
    const int T = (int)n_tok;
    model_ws *ws = model_ws_new(&m, T, true);
    float *logp = xmalloc((size_t)T * sizeof(float)), *dlogp = xmalloc((size_t)T * sizeof(float));
    /* One step from torch's gradients. */
    double worst1 = 0;
    const char *worst1_name = "";
    for (int i = 0; i < m.n_tensors; i++) {
        char key[160];
        snprintf(key, sizeof key, "grad.%s", m.tensors[i].name);
        size_t count;
        float *g = fixture_f32(ref, key, &count);
        CHECK(count == m.tensors[i].numel, "%s: %zu values, model has %zu", key, count, m.tensors[i].numel);
        memcpy(m.grads + m.tensors[i].offset, g, count * sizeof(float));
        free(g);
    }
    float *initial = xmalloc(m.n_params * sizeof(float));
    memcpy(initial, m.params, m.n_params * sizeof(float));
    double norm1 = adamw_clip_grad_norm(&opt, m.grads, (float)max_norm);
    EXPECT_CLOSE(norm1, want_norms[0], 0, 1e-6, "norm of torch's gradients");
    adamw_step(&opt, m.params, m.grads, (float)lr);
    for (int i = 0; i < m.n_tensors; i++) {
        char key[160];
        snprintf(key, sizeof key, "adamw_step1.%s", m.tensors[i].name);
        size_t count;
        float *want = fixture_f32(ref, key, &count);
        for (size_t j = 0; j < count; j++) {
            double d = fabs((double)m.params[m.tensors[i].offset + j] - want[j]);
            if (d > worst1) worst1 = d, worst1_name = m.tensors[i].name;
        }
        free(want);
    }
    EXPECT(worst1 < 1e-6, "%s: one AdamW step from torch's gradients differs by %g (%s)", name, worst1,
           worst1_name);
    memcpy(m.params, initial, m.n_params * sizeof(float));
    free(initial);
    adamw_reset(&opt);

    for (int step = 0; step < steps; step++) {
        CHECK_OK(model_forward(&m, ws, &batch, &err), &err);
        model_token_logprobs_from_ws(&m, ws, logp);
        double loss = loss_and_dlogp(logp, seq_start, (int)n_seq, dlogp);
        model_zero_grads(&m);
        model_backward_logprobs(&m, ws, dlogp);
        double norm = adamw_clip_grad_norm(&opt, m.grads, (float)max_norm);
        EXPECT_CLOSE(loss, want_losses[step], 0, 1e-4, name);
        EXPECT_CLOSE(norm, want_norms[step], 0, 1e-3, name);
        adamw_step(&opt, m.params, m.grads, (float)lr);
    }
    /* Every parameter after the last step. */
    double worst = 0;
    size_t over = 0;
    const char *worst_name = "";
    for (int i = 0; i < m.n_tensors; i++) {
        char key[160];
        snprintf(key, sizeof key, "adamw_final.%s", m.tensors[i].name);
        size_t count;
        float *want = fixture_f32(ref, key, &count);
        CHECK(count == m.tensors[i].numel, "%s: %zu values, model has %zu", key, count, m.tensors[i].numel);
        const float *got = m.params + m.tensors[i].offset;
        for (size_t j = 0; j < count; j++) {
            double d = fabs((double)got[j] - want[j]);
            if (d > worst) worst = d, worst_name = m.tensors[i].name;
            over += d > 1e-4;
        }
        free(want);
    }
    EXPECT(worst < 1e-3, "%s: params after %d AdamW steps differ from torch by up to %g (%s)", name, steps, worst,
           worst_name);
    EXPECT(over <= m.n_params / 1000, "%s: %zu of %zu params differ from torch by more than 1e-4", name, over,
           m.n_params);
    fprintf(stderr, "  %s: one step from torch grads max |diff| %.3g; after %d steps max |diff| %.3g (%s), %zu of "
            "%zu over 1e-4\n", name, worst1, steps, worst, worst_name, over, m.n_params);

    model_ws_free(ws);
    free(logp);
    free(dlogp);
    free(seq_start);
    free(tokens);
    free(seq_lens);
    free(want_losses);
    free(want_norms);
    adamw_free(&opt);
    cJSON_Delete(meta);
    free(json_text);
    st_close(ref);
    model_free(&m);
}

static void test_qwen3_tied(void) { run_case("qwen3_tied"); }
static void test_llama_scaled(void) { run_case("llama_scaled"); }
static void test_qwen3_untied(void) { run_case("qwen3_untied"); }
static void test_qwen2_tied(void) { run_case("qwen2_tied"); }

int main(void) {
    RUN_TEST(test_qwen3_tied);
    RUN_TEST(test_llama_scaled);
    RUN_TEST(test_qwen3_untied);
    RUN_TEST(test_qwen2_tied);
    return TEST_SUMMARY();
}
