/* Memory for kernels: 64-byte aligned (a cache line, an AVX-512 vector), so that a row or a
 * block the kernels move 64 bytes at a time never straddles two cache lines. Freed with free().
 *
 * Large blocks (weights, the activation arena, gradients) also ask the kernel for transparent
 * huge pages (MADV_HUGEPAGE: Debian's default THP mode is "madvise", so without the request
 * every 4 KB page of a 100 MB model costs a TLB entry, and a 1x1 convolution over a 12 MB map
 * walks the page tables all along). Where the kernel has no THP the advice is ignored. */
#ifndef CN_CORE_MEM_H
#define CN_CORE_MEM_H

#include <stdlib.h>

#define CN_HUGE_PAGE ((size_t)2 << 20)

static inline void *cn_alloc64(size_t bytes) {
    return aligned_alloc(64, bytes ? (bytes + 63) / 64 * 64 : 64);
}

/* cn_alloc64, aligned to a huge page and advised to use them when at least one huge page big;
 * freed with free() */
void *cn_alloc_huge(size_t bytes);
/* zeroed memory whose pages stay untouched (not resident) until written, as calloc's (huge
 * pages advised when big); freed with cn_free_zeroed and the same byte count */
void *cn_alloc_zeroed(size_t bytes);
void cn_free_zeroed(void *p, size_t bytes);

#endif
