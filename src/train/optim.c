/* SGD (momentum, Nesterov, L2 weight decay) and AdamW, exactly as torch.optim 1.13 computes them:
 * https://pytorch.org/docs/1.13/generated/torch.optim.SGD.html
 * https://pytorch.org/docs/1.13/generated/torch.optim.AdamW.html
 * Parameters, gradients and state are parallel flat arrays, so a step is one loop. */
#include "train/optim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/mem.h"
#include "core/status.h"
#include "graph/model.h"

void cn_optim_config_default(cn_optim_config *c, cn_optim_kind kind) {
    memset(c, 0, sizeof *c);
    c->kind = kind;
    if (kind == CN_OPTIM_SGD) {
        c->lr = 0.1f;
        c->momentum = 0.9f;
        c->nesterov = 1;
        c->weight_decay = 5e-4f;
    } else {
        c->lr = 1e-3f;
        c->weight_decay = 0.05f;
    }
    c->beta1 = 0.9f;
    c->beta2 = 0.999f;
    c->eps = 1e-8f;
}

/* the bytes of the optimizer's state (cn_alloc_zeroed) */
static size_t state_bytes(const cn_optim *o) { return sizeof(float) * (o->nstate ? o->nstate : 1); }

cn_status cn_optim_create(cn_optim **out, cn_model *m, const cn_optim_config *c) {
    *out = NULL;
    if (c->kind != CN_OPTIM_SGD && c->kind != CN_OPTIM_ADAMW)
        return cn_error(CN_ERR_ARG, "unknown optimizer kind %d", (int)c->kind);
    if (!(c->lr >= 0) || !(c->weight_decay >= 0) || !(c->momentum >= 0 && c->momentum < 1))
        return cn_error(CN_ERR_ARG, "optimizer: lr, weight decay and momentum must be >= 0 "
                                    "(momentum < 1)");
    if (c->kind == CN_OPTIM_ADAMW &&
        (!(c->beta1 >= 0 && c->beta1 < 1) || !(c->beta2 >= 0 && c->beta2 < 1) || !(c->eps > 0)))
        return cn_error(CN_ERR_ARG, "AdamW: betas must be in [0, 1) and eps > 0");
    if (c->nesterov && c->kind == CN_OPTIM_SGD && c->momentum <= 0)
        return cn_error(CN_ERR_ARG, "Nesterov momentum requires a momentum > 0");
    cn_optim *o = calloc(1, sizeof *o);
    if (!o) return cn_error(CN_ERR_NOMEM, "out of memory");
    o->cfg = *c;
    o->model = m;
    o->n = m->g.nparams;
    o->nstate = c->kind == CN_OPTIM_ADAMW ? 2 * o->n : o->n;
    o->state = cn_alloc_zeroed(state_bytes(o));
    if (!o->state) {
        free(o);
        return cn_error(CN_ERR_NOMEM, "out of memory for the optimizer state");
    }
    *out = o;
    return CN_OK;
}

void cn_optim_free(cn_optim *o) {
    if (!o) return;
    cn_free_zeroed(o->state, state_bytes(o));
    free(o);
}

void cn_optim_step(cn_optim *o, float lr) {
    float *p = o->model->g.params;
    const float *g = o->model->g.grads;
    const cn_optim_config *c = &o->cfg;
    size_t n = o->n;
    if (c->kind == CN_OPTIM_SGD) {
        float *buf = o->state, mom = c->momentum, wd = c->weight_decay;
        int first = o->steps == 0;
#pragma omp parallel for schedule(static)
        for (size_t i = 0; i < n; i++) {
            float d = g[i] + wd * p[i];
            if (mom != 0) {
                /* torch: the buffer starts as the first gradient (no dampening) */
                buf[i] = first ? d : mom * buf[i] + d;
                d = c->nesterov ? d + mom * buf[i] : buf[i];
            }
            p[i] -= lr * d;
        }
    } else {
        float *m = o->state, *v = o->state + n;
        float b1 = c->beta1, b2 = c->beta2;
        double t = (double)(o->steps + 1);
        float bc1 = (float)(1.0 - pow(b1, t)), bc2 = (float)(1.0 - pow(b2, t));
        float step = lr / bc1, sbc2 = sqrtf(bc2), decay = 1.0f - lr * c->weight_decay;
#pragma omp parallel for schedule(static)
        for (size_t i = 0; i < n; i++) {
            p[i] *= decay;
            m[i] = b1 * m[i] + (1 - b1) * g[i];
            v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i];
            p[i] -= step * m[i] / (sqrtf(v[i]) / sbc2 + c->eps);
        }
    }
    const uint8_t *mk = o->model->mask;
    if (mk) {
        /* pruned parameters stay exactly zero, and so does their optimizer state */
        float *st1 = o->state, *st2 = c->kind == CN_OPTIM_ADAMW ? o->state + n : NULL;
#pragma omp parallel for schedule(static)
        for (size_t i = 0; i < n; i++)
            if (!mk[i]) {
                p[i] = 0;
                if (st1) st1[i] = 0;
                if (st2) st2[i] = 0;
            }
    }
    o->steps++;
    cn_graph_params_changed(&o->model->g);
}

float cn_schedule_lr(const cn_schedule *s, int64_t step, int64_t total) {
    if (s->warmup_steps > 0 && step < s->warmup_steps) {
        double f = s->warmup_start + (1.0 - s->warmup_start) * (double)step / s->warmup_steps;
        return (float)(s->base_lr * f);
    }
    int64_t t = step - s->warmup_steps, n = total - s->warmup_steps;
    switch (s->kind) {
    case CN_SCHED_STEP:
        return s->step_size > 0 ? (float)(s->base_lr * pow(s->gamma, (double)(t / s->step_size)))
                                : s->base_lr;
    case CN_SCHED_COSINE:
        if (n <= 0) return s->base_lr;
        if (t > n) t = n;
        return (float)(s->min_lr +
                       (s->base_lr - s->min_lr) * 0.5 * (1.0 + cos(3.141592653589793 * t / n)));
    default: return s->base_lr;
    }
}
