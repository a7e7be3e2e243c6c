/* AVX2 + FMA transforms of Winograd F(4x4, 3x3) (see winograd.c for the matrices), for CPUs
 * without AVX-512 (AMD Zen 2/3, Intel before Skylake-SP): 8 channels per ymm. The same arithmetic
 * as winograd_avx512.c, lane for lane (the same FMAs in B^T and A^T, the epilogue in the order of
 * conv2d.c's, the SiLU/sigmoid by cn_exp_parts' steps without contraction), so the transforms give
 * the AVX-512 ones' bits. Whole vectors of 8 channels first; the channel tail (C or OC not a
 * multiple of 8) once, with masked loads and stores (vmaskmovps does not fault on the lanes left
 * out). The intermediate (B^T d, or A^T m) goes through a small stack array: 36 vectors do not fit
 * in the 16 registers, and L1 is as good. */
#include <immintrin.h>
#include <stddef.h>

#include "kernels/winograd_g.h"
#include "ops/ops.h"

void f32_wino_input_tile__avx2(float *v, size_t fs, const float *const *px, int c);
void f32_wino_output_tile__avx2(float *const *po, const float *const *pr, const float *m,
                                size_t fs, int oc, const float *scale, const float *shift,
                                int act);

#define AI static inline __attribute__((always_inline))

/* lanes 0..left-1 on (left in 1..7) */
AI __m256i tail_mask(int left) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(left), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* load / store 8 floats, or the lanes of mk only when masked (the others read as 0) */
AI __m256 ld(const float *p, const int masked, __m256i mk) {
    return masked ? _mm256_maskload_ps(p, mk) : _mm256_loadu_ps(p);
}
AI void st(float *p, __m256 x, const int masked, __m256i mk) {
    if (masked) _mm256_maskstore_ps(p, mk, x);
    else _mm256_storeu_ps(p, x);
}

/* ---- input: v[f * fs + k] = (B^T d B)[f] ---- */

/* r[0..5] = B^T (d0..d5) */
AI void bt6(__m256 *r, __m256 d0, __m256 d1, __m256 d2, __m256 d3, __m256 d4, __m256 d5) {
    const __m256 four = _mm256_set1_ps(4.0f), five = _mm256_set1_ps(5.0f);
    const __m256 two = _mm256_set1_ps(2.0f);
    const __m256 s34 = _mm256_add_ps(d3, d4), d43 = _mm256_sub_ps(d4, d3);
    const __m256 s12 = _mm256_add_ps(d1, d2), d12 = _mm256_sub_ps(d1, d2);
    const __m256 d42 = _mm256_sub_ps(d4, d2), d31 = _mm256_sub_ps(d3, d1);
    r[0] = _mm256_fmadd_ps(four, d0, _mm256_fnmadd_ps(five, d2, d4));
    r[1] = _mm256_fnmadd_ps(four, s12, s34);
    r[2] = _mm256_fmadd_ps(four, d12, d43);
    r[3] = _mm256_fmadd_ps(two, d31, d42);
    r[4] = _mm256_fnmadd_ps(two, d31, d42);
    r[5] = _mm256_fmadd_ps(four, d1, _mm256_fnmadd_ps(five, d3, d5));
}

/* channels k..k+7 of one tile (the lanes of mk only when masked) */
AI void input8(float *v, size_t fs, const float *const *px, int k, const int masked, __m256i mk) {
    __m256 t[6][6]; /* t[i][j] = (B^T d)[i][j] */
    for (int j = 0; j < 6; j++) {
        __m256 d[6];
        for (int i = 0; i < 6; i++) d[i] = ld(px[6 * i + j] + k, masked, mk);
        __m256 r[6];
        bt6(r, d[0], d[1], d[2], d[3], d[4], d[5]);
        for (int i = 0; i < 6; i++) t[i][j] = r[i];
    }
    for (int i = 0; i < 6; i++) {
        __m256 r[6];
        bt6(r, t[i][0], t[i][1], t[i][2], t[i][3], t[i][4], t[i][5]);
        float *o = v + (size_t)(6 * i) * fs + k;
        for (int j = 0; j < 6; j++) st(o + (size_t)j * fs, r[j], masked, mk);
    }
}

void f32_wino_input_tile__avx2(float *v, size_t fs, const float *const *px, int c) {
    const __m256i all = _mm256_set1_epi32(-1);
    int k = 0;
    for (; k + 8 <= c; k += 8) input8(v, fs, px, k, 0, all);
    if (k < c) input8(v, fs, px, k, 1, tail_mask(c - k));
}

/* ---- output: po[q][k] = act((A^T m A)[q] * scale[k] + shift[k] + pr[q][k]) ---- */

/* r[0..3] = A^T (m0..m5) */
AI void at4(__m256 *r, __m256 m0, __m256 m1, __m256 m2, __m256 m3, __m256 m4, __m256 m5) {
    const __m256 s12 = _mm256_add_ps(m1, m2), d12 = _mm256_sub_ps(m1, m2);
    const __m256 s34 = _mm256_add_ps(m3, m4), d34 = _mm256_sub_ps(m3, m4);
    r[0] = _mm256_add_ps(_mm256_add_ps(m0, s12), s34);
    r[1] = _mm256_fmadd_ps(_mm256_set1_ps(2.0f), d34, d12);
    r[2] = _mm256_fmadd_ps(_mm256_set1_ps(4.0f), s34, s12);
    r[3] = _mm256_add_ps(_mm256_fmadd_ps(_mm256_set1_ps(8.0f), d34, d12), m5);
}

/* e^a for a <= 0 by the same steps as cn_exp_parts (ops/activation.h), lane-wise: p, s1, s2.
 * Separate multiplies and adds (no FMA), as the scalar code is compiled (ISO C: no contraction). */
AI void exp_parts(__m256 a, __m256 *p, __m256 *s1, __m256 *s2) {
    a = _mm256_max_ps(a, _mm256_set1_ps(-120.0f)); /* NaN -> -120, as the scalar a > -120 ? */
    const __m256 big = _mm256_set1_ps(12582912.0f);
    __m256 k = _mm256_add_ps(_mm256_mul_ps(a, _mm256_set1_ps(1.44269504f)), big);
    __m256 nf = _mm256_sub_ps(k, big);
    __m256 r = _mm256_sub_ps(a, _mm256_mul_ps(nf, _mm256_set1_ps(0.693145751953125f)));
    r = _mm256_sub_ps(r, _mm256_mul_ps(nf, _mm256_set1_ps(1.42860676533018e-06f)));
    __m256 q = _mm256_set1_ps(1.0f / 5040);
    q = _mm256_add_ps(_mm256_mul_ps(q, r), _mm256_set1_ps(1.0f / 720));
    q = _mm256_add_ps(_mm256_mul_ps(q, r), _mm256_set1_ps(1.0f / 120));
    q = _mm256_add_ps(_mm256_mul_ps(q, r), _mm256_set1_ps(1.0f / 24));
    q = _mm256_add_ps(_mm256_mul_ps(q, r), _mm256_set1_ps(1.0f / 6));
    q = _mm256_add_ps(_mm256_mul_ps(q, r), _mm256_set1_ps(0.5f));
    *p = _mm256_add_ps(_mm256_set1_ps(1.0f),
                       _mm256_add_ps(r, _mm256_mul_ps(_mm256_mul_ps(q, r), r)));
    const __m256i n = _mm256_cvttps_epi32(nf); /* in [-174, 0] */
    const __m256i n1 = _mm256_srai_epi32(_mm256_add_epi32(n, _mm256_srli_epi32(n, 31)), 1); /* n/2 */
    const __m256i n2 = _mm256_sub_epi32(n, n1);
    const __m256i bias = _mm256_set1_epi32(127);
    *s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, bias), 23));
    *s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, bias), 23));
}

/* act(y) with cn_sigmoid1's / cn_silu1's arithmetic */
AI __m256 act_v(__m256 y, const int act) {
    /* max(0, y) returns its second operand for NaN and for two zeros: NaN and -0 stay, as the
     * plain C y < 0 ? 0 : y (winograd_avx512.c's max(y, 0) gives +0 for both) */
    if (act == CN_ACT_RELU) return _mm256_max_ps(_mm256_setzero_ps(), y);
    if (act != CN_ACT_SILU && act != CN_ACT_SIGMOID) return y;
    const __m256 ax = _mm256_and_ps(y, _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff)));
    __m256 p, s1, s2;
    exp_parts(_mm256_sub_ps(_mm256_setzero_ps(), ax), &p, &s1, &s2);
    const __m256 one = _mm256_set1_ps(1.0f);
    const __m256 q =
        _mm256_div_ps(one, _mm256_add_ps(one, _mm256_mul_ps(_mm256_mul_ps(p, s1), s2)));
    const __m256 neg = _mm256_cmp_ps(y, _mm256_setzero_ps(), _CMP_NGE_UQ); /* !(y >= 0) */
    __m256 out;
    if (act == CN_ACT_SIGMOID) {
        const __m256 negv = _mm256_mul_ps(_mm256_mul_ps(_mm256_mul_ps(p, q), s1), s2);
        out = _mm256_blendv_ps(q, negv, neg);
    } else {
        const __m256 xc = _mm256_max_ps(y, _mm256_set1_ps(-120.0f));
        const __m256 negv =
            _mm256_mul_ps(_mm256_mul_ps(_mm256_mul_ps(_mm256_mul_ps(xc, q), p), s1), s2);
        out = _mm256_blendv_ps(_mm256_mul_ps(y, q), negv, neg);
    }
    /* NaN in, NaN out (as the scalar versions) */
    return _mm256_blendv_ps(out, y, _mm256_cmp_ps(y, y, _CMP_UNORD_Q));
}

/* output channels k..k+7 of one tile (the lanes of mk only when masked) */
AI void output8(float *const *po, const float *const *pr, const float *m, size_t fs, int k,
                const float *scale, const float *shift, const int has_res, const int act,
                const int masked, __m256i mk) {
    __m256 t[4][6]; /* (A^T m)[i][j] */
    for (int j = 0; j < 6; j++) {
        __m256 x[6];
        for (int i = 0; i < 6; i++) x[i] = ld(m + (size_t)(6 * i + j) * fs + k, masked, mk);
        __m256 r[4];
        at4(r, x[0], x[1], x[2], x[3], x[4], x[5]);
        for (int i = 0; i < 4; i++) t[i][j] = r[i];
    }
    const __m256 sc = ld(scale + k, masked, mk), sh = ld(shift + k, masked, mk);
    for (int i = 0; i < 4; i++) {
        __m256 r[4];
        at4(r, t[i][0], t[i][1], t[i][2], t[i][3], t[i][4], t[i][5]);
        for (int j = 0; j < 4; j++) {
            /* as conv2d.c's epilogue: x * scale + shift (two roundings), then + res */
            __m256 y = _mm256_add_ps(_mm256_mul_ps(r[j], sc), sh);
            if (has_res) y = _mm256_add_ps(y, ld(pr[4 * i + j] + k, masked, mk));
            st(po[4 * i + j] + k, act_v(y, act), masked, mk);
        }
    }
}

AI void output_impl(float *const *po, const float *const *pr, const float *m, size_t fs, int oc,
                    const float *scale, const float *shift, const int has_res, const int act) {
    const __m256i all = _mm256_set1_epi32(-1);
    int k = 0;
    for (; k + 8 <= oc; k += 8) output8(po, pr, m, fs, k, scale, shift, has_res, act, 0, all);
    if (k < oc)
        output8(po, pr, m, fs, k, scale, shift, has_res, act, 1, tail_mask(oc - k));
}

void f32_wino_output_tile__avx2(float *const *po, const float *const *pr, const float *m,
                                size_t fs, int oc, const float *scale, const float *shift,
                                int act) {
    const int r = pr != NULL;
#define OUT_CASE(A)                                                          \
    case A:                                                                  \
        if (r) output_impl(po, pr, m, fs, oc, scale, shift, 1, A);           \
        else output_impl(po, pr, m, fs, oc, scale, shift, 0, A);             \
        break;
    switch (act) {
        OUT_CASE(CN_ACT_NONE)
        OUT_CASE(CN_ACT_RELU)
        OUT_CASE(CN_ACT_SILU)
        OUT_CASE(CN_ACT_SIGMOID)
    default: break;
    }
#undef OUT_CASE
}

/* ---- weights, one row of G at a time, for the streamed path of winograd.c ----
 * u[j * us + r * c + k] = (G g_r G^T)[i][j] for j = 0..5, r < rows, k < c: the planes 6i..6i+5 of
 * the filters g_r = w + r * 9 * c (OHWI: g_r[y][x] at (y * 3 + x) * c + k), in float, 8 input
 * channels per vector: t = G[i] g (3 values), then t G[j]^T. */
void f32_wino_weights_row__avx2(float *u, size_t us, const float *w, int c, int rows, int i);


AI void weights_vec(float *u, size_t us, const float *g, int c, int i, const int masked,
                    __m256i mk) {
    __m256 t[3];
    const __m256 gi0 = _mm256_set1_ps(cn_wino_g[i][0]), gi1 = _mm256_set1_ps(cn_wino_g[i][1]),
                 gi2 = _mm256_set1_ps(cn_wino_g[i][2]);
#pragma GCC unroll 3
    for (int x = 0; x < 3; x++)
        t[x] = _mm256_fmadd_ps(gi2, ld(g + (size_t)(6 + x) * c, masked, mk),
                               _mm256_fmadd_ps(gi1, ld(g + (size_t)(3 + x) * c, masked, mk),
                                               _mm256_mul_ps(gi0, ld(g + (size_t)x * c, masked, mk))));
#pragma GCC unroll 6
    for (int j = 0; j < 6; j++) {
        const __m256 v = _mm256_fmadd_ps(
            _mm256_set1_ps(cn_wino_g[j][2]), t[2],
            _mm256_fmadd_ps(_mm256_set1_ps(cn_wino_g[j][1]), t[1],
                            _mm256_mul_ps(_mm256_set1_ps(cn_wino_g[j][0]), t[0])));
        st(u + (size_t)j * us, v, masked, mk);
    }
}

void f32_wino_weights_row__avx2(float *u, size_t us, const float *w, int c, int rows, int i) {
    const __m256i none = _mm256_setzero_si256();
    for (int r = 0; r < rows; r++) {
        const float *g = w + (size_t)r * 9 * c;
        float *ur = u + (size_t)r * c;
        int k = 0;
        for (; k + 8 <= c; k += 8) weights_vec(ur + k, us, g + k, c, i, 0, none);
        if (k < c) weights_vec(ur + k, us, g + k, c, i, 1, tail_mask(c - k));
    }
}
