/* Finite-difference gradient checks shared by the op tests (tests/test_ops.c,
 * tests/test_ops_effnet.c). Header-only: the including file defines, before including it,
 * `static cn_rng rng;` and `static float *randv(size_t n, float scale)`, and includes check.h.
 *
 * L = sum(w_r * out) for a fixed random projection w_r, in double. The analytic gradient is the
 * op's backward with dout = w_r, run into zeroed buffers and again into buffers holding random
 * values (it must add to them); the numerical one is the central difference with the perturbed
 * values as stored in float, for every element of small tensors and ~50 of larger ones. */
#ifndef CN_TESTS_GRADCHECK_H
#define CN_TESTS_GRADCHECK_H

#include <omp.h>
#include <stdlib.h>

static int verbose;
/* Set while the finite differences run: the forwards then run on one thread (they are many and
 * small, and a loaded machine makes every parallel region slow); the threaded forwards are checked
 * against direct loops and the analytic gradients use the configured threads. */
static int fd_serial;

static double dotd(const float *a, const float *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

typedef struct gc_tensor {
    const char *name;
    float *x, *g;
    size_t n;
} gc_tensor;

typedef struct gc_op {
    void (*fwd)(void *ctx, float *out);
    /* adds d(sum(dout * out))/d(tensor) to every tensor's g; out is the last forward's output */
    void (*bwd)(void *ctx, const float *dout, const float *out);
    void *ctx;
    size_t nout;
    gc_tensor t[4];
    int nt;
} gc_op;

/* adds a tensor to check, with a freshly allocated gradient buffer stored into *g */
static inline void gc_add(gc_op *op, const char *name, float *x, float **g, size_t n) {
    *g = malloc(sizeof(float) * (n ? n : 1));
    op->t[op->nt++] = (gc_tensor){name, x, *g, n};
}

static void gradcheck(const char *label, const gc_op *op, float eps, double tol) {
    float *out = malloc(sizeof(float) * (op->nout ? op->nout : 1)), *wr = randv(op->nout, 1);
    float *a0[4] = {0}, *pre[4] = {0};
    op->fwd(op->ctx, out);
    for (int k = 0; k < op->nt; k++) memset(op->t[k].g, 0, sizeof(float) * op->t[k].n);
    op->bwd(op->ctx, wr, out);
    for (int k = 0; k < op->nt; k++) {
        a0[k] = malloc(sizeof(float) * (op->t[k].n ? op->t[k].n : 1));
        memcpy(a0[k], op->t[k].g, sizeof(float) * op->t[k].n);
        pre[k] = randv(op->t[k].n, 1);
        memcpy(op->t[k].g, pre[k], sizeof(float) * op->t[k].n);
    }
    /* accumulation: the same call into non-zero buffers adds the same gradient */
    op->bwd(op->ctx, wr, out);
    for (int k = 0; k < op->nt; k++) {
        double md = 0, mb = 1e-6;
        for (size_t i = 0; i < op->t[k].n; i++) {
            double dd = fabs(op->t[k].g[i] - ((double)pre[k][i] + a0[k][i]));
            if (dd > md || dd != dd) md = dd;
            if (fabs(pre[k][i]) + fabs(a0[k][i]) > mb) mb = fabs(pre[k][i]) + fabs(a0[k][i]);
        }
        CHECK(md / mb < 1e-5, "%s: d%s does not accumulate: rel err %g", label, op->t[k].name,
              md / mb);
    }
    int max_threads = omp_get_max_threads();
    omp_set_num_threads(1);
    fd_serial = 1;
    for (int k = 0; k < op->nt; k++) {
        const gc_tensor *t = &op->t[k];
        size_t ns = t->n <= 64 ? t->n : 50;
        double md = 0, mb = 1e-3;
        for (size_t s = 0; s < ns; s++) {
            size_t i = t->n <= 64 ? s
                       : s == 0   ? 0
                       : s == 1   ? t->n - 1
                                  : cn_rng_below(&rng, (uint32_t)t->n);
            float v = t->x[i], xp = v + eps, xm = v - eps;
            t->x[i] = xp;
            op->fwd(op->ctx, out);
            double lp = dotd(wr, out, op->nout);
            t->x[i] = xm;
            op->fwd(op->ctx, out);
            double lm = dotd(wr, out, op->nout);
            t->x[i] = v;
            double fd = (lp - lm) / ((double)xp - xm);
            double dd = fabs(a0[k][i] - fd);
            if (dd > md || dd != dd) md = dd;
            if (fabs(fd) > mb) mb = fabs(fd);
        }
        if (verbose)
            printf("  %-44s d%-6s fd rel err %.2e (scale %.2e)\n", label, t->name, md / mb, mb);
        CHECK(md / mb < tol, "%s: d%s vs finite differences: rel err %g (scale %g)", label, t->name,
              md / mb, mb);
    }
    fd_serial = 0;
    omp_set_num_threads(max_threads);
    for (int k = 0; k < op->nt; k++) free(a0[k]), free(pre[k]);
    free(out);
    free(wr);
}

/* tolerances: linear ops have no truncation error, only float rounding of the outputs */
#define TOL_LIN 2e-3
#define TOL_NONLIN 1e-2

#endif
