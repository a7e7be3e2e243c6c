/* Single-precision GEMM used by convolution (im2col) and fully connected layers. */
#ifndef CN_KERNELS_GEMM_H
#define CN_KERNELS_GEMM_H
#include <stddef.h>

/* C[M,N] = alpha * op(A)[M,K] * op(B)[K,N] + beta * C.
 * op(A)[i][k] = ta ? A[k*lda + i] : A[i*lda + k];  op(B)[k][j] = tb ? B[j*ldb + k] : B[k*ldb + j].
 * beta == 0 means C is write-only (never read). Threads with OpenMP when called outside a parallel
 * region and the problem is big enough; results are bit-identical for any thread count (split only
 * over M and N, never over K). */
void cn_sgemm(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
              const float *B, int ldb, float beta, float *C, int ldc);
/* A function applied to each finished block of C, by the thread that computed it, while the
 * block is still in its cache: rows [i0, i1), columns [j0, j1) of C (C and ldc as passed to
 * cn_sgemm_post). Every element of C is passed exactly once, after its final value is written
 * (or not at all, when the kernels applied post->affine to it: see below).
 * Used for fused epilogues (bias, BatchNorm, residual, activation) of convolutions.
 *
 * What a post function computes, when it is this common epilogue: for C element (i, j),
 * y = C[i][j] * scale[j] + shift[j] (+ res[i * ldr + j] when res is not NULL), rounded after
 * each operation, then the activation act: CN_GEMM_ACT_RELU y < 0 ? 0 : y, CN_GEMM_ACT_SILU
 * cn_silu_n's. A kernel path that can apply it in registers as it writes a tile does so (the
 * same bits as the scalar ReLU and as cn_silu_n on that path's CPU level), and then does not
 * call fn for those elements. */
enum { CN_GEMM_ACT_NONE = 0, CN_GEMM_ACT_RELU = 1, CN_GEMM_ACT_SILU = 2 };
typedef struct cn_gemm_affine {
    const float *scale, *shift;
    const float *res;
    size_t ldr;
    int act;
} cn_gemm_affine;
typedef struct cn_gemm_post {
    void (*fn)(void *ctx, float *C, size_t ldc, size_t i0, size_t i1, size_t j0, size_t j1);
    void *ctx;
    const cn_gemm_affine *affine; /* what fn computes, when it is that epilogue; or NULL */
} cn_gemm_post;
/* cn_sgemm, then post->fn over every block of C (post may be NULL). */
void cn_sgemm_post(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                   const float *B, int ldb, float beta, float *C, int ldc,
                   const cn_gemm_post *post);
void cn_sgemm_ref(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                  const float *B, int ldb, float beta, float *C, int ldc);
const char *cn_sgemm_path_name(void); /* "avx512", "avx2" or "generic" */

/* For tests and benchmarks only: use kernel path 0 = generic, 1 = avx2, 2 = avx512 from now on
 * (capped at what the CPU supports; a negative value goes back to automatic selection). Not
 * thread-safe against concurrent cn_sgemm calls. */
void cn_sgemm_force_path(int path);

/* For tests and benchmarks only: the kernels of the current path, by index (the micro-kernel
 * tiles of the packed algorithm, then, on AVX-512, "dot_avx512": the dot-product algorithm for
 * ta == 0, tb == 1); cn_sgemm_force_kernel(i) uses kernel i whenever it applies (-1 goes back to
 * automatic selection; a dot index leaves other ta/tb to the automatic choice). Not thread-safe
 * against concurrent cn_sgemm calls. */
int cn_sgemm_kernel_count(void);
const char *cn_sgemm_kernel_name(int i); /* NULL past the end */
void cn_sgemm_force_kernel(int i);

/* The argument list of a micro-kernel (restrict-qualified in the files that define them). */
#define CN_GEMM_UKERNEL_ARGS                                                                  \
    size_t kc, const float *restrict a, size_t as, const float *restrict b, size_t bs,         \
        float *restrict c, size_t ldc, size_t mr, size_t nr, float alpha, float beta

/* The four entry points of one register tile in a micro-kernel file (ISA: avx2, avx512): A from
 * packed panels (kmajor) or read in place (rows), each plain or applying a cn_gemm_affine (_ep)
 * whose pointers are at the tile's first row and column. The file defines
 * tile(CN_GEMM_UKERNEL_ARGS, f, MR, NV, ROWS); gemm.c declares the four for its tables. */
#define CN_GEMM_TILE_FNS(MR, NV, NAME, ISA)                                                   \
    void f32_gemm_ukernel_##NAME##_kmajor__##ISA(CN_GEMM_UKERNEL_ARGS);                       \
    void f32_gemm_ukernel_##NAME##_kmajor__##ISA(CN_GEMM_UKERNEL_ARGS) {                      \
        tile(kc, a, as, b, bs, c, ldc, mr, nr, alpha, beta, NULL, MR, NV, 0);                 \
    }                                                                                        \
    void f32_gemm_ukernel_##NAME##_rows__##ISA(CN_GEMM_UKERNEL_ARGS);                         \
    void f32_gemm_ukernel_##NAME##_rows__##ISA(CN_GEMM_UKERNEL_ARGS) {                        \
        tile(kc, a, as, b, bs, c, ldc, mr, nr, alpha, beta, NULL, MR, NV, 1);                 \
    }                                                                                        \
    void f32_gemm_ukernel_##NAME##_kmajor_ep__##ISA(CN_GEMM_UKERNEL_ARGS,                     \
                                                    const cn_gemm_affine *f);                \
    void f32_gemm_ukernel_##NAME##_kmajor_ep__##ISA(CN_GEMM_UKERNEL_ARGS,                     \
                                                    const cn_gemm_affine *f) {               \
        tile(kc, a, as, b, bs, c, ldc, mr, nr, alpha, beta, f, MR, NV, 0);                    \
    }                                                                                        \
    void f32_gemm_ukernel_##NAME##_rows_ep__##ISA(CN_GEMM_UKERNEL_ARGS,                       \
                                                  const cn_gemm_affine *f);                  \
    void f32_gemm_ukernel_##NAME##_rows_ep__##ISA(CN_GEMM_UKERNEL_ARGS,                       \
                                                  const cn_gemm_affine *f) {                 \
        tile(kc, a, as, b, bs, c, ldc, mr, nr, alpha, beta, f, MR, NV, 1);                    \
    }

#endif
