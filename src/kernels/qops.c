/* The integer element-wise ops of the int8 network (see qops.h): the loops (qops_impl.h) in a
 * plain copy and an AVX-512 copy, chosen once from the CPU features; threads over rows. */
#include "kernels/qops.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/cpu.h"
#include "kernels/qops_table.h"

#define QOPS(name) cn_qops_c_##name
#include "kernels/qops_impl.h"

const cn_qops_table cn_qops_c = {QOPS(quantize), QOPS(dequantize), QOPS(add), QOPS(mul_row),
                                 QOPS(max_row), QOPS(lut), QOPS(dot), QOPS(sum_rows)};

static const cn_qops_table *ops(void) {
    static const cn_qops_table *t;
    if (!t) t = cn_cpu_avx512() ? &cn_qops_avx512 : &cn_qops_c;
    return t;
}

const char *cn_qops_name(void) { return ops() == &cn_qops_avx512 ? "avx512" : "c"; }

#define CHUNK 16384 /* elements per parallel chunk */

/* splits [0, n) into chunks over the threads when there is enough work */
#define FOR_CHUNKS(n, threads, body)                                                  \
    do {                                                                              \
        size_t nch_ = ((n) + CHUNK - 1) / CHUNK;                                      \
        _Pragma("omp parallel for num_threads(threads) schedule(static) if (nch_ > 3)") \
        for (size_t ch_ = 0; ch_ < nch_; ch_++) {                                     \
            size_t i0 = ch_ * CHUNK, len = (n) - i0 < CHUNK ? (n) - i0 : CHUNK;       \
            body;                                                                     \
        }                                                                             \
    } while (0)

void cn_q_quantize(uint8_t *out, const float *x, size_t n, float scale, int32_t zp, int threads) {
    const cn_qops_table *t = ops();
    const float inv = 1.0f / scale, z = (float)zp;
    FOR_CHUNKS(n, threads, t->quantize(out + i0, x + i0, len, inv, z));
}

void cn_q_dequantize(float *out, const uint8_t *q, size_t n, float scale, int32_t zp, int threads) {
    const cn_qops_table *t = ops();
    FOR_CHUNKS(n, threads, t->dequantize(out + i0, q + i0, len, scale, zp));
}

/* the largest shift in [1, 31] that keeps m * 2^sh below limit */
static int32_t shift_for(double m, double limit) {
    int32_t sh = 1;
    while (sh < 31 && m * ldexp(1.0, sh + 1) < limit) sh++;
    return sh;
}

void cn_q_add_params(double sa, double sb, double so, int32_t *ma, int32_t *mb, int32_t *sh) {
    double ra = sa / so, rb = sb / so, r = ra > rb ? ra : rb;
    /* below 2^15, so that the int8 GEMM's fused add multiplies them as int16 (vpmaddwd) */
    *sh = shift_for(r, 32768.0);
    *ma = (int32_t)llround(ldexp(ra, *sh));
    *mb = (int32_t)llround(ldexp(rb, *sh));
}

void cn_q_mul_params(double m, int32_t *mi, int32_t *sh) {
    *sh = shift_for(m, 16384.0); /* 2^14 */
    *mi = (int32_t)llround(ldexp(m, *sh));
}

void cn_q_add(uint8_t *out, const uint8_t *a, const uint8_t *b, size_t n, int32_t za, int32_t zb,
              int32_t zo, int32_t ma, int32_t mb, int32_t sh, int32_t qmin, int32_t qmax,
              int threads) {
    const cn_qops_table *t = ops();
    FOR_CHUNKS(n, threads,
               t->add(out + i0, a + i0, b + i0, len, za, zb, zo, ma, mb, sh, qmin, qmax));
}

void cn_q_add_span(uint8_t *out, const uint8_t *a, const uint8_t *b, size_t n, const cn_qadd *p) {
    ops()->add(out, a, b, n, p->za, p->zb, p->zo, p->ma, p->mb, p->sh, p->qmin, p->qmax);
}

void cn_q_mul(uint8_t *out, const uint8_t *x, const uint8_t *s, int n, size_t hw, int c,
              int32_t zx, int32_t zs, int32_t zo, int32_t m, int32_t sh, int threads) {
    const cn_qops_table *t = ops();
    if (n <= 0 || hw == 0 || c <= 0) return;
    /* the factors (s - zs) * m (the same integers: |product| < 2^30) of each image, repeated
     * over R pixels, so that one call covers R pixels: with narrow rows (32 channels) a call per
     * pixel cost more than its multiplies */
    const size_t R = (size_t)c >= 1024 ? 1 : 1024 / (size_t)c, span = R * (size_t)c;
    const size_t chunks = (hw + R - 1) / R;
    int32_t *f = malloc(sizeof(int32_t) * (size_t)n * span);
    if (!f) { /* a slice of factors at a time on the stack */
        for (size_t r = 0; r < (size_t)n * hw; r++)
            for (int c0 = 0; c0 < c; c0 += 256) {
                int32_t fs[256];
                const int len = c - c0 < 256 ? c - c0 : 256;
                for (int j = 0; j < len; j++) fs[j] = ((int32_t)s[(r / hw) * c + c0 + j] - zs) * m;
                t->mul_row(out + r * c + c0, x + r * c + c0, fs, len, zx, zo, sh);
            }
        return;
    }
    for (int i = 0; i < n; i++)
        for (size_t k = 0; k < span; k++)
            f[(size_t)i * span + k] = ((int32_t)s[(size_t)i * c + k % (size_t)c] - zs) * m;
#pragma omp parallel for num_threads(threads) schedule(static) if ((size_t)n * hw * c >= 65536)
    for (size_t q = 0; q < (size_t)n * chunks; q++) {
        const size_t i = q / chunks, p0 = q % chunks * R;
        const size_t px = hw - p0 < R ? hw - p0 : R, at = (i * hw + p0) * (size_t)c;
        t->mul_row(out + at, x + at, f + i * span, (int)(px * (size_t)c), zx, zo, sh);
    }
    free(f);
}

/* out[j] for cb channels from parts partial sums (stride CB) of their hw pixels */
static void gap_finish(uint8_t *out, const int32_t *a, int parts, int stride, int cb, int hw,
                       int32_t zx, int32_t zo, int32_t m, int32_t sh) {
    for (int j = 0; j < cb; j++) {
        int32_t sum = 0;
        for (int q = 0; q < parts; q++) sum += a[(size_t)q * stride + j];
        out[j] = cn_clamp_u8(zo + cn_rq(sum - zx * hw, m, sh), 0, 255);
    }
}

void cn_q_gap(uint8_t *out, const uint8_t *x, int n, int hw, int c, int32_t zx, int32_t zo,
              int32_t m, int32_t sh, int threads) {
    const cn_qops_table *t = ops();
    enum { CB = 256, PARTS = 8 };
    /* items: (image, slice of <= CB channels, part of the pixels); the parts' integer sums add
     * up in any order to the same value, so the split only spreads the work over threads */
    const int slices = (c + CB - 1) / CB;
    const int parts = (size_t)hw * c >= 65536 && threads > 1 ? PARTS : 1;
    const long items = (long)n * slices * parts;
    int32_t *acc = calloc((size_t)items * CB, sizeof(int32_t));
    if (!acc) { /* one slice at a time on the stack */
        for (int i = 0; i < n; i++)
            for (int c0 = 0; c0 < c; c0 += CB) {
                int32_t a[CB] = {0};
                const int cb = c - c0 < CB ? c - c0 : CB;
                t->sum_rows(a, x + (size_t)i * hw * c + c0, (size_t)hw, (size_t)c, cb);
                gap_finish(out + (size_t)i * c + c0, a, 1, CB, cb, hw, zx, zo, m, sh);
            }
        return;
    }
#pragma omp parallel for num_threads(threads) schedule(static) if (items > 1 && threads > 1)
    for (long it = 0; it < items; it++) {
        const int i = (int)(it / (slices * parts)), s = (int)(it / parts % slices), q = (int)(it % parts);
        const int c0 = s * CB, cb = c - c0 < CB ? c - c0 : CB;
        const size_t p0 = (size_t)hw * q / parts, p1 = (size_t)hw * (q + 1) / parts;
        t->sum_rows(acc + (size_t)it * CB, x + ((size_t)i * hw + p0) * c + c0, p1 - p0, (size_t)c, cb);
    }
    for (int i = 0; i < n; i++)
        for (int s = 0; s < slices; s++) {
            const int c0 = s * CB, cb = c - c0 < CB ? c - c0 : CB;
            gap_finish(out + (size_t)i * c + c0, acc + ((size_t)i * slices + s) * parts * CB,
                       parts, CB, cb, hw, zx, zo, m, sh);
        }
    free(acc);
}

void cn_q_lut(uint8_t *out, const uint8_t *x, size_t n, const uint8_t *lut, int threads) {
    const cn_qops_table *t = ops();
    FOR_CHUNKS(n, threads, t->lut(out + i0, x + i0, len, lut));
}

void cn_q_maxpool(uint8_t *out, const uint8_t *x, int n, int h, int w, int c, int k, int stride,
                  int pad, int oh, int ow, int threads) {
    const cn_qops_table *t = ops();
#pragma omp parallel for collapse(2) num_threads(threads) schedule(static)
    for (int i = 0; i < n; i++)
        for (int y = 0; y < oh; y++)
            for (int xo = 0; xo < ow; xo++) {
                uint8_t *o = out + (((size_t)i * oh + y) * ow + xo) * c;
                memset(o, 0, (size_t)c);
                for (int ky = 0; ky < k; ky++) {
                    int iy = y * stride - pad + ky;
                    if (iy < 0 || iy >= h) continue;
                    for (int kx = 0; kx < k; kx++) {
                        int ix = xo * stride - pad + kx;
                        if (ix < 0 || ix >= w) continue;
                        t->max_row(o, x + (((size_t)i * h + iy) * w + ix) * c, c);
                    }
                }
            }
}

void cn_q_shortcut(uint8_t *out, const uint8_t *x, int n, int h, int w, int c, int oh, int ow,
                   int oc, int stride, uint8_t zp) {
    for (int i = 0; i < n; i++)
        for (int y = 0; y < oh; y++)
            for (int xo = 0; xo < ow; xo++) {
                uint8_t *o = out + (((size_t)i * oh + y) * ow + xo) * oc;
                int iy = y * stride, ix = xo * stride;
                int cc = c < oc ? c : oc;
                if (iy < h && ix < w) memcpy(o, x + (((size_t)i * h + iy) * w + ix) * c, (size_t)cc);
                else memset(o, zp, (size_t)cc);
                memset(o + cc, zp, (size_t)(oc - cc));
            }
}

void cn_q_linear(float *out, const uint8_t *x, const int8_t *w, const int32_t *wsum,
                 const float *ws, const float *b, int n, int k, int oc, int32_t zx, float sx) {
    const cn_qops_table *t = ops();
    const cn_cpu_features *f = cn_cpu();
    int32_t (*dot)(const uint8_t *, const int8_t *, int) =
        cn_cpu_avx512() && f->avx512vnni ? cn_qdot_avx512vnni : t->dot;
    /* threads over the output units (each reads its share of the weights once for all images) */
    const long work = (long)n * oc * k;
#pragma omp parallel for schedule(static) if (work >= (1L << 18))
    for (int o = 0; o < oc; o++)
        for (int i = 0; i < n; i++) {
            int32_t acc = dot(x + (size_t)i * k, w + (size_t)o * k, k);
            acc -= zx * wsum[o];
            out[(size_t)i * oc + o] = (float)acc * (sx * ws[o]) + b[o];
        }
}
