#include "core/mem.h"

#include <stdint.h>
#include <sys/mman.h>

static size_t huge_round(size_t bytes) {
    return (bytes + CN_HUGE_PAGE - 1) / CN_HUGE_PAGE * CN_HUGE_PAGE;
}

void *cn_alloc_huge(size_t bytes) {
    if (bytes < CN_HUGE_PAGE) return cn_alloc64(bytes);
    const size_t n = huge_round(bytes);
    void *p = aligned_alloc(CN_HUGE_PAGE, n);
    if (p) (void)madvise(p, n, MADV_HUGEPAGE); /* advice only: a refusal changes nothing */
    return p;
}

void *cn_alloc_zeroed(size_t bytes) {
    if (bytes < CN_HUGE_PAGE) return calloc(bytes ? bytes : 1, 1);
    const size_t n = huge_round(bytes);
    if (n + CN_HUGE_PAGE < n) return NULL;
    /* a fresh anonymous mapping reads as zeros and takes no memory until written; mapped one
     * huge page larger and trimmed so that it starts on a huge-page boundary */
    char *raw = mmap(NULL, n + CN_HUGE_PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                     -1, 0);
    if (raw == MAP_FAILED) return NULL;
    const uintptr_t a = ((uintptr_t)raw + CN_HUGE_PAGE - 1) & ~(uintptr_t)(CN_HUGE_PAGE - 1);
    char *p = (char *)a;
    const size_t head = (size_t)(p - raw), tail = CN_HUGE_PAGE - head;
    if (head) munmap(raw, head);
    if (tail) munmap(p + n, tail);
    (void)madvise(p, n, MADV_HUGEPAGE);
    return p;
}

void cn_free_zeroed(void *p, size_t bytes) {
    if (!p) return;
    if (bytes < CN_HUGE_PAGE) free(p);
    else munmap(p, huge_round(bytes));
}
