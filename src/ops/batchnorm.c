/* batchnorm2d on (M, C) rows, M = N*H*W.
 * https://pytorch.org/docs/1.13/generated/torch.nn.BatchNorm2d.html
 *
 * Per-channel sums are taken over a fixed number of row blocks (independent of the thread count)
 * in double precision and then combined in block order: the statistics have the same bits for any
 * number of threads, and stay accurate for the 100k-row batches of training. */
#include <math.h>
#include <string.h>

#include "core/simd.h"
#include "ops/ops.h"

enum { NBLOCKS = 32 };

/* acc[c] = sum over rows, computed blockwise into part (NBLOCKS * 2c doubles); mode 0: x into
 * acc and x^2 into acc2 (one pass for mean and variance: in double, E[x^2] - E[x]^2 loses nothing
 * that matters for float data), 2: dy into acc and dy * (x - mean) into acc2, where dy is zeroed
 * wherever mask (the output of a fused ReLU) is not positive. */
static CN_CLONES void block_sums(double *restrict p, double *restrict p2,
                                 const float *restrict x, const float *restrict dy,
                                 const float *restrict mean, const float *restrict mask,
                                 size_t lo, size_t hi, int c, int mode) {
    for (size_t i = lo; i < hi; i++) {
        const float *xr = x + i * c;
        if (mode == 0) {
            for (int j = 0; j < c; j++) {
                double v = xr[j];
                p[j] += v;
                p2[j] += v * v;
            }
        } else {
            const float *g = dy + i * c, *r = mask ? mask + i * c : NULL;
            for (int j = 0; j < c; j++) {
                float gj = r && !(r[j] > 0) ? 0.0f : g[j];
                p[j] += gj;
                p2[j] += (double)gj * (xr[j] - mean[j]);
            }
        }
    }
}

static void channel_sums(double *acc, double *acc2, double *part, const float *restrict x,
                         const float *restrict dy, const float *restrict mean, size_t m, int c,
                         int mode, const float *restrict mask) {
    memset(part, 0, sizeof(double) * NBLOCKS * 2 * c);
#pragma omp parallel for schedule(static)
    for (int b = 0; b < NBLOCKS; b++) {
        double *p = part + (size_t)b * c * 2;
        block_sums(p, p + c, x, dy, mean, mask, m * b / NBLOCKS, m * (b + 1) / NBLOCKS, c, mode);
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

size_t cn_batchnorm_scratch(int c) { return sizeof(double) * ((size_t)NBLOCKS * 2 * c + 2 * c) + sizeof(float) * 3 * c; }

static CN_CLONES void scale_shift_rows(float *restrict y, const float *restrict x,
                                       const float *restrict sc, const float *restrict sh,
                                       size_t lo, size_t hi, int c, int relu) {
    for (size_t i = lo; i < hi; i++)
        for (int j = 0; j < c; j++) {
            float v = x[i * c + j] * sc[j] + sh[j];
            y[i * c + j] = relu && v < 0 ? 0.0f : v;
        }
}

static void scale_shift(float *restrict y, const float *restrict x, const float *restrict sc,
                        const float *restrict sh, size_t m, int c, int relu) {
    int nb = m < 64 ? 1 : 64;
#pragma omp parallel for schedule(static)
    for (int b = 0; b < nb; b++) scale_shift_rows(y, x, sc, sh, m * b / nb, m * (b + 1) / nb, c, relu);
}

/* dx += k0 * dy' + k1 * x + k2, dy' = dy masked by a fused ReLU's output when mask is set */
static CN_CLONES void bn_dx_rows(float *restrict dx, const float *restrict dy,
                                 const float *restrict x, const float *restrict mask,
                                 const float *restrict k0, const float *restrict k1,
                                 const float *restrict k2, size_t lo, size_t hi, int c) {
    for (size_t i = lo; i < hi; i++)
        for (int j = 0; j < c; j++) {
            float g = dy[i * c + j];
            if (mask && !(mask[i * c + j] > 0)) g = 0.0f;
            dx[i * c + j] += k0[j] * g + k1[j] * x[i * c + j] + k2[j];
        }
}

/* scratch layout: part (NBLOCKS * 2c doubles), sum (2c doubles), k (3c floats) */
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
    cn_batchnorm_relu_forward_train(y, save, running_mean, running_var, x, gamma, beta, m, c, eps,
                                    momentum, scratch, 0);
}

void cn_batchnorm_relu_forward_train(float *y, float *save, float *running_mean,
                                     float *running_var, const float *x, const float *gamma,
                                     const float *beta, size_t m, int c, float eps,
                                     float momentum, void *scratch, int relu) {
    bn_scratch s = split(scratch, c);
    float *mean = save, *invstd = save + c, *sc = s.k, *sh = s.k + c;
    channel_sums(s.sum, s.sum + c, s.part, x, NULL, NULL, m, c, 0, NULL);
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
    scale_shift(y, x, sc, sh, m, c, relu);
}

void cn_batchnorm_forward_eval(float *y, const float *x, const float *gamma, const float *beta,
                               const float *running_mean, const float *running_var, size_t m,
                               int c, float eps, void *scratch) {
    cn_batchnorm_relu_forward_eval(y, x, gamma, beta, running_mean, running_var, m, c, eps,
                                   scratch, 0);
}

void cn_batchnorm_relu_forward_eval(float *y, const float *x, const float *gamma,
                                    const float *beta, const float *running_mean,
                                    const float *running_var, size_t m, int c, float eps,
                                    void *scratch, int relu) {
    float *sc = split(scratch, c).k;
    for (int j = 0; j < c; j++) {
        float inv = (float)(1.0 / sqrt((double)running_var[j] + eps));
        sc[j] = gamma[j] * inv;
        sc[c + j] = beta[j] - running_mean[j] * sc[j];
    }
    scale_shift(y, x, sc, sc + c, m, c, relu);
}

void cn_batchnorm_backward_train(float *dx, float *dgamma, float *dbeta, const float *dy,
                                 const float *x, const float *gamma, const float *save, size_t m,
                                 int c, void *scratch) {
    cn_batchnorm_relu_backward_train(dx, dgamma, dbeta, dy, x, gamma, save, m, c, scratch, NULL);
}

void cn_batchnorm_relu_backward_train(float *dx, float *dgamma, float *dbeta, const float *dy,
                                      const float *x, const float *gamma, const float *save,
                                      size_t m, int c, void *scratch, const float *relu_out) {
    bn_scratch s = split(scratch, c);
    const float *mean = save, *invstd = save + c;
    double *sdy = s.sum, *sdyx = s.sum + c; /* sum(dy), sum(dy * (x - mean)) */
    float *k = s.k;
    channel_sums(sdy, sdyx, s.part, x, dy, mean, m, c, 2, relu_out);
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
    if (dx) {
        int nb = m < 64 ? 1 : 64;
#pragma omp parallel for schedule(static)
        for (int b = 0; b < nb; b++)
            bn_dx_rows(dx, dy, x, relu_out, k, k + c, k + 2 * c, m * b / nb, m * (b + 1) / nb, c);
    }
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
    channel_sums(s.sum, s.sum + c, s.part, x, dy, k, m, c, 2, NULL);
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
