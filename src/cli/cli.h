/* Shared pieces of the subcommands: argument parsing with range checks, messages, progress. */
#ifndef CN_CLI_H
#define CN_CLI_H

#include <stdint.h>
#include <stdio.h>

#include "convnet.h"

/* exit codes */
enum { EXIT_OK = 0, EXIT_FAIL = 1, EXIT_USAGE = 2 };

typedef struct cli_args {
    int argc, i;
    char **argv;
    const char *cmd;
} cli_args;

/* Prints "convnet CMD: message" to stderr. */
void cli_err(const char *cmd, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
/* Reports a library failure and returns the exit code for it. */
int cli_fail(const char *cmd, cn_status st);

/* Value parsers: 0 on success; on failure print a message naming the option and return -1. */
int cli_int(const char *cmd, const char *opt, const char *s, long lo, long hi, int *out);
int cli_u64(const char *cmd, const char *opt, const char *s, uint64_t *out);
int cli_float(const char *cmd, const char *opt, const char *s, double lo, double hi, float *out);
/* "HxW" or "S" */
int cli_double(const char *cmd, const char *opt, const char *s, double lo, double hi,
               double *out);
int cli_size(const char *cmd, const char *opt, const char *s, int *h, int *w);
/* The value after option argv[*i]; NULL (with a message) if missing. */
const char *cli_value(const char *cmd, int argc, char **argv, int *i);

/* Progress on stderr: a redrawn bar on a terminal, a plain line every few seconds otherwise. */
typedef struct cli_progress {
    int tty;
    double last;
} cli_progress;
void cli_progress_init(cli_progress *p);
void cli_progress_line(cli_progress *p, int force, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
void cli_progress_done(cli_progress *p);
double cli_now(void);
/* Prints a JSON document on stdout and frees it. */
struct cJSON;
void cli_print_json(struct cJSON *j);
void cli_fmt_duration(char *buf, size_t n, double s);

/* The progress callback of a cn_train run (cn_train_config.progress, user = a cli_train_progress):
 * a bar on stderr each step, the epoch's test result each epoch on stdout (on stderr when --json
 * owns stdout). Shared by train and prune --finetune-epochs. */
typedef struct cli_train_progress {
    cli_progress bar;
    int json;
} cli_train_progress;
void cli_train_progress_init(cli_train_progress *s, int json);
void cli_train_on_progress(const cn_train_progress *p, void *user);

/* Pruning options shared by prune and train: "l2|l1|bn|magnitude", "layer|global", and a
 * fraction in [0, 1). 0 on success; -1 after a message naming the option. */
int cli_prune_method(const char *cmd, const char *opt, const char *s, cn_prune_method *out);
int cli_prune_scope(const char *cmd, const char *opt, const char *s, int *global);
int cli_fraction(const char *cmd, const char *opt, const char *s, float *out);
const char *cli_prune_method_name(cn_prune_method m);

int cmd_train(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_forward(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_prune(int argc, char **argv);
int cmd_predict(int argc, char **argv);
int cmd_quantize(int argc, char **argv);

#endif

/* Common model options of eval/info/forward/bench: a MODEL file, and/or --model NAME (a fresh
 * model, or the architecture of a plain torchvision state_dict), --in-channels, --num-classes,
 * --threads, --input-size, --batch, --json, and --help (which prints `help`). parse returns 1 when
 * argv[*i] was one of them, CLI_HELP after printing the help, -1 on a bad value, 0 otherwise. */
enum { CLI_HELP = 2 };
typedef struct cli_model_opts {
    const char *path, *name;
    int in_channels, num_classes, threads, h, w, batch, json, seed_set;
    uint64_t seed;
    /* EfficientNet */
    double phi, width_mult, depth_mult;
    int resolution;
    float dropout, stochastic_depth; /* < 0: unset */
} cli_model_opts;
void cli_model_opts_init(cli_model_opts *o);
int cli_model_opts_parse(const char *cmd, const char *help, cli_model_opts *o, int argc,
                         char **argv, int *i);
/* The argument loop of a command that takes a MODEL: each argument goes first to the command's
 * own parser (1: taken, 0: not its option, < 0: a usage error already reported), then to the
 * model options. Returns -1 to go on, else the exit code (EXIT_OK after --help). what is the
 * verb of the "name the MODEL file to ..." error. */
int cli_parse_model_command(const char *cmd, const char *help, const char *what,
                            cli_model_opts *o, int argc, char **argv,
                            int (*own)(const char *cmd, void *opts, int argc, char **argv, int *i),
                            void *opts);
/* The EfficientNet options alone (--phi, --width-mult, ...), for commands with their own parsing;
 * returns as cli_model_opts_parse. cli_effnet_config copies them into a model config. */
int cli_effnet_opts_parse(const char *cmd, cli_model_opts *o, int argc, char **argv, int *i);
void cli_effnet_config(const cli_model_opts *o, cn_model_config *cfg);
/* Opens or creates the model; an unset --input-size becomes the model's usual size. */
int cli_model_open(const char *cmd, cli_model_opts *o, cn_model **m);
#define CLI_EFFNET_HELP                                                                        \
    "  --phi PHI             --model efficientnet: compound scaling (width 1.1^PHI, depth 1.2^PHI,\n" \
    "                        resolution 224*1.15^PHI)\n"                                       \
    "  --width-mult W --depth-mult D   --model efficientnet: explicit multipliers\n"          \
    "  --resolution R        EfficientNet: the default input size\n"                           \
    "  --dropout P --stochastic-depth P   EfficientNet: classifier dropout, last block's drop path\n"
#define CLI_MODEL_HELP                                                                         \
    "  MODEL                 a .safetensors model (convnet's, or torchvision's with --model)\n" \
    "  --model NAME          architecture (a fresh model without MODEL); known: see convnet info --list\n" \
    "  --in-channels C       input channels of a fresh model\n"                                 \
    "  --num-classes K       classes of a fresh model\n"                                        \
    CLI_EFFNET_HELP                                                                            \
    "  --threads N           default: all cores\n"                                              \
    "  --json                machine-readable summary on stdout\n"
