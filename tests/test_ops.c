/* Ops against naive references and finite differences.
 * - conv2d forward/backward (im2col+GEMM, depthwise) vs direct double-precision loops, on awkward
 *   shapes: strides, padding, groups, depthwise, 1x1 maps, odd sizes, tails, several threads.
 * - finite-difference gradient checks of every op's backward (in double-accumulated central
 *   differences of a random projection of the output). */
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core/cpu.h"
#include "core/mem.h"
#include "core/rng.h"
#include "kernels/act.h"
#include "kernels/bn.h"
#include "kernels/conv_direct.h"
#include "kernels/winograd.h"
#include "kernels/gemm.h"
#include "ops/ops.h"

static cn_rng rng;

static float *randv(size_t n, float scale) {
    float *v = malloc(sizeof(float) * (n ? n : 1));
    for (size_t i = 0; i < n; i++) v[i] = scale * cn_rng_normal(&rng);
    return v;
}

/* din/dw/db of a direct convolution in double precision */
static void conv_backward_ref(double *din, double *dw, double *db, const float *dout,
                              const float *in, const float *w, const cn_conv_desc *d) {
    int cg = d->c / d->groups, ocg = d->oc / d->groups;
    for (int n = 0; n < d->n; n++)
        for (int oy = 0; oy < d->oh; oy++)
            for (int ox = 0; ox < d->ow; ox++)
                for (int o = 0; o < d->oc; o++) {
                    int g = o / ocg;
                    double go = dout[(((size_t)n * d->oh + oy) * d->ow + ox) * d->oc + o];
                    db[o] += go;
                    for (int ky = 0; ky < d->kh; ky++)
                        for (int kx = 0; kx < d->kw; kx++) {
                            int iy = oy * d->sh - d->ph + ky, ix = ox * d->sw - d->pw + kx;
                            if (iy < 0 || iy >= d->h || ix < 0 || ix >= d->w) continue;
                            for (int ci = 0; ci < cg; ci++) {
                                size_t ii = (((size_t)n * d->h + iy) * d->w + ix) * d->c + g * cg + ci;
                                size_t wi = (((size_t)o * d->kh + ky) * d->kw + kx) * cg + ci;
                                din[ii] += go * w[wi];
                                dw[wi] += go * in[ii];
                            }
                        }
                }
}

static double rel_err_d(const float *a, const double *b, size_t n) {
    double md = 0, mb = 1e-6;
    for (size_t i = 0; i < n; i++) {
        double dd = fabs(a[i] - b[i]);
        if (dd > md || dd != dd) md = dd;
        if (fabs(b[i]) > mb) mb = fabs(b[i]);
    }
    return md / mb;
}

static void conv_case(int n, int h, int w, int c, int oc, int k, int s, int p, int groups,
                      int threads) {
    cn_conv_desc d = {n, h, w, c, oc, k, k, s, s, p, p, groups, 0, 0};
    if (!cn_conv_desc_init(&d)) {
        CHECK(0, "conv desc rejected");
        return;
    }
    size_t nin = (size_t)n * h * w * c, nout = (size_t)n * d.oh * d.ow * oc;
    size_t nw = (size_t)oc * k * k * (c / groups);
    float *in = randv(nin, 1), *wt = randv(nw, 0.3f), *bias = randv(oc, 1), *dout = randv(nout, 1);
    float *out = malloc(sizeof(float) * nout), *ref = malloc(sizeof(float) * nout);
    float *ws = malloc(sizeof(float) * (cn_conv2d_workspace(&d, threads, 1) + 1));
    cn_conv2d_forward(out, in, wt, bias, &d, ws, threads);
    cn_conv2d_forward_ref(ref, in, wt, bias, &d);
    double ef = max_rel_err(out, ref, nout, 1e-6);
    CHECK(ef < 1e-5, "conv fwd n%d %dx%dx%d->%d k%d s%d p%d g%d t%d: rel err %g", n, h, w, c, oc,
          k, s, p, groups, threads, ef);
    /* a training step's forward and data gradient take Winograd F(4x4, 3x3) where it pays: its
     * error bound is the Winograd tests' (test_winograd.c, 1e-4 on ResNet's layers), the direct
     * paths keep 1e-5 */
    const int wino = cn_wino_train_wanted(&d, threads);
    const double tol = wino ? 1e-4 : 1e-5;
    {
        float *ft = malloc(sizeof(float) * nout);
        cn_conv2d_forward_train(ft, in, wt, bias, &d, ws, threads);
        double et = max_rel_err(ft, ref, nout, 1e-6);
        CHECK(et < tol, "conv train fwd n%d %dx%dx%d->%d k%d s%d p%d g%d t%d wino %d: rel err %g",
              n, h, w, c, oc, k, s, p, groups, threads, wino, et);
        free(ft);
    }
    /* the inference epilogue: act(conv * scale + shift + res) against the reference conv with
     * the same arithmetic done afterwards in double, for every activation */
    {
        float *scale = randv(oc, 1), *shift = randv(oc, 1), *res = randv(nout, 1);
        float *fo = malloc(sizeof(float) * nout), *want = malloc(sizeof(float) * nout);
        cn_conv2d_forward_ref(ref, in, wt, NULL, &d);
        for (int act = CN_ACT_NONE; act <= CN_ACT_SIGMOID; act++) {
            /* and the pool of the output (cn_epilogue.pool) on all but the ReLU case */
            float *pool = malloc(sizeof(float) * n * oc);
            cn_epilogue ep = {scale, shift, act == CN_ACT_RELU ? NULL : res, (cn_act)act,
                              act == CN_ACT_RELU ? NULL : pool};
            cn_conv2d_forward_fused(fo, in, wt, &ep, &d, ws, threads);
            double vmax = 0;
            for (size_t i = 0; i < nout; i++) {
                int ch = (int)(i % oc);
                double v = (double)ref[i] * scale[ch] + shift[ch] + (ep.res ? res[i] : 0);
                vmax = fabs(v) > vmax ? fabs(v) : vmax;
                if (act == CN_ACT_RELU) v = v < 0 ? 0 : v;
                if (act == CN_ACT_SILU) v = v / (1 + exp(-v));
                if (act == CN_ACT_SIGMOID) v = 1 / (1 + exp(-v));
                want[i] = (float)v;
            }
            /* the sigmoid's outputs are below 1 while its inputs (a K = 9C float sum) reach
             * tens: their rounding reaches the output through a slope of at most 1/4, so its
             * error is taken against that scale of the input */
            double e = max_rel_err(fo, want, nout, act == CN_ACT_SIGMOID ? 0.25 * vmax : 1e-6);
            CHECK(e < 1e-5, "fused conv n%d %dx%dx%d->%d k%d s%d g%d t%d act %d: rel err %g", n, h,
                  w, c, oc, k, s, groups, threads, act, e);
            if (ep.pool) {
                const size_t hw = (size_t)d.oh * d.ow;
                float *pw = calloc((size_t)n * oc, sizeof(float));
                for (int im = 0; im < n; im++)
                    for (int ch = 0; ch < oc; ch++) {
                        double acc = 0;
                        for (size_t px = 0; px < hw; px++) acc += want[((size_t)im * hw + px) * oc + ch];
                        pw[(size_t)im * oc + ch] = (float)(acc / (double)hw);
                    }
                /* a mean of terms of both signs can be near zero (one channel: one mean an
                 * image): its rounding is taken against the terms' scale */
                double wmax = 1e-6;
                for (size_t i = 0; i < nout; i++) wmax = fmax(wmax, fabs((double)want[i]));
                double ep_err = max_rel_err(pool, pw, (size_t)n * oc, wmax);
                CHECK(ep_err < 1e-5, "fused conv n%d %dx%dx%d->%d k%d s%d g%d t%d act %d: pool rel err %g",
                      n, h, w, c, oc, k, s, groups, threads, act, ep_err);
                free(pw);
            }
            free(pool);
        }
        free(scale); free(shift); free(res); free(fo); free(want);
    }
    /* backward accumulates: start from a known non-zero value */
    float *din = malloc(sizeof(float) * nin), *dw = malloc(sizeof(float) * nw),
          *db = malloc(sizeof(float) * oc);
    double *rdin = calloc(nin, sizeof(double)), *rdw = calloc(nw, sizeof(double)),
           *rdb = calloc(oc, sizeof(double));
    for (size_t i = 0; i < nin; i++) din[i] = 0.5f, rdin[i] = 0.5;
    for (size_t i = 0; i < nw; i++) dw[i] = 0.25f, rdw[i] = 0.25;
    for (int i = 0; i < oc; i++) db[i] = 1, rdb[i] = 1;
    cn_conv2d_backward(din, dw, db, dout, in, wt, &d, ws, threads);
    conv_backward_ref(rdin, rdw, rdb, dout, in, wt, &d);
    double e1 = rel_err_d(din, rdin, nin), e2 = rel_err_d(dw, rdw, nw), e3 = rel_err_d(db, rdb, oc);
    CHECK(e1 < tol && e2 < 1e-5 && e3 < 1e-5,
          "conv bwd n%d %dx%dx%d->%d k%d s%d p%d g%d t%d wino %d: din %g dw %g db %g", n, h, w, c,
          oc, k, s, p, groups, threads, wino, e1, e2, e3);
    /* the graph's variant for a tensor whose only consumer is this convolution: din written
     * outright, whatever it held (NaN here) */
    if (cn_conv2d_sets_din(&d)) {
        float *dset = malloc(sizeof(float) * nin), *dw2 = calloc(nw, sizeof(float));
        for (size_t i = 0; i < nin; i++) dset[i] = NAN, rdin[i] -= 0.5;
        cn_conv2d_backward_set(dset, dw2, NULL, dout, in, wt, &d, ws, threads);
        double es = rel_err_d(dset, rdin, nin);
        CHECK(es < tol, "conv bwd set n%d %dx%dx%d->%d k%d s%d p%d g%d t%d wino %d: din %g", n, h,
              w, c, oc, k, s, p, groups, threads, wino, es);
        free(dset), free(dw2);
    }
    free(in); free(wt); free(bias); free(dout); free(out); free(ref); free(ws);
    free(din); free(dw); free(db); free(rdin); free(rdw); free(rdb);
}

/* conv2d on a big shape, checked on sampled outputs/gradients (a full direct reference would
 * take seconds): groups 1 only. Output pixels in a few whole rows of every image plus random ones;
 * input pixels (all channels) at random; weight elements at random; every bias element. */
static void conv_case_sampled(int n, int h, int w, int c, int oc, int k, int s, int p,
                              int threads) {
    cn_conv_desc d = {n, h, w, c, oc, k, k, s, s, p, p, 1, 0, 0};
    if (!cn_conv_desc_init(&d)) {
        CHECK(0, "conv desc rejected");
        return;
    }
    size_t nin = (size_t)n * h * w * c, nout = (size_t)n * d.oh * d.ow * oc;
    size_t nw = (size_t)oc * k * k * c;
    float *in = randv(nin, 1), *wt = randv(nw, 0.1f), *bias = randv(oc, 1), *dout = randv(nout, 1);
    float *out = malloc(sizeof(float) * nout);
    size_t nws = cn_conv2d_workspace(&d, threads, 1);
    float *ws = malloc(sizeof(float) * (nws ? nws : 1));
    cn_conv2d_forward(out, in, wt, bias, &d, ws, threads);
    double md = 0, mb = 1e-6;
    int rows[3] = {0, d.oh / 2, d.oh - 1};
    for (int it = 0; it < n * 3 * d.ow + 1500; it++) {
        int b, oy, ox;
        if (it < n * 3 * d.ow) b = it / (3 * d.ow), oy = rows[(it / d.ow) % 3], ox = it % d.ow;
        else
            b = cn_rng_below(&rng, n), oy = cn_rng_below(&rng, d.oh),
            ox = cn_rng_below(&rng, d.ow);
        for (int o = 0; o < oc; o++) {
            double acc = bias[o];
            for (int ky = 0; ky < k; ky++)
                for (int kx = 0; kx < k; kx++) {
                    int iy = oy * s - p + ky, ix = ox * s - p + kx;
                    if (iy < 0 || iy >= h || ix < 0 || ix >= w) continue;
                    const float *x = in + (((size_t)b * h + iy) * w + ix) * c;
                    const float *wk = wt + (((size_t)o * k + ky) * k + kx) * c;
                    for (int ci = 0; ci < c; ci++) acc += (double)x[ci] * wk[ci];
                }
            double dd = fabs(out[(((size_t)b * d.oh + oy) * d.ow + ox) * oc + o] - acc);
            if (dd > md || dd != dd) md = dd;
            if (fabs(acc) > mb) mb = fabs(acc);
        }
    }
    CHECK(md / mb < 1e-5, "conv fwd (sampled) n%d %dx%dx%d->%d k%d s%d p%d t%d: rel err %g", n, h,
          w, c, oc, k, s, p, threads, md / mb);
    float *din = calloc(nin, sizeof(float)), *dw = calloc(nw, sizeof(float)),
          *db = calloc(oc, sizeof(float));
    cn_conv2d_backward(din, dw, db, dout, in, wt, &d, ws, threads);
    double e[3];
    /* din at random input pixels (plus the first and last one) */
    md = 0, mb = 1e-6;
    for (int it = 0; it < 1500; it++) {
        size_t pix = it == 0 ? 0 : it == 1 ? (size_t)n * h * w - 1 : cn_rng_below(&rng, n * h * w);
        int b = (int)(pix / ((size_t)h * w)), iy = (int)(pix / w % h), ix = (int)(pix % w);
        for (int ci = 0; ci < c; ci++) {
            double acc = 0;
            for (int ky = 0; ky < k; ky++) {
                int ty = iy + p - ky;
                if (ty < 0 || ty % s || ty / s >= d.oh) continue;
                for (int kx = 0; kx < k; kx++) {
                    int tx = ix + p - kx;
                    if (tx < 0 || tx % s || tx / s >= d.ow) continue;
                    const float *g = dout + (((size_t)b * d.oh + ty / s) * d.ow + tx / s) * oc;
                    for (int o = 0; o < oc; o++)
                        acc += (double)g[o] * wt[(((size_t)o * k + ky) * k + kx) * c + ci];
                }
            }
            double dd = fabs(din[pix * c + ci] - acc);
            if (dd > md || dd != dd) md = dd;
            if (fabs(acc) > mb) mb = fabs(acc);
        }
    }
    e[0] = md / mb;
    /* dweight at random elements (plus the first and last one) */
    md = 0, mb = 1e-6;
    for (int it = 0; it < 200; it++) {
        size_t wi = it == 0 ? 0 : it == 1 ? nw - 1 : cn_rng_below(&rng, (uint32_t)nw);
        int o = (int)(wi / ((size_t)k * k * c)), ky = (int)(wi / ((size_t)k * c) % k),
            kx = (int)(wi / c % k), ci = (int)(wi % c);
        double acc = 0;
        for (int b = 0; b < n; b++)
            for (int oy = 0; oy < d.oh; oy++) {
                int iy = oy * s - p + ky;
                if (iy < 0 || iy >= h) continue;
                for (int ox = 0; ox < d.ow; ox++) {
                    int ix = ox * s - p + kx;
                    if (ix < 0 || ix >= w) continue;
                    acc += (double)dout[(((size_t)b * d.oh + oy) * d.ow + ox) * oc + o] *
                           in[(((size_t)b * h + iy) * w + ix) * c + ci];
                }
            }
        double dd = fabs(dw[wi] - acc);
        if (dd > md || dd != dd) md = dd;
        if (fabs(acc) > mb) mb = fabs(acc);
    }
    e[1] = md / mb;
    md = 0, mb = 1e-6;
    for (int o = 0; o < oc; o++) {
        double acc = 0;
        for (size_t m = 0; m < nout / oc; m++) acc += dout[m * oc + o];
        double dd = fabs(db[o] - acc);
        if (dd > md || dd != dd) md = dd;
        if (fabs(acc) > mb) mb = fabs(acc);
    }
    e[2] = md / mb;
    CHECK(e[0] < 1e-5 && e[1] < 1e-5 && e[2] < 1e-5,
          "conv bwd (sampled) n%d %dx%dx%d->%d k%d s%d p%d t%d: din %g dw %g db %g", n, h, w, c, oc,
          k, s, p, threads, e[0], e[1], e[2]);
    free(in); free(wt); free(bias); free(dout); free(out); free(ws); free(din); free(dw); free(db);
}

/* ---- finite-difference gradient checks ----
 * L = sum(w_r * out) for a fixed random projection w_r, accumulated in double. The analytic
 * gradient is the op's backward with dout = w_r, run once into zeroed buffers and once into
 * buffers holding random values (it must add to them). The numerical one is the central
 * difference (L(x + eps) - L(x - eps)) / (x+eps - x-eps), with the perturbed values as they are
 * stored in float, for every element of small tensors and for ~50 random ones of larger ones. */

#include "gradcheck.h"

static void phase(const char *name) {
    static double t0;
    double t = omp_get_wtime();
    if (verbose && t0 > 0) printf("-- %s: %.2f s\n", name, t - t0);
    t0 = t;
}

static float urand(float lo, float hi) { return lo + (hi - lo) * cn_rng_uniform(&rng); }


/* -- conv2d -- */
typedef struct conv_ctx {
    cn_conv_desc d;
    float *in, *w, *b, *din, *dw, *db, *wsf, *wsf1, *wsb;
    int threads;
} conv_ctx;

static void conv_fwd(void *p, float *out) {
    conv_ctx *c = p;
    if (fd_serial) cn_conv2d_forward(out, c->in, c->w, c->b, &c->d, c->wsf1, 1);
    else cn_conv2d_forward(out, c->in, c->w, c->b, &c->d, c->wsf, c->threads);
}

static void conv_bwd(void *p, const float *dout, const float *out) {
    conv_ctx *c = p;
    (void)out;
    cn_conv2d_backward(c->din, c->dw, c->db, dout, c->in, c->w, &c->d, c->wsb, c->threads);
}

enum { G_IN = 1, G_W = 2, G_B = 4, HAS_BIAS = 8, G_ALL = 15 };

/* the workspaces are allocated at exactly the advertised sizes (forward-only for the forward) */
static void conv_gc(int n, int h, int w, int c, int oc, int k, int s, int p, int groups,
                    int threads, int mask) {
    conv_ctx x = {{n, h, w, c, oc, k, k, s, s, p, p, groups, 0, 0}, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                  threads};
    if (!cn_conv_desc_init(&x.d)) {
        CHECK(0, "conv desc rejected");
        return;
    }
    size_t nin = (size_t)n * h * w * c, nw = (size_t)oc * k * k * (c / groups);
    size_t nf = cn_conv2d_workspace(&x.d, threads, 0), nb = cn_conv2d_workspace(&x.d, threads, 1);
    size_t nf1 = cn_conv2d_workspace(&x.d, 1, 0);
    x.in = randv(nin, 1);
    x.w = randv(nw, 0.3f);
    x.b = mask & HAS_BIAS ? randv(oc, 1) : NULL;
    x.wsf = malloc(sizeof(float) * (nf ? nf : 1));
    x.wsf1 = malloc(sizeof(float) * (nf1 ? nf1 : 1));
    x.wsb = malloc(sizeof(float) * (nb ? nb : 1));
    gc_op op = {conv_fwd, conv_bwd, &x, (size_t)n * x.d.oh * x.d.ow * oc, {{0}}, 0};
    if (mask & G_IN) gc_add(&op, "in", x.in, &x.din, nin);
    if (mask & G_W) gc_add(&op, "w", x.w, &x.dw, nw);
    if ((mask & G_B) && x.b) gc_add(&op, "b", x.b, &x.db, oc);
    char label[128];
    snprintf(label, sizeof label, "conv n%d %dx%dx%d->%d k%d s%d p%d g%d t%d m%d", n, h, w, c, oc,
             k, s, p, groups, threads, mask);
    gradcheck(label, &op, 1e-2f, TOL_LIN);
    free(x.in); free(x.w); free(x.b); free(x.wsf); free(x.wsf1); free(x.wsb);
    free(x.din); free(x.dw); free(x.db);
}

/* -- batchnorm -- */
typedef struct bn_ctx {
    float *x, *gamma, *beta, *dx, *dgamma, *dbeta, *save, *rm, *rv;
    size_t m;
    int c;
    float eps, momentum;
    void *scratch;
} bn_ctx;

static void bn_train_fwd(void *p, float *out) {
    bn_ctx *b = p;
    cn_batchnorm_forward_train(out, b->save, b->rm, b->rv, b->x, b->gamma, b->beta, b->m, b->c,
                               b->eps, b->momentum, b->scratch);
}

static void bn_train_bwd(void *p, const float *dout, const float *out) {
    bn_ctx *b = p;
    (void)out;
    cn_batchnorm_backward_train(b->dx, b->dgamma, b->dbeta, dout, b->x, b->gamma, b->save, b->m,
                                b->c, b->scratch);
}

static void bn_eval_fwd(void *p, float *out) {
    bn_ctx *b = p;
    cn_batchnorm_forward_eval(out, b->x, b->gamma, b->beta, b->rm, b->rv, b->m, b->c, b->eps,
                              b->scratch);
}

static void bn_eval_bwd(void *p, const float *dout, const float *out) {
    bn_ctx *b = p;
    (void)out;
    cn_batchnorm_backward_eval(b->dx, b->dgamma, b->dbeta, dout, b->x, b->gamma, b->rm, b->rv,
                               b->m, b->c, b->eps, b->scratch);
}

/* x: per-channel offset in [-offset, offset] and spread in [0.5, 2] */
static bn_ctx bn_make(size_t m, int c, float offset) {
    bn_ctx b;
    b.m = m, b.c = c, b.eps = 1e-5f, b.momentum = 0.1f;
    b.x = malloc(sizeof(float) * m * c);
    float *mu = malloc(sizeof(float) * c), *sd = malloc(sizeof(float) * c);
    for (int j = 0; j < c; j++) mu[j] = urand(-offset, offset), sd[j] = urand(0.5f, 2.0f);
    for (size_t i = 0; i < m; i++)
        for (int j = 0; j < c; j++) b.x[i * c + j] = mu[j] + sd[j] * cn_rng_normal(&rng);
    free(mu);
    free(sd);
    b.gamma = randv(c, 1);
    b.beta = randv(c, 1);
    b.dx = malloc(sizeof(float) * m * c);
    b.dgamma = malloc(sizeof(float) * c);
    b.dbeta = malloc(sizeof(float) * c);
    b.save = malloc(sizeof(float) * 2 * c);
    b.rm = randv(c, 1);
    b.rv = malloc(sizeof(float) * c);
    for (int j = 0; j < c; j++) b.rv[j] = urand(0.3f, 3.0f);
    b.scratch = malloc(cn_batchnorm_scratch(c));
    return b;
}

static void bn_free(bn_ctx *b) {
    free(b->x); free(b->gamma); free(b->beta); free(b->dx); free(b->dgamma); free(b->dbeta);
    free(b->save); free(b->rm); free(b->rv); free(b->scratch);
}

/* mask: which of dx (G_IN), dgamma (G_W), dbeta (G_B) are requested; the others are NULL */
static void bn_gc(int n, int h, int w, int c, int mask) {
    size_t m = (size_t)n * h * w;
    char label[128];
    for (int train = 1; train >= 0; train--) {
        bn_ctx b = bn_make(m, c, 1.0f);
        gc_op op = {train ? bn_train_fwd : bn_eval_fwd, train ? bn_train_bwd : bn_eval_bwd, &b,
                    m * c, {{0}}, 0};
        if (mask & G_IN) op.t[op.nt++] = (gc_tensor){"x", b.x, b.dx, m * c};
        else free(b.dx), b.dx = NULL;
        if (mask & G_W) op.t[op.nt++] = (gc_tensor){"gamma", b.gamma, b.dgamma, (size_t)c};
        else free(b.dgamma), b.dgamma = NULL;
        if (mask & G_B) op.t[op.nt++] = (gc_tensor){"beta", b.beta, b.dbeta, (size_t)c};
        else free(b.dbeta), b.dbeta = NULL;
        snprintf(label, sizeof label, "batchnorm %s n%d %dx%dx%d m%d", train ? "train" : "eval",
                 n, h, w, c, mask);
        gradcheck(label, &op, 1e-2f, train ? TOL_NONLIN : TOL_LIN);
        bn_free(&b);
    }
}

/* forward values against the formulas, in double: batch statistics, the saved mean and
 * 1/sqrt(var + eps), the running statistics update (momentum, unbiased variance), y in training
 * and in evaluation */
static void bn_values(size_t m, int c, float offset) {
    bn_ctx b = bn_make(m, c, offset);
    float *rm0 = malloc(sizeof(float) * c), *rv0 = malloc(sizeof(float) * c);
    memcpy(rm0, b.rm, sizeof(float) * c);
    memcpy(rv0, b.rv, sizeof(float) * c);
    float *y = malloc(sizeof(float) * m * c), *ref = malloc(sizeof(float) * m * c);
    float *em = malloc(sizeof(float) * 6 * c);
    float *mean = em, *invstd = em + c, *erm = em + 2 * c, *erv = em + 3 * c;
    cn_batchnorm_forward_train(y, b.save, b.rm, b.rv, b.x, b.gamma, b.beta, m, c, b.eps,
                               b.momentum, b.scratch);
    for (int j = 0; j < c; j++) {
        double s = 0, s2 = 0;
        for (size_t i = 0; i < m; i++) s += b.x[i * c + j];
        double mu = s / m;
        for (size_t i = 0; i < m; i++) s2 += (b.x[i * c + j] - mu) * (b.x[i * c + j] - mu);
        double var = s2 / m, unb = m > 1 ? s2 / (m - 1) : var, is = 1 / sqrt(var + b.eps);
        mean[j] = (float)mu;
        invstd[j] = (float)is;
        erm[j] = (float)((1 - (double)b.momentum) * rm0[j] + (double)b.momentum * mu);
        erv[j] = (float)((1 - (double)b.momentum) * rv0[j] + (double)b.momentum * unb);
        for (size_t i = 0; i < m; i++)
            ref[i * c + j] = (float)((b.x[i * c + j] - mu) * is * b.gamma[j] + b.beta[j]);
    }
    double e1 = max_rel_err(b.save, mean, c, 1), e2 = max_rel_err(b.save + c, invstd, c, 1e-6);
    double e3 = max_rel_err(b.rm, erm, c, 1), e4 = max_rel_err(b.rv, erv, c, 1e-6);
    double e5 = max_rel_err(y, ref, m * c, 1);
    double tol = offset > 1 ? 1e-4 : 1e-5;
    CHECK(e1 < tol && e2 < tol, "batchnorm train m%zu c%d off%g: saved mean %g invstd %g", m, c,
          offset, e1, e2);
    CHECK(e3 < tol && e4 < tol, "batchnorm train m%zu c%d off%g: running mean %g var %g", m, c,
          offset, e3, e4);
    CHECK(e5 < tol, "batchnorm train m%zu c%d off%g: y rel err %g", m, c, offset, e5);
    /* evaluation with the updated running statistics */
    cn_batchnorm_forward_eval(y, b.x, b.gamma, b.beta, b.rm, b.rv, m, c, b.eps, b.scratch);
    for (size_t i = 0; i < m; i++)
        for (int j = 0; j < c; j++)
            ref[i * c + j] = (float)(((double)b.x[i * c + j] - b.rm[j]) /
                                         sqrt((double)b.rv[j] + b.eps) * b.gamma[j] +
                                     b.beta[j]);
    double e6 = max_rel_err(y, ref, m * c, 1);
    CHECK(e6 < tol, "batchnorm eval m%zu c%d off%g: y rel err %g", m, c, offset, e6);
    free(rm0); free(rv0); free(y); free(ref); free(em);
    bn_free(&b);
}

/* -- relu, add -- */
typedef struct ew_ctx {
    float *a, *b, *da, *db;
    size_t n;
} ew_ctx;

static void relu_fwd(void *p, float *out) {
    ew_ctx *e = p;
    cn_relu_forward(out, e->a, e->n);
}

static void relu_bwd(void *p, const float *dout, const float *out) {
    ew_ctx *e = p;
    cn_relu_backward(e->da, dout, out, e->n);
}

static void add_fwd(void *p, float *out) {
    ew_ctx *e = p;
    cn_add_forward(out, e->a, e->b, e->n);
}

static void add_bwd(void *p, const float *dout, const float *out) {
    ew_ctx *e = p;
    (void)out;
    cn_add_backward(e->da, e->db, dout, e->n);
}

static void relu_gc(size_t n) {
    ew_ctx e = {randv(n, 1), NULL, malloc(sizeof(float) * n), NULL, n};
    for (size_t i = 0; i < n; i++) /* away from the kink */
        while (fabsf(e.a[i]) < 0.05f) e.a[i] = cn_rng_normal(&rng);
    float *y = malloc(sizeof(float) * n);
    cn_relu_forward(y, e.a, n);
    int ok = 1;
    for (size_t i = 0; i < n; i++) ok &= y[i] == (e.a[i] > 0 ? e.a[i] : 0.0f);
    CHECK(ok, "relu forward n%zu", n);
    gc_op op = {relu_fwd, relu_bwd, &e, n, {{"x", e.a, e.da, n}}, 1};
    char label[64];
    snprintf(label, sizeof label, "relu n%zu", n);
    gradcheck(label, &op, 1e-2f, TOL_LIN);
    free(e.a); free(e.da); free(y);
}

static void add_gc(size_t n) {
    ew_ctx e = {randv(n, 1), randv(n, 1), malloc(sizeof(float) * n), malloc(sizeof(float) * n), n};
    gc_op op = {add_fwd, add_bwd, &e, n, {{"a", e.a, e.da, n}, {"b", e.b, e.db, n}}, 2};
    char label[64];
    snprintf(label, sizeof label, "add n%zu", n);
    gradcheck(label, &op, 1e-2f, TOL_LIN);
    /* one of the gradients not needed: the other one is still exactly pre + dy */
    float *dy = randv(n, 1);
    for (int which = 0; which < 2; which++) {
        float *g = which ? e.db : e.da;
        for (size_t i = 0; i < n; i++) g[i] = 0.5f;
        cn_add_backward(which ? NULL : e.da, which ? e.db : NULL, dy, n);
        int ok = 1;
        for (size_t i = 0; i < n; i++) ok &= g[i] == 0.5f + dy[i];
        CHECK(ok, "add backward n%zu with d%s NULL", n, which ? "a" : "b");
    }
    free(e.a); free(e.b); free(e.da); free(e.db); free(dy);
}

/* -- pooling -- */
typedef struct pool_ctx {
    cn_conv_desc d;
    float *x, *dx;
    int32_t *argmax;
    int n, hw, c, h, w, oh, ow, oc, stride; /* gap, shortcut, flatten */
} pool_ctx;

static void maxpool_fwd(void *p, float *out) {
    pool_ctx *q = p;
    cn_maxpool_forward(out, q->argmax, q->x, &q->d);
}

static void maxpool_bwd(void *p, const float *dout, const float *out) {
    pool_ctx *q = p;
    (void)out;
    cn_maxpool_backward(q->dx, dout, q->argmax, &q->d);
}

static void avgpool_fwd(void *p, float *out) {
    pool_ctx *q = p;
    cn_avgpool_forward(out, q->x, &q->d);
}

static void avgpool_bwd(void *p, const float *dout, const float *out) {
    pool_ctx *q = p;
    (void)out;
    cn_avgpool_backward(q->dx, dout, &q->d);
}

/* direct pooling in double: max over the valid window, or the window sum / (kh*kw) */
static void pool_ref(float *out, const float *in, const cn_conv_desc *d, int is_max) {
    for (int n = 0; n < d->n; n++)
        for (int oy = 0; oy < d->oh; oy++)
            for (int ox = 0; ox < d->ow; ox++)
                for (int c = 0; c < d->c; c++) {
                    double acc = is_max ? -INFINITY : 0;
                    for (int ky = 0; ky < d->kh; ky++)
                        for (int kx = 0; kx < d->kw; kx++) {
                            int iy = oy * d->sh - d->ph + ky, ix = ox * d->sw - d->pw + kx;
                            if (iy < 0 || iy >= d->h || ix < 0 || ix >= d->w) continue;
                            double v = in[(((size_t)n * d->h + iy) * d->w + ix) * d->c + c];
                            if (is_max) acc = v > acc ? v : acc;
                            else acc += v;
                        }
                    out[(((size_t)n * d->oh + oy) * d->ow + ox) * d->c + c] =
                        (float)(is_max ? acc : acc / (d->kh * d->kw));
                }
}

static void pool_gc(int is_max, int n, int h, int w, int c, int k, int s, int p) {
    pool_ctx q = {{n, h, w, c, c, k, k, s, s, p, p, 1, 0, 0}, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    if (!cn_conv_desc_init(&q.d)) {
        CHECK(0, "pool desc rejected");
        return;
    }
    size_t nin = (size_t)n * h * w * c, nout = (size_t)n * q.d.oh * q.d.ow * c;
    q.x = malloc(sizeof(float) * nin);
    q.dx = malloc(sizeof(float) * nin);
    q.argmax = malloc(sizeof(int32_t) * nout);
    if (is_max) {
        /* all values distinct, 0.05 apart (> 2 eps): no ties, and eps never changes a maximum */
        for (size_t i = 0; i < nin; i++) q.x[i] = (float)i;
        for (size_t i = nin; i > 1; i--) {
            size_t j = cn_rng_below(&rng, (uint32_t)i);
            float t = q.x[i - 1];
            q.x[i - 1] = q.x[j], q.x[j] = t;
        }
        for (size_t i = 0; i < nin; i++) q.x[i] = 0.05f * (q.x[i] - (float)(nin / 2));
    } else {
        for (size_t i = 0; i < nin; i++) q.x[i] = cn_rng_normal(&rng);
    }
    float *out = malloc(sizeof(float) * nout), *ref = malloc(sizeof(float) * nout);
    if (is_max) cn_maxpool_forward(out, q.argmax, q.x, &q.d);
    else cn_avgpool_forward(out, q.x, &q.d);
    pool_ref(ref, q.x, &q.d, is_max);
    double e = max_rel_err(out, ref, nout, 1);
    char label[96];
    snprintf(label, sizeof label, "%s n%d %dx%dx%d k%d s%d p%d", is_max ? "maxpool" : "avgpool", n,
             h, w, c, k, s, p);
    CHECK(e < 1e-6, "%s forward: rel err %g", label, e);
    gc_op op = {is_max ? maxpool_fwd : avgpool_fwd, is_max ? maxpool_bwd : avgpool_bwd, &q, nout,
                {{"x", q.x, q.dx, nin}}, 1};
    gradcheck(label, &op, 1e-2f, TOL_LIN);
    free(q.x); free(q.dx); free(q.argmax); free(out); free(ref);
}

static void gap_fwd(void *p, float *out) {
    pool_ctx *q = p;
    cn_gap_forward(out, q->x, q->n, q->hw, q->c);
}

static void gap_bwd(void *p, const float *dout, const float *out) {
    pool_ctx *q = p;
    (void)out;
    cn_gap_backward(q->dx, dout, q->n, q->hw, q->c);
}

static void gap_gc(int n, int hw, int c) {
    pool_ctx q = {{0}, 0, 0, 0, n, hw, c, 0, 0, 0, 0, 0, 0};
    size_t nin = (size_t)n * hw * c;
    q.x = randv(nin, 1);
    q.dx = malloc(sizeof(float) * nin);
    float *out = malloc(sizeof(float) * n * c), *ref = malloc(sizeof(float) * n * c);
    cn_gap_forward(out, q.x, n, hw, c);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < c; j++) {
            double s = 0;
            for (int p = 0; p < hw; p++) s += q.x[((size_t)i * hw + p) * c + j];
            ref[i * c + j] = (float)(s / hw);
        }
    double e = max_rel_err(out, ref, (size_t)n * c, 1);
    char label[64];
    snprintf(label, sizeof label, "gap n%d hw%d c%d", n, hw, c);
    CHECK(e < 1e-6, "%s forward: rel err %g", label, e);
    gc_op op = {gap_fwd, gap_bwd, &q, (size_t)n * c, {{"x", q.x, q.dx, nin}}, 1};
    gradcheck(label, &op, 1e-2f, TOL_LIN);
    free(q.x); free(q.dx); free(out); free(ref);
}

static void shortcut_fwd(void *p, float *out) {
    pool_ctx *q = p;
    cn_shortcut_a_forward(out, q->x, q->n, q->h, q->w, q->c, q->oh, q->ow, q->oc, q->stride);
}

static void shortcut_bwd(void *p, const float *dout, const float *out) {
    pool_ctx *q = p;
    (void)out;
    cn_shortcut_a_backward(q->dx, dout, q->n, q->h, q->w, q->c, q->oh, q->ow, q->oc, q->stride);
}

static void shortcut_gc(int n, int h, int w, int c, int oc, int stride) {
    int oh = (h + stride - 1) / stride, ow = (w + stride - 1) / stride;
    pool_ctx q = {{0}, 0, 0, 0, n, 0, c, h, w, oh, ow, oc, stride};
    size_t nin = (size_t)n * h * w * c, nout = (size_t)n * oh * ow * oc;
    q.x = randv(nin, 1);
    q.dx = malloc(sizeof(float) * nin);
    float *out = malloc(sizeof(float) * nout);
    for (size_t i = 0; i < nout; i++) out[i] = NAN; /* every element must be written */
    cn_shortcut_a_forward(out, q.x, n, h, w, c, oh, ow, oc, stride);
    int ok = 1;
    for (int i = 0; i < n; i++)
        for (int y = 0; y < oh; y++)
            for (int x = 0; x < ow; x++)
                for (int j = 0; j < oc; j++) {
                    float v = out[(((size_t)i * oh + y) * ow + x) * oc + j];
                    size_t src = (((size_t)i * h + y * stride) * w + x * stride) * c + j;
                    ok &= v == (j < c ? q.x[src] : 0.0f);
                }
    char label[96];
    snprintf(label, sizeof label, "shortcut_a n%d %dx%dx%d->%d s%d", n, h, w, c, oc, stride);
    CHECK(ok, "%s forward", label);
    gc_op op = {shortcut_fwd, shortcut_bwd, &q, nout, {{"x", q.x, q.dx, nin}}, 1};
    gradcheck(label, &op, 1e-2f, TOL_LIN);
    free(q.x); free(q.dx); free(out);
}

static void flatten_fwd(void *p, float *out) {
    pool_ctx *q = p;
    cn_flatten_forward(out, q->x, q->n, q->h, q->w, q->c);
}

static void flatten_bwd(void *p, const float *dout, const float *out) {
    pool_ctx *q = p;
    (void)out;
    cn_flatten_backward(q->dx, dout, q->n, q->h, q->w, q->c);
}

static void flatten_gc(int n, int h, int w, int c) {
    pool_ctx q = {{0}, 0, 0, 0, n, 0, c, h, w, 0, 0, 0, 0};
    size_t nin = (size_t)n * h * w * c;
    q.x = randv(nin, 1);
    q.dx = malloc(sizeof(float) * nin);
    float *out = malloc(sizeof(float) * nin);
    cn_flatten_forward(out, q.x, n, h, w, c);
    /* torch.flatten(x, 1) of the NCHW tensor: out[i][(j*H + y)*W + x] = x_nchw[i][j][y][x] */
    int ok = 1;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < c; j++)
            for (int y = 0; y < h; y++)
                for (int x = 0; x < w; x++)
                    ok &= out[(size_t)i * c * h * w + ((size_t)j * h + y) * w + x] ==
                          q.x[(((size_t)i * h + y) * w + x) * c + j];
    char label[64];
    snprintf(label, sizeof label, "flatten n%d %dx%dx%d", n, h, w, c);
    CHECK(ok, "%s forward order", label);
    gc_op op = {flatten_fwd, flatten_bwd, &q, nin, {{"x", q.x, q.dx, nin}}, 1};
    gradcheck(label, &op, 1e-2f, TOL_LIN);
    free(q.x); free(q.dx); free(out);
}

/* -- linear -- */
typedef struct lin_ctx {
    float *x, *w, *b, *dx, *dw, *db;
    int n, k, oc;
} lin_ctx;

static void linear_fwd(void *p, float *out) {
    lin_ctx *l = p;
    cn_linear_forward(out, l->x, l->w, l->b, l->n, l->k, l->oc);
}

static void linear_bwd(void *p, const float *dout, const float *out) {
    lin_ctx *l = p;
    (void)out;
    cn_linear_backward(l->dx, l->dw, l->db, dout, l->x, l->w, l->n, l->k, l->oc);
}

static void linear_gc(int n, int k, int oc, int mask) {
    lin_ctx l = {randv((size_t)n * k, 1), randv((size_t)oc * k, 0.5f),
                 mask & HAS_BIAS ? randv(oc, 1) : NULL, 0, 0, 0, n, k, oc};
    float *y = malloc(sizeof(float) * n * oc), *ref = malloc(sizeof(float) * n * oc);
    cn_linear_forward(y, l.x, l.w, l.b, n, k, oc);
    for (int i = 0; i < n; i++)
        for (int o = 0; o < oc; o++) {
            double acc = l.b ? l.b[o] : 0;
            for (int j = 0; j < k; j++)
                acc += (double)l.x[(size_t)i * k + j] * l.w[(size_t)o * k + j];
            ref[(size_t)i * oc + o] = (float)acc;
        }
    double e = max_rel_err(y, ref, (size_t)n * oc, 1);
    char label[64];
    snprintf(label, sizeof label, "linear n%d k%d oc%d m%d", n, k, oc, mask);
    CHECK(e < 1e-5, "%s forward: rel err %g", label, e);
    gc_op op = {linear_fwd, linear_bwd, &l, (size_t)n * oc, {{0}}, 0};
    size_t nx = (size_t)n * k, nw = (size_t)oc * k;
    if (mask & G_IN) gc_add(&op, "x", l.x, &l.dx, nx);
    if (mask & G_W) gc_add(&op, "w", l.w, &l.dw, nw);
    if ((mask & G_B) && l.b) gc_add(&op, "b", l.b, &l.db, oc);
    gradcheck(label, &op, 1e-2f, TOL_LIN);
    free(l.x); free(l.w); free(l.b); free(l.dx); free(l.dw); free(l.db); free(y); free(ref);
}

/* -- softmax cross-entropy: dlogits is SET by the op; the adapter adds dout * dlogits -- */
typedef struct xent_ctx {
    float *z, *dz, *tmp;
    int32_t *labels;
    int n, k;
    float smoothing;
} xent_ctx;

static void xent_fwd(void *p, float *out) {
    xent_ctx *x = p;
    out[0] = cn_softmax_xent(NULL, NULL, x->z, x->labels, x->n, x->k, x->smoothing);
}

static void xent_bwd(void *p, const float *dout, const float *out) {
    xent_ctx *x = p;
    (void)out;
    cn_softmax_xent(x->tmp, NULL, x->z, x->labels, x->n, x->k, x->smoothing);
    for (size_t i = 0; i < (size_t)x->n * x->k; i++) x->dz[i] += dout[0] * x->tmp[i];
}

static void xent_gc(int n, int k, float smoothing) {
    size_t nz = (size_t)n * k;
    xent_ctx x = {randv(nz, 2), malloc(sizeof(float) * nz), malloc(sizeof(float) * nz),
                  malloc(sizeof(int32_t) * n), n, k, smoothing};
    /* about half the rows predict their label */
    for (int i = 0; i < n; i++) {
        x.labels[i] = (int32_t)cn_rng_below(&rng, k);
        if (i % 2 == 0) x.z[(size_t)i * k + x.labels[i]] += 6;
    }
    double total = 0;
    int hits = 0;
    for (int i = 0; i < n; i++) {
        const float *z = x.z + (size_t)i * k;
        int best = 0;
        double se = 0, mx = z[0];
        for (int j = 1; j < k; j++)
            if (z[j] > z[best]) best = j, mx = z[j];
        for (int j = 0; j < k; j++) se += exp(z[j] - mx);
        for (int j = 0; j < k; j++) {
            double logp = z[j] - mx - log(se);
            double q = smoothing / k + (j == x.labels[i] ? 1.0 - smoothing : 0.0);
            total -= q * logp;
        }
        hits += best == x.labels[i];
    }
    total /= n;
    int correct = -1, correct2 = -1;
    float *junk = malloc(sizeof(float) * nz);
    for (size_t i = 0; i < nz; i++) junk[i] = 123.0f, x.dz[i] = 0;
    float loss = cn_softmax_xent(x.dz, &correct, x.z, x.labels, n, k, smoothing);
    float loss2 = cn_softmax_xent(junk, &correct2, x.z, x.labels, n, k, smoothing);
    char label[64];
    snprintf(label, sizeof label, "xent n%d k%d s%g", n, k, smoothing);
    CHECK(fabs(loss - total) <= 1e-5 * fmax(1, fabs(total)), "%s: loss %.9g, expected %.9g",
          label, loss, total);
    CHECK(correct == hits && correct2 == hits, "%s: correct %d/%d, expected %d", label, correct,
          correct2, hits);
    CHECK(loss2 == loss && memcmp(junk, x.dz, sizeof(float) * nz) == 0,
          "%s: dlogits not overwritten", label);
    gc_op op = {xent_fwd, xent_bwd, &x, 1, {{"logits", x.z, x.dz, nz}}, 1};
    gradcheck(label, &op, 1e-2f, TOL_NONLIN);
    free(x.z); free(x.dz); free(x.tmp); free(x.labels); free(junk);
}

/* the direct kernels (kernels/conv_direct.h): the same bits from two runs with the same thread
 * count, forward and both gradients */
static void conv_repeat_case(int n, int h, int w, int c, int oc, int k, int s, int threads) {
    cn_conv_desc d = {n, h, w, c, oc, k, k, s, s, k / 2, k / 2, 1, 0, 0};
    if (!cn_conv_desc_init(&d)) {
        CHECK(0, "conv desc rejected");
        return;
    }
    size_t nin = (size_t)n * h * w * c, nout = (size_t)n * d.oh * d.ow * oc;
    size_t nw = (size_t)oc * k * k * c;
    float *in = randv(nin, 1), *wt = randv(nw, 0.3f), *dout = randv(nout, 1);
    float *ws = malloc(sizeof(float) * (cn_conv2d_workspace(&d, threads, 1) + 1));
    float *o[2], *di[2], *dw[2];
    for (int r = 0; r < 2; r++) {
        o[r] = malloc(sizeof(float) * nout);
        di[r] = calloc(nin, sizeof(float));
        dw[r] = calloc(nw, sizeof(float));
        cn_conv2d_forward(o[r], in, wt, NULL, &d, ws, threads);
        cn_conv2d_backward(di[r], dw[r], NULL, dout, in, wt, &d, ws, threads);
    }
    CHECK(!memcmp(o[0], o[1], sizeof(float) * nout) && !memcmp(di[0], di[1], sizeof(float) * nin) &&
              !memcmp(dw[0], dw[1], sizeof(float) * nw),
          "conv n%d %dx%dx%d->%d k%d s%d t%d: two runs differ", n, h, w, c, oc, k, s, threads);
    for (int r = 0; r < 2; r++) free(o[r]), free(di[r]), free(dw[r]);
    free(in); free(wt); free(dout); free(ws);
}

/* the direct kernels called on their own (whichever of AVX-512 / AVX2 this CPU runs) against
 * double loops on a padded image: output rows oy0..oy1 only (the rest left untouched), with and
 * without accumulate; the weight gradient adds into dW and leaves the columns past OC alone.
 * Shapes: every output channel tail against the 8- and 16-channel vectors, widths that are no
 * multiple of the pixel tiles (1, 5, 7, 13), strides 1 and 2, 1..32 input channels. */
static void dconv_kernel_case(int oh, int ow, int c, int oc, int k, int st, int oy0, int oy1) {
    cn_dconv_shape s = {oh, ow, oc, c, k, k, st, st, (ow - 1) * st + k};
    if (!cn_dconv_forward_ok(&s) && !cn_dconv_wgrad_ok(&s)) return;
    const int hp = (oh - 1) * st + k, wp = s.wp, ldw = cn_dconv_ldw(oc);
    const size_t nx = (size_t)hp * wp * c, nw = (size_t)k * k * c * ldw, no = (size_t)oh * ow * oc;
    float *x = randv(nx + CN_DCONV_SLACK, 1), *wk = randv(nw, 0.3f), *dy = randv(no, 1);
    for (size_t i = 0; i < (size_t)k * k * c; i++)
        for (int co = oc; co < ldw; co++) wk[i * ldw + co] = 0;
    float *out = malloc(sizeof(float) * no), *want = malloc(sizeof(float) * no);
    float *base = randv(no, 1);
    /* ref[(oy, ox, co)] = sum over (ky, kx, ci) */
    double *ref = calloc(no, sizeof(double));
    for (int oy = 0; oy < oh; oy++)
        for (int ox = 0; ox < ow; ox++)
            for (int co = 0; co < oc; co++) {
                double a = 0;
                for (int ky = 0; ky < k; ky++)
                    for (int kx = 0; kx < k; kx++)
                        for (int ci = 0; ci < c; ci++)
                            a += (double)x[((size_t)(oy * st + ky) * wp + ox * st + kx) * c + ci] *
                                 wk[((size_t)(ky * k + kx) * c + ci) * ldw + co];
                ref[((size_t)oy * ow + ox) * oc + co] = a;
            }
    if (cn_dconv_forward_ok(&s))
        for (int accumulate = 0; accumulate <= 1; accumulate++) {
            memcpy(out, base, sizeof(float) * no);
            cn_dconv_forward_rows(out, x, wk, &s, oy0, oy1, accumulate, NULL);
            int untouched = 1;
            for (size_t i = 0; i < no; i++) {
                int row = (int)(i / ((size_t)ow * oc));
                int in = row >= oy0 && row < oy1;
                want[i] = in ? (float)(ref[i] + (accumulate ? base[i] : 0)) : base[i];
                if (!in && out[i] != base[i]) untouched = 0;
            }
            double e = max_rel_err(out, want, no, 1e-6);
            CHECK(e < 1e-5 && untouched,
                  "dconv fwd %dx%d c%d oc%d k%d s%d rows [%d,%d) acc %d: rel err %g, %s", oh, ow,
                  c, oc, k, st, oy0, oy1, accumulate, e, untouched ? "ok" : "rows outside written");
        }
    /* the epilogue in the kernel's registers (with and without a residual, each activation):
     * the same bits as the plain kernel's sums put through the scalar affine (each operation
     * rounded) and the array activation, and the rows outside left alone */
    if (cn_dconv_forward_ok(&s)) {
        float *scale = randv(oc, 1), *shift = randv(oc, 1), *res = randv(no, 1);
        float *plain = malloc(sizeof(float) * no);
        memcpy(plain, base, sizeof(float) * no);
        cn_dconv_forward_rows(plain, x, wk, &s, oy0, oy1, 0, NULL);
        for (int act = CN_GEMM_ACT_NONE; act <= CN_GEMM_ACT_SILU; act++)
            for (int r = 0; r < 2; r++) {
                const cn_gemm_affine f = {scale, shift, r ? res : NULL, (size_t)oc, act};
                memcpy(out, base, sizeof(float) * no);
                cn_dconv_forward_rows(out, x, wk, &s, oy0, oy1, 0, &f);
                const size_t i0 = (size_t)oy0 * ow * oc, i1 = (size_t)oy1 * ow * oc;
                memcpy(want, base, sizeof(float) * no);
                for (size_t i = i0; i < i1; i++) {
                    float v = plain[i] * scale[i % oc];
                    v = v + shift[i % oc];
                    if (r) v = v + res[i];
                    want[i] = act == CN_GEMM_ACT_RELU && v < 0 ? 0.0f : v;
                }
                if (act == CN_GEMM_ACT_SILU && i1 > i0) cn_silu_n(want + i0, want + i0, i1 - i0);
                CHECK(!memcmp(out, want, sizeof(float) * no),
                      "dconv fwd %dx%d c%d oc%d k%d s%d rows [%d,%d) epilogue act %d res %d: "
                      "not the bits of the kernel and the scalar epilogue",
                      oh, ow, c, oc, k, st, oy0, oy1, act, r);
            }
        free(scale), free(shift), free(res), free(plain);
    }
    if (cn_dconv_wgrad_ok(&s)) {
        float *dw = randv(nw, 1), *dw0 = malloc(sizeof(float) * nw), *dwant = malloc(sizeof(float) * nw);
        memcpy(dw0, dw, sizeof(float) * nw);
        cn_dconv_wgrad_image(dw, x, dy, &s);
        int pad_ok = 1;
        for (int ky = 0; ky < k; ky++)
            for (int kx = 0; kx < k; kx++)
                for (int ci = 0; ci < c; ci++) {
                    size_t r = ((size_t)(ky * k + kx) * c + ci) * ldw;
                    for (int co = 0; co < ldw; co++) {
                        if (co >= oc) {
                            dwant[r + co] = dw0[r + co];
                            if (dw[r + co] != dw0[r + co]) pad_ok = 0;
                            continue;
                        }
                        double a = dw0[r + co];
                        for (int oy = 0; oy < oh; oy++)
                            for (int ox = 0; ox < ow; ox++)
                                a += (double)x[((size_t)(oy * st + ky) * wp + ox * st + kx) * c + ci] *
                                     dy[((size_t)oy * ow + ox) * oc + co];
                        dwant[r + co] = (float)a;
                    }
                }
        double e = max_rel_err(dw, dwant, nw, 1e-6);
        CHECK(e < 1e-5 && pad_ok, "dconv wgrad %dx%d c%d oc%d k%d s%d: rel err %g%s", oh, ow, c,
              oc, k, st, e, pad_ok ? "" : ", columns past OC changed");
        free(dw); free(dw0); free(dwant);
    }
    free(x); free(wk); free(dy); free(out); free(want); free(base); free(ref);
}

/* batch norm's AVX-512 and AVX2 channel sums: the same bits as the plain loop (rows in order, in
 * double, mul then add), from non-zero starting sums, for channel tails and row tiles */
static void bn_sums_case(size_t lo, size_t hi, int c, int avx512) {
    const cn_cpu_features *f = cn_cpu();
    if (avx512 ? !(f->avx512f && f->avx512bw && f->avx512vl) : !f->avx2) return;
    float *x = randv(hi * (size_t)c, 3.0f);
    double *p = malloc(sizeof(double) * 2 * c), *q = malloc(sizeof(double) * 2 * c);
    for (int j = 0; j < 2 * c; j++) p[j] = q[j] = 0.25 * j - 1.0;
    if (avx512) cn_bn_sums__avx512(p, p + c, x, lo, hi, c);
    else cn_bn_sums__avx2(p, p + c, x, lo, hi, c);
    for (size_t i = lo; i < hi; i++)
        for (int j = 0; j < c; j++) {
            double v = x[i * c + j], v2 = v * v;
            q[j] += v;
            q[c + j] += v2;
        }
    CHECK(!memcmp(p, q, sizeof(double) * 2 * c), "bn sums (%s) rows [%zu, %zu) c %d differ",
          avx512 ? "avx512" : "avx2", lo, hi, c);
    free(x); free(p); free(q);
}

/* cn_conv2d_backward_bn (dY made image by image from the batch norm's coefficients) against the
 * batch norm's backward written whole and cn_conv2d_backward on it: the same bits for din (set, or
 * added to random values), dW, dgamma, dbeta and a fused residual's gradient. act: the BN's fused
 * activation (ReLU with a residual when res). */
static void conv_bn_check(cn_conv_desc d, int threads, int set, int want_din, cn_act act,
                          int res, int need);

static void conv_bn_case(int n, int h, int c, int oc, int threads, int set, int want_din,
                         cn_act act, int res) {
    /* oc < 0: a 1x1 convolution to -oc channels */
    const int k3 = oc > 0;
    if (oc < 0) oc = -oc;
    cn_conv_desc d = {n, h, h, c, oc, k3 ? 3 : 1, k3 ? 3 : 1, 1, 1, k3, k3, 1, 0, 0};
    /* the 3x3 shapes need the direct kernels (not on the portable path, CN_CPU=generic) */
    conv_bn_check(d, threads, set, want_din, act, res,
                  !k3 || strcmp(cn_sgemm_path_name(), "generic"));
}

/* A depthwise k x k convolution, stride s, padding k / 2 (taken on every path). */
static void dw_bn_case(int n, int h, int c, int k, int s, int threads, int set, int want_din,
                       cn_act act) {
    cn_conv_desc d = {n, h, h, c, c, k, k, s, s, k / 2, k / 2, c, 0, 0};
    conv_bn_check(d, threads, set, want_din, act, 0, 1);
}

/* need: the hand-over must be taken for this shape */
static void conv_bn_check(cn_conv_desc d, int threads, int set, int want_din, cn_act act,
                          int res, int need) {
    cn_conv_desc_init(&d);
    const int n = d.n, h = d.h, c = d.c, oc = d.oc;
    const size_t in_n = (size_t)n * h * h * c, m = (size_t)n * d.oh * d.ow, mo = m * oc;
    const size_t wn = (size_t)d.kh * d.kw * (c / d.groups) * oc;
    float *x = randv(in_n, 1), *w = randv(wn, 0.3f), *gm = randv(oc, 1);
    float *bt = randv(oc, 1), *dy = randv(mo, 1), *r = randv(mo, 1), *din0 = randv(in_n, 1);
    float *y = malloc(sizeof(float) * mo), *out = malloc(sizeof(float) * mo);
    float *save = malloc(sizeof(float) * 2 * oc), *rm = calloc(oc, sizeof(float));
    float *rv = malloc(sizeof(float) * oc), *dx = malloc(sizeof(float) * mo);
    float *din1 = malloc(sizeof(float) * in_n), *din2 = malloc(sizeof(float) * in_n);
    float *dw1 = calloc(wn, sizeof(float)), *dw2 = calloc(wn, sizeof(float));
    float *pg = calloc(4 * oc, sizeof(float)), *k = malloc(sizeof(float) * 5 * oc);
    float *dr1 = calloc(mo, sizeof(float)), *dr2 = calloc(mo, sizeof(float));
    float *ws = malloc(sizeof(float) * cn_conv2d_workspace(&d, threads, 1));
    void *scr = malloc(cn_batchnorm_scratch(oc));
    for (int j = 0; j < oc; j++) rv[j] = 1;
    for (size_t i = 0; i < in_n; i++) din1[i] = din2[i] = set ? NAN : din0[i];
    const int ok = cn_conv2d_backward_bn_ok(&d, threads);
    CHECK(ok || !need, "conv+bn n%d %dx%d c%d oc%d k%d s%d g%d t%d: not taken", n, h, h, c, oc,
          d.kh, d.sh, d.groups, threads);
    if (!ok) goto done;
    cn_conv2d_forward_train(y, x, w, NULL, &d, ws, threads);
    cn_batchnorm_res_forward_train(out, save, rm, rv, y, res ? r : NULL, gm, bt, m, oc, 1e-5f,
                                   0.1f, scr, act);
    /* whole: the BN's dx written, then the convolution's backward on it */
    cn_batchnorm_res_backward_train(dx, res ? dr1 : NULL, pg, pg + oc, dy, y, gm, bt, save, m, oc,
                                    scr, act, act != CN_ACT_NONE ? out : NULL, 1, 1);
    (set ? cn_conv2d_backward_set : cn_conv2d_backward)(want_din ? din1 : NULL, dw1, NULL, dx, x,
                                                        w, &d, ws, threads);
    /* image by image */
    cn_bn_dx b = {dy, y, act != CN_ACT_NONE ? out : NULL, act, oc, k};
    cn_batchnorm_res_backward_coeffs(&b, res ? dr2 : NULL, pg + 2 * oc, pg + 3 * oc, gm, bt, save,
                                     m, scr, 1);
    cn_conv2d_backward_bn(want_din ? din2 : NULL, dw2, &b, x, w, &d, ws, threads, set);
    CHECK(!memcmp(dw1, dw2, sizeof(float) * wn) &&
              !memcmp(pg, pg + 2 * oc, sizeof(float) * 2 * oc) &&
              !memcmp(din1, din2, sizeof(float) * in_n) && !memcmp(dr1, dr2, sizeof(float) * mo),
          "conv+bn n%d %dx%d c%d oc%d k%d s%d g%d t%d set%d din%d act%d res%d: differs from apart",
          n, h, h, c, oc, d.kh, d.sh, d.groups, threads, set, want_din, (int)act, res);
done:
    free(x); free(w); free(gm); free(bt); free(dy); free(r); free(din0); free(y); free(out);
    free(save); free(rm); free(rv); free(dx); free(din1); free(din2); free(dw1); free(dw2);
    free(pg); free(k); free(dr1); free(dr2); free(ws); free(scr);
}

/* cn_conv2d_forward_train_stats: the output of cn_conv2d_forward_train and the per-image sums of
 * cn_batchnorm_image_sums, bit for bit, on each of its paths and for 1 and 2 threads; and the
 * batch norm forward from those sums against its own pass (to rounding). k: kernel (1: 1x1);
 * groups: depthwise when equal to c. */
static void conv_stats_case(int n, int h, int c, int oc, int k, int groups, int threads) {
    cn_conv_desc d = {n, h, h, c, oc, k, k, 1, 1, k / 2, k / 2, groups, 0, 0};
    cn_conv_desc_init(&d);
    const size_t in_n = (size_t)n * h * h * c, img = (size_t)d.oh * d.ow, mo = (size_t)n * img * oc;
    const size_t wn = (size_t)k * k * (c / groups) * oc;
    float *x = randv(in_n, 1), *w = randv(wn, 0.3f), *y1 = malloc(sizeof(float) * mo);
    float *y2 = malloc(sizeof(float) * mo), *gm = randv(oc, 1), *bt = randv(oc, 1);
    float *b1 = malloc(sizeof(float) * mo), *b2 = malloc(sizeof(float) * mo);
    float *sv1 = malloc(sizeof(float) * 2 * oc), *sv2 = malloc(sizeof(float) * 2 * oc);
    float *rm1 = calloc(oc, sizeof(float)), *rm2 = calloc(oc, sizeof(float));
    float *rv1 = malloc(sizeof(float) * oc), *rv2 = malloc(sizeof(float) * oc);
    double *st = malloc(sizeof(double) * 2 * n * oc), *ref = malloc(sizeof(double) * 2 * n * oc);
    float *ws = malloc(sizeof(float) * cn_conv2d_workspace(&d, threads, 1));
    void *scr = malloc(cn_batchnorm_scratch(oc));
    for (int j = 0; j < oc; j++) rv1[j] = rv2[j] = 1;
    cn_conv2d_forward_train(y1, x, w, NULL, &d, ws, threads);
    cn_conv2d_forward_train_stats(y2, x, w, &d, ws, threads, st);
    for (int i = 0; i < n; i++) cn_batchnorm_image_sums(ref + (size_t)i * 2 * oc, y1 + i * img * oc, img, oc);
    CHECK(!memcmp(y1, y2, sizeof(float) * mo) && !memcmp(st, ref, sizeof(double) * 2 * n * oc),
          "conv stats n%d %dx%d c%d oc%d k%d g%d t%d: output or sums differ", n, h, h, c, oc, k,
          groups, threads);
    /* sums against double loops */
    double worst = 0;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < oc; j++) {
            double a = 0, b = 0;
            for (size_t r = 0; r < img; r++) {
                double v = y1[(i * img + r) * oc + j];
                a += v, b += v * v;
            }
            double e1 = fabs(a - st[(size_t)i * 2 * oc + j]) / (fabs(a) + 1);
            double e2 = fabs(b - st[(size_t)i * 2 * oc + oc + j]) / (b + 1);
            if (e1 > worst) worst = e1;
            if (e2 > worst) worst = e2;
        }
    CHECK(worst < 1e-12, "conv stats n%d c%d oc%d k%d: sums off the double loops by %g", n, c, oc,
          k, worst);
    cn_batchnorm_res_forward_train(b1, sv1, rm1, rv1, y1, NULL, gm, bt, (size_t)n * img, oc,
                                   1e-5f, 0.1f, scr, CN_ACT_RELU);
    cn_batchnorm_res_forward_train_sums(b2, sv2, rm2, rv2, y1, NULL, gm, bt, (size_t)n * img, oc,
                                        1e-5f, 0.1f, scr, CN_ACT_RELU, st, n);
    double e = max_rel_err(b2, b1, mo, 1.0);
    double es = max_rel_err(sv2, sv1, 2 * oc, 1.0), er = max_rel_err(rv2, rv1, oc, 1.0);
    CHECK(e < 1e-5 && es < 1e-6 && er < 1e-6,
          "bn from image sums n%d c%d oc%d: y %g, mean/invstd %g, running var %g", n, c, oc, e,
          es, er);
    free(x); free(w); free(y1); free(y2); free(gm); free(bt); free(b1); free(b2); free(sv1);
    free(sv2); free(rm1); free(rm2); free(rv1); free(rv2); free(st); free(ref); free(ws);
    free(scr);
}

/* the big-block allocators (core/mem.c): zeroed where promised, aligned (to a huge page from
 * one huge page up), every byte writable, freed without complaint (AddressSanitizer's build) */
static void mem_case(size_t bytes) {
    unsigned char *z = cn_alloc_zeroed(bytes);
    CHECK(z != NULL, "cn_alloc_zeroed(%zu) failed", bytes);
    if (z) {
        size_t nz = 0;
        for (size_t i = 0; i < bytes; i++) nz += z[i] != 0;
        CHECK(nz == 0, "cn_alloc_zeroed(%zu): %zu bytes not zero", bytes, nz);
        if (bytes >= CN_HUGE_PAGE)
            CHECK((uintptr_t)z % CN_HUGE_PAGE == 0, "cn_alloc_zeroed(%zu) not huge-page aligned",
                  bytes);
        memset(z, 0x5a, bytes);
        CHECK(bytes == 0 || z[bytes - 1] == 0x5a, "cn_alloc_zeroed(%zu): last byte", bytes);
        cn_free_zeroed(z, bytes);
    }
    float *h = cn_alloc_huge(bytes);
    CHECK(h != NULL, "cn_alloc_huge(%zu) failed", bytes);
    if (h) {
        const size_t align = bytes >= CN_HUGE_PAGE ? CN_HUGE_PAGE : 64;
        CHECK((uintptr_t)h % align == 0, "cn_alloc_huge(%zu) not %zu-byte aligned", bytes, align);
        memset(h, 0x33, bytes);
        free(h);
    }
}

int main(void) {
    rng = cn_rng_make(1234, 0, 0);
    verbose = getenv("CN_TEST_VERBOSE") != NULL;
    phase("start");
    {
        static const size_t sizes[] = {0, 1, 4096, CN_HUGE_PAGE - 1, CN_HUGE_PAGE,
                                       CN_HUGE_PAGE + 4, (size_t)5 << 20};
        for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) mem_case(sizes[i]);
    }
    {
        static const int cs[] = {1, 7, 16, 31, 33, 96, 100};
        for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++) {
            for (int v = 0; v < 2; v++) {
                bn_sums_case(0, 1, cs[i], v);
                bn_sums_case(3, 67, cs[i], v);
                bn_sums_case(0, 300, cs[i], v);
            }
        }
    }
    int threads[] = {1, 2, 3};
    for (int t = 0; t < 3; t++) {
        conv_case(2, 7, 5, 3, 4, 3, 1, 1, 1, threads[t]);
        conv_case(3, 9, 9, 4, 6, 3, 2, 1, 1, threads[t]);
        conv_case(2, 8, 8, 8, 16, 1, 1, 0, 1, threads[t]);
        conv_case(2, 8, 8, 8, 16, 1, 2, 0, 1, threads[t]);
        conv_case(1, 1, 1, 5, 7, 1, 1, 0, 1, threads[t]);
        conv_case(2, 3, 3, 5, 7, 3, 1, 1, 1, threads[t]);
        conv_case(2, 11, 13, 6, 9, 5, 2, 2, 3, threads[t]);
        conv_case(2, 10, 7, 8, 8, 3, 1, 1, 8, threads[t]);
        conv_case(3, 9, 11, 12, 12, 5, 2, 2, 12, threads[t]);
        conv_case(2, 15, 15, 3, 8, 7, 2, 3, 1, threads[t]);
        /* stride 2 by the implicit GEMM on the row phases (65 computed pixels an image or
         * more): odd sizes (the padded width made even), no padding, 5x5, channel counts past
         * the direct kernels'; and below that size, by im2col */
        conv_case(1, 27, 25, 72, 20, 3, 2, 1, 1, threads[t]);
        conv_case(2, 26, 24, 17, 9, 3, 2, 0, 1, threads[t]);
        conv_case(3, 22, 21, 65, 12, 5, 2, 2, 1, threads[t]);
        conv_case(2, 28, 28, 96, 40, 3, 2, 1, 1, threads[t]);
        conv_case(1, 28, 28, 128, 64, 3, 2, 1, 1, threads[t]);
        /* fewer images than two a thread, 64 output channels a thread or more: the threads
         * split the channels of each image (implicit_image_team), a share off whole vectors */
        conv_case(1, 20, 18, 40, 200, 3, 2, 1, 1, threads[t]);
        conv_case(3, 12, 12, 24, 136, 3, 1, 1, 1, threads[t]);
        conv_case(4, 14, 14, 96, 40, 3, 2, 1, 1, threads[t]);
        conv_case(4, 28, 28, 16, 16, 3, 1, 1, 1, threads[t]);
        conv_case(2, 56, 56, 64, 64, 3, 1, 1, 1, threads[t]);
        conv_case(2, 40, 48, 32, 32, 3, 1, 1, 1, threads[t]);
        conv_case(2, 28, 28, 128, 128, 3, 1, 1, 1, threads[t]);
        conv_case(1, 14, 14, 256, 256, 3, 1, 1, 1, threads[t]);
        /* weights past PW_ONE_GEMM_MIN_WEIGHTS floats at a batch: im2col in one GEMM threaded
         * inside (a 3x3 stride-2 layer below the implicit GEMM's size, a 1x1 stride-2 one), an
         * odd channel count */
        conv_case(3, 8, 8, 128, 130, 3, 2, 1, 1, threads[t]);
        conv_case(2, 6, 6, 520, 300, 1, 2, 0, 1, threads[t]);
        /* 1x1 images under a padded 3x3 kernel; width 1; height 1 */
        conv_case(2, 1, 1, 5, 7, 3, 1, 1, 1, threads[t]);
        conv_case(3, 1, 1, 4, 6, 3, 2, 1, 1, threads[t]);
        conv_case(1, 1, 1, 6, 6, 3, 1, 1, 6, threads[t]);
        conv_case(2, 9, 1, 3, 4, 3, 1, 1, 1, threads[t]);
        conv_case(2, 9, 1, 3, 5, 3, 2, 1, 1, threads[t]);
        conv_case(3, 1, 9, 6, 4, 3, 1, 1, 1, threads[t]);
        /* groups == channels with a channel multiplier (not the depthwise kernel) */
        conv_case(2, 6, 6, 4, 8, 3, 1, 1, 4, threads[t]);
        /* batch 1, big images: row chunks inside one image (the first fits one chunk, the second
         * takes several with a tail) */
        conv_case(1, 64, 64, 8, 16, 3, 2, 1, 1, threads[t]);
        conv_case(1, 64, 64, 16, 16, 3, 1, 1, 1, threads[t]);
        /* pointwise, whose epilogue runs inside the GEMM: GEMV, swapped and packed paths */
        conv_case(1, 1, 2, 40, 24, 1, 1, 0, 1, threads[t]);
        conv_case(1, 7, 7, 64, 96, 1, 1, 0, 1, threads[t]);
        conv_case(1, 40, 40, 16, 96, 1, 1, 0, 1, threads[t]);
        conv_case(3, 14, 14, 96, 40, 1, 1, 0, 1, threads[t]);
    }
    /* a small map under wide weights (dW over 1 MB): the weight gradient by the GEMM over all
     * images, and the blocked transpose of the flipped weights with channel tails (after the
     * cases above, so that their random data stays what it was) */
    for (int t = 0; t < 3; t++) {
        conv_case(2, 5, 6, 100, 300, 3, 1, 1, 1, threads[t]);
        conv_case(1, 7, 7, 300, 100, 3, 2, 1, 1, threads[t]);
    }
    /* under 65 output pixels a batch (not 16, 32, 48 or 64): one GEMM per kernel row on rows
     * gathered from the input (conv_compact), stride 1 and 2 (9C over 4096), padded or not,
     * several images */
    for (int t = 0; t < 3; t++) {
        conv_case(1, 13, 13, 464, 24, 3, 2, 1, 1, threads[t]);
        conv_case(2, 9, 7, 470, 20, 3, 2, 1, 1, threads[t]);
        conv_case(1, 9, 8, 36, 20, 3, 1, 0, 1, threads[t]);
        conv_case(1, 7, 7, 48, 70, 3, 1, 1, 1, threads[t]);
    }
    /* Winograd in training wherever the shape allows (cn_winograd_force(1)): channel counts off
     * the vector width, a map not a multiple of the 4x4 tile, one tile, both layouts of U
     * (cn_wino_transposed: above 128 x 128 channels), so both the transposing and the direct
     * weight transforms of the forward and of the data gradient */
    cn_winograd_force(1);
    for (int t = 1; t <= 2; t++) {
        conv_case(2, 7, 5, 3, 4, 3, 1, 1, 1, t);
        conv_case(3, 9, 11, 13, 22, 3, 1, 1, 1, t);
        conv_case(1, 1, 1, 9, 17, 3, 1, 1, 1, t);
        conv_case(2, 10, 6, 100, 300, 3, 1, 1, 1, t);
        conv_case(1, 6, 7, 260, 70, 3, 1, 1, 1, t);
    }
    cn_winograd_force(-1);
    phase("conv vs direct loops");
    /* per-image rows*K above 2^21 floats: serial row chunks that straddle images */
    conv_case_sampled(2, 128, 128, 64, 64, 3, 1, 1, 2);
    /* the one-GEMM im2col over more rows than a chunk holds (1152 > 4M / 4096) */
    conv_case_sampled(2, 48, 48, 4096, 40, 1, 2, 0, 2);

    phase("conv big (sampled)");
    /* finite differences */
    for (int t = 1; t <= 2; t++) {
        conv_gc(2, 5, 6, 3, 4, 3, 1, 1, 1, t, G_ALL);   /* 3x3 s1 p1 */
        conv_gc(3, 7, 7, 5, 6, 3, 2, 1, 1, t, G_ALL);   /* 3x3 s2 p1, odd input */
        conv_gc(1, 9, 7, 3, 5, 5, 2, 2, 1, t, G_ALL);   /* 5x5 s2 p2 */
        conv_gc(2, 11, 9, 3, 4, 7, 2, 3, 1, t, G_ALL);  /* 7x7 s2 p3 */
        conv_gc(3, 4, 5, 17, 5, 1, 1, 0, 1, t, G_ALL);  /* 1x1 s1 (pointwise) */
        conv_gc(2, 5, 5, 5, 3, 1, 2, 0, 1, t, G_ALL);   /* 1x1 s2 */
        conv_gc(2, 6, 5, 4, 6, 3, 1, 1, 2, t, G_ALL);   /* groups 2 */
        conv_gc(1, 7, 7, 6, 9, 3, 2, 1, 3, t, G_ALL);   /* groups 3 */
        conv_gc(2, 6, 7, 5, 5, 3, 1, 1, 5, t, G_ALL);   /* depthwise 3x3 s1 */
        conv_gc(3, 7, 5, 17, 17, 3, 2, 1, 17, t, G_ALL); /* depthwise 3x3 s2 */
        conv_gc(1, 9, 9, 3, 3, 5, 1, 2, 3, t, G_ALL);   /* depthwise 5x5 s1 */
        conv_gc(2, 9, 8, 5, 5, 5, 2, 2, 5, t, G_ALL);   /* depthwise 5x5 s2 */
        conv_gc(2, 1, 1, 3, 4, 3, 1, 1, 1, t, G_ALL);   /* 1x1 image, padded 3x3 */
        /* some gradients not requested (NULL), and no bias */
        conv_gc(2, 5, 6, 3, 4, 3, 2, 1, 1, t, G_IN);
        conv_gc(2, 5, 6, 3, 4, 3, 2, 1, 1, t, G_W);
        conv_gc(2, 5, 6, 3, 4, 3, 2, 1, 1, t, G_B | HAS_BIAS);
        conv_gc(3, 4, 5, 6, 5, 1, 1, 0, 1, t, G_W | HAS_BIAS);
        conv_gc(2, 6, 7, 5, 5, 3, 1, 1, 5, t, G_IN | HAS_BIAS);
        conv_gc(2, 6, 7, 5, 5, 3, 1, 1, 5, t, G_W);
    }
    phase("conv finite differences");
    bn_gc(3, 1, 1, 5, G_ALL);
    bn_gc(2, 3, 3, 17, G_ALL);
    bn_gc(1, 5, 7, 3, G_ALL);
    bn_gc(3, 4, 4, 1, G_ALL);
    bn_gc(2, 3, 3, 5, G_IN);
    bn_gc(2, 3, 3, 5, G_W | G_B);
    bn_gc(2, 3, 3, 5, G_W);
    bn_values(3, 5, 1);
    bn_values(35, 3, 1);
    bn_values(1000, 17, 1);
    bn_values(4000, 3, 50);
    relu_gc(1);
    relu_gc(37);
    relu_gc(1000);
    add_gc(1);
    add_gc(37);
    add_gc(1000);
    pool_gc(1, 2, 7, 7, 3, 3, 2, 1);
    pool_gc(1, 1, 1, 1, 5, 3, 2, 1);
    pool_gc(1, 3, 6, 5, 17, 3, 2, 1);
    pool_gc(1, 2, 7, 5, 3, 2, 2, 0);
    pool_gc(1, 1, 4, 4, 1, 2, 2, 0);
    pool_gc(0, 2, 5, 7, 3, 3, 1, 1);
    pool_gc(0, 1, 1, 1, 5, 3, 1, 1);
    pool_gc(0, 3, 7, 5, 17, 2, 2, 0);
    pool_gc(0, 1, 2, 2, 1, 2, 2, 0);
    gap_gc(3, 1, 5);
    gap_gc(2, 35, 17);
    gap_gc(1, 16, 3);
    shortcut_gc(2, 5, 7, 3, 5, 1);
    shortcut_gc(1, 3, 3, 3, 3, 1);
    shortcut_gc(3, 7, 9, 5, 10, 2);
    shortcut_gc(2, 6, 6, 4, 8, 2);
    shortcut_gc(1, 1, 1, 1, 3, 2);
    flatten_gc(2, 3, 5, 4);
    flatten_gc(1, 1, 1, 17);
    flatten_gc(3, 2, 1, 5);
    linear_gc(1, 1, 1, G_ALL);
    linear_gc(3, 17, 5, G_ALL);
    linear_gc(2, 64, 10, G_ALL);
    linear_gc(5, 3, 33, G_ALL);
    linear_gc(2, 5, 3, G_IN | G_W);
    linear_gc(2, 5, 3, G_W | HAS_BIAS);
    linear_gc(2, 5, 3, G_IN | G_B | HAS_BIAS);
    for (int s = 0; s < 2; s++) {
        float sm = s ? 0.1f : 0.0f;
        xent_gc(1, 3, sm);
        xent_gc(3, 5, sm);
        xent_gc(4, 10, sm);
        xent_gc(2, 100, sm);
        xent_gc(3, 1, sm);
    }
    /* batch norm backward that sets dx: the same bits as accumulating into zeros, and it never
     * reads dx (NaN there must not leak) */
    for (int act = CN_ACT_NONE; act <= CN_ACT_SILU; act++) {
        size_t m = 301;
        int c = 37;
        float *x = randv(m * c, 1), *dy = randv(m * c, 1), *gm = randv(c, 1), *bt = randv(c, 1);
        float *y = malloc(sizeof(float) * m * c), *save = malloc(sizeof(float) * 2 * c);
        float *rm = calloc(c, sizeof(float)), *rv = malloc(sizeof(float) * c);
        float *d1 = calloc(m * c, sizeof(float)), *d2 = malloc(sizeof(float) * m * c);
        float *g1 = calloc(c, sizeof(float)), *g2 = calloc(c, sizeof(float));
        float *b1 = calloc(c, sizeof(float)), *b2 = calloc(c, sizeof(float));
        for (int j = 0; j < c; j++) rv[j] = 1;
        for (size_t i = 0; i < m * c; i++) d2[i] = NAN;
        void *scr = malloc(cn_batchnorm_scratch(c));
        cn_batchnorm_act_forward_train(y, save, rm, rv, x, gm, bt, m, c, 1e-5f, 0.1f, scr, (cn_act)act);
        cn_batchnorm_act_backward_train(d1, g1, b1, dy, x, gm, bt, save, m, c, scr, (cn_act)act, y);
        cn_batchnorm_act_backward_train_set(d2, g2, b2, dy, x, gm, bt, save, m, c, scr, (cn_act)act, y);
        CHECK(!memcmp(d1, d2, sizeof(float) * m * c) && !memcmp(g1, g2, sizeof(float) * c) &&
                  !memcmp(b1, b2, sizeof(float) * c),
              "batchnorm backward set != accumulate into zeros (act %d)", act);
        free(x); free(dy); free(gm); free(bt); free(y); free(save); free(rm); free(rv);
        free(d1); free(d2); free(g1); free(g2); free(b1); free(b2); free(scr);
    }
    /* a residual block's end in the batch norm (cn_batchnorm_res_*): relu(bn(x) + res) and its
     * backward against the three ops apart, bit for bit (forward train and eval, dx, dres, dgamma,
     * dbeta, running statistics); dres added to (from random values) or set (from NaN) */
    for (int act = CN_ACT_NONE; act <= CN_ACT_RELU; act++)
        for (int shape = 0; shape < 2; shape++) {
            const size_t m = shape ? 4 * 7 * 7 : 301;
            const int c = shape ? 16 : 37;
            const size_t mc = m * c;
            float *x = randv(mc, 1), *res = randv(mc, 1), *dy = randv(mc, 1);
            float *gm = randv(c, 1), *bt = randv(c, 1), *dr0 = randv(mc, 1);
            float *y1 = malloc(sizeof(float) * mc), *y2 = malloc(sizeof(float) * mc);
            float *s1 = malloc(sizeof(float) * 2 * c), *s2 = malloc(sizeof(float) * 2 * c);
            float *rm1 = calloc(c, sizeof(float)), *rm2 = calloc(c, sizeof(float));
            float *rv1 = malloc(sizeof(float) * c), *rv2 = malloc(sizeof(float) * c);
            float *dx1 = calloc(mc, sizeof(float)), *dx2 = calloc(mc, sizeof(float));
            float *dr1 = malloc(sizeof(float) * mc), *dr2 = malloc(sizeof(float) * mc);
            float *g = malloc(sizeof(float) * mc), *dx3 = malloc(sizeof(float) * mc);
            float *dr3 = malloc(sizeof(float) * mc), *t = malloc(sizeof(float) * mc);
            float *pg = calloc(4 * c, sizeof(float)); /* dgamma, dbeta: fused, apart */
            void *scr = malloc(cn_batchnorm_scratch(c));
            for (int j = 0; j < c; j++) rv1[j] = rv2[j] = 1;
            memcpy(dr1, dr0, sizeof(float) * mc);
            memcpy(dr2, dr0, sizeof(float) * mc);
            for (size_t i = 0; i < mc; i++) dx3[i] = dr3[i] = NAN;
            cn_batchnorm_res_forward_train(y1, s1, rm1, rv1, x, res, gm, bt, m, c, 1e-5f, 0.1f,
                                           scr, (cn_act)act);
            cn_batchnorm_forward_train(t, s2, rm2, rv2, x, gm, bt, m, c, 1e-5f, 0.1f, scr);
            cn_add_forward(act == CN_ACT_RELU ? g : y2, t, res, mc);
            if (act == CN_ACT_RELU) cn_relu_forward(y2, g, mc);
            CHECK(!memcmp(y1, y2, sizeof(float) * mc) && !memcmp(s1, s2, sizeof(float) * 2 * c) &&
                      !memcmp(rm1, rm2, sizeof(float) * c) && !memcmp(rv1, rv2, sizeof(float) * c),
                  "batchnorm+res train forward (act %d, m %zu c %d) != bn, add, act", act, m, c);
            /* backward apart: the activation's gradient g, added to dres; bn backward of g */
            memset(g, 0, sizeof(float) * mc);
            if (act == CN_ACT_RELU) cn_relu_backward(g, dy, y2, mc); /* g += */
            else memcpy(g, dy, sizeof(float) * mc);
            cn_add_forward(dr2, dr0, g, mc);
            cn_batchnorm_res_backward_train(dx1, dr1, pg, pg + c, dy, x, gm, bt, s1, m, c, scr,
                                            (cn_act)act, y1, 0, 0);
            cn_batchnorm_backward_train(dx2, pg + 2 * c, pg + 3 * c, g, x, gm, s2, m, c, scr);
            CHECK(!memcmp(dx1, dx2, sizeof(float) * mc) && !memcmp(dr1, dr2, sizeof(float) * mc) &&
                      !memcmp(pg, pg + 2 * c, sizeof(float) * 2 * c),
                  "batchnorm+res backward (act %d, m %zu c %d) != act, add, bn backward", act, m,
                  c);
            /* written outright: dx and dres from NaN */
            memset(pg, 0, sizeof(float) * 2 * c);
            cn_batchnorm_res_backward_train(dx3, dr3, pg, pg + c, dy, x, gm, bt, s1, m, c, scr,
                                            (cn_act)act, y1, 1, 1);
            CHECK(!memcmp(dx3, dx2, sizeof(float) * mc) && !memcmp(dr3, g, sizeof(float) * mc) &&
                      !memcmp(pg, pg + 2 * c, sizeof(float) * 2 * c),
                  "batchnorm+res backward set (act %d, m %zu c %d) != act, bn backward", act, m, c);
            /* eval, with the running statistics just updated */
            cn_batchnorm_res_forward_eval(y1, x, res, gm, bt, rm1, rv1, m, c, 1e-5f, scr,
                                          (cn_act)act);
            cn_batchnorm_forward_eval(t, x, gm, bt, rm1, rv1, m, c, 1e-5f, scr);
            cn_add_forward(act == CN_ACT_RELU ? g : y2, t, res, mc);
            if (act == CN_ACT_RELU) cn_relu_forward(y2, g, mc);
            CHECK(!memcmp(y1, y2, sizeof(float) * mc),
                  "batchnorm+res eval (act %d, m %zu c %d) != bn, add, act", act, m, c);
            free(x); free(res); free(dy); free(gm); free(bt); free(dr0); free(y1); free(y2);
            free(s1); free(s2); free(rm1); free(rm2); free(rv1); free(rv2); free(dx1); free(dx2);
            free(dr1); free(dr2); free(g); free(dx3); free(dr3); free(t); free(pg); free(scr);
        }
    /* the convolution's backward with dY from the batch norm (cn_conv2d_backward_bn) */
    for (int t = 1; t <= 2; t++) {
        conv_bn_case(3, 28, 16, 16, t, 1, 1, CN_ACT_RELU, 0);
        conv_bn_case(2, 14, 32, 32, t, 0, 1, CN_ACT_RELU, 1);
        conv_bn_case(4, 7, 9, 17, t, 1, 1, CN_ACT_NONE, 0);
        conv_bn_case(2, 9, 36, 7, t, 0, 1, CN_ACT_SILU, 0);
        conv_bn_case(3, 28, 1, 16, t, 0, 0, CN_ACT_RELU, 0); /* the stem: no input gradient */
        /* 1x1 (EfficientNet's expansions and projections): rows in blocks, several per thread
         * and a ragged last one; a SiLU's gate written over dy */
        conv_bn_case(4, 30, 16, -96, t, 1, 1, CN_ACT_SILU, 0);
        conv_bn_case(3, 17, 144, -24, t, 0, 1, CN_ACT_NONE, 0);
        conv_bn_case(2, 9, 40, -240, t, 1, 1, CN_ACT_SILU, 0);
        conv_bn_case(2, 7, 24, -64, t, 0, 1, CN_ACT_RELU, 1);
        conv_bn_case(1, 3, 8, -5, t, 1, 0, CN_ACT_SILU, 0);
        /* depthwise: a block of images a thread (1 image on wide maps, 4 on narrow ones, 8 on
         * tiny ones); the data gradient as a portable forward (width > 64), on the fast
         * kernels (stride 1, width <= 64), and by gather (stride 2); channel tails */
        dw_bn_case(2, 66, 24, 3, 1, t, 1, 1, CN_ACT_SILU);
        dw_bn_case(2, 40, 48, 3, 1, t, 0, 1, CN_ACT_NONE);
        dw_bn_case(2, 40, 16, 3, 1, t, 1, 0, CN_ACT_SILU);
        dw_bn_case(8, 20, 40, 5, 1, t, 1, 1, CN_ACT_SILU);
        dw_bn_case(16, 5, 44, 3, 1, t, 1, 1, CN_ACT_NONE);
        dw_bn_case(8, 34, 32, 3, 2, t, 0, 1, CN_ACT_SILU);
        dw_bn_case(8, 28, 24, 5, 2, t, 0, 1, CN_ACT_RELU);
    }
    {
        /* not where a thread's share of the weight gradient would split a block of images (3
         * wide images on 2 threads) */
        cn_conv_desc d = {3, 40, 40, 32, 32, 3, 3, 1, 1, 1, 1, 32, 0, 0};
        cn_conv_desc_init(&d);
        CHECK(!cn_conv2d_backward_bn_ok(&d, 2) && cn_conv2d_backward_bn_ok(&d, 1),
              "depthwise conv+bn: taken on 3 images at 2 threads, or not at 1");
    }
    /* a training forward with the batch norm's sums: direct kernels (4 images; 1 image on 2
     * threads: the pass after), the 1x1 GEMM (parallel plan, and 1 thread), Winograd, depthwise */
    for (int t = 1; t <= 2; t++) {
        conv_stats_case(4, 28, 16, 16, 3, 1, t);
        conv_stats_case(1, 14, 32, 17, 3, 1, t);
        conv_stats_case(4, 30, 16, 96, 1, 1, t);
        conv_stats_case(5, 14, 64, 64, 3, 1, t);
        conv_stats_case(3, 12, 24, 24, 3, 24, t);
    }
    {
        /* where it is not taken: stride 2, Winograd's 64-channel layers, fewer images than
         * threads */
        cn_conv_desc s2 = {8, 28, 28, 16, 32, 3, 3, 2, 2, 1, 1, 1, 0, 0};
        cn_conv_desc wi = {8, 28, 28, 64, 64, 3, 3, 1, 1, 1, 1, 1, 0, 0};
        cn_conv_desc one = {1, 28, 28, 16, 16, 3, 3, 1, 1, 1, 1, 1, 0, 0};
        cn_conv_desc_init(&s2), cn_conv_desc_init(&wi), cn_conv_desc_init(&one);
        CHECK(!cn_conv2d_backward_bn_ok(&s2, 2) && !cn_conv2d_backward_bn_ok(&wi, 2) &&
                  !cn_conv2d_backward_bn_ok(&one, 2),
              "cn_conv2d_backward_bn_ok on a shape it does not cover");
    }
    phase("other ops");
    /* the direct kernels against the double-precision loops: output channels in whole vectors
     * (16..64) and with a tail (1, 7, 9, 17, 36: pruned widths), inputs of 1/3/9/16/32 channels,
     * 7x7 and 28x28 maps, stride 1 and 2, 1 and 2 threads, batch 1 and 3 (batch 1 on 2 threads:
     * one image's rows split between the threads) */
    {
        static const int ocs[] = {1, 7, 9, 16, 17, 32, 36, 48, 64};
        static const int cs[] = {1, 3, 9, 16, 32};
        int i = 0;
        for (size_t a = 0; a < sizeof ocs / sizeof *ocs; a++)
            for (size_t b = 0; b < sizeof cs / sizeof *cs; b++, i++) {
                int s = 1 + (i & 1), t = 1 + ((i >> 1) & 1), n = (i >> 2) & 1 ? 3 : 1;
                conv_case(n, 28, 28, cs[b], ocs[a], 3, s, 1, 1, t);
                conv_case(4 - n, 7, 7, cs[b], ocs[a], 3, 3 - s, 1, 1, 3 - t);
            }
        for (int t = 1; t <= 2; t++)
            for (int n = 1; n <= 3; n += 2) {
                conv_case(n, 14, 14, 18, 36, 3, 1, 1, 1, t);
                conv_case(n, 14, 14, 36, 18, 3, 2, 1, 1, t);
                conv_case(n, 28, 28, 16, 9, 3, 1, 1, 1, t);
                conv_case(n, 28, 28, 9, 16, 3, 1, 1, 1, t);
                conv_case(n, 9, 11, 5, 23, 5, 1, 2, 1, t);
                conv_case(n, 15, 13, 3, 13, 7, 2, 3, 1, t);
            }
        /* one image big enough for its rows to be split between threads (odd row count) */
        for (int t = 1; t <= 3; t++) conv_case(1, 57, 57, 24, 17, 3, 1, 1, 1, t);
        for (int t = 1; t <= 2; t++) {
            conv_repeat_case(3, 28, 28, 16, 9, 3, 1, t);
            conv_repeat_case(3, 14, 14, 9, 18, 3, 2, t);
            conv_repeat_case(1, 7, 7, 36, 64, 3, 1, t);
        }
    }
    phase("direct conv kernels vs direct loops");
    {
        static const int ocs[] = {1, 7, 8, 9, 15, 16, 17, 24, 31, 32, 33, 48, 64};
        static const int cs[] = {1, 3, 9, 16, 32};
        static const int ws[] = {1, 5, 7, 13, 14};
        int i = 0;
        for (size_t a = 0; a < sizeof ocs / sizeof *ocs; a++)
            for (size_t b = 0; b < sizeof cs / sizeof *cs; b++)
                for (size_t w = 0; w < sizeof ws / sizeof *ws; w++, i++) {
                    int st = 1 + (i % 3 == 2), oh = 1 + (i * 7) % 6;
                    int oy0 = (i & 1) && oh > 1 ? 1 : 0, oy1 = (i & 2) && oh > 2 ? oh - 1 : oh;
                    dconv_kernel_case(oh, ws[w], cs[b], ocs[a], 3, st, oy0, oy1);
                }
        dconv_kernel_case(5, 9, 5, 23, 5, 1, 0, 5);
        dconv_kernel_case(4, 6, 3, 13, 7, 2, 1, 4);
        dconv_kernel_case(3, 3, 64, 64, 3, 1, 0, 3);
        dconv_kernel_case(7, 7, 64, 40, 3, 1, 2, 7);
    }
    phase("direct conv kernels alone");
    for (int t = 1; t <= 2; t++) {
        conv_gc(2, 6, 5, 3, 9, 3, 1, 1, 1, t, G_ALL);
        conv_gc(1, 7, 7, 9, 17, 3, 2, 1, 1, t, G_ALL);
        conv_gc(3, 5, 5, 17, 7, 3, 1, 1, 1, t, G_ALL);
        conv_gc(1, 4, 4, 1, 1, 3, 1, 1, 1, t, G_ALL);
    }
    phase("direct conv finite differences");
    int rc = check_summary("ops");
    fflush(stdout); /* the line must get out even if LeakSanitizer ends the process at exit */
    return rc;
}
