/* The AVX-VNNI tile of qconv_avxvnni.c built for plain AVX2, with vpdpbusd emulated exactly by
 * vpmaddwd: the implementation "avx2", for CPUs with AVX2 but no VNNI (Zen 3, Haswell to Ice
 * Lake client parts without it). */
#define CN_QAVXVNNI_AS_AVX2 1
#include "qconv_avxvnni.c"
