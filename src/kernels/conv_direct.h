/* Direct (implicit-GEMM) convolution kernels for NHWC images: the output channels lie along the
 * vector lanes, input values are broadcast, and the whole KH*KW*C reduction of a register tile
 * runs without leaving registers (no im2col, no partial sums written back between kernel rows).
 * Used for the 3x3 convolutions of small-channel networks (ResNet-20: 16/32/64 channels, and the
 * irregular widths that structured pruning leaves, e.g. 9/18/36), where the GEMM of one image is
 * too small and too narrow for the packed algorithm to reach its speed.
 *
 * Any number of output channels: the packed weights have cn_dconv_ldw(oc) columns, the ones
 * past oc zero, so that the kernels compute whole vectors and store the real channels only
 * (masked stores). */
#ifndef CN_KERNELS_CONV_DIRECT_H
#define CN_KERNELS_CONV_DIRECT_H

#include <stddef.h>

#include "kernels/gemm.h"

/* One image. The input is a zero-padded copy (hp x wp pixels of c floats), followed by at least
 * CN_DCONV_SLACK readable floats (tiles at a ragged edge read past it and drop the results). */
typedef struct cn_dconv_shape {
    int oh, ow, oc;   /* output */
    int c, kh, kw;    /* input channels, kernel */
    int sh, sw;       /* stride */
    int wp;           /* padded input width */
} cn_dconv_shape;

enum { CN_DCONV_SLACK = 2048 };

/* columns of the packed weights: oc rounded up to a whole vector */
static inline int cn_dconv_ldw(int oc) { return (oc + 15) / 16 * 16; }

/* 1 when the direct kernels exist for this CPU (AVX-512, or AVX2 + FMA; any shape; the callers
 * exclude groups and 1x1 convolutions, which the GEMM runs at full speed) */
int cn_dconv_forward_ok(const cn_dconv_shape *s);
int cn_dconv_wgrad_ok(const cn_dconv_shape *s);

/* output rows oy0..oy1-1 of out (OH, OW, OC) = conv(xpad, wk), or += with accumulate;
 * wk (KH*KW*C, ldw(OC)): the weights with the output channel innermost, zero past OC; f (or
 * NULL): an epilogue applied in registers before the store (after the accumulation), its
 * scale and shift per output channel, its residual (or NULL) laid out as out (f->ldr unused) */
void cn_dconv_forward_rows(float *out, const float *xpad, const float *wk,
                           const cn_dconv_shape *s, int oy0, int oy1, int accumulate,
                           const cn_gemm_affine *f);
/* the epilogue f of a tile whose first value is output channel oc0 of pixel px (OC channels a
 * pixel): scale and shift from oc0, the residual (laid out as the output) at that value */
static inline cn_gemm_affine cn_dconv_affine_at(const cn_gemm_affine *f, size_t px, size_t oc,
                                                size_t oc0) {
    cn_gemm_affine g = *f;
    g.scale += oc0, g.shift += oc0;
    if (g.res) g.res += px * oc + oc0;
    return g;
}

/* 1 when the epilogue pays in the kernel (AVX-512); on AVX2, whose 16 registers the tile fills,
 * the in-kernel epilogue was 1-5 % slower than a pass after the kernel (the ImageNet stems at
 * batch 16) */
int cn_dconv_epilogue_pays(void);
/* dwk (KH*KW*C, ldw(OC)) += sum over the pixels of the image of xpad patch (x) dy (OH, OW, OC);
 * the columns past OC stay as they are */
void cn_dconv_wgrad_image(float *dwk, const float *xpad, const float *dy, const cn_dconv_shape *s);

#endif
