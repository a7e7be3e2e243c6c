/* convnet eval */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"

static const char *help =
    "usage: convnet eval MODEL --data fashion-mnist[:DIR] [options]\n"
    "\n"
    "Accuracy and mean cross-entropy of a model on a dataset's test split.\n"
    "\n" CLI_MODEL_HELP
    "  --data SPEC           fashion-mnist[:DIR] (default), mnist:DIR, cifar10:DIR, cifar100:DIR or\n"
    "                        folder:DIR (its test split: DIR/val, DIR/test, or DIR itself when it\n"
    "                        has no train/; images resized to S/0.875 and center-cropped to S)\n"
    "  --input-size S        image folders: the model's input side (default: the model's size)\n"
    "  --skip-bad-images     image folders: skip files that do not decode (warning) instead of failing\n"
    "  --loader-threads N    data loader threads (default 2 for image folders, else 1)\n"
    "  --split test|train    default test\n"
    "  --batch N             default 500 (image folders: at most 32)\n"
    "  --limit N             only the first N samples\n";

int cmd_eval(int argc, char **argv) {
    const char *C = "eval", *data = "fashion-mnist";
    cli_model_opts o;
    cli_model_opts_init(&o);
    o.batch = 500;
    int train_split = 0, limit = 0;
    cn_data_options dopt = {0};
    for (int i = 1; i < argc; i++) {
        int r = cli_model_opts_parse(C, help, &o, argc, argv, &i);
        if (r == CLI_HELP) return EXIT_OK;
        if (r < 0) return EXIT_USAGE;
        if (r) continue;
        const char *v;
        if (!strcmp(argv[i], "--data")) {
            if (!(v = cli_value(C, argc, argv, &i))) return EXIT_USAGE;
            data = v;
        } else if (!strcmp(argv[i], "--split")) {
            if (!(v = cli_value(C, argc, argv, &i))) return EXIT_USAGE;
            if (strcmp(v, "test") && strcmp(v, "train")) {
                cli_err(C, "--split '%s': expected test or train", v);
                return EXIT_USAGE;
            }
            train_split = !strcmp(v, "train");
        } else if (!strcmp(argv[i], "--skip-bad-images")) {
            dopt.skip_bad_images = 1;
        } else if (!strcmp(argv[i], "--loader-threads")) {
            if (!(v = cli_value(C, argc, argv, &i))) return EXIT_USAGE;
            if (cli_int(C, "--loader-threads", v, 1, 16, &dopt.loader_threads)) return EXIT_USAGE;
        } else if (!strcmp(argv[i], "--limit")) {
            if (!(v = cli_value(C, argc, argv, &i))) return EXIT_USAGE;
            if (cli_int(C, "--limit", v, 1, 1 << 30, &limit)) return EXIT_USAGE;
        } else {
            cli_err(C, "unknown option '%s' (see convnet eval --help)", argv[i]);
            return EXIT_USAGE;
        }
    }
    cn_model *m;
    int rc = cli_model_open(C, &o, &m);
    if (rc) return rc;
    float acc, loss;
    int count;
    double t0 = cli_now();
    if (o.h != o.w) {
        cn_model_free(m);
        cli_err(C, "--input-size: image folders are evaluated on square inputs");
        return EXIT_USAGE;
    }
    dopt.input_size = o.h;
    cn_status st = cn_evaluate_opts(m, data, train_split, o.batch, limit, &dopt, &acc, &loss, &count);
    double secs = cli_now() - t0;
    if (st != CN_OK) {
        cn_model_free(m);
        return cli_fail(C, st);
    }
    if (o.json) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "model", cn_model_name(m));
        cJSON_AddStringToObject(j, "data", data);
        cJSON_AddStringToObject(j, "split", train_split ? "train" : "test");
        cJSON_AddNumberToObject(j, "samples", count);
        cJSON_AddNumberToObject(j, "accuracy", acc);
        cJSON_AddNumberToObject(j, "loss", loss);
        cJSON_AddNumberToObject(j, "seconds", secs);
        cli_print_json(j);
    } else {
        printf("%s on %s (%s, %d samples): accuracy %.2f%% loss %.4f (%.1f s)\n", cn_model_name(m),
               data, train_split ? "train" : "test", count, 100 * acc, loss, secs);
    }
    cn_model_free(m);
    return EXIT_OK;
}
