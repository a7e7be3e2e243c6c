/* int8 quantization: calibration of every tensor's range on training images, then the int8
 * network (compress/qnet.c) built from the folded float model. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compress/qat.h"
#include "compress/qnet.h"
#include "core/status.h"
#include "graph/model.h"
#include "kernels/qops.h"
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
    c->sensitivity_images = 64;
}

void cn_int8_report_free(cn_int8_report *r) {
    if (!r) return;
    free(r->layers);
    r->layers = NULL;
    r->nlayers = 0;
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

/* ---- sensitivity: each layer alone on the float model's inputs ---- */

typedef struct sens {
    cn_model *fm;           /* the unfused float model */
    cn_qnet *q;
    int nt;
    float **ft;             /* (nt) the float tensors of the current batch */
    size_t *ftcap;
    uint8_t *b0, *bo;       /* one step's input and output (weighted steps read one input) */
    size_t bcap;
    float *lg, *deq;
    double *sig, *noise;    /* per step */
    cn_status st;
} sens;

static void keep_tensor(void *user, int t, const float *x, size_t n) {
    sens *s = user;
    if (s->st != CN_OK) return;
    if (s->ftcap[t] < n) {
        free(s->ft[t]);
        if (!(s->ft[t] = malloc(sizeof(float) * n))) {
            s->ftcap[t] = 0;
            s->st = cn_error(CN_ERR_NOMEM, "out of memory for the sensitivity report");
            return;
        }
        s->ftcap[t] = n;
    }
    memcpy(s->ft[t], x, sizeof(float) * n);
}

static int weighted_step(cn_qop op) { return op == CN_Q_CONV || op == CN_Q_DWCONV || op == CN_Q_LINEAR; }

static cn_status sens_batch(void *user, const float *x, int n, int h, int w) {
    sens *s = user;
    CN_TRY(cn_model_forward_nhwc(s->fm, x, n, h, w, 0, NULL));
    CN_TRY(s->st);
    cn_qnet *q = s->q;
    CN_TRY(cn_qnet_plan(q, n > q->batch ? n : q->batch, h, w, s->fm->threads));
    const cn_graph *g = q->g;
    size_t need = 0;
    for (int t = 0; t < g->ntensors; t++) {
        size_t b = (size_t)n * g->tensors[t].h * g->tensors[t].w * g->tensors[t].c;
        need = b > need ? b : need;
    }
    if (need > s->bcap) {
        free(s->b0), free(s->bo), free(s->deq);
        s->b0 = malloc(need), s->bo = malloc(need);
        s->deq = malloc(sizeof(float) * need);
        if (!s->b0 || !s->bo || !s->deq) {
            s->bcap = 0;
            return cn_error(CN_ERR_NOMEM, "out of memory for the sensitivity report");
        }
        s->bcap = need;
    }
    for (int i = 0; i < q->nsteps; i++) {
        const cn_qstep *st = &q->steps[i];
        if (!weighted_step(st->op)) continue;
        int ti = st->in[0];
        size_t nin = (size_t)n * g->tensors[ti].h * g->tensors[ti].w * g->tensors[ti].c;
        cn_q_quantize(s->b0, s->ft[ti], nin, q->scale[ti], q->zp[ti], s->fm->threads);
        cn_qnet_run_step(q, i, NULL, s->b0, NULL, s->bo, s->lg, n, s->fm->threads);
        const float *ref = s->ft[st->out];
        size_t nout = (size_t)n * g->tensors[st->out].h * g->tensors[st->out].w * g->tensors[st->out].c;
        const float *got = s->lg;
        if (st->op != CN_Q_LINEAR) {
            cn_q_dequantize(s->deq, s->bo, nout, q->scale[st->out], q->zp[st->out], s->fm->threads);
            got = s->deq;
        }
        double sg = 0, ns = 0;
        for (size_t k = 0; k < nout; k++) {
            sg += (double)ref[k] * ref[k];
            ns += ((double)ref[k] - got[k]) * ((double)ref[k] - got[k]);
        }
        s->sig[i] += sg;
        s->noise[i] += ns;
    }
    return CN_OK;
}

static const char *step_op(cn_qop op) {
    return op == CN_Q_CONV ? "conv" : op == CN_Q_DWCONV ? "depthwise" : "linear";
}

/* the per-layer report of q (built without float layers) on the calibration images */
static cn_status sensitivity(const cn_model *m, const cn_int8_config *cfg, cn_qnet *q,
                             cn_int8_report *rep) {
    sens s;
    memset(&s, 0, sizeof s);
    s.q = q;
    cn_status st = cn_model_new_arch_nofuse(&s.fm, &m->arch, m->threads);
    if (st == CN_OK) st = cn_model_copy_state(s.fm, m);
    if (st == CN_OK) {
        s.nt = s.fm->g.ntensors;
        s.ft = calloc((size_t)s.nt, sizeof(float *));
        s.ftcap = calloc((size_t)s.nt, sizeof(size_t));
        s.sig = calloc((size_t)q->nsteps, sizeof(double));
        s.noise = calloc((size_t)q->nsteps, sizeof(double));
        s.lg = malloc(sizeof(float) * 8 * (size_t)(m->arch.num_classes + 1));
        if (!s.ft || !s.ftcap || !s.sig || !s.noise || !s.lg)
            st = cn_error(CN_ERR_NOMEM, "out of memory");
    }
    if (st == CN_OK) {
        s.fm->g.observe = keep_tensor;
        s.fm->g.observe_user = &s;
        /* batches of 8: every tensor of the float model is kept */
        st = cn_foreach_batch(m, cfg->data, &cfg->data_opts, 1, cfg->sensitivity_images, 8,
                              cfg->seed, sens_batch, &s);
    }
    int nl = 0;
    for (int i = 0; i < q->nsteps; i++) nl += weighted_step(q->steps[i].op);
    if (st == CN_OK && !(rep->layers = calloc((size_t)nl + 1, sizeof *rep->layers)))
        st = cn_error(CN_ERR_NOMEM, "out of memory");
    if (st == CN_OK) {
        int k = 0;
        cn_graph *g = q->g;
        for (int i = 0; i < q->nsteps; i++) {
            const cn_qstep *stp = &q->steps[i];
            if (!weighted_step(stp->op)) continue;
            cn_int8_layer *l = &rep->layers[k++];
            const cn_node *nd = &g->nodes[stp->node];
            snprintf(l->name, sizeof l->name, "%s", nd->name);
            l->op = step_op(stp->op);
            l->macs = cn_node_macs(g, nd);
            l->sqnr_db = s.noise[i] > 0 ? 10 * log10(s.sig[i] / s.noise[i]) : 200.0;
        }
        rep->nlayers = nl;
    }
    for (int t = 0; t < s.nt && s.ft; t++) free(s.ft[t]);
    free(s.ft), free(s.ftcap), free(s.sig), free(s.noise), free(s.lg);
    free(s.b0), free(s.bo), free(s.deq);
    cn_model_free(s.fm);
    return st;
}

static int find_node(const cn_graph *g, const char *name) {
    for (int i = 0; i < g->nnodes; i++)
        if ((g->nodes[i].op == CN_OP_CONV || g->nodes[i].op == CN_OP_LINEAR) &&
            !strcmp(g->nodes[i].name, name))
            return i;
    return -1;
}

/* keep[node] = 1 for each name of the comma-separated list (convolutions and linear layers) */
static cn_status mark_names(const cn_graph *g, const char *list, char *keep) {
    const char *p = list;
    while (p && *p) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        int found = 0;
        for (int i = 0; i < g->nnodes && len; i++) {
            const cn_node *nd = &g->nodes[i];
            if ((nd->op == CN_OP_CONV || nd->op == CN_OP_LINEAR) && strlen(nd->name) == len &&
                !strncmp(nd->name, p, len))
                keep[i] = 1, found = 1;
        }
        if (!found)
            return cn_error(CN_ERR_ARG, "--keep-float: no convolution or linear layer named '%.*s'",
                            (int)len, p);
        p = e ? e + 1 : NULL;
    }
    return CN_OK;
}

cn_status cn_quantize_int8(cn_model **out, const cn_model *m, const cn_int8_config *cfg,
                           cn_int8_report *rep) {
    if (!out || !m || !cfg) return cn_error(CN_ERR_ARG, "cn_quantize_int8: NULL argument");
    *out = NULL;
    if (rep) memset(rep, 0, sizeof *rep);
    if (cfg->auto_mixed < 0 || cfg->auto_mixed > 100000)
        return cn_error(CN_ERR_ARG, "--auto-mixed %d is out of range", cfg->auto_mixed);
    if ((rep || cfg->auto_mixed) && cfg->sensitivity_images < 1)
        return cn_error(CN_ERR_ARG, "the sensitivity report needs at least one image");
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
    int from_qat = m->qat != NULL, have_data = cfg->data && *cfg->data;
    if (!have_data && !from_qat) return cn_error(CN_ERR_ARG, "calibration needs --data");
    if (!have_data && (rep || cfg->auto_mixed))
        return cn_error(CN_ERR_ARG, "the sensitivity report needs --data");
    if (from_qat) cn_qat_weights_end((cn_model *)m);
    calib c;
    memset(&c, 0, sizeof c);
    cn_model *q = NULL;
    cn_qrange *ranges = NULL;
    cn_status st = CN_OK;
    if (from_qat) {
        /* the ranges quantization-aware training learned: no calibration */
        const cn_qat *qa = m->qat;
        if (!(ranges = calloc((size_t)qa->nt, sizeof *ranges)))
            st = cn_error(CN_ERR_NOMEM, "out of memory");
        for (int t = 0; st == CN_OK && t < qa->nt; t++) {
            if (!qa->point[t]) continue;
            if (!qa->init[t])
                st = cn_error(CN_ERR_ARG, "the QAT model has no range for tensor %d yet: train it "
                                          "for at least one step", t);
            ranges[t].lo = qa->lo[t], ranges[t].hi = qa->hi[t];
        }
        goto build;
    }
    st = cn_model_new_arch_nofuse(&c.m, &m->arch, m->threads);
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
build:
    if (st == CN_OK) st = cn_model_new_arch(&q, &m->arch, m->threads);
    if (st == CN_OK) st = cn_model_copy_state(q, m);
    char *keep = NULL;
    cn_int8_report local;
    memset(&local, 0, sizeof local);
    cn_int8_report *r = rep ? rep : &local;
    if (st == CN_OK && !(keep = calloc((size_t)q->g.nnodes + 1, 1)))
        st = cn_error(CN_ERR_NOMEM, "out of memory");
    if (st == CN_OK && cfg->keep_float) st = mark_names(&q->g, cfg->keep_float, keep);
    if (st == CN_OK) {
        free(q->mask);
        q->mask = NULL;
        st = cn_qnet_build(&q->qnet, &q->g, ranges, NULL);
    }
    if (st == CN_OK && (rep || cfg->auto_mixed)) st = sensitivity(m, cfg, q->qnet, r);
    if (st == CN_OK && cfg->auto_mixed) {
        /* the K lowest SQNRs join the named layers */
        char *taken = calloc((size_t)r->nlayers + 1, 1);
        if (!taken) st = cn_error(CN_ERR_NOMEM, "out of memory");
        for (int k = 0; st == CN_OK && k < cfg->auto_mixed && k < r->nlayers; k++) {
            int best = -1;
            for (int i = 0; i < r->nlayers; i++)
                if (!taken[i] && (best < 0 || r->layers[i].sqnr_db < r->layers[best].sqnr_db))
                    best = i;
            taken[best] = 1;
            int node = find_node(&q->g, r->layers[best].name);
            if (node >= 0) keep[node] = 1;
        }
        free(taken);
    }
    int nkeep = 0;
    for (int i = 0; keep && i < q->g.nnodes; i++) nkeep += keep[i];
    if (st == CN_OK && nkeep) {
        cn_qnet_free(q->qnet);
        q->qnet = NULL;
        st = cn_qnet_build(&q->qnet, &q->g, ranges, keep);
    }
    for (int i = 0; st == CN_OK && i < r->nlayers; i++) {
        int node = find_node(&q->g, r->layers[i].name);
        r->layers[i].kept_float = node >= 0 && keep[node];
        r->kept_float += r->layers[i].kept_float;
    }
    free(keep);
    cn_int8_report_free(&local);
    cn_model_free(c.m);
    free(c.lo), free(c.hi), free(c.hist), free(ranges);
    if (st != CN_OK) {
        if (rep) cn_int8_report_free(rep);
        cn_model_free(q);
        return st;
    }
    *out = q;
    return CN_OK;
}
