/* bench_train: s2d training throughput, forward + backward of the mean next-token NLL over a packed batch
 * (the same work as PyTorch's loss.backward() in bench_torch.py), on a preset's shapes with random weights.
 * usage: bench_train PRESET SEQS SEQ_LEN STEPS
 * Prints tokens/s (best step) and the achieved model GEMM GFLOP/s (linears, LM head and attention matmuls; fwd+bwd = 3x
 * the forward's FLOPs). */
#include <stdio.h>
#include <stdlib.h>

#include "core/common.h"
#include "core/timer.h"
#include "model/model.h"

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s PRESET SEQS SEQ_LEN STEPS\n", argv[0]);
        return 2;
    }
    const char *preset = argv[1];
    const int seqs = atoi(argv[2]), len = atoi(argv[3]), steps = atoi(argv[4]);
    CHECK(seqs > 0 && len > 1 && steps > 0, "bad sizes");
    s2d_err err;
    model_config cfg;
    CHECK_OK(model_config_preset(preset, &cfg, &err), &err);
    model m;
    model_create(&m, &cfg);
    model_init_random(&m, 1);
    model_alloc_grads(&m);
    const int T = seqs * len;
    int32_t *tokens = xmalloc((size_t)T * sizeof(int32_t));
    int *seq_start = xmalloc((size_t)(seqs + 1) * sizeof(int));
    for (int t = 0; t < T; t++) tokens[t] = (int32_t)(((uint64_t)t * 2654435761u) % (uint64_t)cfg.vocab);
    for (int s = 0; s <= seqs; s++) seq_start[s] = s * len;
    model_batch batch = {.n_seqs = seqs, .seq_start = seq_start, .tokens = tokens};
    model_ws *ws = model_ws_new(&m, T, true);
    float *logp = xmalloc((size_t)T * sizeof(float)), *dlogp = xmalloc((size_t)T * sizeof(float));
    for (int t = 0; t < T; t++) dlogp[t] = (t + 1) % len == 0 ? 0.0f : -1.0f / (float)(T - seqs);
    double best = 1e30, total = 0, loss = 0;
    for (int step = 0; step <= steps; step++) { /* step 0 warms up */
        double t0 = time_now();
        CHECK_OK(model_forward(&m, ws, &batch, &err), &err);
        model_token_logprobs_from_ws(&m, ws, logp);
        model_zero_grads(&m);
        model_backward_logprobs(&m, ws, dlogp);
        double dt = time_now() - t0;
        if (step > 0) {
            total += dt;
            if (dt < best) best = dt;
        }
        loss = 0;
        for (int t = 0; t < T; t++) loss -= logp[t];
        loss /= (T - seqs);
    }
    /* Forward matmul FLOPs per token: projections, MLP, LM head, and attention (QK^T and PV over the causal
     * prefix, mean context (len + 1) / 2). */
    const double H = cfg.hidden, qd = (double)cfg.n_heads * cfg.head_dim, kvd = (double)cfg.n_kv_heads * cfg.head_dim;
    const double linear = H * qd + 2 * H * kvd + qd * H + 3 * H * cfg.intermediate;
    const double attn = 2.0 * qd * (len + 1) / 2.0;
    const double fwd_per_token = 2.0 * (cfg.n_layers * (linear + attn) + H * cfg.vocab);
    const double mean = total / steps;
    printf("train %s tokens %d (%d x %d) steps %d: mean %.3f s/step, best %.3f s, %.1f tokens/s, %.1f GFLOP/s "
           "(loss %.4f)\n",
           preset, T, seqs, len, steps, mean, best, T / mean, 3.0 * fwd_per_token * T / mean * 1e-9, loss);
    /* The machine-readable numbers use the best step: on a shared machine the mean mostly measures the others. */
    printf("s2d_train_tokens_per_s %.2f\ns2d_train_gflops %.2f\n", T / best, 3.0 * fwd_per_token * T / best * 1e-9);
    free(logp);
    free(dlogp);
    free(tokens);
    free(seq_start);
    model_ws_free(ws);
    model_free(&m);
    return 0;
}
