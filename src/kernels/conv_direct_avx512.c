/* AVX-512 direct convolution kernels (see conv_direct.h).
 *
 * Forward tile: R output rows x P output pixels x NV*16 output channels, accumulated over
 * (ky, kx, c): per reduction step, NV weight vectors and R*P broadcast input values. The pixel
 * stride of the input (sw * c floats) is a compile-time constant so that the P broadcasts of a
 * row use one base register with immediate offsets.
 *
 * Weight-gradient tile: R kernel rows x P consecutive (kx, c) values x NV*16 output channels,
 * accumulated over every output pixel of the image: per pixel, NV vectors of dY and R*P
 * broadcast input values. The tile is added to dW once per image. */
#include <immintrin.h>
#include <stddef.h>

#include "kernels/conv_direct.h"

void f32_dconv_forward_image__avx512(float *out, const float *xpad, const float *wk,
                                     const cn_dconv_shape *s, int accumulate);
void f32_dconv_wgrad_image__avx512(float *dwk, const float *xpad, const float *dy,
                                   const cn_dconv_shape *s);

enum { MAXACC = 28, MAXNV = 4 };

static inline __attribute__((always_inline)) void fwd_tile(
    const float *x0, const float *x1, size_t np, size_t nrow, size_t kh, size_t seg,
    size_t segstride, const float *restrict b, size_t ldb, float *o0, float *o1, size_t ldo,
    int accumulate, const int P, const int R, const int NV, const int PS) {
    __m512 acc[MAXACC][MAXNV];
#pragma GCC unroll 28
    for (int i = 0; i < R * P; i++)
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) acc[i][v] = _mm512_setzero_ps();
    for (size_t ky = 0; ky < kh; ky++) {
        const float *p0 = x0 + ky * segstride, *p1 = x1 + ky * segstride;
        for (size_t k = 0; k < seg; k++) {
            __m512 bv[MAXNV];
#pragma GCC unroll 4
            for (int v = 0; v < NV; v++) bv[v] = _mm512_loadu_ps(b + 16 * v);
            b += ldb;
#pragma GCC unroll 28
            for (int i = 0; i < P; i++) {
                const __m512 a = _mm512_set1_ps(p0[i * PS + k]);
#pragma GCC unroll 4
                for (int v = 0; v < NV; v++) acc[i][v] = _mm512_fmadd_ps(a, bv[v], acc[i][v]);
            }
            if (R > 1) {
#pragma GCC unroll 28
                for (int i = 0; i < P; i++) {
                    const __m512 a = _mm512_set1_ps(p1[i * PS + k]);
#pragma GCC unroll 4
                    for (int v = 0; v < NV; v++)
                        acc[P + i][v] = _mm512_fmadd_ps(a, bv[v], acc[P + i][v]);
                }
            }
        }
    }
#pragma GCC unroll 2
    for (int r = 0; r < R; r++) {
        if ((size_t)r >= nrow) break;
        float *o = r ? o1 : o0;
#pragma GCC unroll 28
        for (int i = 0; i < P; i++) {
            if ((size_t)i >= np) break;
#pragma GCC unroll 4
            for (int v = 0; v < NV; v++) {
                __m512 t = acc[r * P + i][v];
                if (accumulate) t = _mm512_add_ps(_mm512_loadu_ps(o + 16 * v), t);
                _mm512_storeu_ps(o + 16 * v, t);
            }
            o += ldo;
        }
    }
}

static inline __attribute__((always_inline)) void fwd_image(float *out, const float *xpad,
                                                            const float *wk,
                                                            const cn_dconv_shape *s,
                                                            int accumulate, const int P,
                                                            const int R, const int NV,
                                                            const int PS) {
    const size_t c = (size_t)s->c, oc = (size_t)s->oc, ow = (size_t)s->ow;
    const size_t rowx = (size_t)s->sh * s->wp * c, seg = (size_t)s->kw * c;
    for (size_t oc0 = 0; oc0 < oc; oc0 += 16 * NV)
        for (size_t oy = 0; oy < (size_t)s->oh; oy += R) {
            const size_t nrow = (size_t)s->oh - oy < (size_t)R ? (size_t)s->oh - oy : (size_t)R;
            for (size_t ox = 0; ox < ow; ox += P) {
                const size_t np = ow - ox < (size_t)P ? ow - ox : (size_t)P;
                const float *x0 = xpad + oy * rowx + ox * PS;
                const float *x1 = nrow > 1 ? x0 + rowx : x0;
                float *o0 = out + (oy * ow + ox) * oc + oc0;
                fwd_tile(x0, x1, np, nrow, (size_t)s->kh, seg, (size_t)s->wp * c, wk + oc0, oc,
                         o0, o0 + ow * oc, oc, accumulate, P, R, NV, PS);
            }
        }
}

/* (P, R, NV) per output-channel multiple: 28 accumulators at 16 channels, 14 pixels x 32
 * channels otherwise, two rows of 7 for the 7-pixel-wide maps of the last ResNet stage */
#define FWD_VARIANTS(PS)                                                                      \
    static void fwd_ps##PS(float *out, const float *xpad, const float *wk,                   \
                           const cn_dconv_shape *s, int accumulate) {                         \
        if (s->oc % 32)                                                                      \
            fwd_image(out, xpad, wk, s, accumulate, 14, 2, 1, PS);                           \
        else if (s->ow <= 7)                                                                 \
            fwd_image(out, xpad, wk, s, accumulate, 7, 2, 2, PS);                            \
        else                                                                                 \
            fwd_image(out, xpad, wk, s, accumulate, 14, 1, 2, PS);                           \
    }
FWD_VARIANTS(1)
FWD_VARIANTS(2)
FWD_VARIANTS(16)
FWD_VARIANTS(32)
FWD_VARIANTS(64)

void f32_dconv_forward_image__avx512(float *out, const float *xpad, const float *wk,
                                     const cn_dconv_shape *s, int accumulate) {
    switch (s->sw * s->c) {
    case 1: fwd_ps1(out, xpad, wk, s, accumulate); break;
    case 2: fwd_ps2(out, xpad, wk, s, accumulate); break;
    case 16: fwd_ps16(out, xpad, wk, s, accumulate); break;
    case 32: fwd_ps32(out, xpad, wk, s, accumulate); break;
    case 64: fwd_ps64(out, xpad, wk, s, accumulate); break;
    default: break; /* excluded by cn_dconv_forward_ok */
    }
}

static inline __attribute__((always_inline)) void wg_tile(
    const float *x, size_t segstride, size_t nseg, size_t oh, size_t ow, size_t rowx,
    size_t pixx, const float *dy, size_t ldy, float *dw, size_t ldw, size_t dwseg, size_t np,
    const int P, const int R, const int NV) {
    __m512 acc[MAXACC][MAXNV];
#pragma GCC unroll 28
    for (int i = 0; i < R * P; i++)
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) acc[i][v] = _mm512_setzero_ps();
    /* kernel rows past nseg alias the first (their sums are dropped) */
    const size_t off1 = nseg > 1 ? segstride : 0, off2 = nseg > 2 ? 2 * segstride : 0;
    for (size_t oy = 0; oy < oh; oy++) {
        const float *xr = x + oy * rowx;
        const float *d = dy + oy * ow * ldy;
        for (size_t ox = 0; ox < ow; ox++, xr += pixx, d += ldy) {
            __m512 dv[MAXNV];
#pragma GCC unroll 4
            for (int v = 0; v < NV; v++) dv[v] = _mm512_loadu_ps(d + 16 * v);
#pragma GCC unroll 3
            for (int r = 0; r < R; r++) {
                const float *xp = xr + (r == 0 ? 0 : r == 1 ? off1 : off2);
#pragma GCC unroll 28
                for (int i = 0; i < P; i++) {
                    const __m512 a = _mm512_set1_ps(xp[i]);
#pragma GCC unroll 4
                    for (int v = 0; v < NV; v++)
                        acc[r * P + i][v] = _mm512_fmadd_ps(a, dv[v], acc[r * P + i][v]);
                }
            }
        }
    }
#pragma GCC unroll 3
    for (int r = 0; r < R; r++) {
        if ((size_t)r >= nseg) break;
        float *o = dw + r * dwseg;
#pragma GCC unroll 28
        for (int i = 0; i < P; i++) {
            if ((size_t)i >= np) break;
#pragma GCC unroll 4
            for (int v = 0; v < NV; v++)
                _mm512_storeu_ps(o + 16 * v,
                                 _mm512_add_ps(_mm512_loadu_ps(o + 16 * v), acc[r * P + i][v]));
            o += ldw;
        }
    }
}

static inline __attribute__((always_inline)) void wg_image(float *dwk, const float *xpad,
                                                           const float *dy,
                                                           const cn_dconv_shape *s, const int P,
                                                           const int R, const int NV) {
    const size_t c = (size_t)s->c, oc = (size_t)s->oc, seg = (size_t)s->kw * c;
    const size_t segstride = (size_t)s->wp * c, kh = (size_t)s->kh;
    for (size_t ky0 = 0; ky0 < kh; ky0 += R) {
        const size_t nseg = kh - ky0 < (size_t)R ? kh - ky0 : (size_t)R;
        for (size_t k0 = 0; k0 < seg; k0 += P) {
            const size_t np = seg - k0 < (size_t)P ? seg - k0 : (size_t)P;
            for (size_t oc0 = 0; oc0 < oc; oc0 += 16 * NV)
                wg_tile(xpad + ky0 * segstride + k0, segstride, nseg, (size_t)s->oh,
                        (size_t)s->ow, (size_t)s->sh * segstride, (size_t)s->sw * c, dy + oc0,
                        oc, dwk + (ky0 * seg + k0) * oc + oc0, oc, seg * oc, np, P, R, NV);
        }
    }
}

void f32_dconv_wgrad_image__avx512(float *dwk, const float *xpad, const float *dy,
                                   const cn_dconv_shape *s) {
    const int seg = s->kw * s->c;
    if (seg <= 4) wg_image(dwk, xpad, dy, s, 4, 3, 1); /* a one-channel input */
    else if (s->oc % 32) wg_image(dwk, xpad, dy, s, 24, 1, 1);
    else if (s->oc % 64) wg_image(dwk, xpad, dy, s, 12, 1, 2);
    else wg_image(dwk, xpad, dy, s, 6, 1, 4);
}
