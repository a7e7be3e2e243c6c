/* AVX2+FMA SGEMM micro-kernel, 6 rows by 16 columns of C (12 ymm accumulators).
 * Same contract as the AVX-512 "_kmajor" kernels (see gemm_avx512.c). */
#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>

#define UKERNEL_ARGS                                                                          \
    size_t kc, const float *restrict a, size_t as, const float *restrict b, size_t bs,         \
        float *restrict c, size_t ldc, size_t mr, size_t nr, float alpha, float beta

void f32_gemm_ukernel_6x16__avx2(UKERNEL_ARGS);

enum { MR = 6, NV = 2 };

static __m256i lane_mask(size_t cnt) {
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(cnt > 8 ? 8 : cnt)), idx);
}

void f32_gemm_ukernel_6x16__avx2(UKERNEL_ARGS) {
    __m256 acc[MR][NV];
#pragma GCC unroll 6
    for (int i = 0; i < MR; i++)
#pragma GCC unroll 2
        for (int v = 0; v < NV; v++) acc[i][v] = _mm256_setzero_ps();

    for (size_t k = 0; k < kc; k++) {
        const __m256 b0 = _mm256_loadu_ps(b);
        const __m256 b1 = _mm256_loadu_ps(b + 8);
#pragma GCC unroll 6
        for (int i = 0; i < MR; i++) {
            const __m256 ai = _mm256_broadcast_ss(a + i);
            acc[i][0] = _mm256_fmadd_ps(ai, b0, acc[i][0]);
            acc[i][1] = _mm256_fmadd_ps(ai, b1, acc[i][1]);
        }
        a += as;
        b += bs;
    }

    const __m256 va = _mm256_set1_ps(alpha);
    const __m256 vb = _mm256_set1_ps(beta);
    const __m256i m0 = lane_mask(nr);
    const __m256i m1 = lane_mask(nr > 8 ? nr - 8 : 0);
    const int full = nr == 16;
    /* Full and edge tiles do identical arithmetic, so results do not depend on tiling. */
#pragma GCC unroll 6
    for (int i = 0; i < MR; i++) {
        if ((size_t)i >= mr) break;
        __m256 r0 = _mm256_mul_ps(acc[i][0], va);
        __m256 r1 = _mm256_mul_ps(acc[i][1], va);
        if (beta != 0.0f) {
            const __m256 o0 = full ? _mm256_loadu_ps(c) : _mm256_maskload_ps(c, m0);
            const __m256 o1 = full ? _mm256_loadu_ps(c + 8) : _mm256_maskload_ps(c + 8, m1);
            r0 = _mm256_fmadd_ps(acc[i][0], va, _mm256_mul_ps(o0, vb));
            r1 = _mm256_fmadd_ps(acc[i][1], va, _mm256_mul_ps(o1, vb));
        }
        if (full) {
            _mm256_storeu_ps(c, r0);
            _mm256_storeu_ps(c + 8, r1);
        } else {
            _mm256_maskstore_ps(c, m0, r0);
            _mm256_maskstore_ps(c + 8, m1, r1);
        }
        c += ldc;
    }
}
