/* The element-wise activations over arrays (act.h): the AVX-512 copy where the CPU has it,
 * otherwise the plain loops over the scalar functions of ops/activation.h (vectorised by gcc,
 * compiled for AVX-512, AVX2 and the baseline). */
#include "kernels/act.h"

#include "core/cpu.h"
#include "core/simd.h"
#include "ops/activation.h"

static CN_CLONES void silu_c(float *y, const float *x, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] = cn_silu1(x[i]);
}

static CN_CLONES void sigmoid_c(float *y, const float *x, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] = cn_sigmoid1(x[i]);
}

static CN_CLONES void silu_grad_acc_c(float *restrict dx, const float *restrict dy,
                                      const float *restrict x, size_t n) {
    for (size_t i = 0; i < n; i++) dx[i] += dy[i] * cn_silu_grad1(x[i]);
}

static CN_CLONES void silu_grad_mul_c(float *out, const float *dy, const float *x, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = dy[i] * cn_silu_grad1(x[i]);
}

static int use_avx512(void) { return cn_cpu_avx512(); }

void cn_silu_n(float *y, const float *x, size_t n) {
    if (use_avx512()) cn_silu_n__avx512(y, x, n);
    else silu_c(y, x, n);
}

void cn_sigmoid_n(float *y, const float *x, size_t n) {
    if (use_avx512()) cn_sigmoid_n__avx512(y, x, n);
    else sigmoid_c(y, x, n);
}

void cn_silu_grad_acc_n(float *dx, const float *dy, const float *x, size_t n) {
    if (use_avx512()) cn_silu_grad_acc_n__avx512(dx, dy, x, n);
    else silu_grad_acc_c(dx, dy, x, n);
}

void cn_silu_grad_mul_n(float *out, const float *dy, const float *x, size_t n) {
    if (use_avx512()) cn_silu_grad_mul_n__avx512(out, dy, x, n);
    else silu_grad_mul_c(out, dy, x, n);
}
