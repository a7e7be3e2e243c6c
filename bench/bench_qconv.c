/* GOP/s (2 * MACs / time) of the int8 convolution cn_qconv2d on ResNet-50's convolutions at
 * batch 1 (224x224), with 1 and 2 threads, against the vpdpbusd peak measured at the start (on a
 * shared or virtual machine the peak moves with the host's load and clock), and of the float
 * convolution cn_conv2d_forward on the same shapes. The totals weight each shape by the number of
 * times it occurs in the network.
 * Usage: bench_qconv [seconds-per-shape [name-filter]]
 * CN_BENCH_COLD=1: each call starts with caches cleared of the layer's weights and activations
 * (a 64 MB buffer is walked between calls, untimed), as inside a network, where every layer's
 * weights were evicted by the layers between its runs.
 * (cn_qkernel_force from CN_QKERNEL=c|avx-vnni|avx512-vnni selects the implementation.)
 * Build: make build/release/bench/bench_qconv */
#define _POSIX_C_SOURCE 200809L

#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/cpu.h"
#include "kernels/qconv.h"
#include "ops/ops.h"

typedef struct shape {
    const char *what;
    int count; /* occurrences in ResNet-50 */
    int h, w, c, oc, k, s;
} shape;

static const shape shapes[] = {
    {"conv1 7x7/2", 1, 224, 224, 3, 64, 7, 2},
    {"l1 1x1 64>64", 1, 56, 56, 64, 64, 1, 1},
    {"l1 3x3 64", 3, 56, 56, 64, 64, 3, 1},
    {"l1 1x1 64>256", 4, 56, 56, 64, 256, 1, 1}, /* 3 expansions + the downsample */
    {"l1 1x1 256>64", 2, 56, 56, 256, 64, 1, 1},
    {"l2 1x1 256>128", 1, 56, 56, 256, 128, 1, 1},
    {"l2 3x3/2 128", 1, 56, 56, 128, 128, 3, 2},
    {"l2 ds 1x1/2 256>512", 1, 56, 56, 256, 512, 1, 2},
    {"l2 1x1 128>512", 4, 28, 28, 128, 512, 1, 1},
    {"l2 1x1 512>128", 3, 28, 28, 512, 128, 1, 1},
    {"l2 3x3 128", 3, 28, 28, 128, 128, 3, 1},
    {"l3 1x1 512>256", 1, 28, 28, 512, 256, 1, 1},
    {"l3 3x3/2 256", 1, 28, 28, 256, 256, 3, 2},
    {"l3 ds 1x1/2 512>1024", 1, 28, 28, 512, 1024, 1, 2},
    {"l3 1x1 256>1024", 6, 14, 14, 256, 1024, 1, 1},
    {"l3 1x1 1024>256", 5, 14, 14, 1024, 256, 1, 1},
    {"l3 3x3 256", 5, 14, 14, 256, 256, 3, 1},
    {"l4 1x1 1024>512", 1, 14, 14, 1024, 512, 1, 1},
    {"l4 3x3/2 512", 1, 14, 14, 512, 512, 3, 2},
    {"l4 ds 1x1/2 1024>2048", 1, 14, 14, 1024, 2048, 1, 2},
    {"l4 1x1 512>2048", 3, 7, 7, 512, 2048, 1, 1},
    {"l4 1x1 2048>512", 2, 7, 7, 2048, 512, 1, 1},
    {"l4 3x3 512", 2, 7, 7, 512, 512, 3, 1},
};

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* vpdpbusd throughput of one thread: 24 independent accumulator chains in zmm8..zmm31, no loads
 * (GOP/s: 64 MACs = 128 ops per instruction). Inline assembly, since with an array of 24
 * accumulators the compiler may keep some on the stack and measure the stores instead. */
#define DP(r) "vpdpbusd %%zmm1, %%zmm0, %%zmm" #r "\n\t"
#define DP8(a, b, c, d, e, f, g, h) DP(a) DP(b) DP(c) DP(d) DP(e) DP(f) DP(g) DP(h)
__attribute__((target("avx512f,avx512vnni"))) static double vnni_peak_1(double seconds) {
    double best = 0.0, spent = 0.0;
    while (spent < seconds) {
        const long n = 20000;
        const double t0 = now();
        __asm__ volatile("vpxord %%zmm0, %%zmm0, %%zmm0\n\t"
                         "vpxord %%zmm1, %%zmm1, %%zmm1\n\t"
                         "mov %0, %%rcx\n\t"
                         "1:\n\t" DP8(8, 9, 10, 11, 12, 13, 14, 15)
                             DP8(16, 17, 18, 19, 20, 21, 22, 23) DP8(24, 25, 26, 27, 28, 29, 30, 31)
                         "dec %%rcx\n\t"
                         "jnz 1b\n\t"
                         :
                         : "r"(n)
                         : "rcx", "xmm0", "xmm1", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12",
                           "xmm13", "xmm14", "xmm15", "xmm16", "xmm17", "xmm18", "xmm19",
                           "xmm20", "xmm21", "xmm22", "xmm23", "xmm24", "xmm25", "xmm26",
                           "xmm27", "xmm28", "xmm29", "xmm30", "xmm31", "cc");
        const double dt = now() - t0, g = (double)n * 24 * 128 / dt * 1e-9;
        if (g > best) best = g;
        spent += dt;
    }
    return best;
}

static double vnni_peak(int t) {
    const cn_cpu_features *f = cn_cpu();
    if (!f->avx512f || !f->avx512vnni) return 0.0;
    double sum = 0.0;
#pragma omp parallel num_threads(t) reduction(+ : sum)
    sum += vnni_peak_1(0.1);
    return sum;
}

/* best time of fn over repeated runs within `budget` seconds */
#define TIME_BEST(budget, best, call)                                \
    do {                                                             \
        double spent_ = 0.0;                                         \
        int reps_ = 1;                                               \
        best = 1e30;                                                 \
        call;                                                        \
        while (spent_ < (budget)) {                                  \
            const double t0_ = now();                                \
            for (int r_ = 0; r_ < reps_; r_++) call;                 \
            const double dt_ = now() - t0_;                          \
            if (dt_ / reps_ < best) best = dt_ / reps_;              \
            spent_ += dt_;                                           \
            if (dt_ < 1e-3 && reps_ < (1 << 12)) reps_ *= 2;         \
        }                                                            \
    } while (0)

static char *flush_buf;
#define FLUSH_BYTES ((size_t)64 << 20)
static void flush_caches(void) {
    if (!flush_buf) return;
    for (size_t i = 0; i < FLUSH_BYTES; i += 64) flush_buf[i]++;
}

/* with CN_BENCH_COLD, the best time of single calls each after flush_caches */
#define TIME_ANY(budget, best, call)                                 \
    do {                                                             \
        if (!flush_buf) {                                            \
            TIME_BEST(budget, best, call);                           \
            break;                                                   \
        }                                                            \
        double spent_ = 0.0;                                         \
        best = 1e30;                                                 \
        for (int n_ = 0; n_ < 3 || spent_ < (budget); n_++) {        \
            flush_caches();                                          \
            const double t0_ = now();                                \
            call;                                                    \
            const double dt_ = now() - t0_;                          \
            if (dt_ < best) best = dt_;                              \
            spent_ += dt_;                                           \
        }                                                            \
    } while (0)

int main(int argc, char **argv) {
    const double budget = argc > 1 ? atof(argv[1]) : 0.3;
    const char *filter = argc > 2 ? argv[2] : "";
    const char *force = getenv("CN_QKERNEL");
    if (force && *force && !cn_qkernel_force(force)) {
        fprintf(stderr, "cannot run kernel %s\n", force);
        return 1;
    }
    const char *cold = getenv("CN_BENCH_COLD");
    if (cold && *cold && *cold != '0') {
        flush_buf = calloc(FLUSH_BYTES, 1);
        if (!flush_buf) return 1;
    }
    const double peak[3] = {0.0, vnni_peak(1), vnni_peak(2)};
    printf("int8 kernel %s; vpdpbusd peak %.0f GOP/s on 1 thread, %.0f on 2%s\n",
           cn_qkernel_name(), peak[1], peak[2], flush_buf ? "; cold caches" : "");
    printf("%-22s %3s %6s %5s %5s %8s %6s %8s %6s | %8s %8s\n", "shape (ResNet-50, b1)", "x",
           "M", "N", "K", "i8 1T", "%peak", "i8 2T", "%peak", "f32 1T", "f32 2T");
    double tot_ops = 0.0, tot_q[3] = {0, 0, 0}, tot_f[3] = {0, 0, 0};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const shape *sh = &shapes[s];
        if (!strstr(sh->what, filter)) continue;
        const int p = sh->k / 2;
        cn_qconv_desc d = {1, sh->h, sh->w, sh->c, sh->oc, sh->k, sh->k, sh->s, sh->s, p, p,
                           (sh->h + 2 * p - sh->k) / sh->s + 1, (sh->w + 2 * p - sh->k) / sh->s + 1,
                           7};
        const size_t nin = (size_t)d.h * d.w * d.c, nout = (size_t)d.oh * d.ow * d.oc;
        const size_t nw = (size_t)d.oc * d.kh * d.kw * d.c;
        uint8_t *in = malloc(nin), *out = malloc(nout);
        int8_t *w = malloc(nw);
        float *fin = malloc(nin * sizeof *fin), *fout = malloc(nout * sizeof *fout);
        float *fw = malloc(nw * sizeof *fw), *fb = calloc((size_t)d.oc, sizeof *fb);
        int32_t *bias = malloc(sizeof(int32_t) * d.oc), *mult = malloc(sizeof(int32_t) * d.oc);
        int32_t *shift = malloc(sizeof(int32_t) * d.oc);
        for (size_t i = 0; i < nin; i++) in[i] = (uint8_t)(i * 7 % 251), fin[i] = 0.01f * (float)(i % 17);
        for (size_t i = 0; i < nw; i++) w[i] = (int8_t)(i * 13 % 255 - 127), fw[i] = 0.01f * (float)(i % 13);
        for (int o = 0; o < d.oc; o++) {
            bias[o] = o * 10;
            cn_quantize_multiplier(0.0007 + 1e-6 * o, &mult[o], &shift[o]);
        }
        const cn_qepilogue ep = {.bias = bias, .mult = mult, .shift = shift, .zp_out = 3,
                                 .qmin = 3, .qmax = 255};
        void *packed = malloc(cn_qconv_packed_size(d.oc, d.kh, d.kw, d.c));
        cn_qconv_pack(packed, w, d.oc, d.kh, d.kw, d.c);
        void *ws = malloc(cn_qconv_workspace(&d, 2));
        cn_conv_desc fd = {1, sh->h, sh->w, sh->c, sh->oc, sh->k, sh->k, sh->s, sh->s, p, p, 1, 0, 0};
        cn_conv_desc_init(&fd);
        float *fws = malloc(cn_conv2d_workspace(&fd, 2, 0) * sizeof(float) + 64);
        const double ops = 2.0 * nout * d.kh * d.kw * d.c;
        printf("%-22s %3d %6d %5d %5d", sh->what, sh->count, d.oh * d.ow, d.oc, d.kh * d.kw * d.c);
        double tq[3], tf[3];
        for (int t = 1; t <= 2; t++) {
            TIME_ANY(budget, tq[t], cn_qconv2d(out, in, packed, &d, &ep, ws, t));
            printf(" %8.1f %5.1f%%", ops / tq[t] * 1e-9,
                   peak[t] > 0 ? 100.0 * ops / tq[t] * 1e-9 / peak[t] : 0.0);
        }
        printf(" |");
        for (int t = 1; t <= 2; t++) {
            omp_set_num_threads(t); /* the float GEMM sizes its teams from this */
            TIME_ANY(budget, tf[t], cn_conv2d_forward(fout, fin, fw, fb, &fd, fws, t));
            printf(" %8.1f", ops / tf[t] * 1e-9);
        }
        printf("\n");
        fflush(stdout);
        tot_ops += sh->count * ops;
        for (int t = 1; t <= 2; t++) tot_q[t] += sh->count * tq[t], tot_f[t] += sh->count * tf[t];
        free(in), free(out), free(w), free(fin), free(fout), free(fw), free(fb);
        free(bias), free(mult), free(shift), free(packed), free(ws), free(fws);
    }
    free(flush_buf);
    if (tot_ops > 0) {
        printf("%-22s %3s %6s %5s %5s %8.1f %5.1f%% %8.1f %5.1f%% | %8.1f %8.1f\n",
               "all (weighted)", "", "", "", "", tot_ops / tot_q[1] * 1e-9,
               peak[1] > 0 ? 100.0 * tot_ops / tot_q[1] * 1e-9 / peak[1] : 0.0,
               tot_ops / tot_q[2] * 1e-9,
               peak[2] > 0 ? 100.0 * tot_ops / tot_q[2] * 1e-9 / peak[2] : 0.0,
               tot_ops / tot_f[1] * 1e-9, tot_ops / tot_f[2] * 1e-9);
        printf("conv time of one ResNet-50 image: int8 %.2f ms (1T) %.2f ms (2T), float %.2f ms "
               "(1T) %.2f ms (2T)\n",
               tot_q[1] * 1e3, tot_q[2] * 1e3, tot_f[1] * 1e3, tot_f[2] * 1e3);
    }
    return 0;
}
