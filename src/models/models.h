/* Model builders: each emits a graph for an architecture. */
#ifndef CN_MODELS_H
#define CN_MODELS_H

#include "graph/graph.h"

typedef struct cn_arch {
    char name[32];
    int in_channels;
    int num_classes;
    int default_size;   /* the input size the model is usually run at */
} cn_arch;

/* Fills defaults (in_channels, num_classes, default_size) for a known name; CN_ERR_ARG for an
 * unknown one, with the list of known names in the message. */
cn_status cn_arch_lookup(cn_arch *a, const char *name);
cn_status cn_model_build(cn_graph *g, const cn_arch *a);
/* Comma-separated list of every model name. */
const char *cn_model_names(void);

cn_status cn_build_resnet(cn_graph *g, const cn_arch *a, int depth);
cn_status cn_build_cifar_resnet(cn_graph *g, const cn_arch *a, int depth);

#endif
