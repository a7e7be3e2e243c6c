/* Element-wise ops: relu (https://pytorch.org/docs/1.13/generated/torch.nn.ReLU.html) and the
 * residual add. The parallel loops hand ranges to kernels compiled per instruction set. */
#include "core/simd.h"
#include "ops/ops.h"

enum { NB = 64, SERIAL_BELOW = 32768 };

static CN_CLONES void relu_rows(float *restrict y, const float *restrict x, size_t lo, size_t hi) {
    for (size_t i = lo; i < hi; i++) y[i] = x[i] > 0 ? x[i] : 0.0f;
}

/* PyTorch's threshold_backward passes the gradient where the output is > 0. */
static CN_CLONES void relu_back_rows(float *restrict dx, const float *restrict dy,
                                     const float *restrict y, size_t lo, size_t hi) {
    for (size_t i = lo; i < hi; i++) dx[i] += y[i] > 0 ? dy[i] : 0.0f;
}

static CN_CLONES void relu_mask_rows(float *restrict dy, const float *restrict y, size_t lo,
                                     size_t hi) {
    for (size_t i = lo; i < hi; i++) dy[i] = y[i] > 0 ? dy[i] : 0.0f;
}

static CN_CLONES void add_rows(float *restrict y, const float *restrict a, const float *restrict b,
                               size_t lo, size_t hi) {
    for (size_t i = lo; i < hi; i++) y[i] = a[i] + b[i];
}

static CN_CLONES void acc_rows(float *restrict d, const float *restrict s, size_t lo, size_t hi) {
    for (size_t i = lo; i < hi; i++) d[i] += s[i];
}

void cn_relu_forward(float *restrict y, const float *restrict x, size_t n) {
    int nb = n < SERIAL_BELOW ? 1 : NB;
#pragma omp parallel for schedule(static) if (nb > 1)
    for (int b = 0; b < nb; b++) relu_rows(y, x, n * b / nb, n * (b + 1) / nb);
}

void cn_relu_backward(float *restrict dx, const float *restrict dy, const float *restrict y,
                      size_t n) {
    int nb = n < SERIAL_BELOW ? 1 : NB;
#pragma omp parallel for schedule(static) if (nb > 1)
    for (int b = 0; b < nb; b++) relu_back_rows(dx, dy, y, n * b / nb, n * (b + 1) / nb);
}

void cn_relu_backward_inplace(float *dy, const float *y, size_t n) {
    int nb = n < SERIAL_BELOW ? 1 : NB;
#pragma omp parallel for schedule(static) if (nb > 1)
    for (int b = 0; b < nb; b++) relu_mask_rows(dy, y, n * b / nb, n * (b + 1) / nb);
}

void cn_add_forward(float *restrict y, const float *restrict a, const float *restrict b, size_t n) {
    int nb = n < SERIAL_BELOW ? 1 : NB;
#pragma omp parallel for schedule(static) if (nb > 1)
    for (int k = 0; k < nb; k++) add_rows(y, a, b, n * k / nb, n * (k + 1) / nb);
}

void cn_add_backward(float *restrict da, float *restrict db, const float *restrict dy, size_t n) {
    int nb = n < SERIAL_BELOW ? 1 : NB;
#pragma omp parallel for schedule(static) if (nb > 1)
    for (int k = 0; k < nb; k++) {
        if (da) acc_rows(da, dy, n * k / nb, n * (k + 1) / nb);
        if (db) acc_rows(db, dy, n * k / nb, n * (k + 1) / nb);
    }
}
