/* Fixed-point quantization: the integers against an independent computation (rounding half away
 * from zero, the range ends, f of tiny, huge and zero tensors, bits 2..16), logits of the
 * dequantized model, file round trips with int8/int16 tensors, and bad bits and bad files. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "model.h"
#include "convnet.h"
#include "io/safetensors.h"

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static float urand(void) { /* xorshift, [0, 1) */
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)((rng_state >> 40) / 16777216.0);
}


static int is_weight(const cn_tensor_info *ti) {
    return ti->ndim == 4 || (ti->ndim == 2 && !strcmp(ti->name, "fc.weight"));
}

/* The reference: the largest f with max * 2^f <= 2^(b-1) - 1, by search (0 for max 0). */
static int ref_frac(double amax, int bits) {
    if (amax == 0) return 0;
    double qmax = ldexp(1, bits - 1) - 1;
    int f = -64;
    for (int k = -64; k <= 64; k++)
        if (ldexp(amax, k) <= qmax) f = k;
    return f;
}

/* round half away from zero, written differently from the library */
static double ref_round(double x) { return x < 0 ? -floor(-x + 0.5) : floor(x + 0.5); }

static float *get(const cn_model *m, int i) {
    cn_tensor_info ti;
    cn_model_tensor_info(m, i, &ti);
    float *v = malloc(sizeof(float) * (size_t)(ti.count + 1));
    cn_model_tensor_get(m, i, v);
    return v;
}

static void frac_bits_rule(void) {
    CHECK(cn_quant_frac_bits(0, 8) == 0, "zero tensor: f = 0");
    CHECK(cn_quant_frac_bits(1.0, 8) == 6, "max 1, 8 bits: f = 6, got %d", cn_quant_frac_bits(1, 8));
    CHECK(cn_quant_frac_bits(127.0 / 64, 8) == 6, "max 127/64 maps exactly to 127");
    CHECK(cn_quant_frac_bits(1e-6, 8) == 26, "tiny: f = 26 > bits, got %d", cn_quant_frac_bits(1e-6, 8));
    CHECK(cn_quant_frac_bits(1000, 8) == -3, "huge: f = -3, got %d", cn_quant_frac_bits(1000, 8));
    CHECK(cn_quant_frac_bits(1e-30, 8) == 64, "f is capped at 64");
    int bad = 0;
    for (int b = 2; b <= 16; b++)
        for (int k = 0; k < 200; k++) {
            double amax = ldexp(0.5 + urand(), (int)(urand() * 60) - 30);
            if (k == 0) amax = ldexp(1, b - 1) - 1;          /* exactly qmax: f = 0 */
            if (k == 1) amax = (ldexp(1, b - 1) - 1) / 1024; /* exactly qmax * 2^-10 */
            bad += cn_quant_frac_bits(amax, b) != ref_frac(amax, b);
        }
    CHECK(bad == 0, "%d frac_bits differ from the reference search", bad);
    CHECK(cn_quant_frac_bits(ldexp(1, 15) - 1, 16) == 0, "qmax at 16 bits: f = 0");
}

/* Every weight of a quantized model is the reference q * 2^-f; nothing else changed. */
static void check_exact(const cn_model *m, const cn_model *q, const cn_quant_report *r, int bits,
                        const char *what) {
    double lo = -ldexp(1, bits - 1), hi = ldexp(1, bits - 1) - 1;
    int k = 0, wrong = 0, wrong_f = 0, changed = 0, out_of_range = 0;
    for (int i = 0; i < cn_model_tensor_count(m); i++) {
        cn_tensor_info ti;
        cn_model_tensor_info(m, i, &ti);
        float *a = get(m, i), *b = get(q, i);
        if (is_weight(&ti)) {
            double amax = 0;
            for (int64_t j = 0; j < ti.count; j++) amax = fmax(amax, fabs(a[j]));
            int f = ref_frac(amax, bits);
            if (k >= r->ntensors || strcmp(r->tensors[k].name, ti.name) || r->tensors[k].frac_bits != f)
                wrong_f++;
            for (int64_t j = 0; j < ti.count; j++) {
                double qv = ref_round(ldexp(a[j], f));
                if (qv < lo || qv > hi) out_of_range++;
                qv = qv < lo ? lo : qv > hi ? hi : qv;
                if ((float)ldexp(qv, -f) != b[j] || (qv == 0 && signbit(b[j]))) wrong++;
            }
            k++;
        } else {
            changed += memcmp(a, b, sizeof(float) * (size_t)ti.count) != 0;
        }
        free(a);
        free(b);
    }
    CHECK(k == r->ntensors, "%s: %d weight tensors, report has %d", what, k, r->ntensors);
    CHECK(wrong == 0 && wrong_f == 0, "%s, %d bits: %d weights and %d f differ from the reference",
          what, bits, wrong, wrong_f);
    CHECK(out_of_range == 0, "%s: %d values past the range end before clamping", what, out_of_range);
    CHECK(changed == 0, "%s: %d biases / BN tensors changed", what, changed);
}

static void exact(void) {
    cn_model *m = test_model("resnet20", 1, 1);
    /* conv1.weight (16x1x3x3): max maps exactly to qmax at f = 3; the other values sit on
     * rounding ties and next to them; layer1.0.conv1 all zero; layer1.0.conv2 tiny; fc huge */
    int c1 = cn_model_tensor_find(m, "conv1.weight"), z = cn_model_tensor_find(m, "layer1.0.conv1.weight");
    int t = cn_model_tensor_find(m, "layer1.0.conv2.weight"), fc = cn_model_tensor_find(m, "fc.weight");
    CHECK(c1 >= 0 && z >= 0 && t >= 0 && fc >= 0, "tensors found");
    cn_tensor_info ti;
    for (int bits = 2; bits <= 16; bits++) {
        double qmax = ldexp(1, bits - 1) - 1;
        float *w = get(m, c1);
        cn_model_tensor_info(m, c1, &ti);
        for (int64_t j = 0; j < ti.count; j++) {
            double v = (urand() * 2 - 1) * qmax; /* in integer units at f = 3 */
            if (j == 0) v = qmax;
            if (j == 1) v = -qmax;
            if (j == 2) v = qmax - 0.5;      /* a tie at the top: rounds to qmax, not past */
            if (j == 3) v = -(qmax - 0.5);
            if (j == 4) v = 0.5;             /* ties away from zero */
            if (j == 5) v = -0.5;
            if (j == 6) v = bits > 2 ? 1.5 : 0.5;
            if (j == 7) v = bits > 2 ? -2.5 : -0.5;
            if (j == 8) v = 0.49999;
            if (j == 9) v = qmax - 0.25;
            w[j] = (float)ldexp(v, -3);
        }
        cn_model_tensor_set(m, c1, w);
        free(w);
        w = get(m, z);
        cn_model_tensor_info(m, z, &ti);
        memset(w, 0, sizeof(float) * (size_t)ti.count);
        cn_model_tensor_set(m, z, w);
        free(w);
        w = get(m, t);
        cn_model_tensor_info(m, t, &ti);
        for (int64_t j = 0; j < ti.count; j++) w[j] = (urand() - 0.5f) * 3e-7f;
        cn_model_tensor_set(m, t, w);
        free(w);
        w = get(m, fc);
        cn_model_tensor_info(m, fc, &ti);
        for (int64_t j = 0; j < ti.count; j++) w[j] = (urand() - 0.5f) * 5e6f;
        cn_model_tensor_set(m, fc, w);
        free(w);

        cn_model *q = NULL;
        cn_quant_report r;
        CHECK(cn_quantize_fixed(&q, m, bits, &r) == CN_OK, "quantize %d: %s", bits, cn_errmsg());
        if (!q) continue;
        char what[32];
        snprintf(what, sizeof what, "resnet20 %d bits", bits);
        check_exact(m, q, &r, bits, what);
        CHECK(r.bits == bits && r.tensors[0].frac_bits == 3, "%d bits: conv1 f = 3, got %d", bits,
              r.tensors[0].frac_bits);
        float *b = get(q, c1);
        CHECK(b[0] == (float)ldexp(qmax, -3) && b[1] == -b[0] && b[2] == b[0] && b[3] == -b[0],
              "%d bits: the range ends map to +-qmax", bits);
        CHECK(b[4] == 0.125f && b[5] == -0.125f && b[6] == (bits > 2 ? 0.25f : 0.125f) &&
                  b[7] == (bits > 2 ? -0.375f : -0.125f) && b[8] == 0 && !signbit(b[8]),
              "%d bits: ties round away from zero (%g %g %g %g %g)", bits, b[4], b[5], b[6], b[7], b[8]);
        free(b);
        CHECK(r.tensors[1].frac_bits == 0 && r.tensors[1].max_abs_err == 0 &&
                  r.tensors[1].rel_rms_err == 0,
              "%d bits: zero tensor f = 0, no error", bits);
        CHECK(r.tensors[2].frac_bits > bits + 15, "%d bits: tiny tensor f = %d", bits, r.tensors[2].frac_bits);
        CHECK(r.tensors[r.ntensors - 1].frac_bits < 0, "%d bits: huge tensor f = %d < 0", bits,
              r.tensors[r.ntensors - 1].frac_bits);
        /* the report's errors against the definition */
        double maxe = 0;
        for (int i = 0; i < r.ntensors; i++) maxe = fmax(maxe, r.tensors[i].max_abs_err);
        CHECK(maxe == r.max_abs_err, "%d bits: total max error is the largest", bits);
        for (int i = 0; i < r.ntensors; i++)
            if (r.tensors[i].max_abs_err > ldexp(0.5, -r.tensors[i].frac_bits) * (1 + 1e-6))
                CHECK(0, "%d bits: %s error %g beyond half a step", bits, r.tensors[i].name,
                      r.tensors[i].max_abs_err);
        CHECK(cn_model_quant_bits(q) == bits && cn_model_quant_bits(m) == 0, "quant bits recorded");
        cn_quant_report_free(&r);
        cn_model_free(q);
    }
    cn_model_free(m);
}

static void logits(void) {
    cn_model *m = test_model("resnet20", 1, 3);
    int n = 4;
    float *x = malloc(sizeof(float) * n * 28 * 28), lf[40], lq[40];
    for (int i = 0; i < n * 28 * 28; i++) x[i] = urand() * 2 - 1;
    CHECK(cn_model_forward(m, x, n, 28, 28, 0, lf) == CN_OK, "forward: %s", cn_errmsg());
    int bitsv[] = {8, 16};
    double tol[] = {3e-2, 1e-3}; /* max |dlogit| / max |logit|; 8 bits measures ~2.2e-2 */
    for (int k = 0; k < 2; k++) {
        cn_model *q = NULL;
        CHECK(cn_quantize_fixed(&q, m, bitsv[k], NULL) == CN_OK, "quantize: %s", cn_errmsg());
        if (!q) continue;
        CHECK(cn_model_forward(q, x, n, 28, 28, 0, lq) == CN_OK, "forward q: %s", cn_errmsg());
        double e = max_rel_err(lq, lf, (size_t)n * 10, 1e-3);
        CHECK(e < tol[k], "%d bits: logits relative error %g >= %g", bitsv[k], e, tol[k]);
        printf("  %d bits: logits relative error %.3g\n", bitsv[k], e);
        cn_model_free(q);
    }
    free(x);
    cn_model_free(m);
}

static int same_state(const cn_model *a, const cn_model *b) {
    for (int i = 0; i < cn_model_tensor_count(a); i++) {
        cn_tensor_info ti;
        cn_model_tensor_info(a, i, &ti);
        float *x = get(a, i), *y = get(b, i);
        int d = memcmp(x, y, sizeof(float) * (size_t)ti.count);
        free(x);
        free(y);
        if (d) return 0;
    }
    return 1;
}

static cn_dtype file_dtype(const char *path, const char *name) {
    cn_st_file *f;
    if (cn_st_open(&f, path) != CN_OK) return CN_DT_BOOL;
    const cn_st_tensor *t = cn_st_find(f, name);
    cn_dtype d = t ? t->dtype : CN_DT_BOOL;
    cn_st_close(f);
    return d;
}

/* The b-bit integers of a packed tensor, decoded here on their own: element i at bits
 * [i b, (i + 1) b) of the little-endian byte stream, two's complement. */
static long unpack_ref(const unsigned char *p, size_t i, int bits) {
    unsigned long v = 0;
    for (int k = 0; k < bits; k++) {
        size_t bit = i * (size_t)bits + (size_t)k;
        v |= (unsigned long)((p[bit / 8] >> (bit % 8)) & 1) << k;
    }
    return v >= 1ul << (bits - 1) ? (long)v - (1l << bits) : (long)v;
}

/* conv1.weight of a packed file against the model's weights: w * 2^f == the stored integer */
static void check_packed(const char *path, const cn_model *q, int bits) {
    cn_st_file *f = NULL;
    if (cn_st_open(&f, path) != CN_OK) {
        CHECK(0, "open %s: %s", path, cn_errmsg());
        return;
    }
    const cn_st_tensor *t = cn_st_find(f, "conv1.weight");
    const char *qm = cn_st_meta(f, "quant");
    const char *fp = qm ? strstr(qm, "\"conv1.weight\":") : NULL;
    int frac = fp ? atoi(fp + strlen("\"conv1.weight\":")) : 0;
    CHECK(qm && strstr(qm, "\"packed\":true") && fp, "%d bits: metadata says packed: %s", bits,
          qm ? qm : "(none)");
    int c1 = cn_model_tensor_find(q, "conv1.weight");
    cn_tensor_info ti;
    cn_model_tensor_info(q, c1, &ti);
    size_t n = (size_t)ti.count, nb = (n * (size_t)bits + 7) / 8;
    CHECK(t && t->dtype == CN_DT_U8 && t->ndim == 1 && (size_t)t->shape[0] == nb,
          "%d bits: conv1.weight is %zu bytes of U8", bits, nb);
    if (t && t->dtype == CN_DT_U8 && (size_t)t->shape[0] == nb) {
        float *w = get(q, c1);
        int bad = 0;
        for (size_t i = 0; i < n; i++)
            if (ldexp(w[i], frac) != (double)unpack_ref(t->data, i, bits)) bad++;
        CHECK(bad == 0, "%d bits: %d packed integers differ from w * 2^%d", bits, bad, frac);
        /* the bits after the last element are 0 */
        size_t used = n * (size_t)bits;
        const unsigned char *b = t->data;
        CHECK(used % 8 == 0 || (b[nb - 1] >> (used % 8)) == 0, "%d bits: padding bits set", bits);
        free(w);
    }
    cn_st_close(f);
}

static void round_trip(const char *dir) {
    cn_model *m = test_model("resnet20", 1, 5);
    char path[512], path2[512];
    snprintf(path, sizeof path, "%s/q.safetensors", dir);
    snprintf(path2, sizeof path2, "%s/q2.safetensors", dir);
    int bitsv[] = {2, 3, 4, 5, 7, 8, 9, 12, 15, 16};
    long size8 = 0, size4 = 0;
    for (int k = 0; k < 10; k++) {
        int bits = bitsv[k], packed = bits != 8 && bits != 16;
        cn_model *q = NULL, *l = NULL, *l2 = NULL;
        CHECK(cn_quantize_fixed(&q, m, bits, NULL) == CN_OK, "quantize: %s", cn_errmsg());
        CHECK(cn_model_save(q, path) == CN_OK, "save: %s", cn_errmsg());
        cn_dtype want = packed ? CN_DT_U8 : bits <= 8 ? CN_DT_I8 : CN_DT_I16;
        CHECK(file_dtype(path, "conv1.weight") == want && file_dtype(path, "fc.weight") == want &&
                  file_dtype(path, "fc.bias") == CN_DT_F32 && file_dtype(path, "bn1.weight") == CN_DT_F32,
              "%d bits: weights stored as %s, the rest F32", bits, cn_dtype_name(want));
        if (packed) check_packed(path, q, bits);
        FILE *fs = fopen(path, "rb");
        long size = fs && !fseek(fs, 0, SEEK_END) ? ftell(fs) : -1;
        if (fs) fclose(fs);
        if (bits == 8) size8 = size;
        if (bits == 4) size4 = size;
        CHECK(cn_model_load(&l, path, NULL) == CN_OK, "load %d bits: %s", bits, cn_errmsg());
        if (l) {
            CHECK(same_state(q, l), "%d bits: the reloaded model has the same dequantized weights", bits);
            CHECK(cn_model_quant_bits(l) == bits, "%d bits: reloaded as quantized", bits);
            /* saved again, still integers */
            CHECK(cn_model_save(l, path2) == CN_OK && file_dtype(path2, "layer3.2.conv2.weight") == want,
                  "%d bits: a reloaded model saves as integers again", bits);
            CHECK(cn_model_load(&l2, path2, NULL) == CN_OK && same_state(q, l2), "%d bits: second round trip", bits);
        }
        cn_model_free(l2);
        cn_model_free(l);
        cn_model_free(q);
    }
    /* ResNet-20: ~270k weights; 4 bits saves ~135 KB over 8 */
    CHECK(size4 > 0 && size8 > 0 && size8 - size4 > 120000, "4-bit file %ld bytes, 8-bit %ld",
          size4, size8);
    printf("fixed-point files: 4 bits %ld bytes, 8 bits %ld bytes\n", size4, size8);
    /* a weight that no longer fits its integers (changed after quantizing) is saved as F32 */
    cn_model *q = NULL, *l = NULL;
    CHECK(cn_quantize_fixed(&q, m, 8, NULL) == CN_OK, "quantize: %s", cn_errmsg());
    int c1 = cn_model_tensor_find(q, "conv1.weight");
    float *w = get(q, c1);
    w[0] += 1e-4f;
    cn_model_tensor_set(q, c1, w);
    free(w);
    CHECK(cn_model_save(q, path) == CN_OK, "save: %s", cn_errmsg());
    CHECK(file_dtype(path, "conv1.weight") == CN_DT_F32 && file_dtype(path, "fc.weight") == CN_DT_I8,
          "a changed weight falls back to F32, the others stay I8");
    CHECK(cn_model_load(&l, path, NULL) == CN_OK && same_state(q, l), "and reloads exactly: %s", cn_errmsg());
    cn_model_free(l);
    cn_model_free(q);
    unlink(path);
    unlink(path2);
    cn_model_free(m);
}

/* src with metadata "quant" replaced by quant (NULL: kept) and tensor tname (if any) replaced by
 * dtype dt and data, written to dst. */
static void rewrite_shape(const char *src, const char *dst, const char *quant, const char *tname,
                          cn_dtype dt, const void *data, int ndim, const int64_t *shape) {
    cn_st_file *f = NULL;
    cn_st_writer *w = NULL;
    CHECK(cn_st_open(&f, src) == CN_OK && cn_st_writer_new(&w) == CN_OK, "rewrite: %s", cn_errmsg());
    if (!f || !w) goto out;
    for (int i = 0; i < cn_st_meta_count(f); i++) {
        const char *k, *v;
        cn_st_meta_at(f, i, &k, &v);
        cn_st_writer_meta(w, k, !strcmp(k, "quant") && quant ? quant : v);
    }
    for (int i = 0; i < cn_st_count(f); i++) {
        const cn_st_tensor *t = cn_st_at(f, i);
        if (tname && !strcmp(t->name, tname))
            cn_st_writer_add(w, t->name, dt, ndim ? ndim : t->ndim, ndim ? shape : t->shape, data);
        else cn_st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data);
    }
    CHECK(cn_st_writer_save(w, dst) == CN_OK, "rewrite save: %s", cn_errmsg());
out:
    cn_st_writer_free(w);
    cn_st_close(f);
}

static void rewrite(const char *src, const char *dst, const char *quant, const char *tname,
                    cn_dtype dt, const void *data) {
    rewrite_shape(src, dst, quant, tname, dt, data, 0, NULL);
}

static void expect_bad(const char *path, const char *what, const char *needle) {
    cn_model *l = NULL;
    cn_status st = cn_model_load(&l, path, NULL);
    const char *msg = cn_errmsg();
    CHECK(st == CN_ERR_FORMAT && strstr(msg, path) && strstr(msg, needle),
          "%s: expected a format error naming the file and '%s', got %s: %s", what, needle,
          cn_status_name(st), msg);
    cn_model_free(l);
}

static void bad(const char *dir) {
    cn_model *m = test_model("resnet20", 1, 7), *q = NULL;
    CHECK(cn_quantize_fixed(&q, m, 1, NULL) == CN_ERR_ARG && strstr(cn_errmsg(), "[2, 16]") && !q,
          "bits 1: %s", cn_errmsg());
    CHECK(cn_quantize_fixed(&q, m, 17, NULL) == CN_ERR_ARG && strstr(cn_errmsg(), "17") && !q,
          "bits 17: %s", cn_errmsg());
    CHECK(cn_quantize_fixed(&q, NULL, 8, NULL) == CN_ERR_ARG, "NULL model");
    {
        cn_model *nan_m = test_model("resnet20", 1, 8);
        int i = cn_model_tensor_find(nan_m, "layer2.0.conv1.weight");
        float *w = get(nan_m, i);
        w[3] = NAN;
        cn_model_tensor_set(nan_m, i, w);
        free(w);
        CHECK(cn_quantize_fixed(&q, nan_m, 8, NULL) == CN_ERR_ARG &&
                  strstr(cn_errmsg(), "layer2.0.conv1.weight") && !q,
              "a NaN weight is an error naming the tensor: %s", cn_errmsg());
        cn_model_free(nan_m);
    }
    char good[512], badp[512];
    snprintf(good, sizeof good, "%s/good4.safetensors", dir);
    snprintf(badp, sizeof badp, "%s/bad.safetensors", dir);
    CHECK(cn_quantize_fixed(&q, m, 4, NULL) == CN_OK && cn_model_save(q, good) == CN_OK, "save: %s", cn_errmsg());
    cn_model_free(q);
    q = NULL;
    /* the frac_bits map of the good file, as written */
    cn_st_file *f = NULL;
    CHECK(cn_st_open(&f, good) == CN_OK && cn_st_meta(f, "quant"), "quant metadata present");
    char *qs = f && cn_st_meta(f, "quant") ? strdup(cn_st_meta(f, "quant")) : strdup("{}");
    char *edit = malloc(strlen(qs) + 256);
    cn_st_close(f);

    rewrite(good, badp, "not json", NULL, 0, NULL);
    expect_bad(badp, "unparsable quant", "quant");
    rewrite(good, badp, "{\"scheme\":\"affine\",\"bits\":4,\"frac_bits\":{}}", NULL, 0, NULL);
    expect_bad(badp, "unknown scheme", "affine");
    rewrite(good, badp, "{\"scheme\":\"fixed\",\"bits\":17,\"frac_bits\":{}}", NULL, 0, NULL);
    expect_bad(badp, "bits 17", "bits");
    /* conv1.weight missing from frac_bits */
    char *p = strstr(qs, "\"conv1.weight\":");
    if (p) {
        char *comma = strchr(p, ',');
        size_t pre = (size_t)(p - qs);
        memcpy(edit, qs, pre);
        strcpy(edit + pre, comma + 1);
        rewrite(good, badp, edit, NULL, 0, NULL);
        expect_bad(badp, "missing frac_bits", "conv1.weight");
        /* conv1.weight out of range */
        memcpy(edit, qs, pre);
        sprintf(edit + pre, "\"conv1.weight\":65,%s", comma + 1);
        rewrite(good, badp, edit, NULL, 0, NULL);
        expect_bad(badp, "frac_bits 65", "conv1.weight");
        memcpy(edit, qs, pre);
        sprintf(edit + pre, "\"conv1.weight\":\"3\",%s", comma + 1);
        rewrite(good, badp, edit, NULL, 0, NULL);
        expect_bad(badp, "frac_bits a string", "conv1.weight");
        /* a bias listed as quantized */
        memcpy(edit, qs, pre);
        sprintf(edit + pre, "\"fc.bias\":3,%s", p);
        rewrite(good, badp, edit, NULL, 0, NULL);
        expect_bad(badp, "a bias in frac_bits", "fc.bias");
    } else {
        CHECK(0, "conv1.weight not in %s", qs);
    }
    /* the packed form: a byte short, 'packed' not a boolean */
    cn_tensor_info ti;
    cn_model_tensor_info(m, cn_model_tensor_find(m, "conv1.weight"), &ti);
    int64_t nb = (ti.count * 4 + 7) / 8 - 1;
    uint8_t *u8 = calloc((size_t)ti.count, 1);
    rewrite_shape(good, badp, NULL, "conv1.weight", CN_DT_U8, u8, 1, &nb);
    expect_bad(badp, "packed tensor a byte short", "conv1.weight");
    nb++;
    rewrite_shape(good, badp, NULL, "conv1.weight", CN_DT_U8, u8, 1, &nb);
    cn_model *l = NULL;
    CHECK(cn_model_load(&l, badp, NULL) == CN_OK, "packed zeros load: %s", cn_errmsg());
    cn_model_free(l);
    l = NULL;
    p = strstr(qs, "\"packed\":true");
    CHECK(p != NULL, "4-bit metadata has packed: %s", qs);
    if (p) {
        size_t pre = (size_t)(p - qs);
        memcpy(edit, qs, pre);
        sprintf(edit + pre, "\"packed\":\"yes\"%s", p + strlen("\"packed\":true"));
        rewrite(good, badp, edit, NULL, 0, NULL);
        expect_bad(badp, "packed a string", "packed");
        /* without 'packed' a file holds one int8 (or int16) per weight, as convnet once wrote */
        memcpy(edit, qs, pre);
        strcpy(edit + pre, p + strlen("\"packed\":true,"));
    }
    const char *unpacked = p ? edit : qs;
    /* values and dtypes of the unpacked form */
    int8_t *i8 = calloc((size_t)ti.count, 1);
    int16_t *i16 = calloc((size_t)ti.count, 2);
    float *f32 = calloc((size_t)ti.count, 4);
    i8[5] = 8; /* 4 bits: [-8, 7] */
    rewrite_shape(good, badp, unpacked, "conv1.weight", CN_DT_I8, i8, ti.ndim, ti.shape);
    expect_bad(badp, "int8 value 8 at 4 bits", "conv1.weight");
    i8[5] = -9;
    rewrite_shape(good, badp, unpacked, "conv1.weight", CN_DT_I8, i8, ti.ndim, ti.shape);
    expect_bad(badp, "int8 value -9 at 4 bits", "conv1.weight");
    i8[5] = -8;
    rewrite_shape(good, badp, unpacked, "conv1.weight", CN_DT_I8, i8, ti.ndim, ti.shape);
    /* -8 is in range, but the other weights are still packed, which this metadata does not say */
    CHECK(cn_model_load(&l, badp, NULL) != CN_OK && !l, "an unpacked tensor among packed ones");
    cn_model_free(l);
    l = NULL;
    free(u8);
    rewrite_shape(good, badp, NULL, "conv1.weight", CN_DT_I16, i16, ti.ndim, ti.shape);
    expect_bad(badp, "int16 at 4 bits", "conv1.weight");
    rewrite_shape(good, badp, NULL, "conv1.weight", CN_DT_F32, f32, ti.ndim, ti.shape);
    expect_bad(badp, "float tensor listed in frac_bits", "conv1.weight");
    /* integers without quant metadata */
    cn_model *fm = NULL;
    snprintf(edit, 512, "%s/float.safetensors", dir);
    CHECK(cn_model_save(m, edit) == CN_OK, "save float: %s", cn_errmsg());
    rewrite(edit, badp, NULL, "conv1.weight", CN_DT_I8, i8);
    expect_bad(badp, "int8 weight without quant metadata", "conv1.weight");
    cn_model_free(fm);
    unlink(edit);
    free(i8);
    free(i16);
    free(f32);
    free(edit);
    free(qs);
    unlink(good);
    unlink(badp);
    cn_model_free(m);
}

int main(void) {
    char dir[] = "/tmp/convnet-quant.XXXXXX";
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    frac_bits_rule();
    exact();
    logits();
    round_trip(dir);
    bad(dir);
    rmdir(dir);
    return check_summary("quant");
}
