/* Element-wise loops are memory- or latency-bound and portable C, but the baseline x86-64 build
 * only has SSE2. CN_CLONES compiles a function for AVX-512 and AVX2 too and picks the version
 * once at load time from the CPU (an ifunc), so the binary stays portable. It must sit on
 * functions without OpenMP pragmas (the outlined parallel bodies would not be cloned): the
 * parallel loop calls a cloned kernel on its range. */
#ifndef CN_CORE_SIMD_H
#define CN_CORE_SIMD_H

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__SANITIZE_ADDRESS__)
#define CN_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define CN_CLONES
#endif

#endif
