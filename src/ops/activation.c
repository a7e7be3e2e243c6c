/* SiLU (https://pytorch.org/docs/1.13/generated/torch.nn.SiLU.html) and sigmoid
 * (https://pytorch.org/docs/1.13/generated/torch.nn.Sigmoid.html), element-wise. The parallel
 * loops hand ranges to the array kernels of kernels/act.h. */
#include "core/simd.h"
#include "kernels/act.h"
#include "ops/ops.h"

enum { NB = 64, SERIAL_BELOW = 16384 };

static void silu_rows(float *y, const float *x, size_t lo, size_t hi) {
    cn_silu_n(y + lo, x + lo, hi - lo);
}

static void silu_back_rows(float *dx, const float *dy, const float *x, size_t lo, size_t hi) {
    cn_silu_grad_acc_n(dx + lo, dy + lo, x + lo, hi - lo);
}

static void sigmoid_rows(float *y, const float *x, size_t lo, size_t hi) {
    cn_sigmoid_n(y + lo, x + lo, hi - lo);
}

static CN_CLONES void sigmoid_back_rows(float *restrict dx, const float *restrict dy,
                                        const float *restrict y, size_t lo, size_t hi) {
    for (size_t i = lo; i < hi; i++) dx[i] += dy[i] * (y[i] * (1.0f - y[i]));
}

void cn_silu_forward(float *y, const float *x, size_t n) {
    int nb = n < SERIAL_BELOW ? 1 : NB;
#pragma omp parallel for schedule(static) if (nb > 1)
    for (int b = 0; b < nb; b++) silu_rows(y, x, n * b / nb, n * (b + 1) / nb);
}

void cn_silu_backward(float *dx, const float *dy, const float *x, size_t n) {
    int nb = n < SERIAL_BELOW ? 1 : NB;
#pragma omp parallel for schedule(static) if (nb > 1)
    for (int b = 0; b < nb; b++) silu_back_rows(dx, dy, x, n * b / nb, n * (b + 1) / nb);
}

void cn_sigmoid_forward(float *y, const float *x, size_t n) {
    int nb = n < SERIAL_BELOW ? 1 : NB;
#pragma omp parallel for schedule(static) if (nb > 1)
    for (int b = 0; b < nb; b++) sigmoid_rows(y, x, n * b / nb, n * (b + 1) / nb);
}

void cn_sigmoid_backward(float *dx, const float *dy, const float *y, size_t n) {
    int nb = n < SERIAL_BELOW ? 1 : NB;
#pragma omp parallel for schedule(static) if (nb > 1)
    for (int b = 0; b < nb; b++) sigmoid_back_rows(dx, dy, y, n * b / nb, n * (b + 1) / nb);
}
