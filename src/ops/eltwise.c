/* Element-wise ops: relu (https://pytorch.org/docs/1.13/generated/torch.nn.ReLU.html) and the
 * residual add. */
#include "ops/ops.h"

void cn_relu_forward(float *restrict y, const float *restrict x, size_t n) {
#pragma omp parallel for simd schedule(static) if (n > 32768)
    for (size_t i = 0; i < n; i++) y[i] = x[i] > 0 ? x[i] : 0.0f;
}

/* PyTorch's threshold_backward passes the gradient where the output is > 0. */
void cn_relu_backward(float *restrict dx, const float *restrict dy, const float *restrict y,
                      size_t n) {
#pragma omp parallel for simd schedule(static) if (n > 32768)
    for (size_t i = 0; i < n; i++) dx[i] += y[i] > 0 ? dy[i] : 0.0f;
}

void cn_add_forward(float *restrict y, const float *restrict a, const float *restrict b, size_t n) {
#pragma omp parallel for simd schedule(static) if (n > 32768)
    for (size_t i = 0; i < n; i++) y[i] = a[i] + b[i];
}

void cn_add_backward(float *restrict da, float *restrict db, const float *restrict dy, size_t n) {
    if (da) {
#pragma omp parallel for simd schedule(static) if (n > 32768)
        for (size_t i = 0; i < n; i++) da[i] += dy[i];
    }
    if (db) {
#pragma omp parallel for simd schedule(static) if (n > 32768)
        for (size_t i = 0; i < n; i++) db[i] += dy[i];
    }
}
