/* Private to the int8 convolution kernels (qconv.c and its per-ISA files): the packed weight
 * layout, the per-channel requantization parameters prepared once per call, and the signatures
 * of the per-ISA tile kernels.
 *
 * Packed weights (cn_qconv_pack), K = kh*kw*c, KP = K rounded up to a multiple of 4:
 *   blocks of CN_QNB = 64 output channels (the last one narrower: the remaining channels rounded
 *   up to a multiple of 16), block b at byte b * 64 * KP, laid out [KP/4][nbw][4]: for each group
 *   of 4 consecutive k, the 4 int8 weights of each channel side by side (the operand layout of
 *   vpdpbusd). Channels past oc and k past K are 0. After the weights (at byte KP * OC16, OC16 =
 *   oc rounded up to 16): int32 sum over k of w[o][k] for each of the OC16 channels. */
#ifndef CN_KERNELS_QCONV_IMPL_H
#define CN_KERNELS_QCONV_IMPL_H

#include <stdint.h>

#include "kernels/qconv.h"

#define CN_QNB 64

/* Requantization parameters of 16 consecutive output channels, in the forms the kernels use.
 * Scalar kernels read off, mult, shift; the AVX-512 epilogue reads the rest (see
 * qconv_avx512vnni.c for the derivation). 64-byte aligned. */
typedef struct cn_qrqg {
    int32_t off[16];   /* bias - zp_in * sum w (dense) or bias (depthwise), wrapping */
    int32_t mult[16];  /* as given */
    int32_t shift[16]; /* as given */
    int32_t left[16];  /* max(-shift, 0) */
    int32_t me[16];    /* mult, or 0 where the right shift is >= 33 (the result is then 0) */
    int64_t mo[8];     /* me of the odd channels, one per 64-bit lane */
    int64_t k2[16];    /* even channels then odd: 2^30 + (e > 0 ? 2^(30+e) : 0) */
    int64_t m3[16];    /* e > 0 ? -2^31 : 0 */
    int64_t sh[16];    /* 31 + e */
    /* the fast GEMM epilogue (cn_qrq.fast: every shift in [1, 22], |zp_out| <= 255), which
     * also folds zp_out in: even channels then odd */
    int64_t kz[16];    /* 2^30 + 2^(30+e) + zp_out * 2^(31+e) */
    int64_t se[8];     /* 31 + e, even channels */
    int64_t so[8];     /* e - 1, odd channels (the result lands in the high half) */
    /* the narrow GEMM epilogue (cn_qrq.narrow: fast, and every accumulator below 2^29 in
     * magnitude): 2 kz, even channels then odd */
    int64_t kz2[16];
} __attribute__((aligned(64))) cn_qrqg;

typedef struct cn_qrq {
    const cn_qrqg *g; /* one per 16 channels, from channel 0 */
    int32_t zp_out, qmin, qmax;
    int32_t lo, hi;   /* clamp of the requantized value before adding zp_out */
    const uint8_t *lut;
    int any_left;     /* some shift < 0 */
    int scalar;       /* parameters outside what the vector epilogue handles: use cn_qrq_one */
    int fast;         /* the fast GEMM epilogue applies (kz, se, so; lut only with lut_vbmi) */
    int narrow;       /* and its narrow form (kz2): the GEMM's accumulators stay below 2^29 */
    int32_t off_max;  /* the largest |off| of the channels (INT32_MAX: unknown or larger) */
    int fast_lut;     /* it would, but for the lut */
    int lut_vbmi;     /* the AVX-512 VNNI kernels apply the lut 64 bytes at a time (VBMI) */
    /* the fused residual add (cn_qepilogue.res): the residual of output byte dst is at
     * res + (dst - out0); tile_add: the tile kernel adds it (else the driver does, after it) */
    const uint8_t *res, *out0;
    cn_qadd add;
    int tile_add;
} cn_qrq;

/* The constant of the tile's fused residual add, sh in [1, 31]: the rounding term, the zero
 * points and zo * 2^sh, so that (ma a + mb r + k) >> sh is cn_q_add's value before the clamp
 * (floor((t + zo 2^sh) / 2^sh) = floor(t / 2^sh) + zo). */
static inline int64_t cn_qadd_const(const cn_qadd *a) {
    return ((int64_t)1 << (a->sh - 1)) - (int64_t)a->za * a->ma - (int64_t)a->zb * a->mb +
           (int64_t)a->zo * ((int64_t)1 << a->sh);
}

/* Fills the groups covering channels [0, n) (the rest of the last group neutral). wsum: n int32
 * weight sums, maybe unaligned; NULL: no zero-point correction. */
void cn_qrq_fill(cn_qrqg *g, const cn_qepilogue *ep, const void *wsum, int32_t zp_in, int n);
/* What cn_qrq_init needs to know of all n channels' shifts and multipliers. */
typedef struct cn_qrq_flags {
    int any_left;  /* some shift < 0 */
    int neg_mult;  /* some multiplier < 0 */
    int shifts_ok; /* every shift in [1, 22] */
    int32_t off_max; /* the largest |off| of the filled groups, saturated (INT32_MAX: unknown) */
} cn_qrq_flags;
cn_qrq_flags cn_qrq_scan(const cn_qepilogue *ep, int n);
void cn_qrq_init(cn_qrq *rq, const cn_qrqg *g, const cn_qepilogue *ep, cn_qrq_flags f);

/* The scalar epilogue of one accumulator (without the offset) of channel o. */
static inline uint8_t cn_qrq_one(const cn_qrq *rq, int32_t acc, int o) {
    const cn_qrqg *g = &rq->g[o >> 4];
    const int i = o & 15;
    const int32_t x = (int32_t)((uint32_t)acc + (uint32_t)g->off[i]);
    int64_t q = (int64_t)rq->zp_out + cn_requant(x, g->mult[i], g->shift[i]);
    if (q < rq->qmin) q = rq->qmin;
    if (q > rq->qmax) q = rq->qmax;
    return rq->lut ? rq->lut[q] : (uint8_t)q;
}

/* One tile: rows [0, mr) of A (row stride lda, kp bytes each, mr <= the kernel's MR) against
 * packed block B (nbw channels wide, of which nvalid are real), channels oc0.. of the output
 * (row stride ldo); meanwhile the pfl cache lines from pf (NULL: none) are fetched for what
 * comes next. */
typedef void (*cn_qtile_fn)(uint8_t *out, int ldo, const uint8_t *A, int lda, int mr,
                            const int8_t *B, int kp, int nbw, int nvalid, const cn_qrq *rq,
                            int oc0, const int8_t *pf, int pfl);

/* the kernels that do not spread their prefetches over the k loop issue them first */
static inline void cn_qprefetch(const int8_t *pf, int pfl) {
    for (int i = 0; i < pfl; i++) __builtin_prefetch(pf + (size_t)64 * i, 0, 3);
}
/* dst[i] = lut[src[i]] for n bytes (AVX-512 VBMI: vpermi2b over the 4 x 64 table bytes) */
void cn_qlut_vbmi(uint8_t *dst, const uint8_t *src, size_t n, const uint8_t *lut);
void cn_qtile_avx512vnni(uint8_t *out, int ldo, const uint8_t *A, int lda, int mr,
                         const int8_t *B, int kp, int nbw, int nvalid, const cn_qrq *rq, int oc0,
                         const int8_t *pf, int pfl);
/* The same tile as a step of a K-blocked GEMM: B and A start at the k-slice, kp is its length;
 * pin: NULL (the first slice) or the partial sums of the earlier slices; pout: NULL (the last
 * slice: the epilogue) or where the partial sums go. Partial sums: 6 x 64 int32, 64-byte
 * aligned. */
void cn_qtile_avx512vnni_part(uint8_t *out, int ldo, const uint8_t *A, int lda, int mr,
                              const int8_t *B, int kp, int nbw, int nvalid, const cn_qrq *rq,
                              int oc0, const int32_t *pin, int32_t *pout, const int8_t *pf,
                              int pfl);
/* The tiles of an implicit GEMM: over nseg segments of seg k each (seg a multiple of 4),
 * segment s of a row of A at s * segstep from the row's start: the kernel rows of a convolution
 * read in place from its (padded) input. _seg: row r starts at A + r * lda (a stem's pixels of
 * one output row); _rows: at ar[r] (mr pointers; pin, pout as for _part). */
void cn_qtile_avx512vnni_seg(uint8_t *out, int ldo, const uint8_t *A, int lda, int mr,
                             const int8_t *B, int seg, int nseg, size_t segstep, int nbw,
                             int nvalid, const cn_qrq *rq, int oc0);
void cn_qtile_avx512vnni_rows(uint8_t *out, int ldo, const uint8_t *const *ar, int mr,
                              const int8_t *B, int seg, int nseg, size_t segstep, int nbw,
                              int nvalid, const cn_qrq *rq, int oc0, const int32_t *pin,
                              int32_t *pout, const int8_t *pf, int pfl);
/* Depthwise by word pairs (vpdpwssd, see qconv_avx512vnni.c), kh <= 8: a thread takes
 * cn_qdw_pairs_scratch(d) bytes of scratch (64-byte aligned), prepares it with
 * cn_qdw_pairs_begin (the weights' pairs, an empty ring of input rows), then computes output rows
 * (n, oy), all channels, best in order (each input row is packed once while it stays in the
 * ring). */
size_t cn_qdw_pairs_scratch(const cn_qconv_desc *d);
void cn_qdw_pairs_begin(const int8_t *w, const cn_qconv_desc *d, void *scratch);
void cn_qdwrow_pairs_avx512vnni(uint8_t *out, const uint8_t *in, const cn_qconv_desc *d,
                                const cn_qrq *rq, int n, int oy, void *scratch);
void cn_qtile_avxvnni(uint8_t *out, int ldo, const uint8_t *A, int lda, int mr, const int8_t *B,
                      int kp, int nbw, int nvalid, const cn_qrq *rq, int oc0, const int8_t *pf,
                      int pfl);
void cn_qtile_avxvnni_evex(uint8_t *out, int ldo, const uint8_t *A, int lda, int mr,
                           const int8_t *B, int kp, int nbw, int nvalid, const cn_qrq *rq,
                           int oc0, const int8_t *pf, int pfl);

void cn_qtile_avx2(uint8_t *out, int ldo, const uint8_t *A, int lda, int mr, const int8_t *B,
                   int kp, int nbw, int nvalid, const cn_qrq *rq, int oc0, const int8_t *pf,
                   int pfl);

#define CN_QMR_AVX512 6
#define CN_QMR_AVXVNNI 4
#define CN_QMR_C 4

#endif
