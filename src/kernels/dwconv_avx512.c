/* AVX-512 depthwise convolution, forward (see dwconv.h). */
#include <limits.h>
#include <string.h>

#include "kernels/act_avx512.h"
#include "kernels/dwconv.h"
#include "ops/ops.h"

int cn_dw_fast_shape(int k, int s) { return (k == 3 || k == 5) && (s == 1 || s == 2); }

/* pixels of a padded row: the left padding, the row, and zeros on the right as far as the last
 * output pixel's taps reach */
static int padded_width(const cn_dw_job *j) {
    int wp = (j->ow - 1) * j->s + j->k;
    return wp > j->pw + j->w ? wp : j->pw + j->w;
}

size_t cn_dw_ring_floats(const cn_dw_job *j, int blocks) {
    /* the K slots and the zero row, then 16 doubles per block for the pool */
    return ((size_t)j->k * (size_t)blocks + 1) * (size_t)padded_width(j) * 16 + (size_t)blocks * 32;
}

/* channel blocks [b0, b1) of input row iy of image img into the ring slot dst (blocks of
 * row_floats), after pw zero pixels (the zeros on both sides were written when the ring was
 * cleared); the input row is read in order, a pixel's blocks one after the other */
CN_INLINE void pack_row(float *dst, size_t row_floats, const cn_dw_job *j, int img, int iy,
                        int b0, int b1) {
    const float *src = j->in + (((size_t)img * j->h + iy) * j->w) * j->c;
    dst += (size_t)j->pw * 16;
    const int full = j->c / 16 < b1 ? j->c / 16 : b1; /* blocks [b0, full) have 16 channels */
    for (int x = 0; x < j->w; x++, src += j->c) {
        float *d = dst + (size_t)x * 16;
        int b = b0;
        for (; b < full; b++) _mm512_store_ps(d + (size_t)(b - b0) * row_floats, _mm512_loadu_ps(src + b * 16));
        if (b < b1) {
            const __mmask16 m = (__mmask16)((1u << (j->c - 16 * b)) - 1);
            _mm512_store_ps(d + (size_t)(b - b0) * row_floats, _mm512_maskz_loadu_ps(m, src + b * 16));
        }
    }
}

/* bias + conv, then the epilogue, stored to the 16 (masked) channels at o; returns the value
 * stored */
CN_INLINE __m512 finish(float *o, __m512 v, const cn_dw_job *j, __m512 sc, __m512 sh,
                        const float *r, __mmask16 m) {
    if (j->scale) {
        v = _mm512_fmadd_ps(v, sc, sh);
        if (r) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, r));
    }
    switch (j->act) {
    case CN_ACT_RELU: v = _mm512_max_ps(v, _mm512_setzero_ps()); break;
    case CN_ACT_SILU: v = silu16(v); break;
    case CN_ACT_SIGMOID: v = sigmoid16(v); break;
    default: break;
    }
    _mm512_mask_storeu_ps(o, m, v);
    return v;
}

/* NB output pixels from ox at once: the sum over the K*K taps, each an aligned load of the ring
 * at a constant offset times a weight register. NB is 7 on rows whose width is a multiple of 7
 * (EfficientNet's 112, 56, 28, 14 and 7: no pixel left over, and for 5x5 seven accumulator chains
 * instead of four, which lets the epilogue's SiLU of a group overlap the next group's FMAs: 5x5
 * with SiLU at 28x28x240, 14x14x672, 7x7x1152 124 -> 96-98, 91 -> 72-73, 50 -> 39-40 us on one
 * thread; 3x3 at 7x7x1152 24 -> 22 us), otherwise 8 for 3x3 (25 registers with the weights) and
 * 4 for 5x5 (29). */

/* The output's lines of row oy, channels [c0, c0 + 16), fetched for writing (prefetch_w16),
 * a row ahead, at stride 1. Isolated, 2 threads, batch 1, SiLU and pool, the input just written
 * and the output cold (two runs each): 14x14x480 3x3 62-85 -> 52-73 us, 14x14x672 5x5 101-105 ->
 * 86, 28x28x240 5x5 194-211 -> 181, 7x7x1152 5x5 54-83 -> 49-80 (with everything in cache
 * 0-5 us slower); stride 2 (a quarter of the output a row of input) was slower, 85-95 -> 94-101
 * at 28x28x240. EfficientNet-B0 batch 1: ~2 % faster (7 of 10 alternated pairs 1-5 %). */
CN_INLINE void prefetch_out_row(const cn_dw_job *j, int img, int oy, int c0) {
    prefetch_w16(j->out + (((size_t)img * j->oh + oy) * j->ow) * j->c + c0, (size_t)j->c,
                 (size_t)j->ow, 16, j->ow, 1);
}

/* output row oy of image img, channels [c0, c0 + 16), from the K padded input rows; with a
 * pool, adds the row's sum (in float, pixels in order, then in double) to sum[0..16) */
CN_INLINE void row_ks(const cn_dw_job *j, int img, int oy, int c0, const float *const *rows,
                      double *sum, const int K, const int S, const int NB) {
    const int C = j->c;
    const __mmask16 m = C - c0 >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (C - c0)) - 1);
    __m512 w[25];
#pragma GCC unroll 25
    for (int t = 0; t < K * K; t++) w[t] = _mm512_maskz_loadu_ps(m, j->wr + (size_t)t * C + c0);
    const __m512 b = j->bias ? _mm512_maskz_loadu_ps(m, j->bias + c0) : _mm512_setzero_ps();
    const __m512 sc = j->scale ? _mm512_maskz_loadu_ps(m, j->scale + c0) : _mm512_setzero_ps();
    const __m512 sh = j->scale ? _mm512_maskz_loadu_ps(m, j->shift + c0) : _mm512_setzero_ps();
    const size_t at = (((size_t)img * j->oh + oy) * j->ow) * C + c0;
    float *orow = j->out + at;
    const float *rrow = j->res ? j->res + at : NULL;
    const int scaled = j->scale != NULL, act = j->act;
    /* this block's pixels of the next output row, for writing (see prefetch_out_row) */
    if (S == 1 && oy + 1 < j->oh) prefetch_out_row(j, img, oy + 1, c0);
    __m512 rs = _mm512_setzero_ps();
    int ox = 0;
    for (; ox + NB <= j->ow; ox += NB) {
        __m512 acc[8]; /* a fixed size: NB, a parameter, would make it a variable-length
                        * array on the stack, its registers spilled at every group */
#pragma GCC unroll 8
        for (int p = 0; p < NB; p++) acc[p] = b;
#pragma GCC unroll 5
        for (int ky = 0; ky < K; ky++) {
            const float *rp = rows[ky] + (size_t)ox * S * 16;
#pragma GCC unroll 5
            for (int kx = 0; kx < K; kx++)
#pragma GCC unroll 8
                for (int p = 0; p < NB; p++)
                    acc[p] = _mm512_fmadd_ps(_mm512_load_ps(rp + (p * S + kx) * 16),
                                             w[ky * K + kx], acc[p]);
        }
        /* the epilogue of finish(), one step at a time over the group (the choices made once
         * a group, not once a pixel, and the group's activations independent of each other) */
        if (scaled) {
#pragma GCC unroll 8
            for (int p = 0; p < NB; p++) acc[p] = _mm512_fmadd_ps(acc[p], sc, sh);
            if (rrow) {
#pragma GCC unroll 8
                for (int p = 0; p < NB; p++)
                    acc[p] = _mm512_add_ps(acc[p],
                                           _mm512_maskz_loadu_ps(m, rrow + (size_t)(ox + p) * C));
            }
        }
        switch (act) {
        case CN_ACT_RELU:
#pragma GCC unroll 8
            for (int p = 0; p < NB; p++) acc[p] = _mm512_max_ps(acc[p], _mm512_setzero_ps());
            break;
        case CN_ACT_SILU:
#pragma GCC unroll 8
            for (int p = 0; p < NB; p++) acc[p] = silu16(acc[p]);
            break;
        case CN_ACT_SIGMOID:
#pragma GCC unroll 8
            for (int p = 0; p < NB; p++) acc[p] = sigmoid16(acc[p]);
            break;
        default: break;
        }
#pragma GCC unroll 8
        for (int p = 0; p < NB; p++) _mm512_mask_storeu_ps(orow + (size_t)(ox + p) * C, m, acc[p]);
        if (sum) {
#pragma GCC unroll 8
            for (int p = 0; p < NB; p++) rs = _mm512_add_ps(rs, acc[p]);
        }
    }
    for (; ox < j->ow; ox++) {
        __m512 acc = b;
#pragma GCC unroll 5
        for (int ky = 0; ky < K; ky++) {
            const float *rp = rows[ky] + (size_t)ox * S * 16;
#pragma GCC unroll 5
            for (int kx = 0; kx < K; kx++)
                acc = _mm512_fmadd_ps(_mm512_load_ps(rp + kx * 16), w[ky * K + kx], acc);
        }
        const __m512 v =
            finish(orow + (size_t)ox * C, acc, j, sc, sh, rrow ? rrow + (size_t)ox * C : NULL, m);
        if (sum) rs = _mm512_add_ps(rs, v);
    }
    if (sum) {
        _mm512_storeu_pd(sum, _mm512_add_pd(_mm512_loadu_pd(sum),
                                            _mm512_cvtps_pd(_mm512_castps512_ps256(rs))));
        _mm512_storeu_pd(sum + 8, _mm512_add_pd(_mm512_loadu_pd(sum + 8),
                                                _mm512_cvtps_pd(_mm256_castpd_ps(
                                                    _mm512_extractf64x4_pd(_mm512_castps_pd(rs), 1)))));
    }
}

/* The ring: K slots, each the padded row of every block of the group (block-major), then one
 * zero row. An input row is packed once per task, when the first output row needs it. */
CN_INLINE void task_ks(const cn_dw_job *j, int img, int b0, int b1, int oy0, int oy1,
                       float *ring, const int K, const int S, const int NB) {
    const size_t row_floats = (size_t)padded_width(j) * 16;
    const size_t slot_floats = row_floats * (size_t)(b1 - b0);
    memset(ring, 0, sizeof(float) * (slot_floats * (size_t)K + row_floats));
    const float *zero = ring + (size_t)K * slot_floats;
    /* the pool's sums, 16 doubles per block, after the zero row */
    double *sums = j->pool || j->pool_sums
                       ? (double *)(ring + (size_t)K * slot_floats + row_floats) : NULL;
    if (sums) memset(sums, 0, sizeof(double) * 16 * (size_t)(b1 - b0));
    int tag[5];
    for (int i = 0; i < K; i++) tag[i] = INT_MIN;
    for (int b = b0; S == 1 && b < b1; b++) prefetch_out_row(j, img, oy0, 16 * b);
    for (int oy = oy0; oy < oy1; oy++) {
        const float *rows[5];
        size_t step[5]; /* floats from one block's row to the next: 0 for the zero row */
        for (int ky = 0; ky < K; ky++) {
            const int iy = oy * S - j->ph + ky;
            if (iy < 0 || iy >= j->h) {
                rows[ky] = zero;
                step[ky] = 0;
                continue;
            }
            const int slot = iy % K;
            float *dst = ring + (size_t)slot * slot_floats;
            if (tag[slot] != iy) {
                pack_row(dst, row_floats, j, img, iy, b0, b1);
                tag[slot] = iy;
            }
            rows[ky] = dst;
            step[ky] = row_floats;
        }
        for (int b = b0; b < b1; b++) {
            const float *r[5];
            for (int ky = 0; ky < K; ky++) r[ky] = rows[ky] + (size_t)(b - b0) * step[ky];
            row_ks(j, img, oy, 16 * b, r, sums ? sums + (size_t)(b - b0) * 16 : NULL, K, S, NB);
        }
    }
    if (sums && j->pool_sums) {
        for (int b = b0; b < b1; b++)
            for (int l = 0; l < 16 && 16 * b + l < j->c; l++)
                j->pool_sums[16 * b + l] = sums[(b - b0) * 16 + l];
    } else if (sums) {
        const double hw = (double)j->oh * j->ow;
        for (int b = b0; b < b1; b++)
            for (int l = 0; l < 16 && 16 * b + l < j->c; l++)
                j->pool[(size_t)img * j->c + 16 * b + l] = (float)(sums[(b - b0) * 16 + l] / hw);
    }
}

void cn_dw_task__avx512(const cn_dw_job *j, int img, int b0, int b1, int oy0, int oy1,
                        float *ring) {
    const int by7 = j->ow % 7 == 0;
    switch (j->k * 100 + j->s * 10 + by7) {
    case 310: task_ks(j, img, b0, b1, oy0, oy1, ring, 3, 1, 8); break;
    case 311: task_ks(j, img, b0, b1, oy0, oy1, ring, 3, 1, 7); break;
    case 320: task_ks(j, img, b0, b1, oy0, oy1, ring, 3, 2, 8); break;
    case 321: task_ks(j, img, b0, b1, oy0, oy1, ring, 3, 2, 7); break;
    case 510: task_ks(j, img, b0, b1, oy0, oy1, ring, 5, 1, 4); break;
    case 511: task_ks(j, img, b0, b1, oy0, oy1, ring, 5, 1, 7); break;
    case 520: task_ks(j, img, b0, b1, oy0, oy1, ring, 5, 2, 4); break;
    case 521: task_ks(j, img, b0, b1, oy0, oy1, ring, 5, 2, 7); break;
    default: break;
    }
}
