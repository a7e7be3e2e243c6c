/* Winograd F(4x4, 3x3) (cn_wino_forward, weights transformed beforehand as the graph caches
 * them) against the existing path (cn_conv2d_forward_fused) on the 3x3 stride-1 convolutions of
 * ResNet-18/50, at batch 1 and 16, with 1 and 2 threads, epilogue BN + ReLU. The machine is shared
 * and noisy: the two paths alternate in rounds, and the minimum and the median of each are
 * reported; GFLOP/s are 2 * MACs of the direct convolution / time.
 * Usage: bench_winograd [rounds [batch [threads [map]]]]   (0: the default: batch 1 and 16,
 * 1 and 2 threads, every map; a batch given runs that batch only)
 * Build: make build/release/bench/bench_winograd */
#define _POSIX_C_SOURCE 200809L

#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/winograd.h"
#include "ops/ops.h"

typedef struct shape {
    const char *what;
    int hw, c;
} shape;

static const shape shapes[] = {
    {"l1 3x3 64", 56, 64},
    {"l2 3x3 128", 28, 128},
    {"l3 3x3 256", 14, 256},
    {"l4 3x3 512", 7, 512},
};

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static float *alloc_f(size_t n) {
    float *p = aligned_alloc(64, (sizeof(float) * n + 63) / 64 * 64);
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    for (size_t i = 0; i < n; i++) p[i] = (float)((i * 2654435761u) % 1000) / 1000.0f - 0.3f;
    return p;
}

int main(int argc, char **argv) {
    int rounds = argc > 1 ? atoi(argv[1]) : 15;
    int only_batch = argc > 2 ? atoi(argv[2]) : 0, only_threads = argc > 3 ? atoi(argv[3]) : 0;
    int only_map = argc > 4 ? atoi(argv[4]) : 0;
    static const int batches[] = {1, 16}, threads[] = {1, 2};
    printf("%-12s %5s %3s %9s %9s %9s %9s %7s %7s %6s\n", "shape", "batch", "thr", "wino_min",
           "wino_med", "base_min", "base_med", "wGF/s", "bGF/s", "speedup");
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int bi = 0; bi < 2; bi++)
            for (int ti = 0; ti < 2; ti++) {
                const shape *sh = &shapes[s];
                int n = only_batch ? only_batch : batches[bi], T = threads[ti];
                if ((only_batch && bi) || (only_threads && T != only_threads) ||
                    (only_map && sh->hw != only_map))
                    continue;
                cn_conv_desc d = {n, sh->hw, sh->hw, sh->c, sh->c, 3, 3, 1, 1, 1, 1, 1, 0, 0};
                cn_conv_desc_init(&d);
                size_t ni = (size_t)n * sh->hw * sh->hw * sh->c, nw = (size_t)sh->c * 9 * sh->c;
                size_t ws_f = cn_conv2d_workspace(&d, T, 0);
                float *in = alloc_f(ni), *out = alloc_f(ni), *w = alloc_f(nw);
                float *ss = alloc_f(2 * (size_t)sh->c), *ws = alloc_f(ws_f);
                float *u = alloc_f(cn_wino_weight_floats(sh->c, sh->c));
                cn_wino_pack_weights(u, w, sh->c, sh->c, T);
                cn_epilogue ep = {ss, ss + sh->c, NULL, CN_ACT_RELU, NULL};
                omp_set_num_threads(T);
                double *tw = malloc(sizeof(double) * rounds), *tb = malloc(sizeof(double) * rounds);
                /* repetitions per timing so that each one lasts a few ms */
                double macs = (double)n * sh->hw * sh->hw * 9.0 * sh->c * sh->c;
                int reps = (int)(2e8 / macs) + 1;
                for (int r = -1; r < rounds; r++) {
                    double t0 = now();
                    for (int k = 0; k < reps; k++) cn_wino_forward(out, in, u, &ep, &d, ws, T);
                    double t1 = now();
                    for (int k = 0; k < reps; k++)
                        cn_conv2d_forward_fused(out, in, w, &ep, &d, ws, T);
                    double t2 = now();
                    if (r >= 0) {
                        tw[r] = (t1 - t0) / reps;
                        tb[r] = (t2 - t1) / reps;
                    }
                }
                qsort(tw, rounds, sizeof *tw, cmp_double);
                qsort(tb, rounds, sizeof *tb, cmp_double);
                printf("%-12s %5d %3d %9.3f %9.3f %9.3f %9.3f %7.0f %7.0f %6.2f\n", sh->what, n,
                       T, 1e3 * tw[0], 1e3 * tw[rounds / 2], 1e3 * tb[0], 1e3 * tb[rounds / 2],
                       2 * macs / tw[0] * 1e-9, 2 * macs / tb[0] * 1e-9, tb[0] / tw[0]);
                fflush(stdout);
                free(in), free(out), free(w), free(ss), free(ws), free(u), free(tw), free(tb);
            }
    return 0;
}
