/* The machine's ceiling for bench/bench_peers.sh: single-precision FMA throughput in FLOP/s.
 *
 * Each thread runs independent accumulator chains acc = acc * a + b (fused multiply-add),
 * enough chains to cover the FMA latency times the number of FMA ports, so the loop is limited
 * by FMA throughput only. One 512-bit FMA is 16 lanes x 2 FLOPs, one 256-bit FMA 8 x 2. The
 * threads run the same kernel at once (started together behind a barrier); the reported rate is
 * the best of a few repetitions, total over all threads and per thread.
 *
 *   cc -O2 -mavx2 -mfma -pthread bench/peers/fma_peak.c -o build/peers/fma_peak
 *   build/peers/fma_peak [--threads 1,2] [--seconds 0.3]      # one JSON object on stdout
 */
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Chains per thread: 2 FMA ports x 4-cycle latency needs 8. AVX-512 has 32 vector registers, so
 * 16 chains; the AVX2 variant keeps 12 (plus the two constants) within the 16 ymm registers that
 * plain AVX2 code can name, so nothing spills to the stack. */
#define NACC512 16
#define NACC256 12

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* The chains converge to b / (1 - a), a normal float: no overflow, no denormals. */
#define CHAINS12(OP) OP(0) OP(1) OP(2) OP(3) OP(4) OP(5) OP(6) OP(7) OP(8) OP(9) OP(10) OP(11)
#define CHAINS16(OP) CHAINS12(OP) OP(12) OP(13) OP(14) OP(15)

/* compiled for AVX-512 on its own (the file is built for AVX2): called only where the CPU has it */
__attribute__((target("avx512f"))) static float fma512(long iters) {
    const __m512 a = _mm512_set1_ps(0.999f), b = _mm512_set1_ps(1e-3f);
#define DECL(i) __m512 c##i = _mm512_set1_ps((float)(i));
#define STEP(i) c##i = _mm512_fmadd_ps(c##i, a, b);
    CHAINS16(DECL)
    for (long it = 0; it < iters; it++) {
        CHAINS16(STEP)
    }
#define SUM(i) s = _mm512_add_ps(s, c##i);
    __m512 s = _mm512_setzero_ps();
    CHAINS16(SUM)
    return _mm512_reduce_add_ps(s);
#undef DECL
#undef STEP
#undef SUM
}

static float fma256(long iters) {
    const __m256 a = _mm256_set1_ps(0.999f), b = _mm256_set1_ps(1e-3f);
#define DECL(i) __m256 c##i = _mm256_set1_ps((float)(i));
#define STEP(i) c##i = _mm256_fmadd_ps(c##i, a, b);
    CHAINS12(DECL)
    for (long it = 0; it < iters; it++) {
        CHAINS12(STEP)
    }
#define SUM(i) s = _mm256_add_ps(s, c##i);
    __m256 s = _mm256_setzero_ps();
    CHAINS12(SUM)
    float o[8];
    _mm256_storeu_ps(o, s);
    return o[0] + o[1] + o[2] + o[3] + o[4] + o[5] + o[6] + o[7];
#undef DECL
#undef STEP
#undef SUM
}

typedef struct {
    int wide; /* 512 or 256 */
    long iters;
    pthread_barrier_t *bar;
    double seconds;
    float sink;
} job;

static void *worker(void *p) {
    job *j = p;
    pthread_barrier_wait(j->bar);
    double t0 = now();
    j->sink = j->wide == 512 ? fma512(j->iters) : fma256(j->iters);
    j->seconds = now() - t0;
    return NULL;
}

/* FLOP/s of all threads together: total FLOPs over the slowest thread's time. */
static double run(int wide, int threads, long iters) {
    pthread_t tid[64];
    job jobs[64];
    pthread_barrier_t bar;
    pthread_barrier_init(&bar, NULL, (unsigned)threads);
    for (int t = 0; t < threads; t++) {
        jobs[t] = (job){.wide = wide, .iters = iters, .bar = &bar};
        pthread_create(&tid[t], NULL, worker, &jobs[t]);
    }
    double worst = 0, sink = 0;
    for (int t = 0; t < threads; t++) {
        pthread_join(tid[t], NULL);
        if (jobs[t].seconds > worst) worst = jobs[t].seconds;
        sink += jobs[t].sink;
    }
    pthread_barrier_destroy(&bar);
    if (sink == 12345.678) fprintf(stderr, "(unlikely)\n"); /* keeps the result live */
    double flops_per_iter = (wide == 512 ? NACC512 * 16.0 : NACC256 * 8.0) * 2;
    return flops_per_iter * (double)iters * threads / worst;
}

/* Best of 5 repetitions, each sized to take about `seconds` on one thread. */
static double best(int wide, int threads, double seconds) {
    long iters = 1000000;
    double t0 = now();
    run(wide, 1, iters);
    double dt = now() - t0;
    iters = (long)((double)iters * seconds / (dt > 1e-6 ? dt : 1e-6));
    if (iters < 1000) iters = 1000;
    double b = 0;
    for (int r = 0; r < 5; r++) {
        double f = run(wide, threads, iters);
        if (f > b) b = f;
    }
    return b;
}

int main(int argc, char **argv) {
    char tlist[256] = "1,2";
    double seconds = 0.3;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc) {
            snprintf(tlist, sizeof tlist, "%s", argv[++i]);
        } else if (!strcmp(argv[i], "--seconds") && i + 1 < argc) {
            seconds = atof(argv[++i]);
        } else {
            fprintf(stderr, "usage: fma_peak [--threads 1,2] [--seconds 0.3]\n");
            return 2;
        }
    }
    __builtin_cpu_init();
    int has512 = __builtin_cpu_supports("avx512f"), has256 = __builtin_cpu_supports("fma");
    printf("{\"chains_avx512\": %d, \"chains_avx2\": %d, \"results\": [", NACC512, NACC256);
    int first = 1;
    for (char *tok = strtok(tlist, ","); tok; tok = strtok(NULL, ",")) {
        int t = atoi(tok);
        if (t < 1 || t > 64) continue;
        double f512 = has512 ? best(512, t, seconds) : 0, f256 = has256 ? best(256, t, seconds) : 0;
        printf("%s{\"threads\": %d, \"avx512_flops\": %.6g, \"avx512_flops_per_thread\": %.6g, "
               "\"avx2_flops\": %.6g, \"avx2_flops_per_thread\": %.6g}",
               first ? "" : ", ", t, f512, f512 / t, f256, f256 / t);
        first = 0;
    }
    printf("]}\n");
    return 0;
}
