/* The tests' models: one helper instead of a copy in every test file. */
#ifndef CN_TESTS_MODEL_H
#define CN_TESTS_MODEL_H

#include <stdint.h>

#include "check.h"
#include "convnet.h"

/* a 10-class model of the architecture name with in_channels input channels, that seed, on 2
 * threads; NULL, with the failure recorded, when it cannot be made */
static inline cn_model *test_model(const char *name, int in_channels, uint64_t seed) {
    cn_model_config c;
    cn_model_config_default(&c);
    c.name = name;
    c.in_channels = in_channels;
    c.num_classes = 10;
    c.seed = seed;
    c.threads = 2;
    cn_model *m = NULL;
    CHECK(cn_model_create(&m, &c) == CN_OK, "create %s: %s", name, cn_errmsg());
    return m;
}

#endif
