/* Fixed-point weight quantization: each convolution and linear weight tensor becomes b-bit
 * integers times 2^-f, f per tensor (see cn_quantize_fixed in convnet.h). The model keeps the
 * dequantized floats, so every op runs unchanged; the file stores the integers (graph/model.c). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/status.h"
#include "graph/model.h"

static int is_weight(cn_entry_kind k) {
    return k == CN_ENTRY_CONV_WEIGHT || k == CN_ENTRY_LINEAR_WEIGHT;
}

int cn_quant_frac_bits(double max_abs, int bits) {
    if (!(max_abs > 0) || bits < 2 || bits > 16) return 0;
    double qmax = (double)((1L << (bits - 1)) - 1);
    if (isinf(max_abs)) return CN_QUANT_FRAC_MIN;
    /* a first guess from the exponents, then exact comparisons (powers of two scale exactly) */
    int f = (int)floor(log2(qmax / max_abs));
    while (ldexp(max_abs, f) > qmax) f--;
    while (ldexp(max_abs, f + 1) <= qmax) f++;
    if (f < CN_QUANT_FRAC_MIN) f = CN_QUANT_FRAC_MIN;
    if (f > CN_QUANT_FRAC_MAX) f = CN_QUANT_FRAC_MAX;
    return f;
}

int cn_model_quant_bits(const cn_model *m) { return m && m->quant_frac ? m->quant_bits : 0; }

void cn_quant_report_free(cn_quant_report *rep) {
    if (!rep) return;
    free(rep->tensors);
    rep->tensors = NULL;
    rep->ntensors = 0;
}

cn_status cn_quantize_fixed(cn_model **out, const cn_model *m, int bits, cn_quant_report *rep) {
    if (!out || !m) return cn_error(CN_ERR_ARG, "cn_quantize_fixed: NULL argument");
    *out = NULL;
    if (rep) memset(rep, 0, sizeof *rep);
    if (bits < 2 || bits > 16)
        return cn_error(CN_ERR_ARG, "fixed-point quantization needs bits in [2, 16], not %d", bits);
    const cn_graph *g = &m->g;
    cn_model *q;
    CN_TRY(cn_model_new_arch(&q, &m->arch, m->threads));
    cn_status st = cn_model_copy_state(q, m);
    int nt = 0;
    for (int e = 0; e < g->nentries; e++) nt += is_weight(g->entries[e].kind);
    cn_quant_tensor *rows = NULL;
    if (st == CN_OK && !(q->quant_frac = malloc(sizeof(int) * (size_t)(g->nentries + 1))))
        st = cn_error(CN_ERR_NOMEM, "out of memory");
    if (st == CN_OK && rep && !(rows = calloc((size_t)nt + 1, sizeof *rows)))
        st = cn_error(CN_ERR_NOMEM, "out of memory");
    if (st != CN_OK) {
        cn_model_free(q);
        return st;
    }
    q->quant_bits = bits;
    const double lo = -(double)(1L << (bits - 1)), hi = (double)((1L << (bits - 1)) - 1);
    double sq_err = 0, sq_w = 0, max_err = 0;
    int64_t nq = 0, nf = 0, counters = 0;
    int k = 0;
    for (int e = 0; e < g->nentries; e++) {
        const cn_entry *en = &g->entries[e];
        q->quant_frac[e] = CN_QUANT_NONE;
        if (!is_weight(en->kind)) {
            if (en->kind == CN_ENTRY_NUM_BATCHES) counters += (int64_t)en->count;
            else nf += (int64_t)en->count;
            continue;
        }
        /* elementwise, so the internal layout (OHWI for convolutions) does not matter */
        float *w = q->g.params + en->offset;
        double amax = 0;
        for (size_t i = 0; i < en->count; i++) {
            if (!isfinite(w[i])) {
                st = cn_error(CN_ERR_ARG, "cannot quantize '%s': weight %zu is %g", en->name, i,
                              (double)w[i]);
                free(rows);
                cn_model_free(q);
                return st;
            }
            amax = fmax(amax, fabs((double)w[i]));
        }
        int f = cn_quant_frac_bits(amax, bits);
        double terr = 0, tw = 0, tmax = 0;
        for (size_t i = 0; i < en->count; i++) {
            double x = w[i];
            /* x * 2^f is exact in double; round() rounds half away from zero */
            double r = round(ldexp(x, f));
            r = r < lo ? lo : r > hi ? hi : r;
            if (r == 0) r = 0; /* no -0: the file's integer 0 reloads as +0 */
            float d = (float)ldexp(r, -f);
            double err = fabs((double)d - x);
            tmax = fmax(tmax, err);
            terr += err * err;
            tw += x * x;
            w[i] = d;
        }
        q->quant_frac[e] = f;
        nq += (int64_t)en->count;
        sq_err += terr;
        sq_w += tw;
        max_err = fmax(max_err, tmax);
        if (rows) {
            cn_quant_tensor *r = &rows[k];
            snprintf(r->name, sizeof r->name, "%s", en->name);
            r->frac_bits = f;
            r->count = (int64_t)en->count;
            r->max_abs_err = tmax;
            r->rel_rms_err = tw > 0 ? sqrt(terr / tw) : 0;
        }
        k++;
    }
    cn_graph_params_changed(&q->g);
    /* pruning masks stay valid: a zero weight quantizes to zero */
    if (rep) {
        rep->bits = bits;
        rep->ntensors = k;
        rep->tensors = rows;
        rep->max_abs_err = max_err;
        rep->rel_rms_err = sq_w > 0 ? sqrt(sq_err / sq_w) : 0;
        rep->quant_params = nq;
        rep->float_params = nf;
        rep->packed_bytes = (nq * bits + 7) / 8 + 4 * nf + 8 * counters;
    }
    *out = q;
    return CN_OK;
}
