/* The binary versions of CIFAR-10 and CIFAR-100 (https://www.cs.toronto.edu/~kriz/cifar.html).
 * CIFAR-10: data_batch_1.bin .. data_batch_5.bin (train) and test_batch.bin, records of 1 label
 * byte and 3072 pixel bytes. CIFAR-100: train.bin and test.bin, records of a coarse and a fine
 * label byte and 3072 pixel bytes; the fine label (100 classes) is used. Pixels are stored as
 * three 32x32 planes (R, G, B) and returned here as (n, 32, 32, 3). The files are looked for in
 * DIR and in the folder the archives unpack to (cifar-10-batches-bin, cifar-100-binary). */
#ifndef CN_IO_CIFAR_H
#define CN_IO_CIFAR_H

#include <stdint.h>

#include "convnet.h"

typedef struct cn_cifar {
    int n, num_classes;
    uint8_t *images;   /* (n, 32, 32, 3) */
    int32_t *labels;   /* (n) */
} cn_cifar;

/* A file whose size is not a whole number of records, or a label out of range, is
 * CN_ERR_FORMAT naming the file. On failure *out is left empty. */
cn_status cn_cifar_load(cn_cifar *out, const char *dir, int cifar100, int train);
void cn_cifar_free(cn_cifar *c);

#endif
