/* AVX-512 per-channel sums of batch norm's training forward (see bn.h). */
#include <immintrin.h>

#include "kernels/bn.h"

/* channels [j, j + 32) (masked past c) over rows [0, rows): the running sums live in registers
 * for a tile of rows and go back to p, p2 after it, so each channel still adds its rows in order
 * (mul then add, as the plain loop, hence the same bits) */
static inline __attribute__((always_inline)) void chunk(double *p, double *p2, const float *x,
                                                        size_t r0, size_t r1, int c, int j) {
    const int left = c - j;
    const __mmask16 ma = left >= 16 ? 0xffff : (__mmask16)((1u << left) - 1);
    const __mmask16 mb = left >= 32 ? 0xffff : left <= 16 ? 0 : (__mmask16)((1u << (left - 16)) - 1);
    const __mmask8 d0 = (__mmask8)ma, d1 = (__mmask8)(ma >> 8), d2 = (__mmask8)mb,
                   d3 = (__mmask8)(mb >> 8);
    __m512d s0 = _mm512_maskz_loadu_pd(d0, p + j), s1 = _mm512_maskz_loadu_pd(d1, p + j + 8);
    __m512d s2 = _mm512_maskz_loadu_pd(d2, p + j + 16), s3 = _mm512_maskz_loadu_pd(d3, p + j + 24);
    __m512d q0 = _mm512_maskz_loadu_pd(d0, p2 + j), q1 = _mm512_maskz_loadu_pd(d1, p2 + j + 8);
    __m512d q2 = _mm512_maskz_loadu_pd(d2, p2 + j + 16), q3 = _mm512_maskz_loadu_pd(d3, p2 + j + 24);
    const float *xr = x + r0 * (size_t)c + j;
    for (size_t i = r0; i < r1; i++, xr += c) {
        const __m512 a = _mm512_maskz_loadu_ps(ma, xr);
        const __m512 b = _mm512_maskz_loadu_ps(mb, xr + 16);
        const __m512d v0 = _mm512_cvtps_pd(_mm512_castps512_ps256(a));
        const __m512d v1 = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a), 1)));
        const __m512d v2 = _mm512_cvtps_pd(_mm512_castps512_ps256(b));
        const __m512d v3 = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(b), 1)));
        s0 = _mm512_add_pd(s0, v0), s1 = _mm512_add_pd(s1, v1);
        s2 = _mm512_add_pd(s2, v2), s3 = _mm512_add_pd(s3, v3);
        q0 = _mm512_add_pd(q0, _mm512_mul_pd(v0, v0)), q1 = _mm512_add_pd(q1, _mm512_mul_pd(v1, v1));
        q2 = _mm512_add_pd(q2, _mm512_mul_pd(v2, v2)), q3 = _mm512_add_pd(q3, _mm512_mul_pd(v3, v3));
    }
    _mm512_mask_storeu_pd(p + j, d0, s0), _mm512_mask_storeu_pd(p + j + 8, d1, s1);
    _mm512_mask_storeu_pd(p + j + 16, d2, s2), _mm512_mask_storeu_pd(p + j + 24, d3, s3);
    _mm512_mask_storeu_pd(p2 + j, d0, q0), _mm512_mask_storeu_pd(p2 + j + 8, d1, q1);
    _mm512_mask_storeu_pd(p2 + j + 16, d2, q2), _mm512_mask_storeu_pd(p2 + j + 24, d3, q3);
}

enum { TILE_ROWS = 64 };

void cn_bn_sums__avx512(double *p, double *p2, const float *x, size_t lo, size_t hi, int c) {
    for (size_t r0 = lo; r0 < hi; r0 += TILE_ROWS) {
        const size_t r1 = hi - r0 < TILE_ROWS ? hi : r0 + TILE_ROWS;
        for (int j = 0; j < c; j += 32) chunk(p, p2, x, r0, r1, c, j);
    }
}
