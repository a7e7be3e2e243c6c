/* The ops EfficientNet adds, against double-precision references and finite differences:
 * - depthwise conv2d forward, data gradient, weight and bias gradient vs direct loops, on every
 *   fast path (3x3 / 5x5, stride 1 / 2) and on odd shapes (channel tails, 1x1 to 4x4 maps, other
 *   kernels and paddings, batches 1 to 13, 1 to 3 threads), with and without bias;
 * - SiLU and sigmoid accuracy in ulp over [-100, 100] and at the extremes;
 * - finite-difference checks of silu, sigmoid, channel scale, mask multiply and batch norm with a
 *   fused SiLU or ReLU;
 * - dropout mask statistics and determinism;
 * - the fused expansion and depthwise convolution (cn_expand_dw_forward) against the two run
 *   apart, on bands with carried rows, more threads than bands, channel tails and a pool;
 * - the depthwise forward with every epilogue (affine, residual, each activation, pool) against
 *   a double reference, on channel tails and odd widths. */
#include <float.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core/rng.h"
#include "ops/ops.h"

static cn_rng rng;

static float *randv(size_t n, float scale) {
    float *v = malloc(sizeof(float) * (n ? n : 1));
    for (size_t i = 0; i < n; i++) v[i] = scale * cn_rng_normal(&rng);
    return v;
}

static float urand(float lo, float hi) { return lo + (hi - lo) * cn_rng_uniform(&rng); }

/* max |a - b| / max(max |b|, 1e-6) against a double reference */
static double rel_err_d(const float *a, const double *b, size_t n) {
    double md = 0, mb = 1e-6;
    for (size_t i = 0; i < n; i++) {
        double dd = fabs(a[i] - b[i]);
        if (dd > md || dd != dd) md = dd;
        if (fabs(b[i]) > mb) mb = fabs(b[i]);
    }
    return md / mb;
}

/* ---- depthwise convolution vs direct loops ---- */

/* out, din, dw, db of a depthwise convolution (weights (C, KH, KW, 1)) in double */
static void dw_ref(double *out, double *din, double *dw, double *db, const float *in,
                   const float *w, const float *bias, const float *dout, const cn_conv_desc *d) {
    int C = d->c;
    for (int n = 0; n < d->n; n++)
        for (int oy = 0; oy < d->oh; oy++)
            for (int ox = 0; ox < d->ow; ox++)
                for (int c = 0; c < C; c++) {
                    size_t oi = (((size_t)n * d->oh + oy) * d->ow + ox) * C + c;
                    double acc = bias ? bias[c] : 0.0, go = dout[oi];
                    db[c] += go;
                    for (int ky = 0; ky < d->kh; ky++)
                        for (int kx = 0; kx < d->kw; kx++) {
                            int iy = oy * d->sh - d->ph + ky, ix = ox * d->sw - d->pw + kx;
                            if (iy < 0 || iy >= d->h || ix < 0 || ix >= d->w) continue;
                            size_t ii = (((size_t)n * d->h + iy) * d->w + ix) * C + c;
                            size_t wi = ((size_t)c * d->kh + ky) * d->kw + kx;
                            acc += (double)in[ii] * w[wi];
                            din[ii] += go * w[wi];
                            dw[wi] += go * in[ii];
                        }
                    out[oi] = acc;
                }
}

/* which: bit 0 din, bit 1 dw, bit 2 db requested (the others NULL) */
static void dw_case(int n, int h, int w, int c, int kh, int kw, int sh, int sw, int ph, int pw,
                    int threads, int bias, int which) {
    cn_conv_desc d = {n, h, w, c, c, kh, kw, sh, sw, ph, pw, c, 0, 0};
    char label[160];
    snprintf(label, sizeof label, "dw n%d %dx%dx%d k%dx%d s%dx%d p%dx%d t%d b%d g%d", n, h, w, c,
             kh, kw, sh, sw, ph, pw, threads, bias, which);
    if (!cn_conv_desc_init(&d)) {
        CHECK(0, "%s: desc rejected", label);
        return;
    }
    size_t nin = (size_t)n * h * w * c, nout = (size_t)n * d.oh * d.ow * c,
           nw = (size_t)c * kh * kw;
    float *in = randv(nin, 1), *wt = randv(nw, 0.3f), *b = bias ? randv(c, 1) : NULL;
    float *dout = randv(nout, 1), *out = malloc(sizeof(float) * nout);
    double *rout = malloc(sizeof(double) * nout), *rdin = malloc(sizeof(double) * nin),
           *rdw = malloc(sizeof(double) * nw), *rdb = malloc(sizeof(double) * c);
    float *din = malloc(sizeof(float) * nin), *dw = malloc(sizeof(float) * nw),
          *db = malloc(sizeof(float) * c);
    /* backward accumulates: start from known non-zero values */
    for (size_t i = 0; i < nin; i++) din[i] = 0.5f, rdin[i] = 0.5;
    for (size_t i = 0; i < nw; i++) dw[i] = 0.25f, rdw[i] = 0.25;
    for (int i = 0; i < c; i++) db[i] = 1, rdb[i] = 1;
    dw_ref(rout, rdin, rdw, rdb, in, wt, b, dout, &d);
    /* workspaces at exactly the advertised sizes */
    size_t nf = cn_conv2d_workspace(&d, threads, 0), nb = cn_conv2d_workspace(&d, threads, 1);
    float *wsf = malloc(sizeof(float) * (nf ? nf : 1)), *wsb = malloc(sizeof(float) * (nb ? nb : 1));
    cn_conv2d_forward(out, in, wt, b, &d, wsf, threads);
    double ef = rel_err_d(out, rout, nout);
    CHECK(ef < 1e-5, "%s: forward rel err %g", label, ef);
    cn_conv2d_backward(which & 1 ? din : NULL, which & 2 ? dw : NULL, which & 4 ? db : NULL, dout,
                       in, wt, &d, wsb, threads);
    if (which & 1) {
        double e = rel_err_d(din, rdin, nin);
        CHECK(e < 1e-5, "%s: din rel err %g", label, e);
        /* the graph's variant for a tensor read by this convolution only: din written
         * outright, whatever it held (NaN here) */
        if (cn_conv2d_sets_din(&d)) {
            float *dset = malloc(sizeof(float) * nin);
            for (size_t i = 0; i < nin; i++) dset[i] = NAN;
            double *want = malloc(sizeof(double) * nin);
            for (size_t i = 0; i < nin; i++) want[i] = rdin[i] - 0.5;
            cn_conv2d_backward_set(dset, NULL, NULL, dout, in, wt, &d, wsb, threads);
            double es = rel_err_d(dset, want, nin);
            CHECK(es < 1e-5, "%s: din (set) rel err %g", label, es);
            free(dset), free(want);
        }
    }
    if (which & 2) {
        double e = rel_err_d(dw, rdw, nw);
        CHECK(e < 1e-5, "%s: dw rel err %g", label, e);
    }
    if (which & 4) {
        double e = rel_err_d(db, rdb, c);
        CHECK(e < 1e-5, "%s: db rel err %g", label, e);
    }
    /* the same thread count gives the same bits */
    float *out2 = malloc(sizeof(float) * nout), *din2 = malloc(sizeof(float) * nin),
          *dw2 = malloc(sizeof(float) * nw), *db2 = malloc(sizeof(float) * c);
    memset(din2, 0, sizeof(float) * nin);
    memset(dw2, 0, sizeof(float) * nw);
    memset(db2, 0, sizeof(float) * c);
    memset(din, 0, sizeof(float) * nin);
    memset(dw, 0, sizeof(float) * nw);
    memset(db, 0, sizeof(float) * c);
    cn_conv2d_forward(out2, in, wt, b, &d, wsf, threads);
    cn_conv2d_backward(din, dw, db, dout, in, wt, &d, wsb, threads);
    cn_conv2d_backward(din2, dw2, db2, dout, in, wt, &d, wsb, threads);
    CHECK(!memcmp(out, out2, sizeof(float) * nout) && !memcmp(din, din2, sizeof(float) * nin) &&
              !memcmp(dw, dw2, sizeof(float) * nw) && !memcmp(db, db2, sizeof(float) * c),
          "%s: not deterministic", label);
    free(in); free(wt); free(b); free(dout); free(out); free(rout); free(rdin); free(rdw);
    free(rdb); free(din); free(dw); free(db); free(wsf); free(wsb); free(out2); free(din2);
    free(dw2); free(db2);
}

static void dw_tests(void) {
    int ks[2] = {3, 5};
    for (int t = 1; t <= 2; t++) {
        for (int ki = 0; ki < 2; ki++)
            for (int s = 1; s <= 2; s++) {
                int k = ks[ki], p = k / 2;
                /* fast paths: channels a multiple of 16, with a tail of 8, of 3, below 16 */
                dw_case(2, 13, 11, 32, k, k, s, s, p, p, t, 1, 7);
                dw_case(1, 16, 16, 96, k, k, s, s, p, p, t, 0, 7);
                dw_case(3, 9, 10, 56, k, k, s, s, p, p, t, 1, 7);
                dw_case(2, 7, 7, 35, k, k, s, s, p, p, t, 1, 7);
                dw_case(3, 8, 9, 5, k, k, s, s, p, p, t, 1, 7);
                dw_case(1, 6, 5, 1, k, k, s, s, p, p, t, 0, 7);
                /* tiny maps (EfficientNet at 28x28 input): 1x1, 2x2, 3x3, 4x4 */
                dw_case(3, 1, 1, 48, k, k, s, s, p, p, t, 1, 7);
                dw_case(2, 2, 2, 40, k, k, s, s, p, p, t, 1, 7);
                dw_case(1, 3, 3, 24, k, k, s, s, p, p, t, 0, 7);
                dw_case(2, 4, 4, 17, k, k, s, s, p, p, t, 1, 7);
                dw_case(2, 2, 5, 16, k, k, s, s, p, p, t, 1, 7);
                /* wide rows (several column blocks), odd sizes */
                dw_case(1, 5, 37, 48, k, k, s, s, p, p, t, 1, 7);
                dw_case(2, 15, 15, 24, k, k, s, s, p, p, t, 1, 7);
                /* padding variants: none, asymmetric (TF "same" written as a larger pad), more
                 * than k/2 */
                dw_case(2, 9, 8, 32, k, k, s, s, 0, 0, t, 1, 7);
                dw_case(2, 9, 8, 24, k, k, s, s, p, 0, t, 1, 7);
                dw_case(1, 6, 7, 16, k, k, s, s, k - 1, k - 1, t, 1, 7);
                /* some gradients only */
                dw_case(2, 9, 9, 40, k, k, s, s, p, p, t, 1, 1);
                dw_case(2, 9, 9, 40, k, k, s, s, p, p, t, 1, 2);
                dw_case(2, 9, 9, 40, k, k, s, s, p, p, t, 1, 4);
                dw_case(2, 9, 9, 40, k, k, s, s, p, p, t, 0, 3);
            }
        /* narrow maps take blocks of up to 8 images, 4 at a time through a tap table: batches
         * of 5 to 13 with remainders, channel tails of 8 and 3 */
        dw_case(9, 2, 2, 40, 3, 3, 1, 1, 1, 1, t, 1, 7);
        dw_case(13, 1, 1, 24, 5, 5, 1, 1, 2, 2, t, 1, 7);
        dw_case(6, 4, 4, 56, 5, 5, 2, 2, 2, 2, t, 1, 7);
        dw_case(5, 7, 7, 19, 3, 3, 1, 1, 1, 1, t, 0, 7);
        dw_case(10, 3, 3, 48, 3, 3, 2, 2, 1, 1, t, 1, 7);
        dw_case(8, 12, 12, 32, 5, 5, 1, 1, 2, 2, t, 1, 7);
        dw_case(7, 5, 5, 12, 7, 7, 2, 2, 3, 3, t, 1, 7);
        /* the generic path: other kernels, strides, rectangular kernels */
        dw_case(2, 9, 9, 32, 7, 7, 1, 1, 3, 3, t, 1, 7);
        dw_case(2, 11, 10, 19, 7, 7, 2, 2, 3, 3, t, 1, 7);
        dw_case(3, 8, 8, 16, 1, 1, 1, 1, 0, 0, t, 1, 7);
        dw_case(1, 9, 9, 21, 3, 3, 3, 3, 1, 1, t, 1, 7);
        dw_case(2, 7, 9, 24, 3, 5, 1, 2, 1, 2, t, 1, 7);
        dw_case(2, 10, 7, 8, 2, 2, 2, 2, 0, 0, t, 0, 7);
        dw_case(1, 1, 1, 40, 7, 7, 1, 1, 3, 3, t, 1, 7);
        dw_case(2, 5, 6, 3, 1, 3, 1, 1, 0, 1, t, 1, 7);
    }
    /* EfficientNet-B0 shapes (batch 2): big enough for several row blocks and channel blocks */
    dw_case(2, 28, 28, 144, 3, 3, 2, 2, 1, 1, 2, 0, 7);
    dw_case(2, 14, 14, 240, 5, 5, 1, 1, 2, 2, 2, 0, 7);
    dw_case(2, 7, 7, 1152, 5, 5, 1, 1, 2, 2, 2, 0, 7);
    dw_case(1, 56, 56, 32, 3, 3, 1, 1, 1, 1, 2, 0, 7);
    /* three threads: uneven task shares, three partial sums */
    dw_case(3, 9, 9, 40, 3, 3, 2, 2, 1, 1, 3, 1, 7);
    dw_case(1, 1, 1, 56, 5, 5, 1, 1, 2, 2, 3, 1, 7);
}

/* ---- SiLU and sigmoid accuracy ---- */

static double ulp_of(double v) {
    v = fabs(v);
    if (v < FLT_MIN) return ldexp(1.0, -149);
    int e;
    frexp(v, &e); /* v = f 2^e, f in [0.5, 1) */
    return ldexp(1.0, e - 24);
}

static double sigmoid_d(double x) { return x >= 0 ? 1 / (1 + exp(-x)) : exp(x) / (1 + exp(x)); }
static double silu_d(double x) { return x * sigmoid_d(x); }
static double silu_grad_d(double x) {
    double s = sigmoid_d(x);
    return s * (1 + x * (1 - s));
}

/* the ulp error of silu (which 0), sigmoid (1) or silu' (2) over n points, in ulp of the larger
 * of the reference and floor (silu' crosses zero near x = -1.28, where no formula keeps a
 * relative error) */
static void act_accuracy(const char *name, int which, const float *x, size_t n, double max_ulp,
                         double floor_) {
    float *y = malloc(sizeof(float) * n), *dy = malloc(sizeof(float) * n);
    for (size_t i = 0; i < n; i++) dy[i] = 1.0f;
    if (which == 0) cn_silu_forward(y, x, n);
    else if (which == 1) cn_sigmoid_forward(y, x, n);
    else {
        memset(y, 0, sizeof(float) * n);
        cn_silu_backward(y, dy, x, n);
    }
    double worst = 0;
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        double r = which == 0 ? silu_d(x[i]) : which == 1 ? sigmoid_d(x[i]) : silu_grad_d(x[i]);
        double u = ulp_of(fmax(fabs(r), floor_));
        double e = fabs(y[i] - r) / u;
        if (!(e <= worst)) worst = e, at = i;
    }
    CHECK(worst <= max_ulp, "%s: %.2f ulp at x = %.9g (got %.9g)", name, worst, x[at], y[at]);
    if (getenv("CN_TEST_VERBOSE")) printf("  %s: max %.2f ulp at x = %.9g\n", name, worst, x[at]);
    free(y);
    free(dy);
}

static void act_tests(void) {
    size_t n = 2000001;
    float *x = malloc(sizeof(float) * n);
    for (size_t i = 0; i < n; i++) x[i] = (float)(-100.0 + 200.0 * i / (n - 1));
    act_accuracy("silu [-100,100]", 0, x, n, 4, 0);
    act_accuracy("sigmoid [-100,100]", 1, x, n, 4, 0);
    act_accuracy("silu' [-100,100]", 2, x, n, 8, 0.1);
    /* dense near 0 and around the underflow of e^x */
    for (size_t i = 0; i < n; i++) x[i] = (float)(-1.0 + 2.0 * i / (n - 1));
    act_accuracy("silu [-1,1]", 0, x, n, 4, 0);
    act_accuracy("sigmoid [-1,1]", 1, x, n, 4, 0);
    for (size_t i = 0; i < n; i++) x[i] = (float)(-110.0 + 30.0 * i / (n - 1));
    act_accuracy("silu [-110,-80]", 0, x, n, 4, 0);
    act_accuracy("sigmoid [-110,-80]", 1, x, n, 4, 0);
    act_accuracy("silu' [-110,-80]", 2, x, n, 8, 0);
    free(x);

    /* extremes */
    float ex[] = {0.0f, -0.0f, 1e-30f, -1e-30f, 1e-40f, -1e-40f, 88.0f, 89.0f, -88.0f, -89.0f,
                  100.0f, -100.0f, 1e30f, -1e30f, FLT_MAX, -FLT_MAX, INFINITY, -INFINITY};
    int ne = (int)(sizeof ex / sizeof ex[0]);
    float y[32], s[32], g[32], one[32];
    for (int i = 0; i < ne; i++) one[i] = 1.0f, g[i] = 0.0f;
    cn_silu_forward(y, ex, ne);
    cn_sigmoid_forward(s, ex, ne);
    cn_silu_backward(g, one, ex, ne);
    for (int i = 0; i < ne; i++) {
        double xs = ex[i];
        double rs = isinf(xs) ? (xs > 0 ? 1 : 0) : sigmoid_d(xs);
        double ry = isinf(xs) ? (xs > 0 ? INFINITY : 0) : silu_d(xs);
        double rg = isinf(xs) ? (xs > 0 ? 1 : 0) : silu_grad_d(xs);
        CHECK(s[i] == s[i] && fabs(s[i] - rs) <= 4 * ulp_of(rs), "sigmoid(%g) = %g, want %g", xs,
              s[i], rs);
        CHECK(y[i] == y[i] && (isinf(ry) ? y[i] == ry : fabs(y[i] - ry) <= 4 * ulp_of(ry)),
              "silu(%g) = %g, want %g", xs, y[i], ry);
        CHECK(g[i] == g[i] && fabs(g[i] - rg) <= 8 * ulp_of(fmax(fabs(rg), 0.1)),
              "silu'(%g) = %g, want %g", xs, g[i], rg);
    }
    /* the same with no lane below -87 (the AVX2 kernels' shorter road) and NaN among them */
    float fx[16] = {0.0f, -0.0f, 1e-30f, -1e-30f, 1e-40f, -1e-40f, 88.0f, 89.0f,
                    100.0f, 1e30f, FLT_MAX, INFINITY, -86.9f, -87.0f, -1.5f, NAN};
    float fy[16], fs[16], fg[16], fone[16];
    for (int i = 0; i < 16; i++) fone[i] = 1.0f, fg[i] = 0.0f;
    cn_silu_forward(fy, fx, 16);
    cn_sigmoid_forward(fs, fx, 16);
    cn_silu_backward(fg, fone, fx, 16);
    for (int i = 0; i < 15; i++) {
        double xs = fx[i];
        double rs = isinf(xs) ? 1 : sigmoid_d(xs), ry = isinf(xs) ? INFINITY : silu_d(xs);
        CHECK(fs[i] == fs[i] && fabs(fs[i] - rs) <= 4 * ulp_of(rs), "sigmoid(%g) = %g, want %g",
              xs, fs[i], rs);
        CHECK(fy[i] == fy[i] && (isinf(ry) ? fy[i] == ry : fabs(fy[i] - ry) <= 4 * ulp_of(ry)),
              "silu(%g) = %g, want %g", xs, fy[i], ry);
        CHECK(signbit(fy[i]) == signbit(fx[i]), "silu(%g) = %g: sign", xs, fy[i]);
        double rg = isinf(xs) ? 1 : silu_grad_d(xs);
        CHECK(fg[i] == fg[i] && fabs(fg[i] - rg) <= 8 * ulp_of(fmax(fabs(rg), 0.1)),
              "silu'(%g) = %g, want %g", xs, fg[i], rg);
    }
    CHECK(fy[15] != fy[15] && fs[15] != fs[15] && fg[15] != fg[15],
          "silu/sigmoid/silu'(nan) among finite lanes = %g, %g, %g", fy[15], fs[15], fg[15]);
    float nan_in = NAN, nan_out;
    cn_silu_forward(&nan_out, &nan_in, 1);
    CHECK(nan_out != nan_out, "silu(nan) = %g", nan_out);
    cn_sigmoid_forward(&nan_out, &nan_in, 1);
    CHECK(nan_out != nan_out, "sigmoid(nan) = %g", nan_out);
}

#include "gradcheck.h"

/* -- silu, sigmoid -- */
typedef struct elt_ctx {
    float *x, *dx;
    size_t n;
    int kind; /* 0 silu, 1 sigmoid */
} elt_ctx;

static void elt_fwd(void *p, float *out) {
    elt_ctx *e = p;
    if (e->kind == 0) cn_silu_forward(out, e->x, e->n);
    else cn_sigmoid_forward(out, e->x, e->n);
}

static void elt_bwd(void *p, const float *dout, const float *out) {
    elt_ctx *e = p;
    if (e->kind == 0) cn_silu_backward(e->dx, dout, e->x, e->n);
    else cn_sigmoid_backward(e->dx, dout, out, e->n);
}

static void elt_gc(int kind, size_t n, float scale) {
    elt_ctx e = {randv(n, scale), NULL, n, kind};
    gc_op op = {elt_fwd, elt_bwd, &e, n, {{0}}, 0};
    e.dx = malloc(sizeof(float) * n);
    op.t[op.nt++] = (gc_tensor){"x", e.x, e.dx, n};
    char label[64];
    snprintf(label, sizeof label, "%s n%zu scale %g", kind ? "sigmoid" : "silu", n, scale);
    gradcheck(label, &op, 1e-2f, TOL_NONLIN);
    free(e.x);
    free(e.dx);
}

/* -- channel scale -- */
typedef struct scale_ctx {
    float *x, *s, *dx, *ds;
    int n, hw, c;
} scale_ctx;

static void scale_fwd(void *p, float *out) {
    scale_ctx *k = p;
    cn_scale_forward(out, k->x, k->s, k->n, k->hw, k->c);
}

static void scale_bwd(void *p, const float *dout, const float *out) {
    scale_ctx *k = p;
    (void)out;
    cn_scale_backward(k->dx, k->ds, dout, k->x, k->s, k->n, k->hw, k->c);
}

static void scale_gc(int n, int hw, int c, int which) {
    size_t nx = (size_t)n * hw * c, ns = (size_t)n * c;
    scale_ctx k = {randv(nx, 1), randv(ns, 1), NULL, NULL, n, hw, c};
    gc_op op = {scale_fwd, scale_bwd, &k, nx, {{0}}, 0};
    k.dx = malloc(sizeof(float) * nx);
    k.ds = malloc(sizeof(float) * ns);
    if (which & 1) op.t[op.nt++] = (gc_tensor){"x", k.x, k.dx, nx};
    else free(k.dx), k.dx = NULL;
    if (which & 2) op.t[op.nt++] = (gc_tensor){"s", k.s, k.ds, ns};
    else free(k.ds), k.ds = NULL;
    char label[64];
    snprintf(label, sizeof label, "scale n%d hw%d c%d g%d", n, hw, c, which);
    gradcheck(label, &op, 1e-2f, TOL_LIN);
    free(k.x); free(k.s); free(k.dx); free(k.ds);
}

/* -- mask multiply -- */
typedef struct mask_ctx {
    float *x, *dx, *mask;
    size_t n, per;
} mask_ctx;

static void mask_fwd(void *p, float *out) {
    mask_ctx *k = p;
    cn_mask_forward(out, k->x, k->mask, k->n, k->per);
}

static void mask_bwd(void *p, const float *dout, const float *out) {
    mask_ctx *k = p;
    (void)out;
    cn_mask_backward(k->dx, dout, k->mask, k->n, k->per);
}

static void mask_gc(size_t n, size_t per, float prob) {
    mask_ctx k = {randv(n, 1), malloc(sizeof(float) * n), malloc(sizeof(float) * (n / per)), n,
                  per};
    cn_dropout_mask(k.mask, n / per, prob, 7, 3, n);
    gc_op op = {mask_fwd, mask_bwd, &k, n, {{0}}, 0};
    op.t[op.nt++] = (gc_tensor){"x", k.x, k.dx, n};
    char label[64];
    snprintf(label, sizeof label, "mask n%zu per%zu p%g", n, per, prob);
    gradcheck(label, &op, 1e-2f, TOL_LIN);
    /* values: y = x * mask[i / per] exactly */
    float *y = malloc(sizeof(float) * n);
    cn_mask_forward(y, k.x, k.mask, n, per);
    int bad = 0;
    for (size_t i = 0; i < n; i++) bad += y[i] != k.x[i] * k.mask[i / per];
    CHECK(!bad, "%s: %d values differ from x * mask", label, bad);
    free(y); free(k.x); free(k.dx); free(k.mask);
}

/* -- batch norm with a fused activation, training mode -- */
typedef struct bn_ctx {
    float *x, *gamma, *beta, *dx, *dgamma, *dbeta, *save, *rm, *rv;
    size_t m;
    int c;
    cn_act act;
    void *scratch;
} bn_ctx;

static void bn_fwd(void *p, float *out) {
    bn_ctx *b = p;
    cn_batchnorm_act_forward_train(out, b->save, b->rm, b->rv, b->x, b->gamma, b->beta, b->m, b->c,
                                   1e-5f, 0.1f, b->scratch, b->act);
}

static void bn_bwd(void *p, const float *dout, const float *out) {
    bn_ctx *b = p;
    cn_batchnorm_act_backward_train(b->dx, b->dgamma, b->dbeta, dout, b->x, b->gamma, b->beta,
                                    b->save, b->m, b->c, b->scratch, b->act, out);
}

static void bn_act_gc(int n, int hw, int c, cn_act act) {
    size_t m = (size_t)n * hw;
    bn_ctx b;
    b.m = m, b.c = c, b.act = act;
    b.x = malloc(sizeof(float) * m * c);
    for (int j = 0; j < c; j++) {
        float mu = urand(-1, 1), sd = urand(0.5f, 2);
        for (size_t i = 0; i < m; i++) b.x[i * c + j] = mu + sd * cn_rng_normal(&rng);
    }
    b.gamma = randv(c, 1);
    b.beta = randv(c, 1);
    b.dx = malloc(sizeof(float) * m * c);
    b.dgamma = malloc(sizeof(float) * c);
    b.dbeta = malloc(sizeof(float) * c);
    b.save = malloc(sizeof(float) * 2 * c);
    b.rm = randv(c, 1);
    b.rv = malloc(sizeof(float) * c);
    for (int j = 0; j < c; j++) b.rv[j] = urand(0.3f, 3);
    b.scratch = malloc(cn_batchnorm_scratch(c));
    gc_op op = {bn_fwd, bn_bwd, &b, m * c, {{0}}, 0};
    op.t[op.nt++] = (gc_tensor){"x", b.x, b.dx, m * c};
    op.t[op.nt++] = (gc_tensor){"gamma", b.gamma, b.dgamma, (size_t)c};
    op.t[op.nt++] = (gc_tensor){"beta", b.beta, b.dbeta, (size_t)c};
    char label[64];
    snprintf(label, sizeof label, "batchnorm+%s n%d hw%d c%d", act == CN_ACT_SILU ? "silu" : "relu",
             n, hw, c);
    /* a ReLU kink crossed by a perturbation spoils one difference: small steps */
    gradcheck(label, &op, act == CN_ACT_RELU ? 2e-3f : 1e-2f, TOL_NONLIN);

    /* the fused forward is the activation of the plain batch norm's output, bit for bit, in
     * training and in evaluation; the ReLU wrapper is the same as CN_ACT_RELU */
    size_t nt = m * c;
    float *y = malloc(sizeof(float) * nt), *z = malloc(sizeof(float) * nt),
          *a = malloc(sizeof(float) * nt);
    for (int train = 0; train < 2; train++) {
        if (train) {
            cn_batchnorm_act_forward_train(y, b.save, NULL, NULL, b.x, b.gamma, b.beta, m, c,
                                           1e-5f, 0.1f, b.scratch, act);
            cn_batchnorm_forward_train(z, b.save, NULL, NULL, b.x, b.gamma, b.beta, m, c, 1e-5f,
                                       0.1f, b.scratch);
        } else {
            cn_batchnorm_act_forward_eval(y, b.x, b.gamma, b.beta, b.rm, b.rv, m, c, 1e-5f,
                                          b.scratch, act);
            cn_batchnorm_forward_eval(z, b.x, b.gamma, b.beta, b.rm, b.rv, m, c, 1e-5f, b.scratch);
        }
        if (act == CN_ACT_SILU) cn_silu_forward(a, z, nt);
        else cn_relu_forward(a, z, nt);
        CHECK(!memcmp(y, a, sizeof(float) * nt), "%s: fused %s forward differs from bn then act",
              label, train ? "train" : "eval");
    }
    if (act == CN_ACT_RELU) {
        cn_batchnorm_relu_forward_train(z, b.save, NULL, NULL, b.x, b.gamma, b.beta, m, c, 1e-5f,
                                        0.1f, b.scratch, 1);
        cn_batchnorm_act_forward_train(y, b.save, NULL, NULL, b.x, b.gamma, b.beta, m, c, 1e-5f,
                                       0.1f, b.scratch, CN_ACT_RELU);
        CHECK(!memcmp(y, z, sizeof(float) * nt), "%s: relu wrapper forward differs", label);
        float *dy = randv(nt, 1), *dx1 = calloc(nt, sizeof(float)), *dx2 = calloc(nt, sizeof(float));
        cn_batchnorm_relu_backward_train(dx1, NULL, NULL, dy, b.x, b.gamma, b.save, m, c, b.scratch,
                                         y);
        cn_batchnorm_act_backward_train(dx2, NULL, NULL, dy, b.x, b.gamma, b.beta, b.save, m, c,
                                        b.scratch, CN_ACT_RELU, y);
        CHECK(!memcmp(dx1, dx2, sizeof(float) * nt), "%s: relu wrapper backward differs", label);
        free(dy); free(dx1); free(dx2);
    }
    free(y); free(z); free(a);
    free(b.x); free(b.gamma); free(b.beta); free(b.dx); free(b.dgamma); free(b.dbeta);
    free(b.save); free(b.rm); free(b.rv); free(b.scratch);
}

/* ---- dropout masks ---- */
static void dropout_tests(void) {
    size_t n = 100000;
    float *m1 = malloc(sizeof(float) * n), *m2 = malloc(sizeof(float) * n);
    float ps[] = {0.1f, 0.2f, 0.5f, 0.9f};
    for (int k = 0; k < 4; k++) {
        float p = ps[k], keep = (float)(1.0 / (1.0 - p));
        cn_dropout_mask(m1, n, p, 42, 5, 17);
        size_t zeros = 0, bad = 0;
        for (size_t i = 0; i < n; i++) {
            zeros += m1[i] == 0.0f;
            bad += m1[i] != 0.0f && m1[i] != keep;
        }
        double frac = (double)zeros / n, sd = sqrt(p * (1.0 - p) / n);
        CHECK(fabs(frac - p) < 5 * sd, "dropout p%g: fraction of zeros %g", p, frac);
        CHECK(!bad, "dropout p%g: %zu values neither 0 nor 1/(1-p)", p, bad);
        /* the same (seed, stream, step) gives the same mask, on 1 or 2 threads */
        int threads = omp_get_max_threads();
        omp_set_num_threads(k % 2 ? 1 : 2);
        cn_dropout_mask(m2, n, p, 42, 5, 17);
        omp_set_num_threads(threads);
        CHECK(!memcmp(m1, m2, sizeof(float) * n), "dropout p%g: not deterministic", p);
        /* a prefix is the same mask (values depend on the index only) */
        cn_dropout_mask(m2, 1000, p, 42, 5, 17);
        CHECK(!memcmp(m1, m2, sizeof(float) * 1000), "dropout p%g: prefix differs", p);
        size_t diff = 0;
        cn_dropout_mask(m2, n, p, 42, 5, 18);
        for (size_t i = 0; i < n; i++) diff += m1[i] != m2[i];
        CHECK(diff > n * p * (1 - p), "dropout p%g: next step differs in only %zu", p, diff);
        diff = 0;
        cn_dropout_mask(m2, n, p, 42, 6, 17);
        for (size_t i = 0; i < n; i++) diff += m1[i] != m2[i];
        CHECK(diff > n * p * (1 - p), "dropout p%g: other stream differs in only %zu", p, diff);
        diff = 0;
        cn_dropout_mask(m2, n, p, 43, 5, 17);
        for (size_t i = 0; i < n; i++) diff += m1[i] != m2[i];
        CHECK(diff > n * p * (1 - p), "dropout p%g: other seed differs in only %zu", p, diff);
    }
    float edge[] = {0.0f, -0.5f, 1.0f, 1.5f};
    for (int k = 0; k < 4; k++) {
        cn_dropout_mask(m1, n, edge[k], 1, 2, 3);
        float want = edge[k] >= 1 ? 0.0f : 1.0f;
        size_t bad = 0;
        for (size_t i = 0; i < n; i++) bad += m1[i] != want;
        CHECK(!bad, "dropout p%g: %zu values not %g", edge[k], bad, want);
    }
    free(m1);
    free(m2);
}


/* cn_dwconv_forward_fused with every epilogue (BN affine, residual, ReLU / SiLU / sigmoid or
 * none, pool) against a double reference: the fast kernels where the CPU has them (AVX-512, or
 * AVX2 + FMA), the portable ones under CN_CPU=generic; the output and the pool the same bits at 1
 * and 3 threads */
static void dw_epi_case(int n, int h, int w, int c, int k, int s, int act, int res, int pool) {
    cn_conv_desc d = {n, h, w, c, c, k, k, s, s, k / 2, k / 2, c, 0, 0};
    char label[160];
    snprintf(label, sizeof label, "dw epilogue n%d %dx%dx%d k%d s%d act%d res%d pool%d", n, h, w,
             c, k, s, act, res, pool);
    if (!cn_conv_desc_init(&d)) {
        CHECK(0, "%s: desc rejected", label);
        return;
    }
    const size_t nin = (size_t)n * h * w * c, nout = (size_t)n * d.oh * d.ow * c;
    const size_t nw = (size_t)c * k * k;
    float *in = randv(nin, 1), *wt = randv(nw, 0.3f), *sc = randv(c, 1), *sh = randv(c, 1);
    float *r = res ? randv(nout, 1) : NULL, *dout = randv(nout, 1);
    double *rout = malloc(sizeof(double) * nout), *rdin = malloc(sizeof(double) * nin),
           *rdw = malloc(sizeof(double) * nw), *rdb = malloc(sizeof(double) * c),
           *rpool = calloc((size_t)n * c, sizeof(double));
    dw_ref(rout, rdin, rdw, rdb, in, wt, NULL, dout, &d);
    const size_t hw = (size_t)d.oh * d.ow;
    for (size_t i = 0; i < nout; i++) {
        const int ch = (int)(i % (size_t)c);
        double v = rout[i] * sc[ch] + sh[ch] + (r ? r[i] : 0.0);
        if (act == CN_ACT_RELU) v = v < 0 ? 0 : v;
        else if (act == CN_ACT_SILU) v = silu_d(v);
        else if (act == CN_ACT_SIGMOID) v = sigmoid_d(v);
        rout[i] = v;
        rpool[i / (hw * (size_t)c) * (size_t)c + (size_t)ch] += v / (double)hw;
    }
    float *out[2], *pl[2];
    for (int t = 0; t < 2; t++) {
        const int threads = t ? 3 : 1;
        out[t] = malloc(sizeof(float) * nout);
        pl[t] = pool ? malloc(sizeof(float) * (size_t)n * c) : NULL;
        for (size_t i = 0; i < nout; i++) out[t][i] = NAN;
        const size_t nf = cn_conv2d_workspace(&d, threads, 0);
        float *ws = NULL;
        if (posix_memalign((void **)&ws, 64, sizeof(float) * (nf ? nf : 1))) ws = NULL;
        const cn_epilogue ep = {sc, sh, r, (cn_act)act, pl[t]};
        cn_dwconv_forward_fused(out[t], in, wt, &ep, &d, ws, threads);
        free(ws);
    }
    const double e = rel_err_d(out[0], rout, nout);
    CHECK(e < 1e-5, "%s: rel err %g", label, e);
    CHECK(!memcmp(out[0], out[1], sizeof(float) * nout), "%s: 1 and 3 threads differ", label);
    if (pool) {
        const double ep = rel_err_d(pl[0], rpool, (size_t)n * c);
        CHECK(ep < 1e-5, "%s: pool rel err %g", label, ep);
        CHECK(!memcmp(pl[0], pl[1], sizeof(float) * (size_t)n * c), "%s: pool: 1 and 3 threads differ",
              label);
    }
    free(in), free(wt), free(sc), free(sh), free(r), free(dout), free(rout), free(rdin), free(rdw);
    free(rdb), free(rpool);
    for (int t = 0; t < 2; t++) free(out[t]), free(pl[t]);
}

static void dw_epi_tests(void) {
    const int acts[4] = {CN_ACT_NONE, CN_ACT_RELU, CN_ACT_SILU, CN_ACT_SIGMOID};
    for (int k = 3; k <= 5; k += 2)
        for (int s = 1; s <= 2; s++)
            for (int a = 0; a < 4; a++) {
                /* channel tails of 1 to 15 past a block, and whole blocks; odd widths for the
                 * pixel blocks' remainders */
                dw_epi_case(2, 11, 13, 40, k, s, acts[a], a & 1, 1);
                dw_epi_case(1, 9, 17, 5, k, s, acts[a], 1, a & 1);
                dw_epi_case(2, 7, 6, 16, k, s, acts[a], a >> 1, 1);
                dw_epi_case(1, 14, 14, 33, k, s, acts[a], 0, 1);
                dw_epi_case(3, 3, 4, 9, k, s, acts[a], 1, 1);
            }
    /* B0's shapes: 96 channels 3x3 s2, 240 channels 5x5 s1, 1152 at 7x7 */
    dw_epi_case(1, 112, 112, 96, 3, 2, CN_ACT_SILU, 0, 1);
    dw_epi_case(2, 28, 28, 240, 5, 1, CN_ACT_SILU, 0, 1);
    dw_epi_case(2, 7, 7, 1152, 5, 1, CN_ACT_SILU, 1, 1);
}


/* cn_expand_dw_forward against cn_conv2d_forward_fused (the 1x1 expansion, SiLU) then
 * cn_dwconv_forward_fused (BN affine, SiLU, pool) */
static void expand_dw_case(int n, int h, int w, int cin, int ce, int k, int s, int threads,
                           int pool) {
    if (!cn_expand_dw_fusable(k, s)) return; /* no AVX-512 or AVX2 depthwise kernels here */
    cn_conv_desc de = {n, h, w, cin, ce, 1, 1, 1, 1, 0, 0, 1, 0, 0};
    cn_conv_desc dd = {n, h, w, ce, ce, k, k, s, s, k / 2, k / 2, ce, 0, 0};
    if (!cn_conv_desc_init(&de) || !cn_conv_desc_init(&dd)) {
        CHECK(0, "expand-dw desc rejected");
        return;
    }
    const size_t nin = (size_t)n * h * w * cin, nmid = (size_t)n * h * w * ce;
    const size_t nout = (size_t)n * dd.oh * dd.ow * ce;
    float *in = randv(nin, 1), *we = randv((size_t)ce * cin, 0.5f), *wd = randv((size_t)ce * k * k, 0.3f);
    float *sc1 = randv(ce, 1), *sh1 = randv(ce, 1), *sc2 = randv(ce, 1), *sh2 = randv(ce, 1);
    float *mid = malloc(sizeof(float) * nmid), *want = malloc(sizeof(float) * nout);
    float *got = malloc(sizeof(float) * nout);
    float *pw = malloc(sizeof(float) * n * ce), *pg = malloc(sizeof(float) * n * ce);
    size_t wsz = cn_conv2d_workspace(&de, threads, 0);
    if (cn_conv2d_workspace(&dd, threads, 0) > wsz) wsz = cn_conv2d_workspace(&dd, threads, 0);
    if (cn_expand_dw_workspace(&de, &dd, threads) > wsz) wsz = cn_expand_dw_workspace(&de, &dd, threads);
    float *ws = NULL;
    if (posix_memalign((void **)&ws, 64, sizeof(float) * wsz)) ws = NULL;
    const cn_epilogue e1 = {sc1, sh1, NULL, CN_ACT_SILU, NULL};
    const cn_epilogue w2 = {sc2, sh2, NULL, CN_ACT_SILU, pool ? pw : NULL};
    const cn_epilogue g2 = {sc2, sh2, NULL, CN_ACT_SILU, pool ? pg : NULL};
    cn_conv2d_forward_fused(mid, in, we, &e1, &de, ws, threads);
    cn_conv2d_forward_fused(want, mid, wd, &w2, &dd, ws, threads);
    for (size_t i = 0; i < nout; i++) got[i] = NAN;
    cn_expand_dw_forward(got, in, we, &e1, &de, wd, &g2, &dd, ws, threads);
    const double e = max_rel_err(got, want, nout, 1e-6);
    CHECK(e < 1e-6, "expand-dw n%d %dx%dx%d->%d k%d s%d t%d: rel err %g", n, h, w, cin, ce, k, s,
          threads, e);
    if (pool) {
        const double ep = max_rel_err(pg, pw, (size_t)n * ce, 1e-6);
        CHECK(ep < 1e-6, "expand-dw n%d %dx%dx%d->%d k%d s%d t%d: pool rel err %g", n, h, w, cin,
              ce, k, s, threads, ep);
    }
    free(in), free(we), free(wd), free(sc1), free(sh1), free(sc2), free(sh2);
    free(mid), free(want), free(got), free(pw), free(pg), free(ws);
}

static void expand_dw_tests(void) {
    expand_dw_case(1, 112, 112, 16, 96, 3, 2, 2, 1); /* B0's second stage: 19 bands, carried */
    expand_dw_case(1, 56, 56, 24, 144, 3, 1, 2, 1);  /* stride 1: two rows carried */
    expand_dw_case(1, 56, 56, 24, 144, 5, 2, 3, 1);
    expand_dw_case(2, 30, 17, 8, 40, 5, 1, 2, 1);    /* a channel tail */
    expand_dw_case(3, 7, 7, 12, 20, 3, 1, 2, 0);     /* one band an image */
    expand_dw_case(1, 5, 9, 4, 33, 3, 2, 3, 1);      /* 3 rows for 3 threads */
    expand_dw_case(1, 4, 6, 4, 17, 5, 1, 8, 1);      /* more threads than rows */
    expand_dw_case(2, 60, 40, 16, 200, 3, 1, 1, 1);  /* one thread, many bands */
}

int main(void) {
    rng = cn_rng_make(2024, 0, 0);
    dw_tests();
    act_tests();
    elt_gc(0, 1, 1);
    elt_gc(0, 37, 3);
    elt_gc(0, 40000, 4); /* parallel blocks */
    elt_gc(1, 1, 1);
    elt_gc(1, 37, 3);
    elt_gc(1, 40000, 4);
    scale_gc(1, 1, 1, 3);
    scale_gc(2, 5, 7, 3);
    scale_gc(3, 49, 70, 3); /* more than one channel block, with a tail */
    scale_gc(2, 5, 7, 1);
    scale_gc(2, 5, 7, 2);
    scale_gc(2, 200, 96, 3); /* parallel */
    mask_gc(1, 1, 0.5f);
    mask_gc(37, 1, 0.3f);
    mask_gc(40000, 1, 0.2f);
    mask_gc(3 * 2 * 2 * 5, 2 * 2 * 5, 0.5f);
    mask_gc(4 * 8000, 8000, 0.5f);
    mask_gc(12, 12, 0.0f);
    bn_act_gc(3, 1, 5, CN_ACT_SILU);
    bn_act_gc(2, 9, 17, CN_ACT_SILU);
    bn_act_gc(4, 25, 3, CN_ACT_SILU);
    bn_act_gc(3, 1, 5, CN_ACT_RELU);
    bn_act_gc(2, 9, 17, CN_ACT_RELU);
    bn_act_gc(4, 25, 3, CN_ACT_RELU);
    dropout_tests();
    expand_dw_tests();
    dw_epi_tests();
    /* last, so that the random values of the checks above stay as they were */
    scale_gc(5, 120, 100, 3); /* images enough for the threads: one image a task */
    {
        /* the two ways of splitting the backward (whole images, or image x channel block: with
         * many threads for few images) give the same bits */
        const int n = 5, hw = 120, c = 100;
        const size_t nx = (size_t)n * hw * c, ns = (size_t)n * c;
        float *x = randv(nx, 1), *s = randv(ns, 1), *dy = randv(nx, 1);
        float *dx1 = calloc(nx, sizeof(float)), *dx2 = calloc(nx, sizeof(float));
        float *ds1 = calloc(ns, sizeof(float)), *ds2 = calloc(ns, sizeof(float));
        const int t0 = omp_get_max_threads();
        omp_set_num_threads(1);
        cn_scale_backward(dx1, ds1, dy, x, s, n, hw, c);
        omp_set_num_threads(16);
        cn_scale_backward(dx2, ds2, dy, x, s, n, hw, c);
        omp_set_num_threads(t0);
        CHECK(!memcmp(dx1, dx2, sizeof(float) * nx) && !memcmp(ds1, ds2, sizeof(float) * ns),
              "scale backward: whole images and channel blocks differ");
        free(x); free(s); free(dy); free(dx1); free(dx2); free(ds1); free(ds2);
    }
    int rc = check_summary("ops-effnet");
    fflush(stdout); /* the line must get out even if LeakSanitizer ends the process at exit */
    return rc;
}
