/* int8 quantization: calibration of every tensor's range on training images, then the int8
 * network (compress/qnet.c) built from the folded float model. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compress/qnet.h"
#include "core/status.h"
#include "graph/model.h"
#include "train/data.h"

#define BINS 2048

void cn_int8_config_default(cn_int8_config *c) {
    memset(c, 0, sizeof *c);
    c->data = "fashion-mnist";
    c->images = 512;
    c->batch = 64;
    c->method = CN_CALIB_MINMAX;
    c->percentile = 99.99f;
    c->seed = 1;
}

int cn_model_is_int8(const cn_model *m) { return m && m->qnet; }

int64_t cn_model_int8_bytes(const cn_model *m) { return m && m->qnet ? cn_qnet_bytes(m->qnet) : 0; }

/* What calibration observes: per tensor the range (pass 1), then a histogram over it (pass 2). */
typedef struct calib {
    cn_model *m;            /* the unfused float copy */
    int nt, pass;
    double *lo, *hi;
    uint64_t *hist;         /* (nt, BINS) */
    int bad;                /* a tensor held a NaN or infinity */
    int bad_tensor;
} calib;

static void observe(void *user, int t, const float *x, size_t n) {
    calib *c = user;
    if (c->pass == 0) {
        double lo = c->lo[t], hi = c->hi[t];
        for (size_t i = 0; i < n; i++) {
            if (!isfinite(x[i])) {
                if (!c->bad) c->bad_tensor = t;
                c->bad = 1;
                continue;
            }
            if (x[i] < lo) lo = x[i];
            if (x[i] > hi) hi = x[i];
        }
        c->lo[t] = lo, c->hi[t] = hi;
        return;
    }
    double lo = c->lo[t], hi = c->hi[t];
    if (!(hi > lo)) return;
    double inv = BINS / (hi - lo);
    uint64_t *h = c->hist + (size_t)t * BINS;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(x[i])) continue;
        int b = (int)((x[i] - lo) * inv);
        h[b < 0 ? 0 : b >= BINS ? BINS - 1 : b]++;
    }
}

static cn_status calib_batch(void *user, const float *x, int n, int h, int w) {
    calib *c = user;
    return cn_model_forward_nhwc(c->m, x, n, h, w, 0, NULL);
}

/* the value below which a fraction p of the histogram's mass lies */
static double hist_quantile(const uint64_t *h, double lo, double hi, double p) {
    uint64_t total = 0;
    for (int b = 0; b < BINS; b++) total += h[b];
    if (!total) return lo;
    double target = p * (double)total, acc = 0;
    for (int b = 0; b < BINS; b++) {
        if (acc + (double)h[b] >= target) {
            double f = h[b] ? (target - acc) / (double)h[b] : 0;
            return lo + (hi - lo) * (b + f) / BINS;
        }
        acc += (double)h[b];
    }
    return hi;
}

/* expected squared error of quantizing the histogram's values to 256 levels on [a, b] */
static double range_error(const uint64_t *h, double lo, double hi, double a, double b) {
    double step = (b - a) / 255.0, noise = step * step / 12.0, err = 0, width = (hi - lo) / BINS;
    for (int k = 0; k < BINS; k++) {
        if (!h[k]) continue;
        double v = lo + (k + 0.5) * width;
        double e = v < a ? (a - v) * (a - v) : v > b ? (v - b) * (v - b) : noise;
        err += (double)h[k] * e;
    }
    return err;
}

static void choose_range(const calib *c, int t, const cn_int8_config *cfg, cn_qrange *r) {
    double lo = c->lo[t], hi = c->hi[t];
    if (lo > 0) lo = 0;
    if (hi < 0) hi = 0;
    r->lo = (float)lo, r->hi = (float)hi;
    if (cfg->method == CN_CALIB_MINMAX || !(c->hi[t] > c->lo[t])) return;
    const uint64_t *h = c->hist + (size_t)t * BINS;
    double olo = c->lo[t], ohi = c->hi[t];
    if (cfg->method == CN_CALIB_PERCENTILE) {
        double tail = (100.0 - cfg->percentile) / 100.0;
        double a = olo < 0 ? hist_quantile(h, olo, ohi, tail) : 0;
        double b = ohi > 0 ? hist_quantile(h, olo, ohi, 1.0 - tail) : 0;
        r->lo = (float)(a < 0 ? a : 0), r->hi = (float)(b > 0 ? b : 0);
        return;
    }
    /* MSE: shrink the range towards zero and keep the best */
    double best = INFINITY, ba = lo, bb = hi;
    for (int i = 0; i <= 100; i++) {
        double f = 1.0 - 0.008 * i; /* down to 20 % of the observed range */
        double a = lo * f, b = hi * f;
        double e = range_error(h, olo, ohi, a, b);
        if (e < best) best = e, ba = a, bb = b;
    }
    r->lo = (float)ba, r->hi = (float)bb;
}

cn_status cn_quantize_int8(cn_model **out, const cn_model *m, const cn_int8_config *cfg) {
    if (!out || !m || !cfg) return cn_error(CN_ERR_ARG, "cn_quantize_int8: NULL argument");
    *out = NULL;
    if (m->qnet) return cn_error(CN_ERR_ARG, "the model is already int8");
    if (m->quant_frac)
        return cn_error(CN_ERR_ARG, "the model holds fixed-point weights; quantize its float "
                                    "original to int8");
    if (cfg->images < 1 || cfg->images > 10000000)
        return cn_error(CN_ERR_ARG, "--calib %d: calibration needs at least one image",
                        cfg->images);
    if (cfg->batch < 1 || cfg->batch > 65536)
        return cn_error(CN_ERR_ARG, "--batch %d is out of range [1, 65536]", cfg->batch);
    if (cfg->method == CN_CALIB_PERCENTILE && !(cfg->percentile > 50 && cfg->percentile <= 100))
        return cn_error(CN_ERR_ARG, "--percentile %g is out of range (50, 100]",
                        (double)cfg->percentile);
    if (!cfg->data || !*cfg->data) return cn_error(CN_ERR_ARG, "calibration needs --data");
    calib c;
    memset(&c, 0, sizeof c);
    cn_model *q = NULL;
    cn_qrange *ranges = NULL;
    cn_status st = cn_model_new_arch_nofuse(&c.m, &m->arch, m->threads);
    if (st == CN_OK) st = cn_model_copy_state(c.m, m);
    if (st == CN_OK) {
        c.nt = c.m->g.ntensors;
        c.lo = malloc(sizeof(double) * (size_t)c.nt);
        c.hi = malloc(sizeof(double) * (size_t)c.nt);
        ranges = calloc((size_t)c.nt, sizeof *ranges);
        if (!c.lo || !c.hi || !ranges) st = cn_error(CN_ERR_NOMEM, "out of memory");
    }
    for (int t = 0; st == CN_OK && t < c.nt; t++) c.lo[t] = INFINITY, c.hi[t] = -INFINITY;
    if (st == CN_OK) {
        c.m->g.observe = observe;
        c.m->g.observe_user = &c;
        st = cn_foreach_batch(m, cfg->data, &cfg->data_opts, 1, cfg->images, cfg->batch, cfg->seed,
                              calib_batch, &c);
    }
    if (st == CN_OK && c.bad)
        st = cn_error(CN_ERR_ARG, "calibration: tensor %d of the model holds NaN or infinite values "
                                  "on the calibration images", c.bad_tensor);
    if (st == CN_OK && !(c.hi[0] >= c.lo[0]))
        st = cn_error(CN_ERR_ARG, "calibration saw no image of %s", cfg->data);
    if (st == CN_OK && cfg->method != CN_CALIB_MINMAX) {
        if (!(c.hist = calloc((size_t)c.nt * BINS, sizeof(uint64_t))))
            st = cn_error(CN_ERR_NOMEM, "out of memory");
        c.pass = 1;
        if (st == CN_OK)
            st = cn_foreach_batch(m, cfg->data, &cfg->data_opts, 1, cfg->images, cfg->batch,
                                  cfg->seed, calib_batch, &c);
    }
    for (int t = 0; st == CN_OK && t < c.nt; t++) {
        if (!(c.hi[t] >= c.lo[t])) continue; /* not observed (never materialised) */
        choose_range(&c, t, cfg, &ranges[t]);
    }
    if (st == CN_OK) st = cn_model_new_arch(&q, &m->arch, m->threads);
    if (st == CN_OK) st = cn_model_copy_state(q, m);
    if (st == CN_OK) {
        free(q->mask);
        q->mask = NULL;
        st = cn_qnet_build(&q->qnet, &q->g, ranges);
    }
    cn_model_free(c.m);
    free(c.lo), free(c.hi), free(c.hist), free(ranges);
    if (st != CN_OK) {
        cn_model_free(q);
        return st;
    }
    *out = q;
    return CN_OK;
}
