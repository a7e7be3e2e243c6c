/* The model handle's insides, for the train and io layers. */
#ifndef CN_GRAPH_MODEL_H
#define CN_GRAPH_MODEL_H

#include "graph/graph.h"
#include "io/safetensors.h"
#include "models/models.h"

struct cn_model {
    cn_arch arch;
    cn_graph g;
    int threads;
    int last_n, last_train, have_dlogits;
    cn_layer_info *rows;
    char *arch_json;
    /* pruning masks, one byte per parameter (NULL: dense): 0 keeps the parameter at zero through
     * training (the optimizer re-zeroes it and its state after each step) */
    uint8_t *mask;
    /* fixed-point quantization (cn_quantize_fixed; NULL: none): per state entry the fractional
     * bits f of a weight that holds integers times 2^-f (CN_QUANT_NONE: a float tensor); such a
     * weight is saved as an int8 (quant_bits <= 8) or int16 tensor when it still is exact */
    int quant_bits;
    int *quant_frac;
    /* int8 inference (cn_quantize_int8 or an int8 file; NULL: float): eval forwards run it */
    struct cn_qnet *qnet;
    /* quantization-aware training (NULL: off): fake quantization hooked into the graph */
    struct cn_qat *qat;
};

#define CN_QUANT_NONE (-1000)
/* The bounds of frac_bits in a file. */
#define CN_QUANT_FRAC_MIN (-64)
#define CN_QUANT_FRAC_MAX 64

/* A model of architecture a with fresh (zero) state. */
cn_status cn_model_new_arch(cn_model **out, const cn_arch *a, int threads);
/* The same with no fusion in its graph (every tensor of an eval forward materialised). */
cn_status cn_model_new_arch_nofuse(cn_model **out, const cn_arch *a, int threads);
/* Copies every state tensor of src into dst (the same architecture), masks included. */
cn_status cn_model_copy_state(cn_model *dst, const cn_model *src);
/* (Re)derives the mask of the convolution and linear weights from their zeros; other
 * parameters are unmasked. Allocates the mask if there is none. */
cn_status cn_model_mask_from_zeros(cn_model *m);

/* Reads every state entry from f under "<prefix><name>" (strict: a missing or extra tensor, a
 * shape or dtype mismatch is an error naming the file and the tensor). */
cn_status cn_model_load_state(cn_model *m, const cn_st_file *f, const char *prefix);
cn_status cn_model_open_file(cn_model **out, const cn_st_file *f, const cn_model_config *cfg);
/* Adds the state and the metadata to a writer; *scratch must be freed after the save. */
cn_status cn_model_add_state(const cn_model *m, cn_st_writer *w, float **scratch);

#endif
