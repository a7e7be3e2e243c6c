/* Graph building, state table, planning and the executor. */
#include "graph/graph.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/mem.h"
#include "core/rng.h"
#include "core/status.h"
#include "kernels/winograd.h"

enum { STREAM_INIT = 1 };

const char *cn_op_name(cn_op op) {
    static const char *names[] = {"input",    "conv2d",  "batchnorm2d", "relu",    "maxpool",
                                  "avgpool",  "avgpool1", "add",        "shortcut", "flatten",
                                  "linear",   "silu",    "sigmoid",     "scale",   "dropout",
                                  "droppath"};
    return (unsigned)op < sizeof names / sizeof *names ? names[op] : "?";
}

int cn_node_profile_slot(const cn_node *nd) {
    int dw = nd->op == CN_OP_CONV && nd->a.conv.groups > 1 && nd->a.conv.groups == nd->a.conv.oc;
    return dw ? CN_OP_COUNT : (int)nd->op;
}

const char *cn_profile_slot_name(int slot) {
    return slot == CN_OP_COUNT ? "conv2d_dw" : cn_op_name((cn_op)slot);
}

void cn_graph_init(cn_graph *g) { memset(g, 0, sizeof *g); }

/* the bytes of params and of grads (cn_alloc_zeroed) */
static size_t param_bytes(const cn_graph *g) {
    return sizeof(float) * (g->nparams ? g->nparams : 1);
}

/* the image lanes of the plan (forward_lanes) */
static void lanes_free(cn_graph *g) {
    for (int i = 0; i < g->nlanes; i++) {
        cn_graph *l = &g->lanes[i];
        free(l->tensors);
        free(l->arena);
        free(l->workspace);
        free(l->scratch);
    }
    free(g->lanes);
    free(g->lane_bnd);
    g->lanes = NULL;
    g->lane_bnd = NULL;
    g->nlanes = g->nlane_bnd = 0;
}

static void free_plan(cn_graph *g) {
    for (int i = 0; i < g->nnodes; i++) {
        free(g->nodes[i].save);
        free(g->nodes[i].argmax);
        free(g->nodes[i].mask);
        free(g->nodes[i].fold);
        free(g->nodes[i].bn_k);
        free(g->nodes[i].img_sums);
        g->nodes[i].fold = NULL;
        g->nodes[i].bn_k = NULL;
        g->nodes[i].img_sums = NULL;
        g->nodes[i].save = NULL;
        g->nodes[i].argmax = NULL;
        g->nodes[i].mask = NULL;
    }
    lanes_free(g);
    free(g->arena);
    free(g->workspace);
    free(g->scratch);
    g->scratch = NULL;
    g->arena = NULL;
    g->workspace = NULL;
    g->workspace_floats = 0;
    for (int i = 0; i < g->ntensors; i++) g->tensors[i].data = g->tensors[i].grad = NULL;
    g->planned = 0;
}

void cn_graph_free(cn_graph *g) {
    if (!g) return;
    free_plan(g);
    for (int i = 0; i < g->nnodes; i++) free(g->nodes[i].packed);
    free(g->nodes);
    free(g->tensors);
    free(g->entries);
    free(g->node_time);
    cn_free_zeroed(g->params, param_bytes(g));
    cn_free_zeroed(g->grads, param_bytes(g));
    free(g->buffers);
    free(g->counters);
    memset(g, 0, sizeof *g);
}

static int grow(void **p, int *cap, int need, size_t elem) {
    if (need <= *cap) return 1;
    int nc = *cap ? *cap * 2 : 64;
    while (nc < need) nc *= 2;
    void *q = realloc(*p, (size_t)nc * elem);
    if (!q) return 0;
    *p = q;
    *cap = nc;
    return 1;
}

static int new_tensor(cn_graph *g, int c) {
    if (!grow((void **)&g->tensors, &g->cap_tensors, g->ntensors + 1, sizeof(cn_tensor))) {
        cn_error(CN_ERR_NOMEM, "out of memory building the graph");
        return -1;
    }
    cn_tensor *t = &g->tensors[g->ntensors];
    memset(t, 0, sizeof *t);
    t->c = c;
    return g->ntensors++;
}

static cn_node *new_node(cn_graph *g, cn_op op, const char *name, int in0, int in1) {
    if (!grow((void **)&g->nodes, &g->cap_nodes, g->nnodes + 1, sizeof(cn_node))) {
        cn_error(CN_ERR_NOMEM, "out of memory building the graph");
        return NULL;
    }
    cn_node *nd = &g->nodes[g->nnodes++];
    memset(nd, 0, sizeof *nd);
    nd->op = op;
    snprintf(nd->name, sizeof nd->name, "%s", name ? name : "");
    nd->in[0] = in0;
    nd->in[1] = in1;
    nd->p[0] = nd->p[1] = -1;
    nd->buf[0] = nd->buf[1] = nd->buf[2] = -1;
    nd->act_out = nd->res_in = nd->bn_conv = nd->bn_of = -1;
    nd->fuse_out = nd->fuse_bn = nd->fuse_res = -1;
    nd->fuse_in = nd->fuse_scale = nd->fuse_gap = nd->fuse_dw = -1;
    return nd;
}

static int add_entry(cn_graph *g, const char *prefix, const char *suffix, cn_entry_kind kind,
                     int ndim, const int64_t *shape, int fan) {
    if (!grow((void **)&g->entries, &g->cap_entries, g->nentries + 1, sizeof(cn_entry))) {
        cn_error(CN_ERR_NOMEM, "out of memory building the graph");
        return -1;
    }
    cn_entry *e = &g->entries[g->nentries];
    memset(e, 0, sizeof *e);
    snprintf(e->name, sizeof e->name, "%s%s%s", prefix, *prefix ? "." : "", suffix);
    e->kind = kind;
    e->ndim = ndim;
    e->count = 1;
    for (int i = 0; i < ndim; i++) {
        e->shape[i] = shape[i];
        e->count *= (size_t)shape[i];
    }
    e->fan = fan;
    if (cn_entry_is_param(kind)) {
        e->offset = g->nparams;
        g->nparams += e->count;
    } else if (kind == CN_ENTRY_NUM_BATCHES) {
        e->offset = g->ncounters;
        g->ncounters += 1;
    } else {
        e->offset = g->nbuffers;
        g->nbuffers += e->count;
    }
    return g->nentries++;
}

static int check_in(cn_graph *g, int x) {
    if (x < 0 || x >= g->ntensors) {
        cn_error(CN_ERR_INTERNAL, "graph builder: bad tensor id %d", x);
        return 0;
    }
    return 1;
}

int cn_g_input(cn_graph *g, int c) {
    cn_node *nd = new_node(g, CN_OP_INPUT, "input", -1, -1);
    if (!nd) return -1;
    int t = new_tensor(g, c);
    g->nodes[g->nnodes - 1].out = t;
    return t;
}

int cn_g_conv(cn_graph *g, const char *name, int x, int oc, int k, int stride, int pad,
              int groups, int bias) {
    if (!check_in(g, x)) return -1;
    int c = g->tensors[x].c;
    if (groups < 1 || c % groups || oc % groups) {
        cn_error(CN_ERR_ARG, "%s: %d input and %d output channels do not split into %d groups",
                 name, c, oc, groups);
        return -1;
    }
    int64_t shape[4] = {oc, c / groups, k, k};
    /* torch's fan_out of a conv weight is size(0) * kh * kw, whatever the groups */
    int w = add_entry(g, name, "weight", CN_ENTRY_CONV_WEIGHT, 4, shape, oc * k * k);
    int b = bias ? add_entry(g, name, "bias", CN_ENTRY_CONV_BIAS, 1, shape, 0) : -1;
    if (w < 0 || (bias && b < 0)) return -1;
    cn_node *nd = new_node(g, CN_OP_CONV, name, x, -1);
    if (!nd) return -1;
    nd->p[0] = w;
    nd->p[1] = b;
    nd->a.conv.oc = oc;
    nd->a.conv.k = k;
    nd->a.conv.stride = stride;
    nd->a.conv.pad = pad;
    nd->a.conv.groups = groups;
    int t = new_tensor(g, oc);
    g->nodes[g->nnodes - 1].out = t;
    return t;
}

int cn_g_bn(cn_graph *g, const char *name, int x, float eps, float momentum, int zero_init) {
    if (!check_in(g, x)) return -1;
    int64_t c = g->tensors[x].c;
    int w = add_entry(g, name, "weight", CN_ENTRY_BN_WEIGHT, 1, &c, 0);
    int b = add_entry(g, name, "bias", CN_ENTRY_BN_BIAS, 1, &c, 0);
    int rm = add_entry(g, name, "running_mean", CN_ENTRY_RUNNING_MEAN, 1, &c, 0);
    int rv = add_entry(g, name, "running_var", CN_ENTRY_RUNNING_VAR, 1, &c, 0);
    int nb = add_entry(g, name, "num_batches_tracked", CN_ENTRY_NUM_BATCHES, 0, NULL, 0);
    if (w < 0 || b < 0 || rm < 0 || rv < 0 || nb < 0) return -1;
    g->entries[w].zero_init = zero_init;
    cn_node *nd = new_node(g, CN_OP_BN, name, x, -1);
    if (!nd) return -1;
    nd->p[0] = w;
    nd->p[1] = b;
    nd->buf[0] = rm;
    nd->buf[1] = rv;
    nd->buf[2] = nb;
    nd->a.bn.eps = eps;
    nd->a.bn.momentum = momentum;
    int t = new_tensor(g, (int)c);
    g->nodes[g->nnodes - 1].out = t;
    return t;
}

static int simple(cn_graph *g, cn_op op, const char *name, int x, int y, int c) {
    if (!check_in(g, x) || (y >= 0 && !check_in(g, y))) return -1;
    cn_node *nd = new_node(g, op, name, x, y);
    if (!nd) return -1;
    int t = new_tensor(g, c);
    g->nodes[g->nnodes - 1].out = t;
    return t;
}

int cn_g_relu(cn_graph *g, int x) {
    return check_in(g, x) ? simple(g, CN_OP_RELU, "relu", x, -1, g->tensors[x].c) : -1;
}

static int pool(cn_graph *g, cn_op op, const char *name, int x, int k, int stride, int pad) {
    if (!check_in(g, x)) return -1;
    int t = simple(g, op, name, x, -1, g->tensors[x].c);
    if (t < 0) return -1;
    cn_node *nd = &g->nodes[g->nnodes - 1];
    nd->a.pool.k = k;
    nd->a.pool.stride = stride;
    nd->a.pool.pad = pad;
    return t;
}

int cn_g_maxpool(cn_graph *g, int x, int k, int stride, int pad) {
    return pool(g, CN_OP_MAXPOOL, "maxpool", x, k, stride, pad);
}

int cn_g_avgpool(cn_graph *g, int x, int k, int stride, int pad) {
    return pool(g, CN_OP_AVGPOOL, "avgpool", x, k, stride, pad);
}

int cn_g_gap(cn_graph *g, int x) {
    return check_in(g, x) ? simple(g, CN_OP_GAP, "avgpool", x, -1, g->tensors[x].c) : -1;
}

int cn_g_add(cn_graph *g, int a, int b) {
    if (!check_in(g, a) || !check_in(g, b)) return -1;
    if (g->tensors[a].c != g->tensors[b].c) {
        cn_error(CN_ERR_SHAPE, "residual add of %d and %d channels", g->tensors[a].c,
                 g->tensors[b].c);
        return -1;
    }
    return simple(g, CN_OP_ADD, "add", a, b, g->tensors[a].c);
}

int cn_g_shortcut_a(cn_graph *g, int x, int oc, int stride) {
    if (!check_in(g, x)) return -1;
    int t = simple(g, CN_OP_SHORTCUT_A, "shortcut", x, -1, oc);
    if (t < 0) return -1;
    g->nodes[g->nnodes - 1].a.shortcut.oc = oc;
    g->nodes[g->nnodes - 1].a.shortcut.stride = stride;
    return t;
}

/* The channel count after flatten depends on the spatial size, known only at planning; the
 * builder records the per-sample channels as 0 until then. */
int cn_g_flatten(cn_graph *g, int x) { return simple(g, CN_OP_FLATTEN, "flatten", x, -1, 0); }

int cn_g_linear(cn_graph *g, const char *name, int x, int oc) {
    if (!check_in(g, x)) return -1;
    /* after flatten (and a dropout on it) the features are known only at planning; here the
     * channels of the map that was flattened stand for them (1x1 after global pooling) */
    int k = g->tensors[x].c, src = x;
    for (int i = g->nnodes - 1; k == 0 && i >= 0; i--) {
        const cn_node *nd = &g->nodes[i];
        if (nd->out != src || (nd->op != CN_OP_FLATTEN && nd->op != CN_OP_DROPOUT)) break;
        src = nd->in[0];
        k = g->tensors[src].c;
    }
    int64_t shape[2] = {oc, k};
    int w = add_entry(g, name, "weight", CN_ENTRY_LINEAR_WEIGHT, 2, shape, k);
    int b = add_entry(g, name, "bias", CN_ENTRY_LINEAR_BIAS, 1, shape, k);
    if (w < 0 || b < 0) return -1;
    cn_node *nd = new_node(g, CN_OP_LINEAR, name, x, -1);
    if (!nd) return -1;
    nd->p[0] = w;
    nd->p[1] = b;
    nd->a.linear.oc = oc;
    int t = new_tensor(g, oc);
    g->nodes[g->nnodes - 1].out = t;
    return t;
}

int cn_g_silu(cn_graph *g, int x) {
    return check_in(g, x) ? simple(g, CN_OP_SILU, "silu", x, -1, g->tensors[x].c) : -1;
}

int cn_g_sigmoid(cn_graph *g, int x) {
    return check_in(g, x) ? simple(g, CN_OP_SIGMOID, "sigmoid", x, -1, g->tensors[x].c) : -1;
}

int cn_g_scale(cn_graph *g, int x, int s) {
    if (!check_in(g, x) || !check_in(g, s)) return -1;
    if (g->tensors[x].c != g->tensors[s].c) {
        cn_error(CN_ERR_SHAPE, "channel scale of %d channels by %d values", g->tensors[x].c,
                 g->tensors[s].c);
        return -1;
    }
    return simple(g, CN_OP_SCALE, "scale", x, s, g->tensors[x].c);
}

static int drop(cn_graph *g, cn_op op, const char *name, int x, float p) {
    if (!check_in(g, x)) return -1;
    if (!(p >= 0.0f && p <= 1.0f)) {
        cn_error(CN_ERR_ARG, "%s: drop probability %g is outside [0, 1]", name, p);
        return -1;
    }
    int t = simple(g, op, name, x, -1, g->tensors[x].c);
    if (t >= 0) g->nodes[g->nnodes - 1].a.drop.p = p;
    return t;
}

int cn_g_dropout(cn_graph *g, const char *name, int x, float p) {
    return drop(g, CN_OP_DROPOUT, name, x, p);
}

int cn_g_droppath(cn_graph *g, const char *name, int x, float p) {
    return drop(g, CN_OP_DROPPATH, name, x, p);
}

static int two_inputs(cn_op op) { return op == CN_OP_ADD || op == CN_OP_SCALE; }

static int consumers(const cn_graph *g, int t) {
    int k = 0;
    for (int i = 0; i < g->nnodes; i++)
        k += (g->nodes[i].op != CN_OP_INPUT && g->nodes[i].in[0] == t) +
             (two_inputs(g->nodes[i].op) && g->nodes[i].in[1] == t);
    return k;
}

int cn_graph_consumers(const cn_graph *g, int t) { return consumers(g, t); }

/* BN followed by its only consumer, a ReLU or a SiLU: one pass instead of two, forward and
 * backward. */
static void fuse_bn_act(cn_graph *g) {
    for (int i = 0; i + 1 < g->nnodes; i++) {
        cn_node *bn = &g->nodes[i], *act = &g->nodes[i + 1];
        if (bn->op != CN_OP_BN || (act->op != CN_OP_RELU && act->op != CN_OP_SILU) ||
            act->in[0] != bn->out || consumers(g, bn->out) != 1 || bn->out == g->ntensors - 1)
            continue;
        bn->act_out = act->out;
        bn->act = act->op == CN_OP_RELU ? CN_ACT_RELU : CN_ACT_SILU;
        act->fused = 1;
        g->tensors[bn->out].dead = 1;
    }
}

/* The node that consumes t, when exactly one does; -1 otherwise. */
static int sole_consumer(const cn_graph *g, int t) {
    if (consumers(g, t) != 1) return -1;
    for (int i = 0; i < g->nnodes; i++) {
        const cn_node *nd = &g->nodes[i];
        if (nd->op != CN_OP_INPUT && (nd->in[0] == t || (two_inputs(nd->op) && nd->in[1] == t)))
            return i;
    }
    return -1;
}

static int producer(const cn_graph *g, int t) {
    for (int i = 0; i < g->nnodes; i++)
        if (g->nodes[i].out == t) return i;
    return -1;
}

/* A residual block's end, bn -> add -> relu, in one pass of the BN (cn_node.res_in): one pass
 * over the map instead of three forward, and the ReLU's and the add's gradient passes folded
 * into the BN's. The BN is the add input whose other input is ready before the BN's own input
 * is computed (so that an eval forward's convolution can still absorb the chain: ResNet's
 * bn2 with the block's input, or, in a downsampling block, downsample.1 with bn2's output). */
static void fuse_bn_add_relu(cn_graph *g) {
    for (int a = 0; a < g->nnodes; a++) {
        cn_node *add = &g->nodes[a];
        if (add->op != CN_OP_ADD || add->fused || add->in[0] == add->in[1]) continue;
        const int r = sole_consumer(g, add->out);
        if (r < 0 || g->nodes[r].op != CN_OP_RELU || g->nodes[r].out == g->ntensors - 1) continue;
        for (int k = 0; k < 2; k++) {
            const int t = add->in[k], other = add->in[1 - k], b = producer(g, t);
            if (b < 0 || g->nodes[b].op != CN_OP_BN || g->nodes[b].act_out >= 0 ||
                consumers(g, t) != 1 || producer(g, other) >= producer(g, g->nodes[b].in[0]))
                continue;
            cn_node *bn = &g->nodes[b];
            bn->res_in = other;
            bn->act_out = g->nodes[r].out;
            bn->act = CN_ACT_RELU;
            add->fused = g->nodes[r].fused = 1;
            g->tensors[t].dead = g->tensors[add->out].dead = 1;
            break;
        }
    }
}

int cn_graph_sole_consumer(const cn_graph *g, int t) { return sole_consumer(g, t); }

/* An SE product before a 1x1 convolution (cn_node.fuse_in) goes, image by image, into a copy of
 * the weights when they are the smaller operand (OC x C against H x W x C: the early, large
 * maps), else into a copy of the image's activations. Whether the weights, and the floats of
 * the copy, rounded up to 64 bytes. */
static int scale_weights(const cn_node *nd) {
    return (size_t)nd->a.conv.oc < (size_t)nd->desc.h * nd->desc.w;
}

/* Images per GEMM of a convolution with an SE product (cn_node.fuse_in) at batch n. One image
 * at a time, the SE scale goes into the weights or a copy of the image, and on small maps that
 * GEMM has few rows (49 on EfficientNet's 7x7 stages: 60-70 % of the FMA peak, against 90 %
 * with the 784 of 16 images). There, the images are scaled into one buffer of up to
 * SE_BATCH_FLOATS and multiplied together: efficientnet_b0 batch 16 5-7 % faster, its 7x7
 * projections 1.7 -> 1.1-1.3 ms. From 28x28 on, the copy of the maps cost more than the larger
 * GEMM saved (stage 3's projections 0.87 -> 1.07 and 1.30 -> 1.60 ms), and the weights stay
 * scaled per image. */
enum { SE_BATCH_FLOATS = 1 << 20, SE_BATCH_MAX_PIXELS = 14 * 14 };

static int se_images(const cn_node *nd, int n) {
    const size_t px = (size_t)nd->desc.h * nd->desc.w, img = px * nd->desc.c;
    if (px > SE_BATCH_MAX_PIXELS || n < 2) return 1;
    const size_t k = SE_BATCH_FLOATS / img;
    return k < 2 ? 1 : k > (size_t)n ? n : (int)k;
}

static size_t scaled_floats(const cn_graph *g, const cn_node *nd) {
    size_t n = scale_weights(nd) ? g->entries[nd->p[0]].count
                                 : (size_t)nd->desc.h * nd->desc.w * nd->desc.c;
    return (n + 15) & ~(size_t)15;
}


static cn_act act_of(cn_op op) {
    return op == CN_OP_RELU ? CN_ACT_RELU : op == CN_OP_SILU ? CN_ACT_SILU
         : op == CN_OP_SIGMOID ? CN_ACT_SIGMOID : CN_ACT_NONE;
}

/* The inference fusion described at cn_node.fuse_out. */
static void fuse_inference(cn_graph *g) {
    for (int i = 0; i < g->nnodes; i++) {
        cn_node *cv = &g->nodes[i];
        if (cv->op != CN_OP_CONV) continue;
        int cur = cv->out, k, absorbed[8], na = 0, res = -1, bn = -1;
        cn_act act = CN_ACT_NONE;
        if ((k = sole_consumer(g, cur)) >= 0 && g->nodes[k].op == CN_OP_BN) {
            bn = k;
            absorbed[na++] = k;
            if (g->nodes[k].res_in >= 0) {
                /* the add and ReLU it took (fuse_bn_add_relu: the residual is ready) */
                const int add = sole_consumer(g, g->nodes[k].out);
                act = g->nodes[k].act;
                res = g->nodes[k].res_in;
                absorbed[na++] = add;
                absorbed[na++] = producer(g, g->nodes[k].act_out);
                cur = g->nodes[k].act_out;
            } else if (g->nodes[k].act_out >= 0) {
                act = g->nodes[k].act;
                absorbed[na++] = producer(g, g->nodes[k].act_out);
                cur = g->nodes[k].act_out;
            } else {
                cur = g->nodes[k].out;
            }
        }
        if (act == CN_ACT_NONE && (k = sole_consumer(g, cur)) >= 0 &&
            act_of(g->nodes[k].op) != CN_ACT_NONE) {
            act = act_of(g->nodes[k].op);
            absorbed[na++] = k;
            cur = g->nodes[k].out;
        }
        while (act == CN_ACT_NONE && na < 4 && (k = sole_consumer(g, cur)) >= 0 &&
               (g->nodes[k].op == CN_OP_DROPOUT || g->nodes[k].op == CN_OP_DROPPATH)) {
            absorbed[na++] = k;
            cur = g->nodes[k].out;
        }
        if (act == CN_ACT_NONE && (k = sole_consumer(g, cur)) >= 0 && g->nodes[k].op == CN_OP_ADD) {
            const cn_node *add = &g->nodes[k];
            int other = add->in[0] == cur ? add->in[1] : add->in[0];
            if (other != cur && producer(g, other) < i) {
                res = other;
                absorbed[na++] = k;
                cur = add->out;
                int r = sole_consumer(g, cur);
                if (r >= 0 && act_of(g->nodes[r].op) != CN_ACT_NONE && g->nodes[r].op != CN_OP_SIGMOID) {
                    act = act_of(g->nodes[r].op);
                    absorbed[na++] = r;
                    cur = g->nodes[r].out;
                }
            }
        }
        /* the SE product before a 1x1 convolution (see cn_node.fuse_in) */
        const int sp = producer(g, cv->in[0]);
        const int pointwise = cv->a.conv.k == 1 && cv->a.conv.stride == 1 && cv->a.conv.pad == 0 &&
                              cv->a.conv.groups == 1;
        if (pointwise && sp >= 0 && g->nodes[sp].op == CN_OP_SCALE && !g->nodes[sp].eval_skip &&
            sole_consumer(g, cv->in[0]) == i) {
            cv->fuse_in = g->nodes[sp].in[0];
            cv->fuse_scale = g->nodes[sp].in[1];
            g->nodes[sp].eval_skip = 1;
        } else if (!na) {
            continue;
        }
        cv->fuse_out = cur;
        cv->fuse_bn = bn;
        cv->fuse_res = res;
        cv->fuse_act = act;
        for (int a = 0; a < na; a++) g->nodes[absorbed[a]].eval_skip = 1;
        /* the squeeze of an SE block that reads the chain's output (see cn_node.fuse_gap) */
        for (int q = i + 1; q < g->nnodes; q++) {
            cn_node *gp = &g->nodes[q];
            if (gp->op == CN_OP_GAP && gp->in[0] == cur && !gp->eval_skip && !gp->fused) {
                cv->fuse_gap = gp->out;
                gp->eval_skip = 1;
                break;
            }
        }
    }
    /* an expansion and the depthwise convolution after it (cn_node.fuse_dw) */
    for (int i = 0; i < g->nnodes; i++) {
        cn_node *e = &g->nodes[i];
        if (e->op != CN_OP_CONV || e->fuse_out < 0 || e->fuse_res >= 0 || e->fuse_in >= 0 ||
            e->fuse_gap >= 0 || e->a.conv.k != 1 || e->a.conv.stride != 1 || e->a.conv.pad != 0 ||
            e->a.conv.groups != 1)
            continue;
        const int k = sole_consumer(g, e->fuse_out);
        if (k < 0) continue;
        cn_node *d = &g->nodes[k];
        if (d->op == CN_OP_CONV && d->fuse_out >= 0 && d->fuse_res < 0 && d->fuse_in < 0 &&
            !d->eval_skip && d->a.conv.groups == e->a.conv.oc && d->a.conv.oc == e->a.conv.oc &&
            cn_expand_dw_fusable(d->a.conv.k, d->a.conv.stride)) {
            e->fuse_dw = k;
            d->eval_skip = 1;
        }
    }
}

cn_status cn_graph_finalize(cn_graph *g) {
    if (!g->nofuse) {
        fuse_bn_act(g);
        fuse_bn_add_relu(g);
        fuse_inference(g);
    }
    /* zeroed as calloc's, not cn_alloc64 and a memset: its pages stay untouched (not resident)
     * until written, which keeps the gradients out of an inference run's memory (resnet50:
     * 122 MB, not 219) */
    g->params = cn_alloc_zeroed(param_bytes(g));
    g->grads = cn_alloc_zeroed(param_bytes(g));
    g->buffers = calloc(g->nbuffers ? g->nbuffers : 1, sizeof(float));
    g->counters = calloc(g->ncounters ? g->ncounters : 1, sizeof(int64_t));
    if (!g->params || !g->grads || !g->buffers || !g->counters)
        return cn_error(CN_ERR_NOMEM, "out of memory for %zu parameters", g->nparams);
    return CN_OK;
}

float *cn_entry_data(const cn_graph *g, int e) {
    const cn_entry *en = &g->entries[e];
    if (cn_entry_is_param(en->kind)) return g->params + en->offset;
    if (en->kind == CN_ENTRY_NUM_BATCHES) return NULL;
    return g->buffers + en->offset;
}

float *cn_entry_grad(const cn_graph *g, int e) {
    const cn_entry *en = &g->entries[e];
    return cn_entry_is_param(en->kind) ? g->grads + en->offset : NULL;
}

/* OIHW (torchvision) <-> OHWI (internal); to_torch chooses the direction. */
static void permute_conv(const cn_entry *en, const float *src, float *dst, int to_torch) {
    int64_t O = en->shape[0], I = en->shape[1], H = en->shape[2], W = en->shape[3];
    for (int64_t o = 0; o < O; o++)
        for (int64_t i = 0; i < I; i++)
            for (int64_t y = 0; y < H; y++)
                for (int64_t x = 0; x < W; x++) {
                    size_t oihw = (size_t)(((o * I + i) * H + y) * W + x);
                    size_t ohwi = (size_t)(((o * H + y) * W + x) * I + i);
                    if (to_torch) dst[oihw] = src[ohwi];
                    else dst[ohwi] = src[oihw];
                }
}

void cn_entry_get(const cn_graph *g, int e, const float *src, float *dst) {
    const cn_entry *en = &g->entries[e];
    if (en->kind == CN_ENTRY_CONV_WEIGHT) permute_conv(en, src, dst, 1);
    else memcpy(dst, src, sizeof(float) * en->count);
}

void cn_entry_set(const cn_graph *g, int e, const float *src, float *dst) {
    const cn_entry *en = &g->entries[e];
    if (en->kind == CN_ENTRY_CONV_WEIGHT) permute_conv(en, src, dst, 0);
    else memcpy(dst, src, sizeof(float) * en->count);
}

void cn_graph_params_changed(cn_graph *g) { g->param_version++; }

void cn_graph_init_params(cn_graph *g, uint64_t seed, int zero_init_residual) {
    cn_graph_params_changed(g);
    for (int e = 0; e < g->nentries; e++) {
        cn_entry *en = &g->entries[e];
        float *d = cn_entry_data(g, e);
        cn_rng r = cn_rng_make(seed, STREAM_INIT, (uint64_t)e);
        switch (en->kind) {
        case CN_ENTRY_CONV_WEIGHT: {
            /* kaiming_normal_(mode="fan_out", nonlinearity="relu"): std = sqrt(2 / fan_out) */
            float std = sqrtf(2.0f / (float)en->fan);
            for (size_t i = 0; i < en->count; i++) d[i] = std * cn_rng_normal(&r);
            break;
        }
        case CN_ENTRY_LINEAR_WEIGHT:
        case CN_ENTRY_LINEAR_BIAS: {
            if (en->init_alt) {
                /* EfficientNet: U(+-1/sqrt(out_features)) weights, zero biases */
                float bound = en->kind == CN_ENTRY_LINEAR_BIAS ? 0.0f : 1.0f / sqrtf((float)en->shape[0]);
                for (size_t i = 0; i < en->count; i++) d[i] = bound * (2 * cn_rng_uniform(&r) - 1);
                break;
            }
            /* nn.Linear's default: kaiming_uniform_(a=sqrt(5)) = U(-1/sqrt(fan_in), +) */
            float bound = 1.0f / sqrtf((float)en->fan);
            for (size_t i = 0; i < en->count; i++) d[i] = bound * (2 * cn_rng_uniform(&r) - 1);
            break;
        }
        case CN_ENTRY_BN_WEIGHT:
            for (size_t i = 0; i < en->count; i++)
                d[i] = zero_init_residual && en->zero_init ? 0.0f : 1.0f;
            break;
        case CN_ENTRY_RUNNING_VAR:
            for (size_t i = 0; i < en->count; i++) d[i] = 1.0f;
            break;
        case CN_ENTRY_NUM_BATCHES: g->counters[en->offset] = 0; break;
        default: memset(d, 0, sizeof(float) * en->count); break;
        }
    }
}

int cn_graph_find(const cn_graph *g, const char *name) {
    for (int e = 0; e < g->nentries; e++)
        if (strcmp(g->entries[e].name, name) == 0) return e;
    return -1;
}

int64_t cn_graph_param_count(const cn_graph *g) { return (int64_t)g->nparams; }

/* ---- planning ---- */

cn_status cn_graph_shapes(cn_graph *g, int h, int w) {
    if (g->planned && (g->in_h != h || g->in_w != w)) free_plan(g);
    for (int i = 0; i < g->nnodes; i++) {
        cn_node *nd = &g->nodes[i];
        cn_tensor *out = &g->tensors[nd->out];
        if (nd->op == CN_OP_INPUT) {
            out->h = h;
            out->w = w;
            continue;
        }
        const cn_tensor *in = &g->tensors[nd->in[0]];
        cn_conv_desc *d = &nd->desc;
        memset(d, 0, sizeof *d);
        d->n = 1;
        d->h = in->h;
        d->w = in->w;
        d->c = in->c;
        d->groups = 1;
        switch (nd->op) {
        case CN_OP_CONV:
            d->oc = nd->a.conv.oc;
            d->kh = d->kw = nd->a.conv.k;
            d->sh = d->sw = nd->a.conv.stride;
            d->ph = d->pw = nd->a.conv.pad;
            d->groups = nd->a.conv.groups;
            break;
        case CN_OP_MAXPOOL:
        case CN_OP_AVGPOOL:
            d->oc = d->c;
            d->kh = d->kw = nd->a.pool.k;
            d->sh = d->sw = nd->a.pool.stride;
            d->ph = d->pw = nd->a.pool.pad;
            break;
        default: break;
        }
        switch (nd->op) {
        case CN_OP_CONV:
        case CN_OP_MAXPOOL:
        case CN_OP_AVGPOOL:
            if (!cn_conv_desc_init(d))
                return cn_error(CN_ERR_SHAPE,
                                "%s: a %dx%d input is too small for its %dx%d window (stride %d, "
                                "padding %d); use a larger input size",
                                nd->name, in->h, in->w, d->kh, d->kw, d->sh, d->ph);
            out->h = d->oh;
            out->w = d->ow;
            break;
        case CN_OP_GAP:
            out->h = out->w = 1;
            break;
        case CN_OP_SHORTCUT_A: {
            int s = nd->a.shortcut.stride;
            out->h = (in->h + s - 1) / s;
            out->w = (in->w + s - 1) / s;
            break;
        }
        case CN_OP_ADD: {
            const cn_tensor *b = &g->tensors[nd->in[1]];
            if (b->h != in->h || b->w != in->w)
                return cn_error(CN_ERR_SHAPE, "%s: residual add of %dx%d and %dx%d maps",
                                nd->name, in->h, in->w, b->h, b->w);
            out->h = in->h;
            out->w = in->w;
            break;
        }
        case CN_OP_DROPOUT:
        case CN_OP_DROPPATH:
            out->h = in->h;
            out->w = in->w;
            out->c = in->c;
            break;
        case CN_OP_SCALE: {
            const cn_tensor *sc = &g->tensors[nd->in[1]];
            if (sc->h != 1 || sc->w != 1)
                return cn_error(CN_ERR_SHAPE, "%s: channel scale by a %dx%d map, not 1x1",
                                nd->name, sc->h, sc->w);
            out->h = in->h;
            out->w = in->w;
            break;
        }
        case CN_OP_FLATTEN:
            out->h = out->w = 1;
            out->c = in->h * in->w * in->c;
            break;
        case CN_OP_LINEAR:
            if (in->h * in->w * in->c != g->entries[nd->p[0]].shape[1])
                return cn_error(CN_ERR_SHAPE,
                                "%s: expects %lld input features, the input size gives %d",
                                nd->name, (long long)g->entries[nd->p[0]].shape[1],
                                in->h * in->w * in->c);
            out->h = out->w = 1;
            break;
        default:
            out->h = in->h;
            out->w = in->w;
            break;
        }
    }
    return CN_OK;
}

/* Inference memory: tensors share the arena by liveness. Walking the nodes in eval order, each
 * node's output gets the first gap of the arena that fits it (or the top), and the tensors whose
 * last reader was that node are released only after, so no output overlaps its own inputs.
 * offset[t] is SIZE_MAX for a tensor an eval forward never writes. Returns the arena size. */
static size_t plan_eval_offsets(const cn_graph *g, int batch, size_t *offset) {
    int nt = g->ntensors;
    int *last = malloc(sizeof(int) * (size_t)nt);
    size_t *size = malloc(sizeof(size_t) * (size_t)nt);
    int *live = malloc(sizeof(int) * (size_t)nt);
    if (!last || !size || !live) {
        free(last), free(size), free(live);
        return SIZE_MAX;
    }
    for (int t = 0; t < nt; t++) {
        const cn_tensor *x = &g->tensors[t];
        size[t] = ((size_t)batch * x->h * x->w * x->c + 15) & ~(size_t)15;
        offset[t] = SIZE_MAX;
        last[t] = -1;
    }
    for (int i = 0; i < g->nnodes; i++) {
        const cn_node *nd = &g->nodes[i];
        if (nd->op == CN_OP_INPUT || nd->fused || nd->eval_skip) continue;
        if (nd->fuse_in >= 0) last[nd->fuse_in] = last[nd->fuse_scale] = i;
        else last[nd->in[0]] = i;
        if (two_inputs(nd->op)) last[nd->in[1]] = i;
        if (nd->fuse_res >= 0) last[nd->fuse_res] = i;
        if (nd->res_in >= 0) last[nd->res_in] = i;
    }
    last[nt - 1] = g->nnodes; /* the logits outlive the forward */
    int nlive = 0;
    size_t top = 0;
    for (int i = 0; i < g->nnodes; i++) {
        const cn_node *nd = &g->nodes[i];
        if (nd->fused || nd->eval_skip) continue;
        int out = nd->fuse_out >= 0 ? nd->fuse_out : nd->act_out >= 0 ? nd->act_out : nd->out;
        /* a fused pool (cn_node.fuse_gap) is a second output of the node; a fused depthwise
         * convolution's (cn_node.fuse_dw) outputs are too (the expanded map keeps its place:
         * where the fusion does not pay, the two run apart) */
        const cn_node *dw = nd->fuse_dw >= 0 ? &g->nodes[nd->fuse_dw] : NULL;
        const int outs[4] = {out, nd->fuse_gap, dw ? dw->fuse_out : -1, dw ? dw->fuse_gap : -1};
        for (int o = 0; o < 4; o++) {
            const int t = outs[o];
            if (t < 0 || offset[t] != SIZE_MAX) continue;
            /* first fit among the gaps between live blocks (kept sorted by offset) */
            size_t at = 0;
            int k = 0;
            for (; k < nlive; k++) {
                if (offset[live[k]] >= at + size[t]) break;
                size_t end = offset[live[k]] + size[live[k]];
                if (end > at) at = end;
            }
            offset[t] = at;
            memmove(live + k + 1, live + k, sizeof(int) * (size_t)(nlive - k));
            live[k] = t;
            nlive++;
            if (at + size[t] > top) top = at + size[t];
        }
        for (int k = 0; k < nlive;)
            if (last[live[k]] <= i && live[k] != out && live[k] != nd->fuse_gap) {
                memmove(live + k, live + k + 1, sizeof(int) * (size_t)(nlive - k - 1));
                nlive--;
            } else {
                k++;
            }
    }
    free(last), free(size), free(live);
    return top;
}

/* The workspace floats the convolutions of a plan at this batch and thread count need (the
 * largest), and the floats of transformed Winograd weights they would cache. */
static size_t plan_workspace(const cn_graph *g, int batch, int threads, int train,
                             size_t *wino_cache) {
    size_t ws = 0;
    *wino_cache = 0;
    for (int i = 0; i < g->nnodes; i++) {
        const cn_node *nd = &g->nodes[i];
        if (nd->op == CN_OP_CONV) {
            cn_conv_desc d = nd->desc;
            d.n = batch;
            size_t s = cn_conv2d_workspace(&d, threads, train);
            /* an SE product taken into the weights: one image at a time, its weights first */
            if (!train && nd->fuse_in >= 0) {
                cn_conv_desc one = d;
                one.n = 1;
                s = cn_conv2d_workspace(&one, threads, 0) + scaled_floats(g, nd);
                /* or several images scaled into one buffer */
                one.n = se_images(nd, batch);
                const size_t img = (size_t)one.h * one.w * one.c;
                const size_t many = cn_conv2d_workspace(&one, threads, 0) +
                                    ((one.n * img + 15) & ~(size_t)15);
                if (one.n > 1 && many > s) s = many;
            }
            /* an expansion with its depthwise convolution (cn_node.fuse_dw) */
            if (nd->fuse_dw >= 0) {
                cn_conv_desc dd = g->nodes[nd->fuse_dw].desc;
                dd.n = batch;
                const size_t f = cn_expand_dw_workspace(&d, &dd, threads);
                if (f > s) s = f;
            }
            if (s > ws) ws = s;
            if (nd->fuse_out >= 0 && nd->fuse_in < 0)
                *wino_cache += cn_wino_cached_floats(&d, threads);
        }
    }
    return ws;
}

cn_status cn_graph_plan(cn_graph *g, int batch, int h, int w, int train, int threads) {
    if (g->planned && g->batch == batch && g->in_h == h && g->in_w == w &&
        g->train_plan >= train && g->threads == threads)
        return CN_OK;
    free_plan(g);
    if (batch <= 0 || h <= 0 || w <= 0)
        return cn_error(CN_ERR_ARG, "batch %d and input %dx%d must be positive", batch, h, w);
    CN_TRY(cn_graph_shapes(g, h, w));
    size_t total = 0, ws = 0, scratch = 0, wino_cache = 0;
    for (int i = 0; i < g->ntensors; i++) {
        const cn_tensor *t = &g->tensors[i];
        if (t->dead) continue;
        size_t n = (size_t)batch * t->h * t->w * t->c;
        total += (n + 15) & ~(size_t)15;
    }
    if (train) total *= 2;
    size_t *offset = NULL;
    if (!train) {
        offset = malloc(sizeof(size_t) * (size_t)g->ntensors);
        if (!offset) return cn_error(CN_ERR_NOMEM, "out of memory");
        total = plan_eval_offsets(g, batch, offset);
        if (total == SIZE_MAX) {
            free(offset);
            return cn_error(CN_ERR_NOMEM, "out of memory");
        }
    }
    for (int i = 0; i < g->nnodes; i++) g->nodes[i].desc.n = batch;
    ws = plan_workspace(g, batch, threads, train, &wino_cache);
    g->arena = cn_alloc_huge(sizeof(float) * (total ? total : 1));
    g->workspace = cn_alloc_huge(sizeof(float) * (ws ? ws : 1));
    if (!g->arena || !g->workspace) {
        free(offset);
        free_plan(g);
        return cn_error(CN_ERR_NOMEM, "out of memory planning %zu MB of activations for batch %d",
                        total * 4 >> 20, batch);
    }
    g->workspace_floats = ws;
    float *p = g->arena;
    for (int i = 0; i < g->ntensors; i++) {
        cn_tensor *t = &g->tensors[i];
        if (offset) {
            t->data = offset[i] == SIZE_MAX ? NULL : (float *)g->arena + offset[i];
            continue;
        }
        if (t->dead) continue;
        size_t n = ((size_t)batch * t->h * t->w * t->c + 15) & ~(size_t)15;
        t->data = p;
        p += n;
        if (train) {
            t->grad = p;
            p += n;
        }
    }
    free(offset);
    for (int i = 0; i < g->nnodes; i++) {
        cn_node *nd = &g->nodes[i];
        if (nd->op == CN_OP_BN) {
            size_t need = cn_batchnorm_scratch(g->tensors[nd->out].c);
            if (need > scratch) scratch = need;
            nd->save = malloc(sizeof(float) * 2 * g->tensors[nd->out].c);
            if (!nd->save) return free_plan(g), cn_error(CN_ERR_NOMEM, "out of memory");
        }
        if (nd->op == CN_OP_MAXPOOL) {
            const cn_tensor *t = &g->tensors[nd->out];
            nd->argmax = malloc(sizeof(int32_t) * batch * t->h * t->w * t->c);
            if (!nd->argmax) return free_plan(g), cn_error(CN_ERR_NOMEM, "out of memory");
        }
        if (nd->fuse_out >= 0) {
            nd->fold = malloc(sizeof(float) * 2 * nd->a.conv.oc);
            if (!nd->fold) return free_plan(g), cn_error(CN_ERR_NOMEM, "out of memory");
            nd->fold_version = UINT64_MAX;
        }
        if (nd->op == CN_OP_DROPOUT || nd->op == CN_OP_DROPPATH) {
            const cn_tensor *t = &g->tensors[nd->out];
            size_t k = nd->op == CN_OP_DROPOUT ? (size_t)t->h * t->w * t->c : 1;
            nd->mask = malloc(sizeof(float) * batch * k);
            if (!nd->mask) return free_plan(g), cn_error(CN_ERR_NOMEM, "out of memory");
            for (size_t j = 0; j < batch * k; j++) nd->mask[j] = 1.0f;
        }
    }
    /* Gradient aliasing, from the last node back so that a chain relu <- add <- bn resolves to
     * one buffer. Only tensors with a single consumer qualify: nothing else accumulates there. */
    for (int i = 0; i < g->ntensors; i++) g->tensors[i].grad_alias = 0;
    for (int i = g->nnodes - 1; train && i >= 0; i--) {
        cn_node *nd = &g->nodes[i];
        nd->grad_alias = 0;
        if (nd->fused || (nd->op != CN_OP_RELU && nd->op != CN_OP_ADD) || g->fq_fwd) continue;
        for (int k = 0; k < (nd->op == CN_OP_ADD ? 2 : 1); k++) {
            int t = nd->in[k];
            if (t == g->nodes[0].out || g->tensors[t].dead || consumers(g, t) != 1) continue;
            if (nd->op == CN_OP_ADD && k == 1 && nd->in[0] == nd->in[1]) continue;
            g->tensors[t].grad = g->tensors[nd->out].grad;
            g->tensors[t].grad_alias = 1;
            nd->grad_alias |= 1 << k;
        }
    }
    for (int i = 0; i < g->ntensors; i++) g->tensors[i].grad_set = 0;
    for (int i = 0; train && i < g->nnodes; i++) {
        const cn_node *nd = &g->nodes[i];
        int t = nd->in[0];
        if ((nd->op == CN_OP_BN || (nd->op == CN_OP_CONV && cn_conv2d_sets_din(&nd->desc))) &&
            t != g->nodes[0].out && !g->tensors[t].dead && !g->tensors[t].grad_alias &&
            consumers(g, t) == 1)
            g->tensors[t].grad_set = 1;
        /* a fused residual read by that add only (a downsampling block's bn2) */
        t = nd->res_in;
        if (t >= 0 && t != g->nodes[0].out && !g->tensors[t].grad_alias && consumers(g, t) == 1)
            g->tensors[t].grad_set = 1;
    }
    for (int i = 0; i < g->nnodes; i++) g->nodes[i].bn_conv = g->nodes[i].bn_of = -1;
    for (int i = 0; train && !g->nofuse && i < g->nnodes; i++) {
        cn_node *nd = &g->nodes[i];
        const int c = nd->op == CN_OP_BN ? producer(g, nd->in[0]) : -1;
        if (c < 0 || g->nodes[c].op != CN_OP_CONV || g->nodes[c].p[1] >= 0 ||
            !g->tensors[nd->in[0]].grad_set)
            continue;
        /* after a SiLU the coefficients pass writes its gate over dy: only into a buffer that
         * no other tensor shares */
        if (nd->act_out >= 0 && nd->act == CN_ACT_SILU && g->tensors[nd->act_out].grad_alias)
            continue;
        nd->bn_k = malloc(sizeof(float) * 5 * g->tensors[nd->in[0]].c);
        nd->img_sums = malloc(sizeof(double) * 2 * (size_t)batch * g->tensors[nd->in[0]].c);
        nd->sums_ready = 0;
        if (!nd->bn_k || !nd->img_sums)
            return free_plan(g), cn_error(CN_ERR_NOMEM, "out of memory");
        nd->bn_conv = c;
        g->nodes[c].bn_of = i;
    }
    g->scratch = cn_alloc64(scratch ? scratch : 1);
    if (!g->scratch) return free_plan(g), cn_error(CN_ERR_NOMEM, "out of memory");
    g->batch = batch;
    g->in_h = h;
    g->in_w = w;
    g->train_plan = train;
    g->threads = threads;
    g->wino_wide = wino_cache <= (size_t)CN_WINO_CACHE_FLOATS;
    g->planned = 1;
    return CN_OK;
}

const cn_tensor *cn_graph_output(const cn_graph *g) { return &g->tensors[g->ntensors - 1]; }

static size_t numel(const cn_tensor *t, int n) { return (size_t)n * t->h * t->w * t->c; }

/* The Winograd weights of a convolution, transformed again when the parameters have changed
 * since; NULL when they cannot be allocated (the other path needs no memory of its own). */
static const float *wino_weights(cn_graph *g, cn_node *nd) {
    if (nd->packed && nd->packed_version == g->param_version) return nd->packed;
    if (!nd->packed) {
        const size_t n = cn_wino_weight_floats(nd->desc.c, nd->a.conv.oc);
        nd->packed = cn_alloc_huge(sizeof(float) * n);
        if (!nd->packed) return NULL;
    }
    /* in the layout the GEMMs want (cn_wino_transposed: U^T for wide layers) */
    if (cn_wino_transposed(&nd->desc))
        cn_wino_pack_weights_t(nd->packed, cn_entry_data(g, nd->p[0]), nd->desc.c, nd->a.conv.oc, 0,
                               g->threads);
    else
        cn_wino_pack_weights(nd->packed, cn_entry_data(g, nd->p[0]), nd->desc.c, nd->a.conv.oc,
                             g->threads);
    nd->packed_version = g->param_version;
    return nd->packed;
}

static int is_depthwise(const cn_node *nd) {
    return nd->op == CN_OP_CONV && nd->a.conv.groups > 1 && nd->a.conv.groups == nd->desc.c &&
           nd->a.conv.oc == nd->desc.c;
}

/* The filters of a depthwise convolution tap-major, repacked again when the parameters have
 * changed since; NULL when they cannot be allocated (the kernels then repack them at each call). */
static const float *dw_weights(cn_graph *g, cn_node *nd) {
    if (nd->packed && nd->packed_version == g->param_version) return nd->packed;
    if (!nd->packed) {
        nd->packed = cn_alloc64(sizeof(float) * (size_t)nd->desc.kh * nd->desc.kw * nd->desc.c);
        if (!nd->packed) return NULL;
    }
    cn_dwconv_pack_weights(nd->packed, cn_entry_data(g, nd->p[0]), &nd->desc);
    nd->packed_version = g->param_version;
    return nd->packed;
}

/* The epilogue of an eval-mode convolution's absorbed chain (see cn_node.fuse_out): its BN and
 * bias folded into nd->fold, made again only when the parameters or the BN's buffers may have
 * changed (param_version: a training forward, an optimizer step, a load or a set all move it).
 * Folding every channel's sqrt and division at each call took 1.4 % of efficientnet_b0's batch-1
 * forward, with the other thread idle meanwhile. */
static cn_epilogue fold_epilogue(cn_graph *g, cn_node *nd) {
    int oc = nd->a.conv.oc;
    const float *bias = nd->p[1] >= 0 ? cn_entry_data(g, nd->p[1]) : NULL;
    cn_epilogue ep = {nd->fold, nd->fold + oc, NULL, nd->fuse_act,
                      nd->fuse_gap >= 0 ? g->tensors[nd->fuse_gap].data : NULL};
    if (nd->fuse_res >= 0) ep.res = g->tensors[nd->fuse_res].data;
    if (nd->fold_version == g->param_version) return ep;
    for (int c = 0; c < oc; c++) {
        nd->fold[c] = 1.0f;
        nd->fold[oc + c] = bias ? bias[c] : 0.0f;
    }
    if (nd->fuse_bn >= 0) {
        const cn_node *bn = &g->nodes[nd->fuse_bn];
        const float *gamma = cn_entry_data(g, bn->p[0]), *beta = cn_entry_data(g, bn->p[1]);
        const float *rm = cn_entry_data(g, bn->buf[0]), *rv = cn_entry_data(g, bn->buf[1]);
        float *scale = nd->fold, *shift = nd->fold + oc;
        for (int c = 0; c < oc; c++) {
            /* the same expressions as cn_batchnorm_act_forward_eval */
            scale[c] = gamma[c] * (float)(1.0 / sqrt((double)rv[c] + bn->a.bn.eps));
            shift[c] = beta[c] - rm[c] * scale[c] + (bias ? bias[c] * scale[c] : 0.0f);
        }
    }
    nd->fold_version = g->param_version;
    return ep;
}

/* An eval-mode convolution with its absorbed chain (see cn_node.fuse_out). */
static void conv_fused_one(cn_graph *g, cn_node *nd, int n) {
    const int oc = nd->a.conv.oc;
    cn_epilogue ep = fold_epilogue(g, nd);
    cn_conv_desc d = nd->desc;
    d.n = n;
    const float *w = cn_entry_data(g, nd->p[0]); /* (OC, KH, KW, C) */
    if (nd->fuse_in < 0) {
        const float *u = cn_wino_wanted(&d, g->threads, g->wino_wide) ? wino_weights(g, nd) : NULL;
        const float *wr;
        if (u)
            (cn_wino_transposed(&d) ? cn_wino_forward_t : cn_wino_forward)(
                g->tensors[nd->fuse_out].data, g->tensors[nd->in[0]].data, u, &ep, &d,
                g->workspace, g->threads);
        else if (cn_wino_streamed_wanted(&d, g->threads))
            cn_wino_forward_streamed(g->tensors[nd->fuse_out].data, g->tensors[nd->in[0]].data,
                                     w, &ep, &d, g->workspace, g->threads);
        else if (is_depthwise(nd) && (wr = dw_weights(g, nd)) != NULL)
            cn_dwconv_forward_packed(g->tensors[nd->fuse_out].data, g->tensors[nd->in[0]].data,
                                     wr, &ep, &d, g->workspace, g->threads);
        else
            cn_conv2d_forward_fused(g->tensors[nd->fuse_out].data, g->tensors[nd->in[0]].data,
                                    w, &ep, &d, g->workspace, g->threads);
        return;
    }
    /* the SE product in the weights or in a copy of the activations, image by image */
    const int c = d.c, hw = d.h * d.w, by_w = scale_weights(nd);
    const size_t in_px = (size_t)hw * c, out_px = (size_t)d.oh * d.ow * oc;
    const float *x = g->tensors[nd->fuse_in].data, *sc = g->tensors[nd->fuse_scale].data;
    float *ws = (float *)g->workspace, *y = g->tensors[nd->fuse_out].data;
    const float *res = ep.res;
    float *pool = ep.pool;
    const int many = se_images(nd, n);
    if (many > 1) {
        for (int i = 0; i < n; i += many) {
            d.n = n - i < many ? n - i : many;
            cn_scale_forward(ws, x + (size_t)i * in_px, sc + (size_t)i * c, d.n, hw, c);
            ep.res = res ? res + (size_t)i * out_px : NULL;
            ep.pool = pool ? pool + (size_t)i * oc : NULL;
            cn_conv2d_forward_fused(y + (size_t)i * out_px, ws, w, &ep, &d,
                                    ws + ((d.n * in_px + 15) & ~(size_t)15), g->threads);
        }
        return;
    }
    d.n = 1;
    for (int i = 0; i < n; i++) {
        const float *s = sc + (size_t)i * c, *xi = x + (size_t)i * in_px;
        if (by_w) {
#pragma omp parallel for num_threads(g->threads) schedule(static) if (oc * c >= 32768)
            for (int o = 0; o < oc; o++)
                for (int k = 0; k < c; k++) ws[(size_t)o * c + k] = w[(size_t)o * c + k] * s[k];
        } else {
            cn_scale_forward(ws, xi, s, 1, hw, c);
        }
        ep.res = res ? res + (size_t)i * out_px : NULL;
        ep.pool = pool ? pool + (size_t)i * oc : NULL;
        cn_conv2d_forward_fused(y + (size_t)i * out_px, by_w ? xi : ws, by_w ? ws : w, &ep, &d,
                                ws + scaled_floats(g, nd), g->threads);
    }
}

/* Whether an expansion and its depthwise convolution run fused (cn_node.fuse_dw): where an
 * image's expanded map outgrows what stays in L2 between the two passes (measured on
 * EfficientNet-B0: fusing from 0.5 or 0.2 MB an image, or by the batch's map at batch 16, was
 * slower). */
#define EXPAND_DW_MIN_BYTES (1u << 20)
static int expand_dw_pays(const cn_conv_desc *dd) {
    return (double)dd->h * dd->w * dd->c * sizeof(float) >= EXPAND_DW_MIN_BYTES;
}

static void observe_tensor(cn_graph *g, int t, int n) {
    if (g->observe && t >= 0) g->observe(g->observe_user, t, g->tensors[t].data, numel(&g->tensors[t], n));
}

/* An eval-mode convolution with its absorbed chain, and the depthwise convolution it took in
 * (cn_node.fuse_dw), each written tensor passed to g->observe; returns the seconds the
 * depthwise one took when it ran apart (profiled as its own node), else 0 */
static double conv_fused_forward(cn_graph *g, cn_node *nd, int n) {
    if (nd->fuse_dw < 0) {
        conv_fused_one(g, nd, n);
        observe_tensor(g, nd->fuse_out, n);
        observe_tensor(g, nd->fuse_gap, n);
        return 0;
    }
    cn_node *dn = &g->nodes[nd->fuse_dw];
    cn_conv_desc de = nd->desc, dd = dn->desc;
    de.n = dd.n = n;
    if (!expand_dw_pays(&dd) || !cn_expand_dw_fusable(dd.kh, dd.sh)) {
        conv_fused_one(g, nd, n);
        observe_tensor(g, nd->fuse_out, n);
        const double t0 = g->profile ? omp_get_wtime() : 0;
        conv_fused_one(g, dn, n);
        double dt = 0;
        if (g->profile) {
            dt = omp_get_wtime() - t0;
            g->op_time[0][cn_node_profile_slot(dn)] += dt;
            if (g->node_time) g->node_time[2 * nd->fuse_dw] += dt;
        }
        observe_tensor(g, dn->fuse_out, n);
        observe_tensor(g, dn->fuse_gap, n);
        return dt;
    }
    const cn_epilogue ep = fold_epilogue(g, nd), epd = fold_epilogue(g, dn);
    const float *wdr = dw_weights(g, dn);
    if (wdr)
        cn_expand_dw_forward_packed(g->tensors[dn->fuse_out].data, g->tensors[nd->in[0]].data,
                                    cn_entry_data(g, nd->p[0]), &ep, &de, wdr, &epd, &dd,
                                    g->workspace, g->threads);
    else
        cn_expand_dw_forward(g->tensors[dn->fuse_out].data, g->tensors[nd->in[0]].data,
                             cn_entry_data(g, nd->p[0]), &ep, &de, cn_entry_data(g, dn->p[0]),
                             &epd, &dd, g->workspace, g->threads);
    observe_tensor(g, dn->fuse_out, n);
    observe_tensor(g, dn->fuse_gap, n);
    return 0;
}

/* Profiling: per op type, and per node when node_time is allocated. */
static void profile_add(cn_graph *g, const cn_node *nd, int i, int backward, double t0) {
    double dt = omp_get_wtime() - t0;
    g->op_time[backward][cn_node_profile_slot(nd)] += dt;
    if (g->node_time) g->node_time[2 * i + backward] += dt;
}

/* nodes [from, to) of a forward (from 0: the input node first) */
static void forward_nodes(cn_graph *g, const float *input, int n, int train, int from, int to) {
    omp_set_num_threads(g->threads);
    /* In eval mode the input tensor is the caller's buffer itself for the pass (nothing writes
     * into a node's input then, and the output tensor is another), instead of a copy of it:
     * 9.6 MB at batch 16, 1.3 ms of efficientnet_b0's 64. A training pass keeps its copy for
     * the backward, and fake quantization writes into each output, the input's too. */
    cn_tensor *borrowed = NULL;
    float *own = NULL;
    /* a training forward is followed by an update of the weights, whoever makes it */
    if (train) cn_graph_params_changed(g);
    for (int i = from; i < to; i++) {
        cn_node *nd = &g->nodes[i];
        if (nd->fused || (!train && nd->eval_skip)) continue;
        double t0 = g->profile ? omp_get_wtime() : 0;
        if (!train && nd->fuse_out >= 0) {
            const double apart = conv_fused_forward(g, nd, n);
            if (g->profile) profile_add(g, nd, i, 0, t0 + apart);
            continue;
        }
        cn_tensor *out = &g->tensors[nd->act_out >= 0 ? nd->act_out : nd->out];
        const cn_tensor *in = nd->op == CN_OP_INPUT ? NULL : &g->tensors[nd->in[0]];
        cn_conv_desc d = nd->desc;
        d.n = n;
        switch (nd->op) {
        case CN_OP_INPUT:
            if (!train && !g->fq_fwd && out != cn_graph_output(g)) {
                borrowed = out;
                own = out->data;
                out->data = (float *)(uintptr_t)input;
            } else {
                memcpy(out->data, input, sizeof(float) * numel(out, n));
            }
            break;
        case CN_OP_CONV:
            if (train && nd->bn_of >= 0) {
                /* the BN's sums of each image, taken as the images leave the kernels */
                cn_node *bn = &g->nodes[nd->bn_of];
                cn_conv2d_forward_train_stats(out->data, in->data, cn_entry_data(g, nd->p[0]), &d,
                                              g->workspace, g->threads, bn->img_sums);
                bn->sums_ready = 1;
                break;
            }
            (train ? cn_conv2d_forward_train : cn_conv2d_forward)(
                out->data, in->data, cn_entry_data(g, nd->p[0]),
                nd->p[1] >= 0 ? cn_entry_data(g, nd->p[1]) : NULL, &d, g->workspace, g->threads);
            break;
        case CN_OP_BN: {
            size_t m = (size_t)n * in->h * in->w;
            float *gamma = cn_entry_data(g, nd->p[0]), *beta = cn_entry_data(g, nd->p[1]);
            float *rm = cn_entry_data(g, nd->buf[0]), *rv = cn_entry_data(g, nd->buf[1]);
            cn_act act = nd->act_out >= 0 ? nd->act : CN_ACT_NONE;
            const float *res = nd->res_in >= 0 ? g->tensors[nd->res_in].data : NULL;
            if (train && nd->sums_ready) {
                cn_batchnorm_res_forward_train_sums(out->data, nd->save, rm, rv, in->data, res,
                                                    gamma, beta, m, in->c, nd->a.bn.eps,
                                                    nd->a.bn.momentum, g->scratch, act,
                                                    nd->img_sums, n);
                nd->sums_ready = 0;
                g->counters[g->entries[nd->buf[2]].offset] += 1;
            } else if (train) {
                cn_batchnorm_res_forward_train(out->data, nd->save, rm, rv, in->data, res, gamma,
                                               beta, m, in->c, nd->a.bn.eps, nd->a.bn.momentum,
                                               g->scratch, act);
                g->counters[g->entries[nd->buf[2]].offset] += 1;
            } else {
                cn_batchnorm_res_forward_eval(out->data, in->data, res, gamma, beta, rm, rv, m,
                                              in->c, nd->a.bn.eps, g->scratch, act);
            }
            break;
        }
        case CN_OP_RELU: cn_relu_forward(out->data, in->data, numel(out, n)); break;
        case CN_OP_MAXPOOL: cn_maxpool_forward(out->data, train ? nd->argmax : NULL, in->data, &d); break;
        case CN_OP_AVGPOOL: cn_avgpool_forward(out->data, in->data, &d); break;
        case CN_OP_GAP: cn_gap_forward(out->data, in->data, n, in->h * in->w, in->c); break;
        case CN_OP_ADD:
            cn_add_forward(out->data, in->data, g->tensors[nd->in[1]].data, numel(out, n));
            break;
        case CN_OP_SHORTCUT_A:
            cn_shortcut_a_forward(out->data, in->data, n, in->h, in->w, in->c, out->h, out->w,
                                  out->c, nd->a.shortcut.stride);
            break;
        case CN_OP_FLATTEN: cn_flatten_forward(out->data, in->data, n, in->h, in->w, in->c); break;
        case CN_OP_LINEAR:
            cn_linear_forward(out->data, in->data, cn_entry_data(g, nd->p[0]),
                              cn_entry_data(g, nd->p[1]), n, in->h * in->w * in->c, out->c);
            break;
        case CN_OP_SILU: cn_silu_forward(out->data, in->data, numel(out, n)); break;
        case CN_OP_SIGMOID: cn_sigmoid_forward(out->data, in->data, numel(out, n)); break;
        case CN_OP_SCALE:
            cn_scale_forward(out->data, in->data, g->tensors[nd->in[1]].data, n, in->h * in->w,
                             in->c);
            break;
        case CN_OP_DROPOUT:
        case CN_OP_DROPPATH: {
            size_t per = nd->op == CN_OP_DROPOUT ? 1 : (size_t)in->h * in->w * in->c;
            if (!train || nd->a.drop.p == 0.0f) {
                memcpy(out->data, in->data, sizeof(float) * numel(out, n));
                break;
            }
            if (!g->external_masks)
                cn_dropout_mask(nd->mask, numel(out, n) / per, nd->a.drop.p, g->noise_seed,
                                (uint64_t)i, g->noise_step);
            cn_mask_forward(out->data, in->data, nd->mask, numel(out, n), per);
            break;
        }
        case CN_OP_COUNT: break;
        }
        if (g->fq_fwd) g->fq_fwd(g->fq, (int)(out - g->tensors), out->data, numel(out, n), train);
        if (g->profile) profile_add(g, nd, i, 0, t0);
        if (g->observe) g->observe(g->observe_user, (int)(out - g->tensors), out->data, numel(out, n));
    }
    if (borrowed) borrowed->data = own;
}

/* ---- image lanes ----
 * An eval forward of a batch can run its first layers as one lane a thread, each lane taking
 * whole images one at a time through those layers on one thread, and the rest of the network
 * over the batch with the threads inside each layer as usual. A lane's activations are those of
 * one image (EfficientNet-B0's largest, 112x112x96, 4.8 MB, read back by the next layer while
 * it is in the caches) where the batch's are 16 times that and stream through memory at every
 * layer, and the lanes do not wait for each other; but each lane reads the weights of those
 * layers once per image, which pays while they are small against an image's activations:
 * the lanes stop at the first convolution (on a map, not an SE product) whose weights outweigh
 * its input and output for one image (ResNet-50: at layer3's stride-2 3x3 convolution;
 * ResNet-18 at layer3's first; EfficientNet-B0 at the projection of stage 6's first block;
 * stopping where the weights outweigh the output alone, stage 4, lost most of the gain).
 * Measured at 2 threads against CN_IMAGE_LANES=0, runs alternated: efficientnet_b0 batch 16
 * 1.096x (5 pairs, 1.06-1.15), ResNet-20 on 28x28 batch 128 1.053x (5), resnet18 batch 16
 * 1.036x (4), resnet50 batch 16 1.014x (4, within the noise). Every layer in the lanes would
 * be slower for ResNet-50 (its last stages lose their batched GEMMs: per layer, two one-thread
 * processes of 8 images summed 405 ms against 380 for the batch) and gained 1.03-1.05x for
 * EfficientNet-B0. CN_IMAGE_LANES=0 turns the lanes off, =1 runs every layer in them
 * (benchmarks, tests). */

static int lanes_env(void) {
    const char *e = getenv("CN_IMAGE_LANES");
    return e && (*e == '0' || *e == '1') ? *e - '0' : -1;
}

static size_t tensor_img(const cn_tensor *t) { return (size_t)t->h * t->w * t->c; }

/* the first node the lanes do not run (see above); 0: no lanes */
static int lane_split_of(const cn_graph *g) {
    const int env = lanes_env();
    if (env == 1) return g->nnodes;
    for (int i = 1; i < g->nnodes; i++) {
        const cn_node *nd = &g->nodes[i];
        if (nd->fused || nd->eval_skip || nd->op != CN_OP_CONV) continue;
        const cn_tensor *o = &g->tensors[nd->out];
        if (o->h * o->w <= 1) continue;
        const double wbytes = (double)g->entries[nd->p[0]].count * sizeof(float);
        const double abytes = (double)(tensor_img(o) + tensor_img(&g->tensors[nd->in[0]]));
        if (wbytes > abytes * sizeof(float)) return i > 1 ? i : 0;
    }
    return g->nnodes;
}

static int lanes_wanted(const cn_graph *g, int n) {
    return g->threads >= 2 && n >= g->threads && !g->profile && !g->observe && !g->fq_fwd &&
           !g->nofuse && lanes_env() != 0;
}

/* the tensors a node writes in an eval forward (the plan's: its output, a fused pool, a fused
 * depthwise convolution's output and pool; -1 for none) */
static void node_outputs(const cn_graph *g, const cn_node *nd, int outs[4]) {
    const cn_node *dw = nd->fuse_dw >= 0 ? &g->nodes[nd->fuse_dw] : NULL;
    outs[0] = nd->fuse_out >= 0 ? nd->fuse_out : nd->act_out >= 0 ? nd->act_out : nd->out;
    outs[1] = nd->fuse_gap;
    outs[2] = dw ? dw->fuse_out : -1;
    outs[3] = dw ? dw->fuse_gap : -1;
}

/* the tensors a node reads in an eval forward (-1 for none) */
static void node_inputs(const cn_node *nd, int ins[5]) {
    ins[0] = nd->fuse_in >= 0 ? nd->fuse_in : nd->in[0];
    ins[1] = nd->fuse_in >= 0 ? nd->fuse_scale : -1;
    ins[2] = two_inputs(nd->op) ? nd->in[1] : -1;
    ins[3] = nd->fuse_res;
    ins[4] = nd->res_in;
}

/* this lane's view of g: g's fields, with its own tensors, arena, workspace and scratch */
static void lane_sync(cn_graph *l, const cn_graph *g) {
    cn_graph own = *l;
    *l = *g;
    l->tensors = own.tensors;
    l->arena = own.arena;
    l->workspace = own.workspace;
    l->workspace_floats = own.workspace_floats;
    l->scratch = own.scratch;
    l->wino_wide = own.wino_wide;
    l->batch = 1;
    l->threads = 1;
    l->lanes = NULL;
    l->nlanes = 0;
    l->lane_bnd = NULL;
    l->nlane_bnd = 0;
    l->profile = 0;
    l->node_time = NULL;
}

/* which tensors the lanes hand over: written before the split and read after it (or the
 * output); returns 0 when memory is short */
static int lanes_boundary(cn_graph *g, int split) {
    char *written = calloc((size_t)g->ntensors, 1), *read = calloc((size_t)g->ntensors, 1);
    g->lane_bnd = malloc(sizeof(int) * (size_t)g->ntensors);
    if (!written || !read || !g->lane_bnd) {
        free(written), free(read);
        return 0;
    }
    for (int i = 0; i < g->nnodes; i++) {
        const cn_node *nd = &g->nodes[i];
        if (nd->fused || nd->eval_skip) continue;
        if (i < split) {
            int outs[4];
            node_outputs(g, nd, outs);
            for (int o = 0; o < 4; o++)
                if (outs[o] >= 0) written[outs[o]] = 1;
        } else {
            int ins[5];
            node_inputs(nd, ins);
            for (int k = 0; k < 5; k++)
                if (ins[k] >= 0) read[ins[k]] = 1;
        }
    }
    read[g->ntensors - 1] = 1; /* the logits */
    read[g->nodes[0].out] = 0; /* the input: the caller's, copied for the batch if read */
    g->nlane_bnd = 0;
    for (int t = 0; t < g->ntensors; t++)
        if (written[t] && read[t]) g->lane_bnd[g->nlane_bnd++] = t;
    free(written), free(read);
    return 1;
}

/* the lanes of g's plan, made once (freed with the plan); 0 when there are none to make or
 * memory is short (the batch then runs the usual way) */
static int lanes_make(cn_graph *g) {
    if (g->lanes) return 1;
    const int split = lane_split_of(g);
    if (split <= 1) return 0;
    const int T = g->threads;
    size_t *offset = malloc(sizeof(size_t) * (size_t)g->ntensors);
    cn_graph *lanes = calloc((size_t)T, sizeof(cn_graph));
    size_t total = offset ? plan_eval_offsets(g, 1, offset) : SIZE_MAX, wino = 0, scratch = 0;
    const size_t ws = plan_workspace(g, 1, 1, 0, &wino);
    for (int i = 0; i < g->nnodes; i++)
        if (g->nodes[i].op == CN_OP_BN) {
            const size_t need = cn_batchnorm_scratch(g->tensors[g->nodes[i].out].c);
            if (need > scratch) scratch = need;
        }
    g->lanes = lanes;
    g->nlanes = lanes ? T : 0;
    int ok = lanes && total != SIZE_MAX && lanes_boundary(g, split);
    for (int t = 0; ok && t < T; t++) {
        cn_graph *l = &lanes[t];
        l->tensors = malloc(sizeof(cn_tensor) * (size_t)g->ntensors);
        l->arena = cn_alloc_huge(sizeof(float) * (total ? total : 1));
        l->workspace = cn_alloc_huge(sizeof(float) * (ws ? ws : 1));
        l->scratch = cn_alloc64(scratch ? scratch : 1);
        ok = l->tensors && l->arena && l->workspace && l->scratch;
        if (!ok) break;
        memcpy(l->tensors, g->tensors, sizeof(cn_tensor) * (size_t)g->ntensors);
        for (int i = 0; i < g->ntensors; i++) {
            l->tensors[i].data = offset[i] == SIZE_MAX ? NULL : (float *)l->arena + offset[i];
            l->tensors[i].grad = NULL;
        }
        l->workspace_floats = ws;
        l->wino_wide = wino <= (size_t)CN_WINO_CACHE_FLOATS;
    }
    free(offset);
    g->lane_split = split;
    if (!ok) lanes_free(g);
    return ok;
}

static int input_read_from(const cn_graph *g, int from) {
    for (int i = from; i < g->nnodes; i++) {
        const cn_node *nd = &g->nodes[i];
        int ins[5];
        node_inputs(nd, ins);
        for (int k = 0; k < 5; k++)
            if (ins[k] == g->nodes[0].out && !nd->fused && !nd->eval_skip) return 1;
    }
    return 0;
}

static void forward_lanes(cn_graph *g, const float *input, int n) {
    const int T = g->nlanes, split = g->lane_split;
    for (int t = 0; t < T; t++) lane_sync(&g->lanes[t], g);
    /* what the nodes cache from the weights (folded BN, packed depthwise filters, Winograd's
     * transformed weights as a one-image plan wants them) made here, so that the lanes only
     * read the shared nodes */
    cn_graph *l0 = &g->lanes[0];
    for (int i = 0; i < split; i++) {
        cn_node *nd = &g->nodes[i];
        if (nd->op != CN_OP_CONV || nd->fuse_out < 0) continue;
        (void)fold_epilogue(l0, nd);
        if (nd->fuse_dw >= 0) {
            (void)fold_epilogue(l0, &g->nodes[nd->fuse_dw]);
            (void)dw_weights(l0, &g->nodes[nd->fuse_dw]);
        }
        cn_conv_desc d = nd->desc;
        d.n = 1;
        if (is_depthwise(nd)) (void)dw_weights(l0, nd);
        else if (nd->fuse_in < 0 && cn_wino_wanted(&d, 1, l0->wino_wide))
            (void)wino_weights(l0, nd);
    }
    cn_tensor *in = &g->tensors[g->nodes[0].out];
    const size_t in_img = tensor_img(in);
#pragma omp parallel num_threads(T)
    {
        const int t = omp_get_thread_num(), nt = omp_get_num_threads();
        cn_graph *l = &g->lanes[t];
        for (int i = (int)((long)n * t / nt); i < (int)((long)n * (t + 1) / nt); i++) {
            for (int b = 0; b < g->nlane_bnd; b++) {
                const int x = g->lane_bnd[b];
                l->tensors[x].data = g->tensors[x].data + (size_t)i * tensor_img(&g->tensors[x]);
            }
            forward_nodes(l, input + (size_t)i * in_img, 1, 0, 0, split);
        }
    }
    if (split < g->nnodes) {
        /* the input read after the lanes too (a network reading it twice): the batch's copy */
        if (input_read_from(g, split)) memcpy(in->data, input, sizeof(float) * (size_t)n * in_img);
        forward_nodes(g, input, n, 0, split, g->nnodes);
    }
    omp_set_num_threads(g->threads);
}

void cn_graph_forward(cn_graph *g, const float *input, int n, int train) {
    if (!train && lanes_wanted(g, n) && lanes_make(g)) {
        forward_lanes(g, input, n);
        return;
    }
    forward_nodes(g, input, n, train, 0, g->nnodes);
}

/* Whether BN node b hands its dx to its convolution's backward (cn_node.bn_conv) at batch n. */
static int bn_deferred(const cn_graph *g, const cn_node *b, int n) {
    if (b->bn_conv < 0) return 0;
    cn_conv_desc d = g->nodes[b->bn_conv].desc;
    d.n = n;
    return cn_conv2d_backward_bn_ok(&d, g->threads);
}

/* What the backward of BN node b hands on (see cn_bn_dx). */
static cn_bn_dx bn_dx_of(const cn_graph *g, const cn_node *b) {
    const cn_tensor *out = &g->tensors[b->act_out >= 0 ? b->act_out : b->out];
    cn_bn_dx r = {out->grad, g->tensors[b->in[0]].data, b->act_out >= 0 ? out->data : NULL,
                  b->act_out >= 0 ? b->act : CN_ACT_NONE, g->tensors[b->in[0]].c, b->bn_k};
    return r;
}

void cn_graph_backward(cn_graph *g, int n) {
    omp_set_num_threads(g->threads);
    /* every activation gradient but the output's starts at zero: backward accumulates (600 MB
     * a step for EfficientNet-B0 at batch 16: each thread clears its share of every tensor) */
#pragma omp parallel num_threads(g->threads)
    {
        const size_t t = (size_t)omp_get_thread_num(), T = (size_t)omp_get_num_threads();
        for (int i = 0; i < g->ntensors - 1; i++)
            if (!g->tensors[i].dead && !g->tensors[i].grad_alias && !g->tensors[i].grad_set) {
                const size_t all = numel(&g->tensors[i], n), a = all * t / T;
                memset(g->tensors[i].grad + a, 0, sizeof(float) * (all * (t + 1) / T - a));
            }
    }
    for (int i = g->nnodes - 1; i >= 0; i--) {
        cn_node *nd = &g->nodes[i];
        if (nd->op == CN_OP_INPUT || nd->fused) continue;
        double t0 = g->profile ? omp_get_wtime() : 0;
        cn_tensor *out = &g->tensors[nd->act_out >= 0 ? nd->act_out : nd->out];
        cn_tensor *in = &g->tensors[nd->in[0]];
        if (g->fq_bwd) g->fq_bwd(g->fq, (int)(out - g->tensors), out->grad, numel(out, n));
        /* the input image needs no gradient */
        float *din = g->nodes[0].out == nd->in[0] ? NULL : in->grad;
        cn_conv_desc d = nd->desc;
        d.n = n;
        switch (nd->op) {
        case CN_OP_INPUT: break;
        case CN_OP_CONV:
            if (nd->bn_of >= 0 && bn_deferred(g, &g->nodes[nd->bn_of], n)) {
                const cn_bn_dx *b = &g->nodes[nd->bn_of].bn_dx;
                cn_conv2d_backward_bn(din, cn_entry_grad(g, nd->p[0]), b, in->data,
                                      cn_entry_data(g, nd->p[0]), &d, g->workspace, g->threads,
                                      din && in->grad_set);
                break;
            }
            (din && in->grad_set ? cn_conv2d_backward_set : cn_conv2d_backward)(
                din, cn_entry_grad(g, nd->p[0]), nd->p[1] >= 0 ? cn_entry_grad(g, nd->p[1]) : NULL,
                out->grad, in->data, cn_entry_data(g, nd->p[0]), &d, g->workspace, g->threads);
            break;
        case CN_OP_BN: {
            /* a fused residual's gradient (none for the input image) */
            const cn_tensor *rt = nd->res_in >= 0 ? &g->tensors[nd->res_in] : NULL;
            float *dres = rt && nd->res_in != g->nodes[0].out ? rt->grad : NULL;
            if (bn_deferred(g, nd, n)) {
                /* dx is made by the convolution's backward, next */
                nd->bn_dx = bn_dx_of(g, nd);
                cn_batchnorm_res_backward_coeffs(&nd->bn_dx, dres, cn_entry_grad(g, nd->p[0]),
                                                 cn_entry_grad(g, nd->p[1]),
                                                 cn_entry_data(g, nd->p[0]),
                                                 cn_entry_data(g, nd->p[1]), nd->save,
                                                 (size_t)n * in->h * in->w, g->scratch,
                                                 dres && rt->grad_set);
                break;
            }
            cn_batchnorm_res_backward_train(
                din, dres, cn_entry_grad(g, nd->p[0]), cn_entry_grad(g, nd->p[1]), out->grad,
                in->data, cn_entry_data(g, nd->p[0]), cn_entry_data(g, nd->p[1]), nd->save,
                (size_t)n * in->h * in->w, in->c, g->scratch,
                nd->act_out >= 0 ? nd->act : CN_ACT_NONE, nd->act_out >= 0 ? out->data : NULL,
                din && in->grad_set, dres && rt->grad_set);
            break;
        }
        case CN_OP_RELU:
            if (nd->grad_alias) cn_relu_backward_inplace(out->grad, out->data, numel(out, n));
            else if (din) cn_relu_backward(din, out->grad, out->data, numel(out, n));
            break;
        case CN_OP_MAXPOOL:
            if (din) cn_maxpool_backward(din, out->grad, nd->argmax, &d);
            break;
        case CN_OP_AVGPOOL:
            if (din) cn_avgpool_backward(din, out->grad, &d);
            break;
        case CN_OP_GAP:
            if (din) cn_gap_backward(din, out->grad, n, in->h * in->w, in->c);
            break;
        case CN_OP_ADD: {
            int b = nd->in[1];
            float *db = g->nodes[0].out == b ? NULL : g->tensors[b].grad;
            cn_add_backward(nd->grad_alias & 1 ? NULL : din, nd->grad_alias & 2 ? NULL : db,
                            out->grad, numel(out, n));
            break;
        }
        case CN_OP_SHORTCUT_A:
            if (din)
                cn_shortcut_a_backward(din, out->grad, n, in->h, in->w, in->c, out->h, out->w,
                                       out->c, nd->a.shortcut.stride);
            break;
        case CN_OP_FLATTEN:
            if (din) cn_flatten_backward(din, out->grad, n, in->h, in->w, in->c);
            break;
        case CN_OP_LINEAR:
            cn_linear_backward(din, cn_entry_grad(g, nd->p[0]), cn_entry_grad(g, nd->p[1]),
                               out->grad, in->data, cn_entry_data(g, nd->p[0]), n,
                               in->h * in->w * in->c, out->c);
            break;
        case CN_OP_SILU:
            if (din) cn_silu_backward(din, out->grad, in->data, numel(out, n));
            break;
        case CN_OP_SIGMOID:
            if (din) cn_sigmoid_backward(din, out->grad, out->data, numel(out, n));
            break;
        case CN_OP_SCALE: {
            int s = nd->in[1];
            float *ds = g->nodes[0].out == s ? NULL : g->tensors[s].grad;
            cn_scale_backward(din, ds, out->grad, in->data, g->tensors[s].data, n,
                              in->h * in->w, in->c);
            break;
        }
        case CN_OP_DROPOUT:
        case CN_OP_DROPPATH:
            if (!din) break;
            if (nd->a.drop.p == 0.0f) {
                cn_add_backward(din, NULL, out->grad, numel(out, n));
            } else {
                size_t per = nd->op == CN_OP_DROPOUT ? 1 : (size_t)in->h * in->w * in->c;
                cn_mask_backward(din, out->grad, nd->mask, numel(out, n), per);
            }
            break;
        case CN_OP_COUNT: break;
        }
        if (g->profile) profile_add(g, nd, i, 1, t0);
    }
}

int64_t cn_node_params(const cn_graph *g, const cn_node *nd) {
    int64_t s = 0;
    for (int i = 0; i < 2; i++)
        if (nd->p[i] >= 0) s += (int64_t)g->entries[nd->p[i]].count;
    return s;
}

int64_t cn_node_macs(const cn_graph *g, const cn_node *nd) {
    const cn_tensor *out = &g->tensors[nd->out];
    int64_t outn = (int64_t)out->h * out->w * out->c;
    switch (nd->op) {
    case CN_OP_CONV:
        return outn * nd->desc.kh * nd->desc.kw * (nd->desc.c / nd->desc.groups);
    case CN_OP_LINEAR: return (int64_t)g->entries[nd->p[0]].count;
    default: return 0;
    }
}
