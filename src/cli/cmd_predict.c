/* convnet predict */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "io/image.h"
#include "io/imagenet_classes.h"
#include "io/transform.h"

static const char *help =
    "usage: convnet predict MODEL IMAGE... [options]\n"
    "\n"
    "Classifies JPEG and PNG images: the top classes of each with their softmax probabilities.\n"
    "Images are preprocessed as torchvision's weights do (resize of the shorter side, center crop,\n"
    "ImageNet mean and std): ResNet 256 -> 224 bilinear, EfficientNet-B0..B7 as their weights\n"
    "declare (B0 256 -> 224 bicubic, ...), other models their size / 0.875 -> their size.\n"
    "Class names: ImageNet's for 1000-class models (built in), --labels FILE otherwise, else indices.\n"
    "\n" CLI_MODEL_HELP
    "  --topk K              classes shown per image (default 5)\n"
    "  --labels FILE         class names, one per line, as many as the model has classes\n"
    "  --resize N            side the shorter image side is resized to\n"
    "  --crop N              side of the center crop the model sees\n"
    "  --interpolation bilinear|bicubic\n";

static void free_labels(char **labels, int n) {
    for (int i = 0; labels && i < n; i++) free(labels[i]);
    free(labels);
}

/* One name per line (a trailing newline and CRs are ignored); exactly `want` of them. */
static int read_labels(const char *C, const char *path, int want, char ***out) {
    FILE *f = fopen(path, "r");
    if (!f) {
        cli_err(C, "--labels %s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    char **l = calloc(want, sizeof *l);
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int n = 0, too_many = 0;
    while (l && (len = getline(&line, &cap, f)) >= 0) {
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = 0;
        if (n >= want) {
            too_many = 1;
            if (len) break;
            continue;
        }
        if (!(l[n++] = strdup(line))) break;
    }
    free(line);
    fclose(f);
    if (!l || too_many || n != want) {
        if (l) cli_err(C, "--labels %s: %s names, but the model has %d classes", path,
                       too_many ? "more" : "fewer", want);
        else cli_err(C, "out of memory");
        free_labels(l, want);
        return -1;
    }
    *out = l;
    return 0;
}

typedef struct top_item {
    int index;
    double prob;
} top_item;

static int by_prob(const void *a, const void *b) {
    const top_item *x = a, *y = b;
    if (x->prob != y->prob) return x->prob < y->prob ? 1 : -1;
    return x->index - y->index;
}

int cmd_predict(int argc, char **argv) {
    const char *C = "predict", *labels_path = NULL;
    cli_model_opts o;
    cli_model_opts_init(&o);
    int topk = 5, resize = 0, crop = 0, interp = -1, nimg = 0;
    const char **images = calloc(argc, sizeof *images);
    if (!images) return EXIT_FAIL;
    for (int i = 1; i < argc; i++) {
        int r = cli_model_opts_parse(C, help, &o, argc, argv, &i);
        if (r == CLI_HELP || r < 0) {
            free(images);
            return r < 0 ? EXIT_USAGE : EXIT_OK;
        }
        if (r) continue;
        const char *a = argv[i], *v;
        int bad = 0;
        if (!strcmp(a, "--topk") || !strcmp(a, "--labels") || !strcmp(a, "--resize") ||
            !strcmp(a, "--crop") || !strcmp(a, "--interpolation")) {
            if (!(v = cli_value(C, argc, argv, &i))) bad = 1;
            else if (!strcmp(a, "--topk")) bad = cli_int(C, a, v, 1, 1000000, &topk);
            else if (!strcmp(a, "--labels")) labels_path = v;
            else if (!strcmp(a, "--resize")) bad = cli_int(C, a, v, 1, 8192, &resize);
            else if (!strcmp(a, "--crop")) bad = cli_int(C, a, v, 1, 8192, &crop);
            else if ((interp = cn_interp_parse(v)) < 0) {
                cli_err(C, "--interpolation '%s': expected bilinear or bicubic", v);
                bad = 1;
            }
        } else if (a[0] != '-' || !a[1]) {
            images[nimg++] = a;
        } else {
            cli_err(C, "unknown option '%s' (see convnet predict --help)", a);
            bad = 1;
        }
        if (bad) {
            free(images);
            return EXIT_USAGE;
        }
    }
    if (!o.path || !nimg) {
        cli_err(C, "name a MODEL file and at least one IMAGE (see convnet predict --help)");
        free(images);
        return EXIT_USAGE;
    }
    int size_set = o.h != 0;
    if (size_set && o.h != o.w) {
        cli_err(C, "--input-size: the center crop is square");
        free(images);
        return EXIT_USAGE;
    }
    cn_model *m;
    int rc = cli_model_open(C, &o, &m);
    if (rc) {
        free(images);
        return rc;
    }
    int k = cn_model_num_classes(m), ch = cn_model_in_channels(m);
    char **labels = NULL;
    if (labels_path && read_labels(C, labels_path, k, &labels)) {
        cn_model_free(m);
        free(images);
        return EXIT_USAGE;
    }
    if (ch != 1 && ch != 3) {
        cli_err(C, "%s takes %d input channels; images give 1 or 3", cn_model_name(m), ch);
        free_labels(labels, k);
        cn_model_free(m);
        free(images);
        return EXIT_FAIL;
    }
    cn_preset p;
    cn_preset_for_model(&p, cn_model_name(m), cn_model_default_size(m));
    if (size_set) p.crop = o.h, p.resize = (int)lround(o.h / 0.875);
    if (crop) p.crop = crop;
    if (resize) p.resize = resize;
    if (crop && !resize && !size_set) p.resize = (int)lround(crop / 0.875);
    if (interp >= 0) p.interp = (cn_interp)interp;
    if (topk > k) topk = k;

    float *x = malloc(sizeof(float) * (size_t)p.crop * p.crop * ch);
    float *logits = malloc(sizeof(float) * k);
    top_item *items = malloc(sizeof(top_item) * k);
    cJSON *jimages = o.json ? cJSON_CreateArray() : NULL;
    int failures = 0;
    double t_forward = 0;
    if (!x || !logits || !items) {
        cli_err(C, "out of memory");
        failures = nimg;
        nimg = 0;
    }
    if (!o.json && nimg)
        printf("%s, %d classes; %s resize %d, center crop %d\n", cn_model_name(m), k,
               cn_interp_name(p.interp), p.resize, p.crop);
    for (int n = 0; n < nimg; n++) {
        cn_image im;
        cn_status st = cn_image_load(&im, images[n]);
        if (st == CN_OK) st = cn_image_to_channels(&im, ch);
        if (st == CN_OK) st = cn_preprocess_eval(x, &im, &p);
        cn_image_free(&im);
        double t0 = cli_now();
        if (st == CN_OK) st = cn_model_forward_nhwc(m, x, 1, p.crop, p.crop, 0, logits);
        t_forward += cli_now() - t0;
        if (st != CN_OK) {
            cli_err(C, "%s", cn_errmsg());
            failures++;
            if (jimages) {
                cJSON *e = cJSON_CreateObject();
                cJSON_AddStringToObject(e, "file", images[n]);
                cJSON_AddStringToObject(e, "error", cn_errmsg());
                cJSON_AddItemToArray(jimages, e);
            }
            continue;
        }
        double mx = logits[0], sum = 0;
        for (int c = 1; c < k; c++) mx = logits[c] > mx ? logits[c] : mx;
        for (int c = 0; c < k; c++) sum += exp((double)logits[c] - mx);
        for (int c = 0; c < k; c++) {
            items[c].index = c;
            items[c].prob = exp((double)logits[c] - mx) / sum;
        }
        qsort(items, k, sizeof *items, by_prob);
        cJSON *jtop = jimages ? cJSON_CreateArray() : NULL;
        if (!o.json) printf("\n%s\n  %4s  %11s  %6s  %s\n", images[n], "rank", "probability",
                            "class", "name");
        for (int t = 0; t < topk; t++) {
            int c = items[t].index;
            const char *name = labels ? labels[c] : k == CN_IMAGENET_CLASSES ? cn_imagenet_classes[c]
                                                                              : NULL;
            if (jtop) {
                cJSON *e = cJSON_CreateObject();
                cJSON_AddNumberToObject(e, "index", c);
                if (name) cJSON_AddStringToObject(e, "label", name);
                cJSON_AddNumberToObject(e, "probability", items[t].prob);
                cJSON_AddItemToArray(jtop, e);
            } else {
                printf("  %4d  %10.2f%%  %6d  %s\n", t + 1, 100 * items[t].prob, c,
                       name ? name : "");
            }
        }
        if (jimages) {
            cJSON *e = cJSON_CreateObject();
            cJSON_AddStringToObject(e, "file", images[n]);
            cJSON_AddItemToObject(e, "top", jtop);
            cJSON_AddItemToArray(jimages, e);
        }
    }
    if (o.json) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "model", cn_model_name(m));
        cJSON_AddNumberToObject(j, "classes", k);
        cJSON_AddNumberToObject(j, "resize", p.resize);
        cJSON_AddNumberToObject(j, "crop", p.crop);
        cJSON_AddStringToObject(j, "interpolation", cn_interp_name(p.interp));
        cJSON_AddNumberToObject(j, "forward_seconds", t_forward);
        cJSON_AddItemToObject(j, "images", jimages);
        cli_print_json(j);
    }
    free(x);
    free(logits);
    free(items);
    free_labels(labels, k);
    cn_model_free(m);
    free(images);
    return failures ? EXIT_FAIL : EXIT_OK;
}
