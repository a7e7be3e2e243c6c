/* Dropout (https://pytorch.org/docs/1.13/generated/torch.nn.Dropout.html) and stochastic depth
 * (https://pytorch.org/vision/0.14/generated/torchvision.ops.StochasticDepth.html, mode "row")
 * as a multiply by a mask drawn here. Element i of the mask is decided by draw i of the
 * counter-based stream (seed, stream, step), so masks are the same for any thread count and can
 * be recreated for a given step (exact resume). */
#include "core/rng.h"
#include "core/simd.h"
#include "ops/ops.h"

enum { NB = 64, SERIAL_BELOW = 32768 };

void cn_dropout_mask(float *mask, size_t count, float p, uint64_t seed, uint64_t stream,
                     uint64_t step) {
    if (!(p > 0)) {
        for (size_t i = 0; i < count; i++) mask[i] = 1.0f;
        return;
    }
    if (p >= 1) {
        for (size_t i = 0; i < count; i++) mask[i] = 0.0f;
        return;
    }
    cn_rng base = cn_rng_make(seed, stream, step);
    float keep = (float)(1.0 / (1.0 - (double)p));
    /* a 24-bit uniform u, dropped when u < p (the fraction of drops is p to within 2^-24) */
    uint32_t limit = (uint32_t)((double)p * 16777216.0);
#pragma omp parallel for schedule(static) if (count >= SERIAL_BELOW)
    for (size_t i = 0; i < count; i++) {
        cn_rng r = base;
        r.ctr = i;
        mask[i] = (uint32_t)(cn_rng_u64(&r) >> 40) < limit ? 0.0f : keep;
    }
}

static CN_CLONES void mask_rows(float *restrict y, const float *restrict x,
                                const float *restrict mask, size_t lo, size_t hi, size_t per) {
    if (per == 1) {
        for (size_t i = lo; i < hi; i++) y[i] = x[i] * mask[i];
        return;
    }
    for (size_t i = lo; i < hi;) {
        size_t end = (i / per + 1) * per;
        if (end > hi) end = hi;
        float m = mask[i / per];
        for (; i < end; i++) y[i] = x[i] * m;
    }
}

static CN_CLONES void mask_back_rows(float *restrict dx, const float *restrict dy,
                                     const float *restrict mask, size_t lo, size_t hi,
                                     size_t per) {
    if (per == 1) {
        for (size_t i = lo; i < hi; i++) dx[i] += dy[i] * mask[i];
        return;
    }
    for (size_t i = lo; i < hi;) {
        size_t end = (i / per + 1) * per;
        if (end > hi) end = hi;
        float m = mask[i / per];
        for (; i < end; i++) dx[i] += dy[i] * m;
    }
}

void cn_mask_forward(float *y, const float *x, const float *mask, size_t n, size_t per) {
    int nb = n < SERIAL_BELOW ? 1 : NB;
#pragma omp parallel for schedule(static) if (nb > 1)
    for (int b = 0; b < nb; b++) mask_rows(y, x, mask, n * b / nb, n * (b + 1) / nb, per);
}

void cn_mask_backward(float *dx, const float *dy, const float *mask, size_t n, size_t per) {
    int nb = n < SERIAL_BELOW ? 1 : NB;
#pragma omp parallel for schedule(static) if (nb > 1)
    for (int b = 0; b < nb; b++) mask_back_rows(dx, dy, mask, n * b / nb, n * (b + 1) / nb, per);
}
