/* AVX-VNNI (256-bit vpdpbusd) GEMM tile for CPUs without AVX-512: up to 4 pixel rows x 16
 * output channels per pass (8 ymm accumulators) over the packed block, the epilogue scalar
 * (cn_qrq_one). Depthwise uses the plain-C row on these CPUs. */
#include <immintrin.h>
#include <string.h>

#include "kernels/qconv_impl.h"

#define AI static inline __attribute__((always_inline))

/* qconv_avxvnni_as_avx512vnni.c compiles this file again with the EVEX form of the same
 * instruction (AVX512-VL VNNI, same semantics), so that the kernel can be tested on CPUs that
 * have AVX-512 VNNI but not AVX-VNNI (a hypervisor may hide the latter) */
#if defined(CN_QAVXVNNI_AS_EVEX)
#define DPBUSD256 _mm256_dpbusd_epi32
#define TILE_NAME cn_qtile_avxvnni_evex
#elif defined(CN_QAVXVNNI_AS_AVX2)
/* qconv_avx2.c: plain AVX2 (no VNNI), vpdpbusd computed exactly: the even and the odd bytes of
 * each 16-bit word, zero-extended (u8) and sign-extended (s8) to words, through two vpmaddwd
 * (each product below 2^15 in magnitude, a pair's sum below 2^16: no saturation, the same sums
 * as vpdpbusd). Inlined, the broadcast's split is shared by the two weight vectors of a row and
 * the weights' split by the rows of the tile. */
static inline __attribute__((always_inline)) __m256i dpbusd_avx2(__m256i acc, __m256i a, __m256i b) {
    const __m256i lo = _mm256_set1_epi16(0x00ff);
    const __m256i a_even = _mm256_and_si256(a, lo), a_odd = _mm256_srli_epi16(a, 8);
    const __m256i b_even = _mm256_srai_epi16(_mm256_slli_epi16(b, 8), 8);
    const __m256i b_odd = _mm256_srai_epi16(b, 8);
    acc = _mm256_add_epi32(acc, _mm256_madd_epi16(a_even, b_even));
    return _mm256_add_epi32(acc, _mm256_madd_epi16(a_odd, b_odd));
}
#define DPBUSD256 dpbusd_avx2
#define TILE_NAME cn_qtile_avx2
#else
#define DPBUSD256 _mm256_dpbusd_avx_epi32
#define TILE_NAME cn_qtile_avxvnni
#endif

AI void tile_t(const int MR, uint8_t *out, int ldo, const uint8_t *A, int lda, const int8_t *B,
               int kp, int nbw, int nvalid, const cn_qrq *rq, int oc0) {
    for (int s = 0; s < nbw && s < nvalid; s += 16) {
        __m256i acc[4][2];
#pragma GCC unroll 4
        for (int r = 0; r < MR; r++) acc[r][0] = acc[r][1] = _mm256_setzero_si256();
        const int8_t *b = B + (size_t)s * 4;
        for (int k = 0; k < kp; k += 4, b += (size_t)nbw * 4) {
            const __m256i b0 = _mm256_loadu_si256((const __m256i *)b);
            const __m256i b1 = _mm256_loadu_si256((const __m256i *)(b + 32));
#pragma GCC unroll 4
            for (int r = 0; r < MR; r++) {
                int32_t v;
                memcpy(&v, A + (size_t)r * lda + k, 4);
                const __m256i av = _mm256_set1_epi32(v);
                acc[r][0] = DPBUSD256(acc[r][0], av, b0);
                acc[r][1] = DPBUSD256(acc[r][1], av, b1);
            }
        }
        const int nj = nvalid - s < 16 ? nvalid - s : 16;
        for (int r = 0; r < MR; r++) {
            int32_t t[16];
            _mm256_storeu_si256((__m256i *)t, acc[r][0]);
            _mm256_storeu_si256((__m256i *)(t + 8), acc[r][1]);
            for (int j = 0; j < nj; j++)
                out[(size_t)r * ldo + s + j] = cn_qrq_one(rq, t[j], oc0 + s + j);
        }
    }
}

void TILE_NAME(uint8_t *out, int ldo, const uint8_t *A, int lda, int mr, const int8_t *B, int kp,
                int nbw, int nvalid, const cn_qrq *rq, int oc0, const int8_t *pf, int pfl) {
    cn_qprefetch(pf, pfl);
    switch (mr) {
    case 1: tile_t(1, out, ldo, A, lda, B, kp, nbw, nvalid, rq, oc0); break;
    case 2: tile_t(2, out, ldo, A, lda, B, kp, nbw, nvalid, rq, oc0); break;
    case 3: tile_t(3, out, ldo, A, lda, B, kp, nbw, nvalid, rq, oc0); break;
    case 4: tile_t(4, out, ldo, A, lda, B, kp, nbw, nvalid, rq, oc0); break;
    default: break;
    }
}
