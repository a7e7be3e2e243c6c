/* The training loop: data loader -> forward -> loss -> backward -> optimizer step, with
 * evaluation, metrics, atomic checkpoints and exact resume. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "core/status.h"
#include "graph/model.h"
#include "io/safetensors.h"
#include "io/transform.h"
#include "train/data.h"
#include "train/optim.h"

#define CHECKPOINT_FILE "checkpoint.safetensors"
#define MODEL_FILE "model.safetensors"
#define METRICS_FILE "metrics.csv"

void cn_train_config_default(cn_train_config *c) {
    memset(c, 0, sizeof *c);
    c->model = "resnet20";
    c->data = "fashion-mnist";
    c->out_dir = "runs/default";
    c->epochs = 10;
    c->batch = 128;
    cn_optim_config_default(&c->optim, CN_OPTIM_SGD);
    c->sched.kind = CN_SCHED_COSINE;
    c->crop_pad = 2;
    c->flip = 1;
    c->seed = 1;
    c->eval_batch = 500;
    c->step_epochs = 30;
    c->sched.gamma = 0.1f;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* per-channel normalisation of each known dataset (statistics of its training split) */
static void dataset_norm(const cn_dataset *d, float *mean, float *std) {
    for (int c = 0; c < 4; c++) mean[c] = 0.5f, std[c] = 0.5f;
    if (strcmp(d->name, "fashion-mnist") == 0) mean[0] = 0.2860f, std[0] = 0.3530f;
    if (strcmp(d->name, "mnist") == 0) mean[0] = 0.1307f, std[0] = 0.3081f;
    static const float c10m[3] = {0.4914f, 0.4822f, 0.4465f}, c10s[3] = {0.2470f, 0.2435f, 0.2616f};
    static const float c100m[3] = {0.5071f, 0.4865f, 0.4409f}, c100s[3] = {0.2673f, 0.2564f, 0.2762f};
    static const float inm[3] = CN_IMAGENET_MEAN, ins[3] = CN_IMAGENET_STD;
    const float *m = NULL, *s = NULL;
    if (strcmp(d->name, "cifar10") == 0) m = c10m, s = c10s;
    if (strcmp(d->name, "cifar100") == 0) m = c100m, s = c100s;
    if (d->paths) m = inm, s = ins;
    for (int c = 0; m && c < 3; c++) mean[c] = m[c], std[c] = s[c];
}

/* An image folder's input size: the option, else the model's usual size. */
static void set_input_size(cn_dataset *d, const cn_data_options *o, const cn_model *m) {
    if (!d->paths || d->h) return;
    d->h = d->w = o && o->input_size ? o->input_size : cn_model_default_size(m);
}

static void limit_dataset(cn_dataset *d, int limit) {
    if (limit > 0 && limit < d->n) d->n = limit;
}

/* Decoded image-folder batches are large (32 images at 224 are 19 MB) and the loader keeps
 * threads + 1 of them: evaluation batches of folders stay at most this big. */
#define FOLDER_EVAL_BATCH 32

static cn_status eval_dataset(cn_model *m, const cn_dataset *d, int batch, int threads,
                              float *acc, float *loss) {
    if (d->paths && batch > FOLDER_EVAL_BATCH) batch = FOLDER_EVAL_BATCH;
    float mean[4], std[4];
    dataset_norm(d, mean, std);
    cn_loader l;
    CN_TRY(cn_loader_init(&l, d, batch, 0, 0, NULL, mean, std, 0));
    cn_status st = threads > 0 ? cn_loader_set_threads(&l, threads) : CN_OK;
    if (st == CN_OK) st = cn_loader_start(&l, 0, 0);
    double tl = 0;
    int64_t hits = 0, seen = 0;
    const cn_batch *b;
    while (st == CN_OK && (b = cn_loader_next(&l))) {
        st = cn_model_forward_nhwc(m, b->x, b->n, d->h, d->w, 0, NULL);
        float bl = 0;
        int c = 0;
        if (st == CN_OK) st = cn_model_loss(m, b->y, 0.0f, &bl, &c);
        tl += (double)bl * b->n;
        hits += c;
        seen += b->n;
    }
    if (st == CN_OK) st = cn_loader_status(&l);
    cn_loader_free(&l);
    if (st != CN_OK) return st;
    *acc = seen ? (float)hits / seen : 0;
    *loss = seen ? (float)(tl / seen) : 0;
    return CN_OK;
}

cn_status cn_foreach_batch(const cn_model *m, const char *data, const cn_data_options *o,
                           int train_split, int limit, int batch, uint64_t seed,
                           cn_status (*fn)(void *user, const float *x, int n, int h, int w),
                           void *user) {
    cn_dataset d;
    CN_TRY(cn_dataset_open_opts(&d, data, train_split, o ? o->input_size : 0,
                                o ? o->skip_bad_images : 0));
    set_input_size(&d, o, m);
    cn_status st = CN_OK;
    if (d.c != m->arch.in_channels)
        st = cn_error(CN_ERR_SHAPE, "the model takes %d input channel(s); %s has %d",
                      m->arch.in_channels, d.name, d.c);
    if (d.paths && batch > FOLDER_EVAL_BATCH) batch = FOLDER_EVAL_BATCH;
    float mean[4], std[4];
    dataset_norm(&d, mean, std);
    cn_loader l;
    int have = 0;
    if (st == CN_OK && (st = cn_loader_init(&l, &d, batch, 1, 0, NULL, mean, std, seed)) == CN_OK)
        have = 1;
    if (st == CN_OK && o && o->loader_threads > 0) st = cn_loader_set_threads(&l, o->loader_threads);
    if (st == CN_OK) st = cn_loader_start(&l, 0, 0);
    int seen = 0;
    const cn_batch *b;
    while (st == CN_OK && seen < limit && (b = cn_loader_next(&l))) {
        int n = b->n < limit - seen ? b->n : limit - seen;
        st = fn(user, b->x, n, d.h, d.w);
        seen += n;
    }
    if (st == CN_OK) st = cn_loader_status(&l);
    if (have) cn_loader_free(&l);
    cn_dataset_free(&d);
    return st;
}

cn_status cn_evaluate(cn_model *m, const char *data, int train_split, int batch, int limit,
                      float *acc, float *loss, int *count) {
    return cn_evaluate_opts(m, data, train_split, batch, limit, NULL, acc, loss, count);
}

cn_status cn_evaluate_opts(cn_model *m, const char *data, int train_split, int batch, int limit,
                           const cn_data_options *o, float *acc, float *loss, int *count) {
    cn_dataset d;
    CN_TRY(cn_dataset_open_opts(&d, data, train_split, o ? o->input_size : 0,
                                o ? o->skip_bad_images : 0));
    limit_dataset(&d, limit);
    set_input_size(&d, o, m);
    cn_status st = CN_OK;
    if (d.c != m->arch.in_channels || d.num_classes > m->arch.num_classes)
        st = cn_error(CN_ERR_SHAPE,
                      "the model takes %d input channel(s) and %d classes; %s has %d and %d",
                      m->arch.in_channels, m->arch.num_classes, d.name, d.c, d.num_classes);
    if (st == CN_OK)
        st = eval_dataset(m, &d, batch > 0 ? batch : 500, o ? o->loader_threads : 0, acc, loss);
    if (count) *count = d.n;
    cn_dataset_free(&d);
    return st;
}

static cn_status check_config(const cn_train_config *c) {
    if (c->epochs < 1 || c->epochs > 100000)
        return cn_error(CN_ERR_ARG, "--epochs %d is out of range [1, 100000]", c->epochs);
    if (c->batch < 1 || c->batch > 65536)
        return cn_error(CN_ERR_ARG, "--batch %d is out of range [1, 65536]", c->batch);
    if (!(c->optim.lr > 0) || c->optim.lr > 100)
        return cn_error(CN_ERR_ARG, "--lr %g is out of range (0, 100]", c->optim.lr);
    if (!(c->label_smoothing >= 0 && c->label_smoothing < 1))
        return cn_error(CN_ERR_ARG, "--label-smoothing %g is out of range [0, 1)",
                        c->label_smoothing);
    if (!(c->warmup_epochs >= 0) || c->warmup_epochs > c->epochs)
        return cn_error(CN_ERR_ARG, "--warmup %g must be in [0, epochs]", c->warmup_epochs);
    if (c->crop_pad < 0 || c->crop_pad > 64)
        return cn_error(CN_ERR_ARG, "--crop-pad %d is out of range [0, 64]", c->crop_pad);
    if (!c->out_dir || !*c->out_dir) return cn_error(CN_ERR_ARG, "--out: no directory given");
    if (c->qat && c->prune)
        return cn_error(CN_ERR_ARG, "--qat and gradual pruning do not mix: prune first, then "
                                    "train with --qat");
    if (c->prune) {
        const cn_prune_config *p = c->prune;
        if (!(p->amount >= 0 && p->amount < 1))
            return cn_error(CN_ERR_ARG, "--prune-to %g is outside [0, 1)", p->amount);
        if (p->threshold >= 0)
            return cn_error(CN_ERR_ARG, "gradual pruning takes a fraction (--prune-to), not a "
                                        "threshold");
        if (!(c->prune_start >= 0 && c->prune_start <= c->prune_end &&
              c->prune_end <= c->epochs))
            return cn_error(CN_ERR_ARG,
                            "--prune-start %g and --prune-end %g must satisfy 0 <= start <= end "
                            "<= epochs (%d)",
                            c->prune_start, c->prune_end, c->epochs);
        if (c->prune_every < 0 || c->prune_every > 1000000)
            return cn_error(CN_ERR_ARG, "--prune-every %d is out of range [1, 1000000]",
                            c->prune_every);
    }
    return CN_OK;
}

/* ---- gradual pruning (Zhu and Gupta 2017) ---- */

typedef struct prune_plan {
    int on;
    int64_t t0, t1, dt; /* first and last pruning step, interval */
} prune_plan;

static prune_plan prune_plan_make(const cn_train_config *c, int64_t spe) {
    prune_plan p = {0};
    if (!c->prune) return p;
    p.on = 1;
    /* the last step of the run is the latest pruning step, so that --prune-end E (the run's
     * last epoch) still reaches s_f and trains one step on it */
    int64_t last = (int64_t)c->epochs * spe - 1;
    p.t1 = (int64_t)llround(c->prune_end * spe);
    if (p.t1 > last) p.t1 = last;
    p.t0 = (int64_t)llround(c->prune_start * spe);
    if (p.t0 > p.t1) p.t0 = p.t1;
    p.dt = c->prune_every > 0 ? c->prune_every : 100;
    return p;
}

/* The target fraction at a pruning step: s_f + (s_i - s_f)(1 - (t - t0) / (n dt))^3, s_i = 0 */
static float prune_target(const cn_train_config *c, const prune_plan *p, int64_t t) {
    if (t >= p->t1) return c->prune->amount;
    double f = 1.0 - (double)(t - p->t0) / (double)(p->t1 - p->t0);
    return (float)(c->prune->amount * (1.0 - f * f * f));
}

/* The last pruning step at or before step t (-1: none yet): t0, t0 + dt, ..., and t1. */
static int64_t prune_last_step(const prune_plan *p, int64_t t) {
    if (!p->on || t < p->t0) return -1;
    if (t >= p->t1) return p->t1;
    return p->t0 + (t - p->t0) / p->dt * p->dt;
}

static cn_status prune_apply(cn_model *m, const cn_train_config *c, const prune_plan *p,
                             int64_t t) {
    cn_prune_config pc = *c->prune;
    pc.amount = prune_target(c, p, t);
    pc.threshold = -1;
    cn_status st = cn_prune_mask(m, &pc);
    return st == CN_OK ? st : cn_error_context(st, "gradual pruning at step %lld", (long long)t);
}

/* ---- checkpoints ---- */

static char *config_json(const cn_train_config *c, int epoch_done, int64_t step,
                         int64_t opt_steps) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "epoch", epoch_done);
    cJSON_AddNumberToObject(o, "step", (double)step);
    cJSON_AddNumberToObject(o, "optim_steps", (double)opt_steps);
    char seed[32];
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)c->seed);
    cJSON_AddStringToObject(o, "seed", seed);
    cJSON_AddNumberToObject(o, "epochs", c->epochs);
    cJSON_AddNumberToObject(o, "batch", c->batch);
    cJSON_AddStringToObject(o, "data", c->data);
    cJSON_AddStringToObject(o, "optimizer", c->optim.kind == CN_OPTIM_SGD ? "sgd" : "adamw");
    cJSON_AddNumberToObject(o, "lr", c->optim.lr);
    cJSON_AddNumberToObject(o, "momentum", c->optim.momentum);
    cJSON_AddNumberToObject(o, "nesterov", c->optim.nesterov);
    cJSON_AddNumberToObject(o, "weight_decay", c->optim.weight_decay);
    cJSON_AddNumberToObject(o, "beta1", c->optim.beta1);
    cJSON_AddNumberToObject(o, "beta2", c->optim.beta2);
    cJSON_AddNumberToObject(o, "eps", c->optim.eps);
    cJSON_AddNumberToObject(o, "schedule", c->sched.kind);
    cJSON_AddNumberToObject(o, "warmup_epochs", c->warmup_epochs);
    cJSON_AddNumberToObject(o, "step_epochs", c->step_epochs);
    cJSON_AddNumberToObject(o, "gamma", c->sched.gamma);
    cJSON_AddNumberToObject(o, "min_lr", c->sched.min_lr);
    cJSON_AddNumberToObject(o, "label_smoothing", c->label_smoothing);
    cJSON_AddNumberToObject(o, "crop_pad", c->crop_pad);
    cJSON_AddNumberToObject(o, "flip", c->flip);
    cJSON_AddNumberToObject(o, "limit_train", c->limit_train);
    cJSON_AddNumberToObject(o, "limit_test", c->limit_test);
    if (c->prune) {
        cJSON *p = cJSON_AddObjectToObject(o, "prune");
        cJSON_AddNumberToObject(p, "method", c->prune->method);
        cJSON_AddNumberToObject(p, "amount", c->prune->amount);
        cJSON_AddNumberToObject(p, "global", c->prune->global);
        cJSON_AddNumberToObject(p, "min_channels", c->prune->min_channels);
        cJSON_AddNumberToObject(p, "round_to", c->prune->round_to);
        cJSON_AddNumberToObject(p, "start", c->prune_start);
        cJSON_AddNumberToObject(p, "end", c->prune_end);
        cJSON_AddNumberToObject(p, "every", c->prune_every);
    }
    cJSON_AddNumberToObject(o, "input_size", c->data_opts.input_size);
    cJSON_AddNumberToObject(o, "skip_bad_images", c->data_opts.skip_bad_images);
    cJSON_AddNumberToObject(o, "loader_threads", c->data_opts.loader_threads);
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

static cn_status save_checkpoint(const cn_train_config *c, const cn_model *m, const cn_optim *o,
                                 int epoch_done, int64_t step, const char *path) {
    cn_st_writer *w;
    CN_TRY(cn_st_writer_new(&w));
    float *scratch = NULL;
    char *cfg = config_json(c, epoch_done, step, o->steps);
    cn_status st = cfg ? cn_model_add_state(m, w, &scratch) : cn_error(CN_ERR_NOMEM, "out of memory");
    int64_t n = (int64_t)o->n;
    if (st == CN_OK && o->nstate >= o->n && o->n)
        st = cn_st_writer_add(w, "optim:state0", CN_DT_F32, 1, &n, o->state);
    if (st == CN_OK && o->nstate >= 2 * o->n && o->n)
        st = cn_st_writer_add(w, "optim:state1", CN_DT_F32, 1, &n, o->state + o->n);
    if (st == CN_OK) st = cn_st_writer_meta(w, "checkpoint", cfg);
    if (st == CN_OK) st = cn_st_writer_save(w, path);
    cn_st_writer_free(w);
    free(scratch);
    free(cfg);
    return st;
}

static double jnum(const cJSON *o, const char *k, double def) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : def;
}

/* An integer field within [lo, hi]; anything else is a malformed checkpoint. */
static int jint(const cJSON *o, const char *k, int def, int lo, int hi, int *bad) {
    double v = jnum(o, k, def);
    if (!(v >= lo && v <= hi) || v != (double)(int)v) {
        *bad = 1;
        return def;
    }
    return (int)v;
}

/* Restores the training configuration, model and optimizer of a checkpoint. data_buf keeps the
 * dataset string alive. */
static cn_status load_checkpoint(const char *path, cn_train_config *c, cn_model **m,
                                 cn_optim **o, int *epoch_done, int64_t *step, char *data_buf,
                                 size_t data_len, cn_prune_config *prune_buf) {
    cn_st_file *f;
    CN_TRY(cn_st_open(&f, path));
    const char *meta = cn_st_meta(f, "checkpoint");
    cJSON *j = meta ? cJSON_Parse(meta) : NULL;
    cn_status st = CN_OK;
    if (!j || !cJSON_IsObject(j)) {
        st = cn_error(CN_ERR_FORMAT, "%s: not a training checkpoint (no 'checkpoint' metadata)",
                      path);
        goto out;
    }
    const cJSON *seed = cJSON_GetObjectItemCaseSensitive(j, "seed");
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(j, "data");
    const cJSON *opt = cJSON_GetObjectItemCaseSensitive(j, "optimizer");
    if (!cJSON_IsString(seed) || !cJSON_IsString(data) || !cJSON_IsString(opt)) {
        st = cn_error(CN_ERR_FORMAT, "%s: checkpoint metadata lacks seed, data or optimizer", path);
        goto out;
    }
    c->seed = strtoull(seed->valuestring, NULL, 10);
    snprintf(data_buf, data_len, "%s", data->valuestring);
    c->data = data_buf;
    int bad = 0;
    c->epochs = jint(j, "epochs", c->epochs, 1, 100000, &bad);
    c->batch = jint(j, "batch", c->batch, 1, 65536, &bad);
    cn_optim_config_default(&c->optim, strcmp(opt->valuestring, "adamw") == 0 ? CN_OPTIM_ADAMW
                                                                               : CN_OPTIM_SGD);
    c->optim.lr = (float)jnum(j, "lr", c->optim.lr);
    c->optim.momentum = (float)jnum(j, "momentum", c->optim.momentum);
    c->optim.nesterov = jint(j, "nesterov", c->optim.nesterov, 0, 1, &bad);
    c->optim.weight_decay = (float)jnum(j, "weight_decay", c->optim.weight_decay);
    c->optim.beta1 = (float)jnum(j, "beta1", c->optim.beta1);
    c->optim.beta2 = (float)jnum(j, "beta2", c->optim.beta2);
    c->optim.eps = (float)jnum(j, "eps", c->optim.eps);
    c->sched.kind = (cn_sched_kind)jint(j, "schedule", c->sched.kind, 0, 2, &bad);
    c->warmup_epochs = (float)jnum(j, "warmup_epochs", c->warmup_epochs);
    c->step_epochs = jint(j, "step_epochs", c->step_epochs, 1, 100000, &bad);
    c->sched.gamma = (float)jnum(j, "gamma", c->sched.gamma);
    c->sched.min_lr = (float)jnum(j, "min_lr", c->sched.min_lr);
    c->label_smoothing = (float)jnum(j, "label_smoothing", c->label_smoothing);
    c->crop_pad = jint(j, "crop_pad", c->crop_pad, 0, 64, &bad);
    c->flip = jint(j, "flip", c->flip, 0, 1, &bad);
    c->limit_train = jint(j, "limit_train", c->limit_train, 0, 1 << 30, &bad);
    c->limit_test = jint(j, "limit_test", c->limit_test, 0, 1 << 30, &bad);
    c->data_opts.input_size = jint(j, "input_size", 0, 0, 8192, &bad);
    c->data_opts.skip_bad_images = jint(j, "skip_bad_images", 0, 0, 1, &bad);
    c->data_opts.loader_threads = jint(j, "loader_threads", c->data_opts.loader_threads, 0, 16, &bad);
    *epoch_done = jint(j, "epoch", 0, 0, c->epochs, &bad);
    const cJSON *pj = cJSON_GetObjectItemCaseSensitive(j, "prune");
    c->prune = NULL;
    if (pj) {
        cn_prune_config_default(prune_buf);
        prune_buf->method = (cn_prune_method)jint(pj, "method", 0, 0, CN_PRUNE_MAGNITUDE, &bad);
        prune_buf->amount = (float)jnum(pj, "amount", -1);
        prune_buf->global = jint(pj, "global", 0, 0, 1, &bad);
        prune_buf->min_channels = jint(pj, "min_channels", 1, 1, 65536, &bad);
        prune_buf->round_to = jint(pj, "round_to", 1, 1, 4096, &bad);
        c->prune_start = (float)jnum(pj, "start", -1);
        c->prune_end = (float)jnum(pj, "end", -1);
        c->prune_every = jint(pj, "every", 100, 0, 1000000, &bad);
        c->prune = prune_buf;
    }
    double stepd = jnum(j, "step", 0), optd = jnum(j, "optim_steps", 0);
    if (!(stepd >= 0 && stepd <= 1e15) || !(optd >= 0 && optd <= 1e15)) bad = 1;
    *step = (int64_t)(stepd >= 0 && stepd <= 1e15 ? stepd : 0);
    if (bad || (st = check_config(c)) != CN_OK) {
        st = bad ? cn_error(CN_ERR_FORMAT, "%s: the checkpoint's training settings are malformed",
                            path)
                 : cn_error_context(CN_ERR_FORMAT, "%s: checkpoint settings", path);
        goto out;
    }
    cn_model_config mc;
    cn_model_config_default(&mc);
    mc.name = NULL;
    mc.threads = c->threads;
    if ((st = cn_model_open_file(m, f, &mc)) != CN_OK) goto out;
    if ((st = cn_optim_create(o, *m, &c->optim)) != CN_OK) goto out;
    (*o)->steps = (int64_t)optd;
    for (int k = 0; k < 2 && (size_t)k * (*o)->n < (*o)->nstate; k++) {
        char name[32];
        snprintf(name, sizeof name, "optim:state%d", k);
        const cn_st_tensor *t = cn_st_find(f, name);
        if (!t && (*o)->steps == 0) continue;
        if (!t) {
            st = cn_error(CN_ERR_FORMAT, "%s: missing optimizer state '%s'", path, name);
            goto out;
        }
        if ((st = cn_st_read_f32(f, t, (*o)->state + k * (*o)->n, (*o)->n)) != CN_OK) {
            cn_error_context(st, "%s: optimizer state", path);
            goto out;
        }
    }
out:
    if (st != CN_OK) {
        cn_optim_free(*o);
        cn_model_free(*m);
        *o = NULL;
        *m = NULL;
    }
    cJSON_Delete(j);
    cn_st_close(f);
    return st;
}

static cn_status make_dir(const char *dir) {
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", dir);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(buf, 0755) != 0 && errno != EEXIST)
            return cn_error(CN_ERR_IO, "--out %s: cannot create %s: %s", dir, buf, strerror(errno));
        *p = '/';
    }
    if (mkdir(buf, 0755) != 0 && errno != EEXIST)
        return cn_error(CN_ERR_IO, "--out %s: cannot create it: %s", dir, strerror(errno));
    return CN_OK;
}

cn_status cn_train(const cn_train_config *cfg_in, cn_train_result *res) {
    cn_train_config c = *cfg_in;
    cn_prune_config prune_buf;
    char data_buf[1024], path[4096], ckpt[4096];
    cn_model *m = NULL;
    cn_optim *o = NULL;
    cn_dataset train = {0}, test = {0};
    cn_loader loader;
    memset(&loader, 0, sizeof loader);
    FILE *csv = NULL;
    int epoch_done = 0;
    int64_t step = 0;
    cn_status st;
    memset(res, 0, sizeof *res);

    CN_TRY(check_config(&c));
    snprintf(ckpt, sizeof ckpt, "%s/%s", c.out_dir, CHECKPOINT_FILE);
    if (c.resume) {
        /* a mistyped --resume must not leave a new directory behind */
        st = load_checkpoint(ckpt, &c, &m, &o, &epoch_done, &step, data_buf, sizeof data_buf,
                             &prune_buf);
        if (st != CN_OK) return cn_error_context(st, "--resume %s", c.out_dir);
    } else {
        CN_TRY(make_dir(c.out_dir));
    }
    const cn_data_options *dopt = &c.data_opts;
    if ((st = cn_dataset_open_opts(&train, c.data, 1, dopt->input_size, dopt->skip_bad_images)) !=
        CN_OK)
        goto done;
    if ((st = cn_dataset_open_opts(&test, c.data, 0, dopt->input_size, dopt->skip_bad_images)) !=
        CN_OK)
        goto done;
    if (train.classes && test.classes) {
        int same = train.num_classes == test.num_classes;
        for (int k = 0; same && k < train.num_classes; k++)
            same = !strcmp(train.classes[k], test.classes[k]);
        if (!same) {
            st = cn_error(CN_ERR_FORMAT, "--data %s: the class folders of %s and %s differ", c.data,
                          train.root, test.root);
            goto done;
        }
    }
    limit_dataset(&train, c.limit_train);
    limit_dataset(&test, c.limit_test);
    if (!m) {
        if (c.init) {
            /* a plain state_dict (e.g. exported from torchvision) takes its architecture and
             * the EfficientNet options from the configuration; a convnet file names its own */
            cn_model_config mc;
            cn_model_config_default(&mc);
            if (c.model_config) mc = *c.model_config;
            mc.name = c.model;
            mc.threads = c.threads;
            if ((st = cn_model_load(&m, c.init, &mc)) != CN_OK) goto done;
        } else {
            cn_model_config mc;
            cn_model_config_default(&mc);
            if (c.model_config) mc = *c.model_config;
            mc.name = c.model;
            mc.in_channels = train.c;
            mc.num_classes = train.num_classes;
            mc.zero_init_residual = c.zero_init_residual;
            mc.seed = c.seed;
            mc.threads = c.threads;
            if ((st = cn_model_create(&m, &mc)) != CN_OK) goto done;
        }
        if (c.qat && !cn_model_is_qat(m)) {
            cn_model *qm;
            if ((st = cn_model_qat(&qm, m)) != CN_OK) goto done;
            cn_model_free(m);
            m = qm;
        }
        if ((st = cn_optim_create(&o, m, &c.optim)) != CN_OK) goto done;
    }
    if (m->arch.in_channels != train.c || m->arch.num_classes < train.num_classes) {
        st = cn_error(CN_ERR_SHAPE, "the model takes %d channel(s) and %d classes; %s has %d and %d",
                      m->arch.in_channels, m->arch.num_classes, train.name, train.c,
                      train.num_classes);
        goto done;
    }
    set_input_size(&train, dopt, m);
    set_input_size(&test, dopt, m);
    float mean[4], std[4];
    dataset_norm(&train, mean, std);
    cn_augment aug = {c.crop_pad, c.flip, train.paths != NULL};
    if ((st = cn_loader_init(&loader, &train, c.batch, 1, 1, &aug, mean, std, c.seed)) != CN_OK)
        goto done;
    if (dopt->loader_threads > 0 &&
        (st = cn_loader_set_threads(&loader, dopt->loader_threads)) != CN_OK)
        goto done;
    int64_t spe = loader.nbatches, total = spe * c.epochs;
    cn_schedule sched = c.sched;
    sched.base_lr = c.optim.lr;
    sched.warmup_steps = (int64_t)llround(c.warmup_epochs * spe);
    sched.step_size = (int64_t)c.step_epochs * spe;
    if (sched.warmup_steps > 0 && sched.warmup_start <= 0) sched.warmup_start = 0.01f;
    snprintf(path, sizeof path, "%s/%s", c.out_dir, METRICS_FILE);
    csv = fopen(path, epoch_done > 0 ? "a" : "w");
    if (!csv) {
        st = cn_error(CN_ERR_IO, "%s: cannot write: %s", path, strerror(errno));
        goto done;
    }
    if (epoch_done == 0)
        fprintf(csv, "epoch,lr,train_loss,train_acc,test_loss,test_acc,seconds,img_per_s\n");
    fflush(csv);
    prune_plan pp = prune_plan_make(&c, spe);
    if (pp.on && step > 0) {
        /* resuming: the masks of the last pruning step (the pruned weights are zero in the
         * checkpoint, so the selection finds them again) */
        int64_t last = prune_last_step(&pp, step - 1);
        if (last >= 0 && (st = prune_apply(m, &c, &pp, last)) != CN_OK) goto done;
    }
    double t_start = now_s();
    for (int epoch = epoch_done + 1; epoch <= c.epochs; epoch++) {
        double t0 = now_s();
        if ((st = cn_loader_start(&loader, epoch, 0)) != CN_OK) goto done;
        double sum_loss = 0;
        int64_t hits = 0, seen = 0;
        const cn_batch *b;
        float lr = 0;
        while ((b = cn_loader_next(&loader))) {
            lr = cn_schedule_lr(&sched, step, total);
            if (pp.on && prune_last_step(&pp, step) == step &&
                (st = prune_apply(m, &c, &pp, step)) != CN_OK)
                goto done;
            cn_model_zero_grad(m);
            cn_model_set_noise(m, c.seed, (uint64_t)step);
            if ((st = cn_model_forward_nhwc(m, b->x, b->n, train.h, train.w, 1, NULL)) != CN_OK)
                goto done;
            float loss;
            int correct;
            if ((st = cn_model_loss(m, b->y, c.label_smoothing, &loss, &correct)) != CN_OK)
                goto done;
            if (!isfinite(loss)) {
                st = cn_error(CN_ERR_ARG,
                              "the loss diverged (%g) at epoch %d step %lld: lower --lr", loss,
                              epoch, (long long)(b->index + 1));
                goto done;
            }
            cn_model_backward(m);
            cn_optim_step(o, lr);
            step++;
            sum_loss += (double)loss * b->n;
            hits += correct;
            seen += b->n;
            if (c.progress) {
                cn_train_progress p = {0};
                p.epoch = epoch;
                p.epochs = c.epochs;
                p.step = b->index + 1;
                p.steps_per_epoch = spe;
                p.lr = lr;
                p.loss = (float)(sum_loss / seen);
                p.acc = (float)hits / seen;
                double el = now_s() - t0;
                p.elapsed_s = el;
                p.img_per_s = seen / (el > 1e-9 ? el : 1e-9);
                int64_t left = (spe - p.step) + (int64_t)(c.epochs - epoch) * spe;
                p.eta_s = left * (el / p.step);
                c.progress(&p, c.user);
            }
        }
        if ((st = cn_loader_status(&loader)) != CN_OK) goto done;
        double train_s = now_s() - t0;
        float tacc = 0, tloss = 0;
        if ((st = eval_dataset(m, &test, c.eval_batch > 0 ? c.eval_batch : 500, dopt->loader_threads,
                               &tacc, &tloss)) !=
            CN_OK)
            goto done;
        res->epochs_done = epoch;
        res->train_loss = (float)(sum_loss / (seen ? seen : 1));
        res->train_acc = seen ? (float)hits / seen : 0;
        res->test_loss = tloss;
        res->test_acc = tacc;
        res->img_per_s = seen / (train_s > 1e-9 ? train_s : 1e-9);
        fprintf(csv, "%d,%.6g,%.6f,%.6f,%.6f,%.6f,%.2f,%.1f\n", epoch, lr, res->train_loss,
                res->train_acc, tloss, tacc, train_s, res->img_per_s);
        fflush(csv);
        if ((st = save_checkpoint(&c, m, o, epoch, step, ckpt)) != CN_OK) goto done;
        if (c.progress) {
            cn_train_progress p = {0};
            p.phase = 1;
            p.epoch = epoch;
            p.epochs = c.epochs;
            p.step = spe;
            p.steps_per_epoch = spe;
            p.lr = lr;
            p.loss = res->train_loss;
            p.acc = res->train_acc;
            p.img_per_s = res->img_per_s;
            p.elapsed_s = now_s() - t_start;
            p.test_loss = tloss;
            p.test_acc = tacc;
            c.progress(&p, c.user);
        }
        if (c.stop_after > 0 && epoch >= c.stop_after && epoch < c.epochs) {
            res->seconds = now_s() - t_start;
            res->params = cn_model_param_count(m);
            goto done;
        }
    }
    res->seconds = now_s() - t_start;
    res->params = cn_model_param_count(m);
    if (res->epochs_done == 0) {
        /* resumed a finished run: report the saved model's accuracy */
        res->epochs_done = epoch_done;
        if ((st = eval_dataset(m, &test, c.eval_batch > 0 ? c.eval_batch : 500, dopt->loader_threads,
                               &res->test_acc,
                               &res->test_loss)) != CN_OK)
            goto done;
    }
    if (pp.on) {
        int64_t last = prune_last_step(&pp, step - 1);
        res->pruned_fraction = last >= 0 ? prune_target(&c, &pp, last) : 0.0f;
        if (c.prune->method != CN_PRUNE_MAGNITUDE) {
            /* structured: the masked channels are removed for real */
            cn_model *small;
            if ((st = cn_prune_compact(&small, m)) != CN_OK) goto done;
            cn_model_free(m);
            m = small;
            res->params = cn_model_param_count(m);
        }
    }
    snprintf(path, sizeof path, "%s/%s", c.out_dir, MODEL_FILE);
    st = cn_model_save(m, path);
done:
    if (csv) fclose(csv);
    cn_loader_free(&loader);
    cn_dataset_free(&train);
    cn_dataset_free(&test);
    cn_optim_free(o);
    cn_model_free(m);
    return st;
}
