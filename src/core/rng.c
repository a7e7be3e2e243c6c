#include "core/rng.h"

#include <math.h>

/* splitmix64's finaliser: a bijective mixer with good avalanche, enough for initialisation,
 * shuffling and augmentation (not for cryptography). */
static uint64_t mix(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

cn_rng cn_rng_make(uint64_t seed, uint64_t stream, uint64_t index) {
    cn_rng r;
    r.key = mix(mix(mix(seed + 0x9e3779b97f4a7c15ULL) ^ stream) ^ index);
    r.ctr = 0;
    return r;
}

uint64_t cn_rng_u64(cn_rng *r) { return mix(r->key + 0x9e3779b97f4a7c15ULL * ++r->ctr); }

float cn_rng_uniform(cn_rng *r) { return (float)(cn_rng_u64(r) >> 40) * (1.0f / 16777216.0f); }

float cn_rng_normal(cn_rng *r) {
    double u1 = ((cn_rng_u64(r) >> 11) + 1.0) * (1.0 / 9007199254740993.0);
    double u2 = (cn_rng_u64(r) >> 11) * (1.0 / 9007199254740992.0);
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

uint32_t cn_rng_below(cn_rng *r, uint32_t n) {
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t x;
    do x = cn_rng_u64(r);
    while (x >= limit);
    return (uint32_t)(x % n);
}
