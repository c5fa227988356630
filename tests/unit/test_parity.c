/* Parity with PyTorch + HF transformers: tests/fixtures/parity/<case>/ holds a model (config.json +
 * model.safetensors) and ref.safetensors written by tools/make_fixtures.py: a packed batch (tokens, seq_lens),
 * the reference logits [T, V], next-token log-probs [T - S], loss = mean(-logprob), and grad.<name> = d loss /
 * d param for every parameter. We check logits and log-probs within 1e-4 absolute, the loss, and every
 * gradient within 1e-3 relative to its tensor's largest reference entry. Also checks the KV-cache paths
 * (prefill + decode) against the reference logits. */
#include <stdlib.h>
#include <string.h>

#include "io/safetensors.h"
#include "model/model.h"
#include "fixture.h"
#include "test.h"

static const char *CASES[] = {"qwen3_tied", "llama_scaled", "qwen3_untied", "qwen2_tied"};


typedef struct {
    const float *ref; /* [T, V] */
    int V;
    double max_err;
} logits_check;

static void check_logits_cb(void *user, int r0, int r1, float *logits, bool want_grad) {
    logits_check *c = user;
    for (size_t i = 0; i < (size_t)(r1 - r0) * c->V; i++) {
        double e = fabs((double)logits[i] - c->ref[(size_t)r0 * c->V + i]);
        if (e > c->max_err || isnan(e)) c->max_err = isnan(e) ? INFINITY : e;
    }
}

static void run_case(const char *root, const char *name) {
    char dir[4096], refpath[4096];
    snprintf(dir, sizeof dir, "%s/tests/fixtures/parity/%s", root, name);
    snprintf(refpath, sizeof refpath, "%s/ref.safetensors", dir);
    s2d_err err;
    model m;
    if (!model_load(&m, dir, &err)) {
        EXPECT(0, "%s: load: %s", name, err.msg);
        return;
    }
    st_set *ref;
    if (!st_open_file(refpath, &ref, &err)) {
        EXPECT(0, "%s: %s", name, err.msg);
        model_free(&m);
        return;
    }
    const st_tensor *tt = st_find(ref, "tokens"), *tl = st_find(ref, "seq_lens");
    EXPECT(tt && tl, "%s: ref has tokens and seq_lens", name);
    if (!tt || !tl) goto out_ref;
    int T = (int)tt->numel, S = (int)tl->numel, V = m.cfg.vocab;
    int32_t *tokens = malloc(sizeof(int32_t) * T), *lens = malloc(sizeof(int32_t) * S);
    CHECK_OK(st_read_i32(tt, tokens, T, &err), &err);
    CHECK_OK(st_read_i32(tl, lens, S, &err), &err);
    int *seq_start = malloc(sizeof(int) * (S + 1));
    seq_start[0] = 0;
    for (int s = 0; s < S; s++) seq_start[s + 1] = seq_start[s] + lens[s];
    EXPECT(seq_start[S] == T, "%s: seq_lens sum to T", name);
    model_batch batch = {S, seq_start, tokens};

    model_alloc_grads(&m);
    model_zero_grads(&m);
    model_ws *ws = model_ws_new(&m, T, true);
    EXPECT(model_forward(&m, ws, &batch, &err), "%s: forward: %s", name, err.msg);

    float *ref_logits = fixture_f32(ref, "logits", NULL), *ref_logp = fixture_f32(ref, "logprobs", NULL);
    float *ref_loss = fixture_f32(ref, "loss", NULL);
    EXPECT(ref_logits && ref_logp && ref_loss, "%s: ref has logits, logprobs, loss", name);
    if (ref_logits) {
        logits_check lc = {ref_logits, V, 0};
        model_logits_chunks(&m, ws, check_logits_cb, &lc);
        EXPECT(lc.max_err <= 1e-4, "%s: logits max abs error %.3g", name, lc.max_err);
        fprintf(stderr, "  %s: logits max abs err %.2e\n", name, lc.max_err);
    }
    float *logp = calloc(T, sizeof(float)), *dlogp = calloc(T, sizeof(float));
    model_token_logprobs_from_ws(&m, ws, logp);
    double loss = 0, max_lp = 0;
    int k = 0, n_targets = T - S;
    for (int s = 0; s < S; s++)
        for (int t = seq_start[s]; t < seq_start[s + 1] - 1; t++, k++) {
            if (ref_logp) max_lp = fmax(max_lp, fabs((double)logp[t] - ref_logp[k]));
            loss -= logp[t];
            dlogp[t] = -1.0f / (float)n_targets;
        }
    loss /= n_targets;
    EXPECT(max_lp <= 1e-4, "%s: logprobs max abs error %.3g", name, max_lp);
    if (ref_loss) EXPECT_CLOSE(loss, ref_loss[0], 1e-5, 1e-5, "loss");
    fprintf(stderr, "  %s: logprobs max abs err %.2e, loss %.6f\n", name, max_lp, loss);

    model_backward_logprobs(&m, ws, dlogp);
    double worst = 0;
    for (int i = 0; i < m.n_tensors; i++) {
        const model_tensor *t = &m.tensors[i];
        char gname[128];
        snprintf(gname, sizeof gname, "grad.%s", t->name);
        size_t n = 0;
        float *g = fixture_f32(ref, gname, &n);
        EXPECT(g && n == t->numel, "%s: ref has %s with %zu elements", name, gname, t->numel);
        if (!g) continue;
        double maxref = 0, maxdiff = 0;
        for (size_t j = 0; j < n; j++) {
            maxref = fmax(maxref, fabs(g[j]));
            maxdiff = fmax(maxdiff, fabs((double)m.grads[t->offset + j] - g[j]));
        }
        double rel = maxdiff / fmax(maxref, 1e-12);
        worst = fmax(worst, rel);
        EXPECT(rel <= 1e-3, "%s: %s relative error %.3g (max |ref| %.3g)", name, gname, rel, maxref);
        free(g);
    }
    fprintf(stderr, "  %s: worst gradient relative error %.2e\n", name, worst);

    /* KV cache: prefill a prefix of each sequence, decode the rest (all sequences in one batched step),
     * and compare each position's logits with the reference. */
    if (ref_logits) {
        model_kv_cache kv;
        int max_len = 0;
        for (int s = 0; s < S; s++) max_len = lens[s] > max_len ? lens[s] : max_len;
        EXPECT(model_kv_init(&kv, &m, S, max_len, &err), "%s: kv init: %s", name, err.msg);
        float *lg = malloc(sizeof(float) * (size_t)S * V);
        double kv_err = 0;
        int *slots = malloc(sizeof(int) * S), *pref = malloc(sizeof(int) * S);
        int32_t *next = malloc(sizeof(int32_t) * S);
        for (int s = 0; s < S; s++) {
            pref[s] = lens[s] > 2 ? lens[s] / 2 : 1;
            EXPECT(model_prefill(&m, &kv, s, tokens + seq_start[s], pref[s], lg, &err), "prefill: %s", err.msg);
            const float *want = ref_logits + (size_t)(seq_start[s] + pref[s] - 1) * V;
            for (int j = 0; j < V; j++) kv_err = fmax(kv_err, fabs((double)lg[j] - want[j]));
        }
        for (int step = 1;; step++) {
            int n = 0;
            for (int s = 0; s < S; s++)
                if (pref[s] - 1 + step < lens[s]) {
                    slots[n] = s;
                    next[n] = tokens[seq_start[s] + pref[s] - 1 + step];
                    n++;
                }
            if (n == 0) break;
            EXPECT(model_decode_step(&m, &kv, n, slots, next, lg, &err), "decode: %s", err.msg);
            for (int i = 0; i < n; i++) {
                int s = slots[i];
                const float *want = ref_logits + (size_t)(seq_start[s] + pref[s] - 1 + step) * V;
                for (int j = 0; j < V; j++) kv_err = fmax(kv_err, fabs((double)lg[(size_t)i * V + j] - want[j]));
            }
        }
        EXPECT(kv_err <= 1e-4, "%s: kv-cache logits max abs error %.3g", name, kv_err);
        fprintf(stderr, "  %s: kv-cache logits max abs err %.2e\n", name, kv_err);
        free(lg);
        free(slots);
        free(pref);
        free(next);
        model_kv_free(&kv);
    }

    free(ref_logits);
    free(ref_logp);
    free(ref_loss);
    free(logp);
    free(dlogp);
    model_ws_free(ws);
    free(tokens);
    free(lens);
    free(seq_start);
out_ref:
    st_close(ref);
    model_free(&m);
}

static void test_parity_cases(void) {
    const char *root = getenv("S2D_ROOT") ? getenv("S2D_ROOT") : ".";
    for (size_t i = 0; i < S2D_ARRAY_LEN(CASES); i++) run_case(root, CASES[i]);
}

int main(void) {
    RUN_TEST(test_parity_cases);
    return TEST_SUMMARY();
}
