/* AVX2+FMA SiLU, sigmoid and SiLU gradient over arrays (see act.h; the 8-lane arithmetic is in
 * act_avx2.h). 8 lanes per step, the tail under a mask (masked-off lanes are neither read nor
 * written). */
#include <stddef.h>

#include "kernels/act.h"
#include "kernels/act_avx2.h"

/* the first left (< 8) lanes */
CN_INLINE __m256i tail8(size_t left) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)left), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* y[i] = f(x[i]) over n floats (f inlined: a constant argument of an always-inline function) */
CN_INLINE void map8(float *y, const float *x, size_t n, __m256 (*f)(__m256)) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, f(_mm256_loadu_ps(x + i)));
    if (i < n) {
        const __m256i m = tail8(n - i);
        _mm256_maskstore_ps(y + i, m, f(_mm256_maskload_ps(x + i, m)));
    }
}

void cn_silu_n__avx2(float *y, const float *x, size_t n) { map8(y, x, n, silu8); }

void cn_sigmoid_n__avx2(float *y, const float *x, size_t n) { map8(y, x, n, sigmoid8); }

void cn_silu_grad_acc_n__avx2(float *dx, const float *dy, const float *x, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dx + i, _mm256_fmadd_ps(_mm256_loadu_ps(dy + i),
                                                 silu_grad8(_mm256_loadu_ps(x + i)),
                                                 _mm256_loadu_ps(dx + i)));
    if (i < n) {
        const __m256i m = tail8(n - i);
        const __m256 g = silu_grad8(_mm256_maskload_ps(x + i, m));
        _mm256_maskstore_ps(dx + i, m, _mm256_fmadd_ps(_mm256_maskload_ps(dy + i, m), g,
                                                        _mm256_maskload_ps(dx + i, m)));
    }
}

void cn_silu_grad_mul_n__avx2(float *out, const float *dy, const float *x, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_loadu_ps(dy + i),
                                                silu_grad8(_mm256_loadu_ps(x + i))));
    if (i < n) {
        const __m256i m = tail8(n - i);
        _mm256_maskstore_ps(out + i, m, _mm256_mul_ps(_mm256_maskload_ps(dy + i, m),
                                                      silu_grad8(_mm256_maskload_ps(x + i, m))));
    }
}
