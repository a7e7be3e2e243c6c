/* convnet quantize */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/cli.h"

static const char *help =
    "usage: convnet quantize MODEL --scheme int8 --data SPEC --out OUT.safetensors [options]\n"
    "       convnet quantize MODEL --scheme fixed --bits B --out OUT.safetensors [options]\n"
    "       convnet quantize MODEL --scheme fixed --sweep A..B --data SPEC [options]\n"
    "\n"
    "int8 inference: batch norms folded into the convolutions; weights int8 symmetric per output\n"
    "channel; activations uint8 per tensor with ranges calibrated on --calib training images of\n"
    "--data; int32 biases; requantization by an integer multiplier and shift; residual adds,\n"
    "pooling and the SE product in integers; SiLU and sigmoid as 256-entry tables. OUT holds\n"
    "int8 weights, int32 biases, float32 scales and zero points; eval, forward, bench, info and\n"
    "predict run it. Prints the test accuracy of MODEL and OUT and both file sizes.\n"
    "\n"
    "Fixed-point weight quantization: every convolution and linear weight tensor (not biases,\n"
    "not batch norms) becomes B-bit integers times 2^-f, with f per tensor the largest integer\n"
    "such that max|w| * 2^f <= 2^(B-1) - 1; values round half away from zero and saturate at\n"
    "the range ends. Prints per tensor f, the largest absolute error and the RMS error relative\n"
    "to the weights' RMS, the file sizes before and after and, given --data, the accuracy.\n"
    "OUT stores each quantized weight as an int8 (B <= 8) or int16 tensor plus the metadata\n"
    "\"quant\"; every command loads it (dequantized to float32). MODEL is never modified.\n"
    "\n"
    "  MODEL                 a .safetensors model (convnet's, or torchvision's with --model NAME)\n"
    "  --model NAME          the architecture of a plain torchvision state_dict\n"
    "  --scheme int8|fixed   the scheme\n"
    "  --calib N             int8: calibration images from the training split (default 512)\n"
    "  --calibration M       int8: minmax (default), percentile or mse\n"
    "  --percentile P        int8 percentile: clip beyond this percentile (default 99.99)\n"
    "  --batch N             int8: calibration batch (default 64)\n"
    "  --sensitivity         int8: print per layer the SQNR of its output (dB; each layer on the\n"
    "                        float model's input, so the noise is its own)\n"
    "  --keep-float L1,L2    int8: keep these convolutions / linear layers in float32\n"
    "  --auto-mixed K        int8: also keep the K layers of lowest SQNR in float32\n"
    "  --bits B              bits per weight, in [2, 16]\n"
    "  --out FILE            the quantized model (written atomically)\n"
    "  --sweep A..B          no model written: one row per bit width A..B (2 <= A <= B <= 16)\n"
    "                        with accuracy, packed size and weight errors; needs --data\n"
    "  --data SPEC           a dataset (fashion-mnist[:DIR], cifar10:DIR, folder:DIR, ...):\n"
    "                        int8 calibrates on its training split; both measure test accuracy\n"
    "  --limit-test N        evaluate on the first N test samples (default all)\n"
    "  --threads N           default: all cores\n"
    "  --json                the report as JSON on stdout (the table goes to stderr)\n"
    "\n"
    "Sizes: 'file' is the safetensors file, where --scheme fixed stores the weights as B-bit\n"
    "integers packed back to back (int8 / int16 tensors for 8 and 16 bits); 'packed' counts\n"
    "B bits per quantized weight and 4 bytes per other float, without the file's header.\n";

typedef struct quant_opts {
    cli_model_opts mo;
    const char *scheme, *out, *data;
    int bits, limit_test, sweep_lo, sweep_hi;
    int calib, sensitivity, auto_mixed;
    const char *keep_float;
    cn_calib_method method;
    float percentile;
} quant_opts;

static int parse_sweep(const char *C, const char *s, quant_opts *p) {
    int a, b, n = 0;
    if (sscanf(s, "%d..%d%n", &a, &b, &n) != 2 || s[n] || a < 2 || b > 16 || a > b) {
        cli_err(C, "--sweep '%s': expected A..B with 2 <= A <= B <= 16", s);
        return -1;
    }
    p->sweep_lo = a;
    p->sweep_hi = b;
    return 0;
}

/* 1: consumed, 0: not ours, -1: bad value */
static int parse_one(const char *C, void *opts, int argc, char **argv, int *i) {
    quant_opts *p = opts;
    const char *a = argv[*i], *v;
    static const char *const valued[] = {"--scheme", "--bits", "--out", "--sweep", "--data",
                                         "--limit-test", "--calib", "--calibration",
                                         "--percentile", "--keep-float", "--auto-mixed"};
    if (!strcmp(a, "--sensitivity")) {
        p->sensitivity = 1;
        return 1;
    }
    int val = 0;
    for (size_t k = 0; k < sizeof valued / sizeof *valued; k++) val |= !strcmp(a, valued[k]);
    if (!val) return 0;
    if (!(v = cli_value(C, argc, argv, i))) return -1;
    int bad = 0;
    if (!strcmp(a, "--scheme")) p->scheme = v;
    else if (!strcmp(a, "--bits")) bad = cli_int(C, a, v, 2, 16, &p->bits);
    else if (!strcmp(a, "--out")) p->out = v;
    else if (!strcmp(a, "--sweep")) bad = parse_sweep(C, v, p);
    else if (!strcmp(a, "--data")) p->data = v;
    else if (!strcmp(a, "--keep-float")) p->keep_float = v;
    else if (!strcmp(a, "--auto-mixed")) bad = cli_int(C, a, v, 0, 100000, &p->auto_mixed);
    else if (!strcmp(a, "--calib")) bad = cli_int(C, a, v, 1, 10000000, &p->calib);
    else if (!strcmp(a, "--percentile")) bad = cli_float(C, a, v, 50.000001, 100, &p->percentile);
    else if (!strcmp(a, "--calibration")) {
        if (!strcmp(v, "minmax")) p->method = CN_CALIB_MINMAX;
        else if (!strcmp(v, "percentile")) p->method = CN_CALIB_PERCENTILE;
        else if (!strcmp(v, "mse")) p->method = CN_CALIB_MSE;
        else {
            cli_err(C, "--calibration '%s': expected minmax, percentile or mse", v);
            bad = -1;
        }
    } else bad = cli_int(C, a, v, 1, 1 << 30, &p->limit_test);
    return bad ? -1 : 1;
}

static int same_file(const char *a, const char *b) {
    struct stat x, y;
    return stat(a, &x) == 0 && stat(b, &y) == 0 && x.st_dev == y.st_dev && x.st_ino == y.st_ino;
}

static long long file_size(const char *path) {
    struct stat st;
    return path && stat(path, &st) == 0 ? (long long)st.st_size : -1;
}

static int validate(const char *C, quant_opts *p) {
    if (!p->scheme) {
        cli_err(C, "--scheme is required (int8 or fixed)");
        return EXIT_USAGE;
    }
    int int8 = !strcmp(p->scheme, "int8");
    if (!int8 && strcmp(p->scheme, "fixed") != 0) {
        cli_err(C, "--scheme '%s': expected int8 or fixed", p->scheme);
        return EXIT_USAGE;
    }
    if (int8) {
        if (p->bits || p->sweep_lo) {
            cli_err(C, "%s belongs to --scheme fixed", p->bits ? "--bits" : "--sweep");
            return EXIT_USAGE;
        }
        if (!p->out) {
            cli_err(C, "--out FILE is required");
            return EXIT_USAGE;
        }
        if (p->mo.path && same_file(p->mo.path, p->out)) {
            cli_err(C, "--out %s is the input model %s: write the quantized model elsewhere",
                    p->out, p->mo.path);
            return EXIT_USAGE;
        }
        return 0;
    }
    if (p->calib || p->method != CN_CALIB_MINMAX || p->percentile || p->sensitivity ||
        p->keep_float || p->auto_mixed) {
        cli_err(C, "--calib, --calibration, --percentile, --sensitivity, --keep-float and "
                   "--auto-mixed belong to --scheme int8");
        return EXIT_USAGE;
    }
    if (p->sweep_lo) {
        if (!p->data) {
            cli_err(C, "--sweep needs --data SPEC to measure accuracy");
            return EXIT_USAGE;
        }
        if (p->out || p->bits) {
            cli_err(C, "--sweep writes no model: drop %s", p->out ? "--out" : "--bits");
            return EXIT_USAGE;
        }
    } else {
        if (!p->bits) {
            cli_err(C, "--bits B is required (or --sweep A..B)");
            return EXIT_USAGE;
        }
        if (!p->out) {
            cli_err(C, "--out FILE is required (or --sweep A..B)");
            return EXIT_USAGE;
        }
        if (p->mo.path && same_file(p->mo.path, p->out)) {
            cli_err(C, "--out %s is the input model %s: write the quantized model elsewhere",
                    p->out, p->mo.path);
            return EXIT_USAGE;
        }
    }
    if (p->limit_test && !p->data) {
        cli_err(C, "--limit-test needs --data SPEC");
        return EXIT_USAGE;
    }
    return 0;
}

static cn_status evaluate(cn_model *m, const quant_opts *p, float *acc) {
    float loss;
    int count;
    return cn_evaluate(m, p->data, 0, 500, p->limit_test, acc, &loss, &count);
}

static int64_t float_bytes(const cn_quant_report *r) {
    /* the same state all float32: counters are the rest of packed_bytes */
    int64_t counters = r->packed_bytes - (r->quant_params * r->bits + 7) / 8 - 4 * r->float_params;
    return 4 * (r->quant_params + r->float_params) + counters;
}

static int run_sweep(const char *C, const quant_opts *p, cn_model *m) {
    FILE *tx = p->mo.json ? stderr : stdout;
    float acc0;
    cn_status st = evaluate(m, p, &acc0);
    if (st != CN_OK) return cli_fail(C, st);
    cJSON *j = p->mo.json ? cJSON_CreateObject() : NULL, *rows = NULL;
    if (j) {
        cJSON_AddStringToObject(j, "scheme", "fixed");
        cJSON_AddNumberToObject(j, "acc_float", acc0);
        rows = cJSON_AddArrayToObject(j, "sweep");
    }
    fprintf(tx, "%-8s %9s %13s %12s %12s\n", "bits", "accuracy", "packed bytes", "max |err|",
            "rel RMS err");
    for (int b = p->sweep_lo; b <= p->sweep_hi; b++) {
        cn_model *q;
        cn_quant_report r;
        float acc;
        st = cn_quantize_fixed(&q, m, b, &r);
        if (st == CN_OK) {
            st = evaluate(q, p, &acc);
            cn_model_free(q);
        }
        if (st != CN_OK) {
            cJSON_Delete(j);
            return cli_fail(C, st);
        }
        if (b == p->sweep_lo)
            fprintf(tx, "%-8s %8.2f%% %13lld %12s %12s\n", "float32", 100.0 * acc0,
                    (long long)float_bytes(&r), "-", "-");
        fprintf(tx, "%-8d %8.2f%% %13lld %12.3g %12.3g\n", b, 100.0 * acc,
                (long long)r.packed_bytes, r.max_abs_err, r.rel_rms_err);
        if (rows) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddNumberToObject(o, "bits", b);
            cJSON_AddNumberToObject(o, "accuracy", acc);
            cJSON_AddNumberToObject(o, "packed_bytes", (double)r.packed_bytes);
            cJSON_AddNumberToObject(o, "max_abs_err", r.max_abs_err);
            cJSON_AddNumberToObject(o, "rel_rms_err", r.rel_rms_err);
            cJSON_AddItemToArray(rows, o);
        }
        cn_quant_report_free(&r);
    }
    if (j) cli_print_json(j);
    return EXIT_OK;
}

static int run_quantize(const char *C, const quant_opts *p, cn_model *m) {
    FILE *tx = p->mo.json ? stderr : stdout;
    float acc0 = 0, acc1 = 0;
    cn_status st = CN_OK;
    if (p->data && (st = evaluate(m, p, &acc0)) != CN_OK) return cli_fail(C, st);
    cn_model *q;
    cn_quant_report r;
    if ((st = cn_quantize_fixed(&q, m, p->bits, &r)) != CN_OK) return cli_fail(C, st);
    if ((st = cn_model_save(q, p->out)) != CN_OK) {
        cn_model_free(q);
        cn_quant_report_free(&r);
        return cli_fail(C, st);
    }
    if (p->data) st = evaluate(q, p, &acc1);
    cn_model_free(q);
    if (st != CN_OK) {
        cn_quant_report_free(&r);
        return cli_fail(C, st);
    }
    long long before = file_size(p->mo.path), after = file_size(p->out);
    fprintf(tx, "%-40s %6s %10s %12s %12s\n", "tensor", "f", "weights", "max |err|",
            "rel RMS err");
    for (int i = 0; i < r.ntensors; i++) {
        const cn_quant_tensor *t = &r.tensors[i];
        fprintf(tx, "%-40s %6d %10lld %12.3g %12.3g\n", t->name, t->frac_bits,
                (long long)t->count, t->max_abs_err, t->rel_rms_err);
    }
    fprintf(tx, "%-40s %6s %10lld %12.3g %12.3g\n", "total", "", (long long)r.quant_params,
            r.max_abs_err, r.rel_rms_err);
    fprintf(tx, "\nfixed point, %d bits: %lld weights quantized, %lld other values kept float32\n",
            r.bits, (long long)r.quant_params, (long long)r.float_params);
    if (before >= 0)
        fprintf(tx, "file size: %lld -> %lld bytes (%.1f%%; %d-bit weights and float32 rest: "
                "%lld bytes)\n", before, after, 100.0 * after / (before ? before : 1), r.bits,
                (long long)r.packed_bytes);
    else
        fprintf(tx, "file size: %lld bytes; packed %d-bit: %lld bytes\n", after, r.bits,
                (long long)r.packed_bytes);
    if (p->data)
        fprintf(tx, "accuracy: %.2f%% -> %.2f%%\n", 100.0 * acc0, 100.0 * acc1);
    fprintf(tx, "wrote %s\n", p->out);
    if (p->mo.json) {
        cJSON *j = cJSON_CreateObject(), *ts = cJSON_AddArrayToObject(j, "tensors");
        cJSON_AddStringToObject(j, "scheme", "fixed");
        cJSON_AddNumberToObject(j, "bits", r.bits);
        cJSON_AddStringToObject(j, "out", p->out);
        for (int i = 0; i < r.ntensors; i++) {
            const cn_quant_tensor *t = &r.tensors[i];
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "name", t->name);
            cJSON_AddNumberToObject(o, "frac_bits", t->frac_bits);
            cJSON_AddNumberToObject(o, "count", (double)t->count);
            cJSON_AddNumberToObject(o, "max_abs_err", t->max_abs_err);
            cJSON_AddNumberToObject(o, "rel_rms_err", t->rel_rms_err);
            cJSON_AddItemToArray(ts, o);
        }
        cJSON_AddNumberToObject(j, "max_abs_err", r.max_abs_err);
        cJSON_AddNumberToObject(j, "rel_rms_err", r.rel_rms_err);
        cJSON_AddNumberToObject(j, "quant_params", (double)r.quant_params);
        cJSON_AddNumberToObject(j, "float_params", (double)r.float_params);
        if (before >= 0) cJSON_AddNumberToObject(j, "size_before", (double)before);
        cJSON_AddNumberToObject(j, "size_after", (double)after);
        cJSON_AddNumberToObject(j, "packed_bytes", (double)r.packed_bytes);
        if (p->data) {
            cJSON_AddNumberToObject(j, "acc_before", acc0);
            cJSON_AddNumberToObject(j, "acc_after", acc1);
        }
        cli_print_json(j);
    }
    cn_quant_report_free(&r);
    return EXIT_OK;
}

static const char *method_name(cn_calib_method m) {
    return m == CN_CALIB_PERCENTILE ? "percentile" : m == CN_CALIB_MSE ? "mse" : "minmax";
}

static int run_int8(const char *C, const quant_opts *p, cn_model *m) {
    FILE *tx = p->mo.json ? stderr : stdout;
    if (cn_model_is_int8(m)) {
        cli_err(C, "%s is already an int8 model", p->mo.path ? p->mo.path : "the model");
        return EXIT_USAGE;
    }
    int qat = cn_model_is_qat(m);
    if (!p->data && !qat) {
        cli_err(C, "--scheme int8 needs --data SPEC (calibration images)");
        return EXIT_USAGE;
    }
    cn_int8_config c;
    cn_int8_config_default(&c);
    c.data = p->data;
    if (p->calib) c.images = p->calib;
    c.method = p->method;
    if (p->percentile) c.percentile = p->percentile;
    if (p->mo.batch > 1) c.batch = p->mo.batch;
    c.keep_float = p->keep_float;
    c.auto_mixed = p->auto_mixed;
    c.data_opts.input_size = p->mo.h;
    float acc0 = 0, acc1 = 0;
    cn_status st = p->data ? evaluate(m, p, &acc0) : CN_OK;
    if (st != CN_OK) return cli_fail(C, st);
    if (qat) fprintf(stderr, "a QAT model: its learned ranges, no calibration\n");
    else fprintf(stderr, "calibrating on %d images of %s (%s)...\n", c.images, p->data,
                 method_name(c.method));
    double t0 = cli_now();
    cn_model *q;
    cn_int8_report rep;
    int want_rep = p->sensitivity || p->auto_mixed;
    if ((st = cn_quantize_int8(&q, m, &c, want_rep ? &rep : NULL)) != CN_OK) return cli_fail(C, st);
    double tq = cli_now() - t0;
    if (want_rep) {
        fprintf(tx, "%-36s %-10s %14s %10s %6s\n", "layer", "op", "MACs", "SQNR dB", "float");
        for (int i = 0; i < rep.nlayers; i++) {
            const cn_int8_layer *l = &rep.layers[i];
            fprintf(tx, "%-36s %-10s %14lld %10.2f %6s\n", l->name, l->op, (long long)l->macs,
                    l->sqnr_db, l->kept_float ? "yes" : "");
        }
        fprintf(tx, "\n");
    }
    st = cn_model_save(q, p->out);
    if (st == CN_OK && p->data) st = evaluate(q, p, &acc1);
    int64_t ibytes = cn_model_int8_bytes(q);
    cn_model_free(q);
    if (st != CN_OK) {
        if (want_rep) cn_int8_report_free(&rep);
        return cli_fail(C, st);
    }
    long long before = file_size(p->mo.path), after = file_size(p->out);
    if (qat) fprintf(tx, "int8 (QAT ranges, %.1f s)\n", tq);
    else fprintf(tx, "int8 (%s calibration, %d images, %.1f s)\n", method_name(c.method), c.images, tq);
    char a0[16] = "-", a1[16] = "-", b0[24] = "-";
    if (p->data) {
        snprintf(a0, sizeof a0, "%.2f%%", 100.0 * acc0);
        snprintf(a1, sizeof a1, "%.2f%%", 100.0 * acc1);
    }
    if (before >= 0) snprintf(b0, sizeof b0, "%lld", before);
    fprintf(tx, "%-10s %10s %14s\n", "model", "accuracy", "file bytes");
    fprintf(tx, "%-10s %10s %14s\n", qat ? "QAT" : "float32", a0, b0);
    fprintf(tx, "%-10s %10s %14lld\n", "int8", a1, after);
    if (p->data) fprintf(tx, "accuracy change %+.2f points; ", 100.0 * (acc1 - acc0));
    if (before > 0)
        fprintf(tx, "file %.1f%% of %s\n", 100.0 * after / before,
                qat ? "the QAT model" : "float32");
    else /* a fresh model (--model without a file): against its float32 parameters */
        fprintf(tx, "file %.1f%% of the float32 parameters (%lld bytes)\n",
                100.0 * after / (4.0 * (double)cn_model_param_count(m)),
                (long long)(4 * cn_model_param_count(m)));
    fprintf(tx, "wrote %s\n", p->out);
    if (p->mo.json) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "scheme", "int8");
        cJSON_AddStringToObject(j, "calibration", qat ? "qat" : method_name(c.method));
        cJSON_AddNumberToObject(j, "calib_images", c.images);
        cJSON_AddNumberToObject(j, "calib_seconds", tq);
        cJSON_AddStringToObject(j, "out", p->out);
        if (p->data) {
            cJSON_AddNumberToObject(j, "acc_float", acc0);
            cJSON_AddNumberToObject(j, "acc_int8", acc1);
        }
        if (before >= 0) cJSON_AddNumberToObject(j, "size_before", (double)before);
        cJSON_AddNumberToObject(j, "size_after", (double)after);
        cJSON_AddNumberToObject(j, "int8_state_bytes", (double)ibytes);
        if (want_rep) {
            cJSON *ls = cJSON_AddArrayToObject(j, "layers");
            for (int i = 0; i < rep.nlayers; i++) {
                const cn_int8_layer *l = &rep.layers[i];
                cJSON *o = cJSON_CreateObject();
                cJSON_AddStringToObject(o, "name", l->name);
                cJSON_AddStringToObject(o, "op", l->op);
                cJSON_AddNumberToObject(o, "macs", (double)l->macs);
                cJSON_AddNumberToObject(o, "sqnr_db", l->sqnr_db);
                cJSON_AddBoolToObject(o, "float32", l->kept_float);
                cJSON_AddItemToArray(ls, o);
            }
            cJSON_AddNumberToObject(j, "kept_float", rep.kept_float);
        }
        cli_print_json(j);
    }
    if (want_rep) cn_int8_report_free(&rep);
    return EXIT_OK;
}

int cmd_quantize(int argc, char **argv) {
    const char *C = "quantize";
    quant_opts p;
    memset(&p, 0, sizeof p);
    cli_model_opts_init(&p.mo);
    int rc = cli_parse_model_command(C, help, "quantize", &p.mo, argc, argv, parse_one, &p);
    if (rc >= 0) return rc;
    rc = validate(C, &p);
    if (rc) return rc;
    cn_model *m;
    if ((rc = cli_model_open(C, &p.mo, &m))) return rc;
    if (cn_model_is_int8(m) && strcmp(p.scheme, "fixed") == 0) {
        cli_err(C, "%s is an int8 model: fixed-point quantization takes a float model",
                p.mo.path ? p.mo.path : "MODEL");
        cn_model_free(m);
        return EXIT_USAGE;
    }
    rc = !strcmp(p.scheme, "int8") ? run_int8(C, &p, m)
       : p.sweep_lo              ? run_sweep(C, &p, m)
                                 : run_quantize(C, &p, m);
    cn_model_free(m);
    return rc;
}
