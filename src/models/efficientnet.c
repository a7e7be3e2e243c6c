/* EfficientNet B0-B7 exactly as torchvision 0.14 defines them (models/efficientnet.py), and
 * compound scaling for any phi or any (width, depth) multipliers (Tan and Le 2019).
 * Module names follow torchvision's state_dict:
 *   features.0.{0,1}              stem conv 3x3 s2 + BN (+ SiLU)
 *   features.S.B.block.K          MBConv: [expand 1x1] -> depthwise kxk -> SE (fc1, fc2) -> project
 *   features.8.{0,1}              head conv 1x1 + BN (+ SiLU)
 *   classifier.1                  Linear after Dropout */
#include <math.h>
#include <stdio.h>

#include "core/status.h"
#include "models/models.h"

/* expand ratio, kernel, stride, input channels, output channels, repeats (B0) */
static const int base_table[7][6] = {
    {1, 3, 1, 32, 16, 1},  {6, 3, 2, 16, 24, 2},   {6, 5, 2, 24, 40, 2},  {6, 3, 2, 40, 80, 3},
    {6, 5, 1, 80, 112, 3}, {6, 5, 2, 112, 192, 4}, {6, 3, 1, 192, 320, 1},
};

void cn_effnet_phi(double phi, double *width_mult, double *depth_mult, int *resolution) {
    *width_mult = pow(1.1, phi);
    *depth_mult = pow(1.2, phi);
    *resolution = (int)lround(224.0 * pow(1.15, phi));
}

int cn_effnet_channels(double channels, double width_mult) {
    double v = channels * width_mult;
    int nv = (int)(v + 4.0) / 8 * 8;
    if (nv < 8) nv = 8;
    if (nv < 0.9 * v) nv += 8;
    return nv;
}

int cn_effnet_repeats(int repeats, double depth_mult) { return (int)ceil(repeats * depth_mult); }

int cn_effnet_stages(const cn_arch *a, cn_effnet_stage st[7]) {
    for (int s = 0; s < 7; s++) {
        const int *t = base_table[s];
        st[s].expand = t[0];
        st[s].kernel = t[1];
        st[s].stride = t[2];
        st[s].in_c = cn_effnet_channels(t[3], a->width_mult);
        st[s].out_c = cn_effnet_channels(t[4], a->width_mult);
        st[s].repeats = cn_effnet_repeats(t[5], a->depth_mult);
    }
    return 4 * st[6].out_c;
}

/* Conv2dNormActivation: conv (no bias, padding (k-1)/2) -> BN -> optional SiLU */
static int conv_bn_act(cn_graph *g, const cn_arch *a, const char *prefix, int x, int oc, int k,
                       int stride, int groups, int act) {
    char name[CN_NAME_MAX];
    snprintf(name, sizeof name, "%s.0", prefix);
    /* a depthwise convolution follows its input's width (which pruning may have changed) */
    if (groups > 1) oc = groups = g->tensors[x].c;
    else oc = cn_arch_width(a, name, oc);
    x = cn_g_conv(g, name, x, oc, k, stride, (k - 1) / 2, groups, 0);
    if (x < 0) return -1;
    snprintf(name, sizeof name, "%s.1", prefix);
    x = cn_g_bn(g, name, x, a->bn_eps, a->bn_momentum, 0);
    if (x < 0) return -1;
    return act ? cn_g_silu(g, x) : x;
}

/* torchvision's SqueezeExcitation: avgpool -> fc1 (1x1 conv, bias) -> SiLU -> fc2 -> sigmoid,
 * then the input scaled channel-wise */
static int squeeze_excite(cn_graph *g, const cn_arch *a, const char *prefix, int x, int squeeze) {
    char name[CN_NAME_MAX];
    int c = g->tensors[x].c;
    int s = cn_g_gap(g, x);
    snprintf(name, sizeof name, "%s.fc1", prefix);
    if (s < 0 || (s = cn_g_conv(g, name, s, cn_arch_width(a, name, squeeze), 1, 1, 0, 1, 1)) < 0)
        return -1;
    if ((s = cn_g_silu(g, s)) < 0) return -1;
    snprintf(name, sizeof name, "%s.fc2", prefix);
    if ((s = cn_g_conv(g, name, s, c, 1, 1, 0, 1, 1)) < 0) return -1;
    if ((s = cn_g_sigmoid(g, s)) < 0) return -1;
    return cn_g_scale(g, x, s);
}

static int mbconv(cn_graph *g, const cn_arch *a, const char *prefix, int x,
                  const cn_effnet_stage *st, int in_c, int stride, float sd_prob) {
    char name[CN_NAME_MAX];
    int expanded = cn_effnet_channels(in_c, st->expand), k = 0, y = x;
    if (expanded != in_c) {
        snprintf(name, sizeof name, "%s.block.%d", prefix, k++);
        if ((y = conv_bn_act(g, a, name, y, expanded, 1, 1, 1, 1)) < 0) return -1;
    }
    snprintf(name, sizeof name, "%s.block.%d", prefix, k++);
    if ((y = conv_bn_act(g, a, name, y, expanded, st->kernel, stride, expanded, 1)) < 0) return -1;
    snprintf(name, sizeof name, "%s.block.%d", prefix, k++);
    if ((y = squeeze_excite(g, a, name, y, in_c / 4 > 1 ? in_c / 4 : 1)) < 0) return -1;
    snprintf(name, sizeof name, "%s.block.%d", prefix, k++);
    if ((y = conv_bn_act(g, a, name, y, st->out_c, 1, 1, 1, 0)) < 0) return -1;
    if (stride == 1 && in_c == st->out_c) {
        snprintf(name, sizeof name, "%s.stochastic_depth", prefix);
        if ((y = cn_g_droppath(g, name, y, sd_prob)) < 0) return -1;
        y = cn_g_add(g, y, x);
    }
    return y;
}

cn_status cn_build_efficientnet(cn_graph *g, const cn_arch *a) {
    cn_effnet_stage st[7];
    int head = cn_effnet_stages(a, st);
    int total = 0;
    for (int s = 0; s < 7; s++) total += st[s].repeats;
    int x = cn_g_input(g, a->in_channels);
    if (x < 0) return CN_ERR_NOMEM;
    if ((x = conv_bn_act(g, a, "features.0", x, st[0].in_c, 3, 2, 1, 1)) < 0) return cn_last_status();
    int id = 0;
    for (int s = 0; s < 7; s++)
        for (int b = 0; b < st[s].repeats; b++, id++) {
            char prefix[32];
            snprintf(prefix, sizeof prefix, "features.%d.%d", s + 1, b);
            int in_c = b ? st[s].out_c : st[s].in_c, stride = b ? 1 : st[s].stride;
            float sd = (float)(a->stochastic_depth * (double)id / total);
            if ((x = mbconv(g, a, prefix, x, &st[s], in_c, stride, sd)) < 0) return cn_last_status();
        }
    if ((x = conv_bn_act(g, a, "features.8", x, head, 1, 1, 1, 1)) < 0) return cn_last_status();
    if ((x = cn_g_gap(g, x)) < 0 || (x = cn_g_flatten(g, x)) < 0) return cn_last_status();
    if ((x = cn_g_dropout(g, "classifier.0", x, a->dropout)) < 0) return cn_last_status();
    if (cn_g_linear(g, "classifier.1", x, a->num_classes) < 0) return cn_last_status();
    /* EfficientNet initialises its classifier differently from nn.Linear's default */
    for (int e = g->nentries - 2; e < g->nentries; e++) g->entries[e].init_alt = 1;
    return CN_OK;
}
