/* Model builders: each emits a graph for an architecture. */
#ifndef CN_MODELS_H
#define CN_MODELS_H

#include "graph/graph.h"

typedef enum cn_family { CN_FAMILY_RESNET, CN_FAMILY_CIFAR_RESNET, CN_FAMILY_EFFICIENTNET } cn_family;

/* A pruned model's irregular widths: the output channels of a named convolution (a producer of a
 * prunable channel group; depthwise convolutions and the SE expand follow their input). */
#define CN_MAX_WIDTHS 512
typedef struct cn_width {
    char conv[40];
    int oc;
} cn_width;

typedef struct cn_arch {
    char name[32];
    cn_family family;
    int depth;          /* ResNets */
    int in_channels;
    int num_classes;
    int default_size;   /* the input size the model is usually run at */
    /* EfficientNet: compound-scaling multipliers, regularisation and batch-norm settings */
    double width_mult, depth_mult;
    float dropout, stochastic_depth;
    float bn_eps, bn_momentum;
    /* width overrides (pruning), in build order of the convolutions they name */
    int nwidths;
    cn_width widths[CN_MAX_WIDTHS];
} cn_arch;

/* The output channels of convolution `conv`: its override, else dflt. */
int cn_arch_width(const cn_arch *a, const char *conv, int dflt);
/* Sets (or replaces) an override; CN_ERR_ARG for a bad name or width, or too many overrides. */
cn_status cn_arch_set_width(cn_arch *a, const char *conv, int oc);

/* EfficientNet's compound scaling (Tan and Le 2019): depth 1.2^phi, width 1.1^phi, resolution
 * 224 * 1.15^phi rounded to the nearest integer. */
void cn_effnet_phi(double phi, double *width_mult, double *depth_mult, int *resolution);
/* torchvision's _make_divisible(v, 8) and the depth rounding of MBConvConfig */
int cn_effnet_channels(double channels, double width_mult);
int cn_effnet_repeats(int repeats, double depth_mult);

/* One stage of the MBConv table after scaling. */
typedef struct cn_effnet_stage {
    int expand, kernel, stride, in_c, out_c, repeats;
} cn_effnet_stage;
/* Fills the 7 stages; returns the head (last conv) width. */
int cn_effnet_stages(const cn_arch *a, cn_effnet_stage st[7]);

/* Fills defaults (in_channels, num_classes, default_size) for a known name; CN_ERR_ARG for an
 * unknown one, with the list of known names in the message. */
cn_status cn_arch_lookup(cn_arch *a, const char *name);
cn_status cn_model_build(cn_graph *g, const cn_arch *a);
/* Comma-separated list of every model name. */
const char *cn_model_names(void);

cn_status cn_build_resnet(cn_graph *g, const cn_arch *a, int depth);
cn_status cn_build_cifar_resnet(cn_graph *g, const cn_arch *a, int depth);
cn_status cn_build_efficientnet(cn_graph *g, const cn_arch *a);

#endif
