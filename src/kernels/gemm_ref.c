/* Reference SGEMM (naive, for tests and as the fallback when packing buffers cannot be
 * allocated) and the portable micro-kernel used when the CPU has no AVX2. */
#include <stddef.h>

#include "kernels/gemm.h"

#define UKERNEL_ARGS                                                                          \
    size_t kc, const float *restrict a, size_t as, const float *restrict b, size_t bs,         \
        float *restrict c, size_t ldc, size_t mr, size_t nr, float alpha, float beta

void f32_gemm_ukernel_4x8__scalar(UKERNEL_ARGS);

void cn_sgemm_ref(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                  const float *B, int ldb, float beta, float *C, int ldc) {
    /* Double accumulation keeps the reference well below the tolerance the tests allow. */
    for (int i = 0; i < M; i++) {
        for (int j = 0; j < N; j++) {
            double s = 0.0;
            for (int k = 0; k < K; k++) {
                const float x = ta ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k];
                const float y = tb ? B[(size_t)j * ldb + k] : B[(size_t)k * ldb + j];
                s += (double)x * y;
            }
            float *cij = &C[(size_t)i * ldc + j];
            const float r = alpha * (float)s;
            *cij = beta == 0.0f ? r : r + beta * *cij;
        }
    }
}

enum { MR = 4, NR = 8 };

/* Same contract as the AVX-512 "_kmajor" kernels (see gemm_avx512.c). Plain C with constant
 * trip counts, so the compiler keeps acc in SSE registers on x86-64. */
void f32_gemm_ukernel_4x8__scalar(UKERNEL_ARGS) {
    float acc[MR][NR] = {{0}};
    for (size_t k = 0; k < kc; k++) {
        for (int i = 0; i < MR; i++) {
            const float ai = a[i];
            for (int j = 0; j < NR; j++) acc[i][j] += ai * b[j];
        }
        a += as;
        b += bs;
    }
    for (size_t i = 0; i < mr; i++) {
        for (size_t j = 0; j < nr; j++) {
            const float r = acc[i][j] * alpha;
            c[j] = beta == 0.0f ? r : r + beta * c[j];
        }
        c += ldc;
    }
}
