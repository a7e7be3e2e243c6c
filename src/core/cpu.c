#include "core/cpu.h"

#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#endif

static cn_cpu_features feats;
static int detected;

/* CN_CPU=generic|avx2 caps what is used, so that tests can exercise every kernel path on one
 * machine. */
const cn_cpu_features *cn_cpu(void) {
    if (detected) return &feats;
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    feats.avx2 = __builtin_cpu_supports("avx2");
    feats.fma = __builtin_cpu_supports("fma");
    feats.avx512f = __builtin_cpu_supports("avx512f");
    feats.avx512bw = __builtin_cpu_supports("avx512bw");
    feats.avx512vl = __builtin_cpu_supports("avx512vl");
    feats.avx512dq = __builtin_cpu_supports("avx512dq");
    feats.avx512vnni = __builtin_cpu_supports("avx512vnni");
    feats.avx512vbmi = __builtin_cpu_supports("avx512vbmi");
    /* AVX-VNNI (VEX-encoded vpdpbusd on ymm): CPUID.(EAX=7,ECX=1):EAX bit 4, which
     * __builtin_cpu_supports does not know in gcc 12; AVX2 support implies the OS saves ymm */
    unsigned a, b, c, d;
    if (feats.avx2 && __get_cpuid_max(0, 0) >= 7 && __get_cpuid_count(7, 1, &a, &b, &c, &d))
        feats.avxvnni = (int)((a >> 4) & 1);
#endif
    const char *cap = getenv("CN_CPU");
    if (cap && strcmp(cap, "generic") == 0) memset(&feats, 0, sizeof feats);
    if (cap && strcmp(cap, "avx2") == 0) {
        feats.avx512f = feats.avx512bw = feats.avx512vl = feats.avx512dq = feats.avx512vnni = 0;
        feats.avx512vbmi = feats.avxvnni = 0;
    }
    if (cap && strcmp(cap, "avx512-novbmi") == 0) feats.avx512vbmi = 0;
    detected = 1;
    return &feats;
}

int cn_cpu_avx512(void) {
    const cn_cpu_features *f = cn_cpu();
    return f->avx512f && f->avx512bw && f->avx512vl && f->avx512dq;
}
