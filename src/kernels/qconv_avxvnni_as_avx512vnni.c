/* The AVX-VNNI tile built with the EVEX encoding of vpdpbusd (see qconv_avxvnni.c): the
 * implementation "avx-vnni-evex", for tests only. */
#define CN_QAVXVNNI_AS_EVEX 1
#include "qconv_avxvnni.c"
