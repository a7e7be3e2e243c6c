#include "train/data.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "core/status.h"
#include "io/dataset.h"

enum { STREAM_SHUFFLE = 2, STREAM_AUGMENT = 3 };

cn_status cn_dataset_open(cn_dataset *d, const char *spec, int train) {
    memset(d, 0, sizeof *d);
    if (!spec || !*spec) return cn_error(CN_ERR_ARG, "--data: no dataset named");
    const char *colon = strchr(spec, ':');
    size_t kind_len = colon ? (size_t)(colon - spec) : strlen(spec);
    const char *dir = colon ? colon + 1 : NULL;
    int fashion = kind_len == 13 && strncmp(spec, "fashion-mnist", 13) == 0;
    int mnist = kind_len == 5 && strncmp(spec, "mnist", 5) == 0;
    if (!fashion && !mnist)
        return cn_error(CN_ERR_ARG,
                        "--data '%s': unknown dataset (known: fashion-mnist[:DIR], mnist:DIR)",
                        spec);
    if (mnist && !dir) return cn_error(CN_ERR_ARG, "--data mnist needs a directory: mnist:DIR");
    cn_mnist m;
    cn_status st = cn_mnist_load(&m, dir && *dir ? dir : NULL, train);
    if (st != CN_OK) return cn_error_context(st, "--data %s", spec);
    d->n = m.n;
    d->h = m.h;
    d->w = m.w;
    d->c = 1;
    d->num_classes = CN_MNIST_CLASSES;
    d->images = m.images;
    d->labels = malloc(sizeof(int32_t) * (m.n ? m.n : 1));
    if (!d->labels) {
        cn_mnist_free(&m);
        memset(d, 0, sizeof *d);
        return cn_error(CN_ERR_NOMEM, "out of memory");
    }
    for (int i = 0; i < m.n; i++) d->labels[i] = m.labels[i];
    free(m.labels);
    snprintf(d->name, sizeof d->name, "%s", fashion ? "fashion-mnist" : "mnist");
    return CN_OK;
}

void cn_dataset_free(cn_dataset *d) {
    if (!d) return;
    free(d->images);
    free(d->labels);
    memset(d, 0, sizeof *d);
}

void cn_sample_fill(float *dst, const cn_dataset *d, int idx, const cn_augment *aug,
                    const float *mean, const float *std, uint64_t seed, int64_t epoch) {
    int H = d->h, W = d->w, C = d->c;
    int dy = 0, dx = 0, flip = 0;
    if (aug && (aug->crop_pad > 0 || aug->flip)) {
        cn_rng r = cn_rng_make(seed, STREAM_AUGMENT, (uint64_t)epoch * 0x100000000ULL + idx);
        if (aug->crop_pad > 0) {
            dy = (int)cn_rng_below(&r, 2 * aug->crop_pad + 1) - aug->crop_pad;
            dx = (int)cn_rng_below(&r, 2 * aug->crop_pad + 1) - aug->crop_pad;
        }
        if (aug->flip) flip = cn_rng_below(&r, 2);
    }
    const uint8_t *img = d->images + (size_t)idx * H * W * C;
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            int sy = y + dy, sx = (flip ? W - 1 - x : x) + dx;
            float *o = dst + ((size_t)y * W + x) * C;
            for (int c = 0; c < C; c++) {
                /* padding is black (0) before normalisation, as torchvision's RandomCrop */
                float v = sy < 0 || sy >= H || sx < 0 || sx >= W
                              ? 0.0f
                              : img[((size_t)sy * W + sx) * C + c] * (1.0f / 255.0f);
                o[c] = (v - mean[c]) / std[c];
            }
        }
}

static void fill_batch(cn_loader *l, cn_batch *b, int64_t index) {
    int64_t start = index * l->batch;
    int n = (int)(start + l->batch <= l->d->n ? l->batch : l->d->n - start);
    size_t per = (size_t)l->d->h * l->d->w * l->d->c;
    for (int i = 0; i < n; i++) {
        int idx = l->order[start + i];
        cn_sample_fill(b->x + per * i, l->d, idx, &l->aug, l->mean, l->std, l->seed, l->epoch);
        b->y[i] = l->d->labels[idx];
    }
    b->n = n;
    b->index = index;
}

static void *worker(void *arg) {
    cn_loader *l = arg;
    pthread_mutex_lock(&l->mu);
    while (!l->stop && l->next_fill < l->nbatches) {
        int slot = (int)(l->next_fill & 1);
        while (!l->stop && l->ready[slot]) pthread_cond_wait(&l->cv, &l->mu);
        if (l->stop) break;
        int64_t idx = l->next_fill;
        pthread_mutex_unlock(&l->mu);
        fill_batch(l, &l->slots[slot], idx);
        pthread_mutex_lock(&l->mu);
        l->ready[slot] = 1;
        l->next_fill++;
        pthread_cond_broadcast(&l->cv);
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

cn_status cn_loader_init(cn_loader *l, const cn_dataset *d, int batch, int shuffle, int drop_last,
                         const cn_augment *aug, const float *mean, const float *std,
                         uint64_t seed) {
    memset(l, 0, sizeof *l);
    if (batch <= 0) return cn_error(CN_ERR_ARG, "batch size %d must be positive", batch);
    if (d->n <= 0) return cn_error(CN_ERR_ARG, "dataset %s is empty", d->name);
    l->d = d;
    l->batch = batch;
    l->shuffle = shuffle;
    l->drop_last = drop_last && d->n >= batch;
    if (aug) l->aug = *aug;
    for (int c = 0; c < 4; c++) {
        l->mean[c] = c < d->c ? mean[c] : 0;
        l->std[c] = c < d->c ? std[c] : 1;
    }
    l->seed = seed;
    size_t per = (size_t)d->h * d->w * d->c;
    l->order = malloc(sizeof(int32_t) * d->n);
    for (int i = 0; i < 2; i++) {
        l->slots[i].x = malloc(sizeof(float) * per * batch);
        l->slots[i].y = malloc(sizeof(int32_t) * batch);
    }
    if (!l->order || !l->slots[0].x || !l->slots[1].x || !l->slots[0].y || !l->slots[1].y) {
        cn_loader_free(l);
        return cn_error(CN_ERR_NOMEM, "out of memory for batches of %d", batch);
    }
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->cv, NULL);
    l->nbatches = l->drop_last ? d->n / batch : (d->n + batch - 1) / batch;
    return CN_OK;
}

cn_status cn_loader_start(cn_loader *l, int64_t epoch, int64_t first) {
    cn_loader_stop(l);
    l->epoch = epoch;
    for (int i = 0; i < l->d->n; i++) l->order[i] = i;
    if (l->shuffle) {
        cn_rng r = cn_rng_make(l->seed, STREAM_SHUFFLE, (uint64_t)epoch);
        for (int i = l->d->n - 1; i > 0; i--) {
            int j = (int)cn_rng_below(&r, (uint32_t)i + 1);
            int32_t t = l->order[i];
            l->order[i] = l->order[j];
            l->order[j] = t;
        }
    }
    l->next_fill = l->next_take = first;
    l->ready[0] = l->ready[1] = 0;
    l->held = -1;
    l->stop = 0;
    if (pthread_create(&l->thread, NULL, worker, l) != 0)
        return cn_error(CN_ERR_NOMEM, "cannot start the data loader thread");
    l->started = 1;
    return CN_OK;
}

const cn_batch *cn_loader_next(cn_loader *l) {
    pthread_mutex_lock(&l->mu);
    if (l->held >= 0) {
        /* the caller is done with the previous batch: its slot may be refilled */
        l->ready[l->held] = 0;
        l->held = -1;
        pthread_cond_broadcast(&l->cv);
    }
    if (l->next_take >= l->nbatches) {
        pthread_mutex_unlock(&l->mu);
        return NULL;
    }
    int slot = (int)(l->next_take & 1);
    while (!l->ready[slot]) pthread_cond_wait(&l->cv, &l->mu);
    l->next_take++;
    l->held = slot;
    pthread_mutex_unlock(&l->mu);
    return &l->slots[slot];
}

void cn_loader_stop(cn_loader *l) {
    if (!l->started) return;
    pthread_mutex_lock(&l->mu);
    l->stop = 1;
    pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->mu);
    pthread_join(l->thread, NULL);
    l->started = 0;
}

void cn_loader_free(cn_loader *l) {
    if (!l) return;
    if (l->order && l->slots[0].x) {
        cn_loader_stop(l);
    }
    free(l->order);
    for (int i = 0; i < 2; i++) {
        free(l->slots[i].x);
        free(l->slots[i].y);
    }
    if (l->nbatches) {
        pthread_mutex_destroy(&l->mu);
        pthread_cond_destroy(&l->cv);
    }
    memset(l, 0, sizeof *l);
}
