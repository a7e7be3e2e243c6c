/* Compares cn_sgemm against cn_sgemm_ref on awkward shapes, for every kernel path the CPU has and
 * every kernel of each path (forced), and checks that results are bit-identical for 1, 2 and 3
 * threads. */
#include <float.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/act.h"
#include "kernels/gemm.h"

static int n_pass, n_fail;
/* when > 0, the lda of the next cases (ta == 0): rows of A may overlap, as in the implicit GEMM of
 * a 3x3 convolution (lda = C, K = 3*C) */
static int lda_force;
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
    const int lda = lda_force > 0 && !ta ? lda_force : (ta ? M : K) + pad;
    const int ldb = (tb ? K : N) + pad, ldc = N + pad;
    const size_t asz = ta ? (size_t)K * lda + 1 : (size_t)(M - 1) * lda + K + 1;
    const size_t bsz = (size_t)(tb ? N : K) * ldb + 1;
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

    for (int threads = 2; threads <= 3 && !bad && check_threads; threads++) {
        float *C3 = malloc(csz * sizeof *C3);
        if (C3) {
            memcpy(C3, C2, csz * sizeof *C3);
            omp_set_num_threads(threads);
            cn_sgemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C3, ldc);
            omp_set_num_threads(1);
            if (memcmp(C, C3, csz * sizeof *C3)) bad = 3;
            free(C3);
        }
    }

    if (bad) {
        printf("FAIL %s ta=%d tb=%d M=%d N=%d K=%d pad=%d lda=%d alpha=%g beta=%g: %s (rel err "
               "%.3g)\n",
               path, ta, tb, M, N, K, pad, lda, alpha, beta,
               bad == 1 ? "wrong values" : bad == 2 ? "wrote outside C" : "thread-count dependent",
               worst);
        n_fail++;
    } else {
        n_pass++;
    }
    free(A), free(B), free(C), free(R), free(C2);
    return bad;
}

/* cn_sgemm_post: every element of C reaches the post function exactly once, after its final
 * value (post computes 2c + 1, compared bit for bit with cn_sgemm's C), never an element outside
 * [0, M) x [0, N); on every path (GEMV, swapped, packed with both loop orders) and thread count. */
typedef struct post_rec {
    int M, N, bad;
    unsigned char *seen;
} post_rec;

static void post_fn(void *ctx, float *C, size_t ldc, size_t i0, size_t i1, size_t j0,
                    size_t j1) {
    post_rec *r = ctx;
    if (i1 > (size_t)r->M || j1 > (size_t)r->N || i0 >= i1 || j0 >= j1) {
        __atomic_store_n(&r->bad, 1, __ATOMIC_RELAXED);
        return;
    }
    for (size_t i = i0; i < i1; i++)
        for (size_t j = j0; j < j1; j++) {
            __atomic_fetch_add(&r->seen[i * (size_t)r->N + j], 1, __ATOMIC_RELAXED);
            C[i * ldc + j] = 2.0f * C[i * ldc + j] + 1.0f;
        }
}

static void post_case(const char *path, int ta, int tb, int M, int N, int K, float beta,
                      int threads) {
    const int lda = ta ? M : K, ldb = tb ? K : N, ldc = N + 3;
    const size_t csz = (size_t)M * ldc;
    float *A = malloc(sizeof(float) * (size_t)M * K + 4), *B = malloc(sizeof(float) * (size_t)N * K + 4);
    float *C = malloc(sizeof(float) * csz), *W = malloc(sizeof(float) * csz);
    post_rec r = {M, N, 0, calloc((size_t)M * N, 1)};
    if (!A || !B || !C || !W || !r.seen) {
        printf("FAIL post %s: out of memory\n", path);
        n_fail++;
        free(A), free(B), free(C), free(W), free(r.seen);
        return;
    }
    fill(A, (size_t)M * K);
    fill(B, (size_t)N * K);
    fill(C, csz);
    memcpy(W, C, sizeof(float) * csz);
    omp_set_num_threads(threads);
    cn_sgemm(ta, tb, M, N, K, 1.0f, A, lda, B, ldb, beta, W, ldc);
    const cn_gemm_post post = {post_fn, &r, NULL};
    cn_sgemm_post(ta, tb, M, N, K, 1.0f, A, lda, B, ldb, beta, C, ldc, &post);
    omp_set_num_threads(1);
    int bad = r.bad;
    for (int i = 0; i < M && !bad; i++)
        for (int j = 0; j < N && !bad; j++) {
            const size_t o = (size_t)i * ldc + j;
            const float want = 2.0f * W[o] + 1.0f;
            if (r.seen[(size_t)i * N + j] != 1) bad = 2;
            else if (memcmp(&C[o], &want, sizeof want)) bad = 3;
        }
    if (bad) {
        printf("FAIL post %s ta=%d tb=%d M=%d N=%d K=%d beta=%g threads=%d: %s\n", path, ta, tb,
               M, N, K, beta, threads,
               bad == 1 ? "block out of range" : bad == 2 ? "element not posted once"
                                                          : "post saw a non-final value");
        n_fail++;
    } else {
        n_pass++;
    }
    free(A), free(B), free(C), free(W), free(r.seen);
}

/* cn_gemm_post with an affine description (cn_gemm_affine): whether the kernels apply it in
 * registers (AVX2, AVX-512) or call the post function, C ends up bit for bit as the scalar
 * epilogue (mul, add, add, then v < 0 ? 0 : v) applied to cn_sgemm's C; -0 and NaN pass as they
 * do in the scalar code, and every element not done in registers reaches the post function once. */
typedef struct affine_rec {
    post_rec seen;
    const cn_gemm_affine *f;
} affine_rec;

static float affine_ref(float c, const cn_gemm_affine *f, size_t i, size_t j) {
    float v = c * f->scale[j] + f->shift[j];
    if (f->res) v = v + f->res[i * f->ldr + j];
    if (f->act == CN_GEMM_ACT_SILU) cn_silu_n(&v, &v, 1);
    return f->act == CN_GEMM_ACT_RELU && v < 0 ? 0.0f : v;
}

static void affine_fn(void *ctx, float *C, size_t ldc, size_t i0, size_t i1, size_t j0,
                      size_t j1) {
    affine_rec *r = ctx;
    if (i1 > (size_t)r->seen.M || j1 > (size_t)r->seen.N || i0 >= i1 || j0 >= j1) {
        __atomic_store_n(&r->seen.bad, 1, __ATOMIC_RELAXED);
        return;
    }
    for (size_t i = i0; i < i1; i++)
        for (size_t j = j0; j < j1; j++) {
            __atomic_fetch_add(&r->seen.seen[i * (size_t)r->seen.N + j], 1, __ATOMIC_RELAXED);
            C[i * ldc + j] = affine_ref(C[i * ldc + j], r->f, i, j);
        }
}

static void affine_case(const char *path, int ta, int tb, int M, int N, int K, float beta,
                        int threads, int with_res, int act) {
    const int lda = ta ? M : K, ldb = tb ? K : N, ldc = N + 3, ldr = N + 5;
    const size_t csz = (size_t)M * ldc;
    float *A = malloc(sizeof(float) * (size_t)M * K + 4), *B = malloc(sizeof(float) * (size_t)N * K + 4);
    float *C = malloc(sizeof(float) * csz), *W = malloc(sizeof(float) * csz);
    float *sc = malloc(sizeof(float) * (size_t)N), *sh = malloc(sizeof(float) * (size_t)N);
    float *res = malloc(sizeof(float) * (size_t)M * ldr);
    affine_rec r = {{M, N, 0, calloc((size_t)M * N, 1)}, NULL};
    if (!A || !B || !C || !W || !sc || !sh || !res || !r.seen.seen) {
        printf("FAIL affine %s: out of memory\n", path);
        n_fail++;
        free(A), free(B), free(C), free(W), free(sc), free(sh), free(res), free(r.seen.seen);
        return;
    }
    fill(A, (size_t)M * K);
    fill(B, (size_t)N * K);
    fill(C, csz);
    fill(sc, (size_t)N);
    fill(sh, (size_t)N);
    fill(res, (size_t)M * ldr);
    /* column 0: C * 0 + -0 is -0 for C < 0 (kept by the ReLU); one residual is NaN */
    sc[0] = 0.0f;
    sh[0] = -0.0f;
    if (M > 1 && N > 1) res[(size_t)(M - 1) * ldr + N - 1] = NAN;
    memcpy(W, C, sizeof(float) * csz);
    const cn_gemm_affine f = {sc, sh, with_res ? res : NULL, (size_t)ldr, act};
    r.f = &f;
    omp_set_num_threads(threads);
    cn_sgemm(ta, tb, M, N, K, 1.0f, A, lda, B, ldb, beta, W, ldc);
    const cn_gemm_post post = {affine_fn, &r, &f};
    cn_sgemm_post(ta, tb, M, N, K, 1.0f, A, lda, B, ldb, beta, C, ldc, &post);
    omp_set_num_threads(1);
    int bad = r.seen.bad;
    for (int i = 0; i < M && !bad; i++)
        for (int j = 0; j < N && !bad; j++) {
            const size_t o = (size_t)i * ldc + j;
            const float want = affine_ref(W[o], &f, (size_t)i, (size_t)j);
            if (r.seen.seen[(size_t)i * N + j] > 1) bad = 2;
            else if (memcmp(&C[o], &want, sizeof want) &&
                     /* SiLU in registers is the path's, cn_silu_n maybe another's: 4 ulp */
                     !(act == CN_GEMM_ACT_SILU && fabsf(C[o] - want) <= 4 * FLT_EPSILON * fabsf(want)))
                bad = 3;
        }
    if (bad) {
        printf("FAIL affine %s ta=%d tb=%d M=%d N=%d K=%d beta=%g threads=%d res=%d act=%d: %s\n",
               path, ta, tb, M, N, K, beta, threads, with_res, act,
               bad == 1 ? "block out of range" : bad == 2 ? "element posted twice"
                                                          : "not the scalar epilogue's bits");
        n_fail++;
    } else {
        n_pass++;
    }
    free(A), free(B), free(C), free(W), free(sc), free(sh), free(res), free(r.seen.seen);
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

        /* Every kernel of the path, forced: tails of each tile, every ta/tb, and shapes big
         * enough to run on 2 and 3 threads (the dot kernels apply to ta == 0, tb == 1 only;
         * other cases fall back to the automatic choice). */
        static const int shp[][3] = {{1, 1, 1},   {5, 17, 3},    {29, 37, 41},  {49, 100, 67},
                                     {61, 35, 300}, {3, 200, 19}, {130, 150, 33}, {2, 9, 700},
                                     {49, 300, 80}, {200, 90, 70}, {16, 1152, 64}, {50, 97, 400}};
        const int nshp = (int)(sizeof shp / sizeof shp[0]);
        for (int kn = 0; kn < cn_sgemm_kernel_count(); kn++) {
            cn_sgemm_force_kernel(kn);
            char kname[64];
            snprintf(kname, sizeof kname, "%s/%s", name, cn_sgemm_kernel_name(kn));
            for (int t = 0; t < 4; t++)
                for (int i = 0; i < nshp; i++, c++) {
                    const int M = shp[i][0], N = shp[i][1], K = shp[i][2];
                    run_case(kname, t & 1, t >> 1, M, N, K, c % 3, c % 2 ? 0.5f : 1.0f,
                             betas[c % 3], (double)M * N * K >= 1 << 20);
                }
        }
        cn_sgemm_force_kernel(-1);

        /* The automatic choice on convolution shapes (ta = 0, tb = 1): tiny M (GEMV), small M
         * (the swapped path, with the rows past a multiple of 16 as GEMVs), narrow N, small K. */
        static const int ms[] = {1, 2, 3, 4, 7, 16, 17, 19, 33, 48, 49, 51, 61, 64, 65, 98, 196};
        static const int ns[] = {4, 8, 16, 24, 40, 80, 112, 144, 240, 1152};
        static const int ks[] = {4, 16, 31, 32, 48, 96, 144, 320};
        for (size_t im = 0; im < sizeof ms / sizeof ms[0]; im++)
            for (size_t in = 0; in < sizeof ns / sizeof ns[0]; in++)
                for (size_t ik = 0; ik < sizeof ks / sizeof ks[0]; ik++, c++) {
                    const int M = ms[im], N = ns[in], K = ks[ik];
                    if ((c % 3) && (double)M * N * K < 1 << 20) continue; /* sample small ones */
                    run_case(name, 0, 1, M, N, K, c % 4 == 0 ? 0 : c % 5, c % 2 ? -0.5f : 1.0f,
                             betas[c % 3], (double)M * N * K >= 1 << 20);
                }
        /* long rows (K >= 1024) of up to 99 pixels: the swapped path with one 96-pixel panel
         * on AVX-512, the 1-3 rows past 96 as GEMVs; the packed path elsewhere */
        static const int wide[][3] = {{65, 40, 1024}, {80, 512, 1030}, {96, 24, 2048},
                                      {97, 130, 1024}, {98, 512, 2048}, {99, 48, 1100},
                                      {100, 64, 1024}};
        for (size_t i = 0; i < sizeof wide / sizeof wide[0]; i++, c++)
            run_case(name, 0, 1, wide[i][0], wide[i][1], wide[i][2], c % 5, c % 2 ? -0.5f : 1.0f,
                     betas[c % 3], 1);
        /* The implicit 3x3 convolution: rows of A overlap (lda = C < K = 3*C). */
        static const int conv[][3] = {{58 * 5 + 56, 64, 64}, {30 * 3 + 28, 128, 128},
                                      {16 * 13 + 14, 256, 256}, {9 * 6 + 7, 512, 512},
                                      {9 * 6 + 7, 24, 40}, {20, 48, 16}};
        for (size_t i = 0; i < sizeof conv / sizeof conv[0]; i++) {
            lda_force = conv[i][2];
            run_case(name, 0, 1, conv[i][0], conv[i][1], 3 * conv[i][2], 0, 1.0f,
                     i % 2 ? 1.0f : 0.0f, 1);
            lda_force = 0;
        }
        /* the post hook: GEMV (M <= 3), swapped (small M), packed (rows-outer and BLIS order,
         * K over several KC blocks, N over NC), K == 0 */
        static const int ps[][3] = {{1, 40, 96},  {3, 1000, 64},  {49, 512, 256}, {51, 96, 40},
                                    {300, 96, 16}, {700, 33, 70}, {130, 200, 769}, {9, 3300, 37},
                                    {2000, 144, 16}, {12544 / 4, 96, 16}, {97, 130, 1030},
                                    {5, 6, 0}};
        for (size_t i = 0; i < sizeof ps / sizeof ps[0]; i++)
            for (int threads = 1; threads <= 3; threads++)
                for (int t = 0; t < 4; t += (ps[i][0] <= 64 ? 2 : 1))
                    post_case(name, t & 1, t >> 1, ps[i][0], ps[i][1], ps[i][2],
                              betas[(i + (size_t)threads) % 3], threads);
        /* the same shapes with an affine epilogue (with and without residual and ReLU), also
         * with every micro-kernel forced */
        for (int kn = -1; kn < cn_sgemm_kernel_count(); kn++) {
            cn_sgemm_force_kernel(kn);
            for (size_t i = 0; i < sizeof ps / sizeof ps[0]; i++)
                for (int threads = 1; threads <= 2; threads++)
                    for (int t = 0; t < 4; t += (ps[i][0] <= 64 ? 2 : 1), c++)
                        affine_case(name, t & 1, t >> 1, ps[i][0], ps[i][1], ps[i][2],
                                    i % 3 == 0 ? 0.5f : 0.0f, threads, c % 2, (c / 2) % 3);
        }
        cn_sgemm_force_kernel(-1);
    }
    cn_sgemm_force_path(-1);
    printf("gemm: %d passed, %d failed\n", n_pass, n_fail);
    return n_fail != 0;
}
