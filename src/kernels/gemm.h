/* Single-precision GEMM used by convolution (im2col) and fully connected layers. */
#ifndef CN_KERNELS_GEMM_H
#define CN_KERNELS_GEMM_H

/* C[M,N] = alpha * op(A)[M,K] * op(B)[K,N] + beta * C.
 * op(A)[i][k] = ta ? A[k*lda + i] : A[i*lda + k];  op(B)[k][j] = tb ? B[j*ldb + k] : B[k*ldb + j].
 * beta == 0 means C is write-only (never read). Threads with OpenMP when called outside a parallel
 * region and the problem is big enough; results are bit-identical for any thread count (split only
 * over M and N, never over K). */
void cn_sgemm(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
              const float *B, int ldb, float beta, float *C, int ldc);
void cn_sgemm_ref(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                  const float *B, int ldb, float beta, float *C, int ldc);
const char *cn_sgemm_path_name(void); /* "avx512", "avx2" or "generic" */

/* For tests and benchmarks only: use kernel path 0 = generic, 1 = avx2, 2 = avx512 from now on
 * (capped at what the CPU supports; a negative value goes back to automatic selection). Not
 * thread-safe against concurrent cn_sgemm calls. */
void cn_sgemm_force_path(int path);

#endif
