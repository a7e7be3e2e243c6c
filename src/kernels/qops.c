/* The integer element-wise ops of the int8 network (see qops.h); plain C the compiler
 * vectorises. */
#include "kernels/qops.h"

#include <math.h>
#include <string.h>

#define PAR_MIN 65536 /* below this many elements one thread is faster */

void cn_q_quantize(uint8_t *out, const float *x, size_t n, float scale, int32_t zp, int threads) {
    const float inv = 1.0f / scale;
#pragma omp parallel for num_threads(threads) schedule(static) if (n >= PAR_MIN)
    for (size_t i = 0; i < n; i++) {
        float v = nearbyintf(x[i] * inv) + (float)zp;
        out[i] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
    }
}

void cn_q_dequantize(float *out, const uint8_t *q, size_t n, float scale, int32_t zp, int threads) {
#pragma omp parallel for num_threads(threads) schedule(static) if (n >= PAR_MIN)
    for (size_t i = 0; i < n; i++) out[i] = (float)(q[i] - zp) * scale;
}

void cn_q_add(uint8_t *out, const uint8_t *a, const uint8_t *b, size_t n, int32_t za, int32_t zb,
              int32_t zo, const int32_t *m, const int32_t *s, int32_t qmin, int32_t qmax,
              int threads) {
    const int32_t m0 = m[0], m1 = m[1], m2 = m[2], s0 = s[0], s1 = s[1], s2 = s[2];
#pragma omp parallel for num_threads(threads) schedule(static) if (n >= PAR_MIN)
    for (size_t i = 0; i < n; i++) {
        int32_t x = cn_rq((a[i] - za) * (1 << 20), m0, s0);
        int32_t y = cn_rq((b[i] - zb) * (1 << 20), m1, s1);
        out[i] = cn_clamp_u8(zo + cn_rq(x + y, m2, s2), qmin, qmax);
    }
}

void cn_q_mul(uint8_t *out, const uint8_t *x, const uint8_t *s, int n, size_t hw, int c,
              int32_t zx, int32_t zs, int32_t zo, int32_t m, int32_t sh, int threads) {
#pragma omp parallel for collapse(2) num_threads(threads) schedule(static) if (n * hw * c >= PAR_MIN)
    for (int i = 0; i < n; i++)
        for (size_t p = 0; p < hw; p++) {
            const uint8_t *xr = x + ((size_t)i * hw + p) * c, *sr = s + (size_t)i * c;
            uint8_t *o = out + ((size_t)i * hw + p) * c;
            for (int ch = 0; ch < c; ch++)
                o[ch] = cn_clamp_u8(zo + cn_rq((xr[ch] - zx) * (sr[ch] - zs), m, sh), 0, 255);
        }
}

void cn_q_gap(uint8_t *out, const uint8_t *x, int n, int hw, int c, int32_t zx, int32_t zo,
              int32_t m, int32_t sh) {
    for (int i = 0; i < n; i++) {
        int32_t acc[256];
        for (int c0 = 0; c0 < c; c0 += 256) {
            int cb = c - c0 < 256 ? c - c0 : 256;
            memset(acc, 0, sizeof acc);
            for (int p = 0; p < hw; p++) {
                const uint8_t *r = x + ((size_t)i * hw + p) * c + c0;
                for (int ch = 0; ch < cb; ch++) acc[ch] += r[ch];
            }
            for (int ch = 0; ch < cb; ch++)
                out[(size_t)i * c + c0 + ch] =
                    cn_clamp_u8(zo + cn_rq(acc[ch] - zx * hw, m, sh), 0, 255);
        }
    }
}

void cn_q_lut(uint8_t *out, const uint8_t *x, size_t n, const uint8_t *lut, int threads) {
#pragma omp parallel for num_threads(threads) schedule(static) if (n >= PAR_MIN)
    for (size_t i = 0; i < n; i++) out[i] = lut[x[i]];
}

void cn_q_maxpool(uint8_t *out, const uint8_t *x, int n, int h, int w, int c, int k, int stride,
                  int pad, int oh, int ow, int threads) {
#pragma omp parallel for collapse(2) num_threads(threads) schedule(static)
    for (int i = 0; i < n; i++)
        for (int y = 0; y < oh; y++)
            for (int xo = 0; xo < ow; xo++) {
                uint8_t *o = out + (((size_t)i * oh + y) * ow + xo) * c;
                memset(o, 0, (size_t)c);
                for (int ky = 0; ky < k; ky++) {
                    int iy = y * stride - pad + ky;
                    if (iy < 0 || iy >= h) continue;
                    for (int kx = 0; kx < k; kx++) {
                        int ix = xo * stride - pad + kx;
                        if (ix < 0 || ix >= w) continue;
                        const uint8_t *r = x + (((size_t)i * h + iy) * w + ix) * c;
                        for (int ch = 0; ch < c; ch++) o[ch] = r[ch] > o[ch] ? r[ch] : o[ch];
                    }
                }
            }
}

void cn_q_shortcut(uint8_t *out, const uint8_t *x, int n, int h, int w, int c, int oh, int ow,
                   int oc, int stride, uint8_t zp) {
    for (int i = 0; i < n; i++)
        for (int y = 0; y < oh; y++)
            for (int xo = 0; xo < ow; xo++) {
                uint8_t *o = out + (((size_t)i * oh + y) * ow + xo) * oc;
                int iy = y * stride, ix = xo * stride;
                int cc = c < oc ? c : oc;
                if (iy < h && ix < w) memcpy(o, x + (((size_t)i * h + iy) * w + ix) * c, (size_t)cc);
                else memset(o, zp, (size_t)cc);
                memset(o + cc, zp, (size_t)(oc - cc));
            }
}

void cn_q_linear(float *out, const uint8_t *x, const int8_t *w, const int32_t *wsum,
                 const float *ws, const float *b, int n, int k, int oc, int32_t zx, float sx) {
    for (int i = 0; i < n; i++)
        for (int o = 0; o < oc; o++) {
            const uint8_t *xr = x + (size_t)i * k;
            const int8_t *wr = w + (size_t)o * k;
            int32_t acc = 0;
            for (int j = 0; j < k; j++) acc += xr[j] * wr[j];
            acc -= zx * wsum[o];
            out[(size_t)i * oc + o] = (float)acc * (sx * ws[o]) + b[o];
        }
}
