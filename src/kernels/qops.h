/* The integer element-wise ops of the int8 network (uint8 activations, per-tensor scale and
 * zero point). Their requantization is one rounding of the exact product,
 *     cn_rq(x, mult, shift) = round(x * mult * 2^-(31 + shift)),  ties toward +infinity,
 * with the multiplier and shift of cn_quantize_multiplier (shift >= -30). */
#ifndef CN_KERNELS_QOPS_H
#define CN_KERNELS_QOPS_H

#include <stddef.h>
#include <stdint.h>

static inline int32_t cn_rq(int32_t x, int32_t mult, int32_t shift) {
    int r = 31 + shift;
    return (int32_t)(((int64_t)x * mult + ((int64_t)1 << (r - 1))) >> r);
}

static inline uint8_t cn_clamp_u8(int32_t v, int32_t lo, int32_t hi) {
    return (uint8_t)(v < lo ? lo : v > hi ? hi : v);
}

/* float -> uint8: clamp(round_half_even(x / scale) + zp, 0, 255) */
void cn_q_quantize(uint8_t *out, const float *x, size_t n, float scale, int32_t zp, int threads);
/* "avx512" or "c": which loops run (chosen from the CPU features) */
const char *cn_qops_name(void);
/* uint8 -> float: (q - zp) * scale */
void cn_q_dequantize(float *out, const uint8_t *q, size_t n, float scale, int32_t zp, int threads);
/* Residual add and the SE product use small integer multipliers with one shared shift,
 *     ma = round(sa / so * 2^sh), mb = round(sb / so * 2^sh)   (add, both < 2^15)
 *     m  = round(sx * ss / so * 2^sh)                         (mul, < 2^14)
 * so that the whole sum stays in int32 and rounds once:
 *     add: out = clamp(zo + ((ma (a - za) + mb (b - zb) + 2^(sh-1)) >> sh), qmin, qmax)
 *     mul: out = clamp(zo + (((x - zx) (s - zs) m + 2^(sh-1)) >> sh), 0, 255)
 * Rounding the multipliers moves a result by at most 0.016 r of a unit on any uint8 input (add,
 * r the larger of sa / so and sb / so, usually below 1: a sum's range covers its inputs') and
 * under 0.02 of a unit (mul). */
void cn_q_add_params(double sa, double sb, double so, int32_t *ma, int32_t *mb, int32_t *sh);
/* the parameters of one residual add, a and b as in the formula above */
typedef struct cn_qadd {
    int32_t za, zb, zo, ma, mb, sh, qmin, qmax;
} cn_qadd;
/* the add of n elements on the calling thread (a convolution's epilogue: out may be a) */
void cn_q_add_span(uint8_t *out, const uint8_t *a, const uint8_t *b, size_t n, const cn_qadd *p);
void cn_q_mul_params(double m, int32_t *mi, int32_t *sh);
void cn_q_add(uint8_t *out, const uint8_t *a, const uint8_t *b, size_t n, int32_t za, int32_t zb,
              int32_t zo, int32_t ma, int32_t mb, int32_t sh, int32_t qmin, int32_t qmax,
              int threads);
/* squeeze-and-excitation: out (n, hw, c) = x * s with s (n, c) per image and channel */
void cn_q_mul(uint8_t *out, const uint8_t *x, const uint8_t *s, int n, size_t hw, int c,
              int32_t zx, int32_t zs, int32_t zo, int32_t m, int32_t sh, int threads);
/* global average pool (rq of cn_quantize_multiplier's multiplier): out (n, c) = clamp(zo + rq(sum over hw of (x - zx), m, sh)) */
void cn_q_gap(uint8_t *out, const uint8_t *x, int n, int hw, int c, int32_t zx, int32_t zo,
              int32_t m, int32_t sh, int threads);
void cn_q_lut(uint8_t *out, const uint8_t *x, size_t n, const uint8_t *lut, int threads);
/* max pool over the window (padding left out), NHWC */
void cn_q_maxpool(uint8_t *out, const uint8_t *x, int n, int h, int w, int c, int k, int stride,
                  int pad, int oh, int ow, int threads);
/* option A shortcut: every stride-th pixel, channels past c filled with zp */
void cn_q_shortcut(uint8_t *out, const uint8_t *x, int n, int h, int w, int c, int oh, int ow,
                   int oc, int stride, uint8_t zp);
/* classifier: logits (n, oc) = (sum_k x w - zx * wsum[o]) * (sx * ws[o]) + b[o] */
void cn_q_linear(float *out, const uint8_t *x, const int8_t *w, const int32_t *wsum,
                 const float *ws, const float *b, int n, int k, int oc, int32_t zx, float sx);

#endif
