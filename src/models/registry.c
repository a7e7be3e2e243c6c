/* Name -> architecture defaults and builder. */
#include <stdio.h>
#include <string.h>

#include "core/status.h"
#include "models/models.h"

typedef struct known {
    const char *name;
    cn_family family;
    int depth, in_channels, num_classes, size;
    double width, depth_mult; /* EfficientNet */
    float dropout;
} known;

#define RESNET(n, d) {n, CN_FAMILY_RESNET, d, 3, 1000, 224, 0, 0, 0}
#define CIFAR(n, d) {n, CN_FAMILY_CIFAR_RESNET, d, 3, 10, 32, 0, 0, 0}
#define EFFNET(n, w, d, s, p) {n, CN_FAMILY_EFFICIENTNET, 0, 3, 1000, s, w, d, p}

static const known models[] = {
    RESNET("resnet18", 18), RESNET("resnet34", 34), RESNET("resnet50", 50),
    RESNET("resnet101", 101), RESNET("resnet152", 152),
    CIFAR("resnet20", 20), CIFAR("resnet32", 32), CIFAR("resnet44", 44), CIFAR("resnet56", 56),
    CIFAR("resnet110", 110),
    /* torchvision's efficientnet_bN: width, depth, crop size of its weights, classifier dropout */
    EFFNET("efficientnet_b0", 1.0, 1.0, 224, 0.2f), EFFNET("efficientnet_b1", 1.0, 1.1, 240, 0.2f),
    EFFNET("efficientnet_b2", 1.1, 1.2, 288, 0.3f), EFFNET("efficientnet_b3", 1.2, 1.4, 300, 0.3f),
    EFFNET("efficientnet_b4", 1.4, 1.8, 380, 0.4f), EFFNET("efficientnet_b5", 1.6, 2.2, 456, 0.4f),
    EFFNET("efficientnet_b6", 1.8, 2.6, 528, 0.5f), EFFNET("efficientnet_b7", 2.0, 3.1, 600, 0.5f),
    /* compound scaling: phi 0 unless set (cn_model_config.phi or width/depth/resolution) */
    EFFNET("efficientnet", 1.0, 1.0, 224, 0.2f),
};

const char *cn_model_names(void) {
    return "resnet18, resnet34, resnet50, resnet101, resnet152, resnet20, resnet32, resnet44, "
           "resnet56, resnet110, efficientnet_b0 ... efficientnet_b7, efficientnet (with phi or "
           "width/depth multipliers)";
}

static const known *find(const char *name) {
    for (size_t i = 0; i < sizeof models / sizeof *models; i++)
        if (strcmp(models[i].name, name) == 0) return &models[i];
    return NULL;
}

cn_status cn_arch_lookup(cn_arch *a, const char *name) {
    const known *k = name ? find(name) : NULL;
    if (!k)
        return cn_error(CN_ERR_ARG, "unknown model '%s' (known: %s)", name ? name : "(none)",
                        cn_model_names());
    memset(a, 0, sizeof *a);
    snprintf(a->name, sizeof a->name, "%s", k->name);
    a->family = k->family;
    a->depth = k->depth;
    a->in_channels = k->in_channels;
    a->num_classes = k->num_classes;
    a->default_size = k->size;
    a->width_mult = k->width;
    a->depth_mult = k->depth_mult;
    a->dropout = k->dropout;
    if (k->family == CN_FAMILY_EFFICIENTNET) {
        a->stochastic_depth = 0.2f;
        /* B5-B7 use TensorFlow's batch-norm settings */
        int big = !strcmp(k->name, "efficientnet_b5") || !strcmp(k->name, "efficientnet_b6") ||
                  !strcmp(k->name, "efficientnet_b7");
        a->bn_eps = big ? 1e-3f : 1e-5f;
        a->bn_momentum = big ? 0.01f : 0.1f;
    }
    return CN_OK;
}

int cn_arch_width(const cn_arch *a, const char *conv, int dflt) {
    for (int i = 0; i < a->nwidths; i++)
        if (!strcmp(a->widths[i].conv, conv)) return a->widths[i].oc;
    return dflt;
}

cn_status cn_arch_set_width(cn_arch *a, const char *conv, int oc) {
    if (!conv || !*conv || strlen(conv) >= sizeof a->widths[0].conv)
        return cn_error(CN_ERR_ARG, "width override: bad convolution name '%s'", conv ? conv : "");
    if (oc < 1 || oc > 65536)
        return cn_error(CN_ERR_ARG, "width override of %s: %d channels is out of range [1, 65536]",
                        conv, oc);
    for (int i = 0; i < a->nwidths; i++)
        if (!strcmp(a->widths[i].conv, conv)) {
            a->widths[i].oc = oc;
            return CN_OK;
        }
    if (a->nwidths >= CN_MAX_WIDTHS)
        return cn_error(CN_ERR_UNSUPPORTED, "more than %d width overrides", CN_MAX_WIDTHS);
    snprintf(a->widths[a->nwidths].conv, sizeof a->widths[0].conv, "%s", conv);
    a->widths[a->nwidths++].oc = oc;
    return CN_OK;
}

/* Every override must name a convolution of the built graph whose width it set. */
static cn_status check_widths(const cn_graph *g, const cn_arch *a) {
    for (int i = 0; i < a->nwidths; i++) {
        int n = 0;
        while (n < g->nnodes && strcmp(g->nodes[n].name, a->widths[i].conv) != 0) n++;
        if (n == g->nnodes || g->nodes[n].op != CN_OP_CONV ||
            g->nodes[n].a.conv.oc != a->widths[i].oc)
            return cn_error(CN_ERR_ARG, "width override: %s has no prunable convolution '%s'",
                            a->name, a->widths[i].conv);
    }
    return CN_OK;
}

cn_status cn_model_build(cn_graph *g, const cn_arch *a) {
    const known *k = find(a->name);
    if (!k) return cn_error(CN_ERR_ARG, "unknown model '%s' (known: %s)", a->name, cn_model_names());
    if (a->in_channels < 1 || a->in_channels > 4096)
        return cn_error(CN_ERR_ARG, "in_channels %d is out of range [1, 4096]", a->in_channels);
    if (a->num_classes < 1 || a->num_classes > 1000000)
        return cn_error(CN_ERR_ARG, "num_classes %d is out of range [1, 1000000]", a->num_classes);
    cn_status st;
    switch (a->family) {
    case CN_FAMILY_CIFAR_RESNET: st = cn_build_cifar_resnet(g, a, a->depth); break;
    case CN_FAMILY_EFFICIENTNET:
        if (!(a->width_mult >= 0.05 && a->width_mult <= 16) ||
            !(a->depth_mult >= 0.05 && a->depth_mult <= 16))
            return cn_error(CN_ERR_ARG,
                            "width multiplier %g and depth multiplier %g must be in [0.05, 16]",
                            a->width_mult, a->depth_mult);
        if (!(a->dropout >= 0 && a->dropout <= 1) ||
            !(a->stochastic_depth >= 0 && a->stochastic_depth <= 1))
            return cn_error(CN_ERR_ARG, "dropout %g and stochastic depth %g must be in [0, 1]",
                            a->dropout, a->stochastic_depth);
        st = cn_build_efficientnet(g, a);
        break;
    default: st = cn_build_resnet(g, a, a->depth); break;
    }
    if (st != CN_OK) return st;
    CN_TRY(check_widths(g, a));
    return cn_graph_finalize(g);
}
