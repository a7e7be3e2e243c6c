/* G of Winograd F(4x4, 3x3) (Lavin and Gray, see winograd.h), written once for both precisions:
 * cn_wino_pack_weights (winograd.c) transforms the cached weights in double; the vector
 * transforms of the weights made during a call (winograd_avx2.c, winograd_avx512.c) take the
 * float entries as compile-time constants. */
#ifndef CN_KERNELS_WINOGRAD_G_H
#define CN_KERNELS_WINOGRAD_G_H

#define CN_WINO_G(T)                                                               \
    {                                                                              \
        {(T)1 / 4, 0, 0}, {-(T)1 / 6, -(T)1 / 6, -(T)1 / 6},                       \
            {-(T)1 / 6, (T)1 / 6, -(T)1 / 6}, {(T)1 / 24, (T)1 / 12, (T)1 / 6},    \
            {(T)1 / 24, -(T)1 / 12, (T)1 / 6}, {0, 0, 1}                           \
    }

static const float cn_wino_g[6][3] = CN_WINO_G(float);

#endif
