/* batchnorm2d on (M, C) rows, M = N*H*W.
 * https://pytorch.org/docs/1.13/generated/torch.nn.BatchNorm2d.html
 *
 * Per-channel sums are taken over a fixed number of row blocks (independent of the thread count)
 * in double precision and then combined in block order: the statistics have the same bits for any
 * number of threads, and stay accurate for the 100k-row batches of training. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "core/cpu.h"
#include "core/simd.h"
#include "kernels/act.h"
#include "kernels/bn.h"
#include "ops/activation.h"
#include "ops/ops.h"

enum { NBLOCKS = 32 };

/* What the backward sees of a fused activation: the ReLU's output (its mask), or the scale and
 * shift of the normalisation (sc = gamma * invstd, sh = beta - mean * sc) to recompute the SiLU's
 * input from x. */
typedef struct act_in {
    cn_act act;
    const float *mask; /* (M, C) the ReLU output */
    const float *sc, *sh; /* (C) */
    int set;              /* backward: write dx instead of adding to it */
    float *dres;          /* a fused residual add's input gradient (M, C) (cn_batchnorm_res_*),
                             or NULL */
    int res_set;          /* write dres instead of adding to it */
    int g_inplace;        /* a SiLU's gate g written over dy (cn_batchnorm_res_backward_coeffs) */
} act_in;

/* g where the ReLU's output r is positive, else 0: as bit operations, since GCC does not
 * vectorise the select */
static inline float relu_gate(float g, float r) {
    uint32_t b;
    memcpy(&b, &g, sizeof b);
    b &= -(uint32_t)(r > 0);
    memcpy(&g, &b, sizeof b);
    return g;
}

/* gj = g * silu'(x * sc + sh) over n <= SILU_CHUNK channels (the SiLU's input recomputed from
 * the normalisation's input), by the array kernel of kernels/act.h */
enum { SILU_CHUNK = 256 };

static inline void silu_gate(float *restrict gj, const float *restrict g, const float *restrict x,
                             const float *restrict sc, const float *restrict sh, int n) {
    for (int j = 0; j < n; j++) gj[j] = x[j] * sc[j] + sh[j];
    cn_silu_grad_mul_n(gj, g, gj, (size_t)n);
}

/* acc[c] = sum over rows, computed blockwise into part (NBLOCKS * 2c doubles); mode 0: x into
 * acc and x^2 into acc2 (one pass for mean and variance: in double, E[x^2] - E[x]^2 loses nothing
 * that matters for float data), 2: g into acc and g * (x - mean) into acc2, where g is dy through
 * the fused activation's derivative (zeroed wherever a ReLU's output is not positive, multiplied
 * by silu'(x * sc + sh) after a SiLU). */
static CN_CLONES void block_sums(double *restrict p, double *restrict p2,
                                 const float *restrict x, const float *restrict dy,
                                 const float *restrict mean, const act_in *a, size_t lo,
                                 size_t hi, int c, int mode, float *restrict gsave) {
    for (size_t i = lo; i < hi; i++) {
        const float *xr = x + i * c, *g = dy + i * c;
        if (mode == 0) {
            for (int j = 0; j < c; j++) {
                double v = xr[j];
                p[j] += v;
                p2[j] += v * v;
            }
        } else if (a->act == CN_ACT_SILU) {
            for (int j0 = 0; j0 < c; j0 += SILU_CHUNK) {
                const int n = c - j0 < SILU_CHUNK ? c - j0 : SILU_CHUNK;
                /* straight into gsave when there is one (a copy of a row's worth a row took
                 * a fifth of this loop's time, as rep movs) */
                float gbuf[SILU_CHUNK];
                float *restrict gj = gsave ? gsave + i * c + j0 : gbuf;
                silu_gate(gj, g + j0, xr + j0, a->sc + j0, a->sh + j0, n);
                for (int j = 0; j < n; j++) {
                    p[j0 + j] += gj[j];
                    p2[j0 + j] += (double)gj[j] * (xr[j0 + j] - mean[j0 + j]);
                }
                /* dy is the caller's to overwrite (and not const there) */
                if (a->g_inplace) memcpy((float *)(g + j0), gj, sizeof(float) * n);
            }
        } else if (a->act == CN_ACT_RELU) {
            const float *restrict r = a->mask + i * c;
            float *restrict dr = a->dres ? a->dres + i * c : NULL;
            for (int j = 0; j < c; j++) {
                float gj = relu_gate(g[j], r[j]);
                float xc = xr[j] - mean[j];
                p[j] += (double)gj;
                p2[j] += (double)gj * (double)xc;
            }
            /* the residual's gradient: the same gate, while the rows are in L1 */
            if (dr && a->res_set)
                for (int j = 0; j < c; j++) dr[j] = relu_gate(g[j], r[j]);
            else if (dr)
                for (int j = 0; j < c; j++) dr[j] += relu_gate(g[j], r[j]);
        } else {
            float *restrict dr = a->dres ? a->dres + i * c : NULL;
            if (dr && a->res_set) memcpy(dr, g, sizeof(float) * c);
            else if (dr)
                for (int j = 0; j < c; j++) dr[j] += g[j];
            for (int j = 0; j < c; j++) {
                p[j] += g[j];
                p2[j] += (double)g[j] * (xr[j] - mean[j]);
            }
        }
    }
}

/* gsave: where mode 2 with a SiLU also stores g (rows like x), or NULL */
static void channel_sums(double *acc, double *acc2, double *part, const float *restrict x,
                         const float *restrict dy, const float *restrict mean, size_t m, int c,
                         int mode, const act_in *a, float *gsave) {
    memset(part, 0, sizeof(double) * NBLOCKS * 2 * c);
    /* 2: AVX-512, 1: AVX2 */
    const int fast = cn_cpu_avx512() ? 2 : cn_cpu()->avx2 ? 1 : 0;
#pragma omp parallel for schedule(static)
    for (int b = 0; b < NBLOCKS; b++) {
        double *p = part + (size_t)b * c * 2;
        if (mode == 0 && fast == 2)
            cn_bn_sums__avx512(p, p + c, x, m * b / NBLOCKS, m * (b + 1) / NBLOCKS, c);
        else if (mode == 0 && fast == 1)
            cn_bn_sums__avx2(p, p + c, x, m * b / NBLOCKS, m * (b + 1) / NBLOCKS, c);
        else
            block_sums(p, p + c, x, dy, mean, a, m * b / NBLOCKS, m * (b + 1) / NBLOCKS, c, mode,
                       gsave);
    }
    for (int j = 0; j < c; j++) {
        double s = 0, s2 = 0;
        for (int b = 0; b < NBLOCKS; b++) {
            s += part[(size_t)b * c * 2 + j];
            s2 += part[(size_t)b * c * 2 + c + j];
        }
        acc[j] = s;
        if (acc2) acc2[j] = s2;
    }
}

size_t cn_batchnorm_scratch(int c) { return sizeof(double) * ((size_t)NBLOCKS * 2 * c + 2 * c) + sizeof(float) * 5 * c; }

/* y = act(x * sc + sh), or act(x * sc + sh + res) with a residual (act NONE or RELU) */
static CN_CLONES void scale_shift_rows(float *restrict y, const float *restrict x,
                                       const float *restrict res, const float *restrict sc,
                                       const float *restrict sh, size_t lo, size_t hi, int c,
                                       cn_act act) {
    for (size_t i = lo; i < hi; i++) {
        const float *xr = x + i * c;
        float *yr = y + i * c;
        if (res) {
            const float *rr = res + i * c;
            if (act == CN_ACT_RELU)
                for (int j = 0; j < c; j++) {
                    float v = (xr[j] * sc[j] + sh[j]) + rr[j];
                    yr[j] = v < 0 ? 0.0f : v;
                }
            else
                for (int j = 0; j < c; j++) yr[j] = (xr[j] * sc[j] + sh[j]) + rr[j];
        } else if (act == CN_ACT_SILU) {
            for (int j = 0; j < c; j++) yr[j] = xr[j] * sc[j] + sh[j];
            cn_silu_n(yr, yr, (size_t)c);
        } else if (act == CN_ACT_RELU)
            for (int j = 0; j < c; j++) {
                float v = xr[j] * sc[j] + sh[j];
                yr[j] = v < 0 ? 0.0f : v;
            }
        else
            for (int j = 0; j < c; j++) yr[j] = xr[j] * sc[j] + sh[j];
    }
}

static void scale_shift(float *restrict y, const float *restrict x, const float *restrict res,
                        const float *restrict sc, const float *restrict sh, size_t m, int c,
                        cn_act act) {
    int nb = m < 64 ? 1 : 64;
#pragma omp parallel for schedule(static)
    for (int b = 0; b < nb; b++)
        scale_shift_rows(y, x, res, sc, sh, m * b / nb, m * (b + 1) / nb, c, act);
}

/* dx += k0 * g + k1 * x + k2 (or dx = ... with a->set, never reading dx), g = dy through the
 * fused activation's derivative (see block_sums) */
static CN_CLONES void bn_dx_rows(float *restrict dx, const float *restrict dy,
                                 const float *restrict x, const act_in *a,
                                 const float *restrict k0, const float *restrict k1,
                                 const float *restrict k2, size_t lo, size_t hi, int c) {
    for (size_t i = lo; i < hi; i++) {
        const float *xr = x + i * c, *g = dy + i * c;
        float *d = dx + i * c;
        if (a->act == CN_ACT_SILU) {
            for (int j0 = 0; j0 < c; j0 += SILU_CHUNK) {
                const int n = c - j0 < SILU_CHUNK ? c - j0 : SILU_CHUNK;
                float gj[SILU_CHUNK];
                silu_gate(gj, g + j0, xr + j0, a->sc + j0, a->sh + j0, n);
                const float *xj = xr + j0, *q0 = k0 + j0, *q1 = k1 + j0, *q2 = k2 + j0;
                float *dj = d + j0;
                if (a->set)
                    for (int j = 0; j < n; j++) dj[j] = q0[j] * gj[j] + q1[j] * xj[j] + q2[j];
                else
                    for (int j = 0; j < n; j++) dj[j] += q0[j] * gj[j] + q1[j] * xj[j] + q2[j];
            }
        } else if (a->act == CN_ACT_RELU) {
            const float *restrict r = a->mask + i * c;
            if (a->set)
                for (int j = 0; j < c; j++) {
                    float gj = relu_gate(g[j], r[j]);
                    d[j] = k0[j] * gj + k1[j] * xr[j] + k2[j];
                }
            else
                for (int j = 0; j < c; j++) {
                    float gj = relu_gate(g[j], r[j]);
                    d[j] += k0[j] * gj + k1[j] * xr[j] + k2[j];
                }
        } else if (a->set) {
            for (int j = 0; j < c; j++) d[j] = k0[j] * g[j] + k1[j] * xr[j] + k2[j];
        } else {
            for (int j = 0; j < c; j++) d[j] += k0[j] * g[j] + k1[j] * xr[j] + k2[j];
        }
    }
}

/* dx = k0 * g + k1 * x + k2 where dx holds g (see channel_sums' gsave) */
static CN_CLONES void bn_dx_from_g(float *restrict dx, const float *restrict x,
                                   const float *restrict k0, const float *restrict k1,
                                   const float *restrict k2, size_t lo, size_t hi, int c) {
    for (size_t i = lo; i < hi; i++) {
        const float *xr = x + i * c;
        float *d = dx + i * c;
        for (int j = 0; j < c; j++) d[j] = k0[j] * d[j] + k1[j] * xr[j] + k2[j];
    }
}

/* scratch layout: part (NBLOCKS * 2c doubles), sum (2c doubles), k (5c floats: the dx
 * coefficients, then the SiLU's scale and shift) */
typedef struct bn_scratch {
    double *part, *sum;
    float *k;
} bn_scratch;

static bn_scratch split(void *scratch, int c) {
    bn_scratch s;
    s.part = scratch;
    s.sum = s.part + (size_t)NBLOCKS * 2 * c;
    s.k = (float *)(s.sum + 2 * c);
    return s;
}

void cn_batchnorm_forward_train(float *y, float *save, float *running_mean, float *running_var,
                                const float *x, const float *gamma, const float *beta, size_t m,
                                int c, float eps, float momentum, void *scratch) {
    cn_batchnorm_act_forward_train(y, save, running_mean, running_var, x, gamma, beta, m, c, eps,
                                   momentum, scratch, CN_ACT_NONE);
}

void cn_batchnorm_relu_forward_train(float *y, float *save, float *running_mean,
                                     float *running_var, const float *x, const float *gamma,
                                     const float *beta, size_t m, int c, float eps,
                                     float momentum, void *scratch, int relu) {
    cn_batchnorm_act_forward_train(y, save, running_mean, running_var, x, gamma, beta, m, c, eps,
                                   momentum, scratch, relu ? CN_ACT_RELU : CN_ACT_NONE);
}

void cn_batchnorm_act_forward_train(float *y, float *save, float *running_mean, float *running_var,
                                    const float *x, const float *gamma, const float *beta,
                                    size_t m, int c, float eps, float momentum, void *scratch,
                                    cn_act act) {
    cn_batchnorm_res_forward_train(y, save, running_mean, running_var, x, NULL, gamma, beta, m, c,
                                   eps, momentum, scratch, act);
}

/* the training forward once the channel sums (s.sum: C sums, then C sums of squares) are known */
static void forward_from_sums(float *y, float *save, float *running_mean, float *running_var,
                              const float *x, const float *res, const float *gamma,
                              const float *beta, size_t m, int c, float eps, float momentum,
                              bn_scratch s, cn_act act) {
    float *mean = save, *invstd = save + c, *sc = s.k, *sh = s.k + c;
    for (int j = 0; j < c; j++) {
        double mu = s.sum[j] / (double)m;
        double ss = s.sum[c + j] - s.sum[j] * mu; /* sum of squared deviations */
        if (ss < 0) ss = 0;
        double var = ss / (double)m;
        mean[j] = (float)mu;
        invstd[j] = (float)(1.0 / sqrt(var + eps));
        sc[j] = gamma[j] * invstd[j];
        sh[j] = beta[j] - mean[j] * sc[j];
        if (running_mean) {
            double unbiased = m > 1 ? ss / (double)(m - 1) : var;
            running_mean[j] = (1 - momentum) * running_mean[j] + momentum * mean[j];
            running_var[j] = (float)((1 - momentum) * running_var[j] + momentum * unbiased);
        }
    }
    scale_shift(y, x, res, sc, sh, m, c, act);
}

void cn_batchnorm_res_forward_train(float *y, float *save, float *running_mean, float *running_var,
                                    const float *x, const float *res, const float *gamma,
                                    const float *beta, size_t m, int c, float eps, float momentum,
                                    void *scratch, cn_act act) {
    bn_scratch s = split(scratch, c);
    channel_sums(s.sum, s.sum + c, s.part, x, NULL, NULL, m, c, 0, NULL, NULL);
    forward_from_sums(y, save, running_mean, running_var, x, res, gamma, beta, m, c, eps,
                      momentum, s, act);
}

void cn_batchnorm_image_sums(double *sums, const float *x, size_t rows, int c) {
    memset(sums, 0, sizeof(double) * 2 * c);
    if (cn_cpu_avx512()) cn_bn_sums__avx512(sums, sums + c, x, 0, rows, c);
    else if (cn_cpu()->avx2) cn_bn_sums__avx2(sums, sums + c, x, 0, rows, c);
    else block_sums(sums, sums + c, x, NULL, NULL, NULL, 0, rows, c, 0, NULL);
}

void cn_batchnorm_res_forward_train_sums(float *y, float *save, float *running_mean,
                                         float *running_var, const float *x, const float *res,
                                         const float *gamma, const float *beta, size_t m, int c,
                                         float eps, float momentum, void *scratch, cn_act act,
                                         const double *img_sums, int nimg) {
    bn_scratch s = split(scratch, c);
    for (int j = 0; j < c; j++) {
        double a = 0, b = 0;
        for (int i = 0; i < nimg; i++) {
            a += img_sums[(size_t)i * 2 * c + j];
            b += img_sums[(size_t)i * 2 * c + c + j];
        }
        s.sum[j] = a;
        s.sum[c + j] = b;
    }
    forward_from_sums(y, save, running_mean, running_var, x, res, gamma, beta, m, c, eps,
                      momentum, s, act);
}

void cn_batchnorm_forward_eval(float *y, const float *x, const float *gamma, const float *beta,
                               const float *running_mean, const float *running_var, size_t m,
                               int c, float eps, void *scratch) {
    cn_batchnorm_act_forward_eval(y, x, gamma, beta, running_mean, running_var, m, c, eps,
                                  scratch, CN_ACT_NONE);
}

void cn_batchnorm_relu_forward_eval(float *y, const float *x, const float *gamma,
                                    const float *beta, const float *running_mean,
                                    const float *running_var, size_t m, int c, float eps,
                                    void *scratch, int relu) {
    cn_batchnorm_act_forward_eval(y, x, gamma, beta, running_mean, running_var, m, c, eps,
                                  scratch, relu ? CN_ACT_RELU : CN_ACT_NONE);
}

void cn_batchnorm_act_forward_eval(float *y, const float *x, const float *gamma, const float *beta,
                                   const float *running_mean, const float *running_var, size_t m,
                                   int c, float eps, void *scratch, cn_act act) {
    cn_batchnorm_res_forward_eval(y, x, NULL, gamma, beta, running_mean, running_var, m, c, eps,
                                  scratch, act);
}

void cn_batchnorm_res_forward_eval(float *y, const float *x, const float *res, const float *gamma,
                                   const float *beta, const float *running_mean,
                                   const float *running_var, size_t m, int c, float eps,
                                   void *scratch, cn_act act) {
    float *sc = split(scratch, c).k;
    for (int j = 0; j < c; j++) {
        float inv = (float)(1.0 / sqrt((double)running_var[j] + eps));
        sc[j] = gamma[j] * inv;
        sc[c + j] = beta[j] - running_mean[j] * sc[j];
    }
    scale_shift(y, x, res, sc, sc + c, m, c, act);
}

void cn_batchnorm_backward_train(float *dx, float *dgamma, float *dbeta, const float *dy,
                                 const float *x, const float *gamma, const float *save, size_t m,
                                 int c, void *scratch) {
    cn_batchnorm_act_backward_train(dx, dgamma, dbeta, dy, x, gamma, NULL, save, m, c, scratch,
                                    CN_ACT_NONE, NULL);
}

void cn_batchnorm_relu_backward_train(float *dx, float *dgamma, float *dbeta, const float *dy,
                                      const float *x, const float *gamma, const float *save,
                                      size_t m, int c, void *scratch, const float *relu_out) {
    cn_batchnorm_act_backward_train(dx, dgamma, dbeta, dy, x, gamma, NULL, save, m, c, scratch,
                                    relu_out ? CN_ACT_RELU : CN_ACT_NONE, relu_out);
}

/* The first backward pass: sums, dgamma, dbeta, the residual's gradient, and the coefficients of
 * dx into b (see cn_bn_dx); with gsave (a SiLU's gate kept in dx, set), pass 2 reads it back. */
static void backward_coeffs(cn_bn_dx *b, float *dres, float *dgamma, float *dbeta,
                            const float *gamma, const float *beta, const float *save, size_t m,
                            void *scratch, int res_set, float *gsave, int inplace) {
    const int c = b->c;
    bn_scratch s = split(scratch, c);
    const float *mean = save, *invstd = save + c;
    double *sdy = s.sum, *sdyx = s.sum + c; /* sum(g), sum(g * (x - mean)), g = dL/d(bn output) */
    float *k = b->k, *sc = b->k + 3 * c, *sh = b->k + 4 * c;
    act_in a = {b->act, b->out, sc, sh, 1, dres, res_set, inplace && b->act == CN_ACT_SILU};
    if (b->act == CN_ACT_SILU)
        /* the same expressions as the forward, so the SiLU sees the same input bits */
        for (int j = 0; j < c; j++) {
            sc[j] = gamma[j] * invstd[j];
            sh[j] = beta[j] - mean[j] * sc[j];
        }
    channel_sums(sdy, sdyx, s.part, b->x, b->dy, mean, m, c, 2, &a, gsave);
    for (int j = 0; j < c; j++) {
        if (dbeta) dbeta[j] += (float)sdy[j];
        if (dgamma) dgamma[j] += (float)(sdyx[j] * invstd[j]);
        /* dx = gamma*invstd * (dy - mean(dy) - xhat * mean(dy*xhat)) written as a*dy + b*x + e */
        double a = (double)gamma[j] * invstd[j];
        double mdy = sdy[j] / (double)m;
        double mdyx = sdyx[j] * invstd[j] * invstd[j] / (double)m;
        k[j] = (float)a;
        k[c + j] = (float)(-a * mdyx);
        k[2 * c + j] = (float)(-a * (mdy - mdyx * mean[j]));
    }
    if (a.g_inplace) {
        /* dy now holds g: dx = k0 * g + k1 * x + k2 needs nothing of the SiLU */
        b->act = CN_ACT_NONE;
        b->out = NULL;
    }
}

void cn_batchnorm_res_backward_coeffs(cn_bn_dx *b, float *dres, float *dgamma, float *dbeta,
                                      const float *gamma, const float *beta, const float *save,
                                      size_t m, void *scratch, int res_set) {
    backward_coeffs(b, dres, dgamma, dbeta, gamma, beta, save, m, scratch, res_set, NULL, 1);
}

void cn_batchnorm_dx_rows(const cn_bn_dx *b, float *dx, size_t lo, size_t hi) {
    const int c = b->c;
    const float *k = b->k;
    const size_t o = lo * (size_t)c;
    act_in a = {b->act, b->out ? b->out + o : NULL, k + 3 * c, k + 4 * c, 1, NULL, 0, 0};
    bn_dx_rows(dx, b->dy + o, b->x + o, &a, k, k + c, k + 2 * c, 0, hi - lo, c);
}

void cn_batchnorm_res_backward_train(float *dx, float *dres, float *dgamma, float *dbeta,
                                     const float *dy, const float *x, const float *gamma,
                                     const float *beta, const float *save, size_t m, int c,
                                     void *scratch, cn_act act, const float *out, int set,
                                     int res_set) {
    cn_bn_dx b = {(float *)dy, x, out, act, c, split(scratch, c).k}; /* dy is only read here */
    /* a SiLU's gate g = dy * silu'(.) is computed once: kept in dx when dx is only written */
    float *gsave = act == CN_ACT_SILU && dx && set ? dx : NULL;
    backward_coeffs(&b, dres, dgamma, dbeta, gamma, beta, save, m, scratch, res_set, gsave, 0);
    if (dx) {
        const float *k = b.k;
        act_in a = {act, out, k + 3 * c, k + 4 * c, set, NULL, 0, 0};
        int nb = m < 64 ? 1 : 64;
#pragma omp parallel for schedule(static)
        for (int i = 0; i < nb; i++) {
            if (gsave)
                bn_dx_from_g(dx, x, k, k + c, k + 2 * c, m * i / nb, m * (i + 1) / nb, c);
            else
                bn_dx_rows(dx, dy, x, &a, k, k + c, k + 2 * c, m * i / nb, m * (i + 1) / nb, c);
        }
    }
}

void cn_batchnorm_act_backward_train(float *dx, float *dgamma, float *dbeta, const float *dy,
                                     const float *x, const float *gamma, const float *beta,
                                     const float *save, size_t m, int c, void *scratch,
                                     cn_act act, const float *out) {
    cn_batchnorm_res_backward_train(dx, NULL, dgamma, dbeta, dy, x, gamma, beta, save, m, c,
                                    scratch, act, out, 0, 0);
}

void cn_batchnorm_act_backward_train_set(float *dx, float *dgamma, float *dbeta,
                                         const float *dy, const float *x, const float *gamma,
                                         const float *beta, const float *save, size_t m, int c,
                                         void *scratch, cn_act act, const float *out) {
    cn_batchnorm_res_backward_train(dx, NULL, dgamma, dbeta, dy, x, gamma, beta, save, m, c,
                                    scratch, act, out, 1, 0);
}

void cn_batchnorm_backward_eval(float *dx, float *dgamma, float *dbeta, const float *dy,
                                const float *x, const float *gamma, const float *running_mean,
                                const float *running_var, size_t m, int c, float eps,
                                void *scratch) {
    bn_scratch s = split(scratch, c);
    float *k = s.k; /* mean, invstd, then the dx scale */
    for (int j = 0; j < c; j++) {
        k[j] = running_mean[j];
        k[c + j] = (float)(1.0 / sqrt((double)running_var[j] + eps));
    }
    act_in none = {CN_ACT_NONE, NULL, NULL, NULL, 0, NULL, 0, 0};
    channel_sums(s.sum, s.sum + c, s.part, x, dy, k, m, c, 2, &none, NULL);
    for (int j = 0; j < c; j++) {
        if (dbeta) dbeta[j] += (float)s.sum[j];
        if (dgamma) dgamma[j] += (float)(s.sum[c + j] * k[c + j]);
        k[2 * c + j] = gamma[j] * k[c + j];
    }
    if (dx) {
#pragma omp parallel for schedule(static)
        for (size_t i = 0; i < m; i++)
            for (int j = 0; j < c; j++) dx[i * c + j] += k[2 * c + j] * dy[i * c + j];
    }
}
