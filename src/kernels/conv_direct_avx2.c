/* AVX2 + FMA direct convolution kernels (see conv_direct.h), for CPUs without AVX-512.
 *
 * Sixteen ymm registers hold twelve accumulators, the two weight (or dY) vectors of one
 * reduction step and one broadcast value: every tile is 6 x 16 channels (two vectors of 8).
 *
 * Forward tile: 6 consecutive output pixels in raster order (a tile may run from the end of one
 * output row into the next, so that maps whose width is no multiple of 6, such as ResNet-20's 7
 * and 14, waste no lanes; each pixel has its own input pointer) x 16 output channels, accumulated
 * over (ky, kx, c) in the same order as the AVX-512 kernel: one chain of KH*KW*C products per
 * output value.
 *
 * Weight-gradient tile: R kernel rows x P consecutive (kx, c) values x 16 output channels
 * (R * P = 6), accumulated over every output pixel of the image: per pixel, two vectors of dY and
 * R*P broadcast input values. The tile is added to dW once per image.
 *
 * Output channels past a multiple of 16: the packed weights are zero there, the tile computes
 * whole vectors and masks the stores (forward) or the loads of dY (weight gradient). */
#include <immintrin.h>
#include <stddef.h>

#include "kernels/act_avx2.h"
#include "kernels/conv_direct.h"

void f32_dconv_forward_rows__avx2(float *out, const float *xpad, const float *wk,
                                  const cn_dconv_shape *s, int oy0, int oy1, int accumulate,
                                  const cn_gemm_affine *f);
void f32_dconv_wgrad_image__avx2(float *dwk, const float *xpad, const float *dy,
                                 const cn_dconv_shape *s);

enum { NV = 2, MT = 6 }; /* vectors of 8 channels per tile, accumulators per vector */

/* lanes of vector v that hold one of the rem channels left from the tile's first */
static inline __m256i lane_mask(size_t rem, int v) {
    const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    long left = (long)rem - 8L * v;
    if (left > 8) left = 8;
    if (left < 0) left = 0;
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)left), lanes);
}

/* acc over ky < kh, k < seg of xs[i][ky * segstride + k] * b[(ky * seg + k) * ldb ..] for the
 * M pixels; stores the first np of them at o + i * ldo (masked to rem channels when MASK) */
static inline __attribute__((always_inline)) void fwd_tile(
    const float *const *xs, size_t np, size_t kh, size_t seg, size_t segstride,
    const float *restrict b, size_t ldb, float *o, size_t ldo, size_t rem, int accumulate,
    const cn_gemm_affine *f, const int M, const int MASK) {
    __m256 acc[MT][NV];
    const float *p[MT];
#pragma GCC unroll 6
    for (int i = 0; i < M; i++) {
        p[i] = xs[i];
#pragma GCC unroll 2
        for (int v = 0; v < NV; v++) acc[i][v] = _mm256_setzero_ps();
    }
    for (size_t ky = 0; ky < kh; ky++) {
        for (size_t k = 0; k < seg; k++) {
            const __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8);
            b += ldb;
#pragma GCC unroll 6
            for (int i = 0; i < M; i++) {
                const __m256 a = _mm256_broadcast_ss(p[i] + k);
                acc[i][0] = _mm256_fmadd_ps(a, b0, acc[i][0]);
                acc[i][1] = _mm256_fmadd_ps(a, b1, acc[i][1]);
            }
        }
#pragma GCC unroll 6
        for (int i = 0; i < M; i++) p[i] += segstride;
    }
    const float *res = f ? f->res : NULL;
    if (MASK) {
        const __m256i m0 = lane_mask(rem, 0), m1 = lane_mask(rem, 1);
        __m256 s0 = _mm256_setzero_ps(), s1 = s0, h0 = s0, h1 = s0;
        if (f) {
            s0 = _mm256_maskload_ps(f->scale, m0), s1 = _mm256_maskload_ps(f->scale + 8, m1);
            h0 = _mm256_maskload_ps(f->shift, m0), h1 = _mm256_maskload_ps(f->shift + 8, m1);
        }
#pragma GCC unroll 6
        for (int i = 0; i < M; i++) {
            if ((size_t)i >= np) break;
            __m256 t0 = acc[i][0], t1 = acc[i][1];
            if (accumulate) {
                t0 = _mm256_add_ps(_mm256_maskload_ps(o, m0), t0);
                t1 = _mm256_add_ps(_mm256_maskload_ps(o + 8, m1), t1);
            }
            if (f) {
                t0 = affine8(t0, s0, h0, res, 0, m0, f->act);
                t1 = affine8(t1, s1, h1, res ? res + 8 : NULL, 0, m1, f->act);
                if (res) res += ldo;
            }
            _mm256_maskstore_ps(o, m0, t0);
            _mm256_maskstore_ps(o + 8, m1, t1);
            o += ldo;
        }
    } else {
        __m256 s0 = _mm256_setzero_ps(), s1 = s0, h0 = s0, h1 = s0;
        if (f) {
            s0 = _mm256_loadu_ps(f->scale), s1 = _mm256_loadu_ps(f->scale + 8);
            h0 = _mm256_loadu_ps(f->shift), h1 = _mm256_loadu_ps(f->shift + 8);
        }
        const __m256i all = _mm256_set1_epi32(-1);
#pragma GCC unroll 6
        for (int i = 0; i < M; i++) {
            if ((size_t)i >= np) break;
            __m256 t0 = acc[i][0], t1 = acc[i][1];
            if (accumulate) {
                t0 = _mm256_add_ps(_mm256_loadu_ps(o), t0);
                t1 = _mm256_add_ps(_mm256_loadu_ps(o + 8), t1);
            }
            if (f) {
                t0 = affine8(t0, s0, h0, res, 1, all, f->act);
                t1 = affine8(t1, s1, h1, res ? res + 8 : NULL, 1, all, f->act);
                if (res) res += ldo;
            }
            _mm256_storeu_ps(o, t0);
            _mm256_storeu_ps(o + 8, t1);
            o += ldo;
        }
    }
}

/* the pixels oy0 * ow .. oy1 * ow - 1 of the output in tiles of MT, for each 16 channels */
static inline __attribute__((always_inline)) void fwd_rows(float *out, const float *xpad,
                                                           const float *wk,
                                                           const cn_dconv_shape *s,
                     size_t oy0, size_t oy1, int accumulate, const cn_gemm_affine *f,
                     const int MASK, size_t oc0, size_t oc1) {
    const size_t c = (size_t)s->c, oc = (size_t)s->oc, ow = (size_t)s->ow;
    const size_t ldw = (size_t)cn_dconv_ldw(s->oc), ps = (size_t)s->sw * c;
    const size_t rowx = (size_t)s->sh * s->wp * c, seg = (size_t)s->kw * c;
    const size_t segstride = (size_t)s->wp * c, kh = (size_t)s->kh;
    const size_t m1 = oy1 * ow;
    for (; oc0 < oc1; oc0 += 8 * NV) {
        size_t oy = oy0, ox = 0;
        for (size_t m = oy0 * ow; m < m1; m += MT) {
            const size_t np = m1 - m < (size_t)MT ? m1 - m : (size_t)MT;
            const float *xs[MT];
            /* the pixels past np read the first one's input (their sums are dropped) */
            for (size_t i = 0; i < (size_t)MT; i++) {
                if (i < np) {
                    xs[i] = xpad + oy * rowx + ox * ps;
                    if (++ox == ow) ox = 0, oy++;
                } else {
                    xs[i] = xs[0];
                }
            }
            float *o = out + m * oc + oc0;
            const cn_gemm_affine g = f ? cn_dconv_affine_at(f, m, oc, oc0) : (cn_gemm_affine){0};
            if (MASK)
                fwd_tile(xs, np, kh, seg, segstride, wk + oc0, ldw, o, oc, oc - oc0, accumulate,
                         f ? &g : NULL, MT, 1);
            else
                fwd_tile(xs, np, kh, seg, segstride, wk + oc0, ldw, o, oc, oc - oc0, accumulate,
                         f ? &g : NULL, MT, 0);
        }
    }
}

void f32_dconv_forward_rows__avx2(float *out, const float *xpad, const float *wk,
                                  const cn_dconv_shape *s, int oy0, int oy1, int accumulate,
                                  const cn_gemm_affine *f) {
    const size_t oc = (size_t)s->oc, ldw = (size_t)cn_dconv_ldw(s->oc);
    const size_t whole = oc / 16 * 16; /* channels in unmasked blocks */
    if (oy1 <= oy0) return;
    const size_t a = (size_t)oy0, b = (size_t)oy1;
    /* without an epilogue, copies compiled with f a constant NULL (as the AVX-512 file does) */
    if (f) {
        if (whole) fwd_rows(out, xpad, wk, s, a, b, accumulate, f, 0, 0, whole);
        if (whole < ldw) fwd_rows(out, xpad, wk, s, a, b, accumulate, f, 1, whole, ldw);
    } else {
        if (whole) fwd_rows(out, xpad, wk, s, a, b, accumulate, NULL, 0, 0, whole);
        if (whole < ldw) fwd_rows(out, xpad, wk, s, a, b, accumulate, NULL, 1, whole, ldw);
    }
}

/* dw[r * dwseg + i * ldw + 0..15] += sum over the pixels of x[r * segstride + i] * dy[0..15]
 * for r < nseg, i < np (R kernel rows, P values of each) */
static inline __attribute__((always_inline)) void wg_tile(
    const float *x, size_t segstride, size_t nseg, size_t oh, size_t ow, size_t rowx,
    size_t pixx, const float *dy, size_t ldy, size_t rem, float *dw, size_t ldw, size_t dwseg,
    size_t np, const int P, const int R, const int MASK) {
    __m256 acc[MT][NV];
    const __m256i m0 = lane_mask(rem, 0), m1 = lane_mask(rem, 1);
#pragma GCC unroll 6
    for (int i = 0; i < R * P; i++)
#pragma GCC unroll 2
        for (int v = 0; v < NV; v++) acc[i][v] = _mm256_setzero_ps();
    /* kernel rows past nseg alias the first (their sums are dropped) */
    const size_t off1 = nseg > 1 ? segstride : 0, off2 = nseg > 2 ? 2 * segstride : 0;
    for (size_t oy = 0; oy < oh; oy++) {
        const float *xr = x + oy * rowx;
        const float *d = dy + oy * ow * ldy;
        for (size_t ox = 0; ox < ow; ox++, xr += pixx, d += ldy) {
            __m256 d0, d1;
            if (MASK) {
                d0 = _mm256_maskload_ps(d, m0);
                d1 = _mm256_maskload_ps(d + 8, m1);
            } else {
                d0 = _mm256_loadu_ps(d);
                d1 = _mm256_loadu_ps(d + 8);
            }
#pragma GCC unroll 3
            for (int r = 0; r < R; r++) {
                const float *xp = xr + (r == 0 ? 0 : r == 1 ? off1 : off2);
#pragma GCC unroll 6
                for (int i = 0; i < P; i++) {
                    const __m256 a = _mm256_broadcast_ss(xp + i);
                    acc[r * P + i][0] = _mm256_fmadd_ps(a, d0, acc[r * P + i][0]);
                    acc[r * P + i][1] = _mm256_fmadd_ps(a, d1, acc[r * P + i][1]);
                }
            }
        }
    }
#pragma GCC unroll 3
    for (int r = 0; r < R; r++) {
        if ((size_t)r >= nseg) break;
        float *o = dw + r * dwseg;
#pragma GCC unroll 6
        for (int i = 0; i < P; i++) {
            if ((size_t)i >= np) break;
#pragma GCC unroll 2
            for (int v = 0; v < NV; v++)
                _mm256_storeu_ps(o + 8 * v,
                                 _mm256_add_ps(_mm256_loadu_ps(o + 8 * v), acc[r * P + i][v]));
            o += ldw;
        }
    }
}

static inline __attribute__((always_inline)) void wg_image(float *dwk, const float *xpad,
                                                           const float *dy,
                                                           const cn_dconv_shape *s, const int P,
                                                           const int R) {
    const size_t c = (size_t)s->c, oc = (size_t)s->oc, seg = (size_t)s->kw * c;
    const size_t ldw = (size_t)cn_dconv_ldw(s->oc), whole = oc / 16 * 16;
    const size_t segstride = (size_t)s->wp * c, kh = (size_t)s->kh;
    for (size_t ky0 = 0; ky0 < kh; ky0 += R) {
        const size_t nseg = kh - ky0 < (size_t)R ? kh - ky0 : (size_t)R;
        for (size_t k0 = 0; k0 < seg; k0 += P) {
            const size_t np = seg - k0 < (size_t)P ? seg - k0 : (size_t)P;
            for (size_t o = 0; o < ldw; o += 16) {
                const float *x = xpad + ky0 * segstride + k0;
                float *w = dwk + (ky0 * seg + k0) * ldw + o;
                if (o < whole)
                    wg_tile(x, segstride, nseg, (size_t)s->oh, (size_t)s->ow,
                            (size_t)s->sh * segstride, (size_t)s->sw * c, dy + o, oc, oc - o, w,
                            ldw, seg * ldw, np, P, R, 0);
                else
                    wg_tile(x, segstride, nseg, (size_t)s->oh, (size_t)s->ow,
                            (size_t)s->sh * segstride, (size_t)s->sw * c, dy + o, oc, oc - o, w,
                            ldw, seg * ldw, np, P, R, 1);
            }
        }
    }
}

void f32_dconv_wgrad_image__avx2(float *dwk, const float *xpad, const float *dy,
                                 const cn_dconv_shape *s) {
    const int seg = s->kw * s->c;
    if (seg <= 4) wg_image(dwk, xpad, dy, s, 2, 3); /* a one-channel input */
    else wg_image(dwk, xpad, dy, s, 6, 1);
}
