/* The int8 convolution kernels: cn_quantize_multiplier and cn_requant against double-precision
 * models; every implementation this CPU can run ("c", "avx2", "avx-vnni", "avx512-vnni", forced in
 * turn) bit-exact against cn_qconv2d_ref on odd shapes, dense and depthwise, with 1 and 2
 * threads; and, given the directory of tests/parity/make_qconv_refs.py as argv[1], PyTorch's
 * quantized conv2d (onednn and qnnpack engines) within 1 unit.
 * Usage: test_qkernels [QREFS_DIR] */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core/cpu.h"
#include "kernels/qconv.h"

static uint64_t rng_state = 0x2545F4914F6CDD1Dull;

static uint64_t rnd(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}
static int irand(int lo, int hi) { return lo + (int)(rnd() % (uint64_t)(hi - lo + 1)); } /* [lo, hi] */
static double urand(void) { return (double)(rnd() >> 11) / 9007199254740992.0; }     /* [0, 1) */

/* "avx-vnni-evex": the AVX-VNNI kernel assembled with EVEX encodings, so that it is tested where
 * the CPU (or its hypervisor) hides AVX-VNNI */
#define N_IMPLS 5
static const char *const impls[N_IMPLS] = {"c", "avx2", "avx-vnni", "avx-vnni-evex", "avx512-vnni"};

/* ---- cn_quantize_multiplier and cn_requant ---- */

static double real_multiplier(int32_t mult, int32_t shift) {
    return ldexp((double)mult, -31 - shift);
}

static void test_quantize_multiplier(void) {
    int bad = 0, range_bad = 0;
    double worst = 0.0;
    for (int i = 0; i < 100000; i++) {
        /* log-uniform over [2^-60, 2^31) plus exact powers of two and values near them */
        double m = ldexp(1.0 + urand(), irand(-60, 30));
        if (i % 7 == 0) m = ldexp(1.0, irand(-40, 30));
        if (i % 11 == 0) m = nextafter(ldexp(1.0, irand(-40, 30)), 0.0);
        int32_t mult, shift;
        cn_quantize_multiplier(m, &mult, &shift);
        if (mult < (1 << 30)) range_bad++;
        const double rel = fabs(real_multiplier(mult, shift) - m) / m;
        if (rel > worst) worst = rel;
        if (rel > ldexp(1.0, -31)) bad++;
    }
    int32_t mult = 1, shift = 1;
    cn_quantize_multiplier(0.0, &mult, &shift);
    CHECK(mult == 0, "M = 0 gives mult %d", mult);
    CHECK(range_bad == 0, "%d multipliers outside [2^30, 2^31)", range_bad);
    CHECK(bad == 0, "%d multipliers off by more than 2^-31 relative (worst %.3g)", bad, worst);
    printf("quantize_multiplier: worst relative error %.3g (bound %.3g)\n", worst,
           ldexp(1.0, -31));
}

static int32_t rand_acc(void) {
    switch (irand(0, 5)) {
    case 0: return (int32_t)(uint32_t)rnd();
    case 1: return irand(-1000, 1000);
    case 2: return (int32_t)((int64_t)(int32_t)(uint32_t)rnd() >> irand(0, 31));
    case 3: return irand(0, 1) ? INT32_MIN + irand(0, 3) : INT32_MAX - irand(0, 3);
    default: return irand(-(1 << 24), 1 << 24);
    }
}

static void test_requant(void) {
    int bad = 0, n = 0;
    double worst = 0.0;
    for (int i = 0; i < 200000; i++) {
        double m;
        switch (i % 4) {
        case 0: m = ldexp(1.0 + urand(), irand(-40, -1)); break; /* usual: M < 1 */
        case 1: m = ldexp(1.0 + urand(), irand(0, 30)); break;   /* M >= 1: left shift */
        case 2: m = ldexp(1.0 + urand(), irand(-70, -30)); break; /* tiny */
        default: m = ldexp(1.0 + urand(), irand(-12, -4)); break;
        }
        int32_t mult, shift;
        cn_quantize_multiplier(m, &mult, &shift);
        const int32_t acc = rand_acc();
        const int32_t got = cn_requant(acc, mult, shift);
        /* gemmlowp saturates acc << left before the multiply: model that in double */
        const int left = shift < 0 ? -shift : 0;
        double x = ldexp((double)acc, left);
        if (x > INT32_MAX) x = INT32_MAX;
        if (x < INT32_MIN) x = INT32_MIN;
        /* shift + left = max(shift, 0) */
        double want = nearbyint(x * real_multiplier(mult, shift + left));
        if (want > INT32_MAX) want = INT32_MAX;
        if (want < INT32_MIN) want = INT32_MIN;
        const double d = fabs((double)got - want);
        if (d > worst) worst = d;
        if (d > 1.0) {
            if (bad < 5)
                fprintf(stderr, "requant(%d, %d, %d) = %d, want %.0f\n", acc, mult, shift, got,
                        want);
            bad++;
        }
        n++;
    }
    /* exact cases */
    CHECK(cn_requant(100, 1 << 30, 0) == 50, "requant(100, 0.5) = %d", cn_requant(100, 1 << 30, 0));
    CHECK(cn_requant(3, 1 << 30, 1) == 1, "0.75 rounds to %d", cn_requant(3, 1 << 30, 1));
    CHECK(cn_requant(-3, 1 << 30, 1) == -1, "-0.75 rounds to %d", cn_requant(-3, 1 << 30, 1));
    CHECK(cn_requant(2, 1 << 30, 2) == 0 + 0, "0.25 rounds to %d", cn_requant(2, 1 << 30, 2));
    CHECK(cn_requant(1, 1 << 30, 0) == 1, "0.5 rounds to %d (away from 0)", cn_requant(1, 1 << 30, 0));
    CHECK(cn_requant(-1, 1 << 30, 0) == 0, "-0.5 rounds to %d (gemmlowp: up)",
          cn_requant(-1, 1 << 30, 0));
    CHECK(cn_requant(-2, 1 << 30, 2) == -1 + 1, "-0.25 rounds to %d", cn_requant(-2, 1 << 30, 2));
    CHECK(cn_requant(-6, 1 << 30, 2) == -1, "-0.75 rounds to %d", cn_requant(-6, 1 << 30, 2));
    CHECK(cn_requant(INT32_MAX, INT32_MAX, -31) == INT32_MAX - 1, "saturation up: %d",
          cn_requant(INT32_MAX, INT32_MAX, -31));
    CHECK(cn_requant(INT32_MIN, INT32_MAX, -31) == INT32_MIN + 1, "saturation down: %d",
          cn_requant(INT32_MIN, INT32_MAX, -31));
    CHECK(cn_requant(INT32_MIN, INT32_MIN, 0) == INT32_MAX, "doubling high mul saturation: %d",
          cn_requant(INT32_MIN, INT32_MIN, 0));
    CHECK(cn_requant(INT32_MIN, 1 << 30, 40) == 0, "tiny M: %d", cn_requant(INT32_MIN, 1 << 30, 40));
    CHECK(bad == 0, "requant off by more than 1 in %d of %d cases (worst %.0f)", bad, n, worst);
    printf("requant: %d cases, worst difference from round(acc * M) %.0f\n", n, worst);
}

/* ---- kernels against the reference ---- */

typedef struct qcase {
    cn_qconv_desc d;
    int depthwise, bias, lut, clamp; /* clamp: 0 full range, 1 relu, 2 random */
    int extreme; /* random bias over all int32 and shifts -31..40 (2: shifts 1..22; 3: biases up
                  * to the narrow epilogue's bound |acc| < 2^29 and zp_in 0; 4: one just past) */
    int res;     /* a fused residual add */
} qcase;

static int out_size(int in, int k, int s, int p) { return (in + 2 * p - k) / s + 1; }

typedef struct qdata {
    uint8_t *in, *lut, *want, *got, *res;
    int8_t *w;
    int32_t *bias, *mult, *shift;
    cn_qepilogue ep;
    size_t nin, nout;
} qdata;

static void make_data(qdata *q, const qcase *cs) {
    const cn_qconv_desc *d = &cs->d;
    q->nin = (size_t)d->n * d->h * d->w * d->c;
    q->nout = (size_t)d->n * d->oh * d->ow * d->oc;
    const size_t nw = cs->depthwise ? (size_t)d->kh * d->kw * d->c
                                    : (size_t)d->oc * d->kh * d->kw * d->c;
    q->in = malloc(q->nin);
    q->w = malloc(nw);
    q->want = malloc(q->nout);
    q->got = malloc(q->nout);
    q->lut = malloc(256);
    q->bias = malloc(sizeof(int32_t) * (size_t)d->oc);
    q->mult = malloc(sizeof(int32_t) * (size_t)d->oc);
    q->shift = malloc(sizeof(int32_t) * (size_t)d->oc);
    /* activations around zp_in, sometimes the whole range */
    for (size_t i = 0; i < q->nin; i++) {
        int v = i % 5 == 0 ? irand(0, 255) : d->zp_in + irand(-60, 60);
        q->in[i] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
    }
    for (size_t i = 0; i < nw; i++) q->w[i] = (int8_t)irand(-128, 127);
    for (int i = 0; i < 256; i++) q->lut[i] = (uint8_t)rnd();
    const int taps = cs->depthwise ? d->kh * d->kw : d->kh * d->kw * d->c;
    const double typical = sqrt((double)taps) * 60.0 * 74.0;
    /* the narrow epilogue's bound on |bias| (zp_in 0: off = bias): |acc| <= KP * 255 * 128 + |off|
     * < 2^29 */
    const int32_t narrow_b = (1 << 29) - 1 - ((taps + 3) / 4 * 4) * 255 * 128;
    for (int o = 0; o < d->oc; o++) {
        if (cs->extreme >= 3) {
            q->bias[o] = o % 4 == 0 ? narrow_b : o % 4 == 1 ? -narrow_b : irand(-narrow_b, narrow_b);
            if (cs->extreme == 4 && o == d->oc / 2) q->bias[o] = narrow_b + 1;
            q->mult[o] = (1 << 30) + (int32_t)(rnd() % (1u << 30));
            q->shift[o] = irand(1, 22);
            if (o % 5 == 0) q->mult[o] = 0;
            if (o % 5 == 1) q->mult[o] = 1 << 30; /* rounding ties */
            if (o % 5 == 2) q->mult[o] = INT32_MAX;
        } else if (cs->extreme) {
            q->bias[o] = (int32_t)(uint32_t)rnd();
            q->mult[o] = (1 << 30) + (int32_t)(rnd() % (1u << 30));
            /* extreme 2: shifts in [1, 22] only (the fast vector epilogue) */
            q->shift[o] = cs->extreme == 2 ? irand(1, 22) : irand(-31, 40);
            if (o % 5 == 0) q->mult[o] = 0;
            if (o % 5 == 1) q->mult[o] = 1 << 30; /* rounding ties */
            if (o % 5 == 2) q->mult[o] = INT32_MAX;
        } else {
            q->bias[o] = irand(-(int)typical, (int)typical);
            double m = 60.0 / typical * (0.3 + 2.0 * urand());
            if (o % 3 == 1) m = ldexp(1.0, (int)floor(log2(m))); /* mult 2^30: ties */
            cn_quantize_multiplier(m, &q->mult[o], &q->shift[o]);
        }
    }
    cn_qepilogue *ep = &q->ep;
    memset(ep, 0, sizeof *ep);
    ep->bias = cs->bias ? q->bias : NULL;
    ep->mult = q->mult, ep->shift = q->shift;
    ep->zp_out = irand(0, 255);
    ep->qmin = 0, ep->qmax = 255;
    if (cs->clamp == 1) ep->qmin = ep->zp_out;
    if (cs->clamp == 2) {
        ep->qmin = irand(0, 120);
        ep->qmax = irand(ep->qmin, 255);
    }
    ep->lut = cs->lut ? q->lut : NULL;
    q->res = NULL;
    if (cs->res) { /* a residual add with scales a few times apart, sometimes with a ReLU */
        q->res = malloc(q->nout);
        for (size_t i = 0; i < q->nout; i++) q->res[i] = (uint8_t)irand(0, 255);
        cn_qadd *a = &ep->add;
        cn_q_add_params(0.5 + 2 * urand(), 0.5 + 2 * urand(), 0.5 + 2 * urand(), &a->ma, &a->mb,
                        &a->sh);
        a->za = ep->zp_out < 0 ? 0 : ep->zp_out > 255 ? 255 : ep->zp_out;
        a->zb = irand(0, 255), a->zo = irand(0, 255);
        a->qmin = irand(0, 1) ? a->zo : 0, a->qmax = 255;
        ep->res = q->res;
    }
}

static void free_data(qdata *q) {
    free(q->in), free(q->w), free(q->want), free(q->got), free(q->lut), free(q->res);
    free(q->bias), free(q->mult), free(q->shift);
}

static int n_cases, n_runs;

static void describe(const qcase *cs, char *buf, size_t n) {
    const cn_qconv_desc *d = &cs->d;
    snprintf(buf, n, "%s n%d %dx%dx%d -> oc%d k%dx%d s%d,%d p%d,%d zp%d bias%d lut%d clamp%d%s%s",
             cs->depthwise ? "dw" : "conv", d->n, d->h, d->w, d->c, d->oc, d->kh, d->kw, d->sh,
             d->sw, d->ph, d->pw, d->zp_in, cs->bias, cs->lut, cs->clamp,
             cs->extreme ? " extreme" : "", cs->res ? " residual" : "");
}

static int extra_threads; /* > 0: run_case also runs with this many threads */

static void run_case(const qcase *cs) {
    qdata q;
    make_data(&q, cs);
    const cn_qconv_desc *d = &cs->d;
    cn_qconv2d_ref(q.want, q.in, q.w, d, &q.ep, cs->depthwise);
    void *packed = NULL;
    if (!cs->depthwise) {
        packed = malloc(cn_qconv_packed_size(d->oc, d->kh, d->kw, d->c));
        cn_qconv_pack(packed, q.w, d->oc, d->kh, d->kw, d->c);
    }
    n_cases++;
    for (int i = 0; i < N_IMPLS; i++) {
        if (!cn_qkernel_force(impls[i])) continue;
        for (int t = 1; t <= (extra_threads ? 3 : 2); t++) {
            if (t == 3) t = extra_threads;
            memset(q.got, 0xA5, q.nout);
            /* 1 thread: the kernels derive the requantization and (depthwise) allocate their
             * scratch; 2 threads: prepared parameters and a caller's workspace */
            cn_qepilogue ep = q.ep;
            void *params = NULL;
            if (t == 2) {
                params = malloc(cn_qconv_params_size(d->oc) + 1);
                /* deliberately misaligned: the kernels align it themselves */
                cn_qconv_prepare((char *)params + 1, packed, d, &ep);
                ep.params = (char *)params + 1;
            }
            if (cs->depthwise) {
                void *ws = t == 2 ? malloc(cn_qdwconv_workspace(d, t)) : NULL;
                cn_qdwconv2d(q.got, q.in, q.w, d, &ep, ws, t);
                free(ws);
            } else {
                void *ws = malloc(cn_qconv_workspace(d, t));
                cn_qconv2d(q.got, q.in, packed, d, &ep, ws, t);
                free(ws);
            }
            free(params);
            size_t first = q.nout, nbad = 0;
            for (size_t e = 0; e < q.nout; e++)
                if (q.got[e] != q.want[e]) {
                    if (first == q.nout) first = e;
                    nbad++;
                }
            n_runs++;
            char buf[200];
            describe(cs, buf, sizeof buf);
            CHECK(nbad == 0, "%s threads %d, %s: %zu of %zu differ, first at %zu (got %d want %d)",
                  impls[i], t, buf, nbad, q.nout, first, first < q.nout ? q.got[first] : 0,
                  first < q.nout ? q.want[first] : 0);
        }
    }
    cn_qkernel_force(NULL);
    free(packed);
    free_data(&q);
}

/* fills h, w (so that the reference costs at most ~budget MACs), oh, ow */
static int finish_desc(cn_qconv_desc *d, int depthwise, double budget) {
    const double per_px = (double)d->kh * d->kw * (depthwise ? 1 : d->c) * d->oc * d->n;
    int hmax = (int)sqrt(budget / per_px * d->sh * d->sw);
    if (hmax > 14) hmax = 14;
    const int need_h = d->kh - 2 * d->ph > 1 ? d->kh - 2 * d->ph : 1;
    const int need_w = d->kw - 2 * d->pw > 1 ? d->kw - 2 * d->pw : 1;
    if (hmax < need_h) hmax = need_h;
    if (hmax < need_w) hmax = need_w;
    d->h = irand(need_h, hmax);
    d->w = irand(need_w, hmax + 2);
    d->oh = out_size(d->h, d->kh, d->sh, d->ph);
    d->ow = out_size(d->w, d->kw, d->sw, d->pw);
    return d->oh > 0 && d->ow > 0;
}

static void random_flags(qcase *cs) {
    cs->d.zp_in = irand(0, 3) == 0 ? 0 : irand(0, 255);
    cs->bias = irand(0, 3) != 0;
    cs->lut = irand(0, 3) == 0;
    cs->clamp = irand(0, 2);
    cs->extreme = 0;
    cs->res = irand(0, 3) == 0;
}

static void test_dense(void) {
    static const int cs_[] = {1, 3, 5, 17, 64, 67};
    static const int ocs[] = {1, 7, 16, 33, 64, 100};
    static const int ks[] = {1, 3, 5, 7};
    int idx = 0;
    for (int ci = 0; ci < 6; ci++)
        for (int oi = 0; oi < 6; oi++)
            for (int ki = 0; ki < 4; ki++, idx++) {
                qcase cs = {0};
                cn_qconv_desc *d = &cs.d;
                d->n = irand(1, 3);
                d->c = cs_[ci], d->oc = ocs[oi];
                d->kh = ks[ki];
                d->kw = irand(0, 4) == 0 ? ks[irand(0, 3)] : d->kh; /* sometimes non-square */
                d->sh = irand(1, 2), d->sw = idx % 5 == 0 ? 3 - d->sh : d->sh;
                d->ph = irand(0, 3), d->pw = idx % 3 == 0 ? irand(0, 3) : d->ph;
                if (idx % 4 == 0 && d->kh == 1) d->sh = d->sw = 1, d->ph = d->pw = 0; /* direct */
                random_flags(&cs);
                if (!finish_desc(d, 0, 4e5)) continue;
                run_case(&cs);
            }
    /* shapes that exercise the chunking and thread plans and the direct 1x1 path */
    static const int big[][9] = {
        /* n h w c oc k s p  */
        {1, 40, 40, 64, 64, 3, 1, 1, 0},   /* row split, several im2col chunks */
        {1, 56, 30, 64, 48, 1, 1, 0, 0},   /* direct 1x1, oc tail 48 */
        {2, 9, 7, 68, 200, 1, 1, 0, 0},    /* direct 1x1, few rows, channel split */
        {1, 7, 7, 256, 130, 3, 1, 1, 0},   /* K = 2304, M = 49: channel split */
        {1, 7, 7, 512, 64, 3, 1, 1, 0},    /* K = 4608 */
        {1, 5, 6, 344, 70, 3, 1, 1, 0},    /* K = 3096: K-blocked, a short last slice */
        {1, 13, 12, 344, 20, 3, 1, 1, 0},  /* the same, more row tiles than one pass keeps */
        {2, 9, 11, 512, 70, 3, 1, 1, 0},   /* K-blocked implicit GEMM, rows across images */
        {1, 12, 9, 1024, 30, 3, 2, 1, 0},  /* the same, stride 2, K = 9216 */
        {1, 14, 14, 60, 129, 3, 2, 1, 0},  /* stride 2 */
        {3, 11, 13, 20, 70, 3, 1, 1, 0},   /* batch */
        {1, 29, 31, 3, 65, 7, 2, 3, 0},    /* stem-like */
        {1, 10, 10, 32, 96, 1, 2, 0, 0},   /* 1x1 stride 2 (im2col) */
        {1, 6, 6, 8, 40, 3, 1, 1, 1},      /* extreme epilogue values */
        {2, 5, 7, 4, 100, 1, 1, 0, 1},     /* extreme, direct */
        {1, 8, 8, 3, 77, 3, 2, 1, 1},      /* extreme */
        {1, 6, 6, 8, 40, 3, 1, 1, 2},      /* extreme values, shifts 1..22 */
        {2, 5, 7, 4, 100, 1, 1, 0, 2},     /* the same, direct */
        {1, 9, 9, 16, 192, 1, 1, 0, 2},    /* the same, full 64-channel blocks */
        {1, 9, 9, 16, 192, 1, 1, 0, 3},    /* accumulators up to the narrow epilogue's bound */
        {1, 7, 8, 64, 100, 3, 1, 1, 3},    /* the same, implicit GEMM */
        {1, 9, 9, 16, 192, 1, 1, 0, 4},    /* one bias past it (the fast epilogue instead) */
    };
    for (size_t i = 0; i < sizeof big / sizeof big[0]; i++) {
        qcase cs = {0};
        cn_qconv_desc *d = &cs.d;
        d->n = big[i][0], d->h = big[i][1], d->w = big[i][2], d->c = big[i][3];
        d->oc = big[i][4], d->kh = d->kw = big[i][5], d->sh = d->sw = big[i][6];
        d->ph = d->pw = big[i][7];
        d->oh = out_size(d->h, d->kh, d->sh, d->ph), d->ow = out_size(d->w, d->kw, d->sw, d->pw);
        random_flags(&cs);
        cs.extreme = big[i][8];
        if (cs.extreme >= 3) cs.d.zp_in = 0;
        extra_threads = i == 0 ? 20 : 0; /* more threads than shares kept on the stack */
        run_case(&cs);
        extra_threads = 0;
        cs.lut = !cs.lut, cs.clamp = (cs.clamp + 1) % 3;
        if (i % 3 == 0) run_case(&cs);
        /* every shape once with a fused residual add, through the fast epilogue when it applies */
        cs.lut = 0, cs.res = 1;
        run_case(&cs);
    }
}

static void test_depthwise(void) {
    static const int ks[] = {3, 5, 3, 5, 1, 7};
    for (int c = 1; c <= 70; c++) {
        qcase cs = {0};
        cs.depthwise = 1;
        cn_qconv_desc *d = &cs.d;
        d->n = irand(1, 3);
        d->c = d->oc = c;
        d->kh = ks[c % 6];
        d->kw = c % 9 == 0 ? ks[(c / 9) % 6] : d->kh;
        d->sh = irand(1, 2), d->sw = c % 7 == 0 ? 3 - d->sh : d->sh;
        d->ph = irand(0, 3), d->pw = c % 4 == 0 ? irand(0, 3) : d->ph;
        random_flags(&cs);
        if (c % 10 == 3) cs.extreme = 1;
        if (!finish_desc(d, 1, 3e5)) continue;
        run_case(&cs);
    }
    static const int big[][8] = {
        {1, 56, 56, 32, 3, 1, 1, 0}, {1, 28, 29, 144, 3, 2, 1, 0}, {1, 14, 14, 240, 5, 1, 2, 0},
        {1, 15, 15, 672, 5, 2, 2, 0}, {2, 9, 9, 40, 3, 1, 1, 1},
    };
    for (size_t i = 0; i < sizeof big / sizeof big[0]; i++) {
        qcase cs = {0};
        cs.depthwise = 1;
        cn_qconv_desc *d = &cs.d;
        d->n = big[i][0], d->h = big[i][1], d->w = big[i][2], d->c = d->oc = big[i][3];
        d->kh = d->kw = big[i][4], d->sh = d->sw = big[i][5], d->ph = d->pw = big[i][6];
        d->oh = out_size(d->h, d->kh, d->sh, d->ph), d->ow = out_size(d->w, d->kw, d->sw, d->pw);
        random_flags(&cs);
        cs.extreme = big[i][7];
        run_case(&cs);
    }
}

/* ---- PyTorch parity (files of tests/parity/make_qconv_refs.py) ---- */

static void *read_all(FILE *f, size_t n) {
    void *p = malloc(n ? n : 1);
    if (p && fread(p, 1, n, f) != n) {
        free(p);
        return NULL;
    }
    return p;
}

/* PyTorch's onednn engine computes the exact convolution only where the CPU has VNNI: without
 * it (AVX2: Zen 3, Haswell..) its kernels add the u8 x s8 products of two channels with int16
 * saturation (vpmaddubsw), so that outputs of large activations and weights clip, by tens of
 * units in these cases (the cases that fail here are exactly those where some channel pair of an
 * output exceeds the int16 range; checked with numpy on the reference files). There its cases are
 * run and reported but not held to 1 unit; the
 * qnnpack cases (exact arithmetic on every CPU) still are. */
static int onednn_exact(void) {
    const cn_cpu_features *f = cn_cpu();
    return f->avx512vnni || f->avxvnni;
}

/* One case file; see make_qconv_refs.py for the layout. Returns 0 when it could not be read. */
static int parity_case(const char *path, const char *engine, int *max_diff, size_t *ndiff,
                       size_t *ntotal) {
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    char magic[4];
    int32_t hd[17];
    double sc[2];
    int ok = fread(magic, 1, 4, f) == 4 && memcmp(magic, "QCV1", 4) == 0 &&
             fread(hd, sizeof hd[0], 17, f) == 17 && fread(sc, sizeof sc[0], 2, f) == 2;
    if (!ok) {
        fclose(f);
        return 0;
    }
    cn_qconv_desc d = {hd[0], hd[1], hd[2], hd[3], hd[4], hd[5], hd[6], hd[7], hd[8], hd[9],
                       hd[10], hd[11], hd[12], hd[15]};
    const int groups = hd[13], zp_out = hd[16];
    const int dw = groups != 1;
    const size_t nin = (size_t)d.n * d.h * d.w * d.c, nout = (size_t)d.n * d.oh * d.ow * d.oc;
    const size_t nw = (size_t)d.oc * d.kh * d.kw * (d.c / groups);
    double *sw = read_all(f, sizeof(double) * (size_t)d.oc);
    float *bias = read_all(f, sizeof(float) * (size_t)d.oc);
    uint8_t *in = read_all(f, nin);
    int8_t *w = read_all(f, nw);
    uint8_t *want = read_all(f, nout);
    fclose(f);
    if (!sw || !bias || !in || !w || !want) {
        free(sw), free(bias), free(in), free(w), free(want);
        return 0;
    }
    int32_t *b32 = malloc(sizeof(int32_t) * (size_t)d.oc), *mult = malloc(sizeof(int32_t) * (size_t)d.oc);
    int32_t *shift = malloc(sizeof(int32_t) * (size_t)d.oc);
    for (int o = 0; o < d.oc; o++) {
        b32[o] = (int32_t)lrint(bias[o] / (sc[0] * sw[o]));
        cn_quantize_multiplier(sc[0] * sw[o] / sc[1], &mult[o], &shift[o]);
    }
    cn_qepilogue ep = {.bias = b32, .mult = mult, .shift = shift, .zp_out = zp_out, .qmin = 0,
                       .qmax = 255};
    uint8_t *got = malloc(nout);
    if (dw) {
        /* PyTorch's depthwise weight (C, 1, KH, KW) was written (C, KH, KW): ours is (KH, KW, C) */
        int8_t *wt = malloc(nw);
        for (int ch = 0; ch < d.c; ch++)
            for (int t = 0; t < d.kh * d.kw; t++) wt[(size_t)t * d.c + ch] = w[(size_t)ch * d.kh * d.kw + t];
        cn_qdwconv2d(got, in, wt, &d, &ep, NULL, 2);
        free(wt);
    } else {
        void *packed = malloc(cn_qconv_packed_size(d.oc, d.kh, d.kw, d.c));
        cn_qconv_pack(packed, w, d.oc, d.kh, d.kw, d.c);
        void *ws = malloc(cn_qconv_workspace(&d, 2));
        cn_qconv2d(got, in, packed, &d, &ep, ws, 2);
        free(packed), free(ws);
    }
    int md = 0;
    size_t nd = 0;
    for (size_t i = 0; i < nout; i++) {
        const int df = abs((int)got[i] - (int)want[i]);
        if (df > md) md = df;
        if (df) nd++;
    }
    printf("  %-8s %-40s max diff %d, %zu of %zu differ\n", engine, strrchr(path, '/') + 1, md,
           nd, nout);
    if (strcmp(engine, "onednn") != 0 || onednn_exact())
        CHECK(md <= 1, "%s: PyTorch %s differs by %d", path, engine, md);
    if (md > *max_diff) *max_diff = md;
    *ndiff += nd, *ntotal += nout;
    free(sw), free(bias), free(in), free(w), free(want), free(got), free(b32), free(mult), free(shift);
    return 1;
}

static void test_parity(const char *dir) {
    char path[1024];
    snprintf(path, sizeof path, "%s/index.txt", dir);
    FILE *idx = fopen(path, "r");
    CHECK(idx != NULL, "no %s (run tests/parity/make_qconv_refs.py)", path);
    if (!idx) return;
    static const char *const engines[] = {"onednn", "qnnpack"};
    int md[2] = {0, 0}, nfiles[2] = {0, 0};
    size_t nd[2] = {0, 0}, nt[2] = {0, 0};
    char engine[64], file[512];
    while (fscanf(idx, "%63s %511s", engine, file) == 2) {
        const int e = strcmp(engine, "qnnpack") == 0;
        snprintf(path, sizeof path, "%s/%s", dir, file);
        const int ok = parity_case(path, engine, &md[e], &nd[e], &nt[e]);
        CHECK(ok, "could not read %s", path);
        nfiles[e] += ok;
    }
    fclose(idx);
    for (int e = 0; e < 2; e++) {
        CHECK(nfiles[e] > 0, "no %s reference cases", engines[e]);
        printf("parity %s: %d cases, max diff %d, %.4f%% of %zu elements differ%s\n", engines[e],
               nfiles[e], md[e], nt[e] ? 100.0 * (double)nd[e] / (double)nt[e] : 0.0, nt[e],
               e == 0 && !onednn_exact()
                   ? " (not held to 1 unit: this CPU has no VNNI, where onednn saturates pair "
                     "sums to int16)"
                   : "");
    }
}

int main(int argc, char **argv) {
    printf("default implementation: %s; runnable:", cn_qkernel_name());
    for (int i = 0; i < N_IMPLS; i++)
        if (cn_qkernel_force(impls[i])) printf(" %s", impls[i]);
    cn_qkernel_force(NULL);
    printf("\n");
    CHECK(!cn_qkernel_force("no-such-kernel"), "unknown names are refused");
    test_quantize_multiplier();
    test_requant();
    test_dense();
    test_depthwise();
    printf("kernels: %d cases, %d runs against the reference\n", n_cases, n_runs);
    if (argc > 1) test_parity(argv[1]);
    return check_summary("qkernels");
}
