/* Reader and writer of the safetensors format.
 *
 * Layout: an 8-byte little-endian header length N, N bytes of UTF-8 JSON mapping each tensor name
 * to {"dtype", "shape", "data_offsets": [begin, end]} (plus an optional "__metadata__" map of
 * strings), then the data region; offsets are relative to its start.
 *
 * The reader treats every file as untrusted: it rejects anything the format does not allow (bad
 * header length, invalid JSON or UTF-8, unknown dtypes, shapes whose byte size does not match
 * their data_offsets, overlapping offsets or gaps in the data region, duplicate names, ...) with
 * CN_ERR_FORMAT (CN_ERR_UNSUPPORTED for valid files it cannot represent, e.g. U32 tensors or more
 * than CN_ST_MAX_DIMS dimensions) and a message that names the file. */
#ifndef CN_IO_SAFETENSORS_H
#define CN_IO_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "convnet.h"

typedef enum cn_dtype {
    CN_DT_F32,
    CN_DT_F64,
    CN_DT_F16,
    CN_DT_BF16,
    CN_DT_I64,
    CN_DT_I32,
    CN_DT_I16,
    CN_DT_I8,
    CN_DT_U8,
    CN_DT_BOOL
} cn_dtype;

#define CN_DT_COUNT 10

/* Bytes per element; 0 for a value outside the enum. */
size_t cn_dtype_size(cn_dtype dt);
/* The safetensors spelling ("F32", "BF16", ...); "?" for a value outside the enum. */
const char *cn_dtype_name(cn_dtype dt);

#define CN_ST_MAX_DIMS 8

/* Size limit of the JSON header, as the reference implementation has, so that a hostile length
 * cannot make the reader parse gigabytes of JSON. */
#define CN_ST_MAX_HEADER ((uint64_t)100 * 1000 * 1000)

typedef struct cn_st_tensor {
    const char *name;
    cn_dtype dtype;
    int ndim; /* 0 for a scalar */
    int64_t shape[CN_ST_MAX_DIMS];
    /* Raw little-endian bytes. The data region starts 8-byte aligned in memory, so a tensor is
     * aligned for its dtype when its offset is a multiple of the element size (as in files the
     * Rust crate writes, which orders tensors by alignment); otherwise read it with memcpy or
     * cn_st_read_f32. */
    const void *data;
    size_t nbytes;    /* = product(shape) * cn_dtype_size(dtype) */
} cn_st_tensor;

/* Owns a copy of the whole file; tensor data points into it. */
typedef struct cn_st_file cn_st_file;

cn_status cn_st_open(cn_st_file **out, const char *path);
/* As cn_st_open on `n` bytes already in memory (they are copied); `name` stands for the path in
 * messages and cn_st_path(). */
cn_status cn_st_open_memory(cn_st_file **out, const char *name, const void *bytes, size_t n);
void cn_st_close(cn_st_file *f); /* NULL is a no-op */

int cn_st_count(const cn_st_file *f);
const cn_st_tensor *cn_st_at(const cn_st_file *f, int i); /* in file order; NULL if out of range */
const cn_st_tensor *cn_st_find(const cn_st_file *f, const char *name); /* NULL if absent */
const char *cn_st_meta(const cn_st_file *f, const char *key);          /* NULL if absent */
int cn_st_meta_count(const cn_st_file *f);
/* The i-th metadata entry in file order; CN_ERR_ARG if i is out of range. */
cn_status cn_st_meta_at(const cn_st_file *f, int i, const char **key, const char **value);
const char *cn_st_path(const cn_st_file *f);

/* Converts a tensor of any float dtype (F32, F64, F16, BF16) into `count` floats; `count` must be
 * the tensor's element count (CN_ERR_SHAPE otherwise) and an integer dtype is CN_ERR_UNSUPPORTED.
 * F64 values beyond the float range become +-infinity. */
cn_status cn_st_read_f32(const cn_st_file *f, const cn_st_tensor *t, float *dst, size_t count);

typedef struct cn_st_writer cn_st_writer;

cn_status cn_st_writer_new(cn_st_writer **out);
void cn_st_writer_free(cn_st_writer *w); /* NULL is a no-op */
/* Sets a metadata entry (a second call with the same key replaces the value). Both strings are
 * copied. */
cn_status cn_st_writer_meta(cn_st_writer *w, const char *key, const char *value);
/* Copies the name and shape but not the data, which must stay valid until cn_st_writer_save
 * returns. `data` holds product(shape) elements of `dt` as raw little-endian bytes (may be NULL
 * only if that product is 0). Duplicate names, "__metadata__", ndim outside 0..CN_ST_MAX_DIMS and
 * negative dims are CN_ERR_ARG. */
cn_status cn_st_writer_add(cn_st_writer *w, const char *name, cn_dtype dt, int ndim,
                           const int64_t *shape, const void *data);
/* Writes atomically: to "<path>.tmp.<pid>", fsync, rename over path, fsync the directory. On any
 * failure before the rename the old file at path is untouched and the temporary file removed.
 * The header lists "__metadata__" first, then the tensors in insertion order, and is padded with
 * spaces so that the data region starts at a multiple of 8 bytes. */
cn_status cn_st_writer_save(cn_st_writer *w, const char *path);

#endif
