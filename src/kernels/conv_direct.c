/* Choice of the direct convolution kernels (conv_direct.h): AVX-512 only, following the GEMM's
 * kernel path (so that tests forcing the generic path exercise the fallback too). */
#include "kernels/conv_direct.h"

#include <string.h>

#include "kernels/gemm.h"

void f32_dconv_forward_image__avx512(float *out, const float *xpad, const float *wk,
                                     const cn_dconv_shape *s, int accumulate);
void f32_dconv_wgrad_image__avx512(float *dwk, const float *xpad, const float *dy,
                                   const cn_dconv_shape *s);

static int avx512(void) { return strcmp(cn_sgemm_path_name(), "avx512") == 0; }

int cn_dconv_forward_ok(const cn_dconv_shape *s) {
    const int ps = s->sw * s->c;
    return avx512() && s->oc % 16 == 0 &&
           (ps == 1 || ps == 2 || ps == 16 || ps == 32 || ps == 64);
}

int cn_dconv_wgrad_ok(const cn_dconv_shape *s) { return avx512() && s->oc % 16 == 0; }

void cn_dconv_forward_image(float *out, const float *xpad, const float *wk,
                            const cn_dconv_shape *s, int accumulate) {
    f32_dconv_forward_image__avx512(out, xpad, wk, s, accumulate);
}

void cn_dconv_wgrad_image(float *dwk, const float *xpad, const float *dy,
                          const cn_dconv_shape *s) {
    f32_dconv_wgrad_image__avx512(dwk, xpad, dy, s);
}
