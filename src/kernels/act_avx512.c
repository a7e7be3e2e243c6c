/* AVX-512 SiLU, sigmoid and SiLU gradient over arrays (see act.h; the 16-lane arithmetic is in
 * act_avx512.h). 16 lanes per step, the tail under a mask. */
#include <stddef.h>

#include "kernels/act.h"
#include "kernels/act_avx512.h"

CN_INLINE __mmask16 tail(size_t left) { return (__mmask16)((1u << left) - 1); }

/* y[i] = f(x[i]) over n floats (f inlined: a constant argument of an always-inline function) */
CN_INLINE void map16(float *y, const float *x, size_t n, __m512 (*f)(__m512)) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, f(_mm512_loadu_ps(x + i)));
    if (i < n) {
        const __mmask16 m = tail(n - i);
        _mm512_mask_storeu_ps(y + i, m, f(_mm512_maskz_loadu_ps(m, x + i)));
    }
}

void cn_silu_n__avx512(float *y, const float *x, size_t n) { map16(y, x, n, silu16); }

void cn_sigmoid_n__avx512(float *y, const float *x, size_t n) { map16(y, x, n, sigmoid16); }

void cn_silu_grad_acc_n__avx512(float *dx, const float *dy, const float *x, size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(dx + i, _mm512_fmadd_ps(_mm512_loadu_ps(dy + i),
                                                 silu_grad16(_mm512_loadu_ps(x + i)),
                                                 _mm512_loadu_ps(dx + i)));
    if (i < n) {
        const __mmask16 m = tail(n - i);
        const __m512 g = silu_grad16(_mm512_maskz_loadu_ps(m, x + i));
        _mm512_mask_storeu_ps(dx + i, m, _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, dy + i), g,
                                                          _mm512_maskz_loadu_ps(m, dx + i)));
    }
}

void cn_silu_grad_mul_n__avx512(float *out, const float *dy, const float *x, size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(out + i, _mm512_mul_ps(_mm512_loadu_ps(dy + i),
                                                silu_grad16(_mm512_loadu_ps(x + i))));
    if (i < n) {
        const __mmask16 m = tail(n - i);
        _mm512_mask_storeu_ps(out + i, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, dy + i),
                                                        silu_grad16(_mm512_maskz_loadu_ps(m, x + i))));
    }
}
