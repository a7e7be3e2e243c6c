/* Name -> architecture defaults and builder. */
#include <stdio.h>
#include <string.h>

#include "core/status.h"
#include "models/models.h"

typedef struct known {
    const char *name;
    int cifar, depth, in_channels, num_classes, size;
} known;

static const known models[] = {
    {"resnet18", 0, 18, 3, 1000, 224},  {"resnet34", 0, 34, 3, 1000, 224},
    {"resnet50", 0, 50, 3, 1000, 224},  {"resnet101", 0, 101, 3, 1000, 224},
    {"resnet152", 0, 152, 3, 1000, 224}, {"resnet20", 1, 20, 3, 10, 32},
    {"resnet32", 1, 32, 3, 10, 32},     {"resnet44", 1, 44, 3, 10, 32},
    {"resnet56", 1, 56, 3, 10, 32},     {"resnet110", 1, 110, 3, 10, 32},
};

const char *cn_model_names(void) {
    return "resnet18, resnet34, resnet50, resnet101, resnet152, resnet20, resnet32, resnet44, "
           "resnet56, resnet110";
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
    a->in_channels = k->in_channels;
    a->num_classes = k->num_classes;
    a->default_size = k->size;
    return CN_OK;
}

cn_status cn_model_build(cn_graph *g, const cn_arch *a) {
    const known *k = find(a->name);
    if (!k) return cn_error(CN_ERR_ARG, "unknown model '%s' (known: %s)", a->name, cn_model_names());
    if (a->in_channels < 1 || a->in_channels > 4096)
        return cn_error(CN_ERR_ARG, "in_channels %d is out of range [1, 4096]", a->in_channels);
    if (a->num_classes < 1 || a->num_classes > 1000000)
        return cn_error(CN_ERR_ARG, "num_classes %d is out of range [1, 1000000]", a->num_classes);
    cn_status st = k->cifar ? cn_build_cifar_resnet(g, a, k->depth) : cn_build_resnet(g, a, k->depth);
    if (st != CN_OK) return st;
    return cn_graph_finalize(g);
}
