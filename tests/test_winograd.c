/* Winograd F(4x4, 3x3) (kernels/winograd.h): accuracy against the naive convolution on the 3x3
 * shapes of ResNet-18/50 and on awkward ones (partial tiles, odd channel counts, every epilogue),
 * the same bits for 1 and 2 threads, and, at model level, the same logits as the other path,
 * including after the weights change (the transformed weights are cached on the graph). The
 * awkward shapes run on every transform path the CPU has (plain C, AVX2, AVX-512: they follow the
 * GEMM's path), each against the naive convolution and against the plain C path; the AVX2 tile
 * transforms are also called directly on exact (integer) data, against a reference in double
 * and, for the epilogue, bit for bit against ops/activation.h's scalar functions. */
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "model.h"
#include "convnet.h"
#include "core/cpu.h"
#include "core/rng.h"
#include "graph/model.h"
#include "io/safetensors.h"
#include "kernels/gemm.h"
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

static double worst_vs_generic, worst_streamed, worst_transposed;

typedef void (*wino_driver)(float *out, const float *in, const float *u, const cn_epilogue *ep,
                            const cn_conv_desc *d, float *ws, int nthreads);

/* another driver of the same convolution (fn, with its own weights u): the same bound against
 * the reference, the same bits on 1 and 2 threads; returns its error */
static double other_driver(wino_driver fn, const char *what, const float *in, const float *u,
                           const cn_epilogue *ep, const cn_conv_desc *d, float *ws,
                           const float *ref, cn_act act) {
    const size_t no = (size_t)d->n * d->oh * d->ow * d->oc;
    float *o1 = alloc_f(no), *o2 = alloc_f(no);
    cn_epilogue e = *ep;
    e.pool = NULL;
    omp_set_num_threads(1);
    fn(o1, in, u, &e, d, ws, 1);
    omp_set_num_threads(2);
    fn(o2, in, u, &e, d, ws, 2);
    const double err = max_rel_err(o1, ref, no, 1e-6);
    CHECK(err <= 1e-4 && memcmp(o1, o2, sizeof(float) * no) == 0,
          "n%d %dx%d c%d oc%d act%d: %s rel err %g (or 1 and 2 threads differ)", d->n, d->h, d->w,
          d->c, d->oc, (int)act, what, err);
    free(o1), free(o2);
    return err;
}

/* Winograd against the naive convolution (and its epilogue); returns max|diff| / max|ref|.
 * Also checks that 1 and 2 threads give the same bits, and with path > 0 (the GEMM path
 * cn_sgemm_force_path chose, which the transforms follow) compares with the plain C path. */
static double run_case(int n, int h, int w, int c, int oc, int with_ep, int res_on, cn_act act,
                       uint64_t seed, int path) {
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
    cn_epilogue ep = {ss, ss + oc, res_on ? res : NULL, act, NULL};
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
    /* with the epilogue's global average pool (cn_epilogue.pool) on every other case */
    const int pool_on = (int)(seed & 1);
    float *p1 = alloc_f((size_t)n * oc), *p2 = alloc_f((size_t)n * oc);
    cn_epilogue ep2 = ep;
    ep.pool = pool_on ? p1 : NULL;
    ep2.pool = pool_on ? p2 : NULL;
    omp_set_num_threads(1);
    cn_wino_forward(o1, in, u, &ep, &d, ws, 1);
    omp_set_num_threads(2);
    cn_wino_forward(o2, in, u, &ep2, &d, ws, 2);
    CHECK(memcmp(o1, o2, sizeof(float) * no) == 0,
          "n%d %dx%d c%d oc%d: 1 and 2 threads differ", n, h, w, c, oc);
    double e = max_rel_err(o1, ref, no, 1e-6);
    /* the transposed U (cn_wino_pack_weights_t, cn_wino_forward_t: the GEMM's swapped path on
     * wide layers, and training's transform in float): the same bound, the same bits on 1 and 2
     * threads */
    {
        float *ut = alloc_f(cn_wino_weight_floats(c, oc));
        cn_wino_pack_weights_t(ut, wt, c, oc, 0, 2);
        const double et = other_driver(cn_wino_forward_t, "U^T", in, ut, &ep, &d, ws, ref, act);
        if (et > worst_transposed) worst_transposed = et;
        free(ut);
    }
    if (path > 0) {
        float *og = alloc_f(no);
        cn_epilogue epg = ep;
        epg.pool = NULL;
        cn_sgemm_force_path(0);
        omp_set_num_threads(1);
        cn_wino_forward(og, in, u, &epg, &d, ws, 1);
        cn_sgemm_force_path(path);
        /* the GEMMs sum in another order: a few ulp of the largest output */
        double eg = max_rel_err(o1, og, no, 1e-6);
        CHECK(eg <= 1e-5, "n%d %dx%d c%d oc%d act%d: rel err %g against the plain C path", n, h,
              w, c, oc, (int)act, eg);
        if (eg > worst_vs_generic) worst_vs_generic = eg;
        free(og);
    }
    /* the streamed path (AVX2 or AVX-512, each its own layout; fewer than 64 tiles): its own
     * transform of the weights, the same bound against the reference, the same bits on 1 and 2
     * threads */
    if (strcmp(cn_sgemm_path_name(), "generic") != 0 &&
        (size_t)n * ((h + 3) / 4) * ((w + 3) / 4) < 64) {
        const double es =
            other_driver(cn_wino_forward_streamed, "streamed", in, wt, &ep, &d, ws, ref, act);
        if (es > worst_streamed) worst_streamed = es;
    }
    if (pool_on) {
        /* the pool of the output, against the reference output's mean in double */
        double *mean = calloc((size_t)n * oc, sizeof(double));
        for (size_t i = 0; i < no; i++)
            mean[i / ((size_t)h * w * oc) * oc + i % oc] += ref[i] / ((double)h * w);
        float *mf = alloc_f((size_t)n * oc);
        for (size_t i = 0; i < (size_t)n * oc; i++) mf[i] = (float)mean[i];
        double ep_err = max_rel_err(p1, mf, (size_t)n * oc, 1e-6);
        CHECK(ep_err <= 1e-4 && memcmp(p1, p2, sizeof(float) * n * oc) == 0,
              "n%d %dx%d c%d oc%d: pooled output rel err %g (or 1 and 2 threads differ)", n, h,
              w, c, oc, ep_err);
        free(mean), free(mf);
    }
    free(p1), free(p2);
    free(in), free(wt), free(ref), free(o1), free(o2), free(res), free(ss), free(u), free(ws);
    return e;
}

static void test_resnet_shapes(void) {
    static const int shapes[][2] = {{64, 56}, {128, 28}, {256, 14}, {512, 7}};
    double worst = 0;
    for (int s = 0; s < 4; s++)
        for (int n = 1; n <= (SANITIZED ? 1 : 2); n++) {
            int c = shapes[s][0], m = shapes[s][1];
            double e = run_case(n, m, m, c, c, 0, 0, CN_ACT_NONE, 100 + s * 10 + n, 0);
            printf("  resnet 3x3 c=oc=%d %dx%d batch %d: rel err %.3g\n", c, m, m, n, e);
            CHECK(e <= 1e-4, "c=oc=%d map %d batch %d: rel err %g > 1e-4", c, m, n, e);
            if (e > worst) worst = e;
        }
    printf("resnet shapes: worst rel err %.3g\n", worst);
}

static void test_awkward(int path) {
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
                                        with_ep, res_on, act, seed++, path);
                    CHECK(e <= 1e-4, "n%d %dx%d c%d oc%d ep%d res%d act%d: rel err %g", n,
                          maps[mi][0], maps[mi][1], chans[ci][0], chans[ci][1], with_ep, res_on,
                          (int)act, e);
                    if (e > worst) worst = e;
                    cases++;
                }
    printf("awkward shapes: %d cases, worst rel err %.3g", cases, worst);
    if (path > 0) printf(", against the plain C path %.3g", worst_vs_generic);
    if (worst_streamed > 0) printf(", streamed path %.3g", worst_streamed);
    printf(", U^T %.3g\n", worst_transposed);
}


/* ---- the SIMD tile transforms alone ---- */

void f32_wino_input_tile__avx2(float *v, size_t fs, const float *const *px, int c);
void f32_wino_output_tile__avx2(float *const *po, const float *const *pr, const float *m,
                                size_t fs, int oc, const float *scale, const float *shift,
                                int act);

static const double BT[6][6] = {{4, 0, -5, 0, 1, 0},  {0, -4, -4, 1, 1, 0}, {0, 4, -4, -1, 1, 0},
                                {0, -2, -1, 2, 1, 0}, {0, 2, -1, -2, 1, 0}, {0, 4, 0, -5, 0, 1}};
static const double AT[4][6] = {
    {1, 1, 1, 1, 1, 0}, {0, 1, -1, 2, -2, 0}, {0, 1, 1, 4, 4, 0}, {0, 1, -1, 8, -8, 1}};

static float act_scalar(float y, cn_act act) {
    if (act == CN_ACT_RELU) return y < 0 ? 0.0f : y;
    if (act == CN_ACT_SILU) return cn_silu1(y);
    if (act == CN_ACT_SIGMOID) return cn_sigmoid1(y);
    return y;
}

static int same_bits(float a, float b) { return memcmp(&a, &b, sizeof a) == 0 || (a != a && b != b); }

enum { GUARD = 9 }; /* floats past the channel count that must stay untouched */
static const float SENTINEL = 12345.0f;

/* Integer data (|d| <= 16, |m| <= 64) keeps every step of the transforms exact in float, with
 * or without FMA, so the results must equal the double reference exactly; the epilogue then
 * rounds in the order of conv2d.c's and the activation must give cn_silu1's / cn_sigmoid1's bits.
 * The residual brings in the edge values (NaN, infinities, -0, beyond the clamp at -120). */
static void test_tiles(const char *name,
                       void (*input)(float *, size_t, const float *const *, int),
                       void (*output)(float *const *, const float *const *, const float *, size_t,
                                      int, const float *, const float *, int)) {
    static const int chans[] = {1, 2, 3, 5, 7, 8, 9, 12, 15, 16, 17, 23, 24, 31, 33, 64, 67};
    static const cn_act acts[] = {CN_ACT_NONE, CN_ACT_RELU, CN_ACT_SILU, CN_ACT_SIGMOID};
    static const float special[] = {NAN, INFINITY, -INFINITY, -0.0f, 0.0f, -119.5f, -120.5f,
                                    -200.0f, 88.0f, -88.0f, 1e-30f, -1e-30f, 17.25f, -17.25f};
    const int nspecial = (int)(sizeof special / sizeof special[0]);
    cn_rng r = cn_rng_make(4242, 3, 0);
    int bad_in = 0, bad_out = 0, bad_guard = 0, cases = 0;
    for (size_t ci = 0; ci < sizeof chans / sizeof chans[0]; ci++) {
        const int c = chans[ci];
        const size_t fs = (size_t)c + GUARD + 3; /* a stride that is not the channel count */
        /* input: 36 pixels of c floats (+ guard), v (36, fs) */
        float *pix = alloc_f((size_t)36 * (c + GUARD)), *v = alloc_f(36 * fs);
        const float *px[36];
        for (int q = 0; q < 36; q++) {
            for (int k = 0; k < c + GUARD; k++)
                pix[(size_t)q * (c + GUARD) + k] =
                    k < c ? (float)((int)(cn_rng_below(&r, 33)) - 16) : NAN;
            px[q] = pix + (size_t)q * (c + GUARD);
        }
        for (size_t i = 0; i < 36 * fs; i++) v[i] = SENTINEL;
        input(v, fs, px, c);
        for (int k = 0; k < c; k++)
            for (int i = 0; i < 6; i++)
                for (int j = 0; j < 6; j++) {
                    double x = 0;
                    for (int a = 0; a < 6; a++)
                        for (int b = 0; b < 6; b++) x += BT[i][a] * px[6 * a + b][k] * BT[j][b];
                    bad_in += v[(size_t)(6 * i + j) * fs + k] != (float)x;
                }
        for (int f = 0; f < 36; f++)
            for (size_t k = (size_t)c; k < fs; k++) bad_guard += v[f * fs + k] != SENTINEL;

        /* output: m (36, fs), 16 output rows and residual rows of c floats (+ guard) */
        float *m = alloc_f(36 * fs), *out = alloc_f((size_t)16 * (c + GUARD)),
              *res = alloc_f((size_t)16 * (c + GUARD)), *ss = alloc_f(2 * (size_t)c + 2 * GUARD);
        for (size_t i = 0; i < 36 * fs; i++) m[i] = (float)((int)(cn_rng_below(&r, 129)) - 64);
        for (int k = 0; k < c + GUARD; k++) {
            /* powers of two keep the product exact; the shift rounds once */
            ss[k] = k < c ? ldexpf(1.0f, (int)(k % 9) - 6) * (k % 3 == 1 ? -1.0f : 1.0f) : NAN;
            ss[c + GUARD + k] = k < c ? 0.37f * (float)((k % 5) - 2) : NAN;
        }
        for (int q = 0; q < 16; q++)
            for (int k = 0; k < c + GUARD; k++) {
                float x = 0.25f * (float)((int)(cn_rng_below(&r, 41)) - 20);
                if (cn_rng_below(&r, 4) == 0) x = special[cn_rng_below(&r, (uint32_t)nspecial)];
                res[(size_t)q * (c + GUARD) + k] = k < c ? x : NAN;
            }
        float *po[16];
        const float *pr[16];
        for (int q = 0; q < 16; q++) {
            po[q] = out + (size_t)q * (c + GUARD);
            pr[q] = res + (size_t)q * (c + GUARD);
        }
        for (int a = 0; a < 4; a++)
            for (int with_res = 0; with_res < 2; with_res++) {
                for (size_t i = 0; i < (size_t)16 * (c + GUARD); i++) out[i] = SENTINEL;
                output(po, with_res ? pr : NULL, m, fs, c, ss, ss + c + GUARD, (int)acts[a]);
                cases++;
                for (int k = 0; k < c; k++)
                    for (int i = 0; i < 4; i++)
                        for (int j = 0; j < 4; j++) {
                            double x = 0;
                            for (int p = 0; p < 6; p++)
                                for (int q = 0; q < 6; q++)
                                    x += AT[i][p] * m[(size_t)(6 * p + q) * fs + k] * AT[j][q];
                            float y = (float)x * ss[k] + ss[c + GUARD + k];
                            if (with_res) y = y + pr[4 * i + j][k];
                            float want = act_scalar(y, acts[a]), got = po[4 * i + j][k];
                            if (!same_bits(got, want) && bad_out++ < 5)
                                fprintf(stderr, "  %s output c%d k%d act%d res%d: %.9g, want %.9g (y %.9g)\n",
                                        name, c, k, (int)acts[a], with_res, got, want, y);
                        }
                for (int q = 0; q < 16; q++)
                    for (int k = c; k < c + GUARD; k++) bad_guard += po[q][k] != SENTINEL;
            }
        free(pix), free(v), free(m), free(out), free(res), free(ss);
    }
    printf("%s tile transforms: %d output cases, %d input / %d output mismatches, %d guard writes\n",
           name, cases, bad_in, bad_out, bad_guard);
    CHECK(bad_in == 0, "%s input transform: %d values differ from the exact ones", name, bad_in);
    CHECK(bad_out == 0, "%s output transform: %d values differ from the scalar epilogue's", name,
          bad_out);
    CHECK(bad_guard == 0, "%s transforms: %d writes past the channel count", name, bad_guard);
}

static void test_tile_kernels(void) {
    const cn_cpu_features *f = cn_cpu();
    if (f->avx2 && f->fma) test_tiles("avx2", f32_wino_input_tile__avx2, f32_wino_output_tile__avx2);
    else printf("skip the avx2 tile transforms: CPU lacks AVX2+FMA (or CN_CPU caps it)\n");
}

/* the awkward shapes on every path the CPU has (the transforms follow the GEMM's path) */
static void test_paths(void) {
    static const char *names[] = {"generic", "avx2", "avx512"};
    for (int path = 0; path <= 2; path++) {
        cn_sgemm_force_path(path);
        if (strcmp(cn_sgemm_path_name(), names[path]) != 0) {
            printf("skip the %s path: CPU lacks it\n", names[path]);
            continue;
        }
        printf("%s path:\n", names[path]);
        worst_vs_generic = 0;
        test_awkward(path);
    }
    cn_sgemm_force_path(-1);
}

/* the decision's thresholds (winograd.c): wide layers at small batches only with the model's
 * cache in budget, and then by speed (16 tiles up to 256 x 256 channels, 32 beyond) */
static void test_decision(void) {
    cn_conv_desc d = {.n = 1, .h = 14, .w = 14, .c = 256, .kh = 3, .kw = 3, .sh = 1, .sw = 1,
                      .ph = 1, .pw = 1, .oc = 256, .groups = 1};
    CHECK(cn_conv_desc_init(&d), "desc");
    CHECK(!cn_wino_wanted(&d, 2, 0) && cn_wino_wanted(&d, 2, 1), "256ch 14x14 batch 1");
    CHECK(cn_wino_cached_floats(&d, 2) == (size_t)36 * 256 * 256, "256ch 14x14 cached floats");
    d.n = 4; /* 64 tiles: taken either way */
    CHECK(cn_wino_wanted(&d, 2, 0) && cn_wino_wanted(&d, 2, 1), "256ch 14x14 batch 4");
    d = (cn_conv_desc){.n = 1, .h = 7, .w = 7, .c = 512, .kh = 3, .kw = 3, .sh = 1, .sw = 1,
                       .ph = 1, .pw = 1, .oc = 512, .groups = 1};
    CHECK(cn_conv_desc_init(&d), "desc");
    for (int n = 1; n <= 16; n *= 2) {
        d.n = n; /* 4 tiles an image */
        CHECK(cn_wino_wanted(&d, 2, 1) == (n >= 8), "512ch 7x7 batch %d, cache in budget", n);
        CHECK(cn_wino_wanted(&d, 2, 0) == (n >= 16), "512ch 7x7 batch %d", n);
        CHECK(cn_wino_cached_floats(&d, 2) == (n >= 8 ? (size_t)36 * 512 * 512 : 0),
              "512ch 7x7 batch %d cached floats", n);
    }
    d = (cn_conv_desc){.n = 1, .h = 56, .w = 56, .c = 32, .kh = 3, .kw = 3, .sh = 1, .sw = 1,
                       .ph = 1, .pw = 1, .oc = 64, .groups = 1};
    CHECK(cn_conv_desc_init(&d), "desc");
    CHECK(!cn_wino_wanted(&d, 2, 1) && !cn_wino_cached_floats(&d, 2), "32 channels");
    /* the streamed path takes the wide layers the cache leaves out, from 8 tiles a call on
     * AVX-512 (16 on AVX2), below 64 */
    const char *path = cn_sgemm_path_name();
    if (strcmp(path, "generic") != 0) {
        const int min_tiles = strcmp(path, "avx512") == 0 ? 8 : 16;
        d = (cn_conv_desc){.n = 1, .h = 7, .w = 7, .c = 512, .kh = 3, .kw = 3, .sh = 1, .sw = 1,
                           .ph = 1, .pw = 1, .oc = 512, .groups = 1};
        CHECK(cn_conv_desc_init(&d), "desc");
        for (int n = 1; n <= 16; n *= 2) {
            d.n = n;
            CHECK(cn_wino_streamed_wanted(&d, 2) == (4 * n >= min_tiles && 4 * n < 64),
                  "%s: 512ch 7x7 batch %d streamed", path, n);
        }
        d = (cn_conv_desc){.n = 1, .h = 14, .w = 14, .c = 256, .kh = 3, .kw = 3, .sh = 1, .sw = 1,
                           .ph = 1, .pw = 1, .oc = 256, .groups = 1};
        CHECK(cn_conv_desc_init(&d), "desc");
        CHECK(cn_wino_streamed_wanted(&d, 2), "%s: 256ch 14x14 batch 1 streamed", path);
        d.c = d.oc = 128; /* not wide: cached whatever the batch */
        CHECK(!cn_wino_streamed_wanted(&d, 2), "%s: 128ch 14x14 not streamed", path);
    }
}

/* ---- model level ---- */

enum { HW = 64, NB = 2 };


/* eval logits (NB, 10) with Winograd forced on (mode 1) or off (0) */
static void logits(cn_model *m, const float *x, int mode, float *out) {
    cn_winograd_force(mode);
    cn_status st = cn_model_forward(m, x, NB, HW, HW, 0, out);
    CHECK(st == CN_OK, "forward: %s", cn_errmsg());
    cn_winograd_force(-1);
}

/* Winograd logits agree with the other path's on the model's current weights; returns them in
 * on[] for the caller's checks */
static double agree(cn_model *m, const float *x, float *on, const char *what) {
    float off[NB * 10];
    logits(m, x, 1, on);
    logits(m, x, 0, off);
    double e = max_rel_err(on, off, NB * 10, 1e-6);
    printf("  %s: on vs off rel err %.3g\n", what, e);
    CHECK(e <= 1e-4, "%s: Winograd on vs off rel err %g", what, e);
    return e;
}

/* the logits moved by more than any rounding: a stale cache would have been seen */
static void changed(const float *before, const float *after, const char *what) {
    double e = max_rel_err(after, before, NB * 10, 1e-6);
    CHECK(e > 1e-3, "%s: the logits barely moved (%g), the test cannot see a stale cache", what,
          e);
}

static void test_models(void) {
    float *x = alloc_f((size_t)NB * 3 * HW * HW);
    fill_normal(x, (size_t)NB * 3 * HW * HW, 1.0f, 7);
    const char *names[] = {"resnet18", "resnet50"};
    for (int i = 0; i < 2; i++) {
        cn_model *m = test_model(names[i], 3, 11);
        if (!m) continue;
        float on[NB * 10];
        char what[64];
        snprintf(what, sizeof what, "%s %dx%d batch %d", names[i], HW, HW, NB);
        agree(m, x, on, what);
        if (strcmp(cn_sgemm_path_name(), "generic") != 0) {
            /* every 3x3 layer of fewer than 64 tiles on the streamed path */
            float st[NB * 10], off[NB * 10];
            logits(m, x, 2, st);
            logits(m, x, 0, off);
            const double e = max_rel_err(st, off, NB * 10, 1e-6);
            printf("  %s: streamed vs off rel err %.3g\n", what, e);
            CHECK(e <= 1e-4, "%s: streamed Winograd vs off rel err %g", what, e);
        }
        cn_model_free(m);
    }
    free(x);
}

/* The cached transformed weights follow every way the weights change. */
static void test_cache(void) {
    float *x = alloc_f((size_t)NB * 3 * HW * HW);
    fill_normal(x, (size_t)NB * 3 * HW * HW, 1.0f, 8);
    cn_model *m = test_model("resnet18", 3, 21);
    if (!m) {
        free(x);
        return;
    }
    float a[NB * 10], b[NB * 10];
    agree(m, x, a, "fresh");

    /* a training step: the eval forward between backward and the step caches the weights of
     * before the step (at the version the train forward left), which the step must invalidate */
    cn_optim_config oc;
    cn_optim_config_default(&oc, CN_OPTIM_SGD);
    oc.lr = 0.5f;
    cn_optim *opt = NULL;
    CHECK(cn_optim_create(&opt, m, &oc) == CN_OK, "optim: %s", cn_errmsg());
    int32_t labels[NB] = {3, 7};
    float loss;
    cn_model_zero_grad(m);
    CHECK(cn_model_forward(m, x, NB, HW, HW, 1, NULL) == CN_OK, "train forward");
    CHECK(cn_model_loss(m, labels, 0.0f, &loss, NULL) == CN_OK, "loss");
    CHECK(cn_model_backward(m) == CN_OK, "backward");
    agree(m, x, a, "after a train forward");
    if (opt) cn_optim_step(opt, oc.lr);
    agree(m, x, b, "after an optimizer step");
    changed(a, b, "optimizer step");
    cn_optim_free(opt);

    /* cn_model_tensor_set on one 3x3 convolution */
    int e = cn_model_tensor_find(m, "layer1.0.conv2.weight");
    CHECK(e >= 0, "no layer1.0.conv2.weight");
    if (e >= 0) {
        cn_tensor_info ti;
        cn_model_tensor_info(m, e, &ti);
        float *w = alloc_f((size_t)ti.count);
        cn_model_tensor_get(m, e, w);
        for (int64_t i = 0; i < ti.count; i++) w[i] = -2.0f * w[i];
        cn_model_tensor_set(m, e, w);
        free(w);
        memcpy(a, b, sizeof a);
        agree(m, x, b, "after cn_model_tensor_set");
        changed(a, b, "cn_model_tensor_set");
    }

    /* loading another model's file into it */
    cn_model *other = test_model("resnet18", 3, 99);
    char path[] = "/tmp/cn_test_winograd_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0, "mkstemp");
    if (fd >= 0) {
        close(fd);
        cn_st_file *f = NULL;
        CHECK(other && cn_model_save(other, path) == CN_OK, "save: %s", cn_errmsg());
        CHECK(other && cn_st_open(&f, path) == CN_OK, "open: %s", cn_errmsg());
        if (f) {
            CHECK(cn_model_load_state(m, f, "") == CN_OK, "load: %s", cn_errmsg());
            cn_st_close(f);
            memcpy(a, b, sizeof a);
            agree(m, x, b, "after cn_model_load_state");
            changed(a, b, "cn_model_load_state");
        }
        unlink(path);
    }
    /* copying another model's state */
    cn_model *third = test_model("resnet18", 3, 5);
    if (third) {
        CHECK(cn_model_copy_state(m, third) == CN_OK, "copy_state: %s", cn_errmsg());
        memcpy(a, b, sizeof a);
        agree(m, x, b, "after cn_model_copy_state");
        changed(a, b, "cn_model_copy_state");
    }

    /* pruning masks, in place */
    cn_prune_config pc;
    cn_prune_config_default(&pc);
    pc.method = CN_PRUNE_MAGNITUDE;
    pc.amount = 0.5f;
    CHECK(cn_prune_mask(m, &pc) == CN_OK, "prune: %s", cn_errmsg());
    memcpy(a, b, sizeof a);
    agree(m, x, b, "after cn_prune_mask (magnitude)");
    changed(a, b, "cn_prune_mask (magnitude)");
    pc.method = CN_PRUNE_L1;
    pc.amount = 0.3f;
    CHECK(cn_prune_mask(m, &pc) == CN_OK, "prune: %s", cn_errmsg());
    memcpy(a, b, sizeof a);
    agree(m, x, b, "after cn_prune_mask (L1 channels)");
    changed(a, b, "cn_prune_mask (L1 channels)");

    cn_model_free(third);
    cn_model_free(other);
    cn_model_free(m);
    free(x);
}

int main(int argc, char **argv) {
    (void)argc, (void)argv;
    test_tile_kernels();
    test_paths();
    test_decision();
    test_resnet_shapes();
    test_models();
    test_cache();
    return check_summary("winograd");
}
