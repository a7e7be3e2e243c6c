/* Training pieces: schedules, optimizer update rules against their formulas, the loader's
 * determinism and augmentation, and that a short run on real data learns. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "model.h"
#include "graph/model.h"
#include "train/data.h"
#include "train/optim.h"

static void test_schedules(void) {
    cn_schedule s = {0};
    s.kind = CN_SCHED_COSINE;
    s.base_lr = 0.1f;
    CHECK(fabsf(cn_schedule_lr(&s, 0, 100) - 0.1f) < 1e-7, "cosine start");
    CHECK(fabsf(cn_schedule_lr(&s, 50, 100) - 0.05f) < 1e-6, "cosine middle");
    CHECK(fabsf(cn_schedule_lr(&s, 100, 100)) < 1e-7, "cosine end");
    s.warmup_steps = 10;
    s.warmup_start = 0.1f;
    CHECK(fabsf(cn_schedule_lr(&s, 0, 110) - 0.01f) < 1e-7, "warm-up start %g", cn_schedule_lr(&s, 0, 110));
    CHECK(fabsf(cn_schedule_lr(&s, 5, 110) - 0.055f) < 1e-6, "warm-up middle");
    CHECK(fabsf(cn_schedule_lr(&s, 10, 110) - 0.1f) < 1e-6, "after warm-up");
    CHECK(fabsf(cn_schedule_lr(&s, 60, 110) - 0.05f) < 1e-6, "cosine after warm-up");
    cn_schedule t = {0};
    t.kind = CN_SCHED_STEP;
    t.base_lr = 1;
    t.step_size = 30;
    t.gamma = 0.1f;
    CHECK(cn_schedule_lr(&t, 29, 100) == 1.0f, "step before");
    CHECK(fabsf(cn_schedule_lr(&t, 30, 100) - 0.1f) < 1e-7, "step after");
    CHECK(fabsf(cn_schedule_lr(&t, 95, 100) - 0.001f) < 1e-8, "step 3");
}

/* three steps on fixed gradients against the update rules written out in double */
static void test_optimizers(void) {
    cn_model_config mc;
    cn_model_config_default(&mc);
    mc.name = "resnet20";
    mc.in_channels = 1;
    cn_model *m;
    if (cn_model_create(&m, &mc) != CN_OK) {
        CHECK(0, "create: %s", cn_errmsg());
        return;
    }
    size_t n = m->g.nparams;
    double *p = malloc(sizeof(double) * n), *b = calloc(n, sizeof(double)),
           *v = calloc(n, sizeof(double));
    for (int kind = 0; kind < 2; kind++) {
        cn_optim_config oc;
        cn_optim_config_default(&oc, kind ? CN_OPTIM_ADAMW : CN_OPTIM_SGD);
        cn_optim *o;
        CHECK(cn_optim_create(&o, m, &oc) == CN_OK, "optim: %s", cn_errmsg());
        for (size_t i = 0; i < n; i++) {
            p[i] = m->g.params[i];
            b[i] = v[i] = 0;
            m->g.grads[i] = (float)sin(i * 0.37) * 0.1f;
        }
        for (int step = 1; step <= 3; step++) {
            float lr = oc.lr * (1.0f - 0.1f * step);
            cn_optim_step(o, lr);
            for (size_t i = 0; i < n; i++) {
                double g = m->g.grads[i];
                if (kind == 0) {
                    double d = g + oc.weight_decay * p[i];
                    b[i] = step == 1 ? d : oc.momentum * b[i] + d;
                    p[i] -= lr * (d + oc.momentum * b[i]);
                } else {
                    p[i] *= 1 - (double)lr * oc.weight_decay;
                    b[i] = oc.beta1 * b[i] + (1 - oc.beta1) * g;
                    v[i] = oc.beta2 * v[i] + (1 - oc.beta2) * g * g;
                    double mh = b[i] / (1 - pow(oc.beta1, step)), vh = v[i] / (1 - pow(oc.beta2, step));
                    p[i] -= lr * mh / (sqrt(vh) + oc.eps);
                }
            }
        }
        double worst = 0;
        for (size_t i = 0; i < n; i++) {
            double e = fabs(m->g.params[i] - p[i]) / (fabs(p[i]) + 1e-3);
            if (e > worst) worst = e;
        }
        CHECK(worst < 1e-5, "%s: 3 steps differ from the formula by %g", kind ? "adamw" : "sgd", worst);
        CHECK(o->steps == 3, "step count");
        cn_optim_free(o);
    }
    cn_optim_config bad;
    cn_optim_config_default(&bad, CN_OPTIM_SGD);
    bad.momentum = 1.5f;
    cn_optim *o = NULL;
    CHECK(cn_optim_create(&o, m, &bad) == CN_ERR_ARG && !o, "momentum 1.5 accepted");
    free(p);
    free(b);
    free(v);
    cn_model_free(m);
}

static void test_loader(void) {
    cn_dataset d = {0};
    d.n = 37;
    d.h = 4;
    d.w = 5;
    d.c = 1;
    d.num_classes = 10;
    snprintf(d.name, sizeof d.name, "synthetic");
    d.images = malloc(37 * 20);
    d.labels = malloc(sizeof(int32_t) * 37);
    for (int i = 0; i < 37; i++) {
        d.labels[i] = i;
        for (int k = 0; k < 20; k++) d.images[i * 20 + k] = (uint8_t)(i + k * 3);
    }
    float mean[1] = {0}, stdv[1] = {1.0f / 255.0f}; /* normalised value = raw byte */
    cn_loader a, b;
    CHECK(cn_loader_init(&a, &d, 8, 1, 0, NULL, mean, stdv, 42) == CN_OK, "loader");
    CHECK(cn_loader_init(&b, &d, 8, 1, 0, NULL, mean, stdv, 42) == CN_OK, "loader");
    CHECK(a.nbatches == 5, "37 samples in batches of 8 without drop_last: 5 batches");
    int seen[37] = {0}, same = 1;
    cn_loader_start(&a, 3, 0);
    cn_loader_start(&b, 3, 2);
    const cn_batch *x, *y = NULL;
    int k = 0, total = 0;
    while ((x = cn_loader_next(&a))) {
        for (int i = 0; i < x->n; i++) {
            seen[x->y[i]]++;
            /* the pixels belong to the label's image */
            CHECK(x->x[i * 20 + 1] == (float)(x->y[i] + 3), "pixels of sample %d", x->y[i]);
        }
        total += x->n;
        if (k >= 2) {
            y = cn_loader_next(&b);
            same &= y && y->n == x->n && memcmp(x->y, y->y, sizeof(int32_t) * x->n) == 0;
        }
        k++;
    }
    CHECK(total == 37, "an epoch covers every sample once (%d)", total);
    int once = 1;
    for (int i = 0; i < 37; i++) once &= seen[i] == 1;
    CHECK(once, "every sample exactly once");
    CHECK(same && !cn_loader_next(&b), "starting at batch 2 gives the same batches 2..4");
    cn_loader_start(&b, 4, 0);
    x = cn_loader_next(&b);
    int32_t first4[8];
    memcpy(first4, x->y, sizeof first4);
    cn_loader_start(&a, 3, 0);
    x = cn_loader_next(&a);
    CHECK(memcmp(first4, x->y, sizeof first4) != 0, "epochs are shuffled differently");
    cn_loader_free(&a);
    cn_loader_free(&b);

    /* augmentation: flipped and shifted copies of the same image, zero padding */
    cn_augment aug = {1, 1, 0};
    float out[20];
    int flips = 0, shifts = 0;
    for (int e = 0; e < 64; e++) {
        cn_sample_fill(out, &d, 5, &aug, mean, stdv, 9, e);
        /* find the transform that reproduces out */
        int found = 0;
        for (int f = 0; f < 2 && !found; f++)
            for (int dy = -1; dy <= 1 && !found; dy++)
                for (int dx = -1; dx <= 1 && !found; dx++) {
                    int ok = 1;
                    for (int yy = 0; yy < 4; yy++)
                        for (int xx = 0; xx < 5; xx++) {
                            int sy = yy + dy, sx = (f ? 4 - xx : xx) + dx;
                            float want = sy < 0 || sy >= 4 || sx < 0 || sx >= 5 ? 0 : d.images[5 * 20 + sy * 5 + sx];
                            ok &= fabsf(out[yy * 5 + xx] - want) < 1e-3f;
                        }
                    if (ok) {
                        found = 1;
                        flips += f;
                        shifts += dy != 0 || dx != 0;
                    }
                }
        CHECK(found, "epoch %d: output is not a padded crop / flip of the image", e);
    }
    CHECK(flips > 16 && flips < 48 && shifts > 32, "augmentation draws: %d flips %d shifts", flips, shifts);
    free(d.images);
    free(d.labels);
}

/* A few hundred steps' worth of data is enough to see learning. */
static void test_learns(void) {
    cn_train_config c;
    cn_train_config_default(&c);
    c.data = "fashion-mnist";
    c.out_dir = "build/test_train_run";
    c.epochs = 2;
    c.batch = 32;
    c.limit_train = 640;
    c.limit_test = 300;
    c.threads = 2;
    cn_train_result r;
    cn_status st = cn_train(&c, &r);
    if (st != CN_OK && strstr(cn_errmsg(), "fashion-mnist")) {
        fprintf(stderr, "skipping the learning test: %s\n", cn_errmsg());
        return;
    }
    CHECK(st == CN_OK, "train: %s", cn_errmsg());
    CHECK(r.epochs_done == 2, "epochs done %d", r.epochs_done);
    /* chance is 0.1; 2 epochs of 640 images reach about 0.4-0.5 */
    CHECK(r.test_acc > 0.25f, "test accuracy after 2 small epochs only %.3f", r.test_acc);
    printf("  640 samples x 2 epochs: test accuracy %.3f, loss %.3f\n", r.test_acc, r.test_loss);
}

static int same_models(const char *a, const char *b) {
    cn_model *x = NULL, *y = NULL;
    int same = cn_model_load(&x, a, NULL) == CN_OK && cn_model_load(&y, b, NULL) == CN_OK &&
               cn_model_tensor_count(x) == cn_model_tensor_count(y);
    for (int i = 0; same && i < cn_model_tensor_count(x); i++) {
        cn_tensor_info ti, tj;
        cn_model_tensor_info(x, i, &ti);
        cn_model_tensor_info(y, i, &tj);
        if (ti.count != tj.count) {
            same = 0;
            break;
        }
        float *u = malloc(sizeof *u * (size_t)ti.count), *v = malloc(sizeof *v * (size_t)ti.count);
        cn_model_tensor_get(x, i, u);
        cn_model_tensor_get(y, i, v);
        same = !memcmp(u, v, sizeof *u * (size_t)ti.count);
        free(u);
        free(v);
    }
    cn_model_free(x);
    cn_model_free(y);
    return same;
}

static double conv_zero_fraction(const char *path) {
    cn_model *m = NULL;
    if (cn_model_load(&m, path, NULL) != CN_OK) return -1;
    int64_t z = 0, n = 0;
    for (int i = 0; i < cn_model_tensor_count(m); i++) {
        cn_tensor_info ti;
        cn_model_tensor_info(m, i, &ti);
        if (ti.ndim != 4 && ti.ndim != 2) continue;
        float *v = malloc(sizeof *v * (size_t)ti.count);
        cn_model_tensor_get(m, i, v);
        for (int64_t k = 0; k < ti.count; k++) z += v[k] == 0;
        n += ti.count;
        free(v);
    }
    cn_model_free(m);
    return (double)z / (double)n;
}

/* Gradual pruning inside cn_train: the structured run ends with a smaller model, the same run
 * interrupted and resumed gives the same bits, and magnitude masks reach their sparsity. */
static void test_gradual_pruning(void) {
    cn_prune_config pc;
    cn_prune_config_default(&pc);
    pc.amount = 0.5f;
    cn_train_config c;
    cn_train_config_default(&c);
    c.data = "fashion-mnist";
    c.epochs = 2;
    c.batch = 32;
    c.limit_train = 384; /* 12 steps an epoch */
    c.limit_test = 200;
    c.threads = 2;
    c.prune = &pc;
    c.prune_start = 0.25f;
    c.prune_end = 1.5f;
    c.prune_every = 2;
    c.out_dir = "build/test_prune_a";
    cn_train_result r;
    cn_status st = cn_train(&c, &r);
    if (st != CN_OK && strstr(cn_errmsg(), "fashion-mnist")) {
        fprintf(stderr, "skipping the gradual pruning test: %s\n", cn_errmsg());
        return;
    }
    CHECK(st == CN_OK, "gradual l2: %s", cn_errmsg());
    CHECK(r.pruned_fraction == 0.5f, "gradual l2 reached %.3f", r.pruned_fraction);
    /* resnet20 on 1 channel: 269,434 parameters; half of each block's inner channels go */
    CHECK(r.params < 200000 && r.params > 100000, "gradual l2: %lld parameters after",
          (long long)r.params);
    printf("  gradual l2 to 0.5: %lld parameters, test accuracy %.3f\n", (long long)r.params,
           r.test_acc);
    /* the same run stopped after epoch 1 (mid-schedule) and resumed */
    c.out_dir = "build/test_prune_b";
    c.stop_after = 1;
    CHECK(cn_train(&c, &r) == CN_OK, "gradual, first half: %s", cn_errmsg());
    cn_train_config rc;
    cn_train_config_default(&rc);
    rc.out_dir = "build/test_prune_b";
    rc.resume = 1;
    rc.threads = 2;
    CHECK(cn_train(&rc, &r) == CN_OK, "gradual, resumed: %s", cn_errmsg());
    CHECK(r.pruned_fraction == 0.5f, "resumed run reached %.3f", r.pruned_fraction);
    CHECK(same_models("build/test_prune_a/model.safetensors", "build/test_prune_b/model.safetensors"),
          "gradual pruning: the resumed run differs from the uninterrupted one");
    /* unstructured */
    pc.method = CN_PRUNE_MAGNITUDE;
    pc.amount = 0.8f;
    c.stop_after = 0;
    c.epochs = 1;
    c.prune_start = 0;
    c.prune_end = 0.5f;
    c.out_dir = "build/test_prune_c";
    CHECK(cn_train(&c, &r) == CN_OK, "gradual magnitude: %s", cn_errmsg());
    double z = conv_zero_fraction("build/test_prune_c/model.safetensors");
    CHECK(z >= 0.799 && z < 0.81, "gradual magnitude: %.4f of the weights are zero", z);
    /* bad settings */
    c.prune_end = 3;
    CHECK(cn_train(&c, &r) == CN_ERR_ARG && strstr(cn_errmsg(), "--prune-start"),
          "prune end past the epochs: %s", cn_errmsg());
    pc.amount = 1;
    c.prune_end = 0.5f;
    CHECK(cn_train(&c, &r) == CN_ERR_ARG && strstr(cn_errmsg(), "--prune-to"),
          "prune to 1: %s", cn_errmsg());
}

/* The eval forward keeps each fused convolution's folded BN between calls (graph.c,
 * fold_epilogue): whatever writes the parameters or the BN's running statistics must make it
 * fold again. Each eval below is compared with a fresh model given the same state. */

/* eval logits of m (n images of hw x hw) into y, and of a fresh model of the same architecture
 * given m's state into ref; 1 when they are the same bits */
static int same_eval(cn_model *m, const char *name, const float *x, int n, int hw, float *y,
                     float *ref) {
    cn_model *f = test_model(name, 3, 1);
    if (!f) return 0;
    CHECK(cn_model_copy_state(f, m) == CN_OK, "copy: %s", cn_errmsg());
    CHECK(cn_model_forward(m, x, n, hw, hw, 0, y) == CN_OK, "eval: %s", cn_errmsg());
    CHECK(cn_model_forward(f, x, n, hw, hw, 0, ref) == CN_OK, "eval: %s", cn_errmsg());
    cn_model_free(f);
    return memcmp(y, ref, sizeof(float) * 10 * (size_t)n) == 0;
}

static void test_folded_bn_refresh(void) {
    enum { N = 4 };
    cn_model *m = test_model("resnet20", 3, 5);
    if (!m) return;
    float *x = malloc(sizeof(float) * N * 3 * 16 * 16), y0[N * 10], y[N * 10], ref[N * 10];
    for (int i = 0; i < N * 3 * 16 * 16; i++) x[i] = (float)((i * 37 % 101) - 50) / 25.0f;
    CHECK(same_eval(m, "resnet20", x, N, 16, y0, ref), "eval of the initial state");
    /* a running variance set through the API */
    const int v = cn_model_tensor_find(m, "layer1.0.bn1.running_var");
    float rv[16];
    CHECK(v >= 0 && cn_model_tensor_get(m, v, rv) == CN_OK, "get running_var");
    for (int k = 0; k < 16; k++) rv[k] *= 4.0f;
    CHECK(cn_model_tensor_set(m, v, rv) == CN_OK, "set running_var");
    CHECK(same_eval(m, "resnet20", x, N, 16, y, ref), "eval after setting a running variance");
    CHECK(memcmp(y, y0, sizeof y) != 0, "setting a running variance changed nothing");
    /* the running statistics a training forward updates (no optimizer step), on the training
     * plan, which the eval forwards then share (no new plan to start the folds afresh) */
    float logits[N * 10];
    CHECK(cn_model_forward(m, x, N, 16, 16, 1, logits) == CN_OK, "train forward: %s", cn_errmsg());
    CHECK(same_eval(m, "resnet20", x, N, 16, y0, ref), "eval on the training plan");
    CHECK(cn_model_forward(m, x, N, 16, 16, 1, logits) == CN_OK, "train forward: %s", cn_errmsg());
    CHECK(same_eval(m, "resnet20", x, N, 16, y, ref), "eval after a training forward");
    CHECK(memcmp(y, y0, sizeof y) != 0, "a training forward changed no running statistic");
    free(x);
    cn_model_free(m);
}

/* The depthwise filters the graph keeps tap-major between eval forwards (cn_node.packed) follow
 * the weights: after setting the filters of a plain depthwise layer and of one fused with its
 * expansion, an eval forward equals that of a fresh model given the same state (and differs
 * from the one before, so that a stale copy could not pass unseen). */
static void test_packed_dw_refresh(void) {
    enum { N = 2, HW = 64 };
    cn_model *m = test_model("efficientnet_b0", 3, 9);
    if (!m) return;
    float *x = malloc(sizeof(float) * N * 3 * HW * HW), y0[N * 10], y[N * 10], ref[N * 10];
    for (int i = 0; i < N * 3 * HW * HW; i++) x[i] = (float)((i * 37 % 101) - 50) / 25.0f;
    CHECK(same_eval(m, "efficientnet_b0", x, N, HW, y0, ref), "b0: eval of the initial state");
    static const char *names[] = {"features.1.0.block.0.0.weight", "features.2.0.block.1.0.weight"};
    for (int k = 0; k < 2; k++) {
        const int t = cn_model_tensor_find(m, names[k]);
        CHECK(t >= 0, "b0: no tensor %s", names[k]);
        if (t < 0) continue;
        cn_tensor_info info;
        CHECK(cn_model_tensor_info(m, t, &info) == CN_OK, "info %s", names[k]);
        const size_t n = (size_t)info.count;
        float *w = malloc(sizeof(float) * n);
        CHECK(cn_model_tensor_get(m, t, w) == CN_OK, "get %s", names[k]);
        for (size_t i = 0; i < n; i++) w[i] = w[i] * 1.5f + 0.01f * (float)(i % 7);
        CHECK(cn_model_tensor_set(m, t, w) == CN_OK, "set %s", names[k]);
        CHECK(same_eval(m, "efficientnet_b0", x, N, HW, y, ref), "b0: eval after setting %s",
              names[k]);
        CHECK(memcmp(y, y0, sizeof y) != 0, "b0: setting %s changed nothing", names[k]);
        memcpy(y0, y, sizeof y);
        free(w);
    }
    free(x);
    cn_model_free(m);
}

int main(void) {
    test_folded_bn_refresh();
    test_packed_dw_refresh();
    test_schedules();
    test_optimizers();
    test_loader();
    test_learns();
    test_gradual_pruning();
    return check_summary("train");
}
