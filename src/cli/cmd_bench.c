/* convnet bench */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"

static const char *help =
    "usage: convnet bench MODEL | --model NAME [options]\n"
    "\n"
    "Inference latency: median, min and max over repeated eval-mode forward passes after warm-up.\n"
    "With --train, one training step (forward, loss, backward, SGD) per run and images/s.\n"
    "\n" CLI_MODEL_HELP
    "  --batch N             default 1\n"
    "  --input-size HxW      default: the model's usual size\n"
    "  --runs N              timed runs (default 20)\n"
    "  --warmup N            untimed runs first (default 3)\n"
    "  --train               time training steps instead of inference\n"
    "  --profile             also print the share of time per op type\n"
    "  --profile-layers      also print each layer's time, MACs and achieved GOP/s (an eval\n"
    "                        convolution's time includes what is fused into it)\n"
    "  (profiling runs an eval batch layer by layer over the batch, without the image lanes\n"
    "  that take its first layers image by image on each thread, so its times can differ)\n";

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int cmd_bench(int argc, char **argv) {
    const char *C = "bench";
    cli_model_opts o;
    cli_model_opts_init(&o);
    int runs = 20, warmup = 3, train = 0, profile = 0, layers = 0;
    for (int i = 1; i < argc; i++) {
        int r = cli_model_opts_parse(C, help, &o, argc, argv, &i);
        if (r == CLI_HELP) return EXIT_OK;
        if (r < 0) return EXIT_USAGE;
        if (r) continue;
        const char *v;
        if (!strcmp(argv[i], "--runs")) {
            if (!(v = cli_value(C, argc, argv, &i)) || cli_int(C, "--runs", v, 1, 100000, &runs))
                return EXIT_USAGE;
        } else if (!strcmp(argv[i], "--warmup")) {
            if (!(v = cli_value(C, argc, argv, &i)) || cli_int(C, "--warmup", v, 0, 100000, &warmup))
                return EXIT_USAGE;
        } else if (!strcmp(argv[i], "--train")) {
            train = 1;
        } else if (!strcmp(argv[i], "--profile")) {
            profile = 1;
        } else if (!strcmp(argv[i], "--profile-layers")) {
            profile = layers = 1;
        } else {
            cli_err(C, "unknown option '%s' (see convnet bench --help)", argv[i]);
            return EXIT_USAGE;
        }
    }
    cn_model *m;
    int rc = cli_model_open(C, &o, &m);
    if (rc) return rc;
    int h = o.h, w = o.w;
    int n = o.batch, c = cn_model_in_channels(m), k = cn_model_num_classes(m);
    size_t count = (size_t)n * c * h * w;
    float *x = malloc(sizeof(float) * count);
    int32_t *labels = malloc(sizeof(int32_t) * n);
    double *times = malloc(sizeof(double) * runs);
    cn_optim *opt = NULL;
    cn_status st = CN_OK;
    if (!x || !labels || !times) {
        cli_err(C, "out of memory for a batch of %d", n);
        rc = EXIT_FAIL;
        goto out;
    }
    for (size_t i = 0; i < count; i++) x[i] = (float)((i * 2654435761u) % 1000) / 500.0f - 1.0f;
    for (int i = 0; i < n; i++) labels[i] = i % k;
    if (train) {
        cn_optim_config oc;
        cn_optim_config_default(&oc, CN_OPTIM_SGD);
        oc.lr = 1e-3f;
        if ((st = cn_optim_create(&opt, m, &oc)) != CN_OK) goto fail;
    }
    for (int r = -warmup; r < runs; r++) {
        if (r == 0 && profile) cn_model_set_profiling(m, 1);
        double t0 = cli_now();
        if (train) {
            cn_model_zero_grad(m);
            if ((st = cn_model_forward_nhwc(m, x, n, h, w, 1, NULL)) != CN_OK) goto fail;
            float loss;
            if ((st = cn_model_loss(m, labels, 0, &loss, NULL)) != CN_OK) goto fail;
            cn_model_backward(m);
            cn_optim_step(opt, 1e-3f);
        } else if ((st = cn_model_forward_nhwc(m, x, n, h, w, 0, NULL)) != CN_OK) {
            goto fail;
        }
        if (r >= 0) times[r] = cli_now() - t0;
    }
    cn_op_time prof[32];
    int nprof = profile ? cn_model_profile(m, prof, 32) : 0;
    double ptotal = 0;
    for (int i = 0; i < nprof; i++) ptotal += prof[i].forward_s + prof[i].backward_s;
    const cn_layer_info *rows = NULL;
    int nrows = 0;
    if (layers && (st = cn_model_layers(m, h, w, &rows, &nrows)) != CN_OK) goto fail;
    qsort(times, runs, sizeof *times, cmp_d);
    double med = runs % 2 ? times[runs / 2] : 0.5 * (times[runs / 2 - 1] + times[runs / 2]);
    if (o.json) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "model", cn_model_name(m));
        cJSON_AddStringToObject(j, "mode", train ? "train" : "inference");
        cJSON_AddStringToObject(j, "precision", cn_model_is_int8(m) ? "int8" : "float32");
        cJSON_AddNumberToObject(j, "batch", n);
        cJSON_AddNumberToObject(j, "input_h", h);
        cJSON_AddNumberToObject(j, "input_w", w);
        cJSON_AddNumberToObject(j, "threads", cn_model_threads(m));
        cJSON_AddNumberToObject(j, "runs", runs);
        cJSON_AddNumberToObject(j, "median_ms", med * 1e3);
        cJSON_AddNumberToObject(j, "min_ms", times[0] * 1e3);
        cJSON_AddNumberToObject(j, "max_ms", times[runs - 1] * 1e3);
        cJSON_AddNumberToObject(j, "img_per_s", n / med);
        if (nprof) {
            cJSON *po = cJSON_AddObjectToObject(j, "profile_ms_per_run");
            for (int i = 0; i < nprof; i++) {
                cJSON *e = cJSON_AddObjectToObject(po, prof[i].op);
                cJSON_AddNumberToObject(e, "forward", prof[i].forward_s * 1e3 / runs);
                cJSON_AddNumberToObject(e, "backward", prof[i].backward_s * 1e3 / runs);
            }
        }
        if (layers) {
            cJSON *la = cJSON_AddArrayToObject(j, "layers");
            for (int i = 0; i < nrows; i++) {
                const cn_layer_info *L = &rows[i];
                if (L->forward_s + L->backward_s <= 0) continue;
                cJSON *e = cJSON_CreateObject();
                cJSON_AddStringToObject(e, "name", L->name);
                cJSON_AddStringToObject(e, "op", L->op);
                cJSON_AddNumberToObject(e, "macs", (double)L->macs * n);
                cJSON_AddNumberToObject(e, "forward_ms", L->forward_s * 1e3 / runs);
                cJSON_AddNumberToObject(e, "backward_ms", L->backward_s * 1e3 / runs);
                cJSON_AddItemToArray(la, e);
            }
        }
        cli_print_json(j);
    } else {
        printf("%s%s %s batch %d %dx%d threads %d: median %.3f ms (min %.3f, max %.3f) over %d runs, "
               "%.1f img/s\n",
               cn_model_name(m), cn_model_is_int8(m) ? " int8" : "", train ? "train step" : "inference", n, h, w, cn_model_threads(m),
               med * 1e3, times[0] * 1e3, times[runs - 1] * 1e3, runs, n / med);
        if (nprof) {
            printf("\n%-12s %12s %12s %8s\n", "op", "forward ms", "backward ms", "share");
            for (int i = 0; i < nprof; i++)
                printf("%-12s %12.3f %12.3f %7.1f%%\n", prof[i].op, prof[i].forward_s * 1e3 / runs,
                       prof[i].backward_s * 1e3 / runs,
                       100 * (prof[i].forward_s + prof[i].backward_s) / ptotal);
        }
        if (layers) {
            /* GOP/s counts 2 operations per multiply-accumulate of the batch */
            printf("\n%-32s %-10s %12s %12s %12s %10s\n", "layer", "op", "MACs", "forward ms",
                   "backward ms", "GOP/s");
            for (int i = 0; i < nrows; i++) {
                const cn_layer_info *L = &rows[i];
                double t = L->forward_s + L->backward_s;
                if (t <= 0) continue;
                double macs = (double)L->macs * n * (L->backward_s > 0 ? 3 : 1);
                printf("%-32s %-10s %12.0f %12.3f %12.3f %10.1f\n", L->name, L->op,
                       (double)L->macs * n, L->forward_s * 1e3 / runs, L->backward_s * 1e3 / runs,
                       2 * macs * runs / t * 1e-9);
            }
        }
    }
    rc = EXIT_OK;
    goto out;
fail:
    rc = cli_fail(C, st);
out:
    cn_optim_free(opt);
    free(x);
    free(labels);
    free(times);
    cn_model_free(m);
    return rc;
}
