/* test_generate: KV-cache generation with continuous batching on the PyTorch/HF fixture models:
 * greedy output identical to HF model.generate, behaviour log-probs equal to the packed forward's log-probs of
 * the same sequence, outputs independent of batch composition, shared prompts bitwise the same as prefilled
 * ones, stop tokens, cache-full and bad input. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/half.h"
#include "io/safetensors.h"
#include "model/generate.h"
#include "model/model.h"
#include "fixture.h"
#include "test.h"

static const char *CASES[] = {"qwen3_tied", "llama_scaled", "qwen3_untied", "qwen2_tied"};

static void fixture_dir(char *out, size_t n, const char *name) {
    const char *r = getenv("S2D_ROOT");
    snprintf(out, n, "%s/tests/fixtures/parity/%s", r ? r : ".", name);
}


static gen_params greedy_params(int max_new) {
    gen_params gp = {.sampling = {.temperature = 0, .top_k = 0, .top_p = 1, .seed = 0}, .max_new_tokens = max_new};
    return gp;
}

static void test_greedy_matches_hf(void) {
    for (size_t c = 0; c < S2D_ARRAY_LEN(CASES); c++) {
        char dir[1024], path[1100];
        fixture_dir(dir, sizeof dir, CASES[c]);
        s2d_err err;
        model m;
        CHECK_OK(model_load(&m, dir, &err), &err);
        snprintf(path, sizeof path, "%s/ref.safetensors", dir);
        st_set *ref;
        CHECK_OK(st_open_file(path, &ref, &err), &err);
        size_t n_tok, n_prompts, n_out;
        int32_t *prompts = fixture_i32(ref, "greedy_prompts", &n_tok);
        int32_t *lens = fixture_i32(ref, "greedy_prompt_lens", &n_prompts);
        int32_t *want = fixture_i32(ref, "greedy_out", &n_out);
        const int N = (int)(n_out / n_prompts);
        int *start = xmalloc((n_prompts + 1) * sizeof(int));
        start[0] = 0;
        for (size_t p = 0; p < n_prompts; p++) start[p + 1] = start[p] + lens[p];
        /* One slot (prompts one after another) and two slots (the third prompt joins when one finishes). */
        for (int slots = 1; slots <= 2; slots++) {
            generator *g;
            CHECK_OK(generator_new(&m, slots, 32, &g, &err), &err);
            gen_params gp = greedy_params(N);
            gen_result res;
            CHECK_OK(generator_run(g, &gp, (int)n_prompts, start, prompts, NULL, &res, &err), &err);
            int mismatches = 0;
            for (size_t p = 0; p < n_prompts; p++) {
                EXPECT(res.start[p + 1] - res.start[p] == N && res.finish[p] == GEN_FINISH_LENGTH,
                       "%s prompt %zu: %d tokens, finish %s", CASES[c], p, res.start[p + 1] - res.start[p],
                       gen_finish_name(res.finish[p]));
                for (int k = 0; k < N; k++) mismatches += res.tokens[res.start[p] + k] != want[p * N + k];
            }
            EXPECT(mismatches == 0, "%s, %d slot(s): %d greedy tokens differ from HF generate", CASES[c], slots,
                   mismatches);
            gen_result_free(&res);
            generator_free(g);
        }
        free(start);
        free(prompts);
        free(lens);
        free(want);
        st_close(ref);
        model_free(&m);
    }
}

/* Prompts of assorted lengths, deterministic. */
static void make_prompts(int n, int vocab, int *start, int32_t *tokens) {
    start[0] = 0;
    for (int p = 0; p < n; p++) {
        int len = 1 + (p * 5) % 9;
        for (int t = 0; t < len; t++) tokens[start[p] + t] = (int32_t)((p * 131 + t * 17 + 3) % vocab);
        start[p + 1] = start[p] + len;
    }
}

static void test_logprobs_match_packed_forward_and_batch_independence(void) {
    char dir[1024];
    fixture_dir(dir, sizeof dir, "llama_scaled");
    s2d_err err;
    model m;
    CHECK_OK(model_load(&m, dir, &err), &err);
    enum { NP = 7, MAX_NEW = 10 };
    int start[NP + 1];
    int32_t tokens[NP * 9];
    make_prompts(NP, m.cfg.vocab, start, tokens);
    gen_params gp = {.sampling = {.temperature = 1.0f, .top_k = 0, .top_p = 1.0f, .seed = 7},
                     .max_new_tokens = MAX_NEW};
    uint64_t ids[NP];
    for (int p = 0; p < NP; p++) ids[p] = 1000 + (uint64_t)p;
    generator *g3;
    CHECK_OK(generator_new(&m, 3, 32, &g3, &err), &err);
    gen_result all;
    CHECK_OK(generator_run(g3, &gp, NP, start, tokens, ids, &all, &err), &err);

    /* Each prompt alone in a one-slot generator, same sequence id: identical tokens and log-probs. */
    generator *g1;
    CHECK_OK(generator_new(&m, 1, 32, &g1, &err), &err);
    int token_diffs = 0;
    double lp_diff = 0;
    for (int p = 0; p < NP; p++) {
        int one_start[2] = {0, start[p + 1] - start[p]};
        gen_result alone;
        CHECK_OK(generator_run(g1, &gp, 1, one_start, tokens + start[p], &ids[p], &alone, &err), &err);
        int n = all.start[p + 1] - all.start[p];
        if (alone.start[1] != n) token_diffs++;
        for (int k = 0; k < n && k < alone.start[1]; k++) {
            token_diffs += alone.tokens[k] != all.tokens[all.start[p] + k];
            lp_diff = fmax(lp_diff, fabs(alone.logprobs[k] - all.logprobs[all.start[p] + k]));
        }
        gen_result_free(&alone);
    }
    EXPECT(token_diffs == 0, "sampling with temperature 1: %d tokens differ between alone and batched", token_diffs);
    EXPECT(lp_diff < 1e-5, "behaviour log-probs alone vs batched differ by %g", lp_diff);

    /* Behaviour log-probs at temperature 1 (no filtering) are the model's log-probs of the sampled tokens: the
     * packed training forward over prompt + completion must give the same numbers. */
    int seq_start[NP + 1];
    int32_t *packed = xmalloc((size_t)(start[NP] + all.start[NP]) * sizeof(int32_t));
    seq_start[0] = 0;
    for (int p = 0; p < NP; p++) {
        int pl = start[p + 1] - start[p], cl = all.start[p + 1] - all.start[p];
        memcpy(packed + seq_start[p], tokens + start[p], (size_t)pl * sizeof(int32_t));
        memcpy(packed + seq_start[p] + pl, all.tokens + all.start[p], (size_t)cl * sizeof(int32_t));
        seq_start[p + 1] = seq_start[p] + pl + cl;
    }
    model_batch batch = {.n_seqs = NP, .seq_start = seq_start, .tokens = packed};
    model_ws *ws = model_ws_new(&m, seq_start[NP], false);
    float *logp = xmalloc((size_t)seq_start[NP] * sizeof(float));
    CHECK_OK(model_token_logprobs(&m, ws, &batch, logp, &err), &err);
    double worst = 0;
    for (int p = 0; p < NP; p++) {
        int pl = start[p + 1] - start[p], cl = all.start[p + 1] - all.start[p];
        for (int k = 0; k < cl; k++) /* completion token k is predicted at row pl - 1 + k */
            worst = fmax(worst, fabs(logp[seq_start[p] + pl - 1 + k] - all.logprobs[all.start[p] + k]));
    }
    EXPECT(worst < 1e-4, "generation log-probs vs packed forward: max |diff| %g", worst);
    /* Different sequence ids (or seeds) give different samples: the draws are really random. */
    uint64_t other_ids[NP];
    for (int p = 0; p < NP; p++) other_ids[p] = 5000 + (uint64_t)p;
    gen_result other;
    CHECK_OK(generator_run(g3, &gp, NP, start, tokens, other_ids, &other, &err), &err);
    int differ = 0;
    for (int i = 0; i < S2D_MIN(other.start[NP], all.start[NP]); i++) differ += other.tokens[i] != all.tokens[i];
    EXPECT(differ > all.start[NP] / 2, "other sequence ids change the samples (%d of %d differ)", differ,
           all.start[NP]);
    EXPECT(all.n_decode_steps > 0 && all.n_decode_rows > all.n_decode_steps, "decode steps ran batched rows");
    gen_result_free(&other);
    free(logp);
    free(packed);
    model_ws_free(ws);
    gen_result_free(&all);
    generator_free(g1);
    generator_free(g3);
    model_free(&m);
}

/* Shared prompts: repeated prompts (consecutive like an eval's K samples or a GRPO group, repeated later after
 * their slots turned over, and a prompt that only starts like another) copy cache rows and first-token logits
 * from a slot instead of being prefilled; tokens, behaviour log-probs and finish reasons must be bitwise those
 * of prefilling every prompt, for several slot counts, and the copies must really happen. */
static void test_shared_prompts_same_bits(void) {
    char dir[1024];
    fixture_dir(dir, sizeof dir, "qwen3_tied");
    s2d_err err;
    model m;
    CHECK_OK(model_load(&m, dir, &err), &err);
    enum { NB = 5, NP = 26, MAX_NEW = 8 };
    int bstart[NB + 1];
    int32_t btok[NB * 9];
    make_prompts(NB, m.cfg.vocab, bstart, btok);
    /* base prompt of each request: 4 x 4 consecutive, then repeats after other prompts; -1: base 2 plus a token */
    const int order[NP] = {0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 0, 0, 4, 4, 4, -1, 1, 2, 1, 3};
    int start[NP + 1];
    int32_t tokens[NP * 10];
    uint64_t ids[NP];
    start[0] = 0;
    for (int p = 0; p < NP; p++) {
        int b = order[p] < 0 ? 2 : order[p], len = bstart[b + 1] - bstart[b];
        memcpy(tokens + start[p], btok + bstart[b], sizeof(int32_t) * (size_t)len);
        if (order[p] < 0) tokens[start[p] + len++] = 5;
        start[p + 1] = start[p] + len;
        ids[p] = 300 + (uint64_t)p;
    }
    gen_params gp = {.sampling = {.temperature = 0.9f, .top_k = 0, .top_p = 0.95f, .seed = 11},
                     .max_new_tokens = MAX_NEW};
    const int slot_counts[] = {1, 3, 7, 32};
    for (int c = 0; c < 4; c++) {
        generator *g;
        CHECK_OK(generator_new(&m, slot_counts[c], 32, &g, &err), &err);
        gen_result res[2];
        for (int share = 0; share < 2; share++) {
            generator_share_prompts(g, share == 1);
            CHECK_OK(generator_run(g, &gp, NP, start, tokens, ids, &res[share], &err), &err);
        }
        const int n = res[0].start[NP];
        EXPECT(res[1].start[NP] == n && memcmp(res[0].start, res[1].start, sizeof(int) * (NP + 1)) == 0 &&
                   memcmp(res[0].tokens, res[1].tokens, sizeof(int32_t) * (size_t)n) == 0 &&
                   memcmp(res[0].logprobs, res[1].logprobs, sizeof(float) * (size_t)n) == 0 &&
                   memcmp(res[0].finish, res[1].finish, sizeof(gen_finish) * NP) == 0,
               "%d slots: shared prompts give bitwise the tokens, log-probs and finish reasons of prefilling all",
               slot_counts[c]);
        EXPECT(res[0].n_shared_prompts == 0 && res[1].n_shared_prompts >= 8,
               "%d slots: %ld prompts copied with sharing, %ld without", slot_counts[c], res[1].n_shared_prompts,
               res[0].n_shared_prompts);
        gen_result_free(&res[0]), gen_result_free(&res[1]);
        generator_free(g);
    }
    model_free(&m);
}

static void test_stop_tokens_cache_full_and_errors(void) {
    char dir[1024];
    fixture_dir(dir, sizeof dir, "qwen3_untied");
    s2d_err err;
    model m;
    CHECK_OK(model_load(&m, dir, &err), &err);
    enum { NP = 5 };
    int start[NP + 1];
    int32_t tokens[NP * 9];
    make_prompts(NP, m.cfg.vocab, start, tokens);
    generator *g;
    CHECK_OK(generator_new(&m, 2, 24, &g, &err), &err);
    gen_params gp = greedy_params(8);
    gen_result free_run;
    CHECK_OK(generator_run(g, &gp, NP, start, tokens, NULL, &free_run, &err), &err);
    /* Stop on the 4th greedy token of prompt 1: prompt 1 ends there (stop included); prompts whose greedy
     * output does not contain it are unchanged. */
    int32_t stop = free_run.tokens[free_run.start[1] + 3];
    gen_params gs = gp;
    gs.n_stop = 1;
    gs.stop_ids[0] = stop;
    gen_result stopped;
    CHECK_OK(generator_run(g, &gs, NP, start, tokens, NULL, &stopped, &err), &err);
    for (int p = 0; p < NP; p++) {
        int first = -1, n = free_run.start[p + 1] - free_run.start[p];
        for (int k = 0; k < n && first < 0; k++)
            if (free_run.tokens[free_run.start[p] + k] == stop) first = k;
        int want_len = first >= 0 ? first + 1 : n;
        int got_len = stopped.start[p + 1] - stopped.start[p];
        EXPECT(got_len == want_len, "prompt %d with stop %d: %d tokens, want %d", p, stop, got_len, want_len);
        EXPECT(stopped.finish[p] == (first >= 0 ? GEN_FINISH_STOP : GEN_FINISH_LENGTH), "prompt %d finish %s", p,
               gen_finish_name(stopped.finish[p]));
        EXPECT(memcmp(stopped.tokens + stopped.start[p], free_run.tokens + free_run.start[p],
                      (size_t)S2D_MIN(got_len, want_len) * sizeof(int32_t)) == 0,
               "prompt %d: tokens before the stop unchanged", p);
    }
    EXPECT(stopped.finish[1] == GEN_FINISH_STOP && stopped.start[2] - stopped.start[1] <= 4, "prompt 1 stopped");
    gen_result_free(&stopped);

    /* Cache full: max_len = prompt + 3 leaves room to feed 3 tokens, so 4 are generated, finish "length". */
    generator *small;
    int plen = start[2] - start[1];
    CHECK_OK(generator_new(&m, 1, plen + 3, &small, &err), &err);
    int one[2] = {0, plen};
    gen_result full;
    CHECK_OK(generator_run(small, &gp, 1, one, tokens + start[1], NULL, &full, &err), &err);
    EXPECT(full.start[1] == 4 && full.finish[0] == GEN_FINISH_LENGTH, "cache full after %d tokens (%s)",
           full.start[1], gen_finish_name(full.finish[0]));
    EXPECT(memcmp(full.tokens, free_run.tokens + free_run.start[1], 4 * sizeof(int32_t)) == 0,
           "cache-full completion is a prefix of the free run");
    gen_result_free(&full);
    gen_result_free(&free_run);

    /* Bad input: errors name the prompt; nothing is returned. */
    gen_result bad;
    int32_t oov[2] = {1, m.cfg.vocab};
    int two[2] = {0, 2};
    EXPECT(!generator_run(g, &gp, 1, two, oov, NULL, &bad, &err) && strstr(err.msg, "prompt 0") &&
               strstr(err.msg, "vocabulary"),
           "out-of-vocabulary token rejected: %s", err.msg);
    int empty[3] = {0, 2, 2};
    int32_t ok_tokens[2] = {1, 2};
    EXPECT(!generator_run(g, &gp, 2, empty, ok_tokens, NULL, &bad, &err) && strstr(err.msg, "prompt 1 is empty"),
           "empty prompt rejected: %s", err.msg);
    int32_t *long_prompt = xcalloc(30, sizeof(int32_t));
    int long_start[2] = {0, 30};
    EXPECT(!generator_run(g, &gp, 1, long_start, long_prompt, NULL, &bad, &err) && strstr(err.msg, "30 tokens"),
           "too-long prompt rejected: %s", err.msg);
    free(long_prompt);
    gen_params zero = gp;
    zero.max_new_tokens = 0;
    EXPECT(!generator_run(g, &zero, 1, two, ok_tokens, NULL, &bad, &err), "max_new_tokens 0 rejected");
    generator *toolong;
    EXPECT(!generator_new(&m, 1, m.cfg.max_pos + 1, &toolong, &err) && strstr(err.msg, "max_position"),
           "max length beyond the model rejected: %s", err.msg);
    generator_free(small);
    generator_free(g);
    model_free(&m);
}

static bool same_result(const gen_result *a, const gen_result *b) {
    return a->n == b->n && memcmp(a->start, b->start, sizeof(int) * ((size_t)a->n + 1)) == 0 &&
           memcmp(a->tokens, b->tokens, sizeof(int32_t) * (size_t)a->start[a->n]) == 0 &&
           memcmp(a->logprobs, b->logprobs, sizeof(float) * (size_t)a->start[a->n]) == 0 &&
           memcmp(a->finish, b->finish, sizeof(gen_finish) * (size_t)a->n) == 0;
}

/* bf16 weights: the fixture model rounded to bf16 generates through the bf16 copy; its twin, identical but for
 * one non-bf16 embedding entry of a token that never occurs (untied model: that row is only read if the token
 * is fed), generates through the fp32 weights. Tokens and log-probs are bitwise equal. Then the pipeline's use:
 * weights changed in place between runs of one generator give the results of a fresh generator. */
static void test_bf16_weights_same_outputs_and_refresh(void) {
    char dir[1024];
    fixture_dir(dir, sizeof dir, "llama_scaled");
    s2d_err err;
    model m, twin;
    CHECK_OK(model_load(&m, dir, &err), &err);
    CHECK_OK(model_load(&twin, dir, &err), &err);
    CHECK(!m.cfg.tie_embeddings, "llama_scaled must be untied");
    f32_round_to_bf16(m.params, m.n_params);
    memcpy(twin.params, m.params, sizeof(float) * m.n_params);
    const int V = m.cfg.vocab, H = m.cfg.hidden;
    const int32_t unused = V - 1;
    twin.w.embed[(size_t)unused * H] += 0x1p-12f * (1 + fabsf(twin.w.embed[(size_t)unused * H]));
    enum { NP = 5, MAX_NEW = 12 };
    int start[NP + 1];
    int32_t tokens[NP * 9];
    make_prompts(NP, V - 1, start, tokens); /* ids < V - 1 */
    gen_params gp = {.sampling = {.temperature = 1.0f, .top_k = 0, .top_p = 1.0f, .seed = 5}, .max_new_tokens = MAX_NEW};
    generator *g16, *g32;
    CHECK_OK(generator_new(&m, 2, 32, &g16, &err), &err);
    CHECK_OK(generator_new(&twin, 2, 32, &g32, &err), &err);
    gen_result r16, r32;
    CHECK_OK(generator_run(g16, &gp, NP, start, tokens, NULL, &r16, &err), &err);
    CHECK_OK(generator_run(g32, &gp, NP, start, tokens, NULL, &r32, &err), &err);
    bool unused_seen = false;
    for (int i = 0; i < r16.start[NP]; i++) unused_seen = unused_seen || r16.tokens[i] == unused;
    EXPECT(!unused_seen, "the twin's changed token is never generated");
    EXPECT(same_result(&r16, &r32), "bf16 copy path == fp32 path: same tokens and log-probs, bitwise");
    gen_params greedy = greedy_params(MAX_NEW);
    gen_result q16, q32;
    CHECK_OK(generator_run(g16, &greedy, NP, start, tokens, NULL, &q16, &err), &err);
    CHECK_OK(generator_run(g32, &greedy, NP, start, tokens, NULL, &q32, &err), &err);
    EXPECT(same_result(&q16, &q32), "greedy: bf16 copy path == fp32 path, bitwise");
    /* In-place update (bf16-exact: halving) between runs of the same generator == a fresh generator. */
    for (size_t i = 0; i < (size_t)m.cfg.intermediate * H; i++) m.w.layers[0].w_up[i] *= 0.5f;
    gen_result again, fresh;
    CHECK_OK(generator_run(g16, &gp, NP, start, tokens, NULL, &again, &err), &err);
    generator *gf;
    CHECK_OK(generator_new(&m, 2, 32, &gf, &err), &err);
    CHECK_OK(generator_run(gf, &gp, NP, start, tokens, NULL, &fresh, &err), &err);
    EXPECT(!same_result(&again, &r16), "the update changes the samples");
    EXPECT(same_result(&again, &fresh), "weights updated in place: the next run uses them (== fresh generator)");
    /* ... and an update off the bf16 grid (as an fp32 optimizer step makes) switches the generator to fp32. */
    m.w.layers[0].w_up[0] += 0x1p-20f;
    gen_result off, off_fresh;
    CHECK_OK(generator_run(g16, &gp, NP, start, tokens, NULL, &off, &err), &err);
    generator_free(gf);
    CHECK_OK(generator_new(&m, 2, 32, &gf, &err), &err);
    CHECK_OK(generator_run(gf, &gp, NP, start, tokens, NULL, &off_fresh, &err), &err);
    EXPECT(same_result(&off, &off_fresh), "non-bf16 update: the next run uses the new fp32 weights");
    gen_result_free(&r16), gen_result_free(&r32), gen_result_free(&q16), gen_result_free(&q32);
    gen_result_free(&again), gen_result_free(&fresh), gen_result_free(&off), gen_result_free(&off_fresh);
    generator_free(g16), generator_free(g32), generator_free(gf);
    model_free(&m), model_free(&twin);
}

int main(void) {
    RUN_TEST(test_greedy_matches_hf);
    RUN_TEST(test_logprobs_match_packed_forward_and_batch_independence);
    RUN_TEST(test_shared_prompts_same_bits);
    RUN_TEST(test_stop_tokens_cache_full_and_errors);
    RUN_TEST(test_bf16_weights_same_outputs_and_refresh);
    return TEST_SUMMARY();
}
