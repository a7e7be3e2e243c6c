/* Counter-based random numbers: every draw is a hash of (key, counter), so a stream can be
 * recreated at any point from its seed and position (exact resume) and results never depend on
 * how threads are scheduled. */
#ifndef CN_CORE_RNG_H
#define CN_CORE_RNG_H

#include <stdint.h>

typedef struct cn_rng {
    uint64_t key;
    uint64_t ctr;
} cn_rng;

/* A stream for (seed, purpose, index): e.g. (seed, STREAM_AUGMENT, epoch * n + sample). */
cn_rng cn_rng_make(uint64_t seed, uint64_t stream, uint64_t index);
uint64_t cn_rng_u64(cn_rng *r);
float cn_rng_uniform(cn_rng *r);            /* [0, 1) */
float cn_rng_normal(cn_rng *r);             /* N(0, 1) */
uint32_t cn_rng_below(cn_rng *r, uint32_t n); /* [0, n), unbiased */

#endif
