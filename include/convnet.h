/* convnet.h: the one public header of libconvnet, a C11 library that builds, trains, prunes,
 * quantizes and runs ResNet and EfficientNet image classifiers on CPUs.
 *
 * A short tour:
 *
 *     cn_model *m;
 *     cn_model_config cfg;
 *     cn_model_config_default(&cfg);
 *     cfg.name = "resnet20"; cfg.in_channels = 1; cfg.num_classes = 10;
 *     if (cn_model_create(&m, &cfg) != CN_OK) { fprintf(stderr, "%s\n", cn_errmsg()); ... }
 *     float logits[10];
 *     cn_model_forward(m, image_nchw, 1, 28, 28, 0, logits);   // eval mode
 *     cn_model_save(m, "model.safetensors");                    // torchvision names, OIHW
 *     cn_model_free(m);
 *
 * Training: cn_model_forward(..., train=1, ...), cn_model_loss() for the softmax cross-entropy
 * and its gradient, cn_model_backward(), then cn_optim_step(). cn_train() runs the whole loop
 * with checkpoints; the `convnet` tool is a thin layer over it.
 *
 * Conventions: every function that can fail returns a cn_status, and cn_errmsg() then describes
 * the failure (the message is kept per thread). Results come back through out-pointers. Freeing
 * NULL is a no-op. The library never exits or aborts on a recoverable error. Tensors at this API
 * are float32 NCHW, as in PyTorch; inside, activations are NHWC.
 */
#ifndef CONVNET_H
#define CONVNET_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum cn_status {
    CN_OK = 0,
    CN_ERR_NOMEM,       /* an allocation failed */
    CN_ERR_IO,          /* a file could not be opened, read or written */
    CN_ERR_FORMAT,      /* a file's contents are malformed */
    CN_ERR_ARG,         /* an argument is out of range or unknown */
    CN_ERR_SHAPE,       /* tensor shapes do not agree */
    CN_ERR_UNSUPPORTED, /* valid but not supported (yet) */
    CN_ERR_INTERNAL     /* a bug: please report it */
} cn_status;

/* The message of the last error on the calling thread ("no error" if none). */
const char *cn_errmsg(void);
void cn_clear_error(void);
const char *cn_status_name(cn_status st);

/* ---------------------------------------------------------------- models */

typedef struct cn_model cn_model;

typedef struct cn_model_config {
    const char *name;       /* "resnet18", "resnet20", ...; see cn_model_list() */
    int in_channels;        /* 0: the model's default (3) */
    int num_classes;        /* 0: the model's default (1000 torchvision, 10 CIFAR) */
    int zero_init_residual; /* zero the last BN scale of each residual branch */
    uint64_t seed;          /* initialisation */
    int threads;            /* 0: all cores */
    /* EfficientNet only; 0 (or negative for the probabilities) keeps the model's default */
    double phi;             /* "efficientnet": compound scaling, width 1.1^phi, depth 1.2^phi,
                             * resolution 224 * 1.15^phi */
    double width_mult, depth_mult; /* "efficientnet": explicit multipliers instead of phi */
    int resolution;         /* the default input size */
    float dropout;          /* classifier dropout probability; < 0: default */
    float stochastic_depth; /* the last block's drop-path probability; < 0: default (0.2) */
} cn_model_config;

void cn_model_config_default(cn_model_config *cfg);
const char *cn_model_list(void);
cn_status cn_model_create(cn_model **out, const cn_model_config *cfg);
/* Loads a .safetensors model. Its architecture comes from the file's metadata; a plain
 * torchvision state_dict (no metadata) needs cfg->name, and then in_channels and num_classes are
 * read from the weights' shapes. cfg may be NULL for convnet's own files. */
cn_status cn_model_load(cn_model **out, const char *path, const cn_model_config *cfg);
/* Writes atomically (temporary file, fsync, rename): the state_dict under torchvision's names and
 * layouts, and the architecture as JSON in the metadata under "arch". */
cn_status cn_model_save(const cn_model *m, const char *path);
void cn_model_free(cn_model *m);

const char *cn_model_name(const cn_model *m);
int cn_model_in_channels(const cn_model *m);
int cn_model_num_classes(const cn_model *m);
int cn_model_default_size(const cn_model *m);
/* Dropout and stochastic depth draw their masks from (seed, step), so that a training run is
 * reproducible and resumes exactly; cn_train sets it before each step. */
void cn_model_set_noise(cn_model *m, uint64_t seed, uint64_t step);
int64_t cn_model_param_count(const cn_model *m);
/* The architecture as a JSON object (owned by the model, valid until the next call). */
const char *cn_model_arch_json(const cn_model *m);
void cn_model_set_threads(cn_model *m, int threads);
int cn_model_threads(const cn_model *m);

/* Forward pass on n images (n, C, h, w) NCHW; logits (n, num_classes) when non-NULL. train=1
 * uses batch statistics, updates BN running statistics and keeps what backward needs. */
cn_status cn_model_forward(cn_model *m, const float *input_nchw, int n, int h, int w, int train,
                           float *logits);
/* The same on NHWC input (what the data loader produces; no transpose). */
cn_status cn_model_forward_nhwc(cn_model *m, const float *input_nhwc, int n, int h, int w,
                                int train, float *logits);
/* Mean softmax cross-entropy (with label smoothing) of the last forward's logits; sets
 * d(loss)/d(logits) for cn_model_backward. correct may be NULL. */
cn_status cn_model_loss(cn_model *m, const int32_t *labels, float smoothing, float *loss,
                        int *correct);
/* Backward of the last train forward: accumulates into the parameter gradients. */
cn_status cn_model_backward(cn_model *m);
void cn_model_zero_grad(cn_model *m);

/* The state table: every parameter and buffer, in torchvision state_dict order. */
int cn_model_tensor_count(const cn_model *m);
typedef struct cn_tensor_info {
    const char *name;
    int ndim;
    int64_t shape[4];
    int64_t count;
    int is_param;           /* trainable; else a buffer */
    int is_int64;           /* num_batches_tracked */
} cn_tensor_info;
cn_status cn_model_tensor_info(const cn_model *m, int i, cn_tensor_info *info);
int cn_model_tensor_find(const cn_model *m, const char *name);
/* Copies in torchvision's layout (float32; an int64 counter converts to float). */
cn_status cn_model_tensor_get(const cn_model *m, int i, float *dst);
cn_status cn_model_tensor_set(cn_model *m, int i, const float *src);
cn_status cn_model_grad_get(const cn_model *m, int i, float *dst);

/* One row per layer at an input size: output shape, parameters, multiply-accumulates. */
typedef struct cn_layer_info {
    const char *name;
    const char *op;
    int c, h, w;            /* output, per sample */
    int64_t params;
    int64_t macs;
    /* seconds spent in this node's forward and backward passes while profiling was on (see
     * cn_model_set_profiling); in an eval forward a convolution's time includes the batch norm,
     * activation and residual add fused into it, whose own rows then show 0 */
    double forward_s, backward_s;
} cn_layer_info;
/* Plans the model for (h, w) and fills *rows (owned by the model, valid until the next call). */
cn_status cn_model_layers(cn_model *m, int h, int w, const cn_layer_info **rows, int *count);

/* EfficientNet's derived stage table at an input size: the scaled MBConv settings of each of
 * the 7 stages (stem and head excluded) with the stage's input and output map sizes, parameters
 * and MACs per image. Returns the number of rows (0 for a model without stages). */
typedef struct cn_stage_info {
    int expand, kernel, stride, in_channels, out_channels, repeats;
    int in_h, in_w, out_h, out_w;
    int64_t params, macs;
} cn_stage_info;
int cn_model_stages(cn_model *m, int h, int w, cn_stage_info *rows, int max_rows);
/* EfficientNet's width and depth multipliers (1 for other models). */
double cn_model_width_mult(const cn_model *m);
double cn_model_depth_mult(const cn_model *m);

/* Per-op-type time of the forward and backward passes, accumulated while profiling is on
 * (turning it on resets the counters). Returns the number of rows written (at most max_rows). */
void cn_model_set_profiling(cn_model *m, int on);
typedef struct cn_op_time {
    const char *op;
    double forward_s, backward_s;
} cn_op_time;
int cn_model_profile(const cn_model *m, cn_op_time *rows, int max_rows);

/* ---------------------------------------------------------------- pruning */

/* Structured pruning removes whole channels and rebuilds smaller dense layers (the model gets
 * smaller and faster); magnitude pruning zeroes single weights and keeps them at zero through
 * training (a mask, recorded as "sparse" in the model file and re-derived from the zeros on
 * load).
 *
 * Channel groups: every state tensor whose channel dimension must shrink together with the
 * output channels of one convolution, the group's producer: its filters and bias, its batch
 * norm, the depthwise convolution and batch norm that follow it, the SE layers that read and
 * scale those channels, and the input slices of the convolutions or linear layer that consume
 * them. Rule for residual connections: channels that reach a residual add are tied to every
 * branch of it and are left alone (the residual stream keeps its width); the channels inside
 * the branches are pruned. */
typedef enum cn_prune_method {
    CN_PRUNE_L2,        /* P(c) = ||w_c||^2 / sum_i ||w_i||^2 over the producer's filters */
    CN_PRUNE_L1,        /* ||w_c||_1 / sum_i ||w_i||_1 (Li et al. 2017) */
    CN_PRUNE_BN,        /* |gamma_c| of the producer's batch norm (network slimming) */
    CN_PRUNE_MAGNITUDE  /* unstructured: |w| of every convolution and linear weight */
} cn_prune_method;

typedef struct cn_prune_config {
    cn_prune_method method;
    float amount;       /* prune this fraction in [0, 1) of the channels (or weights); < 0: unused */
    float threshold;    /* prune what scores below this; < 0: unused. Exactly one of the two. */
    int global;         /* 0: every group (layer) on its own; 1: all compete (P(c) normalised
                         * over every prunable channel of the model; raw |gamma| for bn) */
    int min_channels;   /* keep at least this many channels per group (default 1) */
    int round_to;       /* keep a multiple of this many channels per group (default 1) */
} cn_prune_config;
void cn_prune_config_default(cn_prune_config *c);

typedef struct cn_prune_group {
    char name[96];      /* the producer convolution, e.g. "layer1.0.conv1" */
    int channels;
    int tensors;        /* (state tensor, dimension) pairs that shrink with it */
} cn_prune_group;
/* The prunable groups in graph order; *groups is malloc'ed (free() it). */
cn_status cn_prune_groups(const cn_model *m, cn_prune_group **groups, int *count);
/* The importance of each channel of group `group` (its channels floats). */
cn_status cn_prune_importance(const cn_model *m, cn_prune_method method, int group, float *scores);
/* The structured selection of cfg: *keep (malloc'ed) holds one byte per channel of every group,
 * group after group (1: kept); *total its length. m is untouched. */
cn_status cn_prune_select(const cn_model *m, const cn_prune_config *cfg, uint8_t **keep,
                          int *total);
/* Surgery: a new dense model without the channels whose keep byte is 0. Its widths are in its
 * architecture metadata, so it saves and reloads like any model. */
cn_status cn_prune_surgery(cn_model **out, const cn_model *m, const uint8_t *keep);
/* Selection and surgery (structured) or masks (magnitude) in one step; m is untouched. */
cn_status cn_prune(cn_model **out, const cn_model *m, const cn_prune_config *cfg);
/* In place, for gradual pruning: zeroes and masks what cn_prune would remove, keeping the shapes
 * (structured: the producer filters, biases and BN scale and shift of dropped channels). */
cn_status cn_prune_mask(cn_model *m, const cn_prune_config *cfg);
/* Surgery that removes every channel whose producer filters are all zero (after cn_prune_mask). */
cn_status cn_prune_compact(cn_model **out, const cn_model *m);
/* 1 when the model carries unstructured or gradual-pruning masks. */
int cn_model_is_sparse(const cn_model *m);

/* ---------------------------------------------------------------- quantization */

/* Fixed-point weight quantization, the simple scheme: every convolution and linear weight tensor
 * (not biases, not batch norms) becomes integers of `bits` bits times 2^-f,
 *     w_q = clamp(round(w * 2^f), -2^(bits-1), 2^(bits-1) - 1),
 * with round() rounding half away from zero (C's lround) and f, the fractional bits, chosen per
 * tensor as the largest integer with max|w| * 2^f <= 2^(bits-1) - 1 (0 for an all-zero tensor;
 * clamped to [-64, 64], so weights below 2^-64 or above ~2^79 lose everything or saturate).
 * f may be negative or larger than bits.
 *
 * The quantized model holds the dequantized floats w_q * 2^-f and runs like any model.
 * cn_model_save writes each quantized weight as an int8 (bits <= 8) or int16 tensor under its
 * usual name, with the metadata "quant" = {"scheme":"fixed","bits":b,"frac_bits":{name: f}};
 * cn_model_load dequantizes it back to the same floats. A weight that changed since (training)
 * and no longer fits its integers is saved as float32 again. */
typedef struct cn_quant_tensor {
    char name[96];
    int frac_bits;         /* f */
    int64_t count;         /* weights */
    double max_abs_err;    /* max |w - dequantized w| */
    double rel_rms_err;    /* RMS(w - dequantized w) / RMS(w) (0 for an all-zero tensor) */
} cn_quant_tensor;

typedef struct cn_quant_report {
    int bits;
    int ntensors;
    cn_quant_tensor *tensors;  /* malloc'ed; cn_quant_report_free */
    double max_abs_err;        /* over every quantized weight */
    double rel_rms_err;        /* RMS error over RMS weight, over every quantized weight */
    int64_t quant_params;      /* weights quantized */
    int64_t float_params;      /* other parameters and buffers (kept float32) */
    /* bytes of the state packed tightly: bits per quantized weight, 4 per other float, 8 per
     * counter (the safetensors file, with int8/int16 tensors and a header, is a bit larger) */
    int64_t packed_bytes;
} cn_quant_report;

/* A new model with the weights of m quantized to `bits` in [2, 16] (CN_ERR_ARG otherwise, and
 * for a NaN or infinite weight); m is untouched. rep may be NULL. With this choice of f no value
 * rounds past the range ends (|w| * 2^f <= 2^(bits-1) - 1, an integer); the clamp is the
 * definition's guard, and -2^(bits-1) is never produced. */
cn_status cn_quantize_fixed(cn_model **out, const cn_model *m, int bits, cn_quant_report *rep);
void cn_quant_report_free(cn_quant_report *rep); /* frees rep->tensors; NULL is a no-op */
/* The fractional bits of a tensor whose largest magnitude is max_abs (the rule above). */
int cn_quant_frac_bits(double max_abs, int bits);
/* 0 for a float model; the bits of a quantized one (cn_quantize_fixed or a loaded file). */
int cn_model_quant_bits(const cn_model *m);

/* ---------------------------------------------------------------- optimizers */

typedef enum cn_optim_kind { CN_OPTIM_SGD, CN_OPTIM_ADAMW } cn_optim_kind;

typedef struct cn_optim_config {
    cn_optim_kind kind;
    float lr;
    float momentum;         /* SGD */
    int nesterov;           /* SGD */
    float weight_decay;     /* SGD: L2 added to the gradient; AdamW: decoupled */
    float beta1, beta2, eps; /* AdamW */
} cn_optim_config;

typedef struct cn_optim cn_optim;
void cn_optim_config_default(cn_optim_config *c, cn_optim_kind kind);
cn_status cn_optim_create(cn_optim **out, cn_model *m, const cn_optim_config *c);
/* One update of every parameter from its gradient, at learning rate lr (as torch.optim). */
void cn_optim_step(cn_optim *o, float lr);
void cn_optim_free(cn_optim *o);

/* ---------------------------------------------------------------- schedules */

typedef enum cn_sched_kind { CN_SCHED_CONSTANT, CN_SCHED_STEP, CN_SCHED_COSINE } cn_sched_kind;
typedef struct cn_schedule {
    cn_sched_kind kind;
    float base_lr;
    int64_t warmup_steps;   /* linear warm-up from base_lr * warmup_start */
    float warmup_start;     /* fraction of base_lr at step 0 of warm-up */
    int64_t step_size;      /* STEP: multiply by gamma every step_size steps */
    float gamma;
    float min_lr;           /* COSINE: the floor */
} cn_schedule;
/* The learning rate at a step (0-based) of total_steps. */
float cn_schedule_lr(const cn_schedule *s, int64_t step, int64_t total_steps);


/* ---------------------------------------------------------------- training */

/* What a progress callback sees: once per step (phase 0) and once per epoch (phase 1, with the
 * test metrics). */
typedef struct cn_train_progress {
    int phase;
    int epoch, epochs;          /* 1-based epoch */
    int64_t step, steps_per_epoch; /* step within the epoch, 1-based */
    float lr;
    float loss, acc;            /* running mean over the epoch so far */
    double img_per_s, eta_s, elapsed_s;
    float test_loss, test_acc;  /* phase 1 */
} cn_train_progress;

/* Options of image datasets (folder:DIR; the others ignore the first two). */
typedef struct cn_data_options {
    int input_size;         /* image folders: side of the square input; 0: the model's default */
    int skip_bad_images;    /* image folders: leave out (with a warning on stderr) files that do
                             * not decode, instead of failing */
    int loader_threads;     /* data loader threads; 0: 2 for image folders, 1 otherwise */
} cn_data_options;

typedef struct cn_train_config {
    const char *model;          /* architecture name (ignored when resuming; with init, the
                                 * architecture of a file without convnet metadata, or NULL) */
    const cn_model_config *model_config; /* optional architecture options of a fresh model
                                          * (EfficientNet scaling, dropout); its name, channels,
                                          * classes, seed and threads are taken from here */
    const char *init;           /* start from this model file instead of a fresh init */
    const char *data;           /* "fashion-mnist[:DIR]", "mnist:DIR", "cifar10:DIR",
                                 * "cifar100:DIR" or "folder:DIR" (one subfolder per class; the
                                 * splits DIR/train and DIR/val or DIR/test, or DIR for both) */
    cn_data_options data_opts;
    const char *out_dir;        /* checkpoint, final model, metrics.csv */
    int resume;                 /* continue from out_dir/checkpoint.safetensors */
    int epochs, batch;
    cn_optim_config optim;
    cn_schedule sched;          /* base_lr is taken from optim.lr */
    float warmup_epochs;
    int step_epochs;            /* STEP schedule: multiply the lr by sched.gamma this often */
    float label_smoothing;
    int crop_pad, flip;         /* augmentation */
    int zero_init_residual;
    uint64_t seed;
    int threads;                /* 0: all cores */
    int limit_train, limit_test; /* use only the first N samples (0: all) */
    int stop_after;             /* end after this epoch as if interrupted (0: run to the end) */
    int eval_batch;
    /* Gradual pruning (Zhu and Gupta 2017), off when prune is NULL: from step t0 (epoch
     * prune_start) to t0 + n*dt (epoch prune_end) the pruned fraction follows
     * s_t = s_f + (s_i - s_f) (1 - (t - t0) / (n dt))^3 with s_i = 0 and s_f = prune->amount,
     * updated every dt = prune_every steps (cn_prune_mask: pruned weights, or the channels'
     * filters and BN scale and shift, are zeroed and stay zero). Structured methods end with
     * cn_prune_compact: out_dir/model.safetensors is the smaller model; checkpoints keep the
     * masked full-size model, so that a resumed run continues exactly. */
    const cn_prune_config *prune;
    float prune_start, prune_end; /* epochs (fractions allowed), 0 <= start <= end <= epochs */
    int prune_every;            /* dt in steps (0: 100) */
    /* Quantization-aware training (cn_model_qat): the model, fresh or from init, trains with
     * fake quantization; the saved model keeps its ranges for cn_quantize_int8. */
    int qat;
    void (*progress)(const cn_train_progress *p, void *user);
    void *user;
} cn_train_config;

typedef struct cn_train_result {
    int epochs_done;
    float train_loss, train_acc, test_loss, test_acc;
    double seconds, img_per_s;
    int64_t params;             /* of the saved model (after compaction when pruning) */
    float pruned_fraction;      /* gradual pruning: the fraction reached (channels or weights) */
} cn_train_result;

void cn_train_config_default(cn_train_config *c);
/* Trains, evaluating on the test split after each epoch, writing out_dir/metrics.csv and an
 * atomic checkpoint each epoch, and out_dir/model.safetensors at the end. */
cn_status cn_train(const cn_train_config *c, cn_train_result *res);

/* Accuracy and mean loss of a model on a dataset's test split (train=1: the training split). */
cn_status cn_evaluate(cn_model *m, const char *data, int train_split, int batch, int limit,
                      float *acc, float *loss, int *count);
/* The same with image-dataset options (o may be NULL). */
cn_status cn_evaluate_opts(cn_model *m, const char *data, int train_split, int batch, int limit,
                           const cn_data_options *o, float *acc, float *loss, int *count);

/* ---------------------------------------------------------------- int8 */

/* int8 inference, the real scheme: every batch norm folded into the convolution before it;
 * weights int8 symmetric per output channel (scale max|w_c| / 127); activations uint8 per tensor
 * (scale and zero point from a range calibrated on training images); int32 biases; the
 * accumulators requantized by an integer multiplier and shift (M = M0 * 2^-31 * 2^-n); residual
 * adds, pooling and the squeeze-and-excitation product in integers; SiLU and sigmoid as
 * 256-entry tables; float logits out of the classifier. The int8 model runs through
 * cn_model_forward (eval only) and cn_evaluate, and cn_model_save writes it as one file: int8
 * weights, int32 biases, float32 scales, int32 zero points, metadata "quant" scheme "int8". */
typedef enum cn_calib_method {
    CN_CALIB_MINMAX,     /* the observed minimum and maximum */
    CN_CALIB_PERCENTILE, /* clip the tails beyond a percentile of the observed values */
    CN_CALIB_MSE         /* the clipping range that minimises the expected squared error */
} cn_calib_method;

typedef struct cn_int8_config {
    const char *data;       /* calibration images: the training split of this dataset */
    cn_data_options data_opts;
    int images;             /* how many (default 512), in a shuffled order from seed */
    int batch;              /* default 64 */
    cn_calib_method method;
    float percentile;       /* PERCENTILE: default 99.99 */
    uint64_t seed;
    /* mixed precision: convolutions or the linear layer (by module name, comma-separated) kept
     * in float32; their input is dequantized and their output quantized again */
    const char *keep_float;
    int auto_mixed;         /* also keep the K layers of lowest SQNR (the sensitivity report) */
    int sensitivity_images; /* images for the sensitivity report (default 64) */
} cn_int8_config;
void cn_int8_config_default(cn_int8_config *c);

/* The sensitivity report: per convolution and linear layer, the signal-to-quantization-noise
 * ratio of its output, 10 log10(sum y^2 / sum (y - y_int8)^2), where y is the float model's
 * output of the layer (with its folded batch norm and activation) and y_int8 the int8 layer's
 * dequantized output on the same float input quantized to the layer's input scale: each layer's
 * own error, not the error accumulated before it. */
typedef struct cn_int8_layer {
    char name[96];
    const char *op;         /* "conv", "depthwise", "linear" */
    int64_t macs;           /* per image at the calibration size */
    double sqnr_db;
    int kept_float;
} cn_int8_layer;
typedef struct cn_int8_report {
    int nlayers;
    cn_int8_layer *layers;  /* malloc'ed; cn_int8_report_free */
    int kept_float;         /* layers kept in float32 */
} cn_int8_report;
void cn_int8_report_free(cn_int8_report *r);

/* A new int8 model calibrated on c->data; m (a float model) is untouched. rep (may be NULL)
 * receives the sensitivity report (computed when rep is given or auto_mixed > 0). */
cn_status cn_quantize_int8(cn_model **out, const cn_model *m, const cn_int8_config *c,
                           cn_int8_report *rep);
/* Quantization-aware training: a copy of m whose forward passes round weights (per output
 * channel) and activations (per tensor, moving-average ranges) to the int8 network's grids and
 * whose backward passes use the straight-through estimator. Train it like any model (cn_train
 * with qat set does this); its file keeps the ranges, and cn_quantize_int8 of it needs no
 * calibration. */
cn_status cn_model_qat(cn_model **out, const cn_model *m);
int cn_model_is_qat(const cn_model *m);
/* 1 for an int8 model (cn_quantize_int8 or a loaded int8 file). */
int cn_model_is_int8(const cn_model *m);
/* Bytes of an int8 model's integer state (weights, biases, scales); 0 for a float model. */
int64_t cn_model_int8_bytes(const cn_model *m);

#ifdef __cplusplus
}
#endif
#endif
