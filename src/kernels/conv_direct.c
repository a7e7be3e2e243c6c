/* Choice of the direct convolution kernels (conv_direct.h): AVX-512, else AVX2 + FMA, following
 * the GEMM's kernel path (so that tests forcing the generic path exercise the fallback too). */
#include "kernels/conv_direct.h"

#include <string.h>

#include "kernels/gemm.h"

void f32_dconv_forward_rows__avx512(float *out, const float *xpad, const float *wk,
                                    const cn_dconv_shape *s, int oy0, int oy1, int accumulate,
                                    const cn_gemm_affine *f);
void f32_dconv_wgrad_image__avx512(float *dwk, const float *xpad, const float *dy,
                                   const cn_dconv_shape *s);

void f32_dconv_forward_rows__avx2(float *out, const float *xpad, const float *wk,
                                  const cn_dconv_shape *s, int oy0, int oy1, int accumulate,
                                  const cn_gemm_affine *f);
void f32_dconv_wgrad_image__avx2(float *dwk, const float *xpad, const float *dy,
                                 const cn_dconv_shape *s);

static int avx512(void) { return strcmp(cn_sgemm_path_name(), "avx512") == 0; }
static int avx2(void) { return strcmp(cn_sgemm_path_name(), "avx2") == 0; }

/* Up to 64 input channels: wider reductions are long enough for the GEMM to reach its speed, and
 * the GEMM's blocked sums round less than one chain of KH*KW*C products. Strided convolutions
 * only with the pixel strides of 16/32 channels, of 1 or 2 input channels and of an RGB image
 * at stride 2 (ps 6: the stems of the ImageNet networks). */
int cn_dconv_forward_ok(const cn_dconv_shape *s) {
    const int ps = s->sw * s->c;
    const int fixed = ps == 1 || ps == 2 || ps == 6 || ps == 16 || ps == 32 || ps == 64;
    return (avx512() || avx2()) && s->oc > 0 && s->c > 0 && s->c <= 64 &&
           (fixed || (s->sh == 1 && s->sw == 1));
}

int cn_dconv_wgrad_ok(const cn_dconv_shape *s) {
    return (avx512() || avx2()) && s->oc > 0 && s->c > 0;
}

void cn_dconv_forward_rows(float *out, const float *xpad, const float *wk,
                           const cn_dconv_shape *s, int oy0, int oy1, int accumulate,
                           const cn_gemm_affine *f) {
    if (avx512()) f32_dconv_forward_rows__avx512(out, xpad, wk, s, oy0, oy1, accumulate, f);
    else f32_dconv_forward_rows__avx2(out, xpad, wk, s, oy0, oy1, accumulate, f);
}

int cn_dconv_epilogue_pays(void) { return avx512(); }

void cn_dconv_wgrad_image(float *dwk, const float *xpad, const float *dy,
                          const cn_dconv_shape *s) {
    if (avx512()) f32_dconv_wgrad_image__avx512(dwk, xpad, dy, s);
    else f32_dconv_wgrad_image__avx2(dwk, xpad, dy, s);
}
