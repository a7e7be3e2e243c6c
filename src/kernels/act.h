/* SiLU, sigmoid and the SiLU gradient over arrays, for the hot loops (convolution epilogues,
 * activations, batch norm): an AVX-512 copy (e^x by range reduction, a degree-7 polynomial and
 * vscalefps; 1/(1 + e) by a reciprocal estimate and one Newton step), an AVX2+FMA copy for CPUs
 * without AVX-512 (2^n from exponent bits in two halves, a division) and the plain C loops of
 * ops/activation.h elsewhere, chosen once from the CPU features. Both keep the error bounds that
 * tests/test_ops_effnet.c measures (4 ulp, 8 ulp for the gradient, subnormal results included). */
#ifndef CN_KERNELS_ACT_H
#define CN_KERNELS_ACT_H
#include <stddef.h>

/* y[i] = silu(x[i]); y may be x */
void cn_silu_n(float *y, const float *x, size_t n);
/* y[i] = sigmoid(x[i]); y may be x */
void cn_sigmoid_n(float *y, const float *x, size_t n);
/* dx[i] += dy[i] * silu'(x[i]) */
void cn_silu_grad_acc_n(float *dx, const float *dy, const float *x, size_t n);
/* out[i] = dy[i] * silu'(x[i]); out may be dy or x */
void cn_silu_grad_mul_n(float *out, const float *dy, const float *x, size_t n);

/* the AVX-512 copies (act_avx512.c) */
void cn_silu_n__avx512(float *y, const float *x, size_t n);
void cn_sigmoid_n__avx512(float *y, const float *x, size_t n);
void cn_silu_grad_acc_n__avx512(float *dx, const float *dy, const float *x, size_t n);
void cn_silu_grad_mul_n__avx512(float *out, const float *dy, const float *x, size_t n);

/* the AVX2+FMA copies (act_avx2.c), for CPUs with AVX2 and FMA but not AVX-512 */
void cn_silu_n__avx2(float *y, const float *x, size_t n);
void cn_sigmoid_n__avx2(float *y, const float *x, size_t n);
void cn_silu_grad_acc_n__avx2(float *dx, const float *dy, const float *x, size_t n);
void cn_silu_grad_mul_n__avx2(float *out, const float *dy, const float *x, size_t n);
#endif
