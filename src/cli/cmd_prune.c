/* convnet prune */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"

static const char *help =
    "usage: convnet prune MODEL --out OUT.safetensors (--amount F | --threshold T) [options]\n"
    "       convnet prune MODEL --sensitivity --data SPEC [options]\n"
    "\n"
    "Removes whole channels (l2, l1, bn: a smaller, faster dense model) or zeroes single weights\n"
    "(magnitude: same shapes, kept at zero by later training) and reports, per convolution and\n"
    "linear layer, output channels, parameters, MACs and measured latency before and after,\n"
    "with the totals and, given --data, the test accuracy before, after pruning and after\n"
    "fine-tuning. Channels that reach a residual add are left alone; see README \"Pruning\".\n"
    "OUT is written (atomically) only when everything succeeded; MODEL is never modified.\n"
    "\n"
    "  MODEL                 a .safetensors model (convnet's, or torchvision's with --model NAME)\n"
    "  --model NAME          the architecture of a plain torchvision state_dict\n"
    "  --out FILE            the pruned model\n"
    "  --method l2|l1|bn|magnitude   channel importance: filter L2 or L1 norm (normalised over\n"
    "                        the layer), |BN gamma|; magnitude: |w| of single weights (default l2)\n"
    "  --amount F            prune this fraction in [0, 1) of the channels (or weights)\n"
    "  --threshold T         prune what scores below T (l2/l1: share of the layer's norm;\n"
    "                        bn: |gamma|; magnitude: |w|); exactly one of --amount, --threshold\n"
    "  --scope layer|global  each layer on its own, or all channels compete (default layer)\n"
    "  --min-channels K      keep at least K channels per layer (default 1)\n"
    "  --round-to N          keep a multiple of N channels per layer (default 1)\n"
    "  --data SPEC           fashion-mnist[:DIR] or mnist:DIR: measure test accuracy\n"
    "  --limit-test N        evaluate on the first N test samples (default all; 2000 with\n"
    "                        --sensitivity)\n"
    "  --report FILE         the CSV report (default OUT with .safetensors -> .prune.csv)\n"
    "  --input-size HxW      for MACs and latency (default: the model's usual size)\n"
    "  --bench-batch B       batch of the latency runs (default 1)\n"
    "  --bench-runs R        timed runs (default 20, after 3 warm-up runs)\n"
    "  --threads N           default: all cores\n"
    "  --json                the report as JSON on stdout (the table goes to stderr)\n"
    "\n"
    "fine-tuning after pruning (needs --data; the run's checkpoint and metrics.csv are kept in\n"
    "OUT without .safetensors + \".finetune/\"):\n"
    "  --finetune-epochs N   train the pruned model N epochs\n"
    "  --lr LR               default 0.01 (SGD), 1e-4 (AdamW)\n"
    "  --optimizer sgd|adamw --momentum M --nesterov|--no-nesterov --weight-decay WD\n"
    "  --schedule cosine|step|constant --warmup E --label-smoothing S --crop-pad P --no-flip\n"
    "  --batch N --seed N --limit-train N    as for convnet train (defaults: SGD momentum 0.9\n"
    "                        Nesterov, wd 5e-4, cosine, batch 128, crop-pad 2, flip)\n"
    "\n"
    "sensitivity analysis (writes no model):\n"
    "  --sensitivity         prune each layer alone by each ratio and measure the accuracy\n"
    "  --ratios R1,R2,...    fractions of the layer's channels (default 0.25,0.5,0.75)\n"
    "  --report FILE         also write the table as CSV\n";

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* ---------------------------------------------------------------- measurements */

typedef struct layer_row {
    char name[96];
    char op[16];
    int channels;
    int64_t params, macs;
    double ms;              /* mean forward time per run */
    double sparsity;        /* zero fraction of its weight; -1: no weight tensor found */
} layer_row;

typedef struct model_stats {
    layer_row *rows;
    int n;
    int64_t params, macs;
    int64_t weights, zeros; /* of every convolution and linear weight */
    double latency_ms;      /* median whole-model forward */
} model_stats;

static void stats_free(model_stats *s) {
    free(s->rows);
    memset(s, 0, sizeof *s);
}

/* Zero count of tensor `name`; -1 if there is none. */
static int64_t tensor_zeros(const cn_model *m, const char *name, int64_t *count) {
    int t = cn_model_tensor_find(m, name);
    cn_tensor_info ti;
    if (t < 0 || cn_model_tensor_info(m, t, &ti) != CN_OK) return -1;
    float *v = malloc(sizeof *v * ((size_t)ti.count + 1));
    if (!v) return -1;
    int64_t z = 0;
    if (cn_model_tensor_get(m, t, v) == CN_OK)
        for (int64_t i = 0; i < ti.count; i++) z += v[i] == 0.0f;
    else z = -1;
    free(v);
    *count = ti.count;
    return z;
}

/* Layer tables, sizes and measured latency of the models ms[0..1]: warm-up, then `runs` timed
 * eval forwards of a batch of fixed pseudo-random images with per-node profiling on. The two
 * models take turns, so that a change in the machine's load hits both alike, and every time is
 * the median over the runs, so that a stray slow run does not skew one layer. 0 or an exit code
 * (after a message). */
static int measure(const char *C, cn_model *ms[2], int h, int w, int batch, int runs,
                   model_stats s[2]) {
    memset(s, 0, 2 * sizeof *s);
    int cin = cn_model_in_channels(ms[0]), k = cn_model_num_classes(ms[0]);
    size_t count = (size_t)batch * cin * h * w;
    float *x = malloc(sizeof *x * count);
    float *logits = malloc(sizeof *logits * (size_t)batch * k);
    double *times = malloc(sizeof *times * 2 * (size_t)runs);
    double *node[2] = {NULL, NULL}; /* (runs, rows) forward times of the selected nodes */
    int *sel[2] = {NULL, NULL};     /* node index of each selected row */
    cn_status st = CN_OK;
    int rc = 0;
    const cn_layer_info *rows;
    int n = 0;
    if (!x || !logits || !times) goto nomem;
    for (size_t i = 0; i < count; i++) x[i] = (float)((i * 2654435761u) % 1000) / 500.0f - 1.0f;
    /* the rows: every convolution and linear layer */
    for (int mi = 0; mi < 2; mi++) {
        cn_model *m = ms[mi];
        model_stats *sm = &s[mi];
        if ((st = cn_model_layers(m, h, w, &rows, &n)) != CN_OK) goto out;
        sm->rows = calloc((size_t)n + 1, sizeof *sm->rows);
        sel[mi] = malloc(sizeof *sel[mi] * ((size_t)n + 1));
        node[mi] = malloc(sizeof *node[mi] * ((size_t)n + 1) * (size_t)runs);
        if (!sm->rows || !sel[mi] || !node[mi]) goto nomem;
        sm->params = cn_model_param_count(m);
        for (int i = 0; i < n; i++) {
            sm->macs += rows[i].macs;
            if (strcmp(rows[i].op, "conv2d") && strcmp(rows[i].op, "linear")) continue;
            layer_row *r = &sm->rows[sm->n];
            sel[mi][sm->n++] = i;
            snprintf(r->name, sizeof r->name, "%s", rows[i].name);
            snprintf(r->op, sizeof r->op, "%s", rows[i].op);
            r->channels = rows[i].c;
            r->params = rows[i].params;
            r->macs = rows[i].macs;
            char wname[112];
            snprintf(wname, sizeof wname, "%s.weight", rows[i].name);
            int64_t wc = 0, z = tensor_zeros(m, wname, &wc);
            r->sparsity = z >= 0 && wc > 0 ? (double)z / (double)wc : -1;
            if (z >= 0) {
                sm->weights += wc;
                sm->zeros += z;
            }
        }
    }
    for (int r = -3; r < runs; r++)
        for (int mi = 0; mi < 2; mi++) {
            cn_model *m = ms[mi];
            /* reading the layer table plans batch 1: plan the bench batch again, untimed */
            if (r >= 0 && batch != 1 && (st = cn_model_forward(m, x, batch, h, w, 0, logits)) != CN_OK)
                goto out;
            if (r >= 0) cn_model_set_profiling(m, 1); /* resets the counters */
            double t0 = cli_now();
            if ((st = cn_model_forward(m, x, batch, h, w, 0, logits)) != CN_OK) goto out;
            if (r < 0) continue;
            times[mi * runs + r] = cli_now() - t0;
            if ((st = cn_model_layers(m, h, w, &rows, &n)) != CN_OK) goto out;
            for (int j = 0; j < s[mi].n; j++) node[mi][(size_t)j * runs + r] = rows[sel[mi][j]].forward_s;
        }
    for (int mi = 0; mi < 2; mi++) {
        double *t = times + mi * runs;
        qsort(t, (size_t)runs, sizeof *t, cmp_d);
        s[mi].latency_ms = 1e3 * (runs % 2 ? t[runs / 2] : 0.5 * (t[runs / 2 - 1] + t[runs / 2]));
        for (int j = 0; j < s[mi].n; j++) {
            t = node[mi] + (size_t)j * runs;
            qsort(t, (size_t)runs, sizeof *t, cmp_d);
            s[mi].rows[j].ms = 1e3 * (runs % 2 ? t[runs / 2] : 0.5 * (t[runs / 2 - 1] + t[runs / 2]));
        }
    }
    goto out;
nomem:
    cli_err(C, "out of memory for a batch of %d at %dx%d (--bench-batch)", batch, h, w);
    rc = EXIT_FAIL;
out:
    if (st != CN_OK && !rc) rc = cli_fail(C, st);
    for (int mi = 0; mi < 2; mi++) {
        cn_model_set_profiling(ms[mi], 0);
        free(node[mi]);
        free(sel[mi]);
    }
    free(x);
    free(logits);
    free(times);
    if (rc) {
        stats_free(&s[0]);
        stats_free(&s[1]);
    }
    return rc;
}

static double sparsity(const model_stats *s) {
    return s->weights ? (double)s->zeros / (double)s->weights : 0;
}

/* ---------------------------------------------------------------- files */

/* 1 when a and b name the same existing file. */
static int same_file(const char *a, const char *b) {
    struct stat x, y;
    return stat(a, &x) == 0 && stat(b, &y) == 0 && x.st_dev == y.st_dev && x.st_ino == y.st_ino;
}

/* 0 when the directory that would hold `path` exists and is writable; else -1 after a message. */
static int check_dir(const char *C, const char *opt, const char *path) {
    size_t n = strlen(path);
    char *d = malloc(n + 2);
    if (!d) return -1;
    strcpy(d, path);
    char *slash = strrchr(d, '/');
    if (!slash) strcpy(d, ".");
    else if (slash == d) d[1] = 0;
    else *slash = 0;
    struct stat st;
    int ok = stat(d, &st) == 0 && S_ISDIR(st.st_mode) && access(d, W_OK) == 0;
    if (!ok)
        cli_err(C, "%s %s: the directory %s %s", opt, path, d,
                stat(d, &st) != 0 ? "does not exist" : !S_ISDIR(st.st_mode) ? "is not a directory" : "is not writable");
    free(d);
    return ok ? 0 : -1;
}

/* path with a trailing ".safetensors" replaced by `suffix` (appended if there is none). */
static char *replace_ext(const char *path, const char *suffix) {
    size_t n = strlen(path), e = strlen(".safetensors");
    if (n > e && !strcmp(path + n - e, ".safetensors")) n -= e;
    char *r = malloc(n + strlen(suffix) + 1);
    if (!r) return NULL;
    memcpy(r, path, n);
    strcpy(r + n, suffix);
    return r;
}

/* ---------------------------------------------------------------- options */

typedef struct prune_opts {
    cli_model_opts mo;
    const char *out, *data, *report;
    cn_prune_config pc;
    double amount;          /* as typed, for the report */
    int amount_set, threshold_set, sensitivity, limit_test, bench_batch, bench_runs;
    float ratios[16];
    int nratios;
    /* fine-tuning */
    int finetune_epochs;
    const char *train_opt;  /* the first training option seen, for the message without --finetune-epochs */
    cn_train_config tc;
    const char *optimizer, *schedule;
    float lr, wd, mom;
    int lr_set, wd_set, nesterov;
} prune_opts;

static int parse_ratios(const char *C, const char *s, prune_opts *p) {
    char buf[256];
    if (strlen(s) >= sizeof buf || !*s) goto bad;
    strcpy(buf, s);
    p->nratios = 0;
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *end;
        errno = 0;
        double v = strtod(tok, &end);
        if (errno || end == tok || *end || !(v > 0 && v < 1) || p->nratios == 16) goto bad;
        p->ratios[p->nratios++] = (float)v;
    }
    if (p->nratios) return 0;
bad:
    cli_err(C, "--ratios '%s': expected up to 16 comma-separated fractions in (0, 1)", s);
    return -1;
}

/* 1: consumed, 0: not ours, -1: bad value */
static int parse_one(const char *C, void *opts, int argc, char **argv, int *i) {
    prune_opts *p = opts;
    const char *a = argv[*i], *v;
    static const char *const flags[] = {"--sensitivity", "--nesterov", "--no-nesterov", "--no-flip"};
    static const char *const valued[] = {
        "--out", "--method", "--amount", "--threshold", "--scope", "--min-channels", "--round-to",
        "--data", "--limit-test", "--report", "--bench-batch", "--bench-runs", "--ratios",
        "--finetune-epochs", "--lr", "--optimizer", "--momentum", "--weight-decay", "--schedule",
        "--warmup", "--label-smoothing", "--crop-pad", "--batch", "--seed", "--limit-train"};
    int flag = 0, val = 0;
    for (size_t k = 0; k < sizeof flags / sizeof *flags; k++) flag |= !strcmp(a, flags[k]);
    for (size_t k = 0; k < sizeof valued / sizeof *valued; k++) val |= !strcmp(a, valued[k]);
    if (!flag && !val) return 0;
    if (flag) {
        if (!strcmp(a, "--sensitivity")) p->sensitivity = 1;
        else if (!strcmp(a, "--no-flip")) p->tc.flip = 0;
        else p->nesterov = !strcmp(a, "--nesterov");
        if (strcmp(a, "--sensitivity") && !p->train_opt) p->train_opt = a;
        return 1;
    }
    if (!(v = cli_value(C, argc, argv, i))) return -1;
    int bad = 0, train_opt = 0;
    cn_train_config *c = &p->tc;
    if (!strcmp(a, "--out")) p->out = v;
    else if (!strcmp(a, "--method")) bad = cli_prune_method(C, a, v, &p->pc.method);
    else if (!strcmp(a, "--amount")) {
        bad = cli_fraction(C, a, v, &p->pc.amount);
        p->amount = strtod(v, NULL);
        p->amount_set = 1;
    }
    else if (!strcmp(a, "--threshold")) { bad = cli_float(C, a, v, 0, 1e30, &p->pc.threshold); p->threshold_set = 1; }
    else if (!strcmp(a, "--scope")) bad = cli_prune_scope(C, a, v, &p->pc.global);
    else if (!strcmp(a, "--min-channels")) bad = cli_int(C, a, v, 1, 65536, &p->pc.min_channels);
    else if (!strcmp(a, "--round-to")) bad = cli_int(C, a, v, 1, 4096, &p->pc.round_to);
    else if (!strcmp(a, "--data")) p->data = v;
    else if (!strcmp(a, "--limit-test")) bad = cli_int(C, a, v, 1, 1 << 30, &p->limit_test);
    else if (!strcmp(a, "--report")) p->report = v;
    else if (!strcmp(a, "--bench-batch")) bad = cli_int(C, a, v, 1, 65536, &p->bench_batch);
    else if (!strcmp(a, "--bench-runs")) bad = cli_int(C, a, v, 1, 100000, &p->bench_runs);
    else if (!strcmp(a, "--ratios")) bad = parse_ratios(C, v, p);
    else if (!strcmp(a, "--finetune-epochs")) bad = cli_int(C, a, v, 1, 100000, &p->finetune_epochs);
    else {
        train_opt = 1;
        if (!strcmp(a, "--lr")) { bad = cli_float(C, a, v, 1e-12, 100, &p->lr); p->lr_set = 1; }
        else if (!strcmp(a, "--optimizer")) p->optimizer = v;
        else if (!strcmp(a, "--momentum")) bad = cli_float(C, a, v, 0, 0.9999, &p->mom);
        else if (!strcmp(a, "--weight-decay")) { bad = cli_float(C, a, v, 0, 1, &p->wd); p->wd_set = 1; }
        else if (!strcmp(a, "--schedule")) p->schedule = v;
        else if (!strcmp(a, "--warmup")) bad = cli_float(C, a, v, 0, 100000, &c->warmup_epochs);
        else if (!strcmp(a, "--label-smoothing")) bad = cli_float(C, a, v, 0, 0.999, &c->label_smoothing);
        else if (!strcmp(a, "--crop-pad")) bad = cli_int(C, a, v, 0, 64, &c->crop_pad);
        else if (!strcmp(a, "--batch")) bad = cli_int(C, a, v, 1, 65536, &c->batch);
        else if (!strcmp(a, "--seed")) {
            bad = cli_u64(C, a, v, &c->seed);
            p->mo.seed = c->seed;
            p->mo.seed_set = 1;
        } else bad = cli_int(C, a, v, 1, 1 << 30, &c->limit_train); /* --limit-train */
    }
    if (train_opt && !p->train_opt) p->train_opt = a;
    return bad ? -1 : 1;
}

/* Cross-option checks once everything is parsed; 0 or an exit code. */
static int validate(const char *C, prune_opts *p) {
    if (p->sensitivity) {
        if (!p->data) {
            cli_err(C, "--sensitivity needs --data SPEC to measure accuracy");
            return EXIT_USAGE;
        }
        if (p->out || p->amount_set || p->threshold_set || p->finetune_epochs) {
            cli_err(C, "--sensitivity writes no model: drop %s",
                    p->out ? "--out" : p->amount_set ? "--amount" : p->threshold_set ? "--threshold" : "--finetune-epochs");
            return EXIT_USAGE;
        }
        if (p->pc.method == CN_PRUNE_MAGNITUDE) {
            cli_err(C, "--sensitivity ranks channels: use --method l2, l1 or bn, not magnitude");
            return EXIT_USAGE;
        }
        if (!p->limit_test) p->limit_test = 2000;
    } else {
        if (!p->out) {
            cli_err(C, "--out FILE is required (or --sensitivity)");
            return EXIT_USAGE;
        }
        if (p->amount_set == p->threshold_set) {
            cli_err(C, p->amount_set ? "give only one of --amount and --threshold"
                                     : "give --amount F or --threshold T");
            return EXIT_USAGE;
        }
        if (p->finetune_epochs && !p->data) {
            cli_err(C, "--finetune-epochs needs --data SPEC to train on");
            return EXIT_USAGE;
        }
    }
    if (p->train_opt && !p->finetune_epochs) {
        cli_err(C, "%s is a fine-tuning option: add --finetune-epochs N (and --data)", p->train_opt);
        return EXIT_USAGE;
    }
    if (p->limit_test && !p->data) {
        cli_err(C, "--limit-test needs --data SPEC");
        return EXIT_USAGE;
    }
    if (p->nratios && !p->sensitivity) {
        cli_err(C, "--ratios belongs to --sensitivity");
        return EXIT_USAGE;
    }
    if (p->mo.path && p->out && same_file(p->mo.path, p->out)) {
        cli_err(C, "--out %s is the input model %s: write the pruned model elsewhere", p->out, p->mo.path);
        return EXIT_USAGE;
    }
    if (p->mo.path && p->report && same_file(p->mo.path, p->report)) {
        cli_err(C, "--report %s is the input model %s", p->report, p->mo.path);
        return EXIT_USAGE;
    }
    if ((p->out && check_dir(C, "--out", p->out)) || (p->report && check_dir(C, "--report", p->report)))
        return EXIT_FAIL;
    if (p->out && p->report && !strcmp(p->out, p->report)) {
        cli_err(C, "--report %s is also --out", p->report);
        return EXIT_USAGE;
    }
    /* fine-tuning: convnet train's settings with a lower learning rate */
    cn_train_config *c = &p->tc;
    cn_optim_kind kind;
    if (!strcmp(p->optimizer, "sgd")) kind = CN_OPTIM_SGD;
    else if (!strcmp(p->optimizer, "adamw")) kind = CN_OPTIM_ADAMW;
    else {
        cli_err(C, "--optimizer '%s': expected sgd or adamw", p->optimizer);
        return EXIT_USAGE;
    }
    cn_optim_config_default(&c->optim, kind);
    c->optim.lr = p->lr_set ? p->lr : kind == CN_OPTIM_SGD ? 0.01f : 1e-4f;
    if (p->wd_set) c->optim.weight_decay = p->wd;
    if (kind == CN_OPTIM_SGD) {
        c->optim.momentum = p->mom;
        c->optim.nesterov = p->nesterov && p->mom > 0;
    }
    if (!strcmp(p->schedule, "cosine")) c->sched.kind = CN_SCHED_COSINE;
    else if (!strcmp(p->schedule, "step")) c->sched.kind = CN_SCHED_STEP;
    else if (!strcmp(p->schedule, "constant")) c->sched.kind = CN_SCHED_CONSTANT;
    else {
        cli_err(C, "--schedule '%s': expected cosine, step or constant", p->schedule);
        return EXIT_USAGE;
    }
    c->epochs = p->finetune_epochs ? p->finetune_epochs : 1;
    c->data = p->data;
    c->limit_test = p->limit_test;
    c->threads = p->mo.threads;
    return 0;
}

static cn_status evaluate(cn_model *m, const prune_opts *p, float *acc) {
    float loss;
    int count;
    return cn_evaluate(m, p->data, 0, 500, p->limit_test, acc, &loss, &count);
}

/* ---------------------------------------------------------------- sensitivity */

typedef struct sens_row {
    cn_prune_group g;
    float acc[16];
} sens_row;

static int cmp_score(const void *a, const void *b, void *s) {
    const float *sc = s;
    int x = *(const int *)a, y = *(const int *)b;
    if (sc[x] != sc[y]) return sc[x] < sc[y] ? -1 : 1;
    return x - y;
}

static int run_sensitivity(const char *C, prune_opts *p, cn_model *m) {
    static const float defaults[] = {0.25f, 0.5f, 0.75f};
    if (!p->nratios) {
        memcpy(p->ratios, defaults, sizeof defaults);
        p->nratios = 3;
    }
    cn_prune_group *groups = NULL;
    sens_row *rows = NULL;
    uint8_t *keep = NULL;
    float *scores = NULL;
    int *order = NULL, ng = 0, total = 0, rc = EXIT_FAIL;
    float base;
    cn_status st = cn_prune_groups(m, &groups, &ng);
    if (st != CN_OK) return cli_fail(C, st);
    int maxc = 1;
    for (int i = 0; i < ng; i++) {
        total += groups[i].channels;
        if (groups[i].channels > maxc) maxc = groups[i].channels;
    }
    rows = calloc((size_t)ng + 1, sizeof *rows);
    keep = malloc((size_t)total + 1);
    scores = malloc(sizeof *scores * (size_t)maxc);
    order = malloc(sizeof *order * (size_t)maxc);
    if (!rows || !keep || !scores || !order) {
        cli_err(C, "out of memory");
        goto out;
    }
    if ((st = evaluate(m, p, &base)) != CN_OK) goto fail;
    fprintf(stderr, "unpruned: accuracy %.2f%%; %d prunable layer(s), ratios", 100 * base, ng);
    for (int r = 0; r < p->nratios; r++) fprintf(stderr, " %g", p->ratios[r]);
    fputc('\n', stderr);
    double t0 = cli_now();
    for (int gi = 0, off = 0; gi < ng; off += groups[gi].channels, gi++) {
        int ch = groups[gi].channels;
        rows[gi].g = groups[gi];
        if ((st = cn_prune_importance(m, p->pc.method, gi, scores)) != CN_OK) goto fail;
        for (int c = 0; c < ch; c++) order[c] = c;
        qsort_r(order, (size_t)ch, sizeof *order, cmp_score, scores);
        for (int r = 0; r < p->nratios; r++) {
            int drop = (int)floor((double)p->ratios[r] * ch);
            if (drop > ch - 1) drop = ch - 1; /* a layer keeps at least one channel */
            memset(keep, 1, (size_t)total);
            for (int k = 0; k < drop; k++) keep[off + order[k]] = 0;
            cn_model *q;
            if ((st = cn_prune_surgery(&q, m, keep)) != CN_OK) goto fail;
            st = evaluate(q, p, &rows[gi].acc[r]);
            cn_model_free(q);
            if (st != CN_OK) goto fail;
        }
        char el[32];
        cli_fmt_duration(el, sizeof el, cli_now() - t0);
        fprintf(stderr, "[%d/%d] %s (%d channels):", gi + 1, ng, groups[gi].name, ch);
        for (int r = 0; r < p->nratios; r++) fprintf(stderr, " %.2f%%", 100 * rows[gi].acc[r]);
        fprintf(stderr, "  (%s)\n", el);
    }
    if (p->report) {
        size_t n = strlen(p->report);
        char *tmp = malloc(n + 8);
        FILE *f = NULL;
        if (tmp) {
            snprintf(tmp, n + 8, "%s.tmp", p->report);
            f = fopen(tmp, "w");
        }
        if (!f) {
            cli_err(C, "--report %s: cannot write: %s", p->report, strerror(errno));
            free(tmp);
            goto out;
        }
        fprintf(f, "layer,channels");
        for (int r = 0; r < p->nratios; r++) fprintf(f, ",acc_%g,drop_%g", p->ratios[r], p->ratios[r]);
        fprintf(f, "\nUNPRUNED,");
        for (int r = 0; r < p->nratios; r++) fprintf(f, ",%.6f,0", base);
        fputc('\n', f);
        for (int gi = 0; gi < ng; gi++) {
            fprintf(f, "%s,%d", rows[gi].g.name, rows[gi].g.channels);
            for (int r = 0; r < p->nratios; r++)
                fprintf(f, ",%.6f,%.6f", rows[gi].acc[r], base - rows[gi].acc[r]);
            fputc('\n', f);
        }
        int bad = ferror(f);
        bad |= fclose(f) != 0;
        if (bad || rename(tmp, p->report) != 0) {
            cli_err(C, "--report %s: cannot write: %s", p->report, strerror(errno));
            unlink(tmp);
            free(tmp);
            goto out;
        }
        free(tmp);
    }
    FILE *tf = p->mo.json ? stderr : stdout;
    int nw = 5;
    for (int gi = 0; gi < ng; gi++) {
        int l = (int)strlen(rows[gi].g.name);
        if (l > nw) nw = l;
    }
    fprintf(tf, "sensitivity of %s (method %s, %d test samples): unpruned accuracy %.2f%%; drop in "
                "accuracy points\n\n",
            cn_model_name(m), cli_prune_method_name(p->pc.method), p->limit_test, 100 * base);
    fprintf(tf, "%-*s %8s", nw, "layer", "channels");
    for (int r = 0; r < p->nratios; r++) {
        char h[32];
        snprintf(h, sizeof h, "acc@%g", p->ratios[r]);
        fprintf(tf, " %9s", h);
        snprintf(h, sizeof h, "drop@%g", p->ratios[r]);
        fprintf(tf, " %9s", h);
    }
    fputc('\n', tf);
    for (int gi = 0; gi < ng; gi++) {
        fprintf(tf, "%-*s %8d", nw, rows[gi].g.name, rows[gi].g.channels);
        for (int r = 0; r < p->nratios; r++)
            fprintf(tf, " %8.2f%% %9.2f", 100 * rows[gi].acc[r], 100 * (base - rows[gi].acc[r]));
        fputc('\n', tf);
    }
    if (p->report) fprintf(tf, "\nreport: %s\n", p->report);
    if (p->mo.json) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "model", cn_model_name(m));
        cJSON_AddStringToObject(j, "method", cli_prune_method_name(p->pc.method));
        cJSON_AddNumberToObject(j, "samples", p->limit_test);
        cJSON_AddNumberToObject(j, "acc_unpruned", base);
        cJSON *ra = cJSON_AddArrayToObject(j, "ratios");
        for (int r = 0; r < p->nratios; r++) cJSON_AddItemToArray(ra, cJSON_CreateNumber(p->ratios[r]));
        cJSON *ga = cJSON_AddArrayToObject(j, "layers");
        for (int gi = 0; gi < ng; gi++) {
            cJSON *l = cJSON_CreateObject();
            cJSON_AddStringToObject(l, "name", rows[gi].g.name);
            cJSON_AddNumberToObject(l, "channels", rows[gi].g.channels);
            cJSON *acc = cJSON_AddArrayToObject(l, "acc"), *drop = cJSON_AddArrayToObject(l, "drop");
            for (int r = 0; r < p->nratios; r++) {
                cJSON_AddItemToArray(acc, cJSON_CreateNumber(rows[gi].acc[r]));
                cJSON_AddItemToArray(drop, cJSON_CreateNumber(base - rows[gi].acc[r]));
            }
            cJSON_AddItemToArray(ga, l);
        }
        if (p->report) cJSON_AddStringToObject(j, "report", p->report);
        cli_print_json(j);
    }
    rc = EXIT_OK;
    goto out;
fail:
    rc = cli_fail(C, st);
out:
    free(groups);
    free(rows);
    free(keep);
    free(scores);
    free(order);
    return rc;
}

/* ---------------------------------------------------------------- prune */

/* Fine-tunes *pm through cn_train (its init file next to out, its run in out.finetune/); on
 * success *pm is the fine-tuned model. */
static int finetune(const char *C, prune_opts *p, cn_model **pm, float *acc) {
    char *init = replace_ext(p->out, ".prune-init.safetensors");
    char *dir = replace_ext(p->out, ".finetune");
    char *final = dir ? malloc(strlen(dir) + 32) : NULL;
    int rc = EXIT_FAIL;
    cn_status st;
    if (!init || !dir || !final) {
        cli_err(C, "out of memory");
        goto out;
    }
    sprintf(final, "%s/model.safetensors", dir);
    if ((st = cn_model_save(*pm, init)) != CN_OK) {
        rc = cli_fail(C, st);
        goto out;
    }
    cn_train_config *c = &p->tc;
    c->init = init;
    c->out_dir = dir;
    cli_train_progress ps;
    cli_train_progress_init(&ps, p->mo.json);
    c->progress = cli_train_on_progress;
    c->user = &ps;
    fprintf(stderr, "fine-tuning %d epoch(s) in %s\n", c->epochs, dir);
    cn_train_result r;
    st = cn_train(c, &r);
    unlink(init);
    if (st != CN_OK) {
        rc = cli_fail(C, st);
        goto out;
    }
    cn_model *f;
    cn_model_config cfg;
    cn_model_config_default(&cfg);
    cfg.name = NULL; /* the file names its architecture */
    cfg.threads = p->mo.threads;
    if ((st = cn_model_load(&f, final, &cfg)) != CN_OK) {
        rc = cli_fail(C, st);
        goto out;
    }
    cn_model_free(*pm);
    *pm = f;
    *acc = r.test_acc;
    rc = EXIT_OK;
out:
    free(init);
    free(dir);
    free(final);
    return rc;
}

static void put_acc(cJSON *j, const char *key, float acc) {
    if (acc >= 0) cJSON_AddNumberToObject(j, key, acc);
    else cJSON_AddNullToObject(j, key);
}

static void fmt_acc(char *buf, size_t n, float acc) {
    if (acc >= 0) snprintf(buf, n, "%.2f%%", 100 * acc);
    else snprintf(buf, n, "-");
}

static const layer_row *find_row(const model_stats *s, const char *name, int *used) {
    for (int i = 0; i < s->n; i++)
        if (!used[i] && !strcmp(s->rows[i].name, name)) {
            used[i] = 1;
            return &s->rows[i];
        }
    return NULL;
}

static double pct(double before, double after) {
    return before > 0 ? 100.0 * (after - before) / before : 0;
}

/* CSV report into report.tmp; renamed by the caller once the model is saved. */
static int write_csv(const char *path, const model_stats *a, const model_stats *b,
                     const layer_row **match, const float acc[3]) {
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    fprintf(f, "layer,op,channels_before,channels_after,params_before,params_after,macs_before,"
               "macs_after,latency_ms_before,latency_ms_after,sparsity_after,acc_before,acc_after,"
               "acc_finetuned\n");
    for (int i = 0; i < a->n; i++) {
        const layer_row *r = &a->rows[i], *q = match[i];
        if (q)
            fprintf(f, "%s,%s,%d,%d,%lld,%lld,%lld,%lld,%.6f,%.6f,%.6f,,,\n", r->name, r->op,
                    r->channels, q->channels, (long long)r->params, (long long)q->params,
                    (long long)r->macs, (long long)q->macs, r->ms, q->ms, q->sparsity);
        else
            fprintf(f, "%s,%s,%d,0,%lld,0,%lld,0,%.6f,0,,,,\n", r->name, r->op, r->channels,
                    (long long)r->params, (long long)r->macs, r->ms);
    }
    fprintf(f, "TOTAL,,,,%lld,%lld,%lld,%lld,%.6f,%.6f,%.6f", (long long)a->params,
            (long long)b->params, (long long)a->macs, (long long)b->macs, a->latency_ms,
            b->latency_ms, sparsity(b));
    for (int k = 0; k < 3; k++)
        if (acc[k] >= 0) fprintf(f, ",%.6f", acc[k]);
        else fputc(',', f);
    fputc('\n', f);
    int bad = ferror(f);
    bad |= fclose(f) != 0;
    return bad ? -1 : 0;
}

static void print_table(FILE *f, const prune_opts *p, cn_model *m, const model_stats *a,
                        const model_stats *b, const layer_row **match, const float acc[3],
                        int h, int w) {
    int nw = 5;
    for (int i = 0; i < a->n; i++) {
        int l = (int)strlen(a->rows[i].name);
        if (l > nw) nw = l;
    }
    fprintf(f, "%s pruned with %s, ", cn_model_name(m), cli_prune_method_name(p->pc.method));
    if (p->amount_set) fprintf(f, "amount %g", p->amount);
    else fprintf(f, "threshold %g", p->pc.threshold);
    fprintf(f, ", %s scope; MACs and latency at %dx%d, batch %d, %d threads\n\n",
            p->pc.global ? "global" : "layer", h, w, p->bench_batch, cn_model_threads(m));
    fprintf(f, "%-*s %13s %21s %25s %21s\n", nw, "layer", "out channels", "params",
            "MACs", "latency ms");
    for (int i = 0; i < a->n; i++) {
        const layer_row *r = &a->rows[i], *q = match[i];
        char c[32], pa[48], ma[48], la[48];
        snprintf(c, sizeof c, "%d -> %d", r->channels, q ? q->channels : 0);
        snprintf(pa, sizeof pa, "%lld -> %lld", (long long)r->params, q ? (long long)q->params : 0LL);
        snprintf(ma, sizeof ma, "%lld -> %lld", (long long)r->macs, q ? (long long)q->macs : 0LL);
        snprintf(la, sizeof la, "%.3f -> %.3f", r->ms, q ? q->ms : 0.0);
        fprintf(f, "%-*s %13s %21s %25s %21s\n", nw, r->name, c, pa, ma, la);
    }
    char s0[16], s1[16], s2[16], nsamp[16] = "all";
    if (p->limit_test) snprintf(nsamp, sizeof nsamp, "%d", p->limit_test);
    fmt_acc(s0, sizeof s0, acc[0]);
    fmt_acc(s1, sizeof s1, acc[1]);
    fmt_acc(s2, sizeof s2, acc[2]);
    fprintf(f, "\ntotal params   %lld -> %lld (%+.1f%%)\n", (long long)a->params,
            (long long)b->params, pct((double)a->params, (double)b->params));
    fprintf(f, "total MACs     %lld -> %lld (%+.1f%%)\n", (long long)a->macs, (long long)b->macs,
            pct((double)a->macs, (double)b->macs));
    fprintf(f, "latency        %.3f ms -> %.3f ms (%+.1f%%); medians of %d runs\n", a->latency_ms,
            b->latency_ms, pct(a->latency_ms, b->latency_ms), p->bench_runs);
    fprintf(f, "zero weights   %.1f%% -> %.1f%% of the convolution and linear weights\n",
            100 * sparsity(a), 100 * sparsity(b));
    if (p->data)
        fprintf(f, "accuracy       %s before, %s after pruning%s%s%s (%s, %s test samples)\n", s0,
                s1, acc[2] >= 0 ? ", " : "", acc[2] >= 0 ? s2 : "",
                acc[2] >= 0 ? " after fine-tuning" : "", p->data, nsamp);
}

/* Magnitude pruning by threshold can zero a whole layer, which leaves a model that only outputs
 * its biases: refused like a structured threshold that removes every channel. */
static int check_dead_layers(const char *C, const prune_opts *p, const cn_model *m, const cn_model *q) {
    int n = cn_model_tensor_count(q);
    for (int i = 0; i < n; i++) {
        cn_tensor_info ti;
        if (cn_model_tensor_info(q, i, &ti) != CN_OK || !ti.is_param || (ti.ndim != 4 && ti.ndim != 2))
            continue;
        int64_t count, z = tensor_zeros(q, ti.name, &count), z0 = tensor_zeros(m, ti.name, &count);
        if (z == count && z0 < count) {
            size_t l = strlen(ti.name);
            cli_err(C, "--threshold %g zeroes every weight of %.*s; use a smaller threshold", p->pc.threshold,
                    (int)(l > 7 ? l - 7 : l), ti.name);
            return EXIT_USAGE;
        }
    }
    return 0;
}

static int run_prune(const char *C, prune_opts *p, cn_model *m) {
    int h = p->mo.h, w = p->mo.w, rc = EXIT_FAIL;
    float acc[3] = {-1, -1, -1};
    cn_model *q = NULL;
    model_stats ab[2] = {{0}, {0}}, *a = &ab[0], *b = &ab[1];
    const layer_row **match = NULL;
    int *used = NULL;
    char *report = p->report ? NULL : replace_ext(p->out, ".prune.csv");
    char *tmp = NULL;
    cn_status st;
    const char *report_path = p->report ? p->report : report;
    if (!report_path) {
        cli_err(C, "out of memory");
        return EXIT_FAIL;
    }
    if (p->data && (st = evaluate(m, p, &acc[0])) != CN_OK) goto fail;
    if ((st = cn_prune(&q, m, &p->pc)) != CN_OK) goto fail;
    if (p->pc.method == CN_PRUNE_MAGNITUDE && p->threshold_set &&
        (rc = check_dead_layers(C, p, m, q)))
        goto out;
    if (p->data && (st = evaluate(q, p, &acc[1])) != CN_OK) goto fail;
    if (p->finetune_epochs && (rc = finetune(C, p, &q, &acc[2])) != EXIT_OK) goto out;
    cn_model *both[2] = {m, q};
    if ((rc = measure(C, both, h, w, p->bench_batch, p->bench_runs, ab))) goto out;
    rc = EXIT_FAIL;
    match = calloc((size_t)a->n + 1, sizeof *match);
    used = calloc((size_t)b->n + 1, sizeof *used);
    tmp = malloc(strlen(report_path) + 8);
    if (!match || !used || !tmp) {
        cli_err(C, "out of memory");
        goto out;
    }
    for (int i = 0; i < a->n; i++) match[i] = find_row(b, a->rows[i].name, used);
    sprintf(tmp, "%s.tmp", report_path);
    if (write_csv(tmp, a, b, match, acc)) {
        cli_err(C, "report %s: cannot write: %s", report_path, strerror(errno));
        unlink(tmp);
        goto out;
    }
    if ((st = cn_model_save(q, p->out)) != CN_OK) {
        unlink(tmp);
        goto fail;
    }
    if (rename(tmp, report_path) != 0) {
        cli_err(C, "report %s: cannot write: %s", report_path, strerror(errno));
        unlink(tmp);
        goto out;
    }
    print_table(p->mo.json ? stderr : stdout, p, m, a, b, match, acc, h, w);
    fprintf(p->mo.json ? stderr : stdout, "\nmodel saved to %s, report to %s\n", p->out, report_path);
    if (p->mo.json) {
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "model", cn_model_name(m));
        cJSON_AddStringToObject(j, "out", p->out);
        cJSON_AddStringToObject(j, "report", report_path);
        cJSON_AddStringToObject(j, "method", cli_prune_method_name(p->pc.method));
        cJSON_AddStringToObject(j, "scope", p->pc.global ? "global" : "layer");
        if (p->amount_set) cJSON_AddNumberToObject(j, "amount", p->amount);
        else cJSON_AddNumberToObject(j, "threshold", p->pc.threshold);
        cJSON_AddNumberToObject(j, "input_h", h);
        cJSON_AddNumberToObject(j, "input_w", w);
        cJSON_AddNumberToObject(j, "bench_batch", p->bench_batch);
        cJSON_AddNumberToObject(j, "bench_runs", p->bench_runs);
        cJSON_AddNumberToObject(j, "threads", cn_model_threads(m));
        cJSON_AddNumberToObject(j, "params_before", (double)a->params);
        cJSON_AddNumberToObject(j, "params_after", (double)b->params);
        cJSON_AddNumberToObject(j, "macs_before", (double)a->macs);
        cJSON_AddNumberToObject(j, "macs_after", (double)b->macs);
        cJSON_AddNumberToObject(j, "latency_ms_before", a->latency_ms);
        cJSON_AddNumberToObject(j, "latency_ms_after", b->latency_ms);
        cJSON_AddNumberToObject(j, "sparsity_before", sparsity(a));
        cJSON_AddNumberToObject(j, "sparsity", sparsity(b));
        put_acc(j, "acc_before", acc[0]);
        put_acc(j, "acc_after", acc[1]);
        put_acc(j, "acc_finetuned", acc[2]);
        if (p->data) cJSON_AddNumberToObject(j, "samples", p->limit_test);
        cJSON *la = cJSON_AddArrayToObject(j, "layers");
        for (int i = 0; i < a->n; i++) {
            const layer_row *r = &a->rows[i], *x = match[i];
            cJSON *l = cJSON_CreateObject();
            cJSON_AddStringToObject(l, "name", r->name);
            cJSON_AddStringToObject(l, "op", r->op);
            cJSON_AddNumberToObject(l, "channels_before", r->channels);
            cJSON_AddNumberToObject(l, "channels_after", x ? x->channels : 0);
            cJSON_AddNumberToObject(l, "params_before", (double)r->params);
            cJSON_AddNumberToObject(l, "params_after", x ? (double)x->params : 0);
            cJSON_AddNumberToObject(l, "macs_before", (double)r->macs);
            cJSON_AddNumberToObject(l, "macs_after", x ? (double)x->macs : 0);
            cJSON_AddNumberToObject(l, "latency_ms_before", r->ms);
            cJSON_AddNumberToObject(l, "latency_ms_after", x ? x->ms : 0);
            if (x && x->sparsity >= 0) cJSON_AddNumberToObject(l, "sparsity", x->sparsity);
            cJSON_AddItemToArray(la, l);
        }
        cli_print_json(j);
    }
    rc = EXIT_OK;
    goto out;
fail:
    rc = cli_fail(C, st);
out:
    cn_model_free(q);
    stats_free(a);
    stats_free(b);
    free(match);
    free(used);
    free(report);
    free(tmp);
    return rc;
}

int cmd_prune(int argc, char **argv) {
    const char *C = "prune";
    prune_opts p;
    memset(&p, 0, sizeof p);
    cli_model_opts_init(&p.mo);
    cn_prune_config_default(&p.pc);
    cn_train_config_default(&p.tc);
    p.bench_batch = 1;
    p.bench_runs = 20;
    p.optimizer = "sgd";
    p.schedule = "cosine";
    p.mom = 0.9f;
    p.nesterov = 1;
    int rc = cli_parse_model_command(C, help, "prune", &p.mo, argc, argv, parse_one, &p);
    if (rc >= 0) return rc;
    rc = validate(C, &p);
    if (rc) return rc;
    cn_model *m;
    if ((rc = cli_model_open(C, &p.mo, &m))) return rc;
    rc = p.sensitivity ? run_sensitivity(C, &p, m) : run_prune(C, &p, m);
    cn_model_free(m);
    return rc;
}
