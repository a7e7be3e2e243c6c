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
    "  --json                print a JSON summary on stdout\n";

typedef struct prog_state {
    cli_progress bar;
    int json;
} prog_state;

static void on_progress(const cn_train_progress *p, void *user) {
    prog_state *s = user;
    char eta[32];
    cli_fmt_duration(eta, sizeof eta, p->eta_s);
    if (p->phase == 0) {
        int width = 24, fill = (int)(width * p->step / (p->steps_per_epoch ? p->steps_per_epoch : 1));
        char bar[32];
        for (int i = 0; i < width; i++) bar[i] = i < fill ? '#' : '.';
        bar[width] = 0;
        cli_progress_line(&s->bar, p->step == p->steps_per_epoch,
                          "epoch %d/%d [%s] %lld/%lld loss %.4f acc %.2f%% lr %.4g %.0f img/s ETA %s",
                          p->epoch, p->epochs, bar, (long long)p->step,
                          (long long)p->steps_per_epoch, p->loss, 100 * p->acc, p->lr,
                          p->img_per_s, eta);
    } else {
        cli_progress_done(&s->bar);
        /* the per-epoch result is a result: stdout, unless --json owns stdout */
        FILE *f = s->json ? stderr : stdout;
        fprintf(f, "epoch %d/%d train_loss %.4f train_acc %.2f%% test_loss %.4f test_acc %.2f%% "
                   "%.0f img/s\n",
                p->epoch, p->epochs, p->loss, 100 * p->acc, p->test_loss, 100 * p->test_acc,
                p->img_per_s);
        fflush(f);
    }
}

int cmd_train(int argc, char **argv) {
    const char *C = "train";
    cn_train_config c;
    cn_train_config_default(&c);
    int json = 0, lr_set = 0, wd_set = 0, step_epochs = 30, crop_pad_set = 0, ih, iw;
    float gamma = 0.1f;
    const char *opt_name = "sgd", *sched = "cosine";
    float lr = 0, wd = 0, mom = 0.9f;
    int nesterov = 1;
    cli_model_opts eo;
    cli_model_opts_init(&eo);
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
        } else if (!strcmp(a, "--model")) { VAL(); c.model = v; }
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
        else {
            cli_err(C, "unknown option '%s' (see convnet train --help)", a);
            return EXIT_USAGE;
        }
#undef VAL
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
    /* torchvision's CIFAR recipe pads by 4 */
    if (!crop_pad_set && !strncmp(c.data, "cifar", 5)) c.crop_pad = 4;
    prog_state ps;
    cli_progress_init(&ps.bar);
    ps.json = json;
    c.progress = on_progress;
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
        cli_print_json(o);
    } else {
        if (c.stop_after && r.epochs_done < c.epochs)
            printf("stopped after epoch %d of %d; continue with: convnet train --resume %s\n",
                   r.epochs_done, c.epochs, c.out_dir);
        else
            printf("test accuracy %.2f%% (loss %.4f) after %d epochs; model saved to "
                   "%s/model.safetensors\n",
                   100 * r.test_acc, r.test_loss, r.epochs_done, c.out_dir);
    }
    return EXIT_OK;
}
