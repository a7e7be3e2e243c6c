#include "io/dataset.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/status.h"
#include "io/idx.h"

/* The plain name first: a directory holding both forms was most likely unpacked on purpose. */
static cn_status find_file(char **out, const char *dir, const char *base) {
    static const char *const suffixes[] = {"", ".gz"};
    *out = NULL;
    for (size_t i = 0; i < sizeof suffixes / sizeof suffixes[0]; i++) {
        size_t len = strlen(dir) + strlen(base) + strlen(suffixes[i]) + 2;
        char *p = malloc(len);
        if (!p) return cn_error(CN_ERR_NOMEM, "out of memory");
        snprintf(p, len, "%s/%s%s", dir, base, suffixes[i]);
        struct stat sb;
        if (stat(p, &sb) == 0 && S_ISREG(sb.st_mode)) {
            *out = p;
            return CN_OK;
        }
        free(p);
    }
    return cn_error(CN_ERR_IO, "%s: neither %s nor %s.gz found (is the dataset installed?)", dir,
                    base, base);
}

static cn_status load_pair(cn_mnist *out, const char *dir, int train, cn_idx *im, cn_idx *lb) {
    const char *split = train ? "train" : "t10k";
    char base[64];
    char *ipath = NULL, *lpath = NULL;
    cn_status st;

    snprintf(base, sizeof base, "%s-images-idx3-ubyte", split);
    if ((st = find_file(&ipath, dir, base)) != CN_OK) goto done;
    snprintf(base, sizeof base, "%s-labels-idx1-ubyte", split);
    if ((st = find_file(&lpath, dir, base)) != CN_OK) goto done;
    if ((st = cn_idx_load(im, ipath)) != CN_OK) goto done;
    if ((st = cn_idx_load(lb, lpath)) != CN_OK) goto done;

    if (im->ndim != 3 || im->type != CN_IDX_UBYTE) {
        st = cn_error(CN_ERR_FORMAT, "%s: expected N x H x W unsigned bytes, found %d dims of "
                      "type 0x%02x", ipath, im->ndim, im->type);
        goto done;
    }
    if (lb->ndim != 1 || lb->type != CN_IDX_UBYTE) {
        st = cn_error(CN_ERR_FORMAT, "%s: expected N unsigned-byte labels, found %d dims of type "
                      "0x%02x", lpath, lb->ndim, lb->type);
        goto done;
    }
    if (lb->dims[0] != im->dims[0]) {
        st = cn_error(CN_ERR_FORMAT, "%s: %lld labels for %lld images in %s", lpath,
                      (long long)lb->dims[0], (long long)im->dims[0], ipath);
        goto done;
    }
    for (size_t i = 0; i < lb->count; i++) {
        if (lb->data[i] >= CN_MNIST_CLASSES) {
            st = cn_error(CN_ERR_FORMAT, "%s: label %zu is %d, not below %d", lpath, i,
                          lb->data[i], CN_MNIST_CLASSES);
            goto done;
        }
    }
    /* cn_idx_load bounds every count below 2^31, so these fit an int. */
    out->n = (int)im->dims[0];
    out->h = (int)im->dims[1];
    out->w = (int)im->dims[2];
    out->c = 1;
    out->images = im->data;
    out->labels = lb->data;
    im->data = lb->data = NULL;
done:
    free(ipath);
    free(lpath);
    return st;
}

cn_status cn_mnist_load(cn_mnist *out, const char *dir, int train) {
    if (!out) return cn_error(CN_ERR_ARG, "cn_mnist_load: out is NULL");
    memset(out, 0, sizeof *out);
    cn_idx im = {0}, lb = {0};
    cn_status st = load_pair(out, dir ? dir : CN_MNIST_DEFAULT_DIR, train, &im, &lb);
    cn_idx_free(&im);
    cn_idx_free(&lb);
    return st;
}

void cn_mnist_free(cn_mnist *m) {
    if (!m) return;
    free(m->images);
    free(m->labels);
    memset(m, 0, sizeof *m);
}
