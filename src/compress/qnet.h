/* The int8 network: a model's graph run in integers (see cn_quantize_int8 in convnet.h).
 *
 * Built from a float graph and a range per tensor (calibration): every batch norm is folded into
 * the convolution before it, weights become int8 symmetric per output channel, activations uint8
 * per tensor (scale, zero point), biases int32 in the accumulator's units. Its steps walk the
 * graph's tensors:
 *   QUANT   float input -> uint8
 *   CONV    dense or depthwise convolution + folded BN; a ReLU after it is a clamp, a SiLU or a
 *           sigmoid a 256-entry table on the requantized pre-activation
 *   ADD     residual add: both inputs rescaled to a common scale with 20 bits of headroom,
 *           added, requantized (a following ReLU is a clamp)
 *   MUL     the squeeze-and-excitation product x * s, requantized
 *   MAXPOOL, GAP, SHORTCUT (option A), LUT (an activation on its own)
 *   LINEAR  the classifier: int32 dot products, float logits out
 * Dropout, drop path and flatten are identities: their output tensor aliases their input. */
#ifndef CN_COMPRESS_QNET_H
#define CN_COMPRESS_QNET_H

#include <stdint.h>

#include "graph/graph.h"
#include "io/safetensors.h"
#include "kernels/qconv.h"

typedef enum cn_qop {
    CN_Q_QUANT, CN_Q_CONV, CN_Q_DWCONV, CN_Q_ADD, CN_Q_MUL, CN_Q_MAXPOOL, CN_Q_GAP,
    CN_Q_SHORTCUT, CN_Q_LUT, CN_Q_LINEAR, CN_Q_NOPS
} cn_qop;
const char *cn_qop_name(cn_qop op);

typedef struct cn_qstep {
    cn_qop op;
    int node;               /* the graph node of the main op */
    int in[2], out;         /* graph tensors (after aliasing) */
    int act_node;           /* the activation node fused in (-1 none) */
    int pre;                /* CONV with a table: the tensor the table reads (pre-activation) */
    /* CONV / DWCONV / LINEAR */
    int oc, k;              /* k: weights per output channel */
    int8_t *w;              /* (oc, kh, kw, c) dense / (kh, kw, c) depthwise / (oc, k) linear */
    float *wscale;          /* (oc) */
    int32_t *bias;          /* (oc) accumulator units */
    int32_t *mult, *shift;  /* (oc) requantization */
    void *packed;
    void *params;           /* CONV / DWCONV: the prepared requantization (ep.params) */
    int32_t *wsum;          /* LINEAR: sum of each row of w */
    float *fbias;           /* LINEAR: the float bias */
    uint8_t lut[256];
    int has_lut;
    cn_qepilogue ep;
    cn_qconv_desc desc;
    /* ADD: per input multiplier/shift; MUL/GAP/LUT: one multiplier */
    int32_t m[3], s[3];
    int32_t qmin, qmax;
    /* kept in float32 (--keep-float): the folded float weights (internal layout) and biases;
     * the input is dequantized, the float kernel runs, the output is quantized */
    int fp;
    float *fw, *fb, *fone;
} cn_qstep;

typedef struct cn_qnet {
    cn_graph *g;            /* the float graph it was built from (shapes, names; not owned) */
    int nsteps;
    cn_qstep *steps;
    float *scale;           /* (ntensors) per graph tensor; 0: not quantized */
    int32_t *zp;            /* (ntensors) */
    int *alias;             /* (ntensors) the tensor whose storage a tensor uses */
    /* plan */
    int batch, h, w, threads;
    uint8_t **buf;          /* (ntensors) storage of each tensor (shared, not owned) */
    /* (nsteps) fuse[i]: convolution step i and the residual add step i + 1 that alone reads
     * its output run as one (the add in the convolution's epilogue, bit-identical), unless
     * observe is set */
    char *fuse;
    uint8_t **pool;         /* the owned buffers */
    int npool;
    void *workspace;
    size_t ws_bytes;
    float *logits;
    double *step_time;      /* per step, when profiling */
    float *fin, *fout, *fws;  /* float32 steps: dequantized input, output, conv workspace */
    /* when set, called after each step with the tensor it wrote (uint8; the logits as float) */
    void (*observe)(void *user, int step, const void *data, size_t count);
    void *observe_user;
} cn_qnet;

/* The smallest activation scale (float32's epsilon, as PyTorch): a constant tensor gets it. */
#define CN_QSCALE_MIN 1.1920929e-07

/* A range per graph tensor (lo <= 0 <= hi after widening to include 0). */
typedef struct cn_qrange {
    float lo, hi;
} cn_qrange;

/* Builds the int8 network of g (eval mode; every BN after a convolution). keep (NULL, or one
 * byte per graph node) marks convolutions and the linear layer to keep in float32. */
cn_status cn_qnet_build(cn_qnet **out, cn_graph *g, const cn_qrange *ranges, const char *keep);
/* Runs step i alone on the given storage (n images at the planned shapes); x is the float input
 * of a QUANT step. */
void cn_qnet_run_step(cn_qnet *q, int i, const float *x, const uint8_t *in0, const uint8_t *in1,
                      uint8_t *out, float *logits, int n, int threads);
/* Plans shapes and storage for a batch (done by forward; sensitivity calls it first). */
cn_status cn_qnet_plan(cn_qnet *q, int batch, int h, int w, int threads);
void cn_qnet_free(cn_qnet *q);
/* Runs n images (NHWC float, normalised) and writes float logits (n, classes). */
cn_status cn_qnet_forward(cn_qnet *q, const float *x, int n, int h, int w, int threads,
                          float *logits);
/* The file form: tensors and the metadata "quant" (scheme int8). */
cn_status cn_qnet_add_state(const cn_qnet *q, cn_st_writer *w, void **scratch);
cn_status cn_qnet_load(cn_qnet **out, cn_graph *g, const cn_st_file *f);
/* The tensors the int8 network quantizes with their own range (point[t] = 1): the input, the
 * outputs of convolutions (after their activation), adds, products, pools, tables, and the
 * pre-activations that tables read. What quantization-aware training fake-quantizes. */
cn_status cn_qnet_points(cn_graph *g, uint8_t *point);
/* scale and zero point of a range, widened to contain 0 (calibration and QAT share it) */
void cn_qrange_params(float lo, float hi, float *scale, int32_t *zp);
/* bytes of the integer state (weights, biases, scales) */
int64_t cn_qnet_bytes(const cn_qnet *q);

#endif
