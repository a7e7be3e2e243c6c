/* Depthwise convolution, forward, by AVX-512 kernels with the weights in registers: 3x3 and 5x5,
 * stride 1 and 2, any padding, NHWC. A task is one image, a group of 16-channel blocks and a band
 * of output rows. The input rows are read in order and copied, per block and zero padded on both
 * sides, into a ring of K rows with 16 floats per pixel, so that every tap of every output pixel
 * is one aligned load at a constant offset; each input row is copied once per task. The K*K
 * weight vectors of a block stay in registers along an output row, and the bias, the BatchNorm
 * affine, the residual and the activation are applied in registers before the only store.
 * ops/depthwise.c uses it where the CPU has AVX-512, the AVX2+FMA copy where it has those but not
 * AVX-512, and keeps its portable kernels elsewhere (and for the backward passes). */
#ifndef CN_KERNELS_DWCONV_H
#define CN_KERNELS_DWCONV_H
#include <stddef.h>

typedef struct cn_dw_job {
    const float *in;   /* (N, H, W, C) */
    float *out;        /* (N, OH, OW, C) */
    const float *wr;   /* weights (K*K, C): tap-major, as ops/depthwise.c repacks them */
    const float *bias; /* (C) or NULL */
    const float *scale, *shift; /* epilogue y = y * scale + shift (+ res), or NULL */
    const float *res;  /* (N, OH, OW, C) or NULL */
    int act;           /* cn_act */
    float *pool;       /* (N, C): each image's per-channel mean of out, or NULL (tasks must
                        * then cover whole images: all output rows) */
    double *pool_sums; /* instead of pool (which is then NULL): (C) doubles that receive the
                        * task's own per-channel sums of out (its channels only), for a caller
                        * that splits images into bands and adds the bands' sums in order */
    int n, h, w, c, oh, ow, k, s, ph, pw;
} cn_dw_job;

/* whether the kernels handle this kernel size and stride */
int cn_dw_fast_shape(int k, int s);
/* floats of the per-thread buffer of a task of that many channel blocks (the ring and the
 * pool's sums) */
size_t cn_dw_ring_floats(const cn_dw_job *j, int blocks);
/* output rows [oy0, oy1) of image img, channel blocks [b0, b1) (channels 16 b0 ..; the last
 * block masked past C); ring: the calling thread's buffer of cn_dw_ring_floats(j, b1 - b0)
 * floats, 64-byte aligned */
void cn_dw_task__avx512(const cn_dw_job *j, int img, int b0, int b1, int oy0, int oy1,
                        float *ring);

/* The AVX2+FMA copy (dwconv_avx2.c), for CPUs with AVX2 and FMA but not AVX-512: the same
 * tasks and ring (16-channel blocks done as two 8-channel halves), the same sums in the same
 * order (only the activations' last bits may differ). cn_dw_fast_shape__avx2 and
 * cn_dw_ring_floats__avx2 are cn_dw_fast_shape and cn_dw_ring_floats compiled for AVX2
 * (dwconv_avx512.c is compiled for AVX-512: nothing of it is called on a CPU without). */
int cn_dw_fast_shape__avx2(int k, int s);
size_t cn_dw_ring_floats__avx2(const cn_dw_job *j, int blocks);
void cn_dw_task__avx2(const cn_dw_job *j, int img, int b0, int b1, int oy0, int oy1, float *ring);

/* The weight gradient's inner step on AVX2+FMA (dwwgrad_avx2.c), k in {3, 5}, s in {1, 2}: for
 * kernel row dwk (K, C) in double, channels [c0, c1), dwk[kx][ch] += the sum over m images
 * (dY rows drow + i * ds, input rows xrow + i * xs, (W, C) each) and over the output pixels ox
 * in [lo[kx], hi[kx]) of dY[ox][ch] * x[ox * s - pw + kx][ch]; lo[0] and hi[k - 1] bound the
 * pixels whose taps are all inside the row. Sums in float, added in double once per call. */
void cn_dw_wgrad_krow__avx2(double *dwk, const float *drow, size_t ds, const float *xrow,
                            size_t xs, int m, int c, int pw, const int *lo, const int *hi, int c0,
                            int c1, int k, int s);
/* A tap table of ops/depthwise.c on AVX2+FMA (dwwgrad_avx2.c): for images i < m and channels
 * [c0, c1), o[i * os + ch] = (acc ? itself : bias[ch] or 0) + the sum over the taps k < nt, in
 * order, of x[k][xo + i * xs + ch] * w[k][ch], each a fused multiply-add */
void cn_dw_taps_sum__avx2(float *o, size_t os, const float *const *x, const float *const *w,
                          int nt, size_t xo, size_t xs, int m, const float *bias, int acc, int c0,
                          int c1);
#endif
