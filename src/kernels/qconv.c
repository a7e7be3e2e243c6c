/* Int8 convolution: requantization, the naive reference, weight packing, the GEMM driver
 * (an implicit GEMM over the input or a padded copy on AVX-512 VNNI, im2col in row chunks
 * elsewhere; threads over shares of pixel rows or over output-channel blocks), the depthwise
 * driver, the plain-C tile and depthwise kernels and the choice of implementation.
 * See qconv.h for the arithmetic and qconv_impl.h for the packed layout. */
#include "kernels/qconv.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "core/cpu.h"
#include "kernels/qconv_impl.h"

/* ---- requantization ---- */

void cn_quantize_multiplier(double m, int32_t *mult, int32_t *shift) {
    if (!(m > 0.0)) { /* 0, negative, NaN */
        *mult = 0, *shift = 0;
        return;
    }
    int e;
    const double q = frexp(m, &e); /* m = q * 2^e, q in [0.5, 1) */
    int64_t qi = (int64_t)llround(q * 2147483648.0);
    if (qi == (int64_t)1 << 31) qi >>= 1, e++;
    *mult = (int32_t)qi;
    *shift = -e;
}

int32_t cn_requant(int32_t acc, int32_t mult, int32_t shift) {
    const int left = shift < 0 ? (shift < -32 ? 32 : -shift) : 0;
    const int right = shift > 0 ? (shift > 40 ? 40 : shift) : 0;
    int64_t x = (int64_t)acc * ((int64_t)1 << left);
    if (x > INT32_MAX) x = INT32_MAX;
    if (x < INT32_MIN) x = INT32_MIN;
    /* SaturatingRoundingDoublingHighMul */
    int64_t h;
    if (x == INT32_MIN && mult == INT32_MIN) {
        h = INT32_MAX;
    } else {
        const int64_t ab = x * (int64_t)mult;
        const int64_t nudge = ab >= 0 ? (1 << 30) : 1 - (1 << 30);
        h = (ab + nudge) / ((int64_t)1 << 31); /* truncates toward zero, as gemmlowp's */
    }
    if (right == 0) return (int32_t)h;
    /* RoundingDivideByPOT (exponents past 31 round an int32 to 0, or -1 for INT32_MIN / 2^32) */
    const int64_t mask = ((int64_t)1 << right) - 1;
    const int64_t rem = h & mask, thr = (mask >> 1) + (h < 0 ? 1 : 0);
    return (int32_t)((h >> right) + (rem > thr ? 1 : 0));
}

void cn_qrq_fill(cn_qrqg *g, const cn_qepilogue *ep, const void *wsum, int32_t zp_in, int n) {
    const int ng = (n + 15) / 16;
    for (int gi = 0; gi < ng; gi++) {
        cn_qrqg *q = &g[gi];
        for (int i = 0; i < 16; i++) {
            const int o = gi * 16 + i;
            int32_t off = 0, mult = 0, shift = 0;
            if (o < n) {
                uint32_t b = ep->bias ? (uint32_t)ep->bias[o] : 0u;
                if (wsum) {
                    int32_t ws;
                    memcpy(&ws, (const uint8_t *)wsum + 4 * (size_t)o, 4);
                    b -= (uint32_t)zp_in * (uint32_t)ws;
                }
                off = (int32_t)b;
                mult = ep->mult[o], shift = ep->shift[o];
            }
            const int e = shift > 0 ? shift : 0;
            const int ee = e >= 33 ? 0 : e;
            const int32_t me = e >= 33 ? 0 : mult;
            q->off[i] = off, q->mult[i] = mult, q->shift[i] = shift;
            q->left[i] = shift < 0 ? (shift < -32 ? 32 : -shift) : 0;
            q->me[i] = me;
            const int lane = (i & 1) * 8 + i / 2;
            if (i & 1) q->mo[i / 2] = me;
            q->k2[lane] = ((int64_t)1 << 30) + (ee > 0 ? (int64_t)1 << (30 + ee) : 0);
            q->m3[lane] = ee > 0 ? -((int64_t)1 << 31) : 0;
            q->sh[lane] = 31 + ee;
            const int ef = shift >= 1 && shift <= 22 ? shift : 1;
            const int64_t zpf = ep->zp_out >= -255 && ep->zp_out <= 255 ? ep->zp_out : 0;
            q->kz[lane] = ((int64_t)1 << 30) + ((int64_t)1 << (30 + ef)) +
                          zpf * ((int64_t)1 << (31 + ef));
            q->kz2[lane] = 2 * q->kz[lane];
            if (i & 1) q->so[i / 2] = ef - 1;
            else q->se[i / 2] = 31 + ef;
        }
    }
}

static int32_t clamp32(int64_t v) {
    return v < INT32_MIN ? INT32_MIN : v > INT32_MAX ? INT32_MAX : (int32_t)v;
}

cn_qrq_flags cn_qrq_scan(const cn_qepilogue *ep, int n) {
    cn_qrq_flags f = {0, 0, 1, INT32_MAX};
    for (int o = 0; o < n; o++) {
        if (ep->shift[o] < 0) f.any_left = 1;
        if (ep->mult[o] < 0) f.neg_mult = 1;
        if (ep->shift[o] < 1 || ep->shift[o] > 22) f.shifts_ok = 0;
    }
    return f;
}

void cn_qrq_init(cn_qrq *rq, const cn_qrqg *g, const cn_qepilogue *ep, cn_qrq_flags f) {
    rq->g = g;
    rq->zp_out = ep->zp_out, rq->qmin = ep->qmin, rq->qmax = ep->qmax;
    const int64_t lo = (int64_t)ep->qmin - ep->zp_out, hi = (int64_t)ep->qmax - ep->zp_out;
    rq->lo = clamp32(lo), rq->hi = clamp32(hi);
    rq->lut = ep->lut;
    /* negative multipliers are outside the contract; the scalar path copes */
    rq->scalar = lo != rq->lo || hi != rq->hi || f.neg_mult;
    rq->any_left = f.any_left;
    const int fast = f.shifts_ok && !rq->scalar && ep->zp_out >= -255 && ep->zp_out <= 255;
    rq->fast = fast && !ep->lut;
    rq->fast_lut = fast && ep->lut;
    rq->narrow = 0, rq->off_max = f.off_max;
    rq->lut_vbmi = 0;
    rq->res = ep->res, rq->out0 = NULL, rq->add = ep->add, rq->tile_add = 0;
}

/* cn_qrq_fill of the groups of n channels, and their flags, with the largest |off| of them */
static cn_qrq_flags fill_scan(cn_qrqg *g, const cn_qepilogue *ep, const void *wsum,
                              int32_t zp_in, int n) {
    cn_qrq_fill(g, ep, wsum, zp_in, n);
    cn_qrq_flags f = cn_qrq_scan(ep, n);
    int64_t m = 0;
    for (int o = 0; o < n; o++) {
        const int64_t v = g[o >> 4].off[o & 15];
        if ((v < 0 ? -v : v) > m) m = v < 0 ? -v : v;
    }
    f.off_max = m > INT32_MAX ? INT32_MAX : (int32_t)m;
    return f;
}

/* Prepared parameters (cn_qconv_prepare): this header, 64-byte aligned within the buffer, then
 * the groups. */
typedef struct prep_head {
    cn_qrq_flags f;
} __attribute__((aligned(64))) prep_head;

size_t cn_qconv_params_size(int oc) {
    return 64 + sizeof(prep_head) + (size_t)(oc + 15) / 16 * sizeof(cn_qrqg);
}

static prep_head *prep_at(const void *params) {
    return (prep_head *)(((uintptr_t)params + 63) & ~(uintptr_t)63);
}

/* the weight sums of packed dense weights (after the weights), NULL for depthwise */
static const void *packed_wsum(const void *packed, const cn_qconv_desc *d);

void cn_qconv_prepare(void *params, const void *weights, const cn_qconv_desc *d,
                      const cn_qepilogue *ep) {
    prep_head *h = prep_at(params);
    h->f = fill_scan((cn_qrqg *)(h + 1), ep, weights ? packed_wsum(weights, d) : NULL, d->zp_in,
                     d->oc);
}

/* rq for a call: from ep->params, or derived into g (room for the groups of n channels) */
static void rq_setup(cn_qrq *rq, cn_qrqg *g, const cn_qepilogue *ep, const void *wsum,
                     int32_t zp_in, int n) {
    if (ep->params) {
        const prep_head *h = prep_at(ep->params);
        cn_qrq_init(rq, (const cn_qrqg *)(h + 1), ep, h->f);
        return;
    }
    cn_qrq_init(rq, g, ep, fill_scan(g, ep, wsum, zp_in, n));
}

/* ---- reference ---- */

void cn_qconv2d_ref(uint8_t *out, const uint8_t *in, const int8_t *w, const cn_qconv_desc *d,
                    const cn_qepilogue *ep, int depthwise) {
    const int C = d->c, OC = d->oc;
    for (int n = 0; n < d->n; n++)
        for (int oy = 0; oy < d->oh; oy++)
            for (int ox = 0; ox < d->ow; ox++)
                for (int o = 0; o < OC; o++) {
                    int64_t s = ep->bias ? ep->bias[o] : 0;
                    for (int ky = 0; ky < d->kh; ky++) {
                        const int iy = oy * d->sh - d->ph + ky;
                        if (iy < 0 || iy >= d->h) continue;
                        for (int kx = 0; kx < d->kw; kx++) {
                            const int ix = ox * d->sw - d->pw + kx;
                            if (ix < 0 || ix >= d->w) continue;
                            const uint8_t *x = in + (((size_t)n * d->h + iy) * d->w + ix) * C;
                            if (depthwise) {
                                s += (int64_t)(x[o] - d->zp_in) *
                                     w[((size_t)ky * d->kw + kx) * C + o];
                            } else {
                                const int8_t *wk = w + (((size_t)o * d->kh + ky) * d->kw + kx) * C;
                                for (int ci = 0; ci < C; ci++)
                                    s += (int64_t)(x[ci] - d->zp_in) * wk[ci];
                            }
                        }
                    }
                    const int32_t acc = (int32_t)(uint32_t)(uint64_t)s; /* int32 wraps */
                    int64_t q = (int64_t)ep->zp_out + cn_requant(acc, ep->mult[o], ep->shift[o]);
                    if (q < ep->qmin) q = ep->qmin;
                    if (q > ep->qmax) q = ep->qmax;
                    const size_t at = (((size_t)n * d->oh + oy) * d->ow + ox) * OC + o;
                    out[at] = ep->lut ? ep->lut[q] : (uint8_t)q;
                    if (ep->res) {
                        const cn_qadd *a = &ep->add;
                        const int64_t v = a->zo + (((int64_t)a->ma * (out[at] - a->za) +
                                                    (int64_t)a->mb * (ep->res[at] - a->zb) +
                                                    ((int64_t)1 << (a->sh - 1))) >> a->sh);
                        out[at] = (uint8_t)(v < a->qmin ? a->qmin : v > a->qmax ? a->qmax : v);
                    }
                }
}

/* ---- implementation choice ---- */

/* "avx-vnni-evex" (never chosen, only forced by tests) runs the AVX-VNNI tile assembled with the
 * EVEX encoding, for machines that have AVX-512 VNNI but hide AVX-VNNI */
enum { IMPL_C, IMPL_AVXVNNI, IMPL_AVX512VNNI, IMPL_AVXVNNI_EVEX, IMPL_AVX2, N_IMPL };
static const char *const impl_names[] = {"c", "avx-vnni", "avx512-vnni", "avx-vnni-evex", "avx2"};
static int forced = -1;

static int has_avxvnni(void) {
    const cn_cpu_features *f = cn_cpu();
    return f->avxvnni && f->avx2 && f->fma;
}

static int can_run(int i) {
    const cn_cpu_features *f = cn_cpu();
    switch (i) {
    case IMPL_C: return 1;
    case IMPL_AVX2: return f->avx2 && f->fma;
    case IMPL_AVXVNNI: return has_avxvnni();
    case IMPL_AVX512VNNI:
    case IMPL_AVXVNNI_EVEX:
        return cn_cpu_avx512() && f->avx512vnni && f->fma;
    }
    return 0;
}

static int impl(void) {
    if (forced >= 0) return forced;
    static int chosen = -1;
    if (chosen < 0) {
        int c = IMPL_C;
        if (can_run(IMPL_AVX2)) c = IMPL_AVX2;
        if (can_run(IMPL_AVXVNNI)) c = IMPL_AVXVNNI;
        if (can_run(IMPL_AVX512VNNI)) c = IMPL_AVX512VNNI;
        chosen = c;
    }
    return chosen;
}

const char *cn_qkernel_name(void) { return impl_names[impl()]; }

int cn_qkernel_force(const char *name) {
    if (!name) {
        forced = -1;
        return 1;
    }
    for (int i = 0; i < N_IMPL; i++)
        if (strcmp(name, impl_names[i]) == 0) {
            if (!can_run(i)) return 0;
            forced = i;
            return 1;
        }
    return 0;
}

/* ---- packing ---- */

static int round_up(int x, int m) { return (x + m - 1) / m * m; }

/* The k of a filter row: kw * c bytes, or, for the few-channel inputs of a stem (kw * c not a
 * multiple of 4, c <= 4), kw * c rounded up to 4 ("segments"): each kernel row then starts
 * on a 4-byte step, so that the AVX-512 path reads the rows of A straight from a padded copy
 * of the image, kernel row ky at a constant offset, instead of building im2col rows of 21-byte
 * pieces (resnet's 7x7 stem). The extra k carry zero weights. */
static int seg_len(int kh, int kw, int c) {
    return kh > 1 && c <= 4 && kw * c % 4 ? round_up(kw * c, 4) : kw * c;
}

size_t cn_qconv_packed_size(int oc, int kh, int kw, int c) {
    const size_t kp = (size_t)round_up(kh * seg_len(kh, kw, c), 4);
    const size_t oc16 = (size_t)round_up(oc, 16);
    return kp * oc16 + 4 * oc16;
}

static const void *packed_wsum(const void *packed, const cn_qconv_desc *d) {
    const size_t kp = (size_t)round_up(d->kh * seg_len(d->kh, d->kw, d->c), 4);
    return (const int8_t *)packed + kp * (size_t)round_up(d->oc, 16);
}

void cn_qconv_pack(void *packed, const int8_t *w, int oc, int kh, int kw, int c) {
    const int K = kh * kw * c, seg = seg_len(kh, kw, c), KP = round_up(kh * seg, 4);
    const int OC16 = round_up(oc, 16);
    int8_t *p = packed;
    memset(p, 0, (size_t)KP * OC16 + 4 * (size_t)OC16);
    for (int o = 0; o < oc; o++) {
        const int b = o / CN_QNB, j = o % CN_QNB;
        const int nbw = OC16 - b * CN_QNB < CN_QNB ? OC16 - b * CN_QNB : CN_QNB;
        int8_t *blk = p + (size_t)b * CN_QNB * KP;
        int32_t sum = 0;
        for (int k = 0; k < K; k++) {
            const int8_t v = w[(size_t)o * K + k];
            const int kk = k / (kw * c) * seg + k % (kw * c); /* k in the packed layout */
            blk[(size_t)(kk / 4) * nbw * 4 + j * 4 + (kk & 3)] = v;
            sum += v;
        }
        memcpy(p + (size_t)KP * OC16 + 4 * (size_t)o, &sum, 4);
    }
}

/* ---- the GEMM driver ---- */

typedef struct plan {
    int M, K, KP, direct, nblk, OC16, ngroups;
    int seg; /* k of a kernel row (see seg_len) */
    int shared; /* threads split the output-channel blocks over one im2col of all rows */
    int MC;     /* rows per im2col chunk (per thread) when !shared */
    /* implicit GEMM (AVX-512 VNNI): the rows of A read in place from the input, or from a copy
     * padded with zp_in (padded), kernel row ky at ky * Wp * c bytes; no im2col */
    int implicit, padded, Hp, Wp;
} plan;

#define ROW_UNIT 12 /* pixel rows are split between threads in multiples of this */
#define KB_KC 512   /* k-slice of the K-blocked GEMM (a multiple of 4): 32 KB of a block */
#define KB_MIN 3072 /* K-blocked beyond this KP (a 7x7 map's 3x3 layers: 4608) */

/* The padded width: pad columns left and right, and for a stem's segments (see seg_len) as
 * many more on the right as the last pixel's segment reaches. */
static int pad_wp(const cn_qconv_desc *d, int seg) {
    const int need = (d->ow - 1) * d->sw + (seg + d->c - 1) / d->c, w = d->w + 2 * d->pw;
    return need > w ? need : w;
}

static void make_plan(plan *p, const cn_qconv_desc *d, int threads) {
    p->M = d->n * d->oh * d->ow;
    p->seg = seg_len(d->kh, d->kw, d->c);
    p->K = d->kh * p->seg;
    p->KP = round_up(p->K, 4);
    p->direct = d->kh == 1 && d->kw == 1 && d->sh == 1 && d->sw == 1 && d->ph == 0 &&
                d->pw == 0 && d->c % 4 == 0 && d->oh == d->h && d->ow == d->w;
    p->OC16 = round_up(d->oc, 16);
    p->nblk = (d->oc + CN_QNB - 1) / CN_QNB;
    p->ngroups = p->OC16 / 16;
    /* few pixel rows, or fewer rows than output channels (the weights outweigh the
     * activations), and several channel blocks: split the channels, so that each thread reads
     * its share of the weights once instead of all of them once per item of rows */
    p->shared = threads > 1 && p->nblk >= threads &&
                ((p->M + ROW_UNIT - 1) / ROW_UNIT < 4 * threads || p->M <= p->OC16);
    /* up to ~512 KB of im2col rows per chunk (L2-resident while every channel block passes over
     * it; few chunks, since each one passes over all the weights: a 7x7 map is one chunk) */
    int mc = 524288 / p->KP / ROW_UNIT * ROW_UNIT;
    if (mc < ROW_UNIT) mc = ROW_UNIT;
    if (mc > 20 * ROW_UNIT) mc = 20 * ROW_UNIT;
    p->MC = mc;
    /* a k-slice of the K-blocked GEMM must lie within a kernel row */
    p->implicit = impl() == IMPL_AVX512VNNI && !p->direct && p->seg % 4 == 0 &&
                  (p->KP <= KB_MIN || p->seg % KB_KC == 0);
    p->Hp = d->h + 2 * d->ph, p->Wp = pad_wp(d, p->seg);
    p->padded = p->implicit && (p->Hp != d->h || p->Wp != d->w);
}

static int fits_i16(int32_t v) { return v >= -32768 && v <= 32767; }

/* the fused add's constant (cn_qadd_const) and the multiplied terms stay within int32 */
static int add_const_fits(const cn_qadd *a) {
    const int64_t k = cn_qadd_const(a);
    return k > -((int64_t)1 << 30) && k < ((int64_t)1 << 30) && a->za >= 0 && a->za <= 255 &&
           a->zb >= 0 && a->zb <= 255;
}

static size_t align64(size_t x) { return (x + 63) & ~(size_t)63; }

static size_t pad_bytes(const plan *p, const cn_qconv_desc *d) {
    return p->padded ? (size_t)d->n * p->Hp * p->Wp * d->c : 0;
}

size_t cn_qconv_workspace(const cn_qconv_desc *d, int threads) {
    if (threads < 1) threads = 1;
    plan p;
    make_plan(&p, d, threads);
    size_t a = align64(pad_bytes(&p, d));
    if (!p.direct && !p.implicit) {
        if ((size_t)threads * align64((size_t)p.MC * p.KP) > a)
            a = (size_t)threads * align64((size_t)p.MC * p.KP);
        /* any thread count up to `threads` may choose the shared plan */
        plan q;
        for (int t = 2; t <= threads; t++) {
            make_plan(&q, d, t);
            if (q.shared && align64((size_t)p.M * p.KP) > a) a = align64((size_t)p.M * p.KP);
        }
    }
    return 64 + (size_t)p.ngroups * sizeof(cn_qrqg) + a;
}

/* rows [r0, r1) of the padded copy (image n's padded row y at (n * Hp + y) * Wp * c) */
static void pad_rows(uint8_t *pad, const uint8_t *in, const cn_qconv_desc *d, const plan *p,
                     int r0, int r1) {
    const size_t prow = (size_t)p->Wp * d->c, wbytes = (size_t)d->w * d->c;
    const size_t left = (size_t)d->pw * d->c;
    const uint8_t zp = (uint8_t)d->zp_in;
    for (int r = r0; r < r1; r++) {
        uint8_t *dst = pad + (size_t)r * prow;
        const int n = r / p->Hp, y = r % p->Hp - d->ph;
        if (y < 0 || y >= d->h) {
            memset(dst, zp, prow);
            continue;
        }
        memset(dst, zp, left);
        memcpy(dst + left, in + ((size_t)n * d->h + y) * wbytes, wbytes);
        memset(dst + left + wbytes, zp, prow - left - wbytes);
    }
}

/* n bytes, in 16-byte moves and an exact tail (the pieces are short: c or kw*c bytes, so a
 * libc call per piece would cost more than the copy) */
static inline void copy_bytes(uint8_t *dst, const uint8_t *src, size_t n) {
    if (n >= 64) {
        memcpy(dst, src, n);
        return;
    }
    for (; n >= 16; n -= 16, dst += 16, src += 16) memcpy(dst, src, 16);
    if (n & 8) memcpy(dst, src, 8), dst += 8, src += 8;
    if (n & 4) memcpy(dst, src, 4), dst += 4, src += 4;
    if (n & 2) memcpy(dst, src, 2), dst += 2, src += 2;
    if (n & 1) *dst = *src;
}

static inline void fill_bytes(uint8_t *dst, uint8_t v, size_t n) {
    uint8_t b[16];
    memset(b, v, 16);
    for (; n >= 16; n -= 16, dst += 16) memcpy(dst, b, 16);
    for (; n; n--) *dst++ = v;
}

/* rows [m0, m1) of the im2col matrix (row stride KP, kernel row ky at ky * seg_len), padding
 * taps = zp_in, the k past a kernel row's kw * c and past the last row = 0 */
static void im2col(uint8_t *A, int KP, const uint8_t *in, const cn_qconv_desc *d, int m0,
                   int m1) {
    const int C = d->c, KW = d->kw, hw = d->oh * d->ow;
    const size_t seg = (size_t)KW * C, step = (size_t)seg_len(d->kh, KW, C);
    const int K = d->kh * (int)step;
    const uint8_t zp = (uint8_t)d->zp_in;
    int n = m0 / hw, oy = m0 % hw / d->ow, ox = m0 % d->ow;
    for (int m = m0; m < m1; m++) {
        uint8_t *row = A + (size_t)(m - m0) * KP;
        const int ix0 = ox * d->sw - d->pw;
        const int inside = ix0 >= 0 && ix0 + KW <= d->w;
        for (int ky = 0; ky < d->kh; ky++) {
            uint8_t *dst = row + (size_t)ky * step;
            for (size_t k = seg; k < step; k++) dst[k] = 0;
            const int iy = oy * d->sh - d->ph + ky;
            if (iy < 0 || iy >= d->h) {
                fill_bytes(dst, zp, seg);
                continue;
            }
            const uint8_t *src = in + ((size_t)n * d->h + iy) * d->w * C;
            if (inside) {
                copy_bytes(dst, src + (size_t)ix0 * C, seg);
                continue;
            }
            for (int kx = 0; kx < KW; kx++) {
                const int ix = ix0 + kx;
                if (ix < 0 || ix >= d->w)
                    fill_bytes(dst + (size_t)kx * C, zp, (size_t)C);
                else
                    copy_bytes(dst + (size_t)kx * C, src + (size_t)ix * C, (size_t)C);
            }
        }
        for (int k = K; k < KP; k++) row[k] = 0;
        if (++ox == d->ow) {
            ox = 0;
            if (++oy == d->oh) oy = 0, n++;
        }
    }
}

/* Plain C tile, up to 4 rows: uint32 accumulators (wrapping like the vector paths) over
 * 16-channel slices, inner loops the compiler vectorises. */
static void tile_c(uint8_t *out, int ldo, const uint8_t *A, int lda, int mr, const int8_t *B,
                   int kp, int nbw, int nvalid, const cn_qrq *rq, int oc0, const int8_t *pf,
                   int pfl) {
    cn_qprefetch(pf, pfl);
    const uint8_t *a[4];
    for (int r = 0; r < 4; r++) a[r] = A + (size_t)(r < mr ? r : 0) * lda;
    for (int s = 0; s < nbw; s += 16) {
        if (s >= nvalid) break;
        uint32_t acc[4][16];
        memset(acc, 0, sizeof acc);
        const int8_t *b = B + (size_t)s * 4;
        for (int k = 0; k < kp; k += 4, b += (size_t)nbw * 4) {
            /* the 4 x 16 weights of this k step, k-major, so that the j loops are contiguous */
            int16_t wt[4][16];
            for (int t = 0; t < 4; t++)
#pragma omp simd
                for (int j = 0; j < 16; j++) wt[t][j] = b[4 * j + t];
            for (int r = 0; r < 4; r++) {
                const int16_t a0 = a[r][k], a1 = a[r][k + 1], a2 = a[r][k + 2], a3 = a[r][k + 3];
#pragma omp simd
                for (int j = 0; j < 16; j++)
                    acc[r][j] += (uint32_t)((a0 * wt[0][j] + a1 * wt[1][j]) +
                                            (a2 * wt[2][j] + a3 * wt[3][j]));
            }
        }
        const int nj = nvalid - s < 16 ? nvalid - s : 16;
        for (int r = 0; r < mr; r++)
            for (int j = 0; j < nj; j++)
                out[(size_t)r * ldo + s + j] = cn_qrq_one(rq, (int32_t)acc[r][j], oc0 + s + j);
    }
}

typedef struct run_ctx {
    const plan *p;
    const cn_qconv_desc *d;
    const uint8_t *in;
    const int8_t *packed;
    uint8_t *out;
    const cn_qrq *rq;
    const cn_qepilogue *ep; /* ep->res: the fused residual add */
    cn_qtile_fn tile;
    int MR;
    int kc; /* k-slice length of the K-blocked GEMM (avx512-vnni), >= KP: none */
    const uint8_t *src; /* the implicit GEMM's input: in, or its padded copy */
} run_ctx;

#define KB_TILES 16 /* row tiles whose partial sums a K-blocked pass keeps */

/* The implicit GEMM's rows: a cursor over output pixels (n, oy, ox), from pixel m; the row of
 * A of pixel (n, oy, ox) starts at padded row oy * sh, column ox * sw of image n. The tiles
 * advance it (no divisions per tile: a stem's tile is only a few hundred cycles). */
typedef struct cursor {
    int n, oy, ox;
} cursor;

static cursor cursor_at(const cn_qconv_desc *d, int m) {
    const int hw = d->oh * d->ow;
    return (cursor){m / hw, m % hw / d->ow, m % d->ow};
}

/* the row pointers of the next cnt pixels */
static void implicit_rows(const run_ctx *x, cursor *c, int cnt, const uint8_t **ar) {
    const cn_qconv_desc *d = x->d;
    const plan *p = x->p;
    for (int r = 0; r < cnt; r++) {
        ar[r] = x->src +
                (((size_t)c->n * p->Hp + (size_t)c->oy * d->sh) * p->Wp + (size_t)c->ox * d->sw) *
                    d->c;
        if (++c->ox == d->ow) {
            c->ox = 0;
            if (++c->oy == d->oh) c->oy = 0, c->n++;
        }
    }
}

/* the fused residual add on rows [m0, m1), channels [c0, c0 + n), just written (in L1), unless
 * there is none or the tile kernel did it */
static void add_res(const run_ctx *x, int m0, int m1, int c0, int n) {
    if (!x->ep->res || x->rq->tile_add) return;
    const int OC = x->d->oc;
    for (int m = m0; m < m1; m++) {
        uint8_t *o = x->out + (size_t)m * OC + c0;
        cn_q_add_span(o, o, x->ep->res + (size_t)m * OC + c0, (size_t)n, &x->ep->add);
    }
}

/* Weights are fetched ahead of their use, a share with each tile: in the late layers, where a
 * block of weights serves few pixel rows, they would otherwise come from memory just when the
 * first tile needs them (measured: 7-10 % on those layers with cold caches). */
#define PF_AHEAD 2 /* blocks ahead */

/* share i of n of the bytes [p, p + bytes) in cache lines: the first line, and their count */
static inline const int8_t *share_lines(const int8_t *p, size_t bytes, int i, int n, int *lines) {
    if (!p) {
        *lines = 0;
        return NULL;
    }
    const size_t o0 = bytes * i / n & ~(size_t)63, o1 = bytes * (i + 1) / n;
    *lines = o1 > o0 ? (int)((o1 - o0 + 63) / 64) : 0;
    return p + o0;
}

/* the packed weights of block b (NULL past the last) and their size */
static const int8_t *block_weights(const run_ctx *x, int b, size_t *bytes) {
    const plan *p = x->p;
    if (b < 0 || b >= p->nblk) return NULL;
    const int c0 = b * CN_QNB, nbw = p->OC16 - c0 < CN_QNB ? p->OC16 - c0 : CN_QNB;
    *bytes = (size_t)nbw * p->KP;
    return x->packed + (size_t)c0 * p->KP;
}

/* K-blocked: each k-slice of the block (B slice L1-resident) over up to KB_TILES row tiles,
 * the next slice (or the first of block pf) fetched meanwhile */
static void run_block_kb(const run_ctx *x, const uint8_t *A, int lda, int m0, int m1, int c0,
                         int nbw, int nvalid, const int8_t *B, int pf) {
    const plan *p = x->p;
    const int OC = x->d->oc, MR = x->MR;
    int32_t part[KB_TILES * 6 * 64] __attribute__((aligned(64)));
    const int L = m1 - m0, nt = (L + MR - 1) / MR;
    size_t pfb = 0;
    const int8_t *pfw = block_weights(x, pf, &pfb);
    const uint8_t *rows[KB_TILES][6]; /* the implicit GEMM's rows of the tiles of a pass */
    cursor cur = p->implicit ? cursor_at(x->d, m0) : (cursor){0, 0, 0};
    for (int i0 = 0; i0 < nt; i0 += KB_TILES) {
        const int i1 = i0 + KB_TILES < nt ? i0 + KB_TILES : nt;
        for (int i = i0; p->implicit && i < i1; i++)
            implicit_rows(x, &cur, (int)((long)L * (i + 1) / nt) - (int)((long)L * i / nt),
                          rows[i - i0]);
        for (int k0 = 0; k0 < p->KP; k0 += x->kc) {
            const int kl = p->KP - k0 < x->kc ? p->KP - k0 : x->kc;
            const int first = k0 == 0, last = k0 + kl >= p->KP;
            const int8_t *nx = last ? (i1 == nt ? pfw : B) : B + (size_t)(k0 + kl) * nbw;
            const size_t slice = (size_t)x->kc * CN_QNB; /* at most, of any block */
            const size_t nxb = last && i1 == nt ? (pfb < slice ? pfb : slice) : (size_t)x->kc * nbw;
            for (int i = i0; i < i1; i++) {
                const int a0 = (int)((long)L * i / nt), a1 = (int)((long)L * (i + 1) / nt);
                int32_t *pt = part + (size_t)(i - i0) * 6 * 64;
                int pfl;
                const int8_t *pf = share_lines(nx, nxb, i - i0, i1 - i0, &pfl);
                uint8_t *o = x->out + (size_t)(m0 + a0) * OC + c0;
                if (p->implicit) { /* the slice lies within kernel row k0 / seg */
                    const uint8_t *ar[6];
                    const size_t at = (size_t)(k0 / p->seg) * p->Wp * x->d->c + k0 % p->seg;
                    for (int r = 0; r < a1 - a0; r++) ar[r] = rows[i - i0][r] + at;
                    cn_qtile_avx512vnni_rows(o, OC, ar, a1 - a0, B + (size_t)k0 * nbw, kl, 1, 0,
                                             nbw, nvalid, x->rq, c0, first ? NULL : pt,
                                             last ? NULL : pt, pf, pfl);
                } else {
                    cn_qtile_avx512vnni_part(o, OC, A + (size_t)a0 * lda + k0, lda, a1 - a0,
                                             B + (size_t)k0 * nbw, kl, nbw, nvalid, x->rq, c0,
                                             first ? NULL : pt, last ? NULL : pt, pf, pfl);
                }
                if (last) add_res(x, m0 + a0, m0 + a1, c0, nvalid);
            }
        }
    }
}

/* all channel blocks [b0, b1) of rows [m0, m1) of A (A holds row m0 first); pf: a block whose
 * weights to fetch meanwhile (-1: the block PF_AHEAD after each one, within [b0, b1); below -1:
 * none) */
static void run_tiles(const run_ctx *x, const uint8_t *A, int lda, int m0, int m1, int b0,
                      int b1, int pf) {
    const plan *p = x->p;
    const int OC = x->d->oc;
    for (int b = b0; b < b1; b++) {
        const int c0 = b * CN_QNB;
        const int nbw = p->OC16 - c0 < CN_QNB ? p->OC16 - c0 : CN_QNB;
        const int nvalid = OC - c0 < nbw ? OC - c0 : nbw;
        const int8_t *B = x->packed + (size_t)c0 * p->KP;
        const int next = pf != -1 ? pf : b + PF_AHEAD < b1 ? b + PF_AHEAD : -1;
        if (x->kc < p->KP) {
            run_block_kb(x, A, lda, m0, m1, c0, nbw, nvalid, B,
                         pf != -1 ? pf : b + 1 < b1 ? b + 1 : -1);
            continue;
        }
        size_t nxb = 0;
        const int8_t *nx = block_weights(x, next, &nxb);
        /* tiles of as equal heights as can be (49 rows: 4 x 6 + 5 x 5, not 8 x 6 + 1) */
        const int L = m1 - m0, nt = (L + x->MR - 1) / x->MR;
        cursor cur = p->implicit ? cursor_at(x->d, m0) : (cursor){0, 0, 0};
        for (int i = 0; i < nt; i++) {
            const int a0 = (int)((long)L * i / nt), a1 = (int)((long)L * (i + 1) / nt);
            int pfl;
            const int8_t *pf = share_lines(nx, nxb, i, nt, &pfl);
            uint8_t *o = x->out + (size_t)(m0 + a0) * OC + c0;
            if (p->implicit) {
                const uint8_t *ar[6];
                implicit_rows(x, &cur, a1 - a0, ar);
                cn_qtile_avx512vnni_rows(o, OC, ar, a1 - a0, B, p->seg, x->d->kh,
                                         (size_t)p->Wp * x->d->c, nbw, nvalid, x->rq, c0, NULL,
                                         NULL, pf, pfl);
            } else {
                x->tile(o, OC, A + (size_t)a0 * lda, lda, a1 - a0, B, p->KP, nbw, nvalid, x->rq,
                        c0, pf, pfl);
            }
            add_res(x, m0 + a0, m0 + a1, c0, nvalid);
        }
    }
}

/* rows [m0, m1) of the row-split plan, in chunks of MC rows (im2col into buf) */
static void run_rows(const run_ctx *x, uint8_t *buf, int r0, int r1) {
    const plan *p = x->p;
    /* chunks of as equal sizes as can be (<= MC rows): each chunk passes over all the weights */
    const int L = r1 - r0, nc = (L + p->MC - 1) / p->MC;
    for (int ci = 0; ci < nc; ci++) {
        const int m0 = r0 + (int)((long)L * ci / nc), m1 = r0 + (int)((long)L * (ci + 1) / nc);
        if (p->direct) {
            run_tiles(x, x->in + (size_t)m0 * x->d->c, x->d->c, m0, m1, 0, p->nblk, -1);
        } else if (p->implicit) {
            run_tiles(x, NULL, 0, m0, m1, 0, p->nblk, -1);
        } else {
            im2col(buf, p->KP, x->in, x->d, m0, m1);
            run_tiles(x, buf, p->KP, m0, m1, 0, p->nblk, -1);
        }
    }
}

/* A stem (kernel rows in segments, see seg_len): the implicit GEMM by output rows, each row's
 * pixels as rows of A at a stride of sw * c bytes (measured 10-20 % faster on resnet's 7x7 stem
 * than tiles across output rows with a pointer per row). */
static void stem(const run_ctx *x, uint8_t *pad, int threads) { /* x->src is pad if padded */
    const cn_qconv_desc *d = x->d;
    const plan *p = x->p;
    const int C = d->c, OC = d->oc, Hp = p->Hp;
    const size_t prow = (size_t)p->Wp * C;
    if (p->padded) {
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
        for (int r = 0; r < d->n * Hp; r++) pad_rows(pad, x->in, d, p, r, r + 1);
    }
    const int rows = d->n * d->oh, nt = (d->ow + CN_QMR_AVX512 - 1) / CN_QMR_AVX512;
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
    for (int r = 0; r < rows; r++) {
        const int n = r / d->oh, oy = r % d->oh, m0 = r * d->ow;
        const uint8_t *arow = x->src + ((size_t)n * Hp + (size_t)oy * d->sh) * prow;
        for (int b = 0; b < p->nblk; b++) {
            const int c0 = b * CN_QNB;
            const int nbw = p->OC16 - c0 < CN_QNB ? p->OC16 - c0 : CN_QNB;
            const int nvalid = OC - c0 < nbw ? OC - c0 : nbw;
            const int8_t *B = x->packed + (size_t)c0 * p->KP;
            for (int i = 0; i < nt; i++) {
                const int a0 = d->ow * i / nt, a1 = d->ow * (i + 1) / nt;
                cn_qtile_avx512vnni_seg(x->out + (size_t)(m0 + a0) * OC + c0, OC,
                                        arow + (size_t)a0 * d->sw * C, d->sw * C, a1 - a0, B,
                                        p->seg, d->kh, prow, nbw, nvalid, x->rq, c0);
                add_res(x, m0 + a0, m0 + a1, c0, nvalid);
            }
        }
    }
}

/* the end of thread s's share of n items among T threads (s = -1: 0) */
static int share_end(int s, int T, int n) { return (int)((long)n * (s + 1) / T); }

void cn_qconv2d(uint8_t *out, const uint8_t *in, const void *packed, const cn_qconv_desc *d,
                const cn_qepilogue *ep, void *workspace, int threads) {
    if (threads < 1) threads = 1;
    plan p;
    make_plan(&p, d, threads);
    if (p.M <= 0 || d->oc <= 0) return;
    uint8_t *ws = (uint8_t *)(((uintptr_t)workspace + 63) & ~(uintptr_t)63);
    cn_qrqg *g = (cn_qrqg *)ws;
    uint8_t *abuf = ws + (size_t)p.ngroups * sizeof(cn_qrqg);
    const int8_t *pk = packed;
    cn_qrq rq;
    rq_setup(&rq, g, ep, packed_wsum(packed, d), d->zp_in, d->oc);
    rq.out0 = out;
    /* the AVX-512 tile applies a lut in its fast epilogue where the CPU has VBMI */
    if (impl() == IMPL_AVX512VNNI && rq.fast_lut && cn_cpu()->avx512vbmi)
        rq.fast = rq.lut_vbmi = 1;
    /* its add takes the multipliers as int16 (cn_q_add_params keeps them below 2^15) */
    rq.tile_add = ep->res && rq.fast && impl() == IMPL_AVX512VNNI && fits_i16(ep->add.ma) &&
                  fits_i16(ep->add.mb) && ep->add.sh >= 1 && ep->add.sh <= 31 &&
                  add_const_fits(&ep->add);
    /* the narrow epilogue: |accumulator| <= |off| + KP * 255 * 128 < 2^29 */
    rq.narrow = rq.fast && (int64_t)rq.off_max + (int64_t)p.KP * 255 * 128 < ((int64_t)1 << 29);

    run_ctx x = {&p, d, in, pk, out, &rq, ep, tile_c, CN_QMR_C, p.KP, in};
    switch (impl()) {
    case IMPL_AVX512VNNI:
        x.tile = cn_qtile_avx512vnni, x.MR = CN_QMR_AVX512;
        /* K-blocked when a block of weights is far beyond L1 (K = 4608: a 7x7 map's 3x3 layers) */
        if (p.KP > KB_MIN) x.kc = KB_KC;
        break;
    case IMPL_AVXVNNI: x.tile = cn_qtile_avxvnni, x.MR = CN_QMR_AVXVNNI; break;
    case IMPL_AVXVNNI_EVEX: x.tile = cn_qtile_avxvnni_evex, x.MR = CN_QMR_AVXVNNI; break;
    case IMPL_AVX2: x.tile = cn_qtile_avx2, x.MR = CN_QMR_AVXVNNI; break;
    default: break;
    }

    if (p.padded) x.src = abuf;
    if (impl() == IMPL_AVX512VNNI && p.seg != d->kw * d->c) {
        stem(&x, abuf, threads);
        return;
    }
    const int prows = p.padded ? d->n * p.Hp : 0; /* rows of the padded copy */
    /* the row items' shares among the threads: the next item of each */
    int share_stack[16], *share_heap = NULL, *share_next = share_stack;
    if (threads > 16) share_next = share_heap = malloc(sizeof(int) * (size_t)threads);
    if (threads == 1 || !share_next) { /* (no memory for the shares: run on this thread) */
        pad_rows(abuf, in, d, &p, 0, prows);
        run_rows(&x, abuf, 0, p.M);
        return;
    }
    /* The threads take work items in turn (dynamic schedule), so that on a loaded machine a
     * thread that is held up does not hold the others back for its whole static share. Row
     * split: items of ~M / (16 threads) rows (at most MC: the threads' busy time was 93-94 % of
     * the layers' wall time with M / (6 threads), 97-98 % with this); shared: items of one
     * channel block, or one block and half of the rows when there are few blocks. */
    const size_t chunk = align64((size_t)p.MC * p.KP);
    const int units = (p.M + ROW_UNIT - 1) / ROW_UNIT;
    int per = (units + 16 * threads - 1) / (16 * threads);
    if (per * ROW_UNIT > p.MC) per = p.MC / ROW_UNIT;
    if (per < 1) per = 1;
    const int nrow_items = (units + per - 1) / per;
    const int halves = p.nblk < 4 * threads && p.M >= 2 * CN_QMR_AVX512 ? 2 : 1;
    for (int i = 0; i < threads; i++) share_next[i] = share_end(i - 1, threads, nrow_items);
#pragma omp parallel num_threads(threads)
    {
        const int t = omp_get_thread_num();
        if (p.padded) {
#pragma omp for schedule(static)
            for (int r = 0; r < prows; r++) pad_rows(abuf, in, d, &p, r, r + 1);
        }
        if (p.shared) {
            if (!p.direct && !p.implicit) {
#pragma omp for schedule(static)
                for (int m = 0; m < p.M; m += ROW_UNIT)
                    im2col(abuf + (size_t)m * p.KP, p.KP, in, d, m,
                           m + ROW_UNIT < p.M ? m + ROW_UNIT : p.M);
            }
            /* (the implicit GEMM computes its rows' addresses itself) */
            const uint8_t *A = p.direct ? in : p.implicit ? NULL : abuf;
            const int lda = p.direct ? d->c : p.KP;
#pragma omp for schedule(dynamic, 1) nowait
            for (int it = 0; it < p.nblk * halves; it++) {
                const int b = it / halves, h = it % halves;
                const int m0 = (int)((long)p.M * h / halves), m1 = (int)((long)p.M * (h + 1) / halves);
                /* with the dynamic schedule, this thread's next item is most likely `threads`
                 * items on: fetch its block */
                const int nb = (it + threads) / halves;
                run_tiles(&x, A ? A + (size_t)m0 * lda : NULL, lda, m0, m1, b, b + 1,
                          nb != b && nb < p.nblk ? nb : -2);
            }
        } else {
            /* thread t takes the items of its own share first, in order, then helps with the
             * others' (from where their owners are): the same rows land on the same thread
             * layer after layer, so a layer mostly reads what its thread's core just wrote */
            for (int k = 0; k < threads; k++) { /* (all shares, however many threads run) */
                const int s = (t + k) % threads;
                int it;
                while ((it = __atomic_fetch_add(&share_next[s], 1, __ATOMIC_RELAXED)) <
                       share_end(s, threads, nrow_items)) {
                    const int r0 = it * per * ROW_UNIT;
                    const int r1 = r0 + per * ROW_UNIT < p.M ? r0 + per * ROW_UNIT : p.M;
                    run_rows(&x, abuf + (size_t)t * chunk, r0, r1);
                }
            }
        }
    }
    free(share_heap);
}

/* ---- depthwise ---- */

/* plain C: 64 channels at a time, int32 products the compiler vectorises */
static void dwrow_c(uint8_t *out, const uint8_t *in, const int8_t *w, const cn_qconv_desc *d,
                    const cn_qrq *rq, int n, int oy) {
    const int C = d->c;
    const int32_t zp = d->zp_in;
    uint8_t *orow = out + ((size_t)n * d->oh + oy) * d->ow * C;
    for (int ox = 0; ox < d->ow; ox++) {
        for (int c0 = 0; c0 < C; c0 += 64) {
            const int cn = C - c0 < 64 ? C - c0 : 64;
            uint32_t acc[64];
            memset(acc, 0, sizeof acc);
            for (int ky = 0; ky < d->kh; ky++) {
                const int iy = oy * d->sh - d->ph + ky;
                if (iy < 0 || iy >= d->h) continue;
                for (int kx = 0; kx < d->kw; kx++) {
                    const int ix = ox * d->sw - d->pw + kx;
                    if (ix < 0 || ix >= d->w) continue;
                    const uint8_t *xp = in + (((size_t)n * d->h + iy) * d->w + ix) * C + c0;
                    const int8_t *wp = w + ((size_t)ky * d->kw + kx) * C + c0;
                    for (int j = 0; j < cn; j++) acc[j] += (uint32_t)((xp[j] - zp) * wp[j]);
                }
            }
            for (int j = 0; j < cn; j++)
                orow[(size_t)ox * C + c0 + j] = cn_qrq_one(rq, (int32_t)acc[j], c0 + j);
        }
    }
}

/* the depthwise workspace: the requantization groups, then the pairs path's scratch per thread */
static int dw_pairs(const cn_qconv_desc *d) { return impl() == IMPL_AVX512VNNI && d->kh <= 8; }

size_t cn_qdwconv_workspace(const cn_qconv_desc *d, int threads) {
    if (threads < 1) threads = 1;
    const size_t per = dw_pairs(d) ? align64(cn_qdw_pairs_scratch(d)) : 0;
    return 64 + (size_t)(d->c + 15) / 16 * sizeof(cn_qrqg) + (size_t)threads * per;
}

void cn_qdwconv2d(uint8_t *out, const uint8_t *in, const int8_t *w, const cn_qconv_desc *d,
                  const cn_qepilogue *ep, void *workspace, int threads) {
    if (threads < 1) threads = 1;
    void *own = NULL;
    if (!workspace && !(workspace = own = malloc(cn_qdwconv_workspace(d, threads)))) {
        cn_qconv2d_ref(out, in, w, d, ep, 1);
        return;
    }
    uint8_t *ws = (uint8_t *)(((uintptr_t)workspace + 63) & ~(uintptr_t)63);
    cn_qrqg *g = (cn_qrqg *)ws;
    cn_qrq rq;
    rq_setup(&rq, g, ep, NULL, 0, d->c);
    const int pairs = dw_pairs(d);
    /* the rows' lut in one pass after each row, 64 bytes at a time */
    const uint8_t *row_lut = pairs && rq.lut && cn_cpu()->avx512vbmi ? rq.lut : NULL;
    if (row_lut) rq.lut = NULL, rq.fast = rq.fast_lut;
    const int rows = d->n * d->oh;
    const size_t rb = (size_t)d->ow * d->c; /* bytes of an output row */
    const size_t per = pairs ? align64(cn_qdw_pairs_scratch(d)) : 0;
    uint8_t *scratch = ws + (size_t)(d->c + 15) / 16 * sizeof(cn_qrqg);
    /* each thread a run of consecutive rows, so that the pairs path reuses its ring */
#pragma omp parallel num_threads(threads) if (threads > 1 && rows > 1)
    {
        const int t = omp_get_thread_num(), T = omp_get_num_threads();
        const int r0 = (int)((long)rows * t / T), r1 = (int)((long)rows * (t + 1) / T);
        uint8_t *mine = pairs ? scratch + (size_t)t * per : NULL;
        if (pairs && r0 < r1) cn_qdw_pairs_begin(w, d, mine);
        for (int r = r0; r < r1; r++) {
            if (pairs)
                cn_qdwrow_pairs_avx512vnni(out, in, d, &rq, r / d->oh, r % d->oh, mine);
            else
                dwrow_c(out, in, w, d, &rq, r / d->oh, r % d->oh);
            if (row_lut) cn_qlut_vbmi(out + r * rb, out + r * rb, rb, row_lut);
            if (ep->res) cn_q_add_span(out + r * rb, out + r * rb, ep->res + r * rb, rb, &ep->add);
        }
    }
    free(own);
}
