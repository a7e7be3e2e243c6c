/* Channel scale, the multiply of squeeze-and-excitation
 * (https://pytorch.org/vision/0.14/generated/torchvision.ops.SqueezeExcitation.html: the
 * excitation s (N, C, 1, 1) broadcast over the map): y[n,p,c] = x[n,p,c] * s[n,c].
 * The backward makes dx and ds in one pass over dy, every ds sum over the pixels in order, in
 * double (maps have up to 12544 pixels): with images enough for the threads, one image a task,
 * reading whole pixels (all channels: the lines of dy, x and dx in order); else (image, channel
 * block) tasks. The same bits either way. */
#include <omp.h>

#include "core/simd.h"
#include "ops/ops.h"

enum { CB = 64, SERIAL_BELOW = 32768, WHOLE_MAX = 4096 };

static CN_CLONES void scale_rows(float *restrict y, const float *restrict x,
                                 const float *restrict s, size_t lo, size_t hi, int c) {
    for (size_t p = lo; p < hi; p++)
        for (int j = 0; j < c; j++) y[p * c + j] = x[p * c + j] * s[j];
}

/* one image, channels c0..c0+cn: dx += dy * s, ds += sum_p dy * x */
static CN_CLONES void scale_back_block(float *restrict dx, float *restrict ds,
                                       const float *restrict dy, const float *restrict x,
                                       const float *restrict s, int hw, int c, int c0, int cn) {
    double acc[CB] = {0};
    for (int p = 0; p < hw; p++) {
        size_t o = (size_t)p * c + c0;
        if (dx)
            for (int j = 0; j < cn; j++) dx[o + j] += dy[o + j] * s[c0 + j];
        if (ds)
            for (int j = 0; j < cn; j++) acc[j] += (double)dy[o + j] * x[o + j];
    }
    if (ds)
        for (int j = 0; j < cn; j++) ds[c0 + j] += (float)acc[j];
}

/* one image, all c <= WHOLE_MAX channels: dx += dy * s, ds += sum_p dy * x */
static CN_CLONES void scale_back_image(float *restrict dx, float *restrict ds,
                                       const float *restrict dy, const float *restrict x,
                                       const float *restrict s, int hw, int c) {
    double acc[WHOLE_MAX];
    if (ds)
        for (int j = 0; j < c; j++) acc[j] = 0;
    for (int p = 0; p < hw; p++) {
        const size_t o = (size_t)p * c;
        if (dx)
            for (int j = 0; j < c; j++) dx[o + j] += dy[o + j] * s[j];
        if (ds)
            for (int j = 0; j < c; j++) acc[j] += (double)dy[o + j] * x[o + j];
    }
    if (ds)
        for (int j = 0; j < c; j++) ds[j] += (float)acc[j];
}

void cn_scale_forward(float *y, const float *x, const float *s, int n, int hw, int c) {
    size_t total = (size_t)n * hw * c;
    int nb = total < SERIAL_BELOW ? 1 : 16; /* blocks per image */
#pragma omp parallel for schedule(static) if (total >= SERIAL_BELOW)
    for (int t = 0; t < n * nb; t++) {
        int i = t / nb, b = t % nb;
        size_t img = (size_t)i * hw * c;
        scale_rows(y + img, x + img, s + (size_t)i * c, (size_t)hw * b / nb,
                   (size_t)hw * (b + 1) / nb, c);
    }
}

void cn_scale_backward(float *dx, float *ds, const float *dy, const float *x, const float *s,
                       int n, int hw, int c) {
    if (!dx && !ds) return;
    int ncb = (c + CB - 1) / CB;
    size_t total = (size_t)n * hw * c;
    if (c <= WHOLE_MAX && n >= 2 * omp_get_max_threads() && total >= SERIAL_BELOW) {
#pragma omp parallel for schedule(static)
        for (int i = 0; i < n; i++) {
            size_t img = (size_t)i * hw * c;
            scale_back_image(dx ? dx + img : NULL, ds ? ds + (size_t)i * c : NULL, dy + img,
                             x + img, s + (size_t)i * c, hw, c);
        }
        return;
    }
#pragma omp parallel for schedule(static) if (total >= SERIAL_BELOW)
    for (int t = 0; t < n * ncb; t++) {
        int i = t / ncb, c0 = t % ncb * CB;
        size_t img = (size_t)i * hw * c;
        scale_back_block(dx ? dx + img : NULL, ds ? ds + (size_t)i * c : NULL, dy + img, x + img,
                         s + (size_t)i * c, hw, c, c0, c - c0 < CB ? c - c0 : CB);
    }
}
