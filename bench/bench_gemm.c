/* GFLOP/s of cn_sgemm on the layer shapes that dominate convnet, at 1 and 2 threads, as a
 * fraction of the FMA peak measured at the start of the run (on a shared or virtual machine the
 * peak moves with the host's load and clock, so a fixed figure misleads).
 * Usage: bench_gemm [seconds-per-shape [name-filter]]
 * (CN_CPU=generic|avx2 selects a narrower kernel path; CN_GEMM_KERNEL=i forces kernel i of
 * cn_sgemm_kernel_name). The filter keeps the shapes whose name contains it, e.g. "effnet b1".
 *
 * Convolutions call C[M x N] = A[M x K] * B^T: M output pixels, N output channels, K input
 * channels (1x1) or KW*C (the implicit 3x3 GEMM of conv2d.c, whose A rows overlap: lda = C,
 * and whose B is one kernel row of the OHWI weights: ldb = 9*C). */
#define _POSIX_C_SOURCE 200809L

#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernels/gemm.h"

typedef struct shape {
    const char *what;
    int M, N, K, ta, tb;
    float beta;
    int lda, ldb; /* 0: packed (the usual leading dimension) */
} shape;

/* EfficientNet-B0 at 224x224: the 1x1 convolutions (expand and project) and the SE convolutions
 * (reduce: N = squeezed channels; expand: K = squeezed channels) at batch b. */
#define EFFNET(b, tag)                                                            \
    {"effnet " tag " s1p", 12544 * b, 16, 32, 0, 1, 0.0f, 0, 0},                  \
    {"effnet " tag " s2e", 12544 * b, 96, 16, 0, 1, 0.0f, 0, 0},                  \
    {"effnet " tag " s2p", 3136 * b, 24, 96, 0, 1, 0.0f, 0, 0},                   \
    {"effnet " tag " s3e", 3136 * b, 144, 24, 0, 1, 0.0f, 0, 0},                  \
    {"effnet " tag " s3p", 784 * b, 40, 144, 0, 1, 0.0f, 0, 0},                   \
    {"effnet " tag " s4e", 784 * b, 240, 40, 0, 1, 0.0f, 0, 0},                   \
    {"effnet " tag " s4p", 196 * b, 80, 240, 0, 1, 0.0f, 0, 0},                   \
    {"effnet " tag " s5e", 196 * b, 480, 80, 0, 1, 0.0f, 0, 0},                   \
    {"effnet " tag " s5p", 196 * b, 112, 480, 0, 1, 0.0f, 0, 0},                  \
    {"effnet " tag " s6p", 49 * b, 192, 672, 0, 1, 0.0f, 0, 0},                   \
    {"effnet " tag " s6e", 49 * b, 1152, 192, 0, 1, 0.0f, 0, 0},                  \
    {"effnet " tag " s7p", 49 * b, 320, 1152, 0, 1, 0.0f, 0, 0},                  \
    {"effnet " tag " head", 49 * b, 1280, 320, 0, 1, 0.0f, 0, 0},                 \
    {"effnet " tag " se r8", b, 8, 32, 0, 1, 0.0f, 0, 0},                         \
    {"effnet " tag " se r4", b, 4, 96, 0, 1, 0.0f, 0, 0},                         \
    {"effnet " tag " se r10", b, 10, 240, 0, 1, 0.0f, 0, 0},                      \
    {"effnet " tag " se r20", b, 20, 480, 0, 1, 0.0f, 0, 0},                      \
    {"effnet " tag " se r28", b, 28, 672, 0, 1, 0.0f, 0, 0},                      \
    {"effnet " tag " se r48", b, 48, 1152, 0, 1, 0.0f, 0, 0},                     \
    {"effnet " tag " se e8", b, 32, 8, 0, 1, 0.0f, 0, 0},                         \
    {"effnet " tag " se e4", b, 96, 4, 0, 1, 0.0f, 0, 0},                         \
    {"effnet " tag " se e10", b, 240, 10, 0, 1, 0.0f, 0, 0},                      \
    {"effnet " tag " se e20", b, 480, 20, 0, 1, 0.0f, 0, 0},                      \
    {"effnet " tag " se e28", b, 672, 28, 0, 1, 0.0f, 0, 0},                      \
    {"effnet " tag " se e48", b, 1152, 48, 0, 1, 0.0f, 0, 0}

/* ResNet-50's 1x1 convolutions at b images per GEMM call */
#define R50_1X1(b, tag)                                                                   \
    {"r50 1x1 a" tag, 3136 * b, 64, 256, 0, 1, 0.0f, 0, 0},                              \
    {"r50 1x1 b" tag, 3136 * b, 256, 64, 0, 1, 0.0f, 0, 0},                              \
    {"r50 1x1 c" tag, 784 * b, 128, 512, 0, 1, 0.0f, 0, 0},                              \
    {"r50 1x1 c'" tag, 784 * b, 512, 128, 0, 1, 0.0f, 0, 0},                             \
    {"r50 1x1 d" tag, 196 * b, 1024, 256, 0, 1, 0.0f, 0, 0},                             \
    {"r50 1x1 d'" tag, 196 * b, 256, 1024, 0, 1, 0.0f, 0, 0},                            \
    {"r50 1x1 e" tag, 49 * b, 2048, 512, 0, 1, 0.0f, 0, 0},                              \
    {"r50 1x1 f" tag, 49 * b, 512, 2048, 0, 1, 0.0f, 0, 0}

static const shape shapes[] = {
    EFFNET(1, "b1"),
    EFFNET(16, "b16"),
    R50_1X1(1, ""),
    /* batch 16 as the convolution runs it with 2 threads: one image pair per thread and call */
    R50_1X1(2, " b16"),
    /* implicit 3x3, stride 1: M = (OH-1)*(W+2) + OW rows, K = 3*C, one call per kernel row */
    {"r50 3x3 56", 3246, 64, 192, 0, 1, 1.0f, 64, 576},
    {"r50 3x3 28", 838, 128, 384, 0, 1, 1.0f, 128, 1152},
    {"r50 3x3 14", 222, 256, 768, 0, 1, 1.0f, 256, 2304},
    {"r50 3x3 7", 61, 512, 1536, 0, 1, 1.0f, 512, 4608},
    {"cifar fwd  16", 100352, 16, 144, 0, 1, 0.0f, 0, 0},
    {"cifar fwd  32", 25088, 32, 288, 0, 1, 0.0f, 0, 0},
    {"cifar fwd  64", 6272, 64, 576, 0, 1, 0.0f, 0, 0},
    {"cifar dW   16", 16, 144, 100352, 1, 0, 1.0f, 0, 0},
    {"cifar dW   32", 32, 288, 25088, 1, 0, 1.0f, 0, 0},
    {"cifar dW   64", 64, 576, 6272, 1, 0, 1.0f, 0, 0},
    {"cifar dX   16", 100352, 144, 16, 0, 0, 0.0f, 0, 0},
    {"cifar dX   32", 25088, 288, 32, 0, 0, 0.0f, 0, 0},
    {"cifar dX   64", 6272, 576, 64, 0, 0, 0.0f, 0, 0},
};

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* FMA throughput of one thread: 24 independent accumulator chains, no loads */
__attribute__((target("avx512f,fma"))) static double fma_peak_avx512(double seconds) {
    __m512 acc[24];
    for (int i = 0; i < 24; i++) acc[i] = _mm512_set1_ps((float)i * 1e-3f);
    __m512 b = _mm512_set1_ps(0.999f);
    const __m512 c = _mm512_set1_ps(1e-6f);
    double best = 0.0, spent = 0.0;
    while (spent < seconds) {
        const long n = 1000000;
        const double t0 = now();
        for (long k = 0; k < n; k++) {
#pragma GCC unroll 24
            for (int i = 0; i < 24; i++) acc[i] = _mm512_fmadd_ps(acc[i], b, c);
            __asm__ volatile("" : "+v"(b));
        }
        const double dt = now() - t0, gf = (double)n * 24 * 32 / dt * 1e-9;
        if (gf > best) best = gf;
        spent += dt;
    }
    float sink = 0.0f;
    for (int i = 0; i < 24; i++) sink += _mm512_reduce_add_ps(acc[i]);
    __asm__ volatile("" : : "x"(sink));
    return best;
}

/* the same with 12 ymm chains (AVX2 has 16 registers) */
__attribute__((target("avx2,fma"))) static double fma_peak_avx2(double seconds) {
    __m256 acc[12];
    for (int i = 0; i < 12; i++) acc[i] = _mm256_set1_ps((float)i * 1e-3f);
    __m256 b = _mm256_set1_ps(0.999f);
    const __m256 c = _mm256_set1_ps(1e-6f);
    double best = 0.0, spent = 0.0;
    while (spent < seconds) {
        const long n = 1000000;
        const double t0 = now();
        for (long k = 0; k < n; k++) {
#pragma GCC unroll 12
            for (int i = 0; i < 12; i++) acc[i] = _mm256_fmadd_ps(acc[i], b, c);
            __asm__ volatile("" : "+x"(b));
        }
        const double dt = now() - t0, gf = (double)n * 12 * 16 / dt * 1e-9;
        if (gf > best) best = gf;
        spent += dt;
    }
    float sink = 0.0f;
    for (int i = 0; i < 12; i++) {
        float v[8];
        _mm256_storeu_ps(v, acc[i]);
        for (int l = 0; l < 8; l++) sink += v[l];
    }
    __asm__ volatile("" : : "x"(sink));
    return best;
}

/* the machine's FP32 FMA peak in GFLOP/s with t threads on the GEMM's path (0 for the generic
 * path) */
static double fma_peak(int t) {
    const int avx512 = strcmp(cn_sgemm_path_name(), "avx512") == 0;
    if (!avx512 && strcmp(cn_sgemm_path_name(), "avx2") != 0) return 0.0;
    double sum = 0.0;
#pragma omp parallel num_threads(t) reduction(+ : sum)
    sum += avx512 ? fma_peak_avx512(0.1) : fma_peak_avx2(0.1);
    return sum;
}

int main(int argc, char **argv) {
    const double budget = argc > 1 ? atof(argv[1]) : 0.3;
    const char *filter = argc > 2 ? argv[2] : "";
    double peak[3] = {0.0, fma_peak(1), fma_peak(2)};
    if (peak[1] <= 0.0) peak[1] = 283.0, peak[2] = 535.0; /* the reference machine's */
    const char *force = getenv("CN_GEMM_KERNEL");
    if (force && *force) cn_sgemm_force_kernel(atoi(force));
    printf("path %s", cn_sgemm_path_name());
    if (force && *force) printf(", kernel %s", cn_sgemm_kernel_name(atoi(force)));
    printf("; FMA peak %.0f GFLOP/s on 1 thread, %.0f on 2\n", peak[1], peak[2]);
    printf("%-18s %6s %5s %6s %2s%2s %9s %6s %9s %6s\n", "shape", "M", "N", "K", "ta", "tb",
           "GF/s 1T", "%peak", "GF/s 2T", "%peak");
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const shape *sh = &shapes[s];
        if (!strstr(sh->what, filter)) continue;
        const int lda = sh->lda ? sh->lda : sh->ta ? sh->M : sh->K;
        const int ldb = sh->ldb ? sh->ldb : sh->tb ? sh->K : sh->N;
        /* rows of A (ta == 0) may overlap (lda < K): size A by its last element */
        const size_t asz = sh->ta ? (size_t)sh->K * lda : (size_t)(sh->M - 1) * lda + sh->K;
        const size_t bsz = sh->tb ? (size_t)sh->N * ldb : (size_t)sh->K * ldb;
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
        printf("%-18s %6d %5d %6d %2d%2d", sh->what, sh->M, sh->N, sh->K, sh->ta, sh->tb);
        for (int t = 1; t <= 2; t++) {
            omp_set_num_threads(t);
            cn_sgemm(sh->ta, sh->tb, sh->M, sh->N, sh->K, 1.0f, A, lda, B, ldb, sh->beta, C,
                     sh->N);
            /* tiny shapes take microseconds: time batches of calls so the clock does not
             * dominate */
            int reps = 1;
            double best = 1e30, spent = 0.0;
            while (spent < budget) {
                const double t0 = now();
                for (int r = 0; r < reps; r++)
                    cn_sgemm(sh->ta, sh->tb, sh->M, sh->N, sh->K, 1.0f, A, lda, B, ldb,
                             sh->beta, C, sh->N);
                const double dt = now() - t0;
                if (dt / reps < best) best = dt / reps;
                spent += dt;
                if (dt < 1e-4 && reps < (1 << 16)) reps *= 2;
            }
            const double gf = flops / best * 1e-9;
            printf(" %9.2f %5.1f%%", gf, 100.0 * gf / peak[t]);
        }
        printf("\n");
        fflush(stdout);
        free(A), free(B), free(C);
    }
    return 0;
}
