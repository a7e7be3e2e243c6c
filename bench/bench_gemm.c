/* GFLOP/s of cn_sgemm on the layer shapes that dominate convnet, at 1 and 2 threads, as a
 * fraction of the machine's FMA peak. Usage: bench_gemm [seconds-per-shape]
 * (CN_CPU=generic|avx2 selects a narrower kernel path). */
#define _POSIX_C_SOURCE 200809L

#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "kernels/gemm.h"

typedef struct shape {
    const char *what;
    int M, N, K, ta, tb;
    float beta;
} shape;

static const shape shapes[] = {
    {"cifar fwd  16", 100352, 16, 144, 0, 1, 0.0f},
    {"cifar fwd  32", 25088, 32, 288, 0, 1, 0.0f},
    {"cifar fwd  64", 6272, 64, 576, 0, 1, 0.0f},
    {"cifar dW   16", 16, 144, 100352, 1, 0, 1.0f},
    {"cifar dW   32", 32, 288, 25088, 1, 0, 1.0f},
    {"cifar dW   64", 64, 576, 6272, 1, 0, 1.0f},
    {"cifar dX   16", 100352, 144, 16, 0, 0, 0.0f},
    {"cifar dX   32", 25088, 288, 32, 0, 0, 0.0f},
    {"cifar dX   64", 6272, 576, 64, 0, 0, 0.0f},
    {"r50 1x1 a", 3136, 64, 256, 0, 1, 0.0f},
    {"r50 1x1 b", 3136, 256, 64, 0, 1, 0.0f},
    {"r50 1x1 c", 784, 128, 512, 0, 1, 0.0f},
    {"r50 1x1 d", 196, 1024, 256, 0, 1, 0.0f},
    {"r50 1x1 e", 49, 2048, 512, 0, 1, 0.0f},
    {"r50 1x1 f", 49, 512, 2048, 0, 1, 0.0f},
    {"r50 3x3", 784, 128, 1152, 0, 1, 0.0f},
};

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(int argc, char **argv) {
    const double budget = argc > 1 ? atof(argv[1]) : 0.3;
    const double peak[3] = {0.0, 283.0, 535.0};
    printf("path %s\n", cn_sgemm_path_name());
    printf("%-14s %6s %5s %6s %2s%2s %9s %6s %9s %6s\n", "shape", "M", "N", "K", "ta", "tb",
           "GF/s 1T", "%peak", "GF/s 2T", "%peak");
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const shape *sh = &shapes[s];
        const int lda = sh->ta ? sh->M : sh->K, ldb = sh->tb ? sh->K : sh->N;
        const size_t asz = (size_t)sh->M * sh->K, bsz = (size_t)sh->K * sh->N;
        const size_t csz = (size_t)sh->M * sh->N;
        float *A = malloc(asz * sizeof *A), *B = malloc(bsz * sizeof *B);
        float *C = malloc(csz * sizeof *C);
        if (!A || !B || !C) {
            fprintf(stderr, "out of memory\n");
            return 1;
        }
        for (size_t i = 0; i < asz; i++) A[i] = (float)(i % 17) * 0.01f;
        for (size_t i = 0; i < bsz; i++) B[i] = (float)(i % 13) * 0.01f;
        for (size_t i = 0; i < csz; i++) C[i] = 0.0f;
        const double flops = 2.0 * sh->M * sh->N * sh->K;
        printf("%-14s %6d %5d %6d %2d%2d", sh->what, sh->M, sh->N, sh->K, sh->ta, sh->tb);
        for (int t = 1; t <= 2; t++) {
            omp_set_num_threads(t);
            cn_sgemm(sh->ta, sh->tb, sh->M, sh->N, sh->K, 1.0f, A, lda, B, ldb, sh->beta, C,
                     sh->N);
            double best = 1e30, spent = 0.0;
            while (spent < budget) {
                const double t0 = now();
                cn_sgemm(sh->ta, sh->tb, sh->M, sh->N, sh->K, 1.0f, A, lda, B, ldb, sh->beta, C,
                         sh->N);
                const double dt = now() - t0;
                if (dt < best) best = dt;
                spent += dt;
            }
            const double gf = flops / best * 1e-9;
            printf(" %9.1f %5.1f%%", gf, 100.0 * gf / peak[t]);
        }
        printf("\n");
        free(A), free(B), free(C);
    }
    return 0;
}
