/* Reader of IDX files (the MNIST / Fashion-MNIST format), plain or gzip-compressed.
 *
 * Layout: bytes 0x00 0x00 <type> <ndim>, then ndim big-endian uint32 dimensions, then the
 * elements in row-major order. Only the byte types are supported: 0x08 (unsigned) and 0x09
 * (signed, stored here as the same bits). */
#ifndef CN_IO_IDX_H
#define CN_IO_IDX_H

#include <stddef.h>
#include <stdint.h>

#include "convnet.h"

#define CN_IDX_MAX_DIMS 4
/* Largest element count accepted, so that sizes fit an int everywhere downstream. */
#define CN_IDX_MAX_COUNT ((size_t)INT32_MAX)

#define CN_IDX_UBYTE 0x08
#define CN_IDX_SBYTE 0x09

typedef struct cn_idx {
    int ndim;                        /* 1..CN_IDX_MAX_DIMS */
    int64_t dims[CN_IDX_MAX_DIMS];   /* each > 0; unused entries 0 */
    int type;                        /* CN_IDX_UBYTE or CN_IDX_SBYTE */
    uint8_t *data;                   /* count elements, owned */
    size_t count;
} cn_idx;

/* Checks the magic, type, ndim in 1..4, dims > 0 with a product below 2^31 and that the data is
 * exactly that long: a truncated file or trailing bytes are CN_ERR_FORMAT naming the file. On
 * failure *out is left empty (safe to cn_idx_free). */
cn_status cn_idx_load(cn_idx *out, const char *path);
void cn_idx_free(cn_idx *x); /* NULL and an empty cn_idx are no-ops; leaves *x empty */

#endif
