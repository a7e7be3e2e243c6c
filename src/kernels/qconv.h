/* Integer (int8) convolution kernels for NHWC uint8 activations and int8 weights: the GEMM of
 * the input's rows (read in place, or im2col rows) against packed weights (AVX-512 VNNI
 * vpdpbusd, AVX-VNNI, plain C), a direct depthwise kernel, and requantization with an integer
 * multiplier and shift (gemmlowp's rounding). Each fast path has the plain-C reference beside
 * it; the implementation is chosen once from the CPU features.
 *
 * Arithmetic, for every output element (image, pixel, output channel o):
 *     acc = bias[o] + sum over taps (x - zp_in) * w      (int32; padding taps have x = zp_in,
 *                                                         so they contribute 0)
 *     q   = clamp(zp_out + cn_requant(acc, mult[o], shift[o]), qmin, qmax)
 *     out = lut ? lut[q] : q                              (uint8)
 *     out = add(out, res)                                 (with a residual, see cn_qepilogue)
 * Activations are uint8 with a zero point (asymmetric), weights int8 symmetric (zero point 0)
 * per output channel. */
#ifndef CN_KERNELS_QCONV_H
#define CN_KERNELS_QCONV_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/qops.h"

/* M = mult * 2^-31 * 2^-shift, mult in [2^30, 2^31) (0 for M = 0); shift may be negative (a
 * left shift, for M >= 1). cn_quantize_multiplier finds them for a real M in [0, 2^31). */
void cn_quantize_multiplier(double m, int32_t *mult, int32_t *shift);
/* gemmlowp: RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(acc << left, mult), right)
 * with left = max(-shift, 0), right = max(shift, 0) */
int32_t cn_requant(int32_t acc, int32_t mult, int32_t shift);

typedef struct cn_qepilogue {
    const int32_t *bias;   /* per output channel, accumulator units; NULL: 0 */
    const int32_t *mult;   /* per output channel */
    const int32_t *shift;  /* per output channel */
    int32_t zp_out;
    int32_t qmin, qmax;    /* 0 <= qmin <= qmax <= 255 (a fused ReLU: qmin = zp_out) */
    const uint8_t *lut;    /* NULL, or 256 entries applied after the clamp */
    /* NULL, or a residual (the output's shape and layout) added to each result out of the
     * above, in the residual add's integer arithmetic (cn_q_add: a = the result, b = res):
     * the add of a ResNet block fused into its last convolution */
    const uint8_t *res;
    cn_qadd add;
    /* NULL, or this epilogue's requantization prepared once by cn_qconv_prepare (for the same
     * bias, mult, shift, zp_out, qmin, qmax, weights and zp_in): the kernels then skip
     * deriving it from the above on every call */
    const void *params;
} cn_qepilogue;

typedef struct cn_qconv_desc {
    int n, h, w, c;        /* input (n, h, w, c) uint8 NHWC */
    int oc, kh, kw, sh, sw, ph, pw;
    int oh, ow;            /* output (n, oh, ow, oc) uint8 NHWC */
    int32_t zp_in;
} cn_qconv_desc;

/* Dense convolution (groups = 1). The weights are packed once: w is int8 (oc, kh, kw, c), the
 * input channel innermost. The packed block also keeps what the kernel needs of the weights'
 * sums (zero-point correction), so its size depends on the shape only. */
size_t cn_qconv_packed_size(int oc, int kh, int kw, int c);
void cn_qconv_pack(void *packed, const int8_t *w, int oc, int kh, int kw, int c);
/* Bytes of scratch cn_qconv2d needs (im2col rows etc.) for a shape and thread count. */
size_t cn_qconv_workspace(const cn_qconv_desc *d, int threads);
void cn_qconv2d(uint8_t *out, const uint8_t *in, const void *packed, const cn_qconv_desc *d,
                const cn_qepilogue *ep, void *workspace, int threads);

/* Depthwise convolution (groups = c = oc): w int8 (kh, kw, c), the channel innermost, used as is
 * (no packing). workspace: cn_qdwconv_workspace bytes, or NULL (then it allocates its own, and
 * falls back to the reference kernel if that fails). */
size_t cn_qdwconv_workspace(const cn_qconv_desc *d, int threads);
void cn_qdwconv2d(uint8_t *out, const uint8_t *in, const int8_t *w, const cn_qconv_desc *d,
                  const cn_qepilogue *ep, void *workspace, int threads);

/* The per-channel requantization of a layer in the kernels' form (what cn_qconv2d and
 * cn_qdwconv2d otherwise derive from ep on each call), for ep->params: cn_qconv_params_size
 * bytes, any alignment. weights: the packed weights of a dense convolution (they hold the
 * weight sums of the zero-point correction), NULL for a depthwise one. */
size_t cn_qconv_params_size(int oc);
void cn_qconv_prepare(void *params, const void *weights, const cn_qconv_desc *d,
                      const cn_qepilogue *ep);

/* The naive references the tests hold the fast kernels to (any shape; dense or depthwise). */
void cn_qconv2d_ref(uint8_t *out, const uint8_t *in, const int8_t *w, const cn_qconv_desc *d,
                    const cn_qepilogue *ep, int depthwise);

/* Which implementation runs: "avx512-vnni", "avx-vnni" or "c". cn_qkernel_force(name) makes
 * the given one run (tests; returns 0 when this CPU cannot run it); NULL restores the choice
 * from the CPU features. */
const char *cn_qkernel_name(void);
int cn_qkernel_force(const char *name);

#endif
