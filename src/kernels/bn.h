/* Kernels of batch norm's training passes (ops/batchnorm.c keeps the plain loops). */
#ifndef CN_KERNELS_BN_H
#define CN_KERNELS_BN_H
#include <stddef.h>

/* p[j] += x[i][j] and p2[j] += x[i][j]^2 in double for rows i in [lo, hi) of x (rows of c
 * floats), each channel's rows added in order: the same bits as the plain loop */
void cn_bn_sums__avx512(double *p, double *p2, const float *x, size_t lo, size_t hi, int c);
/* the same for CPUs with AVX2 (and not AVX-512): the same bits */
void cn_bn_sums__avx2(double *p, double *p2, const float *x, size_t lo, size_t hi, int c);
#endif
