/* Tests of image decoding and preprocessing (src/io/image.c, src/io/transform.c) against PIL and
 * torchvision 0.14 (the references of tests/parity/make_image_refs.py), of bad image files, and of
 * the CIFAR and image-folder datasets with their loader.
 *
 * usage: test_image REFDIR   (REFDIR made by make_image_refs.py). Ends with "image: N passed,
 * M failed". */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "check.h"
#include "core/rng.h"
#include "core/status.h"
#include "io/image.h"
#include "io/imagenet_classes.h"
#include "io/safetensors.h"
#include "io/transform.h"
#include "train/data.h"

static char tmp[256];

static double max_abs(const float *a, const float *b, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (d > m || d != d) m = d;
    }
    return m;
}

/* Decoding == PIL's convert("RGB"), preprocessing == torchvision's presets. */
static void test_parity(const char *dir) {
    char path[1024];
    snprintf(path, sizeof path, "%s/image_refs.safetensors", dir);
    cn_st_file *f;
    if (cn_st_open(&f, path) != CN_OK) {
        CHECK(0, "cannot open %s: %s (run tests/parity/make_image_refs.py)", path, cn_errmsg());
        return;
    }
    cJSON *exact = cJSON_Parse(cn_st_meta(f, "exact") ? cn_st_meta(f, "exact") : "[]");
    double worst_resized = 0, worst_exact = 0;
    int nresized = 0, nexact = 0, nraw = 0;
    for (int t = 0; t < cn_st_count(f); t++) {
        const cn_st_tensor *ref = cn_st_at(f, t);
        char key[512], file[256];
        snprintf(key, sizeof key, "%s", ref->name);
        char *bar = strchr(key, '|');
        if (!bar) continue;
        *bar = 0;
        snprintf(file, sizeof file, "%s", key);
        const char *rest = bar + 1;
        snprintf(path, sizeof path, "%s/%s", dir, file);
        cn_image im;
        if (cn_image_load(&im, path) != CN_OK) {
            CHECK(0, "%s: %s", path, cn_errmsg());
            continue;
        }
        CHECK(cn_image_to_channels(&im, 3) == CN_OK, "to RGB");
        if (!strcmp(rest, "raw")) {
            int same = ref->ndim == 3 && ref->shape[0] == im.h && ref->shape[1] == im.w &&
                       ref->dtype == CN_DT_U8 &&
                       !memcmp(ref->data, im.data, (size_t)im.w * im.h * 3);
            CHECK(same, "%s: decoded pixels differ from PIL's", file);
            nraw++;
        } else if (!strncmp(rest, "box|", 4)) {
            int i, j, h, w, s;
            if (sscanf(rest, "box|%d,%d,%d,%d|%d", &i, &j, &h, &w, &s) == 5) {
                uint8_t *o = malloc((size_t)s * s * 3);
                cn_status st = cn_resize_u8(o, im.data + ((size_t)i * im.w + j) * 3, w, h,
                                            (size_t)im.w * 3, 3, s, s, 0, 0, s, s,
                                            CN_INTERP_BILINEAR);
                CHECK(st == CN_OK && !memcmp(o, ref->data, (size_t)s * s * 3),
                      "%s: crop box resize differs from PIL's", ref->name);
                free(o);
            }
        } else {
            cn_preset p;
            char interp[32];
            cn_preset_for_model(&p, NULL, 224);
            if (sscanf(rest, "%d|%d|%31s", &p.resize, &p.crop, interp) == 3) {
                p.interp = (cn_interp)cn_interp_parse(interp);
                size_t n = (size_t)p.crop * p.crop * 3;
                float *got = malloc(sizeof(float) * n), *want = malloc(sizeof(float) * n);
                cn_status st = cn_preprocess_eval(got, &im, &p);
                CHECK(st == CN_OK, "%s: %s", ref->name, cn_errmsg());
                CHECK(cn_st_read_f32(f, ref, want, n) == CN_OK, "read %s", ref->name);
                int is_exact = 0;
                for (cJSON *e = exact ? exact->child : NULL; e; e = e->next)
                    if (cJSON_IsString(e) && !strcmp(e->valuestring, ref->name)) is_exact = 1;
                /* normalised values: 1/255 of input is 1/(255 std) here */
                double err = max_abs(got, want, n) * 0.225;
                if (is_exact) {
                    CHECK(err <= 1e-6, "%s: max error %g (x std) where no resize happens", ref->name, err);
                    if (err > worst_exact) worst_exact = err;
                    nexact++;
                } else {
                    CHECK(err <= 2.0 / 255, "%s: max error %g (x std) > 2/255", ref->name, err);
                    if (err > worst_resized) worst_resized = err;
                    nresized++;
                }
                free(got);
                free(want);
            }
        }
        cn_image_free(&im);
    }
    printf("parity: %d decodes identical; %d resized presets max |err| %.3g (%.3g/255), %d "
           "crop-only max |err| %.3g\n",
           nraw, nresized, worst_resized, worst_resized * 255, nexact, worst_exact);
    CHECK(nraw >= 10 && nresized >= 40 && nexact >= 2, "too few references (%d %d %d)", nraw,
          nresized, nexact);
    cJSON_Delete(exact);
    cn_st_close(f);
}

static uint8_t *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc(n > 0 ? n : 1);
    if (b && fread(b, 1, n, f) != (size_t)n) {
        free(b);
        b = NULL;
    }
    fclose(f);
    *len = (size_t)n;
    return b;
}

static void put(const char *path, const void *b, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) {
        CHECK(0, "cannot write %s", path);
        return;
    }
    if (n) fwrite(b, 1, n, f);
    fclose(f);
}

static void put_be32(uint8_t *p, uint32_t v) {
    p[0] = v >> 24, p[1] = v >> 16, p[2] = v >> 8, p[3] = v;
}

/* A PNG whose IHDR claims w x h, with a valid CRC and a tiny IDAT. */
static void write_png_header(const char *path, uint32_t w, uint32_t h) {
    uint8_t b[8 + 25 + 12 + 12];
    memcpy(b, "\x89PNG\r\n\x1a\n", 8);
    put_be32(b + 8, 13);
    memcpy(b + 12, "IHDR", 4);
    put_be32(b + 16, w);
    put_be32(b + 20, h);
    b[24] = 8, b[25] = 2, b[26] = 0, b[27] = 0, b[28] = 0;
    put_be32(b + 29, (uint32_t)crc32(0, b + 12, 17));
    put_be32(b + 33, 0);
    memcpy(b + 37, "IDAT", 4);
    put_be32(b + 41, (uint32_t)crc32(0, b + 37, 4));
    put_be32(b + 45, 0);
    memcpy(b + 49, "IEND", 4);
    put_be32(b + 53, (uint32_t)crc32(0, b + 49, 4));
    put(path, b, sizeof b);
}

typedef struct bad_case {
    const char *name;
    const uint8_t *b;
    size_t n;
    const char *want;
} bad_case;

/* Every bad file is an error naming it; nothing crashes (the ASan build checks leaks too). */
static void test_bad_files(const char *dir) {
    char src[1024], p[1024];
    size_t jn, pn;
    snprintf(src, sizeof src, "%s/rgb_640x427_prog.jpg", dir);
    uint8_t *jpg = slurp(src, &jn);
    snprintf(src, sizeof src, "%s/rgb_300x200.png", dir);
    uint8_t *png = slurp(src, &pn);
    if (!jpg || !png) {
        CHECK(0, "reference images missing in %s", dir);
        free(jpg);
        free(png);
        return;
    }
    bad_case cases[8];
    int nc = 0;
    uint8_t *cj = malloc(jn), *cp = malloc(pn);
    memcpy(cj, jpg, jn);
    memset(cj + 4, 0x55, 200);  /* the segments after SOI */
    memcpy(cp, png, pn);
    cp[pn / 2] ^= 0xFF;         /* inside IDAT: the CRC no longer matches */
    const char *text = "this is not an image, just text\n";
    cases[nc++] = (bad_case){"empty.jpg", jpg, 0, "empty file"};
    cases[nc++] = (bad_case){"trunc.jpg", jpg, jn / 2, "truncated"};
    cases[nc++] = (bad_case){"trunc.png", png, pn / 2, "truncated"};
    cases[nc++] = (bad_case){"corrupt.jpg", cj, jn, "bad JPEG"};
    cases[nc++] = (bad_case){"corrupt.png", cp, pn, "bad PNG"};
    cases[nc++] = (bad_case){"text.jpg", (const uint8_t *)text, strlen(text), "not a JPEG or PNG"};
    cases[nc++] = (bad_case){"sig_only.png", png, 8, "truncated"};
    for (int i = 0; i < nc; i++) {
        snprintf(p, sizeof p, "%s/%s", tmp, cases[i].name);
        put(p, cases[i].b, cases[i].n);
        cn_image im;
        cn_status st = cn_image_load(&im, p);
        CHECK(st != CN_OK && strstr(cn_errmsg(), p) && strstr(cn_errmsg(), cases[i].want),
              "%s: status %d, message '%s' (want the path and '%s')", cases[i].name, st,
              cn_errmsg(), cases[i].want);
        CHECK(!im.data, "%s: no pixels left on failure", cases[i].name);
        st = cn_image_decode(&im, cases[i].b, cases[i].n, "mem");
        CHECK(st != CN_OK, "%s: decode from memory fails too", cases[i].name);
    }
    snprintf(p, sizeof p, "%s/huge.png", tmp);
    write_png_header(p, 100000, 100000);
    cn_image im;
    cn_status st = cn_image_load(&im, p);
    CHECK(st == CN_ERR_FORMAT && strstr(cn_errmsg(), "100000x100000") && strstr(cn_errmsg(), p),
          "huge PNG refused before allocating: '%s'", cn_errmsg());
    CHECK(cn_image_probe(p, NULL, NULL) != CN_OK, "probe refuses the huge PNG");
    snprintf(p, sizeof p, "%s/big_ok_header.png", tmp);
    write_png_header(p, 20000, 20000);
    CHECK(cn_image_load(&im, p) != CN_OK && strstr(cn_errmsg(), "larger than"), "20000^2 > 2^28 pixels: '%s'", cn_errmsg());
    int w, h;
    snprintf(p, sizeof p, "%s/rgb_640x427_prog.jpg", dir);
    CHECK(cn_image_probe(p, &w, &h) == CN_OK && w == 640 && h == 427, "probe reads 640x427");
    snprintf(p, sizeof p, "%s/no_such_file.png", tmp);
    CHECK(cn_image_load(&im, p) == CN_ERR_IO && strstr(cn_errmsg(), p), "missing file");
    CHECK(cn_image_load(&im, tmp) == CN_ERR_IO, "a directory is not an image");
    CHECK(cn_image_has_ext("a.JPG") && cn_image_has_ext("b.jpeg") && cn_image_has_ext("c.Png") &&
          !cn_image_has_ext("d.gif") && !cn_image_has_ext("jpg"), "extensions");
    free(cj);
    free(cp);
    free(jpg);
    free(png);
}

static void test_transforms(void) {
    /* resize of an image to its own size is the identity; upscale then keeps constant images */
    uint8_t src[5 * 7 * 3], dst[9 * 13 * 3];
    for (size_t i = 0; i < sizeof src; i++) src[i] = (uint8_t)(i * 37);
    CHECK(cn_resize_u8(dst, src, 7, 5, 21, 3, 7, 5, 0, 0, 7, 5, CN_INTERP_BICUBIC) == CN_OK &&
          !memcmp(dst, src, sizeof src), "same-size resize copies");
    memset(src, 77, sizeof src);
    CHECK(cn_resize_u8(dst, src, 7, 5, 21, 3, 13, 9, 0, 0, 13, 9, CN_INTERP_BICUBIC) == CN_OK,
          "upscale");
    int same = 1;
    for (size_t i = 0; i < sizeof dst; i++) same &= dst[i] == 77;
    CHECK(same, "a constant image stays constant");
    CHECK(cn_resize_u8(dst, src, 7, 5, 21, 3, 13, 9, 5, 0, 13, 9, CN_INTERP_BILINEAR) != CN_OK,
          "window outside the output is refused");
    int nh, nw;
    cn_resize_shorter(427, 640, 256, &nh, &nw);
    CHECK(nh == 256 && nw == 383, "resize shorter side: %dx%d", nw, nh);
    cn_resize_shorter(61, 37, 224, &nh, &nw);
    CHECK(nw == 224 && nh == 369, "resize shorter side (portrait): %dx%d", nw, nh);
    /* RandomResizedCrop boxes stay inside the image, and are a function of the stream */
    int ok = 1;
    for (int t = 0; t < 2000; t++) {
        int H = 1 + t % 97, W = 1 + (t * 7) % 211, i, j, h, w, i2, j2, h2, w2;
        cn_rng r = cn_rng_make(5, 1, t), r2 = cn_rng_make(5, 1, t);
        cn_rrc_params(H, W, &r, &i, &j, &h, &w);
        cn_rrc_params(H, W, &r2, &i2, &j2, &h2, &w2);
        ok &= h >= 1 && w >= 1 && i >= 0 && j >= 0 && i + h <= H && j + w <= W;
        ok &= i == i2 && j == j2 && h == h2 && w == w2;
    }
    CHECK(ok, "RandomResizedCrop boxes inside the image and reproducible");
    cn_preset p;
    cn_preset_for_model(&p, "efficientnet_b3", 300);
    CHECK(p.resize == 320 && p.crop == 300 && p.interp == CN_INTERP_BICUBIC, "B3 preset");
    cn_preset_for_model(&p, "efficientnet_b1", 240);
    CHECK(p.resize == 255 && p.crop == 240 && p.interp == CN_INTERP_BILINEAR, "B1 preset");
    cn_preset_for_model(&p, "resnet50", 224);
    CHECK(p.resize == 256 && p.crop == 224 && p.interp == CN_INTERP_BILINEAR, "ResNet preset");
}

/* The compiled-in class names are data/imagenet_classes.txt. */
static void test_classes(void) {
    FILE *f = fopen("data/imagenet_classes.txt", "r");
    if (!f) {
        CHECK(0, "data/imagenet_classes.txt not found (run from the repository root)");
        return;
    }
    char line[256];
    int n = 0, same = 1;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = 0;
        if (n < CN_IMAGENET_CLASSES) same &= !strcmp(line, cn_imagenet_classes[n]);
        n++;
    }
    fclose(f);
    CHECK(n == CN_IMAGENET_CLASSES && same, "imagenet_classes.c == data/imagenet_classes.txt (%d lines)", n);
    CHECK(!strcmp(cn_imagenet_classes[0], "tench") && !strcmp(cn_imagenet_classes[999], "toilet tissue"),
          "first and last ImageNet class");
}

static void write_cifar(const char *path, int n, int label_bytes, int seed) {
    int rec = label_bytes + 3072;
    uint8_t *b = malloc((size_t)n * rec);
    for (int i = 0; i < n; i++)
        for (int k = 0; k < rec; k++) {
            uint8_t v = (uint8_t)(seed * 31 + i * 7 + k * 13);
            if (k < label_bytes) v = (uint8_t)(k == 0 && label_bytes == 2 ? (seed + i) % 20
                                                                          : (seed + 3 * i) % (label_bytes == 2 ? 100 : 10));
            b[(size_t)i * rec + k] = v;
        }
    put(path, b, (size_t)n * rec);
    free(b);
}

static void test_cifar(void) {
    char d10[512], d100[512], p[600];
    snprintf(d10, sizeof d10, "%s/c10", tmp);
    snprintf(d100, sizeof d100, "%s/c100/cifar-100-binary", tmp);
    mkdir(d10, 0755);
    snprintf(p, sizeof p, "%s/c100", tmp);
    mkdir(p, 0755);
    mkdir(d100, 0755);
    for (int b = 1; b <= 5; b++) {
        snprintf(p, sizeof p, "%s/data_batch_%d.bin", d10, b);
        write_cifar(p, 3, 1, b);
    }
    snprintf(p, sizeof p, "%s/test_batch.bin", d10);
    write_cifar(p, 4, 1, 9);
    snprintf(p, sizeof p, "%s/train.bin", d100);
    write_cifar(p, 6, 2, 2);
    snprintf(p, sizeof p, "%s/test.bin", d100);
    write_cifar(p, 2, 2, 4);

    cn_dataset d;
    char spec[600];
    snprintf(spec, sizeof spec, "cifar10:%s", d10);
    cn_status st = cn_dataset_open(&d, spec, 1);
    CHECK(st == CN_OK && d.n == 15 && d.h == 32 && d.w == 32 && d.c == 3 && d.num_classes == 10,
          "cifar10 train: %s", cn_errmsg());
    if (st == CN_OK) {
        /* sample 4 = batch 2, record 1: label (2 + 3) % 10, pixel (y, x, c) = byte 1 + c*1024 + y*32 + x */
        int ok = d.labels[4] == 5;
        for (int y = 0; y < 32; y += 5)
            for (int x = 0; x < 32; x += 3)
                for (int c = 0; c < 3; c++) {
                    int k = 1 + c * 1024 + y * 32 + x;
                    ok &= d.images[((size_t)4 * 1024 + y * 32 + x) * 3 + c] == (uint8_t)(2 * 31 + 7 + k * 13);
                }
        CHECK(ok, "cifar10: labels and HWC pixels of data_batch_2 record 1");
    }
    cn_dataset_free(&d);
    st = cn_dataset_open(&d, spec, 0);
    CHECK(st == CN_OK && d.n == 4 && d.labels[1] == (9 + 3) % 10, "cifar10 test split");
    cn_dataset_free(&d);
    snprintf(spec, sizeof spec, "cifar100:%s/c100", tmp);
    st = cn_dataset_open(&d, spec, 1);
    CHECK(st == CN_OK && d.n == 6 && d.num_classes == 100 && d.labels[3] == (2 + 9) % 100,
          "cifar100 (in cifar-100-binary/), fine labels: %s", cn_errmsg());
    cn_dataset_free(&d);
    /* a file that is not whole records */
    snprintf(p, sizeof p, "%s/test_batch.bin", d10);
    write_cifar(p, 4, 1, 9);
    FILE *f = fopen(p, "ab");
    fputc(0, f);
    fclose(f);
    snprintf(spec, sizeof spec, "cifar10:%s", d10);
    st = cn_dataset_open(&d, spec, 0);
    CHECK(st == CN_ERR_FORMAT && strstr(cn_errmsg(), "test_batch.bin") && strstr(cn_errmsg(), "whole number"),
          "cifar10: trailing byte: %s", cn_errmsg());
    snprintf(spec, sizeof spec, "cifar10:%s/nothing_here", tmp);
    CHECK(cn_dataset_open(&d, spec, 1) != CN_OK && strstr(cn_errmsg(), "data_batch_1.bin"),
          "cifar10: missing files: %s", cn_errmsg());
}

static void copy_file(const char *from, const char *to) {
    size_t n;
    uint8_t *b = slurp(from, &n);
    if (b) put(to, b, n);
    free(b);
}

/* torchvision's ImageFolder order, odd names, splits, bad files, loader determinism. */
static void test_folder(const char *ref) {
    char root[512], p[1024], src[1024];
    snprintf(root, sizeof root, "%s/folder", tmp);
    const char *dirs[] = {"", "/train", "/val", "/train/b cls", "/train/a\xc3\xa9", "/train/Z",
                          "/train/b cls/sub", "/train/b cls/sub dir", "/val/b cls", "/val/a\xc3\xa9",
                          "/val/Z"};
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) {
        snprintf(p, sizeof p, "%s%s", root, dirs[i]);
        mkdir(p, 0755);
    }
    const char *files[] = {"/train/b cls/2.png", "/train/b cls/10.JPG", "/train/b cls/sub/x.jpg",
                           "/train/b cls/sub dir/y.png", "/train/a\xc3\xa9/one.jpeg",
                           "/train/Z/z.png", "/train/Z/notes.txt", "/val/b cls/v.png",
                           "/val/a\xc3\xa9/v.jpg", "/val/Z/v.png"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(p, sizeof p, "%s%s", root, files[i]);
        int is_png = strstr(files[i], ".png") != NULL, is_txt = strstr(files[i], ".txt") != NULL;
        snprintf(src, sizeof src, "%s/%s", ref, is_png ? "rgb_37x61.jpg" : "gray_300x200.jpg");
        if (is_txt) put(p, "text", 4);
        else copy_file(src, p); /* a JPEG named .png decodes: the signature decides */
    }
    cn_dataset d;
    char spec[600];
    snprintf(spec, sizeof spec, "folder:%s", root);
    cn_status st = cn_dataset_open_opts(&d, spec, 1, 24, 0);
    CHECK(st == CN_OK && d.n == 6 && d.num_classes == 3 && d.c == 3 && d.h == 24,
          "folder train split: %s (n %d)", cn_errmsg(), d.n);
    if (st == CN_OK) {
        /* classes by byte order: "Z" < "a\xc3\xa9" < "b cls"; files by sorted(os.walk) */
        CHECK(!strcmp(d.classes[0], "Z") && !strcmp(d.classes[1], "a\xc3\xa9") &&
              !strcmp(d.classes[2], "b cls"), "class order %s, %s, %s", d.classes[0],
              d.classes[1], d.classes[2]);
        const char *want[] = {"Z/z.png", "a\xc3\xa9/one.jpeg", "b cls/10.JPG", "b cls/2.png",
                              "b cls/sub/x.jpg", "b cls/sub dir/y.png"};
        int lab[] = {0, 1, 2, 2, 2, 2};
        for (int i = 0; i < 6; i++) {
            snprintf(p, sizeof p, "%s/train/%s", root, want[i]);
            CHECK(!strcmp(d.paths[i], p) && d.labels[i] == lab[i], "file %d: %s (label %d), want %s",
                  i, d.paths[i], d.labels[i], p);
        }
        /* the loader gives the same batches with 1 and 3 threads */
        float mean[3] = CN_IMAGENET_MEAN, std[3] = CN_IMAGENET_STD;
        cn_augment aug = {0, 1, 1};
        cn_loader a, b;
        CHECK(cn_loader_init(&a, &d, 4, 1, 0, &aug, mean, std, 11) == CN_OK, "loader");
        CHECK(cn_loader_init(&b, &d, 4, 1, 0, &aug, mean, std, 11) == CN_OK, "loader");
        cn_loader_set_threads(&a, 1);
        cn_loader_set_threads(&b, 3);
        cn_loader_start(&a, 2, 0);
        cn_loader_start(&b, 2, 0);
        const cn_batch *x, *y;
        int same = 1, batches = 0;
        while ((x = cn_loader_next(&a))) {
            y = cn_loader_next(&b);
            same &= y && x->n == y->n && !memcmp(x->y, y->y, sizeof(int32_t) * x->n) &&
                    !memcmp(x->x, y->x, sizeof(float) * 24 * 24 * 3 * x->n);
            batches++;
        }
        CHECK(same && batches == 2 && !cn_loader_next(&b), "1 and 3 loader threads: same batches");
        CHECK(cn_loader_status(&a) == CN_OK, "loader status ok");
        cn_loader_free(&a);
        cn_loader_free(&b);
    }
    cn_dataset_free(&d);
    st = cn_dataset_open_opts(&d, spec, 0, 24, 0);
    CHECK(st == CN_OK && d.n == 3 && d.num_classes == 3, "folder val split: %s", cn_errmsg());
    cn_dataset_free(&d);

    /* a bad file: an error naming it from the loader, or skipped with skip_bad */
    snprintf(p, sizeof p, "%s/train/Z/zz_bad.jpg", root);
    put(p, "not a jpeg", 10);
    st = cn_dataset_open_opts(&d, spec, 1, 24, 0);
    if (st == CN_OK) {
        float mean[3] = CN_IMAGENET_MEAN, std[3] = CN_IMAGENET_STD;
        cn_loader l;
        cn_loader_init(&l, &d, 7, 0, 0, NULL, mean, std, 1);
        cn_loader_start(&l, 1, 0);
        CHECK(!cn_loader_next(&l), "no batch with a bad file");
        CHECK(cn_loader_status(&l) == CN_ERR_FORMAT && strstr(cn_errmsg(), p),
              "the loader names the bad file: %s", cn_errmsg());
        cn_loader_free(&l);
    }
    cn_dataset_free(&d);
    st = cn_dataset_open_opts(&d, spec, 1, 24, 1);
    CHECK(st == CN_OK && d.n == 6, "skip_bad leaves the bad file out at open");
    cn_dataset_free(&d);
    /* a file whose header reads but whose data is cut short passes the check at open; the
     * loader replaces it by the next file, with that file's label */
    snprintf(src, sizeof src, "%s/gray_300x200.jpg", ref);
    size_t n;
    uint8_t *b = slurp(src, &n);
    snprintf(p, sizeof p, "%s/train/Z/z.png", root);
    if (b) put(p, b, n / 2);
    free(b);
    st = cn_dataset_open_opts(&d, spec, 1, 24, 1);
    CHECK(st == CN_OK && d.n == 6, "truncated data passes the header check");
    if (st == CN_OK) {
        float mean[3] = CN_IMAGENET_MEAN, std[3] = CN_IMAGENET_STD;
        cn_loader l;
        cn_loader_init(&l, &d, 6, 0, 0, NULL, mean, std, 1);
        cn_loader_start(&l, 1, 0);
        const cn_batch *x = cn_loader_next(&l);
        size_t per = 24 * 24 * 3;
        CHECK(x && x->n == 6 && x->y[0] == 1 && x->y[1] == 1 &&
              !memcmp(x->x, x->x + per, sizeof(float) * per),
              "the bad sample 0 is replaced by sample 1 and its label");
        CHECK(cn_loader_status(&l) == CN_OK, "skip_bad: no error");
        cn_loader_free(&l);
    }
    cn_dataset_free(&d);

    /* errors: empty folder, class folder without images, train without val */
    snprintf(p, sizeof p, "%s/empty", tmp);
    mkdir(p, 0755);
    snprintf(spec, sizeof spec, "folder:%s", p);
    CHECK(cn_dataset_open_opts(&d, spec, 1, 24, 0) == CN_ERR_FORMAT &&
          strstr(cn_errmsg(), "no class folders"), "empty folder: %s", cn_errmsg());
    snprintf(p, sizeof p, "%s/empty/cls", tmp);
    mkdir(p, 0755);
    CHECK(cn_dataset_open_opts(&d, spec, 1, 24, 0) == CN_ERR_FORMAT && strstr(cn_errmsg(), "'cls'"),
          "class without images: %s", cn_errmsg());
    snprintf(p, sizeof p, "%s/empty/train", tmp);
    mkdir(p, 0755);
    CHECK(cn_dataset_open_opts(&d, spec, 0, 24, 0) == CN_ERR_FORMAT && strstr(cn_errmsg(), "val/"),
          "train/ without val/: %s", cn_errmsg());
    snprintf(spec, sizeof spec, "folder:%s/not_there", tmp);
    CHECK(cn_dataset_open_opts(&d, spec, 1, 24, 0) != CN_OK && strstr(cn_errmsg(), "not_there"),
          "missing folder: %s", cn_errmsg());
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s REFDIR\n", argv[0]);
        printf("image: 0 passed, 1 failed\n");
        return 1;
    }
    snprintf(tmp, sizeof tmp, "%s/cn_image_XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(tmp)) {
        perror("mkdtemp");
        return 1;
    }
    test_parity(argv[1]);
    test_bad_files(argv[1]);
    test_transforms();
    test_classes();
    test_cifar();
    test_folder(argv[1]);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmp);
    return check_summary("image");
}
