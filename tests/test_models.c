/* Model builders: parameter and state_dict counts of all ten ResNets against torchvision 0.14 and
 * the reference CIFAR ResNet, torchvision names and shapes, shape inference on odd inputs, init
 * statistics, and clear errors for bad configurations. When a names file from
 * tests/parity/make_refs.py is given (REFS dir), the full state_dict order is compared too. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "convnet.h"
#include "graph/model.h"

typedef struct expect {
    const char *name;
    int in_channels, num_classes;
    int64_t params;
    int entries;
} expect;

static const expect models[] = {
    {"resnet18", 3, 1000, 11689512, 122},  {"resnet34", 3, 1000, 21797672, 218},
    {"resnet50", 3, 1000, 25557032, 320},  {"resnet101", 3, 1000, 44549160, 626},
    {"resnet152", 3, 1000, 60192808, 932}, {"resnet20", 1, 10, 269434, 116},
    {"resnet20", 3, 10, 269722, 116},      {"resnet32", 3, 10, 464154, 188},
    {"resnet44", 3, 10, 658586, 260},      {"resnet56", 3, 10, 853018, 332},
    {"resnet110", 3, 10, 1727962, 656},
};

static cn_model *make(const char *name, int inc, int ncls, uint64_t seed, int zero_init) {
    cn_model_config c;
    cn_model_config_default(&c);
    c.name = name;
    c.in_channels = inc;
    c.num_classes = ncls;
    c.seed = seed;
    c.zero_init_residual = zero_init;
    cn_model *m = NULL;
    cn_status st = cn_model_create(&m, &c);
    CHECK(st == CN_OK, "create %s: %s", name, cn_errmsg());
    return m;
}

static void check_shape(cn_model *m, const char *name, int ndim, const int64_t *shape) {
    int i = cn_model_tensor_find(m, name);
    CHECK(i >= 0, "%s: no tensor %s", cn_model_name(m), name);
    if (i < 0) return;
    cn_tensor_info ti;
    cn_model_tensor_info(m, i, &ti);
    int ok = ti.ndim == ndim;
    for (int k = 0; ok && k < ndim; k++) ok = ti.shape[k] == shape[k];
    CHECK(ok, "%s: %s has the wrong shape", cn_model_name(m), name);
}

static void check_names_file(cn_model *m, const char *path);

/* torchvision's _make_divisible(v, 8), written out again here rather than shared */
static int divisible8(double v) {
    int nv = (int)(v + 4) / 8 * 8;
    if (nv < 8) nv = 8;
    if (nv < 0.9 * v) nv += 8;
    return nv;
}

static cn_model *make_effnet(const char *name, double phi, int inc, int ncls) {
    cn_model_config c;
    cn_model_config_default(&c);
    c.name = name;
    c.phi = phi;
    c.in_channels = inc;
    c.num_classes = ncls;
    cn_model *m = NULL;
    cn_status st = cn_model_create(&m, &c);
    CHECK(st == CN_OK, "create %s phi %g: %s", name, phi, cn_errmsg());
    return m;
}

static void effnet_checks(const char *refs) {
    /* torchvision 0.14's parameter counts and default resolutions */
    static const struct { const char *name; int64_t params; int size; float eps; } v[8] = {
        {"efficientnet_b0", 5288548, 224, 1e-5f},  {"efficientnet_b1", 7794184, 240, 1e-5f},
        {"efficientnet_b2", 9109994, 288, 1e-5f},  {"efficientnet_b3", 12233232, 300, 1e-5f},
        {"efficientnet_b4", 19341616, 380, 1e-5f}, {"efficientnet_b5", 30389784, 456, 1e-3f},
        {"efficientnet_b6", 43040704, 528, 1e-3f}, {"efficientnet_b7", 66347960, 600, 1e-3f},
    };
    for (int i = 0; i < 8; i++) {
        cn_model *m = make_effnet(v[i].name, 0, 0, 0);
        if (!m) continue;
        CHECK(cn_model_param_count(m) == v[i].params, "%s: %lld parameters, expected %lld",
              v[i].name, (long long)cn_model_param_count(m), (long long)v[i].params);
        CHECK(cn_model_default_size(m) == v[i].size, "%s: default size %d", v[i].name,
              cn_model_default_size(m));
        if (refs) {
            char path[1024];
            snprintf(path, sizeof path, "%s/names_%s.txt", refs, v[i].name);
            check_names_file(m, path);
        }
        cn_model_free(m);
    }
    /* B0 structure: stem, SE widths max(1, in/4), head 4x the last stage, classifier */
    cn_model *b0 = make_effnet("efficientnet_b0", 0, 1, 10);
    if (b0) {
        int64_t stem[4] = {32, 1, 3, 3}, fc1[4] = {8, 32, 1, 1}, fc1b[4] = {4, 96, 1, 1},
                dw[4] = {144, 1, 5, 5}, head[4] = {1280, 320, 1, 1}, cls[2] = {10, 1280};
        check_shape(b0, "features.0.0.weight", 4, stem);
        check_shape(b0, "features.1.0.block.1.fc1.weight", 4, fc1);
        check_shape(b0, "features.2.0.block.2.fc1.weight", 4, fc1b);
        check_shape(b0, "features.3.0.block.1.0.weight", 4, dw);
        check_shape(b0, "features.8.0.weight", 4, head);
        check_shape(b0, "classifier.1.weight", 2, cls);
        /* 28x28 Fashion-MNIST images go all the way through */
        const cn_layer_info *rows;
        int n;
        CHECK(cn_model_layers(b0, 28, 28, &rows, &n) == CN_OK && rows[n - 1].c == 10, "28x28: %s",
              cn_errmsg());
        CHECK(cn_model_layers(b0, 224, 224, &rows, &n) == CN_OK, "%s", cn_errmsg());
        int64_t macs = 0;
        for (int i = 0; i < n; i++) macs += rows[i].macs;
        /* convolution and linear MACs as forward hooks count them on torchvision's 3-channel,
         * 1000-class model (385,814,752), less 2 input channels of the stem (2 x 32 x 112 x 112
         * x 9) and 990 classes (990 x 1280) */
        CHECK(macs == 385814752LL - 7225344 - 1267200, "efficientnet_b0 MACs %lld", (long long)macs);
        /* classifier init: U(+-1/sqrt(out_features)), zero bias */
        float w[12800], b[10];
        cn_model_tensor_get(b0, cn_model_tensor_find(b0, "classifier.1.weight"), w);
        cn_model_tensor_get(b0, cn_model_tensor_find(b0, "classifier.1.bias"), b);
        float mx = 0;
        for (int k = 0; k < 12800; k++) mx = fabsf(w[k]) > mx ? fabsf(w[k]) : mx;
        CHECK(mx <= 1 / sqrtf(10) && mx > 0.9f / sqrtf(10), "classifier bound %g", mx);
        CHECK(b[0] == 0 && b[9] == 0, "classifier bias starts at 0");
        cn_model_free(b0);
    }
    /* compound scaling for phi = 0..7 against the arithmetic of Tan and Le (2019) and the
     * rounding of torchvision (channels to multiples of 8, depth rounded up); with the refs, the
     * parameter count of torchvision's EfficientNet built with the same multipliers */
    static const int base_c[8] = {32, 16, 24, 40, 80, 112, 192, 320}, base_r[7] = {1, 2, 2, 3, 3, 4, 1};
    FILE *tf = NULL;
    if (refs) {
        char path[1024];
        snprintf(path, sizeof path, "%s/phi_table.txt", refs);
        tf = fopen(path, "r");
        CHECK(tf != NULL, "no %s", path);
    }
    for (int phi = 0; phi <= 7; phi++) {
        cn_model *m = make_effnet("efficientnet", phi, 0, 0);
        if (!m) continue;
        double wm = pow(1.1, phi), dm = pow(1.2, phi);
        int res = (int)floor(224 * pow(1.15, phi) + 0.5);
        CHECK(fabs(cn_model_width_mult(m) - wm) < 1e-12 && fabs(cn_model_depth_mult(m) - dm) < 1e-12,
              "phi %d: multipliers %g %g", phi, cn_model_width_mult(m), cn_model_depth_mult(m));
        CHECK(cn_model_default_size(m) == res, "phi %d: resolution %d, expected %d", phi,
              cn_model_default_size(m), res);
        cn_stage_info st[7];
        int ns = cn_model_stages(m, 64, 64, st, 7), bad = 0;
        CHECK(ns == 7, "phi %d: %d stages", phi, ns);
        for (int s = 0; s < ns; s++) {
            bad += st[s].in_channels != divisible8(base_c[s] * wm);
            bad += st[s].out_channels != divisible8(base_c[s + 1] * wm);
            bad += st[s].repeats != (int)ceil(base_r[s] * dm);
        }
        CHECK(!bad, "phi %d: %d stage settings differ from the arithmetic", phi, bad);
        if (tf) {
            int tphi;
            long long tparams;
            if (fscanf(tf, "%d %lld", &tphi, &tparams) == 2)
                CHECK(tphi == phi && tparams == cn_model_param_count(m),
                      "phi %d: %lld parameters, torchvision %lld", phi,
                      (long long)cn_model_param_count(m), tparams);
            else
                CHECK(0, "phi_table.txt: no row for phi %d", phi);
        }
        cn_model_free(m);
    }
    if (tf) fclose(tf);
    /* options that do not apply are errors, not silently ignored */
    cn_model_config c;
    cn_model_config_default(&c);
    cn_model *m = NULL;
    c.name = "efficientnet_b3";
    c.phi = 2;
    CHECK(cn_model_create(&m, &c) == CN_ERR_ARG && strstr(cn_errmsg(), "efficientnet"), "phi on b3");
    c.name = "resnet18";
    c.phi = 0;
    c.dropout = 0.5f;
    CHECK(cn_model_create(&m, &c) == CN_ERR_ARG, "dropout on a ResNet accepted");
    c.name = "efficientnet";
    c.dropout = 1.5f;
    CHECK(cn_model_create(&m, &c) == CN_ERR_ARG, "dropout 1.5 accepted");
    c.dropout = -1;
    c.width_mult = 100;
    CHECK(cn_model_create(&m, &c) == CN_ERR_ARG, "width 100 accepted");
    c.width_mult = 0.5;
    c.depth_mult = 0.5;
    CHECK(cn_model_create(&m, &c) == CN_OK, "width 0.5: %s", cn_errmsg());
    cn_model_free(m);
}

static void check_names_file(cn_model *m, const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return;
    char line[512];
    int i = 0, bad = 0;
    while (fgets(line, sizeof line, f)) {
        char key[256], shape[256] = "";
        if (sscanf(line, "%255s %255s", key, shape) < 1) continue;
        cn_tensor_info ti;
        if (i >= cn_model_tensor_count(m) || cn_model_tensor_info(m, i, &ti) != CN_OK) {
            bad++;
            break;
        }
        char ours[256] = "";
        for (int k = 0; k < ti.ndim; k++)
            snprintf(ours + strlen(ours), sizeof ours - strlen(ours), "%s%lld", k ? "," : "",
                     (long long)ti.shape[k]);
        if (strcmp(key, ti.name) || strcmp(shape, ours)) {
            if (!bad) fprintf(stderr, "%s entry %d: torch %s [%s], ours %s [%s]\n", path, i, key, shape, ti.name, ours);
            bad++;
        }
        i++;
    }
    fclose(f);
    CHECK(!bad && i == cn_model_tensor_count(m), "%s: state_dict order/shape differs (%d bad, %d of %d)",
          path, bad, i, cn_model_tensor_count(m));
}

/* the tensors an eval forward writes, kept by the graph's observe hook */
typedef struct kept {
    int n, want[64];
    float *data[64];
    size_t count[64];
} kept;

static void keep_tensor(void *user, int t, const float *data, size_t count) {
    kept *k = user;
    for (int i = 0; i < k->n; i++)
        if (k->want[i] == t && !k->data[i] && (k->data[i] = malloc(sizeof(float) * count))) {
            memcpy(k->data[i], data, sizeof(float) * count);
            k->count[i] = count;
        }
}

/* Inference fusion against the same model built without any: EfficientNet-B0 on 2 x 3 x 200 x
 * 176, batch-norm statistics and affines away from their defaults; the output of every
 * depthwise convolution that an expansion took in (cn_node.fuse_dw; stage 2's expanded map is
 * 100 x 88 x 96, 3.4 MB an image, so it runs band by band) compared with the unfused model's
 * (the logits of a randomly initialised EfficientNet hardly move when a band goes wrong). */
static void fusion_check(void) {
    cn_model *m = make_effnet("efficientnet_b0", 0, 3, 10), *q = NULL;
    if (!m) return;
    srand(7);
    for (int i = 0; i < cn_model_tensor_count(m); i++) {
        cn_tensor_info ti;
        if (cn_model_tensor_info(m, i, &ti) != CN_OK || ti.ndim != 1 || ti.is_int64) continue;
        float *v = malloc(sizeof(float) * (size_t)ti.count);
        for (int64_t k = 0; k < ti.count; k++) {
            const float u = (float)rand() / (float)RAND_MAX;
            v[k] = strstr(ti.name, "running_mean") ? 0.4f * u - 0.2f
                   : strstr(ti.name, "bias")       ? 0.2f * u - 0.1f
                                                   : 0.5f + u; /* running_var, BN weight */
        }
        cn_model_tensor_set(m, i, v);
        free(v);
    }
    const int n = 2, h = 200, w = 176;
    CHECK(cn_model_new_arch_nofuse(&q, &m->arch, m->threads) == CN_OK &&
              cn_model_copy_state(q, m) == CN_OK,
          "nofuse copy: %s", cn_errmsg());
    kept a = {0}, b = {0};
    for (int i = 0; i < m->g.nnodes && a.n < 64; i++)
        if (m->g.nodes[i].fuse_dw >= 0) a.want[a.n++] = m->g.nodes[m->g.nodes[i].fuse_dw].fuse_out;
    b.n = a.n;
    memcpy(b.want, a.want, sizeof a.want);
    CHECK(a.n == 15, "efficientnet_b0: %d expansions fused with their depthwise convolutions", a.n);
    /* and every projection that took in its block's SE product (cn_node.fuse_in): on the maps
     * under 14x14 both images go through one GEMM (graph.c, se_images) */
    const int ndw = a.n;
    for (int i = 0; i < m->g.nnodes && a.n < 64; i++)
        if (m->g.nodes[i].fuse_in >= 0) a.want[a.n++] = m->g.nodes[i].fuse_out;
    CHECK(a.n - ndw == 16, "efficientnet_b0: %d projections with their SE product", a.n - ndw);
    b.n = a.n;
    memcpy(b.want, a.want, sizeof a.want);
    float *x = malloc(sizeof(float) * (size_t)n * 3 * h * w), la[20], lb[20];
    for (size_t k = 0; k < (size_t)n * 3 * h * w; k++) x[k] = (float)rand() / (float)RAND_MAX - 0.5f;
    m->g.observe = keep_tensor, m->g.observe_user = &a;
    if (q) q->g.observe = keep_tensor, q->g.observe_user = &b;
    if (q && cn_model_forward(m, x, n, h, w, 0, la) == CN_OK &&
        cn_model_forward(q, x, n, h, w, 0, lb) == CN_OK) {
        double worst = 0;
        int seen = 0;
        for (int i = 0; i < a.n; i++) {
            if (!a.data[i] || !b.data[i] || a.count[i] != b.count[i]) continue;
            const double e = max_rel_err(a.data[i], b.data[i], a.count[i], 1e-6);
            if (e > worst || e != e) worst = e;
            seen++;
        }
        CHECK(seen == a.n, "efficientnet_b0: %d of %d outputs seen by both", seen, a.n);
        CHECK(worst < 1e-5,
              "efficientnet_b0 fused against unfused eval: depthwise and projection outputs rel "
              "err %g",
              worst);
        const double el = max_rel_err(la, lb, 20, 1e-6);
        CHECK(el < 1e-4, "efficientnet_b0 fused against unfused eval: logits rel err %g", el);
    } else {
        CHECK(0, "efficientnet_b0 eval forwards: %s", cn_errmsg());
    }
    for (int i = 0; i < a.n; i++) free(a.data[i]), free(b.data[i]);
    free(x);
    cn_model_free(q);
    cn_model_free(m);
}

/* Image lanes (graph.c, forward_lanes): an eval batch with its first layers run image by
 * image, one lane a thread, and the rest over the batch, against the batch without lanes
 * (CN_IMAGE_LANES=0) and with every layer in the lanes (=1): the same logits (the one-image
 * plans may pick other algorithms: Winograd's tiles, GEMM paths), every image of an odd batch
 * written, and the lanes made where the split falls inside the network. */
static void lanes_case(const char *name, int inc, int ncls, int n, int h, int w, int split_in) {
    cn_model *m = make(name, inc, ncls, 3, 0);
    if (!m) return;
    cn_model_set_threads(m, 2);
    const size_t nx = (size_t)n * inc * h * w;
    float *x = malloc(sizeof(float) * nx), *l0 = calloc((size_t)n * ncls, sizeof(float));
    float *l1 = calloc((size_t)n * ncls, sizeof(float)), *l2 = calloc((size_t)n * ncls, sizeof(float));
    srand(11);
    for (size_t k = 0; k < nx; k++) x[k] = (float)rand() / (float)RAND_MAX - 0.5f;
    int ok = 1;
    setenv("CN_IMAGE_LANES", "0", 1);
    ok &= cn_model_forward(m, x, n, h, w, 0, l0) == CN_OK;
    CHECK(m->g.nlanes == 0, "%s: no lanes made with CN_IMAGE_LANES=0", name);
    unsetenv("CN_IMAGE_LANES");
    ok &= cn_model_forward(m, x, n, h, w, 0, l1) == CN_OK;
    CHECK(m->g.nlanes == 2 && (m->g.lane_split < m->g.nnodes) == split_in,
          "%s: %d lanes, split at node %d of %d", name, m->g.nlanes, m->g.lane_split,
          m->g.nnodes);
    /* every layer in the lanes: the same model again (the same seed), a new plan */
    cn_model *f = make(name, inc, ncls, 3, 0);
    if (f) {
        cn_model_set_threads(f, 2);
        setenv("CN_IMAGE_LANES", "1", 1);
        ok &= cn_model_forward(f, x, n, h, w, 0, l2) == CN_OK;
        unsetenv("CN_IMAGE_LANES");
        CHECK(f->g.nlanes == 2 && f->g.lane_split == f->g.nnodes,
              "%s: forced lanes: %d, split at %d of %d", name, f->g.nlanes, f->g.lane_split,
              f->g.nnodes);
        cn_model_free(f);
    }
    CHECK(ok, "%s lanes forwards: %s", name, cn_errmsg());
    double s = 0;
    for (int i = 0; i < n * ncls; i++) s += fabs(l0[i]);
    CHECK(s > 0 && s == s, "%s: logits all zero or NaN (%g)", name, s);
    const double e1 = max_rel_err(l1, l0, (size_t)n * ncls, 1e-6);
    const double e2 = max_rel_err(l2, l0, (size_t)n * ncls, 1e-6);
    CHECK(e1 < 1e-4 && e2 < 1e-4, "%s batch %d: lanes against the batch: rel err %g (split), %g (all)",
          name, n, e1, e2);
    free(x), free(l0), free(l1), free(l2);
    cn_model_free(m);
}

int main(int argc, char **argv) {
    const char *refs = argc > 1 ? argv[1] : NULL;
    lanes_case("resnet18", 3, 10, 3, 64, 64, 1);
    lanes_case("efficientnet_b0", 3, 7, 5, 96, 80, 1);
    lanes_case("resnet20", 1, 10, 4, 28, 28, 1);
    for (size_t k = 0; k < sizeof models / sizeof *models; k++) {
        const expect *e = &models[k];
        cn_model *m = make(e->name, e->in_channels, e->num_classes, 1, 0);
        if (!m) continue;
        CHECK(cn_model_param_count(m) == e->params, "%s: %lld parameters, expected %lld", e->name,
              (long long)cn_model_param_count(m), (long long)e->params);
        CHECK(cn_model_tensor_count(m) == e->entries, "%s: %d state entries, expected %d", e->name,
              cn_model_tensor_count(m), e->entries);
        int64_t fc[2] = {e->num_classes, strstr("resnet50 resnet101 resnet152", e->name) ? 2048 : e->params < 2000000 ? 64 : 512};
        check_shape(m, "fc.weight", 2, fc);
        int64_t c1[4] = {e->params < 2000000 ? 16 : 64, e->in_channels, e->params < 2000000 ? 3 : 7,
                         e->params < 2000000 ? 3 : 7};
        check_shape(m, "conv1.weight", 4, c1);
        int64_t scalar[1] = {0};
        check_shape(m, "bn1.num_batches_tracked", 0, scalar);
        if (refs && e->in_channels == 3) {
            char path[1024];
            snprintf(path, sizeof path, "%s/names_%s.txt", refs, e->name);
            check_names_file(m, path);
        }
        cn_model_free(m);
    }
    /* torchvision-specific structure */
    cn_model *r50 = make("resnet50", 3, 1000, 1, 0);
    if (r50) {
        int64_t ds[4] = {256, 64, 1, 1}, c2[4] = {128, 128, 3, 3};
        check_shape(r50, "layer1.0.downsample.0.weight", 4, ds);
        check_shape(r50, "layer2.0.conv2.weight", 4, c2); /* v1.5: stride on the 3x3 */
        const cn_layer_info *rows;
        int n;
        CHECK(cn_model_layers(r50, 224, 224, &rows, &n) == CN_OK, "%s", cn_errmsg());
        int64_t macs = 0;
        for (int i = 0; i < n; i++) macs += rows[i].macs;
        CHECK(macs == 4089184256LL, "resnet50 MACs %lld", (long long)macs);
        /* any size the network can reduce, not only squares */
        CHECK(cn_model_layers(r50, 97, 131, &rows, &n) == CN_OK, "97x131: %s", cn_errmsg());
        CHECK(n > 0 && rows[n - 1].c == 1000, "97x131 output");
        /* as in PyTorch, padding lets even a 1x1 image through every layer */
        CHECK(cn_model_layers(r50, 1, 1, &rows, &n) == CN_OK && rows[n - 1].c == 1000,
              "1x1: %s", cn_errmsg());
        CHECK(cn_model_layers(r50, 0, 5, &rows, &n) == CN_ERR_ARG, "0x5 accepted");
        /* Winograd's transformed weights at batch 1 (kernels/winograd.h): ResNet-50's would
         * take 68 MB with its 256-channel layers, beyond the budget, so those stay off; ResNet-18's
         * take 38 MB and are kept (its 512-channel layers at 7x7 are not taken at all) */
        CHECK(cn_model_layers(r50, 224, 224, &rows, &n) == CN_OK && !r50->g.wino_wide,
              "resnet50 batch 1 keeps its wide layers' transformed weights");
        cn_model *r18 = make("resnet18", 3, 1000, 1, 0);
        if (r18) {
            CHECK(cn_model_layers(r18, 224, 224, &rows, &n) == CN_OK && r18->g.wino_wide,
                  "resnet18 batch 1 does not keep its wide layers' transformed weights");
            cn_model_free(r18);
        }
        cn_model_free(r50);
    }
    cn_model *r20 = make("resnet20", 1, 10, 1, 0);
    if (r20) {
        int64_t c[4] = {32, 16, 3, 3};
        check_shape(r20, "layer2.0.conv1.weight", 4, c);
        CHECK(cn_model_tensor_find(r20, "layer2.0.downsample.0.weight") < 0,
              "option A has no downsample parameters");
        const cn_layer_info *rows;
        int n;
        CHECK(cn_model_layers(r20, 28, 36, &rows, &n) == CN_OK, "%s", cn_errmsg());
        cn_model_free(r20);
    }
    /* initialisation: kaiming normal fan_out, BN 1/0, zero-init residual, same seed same bits */
    cn_model *a = make("resnet18", 3, 1000, 7, 1), *b = make("resnet18", 3, 1000, 7, 1),
             *c = make("resnet18", 3, 1000, 8, 0);
    if (a && b && c) {
        int i = cn_model_tensor_find(a, "layer3.0.conv1.weight");
        cn_tensor_info ti;
        cn_model_tensor_info(a, i, &ti);
        float *wa = malloc(sizeof(float) * ti.count), *wb = malloc(sizeof(float) * ti.count),
              *wc = malloc(sizeof(float) * ti.count);
        cn_model_tensor_get(a, i, wa);
        cn_model_tensor_get(b, i, wb);
        cn_model_tensor_get(c, i, wc);
        CHECK(memcmp(wa, wb, sizeof(float) * ti.count) == 0, "same seed, different weights");
        CHECK(memcmp(wa, wc, sizeof(float) * ti.count) != 0, "different seeds, same weights");
        double s = 0, s2 = 0;
        for (int64_t k = 0; k < ti.count; k++) s += wa[k], s2 += (double)wa[k] * wa[k];
        double mean = s / ti.count, sd = sqrt(s2 / ti.count - mean * mean);
        double expect_sd = sqrt(2.0 / (256 * 9)); /* fan_out = 256 * 3 * 3 */
        CHECK(fabs(mean) < 0.05 * expect_sd && fabs(sd / expect_sd - 1) < 0.02,
              "kaiming fan_out: mean %g sd %g, expected sd %g", mean, sd, expect_sd);
        float g[512];
        cn_model_tensor_get(a, cn_model_tensor_find(a, "layer1.0.bn2.weight"), g);
        CHECK(g[0] == 0 && g[63] == 0, "zero_init_residual zeroes bn2.weight");
        cn_model_tensor_get(c, cn_model_tensor_find(c, "layer1.0.bn2.weight"), g);
        CHECK(g[0] == 1 && g[63] == 1, "BN weight starts at 1");
        cn_model_tensor_get(a, cn_model_tensor_find(a, "layer1.0.bn1.weight"), g);
        CHECK(g[0] == 1, "zero_init_residual leaves bn1 alone");
        int fi = cn_model_tensor_find(a, "fc.weight");
        float *fw = malloc(sizeof(float) * 512 * 1000);
        cn_model_tensor_get(a, fi, fw);
        float mx = 0;
        for (int k = 0; k < 512 * 1000; k++) mx = fabsf(fw[k]) > mx ? fabsf(fw[k]) : mx;
        CHECK(mx <= 1 / sqrtf(512) && mx > 0.95f / sqrtf(512), "fc uniform bound: %g", mx);
        free(fw);
        free(wa);
        free(wb);
        free(wc);
    }
    cn_model_free(a);
    cn_model_free(b);
    cn_model_free(c);
    effnet_checks(refs);
    fusion_check();
    /* errors are statuses with messages, never aborts */
    cn_model_config cfg;
    cn_model_config_default(&cfg);
    cn_model *m = (cn_model *)1;
    cfg.name = "resnet19";
    CHECK(cn_model_create(&m, &cfg) == CN_ERR_ARG && m == NULL && strstr(cn_errmsg(), "resnet19") &&
              strstr(cn_errmsg(), "resnet50"),
          "unknown model: %s", cn_errmsg());
    cfg.name = "resnet18";
    cfg.num_classes = -3;
    CHECK(cn_model_create(&m, &cfg) != CN_OK, "negative classes accepted");
    cn_model_free(NULL);
    return check_summary("models");
}
