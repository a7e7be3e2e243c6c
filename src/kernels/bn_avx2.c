/* AVX2 per-channel sums of batch norm's training forward (see bn.h), for CPUs without AVX-512. */
#include <immintrin.h>

#include "kernels/bn.h"

/* the first n lanes (n in [0, 4]) of a vector of doubles */
static inline __m256i dmask(int n) {
    return _mm256_cmpgt_epi64(_mm256_set1_epi64x(n), _mm256_setr_epi64x(0, 1, 2, 3));
}

/* channels [j, j + 16) (masked past c) over rows [r0, r1): the running sums live in registers
 * for a tile of rows and go back to p, p2 after it, so that each channel still adds its rows in
 * order (mul then add, as the plain loop: the same bits). Masked loads and stores only for the
 * last, partial block: they cost several times plain ones on AMD's cores. */
static inline __attribute__((always_inline)) void chunk(double *p, double *p2, const float *x,
                                                        size_t r0, size_t r1, int c, int j) {
    const int left = c - j, full = left >= 16;
    __m256i dm[4];
    for (int v = 0; v < 4; v++) dm[v] = dmask(left - 4 * v < 0 ? 0 : left - 4 * v > 4 ? 4 : left - 4 * v);
    const __m256i fm0 = _mm256_cmpgt_epi32(_mm256_set1_epi32(left), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    const __m256i fm1 = _mm256_cmpgt_epi32(_mm256_set1_epi32(left - 8), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    __m256d s[4], q[4];
    for (int v = 0; v < 4; v++) {
        s[v] = full ? _mm256_loadu_pd(p + j + 4 * v) : _mm256_maskload_pd(p + j + 4 * v, dm[v]);
        q[v] = full ? _mm256_loadu_pd(p2 + j + 4 * v) : _mm256_maskload_pd(p2 + j + 4 * v, dm[v]);
    }
    const float *xr = x + r0 * (size_t)c + j;
    for (size_t i = r0; i < r1; i++, xr += c) {
        const __m256 a = full ? _mm256_loadu_ps(xr) : _mm256_maskload_ps(xr, fm0);
        const __m256 b = full ? _mm256_loadu_ps(xr + 8) : _mm256_maskload_ps(xr + 8, fm1);
        const __m256d v[4] = {_mm256_cvtps_pd(_mm256_castps256_ps128(a)),
                              _mm256_cvtps_pd(_mm256_extractf128_ps(a, 1)),
                              _mm256_cvtps_pd(_mm256_castps256_ps128(b)),
                              _mm256_cvtps_pd(_mm256_extractf128_ps(b, 1))};
        for (int t = 0; t < 4; t++) {
            s[t] = _mm256_add_pd(s[t], v[t]);
            q[t] = _mm256_add_pd(q[t], _mm256_mul_pd(v[t], v[t]));
        }
    }
    for (int v = 0; v < 4; v++) {
        if (full) {
            _mm256_storeu_pd(p + j + 4 * v, s[v]);
            _mm256_storeu_pd(p2 + j + 4 * v, q[v]);
        } else {
            _mm256_maskstore_pd(p + j + 4 * v, dm[v], s[v]);
            _mm256_maskstore_pd(p2 + j + 4 * v, dm[v], q[v]);
        }
    }
}

/* Rows per tile: as many as keep the tile's bytes of each input array within TILE_BYTES (in
 * L1 while its channel blocks pass over it), from 1 to 64. */
enum { TILE_BYTES = 16 * 1024 };
static size_t tile_rows(int c) {
    const size_t t = TILE_BYTES / (sizeof(float) * (size_t)c);
    return t < 1 ? 1 : t > 64 ? 64 : t;
}

void cn_bn_sums__avx2(double *p, double *p2, const float *x, size_t lo, size_t hi, int c) {
    const size_t T = tile_rows(c);
    for (size_t r0 = lo; r0 < hi; r0 += T) {
        const size_t r1 = hi - r0 < T ? hi : r0 + T;
        for (int j = 0; j < c; j += 16) chunk(p, p2, x, r0, r1, c, j);
    }
}
