/* convnet forward */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "io/safetensors.h"

static const char *help =
    "usage: convnet forward MODEL --input IN.safetensors --output OUT.safetensors [options]\n"
    "\n"
    "Runs the model in eval mode on the float32 NCHW tensor named 'input' of IN and writes the\n"
    "tensor 'logits' (N x classes) to OUT (atomically).\n"
    "\n" CLI_MODEL_HELP
    "  --input FILE          safetensors file holding 'input' (N, C, H, W), a float dtype\n"
    "  --output FILE         where to write 'logits'\n";

int cmd_forward(int argc, char **argv) {
    const char *C = "forward", *in_path = NULL, *out_path = NULL;
    cli_model_opts o;
    cli_model_opts_init(&o);
    for (int i = 1; i < argc; i++) {
        int r = cli_model_opts_parse(C, help, &o, argc, argv, &i);
        if (r == CLI_HELP) return EXIT_OK;
        if (r < 0) return EXIT_USAGE;
        if (r) continue;
        if (!strcmp(argv[i], "--input")) {
            if (!(in_path = cli_value(C, argc, argv, &i))) return EXIT_USAGE;
        } else if (!strcmp(argv[i], "--output")) {
            if (!(out_path = cli_value(C, argc, argv, &i))) return EXIT_USAGE;
        } else {
            cli_err(C, "unknown option '%s' (see convnet forward --help)", argv[i]);
            return EXIT_USAGE;
        }
    }
    if (!in_path || !out_path) {
        cli_err(C, "--input and --output are required");
        return EXIT_USAGE;
    }
    cn_model *m;
    int rc = cli_model_open(C, &o, &m);
    if (rc) return rc;
    cn_st_file *f = NULL;
    cn_status st = cn_st_open(&f, in_path);
    float *x = NULL, *logits = NULL;
    if (st != CN_OK) goto fail;
    const cn_st_tensor *t = cn_st_find(f, "input");
    if (!t) {
        cli_err(C, "%s: no tensor named 'input'", in_path);
        rc = EXIT_FAIL;
        goto out;
    }
    if (t->ndim != 4 || t->shape[1] != cn_model_in_channels(m) || t->shape[0] < 1 ||
        t->shape[2] < 1 || t->shape[3] < 1 || t->shape[0] > 65536 || t->shape[2] > 8192 ||
        t->shape[3] > 8192) {
        cli_err(C, "%s: 'input' must be (N, %d, H, W) with N <= 65536 and H, W <= 8192", in_path,
                cn_model_in_channels(m));
        rc = EXIT_FAIL;
        goto out;
    }
    int n = (int)t->shape[0], h = (int)t->shape[2], w = (int)t->shape[3];
    size_t count = (size_t)n * t->shape[1] * h * w;
    int k = cn_model_num_classes(m);
    x = malloc(sizeof(float) * count);
    logits = malloc(sizeof(float) * (size_t)n * k);
    if (!x || !logits) {
        cli_err(C, "out of memory for an input of %zu floats", count);
        rc = EXIT_FAIL;
        goto out;
    }
    if ((st = cn_st_read_f32(f, t, x, count)) != CN_OK) goto fail;
    double t0 = cli_now();
    if ((st = cn_model_forward(m, x, n, h, w, 0, logits)) != CN_OK) goto fail;
    double secs = cli_now() - t0;
    cn_st_writer *wr;
    if ((st = cn_st_writer_new(&wr)) != CN_OK) goto fail;
    int64_t shape[2] = {n, k};
    st = cn_st_writer_add(wr, "logits", CN_DT_F32, 2, shape, logits);
    if (st == CN_OK) st = cn_st_writer_save(wr, out_path);
    cn_st_writer_free(wr);
    if (st != CN_OK) goto fail;
    if (o.json) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "model", cn_model_name(m));
        cJSON_AddNumberToObject(j, "batch", n);
        cJSON_AddNumberToObject(j, "classes", k);
        cJSON_AddNumberToObject(j, "seconds", secs);
        cJSON_AddStringToObject(j, "output", out_path);
        cli_print_json(j);
    } else {
        printf("wrote logits (%d x %d) to %s in %.3f s\n", n, k, out_path, secs);
    }
    rc = EXIT_OK;
    goto out;
fail:
    rc = cli_fail(C, st);
out:
    free(x);
    free(logits);
    cn_st_close(f);
    cn_model_free(m);
    return rc;
}
