/* CPU feature detection, done once. Only the kernel config layer should ask these questions.
 * CN_CPU=generic | avx2 | avx512-novbmi caps what is reported (tests of the narrower paths). */
#ifndef CN_CORE_CPU_H
#define CN_CORE_CPU_H

typedef struct cn_cpu_features {
    int avx2, fma, avx512f, avx512bw, avx512vl, avx512dq, avx512vnni, avx512vbmi, avxvnni;
} cn_cpu_features;

const cn_cpu_features *cn_cpu(void);
/* AVX-512 F, BW, VL and DQ together: what the AVX-512 kernels (compiled with those targets) need */
int cn_cpu_avx512(void);

#endif
