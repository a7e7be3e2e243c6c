/* The int8 network (see qnet.h): its structure from the float graph, its parameters from a
 * float model and calibrated ranges (cn_qnet_build) or from a file (cn_qnet_load), and its
 * integer forward pass. */
#include "compress/qnet.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/mem.h"
#include "core/status.h"
#include "kernels/qops.h"
#include "ops/ops.h"

/* ---- the structure ---- */

const char *cn_qop_name(cn_qop op) {
    static const char *const names[] = {"quantize", "int8 conv", "int8 dwconv", "int8 add",
                                        "int8 mul", "int8 maxpool", "int8 gap", "int8 shortcut",
                                        "int8 table", "int8 linear"};
    return op >= 0 && op < CN_Q_NOPS ? names[op] : "?";
}

static int two_in(cn_op op) { return op == CN_OP_ADD || op == CN_OP_SCALE; }

/* the only consumer of t, or -1 */
static int sole(const cn_graph *g, int t) { return cn_graph_sole_consumer(g, t); }

static int is_act(cn_op op) { return op == CN_OP_RELU || op == CN_OP_SILU || op == CN_OP_SIGMOID; }

void cn_qnet_free(cn_qnet *q) {
    if (!q) return;
    for (int i = 0; i < q->nsteps; i++) {
        cn_qstep *s = &q->steps[i];
        free(s->w), free(s->wscale), free(s->bias), free(s->mult), free(s->shift);
        free(s->packed), free(s->params), free(s->wsum), free(s->fbias);
        free(s->fw), free(s->fb), free(s->fone);
    }
    free(q->steps);
    free(q->scale), free(q->zp), free(q->alias);
    for (int i = 0; i < q->npool; i++) free(q->pool[i]);
    free(q->pool), free(q->buf), free(q->workspace), free(q->logits), free(q->step_time);
    free(q->fuse);
    free(q->fin), free(q->fout), free(q->fws);
    free(q);
}

/* Walks the graph into steps; fills in/out/node/act_node/pre and the aliases. */
static cn_status plan_steps(cn_qnet *q) {
    const cn_graph *g = q->g;
    int nt = g->ntensors;
    q->steps = calloc((size_t)g->nnodes + 1, sizeof *q->steps);
    q->scale = calloc((size_t)nt, sizeof(float));
    q->zp = calloc((size_t)nt, sizeof(int32_t));
    q->alias = malloc(sizeof(int) * (size_t)nt);
    char *done = calloc((size_t)g->nnodes + 1, 1);
    if (!q->steps || !q->scale || !q->zp || !q->alias || !done) {
        free(done);
        return cn_error(CN_ERR_NOMEM, "out of memory");
    }
    for (int t = 0; t < nt; t++) q->alias[t] = t;
    cn_status st = CN_OK;
    for (int i = 0; i < g->nnodes && st == CN_OK; i++) {
        if (done[i]) continue;
        const cn_node *nd = &g->nodes[i];
        cn_qstep *s = &q->steps[q->nsteps];
        memset(s, 0, sizeof *s);
        s->node = i;
        s->act_node = -1;
        s->pre = -1;
        s->in[0] = nd->op == CN_OP_INPUT ? -1 : q->alias[nd->in[0]];
        s->in[1] = two_in(nd->op) ? q->alias[nd->in[1]] : -1;
        s->out = nd->out;
        int k;
        switch (nd->op) {
        case CN_OP_INPUT: s->op = CN_Q_QUANT; break;
        case CN_OP_CONV: {
            int cin = g->tensors[nd->in[0]].c, groups = nd->a.conv.groups;
            if (groups == 1) s->op = CN_Q_CONV;
            else if (groups == cin && groups == nd->a.conv.oc) s->op = CN_Q_DWCONV;
            else {
                st = cn_error(CN_ERR_UNSUPPORTED, "int8: '%s' is a grouped convolution (%d groups)",
                              nd->name, groups);
                break;
            }
            int cur = nd->out;
            if ((k = sole(g, cur)) >= 0 && g->nodes[k].op == CN_OP_BN) {
                done[k] = 1;
                cur = g->nodes[k].out;
            }
            if ((k = sole(g, cur)) >= 0 && is_act(g->nodes[k].op)) {
                done[k] = 1;
                s->act_node = k;
                if (g->nodes[k].op != CN_OP_RELU) s->pre = cur;
                cur = g->nodes[k].out;
            }
            s->out = cur;
            break;
        }
        case CN_OP_ADD:
            s->op = CN_Q_ADD;
            if ((k = sole(g, nd->out)) >= 0 && g->nodes[k].op == CN_OP_RELU) {
                done[k] = 1;
                s->act_node = k;
                s->out = g->nodes[k].out;
            }
            break;
        case CN_OP_SCALE: s->op = CN_Q_MUL; break;
        case CN_OP_RELU:
        case CN_OP_SILU:
        case CN_OP_SIGMOID:
            s->op = CN_Q_LUT;
            s->act_node = i;
            s->pre = s->in[0];
            break;
        case CN_OP_MAXPOOL: s->op = CN_Q_MAXPOOL; break;
        case CN_OP_GAP: s->op = CN_Q_GAP; break;
        case CN_OP_SHORTCUT_A: s->op = CN_Q_SHORTCUT; break;
        case CN_OP_LINEAR:
            s->op = CN_Q_LINEAR;
            if (nd->out != nt - 1)
                st = cn_error(CN_ERR_UNSUPPORTED, "int8: the linear layer '%s' is not the last op",
                              nd->name);
            break;
        case CN_OP_DROPOUT:
        case CN_OP_DROPPATH:
            q->alias[nd->out] = q->alias[nd->in[0]];
            continue;
        case CN_OP_FLATTEN: /* of a 1x1 map (checked by the plan) */
            q->alias[nd->out] = q->alias[nd->in[0]];
            continue;
        default:
            st = cn_error(CN_ERR_UNSUPPORTED, "int8: no integer version of a %s ('%s') here",
                          cn_op_name(nd->op), nd->name);
            break;
        }
        done[i] = 1;
        q->nsteps++;
    }
    free(done);
    if (st == CN_OK && (q->nsteps == 0 || q->steps[q->nsteps - 1].op != CN_Q_LINEAR))
        st = cn_error(CN_ERR_UNSUPPORTED, "int8: the model does not end with a linear layer");
    return st;
}

cn_status cn_qnet_points(cn_graph *g, uint8_t *point) {
    cn_qnet q;
    memset(&q, 0, sizeof q);
    q.g = g;
    cn_status st = plan_steps(&q);
    memset(point, 0, (size_t)g->ntensors);
    for (int i = 0; st == CN_OK && i < q.nsteps; i++) {
        const cn_qstep *s = &q.steps[i];
        if (s->op != CN_Q_MAXPOOL && s->op != CN_Q_SHORTCUT && s->op != CN_Q_LINEAR)
            point[s->out] = 1;
        if (s->pre >= 0) point[s->pre] = 1;
    }
    free(q.steps), free(q.scale), free(q.zp), free(q.alias);
    return st;
}

/* ---- parameters derived from the scales ---- */

static float act_fn(cn_op op, float x) {
    if (op == CN_OP_RELU) return x > 0 ? x : 0;
    if (op == CN_OP_SIGMOID) return 1.0f / (1.0f + expf(-x));
    return x / (1.0f + expf(-x)); /* SiLU */
}

static int32_t clamp_u8(double v) { return v < 0 ? 0 : v > 255 ? 255 : (int32_t)v; }

static void make_lut(uint8_t *lut, cn_op op, float s_in, int32_t z_in, float s_out, int32_t z_out) {
    for (int v = 0; v < 256; v++) {
        float x = (float)(v - z_in) * s_in;
        double y = (double)act_fn(op, x) / s_out + z_out;
        lut[v] = (uint8_t)clamp_u8(nearbyint(y));
    }
}

/* a requantization multiplier the integer steps can apply (and one that sane scales give) */
static cn_status check_mult(double m, const char *where, const char *path) {
    if (m >= 0 && m < 16777216.0) return CN_OK;
    if (path)
        return cn_error(CN_ERR_FORMAT, "%s: the scales around '%s' give a requantization "
                                       "multiplier of %g (at most 2^24)", path, where, m);
    return cn_error(CN_ERR_ARG, "int8: the scales around '%s' give a requantization multiplier of "
                                "%g (at most 2^24)", where, m);
}

/* mult/shift, packing and tables from the weights and scales; used after build and load (path:
 * the file, for messages) */
static cn_status derive(cn_qnet *q, const char *path) {
    const cn_graph *g = q->g;
    for (int i = 0; i < q->nsteps; i++) {
        cn_qstep *s = &q->steps[i];
        const cn_node *nd = &g->nodes[s->node];
        float si = s->in[0] >= 0 ? q->scale[s->in[0]] : 0, so = q->scale[s->out];
        int32_t zo = q->zp[s->out];
        s->qmin = 0;
        s->qmax = 255;
        switch (s->op) {
        case CN_Q_CONV:
        case CN_Q_DWCONV: {
            if (s->fp) break;
            float sq = s->pre >= 0 ? q->scale[s->pre] : so; /* what the requantization targets */
            int32_t zq = s->pre >= 0 ? q->zp[s->pre] : zo;
            for (int o = 0; o < s->oc; o++) {
                double mo = (double)si * s->wscale[o] / sq;
                CN_TRY(check_mult(mo, nd->name, path));
                cn_quantize_multiplier(mo, &s->mult[o], &s->shift[o]);
            }
            s->has_lut = s->pre >= 0;
            if (s->has_lut) make_lut(s->lut, g->nodes[s->act_node].op, sq, zq, so, zo);
            if (s->act_node >= 0 && g->nodes[s->act_node].op == CN_OP_RELU) s->qmin = zo;
            s->ep = (cn_qepilogue){.bias = s->bias, .mult = s->mult, .shift = s->shift,
                                   .zp_out = zq, .qmin = s->qmin, .qmax = s->qmax,
                                   .lut = s->has_lut ? s->lut : NULL};
            const cn_tensor *x = &g->tensors[nd->in[0]];
            int kk = nd->a.conv.k, sd = nd->a.conv.stride, pd = nd->a.conv.pad;
            s->desc = (cn_qconv_desc){0, 0, 0, x->c, s->oc, kk, kk, sd, sd, pd, pd, 0, 0,
                                      q->zp[s->in[0]]};
            free(s->packed);
            if (s->op == CN_Q_CONV) {
                /* 64-byte aligned: the GEMM loads each 64 weights of a k step as one line */
                const size_t pb = cn_qconv_packed_size(s->oc, kk, kk, x->c);
                if (!(s->packed = cn_alloc64(pb)))
                    return cn_error(CN_ERR_NOMEM, "out of memory");
                cn_qconv_pack(s->packed, s->w, s->oc, kk, kk, x->c);
            } else {
                /* depthwise: (c, kh*kw) rows -> (kh, kw, c), the channel innermost */
                int8_t *t = malloc((size_t)s->oc * s->k + 1);
                if (!(s->packed = t)) return cn_error(CN_ERR_NOMEM, "out of memory");
                for (int c = 0; c < s->oc; c++)
                    for (int j = 0; j < s->k; j++) t[(size_t)j * s->oc + c] = s->w[(size_t)c * s->k + j];
            }
            free(s->params);
            if (!(s->params = malloc(cn_qconv_params_size(s->oc))))
                return cn_error(CN_ERR_NOMEM, "out of memory");
            cn_qconv_prepare(s->params, s->op == CN_Q_CONV ? s->packed : NULL, &s->desc, &s->ep);
            s->ep.params = s->params;
            break;
        }
        case CN_Q_ADD: {
            CN_TRY(check_mult((double)q->scale[s->in[0]] / so, "a residual add", path));
            CN_TRY(check_mult((double)q->scale[s->in[1]] / so, "a residual add", path));
            cn_q_add_params(q->scale[s->in[0]], q->scale[s->in[1]], so, &s->m[0], &s->m[1],
                            &s->s[0]);
            if (s->act_node >= 0) s->qmin = zo;
            break;
        }
        case CN_Q_MUL:
            CN_TRY(check_mult((double)si * q->scale[s->in[1]] / so, "a squeeze-and-excitation "
                                                                    "product", path));
            cn_q_mul_params((double)si * q->scale[s->in[1]] / so, &s->m[0], &s->s[0]);
            break;
        case CN_Q_LUT:
            make_lut(s->lut, nd->op, si, q->zp[s->in[0]], so, zo);
            s->has_lut = 1;
            break;
        case CN_Q_LINEAR:
            for (int o = 0; o < s->oc && !s->fp; o++) {
                int32_t sum = 0;
                for (int j = 0; j < s->k; j++) sum += s->w[(size_t)o * s->k + j];
                s->wsum[o] = sum;
            }
            break;
        default: break;
        }
    }
    return CN_OK;
}

static void range_params(cn_qrange r, float *scale, int32_t *zp);

void cn_qrange_params(float lo, float hi, float *scale, int32_t *zp) {
    cn_qrange r = {lo, hi};
    range_params(r, scale, zp);
}

/* scale and zero point of a range (widened to contain 0) */
static void range_params(cn_qrange r, float *scale, int32_t *zp) {
    double lo = r.lo < 0 ? r.lo : 0, hi = r.hi > 0 ? r.hi : 0;
    double s = (hi - lo) / 255.0;
    if (!(s >= CN_QSCALE_MIN)) s = CN_QSCALE_MIN; /* an (almost) constant tensor */
    int32_t z = clamp_u8(nearbyint(-lo / s));
    *scale = (float)s;
    *zp = z;
}

static cn_status alloc_step(cn_qstep *s, int oc, int k, int linear) {
    s->oc = oc;
    s->k = k;
    s->w = malloc((size_t)oc * k + 1);
    s->wscale = malloc(sizeof(float) * oc);
    s->mult = malloc(sizeof(int32_t) * oc);
    s->shift = malloc(sizeof(int32_t) * oc);
    if (linear) {
        s->wsum = malloc(sizeof(int32_t) * oc);
        s->fbias = malloc(sizeof(float) * oc);
    } else {
        s->bias = malloc(sizeof(int32_t) * oc);
    }
    if (!s->w || !s->wscale || !s->mult || !s->shift || (linear ? !s->wsum || !s->fbias : !s->bias))
        return cn_error(CN_ERR_NOMEM, "out of memory");
    return CN_OK;
}

static cn_status alloc_fp(cn_qstep *s, int oc, int k) {
    s->fw = malloc(sizeof(float) * ((size_t)oc * k + 1));
    s->fb = malloc(sizeof(float) * (size_t)oc);
    s->fone = malloc(sizeof(float) * (size_t)oc);
    if (!s->fw || !s->fb || !s->fone) return cn_error(CN_ERR_NOMEM, "out of memory");
    for (int o = 0; o < oc; o++) s->fone[o] = 1.0f;
    return CN_OK;
}

/* per output channel symmetric int8 of w (oc rows of k), the row scales in ws */
static void quantize_rows(int8_t *q, float *ws, const double *w, int oc, int k) {
    for (int o = 0; o < oc; o++) {
        double amax = 0;
        for (int j = 0; j < k; j++) amax = fmax(amax, fabs(w[(size_t)o * k + j]));
        double s = amax > 0 ? amax / 127.0 : 1.0;
        ws[o] = (float)s;
        for (int j = 0; j < k; j++) {
            double v = nearbyint(w[(size_t)o * k + j] / (double)ws[o]);
            q[(size_t)o * k + j] = (int8_t)(v < -127 ? -127 : v > 127 ? 127 : v);
        }
    }
}

static int32_t sat_i32(double v) {
    return v >= 2147483647.0 ? INT32_MAX : v <= -2147483648.0 ? INT32_MIN : (int32_t)v;
}

cn_status cn_qnet_build(cn_qnet **out, cn_graph *g, const cn_qrange *ranges, const char *keep) {
    *out = NULL;
    cn_qnet *q = calloc(1, sizeof *q);
    if (!q) return cn_error(CN_ERR_NOMEM, "out of memory");
    q->g = g;
    cn_status st = plan_steps(q);
    for (int i = 0; i < q->nsteps && st == CN_OK; i++) {
        cn_qstep *s = &q->steps[i];
        const cn_node *nd = &g->nodes[s->node];
        /* the output's scale: its own range, or its input's for ops that move values only */
        if (s->op == CN_Q_MAXPOOL || s->op == CN_Q_SHORTCUT) {
            q->scale[s->out] = q->scale[s->in[0]];
            q->zp[s->out] = q->zp[s->in[0]];
        } else if (s->op != CN_Q_LINEAR) {
            range_params(ranges[s->out], &q->scale[s->out], &q->zp[s->out]);
        }
        if (s->pre >= 0 && s->op != CN_Q_LUT)
            range_params(ranges[s->pre], &q->scale[s->pre], &q->zp[s->pre]);
        if (s->op != CN_Q_CONV && s->op != CN_Q_DWCONV && s->op != CN_Q_LINEAR) continue;
        const cn_tensor *x = &g->tensors[nd->in[0]];
        int oc = s->op == CN_Q_LINEAR ? nd->a.linear.oc : nd->a.conv.oc;
        int k = s->op == CN_Q_LINEAR ? (int)g->entries[nd->p[0]].shape[1]
              : s->op == CN_Q_DWCONV ? nd->a.conv.k * nd->a.conv.k
                                     : nd->a.conv.k * nd->a.conv.k * x->c;
        if ((st = alloc_step(s, oc, k, s->op == CN_Q_LINEAR)) != CN_OK) break;
        /* the folded float weights (oc, k) in the order the kernels take, and biases */
        double *wf = malloc(sizeof(double) * (size_t)oc * k), *bf = calloc((size_t)oc, sizeof(double));
        if (!wf || !bf) {
            free(wf), free(bf);
            st = cn_error(CN_ERR_NOMEM, "out of memory");
            break;
        }
        const float *w = cn_entry_data(g, nd->p[0]);
        const float *b = nd->p[1] >= 0 ? cn_entry_data(g, nd->p[1]) : NULL;
        for (size_t j = 0; j < (size_t)oc * k; j++) wf[j] = w[j]; /* OHWI, (C,KH,KW), (OC,K) */
        for (int o = 0; o < oc; o++) bf[o] = b ? b[o] : 0;
        int bn = s->op == CN_Q_LINEAR ? -1 : sole(g, nd->out);
        if (bn >= 0 && g->nodes[bn].op == CN_OP_BN) {
            const cn_node *bd = &g->nodes[bn];
            const float *gam = cn_entry_data(g, bd->p[0]), *bet = cn_entry_data(g, bd->p[1]);
            const float *rm = cn_entry_data(g, bd->buf[0]), *rv = cn_entry_data(g, bd->buf[1]);
            for (int o = 0; o < oc; o++) {
                double sc = gam[o] / sqrt((double)rv[o] + bd->a.bn.eps);
                for (int j = 0; j < k; j++) wf[(size_t)o * k + j] *= sc;
                bf[o] = (bf[o] - rm[o]) * sc + bet[o];
            }
        }
        for (size_t j = 0; j < (size_t)oc * k; j++)
            if (!isfinite(wf[j])) {
                st = cn_error(CN_ERR_ARG, "int8: '%s' has a weight that is not finite", nd->name);
                break;
            }
        if (st == CN_OK && keep && keep[s->node]) {
            s->fp = 1;
            st = alloc_fp(s, oc, k);
            for (size_t j = 0; st == CN_OK && j < (size_t)oc * k; j++) s->fw[j] = (float)wf[j];
            for (int o = 0; st == CN_OK && o < oc; o++) s->fb[o] = (float)bf[o];
        }
        if (st == CN_OK) {
            quantize_rows(s->w, s->wscale, wf, oc, k);
            float si = q->scale[s->in[0]];
            for (int o = 0; o < oc; o++) {
                if (s->op == CN_Q_LINEAR) s->fbias[o] = (float)bf[o];
                else s->bias[o] = sat_i32(nearbyint(bf[o] / ((double)si * s->wscale[o])));
            }
        }
        free(wf), free(bf);
    }
    if (st == CN_OK) st = derive(q, NULL);
    if (st != CN_OK) {
        cn_qnet_free(q);
        return st;
    }
    *out = q;
    return CN_OK;
}

/* ---- running ---- */

static size_t tensor_bytes(const cn_graph *g, int t, int n) {
    const cn_tensor *x = &g->tensors[t];
    return (size_t)n * x->h * x->w * x->c;
}

/* Shapes at (h, w) and storage for a batch: a buffer is reused once every reader of the tensor
 * in it has run (best fit among the free ones). */
static cn_status qplan(cn_qnet *q, int batch, int h, int w, int threads) {
    cn_graph *g = q->g;
    if (g->tensors[0].h != h || g->tensors[0].w != w) CN_TRY(cn_graph_shapes(g, h, w));
    if (q->buf && q->batch >= batch && q->h == h && q->w == w && q->threads == threads)
        return CN_OK;
    for (int i = 0; i < q->npool; i++) free(q->pool[i]);
    free(q->pool), free(q->buf), free(q->workspace), free(q->logits), free(q->fuse);
    q->pool = NULL, q->buf = NULL, q->workspace = NULL, q->logits = NULL, q->fuse = NULL;
    q->npool = 0;
    int nt = g->ntensors;
    int *last = malloc(sizeof(int) * (size_t)nt);
    size_t *cap = calloc((size_t)q->nsteps + 1, sizeof(size_t));
    char *busy = calloc((size_t)q->nsteps + 1, 1);
    int *owner = malloc(sizeof(int) * (size_t)nt);
    q->buf = calloc((size_t)nt, sizeof(uint8_t *));
    q->pool = calloc((size_t)q->nsteps + 1, sizeof(uint8_t *));
    q->fuse = calloc((size_t)q->nsteps + 1, 1);
    const cn_tensor *lo = &g->tensors[nt - 1];
    q->logits = malloc(sizeof(float) * (size_t)batch * lo->c + 1);
    cn_status st = CN_OK;
    if (!last || !cap || !busy || !owner || !q->buf || !q->pool || !q->logits || !q->fuse)
        st = cn_error(CN_ERR_NOMEM, "out of memory");
    size_t ws = 0;
    for (int i = 0; st == CN_OK && i < q->nsteps; i++) {
        cn_qstep *s = &q->steps[i];
        const cn_node *nd = &g->nodes[s->node];
        if (s->op == CN_Q_LINEAR) {
            const cn_tensor *x = &g->tensors[s->in[0]];
            if ((int64_t)x->h * x->w * x->c != s->k)
                st = cn_error(CN_ERR_SHAPE, "int8: '%s' takes %d features, its input has %dx%dx%d",
                              nd->name, s->k, x->h, x->w, x->c);
        }
        if (s->op == CN_Q_GAP) { /* the mean over the map's pixels, whose number is known now */
            const cn_tensor *x = &g->tensors[s->in[0]];
            cn_quantize_multiplier((double)q->scale[s->in[0]] /
                                       ((double)x->h * x->w * q->scale[s->out]),
                                   &s->m[0], &s->s[0]);
        }
        if (s->op == CN_Q_CONV || s->op == CN_Q_DWCONV) {
            const cn_tensor *x = &g->tensors[s->in[0]];
            s->desc.n = batch, s->desc.h = x->h, s->desc.w = x->w;
            s->desc.oh = nd->desc.oh, s->desc.ow = nd->desc.ow;
            if (!s->fp) {
                size_t b = s->op == CN_Q_CONV ? cn_qconv_workspace(&s->desc, threads)
                                              : cn_qdwconv_workspace(&s->desc, threads);
                if (b > ws) ws = b;
            }
        }
    }
    size_t fin = 0, fout = 0, fws = 0;
    for (int i = 0; st == CN_OK && i < q->nsteps; i++) {
        const cn_qstep *s = &q->steps[i];
        if (!s->fp) continue;
        const cn_node *nd = &g->nodes[s->node];
        size_t a = tensor_bytes(g, s->in[0], batch), b = tensor_bytes(g, s->out, batch);
        fin = a > fin ? a : fin;
        fout = b > fout ? b : fout;
        if (s->op != CN_Q_LINEAR) {
            cn_conv_desc d = nd->desc;
            d.n = batch;
            size_t k = cn_conv2d_workspace(&d, threads, 0);
            fws = k > fws ? k : fws;
        }
    }
    free(q->fin), free(q->fout), free(q->fws);
    q->fin = q->fout = q->fws = NULL;
    if (st == CN_OK && fin &&
        (!(q->fin = malloc(sizeof(float) * fin)) || !(q->fout = malloc(sizeof(float) * fout + 4)) ||
         !(q->fws = malloc(sizeof(float) * fws + 64))))
        st = cn_error(CN_ERR_NOMEM, "out of memory for the float32 layers");
    if (st == CN_OK && ws && !(q->workspace = malloc(ws))) st = cn_error(CN_ERR_NOMEM, "out of memory");
    q->ws_bytes = ws;
    if (st == CN_OK) {
        for (int t = 0; t < nt; t++) last[t] = -1;
        int *readers = owner; /* (as a count, before its use below) */
        for (int t = 0; t < nt; t++) readers[t] = 0;
        for (int i = 0; i < q->nsteps; i++)
            for (int j = 0; j < 2; j++)
                if (q->steps[i].in[j] >= 0) last[q->steps[i].in[j]] = i, readers[q->steps[i].in[j]]++;
        /* a convolution whose output only its residual add reads takes the add into its
         * epilogue; writing the add's output then, it must not reuse its own input's storage */
        for (int i = 0; i + 1 < q->nsteps; i++) {
            const cn_qstep *s = &q->steps[i], *a = &q->steps[i + 1];
            if ((s->op != CN_Q_CONV && s->op != CN_Q_DWCONV) || s->fp || a->op != CN_Q_ADD ||
                a->in[0] == a->in[1] || (a->in[0] != s->out && a->in[1] != s->out) ||
                readers[s->out] != 1)
                continue;
            q->fuse[i] = 1;
            if (last[s->in[0]] == i) last[s->in[0]] = i + 1;
        }
        for (int t = 0; t < nt; t++) owner[t] = -1;
        for (int i = 0; st == CN_OK && i < q->nsteps; i++) {
            cn_qstep *s = &q->steps[i];
            if (s->op == CN_Q_LINEAR) continue;
            size_t need = tensor_bytes(g, s->out, batch);
            int best = -1;
            for (int b = 0; b < q->npool; b++)
                if (!busy[b] && cap[b] >= need && (best < 0 || cap[b] < cap[best])) best = b;
            if (best < 0) {
                best = q->npool;
                /* 64-byte aligned: the kernels' 64-byte rows then never straddle cache lines */
                if (!(q->pool[best] = cn_alloc64(need + 64))) {
                    st = cn_error(CN_ERR_NOMEM, "out of memory for the int8 activations");
                    break;
                }
                cap[best] = need;
                q->npool++;
            }
            busy[best] = 1;
            owner[s->out] = best;
            q->buf[s->out] = q->pool[best];
            for (int j = 0; j < 2; j++) {
                int t = s->in[j];
                if (t >= 0 && last[t] == i && owner[t] >= 0 && t != s->out) busy[owner[t]] = 0;
            }
        }
    }
    free(last), free(cap), free(busy), free(owner);
    if (st != CN_OK) {
        for (int i = 0; i < q->npool; i++) free(q->pool[i]);
        free(q->pool), free(q->buf), free(q->workspace), free(q->logits), free(q->fuse);
        q->pool = NULL, q->buf = NULL, q->workspace = NULL, q->logits = NULL, q->fuse = NULL;
        q->npool = 0;
        return st;
    }
    q->batch = batch, q->h = h, q->w = w, q->threads = threads;
    return CN_OK;
}

static cn_act act_kind(const cn_graph *g, int node) {
    if (node < 0) return CN_ACT_NONE;
    cn_op op = g->nodes[node].op;
    return op == CN_OP_RELU ? CN_ACT_RELU : op == CN_OP_SILU ? CN_ACT_SILU
         : op == CN_OP_SIGMOID ? CN_ACT_SIGMOID : CN_ACT_NONE;
}

/* a step kept in float32: dequantize, the float kernel, quantize (or the float logits) */
static void run_fp(cn_qnet *q, cn_qstep *s, const uint8_t *in, uint8_t *out, float *logits, int n,
                   int threads) {
    const cn_graph *g = q->g;
    const cn_node *nd = &g->nodes[s->node];
    const cn_tensor *ti = &g->tensors[s->in[0]], *to = &g->tensors[s->out];
    size_t nin = (size_t)n * ti->h * ti->w * ti->c;
    cn_q_dequantize(q->fin, in, nin, q->scale[s->in[0]], q->zp[s->in[0]], threads);
    if (s->op == CN_Q_LINEAR) {
        cn_linear_forward(logits, q->fin, s->fw, s->fb, n, s->k, s->oc);
        return;
    }
    cn_conv_desc d = nd->desc;
    d.n = n;
    cn_epilogue ep = {s->fone, s->fb, NULL, act_kind(g, s->act_node), NULL};
    cn_conv2d_forward_fused(q->fout, q->fin, s->fw, &ep, &d, q->fws, threads);
    cn_q_quantize(out, q->fout, (size_t)n * to->h * to->w * to->c, q->scale[s->out], q->zp[s->out],
                  threads);
}

void cn_qnet_run_step(cn_qnet *q, int i, const float *x, const uint8_t *in, const uint8_t *in1,
                      uint8_t *out, float *logits, int n, int threads) {
    const cn_graph *g = q->g;
    cn_qstep *s = &q->steps[i];
    const cn_node *nd = &g->nodes[s->node];
    const cn_tensor *ti = s->in[0] >= 0 ? &g->tensors[s->in[0]] : NULL;
    const cn_tensor *to = &g->tensors[s->out];
    int32_t zi = s->in[0] >= 0 ? q->zp[s->in[0]] : 0, zo = q->zp[s->out];
    if (s->fp) {
        run_fp(q, s, in, out, logits, n, threads);
        return;
    }
    switch (s->op) {
    case CN_Q_QUANT:
        cn_q_quantize(out, x, tensor_bytes(g, s->out, n), q->scale[s->out], zo, threads);
        break;
    case CN_Q_CONV:
    case CN_Q_DWCONV: {
        cn_qconv_desc d = s->desc;
        d.n = n;
        if (s->op == CN_Q_CONV) cn_qconv2d(out, in, s->packed, &d, &s->ep, q->workspace, threads);
        else cn_qdwconv2d(out, in, s->packed, &d, &s->ep, q->workspace, threads);
        break;
    }
    case CN_Q_ADD:
        cn_q_add(out, in, in1, tensor_bytes(g, s->out, n), zi, q->zp[s->in[1]], zo, s->m[0],
                 s->m[1], s->s[0], s->qmin, s->qmax, threads);
        break;
    case CN_Q_MUL:
        cn_q_mul(out, in, in1, n, (size_t)ti->h * ti->w, ti->c, zi, q->zp[s->in[1]], zo, s->m[0],
                 s->s[0], threads);
        break;
    case CN_Q_MAXPOOL:
        cn_q_maxpool(out, in, n, ti->h, ti->w, ti->c, nd->a.pool.k, nd->a.pool.stride,
                     nd->a.pool.pad, to->h, to->w, threads);
        break;
    case CN_Q_GAP:
        cn_q_gap(out, in, n, ti->h * ti->w, ti->c, zi, zo, s->m[0], s->s[0], threads);
        break;
    case CN_Q_SHORTCUT:
        cn_q_shortcut(out, in, n, ti->h, ti->w, ti->c, to->h, to->w, to->c, nd->a.shortcut.stride,
                      (uint8_t)zo);
        break;
    case CN_Q_LUT: cn_q_lut(out, in, tensor_bytes(g, s->out, n), s->lut, threads); break;
    case CN_Q_LINEAR:
        cn_q_linear(logits, in, s->w, s->wsum, s->wscale, s->fbias, n, s->k, s->oc, zi,
                    q->scale[s->in[0]]);
        break;
    case CN_Q_NOPS: break;
    }
}

cn_status cn_qnet_plan(cn_qnet *q, int batch, int h, int w, int threads) {
    return qplan(q, batch, h, w, threads);
}

/* Convolution step i with the residual add step i + 1 in its epilogue (q->fuse[i]). */
static void run_fused(cn_qnet *q, int i, int n, int threads) {
    const cn_qstep *s = &q->steps[i], *a = &q->steps[i + 1];
    const int j = a->in[0] == s->out ? 0 : 1, r = a->in[1 - j];
    cn_qepilogue ep = s->ep;
    ep.res = q->buf[r];
    ep.add = (cn_qadd){.za = q->zp[s->out], .zb = q->zp[r], .zo = q->zp[a->out],
                       .ma = a->m[j], .mb = a->m[1 - j], .sh = a->s[0],
                       .qmin = a->qmin, .qmax = a->qmax};
    cn_qconv_desc d = s->desc;
    d.n = n;
    if (s->op == CN_Q_CONV)
        cn_qconv2d(q->buf[a->out], q->buf[s->in[0]], s->packed, &d, &ep, q->workspace, threads);
    else
        cn_qdwconv2d(q->buf[a->out], q->buf[s->in[0]], s->packed, &d, &ep, q->workspace, threads);
}

cn_status cn_qnet_forward(cn_qnet *q, const float *x, int n, int h, int w, int threads,
                          float *logits) {
    CN_TRY(qplan(q, q->buf && q->h == h && q->w == w && q->batch >= n ? q->batch : n, h, w,
                 threads));
    const cn_graph *g = q->g;
    for (int i = 0; i < q->nsteps; i++) {
        cn_qstep *s = &q->steps[i];
        double t0 = q->step_time ? omp_get_wtime() : 0;
        uint8_t *out = s->op == CN_Q_LINEAR ? NULL : q->buf[s->out];
        const int fused = q->fuse[i] && !q->observe; /* (observing needs every step's output) */
        if (fused)
            run_fused(q, i, n, threads);
        else
            cn_qnet_run_step(q, i, x, s->in[0] >= 0 ? q->buf[s->in[0]] : NULL,
                             s->in[1] >= 0 ? q->buf[s->in[1]] : NULL, out, q->logits, n, threads);
        if (q->step_time) {
            double dt = omp_get_wtime() - t0;
            q->step_time[i] += dt;
            if (g->node_time) g->node_time[2 * s->node] += dt;
        }
        i += fused; /* the add ran inside the convolution */
        if (q->observe)
            q->observe(q->observe_user, i, out ? (const void *)out : (const void *)q->logits,
                       out ? tensor_bytes(g, s->out, n) : (size_t)n * s->oc);
    }
    if (logits) memcpy(logits, q->logits, sizeof(float) * (size_t)n * g->tensors[g->ntensors - 1].c);
    return CN_OK;
}

int64_t cn_qnet_bytes(const cn_qnet *q) {
    int64_t b = 0;
    for (int i = 0; i < q->nsteps; i++) {
        const cn_qstep *s = &q->steps[i];
        if (s->op == CN_Q_CONV || s->op == CN_Q_DWCONV || s->op == CN_Q_LINEAR)
            b += (int64_t)s->oc * s->k + 8 * (int64_t)s->oc;
    }
    return b + 8 * (int64_t)q->g->ntensors;
}

/* ---- the file form ----
 * Per convolution or linear layer "<name>": "<name>.weight" int8 in torchvision's layout (OIHW,
 * depthwise (C, 1, KH, KW), linear (OC, K)), "<name>.weight_scale" float32 (OC), "<name>.bias"
 * int32 (OC, accumulator units; float32 for the linear layer, whose logits are float). The
 * activations: "quant.act_scale" float32 and "quant.act_zero_point" int32, one per tensor of the
 * graph (0 for tensors that are not quantized). Everything the kernels derive (multipliers,
 * shifts, tables, packed weights) is recomputed on load. */

/* A dense convolution's weights between the kernels' layout (OC, KH*KW, C) and the file's
 * (OC, C, KH*KW), elements of es bytes; to_file picks the direction. */
static void relayout(void *dst, const void *src, int oc, int c, int kk, size_t es, int to_file) {
    char *d = dst;
    const char *x = src;
    for (int o = 0; o < oc; o++)
        for (int p = 0; p < kk; p++)
            for (int ch = 0; ch < c; ch++) {
                size_t kern = ((size_t)o * kk + p) * c + ch, file = ((size_t)o * c + ch) * kk + p;
                memcpy(d + es * (to_file ? file : kern), x + es * (to_file ? kern : file), es);
            }
}

static int weighted(cn_qop op) { return op == CN_Q_CONV || op == CN_Q_DWCONV || op == CN_Q_LINEAR; }

static void file_shape(const cn_qnet *q, const cn_qstep *s, int64_t *shape, int *nd) {
    const cn_node *n = &q->g->nodes[s->node];
    if (s->op == CN_Q_LINEAR) {
        shape[0] = s->oc, shape[1] = s->k, *nd = 2;
    } else {
        int k = n->a.conv.k;
        shape[0] = s->oc, shape[1] = s->op == CN_Q_DWCONV ? 1 : q->g->tensors[n->in[0]].c;
        shape[2] = k, shape[3] = k, *nd = 4;
    }
}

cn_status cn_qnet_add_state(const cn_qnet *q, cn_st_writer *w, void **scratch) {
    const cn_graph *g = q->g;
    size_t ftotal = 0, itotal = 0; /* transposed copies: float32 layers, then int8 ones */
    for (int i = 0; i < q->nsteps; i++)
        if (q->steps[i].op == CN_Q_CONV)
            *(q->steps[i].fp ? &ftotal : &itotal) += (size_t)q->steps[i].oc * q->steps[i].k;
    float *block = malloc(sizeof(float) * ftotal + itotal + 1);
    *scratch = block;
    if (!block) return cn_error(CN_ERR_NOMEM, "out of memory");
    float *ftmp = block;
    int8_t *tmp = (int8_t *)(block + ftotal);
    char name[CN_NAME_MAX + 32];
    for (int i = 0; i < q->nsteps; i++) {
        const cn_qstep *s = &q->steps[i];
        if (!weighted(s->op)) continue;
        const cn_node *nd = &g->nodes[s->node];
        int64_t shape[4];
        int ndim;
        file_shape(q, s, shape, &ndim);
        int64_t oc = s->oc;
        if (s->fp) { /* float32 weights (OHWI -> OIHW) and biases */
            const float *fw = s->fw;
            if (s->op == CN_Q_CONV) {
                relayout(ftmp, s->fw, s->oc, (int)shape[1], (int)(shape[2] * shape[3]), 4, 1);
                fw = ftmp;
                ftmp += (size_t)s->oc * s->k;
            }
            snprintf(name, sizeof name, "%s.weight", nd->name);
            CN_TRY(cn_st_writer_add(w, name, CN_DT_F32, ndim, shape, fw));
            snprintf(name, sizeof name, "%s.bias", nd->name);
            CN_TRY(cn_st_writer_add(w, name, CN_DT_F32, 1, &oc, s->fb));
            continue;
        }
        const int8_t *wd = s->w;
        if (s->op == CN_Q_CONV) {
            relayout(tmp, s->w, s->oc, (int)shape[1], (int)(shape[2] * shape[3]), 1, 1);
            wd = tmp;
            tmp += (size_t)s->oc * s->k;
        }
        snprintf(name, sizeof name, "%s.weight", nd->name);
        CN_TRY(cn_st_writer_add(w, name, CN_DT_I8, ndim, shape, wd));
        snprintf(name, sizeof name, "%s.weight_scale", nd->name);
        CN_TRY(cn_st_writer_add(w, name, CN_DT_F32, 1, &oc, s->wscale));
        snprintf(name, sizeof name, "%s.bias", nd->name);
        if (s->op == CN_Q_LINEAR) CN_TRY(cn_st_writer_add(w, name, CN_DT_F32, 1, &oc, s->fbias));
        else CN_TRY(cn_st_writer_add(w, name, CN_DT_I32, 1, &oc, s->bias));
    }
    int64_t nt = g->ntensors;
    CN_TRY(cn_st_writer_add(w, "quant.act_scale", CN_DT_F32, 1, &nt, q->scale));
    CN_TRY(cn_st_writer_add(w, "quant.act_zero_point", CN_DT_I32, 1, &nt, q->zp));
    return cn_st_writer_meta(w, "quant", "{\"scheme\":\"int8\",\"weights\":\"per-channel "
                                         "symmetric\",\"activations\":\"per-tensor uint8\"}");
}

/* the file's tensor `name`, checked for dtype and shape */
static cn_status want(const cn_st_file *f, const char *name, cn_dtype dt, int ndim,
                      const int64_t *shape, const cn_st_tensor **out) {
    const char *path = cn_st_path(f);
    const cn_st_tensor *t = cn_st_find(f, name);
    if (!t) return cn_error(CN_ERR_FORMAT, "%s: int8 model without tensor '%s'", path, name);
    int ok = t->dtype == dt && t->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++) ok = t->shape[i] == shape[i];
    if (!ok) {
        char sh[96];
        int p = 0;
        for (int i = 0; i < ndim; i++)
            p += snprintf(sh + p, sizeof sh - (size_t)p, "%s%lld", i ? ", " : "", (long long)shape[i]);
        return cn_error(CN_ERR_FORMAT, "%s: tensor '%s' must be %s of shape (%s)", path, name,
                        cn_dtype_name(dt), sh);
    }
    *out = t;
    return CN_OK;
}

static int good_scale(float s) { return isfinite(s) && s > 0 && s < 1e30f; }

cn_status cn_qnet_load(cn_qnet **out, cn_graph *g, const cn_st_file *f) {
    *out = NULL;
    const char *path = cn_st_path(f);
    cn_qnet *q = calloc(1, sizeof *q);
    if (!q) return cn_error(CN_ERR_NOMEM, "out of memory");
    q->g = g;
    cn_status st = plan_steps(q);
    const cn_st_tensor *t;
    int64_t nt = g->ntensors;
    if (st == CN_OK && (st = want(f, "quant.act_scale", CN_DT_F32, 1, &nt, &t)) == CN_OK)
        memcpy(q->scale, t->data, sizeof(float) * (size_t)nt);
    if (st == CN_OK && (st = want(f, "quant.act_zero_point", CN_DT_I32, 1, &nt, &t)) == CN_OK)
        memcpy(q->zp, t->data, sizeof(int32_t) * (size_t)nt);
    char name[CN_NAME_MAX + 32];
    for (int i = 0; st == CN_OK && i < q->nsteps; i++) {
        cn_qstep *s = &q->steps[i];
        const cn_node *nd = &g->nodes[s->node];
        int ts[3] = {s->in[0], s->op == CN_Q_LINEAR ? -1 : s->out, s->pre};
        if (s->op == CN_Q_ADD || s->op == CN_Q_MUL) ts[2] = s->in[1];
        for (int j = 0; j < 3 && st == CN_OK; j++) {
            int x = ts[j];
            if (x < 0) continue;
            if (!good_scale(q->scale[x]) || q->zp[x] < 0 || q->zp[x] > 255)
                st = cn_error(CN_ERR_FORMAT,
                              "%s: 'quant.act_scale'/'quant.act_zero_point' entry %d (%g, %d) is "
                              "not a positive finite scale and a zero point in [0, 255]",
                              path, x, (double)q->scale[x], q->zp[x]);
        }
        if (st != CN_OK || !weighted(s->op)) continue;
        int oc = s->op == CN_Q_LINEAR ? nd->a.linear.oc : nd->a.conv.oc;
        int k = s->op == CN_Q_LINEAR ? (int)g->entries[nd->p[0]].shape[1]
              : s->op == CN_Q_DWCONV ? nd->a.conv.k * nd->a.conv.k
                                     : nd->a.conv.k * nd->a.conv.k * g->tensors[nd->in[0]].c;
        if ((st = alloc_step(s, oc, k, s->op == CN_Q_LINEAR)) != CN_OK) break;
        int64_t shape[4], o64 = oc;
        int ndim;
        file_shape(q, s, shape, &ndim);
        snprintf(name, sizeof name, "%s.weight", nd->name);
        const cn_st_tensor *wt = cn_st_find(f, name);
        if (wt && wt->dtype == CN_DT_F32) { /* a layer kept in float32 */
            if ((st = want(f, name, CN_DT_F32, ndim, shape, &t)) != CN_OK ||
                (st = alloc_fp(s, oc, k)) != CN_OK)
                break;
            s->fp = 1;
            const float *src = t->data;
            if (s->op == CN_Q_CONV) {
                relayout(s->fw, src, oc, (int)shape[1], (int)(shape[2] * shape[3]), 4, 0);
            } else {
                memcpy(s->fw, src, sizeof(float) * (size_t)oc * k);
            }
            snprintf(name, sizeof name, "%s.bias", nd->name);
            if ((st = want(f, name, CN_DT_F32, 1, &o64, &t)) != CN_OK) break;
            memcpy(s->fb, t->data, sizeof(float) * (size_t)oc);
            for (size_t j = 0; j < (size_t)oc * k + oc && st == CN_OK; j++)
                if (!isfinite(j < (size_t)oc * k ? s->fw[j] : s->fb[j - (size_t)oc * k]))
                    st = cn_error(CN_ERR_FORMAT, "%s: float32 layer '%s' holds a value that is "
                                                 "not finite", path, nd->name);
            continue;
        }
        if ((st = want(f, name, CN_DT_I8, ndim, shape, &t)) != CN_OK) break;
        const int8_t *src = t->data;
        if (s->op == CN_Q_CONV) {
            relayout(s->w, src, oc, (int)shape[1], (int)(shape[2] * shape[3]), 1, 0);
        } else {
            memcpy(s->w, src, (size_t)oc * k);
        }
        for (size_t j = 0; j < (size_t)oc * k && st == CN_OK; j++)
            if (s->w[j] == -128)
                st = cn_error(CN_ERR_FORMAT, "%s: '%s' holds -128; int8 weights are symmetric "
                                             "(-127..127)", path, name);
        snprintf(name, sizeof name, "%s.weight_scale", nd->name);
        if (st != CN_OK || (st = want(f, name, CN_DT_F32, 1, &o64, &t)) != CN_OK) break;
        memcpy(s->wscale, t->data, sizeof(float) * (size_t)oc);
        for (int o = 0; o < oc && st == CN_OK; o++)
            if (!good_scale(s->wscale[o]))
                st = cn_error(CN_ERR_FORMAT, "%s: '%s'[%d] = %g is not a positive finite scale",
                              path, name, o, (double)s->wscale[o]);
        snprintf(name, sizeof name, "%s.bias", nd->name);
        if (st != CN_OK) break;
        if (s->op == CN_Q_LINEAR) {
            if ((st = want(f, name, CN_DT_F32, 1, &o64, &t)) != CN_OK) break;
            memcpy(s->fbias, t->data, sizeof(float) * (size_t)oc);
            for (int o = 0; o < oc && st == CN_OK; o++)
                if (!isfinite(s->fbias[o]))
                    st = cn_error(CN_ERR_FORMAT, "%s: '%s'[%d] is not finite", path, name, o);
        } else {
            if ((st = want(f, name, CN_DT_I32, 1, &o64, &t)) != CN_OK) break;
            memcpy(s->bias, t->data, sizeof(int32_t) * (size_t)oc);
        }
    }
    if (st == CN_OK) st = derive(q, path);
    if (st != CN_OK) {
        cn_qnet_free(q);
        return st;
    }
    *out = q;
    return CN_OK;
}
