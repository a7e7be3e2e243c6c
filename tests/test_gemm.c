/* Compares cn_sgemm against cn_sgemm_ref on awkward shapes, for every kernel path the CPU has,
 * and checks that results are bit-identical for 1 and 2 threads. */
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/gemm.h"

static int n_pass, n_fail;
static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static float frand(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)((double)(rng_state >> 40) / (double)(1ull << 24)) * 2.0f - 1.0f;
}

static void fill(float *p, size_t n) {
    for (size_t i = 0; i < n; i++) p[i] = frand();
}

/* One case: random operands with the given leading-dimension slack; C starts as NaN when
 * beta == 0 to prove it is never read. Returns 0 on success. */
static int run_case(const char *path, int ta, int tb, int M, int N, int K, int pad, float alpha,
                    float beta, int check_threads) {
    const int lda = (ta ? M : K) + pad, ldb = (tb ? K : N) + pad, ldc = N + pad;
    const size_t asz = (size_t)(ta ? K : M) * lda + 1, bsz = (size_t)(tb ? N : K) * ldb + 1;
    const size_t csz = (size_t)M * ldc + 1;
    float *A = malloc(asz * sizeof *A), *B = malloc(bsz * sizeof *B);
    float *C = malloc(csz * sizeof *C), *R = malloc(csz * sizeof *R);
    float *C2 = malloc(csz * sizeof *C2);
    if (!A || !B || !C || !R || !C2) {
        printf("FAIL %s: out of memory\n", path);
        free(A), free(B), free(C), free(R), free(C2);
        return 1;
    }
    fill(A, asz);
    fill(B, bsz);
    fill(C, csz);
    if (beta == 0.0f)
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) C[(size_t)i * ldc + j] = NAN;
    memcpy(R, C, csz * sizeof *C);
    memcpy(C2, C, csz * sizeof *C);

    cn_sgemm_ref(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, R, ldc);
    omp_set_num_threads(1);
    cn_sgemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);

    int bad = 0;
    double worst = 0.0;
    for (int i = 0; i < M && !bad; i++) {
        for (int j = 0; j < N; j++) {
            const size_t o = (size_t)i * ldc + j;
            /* Operands are in [-1,1], so |alpha|*K + |beta*c| bounds the magnitude of each term
             * sum; error grows like sqrt(K) for random rounding. */
            const double mag = fabs(alpha) * K + (beta == 0.0f ? 0.0 : fabs(beta * C2[o])) + 1e-30;
            const double err = fabs((double)C[o] - (double)R[o]) / mag;
            const double tol = 1e-5 * sqrt((double)K + 1.0);
            if (!(err <= tol)) {
                bad = 1;
                worst = err;
                break;
            }
        }
    }
    /* Padding between rows and past the end must be untouched. */
    for (int i = 0; i < M && !bad; i++)
        for (int j = N; j < ldc && (size_t)i * ldc + j < csz; j++)
            if (memcmp(&C[(size_t)i * ldc + j], &C2[(size_t)i * ldc + j], sizeof(float))) bad = 2;
    if (!bad && memcmp(&C[csz - 1], &C2[csz - 1], sizeof(float))) bad = 2;

    if (!bad && check_threads) {
        float *C3 = malloc(csz * sizeof *C3);
        if (C3) {
            memcpy(C3, C2, csz * sizeof *C3);
            omp_set_num_threads(2);
            cn_sgemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C3, ldc);
            omp_set_num_threads(1);
            if (memcmp(C, C3, csz * sizeof *C3)) bad = 3;
            free(C3);
        }
    }

    if (bad) {
        printf("FAIL %s ta=%d tb=%d M=%d N=%d K=%d pad=%d alpha=%g beta=%g: %s (rel err %.3g)\n",
               path, ta, tb, M, N, K, pad, alpha, beta,
               bad == 1 ? "wrong values" : bad == 2 ? "wrote outside C" : "thread-count dependent",
               worst);
        n_fail++;
    } else {
        n_pass++;
    }
    free(A), free(B), free(C), free(R), free(C2);
    return bad;
}

int main(void) {
    static const int small[] = {1, 2, 3, 7, 13, 17, 31, 33};
    static const int big[] = {65, 127, 300};
    static const float betas[] = {0.0f, 1.0f, 0.5f};
    const int nsmall = (int)(sizeof small / sizeof small[0]);
    const int nbig = (int)(sizeof big / sizeof big[0]);

    for (int path = 2; path >= 0; path--) {
        cn_sgemm_force_path(path);
        const char *name = cn_sgemm_path_name();
        static const char *expect[] = {"generic", "avx2", "avx512"};
        if (strcmp(name, expect[path]) != 0) {
            printf("skip %s path: CPU lacks it\n", expect[path]);
            continue;
        }
        int c = 0;
        for (int t = 0; t < 4; t++) {
            const int ta = t & 1, tb = t >> 1;
            /* Every combination of small sizes: tails in every dimension of every kernel. */
            for (int im = 0; im < nsmall; im++)
                for (int in = 0; in < nsmall; in++)
                    for (int ik = 0; ik < nsmall; ik++, c++)
                        run_case(name, ta, tb, small[im], small[in], small[ik], c % 3 == 0 ? 0 : c % 5,
                                 c % 4 == 0 ? 1.0f : -0.75f, betas[c % 3], 0);
            /* Larger sizes crossing the register tile and cache blocks, mixed with small ones. */
            for (int im = 0; im < nsmall + nbig; im++)
                for (int in = 0; in < nbig; in++)
                    for (int ik = 0; ik < nbig; ik++, c++) {
                        const int M = im < nsmall ? small[im] : big[im - nsmall];
                        run_case(name, ta, tb, M, big[in], big[ik], c % 2 ? 3 : 0,
                                 c % 3 ? 1.0f : 1.5f, betas[c % 3], c % 4 == 0);
                        run_case(name, ta, tb, big[in], M, big[ik], c % 2 ? 0 : 5, 1.0f,
                                 betas[(c + 1) % 3], c % 4 == 1);
                        run_case(name, ta, tb, big[in], big[ik], M, c % 2 ? 1 : 0, 2.0f,
                                 betas[(c + 2) % 3], c % 4 == 2);
                    }
            /* Blocking boundaries: K beyond one KC block, M beyond MC, N beyond NC, and the
             * small-N / huge-K shapes of convolution layers. */
            run_case(name, ta, tb, 50, 40, 1000, 2, 1.0f, 0.0f, 1);
            run_case(name, ta, tb, 700, 33, 70, 0, 1.0f, 1.0f, 1);
            run_case(name, ta, tb, 9, 3300, 37, 1, -1.0f, 0.5f, 1);
            run_case(name, ta, tb, 16, 144, 5000, 0, 1.0f, 1.0f, 1);
            run_case(name, ta, tb, 2000, 16, 144, 0, 1.0f, 0.0f, 1);
            run_case(name, ta, tb, 1000, 144, 16, 0, 1.0f, 0.0f, 1);
            run_case(name, ta, tb, 130, 200, 769, 7, 0.25f, 1.0f, 1);
        }
        /* K == 0 and alpha == 0 only scale C. */
        run_case(name, 0, 0, 5, 6, 0, 1, 1.0f, 0.5f, 0);
        run_case(name, 0, 1, 5, 6, 0, 1, 1.0f, 0.0f, 0);
    }
    cn_sgemm_force_path(-1);
    printf("gemm: %d passed, %d failed\n", n_pass, n_fail);
    return n_fail != 0;
}
