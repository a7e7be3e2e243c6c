/* AVX-512 SGEMM micro-kernels: a register tile of MR rows by NV*16 columns of C.
 * Contract shared by every micro-kernel (see gemm.c):
 *   a: A panel; "_kmajor" kernels read element (i, k) at a[k*as + i] (packed panels, as == MR,
 *      rows >= mr zero filled), "_rows" kernels read it at a[i*as + k] straight from a row-major
 *      A, and never load rows >= mr (they prefetch the MR rows after the tile, a[(MR + i)*as + k],
 *      as the next call usually reads them; a prefetch past the end of A is harmless);
 *   b: B panel, element (k, j) at b[k*bs + j], all NR columns readable;
 *   c: C tile with row stride ldc; only the mr x nr corner is touched.
 *   C = alpha * (A*B) + beta * C, and beta == 0 never reads C (it may hold NaN). */
#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels/act_avx512.h"
#include "kernels/gemm.h"

enum { MAXMR = 14, MAXNV = 6 };

/* Constant MR/NV after inlining lets the compiler unroll completely and keep acc[][] in zmm
 * registers; the k loop then is NV loads, MR broadcasts folded into the FMAs, MR*NV FMAs. */
static inline __attribute__((always_inline)) void tile(CN_GEMM_UKERNEL_ARGS,
                                                       const cn_gemm_affine *f, const int MR,
                                                       const int NV, const int ROWS) {
    /* Row-major A is read through one pointer per row; rows past mr alias the last valid row so
     * nothing outside A is read (their sums are discarded). */
    const float *ap[MAXMR];
    if (ROWS) {
#pragma GCC unroll 14
        for (int i = 0; i < MR; i++) ap[i] = a + ((size_t)i < mr ? (size_t)i : mr - 1) * as;
    }
    __m512 acc[MAXMR][MAXNV];
#pragma GCC unroll 14
    for (int i = 0; i < MR; i++)
#pragma GCC unroll 6
        for (int v = 0; v < NV; v++) acc[i][v] = _mm512_setzero_ps();
    /* the C tile for writing (prefetch_w16) when the k loop is short (EfficientNet's
     * expansions, ResNet-50's 64 -> 256 layers). Isolated, caches flushed, 2 threads, batch 1:
     * 56x56x64 -> 256 0.39-0.43 -> 0.32-0.37 ms, 28x28x40 -> 240 0.08-0.13 -> 0.07-0.10 ms;
     * with 256 or more k a tile it was no faster (56x56x256 -> 64) */
    if (kc <= 128) prefetch_w16(c, ldc, mr, nr, MR, NV);
    if (f && f->res) {
        /* the residual rows this tile adds at the end (one per row of C, ldr apart: a stride
         * the hardware prefetchers follow poorly), fetched while the k loop runs */
#pragma GCC unroll 14
        for (int i = 0; i < MR; i++) {
            if ((size_t)i >= mr) break;
            const float *r = f->res + (size_t)i * f->ldr;
#pragma GCC unroll 6
            for (int v = 0; v < NV; v++) __builtin_prefetch(r + 16 * v, 0, 3);
        }
    }

    /* the accumulators, the B vectors of one k and a broadcast fill at most the 32 zmm
     * registers (MR * NV + NV + 1 <= 32 for every tile) */
    for (size_t k0 = 0; k0 < kc; k0 += 16) {
        if (ROWS) {
            /* The next call of a "rows" kernel reads the MR rows that follow these (the next
             * row panel of C, or of weights in the swapped product), which come from far
             * memory; fetching one line of each per 16 k spreads those misses over this tile
             * instead of issuing them in one burst that overflows the miss buffers. */
#pragma GCC unroll 14
            for (int i = 0; i < MR; i++)
                /* integer arithmetic: past the last panel the address lies outside A */
                __builtin_prefetch((const void *)((uintptr_t)(ap[i] + k0) +
                                                  (uintptr_t)MR * as * sizeof(float)),
                                   0, 3);
        }
        const size_t k1 = kc - k0 < 16 ? kc : k0 + 16;
        for (size_t k = k0; k < k1; k++) {
            __m512 bv[MAXNV];
#pragma GCC unroll 6
            for (int v = 0; v < NV; v++) bv[v] = _mm512_loadu_ps(b + 16 * v);
#pragma GCC unroll 14
            for (int i = 0; i < MR; i++) {
                const __m512 ai = _mm512_set1_ps(ROWS ? ap[i][k] : a[i]);
#pragma GCC unroll 6
                for (int v = 0; v < NV; v++) acc[i][v] = _mm512_fmadd_ps(ai, bv[v], acc[i][v]);
            }
            if (!ROWS) a += as;
            b += bs;
        }
    }

    const __m512 va = _mm512_set1_ps(alpha);
    const __m512 vb = _mm512_set1_ps(beta);
    __mmask16 mask[MAXNV];
#pragma GCC unroll 6
    for (int v = 0; v < NV; v++) {
        const size_t lo = (size_t)16 * v;
        const size_t cnt = nr > lo ? nr - lo : 0;
        mask[v] = cnt >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << cnt) - 1u);
    }
    /* Same arithmetic on every path so that a C element's bits do not depend on which tile (full
     * or edge) it landed in, and hence not on the thread partition. */
    const float *res = f ? f->res : NULL;
#pragma GCC unroll 14
    for (int i = 0; i < MR; i++) {
        if ((size_t)i >= mr) break;
#pragma GCC unroll 6
        for (int v = 0; v < NV; v++) {
            __m512 r;
            if (beta == 0.0f) {
                r = _mm512_mul_ps(acc[i][v], va);
            } else {
                const __m512 old = _mm512_maskz_loadu_ps(mask[v], c + 16 * v);
                r = _mm512_fmadd_ps(acc[i][v], va, _mm512_mul_ps(old, vb));
            }
            /* scale and shift are read per row from L1: the accumulators hold the registers */
            if (f)
                r = affine16(r, _mm512_maskz_loadu_ps(mask[v], f->scale + 16 * v),
                             _mm512_maskz_loadu_ps(mask[v], f->shift + 16 * v),
                             res ? res + 16 * v : NULL, mask[v], f->act);
            _mm512_mask_storeu_ps(c + 16 * v, mask[v], r);
        }
        c += ldc;
        if (res) res += f->ldr;
    }
}

#define TILE_PAIR(MR, NV, NAME) CN_GEMM_TILE_FNS(MR, NV, NAME, avx512)
TILE_PAIR(14, 1, 14x16)
TILE_PAIR(12, 2, 12x32)
TILE_PAIR(14, 2, 14x32)
TILE_PAIR(8, 3, 8x48)
TILE_PAIR(6, 4, 6x64)
TILE_PAIR(5, 5, 5x80)
TILE_PAIR(4, 6, 4x96)

void f32_gemm_pack_bt__avx512(size_t kc, size_t cols, const float *src, size_t ld, size_t nr,
                              float *dst);

/* In-register 16x16 transpose: r[i] holds row i on entry, column i on exit. */
static inline __attribute__((always_inline)) void transpose16(__m512 r[16]) {
    __m512 t[16], u[16];
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
#pragma GCC unroll 4
    for (int g = 0; g < 4; g++) {
        u[4 * g + 0] = _mm512_shuffle_ps(t[4 * g], t[4 * g + 2], 0x44);
        u[4 * g + 1] = _mm512_shuffle_ps(t[4 * g], t[4 * g + 2], 0xEE);
        u[4 * g + 2] = _mm512_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0x44);
        u[4 * g + 3] = _mm512_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0xEE);
    }
#pragma GCC unroll 4
    for (int e = 0; e < 4; e++) {
        const __m512 v0 = _mm512_shuffle_f32x4(u[e], u[4 + e], 0x88);
        const __m512 v1 = _mm512_shuffle_f32x4(u[e], u[4 + e], 0xDD);
        const __m512 v2 = _mm512_shuffle_f32x4(u[8 + e], u[12 + e], 0x88);
        const __m512 v3 = _mm512_shuffle_f32x4(u[8 + e], u[12 + e], 0xDD);
        r[e] = _mm512_shuffle_f32x4(v0, v2, 0x88);
        r[4 + e] = _mm512_shuffle_f32x4(v1, v3, 0x88);
        r[8 + e] = _mm512_shuffle_f32x4(v0, v2, 0xDD);
        r[12 + e] = _mm512_shuffle_f32x4(v1, v3, 0xDD);
    }
}

/* Packs one panel of a transposed operand: dst[k*nr + c] = src[c*ld + k] for c < cols, zero for
 * cols <= c < nr (nr a multiple of 16). Scalar packing of this transpose costs as much as the
 * multiply when the other dimension is small, hence 16x16 register transposes. */
void f32_gemm_pack_bt__avx512(size_t kc, size_t cols, const float *src, size_t ld, size_t nr,
                              float *dst) {
    for (size_t c0 = 0; c0 < nr; c0 += 16) {
        for (size_t k = 0; k < kc; k += 16) {
            const size_t kn = kc - k < 16 ? kc - k : 16;
            const __mmask16 km = (__mmask16)(kn == 16 ? 0xFFFFu : (1u << kn) - 1u);
            __m512 r[16];
#pragma GCC unroll 16
            for (int i = 0; i < 16; i++)
                r[i] = c0 + (size_t)i < cols
                           ? _mm512_maskz_loadu_ps(km, src + (c0 + (size_t)i) * ld + k)
                           : _mm512_setzero_ps();
            transpose16(r);
            for (size_t i = 0; i < kn; i++) _mm512_storeu_ps(dst + (k + i) * nr + c0, r[i]);
        }
    }
}

/* ---- dot-product kernels: C = A * B^T with both operands read in place ----
 * For one to three rows of A with a transposed B (the weights of a layer), packing B costs more
 * than the multiply (a GEMV). These kernels instead read MR rows of A and NR rows of B straight from memory, both
 * contiguous in k, keep MR*NR <= 16 vector accumulators of 16 k-lanes each, and sum the lanes at
 * the end with one shared tree. Element (i, j) is dot(a + i*lda, b + j*ldb) over kc; rows i >= mr
 * and j >= nr alias the last valid ones (their sums are discarded), and every accumulator is
 * reduced in the same lane order, so a C element's bits do not depend on the tile it fell in. */
#define DOT_ARGS                                                                             \
    size_t kc, const float *restrict a, size_t lda, const float *restrict b, size_t ldb,      \
        float *restrict c, size_t ldc, size_t mr, size_t nr, float alpha, float beta

void f32_gemm_dot_1x16__avx512(DOT_ARGS);
void f32_gemm_dot_2x8__avx512(DOT_ARGS);
void f32_gemm_dot_1x8__avx512(DOT_ARGS);

/* Sums the 16 lanes of each v[t]: lane L of the result is the sum of v[L]. Each level adds
 * lanes l and l + 8 (then 4, 2, 1) of every vector, two vectors per instruction. */
static inline __attribute__((always_inline)) __m512 hsum16(const __m512 acc[16]) {
    /* the tree leaves the sum of its input s + q at lane 4*(index of q in q_of) + (index of s
     * in s_of); feeding the inputs in that order makes lane L hold the sum of acc[L] */
    static const int s_of[4] = {0, 2, 1, 3}, q_of[4] = {0, 8, 4, 12};
    __m512 v[16], w[8], x[4], y[2];
#pragma GCC unroll 16
    for (int L = 0; L < 16; L++) v[s_of[L & 3] + q_of[L >> 2]] = acc[L];
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++)
        w[i] = _mm512_add_ps(_mm512_shuffle_f32x4(v[i], v[i + 8], 0x44),
                             _mm512_shuffle_f32x4(v[i], v[i + 8], 0xEE));
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++)
        x[i] = _mm512_add_ps(_mm512_shuffle_f32x4(w[i], w[i + 4], 0x88),
                             _mm512_shuffle_f32x4(w[i], w[i + 4], 0xDD));
#pragma GCC unroll 2
    for (int i = 0; i < 2; i++)
        y[i] = _mm512_add_ps(_mm512_shuffle_ps(x[i], x[i + 2], 0x44),
                             _mm512_shuffle_ps(x[i], x[i + 2], 0xEE));
    return _mm512_add_ps(_mm512_shuffle_ps(y[0], y[1], 0x88), _mm512_shuffle_ps(y[0], y[1], 0xDD));
}

static inline __attribute__((always_inline)) void dot_tile(DOT_ARGS, const int MR, const int NR) {
    const float *ap[16], *bp[16];
#pragma GCC unroll 16
    for (int i = 0; i < MR; i++) ap[i] = a + ((size_t)i < mr ? (size_t)i : mr - 1) * lda;
#pragma GCC unroll 16
    for (int j = 0; j < NR; j++) bp[j] = b + ((size_t)j < nr ? (size_t)j : nr - 1) * ldb;
    __m512 acc[16]; /* MR * NR <= 16 in use, the rest stay zero */
#pragma GCC unroll 16
    for (int t = 0; t < 16; t++) acc[t] = _mm512_setzero_ps();
    size_t k = 0;
    for (; k + 16 <= kc; k += 16) {
        __m512 bv[16];
#pragma GCC unroll 16
        for (int j = 0; j < NR; j++) bv[j] = _mm512_loadu_ps(bp[j] + k);
#pragma GCC unroll 16
        for (int i = 0; i < MR; i++) {
            const __m512 av = _mm512_loadu_ps(ap[i] + k);
#pragma GCC unroll 16
            for (int j = 0; j < NR; j++) acc[i * NR + j] = _mm512_fmadd_ps(av, bv[j], acc[i * NR + j]);
        }
    }
    if (k < kc) {
        const __mmask16 km = (__mmask16)((1u << (kc - k)) - 1u);
        __m512 bv[16];
#pragma GCC unroll 16
        for (int j = 0; j < NR; j++) bv[j] = _mm512_maskz_loadu_ps(km, bp[j] + k);
#pragma GCC unroll 16
        for (int i = 0; i < MR; i++) {
            const __m512 av = _mm512_maskz_loadu_ps(km, ap[i] + k);
#pragma GCC unroll 16
            for (int j = 0; j < NR; j++) acc[i * NR + j] = _mm512_fmadd_ps(av, bv[j], acc[i * NR + j]);
        }
    }
    const __m512 s = hsum16(acc);
    const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
    const __mmask16 cm = (__mmask16)(nr >= 16 ? 0xFFFFu : (1u << nr) - 1u);
#pragma GCC unroll 16
    for (int i = 0; i < MR; i++) {
        if ((size_t)i >= mr) break;
        /* row i of the tile is lanes i*NR .. i*NR + NR - 1 */
        const __m512 si = i == 0 ? s
                                 : _mm512_permutexvar_ps(
                                       _mm512_add_epi32(_mm512_set1_epi32(i * NR),
                                                        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8,
                                                                          9, 10, 11, 12, 13, 14, 15)),
                                       s);
        float *ci = c + (size_t)i * ldc;
        __m512 r;
        if (beta == 0.0f)
            r = _mm512_mul_ps(si, va);
        else
            r = _mm512_fmadd_ps(si, va, _mm512_mul_ps(_mm512_maskz_loadu_ps(cm, ci), vb));
        _mm512_mask_storeu_ps(ci, cm, r);
    }
}

void f32_gemm_dot_1x16__avx512(DOT_ARGS) { dot_tile(kc, a, lda, b, ldb, c, ldc, mr, nr, alpha, beta, 1, 16); }
void f32_gemm_dot_2x8__avx512(DOT_ARGS) { dot_tile(kc, a, lda, b, ldb, c, ldc, mr, nr, alpha, beta, 2, 8); }
void f32_gemm_dot_1x8__avx512(DOT_ARGS) { dot_tile(kc, a, lda, b, ldb, c, ldc, mr, nr, alpha, beta, 1, 8); }

/* C[j][i0 + i] = alpha * t[i][j] + beta * C[j][i0 + i] for i < rows, j < cols: the transposed
 * write-back of a tile computed as C^T (t has row stride ldt). Same arithmetic as the micro-kernel
 * epilogues; beta == 0 never reads C. */
void f32_gemm_store_t__avx512(const float *t, size_t ldt, size_t rows, size_t cols, float *c,
                              size_t ldc, float alpha, float beta, const cn_gemm_affine *f);
void f32_gemm_store_t__avx512(const float *t, size_t ldt, size_t rows, size_t cols, float *c,
                              size_t ldc, float alpha, float beta, const cn_gemm_affine *f) {
    const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
    const int silu_rows = f && f->act == CN_GEMM_ACT_SILU && !f->res && beta == 0.0f;
    for (size_t i0 = 0; i0 < rows; i0 += 16) {
        const size_t ni = rows - i0 < 16 ? rows - i0 : 16;
        const __mmask16 im = (__mmask16)(ni == 16 ? 0xFFFFu : (1u << ni) - 1u);
        for (size_t j0 = 0; j0 < cols; j0 += 16) {
            const size_t nj = cols - j0 < 16 ? cols - j0 : 16;
            const __mmask16 jm = (__mmask16)(nj == 16 ? 0xFFFFu : (1u << nj) - 1u);
            __m512 r[16];
#pragma GCC unroll 16
            for (int i = 0; i < 16; i++)
                r[i] = (size_t)i < ni ? _mm512_maskz_loadu_ps(jm, t + (i0 + (size_t)i) * ldt + j0)
                                      : _mm512_setzero_ps();
            if (silu_rows) {
                /* the whole epilogue on the rows (output channels) before the transpose: the
                 * SiLU then runs on vectors of 16 pixels, where after it would run on vectors
                 * of ni channels (8 of 16 lanes with the 8x48 tile); the same operations on
                 * each element, hence the same bits */
#pragma GCC unroll 16
                for (int i = 0; i < 16; i++) {
                    if ((size_t)i >= ni) break;
                    const __m512 sc = _mm512_set1_ps(f->scale[i0 + (size_t)i]);
                    const __m512 v = _mm512_add_ps(_mm512_mul_ps(_mm512_mul_ps(r[i], va), sc),
                                                   _mm512_set1_ps(f->shift[i0 + (size_t)i]));
                    r[i] = silu16(v);
                }
                transpose16(r);
#pragma GCC unroll 16
                for (int j = 0; j < 16; j++) {
                    if ((size_t)j >= nj) break;
                    _mm512_mask_storeu_ps(c + (j0 + (size_t)j) * ldc + i0, im, r[j]);
                }
                continue;
            }
            transpose16(r);
            __m512 fs = _mm512_setzero_ps(), fb = _mm512_setzero_ps();
            if (f) {
                fs = _mm512_maskz_loadu_ps(im, f->scale + i0);
                fb = _mm512_maskz_loadu_ps(im, f->shift + i0);
            }
#pragma GCC unroll 16
            for (int j = 0; j < 16; j++) {
                if ((size_t)j >= nj) break;
                float *cj = c + (j0 + (size_t)j) * ldc + i0;
                __m512 v = beta == 0.0f
                               ? _mm512_mul_ps(r[j], va)
                               : _mm512_fmadd_ps(r[j], va,
                                                 _mm512_mul_ps(_mm512_maskz_loadu_ps(im, cj), vb));
                if (f)
                    v = affine16(v, fs, fb,
                                 f->res ? f->res + (j0 + (size_t)j) * f->ldr + i0 : NULL, im,
                                 f->act);
                _mm512_mask_storeu_ps(cj, im, v);
            }
        }
    }
}
