/* Optimizer internals, for checkpoints. */
#ifndef CN_TRAIN_OPTIM_H
#define CN_TRAIN_OPTIM_H

#include "convnet.h"

struct cn_optim {
    cn_optim_config cfg;
    cn_model *model;
    size_t n;
    float *state;   /* SGD: momentum buffer (n); AdamW: exp_avg (n) then exp_avg_sq (n) */
    size_t nstate;
    int64_t steps;  /* updates done */
};

#endif
