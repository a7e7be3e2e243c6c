/* libFuzzer target for the safetensors reader: parses the input and converts every float
 * tensor, so that any out-of-bounds read, overflow or leak on hostile input shows up under the
 * sanitizers. An input starting with '{' is taken as "header JSON, NUL, data region" and given
 * its length prefix here, because random mutations rarely keep a length field consistent with
 * the JSON after it; any other input is taken as a whole file.
 *
 *   clang -std=c11 -g -O1 -fsanitize=fuzzer,address,undefined -Iinclude -Isrc -D_GNU_SOURCE \
 *       src/core/status.c src/io/safetensors.c tests/fuzz_safetensors.c -lcjson -o fuzz_st
 *   ./fuzz_st -max_total_time=60 -max_len=4096 corpus/ */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "io/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static cn_st_file *open_input(const uint8_t *data, size_t size) {
    cn_st_file *f = NULL;
    if (size == 0 || data[0] != '{') {
        cn_st_open_memory(&f, "fuzz.safetensors", data, size);
        return f;
    }
    const uint8_t *nul = memchr(data, 0, size);
    size_t hlen = nul ? (size_t)(nul - data) : size;
    size_t dlen = nul ? size - hlen - 1 : 0;
    uint8_t *file = malloc(8 + size);
    if (!file) return NULL;
    for (int i = 0; i < 8; i++) file[i] = (uint8_t)((uint64_t)hlen >> (8 * i));
    memcpy(file + 8, data, hlen);
    if (dlen) memcpy(file + 8 + hlen, nul + 1, dlen);
    cn_st_open_memory(&f, "fuzz.safetensors", file, 8 + hlen + dlen);
    free(file);
    return f;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    cn_st_file *f = open_input(data, size);
    if (!f) return 0;
    for (int i = 0; i < cn_st_count(f); i++) {
        const cn_st_tensor *t = cn_st_at(f, i);
        if (cn_st_find(f, t->name) != t) abort();
        size_t n = t->nbytes / cn_dtype_size(t->dtype);
        /* Touch every byte so that a tensor pointing outside the file is caught. */
        volatile unsigned char sink = 0;
        for (size_t k = 0; k < t->nbytes; k++) sink ^= ((const unsigned char *)t->data)[k];
        (void)sink;
        float *dst = malloc(n ? n * sizeof *dst : 1);
        if (dst) {
            cn_st_read_f32(f, t, dst, n);
            free(dst);
        }
    }
    for (int i = 0; i < cn_st_meta_count(f); i++) {
        const char *k, *v;
        if (cn_st_meta_at(f, i, &k, &v) != CN_OK || cn_st_meta(f, k) == NULL) abort();
    }
    cn_st_close(f);
    return 0;
}
