#include "io/cifar.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/status.h"
#include "io/folder.h"

#define PIXELS 3072

static cn_status append_file(cn_cifar *c, const char *path, int label_bytes, int classes) {
    FILE *f = fopen(path, "rb");
    if (!f) return cn_error(CN_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    int rec = label_bytes + PIXELS;
    if (fstat(fileno(f), &sb) != 0 || sb.st_size <= 0 || sb.st_size % rec != 0 ||
        sb.st_size / rec > (1 << 24)) {
        fclose(f);
        return cn_error(CN_ERR_FORMAT, "%s: %lld bytes is not a whole number of %d-byte CIFAR "
                        "records", path, (long long)sb.st_size, rec);
    }
    int n = (int)(sb.st_size / rec);
    uint8_t *im = realloc(c->images, (size_t)(c->n + n) * PIXELS);
    if (im) c->images = im;
    int32_t *lb = im ? realloc(c->labels, sizeof(int32_t) * (size_t)(c->n + n)) : NULL;
    if (lb) c->labels = lb;
    uint8_t *buf = malloc(rec);
    if (!im || !lb || !buf) {
        free(buf);
        fclose(f);
        return cn_error(CN_ERR_NOMEM, "out of memory for %s", path);
    }
    cn_status st = CN_OK;
    for (int i = 0; i < n && st == CN_OK; i++) {
        if (fread(buf, 1, rec, f) != (size_t)rec) {
            st = cn_error(CN_ERR_IO, "%s: read failed at record %d", path, i);
            break;
        }
        int label = buf[label_bytes - 1];
        if (label >= classes) {
            st = cn_error(CN_ERR_FORMAT, "%s: record %d has label %d, not below %d", path, i, label,
                          classes);
            break;
        }
        uint8_t *o = c->images + (size_t)(c->n + i) * PIXELS;
        const uint8_t *p = buf + label_bytes;
        for (int k = 0; k < 1024; k++) {
            o[3 * k] = p[k];
            o[3 * k + 1] = p[1024 + k];
            o[3 * k + 2] = p[2048 + k];
        }
        c->labels[c->n + i] = label;
    }
    free(buf);
    fclose(f);
    if (st == CN_OK) c->n += n;
    return st;
}

cn_status cn_cifar_load(cn_cifar *out, const char *dir, int cifar100, int train) {
    memset(out, 0, sizeof *out);
    char base[4096], path[4200];
    const char *sub = cifar100 ? "cifar-100-binary" : "cifar-10-batches-bin";
    const char *first = cifar100 ? (train ? "train.bin" : "test.bin")
                                 : (train ? "data_batch_1.bin" : "test_batch.bin");
    snprintf(base, sizeof base, "%s", dir);
    snprintf(path, sizeof path, "%s/%s", base, first);
    struct stat sb;
    if (stat(path, &sb) != 0) {
        snprintf(base, sizeof base, "%s/%s", dir, sub);
        snprintf(path, sizeof path, "%s/%s", base, first);
        if (stat(path, &sb) != 0)
            return cn_error(CN_ERR_IO, "%s: no %s (nor %s/%s): is it the binary version of %s?", dir,
                            first, sub, first, cifar100 ? "CIFAR-100" : "CIFAR-10");
    }
    out->num_classes = cifar100 ? 100 : 10;
    cn_status st = CN_OK;
    if (cifar100 || !train) {
        st = append_file(out, path, cifar100 ? 2 : 1, out->num_classes);
    } else {
        for (int b = 1; b <= 5 && st == CN_OK; b++) {
            snprintf(path, sizeof path, "%s/data_batch_%d.bin", base, b);
            st = append_file(out, path, 1, 10);
        }
    }
    if (st != CN_OK) cn_cifar_free(out);
    return st;
}

void cn_cifar_free(cn_cifar *c) {
    if (!c) return;
    free(c->images);
    free(c->labels);
    memset(c, 0, sizeof *c);
}
