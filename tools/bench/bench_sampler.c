/* bench_sampler: per-token cost of the CPU sampler (ops/sampler.c) at a real vocabulary, one thread.
 * usage: bench_sampler VOCAB ROWS
 * For each setting prints ms per sampled token (best of 3 passes over ROWS rows of random logits): greedy,
 * temperature, top-k 50, top-p 0.95 and top-p 0.95 with top-k 50, on "flat" logits (N(0, 1): a wide nucleus,
 * the worst case) and "peaked" ones (N(0, 4^2)). Also the cost of one full sort of the vocabulary by
 * (probability desc, id asc), which is what a sort-based top-p pays per token. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/common.h"
#include "core/rng.h"
#include "core/timer.h"
#include "ops/sampler.h"

typedef struct {
    float p;
    int32_t id;
} pair;

static int pair_cmp(const void *a, const void *b) {
    const pair *x = a, *y = b;
    if (x->p != y->p) return x->p > y->p ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s VOCAB ROWS\n", argv[0]);
        return 2;
    }
    const int V = atoi(argv[1]), R = atoi(argv[2]);
    CHECK(V > 1 && R > 0, "bad sizes");
    float *logits = xmalloc((size_t)V * R * sizeof(float));
    sampler s;
    sampler_init(&s, V);
    pair *all = xmalloc((size_t)V * sizeof(pair));
    const struct { const char *name; sampler_params sp; } settings[] = {
        {"greedy", {0, 0, 1, 1}},          {"temperature_0.7", {0.7f, 0, 1, 1}}, {"top_k_50", {1, 50, 1, 1}},
        {"top_p_0.95", {1, 0, 0.95f, 1}}, {"top_p_0.95_k_50", {1, 50, 0.95f, 1}},
    };
    const struct { const char *name; double std; } shapes[] = {{"flat", 1.0}, {"peaked", 4.0}};
    for (size_t sh = 0; sh < 2; sh++) {
        rng_stream r;
        rng_stream_init(&r, 7, sh);
        for (size_t i = 0; i < (size_t)V * R; i++) logits[i] = (float)(shapes[sh].std * rng_next_normal(&r));
        for (size_t k = 0; k < sizeof settings / sizeof *settings; k++) {
            double best = 1e30;
            volatile int32_t sink = 0;
            for (int pass = 0; pass < 3; pass++) {
                double t0 = time_now();
                for (int row = 0; row < R; row++) {
                    float lp;
                    sink += sampler_sample(&s, &settings[k].sp, logits + (size_t)row * V, (uint64_t)row, 10, &lp);
                }
                double dt = (time_now() - t0) / R;
                best = dt < best ? dt : best;
            }
            (void)sink;
            printf("sampler_ms %s %s %.4f\n", shapes[sh].name, settings[k].name, best * 1e3);
        }
        double best = 1e30;
        for (int pass = 0; pass < 3; pass++) {
            double t0 = time_now();
            for (int row = 0; row < R; row++) {
                const float *x = logits + (size_t)row * V;
                for (int i = 0; i < V; i++) all[i] = (pair){x[i], i};
                qsort(all, (size_t)V, sizeof *all, pair_cmp);
            }
            double dt = (time_now() - t0) / R;
            best = dt < best ? dt : best;
        }
        printf("sampler_ms %s full_sort_of_the_vocabulary %.4f\n", shapes[sh].name, best * 1e3);
    }
    sampler_free(&s);
    free(all), free(logits);
    return 0;
}
