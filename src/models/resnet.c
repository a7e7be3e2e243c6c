/* ResNet exactly as torchvision 0.14 defines it (models/resnet.py: v1.5, the stride on the 3x3 of
 * a bottleneck), and the CIFAR ResNets of He et al. 2016 section 4.2 (6n+2 layers, option-A
 * shortcuts). Module names follow torchvision's state_dict. */
#include <stdio.h>
#include <string.h>

#include "core/status.h"
#include "models/models.h"

#define BN_EPS 1e-5f
#define BN_MOMENTUM 0.1f

static int conv_bn(cn_graph *g, const cn_arch *a, const char *prefix, const char *conv,
                   const char *bn, int x, int oc, int k, int stride, int pad, int zero_init) {
    char name[CN_NAME_MAX];
    snprintf(name, sizeof name, "%s%s", prefix, conv);
    x = cn_g_conv(g, name, x, cn_arch_width(a, name, oc), k, stride, pad, 1, 0);
    if (x < 0) return -1;
    snprintf(name, sizeof name, "%s%s", prefix, bn);
    return cn_g_bn(g, name, x, BN_EPS, BN_MOMENTUM, zero_init);
}

/* torchvision BasicBlock / Bottleneck; returns the block's output tensor */
static int block(cn_graph *g, const cn_arch *a, const char *prefix, int x, int planes, int stride, int bottleneck) {
    int in_c = g->tensors[x].c, expansion = bottleneck ? 4 : 1;
    int y;
    if (bottleneck) {
        y = conv_bn(g, a, prefix, "conv1", "bn1", x, planes, 1, 1, 0, 0);
        if (y < 0 || (y = cn_g_relu(g, y)) < 0) return -1;
        y = conv_bn(g, a, prefix, "conv2", "bn2", y, planes, 3, stride, 1, 0);
        if (y < 0 || (y = cn_g_relu(g, y)) < 0) return -1;
        y = conv_bn(g, a, prefix, "conv3", "bn3", y, planes * 4, 1, 1, 0, 1);
    } else {
        y = conv_bn(g, a, prefix, "conv1", "bn1", x, planes, 3, stride, 1, 0);
        if (y < 0 || (y = cn_g_relu(g, y)) < 0) return -1;
        y = conv_bn(g, a, prefix, "conv2", "bn2", y, planes, 3, 1, 1, 1);
    }
    if (y < 0) return -1;
    int identity = x;
    if (stride != 1 || in_c != planes * expansion) {
        identity = conv_bn(g, a, prefix, "downsample.0", "downsample.1", x, planes * expansion, 1,
                           stride, 0, 0);
        if (identity < 0) return -1;
    }
    y = cn_g_add(g, y, identity);
    return y < 0 ? -1 : cn_g_relu(g, y);
}

cn_status cn_build_resnet(cn_graph *g, const cn_arch *a, int depth) {
    static const int blocks[5][4] = {
        {2, 2, 2, 2}, {3, 4, 6, 3}, {3, 4, 6, 3}, {3, 4, 23, 3}, {3, 8, 36, 3}};
    int which = depth == 18 ? 0 : depth == 34 ? 1 : depth == 50 ? 2 : depth == 101 ? 3 : 4;
    int bottleneck = depth >= 50;
    int x = cn_g_input(g, a->in_channels);
    if (x < 0) return cn_last_status();
    x = conv_bn(g, a, "", "conv1", "bn1", x, 64, 7, 2, 3, 0);
    if (x < 0 || (x = cn_g_relu(g, x)) < 0) return cn_last_status();
    if ((x = cn_g_maxpool(g, x, 3, 2, 1)) < 0) return cn_last_status();
    for (int s = 0; s < 4; s++)
        for (int b = 0; b < blocks[which][s]; b++) {
            char prefix[32];
            snprintf(prefix, sizeof prefix, "layer%d.%d.", s + 1, b);
            x = block(g, a, prefix, x, 64 << s, b == 0 && s > 0 ? 2 : 1, bottleneck);
            if (x < 0) return cn_last_status();
        }
    if ((x = cn_g_gap(g, x)) < 0 || (x = cn_g_flatten(g, x)) < 0) return cn_last_status();
    if (cn_g_linear(g, "fc", x, a->num_classes) < 0) return cn_last_status();
    return CN_OK;
}

cn_status cn_build_cifar_resnet(cn_graph *g, const cn_arch *a, int depth) {
    int n = (depth - 2) / 6;
    int x = cn_g_input(g, a->in_channels);
    if (x < 0) return cn_last_status();
    x = conv_bn(g, a, "", "conv1", "bn1", x, 16, 3, 1, 1, 0);
    if (x < 0 || (x = cn_g_relu(g, x)) < 0) return cn_last_status();
    for (int s = 0; s < 3; s++)
        for (int b = 0; b < n; b++) {
            char prefix[32];
            snprintf(prefix, sizeof prefix, "layer%d.%d.", s + 1, b);
            int planes = 16 << s, stride = b == 0 && s > 0 ? 2 : 1;
            int in_c = g->tensors[x].c;
            /* the shortcut first, so that bn2 can take the add and the ReLU (the graph fuses
             * a BN with a residual that is ready before the BN's convolution runs) */
            int sc = x;
            if (stride != 1 || in_c != planes) sc = cn_g_shortcut_a(g, x, planes, stride);
            if (sc < 0) return cn_last_status();
            int y = conv_bn(g, a, prefix, "conv1", "bn1", x, planes, 3, stride, 1, 0);
            if (y < 0 || (y = cn_g_relu(g, y)) < 0) return cn_last_status();
            y = conv_bn(g, a, prefix, "conv2", "bn2", y, planes, 3, 1, 1, 1);
            if (y < 0 || (x = cn_g_add(g, y, sc)) < 0 || (x = cn_g_relu(g, x)) < 0)
                return cn_last_status();
        }
    if ((x = cn_g_gap(g, x)) < 0 || (x = cn_g_flatten(g, x)) < 0) return cn_last_status();
    if (cn_g_linear(g, "fc", x, a->num_classes) < 0) return cn_last_status();
    return CN_OK;
}
