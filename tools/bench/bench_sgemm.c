/* bench_sgemm: the machine's measured single-precision GEMM peak: times cblas_sgemm (OpenBLAS, OpenMP
 * threads from OMP_NUM_THREADS) on large squares and prints the best GFLOP/s.
 * usage: bench_sgemm [N ...]      (default 1024 2048 3072) */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/common.h"
#include "core/timer.h"

int main(int argc, char **argv) {
    int sizes[8] = {1024, 2048, 3072}, n_sizes = 3;
    if (argc > 1) {
        n_sizes = 0;
        for (int i = 1; i < argc && n_sizes < 8; i++) sizes[n_sizes++] = atoi(argv[i]);
    }
    double best = 0;
    for (int s = 0; s < n_sizes; s++) {
        const int n = sizes[s];
        CHECK(n > 0, "bad size %d", n);
        float *a = xmalloc((size_t)n * n * sizeof(float)), *b = xmalloc((size_t)n * n * sizeof(float));
        float *c = xmalloc((size_t)n * n * sizeof(float));
        for (size_t i = 0; i < (size_t)n * n; i++) {
            a[i] = (float)((i * 7919) % 1000) * 1e-3f - 0.5f;
            b[i] = (float)((i * 104729) % 1000) * 1e-3f - 0.5f;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n); /* warm */
        double flops = 2.0 * n * (double)n * n, best_s = 1e30, total = 0;
        int reps = 0;
        while (reps < 3 || (total < 1.0 && reps < 50)) {
            double t0 = time_now();
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
            double dt = time_now() - t0;
            total += dt;
            if (dt < best_s) best_s = dt;
            reps++;
        }
        double gflops = flops / best_s * 1e-9;
        printf("sgemm %5d x %5d x %5d: %8.1f GFLOP/s (best of %d)\n", n, n, n, gflops, reps);
        if (gflops > best) best = gflops;
        free(a);
        free(b);
        free(c);
    }
    printf("sgemm_peak_gflops %.1f\n", best);
    return 0;
}
