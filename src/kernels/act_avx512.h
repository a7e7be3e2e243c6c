/* The AVX-512 SiLU, sigmoid and SiLU gradient of 16 lanes, inline, for the array kernels of
 * act_avx512.c and for epilogues held in registers (dwconv_avx512.c, gemm_avx512.c). Include only
 * from files compiled for AVX-512. The arithmetic follows ops/activation.h: e^a for a = -|x|
 * (clamped at -120) as p * 2^n with a = n ln2 + r, |r| <= ln2 / 2 and a two-part ln2.
 * Differences, for speed (these run on every element of EfficientNet's expanded maps, where
 * they cost as much as the 1x1 convolution that makes them): p = e^r is a degree-6 minimax
 * polynomial (relative error 3.9e-9), two operations fewer than activation.h's degree-7 Taylor
 * form; 2^n is applied by vscalefps, which rounds once even when the result is subnormal (instead
 * of two exponent halves); the clamp is one vrangeps and 1 / (1 + e) one division (the divider
 * runs beside the FMA pipes). SiLU and sigmoid take a shorter road when no lane is below -87
 * (the usual case), as act_avx2.h does: x / (1 + e^-x) straight. The array SiLU on one Zen 5
 * core: 3.75 ns a vector of 16 before these, 2.0 after; at most 2.4 ulp over [-100, 100] (2.9
 * before). */
#ifndef CN_KERNELS_ACT_AVX512_H
#define CN_KERNELS_ACT_AVX512_H
#include <immintrin.h>

#include "kernels/act.h"
#include "kernels/gemm.h"

#define CN_INLINE static inline __attribute__((always_inline))

/* e^r for |r| <= ln2 / 2 by its degree-6 minimax polynomial (relative error 3.9e-9) */
CN_INLINE __m512 exp_poly(__m512 r) {
    __m512 q = _mm512_set1_ps(CN_EXP_C6);
    q = _mm512_fmadd_ps(q, r, _mm512_set1_ps(CN_EXP_C5));
    q = _mm512_fmadd_ps(q, r, _mm512_set1_ps(CN_EXP_C4));
    q = _mm512_fmadd_ps(q, r, _mm512_set1_ps(CN_EXP_C3));
    q = _mm512_fmadd_ps(q, r, _mm512_set1_ps(CN_EXP_C2));
    q = _mm512_fmadd_ps(q, r, _mm512_set1_ps(CN_EXP_C1));
    return _mm512_fmadd_ps(q, r, _mm512_set1_ps(1.0f));
}

/* e^a = p * 2^nf: n = round(a / ln2), p = e^r for r = a - n ln2 (two-part ln2, |r| <= ln2 / 2) */
CN_INLINE __m512 exp_reduced(__m512 a, __m512 *nf) {
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(a, _mm512_set1_ps(CN_EXP_LOG2E)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(CN_EXP_LN2_HI), a);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(CN_EXP_LN2_LO), r);
    *nf = n;
    return exp_poly(r);
}

/* e^-|x| = p * 2^nf; a = -min(|x|, 120) in one vrangeps (absolute minimum, sign set; NaN stays
 * NaN, and so does every result of it) */
CN_INLINE __m512 exp_neg_abs(__m512 x, __m512 *nf) {
    return exp_reduced(_mm512_range_ps(x, _mm512_set1_ps(120.0f), 0xE), nf);
}

/* e^-x for x >= -87 (NaN and x > 87: e^-87), in one scale: 2^n is a normal float for n in
 * [-126, 126]. The common case of silu16 and sigmoid16, which then skip the sign cases. The
 * reduction is that of exp_reduced for a = -min(x, 87) with the negation folded into it. */
CN_INLINE __m512 exp_neg_ge87(__m512 x) {
    const __m512 xc = _mm512_min_ps(x, _mm512_set1_ps(87.0f));
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(xc, _mm512_set1_ps(-CN_EXP_LOG2E)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmsub_ps(n, _mm512_set1_ps(CN_EXP_LN2_HI), xc);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(CN_EXP_LN2_LO), r);
    return _mm512_scalef_ps(exp_poly(r), n);
}

/* no lane below -87 (NaN counts as not below) */
CN_INLINE int all_ge_m87(__m512 x) {
    return _mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.0f), _CMP_LT_OQ) == 0;
}

/* 1 / d for d >= 1: the divider runs beside the FMA pipes, which these functions keep busy, so a
 * division costs less than an estimate and its Newton step */
CN_INLINE __m512 recip(__m512 d) { return _mm512_div_ps(_mm512_set1_ps(1.0f), d); }

CN_INLINE __m512 silu16(__m512 x) {
    /* the usual case: x / (1 + e^-x), one rounding after e^-x (NaN stays NaN, +inf stays +inf,
     * -0 stays -0) */
    if (all_ge_m87(x))
        return _mm512_div_ps(x, _mm512_add_ps(_mm512_set1_ps(1.0f), exp_neg_ge87(x)));
    __m512 nf;
    const __m512 p = exp_neg_abs(x, &nf);
    const __m512 q = recip(_mm512_add_ps(_mm512_set1_ps(1.0f), _mm512_scalef_ps(p, nf)));
    /* x >= 0: x q; otherwise x e^x / (1 + e^x) = (x q p) 2^n, x clamped at -120 (-inf -> 0,
     * NaN stays NaN: max returns its second operand when one is NaN) */
    const __m512 xc = _mm512_max_ps(_mm512_set1_ps(-120.0f), x);
    const __m512 neg = _mm512_scalef_ps(_mm512_mul_ps(_mm512_mul_ps(xc, q), p), nf);
    const __mmask16 pos = _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_GE_OQ);
    return _mm512_mask_mul_ps(neg, pos, x, q);
}

CN_INLINE __m512 sigmoid16(__m512 x) {
    if (all_ge_m87(x)) {
        const __m512 s = recip(_mm512_add_ps(_mm512_set1_ps(1.0f), exp_neg_ge87(x)));
        return _mm512_mask_mov_ps(s, _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q), x);
    }
    __m512 nf;
    const __m512 p = exp_neg_abs(x, &nf);
    const __m512 q = recip(_mm512_add_ps(_mm512_set1_ps(1.0f), _mm512_scalef_ps(p, nf)));
    __m512 s = _mm512_scalef_ps(_mm512_mul_ps(p, q), nf);
    s = _mm512_mask_mov_ps(s, _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_GE_OQ), q);
    return _mm512_mask_mov_ps(s, _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q), x);
}

/* silu'(x) = q (1 + x e q) for x >= 0 (e = e^-x), e q (1 + x q) for x < 0 (e = e^x) */
CN_INLINE __m512 silu_grad16(__m512 x) {
    if (all_ge_m87(x)) { /* one formula for both signs: e = e^-x, e q <= 1 (x beyond 87,
                            * where e is that of 87, clamped the same way) */
        const __m512 e = exp_neg_ge87(x);
        const __m512 q = recip(_mm512_add_ps(_mm512_set1_ps(1.0f), e));
        /* (min returns its second operand when one is NaN: NaN stays NaN) */
        const __m512 xc = _mm512_min_ps(_mm512_set1_ps(87.0f), x);
        return _mm512_fmadd_ps(_mm512_mul_ps(xc, _mm512_mul_ps(e, q)), q, q);
    }
    __m512 nf;
    const __m512 p = exp_neg_abs(x, &nf);
    const __m512 e = _mm512_scalef_ps(p, nf);
    const __m512 q = recip(_mm512_add_ps(_mm512_set1_ps(1.0f), e));
    const __m512 xh = _mm512_min_ps(_mm512_set1_ps(120.0f), x);
    const __m512 xc = _mm512_max_ps(_mm512_set1_ps(-120.0f), x);
    const __m512 pos = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_mul_ps(xh, e), q), q, q);
    const __m512 neg = _mm512_scalef_ps(
        _mm512_mul_ps(_mm512_mul_ps(_mm512_fmadd_ps(xc, q, _mm512_set1_ps(1.0f)), q), p), nf);
    return _mm512_mask_mov_ps(neg, _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_GE_OQ), pos);
}

/* the epilogue a cn_gemm_affine describes (kernels/gemm.h), on the lanes m: (v * scale + shift)
 * + res, rounded after each operation, then v < 0 ? 0 : v (NaN and -0 kept) or silu16
 * (cn_silu_n's on this path); the GEMM's and the direct convolution's write-back */
CN_INLINE __m512 affine16(__m512 v, __m512 scale, __m512 shift, const float *res, __mmask16 m,
                          int act) {
    v = _mm512_add_ps(_mm512_mul_ps(v, scale), shift);
    if (res) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, res));
    if (act == CN_GEMM_ACT_RELU)
        return _mm512_maskz_mov_ps(~_mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_LT_OQ), v);
    return act == CN_GEMM_ACT_SILU ? silu16(v) : v;
}

/* rows x cols floats at p (rows ld apart, cols <= 16 NV), fetched for writing. A layer's output
 * is usually not in cache (a buffer last used layers ago), and a store that misses waits for its
 * line to be read (write-allocate) while the store queue fills; asked for before the work that
 * makes them, the lines arrive meanwhile. The GEMM's short-K tiles, the direct convolution's
 * tiles and the depthwise kernels' next row use it (measurements at each). */
CN_INLINE void prefetch_w16(const float *p, size_t ld, size_t rows, size_t cols,
                            const int MAXROWS, const int NV) {
#pragma GCC unroll 28
    for (int i = 0; i < MAXROWS; i++) {
        if ((size_t)i >= rows) break;
#pragma GCC unroll 6
        for (int v = 0; v < NV; v++)
            if ((size_t)(16 * v) < cols) __builtin_prefetch(p + (size_t)i * ld + 16 * v, 1, 3);
    }
}

#endif
