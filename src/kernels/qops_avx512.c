/* The element-wise int8 loops compiled for AVX-512 (see qops_impl.h). */
#include "kernels/qops_table.h"

#define QOPS(name) cn_qops_avx512_##name
#include "kernels/qops_impl.h"

const cn_qops_table cn_qops_avx512 = {QOPS(quantize), QOPS(dequantize), QOPS(add),
                                      QOPS(mul_row), QOPS(max_row), QOPS(lut), QOPS(dot),
                                      QOPS(sum_rows)};
