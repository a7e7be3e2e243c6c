/* Packed SGEMM driver: Goto/BLIS-style blocking (NC columns, KC depth, MC rows), packing of A
 * (and of B unless it can be streamed as is), register-tiled micro-kernels chosen once per process
 * from the CPU features, and OpenMP threading over a 2-D grid of C blocks.
 *
 * Determinism: every element of C is produced by one micro-kernel call per KC block, summing k in
 * increasing order, with the same KC partition whatever the thread count; threads only decide
 * which C elements they own. Hence the bits never depend on the number of threads. */
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

#define UKERNEL_DECL(name)                                                                \
    void name(size_t kc, const float *a, size_t as, const float *b, size_t bs, float *c, \
              size_t ldc, size_t mr, size_t nr, float alpha, float beta)
#define UKERNEL_PAIR(tile) \
    UKERNEL_DECL(f32_gemm_ukernel_##tile##_kmajor__avx512); \
    UKERNEL_DECL(f32_gemm_ukernel_##tile##_rows__avx512)
UKERNEL_PAIR(12x32);
UKERNEL_PAIR(14x32);
UKERNEL_PAIR(8x48);
UKERNEL_PAIR(6x64);
UKERNEL_PAIR(28x16);
UKERNEL_PAIR(14x16);
UKERNEL_DECL(f32_gemm_ukernel_6x16__avx2);
void f32_gemm_pack_bt__avx512(size_t kc, size_t cols, const float *src, size_t ld, size_t nr,
                              float *dst);
UKERNEL_DECL(f32_gemm_ukernel_4x8__scalar);

typedef struct ukernel {
    ukernel_fn kmajor; /* A from packed panels */
    ukernel_fn rows;   /* A read in place from row-major storage (ta == 0), or NULL */
    int mr, nr;
    float speed; /* relative throughput on full tiles, for choosing between tile shapes */
} ukernel;

#define AVX512_TILE(tile, mr, nr, speed)                                                  \
    {f32_gemm_ukernel_##tile##_kmajor__avx512, f32_gemm_ukernel_##tile##_rows__avx512, mr, \
     nr, speed}
static const ukernel kernels_avx512[] = {
    AVX512_TILE(12x32, 12, 32, 1.00f),
    AVX512_TILE(8x48, 8, 48, 1.00f),
    AVX512_TILE(6x64, 6, 64, 0.98f),
    AVX512_TILE(14x16, 14, 16, 0.95f),
};
static const ukernel kernels_avx2[] = {{f32_gemm_ukernel_6x16__avx2, NULL, 6, 16, 1.0f}};
static const ukernel kernels_generic[] = {{f32_gemm_ukernel_4x8__scalar, NULL, 4, 8, 1.0f}};

enum { PATH_GENERIC = 0, PATH_AVX2 = 1, PATH_AVX512 = 2 };

static atomic_int chosen_path = -1;

static int detect_path(void) {
    const cn_cpu_features *f = cn_cpu();
    if (f->avx512f && f->avx512vl && f->avx512bw && f->fma) return PATH_AVX512;
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

static size_t round_up(size_t x, size_t m) { return (x + m - 1) / m * m; }
static size_t min_sz(size_t a, size_t b) { return a < b ? a : b; }
static size_t cdiv(size_t a, size_t b) { return (a + b - 1) / b; }

/* Cache blocking: a KC x NR B micro-panel stays in L1 across the MC rows, the MC x KC packed A
 * block stays in L2 across the NC columns. */
enum { KC_MAX = 384, MC_TARGET = 336, NC_TARGET = 3072, L1_BYTES = 32 * 1024 };

typedef struct gemm_job {
    int ta, tb;
    size_t M, N, K;
    float alpha, beta;
    const float *A, *B;
    float *C;
    size_t lda, ldb, ldc;
    const ukernel *uk;
    int fast_bt; /* transposed B is packed with the AVX-512 transposer */
    size_t kc_blk, mc_blk, nc_blk;
    int direct_a; /* A rows are read in place by the "rows" kernel (ta == 0) */
    int direct_b; /* B rows are read in place (tb == 0), only ragged N edges are packed */
} gemm_job;

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
        } else if (j->fast_bt) {
            f32_gemm_pack_bt__avx512(kc, cols, j->B + (j0 + p) * ldb + k0, ldb, NR, dst);
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

/* Computes the C block [m0,m1) x [n0,n1) with this thread's packing buffers. */
static void run_block(const gemm_job *j, size_t m0, size_t m1, size_t n0, size_t n1, float *abuf,
                      float *bbuf) {
    const size_t MR = (size_t)j->uk->mr, NR = (size_t)j->uk->nr;
    const ukernel_fn fn = j->direct_a ? j->uk->rows : j->uk->kmajor;
    for (size_t jc = n0; jc < n1; jc += j->nc_blk) {
        const size_t nc = min_sz(j->nc_blk, n1 - jc);
        const size_t n_full = j->direct_b ? nc / NR * NR : 0;
        for (size_t pc = 0; pc < j->K; pc += j->kc_blk) {
            const size_t kc = min_sz(j->kc_blk, j->K - pc);
            const float beta = pc == 0 ? j->beta : 1.0f;
            if (n_full < nc) pack_b(j, pc, kc, jc + n_full, nc - n_full, bbuf);
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
                /* When the whole B panel fits in L1, sweeping a row panel across all of N
                 * writes C and reads A sequentially, which is what limits small-K or small-N
                 * shapes; otherwise keep a B micro-panel in L1 across the rows (BLIS order). */
                const int rows_outer = kc * round_up(nc, NR) * sizeof(float) <= L1_BYTES;
                const size_t n_outer = rows_outer ? 1 : cdiv(nc, NR);
                const size_t n_inner = rows_outer ? cdiv(nc, NR) : 1;
                for (size_t jo = 0; jo < n_outer; jo++) {
                    for (size_t ir = 0; ir < mc; ir += MR) {
                        const float *ap = ablk + ir * a_row;
                        if (j->direct_a && ir + MR < mc) {
                            /* A rows come from far memory in short runs that the hardware
                             * prefetcher misses; fetch the next row panel while this one runs. */
                            for (size_t i = 0; i < MR; i++)
                                for (size_t k = 0; k < kc; k += 16)
                                    __builtin_prefetch(ap + (MR + i) * a_row + k, 0, 3);
                        }
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
                            fn(kc, ap, as, bp, bs, j->C + (ic + ir) * j->ldc + jc + jr, j->ldc,
                               min_sz(MR, mc - ir), nr, j->alpha, beta);
                        }
                    }
                }
            }
        }
    }
}

static const ukernel *choose_kernel(int path, size_t M, size_t N) {
    const ukernel *set;
    size_t n;
    if (path == PATH_AVX512) {
        set = kernels_avx512;
        n = sizeof kernels_avx512 / sizeof kernels_avx512[0];
    } else if (path == PATH_AVX2) {
        set = kernels_avx2;
        n = 1;
    } else {
        set = kernels_generic;
        n = 1;
    }
    const ukernel *best = set;
    double best_cost = 0.0;
    for (size_t i = 0; i < n; i++) {
        const double cost = (double)round_up(M, (size_t)set[i].mr) *
                            (double)round_up(N, (size_t)set[i].nr) / set[i].speed;
        if (i == 0 || cost < best_cost) {
            best = &set[i];
            best_cost = cost;
        }
    }
    return best;
}

/* Picks the tm x tn thread grid minimising the slowest thread's padded tile work plus the
 * packing it repeats (each thread packs its own rows of A and columns of B). */
static void choose_grid(size_t tiles_m, size_t tiles_n, size_t MR, size_t NR, int T, int *tm_out,
                        int *tn_out) {
    double best = -1.0;
    *tm_out = 1;
    *tn_out = 1;
    for (int tm = 1; tm <= T; tm++) {
        if (T % tm) continue;
        const int tn = T / tm;
        if ((size_t)tm > tiles_m || (size_t)tn > tiles_n) continue;
        const double rows = (double)cdiv(tiles_m, (size_t)tm) * MR;
        const double cols = (double)cdiv(tiles_n, (size_t)tn) * NR;
        const double cost = rows * cols + 8.0 * (rows + cols);
        if (best < 0.0 || cost < best) {
            best = cost;
            *tm_out = tm;
            *tn_out = tn;
        }
    }
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

void cn_sgemm(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
              const float *B, int ldb, float beta, float *C, int ldc) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0 || alpha == 0.0f) {
        scale_c((size_t)M, (size_t)N, beta, C, (size_t)ldc);
        return;
    }
    gemm_job j = {.ta = ta, .tb = tb, .M = (size_t)M, .N = (size_t)N, .K = (size_t)K,
                  .alpha = alpha, .beta = beta, .A = A, .B = B, .C = C,
                  .lda = (size_t)lda, .ldb = (size_t)ldb, .ldc = (size_t)ldc};
    const int path = current_path();
    j.uk = choose_kernel(path, j.M, j.N);
    j.fast_bt = path == PATH_AVX512 && j.uk->nr % 16 == 0;
    const size_t MR = (size_t)j.uk->mr, NR = (size_t)j.uk->nr;

    /* Equal KC blocks (a function of K only) avoid a thin, inefficient last block. */
    const size_t nkb = cdiv(j.K, KC_MAX);
    j.kc_blk = round_up(cdiv(j.K, nkb), 4);
    j.mc_blk = MC_TARGET / MR * MR;
    j.nc_blk = round_up(NC_TARGET, NR);

    const size_t tiles_m = cdiv(j.M, MR), tiles_n = cdiv(j.N, NR);
    /* Streaming B in place saves a copy of B when it is reused by few row panels. */
    j.direct_b = !tb && tiles_m <= 8;
    j.direct_a = !ta && j.uk->rows != NULL;

    int T = 1;
    if (!omp_in_parallel() && (double)j.M * j.N * j.K >= (double)(1 << 20)) {
        T = omp_get_max_threads();
        if ((size_t)T > tiles_m * tiles_n) T = (int)(tiles_m * tiles_n);
    }
    int tm = 1, tn = 1;
    if (T > 1) choose_grid(tiles_m, tiles_n, MR, NR, T, &tm, &tn);
    T = tm * tn;

    const size_t rows_t = cdiv(tiles_m, (size_t)tm) * MR, cols_t = cdiv(tiles_n, (size_t)tn) * NR;
    const size_t a_sz = round_up(min_sz(j.mc_blk, rows_t) * j.kc_blk, 16);
    const size_t b_sz = round_up(min_sz(j.nc_blk, cols_t) * j.kc_blk, 16);
    float *buf = scratch((size_t)T * (a_sz + b_sz));
    if (!buf) {
        cn_sgemm_ref(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }

#pragma omp parallel num_threads(T) if (T > 1)
    {
        const int t = T > 1 ? omp_get_thread_num() : 0;
        const size_t ti = (size_t)(t / tn), tj = (size_t)(t % tn);
        const size_t m0 = min_sz(tiles_m * ti / tm * MR, j.M);
        const size_t m1 = min_sz(tiles_m * (ti + 1) / tm * MR, j.M);
        const size_t n0 = min_sz(tiles_n * tj / tn * NR, j.N);
        const size_t n1 = min_sz(tiles_n * (tj + 1) / tn * NR, j.N);
        float *abuf = buf + (size_t)t * (a_sz + b_sz);
        if (m0 < m1 && n0 < n1) run_block(&j, m0, m1, n0, n1, abuf, abuf + a_sz);
    }
}
