/* Winograd convolution F(4x4, 3x3) for float32 inference (Lavin and Gray, "Fast Algorithms for
 * Convolutional Neural Networks", CVPR 2016, https://arxiv.org/abs/1509.09308): 3x3 kernels,
 * stride 1, padding 1, one group, NHWC activations. Each 6x6 input tile d (stride 4) and each
 * filter g are taken to the "frequency" domain, V = B^T d B and U = G g G^T (36 values per channel
 * pair), multiplied there as 36 independent GEMMs (tiles x C) x (C x OC), and brought back as the
 * 4x4 output tile A^T M A: 36 multiplies per 16 outputs instead of 144, 2.25x fewer.
 *
 * Inference operator, create -> run: cn_wino_pack_weights computes U once per weight version (the
 * graph caches it on the node); cn_wino_forward then only transforms activations. The epilogue of
 * cn_conv2d_forward_fused (scale, shift, residual, activation) is applied in the output transform,
 * while the tile is in registers. Bits do not depend on the thread count: tiles are cut into
 * blocks from the shape alone, and every block runs the same calls whoever runs it. */
#ifndef CN_KERNELS_WINOGRAD_H
#define CN_KERNELS_WINOGRAD_H

#include <stddef.h>

#include "ops/ops.h"

/* 1 when the convolution is one Winograd F(4x4, 3x3) computes: 3x3, stride 1, padding 1,
 * groups 1 (the output has the input's size). */
int cn_wino_shape_ok(const cn_conv_desc *d);

/* 1 when cn_wino_forward is expected to be faster than cn_conv2d_forward_fused for this shape,
 * batch (d->n) and thread count (measured thresholds, see winograd.c), or when forced. Layers
 * wider than 128 x 128 channels wait for batches where activations outweigh their transformed
 * weights, unless wide_cached: the model's transformed weights fit CN_WINO_CACHE_FLOATS. */
int cn_wino_wanted(const cn_conv_desc *d, int nthreads, int wide_cached);
/* The floats of transformed weights this layer keeps at batch d->n when wide_cached is set (0
 * when it does not take the cached path): a model whose layers add up to at most
 * CN_WINO_CACHE_FLOATS (40 MB, the kernel issue's bound on what inference adds to the weights,
 * here for the transformed weights alone) sets wide_cached for all of them. */
size_t cn_wino_cached_floats(const cn_conv_desc *d, int nthreads);
enum { CN_WINO_CACHE_FLOATS = 10 << 20 };

/* For tests and benchmarks: -1 automatic (the default), 0 never, 1 whenever the shape allows
 * (the cached weights), 2 the streamed path whenever it applies. Not thread-safe against
 * concurrent forwards. */
void cn_winograd_force(int mode);

/* floats of the transformed weights of a layer: 36 x C x OC */
size_t cn_wino_weight_floats(int c, int oc);
/* u (36, C, OC) = G g G^T of every (oc, c) filter of w (OC, 3, 3, C), computed in double */
void cn_wino_pack_weights(float *u, const float *w, int c, int oc, int nthreads);

/* Training, where the weights change at every step: the same transform in float, vectorised
 * over input channels, into U^T (36, OC, C): ut[f][o][k] = (G g G^T)[f] of filter (o, k) of w
 * (OC, 3, 3, C). With flip, of each filter turned by 180 degrees: that is U (36, C', OC') of the
 * data gradient's convolution (of dY, C' = OC channels, with the flipped filters transposed in
 * channels, OC' = C), ready for cn_wino_forward. */
void cn_wino_pack_weights_t(float *ut, const float *w, int c, int oc, int flip, int nthreads);
/* 1 when a training step's convolution (forward and data gradient, weights transformed at each
 * call) is expected to be faster by Winograd (measured thresholds, see winograd.c), or forced. */
int cn_wino_train_wanted(const cn_conv_desc *d, int nthreads);
/* 1 when the GEMMs of this shape are faster with U^T (the GEMM's swapped path reads the weights
 * in place instead of packing U_f for every block): wide layers, more than 128 x 128 channels
 * (measured, winograd.c) */
int cn_wino_transposed(const cn_conv_desc *d);
/* cn_wino_forward with U^T (36, OC, C) */
void cn_wino_forward_t(float *out, const float *in, const float *ut, const cn_epilogue *ep,
                       const cn_conv_desc *d, float *ws, int nthreads);

/* The weight gradient of the same convolution by Winograd: dw (OC, 3, 3, C) += the gradient
 * of the loss by the weights, given dout (N, H, W, OC) and in (N, H, W, C). The tiles' V and
 * the output gradient's dM = A dy A^T (36 x tiles x OC) meet in 36 GEMMs dU_f^T = dM_f^T V_f summed
 * over the batch, and dw += G^T dU G. The same bits for any thread count (threads split each
 * block's tiles, then the 36 planes of dU). ws: cn_wino_wgrad_workspace floats. */
size_t cn_wino_wgrad_workspace(const cn_conv_desc *d, int nthreads);
void cn_wino_wgrad(float *dw, const float *dout, const float *in, const cn_conv_desc *d,
                   float *ws, int nthreads);

/* workspace floats that cn_wino_forward needs (any batch up to d->n) */
size_t cn_wino_workspace(const cn_conv_desc *d, int nthreads);
/* 1 when cn_wino_forward_streamed applies and is expected to be the fastest: the AVX2 GEMM path,
 * fewer than 64 tiles a call, and wide layers (more than 128 x 128 channels) whose cached
 * transformed weights the memory rule leaves out (see winograd.c); with cn_winograd_force(2),
 * whenever the first two hold. */
int cn_wino_streamed_wanted(const cn_conv_desc *d, int nthreads);
/* The same convolution as cn_wino_forward from the weights w (OC, 3, 3, C) themselves: their
 * transform is made during the call, block by block, and not kept. */
void cn_wino_forward_streamed(float *out, const float *in, const float *w, const cn_epilogue *ep,
                              const cn_conv_desc *d, float *ws, int nthreads);
/* out (N, H, W, OC) = act(conv(in, w) * scale + shift + res), u from cn_wino_pack_weights;
 * in (N, H, W, C); ep as for cn_conv2d_forward_fused (res may be NULL, or out itself: each
 * element's residual is read before that element is written, which makes out += conv(in, w)) */
void cn_wino_forward(float *out, const float *in, const float *u, const cn_epilogue *ep,
                     const cn_conv_desc *d, float *ws, int nthreads);

#endif
