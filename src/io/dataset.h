/* The MNIST / Fashion-MNIST datasets: N grayscale H x W images with labels 0..9, read from the
 * four IDX files of the original distribution (plain or gzip-compressed). */
#ifndef CN_IO_DATASET_H
#define CN_IO_DATASET_H

#include <stdint.h>

#include "convnet.h"

/* Where the Debian package dataset-fashion-mnist installs the four .gz files. */
#define CN_MNIST_DEFAULT_DIR "/usr/share/datasets/fashion-mnist"

#define CN_MNIST_CLASSES 10

typedef struct cn_mnist {
    int n, h, w, c;   /* c is 1 */
    uint8_t *images;  /* n * h * w bytes, row-major, 0..255 */
    uint8_t *labels;  /* n bytes, each < CN_MNIST_CLASSES */
} cn_mnist;

/* Loads the training split (train != 0: "train-images-idx3-ubyte", "train-labels-idx1-ubyte")
 * or the test split ("t10k-..."), each file taken as is or with ".gz" appended, whichever exists.
 * dir NULL means CN_MNIST_DEFAULT_DIR. Checks images are N x H x W unsigned bytes and labels N
 * values below 10 (naming the first bad index). On failure *out is left empty. */
cn_status cn_mnist_load(cn_mnist *out, const char *dir, int train);
void cn_mnist_free(cn_mnist *m); /* NULL and an empty cn_mnist are no-ops; leaves *m empty */

#endif
