/* AVX2+FMA depthwise weight gradient of one output row and one kernel row (see dwconv.h,
 * cn_dw_wgrad_krow__avx2), for 3x3 and 5x5 filters at stride 1 or 2, and the tap tables of the
 * data gradient and the portable forward (cn_dw_taps_sum__avx2).
 *
 * The portable kernel of ops/depthwise.c holds its sums in 16-float GCC vectors; compiled for
 * AVX2 each is two ymm registers, and with K taps the compiler ran out of registers and kept the
 * sums on the stack (a load and a store around every multiply-add). Here the sums of 16
 * channels are 2K ymm registers, the dY vectors two more, and the input vectors are memory
 * operands of the multiply-adds. With 3 taps, even and odd output pixels go to two sets of sums
 * (12 registers), so that a sum waits on its previous multiply-add every other pixel only. */
#include <immintrin.h>
#include <stddef.h>

#include "kernels/dwconv.h"

#define CN_INLINE static inline __attribute__((always_inline))

/* dwk[kx * c + j] += s[kx][j] for the n channels of one block (n <= 16), in double */
CN_INLINE void flush(double *dwk, int c, const __m256 s[5][2], int K, int n) {
    for (int kx = 0; kx < K; kx++) {
        float t[16];
        _mm256_storeu_ps(t, s[kx][0]);
        _mm256_storeu_ps(t + 8, s[kx][1]);
        double *d = dwk + (size_t)kx * c;
        for (int j = 0; j < n; j++) d[j] += t[j];
    }
}

/* acc += dY[ox] * x[ox * S - pw + kx] over the pixels ox in [o0, o1) (d, x: the rows at the block's
 * first channel) */
CN_INLINE void tap_range(__m256 *acc, const float *d, const float *x, int o0, int o1, int kx,
                         size_t cs, int S, int pw, const int V) {
    for (int ox = o0; ox < o1; ox++) {
        const float *dp = d + (size_t)ox * cs, *xp = x + ((ptrdiff_t)ox * S - pw + kx) * (ptrdiff_t)cs;
        for (int v = 0; v < V; v++)
            acc[v] = _mm256_fmadd_ps(_mm256_loadu_ps(dp + 8 * v), _mm256_loadu_ps(xp + 8 * v), acc[v]);
    }
}

/* 16 channels from ch (V = 2 vectors) or 8 (V = 1) */
CN_INLINE void block(double *dwk, const float *drow, size_t ds, const float *xrow, size_t xs,
                     int m, int c, int pw, const int *lo, const int *hi, int ch, const int K,
                     const int S, const int V) {
    __m256 a[5][2], b[5][2];
    for (int kx = 0; kx < 5; kx++)
        for (int v = 0; v < 2; v++) a[kx][v] = b[kx][v] = _mm256_setzero_ps();
    const int A = lo[0], B = hi[K - 1];
    const size_t cs = (size_t)c, step = (size_t)S * cs;
    for (int i = 0; i < m; i++) {
        const float *d = drow + (size_t)i * ds + ch, *x = xrow + (size_t)i * xs + ch;
        if (A < B) {
            int ox = A;
            const float *dp = d + (size_t)ox * cs, *xp = x + ((ptrdiff_t)ox * S - pw) * (ptrdiff_t)cs;
            if (K == 3) {
                for (; ox + 1 < B; ox += 2, dp += 2 * cs, xp += 2 * step) {
                    __m256 d0[2], d1[2];
                    for (int v = 0; v < V; v++) {
                        d0[v] = _mm256_loadu_ps(dp + 8 * v);
                        d1[v] = _mm256_loadu_ps(dp + cs + 8 * v);
                    }
                    for (int kx = 0; kx < 3; kx++)
                        for (int v = 0; v < V; v++) {
                            a[kx][v] = _mm256_fmadd_ps(d0[v], _mm256_loadu_ps(xp + kx * cs + 8 * v), a[kx][v]);
                            b[kx][v] = _mm256_fmadd_ps(d1[v], _mm256_loadu_ps(xp + step + kx * cs + 8 * v),
                                                       b[kx][v]);
                        }
                }
            }
            for (; ox < B; ox++, dp += cs, xp += step) {
                __m256 d0[2];
                for (int v = 0; v < V; v++) d0[v] = _mm256_loadu_ps(dp + 8 * v);
                for (int kx = 0; kx < K; kx++)
                    for (int v = 0; v < V; v++)
                        a[kx][v] = _mm256_fmadd_ps(d0[v], _mm256_loadu_ps(xp + kx * cs + 8 * v), a[kx][v]);
            }
        }
        /* the border pixels, where some taps fall outside the image (all of them when A >= B):
         * each tap over its pixels outside [A, B) */
        for (int kx = 0; kx < K; kx++) {
            const int m0 = A < B ? A : hi[kx], m1 = A < B ? B : hi[kx];
            tap_range(a[kx], d, x, lo[kx], m0, kx, cs, S, pw, V);
            tap_range(a[kx], d, x, m1, hi[kx], kx, cs, S, pw, V);
        }
    }
    for (int kx = 0; kx < K; kx++)
        for (int v = 0; v < 2; v++) a[kx][v] = _mm256_add_ps(a[kx][v], b[kx][v]);
    flush(dwk + ch, c, a, K, 8 * V);
}

CN_INLINE void krow(double *dwk, const float *drow, size_t ds, const float *xrow, size_t xs,
                    int m, int c, int pw, const int *lo, const int *hi, int c0, int c1,
                    const int K, const int S) {
    int ch = c0;
    for (; ch + 16 <= c1; ch += 16) block(dwk, drow, ds, xrow, xs, m, c, pw, lo, hi, ch, K, S, 2);
    if (ch + 8 <= c1) {
        block(dwk, drow, ds, xrow, xs, m, c, pw, lo, hi, ch, K, S, 1);
        ch += 8;
    }
    /* the last channels, one at a time */
    for (; ch < c1; ch++)
        for (int kx = 0; kx < K; kx++) {
            float s = 0;
            for (int i = 0; i < m; i++) {
                const float *d = drow + (size_t)i * ds + ch, *x = xrow + (size_t)i * xs + ch;
                for (int ox = lo[kx]; ox < hi[kx]; ox++)
                    s += d[(size_t)ox * c] * x[((ptrdiff_t)ox * S - pw + kx) * (ptrdiff_t)c];
            }
            dwk[(size_t)kx * c + ch] += s;
        }
}

void cn_dw_wgrad_krow__avx2(double *dwk, const float *drow, size_t ds, const float *xrow,
                            size_t xs, int m, int c, int pw, const int *lo, const int *hi, int c0,
                            int c1, int k, int s) {
    if (k == 3 && s == 1) krow(dwk, drow, ds, xrow, xs, m, c, pw, lo, hi, c0, c1, 3, 1);
    else if (k == 3) krow(dwk, drow, ds, xrow, xs, m, c, pw, lo, hi, c0, c1, 3, 2);
    else if (s == 1) krow(dwk, drow, ds, xrow, xs, m, c, pw, lo, hi, c0, c1, 5, 1);
    else krow(dwk, drow, ds, xrow, xs, m, c, pw, lo, hi, c0, c1, 5, 2);
}

/* ---- the data gradient's (and the portable forward's) tap tables ---- */

/* 16 channels from ch (V = 2) or 8 (V = 1) of M images: o[j] = (acc ? o[j] : bias or 0) +
 * sum over the taps k in order of x[k][j] * w[k], one fused multiply-add each */
CN_INLINE void taps_block(float *o, size_t os, const float *const *x, const float *const *w,
                          int nt, size_t xo, size_t xs, const float *bias, int acc, int ch,
                          const int M, const int V) {
    __m256 a[4][2];
    for (int j = 0; j < M; j++)
        for (int v = 0; v < V; v++)
            a[j][v] = acc    ? _mm256_loadu_ps(o + j * os + ch + 8 * v)
                      : bias ? _mm256_loadu_ps(bias + ch + 8 * v)
                             : _mm256_setzero_ps();
    for (int k = 0; k < nt; k++) {
        const float *xk = x[k] + xo + ch;
        for (int v = 0; v < V; v++) {
            const __m256 wv = _mm256_loadu_ps(w[k] + ch + 8 * v);
            for (int j = 0; j < M; j++)
                a[j][v] = _mm256_fmadd_ps(_mm256_loadu_ps(xk + j * xs + 8 * v), wv, a[j][v]);
        }
    }
    for (int j = 0; j < M; j++)
        for (int v = 0; v < V; v++) _mm256_storeu_ps(o + j * os + ch + 8 * v, a[j][v]);
}

CN_INLINE void taps_m(float *o, size_t os, const float *const *x, const float *const *w, int nt,
                      size_t xo, size_t xs, const float *bias, int acc, int c0, int c1,
                      const int M) {
    int ch = c0;
    for (; ch + 16 <= c1; ch += 16) taps_block(o, os, x, w, nt, xo, xs, bias, acc, ch, M, 2);
    if (ch + 8 <= c1) {
        taps_block(o, os, x, w, nt, xo, xs, bias, acc, ch, M, 1);
        ch += 8;
    }
    for (; ch < c1; ch++)
        for (int j = 0; j < M; j++) {
            float s = acc ? o[j * os + ch] : bias ? bias[ch] : 0.0f;
            for (int k = 0; k < nt; k++) s = __builtin_fmaf(x[k][xo + j * xs + ch], w[k][ch], s);
            o[j * os + ch] = s;
        }
}

void cn_dw_taps_sum__avx2(float *o, size_t os, const float *const *x, const float *const *w,
                          int nt, size_t xo, size_t xs, int m, const float *bias, int acc, int c0,
                          int c1) {
    int i = 0;
    for (; i + 4 <= m; i += 4)
        taps_m(o + (size_t)i * os, os, x, w, nt, xo + (size_t)i * xs, xs, bias, acc, c0, c1, 4);
    for (; i < m; i++)
        taps_m(o + (size_t)i * os, os, x, w, nt, xo + (size_t)i * xs, xs, bias, acc, c0, c1, 1);
}
