/* convnet train */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"

static const char *help =
    "usage: convnet train --model NAME --data fashion-mnist[:DIR] [options]\n"
    "\n"
    "Trains a model, evaluating on the test split after every epoch. Writes DIR/metrics.csv,\n"
    "an atomic checkpoint DIR/checkpoint.safetensors each epoch and DIR/model.safetensors.\n"
    "\n"
    "  --model NAME          architecture (resnet20, resnet18, efficientnet_b0, ...; default resnet20)\n"
    CLI_EFFNET_HELP
    "  --init MODEL          start from this model file instead of a fresh initialisation\n"
    "                        (a plain state_dict, e.g. torchvision's, also needs --model)\n"
    "  --data SPEC           fashion-mnist[:DIR] (default; Debian's dataset-fashion-mnist), mnist:DIR,\n"
    "                        cifar10:DIR, cifar100:DIR (the binary versions) or folder:DIR (one\n"
    "                        subfolder of .jpg/.jpeg/.png per class: DIR/train and DIR/val or\n"
    "                        DIR/test when DIR/train exists, else DIR for both splits)\n"
    "  --input-size S        image folders: train at S x S (default: the model's size, 224 for\n"
    "                        ResNet-18/50); RandomResizedCrop + flip, test: resize S/0.875 + crop\n"
    "  --skip-bad-images     image folders: skip files that do not decode (warning) instead of failing\n"
    "  --loader-threads N    data loader threads (default 2 for image folders, else 1)\n"
    "  --out DIR             output directory (default runs/default)\n"
    "  --resume DIR          continue the run in DIR from its last checkpoint, exactly\n"
    "  --epochs N            default 10\n"
    "  --batch N             default 128\n"
    "  --lr LR               peak learning rate (default 0.1 for SGD, 1e-3 for AdamW)\n"
    "  --optimizer sgd|adamw default sgd\n"
    "  --momentum M          SGD momentum (default 0.9)\n"
    "  --nesterov | --no-nesterov  (default Nesterov on)\n"
    "  --weight-decay WD     default 5e-4 (SGD), 0.05 (AdamW)\n"
    "  --schedule cosine|step|constant   default cosine (per step)\n"
    "  --step-size E --gamma G   step schedule: multiply by G every E epochs (default 30, 0.1)\n"
    "  --warmup E            linear warm-up over E epochs (default 0)\n"
    "  --label-smoothing S   default 0\n"
    "  --crop-pad P          random crop after zero padding by P pixels (default 2, CIFAR 4; 0 = off)\n"
    "  --no-flip             no random horizontal flip\n"
    "  --zero-init-residual  zero the last BN scale of each residual branch\n"
    "  --seed N              default 1 (same seed and threads: same bits)\n"
    "  --threads N           default: all cores\n"
    "  --limit-train N / --limit-test N   use only the first N samples\n"
    "  --stop-after E        stop after epoch E as if interrupted (resume later with --resume)\n"
    "\n"
    "gradual pruning (Zhu and Gupta 2017: the pruned fraction follows a cubic ramp from 0 at\n"
    "--prune-start to S at --prune-end; l2, l1 and bn end in a smaller dense model):\n"
    "  --prune-to S          the final fraction in [0, 1) of prunable channels (or weights)\n"
    "  --prune-method l2|l1|bn|magnitude   default l2 (see convnet prune --help)\n"
    "  --prune-start E1      epoch where pruning starts (default 0; fractions allowed)\n"
    "  --prune-end E2        epoch where it reaches S (default: the last)\n"
    "  --prune-every N       update the masks every N steps (default 100)\n"
    "  --prune-scope layer|global  --prune-min-channels K  --prune-round-to N   as for prune\n"
    "\n"
    "quantization-aware training (usually with --init MODEL and a small --lr):\n"
    "  --qat                 train with fake int8 quantization (weights per output channel,\n"
    "                        activations with moving-average ranges, straight-through\n"
    "                        gradients); `convnet quantize --scheme int8` of the result uses\n"
    "                        the learned ranges and needs no calibration\n"
    "  --json                print a JSON summary on stdout\n";

int cmd_train(int argc, char **argv) {
    const char *C = "train";
    cn_train_config c;
    cn_train_config_default(&c);
    int json = 0, model_set = 0, lr_set = 0, wd_set = 0, step_epochs = 30, crop_pad_set = 0, ih, iw;
    float gamma = 0.1f;
    const char *opt_name = "sgd", *sched = "cosine";
    float lr = 0, wd = 0, mom = 0.9f;
    int nesterov = 1;
    cli_model_opts eo;
    cli_model_opts_init(&eo);
    cn_prune_config pc;
    cn_prune_config_default(&pc);
    float prune_start = 0, prune_end = -1;
    int prune_every = 100;
    const char *prune_opt = NULL; /* the first --prune-* option seen */
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        int r = cli_effnet_opts_parse(C, &eo, argc, argv, &i);
        if (r < 0) return EXIT_USAGE;
        if (r) continue;
#define VAL() \
    if (!(v = cli_value(C, argc, argv, &i))) return EXIT_USAGE
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(help, stdout);
            return EXIT_OK;
        } else if (!strcmp(a, "--model")) { VAL(); c.model = v; model_set = 1; }
        else if (!strcmp(a, "--init")) { VAL(); c.init = v; }
        else if (!strcmp(a, "--data")) { VAL(); c.data = v; }
        else if (!strcmp(a, "--out")) { VAL(); c.out_dir = v; }
        else if (!strcmp(a, "--resume")) { VAL(); c.out_dir = v; c.resume = 1; }
        else if (!strcmp(a, "--epochs")) { VAL(); if (cli_int(C, a, v, 1, 100000, &c.epochs)) return EXIT_USAGE; }
        else if (!strcmp(a, "--batch")) { VAL(); if (cli_int(C, a, v, 1, 65536, &c.batch)) return EXIT_USAGE; }
        else if (!strcmp(a, "--lr")) { VAL(); if (cli_float(C, a, v, 1e-12, 100, &lr)) return EXIT_USAGE; lr_set = 1; }
        else if (!strcmp(a, "--optimizer")) { VAL(); opt_name = v; }
        else if (!strcmp(a, "--momentum")) { VAL(); if (cli_float(C, a, v, 0, 0.9999, &mom)) return EXIT_USAGE; }
        else if (!strcmp(a, "--nesterov")) nesterov = 1;
        else if (!strcmp(a, "--qat")) c.qat = 1;
        else if (!strcmp(a, "--no-nesterov")) nesterov = 0;
        else if (!strcmp(a, "--weight-decay")) { VAL(); if (cli_float(C, a, v, 0, 1, &wd)) return EXIT_USAGE; wd_set = 1; }
        else if (!strcmp(a, "--schedule")) { VAL(); sched = v; }
        else if (!strcmp(a, "--step-size")) { VAL(); if (cli_int(C, a, v, 1, 100000, &step_epochs)) return EXIT_USAGE; }
        else if (!strcmp(a, "--gamma")) { VAL(); if (cli_float(C, a, v, 0, 1, &gamma)) return EXIT_USAGE; }
        else if (!strcmp(a, "--warmup")) { VAL(); if (cli_float(C, a, v, 0, 100000, &c.warmup_epochs)) return EXIT_USAGE; }
        else if (!strcmp(a, "--label-smoothing")) { VAL(); if (cli_float(C, a, v, 0, 0.999, &c.label_smoothing)) return EXIT_USAGE; }
        else if (!strcmp(a, "--crop-pad")) { VAL(); if (cli_int(C, a, v, 0, 64, &c.crop_pad)) return EXIT_USAGE; crop_pad_set = 1; }
        else if (!strcmp(a, "--input-size")) { VAL(); if (cli_size(C, a, v, &ih, &iw)) return EXIT_USAGE;
            if (ih != iw) { cli_err(C, "--input-size '%s': image folders train on square inputs", v); return EXIT_USAGE; }
            c.data_opts.input_size = ih; }
        else if (!strcmp(a, "--skip-bad-images")) c.data_opts.skip_bad_images = 1;
        else if (!strcmp(a, "--loader-threads")) { VAL(); if (cli_int(C, a, v, 1, 16, &c.data_opts.loader_threads)) return EXIT_USAGE; }
        else if (!strcmp(a, "--no-flip")) c.flip = 0;
        else if (!strcmp(a, "--zero-init-residual")) c.zero_init_residual = 1;
        else if (!strcmp(a, "--seed")) { VAL(); if (cli_u64(C, a, v, &c.seed)) return EXIT_USAGE; }
        else if (!strcmp(a, "--threads")) { VAL(); if (cli_int(C, a, v, 1, 1024, &c.threads)) return EXIT_USAGE; }
        else if (!strcmp(a, "--limit-train")) { VAL(); if (cli_int(C, a, v, 1, 1 << 30, &c.limit_train)) return EXIT_USAGE; }
        else if (!strcmp(a, "--limit-test")) { VAL(); if (cli_int(C, a, v, 1, 1 << 30, &c.limit_test)) return EXIT_USAGE; }
        else if (!strcmp(a, "--stop-after")) { VAL(); if (cli_int(C, a, v, 1, 100000, &c.stop_after)) return EXIT_USAGE; }
        else if (!strcmp(a, "--json")) json = 1;
        else if (!strncmp(a, "--prune-", 8)) {
            VAL();
            int bad;
            if (!strcmp(a, "--prune-to")) bad = cli_fraction(C, a, v, &pc.amount);
            else if (!strcmp(a, "--prune-method")) bad = cli_prune_method(C, a, v, &pc.method);
            else if (!strcmp(a, "--prune-start")) bad = cli_float(C, a, v, 0, 100000, &prune_start);
            else if (!strcmp(a, "--prune-end")) bad = cli_float(C, a, v, 0, 100000, &prune_end);
            else if (!strcmp(a, "--prune-every")) bad = cli_int(C, a, v, 1, 1000000, &prune_every);
            else if (!strcmp(a, "--prune-scope")) bad = cli_prune_scope(C, a, v, &pc.global);
            else if (!strcmp(a, "--prune-min-channels")) bad = cli_int(C, a, v, 1, 65536, &pc.min_channels);
            else if (!strcmp(a, "--prune-round-to")) bad = cli_int(C, a, v, 1, 4096, &pc.round_to);
            else {
                cli_err(C, "unknown option '%s' (see convnet train --help)", a);
                return EXIT_USAGE;
            }
            if (bad) return EXIT_USAGE;
            if (!prune_opt) prune_opt = a;
        } else {
            cli_err(C, "unknown option '%s' (see convnet train --help)", a);
            return EXIT_USAGE;
        }
#undef VAL
    }
    if (prune_opt) {
        if (c.resume) {
            cli_err(C, "%s: a resumed run keeps the pruning settings of its checkpoint", prune_opt);
            return EXIT_USAGE;
        }
        if (pc.amount < 0) {
            cli_err(C, "%s needs --prune-to S, the final pruned fraction", prune_opt);
            return EXIT_USAGE;
        }
        if (prune_end < 0) prune_end = (float)c.epochs;
        if (prune_end > c.epochs) {
            cli_err(C, "--prune-end %g is after the last epoch (--epochs %d)", prune_end, c.epochs);
            return EXIT_USAGE;
        }
        if (prune_start > prune_end) {
            cli_err(C, "--prune-start %g is after --prune-end %g", prune_start, prune_end);
            return EXIT_USAGE;
        }
        c.prune = &pc;
        c.prune_start = prune_start;
        c.prune_end = prune_end;
        c.prune_every = prune_every;
    }
    cn_optim_kind kind;
    if (!strcmp(opt_name, "sgd")) kind = CN_OPTIM_SGD;
    else if (!strcmp(opt_name, "adamw")) kind = CN_OPTIM_ADAMW;
    else {
        cli_err(C, "--optimizer '%s': expected sgd or adamw", opt_name);
        return EXIT_USAGE;
    }
    cn_optim_config_default(&c.optim, kind);
    if (lr_set) c.optim.lr = lr;
    if (wd_set) c.optim.weight_decay = wd;
    if (kind == CN_OPTIM_SGD) {
        c.optim.momentum = mom;
        c.optim.nesterov = nesterov && mom > 0;
    }
    if (!strcmp(sched, "cosine")) c.sched.kind = CN_SCHED_COSINE;
    else if (!strcmp(sched, "step")) c.sched.kind = CN_SCHED_STEP;
    else if (!strcmp(sched, "constant")) c.sched.kind = CN_SCHED_CONSTANT;
    else {
        cli_err(C, "--schedule '%s': expected cosine, step or constant", sched);
        return EXIT_USAGE;
    }
    c.sched.gamma = gamma;
    /* with --init, --model only names the architecture of a plain state_dict */
    if (c.init && !model_set) c.model = NULL;
    /* torchvision's CIFAR recipe pads by 4 */
    if (!crop_pad_set && !strncmp(c.data, "cifar", 5)) c.crop_pad = 4;
    cli_train_progress ps;
    cli_train_progress_init(&ps, json);
    c.progress = cli_train_on_progress;
    c.user = &ps;
    c.step_epochs = step_epochs;
    cn_model_config mc;
    cn_model_config_default(&mc);
    cli_effnet_config(&eo, &mc);
    c.model_config = &mc;
    cn_train_result r;
    cn_status st = cn_train(&c, &r);
    if (st != CN_OK) return cli_fail(C, st);
    if (json) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "out", c.out_dir);
        cJSON_AddNumberToObject(o, "epochs", r.epochs_done);
        cJSON_AddNumberToObject(o, "params", (double)r.params);
        cJSON_AddNumberToObject(o, "train_loss", r.train_loss);
        cJSON_AddNumberToObject(o, "train_acc", r.train_acc);
        cJSON_AddNumberToObject(o, "test_loss", r.test_loss);
        cJSON_AddNumberToObject(o, "test_acc", r.test_acc);
        cJSON_AddNumberToObject(o, "seconds", r.seconds);
        cJSON_AddNumberToObject(o, "img_per_s", r.img_per_s);
        if (c.prune) {
            cJSON_AddStringToObject(o, "prune_method", cli_prune_method_name(pc.method));
            cJSON_AddNumberToObject(o, "pruned_fraction", r.pruned_fraction);
        }
        cli_print_json(o);
    } else {
        if (c.stop_after && r.epochs_done < c.epochs)
            printf("stopped after epoch %d of %d; continue with: convnet train --resume %s\n",
                   r.epochs_done, c.epochs, c.out_dir);
        else
            printf("test accuracy %.2f%% (loss %.4f) after %d epochs; model saved to "
                   "%s/model.safetensors\n",
                   100 * r.test_acc, r.test_loss, r.epochs_done, c.out_dir);
        if (c.prune)
            printf("pruned %.1f%% of the prunable %s (%s); %lld parameters\n", 100 * r.pruned_fraction,
                   pc.method == CN_PRUNE_MAGNITUDE ? "weights" : "channels",
                   cli_prune_method_name(pc.method), (long long)r.params);
    }
    return EXIT_OK;
}
