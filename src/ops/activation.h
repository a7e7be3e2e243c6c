/* Sigmoid and SiLU element kernels, inlined into the loops of activation.c and batchnorm.c (the
 * fused bn -> silu). Branch-free plain C, so that gcc vectorises the loops they sit in (no libm
 * call in the hot loop).
 *
 * e^a for a <= 0 by range reduction a = n ln2 + r, |r| <= ln2/2 (Cody-Waite, two-part ln2), a
 * degree-7 Taylor polynomial for e^r (truncation error 5e-9, below half an ulp), and 2^n built
 * from its exponent bits in two halves, so that 2^n stays a normal float down to n = -174; the
 * caller multiplies by the halves last, so a result in the subnormal range is rounded once. Only
 * non-positive arguments occur: sigmoid(x) for x < 0 is e^x / (1 + e^x), which neither overflows
 * nor cancels. Worst error ~2 ulp (tests/test_ops_effnet.c measures it). */
#ifndef CN_OPS_ACTIVATION_H
#define CN_OPS_ACTIVATION_H

#include <math.h>
#include <stdint.h>
#include <string.h>

/* e^a = p * s1 * s2 for a = -|x|, clamped below at -120 where e^a * 120 rounds to 0 (NaN -> -120) */
static inline void cn_exp_parts(float a, float *p, float *s1, float *s2) {
    a = a > -120.0f ? a : -120.0f;
    float k = a * 1.44269504f + 12582912.0f; /* 1.5 * 2^23: rounds a / ln2 to an integer */
    float nf = k - 12582912.0f;
    float r = a - nf * 0.693145751953125f; /* ln2 high part: 15 bits, nf * it is exact */
    r = r - nf * 1.42860676533018e-06f;    /* ln2 low part */
    float q = 1.0f / 5040;
    q = q * r + 1.0f / 720;
    q = q * r + 1.0f / 120;
    q = q * r + 1.0f / 24;
    q = q * r + 1.0f / 6;
    q = q * r + 0.5f;
    *p = 1.0f + (r + q * r * r);
    int n = (int)nf; /* in [-174, 0] */
    int n1 = n / 2, n2 = n - n1;
    uint32_t b1 = (uint32_t)(n1 + 127) << 23, b2 = (uint32_t)(n2 + 127) << 23;
    memcpy(s1, &b1, sizeof b1);
    memcpy(s2, &b2, sizeof b2);
}

static inline float cn_sigmoid1(float x) {
    float p, s1, s2;
    cn_exp_parts(-fabsf(x), &p, &s1, &s2);
    float q = 1.0f / (1.0f + p * s1 * s2);           /* 1 / (1 + e^-|x|) */
    float s = x >= 0 ? q : ((p * q) * s1) * s2;       /* e^x / (1 + e^x) for x < 0 */
    return x != x ? x : s;
}

static inline float cn_silu1(float x) {
    float p, s1, s2;
    cn_exp_parts(-fabsf(x), &p, &s1, &s2);
    float q = 1.0f / (1.0f + p * s1 * s2);
    float xc = x < -120.0f ? -120.0f : x; /* -inf -> 0, not -inf * 0 */
    return x >= 0 ? x * q : (((xc * q) * p) * s1) * s2;
}

/* silu'(x) = s (1 + x (1 - s)), s = sigmoid(x) */
static inline float cn_silu_grad1(float x) {
    float p, s1, s2;
    cn_exp_parts(-fabsf(x), &p, &s1, &s2);
    float e = p * s1 * s2;
    float q = 1.0f / (1.0f + e);
    float xc = x < -120.0f ? -120.0f : x, xh = x > 120.0f ? 120.0f : x; /* no inf * 0 */
    float pos = q + ((xh * e) * q) * q;                      /* q (1 + x e q) */
    float neg = ((((1.0f + xc * q) * q) * p) * s1) * s2;     /* e q (1 + x q) */
    return x >= 0 ? pos : neg;
}

#endif
