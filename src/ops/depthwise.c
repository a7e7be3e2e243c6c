/* Depthwise convolution (groups == C == OC) on NHWC activations: the fast path of cn_conv2d_*.
 * https://pytorch.org/docs/1.13/generated/torch.nn.Conv2d.html (groups = in_channels)
 *
 * Every loop is vectorised over channels, the contiguous axis: 16 at a time (GNU C vector
 * extensions: one zmm with AVX-512, two ymm with AVX2), then 8, then one by one. The weights
 * (C, KH, KW) are repacked per call to (KH, KW, C) in the workspace, so that the weights of a tap
 * are a channel vector too.
 * - Forward: each output pixel is a sum over taps. Interior pixels of 3x3 and 5x5 kernels with
 *   stride 1 or 2 go four at a time through kernels specialised on the size (taps unrolled, no
 *   bounds checks, one weight load per four products); every other pixel (borders, tiny maps,
 *   other kernels and strides) goes through a table of the taps that fall inside the image,
 *   applied to a block of images at once (the table is the same in every image).
 * - Data gradient: for stride 1 it is a forward of dY with the flipped filters and padding
 *   K-1-P, added into dX (so it takes the same fast kernels); otherwise a gather in which each
 *   input pixel sums the output pixels that read it. Either way a task owns its dX rows: no
 *   scatter, no races.
 * - Weight and bias gradient: for an output row (of a block of images) and a kernel row, the
 *   products are summed in float registers along the row (each kernel column over the contiguous
 *   range of output pixels for which it lies inside the image), then added to per-thread partial
 *   sums in double that are reduced in thread order at the end (the same bits for the same
 *   thread count).
 * Parallel tasks are (block of images, row, channel slice): blocks of up to 8 images for narrow
 * maps, channel slices only when there are too few rows to share (1x1 maps at batch 1).
 * In training, where a batch norm reads the output, its dX (this convolution's dY) is made a
 * block of images at a time into a buffer of the thread, from which the data and the weight
 * gradient of that block run (cn_dwconv_backward_bn): the BN's dX is never written whole nor
 * read back twice from memory. */
#include <omp.h>
#include <stdint.h>
#include <string.h>

#include "core/cpu.h"
#include "core/simd.h"
#include "kernels/act.h"
#include "kernels/dwconv.h"
#include "ops/activation.h"
#include "ops/ops.h"

/* a += x * w as one fused multiply-add where the CPU has it: ISO C mode (-std=c11) turns gcc's
 * contraction off by default, and these loops are mostly multiply-adds (clang contracts within
 * an expression by default). */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=fast")
#endif

/* Vectors of 16 and 8 floats, and their unaligned, aliasing twins for loads and stores (as the
 * x86 intrinsics headers define __m512_u). Loads and stores are macros: a function returning a
 * vector would trip -Wpsabi in the baseline (SSE2) clone. */
typedef float v16 __attribute__((vector_size(64)));
typedef float v8 __attribute__((vector_size(32)));
typedef float v16u __attribute__((vector_size(64), aligned(4), may_alias));
typedef float v8u __attribute__((vector_size(32), aligned(4), may_alias));
#define LD16(p) ((v16) * (const v16u *)(p))
#define ST16(p, v) (*(v16u *)(p) = (v))
#define LD8(p) ((v8) * (const v8u *)(p))
#define ST8(p, v) (*(v8u *)(p) = (v))
/* p[0..n) += v in double */
#define FLUSH(p, v, n)                                            \
    do {                                                          \
        float t_[n];                                              \
        memcpy(t_, &(v), sizeof t_);                              \
        for (int j_ = 0; j_ < (n); j_++) (p)[j_] += t_[j_];       \
    } while (0)

#define INLINE static inline __attribute__((always_inline))

enum {
    TMAX = 64,            /* taps per pass of a tap table */
    SERIAL_BELOW = 1 << 15 /* multiply-adds below which one thread does it all */
};

/* One pass: in (N, H, W, C) -> out (N, OH, OW, C), filters (KH, KW, C) after repacking. */
typedef struct geo {
    int n, h, w, c, oh, ow, kh, kw, sh, sw, ph, pw;
} geo;

static size_t round16(size_t n) { return (n + 15) & ~(size_t)15; }

/* the fast forward's job for d (pointers left NULL) */
static cn_dw_job dw_job_of(const cn_conv_desc *d) {
    cn_dw_job j = {0};
    j.n = d->n, j.h = d->h, j.w = d->w, j.c = d->c, j.oh = d->oh, j.ow = d->ow;
    j.k = d->kh, j.s = d->sh, j.ph = d->ph, j.pw = d->pw;
    return j;
}

/* The forward kernels of kernels/dwconv.h for this CPU: the AVX-512 ones, else the AVX2+FMA
 * copy (same tasks, same ring), else none (NULL). Chosen once. */
typedef struct dw_kernels {
    int (*shape)(int k, int s);
    size_t (*ring_floats)(const cn_dw_job *j, int blocks);
    void (*task)(const cn_dw_job *j, int img, int b0, int b1, int oy0, int oy1, float *ring);
} dw_kernels;

static const dw_kernels *fast_kernels(void) {
    static const dw_kernels k512 = {cn_dw_fast_shape, cn_dw_ring_floats, cn_dw_task__avx512};
    static const dw_kernels k2 = {cn_dw_fast_shape__avx2, cn_dw_ring_floats__avx2,
                                  cn_dw_task__avx2};
    if (cn_cpu_avx512()) return &k512;
    const cn_cpu_features *f = cn_cpu();
    return f->avx2 && f->fma ? &k2 : NULL;
}

/* The CPU has AVX2 and FMA but not AVX-512: the portable kernels' 16-float vectors, compiled
 * for AVX2, are pairs of ymm registers, and where a kernel keeps several of them live GCC spills
 * them to the stack; the weight gradient and the tap tables then go to kernels/dwwgrad_avx2.c
 * (the AVX-512 clone keeps them in zmm registers). */
static int avx2_only(void) { return fast_kernels() != NULL && !cn_cpu_avx512(); }

static size_t dw_ring_floats(const cn_dw_job *j, int blocks) {
    return fast_kernels()->ring_floats(j, blocks);
}

static int use_fast(const cn_conv_desc *d) {
    const dw_kernels *k = fast_kernels();
    return k && d->kh == d->kw && d->sh == d->sw && k->shape(d->kh, d->sh);
}

/* The tasks of the fast (AVX-512 or AVX2) forward: images x groups of channel blocks x bands of
 * rows. A group has as many blocks as keep its ring within RING_BYTES (in L2); groups get smaller and rows are
 * cut into bands (each re-reads the K - 1 input rows above it) only when there are too few tasks
 * for the threads. */
enum { RING_BYTES = 256 * 1024 };

typedef struct dw_plan {
    int blocks, per_group, groups, bands;
} dw_plan;

/* Tasks: images x channel groups x bands of output rows. A pool (the squeeze of a
 * squeeze-and-excitation) is taken from each task's own sums (pool_sums), added band by band in
 * order afterwards, so bands serve it as well. */
static dw_plan plan_fast(const cn_conv_desc *d, int nt) {
    const cn_dw_job j = dw_job_of(d);
    dw_plan p;
    p.blocks = (d->c + 15) / 16;
    const size_t per_block = dw_ring_floats(&j, 2) - dw_ring_floats(&j, 1);
    size_t fit = RING_BYTES / sizeof(float) / per_block;
    p.per_group = fit < 1 ? 1 : fit > (size_t)p.blocks ? p.blocks : (int)fit;
    p.bands = 1;
    if (nt > 1 && (long)d->n * ((p.blocks + p.per_group - 1) / p.per_group) < 4L * nt) {
        if ((long)d->n * p.blocks >= 8L * nt) {
            /* channel groups of two blocks or more (128 bytes of each pixel): no rows read
             * twice, as bands do at their edges (EfficientNet's 5x5 layers on 14x14 and 7x7
             * maps, 672 and 1152 channels, ran in 3 bands or 1 no faster at 2 threads than
             * at 1) */
            const long groups = (4L * nt + d->n - 1) / d->n;
            const int per = (int)((p.blocks + groups - 1) / groups);
            if (per < p.per_group) p.per_group = per;
        } else {
            /* bands first (they keep the reads in order), then smaller groups. Splitting
             * channels alone is a poor share: single blocks each stream the whole input, 64
             * bytes of every pixel (112x112x96, 3x3 stride 2: 385 us at 1 thread, 406 at 2,
             * when a pool kept the tasks to whole images). */
            const int max_bands = d->oh / 4 > 1 ? d->oh / 4 : 1;
            const long want = (4L * nt + d->n - 1) / d->n;
            p.bands = want < max_bands ? (int)want : max_bands;
            const long have = (long)d->n * p.bands;
            if (have < 4L * nt) {
                const int groups = (int)((4L * nt + have - 1) / have);
                const int per = (p.blocks + groups - 1) / groups;
                if (per < p.per_group) p.per_group = per < 1 ? 1 : per;
            }
        }
    }
    p.groups = (p.blocks + p.per_group - 1) / p.per_group;
    return p;
}

/* doubles of the bands' pool sums (N, bands, C) of a pooled forward at nt threads, as floats */
static size_t pool_sums_floats(const cn_conv_desc *d, int nt) {
    return round16(2 * (size_t)d->n * plan_fast(d, nt).bands * d->c);
}

enum { DGRAD_FAST_MAX_W = 64 };

/* The data gradient of a stride-1 depthwise convolution as a stride-1 forward of dout with the
 * flipped filters, padded by K - 1 - P (its output has the input's size); 0 when it is not one. */
static int dgrad_desc(const cn_conv_desc *d, cn_conv_desc *t) {
    if (d->sh != 1 || d->sw != 1 || d->ph > d->kh - 1 || d->pw > d->kw - 1) return 0;
    *t = *d;
    t->h = d->oh, t->w = d->ow;
    t->ph = d->kh - 1 - d->ph, t->pw = d->kw - 1 - d->pw;
    return cn_conv_desc_init(t) && t->oh == d->h && t->ow == d->w;
}

/* floats the fast kernels need for that data gradient: a scale of ones and a shift of zeros (the
 * epilogue that adds dout's convolution to din), then each thread's ring; 0 when they do not
 * apply */
static size_t dgrad_fast_floats(const cn_conv_desc *d, int nthreads) {
    cn_conv_desc t;
    /* measured on EfficientNet-B0's layers at batch 16 (AVX2, Zen 3): 1.3-2x faster than the
     * portable tasks for 5x5 filters (28x28 and smaller maps), 1.2-1.5x for 3x3 at 56x56, about
     * even at 14x14 and 7x7, but 0.6x on 112-wide maps (32 and 64 channels): those stay on the
     * portable tasks */
    if (!dgrad_desc(d, &t) || !use_fast(&t) || t.w > DGRAD_FAST_MAX_W) return 0;
    const cn_dw_job j = dw_job_of(&t);
    return 2 * round16((size_t)d->c) + 16 +
           (size_t)(nthreads < 1 ? 1 : nthreads) * dw_ring_floats(&j, plan_fast(&t, 1).per_group);
}

/* the workspace of cn_dwconv_backward_bn (see bn_layout_of), in floats from its start */
typedef struct bn_layout {
    size_t part, fast, buf, buf_per, total;
} bn_layout;
static bn_layout bn_layout_of(const cn_conv_desc *d, int nthreads);

size_t cn_dwconv_workspace(const cn_conv_desc *d, int nthreads, int backward) {
    size_t kc = round16((size_t)d->kh * d->kw * d->c);
    if (use_fast(d)) {
        /* a 64-byte aligned ring per thread after the weights, for the largest group: the one
         * of a single thread */
        const cn_dw_job j = dw_job_of(d);
        kc += 16 + (size_t)(nthreads < 1 ? 1 : nthreads) *
                       dw_ring_floats(&j, plan_fast(d, 1).per_group) +
              pool_sums_floats(d, nthreads < 1 ? 1 : nthreads);
    }
    if (!backward) return kc;
    size_t part = round16(2 * ((size_t)d->kh * d->kw + 1) * d->c); /* doubles, as floats */
    /* the data gradient's buffers and the weight gradient's partial sums share the space after
     * the two repacked weights: the one is done before the other starts */
    const size_t sums = (size_t)(nthreads < 1 ? 1 : nthreads) * part;
    const size_t dg = dgrad_fast_floats(d, nthreads);
    size_t total = 2 * kc + (sums > dg ? sums : dg);
    /* the hand-over from a batch norm (cn_dwconv_backward_bn), whether or not it applies at
     * this batch: it may at a smaller one */
    const size_t bn = bn_layout_of(d, nthreads).total;
    return total > bn ? total : bn;
}

/* ---- the sum over a table of taps: any pixel, any kernel ----
 * A table lists the taps of one output pixel that fall inside the image (input pixel, weights);
 * it is the same for that pixel in every image, so a task applies it to a block of images, four
 * at a time to share the weight loads. */

typedef struct taps {
    const float *x[TMAX], *w[TMAX]; /* input pixel (in the first image) and weights per tap */
    int n, first;
    float *o;              /* the output pixel in the first image */
    size_t os, xs;         /* floats from one image to the next, in output and input */
    int m;                 /* images */
    const float *bias;
    int acc, c0, c1;       /* add to o instead of setting it; channels [c0, c1) */
    int avx2;              /* apply it with cn_dw_taps_sum__avx2 (see avx2_only) */
} taps;

/* images [i, i + M) of the table: o = (acc ? o : bias or 0) + sum_t x[t] * w[t] */
INLINE void taps_sum_m(const taps *t, int i, const float *bias, int acc, const int M) {
    float *o = t->o + i * t->os;
    size_t os = t->os, xs = t->xs, xo = i * xs;
    int c = t->c0, c1 = t->c1, nt = t->n;
    for (; c + 16 <= c1; c += 16) {
        v16 a[4];
        for (int j = 0; j < M; j++) a[j] = acc ? LD16(o + j * os + c) : bias ? LD16(bias + c) : (v16){0};
        for (int k = 0; k < nt; k++) {
            v16 wv = LD16(t->w[k] + c);
            const float *x = t->x[k] + xo + c;
            for (int j = 0; j < M; j++) a[j] += LD16(x + j * xs) * wv;
        }
        for (int j = 0; j < M; j++) ST16(o + j * os + c, a[j]);
    }
    if (c + 8 <= c1) {
        v8 a[4];
        for (int j = 0; j < M; j++) a[j] = acc ? LD8(o + j * os + c) : bias ? LD8(bias + c) : (v8){0};
        for (int k = 0; k < nt; k++) {
            v8 wv = LD8(t->w[k] + c);
            const float *x = t->x[k] + xo + c;
            for (int j = 0; j < M; j++) a[j] += LD8(x + j * xs) * wv;
        }
        for (int j = 0; j < M; j++) ST8(o + j * os + c, a[j]);
        c += 8;
    }
    for (; c < c1; c++)
        for (int j = 0; j < M; j++) {
            float a = acc ? o[j * os + c] : bias ? bias[c] : 0.0f;
            for (int k = 0; k < nt; k++) a += t->x[k][xo + j * xs + c] * t->w[k][c];
            o[j * os + c] = a;
        }
}

/* Applies the taps listed so far. The first pass sets the output (or adds to it, with acc);
 * later passes (tables longer than TMAX) add. */
INLINE void taps_flush(taps *t) {
    const float *bias = t->first ? t->bias : NULL;
    int acc = t->first ? t->acc : 1, i = 0;
    if (t->avx2) {
        cn_dw_taps_sum__avx2(t->o, t->os, t->x, t->w, t->n, 0, t->xs, t->m, bias, acc, t->c0, t->c1);
    } else {
        for (; i + 4 <= t->m; i += 4) taps_sum_m(t, i, bias, acc, 4);
        for (; i < t->m; i++) taps_sum_m(t, i, bias, acc, 1);
    }
    t->n = 0;
    t->first = 0;
}

INLINE void taps_push(taps *t, const float *x, const float *w) {
    t->x[t->n] = x;
    t->w[t->n] = w;
    if (++t->n == TMAX) taps_flush(t);
}

/* output pixel (oy, ox) through the taps inside the image; img: the first image */
INLINE void fwd_pixel(taps *t, const float *img, const float *wr, const geo *g, int oy, int ox) {
    t->n = 0, t->first = 1;
    int iy0 = oy * g->sh - g->ph, ix0 = ox * g->sw - g->pw;
    for (int ky = 0; ky < g->kh; ky++) {
        int iy = iy0 + ky;
        if (iy < 0 || iy >= g->h) continue;
        for (int kx = 0; kx < g->kw; kx++) {
            int ix = ix0 + kx;
            if (ix < 0 || ix >= g->w) continue;
            taps_push(t, img + ((size_t)iy * g->w + ix) * g->c, wr + (size_t)(ky * g->kw + kx) * g->c);
        }
    }
    if (t->n || t->first) taps_flush(t);
}

/* ---- forward, interior pixels of KxK kernels with stride S (K, S constants once inlined) ----
 * rows: the first of the K input rows; output pixels [oxa, oxb) of the row, whose taps all lie
 * inside; channels [c0, c1), a multiple of 16. */
INLINE void fwd_interior(float *restrict orow, const float *rows, const float *wr,
                         const float *bias, int w, int c, int pw, int oxa, int oxb, int c0,
                         int c1, int acc, const int K, const int S) {
    size_t rs = (size_t)w * c;
    int ox = oxa;
    for (; ox + 4 <= oxb; ox += 4) {
        const float *base = rows + (size_t)(ox * S - pw) * c;
        float *o = orow + (size_t)ox * c;
        for (int ch = c0; ch < c1; ch += 16) {
            v16 z = !acc && bias ? LD16(bias + ch) : (v16){0};
            v16 a0 = z, a1 = z, a2 = z, a3 = z;
            for (int ky = 0; ky < K; ky++) {
                const float *r = base + ky * rs + ch, *wk = wr + (size_t)ky * K * c + ch;
                for (int kx = 0; kx < K; kx++) {
                    v16 wv = LD16(wk + (size_t)kx * c);
                    a0 += LD16(r + (size_t)kx * c) * wv;
                    a1 += LD16(r + (size_t)(kx + S) * c) * wv;
                    a2 += LD16(r + (size_t)(kx + 2 * S) * c) * wv;
                    a3 += LD16(r + (size_t)(kx + 3 * S) * c) * wv;
                }
            }
            if (acc) {
                a0 += LD16(o + ch);
                a1 += LD16(o + c + ch);
                a2 += LD16(o + 2 * (size_t)c + ch);
                a3 += LD16(o + 3 * (size_t)c + ch);
            }
            ST16(o + ch, a0);
            ST16(o + c + ch, a1);
            ST16(o + 2 * (size_t)c + ch, a2);
            ST16(o + 3 * (size_t)c + ch, a3);
        }
    }
    for (; ox < oxb; ox++) {
        const float *base = rows + (size_t)(ox * S - pw) * c;
        float *o = orow + (size_t)ox * c;
        for (int ch = c0; ch < c1; ch += 16) {
            v16 a = !acc && bias ? LD16(bias + ch) : (v16){0};
            for (int ky = 0; ky < K; ky++) {
                const float *r = base + ky * rs + ch, *wk = wr + (size_t)ky * K * c + ch;
                for (int kx = 0; kx < K; kx++) a += LD16(r + (size_t)kx * c) * LD16(wk + (size_t)kx * c);
            }
            if (acc) a += LD16(o + ch);
            ST16(o + ch, a);
        }
    }
}

static int fast_kernel(const geo *g) {
    return g->kh == g->kw && g->sh == g->sw && (g->kh == 3 || g->kh == 5) &&
           (g->sh == 1 || g->sh == 2);
}

/* Output row oy of images [n0, n1), channels [c0, c1): out = bias + conv, or out += conv (acc). */
static CN_CLONES void fwd_task(float *out, const float *in, const float *wr, const float *bias,
                               const geo *g, int oy, int n0, int n1, int c0, int c1, int acc) {
    int c = g->c;
    size_t xs = (size_t)g->h * g->w * c, os = (size_t)g->oh * g->ow * c;
    const float *img = in + n0 * xs;
    float *orow = out + ((size_t)n0 * g->oh + oy) * g->ow * c;
    int iy0 = oy * g->sh - g->ph;
    int cf = c0 + (c1 - c0) / 16 * 16; /* channels [c0, cf) take the fast kernels */
    int oxa = 0, oxb = 0;              /* pixels [oxa, oxb) have every tap inside */
    if (fast_kernel(g) && iy0 >= 0 && iy0 + g->kh <= g->h && cf > c0) {
        int s = g->sw;
        oxa = (g->pw + s - 1) / s;
        oxb = g->w - g->kw + g->pw >= 0 ? (g->w - g->kw + g->pw) / s + 1 : 0;
        if (oxb > g->ow) oxb = g->ow;
        if (oxb < oxa) oxb = oxa;
        for (int i = 0; i < n1 - n0; i++) {
            const float *rows = img + i * xs + (size_t)iy0 * g->w * c;
            float *o = orow + i * os;
            switch (g->kh * 10 + s) {
            case 31: fwd_interior(o, rows, wr, bias, g->w, c, g->pw, oxa, oxb, c0, cf, acc, 3, 1); break;
            case 32: fwd_interior(o, rows, wr, bias, g->w, c, g->pw, oxa, oxb, c0, cf, acc, 3, 2); break;
            case 51: fwd_interior(o, rows, wr, bias, g->w, c, g->pw, oxa, oxb, c0, cf, acc, 5, 1); break;
            default: fwd_interior(o, rows, wr, bias, g->w, c, g->pw, oxa, oxb, c0, cf, acc, 5, 2); break;
            }
        }
    }
    taps t;
    t.os = os, t.xs = xs, t.m = n1 - n0, t.bias = bias, t.acc = acc, t.avx2 = avx2_only();
    for (int ox = 0; ox < g->ow; ox++) {
        int inside = ox >= oxa && ox < oxb;
        if (inside && cf == c1) continue;
        t.o = orow + (size_t)ox * c;
        t.c0 = inside ? cf : c0, t.c1 = c1;
        fwd_pixel(&t, img, wr, g, oy, ox);
    }
}

/* ---- data gradient by gather: din[n, iy, ix] += sum of dout[n, oy, ox] * w[ky, kx] over the
 * (oy, ox) with oy * sh - ph + ky = iy and ox * sw - pw + kx = ix ---- */
static CN_CLONES void din_task(float *din, const float *dout, const float *wr, const geo *g,
                               int iy, int n0, int n1, int c0, int c1) {
    int c = g->c;
    size_t xs = (size_t)g->oh * g->ow * c, os = (size_t)g->h * g->w * c;
    const float *dimg = dout + n0 * xs;
    float *drow = din + ((size_t)n0 * g->h + iy) * g->w * c;
    taps t;
    t.os = os, t.xs = xs, t.m = n1 - n0, t.bias = NULL, t.acc = 1, t.c0 = c0, t.c1 = c1;
    t.avx2 = avx2_only();
    /* the kernel rows that reach row iy come every sh rows, from ky0 at output row oy0 down */
    int ky0 = (iy + g->ph) % g->sh, oy0 = (iy + g->ph) / g->sh;
    for (int ix = 0; ix < g->w; ix++) {
        int kx0 = (ix + g->pw) % g->sw, ox0 = (ix + g->pw) / g->sw;
        t.o = drow + (size_t)ix * c;
        t.n = 0, t.first = 1;
        for (int ky = ky0, oy = oy0; ky < g->kh && oy >= 0; ky += g->sh, oy--) {
            if (oy >= g->oh) continue;
            for (int kx = kx0, ox = ox0; kx < g->kw && ox >= 0; kx += g->sw, ox--) {
                if (ox >= g->ow) continue;
                taps_push(&t, dimg + ((size_t)oy * g->ow + ox) * c, wr + (size_t)(ky * g->kw + kx) * c);
            }
        }
        if (t.n) taps_flush(&t);
    }
}

/* ---- weight and bias gradient ---- */

/* the output pixels [*lo, *hi) for which kernel column kx reads inside the image */
INLINE void col_range(const geo *g, int kx, int *lo, int *hi) {
    int a = g->pw - kx, b = g->w - 1 + g->pw - kx, s = g->sw;
    *lo = a <= 0 ? 0 : (a + s - 1) / s;
    *hi = b < 0 ? 0 : b / s + 1;
    if (*hi > g->ow) *hi = g->ow;
    if (*hi < *lo) *hi = *lo;
}

/* One output row and kernel row ky, over m images (dY rows drow + i * ds, input rows
 * xrow + i * xs): dwk[kx][c] += sum over the images and over ox in the column range of kx of
 * dY[ox][c] * x[ox * S - pw + kx][c]. K and S are constants (the fast kernels) or 0 (any width
 * and stride). Output pixels [lo[0], hi[K-1]) use every kernel column: there one dY load serves
 * K products. Sums run in float registers and are added in double once per call. */
INLINE void wgrad_krow(double *restrict dwk, const float *drow, size_t ds, const float *xrow,
                       size_t xs, int m, const geo *g, int c0, int c1, const int K, const int S) {
    int c = g->c, pw = g->pw, kw = K ? K : g->kw, s = S ? S : g->sw;
    int lo[5], hi[5];
    for (int kx = 0; kx < K; kx++) col_range(g, kx, &lo[kx], &hi[kx]);
    int ch = c0;
    if (K) {
        int A = lo[0], B = hi[K - 1];
        for (; ch + 16 <= c1; ch += 16) {
            v16 a[5];
            for (int kx = 0; kx < K; kx++) a[kx] = (v16){0};
            for (int i = 0; i < m; i++) {
                const float *d = drow + i * ds + ch, *x = xrow + i * xs + ch;
                if (A < B) {
                    for (int ox = A; ox < B; ox++) {
                        v16 dv = LD16(d + (size_t)ox * c);
                        const float *xp = x + (size_t)(ox * S - pw) * c;
                        for (int kx = 0; kx < K; kx++) a[kx] += dv * LD16(xp + (size_t)kx * c);
                    }
                    for (int kx = 0; kx < K; kx++) {
                        for (int ox = lo[kx]; ox < A; ox++)
                            a[kx] += LD16(d + (size_t)ox * c) * LD16(x + (size_t)(ox * S - pw + kx) * c);
                        for (int ox = B; ox < hi[kx]; ox++)
                            a[kx] += LD16(d + (size_t)ox * c) * LD16(x + (size_t)(ox * S - pw + kx) * c);
                    }
                } else {
                    for (int kx = 0; kx < K; kx++)
                        for (int ox = lo[kx]; ox < hi[kx]; ox++)
                            a[kx] += LD16(d + (size_t)ox * c) * LD16(x + (size_t)(ox * S - pw + kx) * c);
                }
            }
            for (int kx = 0; kx < K; kx++) FLUSH(dwk + (size_t)kx * c + ch, a[kx], 16);
        }
    } else {
        for (; ch + 16 <= c1; ch += 16)
            for (int kx = 0; kx < kw; kx++) {
                int l, h;
                col_range(g, kx, &l, &h);
                v16 a = {0};
                for (int i = 0; i < m; i++) {
                    const float *d = drow + i * ds + ch, *x = xrow + i * xs + ch;
                    for (int ox = l; ox < h; ox++)
                        a += LD16(d + (size_t)ox * c) * LD16(x + (size_t)(ox * s - pw + kx) * c);
                }
                FLUSH(dwk + (size_t)kx * c + ch, a, 16);
            }
    }
    /* the channel tail: 8, then one at a time */
    for (int kx = 0; kx < kw && ch < c1; kx++) {
        int l, h, e = ch;
        col_range(g, kx, &l, &h);
        if (e + 8 <= c1) {
            v8 a = {0};
            for (int i = 0; i < m; i++) {
                const float *d = drow + i * ds + e, *x = xrow + i * xs + e;
                for (int ox = l; ox < h; ox++)
                    a += LD8(d + (size_t)ox * c) * LD8(x + (size_t)(ox * s - pw + kx) * c);
            }
            FLUSH(dwk + (size_t)kx * c + e, a, 8);
            e += 8;
        }
        for (; e < c1; e++) {
            float a = 0;
            for (int i = 0; i < m; i++) {
                const float *d = drow + i * ds + e, *x = xrow + i * xs + e;
                for (int ox = l; ox < h; ox++) a += d[(size_t)ox * c] * x[(size_t)(ox * s - pw + kx) * c];
            }
            dwk[(size_t)kx * c + e] += a;
        }
    }
}

/* Output row oy of images [n0, n1), channels [c0, c1): adds to the partial sums dwp (KH, KW, C)
 * and dbp (C) (either may be NULL). */
static CN_CLONES void wgrad_task(double *dwp, double *dbp, const float *dout, const float *in,
                                 const geo *g, int oy, int n0, int n1, int c0, int c1) {
    int c = g->c, m = n1 - n0;
    size_t ds = (size_t)g->oh * g->ow * c, xs = (size_t)g->h * g->w * c;
    const float *drow = dout + ((size_t)n0 * g->oh + oy) * g->ow * c;
    if (dbp) {
        int ch = c0;
        for (; ch + 16 <= c1; ch += 16) {
            v16 a = {0};
            for (int i = 0; i < m; i++)
                for (int ox = 0; ox < g->ow; ox++) a += LD16(drow + i * ds + (size_t)ox * c + ch);
            FLUSH(dbp + ch, a, 16);
        }
        if (ch + 8 <= c1) {
            v8 a = {0};
            for (int i = 0; i < m; i++)
                for (int ox = 0; ox < g->ow; ox++) a += LD8(drow + i * ds + (size_t)ox * c + ch);
            FLUSH(dbp + ch, a, 8);
            ch += 8;
        }
        for (; ch < c1; ch++) {
            float a = 0;
            for (int i = 0; i < m; i++)
                for (int ox = 0; ox < g->ow; ox++) a += drow[i * ds + (size_t)ox * c + ch];
            dbp[ch] += a;
        }
    }
    if (!dwp) return;
    int fast = fast_kernel(g), kw = g->kw, s = g->sw, avx2 = avx2_only();
    int lo[5], hi[5];
    if (fast && avx2)
        for (int kx = 0; kx < kw; kx++) col_range(g, kx, &lo[kx], &hi[kx]);
    for (int ky = 0; ky < g->kh; ky++) {
        int iy = oy * g->sh - g->ph + ky;
        if (iy < 0 || iy >= g->h) continue;
        const float *xrow = in + ((size_t)n0 * g->h + iy) * g->w * c;
        double *dwk = dwp + (size_t)ky * kw * c;
        if (fast && avx2)
            cn_dw_wgrad_krow__avx2(dwk, drow, ds, xrow, xs, m, c, g->pw, lo, hi, c0, c1, kw, s);
        else if (!fast) wgrad_krow(dwk, drow, ds, xrow, xs, m, g, c0, c1, 0, 0);
        else if (kw == 3 && s == 1) wgrad_krow(dwk, drow, ds, xrow, xs, m, g, c0, c1, 3, 1);
        else if (kw == 3) wgrad_krow(dwk, drow, ds, xrow, xs, m, g, c0, c1, 3, 2);
        else if (s == 1) wgrad_krow(dwk, drow, ds, xrow, xs, m, g, c0, c1, 5, 1);
        else wgrad_krow(dwk, drow, ds, xrow, xs, m, g, c0, c1, 5, 2);
    }
}

/* ---- drivers ---- */

static geo geo_of(const cn_conv_desc *d) {
    geo g = {d->n, d->h, d->w, d->c, d->oh, d->ow, d->kh, d->kw, d->sh, d->sw, d->ph, d->pw};
    return g;
}

/* wr (KH*KW, C) from w (C, KH*KW), taps reversed when flip (the filters rotated by 180 degrees) */
static void repack(float *restrict wr, const float *restrict w, int c, int kk, int flip) {
    for (int ch = 0; ch < c; ch++)
        for (int t = 0; t < kk; t++) wr[(size_t)(flip ? kk - 1 - t : t) * c + ch] = w[(size_t)ch * kk + t];
}

/* Tasks: (block of images, row, channel slice). Narrow rows (tiny maps) take blocks of up to 8
 * images, so that a tap table or a register sum serves more pixels; rows are cut into channel
 * slices (whole 16-channel blocks, the last one with the tail) only when there are fewer than 4
 * (block, row) pairs per thread. */
typedef struct split {
    int n, rows, nb, nblk, ns, c16, c;
    long tasks;
} split;

/* the most images a task's block takes on maps of this width */
static int block_images(int width) { return width >= 32 ? 1 : width >= 8 ? 4 : 8; }

static split make_split(int n, int rows, int width, int c, int nthreads) {
    split s = {n, rows, block_images(width), 0, 1, c / 16, c, 0};
    if (s.nb > n) s.nb = n;
    while (s.nb > 1 && (long)((n + s.nb - 1) / s.nb) * rows < 4L * nthreads) s.nb /= 2;
    s.nblk = (n + s.nb - 1) / s.nb;
    long pairs = (long)s.nblk * rows;
    if (nthreads > 1 && pairs < 4L * nthreads && s.c16 > 1) {
        s.ns = (int)((4L * nthreads + pairs - 1) / pairs);
        if (s.ns > s.c16) s.ns = s.c16;
    }
    s.tasks = pairs * s.ns;
    return s;
}

typedef struct task {
    int row, n0, n1, c0, c1;
} task;

static task task_of(const split *s, long t) {
    task k;
    int sl = (int)(t % s->ns);
    long r = t / s->ns;
    k.row = (int)(r % s->rows);
    k.n0 = (int)(r / s->rows) * s->nb;
    k.n1 = k.n0 + s->nb < s->n ? k.n0 + s->nb : s->n;
    k.c0 = sl ? 16 * (int)((long)s->c16 * sl / s->ns) : 0;
    k.c1 = sl + 1 < s->ns ? 16 * (int)((long)s->c16 * (sl + 1) / s->ns) : s->c;
    return k;
}

static int threads_for(const geo *g, int nthreads) {
    double macs = (double)g->n * g->oh * g->ow * g->c * g->kh * g->kw;
    return nthreads < 1 || macs < SERIAL_BELOW ? 1 : nthreads;
}

/* The inference epilogue (cn_epilogue) on output row oy of images [n0, n1), channels [c0, c1),
 * right after fwd_task wrote it. */
static CN_CLONES void epilogue_task(float *out, const geo *g, int oy, int n0, int n1, int c0,
                                    int c1, const cn_epilogue *ep) {
    int c = g->c;
    const float *restrict sc = ep->scale, *restrict sh = ep->shift;
    for (int n = n0; n < n1; n++) {
        size_t at = (((size_t)n * g->oh + oy) * g->ow) * c;
        for (int ox = 0; ox < g->ow; ox++, at += c) {
            float *restrict o = out + at;
            const float *restrict r = ep->res ? ep->res + at : NULL;
            for (int j = c0; j < c1; j++) o[j] = o[j] * sc[j] + sh[j] + (r ? r[j] : 0.0f);
            if (ep->act == CN_ACT_RELU)
                for (int j = c0; j < c1; j++) o[j] = o[j] < 0 ? 0.0f : o[j];
            else if (ep->act == CN_ACT_SILU)
                cn_silu_n(o + c0, o + c0, (size_t)(c1 - c0));
            else if (ep->act == CN_ACT_SIGMOID)
                cn_sigmoid_n(o + c0, o + c0, (size_t)(c1 - c0));
        }
    }
}

/* pool (N, C) = the means over hw pixels from the bands' sums bsum (N, bands, C), added in band
 * order (the same bits whichever thread ran which band) */
static void pool_of_band_sums(float *pool, const double *bsum, int n, int bands, int c,
                              double hw) {
    for (int img = 0; img < n; img++)
        for (int ch = 0; ch < c; ch++) {
            double s = 0;
            for (int b = 0; b < bands; b++) s += bsum[((size_t)img * bands + b) * c + ch];
            pool[(size_t)img * c + ch] = (float)(s / hw);
        }
}

/* The AVX-512 or AVX2 kernels (kernels/dwconv.h) over the tasks of plan_fast. ring: after the
 * weights, see cn_dwconv_workspace. */
static void fast_forward(float *out, const float *in, float *wr, const float *bias,
                         const cn_conv_desc *d, int nt, const cn_epilogue *ep, float *ring,
                         const float *w) {
    cn_dw_job j = dw_job_of(d);
    j.in = in, j.out = out, j.wr = wr, j.bias = bias;
    if (ep)
        j.scale = ep->scale, j.shift = ep->shift, j.res = ep->res, j.act = (int)ep->act,
        j.pool = ep->pool;
    const dw_plan p = plan_fast(d, nt);
    const size_t per = dw_ring_floats(&j, p.per_group);
    ring = (float *)(((uintptr_t)ring + 63) & ~(uintptr_t)63);
    /* the bands' pool sums (N, bands, C), after the threads' rings */
    float *const pool = j.pool;
    double *bsum = pool && p.bands > 1 ? (double *)(ring + (size_t)nt * per) : NULL;
    if (bsum) j.pool = NULL;
    const size_t C = (size_t)d->c;
    const long tasks = (long)d->n * p.groups * p.bands;
    const int kk = d->kh * d->kw;
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        /* the filters repacked tap-major by all threads (a strided scatter, as long as the
         * convolution itself on small maps when one thread did it) */
        if (w) {
#pragma omp for schedule(static)
            for (int ch = 0; ch < d->c; ch++)
                for (int t = 0; t < kk; t++) wr[(size_t)t * C + ch] = w[(size_t)ch * kk + t];
        }
#pragma omp for schedule(static)
        for (long t = 0; t < tasks; t++) {
            const int band = (int)(t % p.bands), grp = (int)(t / p.bands % p.groups);
            const int img = (int)(t / p.bands / p.groups);
            const int b0 = grp * p.per_group;
            const int b1 = b0 + p.per_group < p.blocks ? b0 + p.per_group : p.blocks;
            const int oy0 = (int)((long)d->oh * band / p.bands);
            const int oy1 = (int)((long)d->oh * (band + 1) / p.bands);
            cn_dw_job k = j;
            if (bsum) k.pool_sums = bsum + ((size_t)img * p.bands + band) * C;
            fast_kernels()->task(&k, img, b0, b1, oy0, oy1,
                                 ring + (size_t)omp_get_thread_num() * per);
        }
    }
    if (bsum) pool_of_band_sums(pool, bsum, d->n, p.bands, d->c, (double)d->oh * d->ow);
}

/* out = bias + conv(in) (acc 0) or out += conv(in) (acc 1); then the epilogue, if any */
static void forward_pass(float *out, const float *in, const float *wr, const float *bias,
                         const geo *g, int nthreads, int acc, const cn_epilogue *ep) {
    int nt = threads_for(g, nthreads);
    split s = make_split(g->n, g->oh, g->ow, g->c, nt);
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (long t = 0; t < s.tasks; t++) {
        task k = task_of(&s, t);
        fwd_task(out, in, wr, bias, g, k.row, k.n0, k.n1, k.c0, k.c1, acc);
        if (ep) epilogue_task(out, g, k.row, k.n0, k.n1, k.c0, k.c1, ep);
    }
}

static void forward(float *out, const float *in, const float *w, const float *bias,
                    const cn_epilogue *ep, const cn_conv_desc *d, float *ws, int nthreads) {
    geo g = geo_of(d);
    if (use_fast(d)) {
        fast_forward(out, in, ws, bias, d, threads_for(&g, nthreads), ep,
                     ws + round16((size_t)d->kh * d->kw * d->c), w);
    } else {
        repack(ws, w, d->c, d->kh * d->kw, 0);
        forward_pass(out, in, ws, bias, &g, nthreads, 0, ep);
        if (ep && ep->pool) cn_gap_forward(ep->pool, out, d->n, d->oh * d->ow, d->c);
    }
}

void cn_dwconv_forward(float *out, const float *in, const float *w, const float *bias,
                       const cn_conv_desc *d, float *ws, int nthreads) {
    forward(out, in, w, bias, NULL, d, ws, nthreads);
}

void cn_dwconv_forward_fused(float *out, const float *in, const float *w, const cn_epilogue *ep,
                             const cn_conv_desc *d, float *ws, int nthreads) {
    forward(out, in, w, NULL, ep, d, ws, nthreads);
}

void cn_dwconv_pack_weights(float *wr, const float *w, const cn_conv_desc *d) {
    repack(wr, w, d->c, d->kh * d->kw, 0);
}

void cn_dwconv_forward_packed(float *out, const float *in, const float *wr, const cn_epilogue *ep,
                              const cn_conv_desc *d, float *ws, int nthreads) {
    geo g = geo_of(d);
    if (use_fast(d)) {
        /* w NULL: the kernels read wr as it is */
        fast_forward(out, in, (float *)wr, NULL, d, threads_for(&g, nthreads), ep,
                     ws + round16((size_t)d->kh * d->kw * d->c), NULL);
    } else {
        forward_pass(out, in, wr, NULL, &g, nthreads, 0, ep);
        if (ep && ep->pool) cn_gap_forward(ep->pool, out, d->n, d->oh * d->ow, d->c);
    }
}

int cn_dwconv_sets_din(const cn_conv_desc *d) {
    cn_conv_desc t;
    return dgrad_desc(d, &t);
}

static void dw_backward(float *din, float *dw, float *dbias, const float *dout, const float *in,
                        const float *w, const cn_conv_desc *d, float *ws, int nthreads, int set);

void cn_dwconv_backward(float *din, float *dw, float *dbias, const float *dout, const float *in,
                        const float *w, const cn_conv_desc *d, float *ws, int nthreads) {
    dw_backward(din, dw, dbias, dout, in, w, d, ws, nthreads, 0);
}

void cn_dwconv_backward_set(float *din, float *dw, float *dbias, const float *dout,
                            const float *in, const float *w, const cn_conv_desc *d, float *ws,
                            int nthreads) {
    dw_backward(din, dw, dbias, dout, in, w, d, ws, nthreads, 1);
}

/* din from dout, written (set: cn_dwconv_sets_din shapes only) or added to, by nt threads
 * (nt 1: the calling thread alone). wr: the filters repacked, wf: flipped (stride 1); fast: the
 * fast kernels' ones, zeros and then rings (dgrad_fast_floats) where they apply. */
static void dgrad(float *din, const float *dout, const float *wr, const float *wf,
                  const cn_conv_desc *d, const float *fast, int nt, int set) {
    cn_conv_desc td;
    if (dgrad_desc(d, &td)) {
        /* a stride-1 forward of dout with the flipped filters, padded by K-1-P, added to din
         * (or written, with set): on the fast kernels through their epilogue (conv * 1 + 0
         * + din) */
        geo t = geo_of(&td);
        if (fast) {
            const float *ones = fast, *zeros = fast + round16((size_t)d->c);
            const cn_epilogue ep = {ones, zeros, set ? NULL : din, CN_ACT_NONE, NULL};
            fast_forward(din, dout, (float *)wf, NULL, &td, threads_for(&t, nt), &ep,
                         (float *)zeros + round16((size_t)d->c), NULL);
        } else {
            forward_pass(din, dout, wf, NULL, &t, nt, !set, NULL);
        }
        return;
    }
    geo g = geo_of(d);
    int n = threads_for(&g, nt);
    split s = make_split(d->n, d->h, d->w, d->c, n);
#pragma omp parallel for schedule(static) num_threads(n) if (n > 1)
    for (long t = 0; t < s.tasks; t++) {
        task k = task_of(&s, t);
        din_task(din, dout, wr, &g, k.row, k.n0, k.n1, k.c0, k.c1);
    }
}

/* the fast data gradient's ones and zeros at fast (dgrad_fast_floats) */
static void ones_zeros(float *fast, int c) {
    for (int ch = 0; ch < c; ch++) fast[ch] = 1.0f, fast[round16((size_t)c) + ch] = 0.0f;
}

/* doubles of one thread's partial weight and bias sums */
static size_t part_stride(const cn_conv_desc *d) {
    return round16(2 * ((size_t)d->kh * d->kw + 1) * d->c) / 2;
}

/* dw += the per-thread partial sums part[0..used) (thread order), dbias likewise */
static void reduce_parts(float *dw, float *dbias, const double *part, const cn_conv_desc *d,
                         int used) {
    const int c = d->c, kk = d->kh * d->kw;
    const size_t stride = part_stride(d);
    if (dw)
        for (int t = 0; t < kk; t++)
            for (int ch = 0; ch < c; ch++) {
                double acc = 0;
                for (int k = 0; k < used; k++) acc += part[(size_t)k * stride + (size_t)t * c + ch];
                dw[(size_t)ch * kk + t] += (float)acc;
            }
    if (dbias)
        for (int ch = 0; ch < c; ch++) {
            double acc = 0;
            for (int k = 0; k < used; k++) acc += part[(size_t)k * stride + (size_t)kk * c + ch];
            dbias[ch] += (float)acc;
        }
}

/* set: din written outright (cn_dwconv_sets_din shapes only), else accumulated */
static void dw_backward(float *din, float *dw, float *dbias, const float *dout, const float *in,
                        const float *w, const cn_conv_desc *d, float *ws, int nthreads, int set) {
    geo g = geo_of(d);
    int c = d->c, kk = d->kh * d->kw;
    size_t kc = round16((size_t)kk * c);
    float *wr = ws, *wf = ws + kc;
    if (din) {
        repack(wr, w, c, kk, 0);
        repack(wf, w, c, kk, 1);
        float *fast = dgrad_fast_floats(d, nthreads) ? ws + 2 * kc : NULL;
        if (fast) ones_zeros(fast, c);
        dgrad(din, dout, wr, wf, d, fast, nthreads, set);
    }
    if (!dw && !dbias) return;
    /* per-thread partial sums: (KK, C) weight, then (C) bias, in double */
    double *part = (double *)(ws + 2 * kc);
    size_t stride = part_stride(d);
    int nt = threads_for(&g, nthreads), used = 1;
    split s = make_split(d->n, d->oh, d->ow, c, nt);
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        int t = omp_get_thread_num();
#pragma omp single
        used = omp_get_num_threads();
        double *p = part + (size_t)t * stride;
        memset(p, 0, sizeof(double) * ((size_t)kk + 1) * c);
#pragma omp for schedule(static)
        for (long i = 0; i < s.tasks; i++) {
            task k = task_of(&s, i);
            wgrad_task(dw ? p : NULL, dbias ? p + (size_t)kk * c : NULL, dout, in, &g, k.row,
                       k.n0, k.n1, k.c0, k.c1);
        }
    }
    reduce_parts(dw, dbias, part, d, used);
}

/* ---- the backward with dY made by the batch norm after it (cn_dwconv_backward_bn) ----
 * The weight gradient's tasks (make_split over the output rows) when each thread's share is
 * whole blocks of images: a thread makes a block's dY into its buffer, then runs the data and
 * the weight gradient of that block from there; every sum is the one dw_backward takes. */
static int bn_split(const cn_conv_desc *d, int nthreads, split *s, int *nt) {
    geo g = geo_of(d);
    *nt = threads_for(&g, nthreads);
    *s = make_split(d->n, d->oh, d->ow, d->c, *nt);
    return s->ns == 1 && s->nblk % *nt == 0;
}

int cn_dwconv_backward_bn_ok(const cn_conv_desc *d, int nthreads) {
    split s;
    int nt;
    return bn_split(d, nthreads, &s, &nt);
}

/* The hand-over's workspace after the two repacked filters: the partial sums of nthreads
 * threads, the fast data gradient's floats of each thread (ones, zeros, a ring), then a dY buffer
 * per thread for the most images a block can hold at any batch (64-byte aligned). */
static bn_layout bn_layout_of(const cn_conv_desc *d, int nthreads) {
    const size_t T = (size_t)(nthreads < 1 ? 1 : nthreads);
    const size_t kc = round16((size_t)d->kh * d->kw * d->c);
    const size_t nb = (size_t)block_images(d->ow);
    bn_layout l;
    l.part = 2 * kc;
    l.fast = l.part + 2 * T * part_stride(d);
    l.buf = l.fast + T * dgrad_fast_floats(d, 1); /* aligned up by at most 15 floats */
    l.buf_per = round16(nb * d->oh * d->ow * d->c);
    l.total = l.buf + 16 + T * l.buf_per;
    return l;
}

void cn_dwconv_backward_bn(float *din, float *dw, const cn_bn_dx *bn, const float *in,
                           const float *w, const cn_conv_desc *d, float *ws, int nthreads,
                           int set) {
    const int c = d->c, kk = d->kh * d->kw;
    const size_t kc = round16((size_t)kk * c), img = (size_t)d->oh * d->ow;
    const size_t ins = (size_t)d->h * d->w * c;
    const bn_layout l = bn_layout_of(d, nthreads);
    float *wr = ws, *wf = ws + kc;
    repack(wr, w, c, kk, 0);
    repack(wf, w, c, kk, 1);
    const size_t fast = dgrad_fast_floats(d, 1);
    double *part = (double *)(ws + l.part);
    float *bufs = (float *)(((uintptr_t)(ws + l.buf) + 63) & ~(uintptr_t)63);
    const size_t stride = part_stride(d);
    split s;
    int nt, used = 1;
    bn_split(d, nthreads, &s, &nt);
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        const int t = omp_get_thread_num();
#pragma omp single
        used = omp_get_num_threads();
        double *p = part + (size_t)t * stride;
        float *buf = bufs + (size_t)t * l.buf_per;
        memset(p, 0, sizeof(double) * (size_t)kk * c);
        /* the fast data gradient's ones, zeros and ring of this thread */
        float *mine = fast ? ws + l.fast + (size_t)t * fast : NULL;
        if (mine) ones_zeros(mine, c);
        /* the blocks of the weight gradient's static schedule (bn_split) */
        for (int b = s.nblk * t / used; b < s.nblk * (t + 1) / used; b++) {
            const int n0 = b * s.nb, n1 = n0 + s.nb < d->n ? n0 + s.nb : d->n;
            cn_batchnorm_dx_rows(bn, buf, n0 * img, n1 * img);
            cn_conv_desc db = *d;
            db.n = n1 - n0;
            if (din) dgrad(din + n0 * ins, buf, wr, wf, &db, mine, 1, set);
            if (dw) {
                const geo g = geo_of(&db);
                for (int oy = 0; oy < d->oh; oy++)
                    wgrad_task(p, NULL, buf, in + n0 * ins, &g, oy, 0, n1 - n0, 0, c);
            }
        }
    }
    reduce_parts(dw, NULL, part, d, used);
}

/* ---- a 1x1 convolution and the depthwise convolution that reads it, fused (inference) ----
 * An MBConv block's expanded map (112x112x96 in EfficientNet-B0's second stage: 4.8 MB an
 * image) is written by the expansion and read back by the depthwise convolution; beyond L2 both
 * passes wait on memory. Here each thread takes a run of bands of output rows of the depthwise
 * convolution: for a band it expands the input rows the band reads into a buffer that stays in
 * L2 (keeping the rows it shares with the band before: the overlap is moved, not recomputed),
 * then runs the depthwise task on that buffer, as a sub-image whose top padding is what remains
 * of ph above it. The expansion of a band is the same 1x1 convolution (with its epilogue) on a
 * sub-image of whole rows, so every value is the one the two passes would compute; a pool of the
 * output (SE squeeze) is summed per band in double and the bands added in order, the same for
 * any thread count (bands do not depend on it unless there are fewer bands than threads). */

enum { BAND_BYTES = 384 * 1024 };

typedef struct xdw_plan {
    int bands;   /* per image */
    int in_rows; /* the most input rows of a band */
    size_t band_floats, ring_floats, conv_floats, per_thread;
} xdw_plan;

int cn_expand_dw_fusable(int k, int stride) {
    const dw_kernels *f = fast_kernels();
    return f && f->shape(k, stride);
}

static cn_conv_desc band_desc(const cn_conv_desc *de, int rows) {
    cn_conv_desc s = *de;
    s.n = 1, s.h = s.oh = rows;
    return s;
}

static xdw_plan xdw_plan_of(const cn_conv_desc *de, const cn_conv_desc *dd, int nt) {
    xdw_plan p;
    const size_t row = (size_t)dd->w * dd->c * sizeof(float);
    const long fit = (long)(BAND_BYTES / row);
    int r = fit <= dd->kh ? 1 : (int)((fit - dd->kh) / dd->sh + 1);
    if (r > dd->oh) r = dd->oh;
    p.bands = (dd->oh + r - 1) / r;
    /* fewer images than threads: more bands, so that every thread has rows */
    if ((long)dd->n * p.bands < nt) p.bands = (nt + dd->n - 1) / dd->n;
    if (p.bands > dd->oh) p.bands = dd->oh;
    const int rmax = (dd->oh + p.bands - 1) / p.bands;
    p.in_rows = (rmax - 1) * dd->sh + dd->kh;
    if (p.in_rows > dd->h) p.in_rows = dd->h;
    p.band_floats = round16((size_t)p.in_rows * dd->w * dd->c);
    const cn_dw_job j = dw_job_of(dd);
    p.ring_floats = round16(dw_ring_floats(&j, (dd->c + 15) / 16));
    const cn_conv_desc s = band_desc(de, p.in_rows);
    p.conv_floats = round16(cn_conv2d_workspace(&s, 1, 0));
    p.per_thread = p.band_floats + p.ring_floats + p.conv_floats;
    return p;
}

/* the workspace: the weights and the bands' pool sums (doubles), then each thread's band, ring
 * and convolution workspace (whole multiples of 16 floats: 64-byte aligned in a 64-byte
 * aligned workspace) */
static size_t xdw_head_floats(const cn_conv_desc *dd, const xdw_plan *p) {
    return round16((size_t)dd->kh * dd->kw * dd->c) + round16(2 * (size_t)dd->n * p->bands * dd->c);
}

size_t cn_expand_dw_workspace(const cn_conv_desc *de, const cn_conv_desc *dd, int nthreads) {
    const int nt = nthreads < 1 ? 1 : nthreads;
    const xdw_plan p = xdw_plan_of(de, dd, nt);
    return xdw_head_floats(dd, &p) + (size_t)nt * p.per_thread;
}

void cn_expand_dw_forward(float *out, const float *in, const float *we, const cn_epilogue *epe,
                          const cn_conv_desc *de, const float *wd, const cn_epilogue *epd,
                          const cn_conv_desc *dd, float *ws, int nthreads) {
    /* the filters repacked into the head of the workspace, which is theirs */
    repack(ws, wd, dd->c, dd->kh * dd->kw, 0);
    cn_expand_dw_forward_packed(out, in, we, epe, de, ws, epd, dd, ws, nthreads);
}

void cn_expand_dw_forward_packed(float *out, const float *in, const float *we,
                                 const cn_epilogue *epe, const cn_conv_desc *de, const float *wdr,
                                 const cn_epilogue *epd, const cn_conv_desc *dd, float *ws,
                                 int nthreads) {
    const int nt0 = nthreads < 1 ? 1 : nthreads;
    const xdw_plan p = xdw_plan_of(de, dd, nt0);
    const int C = dd->c, H = dd->h, W = dd->w, OH = dd->oh, OW = dd->ow, S = dd->sh;
    const int K = dd->kh, PH = dd->ph, CIN = de->c, blocks = (C + 15) / 16;
    const size_t rowf = (size_t)W * C;
    const float *wr = wdr;
    double *bsum = epd->pool ? (double *)(ws + round16((size_t)K * K * C)) : NULL;
    float *const thr = ws + xdw_head_floats(dd, &p);
    const long tasks = (long)dd->n * p.bands;
    const int nt = tasks < nt0 ? (int)tasks : nt0;
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        const int t = omp_get_thread_num(), T = omp_get_num_threads();
        float *band = thr + (size_t)t * p.per_thread;
        float *ring = band + p.band_floats, *cws = ring + p.ring_floats;
        int have = -1, h0 = 0, h1 = 0; /* the image and input rows [h0, h1) in the band buffer */
        for (long k = tasks * t / T; k < tasks * (t + 1) / T; k++) {
            const int img = (int)(k / p.bands), b = (int)(k % p.bands);
            const int oy0 = (int)((long)OH * b / p.bands), oy1 = (int)((long)OH * (b + 1) / p.bands);
            const int r0 = oy0 * S - PH < 0 ? 0 : oy0 * S - PH;
            const int r1 = (oy1 - 1) * S - PH + K > H ? H : (oy1 - 1) * S - PH + K;
            int from = r0;
            if (have == img && h0 <= r0 && r0 < h1) { /* the rows shared with the band before */
                memmove(band, band + (size_t)(r0 - h0) * rowf, sizeof(float) * (size_t)(h1 - r0) * rowf);
                from = h1;
            }
            if (from < r1) {
                const cn_conv_desc s = band_desc(de, r1 - from);
                cn_conv2d_forward_fused(band + (size_t)(from - r0) * rowf,
                                        in + ((size_t)img * H + from) * W * CIN, we, epe, &s, cws, 1);
            }
            have = img, h0 = r0, h1 = r1;
            cn_dw_job j = dw_job_of(dd);
            j.in = band, j.wr = wr, j.bias = NULL;
            j.out = out + ((size_t)img * OH + oy0) * OW * C;
            j.scale = epd->scale, j.shift = epd->shift, j.res = NULL, j.act = (int)epd->act;
            j.pool = NULL, j.pool_sums = bsum ? bsum + ((size_t)img * p.bands + b) * C : NULL;
            j.n = 1, j.h = r1 - r0, j.oh = oy1 - oy0, j.ph = r0 + PH - oy0 * S;
            fast_kernels()->task(&j, 0, 0, blocks, 0, oy1 - oy0, ring);
        }
    }
    if (bsum) pool_of_band_sums(epd->pool, bsum, dd->n, p.bands, C, (double)OH * OW);
}
