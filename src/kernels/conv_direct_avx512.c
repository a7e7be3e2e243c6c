/* AVX-512 direct convolution kernels (see conv_direct.h).
 *
 * Forward tile: R output rows x P output pixels x NV*16 output channels, accumulated over
 * (ky, kx, c): per reduction step, NV weight vectors and R*P broadcast input values. The pixel
 * stride of the input (sw * c floats) is a compile-time constant for the common ones (1, 2, 6:
 * an RGB stem of stride 2, 16, 32, 64) so that the P broadcasts of a row use one base register with immediate offsets; other
 * strides (the irregular widths of pruned networks) take it at run time.
 *
 * Weight-gradient tile: R kernel rows x P consecutive (kx, c) values x NV*16 output channels,
 * accumulated over every output pixel of the image: per pixel, NV vectors of dY and R*P
 * broadcast input values. The tile is added to dW once per image.
 *
 * Output channels past a multiple of 16: the packed weights are zero there, the tile computes
 * whole vectors and masks the stores (forward) or the loads of dY (weight gradient). */
#include <immintrin.h>
#include <stddef.h>

#include "kernels/act_avx512.h"
#include "kernels/conv_direct.h"

void f32_dconv_forward_rows__avx512(float *out, const float *xpad, const float *wk,
                                    const cn_dconv_shape *s, int oy0, int oy1, int accumulate,
                                    const cn_gemm_affine *f);
void f32_dconv_wgrad_image__avx512(float *dwk, const float *xpad, const float *dy,
                                   const cn_dconv_shape *s);

enum { MAXACC = 28, MAXNV = 4 };

/* the lanes of vector v that hold one of the rem channels left from the tile's first */
static inline __mmask16 lane_mask(size_t rem, int v) {
    size_t lo = 16 * (size_t)v;
    if (rem >= lo + 16) return (__mmask16)0xffff;
    if (rem <= lo) return 0;
    return (__mmask16)((1u << (rem - lo)) - 1);
}

static inline __attribute__((always_inline)) void fwd_tile(
    const float *x0, const float *x1, size_t np, size_t nrow, size_t kh, size_t seg,
    size_t segstride, const float *restrict b, size_t ldb, float *o0, float *o1, size_t ldo,
    size_t rem, size_t psr, int accumulate, const cn_gemm_affine *f, const float *r0,
    const float *r1, const int P, const int R, const int NV, const int PS) {
    const size_t ps = PS ? (size_t)PS : psr;
    __m512 acc[MAXACC][MAXNV];
#pragma GCC unroll 28
    for (int i = 0; i < R * P; i++)
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) acc[i][v] = _mm512_setzero_ps();
    /* the tile's output for writing (prefetch_w16). Isolated, caches flushed, batch 1, 2
     * threads (3 runs each): EfficientNet's stem 0.17-0.23 -> 0.14-0.21 ms, ResNet's 7x7 stem
     * 0.76-0.90 -> 0.72-0.81 ms; ResNet-20 training within the noise */
    if (!accumulate) {
        prefetch_w16(o0, ldo, np, rem, P, NV);
        if (R > 1 && nrow > 1) prefetch_w16(o1, ldo, np, rem, P, NV);
    }
    for (size_t ky = 0; ky < kh; ky++) {
        const float *p0 = x0 + ky * segstride, *p1 = x1 + ky * segstride;
        for (size_t k = 0; k < seg; k++) {
            __m512 bv[MAXNV];
#pragma GCC unroll 4
            for (int v = 0; v < NV; v++) bv[v] = _mm512_loadu_ps(b + 16 * v);
            b += ldb;
#pragma GCC unroll 28
            for (int i = 0; i < P; i++) {
                const __m512 a = _mm512_set1_ps(p0[i * ps + k]);
#pragma GCC unroll 4
                for (int v = 0; v < NV; v++) acc[i][v] = _mm512_fmadd_ps(a, bv[v], acc[i][v]);
            }
            if (R > 1) {
#pragma GCC unroll 28
                for (int i = 0; i < P; i++) {
                    const __m512 a = _mm512_set1_ps(p1[i * ps + k]);
#pragma GCC unroll 4
                    for (int v = 0; v < NV; v++)
                        acc[P + i][v] = _mm512_fmadd_ps(a, bv[v], acc[P + i][v]);
                }
            }
        }
    }
    __mmask16 m[MAXNV];
    __m512 sc[MAXNV], sh[MAXNV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; v++) {
        m[v] = lane_mask(rem, v);
        sc[v] = f ? _mm512_maskz_loadu_ps(m[v], f->scale + 16 * v) : _mm512_setzero_ps();
        sh[v] = f ? _mm512_maskz_loadu_ps(m[v], f->shift + 16 * v) : _mm512_setzero_ps();
    }
#pragma GCC unroll 2
    for (int r = 0; r < R; r++) {
        if ((size_t)r >= nrow) break;
        float *o = r ? o1 : o0;
        const float *res = r ? r1 : r0;
#pragma GCC unroll 28
        for (int i = 0; i < P; i++) {
            if ((size_t)i >= np) break;
#pragma GCC unroll 4
            for (int v = 0; v < NV; v++) {
                __m512 t = acc[r * P + i][v];
                if (accumulate) t = _mm512_add_ps(_mm512_maskz_loadu_ps(m[v], o + 16 * v), t);
                if (f) t = affine16(t, sc[v], sh[v], res ? res + 16 * v : NULL, m[v], f->act);
                _mm512_mask_storeu_ps(o + 16 * v, m[v], t);
            }
            o += ldo;
            if (res) res += ldo;
        }
    }
}

/* output channels oc0.. in tiles of NV vectors while whole ones fit, then of one vector */
static inline __attribute__((always_inline)) void fwd_rows(float *out, const float *xpad,
                                                           const float *wk,
                                                           const cn_dconv_shape *s, size_t oy0,
                                                           size_t oy1, int accumulate,
                                                           const cn_gemm_affine *f,
                                                           const int P, const int R,
                                                           const int NV, const int PS) {
    const size_t c = (size_t)s->c, oc = (size_t)s->oc, ow = (size_t)s->ow;
    const size_t ldw = (size_t)cn_dconv_ldw(s->oc), ps = (size_t)s->sw * c;
    const size_t rowx = (size_t)s->sh * s->wp * c, seg = (size_t)s->kw * c;
    size_t oc0 = 0;
    for (; oc0 + 16 * NV <= ldw; oc0 += 16 * NV)
        for (size_t oy = oy0; oy < oy1; oy += R) {
            const size_t nrow = oy1 - oy < (size_t)R ? oy1 - oy : (size_t)R;
            for (size_t ox = 0; ox < ow; ox += P) {
                const size_t np = ow - ox < (size_t)P ? ow - ox : (size_t)P;
                const float *x0 = xpad + oy * rowx + ox * ps;
                const float *x1 = nrow > 1 ? x0 + rowx : x0;
                float *o0 = out + (oy * ow + ox) * oc + oc0;
                const cn_gemm_affine g =
                    f ? cn_dconv_affine_at(f, oy * ow + ox, oc, oc0) : (cn_gemm_affine){0};
                fwd_tile(x0, x1, np, nrow, (size_t)s->kh, seg, (size_t)s->wp * c, wk + oc0,
                         ldw, o0, o0 + ow * oc, oc, oc - oc0, ps, accumulate, f ? &g : NULL,
                         g.res, g.res ? g.res + ow * oc : NULL, P, R, NV, PS);
            }
        }
    if (NV > 1)
        for (; oc0 < ldw; oc0 += 16)
            for (size_t oy = oy0; oy < oy1; oy += R) {
                const size_t nrow = oy1 - oy < (size_t)R ? oy1 - oy : (size_t)R;
                for (size_t ox = 0; ox < ow; ox += P) {
                    const size_t np = ow - ox < (size_t)P ? ow - ox : (size_t)P;
                    const float *x0 = xpad + oy * rowx + ox * ps;
                    const float *x1 = nrow > 1 ? x0 + rowx : x0;
                    float *o0 = out + (oy * ow + ox) * oc + oc0;
                    const cn_gemm_affine g =
                        f ? cn_dconv_affine_at(f, oy * ow + ox, oc, oc0) : (cn_gemm_affine){0};
                    fwd_tile(x0, x1, np, nrow, (size_t)s->kh, seg, (size_t)s->wp * c, wk + oc0,
                             ldw, o0, o0 + ow * oc, oc, oc - oc0, ps, accumulate, f ? &g : NULL,
                             g.res, g.res ? g.res + ow * oc : NULL, P, R, 1, PS);
                }
            }
}

/* (P, R, NV): two rows of 7 pixels x 32 channels for the 7-pixel-wide maps of the last ResNet
 * stage (then one vector for an odd one out), otherwise 28 accumulators at 16 channels (or an odd
 * number of vectors), 14 pixels x 32 channels */
#define FWD_TILES(F, PS)                                                                       \
    do {                                                                                       \
        if (s->ow <= 7)                                                                        \
            fwd_rows(out, xpad, wk, s, oy0, oy1, accumulate, F, 7, 2, 2, PS);                  \
        else if (cn_dconv_ldw(s->oc) % 32)                                                     \
            fwd_rows(out, xpad, wk, s, oy0, oy1, accumulate, F, 14, 2, 1, PS);                 \
        else                                                                                   \
            fwd_rows(out, xpad, wk, s, oy0, oy1, accumulate, F, 14, 1, 2, PS);                 \
    } while (0)
/* without an epilogue, a copy compiled with f a constant NULL: the epilogue's operands held
 * across the tile loop had cost the plain kernel 8 % (the 7x7 stem at batch 16) */
#define FWD_VARIANTS(NAME, PS)                                                                 \
    static void NAME(float *out, const float *xpad, const float *wk, const cn_dconv_shape *s,  \
                     size_t oy0, size_t oy1, int accumulate, const cn_gemm_affine *f) {        \
        if (f) FWD_TILES(f, PS);                                                               \
        else FWD_TILES(NULL, PS);                                                              \
    }
FWD_VARIANTS(fwd_ps1, 1)
FWD_VARIANTS(fwd_ps2, 2)
FWD_VARIANTS(fwd_ps6, 6)
FWD_VARIANTS(fwd_ps16, 16)
FWD_VARIANTS(fwd_ps32, 32)
FWD_VARIANTS(fwd_ps64, 64)
FWD_VARIANTS(fwd_psany, 0)

void f32_dconv_forward_rows__avx512(float *out, const float *xpad, const float *wk,
                                    const cn_dconv_shape *s, int oy0, int oy1, int accumulate,
                                    const cn_gemm_affine *f) {
    const size_t a = (size_t)oy0, b = (size_t)oy1;
    switch (s->sw * s->c) {
    case 1: fwd_ps1(out, xpad, wk, s, a, b, accumulate, f); break;
    case 2: fwd_ps2(out, xpad, wk, s, a, b, accumulate, f); break;
    case 6: fwd_ps6(out, xpad, wk, s, a, b, accumulate, f); break;
    case 16: fwd_ps16(out, xpad, wk, s, a, b, accumulate, f); break;
    case 32: fwd_ps32(out, xpad, wk, s, a, b, accumulate, f); break;
    case 64: fwd_ps64(out, xpad, wk, s, a, b, accumulate, f); break;
    default: fwd_psany(out, xpad, wk, s, a, b, accumulate, f); break;
    }
}

static inline __attribute__((always_inline)) void wg_tile(
    const float *x, size_t segstride, size_t nseg, size_t oh, size_t ow, size_t rowx,
    size_t pixx, const float *dy, size_t ldy, size_t rem, float *dw, size_t ldw, size_t dwseg,
    size_t np, const int P, const int R, const int NV) {
    __m512 acc[MAXACC][MAXNV];
    __mmask16 m[MAXNV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; v++) m[v] = lane_mask(rem, v);
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
            for (int v = 0; v < NV; v++) dv[v] = _mm512_maskz_loadu_ps(m[v], d + 16 * v);
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
    const size_t ldw = (size_t)cn_dconv_ldw(s->oc);
    const size_t segstride = (size_t)s->wp * c, kh = (size_t)s->kh;
    for (size_t ky0 = 0; ky0 < kh; ky0 += R) {
        const size_t nseg = kh - ky0 < (size_t)R ? kh - ky0 : (size_t)R;
        for (size_t k0 = 0; k0 < seg; k0 += P) {
            const size_t np = seg - k0 < (size_t)P ? seg - k0 : (size_t)P;
            for (size_t o = 0; o < ldw; o += 16 * NV)
                wg_tile(xpad + ky0 * segstride + k0, segstride, nseg, (size_t)s->oh,
                        (size_t)s->ow, (size_t)s->sh * segstride, (size_t)s->sw * c, dy + o, oc,
                        oc - o, dwk + (ky0 * seg + k0) * ldw + o, ldw, seg * ldw, np, P, R, NV);
        }
    }
}

/* NV divides the padded channel count */
void f32_dconv_wgrad_image__avx512(float *dwk, const float *xpad, const float *dy,
                                   const cn_dconv_shape *s) {
    const int seg = s->kw * s->c, ldw = cn_dconv_ldw(s->oc);
    if (seg <= 4) wg_image(dwk, xpad, dy, s, 4, 3, 1); /* a one-channel input */
    else if (ldw % 32) wg_image(dwk, xpad, dy, s, 24, 1, 1);
    else if (ldw % 64) wg_image(dwk, xpad, dy, s, 12, 1, 2);
    else wg_image(dwk, xpad, dy, s, 6, 1, 4);
}
