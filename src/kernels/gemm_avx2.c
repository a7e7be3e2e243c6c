/* AVX2+FMA SGEMM micro-kernels and helpers: the same contracts as the AVX-512 ones (see
 * gemm_avx512.c and gemm.c), for CPUs with 16 ymm registers of 8 floats.
 *
 * Register tiles: MR rows by NV*8 columns of C in MR*NV accumulators, plus the NV vectors of B
 * of one k and one broadcast of A: MR*NV + NV + 1 <= 16. Per k a tile issues NV + MR loads for
 * MR*NV FMAs; 6x16 and 4x24 keep 12 chains in flight (an FMA takes 4 cycles on two pipes, so at
 * least 8 are needed) at 8 and 7 loads per 12 FMAs; 8x8 covers narrow N (9 loads per 8 FMAs, it
 * leans on the load ports). */
#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels/act_avx2.h"
#include "kernels/gemm.h"

enum { MAXMR = 8, MAXNV = 3 };

/* lanes [0, cnt) of a vector (cnt clamped to 8) */
static inline __m256i lane_mask(size_t cnt) {
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(cnt > 8 ? 8 : cnt)), idx);
}

static inline __attribute__((always_inline)) void tile(CN_GEMM_UKERNEL_ARGS,
                                                       const cn_gemm_affine *f, const int MR,
                                                       const int NV, const int ROWS) {
    /* row-major A through one pointer per row; rows past mr alias the last valid row */
    const float *ap[MAXMR];
    if (ROWS) {
#pragma GCC unroll 8
        for (int i = 0; i < MR; i++) ap[i] = a + ((size_t)i < mr ? (size_t)i : mr - 1) * as;
    }
    __m256 acc[MAXMR][MAXNV];
#pragma GCC unroll 8
    for (int i = 0; i < MR; i++)
#pragma GCC unroll 3
        for (int v = 0; v < NV; v++) acc[i][v] = _mm256_setzero_ps();
    if (f && f->res) {
        /* the residual rows this tile adds at the end (one per row of C, ldr apart: a stride
         * the hardware prefetchers follow poorly), fetched while the k loop runs */
#pragma GCC unroll 8
        for (int i = 0; i < MR; i++) {
            if ((size_t)i >= mr) break;
            const float *r = f->res + (size_t)i * f->ldr;
            __builtin_prefetch(r, 0, 3);
            if (NV > 1) __builtin_prefetch(r + 8 * NV - 1, 0, 3);
        }
    }

    for (size_t k0 = 0; k0 < kc; k0 += 16) {
        if (ROWS) {
            /* the rows of the next call (the next row panel), one line of each per 16 k, as in
             * the AVX-512 kernels; integer arithmetic, as past the last panel it leaves A */
#pragma GCC unroll 8
            for (int i = 0; i < MR; i++)
                __builtin_prefetch((const void *)((uintptr_t)(ap[i] + k0) +
                                                  (uintptr_t)MR * as * sizeof(float)),
                                   0, 3);
        }
        const size_t k1 = kc - k0 < 16 ? kc : k0 + 16;
        for (size_t k = k0; k < k1; k++) {
            __m256 bv[MAXNV];
#pragma GCC unroll 3
            for (int v = 0; v < NV; v++) bv[v] = _mm256_loadu_ps(b + 8 * v);
#pragma GCC unroll 8
            for (int i = 0; i < MR; i++) {
                const __m256 ai = _mm256_broadcast_ss(ROWS ? ap[i] + k : a + i);
#pragma GCC unroll 3
                for (int v = 0; v < NV; v++) acc[i][v] = _mm256_fmadd_ps(ai, bv[v], acc[i][v]);
            }
            if (!ROWS) a += as;
            b += bs;
        }
    }

    const __m256 va = _mm256_set1_ps(alpha);
    const __m256 vb = _mm256_set1_ps(beta);
    const int full = nr == (size_t)(8 * NV);
    __m256i mask[MAXNV];
#pragma GCC unroll 3
    for (int v = 0; v < NV; v++) mask[v] = lane_mask(nr > (size_t)(8 * v) ? nr - (size_t)(8 * v) : 0);
    __m256 fs[MAXNV] = {0}, fb[MAXNV] = {0};
    if (f) {
#pragma GCC unroll 3
        for (int v = 0; v < NV; v++) {
            fs[v] = full ? _mm256_loadu_ps(f->scale + 8 * v) : _mm256_maskload_ps(f->scale + 8 * v, mask[v]);
            fb[v] = full ? _mm256_loadu_ps(f->shift + 8 * v) : _mm256_maskload_ps(f->shift + 8 * v, mask[v]);
        }
    }
    const float *res = f ? f->res : NULL;
    /* the same arithmetic for full and edge tiles, so that the bits of a C element do not depend
     * on the tile it fell in (hence not on the thread partition) */
#pragma GCC unroll 8
    for (int i = 0; i < MR; i++) {
        if ((size_t)i >= mr) break;
#pragma GCC unroll 3
        for (int v = 0; v < NV; v++) {
            float *cv = c + 8 * v;
            __m256 r;
            if (beta == 0.0f) {
                r = _mm256_mul_ps(acc[i][v], va);
            } else {
                const __m256 old = full ? _mm256_loadu_ps(cv) : _mm256_maskload_ps(cv, mask[v]);
                r = _mm256_fmadd_ps(acc[i][v], va, _mm256_mul_ps(old, vb));
            }
            if (f) r = affine8(r, fs[v], fb[v], res ? res + 8 * v : NULL, full, mask[v], f->act);
            if (full) _mm256_storeu_ps(cv, r);
            else _mm256_maskstore_ps(cv, mask[v], r);
        }
        c += ldc;
        if (res) res += f->ldr;
    }
}

#define TILE_PAIR(MR, NV, NAME) CN_GEMM_TILE_FNS(MR, NV, NAME, avx2)
TILE_PAIR(6, 2, 6x16)
TILE_PAIR(4, 3, 4x24)
TILE_PAIR(8, 1, 8x8)

/* In-register 8x8 transpose: r[i] holds row i on entry, column i on exit. */
static inline __attribute__((always_inline)) void transpose8(__m256 r[8]) {
    __m256 t[8], u[8];
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) {
        t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
#pragma GCC unroll 2
    for (int g = 0; g < 2; g++) {
        u[4 * g + 0] = _mm256_shuffle_ps(t[4 * g], t[4 * g + 2], 0x44);
        u[4 * g + 1] = _mm256_shuffle_ps(t[4 * g], t[4 * g + 2], 0xEE);
        u[4 * g + 2] = _mm256_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0x44);
        u[4 * g + 3] = _mm256_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0xEE);
    }
#pragma GCC unroll 4
    for (int e = 0; e < 4; e++) {
        r[e] = _mm256_permute2f128_ps(u[e], u[4 + e], 0x20);
        r[4 + e] = _mm256_permute2f128_ps(u[e], u[4 + e], 0x31);
    }
}

/* dst[k*nr + c] = src[c*ld + k] for c < cols, zero for cols <= c < nr (nr a multiple of 8), by
 * 8x8 register transposes */
void f32_gemm_pack_bt__avx2(size_t kc, size_t cols, const float *src, size_t ld, size_t nr,
                            float *dst);
void f32_gemm_pack_bt__avx2(size_t kc, size_t cols, const float *src, size_t ld, size_t nr,
                            float *dst) {
    for (size_t c0 = 0; c0 < nr; c0 += 8) {
        for (size_t k = 0; k < kc; k += 8) {
            const size_t kn = kc - k < 8 ? kc - k : 8;
            const __m256i km = lane_mask(kn);
            __m256 r[8];
#pragma GCC unroll 8
            for (int i = 0; i < 8; i++) {
                const float *s = src + (c0 + (size_t)i) * ld + k;
                r[i] = c0 + (size_t)i >= cols ? _mm256_setzero_ps()
                       : kn == 8              ? _mm256_loadu_ps(s)
                                              : _mm256_maskload_ps(s, km);
            }
            transpose8(r);
            for (size_t i = 0; i < kn; i++) _mm256_storeu_ps(dst + (k + i) * nr + c0, r[i]);
        }
    }
}

/* C[j][i0 + i] = alpha * t[i][j] + beta * C[j][i0 + i] for i < rows, j < cols (see
 * f32_gemm_store_t__avx512) */
void f32_gemm_store_t__avx2(const float *t, size_t ldt, size_t rows, size_t cols, float *c,
                            size_t ldc, float alpha, float beta, const cn_gemm_affine *f);
void f32_gemm_store_t__avx2(const float *t, size_t ldt, size_t rows, size_t cols, float *c,
                            size_t ldc, float alpha, float beta, const cn_gemm_affine *f) {
    const __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
    for (size_t i0 = 0; i0 < rows; i0 += 8) {
        const size_t ni = rows - i0 < 8 ? rows - i0 : 8;
        const __m256i im = lane_mask(ni);
        for (size_t j0 = 0; j0 < cols; j0 += 8) {
            const size_t nj = cols - j0 < 8 ? cols - j0 : 8;
            const __m256i jm = lane_mask(nj);
            __m256 r[8];
#pragma GCC unroll 8
            for (int i = 0; i < 8; i++)
                r[i] = (size_t)i < ni ? _mm256_maskload_ps(t + (i0 + (size_t)i) * ldt + j0, jm)
                                      : _mm256_setzero_ps();
            transpose8(r);
            __m256 fs = va, fb = va;
            if (f) {
                fs = _mm256_maskload_ps(f->scale + i0, im);
                fb = _mm256_maskload_ps(f->shift + i0, im);
            }
#pragma GCC unroll 8
            for (int j = 0; j < 8; j++) {
                if ((size_t)j >= nj) break;
                float *cj = c + (j0 + (size_t)j) * ldc + i0;
                __m256 v = beta == 0.0f
                               ? _mm256_mul_ps(r[j], va)
                               : _mm256_fmadd_ps(r[j], va,
                                                 _mm256_mul_ps(_mm256_maskload_ps(cj, im), vb));
                if (f)
                    v = affine8(v, fs, fb, f->res ? f->res + (j0 + (size_t)j) * f->ldr + i0 : NULL,
                                0, im, f->act);
                _mm256_maskstore_ps(cj, im, v);
            }
        }
    }
}

/* ---- dot-product kernels (see the AVX-512 ones): C = A * B^T with both operands read in
 * place, MR*NR = 8 accumulators of 8 k-lanes each, reduced by one shared tree so that a C
 * element's bits do not depend on its tile ---- */
#define DOT_ARGS                                                                             \
    size_t kc, const float *restrict a, size_t lda, const float *restrict b, size_t ldb,      \
        float *restrict c, size_t ldc, size_t mr, size_t nr, float alpha, float beta

void f32_gemm_dot_1x8__avx2(DOT_ARGS);
void f32_gemm_dot_2x4__avx2(DOT_ARGS);

/* lane L of the result is the sum of the 8 lanes of v[L] */
static inline __attribute__((always_inline)) __m256 hsum8(const __m256 v[8]) {
    const __m256 t0 = _mm256_hadd_ps(v[0], v[1]), t1 = _mm256_hadd_ps(v[2], v[3]);
    const __m256 t2 = _mm256_hadd_ps(v[4], v[5]), t3 = _mm256_hadd_ps(v[6], v[7]);
    /* u0: lanes 0-3 the low-half sums of v0..v3, lanes 4-7 their high-half sums */
    const __m256 u0 = _mm256_hadd_ps(t0, t1), u1 = _mm256_hadd_ps(t2, t3);
    return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
}

static inline __attribute__((always_inline)) void dot_tile(DOT_ARGS, const int MR, const int NR) {
    const float *ap[2], *bp[8];
#pragma GCC unroll 2
    for (int i = 0; i < MR; i++) ap[i] = a + ((size_t)i < mr ? (size_t)i : mr - 1) * lda;
#pragma GCC unroll 8
    for (int j = 0; j < NR; j++) bp[j] = b + ((size_t)j < nr ? (size_t)j : nr - 1) * ldb;
    __m256 acc[8];
#pragma GCC unroll 8
    for (int t = 0; t < 8; t++) acc[t] = _mm256_setzero_ps();
    size_t k = 0;
    for (; k + 8 <= kc; k += 8) {
#pragma GCC unroll 2
        for (int i = 0; i < MR; i++) {
            const __m256 av = _mm256_loadu_ps(ap[i] + k);
#pragma GCC unroll 8
            for (int j = 0; j < NR; j++)
                acc[i * NR + j] = _mm256_fmadd_ps(av, _mm256_loadu_ps(bp[j] + k), acc[i * NR + j]);
        }
    }
    if (k < kc) {
        const __m256i km = lane_mask(kc - k);
#pragma GCC unroll 2
        for (int i = 0; i < MR; i++) {
            const __m256 av = _mm256_maskload_ps(ap[i] + k, km);
#pragma GCC unroll 8
            for (int j = 0; j < NR; j++)
                acc[i * NR + j] =
                    _mm256_fmadd_ps(av, _mm256_maskload_ps(bp[j] + k, km), acc[i * NR + j]);
        }
    }
    const __m256 s = hsum8(acc);
    const __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
    if (NR == 8) {
        const __m256i cm = lane_mask(nr);
        const __m256 r = beta == 0.0f
                             ? _mm256_mul_ps(s, va)
                             : _mm256_fmadd_ps(s, va, _mm256_mul_ps(_mm256_maskload_ps(c, cm), vb));
        _mm256_maskstore_ps(c, cm, r);
        return;
    }
    /* 2x4: row i of the tile is lanes 4i .. 4i + 3 */
    const __m128i cm = _mm256_castsi256_si128(lane_mask(nr));
#pragma GCC unroll 2
    for (int i = 0; i < MR; i++) {
        if ((size_t)i >= mr) break;
        const __m128 si = i == 0 ? _mm256_castps256_ps128(s) : _mm256_extractf128_ps(s, 1);
        float *ci = c + (size_t)i * ldc;
        const __m128 r =
            beta == 0.0f
                ? _mm_mul_ps(si, _mm256_castps256_ps128(va))
                : _mm_fmadd_ps(si, _mm256_castps256_ps128(va),
                               _mm_mul_ps(_mm_maskload_ps(ci, cm), _mm256_castps256_ps128(vb)));
        _mm_maskstore_ps(ci, cm, r);
    }
}

void f32_gemm_dot_1x8__avx2(DOT_ARGS) { dot_tile(kc, a, lda, b, ldb, c, ldc, mr, nr, alpha, beta, 1, 8); }
void f32_gemm_dot_2x4__avx2(DOT_ARGS) { dot_tile(kc, a, lda, b, ldb, c, ldc, mr, nr, alpha, beta, 2, 4); }
