/* Ops: forward and backward pairs on raw NHWC float32 buffers (llm.c style).
 *
 * Conventions: outputs first, then inputs, then sizes. Activations are NHWC (channels last).
 * Backward functions ACCUMULATE (+=) into every gradient they produce (din, dweight, dbias), so
 * that a tensor consumed twice (a residual fork) gets the sum; a NULL gradient pointer means
 * "not needed" and is skipped. Each op names the PyTorch page it mirrors. */
#ifndef CN_OPS_H
#define CN_OPS_H

#include <stddef.h>
#include <stdint.h>

/* activations fused into batch norm and convolution epilogues (sigmoid only in the latter) */
typedef enum cn_act { CN_ACT_NONE = 0, CN_ACT_RELU = 1, CN_ACT_SILU = 2, CN_ACT_SIGMOID = 3 } cn_act;

/* ---- conv2d: https://pytorch.org/docs/1.13/generated/torch.nn.Conv2d.html ----
 * weight: (OC, KH, KW, C/groups) (OHWI; converted from torchvision's OIHW at the file boundary)
 * in: (N, H, W, C)  out: (N, OH, OW, OC)  bias: (OC) or NULL. Dilation is 1. */
typedef struct cn_conv_desc {
    int n, h, w, c;     /* input */
    int oc, kh, kw;     /* filters */
    int sh, sw, ph, pw; /* stride, padding */
    int groups;
    int oh, ow;         /* derived by cn_conv_desc_init */
} cn_conv_desc;

/* Fills oh/ow; returns 0 when the output would be empty or the sizes are inconsistent. */
int cn_conv_desc_init(cn_conv_desc *d);
/* Workspace (in floats) that forward+backward need with `nthreads` threads. */
size_t cn_conv2d_workspace(const cn_conv_desc *d, int nthreads, int backward);
void cn_conv2d_forward(float *out, const float *in, const float *weight, const float *bias,
                       const cn_conv_desc *d, float *ws, int nthreads);
/* The forward of a training step: cn_conv2d_forward, or, for the 3x3 stride-1 layers where it
 * pays (kernels/winograd.h), Winograd F(4x4, 3x3) with the weights transformed at each call;
 * ws as counted by cn_conv2d_workspace with backward set. cn_conv2d_backward takes the same
 * path for the data gradient of those layers. */
void cn_conv2d_forward_train(float *out, const float *in, const float *weight, const float *bias,
                             const cn_conv_desc *d, float *ws, int nthreads);
void cn_conv2d_backward(float *din, float *dweight, float *dbias, const float *dout,
                        const float *in, const float *weight, const cn_conv_desc *d, float *ws,
                        int nthreads);
/* 1 when cn_conv2d_backward_set can write din outright for this shape (a 1x1 convolution, or one
 * whose data gradient runs as a convolution of dY: stride 1, one group, or depthwise); then
 * cn_conv2d_backward_set is cn_conv2d_backward with din written, its old contents ignored (the
 * graph skips zeroing the gradient of a tensor whose only consumer is such a convolution). */
int cn_conv2d_sets_din(const cn_conv_desc *d);
void cn_conv2d_backward_set(float *din, float *dweight, float *dbias, const float *dout,
                            const float *in, const float *weight, const cn_conv_desc *d,
                            float *ws, int nthreads);
/* Depthwise convolution (groups == c == oc, weight (C, KH, KW, 1)), which cn_conv2d_* hand to
 * (vectorised over channels, specialised for 3x3 and 5x5 with stride 1 and 2). Same contract,
 * workspace included: cn_conv2d_workspace returns cn_dwconv_workspace for these. */
size_t cn_dwconv_workspace(const cn_conv_desc *d, int nthreads, int backward);
void cn_dwconv_forward(float *out, const float *in, const float *weight, const float *bias,
                       const cn_conv_desc *d, float *ws, int nthreads);
void cn_dwconv_backward(float *din, float *dweight, float *dbias, const float *dout,
                        const float *in, const float *weight, const cn_conv_desc *d, float *ws,
                        int nthreads);
/* as cn_conv2d_sets_din / cn_conv2d_backward_set: stride 1 */
int cn_dwconv_sets_din(const cn_conv_desc *d);
void cn_dwconv_backward_set(float *din, float *dweight, float *dbias, const float *dout,
                            const float *in, const float *weight, const cn_conv_desc *d,
                            float *ws, int nthreads);
/* Inference convolution with its epilogue fused: out = act(conv(in, w) * scale + shift + res)
 * per output channel, applied while each block of output rows is still in cache. scale and
 * shift (OC values each) are required; res NULL means no residual, else it is (N, OH, OW, OC)
 * like out and must not alias it. A batch norm in eval mode folds into scale = gamma / sqrt(var + eps) and
 * shift = beta - mean * scale (+ bias * scale for a convolution with a bias). pool, if not NULL,
 * (N, C) receives each image's per-channel mean of out (the global average pool that a
 * squeeze-and-excitation block takes of a depthwise convolution's output: the depthwise kernels
 * sum the outputs while they are in registers), the same for any thread count. */
typedef struct cn_epilogue {
    const float *scale, *shift, *res;
    cn_act act;
    float *pool;
} cn_epilogue;
void cn_conv2d_forward_fused(float *out, const float *in, const float *w,
                             const cn_epilogue *ep, const cn_conv_desc *d, float *ws,
                             int nthreads);
/* The depthwise kernels with the same epilogue (called by cn_conv2d_forward_fused). */
void cn_dwconv_forward_fused(float *out, const float *in, const float *w, const cn_epilogue *ep,
                             const cn_conv_desc *d, float *ws, int nthreads);
/* The same with the filters already in the kernels' layout, tap-major (K*K, C) (made by
 * cn_dwconv_pack_weights): for a caller that keeps them between calls (the graph, per weight
 * version) instead of the repacking every call does (a strided scatter: 10 us of a 40 us 5x5
 * layer on 7x7x1152, one thread). ws as for cn_dwconv_forward_fused. */
void cn_dwconv_pack_weights(float *wr, const float *w, const cn_conv_desc *d);
void cn_dwconv_forward_packed(float *out, const float *in, const float *wr, const cn_epilogue *ep,
                              const cn_conv_desc *d, float *ws, int nthreads);
/* Inference of a 1x1 convolution de (stride 1, no padding, one group; epilogue epe without res
 * or pool) and the depthwise convolution dd that reads its output (epilogue epd without res;
 * pool allowed) in one pass, the expanded map never written whole (ops/depthwise.c): where
 * cn_expand_dw_fusable(dd's kernel size, stride) (the AVX-512 or AVX2 depthwise kernels). out as
 * cn_conv2d_forward_fused(dd) writes it; ws: cn_expand_dw_workspace floats, 64-byte aligned. */
int cn_expand_dw_fusable(int k, int stride);
size_t cn_expand_dw_workspace(const cn_conv_desc *de, const cn_conv_desc *dd, int nthreads);
void cn_expand_dw_forward(float *out, const float *in, const float *we, const cn_epilogue *epe,
                          const cn_conv_desc *de, const float *wd, const cn_epilogue *epd,
                          const cn_conv_desc *dd, float *ws, int nthreads);
/* the same with dd's filters tap-major (cn_dwconv_pack_weights) */
void cn_expand_dw_forward_packed(float *out, const float *in, const float *we,
                                 const cn_epilogue *epe, const cn_conv_desc *de, const float *wdr,
                                 const cn_epilogue *epd, const cn_conv_desc *dd, float *ws,
                                 int nthreads);
/* Naive references (direct 7-deep loops), used by tests. */
void cn_conv2d_forward_ref(float *out, const float *in, const float *weight, const float *bias,
                           const cn_conv_desc *d);

/* ---- batchnorm2d: https://pytorch.org/docs/1.13/generated/torch.nn.BatchNorm2d.html ----
 * x, y: (M, C) with M = N*H*W. Training uses batch statistics (biased variance to normalise,
 * unbiased variance for the running estimate) and updates the running statistics with momentum;
 * evaluation uses the running statistics. save: (2, C) mean and 1/sqrt(var + eps) for backward.
 * scratch: cn_batchnorm_scratch(C) bytes, 8-byte aligned. */
size_t cn_batchnorm_scratch(int c);
void cn_batchnorm_forward_train(float *y, float *save, float *running_mean, float *running_var,
                                const float *x, const float *gamma, const float *beta, size_t m,
                                int c, float eps, float momentum, void *scratch);
void cn_batchnorm_forward_eval(float *y, const float *x, const float *gamma, const float *beta,
                               const float *running_mean, const float *running_var, size_t m,
                               int c, float eps, void *scratch);
void cn_batchnorm_backward_train(float *dx, float *dgamma, float *dbeta, const float *dy,
                                 const float *x, const float *gamma, const float *save, size_t m,
                                 int c, void *scratch);
void cn_batchnorm_backward_eval(float *dx, float *dgamma, float *dbeta, const float *dy,
                                const float *x, const float *gamma, const float *running_mean,
                                const float *running_var, size_t m, int c, float eps,
                                void *scratch);

/* The same with an activation fused after the normalisation (torchvision's bn -> relu, and
 * EfficientNet's bn -> silu): y = act(bn(x)). The backward takes dy = d/d(activation output) and
 * out = the activation output (the ReLU mask; unused otherwise). For SiLU the pre-activation is
 * recomputed from x, save (mean, invstd), gamma and beta, so the BN output need not be stored;
 * beta may be NULL unless act is CN_ACT_SILU. */

void cn_batchnorm_act_forward_train(float *y, float *save, float *running_mean, float *running_var,
                                    const float *x, const float *gamma, const float *beta,
                                    size_t m, int c, float eps, float momentum, void *scratch,
                                    cn_act act);
void cn_batchnorm_act_forward_eval(float *y, const float *x, const float *gamma, const float *beta,
                                   const float *running_mean, const float *running_var, size_t m,
                                   int c, float eps, void *scratch, cn_act act);
void cn_batchnorm_act_backward_train(float *dx, float *dgamma, float *dbeta, const float *dy,
                                     const float *x, const float *gamma, const float *beta,
                                     const float *save, size_t m, int c, void *scratch,
                                     cn_act act, const float *out);
/* The same, but dx is SET (written without being read) rather than accumulated: for an input
 * whose only consumer is this batch norm, so that its gradient needs no zeroing first. */
void cn_batchnorm_act_backward_train_set(float *dx, float *dgamma, float *dbeta,
                                         const float *dy, const float *x, const float *gamma,
                                         const float *beta, const float *save, size_t m, int c,
                                         void *scratch, cn_act act, const float *out);
/* A residual block's end fused into its last batch norm: y = act(bn(x) + res), res (M, C), act
 * CN_ACT_NONE or CN_ACT_RELU (the sum in the order of bn, then add, then the activation: the
 * bits of the three apart). The backward also hands the gradient reaching res (dy through the
 * activation's derivative) to dres, added to it, or written when res_set; dx likewise with set.
 * res NULL: the functions above. */
void cn_batchnorm_res_forward_train(float *y, float *save, float *running_mean, float *running_var,
                                    const float *x, const float *res, const float *gamma,
                                    const float *beta, size_t m, int c, float eps, float momentum,
                                    void *scratch, cn_act act);
/* s[0, C) = the sums over rows of x (rows, C), s[C, 2C) = the sums of squares, in double, the
 * rows in order; and the training forward from per-image sums (nimg of them, (nimg, 2, C),
 * added in image order) instead of its own pass over x. */
void cn_batchnorm_image_sums(double *s, const float *x, size_t rows, int c);
void cn_batchnorm_res_forward_train_sums(float *y, float *save, float *running_mean,
                                         float *running_var, const float *x, const float *res,
                                         const float *gamma, const float *beta, size_t m, int c,
                                         float eps, float momentum, void *scratch, cn_act act,
                                         const double *img_sums, int nimg);
void cn_batchnorm_res_forward_eval(float *y, const float *x, const float *res, const float *gamma,
                                   const float *beta, const float *running_mean,
                                   const float *running_var, size_t m, int c, float eps,
                                   void *scratch, cn_act act);
void cn_batchnorm_res_backward_train(float *dx, float *dres, float *dgamma, float *dbeta,
                                     const float *dy, const float *x, const float *gamma,
                                     const float *beta, const float *save, size_t m, int c,
                                     void *scratch, cn_act act, const float *out, int set,
                                     int res_set);
/* The backward in two parts, for the convolution before the batch norm, which makes dx a few
 * rows at a time as it needs them (cn_conv2d_backward_bn) instead of reading it whole from
 * memory: cn_batchnorm_res_backward_coeffs is the first pass (dgamma, dbeta, dres as above, and
 * the coefficients of dx into b->k), cn_batchnorm_dx_rows then writes dx rows [lo, hi) into dx
 * (dx[0] is row lo), the bits of cn_batchnorm_res_backward_train's. */
typedef struct cn_bn_dx {
    float *dy;           /* (M, C); after a SiLU, the coefficients pass writes its gate
                            g = dy * silu'(.) over it and sets act to CN_ACT_NONE (the SiLU
                            need not be evaluated again for dx) */
    const float *x;      /* (M, C) */
    const float *out;    /* the fused activation's output (a ReLU's mask), or NULL */
    cn_act act;
    int c;
    float *k;            /* 5 C floats, filled by the coefficients pass */
} cn_bn_dx;
void cn_batchnorm_res_backward_coeffs(cn_bn_dx *b, float *dres, float *dgamma, float *dbeta,
                                      const float *gamma, const float *beta, const float *save,
                                      size_t m, void *scratch, int res_set);
void cn_batchnorm_dx_rows(const cn_bn_dx *b, float *dx, size_t lo, size_t hi);

/* The backward of a convolution (no bias) whose output only a batch norm reads, with dY made
 * image by image from the batch norm's coefficients (cn_batchnorm_res_backward_coeffs) into a
 * buffer of the thread instead of read from memory: dY is never written whole, and the data and
 * weight gradients read it from cache. din is added to (set: written; NULL: not wanted); dw is
 * added to. For the shapes where cn_conv2d_backward_bn_ok (every 1x1 convolution, in blocks of
 * rows; the direct kernels' stride-1 shapes: ResNet-20's 16- and 32-channel layers; depthwise
 * convolutions where each thread takes whole blocks of images, see cn_dwconv_backward_bn); the
 * same bits as cn_conv2d_backward given dY. ws as counted by cn_conv2d_workspace with backward
 * set. */
int cn_conv2d_backward_bn_ok(const cn_conv_desc *d, int nthreads);
/* The forward of a training step (no bias; the output of cn_conv2d_forward_train) that also
 * gives the batch norm after it the sums of each image's output (cn_batchnorm_image_sums into
 * stats, (N, 2, OC) doubles), so that the BN's forward need not read its input for them
 * (cn_batchnorm_res_forward_train_sums): on the direct kernels' shapes and the 1x1 GEMM's
 * parallel plan taken as each image leaves the kernels, in cache; elsewhere in a pass after the
 * convolution. The same sums either way. */
void cn_conv2d_forward_train_stats(float *out, const float *in, const float *w,
                                   const cn_conv_desc *d, float *ws, int nthreads,
                                   double *stats);
void cn_conv2d_backward_bn(float *din, float *dw, const cn_bn_dx *bn, const float *in,
                           const float *w, const cn_conv_desc *d, float *ws, int nthreads,
                           int set);
/* The same for a depthwise convolution (cn_conv2d_* hand these over): dY made a block of images
 * at a time into a buffer of the thread, where each thread's share of the weight gradient's
 * tasks is whole blocks (cn_dwconv_backward_bn_ok); the same bits as cn_dwconv_backward given dY.
 * ws as counted by cn_dwconv_workspace with backward set. */
int cn_dwconv_backward_bn_ok(const cn_conv_desc *d, int nthreads);
void cn_dwconv_backward_bn(float *din, float *dw, const cn_bn_dx *bn, const float *in,
                           const float *w, const cn_conv_desc *d, float *ws, int nthreads,
                           int set);
/* The former ReLU-only names, kept as thin wrappers of the above (relu: 0 or 1; relu_out NULL
 * means no ReLU). */
void cn_batchnorm_relu_forward_train(float *y, float *save, float *running_mean,
                                     float *running_var, const float *x, const float *gamma,
                                     const float *beta, size_t m, int c, float eps,
                                     float momentum, void *scratch, int relu);
void cn_batchnorm_relu_forward_eval(float *y, const float *x, const float *gamma,
                                    const float *beta, const float *running_mean,
                                    const float *running_var, size_t m, int c, float eps,
                                    void *scratch, int relu);
void cn_batchnorm_relu_backward_train(float *dx, float *dgamma, float *dbeta, const float *dy,
                                      const float *x, const float *gamma, const float *save,
                                      size_t m, int c, void *scratch, const float *relu_out);

/* ---- relu: https://pytorch.org/docs/1.13/generated/torch.nn.ReLU.html ---- */
void cn_relu_forward(float *restrict y, const float *restrict x, size_t n);
void cn_relu_backward(float *restrict dx, const float *restrict dy, const float *restrict y,
                      size_t n);

/* dy = dy where y > 0, else 0: the backward written over its own input, for a ReLU that is the
 * only consumer of its input (the executor then shares one gradient buffer) */
void cn_relu_backward_inplace(float *dy, const float *y, size_t n);

/* ---- SiLU y = x * sigmoid(x): https://pytorch.org/docs/1.13/generated/torch.nn.SiLU.html ---- */
void cn_silu_forward(float *y, const float *x, size_t n);
void cn_silu_backward(float *dx, const float *dy, const float *x, size_t n); /* dx += dy * silu'(x) */
/* ---- sigmoid: https://pytorch.org/docs/1.13/generated/torch.nn.Sigmoid.html ---- */
void cn_sigmoid_forward(float *y, const float *x, size_t n);
/* dx += dy * y * (1 - y), y = the forward output */
void cn_sigmoid_backward(float *dx, const float *dy, const float *y, size_t n);

/* ---- channel scale, the multiply of squeeze-and-excitation (torchvision's
 * SqueezeExcitation: scale * input): y[n,p,c] = x[n,p,c] * s[n,c]; x, y (N, HW, C), s (N, C) ---- */
void cn_scale_forward(float *y, const float *x, const float *s, int n, int hw, int c);
/* dx += dy * s; ds[n,c] += sum_p dy * x */
void cn_scale_backward(float *dx, float *ds, const float *dy, const float *x, const float *s,
                       int n, int hw, int c);

/* ---- dropout (https://pytorch.org/docs/1.13/generated/torch.nn.Dropout.html) and stochastic
 * depth (https://pytorch.org/vision/0.14/generated/torchvision.ops.StochasticDepth.html, mode
 * "row") as a multiply by a mask.
 * cn_dropout_mask fills count floats with 0 (probability p) or 1/(1-p) (probability 1-p); all 0
 * when p >= 1, all 1 when p <= 0. Deterministic: the values depend only on (seed, stream, step)
 * and the index, not on threads. */
void cn_dropout_mask(float *mask, size_t count, float p, uint64_t seed, uint64_t stream,
                     uint64_t step);
/* y[i] = x[i] * mask[i / per]  (per = 1: dropout, element masks; per = H*W*C: drop path, one
 * value per sample) */
void cn_mask_forward(float *y, const float *x, const float *mask, size_t n, size_t per);
/* dx += dy * mask[i / per] */
void cn_mask_backward(float *dx, const float *dy, const float *mask, size_t n, size_t per);

/* ---- add: y = a + b (the residual connection) ---- */
void cn_add_forward(float *restrict y, const float *restrict a, const float *restrict b, size_t n);
/* da += dy; db += dy */
void cn_add_backward(float *restrict da, float *restrict db, const float *restrict dy, size_t n);

/* ---- pooling: MaxPool2d / AvgPool2d (count_include_pad=True, as PyTorch's default) ----
 * https://pytorch.org/docs/1.13/generated/torch.nn.MaxPool2d.html
 * https://pytorch.org/docs/1.13/generated/torch.nn.AvgPool2d.html
 * d describes the window (oc == c, groups ignored). argmax: (N, OH, OW, C) input offsets. */
void cn_maxpool_forward(float *out, int32_t *argmax, const float *in, const cn_conv_desc *d);
void cn_maxpool_backward(float *din, const float *dout, const int32_t *argmax,
                         const cn_conv_desc *d);
void cn_avgpool_forward(float *out, const float *in, const cn_conv_desc *d);
void cn_avgpool_backward(float *din, const float *dout, const cn_conv_desc *d);
/* AdaptiveAvgPool2d(1): (N, H, W, C) -> (N, C) */
void cn_gap_forward(float *out, const float *in, int n, int hw, int c);
void cn_gap_backward(float *din, const float *dout, int n, int hw, int c);

/* ---- option-A shortcut of the CIFAR ResNets (He et al. 2016): x[:, :, ::s, ::s] with the extra
 * output channels zero (appended after the input's). in (N,H,W,C) -> out (N,OH,OW,OC), OC >= C. */
void cn_shortcut_a_forward(float *out, const float *in, int n, int h, int w, int c, int oh,
                           int ow, int oc, int stride);
void cn_shortcut_a_backward(float *din, const float *dout, int n, int h, int w, int c, int oh,
                            int ow, int oc, int stride);

/* ---- flatten: torch.flatten(x, 1) on NCHW semantics: (N,H,W,C) -> (N, C*H*W) ordered (c,h,w) */
void cn_flatten_forward(float *out, const float *in, int n, int h, int w, int c);
void cn_flatten_backward(float *din, const float *dout, int n, int h, int w, int c);

/* ---- linear: https://pytorch.org/docs/1.13/generated/torch.nn.Linear.html ----
 * x (N, K), weight (OC, K), bias (OC) or NULL, y (N, OC). */
void cn_linear_forward(float *y, const float *x, const float *weight, const float *bias, int n,
                       int k, int oc);
void cn_linear_backward(float *dx, float *dweight, float *dbias, const float *dy, const float *x,
                        const float *weight, int n, int k, int oc);

/* ---- cross entropy with label smoothing:
 * https://pytorch.org/docs/1.13/generated/torch.nn.CrossEntropyLoss.html (reduction='mean')
 * logits (N, K), labels (N). Returns the mean loss; dlogits (N, K) is SET (not accumulated) to
 * d(loss)/d(logits) when non-NULL. correct (optional) counts argmax hits. */
float cn_softmax_xent(float *dlogits, int *correct, const float *logits, const int32_t *labels,
                      int n, int k, float smoothing);

#endif
