/* The AVX2+FMA SiLU, sigmoid and SiLU gradient of 8 lanes, inline, for the array kernels of
 * act_avx2.c and for epilogues held in registers (dwconv_avx2.c, gemm_avx2.c). Include only from
 * files compiled for AVX2 and FMA. The arithmetic is that of ops/activation.h, lane by lane: e^a
 * for a = -|x| (clamped at -120, NaN -> -120) as p * 2^n with a = n ln2 + r, |r| <= ln2 / 2, a
 * two-part ln2 and a degree-6 minimax polynomial for p = e^r (activation.h's is a degree-7
 * Taylor form); 2^n is built from its exponent bits in two halves s1 s2 (each a normal float
 * down to n = -174) that are multiplied in last, so a subnormal result is rounded once more at
 * most, as in the scalar code; 1 / (1 + e) is a division. SiLU, sigmoid and SiLU' take a shorter
 * road when no lane is below -87 (the usual case): 1 / (1 + e^-x) straight (SiLU: x / (1 +
 * e^-x)), e^-x <= e^87 a normal float in one scale, which needs neither the halves nor the sign
 * blend (1.4x the throughput of cn_silu_n on a Zen 3; with the minimax polynomial and the one
 * division, the array SiLU 2.75 -> 2.24 ns a vector of 8 on a Zen 5 core). The polynomial's
 * multiply-adds are fused (the scalar code's may not be), so the results are within the same
 * bounds (tests/test_ops_effnet.c, over both roads: 4 ulp, 8 ulp for the gradient) but not
 * always the same bits as the plain C or the AVX-512 copy. */
#ifndef CN_KERNELS_ACT_AVX2_H
#define CN_KERNELS_ACT_AVX2_H
#include <immintrin.h>

#include "kernels/act.h"
#include "kernels/gemm.h"

#define CN_INLINE static inline __attribute__((always_inline))

/* e^a = p * 2^n for a finite a: n = round(a / ln2), p = e^r for r = a - n ln2 (two-part ln2,
 * |r| <= ln2 / 2) by the degree-6 minimax polynomial of kernels/act.h (relative error
 * 3.9e-9, two operations fewer than the degree-7 Taylor form) */
CN_INLINE __m256 exp_parts8(__m256 a, __m256 *n) {
    *n = _mm256_round_ps(_mm256_mul_ps(a, _mm256_set1_ps(CN_EXP_LOG2E)),
                         _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(*n, _mm256_set1_ps(CN_EXP_LN2_HI), a);
    r = _mm256_fnmadd_ps(*n, _mm256_set1_ps(CN_EXP_LN2_LO), r);
    __m256 q = _mm256_set1_ps(CN_EXP_C6);
    q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(CN_EXP_C5));
    q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(CN_EXP_C4));
    q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(CN_EXP_C3));
    q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(CN_EXP_C2));
    q = _mm256_fmadd_ps(q, r, _mm256_set1_ps(CN_EXP_C1));
    return _mm256_fmadd_ps(q, r, _mm256_set1_ps(1.0f));
}

/* e^-|x| = p * s1 * s2 */
CN_INLINE __m256 exp_neg_abs8(__m256 x, __m256 *s1, __m256 *s2) {
    /* max returns its second operand when one is NaN: NaN -> -120 */
    const __m256 a = _mm256_max_ps(_mm256_or_ps(x, _mm256_set1_ps(-0.0f)), _mm256_set1_ps(-120.0f));
    __m256 n;
    const __m256 p = exp_parts8(a, &n);
    /* n in [-174, 0]: n1 = floor(n / 2), n2 = n - n1, both in [-87, 0] */
    const __m256i ni = _mm256_cvtps_epi32(n);
    const __m256i n1 = _mm256_srai_epi32(ni, 1), n2 = _mm256_sub_epi32(ni, n1);
    const __m256i bias = _mm256_set1_epi32(127);
    *s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, bias), 23));
    *s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, bias), 23));
    return p;
}

CN_INLINE __m256 ge0_8(__m256 x) { return _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_GE_OQ); }

/* e^t for t <= 87 (t >= -87 or NaN: then -87), as p * 2^n in one scale: e^-x for the usual
 * x >= -87, the common case of silu8 and sigmoid8, which then skip the two-part scale and the
 * blend of the sign cases. */
CN_INLINE __m256 exp_le87_8(__m256 t) {
    __m256 n;
    const __m256 p = exp_parts8(_mm256_max_ps(t, _mm256_set1_ps(-87.0f)), &n);
    /* n in [-126, 126]: 2^n is a normal float */
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

/* whether every lane is >= -87 or NaN (the comparison is false for NaN) */
CN_INLINE int all_ge_m87(__m256 x) {
    return _mm256_movemask_ps(_mm256_cmp_ps(x, _mm256_set1_ps(-87.0f), _CMP_LT_OQ)) == 0;
}

/* x / (1 + e^-x) when every lane is >= -87: NaN stays NaN (x times a finite q), +inf stays +inf
 * (e^-inf clamps to e^-87, q = 1), -0 stays -0 */
CN_INLINE __m256 silu8_common(__m256 x) {
    const __m256 e = exp_le87_8(_mm256_xor_ps(x, _mm256_set1_ps(-0.0f)));
    return _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0f), e));
}

CN_INLINE __m256 silu8(__m256 x) {
    if (all_ge_m87(x)) return silu8_common(x);
    __m256 s1, s2;
    const __m256 p = exp_neg_abs8(x, &s1, &s2);
    const __m256 one = _mm256_set1_ps(1.0f);
    const __m256 q = _mm256_div_ps(one, _mm256_add_ps(one, _mm256_mul_ps(_mm256_mul_ps(p, s1), s2)));
    /* x >= 0: x q; otherwise x e^x / (1 + e^x) = (((x q) p) s1) s2, x clamped at -120 (-inf -> 0,
     * NaN stays NaN: max returns its second operand) */
    const __m256 xc = _mm256_max_ps(_mm256_set1_ps(-120.0f), x);
    const __m256 neg = _mm256_mul_ps(_mm256_mul_ps(_mm256_mul_ps(_mm256_mul_ps(xc, q), p), s1), s2);
    return _mm256_blendv_ps(neg, _mm256_mul_ps(x, q), ge0_8(x));
}

CN_INLINE __m256 sigmoid8(__m256 x) {
    if (all_ge_m87(x)) {
        const __m256 e = exp_le87_8(_mm256_xor_ps(x, _mm256_set1_ps(-0.0f)));
        const __m256 q = _mm256_div_ps(_mm256_set1_ps(1.0f), _mm256_add_ps(_mm256_set1_ps(1.0f), e));
        return _mm256_blendv_ps(q, x, _mm256_cmp_ps(x, x, _CMP_UNORD_Q));
    }
    __m256 s1, s2;
    const __m256 p = exp_neg_abs8(x, &s1, &s2);
    const __m256 one = _mm256_set1_ps(1.0f);
    const __m256 q = _mm256_div_ps(one, _mm256_add_ps(one, _mm256_mul_ps(_mm256_mul_ps(p, s1), s2)));
    const __m256 s = _mm256_blendv_ps(_mm256_mul_ps(_mm256_mul_ps(_mm256_mul_ps(p, q), s1), s2), q,
                                      ge0_8(x));
    return _mm256_blendv_ps(s, x, _mm256_cmp_ps(x, x, _CMP_UNORD_Q));
}

/* silu'(x) = q (1 + x e q) for x >= 0 (e = e^-x), e q (1 + x q) for x < 0 (e = e^x) */
CN_INLINE __m256 silu_grad8(__m256 x) {
    if (all_ge_m87(x)) {
        /* s = 1 / (1 + E), E = e^-x, 1 - s = E s: silu' = s (1 + x E s), x clamped at 87 for
         * the product (+inf: 1; NaN stays NaN: min returns its second operand) */
        const __m256 one = _mm256_set1_ps(1.0f);
        const __m256 e = exp_le87_8(_mm256_xor_ps(x, _mm256_set1_ps(-0.0f)));
        const __m256 sg = _mm256_div_ps(one, _mm256_add_ps(one, e));
        const __m256 xh = _mm256_min_ps(_mm256_set1_ps(87.0f), x);
        return _mm256_mul_ps(sg, _mm256_fmadd_ps(xh, _mm256_mul_ps(e, sg), one));
    }
    __m256 s1, s2;
    const __m256 p = exp_neg_abs8(x, &s1, &s2);
    const __m256 one = _mm256_set1_ps(1.0f);
    const __m256 e = _mm256_mul_ps(_mm256_mul_ps(p, s1), s2);
    const __m256 q = _mm256_div_ps(one, _mm256_add_ps(one, e));
    const __m256 xh = _mm256_min_ps(_mm256_set1_ps(120.0f), x);
    const __m256 xc = _mm256_max_ps(_mm256_set1_ps(-120.0f), x);
    const __m256 pos = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_mul_ps(xh, e), q), q, q);
    const __m256 neg = _mm256_mul_ps(
        _mm256_mul_ps(_mm256_mul_ps(_mm256_mul_ps(_mm256_fmadd_ps(xc, q, one), q), p), s1), s2);
    return _mm256_blendv_ps(neg, pos, ge0_8(x));
}

/* v < 0 ? 0 : v, lane by lane (NaN and -0 kept, as the scalar epilogue does) */
CN_INLINE __m256 relu8(__m256 v) {
    return _mm256_andnot_ps(_mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_LT_OQ), v);
}

/* the epilogue a cn_gemm_affine describes (kernels/gemm.h), on 8 lanes: (v * scale + shift) +
 * res, rounded after each operation, then its activation (the GEMM's and the direct
 * convolution's write-back; mask: the lanes of res read when not full) */
CN_INLINE __m256 affine8(__m256 v, __m256 scale, __m256 shift, const float *res, int full,
                         __m256i mask, int act) {
    v = _mm256_add_ps(_mm256_mul_ps(v, scale), shift);
    if (res) v = _mm256_add_ps(v, full ? _mm256_loadu_ps(res) : _mm256_maskload_ps(res, mask));
    return act == CN_GEMM_ACT_RELU ? relu8(v) : act == CN_GEMM_ACT_SILU ? silu8(v) : v;
}

#endif
