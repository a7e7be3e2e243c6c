/* The element-wise activations over arrays (act.h): the AVX-512 copy where the CPU has it, the
 * AVX2+FMA copy where it has those but not AVX-512, otherwise the plain loops over the scalar
 * functions of ops/activation.h (vectorised by gcc, compiled for AVX-512, AVX2 and the
 * baseline). */
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

/* 2: AVX-512, 1: AVX2 and FMA (not AVX-512), 0: plain C */
static int level(void) {
    if (cn_cpu_avx512()) return 2;
    const cn_cpu_features *f = cn_cpu();
    return f->avx2 && f->fma ? 1 : 0;
}

void cn_silu_n(float *y, const float *x, size_t n) {
    const int l = level();
    if (l == 2) cn_silu_n__avx512(y, x, n);
    else if (l == 1) cn_silu_n__avx2(y, x, n);
    else silu_c(y, x, n);
}

void cn_sigmoid_n(float *y, const float *x, size_t n) {
    const int l = level();
    if (l == 2) cn_sigmoid_n__avx512(y, x, n);
    else if (l == 1) cn_sigmoid_n__avx2(y, x, n);
    else sigmoid_c(y, x, n);
}

void cn_silu_grad_acc_n(float *dx, const float *dy, const float *x, size_t n) {
    const int l = level();
    if (l == 2) cn_silu_grad_acc_n__avx512(dx, dy, x, n);
    else if (l == 1) cn_silu_grad_acc_n__avx2(dx, dy, x, n);
    else silu_grad_acc_c(dx, dy, x, n);
}

void cn_silu_grad_mul_n(float *out, const float *dy, const float *x, size_t n) {
    const int l = level();
    if (l == 2) cn_silu_grad_mul_n__avx512(out, dy, x, n);
    else if (l == 1) cn_silu_grad_mul_n__avx2(out, dy, x, n);
    else silu_grad_mul_c(out, dy, x, n);
}
