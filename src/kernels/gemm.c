/* SGEMM driver. Three algorithms, chosen from the shape alone:
 *  - packed (Goto/BLIS): blocking in NC columns, KC depth, MC rows, packing of A (unless the
 *    "rows" kernels read it in place) and of B (unless it can be streamed as is), register-tiled
 *    micro-kernels whose width is chosen by N, and OpenMP threading over a 2-D grid of C blocks;
 *  - swapped (ta == 0, tb == 1, 4 <= M <= 64): C^T = B * A^T, so that the weights of a layer
 *    applied to few pixels are read in place instead of packed;
 *  - dot (ta == 0, tb == 1, M <= 3, and the rows left over by the swapped path): GEMV-like dot
 *    products with both operands read in place.
 * The micro-kernels are chosen once per process from the CPU features.
 *
 * Determinism: every element of C is produced by the same kernel calls, summing k in the same
 * order, with the same KC partition whatever the thread count; threads only decide which C
 * elements they own. Hence the bits never depend on the number of threads. */
#include "kernels/gemm.h"

#include <omp.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "core/cpu.h"

typedef void (*ukernel_fn)(size_t kc, const float *a, size_t as, const float *b, size_t bs,
                           float *c, size_t ldc, size_t mr, size_t nr, float alpha, float beta);
/* the same, applying the epilogue f (pointers at the tile's first row and column) as C is written */
typedef void (*ukernel_ep_fn)(size_t kc, const float *a, size_t as, const float *b, size_t bs,
                              float *c, size_t ldc, size_t mr, size_t nr, float alpha, float beta,
                              const cn_gemm_affine *f);

#define UKERNEL_DECL(name)                                                                \
    void name(size_t kc, const float *a, size_t as, const float *b, size_t bs, float *c, \
              size_t ldc, size_t mr, size_t nr, float alpha, float beta)
#define UKERNEL_EP_DECL(name)                                                                \
    void name(size_t kc, const float *a, size_t as, const float *b, size_t bs, float *c,       \
              size_t ldc, size_t mr, size_t nr, float alpha, float beta, const cn_gemm_affine *f)
#define UKERNEL_PAIR(tile) \
    UKERNEL_DECL(f32_gemm_ukernel_##tile##_kmajor__avx512); \
    UKERNEL_DECL(f32_gemm_ukernel_##tile##_rows__avx512); \
    UKERNEL_EP_DECL(f32_gemm_ukernel_##tile##_kmajor_ep__avx512); \
    UKERNEL_EP_DECL(f32_gemm_ukernel_##tile##_rows_ep__avx512)
UKERNEL_PAIR(14x16);
UKERNEL_PAIR(12x32);
UKERNEL_PAIR(14x32);
UKERNEL_PAIR(8x48);
UKERNEL_PAIR(6x64);
UKERNEL_PAIR(5x80);
UKERNEL_PAIR(4x96);
#define UKERNEL_PAIR2(tile) \
    UKERNEL_DECL(f32_gemm_ukernel_##tile##_kmajor__avx2); \
    UKERNEL_DECL(f32_gemm_ukernel_##tile##_rows__avx2); \
    UKERNEL_EP_DECL(f32_gemm_ukernel_##tile##_kmajor_ep__avx2); \
    UKERNEL_EP_DECL(f32_gemm_ukernel_##tile##_rows_ep__avx2)
UKERNEL_PAIR2(6x16);
UKERNEL_PAIR2(4x24);
UKERNEL_PAIR2(8x8);
typedef void (*pack_bt_fn)(size_t kc, size_t cols, const float *src, size_t ld, size_t nr,
                           float *dst);
typedef void (*store_t_fn)(const float *t, size_t ldt, size_t rows, size_t cols, float *c,
                           size_t ldc, float alpha, float beta, const cn_gemm_affine *f);
void f32_gemm_pack_bt__avx512(size_t kc, size_t cols, const float *src, size_t ld, size_t nr,
                              float *dst);
void f32_gemm_pack_bt__avx2(size_t kc, size_t cols, const float *src, size_t ld, size_t nr,
                            float *dst);
UKERNEL_DECL(f32_gemm_ukernel_4x8__scalar);
void f32_gemm_store_t__avx512(const float *t, size_t ldt, size_t rows, size_t cols, float *c,
                              size_t ldc, float alpha, float beta, const cn_gemm_affine *f);
void f32_gemm_store_t__avx2(const float *t, size_t ldt, size_t rows, size_t cols, float *c,
                            size_t ldc, float alpha, float beta, const cn_gemm_affine *f);

typedef void (*dot_fn)(size_t kc, const float *a, size_t lda, const float *b, size_t ldb,
                       float *c, size_t ldc, size_t mr, size_t nr, float alpha, float beta);
#define DOT_DECL(tile)                                                                        \
    void f32_gemm_dot_##tile##__avx512(size_t kc, const float *a, size_t lda, const float *b, \
                                       size_t ldb, float *c, size_t ldc, size_t mr, size_t nr,  \
                                       float alpha, float beta)
DOT_DECL(1x16);
DOT_DECL(2x8);
DOT_DECL(1x8);
void f32_gemm_dot_1x8__avx2(size_t kc, const float *a, size_t lda, const float *b, size_t ldb,
                            float *c, size_t ldc, size_t mr, size_t nr, float alpha, float beta);
void f32_gemm_dot_2x4__avx2(size_t kc, const float *a, size_t lda, const float *b, size_t ldb,
                            float *c, size_t ldc, size_t mr, size_t nr, float alpha, float beta);

typedef struct ukernel {
    ukernel_fn kmajor; /* A from packed panels */
    ukernel_fn rows;   /* A read in place from row-major storage (ta == 0), or NULL */
    ukernel_ep_fn kmajor_ep, rows_ep; /* the same with a fused epilogue, or NULL */
    int mr, nr;
    /* relative throughput on full tiles, for choosing between tile shapes, for blocks of
     * kc < SHORT_KC and of kc >= SHORT_KC: over a short k loop the fixed cost of a tile
     * (pointers, zeroing, writing C) weighs more on the tall, narrow tiles */
    float speed_short, speed;
    const char *name;
} ukernel;

enum { SHORT_KC = 96 };

/* One tile per width up to 96 columns, so that a narrow N (the output channels of a
 * convolution) is covered with little padding. Speeds measured on convolution shapes. */
#define AVX512_TILE(tile, mr, nr, speed_short, speed)                                         \
    {f32_gemm_ukernel_##tile##_kmajor__avx512, f32_gemm_ukernel_##tile##_rows__avx512,          \
     f32_gemm_ukernel_##tile##_kmajor_ep__avx512, f32_gemm_ukernel_##tile##_rows_ep__avx512, mr, \
     nr, speed_short, speed, #tile "_avx512"}
static const ukernel kernels_avx512[] = {
    AVX512_TILE(6x64, 6, 64, 0.93f, 1.00f),
    AVX512_TILE(14x32, 14, 32, 0.72f, 0.98f),
    AVX512_TILE(8x48, 8, 48, 0.90f, 0.97f),
    AVX512_TILE(12x32, 12, 32, 0.75f, 0.95f),
    AVX512_TILE(5x80, 5, 80, 0.92f, 0.95f),
    AVX512_TILE(4x96, 4, 96, 1.00f, 0.93f),
    AVX512_TILE(14x16, 14, 16, 0.70f, 0.80f),
};
/* 16 ymm registers: see gemm_avx2.c */
#define AVX2_TILE(tile, mr, nr, speed_short, speed)                                     \
    {f32_gemm_ukernel_##tile##_kmajor__avx2, f32_gemm_ukernel_##tile##_rows__avx2,        \
     f32_gemm_ukernel_##tile##_kmajor_ep__avx2, f32_gemm_ukernel_##tile##_rows_ep__avx2, mr, \
     nr, speed_short, speed, #tile "_avx2"}
static const ukernel kernels_avx2[] = {
    AVX2_TILE(6x16, 6, 16, 1.00f, 1.00f),
    AVX2_TILE(4x24, 4, 24, 1.00f, 1.00f),
    AVX2_TILE(8x8, 8, 8, 0.80f, 0.80f),
};
static const ukernel kernels_generic[] = {
    {f32_gemm_ukernel_4x8__scalar, NULL, NULL, NULL, 4, 8, 1.0f, 1.0f, "4x8_scalar"}};

typedef struct dkernel {
    dot_fn fn;
    int mr, nr;
    const char *name;
} dkernel;
/* per path: one row, two rows, and the one-row kernel of the swapped path's left-over rows */
static const dkernel dot_kernels[] = {
    {f32_gemm_dot_1x16__avx512, 1, 16, "dot1x16_avx512"},
    {f32_gemm_dot_2x8__avx512, 2, 8, "dot2x8_avx512"},
    {f32_gemm_dot_1x8__avx512, 1, 8, "dot1x8_avx512"},
};
static const dkernel dot_kernels_avx2[] = {
    {f32_gemm_dot_1x8__avx2, 1, 8, "dot1x8_avx2"},
    {f32_gemm_dot_2x4__avx2, 2, 4, "dot2x4_avx2"},
    {f32_gemm_dot_1x8__avx2, 1, 8, "dot1x8_avx2"},
};

enum { PATH_GENERIC = 0, PATH_AVX2 = 1, PATH_AVX512 = 2 };

static atomic_int chosen_path = -1;
static atomic_int forced_kernel = -1;

static int detect_path(void) {
    const cn_cpu_features *f = cn_cpu();
    if (cn_cpu_avx512() && f->fma) return PATH_AVX512;
    if (f->avx2 && f->fma) return PATH_AVX2;
    return PATH_GENERIC;
}

static int current_path(void) {
    int p = atomic_load_explicit(&chosen_path, memory_order_relaxed);
    if (p < 0) {
        p = detect_path();
        atomic_store_explicit(&chosen_path, p, memory_order_relaxed);
    }
    return p;
}

void cn_sgemm_force_path(int path) {
    const int best = detect_path();
    atomic_store_explicit(&chosen_path, path < 0 ? best : (path < best ? path : best),
                          memory_order_relaxed);
}

const char *cn_sgemm_path_name(void) {
    switch (current_path()) {
    case PATH_AVX512: return "avx512";
    case PATH_AVX2: return "avx2";
    default: return "generic";
    }
}

static const ukernel *kernel_set(int path, size_t *n) {
    if (path == PATH_AVX512) {
        *n = sizeof kernels_avx512 / sizeof kernels_avx512[0];
        return kernels_avx512;
    }
    if (path == PATH_AVX2) {
        *n = sizeof kernels_avx2 / sizeof kernels_avx2[0];
        return kernels_avx2;
    }
    *n = 1;
    return kernels_generic;
}

/* the dot-product kernels, the transposing packer and the transposed write-back exist for
 * AVX-512 and AVX2 */
static int dot_available(int path) { return path == PATH_AVX512 || path == PATH_AVX2; }
static const dkernel *dot_set(int path) { return path == PATH_AVX2 ? dot_kernels_avx2 : dot_kernels; }
static pack_bt_fn pack_bt_of(int path) {
    return path == PATH_AVX512 ? f32_gemm_pack_bt__avx512
           : path == PATH_AVX2 ? f32_gemm_pack_bt__avx2
                               : NULL;
}
static store_t_fn store_t_of(int path) {
    return path == PATH_AVX2 ? f32_gemm_store_t__avx2 : f32_gemm_store_t__avx512;
}
/* the paths whose micro-kernels and transposed write-back apply a cn_gemm_affine */
static int fuse_available(int path) { return path == PATH_AVX2 || path == PATH_AVX512; }

int cn_sgemm_kernel_count(void) {
    size_t n;
    kernel_set(current_path(), &n);
    return (int)n + dot_available(current_path());
}

const char *cn_sgemm_kernel_name(int i) {
    size_t n;
    const ukernel *set = kernel_set(current_path(), &n);
    if (i >= 0 && (size_t)i < n) return set[i].name;
    if ((size_t)i == n && dot_available(current_path()))
        return current_path() == PATH_AVX2 ? "dot_avx2" : "dot_avx512";
    return NULL;
}

void cn_sgemm_force_kernel(int i) {
    atomic_store_explicit(&forced_kernel, i, memory_order_relaxed);
}

static size_t round_up(size_t x, size_t m) { return (x + m - 1) / m * m; }
static size_t min_sz(size_t a, size_t b) { return a < b ? a : b; }
static size_t cdiv(size_t a, size_t b) { return (a + b - 1) / b; }

/* Cache blocking: a KC x NR B micro-panel stays in L1 across the MC rows, the MC x KC packed A
 * block stays in L2 across the NC columns. Threads that split M each pack the B panels they use:
 * packing them once into a shared buffer was tried and was slower (up to 1.5x at 2 threads on
 * EfficientNet shapes), as each core then reads half of B from the other core's cache, after a
 * barrier. */
enum { KC_MAX = 384, MC_TARGET = 336, NC_TARGET = 3072, L1_BYTES = 32 * 1024 };
/* AVX2 machines (Zen 3 here: 512 KB of L2 a core) get a smaller A block: 144 x 256 floats */
enum { KC_MAX_AVX2 = 256, MC_TARGET_AVX2 = 144 };

typedef struct gemm_job {
    int ta, tb;
    size_t M, N, K;
    float alpha, beta;
    const float *A, *B;
    float *C;
    size_t lda, ldb, ldc;
    const ukernel *uk;
    pack_bt_fn pack_bt; /* packs transposed B by register transposes, or NULL */
    size_t kc_blk, mc_blk, nc_blk;
    int direct_a; /* A rows are read in place by the "rows" kernel (ta == 0) */
    int direct_b; /* B rows are read in place (tb == 0), only ragged N edges are packed */
    const cn_gemm_post *post; /* applied to each finished block, or NULL */
    const cn_gemm_affine *fuse; /* post's epilogue, applied by the micro-kernels, or NULL */
} gemm_job;

static void post_block(const gemm_job *j, size_t i0, size_t i1, size_t j0, size_t j1) {
    if (j->post && i0 < i1 && j0 < j1) j->post->fn(j->post->ctx, j->C, j->ldc, i0, i1, j0, j1);
}

/* The epilogue of the tile at C[i][jc], its pointers moved there. */
static cn_gemm_affine fuse_at(const cn_gemm_affine *f, size_t i, size_t jc) {
    cn_gemm_affine g = *f;
    g.scale += jc;
    g.shift += jc;
    if (g.res) g.res += i * g.ldr + jc;
    return g;
}

/* Packs op(A)[i0:i0+mc, k0:k0+kc] into MR-row panels, each k-major (MR floats per k), zero
 * padding rows past mc so the kernel never needs a row mask on loads. */
static void pack_a(const gemm_job *j, size_t i0, size_t mc, size_t k0, size_t kc, float *dst) {
    const size_t MR = (size_t)j->uk->mr, lda = j->lda;
    for (size_t p = 0; p < mc; p += MR, dst += kc * MR) {
        const size_t rows = min_sz(MR, mc - p);
        if (j->ta) {
            const float *src = j->A + k0 * lda + i0 + p;
            for (size_t k = 0; k < kc; k++, src += lda) {
                float *d = dst + k * MR;
                for (size_t i = 0; i < rows; i++) d[i] = src[i];
                for (size_t i = rows; i < MR; i++) d[i] = 0.0f;
            }
        } else {
            for (size_t i = 0; i < rows; i++) {
                const float *src = j->A + (i0 + p + i) * lda + k0;
                for (size_t k = 0; k < kc; k++) dst[k * MR + i] = src[k];
            }
            for (size_t i = rows; i < MR; i++)
                for (size_t k = 0; k < kc; k++) dst[k * MR + i] = 0.0f;
        }
    }
}

/* Packs op(B)[k0:k0+kc, j0:j0+nc] into NR-column panels, each k-major, zero padded. */
static void pack_b(const gemm_job *j, size_t k0, size_t kc, size_t j0, size_t nc, float *dst) {
    const size_t NR = (size_t)j->uk->nr, ldb = j->ldb;
    for (size_t p = 0; p < nc; p += NR, dst += kc * NR) {
        const size_t cols = min_sz(NR, nc - p);
        if (!j->tb) {
            const float *src = j->B + k0 * ldb + j0 + p;
            for (size_t k = 0; k < kc; k++, src += ldb) {
                float *d = dst + k * NR;
                for (size_t c = 0; c < cols; c++) d[c] = src[c];
                for (size_t c = cols; c < NR; c++) d[c] = 0.0f;
            }
        } else if (j->pack_bt) {
            j->pack_bt(kc, cols, j->B + (j0 + p) * ldb + k0, ldb, NR, dst);
        } else {
            for (size_t c = 0; c < cols; c++) {
                const float *src = j->B + (j0 + p + c) * ldb + k0;
                for (size_t k = 0; k < kc; k++) dst[k * NR + c] = src[k];
            }
            for (size_t c = cols; c < NR; c++)
                for (size_t k = 0; k < kc; k++) dst[k * NR + c] = 0.0f;
        }
    }
}

/* Prefetches into L2 part `part` of `parts` of the source of the B panel op(B)[k0:k0+kc,
 * j0:j0+cols]: a panel is packed from far memory (the weights of a layer are used once per call),
 * in strided runs that the hardware prefetcher follows poorly. Issued while the previous panel
 * is being multiplied, it makes packing a copy from L2. */
static void prefetch_b(const gemm_job *j, size_t k0, size_t kc, size_t j0, size_t cols,
                       size_t part, size_t parts) {
    const size_t lines = j->tb ? cdiv(kc, 16) : cdiv(cols, 16);
    const size_t runs = j->tb ? cols : kc;
    const size_t total = runs * lines, from = total * part / parts, to = total * (part + 1) / parts;
    for (size_t q = from; q < to; q++) {
        const size_t r = q / lines, l = q % lines;
        const float *p = j->tb ? j->B + (j0 + r) * j->ldb + k0 + 16 * l
                               : j->B + (k0 + r) * j->ldb + j0 + 16 * l;
        __builtin_prefetch(p, 0, 2);
    }
}

/* Computes the C block [m0,m1) x [n0,n1) with this thread's packing buffers. */
static void run_block(const gemm_job *j, size_t m0, size_t m1, size_t n0, size_t n1, float *abuf,
                      float *bbuf) {
    const size_t MR = (size_t)j->uk->mr, NR = (size_t)j->uk->nr;
    const ukernel_fn fn = j->direct_a ? j->uk->rows : j->uk->kmajor;
    const ukernel_ep_fn fn_ep = j->direct_a ? j->uk->rows_ep : j->uk->kmajor_ep;
    for (size_t jc = n0; jc < n1; jc += j->nc_blk) {
        const size_t nc = min_sz(j->nc_blk, n1 - jc);
        const size_t n_full = j->direct_b ? nc / NR * NR : 0;
        for (size_t pc = 0; pc < j->K; pc += j->kc_blk) {
            const size_t kc = min_sz(j->kc_blk, j->K - pc);
            const float beta = pc == 0 ? j->beta : 1.0f;
            /* When the whole B panel fits in L1, sweeping a row panel across all of N
             * writes C and reads A sequentially, which is what limits small-K or small-N
             * shapes; otherwise keep a B micro-panel in L1 across the rows (BLIS order), and
             * pack each micro-panel just before its first use, while it is still in L1. */
            const int rows_outer = kc * round_up(nc, NR) * sizeof(float) <= L1_BYTES;
            const int own_b = n_full < nc;
            if (own_b && rows_outer) pack_b(j, pc, kc, jc + n_full, nc - n_full, bbuf);
            const size_t n_outer = rows_outer ? 1 : cdiv(nc, NR);
            const size_t n_inner = rows_outer ? cdiv(nc, NR) : 1;
            for (size_t ic = m0; ic < m1; ic += j->mc_blk) {
                const size_t mc = min_sz(j->mc_blk, m1 - ic);
                const float *ablk = abuf;
                size_t as = MR, a_row = kc;
                if (j->direct_a) {
                    ablk = j->A + ic * j->lda + pc;
                    as = a_row = j->lda;
                } else {
                    pack_a(j, ic, mc, pc, kc, abuf);
                }
                for (size_t jo = 0; jo < n_outer; jo++) {
                    if (own_b && !rows_outer && ic == m0 && jo * NR >= n_full) {
                        const size_t jr = jo * NR;
                        pack_b(j, pc, kc, jc + jr, min_sz(NR, nc - jr),
                               bbuf + (jr - n_full) / NR * kc * NR);
                    }
                    /* the next panel that this thread will pack, fetched during this one */
                    const int fetch_next = own_b && !rows_outer && ic == m0 && jo + 1 < n_outer &&
                                           (jo + 1) * NR >= n_full;
                    const size_t tiles = cdiv(mc, MR);
                    for (size_t ir = 0; ir < mc; ir += MR) {
                        const float *ap = ablk + ir * a_row;
                        if (fetch_next)
                            prefetch_b(j, pc, kc, jc + (jo + 1) * NR, min_sz(NR, nc - (jo + 1) * NR),
                                       ir / MR, tiles);
                        for (size_t ji = 0; ji < n_inner; ji++) {
                            const size_t jr = (jo + ji) * NR;
                            const size_t nr = min_sz(NR, nc - jr);
                            const float *bp;
                            size_t bs;
                            if (jr < n_full) {
                                bp = j->B + pc * j->ldb + jc + jr;
                                bs = j->ldb;
                            } else {
                                bp = bbuf + (jr - n_full) / NR * kc * NR;
                                bs = NR;
                            }
                            float *cp = j->C + (ic + ir) * j->ldc + jc + jr;
                            if (j->fuse && pc + kc >= j->K) {
                                const cn_gemm_affine f = fuse_at(j->fuse, ic + ir, jc + jr);
                                fn_ep(kc, ap, as, bp, bs, cp, j->ldc, min_sz(MR, mc - ir), nr,
                                      j->alpha, beta, &f);
                            } else {
                                fn(kc, ap, as, bp, bs, cp, j->ldc, min_sz(MR, mc - ir), nr,
                                   j->alpha, beta);
                            }
                        }
                    }
                    /* this row block's columns of this pass, while they are in L1/L2 */
                    if (pc + kc >= j->K && !j->fuse)
                        post_block(j, ic, ic + mc, jc + jo * NR,
                                   jc + min_sz(nc, (jo + n_inner) * NR));
                }
            }
        }
    }
}

/* The tile with the least padded work for blocks of depth kc; one_panel: only tiles at least N
 * wide, if any (the swapped path re-reads the weights once per column panel). */
static const ukernel *choose_kernel(int path, size_t M, size_t N, size_t kc, int one_panel) {
    size_t n;
    const ukernel *set = kernel_set(path, &n);
    const int forced = atomic_load_explicit(&forced_kernel, memory_order_relaxed);
    if (forced >= 0 && (size_t)forced < n) return &set[forced];
    const ukernel *best = NULL;
    double best_cost = 0.0;
    for (size_t i = 0; i < n; i++) {
        if (one_panel && (size_t)set[i].nr < N) continue;
        const double cost = (double)round_up(M, (size_t)set[i].mr) *
                            (double)round_up(N, (size_t)set[i].nr) /
                            (kc < SHORT_KC ? set[i].speed_short : set[i].speed);
        if (!best || cost < best_cost) {
            best = &set[i];
            best_cost = cost;
        }
    }
    return best ? best : choose_kernel(path, M, N, kc, 0);
}

/* Picks the tm x tn thread grid minimising the slowest thread's padded tile work plus the
 * packing it does (wa, wb: relative cost of packing one row of A, one column of B, per k). */
static void choose_grid(size_t tiles_m, size_t tiles_n, size_t MR, size_t NR, int T, double wa,
                        double wb, int *tm_out, int *tn_out) {
    double best = -1.0;
    *tm_out = 1;
    *tn_out = 1;
    for (int tm = 1; tm <= T; tm++) {
        if (T % tm) continue;
        const int tn = T / tm;
        if ((size_t)tm > tiles_m || (size_t)tn > tiles_n) continue;
        const double rows = (double)cdiv(tiles_m, (size_t)tm) * MR;
        const double cols = (double)cdiv(tiles_n, (size_t)tn) * NR;
        const double cost = rows * cols + wa * rows + wb * cols;
        if (best < 0.0 || cost < best) {
            best = cost;
            *tm_out = tm;
            *tn_out = tn;
        }
    }
}

/* The threads for a problem of M*N*K multiply-adds over tiles_m x tiles_n tiles: one below the
 * size where starting a team costs more than it saves, or inside a parallel region. */
static int team_size(size_t M, size_t N, size_t K, size_t tiles) {
    if (omp_in_parallel() || (double)M * N * K < (double)(1 << 20)) return 1;
    int T = omp_get_max_threads();
    if ((size_t)T > tiles) T = (int)tiles;
    return T < 1 ? 1 : T;
}

static void scale_c(size_t M, size_t N, float beta, float *C, size_t ldc) {
    for (size_t i = 0; i < M; i++) {
        float *c = C + i * ldc;
        if (beta == 0.0f)
            memset(c, 0, N * sizeof *c);
        else
            for (size_t jj = 0; jj < N; jj++) c[jj] *= beta;
    }
}

/* The packing buffers of the calling thread, kept between calls: allocating them per call costs
 * an mmap and fresh page faults every time for the large ones. A thread-specific key frees them
 * when the thread ends (OpenMP retires workers when a team shrinks). */
typedef struct scratch_buf {
    float *buf;
    size_t cap;
} scratch_buf;

static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;
static int scratch_key_ok;

static void scratch_free(void *p) {
    scratch_buf *s = p;
    free(s->buf);
    free(s);
}

static void scratch_init(void) { scratch_key_ok = pthread_key_create(&scratch_key, scratch_free) == 0; }

static float *scratch(size_t floats) {
    pthread_once(&scratch_once, scratch_init);
    if (!scratch_key_ok) return NULL;
    scratch_buf *s = pthread_getspecific(scratch_key);
    if (!s) {
        s = calloc(1, sizeof *s);
        if (!s || pthread_setspecific(scratch_key, s) != 0) {
            free(s);
            return NULL;
        }
    }
    if (floats <= s->cap) return s->buf;
    free(s->buf);
    size_t cap = floats + floats / 4;
    s->buf = aligned_alloc(64, round_up(cap * sizeof(float), 64));
    s->cap = s->buf ? cap : 0;
    return s->buf;
}

/* ---- small M, transposed B: dot products of rows read in place ---- */

/* One to three rows with B^T (a squeeze-and-excitation convolution, a linear layer on one
 * sample): B is used by so few rows that packing it costs more than the multiply. Wider tiles of
 * dot products were tried for M up to 64 and lose to the swapped path: rows of A and B are rarely
 * 64-byte aligned, so most of their loads split cache lines. */
static int use_dot(int path, int ta, int tb, size_t M) {
    if (!dot_available(path) || ta || !tb) return 0;
    const int forced = atomic_load_explicit(&forced_kernel, memory_order_relaxed);
    if (forced >= 0) return forced == cn_sgemm_kernel_count() - 1;
    return M <= 3;
}

static const dkernel *choose_dot(int path, size_t M) {
    return M == 1 ? &dot_set(path)[0] : &dot_set(path)[1];
}

/* K is cut into chunks (a function of K only) so that the NR rows of B of a chunk stay in L1
 * while every row group of A (a small M x K, in L2) passes over them; the chunks add up in C. */
enum { DOT_KC = 512 };

static void dot_block(const gemm_job *j, const dkernel *dk, size_t m0, size_t m1, size_t n0,
                      size_t n1) {
    const size_t MR = (size_t)dk->mr, NR = (size_t)dk->nr;
    const size_t nkb = cdiv(j->K, DOT_KC), kcb = round_up(cdiv(j->K, nkb), 16);
    for (size_t jb = n0; jb < n1; jb += NR)
        for (size_t pc = 0; pc < j->K; pc += kcb)
            for (size_t ib = m0; ib < m1; ib += MR)
                dk->fn(min_sz(kcb, j->K - pc), j->A + ib * j->lda + pc, j->lda,
                       j->B + jb * j->ldb + pc, j->ldb, j->C + ib * j->ldc + jb, j->ldc,
                       min_sz(MR, m1 - ib), min_sz(NR, n1 - jb), j->alpha,
                       pc == 0 ? j->beta : 1.0f);
}

static void sgemm_dot(const gemm_job *j) {
    const dkernel *dk = choose_dot(current_path(), j->M);
    const size_t MR = (size_t)dk->mr, NR = (size_t)dk->nr;
    const size_t tiles_m = cdiv(j->M, MR), tiles_n = cdiv(j->N, NR);
    int T = team_size(j->M, j->N, j->K, tiles_m * tiles_n);
    /* a GEMV is bound by reading B: from 1 MB of it (a classifier's weights: resnet18's 2 MB
     * read at 15 GB/s by one core), the cores' bandwidths add up */
    if (T == 1 && !omp_in_parallel() && (double)j->N * j->K * sizeof(float) >= (double)(1 << 20)) {
        T = omp_get_max_threads();
        if ((size_t)T > tiles_m * tiles_n) T = (int)(tiles_m * tiles_n);
        if (T < 1) T = 1;
    }
    int tm = 1, tn = 1;
    if (T > 1) choose_grid(tiles_m, tiles_n, MR, NR, T, 0.0, 0.0, &tm, &tn);
    T = tm * tn;
    if (T == 1) {
        /* no parallel region at all: entering one costs more than a small GEMV */
        dot_block(j, dk, 0, j->M, 0, j->N);
        post_block(j, 0, j->M, 0, j->N);
        return;
    }
#pragma omp parallel num_threads(T)
    /* a team smaller than asked for (thread limits) still covers every block */
    for (int t = omp_get_thread_num(); t < T; t += omp_get_num_threads()) {
        const size_t ti = (size_t)(t / tn), tj = (size_t)(t % tn);
        const size_t m0 = min_sz(tiles_m * ti / tm * MR, j->M);
        const size_t m1 = min_sz(tiles_m * (ti + 1) / tm * MR, j->M);
        const size_t n0 = min_sz(tiles_n * tj / tn * NR, j->N);
        const size_t n1 = min_sz(tiles_n * (tj + 1) / tn * NR, j->N);
        if (m0 < m1 && n0 < n1) {
            dot_block(j, dk, m0, m1, n0, n1);
            post_block(j, m0, m1, n0, n1);
        }
    }
}

/* ---- small M, transposed B: C^T = B * A^T ----
 * With few rows of C (pixels), packing B (N x K weights) to multiply it by M rows costs about a
 * third of the multiply at M = 49. Swapping the operands lets the "rows" micro-kernels read the
 * weight rows in place (broadcasts) against a packed A^T, which is small (M x K), with the pixels
 * along the vector lanes; each tile is computed over all of K into a buffer and written back
 * transposed. */
enum { SWAP_MAX_M = 64, SWAP_MAX_PACK = 1 << 18 };
/* Up to 96 pixels (and the GEMV's 1-3 left over) fit one panel of the widest AVX-512 tile (4x96),
 * so the weights are still read once; that pays from K = 1024 on (ResNet-50's layer4 1x1
 * 2048 -> 512 at batch 2, M = 98: 64-68% of the FMA peak packed, 74-78% swapped), while shorter
 * rows lose to the packed path (512 -> 2048: 78-85% packed, 65-69% swapped; bench_gemm). */
enum { SWAP_WIDE_MAX_M = 99, SWAP_WIDE_MIN_K = 1024 };

static int use_swapped(int path, int ta, int tb, size_t M, size_t K) {
    const size_t max_m =
        path == PATH_AVX512 && K >= SWAP_WIDE_MIN_K ? SWAP_WIDE_MAX_M : SWAP_MAX_M;
    if ((path != PATH_AVX512 && path != PATH_AVX2) || ta || !tb || M > max_m ||
        K * round_up(M, 16) > SWAP_MAX_PACK)
        return 0;
    const int forced = atomic_load_explicit(&forced_kernel, memory_order_relaxed);
    /* below K = 32 the transposed write-back costs more than packing B saves */
    return forced != cn_sgemm_kernel_count() - 1 && M >= 4 && K >= 32;
}

static void dot_block(const gemm_job *j, const dkernel *dk, size_t m0, size_t m1, size_t n0,
                      size_t n1);

/* Thread t of T: packs A^T into its own apk, then computes its channels. Each thread packs all
 * of A^T (it is small): sharing one copy costs a barrier and makes each core read half of it
 * from the other core's cache, which is slower. */
static void swapped_run(const gemm_job *j, const ukernel *uk, size_t M, float *apk, float *tmp,
                        int t, int T) {
    const int path = current_path();
    const pack_bt_fn pack_bt = pack_bt_of(path);
    const store_t_fn store_t = store_t_of(path);
    const size_t MR = (size_t)uk->mr, NR = (size_t)uk->nr, K = j->K;
    const size_t panels = cdiv(M, NR), tiles_n = cdiv(j->N, MR);
    /* A^T panels: panel p holds pixels p*NR.., k-major, zero padded past M */
    for (size_t p = 0; p < panels; p++)
        pack_bt(K, min_sz(NR, M - p * NR), j->A + p * NR * j->lda, j->lda, NR, apk + p * K * NR);
    const size_t n0 = min_sz(tiles_n * (size_t)t / (size_t)T * MR, j->N);
    const size_t n1 = min_sz(tiles_n * (size_t)(t + 1) / (size_t)T * MR, j->N);
    for (size_t p = 0; p < panels; p++) {
        const size_t cols = min_sz(NR, M - p * NR);
        for (size_t jr = n0; jr < n1; jr += MR) {
            const size_t rows = min_sz(MR, n1 - jr);
            const float *brow = j->B + jr * j->ldb;
            uk->rows(K, brow, j->ldb, apk + p * K * NR, NR, tmp, NR, rows, cols, 1.0f, 0.0f);
            const cn_gemm_affine f = j->fuse ? fuse_at(j->fuse, p * NR, jr) : (cn_gemm_affine){0};
            store_t(tmp, NR, rows, cols, j->C + p * NR * j->ldc + jr, j->ldc, j->alpha, j->beta,
                    j->fuse ? &f : NULL);
            /* the left-over rows against the same weight rows, while these are in cache */
            if (M < j->M && p == panels - 1)
                dot_block(j, &dot_set(path)[j->M - M == 1 ? 2 : 1], M, j->M, jr, jr + rows);
        }
    }
    /* the rows the write-back did not finish: all of them, or the GEMV's left-over ones */
    post_block(j, j->fuse ? M : 0, j->M, n0, n1);
}

static void sgemm_swapped(const gemm_job *j) {
    /* A few rows past a multiple of 16 (M = 49 = 3*16 + 1) would pad the pixel lanes by up to a
     * third; those rows go to the GEMV kernel instead. */
    const size_t rem = j->M % 16, M = rem && rem <= 3 && j->M > 16 ? j->M - rem : j->M;
    /* the "M" of the micro-kernel is N (channels), its "N" is M (pixels) */
    const ukernel *uk = choose_kernel(current_path(), j->N, M, j->K, 1);
    const size_t MR = (size_t)uk->mr, NR = (size_t)uk->nr, K = j->K;
    const size_t panels = cdiv(M, NR), tiles_n = cdiv(j->N, MR);
    int T = team_size(j->M, j->N, K, tiles_n);
    const size_t per = round_up(K * panels * NR, 16) + round_up(MR * NR, 16);
    float *buf = scratch((size_t)T * per);
    if (!buf) {
        cn_sgemm_ref(0, 1, (int)j->M, (int)j->N, (int)K, j->alpha, j->A, (int)j->lda, j->B,
                     (int)j->ldb, j->beta, j->C, (int)j->ldc);
        post_block(j, 0, j->M, 0, j->N);
        return;
    }
    if (T == 1) {
        swapped_run(j, uk, M, buf, buf + per - round_up(MR * NR, 16), 0, 1);
        return;
    }
#pragma omp parallel num_threads(T)
    {
        const int t = omp_get_thread_num();
        float *mine = buf + (size_t)t * per;
        swapped_run(j, uk, M, mine, mine + per - round_up(MR * NR, 16), t, omp_get_num_threads());
    }
}

void cn_sgemm(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
              const float *B, int ldb, float beta, float *C, int ldc) {
    cn_sgemm_post(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, NULL);
}

void cn_sgemm_post(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                   const float *B, int ldb, float beta, float *C, int ldc,
                   const cn_gemm_post *post) {
    if (M <= 0 || N <= 0) return;
    gemm_job j = {.ta = ta, .tb = tb, .M = (size_t)M, .N = (size_t)N, .K = (size_t)K,
                  .alpha = alpha, .beta = beta, .A = A, .B = B, .C = C,
                  .lda = (size_t)lda, .ldb = (size_t)ldb, .ldc = (size_t)ldc, .post = post};
    if (K <= 0 || alpha == 0.0f) {
        scale_c((size_t)M, (size_t)N, beta, C, (size_t)ldc);
        post_block(&j, 0, j.M, 0, j.N);
        return;
    }
    const int path = current_path();
    if (use_dot(path, ta, tb, j.M)) {
        sgemm_dot(&j);
        return;
    }
    if (post && post->affine && fuse_available(path)) j.fuse = post->affine;
    if (use_swapped(path, ta, tb, j.M, j.K)) {
        sgemm_swapped(&j);
        return;
    }
    /* Equal KC blocks (a function of K only) avoid a thin, inefficient last block. */
    const size_t nkb = cdiv(j.K, path == PATH_AVX2 ? KC_MAX_AVX2 : KC_MAX);
    j.kc_blk = round_up(cdiv(j.K, nkb), 4);
    j.uk = choose_kernel(path, j.M, j.N, j.kc_blk, 0);
    const size_t MR = (size_t)j.uk->mr, NR = (size_t)j.uk->nr;
    j.pack_bt = NR % (path == PATH_AVX512 ? 16 : 8) == 0 ? pack_bt_of(path) : NULL;
    j.mc_blk = (path == PATH_AVX2 ? MC_TARGET_AVX2 : MC_TARGET) / MR * MR;
    j.nc_blk = round_up(NC_TARGET, NR);

    const size_t tiles_m = cdiv(j.M, MR), tiles_n = cdiv(j.N, NR);
    /* Streaming B in place saves a copy of B when it is reused by few row panels. */
    j.direct_b = !tb && tiles_m <= 8;
    j.direct_a = !ta && j.uk->rows != NULL;

    int T = team_size(j.M, j.N, j.K, tiles_m * tiles_n);
    int tm = 1, tn = 1;
    if (T > 1)
        choose_grid(tiles_m, tiles_n, MR, NR, T, j.direct_a ? 0.0 : 10.0, j.direct_b ? 0.0 : 10.0,
                    &tm, &tn);
    T = tm * tn;

    const size_t rows_t = cdiv(tiles_m, (size_t)tm) * MR, cols_t = cdiv(tiles_n, (size_t)tn) * NR;
    const size_t a_sz = j.direct_a ? 0 : round_up(min_sz(j.mc_blk, rows_t) * j.kc_blk, 16);
    const size_t b_sz = round_up(min_sz(j.nc_blk, cols_t) * j.kc_blk, 16);
    float *buf = scratch((size_t)T * (a_sz + b_sz) + 16);
    if (!buf) {
        cn_sgemm_ref(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        post_block(&j, 0, j.M, 0, j.N);
        return;
    }

    if (T == 1) {
        run_block(&j, 0, j.M, 0, j.N, buf, buf + a_sz);
        return;
    }
#pragma omp parallel num_threads(T)
    /* a team smaller than asked for (thread limits) still covers every block */
    for (int t = omp_get_thread_num(); t < T; t += omp_get_num_threads()) {
        const size_t ti = (size_t)(t / tn), tj = (size_t)(t % tn);
        const size_t m0 = min_sz(tiles_m * ti / tm * MR, j.M);
        const size_t m1 = min_sz(tiles_m * (ti + 1) / tm * MR, j.M);
        const size_t n0 = min_sz(tiles_n * tj / tn * NR, j.N);
        const size_t n1 = min_sz(tiles_n * (tj + 1) / tn * NR, j.N);
        float *abuf = buf + (size_t)t * (a_sz + b_sz);
        if (m0 < m1 && n0 < n1) run_block(&j, m0, m1, n0, n1, abuf, abuf + a_sz);
    }
}
