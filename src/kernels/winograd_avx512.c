/* AVX-512 transforms of Winograd F(4x4, 3x3) (see winograd.c for the matrices): 16 channels per
 * vector, the channel tail with masked loads and stores. gcc does not vectorise the plain C
 * versions over channels (the 6x6 intermediate of a tile is kept per lane), which made the input
 * transform three times slower than the 36 GEMMs. The intermediate (B^T d, or A^T m) goes through
 * a small stack array: 36 vectors do not fit in the 32 registers, and L1 is as good. */
#include <immintrin.h>
#include <stddef.h>

#include "kernels/winograd_g.h"
#include "ops/ops.h"

void f32_wino_input_tile__avx512(float *v, size_t fs, const float *const *px, int c);
void f32_wino_output_tile__avx512(float *const *po, const float *const *pr, const float *m,
                                  size_t fs, int oc, const float *scale, const float *shift,
                                  int act);

static inline __mmask16 tail_mask(int left) {
    return left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);
}

/* r[0..5] = B^T (d0..d5) */
static inline __attribute__((always_inline)) void bt6(__m512 *r, __m512 d0, __m512 d1, __m512 d2,
                                                      __m512 d3, __m512 d4, __m512 d5) {
    const __m512 four = _mm512_set1_ps(4.0f), five = _mm512_set1_ps(5.0f);
    const __m512 two = _mm512_set1_ps(2.0f);
    const __m512 s34 = _mm512_add_ps(d3, d4), d43 = _mm512_sub_ps(d4, d3);
    const __m512 s12 = _mm512_add_ps(d1, d2), d12 = _mm512_sub_ps(d1, d2);
    const __m512 d42 = _mm512_sub_ps(d4, d2), d31 = _mm512_sub_ps(d3, d1);
    r[0] = _mm512_fmadd_ps(four, d0, _mm512_fnmadd_ps(five, d2, d4));
    r[1] = _mm512_fnmadd_ps(four, s12, s34);
    r[2] = _mm512_fmadd_ps(four, d12, d43);
    r[3] = _mm512_fmadd_ps(two, d31, d42);
    r[4] = _mm512_fnmadd_ps(two, d31, d42);
    r[5] = _mm512_fmadd_ps(four, d1, _mm512_fnmadd_ps(five, d3, d5));
}

void f32_wino_input_tile__avx512(float *v, size_t fs, const float *const *px, int c) {
    for (int k = 0; k < c; k += 16) {
        const __mmask16 mk = tail_mask(c - k);
        __m512 t[6][6]; /* t[i][j] = (B^T d)[i][j] */
        for (int j = 0; j < 6; j++) {
            __m512 d[6];
            for (int i = 0; i < 6; i++) d[i] = _mm512_maskz_loadu_ps(mk, px[6 * i + j] + k);
            __m512 r[6];
            bt6(r, d[0], d[1], d[2], d[3], d[4], d[5]);
            for (int i = 0; i < 6; i++) t[i][j] = r[i];
        }
        for (int i = 0; i < 6; i++) {
            __m512 r[6];
            bt6(r, t[i][0], t[i][1], t[i][2], t[i][3], t[i][4], t[i][5]);
            float *o = v + (size_t)(6 * i) * fs + k;
            for (int j = 0; j < 6; j++) _mm512_mask_storeu_ps(o + (size_t)j * fs, mk, r[j]);
        }
    }
}

/* r[0..3] = A^T (m0..m5) */
static inline __attribute__((always_inline)) void at4(__m512 *r, __m512 m0, __m512 m1, __m512 m2,
                                                      __m512 m3, __m512 m4, __m512 m5) {
    const __m512 s12 = _mm512_add_ps(m1, m2), d12 = _mm512_sub_ps(m1, m2);
    const __m512 s34 = _mm512_add_ps(m3, m4), d34 = _mm512_sub_ps(m3, m4);
    r[0] = _mm512_add_ps(_mm512_add_ps(m0, s12), s34);
    r[1] = _mm512_fmadd_ps(_mm512_set1_ps(2.0f), d34, d12);
    r[2] = _mm512_fmadd_ps(_mm512_set1_ps(4.0f), s34, s12);
    r[3] = _mm512_add_ps(_mm512_fmadd_ps(_mm512_set1_ps(8.0f), d34, d12), m5);
}

/* e^x for x <= 0 by the same steps as cn_exp_parts (ops/activation.h), lane-wise: p, s1, s2 */
static inline __attribute__((always_inline)) void exp_parts(__m512 a, __m512 *p, __m512 *s1,
                                                            __m512 *s2) {
    a = _mm512_max_ps(a, _mm512_set1_ps(-120.0f));
    const __m512 big = _mm512_set1_ps(12582912.0f);
    __m512 k = _mm512_add_ps(_mm512_mul_ps(a, _mm512_set1_ps(1.44269504f)), big);
    __m512 nf = _mm512_sub_ps(k, big);
    __m512 r = _mm512_sub_ps(a, _mm512_mul_ps(nf, _mm512_set1_ps(0.693145751953125f)));
    r = _mm512_sub_ps(r, _mm512_mul_ps(nf, _mm512_set1_ps(1.42860676533018e-06f)));
    __m512 q = _mm512_set1_ps(1.0f / 5040);
    q = _mm512_add_ps(_mm512_mul_ps(q, r), _mm512_set1_ps(1.0f / 720));
    q = _mm512_add_ps(_mm512_mul_ps(q, r), _mm512_set1_ps(1.0f / 120));
    q = _mm512_add_ps(_mm512_mul_ps(q, r), _mm512_set1_ps(1.0f / 24));
    q = _mm512_add_ps(_mm512_mul_ps(q, r), _mm512_set1_ps(1.0f / 6));
    q = _mm512_add_ps(_mm512_mul_ps(q, r), _mm512_set1_ps(0.5f));
    *p = _mm512_add_ps(_mm512_set1_ps(1.0f), _mm512_add_ps(r, _mm512_mul_ps(_mm512_mul_ps(q, r), r)));
    __m512i n = _mm512_cvttps_epi32(nf);
    __m512i n1 = _mm512_srai_epi32(_mm512_add_epi32(n, _mm512_srli_epi32(n, 31)), 1); /* n / 2 */
    __m512i n2 = _mm512_sub_epi32(n, n1);
    const __m512i bias = _mm512_set1_epi32(127);
    *s1 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(n1, bias), 23));
    *s2 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(n2, bias), 23));
}

static inline __attribute__((always_inline)) __m512 act_v(__m512 y, int act) {
    if (act == CN_ACT_RELU) return _mm512_max_ps(y, _mm512_setzero_ps());
    if (act != CN_ACT_SILU && act != CN_ACT_SIGMOID) return y;
    const __m512 ax = _mm512_abs_ps(y);
    __m512 p, s1, s2;
    exp_parts(_mm512_sub_ps(_mm512_setzero_ps(), ax), &p, &s1, &s2);
    const __m512 one = _mm512_set1_ps(1.0f);
    __m512 q = _mm512_div_ps(one, _mm512_add_ps(one, _mm512_mul_ps(_mm512_mul_ps(p, s1), s2)));
    const __mmask16 neg = _mm512_cmp_ps_mask(y, _mm512_setzero_ps(), _CMP_NGE_UQ); /* !(y >= 0) */
    __m512 out;
    if (act == CN_ACT_SIGMOID) {
        out = _mm512_mask_mov_ps(q, neg, _mm512_mul_ps(_mm512_mul_ps(_mm512_mul_ps(p, q), s1), s2));
    } else {
        const __m512 xc = _mm512_max_ps(y, _mm512_set1_ps(-120.0f));
        __m512 negv = _mm512_mul_ps(_mm512_mul_ps(_mm512_mul_ps(_mm512_mul_ps(xc, q), p), s1), s2);
        out = _mm512_mask_mov_ps(_mm512_mul_ps(y, q), neg, negv);
    }
    /* NaN in, NaN out (as the scalar versions) */
    const __mmask16 nan = _mm512_cmp_ps_mask(y, y, _CMP_UNORD_Q);
    return _mm512_mask_mov_ps(out, nan, y);
}

static inline __attribute__((always_inline)) void output_impl(
    float *const *po, const float *const *pr, const float *m, size_t fs, int oc,
    const float *scale, const float *shift, const int has_res, const int act) {
    for (int k = 0; k < oc; k += 16) {
        const __mmask16 mk = tail_mask(oc - k);
        __m512 t[4][6]; /* (A^T m)[i][j] */
        for (int j = 0; j < 6; j++) {
            __m512 x[6];
            for (int i = 0; i < 6; i++)
                x[i] = _mm512_maskz_loadu_ps(mk, m + (size_t)(6 * i + j) * fs + k);
            __m512 r[4];
            at4(r, x[0], x[1], x[2], x[3], x[4], x[5]);
            for (int i = 0; i < 4; i++) t[i][j] = r[i];
        }
        const __m512 sc = _mm512_maskz_loadu_ps(mk, scale + k);
        const __m512 sh = _mm512_maskz_loadu_ps(mk, shift + k);
        for (int i = 0; i < 4; i++) {
            __m512 r[4];
            at4(r, t[i][0], t[i][1], t[i][2], t[i][3], t[i][4], t[i][5]);
            for (int j = 0; j < 4; j++) {
                /* as conv2d.c's epilogue: x * scale + shift (two roundings), then + res */
                __m512 y = _mm512_add_ps(_mm512_mul_ps(r[j], sc), sh);
                if (has_res) y = _mm512_add_ps(y, _mm512_maskz_loadu_ps(mk, pr[4 * i + j] + k));
                _mm512_mask_storeu_ps(po[4 * i + j] + k, mk, act_v(y, act));
            }
        }
    }
}

void f32_wino_output_tile__avx512(float *const *po, const float *const *pr, const float *m,
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

/* ---- weights for the streamed path (winograd.c): U = G g G^T with output channels along the
 * lanes ----
 * wt: the raw filters of a block of 48 output channels, tap-major, [9][c][48] (transposed from
 * (OC, 3, 3, C) by the GEMM's packer, zero past the block's channels); for row i of G, the six
 * planes f = 6i + j of U land in u + j*us as [c][48]: the packed B panels of the 8x48
 * micro-kernel, so the GEMM reads them as they are. */
void f32_wino_weights_panel__avx512(float *u, size_t us, const float *wt, int c, int i);


void f32_wino_weights_panel__avx512(float *u, size_t us, const float *wt, int c, int i) {
    const size_t ts = (size_t)c * 48; /* one tap's plane */
    const __m512 gi0 = _mm512_set1_ps(cn_wino_g[i][0]), gi1 = _mm512_set1_ps(cn_wino_g[i][1]),
                 gi2 = _mm512_set1_ps(cn_wino_g[i][2]);
    for (int k = 0; k < c; k++) {
        const float *g = wt + (size_t)k * 48;
        float *uk = u + (size_t)k * 48;
#pragma GCC unroll 3
        for (int v = 0; v < 3; v++) {
            __m512 t[3]; /* (G g)[i][x]: row i of G times column x of the filter */
#pragma GCC unroll 3
            for (int x = 0; x < 3; x++)
                t[x] = _mm512_fmadd_ps(
                    gi2, _mm512_loadu_ps(g + (6 + x) * ts + 16 * v),
                    _mm512_fmadd_ps(gi1, _mm512_loadu_ps(g + (3 + x) * ts + 16 * v),
                                    _mm512_mul_ps(gi0, _mm512_loadu_ps(g + x * ts + 16 * v))));
#pragma GCC unroll 6
            for (int j = 0; j < 6; j++) {
                const __m512 g0 = _mm512_set1_ps(cn_wino_g[j][0]);
                const __m512 g1 = _mm512_set1_ps(cn_wino_g[j][1]);
                const __m512 g2 = _mm512_set1_ps(cn_wino_g[j][2]);
                const __m512 uj =
                    _mm512_fmadd_ps(g2, t[2], _mm512_fmadd_ps(g1, t[1], _mm512_mul_ps(g0, t[0])));
                _mm512_storeu_ps(uk + (size_t)j * us + 16 * v, uj);
            }
        }
    }
}
