/* Quantization-aware training: the float model trains with the int8 network's rounding in its
 * forward pass (fake quantization) and the straight-through estimator in its backward pass.
 *
 * Weights: every convolution and linear weight row (output channel) is rounded to 255 levels
 * of its own symmetric range, w_q = clamp(round(w / s), -127, 127) s with s = max|w_row| / 127,
 * for the forward and backward passes of a step; the optimizer updates the float master
 * weights with the gradient taken at w_q. Since a batch norm after the convolution scales each
 * output channel, these are the integers cn_quantize_int8 derives from the folded weights.
 * Activations: every tensor the int8 network quantizes with its own range (cn_qnet_points) is
 * rounded in place to the uint8 grid of its range; the range is a moving average of each
 * training batch's minimum and maximum (x <- x + 0.01 (batch - x), the first batch as is) and
 * stays fixed in evaluation. The gradient passes where the input was inside the range and is 0
 * where it was clipped. The ranges are saved with the model ("qat.act_lo", "qat.act_hi") and
 * cn_quantize_int8 uses them instead of calibrating. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "compress/qat.h"
#include "compress/qnet.h"
#include "core/status.h"
#include "graph/model.h"

#define EMA 0.01f

void cn_qat_free(cn_qat *q) {
    if (!q) return;
    for (int t = 0; t < q->nt && q->mask; t++) free(q->mask[t]);
    free(q->mask), free(q->mcap), free(q->point), free(q->lo), free(q->hi), free(q->init);
    free(q->master);
    free(q);
}

static void fq_forward(void *user, int t, float *x, size_t n, int train) {
    cn_qat *q = user;
    if (!q->point[t]) return;
    if (train) {
        float mn = INFINITY, mx = -INFINITY;
        for (size_t i = 0; i < n; i++) {
            mn = x[i] < mn ? x[i] : mn;
            mx = x[i] > mx ? x[i] : mx;
        }
        if (isfinite(mn) && isfinite(mx)) {
            if (!q->init[t]) q->lo[t] = mn, q->hi[t] = mx, q->init[t] = 1;
            else q->lo[t] += EMA * (mn - q->lo[t]), q->hi[t] += EMA * (mx - q->hi[t]);
        }
    }
    if (!q->init[t]) return; /* an evaluation before any training step: nothing to round to */
    float s;
    int32_t z;
    cn_qrange_params(q->lo[t], q->hi[t], &s, &z);
    const float lo = (float)(0 - z) * s, hi = (float)(255 - z) * s, inv = 1.0f / s;
    uint8_t *mask = NULL;
    if (train) {
        if (q->mcap[t] < n) {
            free(q->mask[t]);
            q->mask[t] = malloc(n);
            q->mcap[t] = q->mask[t] ? n : 0;
        }
        mask = q->mask[t];
    }
    for (size_t i = 0; i < n; i++) {
        float v = x[i];
        if (mask) mask[i] = v >= lo && v <= hi;
        float r = nearbyintf(v * inv) + (float)z;
        r = r < 0 ? 0 : r > 255 ? 255 : r;
        x[i] = (r - (float)z) * s;
    }
}

static void fq_backward(void *user, int t, float *g, size_t n) {
    cn_qat *q = user;
    if (!q->point[t] || !q->init[t] || !q->mask[t] || q->mcap[t] < n) return;
    const uint8_t *m = q->mask[t];
    for (size_t i = 0; i < n; i++) g[i] = m[i] ? g[i] : 0.0f;
}

cn_status cn_qat_enable(cn_model *m) {
    cn_graph *g = &m->g;
    if (!g->nofuse) return cn_error(CN_ERR_INTERNAL, "QAT needs a model without fusion");
    if (m->qat) return CN_OK;
    cn_qat *q = calloc(1, sizeof *q);
    if (!q) return cn_error(CN_ERR_NOMEM, "out of memory");
    q->nt = g->ntensors;
    q->point = calloc((size_t)q->nt, 1);
    q->lo = calloc((size_t)q->nt, sizeof(float));
    q->hi = calloc((size_t)q->nt, sizeof(float));
    q->init = calloc((size_t)q->nt, 1);
    q->mask = calloc((size_t)q->nt, sizeof(uint8_t *));
    q->mcap = calloc((size_t)q->nt, sizeof(size_t));
    q->master = malloc(sizeof(float) * (g->nparams + 1));
    cn_status st = q->point && q->lo && q->hi && q->init && q->mask && q->mcap && q->master
                 ? cn_qnet_points(g, q->point)
                 : cn_error(CN_ERR_NOMEM, "out of memory");
    if (st != CN_OK) {
        cn_qat_free(q);
        return st;
    }
    m->qat = q;
    g->fq = q;
    g->fq_fwd = fq_forward;
    g->fq_bwd = fq_backward;
    return CN_OK;
}

static int is_weight(cn_entry_kind k) {
    return k == CN_ENTRY_CONV_WEIGHT || k == CN_ENTRY_LINEAR_WEIGHT;
}

void cn_qat_weights_begin(cn_model *m) {
    cn_qat *q = m->qat;
    if (!q || q->weights_on) return;
    cn_graph *g = &m->g;
    memcpy(q->master, g->params, sizeof(float) * g->nparams);
    for (int e = 0; e < g->nentries; e++) {
        const cn_entry *en = &g->entries[e];
        if (!is_weight(en->kind)) continue;
        int rows = (int)en->shape[0];
        size_t k = en->count / (size_t)rows; /* one output channel's weights are contiguous */
        float *w = g->params + en->offset;
        for (int o = 0; o < rows; o++) {
            float *r = w + (size_t)o * k;
            double amax = 0;
            for (size_t j = 0; j < k; j++) amax = fmax(amax, fabs((double)r[j]));
            float s = (float)(amax > 0 ? amax / 127.0 : 1.0); /* as quantize_rows in qnet.c */
            for (size_t j = 0; j < k; j++) {
                double v = nearbyint((double)r[j] / (double)s);
                v = v < -127 ? -127 : v > 127 ? 127 : v;
                r[j] = (float)(v * s);
            }
        }
    }
    q->weights_on = 1;
    cn_graph_params_changed(g);
}

void cn_qat_weights_end(cn_model *m) {
    cn_qat *q = m->qat;
    if (!q || !q->weights_on) return;
    memcpy(m->g.params, q->master, sizeof(float) * m->g.nparams);
    q->weights_on = 0;
    cn_graph_params_changed(&m->g);
}

int cn_model_is_qat(const cn_model *m) { return m && m->qat; }
