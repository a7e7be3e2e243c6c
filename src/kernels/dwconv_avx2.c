/* AVX2+FMA depthwise convolution, forward (see dwconv.h), for CPUs with AVX2 and FMA but not
 * AVX-512: the contract, the tasks and the ring of cn_dw_task__avx512 (16-channel blocks, 16
 * floats per padded pixel, the same ring size), with each block done as two halves of 8 channels
 * (one ymm), one after the other along an output row, so that the K*K weight vectors of a half
 * fit the 16 ymm registers for 3x3 (9 weights and 6 accumulators). Every output value is summed
 * in the order of the AVX-512 kernel (the bias, then the taps row by row, fused multiply-adds),
 * and the epilogue and the pool's sums (in float along the row, pixels in order, then in double)
 * follow it too; only the activations' last bits may differ (act_avx2.h). */
#include <limits.h>
#include <string.h>

#include "kernels/act_avx2.h"
#include "kernels/dwconv.h"
#include "ops/ops.h"

/* pixels of a padded row: the left padding, the row, and zeros on the right as far as the last
 * output pixel's taps reach (as dwconv_avx512.c) */
static int padded_width(const cn_dw_job *j) {
    int wp = (j->ow - 1) * j->s + j->k;
    return wp > j->pw + j->w ? wp : j->pw + j->w;
}

int cn_dw_fast_shape__avx2(int k, int s) { return (k == 3 || k == 5) && (s == 1 || s == 2); }

size_t cn_dw_ring_floats__avx2(const cn_dw_job *j, int blocks) {
    /* the K slots and the zero row, then 16 doubles per block for the pool */
    return ((size_t)j->k * (size_t)blocks + 1) * (size_t)padded_width(j) * 16 + (size_t)blocks * 32;
}

/* the first n lanes (n in [0, 8]) */
CN_INLINE __m256i lanes(int n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* channel blocks [b0, b1) of input row iy of image img into the ring slot dst (blocks of
 * row_floats), after pw zero pixels (the zeros on both sides were written when the ring was
 * cleared); the input row is read in order, a pixel's blocks one after the other */
CN_INLINE void pack_row(float *dst, size_t row_floats, const cn_dw_job *j, int img, int iy,
                        int b0, int b1) {
    const float *src = j->in + (((size_t)img * j->h + iy) * j->w) * j->c;
    dst += (size_t)j->pw * 16;
    const int full = j->c / 16 < b1 ? j->c / 16 : b1; /* blocks [b0, full) have 16 channels */
    const int rest = j->c - 16 * full;                /* channels of block full, if < b1 */
    const __m256i m0 = lanes(rest < 8 ? rest : 8), m1 = lanes(rest > 8 ? rest - 8 : 0);
    for (int x = 0; x < j->w; x++, src += j->c) {
        float *d = dst + (size_t)x * 16;
        int b = b0;
        for (; b < full; b++) {
            float *o = d + (size_t)(b - b0) * row_floats;
            _mm256_store_ps(o, _mm256_loadu_ps(src + b * 16));
            _mm256_store_ps(o + 8, _mm256_loadu_ps(src + b * 16 + 8));
        }
        if (b < b1) {
            float *o = d + (size_t)(b - b0) * row_floats;
            _mm256_store_ps(o, _mm256_maskload_ps(src + b * 16, m0));
            _mm256_store_ps(o + 8, _mm256_maskload_ps(src + b * 16 + 8, m1));
        }
    }
}

/* the epilogue of one output pixel's 8 channels (v: bias + conv), stored to o (all 8 lanes if
 * whole, else those of m); returns the value stored */
CN_INLINE __m256 finish(float *o, __m256 v, const cn_dw_job *j, __m256 sc, __m256 sh,
                        const float *r, int whole, __m256i m) {
    if (j->scale) {
        v = _mm256_fmadd_ps(v, sc, sh);
        if (r) v = _mm256_add_ps(v, whole ? _mm256_loadu_ps(r) : _mm256_maskload_ps(r, m));
    }
    switch (j->act) {
    case CN_ACT_RELU: v = _mm256_max_ps(v, _mm256_setzero_ps()); break;
    case CN_ACT_SILU: v = silu8(v); break;
    case CN_ACT_SIGMOID: v = sigmoid8(v); break;
    default: break;
    }
    if (whole) _mm256_storeu_ps(o, v);
    else _mm256_maskstore_ps(o, m, v);
    return v;
}

/* NB output pixels from ox at once */
#define NB(K) ((K) == 3 ? 6 : 4)

/* output row oy of image img, channels [c0, c0 + nc) (nc in [1, 8]) of a half block, from the K
 * padded input rows (rows[ky]: the half's first float of the row's first pixel); with a pool,
 * adds the row's sum (in float, pixels in order, then in double) to sum[0..8) */
CN_INLINE void half_row(const cn_dw_job *j, int img, int oy, int c0, int nc,
                        const float *const *rows, double *sum, const int K, const int S) {
    const int C = j->c, whole = nc == 8;
    const __m256i m = lanes(nc);
    __m256 w[25];
#pragma GCC unroll 25
    for (int t = 0; t < K * K; t++) w[t] = _mm256_maskload_ps(j->wr + (size_t)t * C + c0, m);
    const __m256 b = j->bias ? _mm256_maskload_ps(j->bias + c0, m) : _mm256_setzero_ps();
    const __m256 sc = j->scale ? _mm256_maskload_ps(j->scale + c0, m) : _mm256_setzero_ps();
    const __m256 sh = j->scale ? _mm256_maskload_ps(j->shift + c0, m) : _mm256_setzero_ps();
    const size_t at = (((size_t)img * j->oh + oy) * j->ow) * C + c0;
    float *orow = j->out + at;
    const float *rrow = j->res ? j->res + at : NULL;
    __m256 rs = _mm256_setzero_ps();
    int ox = 0;
    for (; ox + NB(K) <= j->ow; ox += NB(K)) {
        __m256 acc[NB(K)];
        for (int p = 0; p < NB(K); p++) acc[p] = b;
#pragma GCC unroll 5
        for (int ky = 0; ky < K; ky++) {
            const float *rp = rows[ky] + (size_t)ox * S * 16;
#pragma GCC unroll 5
            for (int kx = 0; kx < K; kx++)
                for (int p = 0; p < NB(K); p++)
                    acc[p] = _mm256_fmadd_ps(_mm256_load_ps(rp + (p * S + kx) * 16),
                                             w[ky * K + kx], acc[p]);
        }
        for (int p = 0; p < NB(K); p++) {
            const __m256 v = finish(orow + (size_t)(ox + p) * C, acc[p], j, sc, sh,
                                    rrow ? rrow + (size_t)(ox + p) * C : NULL, whole, m);
            if (sum) rs = _mm256_add_ps(rs, v);
        }
    }
    for (; ox < j->ow; ox++) {
        __m256 acc = b;
#pragma GCC unroll 5
        for (int ky = 0; ky < K; ky++) {
            const float *rp = rows[ky] + (size_t)ox * S * 16;
#pragma GCC unroll 5
            for (int kx = 0; kx < K; kx++)
                acc = _mm256_fmadd_ps(_mm256_load_ps(rp + kx * 16), w[ky * K + kx], acc);
        }
        const __m256 v = finish(orow + (size_t)ox * C, acc, j, sc, sh,
                                rrow ? rrow + (size_t)ox * C : NULL, whole, m);
        if (sum) rs = _mm256_add_ps(rs, v);
    }
    if (sum) {
        _mm256_storeu_pd(sum, _mm256_add_pd(_mm256_loadu_pd(sum),
                                            _mm256_cvtps_pd(_mm256_castps256_ps128(rs))));
        _mm256_storeu_pd(sum + 4, _mm256_add_pd(_mm256_loadu_pd(sum + 4),
                                                _mm256_cvtps_pd(_mm256_extractf128_ps(rs, 1))));
    }
}

/* The ring: K slots, each the padded row of every block of the group (block-major), then one
 * zero row. An input row is packed once per task, when the first output row needs it. */
CN_INLINE void task_ks(const cn_dw_job *j, int img, int b0, int b1, int oy0, int oy1,
                       float *ring, const int K, const int S) {
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
            const int nc = j->c - 16 * b < 16 ? j->c - 16 * b : 16;
            double *s = sums ? sums + (size_t)(b - b0) * 16 : NULL;
            const float *r[5];
            for (int ky = 0; ky < K; ky++) r[ky] = rows[ky] + (size_t)(b - b0) * step[ky];
            half_row(j, img, oy, 16 * b, nc < 8 ? nc : 8, r, s, K, S);
            if (nc > 8) {
                for (int ky = 0; ky < K; ky++) r[ky] += 8;
                half_row(j, img, oy, 16 * b + 8, nc - 8, r, s ? s + 8 : NULL, K, S);
            }
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

void cn_dw_task__avx2(const cn_dw_job *j, int img, int b0, int b1, int oy0, int oy1, float *ring) {
    switch (j->k * 10 + j->s) {
    case 31: task_ks(j, img, b0, b1, oy0, oy1, ring, 3, 1); break;
    case 32: task_ks(j, img, b0, b1, oy0, oy1, ring, 3, 2); break;
    case 51: task_ks(j, img, b0, b1, oy0, oy1, ring, 5, 1); break;
    case 52: task_ks(j, img, b0, b1, oy0, oy1, ring, 5, 2); break;
    default: break;
    }
}
