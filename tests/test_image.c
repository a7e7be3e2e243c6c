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
#include "io/safetensors.h"
#include "io/transform.h"

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
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmp);
    return check_summary("image");
}
