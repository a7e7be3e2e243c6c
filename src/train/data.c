#include "train/data.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "core/status.h"
#include "io/cifar.h"
#include "io/dataset.h"
#include "io/folder.h"
#include "io/image.h"
#include "io/transform.h"

enum { STREAM_SHUFFLE = 2, STREAM_AUGMENT = 3 };

static cn_status open_mnist(cn_dataset *d, const char *spec, const char *dir, int fashion,
                            int train) {
    if (!fashion && !dir) return cn_error(CN_ERR_ARG, "--data mnist needs a directory: mnist:DIR");
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

static cn_status open_cifar(cn_dataset *d, const char *spec, const char *dir, int c100, int train) {
    if (!dir || !*dir)
        return cn_error(CN_ERR_ARG, "--data %s needs a directory: %s:DIR", spec,
                        c100 ? "cifar100" : "cifar10");
    cn_cifar c;
    cn_status st = cn_cifar_load(&c, dir, c100, train);
    if (st != CN_OK) return cn_error_context(st, "--data %s", spec);
    d->n = c.n;
    d->h = d->w = 32;
    d->c = 3;
    d->num_classes = c.num_classes;
    d->images = c.images;
    d->labels = c.labels;
    snprintf(d->name, sizeof d->name, "%s", c100 ? "cifar100" : "cifar10");
    return CN_OK;
}

static cn_status open_folder(cn_dataset *d, const char *spec, const char *dir, int train,
                             int size, int skip_bad) {
    if (!dir || !*dir) return cn_error(CN_ERR_ARG, "--data folder needs a directory: folder:DIR");
    if (!cn_is_dir(dir)) return cn_error(CN_ERR_IO, "--data %s: %s is not a directory", spec, dir);
    char split[1024 + 8];
    snprintf(split, sizeof split, "%s/train", dir);
    if (cn_is_dir(split)) {
        if (!train) {
            snprintf(split, sizeof split, "%s/val", dir);
            if (!cn_is_dir(split)) snprintf(split, sizeof split, "%s/test", dir);
            if (!cn_is_dir(split))
                return cn_error(CN_ERR_FORMAT, "--data %s: %s has train/ but neither val/ nor "
                                "test/ for the test split", spec, dir);
        }
    } else {
        snprintf(split, sizeof split, "%s", dir);
    }
    cn_folder f;
    cn_status st = cn_folder_open(&f, split);
    if (st != CN_OK) return cn_error_context(st, "--data %s", spec);
    if (skip_bad) {
        /* the header of every file (cheap): the bad ones are left out */
        int kept = 0;
        for (int i = 0; i < f.n; i++) {
            if (cn_image_probe(f.paths[i], NULL, NULL) != CN_OK) {
                fprintf(stderr, "convnet: warning: skipping %s\n", cn_errmsg());
                free(f.paths[i]);
                continue;
            }
            f.paths[kept] = f.paths[i];
            f.labels[kept] = f.labels[i];
            kept++;
        }
        f.n = kept;
        if (kept == 0) {
            cn_folder_free(&f);
            return cn_error(CN_ERR_FORMAT, "--data %s: no readable image in %s", spec, split);
        }
    }
    d->n = d->npaths = f.n;
    d->h = d->w = size;
    d->c = 3;
    d->num_classes = f.nclasses;
    d->paths = f.paths;
    d->labels = f.labels;
    d->classes = f.classes;
    d->skip_bad = skip_bad;
    d->warned = calloc(f.n, 1);
    snprintf(d->root, sizeof d->root, "%s", split);
    snprintf(d->name, sizeof d->name, "folder");
    if (!d->warned) {
        cn_dataset_free(d);
        return cn_error(CN_ERR_NOMEM, "out of memory");
    }
    return CN_OK;
}

cn_status cn_dataset_open_opts(cn_dataset *d, const char *spec, int train, int size,
                               int skip_bad) {
    memset(d, 0, sizeof *d);
    if (!spec || !*spec) return cn_error(CN_ERR_ARG, "--data: no dataset named");
    if (size < 0 || size > 8192) return cn_error(CN_ERR_ARG, "input size %d out of range", size);
    const char *colon = strchr(spec, ':');
    size_t kind_len = colon ? (size_t)(colon - spec) : strlen(spec);
    const char *dir = colon ? colon + 1 : NULL;
#define IS(k) (kind_len == strlen(k) && strncmp(spec, k, kind_len) == 0)
    if (IS("fashion-mnist")) return open_mnist(d, spec, dir, 1, train);
    if (IS("mnist")) return open_mnist(d, spec, dir, 0, train);
    if (IS("cifar10")) return open_cifar(d, spec, dir, 0, train);
    if (IS("cifar100")) return open_cifar(d, spec, dir, 1, train);
    if (IS("folder")) return open_folder(d, spec, dir, train, size, skip_bad);
#undef IS
    return cn_error(CN_ERR_ARG,
                    "--data '%s': unknown dataset (known: fashion-mnist[:DIR], mnist:DIR, "
                    "cifar10:DIR, cifar100:DIR, folder:DIR)",
                    spec);
}

cn_status cn_dataset_open(cn_dataset *d, const char *spec, int train) {
    return cn_dataset_open_opts(d, spec, train, 0, 0);
}

void cn_dataset_free(cn_dataset *d) {
    if (!d) return;
    free(d->images);
    free(d->labels);
    for (int i = 0; d->paths && i < d->npaths; i++) free(d->paths[i]);
    for (int i = 0; d->classes && i < d->num_classes; i++) free(d->classes[i]);
    free(d->paths);
    free(d->classes);
    free(d->warned);
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

/* One image-folder sample. A file that fails to decode is an error, or with skip_bad is
 * replaced by the next file that decodes (a warning once per file): failures are properties of
 * the files, so the batches stay deterministic. */
static cn_status folder_sample(float *dst, int32_t *label, const cn_dataset *d, int idx,
                               const cn_augment *aug, const float *mean, const float *std,
                               uint64_t seed, int64_t epoch) {
    if (d->h < 1 || d->h != d->w)
        return cn_error(CN_ERR_ARG, "image folder %s: input size %dx%d must be square and set",
                        d->root, d->h, d->w);
    cn_status st = CN_OK;
    for (int t = 0; t < 64 && t < d->n; t++) {
        int k = (idx + t) % d->n;
        cn_image im;
        st = cn_image_load(&im, d->paths[k]);
        if (st == CN_OK) st = cn_image_to_channels(&im, d->c);
        if (st == CN_OK) {
            if (aug && aug->resized_crop) {
                cn_rng r = cn_rng_make(seed, STREAM_AUGMENT, (uint64_t)epoch * 0x100000000ULL + idx);
                st = cn_preprocess_train(dst, &im, d->h, &r, aug->flip, mean, std);
            } else {
                cn_preset p;
                cn_preset_for_model(&p, NULL, d->h);
                memcpy(p.mean, mean, sizeof p.mean);
                memcpy(p.std, std, sizeof p.std);
                st = cn_preprocess_eval(dst, &im, &p);
            }
        }
        cn_image_free(&im);
        if (st == CN_OK) *label = d->labels[k];
        if (st == CN_OK || !d->skip_bad || st == CN_ERR_NOMEM || st == CN_ERR_ARG) return st;
        if (!__atomic_exchange_n(&d->warned[k], 1, __ATOMIC_RELAXED))
            fprintf(stderr, "convnet: warning: skipping %s\n", cn_errmsg());
    }
    return cn_error_context(st, "%s: too many unreadable images in a row", d->root);
}

cn_status cn_sample_load(float *dst, int32_t *label, const cn_dataset *d, int idx,
                         const cn_augment *aug, const float *mean, const float *std,
                         uint64_t seed, int64_t epoch) {
    if (d->paths) return folder_sample(dst, label, d, idx, aug, mean, std, seed, epoch);
    cn_sample_fill(dst, d, idx, aug, mean, std, seed, epoch);
    *label = d->labels[idx];
    return CN_OK;
}

static cn_status fill_batch(cn_loader *l, cn_batch *b, int64_t index) {
    int64_t start = index * l->batch;
    int n = (int)(start + l->batch <= l->d->n ? l->batch : l->d->n - start);
    size_t per = (size_t)l->d->h * l->d->w * l->d->c;
    b->n = n;
    b->index = index;
    for (int i = 0; i < n; i++) {
        int idx = l->order[start + i];
        CN_TRY(cn_sample_load(b->x + per * i, &b->y[i], l->d, idx, &l->aug, l->mean, l->std,
                              l->seed, l->epoch));
    }
    return CN_OK;
}

enum { SLOT_FREE, SLOT_FILLING, SLOT_READY };

static void *worker(void *arg) {
    cn_loader *l = arg;
    pthread_mutex_lock(&l->mu);
    while (!l->stop && !l->err && l->next_fill < l->nbatches) {
        int slot = (int)(l->next_fill % l->nslots);
        if (l->state[slot] != SLOT_FREE) {
            pthread_cond_wait(&l->cv, &l->mu);
            continue;
        }
        int64_t idx = l->next_fill++;
        l->state[slot] = SLOT_FILLING;
        pthread_mutex_unlock(&l->mu);
        cn_status st = fill_batch(l, &l->slots[slot], idx);
        pthread_mutex_lock(&l->mu);
        if (st != CN_OK && !l->err) {
            l->err = st;
            snprintf(l->err_msg, sizeof l->err_msg, "%s", cn_errmsg());
        }
        l->state[slot] = SLOT_READY;
        pthread_cond_broadcast(&l->cv);
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

static void free_slots(cn_loader *l) {
    for (int i = 0; l->slots && i < l->nslots; i++) {
        free(l->slots[i].x);
        free(l->slots[i].y);
    }
    free(l->slots);
    free(l->state);
    l->slots = NULL;
    l->state = NULL;
    l->nslots = 0;
}

static cn_status alloc_slots(cn_loader *l, int threads) {
    free_slots(l);
    size_t per = (size_t)l->d->h * l->d->w * l->d->c;
    l->threads = threads;
    l->nslots = threads + 1;
    l->slots = calloc(l->nslots, sizeof *l->slots);
    l->state = calloc(l->nslots, sizeof *l->state);
    int ok = l->slots && l->state;
    for (int i = 0; ok && i < l->nslots; i++) {
        l->slots[i].x = malloc(sizeof(float) * (per ? per : 1) * l->batch);
        l->slots[i].y = malloc(sizeof(int32_t) * l->batch);
        ok = l->slots[i].x && l->slots[i].y;
    }
    if (!ok) {
        free_slots(l);
        return cn_error(CN_ERR_NOMEM, "out of memory for batches of %d", l->batch);
    }
    return CN_OK;
}

cn_status cn_loader_init(cn_loader *l, const cn_dataset *d, int batch, int shuffle, int drop_last,
                         const cn_augment *aug, const float *mean, const float *std,
                         uint64_t seed) {
    memset(l, 0, sizeof *l);
    if (batch <= 0) return cn_error(CN_ERR_ARG, "batch size %d must be positive", batch);
    if (d->n <= 0) return cn_error(CN_ERR_ARG, "dataset %s is empty", d->name);
    if (d->h < 1 || d->w < 1 || d->c < 1)
        return cn_error(CN_ERR_ARG, "dataset %s: no input size set", d->name);
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
    l->order = malloc(sizeof(int32_t) * d->n);
    if (!l->order) return cn_error(CN_ERR_NOMEM, "out of memory for batches of %d", batch);
    cn_status st = alloc_slots(l, d->paths ? 2 : 1);
    if (st != CN_OK) {
        free(l->order);
        memset(l, 0, sizeof *l);
        return st;
    }
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->cv, NULL);
    l->nbatches = l->drop_last ? d->n / batch : (d->n + batch - 1) / batch;
    return CN_OK;
}

cn_status cn_loader_set_threads(cn_loader *l, int threads) {
    if (threads < 1 || threads > CN_LOADER_MAX_THREADS)
        return cn_error(CN_ERR_ARG, "loader threads %d out of range [1, %d]", threads,
                        CN_LOADER_MAX_THREADS);
    cn_loader_stop(l);
    if (threads == l->threads) return CN_OK;
    return alloc_slots(l, threads);
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
    for (int i = 0; i < l->nslots; i++) l->state[i] = SLOT_FREE;
    l->held = -1;
    l->stop = 0;
    l->err = CN_OK;
    l->err_msg[0] = 0;
    int started = 0;
    for (; started < l->threads; started++)
        if (pthread_create(&l->thread[started], NULL, worker, l) != 0) break;
    l->started = started;
    if (started < l->threads) {
        cn_loader_stop(l);
        return cn_error(CN_ERR_NOMEM, "cannot start the data loader threads");
    }
    return CN_OK;
}

const cn_batch *cn_loader_next(cn_loader *l) {
    pthread_mutex_lock(&l->mu);
    if (l->held >= 0) {
        /* the caller is done with the previous batch: its slot may be refilled */
        l->state[l->held] = SLOT_FREE;
        l->held = -1;
        pthread_cond_broadcast(&l->cv);
    }
    if (l->next_take >= l->nbatches || l->err) {
        pthread_mutex_unlock(&l->mu);
        return NULL;
    }
    int slot = (int)(l->next_take % l->nslots);
    while (l->state[slot] != SLOT_READY && !l->err) pthread_cond_wait(&l->cv, &l->mu);
    if (l->err) {
        pthread_mutex_unlock(&l->mu);
        return NULL;
    }
    l->next_take++;
    l->held = slot;
    pthread_mutex_unlock(&l->mu);
    return &l->slots[slot];
}

cn_status cn_loader_status(const cn_loader *l) {
    if (l->err == CN_OK) return CN_OK;
    return cn_error(l->err, "%s", l->err_msg);
}

void cn_loader_stop(cn_loader *l) {
    if (!l->started) return;
    pthread_mutex_lock(&l->mu);
    l->stop = 1;
    pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->mu);
    for (int i = 0; i < l->started; i++) pthread_join(l->thread[i], NULL);
    l->started = 0;
}

void cn_loader_free(cn_loader *l) {
    if (!l) return;
    if (l->order && l->slots) cn_loader_stop(l);
    free(l->order);
    free_slots(l);
    if (l->nbatches) {
        pthread_mutex_destroy(&l->mu);
        pthread_cond_destroy(&l->cv);
    }
    memset(l, 0, sizeof *l);
}
