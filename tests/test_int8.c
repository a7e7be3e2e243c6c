/* int8 inference: the integer element-wise ops against double-precision references, int8
 * ResNet-20 and EfficientNet-B0 logits against their float models (calibrated on Fashion-MNIST),
 * the three calibration methods, the file round trip (bit-identical logits, int8/int32 tensors),
 * corrupted files and the operations an int8 model refuses. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "model.h"
#include "convnet.h"
#include "compress/qnet.h"
#include "graph/model.h"
#include "io/safetensors.h"
#include "kernels/qconv.h"
#include "kernels/qops.h"
#include "train/data.h"

static uint64_t rng_state = 0x2545F4914F6CDD1Dull;
static uint32_t urand32(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 32);
}
static double urand(void) { return urand32() / 4294967296.0; }

/* ---- element-wise ops ---- */

static void ops_vs_double(void) {
    /* cn_rq: one rounding of the exact product */
    int bad = 0;
    for (int i = 0; i < 20000; i++) {
        double M = exp(-20 * urand()) * (urand() < 0.1 ? 4 : 1);
        int32_t m, s;
        cn_quantize_multiplier(M, &m, &s);
        int32_t x = (int32_t)(urand32() >> (urand32() % 31)) * (urand() < 0.5 ? -1 : 1);
        if (fabs(x * M) > 2e9) continue;
        double want = x * ((double)m * ldexp(1, -31 - s));
        int32_t got = cn_rq(x, m, s);
        if (fabs(got - want) > 0.5 + 1e-9) bad++;
        if (fabs(got - x * M) > 1.0) bad++;
    }
    CHECK(bad == 0, "cn_rq: %d results off by more than 1 unit of x * M", bad);

    /* residual add: within 1 unit of the real sum requantized */
    enum { N = 4096 };
    uint8_t a[N], b[N], o[N];
    for (int t = 0; t < 50; t++) {
        double sa = 0.001 + urand() * 0.1, sb = 0.001 + urand() * 0.1, so = 0.002 + urand() * 0.2;
        int32_t za = urand32() % 256, zb = urand32() % 256, zo = urand32() % 256;
        int relu = t % 2;
        int32_t ma, mb, sh;
        cn_q_add_params(sa, sb, so, &ma, &mb, &sh);
        for (int i = 0; i < N; i++) a[i] = urand32() & 255, b[i] = urand32() & 255;
        cn_q_add(o, a, b, N, za, zb, zo, ma, mb, sh, relu ? zo : 0, 255, 2);
        int worst = 0;
        for (int i = 0; i < N; i++) {
            double r = ((a[i] - za) * sa + (b[i] - zb) * sb) / so + zo;
            r = fmin(fmax(r, relu ? zo : 0), 255);
            int d = (int)fabs(o[i] - r + 0.0) + (fabs(o[i] - r) > 1.0);
            if (fabs(o[i] - r) > 1.0) worst = d > worst ? d : worst;
        }
        CHECK(worst == 0, "add case %d: an output more than 1 unit from the reference", t);
    }
    /* SE product and global average pool */
    for (int t = 0; t < 20; t++) {
        int n = 2, hw = 1 + urand32() % 40, c = 1 + urand32() % 70;
        double sx = 0.01 + urand() * 0.1, sg = 1.0 / 255, so = 0.01 + urand() * 0.1;
        int32_t zx = urand32() % 256, zs = 0, zo = urand32() % 256, m, s;
        uint8_t *x = malloc((size_t)n * hw * c), *g = malloc((size_t)n * c),
                *y = malloc((size_t)n * hw * c), *p = malloc((size_t)n * c);
        for (int i = 0; i < n * hw * c; i++) x[i] = urand32() & 255;
        for (int i = 0; i < n * c; i++) g[i] = urand32() & 255;
        cn_q_mul_params(sx * sg / so, &m, &s);
        cn_q_mul(y, x, g, n, (size_t)hw, c, zx, zs, zo, m, s, 2);
        int off = 0;
        for (int i = 0; i < n; i++)
            for (int q = 0; q < hw; q++)
                for (int ch = 0; ch < c; ch++) {
                    size_t k = ((size_t)i * hw + q) * c + ch;
                    double r = (x[k] - zx) * sx * (g[i * c + ch] - zs) * sg / so + zo;
                    off += fabs(y[k] - fmin(fmax(r, 0), 255)) > 1.0;
                }
        CHECK(off == 0, "mul case %d: %d outputs more than 1 unit off", t, off);
        cn_quantize_multiplier(sx / (hw * so), &m, &s);
        cn_q_gap(p, x, n, hw, c, zx, zo, m, s, 1 + t % 2);
        off = 0;
        for (int i = 0; i < n; i++)
            for (int ch = 0; ch < c; ch++) {
                double sum = 0;
                for (int q = 0; q < hw; q++) sum += x[((size_t)i * hw + q) * c + ch] - zx;
                double r = sum * sx / hw / so + zo;
                off += fabs(p[i * c + ch] - fmin(fmax(r, 0), 255)) > 1.0;
            }
        CHECK(off == 0, "gap case %d: %d outputs more than 1 unit off", t, off);
        free(x), free(g), free(y), free(p);
    }
    { /* a pool large enough to be split over threads: the same bytes at 1 and 2 threads */
        const int n = 2, hw = 3136, c = 300;
        const int32_t zx = 77, zo = 5;
        uint8_t *x = malloc((size_t)n * hw * c), p1[2 * 300], p2[2 * 300];
        for (size_t i = 0; i < (size_t)n * hw * c; i++) x[i] = urand32() & 255;
        int32_t m, s;
        cn_quantize_multiplier(0.02 / hw, &m, &s);
        cn_q_gap(p1, x, n, hw, c, zx, zo, m, s, 1);
        cn_q_gap(p2, x, n, hw, c, zx, zo, m, s, 2);
        int off = 0;
        for (int i = 0; i < n; i++)
            for (int ch = 0; ch < c; ch++) {
                double sum = 0;
                for (int q = 0; q < hw; q++) sum += x[((size_t)i * hw + q) * c + ch] - zx;
                off += fabs(p1[i * c + ch] - fmin(fmax(sum * 0.02 / hw + zo, 0), 255)) > 1.0;
            }
        CHECK(off == 0, "large gap: %d outputs more than 1 unit off", off);
        CHECK(memcmp(p1, p2, sizeof p1) == 0, "large gap: 1 and 2 threads differ");
        free(x);
    }
    /* the classifier: exact integer dot products (odd lengths, extreme values), then the float
     * scaling, against a plain loop */
    for (int t = 0; t < 12; t++) {
        const int n = 1 + t % 3, k = t < 2 ? 2048 + t : 1 + (int)(urand32() % 300), oc = 1 + t * 3;
        uint8_t *x = malloc((size_t)n * k);
        int8_t *w = malloc((size_t)oc * k);
        int32_t *wsum = malloc(sizeof(int32_t) * oc);
        float *ws = malloc(sizeof(float) * oc), *b = malloc(sizeof(float) * oc);
        float *got = malloc(sizeof(float) * n * oc);
        for (int i = 0; i < n * k; i++) x[i] = t == 0 ? 255 : (uint8_t)(urand32() & 255);
        for (int o = 0; o < oc; o++) {
            wsum[o] = 0;
            for (int j = 0; j < k; j++) {
                w[(size_t)o * k + j] = t == 0 ? -128 : (int8_t)(urand32() & 255);
                wsum[o] += w[(size_t)o * k + j];
            }
            ws[o] = 0.001f * (1 + o), b[o] = 0.5f * o;
        }
        const int32_t zx = t == 0 ? 0 : (int32_t)(urand32() % 256);
        cn_q_linear(got, x, w, wsum, ws, b, n, k, oc, zx, 0.02f);
        int bad = 0;
        for (int i = 0; i < n; i++)
            for (int o = 0; o < oc; o++) {
                int32_t acc = 0;
                for (int j = 0; j < k; j++) acc += (int32_t)x[(size_t)i * k + j] * w[(size_t)o * k + j];
                acc -= zx * wsum[o];
                const float want = (float)acc * (0.02f * ws[o]) + b[o];
                bad += got[(size_t)i * oc + o] != want;
            }
        CHECK(bad == 0, "int8 linear case %d (n %d, k %d, oc %d): %d logits differ", t, n, k, oc, bad);
        free(x), free(w), free(wsum), free(ws), free(b), free(got);
    }
}

/* ---- models ---- */


typedef struct images {
    float *x;
    int n, h, w, cap;
} images;

static cn_status take(void *user, const float *x, int n, int h, int w) {
    images *im = user;
    if (im->n + n > im->cap) n = im->cap - im->n;
    memcpy(im->x + (size_t)im->n * h * w, x, sizeof(float) * (size_t)n * h * w);
    im->n += n, im->h = h, im->w = w;
    return CN_OK;
}

/* Running statistics from real images (train-mode forwards, no update), so that the random
 * model's activations have realistic ranges. */
static void warm_bn(cn_model *m, const images *im) {
    for (int r = 0; r < 3; r++)
        for (int i = 0; i + 32 <= im->n; i += 32)
            CHECK(cn_model_forward_nhwc(m, im->x + (size_t)i * im->h * im->w, 32, im->h, im->w, 1,
                                        NULL) == CN_OK,
                  "warm forward: %s", cn_errmsg());
}

/* RMS(int8 - float) / RMS(float) of the logits, and how often the argmax agrees */
static void compare(cn_model *f, cn_model *q, const images *im, double *rel, double *agree) {
    int n = im->n, k = cn_model_num_classes(f);
    float *a = malloc(sizeof(float) * n * k), *b = malloc(sizeof(float) * n * k);
    CHECK(cn_model_forward_nhwc(f, im->x, n, im->h, im->w, 0, a) == CN_OK, "float: %s", cn_errmsg());
    CHECK(cn_model_forward_nhwc(q, im->x, n, im->h, im->w, 0, b) == CN_OK, "int8: %s", cn_errmsg());
    double se = 0, sf = 0;
    int same = 0;
    for (int i = 0; i < n; i++) {
        int ia = 0, ib = 0;
        double mean = 0;
        for (int j = 0; j < k; j++) mean += a[i * k + j] / k;
        for (int j = 0; j < k; j++) {
            se += (a[i * k + j] - b[i * k + j]) * (double)(a[i * k + j] - b[i * k + j]);
            sf += (a[i * k + j] - mean) * (a[i * k + j] - mean);
            if (a[i * k + j] > a[i * k + ia]) ia = j;
            if (b[i * k + j] > b[i * k + ib]) ib = j;
        }
        same += ia == ib;
    }
    *rel = sqrt(se / (sf > 0 ? sf : 1));
    *agree = (double)same / n;
    free(a), free(b);
}

static int file_dtype(const char *path, const char *name) {
    cn_st_file *f;
    if (cn_st_open(&f, path) != CN_OK) return -1;
    const cn_st_tensor *t = cn_st_find(f, name);
    int d = t ? (int)t->dtype : -1;
    cn_st_close(f);
    return d;
}

/* Rewrites src into dst with tensor `name` changed by edit (element index i). */
static int rewrite(const char *src, const char *dst, const char *name,
                   void (*edit)(void *data, size_t nbytes)) {
    cn_st_file *f;
    if (cn_st_open(&f, src) != CN_OK) return -1;
    cn_st_writer *w;
    cn_st_writer_new(&w);
    void *copy = NULL;
    for (int i = 0; i < cn_st_meta_count(f); i++) {
        const char *k, *v;
        cn_st_meta_at(f, i, &k, &v);
        cn_st_writer_meta(w, k, v);
    }
    for (int i = 0; i < cn_st_count(f); i++) {
        const cn_st_tensor *t = cn_st_at(f, i);
        const void *d = t->data;
        if (!strcmp(t->name, name)) {
            copy = malloc(t->nbytes + 1);
            memcpy(copy, t->data, t->nbytes);
            edit(copy, t->nbytes);
            d = copy;
        }
        cn_st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, d);
    }
    cn_status st = cn_st_writer_save(w, dst);
    cn_st_writer_free(w);
    free(copy);
    cn_st_close(f);
    return st == CN_OK ? 0 : -1;
}

static void nan_first(void *d, size_t n) { (void)n; float v = NAN; memcpy(d, &v, 4); }
static void neg_last(void *d, size_t n) { float v = -0.5f; memcpy((char *)d + n - 4, &v, 4); }
static void min_i8(void *d, size_t n) { ((int8_t *)d)[n / 2] = -128; }
static void zp_big(void *d, size_t n) { (void)n; int32_t v = 300; memcpy(d, &v, 4); }

static void expect_load_error(const char *path, const char *needle, const char *what) {
    cn_model *m = NULL;
    cn_status st = cn_model_load(&m, path, NULL);
    CHECK(st == CN_ERR_FORMAT && strstr(cn_errmsg(), needle) && strstr(cn_errmsg(), path),
          "%s: status %s, message '%s' (wanted one naming %s and '%s')", what, cn_status_name(st),
          cn_errmsg(), path, needle);
    cn_model_free(m);
}

static void no_observe(void *user, int step, const void *data, size_t count) {
    (void)user, (void)step, (void)data, (void)count;
}

static void model_case(const char *name, int size, double max_rel, double min_agree) {
    cn_model *m = test_model(name, 1, 7);
    if (!m) return;
    images im = {malloc(sizeof(float) * 128 * size * size), 0, 0, 0, 128};
    cn_data_options o = {size, 0, 0};
    CHECK(cn_foreach_batch(m, "fashion-mnist", &o, 0, 128, 64, 3, take, &im) == CN_OK,
          "test images: %s", cn_errmsg());
    warm_bn(m, &im);
    cn_int8_config c;
    cn_int8_config_default(&c);
    c.images = 64;
    c.data_opts.input_size = size;
    static const char *methods[] = {"minmax", "percentile", "mse"};
    for (int meth = 0; meth < 3; meth++) {
        c.method = (cn_calib_method)meth;
        cn_model *q = NULL;
        cn_status st = cn_quantize_int8(&q, m, &c, NULL);
        CHECK(st == CN_OK, "%s %s: %s", name, methods[meth], cn_errmsg());
        if (st != CN_OK) continue;
        CHECK(cn_model_is_int8(q) && !cn_model_is_int8(m), "is_int8");
        double rel, agree;
        compare(m, q, &im, &rel, &agree);
        printf("%s int8 (%s): logits RMS error / RMS %.4f, argmax agreement %.1f%%\n", name,
               methods[meth], rel, 100 * agree);
        CHECK(rel < max_rel, "%s %s: relative logit error %.4f >= %.4f", name, methods[meth], rel,
              max_rel);
        CHECK(agree >= min_agree, "%s %s: argmax agreement %.3f < %.3f", name, methods[meth],
              agree, min_agree);
        if (meth == 0) {
            /* the file: int8 weights, int32 biases; loads to bit-identical logits */
            char path[64], bad[64];
            snprintf(path, sizeof path, "/tmp/cn_int8_%d.safetensors", (int)getpid());
            snprintf(bad, sizeof bad, "/tmp/cn_int8_bad_%d.safetensors", (int)getpid());
            CHECK(cn_model_save(q, path) == CN_OK, "save: %s", cn_errmsg());
            CHECK(file_dtype(path, "quant.act_scale") == CN_DT_F32, "act_scale dtype");
            int n = im.n, k = 10;
            float *a = malloc(sizeof(float) * n * k), *b = malloc(sizeof(float) * n * k);
            cn_model *r = NULL;
            CHECK(cn_model_load(&r, path, NULL) == CN_OK, "load: %s", cn_errmsg());
            if (r) {
                cn_model_forward_nhwc(q, im.x, n, im.h, im.w, 0, a);
                cn_model_forward_nhwc(r, im.x, n, im.h, im.w, 0, b);
                CHECK(!memcmp(a, b, sizeof(float) * n * k), "%s: reloaded int8 logits differ",
                      name);
                CHECK(cn_model_is_int8(r), "reloaded is int8");
                /* the residual adds fused into the convolutions before them (the plain run)
                 * give the same bits as the separate steps (the run with an observer) */
                cn_qnet *qn = r->qnet;
                int fused = 0;
                for (int i = 0; i < qn->nsteps; i++) fused += qn->fuse[i];
                CHECK(fused > 0, "%s: no residual add was fused", name);
                qn->observe = no_observe;
                cn_model_forward_nhwc(r, im.x, n, im.h, im.w, 0, b);
                qn->observe = NULL;
                CHECK(!memcmp(a, b, sizeof(float) * n * k), "%s: fused adds change the logits",
                      name);
                printf("%s int8: %d residual adds fused, logits bit-identical to the unfused run\n",
                       name, fused);
                /* a batch of one gives the same logits as within a batch */
                cn_model_forward_nhwc(r, im.x + (size_t)5 * im.h * im.w, 1, im.h, im.w, 0, b);
                CHECK(!memcmp(a + 5 * k, b, sizeof(float) * k), "batch 1 != batch row");
            }
            /* what an int8 model refuses */
            CHECK(cn_model_forward_nhwc(q, im.x, 2, im.h, im.w, 1, NULL) == CN_ERR_ARG,
                  "int8 train forward must fail");
            cn_model *x = NULL;
            CHECK(cn_quantize_fixed(&x, q, 8, NULL) != CN_OK && !x, "fixed of int8 must fail");
            CHECK(cn_quantize_int8(&x, q, &c, NULL) == CN_ERR_ARG && !x, "int8 of int8 must fail");
            cn_prune_config pc;
            cn_prune_config_default(&pc);
            pc.amount = 0.3f;
            CHECK(cn_prune(&x, q, &pc) != CN_OK && !x, "pruning an int8 model must fail");
            cn_model_free(r);
            free(a), free(b);
            /* corrupted files */
            const char *w0 = !strcmp(name, "resnet20") ? "conv1" : "features.0.0";
            char wname[64], sname[64];
            snprintf(wname, sizeof wname, "%s.weight", w0);
            snprintf(sname, sizeof sname, "%s.weight_scale", w0);
            CHECK(file_dtype(path, wname) == CN_DT_I8, "%s is int8 in the file", wname);
            if (rewrite(path, bad, "quant.act_scale", nan_first) == 0)
                expect_load_error(bad, "quant.act_scale", "NaN activation scale");
            if (rewrite(path, bad, sname, neg_last) == 0)
                expect_load_error(bad, sname, "negative weight scale");
            if (rewrite(path, bad, wname, min_i8) == 0)
                expect_load_error(bad, "-128", "weight -128");
            if (rewrite(path, bad, "quant.act_zero_point", zp_big) == 0)
                expect_load_error(bad, "zero point", "zero point 300");
            unlink(path);
            unlink(bad);
        }
        cn_model_free(q);
    }
    /* mixed precision: the sensitivity report, a named layer and the K least accurate kept in
     * float32; more float layers, smaller error; the file keeps them float */
    {
        cn_int8_report rep;
        c.method = CN_CALIB_MINMAX;
        c.keep_float = !strcmp(name, "resnet20") ? "conv1" : "features.0.0";
        c.auto_mixed = 3;
        c.sensitivity_images = 8;
        cn_model *q = NULL;
        CHECK(cn_quantize_int8(&q, m, &c, &rep) == CN_OK, "mixed: %s", cn_errmsg());
        if (q) {
            int named = 0, finite = 1;
            for (int i = 0; i < rep.nlayers; i++) {
                if (!strcmp(rep.layers[i].name, c.keep_float)) named = rep.layers[i].kept_float;
                finite &= isfinite(rep.layers[i].sqnr_db) && rep.layers[i].sqnr_db > 5;
            }
            CHECK(named && rep.kept_float >= 3 && rep.kept_float <= 4,
                  "mixed: %d layers kept (named one %s)", rep.kept_float, named ? "kept" : "not");
            CHECK(finite, "mixed: every layer's SQNR is finite and above 5 dB");
            char path[64];
            snprintf(path, sizeof path, "/tmp/cn_int8_mixed_%d.safetensors", (int)getpid());
            CHECK(cn_model_save(q, path) == CN_OK, "save mixed: %s", cn_errmsg());
            CHECK(file_dtype(path, !strcmp(name, "resnet20") ? "conv1.weight" : "features.0.0.weight") == CN_DT_F32,
                  "a kept layer's weight is float32 in the file");
            cn_model *r = NULL;
            CHECK(cn_model_load(&r, path, NULL) == CN_OK, "load mixed: %s", cn_errmsg());
            if (r) {
                int n = im.n, k = 10;
                float *a = malloc(sizeof(float) * n * k), *b = malloc(sizeof(float) * n * k);
                cn_model_forward_nhwc(q, im.x, n, im.h, im.w, 0, a);
                cn_model_forward_nhwc(r, im.x, n, im.h, im.w, 0, b);
                CHECK(!memcmp(a, b, sizeof(float) * n * k), "mixed: reloaded logits differ");
                free(a), free(b);
            }
            cn_model_free(r);
            unlink(path);
            cn_int8_report_free(&rep);
            cn_model_free(q);
        }
        /* every layer float: only the activations are quantized */
        c.auto_mixed = 1000;
        CHECK(cn_quantize_int8(&q, m, &c, NULL) == CN_OK, "all float: %s", cn_errmsg());
        if (q) {
            double rel, agree;
            compare(m, q, &im, &rel, &agree);
            printf("%s all layers float32, activations uint8: logits RMS error / RMS %.4f\n", name, rel);
            CHECK(rel < max_rel, "all float layers: relative logit error %.4f", rel);
            cn_model_free(q);
        }
        c.auto_mixed = 0;
        c.keep_float = "no.such.layer";
        q = NULL;
        CHECK(cn_quantize_int8(&q, m, &c, NULL) == CN_ERR_ARG && !q &&
                  strstr(cn_errmsg(), "no.such.layer"),
              "unknown --keep-float layer: %s", cn_errmsg());
        c.keep_float = NULL;
    }
    /* calibration needs images */
    cn_model *q = NULL;
    c.images = 0;
    CHECK(cn_quantize_int8(&q, m, &c, NULL) == CN_ERR_ARG && !q && strstr(cn_errmsg(), "calib"),
          "zero calibration images: %s", cn_errmsg());
    c.images = 16;
    c.data = "mnist:/nonexistent";
    CHECK(cn_quantize_int8(&q, m, &c, NULL) != CN_OK && !q, "missing calibration data must fail");
    free(im.x);
    cn_model_free(m);
}

/* QAT: a few fake-quantized training steps, then int8 from the learned ranges (no data): the
 * integer network reproduces the QAT model's evaluation; the file keeps the ranges. */
static void qat_case(void) {
    cn_model *m = test_model("resnet20", 1, 11);
    images im = {malloc(sizeof(float) * 128 * 28 * 28), 0, 0, 0, 128};
    cn_data_options o = {28, 0, 0};
    CHECK(cn_foreach_batch(m, "fashion-mnist", &o, 1, 128, 64, 5, take, &im) == CN_OK,
          "qat images: %s", cn_errmsg());
    warm_bn(m, &im);
    cn_model *q = NULL;
    CHECK(cn_model_qat(&q, m) == CN_OK && cn_model_is_qat(q), "cn_model_qat: %s", cn_errmsg());
    if (!q) {
        free(im.x);
        cn_model_free(m);
        return;
    }
    cn_model *x = NULL;
    cn_int8_config c;
    cn_int8_config_default(&c);
    c.data = NULL;
    CHECK(cn_quantize_int8(&x, q, &c, NULL) == CN_ERR_ARG && !x &&
              strstr(cn_errmsg(), "at least one step"),
          "int8 of an untrained QAT model: %s", cn_errmsg());
    cn_optim_config oc;
    cn_optim_config_default(&oc, CN_OPTIM_SGD);
    oc.lr = 0.01f;
    cn_optim *opt = NULL;
    CHECK(cn_optim_create(&opt, q, &oc) == CN_OK, "optim: %s", cn_errmsg());
    int32_t labels[32];
    float loss = 0;
    for (int step = 0; step < 6 && opt; step++) {
        const float *xb = im.x + (size_t)(step % 4) * 32 * 28 * 28;
        for (int i = 0; i < 32; i++) labels[i] = (step * 32 + i) % 10;
        cn_model_zero_grad(q);
        CHECK(cn_model_forward_nhwc(q, xb, 32, 28, 28, 1, NULL) == CN_OK, "qat fwd: %s", cn_errmsg());
        CHECK(cn_model_loss(q, labels, 0, &loss, NULL) == CN_OK && isfinite(loss), "qat loss");
        CHECK(cn_model_backward(q) == CN_OK, "qat backward");
        cn_optim_step(opt, 0.01f);
    }
    /* the weights are the float masters again: not on the int8 grid */
    cn_tensor_info ti;
    cn_model_tensor_info(q, 0, &ti);
    float *w = malloc(sizeof(float) * (size_t)ti.count);
    cn_model_tensor_get(q, 0, w);
    int off_grid = 0;
    double amax = 0;
    for (int64_t i = 0; i < ti.count / ti.shape[0]; i++) amax = fmax(amax, fabs(w[i]));
    for (int64_t i = 0; i < ti.count / ti.shape[0]; i++) {
        double r = w[i] / (amax / 127);
        off_grid += fabs(r - nearbyint(r)) > 1e-3;
    }
    CHECK(off_grid > 0, "after a QAT step the float master weights are kept");
    free(w);
    cn_int8_config_default(&c);
    c.data = NULL;
    CHECK(cn_quantize_int8(&x, q, &c, NULL) == CN_OK, "int8 of QAT: %s", cn_errmsg());
    if (x) {
        double rel, agree;
        compare(q, x, &im, &rel, &agree);
        printf("QAT model against its int8 network: logits RMS error / RMS %.4f, argmax "
               "agreement %.1f%%\n", rel, 100 * agree);
        CHECK(rel < 0.10 && agree >= 0.95, "QAT and int8 disagree: %.4f, %.3f", rel, agree);
        /* the QAT model's file keeps the ranges: the same int8 model again */
        char path[64];
        snprintf(path, sizeof path, "/tmp/cn_qat_%d.safetensors", (int)getpid());
        CHECK(cn_model_save(q, path) == CN_OK, "save qat: %s", cn_errmsg());
        cn_model *r = NULL, *x2 = NULL;
        CHECK(cn_model_load(&r, path, NULL) == CN_OK && cn_model_is_qat(r), "load qat: %s",
              cn_errmsg());
        if (r && cn_quantize_int8(&x2, r, &c, NULL) == CN_OK) {
            float a[20], b[20];
            cn_model_forward_nhwc(x, im.x, 2, 28, 28, 0, a);
            cn_model_forward_nhwc(x2, im.x, 2, 28, 28, 0, b);
            CHECK(!memcmp(a, b, sizeof a), "int8 of the reloaded QAT model differs");
        } else {
            CHECK(0, "int8 of the reloaded QAT model: %s", cn_errmsg());
        }
        cn_model_free(x2);
        cn_model_free(r);
        unlink(path);
        cn_model *y = NULL;
        CHECK(cn_model_qat(&y, x) == CN_ERR_ARG && !y, "QAT of an int8 model must fail");
        cn_model_free(x);
    }
    cn_optim_free(opt);
    cn_model_free(q);
    cn_model_free(m);
    free(im.x);
}

int main(void) {
    ops_vs_double();
    model_case("resnet20", 28, 0.10, 0.90);
    model_case("efficientnet_b0", 32, 0.25, 0.80);
    qat_case();
    return check_summary("int8");
}
