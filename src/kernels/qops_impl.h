/* The loops of the element-wise int8 ops, compiled twice: plain (qops.c) and for AVX-512
 * (qops_avx512.c), where the compiler vectorises them 64 bytes at a time. QOPS(name) gives each
 * copy its own names. Included only by those two files. */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

static void QOPS(quantize)(uint8_t *out, const float *x, size_t n, float inv, float zp) {
    for (size_t i = 0; i < n; i++) {
        float v = nearbyintf(x[i] * inv) + zp;
        v = v < 0.0f ? 0.0f : v > 255.0f ? 255.0f : v;
        out[i] = (uint8_t)(int32_t)v;
    }
}

static void QOPS(dequantize)(float *out, const uint8_t *q, size_t n, float scale, int32_t zp) {
    for (size_t i = 0; i < n; i++) out[i] = (float)((int32_t)q[i] - zp) * scale;
}

static void QOPS(add)(uint8_t *out, const uint8_t *a, const uint8_t *b, size_t n, int32_t za,
                      int32_t zb, int32_t zo, int32_t ma, int32_t mb, int32_t sh, int32_t qmin,
                      int32_t qmax) {
    const int32_t round = 1 << (sh - 1);
    for (size_t i = 0; i < n; i++) {
        int32_t v = zo + ((ma * ((int32_t)a[i] - za) + mb * ((int32_t)b[i] - zb) + round) >> sh);
        v = v < qmin ? qmin : v > qmax ? qmax : v;
        out[i] = (uint8_t)v;
    }
}

/* one row of c channels of the SE product */
static void QOPS(mul_row)(uint8_t *out, const uint8_t *x, const int32_t *f, int c, int32_t zx,
                          int32_t zo, int32_t sh) {
    const int32_t round = 1 << (sh - 1);
    for (int i = 0; i < c; i++) {
        int32_t v = zo + ((((int32_t)x[i] - zx) * f[i] + round) >> sh);
        v = v < 0 ? 0 : v > 255 ? 255 : v;
        out[i] = (uint8_t)v;
    }
}

static void QOPS(max_row)(uint8_t *o, const uint8_t *r, int c) {
    for (int i = 0; i < c; i++) o[i] = r[i] > o[i] ? r[i] : o[i];
}

static void QOPS(lut)(uint8_t *out, const uint8_t *x, size_t n, const uint8_t *lut) {
    for (size_t i = 0; i < n; i++) out[i] = lut[x[i]];
}

static void QOPS(sum_rows)(int32_t *acc, const uint8_t *x, size_t rows, size_t stride, int cb) {
    for (size_t r = 0; r < rows; r++) {
        const uint8_t *p = x + r * stride;
        for (int j = 0; j < cb; j++) acc[j] += p[j];
    }
}

/* sum over k of x * w (the classifier's dot product; |sum| < 2^31 for k < 2^16) */
static int32_t QOPS(dot)(const uint8_t *x, const int8_t *w, int k) {
    int32_t acc = 0;
    for (int j = 0; j < k; j++) acc += (int32_t)x[j] * w[j];
    return acc;
}
