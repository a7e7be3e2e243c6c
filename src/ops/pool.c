/* Pooling on NHWC: MaxPool2d, AvgPool2d (count_include_pad=True), AdaptiveAvgPool2d(1).
 * https://pytorch.org/docs/1.13/generated/torch.nn.MaxPool2d.html
 * https://pytorch.org/docs/1.13/generated/torch.nn.AvgPool2d.html
 * https://pytorch.org/docs/1.13/generated/torch.nn.AdaptiveAvgPool2d.html */
#include <float.h>
#include <string.h>

#include "core/simd.h"
#include "ops/ops.h"

/* One output pixel: branch-free selects (the first maximum wins; NaN propagates as in PyTorch),
 * so the channel loops vectorise; argmax NULL in inference. */
static CN_CLONES void maxpool_row(float *restrict out, int32_t *restrict argmax,
                                  const float *restrict in, const cn_conv_desc *d, int n, int oy) {
    int C = d->c;
    for (int ox = 0; ox < d->ow; ox++) {
        size_t o = (((size_t)n * d->oh + oy) * d->ow + ox) * C;
        float *restrict y = out + o;
        int32_t *restrict a = argmax ? argmax + o : NULL;
        for (int c = 0; c < C; c++) y[c] = -FLT_MAX;
        if (a)
            for (int c = 0; c < C; c++) a[c] = -1;
        for (int ky = 0; ky < d->kh; ky++) {
            int iy = oy * d->sh - d->ph + ky;
            if (iy < 0 || iy >= d->h) continue;
            for (int kx = 0; kx < d->kw; kx++) {
                int ix = ox * d->sw - d->pw + kx;
                if (ix < 0 || ix >= d->w) continue;
                int32_t base = (int32_t)((iy * d->w + ix) * C);
                const float *restrict x = in + (size_t)n * d->h * d->w * C + base;
                if (a) {
                    for (int c = 0; c < C; c++) {
                        int take = x[c] > y[c] || x[c] != x[c];
                        y[c] = take ? x[c] : y[c];
                        a[c] = take ? base + c : a[c];
                    }
                } else {
                    for (int c = 0; c < C; c++) y[c] = x[c] > y[c] || x[c] != x[c] ? x[c] : y[c];
                }
            }
        }
    }
}

void cn_maxpool_forward(float *out, int32_t *argmax, const float *in, const cn_conv_desc *d) {
#pragma omp parallel for schedule(static)
    for (int row = 0; row < d->n * d->oh; row++)
        maxpool_row(out, argmax, in, d, row / d->oh, row % d->oh);
}

void cn_maxpool_backward(float *din, const float *dout, const int32_t *argmax,
                         const cn_conv_desc *d) {
    int C = d->c;
    size_t per_out = (size_t)d->oh * d->ow * C, per_in = (size_t)d->h * d->w * C;
#pragma omp parallel for schedule(static)
    for (int n = 0; n < d->n; n++)
        for (size_t i = 0; i < per_out; i++) {
            int32_t a = argmax[n * per_out + i];
            if (a >= 0) din[n * per_in + a] += dout[n * per_out + i];
        }
}

void cn_avgpool_forward(float *out, const float *in, const cn_conv_desc *d) {
    int C = d->c;
    float inv = 1.0f / (float)(d->kh * d->kw);
#pragma omp parallel for schedule(static)
    for (int row = 0; row < d->n * d->oh; row++) {
        int n = row / d->oh, oy = row % d->oh;
        for (int ox = 0; ox < d->ow; ox++) {
            float *o = out + (((size_t)n * d->oh + oy) * d->ow + ox) * C;
            memset(o, 0, sizeof(float) * C);
            for (int ky = 0; ky < d->kh; ky++) {
                int iy = oy * d->sh - d->ph + ky;
                if (iy < 0 || iy >= d->h) continue;
                for (int kx = 0; kx < d->kw; kx++) {
                    int ix = ox * d->sw - d->pw + kx;
                    if (ix < 0 || ix >= d->w) continue;
                    const float *x = in + (((size_t)n * d->h + iy) * d->w + ix) * C;
                    for (int c = 0; c < C; c++) o[c] += x[c];
                }
            }
            for (int c = 0; c < C; c++) o[c] *= inv;
        }
    }
}

void cn_avgpool_backward(float *din, const float *dout, const cn_conv_desc *d) {
    int C = d->c;
    float inv = 1.0f / (float)(d->kh * d->kw);
#pragma omp parallel for schedule(static)
    for (int n = 0; n < d->n; n++)
        for (int oy = 0; oy < d->oh; oy++)
            for (int ox = 0; ox < d->ow; ox++) {
                const float *g = dout + (((size_t)n * d->oh + oy) * d->ow + ox) * C;
                for (int ky = 0; ky < d->kh; ky++) {
                    int iy = oy * d->sh - d->ph + ky;
                    if (iy < 0 || iy >= d->h) continue;
                    for (int kx = 0; kx < d->kw; kx++) {
                        int ix = ox * d->sw - d->pw + kx;
                        if (ix < 0 || ix >= d->w) continue;
                        float *x = din + (((size_t)n * d->h + iy) * d->w + ix) * C;
                        for (int c = 0; c < C; c++) x[c] += g[c] * inv;
                    }
                }
            }
}

void cn_gap_forward(float *out, const float *in, int n, int hw, int c) {
#pragma omp parallel for schedule(static)
    for (int i = 0; i < n; i++) {
        float *o = out + (size_t)i * c;
        for (int j = 0; j < c; j++) o[j] = 0;
        for (int p = 0; p < hw; p++) {
            const float *x = in + ((size_t)i * hw + p) * c;
            for (int j = 0; j < c; j++) o[j] += x[j];
        }
        for (int j = 0; j < c; j++) o[j] /= (float)hw;
    }
}

void cn_gap_backward(float *din, const float *dout, int n, int hw, int c) {
#pragma omp parallel for schedule(static)
    for (int i = 0; i < n; i++)
        for (int p = 0; p < hw; p++) {
            float *x = din + ((size_t)i * hw + p) * c;
            for (int j = 0; j < c; j++) x[j] += dout[(size_t)i * c + j] / (float)hw;
        }
}

void cn_shortcut_a_forward(float *out, const float *in, int n, int h, int w, int c, int oh,
                           int ow, int oc, int stride) {
#pragma omp parallel for schedule(static)
    for (int i = 0; i < n; i++)
        for (int y = 0; y < oh; y++)
            for (int x = 0; x < ow; x++) {
                float *o = out + (((size_t)i * oh + y) * ow + x) * oc;
                const float *s = in + (((size_t)i * h + y * stride) * w + x * stride) * c;
                memcpy(o, s, sizeof(float) * c);
                memset(o + c, 0, sizeof(float) * (oc - c));
            }
}

void cn_shortcut_a_backward(float *din, const float *dout, int n, int h, int w, int c, int oh,
                            int ow, int oc, int stride) {
#pragma omp parallel for schedule(static)
    for (int i = 0; i < n; i++)
        for (int y = 0; y < oh; y++)
            for (int x = 0; x < ow; x++) {
                const float *g = dout + (((size_t)i * oh + y) * ow + x) * oc;
                float *s = din + (((size_t)i * h + y * stride) * w + x * stride) * c;
                for (int j = 0; j < c; j++) s[j] += g[j];
            }
}

void cn_flatten_forward(float *out, const float *in, int n, int h, int w, int c) {
    size_t per = (size_t)h * w * c;
    for (int i = 0; i < n; i++)
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
                for (int j = 0; j < c; j++)
                    out[i * per + ((size_t)j * h + y) * w + x] =
                        in[i * per + ((size_t)y * w + x) * c + j];
}

void cn_flatten_backward(float *din, const float *dout, int n, int h, int w, int c) {
    size_t per = (size_t)h * w * c;
    for (int i = 0; i < n; i++)
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++)
                for (int j = 0; j < c; j++)
                    din[i * per + ((size_t)y * w + x) * c + j] +=
                        dout[i * per + ((size_t)j * h + y) * w + x];
}
