/* conv2d on NHWC activations and OHWI weights, by im2col + GEMM in row chunks; depthwise
 * convolution goes to its own kernels (depthwise.c).
 * https://pytorch.org/docs/1.13/generated/torch.nn.Conv2d.html
 *
 * Chunking: the M = N*OH*OW output rows are processed in chunks whose im2col buffer fits in L2.
 * When a whole image fits in a chunk, chunks are whole images and run on parallel threads: images
 * never share input pixels, so the col2im scatter of the data gradient needs no locks, and each
 * thread accumulates its own weight gradient, reduced in thread order (the same bits for the same
 * thread count). Otherwise chunks are row ranges of one image, run one after another with the GEMM
 * itself threaded.
 *
 * Direct kernels (kernels/conv_direct.h) take the small-channel shapes; in training, the 3x3
 * stride-1 layers of 64 channels and more run their forward, data gradient and weight gradient
 * by Winograd F(4x4, 3x3) (kernels/winograd.h, see wino_train below). */
#include <omp.h>
#include <string.h>

#include "core/simd.h"
#include "kernels/act.h"
#include "kernels/conv_direct.h"
#include "kernels/gemm.h"
#include "kernels/winograd.h"
#include "ops/activation.h"
#include "ops/ops.h"

enum { CHUNK_FLOATS = 1 << 19, IMAGE_PARALLEL_MAX_FLOATS = 1 << 21, DIRECT_SPLIT_MIN_MACS = 1 << 23,
       PW_ONE_GEMM_MIN_WEIGHTS = 1 << 17 };

int cn_conv_desc_init(cn_conv_desc *d) {
    if (d->n <= 0 || d->h <= 0 || d->w <= 0 || d->c <= 0 || d->oc <= 0 || d->kh <= 0 ||
        d->kw <= 0 || d->sh <= 0 || d->sw <= 0 || d->ph < 0 || d->pw < 0 || d->groups <= 0)
        return 0;
    if (d->c % d->groups || d->oc % d->groups) return 0;
    if (d->h + 2 * d->ph < d->kh || d->w + 2 * d->pw < d->kw) return 0;
    d->oh = (d->h + 2 * d->ph - d->kh) / d->sh + 1;
    d->ow = (d->w + 2 * d->pw - d->kw) / d->sw + 1;
    return d->oh > 0 && d->ow > 0;
}

static int is_depthwise(const cn_conv_desc *d) { return d->groups == d->c && d->oc == d->c; }

static int is_pointwise(const cn_conv_desc *d) {
    return d->kh == 1 && d->kw == 1 && d->sh == 1 && d->sw == 1 && d->ph == 0 && d->pw == 0 &&
           d->groups == 1;
}

typedef struct plan {
    size_t m;        /* output rows */
    int kg;          /* columns of the im2col matrix of one group */
    int ocg;         /* output channels of one group */
    int rows;        /* rows per chunk */
    size_t nchunks;
    int parallel;    /* chunks run on parallel threads (chunks are whole images) */
} plan;

/* Rows of im2col a chunk when a convolution's weights outweigh half of L2 (more than
 * PW_ONE_GEMM_MIN_WEIGHTS floats: ResNet's wide stride-2 3x3 and 1x1 layers at batches): one GEMM
 * threaded inside over chunks of up to ONE_GEMM_COL_FLOATS of im2col (the whole batch of a 7x7
 * output) reads each weight panel once for all those rows, where chunks of images on parallel
 * threads read all the weights per chunk and per thread (ResNet-50's 14x14x512 -> 7x7x512
 * stride-2 layer at batch 16, 2 threads: 9.7-10.1 -> 8.5-8.8 ms with the weights in cache). 0:
 * the image chunks (a batch of one image, inference with BN sums to take, grouped layers). */
enum { ONE_GEMM_COL_FLOATS = 1 << 22 };

static int one_gemm_rows(const cn_conv_desc *d, size_t m, int kg, int stats) {
    if (stats || d->groups != 1 || d->n < 2 || is_pointwise(d) ||
        (size_t)kg * d->oc <= (size_t)PW_ONE_GEMM_MIN_WEIGHTS)
        return 0;
    size_t rows = (size_t)ONE_GEMM_COL_FLOATS / (size_t)kg;
    if (rows < 16) rows = 16;
    return (int)(rows < m ? rows : m);
}

static plan make_plan(const cn_conv_desc *d, int nthreads) {
    plan p;
    size_t img = (size_t)d->oh * d->ow;
    p.m = (size_t)d->n * img;
    p.kg = d->kh * d->kw * (d->c / d->groups);
    p.ocg = d->oc / d->groups;
    size_t target = CHUNK_FLOATS / (size_t)p.kg;
    if (target < 16) target = 16;
    p.parallel = nthreads > 1 && d->n >= 2 && img * (size_t)p.kg <= IMAGE_PARALLEL_MAX_FLOATS;
    if (p.parallel) {
        size_t imgs = target / img;
        if (imgs < 1) imgs = 1;
        /* keep at least two chunks per thread so that both cores stay busy */
        size_t cap = (size_t)d->n / (2 * (size_t)nthreads);
        if (cap < 1) cap = 1;
        if (imgs > cap) imgs = cap;
        p.rows = (int)(imgs * img);
    } else {
        p.rows = (int)(target < p.m ? target : p.m);
    }
    p.nchunks = (p.m + p.rows - 1) / p.rows;
    return p;
}

/* For stride 1, the data gradient of a convolution is itself a convolution: of dY with the
 * filters flipped in space and transposed in channels, padded by k - 1 - p. Running it as one
 * (im2col of dY + GEMM straight into dX) replaces the scatter-add of col2im. */
static int data_grad_as_conv(const cn_conv_desc *d, cn_conv_desc *t) {
    if (d->sh != 1 || d->sw != 1 || d->groups != 1 || is_pointwise(d) || d->ph > d->kh - 1 ||
        d->pw > d->kw - 1)
        return 0;
    cn_conv_desc u = {d->n, d->oh, d->ow, d->oc, d->c, d->kh, d->kw, 1, 1,
                      d->kh - 1 - d->ph, d->kw - 1 - d->pw, 1, 0, 0};
    if (!cn_conv_desc_init(&u) || u.oh != d->h || u.ow != d->w) return 0;
    *t = u;
    return 1;
}

/* Implicit GEMM for stride-1 convolutions (no im2col): in a zero-padded copy of the image, the
 * KW*C values that kernel row ky reads for output pixel (oy, ox) start at pixel (oy + ky, ox), and
 * consecutive pixels are C floats apart. So kernel row ky is one GEMM whose A is the padded image
 * itself with a row stride of C (rows overlap), over every pixel of the padded width (the last
 * KW - 1 columns of each row are computed and dropped).
 * Stride 2 (forward only): output pixel (oy, ox) of kernel row ky starts at padded pixel
 * (2 oy + ky, 2 ox), consecutive pixels 2C apart. The padded rows are split by parity into two
 * images, E (rows 0, 2, ...) and O (rows 1, 3, ...), each Wp wide (Wp made even): row ky of the
 * kernel reads row oy + ky / 2 of E (ky even) or of O (ky odd), so that in either the output
 * pixels are Wp / 2 apart by rows and 2C by columns, i.e. one GEMM with a row stride of 2C over
 * Wp / 2 pixels an output row (about one computed and dropped). That replaces im2col's copy of
 * KH*KW*C floats an output pixel by a copy of the image. */
static int implicit_ok(const cn_conv_desc *d) {
    return d->sh == 1 && d->sw == 1 && d->groups == 1 && !is_pointwise(d);
}

typedef struct implicit_dims {
    int s;            /* stride: 1, or 2 with the row phases */
    int hp, wp;       /* padded image (wp even with stride 2) */
    int wv;           /* output pixels computed per output row: wp / s */
    int ne;           /* stride 2: rows of each phase image */
    size_t rows;      /* output rows computed per image, wv per output row */
    size_t per;       /* workspace floats per image: padded copy + output rows */
} implicit_dims;

static implicit_dims implicit_plan(const cn_conv_desc *d) {
    implicit_dims q;
    q.s = d->sh;
    q.hp = d->h + 2 * d->ph;
    q.wp = d->w + 2 * d->pw;
    q.ne = 0;
    if (q.s == 2) {
        q.wp += q.wp & 1;
        /* kernel row ky reads rows oy + ky / 2 of its phase, oy < OH, and the KW*C values of
         * the last pixel end within the row (2 (OW - 1) + KW <= Wp) */
        q.ne = d->oh + (d->kh - 1) / 2;
    }
    q.wv = q.wp / q.s;
    q.rows = (size_t)(d->oh - 1) * q.wv + d->ow;
    q.per = (q.s == 2 ? (size_t)2 * q.ne * q.wp * d->c : (size_t)q.hp * q.wp * d->c) +
            q.rows * d->oc;
    return q;
}

/* Stride 2 from 65 computed pixels an image on: with fewer (7x7 outputs: 55) each kernel row's
 * GEMM takes the swapped path and reads all its weights per image, which lost to im2col's one
 * GEMM over 4 images (resnet18's 14x14x256 -> 7x7x512 at batch 16: 5.5-5.7 -> 6.7 ms; batch 1
 * 0.36 -> 0.45 ms), while the larger maps gained (56x56x128 -> 28x28: batch 1 1.02 -> 0.80 ms,
 * batch 16 13.1-13.5 -> 11.6-11.8 ms; 56x56x64 -> 28x28x128 at batch 1 0.46-0.49 -> 0.43). */
enum { IMPLICIT_S2_MIN_ROWS = 65 };

static int implicit_fwd_ok(const cn_conv_desc *d) {
    if (implicit_ok(d)) return 1;
    return d->sh == 2 && d->sw == 2 && d->groups == 1 && d->kh > 1 &&
           implicit_plan(d).rows >= IMPLICIT_S2_MIN_ROWS;
}

static int implicit_parallel(const cn_conv_desc *d, int nthreads) {
    return nthreads > 1 && d->n >= 2 * nthreads;
}

/* one row (padded width wp) of the zero-padded copy of the image src: its row sy, or zeros when
 * sy lies in the padding */
static CN_CLONES void pad_row(float *restrict row, const float *restrict src,
                              const cn_conv_desc *d, int wp, int sy) {
    if (sy < 0 || sy >= d->h) {
        memset(row, 0, sizeof(float) * wp * d->c);
        return;
    }
    memset(row, 0, sizeof(float) * d->pw * d->c);
    memcpy(row + (size_t)d->pw * d->c, src + (size_t)sy * d->w * d->c,
           sizeof(float) * d->w * d->c);
    memset(row + (size_t)(d->pw + d->w) * d->c, 0, sizeof(float) * (wp - d->pw - d->w) * d->c);
}

/* rows [y0, y1) of the zero-padded copy (padded width wp) of the image src */
static void pad_rows(float *dst, const float *src, const cn_conv_desc *d, int wp, int y0,
                     int y1) {
    for (int y = y0; y < y1; y++) pad_row(dst + (size_t)y * wp * d->c, src, d, wp, y - d->ph);
}

static void pad_image(float *dst, const float *src, const cn_conv_desc *d, int hp, int wp) {
    pad_rows(dst, src, d, wp, 0, hp);
}

/* rows 2i + phase (i < ne) of the zero-padded image (padded width wp) for the stride-2 implicit
 * GEMM: E (phase 0) then O (phase 1), each ne x wp pixels; rows past the padded image are zero */
static void pad_phases(float *dst, const float *src, const cn_conv_desc *d, int ne, int wp) {
    for (int ph = 0; ph < 2; ph++)
        for (int i = 0; i < ne; i++)
            pad_row(dst + ((size_t)ph * ne + i) * wp * d->c, src, d, wp, 2 * i + ph - d->ph);
}

/* ---- fused epilogue ---- */

static CN_CLONES void epilogue_affine(float *restrict y, const float *restrict x,
                                      const float *restrict res, size_t rows, int oc,
                                      const float *restrict scale, const float *restrict shift) {
    for (size_t i = 0; i < rows; i++) {
        const float *xr = x + i * oc;
        float *yr = y + i * oc;
        if (res) {
            const float *rr = res + i * oc;
            for (int c = 0; c < oc; c++) yr[c] = xr[c] * scale[c] + shift[c] + rr[c];
        } else {
            for (int c = 0; c < oc; c++) yr[c] = xr[c] * scale[c] + shift[c];
        }
    }
}

static CN_CLONES void epilogue_act(float *restrict y, size_t n, cn_act act) {
    if (act == CN_ACT_RELU)
        for (size_t i = 0; i < n; i++) y[i] = y[i] < 0 ? 0.0f : y[i];
    else if (act == CN_ACT_SILU)
        cn_silu_n(y, y, n);
    else if (act == CN_ACT_SIGMOID)
        cn_sigmoid_n(y, y, n);
}

/* y and x may be the same block (the affine loop reads each element before writing it) */
static void epilogue(float *y, const float *x, const float *res, size_t rows, int oc,
                     const cn_epilogue *ep) {
    epilogue_affine(y, x, res, rows, oc, ep->scale, ep->shift);
    epilogue_act(y, rows * (size_t)oc, ep->act);
}

/* The epilogue over a block of a GEMM's output (cn_gemm_post): rows [i0, i1) of C, which starts
 * at output row m0 of the layer, columns [j0, j1); one pass per row while it is in L1. */
typedef struct post_ctx {
    const cn_epilogue *ep;
    const float *res; /* the residual's rows from m0 on, or NULL */
    int oc;
} post_ctx;

static CN_CLONES void epilogue_post(void *ctx, float *C, size_t ldc, size_t i0, size_t i1,
                                    size_t j0, size_t j1) {
    const post_ctx *q = ctx;
    const size_t n = j1 - j0;
    const float *scale = q->ep->scale + j0, *shift = q->ep->shift + j0;
    /* a block is often one micro-panel wide (16 or 24 columns on AVX2): the ReLU is applied in
     * the same loop (the same arithmetic as epilogue_act's), not by a call per row */
    const cn_act act = q->ep->act;
    for (size_t i = i0; i < i1; i++) {
        float *restrict y = C + i * ldc + j0;
        if (q->res) {
            const float *restrict r = q->res + i * (size_t)q->oc + j0;
            if (act == CN_ACT_RELU)
                for (size_t c = 0; c < n; c++) {
                    const float v = y[c] * scale[c] + shift[c] + r[c];
                    y[c] = v < 0 ? 0.0f : v;
                }
            else
                for (size_t c = 0; c < n; c++) y[c] = y[c] * scale[c] + shift[c] + r[c];
        } else if (act == CN_ACT_RELU) {
            for (size_t c = 0; c < n; c++) {
                const float v = y[c] * scale[c] + shift[c];
                y[c] = v < 0 ? 0.0f : v;
            }
        } else {
            for (size_t c = 0; c < n; c++) y[c] = y[c] * scale[c] + shift[c];
        }
        if (act != CN_ACT_RELU) epilogue_act(y, n, act);
    }
}

static CN_CLONES void take_rows(float *restrict out, const float *restrict t,
                                const cn_conv_desc *d, int wp, float beta,
                                const cn_epilogue *ep, const float *res) {
    if (ep) {
        for (int oy = 0; oy < d->oh; oy++) {
            size_t o = (size_t)oy * d->ow * d->oc;
            epilogue(out + o, t + (size_t)oy * wp * d->oc, res ? res + o : NULL, (size_t)d->ow,
                     d->oc, ep);
        }
        return;
    }
    for (int oy = 0; oy < d->oh; oy++)
        for (int ox = 0; ox < d->ow; ox++) {
            float *o = out + ((size_t)oy * d->ow + ox) * d->oc;
            const float *v = t + ((size_t)oy * wp + ox) * d->oc;
            if (beta != 0)
                for (int c = 0; c < d->oc; c++) o[c] += v[c];
            else
                for (int c = 0; c < d->oc; c++) o[c] = v[c];
        }
}

/* The epilogue as the GEMM's register epilogue, or -1 when it has none for ep's activation */
static int gemm_act(const cn_epilogue *ep) {
    return !ep || ep->act == CN_ACT_NONE ? CN_GEMM_ACT_NONE
           : ep->act == CN_ACT_RELU    ? CN_GEMM_ACT_RELU
           : ep->act == CN_ACT_SILU    ? CN_GEMM_ACT_SILU
                                       : -1;
}

/* Row px of the im2col matrix A (lda floats apart), the KW*C values kernel row ky reads for
 * output pixel px of the batch (zeros in the padding), any stride: columns ky*KW*C on. */
static void gather_pixel_row(float *restrict a, size_t lda, const float *restrict in,
                             const cn_conv_desc *d, size_t px, int ky) {
    const size_t img = (size_t)d->oh * d->ow, c = (size_t)d->c, seg = (size_t)d->kw * c;
    const size_t n = px / img, oy = px % img / d->ow, ox = px % d->ow;
    const int iy = (int)oy * d->sh - d->ph + ky;
    float *dst = a + px * lda + (size_t)ky * seg;
    if (iy < 0 || iy >= d->h) {
        memset(dst, 0, sizeof(float) * seg);
        return;
    }
    const float *row = in + ((size_t)n * d->h + (size_t)iy) * d->w * c;
    for (int kx = 0; kx < d->kw; kx++) {
        const int ix = (int)ox * d->sw - d->pw + kx;
        if (ix < 0 || ix >= d->w) memset(dst + kx * c, 0, sizeof(float) * c);
        else memcpy(dst + kx * c, row + (size_t)ix * c, sizeof(float) * c);
    }
}

/* Small outputs (ResNet's 7x7 layers at batch 1): the im2col matrix A of the batch's output
 * pixels (gathered by both threads), then one GEMM per kernel row over it (K = KW*C, whose
 * packed pixels stay in L2 where K = KH*KW*C would not: 7x7x512 -> 512 as one GEMM was 0.80
 * -> 1.12 ms), the KH GEMMs adding up in out and the last one applying the epilogue in its
 * write-back. Each thread runs the GEMMs of its own output channels, so that one parallel
 * region with one barrier (after the gather) does the layer. On the padded width (the
 * implicit GEMM) a 7x7 map computes 61 pixels for 49, which the swapped GEMM's pixel lanes pad
 * to 64; 49 rows fill three vectors with one left for the GEMV kernel. a: N*OH*OW * KH*KW*C
 * floats. Returns 0 (nothing done) when out cannot hold the partial sums: accumulating
 * (beta), the residual read from out, or an epilogue the GEMM does not apply. */
static int conv_compact(float *out, const float *in, const float *w, const cn_conv_desc *d,
                        float *a, int nthreads, float beta, const cn_epilogue *ep) {
    const int act = gemm_act(ep), m = d->n * d->oh * d->ow;
    const float *res = ep ? ep->res : NULL;
    if (beta != 0.0f || act < 0 || (res && res == out)) return 0;
    const int k = d->kw * d->c, ldb = d->kh * d->kw * d->c;
    const int T = nthreads < 1 ? 1 : nthreads > d->oc / 16 ? (d->oc + 15) / 16 : nthreads;
#pragma omp parallel num_threads(T)
    {
        const int t = omp_get_thread_num(), nt = omp_get_num_threads();
#pragma omp for schedule(static)
        for (int r = 0; r < m * d->kh; r++)
            gather_pixel_row(a, (size_t)ldb, in, d, (size_t)(r / d->kh), r % d->kh);
        /* this thread's output channels: a share of whole vectors */
        const int vecs = (d->oc + 15) / 16;
        const int n0 = vecs * t / nt * 16, n1 = t == nt - 1 ? d->oc : vecs * (t + 1) / nt * 16;
        if (n0 < n1) {
            const cn_epilogue e = {ep ? ep->scale + n0 : NULL, ep ? ep->shift + n0 : NULL,
                                   res ? res + n0 : NULL, ep ? ep->act : CN_ACT_NONE, NULL};
            const cn_gemm_affine aff = {e.scale, e.shift, e.res, (size_t)d->oc, act};
            const post_ctx pc = {&e, e.res, d->oc};
            const cn_gemm_post post = {epilogue_post, (void *)&pc, &aff};
            for (int ky = 0; ky < d->kh; ky++)
                cn_sgemm_post(0, 1, m, n1 - n0, k, 1.0f, a + (size_t)ky * k, ldb,
                              w + (size_t)n0 * ldb + (size_t)ky * k, ldb, ky ? 1.0f : 0.0f,
                              out + n0, d->oc, ep && ky == d->kh - 1 ? &post : NULL);
        }
    }
    return 1;
}

/* the batch's output pixels are few enough for conv_compact's GEMMs: under 65 (more do not
 * fit the swapped GEMM's widest tile, and a larger batch reads the weights once in the
 * im2col GEMM) and not a multiple of 16 (no lanes to save then). Strided layers gain only when
 * im2col's GEMM (K = KH*KW*C) is too deep for the swapped path (its packed pixels, K x 64
 * floats, over 1 MB, gemm.c's SWAP_MAX_PACK): one GEMM swapped beats three (14x14x256 ->
 * 7x7x512: 0.43-0.49 -> 0.52 ms), while 14x14x512 -> 7x7x512 went 1.08-1.13 -> 0.88-0.92 ms
 * (and stride 1, against the implicit GEMM, 7x7x512 -> 512: 0.94-0.99 -> 0.85-0.91 ms). */
enum { COMPACT_MAX_PIXELS = 64, COMPACT_MIN_STRIDED_K = 4096 };

static int compact_ok(const cn_conv_desc *d) {
    const size_t m = (size_t)d->n * d->oh * d->ow;
    const int strided = d->sh != 1 || d->sw != 1;
    return d->groups == 1 && !is_pointwise(d) && m <= COMPACT_MAX_PIXELS && m % 16 != 0 &&
           (!strided || d->kh * d->kw * d->c > COMPACT_MIN_STRIDED_K);
}

static void implicit_image(float *out, const float *in, const float *w, const cn_conv_desc *d,
                           const implicit_dims *q, float *ws, float beta, const cn_epilogue *ep,
                           const float *res) {
    const int k = d->kw * d->c, ldb = d->kh * d->kw * d->c;
    const size_t rowlen = (size_t)q->wp * d->c;
    if (q->s == 2) {
        float *t = ws + 2 * (size_t)q->ne * rowlen;
        pad_phases(ws, in, d, q->ne, q->wp);
        for (int ky = 0; ky < d->kh; ky++) {
            const float *a = ws + ((size_t)(ky & 1) * q->ne + (size_t)(ky >> 1)) * rowlen;
            cn_sgemm(0, 1, (int)q->rows, d->oc, k, 1.0f, a, 2 * d->c, w + (size_t)ky * k, ldb,
                     ky ? 1.0f : 0.0f, t, d->oc);
        }
        take_rows(out, t, d, q->wv, beta, ep, res);
        return;
    }
    float *pad = ws, *t = ws + (size_t)q->hp * rowlen;
    pad_image(pad, in, d, q->hp, q->wp);
    for (int ky = 0; ky < d->kh; ky++)
        cn_sgemm(0, 1, (int)q->rows, d->oc, k, 1.0f, pad + (size_t)ky * rowlen, d->c,
                 w + (size_t)ky * k, ldb, ky ? 1.0f : 0.0f, t, d->oc);
    take_rows(out, t, d, q->wv, beta, ep, res);
}

/* Output channels [j0, j1) of the valid pixels of t (implicit_image's rows, wp per output
 * row) into out: the epilogue (epilogue_post's arithmetic), or plain values (beta 0) or sums. */
static void take_cols(float *out, const float *t, const cn_conv_desc *d, int wp, float beta,
                      const cn_epilogue *ep, const float *res, int j0, int j1) {
    const size_t oc = (size_t)d->oc, n = (size_t)(j1 - j0);
    for (int oy = 0; oy < d->oh; oy++) {
        float *o = out + (size_t)oy * d->ow * oc;
        const float *v = t + (size_t)oy * wp * oc;
        for (int ox = 0; ox < d->ow; ox++) {
            float *restrict y = o + (size_t)ox * oc + j0;
            const float *restrict x = v + (size_t)ox * oc + j0;
            if (ep || beta == 0) memcpy(y, x, sizeof(float) * n);
            else
                for (size_t c = 0; c < n; c++) y[c] += x[c];
        }
        if (ep) {
            const post_ctx pc = {ep, res ? res + (size_t)oy * d->ow * oc : NULL, d->oc};
            epilogue_post((void *)&pc, o, oc, 0, (size_t)d->ow, (size_t)j0, (size_t)j1);
        }
    }
}

/* implicit_image_team from 64 output channels a thread on. Batch 1, 2 threads, warm, mean of
 * 1000 runs (3 alternations): 28x28x128 -> 14x14x256 stride 2 0.43 -> 0.40 ms, 56x56x64 ->
 * 28x28x128 stride 2 0.50 -> 0.48; 56x56x64 -> 64 stride 1 (32 a thread) 0.66 -> 0.67 */
enum { IMPLICIT_TEAM_MIN_OC = 64 };

/* One image on a team of T threads (fewer images than conv_implicit's parallel plan needs): the
 * padded copy made by all of them, then each thread's KH GEMMs over its own output channels
 * (a share of whole vectors, the weights split rather than read by both) and their epilogue,
 * in one parallel region with one barrier, where the GEMMs threaded inside took a region
 * each and a serial copy and epilogue between them. */
static void implicit_image_team(float *out, const float *in, const float *w,
                                const cn_conv_desc *d, const implicit_dims *q, float *ws,
                                float beta, const cn_epilogue *ep, const float *res, int T) {
    const int k = d->kw * d->c, ldb = d->kh * d->kw * d->c, s2 = q->s == 2;
    const size_t rowlen = (size_t)q->wp * d->c;
    const int prows = s2 ? 2 * q->ne : q->hp;
    float *t = ws + (size_t)prows * rowlen;
#pragma omp parallel num_threads(T)
    {
        const int th = omp_get_thread_num(), nt = omp_get_num_threads();
#pragma omp for schedule(static)
        for (int r = 0; r < prows; r++) {
            /* stride 2: phase r / ne, its row r % ne (pad_phases' order) */
            const int sy = s2 ? 2 * (r % q->ne) + r / q->ne : r;
            pad_row(ws + (size_t)r * rowlen, in, d, q->wp, sy - d->ph);
        }
        const int vecs = (d->oc + 15) / 16;
        const int j0 = vecs * th / nt * 16, j1 = th == nt - 1 ? d->oc : vecs * (th + 1) / nt * 16;
        if (j0 < j1) {
            for (int ky = 0; ky < d->kh; ky++) {
                const float *a =
                    s2 ? ws + ((size_t)(ky & 1) * q->ne + (size_t)(ky >> 1)) * rowlen
                       : ws + (size_t)ky * rowlen;
                cn_sgemm(0, 1, (int)q->rows, j1 - j0, k, 1.0f, a, (s2 ? 2 : 1) * d->c,
                         w + (size_t)j0 * ldb + (size_t)ky * k, ldb, ky ? 1.0f : 0.0f, t + j0,
                         d->oc);
            }
            take_cols(out, t, d, q->wv, beta, ep, res, j0, j1);
        }
    }
}

static void conv_implicit(float *out, const float *in, const float *w, const cn_conv_desc *d,
                          float *ws, int nthreads, float beta, const cn_epilogue *ep) {
    const float *res = ep ? ep->res : NULL;
    implicit_dims q = implicit_plan(d);
    size_t in_img = (size_t)d->h * d->w * d->c, out_img = (size_t)d->oh * d->ow * d->oc;
    if (implicit_parallel(d, nthreads)) {
#pragma omp parallel num_threads(nthreads)
        {
            float *mine = ws + (size_t)omp_get_thread_num() * q.per;
#pragma omp for schedule(static)
            for (int n = 0; n < d->n; n++)
                implicit_image(out + n * out_img, in + n * in_img, w, d, &q, mine, beta, ep,
                               res ? res + n * out_img : NULL);
        }
    } else if (nthreads > 1 && d->oc >= IMPLICIT_TEAM_MIN_OC * nthreads) {
        for (int n = 0; n < d->n; n++)
            implicit_image_team(out + n * out_img, in + n * in_img, w, d, &q, ws, beta, ep,
                                res ? res + n * out_img : NULL, nthreads);
    } else {
        for (int n = 0; n < d->n; n++)
            implicit_image(out + n * out_img, in + n * in_img, w, d, &q, ws, beta, ep,
                           res ? res + n * out_img : NULL);
    }
}

/* dW[:, ky] += dYp^T * A_ky per image, with dY laid out on the padded width (zero in the dropped
 * columns) so that it lines up with the rows of A_ky. */
static void implicit_wgrad_image(float *dw, const float *dout, const float *in,
                                 const cn_conv_desc *d, const implicit_dims *q, float *ws) {
    float *pad = ws, *dy = ws + (size_t)q->hp * q->wp * d->c;
    pad_image(pad, in, d, q->hp, q->wp);
    for (size_t r = 0; r < q->rows; r++) {
        int oy = (int)(r / q->wp), ox = (int)(r % q->wp);
        float *dst = dy + r * d->oc;
        if (ox < d->ow) memcpy(dst, dout + ((size_t)oy * d->ow + ox) * d->oc, sizeof(float) * d->oc);
        else memset(dst, 0, sizeof(float) * d->oc);
    }
    int k = d->kw * d->c, ldw = d->kh * d->kw * d->c;
    for (int ky = 0; ky < d->kh; ky++)
        cn_sgemm(1, 0, d->oc, k, (int)q->rows, 1.0f, dy, d->oc, pad + (size_t)ky * q->wp * d->c,
                 d->c, 1.0f, dw + (size_t)ky * k, ldw);
}

static void implicit_wgrad(float *dw, const float *dout, const float *in, const cn_conv_desc *d,
                           float *ws, int nthreads) {
    implicit_dims q = implicit_plan(d);
    size_t in_img = (size_t)d->h * d->w * d->c, out_img = (size_t)d->oh * d->ow * d->oc;
    size_t wsize = (size_t)d->oc * d->kh * d->kw * d->c;
    if (implicit_parallel(d, nthreads)) {
        float *priv = ws + q.per * nthreads;
        memset(priv, 0, sizeof(float) * wsize * (nthreads - 1));
#pragma omp parallel num_threads(nthreads)
        {
            int t = omp_get_thread_num();
            float *mine = t == 0 ? dw : priv + (size_t)(t - 1) * wsize;
#pragma omp for schedule(static)
            for (int n = 0; n < d->n; n++)
                implicit_wgrad_image(mine, dout + n * out_img, in + n * in_img, d, &q,
                                     ws + (size_t)t * q.per);
        }
        for (int t = 1; t < nthreads; t++) {
            const float *src = priv + (size_t)(t - 1) * wsize;
            for (size_t i = 0; i < wsize; i++) dw[i] += src[i];
        }
    } else {
        for (int n = 0; n < d->n; n++)
            implicit_wgrad_image(dw, dout + n * out_img, in + n * in_img, d, &q, ws);
    }
}

/* ---- direct kernels (kernels/conv_direct.h) ----
 * One image per step on parallel threads, each padding its image into its own buffer (with
 * fewer images than threads, the threads share the padded images and split their rows); the
 * weights are repacked once per call with the output channel innermost, padded with zeros to
 * whole vectors. */
static cn_dconv_shape direct_shape(const cn_conv_desc *d) {
    cn_dconv_shape s = {d->oh, d->ow, d->oc, d->c, d->kh, d->kw, d->sh, d->sw, d->w + 2 * d->pw};
    return s;
}

static int direct_forward_shape_ok(const cn_conv_desc *d) {
    cn_dconv_shape s = direct_shape(d);
    return d->groups == 1 && !is_pointwise(d) && cn_dconv_forward_ok(&s);
}

static int direct_wgrad_shape_ok(const cn_conv_desc *d) {
    cn_dconv_shape s = direct_shape(d);
    return d->groups == 1 && !is_pointwise(d) && cn_dconv_wgrad_ok(&s);
}

/* The direct weight gradient runs whole images on threads; with fewer images than threads the
 * GEMM path, which splits one image, keeps every core busy. Each image adds into all of dW (the
 * implicit GEMM's too), so on small maps with wide layers (dW beyond L2, under 100 pixels an
 * image: ResNet's 7x7 stage) that traffic outweighs the products, and the im2col GEMM, which
 * sums over every image's pixels at once, wins (resnet18's 7x7x512 layer at batch 16, 2
 * threads: direct 26.2, implicit 18.8, im2col 15.0 ms; the stride-2 one into it 13.1 -> 7.2;
 * 7x7x256 5.5 -> 3.5; 14x14 maps and ResNet-20's 64-channel 7x7 layer, where dW stays in L2,
 * are as fast or faster direct). */
static int small_wide(const cn_conv_desc *d) {
    const double dw_bytes = (double)d->oc * d->kh * d->kw * d->c * sizeof(float);
    return dw_bytes > (double)(1 << 20) && (long)d->oh * d->ow < 100;
}

static int direct_wgrad_ok(const cn_conv_desc *d, int nthreads) {
    if (small_wide(d)) return 0;
    return (nthreads <= 1 || d->n >= nthreads) && direct_wgrad_shape_ok(d);
}

static int direct_threads(int nthreads) { return nthreads > 1 ? nthreads : 1; }

/* floats of one thread's padded image, rounded to whole cache lines */
static size_t direct_pad_floats(const cn_conv_desc *d) {
    size_t n = (size_t)(d->h + 2 * d->ph) * (d->w + 2 * d->pw) * d->c + CN_DCONV_SLACK;
    return (n + 15) / 16 * 16;
}

/* floats of the packed weights (KH*KW*C, ldw(OC)) */
static size_t direct_weight_floats(const cn_conv_desc *d) {
    return (size_t)cn_dconv_ldw(d->oc) * d->kh * d->kw * d->c;
}

/* wk (KH*KW*C, ldw(OC)) from w (OC, KH, KW, C), zero past OC */
static void pack_weights(float *restrict wk, const float *restrict w, const cn_conv_desc *d) {
    size_t k = (size_t)d->kh * d->kw * d->c, ldw = (size_t)cn_dconv_ldw(d->oc);
    for (size_t i = 0; i < k; i++) {
        float *row = wk + i * ldw;
        for (int co = 0; co < d->oc; co++) row[co] = w[co * k + i];
        for (size_t co = (size_t)d->oc; co < ldw; co++) row[co] = 0.0f;
    }
}

/* the weights of the data gradient as a convolution (see data_grad_as_conv), directly in the
 * direct kernels' layout: wk[(ky*KW + kx)*OC + co][ci] = w[co][KH-1-ky][KW-1-kx][ci], with
 * ldw(C) columns, zero past C */
static void pack_weights_flipped(float *restrict wk, const float *restrict w,
                                 const cn_conv_desc *d) {
    int C = d->c, OC = d->oc, KH = d->kh, KW = d->kw;
    size_t ldw = (size_t)cn_dconv_ldw(C);
    for (int ky = 0; ky < KH; ky++)
        for (int kx = 0; kx < KW; kx++)
            for (int co = 0; co < OC; co++) {
                float *row = wk + (((size_t)ky * KW + kx) * OC + co) * ldw;
                memcpy(row, w + (((size_t)co * KH + (KH - 1 - ky)) * KW + (KW - 1 - kx)) * C,
                       sizeof(float) * C);
                memset(row + C, 0, sizeof(float) * (ldw - C));
            }
}

/* wt (C, KH, KW, OC) = w (OC, KH, KW, C) transposed in channels, and with flip turned by 180
 * degrees: wt[ci][ky][kx][co] = w[co][KH-1-ky][KW-1-kx][ci], the weights of the data gradient as
 * a convolution. For each tap an OC x C transpose, in 32 x 32 blocks so that both sides move
 * whole cache lines (element by element, the scattered stores of ResNet's 512-channel layers
 * cost as much as the GEMM after them); taps and channel blocks on threads. */
static void transpose_taps(float *restrict wt, const float *restrict w, int C, int OC, int KH,
                           int KW, int flip, int nthreads) {
    enum { TB = 32 };
    const int taps = KH * KW;
    const size_t kw_ = (size_t)taps * C, kt = (size_t)taps * OC; /* row strides of w and wt */
    const int cb = (C + TB - 1) / TB, ob = (OC + TB - 1) / TB;
    const long jobs = (long)taps * cb * ob;
#pragma omp parallel for schedule(static) num_threads(nthreads > 1 ? nthreads : 1) if (jobs > 16)
    for (long j = 0; j < jobs; j++) {
        const int t = (int)(j / ((long)cb * ob)), c0 = (int)(j / ob % cb) * TB, o0 = (int)(j % ob) * TB;
        const float *src = w + (size_t)t * C;                                /* [co][ci] */
        float *dst = wt + (size_t)(flip ? taps - 1 - t : t) * OC;             /* [ci][co] */
        const int c1 = c0 + TB < C ? c0 + TB : C, o1 = o0 + TB < OC ? o0 + TB : OC;
        for (int ci = c0; ci < c1; ci++)
            for (int co = o0; co < o1; co++) dst[(size_t)ci * kt + co] = src[(size_t)co * kw_ + ci];
    }
}

static size_t direct_forward_workspace(const cn_conv_desc *d, int nthreads) {
    return direct_weight_floats(d) + direct_pad_floats(d) * direct_threads(nthreads);
}

/* rows of output pixels per block when threads split the rows of an image: whole register
 * tiles of two rows */
static int direct_row_block(const cn_conv_desc *d, int T) {
    int rows = (d->oh + T - 1) / T;
    return rows + (rows & 1);
}

/* out = conv(in, wk) (or += with accumulate); ws: direct_pad_floats per thread */
static void direct_forward(float *out, const float *in, const float *wk, const cn_conv_desc *d,
                           float *ws, int nthreads, int accumulate, const cn_epilogue *ep,
                           double *stats) {
    cn_dconv_shape s = direct_shape(d);
    int T = direct_threads(nthreads), hp = d->h + 2 * d->ph, wp = d->w + 2 * d->pw;
    size_t per = direct_pad_floats(d), body = (size_t)hp * wp * d->c;
    size_t in_img = (size_t)d->h * d->w * d->c, out_img = (size_t)d->oh * d->ow * d->oc;
    /* a small image is over (~10 us) before a second thread would have woken up on a busy
     * machine: one thread */
    if (d->n < T && out_img * d->kh * d->kw * d->c < DIRECT_SPLIT_MIN_MACS) T = 1;
    /* the epilogue in the kernel's registers where it has it (not after an accumulation) and
     * it pays: a separate pass read the stem's 1.6 MB an image back (AVX-512, EfficientNet's
     * 3 -> 32 stem with SiLU: batch 1 0.107 -> 0.097 ms, batch 16 2.1-2.2 -> 1.70-1.72 ms;
     * ResNet's 7x7 stem at batch 16 11.6-11.8 -> 10.6-10.9 ms) */
    const int act = ep && !accumulate && cn_dconv_epilogue_pays() ? gemm_act(ep) : -1;
    const cn_gemm_affine aff0 = {ep ? ep->scale : NULL, ep ? ep->shift : NULL, NULL,
                                 (size_t)d->oc, act};
    if (d->n >= T) {
#pragma omp parallel num_threads(T)
        {
            float *pad = ws + (size_t)omp_get_thread_num() * per;
            memset(pad + body, 0, sizeof(float) * (per - body));
#pragma omp for schedule(static)
            for (int n = 0; n < d->n; n++) {
                float *o = out + n * out_img;
                pad_image(pad, in + n * in_img, d, hp, wp);
                cn_gemm_affine aff = aff0;
                if (ep && ep->res) aff.res = ep->res + n * out_img;
                cn_dconv_forward_rows(o, pad, wk, &s, 0, d->oh, accumulate, act >= 0 ? &aff : NULL);
                if (ep && act < 0)
                    epilogue(o, o, ep->res ? ep->res + n * out_img : NULL,
                             (size_t)d->oh * d->ow, d->oc, ep);
                /* the batch norm's sums of the image, while it is in cache */
                if (stats)
                    cn_batchnorm_image_sums(stats + (size_t)n * 2 * d->oc, o,
                                            (size_t)d->oh * d->ow, d->oc);
            }
        }
        return;
    }
    /* fewer images than threads: blocks of rows, each thread padding the images of its blocks
     * into its own buffer (a copy is cheaper than a barrier) */
    int rb = direct_row_block(d, T), nb = (d->oh + rb - 1) / rb, items = d->n * nb;
#pragma omp parallel num_threads(T)
    {
        int t = omp_get_thread_num(), j0 = items * t / T, j1 = items * (t + 1) / T, padded = -1;
        int done = 0; /* the padded rows [.., done) of image `padded` are in pad */
        float *pad = ws + (size_t)t * per;
        if (j0 < j1) memset(pad + body, 0, sizeof(float) * (per - body));
        for (int j = j0; j < j1; j++) {
            int n = j / nb, oy0 = j % nb * rb, oy1 = oy0 + rb < d->oh ? oy0 + rb : d->oh;
            size_t o = (size_t)n * out_img + (size_t)oy0 * d->ow * d->oc;
            /* only the padded rows these output rows read (a thread's blocks are consecutive) */
            int y0 = oy0 * d->sh, y1 = (oy1 - 1) * d->sh + d->kh;
            if (y1 > hp) y1 = hp;
            if (n != padded) padded = n, done = y0;
            if (y0 < done) y0 = done;
            if (y0 < y1) pad_rows(pad, in + n * in_img, d, wp, y0, y1), done = y1;
            cn_gemm_affine aff = aff0;
            if (ep && ep->res) aff.res = ep->res + (size_t)n * out_img;
            cn_dconv_forward_rows(out + n * out_img, pad, wk, &s, oy0, oy1, accumulate,
                                  act >= 0 ? &aff : NULL);
            if (ep && act < 0)
                epilogue(out + o, out + o, ep->res ? ep->res + o : NULL,
                         (size_t)(oy1 - oy0) * d->ow, d->oc, ep);
        }
    }
}

/* ---- the backward of a 1x1 convolution ----
 * In blocks of rows that stay in L2 (dY, X and dX of a block: about 256 KB), the weight gradient
 * dW += dY^T X and then the data gradient dX (+)= dY W of the same block while it is in cache;
 * blocks on parallel threads, each summing dW in its own buffer (thread 0 in dw), added in thread
 * order. With a batch norm after the convolution (bn), each block's dY is first made from its
 * coefficients into a buffer of the thread. */
static int pw_rows(const cn_conv_desc *d, int nthreads) {
    const size_t c = (size_t)d->c, oc = (size_t)d->oc, m = (size_t)d->n * d->oh * d->ow;
    size_t r = (size_t)65536 / (2 * c + oc);
    /* each block reads and writes all of dW: enough rows that this stays a fraction of the
     * block's own traffic (the wide late layers: 1152 -> 320 channels) */
    if (r < 2 * oc * c / (c + oc)) r = 2 * oc * c / (c + oc);
    if (r < 64) r = 64;
    /* then as many blocks as threads can share evenly (two per thread at least, so that both
     * cores stay busy), of equal size */
    if (nthreads > 1) {
        const size_t T = (size_t)nthreads;
        size_t nb = (m + r - 1) / r;
        nb = nb < 2 * T ? 2 * T : (nb + T - 1) / T * T;
        r = (m + nb - 1) / nb;
    }
    return r < 1 ? 1 : (int)r;
}

static int pw_threads(const cn_conv_desc *d, int nthreads) {
    const size_t m = (size_t)d->n * d->oh * d->ow, rows = (size_t)pw_rows(d, nthreads);
    return nthreads > 1 && m >= 2 * rows ? nthreads : 1;
}

static size_t pw_workspace(const cn_conv_desc *d, int nthreads) {
    const size_t T = (size_t)pw_threads(d, nthreads);
    return T * (size_t)pw_rows(d, nthreads) * d->oc + (T - 1) * (size_t)d->oc * d->c;
}

static void pointwise_backward(float *din, float *dw, const float *dout, const cn_bn_dx *bn,
                               const float *in, const float *w, const cn_conv_desc *d, float *ws,
                               int nthreads, int set) {
    const int T = pw_threads(d, nthreads), R = pw_rows(d, nthreads), C = d->c, OC = d->oc;
    const size_t m = (size_t)d->n * d->oh * d->ow, nch = (m + R - 1) / R;
    const size_t wsize = (size_t)OC * C;
    float *priv = ws + (size_t)T * R * OC;
    if (dw) memset(priv, 0, sizeof(float) * wsize * (T - 1));
#pragma omp parallel num_threads(T)
    {
        const int t = omp_get_thread_num();
        float *buf = ws + (size_t)t * R * OC;
        float *mydw = dw ? (t == 0 ? dw : priv + (size_t)(t - 1) * wsize) : NULL;
#pragma omp for schedule(static)
        for (size_t ch = 0; ch < nch; ch++) {
            const size_t m0 = ch * R;
            const int rows = (int)(m - m0 < (size_t)R ? m - m0 : (size_t)R);
            const float *dy = dout + m0 * OC;
            if (bn) {
                cn_batchnorm_dx_rows(bn, buf, m0, m0 + rows);
                dy = buf;
            }
            if (mydw) cn_sgemm(1, 0, OC, C, rows, 1.0f, dy, OC, in + m0 * C, C, 1.0f, mydw, C);
            if (din)
                cn_sgemm(0, 0, rows, C, OC, 1.0f, dy, OC, w, C, set ? 0.0f : 1.0f, din + m0 * C,
                         C);
        }
    }
    if (dw)
        for (int t = 1; t < T; t++) {
            const float *src = priv + (size_t)(t - 1) * wsize;
            for (size_t i = 0; i < wsize; i++) dw[i] += src[i];
        }
}

/* ---- the data gradient of a stride-2 convolution by phases (direct kernels) ----
 * With stride 2 the input pixels of one parity take their gradient from a fixed subset of the
 * taps: dX[2i + a] = sum over ky = a + p (mod 2) of dY[i + (a + p - ky) / 2] * w[ky], and the same
 * across, a stride-1 correlation of dY with a sub-kernel. So the data gradient is four small
 * stride-1 convolutions (one forward's products in all, no col2im scatter), each run by the direct
 * kernels on a padded copy of the image's dY and written to its pixels of dX. */
typedef struct phase1 {
    int n;    /* taps of this parity (0: its pixels get no gradient) */
    int top;  /* the tap of the largest index (the first one the phase's kernel applies) */
    int u0;   /* dY row of phase row 0's first tap, relative to the phase row */
    int len;  /* phase rows: input rows of this parity */
} phase1;

static phase1 phase_of(int a, int k, int p, int size) {
    phase1 r = {0, -1, 0, (size - a + 1) / 2};
    for (int t = k - 1; t >= 0; t--)
        if ((a + p - t) % 2 == 0) {
            if (r.top < 0) r.top = t;
            r.n++;
        }
    if (r.n) r.u0 = (a + p - r.top) / 2; /* even: exact */
    return r;
}

typedef struct poly_plan {
    phase1 py[2], px[2];
    int pt, pb, pl, pr; /* padding of dY */
    size_t pad, tmp;    /* floats per thread: padded dY (with slack), one phase's output */
} poly_plan;

static poly_plan poly_make(const cn_conv_desc *d) {
    poly_plan q;
    int lo_y = 0, hi_y = d->oh - 1, lo_x = 0, hi_x = d->ow - 1;
    size_t tmp = 0;
    for (int a = 0; a < 2; a++) {
        q.py[a] = phase_of(a, d->kh, d->ph, d->h);
        q.px[a] = phase_of(a, d->kw, d->pw, d->w);
    }
    for (int a = 0; a < 2; a++) {
        const phase1 y = q.py[a], x = q.px[a];
        if (y.n && y.len) {
            if (y.u0 < lo_y) lo_y = y.u0;
            if (y.len - 1 + y.u0 + y.n - 1 > hi_y) hi_y = y.len - 1 + y.u0 + y.n - 1;
        }
        if (x.n && x.len) {
            if (x.u0 < lo_x) lo_x = x.u0;
            if (x.len - 1 + x.u0 + x.n - 1 > hi_x) hi_x = x.len - 1 + x.u0 + x.n - 1;
        }
        for (int b = 0; b < 2; b++) {
            const size_t t = (size_t)q.py[a].len * q.px[b].len * d->c;
            if (t > tmp) tmp = t;
        }
    }
    q.pt = -lo_y, q.pb = hi_y - (d->oh - 1), q.pl = -lo_x, q.pr = hi_x - (d->ow - 1);
    q.pad = ((size_t)(d->oh + q.pt + q.pb) * (d->ow + q.pl + q.pr) * d->oc + CN_DCONV_SLACK + 15) /
            16 * 16;
    q.tmp = (tmp + 15) / 16 * 16;
    return q;
}

/* the phase's sub-kernel as a direct convolution: OC input channels, C output channels */
static cn_dconv_shape poly_shape(const cn_conv_desc *d, const poly_plan *q, int a, int b) {
    cn_dconv_shape s = {q->py[a].len, q->px[b].len, d->c, d->oc, q->py[a].n, q->px[b].n, 1, 1,
                        d->ow + q->pl + q->pr};
    return s;
}

static int poly_ok(const cn_conv_desc *d, int nthreads) {
    (void)nthreads;
    if (d->sh != 2 || d->sw != 2 || d->groups != 1 || d->ph >= d->kh || d->pw >= d->kw) return 0;
    poly_plan q = poly_make(d);
    for (int a = 0; a < 2; a++)
        for (int b = 0; b < 2; b++) {
            cn_dconv_shape s = poly_shape(d, &q, a, b);
            if (s.kh && s.kw && s.oh && s.ow && !cn_dconv_forward_ok(&s)) return 0;
        }
    return 1;
}

static size_t poly_workspace(const cn_conv_desc *d, int nthreads) {
    poly_plan q = poly_make(d);
    return (size_t)d->kh * d->kw * d->oc * cn_dconv_ldw(d->c) +
           (size_t)direct_threads(nthreads) * (q.pad + q.tmp);
}

/* din (+)= the data gradient of stride-2 convolution d from dout, by phases */
static void poly_data_grad(float *din, const float *dout, const float *w, const cn_conv_desc *d,
                           float *ws, int nthreads, int set) {
    const poly_plan q = poly_make(d);
    const int T = direct_threads(nthreads), C = d->c, OC = d->oc, KH = d->kh, KW = d->kw;
    const size_t ldw = (size_t)cn_dconv_ldw(C);
    const int wp = d->ow + q.pl + q.pr;
    const size_t in_img = (size_t)d->h * d->w * C;
    const size_t out_img = (size_t)d->oh * d->ow * OC;
    /* the phases' weights: (ty, tx, co) rows of ldw(C), the taps of largest index first */
    float *wk[2][2], *p = ws;
    for (int a = 0; a < 2; a++)
        for (int b = 0; b < 2; b++) {
            const phase1 y = q.py[a], x = q.px[b];
            wk[a][b] = p;
            for (int ty = 0; ty < y.n; ty++)
                for (int tx = 0; tx < x.n; tx++)
                    for (int co = 0; co < OC; co++) {
                        float *row = p + (((size_t)ty * x.n + tx) * OC + co) * ldw;
                        const int ky = y.top - 2 * ty, kx = x.top - 2 * tx;
                        memcpy(row, w + (((size_t)co * KH + ky) * KW + kx) * C, sizeof(float) * C);
                        memset(row + C, 0, sizeof(float) * (ldw - C));
                    }
            p += (size_t)y.n * x.n * OC * ldw;
        }
    float *thr = ws + (size_t)KH * KW * OC * ldw;
#pragma omp parallel num_threads(T < d->n ? T : d->n)
    {
        float *pad = thr + (size_t)omp_get_thread_num() * (q.pad + q.tmp), *tmp = pad + q.pad;
        memset(pad, 0, sizeof(float) * q.pad);
#pragma omp for schedule(static)
        for (int n = 0; n < d->n; n++) {
            const float *src = dout + n * out_img;
            for (int y = 0; y < d->oh; y++)
                memcpy(pad + ((size_t)(y + q.pt) * wp + q.pl) * OC, src + (size_t)y * d->ow * OC,
                       sizeof(float) * d->ow * OC);
            float *dx = din + n * in_img;
            for (int a = 0; a < 2; a++)
                for (int b = 0; b < 2; b++) {
                    const cn_dconv_shape s = poly_shape(d, &q, a, b);
                    if (!s.oh || !s.ow) continue;
                    const int live = s.kh && s.kw;
                    if (live)
                        cn_dconv_forward_rows(tmp,
                                              pad + ((size_t)(q.pt + q.py[a].u0) * wp + q.pl +
                                                     q.px[b].u0) * OC,
                                              wk[a][b], &s, 0, s.oh, 0, NULL);
                    if (!live && !set) continue;
                    for (int i = 0; i < s.oh; i++)
                        for (int j = 0; j < s.ow; j++) {
                            float *o = dx + ((size_t)(2 * i + a) * d->w + 2 * j + b) * C;
                            const float *t = tmp + ((size_t)i * s.ow + j) * C;
                            if (!live) memset(o, 0, sizeof(float) * C);
                            else if (set) memcpy(o, t, sizeof(float) * C);
                            else
                                for (int c = 0; c < C; c++) o[c] += t[c];
                        }
                }
        }
    }
}

static size_t direct_wgrad_workspace(const cn_conv_desc *d, int nthreads) {
    int T = direct_threads(nthreads);
    return (direct_pad_floats(d) + direct_weight_floats(d)) * T;
}

/* dw (OC, KH, KW, C) += the T per-thread sums acc (KH*KW*C, ldw(OC)), added in thread order */
static void wgrad_reduce(float *dw, float *acc, const cn_conv_desc *d, int T) {
    const size_t ldw = (size_t)cn_dconv_ldw(d->oc), wsize = direct_weight_floats(d);
    const size_t k = wsize / ldw;
    for (int t = 1; t < T; t++) {
        const float *src = acc + (size_t)t * wsize;
        for (size_t i = 0; i < wsize; i++) acc[i] += src[i];
    }
    for (int co = 0; co < d->oc; co++)
        for (size_t i = 0; i < k; i++) dw[co * k + i] += acc[i * ldw + co];
}

/* dw += the weight gradient; each thread sums its images in its own (KH*KW*C, ldw(OC)) buffer,
 * and the buffers are added in thread order */
static void direct_wgrad(float *dw, const float *dout, const float *in, const cn_conv_desc *d,
                         float *ws, int nthreads) {
    cn_dconv_shape s = direct_shape(d);
    int T = direct_threads(nthreads), hp = d->h + 2 * d->ph, wp = d->w + 2 * d->pw;
    size_t per = direct_pad_floats(d), body = (size_t)hp * wp * d->c;
    size_t wsize = direct_weight_floats(d);
    size_t in_img = (size_t)d->h * d->w * d->c, out_img = (size_t)d->oh * d->ow * d->oc;
    float *acc = ws + per * T;
    memset(acc, 0, sizeof(float) * wsize * T);
#pragma omp parallel num_threads(T)
    {
        int t = omp_get_thread_num();
        float *pad = ws + (size_t)t * per;
        memset(pad + body, 0, sizeof(float) * (per - body));
#pragma omp for schedule(static)
        for (int n = 0; n < d->n; n++) {
            pad_image(pad, in + n * in_img, d, hp, wp);
            cn_dconv_wgrad_image(acc + (size_t)t * wsize, pad, dout + n * out_img, &s);
        }
    }
    wgrad_reduce(dw, acc, d, T);
}

/* The data and weight gradients of cn_conv2d_backward_bn on the direct kernels, image by image
 * on parallel threads: the thread makes dY of its image (the batch norm's dx rows) in a buffer of
 * its own, and both passes read it there; the same kernels, images and order as
 * cn_conv2d_backward's direct passes, so the same bits. Workspace: the flipped weights, then per
 * thread its dW sums, then per thread the padded dY, the padded image and dY. */
static size_t direct_bn_thread_floats(const cn_conv_desc *d, const cn_conv_desc *tr) {
    const size_t dy = ((size_t)d->oh * d->ow * d->oc + 15) / 16 * 16;
    return direct_pad_floats(tr) + direct_pad_floats(d) + dy;
}

static size_t direct_bn_workspace(const cn_conv_desc *d, const cn_conv_desc *tr, int nthreads) {
    const size_t T = (size_t)direct_threads(nthreads);
    return direct_weight_floats(tr) + T * (direct_weight_floats(d) + direct_bn_thread_floats(d, tr));
}

static void direct_backward_bn(float *din, float *dw, const cn_bn_dx *bn, const float *in,
                               const float *w, const cn_conv_desc *d, const cn_conv_desc *tr,
                               float *ws, int nthreads, int set) {
    const int T = direct_threads(nthreads);
    const cn_dconv_shape sf = direct_shape(tr), sw = direct_shape(d);
    const size_t wsize = direct_weight_floats(d), per = direct_bn_thread_floats(d, tr);
    const size_t padf = direct_pad_floats(tr), padx = direct_pad_floats(d);
    const int hpf = tr->h + 2 * tr->ph, wpf = tr->w + 2 * tr->pw;
    const int hpx = d->h + 2 * d->ph, wpx = d->w + 2 * d->pw;
    const size_t bodyf = (size_t)hpf * wpf * tr->c, bodyx = (size_t)hpx * wpx * d->c;
    const size_t hw = (size_t)d->oh * d->ow, in_img = (size_t)d->h * d->w * d->c;
    float *wk = ws, *acc = ws + direct_weight_floats(tr), *thr = acc + wsize * T;
    if (din) pack_weights_flipped(wk, w, d);
    memset(acc, 0, sizeof(float) * wsize * T);
#pragma omp parallel num_threads(T)
    {
        const int t = omp_get_thread_num();
        float *pf = thr + (size_t)t * per, *px = pf + padf, *dy = px + padx;
        memset(pf + bodyf, 0, sizeof(float) * (padf - bodyf));
        memset(px + bodyx, 0, sizeof(float) * (padx - bodyx));
#pragma omp for schedule(static)
        for (int n = 0; n < d->n; n++) {
            cn_batchnorm_dx_rows(bn, dy, n * hw, (n + 1) * hw);
            pad_image(px, in + n * in_img, d, hpx, wpx);
            cn_dconv_wgrad_image(acc + (size_t)t * wsize, px, dy, &sw);
            if (din) {
                pad_image(pf, dy, tr, hpf, wpf);
                cn_dconv_forward_rows(din + n * in_img, pf, wk, &sf, 0, tr->oh, !set, NULL);
            }
        }
    }
    wgrad_reduce(dw, acc, d, T);
}

/* both the direct and the GEMM path's needs: which one runs depends on the batch size of the
 * call, which may be smaller than the one the workspace was sized for */
static size_t forward_workspace(const cn_conv_desc *d, int nthreads) {
    size_t ws;
    if (implicit_fwd_ok(d)) {
        ws = implicit_plan(d).per * (implicit_parallel(d, nthreads) ? nthreads : 1);
    } else {
        plan p = make_plan(d, nthreads);
        ws = (size_t)p.rows * p.kg * (p.parallel ? nthreads : 1);
        const size_t big = (size_t)one_gemm_rows(d, p.m, p.kg, 0) * p.kg;
        if (big > ws) ws = big;
    }
    if (compact_ok(d) && (size_t)d->n * d->oh * d->ow * d->kh * d->kw * d->c > ws)
        ws = (size_t)d->n * d->oh * d->ow * d->kh * d->kw * d->c;
    if (direct_forward_shape_ok(d) && direct_forward_workspace(d, nthreads) > ws)
        ws = direct_forward_workspace(d, nthreads);
    return ws;
}

/* ---- Winograd in training (kernels/winograd.h): the forward, and the data gradient as the
 * convolution of dY with the flipped filters (data_grad_as_conv), with the transformed weights
 * made again at each call, into the workspace: U (36 C OC floats), then the epilogue's scale
 * (ones) and shift (the bias or zeros), then the Winograd driver's own workspace ---- */

static size_t round16(size_t n) { return (n + 15) / 16 * 16; }

static size_t wino_train_floats(const cn_conv_desc *d, int nthreads) {
    if (!cn_wino_shape_ok(d)) return 0;
    size_t rest = cn_wino_workspace(d, nthreads), wt = (size_t)9 * d->c * d->oc;
    return round16((size_t)36 * d->c * d->oc) + round16((size_t)2 * d->oc) +
           (rest > wt ? rest : wt);
}

/* out = conv(in, w) + shift, or with flipped (d is the data gradient's convolution of the layer
 * w (d->c, 3, 3, d->oc)) out = conv(in, flipped w), or out += that with accumulate (the
 * epilogue's residual is out itself).
 * The GEMMs take U in the layout cn_wino_transposed asks for; the transform reads the filters'
 * taps with one vector lane per channel of whatever is contiguous, so one of the two layouts needs
 * the weights transposed in channels first. */
static void wino_train(float *out, const float *in, const float *w, const float *bias,
                       const cn_conv_desc *d, float *ws, int nthreads, int flipped,
                       int accumulate) {
    const int ut = cn_wino_transposed(d);
    /* the layer's own weights: lo filters of lc channels */
    const int lo = flipped ? d->c : d->oc, lc = flipped ? d->oc : d->c;
    float *u = ws, *aff = ws + round16((size_t)36 * d->c * d->oc);
    float *rest = aff + round16((size_t)2 * d->oc);
    if (ut != flipped) {
        cn_wino_pack_weights_t(u, w, lc, lo, flipped, nthreads);
    } else {
        float *wt = rest; /* free again once U is made; the flip is made by the transpose */
        transpose_taps(wt, w, lc, lo, 3, 3, flipped, nthreads);
        cn_wino_pack_weights_t(u, wt, lo, lc, 0, nthreads);
    }
    for (int k = 0; k < d->oc; k++) {
        aff[k] = 1.0f;
        aff[d->oc + k] = bias ? bias[k] : 0.0f;
    }
    const cn_epilogue ep = {aff, aff + d->oc, accumulate ? out : NULL, CN_ACT_NONE, NULL};
    if (ut) cn_wino_forward_t(out, in, u, &ep, d, rest, nthreads);
    else cn_wino_forward(out, in, u, &ep, d, rest, nthreads);
}

void cn_conv2d_forward_train(float *out, const float *in, const float *w, const float *bias,
                             const cn_conv_desc *d, float *ws, int nthreads) {
    if (cn_wino_train_wanted(d, nthreads)) wino_train(out, in, w, bias, d, ws, nthreads, 0, 0);
    else cn_conv2d_forward(out, in, w, bias, d, ws, nthreads);
}

size_t cn_conv2d_workspace(const cn_conv_desc *d, int nthreads, int backward) {
    if (is_depthwise(d)) return cn_dwconv_workspace(d, nthreads, backward);
    size_t fw = forward_workspace(d, nthreads);
    /* whether an eval forward takes the Winograd path is decided per call (by its batch and
     * cn_winograd_force), so the plan makes room for it whenever the shape allows */
    if (cn_wino_workspace(d, nthreads) > fw) fw = cn_wino_workspace(d, nthreads);
    if (!backward) return fw;
    if (implicit_ok(d) && implicit_parallel(d, nthreads))
        fw += (size_t)(nthreads - 1) * d->oc * d->kh * d->kw * d->c;
    plan p = make_plan(d, nthreads);
    int threads = p.parallel ? nthreads : 1;
    size_t total = (size_t)p.rows * p.kg * 2 * threads;
    if (fw > total) total = fw;
    if (threads > 1) total += (size_t)(threads - 1) * d->oc * p.kg;
    if (direct_wgrad_shape_ok(d) && direct_wgrad_workspace(d, nthreads) > total)
        total = direct_wgrad_workspace(d, nthreads);
    cn_conv_desc t;
    if (data_grad_as_conv(d, &t)) {
        size_t flip = (size_t)d->oc * d->kh * d->kw * d->c + forward_workspace(&t, nthreads);
        if (flip > total) total = flip;
        if (wino_train_floats(&t, nthreads) > total) total = wino_train_floats(&t, nthreads);
    }
    if (wino_train_floats(d, nthreads) > total) total = wino_train_floats(d, nthreads);
    if (cn_wino_wgrad_workspace(d, nthreads) > total) total = cn_wino_wgrad_workspace(d, nthreads);
    if (!is_pointwise(d) && cn_conv2d_backward_bn_ok(d, nthreads) &&
        direct_bn_workspace(d, &t, nthreads) > total)
        total = direct_bn_workspace(d, &t, nthreads);
    if (poly_ok(d, nthreads) && poly_workspace(d, nthreads) > total)
        total = poly_workspace(d, nthreads);
    if (is_pointwise(d) && pw_workspace(d, nthreads) > total) total = pw_workspace(d, nthreads);
    return total;
}

/* col[r][(kh*KW + kw)*cg + ci] = in[n][ih][iw][g*cg + ci] for output rows m0..m0+rows.
 * With one group a whole kernel row (KW pixels x C channels) is contiguous in NHWC, so it is one
 * copy when it lies inside the image. */
static CN_CLONES void im2col(float *restrict col, const float *restrict in, const cn_conv_desc *d, int g,
                   size_t m0, int rows) {
    int cg = d->c / d->groups, kg = d->kh * d->kw * cg;
    size_t img = (size_t)d->oh * d->ow;
    for (int r = 0; r < rows; r++) {
        size_t m = m0 + r;
        int n = (int)(m / img), rem = (int)(m % img);
        int oy = rem / d->ow, ox = rem % d->ow;
        float *restrict dst = col + (size_t)r * kg;
        int ix0 = ox * d->sw - d->pw;
        int row_inside = d->groups == 1 && ix0 >= 0 && ix0 + d->kw <= d->w;
        for (int ky = 0; ky < d->kh; ky++) {
            int iy = oy * d->sh - d->ph + ky;
            if (iy < 0 || iy >= d->h) {
                memset(dst, 0, sizeof(float) * cg * d->kw);
                dst += cg * d->kw;
                continue;
            }
            const float *restrict src = in + (((size_t)n * d->h + iy) * d->w) * d->c + g * cg;
            if (row_inside) {
                memcpy(dst, src + (size_t)ix0 * d->c, sizeof(float) * cg * d->kw);
                dst += cg * d->kw;
                continue;
            }
            for (int kx = 0; kx < d->kw; kx++, dst += cg) {
                int ix = ix0 + kx;
                if (ix < 0 || ix >= d->w) memset(dst, 0, sizeof(float) * cg);
                else memcpy(dst, src + (size_t)ix * d->c, sizeof(float) * cg);
            }
        }
    }
}

static CN_CLONES void col2im_add(float *restrict din, const float *restrict col, const cn_conv_desc *d,
                       int g, size_t m0, int rows) {
    int cg = d->c / d->groups, kg = d->kh * d->kw * cg;
    size_t img = (size_t)d->oh * d->ow;
    for (int r = 0; r < rows; r++) {
        size_t m = m0 + r;
        int n = (int)(m / img), rem = (int)(m % img);
        int oy = rem / d->ow, ox = rem % d->ow;
        const float *restrict src = col + (size_t)r * kg;
        int ix0 = ox * d->sw - d->pw;
        int row_inside = d->groups == 1 && ix0 >= 0 && ix0 + d->kw <= d->w;
        for (int ky = 0; ky < d->kh; ky++) {
            int iy = oy * d->sh - d->ph + ky;
            if (iy < 0 || iy >= d->h) {
                src += cg * d->kw;
                continue;
            }
            float *restrict row = din + (((size_t)n * d->h + iy) * d->w) * d->c + g * cg;
            if (row_inside) {
                float *restrict dst = row + (size_t)ix0 * d->c;
                int len = cg * d->kw;
#pragma omp simd
                for (int i = 0; i < len; i++) dst[i] += src[i];
                src += len;
                continue;
            }
            for (int kx = 0; kx < d->kw; kx++, src += cg) {
                int ix = ix0 + kx;
                if (ix < 0 || ix >= d->w) continue;
                float *restrict dst = row + (size_t)ix * d->c;
#pragma omp simd
                for (int ci = 0; ci < cg; ci++) dst[ci] += src[ci];
            }
        }
    }
}

/* ---- general path ---- */

/* im2col of rows [m0, m0 + rows) on nt threads (the serial chunks of one image: its GEMM uses
 * every thread, and a single-threaded copy between them left the others waiting, 0.3 ms of a
 * 1.4 ms stride-2 layer of ResNet-50 at batch 1) */
static void im2col_threads(float *col, const float *in, const cn_conv_desc *d, int g, size_t m0,
                           int rows, int nt) {
    const int kg = d->kh * d->kw * (d->c / d->groups);
    if (nt <= 1 || (size_t)rows * kg < (size_t)(1 << 16)) {
        im2col(col, in, d, g, m0, rows);
        return;
    }
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int t = 0; t < nt; t++) {
        const int r0 = (int)((long)rows * t / nt), r1 = (int)((long)rows * (t + 1) / nt);
        if (r1 > r0) im2col(col + (size_t)r0 * kg, in, d, g, m0 + (size_t)r0, r1 - r0);
    }
}

static void forward_chunk(float *out, const float *in, const float *w, const cn_conv_desc *d,
                          const plan *p, size_t m0, int rows, float *col, float beta,
                          const cn_epilogue *ep, int nt) {
    /* one group: the epilogue runs inside the GEMM, on each block as it is finished */
    const post_ctx q = {ep, ep && ep->res ? ep->res + m0 * d->oc : NULL, d->oc};
    /* the same epilogue, for the kernels that apply it in registers */
    const int act = ep ? gemm_act(ep) : -1;
    const cn_gemm_affine aff = {ep ? ep->scale : NULL, ep ? ep->shift : NULL, q.res,
                                (size_t)d->oc, act};
    const int plain = act >= 0;
    const cn_gemm_post post = {epilogue_post, (void *)&q, plain ? &aff : NULL};
    const int in_gemm = ep && d->groups == 1;
    for (int g = 0; g < d->groups; g++) {
        const float *a = col;
        if (is_pointwise(d)) a = in + m0 * d->c;
        else im2col_threads(col, in, d, g, m0, rows, nt);
        cn_sgemm_post(0, 1, rows, p->ocg, p->kg, 1.0f, a, p->kg, w + (size_t)g * p->ocg * p->kg,
                      p->kg, beta, out + m0 * d->oc + (size_t)g * p->ocg, d->oc,
                      in_gemm ? &post : NULL);
    }
    if (ep && !in_gemm)
        epilogue(out + m0 * d->oc, out + m0 * d->oc, ep->res ? ep->res + m0 * d->oc : NULL,
                 (size_t)rows, d->oc, ep);
}

/* out = conv(in, w) (beta 0) or out += conv(in, w) (beta 1), without bias; with an epilogue
 * (beta 0 only) applied to each block of rows as it leaves the GEMM */
static void conv_gemm_stats(float *out, const float *in, const float *w, const cn_conv_desc *d,
                            float *ws, int nthreads, float beta, const cn_epilogue *ep,
                            double *stats);

static void conv_gemm(float *out, const float *in, const float *w, const cn_conv_desc *d,
                      float *ws, int nthreads, float beta, const cn_epilogue *ep) {
    conv_gemm_stats(out, in, w, d, ws, nthreads, beta, ep, NULL);
}

/* conv_gemm; stats: the batch norm's sums of each image ((N, 2, OC) doubles), taken after each
 * chunk of whole images (the parallel plan's) while it is in cache */
static void conv_gemm_stats(float *out, const float *in, const float *w, const cn_conv_desc *d,
                            float *ws, int nthreads, float beta, const cn_epilogue *ep,
                            double *stats) {
    if (!stats && compact_ok(d) && conv_compact(out, in, w, d, ws, nthreads, beta, ep)) return;
    if (implicit_fwd_ok(d)) {
        conv_implicit(out, in, w, d, ws, nthreads, beta, ep);
        return;
    }
    plan p = make_plan(d, nthreads);
    /* a 1x1 convolution whose weights outweigh half of L2 as one GEMM threaded inside (its 2-D
     * grid reads each weight panel once for all images) rather than chunks of images on
     * parallel threads (each thread reading all the weights per chunk): ResNet-50's 14x14 and
     * 7x7 1x1 layers at batch 16, 2 threads: 324-445 -> 439-454 and 268-383 -> 399-417 GFLOP/s
     * (256 -> 1024, 512 -> 2048 channels); with the weights in L2 the chunks were as fast or
     * faster (512 -> 128 at 28x28: 406-431 chunked, 384-398 as one GEMM) */
    if (is_pointwise(d) && !stats && (size_t)d->c * d->oc > (size_t)PW_ONE_GEMM_MIN_WEIGHTS) {
        forward_chunk(out, in, w, d, &p, 0, (int)p.m, NULL, beta, ep, nthreads);
        return;
    }
    const int big = one_gemm_rows(d, p.m, p.kg, stats != NULL);
    if (big) {
        for (size_t m0 = 0; m0 < p.m; m0 += (size_t)big) {
            const int rows = (int)(m0 + (size_t)big <= p.m ? (size_t)big : p.m - m0);
            forward_chunk(out, in, w, d, &p, m0, rows, ws, beta, ep, nthreads);
        }
        return;
    }
    if (p.parallel) {
#pragma omp parallel num_threads(nthreads)
        {
            float *col = ws + (size_t)omp_get_thread_num() * p.rows * p.kg;
#pragma omp for schedule(static)
            for (size_t ch = 0; ch < p.nchunks; ch++) {
                size_t m0 = ch * p.rows;
                int rows = (int)(m0 + p.rows <= p.m ? (size_t)p.rows : p.m - m0);
                forward_chunk(out, in, w, d, &p, m0, rows, col, beta, ep, 1);
                const size_t img = (size_t)d->oh * d->ow;
                for (size_t r = 0; stats && r < (size_t)rows; r += img)
                    cn_batchnorm_image_sums(stats + (m0 + r) / img * 2 * d->oc,
                                            out + (m0 + r) * d->oc, img, d->oc);
            }
        }
    } else {
        for (size_t m0 = 0; m0 < p.m; m0 += p.rows) {
            int rows = (int)(m0 + p.rows <= p.m ? (size_t)p.rows : p.m - m0);
            forward_chunk(out, in, w, d, &p, m0, rows, ws, beta, ep, nthreads);
        }
    }
}

void cn_conv2d_forward(float *out, const float *in, const float *w, const float *bias,
                       const cn_conv_desc *d, float *ws, int nthreads) {
    if (is_depthwise(d)) {
        cn_dwconv_forward(out, in, w, bias, d, ws, nthreads);
        return;
    }
    if (direct_forward_shape_ok(d)) {
        pack_weights(ws, w, d);
        direct_forward(out, in, ws, d, ws + direct_weight_floats(d), nthreads, 0, NULL, NULL);
    } else {
        conv_gemm(out, in, w, d, ws, nthreads, 0.0f, NULL);
    }
    size_t m = (size_t)d->n * d->oh * d->ow;
    if (bias) {
#pragma omp parallel for schedule(static)
        for (size_t i = 0; i < m; i++)
            for (int c = 0; c < d->oc; c++) out[i * d->oc + c] += bias[c];
    }
}

void cn_conv2d_forward_fused(float *out, const float *in, const float *w,
                             const cn_epilogue *ep, const cn_conv_desc *d, float *ws,
                             int nthreads) {
    if (is_depthwise(d)) {
        cn_dwconv_forward_fused(out, in, w, ep, d, ws, nthreads);
        return;
    }
    if (direct_forward_shape_ok(d)) {
        pack_weights(ws, w, d);
        direct_forward(out, in, ws, d, ws + direct_weight_floats(d), nthreads, 0, ep, NULL);
    } else {
        conv_gemm(out, in, w, d, ws, nthreads, 0.0f, ep);
    }
    if (ep->pool) cn_gap_forward(ep->pool, out, d->n, d->oh * d->ow, d->oc);
}

static void backward_chunk(float *din, float *dw, const float *dout, const float *in,
                           const float *w, const cn_conv_desc *d, const plan *p, size_t m0,
                           int rows, float *col, float *dcol) {
    /* not for 1x1 convolutions: pointwise_backward */
    for (int g = 0; g < d->groups; g++) {
        const float *dy = dout + m0 * d->oc + (size_t)g * p->ocg;
        const float *wg = w + (size_t)g * p->ocg * p->kg;
        if (dw) {
            im2col(col, in, d, g, m0, rows);
            cn_sgemm(1, 0, p->ocg, p->kg, rows, 1.0f, dy, d->oc, col, p->kg, 1.0f,
                     dw + (size_t)g * p->ocg * p->kg, p->kg);
        }
        if (din) {
            cn_sgemm(0, 0, rows, p->kg, p->ocg, 1.0f, dy, d->oc, wg, p->kg, 0.0f, dcol, p->kg);
            col2im_add(din, dcol, d, g, m0, rows);
        }
    }
}

int cn_conv2d_sets_din(const cn_conv_desc *d) {
    cn_conv_desc t;
    if (is_depthwise(d)) return cn_dwconv_sets_din(d);
    return is_pointwise(d) || data_grad_as_conv(d, &t) || poly_ok(d, 1);
}

static void conv_backward(float *din, float *dw, float *dbias, const float *dout,
                          const float *in, const float *w, const cn_conv_desc *d, float *ws,
                          int nthreads, int set);

void cn_conv2d_backward(float *din, float *dw, float *dbias, const float *dout, const float *in,
                        const float *w, const cn_conv_desc *d, float *ws, int nthreads) {
    conv_backward(din, dw, dbias, dout, in, w, d, ws, nthreads, 0);
}

void cn_conv2d_backward_set(float *din, float *dw, float *dbias, const float *dout,
                            const float *in, const float *w, const cn_conv_desc *d, float *ws,
                            int nthreads) {
    conv_backward(din, dw, dbias, dout, in, w, d, ws, nthreads, 1);
}

/* dbias += the sums of dout over the pixels, in double */
static void bias_grad(float *dbias, const float *dout, const cn_conv_desc *d) {
    const size_t m = (size_t)d->n * d->oh * d->ow;
#pragma omp parallel for schedule(static)
    for (int c = 0; c < d->oc; c++) {
        double acc = 0;
        for (size_t i = 0; i < m; i++) acc += dout[i * d->oc + c];
        dbias[c] += (float)acc;
    }
}

/* set: din is written (cn_conv2d_sets_din shapes only), else accumulated */
static void conv_backward(float *din, float *dw, float *dbias, const float *dout,
                          const float *in, const float *w, const cn_conv_desc *d, float *ws,
                          int nthreads, int set) {
    if (is_depthwise(d)) {
        (set ? cn_dwconv_backward_set : cn_dwconv_backward)(din, dw, dbias, dout, in, w, d, ws,
                                                             nthreads);
        return;
    }
    if (is_pointwise(d)) {
        pointwise_backward(din, dw, dout, NULL, in, w, d, ws, nthreads, set);
        if (dbias) bias_grad(dbias, dout, d);
        return;
    }
    const float din_beta = set ? 0.0f : 1.0f;
    cn_conv_desc tr;
    float *din_conv = din, *dw_implicit = NULL;
    int flip = din && data_grad_as_conv(d, &tr);
    if (flip) din = NULL; /* computed below as a convolution */
    const int poly = din && poly_ok(d, nthreads);
    if (poly) din = NULL; /* below, by phases */
    float *dw_direct = NULL, *dw_wino = NULL;
    if (dw && cn_wino_train_wanted(d, nthreads)) {
        dw_wino = dw;
        dw = NULL; /* below, by Winograd */
    } else if (dw && direct_wgrad_ok(d, nthreads)) {
        dw_direct = dw;
        dw = NULL; /* below, with the direct kernels */
    } else if (dw && implicit_ok(d) && !small_wide(d)) {
        dw_implicit = dw;
        dw = NULL; /* below, without im2col */
    }
    plan p = make_plan(d, nthreads);
    size_t per = (size_t)p.rows * p.kg * 2;
    size_t wsize = (size_t)d->oc * p.kg;
    if (!dw && !din) {
        /* only the bias and/or the flipped data gradient are wanted */
    } else if (p.parallel) {
        float *priv = ws + per * nthreads;
        if (dw) memset(priv, 0, sizeof(float) * wsize * (nthreads - 1));
#pragma omp parallel num_threads(nthreads)
        {
            int t = omp_get_thread_num();
            float *col = ws + per * t, *dcol = col + (size_t)p.rows * p.kg;
            float *mydw = dw ? (t == 0 ? dw : priv + (size_t)(t - 1) * wsize) : NULL;
#pragma omp for schedule(static)
            for (size_t ch = 0; ch < p.nchunks; ch++) {
                size_t m0 = ch * p.rows;
                int rows = (int)(m0 + p.rows <= p.m ? (size_t)p.rows : p.m - m0);
                backward_chunk(din, mydw, dout, in, w, d, &p, m0, rows, col, dcol);
            }
        }
        if (dw)
            for (int t = 1; t < nthreads; t++) {
                const float *src = priv + (size_t)(t - 1) * wsize;
                for (size_t i = 0; i < wsize; i++) dw[i] += src[i];
            }
    } else {
        float *col = ws, *dcol = ws + (size_t)p.rows * p.kg;
        for (size_t m0 = 0; m0 < p.m; m0 += p.rows) {
            int rows = (int)(m0 + p.rows <= p.m ? (size_t)p.rows : p.m - m0);
            backward_chunk(din, dw, dout, in, w, d, &p, m0, rows, col, dcol);
        }
    }
    if (dbias) bias_grad(dbias, dout, d);
    if (dw_implicit) implicit_wgrad(dw_implicit, dout, in, d, ws, nthreads);
    if (dw_direct) direct_wgrad(dw_direct, dout, in, d, ws, nthreads);
    if (dw_wino) cn_wino_wgrad(dw_wino, dout, in, d, ws, nthreads);
    if (poly) poly_data_grad(din_conv, dout, w, d, ws, nthreads, set);
    if (flip && cn_wino_train_wanted(&tr, nthreads)) {
        /* din (+)= conv(dout, flipped w) */
        wino_train(din_conv, dout, w, NULL, &tr, ws, nthreads, 1, !set);
    } else if (flip && direct_forward_shape_ok(&tr)) {
        /* the weight pass is over, so its workspace is free */
        pack_weights_flipped(ws, w, d);
        direct_forward(din_conv, dout, ws, &tr, ws + direct_weight_floats(&tr), nthreads, !set,
                       NULL, NULL);
    } else if (flip) {
        /* the weight pass is over, so its workspace is free */
        float *wt = ws;
        transpose_taps(wt, w, d->c, d->oc, d->kh, d->kw, 1, nthreads);
        conv_gemm(din_conv, dout, wt, &tr, ws + (size_t)d->oc * d->kh * d->kw * d->c, nthreads,
                  din_beta, NULL);
    }
}

void cn_conv2d_forward_train_stats(float *out, const float *in, const float *w,
                                   const cn_conv_desc *d, float *ws, int nthreads,
                                   double *stats) {
    const int other = is_depthwise(d) || cn_wino_train_wanted(d, nthreads);
    if (!other && direct_forward_shape_ok(d) && d->n >= direct_threads(nthreads)) {
        pack_weights(ws, w, d);
        direct_forward(out, in, ws, d, ws + direct_weight_floats(d), nthreads, 0, NULL, stats);
        return;
    }
    if (!other && is_pointwise(d) && make_plan(d, nthreads).parallel) {
        conv_gemm_stats(out, in, w, d, ws, nthreads, 0.0f, NULL, stats);
        return;
    }
    /* the other paths: the sums in a pass of their own, the same sums */
    cn_conv2d_forward_train(out, in, w, NULL, d, ws, nthreads);
    const size_t img = (size_t)d->oh * d->ow;
#pragma omp parallel for schedule(static) num_threads(nthreads > 1 ? nthreads : 1)
    for (int n = 0; n < d->n; n++)
        cn_batchnorm_image_sums(stats + (size_t)n * 2 * d->oc, out + n * img * d->oc, img, d->oc);
}

int cn_conv2d_backward_bn_ok(const cn_conv_desc *d, int nthreads) {
    cn_conv_desc tr;
    if (is_pointwise(d)) return 1;
    if (is_depthwise(d)) return cn_dwconv_backward_bn_ok(d, nthreads);
    return data_grad_as_conv(d, &tr) && direct_forward_shape_ok(&tr) &&
           !cn_wino_train_wanted(&tr, nthreads) && !cn_wino_train_wanted(d, nthreads) &&
           direct_wgrad_ok(d, nthreads) && d->n >= direct_threads(nthreads);
}

void cn_conv2d_backward_bn(float *din, float *dw, const cn_bn_dx *bn, const float *in,
                           const float *w, const cn_conv_desc *d, float *ws, int nthreads,
                           int set) {
    cn_conv_desc tr;
    if (is_pointwise(d)) {
        pointwise_backward(din, dw, NULL, bn, in, w, d, ws, nthreads, set);
        return;
    }
    if (is_depthwise(d)) {
        cn_dwconv_backward_bn(din, dw, bn, in, w, d, ws, nthreads, set);
        return;
    }
    data_grad_as_conv(d, &tr);
    direct_backward_bn(din, dw, bn, in, w, d, &tr, ws, nthreads, set);
}

void cn_conv2d_forward_ref(float *out, const float *in, const float *w, const float *bias,
                           const cn_conv_desc *d) {
    int cg = d->c / d->groups, ocg = d->oc / d->groups;
    for (int n = 0; n < d->n; n++)
        for (int oy = 0; oy < d->oh; oy++)
            for (int ox = 0; ox < d->ow; ox++)
                for (int o = 0; o < d->oc; o++) {
                    int g = o / ocg;
                    double acc = bias ? bias[o] : 0.0;
                    for (int ky = 0; ky < d->kh; ky++)
                        for (int kx = 0; kx < d->kw; kx++) {
                            int iy = oy * d->sh - d->ph + ky, ix = ox * d->sw - d->pw + kx;
                            if (iy < 0 || iy >= d->h || ix < 0 || ix >= d->w) continue;
                            for (int ci = 0; ci < cg; ci++)
                                acc += (double)in[(((size_t)n * d->h + iy) * d->w + ix) * d->c +
                                                  g * cg + ci] *
                                       w[(((size_t)o * d->kh + ky) * d->kw + kx) * cg + ci];
                        }
                    out[(((size_t)n * d->oh + oy) * d->ow + ox) * d->oc + o] = (float)acc;
                }
}
