/* Direct (implicit-GEMM) convolution kernels for NHWC images with a multiple of 16 output
 * channels: the output channels lie along the vector lanes, input values are broadcast, and the
 * whole KH*KW*C reduction of a register tile runs without leaving registers (no im2col, no
 * partial sums written back between kernel rows). Used for the 3x3 convolutions of small-channel
 * networks (ResNet-20: 16/32/64 channels), where the GEMM of one image is too small and too
 * narrow for the packed algorithm to reach its speed. */
#ifndef CN_KERNELS_CONV_DIRECT_H
#define CN_KERNELS_CONV_DIRECT_H

#include <stddef.h>

/* One image. The input is a zero-padded copy (hp x wp pixels of c floats), followed by at least
 * CN_DCONV_SLACK readable floats (tiles at a ragged edge read past it and drop the results). */
typedef struct cn_dconv_shape {
    int oh, ow, oc;   /* output */
    int c, kh, kw;    /* input channels, kernel */
    int sh, sw;       /* stride */
    int wp;           /* padded input width */
} cn_dconv_shape;

enum { CN_DCONV_SLACK = 2048 };

/* 1 when the AVX-512 direct kernels exist for this CPU and shape (forward: oc % 16 == 0 and a
 * pixel stride sw * c of 1, 2, 16, 32 or 64 floats; weight gradient: oc % 16 == 0). */
int cn_dconv_forward_ok(const cn_dconv_shape *s);
int cn_dconv_wgrad_ok(const cn_dconv_shape *s);

/* out (OH, OW, OC) = conv(xpad, wk), or += with accumulate; wk (KH*KW*C, OC): the weights with
 * the output channel innermost. */
void cn_dconv_forward_image(float *out, const float *xpad, const float *wk,
                            const cn_dconv_shape *s, int accumulate);
/* dwk (KH*KW*C, OC) += sum over the pixels of the image of xpad patch (x) dy (OH, OW, OC). */
void cn_dconv_wgrad_image(float *dwk, const float *xpad, const float *dy, const cn_dconv_shape *s);

#endif
