/* SiLU, sigmoid and the SiLU gradient over arrays, for the hot loops (convolution epilogues,
 * activations, batch norm): an AVX-512 copy (e^x by range reduction, a degree-6 minimax
 * polynomial and vscalefps; 1/(1 + e) by a division), an AVX2+FMA copy for CPUs without AVX-512
 * (2^n from exponent bits in two halves, a division) and the plain C loops of ops/activation.h
 * elsewhere, chosen once from the CPU features. Both keep the error bounds that
 * tests/test_ops_effnet.c measures (4 ulp, 8 ulp for the gradient, subnormal results included). */
#ifndef CN_KERNELS_ACT_H
#define CN_KERNELS_ACT_H
#include <stddef.h>

/* The vector copies' e^a = p 2^n: n = round(a log2(e)), r = a - n ln2 with ln2 in two parts
 * (|r| <= ln2 / 2), p = e^r by the degree-6 minimax polynomial 1 + c1 r + ... + c6 r^6 on that
 * interval (relative error 3.9e-9; two operations fewer than ops/activation.h's degree-7 Taylor
 * form) */
#define CN_EXP_LOG2E 1.44269504f
#define CN_EXP_LN2_HI 0.693145751953125f
#define CN_EXP_LN2_LO 1.42860676533018e-06f
#define CN_EXP_C6 0.001394858118146658f
#define CN_EXP_C5 0.008381109684705734f
#define CN_EXP_C4 0.041666239500045776f
#define CN_EXP_C3 0.166663259267807f
#define CN_EXP_C2 0.5f
#define CN_EXP_C1 1.0000001192092896f

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
