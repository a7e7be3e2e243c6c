/* G of Winograd F(4x4, 3x3) (Lavin and Gray, see winograd.h), in float: the vector transforms
 * of the weights made during a call (winograd_avx2.c, winograd_avx512.c) take its entries as
 * compile-time constants; cn_wino_pack_weights (winograd.c) uses the same matrix in double. */
#ifndef CN_KERNELS_WINOGRAD_G_H
#define CN_KERNELS_WINOGRAD_G_H

static const float cn_wino_g[6][3] = {{1.0f / 4, 0.0f, 0.0f},
                                      {-1.0f / 6, -1.0f / 6, -1.0f / 6},
                                      {-1.0f / 6, 1.0f / 6, -1.0f / 6},
                                      {1.0f / 24, 1.0f / 12, 1.0f / 6},
                                      {1.0f / 24, -1.0f / 12, 1.0f / 6},
                                      {0.0f, 0.0f, 1.0f}};

#endif
