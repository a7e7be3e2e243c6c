/* Winograd F(4x4, 3x3) (see winograd.h; Lavin and Gray 2016, section 4 and its F(4x4, 3x3)
 * matrices, interpolation points 0, 1, -1, 2, -2 and infinity):
 *
 *   B^T = | 4  0 -5  0  1  0 |   G = |  1/4     0     0 |   A^T = | 1  1  1  1  1  0 |
 *         | 0 -4 -4  1  1  0 |       | -1/6  -1/6  -1/6 |         | 0  1 -1  2 -2  0 |
 *         | 0  4 -4 -1  1  0 |       | -1/6   1/6  -1/6 |         | 0  1  1  4  4  0 |
 *         | 0 -2 -1  2  1  0 |       | 1/24  1/12   1/6 |         | 0  1 -1  8 -8  1 |
 *         | 0  2 -1 -2  1  0 |       | 1/24 -1/12   1/6 |
 *         | 0  4  0 -5  0  1 |       |    0     0     1 |
 *
 * Driver: the tiles of the whole batch (image-major, then tile rows, then tile columns) are cut
 * into blocks of TB tiles, TB a function of C and OC only, sized so that a block's transformed
 * input V (36, TB, C) and products M (36, TB, OC) stay in L2. Per block: input transform, 36 GEMMs
 * M_f = V_f U_f, output transform with the epilogue. With at least two blocks per thread, threads
 * take whole blocks (each in its own buffers, no barrier); with fewer (batch 1, small maps), the
 * threads share each block: they split its tiles for the transforms and its 36 GEMMs between
 * them, with a barrier between the phases. Both run the same calls on the same data, so the bits
 * are the same whichever mode and thread count. */
#include "kernels/winograd.h"

#include <omp.h>
#include <stdatomic.h>
#include <string.h>

#include "core/simd.h"
#include "kernels/gemm.h"
#include "kernels/winograd_g.h"
#include "ops/activation.h"

enum { NF = 36 };

/* ---- the decision ---- */

static atomic_int forced = -1;

static size_t tiles_of(const cn_conv_desc *d) {
    return (size_t)d->n * ((d->h + 3) / 4) * ((d->w + 3) / 4);
}

void cn_winograd_force(int mode) { atomic_store_explicit(&forced, mode, memory_order_relaxed); }

int cn_wino_shape_ok(const cn_conv_desc *d) {
    return d->kh == 3 && d->kw == 3 && d->sh == 1 && d->sw == 1 && d->ph == 1 && d->pw == 1 &&
           d->groups == 1 && d->c > 0 && d->oc > 0 && d->h > 0 && d->w > 0 && d->n > 0;
}

/* Measured with bench/bench_winograd (2 vCPUs, AVX-512, 1 and 2 threads alike) against the
 * direct kernels (C <= 64) and the implicit GEMM (C > 64) on ResNet's 3x3 shapes:
 *  - C = OC = 64 at 56x56 and 128 at 28x28: 2-3x faster at batch 1 and 16;
 *  - 256 at 14x14: 1.25-1.4x at batch 1 (16 tiles), 1.7-2.4x at batch 16;
 *  - 512 at 7x7 (4 tiles an image): 0.2-0.5x at batch 1 and 2, even at batch 4, 1.2-1.9x at
 *    batch 8, 1.3-2.5x at 16.
 * On AVX2 + FMA (AMD Zen 3, 1 thread, a loaded machine; winograd_avx2.c's transforms) the same
 * thresholds hold, with room: 64 at 56x56 and 128 at 28x28 2.1-2.4x at batch 1 and 16; 256 at
 * 14x14 1.35x at batch 1 (not taken with cached weights: the memory rule below; the streamed
 * path at the end of this file takes it), 2.3x at 16; 512 at 7x7 0.5-0.8x at
 * batch 1 but 1.5x at 2, 2.9-4.9x at 4 and more (the implicit GEMM is slower there than on
 * AVX-512), so the 64-tile rule for wide layers is about memory only on these CPUs.
 * What decides is how many tiles share each U_f: the 36 x C x OC transformed weights are 4x the
 * layer's weights and are read once per call (per block), so the GEMM needs enough rows (tiles)
 * to be bound by arithmetic rather than by reading U: 16 for U up to 9 MB (C = OC = 256), 32
 * beyond. Fewer than 64 channels stay on the direct kernels, which were not measured against
 * (the CIFAR ResNets' 16/32-channel layers, where the GEMMs would be too narrow anyway). */
enum { WINO_MIN_CHANNELS = 64, WINO_MIN_TILES = 16 };
/* Memory: the transformed weights are kept (cached per layer) beside the layer's own, 4x their
 * size. Layers wider than 128 x 128 channels (U above 2.4 MB: ResNet's 256- and 512-channel
 * stages, 57 MB for ResNet-50) take Winograd only from 64 tiles a call (batch 4 at 14x14), so
 * that batch-1 inference stays within the weights plus 40 MB (the kernel issue's bound; ResNet-50
 * keeps 11 MB of transformed weights) while batches, where activations dominate anyway, get
 * the 1.7-2.5x of these layers; unless the model's cache fits the budget (wide_cached, see
 * cn_wino_cached_floats): then the speed alone decides, 16 tiles up to C x OC = 256 x 256 (U of
 * 9 MB), 32 beyond. ResNet-18 at batch 1 keeps 38 MB of them (its three 256-channel layers at
 * 14x14 1.7-2x faster than the implicit GEMM), ResNet-50 would keep 68 MB and stays as above. */
enum { WINO_WIDE = 128 * 128, WINO_MIN_TILES_WIDE = 64, WINO_HUGE = 256 * 256,
       WINO_MIN_TILES_HUGE = 32 };

int cn_wino_wanted(const cn_conv_desc *d, int nthreads, int wide_cached) {
    (void)nthreads; /* the thresholds held at 1 and 2 threads */
    if (!cn_wino_shape_ok(d)) return 0;
    int f = atomic_load_explicit(&forced, memory_order_relaxed);
    if (f >= 0) return f == 1;
    if (d->c < WINO_MIN_CHANNELS || d->oc < WINO_MIN_CHANNELS) return 0;
    const size_t tiles = tiles_of(d), cc = (size_t)d->c * d->oc;
    if (cc > (size_t)WINO_WIDE && !wide_cached) return tiles >= (size_t)WINO_MIN_TILES_WIDE;
    if (cc > (size_t)WINO_HUGE) return tiles >= (size_t)WINO_MIN_TILES_HUGE;
    return tiles >= (size_t)WINO_MIN_TILES;
}

size_t cn_wino_cached_floats(const cn_conv_desc *d, int nthreads) {
    return cn_wino_wanted(d, nthreads, 1) ? cn_wino_weight_floats(d->c, d->oc) : 0;
}

/* ---- weights: U = G g G^T ---- */

size_t cn_wino_weight_floats(int c, int oc) { return (size_t)NF * c * oc; }

void cn_wino_pack_weights(float *u, const float *w, int c, int oc, int nthreads) {
    static const double G[6][3] = CN_WINO_G(double);
    const size_t plane = (size_t)c * oc;
    /* by input channel, so that threads write disjoint rows of each plane */
#pragma omp parallel for num_threads(nthreads > 1 ? nthreads : 1) schedule(static)
    for (int ci = 0; ci < c; ci++)
        for (int o = 0; o < oc; o++) {
            double g[3][3], t[6][3];
            for (int y = 0; y < 3; y++)
                for (int x = 0; x < 3; x++) g[y][x] = w[(((size_t)o * 3 + y) * 3 + x) * c + ci];
            for (int i = 0; i < 6; i++)
                for (int x = 0; x < 3; x++)
                    t[i][x] = G[i][0] * g[0][x] + G[i][1] * g[1][x] + G[i][2] * g[2][x];
            for (int i = 0; i < 6; i++)
                for (int j = 0; j < 6; j++)
                    u[(size_t)(i * 6 + j) * plane + (size_t)ci * oc + o] =
                        (float)(t[i][0] * G[j][0] + t[i][1] * G[j][1] + t[i][2] * G[j][2]);
        }
}

/* U^T, or U of the data gradient (see winograd.h): output channels o0..o1-1, every input
 * channel k in a vector lane (the filter's 9 taps of channel k are c floats apart). In float: this
 * runs at every training step, where the weights change, and is memory-bound. */

/* r[0..5] = G (x0, x1, x2) */
#define WINO_G6(r, x0, x1, x2)                                                  \
    do {                                                                        \
        const float s02_ = (x0) + (x2);                                         \
        const float a_ = (1.0f / 24) * (x0) + (1.0f / 6) * (x2), b_ = (1.0f / 12) * (x1); \
        r[0] = 0.25f * (x0);                                                    \
        r[1] = (-1.0f / 6) * (s02_ + (x1));                                     \
        r[2] = (-1.0f / 6) * (s02_ - (x1));                                     \
        r[3] = a_ + b_;                                                         \
        r[4] = a_ - b_;                                                         \
        r[5] = (x2);                                                            \
    } while (0)

static inline __attribute__((always_inline)) void weights_t_rows(float *restrict ut,
                                                                 const float *restrict w, int c,
                                                                 int oc, int o0, int o1,
                                                                 const int flip) {
    const size_t plane = (size_t)c * oc;
    for (int o = o0; o < o1; o++) {
        const float *restrict g = w + (size_t)o * 9 * c;
        /* tap q of the (flipped) filter */
#define TAP(q) g[(size_t)(flip ? 8 - (q) : (q)) * c + k]
        float *restrict uo = ut + (size_t)o * c;
#pragma omp simd
        for (int k = 0; k < c; k++) {
            float c0[6], c1[6], c2[6];
            WINO_G6(c0, TAP(0), TAP(3), TAP(6));
            WINO_G6(c1, TAP(1), TAP(4), TAP(7));
            WINO_G6(c2, TAP(2), TAP(5), TAP(8));
#undef TAP
#pragma GCC unroll 6
            for (int i = 0; i < 6; i++) {
                float r[6];
                WINO_G6(r, c0[i], c1[i], c2[i]);
#pragma GCC unroll 6
                for (int j = 0; j < 6; j++) uo[(size_t)(i * 6 + j) * plane + k] = r[j];
            }
        }
    }
}
#undef WINO_G6

static CN_CLONES void weights_t_block(float *ut, const float *w, int c, int oc, int o0, int o1,
                                      int flip) {
    if (flip) weights_t_rows(ut, w, c, oc, o0, o1, 1);
    else weights_t_rows(ut, w, c, oc, o0, o1, 0);
}

void cn_wino_pack_weights_t(float *ut, const float *w, int c, int oc, int flip, int nthreads) {
    const int T = nthreads > 1 && (size_t)c * oc >= 4096 ? nthreads : 1;
#pragma omp parallel num_threads(T)
    {
        const int t = omp_get_thread_num(), n = omp_get_num_threads();
        weights_t_block(ut, w, c, oc, (int)((long)oc * t / n), (int)((long)oc * (t + 1) / n),
                        flip);
    }
}

int cn_wino_transposed(const cn_conv_desc *d) { return (size_t)d->c * d->oc > (size_t)WINO_WIDE; }

int cn_wino_train_wanted(const cn_conv_desc *d, int nthreads) {
    (void)nthreads;
    if (!cn_wino_shape_ok(d)) return 0;
    int f = atomic_load_explicit(&forced, memory_order_relaxed);
    if (f >= 0) return f >= 1;
    return d->c >= WINO_MIN_CHANNELS && d->oc >= WINO_MIN_CHANNELS &&
           tiles_of(d) >= (size_t)WINO_MIN_TILES;
}

/* ---- transforms in plain C, for CPUs without AVX2 (winograd_avx512.c and winograd_avx2.c have
 * the fast ones:
 * neither gcc nor clang vectorises these over the channels, even with omp simd) ---- */

/* v[f * fs + k] = (B^T d B)[f] for channel k of one tile; px: its 36 input pixels (row-major),
 * each C floats (a zero row for pixels in the padding) */
static CN_CLONES void input_transform(float *restrict v, size_t fs, const float *const *px, int c) {
    for (int k = 0; k < c; k++) {
        float t[6][6];
        for (int j = 0; j < 6; j++) {
            const float d0 = px[j][k], d1 = px[6 + j][k], d2 = px[12 + j][k];
            const float d3 = px[18 + j][k], d4 = px[24 + j][k], d5 = px[30 + j][k];
            t[0][j] = 4.0f * d0 - 5.0f * d2 + d4;
            t[1][j] = -4.0f * (d1 + d2) + (d3 + d4);
            t[2][j] = 4.0f * (d1 - d2) + (d4 - d3);
            t[3][j] = 2.0f * (d3 - d1) + (d4 - d2);
            t[4][j] = 2.0f * (d1 - d3) + (d4 - d2);
            t[5][j] = 4.0f * d1 - 5.0f * d3 + d5;
        }
        for (int i = 0; i < 6; i++) {
            const float d0 = t[i][0], d1 = t[i][1], d2 = t[i][2];
            const float d3 = t[i][3], d4 = t[i][4], d5 = t[i][5];
            float *r = v + (size_t)(6 * i) * fs + k;
            r[0] = 4.0f * d0 - 5.0f * d2 + d4;
            r[fs] = -4.0f * (d1 + d2) + (d3 + d4);
            r[2 * fs] = 4.0f * (d1 - d2) + (d4 - d3);
            r[3 * fs] = 2.0f * (d3 - d1) + (d4 - d2);
            r[4 * fs] = 2.0f * (d1 - d3) + (d4 - d2);
            r[5 * fs] = 4.0f * d1 - 5.0f * d3 + d5;
        }
    }
}

static inline __attribute__((always_inline)) float act1(float y, const int act) {
    if (act == CN_ACT_RELU) return y < 0 ? 0.0f : y;
    if (act == CN_ACT_SILU) return cn_silu1(y);
    if (act == CN_ACT_SIGMOID) return cn_sigmoid1(y);
    return y;
}

/* po[q][k] = act((A^T m A)[q] * scale[k] + shift[k] + pr[q][k]) for the 16 outputs q of one
 * tile, m[f * fs + k] its products; outputs past the image edge point at a dump row (and their
 * residuals at a zero row), so that the loop has no branch. The affine part is written in the
 * order of conv2d.c's epilogue. */
static inline __attribute__((always_inline)) void output_impl(
    float *const *po, const float *const *pr, const float *restrict m, size_t fs, int oc,
    const float *restrict scale, const float *restrict shift, const int has_res, const int act) {
    for (int k = 0; k < oc; k++) {
        float t[4][6];
        for (int j = 0; j < 6; j++) {
            const float m0 = m[(size_t)j * fs + k], m1 = m[(size_t)(6 + j) * fs + k];
            const float m2 = m[(size_t)(12 + j) * fs + k], m3 = m[(size_t)(18 + j) * fs + k];
            const float m4 = m[(size_t)(24 + j) * fs + k], m5 = m[(size_t)(30 + j) * fs + k];
            const float s12 = m1 + m2, d12 = m1 - m2, s34 = m3 + m4, d34 = m3 - m4;
            t[0][j] = m0 + s12 + s34;
            t[1][j] = d12 + 2.0f * d34;
            t[2][j] = s12 + 4.0f * s34;
            t[3][j] = d12 + 8.0f * d34 + m5;
        }
        for (int i = 0; i < 4; i++) {
            const float s12 = t[i][1] + t[i][2], d12 = t[i][1] - t[i][2];
            const float s34 = t[i][3] + t[i][4], d34 = t[i][3] - t[i][4];
            float y[4] = {t[i][0] + s12 + s34, d12 + 2.0f * d34, s12 + 4.0f * s34,
                          d12 + 8.0f * d34 + t[i][5]};
            for (int j = 0; j < 4; j++) {
                float r = y[j] * scale[k] + shift[k];
                if (has_res) r = r + pr[4 * i + j][k];
                po[4 * i + j][k] = act1(r, act);
            }
        }
    }
}

static CN_CLONES void output_transform(float *const *po, const float *const *pr,
                                       const float *m, size_t fs, int oc, const float *scale,
                                       const float *shift, cn_act act) {
    const int r = pr != NULL;
#define OUT_CASE(A)                                                               \
    case A:                                                                       \
        if (r) output_impl(po, pr, m, fs, oc, scale, shift, 1, A);                \
        else output_impl(po, pr, m, fs, oc, scale, shift, 0, A);                  \
        break;
    switch (act) {
        OUT_CASE(CN_ACT_NONE)
        OUT_CASE(CN_ACT_RELU)
        OUT_CASE(CN_ACT_SILU)
        OUT_CASE(CN_ACT_SIGMOID)
    }
#undef OUT_CASE
}

/* ---- kernel choice: the AVX-512 and AVX2 transforms follow the GEMM's kernel path, so that
 * tests forcing the generic path (CN_CPU=generic, cn_sgemm_force_path) exercise the plain C ones
 * too ---- */

void f32_wino_input_tile__avx512(float *v, size_t fs, const float *const *px, int c);
void f32_wino_output_tile__avx512(float *const *po, const float *const *pr, const float *m,
                                  size_t fs, int oc, const float *scale, const float *shift,
                                  int act);
void f32_wino_input_tile__avx2(float *v, size_t fs, const float *const *px, int c);
void f32_wino_output_tile__avx2(float *const *po, const float *const *pr, const float *m,
                                size_t fs, int oc, const float *scale, const float *shift,
                                int act);

typedef void (*input_fn)(float *v, size_t fs, const float *const *px, int c);
typedef void (*output_fn)(float *const *po, const float *const *pr, const float *m, size_t fs,
                          int oc, const float *scale, const float *shift, int act);

static void output_transform_c(float *const *po, const float *const *pr, const float *m,
                               size_t fs, int oc, const float *scale, const float *shift,
                               int act) {
    output_transform(po, pr, m, fs, oc, scale, shift, (cn_act)act);
}

/* the transforms of the GEMM's kernel path */
static void transforms_of_path(input_fn *input, output_fn *output) {
    const char *path = cn_sgemm_path_name();
    *input = input_transform;
    *output = output_transform_c;
    if (strcmp(path, "avx512") == 0) {
        *input = f32_wino_input_tile__avx512;
        *output = f32_wino_output_tile__avx512;
    } else if (strcmp(path, "avx2") == 0) {
        *input = f32_wino_input_tile__avx2;
        *output = f32_wino_output_tile__avx2;
    }
}

/* ---- driver ---- */

/* Tiles per block. A block's V (36, TB, C) and M (36, TB, OC) should stay in L2 (2 MB a core
 * here; half of it, the rest being for the U_f panel of the GEMM in progress). But every block
 * reads all of U (36 C OC floats): when U does not fit in L2 either, it comes from L3 or memory
 * once per block, and fewer, bigger blocks are worth V and M leaving L2 (measured on C = OC = 256
 * at 14x14 batch 16: 64 tiles 1.6x faster than 16; on 512 at 7x7, 64 and 128 1.5x faster
 * than 16; on 64 at 56x56, 56 and 128 about the same). */
enum { BLOCK_BUDGET_FLOATS = 1 << 18, TB_MIN = 16, TB_BIG_U = 64, TB_MAX = 256 };

static int block_tiles(int c, int oc) {
    size_t tb = BLOCK_BUDGET_FLOATS / ((size_t)NF * (c + oc));
    if ((size_t)NF * c * oc > BLOCK_BUDGET_FLOATS && tb < TB_BIG_U) tb = TB_BIG_U;
    if (tb < TB_MIN) tb = TB_MIN;
    if (tb > TB_MAX) tb = TB_MAX;
    return (int)tb;
}

static size_t round16(size_t n) { return (n + 15) / 16 * 16; }

typedef struct wplan {
    int tw, tpi;      /* tile columns, tiles per image */
    size_t nt;        /* tiles of the batch */
    int tb;           /* tiles per block */
    size_t nb;        /* blocks */
    size_t zero;      /* floats of the zero row, max(C, OC) rounded up */
    size_t per;       /* floats of one thread's buffers: V, M, dump row */
} wplan;

static wplan make_plan(const cn_conv_desc *d) {
    wplan p;
    int th = (d->h + 3) / 4;
    p.tw = (d->w + 3) / 4;
    p.tpi = th * p.tw;
    p.nt = (size_t)d->n * p.tpi;
    p.tb = block_tiles(d->c, d->oc);
    p.nb = (p.nt + p.tb - 1) / p.tb;
    p.zero = round16((size_t)(d->c > d->oc ? d->c : d->oc));
    p.per = round16((size_t)NF * p.tb * d->c) + round16((size_t)NF * p.tb * d->oc) +
            round16((size_t)d->oc);
    return p;
}

static size_t streamed_workspace(const cn_conv_desc *d, size_t nt, int nthreads);

size_t cn_wino_workspace(const cn_conv_desc *d, int nthreads) {
    if (!cn_wino_shape_ok(d)) return 0;
    wplan p = make_plan(d);
    const size_t cached = p.zero + p.per * (size_t)(nthreads > 1 ? nthreads : 1);
    /* the streamed path takes calls of fewer than WINO_MIN_TILES_WIDE tiles (any batch up to
     * d->n): room for the most of them */
    size_t nt = tiles_of(d);
    if (nt > (size_t)WINO_MIN_TILES_WIDE - 1) nt = (size_t)WINO_MIN_TILES_WIDE - 1;
    const size_t streamed = streamed_workspace(d, nt, nthreads);
    return cached > streamed ? cached : streamed;
}

typedef struct wctx {
    float *out;
    const float *in, *u;
    const cn_epilogue *ep;
    const cn_conv_desc *d;
    const wplan *p;
    const float *zero;
    input_fn input;
    output_fn output;
    int ut; /* u holds each plane transposed, (OC, C) */
} wctx;

static void tile_origin(const wctx *x, size_t t, int *n, int *y0, int *x0) {
    *n = (int)(t / (size_t)x->p->tpi);
    int r = (int)(t % (size_t)x->p->tpi);
    *y0 = r / x->p->tw * 4;
    *x0 = r % x->p->tw * 4;
}

/* tiles j0..j1-1 of block b into v (36, TB, C) */
static void input_tiles(const wctx *x, size_t b, int j0, int j1, float *v) {
    const cn_conv_desc *d = x->d;
    const size_t fs = (size_t)x->p->tb * d->c;
    for (int j = j0; j < j1; j++) {
        int n, y0, x0;
        tile_origin(x, b * x->p->tb + j, &n, &y0, &x0);
        const float *px[NF];
        for (int i = 0; i < 6; i++)
            for (int k = 0; k < 6; k++) {
                int iy = y0 - 1 + i, ix = x0 - 1 + k;
                px[i * 6 + k] = iy < 0 || iy >= d->h || ix < 0 || ix >= d->w
                                    ? x->zero
                                    : x->in + (((size_t)n * d->h + iy) * d->w + ix) * d->c;
            }
        x->input(v + (size_t)j * d->c, fs, px, d->c);
    }
}

/* M_f (nt, OC) = V_f (nt, C) U_f (C, OC) for f in f0..f1-1 */
static void gemms(const wctx *x, int nt, int f0, int f1, const float *v, float *m) {
    const cn_conv_desc *d = x->d;
    const size_t vs = (size_t)x->p->tb * d->c, ms = (size_t)x->p->tb * d->oc;
    const size_t us = (size_t)d->c * d->oc;
    for (int f = f0; f < f1; f++)
        cn_sgemm(0, x->ut, nt, d->oc, d->c, 1.0f, v + f * vs, d->c, x->u + f * us,
                 x->ut ? d->c : d->oc, 0.0f, m + f * ms, d->oc);
}

/* tiles j0..j1-1 of block b from m (36, TB, OC) to out, through the epilogue */
static void output_tiles(const wctx *x, size_t b, int j0, int j1, const float *m, float *dump) {
    const cn_conv_desc *d = x->d;
    const size_t fs = (size_t)x->p->tb * d->oc;
    const float *res = x->ep->res;
    for (int j = j0; j < j1; j++) {
        int n, y0, x0;
        tile_origin(x, b * x->p->tb + j, &n, &y0, &x0);
        float *po[16];
        const float *pr[16];
        for (int i = 0; i < 4; i++)
            for (int k = 0; k < 4; k++) {
                int oy = y0 + i, ox = x0 + k;
                size_t o = (((size_t)n * d->h + oy) * d->w + ox) * d->oc;
                int in = oy < d->h && ox < d->w;
                po[i * 4 + k] = in ? x->out + o : dump;
                pr[i * 4 + k] = !res ? NULL : in ? res + o : x->zero;
            }
        x->output(po, res ? pr : NULL, m + (size_t)j * d->oc, fs, d->oc, x->ep->scale,
                  x->ep->shift, (int)x->ep->act);
    }
}

static int block_count(const wctx *x, size_t b) {
    size_t left = x->p->nt - b * x->p->tb;
    return left < (size_t)x->p->tb ? (int)left : x->p->tb;
}

static void wino_forward(float *out, const float *in, const float *u, int ut,
                         const cn_epilogue *ep, const cn_conv_desc *d, float *ws, int nthreads) {
    const wplan p = make_plan(d);
    const int T = nthreads > 1 ? nthreads : 1;
    memset(ws, 0, sizeof(float) * p.zero);
    input_fn input;
    output_fn output;
    transforms_of_path(&input, &output);
    const wctx x = {out, in, u, ep, d, &p, ws, input, output, ut};
    const size_t vfl = round16((size_t)NF * p.tb * d->c), mfl = round16((size_t)NF * p.tb * d->oc);
    if (T == 1 || p.nb >= 2 * (size_t)T) {
#pragma omp parallel num_threads(T)
        {
            float *v = ws + p.zero + (size_t)omp_get_thread_num() * p.per;
            float *m = v + vfl, *dump = m + mfl;
#pragma omp for schedule(static)
            for (size_t b = 0; b < p.nb; b++) {
                int nt = block_count(&x, b);
                input_tiles(&x, b, 0, nt, v);
                gemms(&x, nt, 0, NF, v, m);
                output_tiles(&x, b, 0, nt, m, dump);
            }
        }
    } else {
        float *v = ws + p.zero, *m = v + vfl;
#pragma omp parallel num_threads(T)
        {
            const int t = omp_get_thread_num();
            float *dump = ws + p.zero + (size_t)t * p.per + vfl + mfl;
            for (size_t b = 0; b < p.nb; b++) {
                const int nt = block_count(&x, b);
                input_tiles(&x, b, nt * t / T, nt * (t + 1) / T, v);
#pragma omp barrier
                gemms(&x, nt, NF * t / T, NF * (t + 1) / T, v, m);
#pragma omp barrier
                output_tiles(&x, b, nt * t / T, nt * (t + 1) / T, m, dump);
#pragma omp barrier
            }
        }
    }
    if (ep && ep->pool) cn_gap_forward(ep->pool, out, d->n, d->oh * d->ow, d->oc);
}

void cn_wino_forward(float *out, const float *in, const float *u, const cn_epilogue *ep,
                     const cn_conv_desc *d, float *ws, int nthreads) {
    wino_forward(out, in, u, 0, ep, d, ws, nthreads);
}

void cn_wino_forward_t(float *out, const float *in, const float *ut, const cn_epilogue *ep,
                       const cn_conv_desc *d, float *ws, int nthreads) {
    wino_forward(out, in, ut, 1, ep, d, ws, nthreads);
}

/* ---- weight gradient ----
 * The forward is y = A^T [sum_c U ⊙ V] A per tile, so with dM = A dy A^T (each 4x4 tile of dY
 * taken to 6x6, the output transform run backwards), dU_f = sum over tiles of V_f^T dM_f, and
 * dg = G^T dU G per filter. The GEMMs compute dU_f^T (OC, C) = dM_f^T V_f, so that the last
 * transform reads and writes rows of input channels (the layout of w). */

/* r[0..5] = A (y0..y3), A^T the output transform's 4x6 matrix */
#define WINO_A6(r, y0, y1, y2, y3)                                              \
    do {                                                                        \
        const float e_ = (y0) + (y2), o_ = (y1) + (y3);                         \
        const float e4_ = (y0) + 4.0f * (y2), o8_ = 2.0f * (y1) + 8.0f * (y3);  \
        r[0] = (y0);                                                            \
        r[1] = e_ + o_;                                                         \
        r[2] = e_ - o_;                                                         \
        r[3] = e4_ + o8_;                                                       \
        r[4] = e4_ - o8_;                                                       \
        r[5] = (y3);                                                            \
    } while (0)

/* v[f * fs + k] = (A dy A^T)[f] for channel k of one tile; py: its 16 output pixels of dY
 * (row-major), each oc floats (a zero row outside the image) */
static CN_CLONES void dy_transform(float *restrict v, size_t fs, const float *const *py, int oc) {
    const float *restrict p0 = py[0], *restrict p1 = py[1], *restrict p2 = py[2];
    const float *restrict p3 = py[3], *restrict p4 = py[4], *restrict p5 = py[5];
    const float *restrict p6 = py[6], *restrict p7 = py[7], *restrict p8 = py[8];
    const float *restrict p9 = py[9], *restrict p10 = py[10], *restrict p11 = py[11];
    const float *restrict p12 = py[12], *restrict p13 = py[13], *restrict p14 = py[14];
    const float *restrict p15 = py[15];
#pragma omp simd
    for (int k = 0; k < oc; k++) {
        float c0[6], c1[6], c2[6], c3[6]; /* A applied down each column of the tile */
        WINO_A6(c0, p0[k], p4[k], p8[k], p12[k]);
        WINO_A6(c1, p1[k], p5[k], p9[k], p13[k]);
        WINO_A6(c2, p2[k], p6[k], p10[k], p14[k]);
        WINO_A6(c3, p3[k], p7[k], p11[k], p15[k]);
#pragma GCC unroll 6
        for (int i = 0; i < 6; i++) {
            float r[6];
            WINO_A6(r, c0[i], c1[i], c2[i], c3[i]);
#pragma GCC unroll 6
            for (int j = 0; j < 6; j++) v[(size_t)(6 * i + j) * fs + k] = r[j];
        }
    }
}
#undef WINO_A6

/* r[0..2] = G^T (x0..x5) */
#define WINO_GT3(r, x0, x1, x2, x3, x4, x5)                                      \
    do {                                                                         \
        const float s12_ = (x1) + (x2), d12_ = (x1) - (x2);                      \
        const float s34_ = (x3) + (x4), d34_ = (x3) - (x4);                      \
        r[0] = 0.25f * (x0) - (1.0f / 6) * s12_ + (1.0f / 24) * s34_;             \
        r[1] = (-1.0f / 6) * d12_ + (1.0f / 12) * d34_;                           \
        r[2] = (-1.0f / 6) * s12_ + (1.0f / 6) * s34_ + (x5);                     \
    } while (0)

/* dw[o][y][x][k] += (G^T dU G)[y][x] for filters o0..o1-1, dut (36, OC, C) */
static CN_CLONES void wgrad_weights(float *restrict dw, const float *restrict dut, int c, int oc,
                                    int o0, int o1) {
    const size_t plane = (size_t)c * oc;
    for (int o = o0; o < o1; o++) {
        const float *restrict x = dut + (size_t)o * c;
        float *restrict g = dw + (size_t)o * 9 * c;
#pragma omp simd
        for (int k = 0; k < c; k++) {
            float s[3][6]; /* G^T applied down each column j */
#pragma GCC unroll 6
            for (int j = 0; j < 6; j++) {
                float r[3];
                WINO_GT3(r, x[(size_t)j * plane + k], x[(size_t)(6 + j) * plane + k],
                         x[(size_t)(12 + j) * plane + k], x[(size_t)(18 + j) * plane + k],
                         x[(size_t)(24 + j) * plane + k], x[(size_t)(30 + j) * plane + k]);
                s[0][j] = r[0], s[1][j] = r[1], s[2][j] = r[2];
            }
#pragma GCC unroll 3
            for (int y = 0; y < 3; y++) {
                float r[3];
                WINO_GT3(r, s[y][0], s[y][1], s[y][2], s[y][3], s[y][4], s[y][5]);
                g[(size_t)(3 * y) * c + k] += r[0];
                g[(size_t)(3 * y + 1) * c + k] += r[1];
                g[(size_t)(3 * y + 2) * c + k] += r[2];
            }
        }
    }
}
#undef WINO_GT3

/* Tiles per block of the weight gradient: the block's tiles are the GEMMs' depth, and every
 * block reads and writes all of dU (36 C OC floats), so blocks are large (V and dM of a block
 * stream through the GEMMs once either way). */
enum { WG_TB = 128 };

static wplan wgrad_plan(const cn_conv_desc *d) {
    wplan p = make_plan(d);
    p.tb = WG_TB;
    p.nb = (p.nt + p.tb - 1) / p.tb;
    p.per = round16((size_t)NF * p.tb * d->c) + round16((size_t)NF * p.tb * d->oc);
    return p;
}

size_t cn_wino_wgrad_workspace(const cn_conv_desc *d, int nthreads) {
    (void)nthreads;
    if (!cn_wino_shape_ok(d)) return 0;
    const wplan p = wgrad_plan(d);
    return p.zero + p.per + round16((size_t)NF * d->c * d->oc);
}

/* tiles j0..j1-1 of block b of dY into m (36, TB, OC) */
static void dy_tiles(const wctx *x, const float *dy, size_t b, int j0, int j1, float *m) {
    const cn_conv_desc *d = x->d;
    const size_t fs = (size_t)x->p->tb * d->oc;
    for (int j = j0; j < j1; j++) {
        int n, y0, x0;
        tile_origin(x, b * x->p->tb + j, &n, &y0, &x0);
        const float *py[16];
        for (int i = 0; i < 4; i++)
            for (int k = 0; k < 4; k++) {
                int oy = y0 + i, ox = x0 + k;
                py[i * 4 + k] = oy < d->h && ox < d->w
                                    ? dy + (((size_t)n * d->h + oy) * d->w + ox) * d->oc
                                    : x->zero;
            }
        dy_transform(m + (size_t)j * d->oc, fs, py, d->oc);
    }
}

void cn_wino_wgrad(float *dw, const float *dout, const float *in, const cn_conv_desc *d,
                   float *ws, int nthreads) {
    const wplan p = wgrad_plan(d);
    const int T = nthreads > 1 ? nthreads : 1;
    memset(ws, 0, sizeof(float) * p.zero);
    input_fn input;
    output_fn output; /* unused: the weight gradient has no output transform */
    transforms_of_path(&input, &output);
    const wctx x = {NULL, in, NULL, NULL, d, &p, ws, input, output, 0};
    float *v = ws + p.zero, *m = v + round16((size_t)NF * p.tb * d->c);
    float *dut = v + p.per;
    const size_t vs = (size_t)p.tb * d->c, ms = (size_t)p.tb * d->oc, us = (size_t)d->c * d->oc;
#pragma omp parallel num_threads(T)
    {
        const int t = omp_get_thread_num(), nth = omp_get_num_threads();
        for (size_t b = 0; b < p.nb; b++) {
            const int nt = block_count(&x, b);
            input_tiles(&x, b, nt * t / nth, nt * (t + 1) / nth, v);
            dy_tiles(&x, dout, b, nt * t / nth, nt * (t + 1) / nth, m);
#pragma omp barrier
            /* each thread owns planes f0..f1-1 of dU for the whole call */
            for (int f = NF * t / nth; f < NF * (t + 1) / nth; f++)
                cn_sgemm(1, 0, d->oc, d->c, nt, 1.0f, m + f * ms, d->oc, v + f * vs, d->c,
                         b ? 1.0f : 0.0f, dut + f * us, d->c);
#pragma omp barrier
        }
        wgrad_weights(dw, dut, d->c, d->oc, (int)((long)d->oc * t / nth),
                      (int)((long)d->oc * (t + 1) / nth));
    }
}

/* ---- streamed weights (AVX2, few tiles) ----
 * With few tiles a call (batch 1 at 14x14: 16), each U_f is used by 16 rows only, so reading a
 * cached U (4x the weights: 9.4 MB at C = OC = 256) from memory bounds the call, and caching it
 * for every wide layer breaks the memory rule. Here U is made during the call from the weights,
 * one row i of G and 6 output channels at a time (6 planes x 6 x C floats, in L1/L2), and used at
 * once: for each of its planes f = 6i + j, M_f^T (6 channels x 16 tiles) = U_f^T V_f^T by the
 * GEMM's AVX2 6x16 micro-kernel reading U in place and V_f^T packed (16 tiles a panel), written
 * back transposed into M (36, tiles, OC). Threads split the channel blocks; the row-i-outer order
 * keeps V's six planes of that row in L2 while the weights stream. */
void f32_gemm_ukernel_6x16_rows__avx2(size_t kc, const float *a, size_t as, const float *b,
                                      size_t bs, float *c, size_t ldc, size_t mr, size_t nr,
                                      float alpha, float beta);
void f32_gemm_pack_bt__avx2(size_t kc, size_t cols, const float *src, size_t ld, size_t nr,
                            float *dst);
void f32_gemm_store_t__avx2(const float *t, size_t ldt, size_t rows, size_t cols, float *c,
                            size_t ldc, float alpha, float beta, const cn_gemm_affine *f);
void f32_wino_weights_row__avx2(float *u, size_t us, const float *w, int c, int rows, int i);

enum { SW_MR = 6, SW_NR = 16 };

/* The AVX-512 layout (below) pays from 8 tiles a call (2 vCPUs, isolated layers against the
 * implicit GEMM, which is what these layers ran before): 256 x 256 at 14x14, batch 1 (16 tiles)
 * 0.58-0.60 -> 0.35 ms, batch 2 1.19-1.24 -> 0.59-0.63; 512 x 512 at 7x7, batch 2 (8 tiles)
 * 1.37-1.51 -> 1.17-1.32, batch 4 2.7 -> 1.6, batch 8 5.4 -> 2.5; at batch 1 (4 tiles) it
 * loses, 0.68-0.75 -> 1.13-1.25 ms. */
enum { SW5_MIN_TILES = 8 };

int cn_wino_streamed_wanted(const cn_conv_desc *d, int nthreads) {
    (void)nthreads;
    if (!cn_wino_shape_ok(d)) return 0;
    const int avx512 = strcmp(cn_sgemm_path_name(), "avx512") == 0;
    if (!avx512 && strcmp(cn_sgemm_path_name(), "avx2") != 0) return 0;
    const size_t tiles = tiles_of(d);
    if (tiles >= (size_t)WINO_MIN_TILES_WIDE) return 0;
    const int f = atomic_load_explicit(&forced, memory_order_relaxed);
    if (f >= 0) return f == 2;
    /* the layers the memory rule keeps off the cached path */
    return d->c >= WINO_MIN_CHANNELS && d->oc >= WINO_MIN_CHANNELS &&
           (size_t)d->c * d->oc > (size_t)WINO_WIDE &&
           tiles >= (size_t)(avx512 ? SW5_MIN_TILES : WINO_MIN_TILES);
}

typedef struct splan {
    size_t nt, panels;          /* tiles, 16-tile panels */
    size_t vfl, vtfl, mfl, per; /* floats of V, V^T, M and of one thread's buffers */
} splan;

static splan streamed_plan(const cn_conv_desc *d, size_t nt) {
    splan s;
    s.nt = nt;
    s.panels = (nt + SW_NR - 1) / SW_NR;
    s.vfl = round16((size_t)NF * nt * d->c);
    s.vtfl = round16((size_t)NF * s.panels * SW_NR * d->c);
    s.mfl = round16((size_t)NF * nt * d->oc);
    /* U of one row of G and one channel block, the micro-kernel's tile, a dump row */
    s.per = round16((size_t)6 * SW_MR * d->c) + round16((size_t)SW_MR * SW_NR) + round16((size_t)d->oc);
    return s;
}

static size_t streamed512_per(const cn_conv_desc *d);

static size_t streamed_workspace(const cn_conv_desc *d, size_t nt, int nthreads) {
    const splan s = streamed_plan(d, nt);
    const size_t T = (size_t)(nthreads > 1 ? nthreads : 1);
    /* the AVX-512 layout (the path is chosen per process, the workspace sized before) */
    const size_t w512 = round16((size_t)(d->c > d->oc ? d->c : d->oc)) + s.vfl + s.mfl +
                        (streamed512_per(d) + round16((size_t)d->oc)) * T;
    const size_t zero = round16((size_t)(d->c > d->oc ? d->c : d->oc));
    const size_t w2 = zero + s.vfl + s.vtfl + s.mfl + s.per * T;
    return w2 > w512 ? w2 : w512;
}

/* AVX-512: the output channels in blocks of 48, the lanes of the 8x48 micro-kernel. Per block,
 * its raw filters are transposed to [9][C][48] once (the GEMM's packer), then for each row i of
 * G the six planes of U are made with the channels along the lanes, straight into the packed B
 * panels the micro-kernel reads, and M_f (tiles, 48) = V_f U_f with V_f's rows read in place
 * (8 tiles a tile of the kernel, broadcast) and written into M (36, tiles, OC) as they are: no
 * transposed copies, and 24 FMAs for 11 loads (the AVX2 layout's 6x16 tile, with the weights
 * broadcast, would be bound by loads). */
void f32_gemm_ukernel_8x48_rows__avx512(size_t kc, const float *a, size_t as, const float *b,
                                        size_t bs, float *c, size_t ldc, size_t mr, size_t nr,
                                        float alpha, float beta);
void f32_gemm_pack_bt__avx512(size_t kc, size_t cols, const float *src, size_t ld, size_t nr,
                              float *dst);
void f32_wino_weights_panel__avx512(float *u, size_t us, const float *wt, int c, int i);

enum { SW5_MR = 8, SW5_NR = 48 };

static int streamed_avx512(void) { return strcmp(cn_sgemm_path_name(), "avx512") == 0; }

/* floats of one thread's buffers on the AVX-512 path: the block's transposed filters, U's six
 * planes of one row of G */
static size_t streamed512_per(const cn_conv_desc *d) {
    return round16((size_t)9 * d->c * SW5_NR) + round16((size_t)6 * d->c * SW5_NR);
}

/* asks for the cache lines of the floats [p, p + floats) to be brought towards L2 */
static void prefetch_l2(const float *p, size_t floats) {
    const char *c = (const char *)p;
    for (size_t o = 0; o < floats * sizeof(float); o += 64) __builtin_prefetch(c + o, 0, 2);
}

static void streamed512(float *out, const float *in, const float *w, const cn_epilogue *ep,
                        const cn_conv_desc *d, float *ws, int nthreads) {
    wplan p = make_plan(d);
    p.tb = (int)p.nt; /* one block of every tile */
    p.nb = 1;
    const size_t C = (size_t)d->c, OC = (size_t)d->oc, nt = p.nt;
    const size_t vfl = round16((size_t)NF * nt * C), mfl = round16((size_t)NF * nt * OC);
    memset(ws, 0, sizeof(float) * p.zero);
    float *v = ws + p.zero, *m = v + vfl, *thr = m + mfl;
    const wctx x = {out, in, NULL, ep, d, &p, ws, f32_wino_input_tile__avx512,
                    f32_wino_output_tile__avx512, 0};
    const int T = nthreads > 1 ? nthreads : 1;
    const int blocks = (d->oc + SW5_NR - 1) / SW5_NR;
    const size_t per = streamed512_per(d);
#pragma omp parallel num_threads(T)
    {
        const int t = omp_get_thread_num(), nth = omp_get_num_threads();
        float *wt = thr + (size_t)t * (per + round16(OC));
        float *u = wt + round16((size_t)9 * C * SW5_NR), *dump = wt + per;
        const int b0 = blocks * t / nth, b1 = blocks * (t + 1) / nth;
        /* the filters come from memory (a model's weights outgrow the caches): each block's
         * are requested ahead, the first block's while the input is transformed, the next
         * one's a sixth at a time during this one's GEMMs */
        const size_t bw = (size_t)SW5_NR * 9 * C;
        if (b0 < b1)
            prefetch_l2(w + (size_t)b0 * bw,
                        b0 + 1 < blocks ? bw : (OC - (size_t)b0 * SW5_NR) * 9 * C);
        input_tiles(&x, 0, (int)(nt * t / nth), (int)(nt * (t + 1) / nth), v);
#pragma omp barrier
        for (int b = b0; b < b1; b++) {
            const size_t o0 = (size_t)b * SW5_NR;
            const size_t rows = OC - o0 < SW5_NR ? OC - o0 : SW5_NR;
            /* floats of the next block's filters (0 past the thread's last block) */
            const size_t left = OC - o0 - rows;
            const size_t next = b + 1 < b1 ? (left < SW5_NR ? left : SW5_NR) * 9 * C : 0;
            for (int tap = 0; tap < 9; tap++)
                f32_gemm_pack_bt__avx512(C, rows, w + o0 * 9 * C + (size_t)tap * C, 9 * C, SW5_NR,
                                         wt + (size_t)tap * C * SW5_NR);
            for (int i = 0; i < 6; i++) {
                if (next)
                    prefetch_l2(w + (o0 + rows) * 9 * C + next * i / 6,
                                next * (i + 1) / 6 - next * i / 6);
                f32_wino_weights_panel__avx512(u, C * SW5_NR, wt, (int)C, i);
                for (int j = 0; j < 6; j++) {
                    const size_t f = (size_t)(6 * i + j);
                    for (size_t r0 = 0; r0 < nt; r0 += SW5_MR)
                        f32_gemm_ukernel_8x48_rows__avx512(
                            C, v + (f * nt + r0) * C, C, u + (size_t)j * C * SW5_NR, SW5_NR,
                            m + (f * nt + r0) * OC + o0, OC, nt - r0 < SW5_MR ? nt - r0 : SW5_MR,
                            rows, 1.0f, 0.0f);
                }
            }
        }
#pragma omp barrier
        output_tiles(&x, 0, (int)(nt * t / nth), (int)(nt * (t + 1) / nth), m, dump);
    }
    if (ep && ep->pool) cn_gap_forward(ep->pool, out, d->n, d->oh * d->ow, d->oc);
}

void cn_wino_forward_streamed(float *out, const float *in, const float *w, const cn_epilogue *ep,
                              const cn_conv_desc *d, float *ws, int nthreads) {
    if (streamed_avx512()) {
        streamed512(out, in, w, ep, d, ws, nthreads);
        return;
    }
    wplan p = make_plan(d);
    const splan s = streamed_plan(d, p.nt);
    p.tb = (int)p.nt; /* one block of every tile */
    p.nb = 1;
    const size_t C = (size_t)d->c, OC = (size_t)d->oc, nt = s.nt;
    memset(ws, 0, sizeof(float) * p.zero);
    float *v = ws + p.zero, *vt = v + s.vfl, *m = vt + s.vtfl, *thr = m + s.mfl;
    const wctx x = {out, in, NULL, ep, d, &p, ws, f32_wino_input_tile__avx2,
                    f32_wino_output_tile__avx2, 0};
    const int T = nthreads > 1 ? nthreads : 1;
    const int blocks = (d->oc + SW_MR - 1) / SW_MR;
#pragma omp parallel num_threads(T)
    {
        const int t = omp_get_thread_num(), nth = omp_get_num_threads();
        float *ub = thr + (size_t)t * s.per, *tmp = ub + round16((size_t)6 * SW_MR * C);
        float *dump = tmp + round16((size_t)SW_MR * SW_NR);
        input_tiles(&x, 0, (int)(nt * t / nth), (int)(nt * (t + 1) / nth), v);
#pragma omp barrier
        /* V_f^T, 16 tiles a panel, k-major: the micro-kernel's packed B */
        for (int f = t; f < NF; f += nth)
            for (size_t q = 0; q < s.panels; q++) {
                const size_t cols = nt - q * SW_NR < SW_NR ? nt - q * SW_NR : SW_NR;
                f32_gemm_pack_bt__avx2(C, cols, v + ((size_t)f * nt + q * SW_NR) * C, C, SW_NR,
                                       vt + ((size_t)f * s.panels + q) * C * SW_NR);
            }
#pragma omp barrier
        const int b0 = blocks * t / nth, b1 = blocks * (t + 1) / nth;
        for (int i = 0; i < 6; i++)
            for (int b = b0; b < b1; b++) {
                const size_t o0 = (size_t)b * SW_MR;
                const size_t rows = OC - o0 < SW_MR ? OC - o0 : SW_MR;
                f32_wino_weights_row__avx2(ub, SW_MR * C, w + o0 * 9 * C, (int)C, (int)rows, i);
                for (int j = 0; j < 6; j++) {
                    const size_t f = (size_t)(6 * i + j);
                    for (size_t q = 0; q < s.panels; q++) {
                        const size_t cols = nt - q * SW_NR < SW_NR ? nt - q * SW_NR : SW_NR;
                        f32_gemm_ukernel_6x16_rows__avx2(C, ub + (size_t)j * SW_MR * C, C,
                                                         vt + (f * s.panels + q) * C * SW_NR,
                                                         SW_NR, tmp, SW_NR, rows, cols, 1.0f, 0.0f);
                        f32_gemm_store_t__avx2(tmp, SW_NR, rows, cols,
                                               m + (f * nt + q * SW_NR) * OC + o0, OC, 1.0f, 0.0f,
                                               NULL);
                    }
                }
            }
#pragma omp barrier
        output_tiles(&x, 0, (int)(nt * t / nth), (int)(nt * (t + 1) / nth), m, dump);
    }
    if (ep && ep->pool) cn_gap_forward(ep->pool, out, d->n, d->oh * d->ow, d->oc);
}
