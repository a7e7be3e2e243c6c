/* Quantization-aware training (see qat.c). */
#ifndef CN_COMPRESS_QAT_H
#define CN_COMPRESS_QAT_H

#include <stddef.h>
#include <stdint.h>

#include "convnet.h"

typedef struct cn_qat {
    int nt;
    uint8_t *point;        /* (nt) fake-quantized tensors */
    float *lo, *hi;        /* (nt) moving-average ranges */
    uint8_t *init;         /* (nt) range seen at least once */
    uint8_t **mask;        /* (nt) the last train forward's in-range mask */
    size_t *mcap;
    float *master;         /* the float weights while the rounded ones are in place */
    int weights_on;
} cn_qat;

/* Turns a model built without fusion into a QAT model (hooks on its graph). */
cn_status cn_qat_enable(cn_model *m);
void cn_qat_free(cn_qat *q);
/* The rounded weights in place for a forward (and backward) pass; the float ones back. */
void cn_qat_weights_begin(cn_model *m);
void cn_qat_weights_end(cn_model *m);

#endif
