/* In-memory image datasets and the batch loader that runs ahead of the compute on its own
 * thread (decode/augment/normalise while the cores train on the previous batch). */
#ifndef CN_TRAIN_DATA_H
#define CN_TRAIN_DATA_H

#include <pthread.h>
#include <stdint.h>

#include "convnet.h"

typedef struct cn_dataset {
    int n, h, w, c, num_classes;
    uint8_t *images;   /* (n, h, w, c) */
    int32_t *labels;   /* (n) */
    char name[64];
} cn_dataset;

/* "fashion-mnist[:DIR]" or "mnist:DIR"; split 1 = train, 0 = test. */
cn_status cn_dataset_open(cn_dataset *d, const char *spec, int train);
void cn_dataset_free(cn_dataset *d);

typedef struct cn_augment {
    int crop_pad;      /* random crop of the original size after zero padding by this much */
    int flip;          /* horizontal flip with probability 1/2 */
} cn_augment;

typedef struct cn_batch {
    float *x;          /* (n, h, w, c) normalised */
    int32_t *y;
    int n;
    int64_t index;     /* batch number in the epoch */
} cn_batch;

/* Produces the batches of one epoch in order on a worker thread. The sample order and every
 * augmentation draw derive from (seed, epoch, position), so an epoch's batches are the same
 * whatever the timing, and a resumed run sees exactly what an uninterrupted one saw. */
typedef struct cn_loader {
    const cn_dataset *d;
    int batch, shuffle, drop_last;
    cn_augment aug;
    float mean[4], std[4];
    uint64_t seed;
    int64_t epoch, nbatches, first;
    int32_t *order;
    cn_batch slots[2];
    int ready[2];      /* slot holds batch `slots[i].index` */
    int held;          /* slot the caller is reading, or -1 */
    int64_t next_fill, next_take;
    int stop, started;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
} cn_loader;

cn_status cn_loader_init(cn_loader *l, const cn_dataset *d, int batch, int shuffle, int drop_last,
                         const cn_augment *aug, const float *mean, const float *std,
                         uint64_t seed);
/* Starts the epoch at batch `first` (for resume mid-epoch; normally 0). */
cn_status cn_loader_start(cn_loader *l, int64_t epoch, int64_t first);
/* The next batch of the epoch, or NULL at its end; valid until the next call. */
const cn_batch *cn_loader_next(cn_loader *l);
void cn_loader_stop(cn_loader *l);
void cn_loader_free(cn_loader *l);

/* Fills one normalised sample (NHWC) with the augmentation drawn from rng seed (seed, epoch, i). */
void cn_sample_fill(float *dst, const cn_dataset *d, int idx, const cn_augment *aug,
                    const float *mean, const float *std, uint64_t seed, int64_t epoch);

#endif
