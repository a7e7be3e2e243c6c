/* Memory for kernels: 64-byte aligned (a cache line, an AVX-512 vector), so that a row or a
 * block the kernels move 64 bytes at a time never straddles two cache lines. Freed with free(). */
#ifndef CN_CORE_MEM_H
#define CN_CORE_MEM_H

#include <stdlib.h>

static inline void *cn_alloc64(size_t bytes) {
    return aligned_alloc(64, bytes ? (bytes + 63) / 64 * 64 : 64);
}

#endif
