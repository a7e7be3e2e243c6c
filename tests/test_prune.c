/* Pruning: channel groups against a hand-written specification of every family, exact surgery
 * (dead channels removed give the same logits), file round trips, pruning twice, gradual masks
 * and compaction, unstructured masks that survive training, and bad options. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "model.h"
#include "convnet.h"

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static float urand(void) { /* xorshift, [0, 1) */
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)((rng_state >> 40) / 16777216.0);
}


static int ends_with(const char *s, const char *suffix) {
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcmp(s + a - b, suffix);
}

/* Random batch-norm statistics, scales and shifts: eval mode then uses all of them. */
static void randomize_bn(cn_model *m) {
    for (int i = 0; i < cn_model_tensor_count(m); i++) {
        cn_tensor_info ti;
        cn_model_tensor_info(m, i, &ti);
        if (ti.ndim != 1 || ti.is_int64) continue;
        float *v = malloc(sizeof *v * (size_t)ti.count);
        for (int64_t k = 0; k < ti.count; k++) {
            float u = urand();
            if (ends_with(ti.name, "running_var")) v[k] = 0.5f + u;
            else if (ends_with(ti.name, "running_mean")) v[k] = 0.4f * u - 0.2f;
            else if (ends_with(ti.name, ".weight")) v[k] = 0.5f + u;
            else v[k] = u - 0.5f;
        }
        cn_model_tensor_set(m, i, v);
        free(v);
    }
}

/* Zeroes the indices 1, 4, 7, ... (the dead channels) of dimension dim of tensor `name`
 * (torchvision layout). 0 if there is none. */
static int dead(int64_t c) { return c % 3 == 1; }
static int zero_slice(cn_model *m, const char *name, int dim) {
    int i = cn_model_tensor_find(m, name);
    if (i < 0) return 0;
    cn_tensor_info ti;
    cn_model_tensor_info(m, i, &ti);
    float *v = malloc(sizeof *v * (size_t)ti.count);
    cn_model_tensor_get(m, i, v);
    int64_t d0 = ti.shape[0], d1 = ti.ndim > 1 ? ti.shape[1] : 1, rest = 1;
    for (int k = 2; k < ti.ndim; k++) rest *= ti.shape[k];
    for (int64_t a = 0; a < d0; a++)
        for (int64_t b = 0; b < d1; b++)
            if (dead(dim == 0 ? a : b))
                for (int64_t r = 0; r < rest; r++) v[(a * d1 + b) * rest + r] = 0;
    cn_model_tensor_set(m, i, v);
    free(v);
    return 1;
}

/* The hand-written channel-group specification: for a producer convolution, the tensors that
 * shrink with it (name, dim; a "bn:" prefix means the four batch-norm tensors). Returns the
 * number of (tensor, dim) pairs, or 0 when the producer is not expected to form a group. */
typedef struct slice {
    char name[96];
    int dim;
} slice;

static int spec(const cn_model *m, const char *p, slice *s) {
    int n = 0;
    char pre[96], buf[96];
#define ADD(nm, d)                                                                                 \
    do {                                                                                           \
        snprintf(s[n].name, sizeof s[n].name, "%s", nm);                                           \
        s[n++].dim = d;                                                                            \
    } while (0)
    snprintf(buf, sizeof buf, "%s.weight", p);
    ADD(buf, 0);
    const char *model = cn_model_name(m);
    if (!strcmp(p, "conv1") && cn_model_tensor_find(m, "layer1.0.downsample.0.weight") >= 0) {
        /* ResNet-50's stem feeds two convolutions and no add (layer1.0 has a downsample) */
        ADD("bn:bn1", 0);
        ADD("layer1.0.conv1.weight", 1);
        ADD("layer1.0.downsample.0.weight", 1);
        return n;
    }
    if (!strncmp(model, "resnet", 6)) {
        /* layerX.Y.convK -> bnK and conv(K+1) inside the residual branch */
        const char *dot = strrchr(p, '.');
        if (!dot || strncmp(dot, ".conv", 5) || !strncmp(p, "conv1", 5)) return 0;
        int k = atoi(dot + 5);
        int bottleneck = cn_model_tensor_find(m, "layer1.0.conv3.weight") >= 0;
        if (k >= (bottleneck ? 3 : 2)) return 0;
        snprintf(pre, sizeof pre, "%.*s", (int)(dot - p), p);
        snprintf(buf, sizeof buf, "bn:%s.bn%d", pre, k);
        ADD(buf, 0);
        snprintf(buf, sizeof buf, "%s.conv%d.weight", pre, k + 1);
        ADD(buf, 1);
        return n;
    }
    /* efficientnet_b0 */
    int S, B, K;
    char tail[32] = "";
    if (!strcmp(p, "features.0.0") || (sscanf(p, "features.%d.%d.block.%d.%31s", &S, &B, &K,
                                              tail) == 4 && !strcmp(tail, "0") && K == 0)) {
        /* stem (feeding stage 1's depthwise conv) or an expand conv */
        int stem = !strcmp(p, "features.0.0");
        if (stem) snprintf(pre, sizeof pre, "features.1.0.block.");
        else snprintf(pre, sizeof pre, "features.%d.%d.block.", S, B);
        int d = stem ? 0 : 1;
        snprintf(buf, sizeof buf, "bn:%s", stem ? "features.0.1" : "");
        if (!stem) snprintf(buf, sizeof buf, "bn:%s0.1", pre);
        ADD(buf, 0);
        snprintf(buf, sizeof buf, "%s%d.0.weight", pre, d);
        ADD(buf, 0);
        snprintf(buf, sizeof buf, "bn:%s%d.1", pre, d);
        ADD(buf, 0);
        snprintf(buf, sizeof buf, "%s%d.fc1.weight", pre, d + 1);
        ADD(buf, 1);
        snprintf(buf, sizeof buf, "%s%d.fc2.weight", pre, d + 1);
        ADD(buf, 0);
        snprintf(buf, sizeof buf, "%s%d.fc2.bias", pre, d + 1);
        ADD(buf, 0);
        snprintf(buf, sizeof buf, "%s%d.0.weight", pre, d + 2);
        ADD(buf, 1);
        return n;
    }
    if (ends_with(p, ".fc1")) {
        snprintf(buf, sizeof buf, "%s.bias", p);
        ADD(buf, 0);
        snprintf(buf, sizeof buf, "%.*sfc2.weight", (int)strlen(p) - 3, p);
        ADD(buf, 1);
        return n;
    }
    if (!strcmp(p, "features.1.0.block.2.0") || !strcmp(p, "features.7.0.block.3.0")) {
        /* the outputs of the one-block stages 1 and 7 feed the next conv only (no skip) */
        snprintf(buf, sizeof buf, "bn:%.*s1", (int)strlen(p) - 1, p);
        ADD(buf, 0);
        ADD(p[9] == '1' ? "features.2.0.block.0.0.weight" : "features.8.0.weight", 1);
        return n;
    }
    if (!strcmp(p, "features.8.0")) {
        ADD("bn:features.8.1", 0);
        ADD("classifier.1.weight", 1);
        return n;
    }
#undef ADD
    return 0;
}

static int spec_pairs(const slice *s, int n) {
    int k = 0;
    for (int i = 0; i < n; i++) k += strncmp(s[i].name, "bn:", 3) ? 1 : 4;
    return k;
}

static void kill_channels(cn_model *m, const slice *s, int n) {
    for (int i = 0; i < n; i++) {
        if (!strncmp(s[i].name, "bn:", 3)) {
            /* the BN's scale and shift; its running statistics stay (random) */
            char nm[128];
            snprintf(nm, sizeof nm, "%s.weight", s[i].name + 3);
            CHECK(zero_slice(m, nm, 0), "no tensor %s", nm);
            snprintf(nm, sizeof nm, "%s.bias", s[i].name + 3);
            CHECK(zero_slice(m, nm, 0), "no tensor %s", nm);
        } else {
            CHECK(zero_slice(m, s[i].name, s[i].dim), "no tensor %s", s[i].name);
        }
    }
}

static void logits(cn_model *m, const float *x, int n, int inc, int h, float *out) {
    (void)inc;
    CHECK(cn_model_forward(m, x, n, h, h, 0, out) == CN_OK, "forward: %s", cn_errmsg());
}

/* Dead channels (every tensor of their group zeroed) are found by a tiny threshold and removed;
 * the small model gives the same logits, round-trips through its file, and prunes again. */
static void surgery_exact(const char *name, int inc, int size, int want_groups) {
    cn_model *m = test_model(name, inc, 7);
    if (!m) return;
    randomize_bn(m);
    cn_prune_group *gr;
    int ng;
    CHECK(cn_prune_groups(m, &gr, &ng) == CN_OK, "groups: %s", cn_errmsg());
    CHECK(ng == want_groups, "%s: %d prunable groups, want %d", name, ng, want_groups);
    int dead_total = 0;
    slice s[16];
    for (int i = 0; i < ng; i++) {
        int n = spec(m, gr[i].name, s);
        CHECK(n > 0, "%s: unexpected channel group %s", name, gr[i].name);
        if (!n) continue;
        CHECK(spec_pairs(s, n) == gr[i].tensors, "%s: group %s has %d tensors, the spec %d", name,
              gr[i].name, gr[i].tensors, spec_pairs(s, n));
        /* the producer's bias (SE fc1) is in the spec already; conv weights otherwise */
        kill_channels(m, s, n);
        for (int c = 0; c < gr[i].channels; c++) dead_total += dead(c);
    }
    int n = 2;
    size_t xs = (size_t)n * inc * size * size;
    float *x = malloc(sizeof *x * xs), *y0 = malloc(sizeof *y0 * 20), *y1 = malloc(sizeof *y1 * 20);
    for (size_t i = 0; i < xs; i++) x[i] = 2 * urand() - 1;
    logits(m, x, n, inc, size, y0);

    cn_prune_config pc;
    cn_prune_config_default(&pc);
    pc.threshold = 1e-30f;
    cn_model *p = NULL;
    CHECK(cn_prune(&p, m, &pc) == CN_OK, "%s: prune: %s", name, cn_errmsg());
    if (p) {
        cn_prune_group *pg;
        int npg, removed = 0;
        CHECK(cn_prune_groups(p, &pg, &npg) == CN_OK && npg == ng, "%s: groups after", name);
        for (int i = 0; i < ng && i < npg; i++) removed += gr[i].channels - pg[i].channels;
        CHECK(removed == dead_total, "%s: removed %d channels, %d were dead", name, removed,
              dead_total);
        free(pg);
        CHECK(cn_model_param_count(p) < cn_model_param_count(m), "%s: not smaller", name);
        logits(p, x, n, inc, size, y1);
        double e = max_rel_err(y1, y0, 20, 1e-3);
        CHECK(e < 2e-5, "%s: pruned logits differ by %.3g", name, e);
        printf("%s: %d dead channels removed, params %lld -> %lld, logits rel err %.2g\n", name,
               dead_total, (long long)cn_model_param_count(m), (long long)cn_model_param_count(p),
               e);
        /* file round trip: the widths come back from the metadata */
        char path[] = "/tmp/cn_prune_XXXXXX";
        int fd = mkstemp(path);
        if (fd >= 0) close(fd);
        CHECK(cn_model_save(p, path) == CN_OK, "save: %s", cn_errmsg());
        cn_model *q = NULL;
        CHECK(cn_model_load(&q, path, NULL) == CN_OK, "%s: reload: %s", name, cn_errmsg());
        if (q) {
            float y2[20];
            logits(q, x, n, inc, size, y2);
            CHECK(!memcmp(y2, y1, sizeof y2), "%s: reloaded pruned model differs", name);
            CHECK(strstr(cn_model_arch_json(q), "\"widths\"") != NULL, "no widths in metadata");
            /* pruning twice: 25 % of what is left, then a training step runs */
            cn_prune_config_default(&pc);
            pc.amount = 0.25f;
            cn_model *r = NULL;
            CHECK(cn_prune(&r, q, &pc) == CN_OK, "%s: second prune: %s", name, cn_errmsg());
            if (r) {
                CHECK(cn_model_param_count(r) < cn_model_param_count(q), "second prune");
                int32_t lab[2] = {1, 3};
                float loss = 0;
                CHECK(cn_model_forward(r, x, n, size, size, 1, NULL) == CN_OK &&
                          cn_model_loss(r, lab, 0, &loss, NULL) == CN_OK &&
                          cn_model_backward(r) == CN_OK && loss > 0 && loss < 100,
                      "%s: train step after two prunes: %s", name, cn_errmsg());
                cn_model_free(r);
            }
            cn_model_free(q);
        }
        remove(path);
        cn_model_free(p);
    }
    free(gr);
    free(x);
    free(y0);
    free(y1);
    cn_model_free(m);
}

static int64_t count_zero_weights(cn_model *m, int64_t *total) {
    int64_t z = 0;
    *total = 0;
    for (int i = 0; i < cn_model_tensor_count(m); i++) {
        cn_tensor_info ti;
        cn_model_tensor_info(m, i, &ti);
        if ((ti.ndim != 4 && ti.ndim != 2) || !ti.is_param) continue;
        float *v = malloc(sizeof *v * (size_t)ti.count);
        cn_model_tensor_get(m, i, v);
        for (int64_t k = 0; k < ti.count; k++) z += v[k] == 0;
        *total += ti.count;
        free(v);
    }
    return z;
}

/* Unstructured masks: exactly the fraction asked, kept at zero by SGD and AdamW steps, and
 * through a file round trip. */
static void magnitude(void) {
    cn_model *m = test_model("resnet20", 1, 3);
    if (!m) return;
    for (int scope = 0; scope < 2; scope++) {
        cn_prune_config pc;
        cn_prune_config_default(&pc);
        pc.method = CN_PRUNE_MAGNITUDE;
        pc.amount = 0.8f;
        pc.global = scope;
        cn_model *p = NULL;
        CHECK(cn_prune(&p, m, &pc) == CN_OK, "magnitude: %s", cn_errmsg());
        if (!p) continue;
        int64_t total, z = count_zero_weights(p, &total);
        double frac = (double)z / total;
        CHECK(frac >= 0.799 && frac <= 0.801, "magnitude scope %d: %.4f zero", scope, frac);
        CHECK(cn_model_is_sparse(p), "pruned model has no mask");
        /* a few optimizer steps on random data: the pruned weights stay exactly zero */
        cn_optim *o = NULL;
        cn_optim_config oc;
        cn_optim_config_default(&oc, scope ? CN_OPTIM_ADAMW : CN_OPTIM_SGD);
        oc.momentum = 0.9f;
        oc.weight_decay = 5e-4f;
        CHECK(cn_optim_create(&o, p, &oc) == CN_OK, "optim");
        float x[4 * 28 * 28];
        int32_t lab[4] = {0, 1, 2, 3};
        for (int step = 0; o && step < 3; step++) {
            for (size_t i = 0; i < sizeof x / sizeof *x; i++) x[i] = 2 * urand() - 1;
            float loss;
            cn_model_zero_grad(p);
            cn_model_forward(p, x, 4, 28, 28, 1, NULL);
            cn_model_loss(p, lab, 0.1f, &loss, NULL);
            cn_model_backward(p);
            cn_optim_step(o, 0.05f);
        }
        cn_optim_free(o);
        int64_t z2 = count_zero_weights(p, &total);
        CHECK(z2 == z, "magnitude: %lld zeros before training, %lld after", (long long)z,
              (long long)z2);
        char path[] = "/tmp/cn_prune_XXXXXX";
        int fd = mkstemp(path);
        if (fd >= 0) close(fd);
        CHECK(cn_model_save(p, path) == CN_OK, "save sparse");
        cn_model *q = NULL;
        CHECK(cn_model_load(&q, path, NULL) == CN_OK && q && cn_model_is_sparse(q),
              "sparse model reloads with its mask: %s", cn_errmsg());
        cn_model_free(q);
        remove(path);
        cn_model_free(p);
    }
    cn_model_free(m);
}

/* Gradual structured pruning: masks in place (shapes kept, function changed), then compaction
 * gives a smaller model with the same logits as the masked one. */
static void mask_and_compact(const char *name, int inc, int size) {
    cn_model *m = test_model(name, inc, 11);
    if (!m) return;
    randomize_bn(m);
    cn_prune_config pc;
    cn_prune_config_default(&pc);
    pc.amount = 0.5f;
    int64_t before = cn_model_param_count(m);
    CHECK(cn_prune_mask(m, &pc) == CN_OK, "mask: %s", cn_errmsg());
    CHECK(cn_model_param_count(m) == before, "masking changed the shapes");
    CHECK(cn_model_is_sparse(m), "masked model has no mask");
    float x[2 * 3 * 32 * 32], y0[20], y1[20];
    for (int i = 0; i < 2 * inc * size * size; i++) x[i] = 2 * urand() - 1;
    logits(m, x, 2, inc, size, y0);
    cn_model *p = NULL;
    CHECK(cn_prune_compact(&p, m) == CN_OK, "compact: %s", cn_errmsg());
    if (p) {
        logits(p, x, 2, inc, size, y1);
        double e = max_rel_err(y1, y0, 20, 1e-3);
        CHECK(e < 2e-5, "%s: compacted logits differ by %.3g", name, e);
        /* half of each group's channels went (floor), checked on the first group */
        cn_prune_group *a, *b;
        int na, nb;
        cn_prune_groups(m, &a, &na);
        cn_prune_groups(p, &b, &nb);
        CHECK(na == nb && na > 0 && b[0].channels == a[0].channels - a[0].channels / 2,
              "%s: %d of %d channels left", name, nb ? b[0].channels : -1, na ? a[0].channels : -1);
        free(a);
        free(b);
        cn_model_free(p);
    }
    cn_model_free(m);
}

/* Bad options fail with a clear message and leave the model untouched. */
static void bad_options(void) {
    cn_model *m = test_model("resnet20", 1, 5);
    if (!m) return;
    int64_t total;
    int64_t z0 = count_zero_weights(m, &total);
    struct {
        float amount, threshold;
        int method, min_channels;
        const char *expect;
    } cases[] = {
        {1.0f, -1, CN_PRUNE_L2, 1, "--amount"},
        {1.5f, -1, CN_PRUNE_MAGNITUDE, 1, "--amount"},
        {-1, -1, CN_PRUNE_L2, 1, "exactly one"},
        {0.5f, 0.1f, CN_PRUNE_L2, 1, "exactly one"},
        {-1, 2.0f, CN_PRUNE_L2, 1, "every channel"},
        {0.5f, -1, CN_PRUNE_L2, 0, "--min-channels"},
        {0.5f, -1, 9, 1, "method"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        cn_prune_config pc;
        cn_prune_config_default(&pc);
        pc.amount = cases[i].amount;
        pc.threshold = cases[i].threshold;
        pc.method = (cn_prune_method)cases[i].method;
        pc.min_channels = cases[i].min_channels;
        cn_model *p = (cn_model *)&pc; /* must come back NULL */
        cn_status st = cn_prune(&p, m, &pc);
        CHECK(st == CN_ERR_ARG && p == NULL && strstr(cn_errmsg(), cases[i].expect),
              "bad option case %zu: status %d, message '%s'", i, (int)st, cn_errmsg());
        st = cn_prune_mask(m, &pc);
        CHECK(st == CN_ERR_ARG, "bad option case %zu in place: status %d", i, (int)st);
    }
    CHECK(count_zero_weights(m, &total) == z0 && !cn_model_is_sparse(m),
          "a failed prune changed the model");
    cn_model_free(m);
}

int main(void) {
    /* groups: resnet18 8 (conv1 of each basic block), resnet50 33 (conv1 and conv2 of each
     * bottleneck, and the stem, which feeds layer1.0's conv1 and downsample), resnet20 9, efficientnet_b0 35 (stem, 15 expand convs, 16 SE squeezes, the
     * outputs of stages 1 and 7, the head) */
    surgery_exact("resnet20", 1, 28, 9);
    surgery_exact("resnet18", 3, 32, 8);
    surgery_exact("resnet50", 3, 32, 33);
    surgery_exact("efficientnet_b0", 1, 32, 35);
    magnitude();
    mask_and_compact("resnet20", 1, 28);
    mask_and_compact("efficientnet_b0", 3, 32);
    bad_options();
    return check_summary("prune");
}
