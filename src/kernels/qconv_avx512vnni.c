/* AVX-512 VNNI int8 kernels: the GEMM tile (vpdpbusd, up to 6 pixel rows x 64 output channels in
 * 24 zmm accumulators) and the direct depthwise row (vpdpwssd on pairs of taps), both with the
 * requantization epilogue in vector registers; the lookup tables (SiLU, sigmoid) by vpermi2b
 * where the CPU has AVX-512 VBMI.
 *
 * The epilogue is bit-exact with cn_requant. For x (int32, after the saturating left shift) and
 * m = mult >= 0, gemmlowp's SaturatingRoundingDoublingHighMul is h = (p + 2^30) >> 31 with
 * p = x * m (int64; the nudge and the truncating division combine into that floor for either
 * sign of p, and it cannot saturate with m >= 0). RoundingDivideByPOT(h, e) for e > 0 is
 * (h + 2^(e-1) - [h < 0]) >> e; nested floors of integer divisions compose, so the whole is
 *     res = (p + 2^30 + 2^(30+e) - 2^31 [p < 0]) >> (31 + e)
 * and res = (p + 2^30) >> 31 for e = 0. ([h < 0] is [p + 2^30 < 0], but for p in [-2^30, 0)
 * both h and the formula with the correction give 0, so the sign of p serves.) Exponents >= 33
 * always give 0 (mult is replaced by 0 then), so the shift stays <= 63 and nothing overflows 64
 * bits. p is formed by vpmuldq on the even channels and on the odd ones shifted down, and the
 * low halves of the two results are interleaved back. */
#include <immintrin.h>
#include <string.h>

#include "kernels/qconv_impl.h"
#include "kernels/qops_table.h"

#define AI static inline __attribute__((always_inline))

typedef struct epi_const {
    __m512i lo, hi, zp, idx;
} epi_const;

AI epi_const epi_setup(const cn_qrq *rq) {
    epi_const c;
    c.lo = _mm512_set1_epi32(rq->lo);
    c.hi = _mm512_set1_epi32(rq->hi);
    c.zp = _mm512_set1_epi32(rq->zp_out);
    c.idx = _mm512_setr_epi32(0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30);
    return c;
}

AI __m512i rq_half(__m512i p, __m512i k, __m512i m3, __m512i sh) {
    __m512i t = _mm512_add_epi64(p, k);
    t = _mm512_mask_add_epi64(t, _mm512_movepi64_mask(p), t, m3);
    return _mm512_srav_epi64(t, sh);
}

/* 16 accumulators (channels of group g) to 16 clamped values in [qmin, qmax] (int32 lanes) */
AI __m512i requant16(__m512i x, const cn_qrqg *g, int any_left, const epi_const *c,
                     const int has_off) {
    if (!has_off) x = _mm512_add_epi32(x, _mm512_load_si512(g->off));
    if (any_left) {
        const __m512i L = _mm512_load_si512(g->left);
        const __m512i s = _mm512_sllv_epi32(x, L);
        const __mmask16 ov = _mm512_cmpneq_epi32_mask(_mm512_srav_epi32(s, L), x);
        const __m512i sat = _mm512_xor_si512(_mm512_srai_epi32(x, 31), _mm512_set1_epi32(INT32_MAX));
        x = _mm512_mask_blend_epi32(ov, s, sat);
    }
    const __m512i pe = _mm512_mul_epi32(x, _mm512_load_si512(g->me));
    const __m512i po = _mm512_mul_epi32(_mm512_srli_epi64(x, 32), _mm512_load_si512(g->mo));
    const __m512i re = rq_half(pe, _mm512_load_si512(g->k2), _mm512_load_si512(g->m3),
                               _mm512_load_si512(g->sh));
    const __m512i ro = rq_half(po, _mm512_load_si512(g->k2 + 8), _mm512_load_si512(g->m3 + 8),
                               _mm512_load_si512(g->sh + 8));
    /* the low halves of the 64-bit lanes, interleaved back into channel order */
    __m512i r = _mm512_permutex2var_epi32(re, c->idx, ro);
    r = _mm512_min_epi32(_mm512_max_epi32(r, c->lo), c->hi);
    return _mm512_add_epi32(r, c->zp);
}

/* the requantized values of x (channels o.. of group g, `mask` of them) to dst; has_off: x
 * already includes the offset g->off */
AI void store16(uint8_t *dst, __m512i x, const cn_qrqg *g, const cn_qrq *rq, const epi_const *c,
                __mmask16 mask, int o, const int has_off) {
    if (rq->scalar) {
        int32_t t[16];
        if (has_off) x = _mm512_sub_epi32(x, _mm512_load_si512(g->off));
        _mm512_storeu_si512(t, x);
        for (int i = 0; i < 16; i++)
            if (mask >> i & 1) dst[i] = cn_qrq_one(rq, t[i], o + i);
        return;
    }
    const __m512i q = requant16(x, g, rq->any_left, c, has_off);
    if (rq->lut) {
        uint8_t t[16];
        _mm_storeu_si128((__m128i *)t, _mm512_cvtepi32_epi8(q));
        for (int i = 0; i < 16; i++)
            if (mask >> i & 1) dst[i] = rq->lut[t[i]];
        return;
    }
    _mm512_mask_cvtepi32_storeu_epi8(dst, mask, q);
}

/* The fast epilogue (rq->fast: every e = shift in [1, 22], |zp_out| <= 255, no lut) of 16
 * accumulators that include the offset: zp_out + the requantized value, exact in int32 lanes
 * (|result| <= 2^30 + 1 for e >= 1). The formula above with zp_out * 2^(31+e) added to the
 * constant (floor((t + z 2^s) / 2^s) = floor(t / 2^s) + z; |p| < 2^62 and the constant < 2^62,
 * so the sum stays in int64). The odd channels are shifted by e - 1 only, which leaves the low
 * 32 bits of the result in the high half of their 64-bit lanes, where a dword blend takes them. */
AI __m512i rq_fast16(__m512i x, const cn_qrqg *g) {
    const __m512i m3 = _mm512_set1_epi64(-((int64_t)1 << 31));
    const __m512i pe = _mm512_mul_epi32(x, _mm512_load_si512(g->me));
    const __m512i po = _mm512_mul_epi32(_mm512_srli_epi64(x, 32), _mm512_load_si512(g->mo));
    __m512i te = _mm512_add_epi64(pe, _mm512_load_si512(g->kz));
    __m512i to = _mm512_add_epi64(po, _mm512_load_si512(g->kz + 8));
    te = _mm512_mask_add_epi64(te, _mm512_movepi64_mask(pe), te, m3);
    to = _mm512_mask_add_epi64(to, _mm512_movepi64_mask(po), to, m3);
    te = _mm512_srav_epi64(te, _mm512_load_si512(g->se));
    to = _mm512_srav_epi64(to, _mm512_load_si512(g->so));
    return _mm512_mask_blend_epi32((__mmask16)0xAAAA, te, to);
}

/* The narrow form of rq_fast16 (rq->narrow: |x| < 2^29), with the sign correction in int32
 * lanes. For t = p + kz = H 2^31 + L (0 <= L < 2^31) the formula above is
 *     floor(((H - [p < 0]) 2^31 + L) / 2^(31+e)) = floor((H - [p < 0]) / 2^e)
 * (an integer plus a fraction below 1, divided by 2^e, floors as the integer alone), and
 * [p < 0] = [x < 0] (for me = 0, H = 2^(e-1) + zp 2^e, and either way the result is zp). H is
 * the high half of 2t = (2x) me + 2kz, which the products of 2x give directly for both the even
 * and the odd channels; one dword permutation gathers the 16 high halves in channel order. */
AI __m512i rq_narrow16(__m512i x, const cn_qrqg *g) {
    const __m512i idx = _mm512_setr_epi32(1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31);
    const __m512i x2 = _mm512_add_epi32(x, x);
    const __m512i pe = _mm512_mul_epi32(x2, _mm512_load_si512(g->me));
    const __m512i po = _mm512_mul_epi32(_mm512_shuffle_epi32(x2, _MM_PERM_CDAB),
                                        _mm512_load_si512(g->mo));
    const __m512i te = _mm512_add_epi64(pe, _mm512_load_si512(g->kz2));
    const __m512i to = _mm512_add_epi64(po, _mm512_load_si512(g->kz2 + 8));
    const __m512i h = _mm512_add_epi32(_mm512_permutex2var_epi32(te, idx, to), _mm512_srai_epi32(x, 31));
    return _mm512_srav_epi32(h, _mm512_load_si512(g->shift));
}

/* 4 x 16 results of rq_fast16 (64 consecutive channels) to bytes clamped to [qmin, qmax], in
 * channel order: the saturating packs keep the order of the clamp (|zp_out| <= 255, so an int16
 * saturation still lands outside [0, 255] on the right side), a dword permutation undoes their
 * per-128-bit-lane interleave */
AI __m512i pack64(__m512i v0, __m512i v1, __m512i v2, __m512i v3, __m512i lo8, __m512i hi8) {
    const __m512i idx = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    __m512i b = _mm512_packus_epi16(_mm512_packs_epi32(v0, v1), _mm512_packs_epi32(v2, v3));
    b = _mm512_min_epu8(_mm512_max_epu8(b, lo8), hi8);
    return _mm512_permutexvar_epi32(idx, b);
}

/* The fused residual add of 64 output bytes b (channel order, already clamped) with the 64
 * residual bytes at r (the first n valid): cn_q_add's formula, exact in int32 lanes. The
 * multipliers fit in int16 (cn_qconv2d checks), so one vpdpwssd per 16 outputs forms
 * k + ma a + mb r from dwords that hold a in the low word and r in the high one, where the
 * constant k (cn_qadd_const) holds the zero points, the rounding term and zo. The byte and word
 * unpacks leave 4 channels of each 128-bit lane per vector, which the saturating packs put back
 * in channel order (saturation keeps the order of the clamp, as in pack64). */
AI __m512i add64(__m512i b, const uint8_t *r, __mmask64 n, const cn_qadd *p) {
    const __m512i rv = _mm512_maskz_loadu_epi8(n, r), z = _mm512_setzero_si512();
    const __m512i m = _mm512_set1_epi32((int32_t)((uint32_t)(uint16_t)p->ma |
                                                  (uint32_t)(uint16_t)p->mb << 16));
    const __m512i k = _mm512_set1_epi32((int32_t)cn_qadd_const(p));
    const __m512i sh = _mm512_set1_epi32(p->sh);
    const __m512i blo = _mm512_unpacklo_epi8(b, z), bhi = _mm512_unpackhi_epi8(b, z);
    const __m512i rlo = _mm512_unpacklo_epi8(rv, z), rhi = _mm512_unpackhi_epi8(rv, z);
#define ADD16(x) _mm512_srav_epi32(_mm512_dpwssd_epi32(k, x, m), sh)
    const __m512i v0 = ADD16(_mm512_unpacklo_epi16(blo, rlo));
    const __m512i v1 = ADD16(_mm512_unpackhi_epi16(blo, rlo));
    const __m512i v2 = ADD16(_mm512_unpacklo_epi16(bhi, rhi));
    const __m512i v3 = ADD16(_mm512_unpackhi_epi16(bhi, rhi));
#undef ADD16
    const __m512i o = _mm512_packus_epi16(_mm512_packs_epi32(v0, v1), _mm512_packs_epi32(v2, v3));
    return _mm512_min_epu8(_mm512_max_epu8(o, _mm512_set1_epi8((char)p->qmin)),
                           _mm512_set1_epi8((char)p->qmax));
}

/* ---- the lut on AVX-512 VBMI (a separate target: called only where the CPU has it) ---- */

#define VBMI __attribute__((target("avx512vbmi")))

/* the 256-byte table t as two 128-entry halves, each a vpermi2b over two vectors; bit 7 of the
 * index picks the half */
VBMI static inline __m512i lut64(__m512i b, const __m512i t[4]) {
    const __m512i lo = _mm512_permutex2var_epi8(t[0], b, t[1]);
    const __m512i hi = _mm512_permutex2var_epi8(t[2], b, t[3]);
    return _mm512_mask_blend_epi8(_mm512_movepi8_mask(b), lo, hi);
}

VBMI static inline void lut_load(__m512i t[4], const uint8_t *lut) {
    for (int i = 0; i < 4; i++) t[i] = _mm512_loadu_si512(lut + 64 * i);
}

/* out of line: the GEMM tile that calls it is compiled without VBMI */
VBMI __attribute__((noinline)) static __m512i lut64_vbmi(__m512i b, const uint8_t *lut) {
    __m512i t[4];
    lut_load(t, lut);
    return lut64(b, t);
}

VBMI void cn_qlut_vbmi(uint8_t *dst, const uint8_t *src, size_t n, const uint8_t *lut) {
    __m512i t[4];
    lut_load(t, lut);
    for (size_t i = 0; i < n; i += 64) {
        const __mmask64 m = n - i >= 64 ? ~(__mmask64)0 : ((__mmask64)1 << (n - i)) - 1;
        _mm512_mask_storeu_epi8(dst + i, m, lut64(_mm512_maskz_loadu_epi8(m, src + i), t));
    }
}

/* the fast epilogue of a tile's MR x NV x 16 sums (rq_fast16, or rq_narrow16 with NARROW) */
AI void fast_rows(const int NARROW, const int MR, const int NV, const int32_t *sums, uint8_t *out,
                  int ldo, int nvalid, const cn_qrq *rq, const cn_qrqg *g0) {
    const __m512i lo8 = _mm512_set1_epi8((char)rq->qmin), hi8 = _mm512_set1_epi8((char)rq->qmax);
    const __mmask64 bm = nvalid >= 64 ? ~(__mmask64)0 : ((__mmask64)1 << nvalid) - 1;
    for (int r = 0; r < MR; r++) {
        __m512i v[4];
#pragma GCC unroll 4
        for (int j = 0; j < 4; j++) {
            const __m512i x = _mm512_load_si512(sums + (r * 4 + j) * 16);
            v[j] = j >= NV ? _mm512_setzero_si512()
                   : NARROW ? rq_narrow16(x, &g0[j]) : rq_fast16(x, &g0[j]);
        }
        __m512i b = pack64(v[0], v[1], v[2], v[3], lo8, hi8);
        if (rq->lut_vbmi) b = lut64_vbmi(b, rq->lut);
        if (rq->tile_add) {
            uint8_t *dst = out + (size_t)r * ldo;
            b = add64(b, rq->res + (dst - rq->out0), bm, &rq->add);
        }
        if (NV == 4 && nvalid >= 64)
            _mm512_storeu_si512(out + (size_t)r * ldo, b);
        else
            _mm512_mask_storeu_epi8(out + (size_t)r * ldo, bm, b);
    }
}

/* ---- GEMM tile ---- */

/* pf: pfl cache lines to fetch into L1 meanwhile (the driver's prefetch of weights needed
 * soon), one per k step, so that they never pile up in the line fill buffers; the lines beyond
 * the k steps go first.
 * pin: NULL, or the partial sums to start from (a K-blocked GEMM: the layout of sums below);
 * pout: NULL, or where to leave the sums instead of running the epilogue. Row r of A starts at
 * ar[r], or (ar NULL) at A + r * lda; k runs over nseg segments of kp, segment s of each row at
 * s * segstep from its start (one segment: A's rows are contiguous in k; several: the kernel
 * rows of an implicit GEMM, read in place from the padded input, see qconv.c). */
AI void tile_t(const int MR, const int NV, uint8_t *out, int ldo, const uint8_t *A, int lda,
               const uint8_t *const *ar, const int8_t *B, int kp, int nseg, size_t segstep,
               int nvalid, const cn_qrq *rq, int oc0, const int32_t *pin, int32_t *pout,
               const int8_t *pf, int pfl) {
    const cn_qrqg *g0 = &rq->g[oc0 >> 4];
    for (; pfl > nseg * kp / 4; pfl--, pf += 64) __builtin_prefetch(pf, 0, 3);
    const int8_t *const pfe = pf + (size_t)64 * pfl;
    /* the accumulators start from the offset (bias - zp_in * sum w) */
    __m512i acc[6][4];
    if (pin) {
#pragma GCC unroll 6
        for (int r = 0; r < MR; r++)
#pragma GCC unroll 4
            for (int j = 0; j < NV; j++) acc[r][j] = _mm512_load_si512(pin + (r * 4 + j) * 16);
    } else {
#pragma GCC unroll 6
        for (int r = 0; r < MR; r++)
#pragma GCC unroll 4
            for (int j = 0; j < NV; j++) acc[r][j] = _mm512_load_si512(g0[j].off);
    }
    for (int s = 0; s < nseg; s++) {
        const uint8_t *a[6];
#pragma GCC unroll 6
        for (int r = 0; r < MR; r++)
            a[r] = (ar ? ar[r] : A + (size_t)r * lda) + (size_t)s * segstep;
        for (int k = 0; k < kp; k += 4) {
            if (pf < pfe) __builtin_prefetch(pf, 0, 3), pf += 64;
            __m512i b[4];
#pragma GCC unroll 4
            for (int j = 0; j < NV; j++) b[j] = _mm512_loadu_si512(B + j * 64);
            B += NV * 64;
#pragma GCC unroll 6
            for (int r = 0; r < MR; r++) {
                int32_t v;
                memcpy(&v, a[r] + k, 4);
                const __m512i av = _mm512_set1_epi32(v);
#pragma GCC unroll 4
                for (int j = 0; j < NV; j++) acc[r][j] = _mm512_dpbusd_epi32(acc[r][j], av, b[j]);
            }
        }
    }
    if (pout) {
#pragma GCC unroll 6
        for (int r = 0; r < MR; r++)
#pragma GCC unroll 4
            for (int j = 0; j < NV; j++) _mm512_store_si512(pout + (r * 4 + j) * 16, acc[r][j]);
        return;
    }
    /* the epilogue works from memory: with all 24 accumulators live through it the register
     * allocator would keep them on the stack inside the k loop too */
    int32_t sums[6 * 4 * 16] __attribute__((aligned(64)));
#pragma GCC unroll 6
    for (int r = 0; r < MR; r++)
#pragma GCC unroll 4
        for (int j = 0; j < NV; j++) _mm512_store_si512(sums + (r * 4 + j) * 16, acc[r][j]);
    __asm__ volatile("" : : "r"(sums) : "memory");
    if (rq->fast) {
        if (rq->narrow) fast_rows(1, MR, NV, sums, out, ldo, nvalid, rq, g0);
        else fast_rows(0, MR, NV, sums, out, ldo, nvalid, rq, g0);
        return;
    }
    const epi_const c = epi_setup(rq);
    for (int j = 0; j < NV; j++) {
        const int cnt = nvalid - j * 16;
        if (cnt <= 0) break;
        const __mmask16 mask = cnt >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << cnt) - 1);
        const cn_qrqg *g = &rq->g[(oc0 >> 4) + j];
        for (int r = 0; r < MR; r++)
            store16(out + (size_t)r * ldo + j * 16, _mm512_load_si512(sums + (r * 4 + j) * 16),
                    g, rq, &c, mask, oc0 + j * 16, 1);
    }
}

#define TILE_CASE(MR, NV)                                                           \
    case (MR) * 8 + (NV):                                                           \
        tile_t(MR, NV, out, ldo, A, lda, ar, B, kp, nseg, segstep, nvalid, rq, oc0, pin, pout, pf, \
               pfl);                                                                        \
        break;
#define TILE_ROW(MR) TILE_CASE(MR, 1) TILE_CASE(MR, 2) TILE_CASE(MR, 3) TILE_CASE(MR, 4)

static void tile_any(uint8_t *out, int ldo, const uint8_t *A, int lda, const uint8_t *const *ar,
                     int mr, const int8_t *B, int kp, int nseg, size_t segstep, int nbw,
                     int nvalid, const cn_qrq *rq, int oc0, const int32_t *pin, int32_t *pout,
                     const int8_t *pf, int pfl) {
    switch (mr * 8 + nbw / 16) {
        TILE_ROW(1) TILE_ROW(2) TILE_ROW(3) TILE_ROW(4) TILE_ROW(5) TILE_ROW(6)
    default: break;
    }
}

void cn_qtile_avx512vnni_part(uint8_t *out, int ldo, const uint8_t *A, int lda, int mr,
                              const int8_t *B, int kp, int nbw, int nvalid, const cn_qrq *rq,
                              int oc0, const int32_t *pin, int32_t *pout, const int8_t *pf,
                              int pfl) {
    tile_any(out, ldo, A, lda, NULL, mr, B, kp, 1, 0, nbw, nvalid, rq, oc0, pin, pout, pf, pfl);
}

void cn_qtile_avx512vnni_seg(uint8_t *out, int ldo, const uint8_t *A, int lda, int mr,
                             const int8_t *B, int seg, int nseg, size_t segstep, int nbw,
                             int nvalid, const cn_qrq *rq, int oc0) {
    tile_any(out, ldo, A, lda, NULL, mr, B, seg, nseg, segstep, nbw, nvalid, rq, oc0, NULL, NULL,
             NULL, 0);
}

void cn_qtile_avx512vnni_rows(uint8_t *out, int ldo, const uint8_t *const *ar, int mr,
                              const int8_t *B, int seg, int nseg, size_t segstep, int nbw,
                              int nvalid, const cn_qrq *rq, int oc0, const int32_t *pin,
                              int32_t *pout, const int8_t *pf, int pfl) {
    tile_any(out, ldo, NULL, 0, ar, mr, B, seg, nseg, segstep, nbw, nvalid, rq, oc0, pin, pout,
             pf, pfl);
}

void cn_qtile_avx512vnni(uint8_t *out, int ldo, const uint8_t *A, int lda, int mr,
                         const int8_t *B, int kp, int nbw, int nvalid, const cn_qrq *rq,
                         int oc0, const int8_t *pf, int pfl) {
    cn_qtile_avx512vnni_part(out, ldo, A, lda, mr, B, kp, nbw, nvalid, rq, oc0, NULL, NULL, pf,
                             pfl);
}

/* ---- depthwise by word pairs ----
 * 32 channels at a time as 16-bit words: the input of two horizontally adjacent taps, (x - zp)
 * of each, interleaved into dwords (unpacklo/hi_epi16 leave channels 8L..8L+3 and 8L+4..8L+7 of
 * each 128-bit lane L in two vectors), against the matching pair of weights, by vpdpwssd: two
 * taps of 16 channels per instruction, exact in int32 (|x - zp| <= 255, |w| <= 128: a sum of
 * kh * kw products below 2^15 each). Each input row's pairs are built once into a per-thread ring
 * of KH rows (kh <= 8) that consecutive output rows share; a strip of 8 output pixels x 32
 * channels (16 accumulators) passes over them with the weight pair in registers; a kernel row of
 * odd width pairs its last tap with a zero weight. The accumulators are put back in channel
 * order and requantized as above. */

static inline int dwp_np(const cn_qconv_desc *d) { return (d->kw + 1) / 2; }
/* pair positions of an output row: pair i covers input columns i - pw and i - pw + 1 */
static inline int dwp_wp(const cn_qconv_desc *d) { return (d->ow - 1) * d->sw + 2 * dwp_np(d); }
static inline int dwp_blocks(const cn_qconv_desc *d) { return (d->c + 31) / 32; }

/* The scratch of a thread: the weight pairs of every block (KH x np x 2 vectors a block), a ring
 * of KH rows of pairs per block (wpn x 2 vectors a row; input row iy in slot iy % KH), and the
 * ring's tags (which image row each slot holds, -1: none). */
size_t cn_qdw_pairs_scratch(const cn_qconv_desc *d) {
    const size_t nb = (size_t)dwp_blocks(d), kh = (size_t)d->kh;
    return (nb * kh * dwp_np(d) + nb * kh * dwp_wp(d)) * 128 + (kh * sizeof(int) + 63) / 64 * 64;
}

/* the parts of a thread's scratch */
static __m512i *dwp_weights(void *scratch) { return (__m512i *)scratch; }
static __m512i *dwp_ring(const cn_qconv_desc *d, void *scratch) {
    return (__m512i *)scratch + (size_t)dwp_blocks(d) * d->kh * dwp_np(d) * 2;
}
static int *dwp_tags(const cn_qconv_desc *d, void *scratch) {
    return (int *)(dwp_ring(d, scratch) + (size_t)dwp_blocks(d) * d->kh * dwp_wp(d) * 2);
}

void cn_qdw_pairs_begin(const int8_t *w, const cn_qconv_desc *d, void *scratch) {
    const int C = d->c, KH = d->kh, KW = d->kw, np = dwp_np(d), nb = dwp_blocks(d);
    __m512i *wp = dwp_weights(scratch);
    const __m512i z = _mm512_setzero_si512();
    for (int b = 0; b < nb; b++) {
        const int c0 = 32 * b, cnt = C - c0 < 32 ? C - c0 : 32;
        const __mmask32 m = cnt >= 32 ? ~(__mmask32)0 : ((__mmask32)1 << cnt) - 1;
        for (int ky = 0; ky < KH; ky++)
            for (int p = 0; p < np; p++) {
                const int8_t *wt = w + ((size_t)ky * KW + 2 * p) * C + c0;
                const __m512i x = _mm512_cvtepi8_epi16(_mm256_maskz_loadu_epi8(m, wt));
                const __m512i y = 2 * p + 1 < KW
                                      ? _mm512_cvtepi8_epi16(_mm256_maskz_loadu_epi8(m, wt + C))
                                      : z;
                __m512i *q = wp + (((size_t)b * KH + ky) * np + p) * 2;
                q[0] = _mm512_unpacklo_epi16(x, y);
                q[1] = _mm512_unpackhi_epi16(x, y);
            }
    }
    int *tag = dwp_tags(d, scratch);
    for (int i = 0; i < KH; i++) tag[i] = -1;
}

/* S output pixels from ox (input pair position of pixel s: (ox + s) * SW), channels c0.. */
AI void dwp_strip(const int S, const int SW, uint8_t *orow, const __m512i *const *rows,
                  const __m512i *wp, int ky0, int ky1, int np, int ox, int C, int c0, int cnt,
                  const cn_qrq *rq, const epi_const *c) {
    __m512i al[8], ah[8];
#pragma GCC unroll 8
    for (int s = 0; s < S; s++) al[s] = ah[s] = _mm512_setzero_si512();
    for (int ky = ky0; ky < ky1; ky++) {
        const __m512i *row = rows[ky] + (size_t)ox * SW * 2;
        const __m512i *wk = wp + (size_t)ky * np * 2;
        for (int p = 0; p < np; p++) {
            const __m512i wl = wk[2 * p], wh = wk[2 * p + 1];
#pragma GCC unroll 8
            for (int s = 0; s < S; s++) {
                const __m512i *q = row + (size_t)(s * SW + 2 * p) * 2;
                al[s] = _mm512_dpwssd_epi32(al[s], _mm512_load_si512(q), wl);
                ah[s] = _mm512_dpwssd_epi32(ah[s], _mm512_load_si512(q + 1), wh);
            }
        }
    }
    const __m512i lo_idx = _mm512_setr_epi32(0, 1, 2, 3, 16, 17, 18, 19, 4, 5, 6, 7, 20, 21, 22, 23);
    const __m512i hi_idx =
        _mm512_setr_epi32(8, 9, 10, 11, 24, 25, 26, 27, 12, 13, 14, 15, 28, 29, 30, 31);
    const __mmask16 m0 = cnt >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << cnt) - 1);
    const __mmask16 m1 = cnt >= 32 ? (__mmask16)0xFFFF
                         : cnt > 16 ? (__mmask16)((1u << (cnt - 16)) - 1) : 0;
    const cn_qrqg *g = &rq->g[c0 >> 4];
    if (rq->fast) { /* the GEMM's fast epilogue: the offset added, 32 bytes packed at once */
        const __m512i lo8 = _mm512_set1_epi8((char)rq->qmin), hi8 = _mm512_set1_epi8((char)rq->qmax);
        const __m512i z = _mm512_setzero_si512();
        const __mmask64 bm = ((__mmask64)1 << cnt) - 1;
#pragma GCC unroll 8
        for (int s = 0; s < S; s++) {
            const __m512i v0 = rq_fast16(
                _mm512_add_epi32(_mm512_permutex2var_epi32(al[s], lo_idx, ah[s]),
                                 _mm512_load_si512(g->off)), g);
            const __m512i v1 =
                m1 ? rq_fast16(_mm512_add_epi32(_mm512_permutex2var_epi32(al[s], hi_idx, ah[s]),
                                                _mm512_load_si512(g[1].off)), g + 1)
                   : z;
            _mm512_mask_storeu_epi8(orow + (size_t)(ox + s) * C + c0, bm,
                                    pack64(v0, v1, z, z, lo8, hi8));
        }
        return;
    }
#pragma GCC unroll 8
    for (int s = 0; s < S; s++) {
        uint8_t *dst = orow + (size_t)(ox + s) * C + c0;
        store16(dst, _mm512_permutex2var_epi32(al[s], lo_idx, ah[s]), g, rq, c, m0, c0, 0);
        if (m1)
            store16(dst + 16, _mm512_permutex2var_epi32(al[s], hi_idx, ah[s]), g + 1, rq, c, m1,
                    c0 + 16, 0);
    }
}

AI void dwp_row_t(const int SW, uint8_t *out, const uint8_t *in, const cn_qconv_desc *d,
                  const cn_qrq *rq, int n, int oy, void *scratch) {
    const int C = d->c, W = d->w, OW = d->ow, KH = d->kh, pw = d->pw;
    const int np = dwp_np(d), wpn = dwp_wp(d), nb = dwp_blocks(d);
    const int iy0 = oy * d->sh - d->ph;
    const int ky0 = iy0 < 0 ? -iy0 : 0, ky1 = d->h - iy0 < KH ? d->h - iy0 : KH;
    const __m512i *wp = dwp_weights(scratch);
    __m512i *ring = dwp_ring(d, scratch);
    int *tag = dwp_tags(d, scratch);
    const __m512i zp = _mm512_set1_epi16((short)d->zp_in), z = _mm512_setzero_si512();
    const epi_const c = epi_setup(rq);
    const uint8_t *inb = in + (size_t)n * d->h * W * C;
    uint8_t *orow = out + ((size_t)n * d->oh + oy) * OW * C;
    /* which kernel rows need their input row packed (not in the ring from the row before) */
    int build[8] = {0}, slot[8] = {0};
    for (int ky = ky0; ky < ky1; ky++) {
        const int iy = iy0 + ky, key = n * d->h + iy;
        slot[ky] = iy % KH;
        build[ky] = tag[slot[ky]] != key;
        tag[slot[ky]] = key;
    }
    for (int b = 0; b < nb; b++) {
        const int c0 = 32 * b, cnt = C - c0 < 32 ? C - c0 : 32;
        const __mmask32 m = cnt >= 32 ? ~(__mmask32)0 : ((__mmask32)1 << cnt) - 1;
        const __m512i *rows[8];
        for (int ky = ky0; ky < ky1; ky++) {
            __m512i *row = ring + ((size_t)b * KH + slot[ky]) * wpn * 2;
            rows[ky] = row;
            if (!build[ky]) continue;
            const uint8_t *src = inb + (size_t)(iy0 + ky) * W * C + c0;
            /* x16 of column i - pw, 0 outside the image */
#define DWP_X(i)                                                                             \
    ((i) - pw >= 0 && (i) - pw < W                                                           \
         ? _mm512_sub_epi16(                                                                 \
               _mm512_cvtepu8_epi16(_mm256_maskz_loadu_epi8(m, src + (size_t)((i) - pw) * C)), \
               zp)                                                                           \
         : z)
            __m512i prev = DWP_X(0);
            for (int i = 0; i < wpn; i++) {
                const __m512i next = DWP_X(i + 1);
                row[2 * i] = _mm512_unpacklo_epi16(prev, next);
                row[2 * i + 1] = _mm512_unpackhi_epi16(prev, next);
                prev = next;
            }
#undef DWP_X
        }
        const __m512i *wb = wp + (size_t)b * KH * np * 2;
        int ox = 0;
        for (; ox + 8 <= OW; ox += 8)
            dwp_strip(8, SW, orow, rows, wb, ky0, ky1, np, ox, C, c0, cnt, rq, &c);
        if (ox + 4 <= OW)
            dwp_strip(4, SW, orow, rows, wb, ky0, ky1, np, ox, C, c0, cnt, rq, &c), ox += 4;
        if (ox + 2 <= OW)
            dwp_strip(2, SW, orow, rows, wb, ky0, ky1, np, ox, C, c0, cnt, rq, &c), ox += 2;
        if (ox < OW) dwp_strip(1, SW, orow, rows, wb, ky0, ky1, np, ox, C, c0, cnt, rq, &c);
    }
}

void cn_qdwrow_pairs_avx512vnni(uint8_t *out, const uint8_t *in, const cn_qconv_desc *d,
                                const cn_qrq *rq, int n, int oy, void *scratch) {
    if (d->sw == 1)
        dwp_row_t(1, out, in, d, rq, n, oy, scratch);
    else if (d->sw == 2)
        dwp_row_t(2, out, in, d, rq, n, oy, scratch);
    else
        dwp_row_t(d->sw, out, in, d, rq, n, oy, scratch);
}

/* ---- the int8 linear layer's dot product ---- */

int32_t cn_qdot_avx512vnni(const uint8_t *x, const int8_t *w, int k) {
    __m512i acc = _mm512_setzero_si512();
    for (int i = 0; i < k; i += 64) {
        const __mmask64 m = k - i >= 64 ? ~(__mmask64)0 : ((__mmask64)1 << (k - i)) - 1;
        acc = _mm512_dpbusd_epi32(acc, _mm512_maskz_loadu_epi8(m, x + i),
                                  _mm512_maskz_loadu_epi8(m, w + i));
    }
    return _mm512_reduce_add_epi32(acc);
}
