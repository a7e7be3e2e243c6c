/* AVX-512 SGEMM micro-kernels: a register tile of MR rows by NV*16 columns of C.
 * Contract shared by every micro-kernel (see gemm.c):
 *   a: A panel; "_kmajor" kernels read element (i, k) at a[k*as + i] (packed panels, as == MR,
 *      rows >= mr zero filled), "_rows" kernels read it at a[i*as + k] straight from a row-major
 *      A, and never touch rows >= mr;
 *   b: B panel, element (k, j) at b[k*bs + j], all NR columns readable;
 *   c: C tile with row stride ldc; only the mr x nr corner is touched.
 *   C = alpha * (A*B) + beta * C, and beta == 0 never reads C (it may hold NaN). */
#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>

#define UKERNEL_ARGS                                                                          \
    size_t kc, const float *restrict a, size_t as, const float *restrict b, size_t bs,         \
        float *restrict c, size_t ldc, size_t mr, size_t nr, float alpha, float beta

void f32_gemm_ukernel_12x32_kmajor__avx512(UKERNEL_ARGS);
void f32_gemm_ukernel_12x32_rows__avx512(UKERNEL_ARGS);
void f32_gemm_ukernel_14x32_kmajor__avx512(UKERNEL_ARGS);
void f32_gemm_ukernel_14x32_rows__avx512(UKERNEL_ARGS);
void f32_gemm_ukernel_8x48_kmajor__avx512(UKERNEL_ARGS);
void f32_gemm_ukernel_8x48_rows__avx512(UKERNEL_ARGS);
void f32_gemm_ukernel_6x64_kmajor__avx512(UKERNEL_ARGS);
void f32_gemm_ukernel_6x64_rows__avx512(UKERNEL_ARGS);
void f32_gemm_ukernel_28x16_kmajor__avx512(UKERNEL_ARGS);
void f32_gemm_ukernel_28x16_rows__avx512(UKERNEL_ARGS);
void f32_gemm_ukernel_14x16_kmajor__avx512(UKERNEL_ARGS);
void f32_gemm_ukernel_14x16_rows__avx512(UKERNEL_ARGS);

enum { MAXMR = 28, MAXNV = 4 };

/* Constant MR/NV after inlining lets the compiler unroll completely and keep acc[][] in zmm
 * registers; the k loop then is NV loads, MR broadcasts folded into the FMAs, MR*NV FMAs. */
static inline __attribute__((always_inline)) void tile(UKERNEL_ARGS, const int MR, const int NV,
                                                       const int ROWS) {
    /* Row-major A is read through one pointer per row; rows past mr alias the last valid row so
     * nothing outside A is read (their sums are discarded). */
    const float *ap[MAXMR];
    if (ROWS) {
#pragma GCC unroll 28
        for (int i = 0; i < MR; i++) ap[i] = a + ((size_t)i < mr ? (size_t)i : mr - 1) * as;
    }
    __m512 acc[MAXMR][MAXNV];
#pragma GCC unroll 28
    for (int i = 0; i < MR; i++)
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) acc[i][v] = _mm512_setzero_ps();

    for (size_t k = 0; k < kc; k++) {
        __m512 bv[MAXNV];
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) bv[v] = _mm512_loadu_ps(b + 16 * v);
#pragma GCC unroll 28
        for (int i = 0; i < MR; i++) {
            const __m512 ai = _mm512_set1_ps(ROWS ? ap[i][k] : a[i]);
#pragma GCC unroll 4
            for (int v = 0; v < NV; v++) acc[i][v] = _mm512_fmadd_ps(ai, bv[v], acc[i][v]);
        }
        if (!ROWS) a += as;
        b += bs;
    }

    const __m512 va = _mm512_set1_ps(alpha);
    const __m512 vb = _mm512_set1_ps(beta);
    __mmask16 mask[MAXNV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; v++) {
        const size_t lo = (size_t)16 * v;
        const size_t cnt = nr > lo ? nr - lo : 0;
        mask[v] = cnt >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << cnt) - 1u);
    }
    /* Same arithmetic on every path so that a C element's bits do not depend on which tile (full
     * or edge) it landed in, and hence not on the thread partition. */
    if (beta == 0.0f) {
#pragma GCC unroll 28
        for (int i = 0; i < MR; i++) {
            if ((size_t)i >= mr) break;
#pragma GCC unroll 4
            for (int v = 0; v < NV; v++)
                _mm512_mask_storeu_ps(c + 16 * v, mask[v], _mm512_mul_ps(acc[i][v], va));
            c += ldc;
        }
    } else {
#pragma GCC unroll 28
        for (int i = 0; i < MR; i++) {
            if ((size_t)i >= mr) break;
#pragma GCC unroll 4
            for (int v = 0; v < NV; v++) {
                const __m512 old = _mm512_maskz_loadu_ps(mask[v], c + 16 * v);
                const __m512 r = _mm512_fmadd_ps(acc[i][v], va, _mm512_mul_ps(old, vb));
                _mm512_mask_storeu_ps(c + 16 * v, mask[v], r);
            }
            c += ldc;
        }
    }
}

void f32_gemm_ukernel_12x32_kmajor__avx512(UKERNEL_ARGS) {
    tile(kc, a, as, b, bs, c, ldc, mr, nr, alpha, beta, 12, 2, 0);
}
void f32_gemm_ukernel_12x32_rows__avx512(UKERNEL_ARGS) {
    tile(kc, a, as, b, bs, c, ldc, mr, nr, alpha, beta, 12, 2, 1);
}
void f32_gemm_ukernel_14x32_kmajor__avx512(UKERNEL_ARGS) {
    tile(kc, a, as, b, bs, c, ldc, mr, nr, alpha, beta, 14, 2, 0);
}
void f32_gemm_ukernel_14x32_rows__avx512(UKERNEL_ARGS) {
    tile(kc, a, as, b, bs, c, ldc, mr, nr, alpha, beta, 14, 2, 1);
}
void f32_gemm_ukernel_8x48_kmajor__avx512(UKERNEL_ARGS) {
    tile(kc, a, as, b, bs, c, ldc, mr, nr, alpha, beta, 8, 3, 0);
}
void f32_gemm_ukernel_8x48_rows__avx512(UKERNEL_ARGS) {
    tile(kc, a, as, b, bs, c, ldc, mr, nr, alpha, beta, 8, 3, 1);
}
void f32_gemm_ukernel_6x64_kmajor__avx512(UKERNEL_ARGS) {
    tile(kc, a, as, b, bs, c, ldc, mr, nr, alpha, beta, 6, 4, 0);
}
void f32_gemm_ukernel_6x64_rows__avx512(UKERNEL_ARGS) {
    tile(kc, a, as, b, bs, c, ldc, mr, nr, alpha, beta, 6, 4, 1);
}
void f32_gemm_ukernel_28x16_kmajor__avx512(UKERNEL_ARGS) {
    tile(kc, a, as, b, bs, c, ldc, mr, nr, alpha, beta, 28, 1, 0);
}
void f32_gemm_ukernel_28x16_rows__avx512(UKERNEL_ARGS) {
    tile(kc, a, as, b, bs, c, ldc, mr, nr, alpha, beta, 28, 1, 1);
}
void f32_gemm_ukernel_14x16_kmajor__avx512(UKERNEL_ARGS) {
    tile(kc, a, as, b, bs, c, ldc, mr, nr, alpha, beta, 14, 1, 0);
}
void f32_gemm_ukernel_14x16_rows__avx512(UKERNEL_ARGS) {
    tile(kc, a, as, b, bs, c, ldc, mr, nr, alpha, beta, 14, 1, 1);
}

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
