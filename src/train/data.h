/* Datasets (in memory: IDX, CIFAR; on disk: image folders, decoded per sample) and the batch
 * loader that runs ahead of the compute on worker threads (decode/augment/normalise while the
 * cores train on the previous batch). */
#ifndef CN_TRAIN_DATA_H
#define CN_TRAIN_DATA_H

#include <pthread.h>
#include <stdint.h>

#include "convnet.h"

typedef struct cn_dataset {
    int n, h, w, c, num_classes;
    uint8_t *images;   /* (n, h, w, c); NULL for an image folder */
    int32_t *labels;   /* (n) */
    char name[64];
    /* image folders: files decoded on the loader's threads to h x w (square) */
    char **paths;      /* (npaths >= n: a --limit lowers n only) */
    int npaths;
    char **classes;    /* (num_classes) folder names, sorted */
    char root[1024];   /* the split's folder */
    int skip_bad;      /* a file that fails to decode is replaced by the next good one */
    uint8_t *warned;   /* (n) a warning was printed for this file */
} cn_dataset;

/* "fashion-mnist[:DIR]", "mnist:DIR", "cifar10:DIR", "cifar100:DIR" or "folder:DIR"; split 1 =
 * train, 0 = test. An image folder's split is DIR/train (train) and DIR/val, else DIR/test
 * (test) when DIR/train exists, else DIR itself for both. Its images come out at size x size
 * (0: set d->h = d->w before loading); skip_bad checks every file's header at open and leaves
 * out those that fail (a warning on stderr each), and replaces files that fail to decode later.
 */
cn_status cn_dataset_open_opts(cn_dataset *d, const char *spec, int train, int size, int skip_bad);
cn_status cn_dataset_open(cn_dataset *d, const char *spec, int train);
void cn_dataset_free(cn_dataset *d);

typedef struct cn_augment {
    int crop_pad;      /* random crop of the original size after zero padding by this much */
    int flip;          /* horizontal flip with probability 1/2 */
    int resized_crop;  /* image folders: RandomResizedCrop (else resize + center crop) */
} cn_augment;

typedef struct cn_batch {
    float *x;          /* (n, h, w, c) normalised */
    int32_t *y;
    int n;
    int64_t index;     /* batch number in the epoch */
} cn_batch;

#define CN_LOADER_MAX_THREADS 16

/* Produces the batches of one epoch in order on worker threads, each filling whole batches
 * (batch i in slot i mod (threads + 1)). The sample order and every augmentation draw derive
 * from (seed, epoch, position), so an epoch's batches are the same whatever the timing and the
 * number of threads, and a resumed run sees exactly what an uninterrupted one saw. */
typedef struct cn_loader {
    const cn_dataset *d;
    int batch, shuffle, drop_last;
    cn_augment aug;
    float mean[4], std[4];
    uint64_t seed;
    int64_t epoch, nbatches, first;
    int32_t *order;
    int threads, nslots;
    cn_batch *slots;   /* (nslots) */
    int *state;        /* (nslots) free, filling, ready */
    int held;          /* slot the caller is reading, or -1 */
    int64_t next_fill, next_take;
    int stop, started;
    cn_status err;     /* a worker failed: err_msg says why */
    char err_msg[1024];
    pthread_t thread[CN_LOADER_MAX_THREADS];
    pthread_mutex_t mu;
    pthread_cond_t cv;
} cn_loader;

cn_status cn_loader_init(cn_loader *l, const cn_dataset *d, int batch, int shuffle, int drop_last,
                         const cn_augment *aug, const float *mean, const float *std,
                         uint64_t seed);
/* Worker threads (default 2 for image folders, else 1); call before cn_loader_start. */
cn_status cn_loader_set_threads(cn_loader *l, int threads);
/* Starts the epoch at batch `first` (for resume mid-epoch; normally 0). */
cn_status cn_loader_start(cn_loader *l, int64_t epoch, int64_t first);
/* The next batch of the epoch, or NULL at its end or on an error; valid until the next call. */
const cn_batch *cn_loader_next(cn_loader *l);
/* CN_OK, or the failure that ended the epoch early (a file that does not decode), with its
 * message set on the calling thread. */
cn_status cn_loader_status(const cn_loader *l);
void cn_loader_stop(cn_loader *l);
void cn_loader_free(cn_loader *l);

/* Fills one normalised sample (NHWC) of an in-memory dataset with the augmentation drawn from
 * rng seed (seed, epoch, i). */
void cn_sample_fill(float *dst, const cn_dataset *d, int idx, const cn_augment *aug,
                    const float *mean, const float *std, uint64_t seed, int64_t epoch);
/* The same for any dataset: an image folder's file is decoded and transformed (and may fail).
 * *label is the sample's label (with skip_bad, that of the file that replaced a bad one). */
cn_status cn_sample_load(float *dst, int32_t *label, const cn_dataset *d, int idx,
                         const cn_augment *aug, const float *mean, const float *std,
                         uint64_t seed, int64_t epoch);

/* Calls fn on the normalised batches (NHWC, no augmentation) of the first `limit` samples of a
 * split in a shuffled order drawn from seed (the calibration images of int8 quantization). */
cn_status cn_foreach_batch(const cn_model *m, const char *data, const cn_data_options *o,
                           int train_split, int limit, int batch, uint64_t seed,
                           cn_status (*fn)(void *user, const float *x, int n, int h, int w),
                           void *user);

#endif
