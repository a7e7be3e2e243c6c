/* convnet info */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"

static const char *help =
    "usage: convnet info MODEL | --model NAME [options]\n"
    "\n"
    "The layer table (output shape, parameters, MACs per image) and the totals; for an\n"
    "EfficientNet also the derived stage table (channels, repeats, kernel, stride, resolution).\n"
    "\n" CLI_MODEL_HELP
    "  --input-size HxW      default: the model's usual size (224 ImageNet, 32 CIFAR)\n"
    "  --list                the known architectures\n";

int cmd_info(int argc, char **argv) {
    const char *C = "info";
    cli_model_opts o;
    cli_model_opts_init(&o);
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--list")) {
            printf("%s\n", cn_model_list());
            return EXIT_OK;
        }
        int r = cli_model_opts_parse(C, help, &o, argc, argv, &i);
        if (r == CLI_HELP) return EXIT_OK;
        if (r < 0) return EXIT_USAGE;
        if (!r) {
            cli_err(C, "unknown option '%s' (see convnet info --help)", argv[i]);
            return EXIT_USAGE;
        }
    }
    cn_model *m;
    int rc = cli_model_open(C, &o, &m);
    if (rc) return rc;
    int h = o.h, w = o.w;
    const cn_layer_info *rows;
    int n;
    cn_status st = cn_model_layers(m, h, w, &rows, &n);
    if (st != CN_OK) {
        cn_model_free(m);
        return cli_fail(C, st);
    }
    int64_t params = cn_model_param_count(m), macs = 0;
    for (int i = 0; i < n; i++) macs += rows[i].macs;
    cn_stage_info stages[16];
    int ns = cn_model_stages(m, h, w, stages, 16);
    st = cn_model_layers(m, h, w, &rows, &n); /* the stage table re-planned; rows stay valid */
    if (st != CN_OK) {
        cn_model_free(m);
        return cli_fail(C, st);
    }
    if (o.json) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "model", cn_model_name(m));
        cJSON_AddNumberToObject(j, "in_channels", cn_model_in_channels(m));
        cJSON_AddNumberToObject(j, "num_classes", cn_model_num_classes(m));
        cJSON_AddNumberToObject(j, "input_h", h);
        cJSON_AddNumberToObject(j, "input_w", w);
        cJSON_AddNumberToObject(j, "params", (double)params);
        cJSON_AddNumberToObject(j, "macs", (double)macs);
        cJSON_AddStringToObject(j, "precision", cn_model_is_int8(m) ? "int8" : "float32");
        if (cn_model_is_int8(m))
            cJSON_AddNumberToObject(j, "int8_state_bytes", (double)cn_model_int8_bytes(m));
        if (ns) {
            cJSON_AddNumberToObject(j, "width_mult", cn_model_width_mult(m));
            cJSON_AddNumberToObject(j, "depth_mult", cn_model_depth_mult(m));
            cJSON *sa = cJSON_AddArrayToObject(j, "stages");
            for (int i = 0; i < ns; i++) {
                const cn_stage_info *r = &stages[i];
                cJSON *l = cJSON_CreateObject();
                cJSON_AddNumberToObject(l, "expand", r->expand);
                cJSON_AddNumberToObject(l, "kernel", r->kernel);
                cJSON_AddNumberToObject(l, "stride", r->stride);
                cJSON_AddNumberToObject(l, "in_channels", r->in_channels);
                cJSON_AddNumberToObject(l, "out_channels", r->out_channels);
                cJSON_AddNumberToObject(l, "repeats", r->repeats);
                cJSON_AddNumberToObject(l, "in_h", r->in_h);
                cJSON_AddNumberToObject(l, "in_w", r->in_w);
                cJSON_AddNumberToObject(l, "out_h", r->out_h);
                cJSON_AddNumberToObject(l, "out_w", r->out_w);
                cJSON_AddNumberToObject(l, "params", (double)r->params);
                cJSON_AddNumberToObject(l, "macs", (double)r->macs);
                cJSON_AddItemToArray(sa, l);
            }
        }
        cJSON *layers = cJSON_AddArrayToObject(j, "layers");
        for (int i = 0; i < n; i++) {
            cJSON *l = cJSON_CreateObject();
            cJSON_AddStringToObject(l, "name", rows[i].name);
            cJSON_AddStringToObject(l, "op", rows[i].op);
            cJSON *shape = cJSON_AddArrayToObject(l, "shape");
            cJSON_AddItemToArray(shape, cJSON_CreateNumber(rows[i].c));
            cJSON_AddItemToArray(shape, cJSON_CreateNumber(rows[i].h));
            cJSON_AddItemToArray(shape, cJSON_CreateNumber(rows[i].w));
            cJSON_AddNumberToObject(l, "params", (double)rows[i].params);
            cJSON_AddNumberToObject(l, "macs", (double)rows[i].macs);
            cJSON_AddItemToArray(layers, l);
        }
        cli_print_json(j);
    } else {
        printf("%s: %d input channel(s), %d classes, input %dx%d\n\n", cn_model_name(m),
               cn_model_in_channels(m), cn_model_num_classes(m), h, w);
        if (cn_model_is_int8(m))
            printf("int8: weights int8 per output channel, activations uint8; %lld bytes of "
                   "integer state\n\n", (long long)cn_model_int8_bytes(m));
        printf("%-28s %-12s %18s %12s %14s\n", "layer", "op", "output (CxHxW)", "params", "MACs");
        for (int i = 0; i < n; i++) {
            char shape[48];
            snprintf(shape, sizeof shape, "%dx%dx%d", rows[i].c, rows[i].h, rows[i].w);
            printf("%-28s %-12s %18s %12lld %14lld\n", rows[i].name, rows[i].op, shape,
                   (long long)rows[i].params, (long long)rows[i].macs);
        }
        if (ns) {
            printf("\nstages (width x%.4g, depth x%.4g):\n", cn_model_width_mult(m),
                   cn_model_depth_mult(m));
            printf("%-6s %6s %6s %6s %8s %8s %7s %12s %12s %12s %14s\n", "stage", "expand",
                   "kernel", "stride", "in_ch", "out_ch", "repeats", "input", "output", "params",
                   "MACs");
            for (int i = 0; i < ns; i++) {
                const cn_stage_info *r = &stages[i];
                char in[32], out[32];
                snprintf(in, sizeof in, "%dx%d", r->in_h, r->in_w);
                snprintf(out, sizeof out, "%dx%d", r->out_h, r->out_w);
                printf("%-6d %6d %6d %6d %8d %8d %7d %12s %12s %12lld %14lld\n", i + 1, r->expand,
                       r->kernel, r->stride, r->in_channels, r->out_channels, r->repeats, in, out,
                       (long long)r->params, (long long)r->macs);
            }
        }
        printf("\ntotal: %lld parameters (%.2f M), %lld MACs (%.3f G) per image\n",
               (long long)params, params / 1e6, (long long)macs, macs / 1e9);
    }
    cn_model_free(m);
    return EXIT_OK;
}
