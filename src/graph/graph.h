/* The graph: a list of nodes in topological order over tensors, plus the state table (every
 * parameter and buffer of the model, in torchvision state_dict order) backed by flat arrays.
 *
 * Build once (channels are known at build time), then plan for a batch size and an input size
 * (spatial shapes are inferred then), then run forward in order and backward in reverse. */
#ifndef CN_GRAPH_H
#define CN_GRAPH_H

#include <stddef.h>
#include <stdint.h>

#include "convnet.h"
#include "ops/ops.h"

typedef enum cn_op {
    CN_OP_INPUT,
    CN_OP_CONV,
    CN_OP_BN,
    CN_OP_RELU,
    CN_OP_MAXPOOL,
    CN_OP_AVGPOOL,
    CN_OP_GAP,
    CN_OP_ADD,
    CN_OP_SHORTCUT_A,
    CN_OP_FLATTEN,
    CN_OP_LINEAR,
    CN_OP_SILU,
    CN_OP_SIGMOID,
    CN_OP_SCALE,    /* x (N,H,W,C) times s (N,1,1,C): the multiply of squeeze-and-excitation */
    CN_OP_DROPOUT,  /* element mask, identity in eval */
    CN_OP_DROPPATH, /* stochastic depth, "row" mode: one mask value per sample */
    CN_OP_COUNT
} cn_op;

const char *cn_op_name(cn_op op);

/* What a state entry is, and so where it lives and how it is initialised. */
typedef enum cn_entry_kind {
    CN_ENTRY_CONV_WEIGHT, /* param, stored OHWI, file layout OIHW; init kaiming normal fan_out */
    CN_ENTRY_LINEAR_WEIGHT, /* param (OC, K); init U(+-1/sqrt(K)) */
    CN_ENTRY_LINEAR_BIAS,   /* param; init U(+-1/sqrt(K)) */
    CN_ENTRY_CONV_BIAS,     /* param; init 0 */
    CN_ENTRY_BN_WEIGHT,     /* param; init 1 (0 with zero_init_residual where marked) */
    CN_ENTRY_BN_BIAS,       /* param; init 0 */
    CN_ENTRY_RUNNING_MEAN,  /* buffer; init 0 */
    CN_ENTRY_RUNNING_VAR,   /* buffer; init 1 */
    CN_ENTRY_NUM_BATCHES    /* int64 counter */
} cn_entry_kind;

#define CN_NAME_MAX 96

typedef struct cn_entry {
    char name[CN_NAME_MAX];
    cn_entry_kind kind;
    int ndim;
    int64_t shape[4]; /* torchvision's shape (OIHW for conv weights) */
    size_t count;
    size_t offset;    /* into params/grads (params), buffers (buffers) or counters */
    int fan;          /* init: fan_out for conv weights, fan_in for linear */
    int zero_init;    /* BN weight that zero_init_residual zeroes */
    int init_alt;     /* EfficientNet's linear init: weight U(+-1/sqrt(out_features)), bias 0 */
} cn_entry;

static inline int cn_entry_is_param(cn_entry_kind k) { return k <= CN_ENTRY_BN_BIAS; }

typedef struct cn_tensor {
    int c, h, w;      /* per sample; h, w set by planning */
    int dead;         /* never materialised (the output of a BN fused with its ReLU) */
    int grad_alias;   /* grad shares its consumer's output gradient buffer (see plan) */
    int grad_set;     /* its only consumer, a batch norm or a convolution that can
                         (cn_conv2d_sets_din), writes grad outright: no zeroing */
    float *data;      /* (batch, h, w, c) */
    float *grad;      /* same, training only */
} cn_tensor;

typedef struct cn_node {
    cn_op op;
    char name[CN_NAME_MAX]; /* module path, e.g. "layer1.0.conv1" */
    int in[2], out;
    int p[2];               /* state entries: weight, bias (-1 if none) */
    int buf[3];             /* BN: running_mean, running_var, num_batches_tracked */
    union {
        struct { int oc, k, stride, pad, groups; } conv;
        struct { float eps, momentum; } bn;
        struct { int k, stride, pad; } pool;
        struct { int oc, stride; } shortcut;
        struct { int oc; } linear;
        struct { float p; } drop;
    } a;
    /* fusion, decided by cn_graph_finalize: a BN whose only consumer is a ReLU or a SiLU writes
     * the activation's output itself (act_out >= 0, act the kind) and the activation node is
     * skipped (fused = 1) */
    int act_out;
    cn_act act;
    int fused;
    /* and a BN whose only consumer is a residual add that only a ReLU reads takes both: it
     * writes relu(bn(x) + res_in) to act_out (cn_batchnorm_res_*), the add is fused too, and the
     * backward passes the gradient on to res_in; -1: no residual */
    int res_in;
    /* training: a BN whose input only it reads, made by a convolution without bias
     * (bn_conv: that node; -1: none), hands dx to the convolution's backward as coefficients
     * (bn_k, 5 C floats) where cn_conv2d_backward_bn_ok for the batch at hand; the convolution's
     * bn_of names the BN */
    int bn_conv, bn_of;
    float *bn_k;
    cn_bn_dx bn_dx; /* what the BN's coefficients pass left for the convolution */
    /* and the other way in the forward: the convolution's per-image sums of its output for the
     * BN (batch x 2 x C doubles; sums_ready when the last training forward filled them) */
    double *img_sums;
    int sums_ready;
    /* inference fusion, also decided by cn_graph_finalize and used by eval forwards only: a
     * convolution absorbs the chain after it (its BN, folded into the epilogue's per-channel
     * scale and shift; the activation; eval-identity dropout and drop path; a residual add whose
     * other input is already computed; an activation after the add) and writes the chain's last
     * tensor, fuse_out (-1: nothing absorbed). Absorbed nodes have eval_skip set. */
    int fuse_out, fuse_bn, fuse_res;
    cn_act fuse_act;
    /* a 1x1 convolution after a squeeze-and-excitation product y = x * s that only it reads
     * takes the product into its weights instead, image by image (w'[o][c] = w[o][c] * s[n][c]:
     * OC x C multiplies in place of a pass over the H x W x C map): it reads fuse_in (x) and
     * fuse_scale (s, (N, 1, 1, C)); -1: no such product */
    int fuse_in, fuse_scale;
    /* a global average pool of fuse_out (a squeeze-and-excitation's squeeze) is taken by the
     * convolution's epilogue (cn_epilogue.pool) and written to this tensor; -1: none */
    int fuse_gap;
    /* a 1x1 convolution whose chain's output only a depthwise convolution (with its own chain)
     * reads runs that one too, band by band, without writing the expanded map whole
     * (cn_expand_dw_forward) where it pays; the depthwise node is skipped; -1: none */
    int fuse_dw;
    int eval_skip;
    /* gradient aliasing, decided by planning: a ReLU masks its output gradient in place and
     * passes the buffer on; an add hands its output gradient to inputs it is the only consumer
     * of (bit 0: in[0], bit 1: in[1]) instead of copying it */
    int grad_alias;
    /* filled by planning */
    cn_conv_desc desc;
    float *save;            /* BN: mean and invstd of the last train forward */
    int32_t *argmax;        /* max pool */
    float *mask;            /* dropout / drop path: the last train forward's mask */
    float *fold;            /* fused conv: the epilogue's scale and shift (2 x oc), made from
                               the parameters and buffers of param_version fold_version
                               (UINT64_MAX: not made yet) */
    uint64_t fold_version;
    /* fused conv: its weights in the layout of the kernel that runs it, made from the weights
     * of param_version packed_version: on the Winograd path (3x3) the transformed weights
     * (36, C, OC), or (36, OC, C) where cn_wino_transposed (kernels/winograd.h); depthwise, the
     * filters tap-major (K*K, C) (cn_dwconv_pack_weights); kept across plans, freed with the
     * graph */
    float *packed;
    uint64_t packed_version;
} cn_node;

typedef struct cn_graph {
    cn_node *nodes;
    int nnodes, cap_nodes;
    cn_tensor *tensors;
    int ntensors, cap_tensors;
    cn_entry *entries;
    int nentries, cap_entries;
    size_t nparams, nbuffers, ncounters;
    float *params, *grads, *buffers;
    int64_t *counters;
    /* incremented by cn_graph_params_changed whenever params may have been written: caches
     * derived from the weights (cn_node.packed) are valid for one version */
    uint64_t param_version;
    /* plan */
    int batch, in_h, in_w, train_plan, threads;
    float *workspace;
    size_t workspace_floats;
    void *scratch;          /* small per-op scratch (batch-norm sums) */
    void *arena;            /* all activations of the plan */
    int planned;
    /* the plan's convolutions keep at most CN_WINO_CACHE_FLOATS of transformed weights at its
     * batch with cn_wino_wanted's wide_cached: they take it (kernels/winograd.h) */
    int wino_wide;
    /* profiling: seconds per op type, forward [0] and backward [1], when profile is set */
    int profile;
    double op_time[2][CN_OP_COUNT + 1]; /* the last slot: depthwise convolutions */
    double *node_time;      /* per node, forward and backward (2 x nnodes), when allocated */
    /* dropout and drop-path masks come from (noise_seed, noise_step); with external_masks set
     * the forward keeps whatever the caller wrote into the nodes' masks (parity tests) */
    uint64_t noise_seed, noise_step;
    int external_masks;
    /* set before cn_graph_finalize: no fusion at all, so that an eval forward materialises
     * every tensor (int8 calibration observes them) */
    int nofuse;
    /* when set, called after each node of a forward with the tensor it wrote (n samples); after
     * an eval convolution that absorbed others, with each tensor of the chain it writes (its
     * output, a pool it took, a fused depthwise convolution's output and pool) */
    void (*observe)(void *user, int tensor, const float *data, size_t count);
    void *observe_user;
    /* quantization-aware training (on a nofuse graph): fq_fwd fake-quantizes a tensor in place
     * after the node that wrote it, fq_bwd masks its gradient before that node's backward;
     * gradient aliasing is off while they are set */
    void *fq;
    void (*fq_fwd)(void *fq, int tensor, float *data, size_t count, int train);
    void (*fq_bwd)(void *fq, int tensor, float *grad, size_t count);
    /* image lanes of an eval forward (graph.c, forward_lanes): one graph per thread, planned
     * for one image and one thread, sharing this one's nodes and weights; made on demand */
    struct cn_graph *lanes;
    int nlanes;
    int lane_split;     /* the lanes run nodes [0, lane_split), the batch the rest */
    int *lane_bnd;      /* the tensors the lanes write into this graph's arena (read after) */
    int nlane_bnd;
} cn_graph;

void cn_graph_init(cn_graph *g);
/* The profiling slot of a node: its op, or CN_OP_COUNT for a depthwise convolution. */
int cn_node_profile_slot(const cn_node *nd);
const char *cn_profile_slot_name(int slot);
void cn_graph_free(cn_graph *g);

/* Builders. Each returns the output tensor id, or -1 after recording an error. */
int cn_g_input(cn_graph *g, int c);
int cn_g_conv(cn_graph *g, const char *name, int x, int oc, int k, int stride, int pad,
              int groups, int bias);
int cn_g_bn(cn_graph *g, const char *name, int x, float eps, float momentum, int zero_init);
int cn_g_relu(cn_graph *g, int x);
int cn_g_maxpool(cn_graph *g, int x, int k, int stride, int pad);
int cn_g_avgpool(cn_graph *g, int x, int k, int stride, int pad);
int cn_g_gap(cn_graph *g, int x);
int cn_g_add(cn_graph *g, int a, int b);
int cn_g_shortcut_a(cn_graph *g, int x, int oc, int stride);
int cn_g_flatten(cn_graph *g, int x);
int cn_g_linear(cn_graph *g, const char *name, int x, int oc);
int cn_g_silu(cn_graph *g, int x);
int cn_g_sigmoid(cn_graph *g, int x);
int cn_g_scale(cn_graph *g, int x, int s);
int cn_g_dropout(cn_graph *g, const char *name, int x, float p);
int cn_g_droppath(cn_graph *g, const char *name, int x, float p);

/* To be called after writing into params (or handing them to code that may): invalidates what
 * was derived from the weights. Every writer in the library calls it; code outside the library
 * writes through cn_model_tensor_set or cn_model_load_state, which do. */
void cn_graph_params_changed(cn_graph *g);

/* Allocates the flat state arrays once building is done. */
cn_status cn_graph_finalize(cn_graph *g);
/* Torchvision's initialisation, from a counter-based RNG (same seed, same weights). */
void cn_graph_init_params(cn_graph *g, uint64_t seed, int zero_init_residual);

/* The spatial shape of every tensor (and each node's desc) at an input size, no memory. */
cn_status cn_graph_shapes(cn_graph *g, int h, int w);
/* Shapes and memory for a batch size and input size; no-op when already planned so. */
cn_status cn_graph_plan(cn_graph *g, int batch, int h, int w, int train, int threads);
/* input (n, h, w, c) NHWC; n <= planned batch. The logits are the last tensor's data. */
void cn_graph_forward(cn_graph *g, const float *input, int n, int train);
/* The last tensor's grad must hold dL/dlogits for n rows. Accumulates into g->grads. */
void cn_graph_backward(cn_graph *g, int n);
const cn_tensor *cn_graph_output(const cn_graph *g);

int cn_graph_find(const cn_graph *g, const char *name);
/* How many node inputs read tensor t; the node that is its only reader (-1 if none or several). */
int cn_graph_consumers(const cn_graph *g, int t);
int cn_graph_sole_consumer(const cn_graph *g, int t);
int64_t cn_graph_param_count(const cn_graph *g);
/* MACs of one node for one sample at the planned shape */
int64_t cn_node_macs(const cn_graph *g, const cn_node *nd);
int64_t cn_node_params(const cn_graph *g, const cn_node *nd);

/* Copies between the state table and torchvision's layout (OIHW for conv weights). */
void cn_entry_get(const cn_graph *g, int e, const float *src_internal, float *dst_torch);
void cn_entry_set(const cn_graph *g, int e, const float *src_torch, float *dst_internal);
float *cn_entry_data(const cn_graph *g, int e);  /* params or buffers, internal layout */
float *cn_entry_grad(const cn_graph *g, int e);  /* NULL for buffers */

#endif
