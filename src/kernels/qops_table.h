/* The element-wise int8 loops of one instruction set (see qops_impl.h). */
#ifndef CN_KERNELS_QOPS_TABLE_H
#define CN_KERNELS_QOPS_TABLE_H

#include <stddef.h>
#include <stdint.h>

typedef struct cn_qops_table {
    void (*quantize)(uint8_t *out, const float *x, size_t n, float inv, float zp);
    void (*dequantize)(float *out, const uint8_t *q, size_t n, float scale, int32_t zp);
    void (*add)(uint8_t *out, const uint8_t *a, const uint8_t *b, size_t n, int32_t za,
                int32_t zb, int32_t zo, int32_t ma, int32_t mb, int32_t sh, int32_t qmin,
                int32_t qmax);
    /* f: the per-channel factor (s - zs) * m */
    void (*mul_row)(uint8_t *out, const uint8_t *x, const int32_t *f, int c, int32_t zx,
                    int32_t zo, int32_t sh);
    void (*max_row)(uint8_t *o, const uint8_t *r, int c);
    void (*lut)(uint8_t *out, const uint8_t *x, size_t n, const uint8_t *lut);
    int32_t (*dot)(const uint8_t *x, const int8_t *w, int k);
    /* acc[j] += sum over r < rows of x[r * stride + j], j < cb */
    void (*sum_rows)(int32_t *acc, const uint8_t *x, size_t rows, size_t stride, int cb);
} cn_qops_table;

extern const cn_qops_table cn_qops_c, cn_qops_avx512;

/* the dot product on AVX-512 VNNI (vpdpbusd; in qconv_avx512vnni.c, compiled for that target),
 * for CPUs that have it */
int32_t cn_qdot_avx512vnni(const uint8_t *x, const int8_t *w, int k);

#endif
