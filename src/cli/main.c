/* convnet: train, evaluate, inspect and run ResNet / EfficientNet classifiers. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"

static const char *usage =
    "usage: convnet COMMAND [options]   (convnet COMMAND --help for each)\n"
    "\n"
    "commands:\n"
    "  train     train a model on a dataset, with checkpoints and resume\n"
    "  eval      accuracy and loss of a model on a dataset\n"
    "  info      layer table, parameters and MACs of a model or architecture\n"
    "  forward   run a model on a tensor file and write the logits\n"
    "  bench     inference latency of a model\n"
    "  prune     remove channels or weights; per-layer size, speed and accuracy report\n"
    "  predict   classify JPEG/PNG images: top classes and probabilities\n"
    "  quantize  fixed-point weight quantization; per-layer errors, sizes and accuracy\n"
    "\n"
    "Results go to stdout (--json for a machine-readable summary); progress to stderr.\n";

int main(int argc, char **argv) {
    if (argc < 2) {
        fputs(usage, stderr);
        return EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
        fputs(usage, stdout);
        return EXIT_OK;
    }
    if (!strcmp(cmd, "--version")) {
        puts("convnet 0.1.0");
        return EXIT_OK;
    }
    if (!strcmp(cmd, "train")) return cmd_train(argc - 1, argv + 1);
    if (!strcmp(cmd, "eval")) return cmd_eval(argc - 1, argv + 1);
    if (!strcmp(cmd, "info")) return cmd_info(argc - 1, argv + 1);
    if (!strcmp(cmd, "forward")) return cmd_forward(argc - 1, argv + 1);
    if (!strcmp(cmd, "bench")) return cmd_bench(argc - 1, argv + 1);
    if (!strcmp(cmd, "prune")) return cmd_prune(argc - 1, argv + 1);
    if (!strcmp(cmd, "predict")) return cmd_predict(argc - 1, argv + 1);
    if (!strcmp(cmd, "quantize")) return cmd_quantize(argc - 1, argv + 1);
    fprintf(stderr, "convnet: unknown command '%s'\n\n%s", cmd, usage);
    return EXIT_USAGE;
}
